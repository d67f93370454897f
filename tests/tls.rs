//! TLS and mutual TLS with certificates made at test time: good handshakes, each way a
//! handshake is refused (with the client's typed error and the server's log line), the
//! plaintext/TLS mix-ups, and reconnect, go-away, streams and the balanced client over TLS.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rpc::TlsError;
use support::certs::{client_tls, Ca, Logs, Usage};
use support::{eventually, start, within, BindOn};

/// What a test server says about itself and its caller.
#[rpc::service]
pub trait Who {
    /// The server's name.
    async fn name(&self) -> String;
    /// The caller's certificate subject and DNS names, as the handler sees them.
    async fn whoami(&self) -> Option<(String, Vec<String>)>;
    /// `0..n` as a stream.
    async fn count(&self, n: u32) -> rpc::Stream<u32>;
}

#[derive(Clone)]
struct WhoImpl {
    name: String,
    calls: Arc<AtomicUsize>,
}

impl WhoImpl {
    fn new(name: &str) -> WhoImpl {
        WhoImpl {
            name: name.into(),
            calls: Arc::default(),
        }
    }
}

impl Who for WhoImpl {
    async fn name(&self) -> String {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.name.clone()
    }

    async fn whoami(&self) -> Option<(String, Vec<String>)> {
        let ctx = rpc::Context::current()?;
        let identity = ctx.peer_identity()?;
        Some((
            identity.subject().to_string(),
            identity.dns_names().map(String::from).collect(),
        ))
    }

    async fn count(&self, n: u32) -> rpc::Stream<u32> {
        rpc::Stream::iter(0..n)
    }
}

/// A TLS server named `name` whose certificate `ca` issued for localhost and 127.0.0.1.
fn tls_server(ca: &Ca, name: &str) -> rpc::ServerBuilder {
    let issued = ca.issue("server", &["localhost", "127.0.0.1"], Usage::Server);
    rpc::Server::builder()
        .tls(issued.server_tls())
        .serve(WhoImpl::new(name).into_service())
}

fn localhost(addr: std::net::SocketAddr) -> String {
    format!("localhost:{}", addr.port())
}

/// The TLS failure inside `err`, or a panic naming what came instead.
fn tls_failure(err: rpc::Error) -> TlsError {
    assert!(!err.may_have_run(), "{err}");
    match err {
        rpc::Error::Tls { source, .. } => source,
        other => panic!("expected Error::Tls, got {other:?}: {other}"),
    }
}

#[tokio::test]
async fn calls_and_streams_go_over_tls_by_name_and_by_address() {
    let ca = Ca::new("test CA");
    let server = start(tls_server(&ca, "one")).await;
    let tls = client_tls(&ca);

    let by_name = rpc::Client::builder()
        .tls(tls.clone())
        .connect(localhost(server.addr))
        .await
        .expect("connect by name");
    let who = WhoClient::new(by_name);
    assert_eq!(who.name().await.expect("call"), "one");
    let mut items = who.count(1000).await.expect("stream");
    let mut seen = Vec::new();
    while let Some(item) = within("stream item", items.next()).await {
        seen.push(item.expect("item"));
    }
    assert_eq!(seen, (0..1000).collect::<Vec<_>>());
    // No client certificate: no identity on the server.
    assert_eq!(who.whoami().await.expect("call"), None);

    // By IP address: the certificate's IP name is checked.
    let by_addr = rpc::Client::builder()
        .tls(tls)
        .connect(server.addr)
        .await
        .expect("connect by address");
    assert_eq!(WhoClient::new(by_addr).name().await.expect("call"), "one");
}

#[tokio::test]
async fn a_server_certificate_from_an_untrusted_ca_is_refused() {
    let (logs, _guard) = Logs::capture();
    let server = start(tls_server(&Ca::new("real CA"), "one")).await;
    let other = Ca::new("some other CA");
    let err = rpc::Client::builder()
        .tls(client_tls(&other))
        .connect(localhost(server.addr))
        .await
        .expect_err("untrusted");
    let message = err.to_string();
    let failure = tls_failure(err);
    assert!(
        matches!(failure, TlsError::UntrustedCertificate { .. }),
        "{failure:?}"
    );
    assert!(message.contains("add the CA that signed it"), "{message}");
    eventually("server log line", || {
        logs.text().contains("TLS handshake failed")
    })
    .await;
}

#[tokio::test]
async fn a_server_certificate_for_another_name_is_refused() {
    let (logs, _guard) = Logs::capture();
    let ca = Ca::new("test CA");
    let issued = ca.issue("server", &["calc.internal"], Usage::Server);
    let server = start(
        rpc::Server::builder()
            .tls(issued.server_tls())
            .serve(WhoImpl::new("one").into_service()),
    )
    .await;
    let err = rpc::Client::builder()
        .tls(client_tls(&ca))
        .connect(localhost(server.addr))
        .await
        .expect_err("wrong name");
    let message = err.to_string();
    match tls_failure(err) {
        TlsError::WrongName { name, .. } => assert_eq!(name, "localhost"),
        other => panic!("{other:?}"),
    }
    assert!(message.contains("server_name"), "{message}");
    eventually("server log line", || {
        logs.text().contains("TLS handshake failed")
    })
    .await;

    // Checking the name the certificate does carry succeeds.
    let tls = client_tls(&ca).server_name("calc.internal").expect("name");
    let client = rpc::Client::builder()
        .tls(tls)
        .connect(server.addr)
        .await
        .expect("connect with server_name");
    assert_eq!(WhoClient::new(client).name().await.expect("call"), "one");
}

#[tokio::test]
async fn an_expired_server_certificate_is_refused() {
    let (logs, _guard) = Logs::capture();
    let ca = Ca::new("test CA");
    let issued = ca.issue_expired("server", &["localhost"], Usage::Server);
    let server = start(
        rpc::Server::builder()
            .tls(issued.server_tls())
            .serve(WhoImpl::new("one").into_service()),
    )
    .await;
    let err = rpc::Client::builder()
        .tls(client_tls(&ca))
        .connect(localhost(server.addr))
        .await
        .expect_err("expired");
    let message = err.to_string();
    assert!(
        matches!(tls_failure(err), TlsError::Expired { .. }),
        "{message}"
    );
    assert!(message.contains("renew"), "{message}");
    eventually("server log line", || {
        logs.text().contains("TLS handshake failed")
    })
    .await;
}

/// A server that requires client certificates from `clients`.
fn mtls_server(servers: &Ca, clients: &Ca) -> rpc::ServerBuilder {
    let issued = servers.issue("server", &["localhost"], Usage::Server);
    let tls = issued
        .server_tls()
        .require_client_certs(clients.pem().as_bytes())
        .expect("mtls");
    rpc::Server::builder()
        .tls(tls)
        .serve(WhoImpl::new("one").into_service())
}

#[tokio::test]
async fn mutual_tls_puts_the_verified_identity_in_the_context() {
    let servers = Ca::new("server CA");
    let clients = Ca::new("client CA");
    let server = start(mtls_server(&servers, &clients)).await;
    let alice = clients.issue("alice", &["alice.clients.internal"], Usage::Client);
    let tls = client_tls(&servers)
        .identity_pem(alice.cert_pem.as_bytes(), alice.key_pem.as_bytes())
        .expect("identity");
    let client = rpc::Client::builder()
        .tls(tls)
        .connect(localhost(server.addr))
        .await
        .expect("connect");
    let (subject, names) = WhoClient::new(client)
        .whoami()
        .await
        .expect("call")
        .expect("an identity");
    assert_eq!(subject, "CN=alice, O=rpc tests");
    assert_eq!(names, ["alice.clients.internal"]);
}

#[tokio::test]
async fn mutual_tls_refuses_a_client_without_a_certificate() {
    let (logs, _guard) = Logs::capture();
    let servers = Ca::new("server CA");
    let server = start(mtls_server(&servers, &Ca::new("client CA"))).await;
    let err = rpc::Client::builder()
        .tls(client_tls(&servers))
        .connect(localhost(server.addr))
        .await
        .expect_err("no client certificate");
    let message = err.to_string();
    assert!(
        matches!(tls_failure(err), TlsError::ClientCertificateRequired),
        "{message}"
    );
    assert!(message.contains("give the client an identity"), "{message}");
    eventually("server log line", || {
        let text = logs.text();
        text.contains("TLS handshake failed") && text.contains("no certificate")
    })
    .await;
}

#[tokio::test]
async fn mutual_tls_refuses_a_client_certificate_from_another_ca() {
    let (logs, _guard) = Logs::capture();
    let servers = Ca::new("server CA");
    let server = start(mtls_server(&servers, &Ca::new("client CA"))).await;
    let mallory = Ca::new("mallory's CA").issue("mallory", &["mallory"], Usage::Client);
    let tls = client_tls(&servers)
        .identity_pem(mallory.cert_pem.as_bytes(), mallory.key_pem.as_bytes())
        .expect("identity");
    let err = rpc::Client::builder()
        .tls(tls)
        .connect(localhost(server.addr))
        .await
        .expect_err("client certificate from another CA");
    let message = err.to_string();
    assert!(
        matches!(tls_failure(err), TlsError::ClientCertificateRejected { .. }),
        "{message}"
    );
    assert!(
        message.contains("signed by a CA the server trusts"),
        "{message}"
    );
    eventually("server log line", || {
        logs.text().contains("TLS handshake failed")
    })
    .await;
}

#[tokio::test]
async fn a_plaintext_client_meets_a_tls_server_with_a_clear_error_not_a_hang() {
    let (logs, _guard) = Logs::capture();
    let server = start(tls_server(&Ca::new("test CA"), "one")).await;
    let err = within(
        "plaintext connect",
        rpc::Client::builder()
            // Far above what the test allows: the failure must not be this timeout.
            .connect_timeout(Duration::from_secs(60))
            .connect(server.addr),
    )
    .await
    .expect_err("plaintext against TLS");
    let message = err.to_string();
    assert!(
        matches!(
            err,
            rpc::Error::Protocol(rpc::ProtocolError::PeerSpeaksTls { .. })
        ),
        "{message}"
    );
    assert!(message.contains("turn TLS on"), "{message}");
    eventually("server log line", || {
        logs.text().contains("TLS handshake failed")
    })
    .await;
}

#[tokio::test]
async fn a_tls_client_meets_a_plaintext_server_with_a_clear_error_not_a_hang() {
    let (logs, _guard) = Logs::capture();
    let server = start(rpc::Server::builder().serve(WhoImpl::new("plain").into_service())).await;
    let err = within(
        "TLS connect",
        rpc::Client::builder()
            .connect_timeout(Duration::from_secs(60))
            .tls(client_tls(&Ca::new("test CA")))
            .connect(localhost(server.addr)),
    )
    .await
    .expect_err("TLS against plaintext");
    let message = err.to_string();
    assert!(matches!(tls_failure(err), TlsError::NotTls), "{message}");
    assert!(message.contains("plaintext server"), "{message}");
    eventually("server log line", || logs.text().contains("speaks TLS")).await;
}

#[tokio::test]
async fn a_tls_client_redials_by_itself_after_the_server_closes_the_connection() {
    let ca = Ca::new("test CA");
    let issued = ca.issue("server", &["localhost"], Usage::Server);
    let server = start(
        rpc::Server::builder()
            .tls(issued.server_tls())
            .idle_timeout(Some(Duration::from_millis(100)))
            .serve(WhoImpl::new("idle").into_service()),
    )
    .await;
    let client = rpc::Client::builder()
        .tls(client_tls(&ca))
        .connect(localhost(server.addr))
        .await
        .expect("connect");
    let who = WhoClient::new(client.clone());
    assert_eq!(who.name().await.expect("call"), "idle");
    eventually("idle connection closed", || !client.is_connected()).await;
    assert_eq!(
        within("call after the close", who.name())
            .await
            .expect("redialled over TLS"),
        "idle"
    );
}

#[tokio::test]
async fn a_go_away_over_tls_moves_new_calls_to_a_new_tls_connection() {
    let ca = Ca::new("test CA");
    let first = start(tls_server(&ca, "first")).await;
    let addr = first.addr;
    let client = rpc::Client::builder()
        .tls(client_tls(&ca))
        .connect(localhost(addr))
        .await
        .expect("connect");
    let who = WhoClient::new(client.clone());
    assert_eq!(who.name().await.expect("call"), "first");
    first.handle.shutdown();
    eventually("go-away received", || !client.is_connected()).await;
    let _second = start(tls_server(&ca, "second").bind_on(addr)).await;
    within("call after go-away", async {
        loop {
            match who.name().await {
                Ok(name) => break assert_eq!(name, "second"),
                // The first server may still be draining when the call dials.
                Err(rpc::Error::Connect { .. } | rpc::Error::Unavailable { .. }) => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                Err(other) => panic!("unexpected error after go-away: {other}"),
            }
        }
    })
    .await;
}

#[tokio::test]
async fn a_balanced_client_spreads_calls_over_two_tls_servers() {
    let ca = Ca::new("test CA");
    let (a, b) = (WhoImpl::new("a"), WhoImpl::new("b"));
    let issued = ca.issue("server", &["localhost"], Usage::Server);
    let start_one = |who: &WhoImpl| {
        start(
            rpc::Server::builder()
                .tls(issued.server_tls())
                .serve(who.clone().into_service()),
        )
    };
    let (server_a, server_b) = (start_one(&a).await, start_one(&b).await);
    let client = rpc::Client::builder()
        .tls(client_tls(&ca))
        .balance([localhost(server_a.addr), localhost(server_b.addr)]);
    let who = WhoClient::new(client);
    // Calls in flight together, so that both endpoints get dialled and used.
    within("balanced calls", async {
        while a.calls.load(Ordering::Relaxed) == 0 || b.calls.load(Ordering::Relaxed) == 0 {
            let batch = (0..16).map(|_| who.name());
            for outcome in futures::future::join_all(batch).await {
                let name = outcome.expect("call over TLS");
                assert!(name == "a" || name == "b", "{name}");
            }
        }
    })
    .await;
}
