//! The client side of the `rpc` framework.
//!
//! Users reach this through the `rpc` crate and the stubs `#[rpc::service]` generates
//! (`CalculatorClient::connect(..)`); this crate is the machinery under them.
//!
//! | module | what lives there |
//! |---|---|
//! | [`client`] | [`Client`]: one logical connection, shared by clones, reconnecting on demand |
//! | [`call`] | [`Call`]: one call, configurable (timeout, metadata) before it is awaited |
//! | [`config`] | limits and timeouts, each with its default |
//! | [`endpoint`] | [`Endpoint`]: where to connect (TCP address or name, Unix socket) |
//! | `connection` | one live connection: the reader, the writer, calls awaiting replies |
//! | `slots` | the table of calls awaiting replies, one reusable slot each |

pub mod call;
pub mod client;
pub mod config;
mod connection;
pub mod endpoint;
mod slots;

pub use call::Call;
pub use client::{Client, ClientBuilder};
pub use config::ClientConfig;
pub use endpoint::Endpoint;
