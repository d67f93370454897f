//! One oversized message fails only its own call, over real TCP: a request, a reply, a
//! request-stream item and a reply-stream item, over the sender's own limit (checked before
//! writing) or over the receiver's (a peer with a larger `max_frame_len`; the receiver skips
//! the frame unread). In every case the caller gets `Error::MessageTooLarge` naming both
//! sizes, the connection stays up, and a call in flight beside it on the same connection
//! succeeds. (That the receiver does not buffer the skipped bytes is checked by the
//! decoder's unit tests in `rpc-core/src/frame.rs`.)

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use futures::StreamExt;
use rpc::protocol::message::{Header, Status};
use rpc::ErrorCode;
use support::{body, eventually, frame, request, start, within, Raw, Running};
use tokio::sync::Semaphore;

/// The limit of the side that is configured small, in each test.
const SMALL: usize = 4096;
/// A message well over [`SMALL`] and well under the default limit.
const BIG: usize = 100_000;

#[rpc::service]
trait Big {
    /// The length of what was sent.
    async fn echo(&self, data: Vec<u8>) -> usize;
    /// A reply of `n` bytes.
    async fn make(&self, n: usize) -> Vec<u8>;
    /// Waits for the test to open the gate, then answers `n`: a call in flight beside the
    /// oversized one.
    async fn gated(&self, n: u32) -> u32;
    /// The bytes of every item the client sent.
    async fn upload(&self, items: rpc::Stream<Vec<u8>>) -> usize;
    /// One item of each size.
    async fn download(&self, sizes: Vec<usize>) -> rpc::Stream<Vec<u8>>;
}

#[derive(Clone)]
struct BigImpl {
    /// A permit for every `gated` call that started.
    entered: Arc<Semaphore>,
    /// The test adds a permit for every `gated` call that may answer.
    gate: Arc<Semaphore>,
}

impl Big for BigImpl {
    async fn echo(&self, data: Vec<u8>) -> usize {
        data.len()
    }
    async fn make(&self, n: usize) -> Vec<u8> {
        vec![1; n]
    }
    async fn gated(&self, n: u32) -> u32 {
        self.entered.add_permits(1);
        self.gate.acquire().await.expect("gate open").forget();
        n
    }
    async fn upload(&self, mut items: rpc::Stream<Vec<u8>>) -> usize {
        let mut total = 0;
        while let Some(Ok(item)) = items.next().await {
            total += item.len();
        }
        total
    }
    async fn download(&self, sizes: Vec<usize>) -> rpc::Stream<Vec<u8>> {
        rpc::Stream::iter(sizes.into_iter().map(|n| vec![2; n]))
    }
}

/// A server whose `max_frame_len` is `max`, and its service's gates.
async fn server(max: usize) -> (Running, BigImpl) {
    let service = BigImpl {
        entered: Arc::new(Semaphore::new(0)),
        gate: Arc::new(Semaphore::new(0)),
    };
    let running = start(
        rpc::Server::builder()
            .max_frame_len(max)
            .serve(service.clone().into_service()),
    )
    .await;
    (running, service)
}

/// A client on one TCP connection that never redials, with `max_frame_len` of `max`: a call
/// that succeeds on it proves the connection survived what came before.
async fn client(addr: SocketAddr, max: usize) -> BigClient {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let client = rpc::Client::builder()
        .max_frame_len(max)
        .connect_transport(stream)
        .await
        .expect("handshake");
    BigClient::new(client)
}

/// A `gated` call in flight on `client`'s connection; [`InFlight::finish`] opens the gate
/// and checks that it succeeds.
struct InFlight {
    task: tokio::task::JoinHandle<Result<u32, rpc::Error>>,
    gate: Arc<Semaphore>,
}

impl InFlight {
    async fn start(client: &BigClient, service: &BigImpl) -> InFlight {
        let task = tokio::spawn({
            let client = client.clone();
            async move { client.gated(41).await }
        });
        within("the gated call to start", service.entered.acquire())
            .await
            .expect("entered")
            .forget();
        InFlight {
            task,
            gate: service.gate.clone(),
        }
    }

    async fn finish(self) {
        self.gate.add_permits(1);
        let answer = within("the call in flight", self.task).await.expect("join");
        assert_eq!(
            answer.expect("the call beside the oversized one succeeds"),
            41
        );
    }
}

/// Checks that `err` is `MessageTooLarge` over `max`, for a message of more than `over`
/// bytes, and that its text names both sizes.
fn assert_too_large(err: &rpc::Error, over: usize, max: usize) {
    let rpc::Error::MessageTooLarge { len, max: got } = err else {
        panic!("expected MessageTooLarge, got {err:?}");
    };
    assert_eq!(*got, max, "{err}");
    assert!(*len > over && *len < over + 64, "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&len.to_string()) && text.contains(&max.to_string()),
        "{text}"
    );
}

/// The connection still serves: a small call on it succeeds, and the server has this one
/// connection.
async fn still_up(client: &BigClient, server: &Running) {
    assert_eq!(client.echo(vec![0; 10]).await.expect("a small call"), 10);
    assert_eq!(server.handle.connections(), 1);
}

#[tokio::test]
async fn a_request_over_the_clients_limit_fails_locally_and_nothing_else() {
    let (server, service) = server(rpc::ServerConfig::default().max_frame_len).await;
    let client = client(server.addr, SMALL).await;
    let beside = InFlight::start(&client, &service).await;
    let err = client.echo(vec![0; BIG]).await.expect_err("too large");
    assert_too_large(&err, BIG, SMALL);
    beside.finish().await;
    still_up(&client, &server).await;
}

#[tokio::test]
async fn a_reply_over_the_servers_limit_fails_that_call_with_message_too_large() {
    let (server, service) = server(SMALL).await;
    let client = client(server.addr, rpc::ClientConfig::default().max_frame_len).await;
    let beside = InFlight::start(&client, &service).await;
    let err = client.make(BIG).await.expect_err("reply too large");
    assert_too_large(&err, BIG, SMALL);
    beside.finish().await;
    still_up(&client, &server).await;
}

#[tokio::test]
async fn a_request_over_the_servers_limit_is_skipped_and_fails_only_its_call() {
    let (server, service) = server(SMALL).await;
    let client = client(server.addr, rpc::ClientConfig::default().max_frame_len).await;
    let beside = InFlight::start(&client, &service).await;
    let err = client.echo(vec![0; BIG]).await.expect_err("too large");
    assert_too_large(&err, BIG, SMALL);
    beside.finish().await;
    still_up(&client, &server).await;
}

#[tokio::test]
async fn a_reply_over_the_clients_limit_is_skipped_and_fails_only_its_call() {
    let (server, service) = server(rpc::ServerConfig::default().max_frame_len).await;
    let client = client(server.addr, SMALL).await;
    let beside = InFlight::start(&client, &service).await;
    let err = client.make(BIG).await.expect_err("reply too large");
    assert_too_large(&err, BIG, SMALL);
    beside.finish().await;
    still_up(&client, &server).await;
}

#[tokio::test]
async fn a_request_stream_item_over_the_clients_limit_fails_its_call() {
    let (server, service) = server(rpc::ServerConfig::default().max_frame_len).await;
    let client = client(server.addr, SMALL).await;
    let beside = InFlight::start(&client, &service).await;
    let items = rpc::Stream::iter([vec![0; 10], vec![0; BIG], vec![0; 10]]);
    let err = within("upload", client.upload(items))
        .await
        .expect_err("item too large");
    assert_too_large(&err, BIG, SMALL);
    beside.finish().await;
    // The server was told: the upload's handler stopped.
    eventually("the handler stopped", || server.handle.in_flight() == 0).await;
    still_up(&client, &server).await;
}

#[tokio::test]
async fn a_request_stream_item_over_the_servers_limit_fails_its_call() {
    let (server, service) = server(SMALL).await;
    let client = client(server.addr, rpc::ClientConfig::default().max_frame_len).await;
    let beside = InFlight::start(&client, &service).await;
    let items = rpc::Stream::iter([vec![0; 10], vec![0; BIG], vec![0; 10]]);
    let err = within("upload", client.upload(items))
        .await
        .expect_err("item too large");
    assert_too_large(&err, BIG, SMALL);
    beside.finish().await;
    eventually("the handler stopped", || server.handle.in_flight() == 0).await;
    still_up(&client, &server).await;
}

/// Reads a `download` of `[10, BIG, 10]`: the first item, then the error, then the end.
async fn read_download(client: &BigClient, max: usize) {
    let mut items = within("download", client.download(vec![10, BIG, 10]))
        .await
        .expect("the stream starts");
    let first = within("first item", items.next()).await;
    assert_eq!(first.expect("an item").expect("ok").len(), 10);
    let second = within("second item", items.next()).await;
    assert_too_large(&second.expect("an item").expect_err("too large"), BIG, max);
    assert!(
        within("end", items.next()).await.is_none(),
        "the error is the stream's last item"
    );
}

#[tokio::test]
async fn a_reply_stream_item_over_the_servers_limit_ends_the_stream_with_message_too_large() {
    let (server, service) = server(SMALL).await;
    let client = client(server.addr, rpc::ClientConfig::default().max_frame_len).await;
    let beside = InFlight::start(&client, &service).await;
    read_download(&client, SMALL).await;
    beside.finish().await;
    still_up(&client, &server).await;
}

#[tokio::test]
async fn a_reply_stream_item_over_the_clients_limit_ends_the_stream_and_stops_the_server() {
    let (server, service) = server(rpc::ServerConfig::default().max_frame_len).await;
    let client = client(server.addr, SMALL).await;
    let beside = InFlight::start(&client, &service).await;
    read_download(&client, SMALL).await;
    beside.finish().await;
    eventually("the stream's handler stopped", || {
        server.handle.in_flight() == 0
    })
    .await;
    still_up(&client, &server).await;
}

#[tokio::test]
async fn retrying_an_oversized_call_does_not_break_other_callers() {
    let (server, _service) = server(SMALL).await;
    let client = client(server.addr, rpc::ClientConfig::default().max_frame_len).await;
    let others: Vec<_> = (0..4)
        .map(|worker| {
            let client = client.clone();
            tokio::spawn(async move {
                for n in 0..100 {
                    let len = worker * 100 + n;
                    assert_eq!(client.echo(vec![0; len]).await.expect("other caller"), len);
                }
            })
        })
        .collect();
    for _ in 0..200 {
        let err = client
            .echo(vec![0; 2 * SMALL])
            .await
            .expect_err("too large");
        assert_too_large(&err, 2 * SMALL, SMALL);
    }
    for other in others {
        within("other callers", other)
            .await
            .expect("every other call succeeded");
    }
    still_up(&client, &server).await;
}

#[tokio::test]
async fn a_raw_oversized_request_is_answered_with_code_9_and_the_connection_serves_on() {
    let (server, _service) = server(SMALL).await;
    let mut raw = Raw::connect(server.addr).await;
    // A request whose frame is well over the server's limit, sent whole.
    raw.send_frame(&request(1, "Big", "echo"), &body(&(vec![7u8; BIG],)))
        .await;
    // An oversized item of a stream that does not exist: skipped, nothing answered.
    raw.send(&frame(&Header::StreamItem { id: 99 }, &vec![0u8; BIG]))
        .await;
    raw.send_frame(&request(2, "Big", "echo"), &body(&(vec![7u8; 5],)))
        .await;
    let (header, _) = raw.next().await.expect("a response");
    let Header::Response {
        id: 1,
        status: Status::Error { code, message },
    } = header
    else {
        panic!("expected a refusal of call 1, got {header:?}");
    };
    assert_eq!(code, ErrorCode::MessageTooLarge.to_u16());
    assert!(message.contains(&SMALL.to_string()), "{message}");
    let (header, reply) = raw.next().await.expect("a response");
    assert!(
        matches!(
            header,
            Header::Response {
                id: 2,
                status: Status::Ok
            }
        ),
        "{header:?}"
    );
    assert_eq!(reply.as_ref(), body(&5usize).as_slice());
}

#[tokio::test]
async fn an_oversized_frame_whose_header_cannot_be_read_closes_the_connection() {
    let (server, _service) = server(SMALL).await;
    let mut raw = Raw::connect(server.addr).await;
    // A frame over the limit whose first bytes are no header (message tag 99 does not
    // exist). Only its front is sent: more than the server reads of it (the metadata limit
    // and a little), so the server decides before the write could meet a closed socket.
    let mut bytes = (BIG as u32).to_be_bytes().to_vec();
    bytes.push(99);
    bytes.resize(4 + 32 * 1024, 0);
    raw.send(&bytes).await;
    raw.closed().await;
}
