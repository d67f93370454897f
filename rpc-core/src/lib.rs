//! The wire protocol of the `rpc` framework, shared by client and server.
//!
//! Users depend on the `rpc` crate, which re-exports what they need from here.
//! This crate holds the pieces both ends of a connection must agree on:
//!
//! | module | what lives there |
//! |---|---|
//! | [`preamble`] | the 8 bytes that open a connection: magic and protocol version |
//! | [`frame`] | length-delimited frames with a bounded maximum size |
//! | [`message`] | the header at the front of every frame: request, response, cancel |
//! | [`codec`] | the [`Codec`] trait that turns arguments and results into bytes (bincode) |
//! | [`stream`] | streams inside calls: items, ends, byte credit per stream |
//! | [`ids`] | maps keyed by ids this side chose, with a cheap hash |
//! | [`method`] | stable method ids derived from `Service.method` names |
//! | [`error`] | [`Error`], the framework's failures, apart from application errors |
//! | [`context`] | [`Context`], the per-call data a handler reads without extra parameters |
//! | [`transport`] | byte streams a connection runs over: TCP, Unix sockets, in-memory pipes |
//! | [`writer`] | the one writer per connection that coalesces frames into one flush |

pub mod codec;
pub mod context;
pub mod error;
pub mod frame;
pub mod ids;
pub mod message;
pub mod metadata;
pub mod method;
pub mod preamble;
pub mod stream;
pub mod transport;
pub mod writer;

pub use codec::{Bincode, Codec, CodecError};
pub use context::Context;
pub use error::{Error, ProtocolError};
pub use metadata::Metadata;
pub use method::{Method, MethodId};
pub use transport::{PeerAddr, Transport};
