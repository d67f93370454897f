//! Soak: many clients, random cancellations and short deadlines, against a server that
//! sometimes panics and sometimes sleeps. A share of the calls are streams (server to client,
//! and client to server) that the caller drops part-way at random. Every call must end with
//! exactly one outcome, and every reply and stream item must be the right one.
//!
//! ```text
//! cargo test --test soak -- --nocapture                              # bounded: 2 s or 20,000 calls
//! SOAK_SECS=60 cargo test --release --test soak -- --nocapture       # the long run
//! SOAK_SECS=10 SOAK_CLIENTS=32 SOAK_CALLS=100000 cargo test --release --test soak -- --nocapture
//! SOAK_SECS=20 SOAK_STREAMING=50 cargo test --release --test soak -- --nocapture
//! ```
//!
//! By default the run is bounded in both time and calls, so it stays a few seconds long in
//! `cargo test --workspace`; `SOAK_SECS` alone lifts the call bound. It prints, for unary and
//! streaming calls apart, calls started, replies, calls dropped by the caller, each error kind
//! and calls with no outcome, then the process's resident memory at the start, after a
//! warm-up (a third of the run) and at the end; it fails on any wrong reply or call without an
//! outcome. A run of at least [`LONG_RUN_SECS`] bounded by time alone also fails if the
//! resident memory grew past the warm-up's by more than [`RSS_MARGIN_KIB`] plus half.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use support::{start, within, xorshift};

/// A handler with moods: the client says how long to sleep and whether to panic.
#[rpc::service]
trait Moody {
    /// Sleeps `sleep_ms`, panics if `panic` is set, else returns `n + 1`.
    async fn work(&self, n: u64, sleep_ms: u64, panic: bool) -> u64;
    /// Sends `from + 1`, `from + 2`, ... `from + n`, sleeping `sleep_ms` before each; the
    /// producer panics instead of sending item `panic_at` (counted from 0), if given.
    async fn count(
        &self,
        from: u64,
        n: u64,
        sleep_ms: u64,
        panic_at: Option<u64>,
    ) -> rpc::Stream<u64>;
    /// The sum of what the client sends, sleeping `sleep_ms` before each read; panics instead
    /// of reading item `panic_at` (counted from 0), if given.
    async fn total(&self, sleep_ms: u64, panic_at: Option<u64>, numbers: rpc::Stream<u64>) -> u64;
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

    async fn count(
        &self,
        from: u64,
        n: u64,
        sleep_ms: u64,
        panic_at: Option<u64>,
    ) -> rpc::Stream<u64> {
        rpc::Stream::new(futures::stream::unfold(0, move |i| async move {
            if i == n {
                return None;
            }
            if sleep_ms > 0 {
                tokio::time::sleep(Duration::from_millis(sleep_ms)).await;
            }
            if panic_at == Some(i) {
                panic!("{DELIBERATE} in the stream from {from} at item {i}");
            }
            Some((from + i + 1, i + 1))
        }))
    }

    async fn total(
        &self,
        sleep_ms: u64,
        panic_at: Option<u64>,
        mut numbers: rpc::Stream<u64>,
    ) -> u64 {
        let mut sum = 0u64;
        let mut read = 0;
        loop {
            if sleep_ms > 0 {
                tokio::time::sleep(Duration::from_millis(sleep_ms)).await;
            }
            if panic_at == Some(read) {
                panic!("{DELIBERATE} in an upload at item {read}");
            }
            match numbers.next().await {
                Some(Ok(n)) => sum = sum.wrapping_add(n),
                // The upload broke: its caller is gone or has its error already, and a sum
                // that is not the whole one must never reach a caller as a reply.
                Some(Err(_)) => return u64::MAX,
                None => return sum,
            }
            read += 1;
        }
    }
}

/// How long and how hard to soak.
struct Options {
    clients: usize,
    /// Calls in flight per client.
    lanes: usize,
    calls: u64,
    secs: u64,
    /// Percent of calls that are streams.
    streaming: u64,
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
            streaming: var("SOAK_STREAMING").unwrap_or(20).min(100),
        }
    }

    /// Whether the run is long enough, and bounded by time alone, for its resident memory
    /// after the warm-up to say something.
    fn checks_rss(&self) -> bool {
        self.secs >= LONG_RUN_SECS && self.calls == u64::MAX
    }
}

/// The shortest run whose resident memory is checked for growth after the warm-up.
const LONG_RUN_SECS: u64 = 10;

/// How much resident memory may grow after the warm-up, beyond half of it: allocator
/// caches, thread stacks and buffers sized by the busiest moment, not a leak.
const RSS_MARGIN_KIB: u64 = 16 * 1024;

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
        rpc::Error::Cancelled => "cancelled",
        rpc::Error::Protocol(_) => "protocol violation",
        _ => "other",
    }
}

/// How one call ended, from its caller's side.
enum Outcome {
    /// The right reply, or every item of the stream and its end.
    Ok,
    /// A reply or an item that is not the one asked for, or a stream that ended short.
    Wrong,
    /// The caller gave up: dropped the call, or the reply stream part-way.
    Dropped,
    /// A framework error.
    Error(&'static str),
    /// The guard fired: no outcome at all.
    Lost,
}

/// Every call of one sort (unary or streaming), counted by outcome.
#[derive(Default)]
struct Counts {
    started: AtomicU64,
    ok: AtomicU64,
    wrong: AtomicU64,
    dropped: AtomicU64,
    /// Calls that outlived the guard.
    no_outcome: AtomicU64,
    errors: Mutex<BTreeMap<&'static str, u64>>,
}

impl Counts {
    fn record(&self, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Ok => &self.ok,
            Outcome::Wrong => &self.wrong,
            Outcome::Dropped => &self.dropped,
            Outcome::Lost => &self.no_outcome,
            Outcome::Error(kind) => {
                if let Ok(mut errors) = self.errors.lock() {
                    *errors.entry(kind).or_default() += 1;
                }
                return;
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn summary(&self) -> Summary {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let errors = self.errors.lock().map(|e| e.clone()).unwrap_or_default();
        let (started, ok, wrong, dropped) = (
            load(&self.started),
            load(&self.ok),
            load(&self.wrong),
            load(&self.dropped),
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

/// Every call's outcome, counted, unary and streaming apart.
#[derive(Default)]
struct Tally {
    unary: Counts,
    streaming: Counts,
}

/// The counts of one sort of call at the end of a run.
struct Summary {
    started: u64,
    ok: u64,
    wrong: u64,
    dropped: u64,
    errors: BTreeMap<&'static str, u64>,
    /// Calls whose guard fired, plus any call that never reported at all.
    no_outcome: u64,
}

/// Resident memory at the start, after the warm-up (if the run lasted that long) and at the
/// end of the calls, in KiB.
struct Rss {
    start: u64,
    warm: Option<u64>,
    end: u64,
}

impl Rss {
    /// The most the end may reach without counting as growth.
    fn bound(warm: u64) -> u64 {
        warm + warm / 2 + RSS_MARGIN_KIB
    }
}

fn print_summary(
    options: &Options,
    elapsed: Duration,
    unary: &Summary,
    streaming: &Summary,
    rss: &Rss,
) {
    let calls = match options.calls {
        u64::MAX => "no call limit".to_string(),
        calls => format!("at most {calls} calls"),
    };
    println!(
        "soak: {} clients x {} in flight, {:.1} s (at most {} s, {calls}), {}% streams",
        options.clients,
        options.lanes,
        elapsed.as_secs_f64(),
        options.secs,
        options.streaming,
    );
    println!("  {:<38}{:>10}{:>12}", "", "unary", "streaming");
    let row = |what: &str, unary: u64, streaming: u64| {
        println!("  {what:<38}{unary:>10}{streaming:>12}");
    };
    row("calls started", unary.started, streaming.started);
    row("ok (streams: completed)", unary.ok, streaming.ok);
    row("wrong reply or item", unary.wrong, streaming.wrong);
    row(
        "dropped by caller (streams: part-way)",
        unary.dropped,
        streaming.dropped,
    );
    let kinds: std::collections::BTreeSet<_> =
        unary.errors.keys().chain(streaming.errors.keys()).collect();
    for kind in kinds {
        let count = |summary: &Summary| summary.errors.get(kind).copied().unwrap_or(0);
        row(&format!("error: {kind}"), count(unary), count(streaming));
    }
    row("no outcome", unary.no_outcome, streaming.no_outcome);
    let warm = match rss.warm {
        Some(warm) => format!("{warm} KiB (end allowed up to {} KiB)", Rss::bound(warm)),
        None => "not reached".into(),
    };
    println!(
        "  RSS start {} KiB, after warm-up {warm}, end {} KiB{}",
        rss.start,
        rss.end,
        if options.checks_rss() {
            ""
        } else {
            " (growth checked only in runs of SOAK_SECS >= 10 without SOAK_CALLS)"
        }
    );
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
        let (lanes, streaming) = (options.lanes, options.streaming);
        clients.spawn(async move {
            let lanes = (0..lanes).map(|lane| {
                let client = client.clone();
                let tally = tally.clone();
                let budget = budget.clone();
                // A seed of its own per lane: seeds drawn from one generator would give each
                // lane the previous lane's sequence shifted by one draw.
                let mut rng = 0x2545_f491_4f6c_dd1d_u64
                    ^ ((c as u64 + 1) << 32)
                    ^ (lane as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                async move {
                    while Instant::now() < stop_at
                        && budget
                            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                                b.checked_sub(1)
                            })
                            .is_ok()
                    {
                        let counts = if xorshift(&mut rng) % 100 < streaming {
                            &tally.streaming
                        } else {
                            &tally.unary
                        };
                        counts.started.fetch_add(1, Ordering::Relaxed);
                        let outcome = if std::ptr::eq(counts, &tally.streaming) {
                            one_stream(&client, &mut rng).await
                        } else {
                            one_call(&client, &mut rng).await
                        };
                        counts.record(outcome);
                    }
                }
            });
            futures::future::join_all(lanes).await;
        });
    }
    // Each call is bounded by its guard, so the whole run ends soon after `stop_at`. The
    // resident memory is read once a third of the run has gone by, if the calls go on that
    // long: by then every buffer and cache has met the busiest moment it will.
    let patience = Duration::from_secs(options.secs) + GUARD + support::PATIENCE;
    let warm_at = began + Duration::from_secs(options.secs) / 3;
    let mut rss_warm = None;
    let all_done = tokio::time::timeout(patience, async {
        let joined = async {
            while let Some(client) = clients.join_next().await {
                client.expect("a client task panicked");
            }
        };
        tokio::pin!(joined);
        tokio::select! {
            () = &mut joined => {}
            () = tokio::time::sleep_until(warm_at.into()) => {
                rss_warm = Some(rss_kib());
                joined.await;
            }
        }
    });
    all_done.await.expect("the soak did not end in time");
    let rss = Rss {
        start: rss_start,
        warm: rss_warm,
        end: rss_kib(),
    };
    server.handle.shutdown();
    within("server shutdown", &mut server.task)
        .await
        .expect("server task");

    let (unary, streaming) = (tally.unary.summary(), tally.streaming.summary());
    print_summary(&options, began.elapsed(), &unary, &streaming, &rss);
    assert_eq!(unary.no_outcome, 0, "unary calls without an outcome");
    assert_eq!(
        streaming.no_outcome, 0,
        "streaming calls without an outcome"
    );
    assert_eq!(unary.wrong, 0, "wrong replies");
    assert_eq!(streaming.wrong, 0, "wrong stream items or short streams");
    // The run exercised what it claims to: replies, panics and deadlines all happened, and
    // streams both completed and were dropped part-way.
    assert!(unary.ok > 0, "no call succeeded");
    assert!(unary.errors.contains_key("handler panicked"), "no panic");
    assert!(
        unary.errors.contains_key("deadline exceeded"),
        "no deadline"
    );
    if options.streaming > 0 {
        assert!(streaming.ok > 0, "no stream completed");
        assert!(streaming.dropped > 0, "no stream was dropped part-way");
    }
    if options.checks_rss() {
        let warm = rss
            .warm
            .expect("a run bounded by time alone reaches its warm-up");
        assert!(
            rss.end <= Rss::bound(warm),
            "resident memory grew after the warm-up: {warm} KiB -> {} KiB",
            rss.end
        );
    }
}

/// A generous bound on one call: a call that outlives it has no outcome, which must never
/// happen.
const GUARD: Duration = Duration::from_secs(10);

/// `call`'s outcome, or [`Outcome::Lost`] if it outlives the guard.
async fn guarded(call: impl std::future::Future<Output = Outcome>) -> Outcome {
    tokio::time::timeout(GUARD, call)
        .await
        .unwrap_or(Outcome::Lost)
}

/// One call with a random fate: plain, a short deadline, dropped by the caller, a server
/// panic, or a server sleep.
async fn one_call(client: &MoodyClient, rng: &mut u64) -> Outcome {
    let roll = xorshift(rng) % 100;
    let n = xorshift(rng) >> 1;
    // The server's mood is drawn apart from the caller's, so slow calls meet short deadlines.
    let mood = xorshift(rng) % 100;
    let sleep_ms = if mood < 30 { xorshift(rng) % 20 } else { 0 };
    let panic = (30..35).contains(&mood);
    let mut call = client.work(n, sleep_ms, panic);
    if (35..50).contains(&roll) {
        call = call.timeout(Duration::from_millis(1 + xorshift(rng) % 10));
    }
    let reply = async move {
        match call.await {
            Ok(v) if v == n + 1 => Outcome::Ok,
            Ok(_) => Outcome::Wrong,
            Err(err) => Outcome::Error(error_kind(&err)),
        }
    };
    if (50..60).contains(&roll) {
        // The caller gives up after a random moment; dropping the call cancels it.
        let patience = Duration::from_millis(xorshift(rng) % 10);
        tokio::time::timeout(patience, reply)
            .await
            .unwrap_or(Outcome::Dropped)
    } else {
        guarded(reply).await
    }
}

/// One streaming call, a stream from the server or one to it, with a random fate: read or
/// sent to the end, a short deadline over the whole stream, or dropped by the caller
/// part-way; and a server that may sleep before each item or panic in the middle.
async fn one_stream(client: &MoodyClient, rng: &mut u64) -> Outcome {
    let n = 1 + xorshift(rng) % 32;
    // Small enough that a sum of `n` of them cannot overflow.
    let from = xorshift(rng) >> 8;
    let mood = xorshift(rng) % 100;
    let sleep_ms = if mood < 30 { xorshift(rng) % 3 } else { 0 };
    let panic_at = (30..35).contains(&mood).then(|| xorshift(rng) % n);
    let fate = xorshift(rng) % 100;
    let deadline = (40..60)
        .contains(&fate)
        .then(|| Duration::from_millis(1 + xorshift(rng) % 10));
    let dropped = (60..100).contains(&fate);
    // Where a caller that drops the call gives up: after `keep` items of a stream from the
    // server (never all of them), or after a random moment of a stream to it.
    let keep = xorshift(rng) % n;
    let patience = Duration::from_millis(xorshift(rng) % 10);
    if xorshift(rng) % 2 == 0 {
        let mut call = client.count(from, n, sleep_ms, panic_at);
        if let Some(deadline) = deadline {
            call = call.timeout(deadline);
        }
        // The items before the panic, if any, then its error; else all `n`, then the end.
        let expected = panic_at.unwrap_or(n);
        guarded(async move {
            let mut items = match call.await {
                Ok(items) => items,
                Err(err) => return Outcome::Error(error_kind(&err)),
            };
            let mut got = 0;
            loop {
                if dropped && got == keep {
                    // Dropping the stream cancels the call.
                    return Outcome::Dropped;
                }
                match items.next().await {
                    Some(Ok(item)) if got < expected && item == from + got + 1 => got += 1,
                    Some(Ok(_)) => return Outcome::Wrong,
                    Some(Err(err)) => return Outcome::Error(error_kind(&err)),
                    None if got == n => return Outcome::Ok,
                    // Ended short, or without the panic's error.
                    None => return Outcome::Wrong,
                }
            }
        })
        .await
    } else {
        // Half the uploads are paced, so that a drop or a deadline lands in the middle.
        let paced = xorshift(rng) % 2 == 0;
        let numbers = futures::stream::iter(from..from + n).then(move |number| async move {
            if paced {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            number
        });
        let expected: u64 = (from..from + n).sum();
        let mut call = client.total(sleep_ms, panic_at, rpc::Stream::new(numbers));
        if let Some(deadline) = deadline {
            call = call.timeout(deadline);
        }
        let reply = async move {
            match call.await {
                Ok(sum) if sum == expected => Outcome::Ok,
                Ok(_) => Outcome::Wrong,
                Err(err) => Outcome::Error(error_kind(&err)),
            }
        };
        if dropped {
            tokio::time::timeout(patience, reply)
                .await
                .unwrap_or(Outcome::Dropped)
        } else {
            guarded(reply).await
        }
    }
}
