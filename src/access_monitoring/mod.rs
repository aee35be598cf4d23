//! Access Monitoring Rules: routing requests the way Teleport's own plugin has since v15.
//!
//! An admin writes a rule in Teleport (`kind: access_monitoring_rule`, subjects
//! `access_request`, a predicate `condition`, `notification: {name: mattermost, recipients}`).
//! For each request, the union of the recipients of the matching rules replaces
//! `roleToRecipients` and the suggested reviewers. This module is the pure part:
//! - [`Condition`]: the condition language, parsed once into a typed tree
//!   ([`syntax`] with winnow, then [`compile`]), evaluated per request ([`eval`]);
//! - [`RequestFacts`]: what a condition sees of one request ([`facts`]);
//! - [`RuleSet`]: the rules that address this plugin, and the recipients they give a request
//!   ([`rules`]).
//!
//! # The language
//!
//! Go expression syntax, as Teleport parses it (`go/parser`, `vulcand/predicate`,
//! `lib/utils/typical`), with Teleport's variables and its default predicate functions
//! (`lib/expression.DefaultParserSpec`, `lib/accessmonitoring/request_mapping.go`).
//!
//! Variables (`map.key` also reads `map["key"]`; a missing key is an empty set):
//!
//! | name | type |
//! |---|---|
//! | `access_request.spec.roles`, `access_request.spec.suggested_reviewers` | set |
//! | `access_request.spec.user`, `access_request.spec.request_reason` | string |
//! | `access_request.spec.creation_time`, `access_request.spec.expiry` | time |
//! | `access_request.spec.system_annotations`, `user.traits` | map of sets |
//! | `access_request.spec.resource_labels_union`, `access_request.spec.resource_labels_intersection` | map of sets |
//! | `true`, `false` | true/false |
//!
//! Operators: `&&`, `||`, `!`, parentheses, and `==` / `!=` on strings (or integer literals).
//!
//! Functions: `set(s…)`, `union(set…)`, `contains_any(set, set)`, `contains_all(set, set)`
//! (false when the second set is empty), `is_empty(set)`, `day(t)` (`"Monday"`…),
//! `clock_between(t, "HH:MM", "HH:MM")`, `before(t, t)`, `after(t, t)`, `between(t, t, t)`,
//! `time.RFC3339("…")`, `strings.upper(x)`, `strings.lower(x)` (string or set).
//!
//! Methods: `set.contains(s)`, `set.contains_any(set)`, `set.contains_all(set)`,
//! `set.isempty()`, `set.add(s…)`, `set.remove(s…)`, `t.day()`, `t.clock_between(…)`,
//! `t.before(t)`, `t.after(t)`, `t.between(t, t)`.
//!
//! Not implemented, and refused by name so a rule never routes differently from Teleport's
//! plugin: `dict`, `pair`, `ifelse`, `choose`, `option`, `email.local`, `regexp.match`,
//! `regexp.replace`, `strings.split`, `strings.replaceall`, `newer_than`, `older_than`, the
//! dictionary methods `put` and `add_values`, semantic-version `between`, the interim
//! `has_labels` / `access_request.spec.requested_resources` and `plugin.spec.name`, and the
//! v18.2.8+ `spec.schedules` field (a rule is not a schedule here).
//!
//! Times: `day` and `clock_between` read the time in the configured timezone (UTC by
//! default, which is what Teleport's plugin uses). `clock_between` is strict at both ends and
//! compares within one day, so a window across midnight never matches, in Teleport as here;
//! [`Condition::warnings`] says so and gives the form that works.

pub mod clock;
pub mod compile;
pub mod condition;
pub mod error;
pub mod eval;
pub mod facts;
pub mod rules;
pub mod syntax;

pub use compile::MapVar;
pub use condition::Condition;
pub use error::{ConditionError, ConditionWarning, EvalError, Position};
pub use facts::{RequestFacts, StringSets};
pub use rules::{
    ACCESS_REQUEST_SUBJECT, ActiveRule, Change, DEFAULT_PLUGIN_NAME, Routing, Rule, RuleError,
    RuleEvalError, RuleSet, TimezoneError, timezone,
};
