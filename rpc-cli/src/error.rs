//! What a command can fail with; each message is printed as it is, after `error: `.

use crate::json::ConvertError;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The call (or the connection) failed in the framework.
    #[error(transparent)]
    Rpc(#[from] rpc::Error),
    /// The arguments are not JSON.
    #[error("the arguments are not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The arguments do not fit the method's shape, or the reply does not fit the result's.
    #[error("{0}")]
    Convert(#[from] ConvertError),
    /// A method name that is not `Service.method`.
    #[error("`{0}` is not a method name; write it as Service.method (see `rpc list`)")]
    MethodName(String),
    /// A line of a client stream's items is not JSON.
    #[error("item on line {line} is not valid JSON: {source}")]
    ItemJson {
        /// The line, from 1.
        line: usize,
        /// What the JSON parser said.
        source: serde_json::Error,
    },
    /// A line of a client stream's items does not fit the stream's item shape.
    #[error("item on line {line}: {source}")]
    Item {
        /// The line, from 1.
        line: usize,
        /// Where in the item, and what is wrong there.
        source: ConvertError,
    },
    /// Items given for a method that takes no stream from the client.
    #[error("`{0}` takes no stream from the client; --items is for client-streaming and bidirectional methods")]
    NoInputStream(String),
    /// The server does not describe the method.
    #[error("the server has no method `{0}` (see `rpc list`)")]
    NoSuchMethod(String),
    /// The server hosts the method but does not describe its shapes.
    #[error("the server does not describe the shapes of `{method}`{}, so rpc call cannot encode its arguments", why.as_deref().map_or_else(String::new, |why| format!(" ({why})")))]
    NotDescribed {
        /// `Service.method`.
        method: String,
        /// Why, when the server says.
        why: Option<String>,
    },
    /// The server answers the check with something other than serving.
    #[error("{service} is {status}")]
    NotServing {
        /// The service asked about (`""`: the server).
        service: String,
        /// What the server said.
        status: String,
    },
    /// A local I/O failure (connecting for a ping, writing to stdout).
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The server broke the protocol during a ping.
    #[error("protocol violation: {0}")]
    Protocol(#[from] rpc::ProtocolError),
    /// No answer in time.
    #[error("no answer within {millis} ms")]
    Timeout {
        /// The limit.
        millis: u128,
    },
}
