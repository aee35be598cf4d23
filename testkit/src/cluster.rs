//! A real control plane with the CRD installed and both doubles running: the setting of the
//! operator tests and benches.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::ObjectMeta;
use teleport_mattermost::operator::crd::MattermostAccessPlugin;
use teleport_mattermost::operator::{OperatorOptions, run};
use tokio_util::sync::CancellationToken;

use crate::control_plane::ControlPlane;
use crate::mattermost::MattermostDouble;
use crate::pki::{ClientCert, TestPki};
use crate::stack::{CHANNEL, TEAM};
use crate::teleport::TeleportDouble;

/// The namespace objects live in.
pub const NS: &str = "team-a";
/// How long waits last.
pub const WAIT: Duration = Duration::from_secs(60);

/// The running setting.
pub struct Env {
    /// The control plane.
    pub cp: ControlPlane,
    /// Admin client.
    pub client: kube::Client,
    /// CA of the Teleport double.
    pub pki: TestPki,
    /// Teleport double.
    pub teleport: TeleportDouble,
    /// Mattermost double.
    pub mattermost: MattermostDouble,
    /// Channel id of TEAM/CHANNEL.
    pub channel_id: String,
}

impl Env {
    /// Starts the control plane, installs the CRD, creates NS and starts the doubles.
    pub async fn start() -> Env {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cp = ControlPlane::start().await.expect("control plane");
        // The committed crds/ file is identical (tests/crd.rs checks the drift).
        let crd = teleport_mattermost::operator::crd::crd_yaml();
        cp.kubectl_run(&["apply", "-f", "-"], Some(&crd)).unwrap();
        cp.kubectl_run(
            &[
                "wait",
                "--for=condition=Established",
                "crd/mattermostaccessplugins.accessplugins.dev",
                "--timeout=60s",
            ],
            None,
        )
        .unwrap();
        let client = cp.client().await.unwrap();
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &Namespace {
                    metadata: ObjectMeta {
                        name: Some(NS.into()),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let pki = TestPki::new();
        let teleport = TeleportDouble::start(&pki).await;
        let mattermost = MattermostDouble::start().await;
        let channel_id = crate::stack::provision(&mattermost);
        Env {
            cp,
            client,
            pki,
            teleport,
            mattermost,
            channel_id,
        }
    }

    /// Creates or replaces a Secret in NS.
    pub async fn put_secret(&self, name: &str, data: &[(&str, &str)]) {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), NS);
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        };
        secrets
            .patch(
                name,
                &PatchParams::apply("tests").force(),
                &Patch::Apply(&secret),
            )
            .await
            .unwrap();
    }

    /// Writes the identity Secret.
    pub async fn put_identity(&self, cert: &ClientCert) {
        self.put_secret(
            "mm-teleport-identity",
            &[
                ("auth.crt", &cert.cert_pem),
                ("auth.key", &cert.key_pem),
                ("auth.cas", &cert.cas_pem),
            ],
        )
        .await;
    }

    /// Writes the identity, token and signing Secrets.
    pub async fn put_all_secrets(&self, cert: &ClientCert) {
        self.put_identity(cert).await;
        self.put_secret("mm-bot-token", &[("token", &self.mattermost.bot_token())])
            .await;
        self.put_secret(
            "mm-callback-signing",
            &[("signingSecret", "0123456789abcdef0123456789abcdef")],
        )
        .await;
    }

    /// A valid object pointing at the doubles, with buttons calling `callback`.
    pub fn cr_yaml(&self, name: &str, callback: SocketAddr) -> String {
        format!(
            r#"apiVersion: accessplugins.dev/v1alpha1
kind: MattermostAccessPlugin
metadata:
  name: {name}
  namespace: {NS}
spec:
  teleport:
    address: {teleport}
    identitySecretRef:
      name: mm-teleport-identity
  mattermost:
    url: {url}
    team: {TEAM}
    channel: {CHANNEL}
    tokenSecretRef:
      name: mm-bot-token
    rateLimit:
      perSecond: 0
      burst: 1
  callback:
    signingSecretRef:
      name: mm-callback-signing
    publicURL: http://{callback}
    allowInsecureHTTP: true
"#,
            teleport = self.teleport.address(),
            url = self.mattermost.url().as_str().trim_end_matches('/'),
        )
    }

    /// The operator `binary` as a separate process on NS, out of cluster with the admin
    /// kubeconfig, as a Deployment replica would run it.
    pub fn operator_command(
        &self,
        binary: &str,
        callback: SocketAddr,
        probe: SocketAddr,
    ) -> std::process::Command {
        let mut cmd = std::process::Command::new(binary);
        cmd.arg("operator")
            .env("KUBECONFIG", &self.cp.kubeconfig)
            .env("WATCH_NAMESPACES", NS)
            .env("CALLBACK_ADDR", callback.to_string())
            .env("PROBE_ADDR", probe.to_string())
            .env("POD_NAMESPACE", NS)
            .env("LOG_LEVEL", "warn")
            .stdout(std::process::Stdio::null());
        cmd
    }

    /// `kubectl apply -f -`.
    pub fn apply(&self, yaml: &str) -> anyhow::Result<String> {
        self.cp.kubectl_run(&["apply", "-f", "-"], Some(yaml))
    }

    /// The objects in NS.
    pub fn crs(&self) -> Api<MattermostAccessPlugin> {
        Api::namespaced(self.client.clone(), NS)
    }

    /// Waits until condition `type_` of object `name` has `status`; returns the object.
    pub async fn wait_condition(
        &self,
        name: &str,
        type_: &str,
        status: &str,
    ) -> MattermostAccessPlugin {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(Some(cr)) = self.crs().get_opt(name).await {
                let found = cr.status.as_ref().and_then(|s| s.condition(type_));
                if found.is_some_and(|c| c.status == status) {
                    return cr;
                }
                if tokio::time::Instant::now() > deadline {
                    panic!(
                        "{name}: {type_} never became {status}; status: {:#?}",
                        cr.status
                    );
                }
            } else if tokio::time::Instant::now() > deadline {
                panic!("{name} does not exist");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Root posts for a request.
    pub fn posts_for(&self, id: &str) -> usize {
        self.mattermost
            .posts()
            .iter()
            .filter(|p| {
                p.root_id.is_empty()
                    && p.props.get("teleport_request_id").and_then(|v| v.as_str()) == Some(id)
            })
            .count()
    }

    /// Waits for a request's post.
    pub async fn wait_posted(&self, id: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.posts_for(id) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "request {id} never posted"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Env {
    /// Waits until the request's first post is recorded in plugin data (a moment after it
    /// exists in Mattermost); returns its post id.
    pub async fn recorded_post(&self, id: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(m) = self.teleport.decoded_plugin_data(id).messages.first() {
                return m.post_id.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "post of {id} never recorded"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A free loopback address.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The operator running in this process.
pub struct Operator {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// Its callback server.
    pub callback: SocketAddr,
}

impl Operator {
    /// Starts the operator on NS with the admin client.
    pub async fn start(env: &Env) -> Operator {
        Self::start_as(env.client.clone()).await
    }

    /// Starts the operator on NS with `client` (e.g. a ServiceAccount's).
    pub async fn start_as(client: kube::Client) -> Operator {
        let callback = free_addr();
        let options = OperatorOptions {
            namespaces: vec![NS.into()],
            callback_addr: callback,
            probe_addr: free_addr(),
            leader_election: false,
            lease_name: "teleport-mattermost".into(),
            lease_namespace: NS.into(),
            identity: "test".into(),
            init_timeout: Duration::from_secs(5),
            drain: Duration::ZERO,
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(options, client, stop.clone()));
        Operator {
            stop,
            task,
            callback,
        }
    }

    /// Stops it gracefully.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(15), self.task).await;
    }
}
