//! A `Service` written by hand, without `#[rpc::service]`, served over real TCP on 127.0.0.1
//! and called both with `rpc::Client::call` and with the stub generated for a trait of the
//! same names: the wire cannot tell it from a generated one.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::StreamExt as _;
use support::{start, within};

const ADD: rpc::Method = rpc::Method::new("Calculator", "add");
const DIV: rpc::Method = rpc::Method::new("Calculator", "div");
const COUNT: rpc::Method = rpc::Method::new("Calculator", "count");
/// Listed, so the server routes it here, but not answered: `unknown_method`.
const SQRT: rpc::Method = rpc::Method::new("Calculator", "sqrt");
/// Not listed at all: the server answers it without asking the service.
const MUL: rpc::Method = rpc::Method::new("Calculator", "mul");

/// The hand-written service: a `match` on the method, a handler per arm.
struct HandCalculator {
    /// How many calls reached a handler: state shared with the handlers through an `Arc`.
    handled: Arc<AtomicU64>,
}

impl rpc::Service for HandCalculator {
    fn name(&self) -> &'static str {
        "Calculator"
    }

    fn methods(&self) -> &'static [rpc::Method] {
        &[ADD, DIV, COUNT, SQRT]
    }

    fn call(&self, request: rpc::Request) -> rpc::Dispatch {
        let handled = self.handled.clone();
        match request.method() {
            ADD => request.dispatch(move |(a, b): (i64, i64)| async move {
                handled.fetch_add(1, Ordering::SeqCst);
                a + b
            }),
            DIV => request.dispatch(move |(a, b): (i64, i64)| async move {
                handled.fetch_add(1, Ordering::SeqCst);
                a.checked_div(b)
                    .ok_or_else(|| format!("{a} / {b}: division by zero"))
            }),
            COUNT => request.dispatch_streaming_response(move |(n,): (u64,)| async move {
                handled.fetch_add(1, Ordering::SeqCst);
                rpc::Stream::iter(0..n)
            }),
            _ => request.unknown_method(),
        }
    }
}

/// The trait a client of the hand-written service would write: same service name, method
/// names and types. It is never implemented; only its client stub is used.
#[rpc::service]
trait Calculator {
    async fn add(&self, a: i64, b: i64) -> i64;
    async fn div(&self, a: i64, b: i64) -> Result<i64, String>;
    async fn count(&self, n: u64) -> rpc::Stream<u64>;
    async fn sqrt(&self, x: f64) -> f64;
    async fn mul(&self, a: i64, b: i64) -> i64;
}

async fn serve() -> (support::Running, Arc<AtomicU64>) {
    let handled = Arc::new(AtomicU64::new(0));
    let service = HandCalculator {
        handled: handled.clone(),
    };
    let server = start(rpc::Server::builder().serve(service)).await;
    (server, handled)
}

fn assert_unknown(result: Result<impl std::fmt::Debug, rpc::Error>, name: &str) {
    match result {
        Err(rpc::Error::UnknownMethod { method }) => {
            assert!(method.contains(name), "{method:?} should name {name}")
        }
        other => panic!("expected UnknownMethod for {name}, got {other:?}"),
    }
}

#[tokio::test]
async fn the_generated_stub_calls_a_hand_written_service() {
    let (server, handled) = serve().await;
    let calc = CalculatorClient::connect(server.addr)
        .await
        .expect("connect");

    assert_eq!(within("add", calc.add(2, 3)).await.expect("add"), 5);
    assert_eq!(within("div", calc.div(7, 2)).await.expect("div"), Ok(3));
    assert_eq!(
        within("div by zero", calc.div(1, 0)).await.expect("div"),
        Err("1 / 0: division by zero".to_owned())
    );
    let counted: Vec<u64> = within("count", async {
        let stream = calc.count(5).await.expect("count");
        stream.map(|item| item.expect("item")).collect().await
    })
    .await;
    assert_eq!(counted, [0, 1, 2, 3, 4]);
    assert_eq!(handled.load(Ordering::SeqCst), 4);

    // Listed but not answered: the service's own `unknown_method`, naming the method.
    assert_unknown(within("sqrt", calc.sqrt(2.0)).await, "Calculator.sqrt");
    // Not listed: refused by the server before the service sees it.
    assert!(matches!(
        within("mul", calc.mul(2, 3)).await,
        Err(rpc::Error::UnknownMethod { .. })
    ));
    assert_eq!(handled.load(Ordering::SeqCst), 4, "no handler ran for them");

    // Each failure cost one call, not the connection.
    assert_eq!(within("add again", calc.add(1, 1)).await.expect("add"), 2);
}

#[tokio::test]
async fn client_call_reaches_a_hand_written_service() {
    let (server, handled) = serve().await;
    let client = rpc::Client::connect(server.addr).await.expect("connect");

    let sum: i64 = within("add", client.call(ADD, (40i64, 2i64)))
        .await
        .expect("add");
    assert_eq!(sum, 42);
    let quotient: Result<i64, String> = within("div", client.call(DIV, (9i64, 3i64)))
        .await
        .expect("div");
    assert_eq!(quotient, Ok(3));
    assert_eq!(handled.load(Ordering::SeqCst), 2);

    // Arguments that do not decode as the handler's tuple fail the call with BadRequest,
    // naming the method; the handler never runs.
    let wrong: Result<i64, rpc::Error> =
        within("add with a string", client.call(ADD, ("two".to_owned(),))).await;
    match wrong {
        Err(rpc::Error::BadRequest { reason }) => {
            assert!(reason.contains("Calculator.add"), "{reason}")
        }
        other => panic!("expected BadRequest, got {other:?}"),
    }
    assert_eq!(handled.load(Ordering::SeqCst), 2);

    assert_unknown(
        within("sqrt", client.call::<_, f64>(SQRT, (2.0f64,))).await,
        "Calculator.sqrt",
    );
    assert!(matches!(
        within("mul", client.call::<_, i64>(MUL, (2i64, 3i64))).await,
        Err(rpc::Error::UnknownMethod { .. })
    ));
}
