//! Graceful shutdown: the server's signal, and each connection's view of it.
//!
//! The server holds one [`Signal`]. Its accept loop waits for it ([`Signal::triggered`]); each
//! connection holds a [`Drain`], which notices the signal at most once per turn of the
//! connection, sends the client one go-away, and from then on refuses new calls while the
//! calls in flight finish (all but health checks, which answer `NotServing`).

use std::future::Future;
use std::pin::Pin;
use std::task::Context as TaskContext;

use rpc_core::message::Header;
use rpc_core::writer::WriteQueue;
use rpc_core::Error;
use tokio::sync::watch;

/// The server's shutdown signal: set once, never cleared.
#[derive(Debug)]
pub(crate) struct Signal(watch::Sender<bool>);

impl Signal {
    pub(crate) fn new() -> Self {
        Signal(watch::channel(false).0)
    }

    /// Starts the shutdown: the accept loop stops, every connection drains.
    pub(crate) fn trigger(&self) {
        self.0.send_replace(true);
    }

    /// Completes once the shutdown has started (at once if it already has).
    pub(crate) fn triggered(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut signal = self.0.subscribe();
        async move {
            // The guard `wait_for` returns is not `Send`; it is dropped at once.
            let _ = signal.wait_for(|stop| *stop).await;
        }
    }

    /// The signal's value, for readers that only ask whether it is set (the health service).
    pub(crate) fn subscribe(&self) -> watch::Receiver<bool> {
        self.0.subscribe()
    }

    /// One connection's view of the signal.
    pub(crate) fn drain(&self) -> Drain {
        Drain::new(self.0.subscribe())
    }
}

/// Whether one connection drains, and its go-away.
pub(crate) struct Drain {
    draining: bool,
    /// The go-away is queued (once, on the turn the drain is noticed).
    announced: bool,
    /// Tells cheaply (an atomic load) whether the signal moved.
    probe: watch::Receiver<bool>,
    /// Completes when the signal moves, or the server is gone. One future for the
    /// connection's life: polled on the first turn, it holds the connection task's waker (a
    /// task's waker never changes); after that it is polled only when `probe` says there is
    /// news, because polling it takes a lock. Boxed once per connection, never per call.
    changed: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// Whether `changed` has been polled (and so holds the waker).
    registered: bool,
}

impl Drain {
    fn new(signal: watch::Receiver<bool>) -> Self {
        // A shutdown that started before this connection subscribed counts too.
        let draining = *signal.borrow();
        let mut waiter = signal.clone();
        // Unconstrained: the runtime's budget must not skip the first poll, which registers.
        let changed = tokio::task::unconstrained(async move {
            let _ = waiter.changed().await;
        });
        Drain {
            draining,
            announced: false,
            probe: signal,
            changed: Box::pin(changed),
            registered: false,
        }
    }

    /// Whether the connection drains; called once per turn of the connection. The turn that
    /// first finds it draining queues the go-away on `queue` (failing only if the
    /// connection is already broken).
    pub(crate) fn poll_draining(
        &mut self,
        cx: &mut TaskContext<'_>,
        queue: &WriteQueue,
    ) -> Result<bool, Error> {
        // A dropped sender means the server itself is gone: that is news too, and drains.
        if !self.draining && (!self.registered || self.probe.has_changed().unwrap_or(true)) {
            self.registered = true;
            self.draining = self.changed.as_mut().poll(cx).is_ready();
        }
        if self.draining && !self.announced {
            self.announced = true;
            queue.push_control(&Header::GoAway)?;
        }
        Ok(self.draining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpc_core::frame::FrameDecoder;
    use rpc_core::message::decode_frame;
    use std::task::Poll;
    use tokio_util::codec::Decoder;

    fn noop() -> TaskContext<'static> {
        TaskContext::from_waker(futures::task::noop_waker_ref())
    }

    fn queue() -> WriteQueue {
        WriteQueue::new(1 << 20, 1 << 20)
    }

    /// How many go-aways `queue` holds.
    async fn go_aways(queue: WriteQueue) -> usize {
        queue.close();
        let mut out = Vec::new();
        queue.run(&mut out).await.expect("written");
        let mut bytes = bytes::BytesMut::from(&out[..]);
        let mut decoder = FrameDecoder::new(1 << 20);
        let mut count = 0;
        while let Some(frame) = decoder.decode(&mut bytes).expect("a frame") {
            let (header, _) = decode_frame(frame).expect("a header");
            count += usize::from(matches!(header, Header::GoAway));
        }
        count
    }

    #[tokio::test]
    async fn one_go_away_on_the_turn_the_drain_is_noticed() {
        let signal = Signal::new();
        let mut drain = signal.drain();
        let queue = queue();
        let mut cx = noop();
        assert!(!drain.poll_draining(&mut cx, &queue).expect("open"));
        signal.trigger();
        assert!(drain.poll_draining(&mut cx, &queue).expect("open"));
        assert!(drain.poll_draining(&mut cx, &queue).expect("open"));
        assert_eq!(go_aways(queue).await, 1);
    }

    #[tokio::test]
    async fn a_connection_that_subscribes_after_the_shutdown_drains_at_once() {
        let signal = Signal::new();
        signal.trigger();
        let mut drain = signal.drain();
        let queue = queue();
        assert!(drain.poll_draining(&mut noop(), &queue).expect("open"));
        assert_eq!(go_aways(queue).await, 1);
    }

    #[tokio::test]
    async fn the_trigger_wakes_a_connection_that_polled_once() {
        let signal = Signal::new();
        let mut drain = signal.drain();
        let queue = queue();
        let woken = std::future::poll_fn(|cx| {
            if drain.poll_draining(cx, &queue).expect("open") {
                return Poll::Ready(());
            }
            signal.trigger();
            Poll::Pending
        });
        tokio::time::timeout(std::time::Duration::from_secs(20), woken)
            .await
            .expect("the signal woke the connection");
    }

    #[tokio::test]
    async fn the_accept_loop_sees_a_trigger_from_before_it_waited() {
        let signal = Signal::new();
        signal.trigger();
        tokio::time::timeout(std::time::Duration::from_secs(20), signal.triggered())
            .await
            .expect("already triggered");
    }
}
