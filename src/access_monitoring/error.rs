//! What can be wrong with a condition, said so an admin can fix the rule in Teleport.

use std::fmt;

/// A place in a condition's text: 1-based line and column (in characters), and the byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
    /// Byte offset from the start of the condition.
    pub offset: usize,
}

impl Position {
    /// The position of byte `offset` in `text` (clamped to the text's end).
    pub fn locate(text: &str, offset: usize) -> Self {
        let offset = offset.min(text.len());
        let before = text.get(..offset).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Position {
            line,
            column,
            offset,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// Why a condition cannot be used. Every variant but [`ConditionError::Empty`],
/// [`ConditionError::TooLong`] and [`ConditionError::NotBoolean`] names where in the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConditionError {
    /// Nothing but blanks and comments.
    #[error(
        "the condition is empty; write a predicate such as access_request.spec.roles.contains(\"dba\")"
    )]
    Empty,
    /// More tokens than any sensible rule has; refused so a hostile rule cannot cost memory.
    #[error("the condition is too long: {tokens} tokens, at most {max}")]
    TooLong {
        /// Tokens found.
        tokens: usize,
        /// The limit.
        max: usize,
    },
    /// Parentheses, calls or operators nested beyond the limit.
    #[error("at {at}: the condition nests more than {max} levels deep")]
    TooDeep {
        /// Where the limit was passed.
        at: Position,
        /// The limit.
        max: usize,
    },
    /// Not Go expression syntax.
    #[error("at {at}: expected {expected}, found {found}")]
    Syntax {
        /// Where.
        at: Position,
        /// What would have been accepted there.
        expected: String,
        /// What is there.
        found: String,
    },
    /// Go ends an expression at a line break after a name, a literal, `)` or `]`, so Teleport's
    /// parser rejects an operator that starts the next line.
    #[error(
        "at {at}: {found} starts a new line, but the line before ends with {previous}, where a \
         Go expression ends (Teleport parses conditions as Go); move {found} to the end of the \
         line before"
    )]
    LineBreak {
        /// Where the next line's first token is.
        at: Position,
        /// That token.
        found: String,
        /// The last token of the line before.
        previous: String,
    },
    /// A name that is not one of the condition variables.
    #[error("at {at}: unknown name `{name}`; the names are {known}")]
    UnknownName {
        /// Where.
        at: Position,
        /// The dotted name as written.
        name: String,
        /// The variables a condition can use.
        known: String,
    },
    /// A function this plugin does not have.
    #[error("at {at}: {message}")]
    UnknownFunction {
        /// Where.
        at: Position,
        /// The function name as written.
        name: String,
        /// What to do instead.
        message: String,
    },
    /// Syntax Go accepts but Teleport's condition language does not (`<`, `+`, floats, …).
    #[error("at {at}: {what} is not supported in conditions{hint}")]
    Unsupported {
        /// Where.
        at: Position,
        /// The construct.
        what: String,
        /// How to say it instead, starting with "; " (or empty).
        hint: String,
    },
    /// A value of the wrong type, e.g. a set compared with a string.
    #[error("at {at}: {message}")]
    Type {
        /// Where the offending value starts.
        at: Position,
        /// What was expected and found.
        message: String,
    },
    /// A function called with the wrong number of arguments.
    #[error("at {at}: `{function}` takes {expected}, given {given}")]
    Arity {
        /// Where the call starts.
        at: Position,
        /// The function or method.
        function: String,
        /// How many it takes, in words.
        expected: String,
        /// How many were given.
        given: usize,
    },
    /// A literal that cannot be read (a time of day, an RFC 3339 time, an integer).
    #[error("at {at}: {message}")]
    BadLiteral {
        /// Where the literal starts.
        at: Position,
        /// What is wrong and what to write.
        message: String,
    },
    /// The whole condition is not true/false, so it could never match (Teleport's plugin treats
    /// such a rule as never matching).
    #[error("the condition is {found}, not true or false, so the rule could never match")]
    NotBoolean {
        /// The type it has.
        found: &'static str,
    },
}

impl ConditionError {
    /// Where in the text the problem is, when it is at one place.
    pub fn position(&self) -> Option<Position> {
        match self {
            Self::Empty | Self::TooLong { .. } | Self::NotBoolean { .. } => None,
            Self::TooDeep { at, .. }
            | Self::Syntax { at, .. }
            | Self::LineBreak { at, .. }
            | Self::UnknownName { at, .. }
            | Self::UnknownFunction { at, .. }
            | Self::Unsupported { at, .. }
            | Self::Type { at, .. }
            | Self::Arity { at, .. }
            | Self::BadLiteral { at, .. } => Some(*at),
        }
    }
}

/// A condition that parsed but will not do what it seems to say. The rule still applies, with
/// exactly the meaning Teleport's plugin gives it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at {at}: {message}")]
pub struct ConditionWarning {
    /// Where.
    pub at: Position,
    /// What happens and how to write what was probably meant.
    pub message: String,
}

/// A condition failed for one request: only arguments computed from the request can do this
/// (e.g. `clock_between` given a reason that is not `HH:MM`). The rule does not match that
/// request, as in Teleport's plugin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at {at}: {message}")]
pub struct EvalError {
    /// Where the failing call is.
    pub at: Position,
    /// What failed.
    pub message: String,
}
