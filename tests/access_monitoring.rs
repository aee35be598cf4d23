//! Access Monitoring Rules, the pure part: the condition language against a table taken from
//! Teleport's AMR documentation and its own tests (`lib/accessmonitoring/request_mapping_test.go`)
//! plus every function; parse errors with their positions; rules added, changed and deleted
//! while requests are routed; and random text that must never panic the parser.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use teleport_mattermost::access_monitoring::{
    Change, Condition, ConditionError, RequestFacts, Rule, RuleSet, timezone,
};

fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .with_timezone(&Utc)
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Alice asks for `dev`, on Monday 2024-06-03 at 10:00 UTC, for one hour.
fn alice() -> RequestFacts {
    RequestFacts {
        request_id: "req-1".into(),
        user: "alice@example.com".into(),
        roles: set(&["dev"]),
        suggested_reviewers: set(&["bob@example.com"]),
        request_reason: "deploy hotfix".into(),
        creation_time: Some(at("2024-06-03T10:00:00Z")),
        expiry: Some(at("2024-06-03T11:00:00Z")),
        ..Default::default()
    }
}

fn with(change: impl FnOnce(&mut RequestFacts)) -> RequestFacts {
    let mut facts = alice();
    change(&mut facts);
    facts
}

fn traits(pairs: &[(&str, &[&str])]) -> RequestFacts {
    alice().with_user_traits(pairs.iter().map(|(k, v)| (*k, v.iter().copied())))
}

fn resources(each: &[&[(&str, &str)]]) -> RequestFacts {
    let maps: Vec<BTreeMap<String, String>> = each.iter().map(|l| labels(l)).collect();
    alice().with_resource_labels(maps.iter())
}

fn created(rfc3339: &str) -> RequestFacts {
    with(|f| f.creation_time = Some(at(rfc3339)))
}

struct Case {
    condition: &'static str,
    timezone: &'static str,
    matches: Vec<RequestFacts>,
    misses: Vec<RequestFacts>,
}

fn case(condition: &'static str, matches: Vec<RequestFacts>, misses: Vec<RequestFacts>) -> Case {
    Case {
        condition,
        timezone: "",
        matches,
        misses,
    }
}

fn in_zone(case: Case, timezone: &'static str) -> Case {
    Case { timezone, ..case }
}

fn table() -> Vec<Case> {
    vec![
        // The Terraform provider's and docs' first example.
        case(
            r#"access_request.spec.roles.contains("dev")"#,
            vec![alice(), with(|f| f.roles = set(&["prod", "dev"]))],
            vec![
                with(|f| f.roles = set(&["prod"])),
                with(|f| f.roles.clear()),
            ],
        ),
        // The access_monitoring_rule reference page's example.
        case(
            r#"contains_all(set("access"), access_request.spec.roles) &&
    access_request.spec.resource_labels_intersection["env"].contains("dev") &&
    contains_any(user.traits["team"], set("dev"))"#,
            vec![{
                let mut f = traits(&[("team", &["dev", "ops"])]);
                let a = labels(&[("env", "dev")]);
                let b = labels(&[("env", "dev"), ("tier", "db")]);
                f = f.with_resource_labels([&a, &b]);
                f.roles = set(&["access"]);
                f
            }],
            vec![
                // One resource is in prod: the intersection has no env.
                {
                    let mut f = traits(&[("team", &["dev"])]);
                    let a = labels(&[("env", "dev")]);
                    let b = labels(&[("env", "prod")]);
                    f = f.with_resource_labels([&a, &b]);
                    f.roles = set(&["access"]);
                    f
                },
                // Another role is asked for too.
                {
                    let mut f = traits(&[("team", &["dev"])]);
                    let a = labels(&[("env", "dev")]);
                    f = f.with_resource_labels([&a]);
                    f.roles = set(&["access", "admin"]);
                    f
                },
            ],
        ),
        // Automatic-review docs: pre-approved traits.
        case(
            r#"contains_all(set("cloud-dev"), access_request.spec.roles) &&
    contains_any(user.traits["level"], set("L1")) &&
    contains_any(user.traits["team"], set("Cloud")) &&
    contains_any(user.traits["location"], set("Seattle"))"#,
            vec![{
                let mut f = traits(&[
                    ("level", &["L1"]),
                    ("team", &["Cloud"]),
                    ("location", &["Seattle"]),
                ]);
                f.roles = set(&["cloud-dev"]);
                f
            }],
            vec![{
                let mut f = traits(&[("level", &["L1"]), ("team", &["Tools"])]);
                f.roles = set(&["cloud-dev"]);
                f
            }],
        ),
        // Teleport's own tests: traits.
        case(
            r#"contains_any(user.traits["level"], set("L1", "L2"))"#,
            vec![
                traits(&[("level", &["L1"])]),
                traits(&[("level", &["L2", "L9"])]),
            ],
            vec![traits(&[("level", &["L3"])]), traits(&[]), alice()],
        ),
        // A trait that is missing is an empty set, and `map.key` reads `map["key"]`.
        case(
            r#"user.traits.team.isempty() && is_empty(user.traits["nope"])"#,
            vec![alice(), traits(&[("level", &["L1"])])],
            vec![traits(&[("team", &["db"])])],
        ),
        // Teleport's own tests: roles, function and method forms.
        case(
            r#"contains_any(access_request.spec.roles, set("dev")) &&
                access_request.spec.roles.contains_any(set("dev"))"#,
            vec![with(|f| f.roles = set(&["dev", "stage", "prod"]))],
            vec![with(|f| f.roles = set(&["stage"]))],
        ),
        case(
            r#"contains_all(set("dev", "stage", "prod"), access_request.spec.roles) &&
                set("dev", "stage", "prod").contains_all(access_request.spec.roles)"#,
            vec![
                with(|f| f.roles = set(&["dev", "stage", "prod"])),
                with(|f| f.roles = set(&["stage"])),
            ],
            vec![
                with(|f| f.roles = set(&["dev", "admin"])),
                // contains_all of nothing is false in Teleport.
                with(|f| f.roles.clear()),
            ],
        ),
        case(
            r#"contains_all(set(), access_request.spec.roles) || set().contains_all(access_request.spec.roles)"#,
            vec![],
            vec![with(|f| f.roles.clear()), alice()],
        ),
        // Teleport's own tests: labels union and intersection.
        case(
            r#"access_request.spec.resource_labels_union["env"].
                contains_all(set("test", "dev"))"#,
            vec![resources(&[&[("env", "test")], &[("env", "dev")]])],
            vec![resources(&[&[("env", "test")]]), alice()],
        ),
        case(
            r#"access_request.spec.resource_labels_intersection["env"].contains("test")"#,
            vec![
                resources(&[&[("env", "test")]]),
                resources(&[&[("env", "test")], &[("env", "test"), ("x", "y")]]),
            ],
            vec![
                resources(&[&[("env", "test")], &[("env", "dev")]]),
                resources(&[&[("env", "test")], &[("team", "a")]]),
                alice(),
            ],
        ),
        // Strings.
        case(
            r#"access_request.spec.user == "alice@example.com" && access_request.spec.request_reason != """#,
            vec![alice()],
            vec![
                with(|f| f.user = "mallory@example.com".into()),
                with(|f| f.request_reason.clear()),
            ],
        ),
        case(
            r#"strings.lower(access_request.spec.user) == "alice@example.com" &&
                strings.upper(access_request.spec.roles).contains("DEV")"#,
            vec![with(|f| f.user = "Alice@Example.COM".into())],
            vec![with(|f| f.roles = set(&["ops"]))],
        ),
        case(
            r#"access_request.spec.suggested_reviewers.contains("bob@example.com") && !access_request.spec.suggested_reviewers.contains(access_request.spec.user)"#,
            vec![alice()],
            vec![
                with(|f| f.suggested_reviewers = set(&["alice@example.com", "bob@example.com"])),
                with(|f| f.suggested_reviewers.clear()),
            ],
        ),
        case(
            r#"access_request.spec.system_annotations["pagerduty_services"].contains("db") ||
                access_request.spec.system_annotations.team.contains("db")"#,
            vec![
                with(|f| {
                    f.system_annotations
                        .insert("pagerduty_services".into(), set(&["db", "web"]));
                }),
                with(|f| {
                    f.system_annotations.insert("team".into(), set(&["db"]));
                }),
            ],
            vec![alice()],
        ),
        // Sets built from request data, union, add and remove.
        case(
            r#"union(access_request.spec.roles, set(access_request.spec.user)).contains("alice@example.com") &&
                access_request.spec.roles.add("x", "y").contains_all(set("dev", "y")) &&
                !access_request.spec.roles.remove("dev").contains("dev")"#,
            vec![alice()],
            vec![with(|f| f.roles = set(&["ops"]))],
        ),
        // Integer literals compare with each other.
        case("1 == 1 && 2 != 3", vec![alice()], vec![]),
        case("(1 == 2) || false", vec![], vec![alice()]),
        // Weekdays and clocks, in UTC by default.
        case(
            r#"day(access_request.spec.creation_time) == "Monday" &&
                access_request.spec.creation_time.clock_between("09:00", "17:00")"#,
            vec![alice(), created("2024-06-03T16:59:59Z")],
            vec![
                // Teleport's bounds are strict: 09:00:00 exactly is not after 09:00.
                created("2024-06-03T09:00:00Z"),
                created("2024-06-03T17:00:00Z"),
                created("2024-06-04T10:00:00Z"),
            ],
        ),
        // The same rule in Los Angeles: 10:00 UTC is 03:00 there.
        in_zone(
            case(
                r#"day(access_request.spec.creation_time) == "Monday" &&
                    clock_between(access_request.spec.creation_time, "09:00", "17:00")"#,
                vec![created("2024-06-03T16:30:00Z")],
                vec![alice()],
            ),
            "America/Los_Angeles",
        ),
        // Across midnight by timezone: 23:30 UTC Monday is Tuesday 08:30 in Tokyo.
        in_zone(
            case(
                r#"access_request.spec.creation_time.day() == "Tuesday" &&
                    clock_between(access_request.spec.creation_time, "08:00", "09:00")"#,
                vec![created("2024-06-03T23:30:00Z")],
                vec![alice(), created("2024-06-04T23:30:00Z")],
            ),
            "Asia/Tokyo",
        ),
        // A window across midnight never matches (as in Teleport); its complement does.
        case(
            r#"clock_between(access_request.spec.creation_time, "22:00", "06:00")"#,
            vec![],
            vec![
                created("2024-06-03T23:00:00Z"),
                created("2024-06-03T03:00:00Z"),
            ],
        ),
        case(
            r#"!clock_between(access_request.spec.creation_time, "06:00", "22:00")"#,
            vec![
                created("2024-06-03T23:00:00Z"),
                created("2024-06-03T03:00:00Z"),
                created("2024-06-03T06:00:00Z"),
            ],
            vec![alice()],
        ),
        // Bounds computed from the request.
        case(
            r#"clock_between(access_request.spec.creation_time, access_request.spec.request_reason, "23:00")"#,
            vec![with(|f| f.request_reason = "9:30".into())],
            vec![with(|f| f.request_reason = "11:00".into())],
        ),
        // Times.
        case(
            r#"access_request.spec.creation_time.before(access_request.spec.expiry) &&
                after(access_request.spec.expiry, time.RFC3339("2024-06-01T00:00:00Z")) &&
                between(access_request.spec.creation_time, time.RFC3339("2024-07-01T00:00:00+02:00"), time.RFC3339("2024-06-01T00:00:00Z"))"#,
            vec![alice()],
            vec![
                created("2024-06-03T12:00:00Z"),
                with(|f| {
                    f.creation_time = Some(at("2024-05-01T10:00:00Z"));
                    f.expiry = Some(at("2024-05-01T11:00:00Z"));
                }),
            ],
        ),
        // A request without times sees Go's zero time (Monday, 0001-01-01 00:00 UTC).
        case(
            r#"day(access_request.spec.expiry) == "Monday" && access_request.spec.expiry.before(time.RFC3339("1970-01-01T00:00:00Z"))"#,
            vec![with(|f| f.expiry = None)],
            vec![alice()],
        ),
        // Precedence: && binds tighter than ||; ! binds tightest.
        case(r#"false && true || !false"#, vec![alice()], vec![]),
        case(r#"false && (true || true)"#, vec![], vec![alice()]),
        // Comments and both string quotings are Go's.
        case(
            "access_request.spec.roles.contains(`dev`) // for the dev team\n",
            vec![alice()],
            vec![with(|f| f.roles = set(&["ops"]))],
        ),
    ]
}

#[test]
fn conditions_match_the_requests_they_should() {
    for case in table() {
        let condition = Condition::parse(case.condition)
            .unwrap_or_else(|e| panic!("{:?} should parse: {e}", case.condition));
        let tz = timezone(case.timezone).unwrap();
        for (i, facts) in case.matches.iter().enumerate() {
            assert_eq!(
                condition.matches(facts, tz),
                Ok(true),
                "{:?} should match request #{i}: {facts:?}",
                case.condition
            );
        }
        for (i, facts) in case.misses.iter().enumerate() {
            assert_eq!(
                condition.matches(facts, tz),
                Ok(false),
                "{:?} should not match request #{i}: {facts:?}",
                case.condition
            );
        }
    }
}

#[test]
fn a_window_across_midnight_warns_and_says_what_works() {
    let condition =
        Condition::parse(r#"clock_between(access_request.spec.creation_time, "22:00", "06:00")"#)
            .unwrap();
    let warning = &condition.warnings()[0];
    assert_eq!((warning.at.line, warning.at.column), (1, 1));
    assert!(warning.message.contains("never matches"), "{warning}");
    assert!(
        warning
            .message
            .contains(r#"!clock_between(…, "06:00", "22:00")"#),
        "{warning}"
    );
    assert!(
        Condition::parse(r#"clock_between(access_request.spec.creation_time, "09:00", "17:00")"#)
            .unwrap()
            .warnings()
            .is_empty()
    );
}

#[test]
fn a_bound_from_the_request_that_is_not_a_time_fails_that_request_only() {
    let condition = Condition::parse(
        r#"clock_between(access_request.spec.creation_time, access_request.spec.request_reason, "23:00")"#,
    )
    .unwrap();
    let error = condition
        .matches(&with(|f| f.request_reason = "after lunch".into()), Tz::UTC)
        .unwrap_err();
    assert_eq!((error.at.line, error.at.column), (1, 50));
    assert!(error.message.contains("\"after lunch\""), "{error}");
}

#[test]
fn timezones_are_iana_names_and_empty_is_utc() {
    assert_eq!(timezone(""), Ok(Tz::UTC));
    assert_eq!(timezone("Europe/Berlin"), Ok(Tz::Europe__Berlin));
    let error = timezone("Mars/Olympus").unwrap_err();
    assert!(error.to_string().contains("Mars/Olympus"));
    assert!(error.to_string().contains("IANA"));
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Parses a condition that must fail, returning the error and its line and column.
fn refused(text: &str) -> (ConditionError, Option<(usize, usize)>) {
    let error = Condition::parse(text).expect_err(text);
    let place = error.position().map(|p| (p.line, p.column));
    (error, place)
}

#[test]
fn syntax_errors_say_where_and_what_was_expected() {
    let (error, place) = refused(r#"access_request.spec.roles.contains("dev""#);
    assert_eq!(place, Some((1, 41)));
    let text = error.to_string();
    assert!(text.contains("expected"), "{text}");
    assert!(text.contains("`)`"), "{text}");
    assert!(text.contains("the end of the condition"), "{text}");

    let (error, place) = refused("access_request.spec.roles.contains(\"dev\") &&\n  && true");
    assert_eq!(place, Some((2, 3)));
    assert!(
        error.to_string().contains("an operand after `&&`"),
        "{error}"
    );

    let (error, place) = refused(r#"set("a" "b")"#);
    assert_eq!(place, Some((1, 9)));
    assert!(
        error.to_string().contains("found the string \"b\""),
        "{error}"
    );

    let (error, place) = refused("access_request.spec.roles.contains(\"a\") )");
    assert_eq!(place, Some((1, 41)));
    assert!(error.to_string().contains("found `)`"), "{error}");

    let (error, place) = refused("user.traits[\"team\"");
    assert_eq!(place, Some((1, 19)));
    assert!(error.to_string().contains("`]`"), "{error}");

    let (error, place) = refused("access_request.spec.");
    assert_eq!(place, Some((1, 21)));
    assert!(error.to_string().contains("a name after `.`"), "{error}");

    let (error, place) = refused("true && map");
    assert_eq!(place, Some((1, 9)));
    assert!(error.to_string().contains("Go keyword `map`"), "{error}");
}

#[test]
fn string_literal_errors_point_into_the_string() {
    let (error, place) = refused("access_request.spec.user == \"alice");
    assert_eq!(place, Some((1, 35)));
    assert!(error.to_string().contains("closing the string"), "{error}");

    let (error, place) = refused("access_request.spec.user == \"al\\qice\"");
    assert_eq!(place, Some((1, 33)));
    assert!(error.to_string().contains("an escape such as"), "{error}");

    let (error, place) = refused("access_request.spec.user == \"a\nb\"");
    assert_eq!(place, Some((1, 31)));
    assert!(
        error.to_string().contains("before the line ends"),
        "{error}"
    );

    // Columns count characters, not bytes.
    let (_, place) = refused("\"é\" == @");
    assert_eq!(place, Some((1, 8)));

    let (error, _) = refused(r#"access_request.spec.user == "\xff""#);
    assert!(error.to_string().contains("UTF-8"), "{error}");
}

#[test]
fn a_line_starting_with_an_operator_is_refused_as_go_refuses_it() {
    let (error, place) = refused(
        "access_request.spec.roles.contains(\"dev\")\n  && access_request.spec.user == \"alice\"",
    );
    assert_eq!(place, Some((2, 3)));
    assert!(matches!(error, ConditionError::LineBreak { .. }));
    let text = error.to_string();
    assert!(text.contains("`&&` starts a new line"), "{text}");
    assert!(
        text.contains("move `&&` to the end of the line before"),
        "{text}"
    );

    // The same condition with the operator at the end of the first line is fine, and so is a
    // method call continued after a trailing dot, as in Teleport's own tests.
    Condition::parse(
        "access_request.spec.roles.contains(\"dev\") &&\n  access_request.spec.user == \"alice\"",
    )
    .unwrap();
    Condition::parse("access_request.spec.roles.\n  contains(\"dev\")\n").unwrap();
    Condition::parse("set(\n  \"a\",\n  \"b\",\n).contains(\"a\")").unwrap();
}

#[test]
fn names_and_functions_that_do_not_exist_are_named() {
    let (error, place) = refused("true && access_request.spec.rolez.contains(\"dev\")");
    assert_eq!(place, Some((1, 9)));
    let ConditionError::UnknownName { name, known, .. } = &error else {
        panic!("{error:?}")
    };
    assert_eq!(name, "access_request.spec.rolez");
    assert!(known.contains("access_request.spec.roles"));

    let (error, place) = refused("regexp.match(access_request.spec.roles, \"^dev\")");
    assert_eq!(place, Some((1, 1)));
    assert!(matches!(error, ConditionError::UnknownFunction { .. }));
    assert!(error.to_string().contains("does not implement"), "{error}");

    let (error, _) = refused("contains(access_request.spec.roles, \"dev\")");
    assert!(
        error
            .to_string()
            .contains("access_request.spec.roles.contains(\"dba\")"),
        "{error}"
    );

    let (error, place) = refused("access_request.spec.roles.has(\"dev\")");
    assert_eq!(place, Some((1, 27)));
    assert!(error.to_string().contains("not a method"), "{error}");

    let (error, _) = refused("set == set");
    assert!(error.to_string().contains("is a function"), "{error}");
}

#[test]
fn type_errors_are_found_when_the_rule_arrives() {
    let (error, place) = refused("access_request.spec.roles == \"dev\"");
    assert_eq!(place, Some((1, 1)));
    let text = error.to_string();
    assert!(text.contains("compares strings"), "{text}");
    assert!(text.contains("a set of strings"), "{text}");
    assert!(text.contains(".contains(\"x\")"), "{text}");

    let (error, place) = refused("access_request.spec.user == set(\"alice\")");
    assert_eq!(place, Some((1, 29)));
    assert!(
        error.to_string().contains("the right side of `==`"),
        "{error}"
    );

    let (error, place) = refused("true &&\n  contains_any(access_request.spec.roles, \"dev\")");
    assert_eq!(place, Some((2, 43)));
    let text = error.to_string();
    assert!(
        text.contains("the 2nd argument of `contains_any`"),
        "{text}"
    );
    assert!(text.contains("set(\"dev\")"), "{text}");

    let (error, place) = refused("user.traits.contains(\"x\")");
    assert_eq!(place, Some((1, 1)));
    assert!(
        error.to_string().contains("user.traits[\"team\"]"),
        "{error}"
    );

    let (error, place) = refused("access_request.spec.user[\"x\"].isempty()");
    assert_eq!(place, Some((1, 1)));
    assert!(
        error.to_string().contains("only a map can be indexed"),
        "{error}"
    );

    let (error, _) = refused("!access_request.spec.roles");
    assert!(error.to_string().contains("the operand of `!`"), "{error}");

    let (error, place) = refused("contains_any(access_request.spec.roles)");
    assert_eq!(place, Some((1, 1)));
    assert!(
        error
            .to_string()
            .contains("`contains_any` takes 2 arguments, given 1"),
        "{error}"
    );

    let (error, _) = refused("access_request.spec.roles.contains()");
    assert!(
        error
            .to_string()
            .contains("`.contains` takes 1 argument, given 0"),
        "{error}"
    );

    assert_eq!(
        refused("access_request.spec.user").0,
        ConditionError::NotBoolean { found: "a string" }
    );
}

#[test]
fn go_syntax_teleport_refuses_is_refused_with_its_position() {
    for (text, place, words) in [
        (
            "access_request.spec.creation_time < access_request.spec.expiry",
            (1, 35),
            "`<` is not supported",
        ),
        ("1 + 1 == 2", (1, 3), "`+` is not supported"),
        ("-1 == 1", (1, 1), "`-` is not supported"),
        (
            "access_request.spec.user == 1.5",
            (1, 29),
            "a floating-point number",
        ),
        (
            "access_request.spec.user == 'a'",
            (1, 29),
            "character literal",
        ),
        ("0x1F == 31", (1, 1), "plain decimal digits"),
        ("set(\"a\").x", (1, 10), "not a name"),
    ] {
        let (error, at) = refused(text);
        assert_eq!(at, Some(place), "{text}: {error}");
        assert!(error.to_string().contains(words), "{text}: {error}");
    }
}

#[test]
fn literals_that_cannot_be_read_are_refused() {
    let (error, place) =
        refused("clock_between(access_request.spec.creation_time, \"9:00\", \"25:00\")");
    assert_eq!(place, Some((1, 58)));
    assert!(
        error.to_string().contains("\"25:00\" is not a time of day"),
        "{error}"
    );

    let (error, place) = refused("access_request.spec.expiry.after(time.RFC3339(\"tomorrow\"))");
    assert_eq!(place, Some((1, 47)));
    assert!(error.to_string().contains("RFC 3339"), "{error}");
}

#[test]
fn size_limits_hold() {
    assert_eq!(
        refused("  // nothing\n /* here */ ").0,
        ConditionError::Empty
    );
    assert_eq!(refused("").0, ConditionError::Empty);

    let deep = format!("{}true{}", "(".repeat(80), ")".repeat(80));
    let (error, place) = refused(&deep);
    assert!(matches!(error, ConditionError::TooDeep { .. }), "{error}");
    assert_eq!(place, Some((1, 65)));

    let long = vec!["true"; 3000].join(" && ");
    assert!(matches!(refused(&long).0, ConditionError::TooLong { .. }));

    // Long flat conjunctions are fine: they do not nest.
    Condition::parse(&vec!["true"; 1000].join(" && ")).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Rules

fn rule(name: &str, condition: &str, recipients: &[&str]) -> Rule {
    Rule {
        name: name.into(),
        revision: "1".into(),
        subjects: vec!["access_request".into()],
        states: vec![],
        condition: condition.into(),
        notification_name: "mattermost".into(),
        recipients: recipients.iter().map(|r| r.to_string()).collect(),
    }
}

fn recipients(rules: &RuleSet, facts: &RequestFacts) -> Vec<String> {
    rules
        .recipients_for(facts)
        .map(|r| r.into_iter().collect())
        .unwrap_or_default()
}

#[test]
fn rules_added_changed_and_deleted_while_requests_flow() {
    let mut rules = RuleSet::new("mattermost", Tz::UTC);
    let dev = alice();
    let dba = with(|f| f.roles = set(&["dba"]));
    assert_eq!(rules.recipients_for(&dev), None);

    assert_eq!(
        rules.upsert(rule(
            "dev",
            r#"access_request.spec.roles.contains("dev")"#,
            &["eng/dev", "carol@example.com"],
        )),
        Ok(Change::Added)
    );
    assert_eq!(
        rules.upsert(rule(
            "everyone",
            "true",
            &["eng/audit", "carol@example.com"]
        )),
        Ok(Change::Added)
    );
    // The union of both rules' recipients, each once.
    assert_eq!(
        recipients(&rules, &dev),
        ["carol@example.com", "eng/audit", "eng/dev"]
    );
    assert_eq!(recipients(&rules, &dba), ["carol@example.com", "eng/audit"]);
    let routing = rules.route(&dev);
    assert_eq!(routing.matched, ["dev", "everyone"]);

    // A new revision with the same content changes nothing.
    let mut same = rule(
        "dev",
        r#"access_request.spec.roles.contains("dev")"#,
        &["eng/dev", "carol@example.com"],
    );
    same.revision = "2".into();
    assert_eq!(rules.upsert(same), Ok(Change::Unchanged));
    assert_eq!(rules.get("dev").unwrap().rule().revision, "2");

    // Changed: now for dba requests, to another channel.
    assert_eq!(
        rules.upsert(rule(
            "dev",
            r#"access_request.spec.roles.contains("dba")"#,
            &["eng/dba"],
        )),
        Ok(Change::Updated)
    );
    assert_eq!(recipients(&rules, &dev), ["carol@example.com", "eng/audit"]);
    assert_eq!(
        recipients(&rules, &dba),
        ["carol@example.com", "eng/audit", "eng/dba"]
    );

    // Deleted.
    assert_eq!(rules.remove("everyone"), Change::Removed);
    assert_eq!(rules.remove("everyone"), Change::Ignored);
    assert_eq!(rules.recipients_for(&dev), None);
    assert_eq!(recipients(&rules, &dba), ["eng/dba"]);

    // Re-addressed to another plugin: a PUT that no longer applies removes the rule.
    let mut slack = rule("dev", "true", &["#ops"]);
    slack.notification_name = "slack".into();
    assert_eq!(rules.upsert(slack.clone()), Ok(Change::Removed));
    assert_eq!(rules.upsert(slack), Ok(Change::Ignored));
    assert!(rules.is_empty());
}

#[test]
fn only_rules_for_this_plugin_and_access_requests_apply() {
    let mut rules = RuleSet::new("mm-team-a", Tz::UTC);
    let mut other_plugin = rule("a", "true", &["x"]);
    other_plugin.notification_name = "mattermost".into();
    assert_eq!(rules.upsert(other_plugin), Ok(Change::Ignored));
    let mut other_subject = rule("b", "true", &["x"]);
    other_subject.notification_name = "mm-team-a".into();
    other_subject.subjects = vec!["access_list".into()];
    assert_eq!(rules.upsert(other_subject), Ok(Change::Ignored));
    // states and desired_state play no part, as in Teleport's plugin.
    let mut ours = rule("c", "true", &["x"]);
    ours.notification_name = "mm-team-a".into();
    ours.subjects = vec!["access_list".into(), "access_request".into()];
    ours.states = vec!["reviewed".into()];
    assert_eq!(rules.upsert(ours), Ok(Change::Added));
    assert_eq!(rules.len(), 1);
    assert_eq!(recipients(&rules, &alice()), ["x"]);
}

#[test]
fn a_broken_rule_is_reported_once_and_the_others_still_apply() {
    let mut rules = RuleSet::new("mattermost", Tz::UTC);
    rules
        .upsert(rule("good", "true", &["eng/all"]))
        .expect("good rule");
    let broken = rule(
        "broken",
        "access_request.spec.roles.contains(\"dev\"",
        &["eng/x"],
    );
    let error = rules.upsert(broken.clone()).unwrap_err();
    assert_eq!(error.rule, "broken");
    let text = error.to_string();
    assert!(text.contains("\"broken\" is skipped"), "{text}");
    assert!(text.contains("line 1, column 41"), "{text}");
    assert!(
        text.contains("tctl edit access_monitoring_rule/broken"),
        "{text}"
    );
    // Seen again (a relist, a repeated event): not reported again.
    assert_eq!(rules.upsert(broken.clone()), Ok(Change::Unchanged));
    assert_eq!(rules.broken().count(), 1);
    assert_eq!(recipients(&rules, &alice()), ["eng/all"]);

    // A rule that worked and then breaks stops routing, and its error is returned.
    rules.upsert(rule("was-good", "true", &["eng/y"])).unwrap();
    assert_eq!(recipients(&rules, &alice()), ["eng/all", "eng/y"]);
    let error = rules
        .upsert(rule("was-good", "access_request.spec.rolez", &["eng/y"]))
        .unwrap_err();
    assert!(matches!(*error.error, ConditionError::UnknownName { .. }));
    assert_eq!(recipients(&rules, &alice()), ["eng/all"]);

    // Fixed: it routes again and leaves the broken list.
    assert_eq!(
        rules.upsert(rule("broken", "true", &["eng/x"])),
        Ok(Change::Added)
    );
    assert_eq!(rules.broken().count(), 1);
    // Deleted while broken.
    assert_eq!(rules.remove("was-good"), Change::Removed);
    assert_eq!(rules.broken().count(), 0);
}

#[test]
fn a_rule_failing_for_one_request_skips_only_that_request() {
    let mut rules = RuleSet::new("mattermost", Tz::UTC);
    rules
        .upsert(rule(
            "by-reason",
            r#"clock_between(access_request.spec.creation_time, access_request.spec.request_reason, "23:00")"#,
            &["eng/late"],
        ))
        .unwrap();
    rules.upsert(rule("all", "true", &["eng/all"])).unwrap();
    let routing = rules.route(&with(|f| f.request_reason = "urgent".into()));
    assert_eq!(routing.matched, ["all"]);
    assert_eq!(routing.errors.len(), 1);
    assert_eq!(routing.errors[0].rule, "by-reason");
    assert_eq!(routing.errors[0].request, "req-1");
    assert_eq!(
        recipients(&rules, &with(|f| f.request_reason = "08:00".into())),
        ["eng/all", "eng/late"]
    );
}

#[test]
fn a_fresh_listing_replaces_every_rule() {
    let mut rules = RuleSet::new("mattermost", Tz::UTC);
    rules.upsert(rule("kept", "true", &["a"])).unwrap();
    rules
        .upsert(rule("deleted-while-away", "true", &["b"]))
        .unwrap();
    let _ = rules.upsert(rule("broken", "(", &["c"]));
    let new_errors = rules.replace_all([
        rule("kept", "true", &["a"]),
        rule("broken", "(", &["c"]),
        rule("also-broken", "true &&", &["d"]),
        rule("new", "false", &["e"]),
    ]);
    // Only the error not reported before.
    assert_eq!(new_errors.len(), 1);
    assert_eq!(new_errors[0].rule, "also-broken");
    assert_eq!(
        rules
            .active()
            .map(|r| r.rule().name.as_str())
            .collect::<Vec<_>>(),
        ["kept", "new"]
    );
    assert_eq!(rules.broken().count(), 2);
    assert_eq!(recipients(&rules, &alice()), ["a"]);
}

// ---------------------------------------------------------------------------------------------
// Robustness

const FRAGMENTS: &[&str] = &[
    "access_request.spec.roles",
    "access_request.spec.user",
    "access_request.spec.creation_time",
    "user.traits",
    "[\"team\"]",
    ".contains(",
    ".contains_any(",
    "set(",
    "union(",
    "day(",
    "clock_between(",
    "\"09:00\"",
    "\"dev\"",
    "`raw`",
    "\"\\u00e9\"",
    "\"\\",
    "(",
    ")",
    "[",
    "]",
    ",",
    ".",
    "&&",
    "||",
    "!",
    "==",
    "!=",
    "<",
    "+",
    "1",
    "0x",
    "1.5",
    "'a'",
    "true",
    "false",
    "map",
    "/*",
    "*/",
    "//",
    "\n",
    " ",
    "\t",
    "é",
    "🦀",
    "\0",
];

fn random_text(rng: &mut StdRng) -> String {
    let mut text = String::new();
    for _ in 0..rng.random_range(0..24) {
        if rng.random_range(0..8) == 0 {
            text.push(char::from_u32(rng.random_range(0..0x3000)).unwrap_or('?'));
        } else {
            text.push_str(FRAGMENTS.choose(rng).unwrap());
        }
    }
    text
}

#[test]
fn random_text_never_panics_and_errors_point_inside_the_text() {
    let iterations: usize = std::env::var("AMR_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let mut rng = StdRng::seed_from_u64(0x414d52);
    let facts = traits(&[("team", &["dev"])]);
    let mut parsed = 0;
    for _ in 0..iterations {
        let text = random_text(&mut rng);
        match Condition::parse(&text) {
            Ok(condition) => {
                parsed += 1;
                let _ = condition.matches(&facts, Tz::Asia__Tokyo);
            }
            Err(error) => {
                if let Some(p) = error.position() {
                    assert!(p.offset <= text.len(), "{text:?}: {error}");
                    assert!(text.is_char_boundary(p.offset), "{text:?}: {error}");
                    assert!(p.line >= 1 && p.column >= 1, "{text:?}: {error}");
                }
                assert!(!error.to_string().is_empty());
            }
        }
    }
    // The generator reaches the evaluator too, not only the error paths.
    assert!(parsed > 0, "no random condition parsed");
}

#[test]
fn mutated_valid_conditions_never_panic() {
    let seeds: Vec<&str> = table().iter().map(|c| c.condition).collect();
    let mut rng = StdRng::seed_from_u64(7);
    let facts = alice();
    for _ in 0..5_000 {
        let seed = seeds.choose(&mut rng).unwrap();
        let mut chars: Vec<char> = seed.chars().collect();
        for _ in 0..rng.random_range(1..4) {
            let i = rng.random_range(0..=chars.len());
            match rng.random_range(0..3) {
                0 if i < chars.len() => {
                    chars.remove(i);
                }
                1 => chars.insert(
                    i,
                    *['(', ')', '"', '.', '!', '\n', '\\', '`']
                        .choose(&mut rng)
                        .unwrap(),
                ),
                _ => chars.truncate(i),
            }
        }
        let text: String = chars.into_iter().collect();
        if let Ok(condition) = Condition::parse(&text) {
            let _ = condition.matches(&facts, Tz::UTC);
        }
    }
}

#[test]
fn deep_but_allowed_nesting_does_not_overflow() {
    let nested = format!(
        "{}access_request.spec.roles.contains(\"dev\"){}",
        "(".repeat(56),
        ")".repeat(56)
    );
    let condition = Condition::parse(&nested).unwrap();
    assert_eq!(condition.matches(&alice(), Tz::UTC), Ok(true));
    let negations = format!("{}true", "!".repeat(62));
    assert_eq!(
        Condition::parse(&negations)
            .unwrap()
            .matches(&alice(), Tz::UTC),
        Ok(true)
    );
}
