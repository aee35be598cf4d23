//! Pure rendering of post text, review replies and button attachments.
//!
//! The text follows Teleport's own Mattermost plugin line for line (CONTRACTS.md §3), so users
//! moving from it see the posts they know. Deliberate differences:
//! - every piece of text from people renders only as code ([`markdown`]): free text as a
//!   fenced block under its label, names as code spans, where Teleport's plugin leaves names
//!   raw and wraps reasons in a "```" span that a blank line escapes;
//! - lines that Teleport's template leaves empty (no reason, no resolution reason) are
//!   omitted instead of becoming blank lines, which Mattermost renders as paragraph breaks;
//! - a resolved post names who acted when Teleport's reason says so (`✅ APPROVED by @alice`).
//!
//! Beyond Teleport's lines, a post says what reviewers need: the resources asked for, how long
//! the access would last, when the request itself expires, the review progress, and who the
//! requester suggested.
//!
//! Size: Mattermost refuses posts over its `MaxPostSize` (16383 characters on current
//! servers, 4000 on old ones). [`post_text_within`] fits the post to it by cutting only the
//! free text (the request and resolution reasons, marked "(truncated)"), never the ids, the
//! user or the status; lists (roles, resources) are capped by [`MAX_ROLES_CHARS`].

pub mod markdown;

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

/// Budget, in characters, of one free-text field in a reply or a direct message, as in
/// Teleport's plugin (which counts 500 bytes).
pub const REASON_LIMIT_CHARS: usize = 500;

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

/// Longest user name, role, resource or reviewer name shown; longer ones end with `…`.
pub const MAX_NAME_CHARS: usize = 200;

/// What a post shows beyond the request and its state.
#[derive(Debug, Clone, Copy, Default)]
pub struct Extras<'a> {
    /// The requester's suggested reviewers that name people, in order; the first
    /// `suggested_messaged` of them are messaged.
    pub suggested: &'a [String],
    /// How many of `suggested` get a direct message (the rest are counted, not named).
    pub suggested_messaged: usize,
    /// In a direct message without buttons: the request's post in the channel, where those
    /// who may decide do.
    pub channel_post: Option<&'a Url>,
}

/// The markdown text of a request's post in state `status`, for a server that takes
/// [`DEFAULT_MAX_POST_CHARS`].
///
/// `resolved_by` (e.g. `"@alice"`) is shown after a final status other than EXPIRED, when it
/// is a Mattermost username.
pub fn post_text(
    req: &AccessRequest,
    status: RequestState,
    resolved_by: Option<&str>,
    links: &Links,
) -> String {
    post_text_within(req, status, resolved_by, links, DEFAULT_MAX_POST_CHARS)
}

/// [`post_text`] fitted to `max_chars`: the reasons share what the other lines leave, each
/// cut with "(truncated)" when it must be.
pub fn post_text_within(
    req: &AccessRequest,
    status: RequestState,
    resolved_by: Option<&str>,
    links: &Links,
    max_chars: usize,
) -> String {
    post_text_with(
        req,
        status,
        resolved_by,
        links,
        max_chars,
        Extras::default(),
    )
}

/// [`post_text_within`] with the [`Extras`] of one post.
pub fn post_text_with(
    req: &AccessRequest,
    status: RequestState,
    resolved_by: Option<&str>,
    links: &Links,
    max_chars: usize,
    extras: Extras<'_>,
) -> String {
    let render = |reason_cap: usize, resolve_cap: usize| {
        render_post(
            req,
            status,
            resolved_by,
            links,
            extras,
            reason_cap,
            resolve_cap,
        )
    };
    // Room for the reasons: the limit less everything else, with a margin for the fences and
    // the "(truncated)" marks.
    let fixed = render(0, 0).chars().count();
    let room = max_chars.saturating_sub(fixed + 64);
    let (reason_len, resolve_len) = (
        markdown::block_chars(&req.request_reason),
        markdown::block_chars(&req.resolve_reason),
    );
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
    extras: Extras<'_>,
    reason_cap: usize,
    resolve_cap: usize,
) -> String {
    let mut lines: Vec<String> = Vec::with_capacity(16);
    if status == RequestState::Pending {
        lines.push(PENDING_HEADER.to_owned());
    }
    lines.push(format!("**User**: {}", name(&req.user)));
    lines.push(format!("**Roles**: {}", roles_list(&req.roles)));
    if let Some(resources) = resources_line(req) {
        lines.push(resources);
    }
    let id = request_id(&req.id);
    lines.push(format!("**Request ID**: {id}"));
    // Teleport tests the raw value, so a whitespace-only reason shows as "(empty)".
    if !req.request_reason.is_empty() {
        lines.push(markdown::labelled_block(
            "Reason",
            &req.request_reason,
            reason_cap,
        ));
    }
    if let Some(until) = req.max_duration.or(req.session_ttl) {
        let span = req
            .created
            .map(|c| format!("up to {}, ", human_duration(until - c)))
            .unwrap_or_default();
        lines.push(format!("**Access**: {span}until {}", go_time(until)));
    }
    if let Some(start) = req.assume_start_time {
        lines.push(format!("**Access starts**: {}", go_time(start)));
    }
    if status == RequestState::Pending
        && let Some(expires) = req.resource_expiry.or(req.expires)
    {
        lines.push(format!("**Request expires**: {}", go_time(expires)));
    }
    if req.is_long_term() {
        lines.push(LONG_TERM_LINE.to_owned());
    }
    if !extras.suggested.is_empty() {
        lines.push(suggested_line(extras.suggested, extras.suggested_messaged));
    }
    if !req.reviews.is_empty() {
        lines.push(review_progress(&req.reviews));
    }
    lines.push(status_line(status, resolved_by));
    if status == RequestState::Promoted
        && let Some(list) = &req.promoted_access_list
    {
        let title = if list.title.trim().is_empty() {
            &list.name
        } else {
            &list.title
        };
        lines.push(format!("**Access list**: {}", name(title)));
    }
    if !req.resolve_reason.is_empty() {
        lines.push(markdown::labelled_block(
            "Resolution reason",
            &req.resolve_reason,
            resolve_cap,
        ));
    }
    let link = match links {
        Links::Web { proxy_public_addr } => request_link(proxy_public_addr, &req.id),
        Links::Tsh | Links::Tctl => None,
    };
    // The commands sit in code spans of their own: an id that is not plain is not offered.
    let plain_id = (id == req.id).then_some(id.as_str());
    match (link, plain_id) {
        (Some(link), _) => lines.push(format!("**Link**: [{link}]({link})")),
        (None, Some(id)) if status == RequestState::Pending && *links == Links::Tctl => {
            lines.push(format!("**Approve**: `tctl requests approve {id}`"));
            lines.push(format!("**Deny**: `tctl requests deny {id}`"));
        }
        (None, Some(id)) if status == RequestState::Pending => {
            lines.push(format!("**Approve**: `tsh request review --approve {id}`"));
            lines.push(format!("**Deny**: `tsh request review --deny {id}`"));
        }
        _ => {}
    }
    if let Some(post) = extras.channel_post {
        lines.push(format!(
            "**Decided in the channel**: [open the request's post]({post})"
        ));
    }
    lines.join("\n")
}

/// The line a long-term request carries: why it has no Approve button, and where to decide.
pub const LONG_TERM_LINE: &str = "**Kind**: long-term. Approving it here would keep it from being promoted to an access list: review it in Teleport's web UI.";

/// `**Resources**: `c/app/console` (role ARNs: `arn:…`), `c/node/web-1``, from the
/// resources with their constraints when Teleport sent them, else their paths.
fn resources_line(req: &AccessRequest) -> Option<String> {
    use crate::request::ResourceConstraints;
    let shown: Vec<String> = if req.requested_resources.is_empty() {
        req.resources.iter().map(|r| name(r)).collect()
    } else {
        req.requested_resources
            .iter()
            .map(|r| {
                let path = name(&r.path());
                match &r.constraints {
                    None => path,
                    Some(ResourceConstraints::AwsConsole { role_arns }) => {
                        format!("{path} (role ARNs: {})", roles_list(role_arns))
                    }
                    Some(ResourceConstraints::Ssh { logins }) => {
                        format!("{path} (logins: {})", roles_list(logins))
                    }
                    Some(ResourceConstraints::Unknown) => {
                        format!("{path} (with constraints this plugin cannot show; see Teleport)")
                    }
                }
            })
            .collect()
    };
    (!shown.is_empty()).then(|| format!("**Resources**: {}", joined(&shown)))
}

/// Already-rendered items joined with `, `, cut after [`MAX_ROLES_CHARS`] characters with
/// `(and N more)`.
fn joined(items: &[String]) -> String {
    let mut out = String::new();
    let mut chars = 0;
    for (shown, item) in items.iter().enumerate() {
        let sep = if shown == 0 { "" } else { ", " };
        let add = sep.len() + item.chars().count();
        if chars + add > MAX_ROLES_CHARS {
            out.push_str(&format!("{sep}(and {} more)", items.len() - shown));
            return out;
        }
        out.push_str(sep);
        out.push_str(item);
        chars += add;
    }
    out
}

/// A Teleport name as a code span on one line.
fn name(s: &str) -> String {
    markdown::code_span(s, MAX_NAME_CHARS)
}

/// A request id as Teleport makes them (a UUID) is shown as is; anything else as a name is.
fn request_id(id: &str) -> String {
    let plain = !id.is_empty()
        && id.len() <= 64
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if plain { id.to_owned() } else { name(id) }
}

/// ``**Suggested reviewers**: `alice`, `carol` and 3 more, not messaged``.
fn suggested_line(suggested: &[String], messaged: usize) -> String {
    let shown: Vec<String> = suggested.iter().take(messaged).cloned().collect();
    let rest = suggested.len() - shown.len();
    let mut line = format!("**Suggested reviewers**: {}", roles_list(&shown));
    match (shown.is_empty(), rest) {
        (_, 0) => {}
        (true, n) => line.push_str(&format!("{n}, not messaged")),
        (false, n) => line.push_str(&format!(" and {n} more, not messaged")),
    }
    line
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

/// ``**Reviews**: approvals ✅ 2 (`alice`, `bob`) · denials ❌ 1 (`carol`)``.
fn review_progress(reviews: &[Review]) -> String {
    let side = |state: RequestState| {
        let names: Vec<String> = reviews
            .iter()
            .filter(|r| r.proposed_state == state)
            .map(|r| r.author.clone())
            .collect();
        let emoji = status_emoji(state).unwrap_or_default();
        if names.is_empty() {
            format!("{emoji} 0")
        } else {
            format!("{emoji} {} ({})", names.len(), roles_list(&names))
        }
    };
    format!(
        "**Reviews**: approvals {} · denials {}",
        side(RequestState::Approved),
        side(RequestState::Denied)
    )
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
    // Only a Mattermost username is ever named here.
    let who = resolved_by
        .map(str::trim)
        .and_then(|w| w.strip_prefix('@'))
        .filter(|w| acted && crate::review::reason::is_username(w));
    if let Some(who) = who {
        line.push_str(" by @");
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

/// `` `r1`, `r2`, … `` (each a code span), cut after [`MAX_ROLES_CHARS`] characters with
/// `(and N more)`.
pub(crate) fn roles_list(roles: &[String]) -> String {
    let spans: Vec<String> = roles.iter().map(|r| name(r)).collect();
    joined(&spans)
}

/// The thread reply announcing one review:
/// ``` `<author>` reviewed the request at <time>. ```, `Resolution: ✅ APPROVED.` and, when
/// given, the reason as a block under `**Reason**:`. The time uses Go's RFC 822 layout in UTC
/// (`02 Jan 06 15:04 UTC`), as Teleport's plugin prints it.
pub fn review_reply(review: &Review) -> String {
    let first = match review.created {
        Some(t) => format!(
            "{} reviewed the request at {}.",
            name(&review.author),
            go_time(t)
        ),
        None => format!("{} reviewed the request.", name(&review.author)),
    };
    let resolution = match status_emoji(review.proposed_state) {
        Some(emoji) => format!("Resolution: {emoji} {}.", review.proposed_state.as_str()),
        None => format!("Resolution: {}.", review.proposed_state.as_str()),
    };
    let mut text = format!("{first}\n{resolution}");
    if !review.reason.is_empty() {
        text.push('\n');
        text.push_str(&markdown::labelled_block(
            "Reason",
            &review.reason,
            REASON_LIMIT_CHARS,
        ));
    }
    text
}

/// The buttons of one post: where Mattermost sends presses and the (signed) context it
/// echoes back for each button the post carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Buttons {
    /// `integration.url` of every button.
    pub url: String,
    /// `integration.context` of the Approve button, when the post carries it.
    pub approve_context: Option<Value>,
    /// `integration.context` of the Deny button, when the post carries it.
    pub deny_context: Option<Value>,
}

/// Props of a request's root post: the [`PROP_REQUEST_ID`] marker and, when `buttons` carry
/// any, one attachment holding them. Without buttons there is no `attachments` key, so a full
/// post update with these props removes old buttons.
pub fn post_props(request_id: &str, buttons: Option<&Buttons>) -> Map<String, Value> {
    let mut props = Map::new();
    props.insert(PROP_REQUEST_ID.to_owned(), Value::from(request_id));
    let Some(b) = buttons else {
        return props;
    };
    // Servers validate actions (`PostAction.IsValid`): a non-empty name, type button or
    // select, an http(s) URL; before 11.10 an alphanumeric id.
    let action = |id: &str, name: &str, style: &str, context: &Value| {
        json!({
            "id": id,
            "type": "button",
            "name": name,
            "style": style,
            "integration": { "url": b.url, "context": context },
        })
    };
    let actions: Vec<Value> = [
        (ACTION_APPROVE, "Approve", "success", &b.approve_context),
        (ACTION_DENY, "Deny", "danger", &b.deny_context),
    ]
    .into_iter()
    .filter_map(|(id, name, style, context)| Some(action(id, name, style, context.as_ref()?)))
    .collect();
    if !actions.is_empty() {
        props.insert("attachments".to_owned(), json!([{ "actions": actions }]));
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
    fn the_reason_is_a_block_under_its_label_and_names_are_spans() {
        let mut r = req();
        r.user = "[bob](https://evil.example)".into();
        r.request_reason =
            "urgent\n\n@channel please approve\n\n**Status**: ✅ APPROVED by @alice".into();
        let text = post_text(&r, RequestState::Pending, None, &Links::Tsh);
        assert!(
            text.contains("**User**: `[bob](https://evil.example)`"),
            "{text}"
        );
        assert!(text.contains("**Roles**: `editor`, `auditor`"), "{text}");
        assert!(
            text.contains("**Reason**:\n```\nurgent\n\n@channel please approve\n\n**Status**: ✅ APPROVED by @alice\n```\n"),
            "{text}"
        );
        let status_lines = text.lines().filter(|l| l.starts_with("**Status**")).count();
        assert_eq!(status_lines, 2, "the fake one sits inside the fence");
    }

    #[test]
    fn only_a_username_is_ever_named_as_the_actor() {
        for forged in [
            "@channel",
            "@[x](https://e.example)",
            "alice",
            "@Alice",
            "@all",
        ] {
            let text = post_text(&req(), RequestState::Approved, Some(forged), &Links::Tsh);
            assert!(
                text.lines().any(|l| l == "**Status**: ✅ APPROVED"),
                "{forged}: {text}"
            );
        }
        let text = post_text(&req(), RequestState::Approved, Some("@alice"), &Links::Tsh);
        assert!(
            text.lines()
                .any(|l| l == "**Status**: ✅ APPROVED by @alice")
        );
    }

    #[test]
    fn an_odd_request_id_is_a_span_and_offers_no_commands() {
        let mut r = req();
        r.id = "x`\n\n@channel".into();
        let text = post_text(&r, RequestState::Pending, None, &Links::Tsh);
        assert!(!text.contains("tsh request review"), "{text}");
        assert!(
            text.contains("**Request ID**: `` x`\u{feff}  @channel ``"),
            "{text}"
        );
    }

    #[test]
    fn suggested_reviewers_are_named_up_to_the_messaged_and_counted_after() {
        let suggested: Vec<String> = (0..12).map(|i| format!("user{i}")).collect();
        let extras = Extras {
            suggested: &suggested,
            suggested_messaged: 2,
            channel_post: None,
        };
        let text = post_text_with(
            &req(),
            RequestState::Pending,
            None,
            &Links::Tsh,
            4000,
            extras,
        );
        assert!(
            text.contains("**Suggested reviewers**: `user0`, `user1` and 10 more, not messaged"),
            "{text}"
        );
        let none_messaged = Extras {
            suggested_messaged: 0,
            ..extras
        };
        let text = post_text_with(
            &req(),
            RequestState::Pending,
            None,
            &Links::Tsh,
            4000,
            none_messaged,
        );
        assert!(
            text.contains("**Suggested reviewers**: 12, not messaged"),
            "{text}"
        );
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
            approve_context: Some(json!({"action": "approve", "sig": "s1"})),
            deny_context: Some(json!({"action": "deny", "sig": "s2"})),
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
                b.approve_context.as_ref().unwrap(),
            ),
            (
                &actions[1],
                "deny",
                "Deny",
                "danger",
                b.deny_context.as_ref().unwrap(),
            ),
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
    fn a_post_may_carry_deny_alone() {
        let b = Buttons {
            url: "https://cb.example.com/x".into(),
            approve_context: None,
            deny_context: Some(json!({"action": "deny"})),
        };
        let props = post_props("req-1", Some(&b));
        let actions = props["attachments"][0]["actions"].as_array().unwrap();
        assert_eq!(actions.len(), 1);
        assert_eq!(actions[0]["id"], "deny");
        let none = Buttons {
            deny_context: None,
            ..b
        };
        assert!(!post_props("req-1", Some(&none)).contains_key("attachments"));
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
