//! A real Mattermost server for tiers 4 and 5: where `tests/mattermost/run.sh` started and
//! provisioned it (`TM_REAL_MATTERMOST_*`), a small API client for what the tests ask it
//! themselves, and a user's websocket, where ephemeral answers to presses arrive.

use std::io::Write as _;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::task::JoinHandle;

/// How long the helpers wait for the server.
pub const WAIT: Duration = Duration::from_secs(30);

/// Where the provisioned server is, from `tests/mattermost/run.sh`.
#[derive(Clone, Debug)]
pub struct Env {
    /// Base URL.
    pub url: String,
    /// A system admin session token.
    pub admin_token: String,
    /// The bot's access token.
    pub bot_token: String,
    /// Every provisioned user's password.
    pub password: String,
    /// The server's version, e.g. "11.4.0" (`TM_REAL_MATTERMOST_VERSION`), for the behaviours
    /// that differ between the lines tier 4 runs against (`TM_MM_LINE`).
    pub version: Option<String>,
}

/// The server's connection, or `None` after printing why the test is skipped.
pub fn env() -> Option<Env> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let (Some(url), Some(admin_token), Some(bot_token), Some(password)) = (
        var("TM_REAL_MATTERMOST_URL"),
        var("TM_REAL_MATTERMOST_ADMIN_TOKEN"),
        var("TM_REAL_MATTERMOST_BOT_TOKEN"),
        var("TM_REAL_MATTERMOST_PASSWORD"),
    ) {
        return Some(Env {
            url,
            admin_token,
            bot_token,
            password,
            version: var("TM_REAL_MATTERMOST_VERSION"),
        });
    }
    let cache = std::env::var("TM_PEERS_CACHE").unwrap_or_else(|_| {
        let base = std::env::var("XDG_CACHE_HOME")
            .unwrap_or_else(|_| format!("{}/.cache", std::env::var("HOME").unwrap_or_default()));
        format!("{base}/teleport-mattermost/peers")
    });
    // The line tests/mattermost/build.sh builds and the tier scripts run (TM_MM_LINE).
    let (link, arg, select) = match var("TM_MM_LINE").as_deref() {
        Some("current") => ("mattermost-current", " current", "TM_MM_LINE=current "),
        _ => ("mattermost", "", ""),
    };
    let line = if std::path::Path::new(&format!("{cache}/{link}/bin/mattermost")).exists() {
        format!(
            "skipped: real Mattermost not running here; run {select}tests/mattermost/run-tier4.sh"
        )
    } else {
        format!("skipped: real Mattermost not built; run tests/mattermost/build.sh{arg}")
    };
    // Straight to the process's stderr: the test harness captures `eprintln!`.
    let _ = writeln!(std::io::stderr(), "{line}");
    None
}

/// A small client for what the tests themselves ask the server, honouring its 429s.
#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    /// A client for the server at `base`.
    pub fn new(base: &str) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
        }
    }

    /// Sends a call; returns the status, the headers and the JSON body (`Null` if none).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let mut req = self
                .http
                .request(method.clone(), format!("{}/api/v4{path}", self.base));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = &body {
                req = req.json(b);
            }
            let resp = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let text = resp.text().await.unwrap_or_default();
            if status == 429 && Instant::now() < deadline {
                let secs = headers
                    .get("retry-after")
                    .or_else(|| headers.get("x-ratelimit-reset"))
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(1);
                tokio::time::sleep(Duration::from_millis(secs.clamp(1, 5) * 1000)).await;
                continue;
            }
            let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            return (status, headers, value);
        }
    }

    /// GET, asserting 200.
    pub async fn get(&self, path: &str, token: &str) -> Value {
        let (status, _, body) = self
            .call(reqwest::Method::GET, path, Some(token), None)
            .await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// Logs a user in with a password; returns the session token.
    pub async fn login(&self, username: &str, password: &str) -> String {
        let (status, headers, body) = self
            .call(
                reqwest::Method::POST,
                "/users/login",
                None,
                Some(json!({"login_id": username, "password": password})),
            )
            .await;
        assert_eq!(status, 200, "login {username}: {body}");
        headers
            .get("token")
            .and_then(|v| v.to_str().ok())
            .expect("login answers with a Token header")
            .to_string()
    }

    /// A channel's id by its team's and its own URL names.
    pub async fn channel_id(&self, team: &str, channel: &str, token: &str) -> String {
        self.get(
            &format!("/teams/name/{team}/channels/name/{channel}"),
            token,
        )
        .await["id"]
            .as_str()
            .expect("channel id")
            .to_string()
    }

    /// A user's id by username.
    pub async fn user_id(&self, username: &str, token: &str) -> String {
        self.get(&format!("/users/username/{username}"), token)
            .await["id"]
            .as_str()
            .expect("user id")
            .to_string()
    }

    /// Presses the button `action_id` of a post as the holder of `session`, through
    /// Mattermost (`POST /api/v4/posts/{id}/actions/{action}`): the server calls the
    /// integration. Returns the status and body Mattermost answered.
    pub async fn press(&self, post_id: &str, action_id: &str, session: &str) -> (u16, Value) {
        let (status, _, body) = self
            .call(
                reqwest::Method::POST,
                &format!("/posts/{post_id}/actions/{action_id}"),
                Some(session),
                Some(json!({})),
            )
            .await;
        (status, body)
    }

    /// Submits a dialog as the holder of `session`, as the webapp does
    /// (`POST /api/v4/actions/dialogs/submit`): the server sets `user_id` from the session,
    /// checks the channel and team, and forwards the rest to `url`. Returns the status and
    /// body Mattermost answered (the integration's `{error, errors}` on 200).
    pub async fn submit_dialog(
        &self,
        session: &str,
        opened: &Value,
        state: &str,
        channel_id: &str,
        team_id: &str,
        submission: Value,
    ) -> (u16, Value) {
        let (status, _, body) = self
            .call(
                reqwest::Method::POST,
                "/actions/dialogs/submit",
                Some(session),
                Some(json!({
                    "url": opened["url"],
                    "callback_id": opened["dialog"]["callback_id"],
                    "state": state,
                    "channel_id": channel_id,
                    "team_id": team_id,
                    "submission": submission,
                    "cancelled": false,
                })),
            )
            .await;
        (status, body)
    }

    /// Logs `username` in and opens their websocket, where ephemeral answers arrive.
    pub async fn session(&self, env: &Env, username: &str) -> (String, Events) {
        let token = self.login(username, &env.password).await;
        let events = Events::connect(&env.url, &token).await;
        (token, events)
    }

    /// A post by id.
    pub async fn post(&self, id: &str, token: &str) -> Value {
        self.get(&format!("/posts/{id}"), token).await
    }

    /// Every post of a channel, newest first, each once.
    ///
    /// Pages are `ORDER BY CreateAt DESC LIMIT ? OFFSET ?` (`SqlPostStore.getRootPosts`), so a
    /// post made while paging shifts the rest, and a tie on CreateAt at a page's edge may fall
    /// on either page: one read can show a post twice or not at all. The channel is read until
    /// two reads in a row hold the same posts, and each post is kept once, by id.
    pub async fn channel_posts(&self, channel_id: &str, token: &str) -> Vec<Value> {
        let ids = |posts: &[Value]| {
            posts
                .iter()
                .map(|p| p["id"].to_string())
                .collect::<std::collections::BTreeSet<_>>()
        };
        let mut last = self.channel_posts_once(channel_id, token).await;
        for _ in 0..10 {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let read = self.channel_posts_once(channel_id, token).await;
            if ids(&last) == ids(&read) {
                return read;
            }
            last = read;
        }
        panic!("the posts of channel {channel_id} kept changing over 11 reads");
    }

    async fn channel_posts_once(&self, channel_id: &str, token: &str) -> Vec<Value> {
        let mut seen = std::collections::HashSet::new();
        let mut all = Vec::new();
        for page in 0.. {
            let list = self
                .get(
                    &format!("/channels/{channel_id}/posts?page={page}&per_page=200"),
                    token,
                )
                .await;
            let order: Vec<String> = list["order"]
                .as_array()
                .map(|o| {
                    o.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            if order.is_empty() {
                break;
            }
            for id in order {
                if seen.insert(id.clone()) {
                    all.push(list["posts"][&id].clone());
                }
            }
        }
        all
    }
}

/// Reads a user's websocket events (only text frames matter here).
pub struct Events {
    rx: tokio::sync::mpsc::UnboundedReceiver<Value>,
    task: JoinHandle<()>,
}

impl Drop for Events {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Events {
    /// Opens `/api/v4/websocket` as the holder of `token` and waits for its `hello`.
    pub async fn connect(base: &str, token: &str) -> Events {
        let addr = base.trim_start_matches("http://").trim_end_matches('/');
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect websocket");
        let request = format!(
            "GET /api/v4/websocket HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("upgrade");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).await.expect("upgrade answer");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "websocket refused: {head}"
        );
        let (mut read, _write) = stream.into_split();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let _keep = _write;
            let mut message = Vec::new();
            loop {
                let mut h = [0u8; 2];
                if read.read_exact(&mut h).await.is_err() {
                    return;
                }
                let (fin, opcode) = (h[0] & 0x80 != 0, h[0] & 0x0f);
                let mut len = u64::from(h[1] & 0x7f);
                if len == 126 {
                    len = u64::from(read.read_u16().await.unwrap_or(0));
                } else if len == 127 {
                    len = read.read_u64().await.unwrap_or(0);
                }
                let mut mask = [0u8; 4];
                if h[1] & 0x80 != 0 && read.read_exact(&mut mask).await.is_err() {
                    return;
                }
                let mut payload = vec![0u8; len as usize];
                if read.read_exact(&mut payload).await.is_err() {
                    return;
                }
                if h[1] & 0x80 != 0 {
                    for (i, b) in payload.iter_mut().enumerate() {
                        *b ^= mask[i % 4];
                    }
                }
                match opcode {
                    0x8 => return,
                    0x1 | 0x0 => {
                        message.extend_from_slice(&payload);
                        if fin {
                            if let Ok(v) = serde_json::from_slice::<Value>(&message) {
                                let _ = tx.send(v);
                            }
                            message.clear();
                        }
                    }
                    _ => {}
                }
            }
        });
        let mut events = Events { rx, task };
        let hello = events
            .next_matching(Duration::from_secs(10), |e| e["event"] == "hello")
            .await;
        assert!(hello.is_some(), "no websocket hello");
        events
    }

    /// The next event `f` accepts, within `timeout`.
    pub async fn next_matching(
        &mut self,
        timeout: Duration,
        mut f: impl FnMut(&Value) -> bool,
    ) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(e)) if f(&e) => return Some(e),
                Ok(Some(_)) => continue,
                _ => return None,
            }
        }
    }

    /// The next dialog the server opened for this user about `request_id`: the
    /// `open_dialog` event's `{trigger_id, url, dialog}`. Dialogs for other tests' requests
    /// are told apart by the request id in the dialog's state.
    pub async fn dialog_for(&mut self, request_id: &str) -> Option<Value> {
        let event = self
            .next_matching(WAIT, |e| opened_dialog(e, request_id).is_some())
            .await?;
        opened_dialog(&event, request_id)
    }

    /// What a press that may open a dialog led to: `Ok` with the dialog opened for
    /// `request_id`, or `Err` with the ephemeral answer on `post_id` (a refusal).
    pub async fn dialog_or_answer(
        &mut self,
        request_id: &str,
        post_id: &str,
    ) -> Option<Result<Value, String>> {
        let event = self
            .next_matching(WAIT, |e| {
                opened_dialog(e, request_id).is_some() || ephemeral_message(e, post_id).is_some()
            })
            .await?;
        match opened_dialog(&event, request_id) {
            Some(dialog) => Some(Ok(dialog)),
            None => ephemeral_message(&event, post_id).map(Err),
        }
    }

    /// The message of the next ephemeral post sent to this user about `post_id`.
    ///
    /// Mattermost sends an action's ephemeral answer to every session of the user, and
    /// the tests share one server and run in parallel, so answers to other tests' presses
    /// arrive here too; Mattermost threads the answer under the pressed post, which tells
    /// them apart.
    pub async fn ephemeral_on(&mut self, post_id: &str) -> Option<String> {
        let event = self
            .next_matching(WAIT, |e| ephemeral_message(e, post_id).is_some())
            .await?;
        ephemeral_message(&event, post_id)
    }
}

/// The `{trigger_id, url, dialog}` of an `open_dialog` event about `request_id`.
fn opened_dialog(event: &Value, request_id: &str) -> Option<Value> {
    if event["event"] != "open_dialog" {
        return None;
    }
    let opened: Value = serde_json::from_str(event["data"]["dialog"].as_str()?).ok()?;
    let state: Value = serde_json::from_str(opened["dialog"]["state"].as_str()?).ok()?;
    (state["request_id"] == request_id).then_some(opened)
}

/// The message of an `ephemeral_message` event threaded under `post_id`.
///
/// Mattermost sends an action's ephemeral answer to every session of the user, and the tests
/// share one server and run in parallel, so answers to other tests' presses arrive too;
/// Mattermost threads the answer under the pressed post, which tells them apart.
fn ephemeral_message(event: &Value, post_id: &str) -> Option<String> {
    if event["event"] != "ephemeral_message" {
        return None;
    }
    let post: Value = serde_json::from_str(event["data"]["post"].as_str()?).ok()?;
    if post["root_id"] != post_id {
        return None;
    }
    post["message"].as_str().map(str::to_string)
}
