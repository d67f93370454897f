//! One connection: read frames, start calls, write replies.
//!
//! [`serve`] reads as four steps: the preamble; the reader (this task) and the writer
//! ([`WriteQueue::run`], a task the reader owns, which flushes every queued reply in one
//! write); reading and running calls until the peer leaves, breaks the protocol, idles out,
//! stops answering keepalive pings or drains; closing. The reader is one hand-written poll
//! loop ([`Connection::poll_turn`]), whose every turn is five steps: the shutdown signal
//! ([`Drain`]), finished calls ([`CallTable`]), every frame already read, the keepalive
//! ([`Keepalive`]), the idle timer ([`IdleTimer`]). Only a refusal that must wait for room
//! leaves the loop. Each call is polled once where its request was read (see [`CallTask`]);
//! the ones still pending join the call table, which the reader polls in the same turn.
//! Calls run concurrently and reply in any order. When `max_in_flight_per_connection` calls
//! are pending the reader stops reading, so the client is slowed by TCP rather than
//! buffered here. Dropping the connection drops every call it owns, and its writer.
//!
//! Handlers of one connection share its task: a handler that blocks its thread (heavy CPU
//! work, blocking I/O) delays the other calls of that connection, as in any async code. Host
//! such a service with `ServerBuilder::serve_spawned` (each call a task of its own, still in
//! this connection's call table), or use `tokio::task::spawn_blocking` for the blocking part.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use rpc_core::error::ErrorCode;
use rpc_core::frame::{self, FrameDecoder};
use rpc_core::keepalive::{Keepalive, Tick};
use rpc_core::message::{decode_frame, Header, RequestHeader, Status};
use rpc_core::preamble::server_handshake;
use rpc_core::stream::StreamTable;
use rpc_core::task::AbortOnDrop;
use rpc_core::writer::WriteQueue;
use rpc_core::{Context, Error, MethodId, PeerAddr, PeerIdentity, ProtocolError, Transport};
use tokio::io::AsyncRead;
use tokio::time::Instant;
use tokio_util::codec::FramedRead;

use crate::call::{CallTask, Running, SpawnedCall};
use crate::calls::CallTable;
use crate::idle::IdleTimer;
use crate::observe::{count_bytes, ConnectionObserved, ServerCall};
use crate::router::RunOn;
use crate::server::Shared;
use crate::service::{Reply, Request, Wire};
use crate::shutdown::Drain;
use crate::stats::{CallGuard, ConnectionGuard};

/// Serves one accepted stream until the peer leaves, breaks the protocol, idles out, stops
/// answering keepalive pings, or the server shuts down.
pub(crate) async fn serve<T: Transport>(mut stream: T, shared: Arc<Shared>) {
    let _open = ConnectionGuard::new(shared.counters.clone());
    let _observed = ConnectionObserved::new();
    let peer = stream.peer();
    // Verified by the TLS handshake, if any; shared by every call's context.
    let identity = stream.peer_identity().map(Arc::new);

    // 1. The preamble, within its time limit.
    if let Err(err) = handshake(&mut stream, shared.config.preamble_timeout).await {
        tracing::warn!(%peer, error = %err, "dropping connection: no valid preamble");
        return;
    }
    tracing::debug!(%peer, "connection open");

    // 2. The reader (this task) and the writer. The writer is a task of its own, so that
    // under load one thread can write replies while another reads and runs calls; this task
    // owns it, and dropping the connection aborts it.
    let (reader, writer) = stream.into_split();
    let (reader, writer) = count_bytes(reader, writer);
    let mut connection = Connection::new(reader, shared, peer.clone(), identity);
    let wire = connection.wire.clone();
    let mut write = AbortOnDrop::spawn({
        let queue = wire.queue.clone();
        async move { queue.run(writer).await }
    });

    // 3. Read frames and run calls until the reader is done or the writer fails.
    let read = connection.run();
    tokio::pin!(read);
    tokio::select! {
        outcome = &mut read => {
            match outcome {
                Ok(Closed::Normally) => tracing::debug!(%peer, "connection closed"),
                Ok(Closed::PeerSilent { timeout }) => {
                    let err = Error::closed(format!(
                        "the client did not answer a keepalive ping within {} ms",
                        timeout.as_millis()
                    ));
                    tracing::warn!(%peer, error = %err, "closing connection");
                    // 4. Close at once: the client reads nothing, so a flush could wait as
                    // long as TCP does. Returning drops the writer and every call (each
                    // counts out of the in-flight figure).
                    wire.streams.close(err);
                    return;
                }
                Err(err) => tracing::warn!(%peer, error = %err, "closing connection"),
            }
            // 4. Close: streams a handler handed elsewhere learn that the connection is
            // gone; what is queued (a go-away, the last replies) is flushed.
            wire.streams.close(Error::closed("the connection closed"));
            wire.queue.close();
            let _ = (&mut write).await;
        }
        outcome = &mut write => {
            let err = match outcome {
                Ok(Ok(())) => None,
                Ok(Err(err)) => Some(err),
                Err(join) => Some(Error::closed(format!("the writer stopped: {join}"))),
            };
            // 4. Close: nothing more can be written; the calls in flight are dropped with
            // the reader.
            if let Some(err) = err {
                tracing::debug!(%peer, error = %err, "connection lost while writing");
                wire.streams.close(err);
            }
        }
    }
}

/// Reads and answers the client's preamble, failing after `limit`.
async fn handshake<T: Transport>(stream: &mut T, limit: Duration) -> Result<(), Error> {
    match tokio::time::timeout(limit, server_handshake(stream)).await {
        Ok(answered) => answered,
        Err(_) => Err(ProtocolError::PreambleTimeout {
            millis: u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
        }
        .into()),
    }
}

/// The reader half of a connection and everything it drives.
struct Connection<R> {
    frames: FramedRead<R, FrameDecoder>,
    /// What the calls share: the write queue, the streams.
    wire: Arc<Wire>,
    shared: Arc<Shared>,
    peer: PeerAddr,
    identity: Option<Arc<PeerIdentity>>,
    /// Calls still pending after their first poll; dropping the connection drops them.
    calls: CallTable,
    drain: Drain,
    /// `None` when the server sends no pings.
    keepalive: Option<Keepalive>,
    /// Whether a frame was read since the keepalive last looked.
    heard: bool,
    idle: IdleTimer,
}

impl<R: AsyncRead + Unpin> Connection<R> {
    fn new(
        reader: R,
        shared: Arc<Shared>,
        peer: PeerAddr,
        identity: Option<Arc<PeerIdentity>>,
    ) -> Self {
        let config = &shared.config;
        let wire = Arc::new(Wire {
            queue: Arc::new(WriteQueue::new(
                config.max_frame_len,
                config.write_high_water,
            )),
            streams: StreamTable::default(),
            window: config.stream_window,
        });
        Connection {
            frames: FramedRead::new(reader, FrameDecoder::new(config.max_frame_len)),
            wire,
            peer,
            identity,
            calls: CallTable::default(),
            drain: shared.shutdown.drain(),
            keepalive: Keepalive::new(config.keepalive_interval, config.keepalive_timeout),
            heard: false,
            idle: IdleTimer::new(config.idle_timeout),
            shared,
        }
    }

    async fn run(&mut self) -> Result<Closed, Error> {
        loop {
            match std::future::poll_fn(|cx| self.poll_turn(cx)).await? {
                Turn::Refuse(header) => {
                    // Waits for room: a client that does not read its replies is slowed
                    // down, not buffered for.
                    self.wire.queue.send_control(&header).await?;
                }
                Turn::Close(closed) => return Ok(closed),
            }
        }
    }

    /// One turn of the connection: everything that is ready, in five steps — the shutdown
    /// signal, finished calls, every frame already read (starting calls), the keepalive,
    /// the idle timer. Pending once nothing is left to do; ready only when the caller must
    /// act (write a refusal, which may wait for room; close).
    fn poll_turn(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<Turn, Error>> {
        // 1. Shutdown: cheap unless the signal moved (see `Drain`).
        let draining = self.drain.poll_draining(cx, &self.wire.queue)?;

        // 2 and 3. Finished calls, then every frame already read, until neither moves: calls
        // started (and perhaps cancelled) by this turn's frames must be polled by the table
        // before the turn ends, or nothing would wake the task for them.
        loop {
            self.reap_calls(cx);
            let mut read_any = false;
            let mut batch_start = None;
            // Under load frames arrive by the dozen: all of them are taken in this turn. The
            // runtime's budget ends the loop if the socket never runs dry; at the in-flight
            // limit reading stops, so the client is slowed down by TCP.
            while self.calls.len() < self.shared.config.max_in_flight_per_connection {
                let frame = match self.frames.poll_next_unpin(cx) {
                    Poll::Ready(Some(Ok(frame))) => frame,
                    Poll::Ready(Some(Err(err))) => return Poll::Ready(Err(err)),
                    Poll::Ready(None) => return Poll::Ready(Ok(Turn::Close(Closed::Normally))),
                    Poll::Pending => break,
                };
                read_any = true;
                // One clock read per batch: deadlines count from when the batch was read.
                let now = *batch_start.get_or_insert_with(Instant::now);
                if let Some(refusal) = self.on_frame(frame, draining, now, cx)? {
                    self.heard = true;
                    return Poll::Ready(Ok(Turn::Refuse(refusal)));
                }
            }
            if !read_any {
                break;
            }
            self.heard = true;
        }

        // 4. Keepalive: calls in flight or not, a silent client is pinged, then given up.
        if let Some(keepalive) = &mut self.keepalive {
            let heard = &mut self.heard;
            let calls = &self.calls;
            let limit = self.shared.config.max_in_flight_per_connection;
            // Held at the in-flight limit, this side stopped reading: the pong may be
            // waiting unread, so the client is not to blame.
            let mut heard = || std::mem::take(heard) || calls.len() >= limit;
            while let Poll::Ready(tick) = keepalive.poll_tick(cx, &mut heard) {
                match tick {
                    Tick::Ping(payload) => {
                        // Best effort: if the queue is gone, so is the connection.
                        let _ = self.wire.queue.push_control(&Header::Ping { payload });
                    }
                    Tick::Dead { timeout } => {
                        return Poll::Ready(Ok(Turn::Close(Closed::PeerSilent { timeout })))
                    }
                }
            }
        }

        if !self.calls.is_empty() {
            return Poll::Pending;
        }
        if draining {
            return Poll::Ready(Ok(Turn::Close(Closed::Normally)));
        }

        // 5. Idle: only with no call in flight.
        if self.idle.poll_expired(cx).is_ready() {
            tracing::debug!(peer = %self.peer, "closing idle connection");
            return Poll::Ready(Ok(Turn::Close(Closed::Normally)));
        }
        Poll::Pending
    }

    /// Takes every finished call out of the table and sends the error of any that failed.
    fn reap_calls(&mut self, cx: &mut TaskContext<'_>) {
        let had_calls = !self.calls.is_empty();
        while let Some((id, failure)) = self.calls.poll_finished(cx) {
            if let Some(err) = failure {
                self.wire.fail(id, &err);
            }
        }
        // The idle time counts from when the last call ended.
        if had_calls && self.calls.is_empty() {
            self.idle.touch(Instant::now());
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
        let frame_len = frame::wire_len(&frame);
        let (header, body) = decode_frame(frame)?;
        match header {
            Header::Request(request) => {
                self.idle.touch(now);
                self.on_request(request, body, draining, now, cx)
            }
            Header::Cancel { id } => {
                self.idle.touch(now);
                self.calls.cancel(id);
                self.wire.streams.remove(id);
                Ok(None)
            }
            // Keepalive frames are not activity for the idle timeout (as in gRPC): a client
            // that only pings still idles out.
            Header::Ping { payload } => {
                self.wire.queue.answer_ping(payload);
                Ok(None)
            }
            Header::Pong { .. } => Ok(None),
            // Stream frames go to their stream; anything else has no business here.
            other => {
                self.idle.touch(now);
                match self
                    .wire
                    .streams
                    .route(other, body, frame_len, &"the client's stream")?
                {
                    None => Ok(None),
                    Some((other, _)) => {
                        Err(ProtocolError::UnexpectedMessage { kind: other.kind() }.into())
                    }
                }
            }
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
            let status = Status::refusal(code, message);
            Ok(Some(Header::Response { id, status }))
        };
        if self.calls.contains(id) {
            return Err(ProtocolError::DuplicateRequestId { id }.into());
        }
        // A health check is answered while draining (with `NotServing`): it is how a
        // balancer that asks learns why.
        if draining && request.method != rpc_core::health::CHECK.id().as_u64() {
            return refuse(
                ErrorCode::ShuttingDown,
                "server is shutting down; the call was not run".into(),
            );
        }
        let config = &self.shared.config;
        let Some(route) = self.shared.router.get(MethodId::from_u64(request.method)) else {
            return refuse(
                ErrorCode::UnknownMethod,
                format!("no method with id {:#018x}", request.method),
            );
        };
        let metadata_len = request.metadata.byte_len();
        if metadata_len > config.max_metadata_len {
            let err = ProtocolError::MetadataTooLarge {
                len: metadata_len,
                max: config.max_metadata_len,
            };
            return refuse(ErrorCode::BadRequest, err.to_string());
        }
        let deadline = request
            .timeout_micros
            // A deadline too far to represent is no deadline (the peer chose the number).
            .and_then(|micros| now.checked_add(Duration::from_micros(micros)));
        let method = route.method;
        let (observe, trace) = ServerCall::start(method, id, &self.peer, &request.metadata, now);
        let mut context = Context::new(id, method, deadline, self.peer.clone(), request.metadata)
            .with_peer_identity(self.identity.clone());
        if trace.is_some() {
            context = context.with_trace(trace);
        }
        let reply = Reply::new(self.wire.clone(), id);
        // The service picks its handler inside the call's span.
        let dispatch = observe.in_scope(|| {
            route
                .service
                .call(Request::new(method, body, reply, context))
        });
        let mut call = CallTask::new(
            id,
            dispatch,
            deadline,
            config.expose_panic_messages,
            observe,
        );
        let running = match route.run {
            RunOn::Connection => {
                // Most calls finish right here, costing no timer, no set entry, no wake-up
                // and no count in the in-flight figure.
                if let Poll::Ready((_, failure)) = Pin::new(&mut call).poll(cx) {
                    if let Some(err) = failure {
                        self.wire.fail(id, &err);
                    }
                    return Ok(None);
                }
                call.track(CallGuard::new(&self.shared.counters));
                Running::InPlace(call)
            }
            RunOn::OwnTask => {
                call.track(CallGuard::new(&self.shared.counters));
                Running::Spawned(SpawnedCall::spawn(call))
            }
        };
        self.calls.insert(id, running);
        Ok(None)
    }
}

/// What a turn of the connection hands to its async loop.
enum Turn {
    /// A request must be refused with this response, once there is room to write it.
    Refuse(Header),
    /// The connection is done.
    Close(Closed),
}

/// Why a connection's reader finished without an error.
enum Closed {
    /// The client left, the connection idled out, or it drained: flush what is queued.
    Normally,
    /// The client sent nothing for `timeout` after a keepalive ping: close at once.
    PeerSilent { timeout: Duration },
}
