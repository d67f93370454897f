//! The same service over a Unix domain socket and over an in-memory pipe.

mod support;

use support::within;

#[rpc::service]
trait Echo {
    async fn echo(&self, text: String) -> String;
    /// Who the server sees on the other end.
    async fn peer(&self) -> String;
}

struct EchoImpl;

impl Echo for EchoImpl {
    async fn echo(&self, text: String) -> String {
        text
    }
    async fn peer(&self) -> String {
        rpc::Context::with_current(|ctx| ctx.peer().to_string()).unwrap_or_default()
    }
}

#[tokio::test]
async fn calls_work_over_a_unix_socket() {
    let dir = std::env::temp_dir().join(format!("rpc-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("echo.sock");
    let _ = std::fs::remove_file(&path);
    let server = rpc::Server::builder()
        .serve(EchoImpl.into_service())
        .bind_unix(&path)
        .expect("bind unix socket");
    let task = tokio::spawn(server.run());
    let client = EchoClient::connect(rpc::Endpoint::unix(&path))
        .await
        .expect("connect");
    assert_eq!(
        within("unix echo", client.echo("over unix".into()))
            .await
            .expect("echo"),
        "over unix"
    );
    let peer = within("peer", client.peer()).await.expect("peer");
    assert!(peer.starts_with("unix:"), "the server saw {peer}");
    task.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn calls_work_over_an_in_memory_pipe() {
    let (server, connector) = rpc::Server::builder()
        .serve(EchoImpl.into_service())
        .memory();
    let task = tokio::spawn(server.run());
    let stream = connector.connect().await.expect("memory connect");
    let client = EchoClient::new(
        rpc::Client::builder()
            .connect_transport(stream)
            .await
            .expect("handshake"),
    );
    let replies = futures::future::join_all((0..100).map(|i| client.echo(format!("m{i}")))).await;
    for (i, reply) in replies.into_iter().enumerate() {
        assert_eq!(reply.expect("echo"), format!("m{i}"));
    }
    let peer = within("peer", client.peer()).await.expect("peer");
    assert_eq!(peer, "memory");
    task.abort();
}
