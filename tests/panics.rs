//! What a caller learns about a server's failure: a handler's panic message stays in the
//! server's log under the call id the caller is given, unless the server exposes panic
//! messages (for development); a framework failure on the server's side (an i/o error, a
//! service it could not reach) reaches the caller without its addresses or paths.

mod support;

use std::sync::Arc;

use support::certs::Logs;
use support::start;

/// Fails in ways that carry details a caller must not see.
#[rpc::service]
pub trait Leaky {
    /// Panics with a message naming a secret file.
    async fn panics(&self) -> u32;
    /// A stream that ends with the error of a downstream dial.
    async fn downstream(&self) -> rpc::Stream<u32>;
}

struct LeakyImpl;

const SECRET: &str = "cannot open /etc/app/secret.key for tenant 42";

impl Leaky for LeakyImpl {
    async fn panics(&self) -> u32 {
        panic!("{SECRET}");
    }

    async fn downstream(&self) -> rpc::Stream<u32> {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        rpc::Stream::from_results(futures::stream::iter([
            Ok(1),
            Err(rpc::Error::Connect {
                endpoint: "db.internal.example:5432".into(),
                source: Arc::new(refused).into(),
            }),
        ]))
    }
}

#[tokio::test]
async fn a_panic_message_stays_in_the_server_log_and_the_caller_gets_the_call_id() {
    let (logs, _guard) = Logs::capture();
    let server = start(rpc::Server::builder().serve(LeakyImpl.into_service())).await;
    let client = LeakyClient::connect(server.addr).await.expect("connect");
    let err = client.panics().await.expect_err("panicked");
    let rpc::Error::HandlerPanicked { message } = &err else {
        panic!("expected HandlerPanicked, got {err:?}");
    };
    let id: u64 = message
        .strip_prefix("call id ")
        .and_then(|rest| rest.strip_suffix("; see the server log"))
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no call id in {message:?}"));
    assert_eq!(
        err.to_string(),
        format!("handler panicked (call id {id}; see the server log)")
    );
    assert!(!err.to_string().contains("secret"), "{err}");
    // The server's log has the message, under that call id.
    let log = logs.text();
    let line = log
        .lines()
        .find(|line| line.contains("handler panicked"))
        .unwrap_or_else(|| panic!("no panic line in the log:\n{log}"));
    assert!(line.contains(SECRET), "{line}");
    assert!(line.contains(&format!("call_id={id}")), "{line}");
}

#[tokio::test]
async fn a_server_that_exposes_panic_messages_sends_them() {
    let server = start(
        rpc::Server::builder()
            .expose_panic_messages(true)
            .serve(LeakyImpl.into_service()),
    )
    .await;
    let client = LeakyClient::connect(server.addr).await.expect("connect");
    let err = client.panics().await.expect_err("panicked");
    assert!(
        matches!(&err, rpc::Error::HandlerPanicked { message } if message == SECRET),
        "{err}"
    );
}

#[tokio::test]
async fn a_framework_failure_reaches_the_caller_without_the_servers_addresses() {
    use futures::StreamExt;
    let (logs, _guard) = Logs::capture();
    let server = start(rpc::Server::builder().serve(LeakyImpl.into_service())).await;
    let client = LeakyClient::connect(server.addr).await.expect("connect");
    let mut items = client.downstream().await.expect("call");
    assert_eq!(items.next().await.expect("first").expect("ok"), 1);
    let err = items.next().await.expect("end").expect_err("failure");
    let message = err.to_string();
    assert!(!message.contains("db.internal"), "{message}");
    assert!(message.contains("the details are in its log"), "{message}");
    assert!(
        logs.text().contains("db.internal.example:5432"),
        "{}",
        logs.text()
    );
}
