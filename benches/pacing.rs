//! Posting at the rate the server allows, against the REAL Mattermost of tier 4
//! (`tests/mattermost/run-bench.sh` runs it at RateLimitSettings 10/s and 50/s, burst 100).
//!
//! A burst of N pending requests (1,000 by default, `BENCH_PACING_N`) is posted twice: by the
//! default client, which paces itself to the server's X-RateLimit headers under its ceiling,
//! and by a client with no limiter at all, which leans on the server's 429s. For each it
//! reports, from the posts' own `create_at` on the server:
//! - the steady post rate once the server's burst is spent, as a fraction of the allowed
//!   rate (target ≥ 95 %);
//! - the answers 429, and the rate the client learned;
//! - loss and duplicates, counted through the API (both must be zero).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use teleport_mattermost::settings::{RateLimit, RetryPolicy};
use teleport_mattermost_testkit::real_mattermost::{Api, env};
use teleport_mattermost_testkit::stack::{CHANNEL, MattermostTarget, Plugin, StackOptions, TEAM};
use teleport_mattermost_testkit::teleport::NewRequest;

struct Run {
    label: &'static str,
    steady_rate: f64,
    fraction: f64,
    took: Duration,
    rate_limited: u64,
    learned: Option<f64>,
}

async fn run(label: &'static str, rate_limit: RateLimit, n: usize, server: (f64, u32)) -> Run {
    let env = env().expect("TM_REAL_MATTERMOST_* (run tests/mattermost/run-bench.sh)");
    let api = Api::new(&env.url);
    let channel_id = api.channel_id(TEAM, CHANNEL, &env.admin_token).await;
    let plugin = Plugin::start(
        MattermostTarget {
            url: env.url.parse().expect("url"),
            token: env.bot_token.clone(),
        },
        &StackOptions {
            rate_limit,
            retry: RetryPolicy::default(),
            init_timeout: Duration::from_secs(5),
            ..Default::default()
        },
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while plugin.instance.status().borrow().mattermost.ok != Some(true) {
        assert!(Instant::now() < deadline, "the plugin never became healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the server's bucket fill up after the previous run and the health check.
    tokio::time::sleep(Duration::from_secs_f64(
        f64::from(server.1 + 1) / server.0 + 1.0,
    ))
    .await;

    let started = Instant::now();
    let ids: Vec<String> = (0..n)
        .map(|_| {
            plugin.teleport.create_request(NewRequest {
                user: "bob@example.com".into(),
                roles: vec!["dba".into()],
                reason: "pacing benchmark".into(),
                ..Default::default()
            })
        })
        .collect();
    let budget = Duration::from_secs_f64(n as f64 / server.0 * 3.0 + 120.0);
    loop {
        let posted = ids
            .iter()
            .filter(|id| plugin.data(id).message_in(&channel_id).is_some())
            .count();
        if posted == n {
            break;
        }
        assert!(
            started.elapsed() < budget,
            "{label}: only {posted} of {n} posted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed();

    // What Mattermost really holds: every request exactly once.
    let posts = api.channel_posts(&channel_id, &env.admin_token).await;
    let wanted: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut times: Vec<i64> = Vec::new();
    for p in &posts {
        let Some(id) = p["props"]["teleport_request_id"].as_str() else {
            continue;
        };
        if p["root_id"] == "" && wanted.contains(id) {
            *counts.entry(id.to_string()).or_default() += 1;
            times.push(p["create_at"].as_i64().unwrap_or_default());
        }
    }
    let lost = ids.iter().filter(|id| !counts.contains_key(*id)).count();
    let duplicated = counts.values().filter(|&&c| c > 1).count();
    assert_eq!((lost, duplicated), (0, 0), "{label}: lost, duplicated");

    // Once the server's burst (limit = burst + 1) is spent, posts can come at its rate.
    times.sort_unstable();
    let first = (server.1 as usize + 1).min(n - 2);
    let span_ms = (times[n - 1] - times[first]) as f64;
    let steady_rate = (n - 1 - first) as f64 / (span_ms / 1000.0);
    let stats = plugin.instance.mattermost().stats();
    Run {
        label,
        steady_rate,
        fraction: steady_rate / server.0,
        took,
        rate_limited: stats.rate_limited,
        learned: stats.learned_rate,
    }
}

fn server_limit() -> (f64, u32) {
    let text = std::env::var("TM_REAL_MATTERMOST_RATE_LIMIT").unwrap_or_default();
    let (rate, burst) = text.split_once('/').expect("PERSEC/MAXBURST");
    (rate.parse().expect("rate"), burst.parse().expect("burst"))
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    if env().is_none() {
        println!(
            "pacing bench skipped: needs the real Mattermost; run tests/mattermost/run-bench.sh"
        );
        return;
    }
    let n: usize = std::env::var("BENCH_PACING_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let server = server_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let runs = runtime.block_on(async {
        vec![
            run("paced (default ceiling)", RateLimit::default(), n, server).await,
            run(
                "no client limiter",
                RateLimit {
                    per_second: 0,
                    burst: 1,
                },
                n,
                server,
            )
            .await,
        ]
    });
    println!(
        "server RateLimitSettings {}/s, burst {}; {n} requests each, 0 lost, 0 duplicated",
        server.0, server.1
    );
    for r in &runs {
        println!(
            "{:<24} steady {:>6.2} posts/s = {:>5.1} % of allowed; all posted in {:>6.1} s; {:>5} answers 429; learned {}",
            r.label,
            r.steady_rate,
            r.fraction * 100.0,
            r.took.as_secs_f64(),
            r.rate_limited,
            r.learned
                .map(|l| format!("{l:.2}/s"))
                .unwrap_or_else(|| "-".into())
        );
    }
}
