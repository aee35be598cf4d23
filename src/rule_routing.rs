//! Access monitoring rules at work: the current rule set, where each request goes, and what
//! the status says about it.
//!
//! The bridge feeds it (a listing after every watch INIT, then PUT and DELETE events); the
//! post planner asks it where a request goes. The rule set is published through an `ArcSwap`,
//! so routing never waits for an update. Each request is routed once: the decision is kept per
//! request id (10,000 requests, 24 hours), so traits and labels are read at most once per
//! request, and a rule changed after a request was routed does not move that request's posts
//! (a restart routes pending requests again with the rules of the time).
//!
//! Rules decide where posts go, never who may press: the button policy is applied to every
//! destination afterwards, whatever chose it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono_tz::Tz;

use crate::access_monitoring::{Change, MapVar, RequestFacts, Rule, RuleError, RuleSet};
use crate::request::AccessRequest;
use crate::teleport::client::TeleportClient;
use crate::teleport::monitoring::MonitoringError;

/// Requests whose routing is remembered at most.
const DECISIONS: u64 = 10_000;
/// How long a routing is remembered.
const DECISION_TTL: Duration = Duration::from_secs(24 * 3600);

/// Status reasons of the `accessMonitoringRules` field.
pub mod reason {
    /// Rules are read and route requests (possibly none).
    pub const RULES_ACTIVE: &str = "RulesActive";
    /// At least one rule addressed to the plugin is skipped because its condition is broken.
    pub const RULE_BROKEN: &str = "RuleBroken";
    /// The Teleport server has no access monitoring rules (before v15).
    pub const NOT_SUPPORTED: &str = "NotSupported";
    /// The plugin's role may not list the rules.
    pub const PERMISSION_DENIED: &str = "PermissionDenied";
    /// Rules apply, but traits or labels a condition reads could not be read.
    pub const FACTS_UNAVAILABLE: &str = "FactsUnavailable";
}

/// Whether rules are in use on this connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Not known yet (no watch so far).
    Unknown,
    /// Rules are listed and followed.
    Active,
    /// The server has none: the message says why we think so.
    NotSupported(String),
    /// The role may not list them: the typed error's text.
    PermissionDenied(String),
}

/// A broken rule, as the status lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenRule {
    /// The rule's name.
    pub name: String,
    /// The rule's revision when it was found broken.
    pub revision: String,
    /// What is wrong, with the position in the condition.
    pub error: String,
}

/// What the status says about access monitoring rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RulesReport {
    /// One of [`reason`]'s constants; empty until known.
    pub reason: String,
    /// For an admin.
    pub message: String,
    /// Rules skipped because their condition is broken.
    pub broken: Vec<BrokenRule>,
}

/// The report for a mode, a rule set and a facts problem. Pure.
pub fn report(
    mode: &Mode,
    rules: &RuleSet,
    revisions: &BTreeMap<String, String>,
    facts_problem: Option<&str>,
) -> RulesReport {
    let broken: Vec<BrokenRule> = rules
        .broken()
        .map(|e| BrokenRule {
            name: e.rule.clone(),
            revision: revisions.get(&e.rule).cloned().unwrap_or_default(),
            error: e.error.to_string(),
        })
        .collect();
    let (reason, message) = match mode {
        Mode::Unknown => (String::new(), String::new()),
        Mode::NotSupported(why) => (
            reason::NOT_SUPPORTED.to_owned(),
            format!(
                "this Teleport server has no access monitoring rules (they came in v15): requests go to recipients, roleToRecipients and suggested reviewers ({why})"
            ),
        ),
        Mode::PermissionDenied(why) => (reason::PERMISSION_DENIED.to_owned(), why.clone()),
        Mode::Active => {
            let active = format!(
                "{} rule(s) for plugin name {:?} route requests (timezone {})",
                rules.len(),
                rules.plugin_name(),
                rules.timezone()
            );
            if !broken.is_empty() {
                let names: Vec<&str> = broken.iter().map(|b| b.name.as_str()).collect();
                (
                    reason::RULE_BROKEN.to_owned(),
                    format!(
                        "{active}; skipped because their condition is broken: {} (see brokenRules; fix them with tctl edit)",
                        names.join(", ")
                    ),
                )
            } else if let Some(problem) = facts_problem {
                (
                    reason::FACTS_UNAVAILABLE.to_owned(),
                    format!("{active}; {problem}"),
                )
            } else {
                (reason::RULES_ACTIVE.to_owned(), active)
            }
        }
    };
    RulesReport {
        reason,
        message,
        broken,
    }
}

/// Why a request could not be routed now (retry the job).
#[derive(Debug, thiserror::Error)]
#[error("could not read what access monitoring rules need for request {request}: {source}")]
pub struct RouteError {
    /// The request.
    pub request: String,
    /// The failed call (shared: concurrent jobs of one request wait for one attempt).
    #[source]
    pub source: Arc<MonitoringError>,
}

type Decision = Arc<Option<BTreeSet<String>>>;

/// Where the rules send one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// The rules' recipients, or `None` when no rule gave any.
    pub recipients: Option<BTreeSet<String>>,
    /// Routing it changed what [`RuleRouting::report`] says (traits or labels became
    /// unreadable, or readable again): the status should be published.
    pub report_changed: bool,
}

/// The rules of one instance, and the requests they routed.
pub struct RuleRouting {
    rules: ArcSwap<RuleSet>,
    mode: Mutex<Mode>,
    /// Rule name → revision, for the broken-rule list.
    revisions: Mutex<BTreeMap<String, String>>,
    facts_problem: Mutex<Option<String>>,
    decisions: moka::future::Cache<String, Decision>,
}

impl std::fmt::Debug for RuleRouting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleRouting")
            .field("rules", &self.rules.load().len())
            .finish_non_exhaustive()
    }
}

impl RuleRouting {
    /// No rules yet, for rules addressed to `plugin_name`, with times read in `timezone`.
    pub fn new(plugin_name: &str, timezone: Tz) -> Self {
        Self {
            rules: ArcSwap::from_pointee(RuleSet::new(plugin_name, timezone)),
            mode: Mutex::new(Mode::Unknown),
            revisions: Mutex::default(),
            facts_problem: Mutex::default(),
            decisions: moka::future::Cache::builder()
                .max_capacity(DECISIONS)
                .time_to_live(DECISION_TTL)
                .build(),
        }
    }

    /// The current rule set.
    pub fn rules(&self) -> Arc<RuleSet> {
        self.rules.load_full()
    }

    /// What the status says now.
    pub fn report(&self) -> RulesReport {
        let mode = self.mode.lock().expect("mode lock").clone();
        let revisions = self.revisions.lock().expect("revisions lock").clone();
        let facts = self.facts_problem.lock().expect("facts lock").clone();
        report(&mode, &self.rules.load(), &revisions, facts.as_deref())
    }

    /// Rules are off on this connection: the rule set empties (requests route as without
    /// rules).
    pub fn disable(&self, mode: Mode) {
        let current = self.rules.load();
        self.rules.store(Arc::new(RuleSet::new(
            current.plugin_name(),
            current.timezone(),
        )));
        *self.mode.lock().expect("mode lock") = mode;
    }

    /// A fresh listing (after every watch INIT): returns the broken rules not reported before.
    pub fn replace_all(&self, rules: Vec<Rule>) -> Vec<RuleError> {
        {
            let mut revisions = self.revisions.lock().expect("revisions lock");
            revisions.clear();
            revisions.extend(rules.iter().map(|r| (r.name.clone(), r.revision.clone())));
        }
        let mut next = RuleSet::clone(&self.rules.load());
        let errors = next.replace_all(rules);
        self.rules.store(Arc::new(next));
        *self.mode.lock().expect("mode lock") = Mode::Active;
        errors
    }

    /// A PUT event.
    pub fn upsert(&self, rule: Rule) -> Result<Change, RuleError> {
        self.revisions
            .lock()
            .expect("revisions lock")
            .insert(rule.name.clone(), rule.revision.clone());
        let mut next = RuleSet::clone(&self.rules.load());
        let result = next.upsert(rule);
        self.rules.store(Arc::new(next));
        result
    }

    /// A DELETE event.
    pub fn remove(&self, name: &str) -> Change {
        self.revisions.lock().expect("revisions lock").remove(name);
        let mut next = RuleSet::clone(&self.rules.load());
        let change = next.remove(name);
        self.rules.store(Arc::new(next));
        change
    }

    /// The recipients the rules give `request`, or `None` when none do (then roleToRecipients
    /// and the suggested reviewers apply). Decided once per request.
    pub async fn recipients(
        &self,
        teleport: &TeleportClient,
        request: &AccessRequest,
    ) -> Result<Routed, RouteError> {
        if let Some(decision) = self.decisions.get(&request.id).await {
            return Ok(Routed {
                recipients: decision.as_ref().clone(),
                report_changed: false,
            });
        }
        let report_changed = std::sync::atomic::AtomicBool::new(false);
        let decision = self
            .decisions
            .try_get_with(request.id.clone(), async {
                let (decision, changed) = self.decide(teleport, request).await?;
                report_changed.store(changed, std::sync::atomic::Ordering::Relaxed);
                Ok(Arc::new(decision))
            })
            .await
            .map_err(|source| RouteError {
                request: request.id.clone(),
                source,
            })?;
        Ok(Routed {
            recipients: decision.as_ref().clone(),
            report_changed: report_changed.load(std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// The decision, and whether it changed what [`RuleRouting::report`] says (the facts
    /// problem).
    async fn decide(
        &self,
        teleport: &TeleportClient,
        request: &AccessRequest,
    ) -> Result<(Option<BTreeSet<String>>, bool), MonitoringError> {
        let rules = self.rules();
        if rules.is_empty() {
            return Ok((None, false));
        }
        let mut facts = facts_of(request);
        let mut problems = Vec::new();
        if rules.reads(MapVar::UserTraits) {
            match teleport.user_traits(&request.user).await {
                Ok(traits) => facts = facts.with_user_traits(traits),
                Err(
                    e @ (MonitoringError::Permission(_) | MonitoringError::NotSupported { .. }),
                ) => {
                    // As Teleport's plugin: route without the traits, and say why.
                    tracing::warn!(request = %request.id, error = %e, "routing without user.traits");
                    problems.push(e.to_string());
                }
                Err(e) => return Err(e),
            }
        }
        if rules.reads(MapVar::LabelsUnion) || rules.reads(MapVar::LabelsIntersection) {
            match teleport.resource_labels(&request.requested_resources).await {
                Ok(labels) => facts = facts.with_resource_labels(labels.iter()),
                Err(
                    e @ (MonitoringError::Permission(_) | MonitoringError::NotSupported { .. }),
                ) => {
                    tracing::warn!(request = %request.id, error = %e, "routing without the requested resources' labels");
                    problems.push(e.to_string());
                }
                Err(e) => return Err(e),
            }
        }
        let fetched = rules.reads(MapVar::UserTraits)
            || rules.reads(MapVar::LabelsUnion)
            || rules.reads(MapVar::LabelsIntersection);
        let mut report_changed = false;
        if fetched {
            // The status follows the latest request that needed them: a role fixed later
            // clears it.
            let now = (!problems.is_empty()).then(|| problems.join("; "));
            let mut problem = self.facts_problem.lock().expect("facts lock");
            report_changed = *problem != now;
            *problem = now;
        }
        let routing = rules.route(&facts);
        for error in &routing.errors {
            tracing::warn!(error = %error, "access monitoring rule skipped for a request");
        }
        if !routing.matched.is_empty() {
            tracing::info!(request = %request.id, rules = ?routing.matched, recipients = ?routing.recipients, "access monitoring rules route the request");
        }
        Ok((
            (!routing.recipients.is_empty()).then_some(routing.recipients),
            report_changed,
        ))
    }
}

/// The condition variables the request itself carries.
pub fn facts_of(request: &AccessRequest) -> RequestFacts {
    RequestFacts {
        request_id: request.id.clone(),
        user: request.user.clone(),
        roles: request.roles.iter().cloned().collect(),
        suggested_reviewers: request.suggested_reviewers.iter().cloned().collect(),
        request_reason: request.request_reason.clone(),
        creation_time: request.created,
        expiry: request.resource_expiry.or(request.expires),
        system_annotations: request
            .system_annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.iter().cloned().collect()))
            .collect(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, condition: &str) -> Rule {
        Rule {
            name: name.into(),
            revision: "r1".into(),
            subjects: vec!["access_request".into()],
            condition: condition.into(),
            notification_name: "mattermost".into(),
            recipients: vec!["ops/oncall".into()],
            ..Default::default()
        }
    }

    #[test]
    fn the_report_names_broken_rules_with_their_revision() {
        let routing = RuleRouting::new("mattermost", Tz::UTC);
        let errors = routing.replace_all(vec![rule("good", "true"), rule("bad", "contains(")]);
        assert_eq!(errors.len(), 1);
        let report = routing.report();
        assert_eq!(report.reason, reason::RULE_BROKEN);
        assert_eq!(report.broken[0].name, "bad");
        assert_eq!(report.broken[0].revision, "r1");
        assert!(report.broken[0].error.contains("column"), "{report:?}");
        routing.remove("bad");
        assert_eq!(routing.report().reason, reason::RULES_ACTIVE);
        routing.disable(Mode::NotSupported("v13".into()));
        assert_eq!(routing.report().reason, reason::NOT_SUPPORTED);
        assert!(routing.rules().is_empty());
    }

    #[test]
    fn facts_carry_the_requests_own_fields() {
        let request = AccessRequest {
            id: "r".into(),
            user: "bob".into(),
            roles: vec!["dba".into()],
            system_annotations: BTreeMap::from([("team".into(), vec!["db".into()])]),
            ..Default::default()
        };
        let facts = facts_of(&request);
        assert!(facts.roles.contains("dba"));
        assert!(facts.system_annotations["team"].contains("db"));
    }
}
