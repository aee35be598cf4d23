//! Notes besides the posts, over the doubles: the requester is told once per transition (also
//! across crashes and lost answers), a requester Mattermost does not know is counted once and
//! left alone, and reminders come once per slot in every thread and stop at the decision.

use std::sync::atomic::Ordering;
use std::time::Duration;

use teleport_mattermost::notice::PROP_NOTE;
use teleport_mattermost::request::RequestState;
use teleport_mattermost::settings::{ReminderSettings, RequesterLookup, RequesterSettings};
use teleport_mattermost_testkit::mattermost::Post;
use teleport_mattermost_testkit::stack::{Stack, StackOptions};
use teleport_mattermost_testkit::teleport::NewRequest;

const WAIT: Duration = Duration::from_secs(20);

fn told(notify_on_post: bool) -> StackOptions {
    StackOptions {
        requester: RequesterSettings {
            lookup: RequesterLookup::Email,
            notify_on_post,
        },
        ..Default::default()
    }
}

/// The notes in the bot's direct channel with `username`.
fn dms_to(stack: &Stack, username: &str) -> Vec<Post> {
    let bot = stack.mattermost.bot_user_id();
    let user = stack.mattermost.user_id(username).unwrap();
    let channel = stack.mattermost.dm_channel_id(&bot, &user);
    stack
        .mattermost
        .posts_in(&channel)
        .into_iter()
        .filter(|p| p.props.contains_key(PROP_NOTE))
        .collect()
}

#[tokio::test]
async fn the_requester_is_told_once_when_posted_and_when_decided() {
    let mut stack = Stack::started(told(true)).await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    let post = stack.posted(&id).await;
    assert!(
        Stack::eventually(WAIT, || dms_to(&stack, "bob").len() == 1).await,
        "bob is told his request was posted"
    );
    let first = dms_to(&stack, "bob").remove(0);
    assert_eq!(
        first.message,
        format!(
            "⏳ Your access request `{id}` for roles `dba` was posted to ~access-requests for review. You will get a message here when it is decided."
        )
    );

    stack
        .mattermost
        .press(&post.id, "Approve", "alice")
        .await
        .unwrap();
    assert!(
        Stack::eventually(WAIT, || dms_to(&stack, "bob").len() == 2).await,
        "bob is told who approved it"
    );
    let outcome = dms_to(&stack, "bob").remove(1);
    assert_eq!(
        outcome.message,
        format!(
            "✅ Your access request `{id}` for roles `dba` was APPROVED by @alice. You can use it now.\n**Reason**:\n```\nApproved by Mattermost user @alice (alice@example.com) via the Mattermost plugin\n```"
        )
    );

    // A crash and the resync after it tell him nothing again.
    stack.crash().await;
    stack.restart().await;
    stack.wait_connected().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(dms_to(&stack, "bob").len(), 2);
    assert_eq!(
        stack
            .instance
            .counters
            .requester_notes
            .load(Ordering::Relaxed),
        0,
        "nothing more sent after the restart"
    );
}

#[tokio::test]
async fn a_lost_answer_to_the_requester_message_is_adopted_not_repeated() {
    let stack = Stack::started(told(false)).await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    let post = stack.posted(&id).await;
    // The DM reaches Mattermost, but its answer is lost: the retry finds it by its marker.
    stack.mattermost.inject_lost_post_responses(1);
    stack
        .mattermost
        .press(&post.id, "Deny", "carol")
        .await
        .unwrap();
    assert!(
        Stack::eventually(WAIT, || stack.data(&id).noted_any("DENIED")).await,
        "the denial note is recorded: {:?}",
        stack.data(&id)
    );
    let dms = dms_to(&stack, "bob");
    assert_eq!(dms.len(), 1, "one message, not two: {dms:?}");
    assert!(
        dms[0].message.contains("was DENIED by @carol"),
        "{}",
        dms[0].message
    );
}

#[tokio::test]
async fn a_requester_mattermost_does_not_know_is_counted_once_and_left_alone() {
    let stack = Stack::started(told(true)).await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("nobody@example.com"));
    let post = stack.posted(&id).await;
    assert!(
        Stack::eventually(WAIT, || stack.data(&id).requester_unknown()).await,
        "recorded as unknown"
    );
    stack
        .mattermost
        .press(&post.id, "Approve", "alice")
        .await
        .unwrap();
    assert!(
        Stack::eventually(WAIT, || stack.data(&id).edited
            == Some(RequestState::Approved))
        .await
    );
    let lookups = stack
        .mattermost
        .call_count("GET", "/api/v4/users/email/nobody@example.com");
    assert_eq!(lookups, 1, "looked up once, not per transition");
    assert_eq!(
        stack
            .instance
            .counters
            .requester_unknown
            .load(Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn by_default_the_requester_gets_nothing() {
    let stack = Stack::started(StackOptions::default()).await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    let post = stack.posted(&id).await;
    stack
        .mattermost
        .press(&post.id, "Approve", "alice")
        .await
        .unwrap();
    assert!(
        Stack::eventually(WAIT, || stack.data(&id).edited
            == Some(RequestState::Approved))
        .await
    );
    assert!(dms_to(&stack, "bob").is_empty());
    assert!(stack.data(&id).notes.is_empty());
}

fn reminding(after_ms: u64, every_ms: u64, max: u32) -> StackOptions {
    StackOptions {
        reminders: Some(ReminderSettings {
            after: Duration::from_millis(after_ms),
            every: Duration::from_millis(every_ms),
            max,
        }),
        ..Default::default()
    }
}

/// Reminder replies in the thread of `post`.
fn reminders_under(stack: &Stack, post: &Post) -> Vec<Post> {
    stack
        .mattermost
        .posts_in(&post.channel_id)
        .into_iter()
        .filter(|p| {
            p.root_id == post.id
                && p.props
                    .get(PROP_NOTE)
                    .and_then(|v| v.as_str())
                    .is_some_and(|t| t.starts_with("remind"))
        })
        .collect()
}

#[tokio::test]
async fn reminders_come_once_per_slot_in_every_thread_up_to_max() {
    let stack = Stack::started(reminding(1500, 1500, 2)).await;
    let id = stack.teleport.create_request(NewRequest {
        suggested_reviewers: vec!["carol@example.com".into(), "bob@example.com".into()],
        ..NewRequest::by("bob@example.com")
    });
    let post = stack.posted(&id).await;
    let threads = stack.data(&id).messages.clone();
    assert_eq!(threads.len(), 2, "the channel and carol's DM: {threads:?}");
    assert!(
        Stack::eventually(WAIT, || reminders_under(&stack, &post).len() == 2).await,
        "two reminders"
    );
    // Wait two more intervals: max is 2.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let replies = reminders_under(&stack, &post);
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert!(
        replies[0]
            .message
            .starts_with("⏰ Reminder 1 of 2: this request has waited"),
        "{}",
        replies[0].message
    );
    assert!(
        replies[0].message.ends_with(" @carol"),
        "mentions the suggested reviewer, not the requester: {}",
        replies[0].message
    );
    for thread in &threads {
        let count = stack
            .mattermost
            .posts_in(&thread.channel_id)
            .iter()
            .filter(|p| p.root_id == thread.post_id && p.props.contains_key(PROP_NOTE))
            .count();
        assert_eq!(count, 2, "each thread gets each reminder once");
    }
    assert_eq!(stack.instance.counters.reminders.load(Ordering::Relaxed), 4);
}

#[tokio::test]
async fn reminders_stop_the_moment_the_request_is_decided() {
    let stack = Stack::started(reminding(1000, 1000, 5)).await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    let post = stack.posted(&id).await;
    assert!(Stack::eventually(WAIT, || reminders_under(&stack, &post).len() == 1).await);
    stack
        .mattermost
        .press(&post.id, "Approve", "alice")
        .await
        .unwrap();
    let at_decision = reminders_under(&stack, &post).len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        reminders_under(&stack, &post).len(),
        at_decision,
        "no reminder after the approval"
    );
    assert!(at_decision <= 2, "{at_decision}");
}

#[tokio::test]
async fn without_reminders_configured_none_are_posted() {
    let stack = Stack::started(StackOptions::default()).await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    let post = stack.posted(&id).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(reminders_under(&stack, &post).is_empty());
}
