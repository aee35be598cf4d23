//! Button presses under races, slow links and hostile spellings: one press decides, the
//! others are told who does, a press that outlives its HTTP answer still completes and says
//! how it ended, and the posts always show Teleport's final state. The real engine and
//! callback server over the doubles, with the Teleport double holding calls where the test
//! needs an overlap.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use teleport_mattermost::request::RequestState;
use teleport_mattermost_testkit::mattermost::Post;
use teleport_mattermost_testkit::stack::{Stack, StackOptions};
use teleport_mattermost_testkit::teleport::{NewRequest, Rpc};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(20);

/// Waits until every post of the request shows `text` (the engine's edit).
async fn posts_show(stack: &Stack, id: &str, text: &str) -> String {
    let shows = || {
        stack.data(id).messages.iter().all(|m| {
            stack
                .mattermost
                .post(&m.post_id)
                .is_some_and(|p| p.message.contains(text))
        })
    };
    let ok = Stack::eventually(WAIT, shows).await;
    let post = stack.root_posts_for(id).remove(0).message;
    assert!(ok, "the posts never showed {text:?}: {post}");
    post
}

/// Replies in the thread of `post` that are not review replies.
fn thread_notes(stack: &Stack, post: &Post) -> Vec<String> {
    stack
        .mattermost
        .posts_in(&post.channel_id)
        .into_iter()
        .filter(|p| p.root_id == post.id && p.props.get("teleport_review_index").is_none())
        .map(|p| p.message)
        .collect()
}

fn ephemeral(outcome: &teleport_mattermost_testkit::mattermost::PressOutcome) -> String {
    outcome.ephemeral_text.clone().unwrap_or_default()
}

#[tokio::test]
async fn concurrent_approve_and_deny_decide_once_and_the_loser_is_told_who_decides() {
    let stack = Stack::started(StackOptions::default()).await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    let post = stack.posted(&id).await;

    let held = stack.teleport.hold(Rpc::SetAccessRequestState);
    let (alice, carol) = tokio::join!(
        stack.mattermost.press(&post.id, "Approve", "alice"),
        async {
            // Carol presses while Alice's state change is in flight.
            assert!(
                held.wait_for(1, WAIT).await,
                "alice's press reached Teleport"
            );
            let carol = stack.mattermost.press(&post.id, "Deny", "carol").await;
            held.release();
            carol
        }
    );
    let (alice, carol) = (alice.unwrap(), carol.unwrap());
    assert!(ephemeral(&alice).contains("You approved"), "{alice:?}");
    assert!(
        ephemeral(&carol).contains("@alice is already deciding"),
        "{carol:?}"
    );
    let changes = stack.teleport.state_changes();
    assert_eq!(changes.len(), 1, "one Teleport write: {changes:?}");
    assert_eq!(changes[0].state, RequestState::Approved);
    assert_eq!(
        stack.teleport.request(&id).unwrap().state,
        RequestState::Approved
    );
    let text = posts_show(&stack, &id, "APPROVED by @alice").await;
    assert!(!text.contains("carol"), "{text}");
    let data = stack.data(&id);
    assert_eq!(
        data.claim, None,
        "the claim is gone once the decision is recorded"
    );
    assert_eq!(data.resolved_by, "@alice");
}

#[tokio::test]
async fn a_double_click_writes_once() {
    let stack = Stack::started(StackOptions::default()).await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    let post = stack.posted(&id).await;
    let held = stack.teleport.hold(Rpc::SetAccessRequestState);
    let (first, second) = tokio::join!(
        stack.mattermost.press(&post.id, "Approve", "alice"),
        async {
            assert!(held.wait_for(1, WAIT).await);
            let again = stack.mattermost.press(&post.id, "Approve", "alice").await;
            held.release();
            again
        }
    );
    assert!(ephemeral(&first.unwrap()).contains("You approved"));
    assert!(
        ephemeral(&second.unwrap()).contains("already being processed"),
        "the second click is told the first is under way"
    );
    assert_eq!(stack.teleport.state_changes().len(), 1);
}

#[tokio::test]
async fn a_press_that_outlives_its_answer_completes_and_says_so_in_the_thread() {
    let stack = Stack::started(StackOptions {
        answer_within: Duration::from_millis(300),
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
    assert_eq!(answer.status, 200);
    assert!(
        ephemeral(&answer).contains("still being processed"),
        "{answer:?}"
    );
    assert!(
        held.waiting() == 1,
        "the state change is in flight, not cancelled"
    );
    let claim = stack
        .data(&id)
        .claim
        .expect("alice holds the claim meanwhile");
    assert_eq!(claim.by, "@alice");
    // Nobody else can act meanwhile.
    let carol = stack
        .mattermost
        .press(&post.id, "Deny", "carol")
        .await
        .unwrap();
    assert!(ephemeral(&carol).contains("@alice is already deciding"));

    held.release();
    assert!(
        Stack::eventually(WAIT, || thread_notes(&stack, &post)
            .iter()
            .any(|t| t.contains("@alice's approval") && t.contains("went through")))
        .await,
        "the thread says the late press went through: {:?}",
        thread_notes(&stack, &post)
    );
    assert_eq!(
        stack.teleport.request(&id).unwrap().state,
        RequestState::Approved
    );
    assert_eq!(stack.teleport.state_changes().len(), 1);
    posts_show(&stack, &id, "APPROVED by @alice").await;
    assert_eq!(stack.data(&id).claim, None);
}

#[tokio::test]
async fn a_press_that_fails_late_releases_its_claim_and_names_nobody() {
    let stack = Stack::started(StackOptions {
        answer_within: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    let post = stack.posted(&id).await;
    let held = stack.teleport.hold(Rpc::SetAccessRequestState);
    stack
        .teleport
        .fail_next(Rpc::SetAccessRequestState, 1, Code::Unavailable);
    let answer = stack
        .mattermost
        .press(&post.id, "Approve", "alice")
        .await
        .unwrap();
    assert!(ephemeral(&answer).contains("still being processed"));
    held.release();
    assert!(
        Stack::eventually(WAIT, || thread_notes(&stack, &post).iter().any(|t| t
            .contains("@alice, your approval")
            && t.contains("did not go through")))
        .await,
        "{:?}",
        thread_notes(&stack, &post)
    );
    let data = stack.data(&id);
    assert_eq!(data.claim, None, "the claim is released on failure");
    assert_eq!(data.resolved_by, "", "nobody is recorded as having acted");
    assert_eq!(
        stack.teleport.request(&id).unwrap().state,
        RequestState::Pending
    );

    // The next reviewer's press works and is the one named.
    let carol = stack
        .mattermost
        .press(&post.id, "Approve", "carol")
        .await
        .unwrap();
    assert!(ephemeral(&carol).contains("You approved"), "{carol:?}");
    let text = posts_show(&stack, &id, "APPROVED by @carol").await;
    assert!(!text.contains("alice"), "{text}");
}

#[tokio::test]
async fn a_claim_left_by_a_crashed_replica_expires_but_a_live_one_blocks() {
    let stack = Stack::started(StackOptions::default()).await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    let post = stack.posted(&id).await;
    let with_claim = |at_ms: i64| {
        let mut data = stack.teleport.plugin_data(&id).unwrap();
        data.insert("mm_claim".into(), format!("DENIED|@zed|{at_ms}"));
        stack.teleport.set_plugin_data(&id, data);
    };
    let now = chrono::Utc::now().timestamp_millis();
    with_claim(now); // another replica is deciding right now
    let blocked = stack
        .mattermost
        .press(&post.id, "Approve", "alice")
        .await
        .unwrap();
    assert!(
        ephemeral(&blocked).contains("@zed is already deciding"),
        "{blocked:?}"
    );
    assert!(stack.teleport.state_changes().is_empty());

    with_claim(now - 3 * 60 * 1000); // that replica died three minutes ago
    let pressed = stack
        .mattermost
        .press(&post.id, "Approve", "alice")
        .await
        .unwrap();
    assert!(ephemeral(&pressed).contains("You approved"), "{pressed:?}");
    posts_show(&stack, &id, "APPROVED by @alice").await;
}

#[tokio::test]
async fn a_revocation_in_teleport_edits_the_posts_and_does_not_name_the_approver() {
    let stack = Stack::started(StackOptions::default()).await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    let post = stack.posted(&id).await;
    let pressed = stack
        .mattermost
        .press(&post.id, "Approve", "alice")
        .await
        .unwrap();
    assert!(ephemeral(&pressed).contains("You approved"));
    posts_show(&stack, &id, "APPROVED by @alice").await;

    stack.teleport.resolve(
        &id,
        RequestState::Denied,
        "access revoked by the security team",
    );
    let text = posts_show(&stack, &id, "DENIED").await;
    assert!(
        !text.contains("@alice"),
        "the revocation is not alice's: {text}"
    );
    assert!(
        text.contains("access revoked by the security team"),
        "{text}"
    );
}

#[tokio::test]
async fn self_approval_is_refused_in_every_spelling() {
    let stack = Stack::started(StackOptions {
        approvers: vec!["frank".into(), "dave".into()],
        ..Default::default()
    })
    .await;
    stack.mattermost.add_user("frank", "frank@exämple.com");
    stack.mattermost.add_user("dave", ""); // email hidden from the bot
    for requester in ["FRANK@EXÄMPLE.COM", "frank@exa\u{308}mple.com"] {
        let id = stack.teleport.create_request(NewRequest::by(requester));
        let post = stack.posted(&id).await;
        let outcome = stack
            .mattermost
            .press(&post.id, "Approve", "frank")
            .await
            .unwrap();
        assert!(
            ephemeral(&outcome).contains("your own"),
            "{requester}: {outcome:?}"
        );
    }
    let id = stack
        .teleport
        .create_request(NewRequest::by("dave@example.com"));
    let post = stack.posted(&id).await;
    let outcome = stack
        .mattermost
        .press(&post.id, "Approve", "dave")
        .await
        .unwrap();
    assert!(
        ephemeral(&outcome).contains("your own"),
        "username = the local part of the requester's email: {outcome:?}"
    );
    assert!(stack.teleport.state_changes().is_empty());
}

#[tokio::test]
async fn a_channel_members_hidden_email_is_refused_and_the_status_says_why() {
    // The default policy: members of the channel may decide. A member whose email the bot
    // cannot see cannot be told apart from a requester known to Teleport by email.
    let stack = Stack::started(StackOptions::default()).await;
    stack.mattermost.add_user("david", "");
    stack.mattermost.add_member(&stack.channel_id, "david");
    let id = stack
        .teleport
        .create_request(NewRequest::by("dave@example.com"));
    let post = stack.posted(&id).await;
    let outcome = stack
        .mattermost
        .press(&post.id, "Approve", "david")
        .await
        .unwrap();
    assert!(
        ephemeral(&outcome).contains("email address is hidden"),
        "{outcome:?}"
    );
    assert!(stack.teleport.state_changes().is_empty());
    let status = stack.instance.status().borrow().clone();
    let problem = status.press_problem.unwrap_or_default();
    assert!(problem.contains("ShowEmailAddress"), "{problem}");
}

#[tokio::test]
async fn a_failed_state_change_tells_the_clicker_the_gist_and_the_admin_the_detail() {
    let stack = Stack::started(StackOptions::default()).await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    let post = stack.posted(&id).await;
    stack
        .teleport
        .fail_next(Rpc::SetAccessRequestState, 1, Code::PermissionDenied);
    let outcome = stack
        .mattermost
        .press(&post.id, "Approve", "alice")
        .await
        .unwrap();
    let text = ephemeral(&outcome);
    assert!(
        text.contains("Teleport did not accept the change"),
        "{text}"
    );
    for internal in [
        "PermissionDenied",
        "SetAccessRequestState",
        "role",
        "injected",
    ] {
        assert!(
            !text.contains(internal),
            "the clicker sees {internal:?}: {text}"
        );
    }
    let problem = stack
        .instance
        .status()
        .borrow()
        .press_problem
        .clone()
        .unwrap_or_default();
    assert!(
        problem.contains("PermissionDenied"),
        "the status has the detail: {problem}"
    );
    assert_eq!(stack.data(&id).claim, None);
}

/// N presses from M users, in random order, mixing Approve and Deny, with random delays and a
/// slow Teleport: exactly one state change, and the posts show exactly Teleport's final state
/// and the presser who produced it.
#[tokio::test]
async fn many_presses_from_many_users_give_one_write_and_posts_that_match_teleport() {
    let stack = Stack::started(StackOptions {
        recipients: vec!["carol@example.com".into()],
        ..Default::default()
    })
    .await;
    let users = ["alice", "carol", "mallory"];
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261201);
    for round in 0..6 {
        let id = stack
            .teleport
            .create_request(NewRequest::by("bob@example.com"));
        assert!(Stack::eventually(WAIT, || stack.data(&id).messages.len() == 2).await);
        let posts: Vec<String> = stack
            .data(&id)
            .messages
            .iter()
            .map(|m| m.post_id.clone())
            .collect();
        let presses: Vec<(String, &str, &str, u64)> = (0..12)
            .map(|_| {
                (
                    posts[rng.random_range(0..posts.len())].clone(),
                    if rng.random_bool(0.5) {
                        "Approve"
                    } else {
                        "Deny"
                    },
                    users[rng.random_range(0..users.len())],
                    rng.random_range(0..40),
                )
            })
            .collect();
        // Every third round, Teleport is slow so that presses pile up behind the first.
        let held = (round % 3 == 0).then(|| stack.teleport.hold(Rpc::SetAccessRequestState));
        let release = async {
            if let Some(h) = &held {
                h.wait_for(1, WAIT).await;
                tokio::time::sleep(Duration::from_millis(30)).await;
                h.release();
            }
        };
        let mattermost = &stack.mattermost;
        let all = futures::future::join_all(presses.iter().map(
            |(post, action, user, delay)| async move {
                tokio::time::sleep(Duration::from_millis(*delay)).await;
                // Mattermost refuses a press on a post whose buttons are gone (the winner's
                // update removed them): that press never reaches the plugin.
                mattermost.press(post, action, user).await.ok()
            },
        ));
        let (outcomes, ()) = tokio::join!(all, release);
        let changes: Vec<_> = stack
            .teleport
            .state_changes()
            .into_iter()
            .filter(|c| c.id == id)
            .collect();
        assert_eq!(changes.len(), 1, "round {round}: {changes:?}");
        let winners = outcomes
            .iter()
            .flatten()
            .filter(|o| ephemeral(o).starts_with("You "))
            .count();
        assert_eq!(
            winners, 1,
            "round {round}: exactly one clicker is told they acted"
        );
        let state = stack.teleport.request(&id).unwrap().state;
        let who = changes[0].delegator.trim_start_matches("mattermost:");
        let who = who.split('@').next().unwrap();
        posts_show(&stack, &id, &format!("{} by @{who}", state.as_str())).await;
    }
}
