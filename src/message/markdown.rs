//! Text from people, made to render as text in Mattermost.
//!
//! Requesters write the request reason, reviewers write theirs, and Teleport names (users,
//! roles, resources, reviewers) come from admins or an identity provider. None of it may make
//! a mention, a link, an image, HTML, a heading, a quote, a list or a second status line. The
//! one construct whose content Markdown never interprets is code, so:
//!
//! - free text becomes a **fenced code block** on lines of its own ([`code_block`]). Only a
//!   closing fence line ends it (CommonMark §4.5; Mattermost's `marked` fork and its mobile
//!   `commonmark` agree), and no line can be one: every backtick inside is followed by
//!   U+FEFF, so no run of three exists. Blank lines, quotes, lists, headings, `~~~` lines and
//!   HTML stay inside. Line endings (CRLF, a lone CR) become `\n` first, so every parser sees
//!   the same lines.
//! - a name becomes an **inline code span** on one line ([`code_span`]): its line breaks
//!   become spaces (a span cannot outlive its paragraph, but a blank line would end the
//!   paragraph first), and backticks are neutralized the same way, inside a two-backtick
//!   delimiter that no single backtick can close.
//!
//! Mattermost's server finds mentions only in text nodes outside code
//! (`markdown.Inspect` in `server/public/shared/markdown`), so neither notifies anyone.
//!
//! Teleport's own plugin wraps the reason as an inline "```" span instead; that span ends at
//! the first blank line. This is the one deliberate break with its post format.

/// U+FEFF after every backtick: no two backticks are ever adjacent in escaped text.
const BREAK: char = '\u{feff}';

/// The fence around free text: three backticks, which escaped text never contains.
const FENCE: &str = "```";

/// `s` with every line ending as `\n`, and a U+FEFF after every backtick.
fn neutralized(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push('\n');
            }
            '`' => {
                out.push('`');
                out.push(BREAK);
            }
            // Mattermost refuses to save a message holding NUL ("Unable to save the Post"),
            // and every CommonMark parser shows it as U+FFFD anyway.
            '\0' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// A name on one line as an inline code span, cut after `max_chars` characters with `…`.
/// Empty names read `(none)`.
pub fn code_span(name: &str, max_chars: usize) -> String {
    let one_line: String = name
        .trim()
        .chars()
        .map(|c| match c {
            c if is_line_break(c) => ' ',
            // Mattermost refuses to save a message holding NUL ("Unable to save the Post").
            '\0' => '\u{fffd}',
            c => c,
        })
        .collect();
    if one_line.trim().is_empty() {
        return "(none)".to_owned();
    }
    let mut shown: String = one_line.chars().take(max_chars).collect();
    if one_line.chars().count() > max_chars {
        shown.push('…');
    }
    if !shown.contains('`') {
        return format!("`{shown}`");
    }
    // Spaces keep the delimiters apart from a backtick at either end; parsers strip one
    // space on each side of a span's content.
    format!("`` {} ``", neutralized(&shown))
}

/// Characters that end a line somewhere: in CommonMark (LF, CR), or in other renderers and
/// editors (VT, FF, NEL, LINE and PARAGRAPH SEPARATOR).
fn is_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '\u{0b}' | '\u{0c}' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

/// Free text escaped for [`code_block`], and whether it had to be cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The fenced block: a fence line, the text, a fence line. No trailing newline.
    pub text: String,
    /// True when the text was cut to fit.
    pub truncated: bool,
}

/// Free text as a fenced code block: the text trimmed, its line endings normalized, a U+FEFF
/// after every backtick, and at most `max_chars` characters of it (characters are never
/// split). `None` for text that is empty once trimmed.
pub fn code_block(text: &str, max_chars: usize) -> Option<Block> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return None;
    }
    let escaped = neutralized(trimmed);
    let total = escaped.chars().count();
    let mut body: String = escaped.chars().take(max_chars.max(1)).collect();
    // A cut between a backtick and its mark would leave a bare backtick at the end.
    if body.ends_with('`') {
        body.push(BREAK);
    }
    Some(Block {
        text: format!("{FENCE}\n{body}\n{FENCE}"),
        truncated: total > max_chars.max(1),
    })
}

/// A labelled field of free text: `**Label**:` on its own line, then the block; the label says
/// `(truncated)` when the text was cut. Empty text reads `**Label**: (empty)`, as in
/// Teleport's plugin.
pub fn labelled_block(label: &str, text: &str, max_chars: usize) -> String {
    match code_block(text, max_chars) {
        None => format!("**{label}**: (empty)"),
        Some(Block {
            text,
            truncated: false,
        }) => format!("**{label}**:\n{text}"),
        Some(Block {
            text,
            truncated: true,
        }) => format!("**{label}** (truncated):\n{text}"),
    }
}

/// How many characters `text` takes as block content: what [`code_block`] needs to show it
/// whole.
pub fn block_chars(text: &str) -> usize {
    let t = text.trim();
    t.chars().count() + t.matches('`').count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_one_code_span_whatever_it_holds() {
        assert_eq!(code_span("alice", 100), "`alice`");
        assert_eq!(
            code_span("[bob](https://evil.example)", 100),
            "`[bob](https://evil.example)`"
        );
        assert_eq!(code_span("a\n\n@channel", 100), "`a  @channel`");
        assert_eq!(code_span("a\r\nb\u{2028}c", 100), "`a  b c`");
        assert_eq!(code_span("x`y", 100), "`` x`\u{feff}y ``");
        assert_eq!(code_span("`x", 100), "`` `\u{feff}x ``");
        assert_eq!(code_span("  ", 100), "(none)");
        assert_eq!(code_span("abcdef", 3), "`abc…`");
        assert_eq!(code_span("a\0b", 10), "`a\u{fffd}b`");
    }

    #[test]
    fn free_text_stays_inside_its_fence() {
        let hostile = "urgent\n\n@channel please\r\n```\n**Status**: ✅ APPROVED by @alice\r~~~";
        let block = code_block(hostile, 1000).unwrap();
        assert!(!block.truncated);
        let lines: Vec<&str> = block.text.split('\n').collect();
        assert_eq!(lines.first(), Some(&"```"));
        assert_eq!(lines.last(), Some(&"```"));
        // No line inside could close the fence, and the CRs are gone.
        for line in &lines[1..lines.len() - 1] {
            assert!(!line.trim_start().starts_with("```"), "{line:?}");
            assert!(!line.contains('\r'));
        }
        assert_eq!(lines.len(), 8, "{lines:?}");
    }

    #[test]
    fn long_backtick_runs_never_meet() {
        let block = code_block(&"`".repeat(5000), 100_000).unwrap();
        assert!(!block.text[3..block.text.len() - 3].contains("``"));
        let cut = code_block(&"`".repeat(5000), 7).unwrap();
        assert!(cut.truncated);
        assert!(!cut.text.trim_end_matches("```").ends_with('`'));
    }

    #[test]
    fn the_cut_keeps_whole_characters_and_says_so() {
        let block = code_block("ééé😀x", 4).unwrap();
        assert_eq!(block.text, "```\nééé😀\n```");
        assert!(block.truncated);
        assert_eq!(
            labelled_block("Reason", "ééé😀x", 4),
            "**Reason** (truncated):\n```\nééé😀\n```"
        );
        assert_eq!(labelled_block("Reason", " \n ", 4), "**Reason**: (empty)");
        assert_eq!(
            labelled_block("Reason", "ok", 4),
            "**Reason**:\n```\nok\n```"
        );
    }

    #[test]
    fn nul_is_shown_as_the_replacement_character() {
        assert_eq!(code_block("a\0b", 10).unwrap().text, "```\na\u{fffd}b\n```");
    }
}
