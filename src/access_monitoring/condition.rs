//! A rule's condition: parsed and typed once, evaluated per request.

use std::fmt;
use std::str::FromStr;

use chrono_tz::Tz;

use super::compile::{BoolExpr, compile};
use super::error::{ConditionError, ConditionWarning, EvalError};
use super::eval::Env;
use super::facts::RequestFacts;
use super::syntax::parse;

/// A condition ready to evaluate. Two conditions are equal when their texts are.
#[derive(Clone)]
pub struct Condition {
    text: String,
    expr: BoolExpr,
    warnings: Vec<ConditionWarning>,
}

impl Condition {
    /// Parses and type-checks a condition, as Teleport does when a rule is created.
    pub fn parse(text: &str) -> Result<Self, ConditionError> {
        let node = parse(text)?;
        let compiled = compile(text, &node)?;
        Ok(Condition {
            text: text.to_string(),
            expr: compiled.expr,
            warnings: compiled.warnings,
        })
    }

    /// The text it was parsed from.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Parts that parse but will not do what they seem to say (e.g. a `clock_between` window
    /// across midnight, which never matches in Teleport either).
    pub fn warnings(&self) -> &[ConditionWarning] {
        &self.warnings
    }

    /// Whether evaluating it may read `map` (so the caller fetches traits or labels only
    /// when some rule can look at them).
    pub fn reads(&self, map: super::compile::MapVar) -> bool {
        self.expr.reads(map)
    }

    /// Whether the request matches, with `day` and `clock_between` read in `timezone`.
    pub fn matches(&self, facts: &RequestFacts, timezone: Tz) -> Result<bool, EvalError> {
        self.expr.eval(&Env { facts, timezone })
    }
}

impl FromStr for Condition {
    type Err = ConditionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Condition::parse(text)
    }
}

impl PartialEq for Condition {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Condition {}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condition")
            .field("text", &self.text)
            .finish_non_exhaustive()
    }
}
