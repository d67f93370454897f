//! Keepalive: a peer that vanished without closing the connection is noticed by its silence
//! after a ping, on both ends; a peer that answers keeps its connection.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use rpc::protocol::message::{Header, Status};
use support::{body, eventually, frame, play_server, request, start, within, Raw};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Short settings, so a dead peer is noticed in well under a second.
const INTERVAL: Duration = Duration::from_millis(100);
const TIMEOUT: Duration = Duration::from_millis(300);

#[rpc::service]
trait Beat {
    async fn echo(&self, n: u32) -> u32;
    /// Never returns on its own.
    async fn hangs(&self);
}

struct BeatImpl;

impl Beat for BeatImpl {
    async fn echo(&self, n: u32) -> u32 {
        n
    }
    async fn hangs(&self) {
        std::future::pending::<()>().await
    }
}

/// A scripted server on 127.0.0.1 that completes the handshake of every connection, then
/// reads and never answers anything; reports each accepted connection and each ping.
async fn silent_server() -> (SocketAddr, mpsc::Receiver<()>, mpsc::Receiver<u64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (accepted_tx, accepted) = mpsc::channel(16);
    let (pings_tx, pings) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            let _ = accepted_tx.try_send(());
            let pings = pings_tx.clone();
            connections.spawn(play_server(stream, move |header, _| {
                if let Header::Ping { payload } = header {
                    let _ = pings.try_send(payload);
                }
                bytes::BytesMut::new()
            }));
        }
    });
    (addr, accepted, pings)
}

#[tokio::test]
async fn a_server_that_stops_answering_fails_the_waiting_call_at_once() {
    let (addr, mut accepted, mut pings) = silent_server().await;
    let client = BeatClient::new(
        rpc::Client::builder()
            .keepalive_interval(Some(INTERVAL))
            .keepalive_timeout(TIMEOUT)
            .connect(addr)
            .await
            .expect("connect"),
    );
    within("the first connection", accepted.recv()).await;

    // No deadline: only the keepalive can end this call.
    let err = within("the call", client.echo(1).no_deadline())
        .await
        .expect_err("the server never answers");
    match &err {
        rpc::Error::ConnectionClosed { reason, .. } => assert!(
            reason.contains("did not answer a keepalive ping within 300 ms"),
            "{err}"
        ),
        other => panic!("expected a closed connection, got {other:?}"),
    }
    assert!(
        within("a ping", pings.recv()).await.is_some(),
        "the server saw a ping"
    );
    assert!(!client.client().is_connected());
    assert_eq!(client.client().in_flight(), 0);

    // The next call dials a new connection, as after any broken one.
    let next = client.echo(2).timeout(Duration::from_millis(100));
    let (outcome, redialled) = tokio::join!(next, within("a redial", accepted.recv()));
    assert!(redialled.is_some(), "the client dialled again");
    assert!(outcome.is_err(), "this server answers nothing");
}

#[tokio::test]
async fn a_client_that_vanished_has_its_calls_freed_by_the_server() {
    let server = start(
        rpc::Server::builder()
            .keepalive_interval(Some(INTERVAL))
            .keepalive_timeout(TIMEOUT)
            .serve(BeatImpl.into_service()),
    )
    .await;
    let mut raw = Raw::connect(server.addr).await;
    raw.send_frame(&request(1, "Beat", "hangs"), &body(&()))
        .await;
    eventually("the call runs", || server.handle.in_flight() == 1).await;

    // From here the raw client reads nothing and answers no ping: to the server it is a
    // host that vanished. Only the keepalive can end a call that never returns.
    eventually("the server frees the call", || {
        server.handle.in_flight() == 0
    })
    .await;
    // The connection is closed too (what the server queued before, its pings, is skipped).
    raw.closed().await;
}

#[tokio::test]
async fn the_server_pings_an_idle_client_and_keeps_one_that_answers() {
    let server = start(
        rpc::Server::builder()
            .keepalive_interval(Some(Duration::from_millis(50)))
            .keepalive_timeout(Duration::from_millis(150))
            .serve(BeatImpl.into_service()),
    )
    .await;
    let mut raw = Raw::connect(server.addr).await;
    let mut last = None;
    for _ in 0..5 {
        match raw.next().await {
            Some((Header::Ping { payload }, _)) => {
                assert_ne!(Some(payload), last, "each ping has its own payload");
                last = Some(payload);
                raw.send_frame(&Header::Pong { payload }, &[]).await;
            }
            other => panic!("expected a ping, got {other:?}"),
        }
    }
    // Still open and serving, after more than the timeout in total.
    raw.send_frame(&request(9, "Beat", "echo"), &body(&(7u32,)))
        .await;
    loop {
        match raw.next().await {
            Some((Header::Ping { payload }, _)) => {
                raw.send_frame(&Header::Pong { payload }, &[]).await
            }
            Some((
                Header::Response {
                    id: 9,
                    status: Status::Ok,
                },
                reply,
            )) => {
                assert_eq!(&reply[..], &body(&7u32)[..]);
                break;
            }
            other => panic!("expected the reply, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_server_answers_a_ping_with_its_payload() {
    let server = start(
        rpc::Server::builder()
            .keepalive_interval(None)
            .serve(BeatImpl.into_service()),
    )
    .await;
    let mut raw = Raw::connect(server.addr).await;
    raw.send_frame(&Header::Ping { payload: 0xfeed }, &[]).await;
    match raw.next().await {
        Some((Header::Pong { payload: 0xfeed }, rest)) => assert!(rest.is_empty()),
        other => panic!("expected the pong, got {other:?}"),
    }
}

/// Which way a frame went through the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    ToServer,
    ToClient,
}

/// Copies `from` to `to`, reporting each pong on the way (after the 8 preamble bytes).
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    way: Way,
    pongs: mpsc::Sender<Way>,
) {
    use tokio_util::codec::Decoder;
    let mut decoder = rpc::protocol::frame::FrameDecoder::new(1 << 20);
    let mut seen = bytes::BytesMut::new();
    let mut preamble = 8;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if to.write_all(&chunk[..n]).await.is_err() {
            return;
        }
        let skip = preamble.min(n);
        preamble -= skip;
        seen.extend_from_slice(&chunk[skip..n]);
        while let Ok(Some(frame)) = decoder.decode(&mut seen) {
            if let Ok((Header::Pong { .. }, _)) = rpc::protocol::message::decode_frame(frame) {
                let _ = pongs.try_send(way);
            }
        }
    }
}

/// Forwards one connection's bytes between a client and `server`, and reports each pong
/// either side sends.
async fn pong_counting_relay(server: SocketAddr) -> (SocketAddr, mpsc::Receiver<Way>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (pongs_tx, pongs) = mpsc::channel(64);
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.expect("accept");
        let upstream = TcpStream::connect(server).await.expect("connect");
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = upstream.into_split();
        tokio::join!(
            forward(client_read, server_write, Way::ToServer, pongs_tx.clone()),
            forward(server_read, client_write, Way::ToClient, pongs_tx),
        );
    });
    (addr, pongs)
}

/// A client on one connection through a relay, never redialled (as
/// `support::connect_pinned`): a call that succeeds on it proves the connection survived.
async fn pinned_through(relay: SocketAddr, interval: Option<Duration>) -> BeatClient {
    let stream = TcpStream::connect(relay).await.expect("connect");
    BeatClient::new(
        rpc::Client::builder()
            .keepalive_interval(interval)
            .keepalive_timeout(Duration::from_millis(150))
            .connect_transport(stream)
            .await
            .expect("handshake"),
    )
}

#[tokio::test]
async fn a_healthy_idle_connection_stays_up_across_many_intervals() {
    // The server sends no pings of its own: all the client hears while idle is pongs, so
    // its connection survives only if every ping is answered in time.
    let server = start(
        rpc::Server::builder()
            .keepalive_interval(None)
            .serve(BeatImpl.into_service()),
    )
    .await;
    let (relay, mut pongs) = pong_counting_relay(server.addr).await;
    let client = pinned_through(relay, Some(Duration::from_millis(50))).await;
    assert_eq!(client.echo(1).await.expect("first call"), 1);
    for _ in 0..5 {
        let way = within("a pong", pongs.recv()).await;
        assert_eq!(
            way,
            Some(Way::ToClient),
            "the server answers the client's pings"
        );
    }
    assert!(client.client().is_connected());
    assert_eq!(client.echo(2).await.expect("same connection"), 2);
}

#[tokio::test]
async fn the_client_answers_the_server_s_pings_and_keeps_its_connection() {
    // The client sends no pings of its own: all the server hears from an idle client is
    // pongs, so the connection survives only if the client answers every ping.
    let server = start(
        rpc::Server::builder()
            .keepalive_interval(Some(Duration::from_millis(50)))
            .keepalive_timeout(Duration::from_millis(150))
            .serve(BeatImpl.into_service()),
    )
    .await;
    let (relay, mut pongs) = pong_counting_relay(server.addr).await;
    let client = pinned_through(relay, None).await;
    assert_eq!(client.echo(1).await.expect("first call"), 1);
    for _ in 0..5 {
        let way = within("a pong", pongs.recv()).await;
        assert_eq!(
            way,
            Some(Way::ToServer),
            "the client answers the server's pings"
        );
    }
    assert!(client.client().is_connected());
    assert_eq!(client.echo(2).await.expect("same connection"), 2);
}

#[tokio::test]
async fn pings_do_not_keep_a_connection_from_idling_out() {
    let server = start(
        rpc::Server::builder()
            .keepalive_interval(None)
            .idle_timeout(Some(Duration::from_millis(300)))
            .serve(BeatImpl.into_service()),
    )
    .await;
    let mut raw = Raw::connect(server.addr).await;
    let ping = frame(&Header::Ping { payload: 1 }, &[]);
    // A client that pings far more often than the idle timeout: had pings counted as
    // activity, this loop would never end.
    let mut pace = tokio::time::interval(Duration::from_millis(50));
    within("the server closes the idle connection", async {
        loop {
            pace.tick().await;
            if raw.stream.write_all(&ping).await.is_err() {
                break;
            }
            match raw.next().await {
                Some((Header::Pong { .. }, _)) => {}
                None => break,
                other => panic!("expected a pong, got {other:?}"),
            }
        }
    })
    .await;
}

#[tokio::test]
async fn any_frame_counts_as_hearing_from_the_client_even_a_refused_request() {
    let server = start(
        rpc::Server::builder()
            .keepalive_interval(Some(INTERVAL))
            .keepalive_timeout(TIMEOUT)
            .serve(BeatImpl.into_service()),
    )
    .await;
    let mut raw = Raw::connect(server.addr).await;
    // For several times interval plus timeout, the client sends only requests the server
    // refuses (an unknown method) and answers no ping: it is not silent, so it stays.
    let mut pace = tokio::time::interval(Duration::from_millis(50));
    for id in 0..20 {
        pace.tick().await;
        raw.send_frame(&request(id, "Beat", "missing"), &body(&()))
            .await;
        loop {
            match raw.next().await {
                Some((Header::Ping { .. }, _)) => {}
                Some((Header::Response { id: got, status }, _)) if got == id => {
                    assert!(matches!(status, Status::Error { .. }), "{status:?}");
                    break;
                }
                other => panic!("expected the refusal of {id}, got {other:?}"),
            }
        }
    }
    raw.send_frame(&request(99, "Beat", "echo"), &body(&(5u32,)))
        .await;
    loop {
        match raw.next().await {
            Some((Header::Ping { .. }, _)) => {}
            Some((
                Header::Response {
                    id: 99,
                    status: Status::Ok,
                },
                _,
            )) => break,
            other => panic!("expected the reply, got {other:?}"),
        }
    }
}
