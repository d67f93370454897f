//! Keepalive: noticing a peer that vanished without closing the connection.
//!
//! A host that loses power or a cable sends no FIN: its connections look open until TCP gives
//! up, which takes many minutes. So each side pings a connection it has heard nothing on
//! for an interval ([`Header::Ping`](crate::message::Header::Ping)), and the other side
//! answers at once with a [`Header::Pong`](crate::message::Header::Pong). A peer that sends
//! nothing at all, pong included, within the timeout after a ping is declared dead: the
//! client fails the connection's calls at once and redials on the next call; the server
//! closes the connection, which aborts its calls.
//!
//! What counts as hearing from the peer is any frame read, not a call: a connection whose
//! calls run long with no traffic is pinged like an idle one. Nothing is measured per frame:
//! the reader only raises a flag, and a [`Keepalive`] ticker, one timer per connection,
//! looks at the flag once per interval. So the first ping goes out between one and two
//! intervals after the last frame read, and the peer is declared dead `timeout` after that
//! ping. With the defaults ([`DEFAULT_INTERVAL`] 10 s, [`DEFAULT_TIMEOUT`] 20 s) a vanished
//! peer is noticed 30 to 40 s after its last frame.
//!
//! The pong is skipped when the connection's write buffer is above its high-water mark:
//! the peer reads the queued frames before the pong would have arrived, and they tell it as
//! much. So a peer that floods pings and reads nothing cannot grow the buffer.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// How long a connection may be silent before it is pinged, unless configured: 10 s.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// How long after a ping a silent peer is declared dead, unless configured: 20 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

/// The shortest interval and timeout used; shorter settings are raised to it, so a zero
/// does not make the ticker spin.
pub const MIN_PERIOD: Duration = Duration::from_millis(1);

/// An instant too far to reach: where a timer that cannot be represented is parked.
const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);

/// What the connection must do after a tick of its [`Keepalive`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    /// Send a ping with this payload.
    Ping(u64),
    /// The peer sent nothing for the timeout after a ping: close the connection.
    Dead {
        /// The timeout that passed, for the error and the log.
        timeout: Duration,
    },
}

/// The keepalive ticker of one connection: one timer for the connection's life, moved on
/// each time it fires.
///
/// The reader records that it read something (a flag: the ticker takes it, and clears it,
/// through the closure given to [`poll_tick`](Self::poll_tick)); the ticker never reads
/// the clock except when its timer fires. Between firings, a poll from the task that
/// armed the timer costs one atomic load: the connections poll it on every wake-up.
#[derive(Debug)]
pub struct Keepalive {
    interval: Duration,
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    /// The waker the timer holds, once it was polled since it was last reset: until the
    /// timer fires, polling it again for the same task is needless.
    armed: Option<Waker>,
    /// When the unanswered ping went out; `None` while nothing is outstanding.
    ping_sent: Option<Instant>,
    /// Payload of the last ping sent.
    pings: u64,
}

impl Keepalive {
    /// A ticker that pings after `interval` of silence and declares the peer dead `timeout`
    /// after the ping; `None` (no ticker) when `interval` is `None`.
    pub fn new(interval: Option<Duration>, timeout: Duration) -> Option<Keepalive> {
        let interval = interval?.max(MIN_PERIOD);
        let now = Instant::now();
        Some(Keepalive {
            interval,
            timeout: timeout.max(MIN_PERIOD),
            sleep: Box::pin(tokio::time::sleep_until(later(now, interval))),
            armed: None,
            ping_sent: None,
            pings: 0,
        })
    }

    /// Ready when the connection must act: ping, or give the peer up. Between those, the
    /// timer fires once per interval (and at the end of the timeout after a ping) and calls
    /// `heard`, which says whether anything was read since it was last called.
    ///
    /// After [`Tick::Dead`] the connection is to be closed; polling again starts a new
    /// timeout.
    pub fn poll_tick(
        &mut self,
        cx: &mut TaskContext<'_>,
        mut heard: impl FnMut() -> bool,
    ) -> Poll<Tick> {
        if let Some(waker) = &self.armed {
            if !self.sleep.is_elapsed() && waker.will_wake(cx.waker()) {
                return Poll::Pending;
            }
        }
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                self.armed = Some(cx.waker().clone());
                return Poll::Pending;
            }
            self.armed = None;
            let now = Instant::now();
            if heard() {
                // The peer is there (the pong, or anything else, arrived).
                self.ping_sent = None;
                self.sleep.as_mut().reset(later(now, self.interval));
                continue;
            }
            match self.ping_sent {
                None => {
                    self.ping_sent = Some(now);
                    self.pings = self.pings.wrapping_add(1);
                    // Look again after an interval, or when the timeout ends if sooner.
                    let next = later(now, self.interval.min(self.timeout));
                    self.sleep.as_mut().reset(next);
                    return Poll::Ready(Tick::Ping(self.pings));
                }
                Some(sent) => {
                    let dead_at = later(sent, self.timeout);
                    if now >= dead_at {
                        self.ping_sent = None;
                        self.sleep.as_mut().reset(later(now, self.interval));
                        return Poll::Ready(Tick::Dead {
                            timeout: self.timeout,
                        });
                    }
                    self.sleep
                        .as_mut()
                        .reset(later(now, self.interval).min(dead_at));
                }
            }
        }
    }

    /// [`poll_tick`](Self::poll_tick) as a future.
    pub async fn tick(&mut self, mut heard: impl FnMut() -> bool) -> Tick {
        std::future::poll_fn(|cx| self.poll_tick(cx, &mut heard)).await
    }

    /// The timeout after a ping.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// `at + by`, or an instant decades away when that cannot be represented.
fn later(at: Instant, by: Duration) -> Instant {
    at.checked_add(by)
        .or_else(|| at.checked_add(FAR))
        .unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_millis(100);
    const TIMEOUT: Duration = Duration::from_millis(300);

    fn poll(keepalive: &mut Keepalive, heard: bool) -> Poll<Tick> {
        let mut cx = TaskContext::from_waker(futures::task::noop_waker_ref());
        keepalive.poll_tick(&mut cx, || heard)
    }

    fn ticker() -> Keepalive {
        Keepalive::new(Some(INTERVAL), TIMEOUT).expect("enabled")
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_pinged_after_an_interval() {
        let mut keepalive = ticker();
        assert!(poll(&mut keepalive, false).is_pending());
        tokio::time::advance(INTERVAL - MIN_PERIOD).await;
        assert!(poll(&mut keepalive, false).is_pending());
        tokio::time::advance(MIN_PERIOD).await;
        assert_eq!(poll(&mut keepalive, false), Poll::Ready(Tick::Ping(1)));
        // One ping outstanding at a time.
        tokio::time::advance(INTERVAL).await;
        assert!(poll(&mut keepalive, false).is_pending());
    }

    #[tokio::test(start_paused = true)]
    async fn traffic_in_each_interval_means_no_ping() {
        let mut keepalive = ticker();
        for _ in 0..10 {
            tokio::time::advance(INTERVAL).await;
            assert!(poll(&mut keepalive, true).is_pending());
        }
        // Silence again: one interval later, a ping.
        tokio::time::advance(INTERVAL).await;
        assert_eq!(poll(&mut keepalive, false), Poll::Ready(Tick::Ping(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_silent_for_the_timeout_after_a_ping_is_dead() {
        let mut keepalive = ticker();
        tokio::time::advance(INTERVAL).await;
        assert_eq!(poll(&mut keepalive, false), Poll::Ready(Tick::Ping(1)));
        tokio::time::advance(TIMEOUT - MIN_PERIOD).await;
        assert!(poll(&mut keepalive, false).is_pending());
        tokio::time::advance(MIN_PERIOD).await;
        assert_eq!(
            poll(&mut keepalive, false),
            Poll::Ready(Tick::Dead { timeout: TIMEOUT })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_within_the_timeout_keeps_the_peer_alive() {
        let mut keepalive = ticker();
        let mut payload = 0;
        for _ in 0..5 {
            tokio::time::advance(INTERVAL).await;
            payload += 1;
            assert_eq!(
                poll(&mut keepalive, false),
                Poll::Ready(Tick::Ping(payload))
            );
            // The pong arrives before the next look: the ping is settled, the peer alive.
            tokio::time::advance(INTERVAL).await;
            assert!(poll(&mut keepalive, true).is_pending());
        }
        // Long after: had any ping stayed outstanding, this would be the peer's death.
        tokio::time::advance(INTERVAL).await;
        assert_eq!(poll(&mut keepalive, false), Poll::Ready(Tick::Ping(6)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_shorter_than_the_interval_is_kept() {
        let interval = Duration::from_secs(10);
        let timeout = Duration::from_secs(1);
        let mut keepalive = Keepalive::new(Some(interval), timeout).expect("enabled");
        tokio::time::advance(interval).await;
        assert_eq!(poll(&mut keepalive, false), Poll::Ready(Tick::Ping(1)));
        tokio::time::advance(timeout).await;
        assert_eq!(
            poll(&mut keepalive, false),
            Poll::Ready(Tick::Dead { timeout })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn disabled_or_extreme_settings_do_not_panic_or_spin() {
        assert!(Keepalive::new(None, TIMEOUT).is_none());
        let mut huge = Keepalive::new(Some(Duration::MAX), Duration::MAX).expect("enabled");
        tokio::time::advance(Duration::from_secs(86_400)).await;
        assert!(poll(&mut huge, false).is_pending());
        let mut zero = Keepalive::new(Some(Duration::ZERO), Duration::ZERO).expect("enabled");
        // Heard every time: the ticker re-arms one period ahead and returns, not loops.
        assert!(poll(&mut zero, true).is_pending());
        tokio::time::advance(MIN_PERIOD).await;
        assert_eq!(poll(&mut zero, false), Poll::Ready(Tick::Ping(1)));
    }
}
