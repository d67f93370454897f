//! W3C trace context: which trace a call belongs to, carried in its metadata as
//! `traceparent`.
//!
//! A call made inside a trace carries `traceparent: 00-<trace id>-<span id>-<flags>` (see
//! <https://www.w3.org/TR/trace-context/#traceparent-header>), the span id being the
//! calling side's span. The server's call continues that trace with a span id of its own,
//! readable by the handler through [`Context::trace`](crate::Context::trace); calls the
//! handler makes carry the trace on. A malformed `traceparent` is ignored, as the
//! specification asks: the call runs as if it had none.
//!
//! Outside a handler, a program joins a trace with [`TraceContext::scope`]. With the
//! feature `otel`, the trace of the current `tracing` span (as tracing-opentelemetry sees
//! it) is used instead, so calls join an OpenTelemetry pipeline the program already has.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::task::futures::TaskLocalFuture;

use crate::context::Context;

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// Set once any trace context has been made current in this process (a
/// [`scope`](TraceContext::scope), a call's [`Context`] with a trace): until then
/// [`TraceContext::current`] is one relaxed load, not two task-local look-ups per call.
static IN_USE: AtomicBool = AtomicBool::new(false);

/// Notes that a trace context may be current from now on.
#[inline]
pub(crate) fn mark_in_use() {
    if !IN_USE.load(Ordering::Relaxed) {
        IN_USE.store(true, Ordering::Relaxed);
    }
}

/// The metadata key a call's trace context travels under.
pub const TRACEPARENT: &str = "traceparent";

/// Where a span sits in a trace: the trace's id, the span's id and the trace flags (bit 0:
/// sampled), as in a W3C `traceparent`.
///
/// ```
/// use rpc::TraceContext;
/// let parent = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
///     .expect("well-formed");
/// let child = parent.child();
/// assert_eq!(child.trace_id(), parent.trace_id());
/// assert_ne!(child.span_id(), parent.span_id());
/// assert!(TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01").is_none());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    // Two halves rather than a `u128` (aligned to 8, not 16), and a non-zero span id (an
    // `Option<TraceContext>` is no larger than a `TraceContext`).
    trace_hi: u64,
    trace_lo: u64,
    span_id: NonZeroU64,
    flags: u8,
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceContext({self})")
    }
}

/// The `traceparent` form: `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`.
impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id(),
            self.span_id,
            self.flags
        )
    }
}

impl TraceContext {
    /// The sampled flag (bit 0 of the flags).
    pub const SAMPLED: u8 = 0x01;

    /// A trace context from its parts; `None` if an id is zero (invalid in W3C).
    pub fn from_parts(trace_id: u128, span_id: u64, flags: u8) -> Option<Self> {
        if trace_id == 0 {
            return None;
        }
        Some(TraceContext {
            trace_hi: (trace_id >> 64) as u64,
            trace_lo: trace_id as u64,
            span_id: NonZeroU64::new(span_id)?,
            flags,
        })
    }

    /// A new trace, sampled, with random ids: the root of a request's trace.
    pub fn new_root() -> Self {
        TraceContext {
            trace_hi: random_nonzero().get(),
            trace_lo: random_nonzero().get(),
            span_id: random_nonzero(),
            flags: Self::SAMPLED,
        }
    }

    /// A span in the same trace whose parent is this one: a new random span id.
    pub fn child(&self) -> Self {
        TraceContext {
            span_id: random_nonzero(),
            ..*self
        }
    }

    /// The trace's id.
    pub fn trace_id(&self) -> u128 {
        (u128::from(self.trace_hi) << 64) | u128::from(self.trace_lo)
    }

    /// This span's id.
    pub fn span_id(&self) -> u64 {
        self.span_id.get()
    }

    /// The trace flags.
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// Whether the caller records this trace (the sampled flag).
    pub fn is_sampled(&self) -> bool {
        self.flags & Self::SAMPLED != 0
    }

    /// Reads a `traceparent` value, strictly: version `00`, lowercase hex, the exact
    /// length, non-zero ids. Anything else is `None`.
    pub fn parse(value: &str) -> Option<Self> {
        let b = value.as_bytes();
        if b.len() != 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' || &b[..2] != b"00" {
            return None;
        }
        let trace_id = hex(&b[3..35])?;
        let span_id = u64::try_from(hex(&b[36..52])?).ok()?;
        let flags = u8::try_from(hex(&b[53..55])?).ok()?;
        TraceContext::from_parts(trace_id, span_id, flags)
    }

    /// The trace context of a call's metadata, if it carries a well-formed `traceparent`.
    pub fn from_metadata(metadata: &crate::Metadata) -> Option<Self> {
        if metadata.is_empty() {
            return None;
        }
        metadata.get_str(TRACEPARENT).and_then(TraceContext::parse)
    }

    /// The trace a call made here belongs to: the one [`scope`](Self::scope) set, else the
    /// trace of the call being served (see [`Context::trace`]); `None` outside both.
    #[inline]
    pub fn current() -> Option<Self> {
        if !IN_USE.load(Ordering::Relaxed) {
            return None;
        }
        CURRENT
            .try_with(|trace| *trace)
            .ok()
            .or_else(|| Context::with_current(Context::trace).flatten())
    }

    /// Runs `future` inside this trace: calls it makes carry it on (its span id is their
    /// parent).
    ///
    /// ```
    /// # async fn demo() {
    /// use rpc::TraceContext;
    /// let root = TraceContext::new_root();
    /// let seen = root.scope(async { TraceContext::current() }).await;
    /// assert_eq!(seen, Some(root));
    /// # }
    /// ```
    pub fn scope<F: Future>(self, future: F) -> TaskLocalFuture<TraceContext, F> {
        mark_in_use();
        CURRENT.scope(self, future)
    }
}

/// Parses up to 32 lowercase hex digits.
fn hex(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0u128, |acc, &d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        Some(acc << 4 | u128::from(v))
    })
}

thread_local! {
    /// xorshift64* state, seeded per thread from the standard library's random hasher keys.
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x9e37_79b9_7f4a_7c15);
    hasher.finish() | 1
}

/// A random non-zero `u64` (xorshift64*: ids need to be unlikely to collide, not secret).
fn random_nonzero() -> NonZeroU64 {
    RNG.with(|state| loop {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        if let Some(out) = NonZeroU64::new(x.wrapping_mul(0x2545_f491_4f6c_dd1d)) {
            return out;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_formats_the_w3c_example() {
        let tc = TraceContext::parse(GOOD).expect("valid");
        assert_eq!(tc.trace_id(), 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(tc.span_id(), 0x00f067aa0ba902b7);
        assert!(tc.is_sampled());
        assert_eq!(tc.to_string(), GOOD);
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn roots_and_children_get_fresh_ids() {
        let a = TraceContext::new_root();
        let b = TraceContext::new_root();
        assert_ne!(a.trace_id(), b.trace_id());
        let c = a.child();
        assert_eq!((c.trace_id(), c.flags()), (a.trace_id(), a.flags()));
        assert_ne!(c.span_id(), a.span_id());
        assert_eq!(TraceContext::parse(&c.to_string()), Some(c));
    }

    #[test]
    fn an_absent_trace_costs_a_context_no_more_than_a_present_one() {
        assert_eq!(std::mem::size_of::<Option<TraceContext>>(), 32);
        assert_eq!(std::mem::align_of::<Option<TraceContext>>(), 8);
    }
}
