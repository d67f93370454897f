//! Client interceptors: what every call of a client carries, and calls it refuses to send.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use rpc_core::{Error, Metadata, Method};

/// Runs before every call of a client (once per call, not per attempt), under the call's
/// deadline: adds metadata (a bearer token it refreshes itself, a trace id), or fails the
/// call locally with an error, in which case nothing is sent. Set it with
/// [`ClientBuilder::interceptor`](crate::ClientBuilder::interceptor). A client without one
/// pays an `Option` check per call.
///
/// ```
/// use std::sync::Mutex;
/// use rpc::{ClientInterceptor, Error, Metadata, Method};
///
/// /// Sends the current token; another task replaces it before it expires.
/// struct Bearer(Mutex<String>);
///
/// #[rpc::async_trait]
/// impl ClientInterceptor for Bearer {
///     async fn intercept(&self, _method: Method, metadata: &mut Metadata) -> Result<(), Error> {
///         let token = self.0.lock().map_err(|_| Error::Unauthenticated { reason: "token lock poisoned".into() })?.clone();
///         metadata.insert("authorization", format!("Bearer {token}"));
///         Ok(())
///     }
/// }
/// # let _ = rpc::Client::builder().interceptor(Bearer(Mutex::new("t0".into())));
/// ```
#[async_trait]
pub trait ClientInterceptor: Send + Sync + 'static {
    /// Prepares one call to `method`: add to its `metadata`, or fail it (nothing is sent).
    async fn intercept(&self, method: Method, metadata: &mut Metadata) -> Result<(), Error>;
}

#[async_trait]
impl<T: ClientInterceptor + ?Sized> ClientInterceptor for Arc<T> {
    async fn intercept(&self, method: Method, metadata: &mut Metadata) -> Result<(), Error> {
        (**self).intercept(method, metadata).await
    }
}

/// A client's interceptor, if it has one.
#[derive(Clone, Default)]
pub(crate) struct Slot(pub(crate) Option<Arc<dyn ClientInterceptor>>);

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "Some(..)" } else { "None" })
    }
}
