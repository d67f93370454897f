//! The retry budget: how many calls that may have run a client sends again.
//!
//! Retrying a call whose connection died is safe only for idempotent methods, and even then
//! retries must not multiply the load on a cluster that is already failing. This is gRPC's
//! retry throttling: a bucket of tokens, full at the start; every failed attempt that could
//! be retried takes one token, every success of such a method gives back a fraction of one;
//! retries are allowed only while the bucket is more than half full. So retries stop once
//! more than about `token_ratio` of recent attempts fail, and resume as calls succeed.

use std::sync::atomic::{AtomicI64, Ordering};

/// Tokens are counted in thousandths, so the ratio needs no float on the hot path.
const SCALE: i64 = 1000;

#[derive(Debug)]
pub(crate) struct RetryBudget {
    tokens: AtomicI64,
    max: i64,
    ratio: i64,
}

impl RetryBudget {
    /// A full bucket of `max_tokens`, refilled by `token_ratio` per success.
    pub(crate) fn new(max_tokens: u32, token_ratio: f64) -> Self {
        let max = i64::from(max_tokens) * SCALE;
        RetryBudget {
            tokens: AtomicI64::new(max),
            max,
            // Saturating float-to-int cast: a silly ratio becomes 0 or the whole bucket.
            ratio: ((token_ratio * SCALE as f64) as i64).clamp(0, max),
        }
    }

    /// A call of a retryable method succeeded.
    pub(crate) fn on_success(&self) {
        let _ = self
            .tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tokens| {
                (tokens < self.max).then(|| (tokens + self.ratio).min(self.max))
            });
    }

    /// An attempt of a retryable method failed in a way a retry could fix; returns whether
    /// the budget allows that retry.
    pub(crate) fn on_failure(&self) -> bool {
        let before = self
            .tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tokens| {
                Some((tokens - SCALE).max(0))
            })
            .unwrap_or(0);
        before - SCALE > self.max / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stop_when_half_the_bucket_is_spent_and_resume_with_successes() {
        let budget = RetryBudget::new(10, 0.1);
        // 10 tokens: failures take them down to 5 with retries allowed while above 5.
        let allowed = (0..10).filter(|_| budget.on_failure()).count();
        assert_eq!(allowed, 4, "retries allowed at 9, 8, 7 and 6 tokens");
        assert!(!budget.on_failure());
        // The bucket is empty now; 10 successes give one token back each 0.1.
        for _ in 0..70 {
            budget.on_success();
        }
        // 7 tokens: a failure leaves 6, above half: allowed.
        assert!(budget.on_failure());
        assert!(!budget.on_failure());
    }

    #[test]
    fn the_bucket_never_overflows() {
        let budget = RetryBudget::new(10, 0.5);
        for _ in 0..100 {
            budget.on_success();
        }
        // Still 10 tokens, not 60: the same 4 retries as a fresh bucket.
        let allowed = (0..10).filter(|_| budget.on_failure()).count();
        assert_eq!(allowed, 4);
    }
}
