//! Interactive dialogs, as Mattermost serves them: a press's `trigger_id` (signed by the
//! server, bound to the presser, accepted for the line's trigger lifetime: 3 seconds on 6.7.2,
//! `OutgoingIntegrationRequestsTimeout` from 9.5), `POST /actions/dialogs/open` (which hands
//! the dialog to the user's client) and the client's submission, which the server forwards to
//! the dialog's `url` as a `dialog_submission` (`server/channels/app/integration_action.go`).

use std::time::Duration;

use anyhow::Context as _;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use rand::Rng as _;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{MattermostDouble, Shared, app_error, invalid_body_param, new_id, now_ms, ok_json};
use std::sync::Arc;

/// The error id Mattermost answers a client with when the integration refused its request.
pub const ACTION_INTEGRATION_ERROR: &str = "api.post.do_action.action_integration.app_error";

/// A dialog the server handed to a user's client.
#[derive(Debug, Clone)]
pub struct OpenedDialog {
    /// Who it was opened for (from the trigger id).
    pub user_id: String,
    /// Where the client's submission is forwarded.
    pub url: String,
    /// The `dialog` object as the integration sent it.
    pub dialog: Value,
}

impl OpenedDialog {
    /// The dialog's `state`, echoed back on submission.
    pub fn state(&self) -> String {
        self.dialog["state"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The dialog's `callback_id`.
    pub fn callback_id(&self) -> String {
        self.dialog["callback_id"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// What the reviewer's client got back for a submission, as Mattermost relays it.
#[derive(Debug, Clone, PartialEq)]
pub struct DialogAnswer {
    /// HTTP status the client sees: the integration's 200, or Mattermost's own 400 for any
    /// other answer of the integration (as a 6.7 server does).
    pub status: u16,
    /// The integration's answer as JSON (`{}`, `{"error": …}` or `{"errors": {…}}`), or on a
    /// non-200 answer Mattermost's `AppError` with id
    /// `api.post.do_action.action_integration.app_error`.
    pub body: Value,
    /// HTTP status of the integration's own answer, which the client never sees (the server
    /// logs it).
    pub integration_status: u16,
    /// The integration's own answer, parsed as JSON where it is.
    pub integration_body: Value,
}

impl DialogAnswer {
    /// True when the answer closes the dialog (`{}` with neither `error` nor `errors`).
    pub fn closes(&self) -> bool {
        self.status == 200 && self.body.get("error").is_none() && self.body.get("errors").is_none()
    }
}

/// A trigger id the double issued: base64 of `clientTriggerId:userId:millis:signature`.
pub(super) fn issue_trigger(shared: &Shared, user_id: &str, age: Duration) -> String {
    let mut signature = [0u8; 64];
    rand::rng().fill(&mut signature[..]);
    let engine = base64::engine::general_purpose::STANDARD;
    let signature = engine.encode(signature);
    let millis = now_ms() - age.as_millis() as i64;
    shared.state().signatures.insert(signature.clone());
    engine.encode(format!("{}:{user_id}:{millis}:{signature}", new_id()))
}

#[derive(Deserialize)]
pub(super) struct OpenRequest {
    #[serde(default)]
    trigger_id: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    dialog: Value,
}

fn trigger_error(id: &str, message: &str) -> Response {
    app_error(
        400,
        &format!("interactive_message.decode_trigger_id.{id}"),
        message,
        "",
    )
}

/// `POST /api/v4/actions/dialogs/open`.
pub(super) async fn open(
    State(shared): State<Arc<Shared>>,
    body: Result<Json<OpenRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(request)) = body else {
        return invalid_body_param("dialog");
    };
    if request.url.is_empty() {
        return invalid_body_param("url");
    }
    let engine = base64::engine::general_purpose::STANDARD;
    let Some(decoded) = engine
        .decode(&request.trigger_id)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
    else {
        return trigger_error(
            "base64_decode_failed",
            "Failed to decode base64 for trigger ID for interactive dialog.",
        );
    };
    let parts: Vec<&str> = decoded.split(':').collect();
    let [_, user_id, millis, signature] = parts[..] else {
        return trigger_error(
            "missing_data",
            "Trigger ID missing required data for interactive dialog.",
        );
    };
    let mut state = shared.state();
    let lifetime = state.line.trigger_lifetime();
    if now_ms() - millis.parse::<i64>().unwrap_or(0) > lifetime.as_millis() as i64 {
        return trigger_error(
            "expired",
            &format!(
                "Trigger ID for interactive dialog is expired. Maximum time for TriggerID is {}s.",
                lifetime.as_secs()
            ),
        );
    }
    if !state.signatures.contains(signature) {
        return trigger_error(
            "verify_signature_failed",
            "Signature verification failed of trigger ID for interactive dialog.",
        );
    }
    state.dialogs.push(OpenedDialog {
        user_id: user_id.to_string(),
        url: request.url,
        dialog: request.dialog,
    });
    ok_json(StatusCode::OK, json!({ "status": "OK" }))
}

impl MattermostDouble {
    /// Presses made from now on carry trigger ids issued `age` ago, as after a slow network.
    pub fn age_triggers(&self, age: Duration) {
        self.state().trigger_age = age;
    }

    /// The dialogs opened for `username`, oldest first.
    pub fn dialogs_for(&self, username: &str) -> Vec<OpenedDialog> {
        let state = self.state();
        let Some(user) = state.users.iter().find(|u| u.username == username) else {
            return Vec::new();
        };
        state
            .dialogs
            .iter()
            .filter(|d| d.user_id == user.id)
            .cloned()
            .collect()
    }

    /// Submits `dialog` as `username` from the channel `channel_id`, as their client does
    /// through `POST /api/v4/actions/dialogs/submit`: the server sets `user_id` from the
    /// session and forwards the rest, unchecked, to the dialog's `url`. `state` replaces the
    /// dialog's own when given (a tampering client).
    pub async fn submit_dialog(
        &self,
        dialog: &OpenedDialog,
        username: &str,
        channel_id: &str,
        submission: Value,
        state: Option<&str>,
    ) -> anyhow::Result<DialogAnswer> {
        self.send_submission(dialog, username, channel_id, submission, state, false)
            .await
    }

    /// What the server forwards when the user closes a dialog opened with `notify_on_cancel`.
    pub async fn cancel_dialog(
        &self,
        dialog: &OpenedDialog,
        username: &str,
        channel_id: &str,
    ) -> anyhow::Result<DialogAnswer> {
        self.send_submission(dialog, username, channel_id, json!({}), None, true)
            .await
    }

    async fn send_submission(
        &self,
        dialog: &OpenedDialog,
        username: &str,
        channel_id: &str,
        submission: Value,
        state: Option<&str>,
        cancelled: bool,
    ) -> anyhow::Result<DialogAnswer> {
        let (user_id, team_id, version) = {
            let state = self.state();
            let user = state
                .users
                .iter()
                .find(|u| u.username == username)
                .with_context(|| format!("no Mattermost user named {username:?}"))?;
            let channel_team = state
                .channels
                .iter()
                .find(|c| c.id == channel_id)
                .map(|c| c.team_id.clone())
                .unwrap_or_default();
            // The webapp sends the team the user is in (the channel's, or for a direct
            // message the team they came from); the double's users are in its first team.
            let client_team = if channel_team.is_empty() {
                state
                    .teams
                    .first()
                    .map(|t| t.id.clone())
                    .unwrap_or_default()
            } else {
                channel_team.clone()
            };
            let team = state.line.submission_team(&channel_team, &client_team);
            (user.id.clone(), team, state.line.version)
        };
        // Before 11.10 `submitDialog` checks that the user may view the team the client
        // named, and an empty one fails that check (`SessionHasPermissionToTeam`,
        // `server/channels/app/authorization.go`).
        if team_id.is_empty() && version < super::V11_10_0 {
            return Ok(DialogAnswer {
                status: 403,
                body: json!({
                    "id": "api.context.permissions.app_error",
                    "status_code": 403,
                    "detailed_error": format!("userId={user_id}, permission=view_team"),
                }),
                integration_status: 0,
                integration_body: Value::Null,
            });
        }
        let body = json!({
            "type": "dialog_submission",
            "callback_id": dialog.callback_id(),
            "state": state.map(str::to_string).unwrap_or_else(|| dialog.state()),
            "user_id": user_id,
            "channel_id": channel_id,
            "team_id": team_id,
            "submission": submission,
            "cancelled": cancelled,
        });
        let response = self
            .shared
            .http
            .post(&dialog.url)
            .header(header::CONTENT_TYPE, "application/json")
            .json(&body)
            .send()
            .await
            .with_context(|| format!("POST {}", dialog.url))?;
        let integration_status = response.status().as_u16();
        let text = response.text().await.context("reading the dialog answer")?;
        let integration_body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if integration_status != 200 {
            // The real server hides the integration's answer behind its generic error.
            return Ok(DialogAnswer {
                status: 400,
                body: json!({
                    "id": ACTION_INTEGRATION_ERROR,
                    "message": "Action integration error.",
                    "detailed_error": format!("status={integration_status}"),
                    "request_id": new_id(),
                    "status_code": 400,
                }),
                integration_status,
                integration_body,
            });
        }
        // From 11.x the server validates the answer (`SubmitDialogResponse.IsValid`,
        // `server/public/model/integration_action.go`): without an error, its `type` must be
        // "", "ok", "form" or "navigate".
        let kind = integration_body.get("type").and_then(Value::as_str);
        let errs = integration_body.get("error").is_some_and(|e| e != "")
            || integration_body
                .get("errors")
                .and_then(Value::as_object)
                .is_some_and(|e| !e.is_empty());
        if version.major >= 11
            && !errs
            && kind.is_some_and(|k| !["", "ok", "form", "navigate"].contains(&k))
        {
            return Ok(DialogAnswer {
                status: 400,
                body: json!({
                    "id": "app.submit_interactive_dialog.invalid_response",
                    "status_code": 400,
                    "detailed_error": format!("invalid type {:?}", kind.unwrap_or_default()),
                }),
                integration_status,
                integration_body,
            });
        }
        Ok(DialogAnswer {
            status: integration_status,
            body: integration_body.clone(),
            integration_status,
            integration_body,
        })
    }
}
