//! Soak: many clients, random cancellations and short deadlines, against a server that
//! sometimes panics and sometimes sleeps. Every call must end with exactly one outcome, and
//! every reply must be the right one.
//!
//! ```text
//! cargo test --test soak -- --nocapture                              # bounded: 2 s or 20,000 calls
//! SOAK_SECS=60 cargo test --release --test soak -- --nocapture       # the long run
//! SOAK_SECS=10 SOAK_CLIENTS=32 SOAK_CALLS=100000 cargo test --release --test soak -- --nocapture
//! ```
//!
//! By default the run is bounded in both time and calls, so it stays a few seconds long in
//! `cargo test --workspace`; `SOAK_SECS` alone lifts the call bound. It prints calls started,
//! replies, each error kind, calls with no outcome and the process's resident memory at the
//! start and the end, and fails on any wrong reply or call without an outcome.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{start, within, xorshift};

/// A handler with moods: the client says how long to sleep and whether to panic.
#[rpc::service]
trait Moody {
    /// Sleeps `sleep_ms`, panics if `panic` is set, else returns `n + 1`.
    async fn work(&self, n: u64, sleep_ms: u64, panic: bool) -> u64;
}

struct MoodyImpl;

/// The start of every deliberate panic's message; the panic hook stays quiet for these.
const DELIBERATE: &str = "soak: deliberate panic";

impl Moody for MoodyImpl {
    async fn work(&self, n: u64, sleep_ms: u64, panic: bool) -> u64 {
        if sleep_ms > 0 {
            tokio::time::sleep(Duration::from_millis(sleep_ms)).await;
        }
        if panic {
            panic!("{DELIBERATE} for call {n}");
        }
        n + 1
    }
}

/// How long and how hard to soak.
struct Options {
    clients: usize,
    /// Calls in flight per client.
    lanes: usize,
    calls: u64,
    secs: u64,
}

impl Options {
    /// The bounded default, or the run the `SOAK_*` variables ask for.
    fn from_env() -> Options {
        let var = |name: &str| {
            std::env::var(name).ok().map(|value| {
                value
                    .parse::<u64>()
                    .unwrap_or_else(|_| panic!("{name}={value:?} is not a whole number"))
            })
        };
        let secs = var("SOAK_SECS");
        Options {
            clients: var("SOAK_CLIENTS").map_or(8, |n| usize::try_from(n).unwrap_or(usize::MAX)),
            lanes: 16,
            // A long run is bounded by time alone unless it names a call count too.
            calls: var("SOAK_CALLS").unwrap_or(if secs.is_some() { u64::MAX } else { 20_000 }),
            secs: secs.unwrap_or(2),
        }
    }
}

/// Resident memory of this process (client and server both run in it), in KiB; 0 where
/// `/proc` is missing.
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

/// Every call's outcome, counted.
#[derive(Default)]
struct Tally {
    started: AtomicU64,
    ok: AtomicU64,
    wrong: AtomicU64,
    dropped_by_caller: AtomicU64,
    /// Calls that outlived the guard: no outcome at all.
    no_outcome: AtomicU64,
    errors: Mutex<BTreeMap<&'static str, u64>>,
}

/// The counts at the end of a run.
struct Summary {
    started: u64,
    ok: u64,
    wrong: u64,
    dropped: u64,
    errors: BTreeMap<&'static str, u64>,
    /// Calls whose guard fired, plus any call that never reported at all.
    no_outcome: u64,
}

impl Tally {
    fn summary(&self) -> Summary {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let errors = self.errors.lock().map(|e| e.clone()).unwrap_or_default();
        let (started, ok, wrong, dropped) = (
            load(&self.started),
            load(&self.ok),
            load(&self.wrong),
            load(&self.dropped_by_caller),
        );
        let guarded = load(&self.no_outcome);
        let reported = ok + wrong + dropped + guarded + errors.values().sum::<u64>();
        Summary {
            started,
            ok,
            wrong,
            dropped,
            no_outcome: guarded + started.saturating_sub(reported),
            errors,
        }
    }
}

impl Summary {
    fn print(&self, options: &Options, elapsed: Duration, rss: (u64, u64)) {
        let calls = match options.calls {
            u64::MAX => "no call limit".to_string(),
            calls => format!("at most {calls} calls"),
        };
        println!(
            "soak: {} clients x {} in flight, {:.1} s (at most {} s, {calls})",
            options.clients,
            options.lanes,
            elapsed.as_secs_f64(),
            options.secs
        );
        println!("  {:<26}{}", "calls started", self.started);
        println!("  {:<26}{}", "ok", self.ok);
        println!("  {:<26}{}", "wrong reply", self.wrong);
        println!("  {:<26}{}", "dropped by caller", self.dropped);
        for (kind, count) in &self.errors {
            println!("  {:<26}{count}", format!("error: {kind}"));
        }
        println!("  {:<26}{}", "no outcome", self.no_outcome);
        println!("  RSS start {} KiB, end {} KiB", rss.0, rss.1);
    }
}

/// Keeps the default panic hook from printing thousands of deliberate panics; every other
/// panic (a real bug, or a failed assertion) is as loud as ever. This binary holds one test,
/// so the process-wide hook touches nothing else.
fn quiet_deliberate_panics() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .unwrap_or_default();
        if !message.starts_with(DELIBERATE) {
            default_hook(info);
        }
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_ends_with_exactly_one_outcome() {
    let options = Options::from_env();
    quiet_deliberate_panics();
    let rss_start = rss_kib();

    let mut server = start(rpc::Server::builder().serve(MoodyImpl.into_service())).await;
    let tally = Arc::new(Tally::default());
    let began = Instant::now();
    let stop_at = began + Duration::from_secs(options.secs);
    let budget = Arc::new(AtomicU64::new(options.calls));
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..options.clients {
        let client = MoodyClient::connect(server.addr).await.expect("connect");
        let (tally, budget) = (tally.clone(), budget.clone());
        let lanes = options.lanes;
        clients.spawn(async move {
            let mut rng = 0x2545_f491_4f6c_dd1d_u64 ^ ((c as u64 + 1) << 32);
            let lanes = (0..lanes).map(|_| {
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
        });
    }
    // Each call is bounded by its guard, so the whole run ends soon after `stop_at`.
    let patience = Duration::from_secs(options.secs) + GUARD + support::PATIENCE;
    let all_done = tokio::time::timeout(patience, async {
        while let Some(client) = clients.join_next().await {
            client.expect("a client task panicked");
        }
    });
    all_done.await.expect("the soak did not end in time");
    server.handle.shutdown();
    within("server shutdown", &mut server.task)
        .await
        .expect("server task");
    let rss_end = rss_kib();

    let summary = tally.summary();
    summary.print(&options, began.elapsed(), (rss_start, rss_end));
    assert_eq!(summary.no_outcome, 0, "calls without an outcome");
    assert_eq!(summary.wrong, 0, "wrong replies");
    // The run exercised what it claims to: replies, panics and deadlines all happened.
    assert!(summary.ok > 0, "no call succeeded");
    assert!(summary.errors.contains_key("handler panicked"), "no panic");
    assert!(
        summary.errors.contains_key("deadline exceeded"),
        "no deadline"
    );
}

/// A generous bound on one call: a call that outlives it has no outcome, which must never
/// happen.
const GUARD: Duration = Duration::from_secs(10);

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
        match tokio::time::timeout(GUARD, call).await {
            Err(_) => {
                tally.no_outcome.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(outcome) => outcome,
        }
    };
    match outcome {
        Ok(v) if v == n + 1 => {
            tally.ok.fetch_add(1, Ordering::Relaxed);
        }
        Ok(_) => {
            tally.wrong.fetch_add(1, Ordering::Relaxed);
        }
        Err(err) => {
            if let Ok(mut errors) = tally.errors.lock() {
                *errors.entry(error_kind(&err)).or_default() += 1;
            }
        }
    }
}
