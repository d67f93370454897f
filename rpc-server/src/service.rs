//! The contract between the server and a service.
//!
//! `#[rpc::service]` implements [`Service`] for the generated `<Trait>Server<S>` wrapper; the
//! server never sees the user's trait. Writing a `Service` by hand is possible but rarely
//! needed.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use rpc_core::message::{Header, Status};
use rpc_core::writer::WriteQueue;
use rpc_core::{Bincode, Codec, Context, Error, Method, MethodId};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A set of methods the server can dispatch calls to.
pub trait Service: Send + Sync + 'static {
    /// The service's name, as in `"Calculator"`.
    fn name(&self) -> &'static str;

    /// Every method this service answers. The server routes a call here when its method id
    /// is one of these.
    fn methods(&self) -> &'static [Method];

    /// Starts the call `request` to `method` (one of [`methods`](Self::methods)).
    fn call(&self, method: MethodId, request: Request) -> Dispatch;
}

/// One incoming call: its encoded arguments and the way back to its caller.
pub struct Request {
    method: Method,
    body: Bytes,
    reply: Reply,
    context: Context,
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

/// A running call, as returned by [`Service::call`]. Resolves once the reply is queued, or
/// with the error to send instead.
pub struct Dispatch(Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>);

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
        }
    }

    /// The method called.
    pub fn method(&self) -> Method {
        self.method
    }

    /// Decodes the arguments as `Args`, runs `handler` on them with the call's
    /// [`Context`] current, and sends what it returns.
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
        let Request {
            method,
            body,
            reply,
            context,
        } = self;
        Dispatch(Box::pin(context.scope(async move {
            let args: Args = Bincode.decode(&body).map_err(|err| Error::BadRequest {
                reason: format!("arguments of {method} do not decode: {err}"),
            })?;
            // The frame's memory is not needed while the handler runs.
            drop(body);
            let out = handler(args).await;
            reply.ok(out).await
        })))
    }

    /// Fails the call with [`Error::UnknownMethod`].
    pub fn unknown_method(self) -> Dispatch {
        let method = self.method.to_string();
        Dispatch(Box::pin(
            async move { Err(Error::UnknownMethod { method }) },
        ))
    }
}

/// The way back to one caller: the connection's write queue and the request id.
#[derive(Clone)]
pub(crate) struct Reply {
    queue: Arc<WriteQueue>,
    id: u64,
}

impl Reply {
    pub(crate) fn new(queue: Arc<WriteQueue>, id: u64) -> Self {
        Reply { queue, id }
    }

    /// Queues a successful response carrying `value`.
    ///
    /// Takes the value by value: holding a reference across the wait for room would demand
    /// that handler results be `Sync`.
    pub(crate) async fn ok<T: Serialize + Send>(&self, value: T) -> Result<(), Error> {
        self.queue.ready().await?;
        let header = Header::Response {
            id: self.id,
            status: Status::Ok,
        };
        self.queue
            .push(&header, |buf| Bincode.encode(&value, buf))
            .map(drop)
    }

    /// Queues a failed response without waiting for room: it is small, and each call sends
    /// at most one. Errors are dropped: they mean the connection is gone, and then nobody is
    /// left to tell.
    pub(crate) fn error(&self, err: &Error) {
        let (code, message) = err.to_wire();
        let header = Header::Response {
            id: self.id,
            status: Status::Error {
                code: code.to_u16(),
                message,
            },
        };
        let _ = self.queue.push(&header, |_| Ok(()));
    }
}
