//! The one call path under every endpoint: authenticate, rate-limit, send, read a bounded
//! answer, retry what is safe to retry, and type the errors.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use url::Url;

use super::client::MattermostClient;
use super::error::{ApiError, MattermostError};
use super::retry;
use crate::settings::CaBundle;

/// The largest answer read from Mattermost for one call. A user, team, channel or post is a
/// few KiB; the cap keeps a hostile or broken server from making the plugin buffer gigabytes.
pub(super) const MAX_ANSWER_BYTES: usize = 1024 * 1024;
/// The largest page of posts (`channels/{id}/posts`): up to 1000 posts of up to 16383
/// characters of message plus props.
pub(super) const MAX_POST_LIST_BYTES: usize = 64 * 1024 * 1024;
/// Error bodies only improve the message: read at most this much of them.
pub(super) const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Upper bounds of the posting-latency buckets, in seconds: a loopback answer takes
/// milliseconds, a paced burst on a rate-limited server waits its turn for many seconds.
pub(super) const POST_SECONDS_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Debug)]
pub(super) struct Counters {
    pub(super) retries: AtomicU64,
    pub(super) rate_limited: AtomicU64,
    /// Seconds each created post took, pacing waits and retries included.
    pub(super) posting: prometheus_client::metrics::histogram::Histogram,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            retries: AtomicU64::default(),
            rate_limited: AtomicU64::default(),
            posting: prometheus_client::metrics::histogram::Histogram::new(POST_SECONDS_BUCKETS),
        }
    }
}

/// One request to make, possibly several times.
pub(super) struct Call<'a> {
    pub(super) method: Method,
    pub(super) url: Url,
    pub(super) body: Option<Vec<u8>>,
    /// Safe to repeat after the server may have acted on it.
    pub(super) idempotent: bool,
    /// For lookups: what a 404 means, e.g. `team "ops"`.
    pub(super) what: Option<&'a str>,
    /// The largest answer accepted.
    pub(super) max_answer: usize,
}

impl<'a> Call<'a> {
    /// A GET of `url` (always safe to repeat) whose answer may be up to `max_answer` bytes.
    pub(super) fn get(url: Url, what: Option<&'a str>, max_answer: usize) -> Call<'a> {
        Call {
            method: Method::GET,
            url,
            body: None,
            idempotent: true,
            what,
            max_answer,
        }
    }
}

/// Why one attempt failed.
pub(super) enum Failure {
    Transport(reqwest::Error),
    TooLarge,
    Status {
        status: StatusCode,
        headers: reqwest::header::HeaderMap,
        body: Vec<u8>,
    },
}

/// One HTTP client per set of trusted roots for the whole process: each reqwest client
/// carries its own TLS verifier and root store (hundreds of KiB), and one shared pool serves
/// every instance that talks to the same Mattermost server. Instances without a CA bundle
/// (nearly all) share one; each distinct bundle gets its own.
pub(super) fn shared_http(ca: Option<&CaBundle>) -> Result<reqwest::Client, MattermostError> {
    static HTTP: std::sync::LazyLock<std::sync::Mutex<HashMap<Vec<u8>, reqwest::Client>>> =
        std::sync::LazyLock::new(Default::default);
    let key = ca.map(|c| c.pem().to_vec()).unwrap_or_default();
    let mut clients = HTTP.lock().expect("http client lock");
    if let Some(client) = clients.get(&key) {
        return Ok(client.clone());
    }
    let mut builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("teleport-mattermost/", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = ca {
        let certs = reqwest::Certificate::from_pem_bundle(ca.pem()).map_err(|e| {
            MattermostError::Config(format!("the Mattermost CA bundle cannot be used: {e}"))
        })?;
        builder = builder.tls_certs_merge(certs);
    }
    let client = builder
        .build()
        .map_err(|e| MattermostError::Config(format!("cannot build the HTTP client: {e}")))?;
    clients.insert(key, client.clone());
    Ok(client)
}

impl MattermostClient {
    pub(super) async fn get<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        what: Option<&str>,
    ) -> Result<T, MattermostError> {
        self.call(Call::get(self.url(segments), what, MAX_ANSWER_BYTES))
            .await
    }

    /// `{base}/api/v4/{segments…}`, each segment percent-encoded (emails, odd usernames).
    pub(super) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.base.clone();
        url.set_query(None);
        url.set_fragment(None);
        url.path_segments_mut()
            .expect("checked in new: the base URL can take a path")
            .pop_if_empty()
            .extend(["api", "v4"])
            .extend(segments);
        url
    }

    /// Sends `call`, repeating it per the retry policy, and decodes the JSON answer.
    pub(super) async fn call<T: DeserializeOwned>(
        &self,
        call: Call<'_>,
    ) -> Result<T, MattermostError> {
        let inner = &*self.inner;
        let endpoint = endpoint(&call.method, &call.url);
        let max_attempts = inner.retry.max_attempts.max(1);
        let mut delays = retry::backoff(&inner.retry);
        let mut attempt = 0;
        let mut refreshed_token = false;
        loop {
            attempt += 1;
            if let Some(limiter) = &inner.limiter {
                limiter.acquire().await;
            }
            let token = inner.token.token().await?;
            let failure = match self.attempt(&call, &token).await {
                Ok((status, body)) => return decode(&endpoint, status, &body, call.idempotent),
                Err(failure) => failure,
            };

            let (wait, reason) = match failure {
                Failure::TooLarge => {
                    return Err(MattermostError::TooLarge {
                        endpoint,
                        limit: call.max_answer,
                        outcome_unknown: !call.idempotent,
                    });
                }
                Failure::Transport(err) => {
                    let gone_out = !err.is_connect();
                    if !retry::transport_retryable(&err, call.idempotent) || attempt >= max_attempts
                    {
                        return Err(MattermostError::Transport {
                            endpoint,
                            outcome_unknown: !call.idempotent && gone_out,
                            source: Arc::new(err),
                        });
                    }
                    let wait = delays.next().unwrap_or(inner.retry.max_delay);
                    (wait, format!("transport error: {err}"))
                }
                Failure::Status {
                    status,
                    headers,
                    body,
                } => {
                    let code = status.as_u16();
                    if code == 429 {
                        inner.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                    }
                    if code == 401 && !refreshed_token {
                        refreshed_token = true;
                        if inner.token.refresh_after_rejection(&token).await {
                            // The token file was rotated under us: one more try, right away,
                            // not counted against the policy.
                            attempt -= 1;
                            continue;
                        }
                    }
                    if !retry::status_retryable(code, call.idempotent) {
                        return Err(status_error(endpoint, code, &body, &call));
                    }
                    if attempt >= max_attempts {
                        return Err(if code == 429 {
                            MattermostError::RateLimited {
                                endpoint,
                                attempts: attempt,
                            }
                        } else {
                            status_error(endpoint, code, &body, &call)
                        });
                    }
                    let backoff = delays.next().unwrap_or(inner.retry.max_delay);
                    let wait = if code == 429 {
                        inner
                            .limiter
                            .as_ref()
                            .and_then(|l| l.wait_after_429())
                            .or_else(|| retry::server_wait(&headers, inner.retry.max_delay))
                            .unwrap_or(backoff)
                    } else {
                        backoff
                    };
                    let api = ApiError::from_body(code, &body);
                    (wait, format!("{code}: {}", api.message))
                }
            };
            inner.counters.retries.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                endpoint = %endpoint,
                attempt,
                max_attempts,
                wait_ms = wait.as_millis() as u64,
                reason = %reason,
                "Mattermost call failed; retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// One HTTP exchange. `Ok` only for a 2xx whose body was read completely.
    pub(super) async fn attempt(
        &self,
        call: &Call<'_>,
        token: &str,
    ) -> Result<(u16, Vec<u8>), Failure> {
        let mut request = self
            .inner
            .http
            .request(call.method.clone(), call.url.clone())
            .bearer_auth(token)
            .header(ACCEPT, "application/json");
        if let Some(body) = &call.body {
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        let sent = request.send().await;
        if let Some(limiter) = &self.inner.limiter {
            let answered = sent.as_ref().ok();
            limiter.observe(
                answered.map(|r| r.headers()),
                answered.is_some_and(|r| r.status() == StatusCode::TOO_MANY_REQUESTS),
            );
        }
        let mut response = sent.map_err(Failure::Transport)?;
        let status = response.status();
        let headers = response.headers().clone();
        tracing::debug!(method = %call.method, path = call.url.path(), status = status.as_u16(), "Mattermost call");
        if status.is_success() {
            match read_capped(&mut response, call.max_answer).await {
                Ok(Some(body)) => Ok((status.as_u16(), body)),
                Ok(None) => Err(Failure::TooLarge),
                Err(e) => Err(Failure::Transport(e)),
            }
        } else {
            // The error body only improves the message: read a bounded prefix, and losing it
            // is no reason to fail differently.
            let body = match read_capped(&mut response, MAX_ERROR_BODY_BYTES).await {
                Ok(Some(body)) => body,
                _ => Vec::new(),
            };
            Err(Failure::Status {
                status,
                headers,
                body,
            })
        }
    }
}

/// Reads at most `limit` bytes of the body; `None` when it is longer. A declared length over
/// the limit is refused before reading anything.
async fn read_capped(
    response: &mut reqwest::Response,
    limit: usize,
) -> Result<Option<Vec<u8>>, reqwest::Error> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Ok(None);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

pub(super) fn endpoint(method: &Method, url: &Url) -> String {
    format!("{method} {}", url.path())
}

fn decode<T: DeserializeOwned>(
    endpoint: &str,
    status: u16,
    body: &[u8],
    idempotent: bool,
) -> Result<T, MattermostError> {
    serde_json::from_slice(body).map_err(|e| MattermostError::Decode {
        endpoint: endpoint.to_string(),
        reason: format!("{status} with a body that is not the expected JSON: {e}"),
        // A create that succeeded but whose answer we cannot read did create something.
        outcome_unknown: !idempotent,
    })
}

fn status_error(endpoint: String, status: u16, body: &[u8], call: &Call<'_>) -> MattermostError {
    let api = Box::new(ApiError::from_body(status, body));
    match (status, call.what) {
        (401, _) => MattermostError::Unauthorized { endpoint, api },
        (404, Some(what)) => MattermostError::NotFound {
            what: what.to_string(),
            endpoint,
            api,
        },
        _ => MattermostError::Api {
            endpoint,
            status,
            api,
            outcome_unknown: !call.idempotent && status >= 500,
        },
    }
}
