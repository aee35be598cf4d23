//! Teleport as clusters run it in December 2026 (v16 to v19, and Cloud), against doubles that
//! follow Teleport's published source (each rule names the file it was read from in
//! `testkit`): the connection upgrades of v13 to v19 Proxies behind an ALPN-stripping
//! balancer, the v16+ client version check, `disconnect_expired_cert`, and locks.

use std::sync::atomic::Ordering;
use std::time::Duration;

use teleport_mattermost::settings::CaBundle;
use teleport_mattermost::teleport::client::{ConnectOptions, TeleportClient, TeleportError};
use teleport_mattermost::teleport::route::{ConnectionMode, Route, auth_alpn};
use teleport_mattermost::teleport::upgrade::UpgradeKind;
use teleport_mattermost_testkit::l7_relay::{
    FindAnswer, FrontConfig, ProxyFront, ProxyVersion, find_json,
};
use teleport_mattermost_testkit::pki::{CLUSTER_NAME, TestPki};
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
    let Some(teleport_mattermost::teleport::client::WatchEvent::Put(put)) =
        watch.next().await.unwrap()
    else {
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
