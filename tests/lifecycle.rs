//! Connections over time: graceful shutdown, reconnecting, idle connections, deadlines that
//! cross service boundaries, the client's own in-flight limit.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::{eventually, start, within, BindOn};
use tokio::sync::Semaphore;

#[rpc::service]
trait Node {
    /// Which server answered.
    async fn name(&self) -> String;
    /// Waits until the test opens the gate.
    async fn gated(&self) -> String;
    /// Time left until this call's deadline, in milliseconds.
    async fn remaining_ms(&self) -> Option<u64>;
    /// Calls `remaining_ms` on `downstream` and returns what it saw.
    async fn relay(&self, downstream: String) -> Option<u64>;
}

struct NodeImpl {
    name: String,
    gate: Arc<Semaphore>,
    entered: Arc<Semaphore>,
    active: Arc<AtomicUsize>,
    max_active: Arc<AtomicUsize>,
}

impl NodeImpl {
    fn new(name: &str) -> NodeImpl {
        NodeImpl {
            name: name.to_string(),
            gate: Arc::new(Semaphore::new(0)),
            entered: Arc::new(Semaphore::new(0)),
            active: Arc::default(),
            max_active: Arc::default(),
        }
    }
}

impl Node for NodeImpl {
    async fn name(&self) -> String {
        self.name.clone()
    }
    async fn gated(&self) -> String {
        let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_active.fetch_max(now, Ordering::SeqCst);
        self.entered.add_permits(1);
        self.gate.acquire().await.expect("gate").forget();
        self.active.fetch_sub(1, Ordering::SeqCst);
        self.name.clone()
    }
    async fn remaining_ms(&self) -> Option<u64> {
        rpc::Context::current()
            .and_then(|ctx| ctx.remaining())
            .map(|left| left.as_millis() as u64)
    }
    async fn relay(&self, downstream: String) -> Option<u64> {
        let client = NodeClient::connect(downstream).await.expect("downstream");
        client.remaining_ms().await.expect("downstream call")
    }
}

async fn entered(node: &Semaphore) {
    within("handler entered", node.acquire())
        .await
        .expect("open")
        .forget();
}

#[tokio::test]
async fn graceful_shutdown_finishes_calls_in_flight_and_moves_new_calls_to_a_new_connection() {
    let first = NodeImpl::new("first");
    let (gate, entered_first) = (first.gate.clone(), first.entered.clone());
    let server = start(rpc::Server::builder().serve(first.into_service())).await;
    let addr = server.addr;
    let client = NodeClient::connect(addr).await.expect("connect");

    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.gated().await }
    });
    entered(&entered_first).await;
    server.handle.shutdown();
    // The client hears the go-away and stops sending new calls on this connection.
    eventually("go-away received", || !client.client().is_connected()).await;

    // A new server takes over the address; new calls reach it on a fresh connection.
    let second = start(
        rpc::Server::builder()
            .serve(NodeImpl::new("second").into_service())
            .bind_on(addr),
    )
    .await;
    assert_eq!(
        within("call after go-away", client.name())
            .await
            .expect("new call"),
        "second"
    );

    // The call in flight on the old connection still completes, on the old server.
    gate.add_permits(1);
    assert_eq!(
        within("in-flight call", in_flight)
            .await
            .expect("join")
            .expect("call"),
        "first"
    );
    within("first server stops", async {
        while !server.task.is_finished() {
            tokio::task::yield_now().await
        }
    })
    .await;
    drop(second);
}

#[tokio::test]
async fn shutdown_aborts_calls_that_outlive_the_grace_period() {
    let node = NodeImpl::new("slow");
    let entered_node = node.entered.clone();
    let server = start(
        rpc::Server::builder()
            .shutdown_grace(Duration::from_millis(100))
            .serve(node.into_service()),
    )
    .await;
    let client = NodeClient::connect(server.addr).await.expect("connect");
    let stuck = tokio::spawn({
        let client = client.clone();
        async move { client.gated().no_deadline().await }
    });
    entered(&entered_node).await;
    server.handle.shutdown();
    let outcome = within("stuck call ends", stuck).await.expect("join");
    assert!(
        matches!(outcome, Err(rpc::Error::ConnectionClosed { .. })),
        "{outcome:?}"
    );
    eventually("server stopped", || server.task.is_finished()).await;
    assert_eq!(server.handle.in_flight(), 0);
}

#[tokio::test]
async fn a_client_reconnects_once_the_server_is_back() {
    let server = start(rpc::Server::builder().serve(NodeImpl::new("one").into_service())).await;
    let addr = server.addr;
    let client = NodeClient::connect(addr).await.expect("connect");
    assert_eq!(client.name().await.expect("call"), "one");

    server.kill();
    eventually("connection loss noticed", || {
        !client.client().is_connected()
    })
    .await;
    // While nothing listens, calls fail fast with a typed error rather than hanging.
    let err = within("call while down", client.name())
        .await
        .expect_err("server is down");
    assert!(matches!(err, rpc::Error::Connect { .. }), "{err}");

    let _back = start(
        rpc::Server::builder()
            .serve(NodeImpl::new("two").into_service())
            .bind_on(addr),
    )
    .await;
    // After the backoff the client dials again by itself.
    within("reconnected", async {
        loop {
            match client.name().await {
                Ok(name) => break assert_eq!(name, "two"),
                Err(rpc::Error::Connect { .. } | rpc::Error::ConnectionClosed { .. }) => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                Err(other) => panic!("unexpected error while reconnecting: {other}"),
            }
        }
    })
    .await;
}

#[tokio::test]
async fn idle_connections_are_closed_and_the_next_call_reconnects() {
    let server = start(
        rpc::Server::builder()
            .idle_timeout(Some(Duration::from_millis(100)))
            .serve(NodeImpl::new("idle").into_service()),
    )
    .await;
    let client = NodeClient::connect(server.addr).await.expect("connect");
    assert_eq!(client.name().await.expect("call"), "idle");
    eventually("idle connection closed", || !client.client().is_connected()).await;
    assert_eq!(
        within("call after idle close", client.name())
            .await
            .expect("reconnects"),
        "idle"
    );
}

#[tokio::test]
async fn a_downstream_call_inherits_the_remaining_deadline() {
    let downstream =
        start(rpc::Server::builder().serve(NodeImpl::new("down").into_service())).await;
    let upstream = start(rpc::Server::builder().serve(NodeImpl::new("up").into_service())).await;
    let client = NodeClient::connect(upstream.addr).await.expect("connect");
    let seen = client
        .relay(downstream.addr.to_string())
        .timeout(Duration::from_secs(2))
        .await
        .expect("relay")
        .expect("downstream saw a deadline");
    // The client default is 30 s; the downstream call must carry the caller's 2 s instead.
    assert!(seen <= 2_000, "downstream saw {seen} ms left");
    assert!(seen > 0);
}

#[tokio::test]
async fn a_client_waits_for_room_under_its_in_flight_limit() {
    let node = NodeImpl::new("busy");
    let (gate, entered_node, max_active) = (
        node.gate.clone(),
        node.entered.clone(),
        node.max_active.clone(),
    );
    let server = start(rpc::Server::builder().serve(node.into_service())).await;
    let connection = rpc::Client::builder()
        .max_in_flight(2)
        .connect(server.addr)
        .await
        .expect("connect");
    let client = NodeClient::new(connection);
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.gated().await })
        })
        .collect();
    for _ in 0..6 {
        entered(&entered_node).await;
        assert!(max_active.load(Ordering::SeqCst) <= 2);
        gate.add_permits(1);
    }
    for call in calls {
        assert_eq!(
            within("call", call).await.expect("join").expect("call"),
            "busy"
        );
    }
    assert_eq!(max_active.load(Ordering::SeqCst), 2);
}
