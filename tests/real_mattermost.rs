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

use serde_json::Value;
use teleport_mattermost::instance::Clock;
use teleport_mattermost::message::{self, Links};
use teleport_mattermost::request::RequestState;
use teleport_mattermost::settings::{
    Priority, PrioritySettings, ReasonPrompt, ReminderSettings, RequesterLookup, RequesterSettings,
    RetryPolicy,
};
use teleport_mattermost_testkit::real_mattermost::{Api, Env, Events, env};
use teleport_mattermost_testkit::stack::{CHANNEL, MattermostTarget, Plugin, StackOptions, TEAM};
use teleport_mattermost_testkit::teleport::NewRequest;

const WAIT: Duration = Duration::from_secs(30);

macro_rules! real_env {
    () => {
        match env() {
            Some(env) => env,
            None => return,
        }
    };
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
    approver_channels: Vec<String>,
    clock: Clock,
    recipients: Vec<String>,
    /// Replaces the provisioned bot token.
    token: Option<String>,
    /// Whether Deny asks for a reason.
    deny_reason: ReasonPrompt,
    /// What the requester is told.
    requester: RequesterSettings,
    /// Reminders.
    reminders: Option<ReminderSettings>,
    /// How pending requests' channel posts stand out.
    priority: PrioritySettings,
    /// Reach Mattermost through this URL (a proxy in front of it) instead of the server's.
    url: Option<String>,
    /// The test changes server settings the others rely on: it runs alone
    /// ([`SERVER_SETTINGS`]).
    exclusive: bool,
}

/// Tests share one server and run in parallel. Every test holds this lock for reading while
/// its plugin runs; a test that changes a server setting the others' posts depend on (the
/// post edit time limit) holds it for writing, so it runs alone, and restores the setting
/// before it lets go.
static SERVER_SETTINGS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// The plugin under test posting to the real Mattermost; it dereferences to the
/// [`Plugin`] (Teleport double, instance, engine and callback server).
struct Real {
    plugin: Plugin,
    env: Env,
    api: Api,
    channel_id: String,
    logs: Logs,
    _log_guard: tracing::subscriber::DefaultGuard,
    _shared: Option<tokio::sync::RwLockReadGuard<'static, ()>>,
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
        let shared = match options.exclusive {
            true => None,
            false => Some(SERVER_SETTINGS.read().await),
        };
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("teleport_mattermost=debug")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let log_guard = tracing::subscriber::set_default(subscriber);

        let api = Api::new(&env.url);
        let channel_id = api.channel_id(TEAM, CHANNEL, &env.admin_token).await;
        let target = MattermostTarget {
            url: options
                .url
                .as_deref()
                .unwrap_or(&env.url)
                .parse()
                .expect("Mattermost URL"),
            token: options.token.unwrap_or_else(|| env.bot_token.clone()),
        };
        let plugin = Plugin::start(
            target,
            &StackOptions {
                approvers: options.approvers,
                approver_channels: options.approver_channels,
                clock: options.clock,
                recipients: options.recipients,
                deny_reason: options.deny_reason,
                requester: options.requester,
                reminders: options.reminders,
                priority: options.priority,
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
            _shared: shared,
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
        self.api.press(post_id, action_id, session).await
    }

    async fn session(&self, username: &str) -> (String, Events) {
        self.api.session(&self.env, username).await
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
    // alice and carol are members of the channel: their messages carry buttons, so no post
    // needs a link to the channel's; every post names the suggested reviewers.
    let text = message::post_text_with(
        &pending,
        RequestState::Pending,
        None,
        &real.links(),
        real.instance.mattermost().max_post_chars().await,
        message::Extras {
            suggested: &pending.suggested_reviewers,
            suggested_messaged: 3,
            channel_post: None,
        },
    );
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
    let twice: Vec<&String> = ids
        .iter()
        .filter(|id| counts.get(*id) != Some(&1))
        .collect();
    if !twice.is_empty() {
        // What the plugin did for each, and the posts Mattermost holds, for the record.
        let logs = real.logs.text();
        for id in &twice {
            let _ = writeln!(
                std::io::stderr(),
                "--- request {id} posted {:?} times",
                counts.get(*id)
            );
            for p in posts
                .iter()
                .filter(|p| p["props"]["teleport_request_id"] == id.as_str())
            {
                let _ = writeln!(
                    std::io::stderr(),
                    "post {} create_at {} pending_post_id {} root {:?}",
                    p["id"],
                    p["create_at"],
                    p["pending_post_id"],
                    p["root_id"]
                );
            }
            for line in logs.lines().filter(|l| l.contains(id.as_str())) {
                let _ = writeln!(std::io::stderr(), "{line}");
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

/// The real server's MaxPostSize (its client config) bounds the post: a 20,000-character
/// reason is posted up to that limit, not refused and not cut at Teleport's 500 bytes.
#[tokio::test]
async fn a_20000_character_reason_is_posted_whole_up_to_the_servers_limit() {
    let env = real_env!();
    let real = Real::started(env, Options::default()).await;
    let id = real.teleport.create_request(NewRequest {
        reason: "r".repeat(20_000),
        ..request("bob@example.com")
    });
    let post_id = real.wait_posted(&id).await;
    let post = real.post(&post_id).await;
    let text = post["message"].as_str().unwrap();
    let chars = text.chars().count();
    let config = real
        .api
        .get("/config/client?format=old", &real.env.admin_token)
        .await;
    let limit: usize = config["MaxPostSize"].as_str().unwrap().parse().unwrap();
    assert!(chars <= limit && chars > limit - 200, "{chars} of {limit}");
    assert!(text.contains("(truncated)"));
    assert!(text.contains(&format!("**Request ID**: {id}")));
}

#[tokio::test]
async fn a_deny_reason_is_asked_in_mattermosts_own_dialog_and_recorded() {
    let env = real_env!();
    let real = Real::started(
        env,
        Options {
            deny_reason: ReasonPrompt::Required,
            ..Default::default()
        },
    )
    .await;
    let id = real.teleport.create_request(request("bob@example.com"));
    let post_id = real.wait_posted(&id).await;
    let team_id = real
        .api
        .get(&format!("/teams/name/{TEAM}"), &real.env.admin_token)
        .await["id"]
        .as_str()
        .expect("team id")
        .to_string();
    let (carol, mut events) = real.session("carol").await;
    // 6.7.2 accepts a press's trigger_id for 3 seconds (11.4 for 30). The other tests share the bot,
    // and Mattermost's rate limiter counts per user: when their bursts hold the bot's
    // dialog call past that, the press is refused with "press Deny again", as a reviewer
    // would see it, and is pressed again.
    let mut refusals = Vec::new();
    let opened = loop {
        let (status, body) = real.press(&post_id, message::ACTION_DENY, &carol).await;
        assert_eq!(status, 200, "press answered {body}");
        match events.dialog_or_answer(&id, &post_id).await {
            Some(Ok(opened)) => break opened,
            Some(Err(text)) if text.contains("Press Deny again") && refusals.len() < 5 => {
                refusals.push(text);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            other => {
                panic!("neither a dialog nor a retryable answer: {other:?} after {refusals:?}")
            }
        }
    };
    assert!(
        opened["url"]
            .as_str()
            .is_some_and(|u| u.ends_with("/v1/dialogs/test/team-a")),
        "{opened}"
    );
    assert_eq!(opened["dialog"]["elements"][0]["optional"], false);
    let state = opened["dialog"]["state"].as_str().unwrap().to_string();
    assert!(
        real.teleport.state_changes().is_empty(),
        "nothing decided yet"
    );
    // The state came back through the browser: a flipped action, or carol's dialog
    // submitted from alice's session, is refused and reaches nothing.
    let mut flipped: Value = serde_json::from_str(&state).unwrap();
    flipped["action"] = "approve".into();
    let (status, body) =
        submit_reason(&real, &opened, &team_id, &carol, &flipped.to_string(), "x").await;
    // Mattermost turns our 401 into its generic "Action integration error." (400).
    assert_eq!(status, 400, "a tampered state is refused: {body}");
    assert_eq!(
        body["id"],
        teleport_mattermost_testkit::mattermost::ACTION_INTEGRATION_ERROR
    );
    let (alice, _alice_events) = real.session("alice").await;
    let (status, body) = submit_reason(&real, &opened, &team_id, &alice, &state, "x").await;
    assert_eq!(status, 400, "another user's dialog is refused: {body}");
    assert!(real.teleport.state_changes().is_empty());

    // An empty reason keeps the dialog open with the field's error.
    let (status, body) = submit_reason(&real, &opened, &team_id, &carol, &state, " ").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["errors"]["reason"], "A reason is required to deny this request.",
        "{body}"
    );
    assert!(real.teleport.state_changes().is_empty());

    let (status, body) = submit_reason(
        &real,
        &opened,
        &team_id,
        &carol,
        &state,
        "no change window today",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.get("error").is_none() && body.get("errors").is_none(),
        "closed: {body}"
    );
    let changes = real.teleport.state_changes();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].state, RequestState::Denied);
    assert_eq!(changes[0].delegator, "mattermost:carol@example.com");
    assert!(
        changes[0].reason.ends_with(": no change window today"),
        "{}",
        changes[0].reason
    );
    let post = real.post(&post_id).await;
    let text = post["message"].as_str().unwrap();
    assert!(text.contains("❌ DENIED by @carol"), "{post}");
    assert!(text.contains("no change window today"), "{post}");
    assert!(actions(&post).is_empty(), "no buttons: {post}");
}

/// Submits the reason dialog `opened` as the holder of `session`, through Mattermost.
async fn submit_reason(
    real: &Real,
    opened: &Value,
    team_id: &str,
    session: &str,
    state: &str,
    reason: &str,
) -> (u16, Value) {
    real.api
        .submit_dialog(
            session,
            opened,
            state,
            &real.channel_id,
            team_id,
            serde_json::json!({ "reason": reason }),
        )
        .await
}

#[tokio::test]
async fn the_requester_is_messaged_and_reminders_stop_after_approval() {
    let env = real_env!();
    // The plugin's schedule runs on a hand-set clock: the test says when each slot is due,
    // instead of racing the wall clock on a busy machine.
    let clock = Clock::manual(chrono::Utc::now());
    // A one-second `after` keeps the schedule's tick (a quarter of it) short.
    let (after, every) = (Duration::from_secs(1), Duration::from_secs(3600));
    let real = Real::started(
        env,
        Options {
            requester: RequesterSettings {
                lookup: RequesterLookup::Email,
                notify_on_post: true,
            },
            reminders: Some(ReminderSettings {
                after,
                every,
                max: 3,
            }),
            clock: clock.clone(),
            ..Default::default()
        },
    )
    .await;
    let id = real.teleport.create_request(NewRequest {
        suggested_reviewers: vec!["carol@example.com".into()],
        ..request("bob@example.com")
    });
    let post_id = real.wait_posted(&id).await;
    let created = real.teleport.request(&id).unwrap().created.unwrap();

    // Bob reads his direct channel with the bot, as himself.
    let bob = real.api.login("bob", &real.env.password).await;
    let bob_id = real.api.user_id("bob", &bob).await;
    let bot_id = real
        .instance
        .bot_user_id()
        .expect("health check ran")
        .to_string();
    let (status, _, dm) = real
        .api
        .call(
            reqwest::Method::POST,
            "/channels/direct",
            Some(&bob),
            Some(serde_json::json!([bob_id, bot_id])),
        )
        .await;
    assert_eq!(status, 201, "{dm}");
    let dm_id = dm["id"].as_str().unwrap().to_string();
    let messages = |posts: Vec<Value>| -> Vec<String> {
        posts
            .iter()
            .filter(|p| p["props"]["teleport_request_id"] == id.as_str())
            .map(|p| p["message"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let deadline = Instant::now() + WAIT;
    let mut told = Vec::new();
    while Instant::now() < deadline && told.is_empty() {
        told = messages(real.api.channel_posts(&dm_id, &bob).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        told,
        vec![format!(
            "⏳ Your access request `{id}` for roles `dba`, `auditor` was posted to ~{CHANNEL} for review. You will get a message here when it is decided."
        )]
    );

    // Slot 1 comes due: a reminder in the channel thread, mentioning the suggested reviewer.
    clock.set(created + chrono::Duration::from_std(after).unwrap() + chrono::Duration::seconds(5));
    let reminders = |posts: &[Value]| -> Vec<Value> {
        posts
            .iter()
            .filter(|p| {
                p["root_id"] == post_id.as_str()
                    && p["props"]["teleport_note"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("remind"))
            })
            .cloned()
            .collect()
    };
    let admin = real.env.admin_token.clone();
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    while Instant::now() < deadline && seen.is_empty() {
        seen = reminders(&real.api.channel_posts(&real.channel_id, &admin).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!seen.is_empty(), "a reminder was posted in the thread");
    let first = seen.last().unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        first.starts_with("⏰ Reminder 1 of 3: this request has waited 0m")
            && first.ends_with(" @carol"),
        "{first}"
    );

    let (alice, _events) = real.session("alice").await;
    let (status, body) = real.press(&post_id, message::ACTION_APPROVE, &alice).await;
    assert_eq!(status, 200, "{body}");
    let at_decision = reminders(&real.api.channel_posts(&real.channel_id, &admin).await).len();
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline && told.len() < 2 {
        told = messages(real.api.channel_posts(&dm_id, &bob).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Newest first.
    assert_eq!(told.len(), 2, "{told:?}");
    assert!(
        told[0].starts_with(&format!(
            "✅ Your access request `{id}` for roles `dba`, `auditor` was APPROVED by @alice."
        )),
        "{}",
        told[0]
    );

    // Every later slot comes due: nothing after the approval, and no slot twice.
    clock.set(created + chrono::Duration::from_std(after + every * 3).unwrap());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = reminders(&real.api.channel_posts(&real.channel_id, &admin).await);
    assert_eq!(after.len(), at_decision, "no reminder after the approval");
    let tags: std::collections::BTreeSet<&str> = after
        .iter()
        .map(|p| p["props"]["teleport_note"].as_str().unwrap())
        .collect();
    assert_eq!(tags.len(), after.len(), "each slot once: {tags:?}");
}

/// A name no other test on the shared server uses.
fn unique(prefix: &str) -> String {
    format!("{prefix}{}", &uuid_like()[..8])
}

fn uuid_like() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    format!("{:016x}", h.finish())
}

impl Real {
    async fn admin_call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let (status, _, answer) = self
            .api
            .call(method, path, Some(&self.env.admin_token), Some(body))
            .await;
        assert!((200..300).contains(&status), "{path}: {status} {answer}");
        answer
    }

    async fn team_id(&self) -> String {
        self.api
            .get(&format!("/teams/name/{TEAM}"), &self.env.admin_token)
            .await["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Creates a user on the team, in no channel; returns their id.
    async fn team_user(&self, username: &str) -> String {
        let user = self
            .admin_call(
                reqwest::Method::POST,
                "/users",
                serde_json::json!({
                    "username": username,
                    "email": format!("{username}@example.com"),
                    "password": self.env.password,
                }),
            )
            .await;
        let id = user["id"].as_str().unwrap().to_string();
        let team = self.team_id().await;
        self.admin_call(
            reqwest::Method::POST,
            &format!("/teams/{team}/members"),
            serde_json::json!({"team_id": team, "user_id": id}),
        )
        .await;
        id
    }

    /// Creates a channel on the team (`P` private or `O` public); returns its id.
    async fn new_channel(&self, name: &str, kind: &str) -> String {
        let team = self.team_id().await;
        self.admin_call(
            reqwest::Method::POST,
            "/channels",
            serde_json::json!({"team_id": team, "name": name, "display_name": name, "type": kind}),
        )
        .await["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn add_to_channel(&self, channel_id: &str, user_id: &str) {
        self.admin_call(
            reqwest::Method::POST,
            &format!("/channels/{channel_id}/members"),
            serde_json::json!({"user_id": user_id}),
        )
        .await;
    }

    fn bot_id(&self) -> String {
        self.instance
            .bot_user_id()
            .expect("health check ran")
            .to_string()
    }
}

/// With no approvers set, the channel is the boundary. Mattermost 6.7.2 itself keeps a team
/// member outside the channel from pressing there (403; 11.4 lets them press, and the plugin
/// refuses); in another channel the admin posts to, a
/// member of that channel who is not in the plugin's channel is refused by the plugin, until
/// Mattermost adds them to it: no restart.
#[tokio::test]
async fn outside_the_channel_a_press_is_refused_until_mattermost_adds_them() {
    let env = real_env!();
    let other = unique("other");
    let real = Real::started(
        env,
        Options {
            recipients: vec![format!("{TEAM}/{other}")],
            ..Default::default()
        },
    )
    .await;
    let other_id = real.new_channel(&other, "O").await;
    real.add_to_channel(&other_id, &real.bot_id()).await;
    let dave = unique("dave");
    let dave_id = real.team_user(&dave).await;
    real.add_to_channel(&other_id, &dave_id).await;
    let id = real.teleport.create_request(request("bob@example.com"));
    let post_id = real.wait_posted(&id).await;
    assert!(
        real.eventually(WAIT, |r| r.data(&id).message_in(&other_id).is_some())
            .await,
        "{:?}",
        real.data(&id)
    );
    let other_post = real
        .data(&id)
        .message_in(&other_id)
        .unwrap()
        .post_id
        .clone();

    let version = server_version(&real.env);
    let (session, mut events) = real.session(&dave).await;
    let (status, body) = real
        .press(&post_id, message::ACTION_APPROVE, &session)
        .await;
    if version.major >= 11 {
        // 11.4 lets a team member read a public channel, so the press reaches the plugin,
        // which refuses it.
        assert_eq!(
            status, 200,
            "Mattermost 11 lets a team member press in a public channel: {body}"
        );
        let told = events.ephemeral_on(&post_id).await.unwrap_or_default();
        assert!(told.contains("not allowed"), "{told}");
    } else {
        assert_eq!(
            status, 403,
            "Mattermost 6.7.2 keeps non-members out of the channel: {body}"
        );
    }
    let (status, body) = real
        .press(&other_post, message::ACTION_APPROVE, &session)
        .await;
    assert_eq!(status, 200, "{body}");
    let told = events.ephemeral_on(&other_post).await.unwrap_or_default();
    assert!(told.contains("not allowed"), "{told}");
    assert!(real.teleport.state_changes().is_empty());

    real.add_to_channel(&real.channel_id, &dave_id).await;
    let (status, body) = real
        .press(&other_post, message::ACTION_APPROVE, &session)
        .await;
    assert_eq!(status, 200, "{body}");
    let told = events.ephemeral_on(&other_post).await.unwrap_or_default();
    assert!(told.contains("You approved"), "{told}");
    let changes = real.teleport.state_changes();
    assert_eq!(changes.len(), 1);
    assert_eq!(
        changes[0].delegator,
        format!("mattermost:{dave}@example.com")
    );
}

/// With an approver channel, its members decide and nobody else does, whatever channel they
/// read the request in; membership added in Mattermost counts at once.
#[tokio::test]
async fn approver_channel_members_decide_and_membership_counts_without_a_restart() {
    let env = real_env!();
    let name = unique("approvers");
    let real = Real::started(
        env,
        Options {
            approver_channels: vec![format!("{TEAM}/{name}")],
            ..Default::default()
        },
    )
    .await;
    let approvers = real.new_channel(&name, "P").await;
    real.add_to_channel(&approvers, &real.bot_id()).await;
    let id = real.teleport.create_request(request("bob@example.com"));
    let post_id = real.wait_posted(&id).await;

    // alice reads the request's channel, but is not an approver.
    let (alice, mut events) = real.session("alice").await;
    let (status, body) = real.press(&post_id, message::ACTION_DENY, &alice).await;
    assert_eq!(status, 200, "{body}");
    let told = events.ephemeral_on(&post_id).await.unwrap_or_default();
    assert!(told.contains("not allowed"), "{told}");
    assert!(real.teleport.state_changes().is_empty());

    let alice_id = real.api.user_id("alice", &real.env.admin_token).await;
    real.add_to_channel(&approvers, &alice_id).await;
    let (status, body) = real.press(&post_id, message::ACTION_DENY, &alice).await;
    assert_eq!(status, 200, "{body}");
    let told = events.ephemeral_on(&post_id).await.unwrap_or_default();
    assert!(told.contains("You denied"), "{told}");
    assert_eq!(
        real.teleport.request(&id).unwrap().state,
        RequestState::Denied
    );
}

/// A suggested reviewer who may not decide gets the request without buttons and a link to the
/// channel's post; a `team/channel` suggestion posts nothing there.
#[tokio::test]
async fn suggestions_reach_people_only_and_give_no_buttons_to_those_who_may_not_decide() {
    let env = real_env!();
    let real = Real::started(env, Options::default()).await;
    let erin = unique("erin");
    real.team_user(&erin).await;
    let secret_name = unique("secret");
    let secret = real.new_channel(&secret_name, "O").await;
    real.add_to_channel(&secret, &real.bot_id()).await;
    let id = real.teleport.create_request(NewRequest {
        suggested_reviewers: vec![
            format!("{erin}@example.com"),
            format!("{TEAM}/{secret_name}"),
            "carol@example.com".into(),
        ],
        ..request("bob@example.com")
    });
    let post_id = real.wait_posted(&id).await;
    assert!(
        real.eventually(WAIT, |r| r.data(&id).messages.len() == 3)
            .await,
        "{:?}",
        real.data(&id)
    );
    let admin = real.env.admin_token.clone();
    let erin_id = real.api.user_id(&erin, &admin).await;
    let carol_id = real.api.user_id("carol", &admin).await;
    let bot = real.bot_id();
    let dm = |user: &str| {
        let mut pair = [bot.clone(), user.to_string()];
        pair.sort();
        pair.join("__")
    };
    let mut checked = 0;
    for m in real.data(&id).messages {
        let post = real.post(&m.post_id).await;
        let channel = real
            .api
            .get(&format!("/channels/{}", m.channel_id), &admin)
            .await;
        let name = channel["name"].as_str().unwrap_or_default();
        if name == dm(&erin_id) {
            assert!(actions(&post).is_empty(), "no buttons for erin: {post}");
            let link = format!("/{TEAM}/pl/{post_id}");
            assert!(post["message"].as_str().unwrap().contains(&link), "{post}");
            checked += 1;
        } else if name == dm(&carol_id) {
            assert_eq!(actions(&post).len(), 2, "carol may decide: {post}");
            checked += 1;
        }
    }
    assert_eq!(checked, 2);
    let in_secret: Vec<Value> = real
        .api
        .channel_posts(&secret, &admin)
        .await
        .into_iter()
        .filter(|p| p["user_id"] == bot.as_str())
        .collect();
    assert!(in_secret.is_empty(), "{in_secret:?}");
}

// ---------------------------------------------------------------------------------------
// What the current server (11.x) does differently from 6.7.2; each test says what each line
// answers, gated on the server's version (`TM_REAL_MATTERMOST_VERSION`).

/// The version of the server under test.
fn server_version(env: &Env) -> teleport_mattermost::mattermost::ServerVersion {
    env.version
        .as_deref()
        .and_then(teleport_mattermost::mattermost::ServerVersion::parse)
        .expect("run.sh says the server's version")
}

/// A proxy on 127.0.0.1 in front of the real server that holds calls to `path` for `delay`
/// before passing them on: a server slow to answer one endpoint. Returns its base URL and
/// the JSON bodies of the calls it held.
async fn delaying_proxy(
    upstream: String,
    path: &'static str,
    delay: Duration,
) -> (String, Arc<Mutex<Vec<Value>>>) {
    use axum::response::IntoResponse as _;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let held = Arc::new(Mutex::new(Vec::new()));
    let seen = held.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let (client, upstream, seen) = (client.clone(), upstream.clone(), seen.clone());
        async move {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, 64 << 20)
                .await
                .unwrap_or_default();
            if parts.uri.path() == path {
                let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
                seen.lock().unwrap().push(json);
                tokio::time::sleep(delay).await;
            }
            let target = format!(
                "{upstream}{}",
                parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/")
            );
            let mut forward = client.request(parts.method, target).body(body);
            for (name, value) in &parts.headers {
                if name != axum::http::header::HOST {
                    forward = forward.header(name, value);
                }
            }
            let Ok(answer) = forward.send().await else {
                return axum::http::StatusCode::BAD_GATEWAY.into_response();
            };
            let mut response = axum::http::Response::builder().status(answer.status());
            for (name, value) in answer.headers() {
                if !matches!(
                    name.as_str(),
                    "content-length" | "transfer-encoding" | "connection"
                ) {
                    response = response.header(name, value);
                }
            }
            let bytes = answer.bytes().await.unwrap_or_default();
            response.body(axum::body::Body::from(bytes)).unwrap()
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), held)
}

/// The plugin waits for the dialog as long as this server's trigger lives: 30 s on 11.4
/// (OutgoingIntegrationRequestsTimeout), 3 s on 6.7.2. A server 4 s slow to open it still
/// shows it on 11.4; on 6.7.2 the plugin gives up at 3 s, as the server would refuse it.
#[tokio::test]
async fn the_dialog_waits_as_long_as_this_servers_trigger_lives() {
    use teleport_mattermost::callback::dialog;
    let env = real_env!();
    let version = server_version(&env);
    let lifetime = dialog::trigger_lifetime(Some(version));
    let delay = Duration::from_secs(4);
    let (proxy, held) =
        delaying_proxy(env.url.clone(), "/api/v4/actions/dialogs/open", delay).await;
    let real = Real::started(
        env,
        Options {
            deny_reason: ReasonPrompt::Required,
            url: Some(proxy),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        real.instance.mattermost().server_version().await,
        Some(version),
        "the plugin reads the version from the client config"
    );
    let id = real.teleport.create_request(request("bob@example.com"));
    let post_id = real.wait_posted(&id).await;
    let (carol, mut events) = real.session("carol").await;
    let pressed_at = Instant::now();
    let (status, body) = real.press(&post_id, message::ACTION_DENY, &carol).await;
    assert_eq!(status, 200, "press answered {body}");
    let got = events.dialog_or_answer(&id, &post_id).await;
    let _ = writeln!(
        std::io::stderr(),
        "Mattermost {version}: trigger lifetime {lifetime:?}; dialogs/open held {delay:?}: {got:?} after {:?}",
        pressed_at.elapsed()
    );
    if lifetime > delay {
        assert!(matches!(got, Some(Ok(_))), "the dialog opened: {got:?}");
    } else {
        let text = match got {
            Some(Err(text)) => text,
            other => panic!("a refusal: {other:?}"),
        };
        assert!(
            text.contains("could not be opened") && text.contains("within the 3s"),
            "{text}"
        );
    }
    assert!(real.teleport.state_changes().is_empty());

    // The server's own rule: the press's trigger id (as the plugin sent it to open the
    // dialog; Mattermost answers the presser only the client's part of it), 4.5 s old, opens
    // a dialog on 11.4 and is refused as expired on 6.7.2.
    let trigger = held.lock().unwrap()[0]["trigger_id"]
        .as_str()
        .expect("a trigger id")
        .to_string();
    tokio::time::sleep(
        (pressed_at + Duration::from_millis(4500)).saturating_duration_since(Instant::now()),
    )
    .await;
    let (status, _, answer) = real
        .api
        .call(
            reqwest::Method::POST,
            "/actions/dialogs/open",
            Some(&real.env.bot_token),
            Some(serde_json::json!({
                "trigger_id": trigger,
                "url": "http://127.0.0.1:9/nowhere",
                "dialog": {"callback_id": "check", "title": "Check", "elements": [],
                           "submit_label": "OK", "state": "{}"},
            })),
        )
        .await;
    let _ = writeln!(
        std::io::stderr(),
        "Mattermost {version}: a 4.5 s old trigger opens with {status} {answer}"
    );
    if lifetime > Duration::from_millis(4500) {
        assert_eq!(status, 200, "{answer}");
    } else {
        assert_eq!(status, 400, "{answer}");
        assert_eq!(
            answer["id"],
            "interactive_message.decode_trigger_id.expired"
        );
    }
}

/// A reason given in a direct message's dialog decides. Before 11.10 the server forwards the
/// team the reviewer's client names (the webapp's current team) and refuses an empty one
/// itself; from 11.10 it sets the channel's, empty in a DM: the plugin reads no team.
#[tokio::test]
async fn a_reason_given_in_a_direct_messages_dialog_decides() {
    let env = real_env!();
    let version = server_version(&env);
    let real = Real::started(
        env,
        Options {
            deny_reason: ReasonPrompt::Required,
            recipients: vec!["carol@example.com".into()],
            ..Default::default()
        },
    )
    .await;
    let id = real.teleport.create_request(request("bob@example.com"));
    assert!(
        real.eventually(WAIT, |r| r.data(&id).messages.len() == 2)
            .await,
        "{:?}",
        real.data(&id)
    );
    let dm = real
        .data(&id)
        .messages
        .into_iter()
        .find(|m| m.channel_id != real.channel_id)
        .unwrap();
    let (carol, mut events) = real.session("carol").await;
    let opened = loop {
        let (status, body) = real.press(&dm.post_id, message::ACTION_DENY, &carol).await;
        assert_eq!(status, 200, "press answered {body}");
        match events.dialog_or_answer(&id, &dm.post_id).await {
            Some(Ok(opened)) => break opened,
            // Only on a 3-second trigger, and a rate-limited bot.
            Some(Err(text)) if text.contains("Press Deny again") => {
                tokio::time::sleep(Duration::from_secs(1)).await
            }
            other => panic!("{other:?}"),
        }
    };
    let state = opened["dialog"]["state"].as_str().unwrap().to_string();
    let submission = serde_json::json!({ "reason": "not from a DM at 3 am" });
    let (status, body) = real
        .api
        .submit_dialog(
            &carol,
            &opened,
            &state,
            &dm.channel_id,
            "",
            submission.clone(),
        )
        .await;
    let _ = writeln!(
        std::io::stderr(),
        "Mattermost {version}: a DM submission without a team answers {status} {body}"
    );
    if version < teleport_mattermost_testkit::mattermost::V11_10_0 {
        assert_eq!(status, 403, "the server itself needs a team: {body}");
        assert!(real.teleport.state_changes().is_empty());
        let team = real.team_id().await;
        let (status, body) = real
            .api
            .submit_dialog(&carol, &opened, &state, &dm.channel_id, &team, submission)
            .await;
        assert_eq!(status, 200, "{body}");
    } else {
        assert_eq!(status, 200, "{body}");
    }
    let changes = real.teleport.state_changes();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].state, RequestState::Denied);
    assert!(changes[0].reason.ends_with(": not from a DM at 3 am"));
}

/// Sets the server's `ServiceSettings.PostEditTimeLimit` (seconds; -1 for none).
async fn set_post_edit_time_limit(api: &Api, admin: &str, seconds: i64) {
    let (status, _, body) = api
        .call(
            reqwest::Method::PUT,
            "/config/patch",
            Some(admin),
            Some(serde_json::json!({"ServiceSettings": {"PostEditTimeLimit": seconds}})),
        )
        .await;
    assert_eq!(status, 200, "config patch: {body}");
}

/// The thread replies under `post_id` that stand in for an edit the server refused.
async fn outcome_notes(real: &Real, post_id: &str) -> Vec<Value> {
    let (status, _, thread) = real
        .api
        .call(
            reqwest::Method::GET,
            &format!("/posts/{post_id}/thread"),
            Some(&real.env.admin_token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{thread}");
    thread["posts"]
        .as_object()
        .map(|posts| {
            posts
                .values()
                .filter(|p| {
                    p["root_id"] == post_id
                        && p["message"]
                            .as_str()
                            .is_some_and(|m| m.starts_with("This post can no longer be edited"))
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// Under an admin's post edit time limit, the server refuses the resolution's edits
/// (400 `api.post.update_post.permissions_time_limit.app_error`): the outcome reaches each
/// post's thread once, the resolution is recorded, and nothing is retried after a restart.
/// The limit is server-wide, so this test runs alone and puts it back.
#[tokio::test]
async fn past_the_post_edit_time_limit_the_outcome_is_told_in_each_thread_once() {
    use futures::FutureExt as _;
    let env = real_env!();
    let api = Api::new(&env.url);
    let exclusive = SERVER_SETTINGS.write().await;
    set_post_edit_time_limit(&api, &env.admin_token, 2).await;
    let outcome = std::panic::AssertUnwindSafe(edit_limit_checks(env.clone()))
        .catch_unwind()
        .await;
    set_post_edit_time_limit(&api, &env.admin_token, -1).await;
    drop(exclusive);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn edit_limit_checks(env: Env) {
    let version = server_version(&env);
    let mut real = Real::started(
        env,
        Options {
            recipients: vec!["carol@example.com".into()],
            exclusive: true,
            ..Default::default()
        },
    )
    .await;
    // One request resolved in Teleport, one by a press, both past the limit.
    let by_teleport = real.teleport.create_request(request("bob@example.com"));
    let by_press = real.teleport.create_request(request("bob@example.com"));
    for id in [&by_teleport, &by_press] {
        assert!(
            real.eventually(WAIT, |r| r.data(id).messages.len() == 2)
                .await
        );
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // What the server answers an edit of a post past the limit.
    let channel_post = real.wait_posted(&by_teleport).await;
    let (status, _, refused) = real
        .api
        .call(
            reqwest::Method::PUT,
            &format!("/posts/{channel_post}"),
            Some(&real.env.bot_token),
            Some(serde_json::json!({"id": channel_post, "message": "changed"})),
        )
        .await;
    let _ = writeln!(
        std::io::stderr(),
        "Mattermost {version}: an edit past PostEditTimeLimit answers {status} {refused}"
    );
    assert_eq!(status, 400, "{refused}");
    assert_eq!(
        refused["id"],
        "api.post.update_post.permissions_time_limit.app_error"
    );

    real.teleport.resolve(
        &by_teleport,
        RequestState::Approved,
        "approved in the web UI",
    );
    let (alice, mut alice_events) = real.session("alice").await;
    let press_post = real.wait_posted(&by_press).await;
    let (status, body) = real
        .press(&press_post, message::ACTION_APPROVE, &alice)
        .await;
    let ephemeral = match status {
        200 => alice_events.ephemeral_on(&press_post).await,
        _ => None,
    };
    let _ = writeln!(
        std::io::stderr(),
        "Mattermost {version}: a press past the limit answers {status} {body}, ephemeral {ephemeral:?}"
    );
    // The decision is made either way.
    assert_eq!(
        real.teleport.request(&by_press).unwrap().state,
        RequestState::Approved
    );
    if version.major >= 11 {
        // 11.4 checks the limit in its API handler only: the press's update is applied.
        assert_eq!(status, 200, "{body}");
        let shown = real.post(&press_post).await;
        assert!(
            shown["message"]
                .as_str()
                .unwrap()
                .contains("APPROVED by @alice"),
            "{shown}"
        );
    } else {
        // 6.7.2 checks it in App.UpdatePost, which applies the press's update too: the
        // presser sees the server's error, not our answer.
        assert_eq!(status, 400, "{body}");
        assert_eq!(
            body["id"],
            "api.post.update_post.permissions_time_limit.app_error"
        );
    }

    // Every post shows its outcome: edited, or in its thread, once.
    for (id, by) in [
        (&by_teleport, "✅ APPROVED"),
        (&by_press, "APPROVED by @alice"),
    ] {
        assert!(
            real.eventually(WAIT, |r| r.data(id).edited == Some(RequestState::Approved))
                .await,
            "{:?}",
            real.data(id)
        );
        for m in real.data(id).messages {
            let post = real.post(&m.post_id).await;
            let notes = outcome_notes(&real, &m.post_id).await;
            let edited = post["message"].as_str().unwrap().contains(by);
            assert!(
                edited || (notes.len() == 1 && notes[0]["message"].as_str().unwrap().contains(by)),
                "{id}: {post} / {notes:?}"
            );
            if id == &by_teleport {
                assert_eq!(notes.len(), 1, "the edit was refused, the thread says it");
            }
        }
    }
    // A restart neither edits nor tells again.
    let before: Vec<usize> = {
        let mut counts = Vec::new();
        for id in [&by_teleport, &by_press] {
            for m in real.data(id).messages {
                counts.push(outcome_notes(&real, &m.post_id).await.len());
            }
        }
        counts
    };
    real.restart().await;
    let _ = real
        .status_until(WAIT, |s| s.teleport.ok == Some(true))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut after = Vec::new();
    for id in [&by_teleport, &by_press] {
        for m in real.data(id).messages {
            after.push(outcome_notes(&real, &m.post_id).await.len());
        }
    }
    assert_eq!(before, after);
    assert!(
        !real.logs.text().contains("will retry"),
        "nothing is retried: {}",
        real.logs.text()
    );
}

/// The server's log file (JSON lines), where 11.4 warns about invalid post props.
fn server_log(env: &Env) -> Option<String> {
    let stdout = std::env::var("TM_REAL_MATTERMOST_LOG").ok()?;
    let dir = std::path::Path::new(&stdout).parent()?;
    let mut text = String::new();
    for path in [
        dir.join("logs/mattermost.log"),
        std::path::PathBuf::from(&stdout),
    ] {
        text.push_str(&std::fs::read_to_string(path).unwrap_or_default());
    }
    let _ = env;
    Some(text)
}

/// Our buttons pass the newer validation (`PostAction.IsValid`: a name, type button, an
/// http(s) URL; alphanumeric ids). 11.4 only logs a violation ("Invalid post props"), so its
/// log is read, with a post that violates it as the control.
#[tokio::test]
async fn our_buttons_pass_the_servers_action_validation() {
    let env = real_env!();
    let version = server_version(&env);
    let real = Real::started(
        env.clone(),
        Options {
            recipients: vec!["carol@example.com".into()],
            ..Default::default()
        },
    )
    .await;
    let id = real.teleport.create_request(request("bob@example.com"));
    assert!(
        real.eventually(WAIT, |r| r.data(&id).messages.len() == 2)
            .await
    );
    let posts: Vec<String> = real
        .data(&id)
        .messages
        .into_iter()
        .map(|m| m.post_id)
        .collect();
    for post_id in &posts {
        let post = real.post(post_id).await;
        for action in actions(&post) {
            let id = action["id"].as_str().unwrap();
            assert!(!id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()));
            assert_eq!(action["type"], "button");
            assert!(!action["name"].as_str().unwrap().is_empty());
        }
    }
    // A press through the server (which routes `[A-Za-z0-9]+` ids only) and the edits after.
    let (alice, mut events) = real.session("alice").await;
    let (status, body) = real.press(&posts[0], message::ACTION_APPROVE, &alice).await;
    assert_eq!(status, 200, "{body}");
    assert!(events.ephemeral_on(&posts[0]).await.is_some());
    assert!(
        real.eventually(WAIT, |r| r.data(&id).edited == Some(RequestState::Approved))
            .await
    );
    if version.major < 11 {
        let _ = writeln!(
            std::io::stderr(),
            "Mattermost {version} does not validate actions"
        );
        return;
    }
    // The control: an action without a type, posted by the bot itself.
    let (status, _, bad) = real
        .api
        .call(
            reqwest::Method::POST,
            "/posts",
            Some(&real.env.bot_token),
            Some(serde_json::json!({
                "channel_id": real.channel_id, "message": "control",
                "props": {"attachments": [{"actions": [{"id": "x", "name": "X",
                    "integration": {"url": "http://127.0.0.1:9/x"}}]}]},
            })),
        )
        .await;
    assert_eq!(status, 201, "{bad}");
    let control = bad["id"].as_str().unwrap().to_string();
    let flagged = |log: &str, post: &str| {
        log.lines()
            .any(|l| l.contains("Invalid post props") && l.contains(post))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = server_log(&env).unwrap_or_default();
        if flagged(&log, &control) || Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        flagged(&log, &control),
        "the server's log flags the control post {control}"
    );
    for post_id in &posts {
        assert!(!flagged(&log, post_id), "{post_id} was flagged");
    }
}

/// Priority on the real server: 11.4 Team Edition takes `important` and refuses
/// `requested_ack` (501, no licence): the channel post goes out once without it, and the
/// status says so. 6.7.2 knows no priority and ignores it.
#[tokio::test]
async fn a_priority_post_goes_out_once_even_where_the_acknowledgement_is_unlicensed() {
    let env = real_env!();
    let version = server_version(&env);
    // What the server answers, asked directly.
    let api = Api::new(&env.url);
    let channel = api.channel_id(TEAM, CHANNEL, &env.admin_token).await;
    let mut answers = Vec::new();
    for (label, priority) in [
        ("important", serde_json::json!({"priority": "important"})),
        (
            "requested_ack",
            serde_json::json!({"priority": "", "requested_ack": true}),
        ),
    ] {
        let (status, _, body) = api
            .call(
                reqwest::Method::POST,
                "/posts",
                Some(&env.bot_token),
                Some(serde_json::json!({"channel_id": channel, "message": format!("priority check: {label}"),
                                         "metadata": {"priority": priority}})),
            )
            .await;
        let _ = writeln!(
            std::io::stderr(),
            "Mattermost {version}: a post with {label} answers {status} {} {}",
            body["id"],
            body["metadata"]["priority"]
        );
        answers.push((status, body));
    }
    // Message priority came with 7.7.
    let unlicensed = version >= teleport_mattermost::mattermost::ServerVersion::new(7, 7, 0);
    if unlicensed {
        assert_eq!(answers[0].0, 201);
        assert_eq!(
            answers[0].1["metadata"]["priority"]["priority"],
            "important"
        );
        assert_eq!(answers[1].0, 501, "{}", answers[1].1);
        assert_eq!(answers[1].1["id"], "license_error.feature_unavailable");
    } else {
        assert_eq!((answers[0].0, answers[1].0), (201, 201));
        assert!(answers[1].1["metadata"]["priority"].is_null());
    }

    let real = Real::started(
        env,
        Options {
            recipients: vec!["carol@example.com".into()],
            priority: PrioritySettings {
                priority: Priority::Important,
                requested_ack: true,
            },
            ..Default::default()
        },
    )
    .await;
    let ids: Vec<String> = (0..2)
        .map(|_| real.teleport.create_request(request("bob@example.com")))
        .collect();
    for id in &ids {
        assert!(
            real.eventually(WAIT, |r| r.data(id).messages.len() == 2)
                .await
        );
    }
    let posts = real
        .api
        .channel_posts(&real.channel_id, &real.env.admin_token)
        .await;
    for id in &ids {
        let roots: Vec<&Value> = posts
            .iter()
            .filter(|p| p["root_id"] == "" && p["props"]["teleport_request_id"] == id.as_str())
            .collect();
        assert_eq!(roots.len(), 1, "posted once");
        let post = real.post(roots[0]["id"].as_str().unwrap()).await;
        let priority = &post["metadata"]["priority"];
        if unlicensed {
            assert_eq!(priority["priority"], "important", "{post}");
            assert_eq!(priority["requested_ack"], false, "{post}");
        } else {
            assert!(priority.is_null(), "{post}");
        }
        // Not in the direct message.
        let dm = real
            .data(id)
            .messages
            .into_iter()
            .find(|m| m.channel_id != real.channel_id)
            .unwrap();
        assert!(real.post(&dm.post_id).await["metadata"]["priority"].is_null());
    }
    let problem = real.instance.status().borrow().priority_problem.clone();
    let warnings = real
        .logs
        .text()
        .lines()
        .filter(|l| l.contains("AcknowledgementUnlicensed"))
        .count();
    if unlicensed {
        let (reason, message) = problem.expect("the status says why");
        assert_eq!(reason, "AcknowledgementUnlicensed");
        assert!(message.contains("as important"), "{message}");
        assert_eq!(warnings, 1, "logged once: {}", real.logs.text());
    } else {
        assert_eq!(problem, None);
        assert_eq!(warnings, 0);
    }
}

/// What the plugin relies on to find a post it may have made (`bridge::store::find_post`), on
/// the real server: past 1,000 posts changed since, `?since=` leaves out the newest (its
/// `LIMIT 1000` has no order, and PostgreSQL reads the (channelid, updateat) index oldest
/// first), while a page of the channel starts with the newest. The Mattermost double plays
/// both this way; a channel this busy once had a request posted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_1000_changed_posts_since_leaves_out_the_newest_and_a_page_does_not() {
    use futures::StreamExt as _;
    let env = real_env!();
    let real = Real::started(env, Options::default()).await;
    let channel = real.new_channel(&unique("busy-"), "O").await;
    real.add_to_channel(&channel, &real.bot_id()).await;
    let before = chrono::Utc::now().timestamp_millis() - 1;
    let admin = real.env.admin_token.clone();
    futures::stream::iter(0..1_050)
        .map(|i| {
            let (api, admin, channel) = (&real.api, &admin, &channel);
            async move {
                let (status, _, body) = api
                    .call(
                        reqwest::Method::POST,
                        "/posts",
                        Some(admin),
                        Some(serde_json::json!({"channel_id": channel, "message": format!("chatter {i}")})),
                    )
                    .await;
                assert_eq!(status, 201, "{body}");
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<()>>()
        .await;
    let (status, _, newest) = real
        .api
        .call(
            reqwest::Method::POST,
            "/posts",
            Some(&admin),
            Some(serde_json::json!({"channel_id": channel, "message": "the newest"})),
        )
        .await;
    assert_eq!(status, 201, "{newest}");
    let newest = newest["id"].as_str().unwrap().to_string();

    let since = real
        .api
        .get(&format!("/channels/{channel}/posts?since={before}"), &admin)
        .await;
    let order: Vec<&str> = since["order"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    println!(
        "?since= over 1,051 new posts: {} posts, the newest among them: {}",
        order.len(),
        order.contains(&newest.as_str())
    );
    assert_eq!(order.len(), 1_000);
    assert!(!order.contains(&newest.as_str()), "the newest is left out");

    let page = real
        .instance
        .mattermost()
        .channel_posts_page(&channel, 0, 200)
        .await
        .unwrap();
    assert_eq!(page.len(), 200);
    assert_eq!(page[0].id, newest, "a page starts with the newest");
}
