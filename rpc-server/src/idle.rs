//! The idle timer: closes a connection that had no call in flight and no incoming frame for
//! `ServerConfig::idle_timeout`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// When the connection was last active, and one timer for its whole life.
///
/// Activity only records an instant ([`touch`](Self::touch)); the timer is moved on only
/// when it fires early (there was traffic since), so a call costs it nothing.
pub(crate) struct IdleTimer {
    limit: Option<Duration>,
    last_active: Instant,
    /// `None` without a limit (or with one too far to represent).
    sleep: Option<Pin<Box<Sleep>>>,
}

impl IdleTimer {
    /// A timer that fires `limit` after now, or after the last activity; `None` never fires.
    pub(crate) fn new(limit: Option<Duration>) -> Self {
        let now = Instant::now();
        let sleep = limit
            .and_then(|limit| now.checked_add(limit))
            .map(|at| Box::pin(tokio::time::sleep_until(at)));
        IdleTimer {
            limit,
            last_active: now,
            sleep,
        }
    }

    /// Records activity at `now`.
    #[inline]
    pub(crate) fn touch(&mut self, now: Instant) {
        self.last_active = now;
    }

    /// Ready once the connection has been idle for the limit. Poll it only while no call is
    /// in flight (a running call is activity).
    pub(crate) fn poll_expired(&mut self, cx: &mut TaskContext<'_>) -> Poll<()> {
        let Some(sleep) = &mut self.sleep else {
            return Poll::Pending;
        };
        loop {
            std::task::ready!(sleep.as_mut().poll(cx));
            match self
                .limit
                .and_then(|limit| self.last_active.checked_add(limit))
            {
                // Fired early: there was activity since it was set. The next poll registers
                // the new instant.
                Some(due) if due > Instant::now() => sleep.as_mut().reset(due),
                _ => return Poll::Ready(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noop() -> TaskContext<'static> {
        TaskContext::from_waker(futures::task::noop_waker_ref())
    }

    #[tokio::test(start_paused = true)]
    async fn it_fires_a_full_limit_after_the_last_activity() {
        let limit = Duration::from_secs(10);
        let mut idle = IdleTimer::new(Some(limit));
        let mut cx = noop();
        assert!(idle.poll_expired(&mut cx).is_pending());
        tokio::time::advance(Duration::from_secs(6)).await;
        idle.touch(Instant::now());
        // The original instant passes, but there was activity since.
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(idle.poll_expired(&mut cx).is_pending());
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(idle.poll_expired(&mut cx).is_ready());
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_limit_it_never_fires() {
        let mut idle = IdleTimer::new(None);
        tokio::time::advance(Duration::from_secs(365 * 24 * 3600)).await;
        assert!(idle.poll_expired(&mut noop()).is_pending());
    }
}
