//! The Proxy's connection upgrade: how the plugin reaches Auth through a load balancer that
//! terminates TLS and drops ALPN, so the Proxy's ALPN router cannot see what the plugin asks
//! for. The plugin sends an HTTP/1.1 request to `/webapi/connectionupgrade`; after
//! `101 Switching Protocols` the connection is the Proxy's ALPN router's, and the TLS-routing
//! handshake (ALPN `teleport-auth@<hex>…`, `h2`, SNI `teleport.cluster.local`) runs inside it.
//!
//! Two upgrades exist (read from Teleport's `lib/web/conn_upgrade.go`,
//! `api/client/alpn_conn_upgrade.go`, `api/client/alpn_websocket.go` and
//! `api/client/websocketupgradeproto/`):
//!
//! - **WebSocket** (Proxy v15.1 and later, the only one from v19): `Upgrade: websocket` with
//!   the subprotocol `alpn-ping` (or `alpn`); the inner TLS travels in binary frames, client
//!   frames masked; with `alpn-ping` the Proxy sends a Ping every 30 s
//!   (`defaults.ProxyPingInterval`) and the client answers with a Pong. tokio-tungstenite does
//!   the framing, the handshake checks (the echoed subprotocol, `Sec-WebSocket-Accept`) and the
//!   Pongs; [`WsIo`] only turns binary messages back into a byte stream.
//! - **Legacy** (Proxy v12 to v18): `Upgrade: alpn` plus `X-Teleport-Upgrade: alpn`; after the
//!   `101` the connection is raw. Teleport's v17 client stopped sending it (#52534), v18's
//!   removed it (#52573) and the v19 Proxy refuses it (#63339). The plugin uses it only when the
//!   Proxy refuses the WebSocket one (v13 to v15.0 answer `404 unsupported upgrade types`).
//!
//! When an upgrade is needed is decided as `api/client.IsALPNConnUpgradeRequired` does: a test
//! handshake offering only `teleport-reversetunnel`, which the Proxy itself negotiates, ends
//! with no protocol, with the alert "no application protocol", or with a protocol the client
//! did not offer, when something in front of the Proxy terminates TLS.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures::{Sink as _, Stream as _};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError, SubProtocolError};

use super::route::Io;
use crate::settings::CaBundle;

/// The upgrade's path (`constants.WebAPIConnUpgrade`).
pub const UPGRADE_PATH: &str = "/webapi/connectionupgrade";
/// The subprotocols tried, one per request, best first: `alpn-ping` gets the Proxy's 30 s
/// keep-alive Pings (which also keep a balancer's idle timer from cutting a quiet watch),
/// `alpn` is the same without them (`constants.WebAPIConnUpgradeTypeALPNPing`, `…ALPN`).
/// One per request, as Teleport's client sends them: a v15.1 to v18 Proxy picks in its own
/// order (`[alpn, alpn-ping]`, gorilla), so offering both at once would lose the Pings.
pub const SUBPROTOCOLS: [&str; 2] = ["alpn-ping", "alpn"];
/// The ALPN protocol of the test handshake (`constants.ALPNSNIProtocolReverseTunnel`).
pub const PROBE_ALPN: &[u8] = b"teleport-reversetunnel";

/// Which upgrade a Proxy took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpgradeKind {
    /// `Upgrade: websocket` (Proxy v15.1+).
    WebSocket,
    /// `Upgrade: alpn` (Proxy v12 to v18).
    Legacy,
}

impl UpgradeKind {
    /// The other one, to fall back to.
    pub fn other(self) -> Self {
        match self {
            Self::WebSocket => Self::Legacy,
            Self::Legacy => Self::WebSocket,
        }
    }
}

impl fmt::Display for UpgradeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::WebSocket => "WebSocket",
            Self::Legacy => "legacy (Upgrade: alpn)",
        })
    }
}

/// Why an upgrade failed.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// TCP or the outer TLS to the Proxy's public side failed.
    #[error("cannot open HTTPS to the Proxy: {0}")]
    Connect(String),
    /// The Proxy answered, but not with `101 Switching Protocols`.
    #[error("the {kind} upgrade was refused: {status} {body}")]
    Refused {
        /// Which upgrade.
        kind: UpgradeKind,
        /// The HTTP status.
        status: u16,
        /// The start of the answer's body.
        body: String,
    },
    /// The Proxy switched protocols but agreed to none of [`SUBPROTOCOLS`].
    #[error(
        "the Proxy agreed to none of the WebSocket subprotocols {} (it answered 101 without Sec-WebSocket-Protocol): it is not a Teleport Proxy, or something in front of it answers the upgrade itself",
        SUBPROTOCOLS.join(", ")
    )]
    NoSubprotocol,
    /// The `101` answer breaks the WebSocket handshake.
    #[error("the Proxy's WebSocket handshake is not valid: {0}")]
    Handshake(String),
    /// Both upgrades were refused.
    #[error(
        "the Proxy refused both connection upgrades ({websocket}; {legacy}); Teleport's Proxy takes the WebSocket one from v15.1 and the legacy one until v18: check that the address is a Teleport Proxy and that the balancer forwards /webapi/connectionupgrade"
    )]
    BothRefused {
        /// The WebSocket upgrade's refusal.
        websocket: Box<UpgradeError>,
        /// The legacy upgrade's refusal.
        legacy: Box<UpgradeError>,
    },
}

impl UpgradeError {
    /// True when the Proxy answered without switching protocols: the other upgrade may work.
    pub fn is_refused(&self) -> bool {
        matches!(self, Self::Refused { .. })
    }
}

/// The handshake checks tungstenite makes, said for an admin.
fn describe_ws_error(error: WsError) -> UpgradeError {
    match error {
        WsError::Http(response) => UpgradeError::Refused {
            kind: UpgradeKind::WebSocket,
            status: response.status().as_u16(),
            body: body_start(response.body().as_deref().unwrap_or_default()),
        },
        WsError::Protocol(ProtocolError::SecWebSocketAcceptKeyMismatch) => {
            UpgradeError::Handshake(
                "its Sec-WebSocket-Accept does not match the key sent (RFC 6455 section 4.1); something between the plugin and the Proxy answers the upgrade itself".into(),
            )
        }
        WsError::Protocol(ProtocolError::SecWebSocketSubProtocolError(
            SubProtocolError::NoSubProtocol,
        )) => UpgradeError::NoSubprotocol,
        WsError::Protocol(ProtocolError::SecWebSocketSubProtocolError(e)) => {
            UpgradeError::Handshake(format!(
                "it chose a subprotocol other than the one offered ({e})"
            ))
        }
        WsError::Io(e) => UpgradeError::Connect(e.to_string()),
        other => UpgradeError::Handshake(other.to_string()),
    }
}

fn body_start(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    text.trim().to_string()
}

/// The TLS of the Proxy's public side: the platform's roots plus `web_ca`, with `alpn`.
pub fn web_tls(web_ca: Option<&CaBundle>, alpn: &[&[u8]]) -> Option<Arc<rustls::ClientConfig>> {
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
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Some(Arc::new(config))
}

/// The host part of `host:port`, as a TLS server name (a DNS name or an IP address).
pub fn server_name(address: &str) -> Option<ServerName<'static>> {
    let (host, _) = address.rsplit_once(':')?;
    ServerName::try_from(host.trim_matches(['[', ']']).to_string()).ok()
}

/// Opens TLS to the Proxy's public side (HTTP/1.1).
async fn open_https(
    address: &str,
    tls: Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, UpgradeError> {
    let name = server_name(address)
        .ok_or_else(|| UpgradeError::Connect(format!("{address} is not host:port")))?;
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| UpgradeError::Connect(e.to_string()))?;
    tcp.set_nodelay(true)
        .map_err(|e| UpgradeError::Connect(e.to_string()))?;
    tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| UpgradeError::Connect(crate::error_chain(Some(&e))))
}

/// The WebSocket upgrade: the returned stream carries the inner TLS. Each subprotocol of
/// [`SUBPROTOCOLS`] is tried in turn while the Proxy agrees to none.
pub async fn websocket(
    address: &str,
    tls: Arc<rustls::ClientConfig>,
) -> Result<Pin<Box<dyn Io>>, UpgradeError> {
    for subprotocol in SUBPROTOCOLS {
        match websocket_with(address, tls.clone(), subprotocol).await {
            Err(UpgradeError::NoSubprotocol) => continue,
            done => return done,
        }
    }
    Err(UpgradeError::NoSubprotocol)
}

async fn websocket_with(
    address: &str,
    tls: Arc<rustls::ClientConfig>,
    subprotocol: &'static str,
) -> Result<Pin<Box<dyn Io>>, UpgradeError> {
    let https = open_https(address, tls).await?;
    let mut request = format!("wss://{address}{UPGRADE_PATH}")
        .into_client_request()
        .map_err(|e| UpgradeError::Handshake(e.to_string()))?;
    let headers = request.headers_mut();
    headers.insert(
        "Sec-WebSocket-Protocol",
        http::HeaderValue::from_static(subprotocol),
    );
    headers.insert(
        http::header::USER_AGENT,
        http::HeaderValue::from_static(concat!("teleport-mattermost/", env!("CARGO_PKG_VERSION"))),
    );
    let (ws, response) = tokio_tungstenite::client_async(request, https)
        .await
        .map_err(describe_ws_error)?;
    tracing::debug!(
        proxy = %address,
        subprotocol = ?response.headers().get("Sec-WebSocket-Protocol"),
        "WebSocket connection upgrade done"
    );
    Ok(Box::pin(WsIo {
        ws,
        pending: Bytes::new(),
    }))
}

/// The legacy upgrade, through `web` (the Proxy's public side); the raw connection after `101`.
pub async fn legacy(
    web: &reqwest::Client,
    address: &str,
) -> Result<Pin<Box<dyn Io>>, UpgradeError> {
    let response = web
        .get(format!("https://{address}{UPGRADE_PATH}"))
        .header(reqwest::header::CONNECTION, "Upgrade")
        .header(reqwest::header::UPGRADE, "alpn")
        .header("X-Teleport-Upgrade", "alpn")
        .send()
        .await
        .map_err(|e| UpgradeError::Connect(crate::error_chain(Some(&e))))?;
    let status = response.status();
    if status != reqwest::StatusCode::SWITCHING_PROTOCOLS {
        let body = response.bytes().await.unwrap_or_default();
        return Err(UpgradeError::Refused {
            kind: UpgradeKind::Legacy,
            status: status.as_u16(),
            body: body_start(&body),
        });
    }
    let upgraded = response
        .upgrade()
        .await
        .map_err(|e| UpgradeError::Connect(e.to_string()))?;
    Ok(Box::pin(upgraded))
}

/// A WebSocket connection as the byte stream the inner TLS runs on: binary messages carry the
/// bytes; Pings are answered by tungstenite itself, on the next read (hyper always has one
/// pending, so a Pong goes out at once).
struct WsIo<S> {
    ws: WebSocketStream<S>,
    pending: Bytes,
}

fn ws_io_error(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        other => io::Error::other(other),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                let chunk = self.pending.split_to(n);
                buf.put_slice(&chunk);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => self.pending = data,
                // Control frames: tungstenite queues the Pong and sends it on this very read.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the Proxy sent a text WebSocket message inside the connection upgrade",
                    )));
                }
                Some(Ok(Message::Close(_)))
                | None
                | Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                    return Poll::Ready(Ok(()));
                }
                Some(Err(e)) => return Poll::Ready(Err(ws_io_error(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(ws_io_error)?;
        Pin::new(&mut self.ws)
            .start_send(Message::Binary(Bytes::copy_from_slice(data)))
            .map_err(ws_io_error)?;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(ws_io_error)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(Pin::new(&mut self.ws).poll_close(cx)) {
            Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(ws_io_error(e))),
        }
    }
}

/// What the test handshake's outcome says: `true` when something in front of the Proxy
/// terminates TLS (`IsALPNConnUpgradeRequired`: no protocol negotiated, the alert "no
/// application protocol", or a protocol not offered). Any other failure says nothing about
/// ALPN, and the plain TLS-routing dial then reports what is wrong.
pub fn upgrade_needed(outcome: &Result<Option<Vec<u8>>, io::Error>) -> bool {
    match outcome {
        Ok(None) => true,
        Ok(Some(protocol)) => protocol != PROBE_ALPN,
        Err(e) => {
            let tls = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>());
            matches!(
                tls,
                Some(rustls::Error::AlertReceived(
                    rustls::AlertDescription::NoApplicationProtocol
                )) | Some(rustls::Error::PeerMisbehaved(
                    rustls::PeerMisbehaved::SelectedUnofferedApplicationProtocol
                ))
            )
        }
    }
}

/// Makes the test handshake; `None` when it could not be made at all (no answer in time, no
/// TCP), which leaves the plain TLS-routing dial to report the problem.
pub async fn probe(address: &str, web_ca: Option<&CaBundle>, timeout: Duration) -> Option<bool> {
    let config = web_tls(web_ca, &[PROBE_ALPN])?;
    let name = server_name(address)?;
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(address).await.ok()?;
        let outcome = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map(|tls| tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec));
        Some(upgrade_needed(&outcome))
    };
    tokio::time::timeout(timeout, attempt).await.ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls_error(e: rustls::Error) -> Result<Option<Vec<u8>>, io::Error> {
        Err(io::Error::new(io::ErrorKind::InvalidData, e))
    }

    #[test]
    fn the_probe_outcomes_that_mean_alpn_is_stripped() {
        // As api/client.IsALPNConnUpgradeRequired decides.
        assert!(upgrade_needed(&Ok(None)), "no protocol negotiated");
        assert!(!upgrade_needed(&Ok(Some(PROBE_ALPN.to_vec()))));
        assert!(
            upgrade_needed(&Ok(Some(b"h2".to_vec()))),
            "a protocol not offered"
        );
        assert!(upgrade_needed(&tls_error(rustls::Error::AlertReceived(
            rustls::AlertDescription::NoApplicationProtocol
        ))));
        assert!(upgrade_needed(&tls_error(rustls::Error::PeerMisbehaved(
            rustls::PeerMisbehaved::SelectedUnofferedApplicationProtocol
        ))));
        // Other failures say nothing about ALPN.
        assert!(!upgrade_needed(&tls_error(rustls::Error::AlertReceived(
            rustls::AlertDescription::HandshakeFailure
        ))));
        assert!(!upgrade_needed(&Err(io::Error::from(
            io::ErrorKind::ConnectionReset
        ))));
    }

    #[test]
    fn refusals_and_handshake_faults_are_said_plainly() {
        let mut response = http::Response::new(Some(b"unsupported upgrade types".to_vec()));
        *response.status_mut() = http::StatusCode::NOT_FOUND;
        let refused = describe_ws_error(WsError::Http(Box::new(response)));
        assert!(refused.is_refused());
        assert_eq!(
            refused.to_string(),
            "the WebSocket upgrade was refused: 404 unsupported upgrade types"
        );
        let accept = describe_ws_error(WsError::Protocol(
            ProtocolError::SecWebSocketAcceptKeyMismatch,
        ));
        assert!(!accept.is_refused());
        assert!(
            accept.to_string().contains("Sec-WebSocket-Accept"),
            "{accept}"
        );
        let none = describe_ws_error(WsError::Protocol(
            ProtocolError::SecWebSocketSubProtocolError(SubProtocolError::NoSubProtocol),
        ));
        assert!(matches!(none, UpgradeError::NoSubprotocol));
        assert!(none.to_string().contains("alpn-ping, alpn"), "{none}");
        let other = describe_ws_error(WsError::Protocol(
            ProtocolError::SecWebSocketSubProtocolError(SubProtocolError::InvalidSubProtocol),
        ));
        assert!(
            other.to_string().contains("other than the one offered"),
            "{other}"
        );
    }

    #[test]
    fn server_names_come_from_host_port() {
        assert_eq!(
            server_name("tenant.teleport.sh:443"),
            Some(ServerName::try_from("tenant.teleport.sh").unwrap())
        );
        assert!(matches!(
            server_name("127.0.0.1:3080"),
            Some(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name("[::1]:3080"),
            Some(ServerName::IpAddress(_))
        ));
        assert_eq!(server_name("no-port"), None);
    }
}
