//! [`Call`]: one remote call, configured before it is awaited.
//!
//! A call goes through one path, in attempts. `Plan::start_now` and `Plan::start` start
//! an attempt (the first when nothing has to be waited for, the second waiting for a
//! connection, a permit or room); both queue the request through `Plan::queue`. An attempt
//! in flight is a `Sent`, polled for its reply, and `Plan::settle` turns the reply into
//! the call's result or into "refused unrun": the server said it ran none of the call, so
//! the next attempt goes to a new connection. The deadline is resolved once, when the call
//! is first polled, and covers every attempt.
//!
//! The common case (a unary call, a live connection, a free permit, room in the write
//! buffer) is sent in the call's first poll and then polls its slot, all in place: no
//! allocation, no timer for a far deadline (the connection's sweep enforces it), no boxed
//! future, and the call's state is never moved.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::Bytes;
use rpc_core::deadline::{Deadline, Timer};
use rpc_core::error::ErrorCode;
use rpc_core::message::{Header, RequestHeader, Status};
use rpc_core::stream::{self, Inbound, Receiver, Stream};
use rpc_core::task::AbortOnDrop;
use rpc_core::writer::Batch;
use rpc_core::{Bincode, Codec, Context, Error, Metadata, Method};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;

use crate::client::Client;
use crate::connection::{Connection, Reply, SWEEP_MIN};
use crate::observe::{count_items, ClientCall};
use crate::permits::Permits;

/// A call to a remote method, returned by the generated stub methods.
///
/// Await it directly, or configure it first:
///
/// ```no_run
/// # async fn demo(client: rpc::Client, method: rpc::Method) -> Result<(), rpc::Error> {
/// use std::time::Duration;
/// let sum: i64 = client
///     .call(method, (2i64, 3i64))
///     .timeout(Duration::from_millis(50))
///     .metadata("authorization", "Bearer secret")
///     .await?;
/// # Ok(()) }
/// ```
///
/// Dropping the future before it completes cancels the call: the server aborts the handler.
/// For a method that returns a stream, the call resolves to the [`Stream`] once the server
/// has started it; the deadline then covers the whole stream, and dropping the stream
/// cancels the call.
#[must_use = "a call does nothing until it is awaited"]
pub struct Call<Args, Out> {
    state: State<Args, Out>,
    /// The call's span and metrics, opened at the first poll.
    observe: ClientCall,
}

enum State<Args, Out> {
    /// Polled in place: not polled yet (`sent` is `None`; the call is still configurable),
    /// then sent without waiting and waiting in its slot. The common case.
    Direct {
        plan: Plan<Args, Out>,
        sent: Option<Sent>,
    },
    /// Attempts that must wait (for a connection, a permit, room) or that follow a refusal,
    /// as one boxed future.
    Waiting(Pin<Box<dyn Future<Output = Result<Out, Error>> + Send>>),
    Done,
}

/// Starts sending a call's request stream once the request is queued.
type StartUpload = Box<dyn FnOnce(Arc<Connection>, u64) -> AbortOnDrop<()> + Send>;

/// What the caller asked for: the same for every attempt.
struct Request<Args, Out> {
    client: Client,
    method: Method,
    args: Args,
    metadata: Metadata,
    /// Taken by the attempt that starts the request stream: a call whose stream started is
    /// never sent again.
    upload: Option<StartUpload>,
    /// Whether the server answers with a stream (its items need a buffer from the start).
    streaming_response: bool,
    respond: fn(Answer) -> Result<Out, Error>,
}

/// A call on its way: the request, its deadline (resolved once, for every attempt) and the
/// attempts refused unrun so far.
struct Plan<Args, Out> {
    request: Request<Args, Out>,
    /// As configured until the first poll, which resolves [`DeadlineSetting::Default`] to
    /// one of the others for every attempt.
    deadline: DeadlineSetting,
    /// Whether a request stream was consumed by an earlier attempt.
    upload_started: bool,
    /// Attempts sent so far.
    attempts: u32,
}

/// What an attempt became.
enum Settled<Out> {
    Done(Result<Out, Error>),
    /// Send the call again, on a new connection: the server ran none of it, or (an
    /// idempotent method, within the retry budget) its connection was lost.
    Again,
}

/// A successful response, with everything needed to turn it into the call's output.
pub(crate) struct Answer {
    body: Bytes,
    /// For a method that answers with a stream: what reading it needs.
    stream: Option<StreamParts>,
    /// The task sending the request stream, if any; dropping it stops the stream.
    upload: Option<AbortOnDrop<()>>,
}

struct StreamParts {
    conn: Arc<Connection>,
    id: u64,
    inbound: Arc<Inbound>,
    deadline: Option<Instant>,
    method: Method,
}

// No field is ever pinned in place: the boxed future is pinned by its box, and every other
// field moves freely. So `Call` can be `Unpin` whatever `Args` is.
impl<Args, Out> Unpin for Call<Args, Out> {}

/// The deadline the caller chose, resolved to an instant when the call is first polled.
#[derive(Debug, Clone, Copy)]
enum DeadlineSetting {
    /// The client's default timeout, or the surrounding handler's deadline if sooner.
    Default,
    At(Instant),
    Never,
}

impl<Args, Out> std::fmt::Debug for Call<Args, Out> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut f = f.debug_struct("Call");
        match &self.state {
            State::Direct { plan, sent } => f
                .field("method", &plan.request.method)
                .field("deadline", &plan.deadline)
                .field("started", &sent.is_some()),
            State::Waiting(_) | State::Done => f.field("started", &true),
        }
        .finish()
    }
}

/// How many attempts a call may take when the server refuses it unrun (it is shutting
/// down); always safe, whatever the method.
const MAX_UNRUN_ATTEMPTS: u32 = 3;

impl<Args, Out> Call<Args, Out> {
    fn with(
        client: Client,
        method: Method,
        args: Args,
        upload: Option<StartUpload>,
        streaming_response: bool,
        respond: fn(Answer) -> Result<Out, Error>,
    ) -> Self {
        let request = Request {
            client,
            method,
            args,
            metadata: Metadata::new(),
            upload,
            streaming_response,
            respond,
        };
        let plan = Plan {
            request,
            deadline: DeadlineSetting::Default,
            upload_started: false,
            attempts: 0,
        };
        Call {
            state: State::Direct { plan, sent: None },
            observe: ClientCall::idle(),
        }
    }

    /// Changes the call before it starts; a call already polled keeps what it started with.
    fn configure(mut self, f: impl FnOnce(&mut Request<Args, Out>, &mut DeadlineSetting)) -> Self {
        if let State::Direct { plan, sent: None } = &mut self.state {
            f(&mut plan.request, &mut plan.deadline);
        }
        self
    }

    /// Fails the call with [`Error::DeadlineExceeded`] if no reply arrives within `timeout`;
    /// the server stops the handler at the same moment.
    pub fn timeout(self, timeout: Duration) -> Self {
        // A timeout too long to represent as an instant means no deadline at all.
        let setting = match Instant::now().checked_add(timeout) {
            Some(at) => DeadlineSetting::At(at),
            None => DeadlineSetting::Never,
        };
        self.configure(|_, deadline| *deadline = setting)
    }

    /// Like [`timeout`](Self::timeout), with an absolute instant.
    pub fn deadline(self, at: Instant) -> Self {
        self.configure(|_, deadline| *deadline = DeadlineSetting::At(at))
    }

    /// Waits as long as it takes, ignoring the client's default timeout.
    pub fn no_deadline(self) -> Self {
        self.configure(|_, deadline| *deadline = DeadlineSetting::Never)
    }

    /// Adds a metadata pair, readable by the handler through `rpc::Context`.
    pub fn metadata(self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.configure(|request, _| request.metadata.insert(key, value))
    }
}

impl<Args, Out: DeserializeOwned> Call<Args, Out> {
    /// A call whose reply is one value.
    pub(crate) fn unary(client: Client, method: Method, args: Args) -> Self {
        Call::with(client, method, args, None, false, decode_answer::<Out>)
    }

    /// A call that sends `input` as a stream and gets one value back.
    pub(crate) fn streaming_request<In>(
        client: Client,
        method: Method,
        args: Args,
        input: Stream<In>,
    ) -> Self
    where
        In: Serialize + Send + 'static,
    {
        let upload = start_upload(input);
        Call::with(
            client,
            method,
            args,
            Some(upload),
            false,
            decode_answer::<Out>,
        )
    }
}

impl<Args, T: DeserializeOwned + Send + 'static> Call<Args, Stream<T>> {
    /// A call whose reply is a stream of `T`.
    pub(crate) fn streaming_response(client: Client, method: Method, args: Args) -> Self {
        Call::with(client, method, args, None, true, stream_answer::<T>)
    }

    /// A call that streams both ways.
    pub(crate) fn bidi<In>(client: Client, method: Method, args: Args, input: Stream<In>) -> Self
    where
        In: Serialize + Send + 'static,
    {
        let upload = start_upload(input);
        Call::with(client, method, args, Some(upload), true, stream_answer::<T>)
    }
}

fn decode_answer<Out: DeserializeOwned>(answer: Answer) -> Result<Out, Error> {
    // A unary reply means the server is done reading any request stream: `upload` is
    // dropped here, which stops it.
    Ok(Bincode.decode_shared(&answer.body)?)
}

fn stream_answer<T: DeserializeOwned + Send + 'static>(answer: Answer) -> Result<Stream<T>, Error> {
    let StreamParts {
        conn,
        id,
        inbound,
        deadline,
        method,
    } = answer
        .stream
        .ok_or_else(|| Error::closed("stream buffer missing"))?;
    let abandon = conn.clone();
    let receiver =
        Receiver::new(id, inbound, conn.queue.clone()).on_abandon(move || abandon.abandon(id));
    let items = Stream::from_results(ResponseStream {
        receiver,
        _upload: answer.upload,
        timer: Timer::new(deadline),
        expired: false,
    });
    Ok(count_items(items, method, "received"))
}

/// Sends the request stream from a task of its own, which ends with the call.
fn start_upload<In: Serialize + Send + 'static>(input: Stream<In>) -> StartUpload {
    Box::new(move |conn: Arc<Connection>, id: u64| {
        AbortOnDrop::spawn(async move {
            // Forgets the sending side however the task ends, aborted included.
            let _forget = ForgetOutbound(conn.clone(), id);
            let outbound = conn.streams().open_outbound(id, conn.window());
            match stream::send(&conn.queue, id, &outbound, input).await {
                // An item was not sent (over the frame limit, or it did not encode): the
                // call fails with that error, and the server stops it.
                Err(err @ (Error::MessageTooLarge { .. } | Error::Codec(_))) => {
                    tracing::debug!(request_id = id, error = %err, "request stream item not sent; failing the call");
                    conn.fail_call(id, err);
                }
                Err(err) => {
                    tracing::debug!(request_id = id, error = %err, "request stream stopped");
                }
                Ok(()) => {}
            }
        })
    })
}

/// Removes a call's request stream from the connection's table when dropped.
struct ForgetOutbound(Arc<Connection>, u64);

impl Drop for ForgetOutbound {
    fn drop(&mut self) {
        self.0.streams().forget_outbound(self.1);
    }
}

/// The stream a caller reads: the server's items, under the call's deadline, keeping the
/// request stream's sender alive as long as it is read.
struct ResponseStream<T> {
    receiver: Receiver<T>,
    _upload: Option<AbortOnDrop<()>>,
    timer: Timer,
    expired: bool,
}

impl<T: DeserializeOwned> futures::Stream for ResponseStream<T> {
    type Item = Result<T, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        // Every field is Unpin.
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = Pin::new(&mut this.receiver).poll_next(cx) {
            return Poll::Ready(item);
        }
        std::task::ready!(this.timer.poll_expired(cx));
        // The server stops at the same moment; dropping the receiver cancels it.
        this.expired = true;
        Poll::Ready(Some(Err(Error::DeadlineExceeded)))
    }
}

impl DeadlineSetting {
    #[inline]
    fn resolve(self, client: &Client, now: Instant) -> Option<Instant> {
        match self {
            DeadlineSetting::At(at) => Some(at),
            DeadlineSetting::Never => None,
            DeadlineSetting::Default => {
                let default = client
                    .config()
                    .default_timeout
                    .and_then(|t| now.checked_add(t));
                let inherited = Context::with_current(Context::deadline).flatten();
                match (default, inherited) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
        }
    }

    /// The same deadline with `Default` pinned to an instant: resolving it again gives the
    /// same answer, whenever that is.
    #[inline]
    fn fixed(self, client: &Client, now: Instant) -> Self {
        match self.resolve(client, now) {
            Some(at) => DeadlineSetting::At(at),
            None => DeadlineSetting::Never,
        }
    }

    /// The instant of a fixed deadline.
    #[inline]
    fn instant(self) -> Option<Instant> {
        match self {
            DeadlineSetting::At(at) => Some(at),
            DeadlineSetting::Never | DeadlineSetting::Default => None,
        }
    }
}

/// One attempt in flight: holds its slot and its permit until it ends, and cancels the call
/// on the server if the caller stops waiting first.
struct Sent {
    conn: Arc<Connection>,
    id: u64,
    /// A deadline too near for the connection's sweep; armed only if the reply is not
    /// there at the first poll.
    timer: Timer,
    /// The buffer of a streamed reply, opened before the request went out.
    inbound: Option<Arc<Inbound>>,
    upload: Option<AbortOnDrop<()>>,
    /// Set once the reply (or the connection's verdict) has been taken.
    settled: bool,
    /// Set once a streamed reply has been handed to the caller, who now owns its buffer.
    stream_taken: bool,
    /// The write the request went out with: if the connection failed before the writer
    /// took it, the server never saw the call.
    batch: Batch,
}

impl Drop for Sent {
    fn drop(&mut self) {
        if !self.settled {
            // Sends a cancel only if the call is still waiting for its reply.
            self.conn.cancel(self.id);
        }
        if self.inbound.is_some() && !self.stream_taken {
            self.conn.streams().remove(self.id);
        }
        self.conn.permits.release();
    }
}

impl Sent {
    /// The reply, the connection's verdict (its sweep, its end), or the expiry of a near
    /// deadline. Only the last leaves the call unsettled: then dropping `self` cancels it.
    #[inline]
    fn poll_reply(&mut self, cx: &mut TaskContext<'_>) -> Poll<Reply> {
        if let Poll::Ready(reply) = self.conn.poll_reply(self.id, cx) {
            self.settled = true;
            return Poll::Ready(reply);
        }
        std::task::ready!(self.timer.poll_expired(cx));
        Poll::Ready(Err(Error::DeadlineExceeded))
    }
}

/// A permit taken for an attempt that has not started yet: given back if it never does.
struct Held<'a>(&'a Permits);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// The header of a request whose deadline is `left` away.
#[inline]
fn request_header(id: u64, method: Method, left: Option<Duration>, metadata: Metadata) -> Header {
    Header::Request(RequestHeader {
        id,
        method: method.id().as_u64(),
        fingerprint: method.fingerprint(),
        timeout_micros: left.map(|left| u64::try_from(left.as_micros()).unwrap_or(u64::MAX)),
        metadata,
    })
}

impl<Args, Out> Plan<Args, Out> {
    /// Fixes the deadline for every attempt; done when the call is first polled, at `now`.
    fn fix_deadline(&mut self, now: Instant) {
        self.deadline = self.deadline.fixed(&self.request.client, now);
    }

    /// The deadline every attempt shares (fixed by [`fix_deadline`](Self::fix_deadline)).
    fn deadline(&self) -> Option<Instant> {
        self.deadline.instant()
    }
}

impl<Args: Serialize, Out> Plan<Args, Out> {
    /// Starts an attempt if nothing has to be waited for: a live connection, a free permit
    /// and room in the write buffer. `None` leaves it to [`start`](Self::start), which waits
    /// for what is missing or reports why it cannot be had.
    fn start_now(&mut self, now: Instant) -> Option<Sent> {
        let conn = self.request.client.usable_connection()?;
        if !conn.permits.try_acquire() {
            return None;
        }
        match self.queue(&conn, now) {
            // Given back by `Sent` when the attempt ends.
            Ok(Some(sent)) => Some(sent),
            _ => {
                conn.permits.release();
                None
            }
        }
    }

    /// Starts an attempt, waiting (under the call's deadline) for a connection, a permit
    /// and room in the write buffer as needed.
    async fn start(&mut self) -> Result<Sent, Error> {
        let deadline = self.deadline();
        let client = self.request.client.clone();
        let conn = Deadline::new(Box::pin(client.connection()), deadline).await??;
        // Bounded in-flight calls per connection: wait for room rather than queue without
        // bound.
        Deadline::new(Box::pin(conn.permits.acquire()), deadline).await?;
        // Given back by `Sent` when the attempt ends, or here if it never starts.
        let permit = Held(&conn.permits);
        loop {
            if let Some(sent) = self.queue(&conn, Instant::now())? {
                std::mem::forget(permit);
                return Ok(sent);
            }
            Deadline::new(Box::pin(conn.queue.ready()), deadline).await??;
        }
    }

    /// Queues the request on `conn` if the write buffer has room: takes a slot (whose
    /// deadline the connection sweeps if it is far), opens a streamed reply's buffer, writes
    /// the frame and starts the request stream. `Ok(None)`: no room, nothing was done. The
    /// timeout in the request counts from `now`.
    fn queue(&mut self, conn: &Arc<Connection>, now: Instant) -> Result<Option<Sent>, Error> {
        // A far deadline (the default one) is enforced by the connection's sweep: no timer
        // per call. A near one gets a precise timer, armed only if the call has to wait.
        let deadline = self.deadline();
        // Read once: it decides the timer and goes into the header.
        let left = deadline.map(|at| at.saturating_duration_since(now));
        let (swept, near) = match left {
            Some(left) if left > SWEEP_MIN => (deadline, None),
            _ => (None, deadline),
        };
        let id = conn.register(swept)?;
        let request = &mut self.request;
        // A streamed reply's items may follow the response at once: their buffer comes first.
        let inbound = request
            .streaming_response
            .then(|| conn.streams().open_inbound(id, conn.window()));
        // Cloning empty metadata (the common case) does not allocate.
        let header = request_header(id, request.method, left, request.metadata.clone());
        let args = &request.args;
        let queued = match conn
            .queue
            .try_push_in_batch(&header, |buf| Bincode.encode(args, buf))
        {
            Ok(Ok((_, batch))) => Ok(Some(batch)),
            Ok(Err(_full)) => Ok(None),
            Err(err) => Err(err),
        };
        let Ok(Some(batch)) = queued else {
            // The server knows nothing of this id.
            conn.unregister(id);
            if inbound.is_some() {
                conn.streams().remove(id);
            }
            return queued.map(|_| None);
        };
        let upload = request.upload.take().map(|start| start(conn.clone(), id));
        self.upload_started |= upload.is_some();
        self.attempts += 1;
        Ok(Some(Sent {
            conn: conn.clone(),
            id,
            timer: Timer::new(near),
            inbound,
            upload,
            settled: false,
            stream_taken: false,
            batch,
        }))
    }
}

impl<Args, Out> Plan<Args, Out> {
    /// Turns an attempt's reply into the call's result, or into "refused unrun" when the
    /// server ran none of it and it may be sent again: only the wire's own refusal code
    /// says so (see [`Status::is_refused_unrun`]), never an `Overloaded` from a handler.
    fn settle(&mut self, sent: &mut Sent, reply: Reply) -> Settled<Out> {
        let idempotent = self.request.method.is_idempotent();
        let (status, body) = match reply {
            Ok(reply) => reply,
            Err(err) => return self.after_failure(sent, err, idempotent),
        };
        match status {
            Status::Ok => {
                if idempotent {
                    self.request.client.budget().deposit();
                }
                sent.stream_taken = true;
                let answer = Answer {
                    body,
                    stream: sent.inbound.take().map(|inbound| StreamParts {
                        conn: sent.conn.clone(),
                        id: sent.id,
                        inbound,
                        deadline: self.deadline(),
                        method: self.request.method,
                    }),
                    upload: sent.upload.take(),
                };
                Settled::Done((self.request.respond)(answer))
            }
            Status::Error { code, message } => {
                if code == ErrorCode::ShuttingDown.to_u16() {
                    // The server is going away: new calls go to a new connection.
                    sent.conn.mark_going_away();
                    // A request stream, once started, is consumed: such a call is not
                    // sent again.
                    if !self.upload_started && self.attempts < MAX_UNRUN_ATTEMPTS {
                        self.request.client.count_retry();
                        return Settled::Again;
                    }
                }
                let err = Error::from_remote(code, message, &self.request.method);
                Settled::Done(Err(err))
            }
        }
    }

    /// An attempt that got no reply. Only a lost connection can be retried: always if the
    /// request never left this process (the connection failed before the writer took it),
    /// else only for an idempotent method (the call may have run), with attempts and budget
    /// left.
    fn after_failure(&mut self, sent: &Sent, err: Error, idempotent: bool) -> Settled<Out> {
        let lost = matches!(err, Error::ConnectionClosed { .. });
        if lost && !self.upload_started && sent.conn.queue.never_written(sent.batch) {
            if self.attempts < MAX_UNRUN_ATTEMPTS {
                tracing::debug!(method = %self.request.method, error = %err, "the connection failed before the request was written; sending it again");
                self.request.client.count_retry();
                return Settled::Again;
            }
            // Out of attempts, it still never ran.
            return Settled::Done(Err(Error::Unavailable {
                reason: format!("{err}; the request was never written"),
            }));
        }
        if lost && idempotent && !self.upload_started {
            let client = &self.request.client;
            if self.attempts < client.config().max_attempts
                && client.budget().withdraw(Instant::now())
            {
                tracing::debug!(method = %self.request.method, error = %err, attempt = self.attempts, "idempotent call lost its connection; sending it again");
                client.count_retry();
                return Settled::Again;
            }
        }
        Settled::Done(Err(err))
    }
}

impl<Args, Out> Plan<Args, Out>
where
    Args: Serialize + Send + 'static,
    Out: Send + 'static,
{
    /// Every attempt that is left, waiting where it must.
    async fn run(mut self) -> Result<Out, Error> {
        if let Some(interceptor) = self.request.client.interceptor().cloned() {
            let deadline = self.deadline();
            let request = &mut self.request;
            let prepared = interceptor.intercept(request.method, &mut request.metadata);
            Deadline::new(prepared, deadline).await??;
        }
        let mut restarts = 0;
        loop {
            let mut sent = match self.start().await {
                Ok(sent) => sent,
                // The connection died while the call waited for room or a slot on it: the
                // request was never queued, so it never ran. Another connection, if the
                // client can open one.
                Err(Error::ConnectionClosed { .. })
                    if restarts < MAX_UNRUN_ATTEMPTS && self.request.client.can_redial() =>
                {
                    restarts += 1;
                    self.request.client.count_retry();
                    continue;
                }
                Err(err) => return Err(err),
            };
            crate::observe::sent_in_current(&sent.conn.peer, sent.id);
            let reply = std::future::poll_fn(|cx| sent.poll_reply(cx)).await;
            match self.settle(&mut sent, reply) {
                Settled::Done(outcome) => return outcome,
                Settled::Again => continue,
            }
        }
    }

    /// Whether this call can be sent without waiting. Streams always take the waiting path:
    /// their tasks and buffers cost more than the box.
    fn sends_now(&self) -> bool {
        self.request.upload.is_none()
            && !self.request.streaming_response
            && self.request.client.interceptor().is_none()
    }
}

impl<Args, Out> Future for Call<Args, Out>
where
    Args: Serialize + Send + 'static,
    Out: Send + 'static,
{
    type Output = Result<Out, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let outcome = std::task::ready!(this.poll_call(cx));
        this.observe.finish(outcome.as_ref().err());
        Poll::Ready(outcome)
    }
}

impl<Args, Out> Call<Args, Out>
where
    Args: Serialize + Send + 'static,
    Out: Send + 'static,
{
    #[inline]
    fn poll_call(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<Out, Error>> {
        let this = self;
        let State::Direct { plan, sent } = &mut this.state else {
            return this.poll_waiting(cx);
        };
        let attempt = match sent {
            Some(attempt) => attempt,
            None => {
                // One clock read for the deadline and the request's timeout.
                let now = Instant::now();
                plan.fix_deadline(now);
                let request = &mut plan.request;
                this.observe = ClientCall::start(request.method, &mut request.metadata, now);
                match plan.sends_now().then(|| plan.start_now(now)).flatten() {
                    Some(attempt) => {
                        this.observe.sent(&attempt.conn.peer, attempt.id);
                        sent.insert(attempt)
                    }
                    None => return this.wait(cx),
                }
            }
        };
        let reply = std::task::ready!(attempt.poll_reply(cx));
        match plan.settle(attempt, reply) {
            // Dropping the attempt releases its slot and permit; dropping the plan now
            // releases the arguments and the client rather than when the `Call` is dropped.
            Settled::Done(outcome) => {
                this.state = State::Done;
                Poll::Ready(outcome)
            }
            // The next attempt needs a new connection: it may have to wait.
            Settled::Again => {
                *sent = None;
                this.wait(cx)
            }
        }
    }
}

impl<Args, Out> Call<Args, Out>
where
    Args: Serialize + Send + 'static,
    Out: Send + 'static,
{
    /// Moves the call to the waiting path (its remaining attempts as one boxed future) and
    /// polls it.
    fn wait(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<Out, Error>> {
        if let State::Direct { plan, .. } = std::mem::replace(&mut self.state, State::Done) {
            self.state = State::Waiting(Box::pin(plan.run()));
        }
        self.poll_waiting(cx)
    }

    /// Polls the waiting path; a call polled after it completed fails with `Cancelled`.
    fn poll_waiting(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<Out, Error>> {
        let State::Waiting(attempts) = &mut self.state else {
            return Poll::Ready(Err(Error::Cancelled));
        };
        let _entered = self.observe.enter();
        let outcome = std::task::ready!(attempts.as_mut().poll(cx));
        self.state = State::Done;
        Poll::Ready(outcome)
    }
}
