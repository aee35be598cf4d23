//! `teleport-mattermost start`: one bridge and its callback server from a TOML file, the way
//! Teleport's original plugin ran under systemd.
//!
//! SIGTERM/SIGINT shut down gracefully. SIGHUP re-reads the certificate files and the token
//! (and the HTTPS certificate); a bad new identity is reported and the old one kept.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::bridge::Bridge;
use crate::callback::{Registry, router};
use crate::config::{self, IdentityPaths, StandaloneConfig};
use crate::http_server::{self, Limits, TlsConfig};
use crate::instance::{Credentials, Instance};
use crate::teleport::identity::{Identity, IdentityError, PemSource};

/// Command-line switches of `start`.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `-d`: debug logging (applied by the caller when it sets up logging).
    pub debug: bool,
    /// Serve the callback over plain HTTP (behind a TLS-terminating proxy).
    pub insecure_no_tls: bool,
    /// The config file, re-read on SIGHUP for a new token.
    pub config_path: Option<PathBuf>,
}

/// Why the standalone plugin could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A certificate or key file could not be read.
    #[error("cannot read {path}: {source}; check the [teleport] paths in the config")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The identity is malformed, mismatched, expired or not yet valid.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The Mattermost client could not be built.
    #[error(transparent)]
    Mattermost(#[from] crate::mattermost::MattermostError),
    /// The HTTPS certificate could not be loaded or made.
    #[error("cannot set up HTTPS for the callback server: {0}")]
    Tls(String),
    /// The callback server could not listen.
    #[error("cannot listen on {addr}: {source}; check [http] listen_addr")]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, StartError> {
    std::fs::read(path).map_err(|source| StartError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads and validates the identity named by the config, including its validity period.
pub fn load_identity(paths: &IdentityPaths) -> Result<Identity, StartError> {
    let identity = match paths {
        IdentityPaths::Files { cert, key, cas } => {
            let (c, k, a) = (read(cert)?, read(key)?, read(cas)?);
            Identity::from_pems(
                PemSource {
                    label: &cert.display().to_string(),
                    bytes: &c,
                },
                PemSource {
                    label: &key.display().to_string(),
                    bytes: &k,
                },
                PemSource {
                    label: &cas.display().to_string(),
                    bytes: &a,
                },
            )?
        }
        IdentityPaths::IdentityFile(path) => {
            let bytes = read(path)?;
            Identity::from_identity_file(PemSource {
                label: &path.display().to_string(),
                bytes: &bytes,
            })?
        }
    };
    identity.check_time(chrono::Utc::now())?;
    Ok(identity)
}

/// Runs until SIGTERM or SIGINT.
pub async fn run(config: StandaloneConfig, options: Options) -> Result<(), StartError> {
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        "Starting Teleport Access Mattermost plugin"
    );
    let identity = load_identity(&config.identity)?;
    let mut settings = config.settings.clone();
    if let Some(path) = &config.teleport_ca_file {
        let pem = read(path)?;
        let bundle = crate::settings::CaBundle::from_pem(&path.display().to_string(), &pem)
            .map_err(|e| StartError::Tls(format!("teleport.ca_file: {e}")))?;
        settings.teleport.proxy_ca = Some(bundle);
    }
    if let Some(path) = &config.mattermost_ca_file {
        let pem = read(path)?;
        let bundle = crate::settings::CaBundle::from_pem(&path.display().to_string(), &pem)
            .map_err(|e| {
                StartError::Mattermost(crate::mattermost::MattermostError::Config(format!(
                    "mattermost.ca_file: {e}"
                )))
            })?;
        tracing::info!(file = %path.display(), certificates = bundle.len(), "trusting extra CAs for Mattermost");
        settings.mattermost.ca_bundle = Some(bundle);
    }
    tracing::info!(subject = %identity.subject, not_after = %identity.not_after.to_rfc3339(), "loaded Teleport identity");
    let instance = Instance::new(
        settings,
        Credentials {
            identity,
            token: config.settings.mattermost.token.clone(),
        },
    )?;
    let registry = Arc::new(Registry::default());
    registry.insert(instance.clone());

    let shutdown = CancellationToken::new();
    let server = serve_callbacks(&config, &options, registry.clone(), shutdown.clone()).await?;
    let bridge = tokio::spawn(Bridge::new(instance.clone()).run(shutdown.clone()));

    let mut term = signal(SignalKind::terminate()).map_err(|e| StartError::Tls(e.to_string()))?;
    let mut hup = signal(SignalKind::hangup()).map_err(|e| StartError::Tls(e.to_string()))?;
    // `tctl auth sign` renewing the files in place should not need a SIGHUP either.
    let mut files = watched_files(&config, &options);
    let mut stamp = stamp_of(&files);
    let mut poll = tokio::time::interval(Duration::from_secs(5));
    let mut identity_verdict = String::new();
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading identity and token");
                reload(&config, &options, &instance, server.tls.as_ref()).await;
                files = watched_files(&config, &options);
                stamp = stamp_of(&files);
            }
            _ = poll.tick() => {
                // Say once when the identity starts running out (tbot stopped renewing it, or
                // the re-signing is due), and when it has expired.
                let id = instance.credentials().identity.clone();
                let health = crate::instance::identity_health(&id.subject, id.not_before, id.not_after, chrono::Utc::now());
                if health.reason != identity_verdict {
                    match health.reason.as_str() {
                        "Valid" => {}
                        "ExpiresSoon" => tracing::warn!("{}", health.message),
                        _ => tracing::error!("{}", health.message),
                    }
                    identity_verdict = health.reason;
                }
                let now = stamp_of(&files);
                if now != stamp {
                    tracing::info!("identity or config files changed; reloading");
                    stamp = now;
                    reload(&config, &options, &instance, server.tls.as_ref()).await;
                }
            }
        }
    }
    tracing::info!("shutting down");
    shutdown.cancel();
    let _ = bridge.await;
    let _ = server.task.await;
    tracing::info!("stopped");
    Ok(())
}

/// The running callback server.
pub struct CallbackServer {
    /// The server task; it ends once `stop` is cancelled and open requests finished.
    pub task: tokio::task::JoinHandle<()>,
    /// The TLS config, swapped on reload (None for plain HTTP).
    pub tls: Option<TlsConfig>,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// A rustls server config from a certificate chain and key in PEM.
fn server_tls(cert_pem: &[u8], key_pem: &[u8]) -> Result<rustls::ServerConfig, String> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate: {e}"))?;
    if chain.is_empty() {
        return Err("certificate: no PEM CERTIFICATE block".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("key: {e}"))?;
    rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())
}

/// The HTTPS config from `https_cert_file`/`https_key_file`.
fn tls_from_files(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, StartError> {
    let (c, k) = (read(cert)?, read(key)?);
    server_tls(&c, &k)
        .map_err(|e| StartError::Tls(format!("{} / {}: {e}", cert.display(), key.display())))
}

async fn serve_callbacks(
    config: &StandaloneConfig,
    options: &Options,
    registry: Arc<Registry>,
    stop: CancellationToken,
) -> Result<CallbackServer, StartError> {
    let addr = config.http.listen_addr;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })?;
    let addr = listener.local_addr().unwrap_or(addr);
    let app = router(registry);
    if options.insecure_no_tls {
        tracing::warn!(%addr, "callback server listening over plain HTTP (--insecure-no-tls); put a TLS-terminating proxy in front");
        let task = tokio::spawn(http_server::serve(listener, app, Limits::default(), stop));
        return Ok(CallbackServer {
            task,
            tls: None,
            addr,
        });
    }
    let tls = match (&config.http.https_cert_file, &config.http.https_key_file) {
        (Some(cert), Some(key)) => tls_from_files(cert, key)?,
        _ => {
            let host = config
                .http
                .public_url
                .host_str()
                .unwrap_or("localhost")
                .to_string();
            let cert = rcgen::generate_simple_self_signed(vec![host])
                .map_err(|e| StartError::Tls(e.to_string()))?;
            tracing::warn!(
                "no https_cert_file/https_key_file configured: serving HTTPS with a self-signed certificate; Mattermost must be told to trust it, or use a proxy"
            );
            server_tls(
                cert.cert.pem().as_bytes(),
                cert.signing_key.serialize_pem().as_bytes(),
            )
            .map_err(StartError::Tls)?
        }
    };
    let tls: TlsConfig = Arc::new(arc_swap::ArcSwap::from_pointee(tls));
    tracing::info!(%addr, "HTTPS server listening");
    let task = tokio::spawn(http_server::serve_tls(
        listener,
        app,
        Limits::default(),
        tls.clone(),
        stop,
    ));
    Ok(CallbackServer {
        task,
        tls: Some(tls),
        addr,
    })
}

/// The files whose change triggers a reload: the identity and the config (for the token).
fn watched_files(config: &StandaloneConfig, options: &Options) -> Vec<PathBuf> {
    let mut files = match &config.identity {
        IdentityPaths::Files { cert, key, cas } => vec![cert.clone(), key.clone(), cas.clone()],
        IdentityPaths::IdentityFile(path) => vec![path.clone()],
    };
    files.extend(options.config_path.clone());
    files
}

/// Modification time and size of each file (None when unreadable).
fn stamp_of(files: &[PathBuf]) -> Vec<Option<(std::time::SystemTime, u64)>> {
    files
        .iter()
        .map(|f| {
            let m = std::fs::metadata(f).ok()?;
            Some((m.modified().ok()?, m.len()))
        })
        .collect()
}

/// Re-reads the identity files and the token; keeps the old ones when the new are bad.
async fn reload(
    config: &StandaloneConfig,
    options: &Options,
    instance: &Instance,
    tls: Option<&TlsConfig>,
) {
    let token = match &options.config_path {
        Some(path) => match config::load(path) {
            Ok(fresh) => fresh.settings.mattermost.token,
            Err(e) => {
                tracing::error!(error = %e, "config file is no longer valid; keeping the current token");
                config.settings.mattermost.token.clone()
            }
        },
        None => config.settings.mattermost.token.clone(),
    };
    match load_identity(&config.identity) {
        Ok(identity) => {
            let changed = identity.fingerprint() != instance.credentials().identity.fingerprint();
            match instance.update_credentials(Credentials { identity, token }) {
                Ok(()) => tracing::info!(identity_changed = changed, "credentials reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "new token rejected; keeping the current one")
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "new identity rejected; keeping the current one"),
    }
    if let (Some(tls), Some(cert), Some(key)) = (
        tls,
        &config.http.https_cert_file,
        &config.http.https_key_file,
    ) {
        match tls_from_files(cert, key) {
            Ok(fresh) => tls.store(Arc::new(fresh)),
            Err(e) => {
                tracing::error!(error = %e, "HTTPS certificate reload failed; keeping the current one")
            }
        }
    }
}
