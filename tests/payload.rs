//! `rpc::Payload` over real TCP and TLS: payloads of every size around the splice threshold
//! echo back intact as arguments, results and stream items, many at once on one
//! connection (their splices interleaved in one write), and one over the frame limit fails
//! alone with `MessageTooLarge`, its spliced bytes counted.

mod support;

use futures::StreamExt;
use rpc::Payload;
use support::certs::{client_tls, Ca, Usage};
use support::{start, within, Running};

#[rpc::service]
trait Blobs {
    /// The payload, back.
    async fn echo(&self, data: Payload) -> Payload;
    /// The items, back, one by one.
    async fn round(&self, items: rpc::Stream<Payload>) -> rpc::Stream<Payload>;
}

struct BlobsImpl;

impl Blobs for BlobsImpl {
    async fn echo(&self, data: Payload) -> Payload {
        data
    }
    async fn round(&self, items: rpc::Stream<Payload>) -> rpc::Stream<Payload> {
        rpc::Stream::new(items.filter_map(|item| async move { item.ok() }))
    }
}

/// The sizes that matter: empty, one byte, just below, at, and far above the threshold.
fn sizes() -> [usize; 5] {
    [0, 1, Payload::SPLICE_MIN - 1, Payload::SPLICE_MIN, 1 << 20]
}

/// `len` bytes that differ from one payload to the next.
fn payload(len: usize, seed: u8) -> Payload {
    Payload::from(
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect::<Vec<_>>(),
    )
}

const MAX: usize = 2 << 20;

async fn server(builder: rpc::ServerBuilder) -> Running {
    start(builder.max_frame_len(MAX).serve(BlobsImpl.into_service())).await
}

/// Every size echoes back intact, alone, all at once, and as stream items both ways.
async fn echo_all(client: &BlobsClient) {
    for (seed, len) in sizes().into_iter().enumerate() {
        let sent = payload(len, seed as u8);
        let back = within("an echo", client.echo(sent.clone()))
            .await
            .expect("echo");
        assert!(back == sent, "a payload of {len} bytes came back changed");
    }

    let calls = (0..4).flat_map(|round| {
        sizes().into_iter().map(move |len| {
            let client = client.clone();
            let sent = payload(len, round);
            async move { (client.echo(sent.clone()).await, sent) }
        })
    });
    for (back, sent) in within("echoes at once", futures::future::join_all(calls)).await {
        assert!(back.expect("echo") == sent, "{} bytes", sent.len());
    }

    // Stream items are bounded by the stream window (128 KiB by default), not the frame limit.
    let stream_sizes = sizes().map(|len| len.min(100_000));
    let items: Vec<Payload> = stream_sizes
        .into_iter()
        .chain(stream_sizes.into_iter().rev())
        .enumerate()
        .map(|(seed, len)| payload(len, seed as u8))
        .collect();
    let mut back = within(
        "a stream round trip",
        client.round(rpc::Stream::iter(items.clone())),
    )
    .await
    .expect("stream");
    let mut received = Vec::new();
    while let Some(item) = within("a stream item", back.next()).await {
        received.push(item.expect("item"));
    }
    assert!(received == items, "stream items came back changed");
}

#[tokio::test]
async fn payloads_of_every_size_echo_over_tcp() {
    let server = server(rpc::Server::builder()).await;
    let client = BlobsClient::new(support::connect_pinned(server.addr).await);
    echo_all(&client).await;
}

#[tokio::test]
async fn payloads_of_every_size_echo_over_tls() {
    let ca = Ca::new("payload CA");
    let issued = ca.issue("server", &["localhost", "127.0.0.1"], Usage::Server);
    let server = server(rpc::Server::builder().tls(issued.server_tls())).await;
    let client = rpc::Client::builder()
        .tls(client_tls(&ca))
        .connect(server.addr)
        .await
        .expect("connect");
    echo_all(&BlobsClient::new(client)).await;
}

#[tokio::test]
async fn a_payload_over_the_frame_limit_fails_alone() {
    let server = server(rpc::Server::builder()).await;
    let stream = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let client = BlobsClient::new(
        rpc::Client::builder()
            .max_frame_len(MAX)
            .connect_transport(stream)
            .await
            .expect("handshake"),
    );
    // Just over the limit once the header and the length are counted: the spliced bytes
    // are what makes it too large.
    let err = client
        .echo(payload(MAX, 1))
        .await
        .expect_err("over the limit");
    let rpc::Error::MessageTooLarge { len, max } = err else {
        panic!("expected MessageTooLarge, got {err:?}");
    };
    assert_eq!(max, MAX);
    assert!(len > MAX && len < MAX + 64, "{len}");
    // Only that call: the connection carries the next one, and one at the limit's edge.
    let edge = payload(MAX - 64, 2);
    assert!(client.echo(edge.clone()).await.expect("under the limit") == edge);
    assert_eq!(server.handle.connections(), 1);
}
