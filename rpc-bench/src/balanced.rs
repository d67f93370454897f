//! The `balanced` workload (`rpc` only): one client over three server processes, against one
//! client over one server, and with one of the three made slow (its handlers sleep
//! [`SLOW_MS`] before replying). The library's balancer (power of two choices by calls in
//! flight, `rpc::Client::builder().balance(..)`) is measured against round-robin, built here
//! from three single-endpoint clients ([`RoundRobin`]); the library has no such policy.
//!
//! Every setup keeps [`IN_FLIGHT`] calls of a 32-byte `echo` in flight from one client
//! process, so a slow server holds calls (and round-robin keeps sending it a third of them)
//! and its latency shows in the percentiles. Every reply is checked, as in the other
//! workloads ([`crate::load::drive`]).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_bytes::ByteBuf;

use crate::load::{self, LoadResult};
use crate::orchestrate::{self, Options, Proc};
use crate::rpc_sys::BenchClient;
use crate::{BenchConn, System};

/// The workload's name on the command line.
pub const NAME: &str = "balanced";
/// Calls in flight from the client, whatever the number of servers.
pub const IN_FLIGHT: usize = 64;
/// Size of each `echo`.
pub const ECHO_BYTES: usize = 32;
/// How long the slow server sleeps before each reply.
pub const SLOW_MS: u64 = 5;

/// How the client spreads its calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// One server, one plain client (`BenchClient::connect`): the baseline.
    One,
    /// `rpc::Client::builder().balance(addrs)`: power of two choices by calls in flight.
    P2c,
    /// [`RoundRobin`]: three single-endpoint clients, calls rotated among them.
    RoundRobin,
}

impl Policy {
    /// Command-line name (`--policy`).
    pub fn name(self) -> &'static str {
        match self {
            Policy::One => "one",
            Policy::P2c => "p2c",
            Policy::RoundRobin => "rr",
        }
    }

    /// Parses [`Policy::name`].
    pub fn parse(s: &str) -> Option<Policy> {
        [Policy::One, Policy::P2c, Policy::RoundRobin]
            .into_iter()
            .find(|p| p.name() == s)
    }
}

/// One row of the table: how many servers, whether the last one is slow, which policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setup {
    /// The row's label.
    pub label: &'static str,
    /// Server processes.
    pub servers: usize,
    /// Whether the last server sleeps [`SLOW_MS`] before each reply.
    pub slow: bool,
    /// The client's policy.
    pub policy: Policy,
}

/// The five rows, in table order.
pub const SETUPS: [Setup; 5] = [
    Setup {
        label: "1 server",
        servers: 1,
        slow: false,
        policy: Policy::One,
    },
    Setup {
        label: "3 servers, p2c",
        servers: 3,
        slow: false,
        policy: Policy::P2c,
    },
    Setup {
        label: "3 servers, round-robin",
        servers: 3,
        slow: false,
        policy: Policy::RoundRobin,
    },
    Setup {
        label: "3 servers, 1 slow, p2c",
        servers: 3,
        slow: true,
        policy: Policy::P2c,
    },
    Setup {
        label: "3 servers, 1 slow, round-robin",
        servers: 3,
        slow: true,
        policy: Policy::RoundRobin,
    },
];

/// Round-robin over single-endpoint clients: call `n` goes to client `n % len`, whatever
/// each server's load. Clones share the clients and the counter.
#[derive(Clone)]
pub struct RoundRobin {
    clients: Arc<[BenchClient]>,
    next: Arc<AtomicUsize>,
}

impl RoundRobin {
    /// Connects one client to each of `addrs`.
    pub async fn connect_all(addrs: &[SocketAddr]) -> Result<RoundRobin, String> {
        let mut clients = Vec::with_capacity(addrs.len());
        for &addr in addrs {
            clients.push(<BenchClient as BenchConn>::connect(addr).await?);
        }
        if clients.is_empty() {
            return Err("round-robin over no server".into());
        }
        Ok(RoundRobin {
            clients: clients.into(),
            next: Arc::new(AtomicUsize::new(0)),
        })
    }

    fn pick(&self) -> &BenchClient {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        &self.clients[n % self.clients.len()]
    }
}

impl BenchConn for RoundRobin {
    type Buf = ByteBuf;

    /// A round-robin over one server (see [`RoundRobin::connect_all`]).
    async fn connect(addr: SocketAddr) -> Result<Self, String> {
        RoundRobin::connect_all(&[addr]).await
    }

    async fn add(&self, a: u64, b: u64) -> Result<u64, String> {
        BenchConn::add(self.pick(), a, b).await
    }

    async fn echo(&self, data: Vec<u8>) -> Result<ByteBuf, String> {
        BenchConn::echo(self.pick(), data).await
    }

    async fn hold(&self, ms: u64) -> Result<u64, String> {
        BenchConn::hold(self.pick(), ms).await
    }
}

/// Entry point of `client --system rpc --workload balanced --policy P --addrs A,B,C`: the
/// same protocol with the orchestrator as [`load::client_main`].
pub fn client_main(policy: Policy, addrs: Vec<SocketAddr>, warm: f64, secs: f64) {
    crate::raise_fd_limit();
    let rt = crate::runtime();
    let warm = Duration::from_secs_f64(warm);
    let secs = Duration::from_secs_f64(secs);
    let result = rt.block_on(async move {
        let one = |conn| load::drive(vec![conn], IN_FLIGHT, Some(ECHO_BYTES), warm, secs);
        match policy {
            Policy::One => {
                let addr = *addrs.first().ok_or("no server address")?;
                one(<BenchClient as BenchConn>::connect(addr).await?).await
            }
            Policy::P2c => one(BenchClient::new(rpc::Client::builder().balance(addrs))).await,
            Policy::RoundRobin => {
                let conn = RoundRobin::connect_all(&addrs).await?;
                load::drive(vec![conn], IN_FLIGHT, Some(ECHO_BYTES), warm, secs).await
            }
        }
    });
    match result {
        Ok(r) => println!("{}", r.to_line()),
        Err(err) => {
            eprintln!("client: {err}");
            std::process::exit(2);
        }
    }
    std::process::exit(0);
}

/// One measurement of one setup.
#[derive(Debug, Clone)]
pub struct Sample {
    /// What the client measured.
    pub load: LoadResult,
    /// Calls each server served during the measured window (in server order; the slow one,
    /// if any, is last).
    pub served: Vec<u64>,
}

fn served_now(server: &mut Proc) -> Option<u64> {
    server.send("calls");
    server.line()?.strip_prefix("CALLS ")?.parse().ok()
}

/// Runs `setup` once with fresh server and client processes.
pub fn measure(setup: Setup, opts: &Options) -> Option<Sample> {
    let mut servers = Vec::with_capacity(setup.servers);
    let mut addrs = Vec::with_capacity(setup.servers);
    for i in 0..setup.servers {
        let slow = if setup.slow && i + 1 == setup.servers {
            SLOW_MS
        } else {
            0
        };
        let (server, port) =
            orchestrate::start_server_with(System::Rpc, &["--slow-ms".into(), slow.to_string()]);
        servers.push(server);
        addrs.push(format!("127.0.0.1:{port}"));
    }
    let mut client = Proc::start(&[
        "client".into(),
        "--system".into(),
        System::Rpc.name().into(),
        "--workload".into(),
        NAME.into(),
        "--policy".into(),
        setup.policy.name().into(),
        "--addrs".into(),
        addrs.join(","),
        "--warm".into(),
        opts.warm.to_string(),
        "--secs".into(),
        opts.secs.to_string(),
    ]);
    let dog = client.watchdog(Duration::from_secs_f64(opts.warm + opts.secs + 60.0));
    let served = |servers: &mut Vec<Proc>| -> Option<Vec<u64>> {
        servers.iter_mut().map(served_now).collect()
    };
    let mut start = None;
    let mut end = None;
    let mut result = None;
    while let Some(line) = client.line() {
        if line.starts_with("WARM ") {
            start = served(&mut servers);
        } else if line.starts_with("END ") {
            end = served(&mut servers);
        } else if line.starts_with("RESULT ") {
            result = LoadResult::parse(&line);
            break;
        }
    }
    dog.disarm();
    let (Some(load), Some(start), Some(end)) = (result, start, end) else {
        eprintln!("{NAME} {}: client failed (no result)", setup.label);
        return None;
    };
    Some(Sample {
        load,
        served: start
            .iter()
            .zip(&end)
            .map(|(a, b)| b.saturating_sub(*a))
            .collect(),
    })
}

/// Every setup, `opts.reps` times, interleaved: each repetition runs all five (in an order
/// that rotates), so a p2c row and its round-robin row are taken in the same repetition and
/// can be compared within it. Returns (setup index, repetition, sample).
pub fn run(opts: &Options) -> Vec<(usize, usize, Sample)> {
    let mut samples = Vec::new();
    for rep in 0..opts.reps {
        for k in 0..SETUPS.len() {
            let i = (k + rep) % SETUPS.len();
            let setup = SETUPS[i];
            eprint!(
                "[{NAME} rep {}/{}] {:<31} ... ",
                rep + 1,
                opts.reps,
                setup.label
            );
            match measure(setup, opts) {
                Some(s) => {
                    eprintln!(
                        "{:>9.0} calls/s  p50 {:>7.1} us  p90 {:>7.1} us  p99 {:>7.1} us  served {:?}  err {} wrong {}",
                        calls_per_s(&s.load),
                        s.load.p50_ns as f64 / 1e3,
                        s.load.p90_ns as f64 / 1e3,
                        s.load.p99_ns as f64 / 1e3,
                        s.served,
                        s.load.errors,
                        s.load.wrong
                    );
                    samples.push((i, rep, s));
                }
                None => eprintln!("failed"),
            }
        }
    }
    samples
}

fn calls_per_s(r: &LoadResult) -> f64 {
    r.calls as f64 / (r.elapsed_ns as f64 / 1e9).max(1e-9)
}

type Metric = fn(&LoadResult) -> f64;

const METRICS: [(&str, Metric); 4] = [
    ("calls/s", calls_per_s),
    ("p50 us", |r| r.p50_ns as f64 / 1e3),
    ("p90 us", |r| r.p90_ns as f64 / 1e3),
    ("p99 us", |r| r.p99_ns as f64 / 1e3),
];

fn cell(v: Vec<f64>) -> String {
    match orchestrate::median_min_max(v) {
        Some((med, lo, hi)) => format!(
            "{} ({}-{})",
            orchestrate::fmt_num(med),
            orchestrate::fmt_num(lo),
            orchestrate::fmt_num(hi)
        ),
        None => "-".into(),
    }
}

fn ratio_cell(v: Vec<f64>) -> String {
    match orchestrate::median_min_max(v) {
        Some((med, lo, hi)) => format!("{med:.2}x ({lo:.2}-{hi:.2})"),
        None => "-".into(),
    }
}

/// The markdown tables: one row per setup, then p2c against round-robin per repetition.
pub fn table(opts: &Options, samples: &[(usize, usize, Sample)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Balanced client (`{NAME}`, rpc only): one client process, {IN_FLIGHT} calls of a \
         {ECHO_BYTES}-byte `echo` in flight, over 1 or 3 server processes; the slow server \
         sleeps {SLOW_MS} ms before each reply. Median of {} run(s) (min-max).\n",
        opts.reps
    );
    let _ = writeln!(
        out,
        "| setup | calls/s | p50 us | p90 us | p99 us | calls served per server |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for (i, setup) in SETUPS.iter().enumerate() {
        let runs: Vec<&Sample> = samples
            .iter()
            .filter(|(s, _, _)| *s == i)
            .map(|(_, _, s)| s)
            .collect();
        let cells: Vec<String> = METRICS
            .iter()
            .map(|(_, f)| cell(runs.iter().map(|s| f(&s.load)).collect()))
            .collect();
        let mut per_server = vec![0u64; setup.servers];
        for s in &runs {
            for (total, n) in per_server.iter_mut().zip(&s.served) {
                *total += n;
            }
        }
        let all: u64 = per_server.iter().sum();
        let shares = per_server
            .iter()
            .enumerate()
            .map(|(k, n)| {
                let share = format!("{:.1}%", 100.0 * *n as f64 / all.max(1) as f64);
                if setup.slow && k + 1 == setup.servers {
                    format!("{share} (slow)")
                } else {
                    share
                }
            })
            .collect::<Vec<_>>()
            .join(" / ");
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            setup.label, cells[0], cells[1], cells[2], cells[3], shares
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "p2c against round-robin, each ratio taken within one repetition (median, min-max):\n"
    );
    let _ = writeln!(
        out,
        "| servers | calls/s, p2c/rr | p50, p2c/rr | p90, p2c/rr | p99, p2c/rr |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    for (label, p2c, rr) in [("3, none slow", 1, 2), ("3, one slow", 3, 4)] {
        let pairs: Vec<(&LoadResult, &LoadResult)> = (0..opts.reps)
            .filter_map(|rep| {
                let find = |i: usize| {
                    samples
                        .iter()
                        .find(|(s, r, _)| *s == i && *r == rep)
                        .map(|(_, _, s)| &s.load)
                };
                Some((find(p2c)?, find(rr)?))
            })
            .collect();
        let cells: Vec<String> = METRICS
            .iter()
            .map(|(_, f)| ratio_cell(pairs.iter().map(|(a, b)| f(a) / f(b)).collect()))
            .collect();
        let _ = writeln!(
            out,
            "| {label} | {} | {} | {} | {} |",
            cells[0], cells[1], cells[2], cells[3]
        );
    }
    let checked = SETUPS
        .iter()
        .enumerate()
        .map(|(i, setup)| {
            let (mut calls, mut errors, mut wrong) = (0u64, 0u64, 0u64);
            for (_, _, s) in samples.iter().filter(|(s, _, _)| *s == i) {
                calls += s.load.calls;
                errors += s.load.errors;
                wrong += s.load.wrong;
            }
            format!(
                "{}: {calls} correct calls measured, {errors} errors, {wrong} wrong",
                setup.label
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let _ = writeln!(
        out,
        "\nEvery reply checked (errors and wrong replies counted from the start of warm-up): {checked}.\n"
    );
    out
}
