//! Byte budgets that many connections draw on together: how a server bounds what all of its
//! connections hold at once, not just what each holds.
//!
//! A [`Budget`] counts bytes in use against a limit. Whoever holds bytes takes them from the
//! budget and gives them back when it lets them go; whoever wants to add bytes first asks
//! whether there is room ([`Budget::has_room`]) or waits for it ([`Budget::room`]). Checks
//! and takes are separate atomic steps, so several connections checking at the same moment
//! may together overshoot the limit by one message each; nothing grows past that.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Bytes in use against a limit, shared by every connection that draws on it.
///
/// ```
/// use rpc_core::budget::Budget;
/// let budget = Budget::new(100);
/// assert!(budget.has_room(100));
/// budget.take(60);
/// assert!(!budget.has_room(41));
/// budget.give(60);
/// assert_eq!(budget.used(), 0);
/// ```
#[derive(Debug)]
pub struct Budget {
    used: AtomicUsize,
    limit: usize,
    freed: Notify,
}

impl Budget {
    /// A budget of `limit` bytes, none in use.
    pub fn new(limit: usize) -> Self {
        Budget {
            used: AtomicUsize::new(0),
            limit,
            freed: Notify::new(),
        }
    }

    /// The limit.
    #[inline]
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes in use now.
    #[inline]
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Whether `bytes` more fit under the limit.
    #[inline]
    pub fn has_room(&self, bytes: usize) -> bool {
        self.used().saturating_add(bytes) <= self.limit
    }

    /// Whether the limit is reached: nothing more may be added until bytes are given back.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.used() >= self.limit
    }

    /// Counts `bytes` as in use, room or not (the caller checked, or must not wait).
    #[inline]
    pub fn take(&self, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Gives back `bytes` taken earlier, and wakes whoever waits for room.
    #[inline]
    pub fn give(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let before = self.used.fetch_sub(bytes, Ordering::Relaxed);
        debug_assert!(before >= bytes, "gave back more than was taken");
        if before >= self.limit {
            self.freed.notify_waiters();
        }
    }

    /// Waits until the budget is below its limit.
    pub async fn room(&self) {
        loop {
            // Created before the check: a give from here on wakes it.
            let freed = self.freed.notified();
            if !self.is_full() {
                return;
            }
            freed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_waiter_wakes_when_bytes_come_back() {
        let budget = Arc::new(Budget::new(10));
        budget.take(10);
        let mut waiting = Box::pin(budget.room());
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        budget.give(1);
        waiting.await;
        assert_eq!(budget.used(), 9);
    }
}
