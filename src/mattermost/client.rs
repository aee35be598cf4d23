//! The HTTP client: one call path that authenticates, rate-limits, retries and types errors,
//! and the endpoints on top of it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use url::Url;

use super::error::{ApiError, MattermostError};
use super::limiter::{self, Limiter};
use super::model::{Channel, NewPost, Post, PostList, Team, User};
use super::retry;
use super::token::TokenProvider;
use crate::settings::{CaBundle, MattermostSettings, RetryPolicy};

/// How long a looked-up team, channel or user is trusted. Renames and deactivations are rare;
/// five minutes bounds how long a stale answer can live.
const CACHE_TTL: Duration = Duration::from_secs(5 * 60);
/// Upper bound of the lookup cache, in (estimated) bytes: entries are weighed by size, so
/// neither a flood of distinct reviewers nor a few huge answers can grow memory without limit.
const CACHE_BYTES: u64 = 8 * 1024 * 1024;
/// The largest answer read from Mattermost for one call. A user, team, channel or post is a
/// few KiB; the cap keeps a hostile or broken server from making the plugin buffer gigabytes.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;
/// The largest page of posts (`channels/{id}/posts`): up to 1000 posts of up to 16383
/// characters of message plus props.
const MAX_POST_LIST_BYTES: usize = 64 * 1024 * 1024;
/// Error bodies only improve the message: read at most this much of them.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Counters of the client's retry behaviour, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ClientStats {
    /// Attempts repeated after a 429, 5xx or transport error.
    pub retries: u64,
    /// 429 answers received.
    pub rate_limited: u64,
    /// The server's rate limit as learned from its answers, in calls per second.
    pub learned_rate: Option<f64>,
}

#[derive(Debug, Default)]
struct Counters {
    retries: AtomicU64,
    rate_limited: AtomicU64,
}

/// What a lookup is cached under. Emails and usernames are case-insensitive in Mattermost.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum CacheKey {
    Team(String),
    Channel(String, String),
    UserByEmail(String),
    UserByUsername(String),
    UserById(String),
    Direct(String, String),
}

#[derive(Debug, Clone)]
enum Cached {
    Team(Team),
    Channel(Channel),
    User(User),
}

/// A Mattermost REST API v4 client for one bot. Cheap to clone: clones share the connection
/// pool, the lookup cache, the counters and the token.
#[derive(Clone)]
pub struct MattermostClient {
    inner: Arc<Inner>,
}

struct Inner {
    base: Url,
    http: reqwest::Client,
    token: TokenProvider,
    retry: RetryPolicy,
    limiter: Option<Arc<Limiter>>,
    cache: moka::future::Cache<CacheKey, Cached>,
    counters: Counters,
    max_post: tokio::sync::OnceCell<usize>,
}

impl std::fmt::Debug for MattermostClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MattermostClient")
            .field("base", &self.inner.base.as_str())
            .finish_non_exhaustive()
    }
}

/// One request to make, possibly several times.
struct Call<'a> {
    method: Method,
    url: Url,
    body: Option<Vec<u8>>,
    /// Safe to repeat after the server may have acted on it.
    idempotent: bool,
    /// For lookups: what a 404 means, e.g. `team "ops"`.
    what: Option<&'a str>,
    /// The largest answer accepted.
    max_answer: usize,
}

/// Why one attempt failed.
enum Failure {
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
fn shared_http(ca: Option<&CaBundle>) -> Result<reqwest::Client, MattermostError> {
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
    /// Builds a client for `settings.url` with the settings' token, retry policy and rate
    /// limit. Makes no request; call [`MattermostClient::me`] to check the connection.
    pub fn new(settings: &MattermostSettings) -> Result<Self, MattermostError> {
        let base = settings.url.clone();
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(MattermostError::Config(format!(
                "Mattermost URL {base} must be an http:// or https:// URL"
            )));
        }
        // The process installs ring at start-up; a library user who forgot should get a
        // working client rather than a panic inside reqwest.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let http = shared_http(settings.ca_bundle.as_ref())?;
        let limiter_key = base.as_str().trim_end_matches('/').to_string();
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                token: TokenProvider::new(&settings.token)?,
                retry: settings.retry,
                limiter: limiter::for_server(&limiter_key, settings.rate_limit),
                cache: moka::future::Cache::builder()
                    .max_capacity(CACHE_BYTES)
                    .weigher(|key: &CacheKey, value: &Cached| weight(key, value))
                    .time_to_live(CACHE_TTL)
                    .build(),
                counters: Counters::default(),
                max_post: tokio::sync::OnceCell::new(),
                base,
            }),
        })
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    /// Retry and 429 counts since the client was built.
    pub fn stats(&self) -> ClientStats {
        ClientStats {
            retries: self.inner.counters.retries.load(Ordering::Relaxed),
            rate_limited: self.inner.counters.rate_limited.load(Ordering::Relaxed),
            learned_rate: self.inner.limiter.as_ref().and_then(|l| l.learned_rate()),
        }
    }

    /// Forgets every cached lookup (e.g. after a team or channel was renamed).
    pub fn clear_cache(&self) {
        self.inner.cache.invalidate_all();
    }

    /// The longest post the server takes, in characters: `MaxPostSize` of its client config
    /// (`GET /api/v4/config/client?format=old`; 16383 on current servers), asked once. A
    /// server that does not say (or an error) gives [`crate::message::DEFAULT_MAX_POST_CHARS`],
    /// which every server takes.
    pub async fn max_post_chars(&self) -> usize {
        *self
            .inner
            .max_post
            .get_or_init(|| async {
                let mut url = self.url(&["config", "client"]);
                url.query_pairs_mut().append_pair("format", "old");
                let answer: Result<std::collections::HashMap<String, serde_json::Value>, _> = self
                    .call(Call {
                        method: Method::GET,
                        url,
                        body: None,
                        idempotent: true,
                        what: None,
                        max_answer: MAX_ANSWER_BYTES,
                    })
                    .await;
                let size = answer.ok().and_then(|config| {
                    let value = config.get("MaxPostSize")?;
                    value
                        .as_str()
                        .and_then(|s| s.parse::<usize>().ok())
                        .or_else(|| value.as_u64().map(|n| n as usize))
                });
                match size {
                    Some(n) if n >= 1000 => n,
                    _ => {
                        tracing::info!(
                            "Mattermost did not say its MaxPostSize; fitting posts to {} characters",
                            crate::message::DEFAULT_MAX_POST_CHARS
                        );
                        crate::message::DEFAULT_MAX_POST_CHARS
                    }
                }
            })
            .await
    }

    /// The bot's own user (`GET /api/v4/users/me`). Never cached: this is the health check.
    pub async fn me(&self) -> Result<User, MattermostError> {
        self.get(&["users", "me"], None).await
    }

    /// A team by its URL name (`GET /api/v4/teams/name/{team}`). Cached.
    pub async fn team_by_name(&self, team: &str) -> Result<Team, MattermostError> {
        let key = CacheKey::Team(team.to_string());
        let found = self
            .cached(key, async {
                let what = format!("team {team:?}");
                self.get(&["teams", "name", team], Some(&what))
                    .await
                    .map(Cached::Team)
            })
            .await?;
        match found {
            Cached::Team(t) => Ok(t),
            other => unreachable!("team key holds {other:?}"),
        }
    }

    /// A channel by team and channel URL names
    /// (`GET /api/v4/teams/name/{team}/channels/name/{channel}`). Cached.
    pub async fn channel_by_names(
        &self,
        team: &str,
        channel: &str,
    ) -> Result<Channel, MattermostError> {
        let key = CacheKey::Channel(team.to_string(), channel.to_string());
        let found = self
            .cached(key, async {
                let what = format!("channel {channel:?} in team {team:?}");
                self.get(
                    &["teams", "name", team, "channels", "name", channel],
                    Some(&what),
                )
                .await
                .map(Cached::Channel)
            })
            .await?;
        Self::channel(found)
    }

    /// A user by e-mail (`GET /api/v4/users/email/{email}`). Cached.
    pub async fn user_by_email(&self, email: &str) -> Result<User, MattermostError> {
        let key = CacheKey::UserByEmail(email.to_lowercase());
        let what = format!("user with e-mail {email:?}");
        self.cached_user(key, &["users", "email", email], what)
            .await
    }

    /// A user by username, without `@` (`GET /api/v4/users/username/{username}`). Cached.
    pub async fn user_by_username(&self, username: &str) -> Result<User, MattermostError> {
        let username = username.strip_prefix('@').unwrap_or(username);
        let key = CacheKey::UserByUsername(username.to_lowercase());
        let what = format!("user named {username:?}");
        self.cached_user(key, &["users", "username", username], what)
            .await
    }

    /// A user by id (`GET /api/v4/users/{id}`). Cached.
    pub async fn user_by_id(&self, id: &str) -> Result<User, MattermostError> {
        let key = CacheKey::UserById(id.to_string());
        let what = format!("user with id {id:?}");
        self.cached_user(key, &["users", id], what).await
    }

    /// The direct-message channel between the bot and a user
    /// (`POST /api/v4/channels/direct` with `[bot_user_id, user_id]`). Mattermost creates it
    /// on first use and returns the same channel afterwards; cached.
    pub async fn direct_channel(
        &self,
        bot_user_id: &str,
        user_id: &str,
    ) -> Result<Channel, MattermostError> {
        let (a, b) = if bot_user_id <= user_id {
            (bot_user_id, user_id)
        } else {
            (user_id, bot_user_id)
        };
        let key = CacheKey::Direct(a.to_string(), b.to_string());
        let found = self
            .cached(key, async {
                let body = serde_json::to_vec(&[bot_user_id, user_id]).expect("two strings");
                self.call(Call {
                    method: Method::POST,
                    url: self.url(&["channels", "direct"]),
                    body: Some(body),
                    // Mattermost answers with the existing channel when it already exists.
                    idempotent: true,
                    what: None,
                    max_answer: MAX_ANSWER_BYTES,
                })
                .await
                .map(Cached::Channel)
            })
            .await?;
        Self::channel(found)
    }

    /// Creates a post (`POST /api/v4/posts`).
    ///
    /// Not idempotent, so it is repeated only when the server surely did not act: on 429 and
    /// when the connection could not be made. After a 5xx, a timeout or a lost answer the
    /// error's [`MattermostError::outcome_unknown`] is true: the post may exist, so look for
    /// it (e.g. with [`MattermostClient::channel_posts_since`]) instead of posting again.
    pub async fn create_post(&self, post: &NewPost) -> Result<Post, MattermostError> {
        let body = serde_json::to_vec(post).expect("a post serializes");
        let url = self.url(&["posts"]);
        let endpoint = endpoint(&Method::POST, &url);
        let created: Post = self
            .call(Call {
                method: Method::POST,
                url,
                body: Some(body),
                idempotent: false,
                what: None,
                max_answer: MAX_ANSWER_BYTES,
            })
            .await?;
        // A success without the post's id confirms nothing: recording it would leave the real
        // post (if any) with live buttons forever. The caller looks for it by its marker.
        if created.id.is_empty() || created.channel_id != post.channel_id {
            return Err(MattermostError::Decode {
                endpoint,
                reason: format!(
                    "the answer does not describe the post that was sent (id {:?}, channel {:?})",
                    created.id, created.channel_id
                ),
                outcome_unknown: true,
            });
        }
        Ok(created)
    }

    /// Opens an interactive dialog for the user a button press came from
    /// (`POST /api/v4/actions/dialogs/open`). `trigger_id` is the press's; Mattermost accepts
    /// it for 3 seconds after the press, so this is tried once, never repeated.
    pub async fn open_dialog(
        &self,
        trigger_id: &str,
        url: &Url,
        dialog: &serde_json::Value,
    ) -> Result<(), MattermostError> {
        let body = serde_json::to_vec(&serde_json::json!({
            "trigger_id": trigger_id,
            "url": url.as_str(),
            "dialog": dialog,
        }))
        .expect("a dialog serializes");
        let _: serde_json::Value = self
            .call(Call {
                method: Method::POST,
                url: self.url(&["actions", "dialogs", "open"]),
                body: Some(body),
                idempotent: false,
                what: None,
                max_answer: MAX_ANSWER_BYTES,
            })
            .await?;
        Ok(())
    }

    /// Replaces a post's message and props (`PUT /api/v4/posts/{id}`). Props not sent are
    /// removed, so send the complete set.
    pub async fn update_post(&self, post: &Post) -> Result<Post, MattermostError> {
        let body = serde_json::to_vec(post).expect("a post serializes");
        self.call(Call {
            method: Method::PUT,
            url: self.url(&["posts", &post.id]),
            body: Some(body),
            idempotent: true,
            what: None,
            max_answer: MAX_ANSWER_BYTES,
        })
        .await
    }

    /// Posts of a channel created or changed after `since_ms` (milliseconds since the epoch),
    /// newest first as Mattermost orders them
    /// (`GET /api/v4/channels/{id}/posts?since=`). Mattermost returns at most 1000.
    pub async fn channel_posts_since(
        &self,
        channel_id: &str,
        since_ms: i64,
    ) -> Result<Vec<Post>, MattermostError> {
        let mut url = self.url(&["channels", channel_id, "posts"]);
        // `since=0` would make Mattermost return the latest page instead of "everything".
        url.query_pairs_mut()
            .append_pair("since", &since_ms.max(1).to_string());
        let endpoint = endpoint(&Method::GET, &url);
        let list: PostList = self
            .call(Call {
                method: Method::GET,
                url,
                body: None,
                idempotent: true,
                what: None,
                max_answer: MAX_POST_LIST_BYTES,
            })
            .await?;
        list.into_ordered().map_err(|e| MattermostError::Decode {
            endpoint,
            reason: e.to_string(),
            outcome_unknown: false,
        })
    }

    fn channel(found: Cached) -> Result<Channel, MattermostError> {
        match found {
            Cached::Channel(c) => Ok(c),
            other => unreachable!("channel key holds {other:?}"),
        }
    }

    async fn cached_user(
        &self,
        key: CacheKey,
        segments: &[&str],
        what: String,
    ) -> Result<User, MattermostError> {
        let found = self
            .cached(key, async {
                self.get(segments, Some(&what)).await.map(Cached::User)
            })
            .await?;
        match found {
            Cached::User(u) => Ok(u),
            other => unreachable!("user key holds {other:?}"),
        }
    }

    /// Looks `key` up in the cache, or runs `fetch` once for all concurrent callers. Errors
    /// are handed to every waiting caller and not cached.
    async fn cached(
        &self,
        key: CacheKey,
        fetch: impl Future<Output = Result<Cached, MattermostError>>,
    ) -> Result<Cached, MattermostError> {
        self.inner
            .cache
            .try_get_with(key, fetch)
            .await
            .map_err(|e| (*e).clone())
    }

    async fn get<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        what: Option<&str>,
    ) -> Result<T, MattermostError> {
        self.call(Call {
            method: Method::GET,
            url: self.url(segments),
            body: None,
            idempotent: true,
            what,
            max_answer: MAX_ANSWER_BYTES,
        })
        .await
    }

    /// `{base}/api/v4/{segments…}`, each segment percent-encoded (emails, odd usernames).
    fn url(&self, segments: &[&str]) -> Url {
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
    async fn call<T: DeserializeOwned>(&self, call: Call<'_>) -> Result<T, MattermostError> {
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
    async fn attempt(&self, call: &Call<'_>, token: &str) -> Result<(u16, Vec<u8>), Failure> {
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

/// Roughly the bytes a cached lookup holds, for the cache's byte bound.
fn weight(key: &CacheKey, value: &Cached) -> u32 {
    let key_len = match key {
        CacheKey::Team(a)
        | CacheKey::UserByEmail(a)
        | CacheKey::UserByUsername(a)
        | CacheKey::UserById(a) => a.len(),
        CacheKey::Channel(a, b) | CacheKey::Direct(a, b) => a.len() + b.len(),
    };
    let value_len = match value {
        Cached::Team(t) => t.id.len() + t.name.len() + t.display_name.len(),
        Cached::Channel(c) => c.id.len() + c.name.len() + c.display_name.len() + c.team_id.len(),
        Cached::User(u) => {
            u.id.len()
                + u.username.len()
                + u.email.len()
                + u.first_name.len()
                + u.last_name.len()
                + u.nickname.len()
        }
    };
    // Per-entry overhead of the cache, the key and the value structs.
    u32::try_from(key_len + value_len + 256).unwrap_or(u32::MAX)
}

fn endpoint(method: &Method, url: &Url) -> String {
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
