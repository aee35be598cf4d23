//! The kube-runtime controller for `MattermostAccessPlugin`: fetch → validate and build (pure,
//! in `build`) → apply (the supervisor) → status and Events.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Resource, ResourceExt};

use super::build::{Defaults, Problem, Sources, build};
use super::crd::{
    MattermostAccessPlugin, MattermostAccessPluginSpec, MattermostAccessPluginStatus,
    condition_type,
};
use super::supervisor::{Applied, Supervisor};
use crate::instance::{Health, InstanceStatus, identity_health, next_identity_change};

/// Why a reconcile failed (it is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Reading Secrets or writing status failed.
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
    /// The Mattermost client could not be built (bad URL).
    #[error(transparent)]
    Mattermost(#[from] crate::mattermost::MattermostError),
    /// The object has no namespace or uid (should not happen for a namespaced resource).
    #[error("object has no {0}")]
    Missing(&'static str),
}

/// Shared by every reconcile.
pub struct Context {
    /// API client.
    pub client: kube::Client,
    /// The instances.
    pub supervisor: Arc<Supervisor>,
    /// Events.
    pub recorder: Recorder,
    /// Operator-wide settings.
    pub defaults: Defaults,
    /// Told when each object has been reconciled once (part of `/readyz`).
    pub readiness: Arc<super::readiness::Readiness>,
}

/// What the reconcile decided, for the status.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// `spec.suspend` is true.
    Suspended,
    /// The object or its Secrets are not usable; nothing runs.
    Rejected(Vec<Problem>),
    /// Running; `problems` are identity problems of a rejected rotation, with the old
    /// identity still in use.
    Running {
        /// Problems with the new identity, if any.
        problems: Vec<Problem>,
    },
}

/// Reads every referenced Secret and ConfigMap (a missing one maps to `None`).
async fn fetch(
    client: &kube::Client,
    namespace: &str,
    spec: &MattermostAccessPluginSpec,
) -> Result<Sources, kube::Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut out = Sources::default();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    for name in spec.referenced_config_maps() {
        let data = config_maps.get_opt(&name).await?.map(|cm| {
            cm.data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .chain(
                    cm.binary_data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0)),
                )
                .collect::<BTreeMap<_, _>>()
        });
        out.config_maps.insert(name, data);
    }
    for name in spec.referenced_secrets() {
        let data = api.get_opt(&name).await?.map(|s| {
            s.data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .chain(
                    s.string_data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.into_bytes())),
                )
                .collect::<BTreeMap<_, _>>()
        });
        out.secrets.insert(name, data);
    }
    Ok(out)
}

/// Reconciles one object.
pub async fn reconcile(
    cr: Arc<MattermostAccessPlugin>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let namespace = cr.namespace().ok_or(ReconcileError::Missing("namespace"))?;
    let name = cr.name_any();
    let uid = cr.uid().ok_or(ReconcileError::Missing("uid"))?;

    let outcome = if cr.spec.suspend {
        if ctx.supervisor.stop(&uid) {
            tracing::info!(%namespace, %name, "suspended: stopped the instance");
        }
        Outcome::Suspended
    } else {
        let secrets = fetch(&ctx.client, &namespace, &cr.spec).await?;
        match build(
            &namespace,
            &name,
            &cr.spec,
            &secrets,
            &ctx.defaults,
            Utc::now(),
        ) {
            Ok(built) => {
                let applied = ctx.supervisor.apply(&uid, built)?;
                if applied != Applied::Unchanged {
                    tracing::info!(%namespace, %name, ?applied, "instance updated");
                }
                Outcome::Running {
                    problems: Vec::new(),
                }
            }
            Err(rejected)
                if rejected.problems.iter().all(Problem::is_identity)
                    && ctx.supervisor.instance(&uid).is_some() =>
            {
                tracing::warn!(%namespace, %name, problems = ?rejected.problems, "new identity rejected; keeping the last good one");
                Outcome::Running {
                    problems: rejected.problems,
                }
            }
            Err(rejected) => {
                ctx.supervisor.stop(&uid);
                Outcome::Rejected(rejected.problems)
            }
        }
    };

    let instance = ctx
        .supervisor
        .instance(&uid)
        .map(|i| i.status().borrow().clone());
    // Only the leader writes: standby replicas see the same objects but run no watchers.
    if ctx.supervisor.is_leader() {
        let status = desired_status(
            &cr,
            &outcome,
            instance.as_ref(),
            cr.status.as_ref(),
            Utc::now(),
        );
        publish_events(&ctx, &cr, cr.status.as_ref(), &status).await;
        if cr.status.as_ref() != Some(&status) {
            let api: Api<MattermostAccessPlugin> = Api::namespaced(ctx.client.clone(), &namespace);
            let patch = serde_json::json!({ "status": status });
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
    }
    ctx.readiness.reconciled(&uid);
    Ok(match outcome {
        Outcome::Suspended => Action::await_change(),
        // Re-check periodically, and when the certificate is due to expire or to be reported
        // as expiring soon: nothing about the object changes when that happens.
        _ => {
            let now = Utc::now();
            let next = instance
                .as_ref()
                .and_then(|s| Some((s.identity_not_before?, s.identity_expires_at?)))
                .and_then(|(nb, na)| next_identity_change(nb, na, now))
                .and_then(|t| (t - now).to_std().ok())
                .map(|d| d + Duration::from_secs(1));
            let every = Duration::from_secs(300);
            Action::requeue(next.map_or(every, |d| d.min(every)))
        }
    })
}

/// Retries a failed reconcile.
pub fn error_policy(
    cr: Arc<MattermostAccessPlugin>,
    error: &ReconcileError,
    ctx: Arc<Context>,
) -> Action {
    // Tried once: the status (or this log) says what is wrong; readiness need not wait for it.
    if let Some(uid) = cr.uid() {
        ctx.readiness.reconciled(&uid);
    }
    tracing::warn!(namespace = ?cr.namespace(), name = %cr.name_any(), %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

fn time(t: DateTime<Utc>) -> Option<Time> {
    k8s_openapi::jiff::Timestamp::from_second(t.timestamp())
        .ok()
        .map(Time)
}

fn condition(
    type_: &str,
    ok: Option<bool>,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    previous: Option<&MattermostAccessPluginStatus>,
    now: DateTime<Utc>,
) -> Condition {
    let status = match ok {
        Some(true) => "True",
        Some(false) => "False",
        None => "Unknown",
    };
    // Keep the transition time while the status is unchanged, so rewriting the same
    // condition is a no-op and causes no status churn.
    let last_transition_time = previous
        .and_then(|p| p.condition(type_))
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .or_else(|| time(now))
        .expect("now is a valid timestamp");
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: if reason.is_empty() {
            "Unknown".into()
        } else {
            reason.to_string()
        },
        message: message.to_string(),
        observed_generation: generation,
        last_transition_time,
    }
}

fn health_or_unknown(h: &Health, waiting: &str) -> (Option<bool>, String, String) {
    match h.ok {
        None => (None, "Pending".into(), waiting.into()),
        ok => (ok, h.reason.clone(), h.message.clone()),
    }
}

/// The status an object should have. Pure.
pub fn desired_status(
    cr: &MattermostAccessPlugin,
    outcome: &Outcome,
    instance: Option<&InstanceStatus>,
    previous: Option<&MattermostAccessPluginStatus>,
    now: DateTime<Utc>,
) -> MattermostAccessPluginStatus {
    let generation = cr.meta().generation;
    let cond = |t: &str, ok: Option<bool>, reason: &str, message: &str| {
        condition(t, ok, reason, message, generation, previous, now)
    };
    let mut status = MattermostAccessPluginStatus {
        observed_generation: generation,
        approval_policy: Some(cr.spec.approval_policy()),
        ..Default::default()
    };
    let callback = match &cr.spec.callback {
        None => cond(
            condition_type::CALLBACK_READY,
            Some(true),
            "ButtonsDisabled",
            "no callback configured: posts carry no buttons",
        ),
        Some(cb) => {
            let policy = cr.spec.button_policy();
            // Upgrading from 0.1, where an empty approvers list let anyone who could see a
            // button press it: say what changed where `kubectl describe` shows it.
            let (reason, upgrade) = if policy.is_default() {
                (
                    "ServingChannelMembers",
                    "; since 0.2.0 an empty approvers list no longer lets anyone decide: set approvers or approverChannels to choose who does",
                )
            } else {
                ("Serving", "")
            };
            cond(
                condition_type::CALLBACK_READY,
                Some(true),
                reason,
                &format!(
                    "buttons call {}/v1/actions/{}/{}; {}{upgrade}",
                    cb.public_url.trim_end_matches('/'),
                    cr.namespace().unwrap_or_default(),
                    cr.name_any(),
                    policy.describe()
                ),
            )
        }
    };
    match outcome {
        Outcome::Suspended => {
            let msg = "spec.suspend is true: nothing is watched or posted";
            status.conditions = vec![
                cond(condition_type::READY, Some(false), "Suspended", msg),
                cond(condition_type::TELEPORT_CONNECTED, None, "Suspended", msg),
                cond(condition_type::MATTERMOST_REACHABLE, None, "Suspended", msg),
                cond(condition_type::IDENTITY_VALID, None, "Suspended", msg),
                cond(condition_type::CALLBACK_READY, None, "Suspended", msg),
            ];
        }
        Outcome::Rejected(problems) => {
            let first = problems.first();
            let all = problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            let identity = problems.iter().find(|p| p.is_identity());
            status.conditions = vec![
                cond(
                    condition_type::READY,
                    Some(false),
                    first.map(Problem::reason).unwrap_or("Invalid"),
                    &all,
                ),
                cond(
                    condition_type::TELEPORT_CONNECTED,
                    None,
                    "NotStarted",
                    "waiting for valid settings",
                ),
                cond(
                    condition_type::MATTERMOST_REACHABLE,
                    None,
                    "NotStarted",
                    "waiting for valid settings",
                ),
                match identity {
                    Some(p) => cond(
                        condition_type::IDENTITY_VALID,
                        Some(false),
                        p.reason(),
                        &p.to_string(),
                    ),
                    None => cond(
                        condition_type::IDENTITY_VALID,
                        None,
                        "NotChecked",
                        "the identity Secret could not be read",
                    ),
                },
                callback,
            ];
        }
        Outcome::Running { problems } => {
            let s = instance.cloned().unwrap_or_default();
            let (t_ok, t_reason, t_msg) = health_or_unknown(&s.teleport, "connecting to Teleport");
            let (m_ok, mut m_reason, mut m_msg) =
                health_or_unknown(&s.mattermost, "checking Mattermost");
            // Posting works, but not quite as configured: the admin sees why there.
            if let (Some(true), Some((reason, message))) = (m_ok, &s.priority_problem) {
                m_reason = reason.clone();
                m_msg = format!("{m_msg}; {message}");
            }
            let identity = match problems.first() {
                Some(p) => cond(
                    condition_type::IDENTITY_VALID,
                    Some(false),
                    p.reason(),
                    &format!(
                        "the updated identity Secret was rejected ({p}); still using the previous certificate{}",
                        s.identity_expires_at
                            .map(|t| format!(", valid until {}", t.to_rfc3339()))
                            .unwrap_or_default()
                    ),
                ),
                None => {
                    // Re-judged at every reconcile: an identity goes from valid to expiring to
                    // expired with no event at all.
                    let health = match (s.identity_not_before, s.identity_expires_at) {
                        (Some(nb), Some(na)) => identity_health(&s.identity_subject, nb, na, now),
                        _ => s.identity.clone(),
                    };
                    let (ok, reason, msg) = health_or_unknown(&health, "checking the identity");
                    cond(condition_type::IDENTITY_VALID, ok, &reason, &msg)
                }
            };
            let ready = if t_ok == Some(true) && m_ok == Some(true) && problems.is_empty() {
                cond(
                    condition_type::READY,
                    Some(true),
                    "Running",
                    "watching Teleport and posting to Mattermost",
                )
            } else if t_ok == Some(false) {
                cond(
                    condition_type::READY,
                    Some(false),
                    &format!("Teleport{t_reason}"),
                    &t_msg,
                )
            } else if m_ok == Some(false) {
                cond(
                    condition_type::READY,
                    Some(false),
                    &format!("Mattermost{m_reason}"),
                    &m_msg,
                )
            } else if let Some(p) = problems.first() {
                cond(
                    condition_type::READY,
                    Some(false),
                    p.reason(),
                    &identity.message,
                )
            } else {
                cond(
                    condition_type::READY,
                    None,
                    "Starting",
                    "connecting to Teleport and Mattermost",
                )
            };
            status.conditions = vec![
                ready,
                cond(condition_type::TELEPORT_CONNECTED, t_ok, &t_reason, &t_msg),
                cond(
                    condition_type::MATTERMOST_REACHABLE,
                    m_ok,
                    &m_reason,
                    &m_msg,
                ),
                identity,
                callback,
            ];
            status.teleport_cluster_name = (!s.cluster_name.is_empty()).then_some(s.cluster_name);
            status.teleport_version =
                (!s.teleport_version.is_empty()).then_some(s.teleport_version);
            status.identity_expires_at = s.identity_expires_at.and_then(time);
            status.pending_requests = Some(s.pending_requests as i64);
            status.last_event_time = s.last_event_time.and_then(time);
            status.last_press_problem = s.press_problem;
            status.access_monitoring_rules = rules_status(&s.access_monitoring);
        }
    }
    status
}

/// The status field for access monitoring rules; none until the first watch said.
fn rules_status(
    report: &crate::rule_routing::RulesReport,
) -> Option<super::crd::AccessMonitoringRulesStatus> {
    (!report.reason.is_empty()).then(|| super::crd::AccessMonitoringRulesStatus {
        reason: report.reason.clone(),
        message: report.message.clone(),
        broken_rules: report
            .broken
            .iter()
            .map(|b| super::crd::BrokenRuleStatus {
                name: b.name.clone(),
                revision: b.revision.clone(),
                error: b.error.clone(),
            })
            .collect(),
    })
}

/// The broken rules in `next` that `previous` did not list at the same revision: each gets
/// one `AccessMonitoringRuleBroken` Warning. Pure.
pub fn newly_broken_rules<'a>(
    previous: Option<&MattermostAccessPluginStatus>,
    next: &'a MattermostAccessPluginStatus,
) -> Vec<&'a super::crd::BrokenRuleStatus> {
    let known = previous
        .and_then(|p| p.access_monitoring_rules.as_ref())
        .map(|r| r.broken_rules.as_slice())
        .unwrap_or_default();
    next.access_monitoring_rules
        .as_ref()
        .map(|r| r.broken_rules.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|b| {
            !known
                .iter()
                .any(|k| k.name == b.name && k.revision == b.revision && k.error == b.error)
        })
        .collect()
}

/// Emits an Event for each condition whose status or reason changed.
async fn publish_events(
    ctx: &Context,
    cr: &MattermostAccessPlugin,
    previous: Option<&MattermostAccessPluginStatus>,
    next: &MattermostAccessPluginStatus,
) {
    let reference = cr.object_ref(&());
    for broken in newly_broken_rules(previous, next) {
        let event = Event {
            type_: EventType::Warning,
            reason: "AccessMonitoringRuleBroken".into(),
            note: Some(
                format!(
                    "access monitoring rule {:?} (revision {}) is skipped, the other rules still apply: {}",
                    broken.name, broken.revision, broken.error
                )
                .chars()
                .take(1000)
                .collect(),
            ),
            action: "RouteRequests".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            tracing::warn!(error = %e, "could not publish an Event");
        }
    }
    for c in &next.conditions {
        let before = previous.and_then(|p| p.condition(&c.type_));
        if before.is_some_and(|b| b.status == c.status && b.reason == c.reason)
            || c.status == "Unknown"
        {
            continue;
        }
        // An identity running out is worth a Warning while it still works.
        let warning = c.status == "False" || c.reason == "ExpiresSoon";
        if !warning && c.type_ != condition_type::READY {
            continue; // one Normal event (Ready) is enough for the good news
        }
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: c.reason.chars().take(128).collect(),
            note: Some(
                format!("{}: {}", c.type_, c.message)
                    .chars()
                    .take(1000)
                    .collect(),
            ),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            tracing::warn!(error = %e, "could not publish an Event");
        }
    }
}

#[cfg(test)]
mod tests {
    //! The controller's API calls against a `tower-test` mock of the apiserver.

    use std::sync::Mutex;

    use http::{Request, Response, StatusCode};
    use kube::client::Body;
    use kube::runtime::events::Reporter;

    use super::*;
    use crate::callback::Registry;

    fn object() -> MattermostAccessPlugin {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "accessplugins.dev/v1alpha1",
            "kind": "MattermostAccessPlugin",
            "metadata": {"name": "platform", "namespace": "ns", "uid": "u-1", "generation": 3},
            "spec": {
                "teleport": {"address": "teleport.example.com:3025",
                             "identitySecretRef": {"name": "identity"}},
                "mattermost": {"url": "https://mm.example.com", "team": "eng",
                               "channel": "access", "tokenSecretRef": {"name": "token"}}
            }
        }))
        .unwrap()
    }

    /// Answers the calls one reconcile makes when no Secret exists, recording them.
    async fn apiserver(
        mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
        calls: Arc<Mutex<Vec<(String, String, String)>>>,
    ) {
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().to_string();
            let path = request.uri().path().to_string();
            let body = request.into_body().collect_bytes().await.unwrap();
            calls.lock().unwrap().push((
                method.clone(),
                path.clone(),
                String::from_utf8_lossy(&body).into_owned(),
            ));
            let (status, reply) = if method == "GET" && path.contains("/secrets/") {
                (
                    StatusCode::NOT_FOUND,
                    serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                       "reason": "NotFound", "code": 404, "message": "not found"}),
                )
            } else if method == "PATCH" && path.ends_with("/status") {
                let mut cr = serde_json::to_value(object()).unwrap();
                let patch: serde_json::Value = serde_json::from_slice(&body).unwrap();
                cr["status"] = patch["status"].clone();
                (StatusCode::OK, cr)
            } else {
                // Events: echo the body back as created.
                (
                    StatusCode::CREATED,
                    serde_json::from_slice(&body).unwrap_or_default(),
                )
            };
            send.send_response(
                Response::builder()
                    .status(status)
                    .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                    .unwrap(),
            );
        }
    }

    #[tokio::test]
    async fn missing_secrets_give_ready_false_a_status_patch_and_a_warning_event() {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let calls = Arc::new(Mutex::new(Vec::new()));
        let server = tokio::spawn(apiserver(handle, calls.clone()));
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let supervisor = Arc::new(Supervisor::new(Arc::new(Registry::default()), tx));
        supervisor.set_leader(true);
        let ctx = Arc::new(Context {
            client: client.clone(),
            supervisor,
            recorder: Recorder::new(
                client,
                Reporter {
                    controller: "test".into(),
                    instance: None,
                },
            ),
            defaults: Defaults::default(),
            readiness: Arc::default(),
        });

        let action = reconcile(Arc::new(object()), ctx.clone())
            .await
            .expect("reconcile");
        assert_eq!(
            ctx.readiness
                .check([object().metadata.uid.as_deref().unwrap()]),
            Err(crate::operator::readiness::NotReady::CallbackNotListening(
                "not started".into()
            )),
            "the object counts as reconciled: only the callback server is missing"
        );
        assert_eq!(action, Action::requeue(Duration::from_secs(300)));
        server.abort();

        let calls = calls.lock().unwrap().clone();
        let gets: Vec<&str> = calls
            .iter()
            .filter(|(m, _, _)| m == "GET")
            .map(|(_, p, _)| p.as_str())
            .collect();
        assert_eq!(
            gets,
            vec![
                "/api/v1/namespaces/ns/secrets/identity",
                "/api/v1/namespaces/ns/secrets/token"
            ],
            "reads exactly the referenced Secrets"
        );
        let (_, path, body) = calls
            .iter()
            .find(|(m, p, _)| m == "PATCH" && p.ends_with("/status"))
            .expect("a status patch");
        assert_eq!(
            path,
            "/apis/accessplugins.dev/v1alpha1/namespaces/ns/mattermostaccessplugins/platform/status"
        );
        let patch: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(patch["status"]["observedGeneration"], 3);
        let ready = patch["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["status"], "False");
        assert_eq!(ready["reason"], "SecretMissing");
        assert!(
            ready["message"]
                .as_str()
                .unwrap()
                .contains("Secret ns/identity does not exist")
        );
        let event = calls
            .iter()
            .find(|(m, p, _)| m == "POST" && p.contains("/events"))
            .expect("an Event");
        assert!(
            event.2.contains("SecretMissing") && event.2.contains("Warning"),
            "{}",
            event.2
        );
    }

    #[test]
    fn a_refused_priority_shows_in_mattermost_reachable_and_ready_stays_true() {
        let healthy = InstanceStatus {
            teleport: crate::instance::Health::ok("Connected", "watching"),
            mattermost: crate::instance::Health::ok("Reachable", "posting as @bot to eng/access"),
            priority_problem: Some((
                "AcknowledgementUnlicensed".into(),
                "requestedAck needs a licensed Mattermost".into(),
            )),
            ..InstanceStatus::default()
        };
        let status = desired_status(
            &object(),
            &Outcome::Running { problems: vec![] },
            Some(&healthy),
            None,
            Utc::now(),
        );
        let reachable = status
            .condition(condition_type::MATTERMOST_REACHABLE)
            .unwrap();
        assert_eq!(reachable.status, "True");
        assert_eq!(reachable.reason, "AcknowledgementUnlicensed");
        assert!(
            reachable
                .message
                .starts_with("posting as @bot to eng/access; requestedAck"),
            "{}",
            reachable.message
        );
        assert_eq!(
            status.condition(condition_type::READY).unwrap().status,
            "True"
        );
    }
}
