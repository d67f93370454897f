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
//! Arguments: calls (default 10,000), calls in flight (64), connections (1). To compare two
//! versions of the framework, build this file against each (for example in a `git worktree`
//! of the older commit) and run both under callgrind.

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

fn main() {
    let calls = arg(1, 10_000);
    let depth = arg(2, 64).max(1) as usize;
    let connections = arg(3, 1).max(1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
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
