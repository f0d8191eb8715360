//! When to try a request again and how long to wait: exponential backoff
//! with jitter, `Retry-After` honoured (and shared by every request of the
//! source, since a server that says "slow down" means all of them), and a
//! pacer that spaces requests to the source's rate limit.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::pipeline::HttpSource;

/// Why an attempt failed, and whether another may succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Worth another attempt (connection error, timeout, 429, 5xx, a
    /// truncated body, a rate-limit message); the server may have said when.
    Transient {
        /// What happened.
        reason: String,
        /// The server's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// Another attempt would fail the same way (4xx, an error body).
    Permanent(String),
}

/// Backoff settings of one source.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Retries after the first attempt.
    pub retries: u32,
    /// First backoff.
    pub backoff: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
    /// A longer `Retry-After` gives up at once.
    pub max_retry_after: Duration,
}

impl Policy {
    /// The policy of `source`.
    pub fn of(source: &HttpSource) -> Self {
        Self {
            retries: source.retries,
            backoff: source.backoff,
            max_backoff: source.max_backoff,
            max_retry_after: source.max_retry_after,
        }
    }

    /// The wait before retry number `retry` (1-based): `backoff · 2^(retry-1)`
    /// capped at `max_backoff`, then "equal jitter" (between half and all of
    /// it) so that parallel clients do not retry in step.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = self
            .backoff
            .saturating_mul(1u32 << retry.saturating_sub(1).min(20));
        let capped = exp.min(self.max_backoff);
        let jitter: f64 = rand::random_range(0.5..=1.0);
        capped.mul_f64(jitter)
    }

    /// The wait before retry `retry` after `failure`, or `None` when the
    /// run should give up (retries spent, or the server asks for longer
    /// than `max_retry_after`). A server's `Retry-After` is honoured even
    /// when longer than the backoff.
    pub fn wait(&self, retry: u32, failure: &Failure) -> Option<Duration> {
        let Failure::Transient { retry_after, .. } = failure else {
            return None;
        };
        if retry > self.retries {
            return None;
        }
        match retry_after {
            Some(d) if *d > self.max_retry_after => None,
            Some(d) => Some((*d).max(self.backoff(retry))),
            None => Some(self.backoff(retry)),
        }
    }
}

/// `Retry-After` as delay-seconds or an HTTP date.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Spaces requests at least `interval` apart, and holds every request
/// back while the server has asked to wait.
#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    state: Mutex<Slots>,
}

#[derive(Debug)]
struct Slots {
    /// The next free slot.
    next: Instant,
    /// No request before this (a server's `Retry-After`).
    held_until: Instant,
}

impl Pacer {
    /// A pacer for `interval` (`None`: no rate limit).
    pub fn new(interval: Option<Duration>) -> Self {
        let now = Instant::now();
        Self {
            interval: interval.unwrap_or(Duration::ZERO),
            state: Mutex::new(Slots {
                next: now,
                held_until: now,
            }),
        }
    }

    /// Waits for this request's slot; a hold-off that arrives while it
    /// waits moves it past the hold-off.
    pub async fn wait(&self) {
        loop {
            let slot = {
                let mut s = self.state.lock().await;
                let slot = s.next.max(Instant::now()).max(s.held_until);
                s.next = slot + self.interval;
                slot
            };
            tokio::time::sleep_until(slot).await;
            if Instant::now() >= self.state.lock().await.held_until {
                return;
            }
        }
    }

    /// No request starts before `delay` from now.
    pub async fn hold_off(&self, delay: Duration) {
        let mut s = self.state.lock().await;
        s.held_until = s.held_until.max(Instant::now() + delay);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            retries: 3,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
            max_retry_after: Duration::from_secs(5),
        }
    }

    fn transient(retry_after: Option<Duration>) -> Failure {
        Failure::Transient {
            reason: "503".into(),
            retry_after,
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let p = policy();
        for _ in 0..50 {
            let first = p.backoff(1);
            assert!((50..=100).contains(&first.as_millis()), "{first:?}");
            let second = p.backoff(2);
            assert!((100..=200).contains(&second.as_millis()), "{second:?}");
            let late = p.backoff(10);
            assert!((150..=300).contains(&late.as_millis()), "{late:?}");
        }
    }

    #[test]
    fn retries_are_bounded_and_retry_after_is_honoured() {
        let p = policy();
        assert!(p.wait(3, &transient(None)).is_some());
        assert_eq!(
            p.wait(4, &transient(None)),
            None,
            "three retries, then stop"
        );
        assert_eq!(p.wait(1, &Failure::Permanent("404".into())), None);
        let asked = Duration::from_secs(2);
        let w = p.wait(1, &transient(Some(asked))).expect("waits");
        assert!(w >= asked, "{w:?}");
        assert_eq!(
            p.wait(1, &transient(Some(Duration::from_secs(60)))),
            None,
            "longer than max_retry_after: give up now"
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "7".parse().expect("header"));
        assert_eq!(
            retry_after(&h, SystemTime::now()),
            Some(Duration::from_secs(7))
        );
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        h.insert(RETRY_AFTER, later.parse().expect("header"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(30)));
        h.insert(RETRY_AFTER, "soon".parse().expect("header"));
        assert_eq!(retry_after(&h, now), None);
    }
}
