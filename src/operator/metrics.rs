//! `/metrics` in the Prometheus text format, read at scrape time from the running instances,
//! plus `/healthz` and `/readyz`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use chrono::Utc;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use kube::ResourceExt as _;
use kube::runtime::reflector::Store;

use super::crd::{MattermostAccessPlugin, condition_type};
use super::readiness::{NotReady, Readiness};
use super::supervisor::Supervisor;
use crate::callback::Registry;

/// Shared state of the probe server.
#[derive(Debug)]
pub struct Probes {
    /// What `/readyz` decides from.
    pub readiness: Arc<Readiness>,
    /// The object caches, once the watches are set up (their UIDs must all be reconciled).
    pub(crate) stores: OnceLock<Vec<Store<MattermostAccessPlugin>>>,
    pub(crate) supervisor: Arc<Supervisor>,
    pub(crate) registry: Arc<Registry>,
}

impl Probes {
    /// `/readyz`'s verdict now.
    pub fn ready(&self) -> Result<(), NotReady> {
        let cached: Vec<String> = self
            .stores
            .get()
            .map(|stores| {
                stores
                    .iter()
                    .flat_map(|s| s.state())
                    .filter_map(|cr| cr.uid())
                    .collect()
            })
            .unwrap_or_default();
        self.readiness.check(cached.iter().map(String::as_str))
    }
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("instances", &self.len())
            .finish()
    }
}

type Labels = Vec<(&'static str, String)>;
/// One family's samples: labels and value.
type Rows = Vec<(Labels, f64)>;

fn family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: &[(Labels, f64)],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in rows {
        let encoder = metric.encode_family(labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(*value as u64).encode(encoder)?,
            _ => ConstGauge::new(*value).encode(encoder)?,
        }
    }
    Ok(())
}

/// Ready (1) or not (0), and suspended (1) or not, per cached object: what `kubectl get mmap`
/// shows, for an alert that does not depend on the leader's own view.
fn object_rows(objects: &[std::sync::Arc<MattermostAccessPlugin>]) -> (Rows, Rows) {
    let mut ready = Vec::new();
    let mut suspended = Vec::new();
    for cr in objects {
        let labels: Labels = vec![
            ("namespace", cr.namespace().unwrap_or_default()),
            ("name", cr.name_any()),
        ];
        let is_ready = cr
            .status
            .as_ref()
            .and_then(|s| s.condition(condition_type::READY))
            .is_some_and(|c| c.status == "True");
        ready.push((labels.clone(), f64::from(u8::from(is_ready))));
        suspended.push((labels, f64::from(u8::from(cr.spec.suspend))));
    }
    (ready, suspended)
}

impl prometheus_client::collector::Collector for Probes {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let instances = self.supervisor.instances();
        let leader = self.supervisor.is_leader();
        let labels = |i: &crate::instance::Instance| -> Labels {
            let id = &i.settings().instance;
            vec![
                ("namespace", id.namespace.clone()),
                ("name", id.name.clone()),
            ]
        };
        let counter = |pick: &dyn Fn(&crate::instance::Instance) -> u64| -> Vec<(Labels, f64)> {
            instances
                .iter()
                .map(|i| (labels(i), pick(i) as f64))
                .collect()
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        family(
            &mut encoder,
            "teleport_mattermost_requests_seen",
            "Access request events and resync items handled.",
            MetricType::Counter,
            &counter(&|i| load(&i.counters.requests_seen)),
        )?;
        family(
            &mut encoder,
            "teleport_mattermost_posts",
            "Posts created in Mattermost (one per request and channel).",
            MetricType::Counter,
            &counter(&|i| load(&i.counters.posts)),
        )?;
        family(
            &mut encoder,
            "teleport_mattermost_posts_adopted",
            "Posts found after a crash and adopted instead of posting again.",
            MetricType::Counter,
            &counter(&|i| load(&i.counters.adopted)),
        )?;
        family(
            &mut encoder,
            "teleport_mattermost_replies",
            "Review replies posted in threads.",
            MetricType::Counter,
            &counter(&|i| load(&i.counters.replies)),
        )?;
        family(
            &mut encoder,
            "teleport_mattermost_updates",
            "Posts edited on resolution or expiry.",
            MetricType::Counter,
            &counter(&|i| load(&i.counters.updates)),
        )?;
        family(
            &mut encoder,
            "teleport_mattermost_requester_messages",
            "Direct messages sent to requesters about their requests.",
            MetricType::Counter,
            &counter(&|i| load(&i.counters.requester_notes)),
        )?;
        family(
            &mut encoder,
            "teleport_mattermost_requester_unknown",
            "Requests whose requester has no Mattermost account the plugin could find.",
            MetricType::Counter,
            &counter(&|i| load(&i.counters.requester_unknown)),
        )?;
        family(
            &mut encoder,
            "teleport_mattermost_reminders",
            "Reminder replies posted in the threads of requests left unreviewed.",
            MetricType::Counter,
            &counter(&|i| load(&i.counters.reminders)),
        )?;
        family(
            &mut encoder,
            "teleport_mattermost_suggestions_dropped",
            "Suggested reviewers ignored because they name no person (a team/channel, an empty or malformed entry).",
            MetricType::Counter,
            &counter(&|i| load(&i.counters.suggestions_dropped)),
        )?;
        family(
            &mut encoder,
            "teleport_mattermost_jobs_done",
            "Access request events and resync items handled to completion.",
            MetricType::Counter,
            &counter(&|i| load(&i.counters.jobs_done)),
        )?;
        family(
            &mut encoder,
            "teleport_mattermost_job_retries",
            "Request jobs that failed (a Teleport or Mattermost call) and will be retried.",
            MetricType::Counter,
            &counter(&|i| load(&i.counters.job_retries)),
        )?;
        family(
            &mut encoder,
            "teleport_mattermost_watch_connects",
            "Teleport watch (re)connections.",
            MetricType::Counter,
            &counter(&|i| load(&i.counters.watch_connects)),
        )?;
        family(
            &mut encoder,
            "teleport_mattermost_mattermost_retries",
            "Mattermost calls retried (429, 5xx, transport).",
            MetricType::Counter,
            &counter(&|i| i.mattermost().stats().retries),
        )?;
        family(
            &mut encoder,
            "teleport_mattermost_mattermost_rate_limited",
            "Mattermost answers with 429.",
            MetricType::Counter,
            &counter(&|i| i.mattermost().stats().rate_limited),
        )?;
        let learned: Vec<(Labels, f64)> = instances
            .iter()
            .filter_map(|i| Some((labels(i), i.mattermost().stats().learned_rate?)))
            .collect();
        family(
            &mut encoder,
            "teleport_mattermost_mattermost_rate_learned",
            "The Mattermost server's rate limit as learned from its X-RateLimit headers, in calls per second.",
            MetricType::Gauge,
            &learned,
        )?;
        family(
            &mut encoder,
            "teleport_mattermost_mattermost_rate_ceiling",
            "The configured ceiling on Mattermost calls (spec.mattermost.rateLimit.perSecond; 0 = no client-side limit).",
            MetricType::Gauge,
            &counter(&|i| u64::from(i.settings().mattermost.rate_limit.per_second)),
        )?;
        let buckets: Vec<_> = instances
            .iter()
            .filter_map(|i| Some((labels(i), i.mattermost().stats().bucket?)))
            .collect();
        let (limits, remaining): (Vec<_>, Vec<_>) = buckets
            .into_iter()
            .map(|(l, (limit, left))| ((l.clone(), f64::from(limit)), (l, f64::from(left))))
            .unzip();
        family(
            &mut encoder,
            "teleport_mattermost_mattermost_rate_limit",
            "X-RateLimit-Limit of the Mattermost server: calls its full bucket allows at once.",
            MetricType::Gauge,
            &limits,
        )?;
        family(
            &mut encoder,
            "teleport_mattermost_mattermost_rate_remaining",
            "X-RateLimit-Remaining of the Mattermost server's last answer (the limit once its reset has passed).",
            MetricType::Gauge,
            &remaining,
        )?;
        {
            let mut metric = encoder.encode_descriptor(
                "teleport_mattermost_post_duration_seconds",
                "Seconds a Mattermost post took to create, client-side pacing and retries included.",
                None,
                MetricType::Histogram,
            )?;
            for i in &instances {
                i.mattermost()
                    .posting_seconds()
                    .encode(metric.encode_family(&labels(i))?)?;
            }
        }
        let now = Utc::now();
        let expiry: Vec<(Labels, f64)> = instances
            .iter()
            .filter_map(|i| {
                let status = i.status().borrow().clone();
                status
                    .identity_expires_at
                    .map(|t| (labels(i), (t - now).num_seconds() as f64))
            })
            .collect();
        family(
            &mut encoder,
            "teleport_mattermost_identity_expiry_seconds",
            "Seconds until the Teleport identity certificate expires (negative once expired).",
            MetricType::Gauge,
            &expiry,
        )?;
        let lifetime: Vec<(Labels, f64)> = instances
            .iter()
            .filter_map(|i| {
                let status = i.status().borrow().clone();
                let lifetime = status.identity_expires_at? - status.identity_not_before?;
                Some((labels(i), lifetime.num_seconds() as f64))
            })
            .collect();
        family(
            &mut encoder,
            "teleport_mattermost_identity_lifetime_seconds",
            "Validity period of the Teleport identity certificate (notAfter - notBefore), in seconds.",
            MetricType::Gauge,
            &lifetime,
        )?;
        // What the bridge reports is current only where it runs: on the leader. A follower's
        // last view (from before it lost the lease) would be stale.
        let bridge_rows = |pick: &dyn Fn(&crate::instance::InstanceStatus) -> Option<f64>| {
            instances
                .iter()
                .filter(|_| leader)
                .filter_map(|i| Some((labels(i), pick(&i.status().borrow())?)))
                .collect::<Vec<_>>()
        };
        family(
            &mut encoder,
            "teleport_mattermost_teleport_connected",
            "1 while the leader's Teleport watch is up for the object, 0 while it cannot connect (leader only).",
            MetricType::Gauge,
            &bridge_rows(&|s| s.teleport.ok.map(|ok| f64::from(u8::from(ok)))),
        )?;
        let now = chrono::Utc::now();
        family(
            &mut encoder,
            "teleport_mattermost_oldest_unposted_seconds",
            "How long the oldest pending request not yet posted everywhere it goes has waited, 0 when none (leader only).",
            MetricType::Gauge,
            &bridge_rows(&|s| {
                Some(
                    s.oldest_unposted
                        .map_or(0.0, |t| (now - t).num_milliseconds().max(0) as f64 / 1000.0),
                )
            }),
        )?;
        family(
            &mut encoder,
            "teleport_mattermost_requests_unposted",
            "Pending requests not yet posted everywhere they go (leader only).",
            MetricType::Gauge,
            &bridge_rows(&|s| Some(s.unposted_requests as f64)),
        )?;
        family(
            &mut encoder,
            "teleport_mattermost_requests_pending",
            "Pending access requests the leader knows of for the object (leader only).",
            MetricType::Gauge,
            &bridge_rows(&|s| Some(s.pending_requests as f64)),
        )?;
        let objects: Vec<_> = self
            .stores
            .get()
            .map(|stores| stores.iter().flat_map(|s| s.state()).collect())
            .unwrap_or_default();
        let (ready, suspended) = object_rows(&objects);
        family(
            &mut encoder,
            "teleport_mattermost_ready",
            "1 while the object's Ready condition is True, 0 otherwise (every replica reports every object).",
            MetricType::Gauge,
            &ready,
        )?;
        family(
            &mut encoder,
            "teleport_mattermost_suspended",
            "1 while the object has spec.suspend set.",
            MetricType::Gauge,
            &suspended,
        )?;
        let outcomes = &self.registry.outcomes;
        let rows: Vec<(Labels, f64)> = [
            ("resolved", &outcomes.resolved),
            ("refused", &outcomes.refused),
            ("malformed", &outcomes.malformed),
            ("unauthorized", &outcomes.unauthorized),
            ("prompted", &outcomes.prompted),
        ]
        .into_iter()
        .map(|(o, c)| (vec![("outcome", o.to_string())], load(c) as f64))
        .collect();
        family(
            &mut encoder,
            "teleport_mattermost_callbacks",
            "Button presses by outcome.",
            MetricType::Counter,
            &rows,
        )?;
        family(
            &mut encoder,
            "teleport_mattermost_leader",
            "1 while this replica holds the lease and runs the watchers.",
            MetricType::Gauge,
            &[(vec![], if leader { 1.0 } else { 0.0 })],
        )?;
        Ok(())
    }
}

/// The probe router: `/healthz`, `/readyz`, `/metrics`.
pub fn router(probes: Arc<Probes>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(p): State<Arc<Probes>>| async move {
                match p.ready() {
                    Ok(()) => (StatusCode::OK, "ready".to_string()),
                    Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why.to_string()),
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(p): State<Arc<Probes>>| async move {
                let mut registry = prometheus_client::registry::Registry::default();
                registry.register_collector(Box::new(p.clone()));
                let mut body = String::new();
                match prometheus_client::encoding::text::encode(&mut body, &registry) {
                    Ok(()) => (
                        StatusCode::OK,
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    )
                        .into_response(),
                    Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                }
            }),
        )
        .with_state(probes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(name: &str, suspend: bool, ready: Option<&str>) -> Arc<MattermostAccessPlugin> {
        let status = ready.map_or(String::new(), |r| {
            format!(
                "status:\n  conditions:\n  - {{type: Ready, status: \"{r}\", reason: X, message: x, lastTransitionTime: \"2026-12-01T00:00:00Z\"}}\n"
            )
        });
        let yaml = format!(
            r#"apiVersion: accessplugins.dev/v1alpha1
kind: MattermostAccessPlugin
metadata: {{name: {name}, namespace: team-a}}
spec:
  suspend: {suspend}
  teleport: {{address: "teleport.example.com:3025", identitySecretRef: {{name: identity}}}}
  mattermost: {{url: "https://mm.example.com", team: eng, channel: access, tokenSecretRef: {{name: token}}}}
{status}"#
        );
        Arc::new(serde_yaml_ng::from_str(&yaml).expect("object"))
    }

    #[test]
    fn ready_is_one_only_for_a_true_ready_condition_and_suspension_is_reported_apart() {
        let objects = [
            object("ready", false, Some("True")),
            object("failing", false, Some("False")),
            object("new", false, None),
            object("paused", true, Some("False")),
        ];
        let (ready, suspended) = object_rows(&objects);
        let value = |rows: &[(Labels, f64)], name: &str| {
            rows.iter()
                .find(|(l, _)| l.contains(&("name", name.to_string())))
                .map(|(_, v)| *v)
        };
        assert_eq!(value(&ready, "ready"), Some(1.0));
        assert_eq!(value(&ready, "failing"), Some(0.0));
        assert_eq!(
            value(&ready, "new"),
            Some(0.0),
            "not reconciled yet is not Ready"
        );
        assert_eq!(value(&ready, "paused"), Some(0.0));
        assert_eq!(value(&suspended, "paused"), Some(1.0));
        assert_eq!(value(&suspended, "ready"), Some(0.0));
        assert!(
            ready
                .iter()
                .all(|(l, _)| l.contains(&("namespace", "team-a".to_string())))
        );
    }
}
