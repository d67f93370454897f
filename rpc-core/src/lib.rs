//! The wire protocol of the `rpc` framework, shared by client and server.
//!
//! Users depend on the `rpc` crate, which re-exports what they need from here. This crate
//! holds types and the machinery both ends of a connection share; the tasks that drive a
//! connection live in `rpc-server` and `rpc-client`.
//!
//! **The wire protocol**: what a peer in another language must match byte for byte.
//!
//! | module | what lives there |
//! |---|---|
//! | [`preamble`] | the 8 bytes that open a connection: magic and protocol version |
//! | [`frame`] | length-delimited frames with a bounded maximum size |
//! | [`message`] | the header at the front of every frame: request, response, cancel, stream frames, ping and pong, and the status a call ends with |
//! | [`metadata`] | call metadata: key-value pairs carried in a request header |
//! | [`method`] | stable method ids derived from `Service.method` names |
//! | [`shape`] | the shapes of arguments and results, and the signature fingerprint every request carries |
//! | [`health`] | the built-in health service every server hosts: its name, method and answer |
//! | [`reflection`] | the built-in reflection service: its name, methods and answers |
//! | [`error`] | [`Error`], the framework's failures, and the wire error codes |
//! | [`codec`] | how bodies are encoded: bincode 2, behind the [`Codec`] seam |
//! | [`payload`] | [`Payload`], bytes decoded as a slice of the frame and written without a copy |
//!
//! **Connection machinery both ends share**: written once here, used by the server's and the
//! client's connection tasks alike.
//!
//! | module | what lives there |
//! |---|---|
//! | [`writer`] | the one writer per connection that coalesces frames into one flush; control frames |
//! | [`budget`] | byte budgets many connections draw on together (a server's memory bounds) |
//! | [`stream`] | streams inside calls: item buffers, byte credit per stream, routing stream frames |
//! | [`keepalive`] | pinging a silent connection, and declaring a peer that does not answer dead |
//! | [`deadline`] | deadline timers armed only when work has to wait ([`deadline::Deadline`]) |
//! | [`task`] | tasks owned by a handle that aborts them when dropped |
//! | [`sync`] | the poison-tolerant lock every shared table uses |
//! | [`context`] | [`Context`], the per-call data a handler reads without extra parameters |
//! | [`transport`] | byte streams a connection runs over: TCP, Unix sockets, in-memory pipes, TLS |
//! | [`tls`] | the peer's verified certificate identity, and why a TLS handshake failed |
//! | [`extensions`] | typed values an interceptor leaves in a call's [`Context`] for its handler |
//! | [`ids`] | maps keyed by ids this side chose, with a cheap hash |
//! | [`trace_context`] | W3C trace context: the `traceparent` a call carries, its parsing and span ids |
//! | [`observe`] | what spans and metrics call a call's outcome; with `metrics`, each method's metric handles and a connection's byte counts |

pub mod budget;
pub mod codec;
pub mod context;
pub mod deadline;
pub mod error;
pub mod extensions;
pub mod frame;
pub mod health;
pub mod ids;
pub mod keepalive;
pub mod message;
pub mod metadata;
pub mod method;
pub mod observe;
pub mod payload;
pub mod preamble;
pub mod reflection;
pub mod shape;
pub mod stream;
pub mod sync;
pub mod task;
pub mod tls;
pub mod trace_context;
pub mod transport;
pub mod writer;

pub use codec::{Bincode, Codec, CodecError};
pub use context::{Context, Peer};
pub use error::{Error, ProtocolError};
pub use extensions::Extensions;
pub use metadata::Metadata;
pub use method::{Method, MethodId};
pub use payload::Payload;
pub use tls::{PeerIdentity, TlsError};
pub use trace_context::TraceContext;
pub use transport::{PeerAddr, Transport};
