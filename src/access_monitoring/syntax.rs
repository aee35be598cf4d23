//! Reading a condition's text into a syntax tree.
//!
//! Teleport parses conditions with Go's `go/parser` (`ParseExpr`) and then walks the Go syntax
//! tree (`vulcand/predicate`, `lib/utils/typical`). So the grammar here is Go's expression
//! grammar, lexed and parsed with winnow: names, selectors `a.b`, index `m["k"]`, calls `f(x)`
//! and method calls `x.f(y)`, string literals (both quotings, Go escapes), decimal integers,
//! parentheses, `!`, and binary operators with Go's precedence. Constructs that Go parses but
//! Teleport rejects (`<`, `+`, floats, …) are kept in the tree and refused with their position
//! when the tree is typed ([`super::compile`]), which is where Teleport refuses them too.
//!
//! Go ends an expression at a line break that follows a name, a literal, `)`, `]` or `}` (its
//! automatic semicolon), so a condition whose next line starts with `&&` is a syntax error in
//! Teleport; [`lex`] reports it the same way, with a hint.

use std::ops::Range;

use winnow::combinator::{alt, cut_err, fail, opt, peek, preceded, repeat, separated, terminated};
use winnow::error::{ContextError, ErrMode, StrContext, StrContextValue};
use winnow::prelude::*;
use winnow::stream::{LocatingSlice, TokenSlice};
use winnow::token::{any, literal, one_of, take_till, take_until, take_while};

use super::error::{ConditionError, Position};

/// Most tokens a condition may have. Real rules have tens; the cap keeps a hostile or broken
/// rule from costing memory or stack.
pub const MAX_TOKENS: usize = 4096;

/// Deepest nesting of brackets, and of operators and calls in the tree.
pub const MAX_DEPTH: usize = 64;

type PResult<T> = winnow::ModalResult<T>;
type Src<'s> = LocatingSlice<&'s str>;

/// Go's punctuation and operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Punct {
    AndAnd,
    OrOr,
    EqEq,
    NotEq,
    Lt,
    Le,
    Gt,
    Ge,
    Shl,
    Shr,
    AndNot,
    Arrow,
    Define,
    Ellipsis,
    Inc,
    Dec,
    Not,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Amp,
    Pipe,
    Caret,
    Tilde,
    Assign,
    LParen,
    RParen,
    LBracket,
    RBracket,
    LBrace,
    RBrace,
    Comma,
    Dot,
    Colon,
    Semicolon,
}

impl Punct {
    /// How it is written.
    pub fn text(self) -> &'static str {
        match self {
            Self::AndAnd => "&&",
            Self::OrOr => "||",
            Self::EqEq => "==",
            Self::NotEq => "!=",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
            Self::Shl => "<<",
            Self::Shr => ">>",
            Self::AndNot => "&^",
            Self::Arrow => "<-",
            Self::Define => ":=",
            Self::Ellipsis => "...",
            Self::Inc => "++",
            Self::Dec => "--",
            Self::Not => "!",
            Self::Plus => "+",
            Self::Minus => "-",
            Self::Star => "*",
            Self::Slash => "/",
            Self::Percent => "%",
            Self::Amp => "&",
            Self::Pipe => "|",
            Self::Caret => "^",
            Self::Tilde => "~",
            Self::Assign => "=",
            Self::LParen => "(",
            Self::RParen => ")",
            Self::LBracket => "[",
            Self::RBracket => "]",
            Self::LBrace => "{",
            Self::RBrace => "}",
            Self::Comma => ",",
            Self::Dot => ".",
            Self::Colon => ":",
            Self::Semicolon => ";",
        }
    }
}

/// A numeric literal: Teleport reads integers with `strconv.Atoi`, so only decimal digits work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Number {
    /// A decimal integer.
    Int(i64),
    /// Anything else Go calls a number, with the reason it cannot be used.
    Unsupported(&'static str),
}

/// A lexical token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok {
    /// A name (not a Go keyword).
    Ident(String),
    /// A Go keyword, which cannot be a name.
    Keyword(String),
    /// A string literal, decoded.
    Str(String),
    /// A number, as written and as read.
    Number(String, Number),
    /// A rune literal such as `'a'`.
    Char(String),
    /// An operator or punctuation.
    Punct(Punct),
    /// The end of the text.
    Eof,
}

/// A token with its byte span, and whether a line break came before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// What it is.
    pub tok: Tok,
    /// Where it is (bytes).
    pub span: Range<usize>,
    /// A line break (or a comment spanning lines) precedes it.
    pub line_break_before: bool,
}

impl Token {
    /// Go inserts a semicolon after a line that ends with this token.
    fn ends_line_expression(&self) -> bool {
        matches!(
            self.tok,
            Tok::Ident(_)
                | Tok::Str(_)
                | Tok::Number(..)
                | Tok::Char(_)
                | Tok::Punct(
                    Punct::RParen | Punct::RBracket | Punct::RBrace | Punct::Inc | Punct::Dec
                )
        ) || matches!(&self.tok, Tok::Keyword(k) if matches!(k.as_str(), "break" | "continue" | "fallthrough" | "return"))
    }

    /// The token as an error message names it.
    pub fn describe(&self) -> String {
        match &self.tok {
            Tok::Ident(name) => format!("the name `{name}`"),
            Tok::Keyword(word) => format!("the Go keyword `{word}`"),
            Tok::Str(value) => format!("the string {value:?}"),
            Tok::Number(raw, _) => format!("the number `{raw}`"),
            Tok::Char(raw) => format!("the character literal `{raw}`"),
            Tok::Punct(p) => format!("`{}`", p.text()),
            Tok::Eof => "the end of the condition".to_string(),
        }
    }
}

const KEYWORDS: [&str; 25] = [
    "break",
    "case",
    "chan",
    "const",
    "continue",
    "default",
    "defer",
    "else",
    "fallthrough",
    "for",
    "func",
    "go",
    "goto",
    "if",
    "import",
    "interface",
    "map",
    "package",
    "range",
    "return",
    "select",
    "struct",
    "switch",
    "type",
    "var",
];

fn expected(what: &'static str) -> StrContext {
    StrContext::Expected(StrContextValue::Description(what))
}

/// Fails here, without consuming, saying what was expected.
fn cut_expected<I, T>(input: &mut I, what: &'static str) -> PResult<T>
where
    I: winnow::stream::Stream,
{
    cut_err(fail.context(expected(what))).parse_next(input)
}

// ---------------------------------------------------------------------------------------------
// Lexer

/// Blanks and comments; true when they hold a line break.
fn trivia(input: &mut Src<'_>) -> PResult<bool> {
    repeat(
        0..,
        alt((
            take_while(1.., [' ', '\t', '\r']).value(false),
            '\n'.value(true),
            ("//", take_till(0.., '\n')).value(false),
            preceded(
                "/*",
                cut_err(terminated(take_until(0.., "*/"), "*/"))
                    .context(expected("`*/` closing the comment")),
            )
            .map(|body: &str| body.contains('\n')),
        )),
    )
    .fold(|| false, |seen, line_break| seen || line_break)
    .parse_next(input)
}

fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_ident_continue(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

fn word(input: &mut Src<'_>) -> PResult<Tok> {
    (one_of(is_ident_start), take_while(0.., is_ident_continue))
        .take()
        .map(|name: &str| {
            if KEYWORDS.contains(&name) {
                Tok::Keyword(name.to_string())
            } else {
                Tok::Ident(name.to_string())
            }
        })
        .parse_next(input)
}

fn number(input: &mut Src<'_>) -> PResult<Tok> {
    let raw: &str = (
        alt((
            one_of('0'..='9').void(),
            ('.', peek(one_of('0'..='9'))).void(),
        )),
        take_while(0.., |c: char| {
            c.is_ascii_alphanumeric() || c == '_' || c == '.'
        }),
    )
        .take()
        .parse_next(input)?;
    Ok(Tok::Number(raw.to_string(), classify_number(raw)))
}

fn classify_number(raw: &str) -> Number {
    let lower = raw.to_ascii_lowercase();
    let hex = lower.starts_with("0x");
    if raw.bytes().all(|b| b.is_ascii_digit()) {
        // Go reads a leading 0 as octal, where 8 and 9 are invalid; Atoi then reads the digits
        // as decimal, which is what Teleport does with "010".
        if raw.len() > 1 && raw.starts_with('0') && raw.bytes().any(|b| b == b'8' || b == b'9') {
            return Number::Unsupported("an octal integer with the digit 8 or 9");
        }
        return raw
            .parse::<i64>()
            .map(Number::Int)
            .unwrap_or(Number::Unsupported("an integer too large"));
    }
    if lower.ends_with('i') {
        Number::Unsupported("an imaginary number")
    } else if lower.contains('.') || lower.contains('p') || (!hex && lower.contains('e')) {
        Number::Unsupported("a floating-point number")
    } else {
        Number::Unsupported("an integer not written in plain decimal digits")
    }
}

fn push_char(out: &mut Vec<u8>, c: char) {
    let mut buf = [0u8; 4];
    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
}

fn hex_value(digits: &str) -> u32 {
    u32::from_str_radix(digits, 16).unwrap_or(u32::MAX)
}

/// One escape after a backslash inside `"…"`, as Go's `strconv.Unquote` reads it.
fn escape(input: &mut Src<'_>, out: &mut Vec<u8>) -> PResult<()> {
    let simple = |c: char| -> Option<u8> {
        Some(match c {
            'a' => 0x07,
            'b' => 0x08,
            'f' => 0x0c,
            'n' => b'\n',
            'r' => b'\r',
            't' => b'\t',
            'v' => 0x0b,
            '\\' => b'\\',
            '"' => b'"',
            _ => return None,
        })
    };
    let Some(c) = opt(peek(any)).parse_next(input)? else {
        return cut_expected(input, "an escape after `\\`");
    };
    if let Some(byte) = simple(c) {
        any.parse_next(input)?;
        out.push(byte);
        return Ok(());
    }
    match c {
        '0'..='7' => {
            let digits: &str = cut_err(take_while(3, '0'..='7'))
                .context(expected("three octal digits after `\\`"))
                .parse_next(input)?;
            let value = u32::from_str_radix(digits, 8).unwrap_or(u32::MAX);
            match u8::try_from(value) {
                Ok(byte) => out.push(byte),
                Err(_) => return cut_expected(input, "an octal escape no larger than \\377"),
            }
        }
        'x' => {
            any.parse_next(input)?;
            let digits: &str = cut_err(take_while(2, |c: char| c.is_ascii_hexdigit()))
                .context(expected("two hexadecimal digits after `\\x`"))
                .parse_next(input)?;
            out.push(u8::try_from(hex_value(digits)).unwrap_or(0));
        }
        'u' | 'U' => {
            any.parse_next(input)?;
            let (len, what) = if c == 'u' {
                (4, "four hexadecimal digits after `\\u`")
            } else {
                (8, "eight hexadecimal digits after `\\U`")
            };
            let digits: &str = cut_err(take_while(len, |c: char| c.is_ascii_hexdigit()))
                .context(expected(what))
                .parse_next(input)?;
            match char::from_u32(hex_value(digits)) {
                Some(ch) => push_char(out, ch),
                None => return cut_expected(input, "a Unicode code point (not a surrogate)"),
            }
        }
        _ => {
            return cut_expected(
                input,
                "an escape such as \\n, \\t, \\\\, \\\" or \\u00e9 after `\\`",
            );
        }
    }
    Ok(())
}

/// `"…"` with Go's escapes.
fn interpreted_string(input: &mut Src<'_>) -> PResult<Tok> {
    '"'.parse_next(input)?;
    let mut bytes = Vec::new();
    loop {
        match opt(peek(any)).parse_next(input)? {
            None => return cut_expected(input, "`\"` closing the string"),
            Some('\n') => {
                return cut_expected(input, "`\"` closing the string before the line ends");
            }
            Some('"') => {
                any.parse_next(input)?;
                break;
            }
            Some('\\') => {
                any.parse_next(input)?;
                escape(input, &mut bytes)?;
            }
            Some(c) => {
                any.parse_next(input)?;
                push_char(&mut bytes, c);
            }
        }
    }
    match String::from_utf8(bytes) {
        Ok(text) => Ok(Tok::Str(text)),
        Err(_) => cut_expected(
            input,
            "escapes that form valid UTF-8 (Teleport names, traits and labels are text)",
        ),
    }
}

/// `` `…` ``: no escapes; Go drops carriage returns.
fn raw_string(input: &mut Src<'_>) -> PResult<Tok> {
    preceded(
        '`',
        cut_err(terminated(take_till(0.., '`'), '`'))
            .context(expected("a backtick closing the string")),
    )
    .map(|body: &str| Tok::Str(body.replace('\r', "")))
    .parse_next(input)
}

fn char_literal(input: &mut Src<'_>) -> PResult<Tok> {
    (
        '\'',
        cut_err(terminated(take_till(0.., ['\'', '\n']), '\''))
            .context(expected("`'` closing the character literal")),
    )
        .take()
        .map(|raw: &str| Tok::Char(raw.to_string()))
        .parse_next(input)
}

fn long_punct(input: &mut Src<'_>) -> PResult<Punct> {
    use Punct::*;
    alt([
        literal("...").value(Ellipsis),
        literal("&&").value(AndAnd),
        literal("||").value(OrOr),
        literal("==").value(EqEq),
        literal("!=").value(NotEq),
        literal("<=").value(Le),
        literal(">=").value(Ge),
        literal("<<").value(Shl),
        literal(">>").value(Shr),
        literal("&^").value(AndNot),
        literal("<-").value(Arrow),
        literal(":=").value(Define),
        literal("++").value(Inc),
        literal("--").value(Dec),
    ])
    .parse_next(input)
}

fn operator_char(input: &mut Src<'_>) -> PResult<Punct> {
    use Punct::*;
    alt([
        '!'.value(Not),
        '<'.value(Lt),
        '>'.value(Gt),
        '+'.value(Plus),
        '-'.value(Minus),
        '*'.value(Star),
        '/'.value(Slash),
        '%'.value(Percent),
        '&'.value(Amp),
        '|'.value(Pipe),
        '^'.value(Caret),
        '~'.value(Tilde),
    ])
    .parse_next(input)
}

fn punctuation_char(input: &mut Src<'_>) -> PResult<Punct> {
    use Punct::*;
    alt([
        '='.value(Assign),
        '('.value(LParen),
        ')'.value(RParen),
        '['.value(LBracket),
        ']'.value(RBracket),
        '{'.value(LBrace),
        '}'.value(RBrace),
        ','.value(Comma),
        '.'.value(Dot),
        ':'.value(Colon),
        ';'.value(Semicolon),
    ])
    .parse_next(input)
}

fn punct(input: &mut Src<'_>) -> PResult<Tok> {
    alt((long_punct, operator_char, punctuation_char))
        .map(Tok::Punct)
        .parse_next(input)
}

fn token(input: &mut Src<'_>) -> PResult<Tok> {
    let c = peek(any).parse_next(input)?;
    match c {
        c if is_ident_start(c) => word(input),
        '0'..='9' => number(input),
        '.' => alt((number, punct)).parse_next(input),
        '"' => interpreted_string(input),
        '`' => raw_string(input),
        '\'' => char_literal(input),
        _ => alt((punct, |i: &mut Src<'_>| {
            cut_expected(i, "a name, a string, a number or an operator")
        }))
        .parse_next(input),
    }
}

fn tokens(input: &mut Src<'_>) -> PResult<Vec<Token>> {
    let mut out: Vec<Token> = repeat(
        0..,
        (trivia, token.with_span()).map(|(line_break_before, (tok, span))| Token {
            tok,
            span,
            line_break_before,
        }),
    )
    .parse_next(input)?;
    let line_break_before = trivia.parse_next(input)?;
    let end = input.current_token_start_offset();
    out.push(Token {
        tok: Tok::Eof,
        span: end..end,
        line_break_before,
    });
    Ok(out)
}

trait CurrentOffset {
    fn current_token_start_offset(&self) -> usize;
}

impl CurrentOffset for Src<'_> {
    fn current_token_start_offset(&self) -> usize {
        winnow::stream::Location::current_token_start(self)
    }
}

/// The expectations a winnow error collected, in words.
fn expectations(error: &ContextError) -> String {
    let mut seen: Vec<String> = Vec::new();
    for context in error.context() {
        if let StrContext::Expected(value) = context {
            let text = match value {
                StrContextValue::Description(d) => (*d).to_string(),
                StrContextValue::StringLiteral(s) => format!("`{s}`"),
                StrContextValue::CharLiteral(c) => format!("`{c}`"),
                _ => value.to_string(),
            };
            if !seen.contains(&text) {
                seen.push(text);
            }
        }
    }
    // A specific expectation ("an operand after `&&`") says more than the generic one of the
    // operand parser it wraps.
    if seen.len() > 1 {
        seen.retain(|s| s != OPERAND);
    }
    match seen.len() {
        0 => "a valid condition".to_string(),
        1 => seen.remove(0),
        _ => {
            let last = seen.pop().unwrap_or_default();
            format!("{} or {last}", seen.join(", "))
        }
    }
}

fn describe_char_at(text: &str, offset: usize) -> String {
    match text.get(offset..).and_then(|rest| rest.chars().next()) {
        None => "the end of the condition".to_string(),
        Some('\n') => "a line break".to_string(),
        Some(c) if c.is_control() || c.is_whitespace() => format!("the character {c:?}"),
        Some(c) => format!("`{c}`"),
    }
}

/// Splits the text into tokens (the last one is [`Tok::Eof`]), enforcing the size limits and
/// Go's line-break rule.
pub fn lex(text: &str) -> Result<Vec<Token>, ConditionError> {
    let tokens = tokens.parse(LocatingSlice::new(text)).map_err(|e| {
        let offset = e.offset();
        ConditionError::Syntax {
            at: Position::locate(text, offset),
            expected: expectations(e.inner()),
            found: describe_char_at(text, offset),
        }
    })?;
    if tokens.len() == 1 {
        return Err(ConditionError::Empty);
    }
    if tokens.len() - 1 > MAX_TOKENS {
        return Err(ConditionError::TooLong {
            tokens: tokens.len() - 1,
            max: MAX_TOKENS,
        });
    }
    let mut depth = 0usize;
    for (index, token) in tokens.iter().enumerate() {
        match token.tok {
            Tok::Punct(Punct::LParen | Punct::LBracket | Punct::LBrace) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(ConditionError::TooDeep {
                        at: Position::locate(text, token.span.start),
                        max: MAX_DEPTH,
                    });
                }
            }
            Tok::Punct(Punct::RParen | Punct::RBracket | Punct::RBrace) => {
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
        if index > 0
            && token.line_break_before
            && token.tok != Tok::Eof
            && tokens[index - 1].ends_line_expression()
        {
            return Err(ConditionError::LineBreak {
                at: Position::locate(text, token.span.start),
                found: token.describe(),
                previous: tokens[index - 1].describe(),
            });
        }
    }
    Ok(tokens)
}

// ---------------------------------------------------------------------------------------------
// Parser

/// A syntax-tree node with its byte span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// What it is.
    pub kind: NodeKind,
    /// Where it is (bytes).
    pub span: Range<usize>,
}

/// The shapes of Go expression a condition can take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    /// A bare name: `true`, `set`, `access_request`.
    Ident(String),
    /// A string literal.
    Str(String),
    /// A decimal integer literal.
    Int(i64),
    /// A literal Go allows and Teleport does not (float, rune, hex integer), described.
    Unsupported(String),
    /// `(x)`.
    Paren(Box<Node>),
    /// `x.name`.
    Field {
        /// `x`.
        base: Box<Node>,
        /// `name`.
        name: String,
        /// Where `name` is.
        name_span: Range<usize>,
    },
    /// `x[index]`.
    Index {
        /// `x`.
        base: Box<Node>,
        /// The key.
        index: Box<Node>,
    },
    /// `callee(args…)`.
    Call {
        /// A name, `pkg.name`, or `receiver.method`.
        callee: Box<Node>,
        /// The arguments.
        args: Vec<Node>,
    },
    /// A prefix operator applied to an operand.
    Unary {
        /// The operator.
        op: Punct,
        /// Where the operator is.
        op_span: Range<usize>,
        /// The operand.
        operand: Box<Node>,
    },
    /// A binary operator other than `&&` and `||`.
    Binary {
        /// The operator.
        op: Punct,
        /// Where the operator is.
        op_span: Range<usize>,
        /// Left operand.
        lhs: Box<Node>,
        /// Right operand.
        rhs: Box<Node>,
    },
    /// `a && b && …`, kept flat so long conjunctions do not nest.
    And(Vec<Node>),
    /// `a || b || …`, kept flat.
    Or(Vec<Node>),
}

type Tokens<'t> = TokenSlice<'t, Token>;

/// One token of the given punctuation.
fn tok_punct<'t>(p: Punct) -> impl Parser<Tokens<'t>, &'t Token, ErrMode<ContextError>> {
    any.verify(move |t: &&Token| t.tok == Tok::Punct(p))
        .context(StrContext::Expected(StrContextValue::StringLiteral(
            p.text(),
        )))
}

/// One token among several operators, with its span.
fn tok_operator<'t>(
    ops: &'static [Punct],
) -> impl Parser<Tokens<'t>, (Punct, Range<usize>), ErrMode<ContextError>> {
    any.verify_map(move |t: &Token| match t.tok {
        Tok::Punct(p) if ops.contains(&p) => Some((p, t.span.clone())),
        _ => None,
    })
}

fn tok_ident<'t>(input: &mut Tokens<'t>) -> PResult<(String, Range<usize>)> {
    any.verify_map(|t: &Token| match &t.tok {
        Tok::Ident(name) => Some((name.clone(), t.span.clone())),
        _ => None,
    })
    .parse_next(input)
}

fn join(start: &Node, end_span: &Range<usize>) -> Range<usize> {
    start.span.start..end_span.end.max(start.span.end)
}

fn flat(first: Node, rest: Vec<Node>, make: fn(Vec<Node>) -> NodeKind) -> Node {
    if rest.is_empty() {
        return first;
    }
    let end = rest
        .last()
        .map(|n| n.span.clone())
        .unwrap_or(first.span.clone());
    let span = join(&first, &end);
    let mut all = Vec::with_capacity(rest.len() + 1);
    all.push(first);
    all.extend(rest);
    Node {
        kind: make(all),
        span,
    }
}

fn expr(input: &mut Tokens<'_>) -> PResult<Node> {
    let first = and_expr.parse_next(input)?;
    let rest: Vec<Node> = repeat(
        0..,
        preceded(
            tok_punct(Punct::OrOr),
            cut_err(and_expr).context(expected("an operand after `||`")),
        ),
    )
    .parse_next(input)?;
    Ok(flat(first, rest, NodeKind::Or))
}

fn and_expr(input: &mut Tokens<'_>) -> PResult<Node> {
    let first = comparison.parse_next(input)?;
    let rest: Vec<Node> = repeat(
        0..,
        preceded(
            tok_punct(Punct::AndAnd),
            cut_err(comparison).context(expected("an operand after `&&`")),
        ),
    )
    .parse_next(input)?;
    Ok(flat(first, rest, NodeKind::And))
}

const COMPARISON: &[Punct] = &[
    Punct::EqEq,
    Punct::NotEq,
    Punct::Lt,
    Punct::Le,
    Punct::Gt,
    Punct::Ge,
];
const ADDITIVE: &[Punct] = &[Punct::Plus, Punct::Minus, Punct::Pipe, Punct::Caret];
const MULTIPLICATIVE: &[Punct] = &[
    Punct::Star,
    Punct::Slash,
    Punct::Percent,
    Punct::Shl,
    Punct::Shr,
    Punct::Amp,
    Punct::AndNot,
];
const PREFIX: &[Punct] = &[
    Punct::Not,
    Punct::Minus,
    Punct::Plus,
    Punct::Caret,
    Punct::Amp,
    Punct::Star,
    Punct::Arrow,
    Punct::Tilde,
];

/// One level of left-associative binary operators (Go precedence 3, 4 or 5).
fn binary_level<'t>(
    input: &mut Tokens<'t>,
    ops: &'static [Punct],
    next: fn(&mut Tokens<'t>) -> PResult<Node>,
) -> PResult<Node> {
    let first = next(input)?;
    let rest: Vec<((Punct, Range<usize>), Node)> = repeat(
        0..,
        (
            tok_operator(ops),
            cut_err(next).context(expected("an operand after the operator")),
        ),
    )
    .parse_next(input)?;
    Ok(rest.into_iter().fold(first, |lhs, ((op, op_span), rhs)| {
        let span = join(&lhs, &rhs.span);
        Node {
            kind: NodeKind::Binary {
                op,
                op_span,
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
            },
            span,
        }
    }))
}

fn comparison(input: &mut Tokens<'_>) -> PResult<Node> {
    binary_level(input, COMPARISON, additive)
}

fn additive(input: &mut Tokens<'_>) -> PResult<Node> {
    binary_level(input, ADDITIVE, multiplicative)
}

fn multiplicative(input: &mut Tokens<'_>) -> PResult<Node> {
    binary_level(input, MULTIPLICATIVE, unary)
}

fn unary(input: &mut Tokens<'_>) -> PResult<Node> {
    let ops: Vec<(Punct, Range<usize>)> = repeat(0.., tok_operator(PREFIX)).parse_next(input)?;
    let operand = if ops.is_empty() {
        postfix.parse_next(input)?
    } else {
        cut_err(postfix)
            .context(expected("an operand after `!`"))
            .parse_next(input)?
    };
    Ok(ops
        .into_iter()
        .rev()
        .fold(operand, |operand, (op, op_span)| {
            let span = op_span.start..operand.span.end;
            Node {
                kind: NodeKind::Unary {
                    op,
                    op_span,
                    operand: Box::new(operand),
                },
                span,
            }
        }))
}

enum Suffix {
    Field(String, Range<usize>),
    Index(Node, Range<usize>),
    Call(Vec<Node>, Range<usize>),
}

fn field_suffix(input: &mut Tokens<'_>) -> PResult<Suffix> {
    preceded(
        tok_punct(Punct::Dot),
        cut_err(tok_ident).context(expected("a name after `.`")),
    )
    .map(|(name, span)| Suffix::Field(name, span))
    .parse_next(input)
}

fn index_suffix(input: &mut Tokens<'_>) -> PResult<Suffix> {
    tok_punct(Punct::LBracket).parse_next(input)?;
    let index = cut_err(expr)
        .context(expected("a key inside `[…]`"))
        .parse_next(input)?;
    let close = cut_err(tok_punct(Punct::RBracket)).parse_next(input)?;
    Ok(Suffix::Index(index, close.span.clone()))
}

fn call_suffix(input: &mut Tokens<'_>) -> PResult<Suffix> {
    tok_punct(Punct::LParen).parse_next(input)?;
    let args: Option<Vec<Node>> = opt(terminated(
        separated(1.., expr, tok_punct(Punct::Comma)),
        opt(tok_punct(Punct::Comma)),
    ))
    .parse_next(input)?;
    // After an argument a comma may follow; before one, an argument may.
    let more = if args.is_some() { "`,`" } else { "an argument" };
    let close = cut_err(tok_punct(Punct::RParen))
        .context(expected(more))
        .parse_next(input)?;
    Ok(Suffix::Call(args.unwrap_or_default(), close.span.clone()))
}

fn postfix(input: &mut Tokens<'_>) -> PResult<Node> {
    let base = primary.parse_next(input)?;
    let suffixes: Vec<Suffix> =
        repeat(0.., alt((field_suffix, index_suffix, call_suffix))).parse_next(input)?;
    Ok(suffixes
        .into_iter()
        .fold(base, |base, suffix| match suffix {
            Suffix::Field(name, name_span) => Node {
                span: join(&base, &name_span),
                kind: NodeKind::Field {
                    base: Box::new(base),
                    name,
                    name_span,
                },
            },
            Suffix::Index(index, close) => Node {
                span: join(&base, &close),
                kind: NodeKind::Index {
                    base: Box::new(base),
                    index: Box::new(index),
                },
            },
            Suffix::Call(args, close) => Node {
                span: join(&base, &close),
                kind: NodeKind::Call {
                    callee: Box::new(base),
                    args,
                },
            },
        }))
}

/// What can start an operand.
const OPERAND: &str = "a name, a string, a number or `(`";

fn primary(input: &mut Tokens<'_>) -> PResult<Node> {
    const WHAT: &str = OPERAND;
    let Some(token) = opt(peek(any)).parse_next(input)? else {
        return fail.context(expected(WHAT)).parse_next(input);
    };
    let token: &Token = token;
    let span = token.span.clone();
    let kind = match &token.tok {
        Tok::Ident(name) => NodeKind::Ident(name.clone()),
        Tok::Str(value) => NodeKind::Str(value.clone()),
        Tok::Number(_, Number::Int(value)) => NodeKind::Int(*value),
        Tok::Number(raw, Number::Unsupported(reason)) => {
            NodeKind::Unsupported(format!("{reason} (`{raw}`)"))
        }
        Tok::Char(raw) => NodeKind::Unsupported(format!("a character literal (`{raw}`)")),
        Tok::Punct(Punct::LParen) => {
            any.parse_next(input)?;
            let inner = cut_err(expr)
                .context(expected("an expression inside `(…)`"))
                .parse_next(input)?;
            let close = cut_err(tok_punct(Punct::RParen)).parse_next(input)?;
            return Ok(Node {
                span: span.start..close.span.end,
                kind: NodeKind::Paren(Box::new(inner)),
            });
        }
        _ => return fail.context(expected(WHAT)).parse_next(input),
    };
    any.parse_next(input)?;
    Ok(Node { kind, span })
}

fn condition(input: &mut Tokens<'_>) -> PResult<Node> {
    let node = expr.parse_next(input)?;
    cut_err(any.verify(|t: &&Token| t.tok == Tok::Eof))
        .context(expected(
            "an operator such as `&&`, `||` or `==`, or the end of the condition",
        ))
        .parse_next(input)?;
    Ok(node)
}

/// How deep the tree nests (counted without recursion, so a hostile tree cannot overflow).
fn depth(root: &Node) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(root, 1usize)];
    while let Some((node, level)) = stack.pop() {
        deepest = deepest.max(level);
        match &node.kind {
            NodeKind::Ident(_) | NodeKind::Str(_) | NodeKind::Int(_) | NodeKind::Unsupported(_) => {
            }
            NodeKind::Paren(inner) => stack.push((inner, level + 1)),
            NodeKind::Field { base, .. } => stack.push((base, level + 1)),
            NodeKind::Index { base, index } => {
                stack.push((base, level + 1));
                stack.push((index, level + 1));
            }
            NodeKind::Call { callee, args } => {
                stack.push((callee, level + 1));
                stack.extend(args.iter().map(|a| (a, level + 1)));
            }
            NodeKind::Unary { operand, .. } => stack.push((operand, level + 1)),
            NodeKind::Binary { lhs, rhs, .. } => {
                stack.push((lhs, level + 1));
                stack.push((rhs, level + 1));
            }
            NodeKind::And(items) | NodeKind::Or(items) => {
                stack.extend(items.iter().map(|a| (a, level + 1)));
            }
        }
    }
    deepest
}

/// Parses a condition's text into its syntax tree.
pub fn parse(text: &str) -> Result<Node, ConditionError> {
    let tokens = lex(text)?;
    let node = condition.parse(TokenSlice::new(&tokens)).map_err(|e| {
        let token = tokens
            .get(e.offset())
            .or_else(|| tokens.last())
            .cloned()
            .unwrap_or(Token {
                tok: Tok::Eof,
                span: text.len()..text.len(),
                line_break_before: false,
            });
        ConditionError::Syntax {
            at: Position::locate(text, token.span.start),
            expected: expectations(e.inner()),
            found: token.describe(),
        }
    })?;
    if depth(&node) > MAX_DEPTH {
        return Err(ConditionError::TooDeep {
            at: Position::locate(text, node.span.start),
            max: MAX_DEPTH,
        });
    }
    Ok(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<Tok> {
        lex(text).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn lexes_go_strings_with_escapes_and_raw_strings() {
        assert_eq!(
            kinds(r#""a\tb\u00e9\x41\101\"" `r\n`"#),
            vec![
                Tok::Str("a\tbéAA\"".into()),
                Tok::Str("r\\n".into()),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn lexes_longest_operators_first() {
        assert_eq!(
            kinds("a&&!b||c!=d"),
            vec![
                Tok::Ident("a".into()),
                Tok::Punct(Punct::AndAnd),
                Tok::Punct(Punct::Not),
                Tok::Ident("b".into()),
                Tok::Punct(Punct::OrOr),
                Tok::Ident("c".into()),
                Tok::Punct(Punct::NotEq),
                Tok::Ident("d".into()),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn numbers_follow_atoi() {
        assert_eq!(classify_number("42"), Number::Int(42));
        assert_eq!(classify_number("010"), Number::Int(10));
        assert!(matches!(classify_number("0x1F"), Number::Unsupported(_)));
        assert!(matches!(classify_number("1.5"), Number::Unsupported(_)));
        assert!(matches!(classify_number("1_000"), Number::Unsupported(_)));
        assert!(matches!(
            classify_number("99999999999999999999"),
            Number::Unsupported(_)
        ));
    }

    #[test]
    fn comments_count_as_blanks() {
        assert_eq!(
            kinds("a /* x */ && // y\n b"),
            vec![
                Tok::Ident("a".into()),
                Tok::Punct(Punct::AndAnd),
                Tok::Ident("b".into()),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn and_or_stay_flat() {
        let node = parse("a && b && c || d").unwrap();
        let NodeKind::Or(items) = node.kind else {
            panic!("expected ||")
        };
        assert_eq!(items.len(), 2);
        assert!(matches!(&items[0].kind, NodeKind::And(v) if v.len() == 3));
    }

    #[test]
    fn depth_limit_applies_to_long_prefix_chains() {
        let text = format!("{}true", "!".repeat(MAX_DEPTH + 5));
        assert!(matches!(parse(&text), Err(ConditionError::TooDeep { .. })));
    }
}
