//! Tier 4: the real bridge and callback server, the Teleport double, and a REAL Mattermost
//! server (Team Edition built from its Go module by `tests/mattermost/build.sh`, on a private
//! PostgreSQL, inside a network namespace that has only loopback).
//!
//! Run the tier with `tests/mattermost/run-tier4.sh`: it starts and provisions the server and
//! passes its address and credentials in `TM_REAL_MATTERMOST_*`. Without them every test
//! prints one line saying why it was skipped and returns.
//!
//! Button presses go through Mattermost itself: a logged-in user calls
//! `POST /api/v4/posts/{post_id}/actions/{action_id}`, the Mattermost server POSTs to our
//! callback, applies our `update` and sends our `ephemeral_text` to that user over the
//! websocket, where the test reads it.

use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use teleport_mattermost::message::{self, Links};
use teleport_mattermost::request::RequestState;
use teleport_mattermost::settings::RetryPolicy;
use teleport_mattermost_testkit::stack::{CHANNEL, MattermostTarget, Plugin, StackOptions, TEAM};
use teleport_mattermost_testkit::teleport::NewRequest;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(30);

/// Where the provisioned server is, from `tests/mattermost/run.sh`.
#[derive(Clone)]
struct Env {
    url: String,
    admin_token: String,
    bot_token: String,
    password: String,
}

/// The server's connection, or `None` after printing why the test is skipped.
fn env() -> Option<Env> {
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
        });
    }
    let cache = std::env::var("TM_PEERS_CACHE").unwrap_or_else(|_| {
        let base = std::env::var("XDG_CACHE_HOME")
            .unwrap_or_else(|_| format!("{}/.cache", std::env::var("HOME").unwrap_or_default()));
        format!("{base}/teleport-mattermost/peers")
    });
    let line = if std::path::Path::new(&format!("{cache}/mattermost/bin/mattermost")).exists() {
        "skipped: real Mattermost not running here; run tests/mattermost/run-tier4.sh"
    } else {
        "skipped: real Mattermost not built; run tests/mattermost/build.sh"
    };
    // Straight to the process's stderr: the test harness captures `eprintln!`.
    let _ = writeln!(std::io::stderr(), "{line}");
    None
}

macro_rules! real_env {
    () => {
        match env() {
            Some(env) => env,
            None => return,
        }
    };
}

/// A small client for what the tests themselves ask the server, honouring its 429s.
#[derive(Clone)]
struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn new(base: &str) -> Self {
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
    async fn call(
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

    async fn get(&self, path: &str, token: &str) -> Value {
        let (status, _, body) = self
            .call(reqwest::Method::GET, path, Some(token), None)
            .await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// Logs a user in with a password; returns the session token.
    async fn login(&self, username: &str, password: &str) -> String {
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

    async fn user_id(&self, username: &str, token: &str) -> String {
        self.get(&format!("/users/username/{username}"), token)
            .await["id"]
            .as_str()
            .expect("user id")
            .to_string()
    }

    async fn post(&self, id: &str, token: &str) -> Value {
        self.get(&format!("/posts/{id}"), token).await
    }

    /// Every post of a channel, newest first, page by page.
    async fn channel_posts(&self, channel_id: &str, token: &str) -> Vec<Value> {
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
                all.push(list["posts"][&id].clone());
            }
        }
        all
    }
}

/// Reads a user's websocket events (only text frames matter here).
struct Events {
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
    async fn connect(base: &str, token: &str) -> Events {
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

    async fn next_matching(
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

    /// The message of the next ephemeral post sent to this user about `post_id`.
    ///
    /// Mattermost sends an action's ephemeral answer to every session of the user, and
    /// the tests share one server and run in parallel, so answers to other tests' presses
    /// arrive here too; Mattermost threads the answer under the pressed post, which tells
    /// them apart.
    async fn ephemeral_on(&mut self, post_id: &str) -> Option<String> {
        let event = self
            .next_matching(WAIT, |e| {
                e["event"] == "ephemeral_message"
                    && e["data"]["post"]
                        .as_str()
                        .and_then(|p| serde_json::from_str::<Value>(p).ok())
                        .is_some_and(|p| p["root_id"] == post_id)
            })
            .await?;
        let post: Value = serde_json::from_str(event["data"]["post"].as_str()?).ok()?;
        post["message"].as_str().map(str::to_string)
    }
}

/// Log lines of the bridge, captured for the current thread's tasks.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Default)]
struct Options {
    approvers: Vec<String>,
    recipients: Vec<String>,
    /// Replaces the provisioned bot token.
    token: Option<String>,
}

/// The plugin under test posting to the real Mattermost; it dereferences to the
/// [`Plugin`] (Teleport double, instance, engine and callback server).
struct Real {
    plugin: Plugin,
    env: Env,
    api: Api,
    channel_id: String,
    logs: Logs,
    _log_guard: tracing::subscriber::DefaultGuard,
}

impl std::ops::Deref for Real {
    type Target = Plugin;
    fn deref(&self) -> &Plugin {
        &self.plugin
    }
}

impl std::ops::DerefMut for Real {
    fn deref_mut(&mut self) -> &mut Plugin {
        &mut self.plugin
    }
}

impl Real {
    async fn start(env: Env, options: Options) -> Real {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("teleport_mattermost=debug")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let log_guard = tracing::subscriber::set_default(subscriber);

        let api = Api::new(&env.url);
        let channel_id = api
            .get(
                &format!("/teams/name/{TEAM}/channels/name/{CHANNEL}"),
                &env.admin_token,
            )
            .await["id"]
            .as_str()
            .expect("channel id")
            .to_string();
        let target = MattermostTarget {
            url: env.url.parse().expect("Mattermost URL"),
            token: options.token.unwrap_or_else(|| env.bot_token.clone()),
        };
        let plugin = Plugin::start(
            target,
            &StackOptions {
                approvers: options.approvers,
                recipients: options.recipients,
                init_timeout: Duration::from_secs(5),
                // The server's own limiter is what is exercised here, with the retry
                // policy an install gets by default.
                retry: RetryPolicy::default(),
                ..StackOptions::default()
            },
        )
        .await;
        Real {
            plugin,
            env,
            api,
            channel_id,
            logs,
            _log_guard: log_guard,
        }
    }

    /// Starts and waits until the engine watches Teleport and has passed its health check.
    async fn started(env: Env, options: Options) -> Real {
        let real = Real::start(env, options).await;
        let status = real
            .status_until(WAIT, |s| {
                s.teleport.ok == Some(true) && s.mattermost.ok.is_some()
            })
            .await;
        assert_eq!(
            status.mattermost.ok,
            Some(true),
            "health check: {:?}",
            status.mattermost
        );
        real
    }

    async fn eventually(&self, timeout: Duration, mut check: impl FnMut(&Real) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if check(self) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        check(self)
    }

    /// Waits until the request's channel post is recorded; returns its post id.
    async fn wait_posted(&self, id: &str) -> String {
        assert!(
            self.eventually(WAIT, |r| r.data(id).message_in(&r.channel_id).is_some())
                .await,
            "request {id} was never posted: {:?}",
            self.data(id)
        );
        self.data(id)
            .message_in(&self.channel_id)
            .expect("recorded")
            .post_id
            .clone()
    }

    fn links(&self) -> Links {
        match self.instance.cluster() {
            Some(info) => Links::from_ping(info.advanced_workflows, &info.proxy_public_addr),
            None => Links::Tsh,
        }
    }

    async fn post(&self, id: &str) -> Value {
        self.api.post(id, &self.env.admin_token).await
    }

    /// Presses a button as `username`, through Mattermost; returns its answer.
    async fn press(&self, post_id: &str, action_id: &str, session: &str) -> (u16, Value) {
        let (status, _, body) = self
            .api
            .call(
                reqwest::Method::POST,
                &format!("/posts/{post_id}/actions/{action_id}"),
                Some(session),
                Some(json!({})),
            )
            .await;
        (status, body)
    }

    async fn session(&self, username: &str) -> (String, Events) {
        let token = self.api.login(username, &self.env.password).await;
        let events = Events::connect(&self.env.url, &token).await;
        (token, events)
    }
}

fn request(user: &str) -> NewRequest {
    NewRequest {
        user: user.into(),
        roles: vec!["dba".into(), "auditor".into()],
        reason: "fix the `prod` database".into(),
        ..Default::default()
    }
}

fn actions(post: &Value) -> Vec<Value> {
    post["props"]["attachments"]
        .as_array()
        .map(|a| {
            a.iter()
                .flat_map(|att| att["actions"].as_array().cloned().unwrap_or_default())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn pending_request_posts_to_channel_and_dms_reviewers_with_exact_text_and_buttons() {
    let env = real_env!();
    let real = Real::started(env, Options::default()).await;
    let id = real.teleport.create_request(NewRequest {
        suggested_reviewers: vec![
            "alice@example.com".into(),
            "carol@example.com".into(),
            "ghost@example.com".into(),
        ],
        ..request("bob@example.com")
    });
    assert!(
        real.eventually(WAIT, |r| r.data(&id).messages.len() == 3)
            .await,
        "posted to the channel and two DMs: {:?}",
        real.data(&id)
    );
    let admin = real.env.admin_token.clone();
    let bot = real.instance.bot_user_id().expect("bot id").to_string();
    let mut expected_channels = vec![real.channel_id.clone()];
    for user in ["alice", "carol"] {
        let uid = real.api.user_id(user, &admin).await;
        let mut pair = [bot.clone(), uid];
        pair.sort();
        expected_channels.push(pair.join("__"));
    }
    let pending = real.teleport.request(&id).expect("request");
    let text = message::post_text(&pending, RequestState::Pending, None, &real.links());
    let mut seen_channels = Vec::new();
    for m in real.data(&id).messages {
        let post = real.post(&m.post_id).await;
        assert_eq!(post["channel_id"], m.channel_id);
        assert_eq!(post["root_id"], "");
        assert_eq!(post["user_id"], bot.as_str(), "posted by the bot");
        assert_eq!(
            post["message"],
            text.as_str(),
            "the exact text of CONTRACTS §3"
        );
        assert_eq!(post["props"]["teleport_request_id"], id.as_str());
        let actions = actions(&post);
        let names: Vec<&str> = actions.iter().filter_map(|a| a["name"].as_str()).collect();
        let ids: Vec<&str> = actions.iter().filter_map(|a| a["id"].as_str()).collect();
        assert_eq!(names, ["Approve", "Deny"], "{post}");
        assert_eq!(ids, [message::ACTION_APPROVE, message::ACTION_DENY]);
        let channel = real
            .api
            .get(&format!("/channels/{}", m.channel_id), &admin)
            .await;
        seen_channels.push(if channel["type"] == "D" {
            channel["name"].as_str().unwrap().to_string()
        } else {
            channel["id"].as_str().unwrap().to_string()
        });
    }
    seen_channels.sort();
    expected_channels.sort();
    assert_eq!(seen_channels, expected_channels);
    assert!(
        real.logs.text().contains("skipping recipient")
            && real.logs.text().contains("ghost@example.com"),
        "the unknown reviewer is reported: {}",
        real.logs.text()
    );
}

/// Presses `action` as `user` on a fresh request's post and checks every effect: the
/// ephemeral answer, the one state change with its delegator, and the post edited to
/// `outcome` without buttons, both by the callback's `update` and by the engine's own
/// edit after the watch event.
async fn button_round_trip(
    action: &str,
    user: &str,
    state: RequestState,
    answer: &str,
    outcome: &str,
) {
    let env = real_env!();
    let real = Real::started(env, Options::default()).await;
    let id = real.teleport.create_request(request("bob@example.com"));
    let post_id = real.wait_posted(&id).await;
    let (session, mut events) = real.session(user).await;
    let (status, body) = real.press(&post_id, action, &session).await;
    assert_eq!(status, 200, "press answered {body}");
    let ephemeral = events
        .ephemeral_on(&post_id)
        .await
        .expect("an ephemeral answer");
    assert!(ephemeral.contains(answer), "{ephemeral}");

    let changes = real.teleport.state_changes();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].id, id);
    assert_eq!(changes[0].state, state);
    assert_eq!(
        changes[0].delegator,
        format!("mattermost:{user}@example.com")
    );
    let post = real.post(&post_id).await;
    assert!(
        post["message"].as_str().unwrap().contains(outcome),
        "{post}"
    );
    assert!(actions(&post).is_empty(), "no buttons: {post}");
    // The engine's own edit, after the watch event, keeps the same outcome.
    assert!(
        real.eventually(WAIT, |r| r.data(&id).edited == Some(state))
            .await
    );
    let post = real.post(&post_id).await;
    assert!(
        post["message"].as_str().unwrap().contains(outcome),
        "{post}"
    );
    assert!(actions(&post).is_empty(), "no buttons: {post}");
}

#[tokio::test]
async fn approve_button_round_trip_through_mattermost() {
    button_round_trip(
        message::ACTION_APPROVE,
        "alice",
        RequestState::Approved,
        "approved",
        "✅ APPROVED by @alice",
    )
    .await;
}

#[tokio::test]
async fn deny_button_round_trip_through_mattermost() {
    button_round_trip(
        message::ACTION_DENY,
        "carol",
        RequestState::Denied,
        "denied",
        "❌ DENIED by @carol",
    )
    .await;
}

#[tokio::test]
async fn a_non_approvers_press_changes_nothing_and_is_told_why() {
    let env = real_env!();
    let real = Real::started(
        env,
        Options {
            approvers: vec!["alice".into()],
            ..Default::default()
        },
    )
    .await;
    let id = real.teleport.create_request(request("bob@example.com"));
    let post_id = real.wait_posted(&id).await;
    let before = real.post(&post_id).await;
    let (carol, mut events) = real.session("carol").await;
    let (status, body) = real.press(&post_id, message::ACTION_APPROVE, &carol).await;
    assert_eq!(status, 200, "press answered {body}");
    let ephemeral = events
        .ephemeral_on(&post_id)
        .await
        .expect("an ephemeral refusal");
    assert!(ephemeral.contains("not allowed"), "{ephemeral}");
    assert!(real.teleport.state_changes().is_empty());
    assert_eq!(
        real.teleport.request(&id).unwrap().state,
        RequestState::Pending
    );
    let after = real.post(&post_id).await;
    assert_eq!(after["message"], before["message"]);
    assert_eq!(after["update_at"], before["update_at"], "post untouched");
    assert_eq!(actions(&after).len(), 2);
}

#[tokio::test]
async fn a_press_on_a_request_resolved_elsewhere_writes_nothing() {
    let env = real_env!();
    let mut real = Real::started(env, Options::default()).await;
    let id = real.teleport.create_request(request("bob@example.com"));
    let post_id = real.wait_posted(&id).await;
    // With the engine down the post still shows its buttons after `tsh` resolved it.
    real.crash().await;
    real.teleport
        .resolve(&id, RequestState::Denied, "denied with tsh");
    let (alice, mut events) = real.session("alice").await;
    let (status, body) = real.press(&post_id, message::ACTION_APPROVE, &alice).await;
    assert_eq!(status, 200, "press answered {body}");
    let ephemeral = events
        .ephemeral_on(&post_id)
        .await
        .expect("an ephemeral answer");
    assert!(ephemeral.contains("already DENIED"), "{ephemeral}");
    assert!(
        real.teleport.state_changes().is_empty(),
        "no Teleport write"
    );
    assert_eq!(
        real.teleport.request(&id).unwrap().state,
        RequestState::Denied
    );
}

#[tokio::test]
async fn a_review_becomes_a_thread_reply() {
    let env = real_env!();
    let real = Real::started(env, Options::default()).await;
    let id = real.teleport.create_request(request("bob@example.com"));
    let root = real.wait_posted(&id).await;
    real.teleport.review(
        &id,
        "alice@example.com",
        RequestState::Approved,
        "looks fine",
    );
    assert!(
        real.eventually(WAIT, |r| r.data(&id).reviews_count == 1)
            .await,
        "the review was replied to: {:?}",
        real.data(&id)
    );
    let thread = real
        .api
        .get(&format!("/posts/{root}/thread"), &real.env.admin_token)
        .await;
    let replies: Vec<&Value> = thread["posts"]
        .as_object()
        .unwrap()
        .values()
        .filter(|p| p["id"] != root.as_str())
        .collect();
    assert_eq!(replies.len(), 1, "{thread}");
    let review = &real.teleport.request(&id).unwrap().reviews[0];
    assert_eq!(replies[0]["root_id"], root.as_str());
    assert_eq!(replies[0]["channel_id"], real.channel_id.as_str());
    assert_eq!(
        replies[0]["message"],
        message::review_reply(review).as_str()
    );
}

#[tokio::test]
async fn expiry_edits_every_post_to_expired() {
    let env = real_env!();
    let real = Real::started(
        env,
        Options {
            recipients: vec!["alice@example.com".into()],
            ..Default::default()
        },
    )
    .await;
    let id = real.teleport.create_request(request("bob@example.com"));
    assert!(
        real.eventually(WAIT, |r| r.data(&id).messages.len() == 2)
            .await
    );
    let pending = real.teleport.request(&id).unwrap();
    real.teleport.expire(&id);
    assert!(
        real.eventually(WAIT, |r| r.data(&id).edited == Some(RequestState::Expired))
            .await,
        "{:?}",
        real.data(&id)
    );
    let text = message::post_text(&pending, RequestState::Expired, None, &real.links());
    for m in real.data(&id).messages {
        let post = real.post(&m.post_id).await;
        assert_eq!(post["message"], text.as_str());
        assert!(
            post["message"].as_str().unwrap().contains("⌛ EXPIRED"),
            "{post}"
        );
        assert!(actions(&post).is_empty(), "{post}");
        assert!(post["edit_at"].as_i64().unwrap_or(0) > 0, "shown as edited");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_300_is_posted_completely_and_once_under_the_servers_rate_limit() {
    let env = real_env!();
    let real = Real::started(env, Options::default()).await;
    let started = Instant::now();
    let ids: Vec<String> = (0..300)
        .map(|_| real.teleport.create_request(request("bob@example.com")))
        .collect();
    assert!(
        real.eventually(Duration::from_secs(240), |r| ids
            .iter()
            .all(|id| r.data(id).message_in(&r.channel_id).is_some()))
            .await,
        "all 300 posted; missing {}",
        ids.iter()
            .filter(|id| real.data(id).message_in(&real.channel_id).is_none())
            .count()
    );
    let took = started.elapsed();
    // Count through the API what Mattermost really holds.
    let posts = real
        .api
        .channel_posts(&real.channel_id, &real.env.admin_token)
        .await;
    let mut counts = std::collections::HashMap::<String, usize>::new();
    for p in &posts {
        if p["root_id"] == "" {
            if let Some(rid) = p["props"]["teleport_request_id"].as_str() {
                *counts.entry(rid.to_string()).or_default() += 1;
            }
        }
    }
    for id in &ids {
        assert_eq!(counts.get(id), Some(&1), "request {id} posted exactly once");
    }
    let stats = real.instance.mattermost().stats();
    let _ = writeln!(
        std::io::stderr(),
        "burst of 300 posted in {:.1} s; {} answers 429, {} retries",
        took.as_secs_f64(),
        stats.rate_limited,
        stats.retries
    );
    assert!(
        stats.rate_limited > 0,
        "Mattermost's own rate limiter answered 429 at least once: {stats:?}"
    );
}

#[tokio::test]
async fn a_wrong_bot_token_fails_the_health_check_clearly() {
    let env = real_env!();
    let real = Real::start(
        env,
        Options {
            token: Some("wrongtokenwrongtokenwrongto".into()),
            ..Default::default()
        },
    )
    .await;
    let status = real.status_until(WAIT, |s| s.mattermost.ok.is_some()).await;
    assert_eq!(status.mattermost.ok, Some(false), "{:?}", status.mattermost);
    assert_eq!(status.mattermost.reason, "Unauthorized");
    let _ = writeln!(
        std::io::stderr(),
        "wrong token reported as: {}",
        status.mattermost.message
    );
    assert!(
        status.mattermost.message.contains("401")
            || status.mattermost.message.to_lowercase().contains("token"),
        "{}",
        status.mattermost.message
    );
}
