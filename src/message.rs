//! Pure rendering of post text, review replies and button attachments.
//!
//! The text follows Teleport's own Mattermost plugin line for line (CONTRACTS.md §3), so users
//! moving from it see the posts they know. Two deliberate differences:
//! - lines that Teleport's template leaves empty (no reason, no resolution reason) are
//!   omitted instead of becoming blank lines, which Mattermost renders as paragraph breaks;
//! - a resolved post names who acted when known (`✅ APPROVED by @alice`).
//!
//! Beyond Teleport's lines, a post says what reviewers need: the resources asked for, how long
//! the access would last, when the request itself expires, and the review progress.
//!
//! Size: Mattermost refuses posts over its `MaxPostSize` (16383 characters on current
//! servers, 4000 on old ones). [`post_text_within`] fits the post to it by cutting only the
//! free text (the request and resolution reasons, escaped as Teleport escapes them, with
//! "(truncated)"), never the ids, the user or the status; lists (roles, resources) are capped
//! by [`MAX_ROLES_CHARS`].

use serde_json::{Map, Value, json};
use url::Url;

use crate::request::{AccessRequest, RequestState, Review};

/// Post prop naming the access request a post belongs to; set on every post we make
/// (root posts and replies), so a post can be found and adopted after a crash.
pub const PROP_REQUEST_ID: &str = "teleport_request_id";

/// Post prop on review replies: the index of the review in the request's `reviews`.
pub const PROP_REVIEW_INDEX: &str = "teleport_review";

/// Action id of the Approve button. Mattermost routes presses through
/// `/posts/{post_id}/actions/{action_id:[A-Za-z0-9]+}`, so ids must be ASCII alphanumeric.
pub const ACTION_APPROVE: &str = "approve";

/// Action id of the Deny button (ASCII alphanumeric, see [`ACTION_APPROVE`]).
pub const ACTION_DENY: &str = "deny";

/// Byte budget of one escaped free-text field, as in Teleport's plugin.
pub const REASON_LIMIT_BYTES: usize = 500;

/// Upper bound, in characters, of the rendered roles list. Longer lists end with
/// `(and N more)`; Teleport's web UI and `tsh request show` still list every role.
pub const MAX_ROLES_CHARS: usize = 1000;

const PENDING_HEADER: &str = "*You have new pending request to review!*";

/// How a post points reviewers at the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Links {
    /// A link to the request in Teleport's web UI. Use this when the cluster reports
    /// `AdvancedAccessWorkflows` and a proxy public address.
    Web {
        /// The proxy's public address as Ping reports it, e.g. `teleport.example.com:443`.
        proxy_public_addr: String,
    },
    /// `tsh request review` commands, shown while the request is pending (Enterprise: the
    /// cluster has reviews, but Ping gave no proxy address to link to).
    Tsh,
    /// `tctl requests approve|deny` commands, shown while the request is pending: an OSS
    /// cluster has no reviews (`tsh request review` is refused there), so the hint is the
    /// admin's command.
    Tctl,
}

impl Links {
    /// Chooses the link style from Teleport's `PingResponse`: the web UI where the cluster
    /// has Advanced Access Workflows and a proxy address, `tsh request review` where it has
    /// reviews only, and `tctl` on OSS, which has no reviews.
    pub fn from_ping(advanced_access_workflows: bool, proxy_public_addr: &str) -> Self {
        match (advanced_access_workflows, proxy_public_addr.trim()) {
            (false, _) => Links::Tctl,
            (true, "") => Links::Tsh,
            (true, addr) => Links::Web {
                proxy_public_addr: addr.to_owned(),
            },
        }
    }
}

/// The web UI address of a request: `https://<proxy>/web/requests/<id>`, without a
/// redundant `:443`. `None` when the proxy address cannot form a URL.
pub fn request_link(proxy_public_addr: &str, request_id: &str) -> Option<Url> {
    let addr = proxy_public_addr.trim();
    let with_scheme = if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_owned()
    } else {
        format!("https://{addr}")
    };
    // The url crate drops a scheme's default port (":443" for https) when it parses.
    let mut url = Url::parse(&with_scheme).ok()?;
    url.host_str()?;
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut()
        .ok()?
        .clear()
        .extend(["web", "requests", request_id]);
    Some(url)
}

/// The post size of Mattermost servers before 5.0, and the fallback when a server does not
/// say its `MaxPostSize`.
pub const DEFAULT_MAX_POST_CHARS: usize = 4000;

/// The markdown text of a request's post in state `status`, for a server that takes
/// [`DEFAULT_MAX_POST_CHARS`].
///
/// `resolved_by` (e.g. `"@alice"`) is shown after a final status other than EXPIRED.
pub fn post_text(
    req: &AccessRequest,
    status: RequestState,
    resolved_by: Option<&str>,
    links: &Links,
) -> String {
    post_text_within(req, status, resolved_by, links, DEFAULT_MAX_POST_CHARS)
}

/// [`post_text`] fitted to `max_chars`: the reasons share what the other lines leave, each
/// cut (never below Teleport's 500 bytes, unless the server's limit forces it) with
/// "(truncated)".
pub fn post_text_within(
    req: &AccessRequest,
    status: RequestState,
    resolved_by: Option<&str>,
    links: &Links,
    max_chars: usize,
) -> String {
    let render = |reason_cap: usize, resolve_cap: usize| {
        render_post(req, status, resolved_by, links, reason_cap, resolve_cap)
    };
    // Room for the reasons: the limit less everything else, with a margin for the fences and
    // the "(truncated)" marks.
    let fixed = render(0, 0).chars().count();
    let room = max_chars.saturating_sub(fixed + 64);
    // What each reason needs to be shown whole: its bytes, plus one per backtick (the escape
    // counts the mark it adds after each against its limit).
    let needed = |t: &str| t.trim().len() + t.matches('`').count() + 1;
    let (reason_len, resolve_len) = (needed(&req.request_reason), needed(&req.resolve_reason));
    let half = room / 2;
    let (reason_cap, resolve_cap) = match (reason_len <= half, resolve_len <= half) {
        (true, _) => (reason_len, room.saturating_sub(reason_len)),
        (_, true) => (room.saturating_sub(resolve_len), resolve_len),
        _ => (half, half),
    };
    render(reason_cap.max(1), resolve_cap.max(1))
}

fn render_post(
    req: &AccessRequest,
    status: RequestState,
    resolved_by: Option<&str>,
    links: &Links,
    reason_cap: usize,
    resolve_cap: usize,
) -> String {
    let mut lines: Vec<String> = Vec::with_capacity(13);
    if status == RequestState::Pending {
        lines.push(PENDING_HEADER.to_owned());
    }
    lines.push(format!("**User**: {}", req.user));
    lines.push(format!("**Roles**: {}", roles_list(&req.roles)));
    if !req.resources.is_empty() {
        let quoted: Vec<String> = req
            .resources
            .iter()
            .map(|r| format!("`{}`", r.replace('`', "'")))
            .collect();
        lines.push(format!("**Resources**: {}", roles_list(&quoted)));
    }
    lines.push(format!("**Request ID**: {}", req.id));
    // Teleport tests the raw value, so a whitespace-only reason shows as "(empty)".
    if !req.request_reason.is_empty() {
        lines.push(format!(
            "**Reason**: {}",
            escape_text_within(&req.request_reason, reason_cap)
        ));
    }
    if let Some(until) = req.max_duration.or(req.session_ttl) {
        let span = req
            .created
            .map(|c| format!("up to {}, ", human_duration(until - c)))
            .unwrap_or_default();
        lines.push(format!("**Access**: {span}until {}", go_time(until)));
    }
    if status == RequestState::Pending
        && let Some(expires) = req.expires
    {
        lines.push(format!("**Request expires**: {}", go_time(expires)));
    }
    if !req.reviews.is_empty() {
        lines.push(review_progress(&req.reviews));
    }
    lines.push(status_line(status, resolved_by));
    if !req.resolve_reason.is_empty() {
        lines.push(format!(
            "**Resolution reason**: {}",
            escape_text_within(&req.resolve_reason, resolve_cap)
        ));
    }
    let link = match links {
        Links::Web { proxy_public_addr } => request_link(proxy_public_addr, &req.id),
        Links::Tsh | Links::Tctl => None,
    };
    match link {
        Some(link) => lines.push(format!("**Link**: [{link}]({link})")),
        None if status == RequestState::Pending && *links == Links::Tctl => {
            lines.push(format!("**Approve**: `tctl requests approve {}`", req.id));
            lines.push(format!("**Deny**: `tctl requests deny {}`", req.id));
        }
        None if status == RequestState::Pending => {
            lines.push(format!(
                "**Approve**: `tsh request review --approve {}`",
                req.id
            ));
            lines.push(format!("**Deny**: `tsh request review --deny {}`", req.id));
        }
        None => {}
    }
    lines.join("\n")
}

/// Go's RFC 822 layout in UTC (`02 Jan 06 15:04 UTC`), as Teleport's plugin prints times.
pub(crate) fn go_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%d %b %y %H:%M UTC").to_string()
}

/// `45m`, `8h`, `8h 30m`, `3d 4h`.
pub(crate) fn human_duration(d: chrono::Duration) -> String {
    let minutes = d.num_minutes().max(0);
    let (days, hours, mins) = (minutes / 1440, minutes / 60 % 24, minutes % 60);
    match (days, hours, mins) {
        (0, 0, m) => format!("{m}m"),
        (0, h, 0) => format!("{h}h"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, 0, _) => format!("{d}d"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

/// `**Reviews**: ✅ 2 (alice, bob) · ❌ 1 (carol)`.
fn review_progress(reviews: &[Review]) -> String {
    let side = |state: RequestState| {
        let names: Vec<&str> = reviews
            .iter()
            .filter(|r| r.proposed_state == state)
            .map(|r| r.author.as_str())
            .collect();
        let emoji = status_emoji(state).unwrap_or_default();
        if names.is_empty() {
            format!("{emoji} 0")
        } else {
            format!("{emoji} {} ({})", names.len(), roles_list_of(&names))
        }
    };
    format!(
        "**Reviews**: approvals {} · denials {}",
        side(RequestState::Approved),
        side(RequestState::Denied)
    )
}

fn roles_list_of(names: &[&str]) -> String {
    let owned: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    roles_list(&owned)
}

fn status_line(status: RequestState, resolved_by: Option<&str>) -> String {
    let mut line = match status_emoji(status) {
        Some(emoji) => format!("**Status**: {emoji} {}", status.as_str()),
        // Teleport's plugin has no emoji for PROMOTED; its template's double space is dropped.
        None => format!("**Status**: {}", status.as_str()),
    };
    let acted = matches!(
        status,
        RequestState::Approved | RequestState::Denied | RequestState::Promoted
    );
    if let Some(who) = resolved_by
        .map(str::trim)
        .filter(|w| acted && !w.is_empty())
    {
        line.push_str(" by ");
        line.push_str(who);
    }
    line
}

fn status_emoji(status: RequestState) -> Option<&'static str> {
    match status {
        RequestState::Pending => Some("⏳"),
        RequestState::Approved => Some("✅"),
        RequestState::Denied => Some("❌"),
        RequestState::Expired => Some("⌛"),
        RequestState::Promoted | RequestState::None => None,
    }
}

/// `r1, r2, …`, cut after [`MAX_ROLES_CHARS`] characters with `(and N more)`.
pub(crate) fn roles_list(roles: &[String]) -> String {
    let mut out = String::new();
    let mut chars = 0;
    for (shown, role) in roles.iter().enumerate() {
        let sep = if shown == 0 { "" } else { ", " };
        let add = sep.len() + role.chars().count();
        if chars + add > MAX_ROLES_CHARS {
            out.push_str(&format!("{sep}(and {} more)", roles.len() - shown));
            return out;
        }
        out.push_str(sep);
        out.push_str(role);
        chars += add;
    }
    out
}

/// The thread reply announcing one review:
/// `<author> reviewed the request at <time>.`, `Resolution: ✅ APPROVED.` and, when given,
/// `Reason: <escaped>.`. The time uses Go's RFC 822 layout in UTC (`02 Jan 06 15:04 UTC`),
/// as Teleport's plugin prints it.
pub fn review_reply(review: &Review) -> String {
    let first = match review.created {
        Some(t) => format!(
            "{} reviewed the request at {}.",
            review.author,
            t.format("%d %b %y %H:%M UTC")
        ),
        None => format!("{} reviewed the request.", review.author),
    };
    let resolution = match status_emoji(review.proposed_state) {
        Some(emoji) => format!("Resolution: {emoji} {}.", review.proposed_state.as_str()),
        None => format!("Resolution: {}.", review.proposed_state.as_str()),
    };
    let mut text = format!("{first}\n{resolution}");
    if !review.reason.is_empty() {
        text.push_str(&format!("\nReason: {}.", escape_text(&review.reason)));
    }
    text
}

/// Makes free text safe to embed in a post, exactly as Teleport's plugin does.
///
/// The text is trimmed; empty text becomes `(empty)`. Otherwise it is wrapped in triple
/// backticks (an opening "```" plus newline, the text, a closing "```"), and a U+FEFF
/// (zero-width no-break space) follows every backtick inside, so no backtick run can close the
/// block. The output keeps every character that starts before byte 500 of the trimmed text,
/// minus one byte per backtick seen so far; a longer text ends with "``` (truncated)".
/// Characters are never split.
pub fn escape_text(s: &str) -> String {
    escape_text_within(s, REASON_LIMIT_BYTES)
}

/// [`escape_text`] with a cap of `limit` bytes instead of 500: to fill a server's post size.
pub fn escape_text_within(s: &str, limit: usize) -> String {
    let t = s.trim();
    if t.is_empty() {
        return "(empty)".to_owned();
    }
    let mut limit = limit;
    let mut out = String::with_capacity(t.len().min(2 * limit) + 24);
    out.push_str("```\n");
    for (offset, c) in t.char_indices() {
        if offset >= limit {
            out.push_str("``` (truncated)");
            return out;
        }
        out.push(c);
        if c == '`' {
            out.push('\u{feff}');
            // The inserted mark counts against the budget, as in Teleport's code.
            limit = limit.saturating_sub(1);
        }
    }
    out.push_str("```");
    out
}

/// The Approve/Deny buttons of one post: where Mattermost sends presses and the (signed)
/// context it echoes back for each button.
#[derive(Debug, Clone, PartialEq)]
pub struct Buttons {
    /// `integration.url` of both buttons.
    pub url: String,
    /// `integration.context` of the Approve button.
    pub approve_context: Value,
    /// `integration.context` of the Deny button.
    pub deny_context: Value,
}

/// Props of a request's root post: the [`PROP_REQUEST_ID`] marker and, when `buttons` is
/// given, one attachment holding the Approve and Deny buttons. Without buttons there is no
/// `attachments` key, so a full post update with these props removes old buttons.
pub fn post_props(request_id: &str, buttons: Option<&Buttons>) -> Map<String, Value> {
    let mut props = Map::new();
    props.insert(PROP_REQUEST_ID.to_owned(), Value::from(request_id));
    if let Some(b) = buttons {
        let action = |id: &str, name: &str, style: &str, context: &Value| {
            json!({
                "id": id,
                "type": "button",
                "name": name,
                "style": style,
                "integration": { "url": b.url, "context": context },
            })
        };
        props.insert(
            "attachments".to_owned(),
            json!([{
                "actions": [
                    action(ACTION_APPROVE, "Approve", "success", &b.approve_context),
                    action(ACTION_DENY, "Deny", "danger", &b.deny_context),
                ]
            }]),
        );
    }
    props
}

/// Props of a review reply: the [`PROP_REQUEST_ID`] marker and the review's index in
/// [`PROP_REVIEW_INDEX`], so a reply already posted can be recognised after a crash.
pub fn review_props(request_id: &str, review_index: usize) -> Map<String, Value> {
    let mut props = Map::new();
    props.insert(PROP_REQUEST_ID.to_owned(), Value::from(request_id));
    props.insert(PROP_REVIEW_INDEX.to_owned(), Value::from(review_index));
    props
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> AccessRequest {
        AccessRequest {
            id: "req-1".into(),
            user: "bob".into(),
            roles: vec!["editor".into(), "auditor".into()],
            state: RequestState::Pending,
            ..AccessRequest::default()
        }
    }

    #[test]
    fn escape_matches_teleport_examples() {
        // The cases of Teleport's ExampleMarkdownEscape (limit 500 instead of 10 for the last).
        assert_eq!(escape_text("     "), "(empty)");
        assert_eq!(escape_text(""), "(empty)");
        assert_eq!(escape_text("abc"), "```\nabc```");
        assert_eq!(
            escape_text("`foo` `bar`"),
            "```\n`\u{feff}foo`\u{feff} `\u{feff}bar`\u{feff}```"
        );
        assert_eq!(escape_text("  padded\n"), "```\npadded```");
    }

    #[test]
    fn escape_cuts_at_500_bytes() {
        let exact = "a".repeat(500);
        assert_eq!(escape_text(&exact), format!("```\n{exact}```"));
        let long = "a".repeat(501);
        assert_eq!(
            escape_text(&long),
            format!("```\n{}``` (truncated)", "a".repeat(500))
        );
    }

    #[test]
    fn escape_never_splits_a_character() {
        // 499 ASCII bytes, then 'é' (2 bytes) starting at byte 499: it is kept whole, and the
        // next character (at byte 501) is cut.
        let s = format!("{}éé", "a".repeat(499));
        let out = escape_text(&s);
        assert_eq!(out, format!("```\n{}é``` (truncated)", "a".repeat(499)));
        // A 4-byte character straddling the limit is kept whole too.
        let s = format!("{}😀x", "a".repeat(498));
        assert_eq!(
            escape_text(&s),
            format!("```\n{}😀``` (truncated)", "a".repeat(498))
        );
    }

    #[test]
    fn backticks_shrink_the_budget() {
        let s = "`".repeat(600);
        let out = escape_text(&s);
        // After k backticks the budget is 500 - k; the cut comes at k = 250.
        let kept = "`\u{feff}".repeat(250);
        assert_eq!(out, format!("```\n{kept}``` (truncated)"));
    }

    #[test]
    fn link_strips_default_port_and_adds_scheme() {
        let link = request_link("teleport.example.com:443", "abc-1").unwrap();
        assert_eq!(
            link.as_str(),
            "https://teleport.example.com/web/requests/abc-1"
        );
        let link = request_link("teleport.example.com:3080", "abc-1").unwrap();
        assert_eq!(
            link.as_str(),
            "https://teleport.example.com:3080/web/requests/abc-1"
        );
        let link = request_link("http://localhost:8080", "x").unwrap();
        assert_eq!(link.as_str(), "http://localhost:8080/web/requests/x");
        assert_eq!(request_link("", "x"), None);
    }

    #[test]
    fn links_from_ping() {
        assert_eq!(
            Links::from_ping(false, "p:443"),
            Links::Tctl,
            "OSS has no reviews"
        );
        assert_eq!(Links::from_ping(true, ""), Links::Tsh);
        assert_eq!(
            Links::from_ping(true, "p:443"),
            Links::Web {
                proxy_public_addr: "p:443".into()
            }
        );
    }

    #[test]
    fn unusable_proxy_address_falls_back_to_tsh_lines() {
        let links = Links::Web {
            proxy_public_addr: "https://".into(),
        };
        let text = post_text(&req(), RequestState::Pending, None, &links);
        assert!(text.contains("tsh request review --approve req-1"));
    }

    #[test]
    fn resolved_by_is_not_shown_while_pending_or_expired() {
        let pending = post_text(&req(), RequestState::Pending, Some("@alice"), &Links::Tsh);
        assert!(!pending.contains("@alice"));
        let expired = post_text(&req(), RequestState::Expired, Some("@alice"), &Links::Tsh);
        assert!(expired.lines().any(|l| l == "**Status**: ⌛ EXPIRED"));
        assert!(!expired.contains("@alice"));
    }

    #[test]
    fn many_roles_are_capped() {
        let mut r = req();
        r.roles = (0..2000).map(|i| format!("role-number-{i}")).collect();
        r.request_reason = "x".repeat(10_000);
        r.resolve_reason = "`".repeat(10_000);
        let text = post_text(&r, RequestState::Denied, Some("@alice"), &Links::Tsh);
        assert!(text.chars().count() < 4000, "{}", text.chars().count());
        assert!(text.contains(" more)"));
        let roles_line = text.lines().find(|l| l.starts_with("**Roles**")).unwrap();
        assert!(roles_line.chars().count() <= MAX_ROLES_CHARS + 40);
    }

    #[test]
    fn post_props_with_buttons() {
        let b = Buttons {
            url: "https://cb.example.com/mattermost_action".into(),
            approve_context: json!({"action": "approve", "sig": "s1"}),
            deny_context: json!({"action": "deny", "sig": "s2"}),
        };
        let props = post_props("req-1", Some(&b));
        assert_eq!(props[PROP_REQUEST_ID], "req-1");
        let actions = &props["attachments"][0]["actions"];
        assert_eq!(actions.as_array().unwrap().len(), 2);
        for (action, id, name, style, ctx) in [
            (
                &actions[0],
                "approve",
                "Approve",
                "success",
                &b.approve_context,
            ),
            (&actions[1], "deny", "Deny", "danger", &b.deny_context),
        ] {
            assert_eq!(action["id"], id);
            assert!(id.chars().all(|c| c.is_ascii_alphanumeric()));
            assert_eq!(action["type"], "button");
            assert_eq!(action["name"], name);
            assert_eq!(action["style"], style);
            assert_eq!(action["integration"]["url"], b.url.as_str());
            assert_eq!(&action["integration"]["context"], ctx);
        }
    }

    #[test]
    fn post_props_without_buttons_has_no_attachments() {
        let props = post_props("req-1", None);
        assert_eq!(props.len(), 1);
        assert_eq!(props[PROP_REQUEST_ID], "req-1");
    }

    #[test]
    fn review_props_mark_request_and_index() {
        let props = review_props("req-1", 3);
        assert_eq!(props[PROP_REQUEST_ID], "req-1");
        assert_eq!(props[PROP_REVIEW_INDEX], 3);
    }
}
