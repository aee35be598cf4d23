//! Teleport as clusters run it in December 2026 (v16 to v19, and Cloud), against doubles that
//! follow Teleport's published source (each rule names the file it was read from in
//! `testkit`): the connection upgrades of v13 to v19 Proxies behind an ALPN-stripping
//! balancer, the v16+ client version check, `disconnect_expired_cert`, and locks.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use teleport_mattermost::request::{
    RequestKind, RequestState, RequestedResource, ResourceConstraints,
};
use teleport_mattermost::settings::CaBundle;
use teleport_mattermost::teleport::client::{
    ConnectOptions, TeleportClient, TeleportError, WatchEvent,
};
use teleport_mattermost::teleport::route::{ConnectionMode, Route, auth_alpn};
use teleport_mattermost::teleport::upgrade::UpgradeKind;
use teleport_mattermost::teleport::wire::proto;
use teleport_mattermost::teleport::wire::proto::auth_service_client::AuthServiceClient;
use teleport_mattermost_testkit::l7_relay::{
    FindAnswer, FrontConfig, ProxyFront, ProxyVersion, find_json,
};
use teleport_mattermost_testkit::pki::{CLUSTER_NAME, ClientCert, TestPki};
use teleport_mattermost_testkit::stack::{Stack, StackOptions};
use teleport_mattermost_testkit::teleport::{NewRequest, TeleportDouble};

fn crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

struct Cluster {
    pki: TestPki,
    auth: TeleportDouble,
}

async fn cluster() -> Cluster {
    crypto();
    let pki = TestPki::new();
    let auth = TeleportDouble::start(&pki).await;
    auth.set_ping(CLUSTER_NAME, "19.0.1", "teleport.example.com:443", true);
    Cluster { pki, auth }
}

/// A Proxy of `version` behind an ALPN-stripping balancer, in front of the Auth double.
fn front_config(cluster: &Cluster, version: ProxyVersion) -> FrontConfig {
    let server_version = match version {
        ProxyVersion::V13 => "14.3.2",
        ProxyVersion::V15_1 => "16.4.6",
        ProxyVersion::V19 => "19.0.1",
    };
    let mut config = FrontConfig::new(
        version,
        cluster.auth.address().parse().unwrap(),
        FindAnswer::Json(find_json(CLUSTER_NAME, server_version)),
    );
    config.cluster = Some(CLUSTER_NAME.to_string());
    config
}

fn through(front: &ProxyFront) -> ConnectOptions {
    ConnectOptions {
        mode: ConnectionMode::Auto,
        web_ca: Some(CaBundle::from_pem("the balancer's CA", front.cert_pem.as_bytes()).unwrap()),
        ..ConnectOptions::default()
    }
}

async fn connect(cluster: &Cluster, front: &ProxyFront) -> Result<TeleportClient, TeleportError> {
    let identity = cluster.pki.client("access-plugin").identity();
    TeleportClient::connect_with(&front.address(), &identity, &through(front)).await
}

/// Ping, a watch and a list work over the connection: gRPC runs end to end with Auth.
async fn works(cluster: &Cluster, client: &TeleportClient) {
    let info = client.ping().await.unwrap();
    assert_eq!(info.cluster_name, CLUSTER_NAME);
    let mut watch = client
        .watch_access_requests(Duration::from_secs(5))
        .await
        .unwrap();
    let id = cluster
        .auth
        .create_request(NewRequest::by("bob@example.com"));
    let Some(WatchEvent::Put(put)) = watch.next().await.unwrap() else {
        panic!("expected the new request")
    };
    assert_eq!(put.id, id);
    assert_eq!(client.list_access_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_v19_proxy_behind_an_alpn_stripping_balancer_is_reached_by_the_websocket_upgrade() {
    let cluster = cluster().await;
    let front = ProxyFront::start(front_config(&cluster, ProxyVersion::V19))
        .await
        .unwrap();
    let client = connect(&cluster, &front)
        .await
        .expect("connects through v19");
    works(&cluster, &client).await;

    assert!(matches!(
        client.route(),
        Route::Upgrade {
            kind: UpgradeKind::WebSocket,
            ..
        }
    ));
    let said = client.route().to_string();
    assert!(
        said.contains(&format!(
            "through the Proxy at {} by TLS routing inside a WebSocket connection upgrade",
            front.address()
        )),
        "{said}"
    );
    let stats = &front.stats;
    assert_eq!(stats.legacy_upgrades.load(Ordering::Relaxed), 0);
    assert_eq!(
        stats.refused.load(Ordering::Relaxed),
        0,
        "no legacy attempt"
    );
    assert!(stats.websocket_upgrades.load(Ordering::Relaxed) >= 1);
    assert_eq!(stats.offered.lock().unwrap()[0], vec!["alpn-ping"]);
    assert!(stats.masked_frames.load(Ordering::Relaxed) > 0);
    // The inner TLS is TLS routing's: ALPN teleport-auth@<hex>, h2; SNI teleport.cluster.local.
    let hellos = stats.inner_hellos.lock().unwrap().clone();
    assert_eq!(
        hellos[0],
        (
            vec![auth_alpn(CLUSTER_NAME), "h2".to_string()],
            Some("teleport.cluster.local".to_string())
        )
    );
    // Mutual TLS ran end to end with Auth: it saw the plugin's own certificate.
    assert_eq!(cluster.auth.client_serials().len(), 1);
    // The find answer's version fields are kept for the logs.
    let find = client.proxy_find().unwrap();
    assert_eq!(find.min_client_version, "18.0.0-aa");
    assert_eq!(find.edition, "oss");
}

#[tokio::test]
async fn a_v16_proxy_takes_the_websocket_upgrade_with_pings() {
    let cluster = cluster().await;
    let front = ProxyFront::start(front_config(&cluster, ProxyVersion::V15_1))
        .await
        .unwrap();
    let client = connect(&cluster, &front).await.unwrap();
    works(&cluster, &client).await;
    assert!(matches!(
        client.route(),
        Route::Upgrade {
            kind: UpgradeKind::WebSocket,
            ..
        }
    ));
    // gorilla picks in the server's order [alpn, alpn-ping]: offering alpn-ping alone is what
    // gets the Pings.
    assert_eq!(front.stats.offered.lock().unwrap()[0], vec!["alpn-ping"]);
    assert_eq!(front.stats.legacy_upgrades.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_v14_proxy_that_refuses_websocket_is_reached_by_the_legacy_upgrade() {
    let cluster = cluster().await;
    let front = ProxyFront::start(front_config(&cluster, ProxyVersion::V13))
        .await
        .unwrap();
    let client = connect(&cluster, &front)
        .await
        .expect("falls back to legacy");
    works(&cluster, &client).await;
    assert!(matches!(
        client.route(),
        Route::Upgrade {
            kind: UpgradeKind::Legacy,
            ..
        }
    ));
    let said = client.route().to_string();
    assert!(
        said.contains("inside a legacy (Upgrade: alpn) connection upgrade"),
        "{said}"
    );
    assert!(said.contains("upgrade the Proxy to 15.1"), "{said}");
    assert_eq!(
        front.stats.refused.load(Ordering::Relaxed),
        1,
        "WebSocket once"
    );
    assert!(front.stats.legacy_upgrades.load(Ordering::Relaxed) >= 1);
    assert_eq!(front.stats.websocket_upgrades.load(Ordering::Relaxed), 0);
    assert_eq!(
        front.stats.inner_hellos.lock().unwrap()[0].0[0],
        auth_alpn(CLUSTER_NAME)
    );
}

#[tokio::test]
async fn pings_from_the_proxy_are_answered_with_pongs() {
    let cluster = cluster().await;
    let mut config = front_config(&cluster, ProxyVersion::V19);
    config.ping_interval = Duration::from_millis(100);
    let front = ProxyFront::start(config).await.unwrap();
    let client = connect(&cluster, &front).await.unwrap();
    // Idle: nothing but the Proxy's Pings crosses the upgrade.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (pings, pongs) = (
        front.stats.pings.load(Ordering::Relaxed),
        front.stats.pongs.load(Ordering::Relaxed),
    );
    assert!(pings >= 8, "{pings} pings");
    assert!(pongs + 1 >= pings, "{pongs} pongs for {pings} pings");
    client.ping().await.expect("the connection is alive");
}

#[tokio::test]
async fn a_wrong_sec_websocket_accept_is_refused_with_a_clear_error() {
    let cluster = cluster().await;
    let mut config = front_config(&cluster, ProxyVersion::V19);
    config.wrong_accept_key = true;
    let front = ProxyFront::start(config).await.unwrap();
    let err = connect(&cluster, &front).await.unwrap_err();
    let said = err.to_string();
    assert!(said.contains("Sec-WebSocket-Accept"), "{said}");
    assert!(said.contains("strips ALPN"), "{said}");
    assert!(
        front.stats.inner_hellos.lock().unwrap().is_empty(),
        "no TLS inside a handshake the client refused"
    );
    assert!(cluster.auth.client_serials().is_empty());
}

#[tokio::test]
async fn a_proxy_that_agrees_to_no_subprotocol_is_refused_with_a_clear_error() {
    let cluster = cluster().await;
    let mut config = front_config(&cluster, ProxyVersion::V19);
    // A server that knows only websocket-close: 101 without a subprotocol, then a close frame
    // (websocketupgradeproto.NewServerConnection).
    config.subprotocols = Some(vec!["websocket-close".to_string()]);
    let front = ProxyFront::start(config).await.unwrap();
    let err = connect(&cluster, &front).await.unwrap_err();
    let said = err.to_string();
    assert!(
        said.contains("agreed to none of the WebSocket subprotocols alpn-ping, alpn"),
        "{said}"
    );
    assert_eq!(
        *front.stats.offered.lock().unwrap(),
        vec![vec!["alpn-ping".to_string()], vec!["alpn".to_string()]],
        "alpn-ping, then alpn"
    );
}

#[tokio::test]
async fn a_balancer_that_drops_the_upgrade_headers_gets_an_error_naming_both_upgrades() {
    let cluster = cluster().await;
    let mut config = front_config(&cluster, ProxyVersion::V15_1);
    config.drop_upgrade_headers = true;
    let front = ProxyFront::start(config).await.unwrap();
    let err = connect(&cluster, &front).await.unwrap_err();
    let said = err.to_string();
    assert!(said.contains("refused both connection upgrades"), "{said}");
    assert!(
        said.contains("the WebSocket upgrade was refused: 404")
            && said.contains("the legacy (Upgrade: alpn) upgrade was refused: 404"),
        "{said}"
    );
    assert!(said.contains("unsupported upgrade types"), "{said}");
    assert_eq!(front.stats.refused.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn a_balancer_answering_no_application_protocol_is_detected() {
    let cluster = cluster().await;
    let mut config = front_config(&cluster, ProxyVersion::V19);
    // It speaks only http/1.1 and refuses teleport-reversetunnel with the alert.
    config.alpn = vec![b"http/1.1".to_vec()];
    let front = ProxyFront::start(config).await.unwrap();
    let client = connect(&cluster, &front).await.unwrap();
    assert!(matches!(client.route(), Route::Upgrade { .. }));
    works(&cluster, &client).await;
}

// ---------------------------------------------------------------------------------------------
// Client version check (v16+), v18 requests.
// ---------------------------------------------------------------------------------------------

/// A raw gRPC client with the plugin's identity that adds `version` metadata, as Teleport's
/// own clients do.
async fn raw_client(
    pki: &TestPki,
    auth: &TeleportDouble,
) -> AuthServiceClient<tonic::transport::Channel> {
    let cert = pki.client("access-plugin");
    let tls = tonic::transport::ClientTlsConfig::new()
        .domain_name("localhost")
        .ca_certificate(tonic::transport::Certificate::from_pem(pki.ca_pem()))
        .identity(tonic::transport::Identity::from_pem(
            cert.cert_pem,
            cert.key_pem,
        ));
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{}", auth.address()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    AuthServiceClient::new(channel)
}

fn with_version(version: &str) -> tonic::Request<proto::PingRequest> {
    let mut request = tonic::Request::new(proto::PingRequest {});
    request
        .metadata_mut()
        .insert("version", version.parse().unwrap());
    request
}

#[tokio::test]
async fn the_plugin_never_sends_version_metadata_so_a_v18_auth_lets_it_in() {
    let cluster = cluster().await;
    cluster
        .auth
        .set_ping(CLUSTER_NAME, "18.2.0", "teleport.example.com:443", true);
    let identity = cluster.pki.client("access-plugin").identity();
    let client = TeleportClient::connect(&cluster.auth.address(), &identity)
        .await
        .expect("no version metadata: allowed");
    works(&cluster, &client).await;
    let id = cluster
        .auth
        .create_request(NewRequest::by("carol@example.com"));
    client
        .modify_plugin_data(&id, |_| {
            Some(([("user".to_string(), "carol".to_string())].into(), ()))
        })
        .await
        .unwrap();
    client
        .set_access_request_state(&id, RequestState::Denied, "mattermost:x", "no")
        .await
        .unwrap();

    let calls = cluster.auth.call_metadata();
    assert!(calls.len() >= 6, "{calls:?}");
    for (rpc, metadata) in &calls {
        assert!(
            !metadata.iter().any(|(key, _)| key == "version"),
            "{rpc:?} carried version metadata: {metadata:?}"
        );
    }
    // The double does apply Teleport's rule (lib/auth/middleware.go): a version older than
    // 17.0.0-aa, or not a version, is refused; a current one passes.
    let mut raw = raw_client(&cluster.pki, &cluster.auth).await;
    let old = raw.ping(with_version("16.4.2")).await.unwrap_err();
    assert_eq!(old.code(), tonic::Code::PermissionDenied);
    assert_eq!(old.message(), "client version is unsupported");
    let junk = raw.ping(with_version("latest")).await.unwrap_err();
    assert_eq!(junk.message(), "client version is unsupported");
    raw.ping(with_version("17.0.0")).await.unwrap();
    raw.ping(with_version("18.2.0")).await.unwrap();
}

#[tokio::test]
async fn v18_requests_arrive_with_kind_constraints_start_time_and_promotion() {
    let cluster = cluster().await;
    cluster
        .auth
        .set_ping(CLUSTER_NAME, "18.2.0", "teleport.example.com:443", true);
    let identity = cluster.pki.client("access-plugin").identity();
    let client = TeleportClient::connect(&cluster.auth.address(), &identity)
        .await
        .unwrap();
    let mut watch = client
        .watch_access_requests(Duration::from_secs(5))
        .await
        .unwrap();
    let id = cluster.auth.create_request(NewRequest {
        kind: RequestKind::LongTerm,
        resources: vec![RequestedResource {
            cluster: CLUSTER_NAME.into(),
            kind: "app".into(),
            name: "aws-console".into(),
            sub_resource: String::new(),
            constraints: Some(ResourceConstraints::AwsConsole {
                role_arns: vec!["arn:aws:iam::123456789012:role/Admin".into()],
            }),
        }],
        starts_in: Some(Duration::from_secs(3600)),
        pending_ttl: Some(Duration::from_secs(7200)),
        ..NewRequest::by("bob@example.com")
    });
    let Some(WatchEvent::Put(put)) = watch.next().await.unwrap() else {
        panic!("expected the request")
    };
    assert_eq!(put.id, id);
    assert_eq!(put.kind, RequestKind::LongTerm);
    assert!(put.long_term_grouping);
    assert_eq!(
        put.resources,
        vec![format!("{CLUSTER_NAME}/app/aws-console")]
    );
    assert_eq!(
        put.requested_resources[0].constraints,
        Some(ResourceConstraints::AwsConsole {
            role_arns: vec!["arn:aws:iam::123456789012:role/Admin".into()]
        })
    );
    let now = chrono::Utc::now();
    let starts = put.assume_start_time.unwrap() - now;
    assert!((3590..=3600).contains(&starts.num_seconds()), "{starts}");
    let pending = put.resource_expiry.unwrap() - now;
    assert!((7190..=7200).contains(&pending.num_seconds()), "{pending}");

    cluster.auth.promote(&id, "al-7f3", "Prod DBAs");
    let Some(WatchEvent::Put(promoted)) = watch.next().await.unwrap() else {
        panic!("expected the promotion")
    };
    assert_eq!(promoted.state, RequestState::Promoted);
    assert!(promoted.state.is_resolved());
    assert_eq!(promoted.promoted_access_list.unwrap().title, "Prod DBAs");
    // Listing (the resync) sees the same.
    let listed = client.get_access_request(&id).await.unwrap().unwrap();
    assert_eq!(listed.kind, RequestKind::LongTerm);
    assert_eq!(listed.state, RequestState::Promoted);
}

// ---------------------------------------------------------------------------------------------
// disconnect_expired_cert and identity renewal.
// ---------------------------------------------------------------------------------------------

fn valid_for(pki: &TestPki, user: &str, lifetime: Duration) -> ClientCert {
    let now = time::OffsetDateTime::now_utc();
    pki.client_valid(
        user,
        now - time::Duration::hours(1),
        now + time::Duration::try_from(lifetime).unwrap(),
    )
}

#[tokio::test]
async fn with_disconnect_expired_cert_a_watch_is_cut_at_the_certificate_expiry() {
    let cluster = cluster().await;
    cluster.auth.set_disconnect_expired_cert(true);
    let identity = valid_for(&cluster.pki, "access-plugin", Duration::from_secs(2)).identity();
    let client = TeleportClient::connect(&cluster.auth.address(), &identity)
        .await
        .unwrap();
    let mut watch = client
        .watch_access_requests(Duration::from_secs(5))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("cut before 5 s")
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(
        started.elapsed() <= Duration::from_millis(2600),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        cluster
            .auth
            .ping_stats()
            .expiry_cuts
            .load(Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn without_disconnect_expired_cert_a_watch_outlives_the_certificate() {
    let cluster = cluster().await;
    let identity = valid_for(&cluster.pki, "access-plugin", Duration::from_secs(2)).identity();
    let client = TeleportClient::connect(&cluster.auth.address(), &identity)
        .await
        .unwrap();
    let mut watch = client
        .watch_access_requests(Duration::from_secs(5))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let id = cluster
        .auth
        .create_request(NewRequest::by("bob@example.com"));
    let Some(WatchEvent::Put(put)) = watch.next().await.unwrap() else {
        panic!("the watch is still up")
    };
    assert_eq!(put.id, id);
    assert_eq!(
        cluster
            .auth
            .ping_stats()
            .expiry_cuts
            .load(Ordering::Relaxed),
        0
    );
}

/// The longest stretch without an open watch, sampled every 5 ms, once one was up.
fn watch_gaps(auth: TeleportDouble) -> (tokio::task::JoinHandle<()>, Arc<Mutex<Duration>>) {
    let longest = Arc::new(Mutex::new(Duration::ZERO));
    let out = longest.clone();
    let task = tokio::spawn(async move {
        let mut down_since: Option<std::time::Instant> = None;
        loop {
            if auth.active_watches() == 0 {
                let since = *down_since.get_or_insert_with(std::time::Instant::now);
                let mut l = out.lock().unwrap();
                *l = (*l).max(since.elapsed());
            } else {
                down_since = None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    (task, longest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_identity_is_redialled_before_the_old_certificate_expires() {
    let stack = Stack::started(StackOptions::default()).await;
    stack.teleport.set_disconnect_expired_cert(true);
    const LIFETIME: Duration = Duration::from_secs(3);
    const RENEW_EVERY: Duration = Duration::from_millis(1500);
    // The instance's credentials with another identity (the token unchanged).
    let renew = |cert: &ClientCert| {
        let mut credentials = (*stack.instance.credentials()).clone();
        credentials.identity = cert.identity();
        credentials
    };
    // tbot's rhythm, shortened: a certificate for LIFETIME, renewed at half of it.
    let first = valid_for(&stack.pki, "access-plugin-mattermost", LIFETIME);
    stack.instance.update_credentials(renew(&first)).unwrap();
    assert!(
        Stack::eventually(Duration::from_secs(5), || stack
            .teleport
            .last_client_serial()
            == Some(first.serial_hex.clone()))
        .await
    );
    assert!(
        stack
            .teleport
            .wait_for_watches(1, Duration::from_secs(5))
            .await
    );
    let watches_before = stack.teleport.watch_count();
    let (sampler, longest_gap) = watch_gaps(stack.teleport.clone());

    let mut ids = Vec::new();
    let mut serials = vec![first.serial_hex.clone()];
    for _ in 0..3 {
        for _ in 0..3 {
            ids.push(
                stack
                    .teleport
                    .create_request(NewRequest::by("bob@example.com")),
            );
            tokio::time::sleep(RENEW_EVERY / 3).await;
        }
        let next = valid_for(&stack.pki, "access-plugin-mattermost", LIFETIME);
        serials.push(next.serial_hex.clone());
        stack.instance.update_credentials(renew(&next)).unwrap();
    }
    // Past the last old certificate's expiry.
    tokio::time::sleep(LIFETIME / 2 + Duration::from_millis(300)).await;
    ids.push(
        stack
            .teleport
            .create_request(NewRequest::by("bob@example.com")),
    );
    for id in &ids {
        stack.posted(id).await;
    }
    sampler.abort();

    for id in &ids {
        assert_eq!(stack.root_posts_for(id).len(), 1, "{id} posted once");
    }
    // One watch per identity: none was cut by an expiry, so none had to be re-opened.
    assert_eq!(stack.teleport.watch_count() - watches_before, 3);
    assert_eq!(
        stack
            .teleport
            .ping_stats()
            .expiry_cuts
            .load(Ordering::Relaxed),
        0,
        "every connection was re-dialled before its certificate expired"
    );
    assert_eq!(stack.teleport.last_client_serial(), serials.last().cloned());
    let gap = *longest_gap.lock().unwrap();
    assert!(gap < Duration::from_millis(500), "no watch for {gap:?}");
}

// ---------------------------------------------------------------------------------------------
// Locks.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_lock_refuses_calls_on_an_open_connection_and_the_next_dial_is_named_a_lock() {
    let cluster = cluster().await;
    let identity = cluster.pki.client("access-plugin").identity();
    let client = TeleportClient::connect(&cluster.auth.address(), &identity)
        .await
        .unwrap();
    cluster.auth.lock_user("access-plugin", "offboarded");
    // Per call, Teleport says only "access denied" (ConvertAuthorizerError); the hint names
    // a lock beside a missing permission.
    let err = client.list_access_requests().await.unwrap_err();
    assert!(!err.is_identity_locked(), "{err}");
    let said = err.to_string();
    assert!(said.contains("PermissionDenied: access denied"), "{said}");
    assert!(said.contains("tctl get locks"), "{said}");
    // The next dial is refused at the handshake, and that is named a lock.
    let again = TeleportClient::connect(&cluster.auth.address(), &identity)
        .await
        .unwrap_err();
    assert!(again.is_identity_locked(), "{again}");
    assert_eq!(again.condition_reason(), "IdentityLocked");
}

#[tokio::test]
async fn a_locked_identity_refused_at_the_handshake_is_named() {
    let cluster = cluster().await;
    cluster.auth.lock_user("access-plugin", "offboarded");
    let identity = cluster.pki.client("access-plugin").identity();
    let err = TeleportClient::connect(&cluster.auth.address(), &identity)
        .await
        .unwrap_err();
    assert!(matches!(err, TeleportError::Refused { .. }), "{err:?}");
    assert_eq!(err.condition_reason(), "IdentityLocked");
    assert!(err.to_string().contains("tctl get locks"), "{err}");
    assert_eq!(cluster.auth.handshake_refusals(), 1);
    // Another user's certificate is served as usual: only the lock refuses.
    let other = cluster.pki.client("someone-else").identity();
    TeleportClient::connect(&cluster.auth.address(), &other)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_plugin_reports_identity_locked_backs_off_and_recovers_when_lifted() {
    let stack = Stack::started(StackOptions::default()).await;
    stack
        .teleport
        .lock_user("access-plugin-mattermost", "offboarded by security");
    // A renewal makes the plugin dial again, and the lock refuses the new connection.
    let next = stack.pki.client("access-plugin-mattermost");
    let mut credentials = (*stack.instance.credentials()).clone();
    credentials.identity = next.identity();
    stack.instance.update_credentials(credentials).unwrap();
    let status = stack
        .status_until(Duration::from_secs(10), |s| {
            s.teleport.reason == "IdentityLocked"
        })
        .await;
    assert_eq!(status.teleport.ok, Some(false), "{status:?}");
    assert_eq!(status.teleport.reason, "IdentityLocked", "{status:?}");
    assert!(
        status.teleport.message.contains("tctl get locks"),
        "{}",
        status.teleport.message
    );
    // No tight loop: the bridge's backoff (0.5 s doubling) spaces the attempts.
    let refusals = stack.teleport.handshake_refusals();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let more = stack.teleport.handshake_refusals() - refusals;
    assert!(more <= 4, "{more} handshakes in 3 s");

    stack.teleport.unlock_user("access-plugin-mattermost");
    let status = stack
        .status_until(Duration::from_secs(30), |s| s.teleport.ok == Some(true))
        .await;
    assert_eq!(status.teleport.reason, "Connected", "{status:?}");
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    stack.posted(&id).await;
}

#[tokio::test]
async fn on_a_v13_auth_a_locked_identity_is_named_by_its_refused_ping() {
    let cluster = cluster().await;
    // v13.3.8 refuses a locked user per call only, Ping included, with a bare "access denied".
    cluster
        .auth
        .set_ping(CLUSTER_NAME, "13.3.8", "teleport.example.com:443", false);
    cluster.auth.lock_user("access-plugin", "offboarded");
    let identity = cluster.pki.client("access-plugin").identity();
    let err = TeleportClient::connect(&cluster.auth.address(), &identity)
        .await
        .unwrap_err();
    assert_eq!(cluster.auth.handshake_refusals(), 0, "v13 lets it connect");
    assert!(err.is_identity_locked(), "{err}");
    assert_eq!(err.condition_reason(), "IdentityLocked");
    let said = err.to_string();
    assert!(
        said.contains("Teleport Ping failed: PermissionDenied: access denied"),
        "{said}"
    );
    assert!(said.contains("tctl get locks"), "{said}");
}
