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
//! Calls run concurrently and reply in any order. The reader never stops reading because of
//! what is in flight: a request beyond the in-flight limit or the stream cap is parked or
//! refused, and one beyond the memory budgets is refused (see [`admission`](crate::admission)),
//! so a cancel, a stream's credit or the client leaving is always seen. Dropping the
//! connection drops every call it owns, its parked requests, and its writer.
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
use rpc_core::frame::{self, Frame, Oversized, SkippingDecoder};
use rpc_core::keepalive::{Keepalive, Tick};
use rpc_core::message::{decode_frame, Header, RequestHeader, Status};
use rpc_core::preamble::server_handshake;
use rpc_core::shape::fingerprint::Difference;
use rpc_core::stream::StreamTable;
use rpc_core::task::AbortOnDrop;
use rpc_core::writer::WriteQueue;
use rpc_core::{Context, Error, MethodId, Peer, PeerAddr, PeerIdentity, ProtocolError, Transport};
use tokio::io::AsyncRead;
use tokio::time::Instant;
use tokio_util::codec::FramedRead;

use crate::admission::{Account, Charge, Overload, Parked, ParkedQueue};
use crate::call::{CallTask, Running, SpawnedCall};
use crate::calls::CallTable;
use crate::idle::IdleTimer;
use crate::observe::{count_bytes, ConnectionObserved, ServerCall};
use crate::router::RunOn;
use crate::server::Shared;
use crate::service::{Reply, Request, Wire};
use crate::shutdown::Drain;
use crate::stats::{CallGuard, ConnectionGuard};
use crate::turn::TurnWaker;

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
    frames: FramedRead<R, SkippingDecoder>,
    /// What the calls share: the write queue, the streams.
    wire: Arc<Wire>,
    shared: Arc<Shared>,
    peer: PeerAddr,
    /// The peer as every call's context shares it.
    caller: Arc<Peer>,
    /// Calls still pending after their first poll; dropping the connection drops them.
    calls: CallTable,
    /// What the calls are polled with (see [`turn`](crate::turn)), and its shared state.
    turn: Arc<TurnWaker>,
    calls_waker: std::task::Waker,
    /// Requests waiting for a call to end.
    parked: ParkedQueue,
    /// This connection's bytes and streams, in its own budget and the server's.
    account: Arc<Account>,
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
            queue: Arc::new(
                WriteQueue::new(config.max_frame_len, config.write_high_water)
                    .with_budget(shared.counters.outbound.clone()),
            ),
            streams: StreamTable::default(),
            window: config.stream_window,
        });
        let (turn, calls_waker) = TurnWaker::new();
        Connection {
            // Of a frame over the limit, at most the header of a request with the largest
            // metadata allowed is read; the rest is skipped.
            frames: FramedRead::new(
                reader,
                SkippingDecoder::new(
                    config.max_frame_len,
                    config
                        .max_metadata_len
                        .saturating_add(frame::HEADER_ALLOWANCE),
                ),
            ),
            wire,
            caller: Peer::new(peer.clone(), identity),
            peer,
            calls: CallTable::default(),
            turn,
            calls_waker,
            parked: ParkedQueue::new(shared.counters.clone()),
            account: Account::new(
                config.max_inbound_bytes_per_connection,
                shared.counters.clone(),
            ),
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
        // 1. Shutdown: cheap unless the signal moved (see `Drain`). Parked requests never
        // ran: they are refused as such.
        let draining = self.drain.poll_draining(cx, &self.wire.queue)?;
        if draining {
            while let Some(parked) = self.parked.take_next(|_| true) {
                let status = Status::refusal(
                    ErrorCode::ShuttingDown,
                    "server is shutting down; the call was not run",
                );
                self.wire.streams.remove(parked.id);
                let _ = self.wire.queue.push_control(&Header::Response {
                    id: parked.id,
                    status,
                });
            }
        }

        // 2 and 3. Finished calls, then every frame already read, until neither moves: calls
        // started (and perhaps cancelled) by this turn's frames must be polled by the table
        // before the turn ends, or nothing would wake the task for them. The calls are polled
        // with the turn's waker: a call this turn wakes is polled again in it, without the
        // task rescheduling itself (see `turn`).
        let turn_waker = self.turn.clone();
        let turn = turn_waker.begin(cx.waker());
        let calls_waker = self.calls_waker.clone();
        let mut calls_cx = TaskContext::from_waker(&calls_waker);
        let mut rewakes = 0;
        loop {
            turn.clear();
            self.reap_calls(&mut calls_cx);
            let mut read_any = false;
            let mut batch_start = None;
            // Under load frames arrive by the dozen: all of them are taken in this turn. The
            // runtime's budget ends the loop if the socket never runs dry. Reading goes on at
            // the in-flight limit: requests beyond it are parked or refused.
            loop {
                let frame = match self.frames.poll_next_unpin(cx) {
                    Poll::Ready(Some(Ok(frame))) => frame,
                    Poll::Ready(Some(Err(err))) => return Poll::Ready(Err(err)),
                    Poll::Ready(None) => return Poll::Ready(Ok(Turn::Close(Closed::Normally))),
                    Poll::Pending => break,
                };
                read_any = true;
                // One clock read per batch: deadlines count from when the batch was read.
                let now = *batch_start.get_or_insert_with(Instant::now);
                let refusal = match frame {
                    Frame::Whole(frame) => self.on_frame(frame, draining, now, &mut calls_cx)?,
                    Frame::Oversized(over) => self.on_oversized(&over, now)?,
                };
                if let Some(refusal) = refusal {
                    self.heard = true;
                    return Poll::Ready(Ok(Turn::Refuse(refusal)));
                }
            }
            if read_any {
                self.heard = true;
            } else if turn.woken() && rewakes < MAX_REWAKES {
                // A call was woken after the table was last polled (by this turn's frames,
                // or from elsewhere). A call that keeps waking itself (a handler that
                // yields) is left to the task's own wake when the turn ends.
                rewakes += 1;
            } else {
                break;
            }
        }
        drop(turn);

        // 4. Keepalive: calls in flight or not, a silent client is pinged, then given up.
        if let Some(keepalive) = &mut self.keepalive {
            let heard = &mut self.heard;
            let mut heard = || std::mem::take(heard);
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

    /// Takes every finished call out of the table and sends the error of any that failed;
    /// starts the parked requests that now may.
    fn reap_calls(&mut self, cx: &mut TaskContext<'_>) {
        let had_calls = !self.calls.is_empty();
        loop {
            while let Some((id, failure)) = self.calls.poll_finished(cx) {
                if let Some(err) = failure {
                    self.wire.fail(id, &err);
                }
            }
            if !self.start_parked(cx) {
                break;
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
                self.on_request(request, body, frame_len, draining, now, cx)
            }
            Header::Cancel { id } => {
                self.idle.touch(now);
                self.calls.cancel(id);
                self.parked.remove(id);
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

    /// Handles the front of a frame over `max_frame_len`, whose rest the decoder skips: a
    /// request is refused with `MessageTooLarge` (returned, to be sent once there is room),
    /// an item of a stream a handler reads fails that call alone. The connection and its
    /// other calls go on. Any other message is never that large: a protocol error.
    fn on_oversized(&mut self, over: &Oversized, now: Instant) -> Result<Option<Header>, Error> {
        let err = over.error();
        match over.header()? {
            Header::Request(request) => {
                self.idle.touch(now);
                let id = request.id;
                if self.calls.contains(id) || self.parked.contains(id) {
                    return Err(ProtocolError::DuplicateRequestId { id }.into());
                }
                tracing::debug!(peer = %self.peer, request_id = id, error = %err, "refusing an oversized request");
                let status = Status::from_error(&err);
                Ok(Some(Header::Response { id, status }))
            }
            Header::StreamItem { id } => {
                self.idle.touch(now);
                // Items of a stream nobody reads any more are dropped, as any item is.
                if self.wire.streams.is_receiving(id) {
                    tracing::debug!(peer = %self.peer, request_id = id, error = %err, "failing a call whose stream sent an oversized item");
                    // The failure first, while a reply stream is still registered (then it
                    // ends that stream); then the handler is stopped.
                    self.wire.fail(id, &err);
                    self.calls.cancel(id);
                    self.parked.remove(id);
                }
                Ok(None)
            }
            _ => Err(over.protocol_error().into()),
        }
    }

    /// Starts a call and polls it once, parks it, or returns the response refusing it (see
    /// [`admission`](crate::admission)). A request id already in flight breaks the
    /// protocol: that is an error.
    fn on_request(
        &mut self,
        request: RequestHeader,
        body: Bytes,
        frame_len: usize,
        draining: bool,
        now: Instant,
        cx: &mut TaskContext<'_>,
    ) -> Result<Option<Header>, Error> {
        let id = request.id;
        let refuse = |code: ErrorCode, message: String| {
            let status = Status::refusal(code, message);
            Ok(Some(Header::Response { id, status }))
        };
        if self.calls.contains(id) || self.parked.contains(id) {
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
        // Before anything is decoded: a caller built from another signature is refused
        // unread. 0 on either side means "not given" (hand-written services, raw tools).
        let ours = route.method.fingerprint();
        if request.fingerprint != 0 && ours != 0 && request.fingerprint != ours {
            return refuse(
                ErrorCode::SignatureMismatch,
                signature_mismatch(ours, request.fingerprint),
            );
        }
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
        let run = route.run;
        let (observe, trace) = ServerCall::start(method, id, &self.peer, &request.metadata, now);
        let mut context =
            Context::on_connection(id, method, deadline, self.caller.clone(), request.metadata);
        if trace.is_some() {
            context = context.with_trace(trace);
        }
        let reply = Reply::new(self.wire.clone(), id);
        let opened = self.wire.streams.inbound_opened();
        // The service picks its handler inside the call's span. (A guard, not a closure:
        // one path for the request's moves, with or without a span.)
        let entered = observe.enter();
        let dispatch = route
            .service
            .call(Request::new(method, body, reply, context));
        drop(entered);
        // The client may fill a stream's window at once: it is held from the start.
        let stream = self.wire.streams.inbound_opened() != opened;
        let bytes = frame_len + CALL_OVERHEAD + if stream { self.wire.window } else { 0 };

        let refusal = if !self.account.has_room(bytes) {
            format!(
                "the server holds as much for its clients as its inbound budget allows \
                 ({bytes} more bytes do not fit); the call was not run, try again later"
            )
        } else if self.may_start(stream) {
            let call = CallTask::new(
                id,
                dispatch,
                deadline,
                config.expose_panic_messages,
                observe,
            );
            self.start(call, run, ToCharge::Due { bytes, stream }, cx);
            return Ok(None);
        } else if config.overload == Overload::Shed {
            self.at_limit()
        } else {
            let charge = self.account.charge(bytes, stream);
            // The call's span and metrics wait with it: its duration counts the wait.
            self.parked.push(Parked {
                id,
                dispatch,
                deadline,
                run,
                stream,
                charge,
                observe,
            });
            return Ok(None);
        };
        // Refused: the handler's future is dropped unpolled, and its stream forgotten.
        drop(dispatch);
        if stream {
            self.wire.streams.remove(id);
        }
        observe.refused();
        refuse(ErrorCode::Overloaded, refusal)
    }

    /// Whether a call (receiving a client stream, if `stream`) may start now: the
    /// connection is below its in-flight limit and, for a stream, below its cap on streams.
    fn may_start(&self, stream: bool) -> bool {
        let config = &self.shared.config;
        self.calls.len() < config.max_in_flight_per_connection
            && (!stream || self.running_streams() < config.max_streams_per_connection)
    }

    /// Calls running that receive a client stream.
    fn running_streams(&self) -> usize {
        self.account.streams() - self.parked.streams()
    }

    /// Why a request cannot start now, for its refusal.
    fn at_limit(&self) -> String {
        let config = &self.shared.config;
        format!(
            "connection at its limit of {} calls in flight ({} of them receiving streams, \
             at most {}); the call was not run",
            config.max_in_flight_per_connection,
            self.running_streams(),
            config.max_streams_per_connection
        )
    }

    /// Starts the oldest parked requests that now may; whether it started any.
    fn start_parked(&mut self, cx: &mut TaskContext<'_>) -> bool {
        let mut started = false;
        while !self.parked.is_empty() {
            let config = &self.shared.config;
            let room = self.calls.len() < config.max_in_flight_per_connection;
            let stream_room = self.running_streams() < config.max_streams_per_connection;
            let Some(parked) = self
                .parked
                .take_next(|parked| room && (stream_room || !parked.stream))
            else {
                break;
            };
            let call = CallTask::new(
                parked.id,
                parked.dispatch,
                parked.deadline,
                config.expose_panic_messages,
                parked.observe,
            );
            self.start(call, parked.run, ToCharge::Taken(parked.charge), cx);
            started = true;
        }
        started
    }

    /// Runs a call: polls it once in place (most finish right there), or spawns it; a call
    /// still pending joins the call table, holding its charge until it ends.
    // Inlined into the request path as it was before parking existed: called, it cost about
    // 40 instructions a call in moving its arguments (callgrind, rpc-bench's inproc).
    #[inline(always)]
    fn start(
        &mut self,
        mut call: CallTask,
        run: RunOn,
        charge: ToCharge,
        cx: &mut TaskContext<'_>,
    ) {
        let id = call.id();
        if run == RunOn::Connection {
            // Most calls finish right here, costing no timer, no set entry, no wake-up, no
            // charge and no count in the in-flight figure.
            if let Poll::Ready((_, failure)) = Pin::new(&mut call).poll(cx) {
                if let Some(err) = failure {
                    self.wire.fail(id, &err);
                }
                return;
            }
        }
        let charge = match charge {
            ToCharge::Taken(charge) => charge,
            ToCharge::Due { bytes, stream } => self.account.charge(bytes, stream),
        };
        call.track(CallGuard::new(&self.shared.counters), charge);
        let running = match run {
            RunOn::Connection => Running::InPlace(call),
            RunOn::OwnTask => Running::Spawned(SpawnedCall::spawn(call)),
        };
        self.calls.insert(id, running);
    }
}

/// How many times a turn that read nothing polls its calls again because one was woken:
/// beyond, the turn ends and the wake reschedules the task, as a yield does.
const MAX_REWAKES: usize = 2;

/// What a call costs beyond its request's bytes (its bookkeeping, its handler's future), as
/// counted against the budgets: so that many tiny requests parked or running add up too.
const CALL_OVERHEAD: usize = 512;

/// A call's charge against the budgets: already taken (it was parked), or to take if the
/// call does not finish in its first poll.
enum ToCharge {
    Taken(Charge),
    Due { bytes: usize, stream: bool },
}

/// The detail of a [`SignatureMismatch`](Error::SignatureMismatch) refusal.
#[cold]
fn signature_mismatch(ours: u64, theirs: u64) -> String {
    let what =
        Difference::between(ours, theirs).map_or("the signature differs", Difference::describe);
    format!(
        "{what} from the server's (client fingerprint {theirs:#018x}, server \
         {ours:#018x}); the call was not decoded or run"
    )
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
