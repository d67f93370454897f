//! One live connection: the task that reads replies and writes requests, and the table of
//! calls waiting for a reply.
//!
//! Every call registers a one-shot slot under a fresh id, queues its request on the shared
//! [`WriteQueue`], and waits. The connection task routes each response to its slot by id.
//! When the connection ends for any reason, every waiting slot receives the same error at
//! once, and later calls on this connection fail immediately.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use rpc_core::frame::{FrameDecoder, PREFIX_LEN};
use rpc_core::ids::IdMap;
use rpc_core::message::{decode_frame, Header, Status};
use rpc_core::preamble::client_handshake;
use rpc_core::stream::StreamTable;
use rpc_core::writer::WriteQueue;
use rpc_core::{Error, ProtocolError, Transport};
use tokio::sync::{oneshot, Notify, Semaphore};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_util::codec::FramedRead;

use crate::config::ClientConfig;

/// How often a connection checks the deadlines of its long calls. Calls whose deadline is
/// more than [`SWEEP_MIN`] away (the 30 s default, typically) are timed out by this sweep
/// instead of a timer each, so they fail at most one tick late.
pub(crate) const SWEEP_TICK: Duration = Duration::from_millis(10);

/// Deadlines further away than this are left to the sweep; nearer ones get a precise timer.
pub(crate) const SWEEP_MIN: Duration = Duration::from_secs(1);

/// A call waiting for its reply.
struct Waiting {
    slot: oneshot::Sender<Reply>,
    /// Set when the connection's sweep enforces the call's deadline.
    deadline: Option<Instant>,
}

impl Pending {
    fn remove(&mut self, id: u64) -> Option<Waiting> {
        let waiting = self.waiting.remove(&id)?;
        if waiting.deadline.is_some() {
            self.swept -= 1;
        }
        Some(waiting)
    }
}

/// What a waiting call receives: the response status and body, or why there is none.
pub(crate) type Reply = Result<(Status, Bytes), Error>;

pub(crate) struct Connection {
    pub(crate) queue: Arc<WriteQueue>,
    pub(crate) permits: Semaphore,
    shared: Arc<Shared>,
    task: AbortHandle,
}

/// State the connection task shares with callers.
struct Shared {
    /// Wakes the deadline sweep when the first swept call registers.
    sweep_wake: Notify,
    streams: StreamTable,
    window: usize,
    pending: Mutex<Pending>,
    /// False once the connection broke or the server said it is going away: new calls go
    /// elsewhere. Read on every call, so kept outside the lock.
    usable: AtomicBool,
    queue: Arc<WriteQueue>,
}

struct Pending {
    next_id: u64,
    /// Keyed by this client's own request ids, so the cheap hash is safe.
    waiting: IdMap<u64, Waiting>,
    /// How many waiting calls have a deadline the connection enforces (see [`SWEEP_TICK`]).
    swept: usize,
    /// Set once the connection is gone; new calls fail with it.
    closed: Option<Error>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        // The last handle is gone (no client, no call in flight): end the task.
        self.task.abort();
    }
}

impl Connection {
    /// Handshakes over `stream` and starts the connection task.
    pub(crate) async fn start<T: Transport>(
        mut stream: T,
        config: &ClientConfig,
    ) -> Result<Connection, Error> {
        client_handshake(&mut stream).await?;
        let (reader, writer) = stream.into_split();
        let queue = Arc::new(WriteQueue::new(
            config.max_frame_len,
            config.write_high_water,
        ));
        let shared = Arc::new(Shared {
            sweep_wake: Notify::new(),
            streams: StreamTable::default(),
            window: config.stream_window,
            pending: Mutex::new(Pending {
                next_id: 0,
                waiting: IdMap::default(),
                swept: 0,
                closed: None,
            }),
            usable: AtomicBool::new(true),
            queue: queue.clone(),
        });
        let frames = FramedRead::new(reader, FrameDecoder::new(config.max_frame_len));
        let task = tokio::spawn(drive(shared.clone(), frames, writer)).abort_handle();
        Ok(Connection {
            queue,
            permits: Semaphore::new(config.max_in_flight.max(1)),
            shared,
            task,
        })
    }

    /// Reserves an id and a slot for a call's reply; fails if the connection is gone.
    ///
    /// With `swept_deadline`, the connection itself fails the call with
    /// [`Error::DeadlineExceeded`] at that instant (within [`SWEEP_TICK`]), so the caller
    /// needs no timer of its own.
    pub(crate) fn register(
        &self,
        swept_deadline: Option<Instant>,
    ) -> Result<(u64, oneshot::Receiver<Reply>), Error> {
        let mut pending = self.shared.lock();
        if let Some(err) = &pending.closed {
            return Err(err.clone());
        }
        let id = pending.next_id;
        pending.next_id += 1;
        let (slot, rx) = oneshot::channel();
        if swept_deadline.is_some() {
            pending.swept += 1;
        }
        pending.waiting.insert(
            id,
            Waiting {
                slot,
                deadline: swept_deadline,
            },
        );
        drop(pending);
        if swept_deadline.is_some() {
            // The connection task arms its sweep only while swept calls exist.
            self.shared.sweep_wake.notify_one();
        }
        Ok((id, rx))
    }

    /// Forgets a call that no longer waits (dropped, timed out) and tells the server to
    /// stop it.
    pub(crate) fn cancel(&self, id: u64) {
        let was_waiting = self.shared.lock().remove(id).is_some();
        if was_waiting {
            // Best effort: if the connection is gone, so is the call.
            let _ = self.queue.push(&Header::Cancel { id }, |_| Ok(()));
        }
    }

    /// Calls waiting for their reply.
    pub(crate) fn waiting(&self) -> usize {
        self.shared.lock().waiting.len()
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
        let _ = self.queue.push(&Header::Cancel { id }, |_| Ok(()));
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

    /// Stops routing new calls here (the server refused one because it is shutting down).
    pub(crate) fn mark_going_away(&self) {
        self.shared.usable.store(false, Ordering::Release);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // Nothing panics while holding this lock; recover rather than spread a panic.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Fails every waiting call with `err` and refuses new ones.
    fn close(&self, err: Error) {
        let waiting = {
            let mut pending = self.lock();
            self.usable.store(false, Ordering::Release);
            if pending.closed.is_none() {
                pending.closed = Some(err.clone());
            }
            pending.swept = 0;
            std::mem::take(&mut pending.waiting)
        };
        for (_, waiting) in waiting {
            let _ = waiting.slot.send(Err(err.clone()));
        }
        self.streams.close(err.clone());
        self.queue.fail(err);
    }

    fn deliver(&self, id: u64, reply: Reply) {
        let waiting = self.lock().remove(id);
        // No slot: the call was cancelled or timed out; its late reply is dropped.
        if let Some(waiting) = waiting {
            let _ = waiting.slot.send(reply);
        }
    }

    /// Fails every swept call whose deadline has passed, and tells the server to stop them.
    fn expire(&self, now: Instant) {
        let expired: Vec<(u64, Waiting)> = {
            let mut pending = self.lock();
            let ids: Vec<u64> = pending
                .waiting
                .iter()
                .filter(|(_, w)| w.deadline.is_some_and(|d| d <= now))
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter()
                .filter_map(|id| pending.remove(id).map(|w| (id, w)))
                .collect()
        };
        for (id, waiting) in expired {
            let _ = waiting.slot.send(Err(Error::DeadlineExceeded));
            let _ = self.queue.push(&Header::Cancel { id }, |_| Ok(()));
        }
    }

    fn has_swept_calls(&self) -> bool {
        self.lock().swept > 0
    }
}

/// Times out swept calls; ticks only while there are any.
async fn sweep(shared: &Shared) -> std::convert::Infallible {
    let mut tick = tokio::time::interval(SWEEP_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        while !shared.has_swept_calls() {
            shared.sweep_wake.notified().await;
        }
        let now = tick.tick().await;
        shared.expire(now);
    }
}

/// The connection task: reads replies and runs the writer until either side fails.
async fn drive<R, W>(shared: Arc<Shared>, mut frames: FramedRead<R, FrameDecoder>, writer: W)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let read = async {
        let outcome: Result<std::convert::Infallible, Error> = loop {
            let Some(frame) = frames.next().await else {
                break Err(Error::closed("the server closed the connection"));
            };
            let frame = match frame {
                Ok(frame) => frame,
                Err(err) => break Err(err),
            };
            let frame_len = frame.len();
            let (header, body) = match decode_frame(frame) {
                Ok(parts) => parts,
                Err(err) => break Err(err.into()),
            };
            let frame_header_len = frame_len - body.len();
            match header {
                Header::Response { id, status } => shared.deliver(id, Ok((status, body))),
                Header::StreamItem { id } => {
                    // The sender counts whole frames, prefix included.
                    let frame_len = PREFIX_LEN + frame_header_len + body.len();
                    if let Err(err) = shared.streams.on_item(id, body, frame_len) {
                        break Err(err.into());
                    }
                }
                Header::StreamEnd { id, status } => {
                    shared.streams.on_end(id, status, &"the server's stream")
                }
                Header::Credit { id, bytes } => shared.streams.on_credit(id, bytes),
                Header::GoAway => {
                    tracing::debug!("server is going away; new calls will use a new connection");
                    shared.usable.store(false, Ordering::Release);
                }
                other => {
                    break Err(Error::from(ProtocolError::UnexpectedMessage {
                        kind: other.kind(),
                    }))
                }
            }
        };
        outcome
    };
    let write = shared.queue.run(writer);
    let err = tokio::select! {
        never = sweep(&shared) => match never {},
        err = read => match err {
            Ok(never) => match never {},
            Err(err @ Error::ConnectionClosed { .. }) => err,
            Err(err) => {
                tracing::warn!(error = %err, "closing connection");
                Error::closed(err)
            }
        },
        written = write => match written {
            Ok(()) => Error::closed("the client closed the connection"),
            Err(err) => err,
        },
    };
    shared.close(err);
}
