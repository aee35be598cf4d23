//! Client-side rate limiting, one bucket per Mattermost server.
//!
//! Mattermost's own limiter counts per token or per client address, so several plugin
//! instances posting to one server share its budget. Sharing one bucket per base URL across
//! every client in this process keeps the sum of their calls within it.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, LazyLock, Mutex, Weak};

use governor::clock::DefaultClock;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::settings::RateLimit;

/// A governor limiter plus the quota it was built from.
#[derive(Debug)]
pub(crate) struct Limiter {
    inner: RateLimiter<NotKeyed, InMemoryState, DefaultClock>,
    quota: RateLimit,
}

impl Limiter {
    /// Waits until one more call is allowed.
    pub(crate) async fn acquire(&self) {
        self.inner.until_ready().await;
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
