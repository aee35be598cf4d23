//! An L7 load balancer in front of a Teleport Proxy, the way many clusters sit behind one: it
//! terminates TLS with its own certificate and negotiates no ALPN, so the Proxy's ALPN router is
//! out of reach and only the Proxy's connection upgrade gets through to Auth.
//!
//! - [`L7Relay`] forwards the bytes to a real Proxy over a TLS connection of its own that offers
//!   only `http/1.1`: the real Proxy answers the upgrade (tier 5, v13.3.8: the legacy one).
//! - [`ProxyFront`] answers `/webapi/connectionupgrade` itself, as a Proxy of a chosen
//!   [`ProxyVersion`] does (v13, v15.1 to v18, v19), and pipes the upgraded payload to an Auth
//!   double (tier 2) or to a real Proxy's TLS-routing port (tier 5: a v19 Proxy in front of the
//!   real v13 one).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// A running relay on 127.0.0.1; it stops when dropped.
pub struct L7Relay {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its own (self-signed) certificate: what clients must trust.
    pub cert_pem: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for L7Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl L7Relay {
    /// Relays to `upstream` (a Proxy's web port), whose certificate `upstream_cert_pem` is
    /// trusted for `localhost`.
    pub async fn start(upstream: SocketAddr, upstream_cert_pem: &str) -> anyhow::Result<L7Relay> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()])?;
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "l7-balancer");
        let cert = params.self_signed(&key)?;
        let mut server = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes())?,
            )?;
        // What makes it an ALPN-stripping balancer: it agrees to no application protocol.
        server.alpn_protocols = Vec::new();
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(upstream_cert_pem.as_bytes()) {
            roots.add(c?)?;
        }
        let mut client = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        let (server, client) = (Arc::new(server), Arc::new(client));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (server, client) = (server.clone(), client.clone());
                tokio::spawn(async move {
                    let Ok(mut front) = tokio_rustls::TlsAcceptor::from(server).accept(tcp).await
                    else {
                        return;
                    };
                    let Ok(tcp) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let name = ServerName::try_from("localhost").expect("a DNS name");
                    let Ok(mut back) = tokio_rustls::TlsConnector::from(client)
                        .connect(name, tcp)
                        .await
                    else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut front, &mut back).await;
                });
            }
        });
        Ok(L7Relay {
            addr,
            cert_pem: cert.pem(),
            task,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// A Teleport Proxy's connection upgrade, played by the balancer itself.
// ---------------------------------------------------------------------------------------------

/// Which Teleport Proxy's `/webapi/connectionupgrade` a [`ProxyFront`] plays.
///
/// Read from `lib/web/conn_upgrade.go` (`selectConnectionUpgrade`, at 02cdf32d, which still
/// has the legacy path marked "DELETE legacy upgrade in 19.0") and
/// `api/client/websocketupgradeproto/server.go`, and from PR #63339 (merged 2026-01-30) that
/// removed the legacy path in v19.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVersion {
    /// v13 to v15.0: only the legacy upgrade (`Upgrade: alpn`); `Upgrade: websocket` gets
    /// `404 unsupported upgrade types`.
    V13,
    /// v15.1 to v18: both, WebSocket preferred; the WebSocket subprotocol is chosen in the
    /// server's order `[alpn, alpn-ping]` (gorilla's `Upgrader.Subprotocols`).
    V15_1,
    /// v19 and Cloud: WebSocket only (gobwas `HTTPUpgrader`, which takes the client's first
    /// protocol among `alpn-ping`, `alpn`, `websocket-close`); the legacy upgrade gets the same
    /// 404 as any unknown type.
    V19,
}

/// How the front answers `/webapi/find`.
#[derive(Debug, Clone)]
pub enum FindAnswer {
    /// This JSON, as a Proxy would.
    Json(serde_json::Value),
    /// Asked of the real Proxy behind it (its web port, and the certificate to trust there).
    Forward {
        /// The Proxy's web address.
        address: SocketAddr,
        /// The Proxy's web certificate (PEM), trusted for `localhost`.
        cert_pem: String,
    },
}

/// What a [`ProxyFront`] does and gets wrong.
#[derive(Debug, Clone)]
pub struct FrontConfig {
    /// Whose upgrade.
    pub version: ProxyVersion,
    /// Where the upgraded bytes go: an Auth server's TLS port (as the ALPN router would send
    /// them), or a real Proxy's TLS-routing port.
    pub tunnel_to: SocketAddr,
    /// `/webapi/find`.
    pub find: FindAnswer,
    /// The Pings of `alpn-ping`: every 30 s on a real Proxy (`defaults.ProxyPingInterval`).
    pub ping_interval: Duration,
    /// A fault: answer with a wrong `Sec-WebSocket-Accept`.
    pub wrong_accept_key: bool,
    /// A fault: the WebSocket subprotocols the front agrees to, instead of the version's.
    pub subprotocols: Option<Vec<String>>,
    /// The cluster the ALPN router serves: an inner ClientHello asking for another is refused
    /// (`teleport-auth@<hex>`).
    pub cluster: Option<String>,
    /// The ALPN protocols the balancer's own TLS agrees to: none (it negotiates nothing), or
    /// e.g. `http/1.1` only, which answers any other offer with the alert "no application
    /// protocol".
    pub alpn: Vec<Vec<u8>>,
    /// A balancer that drops the `Upgrade` and `X-Teleport-Upgrade` headers on the way in, so
    /// the Proxy sees no upgrade type at all.
    pub drop_upgrade_headers: bool,
}

impl FrontConfig {
    /// A front for `version` that tunnels to `tunnel_to` and answers find with `find`.
    pub fn new(version: ProxyVersion, tunnel_to: SocketAddr, find: FindAnswer) -> Self {
        Self {
            version,
            tunnel_to,
            find,
            ping_interval: Duration::from_secs(30),
            wrong_accept_key: false,
            subprotocols: None,
            cluster: None,
            alpn: Vec::new(),
            drop_upgrade_headers: false,
        }
    }
}

/// What a [`ProxyFront`] saw and did, for tests.
#[derive(Debug, Default)]
pub struct FrontStats {
    /// WebSocket upgrades answered with 101.
    pub websocket_upgrades: AtomicU64,
    /// Legacy upgrades answered with 101.
    pub legacy_upgrades: AtomicU64,
    /// Upgrades refused (404).
    pub refused: AtomicU64,
    /// Pings sent.
    pub pings: AtomicU64,
    /// Pongs received.
    pub pongs: AtomicU64,
    /// Binary frames received that were masked, as RFC 6455 wants from clients.
    pub masked_frames: AtomicU64,
    /// `/webapi/find` answered.
    pub finds: AtomicU64,
    /// The subprotocols each WebSocket upgrade offered, in order.
    pub offered: Mutex<Vec<Vec<String>>>,
    /// The ALPN list and SNI of each inner ClientHello.
    pub inner_hellos: Mutex<Vec<(Vec<String>, Option<String>)>>,
}

/// A Teleport Proxy's public side behind (or as) an L7 balancer: TLS with its own certificate
/// and no ALPN, `/webapi/find`, and the connection upgrade of [`ProxyVersion`], whose payload it
/// pipes to [`FrontConfig::tunnel_to`]. It stops when dropped.
pub struct ProxyFront {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its self-signed certificate: what clients must trust.
    pub cert_pem: String,
    /// What it saw.
    pub stats: Arc<FrontStats>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ProxyFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn self_signed(cn: &str) -> anyhow::Result<(rcgen::Certificate, rcgen::KeyPair)> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()])?;
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    Ok((params.self_signed(&key)?, key))
}

impl ProxyFront {
    /// Starts on 127.0.0.1.
    pub async fn start(config: FrontConfig) -> anyhow::Result<ProxyFront> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (cert, key) = self_signed("teleport-proxy-front")?;
        let mut server = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes())?,
            )?;
        // An L7 balancer: none of Teleport's ALPN, so the Proxy's ALPN router is out of reach.
        server.alpn_protocols = config.alpn.clone();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(FrontStats::default());
        let shared = Arc::new((config, stats.clone()));
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, shared) = (acceptor.clone(), shared.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(req, &shared).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Ok(ProxyFront {
            addr,
            cert_pem: cert.pem(),
            stats,
            task,
        })
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }
}

type Shared = (FrontConfig, Arc<FrontStats>);

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

/// Teleport's error body (`trace.WriteError`).
fn trace_error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    text(
        status,
        serde_json::json!({ "error": { "message": message } }).to_string(),
    )
}

fn header_values(req: &Request<Incoming>, name: &str) -> Vec<String> {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

async fn handle(mut req: Request<Incoming>, shared: &Arc<Shared>) -> Response<Full<Bytes>> {
    let (config, stats) = (&shared.0, &shared.1);
    match req.uri().path() {
        "/webapi/find" => {
            stats.finds.fetch_add(1, Ordering::Relaxed);
            match &config.find {
                FindAnswer::Json(json) => text(StatusCode::OK, json.to_string()),
                FindAnswer::Forward { address, cert_pem } => {
                    match forward_find(*address, cert_pem).await {
                        Ok((status, body)) => text(status, body),
                        Err(e) => text(StatusCode::BAD_GATEWAY, e.to_string()),
                    }
                }
            }
        }
        "/webapi/connectionupgrade" => {
            // selectConnectionUpgrade: both headers, WebSocket preferred, then alpn-ping, alpn.
            let mut types = header_values(&req, "X-Teleport-Upgrade");
            types.extend(header_values(&req, "Upgrade"));
            if config.drop_upgrade_headers {
                types.clear();
            }
            let websocket = types.iter().any(|t| t.eq_ignore_ascii_case("websocket"));
            let legacy = types.iter().any(|t| t == "alpn");
            match config.version {
                ProxyVersion::V15_1 | ProxyVersion::V19 if websocket => {
                    websocket_upgrade(&mut req, shared)
                }
                ProxyVersion::V13 | ProxyVersion::V15_1 if legacy => {
                    legacy_upgrade(&mut req, shared)
                }
                _ => {
                    stats.refused.fetch_add(1, Ordering::Relaxed);
                    trace_error(
                        StatusCode::NOT_FOUND,
                        &format!("unsupported upgrade types: [{}]", types.join(" ")),
                    )
                }
            }
        }
        _ => trace_error(StatusCode::NOT_FOUND, "not found"),
    }
}

fn legacy_upgrade(req: &mut Request<Incoming>, shared: &Arc<Shared>) -> Response<Full<Bytes>> {
    shared.1.legacy_upgrades.fetch_add(1, Ordering::Relaxed);
    let upgrade = hyper::upgrade::on(req);
    let shared = shared.clone();
    tokio::spawn(async move {
        if let Ok(upgraded) = upgrade.await {
            let _ = route_inner(TokioIo::new(upgraded), &shared).await;
        }
    });
    // writeUpgradeResponse: Upgrade and X-Teleport-Upgrade echo the type, Connection: Upgrade.
    let mut response = text(StatusCode::SWITCHING_PROTOCOLS, String::new());
    let headers = response.headers_mut();
    headers.insert("Upgrade", http::HeaderValue::from_static("alpn"));
    headers.insert("X-Teleport-Upgrade", http::HeaderValue::from_static("alpn"));
    headers.insert("Connection", http::HeaderValue::from_static("Upgrade"));
    response
}

/// The subprotocol the version's upgrader picks from the client's offer.
fn choose_subprotocol(config: &FrontConfig, offered: &[String]) -> Option<String> {
    if let Some(only) = &config.subprotocols {
        return offered.iter().find(|p| only.contains(p)).cloned();
    }
    match config.version {
        // gorilla: the server's list in its order, the first the client offered.
        ProxyVersion::V15_1 => ["alpn", "alpn-ping"]
            .into_iter()
            .find(|p| offered.iter().any(|o| o == p))
            .map(str::to_string),
        // gobwas: the client's list in its order, the first the server accepts.
        _ => offered
            .iter()
            .find(|p| ["alpn-ping", "alpn", "websocket-close"].contains(&p.as_str()))
            .cloned(),
    }
}

fn websocket_upgrade(req: &mut Request<Incoming>, shared: &Arc<Shared>) -> Response<Full<Bytes>> {
    let (config, stats) = (&shared.0, &shared.1);
    let key = req
        .headers()
        .get("Sec-WebSocket-Key")
        .map(|k| k.as_bytes().to_vec());
    let version_ok = req
        .headers()
        .get("Sec-WebSocket-Version")
        .is_some_and(|v| v == "13");
    let Some(key) = key.filter(|_| version_ok) else {
        stats.refused.fetch_add(1, Ordering::Relaxed);
        return text(StatusCode::BAD_REQUEST, "bad WebSocket handshake".into());
    };
    let offered = header_values(req, "Sec-WebSocket-Protocol");
    stats
        .offered
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(offered.clone());
    let chosen = choose_subprotocol(config, &offered);
    stats.websocket_upgrades.fetch_add(1, Ordering::Relaxed);
    let upgrade = hyper::upgrade::on(req);
    let shared2 = shared.clone();
    let with_pings = chosen.as_deref() != Some("alpn");
    let unsupported = chosen.is_none();
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        if unsupported {
            // websocketupgradeproto.NewServerConnection: a close frame, then the end.
            let _ = ws
                .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                    code: CloseCode::Unsupported,
                    reason: "unsupported WebSocket sub-protocol: unsupported-protocol".into(),
                }))
                .await;
            return;
        }
        let io = FrontWsIo::spawn(ws, shared2.clone(), with_pings);
        let _ = route_inner(io, &shared2).await;
    });
    let accept = if config.wrong_accept_key {
        derive_accept_key(b"not the key the client sent")
    } else {
        derive_accept_key(&key)
    };
    let mut response = text(StatusCode::SWITCHING_PROTOCOLS, String::new());
    let headers = response.headers_mut();
    headers.insert("Upgrade", http::HeaderValue::from_static("websocket"));
    headers.insert("Connection", http::HeaderValue::from_static("Upgrade"));
    headers.insert(
        "Sec-WebSocket-Accept",
        http::HeaderValue::from_str(&accept).expect("base64"),
    );
    if let Some(protocol) = chosen {
        headers.insert(
            "Sec-WebSocket-Protocol",
            http::HeaderValue::from_str(&protocol).expect("a token"),
        );
    }
    response
}

/// The server side of a WebSocket upgrade as a byte stream: a task owns the socket, sends the
/// Pings, counts the Pongs, and moves binary payloads through a duplex pipe.
struct FrontWsIo;

impl FrontWsIo {
    fn spawn<S>(
        ws: WebSocketStream<S>,
        shared: Arc<Shared>,
        with_pings: bool,
    ) -> tokio::io::DuplexStream
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mine, theirs) = tokio::io::duplex(256 * 1024);
        tokio::spawn(async move {
            let (mut sink, mut stream) = ws.split();
            let (mut from_pipe, mut to_pipe) = tokio::io::split(mine);
            let stats = shared.1.clone();
            let mut ticker = tokio::time::interval(shared.0.ping_interval);
            ticker.reset();
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                tokio::select! {
                    _ = ticker.tick(), if with_pings => {
                        stats.pings.fetch_add(1, Ordering::Relaxed);
                        if sink.send(Message::Ping(Bytes::from_static(b"teleport"))).await.is_err() {
                            break;
                        }
                    }
                    n = from_pipe.read(&mut buf) => match n {
                        Ok(0) | Err(_) => {
                            let _ = sink.close().await;
                            break;
                        }
                        Ok(n) => {
                            if sink.send(Message::Binary(Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                                break;
                            }
                        }
                    },
                    message = stream.next() => match message {
                        Some(Ok(Message::Binary(data))) => {
                            // tungstenite's server refuses unmasked client frames, so every
                            // frame that arrives here was masked.
                            stats.masked_frames.fetch_add(1, Ordering::Relaxed);
                            if to_pipe.write_all(&data).await.is_err() {
                                break;
                            }
                        }
                        Some(Ok(Message::Pong(_))) => {
                            stats.pongs.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(Ok(Message::Ping(_) | Message::Frame(_) | Message::Text(_))) => {}
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    },
                }
            }
        });
        theirs
    }
}

/// The ALPN router's part: reads the inner ClientHello, notes its ALPN and SNI, refuses a
/// `teleport-auth@` for another cluster, then pipes everything to the tunnel's end.
async fn route_inner<S>(mut io: S, shared: &Arc<Shared>) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (config, stats) = (&shared.0, &shared.1);
    let mut acceptor = rustls::server::Acceptor::default();
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let hello = loop {
        let n = io.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        seen.extend_from_slice(&buf[..n]);
        acceptor
            .read_tls(&mut &buf[..n])
            .map_err(std::io::Error::other)?;
        match acceptor.accept() {
            Ok(Some(accepted)) => break accepted,
            Ok(None) => {}
            Err((e, _)) => return Err(std::io::Error::other(e)),
        }
    };
    let client_hello = hello.client_hello();
    let alpn: Vec<String> = client_hello
        .alpn()
        .map(|list| {
            list.map(|p| String::from_utf8_lossy(p).into_owned())
                .collect()
        })
        .unwrap_or_default();
    let sni = client_hello.server_name().map(str::to_string);
    stats
        .inner_hellos
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((alpn.clone(), sni));
    if let Some(cluster) = &config.cluster {
        let wanted = format!(
            "teleport-auth@{}.teleport.cluster.local",
            hex_encode(cluster.as_bytes())
        );
        if alpn.first().is_none_or(|p| *p != wanted) {
            return Ok(());
        }
    }
    let mut upstream = tokio::net::TcpStream::connect(config.tunnel_to).await?;
    upstream.set_nodelay(true)?;
    upstream.write_all(&seen).await?;
    tokio::io::copy_bidirectional(&mut io, &mut upstream).await?;
    Ok(())
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `GET /webapi/find` of the real Proxy behind the front.
async fn forward_find(address: SocketAddr, cert_pem: &str) -> anyhow::Result<(StatusCode, String)> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(cert_pem.as_bytes()) {
        roots.add(c?)?;
    }
    let mut client = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(address).await?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(connection);
    let request = Request::get("/webapi/find")
        .header("Host", "localhost")
        .body(Full::new(Bytes::new()))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The JSON a Proxy of `version` answers `/webapi/find` with, for `cluster`.
pub fn find_json(cluster: &str, server_version: &str) -> serde_json::Value {
    let major: u64 = server_version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(19);
    serde_json::json!({
        "auth": {"type": "local", "second_factor": "otp"},
        "proxy": {"kube": {"enabled": false}, "tls_routing_enabled": true},
        "server_version": server_version,
        "min_client_version": format!("{}.0.0-aa", major.saturating_sub(1)),
        "cluster_name": cluster,
        "edition": "oss",
        "fips": false,
        "automatic_upgrades": false,
    })
}
