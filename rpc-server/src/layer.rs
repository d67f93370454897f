//! tower layers around each call (feature `tower`).
//!
//! A layered service runs each call through a tower stack built once, when the service is
//! added: `layer.layer(Handler)`, where [`Handler`] is a `tower::Service<Request>` that hands
//! the call to the rpc [`Service`]. tower's own timeout, rate limit, concurrency limit and
//! load-shed layers work as they do around any tower service; their errors reach the caller
//! as typed errors ([`Error::from_tower`]): a timeout as `DeadlineExceeded`, a load shed as
//! `Overloaded`.
//!
//! The stack is one instance shared by every call of the service (on every connection), as
//! tower's rate limit and load shed expect: a call waits for its turn at the stack, drives its
//! `poll_ready` until the stack is ready, calls it, and lets the next call in while its own
//! response future runs. A layer that makes a call wait (a rate limit, a full concurrency
//! limit) holds the calls behind it too; the call's deadline covers the wait.
//!
//! A server without layers runs exactly as before: nothing here is on its path.

use std::fmt;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use rpc_core::error::BoxError;
use rpc_core::{Error, Method};
use tokio::sync::Mutex;
use tower::util::BoxService;
use tower::{Layer, ServiceExt};

use crate::server::ServerBuilder;
use crate::service::{Dispatch, Request, Service};

/// The innermost service of a layered stack: hands each [`Request`] to the rpc [`Service`],
/// and resolves once the reply is queued (or with the error the caller gets).
///
/// Always ready; it is what a [`Layer`] passed to [`Layered::new`] or
/// [`ServerBuilder::layer`] wraps.
#[derive(Clone)]
pub struct Handler {
    service: Arc<dyn Service>,
}

impl fmt::Debug for Handler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handler")
            .field("service", &self.service.name())
            .finish()
    }
}

impl tower::Service<Request> for Handler {
    type Response = ();
    type Error = Error;
    type Future = Dispatch;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Dispatch {
        self.service.call(request)
    }
}

type Stack = BoxService<Request, (), BoxError>;

/// A service whose every call passes a tower [`Layer`]: one service's own timeout, limits or
/// load shed, added to the server like any service (or with
/// [`ServerBuilder::serve_layered`]).
///
/// ```no_run
/// # fn demo(svc: impl rpc::Service) {
/// use std::time::Duration;
/// use tower::ServiceBuilder;
///
/// let limits = ServiceBuilder::new()
///     .load_shed()                  // beyond 64 calls at once: Overloaded at once
///     .concurrency_limit(64)
///     .timeout(Duration::from_secs(2)); // a handler past 2 s: DeadlineExceeded
/// let server = rpc::Server::builder().serve(rpc::tower::Layered::new(svc, limits));
/// # }
/// ```
pub struct Layered {
    inner: Arc<dyn Service>,
    stack: Arc<Mutex<Stack>>,
}

impl fmt::Debug for Layered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Layered")
            .field("service", &self.inner.name())
            .finish_non_exhaustive()
    }
}

impl Layered {
    /// `service`, whose every call passes through `layer`.
    pub fn new<S, L>(service: S, layer: L) -> Layered
    where
        S: Service,
        L: Layer<Handler>,
        L::Service: tower::Service<Request, Response = ()> + Send + 'static,
        <L::Service as tower::Service<Request>>::Error: Into<BoxError>,
        <L::Service as tower::Service<Request>>::Future: Send + 'static,
    {
        Layered::shared(Arc::new(service), &layer)
    }

    fn shared<L>(inner: Arc<dyn Service>, layer: &L) -> Layered
    where
        L: Layer<Handler>,
        L::Service: tower::Service<Request, Response = ()> + Send + 'static,
        <L::Service as tower::Service<Request>>::Error: Into<BoxError>,
        <L::Service as tower::Service<Request>>::Future: Send + 'static,
    {
        let handler = Handler {
            service: inner.clone(),
        };
        let stack = BoxService::new(layer.layer(handler).map_err(Into::into));
        Layered {
            inner,
            stack: Arc::new(Mutex::new(stack)),
        }
    }
}

impl Service for Layered {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn methods(&self) -> &'static [Method] {
        self.inner.methods()
    }

    fn call(&self, request: Request) -> Dispatch {
        // The handler is picked only once the stack lets the call in; a request stream's
        // items that arrive before then wait in its buffer.
        let streams = request.open_input_now();
        let stack = self.stack.clone();
        Dispatch(Box::pin(async move {
            let _streams = streams;
            let response = {
                let mut stack = stack.lock_owned().await;
                stack.ready().await.map_err(Error::from_tower)?;
                tower::Service::call(&mut *stack, request)
            };
            response.await.map_err(Error::from_tower)
        }))
    }
}

/// A server-wide layer, kept until the server is built and then applied to each service.
pub(crate) type WrapAll = Box<dyn Fn(Arc<dyn Service>) -> Arc<dyn Service> + Send + Sync>;

impl ServerBuilder {
    /// Puts `layer` around each call of every service (but the built-in health service),
    /// whether the service was added before or after. Each service gets a stack of its own
    /// (`layer.layer(..)` once per service): tower's `concurrency_limit(n)` allows `n` calls
    /// at once per service; for one limit over all of them use tower's
    /// `GlobalConcurrencyLimitLayer`. Several server-wide layers run in the order added
    /// (the first outermost), outside a service's own ([`Layered`]); interceptors run inside
    /// all layers, right before the handler.
    ///
    /// A layer's error reaches the caller as a typed error: tower's timeout as
    /// `DeadlineExceeded`, its load shed as `Overloaded` (see [`Error::from_tower`]).
    ///
    /// ```no_run
    /// # fn demo(svc: impl rpc::Service) {
    /// use std::time::Duration;
    /// let server = rpc::Server::builder()
    ///     .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(5)))
    ///     .serve(svc);
    /// # }
    /// ```
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<Handler> + Send + Sync + 'static,
        L::Service: tower::Service<Request, Response = ()> + Send + 'static,
        <L::Service as tower::Service<Request>>::Error: Into<BoxError>,
        <L::Service as tower::Service<Request>>::Future: Send + 'static,
    {
        self.layers.push(Box::new(move |service| {
            Arc::new(Layered::shared(service, &layer))
        }));
        self
    }

    /// Hosts `service` behind `layer`: [`serve`](Self::serve) of [`Layered::new`].
    ///
    /// # Panics
    /// As [`serve`](Self::serve).
    pub fn serve_layered<S, L>(self, service: S, layer: L) -> Self
    where
        S: Service,
        L: Layer<Handler>,
        L::Service: tower::Service<Request, Response = ()> + Send + 'static,
        <L::Service as tower::Service<Request>>::Error: Into<BoxError>,
        <L::Service as tower::Service<Request>>::Future: Send + 'static,
    {
        self.serve(Layered::new(service, layer))
    }
}
