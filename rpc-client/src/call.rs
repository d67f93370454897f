//! [`Call`]: one remote call, configured before it is awaited.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::Bytes;
use rpc_core::error::ErrorCode;
use rpc_core::message::{Header, RequestHeader, Status};
use rpc_core::stream::{self, Inbound, Receiver, Stream};
use rpc_core::{Bincode, Codec, Context, Error, Metadata, Method};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::{Instant, Sleep};

use crate::client::Client;
use crate::connection::{Connection, SWEEP_MIN};

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
    /// The call as configured. Kept while the call is sent directly (a refused call is sent
    /// again from it), taken when it runs on the general path.
    setup: Option<Setup<Args, Out>>,
    state: State<Out>,
}

enum State<Out> {
    /// Not polled yet.
    Idle,
    /// Sent in the first poll, waiting in its slot: the common case, costing no allocation.
    Sent(InFlight),
    /// On the general path (waits for a connection, room or a permit; streams; near
    /// deadlines), as one boxed future.
    Running(Running<Out>),
    Done,
}

type Running<Out> = Pin<Box<dyn Future<Output = Result<Out, Error>> + Send>>;

/// Starts sending a call's request stream once the request is queued.
type StartUpload = Box<dyn FnOnce(Arc<Connection>, u64) -> AbortOnDrop + Send>;

struct Setup<Args, Out> {
    client: Client,
    method: Method,
    args: Args,
    deadline: Deadline,
    metadata: Metadata,
    upload: Option<StartUpload>,
    /// Whether the server answers with a stream (its items need a buffer from the start).
    streaming_response: bool,
    respond: fn(Answer) -> Result<Out, Error>,
}

/// A successful response, with everything needed to turn it into the call's output.
pub(crate) struct Answer {
    body: Bytes,
    /// For a method that answers with a stream: what reading it needs.
    stream: Option<StreamParts>,
    /// The task sending the request stream, if any; dropping it stops the stream.
    upload: Option<AbortOnDrop>,
}

struct StreamParts {
    conn: Arc<Connection>,
    id: u64,
    inbound: Arc<Inbound>,
    deadline: Option<Instant>,
}

// No field is ever pinned in place: `args` is moved into the boxed future before the first
// poll, and that future is pinned by its box. So `Call` can be `Unpin` whatever `Args` is.
impl<Args, Out> Unpin for Call<Args, Out> {}

#[derive(Debug, Clone, Copy)]
enum Deadline {
    /// The client's default timeout, or the surrounding handler's deadline if sooner.
    Default,
    At(Instant),
    Never,
}

impl<Args, Out> std::fmt::Debug for Call<Args, Out> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut f = f.debug_struct("Call");
        if let Some(setup) = &self.setup {
            f.field("method", &setup.method)
                .field("deadline", &setup.deadline);
        }
        f.field("started", &!matches!(self.state, State::Idle))
            .finish()
    }
}

/// How many times a call the server refused unrun (it was shutting down) is sent again.
const MAX_UNRUN_RETRIES: usize = 2;

impl<Args, Out> Call<Args, Out> {
    fn with(
        client: Client,
        method: Method,
        args: Args,
        upload: Option<StartUpload>,
        streaming_response: bool,
        respond: fn(Answer) -> Result<Out, Error>,
    ) -> Self {
        Call {
            setup: Some(Setup {
                client,
                method,
                args,
                deadline: Deadline::Default,
                metadata: Metadata::new(),
                upload,
                streaming_response,
                respond,
            }),
            state: State::Idle,
        }
    }

    fn set_deadline(mut self, deadline: Deadline) -> Self {
        if let Some(setup) = &mut self.setup {
            setup.deadline = deadline;
        }
        self
    }

    /// Fails the call with [`Error::DeadlineExceeded`] if no reply arrives within `timeout`;
    /// the server stops the handler at the same moment.
    pub fn timeout(self, timeout: Duration) -> Self {
        // A timeout too long to represent as an instant means no deadline at all.
        match Instant::now().checked_add(timeout) {
            Some(at) => self.set_deadline(Deadline::At(at)),
            None => self.set_deadline(Deadline::Never),
        }
    }

    /// Like [`timeout`](Self::timeout), with an absolute instant.
    pub fn deadline(self, deadline: Instant) -> Self {
        self.set_deadline(Deadline::At(deadline))
    }

    /// Waits as long as it takes, ignoring the client's default timeout.
    pub fn no_deadline(self) -> Self {
        self.set_deadline(Deadline::Never)
    }

    /// Adds a metadata pair, readable by the handler through `rpc::Context`.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        if let Some(setup) = &mut self.setup {
            setup.metadata.insert(key, value);
        }
        self
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
    Ok(Bincode.decode(&answer.body)?)
}

fn stream_answer<T: DeserializeOwned + Send + 'static>(answer: Answer) -> Result<Stream<T>, Error> {
    let StreamParts {
        conn,
        id,
        inbound,
        deadline,
    } = answer
        .stream
        .ok_or_else(|| Error::closed("stream buffer missing"))?;
    let abandon = conn.clone();
    let receiver =
        Receiver::new(id, inbound, conn.queue.clone()).on_abandon(move || abandon.abandon(id));
    Ok(Stream::from_results(ResponseStream {
        receiver,
        _upload: answer.upload,
        timer: deadline.map(|at| Box::pin(tokio::time::sleep_until(at))),
        expired: false,
    }))
}

/// Sends the request stream from a task of its own, which ends with the call.
fn start_upload<In: Serialize + Send + 'static>(input: Stream<In>) -> StartUpload {
    Box::new(move |conn: Arc<Connection>, id: u64| {
        let task = tokio::spawn(async move {
            // Forgets the sending side however the task ends, aborted included.
            let _forget = ForgetOutbound(conn.clone(), id);
            let outbound = conn.streams().open_outbound(id, conn.window());
            if let Err(err) = stream::send(&conn.queue, id, &outbound, input).await {
                tracing::debug!(request_id = id, error = %err, "request stream stopped");
            }
        });
        AbortOnDrop(task.abort_handle())
    })
}

/// Removes a call's request stream from the connection's table when dropped.
struct ForgetOutbound(Arc<Connection>, u64);

impl Drop for ForgetOutbound {
    fn drop(&mut self) {
        self.0.streams().forget_outbound(self.1);
    }
}

/// Aborts a task when dropped: the owner of a call's upload task.
pub(crate) struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The stream a caller reads: the server's items, under the call's deadline, keeping the
/// request stream's sender alive as long as it is read.
struct ResponseStream<T> {
    receiver: Receiver<T>,
    _upload: Option<AbortOnDrop>,
    timer: Option<Pin<Box<Sleep>>>,
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
        if let Some(timer) = &mut this.timer {
            if timer.as_mut().poll(cx).is_ready() {
                // The server stops at the same moment; dropping the receiver cancels it.
                this.expired = true;
                return Poll::Ready(Some(Err(Error::DeadlineExceeded)));
            }
        }
        Poll::Pending
    }
}

impl<Args, Out> Setup<Args, Out> {
    fn resolve_deadline(&self, now: Instant) -> Option<Instant> {
        match self.deadline {
            Deadline::At(at) => Some(at),
            Deadline::Never => None,
            Deadline::Default => {
                let default = self
                    .client
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
}

impl<Args: Serialize, Out> Setup<Args, Out> {
    /// Sends a plain unary call at once, if nothing has to be waited for: a live connection,
    /// a free permit and room in the write buffer. `None` leaves the call to the general
    /// path ([`run`](Self::run)), which waits for whatever is missing or reports why not.
    fn send_now(&self) -> Option<Result<InFlight, Error>> {
        if self.upload.is_some() || self.streaming_response {
            return None;
        }
        let now = Instant::now();
        let deadline = self.resolve_deadline(now);
        // A near deadline needs a precise timer: the general path arms one.
        if deadline.is_some_and(|at| at.saturating_duration_since(now) <= SWEEP_MIN) {
            return None;
        }
        let conn = self.client.usable_connection()?;
        let permit = conn.permits.try_acquire().ok()?;
        let id = conn.register(deadline).ok()?;
        let header = request_header(id, self.method, deadline, now, self.metadata.clone());
        match conn
            .queue
            .try_push(&header, |buf| Bincode.encode(&self.args, buf))
        {
            Ok(Ok(_)) => {
                // Given back by `InFlight` when the call ends.
                permit.forget();
                Some(Ok(InFlight {
                    conn,
                    id,
                    settled: false,
                }))
            }
            Ok(Err(_full)) => {
                conn.unregister(id);
                None
            }
            Err(err) => {
                conn.unregister(id);
                Some(Err(err))
            }
        }
    }
}

/// The header of a request sent at `now`.
fn request_header(
    id: u64,
    method: Method,
    deadline: Option<Instant>,
    now: Instant,
    metadata: Metadata,
) -> Header {
    Header::Request(RequestHeader {
        id,
        method: method.id().as_u64(),
        timeout_micros: deadline.map(|d| {
            let left = d.saturating_duration_since(now);
            u64::try_from(left.as_micros()).unwrap_or(u64::MAX)
        }),
        metadata,
    })
}

/// A call sent by [`Setup::send_now`]: holds its slot and its permit until it ends, and
/// cancels it on the server if the caller stops waiting first.
struct InFlight {
    conn: Arc<Connection>,
    id: u64,
    /// Set once the reply (or the connection's verdict) has been taken.
    settled: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.settled {
            self.conn.cancel(self.id);
        }
        self.conn.permits.add_permits(1);
    }
}

impl<Args: Serialize + Send + 'static, Out: Send + 'static> Setup<Args, Out> {
    /// The general path: every wait, every kind of call. `attempt` counts the times the call
    /// was already refused unrun.
    async fn run(self, mut attempt: usize) -> Result<Out, Error> {
        let deadline = self.resolve_deadline(Instant::now());
        let Setup {
            client,
            method,
            mut args,
            metadata,
            mut upload,
            streaming_response,
            respond,
            ..
        } = self;
        let attempts = async {
            loop {
                let conn = within(deadline, client.connection()).await?;
                let had_upload = upload.is_some();
                let mut shape = Shape {
                    method,
                    deadline,
                    upload: upload.take(),
                    streaming_response,
                };
                // Cloning empty metadata (the common case) does not allocate.
                match send(&conn, &mut shape, &mut args, metadata.clone()).await {
                    // Sent again only if nothing was consumed: a request stream is gone
                    // once it started.
                    Err(Error::Overloaded { .. })
                        if attempt < MAX_UNRUN_RETRIES
                            && !conn.is_usable()
                            && shape.upload.is_some() == had_upload =>
                    {
                        upload = shape.upload;
                        attempt += 1;
                    }
                    Ok(answer) => return respond(answer),
                    Err(err) => return Err(err),
                }
            }
        };
        // Every wait inside enforces the deadline itself (see `within` and the sweep).
        attempts.await
    }
}

/// Runs `work` under `deadline`, arming a timer only if `work` does not finish in its
/// first poll: most waits (a permit, room in the write buffer) never wait at all.
async fn within<T>(
    deadline: Option<Instant>,
    work: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let mut work = std::pin::pin!(work);
    let mut timer: Option<Pin<Box<Sleep>>> = None;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(outcome) = work.as_mut().poll(cx) {
            return Poll::Ready(outcome);
        }
        let Some(at) = deadline else {
            return Poll::Pending;
        };
        let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        timer
            .as_mut()
            .poll(cx)
            .map(|()| Err(Error::DeadlineExceeded))
    })
    .await
}

/// What one attempt needs to know about the call.
struct Shape {
    method: Method,
    deadline: Option<Instant>,
    /// Taken when the request is sent.
    upload: Option<StartUpload>,
    streaming_response: bool,
}

/// One attempt on one connection. `args` is borrowed mutably (`&mut T` is `Send` when `T`
/// is), so the call future is `Send` without demanding `Args: Sync`.
async fn send<Args: Serialize>(
    conn: &Arc<Connection>,
    shape: &mut Shape,
    args: &mut Args,
    metadata: Metadata,
) -> Result<Answer, Error> {
    // Bounded in-flight calls per connection: wait for room rather than queue without bound.
    let _permit = within(shape.deadline, async {
        conn.permits
            .acquire()
            .await
            .map_err(|_| Error::closed("the connection is closing"))
    })
    .await?;
    // A far deadline (the default one) is enforced by the connection's sweep: no timer per
    // call. A near one gets a precise timer below.
    let now = Instant::now();
    let swept = shape
        .deadline
        .filter(|at| at.saturating_duration_since(now) > SWEEP_MIN);
    let id = conn.register(swept)?;
    let mut pending = PendingCall {
        conn,
        id,
        keep_stream: false,
    };
    // A streamed reply's items may follow the response at once: their buffer comes first.
    let inbound = shape
        .streaming_response
        .then(|| conn.streams().open_inbound(id, conn.window()));
    let header = request_header(id, shape.method, shape.deadline, now, metadata);
    // Usually there is room in the write buffer: one lock, no waiting.
    let pushed = {
        let args: &Args = args;
        conn.queue
            .try_push(&header, |buf| Bincode.encode(args, buf))?
            .is_ok()
    };
    if !pushed {
        within(shape.deadline, conn.queue.ready()).await?;
        let args: &Args = args;
        conn.queue.push(&header, |buf| Bincode.encode(args, buf))?;
    }
    let upload = shape.upload.take().map(|start| start(conn.clone(), id));
    // A reply, or the connection's own verdict (its sweep, its end), settles the call and
    // frees its slot. Our own timer firing does not: then the guard below cancels the call.
    let (status, body) = match swept {
        Some(_) => conn.reply(id).await,
        None => within(shape.deadline, conn.reply(id)).await,
    }?;
    match status {
        Status::Ok => {
            pending.keep_stream = true;
            Ok(Answer {
                body,
                stream: inbound.map(|inbound| StreamParts {
                    conn: conn.clone(),
                    id,
                    inbound,
                    deadline: shape.deadline,
                }),
                upload,
            })
        }
        Status::Error { code, message } => Err(refused(conn, code, message, &shape.method)),
    }
}

/// The error for a call the server answered with an error status.
fn refused(conn: &Connection, code: u16, message: String, method: &Method) -> Error {
    if ErrorCode::from_u16(code) == Some(ErrorCode::ShuttingDown) {
        // The server did not run it; new calls must go to a new connection.
        conn.mark_going_away();
    }
    Error::from_remote(code, message, method)
}

/// Cancels the call on the server if the caller stops waiting (drop, timeout), and drops
/// the buffer of its streamed reply unless the call succeeded.
struct PendingCall<'a> {
    conn: &'a Connection,
    id: u64,
    keep_stream: bool,
}

impl Drop for PendingCall<'_> {
    fn drop(&mut self) {
        // Sends a cancel only if the call is still waiting for its reply.
        self.conn.cancel(self.id);
        if !self.keep_stream {
            self.conn.streams().remove(self.id);
        }
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
        loop {
            match &mut this.state {
                State::Idle => {
                    let Some(setup) = &this.setup else {
                        return Poll::Ready(Err(Error::Cancelled));
                    };
                    match setup.send_now() {
                        Some(Ok(sent)) => this.state = State::Sent(sent),
                        Some(Err(err)) => return this.finish(Err(err)),
                        None => this.run_general(0),
                    }
                }
                State::Sent(sent) => {
                    let reply = std::task::ready!(sent.conn.poll_reply(sent.id, cx));
                    sent.settled = true;
                    let Some(setup) = &this.setup else {
                        return this.finish(Err(Error::Cancelled));
                    };
                    let outcome = match reply {
                        Ok((Status::Ok, body)) => (setup.respond)(Answer {
                            body,
                            stream: None,
                            upload: None,
                        }),
                        Ok((Status::Error { code, message }, _)) => {
                            let err = refused(&sent.conn, code, message, &setup.method);
                            if matches!(err, Error::Overloaded { .. }) && !sent.conn.is_usable() {
                                // Refused unrun by a server going away: send it again, on a
                                // new connection (the general path's retry rule).
                                this.run_general(1);
                                continue;
                            }
                            Err(err)
                        }
                        Err(err) => Err(err),
                    };
                    return this.finish(outcome);
                }
                State::Running(running) => {
                    let outcome = std::task::ready!(running.as_mut().poll(cx));
                    return this.finish(outcome);
                }
                State::Done => return Poll::Ready(Err(Error::Cancelled)),
            }
        }
    }
}

impl<Args, Out> Call<Args, Out>
where
    Args: Serialize + Send + 'static,
    Out: Send + 'static,
{
    /// Moves the call to the general path, `attempt` refusals in.
    fn run_general(&mut self, attempt: usize) {
        self.state = match self.setup.take() {
            Some(setup) => State::Running(Box::pin(setup.run(attempt))),
            None => State::Done,
        };
    }

    /// Ends the call, releasing its connection and buffers now rather than when the `Call`
    /// is dropped.
    fn finish(&mut self, outcome: Result<Out, Error>) -> Poll<Result<Out, Error>> {
        self.state = State::Done;
        self.setup = None;
        Poll::Ready(outcome)
    }
}
