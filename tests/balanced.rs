//! One client over several servers: calls spread by load, unreachable and draining endpoints
//! are skipped, endpoints come and go by discovery, and a call refused unrun moves on.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rpc::discover::Change;
use support::{start, within, Running};
use tokio::sync::Semaphore;

#[rpc::service]
trait Node {
    /// The server's name.
    async fn name(&self) -> String;
    /// The server's name, after the server's `pause`.
    async fn slow_name(&self) -> String;
    /// The server's name, once the test lets it go.
    async fn gated(&self) -> String;
    /// The server's name; safe to send twice.
    #[idempotent]
    async fn read(&self) -> String;
}

#[derive(Clone)]
struct NodeImpl {
    name: String,
    pause: Duration,
    calls: Arc<AtomicUsize>,
    gate: Arc<Semaphore>,
    entered: Arc<Semaphore>,
}

impl NodeImpl {
    fn new(name: &str) -> Self {
        NodeImpl {
            name: name.into(),
            pause: Duration::ZERO,
            calls: Arc::default(),
            gate: Arc::new(Semaphore::new(0)),
            entered: Arc::new(Semaphore::new(0)),
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Node for NodeImpl {
    async fn name(&self) -> String {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.name.clone()
    }

    async fn slow_name(&self) -> String {
        self.calls.fetch_add(1, Ordering::SeqCst);
        // The workload being measured, not synchronisation: this server is slow.
        tokio::time::sleep(self.pause).await;
        self.name.clone()
    }

    async fn gated(&self) -> String {
        self.entered.add_permits(1);
        let _ = self.gate.acquire().await;
        self.name.clone()
    }

    async fn read(&self) -> String {
        self.name().await
    }
}

async fn serve(node: &NodeImpl) -> Running {
    start(rpc::Server::builder().serve(node.clone().into_service())).await
}

/// A balanced client whose endpoints are the changes sent on the returned sender.
fn discovered() -> (rpc::Client, tokio::sync::mpsc::Sender<Change>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let changes = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    (rpc::Client::builder().discover(changes), tx)
}

/// An address nothing listens on right now.
fn vacant_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

#[tokio::test]
async fn calls_spread_over_every_endpoint() {
    let nodes: Vec<NodeImpl> = ["a", "b", "c"].iter().map(|n| NodeImpl::new(n)).collect();
    let mut servers = Vec::new();
    for node in &nodes {
        servers.push(serve(node).await);
    }
    let client = rpc::Client::builder().balance(servers.iter().map(|s| s.addr));
    // The stub is the same type over one endpoint or many.
    let stub: NodeClient = NodeClient::new(client.clone());
    let calls = (0..300).map(|_| stub.name());
    let names = within("300 calls", futures::future::try_join_all(calls))
        .await
        .expect("every call");
    for node in &nodes {
        let got = names.iter().filter(|n| **n == node.name).count();
        assert_eq!(got, node.calls());
        assert!(got > 30, "{} got {got} of 300 calls", node.name);
    }
    assert_eq!(client.endpoints().len(), 3);
    assert!(client.is_connected());
    assert_eq!(client.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_endpoint_gets_fewer_calls() {
    let fast = NodeImpl::new("fast");
    let mut slow = NodeImpl::new("slow");
    // Far slower than anything the machine's load adds to a call (these tests run side by
    // side on shared cores).
    slow.pause = Duration::from_millis(50);
    let (fast_server, slow_server) = (serve(&fast).await, serve(&slow).await);
    let client = rpc::Client::builder().balance([fast_server.addr, slow_server.addr]);
    let stub = NodeClient::new(client);
    // 4 callers, 20 calls each, one at a time: the slow server keeps its calls in flight
    // longer, so the other one wins the comparison more often. Round-robin would give
    // each 40.
    let callers = (0..4).map(|_| {
        let stub = stub.clone();
        async move {
            for _ in 0..20 {
                stub.slow_name().await?;
            }
            Ok::<_, rpc::Error>(())
        }
    });
    within("80 calls", futures::future::try_join_all(callers))
        .await
        .expect("every call");
    let (to_fast, to_slow) = (fast.calls(), slow.calls());
    assert_eq!(to_fast + to_slow, 80);
    assert!(
        to_slow * 3 < to_fast,
        "slow got {to_slow}, fast got {to_fast}"
    );
}

#[tokio::test]
async fn an_endpoint_that_cannot_be_dialled_does_not_fail_calls() {
    let live = NodeImpl::new("live");
    let server = serve(&live).await;
    let client = rpc::Client::builder().balance([vacant_addr(), server.addr, vacant_addr()]);
    let stub = NodeClient::new(client.clone());
    for _ in 0..30 {
        let name = within("call", stub.name()).await.expect("failed over");
        assert_eq!(name, "live");
    }
    assert_eq!(live.calls(), 30);
}

#[tokio::test]
async fn a_client_with_no_reachable_endpoint_fails_with_a_connect_error() {
    let client = rpc::Client::builder().balance([vacant_addr(), vacant_addr()]);
    let err = within("call", NodeClient::new(client).name())
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, rpc::Error::Connect { .. }), "{err}");
}

#[tokio::test]
async fn a_draining_endpoint_gets_no_new_calls_and_finishes_its_own() {
    let (a, b) = (NodeImpl::new("a"), NodeImpl::new("b"));
    let (server_a, server_b) = (serve(&a).await, serve(&b).await);
    // Only `a` at first, so the gated call surely runs there.
    let (client, tx) = discovered();
    tx.send(Change::Insert(server_a.addr.into()))
        .await
        .expect("send");
    let stub = NodeClient::new(client.clone());
    let in_flight = tokio::spawn({
        let stub = stub.clone();
        async move { stub.gated().await }
    });
    within("handler entered", a.entered.acquire())
        .await
        .expect("open")
        .forget();
    tx.send(Change::Insert(server_b.addr.into()))
        .await
        .expect("send");
    server_a.handle.shutdown();
    // Every new call lands on `b`: the go-away, then the closed listener, keep `a` out.
    for _ in 0..20 {
        let name = within("call during the drain", stub.name())
            .await
            .expect("served by the other endpoint");
        assert_eq!(name, "b");
    }
    a.gate.add_permits(1);
    let name = within("the call in flight", in_flight)
        .await
        .expect("join")
        .expect("finished on the draining server");
    assert_eq!(name, "a");
}

#[tokio::test]
async fn discovery_inserts_and_removes_endpoints_and_removal_drains() {
    let (a, b) = (NodeImpl::new("a"), NodeImpl::new("b"));
    let (server_a, server_b) = (serve(&a).await, serve(&b).await);
    let (client, tx) = discovered();
    let stub = NodeClient::new(client.clone());

    // A call made before any endpoint is known waits for the first one.
    let early = tokio::spawn({
        let stub = stub.clone();
        async move { stub.name().await }
    });
    tx.send(Change::Insert(server_a.addr.into()))
        .await
        .expect("send");
    let early = within("early call", early).await.expect("join");
    assert_eq!(early.expect("served once `a` arrived"), "a");

    let in_flight = tokio::spawn({
        let stub = stub.clone();
        async move { stub.gated().await }
    });
    within("handler entered", a.entered.acquire())
        .await
        .expect("open")
        .forget();
    tx.send(Change::Insert(server_b.addr.into()))
        .await
        .expect("send");
    tx.send(Change::Remove(server_a.addr.into()))
        .await
        .expect("send");
    support::eventually("`a` removed", || {
        client.endpoints() == vec![rpc::Endpoint::from(server_b.addr)]
    })
    .await;
    let before = a.calls();
    for _ in 0..20 {
        assert_eq!(within("call", stub.name()).await.expect("call"), "b");
    }
    assert_eq!(a.calls(), before, "a removed endpoint got new calls");
    // Removed, not cut: the call already running on `a` still completes.
    a.gate.add_permits(1);
    let name = within("drained call", in_flight)
        .await
        .expect("join")
        .expect("completed after removal");
    assert_eq!(name, "a");
}

#[tokio::test]
async fn dns_discovery_reaches_what_a_name_resolves_to() {
    let node = NodeImpl::new("local");
    let server = serve(&node).await;
    // `localhost` may also resolve to ::1, where nothing listens: that endpoint is skipped.
    let name = format!("localhost:{}", server.addr.port());
    let client =
        rpc::Client::builder().discover(rpc::discover::dns(&name, Duration::from_secs(60)));
    let stub = NodeClient::new(client.clone());
    for _ in 0..10 {
        assert_eq!(within("call", stub.name()).await.expect("call"), "local");
    }
    assert!(client
        .endpoints()
        .contains(&rpc::Endpoint::from(server.addr)));
}

/// A scripted server that counts the requests it reads and answers each with what
/// `answer` writes (nothing, for a server that swallows them).
async fn counting_server(
    answer: fn(&rpc::protocol::message::RequestHeader, &mut bytes::BytesMut),
) -> (SocketAddr, Arc<AtomicUsize>) {
    use rpc::protocol::message::Header;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            let counter = counter.clone();
            connections.spawn(support::play_server(stream, move |header, _| {
                let mut out = bytes::BytesMut::new();
                if let Header::Request(request) = header {
                    counter.fetch_add(1, Ordering::SeqCst);
                    answer(&request, &mut out);
                }
                out
            }));
        }
    });
    (addr, seen)
}

/// A server that refuses every request the way a server going away does, and counts them.
async fn refusing_server() -> (SocketAddr, Arc<AtomicUsize>) {
    counting_server(|request, out| {
        use rpc::protocol::message::{encode_frame, Header, Status};
        let status = Status::Error {
            code: rpc::ErrorCode::ShuttingDown.to_u16(),
            message: "shutting down; the call was not run".into(),
        };
        let header = Header::Response {
            id: request.id,
            status,
        };
        encode_frame(out, &header, 1 << 20, |_| Ok(())).expect("encode");
    })
    .await
}

#[tokio::test]
async fn a_call_refused_unrun_moves_to_another_endpoint() {
    let (refuser, refused) = refusing_server().await;
    let live = NodeImpl::new("live");
    let server = serve(&live).await;
    // The scripted server refuses health checks too, which no real server does (a draining
    // server still answers them): without the probe, every request it counts is a call's.
    let client = rpc::Client::builder()
        .health_check_interval(None)
        .balance([refuser, server.addr]);
    let stub = NodeClient::new(client);
    for _ in 0..20 {
        assert_eq!(within("call", stub.name()).await.expect("moved on"), "live");
    }
    assert_eq!(live.calls(), 20);
    // Idle, both endpoints tie and either may be picked, so within 20 calls the refuser is
    // tried (all but surely: 1 in 2^20 it is not). Its refusal moved that call to the other
    // endpoint, and its connection, going away but open, takes no call after that.
    assert_eq!(refused.load(Ordering::SeqCst), 1);
}

/// Calls `name` until `done` says the last ten answers are what it waited for.
async fn until_answers(stub: &NodeClient, what: &str, done: impl Fn(&[String]) -> bool) {
    within(what, async {
        loop {
            let mut names = Vec::new();
            for _ in 0..10 {
                names.push(stub.name().await.expect("call"));
            }
            if done(&names) {
                return;
            }
            // Give the health probe a turn; the condition, not this pause, is what counts.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

#[tokio::test]
async fn an_endpoint_whose_health_check_says_not_serving_gets_no_calls_until_it_serves() {
    let (a, b) = (NodeImpl::new("a"), NodeImpl::new("b"));
    let (server_a, server_b) = (serve(&a).await, serve(&b).await);
    let client = rpc::Client::builder()
        .health_check_interval(Some(Duration::from_millis(20)))
        .balance([server_a.addr, server_b.addr]);
    let stub = NodeClient::new(client);
    until_answers(&stub, "both endpoints used", |names| {
        names.iter().any(|n| n == "a") && names.iter().any(|n| n == "b")
    })
    .await;

    assert!(server_a.handle.set_serving("", false));
    until_answers(&stub, "`a` left out", |names| {
        names.iter().all(|n| n == "b")
    })
    .await;
    // Left out for good, not by chance: another hundred calls, none to `a`.
    let before = a.calls();
    for _ in 0..100 {
        assert_eq!(stub.name().await.expect("call"), "b");
    }
    assert_eq!(a.calls(), before);

    assert!(server_a.handle.set_serving("", true));
    until_answers(&stub, "`a` back", |names| names.iter().any(|n| n == "a")).await;
}

/// A server that completes the handshake and then never sends another byte (a host behind
/// a link that went dark); counts the requests it swallows.
async fn silent_server() -> (SocketAddr, Arc<AtomicUsize>) {
    counting_server(|_, _| {}).await
}

#[tokio::test]
async fn an_endpoint_that_goes_silent_is_ejected_and_its_idempotent_calls_move_on() {
    let (silent, swallowed) = silent_server().await;
    let live = NodeImpl::new("live");
    let server = serve(&live).await;
    let client = rpc::Client::builder()
        .keepalive_interval(Some(Duration::from_millis(50)))
        .keepalive_timeout(Duration::from_millis(150))
        // Ejected for long after it went silent: no call may find it again in this test.
        .reconnect_backoff(Duration::from_secs(60), Duration::from_secs(60))
        .health_check_interval(None)
        .balance([silent, server.addr]);
    let stub = NodeClient::new(client.clone());
    for _ in 0..30 {
        let name = within("idempotent call", stub.read().no_deadline())
            .await
            .expect("moved to the live endpoint");
        assert_eq!(name, "live");
    }
    // Idle, the two endpoints tie, so the silent one was picked (all but surely: 1 in 2^30
    // it was not); its call waited for the keepalive to give up, was sent again to the
    // other, and the silent endpoint got nothing after that.
    assert_eq!(swallowed.load(Ordering::SeqCst), 1);
    assert_eq!(client.retries(), 1);
}
