//! Client-side rate limiting, one bucket per Mattermost server: the configured ceiling, and
//! below it the pace learned from the server's own rate-limit headers ([`super::pacing`]).
//!
//! Mattermost's own limiter counts per token or per client address, so several plugin
//! instances posting to one server share its budget. Sharing one bucket per base URL across
//! every client in this process keeps the sum of their calls within it.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

use governor::clock::DefaultClock;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use super::pacing::{Bucket, Pacer, Wait};
use crate::settings::RateLimit;

/// A governor limiter (the ceiling) plus the quota it was built from, and the pace learned
/// from the server.
#[derive(Debug)]
pub(crate) struct Limiter {
    inner: RateLimiter<NotKeyed, InMemoryState, DefaultClock>,
    quota: RateLimit,
    pacer: Mutex<Pacer>,
}

impl Limiter {
    /// Waits until one more call is allowed: by the ceiling, then by the server's pace.
    pub(crate) async fn acquire(&self) {
        self.inner.until_ready().await;
        loop {
            let wait = self.pacer().delay(Instant::now());
            match wait {
                Wait::Go => break,
                Wait::Slot(d) => {
                    tokio::time::sleep(d).await;
                    break;
                }
                Wait::Recheck(d) => tokio::time::sleep(d).await,
            }
        }
        self.pacer().sending();
    }

    /// Learns from the answer to a call [`Limiter::acquire`] let through: its rate-limit
    /// headers (`refused` for a 429), or `None` when no answer came.
    pub(crate) fn observe(&self, headers: Option<&reqwest::header::HeaderMap>, refused: bool) {
        let mut pacer = self.pacer();
        match headers.map(Bucket::from_headers) {
            Some(Some(bucket)) => pacer.observe(Instant::now(), bucket, refused),
            Some(None) => pacer.unlimited(),
            None => pacer.lost(),
        }
    }

    /// How long to wait before retrying a 429, when the pace is known: only a moment, since
    /// [`Limiter::acquire`] spaces the retry at the server's rate (its `Retry-After` is
    /// rounded up to whole seconds, far longer than one call's share at 50/s).
    pub(crate) fn wait_after_429(&self) -> Option<Duration> {
        self.pacer().rate().map(|_| Duration::from_millis(10))
    }

    /// The server's rate as learned, in calls per second.
    pub(crate) fn learned_rate(&self) -> Option<f64> {
        self.pacer().rate()
    }

    /// The server's bucket now, as its last answer described it (for metrics).
    pub(crate) fn bucket(&self) -> Option<Bucket> {
        self.pacer().bucket_now(Instant::now())
    }

    fn pacer(&self) -> std::sync::MutexGuard<'_, Pacer> {
        self.pacer.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Live limiters by base URL. Weak, so a server nobody talks to any more is forgotten.
static REGISTRY: LazyLock<Mutex<HashMap<String, Weak<Limiter>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The limiter for `base_url`, shared with every other client of that server; `None` when
/// `rate.per_second` is 0 (disabled).
///
/// If a limiter for the server already exists with a different quota, it is kept (two
/// buckets for one server would let the pair exceed either quota) and a warning says so.
pub(crate) fn for_server(base_url: &str, rate: RateLimit) -> Option<Arc<Limiter>> {
    let per_second = NonZeroU32::new(rate.per_second)?;
    let burst = NonZeroU32::new(rate.burst).unwrap_or(per_second);
    let mut registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    registry.retain(|_, weak| weak.strong_count() > 0);
    if let Some(existing) = registry.get(base_url).and_then(Weak::upgrade) {
        if existing.quota != rate {
            tracing::warn!(
                url = base_url,
                existing = ?existing.quota,
                requested = ?rate,
                "another client already limits calls to this Mattermost server; sharing its rate limit"
            );
        }
        return Some(existing);
    }
    let limiter = Arc::new(Limiter {
        inner: RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst)),
        quota: rate,
        pacer: Mutex::default(),
    });
    registry.insert(base_url.to_string(), Arc::downgrade(&limiter));
    Some(limiter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_per_second_disables_the_limiter() {
        let off = RateLimit {
            per_second: 0,
            burst: 10,
        };
        assert!(for_server("http://limiter-off.test", off).is_none());
    }

    #[test]
    fn clients_of_one_server_share_a_limiter() {
        let rate = RateLimit {
            per_second: 5,
            burst: 1,
        };
        let a = for_server("http://shared.test", rate).unwrap();
        let b = for_server("http://shared.test", rate).unwrap();
        let other = for_server("http://other.test", rate).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &other));
    }

    #[test]
    fn limiter_is_forgotten_when_unused() {
        let rate = RateLimit {
            per_second: 5,
            burst: 1,
        };
        let first = for_server("http://forgotten.test", rate).unwrap();
        let weak = Arc::downgrade(&first);
        drop(first);
        assert!(weak.upgrade().is_none());
        let second = for_server("http://forgotten.test", rate).unwrap();
        assert!(second.inner.check().is_ok());
    }
}
