//! Text from people renders only as text, judged by Mattermost's own markdown parsers.
//!
//! Every payload of the break-out corpus (`tests/markdown/corpus.rs`) is put in every place
//! a post carries text a person wrote or a name Teleport gave (request and resolution
//! reasons, review reasons, user, roles, resources, review authors; the request's post, the
//! review reply, the requester's DMs), rendered by the plugin, and parsed by the parsers
//! Mattermost's clients use (`tests/markdown/check.mjs`, README.md there). For each parser
//! the post must show, outside code, exactly what it shows with a harmless text in the same
//! place: no mention, link, image, HTML, heading, quote, list or table of the payload's, the
//! one status line, and the payload inside code.
//!
//! Needs `node` and `npm` (installs `tests/markdown/node_modules` with `npm ci` the first
//! time); without them it prints one `skipped:` line and passes.

#[path = "markdown/corpus.rs"]
mod corpus;
#[path = "markdown/judge.rs"]
mod judge;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;

use chrono::{TimeZone, Utc};
use teleport_mattermost::message::{self, Links};
use teleport_mattermost::notice;
use teleport_mattermost::request::{AccessRequest, RequestState, Review};

use judge::{Expect, Post};

const ID: &str = "0d9a2f3e-5b0c-4f7e-9d1a-8c2b6e4f1a77";
const PROXY: &str = "teleport.example.com:443";
/// The one link the plugin adds: the request in Teleport's web UI.
const WEB_LINK: &str = "https://teleport.example.com/web/requests/0d9a2f3e-5b0c-4f7e-9d1a-8c2b6e4f1a77";
/// What stands in for the payload in the reference rendering of each place.
const HARMLESS: &str = "harmless";

fn request() -> AccessRequest {
    AccessRequest {
        id: ID.into(),
        user: "bob@example.com".into(),
        roles: vec!["editor".into(), "db-admin".into()],
        state: RequestState::Pending,
        request_reason: "Need to fix the prod database migration".into(),
        created: Some(Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap()),
        ..AccessRequest::default()
    }
}

fn review(author: &str, reason: &str) -> Review {
    Review {
        author: author.into(),
        proposed_state: RequestState::Approved,
        reason: reason.into(),
        created: Some(Utc.with_ymd_and_hms(2026, 12, 1, 10, 5, 0).unwrap()),
    }
}

/// Every place the plugin puts `text`, rendered: `(place, message)`. A place named `post/…`
/// is a request's post (one status line); `reply/…` and `dm/…` have none.
///
/// The only function here that knows the renderer's signatures: adapt it when they change.
fn renderings(text: &str) -> Vec<(&'static str, String)> {
    let t = text.to_string();
    let web = Links::Web {
        proxy_public_addr: PROXY.into(),
    };
    let with = |f: &dyn Fn(&mut AccessRequest)| {
        let mut r = request();
        f(&mut r);
        r
    };
    let roles = request().roles;
    vec![
        (
            "post/request reason",
            message::post_text(
                &with(&|r| r.request_reason = t.clone()),
                RequestState::Pending,
                None,
                &web,
            ),
        ),
        (
            "post/resolution reason",
            message::post_text(
                &with(&|r| {
                    r.state = RequestState::Denied;
                    r.resolve_reason = t.clone();
                }),
                RequestState::Denied,
                Some("@alice"),
                &web,
            ),
        ),
        (
            "post/user",
            message::post_text(
                &with(&|r| r.user = t.clone()),
                RequestState::Approved,
                Some("@alice"),
                &web,
            ),
        ),
        (
            "post/role",
            message::post_text(
                &with(&|r| r.roles = vec!["editor".into(), t.clone()]),
                RequestState::Pending,
                None,
                &web,
            ),
        ),
        (
            "post/resource",
            message::post_text(
                &with(&|r| r.resources = vec!["tm.test/node/web-1".into(), t.clone()]),
                RequestState::Pending,
                None,
                &web,
            ),
        ),
        (
            "post/review author",
            message::post_text(
                &with(&|r| r.reviews = vec![review(&t, "ok")]),
                RequestState::Pending,
                None,
                &web,
            ),
        ),
        (
            "reply/review reason",
            message::review_reply(&review("alice@example.com", &t)),
        ),
        (
            "reply/review author",
            message::review_reply(&review(&t, "looks fine")),
        ),
        (
            "dm/posted role",
            notice::requester_posted(ID, std::slice::from_ref(&t), "access-requests"),
        ),
        (
            "dm/outcome reason",
            notice::requester_outcome(ID, &roles, RequestState::Denied, Some("@carol"), &t),
        ),
        (
            "dm/outcome role",
            notice::requester_outcome(
                ID,
                std::slice::from_ref(&t),
                RequestState::Approved,
                Some("@carol"),
                "",
            ),
        ),
    ]
}

fn expect(place: &str) -> Expect<'static> {
    static LINKS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    Expect {
        allowed_links: LINKS.get_or_init(|| vec![WEB_LINK.to_string()]),
        status_lines: usize::from(place.starts_with("post/")),
    }
}

#[test]
fn text_from_people_renders_only_as_text_for_mattermosts_parsers() {
    if let Err(skip) = judge::ready() {
        let _ = writeln!(std::io::stderr(), "{skip}");
        return;
    }
    let payloads = corpus::payloads();
    let harmless = renderings(HARMLESS);
    let mut posts: Vec<Post> = harmless
        .iter()
        .map(|(place, message)| Post {
            name: format!("{HARMLESS} @ {place}"),
            message: message.clone(),
        })
        .collect();
    for p in &payloads {
        for (place, message) in renderings(&p.text) {
            posts.push(Post {
                name: format!("{} @ {place}", p.name),
                message,
            });
        }
    }
    let started = std::time::Instant::now();
    let trees = judge::parse(&posts);
    let parse_time = started.elapsed();
    let places = harmless.len();
    let reference: BTreeMap<&str, &BTreeMap<String, serde_json::Value>> = harmless
        .iter()
        .map(|(place, _)| *place)
        .zip(&trees[..places])
        .collect();

    // The harmless renderings themselves must keep the rules (a name from Teleport rendered
    // raw, for example, can autolink whatever the payload is); their problems are reported
    // once, and not again for each payload.
    let mut baseline: BTreeMap<(&str, String), Vec<String>> = BTreeMap::new();
    for (place, _) in &harmless {
        for (parser, tree) in reference[place] {
            let found = judge::problems(tree, tree, HARMLESS, &expect(place));
            baseline.insert((place, parser.clone()), found);
        }
    }

    // payload -> place -> parser -> problems beyond the baseline.
    let mut failures: BTreeMap<&str, BTreeMap<&str, BTreeMap<&'static str, Vec<String>>>> =
        BTreeMap::new();
    let mut i = places;
    for p in &payloads {
        for (place, _) in &harmless {
            for (parser, tree) in &trees[i] {
                let known = &baseline[&(*place, parser.clone())];
                let found: Vec<String> =
                    judge::problems(tree, &reference[place][parser], &p.text, &expect(place))
                        .into_iter()
                        .filter(|f| !known.contains(f))
                        .collect();
                if !found.is_empty() {
                    failures
                        .entry(&p.name)
                        .or_default()
                        .entry(place)
                        .or_default()
                        .insert(judge::parser_tag(parser), found);
                }
            }
            i += 1;
        }
    }

    let report = report(&baseline, &failures, payloads.len(), posts.len());
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("markdown_corpus.md");
    std::fs::write(&path, &report).expect("write the report");
    let bad_baseline = baseline.values().filter(|v| !v.is_empty()).count();
    let _ = writeln!(
        std::io::stderr(),
        "{} payloads x {places} places = {} posts, parsed by 3 parsers in {:.1?}; \
         {} payloads break out, {bad_baseline} harmless renderings break a rule; report: {}",
        payloads.len(),
        posts.len(),
        parse_time,
        failures.len(),
        path.display()
    );
    assert!(
        failures.is_empty() && bad_baseline == 0,
        "text from people does not render only as text:\n{report}"
    );
}

/// A Markdown report: the harmless renderings' problems, then one row per payload that
/// breaks out, naming for each place the parsers that saw it and what they saw.
fn report(
    baseline: &BTreeMap<(&str, String), Vec<String>>,
    failures: &BTreeMap<&str, BTreeMap<&str, BTreeMap<&'static str, Vec<String>>>>,
    payloads: usize,
    posts: usize,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Markdown corpus: {payloads} payloads, {posts} posts\n\n## Harmless text, by place\n"
    );
    for ((place, parser), found) in baseline {
        if !found.is_empty() {
            let _ = writeln!(
                out,
                "- {place} / {}: {}",
                judge::parser_tag(parser),
                found.join("; ")
            );
        }
    }
    let _ = writeln!(
        out,
        "\n## Payloads that break out ({} of {payloads})\n\n| payload | place | parsers: what they saw |\n|---|---|---|",
        failures.len()
    );
    for (payload, places) in failures {
        for (place, parsers) in places {
            let seen: Vec<String> = parsers
                .iter()
                .map(|(parser, found)| format!("{parser}: {}", kinds(found)))
                .collect();
            let _ = writeln!(out, "| {payload} | {place} | {} |", seen.join("<br>"));
        }
    }
    let _ = writeln!(out, "\n## Details\n");
    for (payload, places) in failures {
        for (place, parsers) in places {
            for (parser, found) in parsers {
                let _ = writeln!(out, "- {payload} @ {place} / {parser}:");
                for f in found {
                    let _ = writeln!(out, "  - {f}");
                }
            }
        }
    }
    out
}

/// `status, mention x2, link` from the problems' kinds.
fn kinds(found: &[String]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for f in found {
        *counts
            .entry(f.split(':').next().unwrap_or_default())
            .or_default() += 1;
    }
    counts
        .iter()
        .map(|(k, n)| if *n == 1 { k.to_string() } else { format!("{k} x{n}") })
        .collect::<Vec<_>>()
        .join(", ")
}
