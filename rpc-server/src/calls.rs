//! The table of one connection's calls in flight: the ones still pending after their first
//! poll, or running as tasks of their own.
//!
//! Most calls finish in their first poll and never enter the table, so it is usually empty,
//! and the checks on the hot path ([`contains`](CallTable::contains)) test that first. The
//! table only grows as far as `ServerConfig::max_in_flight_per_connection`: requests beyond
//! it are parked or refused (see [`admission`](crate::admission)).

use std::task::{Context as TaskContext, Poll};

use futures::future::{AbortHandle, Abortable};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use rpc_core::ids::PeerIdMap;
use rpc_core::Error;

use crate::call::Running;

/// One connection's calls in flight, by request id. Dropping the table drops every call in
/// it (aborting those that run as tasks).
#[derive(Default)]
pub(crate) struct CallTable {
    /// Polled together: the connection's task is woken when any of them can move.
    calls: FuturesUnordered<Abortable<Running>>,
    /// How to stop each call, for `Cancel`.
    by_id: PeerIdMap<u64, AbortHandle>,
}

/// A call that ended: its request id, and the error to send for it if it did not reply.
pub(crate) type Finished = (u64, Option<Error>);

impl CallTable {
    /// Calls in flight; what the in-flight limit counts.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.calls.len()
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Whether call `id` is in flight.
    #[inline]
    pub(crate) fn contains(&self, id: u64) -> bool {
        // Usually empty: then there is nothing to hash.
        !self.by_id.is_empty() && self.by_id.contains_key(&id)
    }

    /// Adds call `id`. The caller has checked that `id` is not in flight.
    pub(crate) fn insert(&mut self, id: u64, call: Running) {
        let (call, stop) = futures::future::abortable(call);
        self.calls.push(call);
        self.by_id.insert(id, stop);
    }

    /// Stops call `id` and forgets it: its handler is dropped (its task aborted), and no
    /// response is sent for it. Unknown ids are fine: the call may have just finished.
    pub(crate) fn cancel(&mut self, id: u64) {
        if let Some(stop) = self.by_id.remove(&id) {
            stop.abort();
        }
    }

    /// The next call that ended, if one has; otherwise `None`, and the task is woken when
    /// one does. Cancelled calls were forgotten when cancelled and are passed over.
    pub(crate) fn poll_finished(&mut self, cx: &mut TaskContext<'_>) -> Option<Finished> {
        // An empty set would not register the waker, and nothing in it could end anyway.
        while !self.calls.is_empty() {
            match self.calls.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok((id, failure)))) => {
                    // The reply is queued (or the failure sent) before anything else is read,
                    // so no request reusing this id can arrive in between.
                    self.by_id.remove(&id);
                    return Some((id, failure));
                }
                Poll::Ready(Some(Err(_cancelled))) => {}
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        None
    }
}
