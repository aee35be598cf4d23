//! Access Monitoring Rules cost (`cargo bench --bench access_monitoring`): 1,000 rules by
//! 10,000 requests.
//!
//! - parse: every rule's condition parsed and typed, as when the rules arrive (per rule);
//! - facts: one request's condition variables built, labels union and intersection included
//!   (per request; the Teleport calls that fetch traits and labels are not in it);
//! - route: every rule evaluated against one request and the recipients united (per request).
//!
//! The rules mix the shapes of Teleport's documentation: role membership, traits, label
//! intersections, weekday and clock windows in a timezone, annotations, string equality.
//! Sizes can be changed: `AMR_RULES=100 AMR_REQUESTS=1000 cargo bench --bench access_monitoring`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use teleport_mattermost::access_monitoring::{Condition, RequestFacts, Rule, RuleSet, timezone};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn condition(i: usize) -> String {
    match i % 6 {
        0 => format!(r#"access_request.spec.roles.contains("role-{}")"#, i % 50),
        1 => format!(
            r#"contains_any(user.traits["team"], set("team-{}", "team-{}")) && access_request.spec.user != "svc-{i}@example.com""#,
            i % 20,
            (i + 7) % 20
        ),
        2 => format!(
            r#"access_request.spec.resource_labels_intersection["env"].contains("env-{}") &&
    day(access_request.spec.creation_time) != "Sunday""#,
            i % 4
        ),
        3 => r#"clock_between(access_request.spec.creation_time, "09:00", "17:00") &&
    contains_all(set("role-1", "role-2", "role-3"), access_request.spec.roles)"#
            .to_string(),
        4 => format!(
            r#"user.traits.level.contains("L{}") || access_request.spec.system_annotations["ticket"].contains("T-{i}")"#,
            i % 3
        ),
        _ => format!(
            r#"access_request.spec.resource_labels_union["team"].contains("team-{}") &&
    !access_request.spec.suggested_reviewers.isempty() &&
    strings.lower(access_request.spec.request_reason) != "test""#,
            i % 20
        ),
    }
}

fn rule(i: usize) -> Rule {
    Rule {
        name: format!("rule-{i:04}"),
        revision: "1".into(),
        subjects: vec!["access_request".into()],
        states: vec![],
        condition: condition(i),
        notification_name: "mattermost".into(),
        recipients: vec![format!("team-{}/channel-{}", i % 20, i % 37)],
    }
}

fn request(rng: &mut StdRng, n: usize) -> RequestFacts {
    let created =
        DateTime::<Utc>::from_timestamp(1_717_000_000 + rng.random_range(0..14 * 86_400), 0)
            .unwrap();
    let roles: Vec<String> = (0..rng.random_range(1..4))
        .map(|_| format!("role-{}", rng.random_range(0..50)))
        .collect();
    let mut facts = RequestFacts {
        request_id: format!("req-{n}"),
        user: format!("user-{}@example.com", rng.random_range(0..500)),
        roles: roles.into_iter().collect(),
        suggested_reviewers: (0..rng.random_range(0..3))
            .map(|r| format!("reviewer-{r}@example.com"))
            .collect(),
        request_reason: "Deploying the fix for INC-42".into(),
        creation_time: Some(created),
        expiry: Some(created + chrono::Duration::hours(1)),
        ..Default::default()
    };
    facts.system_annotations.insert(
        "ticket".into(),
        [format!("T-{}", rng.random_range(0..2000))].into(),
    );
    facts
}

fn resources(rng: &mut StdRng) -> Vec<BTreeMap<String, String>> {
    (0..rng.random_range(0..4))
        .map(|_| {
            BTreeMap::from([
                ("env".to_string(), format!("env-{}", rng.random_range(0..4))),
                (
                    "team".to_string(),
                    format!("team-{}", rng.random_range(0..20)),
                ),
                ("region".to_string(), "eu-west-1".to_string()),
            ])
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn report(name: &str, unit: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let total: Duration = samples.iter().sum();
    println!(
        "{name:<8} n={:<6} median={:>9.2} µs  p99={:>9.2} µs  max={:>9.2} µs  mean={:>9.2} µs  (per {unit})",
        samples.len(),
        percentile(&samples, 0.50).as_secs_f64() * 1e6,
        percentile(&samples, 0.99).as_secs_f64() * 1e6,
        samples.last().unwrap().as_secs_f64() * 1e6,
        total.as_secs_f64() * 1e6 / samples.len() as f64,
    );
}

fn main() {
    let rules_n = env_usize("AMR_RULES", 1_000);
    let requests_n = env_usize("AMR_REQUESTS", 10_000);
    println!(
        "access monitoring rules: {rules_n} rules × {requests_n} requests, timezone Europe/Berlin"
    );

    // Parse: each rule timed alone, five rounds, so the median is per rule.
    let rules: Vec<Rule> = (0..rules_n).map(rule).collect();
    let mut parse_samples = Vec::with_capacity(rules_n * 5);
    for _ in 0..5 {
        for rule in &rules {
            let start = Instant::now();
            let parsed = Condition::parse(black_box(&rule.condition)).expect("bench rule parses");
            parse_samples.push(start.elapsed());
            black_box(parsed);
        }
    }
    report("parse", "rule", parse_samples);

    let mut set = RuleSet::new("mattermost", timezone("Europe/Berlin").unwrap());
    let load = Instant::now();
    for rule in rules {
        set.upsert(rule).expect("bench rule is accepted");
    }
    println!(
        "load     {} rules into a RuleSet in {:.2} ms",
        set.len(),
        load.elapsed().as_secs_f64() * 1e3
    );

    let mut rng = StdRng::seed_from_u64(15);
    let mut facts_samples = Vec::with_capacity(requests_n);
    let mut requests = Vec::with_capacity(requests_n);
    for n in 0..requests_n {
        let base = request(&mut rng, n);
        let labels = resources(&mut rng);
        let team = format!("team-{}", rng.random_range(0..20));
        let level = format!("L{}", rng.random_range(0..3));
        let start = Instant::now();
        let facts = base
            .with_user_traits([("team", vec![team]), ("level", vec![level])])
            .with_resource_labels(labels.iter());
        facts_samples.push(start.elapsed());
        requests.push(facts);
    }
    report("facts", "request", facts_samples);

    let mut route_samples = Vec::with_capacity(requests_n);
    let (mut matched, mut routed, mut recipients) = (0usize, 0usize, 0usize);
    for facts in &requests {
        let start = Instant::now();
        let routing = set.route(black_box(facts));
        route_samples.push(start.elapsed());
        assert!(routing.errors.is_empty(), "{:?}", routing.errors);
        matched += routing.matched.len();
        recipients += routing.recipients.len();
        routed += usize::from(!routing.recipients.is_empty());
    }
    let total: Duration = route_samples.iter().sum();
    report("route", "request", route_samples);
    println!(
        "route    {:.1} ms for all requests; {routed} of {requests_n} routed by a rule, {:.1} rules matched and {:.1} recipients per request",
        total.as_secs_f64() * 1e3,
        matched as f64 / requests_n as f64,
        recipients as f64 / requests_n as f64,
    );
    assert!(matched > 0, "no rule matched: the bench measures nothing");
}
