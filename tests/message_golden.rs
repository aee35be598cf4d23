//! Golden tests of post and reply text: the expected outputs live in `tests/golden/*.md`.
//!
//! Run with `UPDATE_GOLDEN=1` to rewrite them after an intended change, then review the diff.
//! Each file holds the exact text plus one trailing newline (so editors keep it intact).

use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use teleport_mattermost::message::markdown::code_block;
use teleport_mattermost::message::{Links, post_text, review_reply};
use teleport_mattermost::request::{AccessRequest, RequestState, Review};

fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.md"));
    let actual = format!("{actual}\n");
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; run with UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "{} differs from the rendered text (UPDATE_GOLDEN=1 rewrites it)\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

fn request() -> AccessRequest {
    AccessRequest {
        id: "0d9a2f3e-5b0c-4f7e-9d1a-8c2b6e4f1a77".into(),
        user: "bob@example.com".into(),
        roles: vec!["editor".into(), "db-admin".into()],
        state: RequestState::Pending,
        request_reason: "Need to fix the prod database migration".into(),
        suggested_reviewers: vec!["alice@example.com".into()],
        ..AccessRequest::default()
    }
}

fn web() -> Links {
    Links::Web {
        proxy_public_addr: "teleport.example.com:443".into(),
    }
}

#[test]
fn pending_with_link() {
    golden(
        "pending_link",
        &post_text(&request(), RequestState::Pending, None, &web()),
    );
}

#[test]
fn pending_with_tsh_lines() {
    golden(
        "pending_tsh",
        &post_text(&request(), RequestState::Pending, None, &Links::Tsh),
    );
}

/// An OSS cluster (no Advanced Access Workflows) has no reviews: the hint is tctl's.
#[test]
fn pending_on_oss_with_tctl_lines() {
    golden(
        "pending_tctl",
        &post_text(&request(), RequestState::Pending, None, &Links::Tctl),
    );
}

#[test]
fn pending_without_reason() {
    let mut req = request();
    req.request_reason = String::new();
    golden(
        "pending_no_reason",
        &post_text(&req, RequestState::Pending, None, &Links::Tsh),
    );
}

#[test]
fn approved_by_a_clicker() {
    golden(
        "approved_by",
        &post_text(&request(), RequestState::Approved, Some("@alice"), &web()),
    );
}

#[test]
fn approved_without_actor_has_no_tsh_lines() {
    golden(
        "approved",
        &post_text(&request(), RequestState::Approved, None, &Links::Tsh),
    );
}

#[test]
fn denied_with_resolve_reason() {
    let mut req = request();
    req.state = RequestState::Denied;
    req.resolve_reason = "Not during the freeze".into();
    golden(
        "denied_reason",
        &post_text(&req, RequestState::Denied, Some("@carol"), &web()),
    );
}

#[test]
fn expired() {
    golden(
        "expired",
        &post_text(&request(), RequestState::Expired, None, &Links::Tsh),
    );
}

#[test]
fn promoted() {
    golden(
        "promoted",
        &post_text(&request(), RequestState::Promoted, Some("@alice"), &web()),
    );
}

#[test]
fn reason_with_backticks_and_truncation() {
    let mut req = request();
    // Backticks must not break out of the code block; the long tail must be cut at the
    // post's budget without splitting the multibyte characters around the cut.
    req.request_reason = format!("run `rm -rf /tmp/x` then {}", "日本語".repeat(1500));
    golden(
        "reason_escaped_truncated",
        &post_text(&req, RequestState::Pending, None, &Links::Tsh),
    );
}

#[test]
fn review_reply_approved() {
    let review = Review {
        author: "alice@example.com".into(),
        proposed_state: RequestState::Approved,
        reason: "Looks fine".into(),
        created: Some(Utc.with_ymd_and_hms(2024, 3, 5, 14, 7, 9).unwrap()),
    };
    golden("review_approved", &review_reply(&review));
}

#[test]
fn review_reply_denied_without_reason() {
    let review = Review {
        author: "carol".into(),
        proposed_state: RequestState::Denied,
        reason: String::new(),
        created: Some(Utc.with_ymd_and_hms(2025, 12, 31, 23, 59, 0).unwrap()),
    };
    golden("review_denied", &review_reply(&review));
}

#[test]
fn a_code_block_stays_valid_utf8_and_fenced_at_every_length() {
    // Sweeps cut points across multibyte characters of every width.
    for n in 480..520 {
        let s: String = "aé日😀`".chars().cycle().take(n).collect();
        let block = code_block(&s, 500).unwrap();
        assert!(block.text.starts_with("```\n"));
        assert!(block.text.ends_with("\n```"));
        assert_eq!(block.text.matches("```").count(), 2, "{}", block.text);
        assert_eq!(
            block.truncated,
            s.chars().count() + s.matches('`').count() > 500
        );
    }
}

fn at(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

/// What reviewers need beyond Teleport's lines: the resources, how long the access lasts,
/// when the request expires.
#[test]
fn pending_resource_request_with_duration_and_expiry() {
    let req = AccessRequest {
        resources: vec![
            "tm.test/node/web-1".into(),
            "tm.test/db/orders-prod".into(),
            "tm.test/kube_cluster/prod/payments".into(),
        ],
        created: Some(at("2026-12-01T10:00:00Z")),
        expires: Some(at("2026-12-01T11:00:00Z")),
        max_duration: Some(at("2026-12-01T18:30:00Z")),
        ..request()
    };
    golden(
        "pending_resources_duration",
        &post_text(&req, RequestState::Pending, None, &web()),
    );
}

/// The review progress, updated with each review.
#[test]
fn pending_with_review_progress() {
    use teleport_mattermost::request::Review;
    let review = |author: &str, state| Review {
        author: author.into(),
        proposed_state: state,
        reason: String::new(),
        created: None,
    };
    let req = AccessRequest {
        reviews: vec![
            review("alice", RequestState::Approved),
            review("carol", RequestState::Denied),
            review("dave", RequestState::Approved),
        ],
        ..request()
    };
    golden(
        "pending_review_progress",
        &post_text(&req, RequestState::Pending, None, &web()),
    );
}

/// A 20,000-character reason fills the server's post size and no more; the id, the user and
/// the status are never cut.
#[test]
fn a_20000_character_reason_is_cut_to_the_servers_limit_and_nothing_else_is() {
    use teleport_mattermost::message::post_text_within;
    let req = AccessRequest {
        request_reason: "x".repeat(20_000),
        resolve_reason: "y".repeat(20_000),
        ..request()
    };
    for limit in [4000, 16_383] {
        let text = post_text_within(&req, RequestState::Denied, Some("@carol"), &web(), limit);
        let chars = text.chars().count();
        assert!(chars <= limit, "{chars} > {limit}");
        assert!(chars > limit - 200, "the limit is used: {chars} of {limit}");
        assert!(text.contains(&format!("**Request ID**: {}", req.id)));
        assert!(text.contains("**User**: `bob@example.com`"));
        assert!(text.contains("**Status**: ❌ DENIED by @carol"));
        assert_eq!(text.matches("(truncated)").count(), 2);
    }
    // A short reason is never cut, whatever the other one is.
    let short = AccessRequest {
        request_reason: "short".into(),
        resolve_reason: "y".repeat(20_000),
        ..request()
    };
    let text = post_text_within(&short, RequestState::Denied, None, &web(), 4000);
    assert!(text.contains("**Reason**:\n```\nshort\n```"), "{text}");
}

/// A reason that fits is shown whole, backticks and all.
#[test]
fn a_reason_that_fits_is_never_cut() {
    let req = AccessRequest {
        request_reason: "Investigating the `orders` table lock (INC-1234) `now`".into(),
        ..request()
    };
    let text = post_text(&req, RequestState::Pending, None, &web());
    assert!(!text.contains("(truncated)"), "{text}");
    assert!(text.contains("(INC-1234)"), "{text}");
}

/// Teleport v18: a long-term request says why it has no Approve button, resources show their
/// constraints (field 26), a chosen start time and the pending TTL (fields 21 and 22).
#[test]
fn pending_long_term_with_constraints_start_and_pending_ttl() {
    use teleport_mattermost::request::{RequestKind, RequestedResource, ResourceConstraints};
    let req = AccessRequest {
        kind: RequestKind::LongTerm,
        requested_resources: vec![
            RequestedResource {
                cluster: "tm.test".into(),
                kind: "app".into(),
                name: "aws-console".into(),
                sub_resource: String::new(),
                constraints: Some(ResourceConstraints::AwsConsole {
                    role_arns: vec!["arn:aws:iam::123456789012:role/ReadOnly".into()],
                }),
            },
            RequestedResource {
                cluster: "tm.test".into(),
                kind: "node".into(),
                name: "web-1".into(),
                sub_resource: String::new(),
                constraints: Some(ResourceConstraints::Ssh {
                    logins: vec!["root".into()],
                }),
            },
        ],
        created: Some(at("2026-12-01T10:00:00Z")),
        expires: Some(at("2026-12-01T11:00:00Z")),
        resource_expiry: Some(at("2026-12-08T10:00:00Z")),
        assume_start_time: Some(at("2026-12-02T09:00:00Z")),
        ..request()
    };
    golden(
        "pending_long_term",
        &post_text(&req, RequestState::Pending, None, &web()),
    );
}

/// PROMOTED names the access list the request went to.
#[test]
fn promoted_to_an_access_list() {
    use teleport_mattermost::request::PromotedAccessList;
    let req = AccessRequest {
        state: RequestState::Promoted,
        promoted_access_list: Some(PromotedAccessList {
            name: "3f1c".into(),
            title: "Database admins".into(),
        }),
        ..request()
    };
    golden(
        "promoted_to_list",
        &post_text(&req, RequestState::Promoted, None, &web()),
    );
}
