//! Calls that fail: panics, deadlines, cancellation, dead servers, hostile bytes, limits.
//! Each failure costs one call or one connection, never the server.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rpc::protocol::message::{encode_frame, Header, Status};
use support::{play_server, read_until_closed, start, within, Raw};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

#[rpc::service]
trait Flaky {
    async fn ok(&self, n: u32) -> u32;
    async fn panics(&self, message: String) -> u32;
    /// Blocks until the test opens the gate; counts how many run at once.
    async fn blocks(&self) -> u32;
    /// Never returns on its own.
    async fn hangs(&self);
    async fn whoami(&self) -> (u64, String, Option<String>, bool);
}

struct FlakyImpl {
    gate: Arc<Semaphore>,
    active: Arc<AtomicUsize>,
    max_active: Arc<AtomicUsize>,
    started: Arc<Semaphore>,
    dropped: Arc<Semaphore>,
    drops: Arc<AtomicUsize>,
}

/// Signals when a handler's future is dropped (finished, aborted or cancelled).
struct DropGuard {
    dropped: Arc<Semaphore>,
    drops: Arc<AtomicUsize>,
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
        self.dropped.add_permits(1);
    }
}

impl Flaky for FlakyImpl {
    async fn ok(&self, n: u32) -> u32 {
        n
    }
    async fn panics(&self, message: String) -> u32 {
        panic!("{message}")
    }
    async fn blocks(&self) -> u32 {
        let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_active.fetch_max(now, Ordering::SeqCst);
        self.started.add_permits(1);
        let permit = self.gate.acquire().await.expect("gate open");
        permit.forget();
        self.active.fetch_sub(1, Ordering::SeqCst);
        1
    }
    async fn hangs(&self) {
        let _guard = DropGuard {
            dropped: self.dropped.clone(),
            drops: self.drops.clone(),
        };
        self.started.add_permits(1);
        std::future::pending::<()>().await
    }
    async fn whoami(&self) -> (u64, String, Option<String>, bool) {
        let ctx = rpc::Context::current().expect("inside a handler");
        (
            ctx.request_id(),
            ctx.peer().to_string(),
            ctx.metadata().get_str("user").map(String::from),
            ctx.deadline().is_some(),
        )
    }
}

/// Waits for one signal (a handler started, a handler was dropped).
async fn signalled(what: &str, signals: &Semaphore) {
    within(what, signals.acquire())
        .await
        .expect("semaphore open")
        .forget();
}

/// A [`FlakyImpl`] to serve, and what a test keeps to steer and watch it.
struct Rig {
    service: FlakyImpl,
    /// One permit lets one `blocks` handler return.
    gate: Arc<Semaphore>,
    /// A permit for each `blocks` or `hangs` handler that started.
    started: Arc<Semaphore>,
    /// A permit for each `hangs` handler dropped.
    dropped: Arc<Semaphore>,
    /// How many `hangs` handlers were dropped.
    drops: Arc<AtomicUsize>,
    /// The most `blocks` handlers that ran at once.
    max_active: Arc<AtomicUsize>,
}

fn rig() -> Rig {
    let service = FlakyImpl {
        gate: Arc::new(Semaphore::new(0)),
        active: Arc::default(),
        max_active: Arc::default(),
        started: Arc::new(Semaphore::new(0)),
        dropped: Arc::new(Semaphore::new(0)),
        drops: Arc::default(),
    };
    Rig {
        gate: service.gate.clone(),
        started: service.started.clone(),
        dropped: service.dropped.clone(),
        drops: service.drops.clone(),
        max_active: service.max_active.clone(),
        service,
    }
}

#[tokio::test]
async fn a_panicking_handler_fails_its_call_and_the_server_keeps_serving() {
    let service = rig().service;
    let server = start(
        rpc::Server::builder()
            .expose_panic_messages(true)
            .serve(service.into_service()),
    )
    .await;
    let client = FlakyClient::new(support::connect_pinned(server.addr).await);
    let err = client.panics("boom".into()).await.expect_err("panicked");
    assert!(
        matches!(err, rpc::Error::HandlerPanicked { ref message } if message == "boom"),
        "{err}"
    );
    // Same connection, and a new one, both still served.
    assert_eq!(client.ok(1).await.expect("same connection"), 1);
    let other = FlakyClient::connect(server.addr)
        .await
        .expect("connect again");
    assert_eq!(other.ok(2).await.expect("new connection"), 2);
}

#[tokio::test]
async fn handlers_see_their_call_context() {
    let service = rig().service;
    let server = start(rpc::Server::builder().serve(service.into_service())).await;
    let client = FlakyClient::connect(server.addr).await.expect("connect");
    let (id1, peer, user, has_deadline) = client
        .whoami()
        .metadata("user", "ada")
        .await
        .expect("whoami");
    assert_eq!(user.as_deref(), Some("ada"));
    assert!(has_deadline, "the default timeout travels as a deadline");
    assert!(peer.starts_with("127.0.0.1:"), "{peer}");
    let (id2, _, user, has_deadline) = client.whoami().no_deadline().await.expect("whoami");
    assert_ne!(id1, id2);
    assert_eq!(user, None);
    assert!(!has_deadline);
}

#[tokio::test]
async fn a_deadline_fails_the_call_and_stops_the_handler() {
    let Rig {
        service,
        started,
        dropped,
        ..
    } = rig();
    let server = start(rpc::Server::builder().serve(service.into_service())).await;
    let client = FlakyClient::connect(server.addr).await.expect("connect");
    let err = within(
        "deadline",
        client.hangs().timeout(Duration::from_millis(100)),
    )
    .await
    .expect_err("must time out");
    assert!(matches!(err, rpc::Error::DeadlineExceeded), "{err}");
    signalled("handler start", &started).await;
    // The server dropped the handler at the deadline too.
    signalled("handler stopped by the server", &dropped).await;
    // And the client forgot the call: nothing is left waiting for a reply.
    assert_eq!(client.client().in_flight(), 0);
}

#[tokio::test]
async fn dropping_a_call_cancels_the_handler_on_the_server() {
    let Rig {
        service,
        started,
        dropped,
        drops,
        ..
    } = rig();
    let server = start(rpc::Server::builder().serve(service.into_service())).await;
    let client = FlakyClient::connect(server.addr).await.expect("connect");
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.hangs().no_deadline().await }
    });
    signalled("handler start", &started).await;
    call.abort();
    signalled("handler dropped after cancel", &dropped).await;
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert_eq!(client.ok(5).await.expect("still connected"), 5);
}

#[tokio::test]
async fn killing_the_server_fails_every_pending_call_promptly() {
    let Rig {
        service, started, ..
    } = rig();
    let server = start(rpc::Server::builder().serve(service.into_service())).await;
    let client = FlakyClient::connect(server.addr).await.expect("connect");
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.hangs().no_deadline().await })
        })
        .collect();
    for _ in 0..20 {
        signalled("handlers start", &started).await;
    }
    server.kill();
    for call in calls {
        let outcome = within("pending call fails", call).await.expect("join");
        assert!(
            matches!(outcome, Err(rpc::Error::ConnectionClosed { .. })),
            "{outcome:?}"
        );
    }
    // New calls fail fast too: the server is gone, redialing fails.
    let err = within("call to a dead server", client.ok(1))
        .await
        .expect_err("server is gone");
    assert!(matches!(err, rpc::Error::Connect { .. }), "{err}");
}

#[tokio::test]
async fn a_connection_never_runs_more_calls_than_its_in_flight_limit() {
    let Rig {
        service,
        gate,
        started,
        max_active,
        ..
    } = rig();
    let server = start(
        rpc::Server::builder()
            .max_in_flight_per_connection(4)
            .serve(service.into_service()),
    )
    .await;
    let client = FlakyClient::connect(server.addr).await.expect("connect");
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.blocks().await })
        })
        .collect();
    // Release the calls one at a time, each after a handler has started.
    for _ in 0..20 {
        signalled("a handler starts", &started).await;
        assert!(max_active.load(Ordering::SeqCst) <= 4);
        gate.add_permits(1);
    }
    for call in calls {
        assert_eq!(within("call", call).await.expect("join").expect("call"), 1);
    }
    assert_eq!(
        max_active.load(Ordering::SeqCst),
        4,
        "the limit was never reached"
    );
}

#[tokio::test]
async fn hostile_bytes_close_only_their_own_connection() {
    let service = rig().service;
    let server = start(
        rpc::Server::builder()
            .max_frame_len(1024)
            .serve(service.into_service()),
    )
    .await;
    let good = FlakyClient::connect(server.addr).await.expect("connect");

    // Not this protocol at all.
    let mut http = TcpStream::connect(server.addr).await.expect("connect");
    http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    read_until_closed("server closes the HTTP connection", &mut http).await;

    // A length prefix beyond the limit, in front of bytes that are no header (with a
    // readable header, an oversized frame would fail only its own call).
    let mut huge = Raw::connect(server.addr).await;
    huge.send(&[0xff; 5]).await;
    huge.closed().await;

    // A well-formed frame whose header is garbage.
    let mut garbage = Raw::connect(server.addr).await;
    garbage.send(&[0, 0, 0, 4, 0xff, 0xfe, 0xfd, 0xfc]).await;
    garbage.closed().await;

    assert_eq!(
        good.ok(7)
            .await
            .expect("the well-behaved client is unaffected"),
        7
    );
}

#[tokio::test]
async fn garbage_arguments_fail_the_call_not_the_connection() {
    let service = rig().service;
    let server = start(rpc::Server::builder().serve(service.into_service())).await;
    let client = rpc::Client::connect(server.addr).await.expect("connect");
    // `ok` takes a u32; send a string instead.
    let err = client
        .call::<_, u32>(
            rpc::Method::new("Flaky", "ok"),
            ("not a number".to_string(),),
        )
        .await
        .expect_err("wrong arguments");
    assert!(matches!(err, rpc::Error::BadRequest { .. }), "{err}");
    let ok: u32 = client
        .call(rpc::Method::new("Flaky", "ok"), (3u32,))
        .await
        .expect("good call");
    assert_eq!(ok, 3);
}

#[tokio::test]
async fn an_oversized_request_fails_locally_with_the_limit_named() {
    let service = rig().service;
    let server = start(rpc::Server::builder().serve(service.into_service())).await;
    let client = rpc::Client::builder()
        .max_frame_len(64)
        .connect(server.addr)
        .await
        .expect("connect");
    let err = client
        .call::<_, u32>(rpc::Method::new("Flaky", "ok"), (vec![0u8; 1000],))
        .await
        .expect_err("too large");
    assert!(
        matches!(err, rpc::Error::MessageTooLarge { max: 64, .. }),
        "{err}"
    );
    let ok: u32 = client
        .call(rpc::Method::new("Flaky", "ok"), (3u32,))
        .await
        .expect("small call");
    assert_eq!(ok, 3);
}

#[tokio::test]
async fn an_enormous_timeout_means_no_deadline() {
    let service = rig().service;
    let server = start(rpc::Server::builder().serve(service.into_service())).await;
    let client = FlakyClient::connect(server.addr).await.expect("connect");
    let (_, _, _, has_deadline) = client
        .whoami()
        .timeout(Duration::MAX)
        .await
        .expect("whoami");
    assert!(!has_deadline);
}

/// A server that completes the handshake and then never answers: any deadline error a client
/// gets from it was produced by the client itself. Reports the ids of the cancels it receives.
async fn silent_server() -> (std::net::SocketAddr, tokio::sync::mpsc::Receiver<u64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (cancels, received) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        play_server(stream, |header, _| {
            if let Header::Cancel { id } = header {
                let _ = cancels.try_send(id);
            }
            bytes::BytesMut::new()
        })
        .await;
    });
    (addr, received)
}

#[tokio::test]
async fn a_call_whose_own_timer_fires_is_forgotten_and_cancelled() {
    let (addr, mut cancels) = silent_server().await;
    let client = FlakyClient::connect(addr).await.expect("connect");
    let err = within("deadline", client.ok(1).timeout(Duration::from_millis(100)))
        .await
        .expect_err("the server never answers");
    assert!(matches!(err, rpc::Error::DeadlineExceeded), "{err}");
    // Only the client's timer can have ended this call: it must leave nothing behind and
    // tell the server.
    assert_eq!(client.client().in_flight(), 0);
    assert_eq!(within("cancel", cancels.recv()).await, Some(0));
}

#[tokio::test]
async fn a_far_deadline_is_enforced_by_the_connection_sweep() {
    // Deadlines over a second away are timed out by the connection, not a timer per call;
    // the server here never answers, so nothing else can end the call.
    let (addr, mut cancels) = silent_server().await;
    let client = FlakyClient::connect(addr).await.expect("connect");
    let begun = tokio::time::Instant::now();
    let err = within(
        "swept deadline",
        client.ok(1).timeout(Duration::from_millis(1_200)),
    )
    .await
    .expect_err("must time out");
    assert!(matches!(err, rpc::Error::DeadlineExceeded), "{err}");
    assert!(begun.elapsed() >= Duration::from_millis(1_200));
    assert_eq!(client.client().in_flight(), 0);
    assert_eq!(within("cancel", cancels.recv()).await, Some(0));
}

/// How the scripted server answers the requests on its first connection.
#[derive(Clone, Copy)]
enum FirstAnswer {
    /// The way a server going away refuses: "shutting down, not run".
    RefusedUnrun,
    /// A go-away, then `Overloaded` from the handler: the call *did* run, while the server
    /// was going away.
    GoAwayThenOverloaded,
}

/// A request as the scripted server saw it.
#[derive(Debug)]
struct Seen {
    /// Which connection it came on, counting from 0.
    connection: usize,
    timeout_micros: Option<u64>,
}

/// A scripted server: on its first connection it answers every request with `first`; on
/// later connections it answers every request with 4242. Reports every request it sees.
async fn scripted_server(
    first: FirstAnswer,
) -> (std::net::SocketAddr, tokio::sync::mpsc::Receiver<Seen>) {
    use rpc::ErrorCode::{Overloaded, ShuttingDown};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (seen, received) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        for index in 0.. {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            connections.spawn(play_server(stream, move |header, _| {
                let mut out = bytes::BytesMut::new();
                let Header::Request(request) = header else {
                    return out;
                };
                let _ = seen.try_send(Seen {
                    connection: index,
                    timeout_micros: request.timeout_micros,
                });
                let id = request.id;
                let refuse = |out: &mut bytes::BytesMut, code: rpc::ErrorCode, message: &str| {
                    let code = code.to_u16();
                    let status = Status::Error {
                        code,
                        message: message.into(),
                    };
                    encode_frame(out, &Header::Response { id, status }, 1 << 20, |_| Ok(()))
                };
                let encoded = match (index, first) {
                    (0, FirstAnswer::RefusedUnrun) => refuse(
                        &mut out,
                        ShuttingDown,
                        "shutting down; the call was not run",
                    ),
                    (0, FirstAnswer::GoAwayThenOverloaded) => {
                        encode_frame(&mut out, &Header::GoAway, 1 << 20, |_| Ok(()))
                            .and_then(|_| refuse(&mut out, Overloaded, "handler says: too busy"))
                    }
                    _ => {
                        support::ok_response(&mut out, id, &4242u32);
                        Ok(())
                    }
                };
                encoded.expect("encode");
                out
            }));
        }
    });
    (addr, received)
}

#[tokio::test]
async fn a_call_refused_unrun_by_a_server_going_away_is_sent_again_on_a_new_connection() {
    let (addr, mut seen) = scripted_server(FirstAnswer::RefusedUnrun).await;
    let client = FlakyClient::connect(addr).await.expect("connect");
    let answer = within("call", client.ok(1)).await.expect("sent again");
    assert_eq!(answer, 4242);
    let first = within("first request", seen.recv()).await.expect("seen");
    let second = within("second request", seen.recv()).await.expect("seen");
    assert_eq!((first.connection, second.connection), (0, 1));
    // One deadline covers every attempt: the second is not given a fresh default one, so
    // it has strictly less time left (the round trip in between took some).
    let (Some(first), Some(second)) = (first.timeout_micros, second.timeout_micros) else {
        panic!("the default deadline travels with every attempt");
    };
    assert!(
        second <= first,
        "second attempt's timeout {second} us > first's {first} us"
    );
    assert_eq!(client.client().in_flight(), 0);
}

#[tokio::test]
async fn an_overloaded_reply_racing_a_go_away_is_not_sent_again() {
    // The handler ran and said "overloaded" just as the server started going away. Only the
    // wire's "refused unrun" code makes a call safe to send again; this one must not be.
    let (addr, mut seen) = scripted_server(FirstAnswer::GoAwayThenOverloaded).await;
    let client = FlakyClient::connect(addr).await.expect("connect");
    let err = within("call", client.ok(1))
        .await
        .expect_err("overloaded, not retried");
    assert!(
        matches!(&err, rpc::Error::Overloaded { reason } if reason.contains("too busy")),
        "{err}"
    );
    let first = within("first request", seen.recv()).await.expect("seen");
    assert_eq!(first.connection, 0);
    // The go-away still moves the next call to a new connection, where it is answered; the
    // overloaded call was never sent there.
    assert_eq!(
        within("next call", client.ok(2)).await.expect("answered"),
        4242
    );
    let next = within("next request", seen.recv()).await.expect("seen");
    assert_eq!(next.connection, 1);
    assert!(
        seen.try_recv().is_err(),
        "the overloaded call was sent again"
    );
}
