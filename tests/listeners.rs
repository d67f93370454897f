//! Servers built from listeners the test bound itself (as with socket activation), and
//! streams served one by one with `Server::serve_transport`: the same calls, connection cap
//! and graceful shutdown as a server from `bind`.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use rpc::protocol::message::{decode_frame, Header, Status};
use support::{body, preamble, request, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_util::codec::Decoder;

#[rpc::service]
trait Node {
    async fn echo(&self, text: String) -> String;
    /// Waits until the test opens the gate.
    async fn gated(&self) -> String;
}

#[derive(Clone)]
struct NodeImpl {
    gate: Arc<Semaphore>,
    entered: Arc<Semaphore>,
}

impl Default for NodeImpl {
    fn default() -> Self {
        NodeImpl {
            gate: Arc::new(Semaphore::new(0)),
            entered: Arc::new(Semaphore::new(0)),
        }
    }
}

impl Node for NodeImpl {
    async fn echo(&self, text: String) -> String {
        text
    }
    async fn gated(&self) -> String {
        self.entered.add_permits(1);
        self.gate.acquire().await.expect("gate").forget();
        "gated".into()
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Calls `echo` once on a fresh connection to `addr`.
async fn echo_once(addr: SocketAddr) {
    let client = NodeClient::new(support::connect_pinned(addr).await);
    assert_eq!(
        within("echo", client.echo("hi".into()))
            .await
            .expect("echo"),
        "hi"
    );
}

/// Opens a connection and sends the preamble: the stream if the server answered it, `None`
/// if the server refused the connection or closed it without an answer.
async fn handshake(addr: SocketAddr) -> Option<TcpStream> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    stream.write_all(&preamble()).await.ok()?;
    let mut answer = [0u8; 8];
    within("preamble answer or close", stream.read_exact(&mut answer))
        .await
        .ok()?;
    Some(stream)
}

/// Asserts that a new connection to a server shutting down runs no call: it is refused, or
/// closed, or (accepted in the instant the shutdown began) told to go away with its call
/// refused unrun.
async fn not_served(addr: SocketAddr) {
    let Some(mut stream) = handshake(addr).await else {
        return;
    };
    let _ = stream
        .write_all(&support::frame(
            &request(1, "Node", "echo"),
            &body(&("hi",)),
        ))
        .await;
    let received = support::read_until_closed("server closes the connection", &mut stream).await;
    let mut bytes = bytes::BytesMut::from(&received[..]);
    let mut decoder = rpc::protocol::frame::FrameDecoder::new(1 << 20);
    while let Ok(Some(frame)) = decoder.decode(&mut bytes) {
        let (header, _) = decode_frame(frame).expect("valid header");
        assert!(
            !matches!(
                header,
                Header::Response {
                    status: Status::Ok,
                    ..
                }
            ),
            "a call ran on a connection opened after shutdown"
        );
    }
}

#[tokio::test]
async fn a_server_from_a_tokio_listener_serves_calls() {
    let listener = tokio::net::TcpListener::bind(loopback())
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = rpc::Server::builder()
        .serve(NodeImpl::default().into_service())
        .listener(listener);
    assert_eq!(server.local_addr(), Some(addr));
    let task = tokio::spawn(server.run());
    echo_once(addr).await;
    task.abort();
}

#[tokio::test]
async fn a_server_from_a_std_listener_serves_calls() {
    // Bound by blocking code, as a service manager's socket would be; still blocking here.
    let listener = std::net::TcpListener::bind(loopback()).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = rpc::Server::builder()
        .serve(NodeImpl::default().into_service())
        .std_listener(listener)
        .expect("adopt listener");
    let task = tokio::spawn(server.run());
    echo_once(addr).await;
    // A second connection proves the accept loop did not block its thread on the first.
    echo_once(addr).await;
    task.abort();
}

#[cfg(unix)]
#[tokio::test]
async fn a_server_from_a_std_unix_listener_serves_calls() {
    let dir = std::env::temp_dir().join(format!("rpc-listeners-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("node.sock");
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    let server = rpc::Server::builder()
        .serve(NodeImpl::default().into_service())
        .std_unix_listener(listener)
        .expect("adopt listener");
    let task = tokio::spawn(server.run());
    let client = NodeClient::connect(rpc::Endpoint::unix(&path))
        .await
        .expect("connect");
    assert_eq!(
        within("unix echo", client.echo("unix".into()))
            .await
            .expect("echo"),
        "unix"
    );
    task.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_server_from_a_listener_refuses_connections_past_max_connections() {
    let listener = std::net::TcpListener::bind(loopback()).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = rpc::Server::builder()
        .max_connections(2)
        .serve(NodeImpl::default().into_service())
        .std_listener(listener)
        .expect("adopt listener");
    let task = tokio::spawn(server.run());
    let first = handshake(addr).await.expect("first connection served");
    let second = handshake(addr).await.expect("second connection served");
    assert!(
        handshake(addr).await.is_none(),
        "a third connection was served past max_connections = 2"
    );
    drop((first, second));
    task.abort();
}

#[tokio::test]
async fn a_server_from_a_listener_drains_gracefully_on_shutdown() {
    let node = NodeImpl::default();
    let listener = tokio::net::TcpListener::bind(loopback())
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = rpc::Server::builder()
        .serve(node.clone().into_service())
        .listener(listener);
    let handle = server.handle();
    let task = tokio::spawn(server.run());
    let client = NodeClient::new(support::connect_pinned(addr).await);
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.gated().await }
    });
    within("handler entered", node.entered.acquire())
        .await
        .expect("open")
        .forget();

    handle.shutdown();
    support::eventually("go-away received", || !client.client().is_connected()).await;
    not_served(addr).await;

    // The call in flight still completes, then the server stops.
    node.gate.add_permits(1);
    assert_eq!(
        within("in-flight call", in_flight)
            .await
            .expect("join")
            .expect("call"),
        "gated"
    );
    within("server stops", task).await.expect("server task");
    not_served(addr).await;
}

#[tokio::test]
async fn serve_transport_counts_against_the_cap_and_drains_on_shutdown() {
    let node = NodeImpl::default();
    let server = Arc::new(
        rpc::Server::builder()
            .max_connections(1)
            .serve(node.clone().into_service())
            .memory()
            .0,
    );
    let handle = server.handle();
    // The test accepts connections itself and hands each stream to the server.
    let listener = tokio::net::TcpListener::bind(loopback())
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (served_tx, mut served_rx) = tokio::sync::mpsc::channel(4);
    let acceptor = tokio::spawn({
        let server = server.clone();
        async move {
            loop {
                let (stream, _) = listener.accept().await.expect("accept");
                let (server, served_tx) = (server.clone(), served_tx.clone());
                tokio::spawn(async move {
                    server.serve_transport(stream).await;
                    let _ = served_tx.send(()).await;
                });
            }
        }
    });

    let client = NodeClient::new(support::connect_pinned(addr).await);
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.gated().await }
    });
    within("handler entered", node.entered.acquire())
        .await
        .expect("open")
        .forget();
    // The one slot is taken: a second stream is dropped at once.
    assert!(
        handshake(addr).await.is_none(),
        "a second stream was served past max_connections = 1"
    );
    within("refused stream returns", served_rx.recv())
        .await
        .expect("sender alive");

    handle.shutdown();
    support::eventually("go-away received", || !client.client().is_connected()).await;
    node.gate.add_permits(1);
    assert_eq!(
        within("in-flight call", in_flight)
            .await
            .expect("join")
            .expect("call"),
        "gated"
    );
    within("drained stream returns", served_rx.recv())
        .await
        .expect("sender alive");
    assert_eq!(handle.connections(), 0);
    acceptor.abort();
}

#[tokio::test]
async fn serve_transport_closes_a_connection_that_outlives_the_shutdown_grace() {
    let node = NodeImpl::default();
    let server = rpc::Server::builder()
        .shutdown_grace(std::time::Duration::from_millis(100))
        .serve(node.clone().into_service())
        .memory()
        .0;
    let handle = server.handle();
    let listener = tokio::net::TcpListener::bind(loopback())
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let served = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        server.serve_transport(stream).await;
    });
    let client = NodeClient::new(support::connect_pinned(addr).await);
    let stuck = tokio::spawn({
        let client = client.clone();
        async move { client.gated().no_deadline().await }
    });
    within("handler entered", node.entered.acquire())
        .await
        .expect("open")
        .forget();
    handle.shutdown();
    // The gate never opens: only the grace period ends the connection.
    within("serve_transport returns after the grace", served)
        .await
        .expect("served");
    let outcome = within("stuck call ends", stuck).await.expect("join");
    assert!(
        matches!(outcome, Err(rpc::Error::ConnectionClosed { .. })),
        "{outcome:?}"
    );
    assert_eq!(handle.connections(), 0);
    assert_eq!(handle.in_flight(), 0);
}
