//! Which requests of a connection may run now, which wait, and which are refused: the
//! in-flight limit, the cap on streams, and the memory budgets, in one place.
//!
//! Every request read is charged its frame's bytes and a fixed overhead for its bookkeeping,
//! plus its stream window if it opened a stream the client sends (the client may fill that
//! window at once), to its connection's inbound budget and the server's. The charge is given back when the call ends, however it
//! ends. A request whose charge does not fit either budget is refused with
//! [`Error::Overloaded`](rpc_core::Error::Overloaded): memory is the hard bound.
//!
//! A request that fits the budgets but finds the connection at its in-flight limit, or at
//! its cap on streams, either waits in the connection's queue of parked requests
//! ([`Overload::Wait`], the default) or is refused at once ([`Overload::Shed`]). Parked
//! requests start, in order, as calls end. The connection reads on all the while, so a
//! cancel, a stream's credit or the client leaving is seen at once, whatever is in flight.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rpc_core::budget::Budget;
use tokio::time::Instant;

use crate::observe::ServerCall;
use crate::router::RunOn;
use crate::service::Dispatch;
use crate::stats::Counters;

/// What a connection does with a request that arrives while it is at its in-flight limit or
/// its cap on streams.
///
/// ```
/// use rpc::{Overload, Server};
/// // A server behind a balancing client that retries elsewhere: refuse at once.
/// let builder = Server::builder().overload(Overload::Shed);
/// # let _ = builder;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Overload {
    /// Park the request until a call ends (as many as the connection's inbound budget
    /// holds; beyond that they are refused). The default: a client that pipelines more calls
    /// than the server runs at once is slowed down, not failed.
    #[default]
    Wait,
    /// Refuse the request at once with `Overloaded`, so the caller can go elsewhere.
    Shed,
}

/// One connection's share of the accounting: its inbound budget and its streams.
pub(crate) struct Account {
    inbound: Budget,
    /// Calls running or parked that receive a stream from the client.
    streams: AtomicUsize,
    counters: Arc<Counters>,
}

impl Account {
    pub(crate) fn new(limit: usize, counters: Arc<Counters>) -> Arc<Self> {
        Arc::new(Account {
            inbound: Budget::new(limit),
            streams: AtomicUsize::new(0),
            counters,
        })
    }

    /// Whether `bytes` more fit both this connection's budget and the server's.
    #[inline]
    pub(crate) fn has_room(&self, bytes: usize) -> bool {
        self.inbound.has_room(bytes) && self.counters.inbound.has_room(bytes)
    }

    /// Streams this connection receives right now.
    pub(crate) fn streams(&self) -> usize {
        self.streams.load(Ordering::Relaxed)
    }

    /// Takes `bytes` (and a stream, if `stream`) until the returned charge is dropped.
    pub(crate) fn charge(self: &Arc<Self>, bytes: usize, stream: bool) -> Charge {
        self.inbound.take(bytes);
        self.counters.inbound.take(bytes);
        if stream {
            self.streams.fetch_add(1, Ordering::Relaxed);
            self.counters.streams.fetch_add(1, Ordering::Relaxed);
        }
        Charge {
            account: self.clone(),
            bytes,
            stream,
        }
    }
}

/// Bytes (and perhaps a stream) a call holds against its connection's and the server's
/// budgets; given back when dropped, with the call.
pub(crate) struct Charge {
    account: Arc<Account>,
    bytes: usize,
    stream: bool,
}

impl Drop for Charge {
    fn drop(&mut self) {
        let account = &self.account;
        account.inbound.give(self.bytes);
        account.counters.inbound.give(self.bytes);
        if self.stream {
            account.streams.fetch_sub(1, Ordering::Relaxed);
            account.counters.streams.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A request that may not start yet: its handler's future (not polled), and its charge.
pub(crate) struct Parked {
    pub(crate) id: u64,
    pub(crate) dispatch: Dispatch,
    pub(crate) deadline: Option<Instant>,
    pub(crate) run: RunOn,
    /// Whether the call receives a stream from the client.
    pub(crate) stream: bool,
    pub(crate) charge: Charge,
    /// The call's span and metrics, open since its request was read.
    pub(crate) observe: ServerCall,
}

/// The requests of one connection waiting for a call to end, oldest first.
pub(crate) struct ParkedQueue {
    queue: VecDeque<Parked>,
    /// How many of them receive a client stream.
    streams: usize,
    counters: Arc<Counters>,
}

impl ParkedQueue {
    pub(crate) fn new(counters: Arc<Counters>) -> Self {
        ParkedQueue {
            queue: VecDeque::new(),
            streams: 0,
            counters,
        }
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// How many parked requests receive a client stream.
    pub(crate) fn streams(&self) -> usize {
        self.streams
    }

    /// Whether request `id` is parked.
    #[inline]
    pub(crate) fn contains(&self, id: u64) -> bool {
        !self.queue.is_empty() && self.queue.iter().any(|parked| parked.id == id)
    }

    pub(crate) fn push(&mut self, parked: Parked) {
        self.counters.parked.fetch_add(1, Ordering::Relaxed);
        self.streams += usize::from(parked.stream);
        self.queue.push_back(parked);
    }

    /// Forgets request `id` (cancelled): its charge is given back.
    pub(crate) fn remove(&mut self, id: u64) -> bool {
        match self.queue.iter().position(|parked| parked.id == id) {
            Some(at) => {
                self.forget(at);
                true
            }
            None => false,
        }
    }

    /// The oldest parked request that `may_start` allows, taken out of the queue.
    pub(crate) fn take_next(&mut self, may_start: impl Fn(&Parked) -> bool) -> Option<Parked> {
        let at = self.queue.iter().position(may_start)?;
        self.forget(at)
    }

    fn forget(&mut self, at: usize) -> Option<Parked> {
        let parked = self.queue.remove(at)?;
        self.counters.parked.fetch_sub(1, Ordering::Relaxed);
        self.streams -= usize::from(parked.stream);
        Some(parked)
    }
}

impl Drop for ParkedQueue {
    fn drop(&mut self) {
        self.counters
            .parked
            .fetch_sub(self.queue.len(), Ordering::Relaxed);
    }
}
