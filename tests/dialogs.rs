//! The reason dialog over the doubles: Deny (or Approve) opens a dialog through Mattermost's
//! dialog API, the submission decides with the reason, a tampered or misdirected submission
//! is refused, cancelling changes nothing, and a dialog that cannot be opened in time falls
//! back as the setting says.

use std::time::Duration;

use serde_json::{Value, json};
use teleport_mattermost::request::RequestState;
use teleport_mattermost::settings::ReasonPrompt;
use teleport_mattermost_testkit::mattermost::{
    ACTION_INTEGRATION_ERROR, DialogAnswer, OpenedDialog, Post,
};
use teleport_mattermost_testkit::stack::{Stack, StackOptions};
use teleport_mattermost_testkit::teleport::NewRequest;

fn with_reasons(deny: ReasonPrompt, approve: ReasonPrompt) -> StackOptions {
    StackOptions {
        deny_reason: deny,
        approve_reason: approve,
        ..Default::default()
    }
}

/// Presses `action` as `user` and returns the one dialog it opened.
async fn press_for_dialog(stack: &Stack, post: &Post, action: &str, user: &str) -> OpenedDialog {
    let before = stack.mattermost.dialogs_for(user).len();
    let pressed = stack
        .mattermost
        .press(&post.id, action, user)
        .await
        .unwrap();
    assert_eq!(pressed.status, 200, "{pressed:?}");
    assert_eq!(
        pressed.ephemeral_text, None,
        "a press that opens the dialog says nothing more: {pressed:?}"
    );
    let dialogs = stack.mattermost.dialogs_for(user);
    assert_eq!(dialogs.len(), before + 1, "one dialog opened for {user}");
    dialogs.last().cloned().unwrap()
}

/// A submission our callback refused with `status`: the reviewer's client sees only
/// Mattermost's generic 400, as a real server relays it.
fn refused_by_us(answer: &DialogAnswer, status: u16) {
    assert_eq!(answer.integration_status, status, "{answer:?}");
    assert_eq!(answer.status, 400, "{answer:?}");
    assert_eq!(answer.body["id"], ACTION_INTEGRATION_ERROR, "{answer:?}");
}

fn reason(text: &str) -> Value {
    json!({ "reason": text })
}

#[tokio::test]
async fn deny_asks_for_a_required_reason_and_records_it_in_teleport_and_the_post() {
    let stack = Stack::started(with_reasons(ReasonPrompt::Required, ReasonPrompt::Never)).await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    let post = stack.posted(&id).await;

    let dialog = press_for_dialog(&stack, &post, "Deny", "carol").await;
    assert_eq!(dialog.dialog["elements"][0]["optional"], json!(false));
    assert!(
        dialog.url.contains("/v1/dialogs/test/team-a"),
        "{}",
        dialog.url
    );
    assert!(
        stack.teleport.state_changes().is_empty(),
        "opening the dialog decides nothing"
    );

    // An empty reason keeps the dialog open with the field's error.
    let empty = stack
        .mattermost
        .submit_dialog(&dialog, "carol", &post.channel_id, reason("  "), None)
        .await
        .unwrap();
    assert!(!empty.closes(), "{empty:?}");
    assert_eq!(
        empty.body["errors"]["reason"],
        json!("A reason is required to deny this request.")
    );
    assert!(stack.teleport.state_changes().is_empty());

    let given = "bob is not on call this week";
    let submitted = stack
        .mattermost
        .submit_dialog(&dialog, "carol", &post.channel_id, reason(given), None)
        .await
        .unwrap();
    assert!(submitted.closes(), "{submitted:?}");
    let changes = stack.teleport.state_changes();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].state, RequestState::Denied);
    assert!(
        changes[0]
            .reason
            .starts_with("Denied by Mattermost user @carol"),
        "prefixed with who acted: {}",
        changes[0].reason
    );
    assert!(
        changes[0].reason.ends_with(&format!(": {given}")),
        "{}",
        changes[0].reason
    );
    // The pressed post shows the decision and the reason at once, without buttons.
    let shown = stack.mattermost.post(&post.id).unwrap();
    assert!(
        shown.message.contains("DENIED by @carol"),
        "{}",
        shown.message
    );
    assert!(shown.message.contains(given), "{}", shown.message);
    assert!(
        !shown.props.contains_key("attachments"),
        "buttons are gone: {:?}",
        shown.props
    );

    // Submitting the same dialog again changes nothing.
    let again = stack
        .mattermost
        .submit_dialog(&dialog, "carol", &post.channel_id, reason(given), None)
        .await
        .unwrap();
    assert!(
        again.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("already DENIED by @carol")),
        "{again:?}"
    );
    assert_eq!(stack.teleport.state_changes().len(), 1);
}

#[tokio::test]
async fn a_tampered_or_misdirected_submission_is_refused() {
    let stack = Stack::started(with_reasons(ReasonPrompt::Optional, ReasonPrompt::Never)).await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    let other = stack
        .teleport
        .create_request(NewRequest::by("dave@example.com"));
    let post = stack.posted(&id).await;
    stack.posted(&other).await;
    let dialog = press_for_dialog(&stack, &post, "Deny", "carol").await;
    let mm = &stack.mattermost;

    // The state is readable JSON in the browser: point it at another request, or turn the
    // denial into an approval.
    let mut state: Value = serde_json::from_str(&dialog.state()).unwrap();
    state["request_id"] = json!(other);
    let moved = mm
        .submit_dialog(
            &dialog,
            "carol",
            &post.channel_id,
            reason("x"),
            Some(&state.to_string()),
        )
        .await
        .unwrap();
    refused_by_us(&moved, 401);
    let mut state: Value = serde_json::from_str(&dialog.state()).unwrap();
    state["action"] = json!("approve");
    let flipped = mm
        .submit_dialog(
            &dialog,
            "carol",
            &post.channel_id,
            reason("x"),
            Some(&state.to_string()),
        )
        .await
        .unwrap();
    refused_by_us(&flipped, 401);
    let garbage = mm
        .submit_dialog(
            &dialog,
            "carol",
            &post.channel_id,
            reason("x"),
            Some("{not json"),
        )
        .await
        .unwrap();
    refused_by_us(&garbage, 400);

    // Carol's dialog, submitted by alice (the server sets user_id from alice's session).
    let stolen = mm
        .submit_dialog(&dialog, "alice", &post.channel_id, reason("x"), None)
        .await
        .unwrap();
    refused_by_us(&stolen, 401);
    assert!(
        stolen.integration_body["error"]
            .as_str()
            .unwrap()
            .contains("another user")
    );
    // From another channel than the pressed post's.
    let elsewhere = mm
        .submit_dialog(&dialog, "carol", "some-other-channel", reason("x"), None)
        .await
        .unwrap();
    refused_by_us(&elsewhere, 401);

    assert!(
        stack.teleport.state_changes().is_empty(),
        "nothing reached Teleport: {:?}",
        stack.teleport.state_changes()
    );
    assert_eq!(
        stack.teleport.request(&id).unwrap().state,
        RequestState::Pending
    );
    assert_eq!(
        stack.teleport.request(&other).unwrap().state,
        RequestState::Pending
    );
}

#[tokio::test]
async fn cancelling_changes_nothing_and_the_buttons_still_work() {
    let stack = Stack::started(with_reasons(ReasonPrompt::Required, ReasonPrompt::Never)).await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    let post = stack.posted(&id).await;
    let dialog = press_for_dialog(&stack, &post, "Deny", "carol").await;
    let cancelled = stack
        .mattermost
        .cancel_dialog(&dialog, "carol", &post.channel_id)
        .await
        .unwrap();
    assert!(cancelled.closes(), "{cancelled:?}");
    assert!(stack.teleport.state_changes().is_empty());
    assert_eq!(
        stack.teleport.request(&id).unwrap().state,
        RequestState::Pending
    );

    // Approve asks for nothing here and acts at once.
    let approved = stack
        .mattermost
        .press(&post.id, "Approve", "alice")
        .await
        .unwrap();
    assert!(
        approved
            .ephemeral_text
            .as_deref()
            .is_some_and(|t| t.contains("You approved")),
        "{approved:?}"
    );
    assert_eq!(stack.mattermost.dialogs_for("alice").len(), 0);
}

#[tokio::test]
async fn every_press_check_is_made_again_on_submission() {
    let options = StackOptions {
        approvers: vec!["carol".into(), "bob".into()],
        ..with_reasons(ReasonPrompt::Optional, ReasonPrompt::Optional)
    };
    let stack = Stack::started(options).await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    let post = stack.posted(&id).await;

    // Not an approver: refused at the press, no dialog.
    let refused = stack
        .mattermost
        .press(&post.id, "Deny", "alice")
        .await
        .unwrap();
    assert!(
        refused
            .ephemeral_text
            .as_deref()
            .is_some_and(|t| t.contains("not allowed")),
        "{refused:?}"
    );
    assert!(stack.mattermost.dialogs_for("alice").is_empty());

    // The requester gets the dialog (Teleport is not asked before it opens) but the
    // submission is refused, with the dialog kept open to say why.
    let own = press_for_dialog(&stack, &post, "Approve", "bob").await;
    let answer = stack
        .mattermost
        .submit_dialog(&own, "bob", &post.channel_id, reason("trust me"), None)
        .await
        .unwrap();
    assert!(
        answer.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("your own access request")),
        "{answer:?}"
    );

    // An optional reason may be left out: the Teleport reason is then just who acted.
    let dialog = press_for_dialog(&stack, &post, "Approve", "carol").await;
    assert_eq!(dialog.dialog["elements"][0]["optional"], json!(true));
    let approved = stack
        .mattermost
        .submit_dialog(&dialog, "carol", &post.channel_id, json!({}), None)
        .await
        .unwrap();
    assert!(approved.closes(), "{approved:?}");
    let changes = stack.teleport.state_changes();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].state, RequestState::Approved);
    assert!(!changes[0].reason.contains(": "), "{}", changes[0].reason);
}

#[tokio::test]
async fn a_dialog_that_cannot_open_in_time_falls_back_as_configured() {
    // Required: nothing is decided without the reason. Mattermost 6.7.2 accepts a trigger
    // for 3 seconds.
    let stack = Stack::start_with(
        with_reasons(ReasonPrompt::Required, ReasonPrompt::Optional),
        |mm| mm.set_version("6.7.2"),
    )
    .await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    let post = stack.posted(&id).await;
    // The press reaches us after Mattermost's 3-second trigger window.
    stack.mattermost.age_triggers(Duration::from_secs(4));
    let late = stack
        .mattermost
        .press(&post.id, "Deny", "carol")
        .await
        .unwrap();
    let text = late.ephemeral_text.clone().unwrap_or_default();
    assert!(
        text.contains("could not be opened") && text.contains("nothing was changed"),
        "{late:?}"
    );
    assert!(stack.mattermost.dialogs_for("carol").is_empty());
    assert!(stack.teleport.state_changes().is_empty());

    // Optional: the decision goes through without a reason, and the reviewer is told.
    let approved = stack
        .mattermost
        .press(&post.id, "Approve", "carol")
        .await
        .unwrap();
    let text = approved.ephemeral_text.clone().unwrap_or_default();
    assert!(
        text.contains("You approved") && text.contains("no reason was recorded"),
        "{approved:?}"
    );
    assert_eq!(stack.teleport.state_changes().len(), 1);
    assert_eq!(
        stack.teleport.request(&id).unwrap().state,
        RequestState::Approved
    );
}

/// How long a press took to be answered, and what it was answered.
async fn timed_press(
    stack: &Stack,
    post: &Post,
    action: &str,
    user: &str,
) -> (Duration, Option<String>) {
    let started = std::time::Instant::now();
    let pressed = stack
        .mattermost
        .press(&post.id, action, user)
        .await
        .unwrap();
    assert_eq!(pressed.status, 200, "{pressed:?}");
    (started.elapsed(), pressed.ephemeral_text)
}

#[tokio::test]
async fn the_dialog_waits_as_long_as_the_servers_trigger_lives() {
    // A current server (11.4) accepts a trigger for OutgoingIntegrationRequestsTimeout,
    // 30 s by default: a trigger 4 s old still opens the dialog...
    let stack = Stack::started(with_reasons(ReasonPrompt::Required, ReasonPrompt::Never)).await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    let post = stack.posted(&id).await;
    stack.mattermost.age_triggers(Duration::from_secs(4));
    press_for_dialog(&stack, &post, "Deny", "carol").await;
    // ...and so does one that Mattermost is slow (4 s) to take, where 3 s used to be given up.
    stack.mattermost.age_triggers(Duration::ZERO);
    stack.mattermost.delay_calls(
        "POST",
        "/api/v4/actions/dialogs/open",
        1,
        Duration::from_secs(4),
    );
    let (took, said) = timed_press(&stack, &post, "Deny", "carol").await;
    assert_eq!(said, None, "the dialog opened: {said:?}");
    assert!(took >= Duration::from_secs(4), "{took:?}");
    assert_eq!(stack.mattermost.dialogs_for("carol").len(), 2);
    // A trigger older than the server's lifetime is refused by it, and the press falls back.
    stack.mattermost.age_triggers(Duration::from_secs(31));
    let (_, said) = timed_press(&stack, &post, "Deny", "carol").await;
    let said = said.unwrap_or_default();
    assert!(
        said.contains("could not be opened") && said.contains("expired"),
        "{said}"
    );
    assert!(stack.teleport.state_changes().is_empty());
}

#[tokio::test]
async fn on_an_old_server_the_plugin_gives_up_when_its_3_second_trigger_dies() {
    let stack = Stack::start_with(
        with_reasons(ReasonPrompt::Required, ReasonPrompt::Never),
        |mm| mm.set_version("6.7.2"),
    )
    .await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    let post = stack.posted(&id).await;
    stack.mattermost.delay_calls(
        "POST",
        "/api/v4/actions/dialogs/open",
        1,
        Duration::from_secs(6),
    );
    let (took, said) = timed_press(&stack, &post, "Deny", "carol").await;
    let said = said.unwrap_or_default();
    assert!(said.contains("within the 3s its trigger lives"), "{said}");
    assert!(
        took < Duration::from_secs(5),
        "gave up at the trigger's end: {took:?}"
    );
    assert!(stack.teleport.state_changes().is_empty());
}

#[tokio::test]
async fn a_submission_from_a_direct_message_without_a_team_decides() {
    // From 11.10 Mattermost sets a submission's team from the channel: none in a DM.
    let options = StackOptions {
        recipients: vec!["carol@example.com".into()],
        ..with_reasons(ReasonPrompt::Required, ReasonPrompt::Never)
    };
    let stack = Stack::start_with(options, |mm| mm.set_version("11.10.0")).await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    assert!(
        Stack::eventually(Duration::from_secs(20), || stack.data(&id).messages.len()
            == 2)
        .await
    );
    let dm = stack.mattermost.dm_channel_id("teleport-bot", "carol");
    let dm_post = stack
        .mattermost
        .posts_in(&dm)
        .into_iter()
        .find(|p| p.root_id.is_empty())
        .expect("carol's direct message");
    let dialog = press_for_dialog(&stack, &dm_post, "Deny", "carol").await;
    let answer = stack
        .mattermost
        .submit_dialog(&dialog, "carol", &dm, reason("not during the freeze"), None)
        .await
        .unwrap();
    assert!(answer.closes(), "{answer:?}");
    let changes = stack.teleport.state_changes();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].state, RequestState::Denied);
    assert!(
        changes[0].reason.ends_with(": not during the freeze"),
        "{}",
        changes[0].reason
    );
}

#[tokio::test]
async fn only_a_dialog_submission_decides() {
    let stack = Stack::started(with_reasons(ReasonPrompt::Required, ReasonPrompt::Never)).await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    let post = stack.posted(&id).await;
    let dialog = press_for_dialog(&stack, &post, "Deny", "carol").await;
    let carol = stack.mattermost.user_id("carol").unwrap();
    let send = |kind: &'static str| {
        let body = json!({
            "type": kind, "callback_id": dialog.callback_id(), "state": dialog.state(),
            "user_id": carol, "channel_id": post.channel_id, "team_id": "",
            "submission": reason("because"), "cancelled": false,
        });
        let url = dialog.url.clone();
        async move {
            reqwest::Client::new()
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    // A field refresh (Mattermost 10.x and later) is no submission.
    let refresh = send("refresh").await;
    assert_eq!(refresh.status(), 400);
    assert!(
        refresh
            .text()
            .await
            .unwrap()
            .contains("not a dialog submission")
    );
    assert!(stack.teleport.state_changes().is_empty());
    // The real thing decides.
    let submitted = send("dialog_submission").await;
    assert_eq!(submitted.status(), 200);
    assert_eq!(stack.teleport.state_changes().len(), 1);
}
