//! The node tier: the operator's IMAGE (tests/image/build.sh, the Dockerfile's final stage
//! without Docker) in PODS on a REAL NODE (tests/node/up.sh: kubelet, containerd + runc,
//! kube-proxy, a CNI bridge, the scheduler and the controllers), installed from a REGISTRY
//! with the chart by `helm install --wait`, the way a cluster runs it.
//!
//! Run it with `tests/node/run-tier.sh`: it builds this binary and the image, brings a node up
//! (with its registry, Debian's docker-registry, on the node's loopback) and runs this binary
//! inside the node's network namespace, where the Teleport and Mattermost doubles run too (the
//! pods reach them through the node's IP, see `testkit::node::forward`). Without the node's
//! environment (`TM_NODE_*`) and the image (`TM_IMAGE_TAR`) every test prints one line saying
//! why it was skipped and returns.
//!
//! One node and one release for the whole story, in order, each step timed: the image pushed to
//! the registry with skopeo and the chart with `helm push`, both signed with cosign (a tag
//! pointed at another image fails verification); `helm install oci://...` into a namespace
//! enforcing the "restricted" Pod Security Standard, containerd pulling the image; the
//! EndpointSlice, Secrets and a MattermostAccessPlugin applied with kubectl, a request posted
//! and approved by a press sent through the ClusterIP Service, identity rotation, a rollout
//! restart, a `helm upgrade` and a scale-up to two replicas with requests created throughout
//! and the callback Service answering every probe (rolling updates, a Lease even with one
//! replica), failover when the leader is deleted, a drain the PodDisruptionBudget stops
//! half-way, `helm test --logs`, `helm uninstall`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use teleport_mattermost::operator::crd::MattermostAccessPlugin;
use teleport_mattermost::request::RequestState;
use teleport_mattermost_testkit::control_plane::peer_binary;
use teleport_mattermost_testkit::dockerfile::Dockerfile;
use teleport_mattermost_testkit::mattermost::MattermostDouble;
use teleport_mattermost_testkit::node::{
    Forwarder, ImageArchive, Node, ProcessFacts, forward, metric_value, wait_for,
};
use teleport_mattermost_testkit::pki::{ClientCert, TestPki};
use teleport_mattermost_testkit::pod::chart_dir;
use teleport_mattermost_testkit::registry::{Cosign, Registry, verified_digests};
use teleport_mattermost_testkit::stack::{CHANNEL, TEAM, provision};
use teleport_mattermost_testkit::teleport::{NewRequest, TeleportDouble};

/// The operator's namespace: it enforces the "restricted" Pod Security Standard.
const NS: &str = "teleport-mattermost";
/// The user's namespace: Secrets and the MattermostAccessPlugin, as in the README.
const USER_NS: &str = "teleport";
/// Release name; the chart's full name is the same (it contains the chart name).
const RELEASE: &str = "teleport-mattermost";
/// The object.
const CR: &str = "platform";
/// The Lease's duration in the operator (src/operator/mod.rs), for the failover bound.
const LEASE_DURATION: Duration = Duration::from_secs(10);
/// Waits that should be short on a healthy node.
const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);
/// The image's repository in the node's registry (as on GHCR, under the registry's root).
const IMAGE_REPOSITORY: &str = "teleport-mattermost";
/// Where the chart is pushed in the node's registry (as `oci://ghcr.io/<owner>/charts`).
const CHART_REPOSITORY: &str = "charts";
/// The operator pods.
const SELECTOR: &str =
    "app.kubernetes.io/name=teleport-mattermost,app.kubernetes.io/instance=teleport-mattermost";

/// The operator image the tier runs, from `TM_IMAGE_TAR`.
fn image() -> Option<ImageArchive> {
    let path = PathBuf::from(std::env::var_os("TM_IMAGE_TAR")?);
    Some(ImageArchive::open(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display())))
}

#[test]
fn the_image_is_the_dockerfiles_final_stage() {
    let Some(image) = image() else {
        println!(
            "skipped: TM_IMAGE_TAR is not set; run tests/node/run-tier.sh (or TM_IMAGE_TAR=$(tests/image/build.sh) cargo test --test node_tier)"
        );
        return;
    };
    let dockerfile = Dockerfile::of_repo().unwrap();
    let mut want = dockerfile.final_config().unwrap();
    let copies = std::mem::take(&mut want.copies_from_build);
    want.exposed_ports.sort();
    assert_eq!(
        image.image_config(),
        want,
        "image config vs the Dockerfile's final stage"
    );

    // The files: the binary where the final stage's COPY puts it, its shared libraries, the CA
    // bundle and distroless's passwd/group/nsswitch.conf and /tmp. Nothing else: no shell.
    assert_eq!(copies.len(), 1, "{copies:?}");
    let binary = copies[0].1.trim_start_matches('/');
    assert_eq!(image.entries.get(binary), Some(&('-', 0o755)), "{binary}");
    let dir = tempfile::tempdir().unwrap();
    let extracted = image.extract(binary, dir.path()).unwrap();
    let ldd = std::process::Command::new("ldd")
        .arg(&extracted)
        .output()
        .unwrap();
    let mut libraries = BTreeSet::new();
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = match line.split_whitespace().collect::<Vec<_>>()[..] {
            [_, "=>", path, ..] if path.starts_with('/') => path.to_string(),
            [path, ..] if path.starts_with('/') => path.to_string(),
            _ => continue,
        };
        libraries.insert(path.trim_start_matches('/').to_string());
    }
    assert!(
        libraries.iter().any(|l| l.contains("libc.so")),
        "ldd of the image's binary: {ldd:?}"
    );
    for lib in &libraries {
        assert!(
            image.entries.contains_key(lib),
            "{lib} (ldd) is not in the image"
        );
    }
    let mut allowed: BTreeSet<String> = [
        binary,
        "etc",
        "etc/group",
        "etc/passwd",
        "etc/nsswitch.conf",
        "etc/ssl",
        "etc/ssl/certs",
        "etc/ssl/certs/ca-certificates.crt",
        "tmp",
    ]
    .into_iter()
    .map(str::to_string)
    .collect();
    for lib in &libraries {
        let mut parent = std::path::Path::new(lib).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            allowed.insert(p.to_string_lossy().into_owned());
            parent = p.parent();
        }
        allowed.insert(lib.clone());
    }
    let files: BTreeSet<String> = image.entries.keys().cloned().collect();
    let extra: Vec<&String> = files.difference(&allowed).collect();
    assert!(extra.is_empty(), "unexpected files in the image: {extra:?}");
    let missing: Vec<&String> = allowed.difference(&files).collect();
    assert!(missing.is_empty(), "missing from the image: {missing:?}");
    let passwd = image.extract("etc/passwd", dir.path()).unwrap();
    assert!(
        std::fs::read_to_string(passwd)
            .unwrap()
            .contains("nonroot:x:65532:65532:")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_chart_runs_the_image_on_a_real_node() {
    let Some(node) = Node::from_env() else {
        println!(
            "skipped: not inside a test node's namespace (TM_NODE_* unset); run tests/node/run-tier.sh"
        );
        return;
    };
    let Some(image) = image() else {
        println!("skipped: TM_IMAGE_TAR is not set; run tests/node/run-tier.sh");
        return;
    };
    let Some(registry) = Registry::from_env() else {
        println!(
            "skipped: TM_NODE_REGISTRY is not set (a node from an older up.sh); run tests/node/run-tier.sh"
        );
        return;
    };
    let started = Instant::now();
    let tier = Tier::start(node, image, registry)
        .await
        .expect("starting the doubles");
    let outcome = tier.run().await;
    tier.print_timings(started.elapsed());
    if let Err(e) = outcome {
        tier.diagnose().await;
        panic!("{e:#}");
    }
}

/// The doubles, the node and what happened so far.
struct Tier {
    node: Node,
    image: ImageArchive,
    /// The node's registry, which the image and the chart are pushed to and pulled from.
    registry: Registry,
    /// The tag the image is pushed under (the archive's own).
    tag: String,
    /// The chart's version (Chart.yaml), its tag in the registry.
    chart_version: String,
    pki: TestPki,
    teleport: TeleportDouble,
    mattermost: MattermostDouble,
    /// Node IP → the Teleport double.
    teleport_fwd: Forwarder,
    /// Node IP → the Mattermost double.
    mattermost_fwd: Forwarder,
    channel_id: String,
    client: kube::Client,
    /// Every request created, in order.
    ids: Mutex<Vec<String>>,
    timings: Mutex<Vec<(String, Duration)>>,
    /// The callback Service's ClusterIP, once installed.
    cluster_ip: Mutex<Option<String>>,
}

/// What happened while a rollout ran.
struct During {
    /// The command's output.
    out: String,
    /// Requests created meanwhile.
    made: usize,
    /// The longest time the callback Service answered nothing.
    longest_gap: Duration,
    /// Probes of the callback Service that got no answer.
    failed: usize,
}

impl During {
    fn report(&self, what: &str) {
        println!(
            "  {what}: {} requests created meanwhile; callback Service unanswered for {:.2} s at most ({} of its 100 ms probes failed)",
            self.made,
            self.longest_gap.as_secs_f64(),
            self.failed
        );
    }
}

fn request(reason: &str) -> NewRequest {
    NewRequest {
        reason: reason.into(),
        ..NewRequest::by("bob@example.com")
    }
}

fn items(list: &Value) -> Vec<Value> {
    list["items"].as_array().cloned().unwrap_or_default()
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn name_of(obj: &Value) -> String {
    obj["metadata"]["name"].as_str().unwrap_or_default().into()
}

/// The chart's `version:` from its Chart.yaml.
fn chart_version() -> anyhow::Result<String> {
    let text = std::fs::read_to_string(chart_dir().join("Chart.yaml"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("version:"))
        .map(|v| v.trim().trim_matches('"').to_string())
        .ok_or_else(|| anyhow::anyhow!("Chart.yaml has no version"))
}

impl Tier {
    async fn start(node: Node, image: ImageArchive, registry: Registry) -> anyhow::Result<Tier> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let pki = TestPki::new();
        let teleport = TeleportDouble::start(&pki).await;
        let mattermost = MattermostDouble::start().await;
        let channel_id = provision(&mattermost);
        let teleport_fwd = forward(node.ip, teleport.address().parse()?).await?;
        let mm_addr = mattermost.url();
        let mattermost_fwd = forward(
            node.ip,
            format!(
                "{}:{}",
                mm_addr.host_str().unwrap_or_default(),
                mm_addr.port().unwrap_or(80)
            )
            .parse()?,
        )
        .await?;
        let client = node.client().await?;
        let (_, tag) = image.repository_and_tag();
        Ok(Tier {
            node,
            image,
            registry,
            tag,
            chart_version: chart_version()?,
            pki,
            teleport,
            mattermost,
            teleport_fwd,
            mattermost_fwd,
            channel_id,
            client,
            ids: Mutex::default(),
            timings: Mutex::default(),
            cluster_ip: Mutex::default(),
        })
    }

    fn record(&self, what: &str, took: Duration) {
        println!("  {what}: {:.2} s", took.as_secs_f64());
        self.timings.lock().unwrap().push((what.into(), took));
    }

    fn print_timings(&self, total: Duration) {
        println!("\nnode tier timings (this test, inside the node's namespace):");
        for (what, took) in self.timings.lock().unwrap().iter() {
            println!("  {:<62} {:>7.2} s", what, took.as_secs_f64());
        }
        println!("  {:<62} {:>7.2} s", "total", total.as_secs_f64());
    }

    async fn run(&self) -> anyhow::Result<()> {
        self.publish().await?;
        self.install().await?;
        let cluster_ip = self.endpoint_slice().await?;
        *self.cluster_ip.lock().unwrap() = Some(cluster_ip.clone());
        self.plugin_ready(&cluster_ip).await?;
        self.post_and_approve(&cluster_ip).await?;
        self.rotate_identity().await?;
        self.restart_and_upgrade().await?;
        self.two_replicas().await?;
        self.failover().await?;
        self.drain().await?;
        self.helm_test().await?;
        self.uninstall().await?;
        Ok(())
    }

    /// The image in the node's registry, as the chart's `image.repository`.
    fn image_repository(&self) -> String {
        format!("{}/{IMAGE_REPOSITORY}", self.registry.addr)
    }

    /// The chart's `--set`s for this node: our image in the node's registry, with the chart's
    /// default pullPolicy (IfNotPresent), so containerd pulls it.
    fn image_sets(&self) -> Vec<String> {
        vec![
            "--set".into(),
            format!("image.repository={}", self.image_repository()),
            "--set".into(),
            format!("image.tag={}", self.tag),
        ]
    }

    /// The chart as a user names it: `oci://<registry>/charts/teleport-mattermost`, with its
    /// version and plain HTTP (the node's registry has no TLS).
    fn chart_args(&self) -> Vec<String> {
        vec![
            format!(
                "oci://{}/{CHART_REPOSITORY}/teleport-mattermost",
                self.registry.addr
            ),
            "--version".into(),
            self.chart_version.clone(),
            "--plain-http".into(),
        ]
    }

    /// `helm upgrade --reuse-values --wait` of the chart in the registry, with `--set`s.
    fn upgrade_args(&self, sets: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = vec!["upgrade".into(), RELEASE.into()];
        args.extend(self.chart_args());
        for a in [
            "--namespace",
            NS,
            "--reuse-values",
            "--wait",
            "--timeout",
            "2m",
        ] {
            args.push(a.into());
        }
        for set in sets {
            args.extend(["--set".to_string(), set.to_string()]);
        }
        args
    }

    /// The Deployment's `spec.strategy.type`.
    async fn strategy(&self) -> anyhow::Result<String> {
        let d = self
            .node
            .get_json(&["deployment", "-n", NS, RELEASE])
            .await?;
        Ok(d["spec"]["strategy"]["type"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    async fn helm(&self, args: &[String]) -> anyhow::Result<String> {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.node.helm(&args).await
    }

    /// The operator pods that are not being deleted.
    async fn pods(&self) -> anyhow::Result<Vec<Value>> {
        let list = self
            .node
            .get_json(&["pods", "-n", NS, "-l", SELECTOR])
            .await?;
        Ok(items(&list)
            .into_iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect())
    }

    async fn ready_pods(&self) -> anyhow::Result<Vec<Value>> {
        Ok(self.pods().await?.into_iter().filter(is_ready).collect())
    }

    /// Waits until exactly `n` operator pods exist and all are Ready; returns them.
    async fn wait_ready_pods(&self, n: usize) -> anyhow::Result<Vec<Value>> {
        wait_for(
            &format!("{n} Ready operator pod(s)"),
            WAIT,
            POLL,
            || async {
                let pods = self.pods().await.ok()?;
                (pods.len() == n && pods.iter().all(is_ready)).then_some(pods)
            },
        )
        .await
    }

    fn create(&self, reason: &str) -> String {
        let id = self.teleport.create_request(request(reason));
        self.ids.lock().unwrap().push(id.clone());
        id
    }

    /// Root posts of request `id` in the channel.
    fn posts_for(&self, id: &str) -> Vec<teleport_mattermost_testkit::mattermost::Post> {
        self.mattermost
            .posts_in(&self.channel_id)
            .into_iter()
            .filter(|p| {
                p.root_id.is_empty()
                    && p.props.get("teleport_request_id").and_then(Value::as_str) == Some(id)
            })
            .collect()
    }

    async fn wait_posted(&self, id: &str) -> anyhow::Result<String> {
        wait_for(
            &format!("request {id} posted"),
            WAIT,
            Duration::from_millis(20),
            || async { self.posts_for(id).first().map(|p| p.id.clone()) },
        )
        .await
    }

    /// Every request created so far is posted, each exactly once, and nothing else is.
    async fn all_posted_once(&self, context: &str) -> anyhow::Result<()> {
        let ids = self.ids.lock().unwrap().clone();
        for id in &ids {
            self.wait_posted(id).await?;
        }
        // Give a duplicate the time to appear (a second replica, a retried post).
        tokio::time::sleep(Duration::from_secs(1)).await;
        for id in &ids {
            let n = self.posts_for(id).len();
            anyhow::ensure!(n == 1, "{context}: request {id} posted {n} times");
        }
        let roots = self
            .mattermost
            .posts_in(&self.channel_id)
            .into_iter()
            .filter(|p| p.root_id.is_empty())
            .count();
        anyhow::ensure!(
            roots == ids.len(),
            "{context}: {roots} root posts for {} requests",
            ids.len()
        );
        println!(
            "  {context}: {} requests so far, each posted exactly once",
            ids.len()
        );
        Ok(())
    }

    /// Runs `fut` while creating a request every 400 ms and asking the callback Service
    /// (ClusterIP, port 80) for an answer every 100 ms: any HTTP answer means a pod takes
    /// button presses, a refused or timed-out connection means none does.
    async fn during<F>(&self, what: &str, fut: F) -> anyhow::Result<During>
    where
        F: std::future::Future<Output = anyhow::Result<String>>,
    {
        let url = format!(
            "http://{}/",
            self.cluster_ip.lock().unwrap().clone().unwrap_or_default()
        );
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(500))
            .build()?;
        tokio::pin!(fut);
        let mut made = 0;
        let mut next_request = tokio::time::Instant::now() + Duration::from_millis(400);
        let (mut down_since, mut longest_gap, mut failed) = (None::<Instant>, Duration::ZERO, 0);
        loop {
            tokio::select! {
                out = &mut fut => {
                    if let Some(since) = down_since {
                        longest_gap = longest_gap.max(since.elapsed());
                    }
                    return Ok(During { out: out?, made, longest_gap, failed });
                }
                _ = tokio::time::sleep_until(next_request) => {
                    self.create(&format!("during {what} #{made}"));
                    made += 1;
                    next_request += Duration::from_millis(400);
                }
                answer = async {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    http.get(&url).send().await
                } => {
                    match (answer.is_ok(), down_since) {
                        (true, Some(since)) => {
                            longest_gap = longest_gap.max(since.elapsed());
                            down_since = None;
                        }
                        (false, None) => {
                            failed += 1;
                            down_since = Some(Instant::now());
                        }
                        (false, Some(_)) => failed += 1,
                        (true, None) => {}
                    }
                }
            }
        }
    }

    // ---------------------------------------------------------------------------------------

    /// What the release does, against the node's registry: the image pushed (skopeo) and the
    /// chart pushed (`helm push`), each signed with cosign; `cosign verify` passes for both,
    /// and fails once the image's tag points at another image, or with another key.
    async fn publish(&self) -> anyhow::Result<()> {
        println!(
            "publish to the node's registry {}: image and chart pushed, signed, verified",
            self.registry.addr
        );
        let held = self.node.images().await?;
        anyhow::ensure!(
            !held.iter().any(|i| i.contains(IMAGE_REPOSITORY)),
            "containerd already holds the operator image, so nothing would be pulled: {held:?}"
        );
        let image_ref = self.registry.reference(IMAGE_REPOSITORY, &self.tag);

        let t = Instant::now();
        let digest = self
            .registry
            .push_archive(&self.image.path, IMAGE_REPOSITORY, &self.tag)
            .await?;
        self.record("skopeo copy: the image pushed to the registry", t.elapsed());
        anyhow::ensure!(
            digest == self.image.manifest_digest,
            "the registry stored {digest}, the archive's manifest is {}",
            self.image.manifest_digest
        );
        println!("  pushed {image_ref} ({digest})");

        let t = Instant::now();
        let cosign = Cosign::with_new_key(peer_binary("cosign")?).await?;
        cosign
            .sign(&self.registry.by_digest(IMAGE_REPOSITORY, &digest))
            .await?;
        let verified = cosign.verify(&image_ref).await;
        self.record("cosign sign (by digest) + verify (by tag)", t.elapsed());
        anyhow::ensure!(
            verified.success && verified_digests(&verified.stdout) == [digest.clone()],
            "cosign verify {image_ref}: {}{}",
            verified.stdout,
            verified.stderr
        );
        println!("  cosign verify {image_ref}: the signature covers {digest}");

        // Another key (someone else's signature) does not verify it.
        let stranger = Cosign::with_new_key(peer_binary("cosign")?).await?;
        let foreign = stranger.verify(&image_ref).await;
        anyhow::ensure!(
            !foreign.success,
            "verified with a key that never signed it: {}",
            foreign.stdout
        );

        // Tampering: another image pushed under the same tag.
        let other = PathBuf::from(std::env::var_os("TM_OTHER_IMAGE_TAR").ok_or_else(|| {
            anyhow::anyhow!("TM_OTHER_IMAGE_TAR is not set (run-tier.sh sets it)")
        })?);
        let other_digest = self
            .registry
            .push_archive(&other, IMAGE_REPOSITORY, &self.tag)
            .await?;
        anyhow::ensure!(
            other_digest != digest,
            "the other image has the same digest"
        );
        anyhow::ensure!(
            self.registry.resolve(IMAGE_REPOSITORY, &self.tag).await? == other_digest,
            "the tag does not point at the other image"
        );
        let tampered = cosign.verify(&image_ref).await;
        anyhow::ensure!(
            !tampered.success && tampered.stderr.contains("no signatures found"),
            "cosign verify of a tag pointed at another image: {}{}",
            tampered.stdout,
            tampered.stderr
        );
        println!(
            "  the tag pointed at another image ({other_digest}): cosign verify fails ({})",
            tampered.stderr.lines().last().unwrap_or_default().trim()
        );
        // Put the real image back (same digest, so its signature applies again).
        let restored = self
            .registry
            .push_archive(&self.image.path, IMAGE_REPOSITORY, &self.tag)
            .await?;
        anyhow::ensure!(
            restored == digest,
            "restored {restored}, pushed {digest} first"
        );
        let again = cosign.verify(&image_ref).await;
        anyhow::ensure!(again.success, "after restoring the tag: {}", again.stderr);

        // The chart: packaged and pushed as an OCI artifact, as the release workflow does.
        let dist = tempfile::tempdir()?;
        let dist_path = dist.path().to_string_lossy().into_owned();
        let chart = chart_dir().to_string_lossy().into_owned();
        self.node
            .helm(&["package", &chart, "--destination", &dist_path])
            .await?;
        let tgz = dist
            .path()
            .join(format!("teleport-mattermost-{}.tgz", self.chart_version));
        let t = Instant::now();
        let pushed = self
            .node
            .helm_output(&[
                "push",
                &tgz.to_string_lossy(),
                &format!("oci://{}/{CHART_REPOSITORY}", self.registry.addr),
                "--plain-http",
            ])
            .await;
        self.record("helm push: the chart pushed to the registry", t.elapsed());
        let said = format!("{}{}", pushed.stdout, pushed.stderr);
        anyhow::ensure!(pushed.success, "helm push: {said}");
        let chart_digest = said
            .lines()
            .find_map(|l| l.strip_prefix("Digest: "))
            .map(|d| d.trim().to_string())
            .ok_or_else(|| anyhow::anyhow!("helm push printed no digest: {said}"))?;
        let chart_repo = format!("{CHART_REPOSITORY}/teleport-mattermost");
        let chart_ref = self.registry.reference(&chart_repo, &self.chart_version);
        cosign
            .sign(&self.registry.by_digest(&chart_repo, &chart_digest))
            .await?;
        let verified = cosign.verify(&chart_ref).await;
        anyhow::ensure!(
            verified.success && verified_digests(&verified.stdout) == [chart_digest.clone()],
            "cosign verify {chart_ref}: {}{}",
            verified.stdout,
            verified.stderr
        );
        println!(
            "  pushed and signed the chart {chart_ref} ({chart_digest}); cosign verify passes"
        );
        Ok(())
    }

    async fn install(&self) -> anyhow::Result<()> {
        println!("helm install into a namespace enforcing the restricted Pod Security Standard");
        let k = &self.node;
        k.kubectl(&["create", "namespace", NS], None).await?;
        k.kubectl(
            &[
                "label",
                "namespace",
                NS,
                "pod-security.kubernetes.io/enforce=restricted",
                "pod-security.kubernetes.io/enforce-version=latest",
                "pod-security.kubernetes.io/warn=restricted",
            ],
            None,
        )
        .await?;
        k.kubectl(&["create", "namespace", USER_NS], None).await?;

        let mut args: Vec<String> = ["install", RELEASE].iter().map(|s| s.to_string()).collect();
        args.extend(self.chart_args());
        args.extend(
            ["--namespace", NS, "--wait", "--timeout", "2m"]
                .iter()
                .map(|s| s.to_string()),
        );
        args.extend(self.image_sets());
        let t = Instant::now();
        let out = self.helm(&args).await?;
        self.record(
            "helm install oci://... --wait (1 replica, image pulled)",
            t.elapsed(),
        );
        anyhow::ensure!(out.contains("STATUS: deployed"), "helm install: {out}");

        let pods = self.ready_pods().await?;
        anyhow::ensure!(pods.len() == 1, "{} Ready pods after install", pods.len());
        let pod = &pods[0];
        anyhow::ensure!(pod["status"]["phase"] == "Running", "{}", pod["status"]);
        let status = &pod["status"]["containerStatuses"][0];
        anyhow::ensure!(
            status["ready"] == true && status["restartCount"] == 0,
            "{status}"
        );
        let container = &pod["spec"]["containers"][0];
        anyhow::ensure!(
            container["image"] == format!("{}:{}", self.image_repository(), self.tag)
                && container["imagePullPolicy"] == "IfNotPresent",
            "the pod runs {} with imagePullPolicy {}",
            container["image"],
            container["imagePullPolicy"]
        );
        // containerd pulled it: the image the container runs is the pushed manifest, fetched
        // from the registry by containerd itself.
        let pulled = self
            .registry
            .by_digest(IMAGE_REPOSITORY, &self.image.manifest_digest);
        anyhow::ensure!(
            status["imageID"] == pulled.as_str(),
            "the container's imageID is {}, not {pulled}",
            status["imageID"]
        );
        let registry_log =
            std::fs::read_to_string(self.node.state.join("logs/registry.log")).unwrap_or_default();
        let by_containerd: Vec<&str> = registry_log
            .lines()
            .filter(|l| {
                (l.contains("useragent=containerd/") || l.contains("useragent=\"containerd/"))
                    && l.contains(&format!("/v2/{IMAGE_REPOSITORY}/"))
            })
            .collect();
        anyhow::ensure!(
            by_containerd.iter().any(|l| l.contains("/manifests/"))
                && by_containerd
                    .iter()
                    .any(|l| l.contains("/blobs/") && l.contains("method=GET")),
            "the registry's log shows no manifest and blob requests by containerd:\n{}",
            self.node.log_tail("registry", 20)
        );
        let events = self
            .node
            .kubectl(
                &[
                    "get",
                    "events",
                    "-n",
                    NS,
                    "--field-selector",
                    &format!("involvedObject.name={},reason=Pulled", name_of(pod)),
                    "-o",
                    "jsonpath={.items[*].message}",
                ],
                None,
            )
            .await?;
        anyhow::ensure!(
            events.contains("Successfully pulled image"),
            "the kubelet's Pulled event: {events:?}"
        );
        println!(
            "  containerd pulled {pulled} ({} GETs from containerd in the registry's log); {}",
            by_containerd.len(),
            events.trim()
        );
        // Ready: from the pod's creation, as the API recorded it (seconds).
        let created = pod["metadata"]["creationTimestamp"].as_str().unwrap_or("?");
        let ready_at = pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Ready")
            .and_then(|c| c["lastTransitionTime"].as_str())
            .unwrap_or("?");
        println!("  pod {} created {created}, Ready {ready_at}", name_of(pod));

        // What the kernel says about the container's process.
        let pid = self
            .node
            .container_pid(status["containerID"].as_str().unwrap_or_default())?;
        let facts = ProcessFacts::of(pid)?;
        println!("  the container's process: {facts:?}");
        anyhow::ensure!(
            facts.cmdline == ["/teleport-mattermost", "operator"],
            "argv {:?}",
            facts.cmdline
        );
        anyhow::ensure!(
            facts.uids.iter().all(|u| *u == 65532),
            "UIDs {:?}",
            facts.uids
        );
        anyhow::ensure!(
            facts.gids.iter().all(|g| *g == 65532),
            "GIDs {:?}",
            facts.gids
        );
        anyhow::ensure!(
            facts.root_read_only(),
            "/ is mounted {}",
            facts.root_mount_options
        );
        anyhow::ensure!(
            facts.cap_eff.trim_start_matches('0').is_empty(),
            "CapEff {}",
            facts.cap_eff
        );
        anyhow::ensure!(
            facts.no_new_privs,
            "NoNewPrivs is off (allowPrivilegeEscalation)"
        );
        anyhow::ensure!(
            facts.seccomp == 2,
            "Seccomp mode {} (RuntimeDefault is a filter, 2)",
            facts.seccomp
        );
        let sc = &pod["spec"]["containers"][0]["securityContext"];
        anyhow::ensure!(
            sc["readOnlyRootFilesystem"] == true && sc["runAsUser"] == 65532,
            "{sc}"
        );
        // One replica elects too: the Lease is the pod's.
        let holder = wait_for("the pod holds the Lease", WAIT, POLL, || async {
            self.lease_holder().await
        })
        .await?;
        anyhow::ensure!(
            holder == name_of(pod),
            "Lease held by {holder}, not {}",
            name_of(pod)
        );
        Ok(())
    }

    /// The callback Service's EndpointSlice lists the pod, ready; returns the ClusterIP.
    async fn endpoint_slice(&self) -> anyhow::Result<String> {
        println!("the Service's EndpointSlice and the ClusterIP through kube-proxy");
        let pod = &self.ready_pods().await?[0];
        let pod_ip = pod["status"]["podIP"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let label = format!("kubernetes.io/service-name={RELEASE}");
        let slices = wait_for(
            "the EndpointSlice lists the pod ready",
            WAIT,
            POLL,
            || async {
                let list = self
                    .node
                    .get_json(&["endpointslices", "-n", NS, "-l", &label])
                    .await
                    .ok()?;
                let slices = items(&list);
                let ready = slices.iter().any(|s| {
                    s["endpoints"].as_array().into_iter().flatten().any(|e| {
                        e["addresses"][0] == pod_ip.as_str() && e["conditions"]["ready"] == true
                    })
                });
                ready.then_some(slices)
            },
        )
        .await?;
        let ports: BTreeMap<String, u64> = slices[0]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                (
                    p["name"].as_str().unwrap_or_default().to_string(),
                    p["port"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        anyhow::ensure!(
            ports == BTreeMap::from([("callback".into(), 8080), ("metrics".into(), 9090)]),
            "EndpointSlice ports {ports:?}"
        );
        let svc = self.node.get_json(&["service", "-n", NS, RELEASE]).await?;
        let cluster_ip = svc["spec"]["clusterIP"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        println!("  pod {pod_ip} ready in the EndpointSlice; ClusterIP {cluster_ip}");
        // /readyz through the Service's metrics port, via kube-proxy's rules.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let url = format!("http://{cluster_ip}:9090/readyz");
        let body = wait_for(&format!("GET {url}"), WAIT, POLL, || async {
            let r = http.get(&url).send().await.ok()?;
            if r.status() == 200 {
                r.text().await.ok()
            } else {
                None
            }
        })
        .await?;
        println!("  GET {url}: 200 {}", body.trim());
        Ok(cluster_ip)
    }

    fn cr_yaml(&self, cluster_ip: &str) -> String {
        format!(
            r#"apiVersion: accessplugins.dev/v1alpha1
kind: MattermostAccessPlugin
metadata:
  name: {CR}
  namespace: {USER_NS}
spec:
  teleport:
    address: {teleport}
    identitySecretRef:
      name: mm-teleport-identity
  mattermost:
    url: http://{mattermost}
    team: {TEAM}
    channel: {CHANNEL}
    tokenSecretRef:
      name: mm-bot-token
  callback:
    signingSecretRef:
      name: mm-callback-signing
    publicURL: http://{cluster_ip}
    allowInsecureHTTP: true
  approvers: [alice]
"#,
            teleport = self.teleport_fwd.addr,
            mattermost = self.mattermost_fwd.addr,
        )
    }

    /// The identity Secret as the README makes it: `kubectl create secret generic
    /// --from-file=...`, through `--dry-run=client -o yaml | kubectl apply -f -` (which also
    /// replaces it, the documented rotation).
    async fn apply_identity(&self, cert: &ClientCert) -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut args = vec![
            "create".to_string(),
            "secret".into(),
            "generic".into(),
            "mm-teleport-identity".into(),
            "-n".into(),
            USER_NS.into(),
        ];
        for (name, pem) in [
            ("auth.crt", &cert.cert_pem),
            ("auth.key", &cert.key_pem),
            ("auth.cas", &cert.cas_pem),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, pem)?;
            args.push(format!("--from-file={name}={}", path.display()));
        }
        args.extend(["--dry-run=client", "-o", "yaml"].map(String::from));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let yaml = self.node.kubectl(&args, None).await?;
        self.node
            .kubectl(&["apply", "-f", "-"], Some(&yaml))
            .await?;
        Ok(())
    }

    fn crs(&self) -> kube::Api<MattermostAccessPlugin> {
        kube::Api::namespaced(self.client.clone(), USER_NS)
    }

    async fn plugin_ready(&self, cluster_ip: &str) -> anyhow::Result<()> {
        println!("Secrets and a MattermostAccessPlugin applied with kubectl");
        let cert = self.pki.client("access-plugin-mattermost");
        self.apply_identity(&cert).await?;
        let token = format!("--from-literal=token={}", self.mattermost.bot_token());
        self.node
            .kubectl(
                &[
                    "-n",
                    USER_NS,
                    "create",
                    "secret",
                    "generic",
                    "mm-bot-token",
                    &token,
                ],
                None,
            )
            .await?;
        self.node
            .kubectl(
                &[
                    "-n",
                    USER_NS,
                    "create",
                    "secret",
                    "generic",
                    "mm-callback-signing",
                    "--from-literal=signingSecret=6f1c2a9e0b7d4c3f8a5e2d1b9c0f7a6e",
                ],
                None,
            )
            .await?;
        let t = Instant::now();
        self.node
            .kubectl(&["apply", "-f", "-"], Some(&self.cr_yaml(cluster_ip)))
            .await?;
        let cr = wait_for("the MattermostAccessPlugin Ready", WAIT, POLL, || async {
            let cr = self.crs().get_opt(CR).await.ok()??;
            let ready = cr.status.as_ref()?.condition("Ready")?.status == "True";
            ready.then_some(cr)
        })
        .await?;
        self.record("kubectl apply of the CR -> Ready=True", t.elapsed());
        let status = cr.status.as_ref().expect("status");
        for c in [
            "TeleportConnected",
            "MattermostReachable",
            "IdentityValid",
            "CallbackReady",
        ] {
            let cond = status.condition(c);
            anyhow::ensure!(cond.is_some_and(|c| c.status == "True"), "{c}: {cond:?}");
        }
        anyhow::ensure!(
            status.teleport_cluster_name.as_deref() == Some("test-cluster"),
            "{status:?}"
        );
        anyhow::ensure!(
            self.teleport.last_client_serial().as_deref() == Some(cert.serial_hex.as_str()),
            "the pod did not call Teleport with the Secret's certificate"
        );
        anyhow::ensure!(
            self.teleport.wait_for_watches(1, WAIT).await,
            "no watch on the Teleport double"
        );
        println!(
            "  pod -> node IP forwarders: Teleport {} ({} connections), Mattermost {} ({} connections)",
            self.teleport_fwd.addr,
            self.teleport_fwd.connections(),
            self.mattermost_fwd.addr,
            self.mattermost_fwd.connections()
        );
        Ok(())
    }

    async fn post_and_approve(&self, cluster_ip: &str) -> anyhow::Result<()> {
        println!("a request posted, a refused press and an approval through the ClusterIP Service");
        let t = Instant::now();
        let id = self.create("first");
        let post = self.wait_posted(&id).await?;
        self.record(
            "request created -> posted (pod -> node IP -> double)",
            t.elapsed(),
        );
        let service = format!("{cluster_ip}:80");

        // carol is not an approver.
        let refused = self
            .mattermost
            .press_via(&post, "Deny", "carol", Some(&service))
            .await?;
        anyhow::ensure!(
            refused.status == 200
                && refused
                    .ephemeral_text
                    .as_deref()
                    .is_some_and(|t| t.contains("not allowed")),
            "carol's press: {refused:?}"
        );
        anyhow::ensure!(
            self.teleport.state_changes().is_empty(),
            "carol changed a request"
        );

        let t = Instant::now();
        let outcome = self
            .mattermost
            .press_via(&post, "Approve", "alice", Some(&service))
            .await?;
        self.record("Approve pressed via the ClusterIP -> answered", t.elapsed());
        anyhow::ensure!(outcome.status == 200, "press: {outcome:?}");
        let change = wait_for("the approval recorded by Teleport", WAIT, POLL, || async {
            self.teleport
                .state_changes()
                .into_iter()
                .find(|c| c.id == id)
        })
        .await?;
        anyhow::ensure!(
            change.state == RequestState::Approved
                && change.delegator == "mattermost:alice@example.com",
            "{change:?}"
        );
        let edited = self.mattermost.post(&post).expect("the post");
        anyhow::ensure!(edited.message.contains("APPROVED"), "{}", edited.message);
        println!("  approved, delegator {}", change.delegator);
        Ok(())
    }

    async fn rotate_identity(&self) -> anyhow::Result<()> {
        println!("identity rotation: the Secret updated, the running pod switches");
        let before = self.pods().await?;
        let cert = self.pki.client("access-plugin-mattermost");
        self.apply_identity(&cert).await?;
        let t = Instant::now();
        wait_for(
            "the new certificate used",
            Duration::from_secs(5),
            Duration::from_millis(20),
            || async {
                (self.teleport.last_client_serial().as_deref() == Some(cert.serial_hex.as_str()))
                    .then_some(())
            },
        )
        .await?;
        self.record(
            "Secret applied -> the pod calls with the new certificate",
            t.elapsed(),
        );
        let id = self.create("after rotation");
        self.wait_posted(&id).await?;
        let after = self.pods().await?;
        anyhow::ensure!(
            before.iter().map(name_of).eq(after.iter().map(name_of))
                && after[0]["status"]["containerStatuses"][0]["restartCount"] == 0,
            "the rotation restarted something"
        );
        println!("  serials seen: {:?}", self.teleport.client_serials());
        self.all_posted_once("after the rotation").await
    }

    async fn restart_and_upgrade(&self) -> anyhow::Result<()> {
        println!("rollout restart and helm upgrade, with requests before, during and after");
        for i in 0..3 {
            self.create(&format!("before restart #{i}"));
        }
        self.all_posted_once("before the restart").await?;
        let old = name_of(&self.ready_pods().await?[0]);

        let t = Instant::now();
        self.node
            .kubectl(
                &[
                    "-n",
                    NS,
                    "rollout",
                    "restart",
                    &format!("deployment/{RELEASE}"),
                ],
                None,
            )
            .await?;
        let deployment = format!("deployment/{RELEASE}");
        let status_args = ["-n", NS, "rollout", "status", &deployment, "--timeout=2m"];
        let status = self.node.kubectl(&status_args, None);
        let during = self.during("rollout restart", status).await?;
        self.record(
            "kubectl rollout restart -> rollout status done",
            t.elapsed(),
        );
        during.report("rollout restart (RollingUpdate, 1 replica)");
        anyhow::ensure!(
            during.failed == 0,
            "the callback Service went unanswered during a rollout restart"
        );
        let new = self.wait_ready_pods(1).await?;
        anyhow::ensure!(name_of(&new[0]) != old, "the pod was not replaced");
        self.all_posted_once("after the restart").await?;

        // One replica elects too, so the new pod starts beside the old one.
        let strategy = self.strategy().await?;
        anyhow::ensure!(
            strategy == "RollingUpdate",
            "strategy {strategy} at 1 replica"
        );
        let args = self.upgrade_args(&["log.level=debug"]);
        let t = Instant::now();
        let during = self.during("helm upgrade", self.helm(&args)).await?;
        self.record("helm upgrade --wait (log.level=debug)", t.elapsed());
        anyhow::ensure!(during.out.contains("STATUS: deployed"), "{}", during.out);
        during.report("helm upgrade (RollingUpdate, 1 replica)");
        anyhow::ensure!(
            during.failed == 0,
            "the callback Service went unanswered during a helm upgrade"
        );
        let pods = self.wait_ready_pods(1).await?;
        let env = &pods[0]["spec"]["containers"][0]["env"];
        anyhow::ensure!(
            env.as_array()
                .into_iter()
                .flatten()
                .any(|e| e["name"] == "LOG_LEVEL" && e["value"] == "debug"),
            "the upgrade did not reach the pod: {env}"
        );
        for i in 0..3 {
            self.create(&format!("after upgrade #{i}"));
        }
        self.all_posted_once("after the upgrade").await
    }

    /// The Lease's holder, when it exists and is held.
    async fn lease_holder(&self) -> Option<String> {
        let lease = self
            .node
            .get_json(&["lease", "-n", NS, RELEASE])
            .await
            .ok()?;
        lease["spec"]["holderIdentity"]
            .as_str()
            .filter(|h| !h.is_empty())
            .map(str::to_string)
    }

    /// `teleport_mattermost_leader` of each Ready pod, scraped at its pod IP.
    async fn leader_gauges(&self) -> anyhow::Result<BTreeMap<String, f64>> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let mut out = BTreeMap::new();
        for pod in self.ready_pods().await? {
            let ip = pod["status"]["podIP"].as_str().unwrap_or_default();
            let text = http
                .get(format!("http://{ip}:9090/metrics"))
                .send()
                .await?
                .text()
                .await?;
            let value = metric_value(&text, "teleport_mattermost_leader", &[]).unwrap_or(-1.0);
            out.insert(name_of(&pod), value);
        }
        Ok(out)
    }

    /// Waits until exactly `n` pods are Ready, the Lease is held by one of them, that pod alone
    /// reports itself leader, and only one watch is open on Teleport; returns the leader.
    async fn one_leader(&self, n: usize) -> anyhow::Result<String> {
        wait_for(
            "one leader among the Ready pods",
            WAIT,
            Duration::from_millis(200),
            || async {
                let pods = self.pods().await.ok()?;
                if pods.len() != n || !pods.iter().all(is_ready) {
                    return None;
                }
                let holder = self.lease_holder().await?;
                let gauges = self.leader_gauges().await.ok()?;
                let leaders: Vec<&String> = gauges
                    .iter()
                    .filter(|(_, v)| **v == 1.0)
                    .map(|(k, _)| k)
                    .collect();
                (leaders == [&holder]
                    && gauges.values().filter(|v| **v == 0.0).count() == n - 1
                    && self.teleport.active_watches() == 1)
                    .then_some(holder)
            },
        )
        .await
    }

    async fn two_replicas(&self) -> anyhow::Result<()> {
        println!("replicas=2: leader election, one Lease holder");
        let args = self.upgrade_args(&["replicas=2"]);
        let t = Instant::now();
        let during = self
            .during("upgrade to 2 replicas", self.helm(&args))
            .await?;
        self.record("helm upgrade --wait (replicas=2)", t.elapsed());
        during.report("helm upgrade to 2 replicas (RollingUpdate)");
        anyhow::ensure!(
            during.failed == 0,
            "the callback Service went unanswered while scaling from 1 to 2 replicas"
        );
        let strategy = self.strategy().await?;
        anyhow::ensure!(
            strategy == "RollingUpdate",
            "strategy {strategy} while scaling up"
        );
        let t = Instant::now();
        let leader = self.one_leader(2).await?;
        self.record("upgrade done -> one leader, one watch", t.elapsed());
        println!(
            "  leader {leader}; gauges {:?}",
            self.leader_gauges().await?
        );
        self.all_posted_once("after the upgrade to 2 replicas")
            .await?;

        // And at 2 replicas.
        let args = self.upgrade_args(&["log.level=info"]);
        let t = Instant::now();
        let during = self.during("rolling upgrade", self.helm(&args)).await?;
        self.record("helm upgrade --wait (2 replicas, rolling)", t.elapsed());
        during.report("helm upgrade at 2 replicas (RollingUpdate)");
        anyhow::ensure!(
            during.failed == 0,
            "the callback Service went unanswered during a rolling update"
        );
        let strategy = self.strategy().await?;
        anyhow::ensure!(
            strategy == "RollingUpdate",
            "strategy {strategy} with leader election"
        );
        let leader = self.one_leader(2).await?;
        println!("  leader {leader}");
        let pdb = self
            .node
            .get_json(&["poddisruptionbudget", "-n", NS, RELEASE])
            .await?;
        anyhow::ensure!(pdb["spec"]["maxUnavailable"] == 1, "{}", pdb["spec"]);
        self.all_posted_once("with 2 replicas").await
    }

    async fn failover(&self) -> anyhow::Result<()> {
        println!("failover: the leader's pod deleted (node cordoned, so no replacement races)");
        let leader = self.one_leader(2).await?;
        let other = self
            .ready_pods()
            .await?
            .iter()
            .map(name_of)
            .find(|n| *n != leader)
            .expect("a second pod");
        // Uncordoned, the replacement pod starts in about a second and may take the Lease
        // first; with the node cordoned it stays Pending, so the follower has to take over.
        self.node
            .kubectl(&["cordon", &self.node.name], None)
            .await?;
        let result = async {
            let t = Instant::now();
            self.node
                .kubectl(&["-n", NS, "delete", "pod", &leader, "--wait=false"], None)
                .await?;
            let takeover = async {
                wait_for(
                    "the other pod takes the Lease",
                    LEASE_DURATION + Duration::from_secs(5),
                    Duration::from_millis(100),
                    || async {
                        let holder = self.lease_holder().await?;
                        let gauges = self.leader_gauges().await.ok()?;
                        (holder == other && gauges.get(&other) == Some(&1.0)).then_some(())
                    },
                )
                .await
                .map(|()| String::new())
            };
            let during = self.during("failover", takeover).await?;
            let took = t.elapsed();
            self.record("leader pod deleted -> the follower holds the Lease", took);
            anyhow::ensure!(
                took < LEASE_DURATION + Duration::from_secs(3),
                "takeover took {took:?}"
            );
            during.report("failover");
            println!("  new leader {other}");
            self.all_posted_once("after the failover").await
        }
        .await;
        self.node
            .kubectl(&["uncordon", &self.node.name], None)
            .await?;
        result?;
        let t = Instant::now();
        self.one_leader(2).await?;
        self.record(
            "uncordon -> replacement Ready, 2 replicas, one leader",
            t.elapsed(),
        );
        // The deleted pod drains for SHUTDOWN_DRAIN_SECONDS; wait until it is gone, or the
        // drain below would count it (evicting a terminating pod ignores the PDB).
        let t = Instant::now();
        wait_for("the deleted leader gone", WAIT, POLL, || async {
            let list = self
                .node
                .get_json(&["pods", "-n", NS, "-l", SELECTOR])
                .await
                .ok()?;
            (items(&list).len() == 2).then_some(())
        })
        .await?;
        self.record("deleted leader pod gone (drain + exit)", t.elapsed());
        Ok(())
    }

    async fn drain(&self) -> anyhow::Result<()> {
        println!("kubectl drain: the PodDisruptionBudget allows one eviction, not two");
        wait_for("PDB allows one disruption", WAIT, POLL, || async {
            let pdb = self
                .node
                .get_json(&["poddisruptionbudget", "-n", NS, RELEASE])
                .await
                .ok()?;
            (pdb["status"]["disruptionsAllowed"] == 1 && pdb["status"]["currentHealthy"] == 2)
                .then_some(())
        })
        .await?;
        let before: BTreeSet<String> = self.pods().await?.iter().map(name_of).collect();
        let t = Instant::now();
        let drain = self
            .node
            .kubectl_output(
                &[
                    "drain",
                    &self.node.name,
                    "--ignore-daemonsets",
                    "--delete-emptydir-data",
                    "--timeout=12s",
                ],
                None,
            )
            .await;
        self.record(
            "kubectl drain --timeout=12s (expected to stop)",
            t.elapsed(),
        );
        let said = format!("{}{}", drain.stdout, drain.stderr);
        let result = async {
            anyhow::ensure!(!drain.success, "the drain evicted both pods:\n{said}");
            anyhow::ensure!(
                said.contains("disruption budget"),
                "the drain did not stop on the PDB:\n{said}"
            );
            let evicted: Vec<&str> = said
                .lines()
                .filter_map(|l| l.strip_prefix("pod/")?.strip_suffix(" evicted"))
                .filter(|p| before.contains(*p))
                .collect();
            let after: BTreeSet<String> = self.pods().await?.iter().map(name_of).collect();
            let kept: Vec<&String> = before.intersection(&after).collect();
            anyhow::ensure!(
                evicted.len() == 1 && kept.len() == 1,
                "evicted {evicted:?}, kept {kept:?}:\n{said}"
            );
            println!(
                "  evicted {evicted:?}, kept {kept:?} (the other eviction refused by the PDB)"
            );
            // The replacement cannot schedule on the cordoned node; the kept pod serves.
            let pending: Vec<String> = self
                .pods()
                .await?
                .iter()
                .filter(|p| p["status"]["phase"] == "Pending")
                .map(name_of)
                .collect();
            println!("  pending on the cordoned node: {pending:?}");
            let id = self.create("while drained");
            self.wait_posted(&id).await?;
            Ok(())
        }
        .await;
        // Whatever happened, give the node back.
        self.node
            .kubectl(&["uncordon", &self.node.name], None)
            .await?;
        result?;
        let t = Instant::now();
        self.one_leader(2).await?;
        self.record("uncordon -> 2 Ready replicas, one leader", t.elapsed());
        self.all_posted_once("after the drain").await
    }

    async fn helm_test(&self) -> anyhow::Result<()> {
        println!("helm test: the chart's hook pod runs the image's probe against the Service");
        let test_pod = format!("{RELEASE}-test-readyz");
        let t = Instant::now();
        // `--logs`: the hook pod is kept until helm has read them (before-hook-creation).
        let out = self
            .node
            .helm(&["test", RELEASE, "-n", NS, "--timeout", "2m", "--logs"])
            .await?;
        self.record("helm test --logs (operator Ready)", t.elapsed());
        let svc = self.node.get_json(&["service", "-n", NS, RELEASE]).await?;
        let url = format!(
            "http://{}:9090/readyz",
            svc["spec"]["clusterIP"].as_str().unwrap_or_default()
        );
        anyhow::ensure!(
            out.lines()
                .any(|l| l.starts_with("Phase:") && l.contains("Succeeded"))
                && out.contains(&format!("POD LOGS: {test_pod}"))
                && out.contains(&format!("{url}: 200 OK")),
            "helm test --logs:\n{out}"
        );
        println!(
            "  the test pod's log, as helm test --logs prints it: {}",
            out.lines()
                .find(|l| l.starts_with(&url))
                .unwrap_or_default()
        );

        // The test must be able to fail: with no operator pod behind the Service it does, and
        // the failed pod (kept) shows the URL kubelet expanded from $(..._SERVICE_HOST).
        self.node
            .kubectl(
                &[
                    "-n",
                    NS,
                    "scale",
                    &format!("deployment/{RELEASE}"),
                    "--replicas=0",
                ],
                None,
            )
            .await?;
        wait_for("no operator pods", WAIT, POLL, || async {
            let list = self
                .node
                .get_json(&["pods", "-n", NS, "-l", SELECTOR])
                .await
                .ok()?;
            items(&list).is_empty().then_some(())
        })
        .await?;
        let t = Instant::now();
        let failed = self
            .node
            .helm_output(&["test", RELEASE, "-n", NS, "--timeout", "2m", "--logs"])
            .await;
        self.record("helm test --logs (no operator pod: fails)", t.elapsed());
        anyhow::ensure!(
            !failed.success,
            "helm test passed without an operator:\n{}",
            failed.stdout
        );
        // helm prints the failed pod's logs too: the URL kubelet expanded, and why it failed.
        let said = format!("{}{}", failed.stdout, failed.stderr);
        anyhow::ensure!(
            said.contains(&format!("POD LOGS: {test_pod}")) && said.contains(&url),
            "helm test --logs of a failing test:\n{said}"
        );
        println!(
            "  the failed test pod says: {}",
            said.lines()
                .find(|l| l.starts_with(&url))
                .unwrap_or_default()
        );
        // Back to two replicas, so the uninstall has pods to stop.
        self.node
            .kubectl(
                &[
                    "-n",
                    NS,
                    "scale",
                    &format!("deployment/{RELEASE}"),
                    "--replicas=2",
                ],
                None,
            )
            .await?;
        self.one_leader(2).await?;
        Ok(())
    }

    async fn uninstall(&self) -> anyhow::Result<()> {
        println!("helm uninstall: everything goes but the CRD and the user's objects");
        let manifest = self
            .node
            .helm(&["get", "manifest", RELEASE, "-n", NS])
            .await?;
        let objects: Vec<(String, String, Option<String>)> =
            teleport_mattermost_testkit::pod::documents(&manifest)
                .iter()
                .map(|d| {
                    (
                        d["kind"].as_str().unwrap_or_default().to_string(),
                        name_of(d),
                        d["metadata"]["namespace"].as_str().map(str::to_string),
                    )
                })
                .collect();
        let t = Instant::now();
        let out = self
            .node
            .helm(&["uninstall", RELEASE, "-n", NS, "--wait", "--timeout", "2m"])
            .await?;
        self.record("helm uninstall --wait", t.elapsed());
        println!("  {}", out.trim().replace('\n', "\n  "));
        let mut kept = Vec::new();
        for (kind, name, namespace) in &objects {
            let mut args = vec!["get", kind.as_str(), name.as_str()];
            if let Some(ns) = namespace {
                args.extend(["-n", ns.as_str()]);
            }
            let got = self.node.kubectl_output(&args, None).await;
            match (kind.as_str(), got.success) {
                ("CustomResourceDefinition", true) => kept.push(format!("{kind}/{name}")),
                ("CustomResourceDefinition", false) => {
                    anyhow::bail!("the CRD was deleted: {}", got.stderr)
                }
                (_, true) => anyhow::bail!("{kind}/{name} survived helm uninstall"),
                (_, false) => anyhow::ensure!(
                    got.stderr.contains("NotFound"),
                    "{kind}/{name}: {}",
                    got.stderr
                ),
            }
        }
        // `--wait` waits for the objects helm deleted, not for the pods the garbage collector
        // then stops (each drains SHUTDOWN_DRAIN_SECONDS first).
        let t = Instant::now();
        wait_for("the operator pods gone", WAIT, POLL, || async {
            let list = self
                .node
                .get_json(&["pods", "-n", NS, "-l", SELECTOR])
                .await
                .ok()?;
            items(&list).is_empty().then_some(())
        })
        .await?;
        self.record("helm uninstall returned -> operator pods gone", t.elapsed());
        anyhow::ensure!(
            self.crs().get_opt(CR).await?.is_some(),
            "the MattermostAccessPlugin was deleted"
        );
        for secret in [
            "mm-teleport-identity",
            "mm-bot-token",
            "mm-callback-signing",
        ] {
            self.node
                .kubectl(&["get", "secret", "-n", USER_NS, secret], None)
                .await?;
        }
        let leftovers = self
            .node
            .kubectl_output(
                &["get", "all,lease,configmap,secret", "-n", NS, "-o", "name"],
                None,
            )
            .await;
        let left: BTreeSet<&str> = leftovers.stdout.split_whitespace().collect();
        println!(
            "  kept: {kept:?}, the CR {USER_NS}/{CR} and its 3 Secrets; left in {NS}: {left:?}"
        );
        // What helm does not own: the Lease the operator created, the `helm test` pod (hook
        // resources outlive the release; it is kept for `helm test --logs`), and the CA
        // ConfigMap kube-controller-manager puts in every namespace.
        let known: BTreeSet<String> = [
            format!("lease.coordination.k8s.io/{RELEASE}"),
            format!("pod/{RELEASE}-test-readyz"),
            "configmap/kube-root-ca.crt".to_string(),
        ]
        .into_iter()
        .collect();
        let unknown: Vec<&&str> = left.iter().filter(|l| !known.contains(**l)).collect();
        anyhow::ensure!(unknown.is_empty(), "left after helm uninstall: {unknown:?}");
        Ok(())
    }

    /// What an admin would look at when a step fails.
    async fn diagnose(&self) {
        eprintln!("\n===== diagnostics");
        for args in [
            vec!["get", "pods", "-A", "-o", "wide"],
            vec!["describe", "pods", "-n", NS],
            vec!["get", "events", "-A", "--sort-by=.lastTimestamp"],
            vec!["get", "mmap", "-A", "-o", "yaml"],
            vec!["logs", "-n", NS, "-l", SELECTOR, "--tail=80", "--prefix"],
        ] {
            let out = self.node.kubectl_output(&args, None).await;
            eprintln!(
                "----- kubectl {}\n{}{}",
                args.join(" "),
                out.stdout,
                out.stderr
            );
        }
        eprintln!(
            "----- kubelet (tail)\n{}",
            self.node.log_tail("kubelet", 40)
        );
    }
}
