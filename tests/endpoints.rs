//! Every way to name a server reaches it, and a lazy client can exist before its server.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::{start, within, BindOn};

#[rpc::service]
trait Echo {
    async fn echo(&self, text: String) -> String;
}

struct EchoImpl;

impl Echo for EchoImpl {
    async fn echo(&self, text: String) -> String {
        text
    }
}

fn echo_server() -> rpc::ServerBuilder {
    rpc::Server::builder().serve(EchoImpl.into_service())
}

async fn echoes(client: rpc::Client, what: &str) {
    let client = EchoClient::new(client);
    let got = within(what, client.echo(what.into())).await.expect(what);
    assert_eq!(got, what);
}

#[tokio::test]
async fn a_server_is_reached_by_address_name_pair_and_unix_path() {
    let server = start(echo_server()).await;
    let port = server.addr.port();
    let forms: [(&str, rpc::Endpoint); 5] = [
        ("socket address", server.addr.into()),
        ("host:port text", format!("127.0.0.1:{port}").into()),
        ("name:port text", format!("localhost:{port}").into()),
        ("(ip, port)", ("127.0.0.1", port).into()),
        ("(name, port)", ("localhost", port).into()),
    ];
    for (what, endpoint) in forms {
        let client = within(what, rpc::Client::connect(endpoint))
            .await
            .expect(what);
        echoes(client, what).await;
    }

    let dir = std::env::temp_dir().join(format!("rpc-endpoints-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("echo.sock");
    let _ = std::fs::remove_file(&path);
    let unix = echo_server().bind_unix(&path).expect("bind unix socket");
    let task = tokio::spawn(unix.run());
    let client = within("unix", rpc::Client::connect(path.as_path()))
        .await
        .expect("connect by path");
    echoes(client, "unix path").await;
    task.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

/// An address nothing listens on right now (a port the OS just handed out and took back).
fn vacant_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

#[tokio::test]
async fn a_lazy_client_is_created_before_its_server_and_dials_on_the_first_call() {
    let addr = vacant_addr();
    // Without the setting, connecting to nobody fails at once.
    let eager = within("eager connect", rpc::Client::connect(addr)).await;
    assert!(
        matches!(eager, Err(rpc::Error::Connect { .. })),
        "{eager:?}"
    );

    let client = within(
        "lazy connect",
        rpc::Client::builder()
            .lazy_connect(true)
            .reconnect_backoff(Duration::from_millis(1), Duration::from_millis(1))
            .connect(addr),
    )
    .await
    .expect("a lazy client needs no server yet");
    assert!(!client.is_connected());
    assert_eq!(client.in_flight(), 0);

    // A call while nothing listens fails with the dial's error, like any client's.
    let stub = EchoClient::new(client.clone());
    let err = within("call with no server", stub.echo("early".into()))
        .await
        .expect_err("no server yet");
    assert!(matches!(err, rpc::Error::Connect { .. }), "{err}");

    let _server = start(echo_server().bind_on(addr)).await;
    // The failed dial set a 1 ms backoff; calls fail fast until it has passed.
    within("first call after the server is up", async {
        loop {
            match stub.echo("late".into()).await {
                Ok(text) => break assert_eq!(text, "late"),
                Err(rpc::Error::Connect { .. }) => tokio::task::yield_now().await,
                Err(other) => panic!("unexpected error {other}"),
            }
        }
    })
    .await;
    assert!(client.is_connected());
}
