//! The rules this plugin follows, and the recipients they give a request.
//!
//! This is the pure half of Teleport's `RuleHandler`
//! (`integrations/access/accessmonitoring/access_monitoring_rules.go`):
//! - a rule applies when its `notification.name` is this plugin's name and its `subjects`
//!   contain `access_request` (`ruleApplies`); `states`, `desired_state` and
//!   `automatic_review` play no part in routing;
//! - a PUT of a rule that no longer applies removes it; a DELETE removes it;
//! - a request's recipients are the union of the recipients of every applying rule whose
//!   condition matches; a rule whose condition fails for a request is skipped for it.
//!
//! One difference, on purpose: Teleport's plugin re-parses every condition for every request
//! and only logs a condition that does not parse. Here a condition is parsed once when the rule
//! arrives, and one that does not parse is returned as an error once (for the status and an
//! Event), kept out of routing, and listed by [`RuleSet::broken`] until it is fixed or deleted.

use std::collections::{BTreeMap, BTreeSet};

use chrono_tz::Tz;

use super::condition::Condition;
use super::error::{ConditionError, ConditionWarning, EvalError};
use super::facts::RequestFacts;

/// The subject a rule must name to route access requests.
pub const ACCESS_REQUEST_SUBJECT: &str = "access_request";

/// The plugin name rules address by default: Teleport's Mattermost plugin's, so rules written
/// for it keep working.
pub const DEFAULT_PLUGIN_NAME: &str = "mattermost";

/// An access monitoring rule, as plain data: what the wire decoding fills in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.revision`, for logs; it plays no part in routing.
    pub revision: String,
    /// `spec.subjects`.
    pub subjects: Vec<String>,
    /// `spec.states`: kept for logs; Teleport's plugin does not filter on it.
    pub states: Vec<String>,
    /// `spec.condition`.
    pub condition: String,
    /// `spec.notification.name`.
    pub notification_name: String,
    /// `spec.notification.recipients`: Mattermost users (e-mail or username) and
    /// `team/channel`s, resolved by the caller.
    pub recipients: Vec<String>,
}

impl Rule {
    /// Teleport's `ruleApplies`: the rule notifies `plugin_name` about access requests.
    pub fn addresses(&self, plugin_name: &str) -> bool {
        self.notification_name == plugin_name
            && self.subjects.iter().any(|s| s == ACCESS_REQUEST_SUBJECT)
    }

    /// Equal for routing: everything but the revision.
    fn same_routing(&self, other: &Rule) -> bool {
        self.name == other.name
            && self.subjects == other.subjects
            && self.states == other.states
            && self.condition == other.condition
            && self.notification_name == other.notification_name
            && self.recipients == other.recipients
    }
}

/// What an update did to the rule set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A new rule now routes requests.
    Added,
    /// A rule's new version replaced its old one.
    Updated,
    /// Nothing that routes changed (a repeat, or a new revision with the same content, or a
    /// broken condition already reported).
    Unchanged,
    /// A rule stopped routing: deleted, no longer addressed to this plugin, or its condition
    /// no longer parses (then `upsert` returns the error instead, the first time).
    Removed,
    /// The rule is not for this plugin and was not held.
    Ignored,
}

/// A rule whose condition cannot be used; it is skipped and the other rules still apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "access monitoring rule {rule:?} is skipped (the other rules still apply): its condition, \
     {error}; fix it with `tctl edit access_monitoring_rule/{rule}`"
)]
pub struct RuleError {
    /// The rule's name.
    pub rule: String,
    /// The condition text that failed.
    pub condition: String,
    /// Why (boxed: the error is large and rare).
    pub error: Box<ConditionError>,
}

/// A rule whose condition failed for one request; the rule does not route that request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("access monitoring rule {rule:?} skipped request {request:?}: its condition, {error}")]
pub struct RuleEvalError {
    /// The rule's name.
    pub rule: String,
    /// The request id.
    pub request: String,
    /// Why.
    pub error: EvalError,
}

/// An unknown timezone name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown timezone {0:?} for access monitoring rules; use an IANA name such as \
     \"Europe/Berlin\" or \"UTC\""
)]
pub struct TimezoneError(pub String);

/// Reads the timezone `day()` and `clock_between()` use: an IANA name, with empty meaning
/// UTC, as in Teleport.
pub fn timezone(name: &str) -> Result<Tz, TimezoneError> {
    let name = name.trim();
    if name.is_empty() {
        return Ok(Tz::UTC);
    }
    name.parse::<Tz>()
        .map_err(|_| TimezoneError(name.to_string()))
}

/// A rule that routes: its data and its parsed condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveRule {
    rule: Rule,
    condition: Condition,
}

impl ActiveRule {
    /// The rule as received.
    pub fn rule(&self) -> &Rule {
        &self.rule
    }

    /// Its parsed condition.
    pub fn condition(&self) -> &Condition {
        &self.condition
    }

    /// What the condition does not do that it seems to.
    pub fn warnings(&self) -> &[ConditionWarning] {
        self.condition.warnings()
    }
}

/// Where the rules send one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routing {
    /// The union of the matching rules' recipients.
    pub recipients: BTreeSet<String>,
    /// The names of the rules that matched, in name order.
    pub matched: Vec<String>,
    /// Rules whose condition failed for this request (they did not match).
    pub errors: Vec<RuleEvalError>,
}

/// The applying rules, keyed by name. Plain data: clone it to publish a new version (e.g.
/// through an `ArcSwap`) while requests read the old one.
#[derive(Debug, Clone)]
pub struct RuleSet {
    plugin_name: String,
    timezone: Tz,
    active: BTreeMap<String, ActiveRule>,
    broken: BTreeMap<String, RuleError>,
}

impl RuleSet {
    /// An empty set for the plugin named `plugin_name`, reading times in `timezone`.
    pub fn new(plugin_name: impl Into<String>, timezone: Tz) -> Self {
        RuleSet {
            plugin_name: plugin_name.into(),
            timezone,
            active: BTreeMap::new(),
            broken: BTreeMap::new(),
        }
    }

    /// The plugin name rules must address.
    pub fn plugin_name(&self) -> &str {
        &self.plugin_name
    }

    /// The timezone of `day` and `clock_between`.
    pub fn timezone(&self) -> Tz {
        self.timezone
    }

    /// How many rules route requests.
    pub fn len(&self) -> usize {
        self.active.len()
    }

    /// No rule routes requests.
    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// The routing rule of that name.
    pub fn get(&self, name: &str) -> Option<&ActiveRule> {
        self.active.get(name)
    }

    /// The routing rules, in name order.
    pub fn active(&self) -> impl Iterator<Item = &ActiveRule> {
        self.active.values()
    }

    /// The rules addressed to this plugin whose condition cannot be used, for the status.
    pub fn broken(&self) -> impl Iterator<Item = &RuleError> {
        self.broken.values()
    }

    /// Whether some routing rule's condition may read `map` (`user.traits`, the resource
    /// labels): the facts worth a Teleport call for each request.
    pub fn reads(&self, map: super::compile::MapVar) -> bool {
        self.active.values().any(|r| r.condition.reads(map))
    }

    /// Takes a rule from a list or a PUT event. Returns the error the first time a given
    /// condition text of a rule fails to parse (report it then); the rule is then skipped.
    pub fn upsert(&mut self, rule: Rule) -> Result<Change, RuleError> {
        if !rule.addresses(&self.plugin_name) {
            let held = self.active.remove(&rule.name).is_some();
            let broken = self.broken.remove(&rule.name).is_some();
            return Ok(if held || broken {
                Change::Removed
            } else {
                Change::Ignored
            });
        }
        if let Some(current) = self.active.get_mut(&rule.name) {
            if current.rule.same_routing(&rule) {
                current.rule.revision = rule.revision;
                return Ok(Change::Unchanged);
            }
        }
        match Condition::parse(&rule.condition) {
            Ok(condition) => {
                self.broken.remove(&rule.name);
                let name = rule.name.clone();
                let previous = self.active.insert(name, ActiveRule { rule, condition });
                Ok(if previous.is_some() {
                    Change::Updated
                } else {
                    Change::Added
                })
            }
            Err(error) => {
                let was_active = self.active.remove(&rule.name).is_some();
                let already_reported = self
                    .broken
                    .get(&rule.name)
                    .is_some_and(|known| known.condition == rule.condition);
                if already_reported {
                    return Ok(if was_active {
                        Change::Removed
                    } else {
                        Change::Unchanged
                    });
                }
                let error = RuleError {
                    rule: rule.name.clone(),
                    condition: rule.condition,
                    error: Box::new(error),
                };
                self.broken.insert(rule.name, error.clone());
                Err(error)
            }
        }
    }

    /// Takes a DELETE event.
    pub fn remove(&mut self, name: &str) -> Change {
        let held = self.active.remove(name).is_some();
        let broken = self.broken.remove(name).is_some();
        if held || broken {
            Change::Removed
        } else {
            Change::Ignored
        }
    }

    /// Replaces every rule with a fresh listing (after each watch INIT), so rules deleted while
    /// the watch was down are gone. Returns the errors not reported before.
    pub fn replace_all(&mut self, rules: impl IntoIterator<Item = Rule>) -> Vec<RuleError> {
        let mut fresh = RuleSet::new(self.plugin_name.clone(), self.timezone);
        let mut new_errors = Vec::new();
        for rule in rules {
            if let Some(current) = self.active.get(&rule.name) {
                if current.rule.same_routing(&rule) && rule.addresses(&self.plugin_name) {
                    let mut kept = current.clone();
                    kept.rule.revision = rule.revision;
                    fresh.active.insert(rule.name.clone(), kept);
                    continue;
                }
            }
            if let Some(known) = self.broken.get(&rule.name) {
                if known.condition == rule.condition && rule.addresses(&self.plugin_name) {
                    fresh.broken.insert(rule.name.clone(), known.clone());
                    continue;
                }
            }
            if let Err(error) = fresh.upsert(rule) {
                new_errors.push(error);
            }
        }
        *self = fresh;
        new_errors
    }

    /// Evaluates every rule against one request.
    pub fn route(&self, facts: &RequestFacts) -> Routing {
        let mut routing = Routing::default();
        for (name, active) in &self.active {
            match active.condition.matches(facts, self.timezone) {
                Ok(true) => {
                    routing.matched.push(name.clone());
                    routing.recipients.extend(
                        active
                            .rule
                            .recipients
                            .iter()
                            .filter(|r| !r.trim().is_empty())
                            .cloned(),
                    );
                }
                Ok(false) => {}
                Err(error) => routing.errors.push(RuleEvalError {
                    rule: name.clone(),
                    request: facts.request_id.clone(),
                    error,
                }),
            }
        }
        routing
    }

    /// The recipients the rules give this request, or `None` when no rule gives any: then
    /// `roleToRecipients` and the suggested reviewers apply, as in Teleport's plugin.
    pub fn recipients_for(&self, facts: &RequestFacts) -> Option<BTreeSet<String>> {
        let routing = self.route(facts);
        (!routing.recipients.is_empty()).then_some(routing.recipients)
    }
}
