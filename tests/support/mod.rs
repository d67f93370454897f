//! Shared by the integration tests: a server on 127.0.0.1 with an OS-chosen port, raw
//! connections that speak bytes to a server, and a scripted raw server for a client to meet.

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::task::JoinHandle;

pub(crate) mod certs;

/// A running server and what tests need to reach and stop it.
pub(crate) struct Running {
    pub(crate) addr: SocketAddr,
    pub(crate) handle: rpc::ServerHandle,
    pub(crate) task: JoinHandle<()>,
}

impl Running {
    /// Stops the server at once: the task is aborted, every connection dropped.
    pub(crate) fn kill(&self) {
        self.task.abort();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where a test server listens: a fresh port, or an address another server just left.
pub(crate) struct Bind {
    builder: rpc::ServerBuilder,
    addr: SocketAddr,
}

/// Binds a server to `addr` rather than a fresh port (to take over from a stopped one).
pub(crate) trait BindOn {
    fn bind_on(self, addr: SocketAddr) -> Bind;
}

impl BindOn for rpc::ServerBuilder {
    fn bind_on(self, addr: SocketAddr) -> Bind {
        Bind {
            builder: self,
            addr,
        }
    }
}

impl From<rpc::ServerBuilder> for Bind {
    fn from(builder: rpc::ServerBuilder) -> Self {
        Bind {
            builder,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

/// Binds to 127.0.0.1:0 (or the address given with [`BindOn::bind_on`]) and runs the server
/// in a task.
pub(crate) async fn start(bind: impl Into<Bind>) -> Running {
    let Bind { builder, addr } = bind.into();
    let server = builder.bind(addr).await.expect("bind");
    let addr = server.local_addr().expect("tcp address");
    let handle = server.handle();
    let task = tokio::spawn(server.run());
    Running { addr, handle, task }
}

/// A client on one TCP connection that it never redials: once that connection breaks, every
/// call fails. A call that succeeds on it proves the connection survived what came before.
pub(crate) async fn connect_pinned(addr: SocketAddr) -> rpc::Client {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    rpc::Client::builder()
        .connect_transport(stream)
        .await
        .expect("handshake")
}

/// Guards a test against hanging: the behaviour under test must finish well within this.
pub(crate) const PATIENCE: Duration = Duration::from_secs(20);

/// Awaits `future`, failing the test if it takes longer than [`PATIENCE`].
pub(crate) async fn within<F: std::future::IntoFuture>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(PATIENCE, future.into_future()).await {
        Ok(output) => output,
        Err(_) => panic!("{what} did not finish within {PATIENCE:?}"),
    }
}

/// Polls `condition` until it holds, failing the test after [`PATIENCE`]. For state that has
/// no event to wait on (a counter on the server returning to zero); the poll interval is not
/// what the test relies on, the condition is.
pub(crate) async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    within(what, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

/// A raw connection that has done the handshake, for speaking bytes to the server.
pub(crate) struct Raw {
    pub(crate) stream: tokio::net::TcpStream,
    decoder: rpc::protocol::frame::FrameDecoder,
    buf: bytes::BytesMut,
}

/// The 8-byte client preamble.
pub(crate) fn preamble() -> Vec<u8> {
    use rpc::protocol::preamble::{MAGIC, VERSION};
    let mut hello = MAGIC.to_vec();
    hello.extend_from_slice(&VERSION.to_be_bytes());
    hello.extend_from_slice(&[0, 0]);
    hello
}

impl Raw {
    /// Connects and does the handshake; the server must accept it.
    pub(crate) async fn connect(addr: SocketAddr) -> Raw {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(&preamble()).await.expect("preamble");
        let mut answer = [0u8; 8];
        within("preamble answer", stream.read_exact(&mut answer))
            .await
            .expect("preamble answer");
        assert_eq!(
            &answer[..4],
            &rpc::protocol::preamble::MAGIC,
            "the server answers with this protocol's magic"
        );
        Raw {
            stream,
            decoder: rpc::protocol::frame::FrameDecoder::new(64 << 20),
            buf: bytes::BytesMut::new(),
        }
    }

    pub(crate) async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Sends a frame holding `header` and the raw `body` bytes.
    pub(crate) async fn send_frame(
        &mut self,
        header: &rpc::protocol::message::Header,
        body: &[u8],
    ) {
        let frame = frame(header, body);
        self.send(&frame).await;
    }

    /// The next frame from the server, or `None` once it closed the connection.
    pub(crate) async fn next(&mut self) -> Option<(rpc::protocol::message::Header, bytes::Bytes)> {
        use tokio::io::AsyncReadExt;
        use tokio_util::codec::Decoder;
        within("a frame from the server", async {
            loop {
                if let Some(frame) = self.decoder.decode(&mut self.buf).expect("valid frame") {
                    return Some(
                        rpc::protocol::message::decode_frame(frame).expect("valid header"),
                    );
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
    }

    /// Reads until the server closes the connection, discarding frames.
    pub(crate) async fn closed(&mut self) {
        while self.next().await.is_some() {}
    }
}

/// Reads from `stream` until the peer closes it, and returns what arrived. A reset counts as
/// closed (a peer that closes with unread bytes in its buffer may cause one); a peer that
/// keeps the connection open fails the test after [`PATIENCE`].
pub(crate) async fn read_until_closed(what: &str, stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    let _ = within(what, stream.read_to_end(&mut received)).await;
    received
}

/// A fixed-seed generator (xorshift64), so a failure can be replayed.
pub(crate) fn xorshift(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// Plays the server on `stream`: completes the handshake, then hands every frame the client
/// sends, decoded, to `answer` and writes back the bytes it returns. Ends when the client
/// leaves. For tests of what a client does with replies no real server would send.
pub(crate) async fn play_server(
    mut stream: tokio::net::TcpStream,
    mut answer: impl FnMut(rpc::protocol::message::Header, bytes::Bytes) -> bytes::BytesMut,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_util::codec::Decoder;
    let mut hello = [0u8; 8];
    stream.read_exact(&mut hello).await.expect("preamble");
    // Echoing the client's preamble accepts it: same magic, same version, status 0.
    stream.write_all(&hello).await.expect("answer");
    let mut decoder = rpc::protocol::frame::FrameDecoder::new(1 << 20);
    let mut buf = bytes::BytesMut::new();
    while stream.read_buf(&mut buf).await.is_ok_and(|n| n > 0) {
        while let Ok(Some(frame)) = decoder.decode(&mut buf) {
            let Ok((header, body)) = rpc::protocol::message::decode_frame(frame) else {
                continue;
            };
            let out = answer(header, body);
            if !out.is_empty() {
                stream.write_all(&out).await.expect("reply");
            }
        }
    }
}

/// One whole frame: length prefix, encoded `header`, raw `body`.
pub(crate) fn frame(header: &rpc::protocol::message::Header, body: &[u8]) -> Vec<u8> {
    let mut buf = bytes::BytesMut::new();
    rpc::protocol::message::encode_frame(&mut buf, header, usize::MAX, |b| {
        b.extend_from_slice(body);
        Ok(())
    })
    .expect("encode frame");
    buf.to_vec()
}

/// A request header for `Service.method`.
pub(crate) fn request(id: u64, service: &str, method: &str) -> rpc::protocol::message::Header {
    rpc::protocol::message::Header::Request(rpc::protocol::message::RequestHeader {
        id,
        method: rpc::MethodId::of(service, method).as_u64(),
        fingerprint: 0,
        timeout_micros: None,
        metadata: rpc::Metadata::new(),
    })
}

/// Appends a successful response to call `id` carrying `value`: what a scripted server
/// writes to answer a request.
pub(crate) fn ok_response<T: serde::Serialize>(out: &mut bytes::BytesMut, id: u64, value: &T) {
    use rpc::protocol::message::{encode_frame, Header, Status};
    use rpc::protocol::Codec;
    let header = Header::Response {
        id,
        status: Status::Ok,
    };
    encode_frame(out, &header, 1 << 20, |body| {
        rpc::protocol::Bincode.encode(value, body)
    })
    .expect("encode a response");
}

/// Encodes a value as a call body.
pub(crate) fn body<T: serde::Serialize>(value: &T) -> Vec<u8> {
    use rpc::protocol::Codec;
    let mut buf = bytes::BytesMut::new();
    rpc::protocol::Bincode
        .encode(value, &mut buf)
        .expect("encode");
    buf.to_vec()
}
