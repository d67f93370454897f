//! Interceptors: async checks that run before a call's handler and may refuse it.
//!
//! An interceptor sees the call's [`Context`] (method, metadata, peer, TLS identity,
//! deadline), may leave values for the handler in its [`extensions`](Context::extensions_mut),
//! and either lets the call go on or fails it with a typed error, usually
//! [`Error::Unauthenticated`] or [`Error::PermissionDenied`] (refused, never run). It is
//! async, so it may ask another service (an auth server): it runs with the call's context
//! current, so such calls inherit the call's deadline, and the deadline covers it.
//!
//! Server-wide interceptors ([`ServerBuilder::interceptor`](crate::ServerBuilder::interceptor))
//! run first, in the order added, then the service's own ([`Intercepted`]). The built-in
//! health service is never intercepted. A server without interceptors runs exactly as
//! before: the check is a length test of an empty list, made where the handler starts.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use rpc_core::{Context, Error, Method};

use crate::service::{Dispatch, Request, Service};

/// Runs before the handler of every call it covers; see the [module docs](self).
///
/// ```
/// use rpc::{Context, Error, ServerInterceptor};
///
/// /// Who the caller is, for the handler.
/// struct User(String);
///
/// struct RequireToken;
///
/// #[rpc::async_trait]
/// impl ServerInterceptor for RequireToken {
///     async fn intercept(&self, ctx: &mut Context) -> Result<(), Error> {
///         match ctx.metadata().get_str("authorization") {
///             Some("Bearer let-me-in") => {
///                 ctx.extensions_mut().insert(User("ada".into()));
///                 Ok(())
///             }
///             Some(_) => Err(Error::PermissionDenied { reason: "unknown token".into() }),
///             None => Err(Error::Unauthenticated { reason: "send an authorization token".into() }),
///         }
///     }
/// }
/// # let _ = rpc::Server::builder().interceptor(RequireToken);
/// ```
#[async_trait]
pub trait ServerInterceptor: Send + Sync + 'static {
    /// Checks one call before its handler runs. `Ok(())` lets it go on; an error fails it
    /// with that error (and the handler never runs).
    async fn intercept(&self, ctx: &mut Context) -> Result<(), Error>;
}

#[async_trait]
impl<T: ServerInterceptor + ?Sized> ServerInterceptor for Arc<T> {
    async fn intercept(&self, ctx: &mut Context) -> Result<(), Error> {
        (**self).intercept(ctx).await
    }
}

/// A service whose calls pass an interceptor first: one service's own checks, added to the
/// server like any service.
///
/// ```no_run
/// # struct RequireToken;
/// # #[rpc::async_trait]
/// # impl rpc::ServerInterceptor for RequireToken {
/// #     async fn intercept(&self, _: &mut rpc::Context) -> Result<(), rpc::Error> { Ok(()) }
/// # }
/// # fn demo(admin: impl rpc::Service, public: impl rpc::Service) {
/// let server = rpc::Server::builder()
///     .serve(rpc::Intercepted::new(admin, RequireToken))
///     .serve(public);
/// # }
/// ```
pub struct Intercepted {
    inner: Arc<dyn Service>,
    interceptor: Arc<dyn ServerInterceptor>,
}

impl fmt::Debug for Intercepted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Intercepted")
            .field("service", &self.inner.name())
            .finish_non_exhaustive()
    }
}

impl Intercepted {
    /// `service`, whose every call passes `interceptor` first.
    pub fn new(service: impl Service, interceptor: impl ServerInterceptor) -> Intercepted {
        Intercepted {
            inner: Arc::new(service),
            interceptor: Arc::new(interceptor),
        }
    }

    /// `service` behind an interceptor already shared (a server-wide one).
    pub(crate) fn shared(
        inner: Arc<dyn Service>,
        interceptor: Arc<dyn ServerInterceptor>,
    ) -> Intercepted {
        Intercepted { inner, interceptor }
    }
}

impl Service for Intercepted {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn methods(&self) -> &'static [Method] {
        self.inner.methods()
    }

    fn call(&self, request: Request) -> Dispatch {
        // The service picks its handler now (a request stream's buffer opens at once); the
        // handler waits for the interceptor.
        self.inner
            .call(request.intercepted_by(self.interceptor.clone()))
    }
}

/// Runs `interceptors` in order on `ctx`, with `ctx` current (so their own calls inherit its
/// deadline).
pub(crate) async fn check(
    interceptors: &[Arc<dyn ServerInterceptor>],
    ctx: &mut Context,
) -> Result<(), Error> {
    for interceptor in interceptors {
        let current = ctx.clone();
        current.scope(interceptor.intercept(ctx)).await?;
    }
    Ok(())
}
