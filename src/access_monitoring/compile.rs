//! Typing a syntax tree into an expression that evaluates fast.
//!
//! This is what Teleport's `lib/utils/typical` does when it parses: names are resolved against
//! the condition variables, functions and methods are bound, and every argument's type is
//! checked, so a wrong condition is refused when the rule arrives rather than on every request.
//! The resolution rules follow `vulcand/predicate` and `typical`:
//! - a dotted name is matched by its longest known prefix, and `map.key` means `map["key"]`;
//! - in `x.f(…)`, `f` is a method (receiver `x`) when a method of that name exists; otherwise
//!   `x.f` must be a package function such as `strings.upper`;
//! - `==` and `!=` compare strings (or integer literals); `&&`, `||` and `!` take true/false.

use std::collections::BTreeSet;
use std::ops::Range;

use chrono::{DateTime, NaiveTime, Utc};

use super::clock::parse_clock;
use super::error::{ConditionError, ConditionWarning, Position};
use super::syntax::{Node, NodeKind, Punct};

/// The four maps of string sets a condition can index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapVar {
    /// `access_request.spec.system_annotations`.
    SystemAnnotations,
    /// `user.traits`.
    UserTraits,
    /// `access_request.spec.resource_labels_union`.
    LabelsUnion,
    /// `access_request.spec.resource_labels_intersection`.
    LabelsIntersection,
}

/// A true/false expression.
#[derive(Debug, Clone, PartialEq)]
pub enum BoolExpr {
    Const(bool),
    Not(Box<BoolExpr>),
    And(Vec<BoolExpr>),
    Or(Vec<BoolExpr>),
    StrEq {
        lhs: StrExpr,
        rhs: StrExpr,
        equal: bool,
    },
    Contains {
        set: SetExpr,
        item: StrExpr,
    },
    ContainsAny {
        set: SetExpr,
        items: SetExpr,
    },
    ContainsAll {
        set: SetExpr,
        items: SetExpr,
    },
    IsEmpty(SetExpr),
    Before(TimeExpr, TimeExpr),
    After(TimeExpr, TimeExpr),
    Between {
        time: TimeExpr,
        first: TimeExpr,
        second: TimeExpr,
    },
    ClockBetween {
        time: TimeExpr,
        start: ClockArg,
        end: ClockArg,
    },
}

/// A `clock_between` bound: read once when it is a literal, else per request.
#[derive(Debug, Clone, PartialEq)]
pub enum ClockArg {
    Fixed(NaiveTime),
    Computed(StrExpr, Position),
}

/// A string expression.
#[derive(Debug, Clone, PartialEq)]
pub enum StrExpr {
    Lit(String),
    User,
    RequestReason,
    Day(Box<TimeExpr>),
    Upper(Box<StrExpr>),
    Lower(Box<StrExpr>),
}

/// A set-of-strings expression.
#[derive(Debug, Clone, PartialEq)]
pub enum SetExpr {
    Lit(BTreeSet<String>),
    Roles,
    SuggestedReviewers,
    Lookup { map: MapVar, key: StrExpr },
    Build(Vec<StrExpr>),
    Union(Vec<SetExpr>),
    Add(Box<SetExpr>, Vec<StrExpr>),
    Remove(Box<SetExpr>, Vec<StrExpr>),
    Upper(Box<SetExpr>),
    Lower(Box<SetExpr>),
}

/// A time expression.
#[derive(Debug, Clone, PartialEq)]
pub enum TimeExpr {
    CreationTime,
    Expiry,
    Fixed(DateTime<Utc>),
    Parsed(Box<StrExpr>, Position),
}

impl BoolExpr {
    /// Whether evaluating this may read `map`: what tells the caller which facts that need
    /// Teleport calls (traits, labels) a rule set needs at all.
    pub fn reads(&self, map: MapVar) -> bool {
        match self {
            BoolExpr::Const(_) => false,
            BoolExpr::Not(e) => e.reads(map),
            BoolExpr::And(es) | BoolExpr::Or(es) => es.iter().any(|e| e.reads(map)),
            BoolExpr::StrEq { lhs, rhs, .. } => lhs.reads(map) || rhs.reads(map),
            BoolExpr::Contains { set, item } => set.reads(map) || item.reads(map),
            BoolExpr::ContainsAny { set, items } | BoolExpr::ContainsAll { set, items } => {
                set.reads(map) || items.reads(map)
            }
            BoolExpr::IsEmpty(set) => set.reads(map),
            BoolExpr::Before(a, b) | BoolExpr::After(a, b) => a.reads(map) || b.reads(map),
            BoolExpr::Between {
                time,
                first,
                second,
            } => time.reads(map) || first.reads(map) || second.reads(map),
            BoolExpr::ClockBetween { time, start, end } => {
                time.reads(map) || start.reads(map) || end.reads(map)
            }
        }
    }
}

impl ClockArg {
    fn reads(&self, map: MapVar) -> bool {
        match self {
            ClockArg::Fixed(_) => false,
            ClockArg::Computed(s, _) => s.reads(map),
        }
    }
}

impl StrExpr {
    fn reads(&self, map: MapVar) -> bool {
        match self {
            StrExpr::Lit(_) | StrExpr::User | StrExpr::RequestReason => false,
            StrExpr::Day(t) => t.reads(map),
            StrExpr::Upper(s) | StrExpr::Lower(s) => s.reads(map),
        }
    }
}

impl SetExpr {
    fn reads(&self, map: MapVar) -> bool {
        match self {
            SetExpr::Lit(_) | SetExpr::Roles | SetExpr::SuggestedReviewers => false,
            SetExpr::Lookup { map: m, key } => *m == map || key.reads(map),
            SetExpr::Build(items) => items.iter().any(|s| s.reads(map)),
            SetExpr::Union(sets) => sets.iter().any(|s| s.reads(map)),
            SetExpr::Add(set, items) | SetExpr::Remove(set, items) => {
                set.reads(map) || items.iter().any(|s| s.reads(map))
            }
            SetExpr::Upper(set) | SetExpr::Lower(set) => set.reads(map),
        }
    }
}

impl TimeExpr {
    fn reads(&self, map: MapVar) -> bool {
        match self {
            TimeExpr::CreationTime | TimeExpr::Expiry | TimeExpr::Fixed(_) => false,
            TimeExpr::Parsed(s, _) => s.reads(map),
        }
    }
}

/// A typed subexpression.
enum Typed {
    Bool(BoolExpr),
    Str(StrExpr),
    Int(i64),
    Set(SetExpr),
    Map(MapVar),
    Time(TimeExpr),
}

impl Typed {
    fn type_name(&self) -> &'static str {
        match self {
            Typed::Bool(_) => "true/false",
            Typed::Str(_) => "a string",
            Typed::Int(_) => "an integer",
            Typed::Set(_) => "a set of strings",
            Typed::Map(_) => "a map of string sets",
            Typed::Time(_) => "a time",
        }
    }
}

/// The condition variables (Teleport's `newRequestConditionParser`), in the order messages
/// list them.
const VARIABLES: [&str; 12] = [
    "access_request.spec.roles",
    "access_request.spec.suggested_reviewers",
    "access_request.spec.system_annotations",
    "access_request.spec.user",
    "access_request.spec.request_reason",
    "access_request.spec.creation_time",
    "access_request.spec.expiry",
    "access_request.spec.resource_labels_union",
    "access_request.spec.resource_labels_intersection",
    "user.traits",
    "true",
    "false",
];

fn variable(name: &str) -> Option<Typed> {
    Some(match name {
        "access_request.spec.roles" => Typed::Set(SetExpr::Roles),
        "access_request.spec.suggested_reviewers" => Typed::Set(SetExpr::SuggestedReviewers),
        "access_request.spec.system_annotations" => Typed::Map(MapVar::SystemAnnotations),
        "access_request.spec.user" => Typed::Str(StrExpr::User),
        "access_request.spec.request_reason" => Typed::Str(StrExpr::RequestReason),
        "access_request.spec.creation_time" => Typed::Time(TimeExpr::CreationTime),
        "access_request.spec.expiry" => Typed::Time(TimeExpr::Expiry),
        "access_request.spec.resource_labels_union" => Typed::Map(MapVar::LabelsUnion),
        "access_request.spec.resource_labels_intersection" => {
            Typed::Map(MapVar::LabelsIntersection)
        }
        "user.traits" => Typed::Map(MapVar::UserTraits),
        "true" => Typed::Bool(BoolExpr::Const(true)),
        "false" => Typed::Bool(BoolExpr::Const(false)),
        _ => return None,
    })
}

/// Functions this plugin implements.
pub const FUNCTIONS: [&str; 13] = [
    "set",
    "union",
    "contains_any",
    "contains_all",
    "is_empty",
    "day",
    "clock_between",
    "before",
    "after",
    "between",
    "time.RFC3339",
    "strings.upper",
    "strings.lower",
];

/// Methods this plugin implements (called as `receiver.name(…)`).
pub const METHODS: [&str; 11] = [
    "contains",
    "contains_any",
    "contains_all",
    "isempty",
    "add",
    "remove",
    "day",
    "clock_between",
    "before",
    "after",
    "between",
];

/// Parts of Teleport's predicate language this plugin leaves out: they build values
/// (dictionaries, choices) or rewrite strings, which routing conditions do not need, or their
/// Go semantics (regular expressions, e-mail parsing, semantic versions) cannot be matched
/// exactly here. A rule using one is refused by name rather than evaluated differently.
const NOT_IMPLEMENTED_FUNCTIONS: [&str; 14] = [
    "dict",
    "pair",
    "ifelse",
    "choose",
    "option",
    "email.local",
    "regexp.match",
    "regexp.replace",
    "strings.split",
    "strings.replaceall",
    "newer_than",
    "older_than",
    "has_labels",
    "plugin.spec.name",
];
const NOT_IMPLEMENTED_METHODS: [&str; 3] = ["put", "add_values", "has_labels"];

struct Compiler<'t> {
    text: &'t str,
    warnings: Vec<ConditionWarning>,
}

/// A typed condition and what to warn about it.
pub struct Compiled {
    pub expr: BoolExpr,
    pub warnings: Vec<ConditionWarning>,
}

/// Types a parsed condition; the whole condition must be true/false.
pub fn compile(text: &str, node: &Node) -> Result<Compiled, ConditionError> {
    let mut compiler = Compiler {
        text,
        warnings: Vec::new(),
    };
    match compiler.node(node)? {
        Typed::Bool(expr) => Ok(Compiled {
            expr,
            warnings: compiler.warnings,
        }),
        other => Err(ConditionError::NotBoolean {
            found: other.type_name(),
        }),
    }
}

/// `a.b.c` as its parts, when the selector chain is names only.
fn dotted(node: &Node) -> Option<Vec<&str>> {
    match &node.kind {
        NodeKind::Ident(name) => Some(vec![name.as_str()]),
        NodeKind::Field { base, name, .. } => {
            let mut parts = dotted(base)?;
            parts.push(name.as_str());
            Some(parts)
        }
        _ => None,
    }
}

fn ordinal(n: usize) -> &'static str {
    match n {
        1 => "1st",
        2 => "2nd",
        3 => "3rd",
        _ => "next",
    }
}

fn arguments(n: usize) -> String {
    match n {
        1 => "1 argument".to_string(),
        n => format!("{n} arguments"),
    }
}

/// Names a call's arguments in messages: a method's receiver apart from its arguments.
struct Callee {
    name: String,
    method: bool,
    at: Position,
}

impl Callee {
    fn display(&self) -> String {
        if self.method {
            format!("`.{}`", self.name)
        } else {
            format!("`{}`", self.name)
        }
    }

    /// Describes argument `index` (0-based, the receiver first for methods).
    fn argument(&self, index: usize) -> String {
        if self.method && index == 0 {
            format!("the value before {}", self.display())
        } else {
            let n = if self.method { index } else { index + 1 };
            format!("the {} argument of {}", ordinal(n), self.display())
        }
    }
}

impl Compiler<'_> {
    fn at(&self, span: &Range<usize>) -> Position {
        Position::locate(self.text, span.start)
    }

    fn type_error(&self, node: &Node, what: &str, wanted: &str, found: &Typed) -> ConditionError {
        let hint = match (wanted, found) {
            ("a set of strings", Typed::Str(_)) => "; make one with set(…), like set(\"dev\")",
            ("a set of strings", Typed::Map(_)) => {
                "; take one of its sets by key, like user.traits[\"team\"]"
            }
            ("a string", Typed::Set(_)) => "; to test membership write set.contains(\"value\")",
            ("true/false", Typed::Set(_)) => "; test it with .contains(…) or contains_any(…)",
            _ => "",
        };
        ConditionError::Type {
            at: self.at(&node.span),
            message: format!(
                "{what} must be {wanted}, but it is {}{hint}",
                found.type_name()
            ),
        }
    }

    fn boolean(&mut self, node: &Node, what: &str) -> Result<BoolExpr, ConditionError> {
        match self.node(node)? {
            Typed::Bool(b) => Ok(b),
            other => Err(self.type_error(node, what, "true/false", &other)),
        }
    }

    fn string(&mut self, node: &Node, what: &str) -> Result<StrExpr, ConditionError> {
        match self.node(node)? {
            Typed::Str(s) => Ok(s),
            other => Err(self.type_error(node, what, "a string", &other)),
        }
    }

    fn set(&mut self, node: &Node, what: &str) -> Result<SetExpr, ConditionError> {
        match self.node(node)? {
            Typed::Set(s) => Ok(s),
            other => Err(self.type_error(node, what, "a set of strings", &other)),
        }
    }

    fn time(&mut self, node: &Node, what: &str) -> Result<TimeExpr, ConditionError> {
        match self.node(node)? {
            Typed::Time(t) => Ok(t),
            other => Err(self.type_error(node, what, "a time", &other)),
        }
    }

    fn node(&mut self, node: &Node) -> Result<Typed, ConditionError> {
        match &node.kind {
            NodeKind::Ident(_) | NodeKind::Field { .. } => self.name(node),
            NodeKind::Str(value) => Ok(Typed::Str(StrExpr::Lit(value.clone()))),
            NodeKind::Int(value) => Ok(Typed::Int(*value)),
            NodeKind::Unsupported(what) => Err(ConditionError::Unsupported {
                at: self.at(&node.span),
                what: what.clone(),
                hint: "; conditions use strings, like \"dev\"".to_string(),
            }),
            NodeKind::Paren(inner) => self.node(inner),
            NodeKind::Index { base, index } => {
                let map = match self.node(base)? {
                    Typed::Map(map) => map,
                    other => {
                        return Err(ConditionError::Type {
                            at: self.at(&base.span),
                            message: format!(
                                "only a map can be indexed with […], like user.traits[\"team\"], \
                                 but this is {}",
                                other.type_name()
                            ),
                        });
                    }
                };
                let key = self.string(index, "the key inside […]")?;
                Ok(Typed::Set(SetExpr::Lookup { map, key }))
            }
            NodeKind::Call { callee, args } => self.call(node, callee, args),
            NodeKind::Unary {
                op: Punct::Not,
                operand,
                ..
            } => match self.boolean(operand, "the operand of `!`")? {
                BoolExpr::Const(value) => Ok(Typed::Bool(BoolExpr::Const(!value))),
                inner => Ok(Typed::Bool(BoolExpr::Not(Box::new(inner)))),
            },
            NodeKind::Unary { op, op_span, .. } => Err(ConditionError::Unsupported {
                at: self.at(op_span),
                what: format!("the operator `{}`", op.text()),
                hint: "; conditions combine with `!`, `&&` and `||`".to_string(),
            }),
            NodeKind::Binary {
                op: op @ (Punct::EqEq | Punct::NotEq),
                lhs,
                rhs,
                ..
            } => self.equality(*op, lhs, rhs),
            NodeKind::Binary {
                op: op @ (Punct::Lt | Punct::Le | Punct::Gt | Punct::Ge),
                op_span,
                ..
            } => Err(ConditionError::Unsupported {
                at: self.at(op_span),
                what: format!("the operator `{}`", op.text()),
                hint: "; compare times with before(…), after(…) or between(…), and strings \
                       with == or !="
                    .to_string(),
            }),
            NodeKind::Binary { op, op_span, .. } => Err(ConditionError::Unsupported {
                at: self.at(op_span),
                what: format!("the operator `{}`", op.text()),
                hint: "; conditions use ==, !=, !, && and ||".to_string(),
            }),
            NodeKind::And(items) => {
                let mut all = Vec::with_capacity(items.len());
                for item in items {
                    all.push(self.boolean(item, "each side of `&&`")?);
                }
                Ok(Typed::Bool(BoolExpr::And(all)))
            }
            NodeKind::Or(items) => {
                let mut any = Vec::with_capacity(items.len());
                for item in items {
                    any.push(self.boolean(item, "each side of `||`")?);
                }
                Ok(Typed::Bool(BoolExpr::Or(any)))
            }
        }
    }

    /// A name or dotted name, resolved as Teleport's `getIdentifier` does.
    fn name(&mut self, node: &Node) -> Result<Typed, ConditionError> {
        let Some(parts) = dotted(node) else {
            let NodeKind::Field {
                name, name_span, ..
            } = &node.kind
            else {
                unreachable!("dotted() accepts every Ident");
            };
            return Err(ConditionError::Unsupported {
                at: self.at(name_span),
                what: format!("`.{name}` after something that is not a name"),
                hint: "; a method is called with parentheses, like set(\"a\").contains(\"a\")"
                    .to_string(),
            });
        };
        for end in 1..=parts.len() {
            let joined = parts[..end].join(".");
            let Some(found) = variable(&joined) else {
                continue;
            };
            if end == parts.len() {
                return Ok(found);
            }
            if end + 1 == parts.len() {
                if let Typed::Map(map) = found {
                    return Ok(Typed::Set(SetExpr::Lookup {
                        map,
                        key: StrExpr::Lit(parts[end].to_string()),
                    }));
                }
            }
        }
        let name = parts.join(".");
        if FUNCTIONS.contains(&name.as_str()) {
            return Err(ConditionError::Type {
                at: self.at(&node.span),
                message: format!("`{name}` is a function; call it with (…), like {name}(…)"),
            });
        }
        Err(ConditionError::UnknownName {
            at: self.at(&node.span),
            name,
            known: VARIABLES.join(", "),
        })
    }

    fn equality(&mut self, op: Punct, lhs: &Node, rhs: &Node) -> Result<Typed, ConditionError> {
        let equal = op == Punct::EqEq;
        let side = format!("the right side of `{}`", op.text());
        match self.node(lhs)? {
            Typed::Str(left) => {
                let right = self.string(rhs, &side)?;
                Ok(Typed::Bool(BoolExpr::StrEq {
                    lhs: left,
                    rhs: right,
                    equal,
                }))
            }
            Typed::Int(left) => match self.node(rhs)? {
                Typed::Int(right) => Ok(Typed::Bool(BoolExpr::Const((left == right) == equal))),
                other => Err(self.type_error(rhs, &side, "an integer", &other)),
            },
            other => {
                let hint = match other {
                    Typed::Set(_) => {
                        "; test a set with .contains(\"x\"), contains_any(…) or contains_all(…)"
                    }
                    Typed::Bool(_) => "; combine true/false with `&&`, `||` and `!`",
                    Typed::Time(_) => "; compare times with before(…), after(…) or between(…)",
                    _ => "",
                };
                Err(ConditionError::Type {
                    at: self.at(&lhs.span),
                    message: format!(
                        "`{}` compares strings (or integers), not {}{hint}",
                        op.text(),
                        other.type_name()
                    ),
                })
            }
        }
    }

    fn call(&mut self, node: &Node, callee: &Node, args: &[Node]) -> Result<Typed, ConditionError> {
        let at = self.at(&node.span);
        let (name, receiver) = match &callee.kind {
            NodeKind::Ident(name) => (name.clone(), None),
            NodeKind::Field {
                base,
                name,
                name_span,
            } => {
                if METHODS.contains(&name.as_str()) {
                    (name.clone(), Some(base.as_ref()))
                } else if let NodeKind::Ident(package) = &base.kind {
                    (format!("{package}.{name}"), None)
                } else {
                    return Err(self.unknown_method(name, name_span));
                }
            }
            _ => {
                return Err(ConditionError::Unsupported {
                    at: self.at(&callee.span),
                    what: "calling something that is not a function name".to_string(),
                    hint: String::new(),
                });
            }
        };
        let mut all: Vec<&Node> = Vec::with_capacity(args.len() + 1);
        all.extend(receiver);
        all.extend(args.iter());
        let callee = Callee {
            name,
            method: receiver.is_some(),
            at,
        };
        self.apply(&callee, &all)
    }

    fn unknown_method(&self, name: &str, span: &Range<usize>) -> ConditionError {
        let message = if NOT_IMPLEMENTED_METHODS.contains(&name) {
            format!(
                "the method `.{name}` is in Teleport's predicate language but this plugin does \
                 not implement it; the methods are {}",
                METHODS.join(", ")
            )
        } else {
            format!(
                "`.{name}` is not a method; the methods are {}",
                METHODS.join(", ")
            )
        };
        ConditionError::UnknownFunction {
            at: self.at(span),
            name: name.to_string(),
            message,
        }
    }

    fn arity(&self, callee: &Callee, given: usize, expected: usize) -> Result<(), ConditionError> {
        let shown = |n: usize| if callee.method { n - 1 } else { n };
        if given == expected {
            Ok(())
        } else {
            Err(ConditionError::Arity {
                at: callee.at,
                function: callee.display().trim_matches('`').to_string(),
                expected: arguments(shown(expected)),
                given: shown(given),
            })
        }
    }

    fn apply(&mut self, callee: &Callee, args: &[&Node]) -> Result<Typed, ConditionError> {
        let n = args.len();
        match (callee.name.as_str(), callee.method) {
            ("set", false) => {
                let mut items = Vec::with_capacity(n);
                for (i, arg) in args.iter().enumerate() {
                    items.push(self.string(arg, &callee.argument(i))?);
                }
                let literal: Option<BTreeSet<String>> = items
                    .iter()
                    .map(|item| match item {
                        StrExpr::Lit(s) => Some(s.clone()),
                        _ => None,
                    })
                    .collect();
                Ok(Typed::Set(match literal {
                    Some(set) => SetExpr::Lit(set),
                    None => SetExpr::Build(items),
                }))
            }
            ("union", false) => {
                let mut sets = Vec::with_capacity(n);
                for (i, arg) in args.iter().enumerate() {
                    sets.push(self.set(arg, &callee.argument(i))?);
                }
                Ok(Typed::Set(SetExpr::Union(sets)))
            }
            ("contains_any" | "contains_all", _) => {
                self.arity(callee, n, 2)?;
                let set = self.set(args[0], &callee.argument(0))?;
                let items = self.set(args[1], &callee.argument(1))?;
                Ok(Typed::Bool(if callee.name == "contains_any" {
                    BoolExpr::ContainsAny { set, items }
                } else {
                    BoolExpr::ContainsAll { set, items }
                }))
            }
            ("is_empty", false) | ("isempty", true) => {
                self.arity(callee, n, 1)?;
                Ok(Typed::Bool(BoolExpr::IsEmpty(
                    self.set(args[0], &callee.argument(0))?,
                )))
            }
            ("contains", true) => {
                self.arity(callee, n, 2)?;
                let set = self.set(args[0], &callee.argument(0))?;
                let item = self.string(args[1], &callee.argument(1))?;
                Ok(Typed::Bool(BoolExpr::Contains { set, item }))
            }
            ("add" | "remove", true) => {
                if n == 0 {
                    self.arity(callee, n, 1)?;
                }
                let set = self.set(args[0], &callee.argument(0))?;
                let mut items = Vec::with_capacity(n - 1);
                for (i, arg) in args.iter().enumerate().skip(1) {
                    items.push(self.string(arg, &callee.argument(i))?);
                }
                Ok(Typed::Set(if callee.name == "add" {
                    SetExpr::Add(Box::new(set), items)
                } else {
                    SetExpr::Remove(Box::new(set), items)
                }))
            }
            ("day", _) => {
                self.arity(callee, n, 1)?;
                let time = self.time(args[0], &callee.argument(0))?;
                Ok(Typed::Str(StrExpr::Day(Box::new(time))))
            }
            ("clock_between", _) => {
                self.arity(callee, n, 3)?;
                let time = self.time(args[0], &callee.argument(0))?;
                let start = self.clock(args[1], &callee.argument(1))?;
                let end = self.clock(args[2], &callee.argument(2))?;
                if let (ClockArg::Fixed(s), ClockArg::Fixed(e)) = (&start, &end) {
                    if s >= e {
                        self.warnings.push(ConditionWarning {
                            at: callee.at,
                            message: format!(
                                "clock_between(…, \"{}\", \"{}\") never matches: like Teleport, \
                                 it compares times within one day, strictly after the start and \
                                 before the end; for the hours outside {} to {} write \
                                 !clock_between(…, \"{}\", \"{}\")",
                                s.format("%H:%M"),
                                e.format("%H:%M"),
                                e.format("%H:%M"),
                                s.format("%H:%M"),
                                e.format("%H:%M"),
                                s.format("%H:%M"),
                            ),
                        });
                        return Ok(Typed::Bool(BoolExpr::Const(false)));
                    }
                }
                Ok(Typed::Bool(BoolExpr::ClockBetween { time, start, end }))
            }
            ("before" | "after", _) => {
                self.arity(callee, n, 2)?;
                let a = self.time(args[0], &callee.argument(0))?;
                let b = self.time(args[1], &callee.argument(1))?;
                Ok(Typed::Bool(if callee.name == "before" {
                    BoolExpr::Before(a, b)
                } else {
                    BoolExpr::After(a, b)
                }))
            }
            ("between", _) => {
                self.arity(callee, n, 3)?;
                let time = self.time(args[0], &callee.argument(0))?;
                let first = self.time(args[1], &callee.argument(1))?;
                let second = self.time(args[2], &callee.argument(2))?;
                Ok(Typed::Bool(BoolExpr::Between {
                    time,
                    first,
                    second,
                }))
            }
            ("time.RFC3339", false) => {
                self.arity(callee, n, 1)?;
                let text = self.string(args[0], &callee.argument(0))?;
                Ok(Typed::Time(match text {
                    StrExpr::Lit(value) => match DateTime::parse_from_rfc3339(&value) {
                        Ok(t) => TimeExpr::Fixed(t.with_timezone(&Utc)),
                        Err(_) => {
                            return Err(ConditionError::BadLiteral {
                                at: self.at(&args[0].span),
                                message: format!(
                                    "{value:?} is not an RFC 3339 time; write one like \
                                     \"2024-06-01T09:00:00Z\""
                                ),
                            });
                        }
                    },
                    computed => TimeExpr::Parsed(Box::new(computed), callee.at),
                }))
            }
            ("strings.upper" | "strings.lower", false) => {
                self.arity(callee, n, 1)?;
                let upper = callee.name == "strings.upper";
                match self.node(args[0])? {
                    Typed::Str(s) => Ok(Typed::Str(if upper {
                        StrExpr::Upper(Box::new(s))
                    } else {
                        StrExpr::Lower(Box::new(s))
                    })),
                    Typed::Set(s) => Ok(Typed::Set(if upper {
                        SetExpr::Upper(Box::new(s))
                    } else {
                        SetExpr::Lower(Box::new(s))
                    })),
                    other => Err(self.type_error(
                        args[0],
                        &callee.argument(0),
                        "a string or a set of strings",
                        &other,
                    )),
                }
            }
            (name, method) => Err(self.unknown_function(name, method, callee.at)),
        }
    }

    fn unknown_function(&self, name: &str, method: bool, at: Position) -> ConditionError {
        let message = if method {
            format!(
                "`.{name}` cannot be called on a value; the methods are {}",
                METHODS.join(", ")
            )
        } else if name == "contains" {
            "`contains` is a method: write set.contains(\"value\"), like \
             access_request.spec.roles.contains(\"dba\")"
                .to_string()
        } else if NOT_IMPLEMENTED_FUNCTIONS.contains(&name) {
            format!(
                "`{name}` is in Teleport's predicate language but this plugin does not \
                 implement it; the functions are {}",
                FUNCTIONS.join(", ")
            )
        } else if METHODS.contains(&name) {
            format!("`{name}` is a method: call it on a value, like x.{name}(…)")
        } else {
            format!(
                "unknown function `{name}`; the functions are {}",
                FUNCTIONS.join(", ")
            )
        };
        ConditionError::UnknownFunction {
            at,
            name: name.to_string(),
            message,
        }
    }

    /// A `clock_between` bound: a literal is read now (and refused if it is not `HH:MM`).
    fn clock(&mut self, node: &Node, what: &str) -> Result<ClockArg, ConditionError> {
        match self.string(node, what)? {
            StrExpr::Lit(text) => match parse_clock(&text) {
                Some(t) => Ok(ClockArg::Fixed(t)),
                None => Err(ConditionError::BadLiteral {
                    at: self.at(&node.span),
                    message: format!(
                        "{text:?} is not a time of day; write HH:MM in 24-hour time, like \"09:30\""
                    ),
                }),
            },
            computed => Ok(ClockArg::Computed(computed, self.at(&node.span))),
        }
    }
}
