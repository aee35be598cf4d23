//! An L7 load balancer in front of a Teleport Proxy, the way many clusters sit behind one: it
//! terminates TLS with its own certificate, negotiates no ALPN (so the Proxy's ALPN router is
//! out of reach), and forwards the bytes to the Proxy over a TLS connection of its own that
//! offers only `http/1.1`. Only the Proxy's connection upgrade gets through to Auth.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

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
