//! The byte streams a connection can run over.
//!
//! A [`Transport`] is any bidirectional stream that can be split into a read half and a write
//! half that work independently. Implemented for TCP, Unix domain sockets and tokio's
//! in-memory [`DuplexStream`] (handy in tests: no sockets, no ports); with the `tls` feature,
//! for the TLS streams of `tokio-rustls` over any of them (see [`crate::tls`]).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadHalf, WriteHalf};
use tokio::net::{tcp, TcpStream};

/// A bidirectional byte stream a connection runs over.
pub trait Transport: AsyncRead + AsyncWrite + Send + Unpin + 'static {
    /// The read half after [`Transport::into_split`].
    type Reader: AsyncRead + Send + Unpin + 'static;
    /// The write half after [`Transport::into_split`].
    type Writer: AsyncWrite + Send + Unpin + 'static;

    /// Splits the stream so reading and writing proceed independently.
    fn into_split(self) -> (Self::Reader, Self::Writer);

    /// Who is on the other end, for logs and [`Context::peer`](crate::Context::peer).
    fn peer(&self) -> PeerAddr;

    /// The identity the peer proved with a certificate, on a TLS stream whose peer sent one
    /// (the client's under mutual TLS); `None` on every other transport.
    fn peer_identity(&self) -> Option<crate::tls::PeerIdentity> {
        None
    }
}

/// The address of the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerAddr {
    /// A TCP peer.
    Tcp(SocketAddr),
    /// A Unix socket peer (usually unnamed on the accepting side).
    Unix(Option<PathBuf>),
    /// An in-memory peer in the same process.
    Memory,
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Tcp(addr) => write!(f, "{addr}"),
            PeerAddr::Unix(Some(path)) => write!(f, "unix:{}", path.display()),
            PeerAddr::Unix(None) => f.write_str("unix:(unnamed)"),
            PeerAddr::Memory => f.write_str("memory"),
        }
    }
}

impl Transport for TcpStream {
    type Reader = tcp::OwnedReadHalf;
    type Writer = tcp::OwnedWriteHalf;

    fn into_split(self) -> (Self::Reader, Self::Writer) {
        TcpStream::into_split(self)
    }

    fn peer(&self) -> PeerAddr {
        match self.peer_addr() {
            Ok(addr) => PeerAddr::Tcp(addr),
            // The socket is already disconnected; it will fail on first use.
            Err(_) => PeerAddr::Tcp(SocketAddr::from(([0, 0, 0, 0], 0))),
        }
    }
}

#[cfg(unix)]
impl Transport for tokio::net::UnixStream {
    type Reader = tokio::net::unix::OwnedReadHalf;
    type Writer = tokio::net::unix::OwnedWriteHalf;

    fn into_split(self) -> (Self::Reader, Self::Writer) {
        tokio::net::UnixStream::into_split(self)
    }

    fn peer(&self) -> PeerAddr {
        let path = self
            .peer_addr()
            .ok()
            .and_then(|addr| addr.as_pathname().map(PathBuf::from));
        PeerAddr::Unix(path)
    }
}

impl Transport for DuplexStream {
    type Reader = ReadHalf<DuplexStream>;
    type Writer = WriteHalf<DuplexStream>;

    fn into_split(self) -> (Self::Reader, Self::Writer) {
        tokio::io::split(self)
    }

    fn peer(&self) -> PeerAddr {
        PeerAddr::Memory
    }
}
