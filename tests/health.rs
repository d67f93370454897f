//! The health service every server hosts (`rpc.Health`): per-service status, set by the
//! application, and not serving from the moment the server drains.

mod support;

use std::sync::Arc;

use rpc::health::{HealthClient, HealthStatus};
use rpc::protocol::message::{Header, Status};
use rpc::ErrorCode;
use support::{body, request, start, within, Raw};
use tokio::sync::Semaphore;

#[rpc::service]
trait Alpha {
    /// Waits until the test opens the gate.
    async fn gated(&self) -> u32;
}

#[rpc::service]
trait Beta {
    async fn ping(&self) -> u32;
}

#[derive(Clone)]
struct Impl {
    gate: Arc<Semaphore>,
    entered: Arc<Semaphore>,
}

impl Impl {
    fn new() -> Impl {
        Impl {
            gate: Arc::new(Semaphore::new(0)),
            entered: Arc::new(Semaphore::new(0)),
        }
    }
}

impl Alpha for Impl {
    async fn gated(&self) -> u32 {
        self.entered.add_permits(1);
        self.gate.acquire().await.expect("gate").forget();
        7
    }
}

impl Beta for Impl {
    async fn ping(&self) -> u32 {
        1
    }
}

async fn two_services(service: &Impl) -> support::Running {
    start(
        rpc::Server::builder()
            .serve(Alpha::into_service(service.clone()))
            .serve(Beta::into_service(service.clone())),
    )
    .await
}

/// What the server answers for each of `names`, asked over TCP.
async fn statuses(health: &HealthClient, names: &[&str]) -> Vec<HealthStatus> {
    let mut out = Vec::new();
    for name in names {
        out.push(
            within("health check", health.check(*name))
                .await
                .expect("check"),
        );
    }
    out
}

#[tokio::test]
async fn every_hosted_service_and_the_server_start_serving() {
    let server = two_services(&Impl::new()).await;
    let health = HealthClient::connect(server.addr).await.expect("connect");
    use HealthStatus::{Serving, Unknown};
    assert_eq!(
        statuses(&health, &["Alpha", "Beta", "", "Gamma", "alpha"]).await,
        [Serving, Serving, Serving, Unknown, Unknown]
    );
    assert_eq!(server.handle.health("Beta"), Serving);
    assert_eq!(server.handle.health("Gamma"), Unknown);
}

#[tokio::test]
async fn set_serving_changes_only_the_name_it_is_given() {
    let server = two_services(&Impl::new()).await;
    let health = HealthClient::connect(server.addr).await.expect("connect");
    use HealthStatus::{NotServing, Serving, Unknown};

    assert!(server.handle.set_serving("Alpha", false));
    assert_eq!(
        statuses(&health, &["Alpha", "Beta", ""]).await,
        [NotServing, Serving, Serving]
    );
    assert_eq!(server.handle.health("Alpha"), NotServing);

    // The server as a whole is a flag of its own.
    assert!(server.handle.set_serving("", false));
    assert_eq!(
        statuses(&health, &["Alpha", "Beta", ""]).await,
        [NotServing, Serving, NotServing]
    );

    // A name the server does not host cannot be set, and stays unknown.
    assert!(!server.handle.set_serving("Gamma", true));
    assert_eq!(statuses(&health, &["Gamma"]).await, [Unknown]);

    assert!(server.handle.set_serving("Alpha", true));
    assert!(server.handle.set_serving("", true));
    assert_eq!(
        statuses(&health, &["Alpha", "Beta", ""]).await,
        [Serving, Serving, Serving]
    );

    // Not serving is advice to balancers: calls still run.
    assert!(server.handle.set_serving("Beta", false));
    let beta = BetaClient::new(health.client().clone());
    assert_eq!(within("ping", beta.ping()).await.expect("ping"), 1);
}

#[tokio::test]
async fn the_check_works_without_the_stub() {
    let server = two_services(&Impl::new()).await;
    let client = rpc::Client::connect(server.addr).await.expect("connect");
    let status: HealthStatus = within(
        "raw check",
        client.call(rpc::health::CHECK, ("Beta".to_string(),)),
    )
    .await
    .expect("check");
    assert_eq!(status, HealthStatus::Serving);
}

/// Reads frames until the response to `id`, returning it; a go-away on the way is noted.
async fn response(raw: &mut Raw, id: u64, go_away: &mut bool) -> (Status, bytes::Bytes) {
    loop {
        match raw
            .next()
            .await
            .expect("a frame before the connection closes")
        {
            (Header::GoAway, _) => *go_away = true,
            (Header::Response { id: got, status }, body) if got == id => return (status, body),
            (other, _) => panic!("unexpected frame {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_draining_server_answers_not_serving_while_its_calls_finish() {
    let service = Impl::new();
    let server = two_services(&service).await;
    let mut raw = Raw::connect(server.addr).await;
    let check = |id: u64, name: &str| {
        (
            request(id, "rpc.Health", "check"),
            body(&(name.to_string(),)),
        )
    };

    // Before the drain: serving.
    let (header, payload) = check(1, "Alpha");
    raw.send_frame(&header, &payload).await;
    let mut go_away = false;
    let (status, reply) = response(&mut raw, 1, &mut go_away).await;
    assert_eq!(
        (status, reply.as_ref()),
        (Status::Ok, body(&HealthStatus::Serving).as_slice())
    );

    // A call in flight holds the connection open through the drain.
    raw.send_frame(&request(2, "Alpha", "gated"), &body(&()))
        .await;
    within("handler entered", service.entered.acquire())
        .await
        .expect("open")
        .forget();
    server.handle.shutdown();
    assert_eq!(server.handle.health("Beta"), HealthStatus::NotServing);

    // The go-away arrives; a check sent after it, on the same connection, is answered.
    while !go_away {
        match raw.next().await.expect("the go-away") {
            (Header::GoAway, _) => go_away = true,
            other => panic!("unexpected frame {other:?}"),
        }
    }
    for (id, name, expected) in [
        (3, "Alpha", HealthStatus::NotServing),
        (4, "Beta", HealthStatus::NotServing),
        (5, "", HealthStatus::NotServing),
        (6, "Gamma", HealthStatus::Unknown),
    ] {
        let (header, payload) = check(id, name);
        raw.send_frame(&header, &payload).await;
        let (status, reply) = response(&mut raw, id, &mut go_away).await;
        assert_eq!(status, Status::Ok, "{name:?}");
        assert_eq!(reply.as_ref(), body(&expected).as_slice(), "{name:?}");
    }

    // Any other new call is refused unrun, as before.
    raw.send_frame(&request(7, "Beta", "ping"), &body(&()))
        .await;
    let (status, _) = response(&mut raw, 7, &mut go_away).await;
    assert!(
        matches!(status, Status::Error { code, .. } if code == ErrorCode::ShuttingDown.to_u16()),
        "{status:?}"
    );

    // The call in flight finishes, then the connection closes.
    service.gate.add_permits(1);
    let (status, reply) = response(&mut raw, 2, &mut go_away).await;
    assert_eq!(
        (status, reply.as_ref()),
        (Status::Ok, body(&7u32).as_slice())
    );
    within("the connection closes", raw.closed()).await;
}

/// A hand-written service that claims the health service's name.
struct Impostor;

impl rpc::Service for Impostor {
    fn name(&self) -> &'static str {
        rpc::health::SERVICE
    }

    fn methods(&self) -> &'static [rpc::Method] {
        &[rpc::health::CHECK]
    }

    fn call(&self, request: rpc::Request) -> rpc::Dispatch {
        request.unknown_method()
    }
}

#[test]
#[should_panic(expected = "the service name `rpc.Health` is reserved")]
fn a_service_may_not_take_the_health_service_name() {
    let _ = rpc::Server::builder().serve(Impostor);
}
