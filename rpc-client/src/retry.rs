//! The retry budget: how many calls that may have run a client sends again.
//!
//! Retrying a call whose connection died is safe only for idempotent methods, and even then
//! retries must not multiply the load on a cluster that is already failing. This is tower's
//! `Budget` (and the idea of gRPC's retry throttling): every success of a retryable method
//! deposits a fraction of a retry (`retry_ratio`, 0.2 by default), every retry withdraws a
//! whole one, and a small reserve (`retry_min_per_sec`, 10 by default) refills with time so
//! that a client with little traffic can still retry the few calls a dead host took with it.
//! So retries stay below about a fifth of recent successes plus ten a second, however many
//! calls fail. Nothing here runs for a method that is not idempotent, and nothing reads the
//! clock except a retry.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use rpc_core::sync::lock;
use tokio::time::Instant;

/// Deposits are counted in thousandths of a retry, so the ratio needs no float per call.
const SCALE: i64 = 1000;

/// The most retries deposits can add up to: the budget remembers recent successes, not all.
const MAX_DEPOSITED: i64 = 100 * SCALE;

#[derive(Debug)]
pub(crate) struct RetryBudget {
    /// Deposited by successes, in thousandths of a retry.
    balance: AtomicI64,
    /// Thousandths of a retry each success deposits.
    ratio: i64,
    min_per_sec: u32,
    reserve: Mutex<Reserve>,
}

#[derive(Debug)]
struct Reserve {
    /// Retries the reserve allows now, in thousandths.
    tokens: i64,
    refilled: Instant,
}

impl RetryBudget {
    /// `ratio` of a retry per success, and `min_per_sec` retries a second in any case.
    pub(crate) fn new(ratio: f64, min_per_sec: u32) -> Self {
        let full = i64::from(min_per_sec) * SCALE;
        RetryBudget {
            balance: AtomicI64::new(0),
            // Saturating float-to-int cast: a silly ratio becomes 0 or the whole cap.
            ratio: ((ratio * SCALE as f64) as i64).clamp(0, MAX_DEPOSITED),
            min_per_sec,
            reserve: Mutex::new(Reserve {
                tokens: full,
                refilled: Instant::now(),
            }),
        }
    }

    /// A call of a retryable method succeeded.
    pub(crate) fn deposit(&self) {
        if self.ratio == 0 {
            return;
        }
        let _ = self
            .balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |balance| {
                (balance < MAX_DEPOSITED).then(|| (balance + self.ratio).min(MAX_DEPOSITED))
            });
    }

    /// Takes one retry from the budget if it has one, at `now`: from the reserve first,
    /// then from the deposits.
    pub(crate) fn withdraw(&self, now: Instant) -> bool {
        {
            let mut reserve = lock(&self.reserve);
            let full = i64::from(self.min_per_sec) * SCALE;
            let elapsed = now.saturating_duration_since(reserve.refilled);
            let refill = i64::try_from(elapsed.as_millis())
                .unwrap_or(i64::MAX)
                .saturating_mul(i64::from(self.min_per_sec));
            reserve.tokens = reserve.tokens.saturating_add(refill).min(full);
            reserve.refilled = now;
            if reserve.tokens >= SCALE {
                reserve.tokens -= SCALE;
                return true;
            }
        }
        self.balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |balance| {
                (balance >= SCALE).then_some(balance - SCALE)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_reserve_allows_a_burst_then_refills_with_time() {
        let budget = RetryBudget::new(0.0, 3);
        let start = Instant::now();
        let burst = (0..10).filter(|_| budget.withdraw(start)).count();
        assert_eq!(burst, 3);
        // A third of a second later, one more.
        assert!(budget.withdraw(start + Duration::from_millis(334)));
        assert!(!budget.withdraw(start + Duration::from_millis(334)));
        // However long the pause, the reserve holds at most a second's worth.
        let later = start + Duration::from_secs(3600);
        assert_eq!((0..10).filter(|_| budget.withdraw(later)).count(), 3);
    }

    #[test]
    fn successes_deposit_a_fraction_of_a_retry_each() {
        let budget = RetryBudget::new(0.2, 0);
        let now = Instant::now();
        assert!(!budget.withdraw(now));
        for _ in 0..10 {
            budget.deposit();
        }
        // Ten successes at 0.2: two retries.
        assert_eq!((0..5).filter(|_| budget.withdraw(now)).count(), 2);
    }

    #[test]
    fn deposits_are_capped() {
        let budget = RetryBudget::new(1.0, 0);
        for _ in 0..1_000 {
            budget.deposit();
        }
        let now = Instant::now();
        assert_eq!((0..1_000).filter(|_| budget.withdraw(now)).count(), 100);
    }
}
