//! Spans and metrics of the server's calls and connections.
//!
//! Every call gets a span named `rpc.server` (target `rpc_server`, level INFO) with the
//! fields `rpc.service`, `rpc.method`, `call_id`, `peer`, `trace_id`, `span_id`,
//! `parent_id` (the caller's span, from its `traceparent`), and, recorded when the
//! call ends, `outcome` (see `rpc_core::observe`), `duration_us` and, for streams,
//! `items_sent` and `items_received`. The handler runs inside it. With no subscriber that wants it, the span
//! is `Span::none()`: no allocation, no clock read, no formatting.
//!
//! With the feature `metrics`, calls, latencies, connections, bytes and stream items are
//! counted through the `metrics` facade (names in the README); without it none of this
//! code exists.

use rpc_core::observe::{outcome, CANCELLED, OK, OVERLOADED};
use rpc_core::stream::Stream;
use rpc_core::{Error, Metadata, Method, PeerAddr, TraceContext};
use tokio::time::Instant;
use tracing::field::Empty;
use tracing::Span;

/// The side these metrics count.
#[cfg(feature = "metrics")]
const SIDE: rpc_core::observe::Side = rpc_core::observe::Side::Server;

/// Whether INFO spans can be recorded at all: the cheap check before anything else. A span
/// the level filter rules out is `Span::none()` from the start, never a disabled span (which
/// costs a `log` record and a drop hook when the `tracing/log` feature is on somewhere).
#[inline]
pub(crate) fn spans_enabled() -> bool {
    tracing::Level::INFO <= tracing::level_filters::STATIC_MAX_LEVEL
        && tracing::Level::INFO <= tracing::level_filters::LevelFilter::current()
}

/// One call as spans and metrics see it: from the request read to the reply queued. One
/// word with nothing to drop when no span is recorded and metrics are off; with metrics and
/// no span, the call's metrics inline (no allocation).
pub(crate) struct ServerCall(State);

enum State {
    /// Nothing observes the call.
    #[cfg(not(feature = "metrics"))]
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

impl ServerCall {
    /// Opens the call's span and counts it started; returns the call's place in its trace
    /// for its `Context`: the caller's trace continued with a span id of its own, a new
    /// trace if the caller sent none and the span is recorded, else `None`.
    #[inline]
    pub(crate) fn start(
        method: Method,
        id: u64,
        peer: &PeerAddr,
        metadata: &Metadata,
        now: Instant,
    ) -> (Self, Option<TraceContext>) {
        let parent = TraceContext::from_metadata(metadata);
        if !spans_enabled() {
            #[cfg(feature = "metrics")]
            let state = State::Metered(rpc_core::observe::MeteredCall::start(SIDE, method, now));
            #[cfg(not(feature = "metrics"))]
            let state = State::Off;
            return (ServerCall(state), parent.map(|parent| parent.child()));
        }
        Self::traced(method, id, peer, parent, now)
    }

    #[cold]
    #[inline(never)]
    fn traced(
        method: Method,
        id: u64,
        peer: &PeerAddr,
        parent: Option<TraceContext>,
        now: Instant,
    ) -> (Self, Option<TraceContext>) {
        let span = tracing::info_span!(
            target: "rpc_server",
            "rpc.server",
            rpc.service = method.service(),
            rpc.method = method.name(),
            call_id = id,
            peer = %peer,
            trace_id = Empty,
            span_id = Empty,
            parent_id = Empty,
            outcome = Empty,
            duration_us = Empty,
            items_sent = Empty,
            items_received = Empty,
        );
        let trace = if span.is_disabled() {
            parent.map(|parent| parent.child())
        } else {
            let trace = rpc_core::observe::server_span_trace(&span, parent);
            rpc_core::observe::record_trace(&span, &trace, parent.as_ref());
            Some(trace)
        };
        let observed = Observed {
            span,
            start: now,
            #[cfg(feature = "metrics")]
            metered: rpc_core::observe::MeteredCall::start(SIDE, method, now),
            done: false,
        };
        (ServerCall(State::Traced(Box::new(observed))), trace)
    }

    /// Enters the call's span, if it has one, until the guard drops.
    #[inline]
    pub(crate) fn enter(&self) -> Option<tracing::span::Entered<'_>> {
        match &self.0 {
            State::Traced(observed) => Some(observed.span.enter()),
            _ => None,
        }
    }

    /// Records a call refused before it ran (the connection's or the server's limits).
    #[inline]
    pub(crate) fn refused(mut self) {
        self.end(OVERLOADED);
    }

    /// Records how the call ended: `failure` is `None` when the handler's reply was queued.
    #[inline]
    pub(crate) fn finish(&mut self, failure: Option<&Error>) {
        self.end(failure.map_or(OK, outcome));
    }

    #[inline]
    fn end(&mut self, name: &'static str) {
        match &mut self.0 {
            #[cfg(not(feature = "metrics"))]
            State::Off => {}
            #[cfg(feature = "metrics")]
            State::Metered(metered) => metered.finish(name),
            State::Traced(observed) => observed.end(name),
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
        // Dropped unfinished: the client cancelled, or the connection went away.
        self.end(CANCELLED);
    }
}

/// Counts a stream's items on the current call's span (field `items_sent` or
/// `items_received`, recorded when the stream is dropped) and, with `metrics`, in `rpc_server_stream_items_total`. Returns
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

/// Counts one open connection in `rpc_server_connections` while it lives.
pub(crate) struct ConnectionObserved(());

impl ConnectionObserved {
    pub(crate) fn new() -> Self {
        #[cfg(feature = "metrics")]
        metrics::gauge!("rpc_server_connections").increment(1.0);
        ConnectionObserved(())
    }
}

impl Drop for ConnectionObserved {
    fn drop(&mut self) {
        #[cfg(feature = "metrics")]
        metrics::gauge!("rpc_server_connections").decrement(1.0);
    }
}

/// Wraps a connection's halves to count `rpc_server_bytes_received_total` and
/// `rpc_server_bytes_sent_total`; without `metrics`, returns them as they are.
#[cfg(feature = "metrics")]
pub(crate) fn count_bytes<R, W>(
    reader: R,
    writer: W,
) -> (rpc_core::observe::Counted<R>, rpc_core::observe::Counted<W>) {
    (
        rpc_core::observe::Counted::new(
            reader,
            metrics::counter!("rpc_server_bytes_received_total"),
        ),
        rpc_core::observe::Counted::new(writer, metrics::counter!("rpc_server_bytes_sent_total")),
    )
}

/// Wraps a connection's halves to count bytes; without `metrics`, returns them as they are.
#[cfg(not(feature = "metrics"))]
#[inline]
pub(crate) fn count_bytes<R, W>(reader: R, writer: W) -> (R, W) {
    (reader, writer)
}
