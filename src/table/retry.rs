//! One retry policy for every table commit: how many attempts a commit
//! gets against concurrent writers, how long to back off between them, and
//! how long to wait for the catalog to answer again when a commit's
//! outcome is unknown (the connection dropped after the request was sent,
//! a 5xx, a catalog restart). Only a definite answer ends a commit: it
//! landed (found by its run id), it was refused, or the budget ran out.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Environment variable: how long a commit whose outcome is unknown waits
/// for the catalog to answer again (a duration such as `2m`; default
/// [`DEFAULT_OUTCOME_BUDGET`]).
pub const OUTCOME_BUDGET_ENV: &str = "FLOE_COMMIT_OUTCOME_TIMEOUT";
/// How long an unknown commit outcome is checked by default.
pub const DEFAULT_OUTCOME_BUDGET: Duration = Duration::from_secs(120);

/// The retry policy of commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Commit attempts against concurrent writers.
    pub attempts: u32,
    /// First backoff; doubles per attempt, with jitter.
    pub base: Duration,
    /// Longest backoff.
    pub cap: Duration,
    /// How long to wait for an answer when an outcome is unknown.
    pub outcome_budget: Duration,
}

impl Retry {
    /// The policy of table commits: 12 attempts, backoff from 50 ms to
    /// 3.2 s, and the outcome budget from [`OUTCOME_BUDGET_ENV`].
    ///
    /// # Errors
    /// When the environment variable is not a duration.
    pub fn commits() -> Result<Self> {
        let outcome_budget = match std::env::var(OUTCOME_BUDGET_ENV) {
            Ok(text) => crate::duration::parse_duration(&text)
                .map_err(|e| Error::Config(format!("{OUTCOME_BUDGET_ENV}: {e}")).caused_by(e))?,
            Err(_) => DEFAULT_OUTCOME_BUDGET,
        };
        Ok(Self {
            attempts: 12,
            base: Duration::from_millis(50),
            cap: Duration::from_millis(3200),
            outcome_budget,
        })
    }

    /// How long to wait before attempt `attempt + 1` (exponential, with
    /// jitter, at most [`Retry::cap`] plus its jitter).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.cap);
        let millis = u64::try_from(base.as_millis()).unwrap_or(u64::MAX).max(1);
        let jitter = u64::from(rand::random::<u16>()) % millis;
        base + Duration::from_millis(jitter)
    }

    /// Runs `call` until it answers with anything but a retryable error
    /// (the catalog or store not reachable, or a 5xx), backing off between
    /// tries, for at most the outcome budget; `what` names the call in the
    /// log.
    ///
    /// # Errors
    /// The call's error when it is not retryable, or its last error once
    /// the budget is spent.
    pub async fn until_answered<T, F, Fut>(&self, what: &str, mut call: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let started = Instant::now();
        let mut tries = 0u32;
        loop {
            match call().await {
                Err(e) if e.retryable() && started.elapsed() < self.outcome_budget => {
                    tries += 1;
                    let wait = self
                        .backoff(tries)
                        .min(self.outcome_budget.saturating_sub(started.elapsed()));
                    tracing::warn!(what, error = %e, retry_in = ?wait, "no answer; retrying");
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap() {
        let r = Retry {
            attempts: 3,
            base: Duration::from_millis(50),
            cap: Duration::from_millis(400),
            outcome_budget: Duration::from_secs(1),
        };
        assert!(r.backoff(1) >= Duration::from_millis(100));
        assert!(r.backoff(1) < Duration::from_millis(200));
        assert!(r.backoff(30) >= Duration::from_millis(400));
        assert!(r.backoff(30) < Duration::from_millis(800));
    }

    #[tokio::test]
    async fn until_answered_retries_only_what_may_pass() {
        let r = Retry {
            attempts: 3,
            base: Duration::from_millis(1),
            cap: Duration::from_millis(2),
            outcome_budget: Duration::from_secs(5),
        };
        let mut n = 0;
        let out = r
            .until_answered("test", || {
                n += 1;
                let k = n;
                async move {
                    if k < 3 {
                        Err(Error::Unavailable("down".into()))
                    } else {
                        Ok(k)
                    }
                }
            })
            .await;
        assert_eq!(out.ok(), Some(3));
        let mut m = 0;
        let refused: Result<()> = r
            .until_answered("test", || {
                m += 1;
                async { Err(Error::Catalog("404".into())) }
            })
            .await;
        assert!(refused.is_err());
        assert_eq!(m, 1, "a definite answer is not retried");
        let short = Retry {
            outcome_budget: Duration::from_millis(30),
            ..r
        };
        let started = Instant::now();
        let gave_up: Result<()> = short
            .until_answered("test", || async { Err(Error::Unavailable("down".into())) })
            .await;
        assert!(gave_up.is_err());
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
