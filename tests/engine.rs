//! Engine scenarios: the real bridge and callback server against the Teleport and Mattermost
//! doubles on loopback.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use teleport_mattermost::request::RequestState;
use teleport_mattermost_testkit::stack::{Stack, StackOptions};
use teleport_mattermost_testkit::teleport::NewRequest;

const WAIT: Duration = Duration::from_secs(20);

async fn wait_posted(stack: &Stack, id: &str) -> teleport_mattermost_testkit::mattermost::Post {
    assert!(
        Stack::eventually(WAIT, || !stack.root_posts_for(id).is_empty()).await,
        "request {id} was never posted"
    );
    // Give a duplicate the chance to show up before the caller counts.
    stack.root_posts_for(id).remove(0)
}

/// Restarts the engine and waits until its resync has handled every request Teleport has.
async fn restart_and_resync(stack: &mut Stack) {
    stack.restart().await;
    stack.wait_connected().await;
    let expected = stack.teleport.requests().len() as u64;
    assert!(
        Stack::eventually(WAIT, || stack
            .instance
            .counters
            .jobs_done
            .load(std::sync::atomic::Ordering::Relaxed)
            >= expected)
        .await,
        "the resync handled every request"
    );
}

/// The channels of the request's root posts, sorted, one entry per post.
fn channels_posted(stack: &Stack, id: &str) -> Vec<String> {
    sorted(
        stack
            .root_posts_for(id)
            .into_iter()
            .map(|p| p.channel_id)
            .collect(),
    )
}

fn sorted(mut items: Vec<String>) -> Vec<String> {
    items.sort();
    items
}

#[tokio::test]
async fn pending_request_is_posted_once_across_restart() {
    let mut stack = Stack::started(StackOptions::default()).await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    let post = wait_posted(&stack, &id).await;
    assert_eq!(post.channel_id, stack.channel_id);
    assert!(
        post.message.contains(&id),
        "post names the request: {}",
        post.message
    );
    assert!(post.message.contains("bob@example.com"));
    assert!(post.has_buttons(), "pending post carries buttons");
    assert!(
        Stack::eventually(WAIT, || stack
            .data(&id)
            .message_in(&stack.channel_id)
            .is_some())
        .await,
        "the post is recorded in plugin data"
    );
    assert_eq!(stack.data(&id).messages[0].post_id, post.id);

    restart_and_resync(&mut stack).await;
    assert_eq!(
        stack.root_posts_for(&id).len(),
        1,
        "no second post after restart"
    );
}

#[tokio::test]
async fn dms_and_channel_are_deduplicated_by_channel_and_unknown_recipients_skipped() {
    let stack = Stack::started(StackOptions {
        recipients: vec![
            "engineering/access-requests".into(),
            "alice@example.com".into(),
            "ghost@example.com".into(),
        ],
        ..Default::default()
    })
    .await;
    let id = stack.teleport.create_request(NewRequest {
        suggested_reviewers: vec!["alice@example.com".into(), "carol".into()],
        ..NewRequest::by("bob@example.com")
    });
    let bot = stack.mattermost.bot_user_id();
    let alice_dm = stack
        .mattermost
        .dm_channel_id(&bot, &stack.mattermost.user_id("alice").unwrap());
    let carol_dm = stack
        .mattermost
        .dm_channel_id(&bot, &stack.mattermost.user_id("carol").unwrap());
    assert!(
        Stack::eventually(WAIT, || stack.data(&id).messages.len() == 3).await,
        "posted to the channel and two DMs: {:?}",
        stack.data(&id)
    );
    assert_eq!(
        channels_posted(&stack, &id),
        sorted(vec![stack.channel_id.clone(), alice_dm, carol_dm])
    );
    assert!(
        stack
            .mattermost
            .recorded()
            .iter()
            .all(|c| c.path != "/api/v4/posts" || c.body["channel_id"] != ""),
        "never posted with an empty channel id"
    );
}

#[tokio::test]
async fn a_recipient_mattermost_fails_to_resolve_is_reached_by_the_retry_not_skipped() {
    let stack = Stack::started(StackOptions::default()).await;
    // Looking carol up fails past the client's own retries (6 attempts) three times over,
    // more than the resync and the watch event make between them: a server fault, not an
    // answer about carol, so only a retry of the job can reach her once Mattermost recovers.
    stack
        .mattermost
        .inject_status_on("/api/v4/users/username/carol", 18, 503);
    let id = stack.teleport.create_request(NewRequest {
        suggested_reviewers: vec!["carol".into()],
        ..NewRequest::by("bob@example.com")
    });
    let carol_dm = stack.mattermost.dm_channel_id(
        &stack.mattermost.bot_user_id(),
        &stack.mattermost.user_id("carol").unwrap(),
    );
    assert!(
        Stack::eventually(WAIT, || stack.data(&id).message_in(&carol_dm).is_some()).await,
        "carol's DM was posted after the lookup recovered: {:?}",
        stack.data(&id)
    );
    assert_eq!(
        channels_posted(&stack, &id),
        sorted(vec![stack.channel_id.clone(), carol_dm]),
        "one post per channel, none repeated"
    );
    assert!(
        stack
            .instance
            .counters
            .job_retries
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
}
#[tokio::test]
async fn role_recipients_fall_back_to_star() {
    let stack = Stack::started(StackOptions {
        role_to_recipients: BTreeMap::from([
            ("admin".to_string(), vec!["carol@example.com".to_string()]),
            ("*".to_string(), vec!["alice".to_string()]),
        ]),
        ..Default::default()
    })
    .await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com")); // role dba → "*"
    assert!(Stack::eventually(WAIT, || stack.data(&id).messages.len() == 2).await);
    let bot = stack.mattermost.bot_user_id();
    let alice_dm = stack
        .mattermost
        .dm_channel_id(&bot, &stack.mattermost.user_id("alice").unwrap());
    assert!(stack.data(&id).message_in(&alice_dm).is_some());
}

#[tokio::test]
async fn reviews_become_thread_replies_in_order() {
    let stack = Stack::started(StackOptions::default()).await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    let root = wait_posted(&stack, &id).await;
    assert!(Stack::eventually(WAIT, || !stack.data(&id).messages.is_empty()).await);
    stack.teleport.review(
        &id,
        "alice@example.com",
        RequestState::Approved,
        "looks fine",
    );
    stack
        .teleport
        .review(&id, "carol@example.com", RequestState::Denied, "");
    let replies = || {
        stack
            .mattermost
            .posts()
            .into_iter()
            .filter(|p| p.root_id == root.id)
            .collect::<Vec<_>>()
    };
    assert!(
        Stack::eventually(WAIT, || replies().len() == 2).await,
        "two replies"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let replies = replies();
    assert_eq!(replies.len(), 2, "each review replied to once");
    assert!(replies[0].message.contains("alice@example.com"));
    assert!(replies[0].message.contains("APPROVED"));
    assert!(replies[1].message.contains("carol@example.com"));
    assert!(replies[1].message.contains("DENIED"));
    assert_eq!(stack.data(&id).reviews_count, 2);
}

/// Presses `action` as `user` on a fresh request's post and checks every effect: the
/// ephemeral answer, the one state change with its delegator and reason, the request's new
/// state, and the post edited to `outcome` without buttons.
async fn button_round_trip(
    action: &str,
    user: &str,
    state: RequestState,
    answer: &str,
    outcome: &str,
) {
    let stack = Stack::started(StackOptions::default()).await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    let post = wait_posted(&stack, &id).await;
    let pressed = stack
        .mattermost
        .press(&post.id, action, user)
        .await
        .unwrap();
    assert_eq!(pressed.status, 200);
    let ephemeral = pressed.ephemeral_text.unwrap_or_default();
    assert!(ephemeral.contains(answer), "{ephemeral}");
    let changes = stack.teleport.state_changes();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].id, id);
    assert_eq!(changes[0].state, state);
    assert_eq!(
        changes[0].delegator,
        format!("mattermost:{user}@example.com")
    );
    assert!(changes[0].reason.contains(&format!("@{user}")));
    assert_eq!(stack.teleport.request(&id).unwrap().state, state);
    assert!(Stack::eventually(WAIT, || stack.data(&id).edited == Some(state)).await);
    let edited = stack.mattermost.post(&post.id).unwrap();
    assert!(edited.message.contains(outcome), "{}", edited.message);
    assert!(!edited.has_buttons(), "no buttons after resolution");
}

#[tokio::test]
async fn approve_button_resolves_in_teleport_and_edits_the_post() {
    button_round_trip(
        "Approve",
        "alice",
        RequestState::Approved,
        "approved",
        "APPROVED by @alice",
    )
    .await;
}

#[tokio::test]
async fn deny_button_denies() {
    button_round_trip(
        "Deny",
        "carol",
        RequestState::Denied,
        "denied",
        "DENIED by @carol",
    )
    .await;
}

#[tokio::test]
async fn expiry_edits_every_post_to_expired() {
    let stack = Stack::started(StackOptions {
        recipients: vec!["alice@example.com".into()],
        ..Default::default()
    })
    .await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    assert!(Stack::eventually(WAIT, || stack.data(&id).messages.len() == 2).await);
    stack.teleport.expire(&id);
    assert!(
        Stack::eventually(WAIT, || stack.data(&id).edited
            == Some(RequestState::Expired))
        .await
    );
    for m in stack.data(&id).messages {
        let post = stack.mattermost.post(&m.post_id).unwrap();
        assert!(post.message.contains("EXPIRED"), "{}", post.message);
        assert!(!post.has_buttons());
    }
}

#[tokio::test]
async fn delete_after_approved_leaves_approved_and_edits_once() {
    let stack = Stack::started(StackOptions::default()).await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    let post = wait_posted(&stack, &id).await;
    assert!(Stack::eventually(WAIT, || !stack.data(&id).messages.is_empty()).await);
    stack
        .teleport
        .resolve(&id, RequestState::Approved, "approved with tsh");
    assert!(
        Stack::eventually(WAIT, || stack.data(&id).edited
            == Some(RequestState::Approved))
        .await
    );
    stack.teleport.expire(&id);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let d = stack.data(&id);
    assert_eq!(d.resolution, Some(RequestState::Approved));
    let text = stack.mattermost.post(&post.id).unwrap().message;
    assert!(
        text.contains("APPROVED") && !text.contains("EXPIRED"),
        "{text}"
    );
    let edits = stack
        .mattermost
        .recorded()
        .iter()
        .filter(|c| c.method == "PUT" && c.path.ends_with(&post.id))
        .count();
    assert_eq!(edits, 1, "the post is edited exactly once");
}

#[tokio::test]
async fn unauthorized_clicker_is_refused_and_nothing_changes() {
    let stack = Stack::started(StackOptions {
        approvers: vec!["alice".into()],
        ..Default::default()
    })
    .await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    let post = wait_posted(&stack, &id).await;
    let outcome = stack
        .mattermost
        .press(&post.id, "Approve", "mallory")
        .await
        .unwrap();
    assert_eq!(outcome.status, 200);
    assert!(outcome.ephemeral_text.unwrap().contains("not allowed"));
    assert!(stack.teleport.state_changes().is_empty());
    assert_eq!(
        stack.teleport.request(&id).unwrap().state,
        RequestState::Pending
    );
    assert!(
        stack.mattermost.post(&post.id).unwrap().has_buttons(),
        "post unchanged"
    );
}

#[tokio::test]
async fn self_approval_is_refused() {
    let stack = Stack::started(StackOptions::default()).await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    let post = wait_posted(&stack, &id).await;
    let outcome = stack
        .mattermost
        .press(&post.id, "Approve", "bob")
        .await
        .unwrap();
    assert!(outcome.ephemeral_text.unwrap().contains("your own"));
    assert!(stack.teleport.state_changes().is_empty());
    assert_eq!(
        stack.teleport.request(&id).unwrap().state,
        RequestState::Pending
    );
}

#[tokio::test]
async fn click_on_an_expired_request_gets_a_friendly_answer_and_no_write() {
    let mut stack = Stack::started(StackOptions::default()).await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    let post = wait_posted(&stack, &id).await;
    // The engine is down, so the post still shows its buttons when the request expires.
    stack.crash().await;
    stack.teleport.expire(&id);
    let outcome = stack
        .mattermost
        .press(&post.id, "Approve", "alice")
        .await
        .unwrap();
    assert_eq!(outcome.status, 200);
    assert!(outcome.ephemeral_text.unwrap().contains("expired"));
    assert!(stack.teleport.state_changes().is_empty());
}

#[tokio::test]
async fn click_on_a_request_resolved_elsewhere_makes_no_write() {
    let mut stack = Stack::started(StackOptions::default()).await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    let post = wait_posted(&stack, &id).await;
    stack.crash().await;
    stack
        .teleport
        .resolve(&id, RequestState::Denied, "denied with tsh");
    let outcome = stack
        .mattermost
        .press(&post.id, "Approve", "alice")
        .await
        .unwrap();
    assert!(outcome.ephemeral_text.unwrap().contains("already DENIED"));
    assert!(stack.teleport.state_changes().is_empty());
}

#[tokio::test]
async fn stream_dropped_mid_burst_loses_nothing() {
    let stack = Stack::started(StackOptions::default()).await;
    let mut ids = Vec::new();
    for i in 0..120 {
        ids.push(
            stack
                .teleport
                .create_request(NewRequest::by("bob@example.com")),
        );
        if i % 40 == 20 {
            stack.teleport.drop_watches();
        }
    }
    assert!(
        Stack::eventually(Duration::from_secs(60), || ids
            .iter()
            .all(|id| !stack.root_posts_for(id).is_empty()))
        .await,
        "every request posted"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in &ids {
        assert_eq!(
            stack.root_posts_for(id).len(),
            1,
            "request {id} posted once"
        );
    }
    assert!(
        stack.teleport.watch_count() >= 2,
        "the watch was re-established"
    );
}

#[tokio::test]
async fn requests_created_while_down_are_posted_after_restart() {
    let mut stack = Stack::started(StackOptions::default()).await;
    stack.crash().await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    stack.restart().await;
    wait_posted(&stack, &id).await;
}

#[tokio::test]
async fn rate_limit_storm_delays_but_loses_nothing() {
    let stack = Stack::started(StackOptions::default()).await;
    stack.mattermost.inject_429(40, 0);
    let ids: Vec<String> = (0..20)
        .map(|_| {
            stack
                .teleport
                .create_request(NewRequest::by("bob@example.com"))
        })
        .collect();
    assert!(
        Stack::eventually(Duration::from_secs(60), || ids
            .iter()
            .all(|id| !stack.root_posts_for(id).is_empty()))
        .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    for id in &ids {
        assert_eq!(stack.root_posts_for(id).len(), 1);
    }
    assert!(
        stack.mattermost.recorded().iter().any(|c| c.status == 429),
        "the storm really happened"
    );
}

/// A request's post is created but its answer is lost, as if the process died right after;
/// `chatter` posts by people came into the channel just before. After the restart the post is
/// adopted, never made again.
async fn a_lost_answer_then_a_crash_is_adopted(chatter: usize) {
    let mut stack = Stack::started(StackOptions::default()).await;
    stack
        .mattermost
        .add_chatter(&stack.channel_id, "alice", chatter);
    stack.mattermost.inject_lost_post_responses(1);
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    assert!(Stack::eventually(WAIT, || !stack.root_posts_for(&id).is_empty()).await);
    stack.crash().await;
    stack.restart().await;
    assert!(
        Stack::eventually(WAIT, || stack
            .data(&id)
            .message_in(&stack.channel_id)
            .is_some())
        .await,
        "the existing post is adopted"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let posts = stack.root_posts_for(&id);
    assert_eq!(posts.len(), 1, "no duplicate post");
    assert_eq!(stack.data(&id).messages[0].post_id, posts[0].id);
}

#[tokio::test]
async fn crash_between_posting_and_recording_gives_no_duplicate() {
    a_lost_answer_then_a_crash_is_adopted(0).await;
}

/// The same crash in a channel where people wrote 1,200 posts just before: Mattermost's
/// `?since=` query would leave the newest posts out past 1,000 (the double plays it as
/// `GetPostsSince` reads), so the post is looked for page by page.
#[tokio::test]
async fn in_a_busy_channel_a_post_whose_answer_was_lost_is_still_found() {
    a_lost_answer_then_a_crash_is_adopted(1_200).await;
}

#[tokio::test]
async fn install_taken_over_from_teleports_plugin_does_not_repost() {
    let stack = Stack::started(StackOptions::default()).await;
    let mut stack = stack;
    stack.crash().await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    stack.teleport.set_plugin_data(
        &id,
        HashMap::from([
            ("user".to_string(), "bob@example.com".to_string()),
            ("roles".to_string(), "dba".to_string()),
            (
                "messages".to_string(),
                format!("{}/legacypost", stack.channel_id),
            ),
        ]),
    );
    restart_and_resync(&mut stack).await;
    assert!(
        stack.root_posts_for(&id).is_empty(),
        "the Go plugin's post is kept"
    );
}

#[tokio::test]
async fn identity_swap_keeps_working() {
    let stack = Stack::started(StackOptions::default()).await;
    let first = stack.client_cert.serial_hex.clone();
    assert_eq!(stack.teleport.last_client_serial(), Some(first.clone()));
    let next = stack.pki.client("access-plugin-mattermost");
    let credentials = teleport_mattermost::instance::Credentials {
        identity: next.identity(),
        token: stack.instance.credentials().token.clone(),
    };
    stack.instance.update_credentials(credentials).unwrap();
    assert!(
        Stack::eventually(Duration::from_secs(5), || stack
            .teleport
            .last_client_serial()
            == Some(next.serial_hex.clone()))
        .await,
        "the new certificate is in use within 5 s"
    );
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    wait_posted(&stack, &id).await;
    assert_eq!(stack.teleport.last_client_serial(), Some(next.serial_hex));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_requests_are_each_posted_and_resolved_once() {
    let stack = Stack::started(StackOptions::default()).await;
    let ids: Vec<String> = (0..200)
        .map(|_| {
            stack
                .teleport
                .create_request(NewRequest::by("bob@example.com"))
        })
        .collect();
    assert!(
        Stack::eventually(Duration::from_secs(90), || ids
            .iter()
            .all(|id| !stack.data(id).messages.is_empty()))
        .await,
        "all posted"
    );
    let presses = ids.iter().enumerate().map(|(i, id)| {
        let post_id = stack.data(id).messages[0].post_id.clone();
        let mm = stack.mattermost.clone();
        async move {
            let action = if i % 2 == 0 { "Approve" } else { "Deny" };
            mm.press(&post_id, action, "alice").await.unwrap()
        }
    });
    let outcomes = futures::future::join_all(presses).await;
    assert!(outcomes.iter().all(|o| o.status == 200));
    assert!(
        Stack::eventually(Duration::from_secs(90), || ids
            .iter()
            .all(|id| stack.data(id).edited.is_some()))
        .await,
        "all edited"
    );
    let changes = stack.teleport.state_changes();
    assert_eq!(changes.len(), 200, "each resolved exactly once");
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(stack.root_posts_for(id).len(), 1, "posted once");
        let expected = if i % 2 == 0 {
            RequestState::Approved
        } else {
            RequestState::Denied
        };
        assert_eq!(stack.teleport.request(id).unwrap().state, expected);
    }
}

#[tokio::test]
async fn a_post_deleted_in_mattermost_does_not_block_the_resolution() {
    let stack = Stack::started(StackOptions {
        recipients: vec!["alice@example.com".into()],
        ..Default::default()
    })
    .await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    assert!(Stack::eventually(WAIT, || stack.data(&id).messages.len() == 2).await);
    let messages = stack.data(&id).messages;
    assert!(stack.mattermost.delete_post(&messages[0].post_id));
    stack.teleport.resolve(&id, RequestState::Denied, "");
    assert!(
        Stack::eventually(WAIT, || stack.data(&id).edited
            == Some(RequestState::Denied))
        .await,
        "resolution completes despite the deleted post"
    );
    let other = stack.mattermost.post(&messages[1].post_id).unwrap();
    assert!(other.message.contains("DENIED"), "{}", other.message);
}

/// A post fits the server's MaxPostSize (read from its client config): a 20,000-character
/// reason is cut to it, on an old server's 4000 too, and the post is never refused.
#[tokio::test]
async fn a_20000_character_reason_is_posted_up_to_the_servers_limit() {
    for limit in [4000, 16_383] {
        let stack = Stack::start(StackOptions::default()).await;
        stack.mattermost.set_max_post_size(limit);
        stack.wait_connected().await;
        let id = stack.teleport.create_request(NewRequest {
            reason: "r".repeat(20_000),
            ..NewRequest::by("bob@example.com")
        });
        let post = wait_posted(&stack, &id).await;
        let chars = post.message.chars().count();
        assert!(chars <= limit && chars > limit - 200, "{chars} of {limit}");
        assert!(post.message.contains("(truncated)"));
        assert!(post.message.contains(&format!("**Request ID**: {id}")));
    }
}

/// Each review updates the post's progress line, and the buttons stay.
#[tokio::test]
async fn reviews_update_the_progress_line_of_every_post() {
    let stack = Stack::started(StackOptions {
        recipients: vec!["alice@example.com".into()],
        ..Default::default()
    })
    .await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    assert!(Stack::eventually(WAIT, || stack.data(&id).messages.len() == 2).await);
    stack.teleport.review(
        &id,
        "carol@example.com",
        RequestState::Approved,
        "looks right",
    );
    let shows = |text: &str| {
        stack.data(&id).messages.iter().all(|m| {
            stack
                .mattermost
                .post(&m.post_id)
                .is_some_and(|p| p.message.contains(text) && p.has_buttons())
        })
    };
    assert!(
        Stack::eventually(WAIT, || shows(
            "**Reviews**: approvals ✅ 1 (`carol@example.com`) · denials ❌ 0"
        ))
        .await,
        "{:?}",
        stack.root_posts_for(&id)
    );
    stack
        .teleport
        .review(&id, "dave@example.com", RequestState::Denied, "not now");
    assert!(
        Stack::eventually(WAIT, || shows("denials ❌ 1 (`dave@example.com`)")).await,
        "{:?}",
        stack.root_posts_for(&id)
    );
}

/// The engine knows which pending requests still lack a post, and since when: what the
/// `PendingRequestsNotPosted` alert reads. A request whose post keeps failing stays counted;
/// once posted it is not.
#[tokio::test]
async fn a_request_whose_post_keeps_failing_is_counted_until_it_is_posted() {
    let stack = Stack::started(StackOptions::default()).await;
    // 403 on every create: the post cannot be made for now (the bot lost the channel, say).
    stack
        .mattermost
        .inject_status_on("/api/v4/posts", 1000, 403);
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    let refused = || {
        stack
            .mattermost
            .calls()
            .iter()
            .filter(|c| c.method == "POST" && c.path == "/api/v4/posts" && c.status == 403)
            .count()
    };
    assert!(Stack::eventually(WAIT, || refused() >= 2).await, "retried");
    let status = stack.instance.status().borrow().clone();
    assert_eq!(status.unposted_requests, 1, "{status:?}");
    assert!(status.oldest_unposted.is_some());
    assert!(stack.data(&id).messages.is_empty());
    stack.mattermost.clear_injected();
    let status = stack
        .status_until(Duration::from_secs(60), |s| s.unposted_requests == 0)
        .await;
    assert_eq!(status.unposted_requests, 0, "{status:?}");
    assert_eq!(status.oldest_unposted, None);
    assert_eq!(stack.data(&id).messages.len(), 1);
}
