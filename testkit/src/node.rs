//! A real single-node cluster (`tests/node/up.sh`) seen from a test that runs inside the
//! node's network namespace (`tests/node/run.sh` / `exec.sh`, as `tests/node/run-tier.sh`
//! runs the node tier): kubectl and helm bound to it, a kube client, what the kernel says
//! about a container's process, and the operator's image archive.
//!
//! Pods reach nothing on 127.0.0.1 of the node's namespace (that is their own loopback); they
//! reach the node's IP. The doubles listen on 127.0.0.1, so [`forward`] relays the node's IP
//! to them: TCP bytes only, so TLS (and the client certificate the Teleport double records)
//! stays end to end.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;
use tokio::io::AsyncWriteExt as _;

use crate::dockerfile::ImageConfig;

/// The node the test runs beside, from the environment `tests/node/exec.sh` sets.
#[derive(Debug, Clone)]
pub struct Node {
    /// The node's directory (`TM_NODE_STATE`): its logs are in `logs/`.
    pub state: PathBuf,
    /// The node's name (`TM_NODE_NAME`).
    pub name: String,
    /// The node's IP (`TM_NODE_IP`), which pods reach.
    pub ip: IpAddr,
    /// Admin kubeconfig (`system:masters`).
    pub kubeconfig: PathBuf,
    /// Where kubectl and helm are (`TM_NODE_BIN`).
    pub bin: PathBuf,
    /// The cgroup the node's processes and pods live in (`TM_NODE_CGROUP`).
    pub cgroup: String,
    /// containerd's socket (`TM_NODE_CONTAINERD_SOCK`), for `ctr`.
    pub containerd_sock: PathBuf,
}

/// The output of a command that may fail.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit status was 0.
    pub success: bool,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Node {
    /// The node from `TM_NODE_*` and `KUBECONFIG`; `None` outside a node's namespace.
    pub fn from_env() -> Option<Node> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Some(Node {
            state: var("TM_NODE_STATE")?.into(),
            name: var("TM_NODE_NAME").unwrap_or_else(|| "tm-node".into()),
            ip: var("TM_NODE_IP")?.parse().ok()?,
            kubeconfig: var("KUBECONFIG")?.into(),
            bin: var("TM_NODE_BIN")?.into(),
            cgroup: var("TM_NODE_CGROUP")?,
            containerd_sock: var("TM_NODE_CONTAINERD_SOCK")?.into(),
        })
    }

    fn command(&self, program: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(self.bin.join(program));
        cmd.env("KUBECONFIG", &self.kubeconfig).kill_on_drop(true);
        cmd
    }

    /// Runs kubectl; the output whatever the exit status.
    pub async fn kubectl_output(&self, args: &[&str], stdin: Option<&str>) -> Output {
        run_output(self.command("kubectl").args(args), stdin).await
    }

    /// Runs kubectl; stdout, or an error with both streams.
    pub async fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
        checked(
            &format!("kubectl {}", args.join(" ")),
            self.kubectl_output(args, stdin).await,
        )
    }

    /// `kubectl get ... -o json`, parsed.
    pub async fn get_json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        Ok(serde_json::from_str(&self.kubectl(&all, None).await?)?)
    }

    /// Runs helm (its homes are the node's, from exec.sh's environment).
    pub async fn helm_output(&self, args: &[&str]) -> Output {
        run_output(self.command("helm").args(args), None).await
    }

    /// Runs helm; stdout, or an error with both streams.
    pub async fn helm(&self, args: &[&str]) -> anyhow::Result<String> {
        checked(
            &format!("helm {}", args.join(" ")),
            self.helm_output(args).await,
        )
    }

    /// The image references containerd holds for the kubelet (namespace `k8s.io`): names and
    /// `name@digest` forms alike.
    pub async fn images(&self) -> anyhow::Result<Vec<String>> {
        let out = run_output(
            tokio::process::Command::new("ctr")
                .arg("--address")
                .arg(&self.containerd_sock)
                .args(["-n", "k8s.io", "images", "ls", "-q"]),
            None,
        )
        .await;
        Ok(checked("ctr images ls", out)?
            .lines()
            .map(str::to_string)
            .collect())
    }

    /// A kube client with the admin kubeconfig.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        crate::control_plane::client_from(&self.kubeconfig).await
    }

    /// The last `lines` lines of one of the node's component logs (e.g. `kubelet`).
    pub fn log_tail(&self, component: &str, lines: usize) -> String {
        let text =
            std::fs::read_to_string(self.state.join("logs").join(format!("{component}.log")))
                .unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The host PID of the process of container `container_id` (`containerd://<id>` or the
    /// bare id): the process whose cgroup path names it, in the node's cgroup.
    pub fn container_pid(&self, container_id: &str) -> anyhow::Result<u32> {
        let id = container_id
            .rsplit("://")
            .next()
            .context("empty container id")?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc")? {
            let entry = entry?;
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(cgroup) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
                continue;
            };
            if cgroup.contains(&format!("/{}/", self.cgroup)) && cgroup.contains(id) {
                found.push(pid);
            }
        }
        found.sort_unstable();
        // The container's first process (a single-process container has one).
        found
            .first()
            .copied()
            .with_context(|| format!("no process in a cgroup of container {id}"))
    }
}

/// What the kernel says about a running process.
#[derive(Debug, Clone)]
pub struct ProcessFacts {
    /// Real, effective, saved and filesystem UIDs (`/proc/PID/status` `Uid:`).
    pub uids: Vec<u32>,
    /// The same for GIDs.
    pub gids: Vec<u32>,
    /// Effective capabilities, hex (`CapEff`).
    pub cap_eff: String,
    /// `NoNewPrivs` (allowPrivilegeEscalation: false).
    pub no_new_privs: bool,
    /// `Seccomp` mode: 2 is a filter (RuntimeDefault).
    pub seccomp: u32,
    /// The options of the mount at `/` as the process sees it, e.g. `ro,relatime`.
    pub root_mount_options: String,
    /// argv.
    pub cmdline: Vec<String>,
}

impl ProcessFacts {
    /// Reads `/proc/PID/{status,mountinfo,cmdline}`.
    pub fn of(pid: u32) -> anyhow::Result<ProcessFacts> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| -> anyhow::Result<String> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}:")))
                .map(|v| v.trim().to_string())
                .with_context(|| format!("no {name} in /proc/{pid}/status"))
        };
        let numbers = |v: String| -> Vec<u32> {
            v.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        };
        let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))?;
        // "36 35 98:0 /root / rw,noatime master:1 - ext3 /dev/root rw": field 5 is the mount
        // point, field 6 the per-mount options.
        let root_mount_options = mountinfo
            .lines()
            .rev()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                match (f.get(4), f.get(5)) {
                    (Some(&"/"), Some(options)) => Some(options.to_string()),
                    _ => None,
                }
            })
            .context("no / in mountinfo")?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))?
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        Ok(ProcessFacts {
            uids: numbers(field("Uid")?),
            gids: numbers(field("Gid")?),
            cap_eff: field("CapEff")?,
            no_new_privs: field("NoNewPrivs")? == "1",
            seccomp: field("Seccomp")?.parse().unwrap_or(0),
            root_mount_options,
            cmdline,
        })
    }

    /// Whether `/` is mounted read-only for the process.
    pub fn root_read_only(&self) -> bool {
        self.root_mount_options.split(',').any(|o| o == "ro")
    }
}

/// Runs `cmd`, writing `stdin` to it; its output whatever the exit status.
pub(crate) async fn run_output(cmd: &mut tokio::process::Command, stdin: Option<&str>) -> Output {
    let spawned = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            return Output {
                success: false,
                stdout: String::new(),
                stderr: format!("spawning {cmd:?}: {e}"),
            };
        }
    };
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let _ = pipe.write_all(input.as_bytes()).await;
    }
    match child.wait_with_output().await {
        Ok(out) => Output {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        },
        Err(e) => Output {
            success: false,
            stdout: String::new(),
            stderr: format!("waiting for {cmd:?}: {e}"),
        },
    }
}

fn checked(what: &str, out: Output) -> anyhow::Result<String> {
    if out.success {
        Ok(out.stdout)
    } else {
        bail!("{what} failed:\n{}{}", out.stdout, out.stderr)
    }
}

/// Polls `f` every `every` until it returns `Some`, or fails after `timeout` saying `what`.
pub async fn wait_for<T, F, Fut>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut f: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            bail!("{what}: not within {timeout:?}");
        }
        tokio::time::sleep(every).await;
    }
}

/// A TCP relay from an address pods can reach to a double on 127.0.0.1; it stops when
/// dropped.
#[derive(Debug)]
pub struct Forwarder {
    /// Where it listens (the node's IP and a free port).
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Listens on `ip:<free port>` and relays every connection to `target`.
pub async fn forward(ip: IpAddr, target: SocketAddr) -> anyhow::Result<Forwarder> {
    let listener = tokio::net::TcpListener::bind((ip, 0))
        .await
        .with_context(|| format!("binding {ip}:0 (is this the node's network namespace?)"))?;
    let addr = listener.local_addr()?;
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    let task = tokio::spawn(async move {
        let mut relays = tokio::task::JoinSet::new();
        while let Ok((mut inbound, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::Relaxed);
            relays.spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
            // Reap finished relays so the set does not grow without bound.
            while relays.try_join_next().is_some() {}
        }
    });
    Ok(Forwarder {
        addr,
        connections,
        task,
    })
}

/// A Prometheus sample from a `/metrics` text: the first line for `name` whose labels
/// contain every `label="value"` in `labels`.
pub fn metric_value(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
}

/// An OCI image archive as `tests/node/mkimage.py` writes it (and `ctr images import` reads).
#[derive(Debug, Clone)]
pub struct ImageArchive {
    /// The archive.
    pub path: PathBuf,
    /// The name containerd imports it under (`io.containerd.image.name`).
    pub name: String,
    /// The manifest's digest (`sha256:...`), which a registry keeps when the image is pushed.
    pub manifest_digest: String,
    /// The image configuration (the `config` object of the config blob).
    pub config: Value,
    /// The layers' entries: path (without a leading `/`) → (tar type char, mode).
    pub entries: BTreeMap<String, (char, u32)>,
    /// The single layer, gzipped tar, extracted to a temporary file.
    layer: Arc<tempfile::NamedTempFile>,
}

fn tar_member(archive: &Path, member: &str) -> anyhow::Result<Vec<u8>> {
    let out = std::process::Command::new("tar")
        .arg("-xOf")
        .arg(archive)
        .arg(member)
        .output()?;
    if !out.status.success() {
        bail!(
            "tar -xOf {} {member}: {}",
            archive.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

impl ImageArchive {
    /// Reads the index, manifest, config and layer listing of an archive.
    pub fn open(path: &Path) -> anyhow::Result<ImageArchive> {
        let blob = |digest: &str| -> anyhow::Result<Vec<u8>> {
            let hex = digest.strip_prefix("sha256:").context("sha256 digest")?;
            tar_member(path, &format!("blobs/sha256/{hex}"))
        };
        let index: Value = serde_json::from_slice(&tar_member(path, "index.json")?)?;
        let entry = &index["manifests"][0];
        let name = entry["annotations"]["io.containerd.image.name"]
            .as_str()
            .context("index.json names no image")?
            .to_string();
        let manifest_digest = entry["digest"]
            .as_str()
            .context("manifest digest")?
            .to_string();
        let manifest: Value = serde_json::from_slice(&blob(&manifest_digest)?)?;
        let config: Value = serde_json::from_slice(&blob(
            manifest["config"]["digest"]
                .as_str()
                .context("config digest")?,
        )?)?;
        let layers = manifest["layers"].as_array().context("layers")?;
        anyhow::ensure!(
            layers.len() == 1,
            "expected one layer, got {}",
            layers.len()
        );
        let layer = tempfile::NamedTempFile::new()?;
        std::fs::write(
            layer.path(),
            blob(layers[0]["digest"].as_str().context("layer digest")?)?,
        )?;
        let listing = std::process::Command::new("tar")
            .args(["--numeric-owner", "-tvzf"])
            .arg(layer.path())
            .output()?;
        anyhow::ensure!(listing.status.success(), "listing the layer failed");
        let mut entries = BTreeMap::new();
        for line in String::from_utf8_lossy(&listing.stdout).lines() {
            // "-rwxr-xr-x 0/0 27959336 1970-01-01 00:00 teleport-mattermost"
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(perms), Some(path)) = (fields.first(), fields.get(5)) else {
                continue;
            };
            let kind = perms.chars().next().unwrap_or('?');
            let mode = perms[1..]
                .chars()
                .fold(0u32, |m, c| (m << 1) | u32::from(c != '-'));
            entries.insert(path.trim_end_matches('/').to_string(), (kind, mode));
        }
        Ok(ImageArchive {
            path: path.to_path_buf(),
            name,
            manifest_digest,
            config: config["config"].clone(),
            entries,
            layer: Arc::new(layer),
        })
    }

    /// `repository` and `tag` of [`name`](Self::name), for the chart's `image.*` values.
    pub fn repository_and_tag(&self) -> (String, String) {
        let (repo, tag) = self.name.rsplit_once(':').unwrap_or((&self.name, "latest"));
        (repo.to_string(), tag.to_string())
    }

    /// The configuration in the Dockerfile's terms, for comparing with
    /// [`Dockerfile::final_config`](crate::dockerfile::Dockerfile::final_config) (which
    /// files the image takes from the build stage is not part of an image's config).
    pub fn image_config(&self) -> ImageConfig {
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut exposed_ports: Vec<String> = self.config["ExposedPorts"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        exposed_ports.sort();
        ImageConfig {
            entrypoint: strings(&self.config["Entrypoint"]),
            cmd: strings(&self.config["Cmd"]),
            user: self.config["User"].as_str().unwrap_or_default().to_string(),
            exposed_ports,
            labels: self.config["Labels"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default(),
            copies_from_build: Vec::new(),
        }
    }

    /// Extracts one file of the layer (path without a leading `/`) into `dir`; its path.
    pub fn extract(&self, member: &str, dir: &Path) -> anyhow::Result<PathBuf> {
        let status = std::process::Command::new("tar")
            .arg("-xzf")
            .arg(self.layer.path())
            .arg("-C")
            .arg(dir)
            .arg(member)
            .status()?;
        anyhow::ensure!(status.success(), "extracting {member}");
        Ok(dir.join(member))
    }
}
