//! The waker a connection's calls get while the connection's own task polls them.
//!
//! A call waiting on something the connection itself delivers (a stream's credit, the next
//! item of a client stream) is woken by the connection's task, in the middle of its turn.
//! With the task's own waker, that wake would reschedule the task that is already running:
//! tokio then puts it back as a yield, which wakes an idle worker to come and steal, and the
//! task is polled once more for nothing. With a [`TurnWaker`], a wake during the turn only
//! notes that the calls must be polled again before the turn ends (the turn does so); a wake
//! from anywhere else, or after the turn, wakes the task as usual.
//!
//! ```text
//! turn:  begin ─ poll calls ─ read frames (a credit wakes a call: noted) ─ poll calls ─ end
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Wake, Waker};

use futures::task::AtomicWaker;

/// Shared by a connection's task and every waker it hands its calls.
#[derive(Default)]
pub(crate) struct TurnWaker {
    /// Whether the connection's task is in a turn, and will poll its calls again if asked.
    in_turn: AtomicBool,
    /// Set by a wake; taken by the turn before its last poll of the calls.
    woken: AtomicBool,
    /// The connection's task.
    task: AtomicWaker,
}

impl TurnWaker {
    /// A waker for the calls of a connection; all of them share `self`.
    pub(crate) fn new() -> (Arc<Self>, Waker) {
        let shared = Arc::new(TurnWaker::default());
        let waker = Waker::from(shared.clone());
        (shared, waker)
    }

    /// Starts a turn of the task whose waker is `task`: wakes from now on are noted, until
    /// the returned guard is dropped.
    pub(crate) fn begin(&self, task: &Waker) -> Turn<'_> {
        self.task.register(task);
        self.in_turn.store(true, Ordering::SeqCst);
        Turn { shared: self }
    }
}

impl Wake for TurnWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        // Read after the store: a turn that ends now either sees `woken` or is seen ended.
        if !self.in_turn.load(Ordering::SeqCst) {
            self.task.wake();
        }
    }
}

/// A turn in progress. Dropped, it ends the turn; a wake it has not taken then wakes the
/// task, so none is lost on any way out of the turn.
pub(crate) struct Turn<'a> {
    shared: &'a TurnWaker,
}

impl Turn<'_> {
    /// Forgets the wakes so far: done just before the calls are polled, which sees them.
    #[inline]
    pub(crate) fn clear(&self) {
        self.shared.woken.store(false, Ordering::SeqCst);
    }

    /// Whether a call was woken since the last [`clear`](Self::clear): then the calls must
    /// be polled again before the turn ends.
    #[inline]
    pub(crate) fn woken(&self) -> bool {
        self.shared.woken.load(Ordering::SeqCst)
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.shared.in_turn.store(false, Ordering::SeqCst);
        // Read after the store: a wake either sees the turn ended (and wakes the task
        // itself) or is seen here.
        if self.shared.woken.swap(false, Ordering::SeqCst) {
            self.shared.task.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A task waker that counts its wakes.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn task() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (count.clone(), Waker::from(count))
    }

    #[test]
    fn a_wake_during_the_turn_is_noted_not_sent_to_the_task() {
        let (count, task) = task();
        let (shared, waker) = TurnWaker::new();
        let turn = shared.begin(&task);
        turn.clear();
        waker.wake_by_ref();
        assert!(turn.woken());
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        // The turn polls its calls again, which takes the wake.
        turn.clear();
        drop(turn);
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_wake_the_turn_did_not_take_wakes_the_task_when_it_ends() {
        let (count, task) = task();
        let (shared, waker) = TurnWaker::new();
        let turn = shared.begin(&task);
        waker.wake_by_ref();
        // Left by an early return, before the calls were polled again.
        drop(turn);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_wake_outside_a_turn_wakes_the_task() {
        let (count, task) = task();
        let (shared, waker) = TurnWaker::new();
        drop(shared.begin(&task));
        waker.wake();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn wakes_from_another_thread_are_never_lost() {
        // Whatever the interleaving, a wake is seen by the turn or reaches the task.
        for _ in 0..200 {
            let (count, task) = task();
            let (shared, waker) = TurnWaker::new();
            let turn = shared.begin(&task);
            turn.clear();
            let other = std::thread::spawn(move || waker.wake());
            let seen_in_turn = turn.woken();
            if seen_in_turn {
                turn.clear();
            }
            drop(turn);
            other.join().expect("waker thread");
            let seen = seen_in_turn || count.0.load(Ordering::SeqCst) > 0;
            assert!(seen, "a wake was lost");
        }
    }
}
