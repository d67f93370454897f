//! Unary calls end to end over real TCP on 127.0.0.1.

mod support;

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use support::{start, within};
use tokio::sync::Notify;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Point {
    x: f64,
    y: f64,
    label: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Shape {
    Empty,
    Circle { center: Point, radius: f64 },
    Polygon(Vec<Point>),
}

/// Echoes every kind of value back, to prove each survives the trip.
#[rpc::service]
trait Kitchen {
    async fn unit(&self);
    async fn text(&self, s: String) -> String;
    async fn numbers(
        &self,
        a: u8,
        b: i16,
        c: u32,
        d: i64,
        e: u128,
        f: f32,
    ) -> (u8, i16, u32, i64, u128, f32);
    async fn shape(&self, s: Shape) -> Shape;
    async fn list(&self, v: Vec<Point>) -> Vec<Point>;
    async fn map(&self, m: HashMap<String, Vec<u32>>) -> HashMap<String, Vec<u32>>;
    async fn maybe(&self, o: Option<Option<bool>>) -> Option<Option<bool>>;
    async fn bytes(&self, data: Vec<u8>) -> Vec<u8>;
    async fn no_args(&self) -> u64;
}

struct KitchenImpl;

impl Kitchen for KitchenImpl {
    async fn unit(&self) {}
    async fn text(&self, s: String) -> String {
        s
    }
    async fn numbers(
        &self,
        a: u8,
        b: i16,
        c: u32,
        d: i64,
        e: u128,
        f: f32,
    ) -> (u8, i16, u32, i64, u128, f32) {
        (a, b, c, d, e, f)
    }
    async fn shape(&self, s: Shape) -> Shape {
        s
    }
    async fn list(&self, v: Vec<Point>) -> Vec<Point> {
        v
    }
    async fn map(&self, m: HashMap<String, Vec<u32>>) -> HashMap<String, Vec<u32>> {
        m
    }
    async fn maybe(&self, o: Option<Option<bool>>) -> Option<Option<bool>> {
        o
    }
    async fn bytes(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }
    async fn no_args(&self) -> u64 {
        42
    }
}

#[tokio::test]
async fn values_of_every_shape_round_trip() {
    let server = start(rpc::Server::builder().serve(KitchenImpl.into_service())).await;
    let k = KitchenClient::connect(server.addr).await.expect("connect");

    k.unit().await.expect("unit");
    assert_eq!(
        k.text("héllo wörld".into()).await.expect("text"),
        "héllo wörld"
    );
    assert_eq!(k.text(String::new()).await.expect("empty text"), "");
    let nums = (255u8, -32768i16, u32::MAX, i64::MIN, u128::MAX, 1.5f32);
    assert_eq!(
        k.numbers(nums.0, nums.1, nums.2, nums.3, nums.4, nums.5)
            .await
            .expect("numbers"),
        nums
    );
    let p = Point {
        x: 1.0,
        y: -2.5,
        label: Some("p".into()),
    };
    for s in [
        Shape::Empty,
        Shape::Circle {
            center: p.clone(),
            radius: 3.0,
        },
        Shape::Polygon(vec![
            p.clone(),
            Point {
                x: 0.0,
                y: 0.0,
                label: None,
            },
        ]),
    ] {
        assert_eq!(k.shape(s.clone()).await.expect("shape"), s);
    }
    let many: Vec<Point> = (0..1000)
        .map(|i| Point {
            x: i as f64,
            y: 0.0,
            label: None,
        })
        .collect();
    assert_eq!(k.list(many.clone()).await.expect("list"), many);
    let m = HashMap::from([("a".to_string(), vec![1, 2, 3]), ("b".to_string(), vec![])]);
    assert_eq!(k.map(m.clone()).await.expect("map"), m);
    for o in [None, Some(None), Some(Some(true)), Some(Some(false))] {
        assert_eq!(k.maybe(o).await.expect("option"), o);
    }
    assert_eq!(k.no_args().await.expect("no args"), 42);
}

#[tokio::test]
async fn four_mebibyte_payload_round_trips() {
    let server = start(rpc::Server::builder().serve(KitchenImpl.into_service())).await;
    let k = KitchenClient::connect(server.addr).await.expect("connect");
    let payload: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i * 31 % 251) as u8).collect();
    let back = within("4 MiB echo", k.bytes(payload.clone()))
        .await
        .expect("bytes");
    assert_eq!(back.len(), payload.len());
    assert!(back == payload, "payload changed in transit");
}

#[tokio::test]
async fn a_thousand_concurrent_calls_share_one_connection() {
    let server = start(rpc::Server::builder().serve(KitchenImpl.into_service())).await;
    let k = KitchenClient::connect(server.addr).await.expect("connect");
    let calls = (0..1000u32).map(|i| {
        let k = k.clone();
        tokio::spawn(async move { (i, k.text(format!("call {i}")).await) })
    });
    let results = within("1000 calls", futures::future::join_all(calls)).await;
    assert_eq!(results.len(), 1000);
    for joined in results {
        let (i, reply) = joined.expect("task");
        assert_eq!(reply.expect("reply"), format!("call {i}"));
    }
    assert_eq!(server.handle.connections(), 1, "one connection for all");
}

/// A service whose `slow` call waits for the test to release it.
#[rpc::service]
trait Gate {
    async fn slow(&self) -> String;
    async fn fast(&self, n: u32) -> u32;
}

struct GateImpl {
    open: Arc<Notify>,
}

impl Gate for GateImpl {
    async fn slow(&self) -> String {
        self.open.notified().await;
        "slow".to_string()
    }
    async fn fast(&self, n: u32) -> u32 {
        n * 2
    }
}

#[tokio::test]
async fn a_slow_call_does_not_hold_up_fast_ones() {
    let open = Arc::new(Notify::new());
    let server =
        start(rpc::Server::builder().serve(GateImpl { open: open.clone() }.into_service())).await;
    let gate = GateClient::connect(server.addr).await.expect("connect");

    let slow = tokio::spawn({
        let gate = gate.clone();
        async move { gate.slow().await }
    });
    // Every fast call completes while the slow one is still blocked on the gate.
    for n in 0..50 {
        assert_eq!(
            within("fast call", gate.fast(n)).await.expect("fast"),
            n * 2
        );
    }
    assert!(
        !slow.is_finished(),
        "the slow call finished before it was released"
    );
    open.notify_one();
    assert_eq!(
        within("slow call", slow)
            .await
            .expect("join")
            .expect("slow"),
        "slow"
    );
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum MathError {
    DivisionByZero,
}

#[rpc::service]
trait Calculator {
    async fn add(&self, a: i64, b: i64) -> i64;
    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError>;
}

struct Calc;

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError> {
        if b == 0 {
            Err(MathError::DivisionByZero)
        } else {
            Ok(a / b)
        }
    }
}

#[tokio::test]
async fn two_services_share_one_server_and_one_connection() {
    let server = start(
        rpc::Server::builder()
            .serve(Calc.into_service())
            .serve(KitchenImpl.into_service()),
    )
    .await;
    let connection = rpc::Client::connect(server.addr).await.expect("connect");
    let calc = CalculatorClient::new(connection.clone());
    let kitchen = KitchenClient::new(connection);
    let (sum, text) = tokio::join!(calc.add(2, 3), kitchen.text("both".into()));
    assert_eq!(sum.expect("add"), 5);
    assert_eq!(text.expect("text"), "both");
}

#[tokio::test]
async fn application_errors_stay_apart_from_framework_errors() {
    let server = start(rpc::Server::builder().serve(Calc.into_service())).await;
    let calc = CalculatorClient::connect(server.addr)
        .await
        .expect("connect");

    // The application's own error arrives intact, inside a successful call.
    let outcome: Result<Result<i64, MathError>, rpc::Error> = calc.div(1, 0).await;
    assert_eq!(
        outcome.expect("the call itself succeeded"),
        Err(MathError::DivisionByZero)
    );
    assert_eq!(calc.div(7, 2).await.expect("call"), Ok(3));

    // A framework failure is an rpc::Error, never a MathError.
    let kitchen = KitchenClient::new(calc.client().clone());
    let err = kitchen.no_args().await.expect_err("not served here");
    assert!(
        matches!(err, rpc::Error::UnknownMethod { ref method } if method == "Kitchen.no_args"),
        "{err}"
    );
}

/// The same service, before and after a method was added.
mod v1 {
    #[rpc::service]
    pub(crate) trait Store {
        async fn get(&self, key: String) -> Option<String>;
    }
}

mod v2 {
    #[rpc::service]
    pub(crate) trait Store {
        async fn put(&self, key: String, value: String);
        async fn get(&self, key: String) -> Option<String>;
    }
}

struct OldStore;

impl v1::Store for OldStore {
    async fn get(&self, key: String) -> Option<String> {
        (key == "k").then(|| "v".to_string())
    }
}

#[tokio::test]
async fn a_newer_client_gets_unknown_method_from_an_older_server_and_keeps_its_connection() {
    use v1::Store as _;
    let server = start(rpc::Server::builder().serve(OldStore.into_service())).await;
    let store = v2::StoreClient::connect(server.addr)
        .await
        .expect("connect");

    // `get` moved to second place in the newer trait: ids follow names, not positions.
    assert_eq!(
        store.get("k".into()).await.expect("get"),
        Some("v".to_string())
    );
    let err = store
        .put("k".into(), "w".into())
        .await
        .expect_err("older server");
    assert!(
        matches!(err, rpc::Error::UnknownMethod { ref method } if method == "Store.put"),
        "{err}"
    );
    // The connection is still up and serving.
    assert!(store.client().is_connected());
    assert_eq!(
        store.get("x".into()).await.expect("get after unknown"),
        None
    );
}

/// A handler that never finishes and yields at every poll, beside one that answers at once.
#[rpc::service]
trait Yielder {
    async fn spin(&self) -> u64;
    async fn quick(&self, n: u64) -> u64;
}

struct YielderImpl;

impl Yielder for YielderImpl {
    async fn spin(&self) -> u64 {
        loop {
            // Wakes itself at once, as a hand-written yield does (tokio's `yield_now`
            // defers its wake until the task has been polled).
            let mut yielded = false;
            std::future::poll_fn(|cx| {
                if std::mem::replace(&mut yielded, true) {
                    std::task::Poll::Ready(())
                } else {
                    cx.waker().wake_by_ref();
                    std::task::Poll::Pending
                }
            })
            .await;
        }
    }
    async fn quick(&self, n: u64) -> u64 {
        n + 1
    }
}

/// The connection's task polls the calls it wakes itself again in the same turn, but a
/// handler that keeps waking itself gets the thread back to the runtime, as a yield does:
/// on a single-threaded runtime shared with the client, the client's calls on the same
/// connection still go through. (Were the turn to poll the spinning call for as long as it
/// wakes, the runtime would never run the client again, and the test would time out.)
#[test]
fn a_handler_that_keeps_yielding_leaves_the_thread_to_other_tasks() {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let answers = runtime.block_on(async {
            let server = start(rpc::Server::builder().serve(YielderImpl.into_service())).await;
            let client = YielderClient::connect(server.addr).await.expect("connect");
            let spinning = tokio::spawn({
                let client = client.clone();
                async move { client.spin().await }
            });
            let mut answers = Vec::new();
            for n in 0..20 {
                answers.push(client.quick(n).await.expect("quick"));
            }
            spinning.abort();
            answers
        });
        let _ = done.send(answers);
    });
    let answers = finished
        .recv_timeout(support::PATIENCE)
        .expect("the client's calls did not get through beside a yielding handler");
    assert_eq!(answers, (1..=20).collect::<Vec<u64>>());
}
