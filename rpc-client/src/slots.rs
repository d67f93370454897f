//! The table of calls waiting for their reply: a slab of reusable slots.
//!
//! A call takes a free slot, and its request id names the slot: the low 32 bits are the
//! slot's index, the high 32 bits the slot's generation, which advances every time the slot
//! is freed. So a reply is routed by indexing, not hashing, and a late reply for a call that
//! was cancelled (its slot since reused) carries the old generation and is dropped instead
//! of reaching the wrong caller. The reply waits in the slot until the caller polls it: no
//! channel is allocated per call.
//!
//! The table only grows as far as the number of calls in flight at once, which the
//! connection bounds (`ClientConfig::max_in_flight`).

use std::task::{Poll, Waker};

use bytes::Bytes;
use rpc_core::message::Status;
use rpc_core::Error;
use tokio::time::Instant;

/// What a waiting call receives: the response status and body, or why there is none.
pub(crate) type Reply = Result<(Status, Bytes), Error>;

#[derive(Default)]
pub(crate) struct Slots {
    entries: Vec<Entry>,
    /// Indices of free entries, reused last-freed first (its memory is warm).
    free: Vec<u32>,
    /// Entries not free: calls waiting, or replies not yet taken.
    live: usize,
    /// Waiting calls whose deadline the connection enforces.
    swept: usize,
}

struct Entry {
    generation: u32,
    state: State,
}

enum State {
    Free,
    Waiting {
        waker: Option<Waker>,
        /// Set when the connection's sweep enforces the call's deadline.
        deadline: Option<Instant>,
    },
    Ready(Reply),
}

/// What [`Slots::remove`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Removed {
    /// The call was still waiting: the server may still be running it.
    Waiting,
    /// Its reply had arrived, or the id was unknown: nothing is running.
    Settled,
}

/// The request id of use `generation` of slot `index`.
fn join(index: u32, generation: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(index)
}

/// The slot index and generation a request id names.
fn split(id: u64) -> (usize, u32) {
    // Both halves by construction; truncation is the point.
    ((id & 0xFFFF_FFFF) as usize, (id >> 32) as u32)
}

impl Slots {
    /// Takes a slot for a new call and returns its request id. With `deadline`, the call is
    /// failed by [`expire`](Self::expire) once that instant passes.
    pub(crate) fn insert(&mut self, deadline: Option<Instant>) -> u64 {
        let waiting = State::Waiting {
            waker: None,
            deadline,
        };
        let index = match self.free.pop() {
            Some(index) => {
                self.entries[index as usize].state = waiting;
                index
            }
            None => {
                // The table never outgrows the in-flight bound, far below u32::MAX.
                let index = u32::try_from(self.entries.len()).unwrap_or(u32::MAX);
                self.entries.push(Entry {
                    generation: 0,
                    state: waiting,
                });
                index
            }
        };
        self.live += 1;
        if deadline.is_some() {
            self.swept += 1;
        }
        join(index, self.entries[index as usize].generation)
    }

    /// The entry for `id`, if it is the current use of its slot.
    fn entry(&mut self, id: u64) -> Option<&mut Entry> {
        let (index, generation) = split(id);
        self.entries
            .get_mut(index)
            .filter(|entry| entry.generation == generation)
    }

    /// Stores the reply for a waiting call and returns the waker to wake once the table is
    /// unlocked. Replies for calls no longer waiting (cancelled, timed out) are dropped.
    pub(crate) fn fill(&mut self, id: u64, reply: Reply) -> Option<Waker> {
        let entry = self.entry(id)?;
        let State::Waiting { waker, deadline } = &mut entry.state else {
            return None;
        };
        let waker = waker.take();
        let swept = deadline.is_some();
        entry.state = State::Ready(reply);
        if swept {
            self.swept -= 1;
        }
        waker
    }

    /// Takes the call's reply if it has arrived, freeing the slot; otherwise remembers
    /// `waker` to be woken when it does.
    pub(crate) fn poll(&mut self, id: u64, waker: &Waker) -> Poll<Reply> {
        let Some(entry) = self.entry(id) else {
            return Poll::Ready(Err(Error::closed("the call was forgotten")));
        };
        match &mut entry.state {
            State::Waiting {
                waker: Some(stored),
                ..
            } if stored.will_wake(waker) => Poll::Pending,
            State::Waiting { waker: stored, .. } => {
                *stored = Some(waker.clone());
                Poll::Pending
            }
            State::Ready(_) => match self.release(id) {
                Some(State::Ready(reply)) => Poll::Ready(reply),
                _ => Poll::Ready(Err(Error::closed("the call was forgotten"))),
            },
            State::Free => Poll::Ready(Err(Error::closed("the call was forgotten"))),
        }
    }

    /// Frees the call's slot, whatever its state.
    pub(crate) fn remove(&mut self, id: u64) -> Removed {
        match self.release(id) {
            Some(State::Waiting { .. }) => Removed::Waiting,
            _ => Removed::Settled,
        }
    }

    /// Frees the slot of `id` and returns what it held.
    fn release(&mut self, id: u64) -> Option<State> {
        let entry = self.entry(id)?;
        if matches!(entry.state, State::Free) {
            return None;
        }
        let state = std::mem::replace(&mut entry.state, State::Free);
        entry.generation = entry.generation.wrapping_add(1);
        let (index, _) = split(id);
        // `index` came from this table, so it fits.
        self.free.push(index as u32);
        self.live -= 1;
        if let State::Waiting {
            deadline: Some(_), ..
        } = state
        {
            self.swept -= 1;
        }
        Some(state)
    }

    /// Fails every waiting call with `err`; returns the wakers to wake after unlocking.
    pub(crate) fn fail_all(&mut self, err: &Error) -> Vec<Waker> {
        let mut wakers = Vec::new();
        for entry in &mut self.entries {
            if let State::Waiting { waker, .. } = &mut entry.state {
                wakers.extend(waker.take());
                entry.state = State::Ready(Err(err.clone()));
            }
        }
        self.swept = 0;
        wakers
    }

    /// Fails every swept call whose deadline has passed with [`Error::DeadlineExceeded`];
    /// returns their ids (the server should stop them) and the wakers to wake.
    pub(crate) fn expire(&mut self, now: Instant) -> (Vec<u64>, Vec<Waker>) {
        let mut ids = Vec::new();
        let mut wakers = Vec::new();
        for (index, entry) in (0u32..).zip(self.entries.iter_mut()) {
            let State::Waiting {
                waker,
                deadline: Some(deadline),
            } = &mut entry.state
            else {
                continue;
            };
            if *deadline > now {
                continue;
            }
            wakers.extend(waker.take());
            entry.state = State::Ready(Err(Error::DeadlineExceeded));
            self.swept -= 1;
            ids.push(join(index, entry.generation));
        }
        (ids, wakers)
    }

    /// Calls waiting, or whose reply is not yet taken.
    pub(crate) fn live(&self) -> usize {
        self.live
    }

    /// Waiting calls with a deadline the connection enforces.
    pub(crate) fn swept(&self) -> usize {
        self.swept
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ok(byte: u8) -> Reply {
        Ok((Status::Ok, Bytes::from(vec![byte])))
    }

    fn body(poll: Poll<Reply>) -> u8 {
        match poll {
            Poll::Ready(Ok((Status::Ok, body))) => body[0],
            _ => panic!("expected an ok reply"),
        }
    }

    #[test]
    fn a_reply_reaches_its_call_and_frees_the_slot() {
        let mut slots = Slots::default();
        let a = slots.insert(None);
        let b = slots.insert(None);
        assert_ne!(a, b);
        assert!(slots.poll(a, Waker::noop()).is_pending());
        assert!(slots.fill(b, ok(2)).is_none(), "b never polled: no waker");
        assert!(
            slots.fill(a, ok(1)).is_some(),
            "a polled: its waker comes back"
        );
        assert_eq!(body(slots.poll(b, Waker::noop())), 2);
        assert_eq!(body(slots.poll(a, Waker::noop())), 1);
        assert_eq!(slots.live(), 0);
    }

    #[test]
    fn a_reused_slot_ignores_the_late_reply_of_its_previous_call() {
        let mut slots = Slots::default();
        let old = slots.insert(None);
        assert_eq!(slots.remove(old), Removed::Waiting);
        let new = slots.insert(None);
        assert_ne!(old, new, "same slot, new generation");
        assert_eq!(old & 0xFFFF_FFFF, new & 0xFFFF_FFFF, "the slot is reused");
        assert!(slots.fill(old, ok(1)).is_none());
        assert!(slots.poll(new, Waker::noop()).is_pending());
        slots.fill(new, ok(2));
        assert_eq!(body(slots.poll(new, Waker::noop())), 2);
        assert_eq!(slots.remove(old), Removed::Settled);
    }

    #[test]
    fn removing_a_settled_call_asks_for_no_cancel() {
        let mut slots = Slots::default();
        let id = slots.insert(None);
        slots.fill(id, ok(1));
        assert_eq!(slots.remove(id), Removed::Settled);
        assert_eq!(slots.live(), 0);
    }

    #[test]
    fn the_table_grows_only_to_the_calls_in_flight_at_once() {
        let mut slots = Slots::default();
        for round in 0..100u8 {
            let ids: Vec<u64> = (0..8).map(|_| slots.insert(None)).collect();
            for &id in &ids {
                slots.fill(id, ok(round));
                assert_eq!(body(slots.poll(id, Waker::noop())), round);
            }
        }
        assert_eq!(slots.entries.len(), 8);
        assert_eq!(slots.live(), 0);
    }

    #[test]
    fn expire_fails_only_swept_calls_past_their_deadline() {
        let mut slots = Slots::default();
        let now = Instant::now();
        let late = slots.insert(Some(now));
        let later = slots.insert(Some(now + Duration::from_secs(60)));
        let unswept = slots.insert(None);
        assert_eq!(slots.swept(), 2);
        let (ids, _) = slots.expire(now);
        assert_eq!(ids, vec![late]);
        assert_eq!(slots.swept(), 1);
        assert!(matches!(
            slots.poll(late, Waker::noop()),
            Poll::Ready(Err(Error::DeadlineExceeded))
        ));
        assert!(slots.poll(later, Waker::noop()).is_pending());
        assert!(slots.poll(unswept, Waker::noop()).is_pending());
        assert_eq!(slots.remove(later), Removed::Waiting);
        assert_eq!(slots.swept(), 0);
    }

    #[test]
    fn fail_all_settles_every_waiting_call() {
        let mut slots = Slots::default();
        let a = slots.insert(Some(Instant::now()));
        let b = slots.insert(None);
        slots.fill(b, ok(1));
        let _ = slots.fail_all(&Error::closed("gone"));
        assert_eq!(slots.swept(), 0);
        assert!(matches!(
            slots.poll(a, Waker::noop()),
            Poll::Ready(Err(Error::ConnectionClosed { .. }))
        ));
        assert_eq!(body(slots.poll(b, Waker::noop())), 1);
    }
}
