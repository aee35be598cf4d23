//! The operator binary run the way its pod runs it, without a node: the container's args, env
//! and probes taken from the chart's rendered Deployment, the `fieldRef`s filled in as kubelet
//! fills them, and a token of the chart's own ServiceAccount (TokenRequest) instead of admin
//! credentials.
//!
//! One change is made, and only to keep test servers off the machine's interfaces: the chart's
//! `0.0.0.0:<port>` listen addresses become `127.0.0.1:<port>`; the ports are chosen free
//! through the chart's own `callback.port` and `probes.port` values.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::cluster::free_addr;
use crate::control_plane::{ControlPlane, run};

/// The chart in this repository.
pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("charts/teleport-mattermost")
}

/// `helm template` of the chart as release `release` in `namespace`, with `--set` values.
pub fn render(
    cp: &ControlPlane,
    release: &str,
    namespace: &str,
    sets: &[String],
) -> anyhow::Result<String> {
    let mut cmd = cp.helm();
    cmd.args(["template", release])
        .arg(chart_dir())
        .args(["--namespace", namespace]);
    for s in sets {
        cmd.args(["--set", s]);
    }
    run(&mut cmd, None)
}

/// The documents of a multi-document YAML stream, as JSON values.
pub fn documents(yaml: &str) -> Vec<Value> {
    use serde::Deserialize as _;
    serde_yaml_ng::Deserializer::from_str(yaml)
        .filter_map(|doc| Value::deserialize(doc).ok())
        .filter(|v| !v.is_null())
        .collect()
}

/// What the operator container of the rendered Deployment runs.
#[derive(Debug, Clone)]
pub struct Container {
    /// The container's args (the image's ENTRYPOINT is the binary).
    pub args: Vec<String>,
    /// The environment as kubelet would set it for `pod_name` in the Deployment's namespace.
    pub env: Vec<(String, String)>,
    /// Callback server address (from CALLBACK_ADDR, moved to 127.0.0.1).
    pub callback: SocketAddr,
    /// Probe server address (from PROBE_ADDR, moved to 127.0.0.1).
    pub probe: SocketAddr,
    /// The readiness probe's HTTP path.
    pub readiness_path: String,
    /// The liveness probe's HTTP path.
    pub liveness_path: String,
    /// The probes' period.
    pub probe_period: Duration,
    /// The pod's terminationGracePeriodSeconds.
    pub termination_grace: Duration,
    /// The pod's ServiceAccount.
    pub service_account: String,
}

/// Renders the chart with free callback and probe ports and reads its operator container as
/// a pod named `pod_name` would get it.
pub fn container(
    cp: &ControlPlane,
    release: &str,
    namespace: &str,
    sets: &[String],
    pod_name: &str,
) -> anyhow::Result<(Container, String)> {
    let (callback, probe) = (free_addr(), free_addr());
    let mut all = vec![
        format!("callback.port={}", callback.port()),
        format!("probes.port={}", probe.port()),
    ];
    all.extend_from_slice(sets);
    let rendered = render(cp, release, namespace, &all)?;
    let docs = documents(&rendered);
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .context("the chart rendered no Deployment")?;
    let pod = &deployment["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let str_of = |v: &Value| v.as_str().map(str::to_string);
    let args: Vec<String> = c["args"]
        .as_array()
        .map(|a| a.iter().filter_map(str_of).collect())
        .unwrap_or_default();
    let mut env = Vec::new();
    for e in c["env"].as_array().into_iter().flatten() {
        let name = str_of(&e["name"]).context("env entry without a name")?;
        let value = if let Some(v) = e.get("value") {
            str_of(v).unwrap_or_default()
        } else if let Some(path) = e.pointer("/valueFrom/fieldRef/fieldPath") {
            match path.as_str() {
                Some("metadata.namespace") => namespace.to_string(),
                Some("metadata.name") => pod_name.to_string(),
                other => bail!("env {name}: fieldRef {other:?} is not filled by this harness"),
            }
        } else {
            bail!("env {name}: only value and fieldRef are filled by this harness")
        };
        let value = value.replace("0.0.0.0:", "127.0.0.1:");
        env.push((name, value));
    }
    let addr_of = |key: &str| -> anyhow::Result<SocketAddr> {
        env.iter()
            .find(|(k, _)| k == key)
            .with_context(|| format!("the container sets no {key}"))?
            .1
            .parse()
            .with_context(|| format!("{key} is not an address"))
    };
    let probe_path = |probe: &str| {
        str_of(&c[probe]["httpGet"]["path"]).with_context(|| format!("no {probe} httpGet path"))
    };
    let container = Container {
        callback: addr_of("CALLBACK_ADDR")?,
        probe: addr_of("PROBE_ADDR")?,
        args,
        readiness_path: probe_path("readinessProbe")?,
        liveness_path: probe_path("livenessProbe")?,
        probe_period: Duration::from_secs(
            c["readinessProbe"]["periodSeconds"].as_u64().unwrap_or(10),
        ),
        termination_grace: Duration::from_secs(
            pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30),
        ),
        service_account: str_of(&pod["serviceAccountName"]).unwrap_or_else(|| "default".into()),
        env,
    };
    Ok((container, rendered))
}

/// A kubeconfig holding a fresh token of ServiceAccount `namespace/name` (TokenRequest).
pub fn service_account_kubeconfig(
    cp: &ControlPlane,
    namespace: &str,
    name: &str,
) -> anyhow::Result<PathBuf> {
    let token = cp.kubectl_run(
        &["create", "token", name, "-n", namespace, "--duration=2h"],
        None,
    )?;
    cp.kubeconfig_for_token(&format!("sa-{namespace}-{name}"), token.trim())
}

/// One operator process started as the pod would start it.
pub struct PodProcess {
    child: Child,
    /// What it was started with.
    pub container: Container,
    http: reqwest::Client,
    log: PathBuf,
}

impl PodProcess {
    /// Starts `binary` with the container's args and env only (plus KUBECONFIG), logging to
    /// `log`.
    pub fn spawn(
        binary: &Path,
        container: &Container,
        kubeconfig: &Path,
        log: &Path,
    ) -> anyhow::Result<PodProcess> {
        let file = std::fs::File::create(log)?;
        let child = Command::new(binary)
            .args(&container.args)
            .env_clear()
            .envs(container.env.iter().map(|(k, v)| (k, v)))
            .env("KUBECONFIG", kubeconfig)
            .stdout(file.try_clone()?)
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(PodProcess {
            child,
            container: container.clone(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(1)) // kubelet's default probe timeout
                .build()?,
            log: log.to_path_buf(),
        })
    }

    /// GET a probe path as kubelet does; None when nothing answers.
    pub async fn probe(&self, path: &str) -> Option<(u16, String)> {
        let url = format!("http://{}{path}", self.container.probe);
        let response = self.http.get(url).send().await.ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.unwrap_or_default()))
    }

    /// The readiness probe's answer.
    pub async fn readyz(&self) -> Option<(u16, String)> {
        self.probe(&self.container.readiness_path.clone()).await
    }

    /// The liveness probe's answer.
    pub async fn healthz(&self) -> Option<(u16, String)> {
        self.probe(&self.container.liveness_path.clone()).await
    }

    /// A metric's value from `/metrics` (the first sample of that name).
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = self.probe("/metrics").await?;
        body.lines()
            .find(|l| l.split(['{', ' ']).next() == Some(name))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
    }

    /// Polls readiness every `every` until it is 200 or `timeout` passes.
    pub async fn wait_ready(&self, every: Duration, timeout: Duration) -> anyhow::Result<Duration> {
        let start = tokio::time::Instant::now();
        loop {
            if let Some((200, _)) = self.readyz().await {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                bail!(
                    "not ready after {timeout:?}: {:?}\n--- log\n{}",
                    self.readyz().await,
                    self.log_tail(40)
                );
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Sends SIGTERM, as kubelet does when the pod is deleted.
    pub fn sigterm(&self) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -TERM failed");
        Ok(())
    }

    /// SIGKILL, as when the node dies.
    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit; its status, or None after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = tokio::time::Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Its whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for PodProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
