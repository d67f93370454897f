//! The client process: runs one workload against one server and reports on stdout.
//!
//! Protocol with the orchestrator (one line each, on stdout):
//! `WARM <allocs>` when warm-up ends and measuring starts, `END <allocs>` when measuring
//! stops, then `RESULT k=v ...` with the counts and latency percentiles. In a stream
//! workload a "call" is an item, and there are no latencies.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::{alloc, floor, rpc_sys, tarpc_sys, BenchConn, BenchStreams, System, Uploaded};

/// The workloads of the throughput table.
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
    /// 1 connection, one server stream of 64 KiB items (`stream` on the command line runs
    /// this and [`Workload::StreamUp`]).
    StreamDown,
    /// 1 connection, one client stream of 64 KiB items.
    StreamUp,
    /// 1 connection, one server stream of 32-byte items (`stream-small` on the command line
    /// runs this and [`Workload::SmallUp`]).
    SmallDown,
    /// 1 connection, one client stream of 32-byte items.
    SmallUp,
}

/// Which way a stream workload's items go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A server stream: the server sends, the client reads.
    Down,
    /// A client stream: the client sends, the server reads.
    Up,
}

/// Item size of `stream-down` and `stream-up`.
pub const STREAM_ITEM: usize = 64 * 1024;
/// Item size of `stream-small-down` and `stream-small-up`.
pub const SMALL_ITEM: usize = 32;

impl Workload {
    /// All workloads, in table order.
    pub const ALL: [Workload; 8] = [
        Workload::Lat,
        Workload::Pipe,
        Workload::Conns,
        Workload::Bulk,
        Workload::StreamDown,
        Workload::StreamUp,
        Workload::SmallDown,
        Workload::SmallUp,
    ];

    /// Command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Lat => "lat",
            Workload::Pipe => "pipe",
            Workload::Conns => "conns",
            Workload::Bulk => "bulk",
            Workload::StreamDown => "stream-down",
            Workload::StreamUp => "stream-up",
            Workload::SmallDown => "stream-small-down",
            Workload::SmallUp => "stream-small-up",
        }
    }

    /// Parses [`Workload::name`].
    pub fn parse(s: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.name() == s)
    }

    /// Parses a name from the command line: a [`Workload::name`], or `stream` (both
    /// directions of 64 KiB items) or `stream-small` (both directions of 32-byte items).
    pub fn parse_group(s: &str) -> Option<Vec<Workload>> {
        match s {
            "stream" => Some(vec![Workload::StreamDown, Workload::StreamUp]),
            "stream-small" => Some(vec![Workload::SmallDown, Workload::SmallUp]),
            _ => Workload::parse(s).map(|w| vec![w]),
        }
    }

    /// (connections, calls in flight per connection, echo size or `None` for `add`); a
    /// stream workload is one connection with one stream.
    pub fn shape(self) -> (usize, usize, Option<usize>) {
        match self {
            Workload::Lat => (1, 1, None),
            Workload::Pipe => (1, 128, Some(32)),
            Workload::Conns => (32, 16, Some(32)),
            Workload::Bulk => (1, 4, Some(1 << 20)),
            Workload::StreamDown | Workload::StreamUp => (1, 1, Some(STREAM_ITEM)),
            Workload::SmallDown | Workload::SmallUp => (1, 1, Some(SMALL_ITEM)),
        }
    }

    /// For a stream workload, its direction and item size.
    pub fn stream(self) -> Option<(Direction, usize)> {
        match self {
            Workload::StreamDown => Some((Direction::Down, STREAM_ITEM)),
            Workload::StreamUp => Some((Direction::Up, STREAM_ITEM)),
            Workload::SmallDown => Some((Direction::Down, SMALL_ITEM)),
            Workload::SmallUp => Some((Direction::Up, SMALL_ITEM)),
            _ => None,
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
        if let Some((dir, size)) = workload.stream() {
            return match system {
                System::Rpc => {
                    run_stream::<rpc_sys::StreamsClient>(addr, dir, size, warm, secs).await
                }
                System::Floor => run_stream::<floor::FloorConn>(addr, dir, size, warm, secs).await,
                System::RpcPayload => {
                    run_stream::<rpc_sys::PayloadStreamsClient>(addr, dir, size, warm, secs).await
                }
                System::Tarpc | System::RpcTls => {
                    Err(format!("{} has no stream workloads", system.name()))
                }
            };
        }
        match system {
            System::Rpc => run::<rpc_sys::BenchClient>(addr, workload, warm, secs).await,
            System::Tarpc => run::<tarpc_sys::TBenchClient>(addr, workload, warm, secs).await,
            System::Floor => run::<floor::FloorConn>(addr, workload, warm, secs).await,
            System::RpcTls => run::<rpc_sys::TlsBenchClient>(addr, workload, warm, secs).await,
            System::RpcPayload => {
                run::<rpc_sys::PayloadBenchClient>(addr, workload, warm, secs).await
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
    let template: Arc<Vec<u8>> = Arc::new(payload(echo.unwrap_or(0)));
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
    let elapsed = window(&phase, warm, secs).await;

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

/// Warm-up, then the measured window, announced on stdout as `WARM <allocs>` and
/// `END <allocs>`; moves `phase` along and returns the window's length.
async fn window(phase: &AtomicU8, warm: Duration, secs: Duration) -> Duration {
    tokio::time::sleep(warm).await;
    println!("WARM {}", alloc::count());
    phase.store(MEASURE, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(secs).await;
    phase.store(STOP, Ordering::Relaxed);
    let elapsed = start.elapsed();
    println!("END {}", alloc::count());
    elapsed
}

/// The bytes of every echo payload and stream item of `size` bytes, before the counter is
/// written into the first 8.
pub fn payload(size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(7))
        .collect()
}

/// Stream item `n` (from 0): [`payload`] with `n` in the first 8 bytes, little-endian.
pub fn make_item(n: u64, template: &[u8]) -> Vec<u8> {
    let mut item = Vec::with_capacity(template.len());
    item.extend_from_slice(template);
    item[..8].copy_from_slice(&n.to_le_bytes());
    item
}

/// Whether `item` is stream item `n` ([`make_item`]).
pub fn item_ok(n: u64, template: &[u8], item: &[u8]) -> bool {
    item.len() == template.len() && item[..8] == n.to_le_bytes() && item[8..] == template[8..]
}

/// How long a stream goes on.
#[derive(Debug, Clone)]
pub enum Until {
    /// Until the phase is `STOP`; items count while it is `MEASURE`.
    Stopped(Arc<AtomicU8>),
    /// Exactly this many items, all counted (tests).
    Items(u64),
}

impl Until {
    /// Whether item `n` (from 0) is to be sent or read, and if so whether it is counted.
    fn next(&self, n: u64) -> Option<bool> {
        match self {
            Until::Stopped(phase) => match phase.load(Ordering::Relaxed) {
                STOP => None,
                p => Some(p == MEASURE),
            },
            Until::Items(max) => (n < *max).then_some(true),
        }
    }
}

/// What one stream moved.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Correct items counted (in the measured window, or all with [`Until::Items`]).
    pub items: u64,
    /// Payload bytes of those items.
    pub bytes: u64,
    /// Items sent or read in all, warm-up included.
    pub total: u64,
    /// Errors (the stream failed or ended early; the upload's reply failed).
    pub errors: u64,
    /// Wrong items: a read item that is not the next one, or items the server of an upload
    /// counted as wrong or missing.
    pub wrong: u64,
    /// What the server of an upload counted.
    pub server: Option<Uploaded>,
    /// The first error, if any.
    pub first_error: Option<String>,
}

/// Opens a server stream of `size`-byte items on `conn` and reads it, checking every item,
/// until `until` says stop; then drops it (which cancels it).
pub async fn read_stream<C: BenchStreams>(conn: &C, size: usize, until: Until) -> Tally {
    let template = payload(size);
    let mut t = Tally::default();
    let mut items = match conn.download(size).await {
        Ok(items) => items,
        Err(err) => {
            t.errors = 1;
            t.first_error = Some(err);
            return t;
        }
    };
    let mut n = 0;
    while let Some(counted) = until.next(n) {
        match items.next().await {
            Some(Ok(item)) => {
                let item = item.as_ref();
                if !item_ok(n, &template, item) {
                    t.wrong += 1;
                } else if counted {
                    t.items += 1;
                    t.bytes += item.len() as u64;
                }
            }
            other => {
                t.errors += 1;
                t.first_error = Some(match other {
                    Some(Err(err)) => err,
                    _ => format!("the server stream ended after {n} items"),
                });
                break;
            }
        }
        n += 1;
    }
    t.total = n;
    t
}

/// Sends a client stream of `size`-byte items on `conn` until `until` says stop, then ends
/// it and checks the server's count against what was sent. Items are counted as the
/// system takes them from the producer (at most one flow-control window ahead of the
/// server).
pub async fn write_stream<C: BenchStreams>(conn: &C, size: usize, until: Until) -> Tally {
    #[derive(Default)]
    struct Counts {
        sent: AtomicU64,
        items: AtomicU64,
        bytes: AtomicU64,
    }
    let template = payload(size);
    let counts = Arc::new(Counts::default());
    let producer = {
        let counts = counts.clone();
        futures::stream::poll_fn(move |_| {
            let n = counts.sent.load(Ordering::Relaxed);
            let Some(counted) = until.next(n) else {
                return Poll::Ready(None);
            };
            counts.sent.store(n + 1, Ordering::Relaxed);
            if counted {
                counts.items.fetch_add(1, Ordering::Relaxed);
                counts
                    .bytes
                    .fetch_add(template.len() as u64, Ordering::Relaxed);
            }
            Poll::Ready(Some(make_item(n, &template)))
        })
    };
    let reply = conn.upload(producer).await;
    let mut t = Tally {
        items: counts.items.load(Ordering::Relaxed),
        bytes: counts.bytes.load(Ordering::Relaxed),
        total: counts.sent.load(Ordering::Relaxed),
        ..Tally::default()
    };
    match reply {
        Ok(got) => {
            t.wrong = got.wrong + got.items.abs_diff(t.total);
            t.server = Some(got);
        }
        Err(err) => {
            t.errors = 1;
            t.first_error = Some(err);
        }
    }
    t
}

/// One stream workload on one connection: warm-up, measured window, report.
async fn run_stream<C: BenchStreams>(
    addr: SocketAddr,
    dir: Direction,
    size: usize,
    warm: Duration,
    secs: Duration,
) -> Result<LoadResult, String> {
    let conn = C::connect(addr).await?;
    let phase = Arc::new(AtomicU8::new(WARM));
    let until = Until::Stopped(phase.clone());
    let task = tokio::spawn(async move {
        match dir {
            Direction::Down => read_stream(&conn, size, until).await,
            Direction::Up => write_stream(&conn, size, until).await,
        }
    });
    let elapsed = window(&phase, warm, secs).await;
    let t = task.await.map_err(|e| e.to_string())?;
    if let Some(err) = &t.first_error {
        eprintln!("client: first error: {err}");
    }
    Ok(LoadResult {
        calls: t.items,
        errors: t.errors,
        wrong: t.wrong,
        elapsed_ns: elapsed.as_nanos() as u64,
        bytes: t.bytes,
        ..LoadResult::default()
    })
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
