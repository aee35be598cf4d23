//! Notes besides the posts, over the doubles: the requester is told once per transition (also
//! across crashes and lost answers), a requester Mattermost does not know is counted once and
//! left alone, and reminders come once per slot in every thread and stop at the decision.

use std::sync::atomic::Ordering;
use std::time::Duration;

use teleport_mattermost::instance::Clock;
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

/// Reminders one second after a request and then hourly, on a hand-set clock: the test
/// says when each slot is due instead of racing the wall clock (a one-second `after` keeps
/// the schedule's tick, a quarter of it, short).
fn reminding(clock: &Clock, max: u32) -> StackOptions {
    StackOptions {
        reminders: Some(ReminderSettings {
            after: AFTER,
            every: EVERY,
            max,
        }),
        clock: clock.clone(),
        ..Default::default()
    }
}

const AFTER: Duration = Duration::from_secs(1);
const EVERY: Duration = Duration::from_secs(3600);

/// The time slot `n` (1-based) of a request created at `created` is due, plus a second.
fn slot(created: chrono::DateTime<chrono::Utc>, n: u32) -> chrono::DateTime<chrono::Utc> {
    created
        + chrono::Duration::from_std(AFTER + EVERY * (n - 1)).unwrap()
        + chrono::Duration::seconds(1)
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

/// Waits a few of the schedule's ticks, for what must not happen.
async fn a_few_ticks() {
    tokio::time::sleep(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn reminders_come_once_per_slot_in_every_thread_up_to_max() {
    let clock = Clock::manual(chrono::Utc::now());
    let stack = Stack::started(reminding(&clock, 2)).await;
    let id = stack.teleport.create_request(NewRequest {
        suggested_reviewers: vec!["carol@example.com".into(), "bob@example.com".into()],
        ..NewRequest::by("bob@example.com")
    });
    let post = stack.posted(&id).await;
    let created = stack.teleport.request(&id).unwrap().created.unwrap();
    let threads = stack.data(&id).messages.clone();
    assert_eq!(threads.len(), 2, "the channel and carol's DM: {threads:?}");
    a_few_ticks().await;
    assert!(
        reminders_under(&stack, &post).is_empty(),
        "nothing before slot 1"
    );
    clock.set(slot(created, 1));
    assert!(Stack::eventually(WAIT, || reminders_under(&stack, &post).len() == 1).await);
    clock.set(slot(created, 2));
    assert!(
        Stack::eventually(WAIT, || reminders_under(&stack, &post).len() == 2).await,
        "two reminders"
    );
    // Any time later: max is 2.
    clock.set(slot(created, 9));
    a_few_ticks().await;
    let replies = reminders_under(&stack, &post);
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert!(
        replies[0]
            .message
            .starts_with("⏰ Reminder 1 of 2: this request has waited 0m"),
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

/// A slot is skipped only when a later one is already due: a plugin that was down through
/// slot 1 posts slot 2 alone; a merely slow one still posts slot 1.
#[tokio::test]
async fn a_slot_is_skipped_only_when_a_later_one_is_due() {
    let clock = Clock::manual(chrono::Utc::now());
    let stack = Stack::started(reminding(&clock, 3)).await;
    let late = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    let late_post = stack.posted(&late).await;
    let created = stack.teleport.request(&late).unwrap().created.unwrap();
    // Slot 1 came due long ago (real time passes), but slot 2 is not due: slot 1 it is.
    tokio::time::sleep(Duration::from_secs(1)).await;
    clock.set(slot(created, 2) - chrono::Duration::seconds(2));
    assert!(Stack::eventually(WAIT, || reminders_under(&stack, &late_post).len() == 1).await);
    assert!(
        reminders_under(&stack, &late_post)[0]
            .message
            .contains("Reminder 1 of 3")
    );
    // Down through slot 2 and into slot 3: only slot 3.
    let tags = || -> Vec<String> {
        reminders_under(&stack, &late_post)
            .iter()
            .map(|p| p.props[PROP_NOTE].as_str().unwrap().to_string())
            .collect()
    };
    clock.set(slot(created, 3));
    assert!(
        Stack::eventually(WAIT, || tags().len() == 2).await,
        "{:?}",
        tags()
    );
    let mut tags = tags();
    tags.sort();
    assert_eq!(tags, ["remind1", "remind3"]);
}

#[tokio::test]
async fn reminders_stop_the_moment_the_request_is_decided() {
    let clock = Clock::manual(chrono::Utc::now());
    let stack = Stack::started(reminding(&clock, 5)).await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    let post = stack.posted(&id).await;
    let created = stack.teleport.request(&id).unwrap().created.unwrap();
    clock.set(slot(created, 1));
    assert!(Stack::eventually(WAIT, || reminders_under(&stack, &post).len() == 1).await);
    stack
        .mattermost
        .press(&post.id, "Approve", "alice")
        .await
        .unwrap();
    assert!(Stack::eventually(WAIT, || stack.data(&id).resolution.is_some()).await);
    clock.set(slot(created, 5));
    a_few_ticks().await;
    assert_eq!(
        reminders_under(&stack, &post).len(),
        1,
        "no reminder after the approval"
    );
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
