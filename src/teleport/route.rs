//! How the plugin reaches the Auth Service: directly, or through a Teleport Proxy.
//!
//! - **Direct** (an Auth address, `:3025`): mutual TLS, SNI `teleport.cluster.local`, ALPN `h2`.
//! - **TLS routing** (a Proxy address, `:443`/`:3080`, Teleport Cloud): the same mutual TLS,
//!   but ALPN `["teleport-auth@<hex cluster>.teleport.cluster.local", "h2"]`. The Proxy's ALPN
//!   router forwards the stream, still encrypted, to an Auth server of that cluster, so gRPC
//!   runs end to end with Auth (CONTRACTS §4).
//! - **Connection upgrade** (a Proxy behind an L7 load balancer that terminates TLS and drops
//!   ALPN): a normal HTTPS request `GET /webapi/connectionupgrade` with `Upgrade: alpn`, and
//!   after `101 Switching Protocols` the TLS-routing handshake inside that connection.
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
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};

use super::client::SERVER_NAME;
use super::identity::Identity;
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
    Direct,
    /// Through the Proxy, by ALPN (TLS routing).
    TlsRouting {
        /// The cluster asked for.
        cluster: String,
    },
    /// Through the Proxy's connection upgrade (an L7 balancer in front of it drops ALPN).
    Upgrade {
        /// The cluster asked for.
        cluster: String,
    },
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Route::Direct => f.write_str("directly to the Auth Service"),
            Route::TlsRouting { cluster } => {
                write!(f, "through the Proxy (TLS routing to cluster {cluster})")
            }
            Route::Upgrade { cluster } => write!(
                f,
                "through the Proxy's connection upgrade (a load balancer strips ALPN; cluster {cluster})"
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
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
    /// The connection upgrade was refused.
    #[error(
        "a load balancer in front of the Proxy at {address} strips ALPN, and the Proxy's connection upgrade failed ({detail}); let the balancer pass TLS through (TCP mode), or point the plugin at the Auth Service"
    )]
    UpgradeFailed {
        /// The configured address.
        address: String,
        /// What went wrong.
        detail: String,
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
    /// For the upgrade: a client for the Proxy's public side.
    web: Option<reqwest::Client>,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("address", &self.address)
            .field("route", &self.route)
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
        let direct = |route| -> Result<Router, super::client::TeleportError> {
            Ok(Router {
                address: address.to_owned(),
                auth_tls: auth_tls(identity, &route).map_err(invalid)?,
                route,
                web: None,
            })
        };
        if mode == ConnectionMode::Auth {
            return direct(Route::Direct);
        }
        let web = web_client(identity, web_ca).map_err(invalid)?;
        let found = find(&web, address).await;
        let find = match (found, mode) {
            (Ok(find), _) => find,
            (Err(_), ConnectionMode::Auto) => return direct(Route::Direct),
            (Err(detail), _) => {
                return Err(route_error(RouteError::NotAProxy {
                    address: address.to_owned(),
                    detail,
                }));
            }
        };
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
        let route = if upgrade_required(address, web_ca, identity).await {
            Route::Upgrade { cluster }
        } else {
            Route::TlsRouting { cluster }
        };
        Ok(Router {
            address: address.to_owned(),
            auth_tls: auth_tls(identity, &route).map_err(invalid)?,
            route,
            web: Some(web),
        })
    }

    /// The path this router takes.
    pub fn route(&self) -> &Route {
        &self.route
    }

    /// Opens a connection to Auth (TLS done, `h2` negotiated).
    pub async fn dial(&self) -> io::Result<Pin<Box<dyn Io>>> {
        let connector = tokio_rustls::TlsConnector::from(self.auth_tls.clone());
        let name = ServerName::try_from(SERVER_NAME).expect("a valid DNS name");
        let tls: Pin<Box<dyn Io>> = match &self.route {
            Route::Direct | Route::TlsRouting { .. } => {
                let tcp = tokio::net::TcpStream::connect(&self.address).await?;
                tcp.set_nodelay(true)?;
                Box::pin(connector.connect(name, tcp).await?)
            }
            Route::Upgrade { .. } => {
                let web = self
                    .web
                    .as_ref()
                    .expect("an upgrade router has a web client");
                let tunnel = connection_upgrade(web, &self.address)
                    .await
                    .map_err(|detail| {
                        io::Error::other(RouteError::UpgradeFailed {
                            address: self.address.clone(),
                            detail,
                        })
                    })?;
                Box::pin(connector.connect(name, tunnel).await?)
            }
        };
        Ok(tls)
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
        Route::Direct => vec![b"h2".to_vec()],
        Route::TlsRouting { cluster } | Route::Upgrade { cluster } => {
            vec![auth_alpn(cluster).into_bytes(), b"h2".to_vec()]
        }
    };
    Ok(Arc::new(config))
}

/// An HTTP/1.1 client for the Proxy's public side: the system's roots plus `web_ca`.
fn web_client(identity: &Identity, web_ca: Option<&CaBundle>) -> Result<reqwest::Client, String> {
    let _ = identity;
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

/// True when the Proxy's ALPN router is out of reach: a handshake offering only the
/// `teleport-reversetunnel` protocol (which the Proxy itself negotiates) ends with no protocol
/// agreed, as it does behind a balancer that terminates TLS.
async fn upgrade_required(address: &str, web_ca: Option<&CaBundle>, identity: &Identity) -> bool {
    let _ = identity;
    let Some(config) = probe_tls(web_ca) else {
        return false;
    };
    let Some(host) = address
        .rsplit_once(':')
        .map(|(h, _)| h.trim_matches(['[', ']']))
    else {
        return false;
    };
    let Ok(name) = ServerName::try_from(host.to_string()) else {
        return false;
    };
    let probe = async {
        let tcp = tokio::net::TcpStream::connect(address).await.ok()?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .ok()?;
        Some(tls.get_ref().1.alpn_protocol().is_none())
    };
    tokio::time::timeout(DISCOVERY_TIMEOUT, probe)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// The probe's TLS: the platform's roots plus `web_ca`, ALPN `teleport-reversetunnel`.
fn probe_tls(web_ca: Option<&CaBundle>) -> Option<Arc<rustls::ClientConfig>> {
    let extra: Vec<CertificateDer<'static>> = web_ca
        .map(|ca| {
            CertificateDer::pem_slice_iter(ca.pem())
                .filter_map(Result::ok)
                .collect()
        })
        .unwrap_or_default();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone()).ok()?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"teleport-reversetunnel".to_vec()];
    Some(Arc::new(config))
}

/// Asks the Proxy to hand its ALPN router this connection: `GET /webapi/connectionupgrade`
/// with `Upgrade: alpn` (understood by every Teleport since 12); returns the raw tunnel.
async fn connection_upgrade(
    web: &reqwest::Client,
    address: &str,
) -> Result<reqwest::Upgraded, String> {
    let response = web
        .get(format!("https://{address}/webapi/connectionupgrade"))
        .header(reqwest::header::CONNECTION, "Upgrade")
        .header(reqwest::header::UPGRADE, "alpn")
        .header("X-Teleport-Upgrade", "alpn")
        .send()
        .await
        .map_err(|e| crate::error_chain(Some(&e)))?;
    if response.status() != reqwest::StatusCode::SWITCHING_PROTOCOLS {
        return Err(format!("answered {}", response.status()));
    }
    response.upgrade().await.map_err(|e| e.to_string())
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
    }
}
