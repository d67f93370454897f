//! Live counters a [`ServerHandle`](crate::ServerHandle) reads: open connections and calls in
//! flight. Each is a guard that counts itself in when created and out when dropped, so a
//! call aborted by a cancel or a closing connection is counted out too.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Debug, Default)]
pub(crate) struct Counters {
    connections: AtomicUsize,
    in_flight: AtomicUsize,
}

impl Counters {
    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
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
