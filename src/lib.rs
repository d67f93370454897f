//! Remote procedure calls for Rust: define a service as a plain trait, call it over TCP.
//!
//! ```no_run
//! #[rpc::service]
//! pub trait Greeter {
//!     /// Says hello.
//!     async fn hello(&self, name: String) -> String;
//! }
//!
//! struct English;
//! impl Greeter for English {
//!     async fn hello(&self, name: String) -> String {
//!         format!("Hello, {name}!")
//!     }
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let server = rpc::Server::builder().serve(English.into_service()).bind("127.0.0.1:0").await?;
//! let addr = server.local_addr().expect("tcp");
//! tokio::spawn(server.run());
//!
//! let greeter = GreeterClient::connect(addr).await?;
//! assert_eq!(greeter.hello("World".into()).await?, "Hello, World!");
//! # Ok(()) }
//! ```
//!
//! What a trait method may look like, and what the macro generates, is described on
//! [`service`]. The crates behind this facade: `rpc-core` (wire protocol), `rpc-macros`
//! (`#[service]`), `rpc-server`, `rpc-client`.

#[doc = include_str!("../docs/service.md")]
pub use rpc_macros::service;

pub mod health;
pub mod reflection;

#[doc(inline)]
pub use rpc_core::shape;

#[doc(inline)]
pub use rpc_client::discover;
#[doc(inline)]
pub use rpc_client::{Call, Client, ClientBuilder, ClientConfig, ClientInterceptor, Endpoint};
#[doc(inline)]
pub use rpc_core::error::ErrorCode;
#[doc(inline)]
pub use rpc_core::error::SharedIoError;
#[doc(inline)]
pub use rpc_core::stream::Stream;
#[doc(inline)]
pub use rpc_core::{
    Context, Error, Extensions, Metadata, Method, MethodId, Payload, PeerAddr, PeerIdentity,
    ProtocolError, TlsError, TraceContext,
};
#[doc(inline)]
pub use rpc_server::{
    Accounting, Dispatch, Intercepted, MemoryConnector, Overload, Request, Server, ServerBuilder,
    ServerConfig, ServerHandle, ServerInterceptor, Service,
};

/// The attribute that makes an `async fn` in an interceptor's `impl` object-safe: put
/// `#[rpc::async_trait]` on `impl ServerInterceptor for ..` and `impl ClientInterceptor for ..`.
pub use async_trait::async_trait;

/// TLS and mutual TLS (feature `tls`), over rustls with the *ring* crypto provider.
///
/// A server speaks TLS on every connection with `ServerBuilder::tls`; a client dials with
/// it, every time it dials, with `ClientBuilder::tls`. Under mutual TLS a handler reads
/// the caller's verified certificate through [`Context::peer_identity`]. A handshake that
/// fails reaches the client as [`Error::Tls`], whose [`TlsError`] says what to fix, and the
/// server logs it.
pub mod tls {
    #[cfg(feature = "tls")]
    #[doc(inline)]
    pub use rpc_client::tls::ClientTls;
    #[doc(inline)]
    pub use rpc_core::tls::{PeerIdentity, SubjectAltName, TlsError};
    #[cfg(feature = "tls")]
    #[doc(inline)]
    pub use rpc_server::tls::ServerTls;
    /// The rustls crate these types are built on, for `ServerTls::from_config` and
    /// `ClientTls::from_config`.
    #[cfg(feature = "tls")]
    pub use rustls;
}

/// tower layers around calls, on both sides (feature `tower`).
///
/// **Client**: [`Client::tower`] is a `tower::Service` of [`Call`](crate::tower::Call)s
/// (method and arguments in, the typed reply out), so tower's layers go around it:
///
/// ```no_run
/// # async fn demo(client: rpc::Client) -> Result<(), rpc::Error> {
/// use std::time::Duration;
/// use tower::{Service, ServiceBuilder, ServiceExt};
/// const ADD: rpc::Method = rpc::Method::new("Calculator", "add");
///
/// let mut calc = ServiceBuilder::new()
///     .map_err(rpc::Error::from_tower) // tower's BoxError back to rpc::Error
///     .timeout(Duration::from_millis(500))
///     .concurrency_limit(16)
///     .service(client.tower::<(i64, i64), i64>());
/// let sum: i64 = calc.ready().await?.call(rpc::tower::Call::new(ADD, (2i64, 3i64))).await?;
/// # Ok(()) }
/// ```
///
/// **Server**: [`ServerBuilder::layer`] puts a `tower::Layer` around each call of every
/// service, [`ServerBuilder::serve_layered`] (or [`Layered`](crate::tower::Layered)) around
/// one service's; the layered stack sees each call as a `tower::Service<rpc::Request>`. A
/// layer's error reaches the caller typed: tower's timeout as [`Error::DeadlineExceeded`],
/// its load shed as [`Error::Overloaded`], see [`Error::from_tower`]. No layer, no cost.
///
/// ```no_run
/// # fn demo(svc: impl rpc::Service, admin: impl rpc::Service) {
/// use std::time::Duration;
/// use tower::ServiceBuilder;
///
/// let server = rpc::Server::builder()
///     .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(5)))
///     .serve_layered(svc, ServiceBuilder::new().load_shed().concurrency_limit(64))
///     .serve(admin);
/// # }
/// ```
#[cfg(feature = "tower")]
pub mod tower {
    #[doc(inline)]
    pub use rpc_client::tower::{Call, ClientService, ResponseFuture};
    #[doc(inline)]
    pub use rpc_core::error::BoxError;
    #[doc(inline)]
    pub use rpc_server::layer::{Handler, Layered};
}

/// Lower-level pieces: frames, headers, transports, and the body encoding. Most users never
/// need these; tools and tests that speak raw frames do.
///
/// Request and response bodies are always bincode 2 (see [`codec`](crate::protocol::codec));
/// it is not a setting. [`Bincode`](crate::protocol::Bincode) and its
/// [`Codec`](crate::protocol::Codec) trait are here so that raw frames can carry bodies the
/// server and the client decode, not as a point where another encoding plugs in.
pub mod protocol {
    #[doc(inline)]
    pub use rpc_core::{
        codec, frame, message, observe, preamble, trace_context, transport, Bincode, Codec,
        Transport,
    };
}
