//! Proof in a separate server process: the worst protocol-abiding clients against a server
//! whose memory is measured from outside its own allocator's view (its RSS) and through its
//! own accounting.
//!
//! The test binary runs twice: as the driver (`a_server_process_under_attack_stays_within_its_bounds`),
//! and, started by the driver with `RPC_ABUSE_CHILD=1`, as the server
//! (`abuse_server_process`, a no-op otherwise). The attack, twice over:
//!
//! * connections that fill the in-flight limit with calls that never end, then pipeline
//!   hundreds of 1 MB requests behind them, and vanish;
//! * connections that open dozens of client streams nobody reads, each offering far more
//!   than its window;
//! * a client whose frame limit is larger than the server's, mixing oversized calls among
//!   normal ones on one connection;
//! * meanwhile, a normal client on a connection of its own.
//!
//! Checked: the server's accounting never exceeds its budgets (plus one request per
//! connection checked at the same instant), its RSS grows by no more than the documented
//! bound, every normal call succeeds, the accounting is back at zero once the attackers have
//! gone, and the second attack leaves RSS where the first did.

mod support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::{eventually, within};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::task::JoinHandle;

const MAX_FRAME: usize = 1 << 20;
const WINDOW: usize = 64 * 1024;
const PER_CONNECTION: usize = 2 << 20;
const INBOUND: usize = 64 << 20;
const OUTBOUND: usize = 8 << 20;
const HIGH_WATER: usize = 256 * 1024;
const IN_FLIGHT: usize = 64;

const HEAVY_CONNECTIONS: usize = 8;
const HEAVY_REQUESTS: usize = 60;
const STREAM_CONNECTIONS: usize = 8;
const STREAMS: usize = 32;

#[rpc::service]
trait Probe {
    /// The server's RSS in bytes, and its accounting: connections, in flight, inbound
    /// bytes, outbound bytes, streams, parked.
    async fn stats(&self) -> (u64, [u64; 6]);
    /// Never answers.
    async fn block(&self, payload: Vec<u8>) -> u32;
    /// Never reads its stream, never answers.
    async fn sink(&self, items: rpc::Stream<Vec<u8>>) -> u64;
    /// Answers the payload's length.
    async fn echo(&self, payload: Vec<u8>) -> u64;
}

#[derive(Clone, Default)]
struct ProbeImpl {
    handle: std::sync::Arc<std::sync::OnceLock<rpc::ServerHandle>>,
}

impl Probe for ProbeImpl {
    async fn stats(&self) -> (u64, [u64; 6]) {
        let held = self
            .handle
            .get()
            .map(|h| h.accounting())
            .unwrap_or_default();
        let figures = [
            held.connections,
            held.in_flight,
            held.inbound_bytes,
            held.outbound_bytes,
            held.streams,
            held.parked,
        ]
        .map(|n| n as u64);
        (rss_bytes(), figures)
    }
    async fn block(&self, _payload: Vec<u8>) -> u32 {
        futures::future::pending().await
    }
    async fn sink(&self, _items: rpc::Stream<Vec<u8>>) -> u64 {
        futures::future::pending().await
    }
    async fn echo(&self, payload: Vec<u8>) -> u64 {
        payload.len() as u64
    }
}

/// This process's resident set size, from /proc.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// The server, when this binary was started as the child; a no-op in a normal test run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abuse_server_process() {
    if std::env::var_os("RPC_ABUSE_CHILD").is_none() {
        return;
    }
    let probe = ProbeImpl::default();
    let server = rpc::Server::builder()
        .max_frame_len(MAX_FRAME)
        .stream_window(WINDOW)
        .max_inbound_bytes_per_connection(PER_CONNECTION)
        .max_inbound_bytes(INBOUND)
        .max_outbound_bytes(OUTBOUND)
        .write_high_water(HIGH_WATER)
        .max_in_flight_per_connection(IN_FLIGHT)
        .serve(probe.clone().into_service())
        .bind("127.0.0.1:0")
        .await
        .expect("bind");
    let _ = probe.handle.set(server.handle());
    let addr = server.local_addr().expect("tcp");
    println!("PORT {}", addr.port());
    // Runs until the driver closes stdin (or kills this process).
    let stdin_closed = async {
        let mut sink = Vec::new();
        let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    };
    tokio::select! {
        _ = server.run() => {}
        _ = stdin_closed => {}
    }
}

struct Stats {
    rss: u64,
    connections: u64,
    in_flight: u64,
    inbound: u64,
    outbound: u64,
    streams: u64,
    parked: u64,
}

async fn stats(probe: &ProbeClient) -> Stats {
    let (rss, [connections, in_flight, inbound, outbound, streams, parked]) =
        within("stats", probe.stats()).await.expect("stats");
    Stats {
        rss,
        connections,
        in_flight,
        inbound,
        outbound,
        streams,
        parked,
    }
}

/// A connection that fills the in-flight limit with calls that never end, then pipelines
/// 1 MB requests behind them; it reads (and drops) whatever the server answers.
async fn heavy_attacker(
    addr: SocketAddr,
    written: Arc<AtomicUsize>,
) -> (JoinHandle<()>, JoinHandle<()>) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(&support::preamble())
        .await
        .expect("preamble");
    let (mut read, mut write) = stream.into_split();
    let drain = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while read.read(&mut buf).await.is_ok_and(|n| n > 0) {}
    });
    let small = support::body(&(vec![1u8; 16],));
    let heavy = support::body(&(vec![1u8; MAX_FRAME - 4096],));
    let send = tokio::spawn(async move {
        // Small calls fill the in-flight limit; heavy ones pile up behind them.
        for id in 1..=(IN_FLIGHT + HEAVY_REQUESTS) as u64 {
            let payload = if id as usize <= IN_FLIGHT {
                &small
            } else {
                &heavy
            };
            let header = support::request(id, "Probe", "block");
            if write
                .write_all(&support::frame(&header, payload))
                .await
                .is_err()
            {
                return;
            }
        }
        written.fetch_add(1, Ordering::SeqCst);
        // Stays open, sending nothing more, until aborted: then it vanishes.
        futures::future::pending::<()>().await;
    });
    (send, drain)
}

/// A connection with dozens of client streams the server never reads.
async fn stream_attacker(addr: SocketAddr) -> Vec<JoinHandle<()>> {
    let client = rpc::Client::builder()
        .stream_window(WINDOW)
        .connect(addr)
        .await
        .expect("connect");
    let client = ProbeClient::new(client);
    (0..STREAMS)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let items = futures::stream::repeat_with(|| vec![2u8; 16 * 1024]);
                let _ = client.sink(rpc::Stream::new(items)).await;
            })
        })
        .collect()
}

/// Oversized calls among normal ones on one connection, and normal calls on another: every
/// normal call succeeds, every oversized one fails alone.
async fn normal_and_oversized_calls(addr: SocketAddr) {
    let normal = ProbeClient::connect(addr).await.expect("connect");
    let mixed = rpc::Client::builder()
        .max_frame_len(4 * MAX_FRAME)
        .connect(addr)
        .await
        .expect("connect");
    let mixed = ProbeClient::new(mixed);
    for round in 0..20u64 {
        let len = 1000 + round as usize;
        assert_eq!(
            within("normal call", normal.echo(vec![0; len]))
                .await
                .expect("a normal call on its own connection"),
            len as u64
        );
        assert_eq!(
            within(
                "normal call beside oversized ones",
                mixed.echo(vec![0; len])
            )
            .await
            .expect("a normal call beside oversized ones"),
            len as u64
        );
        let err = within("oversized call", mixed.echo(vec![0; 2 * MAX_FRAME]))
            .await
            .expect_err("over the server's frame limit");
        assert!(
            matches!(err, rpc::Error::MessageTooLarge { .. }),
            "expected MessageTooLarge, got {err:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_process_under_attack_stays_within_its_bounds() {
    if std::env::var_os("RPC_ABUSE_CHILD").is_some() {
        return;
    }
    let exe = std::env::current_exe().expect("test binary");
    let mut child = tokio::process::Command::new(exe)
        .args(["--exact", "abuse_server_process", "--nocapture"])
        .env("RPC_ABUSE_CHILD", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the server process");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let port: u16 = within("the server's port", async {
        loop {
            let line = lines.next_line().await.expect("read").expect("a port line");
            if let Some(port) = line.strip_prefix("PORT ") {
                return port.parse().expect("a port number");
            }
        }
    })
    .await;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let probe = ProbeClient::connect(addr).await.expect("connect");
    let baseline = stats(&probe).await;

    // Per connection: its inbound budget, a frame being read, its write queue and one frame
    // past it, and buffers; over all of them: the two budgets. Plus a generous allowance
    // for the allocator's own slack.
    let connections = (HEAVY_CONNECTIONS + STREAM_CONNECTIONS + 4) as u64;
    let per_connection = (2 * MAX_FRAME + HIGH_WATER + 128 * 1024) as u64;
    let bound = (INBOUND + OUTBOUND) as u64 + connections * per_connection + (48 << 20);

    let mut peaks = Vec::new();
    let mut after_rounds = Vec::new();
    for round in 0..2 {
        let written = Arc::new(AtomicUsize::new(0));
        let mut heavy = Vec::new();
        for _ in 0..HEAVY_CONNECTIONS {
            heavy.push(heavy_attacker(addr, written.clone()).await);
        }
        let mut streams = Vec::new();
        for _ in 0..STREAM_CONNECTIONS {
            streams.extend(stream_attacker(addr).await);
        }
        // Everything is offered once the heavy connections have written all their requests
        // (the server reads on, parking what fits its budgets and refusing the rest), about
        // 480 MB.
        eventually(
            "every heavy connection has written all its requests",
            || written.load(Ordering::SeqCst) == HEAVY_CONNECTIONS,
        )
        .await;
        normal_and_oversized_calls(addr).await;
        let during = stats(&probe).await;
        let slack = (HEAVY_CONNECTIONS + STREAM_CONNECTIONS + 4) * MAX_FRAME;
        assert!(
            during.inbound <= (INBOUND + slack) as u64,
            "round {round}: {} inbound bytes held, budget {INBOUND}",
            during.inbound
        );
        assert!(during.outbound <= (OUTBOUND + slack) as u64);
        let grown = during.rss.saturating_sub(baseline.rss);
        println!(
            "round {round}: RSS {} MiB (+{} MiB, bound +{} MiB); held {} KiB in, {} KiB out, \
             {} streams, {} parked, {} in flight, {} connections",
            during.rss >> 20,
            grown >> 20,
            bound >> 20,
            during.inbound >> 10,
            during.outbound >> 10,
            during.streams,
            during.parked,
            during.in_flight,
            during.connections
        );
        assert!(
            grown <= bound,
            "round {round}: RSS grew by {grown} bytes, bound {bound}"
        );
        assert!(during.parked > 0, "the attack filled the in-flight limit");
        peaks.push(during.rss);

        // The attackers vanish.
        for (send, drain) in heavy {
            send.abort();
            drain.abort();
        }
        for stream in streams {
            stream.abort();
        }
        // Polled: the server learns of each connection's end on its own time.
        let released = within(
            "the accounting returns to zero after the attackers leave",
            async {
                loop {
                    let now = stats(&probe).await;
                    if now.connections == 1
                        && now.in_flight == 0
                        && now.inbound == 0
                        && now.outbound == 0
                        && now.streams == 0
                        && now.parked == 0
                    {
                        return now;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
        )
        .await;
        println!("round {round}: after, RSS {} MiB", released.rss >> 20);
        after_rounds.push(released.rss);
    }
    // The allocator keeps some freed memory for reuse, so RSS after an attack may stay near
    // its peak; a repeat must not add to it.
    let margin = 16 << 20;
    assert!(
        peaks[1] <= peaks[0] + margin && after_rounds[1] <= peaks[0] + margin,
        "a second attack raised RSS: peaks {peaks:?}, after {after_rounds:?}"
    );
    drop(child.stdin.take());
    let _ = within("the server process exits", child.wait()).await;
}
