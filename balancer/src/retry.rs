//! The retry budget: retries may add only a fraction of the traffic on top.
//!
//! Retrying a failed request on another node hides a node's death from clients.
//! But when *every* node is failing, retries multiply the load on a cluster that
//! is already sick (a "retry storm"). A budget bounds them: every request
//! deposits `ratio` tokens (0.2 by default), every retry spends one, and a retry
//! with no token left is not made. A small reserve lets a quiet balancer retry
//! its first few failures.
//!
//! Failover is not budgeted: when a node is taken out of rotation under a
//! request (it hung and was ejected, its connection broke, or it is shutting
//! down), the request moves on without a token. The ejected node gets no new
//! requests, so such moves are bounded by what was in flight on it: they
//! cannot feed a storm, and a busy load generator should not see errors for
//! a single hung node. Nor is moving off a connection the balancer closed
//! itself, worn out by late answers: its node stays in rotation, and the
//! moves are bounded by what was in flight on that connection.

use std::sync::Mutex;

/// Tokens available when the balancer starts, and the most it saves up.
const RESERVE: f64 = 10.0;

/// A token bucket filled by requests and drained by retries.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    /// A std mutex: held for two float operations, never across an `.await`.
    tokens: Mutex<f64>,
}

impl RetryBudget {
    /// Allows retries up to `ratio` of requests (plus a small reserve).
    pub fn new(ratio: f64) -> Self {
        RetryBudget {
            ratio,
            tokens: Mutex::new(RESERVE),
        }
    }

    /// The fraction of requests that retries may add (`--retry-budget`).
    pub fn ratio(&self) -> f64 {
        self.ratio
    }

    /// Called once per request.
    pub fn deposit(&self) {
        let mut tokens = self.tokens.lock().expect("budget poisoned");
        *tokens = (*tokens + self.ratio).min(RESERVE.max(self.ratio));
    }

    /// Takes a token for one retry; false when the budget is spent.
    pub fn withdraw(&self) -> bool {
        let mut tokens = self.tokens.lock().expect("budget poisoned");
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stay_within_the_ratio_plus_the_reserve() {
        let budget = RetryBudget::new(0.2);
        let mut retries = 0;
        for _ in 0..1000 {
            budget.deposit();
            // Every request fails and would like to retry twice.
            retries += usize::from(budget.withdraw()) + usize::from(budget.withdraw());
        }
        assert!(retries <= 200 + RESERVE as usize, "{retries} retries");
        assert!(
            retries >= 190,
            "{retries} retries: the budget should be used"
        );
    }

    #[test]
    fn a_zero_budget_allows_only_the_reserve() {
        let budget = RetryBudget::new(0.0);
        let retries = (0..100).filter(|_| {
            budget.deposit();
            budget.withdraw()
        });
        assert_eq!(retries.count(), RESERVE as usize);
    }
}
