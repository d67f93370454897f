//! The server side of the `rpc` framework.
//!
//! Users reach this through the `rpc` crate: `rpc::Server::builder().serve(..).bind(..)`.
//!
//! | module | what lives there |
//! |---|---|
//! | [`service`] | the [`Service`] trait (implemented by `#[rpc::service]`, or by hand), [`Request`] and [`Dispatch`] |
//! | [`config`] | limits and timeouts, each with its default |
//! | [`server`] | [`Server`]: listeners, the accept loop, the connection cap, shutdown |
//! | `router` | which service answers which method id |
//! | `connection` | one connection: read requests, run handlers, write responses |
//! | `call` | one call: deadline, panic capture, the reply |
//! | `stats` | live counters: connections, calls in flight |

mod call;
pub mod config;
mod connection;
mod listener;
mod router;
pub mod server;
pub mod service;
mod stats;

pub use config::ServerConfig;
pub use listener::MemoryConnector;
pub use server::{Server, ServerBuilder, ServerHandle};
pub use service::{Dispatch, Request, Service};
