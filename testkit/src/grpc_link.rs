//! The Teleport double's connections: mutual TLS done here (not by tonic), so the decrypted
//! HTTP/2 frames can be watched, and Teleport's keepalive enforcement applied to them.
//!
//! Teleport's gRPC server (`lib/auth/grpcserver.go`) runs gRPC-Go with
//! `KeepaliveEnforcementPolicy{MinTime: 60 s, PermitWithoutStream: true}`: a client PING that
//! comes sooner than `MinTime` after the previous one is a strike, unless the server sent DATA
//! or HEADERS since (that resets the count), and more than two strikes end the connection
//! with GOAWAY `ENHANCE_YOUR_CALM` "too_many_pings". A client that pings an idle watch every
//! 30 s therefore loses it about every two minutes, which the real server showed and no test
//! saw. The double does the same; it closes the connection where gRPC-Go would send GOAWAY,
//! which the client sees the same way (the stream ends with an error).

use std::future::Future as _;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// What a connection's requests can learn about their peer.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The client's address.
    pub remote: SocketAddr,
    /// The hex serial of the client certificate.
    pub serial: Option<String>,
    /// The Teleport user the certificate names (its subject's common name).
    pub user: Option<String>,
}

/// The keepalive enforcement of Teleport's gRPC server.
#[derive(Debug, Clone, Copy)]
pub struct PingPolicy {
    /// Pings closer together than this are strikes.
    pub min_time: Duration,
    /// Strikes allowed; one more ends the connection.
    pub max_strikes: u32,
}

impl Default for PingPolicy {
    fn default() -> Self {
        Self {
            min_time: Duration::from_secs(60),
            max_strikes: 2,
        }
    }
}

/// Counts of what the policy did, for tests.
#[derive(Debug, Default)]
pub struct PingStats {
    /// Client pings seen.
    pub pings: std::sync::atomic::AtomicU64,
    /// Connections ended for too many pings.
    pub too_many_pings: std::sync::atomic::AtomicU64,
    /// Connections closed at their client certificate's expiry (`disconnect_expired_cert`).
    pub expiry_cuts: std::sync::atomic::AtomicU64,
}

const FRAME_HEADER: usize = 9;
const CLIENT_PREFACE: usize = 24;
const TYPE_DATA: u8 = 0x0;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_PING: u8 = 0x6;
const FLAG_ACK: u8 = 0x1;

/// Finds frame boundaries in one direction of an HTTP/2 byte stream.
#[derive(Debug)]
struct FrameScanner {
    /// Bytes of preface still to skip (client → server only).
    skip: usize,
    header: Vec<u8>,
    payload_left: usize,
}

impl FrameScanner {
    fn new(preface: usize) -> Self {
        Self {
            skip: preface,
            header: Vec::with_capacity(FRAME_HEADER),
            payload_left: 0,
        }
    }

    /// Feeds bytes; calls `on_frame(type, flags)` for each frame header completed.
    fn feed(&mut self, mut bytes: &[u8], mut on_frame: impl FnMut(u8, u8)) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
            } else if self.payload_left > 0 {
                let n = self.payload_left.min(bytes.len());
                self.payload_left -= n;
                bytes = &bytes[n..];
            } else {
                let n = (FRAME_HEADER - self.header.len()).min(bytes.len());
                self.header.extend_from_slice(&bytes[..n]);
                bytes = &bytes[n..];
                if self.header.len() == FRAME_HEADER {
                    let h = &self.header;
                    let len =
                        (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
                    on_frame(h[3], h[4]);
                    self.payload_left = len;
                    self.header.clear();
                }
            }
        }
    }
}

#[derive(Debug)]
struct Enforcer {
    policy: PingPolicy,
    last_ping: Instant,
    strikes: u32,
    closed: bool,
}

/// A server-side TLS stream whose HTTP/2 frames are watched for the keepalive policy.
pub struct WatchedStream {
    inner: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    info: PeerInfo,
    /// With `disconnect_expired_cert`: when the client certificate expires, the connection is
    /// closed (`lib/auth/transport_credentials.go`, `newTimeoutConn`, v13+).
    expiry: Option<Pin<Box<tokio::time::Sleep>>>,
    expired: bool,
    incoming: FrameScanner,
    outgoing: FrameScanner,
    enforcer: Arc<Mutex<Enforcer>>,
    stats: Arc<PingStats>,
}

impl WatchedStream {
    /// Wraps an accepted TLS stream.
    pub fn new(
        inner: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        info: PeerInfo,
        policy: PingPolicy,
        stats: Arc<PingStats>,
    ) -> Self {
        Self {
            inner,
            info,
            expiry: None,
            expired: false,
            incoming: FrameScanner::new(CLIENT_PREFACE),
            outgoing: FrameScanner::new(0),
            enforcer: Arc::new(Mutex::new(Enforcer {
                policy,
                last_ping: Instant::now(),
                strikes: 0,
                closed: false,
            })),
            stats,
        }
    }

    /// Closes the connection at `at` (the client certificate's expiry).
    pub fn close_at(mut self, at: tokio::time::Instant) -> Self {
        self.expiry = Some(Box::pin(tokio::time::sleep_until(at)));
        self
    }

    fn closed(&self) -> bool {
        self.enforcer.lock().expect("enforcer").closed
    }

    /// True once the certificate's expiry has come (and counts the cut once).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.expired
            && let Some(sleep) = self.expiry.as_mut()
            && sleep.as_mut().poll(cx).is_ready()
        {
            self.expired = true;
            self.stats
                .expiry_cuts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.expired
    }
}

fn certificate_expired() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        "closing gRPC connection due to certificate expiry",
    )
}

fn too_many_pings() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        "GOAWAY ENHANCE_YOUR_CALM too_many_pings",
    )
}

impl AsyncRead for WatchedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.closed() {
            return Poll::Ready(Err(too_many_pings()));
        }
        if self.expired(cx) {
            return Poll::Ready(Err(certificate_expired()));
        }
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let enforcer = this.enforcer.clone();
            let stats = this.stats.clone();
            this.incoming.feed(&buf.filled()[before..], |kind, flags| {
                if kind == TYPE_PING && flags & FLAG_ACK == 0 {
                    stats
                        .pings
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let mut e = enforcer.lock().expect("enforcer");
                    let now = Instant::now();
                    if now.duration_since(e.last_ping) < e.policy.min_time {
                        e.strikes += 1;
                        if e.strikes > e.policy.max_strikes {
                            e.closed = true;
                            stats
                                .too_many_pings
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    e.last_ping = now;
                }
            });
            if this.closed() {
                return Poll::Ready(Err(too_many_pings()));
            }
        }
        polled
    }
}

impl AsyncWrite for WatchedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.closed() {
            return Poll::Ready(Err(too_many_pings()));
        }
        if self.expired(cx) {
            return Poll::Ready(Err(certificate_expired()));
        }
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = polled {
            let enforcer = this.enforcer.clone();
            this.outgoing.feed(&data[..n], |kind, _| {
                // gRPC-Go resets the strikes whenever it sends data or headers.
                if kind == TYPE_DATA || kind == TYPE_HEADERS {
                    let mut e = enforcer.lock().expect("enforcer");
                    e.strikes = 0;
                }
            });
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Connected for WatchedStream {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scanner_finds_frames_across_reads() {
        let mut frames = Vec::new();
        let mut s = FrameScanner::new(CLIENT_PREFACE);
        let mut stream = vec![b'P'; CLIENT_PREFACE];
        // PING (8 bytes of payload), then DATA with 3 bytes.
        stream.extend_from_slice(&[0, 0, 8, TYPE_PING, 0, 0, 0, 0, 0]);
        stream.extend_from_slice(&[7; 8]);
        stream.extend_from_slice(&[0, 0, 3, TYPE_DATA, 1, 0, 0, 0, 1, 9, 9, 9]);
        for chunk in stream.chunks(5) {
            s.feed(chunk, |t, f| frames.push((t, f)));
        }
        assert_eq!(frames, vec![(TYPE_PING, 0), (TYPE_DATA, 1)]);
    }
}
