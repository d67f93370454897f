//! tower's own layers around calls, over TCP on 127.0.0.1: on the server per service and
//! server-wide (concurrency limit, rate limit, load shed, timeout) and around the client
//! (`Client::tower` under a `ServiceBuilder`). Each test checks the layer's effect, and that
//! its errors reach the caller typed.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt as _;
use futures::StreamExt as _;
use rpc::tower::Call;
use rpc::{Error, Method};
use support::{eventually, start, within};
use tokio::sync::Semaphore;
use tower::{Service as _, ServiceBuilder, ServiceExt as _};

/// Handlers that wait for a gate, so a test decides when they end.
#[rpc::service]
pub trait Work {
    /// Counts itself in, waits for a permit of the gate, counts itself out; returns how many
    /// handlers were inside when it entered (itself included).
    async fn enter(&self) -> u32;
    /// Answers at once.
    async fn quick(&self) -> u32;
    /// Sums a stream.
    async fn sum(&self, numbers: rpc::Stream<u64>) -> u64;
}

/// Another service, for limits that are per service.
#[rpc::service]
pub trait Other {
    /// Answers at once.
    async fn ping(&self) -> String;
}

#[derive(Clone)]
struct Gauge {
    inside: Arc<AtomicUsize>,
    max_inside: Arc<AtomicUsize>,
    entered: Arc<AtomicUsize>,
    gate: Arc<Semaphore>,
    /// Virtual time of each `quick` call, for the rate limit.
    quick_at: Arc<Mutex<Vec<tokio::time::Instant>>>,
}

impl Gauge {
    fn new() -> Gauge {
        Gauge {
            inside: Arc::default(),
            max_inside: Arc::default(),
            entered: Arc::default(),
            gate: Arc::new(Semaphore::new(0)),
            quick_at: Arc::default(),
        }
    }
}

impl Work for Gauge {
    async fn enter(&self) -> u32 {
        let now = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_inside.fetch_max(now, Ordering::SeqCst);
        self.entered.fetch_add(1, Ordering::SeqCst);
        let permit = self.gate.acquire().await.expect("gate open");
        permit.forget();
        self.inside.fetch_sub(1, Ordering::SeqCst);
        now as u32
    }

    async fn quick(&self) -> u32 {
        let mut at = self.quick_at.lock().expect("not poisoned");
        at.push(tokio::time::Instant::now());
        at.len() as u32
    }

    async fn sum(&self, mut numbers: rpc::Stream<u64>) -> u64 {
        let mut total = 0;
        while let Some(n) = numbers.next().await {
            total += n.expect("the stream arrives whole");
        }
        total
    }
}

struct OtherImpl;

impl Other for OtherImpl {
    async fn ping(&self) -> String {
        "pong".into()
    }
}

#[tokio::test]
async fn a_concurrency_limit_holds_on_the_server() {
    let gauge = Gauge::new();
    let server = start(rpc::Server::builder().serve_layered(
        gauge.clone().into_service(),
        tower::limit::ConcurrencyLimitLayer::new(2),
    ))
    .await;
    let client = WorkClient::connect(server.addr).await.expect("connect");

    let calls: Vec<_> = (0..6).map(|_| tokio::spawn(client.enter())).collect();
    // All six reached the server and were polled (calls in flight count those still pending
    // after their first poll): only two got past the limit.
    eventually("six calls in flight", || server.handle.in_flight() == 6).await;
    assert_eq!(gauge.entered.load(Ordering::SeqCst), 2);

    gauge.gate.add_permits(6);
    for call in calls {
        within("a call", call).await.expect("joined").expect("call");
    }
    assert_eq!(gauge.entered.load(Ordering::SeqCst), 6);
    assert_eq!(gauge.max_inside.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_rate_limit_with_load_shed_refuses_the_excess() {
    let gauge = Gauge::new();
    // Two calls a minute; the test never waits that long, so the third and later are shed.
    let limit = ServiceBuilder::new()
        .load_shed()
        .rate_limit(2, Duration::from_secs(60));
    let server =
        start(rpc::Server::builder().serve_layered(gauge.clone().into_service(), limit)).await;
    let client = WorkClient::connect(server.addr).await.expect("connect");

    assert_eq!(client.quick().await.expect("first"), 1);
    assert_eq!(client.quick().await.expect("second"), 2);
    for _ in 0..3 {
        let refused = client.quick().await.expect_err("over the rate");
        assert!(matches!(refused, Error::Overloaded { .. }), "{refused:?}");
    }
    // The shed calls never reached the handler.
    assert_eq!(gauge.quick_at.lock().expect("not poisoned").len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_rate_limit_delays_the_excess() {
    let gauge = Gauge::new();
    let period = Duration::from_secs(1);
    let server = start(
        rpc::Server::builder()
            .keepalive_interval(None)
            .idle_timeout(None)
            .serve_layered(
                gauge.clone().into_service(),
                tower::limit::RateLimitLayer::new(2, period),
            ),
    )
    .await;
    let client = WorkClient::new(
        rpc::Client::builder()
            .keepalive_interval(None)
            .default_timeout(None)
            .connect(server.addr)
            .await
            .expect("connect"),
    );
    let start = tokio::time::Instant::now();
    let calls: Vec<_> = (0..5).map(|_| client.quick()).collect();
    for outcome in futures::future::join_all(calls).await {
        outcome.expect("delayed, not refused");
    }
    // Two calls per period (virtual time: the clock is paused and jumps to each timer).
    let at = gauge.quick_at.lock().expect("not poisoned").clone();
    let since: Vec<Duration> = at.iter().map(|t| *t - start).collect();
    assert_eq!(since.len(), 5);
    assert!(since[..2].iter().all(|d| *d < period), "{since:?}");
    assert!(since[2..4].iter().all(|d| *d >= period), "{since:?}");
    assert!(since[4] >= 2 * period, "{since:?}");
}

#[tokio::test]
async fn load_shed_answers_overloaded_and_the_held_call_still_succeeds() {
    let gauge = Gauge::new();
    let server = start(rpc::Server::builder().serve_layered(
        gauge.clone().into_service(),
        ServiceBuilder::new().load_shed().concurrency_limit(1),
    ))
    .await;
    let client = WorkClient::connect(server.addr).await.expect("connect");

    let held = tokio::spawn(client.enter());
    eventually("the first call inside", || {
        gauge.entered.load(Ordering::SeqCst) == 1
    })
    .await;
    let shed = client.quick().await.expect_err("at capacity");
    assert!(
        matches!(&shed, Error::Overloaded { reason } if reason.contains("load shed")),
        "{shed:?}"
    );
    // Overloaded, and the handler never ran: not counted, the call is retryable later.
    assert!(gauge.quick_at.lock().expect("not poisoned").is_empty());

    gauge.gate.add_permits(1);
    assert_eq!(
        within("the held call", held)
            .await
            .expect("joined")
            .expect("ok"),
        1
    );
    // Capacity is back.
    assert_eq!(client.quick().await.expect("room again"), 1);
}

#[tokio::test]
async fn a_server_wide_timeout_answers_deadline_exceeded() {
    let gauge = Gauge::new();
    let server = start(
        rpc::Server::builder()
            .layer(tower::timeout::TimeoutLayer::new(Duration::from_millis(50)))
            .serve(gauge.clone().into_service())
            .serve(OtherImpl.into_service()),
    )
    .await;
    let client = rpc::Client::connect(server.addr).await.expect("connect");
    let work = WorkClient::new(client.clone());

    // The gate never opens: the layer's timeout ends the call.
    let late = within("a call past the layer's timeout", work.enter())
        .await
        .expect_err("timed out");
    assert!(matches!(late, Error::DeadlineExceeded), "{late:?}");
    assert_eq!(gauge.entered.load(Ordering::SeqCst), 1);
    // Calls within the time, to both services, succeed.
    assert_eq!(work.quick().await.expect("quick"), 1);
    assert_eq!(OtherClient::new(client).ping().await.expect("ping"), "pong");
}

#[tokio::test]
async fn a_server_wide_limit_is_one_stack_per_service_shared_by_its_methods() {
    let gauge = Gauge::new();
    let server = start(
        rpc::Server::builder()
            .serve(gauge.clone().into_service())
            .layer(ServiceBuilder::new().load_shed().concurrency_limit(1))
            .serve(OtherImpl.into_service()),
    )
    .await;
    let client = rpc::Client::connect(server.addr).await.expect("connect");
    let work = WorkClient::new(client.clone());

    let held = tokio::spawn(work.enter());
    eventually("the first call inside", || {
        gauge.entered.load(Ordering::SeqCst) == 1
    })
    .await;
    // Another method of the same service shares its limit...
    let shed = work.quick().await.expect_err("the service is at its limit");
    assert!(matches!(shed, Error::Overloaded { .. }), "{shed:?}");
    // ...another service has a limit of its own (added after the layer, it is layered too).
    assert_eq!(
        OtherClient::new(client.clone()).ping().await.expect("ping"),
        "pong"
    );
    // The built-in health service answers (it is never layered).
    let health = rpc::health::HealthClient::new(client);
    assert_eq!(
        health.check("Work").await.expect("health"),
        rpc::health::HealthStatus::Serving
    );

    gauge.gate.add_permits(1);
    within("the held call", held)
        .await
        .expect("joined")
        .expect("ok");
}

#[tokio::test]
async fn a_request_stream_waiting_behind_a_limit_arrives_whole() {
    let gauge = Gauge::new();
    let server = start(rpc::Server::builder().serve_layered(
        gauge.clone().into_service(),
        tower::limit::ConcurrencyLimitLayer::new(1),
    ))
    .await;
    let client = WorkClient::connect(server.addr).await.expect("connect");

    let held = tokio::spawn(client.enter());
    eventually("the first call inside", || {
        gauge.entered.load(Ordering::SeqCst) == 1
    })
    .await;
    // The upload's items are sent while its call waits at the limit.
    let (pulled_tx, pulled_rx) = tokio::sync::oneshot::channel();
    let items = futures::stream::iter(1..=100u64).chain(futures::stream::once(async move {
        let _ = pulled_tx.send(());
        0
    }));
    let upload = tokio::spawn(client.sum(rpc::Stream::new(items)));
    within("the stream pulled", pulled_rx).await.expect("sent");
    eventually("two calls in flight", || server.handle.in_flight() == 2).await;

    gauge.gate.add_permits(1);
    within("the held call", held)
        .await
        .expect("joined")
        .expect("ok");
    let total = within("the upload", upload)
        .await
        .expect("joined")
        .expect("sum");
    assert_eq!(total, 5050);
}

#[tokio::test]
async fn the_client_under_a_service_builder_with_timeout_and_concurrency_limit() {
    const ENTER: Method = Method::new("Work", "enter");
    let gauge = Gauge::new();
    let server = start(rpc::Server::builder().serve(gauge.clone().into_service())).await;
    let client = rpc::Client::connect(server.addr).await.expect("connect");

    let stack = ServiceBuilder::new()
        .map_err(Error::from_tower)
        .concurrency_limit(2)
        .service(client.tower::<(), u32>());
    let calls: Vec<_> = (0..5)
        .map(|_| tokio::spawn(stack.clone().oneshot(Call::<(), u32>::new(ENTER, ()))))
        .collect();
    eventually("two calls inside", || {
        gauge.entered.load(Ordering::SeqCst) == 2
    })
    .await;
    // The limit holds on the client: a sixth is not ready while two are out.
    let mut sixth = stack.clone();
    assert!(
        sixth.ready().now_or_never().is_none(),
        "ready with two calls out"
    );
    gauge.gate.add_permits(5);
    for call in calls {
        within("a call", call).await.expect("joined").expect("ok");
    }
    assert_eq!(gauge.entered.load(Ordering::SeqCst), 5);
    assert_eq!(gauge.max_inside.load(Ordering::SeqCst), 2);

    // A timeout layer: the gate stays shut, the call fails typed.
    let mut timed = ServiceBuilder::new()
        .map_err(Error::from_tower)
        .timeout(Duration::from_millis(50))
        .service(client.tower::<(), u32>());
    let late = within(
        "a call past the client's timeout layer",
        timed
            .ready()
            .await
            .expect("ready")
            .call(Call::<(), u32>::new(ENTER, ())),
    )
    .await
    .expect_err("timed out");
    assert!(matches!(late, Error::DeadlineExceeded), "{late:?}");
}

#[tokio::test]
async fn the_client_service_is_not_ready_beyond_max_in_flight() {
    const ENTER: Method = Method::new("Work", "enter");
    const QUICK: Method = Method::new("Work", "quick");
    let gauge = Gauge::new();
    let server = start(rpc::Server::builder().serve(gauge.clone().into_service())).await;
    let client = rpc::Client::builder()
        .max_in_flight(1)
        .connect(server.addr)
        .await
        .expect("connect");

    // One call out fills the client: the next waits for readiness, and a load shed in
    // front of it refuses at once.
    let held = tokio::spawn(
        client
            .tower::<(), u32>()
            .oneshot(Call::<(), u32>::new(ENTER, ())),
    );
    eventually("the first call inside", || {
        gauge.entered.load(Ordering::SeqCst) == 1
    })
    .await;
    let mut shedding = ServiceBuilder::new()
        .map_err(Error::from_tower)
        .load_shed()
        .service(client.tower::<(), u32>());
    let shed = shedding
        .ready()
        .await
        .expect("load shed is always ready")
        .call(Call::<(), u32>::new(QUICK, ()))
        .await
        .expect_err("no room");
    assert!(matches!(shed, Error::Overloaded { .. }), "{shed:?}");
    assert!(gauge.quick_at.lock().expect("not poisoned").is_empty());

    gauge.gate.add_permits(1);
    within("the held call", held)
        .await
        .expect("joined")
        .expect("ok");
    // Room again.
    let answer = within(
        "a call with room",
        shedding
            .ready()
            .await
            .expect("ready")
            .call(Call::<(), u32>::new(QUICK, ())),
    )
    .await
    .expect("room again");
    assert_eq!(answer, 1);
}
