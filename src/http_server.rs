//! The HTTP/1.1 server under the callback and probe routers, in the operator and standalone
//! alike, hardened against clients that hold connections open.
//!
//! `axum::serve` sets no timer, so hyper's header-read timeout never fires there: a client
//! that sends one header byte a second, or nothing at all, keeps its connection forever, and
//! nothing caps how many it opens. Here every connection has a deadline for its request head
//! (hyper starts that timer whenever it waits for a request, so an idle keep-alive connection
//! is closed after the same time), a TLS handshake deadline, and the number of connections is
//! capped: at the cap, accepting pauses until one closes (the kernel's backlog holds the rest)
//! and a warning says so. Mattermost sends one small POST per press, so none of this touches
//! a real press.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Connection limits of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once; further ones wait to be accepted.
    pub max_connections: usize,
    /// Time a client has to send a complete request head, counted from the moment the server
    /// waits for it: also the idle timeout of a keep-alive connection.
    pub header_read_timeout: Duration,
    /// Time a client has to complete the TLS handshake (HTTPS only).
    pub tls_handshake_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// A TLS server configuration that can be swapped while serving (certificate renewal).
pub type TlsConfig = Arc<ArcSwap<rustls::ServerConfig>>;

/// Counts connections turned away or delayed, for logs and tests.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Times the connection cap was reached.
    pub cap_reached: AtomicU64,
    /// Connections closed because the request head did not arrive in time.
    pub header_timeouts: AtomicU64,
}

/// Serves `app` over plain HTTP on `listener` until `stop`, then lets open requests finish
/// (up to 10 s).
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: Limits,
    stop: CancellationToken,
) {
    serve_with(listener, app, limits, None, Arc::default(), stop).await
}

/// Like [`serve`], over TLS with the current `tls` configuration for each new connection.
pub async fn serve_tls(
    listener: TcpListener,
    app: axum::Router,
    limits: Limits,
    tls: TlsConfig,
    stop: CancellationToken,
) {
    serve_with(listener, app, limits, Some(tls), Arc::default(), stop).await
}

/// The server loop; `stats` lets a caller observe it.
pub async fn serve_with(
    listener: TcpListener,
    app: axum::Router,
    limits: Limits,
    tls: Option<TlsConfig>,
    stats: Arc<ServerStats>,
    stop: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let service = TowerToHyperService::new(app);
    let mut last_warning: Option<tokio::time::Instant> = None;
    loop {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                stats.cap_reached.fetch_add(1, Ordering::Relaxed);
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    last_warning = Some(tokio::time::Instant::now());
                    tracing::warn!(
                        limit = limits.max_connections,
                        "connection limit reached: new connections wait until one closes (slow or idle clients are closed after {:?})",
                        limits.header_read_timeout
                    );
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    p = permits.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                }
            }
        };
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Nagle would hold small responses for the peer's delayed ACK.
        let _ = tcp.set_nodelay(true);
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .keep_alive(true);
        let service = service.clone();
        let stats = stats.clone();
        let watcher = graceful.watcher();
        let tls = tls.as_ref().map(|t| t.load_full());
        tokio::spawn(async move {
            let _permit = permit;
            let result = match tls {
                None => {
                    let conn = builder.serve_connection(TokioIo::new(tcp), service);
                    watcher.watch(conn).await
                }
                Some(config) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(config);
                    let stream = match tokio::time::timeout(
                        limits.tls_handshake_timeout,
                        acceptor.accept(tcp),
                    )
                    .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(conn).await
                }
            };
            if let Err(e) = result {
                if e.is_timeout() {
                    stats.header_timeouts.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "closed a connection that sent no complete request in time");
                } else {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections were still open 10 s after shutdown began; closing them");
    }
}
