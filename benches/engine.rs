//! Engine benchmarks over the doubles on loopback (`cargo bench --bench engine`):
//!
//! - burst: 10,000 pending requests created at once; time until every one is posted, with
//!   zero loss and zero duplicates asserted;
//! - event → post latency: one request at a time, from creation in the Teleport double to the
//!   post arriving at the Mattermost double (p50/p99);
//! - callback round trip: a button press from the Mattermost double through our callback
//!   server, Teleport and back (p50/p99);
//! - resync: with N requests already posted, the watch breaks; time until the reconnect's
//!   resync has handled them all, and the Teleport and Mattermost calls it made (it finds
//!   nothing new, so it should post nothing and cost little).
//!
//! Sizes can be lowered for a quick look: `BENCH_BURST=1000 BENCH_SAMPLES=100 cargo bench --bench engine`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use teleport_mattermost_testkit::stack::{Stack, StackOptions};
use teleport_mattermost_testkit::teleport::NewRequest;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn request() -> NewRequest {
    NewRequest {
        user: "bob@example.com".into(),
        roles: vec!["dba".into()],
        reason: "benchmark".into(),
        ..Default::default()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name:<28} n={:<6} p50={:>8.3} ms  p99={:>8.3} ms  max={:>8.3} ms",
        samples.len(),
        percentile(&samples, 0.50).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.last().unwrap().as_secs_f64() * 1e3,
    );
}

async fn burst(n: usize) {
    let stack = Stack::start(StackOptions {
        concurrency: 64,
        ..Default::default()
    })
    .await;
    stack.wait_connected().await;
    let mut created = stack.mattermost.subscribe_posts();
    let start = Instant::now();
    let ids: Vec<String> = (0..n)
        .map(|_| stack.teleport.create_request(request()))
        .collect();
    let created_in = start.elapsed();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(900);
    while seen.len() < n && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(30), created.recv()).await {
            Ok(Ok(event)) => {
                if let Some(id) = event
                    .post
                    .props
                    .get("teleport_request_id")
                    .and_then(|v| v.as_str())
                {
                    *seen.entry(id.to_string()).or_default() += 1;
                }
            }
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {
                panic!("benchmark receiver lagged; raise the channel capacity")
            }
            _ => break,
        }
    }
    let elapsed = start.elapsed();
    // Let stragglers (duplicates, if any) land, then count from the double's own records.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut per_request: HashMap<String, usize> = HashMap::new();
    for post in stack.mattermost.posts() {
        if let Some(id) = post
            .props
            .get("teleport_request_id")
            .and_then(|v| v.as_str())
        {
            *per_request.entry(id.to_string()).or_default() += 1;
        }
    }
    let lost = ids
        .iter()
        .filter(|id| !per_request.contains_key(*id))
        .count();
    let duplicated = per_request.values().filter(|&&c| c > 1).count();
    let recorded = ids
        .iter()
        .filter(|id| !stack.data(id).messages.is_empty())
        .count();
    println!(
        "burst                        n={n:<6} all posted in {:>8.2} s  ({:.0} posts/s; requests created in {:.2} s)  lost={lost} duplicated={duplicated} recorded={recorded}",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        created_in.as_secs_f64(),
    );
    assert_eq!(lost, 0, "every request posted");
    assert_eq!(duplicated, 0, "no request posted twice");
    assert_eq!(recorded, n, "every post recorded in plugin data");
}

async fn latency(samples: usize) {
    let stack = Stack::start(StackOptions::default()).await;
    stack.wait_connected().await;
    let mut created = stack.mattermost.subscribe_posts();
    let mut out = Vec::with_capacity(samples);
    for i in 0..samples + 20 {
        let start = Instant::now();
        let id = stack.teleport.create_request(request());
        let at = loop {
            let event = created.recv().await.expect("post stream");
            if event
                .post
                .props
                .get("teleport_request_id")
                .and_then(|v| v.as_str())
                == Some(&id)
            {
                break event.at;
            }
        };
        // The first few warm up connections and caches.
        if i >= 20 {
            out.push(at.duration_since(start));
        }
    }
    report("event -> post", out);
}

async fn callback(samples: usize) {
    let stack = Stack::start(StackOptions::default()).await;
    stack.wait_connected().await;
    let ids: Vec<String> = (0..samples + 20)
        .map(|_| stack.teleport.create_request(request()))
        .collect();
    let posted = Stack::eventually(Duration::from_secs(120), || {
        ids.iter().all(|id| !stack.data(id).messages.is_empty())
    })
    .await;
    assert!(posted, "requests posted before pressing");
    let mut out = Vec::with_capacity(samples);
    let conflicts_before = stack.teleport.compare_failures();
    for (i, id) in ids.iter().enumerate() {
        let post_id = stack.data(id).messages[0].post_id.clone();
        let start = Instant::now();
        let outcome = stack
            .mattermost
            .press(&post_id, "Approve", "alice")
            .await
            .expect("press");
        let took = start.elapsed();
        assert_eq!(outcome.status, 200);
        if i >= 20 {
            out.push(took);
        }
    }
    assert_eq!(
        stack.teleport.state_changes().len(),
        ids.len(),
        "every press resolved its request"
    );
    report("callback round trip", out);
    // A press's plugin-data writes race the engine's (the resolution edit it triggers): each
    // lost race is a CAS retry inside some press.
    println!(
        "  plugin-data write conflicts during the presses: {} ({:.2} per press)",
        stack.teleport.compare_failures() - conflicts_before,
        (stack.teleport.compare_failures() - conflicts_before) as f64 / ids.len() as f64
    );
}

async fn resync(n: usize) {
    use std::sync::atomic::Ordering;
    use teleport_mattermost_testkit::teleport::Rpc;
    let stack = Stack::start(StackOptions {
        concurrency: 64,
        ..Default::default()
    })
    .await;
    stack.wait_connected().await;
    let ids: Vec<String> = (0..n)
        .map(|_| stack.teleport.create_request(request()))
        .collect();
    let posted = Stack::eventually(Duration::from_secs(600), || {
        ids.iter().all(|id| !stack.data(id).messages.is_empty())
    })
    .await;
    assert!(posted, "all {n} posted before the resync");
    let done = || stack.instance.counters.jobs_done.load(Ordering::Relaxed);
    let before = done();
    let rpcs = |s: &Stack| {
        [
            Rpc::GetAccessRequests,
            Rpc::GetPluginData,
            Rpc::UpdatePluginData,
            Rpc::WatchEvents,
            Rpc::Ping,
        ]
        .map(|r| s.teleport.calls(r))
    };
    let teleport_before = rpcs(&stack);
    let mattermost_before = stack.mattermost.calls().len();
    let posts_before = stack.mattermost.posts().len();
    let start = Instant::now();
    stack.teleport.break_watches(tonic::Code::Unavailable);
    let finished =
        Stack::eventually(Duration::from_secs(600), || done() >= before + n as u64).await;
    let took = start.elapsed();
    assert!(finished, "the resync handled every request");
    let teleport_after = rpcs(&stack);
    let calls: Vec<u64> = teleport_after
        .iter()
        .zip(teleport_before)
        .map(|(a, b)| (*a - b) as u64)
        .collect();
    println!(
        "resync                       n={n:<6} {:>8.2} s ({:.0} requests/s)  Teleport calls: list={} get_plugin_data={} update_plugin_data={} watch={} ping={}  Mattermost calls={}  posts={}",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        calls[0],
        calls[1],
        calls[2],
        calls[3],
        calls[4],
        stack.mattermost.calls().len() - mattermost_before,
        stack.mattermost.posts().len() - posts_before,
    );
}

fn main() {
    // `cargo bench` passes `--bench`; there are no filters to honour.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let burst_size = env_usize("BENCH_BURST", 10_000);
    let samples = env_usize("BENCH_SAMPLES", 500);
    let resyncs: Vec<usize> = std::env::var("BENCH_RESYNC")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    runtime.block_on(async {
        latency(samples).await;
        callback(samples).await;
        burst(burst_size).await;
        for n in resyncs {
            resync(n).await;
        }
    });
}
