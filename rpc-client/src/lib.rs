//! The client side of the `rpc` framework.
//!
//! Users reach this through the `rpc` crate and the stubs `#[rpc::service]` generates
//! (`CalculatorClient::connect(..)`); this crate is the machinery under them.
//!
//! | module | what lives there |
//! |---|---|
//! The layers, from the caller down: a generated stub holds a [`Client`], which sends each
//! call over one endpoint's `channel` or, balanced, over the less loaded of two; a channel
//! keeps one `connection` at a time and redials it.
//!
//! | module | what lives there |
//! |---|---|
//! | [`client`] | [`Client`]: calls to one endpoint or a balanced set, shared by clones |
//! | [`call`] | [`Call`]: one call, configurable (timeout, metadata) before it is awaited |
//! | [`config`] | limits and timeouts, each with its default |
//! | [`endpoint`] | [`Endpoint`]: where to connect (TCP address or name, Unix socket) |
//! | [`discover`] | [`discover::Change`]s to a balanced client's endpoints; DNS re-resolution |
//! | [`intercept`] | [`ClientInterceptor`]: metadata every call carries, calls refused locally |
//! | `balance` | power of two choices over endpoints by calls in flight |
//! | `channel` | one endpoint: its current connection, redial with backoff |
//! | `retry` | the retry budget for calls that may have run |
//! | `connection` | one live connection: the reader, the writer, calls awaiting replies |
//! | `slots` | the table of calls awaiting replies, one reusable slot each |
//! | `observe` | each call's span and `traceparent`, and metrics of calls, connections, bytes, stream items (feature `metrics`) |
//! | `tls` | TLS and mutual TLS on every dial (feature `tls`) |
//! | `tower` | the client as a `tower::Service` of calls (feature `tower`) |

mod balance;
pub mod call;
mod channel;
pub mod client;
pub mod config;
mod connection;
pub mod discover;
pub mod endpoint;
pub mod intercept;
mod observe;
mod permits;
mod retry;
mod slots;
#[cfg(feature = "tls")]
pub mod tls;
#[cfg(feature = "tower")]
pub mod tower;

pub use call::Call;
pub use client::{Client, ClientBuilder};
pub use config::ClientConfig;
pub use endpoint::Endpoint;
pub use intercept::ClientInterceptor;
