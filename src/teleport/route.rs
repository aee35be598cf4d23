//! How the plugin reaches the Auth Service: directly, or through a Teleport Proxy.
//!
//! - **Direct** (an Auth address, `:3025`): mutual TLS, SNI `teleport.cluster.local`, ALPN `h2`.
//! - **TLS routing** (a Proxy address, `:443`/`:3080`, Teleport Cloud): the same mutual TLS,
//!   but ALPN `["teleport-auth@<hex cluster>.teleport.cluster.local", "h2"]`. The Proxy's ALPN
//!   router forwards the stream, still encrypted, to an Auth server of that cluster, so gRPC
//!   runs end to end with Auth (CONTRACTS §4; `api/client` `ConfigureALPN`).
//! - **Connection upgrade** (a Proxy behind an L7 load balancer that terminates TLS and drops
//!   ALPN): the TLS-routing handshake inside the Proxy's WebSocket upgrade (v15.1+), or inside
//!   its legacy upgrade when the Proxy refuses WebSocket (v13 to v15.0); see [`super::upgrade`].
//!
//! [`Router::resolve`] works out which from the address (or takes the configured mode): it asks
//! `GET /webapi/find`, which only a Proxy answers with its cluster name and whether TLS routing
//! is on, then makes a test handshake with the `teleport-reversetunnel` protocol, which a
//! Proxy negotiates itself and an ALPN-stripping balancer does not (Teleport's `api/client`
//! decides the same way).
//!
//! The Proxy's own web certificate is checked against the system's roots plus an optional CA
//! bundle (a self-hosted Proxy with a private CA); Auth's certificate is always checked against
//! the cluster's host CAs from the identity.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};

use super::client::SERVER_NAME;
use super::handshake::FirstWord;
use super::identity::Identity;
use super::upgrade::{self, UpgradeError, UpgradeKind};
use crate::settings::CaBundle;

/// How to reach Teleport, as configured (`teleport.connection`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConnectionMode {
    /// Work it out from the address.
    #[default]
    Auto,
    /// The address is an Auth Service.
    Auth,
    /// The address is a Proxy (TLS routing, or its connection upgrade).
    Proxy,
}

impl ConnectionMode {
    /// Parses `auto`, `auth` or `proxy`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Some(Self::Auto),
            "auth" => Some(Self::Auth),
            "proxy" => Some(Self::Proxy),
            _ => None,
        }
    }
}

/// The path in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Mutual TLS to the Auth Service.
    Direct {
        /// The Auth Service's address.
        address: String,
    },
    /// Through the Proxy, by ALPN (TLS routing).
    TlsRouting {
        /// The Proxy's address.
        proxy: String,
        /// The cluster asked for.
        cluster: String,
    },
    /// TLS routing inside the Proxy's connection upgrade (an L7 balancer in front of it
    /// drops ALPN).
    Upgrade {
        /// The Proxy's (the balancer's) address.
        proxy: String,
        /// The cluster asked for.
        cluster: String,
        /// Which upgrade the Proxy took.
        kind: UpgradeKind,
    },
}

impl Route {
    /// True for the direct connection to Auth.
    pub fn is_direct(&self) -> bool {
        matches!(self, Self::Direct { .. })
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Route::Direct { address } => write!(f, "directly to the Auth Service at {address}"),
            Route::TlsRouting { proxy, cluster } => {
                write!(
                    f,
                    "through the Proxy at {proxy} by TLS routing (cluster {cluster})"
                )
            }
            Route::Upgrade {
                proxy,
                cluster,
                kind: UpgradeKind::WebSocket,
            } => write!(
                f,
                "through the Proxy at {proxy} by TLS routing inside a WebSocket connection upgrade (a load balancer in front strips ALPN; cluster {cluster})"
            ),
            Route::Upgrade {
                proxy,
                cluster,
                kind: UpgradeKind::Legacy,
            } => write!(
                f,
                "through the Proxy at {proxy} by TLS routing inside a legacy (Upgrade: alpn) connection upgrade, as the Proxy refused the WebSocket one; Teleport 19 drops the legacy upgrade, so upgrade the Proxy to 15.1 or later (a load balancer in front strips ALPN; cluster {cluster})"
            ),
        }
    }
}

/// The ALPN protocol that asks a Proxy for the Auth Service of `cluster`: Teleport's
/// `teleport-auth@` prefix, the cluster name hex-encoded, and `.teleport.cluster.local`
/// (`api/utils.EncodeClusterName`).
pub fn auth_alpn(cluster: &str) -> String {
    format!(
        "teleport-auth@{}.{SERVER_NAME}",
        hex::encode(cluster.as_bytes())
    )
}

/// What a Proxy's `GET /webapi/find` says (the fields used).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ProxyFind {
    /// The cluster's name.
    pub cluster_name: String,
    /// Teleport's version.
    #[serde(default)]
    pub server_version: String,
    /// The oldest client version the cluster accepts (v13+). The plugin sends no `version`
    /// gRPC metadata, so Auth's check (`lib/auth/middleware.go`) does not apply to it; logged
    /// for the admin only.
    #[serde(default)]
    pub min_client_version: String,
    /// `oss`, `ent` or `community` (newer Proxies); logged only.
    #[serde(default)]
    pub edition: String,
    /// Proxy settings.
    #[serde(default)]
    pub proxy: ProxySettings,
}

/// `proxy` of `/webapi/find`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct ProxySettings {
    /// One port, routed by ALPN.
    #[serde(default)]
    pub tls_routing_enabled: bool,
}

/// Why no route was found.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RouteError {
    /// A Proxy in separate-ports mode: reachable only through its SSH reverse tunnel.
    #[error(
        "{address} is a Teleport Proxy without TLS routing (separate ports mode): the plugin reaches Auth through a Proxy only by TLS routing. Point the plugin at the Auth Service (port 3025) instead, turn on TLS routing (proxy_listener_mode: multiplex), or set the connection to \"proxy\" to try TLS routing anyway"
    )]
    NoTlsRouting {
        /// The configured address.
        address: String,
    },
    /// The identity is from another cluster than the Proxy's.
    #[error(
        "the Proxy at {address} serves cluster {proxy_cluster:?}, but the identity was issued by cluster {identity_cluster:?}; sign the plugin's identity on that cluster, or use that cluster's Proxy"
    )]
    WrongCluster {
        /// The configured address.
        address: String,
        /// What `/webapi/find` said.
        proxy_cluster: String,
        /// The identity's cluster.
        identity_cluster: String,
    },
    /// `connection: proxy`, but the address does not answer as a Proxy.
    #[error(
        "{address} does not answer as a Teleport Proxy (GET /webapi/find: {detail}); check the address, or set the connection to \"auth\" for an Auth Service address"
    )]
    NotAProxy {
        /// The configured address.
        address: String,
        /// What went wrong.
        detail: String,
    },
    /// The identity carries no cluster name (not a Teleport certificate?).
    #[error(
        "the identity's certificate names no Teleport cluster, which TLS routing through the Proxy needs; sign it with tctl auth sign or tbot"
    )]
    NoClusterName,
    /// The connection upgrade failed.
    #[error(
        "a load balancer in front of the Proxy at {address} strips ALPN, and the Proxy's connection upgrade failed: {source}; let the balancer pass TLS through (TCP mode), or point the plugin at the Auth Service"
    )]
    UpgradeFailed {
        /// The configured address.
        address: String,
        /// What went wrong.
        source: Arc<UpgradeError>,
    },
}

/// Any bidirectional byte stream the gRPC channel can run on.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A resolved way to reach Auth, able to dial it again (reconnects, HTTP/2 re-dials).
#[derive(Clone)]
pub struct Router {
    address: String,
    route: Route,
    auth_tls: Arc<rustls::ClientConfig>,
    /// For the upgrades: the Proxy's public side.
    web: Option<Web>,
    /// What `/webapi/find` said, when the address is a Proxy.
    find: Option<ProxyFind>,
}

/// The Proxy's public side, for the connection upgrades.
#[derive(Clone)]
struct Web {
    /// HTTP/1.1 client (`/webapi/find`, the legacy upgrade).
    client: reqwest::Client,
    /// TLS for the WebSocket upgrade (ALPN `http/1.1`).
    tls: Arc<rustls::ClientConfig>,
    /// The Proxy took the legacy upgrade last time (it refused WebSocket): try that first.
    legacy_first: Arc<AtomicBool>,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("address", &self.address)
            .field("route", &self.route())
            .finish_non_exhaustive()
    }
}

const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(10);

impl Router {
    /// Works out how to reach Auth at `address` for `identity`.
    pub async fn resolve(
        address: &str,
        identity: &Identity,
        mode: ConnectionMode,
        web_ca: Option<&CaBundle>,
    ) -> Result<Router, super::client::TeleportError> {
        let invalid = |detail: String| super::client::TeleportError::InvalidAddress {
            address: address.to_owned(),
            detail,
        };
        let route_error = |e: RouteError| super::client::TeleportError::Route {
            address: address.to_owned(),
            source: e,
        };
        let direct = || -> Result<Router, super::client::TeleportError> {
            let route = Route::Direct {
                address: address.to_owned(),
            };
            Ok(Router {
                address: address.to_owned(),
                auth_tls: auth_tls(identity, &route).map_err(invalid)?,
                route,
                web: None,
                find: None,
            })
        };
        if mode == ConnectionMode::Auth {
            return direct();
        }
        let client = web_client(web_ca).map_err(invalid)?;
        let found = find(&client, address).await;
        let find = match (found, mode) {
            (Ok(find), _) => find,
            (Err(_), ConnectionMode::Auto) => return direct(),
            (Err(detail), _) => {
                return Err(route_error(RouteError::NotAProxy {
                    address: address.to_owned(),
                    detail,
                }));
            }
        };
        tracing::info!(
            proxy = %address,
            cluster = %find.cluster_name,
            version = %find.server_version,
            min_client_version = %find.min_client_version,
            edition = %find.edition,
            tls_routing = find.proxy.tls_routing_enabled,
            "found a Teleport Proxy (the plugin sends no client version, so min_client_version does not apply to it)"
        );
        let cluster = identity
            .cluster_name()
            .ok_or(route_error(RouteError::NoClusterName))?;
        if find.cluster_name != cluster {
            return Err(route_error(RouteError::WrongCluster {
                address: address.to_owned(),
                proxy_cluster: find.cluster_name,
                identity_cluster: cluster,
            }));
        }
        if !find.proxy.tls_routing_enabled && mode == ConnectionMode::Auto {
            return Err(route_error(RouteError::NoTlsRouting {
                address: address.to_owned(),
            }));
        }
        let tls = upgrade::web_tls(web_ca, &[b"http/1.1"])
            .ok_or_else(|| invalid("cannot load the platform's TLS roots".into()))?;
        let proxy = address.to_owned();
        let route = if upgrade::probe(address, web_ca, DISCOVERY_TIMEOUT)
            .await
            .unwrap_or(false)
        {
            Route::Upgrade {
                proxy,
                cluster,
                kind: UpgradeKind::WebSocket,
            }
        } else {
            Route::TlsRouting { proxy, cluster }
        };
        Ok(Router {
            address: address.to_owned(),
            auth_tls: auth_tls(identity, &route).map_err(invalid)?,
            route,
            web: Some(Web {
                client,
                tls,
                legacy_first: Arc::default(),
            }),
            find: Some(find),
        })
    }

    /// The path this router takes (for an upgrade, the one that worked last).
    pub fn route(&self) -> Route {
        match (&self.route, &self.web) {
            (Route::Upgrade { proxy, cluster, .. }, Some(web)) => Route::Upgrade {
                proxy: proxy.clone(),
                cluster: cluster.clone(),
                kind: if web.legacy_first.load(Ordering::Relaxed) {
                    UpgradeKind::Legacy
                } else {
                    UpgradeKind::WebSocket
                },
            },
            (route, _) => route.clone(),
        }
    }

    /// What the Proxy's `/webapi/find` said, when the address is a Proxy.
    pub fn proxy_find(&self) -> Option<&ProxyFind> {
        self.find.as_ref()
    }

    /// Opens a connection to Auth (TLS done, `h2` negotiated); an end before Auth's first
    /// byte is reported as [`super::handshake::SilentClose`] (a refused identity).
    pub async fn dial(&self) -> io::Result<Pin<Box<dyn Io>>> {
        let connector = tokio_rustls::TlsConnector::from(self.auth_tls.clone());
        let name = ServerName::try_from(SERVER_NAME).expect("a valid DNS name");
        let tls: Pin<Box<dyn Io>> = match (&self.route, &self.web) {
            (Route::Upgrade { .. }, Some(web)) => {
                let tunnel = self.upgrade(web).await.map_err(|e| {
                    io::Error::other(RouteError::UpgradeFailed {
                        address: self.address.clone(),
                        source: Arc::new(e),
                    })
                })?;
                Box::pin(FirstWord::new(connector.connect(name, tunnel).await?))
            }
            _ => {
                let tcp = tokio::net::TcpStream::connect(&self.address).await?;
                tcp.set_nodelay(true)?;
                Box::pin(FirstWord::new(connector.connect(name, tcp).await?))
            }
        };
        Ok(tls)
    }

    /// The connection upgrade: the one that worked last (WebSocket at first), then, when the
    /// Proxy refuses it, the other.
    async fn upgrade(&self, web: &Web) -> Result<Pin<Box<dyn Io>>, UpgradeError> {
        let first = if web.legacy_first.load(Ordering::Relaxed) {
            UpgradeKind::Legacy
        } else {
            UpgradeKind::WebSocket
        };
        let open = |kind| async move {
            match kind {
                UpgradeKind::WebSocket => upgrade::websocket(&self.address, web.tls.clone()).await,
                UpgradeKind::Legacy => upgrade::legacy(&web.client, &self.address).await,
            }
        };
        let refusal = match open(first).await {
            Ok(tunnel) => return Ok(tunnel),
            Err(e) if e.is_refused() => e,
            Err(e) => return Err(e),
        };
        let second = first.other();
        match open(second).await {
            Ok(tunnel) => {
                tracing::info!(proxy = %self.address, upgrade = %second, refused = %refusal, "the Proxy refused the {first} connection upgrade; using the {second} one");
                web.legacy_first
                    .store(second == UpgradeKind::Legacy, Ordering::Relaxed);
                Ok(tunnel)
            }
            Err(e) if e.is_refused() => {
                let (websocket, legacy) = match first {
                    UpgradeKind::WebSocket => (refusal, e),
                    UpgradeKind::Legacy => (e, refusal),
                };
                Err(UpgradeError::BothRefused {
                    websocket: Box::new(websocket),
                    legacy: Box::new(legacy),
                })
            }
            Err(e) => Err(e),
        }
    }
}

/// The mutual TLS to Auth: the identity's certificate, the cluster's host CAs, and the ALPN
/// the route needs.
fn auth_tls(identity: &Identity, route: &Route) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(identity.cas_pem().as_bytes()) {
        roots
            .add(ca.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let chain = vec![identity.cert_der().clone()];
    let key =
        PrivateKeyDer::from_pem_slice(identity.key_pem().as_bytes()).map_err(|e| e.to_string())?;
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = match route {
        Route::Direct { .. } => vec![b"h2".to_vec()],
        Route::TlsRouting { cluster, .. } | Route::Upgrade { cluster, .. } => {
            vec![auth_alpn(cluster).into_bytes(), b"h2".to_vec()]
        }
    };
    Ok(Arc::new(config))
}

/// An HTTP/1.1 client for the Proxy's public side: the system's roots plus `web_ca`.
fn web_client(web_ca: Option<&CaBundle>) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .http1_only()
        .connect_timeout(DISCOVERY_TIMEOUT)
        .timeout(DISCOVERY_TIMEOUT)
        .user_agent(concat!("teleport-mattermost/", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = web_ca {
        let certs = reqwest::Certificate::from_pem_bundle(ca.pem()).map_err(|e| e.to_string())?;
        builder = builder.tls_certs_merge(certs);
    }
    builder.build().map_err(|e| e.to_string())
}

/// `GET https://<address>/webapi/find`: `Err` when the address does not answer as a Proxy.
async fn find(web: &reqwest::Client, address: &str) -> Result<ProxyFind, String> {
    let response = web
        .get(format!("https://{address}/webapi/find"))
        .send()
        .await
        .map_err(|e| crate::error_chain(Some(&e)))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("answered {status}"));
    }
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    if body.len() > 1024 * 1024 {
        return Err("answered with more than 1 MiB".into());
    }
    serde_json::from_slice(&body).map_err(|e| format!("not a Proxy's answer: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_auth_alpn_encodes_the_cluster_name_in_hex() {
        // The example of CONTRACTS §4, and the cluster of tier 5.
        assert_eq!(
            auth_alpn("example.com"),
            "teleport-auth@6578616d706c652e636f6d.teleport.cluster.local"
        );
        assert_eq!(
            auth_alpn("tm.test"),
            "teleport-auth@746d2e74657374.teleport.cluster.local"
        );
    }

    #[test]
    fn the_connection_modes_parse() {
        assert_eq!(ConnectionMode::parse("Proxy"), Some(ConnectionMode::Proxy));
        assert_eq!(ConnectionMode::parse("auth"), Some(ConnectionMode::Auth));
        assert_eq!(ConnectionMode::parse(""), Some(ConnectionMode::Auto));
        assert_eq!(ConnectionMode::parse("tunnel"), None);
    }

    #[test]
    fn a_find_answer_parses_with_only_the_fields_used() {
        let find: ProxyFind = serde_json::from_str(
            r#"{"auth":{"type":""},"proxy":{"kube":{"enabled":true},"tls_routing_enabled":true},"server_version":"13.3.8","min_client_version":"12.0.0","cluster_name":"tm.test"}"#,
        )
        .unwrap();
        assert_eq!(find.cluster_name, "tm.test");
        assert!(find.proxy.tls_routing_enabled);
        assert_eq!(find.min_client_version, "12.0.0");
        assert_eq!(find.edition, "");
        let newer: ProxyFind = serde_json::from_str(
            r#"{"proxy":{"tls_routing_enabled":true},"server_version":"18.2.1","min_client_version":"17.0.0-aa","cluster_name":"tenant.teleport.sh","edition":"ent","fips":false}"#,
        )
        .unwrap();
        assert_eq!(newer.edition, "ent");
        assert_eq!(newer.min_client_version, "17.0.0-aa");
    }

    #[test]
    fn the_route_says_which_path_and_which_upgrade() {
        let upgrade = |kind| Route::Upgrade {
            proxy: "lb.example.com:443".into(),
            cluster: "example.com".into(),
            kind,
        };
        assert_eq!(
            upgrade(UpgradeKind::WebSocket).to_string(),
            "through the Proxy at lb.example.com:443 by TLS routing inside a WebSocket connection upgrade (a load balancer in front strips ALPN; cluster example.com)"
        );
        let legacy = upgrade(UpgradeKind::Legacy).to_string();
        assert!(
            legacy.contains("inside a legacy (Upgrade: alpn) connection upgrade"),
            "{legacy}"
        );
        assert!(legacy.contains("Teleport 19"), "{legacy}");
        assert_eq!(
            Route::TlsRouting {
                proxy: "tenant.teleport.sh:443".into(),
                cluster: "tenant.teleport.sh".into()
            }
            .to_string(),
            "through the Proxy at tenant.teleport.sh:443 by TLS routing (cluster tenant.teleport.sh)"
        );
        assert_eq!(
            Route::Direct {
                address: "auth:3025".into()
            }
            .to_string(),
            "directly to the Auth Service at auth:3025"
        );
    }
}
