//! Spans and metrics of the client's calls and connections.
//!
//! Every call gets a span named `rpc.client` (target `rpc_client`, level INFO), opened when
//! the call is first polled, with the fields `rpc.service`, `rpc.method`, `trace_id`,
//! `span_id` (the one its `traceparent` carries), `parent_id` (the caller's span),
//! `peer` (once a connection is chosen), and, recorded when the call ends, `call_id`,
//! `outcome` (see `rpc_core::observe`), `duration_us`, and for a streamed reply
//! `items_received` (recorded when the caller drops the stream). With no subscriber that
//! wants it, the span is `Span::none()`: no allocation, no clock read, no formatting.
//!
//! A call made inside a trace (see `rpc::TraceContext`) carries `traceparent` in its
//! metadata, whatever the subscriber: the trace goes on at the next service even if this
//! process records nothing.
//!
//! With the feature `metrics`, calls, latencies, connections, bytes and stream items are
//! counted through the `metrics` facade; without it none of this code exists.

use rpc_core::observe::{outcome, CANCELLED, OK};
use rpc_core::stream::Stream;
use rpc_core::trace_context::TRACEPARENT;
use rpc_core::{Error, Metadata, Method, PeerAddr, TraceContext};
use tokio::time::Instant;
use tracing::field::{display, Empty};
use tracing::Span;

/// The side these metrics count.
#[cfg(feature = "metrics")]
const SIDE: rpc_core::observe::Side = rpc_core::observe::Side::Client;

/// Whether INFO spans can be recorded at all: the cheap check before anything else. A span
/// the level filter rules out is `Span::none()` from the start, never a disabled span (which
/// costs a `log` record and a drop hook when the `tracing/log` feature is on somewhere).
#[inline]
fn spans_enabled() -> bool {
    tracing::Level::INFO <= tracing::level_filters::STATIC_MAX_LEVEL
        && tracing::Level::INFO <= tracing::level_filters::LevelFilter::current()
}

/// One call as spans and metrics see it: from its first poll to its result. One word with
/// nothing to drop when no span is recorded and metrics are off; with metrics and no span,
/// the call's metrics inline (no allocation).
pub(crate) struct ClientCall(State);

enum State {
    /// Not started, or nothing observes the call.
    Off,
    /// Metrics only.
    #[cfg(feature = "metrics")]
    Metered(rpc_core::observe::MeteredCall),
    /// A recorded span (and metrics, with the feature).
    Traced(Box<Observed>),
}

struct Observed {
    span: Span,
    start: Instant,
    #[cfg(feature = "metrics")]
    metered: rpc_core::observe::MeteredCall,
    done: bool,
}

impl ClientCall {
    /// A call not polled yet: nothing is open, nothing is counted.
    #[inline]
    pub(crate) fn idle() -> Self {
        ClientCall(State::Off)
    }

    /// Opens the call's span, counts it started, and adds `traceparent` to `metadata` when
    /// the call belongs to a trace.
    #[inline]
    pub(crate) fn start(method: Method, metadata: &mut Metadata, now: Instant) -> Self {
        if !spans_enabled() {
            if let Some(trace) = TraceContext::current() {
                metadata.insert(TRACEPARENT, trace.child().to_string());
            }
            #[cfg(feature = "metrics")]
            return ClientCall(State::Metered(rpc_core::observe::MeteredCall::start(
                SIDE, method, now,
            )));
            #[cfg(not(feature = "metrics"))]
            return ClientCall(State::Off);
        }
        Self::traced(method, metadata, now)
    }

    #[cold]
    #[inline(never)]
    fn traced(method: Method, metadata: &mut Metadata, now: Instant) -> Self {
        let span = tracing::info_span!(
            target: "rpc_client",
            "rpc.client",
            rpc.service = method.service(),
            rpc.method = method.name(),
            call_id = Empty,
            peer = Empty,
            trace_id = Empty,
            span_id = Empty,
            parent_id = Empty,
            outcome = Empty,
            duration_us = Empty,
            items_received = Empty,
        );
        if let Some(trace) = rpc_core::observe::client_span_trace(&span) {
            if !span.is_disabled() {
                let parent = TraceContext::current();
                rpc_core::observe::record_trace(&span, &trace, parent.as_ref());
            }
            metadata.insert(TRACEPARENT, trace.to_string());
        }
        ClientCall(State::Traced(Box::new(Observed {
            span,
            start: now,
            #[cfg(feature = "metrics")]
            metered: rpc_core::observe::MeteredCall::start(SIDE, method, now),
            done: false,
        })))
    }

    /// Enters the call's span, if it has one, until the guard drops.
    #[inline]
    pub(crate) fn enter(&self) -> Option<tracing::span::Entered<'_>> {
        match &self.0 {
            State::Traced(observed) => Some(observed.span.enter()),
            _ => None,
        }
    }

    /// Records the connection and request id an attempt went out on.
    #[inline]
    pub(crate) fn sent(&self, peer: &PeerAddr, id: u64) {
        if let State::Traced(observed) = &self.0 {
            if !observed.span.is_disabled() {
                observed.span.record("peer", display(peer));
                observed.span.record("call_id", id);
            }
        }
    }

    /// Records how the call ended.
    #[inline]
    pub(crate) fn finish(&mut self, failure: Option<&Error>) {
        match &mut self.0 {
            State::Off => {}
            #[cfg(feature = "metrics")]
            State::Metered(metered) => metered.finish(failure.map_or(OK, outcome)),
            State::Traced(observed) => observed.end(failure.map_or(OK, outcome)),
        }
    }
}

impl Observed {
    fn end(&mut self, name: &'static str) {
        if self.done {
            return;
        }
        self.done = true;
        let elapsed = self.start.elapsed();
        if !self.span.is_disabled() {
            self.span.record("outcome", name);
            self.span.record(
                "duration_us",
                u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            );
        }
        #[cfg(feature = "metrics")]
        self.metered.finish_after(name, elapsed);
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        // Dropped unfinished: the caller stopped waiting.
        self.end(CANCELLED);
    }
}

/// Records the connection and request id of an attempt on the current span: the call's,
/// on the path that waits (see [`ClientCall::sent`]).
pub(crate) fn sent_in_current(peer: &PeerAddr, id: u64) {
    if !spans_enabled() {
        return;
    }
    let span = Span::current();
    if !span.is_disabled() {
        span.record("peer", display(peer));
        span.record("call_id", id);
    }
}

/// Counts a stream's items on the current call's span (field `items_sent` or
/// `items_received`, recorded when the stream is dropped) and, with `metrics`, in `rpc_client_stream_items_total`. Returns
/// `items` untouched when nobody would see the count.
pub(crate) fn count_items<T: Send + 'static>(
    items: Stream<T>,
    method: Method,
    direction: &'static str,
) -> Stream<T> {
    if !spans_enabled() && !cfg!(feature = "metrics") {
        return items;
    }
    let span = Span::current();
    let _ = method;
    Stream::from_results(Counting {
        inner: items,
        span,
        field: if direction == "sent" {
            "items_sent"
        } else {
            "items_received"
        },
        count: 0,
        #[cfg(feature = "metrics")]
        counter: rpc_core::observe::MethodMetrics::of(SIDE, method).items(direction == "sent"),
    })
}

struct Counting<T> {
    inner: Stream<T>,
    span: Span,
    /// The span's field for the count: `items_sent` or `items_received`.
    field: &'static str,
    count: u64,
    #[cfg(feature = "metrics")]
    counter: metrics::Counter,
}

impl<T> futures::Stream for Counting<T> {
    type Item = Result<T, Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        // Every field is Unpin.
        let item = std::task::ready!(std::pin::Pin::new(&mut self.inner).poll_next(cx));
        if let Some(Ok(_)) = &item {
            self.count += 1;
            #[cfg(feature = "metrics")]
            self.counter.increment(1);
        }
        std::task::Poll::Ready(item)
    }
}

impl<T> Drop for Counting<T> {
    fn drop(&mut self) {
        self.span.record(self.field, self.count);
    }
}

/// Counts one open connection in `rpc_client_connections` while it lives.
pub(crate) struct ConnectionObserved(());

impl ConnectionObserved {
    pub(crate) fn new() -> Self {
        #[cfg(feature = "metrics")]
        metrics::gauge!("rpc_client_connections").increment(1.0);
        ConnectionObserved(())
    }
}

impl Drop for ConnectionObserved {
    fn drop(&mut self) {
        #[cfg(feature = "metrics")]
        metrics::gauge!("rpc_client_connections").decrement(1.0);
    }
}

/// Wraps a connection's halves to count `rpc_client_bytes_received_total` and
/// `rpc_client_bytes_sent_total`.
#[cfg(feature = "metrics")]
pub(crate) fn count_bytes<R, W>(
    reader: R,
    writer: W,
) -> (rpc_core::observe::Counted<R>, rpc_core::observe::Counted<W>) {
    (
        rpc_core::observe::Counted::new(
            reader,
            metrics::counter!("rpc_client_bytes_received_total"),
        ),
        rpc_core::observe::Counted::new(writer, metrics::counter!("rpc_client_bytes_sent_total")),
    )
}

/// Wraps a connection's halves to count bytes; without `metrics`, returns them as they are.
#[cfg(not(feature = "metrics"))]
#[inline]
pub(crate) fn count_bytes<R, W>(reader: R, writer: W) -> (R, W) {
    (reader, writer)
}
