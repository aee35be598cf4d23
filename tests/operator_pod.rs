//! The operator binary started exactly as the chart's Deployment starts it (its args, its env
//! with the fieldRefs filled in, its probes), authenticated with a token of the chart's own
//! ServiceAccount under the chart's own RBAC, against the real kube-apiserver (tier 3).
//!
//! These are the checks that would have caught a `/readyz` that never turns ready and a Lease
//! Role without `patch`: both passed every test that ran the parts with admin credentials.

use std::time::Duration;

use teleport_mattermost_testkit::cluster::{Env, NS, WAIT};
use teleport_mattermost_testkit::pod::{self, Container, PodProcess};
use teleport_mattermost_testkit::teleport::NewRequest;

const RELEASE: &str = "teleport-mattermost";
const RELEASE_NS: &str = "tm-system";
/// The chart's default probe period is 10 s; polling faster only finds the transitions sooner.
const POLL: Duration = Duration::from_millis(250);

fn request(reason: &str) -> NewRequest {
    NewRequest {
        reason: reason.into(),
        ..NewRequest::by("bob@example.com")
    }
}

/// Installs the chart's objects for NS (its CRD is installed by `Env`) and returns a
/// kubeconfig with a token of its ServiceAccount.
fn install_chart(env: &Env, sets: &[String]) -> std::path::PathBuf {
    env.cp
        .kubectl_run(&["create", "namespace", RELEASE_NS], None)
        .unwrap();
    let mut all = vec![
        "crds.install=false".to_string(),
        format!("watchNamespaces={{{NS}}}"),
    ];
    all.extend_from_slice(sets);
    let rendered = pod::render(&env.cp, RELEASE, RELEASE_NS, &all).unwrap();
    env.apply(&rendered).unwrap();
    pod::service_account_kubeconfig(&env.cp, RELEASE_NS, RELEASE).unwrap()
}

fn container_for(env: &Env, sets: &[String], pod_name: &str) -> Container {
    let mut all = vec![
        "crds.install=false".to_string(),
        format!("watchNamespaces={{{NS}}}"),
    ];
    all.extend_from_slice(sets);
    let (container, _) = pod::container(&env.cp, RELEASE, RELEASE_NS, &all, pod_name).unwrap();
    assert_eq!(container.service_account, RELEASE);
    assert_eq!(
        container.args,
        vec!["operator"],
        "the image's CMD, as the chart passes it"
    );
    container
}

fn spawn(container: &Container, kubeconfig: &std::path::Path, name: &str) -> PodProcess {
    let log = std::env::temp_dir().join(format!("tm-pod-{name}-{}.log", std::process::id()));
    PodProcess::spawn(
        std::path::Path::new(env!("CARGO_BIN_EXE_teleport-mattermost")),
        container,
        kubeconfig,
        &log,
    )
    .unwrap()
}

async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> F,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test]
async fn started_as_its_pod_it_turns_ready_only_when_serving_and_unready_on_sigterm() {
    let env = Env::start().await;
    let kubeconfig = install_chart(&env, &[]);
    let container = container_for(&env, &[], "teleport-mattermost-6d9f7-abcde");
    assert_eq!(
        container
            .env
            .iter()
            .find(|(k, _)| k == "POD_NAMESPACE")
            .map(|(_, v)| v.as_str()),
        Some(RELEASE_NS)
    );

    // The callback port is taken: the probe server answers, the replica is not ready, and says why.
    let squatter = std::net::TcpListener::bind(container.callback).unwrap();
    let mut operator = spawn(&container, &kubeconfig, "single");
    eventually("liveness never answered 200", WAIT, || async {
        matches!(operator.healthz().await, Some((200, _)))
    })
    .await;
    let start = tokio::time::Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        let answer = operator.readyz().await;
        let (status, body) = answer.clone().expect("the probe server answers");
        assert_eq!(
            status, 503,
            "ready while the callback port is taken: {answer:?}"
        );
        if body.contains("callback server not listening") {
            assert!(body.contains(&container.callback.to_string()), "{body}");
        }
        tokio::time::sleep(POLL).await;
    }
    let (_, why) = operator.readyz().await.unwrap();
    assert!(why.contains("callback server not listening"), "{why}");

    // Once the port is free it binds, and is ready within 30 s of its caches syncing.
    drop(squatter);
    let took = operator
        .wait_ready(POLL, Duration::from_secs(30))
        .await
        .unwrap();
    eprintln!("ready {took:?} after the callback port was freed");
    assert!(
        operator.log().contains("cache synced"),
        "{}",
        operator.log_tail(20)
    );

    // It does the job under the ServiceAccount's RBAC: Ready, posts, a press approves.
    env.put_all_secrets(&env.pki.client("access-plugin-mattermost"))
        .await;
    env.apply(&env.cr_yaml("platform", container.callback))
        .unwrap();
    env.wait_condition("platform", "Ready", "True").await;
    let first = env.teleport.create_request(request("first"));
    let post = env.recorded_post(&first).await;
    let pressed = env
        .mattermost
        .press(&post, "Approve", "alice")
        .await
        .unwrap();
    assert_eq!(pressed.status, 200, "{:?}", pressed.body);
    assert_eq!(
        env.teleport.state_changes()[0].delegator,
        "mattermost:alice@example.com"
    );
    let second = env.teleport.create_request(request("second"));
    let second_post = env.recorded_post(&second).await;
    let denied_log = operator.log();
    assert!(
        !denied_log.contains("forbidden"),
        "RBAC refused something:\n{denied_log}"
    );

    // SIGTERM: unready at once, yet presses still routed here during the drain are answered.
    operator.sigterm().unwrap();
    eventually(
        "still ready after SIGTERM",
        Duration::from_secs(1),
        || async {
            matches!(operator.readyz().await, Some((503, body)) if body.contains("shutting down"))
        },
    )
    .await;
    let pressed = env
        .mattermost
        .press(&second_post, "Deny", "alice")
        .await
        .unwrap();
    assert_eq!(
        pressed.status, 200,
        "a press during the drain: {:?}",
        pressed.body
    );
    assert_eq!(env.teleport.state_changes().len(), 2);
    let status = operator
        .wait_exit(container.termination_grace)
        .await
        .expect("exits within terminationGracePeriodSeconds");
    assert!(status.success(), "{status}: {}", operator.log_tail(20));
}

#[tokio::test]
async fn two_replicas_under_the_charts_rbac_lead_once_both_serve_and_fail_over() {
    let env = Env::start().await;
    let sets = vec!["replicas=2".to_string()];
    let kubeconfig = install_chart(&env, &sets);
    let names = [
        "teleport-mattermost-7c8d9-aaaaa",
        "teleport-mattermost-7c8d9-bbbbb",
    ];
    let containers: Vec<Container> = names
        .iter()
        .map(|n| container_for(&env, &sets, n))
        .collect();
    let lease = containers[0]
        .env
        .iter()
        .find(|(k, _)| k == "LEASE_NAME")
        .map(|(_, v)| v.clone())
        .unwrap();
    assert!(
        containers[0]
            .env
            .contains(&("LEADER_ELECTION".into(), "true".into())),
        "replicas=2 turns leader election on"
    );
    let mut replicas: Vec<PodProcess> = containers
        .iter()
        .zip(names)
        .map(|(c, n)| spawn(c, &kubeconfig, n))
        .collect();
    for r in &replicas {
        r.wait_ready(POLL, Duration::from_secs(30)).await.unwrap();
    }
    env.put_all_secrets(&env.pki.client("access-plugin-mattermost"))
        .await;
    env.apply(&env.cr_yaml("platform", containers[0].callback))
        .unwrap();
    env.wait_condition("platform", "Ready", "True").await;

    let holder = || {
        env.cp
            .kubectl_run(
                &[
                    "-n",
                    RELEASE_NS,
                    "get",
                    "lease",
                    &lease,
                    "-o",
                    "jsonpath={.spec.holderIdentity}",
                ],
                None,
            )
            .unwrap_or_default()
    };
    let mut leaders = Vec::new();
    for r in &replicas {
        leaders.push(r.metric("teleport_mattermost_leader").await);
    }
    assert_eq!(
        leaders.iter().filter(|l| **l == Some(1.0)).count(),
        1,
        "exactly one leader: {leaders:?}"
    );
    let leader = leaders.iter().position(|l| *l == Some(1.0)).unwrap();
    let follower = 1 - leader;
    assert_eq!(
        holder(),
        names[leader],
        "the Lease names the replica that says it leads"
    );
    assert_eq!(env.teleport.active_watches(), 1, "only the leader watches");
    for r in &replicas {
        let log = r.log();
        assert!(!log.contains("cannot patch"), "Lease RBAC:\n{log}");
        assert!(!log.contains("forbidden"), "RBAC refused something:\n{log}");
    }

    // Both serve callbacks: a request posted by the leader is approved through the follower.
    let first = env.teleport.create_request(request("first"));
    let post = env.recorded_post(&first).await;
    let pressed = env
        .mattermost
        .press_via(
            &post,
            "Approve",
            "alice",
            Some(&containers[follower].callback.to_string()),
        )
        .await
        .unwrap();
    assert_eq!(pressed.status, 200, "{:?}", pressed.body);
    assert!(
        pressed
            .ephemeral_text
            .as_deref()
            .unwrap_or_default()
            .contains("approved"),
        "{pressed:?}"
    );
    assert_eq!(env.teleport.state_changes().len(), 1);

    // SIGKILL the leader: no graceful release. The other takes over after the lease expires.
    let second = env.teleport.create_request(request("second"));
    env.wait_posted(&second).await;
    let mut dead = replicas.remove(leader);
    dead.sigkill();
    let survivor = &replicas[0];
    let third = env.teleport.create_request(request("third"));
    env.wait_posted(&third).await;
    assert_eq!(
        survivor.metric("teleport_mattermost_leader").await,
        Some(1.0)
    );
    assert_eq!(holder(), names[follower]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in [&first, &second, &third] {
        assert_eq!(
            env.posts_for(id),
            1,
            "{id} posted exactly once across the failover"
        );
    }
}
