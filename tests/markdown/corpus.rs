//! The markdown break-out corpus: text a requester or reviewer may write (a reason) or a
//! name Teleport may carry (user, role, resource, review author), each trying to end the
//! block it is embedded in and make Mattermost show something of its own: a status line, a
//! mention, a link, an image, HTML, a heading, a quote, a list or a table.
//!
//! Shared by `tests/markdown_corpus.rs` (rendered offline, judged by Mattermost's client
//! parsers) and `tests/real_mattermost_markdown.rs` (posted through a real Mattermost).

/// One hostile text: a stable name for reports, and the text.
#[derive(Clone, Debug)]
pub struct Payload {
    pub name: String,
    pub text: String,
}

/// The fake status line every break-out tries to show.
pub const FAKE_STATUS: &str = "**Status**: ✅ APPROVED by @alice";

/// What reaches a reader when a payload breaks out: a channel-wide mention, a tracking
/// image, a link and a fake status line.
pub const LOUD: &str = "@channel ![p](https://evil.example/p.png) [click](https://evil.example)";

fn p(name: impl Into<String>, text: impl Into<String>) -> Payload {
    Payload {
        name: name.into(),
        text: text.into(),
    }
}

/// Zero-width and invisible characters Mattermost's word splitting treats as separators.
pub const ZERO_WIDTH: [(&str, char); 5] = [
    ("zwsp", '\u{200B}'),
    ("zwnj", '\u{200C}'),
    ("zwj", '\u{200D}'),
    ("wj", '\u{2060}'),
    ("bom", '\u{FEFF}'),
];

/// The whole corpus.
pub fn payloads() -> Vec<Payload> {
    let mut c = vec![
        // The run in the issue, verbatim.
        p(
            "issue_blank_lines_channel_status",
            format!("urgent\n\n@channel please approve now\n\n{FAKE_STATUS}"),
        ),
        // Line structure.
        p("blank_line_then_status", format!("urgent\n\n{FAKE_STATUS}")),
        p("newline_then_status", format!("urgent\n{FAKE_STATUS}")),
        p("status_alone", FAKE_STATUS),
        p(
            "blank_lines_loud",
            format!("urgent\n\n{LOUD}\n\n{FAKE_STATUS}"),
        ),
        p("crlf", format!("urgent\r\n\r\n{LOUD}\r\n\r\n{FAKE_STATUS}")),
        p("lone_cr", format!("urgent\r\r{LOUD}\r\r{FAKE_STATUS}")),
        p(
            "cr_lf_mixed",
            format!("urgent\r\n\n\r{LOUD}\n\r\n{FAKE_STATUS}"),
        ),
        p(
            "u2028",
            format!("urgent\u{2028}\u{2028}{LOUD}\u{2028}{FAKE_STATUS}"),
        ),
        p(
            "u2029",
            format!("urgent\u{2029}{LOUD}\u{2029}{FAKE_STATUS}"),
        ),
        p("nel_u0085", format!("urgent\u{85}\u{85}{LOUD}")),
        p("vt_ff", format!("urgent\u{b}\u{c}\n\u{c}\n{LOUD}")),
        p("only_newlines", "\n\n\n"),
        p("only_cr", "\r\r"),
        p("trailing_blank_then_fence", "urgent\n\n```"),
        // Swallow the rest of the post into a code block, so the real status disappears.
        p(
            "tilde_fence_swallows",
            format!("urgent\n{FAKE_STATUS}\n~~~"),
        ),
        p(
            "backtick_fence_swallows",
            format!("urgent\n{FAKE_STATUS}\n```"),
        ),
        p(
            "blank_tilde_fence_swallows",
            format!("urgent\n\n{FAKE_STATUS}\n\n~~~"),
        ),
        // Indented code.
        p("indented_4_spaces", format!("urgent\n\n    code\n\n{LOUD}")),
        p("indented_tab", format!("urgent\n\n\tcode\n\n{LOUD}")),
        // Block quotes, lists, headings, tables.
        p("quote", format!("urgent\n> quoted {LOUD}")),
        p(
            "quote_after_blank",
            format!("urgent\n\n> {LOUD}\n\n{FAKE_STATUS}"),
        ),
        p("list_dash", format!("urgent\n- {LOUD}")),
        p("list_star", format!("urgent\n* {LOUD}")),
        p("list_plus", format!("urgent\n\n+ {LOUD}")),
        p("list_ordered", format!("urgent\n1. {LOUD}")),
        p("list_ordered_paren", format!("urgent\n\n1) {LOUD}")),
        p("heading_atx", format!("urgent\n# {LOUD}")),
        p(
            "heading_atx_after_blank",
            format!("urgent\n\n## {FAKE_STATUS}"),
        ),
        p("heading_setext_eq", format!("urgent\n\n{LOUD}\n===")),
        p("heading_setext_dash", format!("{LOUD}\n---")),
        p("thematic_break", format!("urgent\n\n***\n\n{LOUD}")),
        p("table", format!("urgent\n\n|a|b|\n|-|-|\n|{LOUD}|2|")),
        p(
            "table_no_blank",
            "|a|b|\n|-|-|\n|@channel|![p](https://evil.example/p.png)|",
        ),
        // HTML.
        p("html_img_onerror", "<img src=x onerror=alert(1)>"),
        p(
            "html_img_block",
            "urgent\n\n<img src=x onerror=alert(1)>\n\n@channel",
        ),
        p("html_a", "<a href=\"https://evil.example\">click</a>"),
        p(
            "html_comment",
            "urgent <!-- hidden --> y\n\n<!--\n@channel\n-->",
        ),
        p("html_div_block", "urgent\n\n<div>@channel</div>\n\n"),
        p("html_script", "<script>alert(1)</script>"),
        // Links, images, autolinks.
        p("link", "[click](https://evil.example)"),
        p(
            "link_after_blank",
            "urgent\n\n[click](https://evil.example)",
        ),
        p("image", "![x](https://evil.example/p.png)"),
        p(
            "image_after_blank",
            "urgent\n\n![x](https://evil.example/p.png)",
        ),
        p(
            "reference_link",
            "urgent\n\n[x]: https://evil.example\n\n[x] and [click][x]",
        ),
        p("autolink_angle", "<https://evil.example>"),
        p("autolink_email_angle", "<mallory@evil.example>"),
        p("bare_url", "see https://evil.example/path?q=1"),
        p("bare_www", "see www.evil.example"),
        p("bare_host_path", "see evil.example/path"),
        p("bare_email", "mail mallory@evil.example"),
        p("javascript_link", "[x](javascript:alert(1))"),
        // Mentions.
        p("at_channel", "@channel"),
        p("at_all", "@all"),
        p("at_here", "@here"),
        p("at_alice", "@alice"),
        p("at_channel_upper", "@CHANNEL now"),
        p("at_channel_after_blank", "urgent\n\n@channel"),
        p("at_channel_punct", "(@channel), @here: @all."),
        p("at_channel_in_word", "urgent.@channel"),
        p("at_alice_suffix", "@alice."),
        p("fullwidth_at", "＠channel ＠here"),
        p("small_at_fe6b", "﹫channel ﹫all"),
        p("entity_at", "&#64;channel &#x40;here &commat;all"),
        p("escaped_at", "\\@channel"),
        // The same after a blank line, where today's wrapping no longer holds them: what
        // the server makes of entities, look-alikes, escapes and mentions inside markup.
        p(
            "entity_at_after_blank",
            "urgent\n\n&#64;channel &#x40;here &commat;all",
        ),
        p("fullwidth_at_after_blank", "urgent\n\n＠channel ﹫here"),
        p("escaped_at_after_blank", "urgent\n\n\\@channel"),
        p(
            "zero_width_inside_after_blank",
            "urgent\n\n@\u{200B}channel @cha\u{200D}nnel",
        ),
        p(
            "at_in_link_text",
            "urgent\n\n[@channel](https://evil.example)",
        ),
        p(
            "at_in_image_alt",
            "urgent\n\n![@here](https://evil.example/p.png)",
        ),
        p("at_in_emphasis", "urgent\n\n*@channel* **@here** ~~@all~~"),
        p("at_in_heading", "urgent\n\n# @all"),
        // Escapes.
        p("backslash_fence", "\\`\\`\\`\n\n@channel"),
        p("backslash_hard_break", "urgent\\\n\n@channel"),
        p("backslash_backtick_end", "urgent\\"),
        p("double_backslash", "\\\\\n\n@channel"),
        // Control characters.
        p("nul", format!("a\u{0}\n\n{LOUD}")),
        p(
            "escape_sequence",
            format!("\u{1b}[31mred\u{1b}[0m\n\n{LOUD}"),
        ),
        p("del_char", format!("urgent\u{7f}\n\n{LOUD}")),
        p("bidi_override", format!("urgent\u{202e}\u{2066}\n\n{LOUD}")),
        // Markdown the plugin's own lines use.
        p("strong_close", "**"),
        p("strong_status_inline", format!("urgent {FAKE_STATUS}")),
        p("emphasis_runs", "*_**__~~"),
        p("channel_link_hashtag", "~town-square #urgent"),
        p(
            "u_feff_backticks",
            "`\u{feff}`\u{feff}`\u{feff}\n\n@channel",
        ),
        p("span_with_at", "`@channel`"),
        p("latex_inline", "$x$ and\n\n$$\n@channel\n$$"),
    ];
    for (zw, ch) in ZERO_WIDTH {
        c.push(p(
            format!("{zw}_before_at_channel"),
            format!("{ch}@channel"),
        ));
        c.push(p(format!("{zw}_after_at"), format!("@{ch}here")));
        c.push(p(
            format!("{zw}_blank_line_at_all"),
            format!("urgent\n\n{ch}@all {ch}@alice"),
        ));
    }
    for n in (3..=20).chain([1000]) {
        let ticks = "`".repeat(n);
        let tildes = "~".repeat(n);
        c.push(p(
            format!("backtick_fence_{n}"),
            format!("urgent\n{ticks}\n{LOUD}\n{ticks}\n{FAKE_STATUS}"),
        ));
        c.push(p(
            format!("tilde_fence_{n}"),
            format!("urgent\n{tildes}\n{LOUD}\n{tildes}\n{FAKE_STATUS}"),
        ));
        c.push(p(
            format!("backtick_run_{n}"),
            format!("{ticks} {LOUD} {ticks}"),
        ));
    }
    c.push(p(
        "backtick_fence_info_string",
        format!("urgent\n```js\n{LOUD}\n```\n\n{FAKE_STATUS}"),
    ));
    c.push(p("backtick_run_5000", "`".repeat(5000)));
    c.push(p(
        "backtick_run_3000_then_loud",
        format!("{}\n\n{LOUD}", "`".repeat(3000)),
    ));
    c.push(p(
        "tilde_run_3000_then_loud",
        format!("{}\n\n{LOUD}", "~".repeat(3000)),
    ));
    c
}
