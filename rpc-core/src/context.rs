//! Per-call data a handler can read without extra parameters.
//!
//! The server runs each handler inside [`Context::scope`]; inside it, [`Context::current`]
//! returns the call's request id, deadline, peer address and metadata. A client call made
//! from inside a handler inherits the remaining deadline.
//!
//! The context is a tokio task-local: it follows the handler's future, not the thread, so a
//! task the handler starts with `tokio::spawn` does not see it. [`Context::spawn`] starts a
//! task that does; [`Context::scope`] on a copy from [`Context::current`] does the same for
//! any other spawner (a `JoinSet`, a `LocalSet`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::futures::TaskLocalFuture;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::extensions::Extensions;
use crate::metadata::Metadata;
use crate::method::Method;
use crate::tls::PeerIdentity;
use crate::trace_context::TraceContext;
use crate::transport::PeerAddr;

tokio::task_local! {
    static CURRENT: Context;
}

/// What a handler knows about the call it is serving.
///
/// ```
/// # async fn handler() {
/// use rpc::Context;
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
    /// Shared by every call of the connection: one word in a value that every call moves
    /// several times (its address alone took 32 bytes).
    peer: Arc<Peer>,
    metadata: Metadata,
    /// What most calls have none of, boxed together: one word in a context that every call
    /// moves several times (at 120 bytes and more, each move is a `memcpy` call).
    extras: Option<Box<Extras>>,
}

/// The parts of a [`Context`] that only some calls have.
#[derive(Debug, Clone, Default)]
struct Extras {
    extensions: Extensions,
    /// The server's span of this call in its trace (see [`TraceContext`]).
    trace: Option<TraceContext>,
}

/// What [`Context::extensions`] returns for a call that has none.
static NO_EXTENSIONS: Extensions = Extensions::new();

/// Who is at the other end of a connection: its address and, on a mutual-TLS connection,
/// the identity its certificate proved. The server makes one per connection and shares it
/// with every call's [`Context`].
#[derive(Debug, Clone)]
pub struct Peer {
    addr: PeerAddr,
    identity: Option<Arc<PeerIdentity>>,
}

impl Peer {
    /// A peer at `addr`, with the identity its certificate proved, if any.
    pub fn new(addr: PeerAddr, identity: Option<Arc<PeerIdentity>>) -> Arc<Self> {
        Arc::new(Peer { addr, identity })
    }

    /// Its address.
    pub fn addr(&self) -> &PeerAddr {
        &self.addr
    }

    /// The identity its certificate proved (mutual TLS only).
    pub fn identity(&self) -> Option<&PeerIdentity> {
        self.identity.as_deref()
    }
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
        Context::on_connection(
            request_id,
            method,
            deadline,
            Peer::new(peer, None),
            metadata,
        )
    }

    /// Builds a context for a call on a connection whose [`Peer`] every call shares; the
    /// server does this for every call.
    #[inline]
    pub fn on_connection(
        request_id: u64,
        method: Method,
        deadline: Option<Instant>,
        peer: Arc<Peer>,
        metadata: Metadata,
    ) -> Self {
        Context {
            request_id,
            method,
            deadline,
            peer,
            metadata,
            extras: None,
        }
    }

    /// Adds the identity the peer proved with its certificate (the server passes it in the
    /// [`Peer`] of [`on_connection`](Self::on_connection) instead).
    pub fn with_peer_identity(mut self, identity: Option<Arc<PeerIdentity>>) -> Self {
        Arc::make_mut(&mut self.peer).identity = identity;
        self
    }

    /// Places the call in a trace; the server does this for every call that carries a
    /// `traceparent`, and for every call whose span is recorded.
    pub fn with_trace(mut self, trace: Option<TraceContext>) -> Self {
        if trace.is_some() {
            crate::trace_context::mark_in_use();
            self.extras.get_or_insert_with(Box::default).trace = trace;
        } else if let Some(extras) = &mut self.extras {
            extras.trace = None;
        }
        self
    }

    /// The trace this call belongs to, with the server's own span id for it: calls the
    /// handler makes carry it on as their parent. `None` when the caller sent no
    /// (well-formed) `traceparent` and the server records no span for the call.
    pub fn trace(&self) -> Option<TraceContext> {
        self.extras.as_ref()?.trace
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

    /// Runs `future` on a new tokio task that sees a copy of the current call's context;
    /// outside a handler it is plain [`tokio::spawn`].
    ///
    /// Inside the task, [`Context::current`] returns the handler's request id, deadline, peer
    /// and metadata, and a client call made there inherits the remaining deadline just as one
    /// made by the handler itself would. Metadata is not forwarded to such calls by itself:
    /// read what should travel on from [`Context::metadata`] and set it on the call.
    ///
    /// The task is not tied to the call: it keeps running when the handler returns, is
    /// cancelled or passes its deadline (its own client calls then fail with
    /// `DeadlineExceeded`). Its owner is whoever holds the returned handle: await it, or
    /// abort it when it is no longer wanted.
    ///
    /// ```
    /// use rpc::Context;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// // Inside a handler: the work runs on its own task and still knows whose call it serves.
    /// async fn handler() -> Option<String> {
    ///     let task = Context::spawn(async {
    ///         Context::current().and_then(|ctx| ctx.metadata().get_str("user").map(String::from))
    ///     });
    ///     task.await.ok().flatten()
    /// }
    ///
    /// let mut metadata = rpc::Metadata::new();
    /// metadata.insert("user", "ada");
    /// let ctx = Context::new(1, rpc::Method::new("Svc", "m"), None, rpc::PeerAddr::Memory, metadata);
    /// // The server runs every handler this way.
    /// assert_eq!(ctx.scope(handler()).await.as_deref(), Some("ada"));
    /// // Outside a handler there is no context to carry.
    /// assert_eq!(handler().await, None);
    /// # }
    /// ```
    pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match Context::current() {
            Some(ctx) => tokio::spawn(ctx.scope(future)),
            None => tokio::spawn(future),
        }
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
        &self.peer.addr
    }

    /// The metadata sent with the call.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Who the caller proved to be with its TLS certificate: `Some` only on a server that
    /// requires client certificates (mutual TLS; see `rpc::tls`), whose handshake verified
    /// the certificate against the CA the server trusts.
    pub fn peer_identity(&self) -> Option<&PeerIdentity> {
        self.peer.identity()
    }

    /// Values an interceptor left for the handler (the authenticated user, say).
    ///
    /// ```
    /// # #[derive(Debug, PartialEq)] struct User(String);
    /// # let mut ctx = rpc::Context::new(1, rpc::Method::new("S", "m"), None, rpc::PeerAddr::Memory, rpc::Metadata::new());
    /// // In an interceptor:
    /// ctx.extensions_mut().insert(User("ada".into()));
    /// // In the handler, through `Context::current()`:
    /// assert_eq!(ctx.extensions().get::<User>(), Some(&User("ada".into())));
    /// ```
    pub fn extensions(&self) -> &Extensions {
        self.extras
            .as_ref()
            .map_or(&NO_EXTENSIONS, |extras| &extras.extensions)
    }

    /// The values for the handler, to add to (see [`extensions`](Self::extensions)).
    pub fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.extras.get_or_insert_with(Box::default).extensions
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

    #[test]
    fn a_context_stays_small_enough_to_move_without_memcpy() {
        // It moves into the handler's future, the task-local and back on every call; at
        // 144 bytes those moves were `memcpy` calls costing ~150 instructions per call.
        assert!(std::mem::size_of::<Context>() <= 112);
    }

    #[test]
    fn identity_and_address_come_from_the_shared_peer() {
        let peer = Peer::new(PeerAddr::Memory, None);
        let ctx = Context::on_connection(
            1,
            Method::new("S", "m"),
            None,
            peer.clone(),
            Metadata::new(),
        );
        assert_eq!(ctx.peer(), &PeerAddr::Memory);
        assert!(ctx.peer_identity().is_none());
        // Shared, not copied, by every call of the connection.
        assert_eq!(Arc::strong_count(&peer), 2);
    }

    #[tokio::test]
    async fn spawn_carries_the_context_and_plain_spawn_does_not() {
        let ctx = Context::new(
            4,
            Method::new("S", "m"),
            None,
            PeerAddr::Memory,
            Metadata::new(),
        );
        let (carried, plain) = ctx
            .scope(async {
                let carried = Context::spawn(async { Context::with_current(Context::request_id) });
                let plain = tokio::spawn(async { Context::with_current(Context::request_id) });
                (carried.await, plain.await)
            })
            .await;
        assert_eq!(carried.ok().flatten(), Some(4));
        assert_eq!(plain.ok().flatten(), None);
        let outside = Context::spawn(async { Context::current().is_none() }).await;
        assert_eq!(outside.ok(), Some(true));
    }
}
