//! A real Kubernetes control plane for tests (tier 3): etcd and kube-apiserver built from pinned
//! Go modules by `tests/control-plane/build.sh`, started on 127.0.0.1 with throwaway certificates
//! and a `system:masters` client certificate, the way controller-runtime's envtest does.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// Where `tests/control-plane/build.sh` caches binaries.
pub fn peers_bin_dir() -> PathBuf {
    let cache = std::env::var_os("TM_PEERS_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
                })
                .join("teleport-mattermost/peers")
        });
    cache.join("bin")
}

/// The path of a cached peer binary, or an error saying how to build it.
pub fn peer_binary(name: &str) -> anyhow::Result<PathBuf> {
    let path = peers_bin_dir().join(name);
    if path.exists() {
        Ok(path)
    } else {
        bail!(
            "{} is missing; build the test peers first with tests/control-plane/build.sh (CI does this)",
            path.display()
        )
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running etcd + kube-apiserver; both are killed when this is dropped.
pub struct ControlPlane {
    /// Admin kubeconfig (`system:masters`).
    pub kubeconfig: PathBuf,
    /// `https://127.0.0.1:PORT`.
    pub server: String,
    /// Where the peer binaries are.
    pub bin_dir: PathBuf,
    /// PEM of the CA that signed the serving certificate.
    pub ca_pem: String,
    dir: tempfile::TempDir,
    children: Vec<Child>,
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver and waits for `/readyz`.
    ///
    /// Ports are picked free and then handed to the children, so another process may take one
    /// in between (tests run in parallel, and outgoing connections draw from the same range).
    /// A start whose child lost its port that way is thrown away and tried again on new ports.
    pub async fn start() -> anyhow::Result<ControlPlane> {
        const ATTEMPTS: u32 = 3;
        for attempt in 1.. {
            match Self::start_once().await {
                Err(e)
                    if attempt < ATTEMPTS
                        && format!("{e:#}").contains("address already in use") =>
                {
                    eprintln!(
                        "[control-plane] a port was taken before etcd or kube-apiserver bound it; starting again"
                    );
                }
                result => return result,
            }
        }
        unreachable!("the last attempt returns")
    }

    async fn start_once() -> anyhow::Result<ControlPlane> {
        let bin_dir = peers_bin_dir();
        let etcd_bin = peer_binary("etcd")?;
        let apiserver_bin = peer_binary("kube-apiserver")?;
        peer_binary("kubectl")?;
        let dir = tempfile::Builder::new()
            .prefix("tm-control-plane-")
            .tempdir()?;
        let root = dir.path().to_path_buf();

        let certs = Certs::write(&root)?;
        let mut plane = ControlPlane {
            kubeconfig: root.join("admin.kubeconfig"),
            server: String::new(),
            bin_dir,
            ca_pem: certs.ca_pem.clone(),
            dir,
            children: Vec::new(),
        };

        let etcd_port = free_port()?;
        let etcd_peer_port = free_port()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let log = std::fs::File::create(root.join("etcd.log"))?;
        plane.children.push(
            Command::new(&etcd_bin)
                .args([
                    "--data-dir",
                    &root.join("etcd").display().to_string(),
                    "--listen-client-urls",
                    &etcd_url,
                    "--advertise-client-urls",
                    &etcd_url,
                    "--listen-peer-urls",
                    &format!("http://127.0.0.1:{etcd_peer_port}"),
                    "--initial-advertise-peer-urls",
                    &format!("http://127.0.0.1:{etcd_peer_port}"),
                    "--initial-cluster",
                    &format!("default=http://127.0.0.1:{etcd_peer_port}"),
                    "--unsafe-no-fsync",
                    "--log-level",
                    "warn",
                ])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .context("starting etcd")?,
        );

        let port = free_port()?;
        plane.server = format!("https://127.0.0.1:{port}");
        let p = |name: &str| root.join(name).display().to_string();
        let log = std::fs::File::create(root.join("kube-apiserver.log"))?;
        plane.children.push(
            Command::new(&apiserver_bin)
                .args([
                    &format!("--etcd-servers={etcd_url}"),
                    "--bind-address=127.0.0.1",
                    "--advertise-address=127.0.0.1",
                    &format!("--secure-port={port}"),
                    &format!("--cert-dir={}", p("apiserver-certs")),
                    &format!("--tls-cert-file={}", p("serving.crt")),
                    &format!("--tls-private-key-file={}", p("serving.key")),
                    &format!("--client-ca-file={}", p("ca.crt")),
                    &format!("--service-account-key-file={}", p("sa.pub")),
                    &format!("--service-account-signing-key-file={}", p("sa.key")),
                    "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                    "--service-cluster-ip-range=10.96.0.0/24",
                    "--authorization-mode=RBAC",
                    "--allow-privileged=true",
                    "--enable-priority-and-fairness=false",
                    // No kubernetes Service endpoints for a loopback apiserver (as envtest).
                    "--endpoint-reconciler-type=none",
                    "--disable-admission-plugins=ServiceAccount",
                    "--v=1",
                ])
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("starting kube-apiserver")?,
        );

        plane.write_kubeconfig(
            &plane.kubeconfig.clone(),
            &certs.admin_cert,
            &certs.admin_key,
        )?;
        plane.wait_ready(Duration::from_secs(90)).await?;
        Ok(plane)
    }

    fn write_kubeconfig(&self, path: &Path, cert: &str, key: &str) -> anyhow::Result<()> {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n    certificate-authority-data: {}\nusers:\n- name: admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: admin\ncurrent-context: test\n",
            self.server,
            b64(&self.ca_pem),
            b64(cert),
            b64(key)
        );
        std::fs::write(path, text)?;
        Ok(())
    }

    /// Writes a kubeconfig that authenticates with a bearer token (a ServiceAccount's).
    pub fn kubeconfig_for_token(&self, name: &str, token: &str) -> anyhow::Result<PathBuf> {
        use base64::Engine as _;
        let path = self.dir.path().join(format!("{name}.kubeconfig"));
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n    certificate-authority-data: {}\nusers:\n- name: {name}\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: {name}\ncurrent-context: test\n",
            self.server,
            base64::engine::general_purpose::STANDARD.encode(&self.ca_pem),
        );
        std::fs::write(&path, text)?;
        Ok(path)
    }

    async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            for (child, name) in self.children.iter_mut().zip(["etcd", "kube-apiserver"]) {
                if let Some(status) = child.try_wait()? {
                    bail!("{name} exited early ({status}); logs:\n{}", self.logs());
                }
            }
            let out = self.kubectl().args(["get", "--raw", "/readyz"]).output()?;
            if out.status.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "kube-apiserver not ready after {timeout:?}; logs:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// The tail of etcd's and kube-apiserver's logs, for failure messages.
    pub fn logs(&self) -> String {
        ["etcd.log", "kube-apiserver.log"]
            .iter()
            .map(|f| {
                let text = std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
                // Skip the flag dump kube-apiserver prints at -v=1; the reason comes after it.
                let tail: Vec<&str> = text
                    .lines()
                    .filter(|l| {
                        !l.contains("flags.go") && !l.starts_with('I') && !l.starts_with('W')
                    })
                    .rev()
                    .take(30)
                    .collect();
                format!(
                    "--- {f}\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `kubectl` with the admin kubeconfig.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(self.bin_dir.join("kubectl"));
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        cmd
    }

    /// `helm` with the admin kubeconfig.
    pub fn helm(&self) -> Command {
        let mut cmd = Command::new(self.bin_dir.join("helm"));
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        // Keep helm's cache and config inside the throwaway directory.
        let home = self.dir.path().join("helm-home");
        cmd.env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"));
        cmd
    }

    /// A directory holding `kubectl` and `helm` commands bound to this control plane (the
    /// admin kubeconfig, helm's homes in the throwaway directory), for running documented
    /// commands exactly as written with it first on `PATH`.
    pub fn user_path(&self) -> anyhow::Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = self.dir.path().join("user-bin");
        std::fs::create_dir_all(&dir)?;
        let home = self.dir.path().join("helm-home");
        let wrappers = [
            (
                "kubectl",
                format!(
                    "exec {} --kubeconfig {} \"$@\"\n",
                    self.bin_dir.join("kubectl").display(),
                    self.kubeconfig.display()
                ),
            ),
            (
                "helm",
                format!(
                    "export HELM_CACHE_HOME={h}/cache HELM_CONFIG_HOME={h}/config HELM_DATA_HOME={h}/data\nexec {} --kubeconfig {} \"$@\"\n",
                    self.bin_dir.join("helm").display(),
                    self.kubeconfig.display(),
                    h = home.display(),
                ),
            ),
        ];
        for (name, body) in wrappers {
            let path = dir.join(name);
            std::fs::write(&path, format!("#!/usr/bin/env bash\n{body}"))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        }
        Ok(dir)
    }

    /// Runs kubectl with `args`, feeding `stdin`; returns stdout or an error with stderr.
    pub fn kubectl_run(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
        run(self.kubectl().args(args), stdin)
    }

    /// A kube client with admin rights.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        client_from(&self.kubeconfig).await
    }
}

/// A kube client from a kubeconfig file.
pub async fn client_from(path: &Path) -> anyhow::Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

/// Runs a command, feeding `stdin`; returns stdout, or an error with the command and its stderr.
pub fn run(cmd: &mut Command, stdin: Option<&str>) -> anyhow::Result<String> {
    use std::io::Write as _;
    let described = format!("{cmd:?}");
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {described}"))?;
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{described} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Stop the apiserver before etcd, as a cluster shuts down.
        for child in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The throwaway PKI: a CA, the serving certificate, an admin client and a ServiceAccount key.
struct Certs {
    ca_pem: String,
    admin_cert: String,
    admin_key: String,
}

impl Certs {
    fn write(dir: &Path) -> anyhow::Result<Certs> {
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name = DistinguishedName::new();
        ca.distinguished_name
            .push(DnType::CommonName, "teleport-mattermost test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);

        let serving_key = KeyPair::generate()?;
        let mut serving = CertificateParams::new(vec!["localhost".into()])?;
        serving
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse()?));
        serving
            .subject_alt_names
            .push(SanType::IpAddress("10.96.0.1".parse()?));
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_cert = serving.signed_by(&serving_key, &issuer)?;

        let admin_key = KeyPair::generate()?;
        let mut admin = CertificateParams::default();
        admin.distinguished_name = DistinguishedName::new();
        admin.distinguished_name.push(DnType::CommonName, "admin");
        admin
            .distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_cert = admin.signed_by(&admin_key, &issuer)?;

        let sa_key = KeyPair::generate()?;

        std::fs::write(dir.join("ca.crt"), ca_cert.pem())?;
        std::fs::write(dir.join("serving.crt"), serving_cert.pem())?;
        std::fs::write(dir.join("serving.key"), serving_key.serialize_pem())?;
        std::fs::write(dir.join("sa.key"), sa_key.serialize_pem())?;
        std::fs::write(dir.join("sa.pub"), sa_key.public_key_pem())?;
        Ok(Certs {
            ca_pem: ca_cert.pem(),
            admin_cert: admin_cert.pem(),
            admin_key: admin_key.serialize_pem(),
        })
    }
}

/// Minimal stand-ins for the Prometheus Operator's ServiceMonitor and PrometheusRule CRDs, so
/// the chart's serviceMonitor and prometheusRule values can be applied, as in a cluster that
/// runs the Prometheus Operator.
pub const PROMETHEUS_OPERATOR_CRDS: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicemonitors.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  names: {kind: ServiceMonitor, plural: servicemonitors, singular: servicemonitor, listKind: ServiceMonitorList}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: prometheusrules.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  names: {kind: PrometheusRule, plural: prometheusrules, singular: prometheusrule, listKind: PrometheusRuleList}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
"#;
