//! What current Mattermost servers (11.x) do differently from 6.7.2, over the double playing
//! each line: the admin's post edit time limit, message priority and its licence, and the
//! validation of post actions. (The trigger lifetime and a direct message's dialog submission
//! are in `tests/dialogs.rs`.)

use std::time::Duration;

use serde_json::{Value, json};
use teleport_mattermost::request::RequestState;
use teleport_mattermost::settings::{Priority, PrioritySettings};
use teleport_mattermost_testkit::mattermost::{MattermostDouble, Post};
use teleport_mattermost_testkit::stack::{Stack, StackOptions};
use teleport_mattermost_testkit::teleport::NewRequest;

const WAIT: Duration = Duration::from_secs(20);
/// The first line of the thread reply that stands in for an edit the server refused.
const UNEDITED: &str = "This post can no longer be edited";

fn with_dm() -> StackOptions {
    StackOptions {
        recipients: vec!["carol@example.com".into()],
        ..Default::default()
    }
}

/// The thread replies under `post` that stand in for a refused edit.
fn outcome_notes(mm: &MattermostDouble, post: &str) -> Vec<Post> {
    mm.posts()
        .into_iter()
        .filter(|p| p.root_id == post && p.message.starts_with(UNEDITED))
        .collect()
}

/// Every root post of the request, channel and DMs, as the double stores them.
fn request_posts(stack: &Stack, id: &str) -> Vec<Post> {
    stack
        .data(id)
        .messages
        .iter()
        .map(|m| stack.mattermost.post(&m.post_id).unwrap())
        .collect()
}

async fn past_the_edit_limit(stack: &Stack, version: &str, posts: usize) -> (String, Vec<Post>) {
    stack.mattermost.set_version(version);
    stack.mattermost.set_post_edit_time_limit(1);
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    assert!(Stack::eventually(WAIT, || stack.data(&id).messages.len() == posts).await);
    let posts = request_posts(stack, &id);
    // Past the limit: a post may no longer change its message.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    (id, posts)
}

#[tokio::test]
async fn an_edit_refused_by_the_time_limit_becomes_one_thread_reply_and_the_resolution_stands() {
    for version in ["6.7.2", "11.4.0"] {
        let mut stack = Stack::started(with_dm()).await;
        let (id, posts) = past_the_edit_limit(&stack, version, 2).await;
        stack
            .teleport
            .resolve(&id, RequestState::Approved, "approved in the web UI");
        for post in &posts {
            let mm = &stack.mattermost;
            assert!(
                Stack::eventually(WAIT, || outcome_notes(mm, &post.id).len() == 1).await,
                "{version}: no outcome reply under {}",
                post.id
            );
            let note = &outcome_notes(mm, &post.id)[0];
            assert!(
                note.message.contains("**Status**: ✅ APPROVED"),
                "{}",
                note.message
            );
            assert!(
                note.message.contains("approved in the web UI"),
                "{}",
                note.message
            );
            // The post itself is as it was.
            assert_eq!(mm.post(&post.id).unwrap().message, post.message);
        }
        // The resolution is recorded as shown: nothing is retried.
        assert!(
            Stack::eventually(WAIT, || stack.data(&id).edited
                == Some(RequestState::Approved))
            .await
        );
        let puts = stack
            .mattermost
            .calls()
            .iter()
            .filter(|c| c.method == "PUT")
            .count();
        stack.restart().await;
        stack.wait_connected().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        for post in &posts {
            assert_eq!(
                outcome_notes(&stack.mattermost, &post.id).len(),
                1,
                "{version}"
            );
        }
        assert_eq!(
            stack
                .mattermost
                .calls()
                .iter()
                .filter(|c| c.method == "PUT")
                .count(),
            puts,
            "{version}: an edit the server refused is not tried again"
        );
        assert_eq!(
            stack.teleport.request(&id).unwrap().state,
            RequestState::Approved
        );
    }
}

#[tokio::test]
async fn a_revocation_past_the_time_limit_is_told_in_the_thread_too() {
    let stack = Stack::started(StackOptions::default()).await;
    let (id, posts) = past_the_edit_limit(&stack, "11.4.0", 1).await;
    stack.teleport.resolve(&id, RequestState::Approved, "");
    let mm = &stack.mattermost;
    assert!(Stack::eventually(WAIT, || outcome_notes(mm, &posts[0].id).len() == 1).await);
    stack.teleport.resolve(&id, RequestState::Denied, "revoked");
    assert!(Stack::eventually(WAIT, || outcome_notes(mm, &posts[0].id).len() == 2).await);
    let notes = outcome_notes(mm, &posts[0].id);
    assert!(
        notes.iter().any(|n| n.message.contains("❌ DENIED")),
        "{notes:?}"
    );
    assert!(
        Stack::eventually(WAIT, || stack.data(&id).edited
            == Some(RequestState::Denied))
        .await
    );
}

#[tokio::test]
async fn a_press_past_the_time_limit_decides_and_the_outcome_reaches_every_channel() {
    for version in ["6.7.2", "11.4.0"] {
        let stack = Stack::started(with_dm()).await;
        let (id, posts) = past_the_edit_limit(&stack, version, 2).await;
        let channel_post = posts
            .iter()
            .find(|p| p.channel_id == stack.channel_id)
            .unwrap();
        let pressed = stack
            .mattermost
            .press(&channel_post.id, "Approve", "alice")
            .await
            .unwrap();
        assert_eq!(pressed.status, 200, "{pressed:?}");
        assert_eq!(
            stack.teleport.request(&id).unwrap().state,
            RequestState::Approved
        );
        // 11.4 applies a press's update past the limit (its check is in the API handler);
        // 6.7.2 refuses it too, and the presser sees the server's error instead of ours.
        let shown = stack.mattermost.post(&channel_post.id).unwrap().message;
        if version == "6.7.2" {
            assert_eq!(pressed.ephemeral_text, None);
            assert_eq!(shown, channel_post.message);
        } else {
            assert!(pressed.ephemeral_text.is_some(), "{pressed:?}");
            assert!(shown.contains("APPROVED by @alice"), "{shown}");
        }
        // Every post shows the outcome: edited, or in its thread.
        for post in &posts {
            let mm = &stack.mattermost;
            let shows = || {
                mm.post(&post.id)
                    .unwrap()
                    .message
                    .contains("APPROVED by @alice")
                    || outcome_notes(mm, &post.id)
                        .iter()
                        .any(|n| n.message.contains("APPROVED by @alice"))
            };
            assert!(
                Stack::eventually(WAIT, shows).await,
                "{version}: {}",
                post.id
            );
        }
        assert!(
            Stack::eventually(WAIT, || stack.data(&id).edited
                == Some(RequestState::Approved))
            .await
        );
    }
}

#[tokio::test]
async fn review_progress_past_the_time_limit_is_left_and_not_retried() {
    let stack = Stack::started(StackOptions::default()).await;
    let (id, posts) = past_the_edit_limit(&stack, "11.4.0", 1).await;
    stack
        .teleport
        .review(&id, "carol@example.com", RequestState::Approved, "fine");
    // The review still gets its thread reply; the progress line stays as it was.
    let mm = &stack.mattermost;
    assert!(
        Stack::eventually(WAIT, || mm.posts().iter().any(
            |p| p.root_id == posts[0].id && p.message.contains("reviewed the request")
        ))
        .await
    );
    assert!(Stack::eventually(WAIT, || stack.data(&id).reviews_shown == 1).await);
    assert_eq!(mm.post(&posts[0].id).unwrap().message, posts[0].message);
}

fn priority(priority: Priority, requested_ack: bool) -> StackOptions {
    StackOptions {
        priority: PrioritySettings {
            priority,
            requested_ack,
        },
        ..with_dm()
    }
}

/// The stored priority of a post (`metadata.priority`), if any.
fn priority_of(post: &Post) -> Option<Value> {
    post.metadata.get("priority").cloned()
}

/// How many root posts of the request are in the channel.
fn channel_posts(stack: &Stack, id: &str) -> usize {
    stack
        .root_posts_for(id)
        .iter()
        .filter(|p| p.channel_id == stack.channel_id)
        .count()
}

fn channel_and_dm(stack: &Stack, id: &str) -> (Post, Post) {
    let posts = request_posts(stack, id);
    let (channel, dm): (Vec<Post>, Vec<Post>) = posts
        .into_iter()
        .partition(|p| p.channel_id == stack.channel_id);
    (channel[0].clone(), dm[0].clone())
}

#[tokio::test]
async fn a_pending_requests_channel_post_carries_its_priority_and_a_dm_does_not() {
    let stack = Stack::started(priority(Priority::Important, false)).await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    assert!(Stack::eventually(WAIT, || stack.data(&id).messages.len() == 2).await);
    let (channel, dm) = channel_and_dm(&stack, &id);
    assert_eq!(
        priority_of(&channel),
        Some(json!({"priority": "important", "requested_ack": false}))
    );
    assert_eq!(priority_of(&dm), None);
    // Replies carry none (Mattermost takes priority on root posts only).
    stack
        .teleport
        .review(&id, "carol@example.com", RequestState::Approved, "");
    let mm = &stack.mattermost;
    assert!(Stack::eventually(WAIT, || mm.posts().iter().any(|p| p.root_id == channel.id)).await);
    assert!(
        mm.posts()
            .iter()
            .filter(|p| !p.root_id.is_empty())
            .all(|p| p.metadata.is_empty())
    );
    assert_eq!(stack.instance.status().borrow().priority_problem, None);
}

#[tokio::test]
async fn an_unlicensed_server_refuses_the_acknowledgement_and_each_post_goes_out_once_without_it() {
    let stack = Stack::started(priority(Priority::Urgent, true)).await;
    let first = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    assert!(Stack::eventually(WAIT, || stack.data(&first).messages.len() == 2).await);
    let second = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    assert!(Stack::eventually(WAIT, || stack.data(&second).messages.len() == 2).await);
    for id in [&first, &second] {
        assert_eq!(channel_posts(&stack, id), 1, "posted once in the channel");
        let (channel, _) = channel_and_dm(&stack, id);
        assert_eq!(
            priority_of(&channel),
            Some(json!({"priority": "urgent", "requested_ack": false}))
        );
    }
    // One refusal, learned once: the second request went out without asking.
    let refused: Vec<_> = stack
        .mattermost
        .calls()
        .into_iter()
        .filter(|c| c.path == "/api/v4/posts" && c.status == 501)
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    let (reason, message) = stack
        .instance
        .status()
        .borrow()
        .priority_problem
        .clone()
        .unwrap();
    assert_eq!(reason, "AcknowledgementUnlicensed");
    assert!(
        message.contains("501 license_error.feature_unavailable"),
        "{message}"
    );
}

#[tokio::test]
async fn a_licensed_server_takes_the_acknowledgement() {
    let stack = Stack::start_with(priority(Priority::None, true), |mm| mm.set_licensed(true)).await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    assert!(Stack::eventually(WAIT, || stack.data(&id).messages.len() == 2).await);
    let (channel, _) = channel_and_dm(&stack, &id);
    assert_eq!(
        priority_of(&channel),
        Some(json!({"priority": "", "requested_ack": true}))
    );
    assert_eq!(stack.instance.status().borrow().priority_problem, None);
}

#[tokio::test]
async fn with_priority_switched_off_posts_are_ordinary_and_the_status_says_why() {
    let stack = Stack::start_with(priority(Priority::Important, false), |mm| {
        mm.set_post_priority(false)
    })
    .await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    assert!(Stack::eventually(WAIT, || stack.data(&id).messages.len() == 2).await);
    assert_eq!(channel_posts(&stack, &id), 1);
    let (channel, _) = channel_and_dm(&stack, &id);
    assert_eq!(priority_of(&channel), None);
    let (reason, _) = stack
        .instance
        .status()
        .borrow()
        .priority_problem
        .clone()
        .unwrap();
    assert_eq!(reason, "PriorityDisabled");
}

#[tokio::test]
async fn a_server_before_priority_ignores_it() {
    let stack = Stack::start_with(priority(Priority::Urgent, true), |mm| {
        mm.set_version("6.7.2")
    })
    .await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    assert!(Stack::eventually(WAIT, || stack.data(&id).messages.len() == 2).await);
    let (channel, _) = channel_and_dm(&stack, &id);
    assert_eq!(priority_of(&channel), None);
    assert_eq!(stack.instance.status().borrow().priority_problem, None);
}

#[tokio::test]
async fn every_action_the_plugin_posts_passes_the_current_validation() {
    let stack = Stack::started(with_dm()).await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    assert!(Stack::eventually(WAIT, || stack.data(&id).messages.len() == 2).await);
    let actions = stack
        .mattermost
        .posts()
        .iter()
        .flat_map(|p| {
            p.props
                .get("attachments")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .count();
    assert!(actions > 0, "the posts carried buttons");
    stack
        .teleport
        .review(&id, "carol@example.com", RequestState::Approved, "ok");
    assert!(Stack::eventually(WAIT, || stack.data(&id).reviews_shown == 1).await);
    let channel_post = stack.posted(&id).await;
    let pressed = stack
        .mattermost
        .press(&channel_post.id, "approve", "alice")
        .await
        .unwrap();
    assert_eq!(pressed.status, 200);
    assert!(
        Stack::eventually(WAIT, || stack.data(&id).edited
            == Some(RequestState::Approved))
        .await
    );
    assert_eq!(stack.mattermost.invalid_props(), vec![]);

    // The check can fail: an action without a type, posted by someone else, is caught.
    let bad = reqwest::Client::new()
        .post(format!("{}api/v4/posts", stack.mattermost.url()))
        .bearer_auth(stack.mattermost.bot_token())
        .json(&json!({
            "channel_id": stack.channel_id, "message": "x",
            "props": {"attachments": [{"actions": [{"id": "x", "name": "X",
                "integration": {"url": "https://example.com/x"}}]}]}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 201);
    let flagged = stack.mattermost.invalid_props();
    assert_eq!(flagged.len(), 1, "{flagged:?}");
    assert!(flagged[0].1.contains("invalid action type"), "{flagged:?}");
}

#[tokio::test]
async fn the_client_learns_the_servers_version() {
    for version in ["6.7.2", "11.4.0"] {
        let stack = Stack::start_with(StackOptions::default(), |mm| mm.set_version(version)).await;
        let learned = stack.instance.mattermost().server_version().await;
        assert_eq!(learned.map(|v| v.to_string()).as_deref(), Some(version));
    }
}
