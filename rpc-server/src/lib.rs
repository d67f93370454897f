//! The server side of the `rpc` framework.
//!
//! Users reach this through the `rpc` crate: `rpc::Server::builder().serve(..).bind(..)`.
//!
//! | module | what lives there |
//! |---|---|
//! | [`service`] | the [`Service`] trait (implemented by `#[rpc::service]`, or by hand), [`Request`] and [`Dispatch`] |
//! | [`config`] | limits and timeouts, each with its default |
//! | [`server`] | [`Server`]: listeners, the accept loop, the connection cap, shutdown |
//! | `health` | the `rpc.Health` service every server hosts, and its per-service flags |
//! | `reflection` | the `rpc.Reflection` service: what the server hosts, and each method's shapes |
//! | `router` | which service answers which method id |
//! | `shutdown` | the shutdown signal, and each connection's drain and go-away |
//! | `connection` | one connection: read requests, run handlers, write responses |
//! | `calls` | one connection's calls in flight, by request id |
//! | `turn` | the waker a connection's calls get, so that a call its own task wakes costs no reschedule |
//! | [`intercept`] | interceptors: async checks before a handler, server-wide or per service |
//! | `idle` | the timer that closes an idle connection |
//! | `call` | one call: deadline, panic capture; in place or as a task of its own |
//! | `admission` | which requests run now, wait, or are refused: in-flight limit, stream cap, memory budgets |
//! | `stats` | live counters and the memory accounting: connections, calls in flight, bytes held |
//! | `observe` | each call's span, and metrics of calls, connections, bytes, stream items (feature `metrics`) |
//! | `tls` | TLS and mutual TLS on accepted connections (feature `tls`) |
//! | `layer` | tower layers around each call, server-wide or per service (feature `tower`) |

mod admission;
mod call;
mod calls;
pub mod config;
mod connection;
mod health;
mod idle;
pub mod intercept;
#[cfg(feature = "tower")]
pub mod layer;
mod listener;
mod observe;
mod reflection;
mod router;
pub mod server;
pub mod service;
mod shutdown;
mod stats;
#[cfg(feature = "tls")]
pub mod tls;
mod turn;

pub use admission::Overload;
pub use config::ServerConfig;
pub use intercept::{Intercepted, ServerInterceptor};
pub use listener::MemoryConnector;
pub use server::{Server, ServerBuilder, ServerHandle};
pub use service::{Dispatch, Request, Service};
pub use stats::Accounting;
