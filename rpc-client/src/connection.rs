//! One live connection: the task that reads replies and writes requests, and the table of
//! calls waiting for a reply.
//!
//! Every call registers a one-shot slot under a fresh id, queues its request on the shared
//! [`WriteQueue`], and waits. The connection task routes each response to its slot by id.
//! When the connection ends for any reason, every waiting slot receives the same error at
//! once, and later calls on this connection fail immediately.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use futures::StreamExt;
use rpc_core::frame::{FrameDecoder, PREFIX_LEN};
use rpc_core::message::{decode_frame, Header, Status};
use rpc_core::preamble::client_handshake;
use rpc_core::stream::StreamTable;
use rpc_core::writer::WriteQueue;
use rpc_core::{Error, ProtocolError, Transport};
use tokio::sync::{oneshot, Semaphore};
use tokio::task::AbortHandle;
use tokio_util::codec::FramedRead;

use crate::config::ClientConfig;

/// Hashes the client's own request ids (a counter, never chosen by a peer) with one
/// multiplication instead of SipHash.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed; this fallback keeps the Hasher contract for any input.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
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
    waiting: HashMap<u64, oneshot::Sender<Reply>, BuildHasherDefault<IdHasher>>,
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
            streams: StreamTable::default(),
            window: config.stream_window,
            pending: Mutex::new(Pending {
                next_id: 0,
                waiting: HashMap::default(),
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
    pub(crate) fn register(&self) -> Result<(u64, oneshot::Receiver<Reply>), Error> {
        let mut pending = self.shared.lock();
        if let Some(err) = &pending.closed {
            return Err(err.clone());
        }
        let id = pending.next_id;
        pending.next_id += 1;
        let (tx, rx) = oneshot::channel();
        pending.waiting.insert(id, tx);
        Ok((id, rx))
    }

    /// Forgets a call that no longer waits (dropped, timed out) and tells the server to
    /// stop it.
    pub(crate) fn cancel(&self, id: u64) {
        let was_waiting = self.shared.lock().waiting.remove(&id).is_some();
        if was_waiting {
            // Best effort: if the connection is gone, so is the call.
            let _ = self.queue.push(&Header::Cancel { id }, |_| Ok(()));
        }
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
            std::mem::take(&mut pending.waiting)
        };
        for (_, slot) in waiting {
            let _ = slot.send(Err(err.clone()));
        }
        self.streams.close(err.clone());
        self.queue.fail(err);
    }

    fn deliver(&self, id: u64, reply: Reply) {
        let slot = self.lock().waiting.remove(&id);
        // No slot: the call was cancelled or timed out; its late reply is dropped.
        if let Some(slot) = slot {
            let _ = slot.send(reply);
        }
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
