//! Where connections come from: a TCP listener, a Unix socket listener, or in-memory pipes.

use std::io;
use std::net::SocketAddr;

use tokio::io::DuplexStream;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

pub(crate) enum Listener {
    Tcp(TcpListener),
    #[cfg(unix)]
    Unix(tokio::net::UnixListener),
    Memory(mpsc::Receiver<DuplexStream>),
}

pub(crate) enum Accepted {
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
    Memory(DuplexStream),
}

impl Listener {
    pub(crate) async fn accept(&mut self) -> io::Result<Accepted> {
        match self {
            Listener::Tcp(listener) => {
                let (stream, _) = listener.accept().await?;
                // Small calls must not wait for Nagle's algorithm.
                stream.set_nodelay(true)?;
                Ok(Accepted::Tcp(stream))
            }
            #[cfg(unix)]
            Listener::Unix(listener) => Ok(Accepted::Unix(listener.accept().await?.0)),
            Listener::Memory(incoming) => match incoming.recv().await {
                Some(stream) => Ok(Accepted::Memory(stream)),
                // Every connector is gone: nothing more can arrive; wait for shutdown.
                None => std::future::pending().await,
            },
        }
    }

    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Listener::Tcp(listener) => listener.local_addr().ok(),
            _ => None,
        }
    }
}

/// Opens in-memory connections to a server built with
/// [`ServerBuilder::memory`](crate::ServerBuilder::memory): no sockets, no ports; for tests.
#[derive(Debug, Clone)]
pub struct MemoryConnector {
    incoming: mpsc::Sender<DuplexStream>,
}

/// Bytes buffered in each direction of an in-memory connection.
const MEMORY_PIPE_BYTES: usize = 256 * 1024;

/// How many in-memory connections may wait to be accepted.
pub(crate) const MEMORY_BACKLOG: usize = 128;

impl MemoryConnector {
    pub(crate) fn new(incoming: mpsc::Sender<DuplexStream>) -> Self {
        MemoryConnector { incoming }
    }

    /// Opens a connection; the server accepts the other end. Fails once the server is gone.
    pub async fn connect(&self) -> io::Result<DuplexStream> {
        let (client, server) = tokio::io::duplex(MEMORY_PIPE_BYTES);
        self.incoming.send(server).await.map_err(|_| {
            io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "the in-memory server has stopped",
            )
        })?;
        Ok(client)
    }
}
