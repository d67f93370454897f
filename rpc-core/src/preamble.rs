//! The 8 bytes that open a connection.
//!
//! The client sends `MAGIC` (4 bytes), the protocol version (`u16`, big endian) and two
//! reserved zero bytes. The server answers with `MAGIC`, the version it will speak and a
//! status (`0` accepted, `1` version not supported). On anything but its own magic the server
//! closes at once; the first magic byte is not ASCII, so an HTTP or TLS client fails on the
//! first byte rather than hanging.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{Error, ProtocolError};

/// Opens every connection.
pub const MAGIC: [u8; 4] = [0xF0, b'R', b'P', b'C'];

/// The protocol version this build speaks.
pub const VERSION: u16 = 1;

const ACCEPTED: u16 = 0;
const UNSUPPORTED: u16 = 1;

fn encode(version: u16, tail: u16) -> [u8; 8] {
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&MAGIC);
    out[4..6].copy_from_slice(&version.to_be_bytes());
    out[6..].copy_from_slice(&tail.to_be_bytes());
    out
}

async fn read_magic<S: AsyncRead + Unpin>(io: &mut S) -> Result<(), Error> {
    let mut magic = [0u8; 4];
    io.read_exact(&mut magic).await?;
    // A TLS record: handshake (a client's hello) or alert (a TLS server refusing this
    // plaintext), then major version 3.
    if matches!(magic, [0x15 | 0x16, 0x03, ..]) {
        return Err(ProtocolError::PeerSpeaksTls { got: magic }.into());
    }
    if magic != MAGIC {
        return Err(ProtocolError::BadMagic {
            got: magic,
            expected: MAGIC,
        }
        .into());
    }
    Ok(())
}

/// Client side: sends the preamble and checks the server's answer.
pub async fn client_handshake<S>(io: &mut S) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    io.write_all(&encode(VERSION, 0)).await?;
    io.flush().await?;
    read_magic(io).await?;
    let version = io.read_u16().await?;
    let status = io.read_u16().await?;
    if status != ACCEPTED || version != VERSION {
        return Err(ProtocolError::UnsupportedVersion {
            ours: VERSION,
            theirs: version,
        }
        .into());
    }
    Ok(())
}

/// Server side: reads the client's preamble and answers it. A version this side does not
/// speak is answered with a rejection and returned as an error; bad magic is not answered.
///
/// Callers bound this with a timeout: a peer that sends nothing would otherwise hold it.
pub async fn server_handshake<S>(io: &mut S) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    read_magic(io).await?;
    let version = io.read_u16().await?;
    let _reserved = io.read_u16().await?;
    if version != VERSION {
        io.write_all(&encode(VERSION, UNSUPPORTED)).await?;
        io.flush().await?;
        return Err(ProtocolError::UnsupportedVersion {
            ours: VERSION,
            theirs: version,
        }
        .into());
    }
    io.write_all(&encode(VERSION, ACCEPTED)).await?;
    io.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn handshake_succeeds_between_matching_versions() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let (client, server) = tokio::join!(client_handshake(&mut a), server_handshake(&mut b));
        client.expect("client");
        server.expect("server");
    }

    #[tokio::test]
    async fn server_refuses_http() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(b"GET / HTTP/1.1\r\n\r\n").await.expect("write");
        let err = server_handshake(&mut b).await.expect_err("http");
        assert!(matches!(
            err,
            Error::Protocol(ProtocolError::BadMagic { .. })
        ));
    }

    #[tokio::test]
    async fn a_tls_hello_or_alert_is_named_as_tls() {
        // A TLS client's hello on a plaintext server.
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0x16, 0x03, 0x01, 0x00, 0xF4])
            .await
            .expect("write");
        let err = server_handshake(&mut b).await.expect_err("tls hello");
        assert!(matches!(
            err,
            Error::Protocol(ProtocolError::PeerSpeaksTls { .. })
        ));
        assert!(err.to_string().contains("turn TLS on"), "{err}");
        // A TLS server's alert answering a plaintext client.
        let (mut a, mut b) = tokio::io::duplex(64);
        b.write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32])
            .await
            .expect("write");
        let err = client_handshake(&mut a).await.expect_err("tls alert");
        assert!(matches!(
            err,
            Error::Protocol(ProtocolError::PeerSpeaksTls { .. })
        ));
    }

    #[tokio::test]
    async fn other_versions_are_rejected_on_both_sides() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&encode(VERSION + 1, 0)).await.expect("write");
        let err = server_handshake(&mut b).await.expect_err("version");
        assert!(matches!(
            err,
            Error::Protocol(ProtocolError::UnsupportedVersion { theirs, .. }) if theirs == VERSION + 1
        ));
        // The client reads the rejection the server wrote.
        let mut answer = [0u8; 8];
        a.read_exact(&mut answer).await.expect("answer");
        assert_eq!(answer, encode(VERSION, UNSUPPORTED));
    }
}
