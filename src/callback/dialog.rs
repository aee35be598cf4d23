//! The reason dialog: what a press opens when Deny (or Approve) asks for a reason, and what
//! its submission must show before it counts.
//!
//! Mattermost gives a press a `trigger_id` that it accepts only for a while
//! ([`trigger_lifetime`]: 3 seconds on old servers, 30 on current ones), so the dialog is
//! opened before anything slow (Teleport is not asked until the reviewer submits). The
//! submission comes back through the reviewer's browser: its `state` is signed
//! ([`DialogState`]) and bound to the reviewer, and every check a press makes is made again
//! when it arrives.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::mattermost::ServerVersion;
use crate::review::signature::{Action, DialogState};
use crate::settings::ReasonPrompt;

/// The trigger lifetime of servers before [`CONFIGURABLE_TRIGGER_SINCE`]:
/// `model.InteractiveDialogTriggerTimeoutMilliseconds` (3000), checked by
/// `DecodeAndVerifyTriggerId` in `model/integration_action.go` (6.7.2).
pub const FIXED_TRIGGER_LIFETIME: Duration = Duration::from_secs(3);
/// The trigger lifetime of current servers: `ServiceSettings.OutgoingIntegrationRequestsTimeout`
/// at its default, `model.OutgoingIntegrationRequestsDefaultTimeout` (30 s,
/// `server/public/model/config.go`).
pub const CONFIGURABLE_TRIGGER_LIFETIME: Duration = Duration::from_secs(30);
/// The first version whose trigger lifetime follows `OutgoingIntegrationRequestsTimeout`
/// (CONTRACTS.md §7; the setting came with Mattermost PR #23805, MM-53269). If it came a few
/// releases earlier, servers in between are only given less time than they allow.
pub const CONFIGURABLE_TRIGGER_SINCE: ServerVersion = ServerVersion::new(9, 5, 0);

/// How long a server of `version` accepts a press's `trigger_id`, from when it made it.
///
/// From 9.5, `OpenInteractiveDialog` (`server/channels/app/integration_action.go`) checks the
/// trigger against `ServiceSettings.OutgoingIntegrationRequestsTimeout`, the same setting that
/// bounds how long the server waits for the press's answer. A bot cannot read the server's
/// config, only its version (the client config's `Version`), so the setting's default is
/// assumed: an admin who lowered it makes the server refuse a late trigger at once (a 400,
/// not a wait), and one who raised it is bounded by the press's own deadline anyway.
/// Before 9.5, and for a server that does not say its version, 3 seconds.
pub fn trigger_lifetime(version: Option<ServerVersion>) -> Duration {
    match version {
        Some(v) if v >= CONFIGURABLE_TRIGGER_SINCE => CONFIGURABLE_TRIGGER_LIFETIME,
        _ => FIXED_TRIGGER_LIFETIME,
    }
}

/// How long opening the dialog may take, `elapsed` after the press arrived: what is left of
/// the trigger's lifetime and of the press's deadline (`answer_within`), whichever ends first.
/// Zero when either is spent.
pub fn open_within(lifetime: Duration, answer_within: Duration, elapsed: Duration) -> Duration {
    lifetime.min(answer_within).saturating_sub(elapsed)
}
/// How long an opened dialog can be submitted: time to type a reason, not to come back
/// tomorrow to a request whose circumstances changed.
pub const DIALOG_LIFETIME_SECS: i64 = 15 * 60;
/// The longest reason accepted; Mattermost's dialog textarea holds at most 3000 characters.
pub const MAX_REASON_CHARS: usize = 3000;
/// The submission field holding the reason.
pub const REASON_FIELD: &str = "reason";
/// Marks our dialogs in `callback_id`.
pub const CALLBACK_ID: &str = "teleport-mattermost-reason";

/// The `dialog` object for `POST /api/v4/actions/dialogs/open`.
pub fn reason_dialog(action: Action, request_id: &str, prompt: ReasonPrompt, state: &str) -> Value {
    let (title, submit, question) = match action {
        Action::Approve => ("Approve access request", "Approve", "Why is it approved?"),
        Action::Deny => ("Deny access request", "Deny", "Why is it denied?"),
    };
    let required = prompt == ReasonPrompt::Required;
    json!({
        "callback_id": CALLBACK_ID,
        "title": title,
        "introduction_text": format!(
            "Request `{}`. The reason is recorded in Teleport with your decision and shown in the channel.",
            request_id.replace('`', "'")
        ),
        "elements": [{
            "display_name": "Reason",
            "name": REASON_FIELD,
            "type": "textarea",
            "optional": !required,
            "max_length": MAX_REASON_CHARS,
            "placeholder": question,
            "help_text": if required { "Required." } else { "Optional." },
        }],
        "submit_label": submit,
        "notify_on_cancel": false,
        "state": state,
    })
}

/// What Mattermost POSTs to the dialog's `url` (`model.SubmitDialogRequest`). Only `user_id`
/// is set by the server (and, from 11.10, `team_id`); everything else came from the
/// reviewer's client.
#[derive(Debug, Deserialize)]
pub struct Submission {
    /// [`SUBMISSION_TYPE`]: the server sets it (`SubmitInteractiveDialog` in
    /// `server/channels/app/integration_action.go`), except for a field `refresh`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Our [`CALLBACK_ID`], as the client echoes it.
    #[serde(default)]
    pub callback_id: String,
    /// The signed [`DialogState`], as the client echoes it.
    #[serde(default)]
    pub state: String,
    /// The submitting user, set by the server from the session.
    pub user_id: String,
    /// The channel the client says it submits from; the server checked the user can read it.
    #[serde(default)]
    pub channel_id: String,
    /// The team: the client's current team before 11.10, the channel's from 11.10, so empty
    /// in a direct message. Never used: the signed state binds the channel.
    #[serde(default)]
    pub team_id: String,
    /// Field name to value.
    #[serde(default)]
    pub submission: Option<Map<String, Value>>,
    /// The reviewer closed the dialog (sent only with `notify_on_cancel`).
    #[serde(default)]
    pub cancelled: bool,
}

/// The `type` of a dialog submission.
pub const SUBMISSION_TYPE: &str = "dialog_submission";

/// Whether a submission's `type` is a submission: `dialog_submission`, or none at all (a
/// server that did not set it). A `refresh` (a field asking for the form again, 10.x and
/// later) or anything else is not: our dialog has no such field, and no decision may come
/// from one.
pub fn is_submission(kind: &str) -> bool {
    kind.is_empty() || kind == SUBMISSION_TYPE
}

/// Why a submission is not accepted before anything is looked up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// The state is not one of ours.
    #[error("the dialog state is not one this plugin made")]
    NotOurs,
    /// Submitted by someone other than who the dialog was opened for.
    #[error("this dialog was opened for another user")]
    OtherUser,
    /// Submitted from another channel than the pressed post's.
    #[error("this dialog belongs to another channel")]
    OtherChannel,
}

/// The checks on a submission whose state verified: the submitter is the one the dialog was
/// opened for, in the channel it was opened in.
pub fn check_binding(state: &DialogState, submission: &Submission) -> Result<(), Rejected> {
    if state.user_id != submission.user_id {
        return Err(Rejected::OtherUser);
    }
    if state.channel_id != submission.channel_id {
        return Err(Rejected::OtherChannel);
    }
    Ok(())
}

/// The reason given, trimmed, or the message to show under the field.
pub fn reason(
    submission: Option<&Map<String, Value>>,
    prompt: ReasonPrompt,
    action: Action,
) -> Result<String, String> {
    let given = match submission.and_then(|s| s.get(REASON_FIELD)) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.trim().to_string(),
        Some(_) => return Err("The reason must be text.".into()),
    };
    let chars = given.chars().count();
    if chars > MAX_REASON_CHARS {
        return Err(format!(
            "The reason is {chars} characters long; keep it to {MAX_REASON_CHARS}."
        ));
    }
    if given.is_empty() && prompt == ReasonPrompt::Required {
        return Err(format!(
            "A reason is required to {} this request.",
            action.as_str()
        ));
    }
    Ok(given)
}

/// The answer that closes the dialog, or keeps it open showing `error`.
pub fn answer(error: Option<&str>) -> Value {
    match error {
        None => json!({}),
        Some(e) => json!({ "error": e }),
    }
}

/// The answer that keeps the dialog open with `message` under the reason field.
pub fn field_error(message: &str) -> Value {
    json!({ "errors": { REASON_FIELD: message } })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(reason: Value) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert(REASON_FIELD.into(), reason);
        m
    }

    #[test]
    fn a_required_reason_must_be_given() {
        for empty in [json!(""), json!("   \n"), Value::Null] {
            assert_eq!(
                reason(Some(&fields(empty)), ReasonPrompt::Required, Action::Deny),
                Err("A reason is required to deny this request.".into())
            );
        }
        assert!(reason(None, ReasonPrompt::Required, Action::Deny).is_err());
        assert_eq!(
            reason(None, ReasonPrompt::Optional, Action::Approve),
            Ok(String::new())
        );
        assert_eq!(
            reason(
                Some(&fields(json!("  on call  "))),
                ReasonPrompt::Required,
                Action::Deny
            ),
            Ok("on call".into())
        );
    }

    #[test]
    fn an_overlong_or_non_text_reason_is_refused() {
        let long = "é".repeat(MAX_REASON_CHARS + 1);
        assert!(
            reason(
                Some(&fields(json!(long))),
                ReasonPrompt::Optional,
                Action::Deny
            )
            .unwrap_err()
            .contains("3001 characters")
        );
        let fits = "é".repeat(MAX_REASON_CHARS);
        assert_eq!(
            reason(
                Some(&fields(json!(fits))),
                ReasonPrompt::Optional,
                Action::Deny
            ),
            Ok(fits)
        );
        assert!(
            reason(
                Some(&fields(json!(42))),
                ReasonPrompt::Optional,
                Action::Deny
            )
            .is_err()
        );
    }

    #[test]
    fn the_dialog_says_whether_the_reason_is_required() {
        let d = reason_dialog(Action::Deny, "req-1", ReasonPrompt::Required, "STATE");
        assert_eq!(d["elements"][0]["optional"], json!(false));
        assert_eq!(d["state"], json!("STATE"));
        assert_eq!(d["submit_label"], json!("Deny"));
        // Mattermost cuts titles longer than 24 characters.
        assert!(d["title"].as_str().unwrap().len() <= 24);
        let a = reason_dialog(Action::Approve, "req-1", ReasonPrompt::Optional, "S");
        assert_eq!(a["elements"][0]["optional"], json!(true));
        assert!(a["title"].as_str().unwrap().len() <= 24);
    }

    fn submission(user: &str, channel: &str) -> Submission {
        serde_json::from_value(json!({
            "type": "dialog_submission", "callback_id": CALLBACK_ID, "state": "",
            "user_id": user, "channel_id": channel, "submission": {}, "cancelled": false
        }))
        .unwrap()
    }

    #[test]
    fn the_trigger_lifetime_follows_the_servers_version() {
        assert_eq!(trigger_lifetime(None), Duration::from_secs(3));
        assert_eq!(
            trigger_lifetime(Some(ServerVersion::new(6, 7, 2))),
            Duration::from_secs(3)
        );
        assert_eq!(
            trigger_lifetime(Some(ServerVersion::new(9, 4, 3))),
            Duration::from_secs(3)
        );
        assert_eq!(
            trigger_lifetime(Some(ServerVersion::new(9, 5, 0))),
            Duration::from_secs(30)
        );
        assert_eq!(
            trigger_lifetime(Some(ServerVersion::new(11, 4, 0))),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn opening_never_outlasts_the_trigger_or_the_press_deadline() {
        let s = Duration::from_secs;
        // A current server, the default 15 s deadline: the deadline ends first.
        assert_eq!(open_within(s(30), s(15), s(1)), s(14));
        // An old server: the trigger ends first.
        assert_eq!(open_within(s(3), s(15), s(1)), s(2));
        // Spent.
        assert_eq!(open_within(s(3), s(15), s(4)), s(0));
    }

    #[test]
    fn only_a_submission_counts_as_one() {
        assert!(is_submission("dialog_submission"));
        assert!(is_submission(""));
        assert!(!is_submission("refresh"));
        assert!(!is_submission("dialog_lookup"));
        // A direct message's submission from 11.10 carries no team.
        let s: Submission = serde_json::from_value(json!({
            "type": "dialog_submission", "user_id": "u", "channel_id": "c", "team_id": "",
            "state": "", "submission": {}
        }))
        .unwrap();
        assert_eq!(s.team_id, "");
    }

    #[test]
    fn a_submission_is_bound_to_its_user_and_channel() {
        let state = DialogState {
            action: Action::Deny,
            request_id: "r".into(),
            channel_id: "c".into(),
            post_id: "p".into(),
            user_id: "u".into(),
            expires: 0,
            signature: String::new(),
        };
        assert_eq!(check_binding(&state, &submission("u", "c")), Ok(()));
        assert_eq!(
            check_binding(&state, &submission("mallory", "c")),
            Err(Rejected::OtherUser)
        );
        assert_eq!(
            check_binding(&state, &submission("u", "elsewhere")),
            Err(Rejected::OtherChannel)
        );
    }
}
