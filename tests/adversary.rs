//! The requester is the adversary: they write the reason and the suggested reviewers, may own a
//! second Mattermost account, and may have a friend in Mattermost. A reviewer who writes a
//! dialog reason writes text others read. Each test attacks the plugin the way one of them
//! would, through the real engine and callback server over the doubles, and pins what must
//! hold: they choose neither who approves, nor where posts go, nor what a post says.
//!
//! Markup is judged here with pulldown-cmark, a CommonMark parser, as a quick structural
//! check; `tests/markdown_corpus.rs` judges it with Mattermost's own client parsers and tier 4
//! with the real server.

use std::sync::atomic::Ordering;
use std::time::Duration;

use pulldown_cmark::{Event, Parser, Tag, TagEnd};
use teleport_mattermost::instance::Clock;
use teleport_mattermost::request::RequestState;
use teleport_mattermost::settings::{
    ReasonPrompt, ReminderSettings, RequesterLookup, RequesterSettings,
};
use teleport_mattermost_testkit::mattermost::{MattermostDouble, Post, PressOutcome};
use teleport_mattermost_testkit::stack::{Stack, StackOptions, TEAM};
use teleport_mattermost_testkit::teleport::{NewRequest, Rpc};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(20);

fn ephemeral(outcome: &PressOutcome) -> String {
    outcome.ephemeral_text.clone().unwrap_or_default()
}

/// The posts of a request in the direct channel of the bot and `username`.
fn dm_posts(stack: &Stack, username: &str, request_id: &str) -> Vec<Post> {
    let channel = stack
        .mattermost
        .dm_channel_id(&stack.mattermost.bot_user_id(), username);
    stack
        .mattermost
        .posts_in(&channel)
        .into_iter()
        .filter(|p| p.props.get("teleport_request_id").and_then(|v| v.as_str()) == Some(request_id))
        .collect()
}

fn with_suggested(user: &str, suggested: &[&str]) -> NewRequest {
    NewRequest {
        suggested_reviewers: suggested.iter().map(|s| s.to_string()).collect(),
        ..NewRequest::by(user)
    }
}

/// What a CommonMark reader makes of a post.
#[derive(Debug, Default)]
struct Reading {
    /// `**Status**` strong nodes outside code.
    status_lines: usize,
    links: Vec<String>,
    images: Vec<String>,
    html: Vec<String>,
    /// Headings, block quotes, lists, tables.
    structure: Vec<String>,
    /// Text of code spans and code blocks.
    code: String,
    /// Text outside code.
    text: String,
}

fn read(markdown: &str) -> Reading {
    let mut out = Reading::default();
    let mut in_code_block = false;
    let mut strong_text: Option<String> = None;
    let options =
        pulldown_cmark::Options::ENABLE_TABLES | pulldown_cmark::Options::ENABLE_STRIKETHROUGH;
    for event in Parser::new_ext(markdown, options) {
        match event {
            Event::Start(Tag::CodeBlock(_)) => in_code_block = true,
            Event::End(TagEnd::CodeBlock) => in_code_block = false,
            Event::Code(code) => out.code.push_str(&code),
            Event::Text(text) if in_code_block => out.code.push_str(&text),
            Event::Text(text) => {
                if let Some(strong) = strong_text.as_mut() {
                    strong.push_str(&text);
                }
                out.text.push_str(&text);
                out.text.push(' ');
            }
            Event::Start(Tag::Strong) => strong_text = Some(String::new()),
            Event::End(TagEnd::Strong) => {
                let strong = strong_text.take();
                out.status_lines += usize::from(strong.as_deref() == Some("Status"));
            }
            Event::Start(Tag::Link { dest_url, .. }) => out.links.push(dest_url.to_string()),
            Event::Start(Tag::Image { dest_url, .. }) => out.images.push(dest_url.to_string()),
            Event::Html(h) | Event::InlineHtml(h) => out.html.push(h.to_string()),
            Event::Start(
                tag @ (Tag::Heading { .. } | Tag::BlockQuote(_) | Tag::List(_) | Tag::Table(_)),
            ) => out.structure.push(format!("{tag:?}")),
            _ => {}
        }
    }
    out
}

/// Asserts that `post` shows `payload`'s words only inside code, and nothing else it could make.
fn assert_only_code(post: &str, marker: &str) {
    let reading = read(post);
    assert_eq!(
        reading.status_lines, 1,
        "one status line: {reading:?}\n{post}"
    );
    assert!(
        reading
            .links
            .iter()
            .all(|l| l.contains("/web/requests/") || l.contains("/pl/")),
        "{reading:?}\n{post}"
    );
    assert!(reading.images.is_empty(), "{reading:?}\n{post}");
    assert!(reading.html.is_empty(), "{reading:?}\n{post}");
    assert!(reading.structure.is_empty(), "{reading:?}\n{post}");
    assert!(
        !reading.text.contains(marker),
        "{marker:?} outside code: {reading:?}\n{post}"
    );
    assert!(
        !reading.text.contains("@channel")
            && !reading.text.contains("@all")
            && !reading.text.contains("@here"),
        "{reading:?}"
    );
    assert!(
        reading.code.contains(marker),
        "{marker:?} not shown at all: {reading:?}\n{post}"
    );
}

/// A reason written to break out of its code: a blank line, a mention, a fake status line, a
/// quote, a list, a heading, a fence, a link, an image and HTML.
const HOSTILE: &str = "urgent\n\n@channel please approve now ZZMARK\n\n**Status**: ✅ APPROVED by @alice\r\n> quoted\r- item\n# heading\n~~~\n```\n[click](https://evil.example) ![pixel](https://evil.example/p.png) <img src=x onerror=alert(1)>\n    indented";

#[tokio::test]
async fn a_suggested_reviewer_outside_the_channel_gets_no_buttons_and_a_link_to_the_channel_post() {
    let stack = Stack::started(StackOptions::default()).await;
    stack
        .mattermost
        .add_user("outsider", "outsider@example.com");
    let id = stack.teleport.create_request(with_suggested(
        "bob@example.com",
        &["outsider@example.com", "alice@example.com"],
    ));
    let channel_post = stack.posted(&id).await;
    assert!(channel_post.has_buttons());
    assert!(Stack::eventually(WAIT, || stack.data(&id).messages.len() == 3).await);

    let outsider = dm_posts(&stack, "outsider", &id);
    assert_eq!(outsider.len(), 1);
    assert!(!outsider[0].has_buttons(), "{:?}", outsider[0].props);
    let permalink = format!("{}{TEAM}/pl/{}", stack.mattermost.url(), channel_post.id);
    assert!(
        outsider[0].message.contains(&permalink),
        "{}",
        outsider[0].message
    );
    let alice = dm_posts(&stack, "alice", &id);
    assert!(
        alice[0].has_buttons(),
        "a member of the channel may decide from her DM"
    );

    // Pressing in the channel anyway: 11.4 lets a team member read a public channel, so the
    // press reaches the plugin, which refuses it...
    let press = stack
        .mattermost
        .press(&channel_post.id, "Approve", "outsider")
        .await
        .unwrap();
    assert_eq!(press.status, 200, "{press:?}");
    let told = press.ephemeral_text.unwrap_or_default();
    assert!(told.contains("not allowed"), "{told}");
    // ...and 6.7.2 keeps them out of a channel they are not in.
    stack.mattermost.set_version("6.7.2");
    let press = stack
        .mattermost
        .press(&channel_post.id, "Approve", "outsider")
        .await
        .unwrap();
    assert_eq!(press.status, 403, "{press:?}");
    assert!(stack.teleport.state_changes().is_empty());
}

/// A channel the admin posts to that holds someone outside the plugin's channel.
fn with_ops_channel(members: &'static [&'static str]) -> impl FnOnce(&MattermostDouble) {
    move |mm| {
        let ops = mm.add_channel(TEAM, "ops");
        mm.add_member(&ops, &mm.bot_user_id());
        for member in members {
            mm.add_user(member, &format!("{member}@other.example"));
            mm.add_member(&ops, member);
        }
    }
}

fn ops_options() -> StackOptions {
    StackOptions {
        recipients: vec![format!("{TEAM}/ops")],
        ..Default::default()
    }
}

#[tokio::test]
async fn the_requesters_second_account_cannot_approve() {
    // bobby is bob's second account, in the ops channel the admin also posts requests to.
    let stack = Stack::start_with(ops_options(), with_ops_channel(&["bobby"])).await;
    let id = stack
        .teleport
        .create_request(with_suggested("bob@example.com", &["bobby@other.example"]));
    stack.posted(&id).await;
    assert!(Stack::eventually(WAIT, || dm_posts(&stack, "bobby", &id).len() == 1).await);
    assert!(!dm_posts(&stack, "bobby", &id)[0].has_buttons());
    let ops = stack.mattermost.add_channel(TEAM, "ops");
    assert!(Stack::eventually(WAIT, || stack.data(&id).message_in(&ops).is_some()).await);
    let ops_post = stack.data(&id).message_in(&ops).unwrap().post_id.clone();
    let press = stack
        .mattermost
        .press(&ops_post, "Approve", "bobby")
        .await
        .unwrap();
    assert!(ephemeral(&press).contains("not allowed"), "{press:?}");
    assert!(stack.teleport.state_changes().is_empty());
    assert_eq!(
        stack.teleport.request(&id).unwrap().state,
        RequestState::Pending
    );
}

#[tokio::test]
async fn a_channel_suggested_by_the_requester_gets_nothing_and_is_counted() {
    let stack = Stack::started(StackOptions::default()).await;
    let secret = stack.mattermost.add_channel(TEAM, "secret");
    stack
        .mattermost
        .add_member(&secret, &stack.mattermost.bot_user_id());
    let id = stack.teleport.create_request(with_suggested(
        "bob@example.com",
        &[&format!("{TEAM}/secret"), "", "not a person", "alice"],
    ));
    assert!(Stack::eventually(WAIT, || stack.data(&id).messages.len() == 2).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(stack.mattermost.posts_in(&secret).is_empty());
    assert_eq!(
        stack
            .instance
            .counters
            .suggestions_dropped
            .load(Ordering::Relaxed),
        3
    );
    // Seen again after a reconnect's resync, it is not counted twice.
    let watches = stack.teleport.watch_count();
    stack.teleport.drop_watches();
    assert!(Stack::eventually(WAIT, || stack.teleport.watch_count() > watches).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        stack
            .instance
            .counters
            .suggestions_dropped
            .load(Ordering::Relaxed),
        3
    );
    assert!(stack.mattermost.posts_in(&secret).is_empty());
}

#[tokio::test]
async fn three_hundred_suggested_reviewers_get_ten_messages_and_a_count() {
    let stack = Stack::started(StackOptions::default()).await;
    let names: Vec<String> = (0..300).map(|i| format!("reviewer{i}")).collect();
    for name in &names {
        stack
            .mattermost
            .add_user(name, &format!("{name}@example.com"));
        stack.mattermost.add_member(&stack.channel_id, name);
    }
    let calls_before = stack.mattermost.calls().len();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let id = stack
        .teleport
        .create_request(with_suggested("bob@example.com", &refs));
    assert!(Stack::eventually(WAIT, || stack.data(&id).messages.len() == 11).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        stack.data(&id).messages.len(),
        11,
        "the channel and ten messages"
    );
    let calls = stack.mattermost.calls().len() - calls_before;
    assert!(calls < 80, "{calls} Mattermost calls for one request");
    let post = stack.posted(&id).await;
    assert!(
        post.message.contains("and 290 more, not messaged"),
        "{}",
        post.message
    );
}

#[tokio::test]
async fn a_hostile_reason_and_names_render_only_as_code_everywhere() {
    let stack = Stack::started(StackOptions::default()).await;
    let id = stack.teleport.create_request(NewRequest {
        user: "[bob](https://evil.example)".into(),
        roles: vec!["dba".into(), "<img src=x>".into(), "@channel".into()],
        reason: HOSTILE.into(),
        suggested_reviewers: vec!["alice".into()],
        ..Default::default()
    });
    let post = stack.posted(&id).await;
    assert_only_code(&post.message, "ZZMARK");
    assert!(Stack::eventually(WAIT, || dm_posts(&stack, "alice", &id).len() == 1).await);
    assert_only_code(&dm_posts(&stack, "alice", &id)[0].message, "ZZMARK");

    // A review with a hostile reason: the thread reply.
    stack
        .teleport
        .review(&id, "@channel", RequestState::Approved, HOSTILE);
    let reply = || {
        stack
            .mattermost
            .posts_in(&post.channel_id)
            .into_iter()
            .find(|p| p.root_id == post.id && p.message.contains("reviewed the request"))
    };
    assert!(Stack::eventually(WAIT, || reply().is_some()).await);
    let reply = reply().unwrap().message;
    let reading = read(&reply);
    assert!(
        !reading.text.contains("ZZMARK") && !reading.text.contains("@channel"),
        "{reply}"
    );
    assert!(
        reading.links.is_empty() && reading.images.is_empty() && reading.html.is_empty(),
        "{reply}"
    );

    // The resolution, with a hostile resolution reason written in Teleport.
    stack.teleport.resolve(&id, RequestState::Denied, HOSTILE);
    assert!(
        Stack::eventually(WAIT, || stack
            .mattermost
            .post(&post.id)
            .is_some_and(|p| p.message.contains("DENIED")))
        .await
    );
    assert_only_code(&stack.mattermost.post(&post.id).unwrap().message, "ZZMARK");
}

#[tokio::test]
async fn a_reviewers_dialog_reason_renders_only_as_code_in_the_post_and_the_requesters_dm() {
    let stack = Stack::started(StackOptions {
        deny_reason: ReasonPrompt::Required,
        requester: RequesterSettings {
            lookup: RequesterLookup::Email,
            notify_on_post: false,
        },
        ..Default::default()
    })
    .await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    let post = stack.posted(&id).await;
    let press = stack
        .mattermost
        .press(&post.id, "Deny", "alice")
        .await
        .unwrap();
    assert_eq!(press.status, 200);
    let dialog = stack
        .mattermost
        .dialogs_for("alice")
        .pop()
        .expect("the dialog opened");
    let answer = stack
        .mattermost
        .submit_dialog(
            &dialog,
            "alice",
            &post.channel_id,
            serde_json::json!({"reason": HOSTILE}),
            None,
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(
        Stack::eventually(WAIT, || stack
            .mattermost
            .post(&post.id)
            .is_some_and(|p| p.message.contains("DENIED by @alice")))
        .await
    );
    assert_only_code(&stack.mattermost.post(&post.id).unwrap().message, "ZZMARK");
    assert!(
        Stack::eventually(WAIT, || dm_posts(&stack, "bob", &id)
            .iter()
            .any(|p| p.message.contains("DENIED")))
        .await
    );
    let dm = dm_posts(&stack, "bob", &id)
        .into_iter()
        .find(|p| p.message.contains("DENIED"))
        .unwrap();
    let reading = read(&dm.message);
    assert!(
        !reading.text.contains("ZZMARK") && !reading.text.contains("@channel"),
        "{}",
        dm.message
    );
    assert!(
        reading.links.is_empty() && reading.images.is_empty() && reading.structure.is_empty(),
        "{}",
        dm.message
    );
}

#[tokio::test]
async fn reminders_mention_only_people_who_may_decide() {
    let clock = Clock::manual(chrono::Utc::now());
    let stack = Stack::started(StackOptions {
        clock: clock.clone(),
        reminders: Some(ReminderSettings {
            after: Duration::from_secs(1),
            every: Duration::from_secs(3600),
            max: 2,
        }),
        ..Default::default()
    })
    .await;
    stack
        .mattermost
        .add_user("outsider", "outsider@example.com");
    let id = stack.teleport.create_request(with_suggested(
        "bob@example.com",
        &["alice", "outsider", "bob", "carol@example.com"],
    ));
    let post = stack.posted(&id).await;
    assert!(Stack::eventually(WAIT, || stack.data(&id).messages.len() == 4).await);
    let created = stack.teleport.request(&id).unwrap().created.unwrap();
    clock.set(created + chrono::Duration::seconds(2));
    let reminder = || {
        stack
            .mattermost
            .posts_in(&post.channel_id)
            .into_iter()
            .find(|p| p.root_id == post.id && p.message.contains("Reminder 1 of 2"))
    };
    assert!(Stack::eventually(WAIT, || reminder().is_some()).await);
    let text = reminder().unwrap().message;
    assert!(text.contains("@alice") && text.contains("@carol"), "{text}");
    assert!(
        !text.contains("@outsider") && !text.contains("@bob"),
        "{text}"
    );
    // In a direct message the reminder itself notifies its reader: no mentions there.
    let alice_dm = &dm_posts(&stack, "alice", &id)[0];
    let in_dm = || {
        stack
            .mattermost
            .posts_in(&alice_dm.channel_id)
            .into_iter()
            .find(|p| p.root_id == alice_dm.id && p.message.contains("Reminder 1 of 2"))
    };
    assert!(Stack::eventually(WAIT, || in_dm().is_some()).await);
    assert!(!in_dm().unwrap().message.contains('@'), "{:?}", in_dm());
}

#[tokio::test]
async fn with_no_approvers_only_members_of_the_channel_decide() {
    // The ops channel holds an outsider and carol; the plugin posts there too.
    let stack = Stack::start_with(ops_options(), |mm| {
        with_ops_channel(&["outsider"])(mm);
        let ops = mm.add_channel(TEAM, "ops");
        mm.add_member(&ops, "carol");
        mm.add_member(&ops, "alice");
    })
    .await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    stack.posted(&id).await;
    let ops = stack.mattermost.add_channel(TEAM, "ops");
    assert!(Stack::eventually(WAIT, || stack.data(&id).message_in(&ops).is_some()).await);
    let post = stack.data(&id).message_in(&ops).unwrap().post_id.clone();
    let refused = stack
        .mattermost
        .press(&post, "Approve", "outsider")
        .await
        .unwrap();
    assert!(ephemeral(&refused).contains("not allowed"), "{refused:?}");
    // Leaving the plugin's channel takes the right away.
    stack.mattermost.remove_member(&stack.channel_id, "carol");
    let carol = stack
        .mattermost
        .press(&post, "Approve", "carol")
        .await
        .unwrap();
    assert!(ephemeral(&carol).contains("not allowed"), "{carol:?}");
    assert!(stack.teleport.state_changes().is_empty());
    let alice = stack
        .mattermost
        .press(&post, "Approve", "alice")
        .await
        .unwrap();
    assert!(ephemeral(&alice).contains("You approved"), "{alice:?}");
    assert_eq!(stack.teleport.state_changes().len(), 1);
}

#[tokio::test]
async fn approver_channel_membership_takes_effect_without_a_restart() {
    let stack = Stack::start_with(
        StackOptions {
            approver_channels: vec![format!("{TEAM}/approvers")],
            ..Default::default()
        },
        |mm| {
            let approvers = mm.add_private_channel(TEAM, "approvers");
            mm.add_member(&approvers, &mm.bot_user_id());
            mm.add_member(&approvers, "alice");
        },
    )
    .await;
    let approvers = stack.mattermost.add_private_channel(TEAM, "approvers");
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    let post = stack.posted(&id).await;
    // carol is in the request's channel, but not in the approver channel.
    let refused = stack
        .mattermost
        .press(&post.id, "Deny", "carol")
        .await
        .unwrap();
    assert!(ephemeral(&refused).contains("not allowed"), "{refused:?}");
    stack.mattermost.add_member(&approvers, "carol");
    let carol = stack
        .mattermost
        .press(&post.id, "Deny", "carol")
        .await
        .unwrap();
    assert!(ephemeral(&carol).contains("You denied"), "{carol:?}");
    assert_eq!(
        stack.teleport.request(&id).unwrap().state,
        RequestState::Denied
    );
}

#[tokio::test]
async fn an_approver_channel_the_bot_cannot_read_refuses_presses_and_tells_the_admin() {
    let stack = Stack::start_with(
        StackOptions {
            approver_channels: vec![format!("{TEAM}/closed")],
            ..Default::default()
        },
        |mm| {
            let closed = mm.add_private_channel(TEAM, "closed");
            mm.add_member(&closed, "alice");
        },
    )
    .await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    let post = stack.posted(&id).await;
    let press = stack
        .mattermost
        .press(&post.id, "Approve", "alice")
        .await
        .unwrap();
    assert!(ephemeral(&press).contains("Could not check"), "{press:?}");
    assert!(stack.teleport.state_changes().is_empty());
    let problem = stack
        .instance
        .status()
        .borrow()
        .press_problem
        .clone()
        .unwrap_or_default();
    assert!(problem.contains("bot must be a member"), "{problem}");
}

#[tokio::test]
async fn the_answer_deadline_covers_the_lookups_and_the_claim() {
    let stack = Stack::started(StackOptions {
        answer_within: Duration::from_millis(800),
        ..Default::default()
    })
    .await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    let post = stack.posted(&id).await;
    // Teleport answers nothing while the press reads the request.
    let held = stack.teleport.hold(Rpc::GetAccessRequests);
    let answer = stack
        .mattermost
        .press(&post.id, "Approve", "alice")
        .await
        .unwrap();
    assert_eq!(
        answer.status, 200,
        "answered, not timed out by the router: {answer:?}"
    );
    assert!(
        ephemeral(&answer).contains("still being processed"),
        "{answer:?}"
    );
    assert_eq!(held.waiting(), 1, "the lookup is still in flight");
    held.release();
    let note = || {
        stack
            .mattermost
            .posts_in(&post.channel_id)
            .into_iter()
            .find(|p| p.root_id == post.id && p.message.contains("went through"))
    };
    assert!(Stack::eventually(WAIT, || note().is_some()).await);
    assert_eq!(stack.teleport.state_changes().len(), 1);
}

#[tokio::test]
async fn a_timed_out_press_never_takes_credit_for_a_decision_made_elsewhere() {
    let stack = Stack::started(StackOptions {
        answer_within: Duration::from_millis(500),
        ..Default::default()
    })
    .await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    let post = stack.posted(&id).await;
    let held = stack.teleport.hold(Rpc::SetAccessRequestState);
    let answer = stack
        .mattermost
        .press(&post.id, "Approve", "alice")
        .await
        .unwrap();
    assert!(
        ephemeral(&answer).contains("still being processed"),
        "{answer:?}"
    );
    assert!(held.wait_for(1, WAIT).await);
    // Meanwhile an admin approves it in tctl, and alice's write is lost.
    stack
        .teleport
        .resolve(&id, RequestState::Approved, "approved by the on-call admin");
    stack
        .teleport
        .fail_next(Rpc::SetAccessRequestState, 1, Code::Unavailable);
    held.release();
    let note = || {
        stack
            .mattermost
            .posts_in(&post.channel_id)
            .into_iter()
            .find(|p| p.root_id == post.id && p.message.contains("did not go through"))
    };
    assert!(
        Stack::eventually(WAIT, || note().is_some()).await,
        "{:?}",
        stack.mattermost.posts_in(&post.channel_id)
    );
    assert!(
        Stack::eventually(WAIT, || stack
            .mattermost
            .post(&post.id)
            .is_some_and(|p| p.message.contains("**Status**: ✅ APPROVED\n")))
        .await,
        "{:?}",
        stack.mattermost.post(&post.id)
    );
    assert!(
        !stack
            .mattermost
            .post(&post.id)
            .unwrap()
            .message
            .contains("by @alice")
    );
}

/// PROMOTED (a request turned into access-list membership, Teleport v15+) is final like
/// APPROVED and DENIED: the posts say so without buttons, the requester is told, reminders
/// stop, and a press is refused without a Teleport write.
#[tokio::test]
async fn a_promoted_request_is_final_everywhere() {
    let clock = Clock::manual(chrono::Utc::now());
    let stack = Stack::started(StackOptions {
        clock: clock.clone(),
        requester: RequesterSettings {
            lookup: RequesterLookup::Email,
            notify_on_post: false,
        },
        reminders: Some(ReminderSettings {
            after: Duration::from_secs(1),
            every: Duration::from_secs(3600),
            max: 3,
        }),
        ..Default::default()
    })
    .await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    let post = stack.posted(&id).await;
    // Promoted while the engine cannot yet record it: the post still shows its buttons, and
    // a press meanwhile is refused by reading Teleport, before any claim.
    let held = stack.teleport.hold(Rpc::UpdatePluginData);
    stack.teleport.resolve(
        &id,
        RequestState::Promoted,
        "promoted to the dba access list",
    );
    let press = stack
        .mattermost
        .press(&post.id, "Approve", "alice")
        .await
        .unwrap();
    assert!(ephemeral(&press).contains("already PROMOTED"), "{press:?}");
    held.release();
    assert!(
        Stack::eventually(WAIT, || stack
            .mattermost
            .post(&post.id)
            .is_some_and(
                |p| p.message.contains("**Status**: PROMOTED") && !p.has_buttons()
            ))
        .await,
        "{:?}",
        stack.mattermost.post(&post.id)
    );
    assert!(
        Stack::eventually(WAIT, || dm_posts(&stack, "bob", &id)
            .iter()
            .any(|p| p.message.contains("was PROMOTED")))
        .await
    );
    let created = stack.teleport.request(&id).unwrap().created.unwrap();
    clock.set(created + chrono::Duration::hours(5));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reminders = stack
        .mattermost
        .posts_in(&post.channel_id)
        .into_iter()
        .filter(|p| p.root_id == post.id && p.message.contains("Reminder"))
        .count();
    assert_eq!(reminders, 0);
    assert!(stack.teleport.state_changes().is_empty());
}

/// A long-term request (Teleport v18+): no Approve button anywhere, the post says why and where
/// to decide, an Approve press from an older post is refused with that reason and changes
/// nothing; Deny stays (a denial does not block a promotion, which needs a pending request).
#[tokio::test]
async fn a_long_term_request_has_no_approve_and_refuses_one_from_an_older_post() {
    use teleport_mattermost::request::RequestKind;
    let stack = Stack::started(StackOptions::default()).await;
    let id = stack.teleport.create_request(NewRequest {
        kind: RequestKind::LongTerm,
        suggested_reviewers: vec!["alice".into()],
        ..NewRequest::by("bob@example.com")
    });
    let post = stack.posted(&id).await;
    let ids: Vec<&str> = post.props["attachments"][0]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert_eq!(ids, ["deny"], "{:?}", post.props);
    assert!(
        post.message.contains("**Kind**: long-term"),
        "{}",
        post.message
    );
    assert!(Stack::eventually(WAIT, || dm_posts(&stack, "alice", &id).len() == 1).await);
    let dm = &dm_posts(&stack, "alice", &id)[0];
    let dm_ids: Vec<&str> = dm.props["attachments"][0]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert_eq!(dm_ids, ["deny"]);

    // An Approve button made before the request was known to be long-term (an older post,
    // another plugin version): the signed context is valid, the press is refused.
    let context = teleport_mattermost::review::signature::ActionContext::signed(
        &teleport_mattermost::settings::Secret::new("test-signing-secret-0123456789abcdef"),
        &teleport_mattermost::settings::InstanceId::new("test", "team-a"),
        teleport_mattermost::review::signature::Action::Approve,
        &id,
        &post.channel_id,
        chrono::Utc::now().timestamp() + 600,
    );
    let mut props = post.props.clone();
    let mut approve = props["attachments"][0]["actions"][0].clone();
    approve["id"] = "approve".into();
    approve["name"] = "Approve".into();
    approve["integration"]["context"] = context.to_json();
    props["attachments"][0]["actions"]
        .as_array_mut()
        .unwrap()
        .insert(0, approve);
    stack.mattermost.set_props(&post.id, props);
    let press = stack
        .mattermost
        .press(&post.id, "Approve", "carol")
        .await
        .unwrap();
    assert!(ephemeral(&press).contains("long-term request"), "{press:?}");
    assert!(stack.teleport.state_changes().is_empty());
    let deny = stack
        .mattermost
        .press(&post.id, "Deny", "carol")
        .await
        .unwrap();
    assert!(ephemeral(&deny).contains("You denied"), "{deny:?}");
}
