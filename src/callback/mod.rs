//! The callback server for Approve/Deny button presses: one axum router for all instances.
//!
//! Mattermost's server POSTs the press to `integration.url`. We verify the signed context,
//! authorize the clicker, act on Teleport, and answer with `{update, ephemeral_text}`.
//! Malformed input gets 400 and a bad signature 401; everything after that is a 200 with an
//! ephemeral explanation, because the clicker (not Mattermost) is who needs to read it.

pub mod signature;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::bridge::Instance;
use crate::message;
use crate::plugin_data::PluginData;
use crate::request::{AccessRequest, RequestState};
use crate::settings::InstanceId;
use signature::{Action, ActionContext, SignatureError};

/// Largest press body accepted; real ones are well under 2 KiB.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Mattermost waits about 30 s for an integration; answer well before that.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// The instances the server answers for, keyed by `namespace/name`.
#[derive(Default)]
pub struct Registry {
    instances: RwLock<HashMap<InstanceId, Arc<Instance>>>,
    /// Presses by outcome, for metrics.
    pub outcomes: Outcomes,
}

/// Button presses by outcome.
#[derive(Debug, Default)]
pub struct Outcomes {
    /// Requests approved or denied.
    pub resolved: AtomicU64,
    /// Presses answered with an ephemeral refusal (not allowed, already resolved, …).
    pub refused: AtomicU64,
    /// Malformed bodies or contexts (400) and unknown instances (404).
    pub malformed: AtomicU64,
    /// Bad or expired signatures (401).
    pub unauthorized: AtomicU64,
}

impl Registry {
    /// Adds or replaces an instance.
    pub fn insert(&self, instance: Arc<Instance>) {
        let id = instance.settings().instance.clone();
        self.instances
            .write()
            .expect("registry lock")
            .insert(id, instance);
    }

    /// Removes an instance; its buttons answer 404 afterwards.
    pub fn remove(&self, id: &InstanceId) {
        self.instances.write().expect("registry lock").remove(id);
    }

    fn get(&self, id: &InstanceId) -> Option<Arc<Instance>> {
        self.instances
            .read()
            .expect("registry lock")
            .get(id)
            .cloned()
    }

    /// Number of instances served.
    pub fn len(&self) -> usize {
        self.instances.read().expect("registry lock").len()
    }

    /// True when no instance is served.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The JSON Mattermost's server sends when a button is pressed.
#[derive(Debug, Deserialize)]
pub struct PressPayload {
    /// Mattermost id of the clicking user.
    pub user_id: String,
    /// Channel of the post.
    #[serde(default)]
    pub channel_id: String,
    /// The post carrying the button.
    #[serde(default)]
    pub post_id: String,
    /// The context object exactly as posted.
    pub context: Value,
}

/// The router: `POST /v1/actions/{namespace}/{name}` for every instance, and the original
/// plugin's `POST /mattermost_action` for the standalone instance.
pub fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/v1/actions/{namespace}/{name}", post(instance_action))
        .route("/mattermost_action", post(standalone_action))
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .with_state(registry)
}

async fn instance_action(
    State(registry): State<Arc<Registry>>,
    Path((namespace, name)): Path<(String, String)>,
    body: Result<axum::Json<Value>, JsonRejection>,
) -> Response {
    handle(&registry, &InstanceId::new(namespace, name), body).await
}

async fn standalone_action(
    State(registry): State<Arc<Registry>>,
    body: Result<axum::Json<Value>, JsonRejection>,
) -> Response {
    handle(&registry, &InstanceId::standalone(), body).await
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

fn ephemeral(text: impl Into<String>) -> Response {
    axum::Json(json!({ "ephemeral_text": text.into() })).into_response()
}

async fn handle(
    registry: &Registry,
    id: &InstanceId,
    body: Result<axum::Json<Value>, JsonRejection>,
) -> Response {
    let response = answer(registry, id, body).await;
    let counter = match response.status() {
        StatusCode::UNAUTHORIZED => &registry.outcomes.unauthorized,
        s if s.is_client_error() => &registry.outcomes.malformed,
        _ => return response,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    response
}

async fn answer(
    registry: &Registry,
    id: &InstanceId,
    body: Result<axum::Json<Value>, JsonRejection>,
) -> Response {
    let Some(instance) = registry.get(id) else {
        return error(StatusCode::NOT_FOUND, "no such plugin instance");
    };
    let payload = match body {
        Ok(axum::Json(v)) => v,
        Err(rejection) => {
            tracing::debug!(instance = %id, error = %rejection, "malformed callback body");
            return error(StatusCode::BAD_REQUEST, "body must be a JSON button press");
        }
    };
    let payload: PressPayload = match serde_json::from_value(payload) {
        Ok(p) => p,
        Err(e) => {
            return error(StatusCode::BAD_REQUEST, &format!("not a button press: {e}"));
        }
    };
    let context: ActionContext = match serde_json::from_value(payload.context.clone()) {
        Ok(c) => c,
        Err(_) => return error(StatusCode::BAD_REQUEST, "button context is malformed"),
    };
    let Some(callback) = instance.settings().callback.as_ref() else {
        return error(
            StatusCode::NOT_FOUND,
            "buttons are not enabled for this instance",
        );
    };
    if let Err(e) = context.verify(&callback.signing_secret, id, Utc::now().timestamp()) {
        tracing::warn!(instance = %id, request = %context.request_id, error = %e, "refused button press");
        return match e {
            SignatureError::Expired { .. } => {
                error(StatusCode::UNAUTHORIZED, "this button has expired")
            }
            SignatureError::Invalid => error(StatusCode::UNAUTHORIZED, "invalid signature"),
        };
    }
    if payload.channel_id != context.channel_id {
        return error(StatusCode::UNAUTHORIZED, "button used outside its channel");
    }
    let outcome = act(&instance, &payload, &context).await;
    let counter = match outcome {
        Outcome::Done { .. } => &registry.outcomes.resolved,
        Outcome::Refused(_) => &registry.outcomes.refused,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    tracing::info!(instance = %id, request = %context.request_id, action = context.action.as_str(), outcome = outcome.kind(), "button press handled");
    outcome.into_response()
}

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
}

impl Outcome {
    fn kind(&self) -> &'static str {
        match self {
            Outcome::Done { .. } => "resolved",
            Outcome::Refused(_) => "refused",
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
        }
    }
}

/// True when `approvers` is empty or lists the user by username (with or without `@`) or email.
pub fn is_approver(approvers: &[String], username: &str, email: &str) -> bool {
    approvers.is_empty()
        || approvers.iter().any(|a| {
            let a = a.trim().trim_start_matches('@');
            a.eq_ignore_ascii_case(username) || (!email.is_empty() && a.eq_ignore_ascii_case(email))
        })
}

/// True when the Mattermost user is the requester: same email, or same username.
pub fn is_requester(requester: &str, username: &str, email: &str) -> bool {
    requester.eq_ignore_ascii_case(username)
        || (!email.is_empty() && requester.eq_ignore_ascii_case(email))
}

async fn act(instance: &Instance, payload: &PressPayload, context: &ActionContext) -> Outcome {
    let settings = instance.settings();
    let user = match instance.mattermost().user_by_id(&payload.user_id).await {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(error = %e, "could not look up the clicking user");
            return Outcome::Refused(
                "Could not look up your Mattermost account; nothing was changed. Try again shortly.".into(),
            );
        }
    };
    if !is_approver(&settings.approvers, &user.username, &user.email) {
        return Outcome::Refused(format!(
            "@{} is not allowed to review access requests here; nothing was changed.",
            user.username
        ));
    }
    let teleport = match instance.teleport().await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "Teleport unreachable while handling a button press");
            return Outcome::Refused(
                "Teleport is unreachable right now; nothing was changed. Try again shortly.".into(),
            );
        }
    };
    let request = match teleport.get_access_request(&context.request_id).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return Outcome::Refused(format!(
                "Request {} has expired or no longer exists; nothing was changed.",
                context.request_id
            ));
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not read the access request");
            return Outcome::Refused(
                "Could not read the request from Teleport; nothing was changed. Try again shortly."
                    .into(),
            );
        }
    };
    if is_requester(&request.user, &user.username, &user.email) {
        return Outcome::Refused(
            "You cannot review your own access request; nothing was changed.".into(),
        );
    }
    if request.state != RequestState::Pending {
        return Outcome::Refused(format!(
            "Request {} is already {}; nothing was changed.",
            request.id,
            request.state.as_str()
        ));
    }
    let state = match context.action {
        Action::Approve => RequestState::Approved,
        Action::Deny => RequestState::Denied,
    };
    let by = format!("@{}", user.username);
    // Record who is acting before the state change, so the edit made on the resulting watch
    // event names them too.
    if let Err(e) = set_resolved_by(&teleport, &request.id, &by).await {
        tracing::warn!(error = %e, "could not record who resolved the request");
    }
    let delegator = format!(
        "mattermost:{}",
        if user.email.is_empty() {
            &user.username
        } else {
            &user.email
        }
    );
    let reason = format!(
        "{} by Mattermost user @{}{} via the Mattermost plugin",
        if state == RequestState::Approved {
            "Approved"
        } else {
            "Denied"
        },
        user.username,
        if user.email.is_empty() {
            String::new()
        } else {
            format!(" ({})", user.email)
        }
    );
    if let Err(e) = teleport
        .set_access_request_state(&request.id, state, &delegator, &reason)
        .await
    {
        let _ = set_resolved_by(&teleport, &request.id, "").await;
        if e.is_already_resolved() {
            return Outcome::Refused(format!(
                "Request {} was already resolved; nothing was changed.",
                request.id
            ));
        }
        tracing::warn!(error = %e, "SetAccessRequestState failed");
        return Outcome::Refused(format!("Teleport refused the change: {e}"));
    }
    let resolved = AccessRequest {
        state,
        resolve_reason: reason,
        ..request
    };
    let text = message::post_text(
        &resolved,
        state,
        Some(&by),
        &crate::bridge::links_for(instance),
    );
    Outcome::Done {
        update: json!({
            "message": text,
            "props": message::post_props(&resolved.id, None),
        }),
        text: format!(
            "You {} request {}.",
            if state == RequestState::Approved {
                "approved"
            } else {
                "denied"
            },
            resolved.id
        ),
    }
}

async fn set_resolved_by(
    teleport: &crate::teleport::client::TeleportClient,
    id: &str,
    by: &str,
) -> Result<(), crate::teleport::client::TeleportError> {
    teleport
        .modify_plugin_data(id, |current| {
            let mut data = PluginData::decode(current?);
            if data.resolution.is_some() || data.resolved_by == by {
                return None;
            }
            data.resolved_by = by.to_string();
            Some((data.encode(), ()))
        })
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_allow_list_lets_anyone_in() {
        assert!(is_approver(&[], "bob", "bob@example.com"));
    }

    #[test]
    fn allow_list_matches_username_or_email_case_insensitively() {
        let list = vec!["@Alice".to_string(), "carol@example.com".to_string()];
        assert!(is_approver(&list, "alice", ""));
        assert!(is_approver(&list, "c", "Carol@Example.com"));
        assert!(!is_approver(&list, "mallory", "mallory@example.com"));
        assert!(!is_approver(&list, "mallory", ""));
    }

    #[test]
    fn requester_is_matched_by_email_or_username() {
        assert!(is_requester("bob@example.com", "bobby", "bob@example.com"));
        assert!(is_requester("bob", "bob", "x@example.com"));
        assert!(!is_requester("bob", "alice", "alice@example.com"));
        assert!(
            !is_requester("", "alice", ""),
            "an empty email never matches"
        );
    }
}
