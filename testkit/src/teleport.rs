//! A Teleport Auth server double: the `proto.AuthService` RPCs the plugin uses, over real
//! mutual TLS on 127.0.0.1, with Teleport's semantics for watches, plugin data and request
//! state (see `CONTRACTS.md` §1) and fault injection.
//!
//! Semantics reproduced from Teleport's sources:
//! - `WatchEvents` sends INIT (with a `WatchStatus`) first, then only new PUT/DELETE events,
//!   never a snapshot. A deleted (expired) request arrives as DELETE with a `ResourceHeader`.
//! - Plugin data (`api/types/plugin_data.go`, `lib/services/local/plugin_data.go`): with no
//!   entry, every expected value must be `""`; otherwise each expected key must equal the
//!   stored value, a missing key counting as `""`. A mismatch is `trace.CompareFailed`, sent
//!   as gRPC `FailedPrecondition`. `Set` `""` deletes a key and an emptied entry is removed.
//!   Creating plugin data requires the access request to exist; the data outlives it by an
//!   hour after its access expiry (as a real v13.3.8 showed), then is gone.
//! - `SetAccessRequestState` (`lib/services/local/dynamic_access.go`,
//!   `AccessRequestV3.SetState`): a missing request is `NotFound`; a DENIED request cannot
//!   change to another state (`InvalidArgument` "... (already denied)") while DENIED again is
//!   a no-op; anything else overwrites the state and the resolve reason.
//!
//! It plays the version [`TeleportDouble::set_ping`] reports (17.4.2 unless told), including
//! what v16 to v19 added:
//! - Client version check (`lib/auth/middleware.go`, `ValidateClientVersion`, v16+): a call
//!   whose gRPC metadata `version` is older than `<server major − 1>.0.0-aa`, or not a version
//!   at all, is refused with `AccessDenied("client version is unsupported")` (gRPC
//!   `PermissionDenied`); a call without `version` is allowed. Every call's metadata is kept.
//! - Locks: every call of a locked user fails with a bare `AccessDenied("access denied")`,
//!   `Ping` included: the authorizer's "lock targeting … is in force" goes through
//!   `ConvertAuthorizerError` (`lib/authz/permissions.go`), as a real v13.3.8 showed. Playing
//!   v16 or later, a locked user's new connection is also closed right after the TLS handshake
//!   (`lib/auth/transport_credentials.go` `validateIdentity`, read at 0082cf8b; gRPC-Go cannot
//!   send the error). v13.3.8 did not; the version in between that started is not known.
//! - `disconnect_expired_cert` (the same file, `newTimeoutConn`; PR #41826, May 2024, in v16
//!   and backported to v13, v14 and v15 patch releases): the connection is closed when its
//!   client certificate expires. A real v13.3.8 kept it open.
//! - v18 requests: [`NewRequest`] can carry a request kind (24), resources with constraints
//!   (26, with 14 filled from it as Auth does) and a later start (21); PROMOTED is a state.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::Utc;
use teleport_mattermost::plugin_data::PluginData;
use teleport_mattermost::request::{
    AccessRequest, RequestKind, RequestState, RequestedResource, ResourceConstraints, to_timestamp,
};
use teleport_mattermost::teleport::client::PLUGIN_NAME;
use teleport_mattermost::teleport::wire::proto::auth_service_server::{
    AuthService, AuthServiceServer,
};
use teleport_mattermost::teleport::wire::proto::{self, Operation, event};
use teleport_mattermost::teleport::wire::types;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::Stream;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Server;
use tonic::{Code, Request, Response, Status};

use crate::grpc_link::{PeerInfo, PingPolicy, PingStats, WatchedStream};

mod amr;
use crate::pki::TestPki;
pub use amr::{NewRule, RuleSupport};

const KIND_ACCESS_REQUEST: &str = "access_request";
/// How long Teleport keeps plugin data after its request's access expiry.
const PLUGIN_DATA_GRACE: Duration = Duration::from_secs(3600);

/// The RPCs of the double, for fault injection and call counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rpc {
    /// `Ping`.
    Ping,
    /// `WatchEvents`.
    WatchEvents,
    /// `GetAccessRequestsV2`.
    GetAccessRequests,
    /// `GetPluginData`.
    GetPluginData,
    /// `UpdatePluginData`.
    UpdatePluginData,
    /// `SetAccessRequestState`.
    SetAccessRequestState,
    /// `SubmitAccessReview`.
    SubmitAccessReview,
    /// `ListAccessMonitoringRulesWithFilter`.
    ListAccessMonitoringRules,
    /// `teleport.users.v1.UsersService.GetUser`.
    GetUser,
    /// `ListResources`.
    ListResources,
}

/// A request to create with [`TeleportDouble::create_request`].
#[derive(Debug, Clone)]
pub struct NewRequest {
    /// Requesting user.
    pub user: String,
    /// Requested roles.
    pub roles: Vec<String>,
    /// The requester's reason.
    pub reason: String,
    /// Suggested reviewers (usually emails).
    pub suggested_reviewers: Vec<String>,
    /// Access expiry from now; one hour when `None`.
    pub expires_in: Option<Duration>,
    /// The request's kind (field 24, v18+); Auth adds a long-term grouping (25) to LONG_TERM.
    pub kind: RequestKind,
    /// Resources asked for, with constraints (field 26, v18+); Auth fills field 14 from them.
    pub resources: Vec<RequestedResource>,
    /// When the access may start, from now (field 21).
    pub starts_in: Option<Duration>,
    /// The pending request's own TTL (`ResourceExpiry`, field 22).
    pub pending_ttl: Option<Duration>,
}

impl Default for NewRequest {
    fn default() -> Self {
        Self {
            user: "alice@example.com".to_owned(),
            roles: vec!["editor".to_owned()],
            reason: String::new(),
            suggested_reviewers: Vec::new(),
            expires_in: None,
            kind: RequestKind::Undefined,
            resources: Vec::new(),
            starts_in: None,
            pending_ttl: None,
        }
    }
}

impl NewRequest {
    /// A request by `user` for the role dba, with a reason: what most tests need.
    pub fn by(user: &str) -> NewRequest {
        NewRequest {
            user: user.into(),
            roles: vec!["dba".into()],
            reason: "fix the prod database".into(),
            ..Default::default()
        }
    }
}

/// One successful `SetAccessRequestState` call, as Teleport's audit log would show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    /// The request id.
    pub id: String,
    /// The state set.
    pub state: RequestState,
    /// Who acted (`mattermost:<email>`).
    pub delegator: String,
    /// The resolve reason.
    pub reason: String,
}

type EventTx = mpsc::UnboundedSender<Result<proto::Event, Status>>;

#[derive(Default)]
struct State {
    /// id → (insertion sequence, request).
    requests: HashMap<String, (u64, types::AccessRequestV3)>,
    next_seq: u64,
    /// request id → plugin name → data. Outlives the request, as in Teleport.
    plugin_data: HashMap<String, HashMap<String, HashMap<String, String>>>,
    /// request id → when the plugin data of a deleted request disappears.
    plugin_data_expires: HashMap<String, Instant>,
    /// How long plugin data outlives its request's access expiry; an hour unless a test
    /// shortens it.
    plugin_data_grace: Option<Duration>,
    ping: proto::PingResponse,
    state_changes: Vec<StateChange>,
    serials: Vec<String>,
    seen_serials: HashSet<String>,
    last_serial: Option<String>,
    watchers: Vec<EventTx>,
    /// The watches that asked for (and got) access monitoring rules.
    rule_watchers: Vec<EventTx>,
    /// Access monitoring rules, users' traits and resources.
    amr: amr::AmrState,
    watch_count: usize,
    init_delay: Duration,
    fail_compare: usize,
    /// `UpdatePluginData` calls refused because their Expect did not hold.
    compare_failures: usize,
    faults: HashMap<Rpc, (usize, Code)>,
    holds: HashMap<Rpc, Arc<Hold>>,
    calls: HashMap<Rpc, usize>,
    shut_down: bool,
    /// Close connections at their client certificate's expiry.
    disconnect_expired_cert: bool,
    /// Locked users → the lock's message (which Teleport keeps to its own log).
    locks: HashMap<String, String>,
    /// New connections closed after the TLS handshake because of a lock.
    handshake_refusals: usize,
    /// Each call's gRPC metadata (ASCII keys and values), in order.
    metadata: Vec<(Rpc, Vec<(String, String)>)>,
}

impl State {
    /// Forgets the plugin data of deleted requests once its time is up.
    fn drop_expired_plugin_data(&mut self) {
        let now = Instant::now();
        let gone: Vec<String> = self
            .plugin_data_expires
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.plugin_data_expires.remove(&id);
            self.plugin_data.remove(&id);
        }
    }

    /// Sends to every open watch, dropping closed ones. Called with the lock held, so events
    /// reach every watcher in the order the changes happened.
    fn emit(&mut self, event: proto::Event) {
        self.watchers
            .retain(|tx| tx.send(Ok(event.clone())).is_ok());
    }

    fn emit_put(&mut self, id: &str) {
        if let Some((_, req)) = self.requests.get(id) {
            let event = proto::Event {
                r#type: Operation::Put as i32,
                resource: Some(event::Resource::AccessRequest(req.clone())),
            };
            self.emit(event);
        }
    }

    fn request_mut(&mut self, id: &str) -> &mut types::AccessRequestV3 {
        &mut self
            .requests
            .get_mut(id)
            .unwrap_or_else(|| panic!("Teleport double: no access request {id}"))
            .1
    }

    /// The fault to inject for this call, if any, consuming one.
    fn take_fault(&mut self, rpc: Rpc) -> Option<Status> {
        *self.calls.entry(rpc).or_default() += 1;
        if self.shut_down {
            return Some(Status::unavailable("Teleport double is shut down"));
        }
        let (left, code) = self.faults.get_mut(&rpc)?;
        if *left == 0 {
            return None;
        }
        *left -= 1;
        Some(Status::new(
            *code,
            format!("injected {code:?} failure of {rpc:?}"),
        ))
    }
}

/// Calls of one RPC held at their start until the test releases them.
#[derive(Debug)]
struct Hold {
    released: tokio::sync::watch::Sender<bool>,
    waiting: std::sync::atomic::AtomicUsize,
}

/// The handle of [`TeleportDouble::hold`].
#[derive(Clone)]
pub struct HeldCalls {
    hold: Arc<Hold>,
    inner: Arc<Inner>,
    rpc: Rpc,
}

impl std::fmt::Debug for HeldCalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldCalls")
            .field("rpc", &self.rpc)
            .field("waiting", &self.waiting())
            .finish()
    }
}

impl HeldCalls {
    /// How many calls are waiting right now.
    pub fn waiting(&self) -> usize {
        self.hold.waiting.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until at least `n` calls are held; false after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.waiting() < n {
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Lets every held call (and later ones) proceed.
    pub fn release(&self) {
        self.inner.lock().holds.remove(&self.rpc);
        self.hold.released.send_replace(true);
    }
}

struct Inner {
    state: Mutex<State>,
    addr: SocketAddr,
    shutdown: Mutex<Option<oneshot::Sender<()>>>,
    ping_policy: Mutex<PingPolicy>,
    ping_stats: Arc<PingStats>,
}

/// The server side of mutual TLS: the double's certificate, client certificates from `ca_pem`
/// required, HTTP/2 only.
fn server_tls(cert_pem: &str, key_pem: &str, ca_pem: &str) -> rustls::ServerConfig {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(ca.expect("CA PEM")).expect("a CA certificate");
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .expect("client verifier");
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("server certificate PEM");
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("server key PEM");
    let mut config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .expect("server TLS config");
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the double's state from the others.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.drop_expired_plugin_data();
        state
    }

    /// Waits while calls of `rpc` are held by the test.
    async fn gate(&self, rpc: Rpc) {
        let hold = self.lock().holds.get(&rpc).cloned();
        if let Some(hold) = hold {
            let mut released = hold.released.subscribe();
            hold.waiting
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = released.wait_for(|r| *r).await;
            hold.waiting
                .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Records the caller's certificate serial and metadata, applies Teleport's per-call
    /// checks (client version, locks) and injected faults.
    fn begin<T>(&self, rpc: Rpc, request: &Request<T>) -> Result<MutexGuard<'_, State>, Status> {
        let peer = request.extensions().get::<PeerInfo>();
        let serial = peer.and_then(|p| p.serial.clone());
        let user = peer.and_then(|p| p.user.clone());
        let metadata: Vec<(String, String)> = request
            .metadata()
            .iter()
            .filter_map(|entry| match entry {
                tonic::metadata::KeyAndValueRef::Ascii(key, value) => Some((
                    key.as_str().to_owned(),
                    value.to_str().unwrap_or_default().to_owned(),
                )),
                tonic::metadata::KeyAndValueRef::Binary(..) => None,
            })
            .collect();
        let mut state = self.lock();
        if let Some(serial) = serial {
            if state.seen_serials.insert(serial.clone()) {
                state.serials.push(serial.clone());
            }
            state.last_serial = Some(serial);
        }
        let version = metadata
            .iter()
            .find(|(key, _)| key == "version")
            .map(|(_, value)| value.clone());
        state.metadata.push((rpc, metadata));
        check_client_version(&state.ping.server_version, version.as_deref())?;
        if user.as_ref().is_some_and(|u| state.locks.contains_key(u)) {
            return Err(Status::permission_denied("access denied"));
        }
        match state.take_fault(rpc) {
            Some(status) => Err(status),
            None => Ok(state),
        }
    }
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::hours(1))
}

fn resource_id(r: &RequestedResource) -> types::ResourceId {
    types::ResourceId {
        cluster_name: r.cluster.clone(),
        kind: r.kind.clone(),
        name: r.name.clone(),
        sub_resource_name: r.sub_resource.clone(),
    }
}

fn constraints(c: &ResourceConstraints) -> types::ResourceConstraints {
    use types::resource_constraints::Details;
    types::ResourceConstraints {
        version: "v1".to_owned(),
        details: match c {
            ResourceConstraints::AwsConsole { role_arns } => {
                Some(Details::AwsConsole(types::AwsConsoleResourceConstraints {
                    role_arns: role_arns.clone(),
                }))
            }
            ResourceConstraints::Ssh { logins } => {
                Some(Details::Ssh(types::SshResourceConstraints {
                    logins: logins.clone(),
                }))
            }
            ResourceConstraints::Unknown => None,
        },
    }
}

/// `Middleware.ValidateClientVersion` (`lib/auth/middleware.go`) of a v16+ Auth: no `version`
/// metadata passes; one that is not a version, or is older than `teleport.MinClientSemVer()`
/// (`<major − 1>.0.0-aa`), is refused. Servers before v16 do not check.
pub fn check_client_version(server_version: &str, client: Option<&str>) -> Result<(), Status> {
    let Some(client) = client else {
        return Ok(());
    };
    let major = major_version(server_version);
    if major < 16 {
        return Ok(());
    }
    let oldest = semver::Version::parse(&format!("{}.0.0-aa", major - 1)).expect("a version");
    match semver::Version::parse(client.trim_start_matches('v')) {
        Ok(version) if version >= oldest => Ok(()),
        _ => Err(Status::permission_denied("client version is unsupported")),
    }
}

fn major_version(version: &str) -> u64 {
    semver::Version::parse(version.trim_start_matches('v')).map_or(0, |v| v.major)
}

/// The subject common name of a DER certificate (Teleport's user).
fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

/// How long until a DER certificate expires (zero when it has).
fn time_to_expiry(der: &[u8]) -> Option<Duration> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let left = cert.validity().not_after.timestamp() - Utc::now().timestamp();
    Some(Duration::from_secs(left.max(0).unsigned_abs()))
}

fn serial_hex(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(
        cert.raw_serial()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    )
}

/// An in-process Teleport Auth server with real mutual TLS. Clones share one server.
#[derive(Clone)]
pub struct TeleportDouble {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TeleportDouble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TeleportDouble")
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

impl TeleportDouble {
    /// Starts serving on `127.0.0.1:<random port>` with a server certificate from `pki`,
    /// requiring client certificates signed by `pki`'s CA.
    pub async fn start(pki: &TestPki) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind Teleport double");
        let addr = listener.local_addr().expect("local addr");
        let (cert, key) = pki.server_cert();
        let tls = Arc::new(server_tls(&cert, &key, &pki.ca_pem()));
        let (tx, rx) = oneshot::channel::<()>();
        let state = State {
            ping: proto::PingResponse {
                cluster_name: "test-cluster".to_owned(),
                server_version: "17.4.2".to_owned(),
                server_features: Some(proto::Features {
                    advanced_access_workflows: false,
                }),
                proxy_public_addr: "teleport.example.com:443".to_owned(),
                ..Default::default()
            },
            ..Default::default()
        };
        let inner = Arc::new(Inner {
            state: Mutex::new(state),
            addr,
            shutdown: Mutex::new(Some(tx)),
            ping_policy: Mutex::new(PingPolicy::default()),
            ping_stats: Arc::default(),
        });
        let service = AuthServiceServer::new(Service(inner.clone()))
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024);
        let router = Server::builder()
            .add_service(service)
            .add_service(
                teleport_mattermost::teleport::wire::teleport::accessmonitoringrules::v1::access_monitoring_rules_service_server::AccessMonitoringRulesServiceServer::new(
                    amr::RulesService(inner.clone()),
                ),
            )
            .add_service(
                teleport_mattermost::teleport::wire::teleport::users::v1::users_service_server::UsersServiceServer::new(
                    amr::UsersService(inner.clone()),
                ),
            );
        // Mutual TLS here rather than in tonic, so the HTTP/2 frames can be watched.
        let (conn_tx, conn_rx) = mpsc::unbounded_channel::<Result<WatchedStream, std::io::Error>>();
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let accepting = inner.clone();
        tokio::spawn(async move {
            while let Ok((tcp, remote)) = listener.accept().await {
                // Nagle would delay each small gRPC frame by the peer's delayed ACK.
                let _ = tcp.set_nodelay(true);
                let (acceptor, conn_tx, inner) =
                    (acceptor.clone(), conn_tx.clone(), accepting.clone());
                tokio::spawn(async move {
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                    else {
                        return;
                    };
                    let mut stream = stream;
                    let leaf = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|certs| certs.first())
                        .map(|c| c.as_ref().to_vec())
                        .unwrap_or_default();
                    let serial = serial_hex(&leaf);
                    let user = common_name(&leaf);
                    let (locked, cut_at_expiry) = {
                        let mut state = inner.lock();
                        let locked = user.as_ref().is_some_and(|u| state.locks.contains_key(u))
                            && major_version(&state.ping.server_version) >= 16;
                        if locked {
                            state.handshake_refusals += 1;
                        }
                        (locked, state.disconnect_expired_cert)
                    };
                    if locked {
                        // validateIdentity failed: gRPC-Go closes the connection, which sends
                        // TLS close_notify and nothing else.
                        use tokio::io::AsyncWriteExt as _;
                        let _ = stream.shutdown().await;
                        return;
                    }
                    let policy = *inner.ping_policy.lock().unwrap_or_else(|e| e.into_inner());
                    let mut watched = WatchedStream::new(
                        stream,
                        PeerInfo {
                            remote,
                            serial,
                            user,
                        },
                        policy,
                        inner.ping_stats.clone(),
                    );
                    if cut_at_expiry && let Some(left) = time_to_expiry(&leaf) {
                        watched = watched.close_at(tokio::time::Instant::now() + left);
                    }
                    let _ = conn_tx.send(Ok(watched));
                });
            }
        });
        tokio::spawn(async move {
            let _ = router
                .serve_with_incoming_shutdown(UnboundedReceiverStream::new(conn_rx), async {
                    let _ = rx.await;
                })
                .await;
        });
        Self { inner }
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        self.inner.addr.to_string()
    }

    /// What `Ping` answers.
    pub fn set_ping(
        &self,
        cluster_name: &str,
        server_version: &str,
        proxy_public_addr: &str,
        advanced_workflows: bool,
    ) {
        let mut state = self.inner.lock();
        state.ping.cluster_name = cluster_name.to_owned();
        state.ping.server_version = server_version.to_owned();
        state.ping.proxy_public_addr = proxy_public_addr.to_owned();
        state.ping.server_features = Some(proto::Features {
            advanced_access_workflows: advanced_workflows,
        });
    }

    /// Creates a PENDING request (uuid id) and emits PUT.
    pub fn create_request(&self, req: NewRequest) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let now = Utc::now();
        let access_expiry = now
            + chrono::Duration::from_std(req.expires_in.unwrap_or(Duration::from_secs(3600)))
                .unwrap_or(chrono::Duration::hours(1));
        let wire = types::AccessRequestV3 {
            kind: KIND_ACCESS_REQUEST.to_owned(),
            sub_kind: String::new(),
            version: "v3".to_owned(),
            metadata: Some(types::Metadata {
                name: id.clone(),
                namespace: "default".to_owned(),
                expires: Some(to_timestamp(access_expiry)),
                ..Default::default()
            }),
            spec: Some(types::AccessRequestSpecV3 {
                user: req.user,
                roles: req.roles,
                state: types::RequestState::Pending as i32,
                created: Some(to_timestamp(now)),
                expires: Some(to_timestamp(access_expiry)),
                request_reason: req.reason,
                suggested_reviewers: req.suggested_reviewers,
                requested_resource_i_ds: req.resources.iter().map(resource_id).collect(),
                requested_resource_access_i_ds: req
                    .resources
                    .iter()
                    .filter(|_| req.resources.iter().any(|r| r.constraints.is_some()))
                    .map(|r| types::ResourceAccessId {
                        id: Some(resource_id(r)),
                        constraints: r.constraints.as_ref().map(constraints),
                    })
                    .collect(),
                request_kind: match req.kind {
                    RequestKind::Undefined => types::AccessRequestKind::Undefined,
                    RequestKind::ShortTerm => types::AccessRequestKind::ShortTerm,
                    RequestKind::LongTerm => types::AccessRequestKind::LongTerm,
                } as i32,
                long_term_grouping: (req.kind == RequestKind::LongTerm)
                    .then_some(types::LongTermResourceGrouping {}),
                assume_start_time: req
                    .starts_in
                    .map(|d| to_timestamp(now + chrono_duration(d))),
                resource_expiry: req
                    .pending_ttl
                    .map(|d| to_timestamp(now + chrono_duration(d))),
                ..Default::default()
            }),
        };
        let mut state = self.inner.lock();
        let seq = state.next_seq;
        state.next_seq += 1;
        state.requests.insert(id.clone(), (seq, wire));
        state.emit_put(&id);
        id
    }

    /// Appends a review (without changing the state) and emits PUT.
    pub fn review(&self, id: &str, author: &str, state: RequestState, reason: &str) {
        let mut s = self.inner.lock();
        let spec = s.request_mut(id).spec.get_or_insert_with(Default::default);
        spec.reviews.push(types::AccessReview {
            author: author.to_owned(),
            proposed_state: state.to_wire() as i32,
            reason: reason.to_owned(),
            created: Some(to_timestamp(Utc::now())),
            ..Default::default()
        });
        s.emit_put(id);
    }

    /// Resolves the request as if done elsewhere (`tsh`, web UI) and emits PUT.
    pub fn resolve(&self, id: &str, state: RequestState, reason: &str) {
        let mut s = self.inner.lock();
        let spec = s.request_mut(id).spec.get_or_insert_with(Default::default);
        spec.state = state.to_wire() as i32;
        spec.resolve_reason = reason.to_owned();
        s.emit_put(id);
    }

    /// Promotes the request to an access list (v16+ Enterprise: PROMOTED, with the list's name
    /// and title in `accessList`, field 20) and emits PUT.
    pub fn promote(&self, id: &str, list_name: &str, list_title: &str) {
        let mut s = self.inner.lock();
        let spec = s.request_mut(id).spec.get_or_insert_with(Default::default);
        spec.state = types::RequestState::Promoted as i32;
        spec.access_list = Some(types::PromotedAccessList {
            name: list_name.to_owned(),
            title: list_title.to_owned(),
        });
        s.emit_put(id);
    }

    /// Deletes the request, as Teleport does on expiry, and emits DELETE. Plugin data stays
    /// for an hour after the request's access expiry (or [`Self::set_plugin_data_grace`]).
    pub fn expire(&self, id: &str) {
        let mut s = self.inner.lock();
        let Some((_, removed)) = s.requests.remove(id) else {
            return;
        };
        let until_expiry = removed
            .spec
            .as_ref()
            .and_then(|spec| spec.expires.as_ref())
            .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
            .and_then(|at| (at - Utc::now()).to_std().ok())
            .unwrap_or_default();
        let grace = s.plugin_data_grace.unwrap_or(PLUGIN_DATA_GRACE);
        s.plugin_data_expires
            .insert(id.to_owned(), Instant::now() + until_expiry + grace);
        let event = proto::Event {
            r#type: Operation::Delete as i32,
            resource: Some(event::Resource::ResourceHeader(types::ResourceHeader {
                kind: KIND_ACCESS_REQUEST.to_owned(),
                sub_kind: String::new(),
                version: "v3".to_owned(),
                metadata: Some(types::Metadata {
                    name: id.to_owned(),
                    namespace: "default".to_owned(),
                    ..Default::default()
                }),
            })),
        };
        s.emit(event);
    }

    /// The request as the plugin would decode it.
    pub fn request(&self, id: &str) -> Option<AccessRequest> {
        self.inner
            .lock()
            .requests
            .get(id)
            .map(|(_, r)| AccessRequest::from(r))
    }

    /// Every request, oldest first.
    pub fn requests(&self) -> Vec<AccessRequest> {
        let state = self.inner.lock();
        let mut all: Vec<_> = state.requests.values().collect();
        all.sort_by_key(|(seq, _)| *seq);
        all.into_iter()
            .map(|(_, r)| AccessRequest::from(r))
            .collect()
    }

    /// How long plugin data outlives its deleted request's access expiry (an hour, as in
    /// Teleport), for tests that need to see it go.
    pub fn set_plugin_data_grace(&self, grace: Duration) {
        self.inner.lock().plugin_data_grace = Some(grace);
    }

    /// The `mattermost` plugin's data for a request.
    pub fn plugin_data(&self, id: &str) -> Option<HashMap<String, String>> {
        self.inner
            .lock()
            .plugin_data
            .get(id)
            .and_then(|entries| entries.get(PLUGIN_NAME))
            .cloned()
    }

    /// The `mattermost` plugin's data for a request as the engine reads it (empty when
    /// there is none).
    pub fn decoded_plugin_data(&self, id: &str) -> PluginData {
        PluginData::decode(&self.plugin_data(id).unwrap_or_default())
    }

    /// Overwrites the `mattermost` plugin's data (seeding state, e.g. a takeover from
    /// Teleport's Go plugin). An empty map removes the entry.
    pub fn set_plugin_data(&self, id: &str, data: HashMap<String, String>) {
        let mut s = self.inner.lock();
        let entries = s.plugin_data.entry(id.to_owned()).or_default();
        let data: HashMap<_, _> = data.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        if data.is_empty() {
            entries.remove(PLUGIN_NAME);
        } else {
            entries.insert(PLUGIN_NAME.to_owned(), data);
        }
    }

    /// Successful `SetAccessRequestState` calls, in order.
    pub fn state_changes(&self) -> Vec<StateChange> {
        self.inner.lock().state_changes.clone()
    }

    /// Distinct client certificate serials seen, in first-seen order.
    pub fn client_serials(&self) -> Vec<String> {
        self.inner.lock().serials.clone()
    }

    /// The serial of the certificate that made the latest call.
    pub fn last_client_serial(&self) -> Option<String> {
        self.inner.lock().last_serial.clone()
    }

    /// Open watch streams that have received INIT.
    pub fn active_watches(&self) -> usize {
        let mut s = self.inner.lock();
        s.watchers.retain(|tx| !tx.is_closed());
        s.watchers.len()
    }

    /// Total `WatchEvents` calls so far.
    pub fn watch_count(&self) -> usize {
        self.inner.lock().watch_count
    }

    /// How many times `rpc` was called (including failed calls).
    pub fn calls(&self, rpc: Rpc) -> usize {
        self.inner.lock().calls.get(&rpc).copied().unwrap_or(0)
    }

    /// Waits until at least `n` watches are active; false on timeout.
    pub async fn wait_for_watches(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.active_watches() >= n {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Ends every open watch stream with `Unavailable`.
    pub fn drop_watches(&self) {
        let mut s = self.inner.lock();
        s.rule_watchers.clear();
        for tx in s.watchers.drain(..) {
            let _ = tx.send(Err(Status::unavailable(
                "watcher closed: connection to backend lost",
            )));
        }
    }

    /// Ends every open watch with an error status, as a server going away mid-stream does
    /// (`GOAWAY`, a broken pipe): the client sees a failed stream, not a clean end.
    pub fn break_watches(&self, code: Code) {
        let mut state = self.inner.lock();
        state.rule_watchers.clear();
        for tx in state.watchers.drain(..) {
            let _ = tx.send(Err(Status::new(
                code,
                "stream closed because of a broken pipe",
            )));
        }
    }

    /// Delays INIT on watches opened from now on.
    pub fn set_init_delay(&self, d: Duration) {
        self.inner.lock().init_delay = d;
    }

    /// How many `UpdatePluginData` calls were refused because their Expect did not hold: two
    /// writers raced on one request's plugin data.
    pub fn compare_failures(&self) -> usize {
        self.inner.lock().compare_failures
    }

    /// The next `n` `UpdatePluginData` calls fail with CompareFailed even when Expect holds.
    pub fn fail_next_compare(&self, n: usize) {
        self.inner.lock().fail_compare = n;
    }

    /// Applies `policy` to connections made from now on (Teleport's is the default).
    pub fn set_ping_policy(&self, policy: PingPolicy) {
        *self
            .inner
            .ping_policy
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = policy;
    }

    /// What the keepalive policy saw and did.
    pub fn ping_stats(&self) -> Arc<PingStats> {
        self.inner.ping_stats.clone()
    }

    /// Holds every call of `rpc` from now on at its start, before it reads or changes
    /// anything, until [`HeldCalls::release`]: a slow link, or a server stuck on a lock.
    pub fn hold(&self, rpc: Rpc) -> HeldCalls {
        let (released, _) = tokio::sync::watch::channel(false);
        let hold = Arc::new(Hold {
            released,
            waiting: Default::default(),
        });
        self.inner.lock().holds.insert(rpc, hold.clone());
        HeldCalls {
            hold,
            inner: self.inner.clone(),
            rpc,
        }
    }

    /// `disconnect_expired_cert`: connections made from now on are closed when their client
    /// certificate expires.
    pub fn set_disconnect_expired_cert(&self, on: bool) {
        self.inner.lock().disconnect_expired_cert = on;
    }

    /// Locks `user` (`tctl lock --user`): its calls are refused, and playing v16+ its new
    /// connections are closed after the TLS handshake.
    pub fn lock_user(&self, user: &str, message: &str) {
        self.inner
            .lock()
            .locks
            .insert(user.to_owned(), message.to_owned());
    }

    /// Lifts the lock on `user` (`tctl rm lock/<name>`).
    pub fn unlock_user(&self, user: &str) {
        self.inner.lock().locks.remove(user);
    }

    /// New connections closed after the TLS handshake because of a lock.
    pub fn handshake_refusals(&self) -> usize {
        self.inner.lock().handshake_refusals
    }

    /// Every call's gRPC metadata so far (ASCII entries), in order.
    pub fn call_metadata(&self) -> Vec<(Rpc, Vec<(String, String)>)> {
        self.inner.lock().metadata.clone()
    }

    /// The next `n` calls of `rpc` fail with `code`.
    pub fn fail_next(&self, rpc: Rpc, n: usize, code: Code) {
        self.inner.lock().faults.insert(rpc, (n, code));
    }

    /// Stops serving: ends watches, refuses new connections, fails further calls.
    pub fn shutdown(&self) {
        self.drop_watches();
        self.inner.lock().shut_down = true;
        if let Some(tx) = self
            .inner
            .shutdown
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = tx.send(());
        }
    }
}

/// Mirrors `types.AccessRequestFilter.Match`.
fn matches_filter(filter: &types::AccessRequestFilter, req: &types::AccessRequestV3) -> bool {
    let name = req.metadata.as_ref().map_or("", |m| m.name.as_str());
    let spec = req.spec.as_ref();
    (filter.id.is_empty() || filter.id == name)
        && (filter.user.is_empty() || spec.is_some_and(|s| s.user == filter.user))
        && (filter.state == types::RequestState::None as i32
            || spec.is_some_and(|s| s.state == filter.state))
}

/// Mirrors `PluginDataV3.checkExpectations`.
fn check_expectations(
    entry: Option<&HashMap<String, String>>,
    expect: &HashMap<String, String>,
) -> Result<(), Status> {
    for (key, want) in expect {
        let have = entry.and_then(|e| e.get(key)).map_or("", String::as_str);
        if have != want {
            return Err(Status::failed_precondition(format!(
                "expectations not met for field {key:?}"
            )));
        }
    }
    Ok(())
}

struct Service(Arc<Inner>);

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl AuthService for Service {
    async fn ping(
        &self,
        request: Request<proto::PingRequest>,
    ) -> Result<Response<proto::PingResponse>, Status> {
        let remote = request.extensions().get::<PeerInfo>().map(|p| p.remote);
        let state = self.0.begin(Rpc::Ping, &request)?;
        let mut resp = state.ping.clone();
        resp.remote_addr = remote.map(|a| a.to_string()).unwrap_or_default();
        Ok(Response::new(resp))
    }

    type WatchEventsStream = BoxStream<proto::Event>;

    async fn watch_events(
        &self,
        request: Request<proto::Watch>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let (delay, kinds, rules) = {
            let mut state = self.0.begin(Rpc::WatchEvents, &request)?;
            state.watch_count += 1;
            let watch = request.get_ref().clone();
            let (kinds, rules) =
                amr::watch_kinds(&state, watch.kinds, watch.allow_partial_success)?;
            (state.init_delay, kinds, rules)
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = self.0.clone();
        let register = move || {
            let mut state = inner.lock();
            if state.shut_down {
                return;
            }
            let init = proto::Event {
                r#type: Operation::Init as i32,
                resource: Some(event::Resource::WatchStatus(types::WatchStatusV1 {
                    kind: "watch_status".to_owned(),
                    version: "v1".to_owned(),
                    metadata: Some(types::Metadata {
                        name: "watch_status".to_owned(),
                        ..Default::default()
                    }),
                    spec: Some(types::WatchStatusSpecV1 { kinds }),
                    ..Default::default()
                })),
            };
            // INIT and registration under one lock: no event can slip in before INIT, and
            // nothing that happened before it is replayed.
            if tx.send(Ok(init)).is_ok() {
                if rules {
                    state.rule_watchers.push(tx.clone());
                }
                state.watchers.push(tx);
            }
        };
        if delay.is_zero() {
            register();
        } else {
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                register();
            });
        }
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }

    type GetAccessRequestsV2Stream = BoxStream<types::AccessRequestV3>;

    async fn get_access_requests_v2(
        &self,
        request: Request<types::AccessRequestFilter>,
    ) -> Result<Response<Self::GetAccessRequestsV2Stream>, Status> {
        self.0.gate(Rpc::GetAccessRequests).await;
        let matching = {
            let state = self.0.begin(Rpc::GetAccessRequests, &request)?;
            let filter = request.get_ref();
            let mut matching: Vec<_> = state
                .requests
                .values()
                .filter(|(_, r)| matches_filter(filter, r))
                .cloned()
                .collect();
            matching.sort_by_key(|(seq, _)| *seq);
            matching
        };
        let stream = tokio_stream::iter(matching.into_iter().map(|(_, r)| Ok(r)));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_plugin_data(
        &self,
        request: Request<types::PluginDataFilter>,
    ) -> Result<Response<proto::PluginDataSeq>, Status> {
        self.0.gate(Rpc::GetPluginData).await;
        let state = self.0.begin(Rpc::GetPluginData, &request)?;
        let filter = request.get_ref();
        if filter.kind != KIND_ACCESS_REQUEST {
            return Err(Status::invalid_argument(format!(
                "unsupported resource kind {:?}",
                filter.kind
            )));
        }
        let plugin_data = state
            .plugin_data
            .iter()
            .filter(|(id, _)| filter.resource.is_empty() || **id == filter.resource)
            .filter(|(_, entries)| filter.plugin.is_empty() || entries.contains_key(&filter.plugin))
            .map(|(id, entries)| types::PluginDataV3 {
                kind: "plugin_data".to_owned(),
                sub_kind: KIND_ACCESS_REQUEST.to_owned(),
                version: "v3".to_owned(),
                metadata: Some(types::Metadata {
                    name: id.clone(),
                    namespace: "default".to_owned(),
                    ..Default::default()
                }),
                spec: Some(types::PluginDataSpecV3 {
                    entries: entries
                        .iter()
                        .map(|(plugin, data)| {
                            (
                                plugin.clone(),
                                types::PluginDataEntry { data: data.clone() },
                            )
                        })
                        .collect(),
                }),
            })
            .collect();
        Ok(Response::new(proto::PluginDataSeq { plugin_data }))
    }

    async fn update_plugin_data(
        &self,
        request: Request<types::PluginDataUpdateParams>,
    ) -> Result<Response<()>, Status> {
        self.0.gate(Rpc::UpdatePluginData).await;
        let mut state = self.0.begin(Rpc::UpdatePluginData, &request)?;
        let params = request.get_ref();
        if params.kind != KIND_ACCESS_REQUEST {
            return Err(Status::invalid_argument(format!(
                "unsupported resource kind {:?}",
                params.kind
            )));
        }
        if state.fail_compare > 0 {
            state.fail_compare -= 1;
            return Err(Status::failed_precondition(format!(
                "too many concurrent writes to plugin data {}",
                params.resource
            )));
        }
        let exists = state.plugin_data.contains_key(&params.resource);
        if !exists && !state.requests.contains_key(&params.resource) {
            return Err(Status::not_found(format!(
                "access request {:?} not found",
                params.resource
            )));
        }
        let entries = state
            .plugin_data
            .entry(params.resource.clone())
            .or_default();
        // Teleport skips the check when Expect is nil, which is what an empty map decodes to.
        if !params.expect.is_empty()
            && let Err(refused) = check_expectations(entries.get(&params.plugin), &params.expect)
        {
            state.compare_failures += 1;
            return Err(refused);
        }
        let entry = entries.entry(params.plugin.clone()).or_default();
        for (key, value) in &params.set {
            if value.is_empty() {
                entry.remove(key);
            } else {
                entry.insert(key.clone(), value.clone());
            }
        }
        if entry.is_empty() {
            entries.remove(&params.plugin);
        }
        Ok(Response::new(()))
    }

    async fn set_access_request_state(
        &self,
        request: Request<proto::RequestStateSetter>,
    ) -> Result<Response<()>, Status> {
        self.0.gate(Rpc::SetAccessRequestState).await;
        let mut state = self.0.begin(Rpc::SetAccessRequestState, &request)?;
        let setter = request.get_ref();
        if setter.id.is_empty() {
            return Err(Status::invalid_argument("missing request id"));
        }
        let new_state = RequestState::from_wire(setter.state);
        if new_state == RequestState::None {
            return Err(Status::invalid_argument("missing request state"));
        }
        let Some((_, req)) = state.requests.get_mut(&setter.id) else {
            return Err(Status::not_found(format!(
                "cannot set state of access request {:?} (not found)",
                setter.id
            )));
        };
        let spec = req.spec.get_or_insert_with(Default::default);
        let current = RequestState::from_wire(spec.state);
        if current == RequestState::Denied && new_state != RequestState::Denied {
            return Err(Status::invalid_argument(format!(
                "cannot set request-state {:?} (already denied)",
                new_state.as_str()
            )));
        }
        spec.state = new_state.to_wire() as i32;
        spec.resolve_reason = setter.reason.clone();
        state.state_changes.push(StateChange {
            id: setter.id.clone(),
            state: new_state,
            delegator: setter.delegator.clone(),
            reason: setter.reason.clone(),
        });
        let id = setter.id.clone();
        state.emit_put(&id);
        Ok(Response::new(()))
    }

    /// Appends the review and, with Teleport's default threshold of one, applies its
    /// proposed state to a pending request.
    async fn submit_access_review(
        &self,
        request: Request<types::AccessReviewSubmission>,
    ) -> Result<Response<types::AccessRequestV3>, Status> {
        let mut state = self.0.begin(Rpc::SubmitAccessReview, &request)?;
        let submission = request.get_ref();
        let Some(review) = submission.review.clone() else {
            return Err(Status::invalid_argument("missing review"));
        };
        let Some((_, req)) = state.requests.get_mut(&submission.request_id) else {
            return Err(Status::not_found(format!(
                "cannot apply review to access request {:?} (not found)",
                submission.request_id
            )));
        };
        let spec = req.spec.get_or_insert_with(Default::default);
        if spec.state != types::RequestState::Pending as i32 {
            return Err(Status::invalid_argument(
                "the access request has already been resolved",
            ));
        }
        spec.state = review.proposed_state;
        spec.resolve_reason = review.reason.clone();
        spec.reviews.push(review);
        let updated = req.clone();
        state.emit_put(&submission.request_id);
        Ok(Response::new(updated))
    }

    async fn list_resources(
        &self,
        request: Request<proto::ListResourcesRequest>,
    ) -> Result<Response<proto::ListResourcesResponse>, Status> {
        let mut state = self.0.begin(Rpc::ListResources, &request)?;
        amr::list_resources(&mut state, request.into_inner()).map(Response::new)
    }
}
