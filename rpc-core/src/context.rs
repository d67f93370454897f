//! Per-call data a handler can read without extra parameters.
//!
//! The server runs each handler inside [`Context::scope`]; inside it, [`Context::current`]
//! returns the call's request id, deadline, peer address and metadata. A client call made
//! from inside a handler inherits the remaining deadline.

use std::future::Future;
use std::time::Duration;

use tokio::task::futures::TaskLocalFuture;
use tokio::time::Instant;

use crate::metadata::Metadata;
use crate::method::Method;
use crate::transport::PeerAddr;

tokio::task_local! {
    static CURRENT: Context;
}

/// What a handler knows about the call it is serving.
///
/// ```
/// # async fn handler() {
/// use rpc_core::Context;
/// // Inside a handler:
/// if let Some(ctx) = Context::current() {
///     let token = ctx.metadata().get_str("authorization");
///     let time_left = ctx.remaining();
/// }
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Context {
    request_id: u64,
    method: Method,
    deadline: Option<Instant>,
    peer: PeerAddr,
    metadata: Metadata,
}

impl Context {
    /// Builds a context; the server does this for every call.
    pub fn new(
        request_id: u64,
        method: Method,
        deadline: Option<Instant>,
        peer: PeerAddr,
        metadata: Metadata,
    ) -> Self {
        Context {
            request_id,
            method,
            deadline,
            peer,
            metadata,
        }
    }

    /// A copy of the context of the call being served, or `None` outside a handler.
    pub fn current() -> Option<Context> {
        CURRENT.try_with(Context::clone).ok()
    }

    /// Runs `f` on the current context without cloning it; `None` outside a handler.
    pub fn with_current<R>(f: impl FnOnce(&Context) -> R) -> Option<R> {
        CURRENT.try_with(f).ok()
    }

    /// Runs `future` with this context as the current one.
    pub fn scope<F: Future>(self, future: F) -> TaskLocalFuture<Context, F> {
        CURRENT.scope(self, future)
    }

    /// The id the client gave this call (unique per connection while in flight).
    pub fn request_id(&self) -> u64 {
        self.request_id
    }

    /// The method being called.
    pub fn method(&self) -> Method {
        self.method
    }

    /// When the client stops waiting, if the call has a deadline.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time left until the deadline (zero once it has passed), if the call has one.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Who made the call.
    pub fn peer(&self) -> &PeerAddr {
        &self.peer
    }

    /// The metadata sent with the call.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn current_is_visible_only_inside_scope() {
        assert!(Context::current().is_none());
        let mut md = Metadata::new();
        md.insert("user", "ada");
        let ctx = Context::new(9, Method::new("S", "m"), None, PeerAddr::Memory, md);
        let seen = ctx
            .scope(async {
                tokio::task::yield_now().await;
                Context::with_current(|c| {
                    (
                        c.request_id(),
                        c.metadata().get_str("user").map(String::from),
                    )
                })
            })
            .await;
        assert_eq!(seen, Some((9, Some("ada".to_string()))));
        assert!(Context::current().is_none());
    }
}
