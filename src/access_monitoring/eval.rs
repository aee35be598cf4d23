//! Evaluating a typed condition against one request's facts.
//!
//! Values borrow from the facts and the condition wherever they can (a role set, a trait's
//! values, a literal `set(…)`), so evaluating a rule allocates only when the condition builds a
//! set or a string from request data.

use std::borrow::Cow;
use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::clock::{self, go_zero_time, parse_clock};
use super::compile::{BoolExpr, ClockArg, SetExpr, StrExpr, TimeExpr};
use super::error::EvalError;
use super::facts::RequestFacts;

static EMPTY: BTreeSet<String> = BTreeSet::new();

/// What an evaluation reads: the request's facts and the timezone for `day` and
/// `clock_between`.
pub struct Env<'a> {
    pub facts: &'a RequestFacts,
    pub timezone: Tz,
}

impl BoolExpr {
    /// True when the request matches. `&&` and `||` stop at the first deciding operand, as in
    /// Teleport, so an operand that would fail is not reached when it cannot matter.
    pub fn eval(&self, env: &Env<'_>) -> Result<bool, EvalError> {
        Ok(match self {
            BoolExpr::Const(value) => *value,
            BoolExpr::Not(inner) => !inner.eval(env)?,
            BoolExpr::And(items) => {
                for item in items {
                    if !item.eval(env)? {
                        return Ok(false);
                    }
                }
                true
            }
            BoolExpr::Or(items) => {
                for item in items {
                    if item.eval(env)? {
                        return Ok(true);
                    }
                }
                false
            }
            BoolExpr::StrEq { lhs, rhs, equal } => (lhs.eval(env)? == rhs.eval(env)?) == *equal,
            BoolExpr::Contains { set, item } => set.eval(env)?.contains(item.eval(env)?.as_ref()),
            BoolExpr::ContainsAny { set, items } => {
                let set = set.eval(env)?;
                items.eval(env)?.iter().any(|item| set.contains(item))
            }
            BoolExpr::ContainsAll { set, items } => {
                let set = set.eval(env)?;
                let items = items.eval(env)?;
                // Teleport's contains_all is false for an empty list of items.
                !items.is_empty() && items.iter().all(|item| set.contains(item))
            }
            BoolExpr::IsEmpty(set) => set.eval(env)?.is_empty(),
            BoolExpr::Before(a, b) => a.eval(env)? < b.eval(env)?,
            BoolExpr::After(a, b) => a.eval(env)? > b.eval(env)?,
            BoolExpr::Between {
                time,
                first,
                second,
            } => {
                let t = time.eval(env)?;
                let (mut low, mut high) = (first.eval(env)?, second.eval(env)?);
                if low > high {
                    std::mem::swap(&mut low, &mut high);
                }
                t > low && t < high
            }
            BoolExpr::ClockBetween { time, start, end } => {
                let t = time.eval(env)?;
                let start = start.eval(env, "start")?;
                let end = end.eval(env, "end")?;
                clock::clock_between(t, start, end, env.timezone)
            }
        })
    }
}

impl ClockArg {
    fn eval(&self, env: &Env<'_>, which: &str) -> Result<chrono::NaiveTime, EvalError> {
        match self {
            ClockArg::Fixed(t) => Ok(*t),
            ClockArg::Computed(expr, at) => {
                let text = expr.eval(env)?;
                parse_clock(&text).ok_or_else(|| EvalError {
                    at: *at,
                    message: format!(
                        "the {which} of clock_between is {text:?} for this request, which is not \
                         a time of day HH:MM"
                    ),
                })
            }
        }
    }
}

impl StrExpr {
    fn eval<'a>(&'a self, env: &Env<'a>) -> Result<Cow<'a, str>, EvalError> {
        Ok(match self {
            StrExpr::Lit(s) => Cow::Borrowed(s.as_str()),
            StrExpr::User => Cow::Borrowed(env.facts.user.as_str()),
            StrExpr::RequestReason => Cow::Borrowed(env.facts.request_reason.as_str()),
            StrExpr::Day(time) => Cow::Borrowed(clock::day(time.eval(env)?, env.timezone)),
            StrExpr::Upper(inner) => Cow::Owned(inner.eval(env)?.to_uppercase()),
            StrExpr::Lower(inner) => Cow::Owned(inner.eval(env)?.to_lowercase()),
        })
    }
}

impl SetExpr {
    fn eval<'a>(&'a self, env: &Env<'a>) -> Result<Cow<'a, BTreeSet<String>>, EvalError> {
        let owned = |items: &'a [StrExpr]| -> Result<BTreeSet<String>, EvalError> {
            items
                .iter()
                .map(|item| item.eval(env).map(Cow::into_owned))
                .collect()
        };
        Ok(match self {
            SetExpr::Lit(set) => Cow::Borrowed(set),
            SetExpr::Roles => Cow::Borrowed(&env.facts.roles),
            SetExpr::SuggestedReviewers => Cow::Borrowed(&env.facts.suggested_reviewers),
            SetExpr::Lookup { map, key } => {
                let key = key.eval(env)?;
                // A missing key is an empty set, as Go's map lookup gives.
                Cow::Borrowed(env.facts.map(*map).get(key.as_ref()).unwrap_or(&EMPTY))
            }
            SetExpr::Build(items) => Cow::Owned(owned(items)?),
            SetExpr::Union(sets) => {
                let mut all = BTreeSet::new();
                for set in sets {
                    all.extend(set.eval(env)?.iter().cloned());
                }
                Cow::Owned(all)
            }
            SetExpr::Add(set, items) => {
                let mut all = set.eval(env)?.into_owned();
                all.extend(owned(items)?);
                Cow::Owned(all)
            }
            SetExpr::Remove(set, items) => {
                let mut all = set.eval(env)?.into_owned();
                for item in owned(items)? {
                    all.remove(&item);
                }
                Cow::Owned(all)
            }
            SetExpr::Upper(set) => {
                Cow::Owned(set.eval(env)?.iter().map(|s| s.to_uppercase()).collect())
            }
            SetExpr::Lower(set) => {
                Cow::Owned(set.eval(env)?.iter().map(|s| s.to_lowercase()).collect())
            }
        })
    }
}

impl TimeExpr {
    fn eval(&self, env: &Env<'_>) -> Result<DateTime<Utc>, EvalError> {
        Ok(match self {
            TimeExpr::CreationTime => env.facts.creation_time.unwrap_or_else(go_zero_time),
            TimeExpr::Expiry => env.facts.expiry.unwrap_or_else(go_zero_time),
            TimeExpr::Fixed(t) => *t,
            TimeExpr::Parsed(text, at) => {
                let text = text.eval(env)?;
                DateTime::parse_from_rfc3339(&text)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| EvalError {
                        at: *at,
                        message: format!(
                            "time.RFC3339 got {text:?} for this request, which is not an RFC \
                             3339 time"
                        ),
                    })?
            }
        })
    }
}
