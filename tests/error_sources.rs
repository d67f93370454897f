//! Errors a program can inspect: behind a connection or I/O failure, `std::error::Error::source`
//! leads to the `std::io::Error` itself, with its `ErrorKind`, over real TCP.

mod support;

use std::io;

use support::within;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::codec::Decoder;

/// The first `io::Error` in `err`'s source chain.
fn io_error(err: &rpc::Error) -> Option<&io::Error> {
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<io::Error>() {
            return Some(io);
        }
        source = cause.source();
    }
    None
}

#[tokio::test]
async fn a_connection_reset_reaches_the_caller_as_an_io_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    // A server that accepts the handshake, waits for the call's request, and resets the
    // connection instead of answering.
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut hello = [0u8; 8];
        stream.read_exact(&mut hello).await.expect("preamble");
        stream.write_all(&hello).await.expect("answer");
        let mut decoder = rpc::protocol::frame::FrameDecoder::new(1 << 20);
        let mut buf = bytes::BytesMut::new();
        while decoder.decode(&mut buf).expect("a frame").is_none() {
            assert!(stream.read_buf(&mut buf).await.expect("read") > 0, "eof");
        }
        // Closing with a zero linger sends a reset, not a FIN.
        stream.set_zero_linger().expect("linger");
        drop(stream);
    });
    let client = support::connect_pinned(addr).await;
    let err = within(
        "the call",
        client.call::<_, u32>(rpc::Method::new("Echo", "echo"), (1u32,)),
    )
    .await
    .expect_err("the server reset the connection");
    within("the server", server).await.expect("server");
    assert!(
        matches!(err, rpc::Error::ConnectionClosed { .. }),
        "{err:?}"
    );
    let io = io_error(&err).unwrap_or_else(|| panic!("no io::Error behind {err:?}"));
    assert_eq!(io.kind(), io::ErrorKind::ConnectionReset, "{err}");
    // The error itself, not only something down the chain.
    let direct = std::error::Error::source(&err).and_then(|s| s.downcast_ref::<io::Error>());
    assert_eq!(
        direct.map(io::Error::kind),
        Some(io::ErrorKind::ConnectionReset)
    );
}

#[tokio::test]
async fn a_refused_connection_reaches_the_caller_as_an_io_error() {
    // A port nobody listens on any more.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    let err = rpc::Client::connect(addr)
        .await
        .expect_err("nothing listens there");
    assert!(matches!(err, rpc::Error::Connect { .. }), "{err:?}");
    let io = io_error(&err).unwrap_or_else(|| panic!("no io::Error behind {err:?}"));
    assert_eq!(io.kind(), io::ErrorKind::ConnectionRefused, "{err}");
}
