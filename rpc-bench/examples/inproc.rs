//! A fixed number of `add` calls, client and server in one process over an in-memory pipe, on
//! a current-thread runtime: a workload whose instruction count is repeatable, for
//! `valgrind --tool=callgrind` (instructions do not depend on what else the machine does).
//!
//! ```sh
//! cargo build --release --example inproc
//! valgrind --tool=callgrind target/release/examples/inproc 5000 64 1
//! valgrind --tool=callgrind target/release/examples/inproc 25000 64 1
//! # instructions per call = (total at 25000 - total at 5000) / 20000: start-up cancels out
//! ```
//!
//! Arguments: calls (default 10,000), calls in flight (64), connections (1). With
//! `INPROC_SPANS=1` a subscriber that takes every INFO span and keeps nothing is installed:
//! the run then counts what rpc does to open, enter, record and close its call spans (a real
//! subscriber adds its own work on top). Built with `--features rpc/metrics`, rpc's metrics
//! are compiled in and no recorder is installed: the run counts what they cost when unused.
//! To compare two versions of the framework, build this file against each (for example in a `git worktree`
//! of the older commit) and run both under callgrind.
//!
//! With `INPROC_STREAM=down` (or `up`) the first argument counts 32-byte items of one server
//! stream (or client stream) of `rpc_bench`'s `Streams` service instead of calls: per item =
//! (total at 250000 - total at 50000) / 200000.

use futures::stream::{FuturesUnordered, StreamExt};

#[rpc::service]
trait Probe {
    async fn add(&self, a: u64, b: u64) -> u64;
}

struct Adder;

impl Probe for Adder {
    async fn add(&self, a: u64, b: u64) -> u64 {
        a + b
    }
}

fn arg(index: usize, default: u64) -> u64 {
    std::env::args()
        .nth(index)
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Takes every span and event at INFO and above, and keeps nothing.
struct Discard(std::sync::atomic::AtomicU64);

impl tracing::Subscriber for Discard {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() <= tracing::Level::INFO
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::INFO)
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let n = self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::span::Id::from_u64(n + 1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, _: &tracing::Event<'_>) {}

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

fn main() {
    if std::env::var_os("INPROC_SPANS").is_some() {
        tracing::subscriber::set_global_default(Discard(std::sync::atomic::AtomicU64::new(0)))
            .expect("the only subscriber");
    }
    let calls = arg(1, 10_000);
    let depth = arg(2, 64).max(1) as usize;
    let connections = arg(3, 1).max(1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if let Some(direction) = std::env::var_os("INPROC_STREAM") {
        runtime.block_on(stream(direction.to_str() == Some("up"), calls));
        return;
    }
    runtime.block_on(async move {
        let (server, connector) = rpc::Server::builder().serve(Adder.into_service()).memory();
        tokio::spawn(server.run());
        let mut stubs = Vec::new();
        for _ in 0..connections {
            let stream = connector.connect().await.expect("in-memory connection");
            let client = rpc::Client::builder()
                .connect_transport(stream)
                .await
                .expect("handshake");
            stubs.push(ProbeClient::new(client));
        }
        let mut in_flight = FuturesUnordered::new();
        let (mut sent, mut done) = (0u64, 0u64);
        while done < calls {
            while in_flight.len() < depth && sent < calls {
                let stub = stubs[(sent % connections) as usize].clone();
                let n = sent;
                in_flight.push(async move { (n, stub.add(n, 1).await) });
                sent += 1;
            }
            if let Some((n, sum)) = in_flight.next().await {
                assert_eq!(sum.expect("call"), n + 1, "wrong reply");
                done += 1;
            }
        }
        println!("{done} calls, {depth} in flight, {connections} connection(s)");
    });
}

/// `items` 32-byte items of one stream, down (server stream) or up (client stream).
async fn stream(up: bool, items: u64) {
    use rpc_bench::load::{item_ok, make_item, payload};
    use rpc_bench::rpc_sys::{Streams, StreamsClient, StreamsImpl};
    let (server, connector) = rpc::Server::builder()
        .serve(StreamsImpl.into_service())
        .memory();
    tokio::spawn(server.run());
    let stream = connector.connect().await.expect("in-memory connection");
    let client = rpc::Client::builder()
        .connect_transport(stream)
        .await
        .expect("handshake");
    let stub = StreamsClient::new(client);
    let template = payload(32);
    if up {
        let sent = futures::stream::iter(0..items)
            .map(move |n| serde_bytes::ByteBuf::from(make_item(n, &template)));
        let got = stub.upload(rpc::Stream::new(sent)).await.expect("upload");
        assert_eq!(
            (got.items, got.wrong),
            (items, 0),
            "items the server counted"
        );
    } else {
        let mut received = stub.download(32).await.expect("download");
        for n in 0..items {
            let item = received.next().await.expect("endless").expect("item");
            assert!(item_ok(n, &template, &item), "item {n} is wrong");
        }
    }
    println!("{items} items {}", if up { "up" } else { "down" });
}
