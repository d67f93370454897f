//! One live connection: the task that reads replies and writes requests, and the table of
//! calls waiting for a reply.
//!
//! Every call takes a slot in the connection's table (its id names the slot), queues its
//! request on the shared [`WriteQueue`], and polls its slot. The connection task stores each
//! response in its slot and wakes the caller. When the connection ends for any reason,
//! every waiting slot receives the same error at once, and later calls on this connection
//! fail immediately. That includes a server that stops answering keepalive pings (see
//! [`rpc_core::keepalive`]): its calls fail at once instead of waiting for their deadlines.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use futures::StreamExt;
use rpc_core::frame::{self, Frame, Oversized, SkippingDecoder};
use rpc_core::keepalive::{Keepalive, Tick};
use rpc_core::message::{decode_frame, Header};
use rpc_core::preamble::client_handshake;
use rpc_core::stream::StreamTable;
use rpc_core::task::AbortOnDrop;
use rpc_core::writer::WriteQueue;
use rpc_core::{Error, PeerAddr, ProtocolError, Transport};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::codec::FramedRead;

use crate::config::ClientConfig;
use crate::permits::Permits;
pub(crate) use crate::slots::Reply;
use crate::slots::{Removed, Slots};

/// How often a connection checks the deadlines of its long calls. Calls whose deadline is
/// more than [`SWEEP_MIN`] away (the 30 s default, typically) are timed out by this sweep
/// instead of a timer each, so they fail at most one tick late.
pub(crate) const SWEEP_TICK: Duration = Duration::from_millis(10);

/// Deadlines further away than this are left to the sweep; nearer ones get a precise timer.
pub(crate) const SWEEP_MIN: Duration = Duration::from_secs(1);

pub(crate) struct Connection {
    pub(crate) queue: Arc<WriteQueue>,
    /// The server's address, for the calls' spans.
    pub(crate) peer: PeerAddr,
    pub(crate) permits: Permits,
    /// The permits there are when no call is in flight.
    max_in_flight: usize,
    shared: Arc<Shared>,
    /// The connection task; it ends when the last handle is gone (no client, no call in
    /// flight).
    _task: AbortOnDrop<()>,
    _observed: crate::observe::ConnectionObserved,
}

/// State the connection task shares with callers.
struct Shared {
    /// Wakes the deadline sweep when a swept call registers while it is parked.
    sweep_wake: Notify,
    /// Whether the sweep is parked: it found no swept call at its last tick.
    sweep_parked: AtomicBool,
    streams: StreamTable,
    window: usize,
    pending: Mutex<Pending>,
    /// False once the connection broke or the server said it is going away: new calls go
    /// elsewhere. Read on every call, so kept outside the lock.
    usable: AtomicBool,
    /// Set when the server stopped answering keepalive pings: the host vanished.
    silent: AtomicBool,
    queue: Arc<WriteQueue>,
}

struct Pending {
    slots: Slots,
    /// Set once the connection is gone; new calls fail with it.
    closed: Option<Error>,
}

impl Connection {
    /// Handshakes over `stream` and starts the connection task.
    pub(crate) async fn start<T: Transport>(
        mut stream: T,
        config: &ClientConfig,
    ) -> Result<Connection, Error> {
        client_handshake(&mut stream).await?;
        let peer = stream.peer();
        let (reader, writer) = stream.into_split();
        let (reader, writer) = crate::observe::count_bytes(reader, writer);
        let queue = Arc::new(WriteQueue::new(
            config.max_frame_len,
            config.write_high_water,
        ));
        let shared = Arc::new(Shared {
            sweep_wake: Notify::new(),
            sweep_parked: AtomicBool::new(true),
            streams: StreamTable::default(),
            window: config.stream_window,
            pending: Mutex::new(Pending {
                slots: Slots::default(),
                closed: None,
            }),
            usable: AtomicBool::new(true),
            silent: AtomicBool::new(false),
            queue: queue.clone(),
        });
        // Of a frame over the limit, at most a header's worth is read; the rest is skipped.
        let frames = FramedRead::new(
            reader,
            SkippingDecoder::new(config.max_frame_len, frame::HEADER_ALLOWANCE),
        );
        let keepalive = Keepalive::new(config.keepalive_interval, config.keepalive_timeout);
        let task = AbortOnDrop::spawn(drive(shared.clone(), frames, writer, keepalive));
        Ok(Connection {
            queue,
            peer,
            permits: Permits::new(config.max_in_flight.max(1)),
            max_in_flight: config.max_in_flight.max(1),
            shared,
            _task: task,
            _observed: crate::observe::ConnectionObserved::new(),
        })
    }

    /// Reserves a slot for a call's reply and returns the call's id; fails if the
    /// connection is gone. Poll the reply with [`poll_reply`](Self::poll_reply).
    ///
    /// With `swept_deadline`, the connection itself fails the call with
    /// [`Error::DeadlineExceeded`] at that instant (within [`SWEEP_TICK`]), so the caller
    /// needs no timer of its own.
    pub(crate) fn register(&self, swept_deadline: Option<Instant>) -> Result<u64, Error> {
        let mut pending = self.shared.lock();
        if let Some(err) = &pending.closed {
            return Err(err.clone());
        }
        let id = pending.slots.insert(swept_deadline);
        drop(pending);
        // The sweep ticks while swept calls come and go, and parks when it finds none: only
        // then does a call need to wake it (once, not per call).
        if swept_deadline.is_some() && self.shared.sweep_parked.load(Ordering::SeqCst) {
            self.shared.sweep_wake.notify_one();
        }
        Ok(id)
    }

    /// Takes the reply of call `id` if it has arrived, which ends the call's registration;
    /// otherwise wakes `cx` when it does.
    pub(crate) fn poll_reply(&self, id: u64, cx: &mut TaskContext<'_>) -> Poll<Reply> {
        self.shared.lock().slots.poll(id, cx.waker())
    }

    /// Forgets a call that no longer waits (dropped, timed out) and, if the server may still
    /// be running it, tells the server to stop it.
    pub(crate) fn cancel(&self, id: u64) {
        let removed = self.shared.lock().slots.remove(id);
        if removed == Removed::Waiting {
            // Best effort: if the connection is gone, so is the call.
            let _ = self.queue.push_control(&Header::Cancel { id });
        }
    }

    /// Forgets a call whose request was never queued: the server knows nothing of it.
    pub(crate) fn unregister(&self, id: u64) {
        self.shared.lock().slots.remove(id);
    }

    /// Calls holding a permit (sent and not yet settled): a lock-free load estimate.
    #[inline]
    pub(crate) fn in_flight(&self) -> usize {
        self.max_in_flight - self.permits.available()
    }

    /// Calls waiting for their reply.
    pub(crate) fn waiting(&self) -> usize {
        self.shared.lock().slots.live()
    }

    /// The streams of this connection's calls.
    pub(crate) fn streams(&self) -> &StreamTable {
        &self.shared.streams
    }

    /// The flow-control window for streams this client receives.
    pub(crate) fn window(&self) -> usize {
        self.shared.window
    }

    /// Gives up on call `id` whose reply has already arrived (a stream the caller dropped):
    /// the server stops producing it.
    pub(crate) fn abandon(&self, id: u64) {
        self.shared.streams.remove(id);
        // Best effort: if the connection is gone, so is the call.
        let _ = self.queue.push_control(&Header::Cancel { id });
    }

    /// Whether new calls should go elsewhere: the connection broke, or the server said it
    /// is going away.
    pub(crate) fn is_usable(&self) -> bool {
        self.shared.usable.load(Ordering::Acquire)
    }

    /// Why the connection ended, if it has.
    pub(crate) fn closed_reason(&self) -> Option<Error> {
        self.shared.lock().closed.clone()
    }

    /// Whether the connection ended because the server stopped answering keepalive pings
    /// (a host that vanished, a link that went dark), not by a close or a reset.
    pub(crate) fn went_silent(&self) -> bool {
        self.shared.silent.load(Ordering::Relaxed)
    }

    /// Fails call `id` with `err` here and stops it on the server: a message of it that could
    /// not be sent (a request-stream item over the frame limit). A caller still waiting for
    /// the reply gets `err`; one reading the reply stream reads `err` as its last item.
    pub(crate) fn fail_call(&self, id: u64, err: Error) {
        self.shared.deliver(id, Err(err.clone()));
        self.shared.streams.fail(id, err);
        // Best effort: if the connection is gone, so is the call.
        let _ = self.queue.push_control(&Header::Cancel { id });
    }

    /// Stops routing new calls here (the server refused one because it is shutting down).
    pub(crate) fn mark_going_away(&self) {
        self.shared.usable.store(false, Ordering::Release);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        rpc_core::sync::lock(&self.pending)
    }

    /// Fails every waiting call with `err` and refuses new ones.
    fn close(&self, err: Error) {
        let wakers = {
            let mut pending = self.lock();
            self.usable.store(false, Ordering::Release);
            if pending.closed.is_none() {
                pending.closed = Some(err.clone());
            }
            pending.slots.fail_all(&err)
        };
        wakers.into_iter().for_each(Waker::wake);
        self.streams.close(err.clone());
        self.queue.fail(err);
    }

    /// Handles the front of a frame over `max_frame_len`, whose rest the decoder skips: the
    /// call it belongs to fails with `MessageTooLarge` and is stopped on the server; the
    /// connection and its other calls go on. A message of another kind is never that
    /// large: a protocol error.
    fn on_oversized(&self, over: &Oversized) -> Result<(), Error> {
        let err = over.error();
        let id = match over.header()? {
            Header::Response { id, .. } => {
                self.deliver(id, Err(err.clone()));
                id
            }
            // An item of a reply stream: the caller reads the error as the stream's end.
            Header::StreamItem { id } => {
                if !self.streams.fail(id, err.clone()) {
                    // Nobody reads this stream any more.
                    return Ok(());
                }
                id
            }
            _ => return Err(over.protocol_error().into()),
        };
        tracing::debug!(request_id = id, error = %err, "failing a call whose reply is oversized");
        // The server may still be producing a reply stream (a unary call is over there,
        // and the cancel is ignored).
        let _ = self.queue.push_control(&Header::Cancel { id });
        Ok(())
    }

    fn deliver(&self, id: u64, reply: Reply) {
        // No waker: nobody polled yet, or the call was cancelled and its late reply dropped.
        let waker = self.lock().slots.fill(id, reply);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Fails every swept call whose deadline has passed, and tells the server to stop them.
    fn expire(&self, now: Instant) {
        let (ids, wakers) = self.lock().slots.expire(now);
        wakers.into_iter().for_each(Waker::wake);
        for id in ids {
            let _ = self.queue.push_control(&Header::Cancel { id });
        }
    }

    fn has_swept_calls(&self) -> bool {
        self.lock().slots.swept() > 0
    }
}

/// Times out swept calls: ticks while there are any, parks at the first tick that finds none.
async fn sweep(shared: &Shared) -> std::convert::Infallible {
    let mut tick = tokio::time::interval(SWEEP_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        while !shared.has_swept_calls() {
            shared.sweep_parked.store(true, Ordering::SeqCst);
            // A call that registered before the flag was set did not notify: look again.
            // (`notify_one` keeps a permit when nobody waits, so a later one is not lost.)
            if !shared.has_swept_calls() {
                shared.sweep_wake.notified().await;
            }
            shared.sweep_parked.store(false, Ordering::SeqCst);
        }
        let now = tick.tick().await;
        shared.expire(now);
    }
}

/// Pings a silent server and gives it up when it does not answer; never ends without a
/// ticker. `heard` is raised by the reader for every frame.
async fn keepalive(ticker: Option<Keepalive>, heard: &AtomicBool, queue: &WriteQueue) -> Error {
    let Some(mut ticker) = ticker else {
        return std::future::pending().await;
    };
    loop {
        match ticker.tick(|| heard.swap(false, Ordering::Relaxed)).await {
            Tick::Ping(payload) => {
                // Best effort: if the queue is gone, so is the connection.
                let _ = queue.push_control(&Header::Ping { payload });
            }
            Tick::Dead { timeout } => {
                return Error::closed(format!(
                    "the server did not answer a keepalive ping within {} ms",
                    timeout.as_millis()
                ))
            }
        }
    }
}

/// The connection task: reads replies and runs the writer until either side fails or the
/// server stops answering keepalive pings.
async fn drive<R, W>(
    shared: Arc<Shared>,
    mut frames: FramedRead<R, SkippingDecoder>,
    writer: W,
    ticker: Option<Keepalive>,
) where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    // Whether a frame arrived since the keepalive last looked: one store per frame, no clock.
    let heard = AtomicBool::new(false);
    let read = async {
        let outcome: Result<std::convert::Infallible, Error> = loop {
            let Some(frame) = frames.next().await else {
                break Err(Error::closed("the server closed the connection"));
            };
            let frame = match frame {
                Ok(Frame::Whole(frame)) => frame,
                Ok(Frame::Oversized(over)) => {
                    heard.store(true, Ordering::Relaxed);
                    match shared.on_oversized(&over) {
                        Ok(()) => continue,
                        Err(err) => break Err(err),
                    }
                }
                Err(err) => break Err(err),
            };
            heard.store(true, Ordering::Relaxed);
            let frame_len = frame::wire_len(&frame);
            let (header, body) = match decode_frame(frame) {
                Ok(parts) => parts,
                Err(err) => break Err(err.into()),
            };
            match header {
                Header::Response { id, status } => shared.deliver(id, Ok((status, body))),
                Header::GoAway => {
                    tracing::debug!("server is going away; new calls will use a new connection");
                    shared.usable.store(false, Ordering::Release);
                }
                Header::Ping { payload } => shared.queue.answer_ping(payload),
                // Already counted as hearing from the server.
                Header::Pong { .. } => {}
                // Stream frames go to their stream; anything else has no business here.
                other => match shared
                    .streams
                    .route(other, body, frame_len, &"the server's stream")
                {
                    Ok(None) => {}
                    Ok(Some((other, _))) => {
                        break Err(Error::from(ProtocolError::UnexpectedMessage {
                            kind: other.kind(),
                        }))
                    }
                    Err(err) => break Err(err.into()),
                },
            }
        };
        outcome
    };
    // The writer is a task of its own, so that under load one thread can write requests
    // while another reads replies. Owned here: it ends when this task ends or is aborted.
    let queue = shared.queue.clone();
    let mut write = AbortOnDrop::spawn(async move { queue.run(writer).await });
    let err = tokio::select! {
        never = sweep(&shared) => match never {},
        err = keepalive(ticker, &heard, &shared.queue) => {
            tracing::warn!(error = %err, "closing connection");
            shared.silent.store(true, Ordering::Relaxed);
            err
        }
        err = read => match err {
            Ok(never) => match never {},
            Err(err @ Error::ConnectionClosed { .. }) => err,
            Err(err) => {
                tracing::warn!(error = %err, "closing connection");
                // An I/O failure (a reset) stays reachable as the error's source.
                Error::connection_lost(err)
            }
        },
        written = &mut write => match written {
            Ok(Ok(())) => Error::closed("the client closed the connection"),
            Ok(Err(err)) => err,
            Err(join) => Error::closed(format!("the writer stopped: {join}")),
        },
    };
    shared.close(err);
}
