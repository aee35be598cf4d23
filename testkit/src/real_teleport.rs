//! A real Teleport cluster for tier 5: `teleport` (through our launcher `tm-teleport`, which
//! can run a Proxy without web assets) and `tctl`, built from the pinned module by
//! `tests/teleport/build.sh`, on 127.0.0.1 with sqlite storage in a temp directory, bootstrapped
//! with `tctl` exactly as the seed document does.
//!
//! Everything goes through `tctl -c <the server's config>`, the local admin: roles and users
//! (`tctl create -f`, `tctl users add`), identities (`tctl auth sign`), requests
//! (`tctl requests create|ls|approve|deny|rm`) and bots (`tctl bots add`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;

/// The Teleport version the peers are built from.
pub const VERSION: &str = "13.3.8";
/// The cluster's name.
pub const CLUSTER: &str = "tm.test";
/// The plugin's Teleport user and role, as in the seed document.
pub const PLUGIN_USER: &str = "access-plugin-mattermost";
/// The role a requester asks for.
pub const ELEVATED_ROLE: &str = "tm-elevated";

/// Where `tests/teleport/build.sh` puts the binaries.
pub fn bin_dir() -> PathBuf {
    crate::control_plane::peers_bin_dir()
        .parent()
        .expect("the peers cache")
        .join("teleport/bin")
}

/// True when every Teleport peer is built.
pub fn available() -> bool {
    [
        "teleport",
        "tm-teleport",
        "tctl",
        "tbot",
        "tm-teleport-mattermost-plugin",
    ]
    .iter()
    .all(|b| bin_dir().join(b).exists())
}

/// How the cluster is exposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The Auth Service alone on its own port.
    AuthOnly,
    /// Auth plus a Proxy with TLS routing (one web port, `proxy_listener_mode: multiplex`).
    ProxyMultiplex,
    /// Auth plus a Proxy with separate ports (no TLS routing advertised).
    ProxySeparate,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running cluster; the process is killed when this is dropped.
pub struct RealTeleport {
    dir: tempfile::TempDir,
    config: PathBuf,
    child: Option<Child>,
    diag: u16,
    /// `127.0.0.1:<port>` of the Auth Service.
    pub auth_addr: String,
    /// `127.0.0.1:<port>` of the Proxy's web port, when there is a Proxy.
    pub web_addr: Option<String>,
    /// The Proxy's self-signed web certificate (PEM), when there is a Proxy.
    pub web_cert_pem: Option<String>,
    /// How it was started.
    pub mode: Mode,
}

impl RealTeleport {
    /// Starts a new cluster and waits for `/readyz`.
    pub async fn start(mode: Mode) -> anyhow::Result<RealTeleport> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        if !available() {
            bail!(
                "the Teleport peers are missing in {}; build them with tests/teleport/build.sh",
                bin_dir().display()
            );
        }
        let dir = tempfile::Builder::new().prefix("tm-teleport-").tempdir()?;
        let auth_addr = format!("127.0.0.1:{}", free_port()?);
        let diag = free_port()?;
        let (web_addr, web_cert_pem) = match mode {
            Mode::AuthOnly => (None, None),
            _ => {
                let key = rcgen::KeyPair::generate()?;
                let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()])?;
                params
                    .subject_alt_names
                    .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
                let cert = params.self_signed(&key)?;
                std::fs::write(dir.path().join("web.crt"), cert.pem())?;
                std::fs::write(dir.path().join("web.key"), key.serialize_pem())?;
                (
                    Some(format!("127.0.0.1:{}", free_port()?)),
                    Some(cert.pem()),
                )
            }
        };
        let data = dir.path().join("data");
        let mut config = format!(
            "version: v3\nteleport:\n  nodename: tm-test\n  data_dir: {data}\n  log:\n    output: stderr\n    severity: INFO\n  storage:\n    type: sqlite\nauth_service:\n  enabled: true\n  listen_addr: {auth_addr}\n  cluster_name: {CLUSTER}\n  authentication:\n    type: local\n    second_factor: \"off\"\n",
            data = data.display(),
        );
        if mode != Mode::AuthOnly {
            let listener_mode = if mode == Mode::ProxyMultiplex {
                "multiplex"
            } else {
                "separate"
            };
            config.push_str(&format!("  proxy_listener_mode: {listener_mode}\n"));
        }
        config.push_str("ssh_service:\n  enabled: false\n");
        match (&web_addr, mode) {
            (None, _) => config.push_str("proxy_service:\n  enabled: false\n"),
            (Some(web), Mode::ProxySeparate) => config.push_str(&format!(
                "proxy_service:\n  enabled: true\n  web_listen_addr: {web}\n  listen_addr: 127.0.0.1:{}\n  tunnel_listen_addr: 127.0.0.1:{}\n  public_addr: {web}\n  https_keypairs:\n    - key_file: {k}\n      cert_file: {c}\n",
                free_port()?,
                free_port()?,
                k = dir.path().join("web.key").display(),
                c = dir.path().join("web.crt").display(),
            )),
            (Some(web), _) => config.push_str(&format!(
                "proxy_service:\n  enabled: true\n  web_listen_addr: {web}\n  public_addr: {web}\n  https_keypairs:\n    - key_file: {k}\n      cert_file: {c}\n",
                k = dir.path().join("web.key").display(),
                c = dir.path().join("web.crt").display(),
            )),
        }
        let config_path = dir.path().join("teleport.yaml");
        std::fs::write(&config_path, config)?;
        let mut cluster = RealTeleport {
            dir,
            config: config_path,
            child: None,
            diag,
            auth_addr,
            web_addr,
            web_cert_pem,
            mode,
        };
        cluster.spawn().await?;
        Ok(cluster)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("teleport.stdout"))?;
        let child = Command::new(bin_dir().join("tm-teleport"))
            .args(["start", "-c"])
            .arg(&self.config)
            .arg(format!("--diag-addr=127.0.0.1:{}", self.diag))
            .stdout(out.try_clone()?)
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .context("starting teleport")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = format!("http://127.0.0.1:{}/readyz", self.diag);
        loop {
            if let Ok(r) = reqwest::get(&url).await
                && r.status().is_success()
            {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("teleport exited ({status}):\n{}", self.log_tail(40));
            }
            if Instant::now() > deadline {
                bail!("teleport not ready after 60 s:\n{}", self.log_tail(40));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops the server (SIGTERM, then SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts it with the same data (an auth server restart).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn().await
    }

    /// The working directory (identity files are written here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last `n` lines of the server's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The server's whole log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("teleport.stdout")).unwrap_or_default()
    }

    /// `tctl -c <config> args…` as the local admin; stdout, or an error with stderr.
    pub fn tctl(&self, args: &[&str]) -> anyhow::Result<String> {
        self.tctl_with_input(args, None)
    }

    /// `tctl` with `stdin`.
    pub fn tctl_with_input(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
        let mut cmd = Command::new(bin_dir().join("tctl"));
        cmd.arg("-c").arg(&self.config).args(args);
        crate::control_plane::run(&mut cmd, stdin)
    }

    /// `tctl create -f` of YAML documents.
    pub fn create(&self, yaml: &str) -> anyhow::Result<()> {
        let path = self
            .dir
            .path()
            .join(format!("create-{}.yaml", uuid::Uuid::new_v4()));
        std::fs::write(&path, yaml)?;
        self.tctl(&["create", "-f", &path.display().to_string()])?;
        Ok(())
    }

    /// The seed document's setup: the plugin's role (list/read/update on access_request) and
    /// user, a role to request and a requester role, and requesters `users`.
    pub fn bootstrap(&self, requesters: &[&str]) -> anyhow::Result<()> {
        self.create(&format!(
            "kind: role\nversion: v6\nmetadata:\n  name: {PLUGIN_USER}\nspec:\n  allow:\n    rules:\n      - resources: [access_request]\n        verbs: [list, read, update]\n---\nkind: role\nversion: v6\nmetadata:\n  name: {ELEVATED_ROLE}\nspec:\n  allow:\n    logins: [root]\n---\nkind: role\nversion: v6\nmetadata:\n  name: requester\nspec:\n  allow:\n    request:\n      roles: [{ELEVATED_ROLE}]\n"
        ))?;
        self.tctl(&[
            "users",
            "add",
            PLUGIN_USER,
            &format!("--roles={PLUGIN_USER}"),
        ])?;
        for user in requesters {
            self.tctl(&["users", "add", user, "--roles=requester"])?;
        }
        Ok(())
    }

    /// `tctl auth sign --format=tls --user=<user> --out=<dir>/<name> --ttl=<ttl>`: returns the
    /// paths of `<name>.crt`, `<name>.key`, `<name>.cas`.
    pub fn sign_tls(&self, user: &str, name: &str, ttl: &str) -> anyhow::Result<[PathBuf; 3]> {
        let out = self.dir.path().join(name);
        self.tctl(&[
            "auth",
            "sign",
            "--format=tls",
            &format!("--user={user}"),
            &format!("--out={}", out.display()),
            &format!("--ttl={ttl}"),
            "--overwrite",
        ])?;
        Ok(["crt", "key", "cas"].map(|ext| out.with_extension(ext)))
    }

    /// `tctl auth sign --format=file`: the identity file's path.
    pub fn sign_file(&self, user: &str, name: &str, ttl: &str) -> anyhow::Result<PathBuf> {
        let out = self.dir.path().join(name);
        self.tctl(&[
            "auth",
            "sign",
            "--format=file",
            &format!("--user={user}"),
            &format!("--out={}", out.display()),
            &format!("--ttl={ttl}"),
            "--overwrite",
        ])?;
        Ok(out)
    }

    /// `tctl requests create <user> --roles=<ELEVATED_ROLE> --reason=<reason>`: the id.
    pub fn create_request(&self, user: &str, reason: &str) -> anyhow::Result<String> {
        let out = self.tctl(&[
            "requests",
            "create",
            user,
            &format!("--roles={ELEVATED_ROLE}"),
            &format!("--reason={reason}"),
        ])?;
        let id = out
            .trim()
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_string();
        anyhow::ensure!(id.len() == 36, "tctl requests create printed {out:?}");
        Ok(id)
    }

    /// Every request, as `tctl requests ls --format=json` prints them.
    pub fn requests(&self) -> anyhow::Result<Vec<Value>> {
        let out = self.tctl(&["requests", "ls", "--format=json"])?;
        serde_json::from_str(&out).with_context(|| format!("tctl printed {out}"))
    }

    /// A request's state name (`PENDING`, `APPROVED`, `DENIED`), from `tctl requests get`.
    pub fn state(&self, id: &str) -> anyhow::Result<String> {
        let out = self.tctl(&["requests", "get", id])?;
        out.lines()
            .find_map(|l| l.strip_prefix("Status:"))
            .map(|s| s.trim().to_string())
            .with_context(|| format!("no Status in {out}"))
    }

    /// The audit events written so far (the file log of a sqlite cluster).
    pub fn audit_events(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let dir = self.dir.path().join("data/log");
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "log") {
                    for line in std::fs::read_to_string(&path).unwrap_or_default().lines() {
                        if let Ok(v) = serde_json::from_str::<Value>(line) {
                            out.push(v);
                        }
                    }
                }
            }
        }
        out
    }
}

impl Drop for RealTeleport {
    fn drop(&mut self) {
        self.stop();
    }
}
