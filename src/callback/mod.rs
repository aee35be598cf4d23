//! The callback server for Approve/Deny button presses: one axum router for all instances.
//!
//! Mattermost's server POSTs the press to `integration.url`. We verify the signed context,
//! authorize the clicker, act on Teleport, and answer with `{update, ephemeral_text}`.
//! Malformed input gets 400 and a bad signature 401; everything after that is a 200 with an
//! ephemeral explanation, because the clicker (not Mattermost) is who needs to read it.

pub mod decision;
pub mod dialog;
mod reply;

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

use crate::instance::Instance;
use crate::mattermost::User;
use crate::plugin_data::PluginData;
use crate::review::people::Person;
use crate::review::reason::resolution_reason;
use crate::review::signature::{Action, ActionContext, DialogFields, DialogState, SignatureError};
use crate::review::{Refusal, Standing, membership};
use crate::settings::InstanceId;
use crate::settings::{CallbackSettings, ReasonPrompt};
use decision::Press;
pub use reply::Outcome;
use reply::{Case, Tense, already, gone, outcome, refused, tell_late, verb};

/// Largest press body accepted; real ones are well under 2 KiB.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Mattermost waits about 30 s for an integration. Every press is answered within its
/// instance's `answer_within` (15 s by default) of arriving; this outer bound is a backstop
/// for what comes before that deadline starts (reading the body).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(25);

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
    /// Presses answered with a reason dialog.
    pub prompted: AtomicU64,
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
    /// Lets the integration open a dialog for the clicker, for a while
    /// ([`dialog::trigger_lifetime`]).
    #[serde(default)]
    pub trigger_id: String,
}

/// The path prefixes of every instance's routes: what an Ingress in front of the callback
/// server must pass to it (and all it needs to).
pub const ROUTE_PREFIXES: [&str; 2] = ["/v1/actions", "/v1/dialogs"];

/// The router: `POST /v1/actions/{namespace}/{name}` for every instance's presses and
/// `/v1/dialogs/{namespace}/{name}` for its reason dialogs, and the original plugin's
/// `POST /mattermost_action` (with `/mattermost_dialog` beside it) for the standalone
/// instance.
pub fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route(
            &format!("{}/{{namespace}}/{{name}}", ROUTE_PREFIXES[0]),
            post(instance_action),
        )
        .route(
            &format!("{}/{{namespace}}/{{name}}", ROUTE_PREFIXES[1]),
            post(instance_dialog),
        )
        .route("/mattermost_action", post(standalone_action))
        .route("/mattermost_dialog", post(standalone_dialog))
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .with_state(registry)
}

type Body = Result<axum::Json<Value>, JsonRejection>;

async fn instance_action(
    State(registry): State<Arc<Registry>>,
    Path((namespace, name)): Path<(String, String)>,
    body: Body,
) -> Response {
    handle(
        &registry,
        &InstanceId::new(namespace, name),
        body,
        Route::Press,
    )
    .await
}

async fn standalone_action(State(registry): State<Arc<Registry>>, body: Body) -> Response {
    handle(&registry, &InstanceId::standalone(), body, Route::Press).await
}

async fn instance_dialog(
    State(registry): State<Arc<Registry>>,
    Path((namespace, name)): Path<(String, String)>,
    body: Body,
) -> Response {
    handle(
        &registry,
        &InstanceId::new(namespace, name),
        body,
        Route::Dialog,
    )
    .await
}

async fn standalone_dialog(State(registry): State<Arc<Registry>>, body: Body) -> Response {
    handle(&registry, &InstanceId::standalone(), body, Route::Dialog).await
}

#[derive(Clone, Copy)]
enum Route {
    Press,
    Dialog,
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

fn ephemeral(text: impl Into<String>) -> Response {
    axum::Json(json!({ "ephemeral_text": text.into() })).into_response()
}

async fn handle(registry: &Registry, id: &InstanceId, body: Body, route: Route) -> Response {
    let response = match route {
        Route::Press => answer(registry, id, body).await,
        Route::Dialog => submitted(registry, id, body).await,
    };
    let counter = match response.status() {
        StatusCode::UNAUTHORIZED => &registry.outcomes.unauthorized,
        s if s.is_client_error() => &registry.outcomes.malformed,
        _ => return response,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    response
}

async fn answer(registry: &Registry, id: &InstanceId, body: Body) -> Response {
    // The trigger's lifetime runs from when Mattermost made it, just before it sent this.
    let arrived = tokio::time::Instant::now();
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
    let Some(callback) = instance.settings().callback.clone() else {
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
    let ask = Ask {
        action: context.action,
        request_id: context.request_id.clone(),
        user_id: payload.user_id,
        channel_id: payload.channel_id,
        post_id: payload.post_id,
        trigger_id: payload.trigger_id,
        button_expires: context.expires,
        reason: None,
        arrived,
    };
    let outcome = within_deadline(&instance, callback, ask).await;
    let counter = match outcome {
        Outcome::Done { .. } => &registry.outcomes.resolved,
        Outcome::Refused(_) => &registry.outcomes.refused,
        Outcome::Prompted => &registry.outcomes.prompted,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    tracing::info!(instance = %id, request = %context.request_id, action = context.action.as_str(), outcome = outcome.kind(), "button press handled");
    outcome.into_response()
}

fn prompt_for(callback: &CallbackSettings, action: Action) -> ReasonPrompt {
    match action {
        Action::Approve => callback.approve_reason,
        Action::Deny => callback.deny_reason,
    }
}

/// What a verified press or dialog submission asks for.
#[derive(Debug, Clone)]
pub(crate) struct Ask {
    /// Approve or Deny.
    pub action: Action,
    /// The request.
    pub request_id: String,
    /// The Mattermost user pressing (set by Mattermost's server, never by the client).
    pub user_id: String,
    /// The pressed post's channel.
    pub channel_id: String,
    /// The pressed post.
    pub post_id: String,
    /// The press's trigger for a dialog; empty for a submission.
    pub trigger_id: String,
    /// When the pressed button stops working (unix seconds).
    pub button_expires: i64,
    /// The reviewer's reason from a dialog; `None` for a press, which may open the dialog.
    pub reason: Option<String>,
    /// When the press or submission arrived: its trigger's lifetime and its deadline run
    /// from here.
    pub arrived: tokio::time::Instant,
}

/// How a press ended, and who pressed when that is known: what a late thread reply says.
pub(crate) struct Finished {
    outcome: Outcome,
    by: Option<String>,
}

impl From<Outcome> for Finished {
    fn from(outcome: Outcome) -> Self {
        Finished { outcome, by: None }
    }
}

/// Runs `ask` in its own task and answers within `answer_within` of its arrival: the
/// Mattermost lookups, the claim and Teleport's answer all fall inside it. A press still
/// running then is answered "still being processed"; it runs to completion (once it claimed
/// the decision, nothing stops it between the claim and Teleport's write) and its outcome is
/// posted in the pressed post's thread.
async fn within_deadline(
    instance: &Arc<Instance>,
    callback: CallbackSettings,
    ask: Ask,
) -> Outcome {
    let deadline = ask.arrived + callback.answer_within;
    let mut task = tokio::spawn(run(instance.clone(), callback, ask.clone()));
    match tokio::time::timeout_at(deadline, &mut task).await {
        Ok(Ok(finished)) => finished.outcome,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "the press's task failed");
            Outcome::Refused("Something went wrong; nothing was changed. Try again.".into())
        }
        Err(_) => {
            let instance = instance.clone();
            let noun = verb(ask.action.state(), Tense::Noun, Case::Lower);
            let message = format!(
                "Teleport is slow to answer; your {noun} of request {} is still being processed. This thread will say how it ended.",
                ask.request_id
            );
            tokio::spawn(async move {
                let finished = task.await.unwrap_or_else(|e| {
                    tracing::error!(error = %e, "the press's task failed");
                    Outcome::Refused("Something went wrong; nothing was changed.".into()).into()
                });
                tell_late(&instance, &ask, finished.by.as_deref(), finished.outcome).await;
            });
            Outcome::Refused(message)
        }
    }
}

/// A verified press or submission, start to end: the reviewer is checked, then either the
/// reason dialog opens or the decision is made.
async fn run(instance: Arc<Instance>, callback: CallbackSettings, ask: Ask) -> Finished {
    let (user, standing) = match reviewer(&instance, &ask.user_id).await {
        Ok(found) => found,
        Err(refused) => return refused.into(),
    };
    let by = Some(format!("@{}", user.username));
    let finished = |outcome| Finished {
        outcome,
        by: by.clone(),
    };
    if let Some(reason) = &ask.reason {
        return finished(decide_for(&instance, &user, &standing, &ask, reason).await);
    }
    let prompt = prompt_for(&callback, ask.action);
    if prompt == ReasonPrompt::Never {
        return finished(decide_for(&instance, &user, &standing, &ask, "").await);
    }
    let problem = match open_dialog(&instance, &callback, &ask, prompt).await {
        Ok(()) => return finished(Outcome::Prompted),
        Err(problem) => problem,
    };
    tracing::warn!(request = %ask.request_id, error = %problem, "could not open the reason dialog");
    if prompt == ReasonPrompt::Required {
        return finished(Outcome::Refused(format!(
            "The reason dialog could not be opened ({problem}); nothing was changed. Press {} again.",
            title(ask.action)
        )));
    }
    // An optional reason is no reason to block the decision.
    finished(
        match decide_for(&instance, &user, &standing, &ask, "").await {
            Outcome::Done { update, text } => Outcome::Done {
                update,
                text: format!(
                    "{text} The reason dialog could not be opened, so no reason was recorded."
                ),
            },
            other => other,
        },
    )
}

fn title(action: Action) -> &'static str {
    match action {
        Action::Approve => "Approve",
        Action::Deny => "Deny",
    }
}

/// Opens the reason dialog for the press, within what is left of the trigger's lifetime on
/// this server and of the press's deadline.
async fn open_dialog(
    instance: &Instance,
    callback: &CallbackSettings,
    ask: &Ask,
    prompt: ReasonPrompt,
) -> Result<(), String> {
    if ask.trigger_id.is_empty() {
        return Err("the press carried no trigger_id".into());
    }
    let mm = instance.mattermost();
    // The version is in the client config the posts were fitted to, so it is known by now.
    let lifetime = dialog::trigger_lifetime(mm.server_version().await);
    let within = dialog::open_within(lifetime, callback.answer_within, ask.arrived.elapsed());
    let expires = (Utc::now().timestamp() + dialog::DIALOG_LIFETIME_SECS).min(ask.button_expires);
    let state = DialogState::signed(
        &callback.signing_secret,
        &instance.settings().instance,
        DialogFields {
            action: ask.action,
            request_id: &ask.request_id,
            channel_id: &ask.channel_id,
            post_id: &ask.post_id,
            user_id: &ask.user_id,
            expires,
        },
    );
    let body = dialog::reason_dialog(ask.action, &ask.request_id, prompt, &state.encode());
    let opened = tokio::time::timeout(
        within,
        mm.open_dialog(&ask.trigger_id, &callback.dialog_url, &body),
    )
    .await;
    match opened {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "Mattermost did not open it within the {}s its trigger lives",
            lifetime.as_secs()
        )),
    }
}

/// A reason dialog's submission: the signed state and its binding to the submitter are
/// checked, then everything a press checks, then the decision is made with the reason.
async fn submitted(registry: &Registry, id: &InstanceId, body: Body) -> Response {
    let Some(instance) = registry.get(id) else {
        return error(StatusCode::NOT_FOUND, "no such plugin instance");
    };
    let Ok(axum::Json(body)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "body must be a JSON dialog submission",
        );
    };
    let arrived = tokio::time::Instant::now();
    let submission: dialog::Submission = match serde_json::from_value(body) {
        Ok(s) => s,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("not a dialog submission: {e}"),
            );
        }
    };
    if !dialog::is_submission(&submission.kind) {
        return error(
            StatusCode::BAD_REQUEST,
            &format!(
                "not a dialog submission: type {:?}, not {:?}",
                submission.kind,
                dialog::SUBMISSION_TYPE
            ),
        );
    }
    if submission.cancelled {
        // Closing the dialog changes nothing.
        return axum::Json(dialog::answer(None)).into_response();
    }
    let Some(callback) = instance.settings().callback.clone() else {
        return error(
            StatusCode::NOT_FOUND,
            "buttons are not enabled for this instance",
        );
    };
    let Some(state) = DialogState::decode(&submission.state) else {
        return error(
            StatusCode::BAD_REQUEST,
            &dialog::Rejected::NotOurs.to_string(),
        );
    };
    let checked = state
        .verify(&callback.signing_secret, id, Utc::now().timestamp())
        .map_err(|e| e.to_string())
        .and_then(|()| dialog::check_binding(&state, &submission).map_err(|e| e.to_string()));
    if let Err(why) = checked {
        tracing::warn!(instance = %id, request = %state.request_id, user = %submission.user_id, error = %why, "refused dialog submission");
        return error(StatusCode::UNAUTHORIZED, &why);
    }
    let prompt = prompt_for(&callback, state.action);
    let reason = match dialog::reason(submission.submission.as_ref(), prompt, state.action) {
        Ok(reason) => reason,
        Err(message) => return axum::Json(dialog::field_error(&message)).into_response(),
    };
    let ask = Ask {
        action: state.action,
        request_id: state.request_id.clone(),
        user_id: state.user_id.clone(),
        channel_id: state.channel_id.clone(),
        post_id: state.post_id.clone(),
        trigger_id: String::new(),
        button_expires: state.expires,
        reason: Some(reason),
        arrived,
    };
    let outcome = within_deadline(&instance, callback, ask).await;
    let counter = match outcome {
        Outcome::Done { .. } => &registry.outcomes.resolved,
        _ => &registry.outcomes.refused,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    tracing::info!(instance = %id, request = %state.request_id, action = state.action.as_str(), outcome = outcome.kind(), "reason dialog handled");
    match outcome {
        Outcome::Done { update, .. } => {
            // What Mattermost does with a press's `update`, done here: a dialog's answer
            // cannot carry one. The watcher edits the request's other posts.
            show_update(&instance, &state.channel_id, &state.post_id, update).await;
            axum::Json(dialog::answer(None)).into_response()
        }
        Outcome::Refused(text) => axum::Json(dialog::answer(Some(&text))).into_response(),
        Outcome::Prompted => unreachable!("a submission never opens another dialog"),
    }
}

/// Replaces the pressed post's message and props with `update`.
async fn show_update(instance: &Instance, channel_id: &str, post_id: &str, update: Value) {
    let post = crate::mattermost::Post::replacement(
        channel_id,
        post_id,
        update["message"].as_str().unwrap_or_default().to_string(),
        update["props"].as_object().cloned().unwrap_or_default(),
    );
    if let Err(e) = instance.mattermost().update_post(&post).await {
        // The watcher edits it too, or (past the server's post edit time limit) says it in
        // the post's thread.
        tracing::warn!(post = %post_id, error = %e, "could not show the decision on the pressed post; the watcher shows it");
    }
}

/// The pressing user and where they stand under the admin's policy, if they may review here
/// at all. Only Mattermost is asked, so this is fast enough to come before opening a dialog.
async fn reviewer(instance: &Instance, user_id: &str) -> Result<(User, Standing), Outcome> {
    let mm = instance.mattermost();
    let user = match mm.user_by_id(user_id).await {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(error = %e, "could not look up the clicking user");
            return Err(Outcome::Refused(
                "Could not look up your Mattermost account; nothing was changed. Try again shortly.".into(),
            ));
        }
    };
    let standing = membership::standing(instance.policy(), &mm, &user).await;
    match &standing {
        Standing::May(_) => Ok((user, standing)),
        Standing::NotAllowed => Err(Outcome::Refused(refused(
            instance,
            "",
            &user.username,
            &Refusal::NotAllowed,
        ))),
        Standing::Unchecked(why) => {
            let problem = format!(
                "could not check whether @{} may decide (a Mattermost membership lookup failed): {why}",
                user.username
            );
            tracing::warn!("{problem}");
            instance.update_status(|s| s.press_problem = Some(problem));
            Err(Outcome::Refused(refused(
                instance,
                "",
                &user.username,
                &Refusal::Unchecked,
            )))
        }
    }
}

/// Everything after the reviewer was found allowed: the request's own checks under the
/// policy, then the decision. `given` is the reviewer's reason, if any.
async fn decide_for(
    instance: &Arc<Instance>,
    user: &User,
    standing: &Standing,
    ask: &Ask,
    given: &str,
) -> Outcome {
    let teleport = match instance.teleport().await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "Teleport unreachable while handling a button press");
            return Outcome::Refused(
                "Teleport is unreachable right now; nothing was changed. Try again shortly.".into(),
            );
        }
    };
    let request = match teleport.get_access_request(&ask.request_id).await {
        Ok(Some(r)) => r,
        Ok(None) => return Outcome::Refused(gone(&ask.request_id)),
        Err(e) => {
            tracing::warn!(error = %e, "could not read the access request");
            return Outcome::Refused(
                "Could not read the request from Teleport; nothing was changed. Try again shortly."
                    .into(),
            );
        }
    };
    let person = Person {
        username: &user.username,
        email: &user.email,
    };
    match instance
        .policy()
        .press(ask.action, &request, person, standing)
    {
        Ok(()) => {}
        Err(Refusal::NotPending(state)) => {
            let by = teleport
                .plugin_data(&request.id)
                .await
                .ok()
                .flatten()
                .and_then(|d| PluginData::decode(&d).actor());
            return Outcome::Refused(already(&request.id, state, by.as_deref()));
        }
        Err(refusal) => {
            if refusal == Refusal::EmailHidden {
                let problem = format!(
                    "a press by @{} was refused: Mattermost hides users' emails from the bot, so for a right that comes from channel membership the plugin cannot tell a requester from a reviewer; let the bot see emails (PrivacySettings.ShowEmailAddress, or the system_admin role) or list the approvers by name",
                    user.username
                );
                tracing::warn!(request = %request.id, "{problem}");
                instance.update_status(|s| s.press_problem = Some(problem));
            }
            return Outcome::Refused(refused(instance, &request.id, &user.username, &refusal));
        }
    }

    let state = ask.action.state();
    let press = Press {
        request_id: request.id.clone(),
        state,
        by: format!("@{}", user.username),
        delegator: format!(
            "mattermost:{}",
            if user.email.is_empty() {
                &user.username
            } else {
                &user.email
            }
        ),
        reason: resolution_reason(state, &user.username, &user.email, given),
    };
    let decided = decision::decide(instance.clone(), request, press.clone()).await;
    let max_chars = instance.mattermost().max_post_chars().await;
    outcome(instance, &press, decided, max_chars)
}

/// Mattermost waits about 30 s for an integration; a press taking longer than this is
/// answered "still being processed" and its outcome posted in the thread when known.
pub const DEFAULT_ANSWER_WITHIN: Duration = Duration::from_secs(15);
