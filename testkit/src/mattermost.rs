//! A Mattermost server double: an axum server on 127.0.0.1 that answers the REST API v4
//! endpoints the bridge uses the way Mattermost does, injects failures on demand, and
//! presses buttons by POSTing to their integration URL exactly as the Mattermost server
//! does.
//!
//! Behaviour taken from Mattermost's source (`mattermost/mattermost`):
//! - errors are `model.AppError` JSON `{id, message, detailed_error, request_id,
//!   status_code}`, except the rate limiter's 429, which is the text `limit exceeded` with
//!   `X-RateLimit-Limit/Remaining/Reset` and `Retry-After` (`server/channels/app/ratelimit.go`);
//! - posts get 26-character ids, `from_bot: "true"` for bot authors, ids for actions that lack
//!   one, and come back with every action's `integration` stripped
//!   (`server/public/model/post.go`, `integration_action.go`);
//! - posting to a channel that does not exist, or that the bot may not post in, is a 403
//!   permission error, as is editing a post that does not exist
//!   (`server/channels/api4/post.go`, `post_utils.go`); membership is in [`members`];
//! - a message longer than 16383 characters is a 400
//!   `model.post.is_valid.message_length.app_error`;
//! - `PUT /posts/{id}` needs the body's `id` to equal the path's and replaces message and
//!   props wholesale;
//! - `GET /channels/{id}/posts?since=` lists at most 1,000 posts with `update_at > since`
//!   (the 1,000 changed first), newest first; without `since`, `page` and `per_page` (at most
//!   200) page through the channel's posts newest first;
//! - a button press sends `user_id, user_name, channel_id, channel_name, team_id,
//!   team_domain, post_id, trigger_id, type, data_source, context` and applies the reply's
//!   `update` keeping the post's id, channel, author and pinned state
//!   (`server/channels/app/integration_action.go`).
//!
//! It plays Mattermost 11.4.0 unless told to play another version
//! ([`MattermostDouble::set_version`], e.g. 6.7.2); what differs between versions (trigger
//! lifetime, a dialog submission's team, the post edit time limit, action validation, post
//! priority and its licence) is in [`line`], each with its source.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt as _;
use axum::{Json, Router};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use teleport_mattermost::mattermost::{Channel, Team, User};
use tokio::sync::oneshot;

mod dialogs;
mod line;
mod members;
pub use dialogs::{ACTION_INTEGRATION_ERROR, DialogAnswer, OpenedDialog};
pub use line::{V6_7_2, V11_4_0, V11_10_0, action_problems};

/// Mattermost's `PostMessageMaxRunesV2` (65535 bytes / 4): the longest message, in
/// characters, a current server accepts.
pub const MAX_MESSAGE_CHARS: usize = 16383;

/// Mattermost keeps these props across a button's `update` (`model.PostActionRetainPropKeys`).
const RETAINED_PROPS: [&str; 3] = ["from_webhook", "override_username", "override_icon_url"];

/// The alphabet of Mattermost ids (`model.NewId`: a UUID in base32 with this alphabet).
const ID_ALPHABET: &[u8; 32] = b"ybndrfg8ejkmcpqxot1uwisza345h769";

/// A post as the double stores it (the fields of `model.Post` that matter here).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Post {
    /// 26-character id.
    pub id: String,
    /// Creation time, ms.
    pub create_at: i64,
    /// Last change, ms.
    pub update_at: i64,
    /// Last edit of the message or attachments, ms; 0 if never edited.
    pub edit_at: i64,
    /// Deletion time, ms; 0 while the post exists.
    pub delete_at: i64,
    /// Pinned to the channel.
    pub is_pinned: bool,
    /// Author.
    pub user_id: String,
    /// Channel.
    pub channel_id: String,
    /// Thread root; empty for a root post.
    pub root_id: String,
    /// Always empty (Mattermost clears it on save).
    pub original_id: String,
    /// Markdown text.
    pub message: String,
    /// Post type; empty for an ordinary post.
    #[serde(rename = "type")]
    pub post_type: String,
    /// Properties, with `attachments` and their actions.
    pub props: Map<String, Value>,
    /// Hashtags found in the message (not computed by the double).
    pub hashtags: String,
    /// Attached files (none in the double).
    pub file_ids: Vec<String>,
    /// Client-side id of a pending post.
    pub pending_post_id: String,
    /// What the server keeps of the post's `metadata`: its `priority`, on servers that have
    /// one.
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
}

impl Post {
    /// True when an attachment carries at least one action: the post has buttons.
    pub fn has_buttons(&self) -> bool {
        self.props
            .get("attachments")
            .and_then(Value::as_array)
            .is_some_and(|atts| {
                atts.iter().any(|att| {
                    att.get("actions")
                        .and_then(Value::as_array)
                        .is_some_and(|actions| !actions.is_empty())
                })
            })
    }
}

/// Disables Nagle on accepted connections: with it, a response written in two pieces waits for
/// the peer's delayed ACK (~40 ms), which would swamp every latency measured over the double.
pub fn no_delay(stream: &mut tokio::net::TcpStream) {
    let _ = stream.set_nodelay(true);
}

/// A post the double just created, with the instant it was stored.
#[derive(Debug, Clone)]
pub struct CreatedPost {
    /// The stored post.
    pub post: Post,
    /// When it was stored.
    pub at: Instant,
}

/// One API call the double answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordedCall {
    /// HTTP method.
    pub method: String,
    /// Path without the query, e.g. `/api/v4/posts`.
    pub path: String,
    /// The query string, without `?` (empty if none).
    pub query: String,
    /// The JSON body (`Null` when there is none or it is not JSON).
    pub body: Value,
    /// The status the double answered.
    pub status: u16,
}

/// What pressing a button produced.
#[derive(Debug, Clone, PartialEq)]
pub struct PressOutcome {
    /// Status of the integration's answer (Mattermost shows the clicker an error unless 200).
    pub status: u16,
    /// The reply's `ephemeral_text`, shown only to the clicker.
    pub ephemeral_text: Option<String>,
    /// The reply body: JSON, or a JSON string holding the text when it was not JSON.
    pub body: Value,
}

/// A running Mattermost double. Clones share the server; it stops when the last clone is
/// dropped or on [`MattermostDouble::shutdown`].
#[derive(Clone)]
pub struct MattermostDouble {
    shared: Arc<Shared>,
    guard: Arc<StopGuard>,
}

struct Shared {
    addr: SocketAddr,
    /// Served over TLS.
    https: bool,
    /// Every post created, as it is stored, for tests and benches that wait on posts.
    created: tokio::sync::broadcast::Sender<CreatedPost>,
    state: Mutex<Server>,
    http: reqwest::Client,
}

/// Stops the server when dropped. Held only by `MattermostDouble` clones, never by the
/// server itself, so dropping the last handle really stops it.
struct StopGuard(Mutex<Option<oneshot::Sender<()>>>);

impl StopGuard {
    fn stop(&self) {
        if let Some(tx) = self.0.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for StopGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Default)]
struct Server {
    bot_token: String,
    bot_user_id: String,
    users: Vec<User>,
    teams: Vec<Team>,
    channels: Vec<Channel>,
    posts: Vec<Post>,
    post_index: HashMap<String, usize>,
    calls: Vec<RecordedCall>,
    /// Remaining injected 429s and the reset they announce.
    inject_429: Option<(usize, u64)>,
    /// Injected failures, answered in order.
    inject_status: VecDeque<u16>,
    /// Injected failures for one path only, answered in order.
    inject_on_path: HashMap<String, VecDeque<u16>>,
    lost_post_responses: usize,
    /// Answers that replace the server's own, for a hostile or broken server.
    answers: Vec<InjectedAnswer>,
    /// Calls held before they are served: `(method, path, calls left, delay)`.
    delays: Vec<(String, String, usize, Duration)>,
    /// Longest message accepted (`MaxPostSize` of the client config).
    max_post_size: usize,
    bucket: Option<Bucket>,
    /// Signatures of the trigger ids issued.
    signatures: std::collections::HashSet<String>,
    /// How old new trigger ids claim to be.
    trigger_age: Duration,
    /// Dialogs opened, oldest first.
    dialogs: Vec<dialogs::OpenedDialog>,
    /// Channel id → ids of its members (direct channels: their two users, implicitly).
    members: HashMap<String, std::collections::HashSet<String>>,
    /// The bot holds `create_post_public` and may post in public channels it is not in.
    bot_posts_all_public: bool,
    /// The version played, the server settings and the licence.
    line: line::Line,
    /// What 11.4 would have logged as invalid post props: `(post id, problem)`.
    invalid_props: Vec<(String, String)>,
}

/// A made-up answer to calls of one method and path.
struct InjectedAnswer {
    method: String,
    path: String,
    left: usize,
    status: u16,
    body: AnswerBody,
    /// Let the server carry out the call first, then answer this instead.
    act: bool,
}

/// The body of an injected answer.
#[derive(Clone)]
pub enum AnswerBody {
    /// These bytes.
    Bytes(bytes::Bytes),
    /// `size` bytes of a JSON user object with a huge username, streamed in 64 KiB chunks;
    /// `sent` counts what the client actually pulled.
    HugeUser {
        /// Total size.
        size: usize,
        /// Bytes handed to the connection so far.
        sent: Arc<std::sync::atomic::AtomicUsize>,
    },
}

impl AnswerBody {
    fn into_body(self) -> Body {
        match self {
            AnswerBody::Bytes(b) => Body::from(b),
            AnswerBody::HugeUser { size, sent } => {
                const CHUNK: usize = 64 * 1024;
                let head = br#"{"id":"huge","username":""#.to_vec();
                let chunks = (size / CHUNK).max(1);
                let stream = futures::stream::iter((0..chunks).map(move |i| {
                    let chunk = if i == 0 {
                        let mut c = head.clone();
                        c.resize(CHUNK, b'a');
                        c
                    } else if i + 1 == chunks {
                        let mut c = vec![b'a'; CHUNK - 2];
                        c.extend_from_slice(br#""}"#);
                        c
                    } else {
                        vec![b'a'; CHUNK]
                    };
                    sent.fetch_add(chunk.len(), std::sync::atomic::Ordering::SeqCst);
                    Ok::<_, std::io::Error>(bytes::Bytes::from(chunk))
                }));
                Body::from_stream(stream)
            }
        }
    }
}

impl Server {
    /// Records what 11.4 would log about `post`'s actions (from 11.0 on: 6.7.2 did not
    /// validate them).
    fn note_invalid_props(&mut self, post: &Post) {
        if self.line.version.major < 11 {
            return;
        }
        for problem in line::action_problems(&post.props) {
            self.invalid_props.push((post.id.clone(), problem));
        }
    }

    /// The direct channel of two users, created on first use. As in Mattermost, its id is
    /// random and its name is the two user ids, sorted, joined by `__`.
    fn direct_channel(&mut self, a: &str, b: &str) -> Channel {
        let name = direct_channel_name(a, b);
        if let Some(existing) = self.channels.iter().find(|c| c.name == name) {
            return existing.clone();
        }
        let channel = Channel {
            id: new_id(),
            name,
            team_id: String::new(),
            display_name: String::new(),
            channel_type: "D".into(),
        };
        self.channels.push(channel.clone());
        channel
    }
}

impl MattermostDouble {
    /// Starts the double on 127.0.0.1 with a bot user (`teleport-bot`) and its token.
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// Like [`start`](Self::start), over HTTPS with this certificate chain and key (PEM): a
    /// server behind an internal CA.
    pub async fn start_https(cert_pem: &str, key_pem: &str) -> Self {
        Self::start_with(Some((cert_pem.to_string(), key_pem.to_string()))).await
    }

    async fn start_with(tls: Option<(String, String)>) -> Self {
        // Button presses may go to an HTTPS callback; reqwest needs a crypto provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");

        let bot = User {
            id: new_id(),
            username: "teleport-bot".into(),
            email: "teleport-bot@localhost".into(),
            nickname: "Teleport".into(),
            is_bot: true,
            ..User::default()
        };
        let state = Server {
            bot_token: new_id(),
            bot_user_id: bot.id.clone(),
            users: vec![bot],
            max_post_size: MAX_MESSAGE_CHARS,
            ..Server::default()
        };
        let shared = Arc::new(Shared {
            addr,
            https: tls.is_some(),
            created: tokio::sync::broadcast::channel(65_536).0,
            state: Mutex::new(state),
            http: reqwest::Client::builder()
                // ServiceSettings.OutgoingIntegrationRequestsTimeout defaults to 30 s.
                .timeout(Duration::from_secs(30))
                .build()
                .expect("HTTP client for button presses"),
        });
        let (tx, rx) = oneshot::channel();
        let app = router(shared.clone());
        match tls {
            None => {
                tokio::spawn(async move {
                    let _ = axum::serve(listener.tap_io(no_delay), app)
                        .with_graceful_shutdown(async {
                            let _ = rx.await;
                        })
                        .await;
                });
            }
            Some((cert, key)) => {
                use rustls::pki_types::pem::PemObject as _;
                let chain = rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .expect("certificate PEM");
                let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes())
                    .expect("key PEM");
                let config = rustls::ServerConfig::builder()
                    .with_no_client_auth()
                    .with_single_cert(chain, key)
                    .expect("server TLS config");
                let stop = tokio_util::sync::CancellationToken::new();
                let stopper = stop.clone();
                tokio::spawn(async move {
                    let _ = rx.await;
                    stopper.cancel();
                });
                tokio::spawn(teleport_mattermost::http_server::serve_tls(
                    listener,
                    app,
                    teleport_mattermost::http_server::Limits::default(),
                    Arc::new(arc_swap::ArcSwap::from_pointee(config)),
                    stop,
                ));
            }
        }
        Self {
            shared,
            guard: Arc::new(StopGuard(Mutex::new(Some(tx)))),
        }
    }

    /// Stops the server now; later calls to it fail to connect.
    pub fn shutdown(&self) {
        self.guard.stop();
    }

    /// Every post created from now on, with the instant it was stored.
    pub fn subscribe_posts(&self) -> tokio::sync::broadcast::Receiver<CreatedPost> {
        self.shared.created.subscribe()
    }

    /// `http://127.0.0.1:PORT`, or `https://` when started with TLS.
    pub fn url(&self) -> url::Url {
        let scheme = if self.shared.https { "https" } else { "http" };
        url::Url::parse(&format!("{scheme}://{}", self.shared.addr)).expect("valid URL")
    }

    /// The bot's current token.
    pub fn bot_token(&self) -> String {
        self.state().bot_token.clone()
    }

    /// Rotates the bot token: the old one now gets 401.
    pub fn set_bot_token(&self, token: &str) {
        self.state().bot_token = token.to_string();
    }

    /// The bot's user id.
    pub fn bot_user_id(&self) -> String {
        self.state().bot_user_id.clone()
    }

    /// Adds a team (or returns the id of the one with that name).
    pub fn add_team(&self, name: &str) -> String {
        let mut state = self.state();
        if let Some(team) = state.teams.iter().find(|t| t.name == name) {
            return team.id.clone();
        }
        let team = Team {
            id: new_id(),
            name: name.into(),
            display_name: name.into(),
        };
        let id = team.id.clone();
        state.teams.push(team);
        id
    }

    /// Adds a public channel to the team named `team`, creating the team if needed.
    pub fn add_channel(&self, team: &str, channel: &str) -> String {
        let team_id = self.add_team(team);
        let mut state = self.state();
        if let Some(existing) = state
            .channels
            .iter()
            .find(|c| c.team_id == team_id && c.name == channel)
        {
            return existing.id.clone();
        }
        let channel = Channel {
            id: new_id(),
            name: channel.into(),
            team_id,
            display_name: channel.into(),
            channel_type: "O".into(),
        };
        let id = channel.id.clone();
        state.channels.push(channel);
        id
    }

    /// Adds a user (or returns the id of the one with that username).
    pub fn add_user(&self, username: &str, email: &str) -> String {
        let mut state = self.state();
        if let Some(user) = state.users.iter().find(|u| u.username == username) {
            return user.id.clone();
        }
        let user = User {
            id: new_id(),
            username: username.into(),
            email: email.into(),
            ..User::default()
        };
        let id = user.id.clone();
        state.users.push(user);
        id
    }

    /// A user's id by username.
    pub fn user_id(&self, username: &str) -> Option<String> {
        self.state()
            .users
            .iter()
            .find(|u| u.username == username)
            .map(|u| u.id.clone())
    }

    /// The id of the direct channel between two users, creating it as
    /// `POST /channels/direct` would when it does not exist yet. Takes user ids or
    /// usernames, in either order.
    pub fn dm_channel_id(&self, user_a: &str, user_b: &str) -> String {
        let mut state = self.state();
        let resolve = |who: &str| {
            state
                .users
                .iter()
                .find(|u| u.username == who)
                .map_or_else(|| who.to_string(), |u| u.id.clone())
        };
        let (a, b) = (resolve(user_a), resolve(user_b));
        state.direct_channel(&a, &b).id
    }

    /// All posts, in creation order, as stored (with integrations).
    pub fn posts(&self) -> Vec<Post> {
        self.state().posts.clone()
    }

    /// The posts of one channel, in creation order.
    pub fn posts_in(&self, channel_id: &str) -> Vec<Post> {
        self.state()
            .posts
            .iter()
            .filter(|p| p.channel_id == channel_id)
            .cloned()
            .collect()
    }

    /// One post, as stored.
    pub fn post(&self, id: &str) -> Option<Post> {
        let state = self.state();
        state.post_index.get(id).map(|&i| state.posts[i].clone())
    }

    /// Replaces a post's props as stored, as another integration (or an older version of this
    /// one) editing the post would.
    pub fn set_props(&self, id: &str, props: Map<String, Value>) {
        let mut state = self.state();
        if let Some(&i) = state.post_index.get(id) {
            state.posts[i].props = props;
        }
    }

    /// `count` ordinary posts by `user` (a username or a user id) in a channel, as a busy
    /// channel's people make them (one millisecond apart, ending now).
    pub fn add_chatter(&self, channel_id: &str, user: &str, count: usize) {
        let mut state = self.state();
        let user_id = state
            .users
            .iter()
            .find(|u| u.username == user || u.id == user)
            .map(|u| u.id.clone())
            .expect("a known user");
        let start = now_ms() - count as i64;
        for i in 0..count {
            let at = start + i as i64;
            let post = Post {
                id: new_id(),
                channel_id: channel_id.into(),
                user_id: user_id.clone(),
                message: format!("chatter {i}"),
                create_at: at,
                update_at: at,
                ..Post::default()
            };
            let index = state.posts.len();
            state.post_index.insert(post.id.clone(), index);
            state.posts.push(post);
        }
    }

    /// Marks a post deleted, as a user deleting it in the UI would.
    pub fn delete_post(&self, id: &str) -> bool {
        let mut state = self.state();
        let Some(&i) = state.post_index.get(id) else {
            return false;
        };
        let now = now_ms();
        let post = &mut state.posts[i];
        post.delete_at = now;
        post.update_at = now;
        true
    }

    /// Every POST and PUT answered, in order.
    pub fn recorded(&self) -> Vec<RecordedCall> {
        self.state()
            .calls
            .iter()
            .filter(|c| c.method == "POST" || c.method == "PUT")
            .cloned()
            .collect()
    }

    /// Every API call answered (GETs too), in order.
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.state().calls.clone()
    }

    /// How many calls with this method went to exactly this path.
    pub fn call_count(&self, method: &str, path: &str) -> usize {
        self.state()
            .calls
            .iter()
            .filter(|c| c.method == method && c.path == path)
            .count()
    }

    /// The next `count` API calls answer 429 with `X-RateLimit-Limit`, `X-RateLimit-Remaining:
    /// 0`, `X-RateLimit-Reset: reset_secs` and `Retry-After: reset_secs`.
    pub fn inject_429(&self, count: usize, reset_secs: u64) {
        self.state().inject_429 = (count > 0).then_some((count, reset_secs));
    }

    /// The next `count` API calls answer `status` with an error body.
    pub fn inject_status(&self, count: usize, status: u16) {
        self.state()
            .inject_status
            .extend(std::iter::repeat_n(status, count));
    }

    /// Drops every injected failure not answered yet: the server works again.
    pub fn clear_injected(&self) {
        let mut state = self.state();
        state.inject_status.clear();
        state.inject_on_path.clear();
        state.inject_429 = None;
    }

    /// The next `count` calls to `path` (e.g. `/api/v4/users/username/carol`) answer
    /// `status` with an error body; other paths are unaffected.
    pub fn inject_status_on(&self, path: &str, count: usize, status: u16) {
        self.state()
            .inject_on_path
            .entry(path.to_string())
            .or_default()
            .extend(std::iter::repeat_n(status, count));
    }

    /// The next `count` `POST /api/v4/posts` create the post but answer 502, like a server
    /// or proxy that crashed after the write.
    pub fn inject_lost_post_responses(&self, count: usize) {
        self.state().lost_post_responses = count;
    }

    /// The next `count` `method` calls to `path` get `status` with `body` instead of the
    /// server's answer; with `act`, the server carries out the call first (a proxy or a
    /// broken server mangling a real answer).
    pub fn inject_answer(
        &self,
        method: &str,
        path: &str,
        count: usize,
        status: u16,
        body: AnswerBody,
        act: bool,
    ) {
        self.state().answers.push(InjectedAnswer {
            method: method.to_string(),
            path: path.to_string(),
            left: count,
            status,
            body,
            act,
        });
    }

    /// The next `count` `method` calls to `path` are served only after `delay`, as by a
    /// server under load.
    pub fn delay_calls(&self, method: &str, path: &str, count: usize, delay: Duration) {
        self.state()
            .delays
            .push((method.to_string(), path.to_string(), count, delay));
    }

    /// Sets the longest message accepted, as a server's `MaxPostSize` (4000 on old servers).
    pub fn set_max_post_size(&self, chars: usize) {
        self.state().max_post_size = chars;
    }

    /// Rate-limits API calls like Mattermost's `RateLimitSettings` (GCRA, `per_second` with
    /// `burst`); `per_second` 0 switches it off.
    pub fn set_rate_limit(&self, per_second: u32, burst: u32) {
        self.state().bucket = (per_second > 0).then(|| Bucket::new(per_second, burst));
    }

    /// Presses the button named (or with id) `action_name` on a post as `username`: POSTs to
    /// the action's `integration.url` what Mattermost sends, and applies the reply's `update`.
    ///
    /// Fails when the post, the user or the action does not exist, when the action has no
    /// integration URL, or when its id could not be routed by Mattermost (ids must match
    /// `[A-Za-z0-9]+`), or when the integration cannot be reached.
    pub async fn press(
        &self,
        post_id: &str,
        action_name: &str,
        username: &str,
    ) -> anyhow::Result<PressOutcome> {
        self.press_via(post_id, action_name, username, None).await
    }

    /// Like [`press`](Self::press), but sends the press to `server` (`host:port`) instead of
    /// the host in `integration.url`, keeping its path: another replica behind the same
    /// Service, say.
    pub async fn press_via(
        &self,
        post_id: &str,
        action_name: &str,
        username: &str,
        server: Option<&str>,
    ) -> anyhow::Result<PressOutcome> {
        let (url, mut request) = {
            let state = self.state();
            let post = state
                .post_index
                .get(post_id)
                .map(|&i| &state.posts[i])
                .filter(|p| p.delete_at == 0)
                .with_context(|| format!("no post {post_id}"))?;
            let user = state
                .users
                .iter()
                .find(|u| u.username == username)
                .with_context(|| format!("no Mattermost user named {username:?}"))?;
            if !state.may_read(&post.channel_id, &user.id) {
                return Ok(PressOutcome {
                    status: 403,
                    ephemeral_text: None,
                    body: json!({
                        "id": "api.context.permissions.app_error",
                        "status_code": 403,
                        "detailed_error": format!("userId={}, permission=read_channel", user.id),
                    }),
                });
            }
            let action = find_action(&post.props, action_name)?;
            let action_id = action.get("id").and_then(Value::as_str).unwrap_or_default();
            if action_id.is_empty() || !action_id.chars().all(|c| c.is_ascii_alphanumeric()) {
                bail!(
                    "action {action_name:?} has id {action_id:?}; Mattermost routes presses to \
                     /posts/{{post_id}}/actions/{{action_id:[A-Za-z0-9]+}}, so it cannot be pressed"
                );
            }
            let url = action
                .pointer("/integration/url")
                .and_then(Value::as_str)
                .filter(|u| !u.is_empty())
                .with_context(|| format!("action {action_name:?} has no integration.url"))?
                .to_string();
            let url = match server {
                None => url,
                Some(server) => {
                    let mut u = url::Url::parse(&url).context("integration.url")?;
                    let (host, port) = server.rsplit_once(':').context("server is host:port")?;
                    u.set_host(Some(host))?;
                    u.set_port(Some(port.parse()?)).ok();
                    u.to_string()
                }
            };
            let channel = state.channels.iter().find(|c| c.id == post.channel_id);
            let team = channel.and_then(|c| state.teams.iter().find(|t| t.id == c.team_id));
            let mut request = json!({
                "user_id": user.id,
                "user_name": user.username,
                "channel_id": post.channel_id,
                "channel_name": channel.map(|c| c.name.as_str()).unwrap_or_default(),
                "team_id": channel.map(|c| c.team_id.as_str()).unwrap_or_default(),
                "team_domain": team.map(|t| t.name.as_str()).unwrap_or_default(),
                "post_id": post.id,
                "trigger_id": "",
                "type": action.get("type").and_then(Value::as_str).unwrap_or_default(),
                "data_source": action.get("data_source").and_then(Value::as_str).unwrap_or_default(),
            });
            // Go's `omitempty` drops a nil or empty context map.
            if let Some(context) = action
                .pointer("/integration/context")
                .and_then(Value::as_object)
                && !context.is_empty()
            {
                request["context"] = Value::Object(context.clone());
            }
            (url, request)
        };
        // Issued once the state lock is released: issuing records the trigger.
        let user_id = request["user_id"].as_str().unwrap_or_default().to_string();
        let age = self.state().trigger_age;
        request["trigger_id"] = json!(dialogs::issue_trigger(&self.shared, &user_id, age));

        let response = self
            .shared
            .http
            .post(&url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json")
            .json(&request)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .with_context(|| format!("reading the answer of {url}"))?;
        let parsed: Option<Value> = if text.trim().is_empty() {
            Some(Value::Null)
        } else {
            serde_json::from_str(&text).ok()
        };
        let body = parsed
            .clone()
            .unwrap_or_else(|| Value::String(text.clone()));
        // Mattermost ignores the reply unless the integration answered 200 with JSON (or
        // nothing).
        let Some(reply) = parsed.filter(|_| status == 200) else {
            return Ok(PressOutcome {
                status,
                ephemeral_text: None,
                body,
            });
        };
        let applied = match reply.get("update").filter(|u| u.is_object()) {
            Some(update) => self.apply_update(post_id, update),
            None => true,
        };
        // A server that refused the update answers the presser with that error, and sends
        // no ephemeral text (`DoPostActionWithCookie` returns first).
        let ephemeral_text = reply
            .get("ephemeral_text")
            .and_then(Value::as_str)
            .filter(|t| applied && !t.is_empty())
            .map(str::to_string);
        Ok(PressOutcome {
            status,
            ephemeral_text,
            body,
        })
    }

    /// What `DoPostActionWithCookie` does with an `update`: the post keeps its id, channel,
    /// author, pinned state and the retained props; message and props are replaced (a
    /// missing message becomes empty, missing props keep the old ones). False when the server
    /// refused it: on a line where the post edit time limit binds integrations too.
    fn apply_update(&self, post_id: &str, update: &Value) -> bool {
        let mut state = self.state();
        let Some(&i) = state.post_index.get(post_id) else {
            return true;
        };
        let old = state.posts[i].clone();
        let mut new = old.clone();
        let now = now_ms();
        new.message = update
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if state.line.edit_limit_binds_integrations()
            && state
                .line
                .edit_refused(old.create_at, now, new.message != old.message)
                .is_some()
        {
            return false;
        }
        match update.get("props").and_then(Value::as_object) {
            None => {}
            Some(props) => {
                new.props = props.clone();
                for key in RETAINED_PROPS {
                    match old.props.get(key) {
                        Some(v) => {
                            new.props.insert(key.into(), v.clone());
                        }
                        None => {
                            new.props.remove(key);
                        }
                    }
                }
            }
        }
        generate_action_ids(&mut new.props);
        if new.message != old.message
            || new.props.get("attachments") != old.props.get("attachments")
        {
            new.edit_at = now;
        }
        new.update_at = now;
        state.note_invalid_props(&new);
        state.posts[i] = new;
        true
    }

    fn state(&self) -> MutexGuard<'_, Server> {
        self.shared.state()
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, Server> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Finds an action by id first (what Mattermost's `GetAction` matches), then by name.
fn find_action<'a>(props: &'a Map<String, Value>, wanted: &str) -> anyhow::Result<&'a Value> {
    let actions: Vec<&Value> = props
        .get("attachments")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|a| a.get("actions").and_then(Value::as_array))
        .flatten()
        .collect();
    let field = |a: &Value, k: &str| a.get(k).and_then(Value::as_str).map(str::to_string);
    actions
        .iter()
        .find(|a| field(a, "id").as_deref() == Some(wanted))
        .or_else(|| {
            actions
                .iter()
                .find(|a| field(a, "name").as_deref() == Some(wanted))
        })
        .copied()
        .ok_or_else(|| {
            let names: Vec<String> = actions
                .iter()
                .map(|a| {
                    format!(
                        "{}/{}",
                        field(a, "id").unwrap_or_default(),
                        field(a, "name").unwrap_or_default()
                    )
                })
                .collect();
            anyhow!("the post has no action {wanted:?} (id/name of its actions: {names:?})")
        })
}

// ---------------------------------------------------------------------------------------
// HTTP side

fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/users/me", get(users_me))
        .route("/config/client", get(client_config))
        .route("/users/{user_id}", get(user_by_id))
        .route("/users/email/{email}", get(user_by_email))
        .route("/users/username/{username}", get(user_by_username))
        .route("/teams/name/{team}", get(team_by_name))
        .route(
            "/teams/name/{team}/channels/name/{channel}",
            get(channel_by_names),
        )
        .route("/channels/direct", post(create_direct_channel))
        .route("/channels/{channel_id}/posts", get(channel_posts))
        .route(
            "/channels/{channel_id}/members/{user_id}",
            get(members::channel_member),
        )
        .route("/posts", post(create_post))
        .route("/posts/{post_id}", get(get_post).put(update_post))
        .route("/actions/dialogs/open", post(dialogs::open))
        .fallback(not_found_route);
    Router::new()
        .nest("/api/v4", api)
        .layer(middleware::from_fn_with_state(shared.clone(), api_layer))
        .with_state(shared)
}

type ApiResult = Result<Response, Response>;

/// A `model.AppError` response.
fn app_error(status: u16, id: &str, message: &str, detailed: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        code,
        Json(json!({
            "id": id,
            "message": message,
            "detailed_error": detailed,
            "request_id": new_id(),
            "status_code": status,
        })),
    )
        .into_response()
}

fn permission_error(permission: &str, user_id: &str) -> Response {
    app_error(
        403,
        "api.context.permissions.app_error",
        "You do not have the appropriate permissions.",
        &format!("userId={user_id}, permission={permission}"),
    )
}

fn invalid_body_param(name: &str) -> Response {
    app_error(
        400,
        "api.context.invalid_body_param.app_error",
        &format!("Invalid or missing {name} in request body."),
        "",
    )
}

fn invalid_url_param(name: &str) -> Response {
    app_error(
        400,
        "api.context.invalid_url_param.app_error",
        &format!("Invalid or missing {name} parameter in request URL."),
        "",
    )
}

fn ok_json(status: StatusCode, value: impl Serialize) -> Response {
    (status, Json(value)).into_response()
}

/// Rate limit, injected failures, authentication and recording, in Mattermost's order
/// (its rate limiter wraps the whole API, before the session check).
async fn api_layer(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or_default().to_string();
    let auth = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 16 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let json_body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);

    let delay = {
        let mut state = shared.state();
        state
            .delays
            .iter_mut()
            .find(|(m, p, left, _)| *left > 0 && m == method.as_str() && *p == path)
            .map(|(_, _, left, delay)| {
                *left -= 1;
                *delay
            })
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }

    let injected = {
        let mut state = shared.state();
        state
            .answers
            .iter_mut()
            .find(|a| a.left > 0 && a.method == method.as_str() && a.path == path)
            .map(|a| {
                a.left -= 1;
                (a.status, a.body.clone(), a.act)
            })
    };
    if let Some((status, body, act)) = injected {
        if act {
            let _ = next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await;
        }
        let mut response = Response::new(body.into_body());
        *response.status_mut() = StatusCode::from_u16(status).expect("a valid status");
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return response;
    }

    let (early, limit_headers) = {
        let mut state = shared.state();
        let limit_headers = state.bucket.as_mut().map(|b| b.take(Instant::now()));
        let early = if let Some(limited) = limit_headers.as_ref().filter(|h| h.limited) {
            Some(limit_exceeded(limited.clone()))
        } else if let Some((count, reset)) = state.inject_429 {
            state.inject_429 = (count > 1).then_some((count - 1, reset));
            Some(limit_exceeded(LimitHeaders {
                limit: 10,
                remaining: 0,
                reset_secs: reset,
                retry_after_secs: Some(reset),
                limited: true,
            }))
        } else if let Some(status) = state
            .inject_on_path
            .get_mut(&path)
            .and_then(VecDeque::pop_front)
            .or_else(|| state.inject_status.pop_front())
        {
            Some(app_error(
                status,
                "testkit.injected_failure.app_error",
                &format!("Injected failure (status {status})."),
                "",
            ))
        } else if !authorized(auth.as_deref(), &state.bot_token) {
            Some(app_error(
                401,
                "api.context.session_expired.app_error",
                "Invalid or expired session, please login again.",
                "token error",
            ))
        } else {
            None
        };
        (early, limit_headers)
    };

    let mut response = match early {
        Some(response) => response,
        None => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
    };
    if let Some(h) = limit_headers.filter(|h| !h.limited) {
        h.apply(response.headers_mut());
    }
    response.headers_mut().insert(
        "x-request-id",
        HeaderValue::from_str(&new_id()).expect("ascii"),
    );
    shared.state().calls.push(RecordedCall {
        method: method.to_string(),
        path,
        query,
        body: json_body,
        status: response.status().as_u16(),
    });
    response
}

/// Mattermost accepts `Bearer` and `Token` schemes, case-insensitively.
fn authorized(header: Option<&str>, token: &str) -> bool {
    let Some((scheme, value)) = header.and_then(|h| h.split_once(' ')) else {
        return false;
    };
    (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token"))
        && value.trim() == token
}

/// The rate limiter's answer: plain text, as Go's `http.Error` writes it.
fn limit_exceeded(headers: LimitHeaders) -> Response {
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        "limit exceeded\n",
    )
        .into_response();
    headers.apply(response.headers_mut());
    response
}

async fn not_found_route() -> Response {
    app_error(
        404,
        "api.context.404.app_error",
        "Sorry, we could not find the page.",
        "There doesn't appear to be an api call for the url.",
    )
}

/// `GET /api/v4/config/client?format=old`: the fields the plugin reads, and those about the
/// behaviours the double plays (`server/config/client.go`; every value a string).
async fn client_config(State(shared): State<Arc<Shared>>) -> ApiResult {
    let state = shared.state();
    let line = &state.line;
    let mut config = json!({
        "MaxPostSize": state.max_post_size.to_string(),
        "Version": line.version.to_string(),
        "PostEditTimeLimit": line.post_edit_time_limit.to_string(),
        "PostPriority": line.post_priority.to_string(),
    });
    // Only a licensed server says it takes acknowledgements (`MinimumProfessionalLicense`).
    if line.licensed {
        config["PostAcknowledgements"] = json!("true");
    }
    Ok(ok_json(StatusCode::OK, config))
}

async fn users_me(State(shared): State<Arc<Shared>>) -> ApiResult {
    let state = shared.state();
    let bot = state.users.iter().find(|u| u.id == state.bot_user_id);
    Ok(ok_json(StatusCode::OK, bot))
}

fn missing_user() -> Response {
    app_error(
        404,
        "app.user.missing_account.const",
        "Unable to find the user.",
        "",
    )
}

async fn user_by_id(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> ApiResult {
    if !is_valid_id(&id) {
        return Err(invalid_url_param("user_id"));
    }
    let state = shared.state();
    let user = state
        .users
        .iter()
        .find(|u| u.id == id)
        .ok_or_else(missing_user)?;
    Ok(ok_json(StatusCode::OK, user))
}

async fn user_by_email(State(shared): State<Arc<Shared>>, Path(email): Path<String>) -> ApiResult {
    let state = shared.state();
    let user = state
        .users
        .iter()
        .find(|u| u.email.eq_ignore_ascii_case(&email))
        .ok_or_else(missing_user)?;
    Ok(ok_json(StatusCode::OK, user))
}

async fn user_by_username(
    State(shared): State<Arc<Shared>>,
    Path(username): Path<String>,
) -> ApiResult {
    let state = shared.state();
    let user = state
        .users
        .iter()
        .find(|u| u.username.eq_ignore_ascii_case(&username))
        .ok_or_else(missing_user)?;
    Ok(ok_json(StatusCode::OK, user))
}

fn missing_team() -> Response {
    app_error(
        404,
        "app.team.get_by_name.missing.app_error",
        "Unable to find the existing team.",
        "",
    )
}

async fn team_by_name(State(shared): State<Arc<Shared>>, Path(team): Path<String>) -> ApiResult {
    let state = shared.state();
    let team = state
        .teams
        .iter()
        .find(|t| t.name == team)
        .ok_or_else(missing_team)?;
    Ok(ok_json(StatusCode::OK, team))
}

async fn channel_by_names(
    State(shared): State<Arc<Shared>>,
    Path((team, channel)): Path<(String, String)>,
) -> ApiResult {
    let state = shared.state();
    let team = state
        .teams
        .iter()
        .find(|t| t.name == team)
        .ok_or_else(missing_team)?;
    let channel = state
        .channels
        .iter()
        .find(|c| c.team_id == team.id && c.name == channel)
        .ok_or_else(|| {
            app_error(
                404,
                "app.channel.get_by_name.missing.app_error",
                "Channel does not exist.",
                "",
            )
        })?;
    Ok(ok_json(StatusCode::OK, channel))
}

async fn create_direct_channel(
    State(shared): State<Arc<Shared>>,
    body: axum::body::Bytes,
) -> ApiResult {
    let ids: Vec<String> =
        serde_json::from_slice(&body).map_err(|_| invalid_body_param("user_ids"))?;
    if ids.len() != 2 {
        return Err(invalid_body_param("user_ids"));
    }
    if !ids.iter().all(|id| is_valid_id(id)) {
        return Err(invalid_body_param("user_id"));
    }
    let mut state = shared.state();
    let bot = state.bot_user_id.clone();
    // Only an admin may create a DM between two other users.
    if !ids.contains(&bot) {
        return Err(permission_error("manage_system", &bot));
    }
    if !ids.iter().all(|id| state.users.iter().any(|u| &u.id == id)) {
        return Err(app_error(
            400,
            "api.channel.create_direct_channel.invalid_user.app_error",
            "Invalid user ID for direct channel creation.",
            "",
        ));
    }
    let channel = state.direct_channel(&ids[0], &ids[1]);
    Ok(ok_json(StatusCode::CREATED, channel))
}

async fn create_post(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> ApiResult {
    let mut post: Post = serde_json::from_slice(&body).map_err(|_| invalid_body_param("post"))?;
    let mut state = shared.state();
    let bot = state.bot_user_id.clone();
    if !state.bot_may_post(&post.channel_id) {
        return Err(permission_error("create_post", &bot));
    }
    if !post.root_id.is_empty() {
        let root_ok = state
            .post_index
            .get(&post.root_id)
            .map(|&i| &state.posts[i])
            .is_some_and(|root| root.channel_id == post.channel_id && root.delete_at == 0);
        if !root_ok {
            return Err(app_error(
                400,
                "api.post.create_post.root_id.app_error",
                "Invalid RootId parameter.",
                "",
            ));
        }
    }
    if let Some(error) = message_length_error(&post.message, "", state.max_post_size) {
        return Err(error);
    }
    // `createPostChecks` in `server/channels/api4/post.go`: the priority is checked before
    // anything is created.
    if let Some(refused) = state.line.priority_refused(&post.metadata, &post.root_id) {
        return Err(refused);
    }
    post.metadata = state.line.kept_metadata(&post.metadata);
    let now = now_ms();
    post.id = new_id();
    post.create_at = now;
    post.update_at = now;
    post.edit_at = 0;
    post.delete_at = 0;
    post.original_id.clear();
    post.user_id = bot.clone();
    post.props
        .insert("from_bot".into(), Value::String("true".into()));
    generate_action_ids(&mut post.props);
    state.note_invalid_props(&post);
    let index = state.posts.len();
    state.post_index.insert(post.id.clone(), index);
    state.posts.push(post.clone());
    let _ = shared.created.send(CreatedPost {
        post: post.clone(),
        at: Instant::now(),
    });
    if state.lost_post_responses > 0 {
        state.lost_post_responses -= 1;
        return Err((StatusCode::BAD_GATEWAY, "502 Bad Gateway\n").into_response());
    }
    Ok(ok_json(StatusCode::CREATED, for_client(&post)))
}

async fn get_post(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> ApiResult {
    let state = shared.state();
    let post = state
        .post_index
        .get(&id)
        .map(|&i| &state.posts[i])
        .filter(|p| p.delete_at == 0)
        .ok_or_else(|| app_error(404, "app.post.get.app_error", "Unable to get the post.", ""))?;
    Ok(ok_json(StatusCode::OK, for_client(post)))
}

async fn update_post(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    let received: Post = serde_json::from_slice(&body).map_err(|_| invalid_body_param("post"))?;
    if received.id != id {
        return Err(invalid_body_param("id"));
    }
    let mut state = shared.state();
    let bot = state.bot_user_id.clone();
    // Mattermost checks permission through the post's channel; a missing or deleted post
    // fails that check.
    let Some(&i) = state
        .post_index
        .get(&id)
        .filter(|&&i| state.posts[i].delete_at == 0)
    else {
        return Err(permission_error("edit_post", &bot));
    };
    if let Some(error) = message_length_error(&received.message, &id, state.max_post_size) {
        return Err(error);
    }
    let now = now_ms();
    let old = state.posts[i].clone();
    if let Some(refused) =
        state
            .line
            .edit_refused(old.create_at, now, received.message != old.message)
    {
        return Err(refused);
    }
    let mut new = old.clone();
    if new.message != received.message {
        new.message = received.message;
        new.edit_at = now;
    }
    new.is_pinned = received.is_pinned;
    new.props = received.props;
    generate_action_ids(&mut new.props);
    if new.edit_at == old.edit_at && new.props.get("attachments") != old.props.get("attachments") {
        new.edit_at = now;
    }
    new.update_at = now;
    state.note_invalid_props(&new);
    state.posts[i] = new.clone();
    Ok(ok_json(StatusCode::OK, for_client(&new)))
}

#[derive(Deserialize)]
struct PostsQuery {
    since: Option<String>,
    page: Option<usize>,
    per_page: Option<usize>,
}

async fn channel_posts(
    State(shared): State<Arc<Shared>>,
    Path(channel_id): Path<String>,
    Query(query): Query<PostsQuery>,
) -> ApiResult {
    let since = match query.since.as_deref() {
        None | Some("") => 0,
        Some(s) => s.parse::<i64>().map_err(|_| invalid_url_param("since"))?,
    };
    let state = shared.state();
    if !state.channels.iter().any(|c| c.id == channel_id) {
        return Err(app_error(
            404,
            "app.channel.get.existing.app_error",
            "Unable to find the existing channel.",
            "",
        ));
    }
    let mut selected: Vec<&Post> = state
        .posts
        .iter()
        .filter(|p| p.channel_id == channel_id)
        .collect();
    let selected: Vec<&Post> = if since > 0 {
        // `SqlPostStore.GetPostsSince` (`server/channels/store/sqlstore/post_store.go`, 6.7.2
        // and 11.4): `WHERE UpdateAt > ? AND ChannelId = ? LIMIT 1000` with no ORDER BY,
        // then the whole ordered by CreateAt. PostgreSQL reads it through the index on
        // (channelid, updateat), so past 1,000 changed posts the newest are the ones left out.
        selected.sort_by_key(|p| p.update_at);
        let mut kept: Vec<&Post> = selected
            .into_iter()
            .filter(|p| p.update_at > since)
            .take(1000)
            .collect();
        kept.sort_by_key(|p| std::cmp::Reverse(p.create_at));
        kept
    } else {
        selected.sort_by_key(|p| std::cmp::Reverse(p.create_at));
        let per_page = query.per_page.unwrap_or(60).clamp(1, 200);
        let page = query.page.unwrap_or(0);
        selected
            .into_iter()
            .filter(|p| p.delete_at == 0)
            .skip(page * per_page)
            .take(per_page)
            .collect()
    };
    let order: Vec<&str> = selected.iter().map(|p| p.id.as_str()).collect();
    let posts: Map<String, Value> = selected
        .iter()
        .map(|p| {
            (
                p.id.clone(),
                serde_json::to_value(for_client(p)).expect("post"),
            )
        })
        .collect();
    Ok(ok_json(
        StatusCode::OK,
        json!({"order": order, "posts": posts, "next_post_id": "", "prev_post_id": "", "has_next": false}),
    ))
}

/// Mattermost's 400 for a message over the limit, if `message` is over it.
fn message_length_error(message: &str, post_id: &str, max: usize) -> Option<Response> {
    let length = message.chars().count();
    (length > max).then(|| {
        app_error(
            400,
            "model.post.is_valid.message_length.app_error",
            &format!(
                "Post Message property is longer than the maximum permitted length ({length} > {max})."
            ),
            &format!("id={post_id}"),
        )
    })
}

/// A field of `model.SlackAttachment` and the value a client sees when it was not sent.
type AttachmentField = (&'static str, fn() -> Value);

/// Every field of `model.SlackAttachment` but `actions`, in Mattermost's order.
const ATTACHMENT_FIELDS: [AttachmentField; 16] = [
    ("id", || Value::from(0)),
    ("fallback", || Value::from("")),
    ("color", || Value::from("")),
    ("pretext", || Value::from("")),
    ("author_name", || Value::from("")),
    ("author_link", || Value::from("")),
    ("author_icon", || Value::from("")),
    ("title", || Value::from("")),
    ("title_link", || Value::from("")),
    ("text", || Value::from("")),
    ("fields", || Value::Null),
    ("image_url", || Value::from("")),
    ("thumb_url", || Value::from("")),
    ("footer", || Value::from("")),
    ("footer_icon", || Value::from("")),
    ("ts", || Value::Null),
];

/// What Mattermost sends to API clients: `StripActionIntegrations` re-encodes the attachments
/// from the typed `SlackAttachment`, so every attachment shows all of its fields (defaults for
/// those not sent), loses keys it does not know, and no action keeps its `integration`.
/// (Seen on a real 6.7.2 server, tier 4.)
fn for_client(post: &Post) -> Post {
    let mut post = post.clone();
    for_each_action(&mut post.props, |action| {
        action.remove("integration");
    });
    if let Some(attachments) = post
        .props
        .get_mut("attachments")
        .and_then(Value::as_array_mut)
    {
        for attachment in attachments.iter_mut().filter_map(Value::as_object_mut) {
            let actions = attachment.remove("actions");
            let mut typed = Map::new();
            for (key, default) in ATTACHMENT_FIELDS {
                typed.insert(key.into(), attachment.remove(key).unwrap_or_else(default));
            }
            if let Some(actions) = actions {
                typed.insert("actions".into(), actions);
            }
            *attachment = typed;
        }
    }
    post
}

/// `Post.GenerateActionIds`: every action without an id gets one.
fn generate_action_ids(props: &mut Map<String, Value>) {
    for_each_action(props, |action| {
        let missing = action
            .get("id")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty);
        if missing {
            action.insert("id".into(), Value::String(new_id()));
        }
    });
}

fn for_each_action(props: &mut Map<String, Value>, mut f: impl FnMut(&mut Map<String, Value>)) {
    let Some(attachments) = props.get_mut("attachments").and_then(Value::as_array_mut) else {
        return;
    };
    for attachment in attachments {
        let Some(actions) = attachment.get_mut("actions").and_then(Value::as_array_mut) else {
            continue;
        };
        for action in actions.iter_mut().filter_map(Value::as_object_mut) {
            f(action);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Rate limiting, after throttled's GCRA as Mattermost configures it.

struct Bucket {
    /// Time between two requests at the sustained rate.
    interval: Duration,
    /// How far ahead of schedule requests may run: `(burst + 1) * interval`.
    tolerance: Duration,
    limit: u32,
    /// Theoretical arrival time of the next request.
    tat: Option<Instant>,
}

#[derive(Clone)]
struct LimitHeaders {
    limit: u32,
    remaining: u32,
    reset_secs: u64,
    retry_after_secs: Option<u64>,
    limited: bool,
}

impl LimitHeaders {
    fn apply(&self, headers: &mut HeaderMap) {
        let mut set = |name: &'static str, value: String| {
            headers.insert(name, HeaderValue::from_str(&value).expect("digits"));
        };
        set("x-ratelimit-limit", self.limit.to_string());
        set("x-ratelimit-remaining", self.remaining.to_string());
        set("x-ratelimit-reset", self.reset_secs.to_string());
        if let Some(retry) = self.retry_after_secs {
            set("retry-after", retry.to_string());
        }
    }
}

impl Bucket {
    fn new(per_second: u32, burst: u32) -> Self {
        let interval = Duration::from_secs(1) / per_second;
        Self {
            interval,
            tolerance: interval * (burst + 1),
            limit: burst + 1,
            tat: None,
        }
    }

    /// Counts one request at `now`.
    fn take(&mut self, now: Instant) -> LimitHeaders {
        let tat = self.tat.map_or(now, |t| t.max(now));
        let new_tat = tat + self.interval;
        let allow_at = new_tat.checked_sub(self.tolerance).unwrap_or(now);
        let ceil_secs = |d: Duration| d.as_secs() + u64::from(d.subsec_nanos() > 0);
        let remaining = |ttl: Duration| {
            let next = self.tolerance.saturating_sub(ttl);
            (next.as_nanos() / self.interval.as_nanos().max(1)) as u32
        };
        if allow_at > now {
            let ttl = tat - now;
            LimitHeaders {
                limit: self.limit,
                remaining: remaining(ttl),
                reset_secs: ceil_secs(ttl),
                retry_after_secs: Some(ceil_secs(allow_at - now)),
                limited: true,
            }
        } else {
            self.tat = Some(new_tat);
            let ttl = new_tat - now;
            LimitHeaders {
                limit: self.limit,
                remaining: remaining(ttl),
                reset_secs: ceil_secs(ttl),
                retry_after_secs: None,
                limited: false,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Ids and time

/// A new 26-character Mattermost-style id.
pub fn new_id() -> String {
    let mut rng = rand::rng();
    (0..26)
        .map(|_| ID_ALPHABET[rng.random_range(0..32)] as char)
        .collect()
}

/// Whether `id` looks like a Mattermost id (26 lowercase letters and digits).
fn is_valid_id(id: &str) -> bool {
    id.len() == 26
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// The name Mattermost gives the direct channel of two users: their ids, sorted, joined by `__`.
fn direct_channel_name(a: &str, b: &str) -> String {
    let (a, b) = if a <= b { (a, b) } else { (b, a) };
    format!("{a}__{b}")
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_look_like_mattermost_ids() {
        let id = new_id();
        assert!(is_valid_id(&id), "{id}");
        assert_ne!(id, new_id());
    }

    #[test]
    fn direct_channels_are_one_per_pair_in_either_order_and_distinct_across_pairs() {
        let mut server = Server::default();
        let (bot, alice, carol) = (new_id(), new_id(), new_id());
        let first = server.direct_channel(&bot, &alice);
        assert!(is_valid_id(&first.id), "{first:?}");
        assert_eq!(server.direct_channel(&alice, &bot).id, first.id);
        // Many pairs, so ids that collide (as a hash folded to a few bits once did) show up.
        let with_carol = server.direct_channel(&bot, &carol).id;
        let ids: std::collections::HashSet<String> = (0..200)
            .map(|_| server.direct_channel(&bot, &new_id()).id)
            .chain([first.id.clone(), with_carol])
            .collect();
        assert_eq!(ids.len(), 202);
    }

    #[test]
    fn bucket_allows_burst_then_limits_with_retry_after() {
        let mut bucket = Bucket::new(1, 2);
        let now = Instant::now();
        // GCRA with burst 2 lets 3 requests through at once (limit = burst + 1).
        for _ in 0..3 {
            assert!(!bucket.take(now).limited);
        }
        let limited = bucket.take(now);
        assert!(limited.limited);
        assert_eq!(limited.limit, 3);
        assert_eq!(limited.remaining, 0);
        assert_eq!(limited.retry_after_secs, Some(1));
        assert!(!bucket.take(now + Duration::from_secs(1)).limited);
    }

    #[test]
    fn clients_see_attachments_with_every_typed_field() {
        let mut props = Map::new();
        props.insert(
            "attachments".into(),
            json!([{"text": "t", "unknown": 1, "actions": [{"id": "a", "name": "A", "integration": {"url": "http://x"}}]}]),
        );
        let post = Post {
            props,
            ..Default::default()
        };
        let client = for_client(&post);
        let attachment = &client.props["attachments"][0];
        assert_eq!(attachment["text"], "t");
        assert_eq!(attachment["fallback"], "");
        assert_eq!(attachment["id"], 0);
        assert_eq!(attachment["fields"], Value::Null);
        assert!(attachment.get("unknown").is_none());
        assert_eq!(attachment["actions"], json!([{"id": "a", "name": "A"}]));
    }

    #[test]
    fn actions_get_ids_and_lose_integrations_for_clients() {
        let mut props = json!({"attachments": [{"actions": [
            {"name": "Approve", "integration": {"url": "http://x", "context": {"a": 1}}},
            {"id": "deny", "name": "Deny", "integration": {"url": "http://x"}}
        ]}]})
        .as_object()
        .unwrap()
        .clone();
        generate_action_ids(&mut props);
        let actions = props["attachments"][0]["actions"].as_array().unwrap();
        assert_eq!(actions[0]["id"].as_str().unwrap().len(), 26);
        assert_eq!(actions[1]["id"], "deny");
        let post = Post {
            props,
            ..Post::default()
        };
        let shown = for_client(&post);
        assert!(
            shown.props["attachments"][0]["actions"][0]
                .get("integration")
                .is_none()
        );
        assert!(
            post.props["attachments"][0]["actions"][0]
                .get("integration")
                .is_some()
        );
    }

    #[test]
    fn finds_actions_by_id_before_name() {
        let props = json!({"attachments": [{"actions": [
            {"id": "approve", "name": "deny"},
            {"id": "deny", "name": "Deny"}
        ]}]})
        .as_object()
        .unwrap()
        .clone();
        assert_eq!(find_action(&props, "deny").unwrap()["id"], "deny");
        assert_eq!(find_action(&props, "Deny").unwrap()["id"], "deny");
        let err = find_action(&props, "nope").unwrap_err().to_string();
        assert!(err.contains("approve/deny"), "{err}");
    }

    /// A callback server that records what it receives and answers `reply`.
    async fn callback(reply: Value) -> (String, Arc<Mutex<Vec<Value>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new().route(
            "/act",
            post({
                let seen = seen.clone();
                move |Json(body): Json<Value>| async move {
                    seen.lock().unwrap().push(body);
                    Json(reply)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/act", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener.tap_io(no_delay), app).await });
        (url, seen)
    }

    /// Stores a post by the bot in `channel_id`, whose members every user becomes.
    fn store(mm: &MattermostDouble, channel_id: &str, props: Value) -> String {
        let mut state = mm.state();
        let users: Vec<String> = state.users.iter().map(|u| u.id.clone()).collect();
        state
            .members
            .entry(channel_id.to_string())
            .or_default()
            .extend(users);
        let mut post = Post {
            id: new_id(),
            channel_id: channel_id.into(),
            message: "pending".into(),
            user_id: state.bot_user_id.clone(),
            create_at: now_ms(),
            props: props.as_object().unwrap().clone(),
            ..Post::default()
        };
        post.update_at = post.create_at;
        generate_action_ids(&mut post.props);
        let id = post.id.clone();
        let index = state.posts.len();
        state.post_index.insert(id.clone(), index);
        state.posts.push(post);
        id
    }

    #[tokio::test]
    async fn press_sends_what_mattermost_sends_and_applies_the_update() {
        let mm = MattermostDouble::start().await;
        let channel_id = mm.add_channel("ops", "requests");
        let alice = mm.add_user("alice", "alice@example.com");
        let reply = json!({
            "update": {"message": "approved", "props": {"attachments": [], "from_webhook": "true"}},
            "ephemeral_text": "You approved it."
        });
        let (url, seen) = callback(reply).await;
        let props = json!({
            "override_username": "Teleport",
            "attachments": [{"actions": [
                {"id": "approve", "name": "Approve", "type": "button",
                 "integration": {"url": url, "context": {"request_id": "r1", "sig": "abc"}}}
            ]}]
        });
        let post_id = store(&mm, &channel_id, props);

        let outcome = mm.press(&post_id, "Approve", "alice").await.unwrap();
        assert_eq!(outcome.status, 200);
        assert_eq!(outcome.ephemeral_text.as_deref(), Some("You approved it."));

        let sent = seen.lock().unwrap()[0].clone();
        let keys: Vec<&str> = sent
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut keys = keys;
        keys.sort();
        assert_eq!(
            keys,
            [
                "channel_id",
                "channel_name",
                "context",
                "data_source",
                "post_id",
                "team_domain",
                "team_id",
                "trigger_id",
                "type",
                "user_id",
                "user_name"
            ]
        );
        assert_eq!(sent["user_id"], alice);
        assert_eq!(sent["user_name"], "alice");
        assert_eq!(sent["channel_id"], channel_id);
        assert_eq!(sent["channel_name"], "requests");
        assert_eq!(sent["team_domain"], "ops");
        assert_eq!(sent["post_id"], post_id);
        assert_eq!(sent["type"], "button");
        assert_eq!(sent["context"], json!({"request_id": "r1", "sig": "abc"}));

        let post = mm.post(&post_id).unwrap();
        assert_eq!(post.message, "approved");
        assert_eq!(post.channel_id, channel_id);
        // Retained from the original; a retained key the original lacked is dropped.
        assert_eq!(post.props["override_username"], "Teleport");
        assert!(post.props.get("from_webhook").is_none());
        assert!(post.edit_at > 0);
    }

    #[tokio::test]
    async fn press_without_props_in_update_keeps_the_old_props() {
        let mm = MattermostDouble::start().await;
        let channel_id = mm.add_channel("ops", "requests");
        mm.add_user("bob", "bob@example.com");
        let (url, _) = callback(json!({"update": {"message": "done"}})).await;
        let props = json!({"marker": "m", "attachments": [{"actions": [
            {"id": "deny", "name": "Deny", "integration": {"url": url}}
        ]}]});
        let post_id = store(&mm, &channel_id, props);
        let outcome = mm.press(&post_id, "deny", "bob").await.unwrap();
        assert_eq!(outcome.ephemeral_text, None);
        let post = mm.post(&post_id).unwrap();
        assert_eq!(post.message, "done");
        assert_eq!(post.props["marker"], "m");
    }

    #[tokio::test]
    async fn press_refuses_unknown_users_and_unroutable_action_ids() {
        let mm = MattermostDouble::start().await;
        let channel_id = mm.add_channel("ops", "requests");
        mm.add_user("bob", "bob@example.com");
        let props = json!({"attachments": [{"actions": [
            {"id": "approve-1", "name": "Approve", "integration": {"url": "http://127.0.0.1:9/x"}}
        ]}]});
        let post_id = store(&mm, &channel_id, props);
        let err = mm.press(&post_id, "Approve", "mallory").await.unwrap_err();
        assert!(err.to_string().contains("mallory"), "{err}");
        let err = mm.press(&post_id, "Approve", "bob").await.unwrap_err();
        assert!(err.to_string().contains("[A-Za-z0-9]+"), "{err}");
    }

    #[tokio::test]
    async fn server_stops_when_the_last_handle_is_dropped() {
        let mm = MattermostDouble::start().await;
        let addr = mm.shared.addr;
        let copy = mm.clone();
        drop(mm);
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_ok(),
            "a clone keeps it alive"
        );
        drop(copy);
        let mut refused = false;
        for _ in 0..50 {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(refused, "the server should stop");
    }
}
