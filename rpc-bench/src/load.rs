//! The client process: runs one workload against one server and reports on stdout.
//!
//! Protocol with the orchestrator (one line each, on stdout):
//! `WARM <allocs>` when warm-up ends and measuring starts, `END <allocs>` when measuring
//! stops, then `RESULT k=v ...` with the counts and latency percentiles.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{alloc, floor, rpc_sys, tarpc_sys, BenchConn, System};

/// The four workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// 1 connection, 1 call in flight, `add`.
    Lat,
    /// 1 connection, 128 calls in flight, 32-byte `echo`.
    Pipe,
    /// 32 connections x 16 in flight, 32-byte `echo`.
    Conns,
    /// 1 connection, 4 in flight, 1 MiB `echo`.
    Bulk,
}

impl Workload {
    /// All workloads, in table order.
    pub const ALL: [Workload; 4] = [
        Workload::Lat,
        Workload::Pipe,
        Workload::Conns,
        Workload::Bulk,
    ];

    /// Command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Lat => "lat",
            Workload::Pipe => "pipe",
            Workload::Conns => "conns",
            Workload::Bulk => "bulk",
        }
    }

    /// Parses [`Workload::name`].
    pub fn parse(s: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.name() == s)
    }

    /// (connections, calls in flight per connection, echo size or `None` for `add`).
    pub fn shape(self) -> (usize, usize, Option<usize>) {
        match self {
            Workload::Lat => (1, 1, None),
            Workload::Pipe => (1, 128, Some(32)),
            Workload::Conns => (32, 16, Some(32)),
            Workload::Bulk => (1, 4, Some(1 << 20)),
        }
    }
}

/// What one client run measured.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    /// Calls answered correctly while measuring: what calls/s and latency are made of.
    pub calls: u64,
    /// Calls that returned an error, warm-up included.
    pub errors: u64,
    /// Calls that returned a wrong reply, warm-up included.
    pub wrong: u64,
    /// Length of the measuring window.
    pub elapsed_ns: u64,
    /// Median latency.
    pub p50_ns: u64,
    /// 90th percentile latency.
    pub p90_ns: u64,
    /// 99th percentile latency.
    pub p99_ns: u64,
    /// Payload bytes echoed (one direction) while measuring.
    pub bytes: u64,
}

impl LoadResult {
    /// `RESULT k=v ...`
    pub fn to_line(&self) -> String {
        format!(
            "RESULT calls={} errors={} wrong={} elapsed_ns={} p50_ns={} p90_ns={} p99_ns={} bytes={}",
            self.calls,
            self.errors,
            self.wrong,
            self.elapsed_ns,
            self.p50_ns,
            self.p90_ns,
            self.p99_ns,
            self.bytes
        )
    }

    /// Parses [`LoadResult::to_line`].
    pub fn parse(line: &str) -> Option<LoadResult> {
        let rest = line.strip_prefix("RESULT ")?;
        let mut r = LoadResult::default();
        for kv in rest.split_whitespace() {
            let (k, v) = kv.split_once('=')?;
            let v: u64 = v.parse().ok()?;
            match k {
                "calls" => r.calls = v,
                "errors" => r.errors = v,
                "wrong" => r.wrong = v,
                "elapsed_ns" => r.elapsed_ns = v,
                "p50_ns" => r.p50_ns = v,
                "p90_ns" => r.p90_ns = v,
                "p99_ns" => r.p99_ns = v,
                "bytes" => r.bytes = v,
                _ => {}
            }
        }
        Some(r)
    }
}

const WARM: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

struct TaskStats {
    lat: Vec<u64>,
    errors: u64,
    wrong: u64,
    bytes: u64,
    first_error: Option<String>,
}

/// Entry point of `client --system S --workload W`.
pub fn client_main(system: System, workload: Workload, addr: SocketAddr, warm: f64, secs: f64) {
    crate::raise_fd_limit();
    let rt = crate::runtime();
    let warm = Duration::from_secs_f64(warm);
    let secs = Duration::from_secs_f64(secs);
    let result = rt.block_on(async move {
        match system {
            System::Rpc => run::<rpc_sys::BenchClient>(addr, workload, warm, secs).await,
            System::Tarpc => run::<tarpc_sys::TBenchClient>(addr, workload, warm, secs).await,
            System::Floor => run::<floor::FloorConn>(addr, workload, warm, secs).await,
            System::RpcTls => run::<rpc_sys::TlsBenchClient>(addr, workload, warm, secs).await,
        }
    });
    match result {
        Ok(r) => println!("{}", r.to_line()),
        Err(err) => {
            eprintln!("client: {err}");
            std::process::exit(2);
        }
    }
    // Do not wait for connection tasks to wind down.
    std::process::exit(0);
}

async fn run<C: BenchConn>(
    addr: SocketAddr,
    workload: Workload,
    warm: Duration,
    secs: Duration,
) -> Result<LoadResult, String> {
    let (conns, per_conn, echo) = workload.shape();
    let mut connected = Vec::with_capacity(conns);
    for _ in 0..conns {
        connected.push(C::connect(addr).await?);
    }
    drive(connected, per_conn, echo, warm, secs).await
}

/// Runs `per_conn` call loops on each of `conns` (`echo` of `echo` bytes, or `add` for
/// `None`): warm-up, then the measured window, announced on stdout as `WARM` and `END`;
/// returns what was measured. Every reply is checked.
pub async fn drive<C: BenchConn>(
    conns: Vec<C>,
    per_conn: usize,
    echo: Option<usize>,
    warm: Duration,
    secs: Duration,
) -> Result<LoadResult, String> {
    let template: Arc<Vec<u8>> = Arc::new(
        (0..echo.unwrap_or(0))
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(7))
            .collect(),
    );
    let phase = Arc::new(AtomicU8::new(WARM));
    let mut tasks = Vec::new();
    for (c, conn) in conns.into_iter().enumerate() {
        for t in 0..per_conn {
            let conn = conn.clone();
            let phase = phase.clone();
            let template = template.clone();
            let seed = ((c * per_conn + t) as u64) << 40;
            tasks.push(tokio::spawn(async move {
                call_loop(conn, phase, template, echo.is_some(), seed).await
            }));
        }
    }
    tokio::time::sleep(warm).await;
    println!("WARM {}", alloc::count());
    phase.store(MEASURE, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(secs).await;
    phase.store(STOP, Ordering::Relaxed);
    let elapsed = start.elapsed();
    println!("END {}", alloc::count());

    let mut lat = Vec::new();
    let mut r = LoadResult {
        elapsed_ns: elapsed.as_nanos() as u64,
        ..LoadResult::default()
    };
    for task in tasks {
        let stats = task.await.map_err(|e| e.to_string())?;
        if let Some(err) = stats.first_error {
            eprintln!("client: first error: {err}");
        }
        r.errors += stats.errors;
        r.wrong += stats.wrong;
        r.bytes += stats.bytes;
        lat.extend(stats.lat);
    }
    r.calls = lat.len() as u64;
    lat.sort_unstable();
    let pct = |p: f64| -> u64 {
        if lat.is_empty() {
            0
        } else {
            lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)]
        }
    };
    r.p50_ns = pct(0.50);
    r.p90_ns = pct(0.90);
    r.p99_ns = pct(0.99);
    Ok(r)
}

async fn call_loop<C: BenchConn>(
    conn: C,
    phase: Arc<AtomicU8>,
    template: Arc<Vec<u8>>,
    echo: bool,
    seed: u64,
) -> TaskStats {
    let mut stats = TaskStats {
        lat: Vec::with_capacity(1 << 16),
        errors: 0,
        wrong: 0,
        bytes: 0,
        first_error: None,
    };
    let mut n = seed;
    loop {
        if phase.load(Ordering::Relaxed) == STOP {
            break;
        }
        n += 1;
        let t0 = Instant::now();
        let outcome: Result<bool, String> = if echo {
            let mut data = Vec::with_capacity(template.len());
            data.extend_from_slice(&template);
            data[..8].copy_from_slice(&n.to_le_bytes());
            conn.echo(data).await.map(|reply| {
                let reply = reply.as_ref();
                reply.len() == template.len()
                    && reply[..8] == n.to_le_bytes()
                    && reply[8..] == template[8..]
            })
        } else {
            conn.add(n, 7).await.map(|sum| sum == n.wrapping_add(7))
        };
        let dt = t0.elapsed();
        // Only correct replies in the measured window count as calls (and for latency);
        // errors and wrong replies are counted in every phase.
        match outcome {
            Ok(true) => {
                if phase.load(Ordering::Relaxed) == MEASURE {
                    stats.lat.push(dt.as_nanos() as u64);
                    stats.bytes += template.len() as u64;
                }
            }
            Ok(false) => stats.wrong += 1,
            Err(err) => {
                stats.errors += 1;
                if stats.first_error.is_none() {
                    stats.first_error = Some(err);
                }
                // Do not spin on a dead connection.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    stats
}
