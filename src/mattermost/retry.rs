//! Retry decisions and delays: which failures are worth another attempt, and how long to
//! wait before it.

use std::time::Duration;

use reqwest::header::HeaderMap;

use crate::settings::RetryPolicy;

/// The delays between attempts allowed by `policy`.
pub(crate) fn backoff(policy: &RetryPolicy) -> impl Iterator<Item = Duration> + Send + use<> {
    policy.delays()
}

/// How long the server asked us to wait before retrying a 429, capped at `max`.
///
/// Mattermost (`app/ratelimit.go`, throttled's GCRA) sends `Retry-After` (seconds until one
/// more request is allowed) and `X-RateLimit-Reset` (seconds until the bucket is full again).
/// `Retry-After` is the precise answer; `X-RateLimit-Reset` is the fallback. `None` when
/// neither header is usable, so the caller falls back to its own backoff.
pub(crate) fn server_wait(headers: &HeaderMap, max: Duration) -> Option<Duration> {
    let seconds = |name: &str| -> Option<f64> {
        let value = headers.get(name)?.to_str().ok()?.trim();
        let secs: f64 = value.parse().ok()?;
        (secs.is_finite() && secs >= 0.0).then_some(secs)
    };
    let secs = seconds("retry-after").or_else(|| seconds("x-ratelimit-reset"))?;
    // A zero wait still deserves a breath, or a storm of 429s becomes a busy loop.
    let wait = Duration::from_secs_f64(secs.min(max.as_secs_f64())).max(Duration::from_millis(10));
    Some(wait.min(max))
}

/// Whether a request may be sent again after this transport error.
///
/// A connect error means the request never left; anything later (timeout, reset while
/// reading the answer) means the server may have acted on it, which only an idempotent
/// request may ignore.
pub(crate) fn transport_retryable(err: &reqwest::Error, idempotent: bool) -> bool {
    // An untrusted certificate stays untrusted: retrying only delays telling the admin.
    !is_certificate_error(err) && (err.is_connect() || idempotent)
}

/// True when the TLS handshake failed because the server's certificate was not accepted.
pub(crate) fn is_certificate_error(err: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        // The connector wraps rustls's error in io::Errors, whose `source()` skips the
        // wrapped error itself: descend through `get_ref()` instead.
        let mut inner: &(dyn std::error::Error + 'static) = e;
        while let Some(wrapped) = inner
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            inner = wrapped;
        }
        if matches!(
            inner.downcast_ref::<rustls::Error>(),
            Some(rustls::Error::InvalidCertificate(_))
        ) {
            return true;
        }
        source = e.source();
    }
    false
}

/// Whether a request answered with `status` may be sent again.
///
/// 429 means the server refused before doing anything. 5xx may come after the work was done
/// (or a proxy lost the answer), so only idempotent requests are repeated.
pub(crate) fn status_retryable(status: u16, idempotent: bool) -> bool {
    status == 429 || (status >= 500 && idempotent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_static(v));
        }
        map
    }

    const MAX: Duration = Duration::from_secs(30);

    #[test]
    fn retry_after_wins_over_reset() {
        let h = headers(&[("Retry-After", "2"), ("X-Ratelimit-Reset", "9")]);
        assert_eq!(server_wait(&h, MAX), Some(Duration::from_secs(2)));
    }

    #[test]
    fn reset_is_used_without_retry_after() {
        let h = headers(&[
            ("X-Ratelimit-Limit", "11"),
            ("X-Ratelimit-Remaining", "0"),
            ("X-Ratelimit-Reset", "3"),
        ]);
        assert_eq!(server_wait(&h, MAX), Some(Duration::from_secs(3)));
    }

    #[test]
    fn server_wait_is_capped_at_max_delay() {
        let h = headers(&[("Retry-After", "3600")]);
        assert_eq!(
            server_wait(&h, Duration::from_secs(5)),
            Some(Duration::from_secs(5))
        );
    }

    #[test]
    fn zero_wait_becomes_a_short_pause() {
        let h = headers(&[("X-Ratelimit-Reset", "0")]);
        assert_eq!(server_wait(&h, MAX), Some(Duration::from_millis(10)));
    }

    #[test]
    fn unusable_headers_fall_back_to_backoff() {
        assert_eq!(server_wait(&HeaderMap::new(), MAX), None);
        let h = headers(&[("Retry-After", "Wed, 21 Oct 2015 07:28:00 GMT")]);
        assert_eq!(server_wait(&h, MAX), None);
        let h = headers(&[("X-Ratelimit-Reset", "-4")]);
        assert_eq!(server_wait(&h, MAX), None);
    }

    #[test]
    fn backoff_gives_max_attempts_minus_one_bounded_delays() {
        let policy = RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
        };
        let delays: Vec<_> = backoff(&policy).collect();
        assert_eq!(delays.len(), 4);
        assert!(delays.iter().all(|d| *d >= Duration::from_millis(100)));
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(300)));
    }

    #[test]
    fn single_attempt_policy_never_retries() {
        let policy = RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        };
        assert_eq!(backoff(&policy).count(), 0);
    }

    #[test]
    fn create_is_retried_only_on_429() {
        assert!(status_retryable(429, false));
        assert!(!status_retryable(502, false));
        assert!(status_retryable(502, true));
        assert!(!status_retryable(400, true));
    }
}
