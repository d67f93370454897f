//! The contract between the server and a service.
//!
//! `#[rpc::service]` implements [`Service`] for the wrapper it generates around the user's
//! trait; the server never sees that trait. A [`Service`] can also be written by hand (see
//! its docs): a proxy, a service whose methods are only known at run time, or a test double.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use rpc_core::message::{Header, Status};
use rpc_core::shape::{Signature, TraceError};
use rpc_core::stream::{self, Receiver, Stream, StreamTable};
use rpc_core::writer::WriteQueue;
use rpc_core::{Bincode, Codec, Context, Error, Method, MethodId};

use crate::intercept::ServerInterceptor;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A set of methods the server can dispatch calls to.
///
/// `#[rpc::service]` implements it for you; implement it by hand when the methods are not a
/// Rust trait. The server reads [`methods`](Self::methods) once, when the service is added,
/// and routes each incoming call whose method is in that list to [`call`](Self::call); a call
/// to any other method is answered with `Error::UnknownMethod` without reaching the service.
///
/// `call` must return quickly: it only picks a handler. The work happens in the [`Dispatch`]
/// it returns, which the server polls. A [`Request`] is answered exactly once, by one of its
/// `dispatch*` methods or by [`Request::unknown_method`]; each consumes it.
///
/// Arguments travel as one tuple and results as one value, both encoded with bincode 2, so a
/// hand-written service is interchangeable with a generated one: the stub generated for a
/// trait whose names and types match can call it, and so can `rpc::Client::call`.
///
/// ```
/// # mod rpc { pub use rpc_server::{Dispatch, Request, Service}; pub use rpc_core::Method; }
/// /// Answers `Calculator.add(a, b)` and `Calculator.div(a, b)`, as
/// /// `#[rpc::service] trait Calculator` with the same methods would.
/// struct Calculator;
///
/// const ADD: rpc::Method = rpc::Method::new("Calculator", "add");
/// const DIV: rpc::Method = rpc::Method::new("Calculator", "div");
///
/// impl rpc::Service for Calculator {
///     fn name(&self) -> &'static str {
///         "Calculator"
///     }
///
///     fn methods(&self) -> &'static [rpc::Method] {
///         &[ADD, DIV]
///     }
///
///     fn call(&self, request: rpc::Request) -> rpc::Dispatch {
///         match request.method() {
///             // The arguments are one tuple, the result one value: `i64` here.
///             ADD => request.dispatch(|(a, b): (i64, i64)| async move { a + b }),
///             // An application error is part of the result: `Result<i64, String>`.
///             DIV => request.dispatch(|(a, b): (i64, i64)| async move {
///                 a.checked_div(b).ok_or_else(|| format!("{a} / {b}"))
///             }),
///             _ => request.unknown_method(),
///         }
///     }
/// }
/// ```
///
/// A handler that needs the service's state clones an `Arc` of it into the closure: the
/// [`Dispatch`] must be `'static`, it outlives the borrow of `self`.
pub trait Service: Send + Sync + 'static {
    /// The service's name, as in `"Calculator"`.
    fn name(&self) -> &'static str;

    /// Every method this service answers. The server routes a call here when its method is
    /// one of these, and reads the list once, when the service is added.
    fn methods(&self) -> &'static [Method];

    /// Starts `request`, a call to [`request.method()`](Request::method), which is one of
    /// [`methods`](Self::methods).
    fn call(&self, request: Request) -> Dispatch;

    /// The signature of `method` (one of [`methods`](Self::methods)): its kind and the
    /// shapes of its arguments and result, for the built-in reflection service. `None`, the
    /// default, for a service that does not describe its methods; `Some(Err(..))` when its
    /// types could not be traced.
    ///
    /// `#[rpc::service]` implements it, tracing every method once, when first asked (the
    /// server asks when the service is added). A hand-written service may build its own
    /// with [`Signature::builder`](rpc_core::shape::Signature::builder), and should then
    /// give its [`Method`]s the matching
    /// [`with_fingerprint`](Method::with_fingerprint).
    fn signature(&self, method: MethodId) -> Option<&'static Result<Signature, TraceError>> {
        let _ = method;
        None
    }
}

/// The interceptors a call passes before its handler, in order; `None` without any. Boxed:
/// one word in a [`Request`], which every call moves several times, and nothing to drop for a
/// call that has none.
// The box is the point (see above): a bare `Vec` is three words.
#[allow(clippy::box_collection)]
type Interceptors = Option<Box<Vec<Arc<dyn ServerInterceptor>>>>;

/// One incoming call: the method, its encoded arguments, its [`Context`] and the way back to
/// its caller.
///
/// A [`Service`] answers it with one of the `dispatch*` methods, which name the argument and
/// result types and the handler, or with [`unknown_method`](Self::unknown_method).
pub struct Request {
    method: Method,
    body: Bytes,
    reply: Reply,
    context: Context,
    /// Run before the handler, in order.
    interceptors: Interceptors,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("id", &self.reply.id)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// A running call, as returned by [`Service::call`]: the handler, then its reply.
///
/// Made only by [`Request`]'s methods. The server polls it (under the call's deadline,
/// catching panics); it resolves once the reply is queued, or with the error the server
/// sends instead.
pub struct Dispatch(pub(crate) Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>);

impl fmt::Debug for Dispatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Dispatch")
    }
}

impl Future for Dispatch {
    type Output = Result<(), Error>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl Request {
    pub(crate) fn new(method: Method, body: Bytes, reply: Reply, context: Context) -> Self {
        Request {
            method,
            body,
            reply,
            context,
            interceptors: None,
        }
    }

    /// Opens the request stream's buffer now, for a call whose handler is picked later (a
    /// tower layer may make it wait): items that arrive meanwhile are kept, not dropped. The
    /// guard forgets the call's streams when dropped, as a streaming handler's own does.
    #[cfg(feature = "tower")]
    pub(crate) fn open_input_now(&self) -> impl Drop + Send + 'static {
        // The handler's `open_input` finds this buffer in the table.
        let wire = &self.reply.wire;
        wire.streams.open_inbound_early(self.reply.id, wire.window);
        self.reply.stream_guard()
    }

    /// Has `interceptor` run before the handler, after those already added.
    pub(crate) fn intercepted_by(mut self, interceptor: Arc<dyn ServerInterceptor>) -> Self {
        self.interceptors
            .get_or_insert_with(Box::default)
            .push(interceptor);
        self
    }

    /// The method called: one of the service's [`methods`](Service::methods).
    pub fn method(&self) -> Method {
        self.method
    }

    /// The call's deadline, metadata and peer; also current (as [`Context::current`]) while
    /// the handler runs.
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// Decodes the arguments as `Args` (a tuple of the method's arguments: `(i64, i64)`,
    /// `(String,)`, or `()`), runs `handler` on them with the call's [`Context`] current, and
    /// sends what it returns.
    ///
    /// Arguments that do not decode fail the call with [`Error::BadRequest`]; a result that
    /// cannot be encoded (or exceeds the frame limit) fails it with an error the caller can
    /// read.
    pub fn dispatch<Args, Out, F, Fut>(self, handler: F) -> Dispatch
    where
        Args: DeserializeOwned + Send + 'static,
        F: FnOnce(Args) -> Fut + Send + 'static,
        Fut: Future<Output = Out> + Send + 'static,
        Out: Serialize + Send + 'static,
    {
        let (method, body, reply, context, interceptors) = self.into_parts();
        gated(interceptors, context, async move {
            let args: Args = decode_args(method, body)?;
            let out = handler(args).await;
            reply.ok(out).await
        })
    }

    /// Like [`dispatch`](Self::dispatch), for a handler that may fail the call itself: an
    /// `Err` is sent as the call's framework error, with its own code and message. This is
    /// how a proxy or gateway passes on what its downstream call failed with: the caller
    /// sees the downstream `Overloaded`, `Unauthenticated`, or a code this version does not
    /// know, as if it had called the downstream service itself. (A downstream refusal of a
    /// call it never ran, [`Error::Unavailable`], goes on as `Overloaded`: this handler ran.)
    ///
    /// ```
    /// /// Forwards `Gateway.get(key)` to a backend's `Store.get`.
    /// fn forward(request: rpc::Request, backend: rpc::Client) -> rpc::Dispatch {
    ///     const GET: rpc::Method = rpc::Method::new("Store", "get");
    ///     request.dispatch_fallible(move |(key,): (String,)| async move {
    ///         backend.call::<_, Option<u64>>(GET, (key,)).await
    ///     })
    /// }
    /// ```
    pub fn dispatch_fallible<Args, Out, F, Fut>(self, handler: F) -> Dispatch
    where
        Args: DeserializeOwned + Send + 'static,
        F: FnOnce(Args) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Out, Error>> + Send + 'static,
        Out: Serialize + Send + 'static,
    {
        let (method, body, reply, context, interceptors) = self.into_parts();
        gated(interceptors, context, async move {
            let args: Args = decode_args(method, body)?;
            let out = handler(args).await?;
            reply.ok(out).await
        })
    }

    /// Like [`dispatch`](Self::dispatch), for a handler that returns a [`Stream`]: the
    /// response says the stream follows, then every item goes out as the client makes room.
    pub fn dispatch_streaming_response<Args, Item, F, Fut>(self, handler: F) -> Dispatch
    where
        Args: DeserializeOwned + Send + 'static,
        F: FnOnce(Args) -> Fut + Send + 'static,
        Fut: Future<Output = Stream<Item>> + Send + 'static,
        Item: Serialize + Send + 'static,
    {
        let (method, body, reply, context, interceptors) = self.into_parts();
        gated(interceptors, context, async move {
            let args: Args = decode_args(method, body)?;
            let items = handler(args).await;
            let items = crate::observe::count_items(items, method, "sent");
            reply.stream(items).await
        })
    }

    /// Like [`dispatch`](Self::dispatch), for a handler whose last argument is the stream
    /// the client sends.
    pub fn dispatch_streaming_request<Args, In, Out, F, Fut>(self, handler: F) -> Dispatch
    where
        Args: DeserializeOwned + Send + 'static,
        In: DeserializeOwned + Send + 'static,
        F: FnOnce(Args, Stream<In>) -> Fut + Send + 'static,
        Fut: Future<Output = Out> + Send + 'static,
        Out: Serialize + Send + 'static,
    {
        let input = self.open_input::<In>();
        let input = crate::observe::count_items(input, self.method, "received");
        let (method, body, reply, context, interceptors) = self.into_parts();
        gated(interceptors, context, async move {
            let _streams = reply.stream_guard();
            let args: Args = decode_args(method, body)?;
            let out = handler(args, input).await;
            reply.ok(out).await
        })
    }

    /// Both ways: the handler reads the client's stream and returns its own.
    pub fn dispatch_bidi<Args, In, Item, F, Fut>(self, handler: F) -> Dispatch
    where
        Args: DeserializeOwned + Send + 'static,
        In: DeserializeOwned + Send + 'static,
        F: FnOnce(Args, Stream<In>) -> Fut + Send + 'static,
        Fut: Future<Output = Stream<Item>> + Send + 'static,
        Item: Serialize + Send + 'static,
    {
        let input = self.open_input::<In>();
        let input = crate::observe::count_items(input, self.method, "received");
        let (method, body, reply, context, interceptors) = self.into_parts();
        gated(interceptors, context, async move {
            let _streams = reply.stream_guard();
            let args: Args = decode_args(method, body)?;
            let items = handler(args, input).await;
            let items = crate::observe::count_items(items, method, "sent");
            reply.stream(items).await
        })
    }

    #[allow(clippy::type_complexity)] // One destructuring, read right below.
    fn into_parts(self) -> (Method, Bytes, Reply, Context, Interceptors) {
        (
            self.method,
            self.body,
            self.reply,
            self.context,
            self.interceptors,
        )
    }

    /// Starts receiving the client's stream. Done before the dispatch future first runs, so
    /// items that arrive right behind the request find their buffer.
    fn open_input<In: DeserializeOwned + Send + 'static>(&self) -> Stream<In> {
        let wire = &self.reply.wire;
        let inbound = wire.streams.open_inbound(self.reply.id, wire.window);
        Stream::from_results(Receiver::new(self.reply.id, inbound, wire.queue.clone()))
    }

    /// Fails the call with [`Error::UnknownMethod`]: for a method this service lists but
    /// does not answer (the fall-through arm of a `match` on [`method`](Self::method)).
    pub fn unknown_method(self) -> Dispatch {
        let method = self.method.to_string();
        Dispatch(Box::pin(
            async move { Err(Error::UnknownMethod { method }) },
        ))
    }
}

/// The handler's future with the call's context current, behind the interceptors if there
/// are any (without, exactly what it was before interceptors existed). Always inlined:
/// called, it moved the handler's future twice more, 180 instructions of `memcpy` per call
/// (callgrind, `examples/inproc.rs` in rpc-bench).
#[inline(always)]
fn gated<F>(interceptors: Interceptors, context: Context, work: F) -> Dispatch
where
    F: Future<Output = Result<(), Error>> + Send + 'static,
{
    let Some(interceptors) = interceptors else {
        return Dispatch(Box::pin(context.scope(work)));
    };
    Dispatch(Box::pin(async move {
        let mut context = context;
        crate::intercept::check(&interceptors, &mut context).await?;
        context.scope(work).await
    }))
}

fn decode_args<Args: DeserializeOwned>(method: Method, body: Bytes) -> Result<Args, Error> {
    // The frame's memory is released as soon as the arguments are decoded, unless a
    // `Payload` among them shares it.
    Bincode
        .decode_shared(&body)
        .map_err(|err| Error::BadRequest {
            reason: format!("arguments of {method} do not decode: {err}"),
        })
}

/// What the calls of one connection share: the writer, the streams, the stream window.
#[derive(Debug)]
pub(crate) struct Wire {
    pub(crate) queue: Arc<WriteQueue>,
    pub(crate) streams: StreamTable,
    pub(crate) window: usize,
}

impl Wire {
    /// Queues a failed response for call `id` (or, once its stream has started, a failed end
    /// of stream) without waiting for room: it is small, and each call sends at most one.
    /// Errors are dropped: they mean the connection is gone, and then nobody is left to tell.
    /// The call's streams are forgotten.
    pub(crate) fn fail(&self, id: u64, err: &Error) {
        let status = Status::from_error(err);
        let header = if self.streams.is_sending(id) {
            Header::StreamEnd { id, status }
        } else {
            Header::Response { id, status }
        };
        let _ = self.queue.push_control(&header);
        self.streams.remove(id);
    }
}

/// The way back to one caller: the connection's wire and the request id.
pub(crate) struct Reply {
    wire: Arc<Wire>,
    id: u64,
}

impl Reply {
    pub(crate) fn new(wire: Arc<Wire>, id: u64) -> Self {
        Reply { wire, id }
    }

    /// Queues a successful response carrying `value`, waiting for room if there is none.
    pub(crate) async fn ok<T: Serialize + Send>(&self, value: T) -> Result<(), Error> {
        let header = Header::Response {
            id: self.id,
            status: Status::Ok,
        };
        self.wire.queue.send_value(&header, value).await.map(drop)
    }

    /// Sends a successful response that announces a stream, then the stream.
    async fn stream<T: Serialize + Send + 'static>(&self, items: Stream<T>) -> Result<(), Error> {
        let _streams = self.stream_guard();
        // Registered before the response goes out, so the client's first credit finds it.
        let outbound = self.wire.streams.open_outbound(self.id, self.wire.window);
        self.ok(()).await?;
        match stream::send(&self.wire.queue, self.id, &outbound, items).await {
            // An item was not sent (over the frame limit, or it did not encode): the stream
            // ends with that error now, while it is still registered as sending; returned,
            // the error would go out after the guard forgot the stream, as a second
            // response the client no longer waits for.
            Err(err @ (Error::MessageTooLarge { .. } | Error::Codec(_))) => {
                tracing::debug!(request_id = self.id, error = %err, "reply stream item not sent; ending the stream with the error");
                self.wire.fail(self.id, &err);
                Ok(())
            }
            sent => sent,
        }
    }

    fn stream_guard(&self) -> StreamGuard {
        StreamGuard {
            wire: self.wire.clone(),
            id: self.id,
        }
    }
}

/// Forgets a call's streams when its handler ends. Not when it panics: then the connection
/// reports the panic, as a failed end of stream if the stream had started (see
/// [`Wire::fail`]), and forgets them itself.
struct StreamGuard {
    wire: Arc<Wire>,
    id: u64,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.wire.streams.remove(self.id);
        }
    }
}
