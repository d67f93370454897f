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

/// Records a call's place in its trace on its `span`, in `traceparent`'s hex forms: its
/// trace id, its span id, and `parent`'s span id when it continues a trace (fields
/// `trace_id`, `span_id`, `parent_id`).
pub fn record_trace(span: &tracing::Span, trace: &TraceContext, parent: Option<&TraceContext>) {
    use tracing::field::display;
    span.record(
        "trace_id",
        display(format_args!("{:032x}", trace.trace_id())),
    );
    span.record("span_id", display(format_args!("{:016x}", trace.span_id())));
    if let Some(parent) = parent {
        span.record(
            "parent_id",
            display(format_args!("{:016x}", parent.span_id())),
        );
    }
}

#[cfg(feature = "metrics")]
pub use counted::Counted;

#[cfg(feature = "metrics")]
pub use method_metrics::{MeteredCall, MethodMetrics, Side};

#[cfg(feature = "metrics")]
mod method_metrics {
    use std::cell::RefCell;
    use std::sync::{Arc, Mutex, OnceLock};
    use std::time::Duration;

    use metrics::{Counter, Gauge, Histogram, Recorder};
    use tokio::time::Instant;

    use crate::ids::IdMap;
    use crate::{Method, MethodId};

    /// Which end of its calls a [`MethodMetrics`] counts: the `rpc_server_` or `rpc_client_`
    /// metrics.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Side {
        /// The server's metrics of the calls it serves.
        Server,
        /// The client's metrics of the calls it makes.
        Client,
    }

    /// The metric names of one side.
    struct Names {
        started: &'static str,
        finished: &'static str,
        duration: &'static str,
        in_flight: &'static str,
        items: &'static str,
    }

    impl Side {
        fn names(self) -> &'static Names {
            match self {
                Side::Server => &Names {
                    started: "rpc_server_calls_started_total",
                    finished: "rpc_server_calls_finished_total",
                    duration: "rpc_server_call_duration_seconds",
                    in_flight: "rpc_server_calls_in_flight",
                    items: "rpc_server_stream_items_total",
                },
                Side::Client => &Names {
                    started: "rpc_client_calls_started_total",
                    finished: "rpc_client_calls_finished_total",
                    duration: "rpc_client_call_duration_seconds",
                    in_flight: "rpc_client_calls_in_flight",
                    items: "rpc_client_stream_items_total",
                },
            }
        }
    }

    /// The handles of one finished-calls series: its counter and its latency histogram.
    struct Finished {
        outcome: &'static str,
        calls: Counter,
        duration: Histogram,
    }

    /// One method's metric handles on one side (feature `metrics`), built once and kept:
    /// what a call costs is then an update through each handle, not a key built from its
    /// labels and looked up in the recorder (about 600 instructions a metric, even with the
    /// facade's no-op recorder). The series of a call's outcome and of stream items are made
    /// at their first use, so a scrape shows what happened and nothing else.
    pub struct MethodMetrics {
        side: Side,
        method: Method,
        started: Counter,
        in_flight: Gauge,
        /// The outcome of almost every call.
        ok: OnceLock<Finished>,
        /// The failures seen so far, a few at most: one per [`outcome`](super::outcome) name.
        failed: Mutex<Vec<Finished>>,
        /// Stream items sent and received.
        items: [OnceLock<Counter>; 2],
    }

    impl std::fmt::Debug for MethodMetrics {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("MethodMetrics")
                .field("side", &self.side)
                .field("method", &self.method)
                .finish_non_exhaustive()
        }
    }

    /// One call's metrics while it runs (feature `metrics`): counted started when made,
    /// finished once with its outcome and duration, or `cancelled` if dropped first. Three
    /// words, no allocation: what a call carries when metrics are on and no span is recorded.
    #[derive(Debug)]
    pub struct MeteredCall {
        /// `None` once finished.
        metrics: Option<Arc<MethodMetrics>>,
        start: Instant,
    }

    impl MeteredCall {
        /// Counts a call of `method` started on `side` at `start`.
        #[inline]
        pub fn start(side: Side, method: Method, start: Instant) -> Self {
            let metrics = MethodMetrics::of(side, method);
            metrics.started();
            MeteredCall {
                metrics: Some(metrics),
                start,
            }
        }

        /// Counts the call finished with `outcome` now; nothing if it already was.
        #[inline]
        pub fn finish(&mut self, outcome: &'static str) {
            if self.metrics.is_some() {
                self.finish_after(outcome, self.start.elapsed());
            }
        }

        /// Counts the call finished with `outcome` after `elapsed` (measured by the caller,
        /// who needed it too); nothing if it already was.
        #[inline]
        pub fn finish_after(&mut self, outcome: &'static str, elapsed: Duration) {
            if let Some(metrics) = self.metrics.take() {
                metrics.finished(outcome, elapsed);
            }
        }
    }

    impl Drop for MeteredCall {
        fn drop(&mut self) {
            // Dropped unfinished: the call was abandoned (its caller, or its connection).
            self.finish(super::CANCELLED);
        }
    }

    /// The handles each thread has built, per side, with the recorder they were built
    /// against.
    type Cache = [IdMap<MethodId, (usize, Arc<MethodMetrics>)>; 2];

    thread_local! {
        static CACHE: RefCell<Cache> = RefCell::new(Default::default());
    }

    /// The address of the recorder `metrics` hands out here now (a thread's local recorder,
    /// else the global one, else its no-op): handles belong to the recorder that made them.
    fn recorder() -> usize {
        metrics::with_recorder(|recorder| {
            std::ptr::from_ref::<dyn Recorder>(recorder).cast::<()>() as usize
        })
    }

    impl MethodMetrics {
        /// The handles of `method` on `side`: from this thread's cache, or built now (the
        /// first call of the method on this thread, or the first since the recorder
        /// changed, for example when one was installed after the first calls).
        #[inline]
        pub fn of(side: Side, method: Method) -> Arc<MethodMetrics> {
            let recorder = recorder();
            CACHE.with(|cache| {
                let mut cache = cache.borrow_mut();
                let per_side = &mut cache[side as usize];
                match per_side.get(&method.id()) {
                    Some((made_for, metrics)) if *made_for == recorder => metrics.clone(),
                    _ => {
                        let metrics = Arc::new(MethodMetrics::new(side, method));
                        per_side.insert(method.id(), (recorder, metrics.clone()));
                        metrics
                    }
                }
            })
        }

        #[cold]
        fn new(side: Side, method: Method) -> Self {
            let names = side.names();
            let labels = [("service", method.service()), ("method", method.name())];
            MethodMetrics {
                side,
                method,
                started: metrics::counter!(names.started, &labels),
                in_flight: metrics::gauge!(names.in_flight, &labels),
                ok: OnceLock::new(),
                failed: Mutex::new(Vec::new()),
                items: [OnceLock::new(), OnceLock::new()],
            }
        }

        /// Counts a call started, and in flight until [`finished`](Self::finished).
        #[inline]
        pub fn started(&self) {
            self.started.increment(1);
            self.in_flight.increment(1.0);
        }

        /// Counts a call finished with `outcome` (see [`outcome`](super::outcome)) after
        /// `elapsed`.
        #[inline]
        pub fn finished(&self, outcome: &'static str, elapsed: Duration) {
            self.in_flight.decrement(1.0);
            let seconds = elapsed.as_secs_f64();
            if outcome == super::OK {
                let ok = self.ok.get_or_init(|| self.finished_series(outcome));
                ok.calls.increment(1);
                ok.duration.record(seconds);
                return;
            }
            // A poisoned list is still a list of handles.
            let mut failed = self
                .failed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let index = match failed.iter().position(|f| f.outcome == outcome) {
                Some(index) => index,
                None => {
                    failed.push(self.finished_series(outcome));
                    failed.len() - 1
                }
            };
            failed[index].calls.increment(1);
            failed[index].duration.record(seconds);
        }

        #[cold]
        fn finished_series(&self, outcome: &'static str) -> Finished {
            let names = self.side.names();
            let labels = [
                ("service", self.method.service()),
                ("method", self.method.name()),
                ("outcome", outcome),
            ];
            Finished {
                outcome,
                calls: metrics::counter!(names.finished, &labels),
                duration: metrics::histogram!(names.duration, &labels),
            }
        }

        /// The counter of this method's stream items `sent` (else received).
        pub fn items(&self, sent: bool) -> Counter {
            let direction = if sent { "sent" } else { "received" };
            self.items[usize::from(!sent)]
                .get_or_init(|| {
                    let labels = [
                        ("service", self.method.service()),
                        ("method", self.method.name()),
                        ("direction", direction),
                    ];
                    metrics::counter!(self.side.names().items, &labels)
                })
                .clone()
        }
    }
}

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

    /// A recorder that counts the handles it is asked for, and what every counter adds up to
    /// (keyed by its name and labels).
    #[cfg(feature = "metrics")]
    #[derive(Default)]
    struct Registrations {
        made: std::sync::Mutex<Vec<String>>,
        counters: std::sync::Mutex<HashMap<String, std::sync::Arc<std::sync::atomic::AtomicU64>>>,
    }

    #[cfg(feature = "metrics")]
    impl Registrations {
        fn made(&self) -> Vec<String> {
            self.made.lock().expect("lock").clone()
        }

        fn count(&self, key: &str) -> u64 {
            self.counters
                .lock()
                .expect("lock")
                .get(key)
                .map_or(0, |c| c.load(std::sync::atomic::Ordering::SeqCst))
        }
    }

    #[cfg(feature = "metrics")]
    impl metrics::Recorder for Registrations {
        fn describe_counter(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_gauge(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_histogram(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }

        fn register_counter(
            &self,
            key: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Counter {
            let name = format!("{key}");
            self.made.lock().expect("lock").push(name.clone());
            let counter = self
                .counters
                .lock()
                .expect("lock")
                .entry(name)
                .or_default()
                .clone();
            metrics::Counter::from_arc(counter)
        }

        fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
            self.made.lock().expect("lock").push(format!("{key}"));
            metrics::Gauge::noop()
        }

        fn register_histogram(
            &self,
            key: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Histogram {
            self.made.lock().expect("lock").push(format!("{key}"));
            metrics::Histogram::noop()
        }
    }

    #[cfg(feature = "metrics")]
    #[test]
    fn a_methods_handles_are_made_once_per_recorder_and_series() {
        use std::time::Duration;

        let method = crate::Method::new("Cached", "m");
        let first = Registrations::default();
        {
            let _recorder = metrics::set_default_local_recorder(&first);
            for _ in 0..3 {
                let m = MethodMetrics::of(Side::Server, method);
                m.started();
                m.finished(OK, Duration::from_micros(5));
            }
            for _ in 0..2 {
                let m = MethodMetrics::of(Side::Server, method);
                m.started();
                m.finished(OVERLOADED, Duration::from_micros(5));
            }
            let items = MethodMetrics::of(Side::Server, method).items(true);
            items.increment(4);
            MethodMetrics::of(Side::Server, method)
                .items(true)
                .increment(1);
            // The client's handles are its own.
            MethodMetrics::of(Side::Client, method).started();
        }
        let made = first.made();
        let named = |key: &str, name: &str| key.starts_with(&format!("Key({name}, "));
        let once = |name: &str| made.iter().filter(|k| named(k, name)).count();
        // Started and in flight once; each outcome's counter and histogram once; the stream
        // items counter once: not once per call.
        assert_eq!(once("rpc_server_calls_started_total"), 1, "{made:#?}");
        assert_eq!(once("rpc_server_calls_in_flight"), 1, "{made:#?}");
        assert_eq!(once("rpc_server_calls_finished_total"), 2, "{made:#?}");
        assert_eq!(once("rpc_server_call_duration_seconds"), 2, "{made:#?}");
        assert_eq!(once("rpc_server_stream_items_total"), 1, "{made:#?}");
        assert_eq!(once("rpc_client_calls_started_total"), 1, "{made:#?}");
        assert_eq!(made.len(), 9, "{made:#?}");
        let started = made
            .iter()
            .find(|k| named(k, "rpc_server_calls_started_total"))
            .expect("started");
        assert_eq!(first.count(started), 5);
        let sum = |name: &str| -> u64 {
            made.iter()
                .filter(|k| named(k, name))
                .map(|k| first.count(k))
                .sum()
        };
        assert_eq!(sum("rpc_server_calls_finished_total"), 5);
        assert_eq!(sum("rpc_server_stream_items_total"), 5);

        // Another recorder (one installed after the first calls) gets handles of its own.
        let second = Registrations::default();
        {
            let _recorder = metrics::set_default_local_recorder(&second);
            MethodMetrics::of(Side::Server, method).started();
        }
        let made = second.made();
        assert_eq!(made.len(), 2, "{made:#?}");
        assert_eq!(second.count(&made[0]), 1, "{made:#?}");
        assert_eq!(first.count(started), 5);
    }
}
