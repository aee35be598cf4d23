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

use super::crd::MattermostAccessPlugin;
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

impl prometheus_client::collector::Collector for Probes {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let instances = self.supervisor.instances();
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
            &[(
                vec![],
                if self.supervisor.is_leader() {
                    1.0
                } else {
                    0.0
                },
            )],
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
