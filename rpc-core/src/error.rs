//! The framework's failures, kept apart from the application's own error types.
//!
//! A method declared `-> Result<T, MyError>` reaches the client as
//! `Result<Result<T, MyError>, rpc::Error>`: the outer error says the call itself failed
//! (the connection dropped, the deadline passed, ...), the inner one is whatever the handler
//! returned.

use std::io;
use std::sync::Arc;

use crate::codec::CodecError;
use crate::tls::TlsError;

/// Why a call (or a connection) failed, from the framework's point of view.
///
/// Cloneable, so that one broken connection can fail every call pending on it. Its `Display`
/// is written to be shown to a person: it says what happened and, where it helps, what to do.
///
/// ```
/// fn report(outcome: Result<u32, rpc::Error>) -> String {
///     match outcome {
///         Ok(n) => format!("got {n}"),
///         // Worth another try later: the server is busy or was not reachable.
///         Err(rpc::Error::Overloaded { .. } | rpc::Error::Connect { .. }) => "busy; try later".into(),
///         Err(err) => format!("failed: {err}"),
///     }
/// }
/// assert!(report(Err(rpc::Error::DeadlineExceeded)).starts_with("failed: deadline exceeded"));
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The client could not open a connection.
    #[error("could not connect to {endpoint}: {source}; is the server running and reachable?")]
    Connect {
        /// What the client tried to reach.
        endpoint: String,
        /// The underlying failure; [`source`](std::error::Error::source) is the
        /// [`io::Error`] itself.
        #[source]
        source: SharedIoError,
    },
    /// The connection is gone; the call's outcome on the server is unknown.
    #[error("connection closed: {reason}; reconnect to make new calls")]
    ConnectionClosed {
        /// What ended the connection.
        reason: String,
        /// The I/O failure that ended it, when one did (a reset, a broken pipe); also the
        /// error's [`source`](std::error::Error::source), as an [`io::Error`].
        #[source]
        cause: Option<SharedIoError>,
    },
    /// The call's deadline passed before a reply arrived; the server stops the handler too.
    #[error("deadline exceeded: no reply before the call's deadline")]
    DeadlineExceeded,
    /// The call was cancelled before it completed.
    #[error("call cancelled")]
    Cancelled,
    /// The server does not implement the method (for example, it runs an older version of
    /// the service).
    #[error("the server has no method {method}; is it running an older version of the service?")]
    UnknownMethod {
        /// `Service.method`, or the raw id when the name is unknown.
        method: String,
    },
    /// The server refused the call because it is at a limit; trying later may succeed.
    #[error("server overloaded: {reason}")]
    Overloaded {
        /// Which limit was hit.
        reason: String,
    },
    /// The server refused the call without running any of it (it is shutting down). The
    /// client already sent it again where it could; trying again later, or elsewhere, is
    /// safe.
    #[error("server unavailable: {reason}; the call was not run, so trying again is safe")]
    Unavailable {
        /// What the server said.
        reason: String,
    },
    /// The server could not decode the call's arguments: client and server disagree on the
    /// method's signature.
    #[error("bad request: {reason}; do client and server use the same service definition?")]
    BadRequest {
        /// What the server could not decode.
        reason: String,
    },
    /// Client and server disagree on the method's signature: the fingerprint of its argument
    /// or result shapes the client sent differs from the server's (see
    /// [`shape::fingerprint`](crate::shape::fingerprint)). The server refused the call
    /// without decoding or running it.
    #[error("signature mismatch on {method}: {detail}; rebuild the client from the server's service definition")]
    SignatureMismatch {
        /// `Service.method`.
        method: String,
        /// Which part differs (the arguments, the result, or both), and that the call was
        /// never decoded or run.
        detail: String,
    },
    /// The handler panicked; the server kept serving other calls. Its message stays in the
    /// server's log, under the call id given here, unless the server is set to send it
    /// (`expose_panic_messages`, for development).
    #[error("handler panicked ({message})")]
    HandlerPanicked {
        /// `call id N; see the server log`, or the panic's own message from a server that
        /// exposes it.
        message: String,
    },
    /// The server failed the call for a reason this client version does not know.
    #[error("server error (code {code}): {message}")]
    Server {
        /// The wire error code.
        code: u16,
        /// The server's explanation.
        message: String,
    },
    /// The peer broke the wire protocol; the connection is closed.
    #[error("protocol violation: {0}")]
    Protocol(#[from] ProtocolError),
    /// A message of this call (its request, its reply, or an item of one of its streams) is
    /// larger than a maximum frame length: the sender's, which then did not send it, or the
    /// receiver's, which skipped it unread. Only this call failed; the connection and every
    /// other call on it go on. Wire code 9 ([`ErrorCode::MessageTooLarge`]), so the caller
    /// gets this variant whichever side's limit it was.
    #[error("message of {len} bytes exceeds the maximum frame length of {max} bytes; send less or raise max_frame_len on both sides")]
    MessageTooLarge {
        /// The encoded size of the message (header and body).
        len: usize,
        /// The maximum frame length it exceeds.
        max: usize,
    },
    /// A value could not be encoded or decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A local I/O failure; [`source`](std::error::Error::source) is the [`io::Error`].
    #[error("i/o error: {0}")]
    Io(#[source] SharedIoError),
    /// The TLS handshake with the server failed (or the server does not speak TLS); nothing
    /// was sent.
    #[error("TLS with {endpoint} failed: {source}")]
    Tls {
        /// What the client tried to reach.
        endpoint: String,
        /// Why, and what to fix.
        #[source]
        source: TlsError,
    },
    /// The server (an interceptor) refused the call before running it: the caller did not
    /// say who it is, or its credentials are invalid or expired.
    #[error("unauthenticated: {reason}")]
    Unauthenticated {
        /// What the server said.
        reason: String,
    },
    /// The server (an interceptor) refused the call before running it: the caller is known
    /// but may not do this.
    #[error("permission denied: {reason}")]
    PermissionDenied {
        /// What the server said.
        reason: String,
    },
    /// A tower layer around the call failed it with an error of its own: not a timeout (that
    /// is [`DeadlineExceeded`](Error::DeadlineExceeded)) nor a load shed
    /// ([`Overloaded`](Error::Overloaded)). See `Error::from_tower` (feature `tower`).
    #[error("a tower layer failed the call: {message}")]
    Layer {
        /// The layer's error, as text.
        message: String,
    },
}

impl From<io::Error> for Error {
    fn from(err: io::Error) -> Self {
        Error::Io(err.into())
    }
}

/// An [`io::Error`] shared by every clone of an [`Error`] (one broken connection fails many
/// calls with the same error). It dereferences to the `io::Error`, and the `Error` holding it
/// hands out the `io::Error` itself as its [`source`](std::error::Error::source), so
/// `err.source()?.downcast_ref::<std::io::Error>()` works:
///
/// ```
/// use std::error::Error as _;
/// let err = rpc::Error::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
/// let io = err.source().and_then(|s| s.downcast_ref::<std::io::Error>());
/// assert_eq!(io.map(|io| io.kind()), Some(std::io::ErrorKind::ConnectionReset));
/// ```
//
// Deliberately not an `Error` itself: thiserror's `source()` calls `as_dyn_error()` by
// method syntax, which then dereferences to the `io::Error` (an `Arc<io::Error>` would be
// an `Error` and show up as the source instead, and downcast only to `Arc<io::Error>`). The
// tests below check the downcast for every variant that holds one.
#[derive(Debug, Clone)]
pub struct SharedIoError(Arc<io::Error>);

impl SharedIoError {
    /// The shared `io::Error`.
    pub fn get(&self) -> &io::Error {
        &self.0
    }
}

impl std::ops::Deref for SharedIoError {
    type Target = io::Error;

    fn deref(&self) -> &io::Error {
        &self.0
    }
}

impl std::fmt::Display for SharedIoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl From<io::Error> for SharedIoError {
    fn from(err: io::Error) -> Self {
        SharedIoError(Arc::new(err))
    }
}

impl From<Arc<io::Error>> for SharedIoError {
    fn from(err: Arc<io::Error>) -> Self {
        SharedIoError(err)
    }
}

/// A peer that does not follow the wire protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The first bytes were not this protocol's magic: the peer speaks something else
    /// (HTTP, TLS, random bytes).
    #[error(
        "peer does not speak this protocol (first bytes {got:02x?}, expected {expected:02x?})"
    )]
    BadMagic {
        /// The bytes received.
        got: [u8; 4],
        /// The magic this protocol expects.
        expected: [u8; 4],
    },
    /// The first bytes were a TLS record: the peer speaks TLS and this side does not.
    #[error("the peer speaks TLS (first bytes {got:02x?}) and this side does not: turn TLS on here too (rpc::tls), or connect the peer without it")]
    PeerSpeaksTls {
        /// The bytes received.
        got: [u8; 4],
    },
    /// The peer speaks another version of the protocol.
    #[error("protocol version {theirs} is not supported (this side speaks {ours})")]
    UnsupportedVersion {
        /// The version this side speaks.
        ours: u16,
        /// The version the peer asked for or answered with.
        theirs: u16,
    },
    /// The peer did not finish its preamble in time.
    #[error("peer sent no complete preamble within {millis} ms")]
    PreambleTimeout {
        /// The limit, in milliseconds.
        millis: u64,
    },
    /// A frame's length prefix exceeds the configured maximum, and no single call can be
    /// failed for it: a connection reads the header of an oversized frame and fails just
    /// that call ([`Error::MessageTooLarge`]), so this closes one only when that header
    /// cannot be read within its bound or belongs to no call. (The strict
    /// [`FrameDecoder`](crate::frame::FrameDecoder) reports every oversized frame this way.)
    #[error("frame of {len} bytes exceeds the maximum frame length of {max} bytes (raise max_frame_len on both sides if this is intended)")]
    FrameTooLarge {
        /// The length the frame claimed.
        len: u64,
        /// The configured maximum.
        max: usize,
    },
    /// A frame's header could not be decoded.
    #[error("malformed frame header: {reason}")]
    MalformedHeader {
        /// What the decoder reported.
        reason: String,
    },
    /// A message of a kind this side never receives (say, a response sent to a server).
    #[error("unexpected {kind} message from the peer")]
    UnexpectedMessage {
        /// The kind of message received.
        kind: &'static str,
    },
    /// A request reused the id of a call still in flight on the same connection.
    #[error("request id {id} is already in flight on this connection")]
    DuplicateRequestId {
        /// The reused id.
        id: u64,
    },
    /// The peer sent more stream data than the receiver had granted credit for.
    #[error(
        "stream {id} received {buffered} bytes beyond its flow-control window of {window} bytes"
    )]
    CreditExceeded {
        /// The call the stream belongs to.
        id: u64,
        /// Bytes buffered when the limit was crossed.
        buffered: usize,
        /// The window granted.
        window: usize,
    },
    /// Call metadata exceeded the configured maximum.
    #[error("call metadata of {len} bytes exceeds the maximum of {max} bytes")]
    MetadataTooLarge {
        /// The encoded size of the metadata.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
}

/// The error codes a server sends back in a failed response.
///
/// Stable numbers on the wire; a code this side does not know becomes [`Error::Server`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// See [`Error::UnknownMethod`].
    UnknownMethod,
    /// See [`Error::BadRequest`].
    BadRequest,
    /// See [`Error::HandlerPanicked`].
    HandlerPanicked,
    /// See [`Error::DeadlineExceeded`].
    DeadlineExceeded,
    /// See [`Error::Overloaded`].
    Overloaded,
    /// The handler's reply could not be encoded or is larger than a frame may be.
    ResponseUnencodable,
    /// The server is shutting down and did not run the call.
    ShuttingDown,
    /// The peer cancelled the call or stream.
    Cancelled,
    /// See [`Error::MessageTooLarge`]: a request, reply or stream item over a frame limit.
    /// The message names both sizes.
    MessageTooLarge,
    /// See [`Error::SignatureMismatch`]: the request's signature fingerprint differs from
    /// the server's; the call was not decoded or run.
    SignatureMismatch,
    /// See [`Error::Unauthenticated`].
    Unauthenticated,
    /// See [`Error::PermissionDenied`].
    PermissionDenied,
}

impl ErrorCode {
    /// The number sent on the wire.
    pub const fn to_u16(self) -> u16 {
        match self {
            ErrorCode::UnknownMethod => 1,
            ErrorCode::BadRequest => 2,
            ErrorCode::HandlerPanicked => 3,
            ErrorCode::DeadlineExceeded => 4,
            ErrorCode::Overloaded => 5,
            ErrorCode::ResponseUnencodable => 6,
            ErrorCode::ShuttingDown => 7,
            ErrorCode::Cancelled => 8,
            ErrorCode::MessageTooLarge => 9,
            ErrorCode::SignatureMismatch => 10,
            ErrorCode::Unauthenticated => 11,
            ErrorCode::PermissionDenied => 12,
        }
    }

    /// Reads a number off the wire; `None` for codes from a newer peer.
    pub const fn from_u16(code: u16) -> Option<ErrorCode> {
        Some(match code {
            1 => ErrorCode::UnknownMethod,
            2 => ErrorCode::BadRequest,
            3 => ErrorCode::HandlerPanicked,
            4 => ErrorCode::DeadlineExceeded,
            5 => ErrorCode::Overloaded,
            6 => ErrorCode::ResponseUnencodable,
            7 => ErrorCode::ShuttingDown,
            8 => ErrorCode::Cancelled,
            9 => ErrorCode::MessageTooLarge,
            10 => ErrorCode::SignatureMismatch,
            11 => ErrorCode::Unauthenticated,
            12 => ErrorCode::PermissionDenied,
            _ => return None,
        })
    }
}

impl Error {
    /// Rebuilds the error a server reported for a call to `method`.
    ///
    /// A code this version does not know, and [`ErrorCode::ResponseUnencodable`], become
    /// [`Error::Server`] with that code, which [`to_wire`](Self::to_wire) sends on unchanged:
    /// a proxy passing the error on keeps its code and message.
    pub fn from_remote(code: u16, message: String, method: &dyn std::fmt::Display) -> Error {
        match ErrorCode::from_u16(code) {
            // A server that has no such method knows only its id and says so in a sentence;
            // one passing on a downstream `UnknownMethod` names the method that is missing.
            Some(ErrorCode::UnknownMethod) => Error::UnknownMethod {
                method: if message.is_empty() || message.contains(char::is_whitespace) {
                    method.to_string()
                } else {
                    message
                },
            },
            Some(ErrorCode::BadRequest) => Error::BadRequest { reason: message },
            Some(ErrorCode::HandlerPanicked) => Error::HandlerPanicked { message },
            Some(ErrorCode::DeadlineExceeded) => Error::DeadlineExceeded,
            Some(ErrorCode::Cancelled) => Error::Cancelled,
            Some(ErrorCode::Overloaded) => Error::Overloaded { reason: message },
            Some(ErrorCode::ShuttingDown) => Error::Unavailable { reason: message },
            Some(ErrorCode::MessageTooLarge) => match sizes(&message) {
                Some((len, max)) => Error::MessageTooLarge { len, max },
                // A peer that sent the code without the sizes: still reported, untyped.
                None => Error::Server { code, message },
            },
            Some(ErrorCode::SignatureMismatch) => Error::SignatureMismatch {
                method: method.to_string(),
                detail: message,
            },
            Some(ErrorCode::Unauthenticated) => Error::Unauthenticated { reason: message },
            Some(ErrorCode::PermissionDenied) => Error::PermissionDenied { reason: message },
            Some(ErrorCode::ResponseUnencodable) | None => Error::Server { code, message },
        }
    }

    /// The wire code (see [`ErrorCode`]) and detail message that report this error to a
    /// peer; the peer rebuilds it with [`Error::from_remote`].
    ///
    /// What a server received from another one goes on with its code and message (a proxy
    /// passes its backend's failures through), with one exception: a refusal of a call that
    /// was never run (`Unavailable`) is passed on as `Overloaded`, since the handler passing
    /// it on did run.
    pub fn to_wire(&self) -> (u16, String) {
        let (code, message) = match self {
            // Its own code, known to this version or not: a failure passed on from upstream.
            Error::Server { code, message } => return (*code, message.clone()),
            Error::UnknownMethod { method } => (ErrorCode::UnknownMethod, method.clone()),
            Error::BadRequest { reason } => (ErrorCode::BadRequest, reason.clone()),
            Error::HandlerPanicked { message } => (ErrorCode::HandlerPanicked, message.clone()),
            Error::DeadlineExceeded => (ErrorCode::DeadlineExceeded, self.to_string()),
            Error::Overloaded { reason } => (ErrorCode::Overloaded, reason.clone()),
            // Not `ShuttingDown`: a handler passing on a downstream refusal has itself run,
            // so its caller must not take the call for unrun.
            Error::Unavailable { reason } => (ErrorCode::Overloaded, reason.clone()),
            Error::Cancelled => (ErrorCode::Cancelled, self.to_string()),
            // The text starts with both sizes, in order, which `from_remote` reads back.
            Error::MessageTooLarge { .. } => (ErrorCode::MessageTooLarge, self.to_string()),
            // A handler passing on a downstream mismatch: the caller's own signature matched.
            other @ Error::SignatureMismatch { .. } => {
                (ErrorCode::ResponseUnencodable, other.to_string())
            }
            Error::Unauthenticated { reason } => (ErrorCode::Unauthenticated, reason.clone()),
            Error::PermissionDenied { reason } => (ErrorCode::PermissionDenied, reason.clone()),
            // This side's own failures name its files, hosts and addresses: they stay in its
            // log, the peer learns what kind of failure it was.
            Error::Io(_) | Error::Connect { .. } | Error::Tls { .. } => {
                tracing::warn!(error = %self, "a call failed on a local error; the peer gets a summary, the details are here");
                (
                    ErrorCode::ResponseUnencodable,
                    "the server failed on a local error (i/o, or reaching a service it depends on); the details are in its log".into(),
                )
            }
            other => (ErrorCode::ResponseUnencodable, other.to_string()),
        };
        (code.to_u16(), message)
    }

    /// Whether the server may have run (some of) the call: `false` only when it surely did
    /// not (the connection could not be opened, its TLS handshake failed, the server refused
    /// the call unrun, it has no such method, the signatures differ, the arguments did not
    /// decode, an interceptor refused it as unauthenticated or not permitted). A call that
    /// may have run is safe to send again only if the method is idempotent.
    /// ([`Error::MessageTooLarge`] counts as "may have run": a reply or a stream item over
    /// the limit comes from a handler that ran; sending the same message again would fail the
    /// same way anyway.)
    ///
    /// ```
    /// let lost = rpc::Error::closed("peer reset");
    /// assert!(lost.may_have_run());
    /// let refused = rpc::Error::Unavailable { reason: "shutting down".into() };
    /// assert!(!refused.may_have_run());
    /// ```
    pub fn may_have_run(&self) -> bool {
        !matches!(
            self,
            Error::Connect { .. }
                | Error::Unavailable { .. }
                | Error::UnknownMethod { .. }
                | Error::SignatureMismatch { .. }
                | Error::BadRequest { .. }
                | Error::Tls { .. }
                | Error::Unauthenticated { .. }
                | Error::PermissionDenied { .. }
        )
    }

    /// A connection-level error as the reason string pending calls receive.
    pub fn closed(reason: impl std::fmt::Display) -> Error {
        Error::ConnectionClosed {
            reason: reason.to_string(),
            cause: None,
        }
    }

    /// The connection ended because of `err`: its text becomes the reason pending calls
    /// receive, and an I/O failure behind it stays reachable as the
    /// [`source`](std::error::Error::source). A `ConnectionClosed` is returned as it is.
    pub fn connection_lost(err: Error) -> Error {
        match err {
            Error::ConnectionClosed { .. } => err,
            other => Error::ConnectionClosed {
                reason: other.to_string(),
                cause: other.io_cause().cloned(),
            },
        }
    }

    /// The connection ended with the I/O failure `err`, `context` saying what was being done
    /// (`"write failed"`).
    pub fn closed_by_io(context: impl std::fmt::Display, err: io::Error) -> Error {
        Error::ConnectionClosed {
            reason: format!("{context}: {err}"),
            cause: Some(err.into()),
        }
    }

    /// The I/O failure behind this error, if there is one.
    pub fn io_cause(&self) -> Option<&SharedIoError> {
        match self {
            Error::Connect { source, .. } => Some(source),
            Error::Io(source) => Some(source),
            Error::ConnectionClosed { cause, .. } => cause.as_ref(),
            _ => None,
        }
    }
}

/// The two sizes at the front of a [`Error::MessageTooLarge`] message, as `to_wire` writes
/// it: the first two numbers in the text.
fn sizes(message: &str) -> Option<(usize, usize)> {
    let mut numbers = message
        .split(|c: char| !c.is_ascii_digit())
        .filter(|part| !part.is_empty())
        .map(str::parse::<usize>);
    match (numbers.next(), numbers.next()) {
        (Some(Ok(len)), Some(Ok(max))) => Some((len, max)),
        _ => None,
    }
}

/// What tower's layers fail a call with: [`tower::BoxError`].
#[cfg(feature = "tower")]
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[cfg(feature = "tower")]
impl Error {
    /// The error a tower stack failed a call with (tower's `BoxError`, or the error of a
    /// layer that keeps its inner service's), as an [`Error`]: an `Error` from the call
    /// itself comes back as it was; tower's `timeout` layer's `Elapsed` is
    /// [`DeadlineExceeded`](Error::DeadlineExceeded); the `load_shed` layer's `Overloaded` is
    /// [`Overloaded`](Error::Overloaded); anything else is [`Error::Layer`] with its text.
    ///
    /// ```
    /// use rpc_core::error::{BoxError, Error};
    /// let elapsed: BoxError = tower::timeout::error::Elapsed::new().into();
    /// assert!(matches!(Error::from_tower(elapsed), Error::DeadlineExceeded));
    /// let own: BoxError = Error::Cancelled.into();
    /// assert!(matches!(Error::from_tower(own), Error::Cancelled));
    /// ```
    pub fn from_tower(err: impl Into<BoxError>) -> Error {
        let err = match err.into().downcast::<Error>() {
            Ok(err) => return *err,
            Err(err) => err,
        };
        if err.is::<::tower::timeout::error::Elapsed>() {
            Error::DeadlineExceeded
        } else if err.is::<::tower::load_shed::error::Overloaded>() {
            Error::Overloaded {
                reason: "load shed: the service is at capacity".into(),
            }
        } else {
            Error::Layer {
                message: err.to_string(),
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn error_codes_round_trip() {
        let all = [
            ErrorCode::UnknownMethod,
            ErrorCode::BadRequest,
            ErrorCode::HandlerPanicked,
            ErrorCode::DeadlineExceeded,
            ErrorCode::Overloaded,
            ErrorCode::ResponseUnencodable,
            ErrorCode::ShuttingDown,
            ErrorCode::Cancelled,
            ErrorCode::MessageTooLarge,
            ErrorCode::SignatureMismatch,
            ErrorCode::Unauthenticated,
            ErrorCode::PermissionDenied,
        ];
        // Every code has its own number, and the number comes back as the same code.
        let numbers: std::collections::HashSet<u16> = all.iter().map(|c| c.to_u16()).collect();
        assert_eq!(numbers.len(), all.len());
        for code in all {
            assert_eq!(ErrorCode::from_u16(code.to_u16()), Some(code));
        }
        assert_eq!(ErrorCode::SignatureMismatch.to_u16(), 10);
        assert_eq!(ErrorCode::Unauthenticated.to_u16(), 11);
        assert_eq!(ErrorCode::PermissionDenied.to_u16(), 12);
        assert_eq!(ErrorCode::from_u16(0), None);
        assert_eq!(ErrorCode::from_u16(999), None);
    }

    #[test]
    fn remote_errors_map_to_typed_variants() {
        let m = crate::Method::new("S", "m");
        assert!(matches!(
            Error::from_remote(1, String::new(), &m),
            Error::UnknownMethod { method } if method == "S.m"
        ));
        assert!(matches!(
            Error::from_remote(3, "boom".into(), &m),
            Error::HandlerPanicked { message } if message == "boom"
        ));
        assert!(matches!(
            Error::from_remote(999, "new".into(), &m),
            Error::Server { code: 999, .. }
        ));
        let unrun = Error::from_remote(ErrorCode::ShuttingDown.to_u16(), "bye".into(), &m);
        assert!(matches!(&unrun, Error::Unavailable { reason } if reason == "bye"));
        assert!(!unrun.may_have_run());
        // Passed on by a handler, it is no longer "unrun": that handler ran.
        assert_eq!(unrun.to_wire().0, ErrorCode::Overloaded.to_u16());
    }

    #[test]
    fn message_too_large_crosses_the_wire_typed_with_both_sizes() {
        let m = crate::Method::new("S", "m");
        let err = Error::MessageTooLarge {
            len: 20_000_000,
            max: 16_777_216,
        };
        let (code, message) = err.to_wire();
        assert_eq!(code, ErrorCode::MessageTooLarge.to_u16());
        assert_eq!(code, 9);
        assert!(
            message.contains("20000000") && message.contains("16777216"),
            "{message}"
        );
        let back = Error::from_remote(code, message, &m);
        assert!(
            matches!(
                back,
                Error::MessageTooLarge {
                    len: 20_000_000,
                    max: 16_777_216
                }
            ),
            "{back:?}"
        );
        // Through a status, as a server sends it.
        let crate::message::Status::Error { code, message } =
            crate::message::Status::from_error(&err)
        else {
            panic!("an error status");
        };
        assert!(matches!(
            Error::from_remote(code, message, &m),
            Error::MessageTooLarge { .. }
        ));
        // The code without sizes is still reported, untyped.
        assert!(matches!(
            Error::from_remote(9, "too big".into(), &m),
            Error::Server { code: 9, .. }
        ));
    }

    fn io_source(err: &Error) -> Option<&io::Error> {
        std::error::Error::source(err)?.downcast_ref::<io::Error>()
    }

    #[test]
    fn connect_errors_expose_the_io_error_as_source() {
        let err = Error::Connect {
            endpoint: "127.0.0.1:1".into(),
            source: io::Error::from(io::ErrorKind::ConnectionRefused).into(),
        };
        let io = io_source(&err).expect("io::Error source");
        assert_eq!(io.kind(), io::ErrorKind::ConnectionRefused);
        // Clones share it.
        let clone = err.clone();
        assert_eq!(
            io_source(&clone).map(io::Error::kind),
            Some(io::ErrorKind::ConnectionRefused)
        );
    }

    #[test]
    fn signature_mismatch_names_the_method_and_never_ran() {
        let m = crate::Method::new("Calculator", "add");
        let detail = "the arguments differ; the call was not decoded or run".to_string();
        let err = Error::from_remote(10, detail.clone(), &m);
        assert!(matches!(
            &err,
            Error::SignatureMismatch { method, detail: d } if method == "Calculator.add" && *d == detail
        ));
        assert!(!err.may_have_run());
        let text = err.to_string();
        assert!(
            text.contains("Calculator.add") && text.contains("arguments"),
            "{text}"
        );
    }

    #[test]
    fn io_errors_expose_the_io_error_as_source() {
        let err = Error::from(io::Error::new(io::ErrorKind::BrokenPipe, "pipe"));
        assert!(matches!(err, Error::Io(_)));
        let io = io_source(&err).expect("io::Error source");
        assert_eq!(io.kind(), io::ErrorKind::BrokenPipe);
        assert_eq!(io.to_string(), "pipe");
    }

    #[test]
    fn a_connection_closed_by_io_exposes_the_io_error_as_source() {
        let err = Error::closed_by_io(
            "write failed",
            io::Error::from(io::ErrorKind::ConnectionReset),
        );
        assert_eq!(
            io_source(&err).map(io::Error::kind),
            Some(io::ErrorKind::ConnectionReset)
        );
        // Lost while reading: the reader's `Io` error becomes the cause.
        let lost = Error::connection_lost(Error::from(io::Error::from(
            io::ErrorKind::ConnectionAborted,
        )));
        assert!(matches!(lost, Error::ConnectionClosed { .. }), "{lost:?}");
        assert!(lost.to_string().contains("i/o error"), "{lost}");
        assert_eq!(
            io_source(&lost).map(io::Error::kind),
            Some(io::ErrorKind::ConnectionAborted)
        );
        // A close with no I/O behind it has no source.
        assert!(std::error::Error::source(&Error::closed("bye")).is_none());
        let protocol =
            Error::connection_lost(ProtocolError::UnexpectedMessage { kind: "x" }.into());
        assert!(std::error::Error::source(&protocol).is_none());
    }

    #[test]
    fn refusals_by_an_interceptor_round_trip_and_never_ran() {
        let m = crate::Method::new("S", "m");
        for err in [
            Error::Unauthenticated {
                reason: "no token".into(),
            },
            Error::PermissionDenied {
                reason: "read only".into(),
            },
        ] {
            let (code, message) = err.to_wire();
            let back = Error::from_remote(code, message, &m);
            assert_eq!(back.to_string(), err.to_string());
            assert!(!back.may_have_run(), "{back}");
        }
    }

    /// One of every variant. The match below has no wildcard arm, so a new variant does
    /// not compile until it is added here (and so covered by the round trip, and by
    /// `observe`'s test that each variant has an outcome name of its own).
    pub(crate) fn one_of_each() -> Vec<Error> {
        let io = || SharedIoError::from(Arc::new(io::Error::other("disk on fire at /var/secret")));
        let all = vec![
            Error::Connect {
                endpoint: "10.0.0.1:7000".into(),
                source: io(),
            },
            Error::closed("peer reset"),
            Error::DeadlineExceeded,
            Error::Cancelled,
            Error::UnknownMethod {
                method: "Backend.gone".into(),
            },
            Error::Overloaded {
                reason: "too many calls".into(),
            },
            Error::Unavailable {
                reason: "shutting down".into(),
            },
            Error::BadRequest {
                reason: "args".into(),
            },
            Error::HandlerPanicked {
                message: "call id 7; see the server log".into(),
            },
            Error::Server {
                code: 999,
                message: "from a newer version".into(),
            },
            Error::Server {
                code: ErrorCode::ResponseUnencodable.to_u16(),
                message: "reply too big".into(),
            },
            Error::Protocol(ProtocolError::UnexpectedMessage { kind: "ping" }),
            Error::MessageTooLarge { len: 10, max: 5 },
            Error::Codec(CodecError::Encode {
                reason: "no".into(),
            }),
            Error::Io(io()),
            Error::Tls {
                endpoint: "example.invalid:443".into(),
                source: TlsError::NotTls,
            },
            Error::Unauthenticated {
                reason: "no token".into(),
            },
            Error::PermissionDenied {
                reason: "read only".into(),
            },
            Error::Layer {
                message: "rate limiter broke".into(),
            },
            Error::SignatureMismatch {
                method: "Backend.add".into(),
                detail: "the arguments differ".into(),
            },
        ];
        for err in &all {
            match err {
                Error::Connect { .. }
                | Error::ConnectionClosed { .. }
                | Error::DeadlineExceeded
                | Error::Cancelled
                | Error::UnknownMethod { .. }
                | Error::Overloaded { .. }
                | Error::Unavailable { .. }
                | Error::BadRequest { .. }
                | Error::HandlerPanicked { .. }
                | Error::Server { .. }
                | Error::Protocol(_)
                | Error::MessageTooLarge { .. }
                | Error::Codec(_)
                | Error::Io(_)
                | Error::Tls { .. }
                | Error::Unauthenticated { .. }
                | Error::PermissionDenied { .. }
                | Error::Layer { .. }
                | Error::SignatureMismatch { .. } => {}
            }
        }
        all
    }

    #[test]
    fn every_error_survives_any_number_of_hops() {
        let m = crate::Method::new("Proxy", "forward");
        for err in one_of_each() {
            // What the first server sends, what its caller (a proxy) rebuilds, and what the
            // proxy sends on when it returns that error: the same code and message.
            let first = err.to_wire();
            let rebuilt = Error::from_remote(first.0, first.1.clone(), &m);
            let second = rebuilt.to_wire();
            assert_eq!(second, first, "{err:?} changed on the second hop");
            let again = Error::from_remote(second.0, second.1, &m);
            assert_eq!(again.to_string(), rebuilt.to_string(), "{err:?}");
            // A variant with a code of its own comes back as itself (an unrun refusal comes
            // back as Overloaded: whoever passes it on has run).
            let own_code = !matches!(
                ErrorCode::from_u16(first.0),
                None | Some(ErrorCode::ResponseUnencodable)
            );
            if own_code && !matches!(err, Error::Unavailable { .. }) {
                assert_eq!(rebuilt.to_string(), err.to_string(), "{err:?}");
            }
        }
    }

    #[test]
    fn server_errors_keep_their_code() {
        let m = crate::Method::new("Proxy", "forward");
        let err = Error::from_remote(4242, "newer".into(), &m);
        assert_eq!(err.to_wire(), (4242, "newer".to_string()));
        // A backend's missing method is named as the backend's, not the proxy's.
        let missing = Error::UnknownMethod {
            method: "Backend.gone".into(),
        };
        let (code, message) = missing.to_wire();
        assert!(matches!(
            Error::from_remote(code, message, &m),
            Error::UnknownMethod { method } if method == "Backend.gone"
        ));
        // The server's own refusal knows only the id: the caller names its method.
        assert!(matches!(
            Error::from_remote(code, "no method with id 0x1".into(), &m),
            Error::UnknownMethod { method } if method == "Proxy.forward"
        ));
        // Local failures reach the peer as a summary, without paths or addresses.
        for local in one_of_each() {
            if matches!(
                local,
                Error::Io(_) | Error::Connect { .. } | Error::Tls { .. }
            ) {
                let (code, message) = local.to_wire();
                assert_eq!(code, ErrorCode::ResponseUnencodable.to_u16());
                assert!(!message.contains("/var/secret") && !message.contains("10.0.0.1"));
            }
        }
    }

    #[test]
    fn messages_name_the_limit() {
        let e = Error::from(ProtocolError::FrameTooLarge {
            len: 1 << 32,
            max: 16 << 20,
        });
        let text = e.to_string();
        assert!(text.contains("4294967296"), "{text}");
        assert!(text.contains("16777216"), "{text}");
    }
}
