//! What Teleport does right after the TLS handshake when it will not serve an identity.
//!
//! Auth's gRPC server checks each new connection in `TransportCredentials.ServerHandshake`
//! (`lib/auth/transport_credentials.go`, v13+): after the TLS handshake it looks the identity up,
//! applies locks (`authz.Authorizer`, whose error is `lock targeting <target> is in force`),
//! private key policy, device trust and `max_connections`, and on a refusal closes the
//! connection. gRPC-Go has no way to send that error to the client, and with TLS 1.3 the client
//! has already finished its side of the handshake: all it sees is the connection closing before
//! the server's first HTTP/2 frame. [`FirstWord`] turns exactly that into a typed
//! [`SilentClose`] error, so the plugin can say "locked" instead of "transport error".

use std::error::Error as StdError;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The connection ended, or failed, before the server sent a single byte after the TLS
/// handshake.
#[derive(Debug, thiserror::Error)]
#[error("Teleport closed the connection right after the TLS handshake, before answering ({cause})")]
pub struct SilentClose {
    cause: String,
}

/// A stream that reports [`SilentClose`] when it ends (or breaks) before its first byte.
pub struct FirstWord<S> {
    inner: S,
    heard: bool,
}

impl<S> FirstWord<S> {
    /// Wraps a freshly handshaken stream.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            heard: false,
        }
    }
}

/// A TLS alert (a rejected certificate arrives as one after a TLS 1.3 client considers the
/// handshake done) is Auth speaking, not closing silently: it passes through unchanged.
fn is_tls_alert(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>())
}

fn silent(cause: impl Into<String>) -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        SilentClose {
            cause: cause.into(),
        },
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstWord<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let heard = self.heard;
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if !heard && buf.filled().len() == before => {
                Poll::Ready(Err(silent("it closed the connection")))
            }
            Poll::Ready(Ok(())) => {
                self.heard = true;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) if !heard && !is_tls_alert(&e) => {
                Poll::Ready(Err(silent(e.to_string())))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstWord<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let heard = self.heard;
        match Pin::new(&mut self.inner).poll_write(cx, data) {
            Poll::Ready(Err(e)) if !heard && !is_tls_alert(&e) => {
                Poll::Ready(Err(silent(e.to_string())))
            }
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let heard = self.heard;
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Ready(Err(e)) if !heard && !is_tls_alert(&e) => {
                Poll::Ready(Err(silent(e.to_string())))
            }
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// True when `error`'s chain holds a [`SilentClose`] (however the HTTP/2 and gRPC layers
/// wrapped it), or says so in its text.
pub fn closed_silently(error: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<SilentClose>()
            || e.downcast_ref::<io::Error>()
                .and_then(io::Error::get_ref)
                .is_some_and(|inner| inner.is::<SilentClose>())
        {
            return true;
        }
        next = e.source();
    }
    crate::error_chain(Some(error)).contains("closed the connection right after the TLS handshake")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn an_end_before_the_first_byte_is_a_silent_close() {
        let (client, server) = tokio::io::duplex(64);
        drop(server);
        let mut stream = FirstWord::new(client);
        let err = stream.read(&mut [0u8; 8]).await.unwrap_err();
        assert!(closed_silently(&err), "{err}");
        assert!(err.to_string().contains("right after the TLS handshake"));
    }

    #[tokio::test]
    async fn after_the_first_byte_an_end_is_an_end() {
        let (client, mut server) = tokio::io::duplex(64);
        server.write_all(b"x").await.unwrap();
        drop(server);
        let mut stream = FirstWord::new(client);
        let mut buf = [0u8; 8];
        assert_eq!(stream.read(&mut buf).await.unwrap(), 1);
        assert_eq!(stream.read(&mut buf).await.unwrap(), 0, "a clean end");
    }

    struct Alert;

    impl AsyncRead for Alert {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                rustls::Error::AlertReceived(rustls::AlertDescription::BadCertificate),
            )))
        }
    }

    #[tokio::test]
    async fn a_tls_alert_is_auth_speaking_not_a_silent_close() {
        // A TLS 1.3 server refuses a client certificate with an alert after the client's
        // handshake is done: that is a TLS rejection, to be reported as one.
        let err = FirstWord::new(Alert).read(&mut [0u8; 8]).await.unwrap_err();
        assert!(!closed_silently(&err), "{err}");
        assert!(err.to_string().contains("BadCertificate"), "{err}");
    }

    #[test]
    fn other_errors_are_not_silent_closes() {
        let err = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert!(!closed_silently(&err));
    }
}
