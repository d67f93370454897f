//! One connection: read frames, start calls, write replies.
//!
//! A connection is one task. It runs two loops side by side: the reader (this file), which
//! decodes frames and drives the calls, and the writer ([`WriteQueue::run`]), which flushes
//! every queued reply in one write. Each call is polled once where its request was read (see
//! [`CallTask`]); the ones still pending join a set the reader polls alongside the socket.
//! Calls run concurrently and reply in any order. When `max_in_flight_per_connection` calls
//! are pending the reader stops reading, so the client is slowed by TCP rather than buffered
//! here. Dropping the connection drops every call it owns.
//!
//! Handlers of one connection share its task: a handler that blocks its thread (heavy CPU
//! work, blocking I/O) delays the other calls of that connection, as in any async code; use
//! `tokio::task::spawn_blocking` for such work.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::{AbortHandle, Abortable};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use rpc_core::error::ErrorCode;
use rpc_core::frame::{FrameDecoder, PREFIX_LEN};
use rpc_core::message::{decode_frame, Header, RequestHeader, Status};
use rpc_core::preamble::server_handshake;
use rpc_core::stream::StreamTable;
use rpc_core::writer::WriteQueue;
use rpc_core::{Context, Error, MethodId, PeerAddr, ProtocolError, Transport};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tokio_util::codec::FramedRead;

use crate::call::CallTask;
use crate::config::ServerConfig;
use crate::router::Router;
use crate::service::{Reply, Request, Wire};
use crate::stats::{CallGuard, ConnectionGuard, Counters};

/// Serves one accepted stream until the peer leaves, breaks the protocol, idles out, or the
/// server shuts down.
pub(crate) async fn serve<T: Transport>(
    mut stream: T,
    router: Arc<Router>,
    config: Arc<ServerConfig>,
    shutdown: watch::Receiver<bool>,
    counters: Arc<Counters>,
) {
    let _open = ConnectionGuard::new(counters.clone());
    let peer = stream.peer();
    match tokio::time::timeout(config.preamble_timeout, server_handshake(&mut stream)).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => {
            tracing::warn!(%peer, error = %err, "dropping connection: bad preamble");
            return;
        }
        Err(_) => {
            let err = ProtocolError::PreambleTimeout {
                millis: config.preamble_timeout.as_millis() as u64,
            };
            tracing::warn!(%peer, error = %err, "dropping connection: no preamble in time");
            return;
        }
    }
    tracing::debug!(%peer, "connection open");

    let (reader, writer) = stream.into_split();
    let queue = Arc::new(WriteQueue::new(
        config.max_frame_len,
        config.write_high_water,
    ));
    let wire = Arc::new(Wire {
        queue: queue.clone(),
        streams: StreamTable::default(),
        window: config.stream_window,
    });
    let mut connection = Connection {
        frames: FramedRead::new(reader, FrameDecoder::new(config.max_frame_len)),
        wire: wire.clone(),
        router,
        config,
        peer: peer.clone(),
        calls: FuturesUnordered::new(),
        running: HashMap::new(),
        shutdown,
        counters,
    };
    let read = connection.run();
    // The writer is a task of its own, so that under load one thread can write replies while
    // another reads and runs calls. This task owns it: dropping the connection aborts it.
    let mut write = WriterTask(tokio::spawn({
        let queue = queue.clone();
        async move { queue.run(writer).await }
    }));
    tokio::pin!(read);
    tokio::select! {
        outcome = &mut read => {
            match &outcome {
                Ok(()) => tracing::debug!(%peer, "connection closed"),
                Err(err) => tracing::warn!(%peer, error = %err, "closing connection"),
            }
            // Streams a handler handed elsewhere learn that the connection is gone.
            wire.streams.close(Error::closed("the connection closed"));
            // Flush what is queued (a go-away, the last replies), then close.
            queue.close();
            let _ = (&mut write.0).await;
        }
        outcome = &mut write.0 => {
            let err = match outcome {
                Ok(Ok(())) => None,
                Ok(Err(err)) => Some(err),
                Err(join) => Some(Error::closed(format!("the writer stopped: {join}"))),
            };
            if let Some(err) = err {
                tracing::debug!(%peer, error = %err, "connection lost while writing");
                wire.streams.close(err);
            }
        }
    }
}

/// The connection's writer task; aborted when the connection's own task ends or is dropped.
struct WriterTask(tokio::task::JoinHandle<Result<(), Error>>);

impl Drop for WriterTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Connection<R> {
    frames: FramedRead<R, FrameDecoder>,
    wire: Arc<Wire>,
    router: Arc<Router>,
    config: Arc<ServerConfig>,
    peer: PeerAddr,
    /// Calls still pending after their first poll; dropping the connection drops them.
    calls: FuturesUnordered<Abortable<CallTask>>,
    /// Request id of each pending call, for `Cancel`.
    running: HashMap<u64, AbortHandle>,
    shutdown: watch::Receiver<bool>,
    counters: Arc<Counters>,
}

impl<R: tokio::io::AsyncRead + Unpin> Connection<R> {
    async fn run(&mut self) -> Result<(), Error> {
        let idle = self.config.idle_timeout;
        let mut last_active = Instant::now();
        // One timer for the connection's life, moved on only when it fires early (there was
        // traffic since): a call costs it nothing.
        let mut idle_timer = idle.and_then(|idle| {
            let at = last_active.checked_add(idle)?;
            Some(Box::pin(tokio::time::sleep_until(at)))
        });
        let mut draining = *self.shutdown.borrow();
        if draining {
            self.wire.queue.push(&Header::GoAway, |_| Ok(()))?;
        }
        // Also one future for the connection's life, for the same reason. Polled once here,
        // it holds this task's waker (a task's waker never changes); after that it is polled
        // only when a cheap version check says there is news, because polling it takes a lock.
        let probe = self.shutdown.clone();
        let mut shutdown = self.shutdown.clone();
        // Unconstrained: the runtime's budget must not skip the first poll, which registers.
        let shutdown_changed = tokio::task::unconstrained(shutdown.changed());
        tokio::pin!(shutdown_changed);
        if !draining && futures::poll!(&mut shutdown_changed).is_ready() {
            draining = true;
            self.wire.queue.push(&Header::GoAway, |_| Ok(()))?;
        }
        loop {
            let can_read = self.calls.len() < self.config.max_in_flight_per_connection;
            let shutdown_signal = std::future::poll_fn(|cx| {
                // A dropped sender means the server itself is gone: that is news too.
                if probe.has_changed().unwrap_or(true) {
                    shutdown_changed.as_mut().poll(cx).map(drop)
                } else {
                    Poll::Pending
                }
            });
            tokio::select! {
                () = shutdown_signal, if !draining => {
                    // A dropped sender means the server itself is gone: drain as well.
                    draining = true;
                    self.wire.queue.push(&Header::GoAway, |_| Ok(()))?;
                }
                Some(done) = self.calls.next(), if !self.calls.is_empty() => {
                    // A call's reply is queued before anything else is read, so no request
                    // for a reused id can arrive in between. Cancelled calls were forgotten
                    // when cancelled.
                    if let Ok((id, failure)) = done {
                        self.running.remove(&id);
                        if let Some(err) = failure {
                            self.wire.fail(id, &err);
                        }
                    }
                    if self.calls.is_empty() {
                        last_active = Instant::now();
                    }
                }
                frame = self.frames.next(), if can_read => match frame {
                    None => return Ok(()),
                    Some(Err(err)) => return Err(err),
                    Some(Ok(frame)) => {
                        let mut first = Some(frame);
                        let batch = std::future::poll_fn(|cx| {
                            Poll::Ready(match first.take() {
                                Some(frame) => self.take_frames(frame, draining, cx),
                                None => Ok(Batch::Drained),
                            })
                        })
                        .await?;
                        match batch {
                            Batch::Drained => {}
                            Batch::Refuse(header) => {
                                // Waits for room: a client that does not read its replies
                                // is slowed down, not buffered for.
                                self.wire.queue.send(&header, |_| Ok(())).await?;
                            }
                            Batch::Eof => return Ok(()),
                        }
                        last_active = Instant::now();
                    }
                },
                () = fire(&mut idle_timer), if self.calls.is_empty() => {
                    let due = idle.and_then(|idle| last_active.checked_add(idle));
                    match (due, &mut idle_timer) {
                        (Some(due), Some(timer)) if due > Instant::now() => {
                            timer.as_mut().reset(due)
                        }
                        _ => {
                            tracing::debug!(peer = %self.peer, "closing idle connection");
                            return Ok(());
                        }
                    }
                }
            }
            if draining && self.calls.is_empty() {
                return Ok(());
            }
        }
    }

    /// Handles `first` and then every frame already read, without waiting: under load they
    /// arrive by the dozen, and each costs no round of `select!`. The runtime's budget ends
    /// the batch if the socket never runs dry.
    fn take_frames(
        &mut self,
        first: Bytes,
        draining: bool,
        cx: &mut TaskContext<'_>,
    ) -> Result<Batch, Error> {
        // One clock read per batch: deadlines count from when the batch was read.
        let now = Instant::now();
        let mut frame = first;
        loop {
            if let Some(refusal) = self.on_frame(frame, draining, now, cx)? {
                return Ok(Batch::Refuse(refusal));
            }
            if self.calls.len() >= self.config.max_in_flight_per_connection {
                return Ok(Batch::Drained);
            }
            frame = match self.frames.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(frame))) => frame,
                Poll::Ready(Some(Err(err))) => return Err(err),
                Poll::Ready(None) => return Ok(Batch::Eof),
                Poll::Pending => return Ok(Batch::Drained),
            };
        }
    }

    /// Handles one frame; returns the response refusing it if it is a request that cannot
    /// run.
    fn on_frame(
        &mut self,
        frame: Bytes,
        draining: bool,
        now: Instant,
        cx: &mut TaskContext<'_>,
    ) -> Result<Option<Header>, Error> {
        let frame_len = frame.len() + PREFIX_LEN;
        let (header, body) = decode_frame(frame)?;
        match header {
            Header::Request(request) => self.on_request(request, body, draining, now, cx),
            Header::Cancel { id } => {
                // Unknown ids are fine: the call may have just finished.
                if let Some(task) = self.running.remove(&id) {
                    task.abort();
                }
                self.wire.streams.remove(id);
                Ok(None)
            }
            Header::StreamItem { id } => {
                self.wire.streams.on_item(id, body, frame_len)?;
                Ok(None)
            }
            Header::StreamEnd { id, status } => {
                self.wire.streams.on_end(id, status, &"the client's stream");
                Ok(None)
            }
            Header::Credit { id, bytes } => {
                self.wire.streams.on_credit(id, bytes);
                Ok(None)
            }
            other => Err(ProtocolError::UnexpectedMessage { kind: other.kind() }.into()),
        }
    }

    /// Starts a call and polls it once; returns the response refusing the request if it
    /// cannot run. A request id already running breaks the protocol: that is an error.
    fn on_request(
        &mut self,
        request: RequestHeader,
        body: Bytes,
        draining: bool,
        now: Instant,
        cx: &mut TaskContext<'_>,
    ) -> Result<Option<Header>, Error> {
        let id = request.id;
        let refuse = |code: ErrorCode, message: String| {
            Ok(Some(Header::Response {
                id,
                status: Status::Error {
                    code: code.to_u16(),
                    message,
                },
            }))
        };
        // Most calls finish in their first poll, so the set is usually empty.
        if !self.running.is_empty() && self.running.contains_key(&id) {
            return Err(ProtocolError::DuplicateRequestId { id }.into());
        }
        if draining {
            return refuse(
                ErrorCode::ShuttingDown,
                "server is shutting down; the call was not run".into(),
            );
        }
        let Some(route) = self.router.get(MethodId::from_u64(request.method)) else {
            return refuse(
                ErrorCode::UnknownMethod,
                format!("no method with id {:#018x}", request.method),
            );
        };
        let metadata_len = request.metadata.byte_len();
        if metadata_len > self.config.max_metadata_len {
            let err = ProtocolError::MetadataTooLarge {
                len: metadata_len,
                max: self.config.max_metadata_len,
            };
            return refuse(ErrorCode::BadRequest, err.to_string());
        }
        let deadline = request
            .timeout_micros
            // A deadline too far to represent is no deadline (the peer chose the number).
            .and_then(|micros| now.checked_add(Duration::from_micros(micros)));
        let method = route.method;
        let context = Context::new(id, method, deadline, self.peer.clone(), request.metadata);
        let reply = Reply::new(self.wire.clone(), id);
        let dispatch = route
            .service
            .call(method.id(), Request::new(method, body, reply, context));
        let mut call = CallTask::new(id, dispatch, deadline);
        // Most calls finish right here, costing no timer, no set entry, no wake-up and no
        // count in the in-flight figure.
        if let Poll::Ready((_, failure)) = Pin::new(&mut call).poll(cx) {
            if let Some(err) = failure {
                self.wire.fail(id, &err);
            }
        } else {
            call.track(CallGuard::new(&self.counters));
            let (call, cancel) = futures::future::abortable(call);
            self.calls.push(call);
            self.running.insert(id, cancel);
        }
        Ok(None)
    }
}

/// How a batch of frames ended.
enum Batch {
    /// No more frames are ready (or no more calls may start): back to waiting.
    Drained,
    /// A request must be refused with this response, once there is room to write it.
    Refuse(Header),
    /// The client closed its side.
    Eof,
}

/// Waits for `timer`; forever if there is none.
async fn fire(timer: &mut Option<Pin<Box<Sleep>>>) {
    match timer {
        Some(timer) => timer.as_mut().await,
        None => std::future::pending().await,
    }
}
