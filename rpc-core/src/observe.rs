//! What the spans and metrics of both ends call a call's outcome.
//!
//! A call ends `ok` (the handler answered: that includes an application error the method
//! returns as its value, which the framework does not look into), or with the framework
//! failure that ended it, named after its [`ErrorCode`](crate::error::ErrorCode) where it
//! has one. The names are stable: dashboards and alerts match on them.

use crate::{Error, TraceContext};

/// The outcome of a call that answered.
pub const OK: &str = "ok";

/// The outcome of a call its caller dropped before it ended (or the server cancelled with
/// its connection).
pub const CANCELLED: &str = "cancelled";

/// The outcome of a call the server refused at its limits (in flight, streams, memory
/// budgets) without running it: the name of [`Error::Overloaded`].
pub const OVERLOADED: &str = "overloaded";

/// The outcome name of a call that failed with `err`: one name per variant.
///
/// ```
/// use rpc_core::observe::outcome;
/// assert_eq!(outcome(&rpc::Error::DeadlineExceeded), "deadline_exceeded");
/// ```
pub fn outcome(err: &Error) -> &'static str {
    // No wildcard arm: a new variant does not compile until it has its name here.
    match err {
        Error::DeadlineExceeded => "deadline_exceeded",
        Error::Cancelled => CANCELLED,
        Error::UnknownMethod { .. } => "unknown_method",
        Error::BadRequest { .. } => "bad_request",
        Error::SignatureMismatch { .. } => "signature_mismatch",
        Error::HandlerPanicked { .. } => "handler_panicked",
        Error::Overloaded { .. } => OVERLOADED,
        Error::Unavailable { .. } => "unavailable",
        Error::Unauthenticated { .. } => "unauthenticated",
        Error::PermissionDenied { .. } => "permission_denied",
        Error::Layer { .. } => "layer_error",
        Error::Server { .. } => "server_error",
        Error::Connect { .. } => "connect_failed",
        Error::ConnectionClosed { .. } => "connection_closed",
        Error::MessageTooLarge { .. } => "message_too_large",
        Error::Protocol(_) => "protocol_error",
        Error::Codec(_) => "codec_error",
        Error::Io(_) => "io_error",
        Error::Tls { .. } => "tls_error",
    }
}

/// The trace of a server's call span that is recorded: the caller's trace continued with a
/// new span id, or a new trace. With `otel`, the OpenTelemetry span behind `span` is made a
/// child of the caller's, and its ids are the answer.
pub fn server_span_trace(span: &tracing::Span, parent: Option<TraceContext>) -> TraceContext {
    #[cfg(feature = "otel")]
    if let Some(trace) = otel::continue_remote(span, parent) {
        return trace;
    }
    let _ = span;
    parent.map_or_else(TraceContext::new_root, |parent| parent.child())
}

/// The trace a client's call belongs to and the span id it goes out with: a child of
/// [`TraceContext::current`] (rpc's own), or with `otel` the ids of the OpenTelemetry span
/// behind the call's recorded `span`. `None` outside any trace.
pub fn client_span_trace(span: &tracing::Span) -> Option<TraceContext> {
    #[cfg(feature = "otel")]
    if let Some(trace) = otel::span_trace(span) {
        return Some(trace);
    }
    let _ = span;
    TraceContext::current().map(|parent| parent.child())
}

#[cfg(feature = "metrics")]
pub use counted::Counted;

#[cfg(feature = "metrics")]
mod counted {
    use std::io;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    /// One half of a connection that adds the bytes through it to a counter (feature
    /// `metrics`): one add per read or write, not per call.
    #[derive(Debug)]
    pub struct Counted<T> {
        inner: T,
        counter: metrics::Counter,
    }

    impl<T> Counted<T> {
        /// Counts the bytes through `inner` in `counter`.
        pub fn new(inner: T, counter: metrics::Counter) -> Self {
            Counted { inner, counter }
        }
    }

    impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let before = buf.filled().len();
            let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
            let read = buf.filled().len().saturating_sub(before);
            if read > 0 {
                self.counter.increment(read as u64);
            }
            polled
        }
    }

    impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
            if let Poll::Ready(Ok(n)) = &polled {
                self.counter.increment(*n as u64);
            }
            polled
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
            if let Poll::Ready(Ok(n)) = &polled {
                self.counter.increment(*n as u64);
            }
            polled
        }

        fn is_write_vectored(&self) -> bool {
            self.inner.is_write_vectored()
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }
}

#[cfg(feature = "otel")]
mod otel {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use crate::TraceContext;

    /// Makes the OpenTelemetry span behind `span` a child of the caller's span `parent`
    /// (when the call carried one) and returns its ids; `None` when no OpenTelemetry layer
    /// records `span`.
    pub(super) fn continue_remote(
        span: &tracing::Span,
        parent: Option<TraceContext>,
    ) -> Option<TraceContext> {
        if let Some(parent) = parent {
            let remote = SpanContext::new(
                TraceId::from_bytes(parent.trace_id().to_be_bytes()),
                SpanId::from_bytes(parent.span_id().to_be_bytes()),
                TraceFlags::new(parent.flags()),
                true,
                TraceState::default(),
            );
            // Fails only when no OpenTelemetry layer records the span.
            let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
        }
        span_trace(span)
    }

    /// The ids OpenTelemetry gave the span behind `span`, if a layer records it.
    pub(super) fn span_trace(span: &tracing::Span) -> Option<TraceContext> {
        let context = span.context();
        let otel_span = context.span();
        let ids = otel_span.span_context();
        if !ids.is_valid() {
            return None;
        }
        TraceContext::from_parts(
            u128::from_be_bytes(ids.trace_id().to_bytes()),
            u64::from_be_bytes(ids.span_id().to_bytes()),
            ids.trace_flags().to_u8(),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::mem::discriminant;

    use super::*;

    #[test]
    fn every_error_variant_has_an_outcome_of_its_own() {
        let mut by_variant = HashMap::new();
        let mut by_name = HashMap::new();
        for err in crate::error::tests::one_of_each() {
            let name = outcome(&err);
            assert!(!name.is_empty() && name != OK, "{err:?} is named {name:?}");
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{name:?} is no label value"
            );
            let variant = discriminant(&err);
            assert_eq!(*by_variant.entry(variant).or_insert(name), name, "{err:?}");
            assert_eq!(
                *by_name.entry(name).or_insert(variant),
                variant,
                "{name:?} names two variants"
            );
        }
        assert_eq!(outcome(&Error::Cancelled), CANCELLED);
        assert_eq!(
            outcome(&Error::Overloaded {
                reason: String::new()
            }),
            OVERLOADED
        );
    }
}
