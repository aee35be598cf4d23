//! Operator benchmarks against a real kube-apiserver and the doubles (`cargo bench --bench operator`):
//!
//! - scale: one operator process reconciling 1,000 `MattermostAccessPlugin` objects to Ready;
//!   its RSS (current and peak) and CPU time, from /proc;
//! - rotation: time from a Secret update to the new client certificate being used by the
//!   bridge (p50/p99 over 20 rotations).
//!
//! Needs the control-plane binaries from `tests/control-plane/build.sh`.
//! `BENCH_OBJECTS=200 cargo bench --bench operator` for a quicker look.

use std::net::SocketAddr;
use std::process::Child;
use std::time::{Duration, Instant};

use teleport_mattermost_testkit::cluster::{Env, NS, free_addr};

fn proc_field(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User + system CPU seconds of a process.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of /proc/pid/stat; index 11 and 12 after ")".
    (ticks(11) + ticks(12)) / 100.0
}

fn ready_count(env: &Env) -> usize {
    let out = env
        .cp
        .kubectl_run(
            &[
                "get",
                "mattermostaccessplugins",
                "-n",
                NS,
                "-o",
                r#"jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}"#,
            ],
            None,
        )
        .unwrap_or_default();
    out.lines().filter(|l| l.trim() == "True").count()
}

/// The release binary as its own process, so that its RSS and CPU time are the operator's
/// alone; returns it and its callback address.
fn spawn_operator(env: &Env) -> (Child, SocketAddr) {
    let callback = free_addr();
    let child = env
        .operator_command(
            env!("CARGO_BIN_EXE_teleport-mattermost"),
            callback,
            free_addr(),
        )
        .env("LOG_LEVEL", "error")
        .spawn()
        .expect("operator process");
    (child, callback)
}

async fn scale(objects: usize) {
    let env = Env::start().await;
    env.put_all_secrets(&env.pki.client("access-plugin-mattermost"))
        .await;
    let (mut child, callback) = spawn_operator(&env);
    let pid = child.id();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = proc_field(pid, "VmRSS:").unwrap_or(0);

    let start = Instant::now();
    let cpu_before = cpu_seconds(pid);
    for chunk in (0..objects).collect::<Vec<_>>().chunks(100) {
        let yaml: String = chunk
            .iter()
            .map(|i| format!("---\n{}", env.cr_yaml(&format!("team-{i:04}"), callback)))
            .collect();
        env.apply(&yaml).expect("apply objects");
    }
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut ready = 0;
    while Instant::now() < deadline {
        ready = ready_count(&env);
        if ready == objects {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let to_ready = start.elapsed();
    let cpu_to_ready = cpu_seconds(pid) - cpu_before;
    let watches = env.teleport.active_watches();
    // Steady state: everything connected and idle.
    let cpu_idle_start = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let cpu_idle = cpu_seconds(pid) - cpu_idle_start;
    let rss = proc_field(pid, "VmRSS:").unwrap_or(0);
    let peak = proc_field(pid, "VmHWM:").unwrap_or(0);
    println!(
        "scale       objects={objects} ready={ready} watches={watches} time_to_ready={:.1} s  cpu_to_ready={:.1} s  idle_cpu={:.2}%  rss_idle_before={:.1} MiB  rss={:.1} MiB  rss_peak={:.1} MiB",
        to_ready.as_secs_f64(),
        cpu_to_ready,
        cpu_idle / 30.0 * 100.0,
        idle_rss as f64 / 1024.0,
        rss as f64 / 1024.0,
        peak as f64 / 1024.0,
    );
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(ready, objects, "every object became Ready");
}

async fn rotation(rounds: usize) {
    let env = Env::start().await;
    let (mut child, callback) = spawn_operator(&env);
    env.put_all_secrets(&env.pki.client("access-plugin-mattermost"))
        .await;
    env.apply(&env.cr_yaml("platform", callback))
        .expect("apply");
    env.wait_condition("platform", "Ready", "True").await;
    let mut samples = Vec::new();
    for _ in 0..rounds {
        let next = env.pki.client("access-plugin-mattermost");
        let start = Instant::now();
        env.put_identity(&next).await;
        while env.teleport.last_client_serial() != Some(next.serial_hex.clone()) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "rotation not picked up"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        samples.push(start.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    samples.sort();
    let pick = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    println!(
        "rotation    n={rounds} p50={:.0} ms  p99={:.0} ms  max={:.0} ms",
        pick(0.5).as_secs_f64() * 1e3,
        pick(0.99).as_secs_f64() * 1e3,
        samples.last().unwrap().as_secs_f64() * 1e3,
    );
    let _ = child.kill();
    let _ = child.wait();
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let objects = std::env::var("BENCH_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        rotation(20).await;
        scale(objects).await;
    });
}
