//! Live counters a [`ServerHandle`](crate::ServerHandle) reads: open connections, calls in
//! flight, and the server's memory accounting ([`Accounting`]). Each is counted by a guard
//! that counts itself in when created and out when dropped, so a call aborted by a cancel or
//! a closing connection is counted out too.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rpc_core::budget::Budget;

use crate::config::ServerConfig;

#[derive(Debug)]
pub(crate) struct Counters {
    connections: AtomicUsize,
    in_flight: AtomicUsize,
    /// Bytes of requests and client streams held, over all connections.
    pub(crate) inbound: Budget,
    /// Bytes of replies queued to be written, over all connections.
    pub(crate) outbound: Arc<Budget>,
    /// Calls receiving a stream from their client, over all connections.
    pub(crate) streams: AtomicUsize,
    /// Requests waiting for a call to end, over all connections.
    pub(crate) parked: AtomicUsize,
}

impl Counters {
    pub(crate) fn new(config: &ServerConfig) -> Self {
        Counters {
            connections: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            inbound: Budget::new(config.max_inbound_bytes),
            outbound: Arc::new(Budget::new(config.max_outbound_bytes)),
            streams: AtomicUsize::new(0),
            parked: AtomicUsize::new(0),
        }
    }

    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn accounting(&self) -> Accounting {
        Accounting {
            connections: self.connections(),
            in_flight: self.in_flight(),
            inbound_bytes: self.inbound.used(),
            outbound_bytes: self.outbound.used(),
            streams: self.streams.load(Ordering::Relaxed),
            parked: self.parked.load(Ordering::Relaxed),
        }
    }
}

/// What a server holds for its clients right now, summed over its connections: a snapshot
/// from [`ServerHandle::accounting`](crate::ServerHandle::accounting). Every figure is back
/// to zero once the connections have closed.
///
/// ```
/// # async fn demo(handle: rpc::ServerHandle) {
/// let held = handle.accounting();
/// println!("{} bytes in, {} bytes out, {} streams", held.inbound_bytes, held.outbound_bytes, held.streams);
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Accounting {
    /// Connections open.
    pub connections: usize,
    /// Calls running (not counting the ones that finished in their first poll).
    pub in_flight: usize,
    /// Bytes of requests held by calls running or parked, plus the stream windows reserved
    /// for streams the clients send: at most `ServerConfig::max_inbound_bytes`.
    pub inbound_bytes: usize,
    /// Bytes of replies and stream items queued to be written: producers wait while it is at
    /// `ServerConfig::max_outbound_bytes`.
    pub outbound_bytes: usize,
    /// Calls receiving a stream from their client, running or parked.
    pub streams: usize,
    /// Requests waiting for a call of their connection to end.
    pub parked: usize,
}

/// Counts one open connection while it lives.
pub(crate) struct ConnectionGuard(Arc<Counters>);

impl ConnectionGuard {
    pub(crate) fn new(counters: Arc<Counters>) -> Self {
        counters.connections.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(counters)
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts one call in flight while it lives.
pub(crate) struct CallGuard(Arc<Counters>);

impl CallGuard {
    pub(crate) fn new(counters: &Arc<Counters>) -> Self {
        counters.in_flight.fetch_add(1, Ordering::Relaxed);
        CallGuard(counters.clone())
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
