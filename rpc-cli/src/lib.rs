//! `rpc`, a command-line client for `rpc` servers, in the spirit of grpcurl.
//!
//! ```text
//! rpc ping 127.0.0.1:7000                          # round-trip times of keepalive pings
//! rpc health 127.0.0.1:7000 [SERVICE]              # the rpc.Health check
//! rpc list 127.0.0.1:7000                          # services and methods, from reflection
//! rpc describe 127.0.0.1:7000 Calculator.add       # a method's kind and shapes
//! rpc call 127.0.0.1:7000 Calculator.add '[2, 3]'  # one call, arguments and reply as JSON
//! ```
//!
//! | module | what lives there |
//! |---|---|
//! | [`cli`] | the command line, and running each command |
//! | [`call`] | one call: JSON arguments in, JSON reply (or stream items) out |
//! | [`render`] | shapes and signatures as Rust-like text |
//! | [`ping`] | keepalive pings over a raw connection, timed |
//! | [`json`] | JSON to the wire encoding and back, walking an `rpc::shape::Shape` |
//! | [`raw`] | bodies passed through `rpc::Client` as the bytes they are |
//! | [`error`] | [`CliError`], everything a command can fail with |

pub mod call;
pub mod cli;
pub mod error;
pub mod json;
pub mod ping;
pub mod raw;
pub mod render;

pub use error::CliError;
