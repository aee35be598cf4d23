//! What the clicker is told, and what Teleport's reason says: the words of every press
//! outcome, and the thread reply for a press that outlived its answer.

use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::decision::{Decided, Press};
use super::{Ask, ephemeral};
use crate::instance::Instance;
use crate::message::{self, Links};
use crate::request::RequestState;
use crate::review::Refusal;

/// What a press led to; every variant is answered with 200 and an ephemeral message.
#[derive(Debug)]
pub enum Outcome {
    /// The request was resolved; the post is replaced.
    Done {
        /// Replacement post.
        update: Value,
        /// What the clicker sees.
        text: String,
    },
    /// Nothing was changed.
    Refused(String),
    /// A reason dialog was opened; the decision waits for its submission.
    Prompted,
}

impl Outcome {
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Outcome::Done { .. } => "resolved",
            Outcome::Refused(_) => "refused",
            Outcome::Prompted => "prompted",
        }
    }
}

impl IntoResponse for Outcome {
    fn into_response(self) -> Response {
        match self {
            Outcome::Done { update, text } => {
                axum::Json(json!({ "update": update, "ephemeral_text": text })).into_response()
            }
            Outcome::Refused(text) => ephemeral(text),
            // Mattermost shows nothing more; the dialog is on the reviewer's screen.
            Outcome::Prompted => axum::Json(json!({})).into_response(),
        }
    }
}

#[derive(Clone, Copy)]
pub(super) enum Tense {
    Past,
    Noun,
}

#[derive(Clone, Copy)]
pub(super) enum Case {
    Lower,
}

/// "approved", "approval", "denied", "denial".
pub(super) fn verb(state: RequestState, tense: Tense, case: Case) -> &'static str {
    match (state == RequestState::Approved, tense, case) {
        (true, Tense::Past, Case::Lower) => "approved",
        (true, Tense::Noun, Case::Lower) => "approval",
        (false, Tense::Past, Case::Lower) => "denied",
        (false, Tense::Noun, Case::Lower) => "denial",
    }
}

/// Why a press counts for nothing under the admin's policy.
pub(super) fn refused(instance: &Instance, id: &str, username: &str, refusal: &Refusal) -> String {
    match refusal {
        Refusal::NoButtons => "Buttons are not enabled here; nothing was changed.".to_owned(),
        Refusal::NotAllowed => format!(
            "@{username} is not allowed to review access requests here; nothing was changed."
        ),
        Refusal::Unchecked => "Could not check with Mattermost that you may review access requests here; nothing was changed. Try again shortly.".to_owned(),
        Refusal::OwnRequest => {
            "You cannot review your own access request; nothing was changed.".to_owned()
        }
        Refusal::EmailHidden => "Your email address is hidden from the plugin's bot, so it cannot check that you are not the requester; nothing was changed. Ask an admin to let the bot see emails or to list the approvers by name.".to_owned(),
        Refusal::LongTerm => {
            let web = match instance.links() {
                Links::Web { proxy_public_addr } => message::request_link(&proxy_public_addr, id)
                    .map(|url| format!(" ({url})"))
                    .unwrap_or_default(),
                _ => String::new(),
            };
            format!(
                "Request {id} is a long-term request: approving it here would keep it from being promoted to an access list. Review it in Teleport's web UI{web}; nothing was changed."
            )
        }
        Refusal::NotPending(state) => already(id, *state, None),
    }
}

pub(super) fn gone(id: &str) -> String {
    format!("Request {id} has expired or no longer exists; nothing was changed.")
}

pub(super) fn already(id: &str, state: RequestState, by: Option<&str>) -> String {
    match by {
        Some(by) => format!(
            "Request {id} is already {} by {by}; nothing was changed.",
            state.as_str()
        ),
        None => format!(
            "Request {id} is already {}; nothing was changed.",
            state.as_str()
        ),
    }
}

/// What the clicker is told, and the post update, for a press that finished in time.
pub(super) fn outcome(
    instance: &Instance,
    press: &Press,
    decided: Decided,
    max_chars: usize,
) -> Outcome {
    match decided {
        Decided::Done(resolved) => {
            let text = message::post_text_within(
                &resolved,
                press.state,
                Some(&press.by),
                &instance.links(),
                max_chars,
            );
            Outcome::Done {
                update: json!({
                    "message": text,
                    "props": message::post_props(&resolved.id, None),
                }),
                text: format!(
                    "You {} request {}.",
                    verb(press.state, Tense::Past, Case::Lower),
                    resolved.id
                ),
            }
        }
        other => Outcome::Refused(refusal(instance, press, other)),
    }
}

/// The words for a press that changed nothing.
pub(super) fn refusal(instance: &Instance, press: &Press, decided: Decided) -> String {
    let id = &press.request_id;
    match decided {
        Decided::Done(_) => unreachable!("a decision that changed the request is no refusal"),
        Decided::Deciding(claim) if claim.by == press.by => format!(
            "Your {} of request {id} is already being processed; nothing more was done.",
            verb(claim.state, Tense::Noun, Case::Lower)
        ),
        Decided::Deciding(claim) => format!(
            "{} is already deciding request {id} ({} it); nothing was changed.",
            claim.by,
            if claim.state == RequestState::Approved {
                "approving"
            } else {
                "denying"
            }
        ),
        Decided::Already { state, by } => already(id, state, by.as_deref()),
        Decided::Gone => gone(id),
        Decided::Failed { short, detail } => {
            // The clicker gets the gist; the detail (gRPC code, missing Teleport permission)
            // is for the admin.
            tracing::warn!(request = %id, error = %detail, "button press failed");
            instance.update_status(|s| {
                s.press_problem = Some(format!(
                    "a {} of request {id} by {} failed: {detail}",
                    verb(press.state, Tense::Noun, Case::Lower),
                    press.by
                ))
            });
            format!(
                "{short}; nothing was changed. Try again shortly; if it keeps failing, the plugin's status and logs tell an admin why."
            )
        }
    }
}

/// Posts how a press that outlived its answer ended, as a reply in the pressed post's
/// thread. `by` is the presser, when they were found.
pub(super) async fn tell_late(instance: &Instance, ask: &Ask, by: Option<&str>, outcome: Outcome) {
    let noun = verb(ask.action.state(), Tense::Noun, Case::Lower);
    let id = &ask.request_id;
    let text = match (outcome, by) {
        // The dialog is on the reviewer's screen: nothing to add.
        (Outcome::Prompted, _) => return,
        (Outcome::Done { .. }, Some(who)) => format!(
            "{who}'s {noun} of request {id} went through: it is {} now.",
            ask.action.state().as_str()
        ),
        (Outcome::Done { .. }, None) => format!(
            "The {noun} of request {id} went through: it is {} now.",
            ask.action.state().as_str()
        ),
        (Outcome::Refused(why), Some(who)) => {
            format!("{who}, your {noun} of request {id} did not go through. {why}")
        }
        (Outcome::Refused(why), None) => {
            format!("A {noun} of request {id} did not go through. {why}")
        }
    };
    let reply = crate::mattermost::NewPost {
        channel_id: ask.channel_id.clone(),
        message: text,
        root_id: Some(ask.post_id.clone()),
        props: Default::default(),
        pending_post_id: None,
        metadata: None,
    };
    if let Err(e) = instance.mattermost().create_post(&reply).await {
        tracing::warn!(request = %id, error = %e, "could not post the late outcome of a press");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_press_that_changes_nothing_says_why() {
        assert_eq!(
            already("r1", RequestState::Approved, Some("@alice")),
            "Request r1 is already APPROVED by @alice; nothing was changed."
        );
        assert_eq!(
            already("r1", RequestState::Denied, None),
            "Request r1 is already DENIED; nothing was changed."
        );
        assert!(gone("r1").contains("nothing was changed"));
        assert_eq!(
            verb(RequestState::Denied, Tense::Noun, Case::Lower),
            "denial"
        );
    }
}
