//! The client for one bot: the REST API v4 endpoints the plugin uses, over the call path of
//! `transport` and the lookup cache of `cache`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use reqwest::Method;
use url::Url;

use super::cache::{CACHE_BYTES, CACHE_TTL, CacheKey, Cached, weight};
use super::error::MattermostError;
use super::limiter::{self, Limiter};
use super::model::{Channel, NewPost, Post, PostList, ServerVersion, Team, User};
use super::token::TokenProvider;
use super::transport::{
    Call, Counters, MAX_ANSWER_BYTES, MAX_POST_LIST_BYTES, endpoint, shared_http,
};
use crate::settings::{MattermostSettings, RetryPolicy};

/// How long a membership found is trusted: a person removed from an approver channel loses the
/// right to decide within this, and one added gains it at once (a non-member is never cached).
pub const MEMBERSHIP_TTL: std::time::Duration = std::time::Duration::from_secs(10);
/// Most memberships remembered at once.
const MEMBERSHIP_ENTRIES: u64 = 10_000;

/// Counters of the client's retry behaviour, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ClientStats {
    /// Attempts repeated after a 429, 5xx or transport error.
    pub retries: u64,
    /// 429 answers received.
    pub rate_limited: u64,
    /// The server's rate limit as learned from its answers, in calls per second.
    pub learned_rate: Option<f64>,
    /// The server's bucket now (`X-RateLimit-Limit` and `-Remaining` of the last answer, or
    /// full once its reset has passed); `None` until a limited server answered.
    pub bucket: Option<(u32, u32)>,
}

/// The facts of a server's client config the plugin uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct ServerConfig {
    /// `MaxPostSize`, when it is a sensible number.
    pub(super) max_post_chars: Option<usize>,
    /// `Version`, e.g. "11.4.0".
    pub(super) version: Option<ServerVersion>,
}

impl ServerConfig {
    /// Reads the fields from a client config; Mattermost sends every value as a string.
    pub(super) fn from_client_config(
        config: &std::collections::HashMap<String, serde_json::Value>,
    ) -> Self {
        let text = |key: &str| {
            config.get(key).and_then(|v| match v {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
        };
        ServerConfig {
            max_post_chars: text("MaxPostSize")
                .and_then(|s| s.trim().parse::<usize>().ok())
                .filter(|n| *n >= 1000),
            version: text("Version").and_then(|v| ServerVersion::parse(&v)),
        }
    }
}

/// A Mattermost REST API v4 client for one bot. Cheap to clone: clones share the connection
/// pool, the lookup cache, the counters and the token.
#[derive(Clone)]
pub struct MattermostClient {
    pub(super) inner: Arc<Inner>,
}

/// What every clone of a client shares.
pub(super) struct Inner {
    pub(super) base: Url,
    pub(super) http: reqwest::Client,
    pub(super) token: TokenProvider,
    pub(super) retry: RetryPolicy,
    pub(super) limiter: Option<Arc<Limiter>>,
    pub(super) cache: moka::future::Cache<CacheKey, Cached>,
    /// Memberships found, `(channel id, user id)`, trusted for [`MEMBERSHIP_TTL`] only.
    pub(super) members: moka::future::Cache<(String, String), ()>,
    pub(super) counters: Counters,
    /// What the server's client config says, asked once.
    pub(super) config: tokio::sync::OnceCell<ServerConfig>,
}

impl std::fmt::Debug for MattermostClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MattermostClient")
            .field("base", &self.inner.base.as_str())
            .finish_non_exhaustive()
    }
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
                members: moka::future::Cache::builder()
                    .max_capacity(MEMBERSHIP_ENTRIES)
                    .time_to_live(MEMBERSHIP_TTL)
                    .build(),
                counters: Counters::default(),
                config: tokio::sync::OnceCell::new(),
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
            bucket: self
                .inner
                .limiter
                .as_ref()
                .and_then(|l| l.bucket())
                .map(|b| (b.limit, b.remaining)),
        }
    }

    /// How long created posts took, pacing waits and retries included (shared by clones).
    pub fn posting_seconds(&self) -> prometheus_client::metrics::histogram::Histogram {
        self.inner.counters.posting.clone()
    }

    /// Forgets every cached lookup (e.g. after a team or channel was renamed).
    pub fn clear_cache(&self) {
        self.inner.cache.invalidate_all();
    }

    /// The longest post the server takes, in characters: `MaxPostSize` of its client config
    /// (16383 on current servers). A server that does not say gives
    /// [`crate::message::DEFAULT_MAX_POST_CHARS`], which every server takes.
    pub async fn max_post_chars(&self) -> usize {
        self.server_config()
            .await
            .max_post_chars
            .unwrap_or(crate::message::DEFAULT_MAX_POST_CHARS)
    }

    /// The server's version, from the `Version` of its client config; `None` when it did not
    /// say (or could not be asked).
    pub async fn server_version(&self) -> Option<ServerVersion> {
        self.server_config().await.version
    }

    /// What the server's client config (`GET /api/v4/config/client?format=old`) says about
    /// the limits the plugin must fit. A bot cannot read the server's own config, but every
    /// authenticated caller gets this one (`server/channels/api4/config.go`, `getClientConfig`;
    /// the fields are written by `server/config/client.go`). Asked once: an answer is kept for
    /// the client's life, a failure is not (the next use asks again).
    async fn server_config(&self) -> ServerConfig {
        let answer = self
            .inner
            .config
            .get_or_try_init(|| async {
                let mut url = self.url(&["config", "client"]);
                url.query_pairs_mut().append_pair("format", "old");
                let config: std::collections::HashMap<String, serde_json::Value> =
                    self.call(Call::get(url, None, MAX_ANSWER_BYTES)).await?;
                let config = ServerConfig::from_client_config(&config);
                if config.max_post_chars.is_none() {
                    tracing::info!(
                        "Mattermost did not say its MaxPostSize; fitting posts to {} characters",
                        crate::message::DEFAULT_MAX_POST_CHARS
                    );
                }
                Ok::<_, MattermostError>(config)
            })
            .await;
        match answer {
            Ok(config) => config.clone(),
            Err(e) => {
                tracing::info!(error = %e, "could not read Mattermost's client config");
                ServerConfig::default()
            }
        }
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

    /// Whether a user is a member of a channel
    /// (`GET /api/v4/channels/{channel_id}/members/{user_id}`: 200 a member, 404 not). The bot
    /// must be able to read the channel (be a member of it); otherwise Mattermost answers 403,
    /// which is an error here, never a "no". A membership found is trusted for
    /// [`MEMBERSHIP_TTL`]; a non-member is asked again every time.
    pub async fn is_channel_member(
        &self,
        channel_id: &str,
        user_id: &str,
    ) -> Result<bool, MattermostError> {
        let key = (channel_id.to_string(), user_id.to_string());
        if self.inner.members.get(&key).await.is_some() {
            return Ok(true);
        }
        let what = format!("membership of user {user_id:?} in channel {channel_id:?}");
        let answer: Result<serde_json::Value, MattermostError> = self
            .get(&["channels", channel_id, "members", user_id], Some(&what))
            .await;
        match answer {
            Ok(_) => {
                self.inner.members.insert(key, ()).await;
                Ok(true)
            }
            Err(e) if e.status() == Some(404) => Ok(false),
            Err(e) => Err(e),
        }
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
        let started = std::time::Instant::now();
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
        self.inner
            .counters
            .posting
            .observe(started.elapsed().as_secs_f64());
        Ok(created)
    }

    /// Opens an interactive dialog for the user a button press came from
    /// (`POST /api/v4/actions/dialogs/open`). `trigger_id` is the press's; Mattermost accepts
    /// it only for a while after the press (`crate::callback::dialog::trigger_lifetime`), so
    /// the caller bounds the whole call by what is left of that.
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

    /// One page of a channel's posts, newest first (`GET /api/v4/channels/{id}/posts?page=&
    /// per_page=`; Mattermost serves at most 200 a page). Replies are included; deleted posts
    /// are not.
    ///
    /// Paging is how the plugin looks for a post it may have made: `?since=` returns at most
    /// 1,000 changed posts and, past that, leaves out the newest (`GetPostsSince` has
    /// `LIMIT 1000` without an order, read through the (channelid, updateat) index), and the
    /// server may answer it from its last-post-time cache.
    pub async fn channel_posts_page(
        &self,
        channel_id: &str,
        page: u32,
        per_page: u32,
    ) -> Result<Vec<Post>, MattermostError> {
        let mut url = self.url(&["channels", channel_id, "posts"]);
        url.query_pairs_mut()
            .append_pair("page", &page.to_string())
            .append_pair("per_page", &per_page.clamp(1, 200).to_string());
        let endpoint = endpoint(&Method::GET, &url);
        let list: PostList = self.call(Call::get(url, None, MAX_POST_LIST_BYTES)).await?;
        list.into_ordered().map_err(|e| MattermostError::Decode {
            endpoint,
            reason: e.to_string(),
            outcome_unknown: false,
        })
    }
}
