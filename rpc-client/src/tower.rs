//! The client as a `tower::Service` (feature `tower`): a [`Call`] (method and arguments) in,
//! the typed reply out.
//!
//! [`Client::tower`] gives a [`ClientService`] that answers every [`Call`], so tower's layers
//! (timeout, rate limit, concurrency limit, load shed, retry, ...) go around the client as
//! around any tower service. Its error is [`Error`]; tower's layers turn errors into
//! `tower::BoxError`, which [`Error::from_tower`] turns back (a timeout becomes
//! `DeadlineExceeded`, a load shed `Overloaded`): put `.map_err(rpc::Error::from_tower)`
//! outermost to get `rpc::Error` from the whole stack.
//!
//! ```no_run
//! # async fn demo(client: rpc::Client) -> Result<(), rpc::Error> {
//! use std::time::Duration;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! const ADD: rpc::Method = rpc::Method::new("Calculator", "add");
//!
//! let mut calc = ServiceBuilder::new()
//!     .map_err(rpc::Error::from_tower)
//!     .timeout(Duration::from_millis(500))
//!     .concurrency_limit(16)
//!     .service(client.tower::<(i64, i64), i64>());
//! let sum: i64 = calc.ready().await?.call(rpc::tower::Call::new(ADD, (2i64, 3i64))).await?;
//! assert_eq!(sum, 5);
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use rpc_core::{Error, Method};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::PollSemaphore;

use crate::client::Client;

/// One call as a tower request: the method, its arguments (one tuple, as
/// [`Client::call`] takes them) and, in the type, the reply `Out`.
pub struct Call<Args, Out> {
    method: Method,
    args: Args,
    reply: PhantomData<fn() -> Out>,
}

impl<Args, Out> Call<Args, Out> {
    /// A call to `method` with `args`, whose reply is an `Out`.
    pub fn new(method: Method, args: Args) -> Self {
        Call {
            method,
            args,
            reply: PhantomData,
        }
    }

    /// The method called.
    pub fn method(&self) -> Method {
        self.method
    }

    /// The arguments.
    pub fn args(&self) -> &Args {
        &self.args
    }
}

impl<Args: fmt::Debug, Out> fmt::Debug for Call<Args, Out> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("method", &self.method)
            .field("args", &self.args)
            .finish()
    }
}

impl<Args: Clone, Out> Clone for Call<Args, Out> {
    fn clone(&self) -> Self {
        Call::new(self.method, self.args.clone())
    }
}

/// A [`Client`] as a `tower::Service` of [`Call`]s whose arguments are `Args` and whose
/// reply is `Out`; made by [`Client::tower`]. Several methods of one signature can share
/// it: the method travels in each [`Call`].
///
/// Ready while the calls in flight through the client's tower services (all that
/// [`Client::tower`] made on it or its clones) are fewer than the client's capacity:
/// [`max_in_flight`](crate::ClientConfig::max_in_flight) calls per connection, times the
/// endpoints it had when the first was made. Beyond that, `poll_ready` waits until one ends
/// (so tower's `load_shed` in front of it sheds instead). Calls made with [`Client::call`]
/// or a stub are not counted: they wait for room on their connection as usual. The calls go
/// through the client as [`Client::call`] sends them: with its default timeout, its
/// interceptor and its retries.
pub struct ClientService<Args, Out> {
    client: Client,
    permits: PollSemaphore,
    /// Taken by `poll_ready`, given to the next call.
    permit: Option<OwnedSemaphorePermit>,
    calls: PhantomData<fn(Args) -> Out>,
}

impl<Args, Out> Clone for ClientService<Args, Out> {
    /// Shares the client and the count of calls in flight; the clone is not ready yet (a
    /// place taken by `poll_ready` stays with the original).
    fn clone(&self) -> Self {
        ClientService {
            client: self.client.clone(),
            permits: self.permits.clone(),
            permit: None,
            calls: PhantomData,
        }
    }
}

impl<Args, Out> fmt::Debug for ClientService<Args, Out> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientService")
            .field("client", &self.client)
            .field("available", &self.permits.available_permits())
            .finish()
    }
}

impl Client {
    /// This client as a `tower::Service` of [`Call`]s with arguments `Args` (a tuple) and
    /// reply `Out`, to put tower's layers around; see [`ClientService`].
    pub fn tower<Args, Out>(&self) -> ClientService<Args, Out> {
        let permits = self.inner.tower_permits.get_or_init(|| {
            let endpoints = self.endpoints().len().max(1);
            let capacity = self.config().max_in_flight.saturating_mul(endpoints);
            Arc::new(Semaphore::new(capacity.clamp(1, Semaphore::MAX_PERMITS)))
        });
        ClientService {
            client: self.clone(),
            permits: PollSemaphore::new(permits.clone()),
            permit: None,
            calls: PhantomData,
        }
    }
}

impl<Args, Out> tower::Service<Call<Args, Out>> for ClientService<Args, Out>
where
    Args: Serialize + Send + 'static,
    Out: DeserializeOwned + Send + 'static,
{
    type Response = Out;
    type Error = Error;
    type Future = ResponseFuture<Args, Out>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Error>> {
        if self.permit.is_none() {
            // The semaphore is never closed: `None` cannot happen, and would mean "ready".
            self.permit = std::task::ready!(self.permits.poll_acquire(cx));
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call<Args, Out>) -> Self::Future {
        ResponseFuture {
            call: self.client.call(call.method, call.args),
            _permit: self.permit.take(),
        }
    }
}

/// The reply to one [`Call`] made through a [`ClientService`]: a [`Client::call`] that
/// holds its place in the service's capacity until it ends.
pub struct ResponseFuture<Args, Out> {
    call: crate::call::Call<Args, Out>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl<Args, Out> fmt::Debug for ResponseFuture<Args, Out> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl<Args, Out> Future for ResponseFuture<Args, Out>
where
    Args: Serialize + Send + 'static,
    Out: Send + 'static,
{
    type Output = Result<Out, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.call).poll(cx)
    }
}
