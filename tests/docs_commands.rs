//! The install commands of README.md, docs/install.md and the chart's NOTES, run as written
//! against the real kube-apiserver (tier 3): every object they create must be accepted.
//!
//! `kubectl` and `helm` are the real peers, bound to the test control plane. Some commands
//! cannot run here and are stood in for: `docker build`/`push` (no engine: the image name is
//! checked instead); `tctl auth sign`, which writes `auth.crt`, `auth.key` and `auth.cas`
//! from the test CA (tier 5 runs the real one); `cosign verify` of a keyless signature (it
//! needs GitHub's OIDC and Sigstore: the node tier runs the real cosign with a key); and
//! `ghcr.io`, which is a real registry on loopback (Debian's docker-registry) holding the
//! chart packaged from this checkout, reached by the real helm through a stand-in that only
//! rewrites the host. The text is otherwise unchanged.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use teleport_mattermost_testkit::control_plane::{ControlPlane, run};
use teleport_mattermost_testkit::pki::TestPki;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The ```sh blocks of the section under `heading` (up to the next heading of its level).
fn sh_blocks(markdown: &str, heading: &str) -> Vec<String> {
    let level = heading.chars().take_while(|c| *c == '#').count();
    let mut lines = markdown.lines().skip_while(|l| *l != heading);
    assert!(lines.next().is_some(), "no heading {heading:?}");
    let mut blocks = Vec::new();
    let mut block: Option<String> = None;
    for line in lines {
        match block.as_mut() {
            Some(b) if line.starts_with("```") => blocks.push(std::mem::take(b)),
            Some(b) => {
                b.push_str(line);
                b.push('\n');
                continue;
            }
            None if line == "```sh" => {
                block = Some(String::new());
                continue;
            }
            None => {
                let hashes = line.chars().take_while(|c| *c == '#').count();
                if hashes > 0 && hashes <= level && line.chars().nth(hashes) == Some(' ') {
                    break;
                }
                continue;
            }
        }
        block = None;
    }
    assert!(!blocks.is_empty(), "no sh block under {heading:?}");
    blocks
}

/// A registry on loopback (Debian's docker-registry, the CNCF distribution registry) standing
/// in for ghcr.io, with this checkout's chart pushed to it as the published one is.
struct Ghcr {
    addr: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for Ghcr {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Ghcr {
    /// Starts the registry and pushes the chart as `charts/teleport-mattermost`.
    async fn with_chart(plane: &ControlPlane) -> Ghcr {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .args(["serve", config.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect(
                "docker-registry (Debian package docker-registry; tests/run-all.sh installs it)",
            );
        let ghcr = Ghcr {
            addr,
            child,
            _dir: dir,
        };
        let url = format!("http://{}/v2/", ghcr.addr);
        let mut up = false;
        for _ in 0..100 {
            if reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                up = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(up, "the registry at {url} never answered");
        let helm = plane.user_path().unwrap().join("helm");
        let packaged = ghcr._dir.path().join("packaged");
        run(
            Command::new(&helm).args([
                "package",
                repo().join("charts/teleport-mattermost").to_str().unwrap(),
                "-d",
                packaged.to_str().unwrap(),
            ]),
            None,
        )
        .unwrap();
        let tgz = std::fs::read_dir(&packaged)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        run(
            Command::new(&helm).args([
                "push",
                tgz.to_str().unwrap(),
                &format!("oci://{}/teleport-mattermost/charts", ghcr.addr),
                "--plain-http",
            ]),
            None,
        )
        .unwrap();
        ghcr
    }
}

/// A scratch directory that looks like a checkout (charts/ and manifests/ linked in), with
/// stand-ins for docker and tctl on PATH after the real kubectl and helm.
struct Workdir {
    dir: tempfile::TempDir,
    path: String,
}

fn write_exec(path: &Path, body: &str) {
    std::fs::write(
        path,
        format!("#!/usr/bin/env bash\nset -euo pipefail\n{body}"),
    )
    .unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

impl Workdir {
    fn new(plane: &ControlPlane) -> Workdir {
        let dir = tempfile::tempdir().unwrap();
        for linked in ["charts", "manifests"] {
            std::os::unix::fs::symlink(repo().join(linked), dir.path().join(linked)).unwrap();
        }
        let stand_ins = dir.path().join(".stand-ins");
        std::fs::create_dir_all(&stand_ins).unwrap();
        // tctl auth sign --format=tls ... --out=auth: the files it writes, from the test CA.
        let pki = TestPki::new();
        let cert = pki.client("access-plugin-mattermost");
        for (name, pem) in [
            ("auth.crt", &cert.cert_pem),
            ("auth.key", &cert.key_pem),
            ("auth.cas", &cert.cas_pem),
        ] {
            std::fs::write(stand_ins.join(name), pem).unwrap();
        }
        write_exec(
            &stand_ins.join("tctl"),
            &format!(
                "[[ \"$*\" == *'auth sign --format=tls'*'--out=auth'* ]] || {{ echo \"tctl stand-in: unexpected $*\" >&2; exit 1; }}\ncp {d}/auth.crt {d}/auth.key {d}/auth.cas .\n",
                d = stand_ins.display()
            ),
        );
        // docker: record what would be built and pushed.
        write_exec(
            &stand_ins.join("docker"),
            &format!("echo \"$*\" >> {}/docker.log\n", stand_ins.display()),
        );
        let path = format!(
            "{}:{}:{}",
            plane.user_path().unwrap().display(),
            stand_ins.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Workdir { dir, path }
    }

    /// Runs `script` with bash as a user would paste it; returns stdout.
    fn run(&self, script: &str) -> String {
        let script = script.replace("<bot access token>", "bot-token-from-mattermost");
        run(
            Command::new("bash")
                .args(["-euo", "pipefail", "-c", &script])
                .current_dir(self.dir.path())
                .env("PATH", &self.path),
            None,
        )
        .unwrap_or_else(|e| panic!("the documented commands failed:\n{script}\n{e:#}"))
    }

    /// Sends `oci://ghcr.io/...` to the loopback registry: a `helm` ahead of the real one that
    /// rewrites the host (and says plain HTTP) and runs the real helm with everything else
    /// as given. A `cosign` stand-in records what it was asked to verify.
    fn with_ghcr(mut self, plane: &ControlPlane, ghcr: &Ghcr) -> Self {
        let shims = self.dir.path().join(".ghcr");
        std::fs::create_dir_all(&shims).unwrap();
        let helm = plane.user_path().unwrap().join("helm");
        write_exec(
            &shims.join("helm"),
            &format!(
                "args=()\nplain=()\nfor a in \"$@\"; do\n  case $a in\n    oci://ghcr.io/*) args+=(\"oci://{addr}/${{a#oci://ghcr.io/}}\"); plain=(--plain-http) ;;\n    *) args+=(\"$a\") ;;\n  esac\ndone\nexec {helm} \"${{args[@]}}\" \"${{plain[@]}}\"\n",
                addr = ghcr.addr,
                helm = helm.display()
            ),
        );
        write_exec(
            &shims.join("cosign"),
            &format!(
                "echo \"$*\" >> {}/cosign.log\n",
                self.dir.path().join(".stand-ins").display()
            ),
        );
        self.path = format!("{}:{}", shims.display(), self.path);
        self
    }

    fn cosign_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(".stand-ins/cosign.log")).unwrap_or_default()
    }

    fn docker_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(".stand-ins/docker.log")).unwrap_or_default()
    }
}

fn get_json(plane: &ControlPlane, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&plane.kubectl_run(&all, None).unwrap()).unwrap()
}

#[tokio::test]
async fn the_readme_install_runs_as_written() {
    let plane = ControlPlane::start().await.unwrap();
    let ghcr = Ghcr::with_chart(&plane).await;
    let work = Workdir::new(&plane).with_ghcr(&plane, &ghcr);
    // "With the Prometheus Operator in the cluster" (the Monitoring commands): its CRDs.
    run(
        plane.kubectl().args(["apply", "-f", "-"]),
        Some(teleport_mattermost_testkit::control_plane::PROMETHEUS_OPERATOR_CRDS),
    )
    .unwrap();
    run(
        plane.kubectl().args([
            "wait",
            "--for=condition=Established",
            "crd/servicemonitors.monitoring.coreos.com",
            "crd/prometheusrules.monitoring.coreos.com",
        ]),
        None,
    )
    .unwrap();
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let blocks = sh_blocks(&readme, "## Install on Kubernetes");
    let out = work.run(&blocks.join("\n"));

    // The chart came from the registry, at the README's version, and runs the published image
    // of that version.
    let chart: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(repo().join("charts/teleport-mattermost/Chart.yaml")).unwrap(),
    )
    .unwrap();
    let version = chart["version"].as_str().unwrap();
    assert!(
        blocks.join("\n").contains(&format!("--version {version}")),
        "the README installs the chart's own version {version}"
    );
    let release = run(
        plane
            .helm()
            .args(["-n", "teleport-mattermost", "list", "-o", "json"]),
        None,
    )
    .unwrap();
    assert!(
        release.contains(&format!("teleport-mattermost-{version}")),
        "{release}"
    );
    let built = format!("ghcr.io/teleport-mattermost/teleport-mattermost:{version}");
    assert!(work.docker_log().is_empty(), "nothing to build");
    // The README's verification names the same image and chart (keyless: run on GitHub only).
    let cosign = work.cosign_log();
    assert!(
        cosign.contains(&format!("verify {built}"))
            && cosign.contains(&format!(
                "verify ghcr.io/teleport-mattermost/charts/teleport-mattermost:{version}"
            ))
            && cosign
                .contains("--certificate-oidc-issuer https://token.actions.githubusercontent.com"),
        "{cosign}"
    );
    let deployment = get_json(
        &plane,
        &[
            "-n",
            "teleport-mattermost",
            "get",
            "deployment",
            "teleport-mattermost",
        ],
    );
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        built
    );

    // HTTPS all the way: the Ingress has TLS and the cert-manager annotation, NOTES say https.
    let ingress = get_json(
        &plane,
        &[
            "-n",
            "teleport-mattermost",
            "get",
            "ingress",
            "teleport-mattermost",
        ],
    );
    assert_eq!(ingress["spec"]["tls"][0]["secretName"], "mm-callback-tls");
    assert_eq!(
        ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"],
        "letsencrypt"
    );
    assert!(
        out.contains("https://mm-callback.example.com/v1/actions"),
        "{out}"
    );
    assert!(!out.contains("WARNING"), "{out}");

    // The Secrets and the example resource were accepted, and the resource matches NOTES.
    let signing = get_json(
        &plane,
        &["-n", "teleport", "get", "secret", "mm-callback-signing"],
    );
    assert!(signing["data"]["signingSecret"].is_string());
    for secret in ["mm-teleport-identity", "mm-bot-token"] {
        plane
            .kubectl_run(&["-n", "teleport", "get", "secret", secret], None)
            .unwrap();
    }
    let cr = get_json(&plane, &["-n", "teleport", "get", "mmap", "platform"]);
    assert_eq!(
        cr["spec"]["callback"]["publicURL"],
        "https://mm-callback.example.com"
    );

    // Monitoring: the scrape, the alerts and the dashboard exist, with the selector labels.
    let rule = get_json(
        &plane,
        &[
            "-n",
            "teleport-mattermost",
            "get",
            "prometheusrule",
            "teleport-mattermost",
        ],
    );
    assert_eq!(rule["metadata"]["labels"]["release"], "prometheus");
    let monitor = get_json(
        &plane,
        &[
            "-n",
            "teleport-mattermost",
            "get",
            "servicemonitor",
            "teleport-mattermost",
        ],
    );
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    let dashboards = get_json(
        &plane,
        &[
            "-n",
            "teleport-mattermost",
            "get",
            "configmap",
            "-l",
            "grafana_dashboard=1",
        ],
    );
    assert_eq!(
        dashboards["items"].as_array().map(Vec::len),
        Some(1),
        "{dashboards}"
    );
}

#[tokio::test]
async fn the_install_guides_quick_start_runs_as_written() {
    let plane = ControlPlane::start().await.unwrap();
    let work = Workdir::new(&plane);
    let guide = std::fs::read_to_string(repo().join("docs/install.md")).unwrap();
    let blocks = sh_blocks(&guide, "## Quick start");
    // The last block is what to run once the operator's pod is up (tsh): not an install step.
    let install: Vec<&String> = blocks.iter().filter(|b| !b.contains("tsh ")).collect();
    assert!(install.len() >= 3, "{blocks:?}");
    let script: Vec<&str> = install.iter().map(|b| b.as_str()).collect();
    work.run(&script.join("\n"));
    plane
        .kubectl_run(&["-n", "teleport", "get", "mmap", "platform"], None)
        .unwrap();
    let ingress = get_json(
        &plane,
        &[
            "-n",
            "teleport-mattermost",
            "get",
            "ingress",
            "teleport-mattermost",
        ],
    );
    assert_eq!(ingress["spec"]["tls"][0]["secretName"], "mm-callback-tls");
}

#[tokio::test]
async fn the_commands_the_charts_notes_print_run_as_written() {
    let plane = ControlPlane::start().await.unwrap();
    let work = Workdir::new(&plane);
    let notes = work.run(
        "helm install teleport-mattermost charts/teleport-mattermost \
           --namespace teleport-mattermost --create-namespace \
           --set ingress.enabled=true --set ingress.host=mm-callback.example.com \
           --set 'ingress.tls[0].secretName=mm-callback-tls'",
    );
    assert!(
        notes.contains(
            "Set each resource's spec.callback.publicURL to https://mm-callback.example.com"
        ),
        "{notes}"
    );
    // Every indented command of the NOTES, continuation lines joined.
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in notes.lines() {
        let trimmed = line.trim();
        if current.is_empty()
            && !(line.starts_with("  ")
                && (trimmed.starts_with("kubectl ") || trimmed.starts_with("tctl ")))
        {
            continue;
        }
        let (text, continues) = match trimmed.strip_suffix('\\') {
            Some(head) => (head, true),
            None => (trimmed, false),
        };
        current.push_str(text);
        current.push(' ');
        if !continues {
            commands.push(std::mem::take(&mut current));
        }
    }
    assert!(commands.len() >= 5, "{commands:?}");
    // NOTES point at the example by URL; a user downloads it, here it is copied.
    std::fs::copy(
        repo().join("manifests/examples/mattermostaccessplugin.yaml"),
        work.dir.path().join("mattermostaccessplugin.yaml"),
    )
    .unwrap();
    work.run(&format!(
        "kubectl create namespace teleport\n{}",
        commands
            .iter()
            // Strip the trailing "# READY should turn True" comments.
            .map(|c| c.split(" # ").next().unwrap().trim().to_string())
            .collect::<Vec<_>>()
            .join("\n")
    ));
    plane
        .kubectl_run(&["-n", "teleport", "get", "mmap", "platform"], None)
        .unwrap();
}

#[tokio::test]
async fn the_chart_works_as_a_subchart_with_global_values() {
    let plane = ControlPlane::start().await.unwrap();
    let parent = tempfile::tempdir().unwrap();
    std::fs::write(
        parent.path().join("Chart.yaml"),
        format!(
            "apiVersion: v2\nname: platform-tools\nversion: 1.0.0\ndependencies:\n  - name: teleport-mattermost\n    version: 0.2.0\n    repository: file://{}\n",
            repo().join("charts/teleport-mattermost").display()
        ),
    )
    .unwrap();
    std::fs::write(
        parent.path().join("values.yaml"),
        "global:\n  imageRegistry: registry.example.com\nteleport-mattermost:\n  replicas: 2\n",
    )
    .unwrap();
    let chart = parent.path().display().to_string();
    run(plane.helm().args(["dependency", "build", &chart]), None).unwrap();
    run(plane.helm().args(["lint", "--strict", &chart]), None).unwrap();
    run(
        plane.helm().args([
            "install",
            "tools",
            &chart,
            "--namespace",
            "tools",
            "--create-namespace",
            "--set",
            "global.environment=staging",
        ]),
        None,
    )
    .unwrap();
    let deployment = get_json(
        &plane,
        &[
            "-n",
            "tools",
            "get",
            "deployment",
            "tools-teleport-mattermost",
        ],
    );
    assert_eq!(deployment["spec"]["replicas"], 2);
}

/// The docs' second release: another namespace and its own watchNamespaces, with
/// crds.install=false because the first release owns the CRD.
#[tokio::test]
async fn a_second_release_in_another_namespace_installs_without_the_crd() {
    let plane = ControlPlane::start().await.unwrap();
    let work = Workdir::new(&plane);
    work.run(
        "kubectl create namespace team-a && kubectl create namespace team-b\n\
         helm install teleport-mattermost charts/teleport-mattermost \
           --namespace teleport-mattermost --create-namespace --set 'watchNamespaces={team-a}'",
    );
    let guide = std::fs::read_to_string(repo().join("docs/install.md")).unwrap();
    let second = sh_blocks(
        &guide,
        "## More than one release, and the chart as a subchart",
    );
    work.run(&second.join("\n"));
    for ns in ["teleport-mattermost", "teleport-mattermost-b"] {
        let deployments = get_json(&plane, &["-n", ns, "get", "deployments"]);
        assert_eq!(deployments["items"].as_array().unwrap().len(), 1, "{ns}");
    }
    // One CRD, owned by the first release; each release's RBAC covers its own namespaces.
    let crd = get_json(
        &plane,
        &["get", "crd", "mattermostaccessplugins.accessplugins.dev"],
    );
    assert_eq!(
        crd["metadata"]["annotations"]["meta.helm.sh/release-name"],
        "teleport-mattermost"
    );
    let can = |sa: &str, ns: &str| {
        plane
            .kubectl_run(
                &["auth", "can-i", "list", "secrets", "-n", ns, "--as", sa],
                None,
            )
            .is_ok()
    };
    let b = "system:serviceaccount:teleport-mattermost-b:teleport-mattermost-b";
    assert!(can(b, "team-b"));
    assert!(
        !can(b, "team-a"),
        "the second release cannot read the first's Secrets"
    );
}
