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
const WEB_LINK: &str =
    "https://teleport.example.com/web/requests/0d9a2f3e-5b0c-4f7e-9d1a-8c2b6e4f1a77";
/// What stands in for the payload in the reference rendering of each place.
const HARMLESS: &str = "harmless";
/// The reference for a payload that is only whitespace, which the plugin shows as empty.
const BLANK: &str = " ";

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
            "post/suggested reviewer",
            message::post_text_with(
                &request(),
                RequestState::Pending,
                None,
                &web,
                message::DEFAULT_MAX_POST_CHARS,
                message::Extras {
                    suggested: &[t.clone(), "alice".into()],
                    suggested_messaged: 1,
                    channel_post: None,
                },
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
    // The references: each place with a harmless text, and with a blank one (what a payload
    // of only whitespace is compared with: the plugin shows such text as empty).
    let harmless = renderings(HARMLESS);
    let blank = renderings(BLANK);
    let mut posts: Vec<Post> = Vec::new();
    for (text, rendered) in [(HARMLESS, &harmless), (BLANK, &blank)] {
        for (place, message) in rendered {
            posts.push(Post {
                name: format!("{text:?} @ {place}"),
                message: message.clone(),
            });
        }
    }
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
    let n = harmless.len();
    let places: Vec<&str> = harmless.iter().map(|(place, _)| *place).collect();
    let reference_of = |k: usize| -> BTreeMap<&str, &BTreeMap<String, serde_json::Value>> {
        places
            .iter()
            .copied()
            .zip(&trees[k * n..(k + 1) * n])
            .collect()
    };
    let (reference, blank_reference) = (reference_of(0), reference_of(1));

    // The references themselves must keep the rules (a name from Teleport rendered raw, for
    // example, can autolink whatever the payload is); their problems are reported once, and
    // not again for each payload.
    let mut baseline: BTreeMap<(&str, String), Vec<String>> = BTreeMap::new();
    for place in &places {
        for (parser, tree) in reference[place] {
            let found = judge::problems(tree, tree, HARMLESS, &expect(place));
            baseline.insert((place, parser.clone()), found);
        }
    }

    // payload -> place -> parser -> problems beyond the baseline.
    let mut failures: Failures = BTreeMap::new();
    let mut i = 2 * n;
    for p in &payloads {
        let reference = if p.text.trim().is_empty() {
            &blank_reference
        } else {
            &reference
        };
        for place in &places {
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

    let summary = summary(&baseline, &failures, &payloads, &places, posts.len());
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("markdown_corpus.md");
    std::fs::write(&path, format!("{summary}\n{}", details(&failures))).expect("write the report");
    let bad_baseline = baseline.values().filter(|v| !v.is_empty()).count();
    let _ = writeln!(
        std::io::stderr(),
        "{} payloads x {} places = {} posts, parsed in {:.1?}; \
         {} payloads break out, {bad_baseline} harmless renderings break a rule; \
         report with every problem: {}",
        payloads.len(),
        places.len(),
        posts.len(),
        parse_time,
        failures.len(),
        path.display()
    );
    assert!(
        failures.is_empty() && bad_baseline == 0,
        "text from people does not render only as text (details: {}):\n{summary}",
        path.display()
    );
}

type Failures<'a> = BTreeMap<&'a str, BTreeMap<&'a str, BTreeMap<&'static str, Vec<String>>>>;

/// The harmless renderings' problems, then a matrix: one row per payload that breaks out,
/// one column per place, naming in each cell the parsers that saw a break-out there
/// (`c` @mattermost/commonmark, `3` marked 0.3.6, `7` marked 0.7.0, `s` the server's
/// shared/markdown).
fn summary(
    baseline: &BTreeMap<(&str, String), Vec<String>>,
    failures: &Failures,
    payloads: &[corpus::Payload],
    places: &[&str],
    posts: usize,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Markdown corpus: {} payloads, {posts} posts\n\n## A harmless text, by place and parser\n",
        payloads.len()
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
        "\n## Payloads that break out: {} of {}\n\nc = @mattermost/commonmark, 3 = marked 0.3.6, 7 = marked 0.7.0, s = the server's own parser saw it break out there.\n",
        failures.len(),
        payloads.len()
    );
    let _ = writeln!(out, "| payload | {} |", places.join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(places.len()));
    for p in payloads {
        let Some(row) = failures.get(p.name.as_str()) else {
            continue;
        };
        let cells: Vec<String> = places
            .iter()
            .map(|place| {
                row.get(place)
                    .map(|parsers| {
                        parsers
                            .keys()
                            .map(|k| match *k {
                                "commonmark" => "c",
                                "marked-0.3.6" => "3",
                                "marked-0.7.0" => "7",
                                "server" => "s",
                                _ => "?",
                            })
                            .collect::<String>()
                    })
                    .unwrap_or_default()
            })
            .collect();
        let _ = writeln!(out, "| {} | {} |", p.name, cells.join(" | "));
    }
    let _ = writeln!(out, "\n## Problems seen, by kind\n");
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for places in failures.values() {
        for parsers in places.values() {
            for found in parsers.values() {
                for f in found {
                    *by_kind
                        .entry(f.split(':').next().unwrap_or_default().to_string())
                        .or_default() += 1;
                }
            }
        }
    }
    for (kind, n) in by_kind {
        let _ = writeln!(out, "- {kind}: {n}");
    }
    out
}

/// Every problem, payload by payload.
fn details(failures: &Failures) -> String {
    let mut out = String::from("## Details\n\n");
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
