//! Soak test: many clients, random cancellations and short deadlines, against a server that
//! sometimes panics and sometimes sleeps. Every call must end with exactly one outcome.
//!
//! ```text
//! cargo run --release --example soak                          # 8 clients for 60 s
//! cargo run --release --example soak -- --clients 32 --secs 10 --calls 100000
//! ```
//!
//! Prints calls started, succeeded, each error kind, calls with no outcome (must be 0) and
//! the process's resident memory at the start and the end. Exits with an error if any call
//! had no outcome.

use std::collections::BTreeMap;
use std::error::Error;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A handler with moods: the client says how long to sleep and whether to panic.
#[rpc::service]
pub trait Moody {
    /// Sleeps `sleep_ms`, panics if `panic` is set, else returns `n + 1`.
    async fn work(&self, n: u64, sleep_ms: u64, panic: bool) -> u64;
}

struct MoodyImpl;

impl Moody for MoodyImpl {
    async fn work(&self, n: u64, sleep_ms: u64, panic: bool) -> u64 {
        if sleep_ms > 0 {
            tokio::time::sleep(Duration::from_millis(sleep_ms)).await;
        }
        if panic {
            panic!("soak: deliberate panic for call {n}");
        }
        n + 1
    }
}

struct Options {
    clients: usize,
    calls: u64,
    secs: u64,
}

fn options() -> Result<Options, Box<dyn Error>> {
    let mut options = Options {
        clients: 8,
        calls: u64::MAX,
        secs: 60,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).ok_or("every flag takes a value")?;
        match pair[0].as_str() {
            "--clients" => options.clients = value.parse()?,
            "--calls" => options.calls = value.parse()?,
            "--secs" => options.secs = value.parse()?,
            other => {
                return Err(
                    format!("unknown flag {other}; flags: --clients N --calls M --secs S").into(),
                )
            }
        }
    }
    Ok(options)
}

/// Resident memory of this process (client and server both run in it), in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn error_kind(err: &rpc::Error) -> &'static str {
    match err {
        rpc::Error::DeadlineExceeded => "deadline exceeded",
        rpc::Error::HandlerPanicked { .. } => "handler panicked",
        rpc::Error::ConnectionClosed { .. } => "connection closed",
        rpc::Error::Connect { .. } => "connect failed",
        rpc::Error::Overloaded { .. } => "overloaded",
        rpc::Error::BadRequest { .. } => "bad request",
        rpc::Error::UnknownMethod { .. } => "unknown method",
        rpc::Error::Protocol(_) => "protocol violation",
        _ => "other",
    }
}

#[derive(Default)]
struct Tally {
    started: AtomicU64,
    ok: AtomicU64,
    wrong: AtomicU64,
    dropped_by_caller: AtomicU64,
    no_outcome: AtomicU64,
    errors: Mutex<BTreeMap<&'static str, u64>>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let options = options()?;
    // The handlers' panics are deliberate: keep the default hook from printing thousands of
    // them, and every other panic (a real bug) as loud as ever.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .unwrap_or_default();
        if !message.starts_with("soak: deliberate panic") {
            default_hook(info);
        }
    }));
    let rss_start = rss_kib();

    let server = rpc::Server::builder()
        .serve(MoodyImpl.into_service())
        .bind("127.0.0.1:0")
        .await?;
    let addr = server.local_addr().ok_or("server is not on TCP")?;
    let handle = server.handle();
    let running = tokio::spawn(server.run());

    let tally = Arc::new(Tally::default());
    let stop_at = Instant::now() + Duration::from_secs(options.secs);
    let budget = Arc::new(AtomicU64::new(options.calls));
    let mut clients = Vec::new();
    for c in 0..options.clients {
        let client = MoodyClient::connect(addr).await?;
        let (tally, budget) = (tally.clone(), budget.clone());
        clients.push(tokio::spawn(async move {
            let mut rng = 0x2545_f491_4f6c_dd1d_u64 ^ ((c as u64 + 1) << 32);
            // 16 calls in flight per client.
            let lanes = (0..16).map(|_| {
                let client = client.clone();
                let tally = tally.clone();
                let budget = budget.clone();
                let mut rng = xorshift(&mut rng);
                async move {
                    while Instant::now() < stop_at
                        && budget
                            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                                b.checked_sub(1)
                            })
                            .is_ok()
                    {
                        one_call(&client, &tally, &mut rng).await;
                    }
                }
            });
            futures::future::join_all(lanes).await;
        }));
    }
    for client in clients {
        client.await?;
    }
    handle.shutdown();
    running.await?;
    let rss_end = rss_kib();

    let t = &tally;
    let started = t.started.load(Ordering::Relaxed);
    println!(
        "soak: {} clients x 16 in flight, {} s",
        options.clients, options.secs
    );
    println!("  {:<26}{started}", "calls started");
    println!("  {:<26}{}", "ok", t.ok.load(Ordering::Relaxed));
    println!("  {:<26}{}", "wrong reply", t.wrong.load(Ordering::Relaxed));
    let dropped = t.dropped_by_caller.load(Ordering::Relaxed);
    println!("  {:<26}{dropped}", "dropped by caller");
    let errors = t.errors.lock().map_err(|_| "tally lock poisoned")?.clone();
    for (kind, count) in &errors {
        println!("  {:<26}{count}", format!("error: {kind}"));
    }
    // Calls whose guard fired, plus any call that never reported at all.
    let reported = t.ok.load(Ordering::Relaxed)
        + t.wrong.load(Ordering::Relaxed)
        + t.dropped_by_caller.load(Ordering::Relaxed)
        + t.no_outcome.load(Ordering::Relaxed)
        + errors.values().sum::<u64>();
    let no_outcome = t.no_outcome.load(Ordering::Relaxed) + started.saturating_sub(reported);
    println!("  {:<26}{no_outcome}", "no outcome");
    println!("  RSS start {rss_start} KiB, end {rss_end} KiB");
    if no_outcome > 0 || t.wrong.load(Ordering::Relaxed) > 0 {
        return Err("some calls had no outcome or a wrong reply".into());
    }
    Ok(())
}

/// One call with a random fate: plain, a short deadline, dropped by the caller, a server
/// panic, or a server sleep.
async fn one_call(client: &MoodyClient, tally: &Tally, rng: &mut u64) {
    let roll = xorshift(rng) % 100;
    let n = xorshift(rng) >> 1;
    // The server's mood is drawn apart from the caller's, so slow calls meet short deadlines.
    let mood = xorshift(rng) % 100;
    let sleep_ms = if mood < 30 { xorshift(rng) % 20 } else { 0 };
    let panic = (30..35).contains(&mood);
    tally.started.fetch_add(1, Ordering::Relaxed);
    let mut call = client.work(n, sleep_ms, panic);
    if (35..50).contains(&roll) {
        call = call.timeout(Duration::from_millis(1 + xorshift(rng) % 10));
    }
    // A generous guard: a call that outlives it has no outcome, which must never happen.
    let guard = Duration::from_secs(10);
    let outcome = if (50..60).contains(&roll) {
        // The caller gives up after a random moment; dropping the call cancels it.
        let patience = Duration::from_millis(xorshift(rng) % 10);
        match tokio::time::timeout(patience, call).await {
            Err(_) => {
                tally.dropped_by_caller.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(outcome) => outcome,
        }
    } else {
        match tokio::time::timeout(guard, call).await {
            Err(_) => {
                tally.no_outcome.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(outcome) => outcome,
        }
    };
    match outcome {
        Ok(v) if v == n + 1 => tally.ok.fetch_add(1, Ordering::Relaxed),
        Ok(_) => tally.wrong.fetch_add(1, Ordering::Relaxed),
        Err(err) => {
            if let Ok(mut errors) = tally.errors.lock() {
                *errors.entry(error_kind(&err)).or_default() += 1;
            }
            0
        }
    };
}
