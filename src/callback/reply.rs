//! What the clicker is told, and what Teleport's reason says: the words of every press
//! outcome, and the thread reply for a press that outlived its answer.

use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::decision::{Decided, Press};
use super::ephemeral;
use crate::bridge::Instance;
use crate::message;
use crate::request::RequestState;

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

/// The reason written to Teleport: who decided, through what, and what they said.
pub(super) fn resolution_reason(
    state: RequestState,
    username: &str,
    with_email: &str,
    given: &str,
) -> String {
    let who = format!(
        "{} by Mattermost user @{username}{with_email} via the Mattermost plugin",
        verb(state, Tense::Past, Case::Title),
    );
    if given.is_empty() {
        who
    } else {
        format!("{who}: {given}")
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
    Title,
}

/// "approved", "Denied", "approval", …
pub(super) fn verb(state: RequestState, tense: Tense, case: Case) -> &'static str {
    match (state == RequestState::Approved, tense, case) {
        (true, Tense::Past, Case::Lower) => "approved",
        (true, Tense::Past, Case::Title) => "Approved",
        (true, Tense::Noun, Case::Lower) => "approval",
        (true, Tense::Noun, Case::Title) => "Approval",
        (false, Tense::Past, Case::Lower) => "denied",
        (false, Tense::Past, Case::Title) => "Denied",
        (false, Tense::Noun, Case::Lower) => "denial",
        (false, Tense::Noun, Case::Title) => "Denial",
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
                &crate::bridge::links_for(instance),
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

/// Posts how a press that outlived its answer ended, as a reply in the pressed post's thread.
pub(super) async fn tell_late(
    instance: &Instance,
    press: &Press,
    channel_id: &str,
    post_id: &str,
    decided: Decided,
) {
    let who = &press.by;
    let noun = verb(press.state, Tense::Noun, Case::Lower);
    let text = match decided {
        Decided::Done(_) => format!(
            "{who}'s {noun} of request {} went through: it is {} now.",
            press.request_id,
            press.state.as_str()
        ),
        other => format!(
            "{who}, your {noun} of request {} did not go through. {}",
            press.request_id,
            refusal(instance, press, other)
        ),
    };
    let reply = crate::mattermost::NewPost {
        channel_id: channel_id.to_string(),
        message: text,
        root_id: Some(post_id.to_string()),
        props: Default::default(),
    };
    if let Err(e) = instance.mattermost().create_post(&reply).await {
        tracing::warn!(request = %press.request_id, error = %e, "could not post the late outcome of a press");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_names_who_decided_and_keeps_what_they_said() {
        assert_eq!(
            resolution_reason(
                RequestState::Denied,
                "carol",
                " (carol@example.com)",
                "not now"
            ),
            "Denied by Mattermost user @carol (carol@example.com) via the Mattermost plugin: not now"
        );
        assert_eq!(
            resolution_reason(RequestState::Approved, "alice", "", ""),
            "Approved by Mattermost user @alice via the Mattermost plugin"
        );
    }

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
            verb(RequestState::Denied, Tense::Noun, Case::Title),
            "Denial"
        );
    }
}
