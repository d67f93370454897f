//! Deadlines that cost nothing until something has to wait.
//!
//! Most work a call waits for (a permit, room in the write buffer, a handler) is ready at its
//! first poll. [`Timer`] arms a tokio timer only at the first poll that finds the work still
//! pending, and [`Deadline`] wraps a future in one, the way tower's `timeout::ResponseFuture`
//! does: the client's waits, its reply streams and the server's calls all use these two.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use tokio::time::{Instant, Sleep};

use crate::error::Error;

/// A deadline whose timer is created only when first needed.
#[derive(Debug)]
pub struct Timer {
    deadline: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Timer {
    /// A timer for `deadline`; `None` never fires.
    #[inline]
    pub fn new(deadline: Option<Instant>) -> Self {
        Timer {
            deadline,
            sleep: None,
        }
    }

    /// The instant this timer fires at, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Ready once the deadline has passed. Call it only after the work it guards returned
    /// `Pending`: the first call arms the timer and registers `cx` with it.
    #[inline]
    pub fn poll_expired(&mut self, cx: &mut TaskContext<'_>) -> Poll<()> {
        let Some(at) = self.deadline else {
            return Poll::Pending;
        };
        self.sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)))
            .as_mut()
            .poll(cx)
    }
}

/// `future`, failed with [`Error::DeadlineExceeded`] if it is not done by the deadline.
///
/// `F` must be `Unpin`: pin an `async` block first (`std::pin::pin!` or `Box::pin`).
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// use std::time::Duration;
/// use rpc_core::deadline::Deadline;
/// use tokio::time::Instant;
///
/// let soon = Some(Instant::now() + Duration::from_millis(10));
/// let ready = Deadline::new(std::future::ready(7), soon).await;
/// assert_eq!(ready.expect("in time"), 7);
///
/// let never = Deadline::new(std::future::pending::<()>(), soon).await;
/// assert!(matches!(never, Err(rpc_core::Error::DeadlineExceeded)));
/// # }
/// ```
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Deadline<F> {
    future: F,
    timer: Timer,
}

impl<F: Future + Unpin> Deadline<F> {
    /// Runs `future` until `deadline` (`None`: no deadline).
    pub fn new(future: F, deadline: Option<Instant>) -> Self {
        Deadline {
            future,
            timer: Timer::new(deadline),
        }
    }
}

impl<F: Future + Unpin> Future for Deadline<F> {
    type Output = Result<F::Output, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        // Both fields are Unpin.
        let this = self.get_mut();
        if let Poll::Ready(output) = Pin::new(&mut this.future).poll(cx) {
            return Poll::Ready(Ok(output));
        }
        this.timer
            .poll_expired(cx)
            .map(|()| Err(Error::DeadlineExceeded))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn no_timer_is_armed_for_work_ready_at_once() {
        let mut timer = Timer::new(Some(Instant::now() + Duration::from_secs(1)));
        let deadline = Deadline::new(std::future::ready(()), timer.deadline());
        deadline.await.expect("ready");
        assert!(timer.sleep.is_none());
        // Armed by the first poll, and it fires at the deadline, not before.
        let waker = futures::task::noop_waker();
        let mut cx = TaskContext::from_waker(&waker);
        assert!(timer.poll_expired(&mut cx).is_pending());
        assert!(timer.sleep.is_some());
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(timer.poll_expired(&mut cx).is_pending());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(timer.poll_expired(&mut cx).is_ready());
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_deadline_it_waits_as_long_as_the_work() {
        let (tx, rx) = tokio::sync::oneshot::channel::<u8>();
        let waiting = tokio::spawn(Deadline::new(rx, None));
        tokio::time::advance(Duration::from_secs(3600)).await;
        tx.send(5).expect("send");
        let got = waiting.await.expect("join").expect("no deadline");
        assert_eq!(got.expect("sent"), 5);
    }
}
