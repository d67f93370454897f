//! Streams inside calls over real TCP: server push, client upload, both ways, flow control,
//! fairness with unary calls, ending and cancellation from either side.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use support::{start, within};
use tokio::sync::Semaphore;

#[rpc::service]
trait Feed {
    /// Counts from 0 to `n - 1`.
    async fn count(&self, n: u64) -> rpc::Stream<u64>;
    /// Sums what the client sends.
    async fn sum(&self, numbers: rpc::Stream<u64>) -> u64;
    /// Echoes every line back, prefixed.
    async fn echo(&self, prefix: String, lines: rpc::Stream<String>) -> rpc::Stream<String>;
    /// Produces items forever, counting how many it made; signals when dropped.
    async fn endless(&self, size: usize) -> rpc::Stream<Vec<u8>>;
    /// Two items, then a failure.
    async fn fails(&self) -> rpc::Stream<u64>;
    /// Two items, then its producer panics.
    async fn panics(&self) -> rpc::Stream<u64>;
    /// One small item, then large ones: each large one overshoots the credit left.
    async fn mixed(&self) -> rpc::Stream<Vec<u8>>;
    /// A unary call, to share the connection with streams.
    async fn ping(&self, n: u32) -> u32;
}

#[derive(Clone)]
struct FeedImpl {
    produced: Arc<AtomicUsize>,
    dropped: Arc<Semaphore>,
}

/// Signals when the producer of `endless` is dropped.
struct Dropped(Arc<Semaphore>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.add_permits(1);
    }
}

impl Feed for FeedImpl {
    async fn count(&self, n: u64) -> rpc::Stream<u64> {
        rpc::Stream::iter(0..n)
    }
    async fn sum(&self, mut numbers: rpc::Stream<u64>) -> u64 {
        let mut total = 0;
        while let Some(Ok(n)) = numbers.next().await {
            total += n;
        }
        total
    }
    async fn echo(&self, prefix: String, lines: rpc::Stream<String>) -> rpc::Stream<String> {
        rpc::Stream::from_results(lines.map(move |line| line.map(|l| format!("{prefix}{l}"))))
    }
    async fn endless(&self, size: usize) -> rpc::Stream<Vec<u8>> {
        let produced = self.produced.clone();
        let guard = Dropped(self.dropped.clone());
        rpc::Stream::new(futures::stream::repeat_with(move || {
            let _keep = &guard;
            produced.fetch_add(1, Ordering::SeqCst);
            vec![7u8; size]
        }))
    }
    async fn fails(&self) -> rpc::Stream<u64> {
        rpc::Stream::from_results(futures::stream::iter([
            Ok(1),
            Ok(2),
            Err(rpc::Error::Overloaded {
                reason: "producer gave up".into(),
            }),
        ]))
    }
    async fn mixed(&self) -> rpc::Stream<Vec<u8>> {
        rpc::Stream::iter(
            std::iter::once(vec![0u8; 1]).chain((0..64).map(|_| vec![1u8; 64 * 1024])),
        )
    }
    async fn ping(&self, n: u32) -> u32 {
        n
    }
    async fn panics(&self) -> rpc::Stream<u64> {
        let broken = futures::stream::poll_fn(|_| -> std::task::Poll<Option<u64>> {
            panic!("producer broke")
        });
        rpc::Stream::new(futures::stream::iter([1, 2]).chain(broken))
    }
}

async fn feed() -> (support::Running, FeedClient, FeedImpl) {
    let svc = FeedImpl {
        produced: Arc::default(),
        dropped: Arc::new(Semaphore::new(0)),
    };
    // A producer's panic message is checked on the client.
    let server = start(
        rpc::Server::builder()
            .expose_panic_messages(true)
            .serve(svc.clone().into_service()),
    )
    .await;
    let client = FeedClient::connect(server.addr).await.expect("connect");
    (server, client, svc)
}

/// Reads past every good item: what ends the stream (an error, or `None`).
async fn past_items<T>(stream: &mut rpc::Stream<T>) -> Option<Result<T, rpc::Error>> {
    loop {
        match stream.next().await {
            Some(Ok(_)) => continue,
            other => return other,
        }
    }
}

#[tokio::test]
async fn a_server_stream_arrives_whole_and_in_order() {
    let (_server, client, _) = feed().await;
    let stream = client.count(10_000).await.expect("call");
    let got: Vec<u64> = within("stream", stream.map(|i| i.expect("item")).collect()).await;
    assert_eq!(got, (0..10_000).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_client_stream_is_consumed_by_the_handler() {
    let (_server, client, _) = feed().await;
    let total = within("upload", client.sum(rpc::Stream::iter(1..=10_000u64)))
        .await
        .expect("sum");
    assert_eq!(total, 10_000 * 10_001 / 2);
    // Many uploads later, the client holds no stream state for finished calls.
    for n in 0..100u64 {
        let sum = client.sum(rpc::Stream::iter(0..n)).await.expect("sum");
        assert_eq!(sum, n * n.saturating_sub(1) / 2);
    }
    support::eventually("upload tasks cleaned up", || {
        client.client().open_streams() == 0
    })
    .await;
    assert_eq!(client.client().in_flight(), 0);
}

#[tokio::test]
async fn streams_flow_both_ways() {
    let (_server, client, _) = feed().await;
    let lines = rpc::Stream::iter((0..100).map(|i| format!("line {i}")));
    let replies = client.echo("> ".into(), lines).await.expect("call");
    let got: Vec<String> = within("echo", replies.map(|l| l.expect("line")).collect()).await;
    assert_eq!(
        got,
        (0..100).map(|i| format!("> line {i}")).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_slow_consumer_holds_the_producer_to_the_window() {
    let (_server, client, svc) = feed().await;
    let item = 1024;
    let mut stream = client.endless(item).no_deadline().await.expect("call");
    // Read one item per 10 ms; the producer could make 100,000 meanwhile.
    let mut pace = tokio::time::interval(Duration::from_millis(10));
    let window_items = rpc_core_window() / item + 2;
    for consumed in 1..=30usize {
        pace.tick().await;
        let bytes = within("item", stream.next())
            .await
            .expect("open")
            .expect("item");
        assert_eq!(bytes.len(), item);
        let produced = svc.produced.load(Ordering::SeqCst);
        assert!(
            produced <= consumed + window_items,
            "producer ran {produced} items ahead of a consumer at {consumed} (window {window_items} items)"
        );
    }
}

fn rpc_core_window() -> usize {
    rpc::ServerConfig::default().stream_window
}

#[tokio::test]
async fn dropping_a_stream_stops_the_producer() {
    let (_server, client, svc) = feed().await;
    let mut stream = client.endless(16).no_deadline().await.expect("call");
    within("first item", stream.next())
        .await
        .expect("open")
        .expect("item");
    drop(stream);
    assert_eq!(
        client.client().open_streams(),
        0,
        "the dropped stream's buffer is gone"
    );
    within("producer dropped", svc.dropped.acquire())
        .await
        .expect("open")
        .forget();
}

#[tokio::test]
async fn a_failing_producer_ends_the_stream_with_a_typed_error() {
    let (_server, client, _) = feed().await;
    let mut stream = client.fails().await.expect("call");
    assert_eq!(stream.next().await.expect("1").expect("ok"), 1);
    assert_eq!(stream.next().await.expect("2").expect("ok"), 2);
    let err = stream.next().await.expect("end").expect_err("failure");
    assert!(
        matches!(err, rpc::Error::Overloaded { ref reason } if reason == "producer gave up"),
        "{err}"
    );
    assert!(stream.next().await.is_none());
}

#[tokio::test]
async fn the_deadline_covers_the_whole_stream() {
    let (_server, client, svc) = feed().await;
    let mut stream = client
        .endless(16)
        .timeout(Duration::from_millis(200))
        .await
        .expect("call");
    let outcome = within("deadline", past_items(&mut stream)).await;
    assert!(
        matches!(outcome, Some(Err(rpc::Error::DeadlineExceeded))),
        "{outcome:?}"
    );
    within("producer stopped at the deadline", svc.dropped.acquire())
        .await
        .expect("open")
        .forget();
}

#[tokio::test]
async fn a_dying_connection_fails_every_open_stream() {
    let (server, client, _) = feed().await;
    let mut a = client.endless(16).no_deadline().await.expect("a");
    let mut b = client.endless(16).no_deadline().await.expect("b");
    within("a starts", a.next())
        .await
        .expect("open")
        .expect("item");
    within("b starts", b.next())
        .await
        .expect("open")
        .expect("item");
    server.kill();
    for stream in [&mut a, &mut b] {
        let end = within("stream fails", past_items(stream)).await;
        assert!(
            matches!(end, Some(Err(rpc::Error::ConnectionClosed { .. }))),
            "{end:?}"
        );
    }
}

#[tokio::test]
async fn unary_calls_keep_completing_during_a_large_transfer() {
    let (_server, client, _) = feed().await;
    let mut big = client.endless(64 * 1024).no_deadline().await.expect("call");
    let reader = tokio::spawn(async move {
        let mut bytes = 0usize;
        // 64 MiB through the same connection.
        while bytes < 64 << 20 {
            bytes += big.next().await.expect("open").expect("item").len();
        }
        bytes
    });
    let mut slowest = Duration::ZERO;
    for n in 0..200 {
        let started = tokio::time::Instant::now();
        assert_eq!(within("ping", client.ping(n)).await.expect("ping"), n);
        slowest = slowest.max(started.elapsed());
    }
    let moved = within("transfer", reader).await.expect("join");
    eprintln!("64 MiB streamed; slowest of 200 unary calls meanwhile: {slowest:?}");
    assert!(moved >= 64 << 20);
}

#[tokio::test]
async fn items_of_mixed_sizes_respect_the_window_on_both_sides() {
    // Regression: the sender used to round its credit up to zero after overshooting, and
    // then sent more than the receiver allowed, which closed the connection.
    let (_server, client, _) = feed().await;
    let stream = client.mixed().await.expect("call");
    let items: Vec<Vec<u8>> =
        within("mixed stream", stream.map(|i| i.expect("item")).collect()).await;
    assert_eq!(items.len(), 65);
    assert!(items[1..].iter().all(|i| i.len() == 64 * 1024));
    assert_eq!(client.ping(1).await.expect("connection still up"), 1);
}

#[tokio::test]
async fn a_panicking_producer_ends_its_stream_once_and_the_connection_goes_on() {
    use rpc::protocol::message::{Header, Status};
    let (server, client, _) = feed().await;
    let mut stream = client.panics().await.expect("call");
    assert_eq!(stream.next().await.expect("1").expect("ok"), 1);
    assert_eq!(stream.next().await.expect("2").expect("ok"), 2);
    let err = stream.next().await.expect("end").expect_err("panic");
    assert!(
        matches!(err, rpc::Error::HandlerPanicked { ref message } if message.contains("producer broke")),
        "{err}"
    );

    // On the wire: the response, the items, one failed end of stream, and nothing more for
    // that call; the next frame is the answer to the next request.
    let mut raw = support::Raw::connect(server.addr).await;
    raw.send_frame(&support::request(1, "Feed", "panics"), &support::body(&()))
        .await;
    loop {
        match raw.next().await.expect("frame") {
            (
                Header::Response {
                    id: 1,
                    status: Status::Ok,
                },
                _,
            ) => {}
            (Header::StreamItem { id: 1 }, _) => {}
            (
                Header::StreamEnd {
                    id: 1,
                    status: Status::Error { message, .. },
                },
                _,
            ) => {
                assert!(message.contains("producer broke"), "{message}");
                break;
            }
            other => panic!("unexpected frame {other:?}"),
        }
    }
    raw.send_frame(
        &support::request(2, "Feed", "ping"),
        &support::body(&(5u32,)),
    )
    .await;
    let (header, _) = raw.next().await.expect("frame");
    assert!(
        matches!(
            header,
            Header::Response {
                id: 2,
                status: Status::Ok
            }
        ),
        "a second frame for the panicked call: {header:?}"
    );
}

/// A service whose stream types reach the macro through `macro_rules!` as `$t:ty` fragments
/// (invisible groups): still a server stream and a client stream.
macro_rules! relay_service {
    ($out:ty, $input:ty) => {
        #[rpc::service]
        trait Relay {
            async fn repeat(&self, n: u64) -> $out;
            async fn total(&self, items: $input) -> u64;
        }
    };
}

relay_service!(rpc::Stream<u64>, rpc::Stream<u64>);

#[derive(Clone)]
struct RelayImpl;

impl Relay for RelayImpl {
    async fn repeat(&self, n: u64) -> rpc::Stream<u64> {
        rpc::Stream::iter(0..n)
    }

    async fn total(&self, items: rpc::Stream<u64>) -> u64 {
        items
            .map(|item| item.unwrap_or(0))
            .fold(0, |a, b| async move { a + b })
            .await
    }
}

#[tokio::test]
async fn stream_types_passed_through_macro_rules_are_streams() {
    let server = start(rpc::Server::builder().serve(RelayImpl.into_service())).await;
    let client = RelayClient::connect(server.addr).await.expect("connect");
    let items = client.repeat(100).await.expect("call");
    let got: Vec<u64> = within("stream", items.map(|i| i.expect("item")).collect()).await;
    assert_eq!(got, (0..100).collect::<Vec<_>>());
    let total = within("upload", client.total(rpc::Stream::iter(1..=100u64)))
        .await
        .expect("call");
    assert_eq!(total, 5050);
}
