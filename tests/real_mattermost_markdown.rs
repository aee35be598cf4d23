//! Tier 4, real Mattermost: text from people notifies nobody and renders only as text.
//!
//! Every payload of the break-out corpus (`tests/markdown/corpus.rs`) goes through the whole
//! life of a request on a REAL Mattermost server: the request's reason, then a review whose
//! reason is the payload (a thread reply), then a denial whose reason is the payload (the
//! post's edit and the requester's DM). Then the test reads back what the server made of it:
//! - who it notified: the channel mention counts of the channel's members other than the
//!   bot (alice, bob, carol, all online through a websocket, so `@here` counts too), payload
//!   by payload, against a harmless reason's;
//! - what its posts say: every stored message (root post, thread reply, the requester's
//!   DMs) parsed by Mattermost's client parsers (`tests/markdown/check.mjs`) and judged
//!   against the same message for a harmless reason.
//!
//! Run it with `tests/mattermost/run-tier4.sh` (which starts and provisions the server and
//! passes `TM_REAL_MATTERMOST_*`); without them it prints one line saying why it was skipped.
//! Without `node`/`npm` the mention half still runs and the parser half prints `skipped:`.

#[path = "markdown/corpus.rs"]
mod corpus;
#[path = "markdown/judge.rs"]
mod judge;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, Instant};

use serde_json::Value;
use teleport_mattermost::request::RequestState;
use teleport_mattermost::settings::{RequesterLookup, RequesterSettings, RetryPolicy};
use teleport_mattermost_testkit::real_mattermost::{Api, Env, Events, env};
use teleport_mattermost_testkit::stack::{CHANNEL, MattermostTarget, Plugin, StackOptions, TEAM};
use teleport_mattermost_testkit::teleport::NewRequest;

use judge::{Expect, Post};

const WAIT: Duration = Duration::from_secs(30);
/// The channel's members other than the bot, whose mention counts are watched.
const MEMBERS: [&str; 3] = ["alice", "bob", "carol"];
const HARMLESS: &str = "harmless reason";
/// The reference for a payload that is only whitespace, which the plugin shows as empty.
const BLANK: &str = " ";
/// What a request id becomes in the messages judged, so a payload's messages compare with
/// the harmless ones.
const SOME_ID: &str = "00000000-0000-4000-8000-000000000000";

macro_rules! real_env {
    () => {
        match env() {
            Some(env) => env,
            None => return,
        }
    };
}

/// The plugin posting to the real server, and what the test asks the server itself.
struct Real {
    plugin: Plugin,
    env: Env,
    api: Api,
    channel_id: String,
    member_ids: Vec<(&'static str, String)>,
    /// The requester's direct channel with the bot, as the requester reads it.
    bob_token: String,
    bob_dm: String,
    /// Keeps the members online, so `@here` would reach them.
    _online: Vec<Events>,
}

/// What one payload's request left on the server.
struct Outcome {
    /// Channel mention count added, per member.
    mentions: BTreeMap<&'static str, i64>,
    /// `(kind, message)` of every post the request made, ids and times normalized.
    messages: Vec<(&'static str, String)>,
    /// What did not happen (a post never made, an edit never seen).
    missing: Vec<String>,
}

impl Real {
    async fn start(env: Env) -> Real {
        let api = Api::new(&env.url);
        let channel_id = api.channel_id(TEAM, CHANNEL, &env.admin_token).await;
        let plugin = Plugin::start(
            MattermostTarget {
                url: env.url.parse().expect("Mattermost URL"),
                token: env.bot_token.clone(),
            },
            &StackOptions {
                requester: RequesterSettings {
                    lookup: RequesterLookup::Email,
                    notify_on_post: true,
                },
                init_timeout: Duration::from_secs(5),
                retry: RetryPolicy::default(),
                ..StackOptions::default()
            },
        )
        .await;
        let status = plugin
            .status_until(WAIT, |s| {
                s.teleport.ok == Some(true) && s.mattermost.ok.is_some()
            })
            .await;
        assert_eq!(status.mattermost.ok, Some(true), "{:?}", status.mattermost);
        let mut member_ids = Vec::new();
        let mut online = Vec::new();
        for user in MEMBERS {
            member_ids.push((user, api.user_id(user, &env.admin_token).await));
            online.push(api.session(&env, user).await.1);
        }
        let bob_token = api.login("bob", &env.password).await;
        let bot_id = plugin
            .instance
            .bot_user_id()
            .expect("health check ran")
            .to_string();
        let bob_id = member_ids[1].1.clone();
        let (status, _, dm) = api
            .call(
                reqwest::Method::POST,
                "/channels/direct",
                Some(&bob_token),
                Some(serde_json::json!([bob_id, bot_id])),
            )
            .await;
        assert_eq!(status, 201, "{dm}");
        Real {
            plugin,
            channel_id,
            member_ids,
            bob_dm: dm["id"].as_str().expect("dm id").to_string(),
            bob_token,
            _online: online,
            env,
            api,
        }
    }

    /// Each member's mention count in the channel, as the server keeps it.
    async fn mention_counts(&self) -> BTreeMap<&'static str, i64> {
        let mut counts = BTreeMap::new();
        for (user, id) in &self.member_ids {
            let unread = self
                .api
                .get(
                    &format!("/users/{id}/channels/{}/unread", self.channel_id),
                    &self.env.admin_token,
                )
                .await;
            counts.insert(*user, unread["mention_count"].as_i64().unwrap_or(-1));
        }
        counts
    }

    /// Polls `f` until it gives `Some`, for at most `timeout`.
    async fn until<T, F, Fut>(&self, timeout: Duration, mut f: F) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f().await {
                return Some(v);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The request's life with `text` as every reason: requested, reviewed, denied.
    async fn run(&self, text: &str) -> Outcome {
        let before = self.mention_counts().await;
        let mut missing = Vec::new();
        let id = self.plugin.teleport.create_request(NewRequest {
            user: "bob@example.com".into(),
            roles: vec!["dba".into()],
            reason: text.into(),
            ..Default::default()
        });
        let channel = self.channel_id.clone();
        let post_id = self
            .until(WAIT, || {
                let data = self.plugin.data(&id);
                let found = data.message_in(&channel).map(|m| m.post_id.clone());
                async move { found }
            })
            .await;
        let Some(post_id) = post_id else {
            missing.push("the request was never posted".to_string());
            return Outcome {
                mentions: BTreeMap::new(),
                messages: Vec::new(),
                missing,
            };
        };
        self.plugin
            .teleport
            .review(&id, "alice@example.com", RequestState::Approved, text);
        let thread = self
            .until(WAIT, || {
                let post_id = post_id.clone();
                async move {
                    let replies = self.replies(&post_id).await;
                    (!replies.is_empty()).then_some(replies)
                }
            })
            .await;
        if thread.is_none() {
            missing.push("no review reply in the thread".to_string());
        }
        self.plugin
            .teleport
            .resolve(&id, RequestState::Denied, text);
        let admin = self.env.admin_token.clone();
        let root = self
            .until(WAIT, || {
                let (post_id, admin) = (post_id.clone(), admin.clone());
                async move {
                    let post = self.api.post(&post_id, &admin).await;
                    let text = post["message"].as_str().unwrap_or_default().to_string();
                    text.contains("DENIED").then_some(text)
                }
            })
            .await;
        if root.is_none() {
            missing.push("the post was never edited to DENIED".to_string());
        }
        let dms = self
            .until(WAIT, || {
                let id = id.clone();
                async move {
                    let dms = self.dms(&id).await;
                    (dms.len() >= 2).then_some(dms)
                }
            })
            .await;
        if dms.is_none() {
            missing.push("the requester was not told twice".to_string());
        }
        // Notifications are counted as the post is created; give the server a moment.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = self.mention_counts().await;
        let mentions = after
            .iter()
            .map(|(user, n)| (*user, n - before.get(user).copied().unwrap_or(0)))
            .collect();
        let mut messages = Vec::new();
        if let Some(root) = root {
            messages.push(("root post", root));
        }
        for reply in thread.unwrap_or_default() {
            messages.push(("review reply", reply));
        }
        for dm in dms.unwrap_or_default() {
            let kind = if dm.starts_with('⏳') {
                "dm posted"
            } else {
                "dm outcome"
            };
            messages.push((kind, dm));
        }
        let messages = messages
            .into_iter()
            .map(|(k, m)| (k, normalize(&m, &id)))
            .collect();
        Outcome {
            mentions,
            messages,
            missing,
        }
    }

    /// The thread replies under `post_id`, oldest first.
    async fn replies(&self, post_id: &str) -> Vec<String> {
        let thread = self
            .api
            .get(&format!("/posts/{post_id}/thread"), &self.env.admin_token)
            .await;
        let mut replies: Vec<(i64, String)> = thread["posts"]
            .as_object()
            .into_iter()
            .flat_map(|m| m.values())
            .filter(|p| p["root_id"] == post_id)
            .map(|p| {
                (
                    p["create_at"].as_i64().unwrap_or(0),
                    p["message"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        replies.sort();
        replies.into_iter().map(|(_, m)| m).collect()
    }

    /// The requester's DMs about request `id`, oldest first.
    async fn dms(&self, id: &str) -> Vec<String> {
        let list = self
            .api
            .get(
                &format!("/channels/{}/posts?per_page=200", self.bob_dm),
                &self.bob_token,
            )
            .await;
        let mut dms: Vec<(i64, String)> = list["posts"]
            .as_object()
            .into_iter()
            .flat_map(|m| m.values())
            .filter(|p| p["props"]["teleport_request_id"] == id)
            .map(|p| {
                (
                    p["create_at"].as_i64().unwrap_or(0),
                    p["message"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        dms.sort();
        dms.into_iter().map(|(_, m)| m).collect()
    }
}

/// The message with the request id and the times made the same for every request.
fn normalize(message: &str, id: &str) -> String {
    let times = regex::Regex::new(r"\d{2} [A-Z][a-z]{2} \d{2} \d{2}:\d{2} UTC").unwrap();
    let text = message.replace(id, SOME_ID);
    times.replace_all(&text, "01 Jan 26 00:00 UTC").into_owned()
}

#[tokio::test]
async fn hostile_reasons_notify_nobody_and_render_only_as_text_on_the_real_server() {
    let env = real_env!();
    let judging = judge::ready();
    if let Err(skip) = &judging {
        let _ = writeln!(
            std::io::stderr(),
            "{skip} (only the server's mention counts are checked)"
        );
    }
    let real = Real::start(env).await;
    let started = Instant::now();
    let harmless = real.run(HARMLESS).await;
    let blank = real.run(BLANK).await;
    for reference in [&harmless, &blank] {
        assert!(
            reference.missing.is_empty(),
            "a reference request's life: {:?}",
            reference.missing
        );
    }
    let payloads: Vec<corpus::Payload> = corpus::payloads()
        .into_iter()
        .filter(|p| tier4_payload(&p.name))
        .collect();
    let mut outcomes = Vec::new();
    for p in &payloads {
        outcomes.push(real.run(&p.text).await);
    }
    let elapsed = started.elapsed();

    // Who the server notified, beyond what a harmless reason notifies.
    let mut notified: Vec<String> = Vec::new();
    let mut missing: Vec<String> = Vec::new();
    for (p, o) in payloads.iter().zip(&outcomes) {
        for m in &o.missing {
            missing.push(format!("{}: {m}", p.name));
        }
        let extra: Vec<String> = o
            .mentions
            .iter()
            .filter(|(user, n)| **n != harmless.mentions.get(*user).copied().unwrap_or(0))
            .map(|(user, n)| format!("{user} +{n}"))
            .collect();
        if !extra.is_empty() {
            notified.push(format!("| {} | {} |", p.name, extra.join(", ")));
        }
    }

    // What the stored posts show, judged by the client parsers.
    let mut shown: Vec<String> = Vec::new();
    let mut details: Vec<String> = Vec::new();
    if judging.is_ok() {
        let mut posts = Vec::new();
        for (text, reference) in [(HARMLESS, &harmless), (BLANK, &blank)] {
            for (kind, message) in &reference.messages {
                posts.push(Post {
                    name: format!("{text:?} @ {kind}"),
                    message: message.clone(),
                });
            }
        }
        let reference_len = posts.len();
        let mut owners = Vec::new();
        for (p, o) in payloads.iter().zip(&outcomes) {
            for (kind, message) in &o.messages {
                posts.push(Post {
                    name: format!("{} @ {kind}", p.name),
                    message: message.clone(),
                });
                owners.push((p, *kind));
            }
        }
        let trees = judge::parse(&posts);
        let split = harmless.messages.len();
        let harmless_trees = by_kind(&harmless, &trees[..split]);
        let blank_trees = by_kind(&blank, &trees[split..reference_len]);
        for ((p, kind), tree) in owners.iter().zip(&trees[reference_len..]) {
            let reference = if p.text.trim().is_empty() {
                &blank_trees
            } else {
                &harmless_trees
            };
            let Some(benign) = reference.get(kind) else {
                shown.push(format!(
                    "| {} | {kind} | a post the harmless request did not make |",
                    p.name
                ));
                continue;
            };
            let mut seen = Vec::new();
            for (parser, t) in tree {
                let allowed: Vec<String> = benign[parser]["links"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|l| l["dest"].as_str())
                    .filter(|d| d.contains("/web/requests/"))
                    .map(str::to_string)
                    .collect();
                let expect = Expect {
                    allowed_links: &allowed,
                    status_lines: usize::from(*kind == "root post"),
                };
                let known = judge::problems(&benign[parser], &benign[parser], HARMLESS, &expect);
                let found: Vec<String> = judge::problems(t, &benign[parser], &p.text, &expect)
                    .into_iter()
                    .filter(|f| !known.contains(f))
                    .collect();
                if !found.is_empty() {
                    seen.push(format!("{}: {}", judge::parser_tag(parser), kinds(&found)));
                    details.push(format!(
                        "- {} @ {kind} / {}:\n  - {}",
                        p.name,
                        judge::parser_tag(parser),
                        found.join("\n  - ")
                    ));
                }
            }
            if !seen.is_empty() {
                shown.push(format!("| {} | {kind} | {} |", p.name, seen.join("<br>")));
            }
        }
    }

    let mut report = String::new();
    let _ = writeln!(
        report,
        "# Tier 4 markdown corpus: {} payloads in {:.0?}\n\nA harmless reason notified: {:?}\n",
        payloads.len(),
        elapsed,
        harmless.mentions
    );
    let _ = writeln!(
        report,
        "## Notified beyond a harmless reason ({})\n\n| payload | channel mentions added |\n|---|---|",
        notified.len()
    );
    for line in &notified {
        let _ = writeln!(report, "{line}");
    }
    let _ = writeln!(
        report,
        "\n## Stored posts that break out ({})\n\n| payload | post | parsers: problems |\n|---|---|---|",
        shown.len()
    );
    for line in &shown {
        let _ = writeln!(report, "{line}");
    }
    let _ = writeln!(report, "\n## Not done by the plugin ({})\n", missing.len());
    for line in &missing {
        let _ = writeln!(report, "- {line}");
    }
    let path =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("real_mattermost_markdown.md");
    std::fs::write(
        &path,
        format!("{report}\n## Details\n\n{}\n", details.join("\n")),
    )
    .expect("write the report");
    let _ = writeln!(
        std::io::stderr(),
        "{} payloads through the real server in {elapsed:.0?}: {} notified someone, {} stored posts break out, {} incomplete; report: {}",
        payloads.len(),
        notified.len(),
        shown.len(),
        missing.len(),
        path.display()
    );
    assert!(
        harmless.mentions.values().all(|n| *n == 0),
        "a harmless reason notified someone: {:?}",
        harmless.mentions
    );
    assert!(
        notified.is_empty() && shown.is_empty() && missing.is_empty(),
        "text from people reaches the real server as more than text (every problem: {}):\n{report}",
        path.display()
    );
}

/// A reference request's trees by the kind of post they are.
fn by_kind<'a>(
    outcome: &'a Outcome,
    trees: &'a [BTreeMap<String, Value>],
) -> BTreeMap<&'a str, &'a BTreeMap<String, Value>> {
    outcome
        .messages
        .iter()
        .map(|(k, _)| *k)
        .zip(trees.iter())
        .collect()
}

/// `status, mention x2, link` from problems `kind: detail`.
fn kinds(found: &[String]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for f in found {
        *counts
            .entry(f.split(':').next().unwrap_or_default())
            .or_default() += 1;
    }
    counts
        .iter()
        .map(|(k, n)| {
            if *n == 1 {
                k.to_string()
            } else {
                format!("{k} x{n}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The payloads posted through the real server: all but most of the fence-length sweep
/// (lengths 3, 4, 10, 20 and 1000 stay), which the offline corpus test covers in full.
fn tier4_payload(name: &str) -> bool {
    let sweep = ["backtick_fence_", "tilde_fence_", "backtick_run_"];
    match sweep.iter().find_map(|s| name.strip_prefix(s)) {
        Some(n) if n.chars().all(|c| c.is_ascii_digit()) => {
            ["3", "4", "10", "20", "1000"].contains(&n)
        }
        _ => true,
    }
}
