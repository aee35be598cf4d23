//! Typed reads out of the TOML tree that collect every problem instead of stopping at the
//! first.

use std::collections::BTreeMap;
use std::path::PathBuf;

use toml::{Table, Value};

use super::Problem;
use super::values::check_recipient;
use crate::settings::ReasonPrompt;

/// Collects problems while reading values out of the TOML tree.
#[derive(Default)]
pub(super) struct Checker {
    pub(super) problems: Vec<Problem>,
    /// `mattermost.ca_file`, carried from its section to the result.
    pub(super) ca_file: Option<PathBuf>,
    /// `teleport.ca_file`, likewise.
    pub(super) proxy_ca_file: Option<PathBuf>,
}

/// A section of the file and the keys read from it, so leftovers can be reported.
pub(super) struct Section<'a> {
    name: &'a str,
    pub(super) table: Option<&'a Table>,
    known: &'a [&'a str],
}

impl<'a> Section<'a> {
    pub(super) fn get(&self, key: &str) -> Option<&'a Value> {
        debug_assert!(self.known.contains(&key), "{key} not declared");
        self.table.and_then(|t| t.get(key))
    }
    pub(super) fn key(&self, key: &str) -> String {
        format!("{}.{key}", self.name)
    }
}

impl Checker {
    pub(super) fn problem(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    /// Opens `[name]`, reporting a non-table value and unknown keys.
    pub(super) fn section<'a>(
        &mut self,
        root: &'a Table,
        name: &'a str,
        known: &'a [&'a str],
    ) -> Section<'a> {
        let table = match root.get(name) {
            None => None,
            Some(Value::Table(t)) => Some(t),
            Some(other) => {
                self.problem(
                    name,
                    format!("must be a [{name}] section, not a {}", other.type_str()),
                );
                None
            }
        };
        if let Some(t) = table {
            for key in t.keys() {
                if !known.contains(&key.as_str()) {
                    self.problem(
                        format!("{name}.{key}"),
                        format!(
                            "unknown key; known keys in [{name}] are {}",
                            known.join(", ")
                        ),
                    );
                }
            }
        }
        Section { name, table, known }
    }

    /// A string value; `""` and a missing key both count as unset.
    pub(super) fn string(&mut self, s: &Section<'_>, key: &str) -> Option<String> {
        match s.get(key)? {
            Value::String(v) if v.trim().is_empty() => None,
            Value::String(v) => Some(v.trim().to_owned()),
            other => {
                self.problem(
                    s.key(key),
                    format!("must be a string, not a {}", other.type_str()),
                );
                None
            }
        }
    }

    /// A required string: reports it as missing with an example of what to write.
    pub(super) fn required(&mut self, s: &Section<'_>, key: &str, example: &str) -> Option<String> {
        let present = s.get(key).is_some();
        let v = self.string(s, key);
        if v.is_none() && (!present || matches!(s.get(key), Some(Value::String(_)))) {
            self.problem(
                s.key(key),
                format!("is required; set e.g. {key} = \"{example}\""),
            );
        }
        v
    }

    pub(super) fn integer(
        &mut self,
        s: &Section<'_>,
        key: &str,
        min: i64,
        max: i64,
    ) -> Option<i64> {
        match s.get(key)? {
            Value::Integer(v) if (min..=max).contains(v) => Some(*v),
            Value::Integer(v) => {
                self.problem(
                    s.key(key),
                    format!("{v} is out of range; use a whole number from {min} to {max}"),
                );
                None
            }
            other => {
                self.problem(
                    s.key(key),
                    format!("must be a whole number, not a {}", other.type_str()),
                );
                None
            }
        }
    }

    /// An array of non-empty strings, each checked by `check` (which returns why it is bad).
    pub(super) fn string_list(
        &mut self,
        key: &str,
        value: Option<&Value>,
        check: fn(&str) -> Option<String>,
    ) -> Vec<String> {
        let Some(value) = value else {
            return Vec::new();
        };
        let Value::Array(items) = value else {
            self.problem(
                key,
                format!(
                    "must be an array of strings, e.g. [\"a\", \"b\"], not a {}",
                    value.type_str()
                ),
            );
            return Vec::new();
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item {
                Value::String(v) if v.trim().is_empty() => {
                    self.problem(format!("{key}[{i}]"), "is empty; remove it or fill it in");
                }
                Value::String(v) => match check(v.trim()) {
                    Some(why) => self.problem(format!("{key}[{i}]"), format!("{v:?} {why}")),
                    None => out.push(v.trim().to_owned()),
                },
                other => self.problem(
                    format!("{key}[{i}]"),
                    format!("must be a string, not a {}", other.type_str()),
                ),
            }
        }
        out
    }

    pub(super) fn role_map(
        &mut self,
        key: &str,
        value: Option<&Value>,
    ) -> BTreeMap<String, Vec<String>> {
        let mut out = BTreeMap::new();
        let Some(value) = value else {
            return out;
        };
        let Value::Table(t) = value else {
            self.problem(
                key,
                format!(
                    "must be a table of role = [recipients], e.g. dba = [\"team/dba\"], not a {}",
                    value.type_str()
                ),
            );
            return out;
        };
        for (role, recipients) in t {
            let role_key = format!("{key}.{role}");
            if role.trim().is_empty() {
                self.problem(role_key, "role name is empty; use a role name or \"*\"");
                continue;
            }
            let list = self.string_list(&role_key, Some(recipients), check_recipient);
            out.insert(role.trim().to_owned(), list);
        }
        out
    }

    pub(super) fn boolean(&mut self, s: &Section<'_>, key: &str) -> Option<bool> {
        match s.get(key) {
            None => Some(false),
            Some(Value::Boolean(b)) => Some(*b),
            Some(other) => {
                self.problem(
                    s.key(key),
                    format!("must be true or false, not a {}", other.type_str()),
                );
                None
            }
        }
    }

    pub(super) fn reason_prompt(&mut self, s: &Section<'_>, key: &str) -> Option<ReasonPrompt> {
        let Some(text) = self.string(s, key) else {
            return Some(ReasonPrompt::Never);
        };
        let parsed = ReasonPrompt::parse(&text);
        if parsed.is_none() {
            self.problem(
                s.key(key),
                format!("{text:?} is not a choice; use \"never\", \"optional\" or \"required\""),
            );
        }
        parsed
    }
}
