//! How long an object-store request keeps trying while the store does not
//! answer (connection refused or dropped, a timeout, a 5xx, throttling):
//! one budget, `FLOE_STORAGE_RETRY_TIMEOUT`, for every store floe opens:
//! the catalog's warehouse, floe's Iceberg `FileIO` on S3, the S3
//! operator that lists prefixes, and Delta's object store. The `floe`
//! binary reads the variable (`floe::store::storage_retry`); this crate
//! takes the budget in [`crate::S3Options::retry`].

mod s3io;

use std::time::Duration;

use opendal::Operator;
use opendal::layers::{RetryLayer, TimeoutLayer};
use serde::{Deserialize, Serialize};

pub use s3io::{FloeStorage, FloeStorageFactory, s3_config};

/// Environment variable: how long an object-store request is retried
/// while the store does not answer (a duration such as `60s`; default
/// [`DEFAULT_BUDGET`]; `0s` turns retries off).
pub const BUDGET_ENV: &str = "FLOE_STORAGE_RETRY_TIMEOUT";
/// The storage retry budget when [`BUDGET_ENV`] is unset.
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(60);

/// First backoff of a retried request; doubles per try up to [`MAX_DELAY`].
const MIN_DELAY: Duration = Duration::from_millis(200);
/// Longest backoff: a store back from an outage is used again within it.
const MAX_DELAY: Duration = Duration::from_secs(5);

/// The retry budget of object-store requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageRetry {
    /// How long the backoffs between tries of one request add up to, at
    /// least.
    pub budget: Duration,
}

impl Default for StorageRetry {
    fn default() -> Self {
        Self {
            budget: DEFAULT_BUDGET,
        }
    }
}

impl StorageRetry {
    /// The backoff before each retry, in order: from [`MIN_DELAY`],
    /// doubling, at most [`MAX_DELAY`], until they add up to the budget.
    pub fn delays(&self) -> Vec<Duration> {
        let mut out = Vec::new();
        let mut total = Duration::ZERO;
        let mut next = MIN_DELAY;
        // Bounded: at most budget / MIN_DELAY steps, and a cap for absurd
        // budgets.
        while total < self.budget && out.len() < 100_000 {
            out.push(next);
            total += next;
            next = (next * 2).min(MAX_DELAY);
        }
        out
    }

    /// `op` with a per-request timeout and retries of what may pass
    /// (opendal's temporary errors: connection failures, timeouts, 5xx,
    /// throttling) with exponential backoff: [`StorageRetry::delays`].
    /// No jitter, so that the budget is what it says: the backoffs add up
    /// to at least the budget and at most [`MAX_DELAY`] more.
    pub fn apply(&self, op: Operator) -> Operator {
        let tries = self.delays().len();
        // The timeout sits inside the retry, so that a request parked on a
        // silently dropped connection fails and is tried again.
        op.layer(TimeoutLayer::new()).layer(
            RetryLayer::new()
                .with_min_delay(MIN_DELAY)
                .with_max_delay(MAX_DELAY)
                .with_factor(2.0)
                .with_max_times(tries)
                .with_notify(|event: opendal::layers::RetryEvent<'_>| {
                    tracing::warn!(
                        operation = ?event.op,
                        attempt = event.attempt,
                        retry_in = ?event.retry_after,
                        error = %event.err,
                        "the object store did not answer; retrying"
                    );
                }),
        )
    }

    /// The same budget as object_store options for delta-rs
    /// (`retry_timeout`; tries are bounded by the time, not a count).
    pub fn delta_options(&self) -> [(&'static str, String); 2] {
        [
            ("retry_timeout", format!("{}ms", self.budget.as_millis())),
            ("max_retries", "1000".to_string()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_add_up_to_the_budget_and_are_capped() {
        let r = StorageRetry {
            budget: Duration::from_secs(60),
        };
        let d = r.delays();
        assert_eq!(d[0], MIN_DELAY);
        assert!(d.iter().all(|x| *x <= MAX_DELAY));
        let total: Duration = d.iter().sum();
        assert!(
            total >= r.budget && total < r.budget + MAX_DELAY,
            "{total:?}"
        );
        let none = StorageRetry {
            budget: Duration::ZERO,
        };
        assert!(none.delays().is_empty(), "0s turns retries off");
        let short = StorageRetry {
            budget: Duration::from_secs(4),
        };
        assert_eq!(short.delays().len(), 5, "{:?}", short.delays());
    }
}
