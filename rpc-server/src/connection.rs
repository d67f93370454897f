//! One connection: read frames, start calls, write replies.
//!
//! A connection is two tasks: the reader (this file), which decodes frames and drives the
//! calls, and the writer ([`WriteQueue::run`]), a task the reader owns, which flushes every
//! queued reply in one write. The reader is one hand-written poll loop ([`Connection::poll_turn`]):
//! each turn it looks at the shutdown signal, reaps finished calls and takes every frame
//! already read, and only a refusal that must wait for room leaves the loop. Each call is
//! polled once where its request was read (see [`CallTask`]); the ones still pending join a
//! set the reader polls in the same turn. Calls run concurrently and reply in any order. When
//! `max_in_flight_per_connection` calls are pending the reader stops reading, so the client
//! is slowed by TCP rather than buffered here. Dropping the connection drops every call it
//! owns, and its writer.
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
        let now = Instant::now();
        let mut turn = TurnState {
            idle,
            last_active: now,
            // One timer for the connection's life, moved on only when it fires early (there
            // was traffic since): a call costs it nothing.
            idle_timer: idle.and_then(|idle| {
                let at = now.checked_add(idle)?;
                Some(Box::pin(tokio::time::sleep_until(at)))
            }),
            draining: *self.shutdown.borrow(),
            probe: self.shutdown.clone(),
        };
        if turn.draining {
            self.wire.queue.push(&Header::GoAway, |_| Ok(()))?;
        }
        // Also one future for the connection's life, for the same reason. Polled once here,
        // it holds this task's waker (a task's waker never changes); after that it is polled
        // only when a cheap version check says there is news, because polling it takes a lock.
        let mut shutdown = self.shutdown.clone();
        // Unconstrained: the runtime's budget must not skip the first poll, which registers.
        let shutdown_changed = tokio::task::unconstrained(shutdown.changed());
        tokio::pin!(shutdown_changed);
        if !turn.draining && futures::poll!(&mut shutdown_changed).is_ready() {
            turn.draining = true;
            self.wire.queue.push(&Header::GoAway, |_| Ok(()))?;
        }
        loop {
            let next =
                std::future::poll_fn(|cx| self.poll_turn(cx, &mut turn, shutdown_changed.as_mut()))
                    .await?;
            match next {
                Turn::Refuse(header) => {
                    // Waits for room: a client that does not read its replies is slowed
                    // down, not buffered for.
                    self.wire.queue.send(&header, |_| Ok(())).await?;
                }
                Turn::Close => return Ok(()),
            }
        }
    }

    /// One turn of the connection: everything that is ready, in order — the shutdown
    /// signal, finished calls, every frame already read (starting calls), the idle timer.
    /// Pending once nothing is left to do; ready only when the caller must act (write a
    /// refusal, which may wait for room; close).
    fn poll_turn(
        &mut self,
        cx: &mut TaskContext<'_>,
        turn: &mut TurnState,
        shutdown: Pin<&mut impl Future>,
    ) -> Poll<Result<Turn, Error>> {
        // A dropped sender means the server itself is gone: that is news too, and drains.
        if !turn.draining
            && turn.probe.has_changed().unwrap_or(true)
            && shutdown.poll(cx).is_ready()
        {
            turn.draining = true;
            self.wire.queue.push(&Header::GoAway, |_| Ok(()))?;
        }
        // Finished calls, then every frame already read, until neither moves: calls started
        // (and perhaps cancelled) by this turn's frames must be polled by the set before the
        // turn ends, or nothing would wake the task for them.
        loop {
            self.reap_calls(cx, turn);
            let mut read_any = false;
            let mut batch_start = None;
            // Under load frames arrive by the dozen: all of them are taken in this turn. The
            // runtime's budget ends the loop if the socket never runs dry; at the in-flight
            // limit reading stops, so the client is slowed down by TCP.
            while self.calls.len() < self.config.max_in_flight_per_connection {
                let frame = match self.frames.poll_next_unpin(cx) {
                    Poll::Ready(Some(Ok(frame))) => frame,
                    Poll::Ready(Some(Err(err))) => return Poll::Ready(Err(err)),
                    Poll::Ready(None) => return Poll::Ready(Ok(Turn::Close)),
                    Poll::Pending => break,
                };
                read_any = true;
                // One clock read per batch: deadlines count from when the batch was read.
                let now = *batch_start.get_or_insert_with(Instant::now);
                turn.last_active = now;
                if let Some(refusal) = self.on_frame(frame, turn.draining, now, cx)? {
                    return Poll::Ready(Ok(Turn::Refuse(refusal)));
                }
            }
            if !read_any {
                break;
            }
        }
        if turn.draining && self.calls.is_empty() {
            return Poll::Ready(Ok(Turn::Close));
        }
        if self.calls.is_empty() {
            if let Some(timer) = &mut turn.idle_timer {
                if timer.as_mut().poll(cx).is_ready() {
                    let due = turn
                        .idle
                        .and_then(|idle| turn.last_active.checked_add(idle));
                    match due {
                        Some(due) if due > Instant::now() => {
                            timer.as_mut().reset(due);
                            // Registers the new deadline.
                            let _ = timer.as_mut().poll(cx);
                        }
                        _ => {
                            tracing::debug!(peer = %self.peer, "closing idle connection");
                            return Poll::Ready(Ok(Turn::Close));
                        }
                    }
                }
            }
        }
        Poll::Pending
    }

    /// Takes every finished call out of the set and sends the error of any that failed.
    fn reap_calls(&mut self, cx: &mut TaskContext<'_>, turn: &mut TurnState) {
        while !self.calls.is_empty() {
            let Poll::Ready(Some(done)) = self.calls.poll_next_unpin(cx) else {
                break;
            };
            // A call's reply is queued before anything else is read, so no request for a
            // reused id can arrive in between. Cancelled calls were forgotten when cancelled.
            if let Ok((id, failure)) = done {
                self.running.remove(&id);
                if let Some(err) = failure {
                    self.wire.fail(id, &err);
                }
            }
            if self.calls.is_empty() {
                turn.last_active = Instant::now();
            }
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
            .call(Request::new(method, body, reply, context));
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

/// What a turn of the connection hands to its async loop.
enum Turn {
    /// A request must be refused with this response, once there is room to write it.
    Refuse(Header),
    /// The connection is done: the client left, it idled out, or it drained.
    Close,
}

/// The connection loop's own state between turns.
struct TurnState {
    idle: Option<Duration>,
    last_active: Instant,
    idle_timer: Option<Pin<Box<Sleep>>>,
    draining: bool,
    /// Tells cheaply whether the shutdown signal moved.
    probe: watch::Receiver<bool>,
}
