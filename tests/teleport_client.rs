//! The Teleport client against the in-process Auth server double, over real mutual TLS.

use std::collections::HashMap;
use std::time::Duration;

use teleport_mattermost::request::RequestState;
use teleport_mattermost::teleport::client::{TeleportClient, TeleportError, WatchEvent};
use teleport_mattermost::teleport::identity::{Identity, IdentityError, PemSource};
use teleport_mattermost_testkit::pki::TestPki;
use teleport_mattermost_testkit::teleport::{NewRequest, Rpc, TeleportDouble};

const INIT: Duration = Duration::from_secs(5);

fn crypto() {
    // The binary installs ring first thing; tests share a process, so "already installed" is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

struct Setup {
    pki: TestPki,
    teleport: TeleportDouble,
    client: TeleportClient,
    identity: Identity,
}

async fn setup() -> Setup {
    crypto();
    let pki = TestPki::new();
    let teleport = TeleportDouble::start(&pki).await;
    let identity = pki.client("access-plugin").identity();
    let client = TeleportClient::connect(&teleport.address(), &identity)
        .await
        .expect("connect");
    Setup {
        pki,
        teleport,
        client,
        identity,
    }
}

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn request_for(user: &str) -> NewRequest {
    NewRequest {
        user: user.to_owned(),
        roles: vec!["admin".into(), "dba".into()],
        reason: "incident 42".into(),
        suggested_reviewers: vec!["rev@example.com".into()],
        expires_in: Some(Duration::from_secs(600)),
        ..Default::default()
    }
}

#[tokio::test]
async fn connects_over_mtls_and_reports_ping_info() {
    let s = setup().await;
    s.teleport
        .set_ping("prod", "16.1.0", "teleport.example.com:443", true);
    let info = s.client.ping().await.unwrap();
    assert_eq!(info.cluster_name, "prod");
    assert_eq!(info.server_version, "16.1.0");
    assert_eq!(info.proxy_public_addr, "teleport.example.com:443");
    assert!(info.advanced_workflows);
    assert_eq!(
        s.teleport.last_client_serial().as_deref(),
        Some(s.identity.serial_hex.as_str())
    );
}

#[tokio::test]
async fn client_cert_from_another_ca_is_refused_with_a_clear_error() {
    let s = setup().await;
    let stranger = TestPki::new().client("access-plugin");
    // Right CA bundle for the server, but a certificate the cluster never issued.
    let identity = Identity::from_pems(
        PemSource::new("auth.crt", stranger.cert_pem.as_bytes()),
        PemSource::new("auth.key", stranger.key_pem.as_bytes()),
        PemSource::new("auth.cas", s.pki.ca_pem().as_bytes()),
    )
    .unwrap();
    let err = TeleportClient::connect(&s.teleport.address(), &identity)
        .await
        .unwrap_err();
    assert!(matches!(err, TeleportError::Connect { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&s.teleport.address()), "{msg}");
    assert!(msg.contains("auth.cas"), "should say what to check: {msg}");
    assert!(
        !s.teleport.client_serials().contains(&stranger.serial_hex),
        "the double must never have served the stranger"
    );
}

#[tokio::test]
async fn server_from_another_cluster_is_not_trusted() {
    let s = setup().await;
    let other_cluster = TestPki::new();
    let mine = s.pki.client("access-plugin");
    let identity = Identity::from_pems(
        PemSource::new("auth.crt", mine.cert_pem.as_bytes()),
        PemSource::new("auth.key", mine.key_pem.as_bytes()),
        PemSource::new("auth.cas", other_cluster.ca_pem().as_bytes()),
    )
    .unwrap();
    let err = TeleportClient::connect(&s.teleport.address(), &identity)
        .await
        .unwrap_err();
    assert!(matches!(err, TeleportError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains("auth.cas"), "{err}");
}

#[tokio::test]
async fn expired_identity_is_refused_before_dialing() {
    crypto();
    let pki = TestPki::new();
    let teleport = TeleportDouble::start(&pki).await;
    // The testkit takes `time` values; x509-parser hands them out without another dependency.
    let days_ago = |d: i64| {
        x509_parser::time::ASN1Time::from_timestamp(chrono::Utc::now().timestamp() - d * 86_400)
            .unwrap()
            .to_datetime()
    };
    let expired = pki
        .client_valid("access-plugin", days_ago(2), days_ago(1))
        .identity();
    let err = TeleportClient::connect(&teleport.address(), &expired)
        .await
        .unwrap_err();
    assert!(
        matches!(err, TeleportError::Identity(IdentityError::Expired { .. })),
        "{err:?}"
    );
    assert_eq!(teleport.calls(Rpc::Ping), 0);
}

#[tokio::test]
async fn watch_starts_with_init_then_delivers_only_new_puts_and_deletes() {
    let s = setup().await;
    let before = s.teleport.create_request(request_for("old@example.com"));
    let mut watch = s.client.watch_access_requests(INIT).await.unwrap();
    assert_eq!(s.teleport.active_watches(), 1);

    let id = s.teleport.create_request(request_for("bob@example.com"));
    s.teleport
        .review(&id, "rev@example.com", RequestState::Approved, "ok");
    s.teleport.expire(&id);

    let Some(WatchEvent::Put(created)) = watch.next().await.unwrap() else {
        panic!("expected PUT")
    };
    assert_eq!(created.id, id, "no snapshot of {before} may arrive");
    assert_eq!(created.user, "bob@example.com");
    assert_eq!(created.roles, vec!["admin", "dba"]);
    assert_eq!(created.state, RequestState::Pending);
    assert_eq!(created.suggested_reviewers, vec!["rev@example.com"]);

    let Some(WatchEvent::Put(reviewed)) = watch.next().await.unwrap() else {
        panic!("expected PUT")
    };
    assert_eq!(reviewed.reviews.len(), 1);
    assert_eq!(reviewed.reviews[0].proposed_state, RequestState::Approved);

    assert_eq!(
        watch.next().await.unwrap(),
        Some(WatchEvent::Delete { id: id.clone() })
    );
}

#[tokio::test]
async fn watch_without_init_in_time_fails_with_init_timeout() {
    let s = setup().await;
    s.teleport.set_init_delay(Duration::from_secs(3));
    let started = std::time::Instant::now();
    let err = s
        .client
        .watch_access_requests(Duration::from_millis(200))
        .await
        .err()
        .expect("must time out");
    assert!(matches!(err, TeleportError::InitTimeout { .. }), "{err:?}");
    assert!(err.is_transient());
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(s.teleport.watch_count(), 1);
}

#[tokio::test]
async fn dropped_watch_ends_with_a_transient_error() {
    let s = setup().await;
    let mut watch = s.client.watch_access_requests(INIT).await.unwrap();
    s.teleport.drop_watches();
    let err = watch.next().await.unwrap_err();
    assert_eq!(
        err.status().map(|s| s.code()),
        Some(tonic::Code::Unavailable)
    );
    assert!(err.is_transient());
}

#[tokio::test]
async fn lists_every_request_and_gets_one_by_id() {
    let s = setup().await;
    let a = s.teleport.create_request(request_for("a@example.com"));
    let b = s.teleport.create_request(request_for("b@example.com"));
    s.teleport.resolve(&b, RequestState::Denied, "no");

    let all = s.client.list_access_requests().await.unwrap();
    let ids: Vec<_> = all.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, vec![a.as_str(), b.as_str()]);
    assert_eq!(all[1].state, RequestState::Denied);
    assert_eq!(all[1].resolve_reason, "no");

    let got = s.client.get_access_request(&a).await.unwrap().unwrap();
    assert_eq!(got.user, "a@example.com");
    assert_eq!(got.request_reason, "incident 42");
    assert!(
        s.client
            .get_access_request("no-such-request")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn plugin_data_is_created_by_compare_and_swap() {
    let s = setup().await;
    let id = s.teleport.create_request(request_for("a@example.com"));
    assert_eq!(s.client.plugin_data(&id).await.unwrap(), None);

    let written = s
        .client
        .modify_plugin_data(&id, |current| {
            assert!(current.is_none());
            Some((map(&[("user", "a@example.com"), ("roles", "admin,dba")]), 7))
        })
        .await
        .unwrap();
    assert_eq!(written, Some(7));
    assert_eq!(
        s.teleport.plugin_data(&id),
        Some(map(&[("user", "a@example.com"), ("roles", "admin,dba")]))
    );
    assert_eq!(
        s.client.plugin_data(&id).await.unwrap(),
        s.teleport.plugin_data(&id)
    );
}

#[tokio::test]
async fn compare_conflicts_are_retried_until_the_write_lands() {
    let s = setup().await;
    let id = s.teleport.create_request(request_for("a@example.com"));
    s.teleport.fail_next_compare(3);
    let mut calls = 0;
    let written = s
        .client
        .modify_plugin_data(&id, |_| {
            calls += 1;
            Some((map(&[("resolution", "APPROVED")]), ()))
        })
        .await
        .unwrap();
    assert_eq!(written, Some(()));
    assert_eq!(calls, 4, "f is re-run on every re-read");
    assert_eq!(s.teleport.calls(Rpc::UpdatePluginData), 4);
    assert_eq!(
        s.teleport.plugin_data(&id),
        Some(map(&[("resolution", "APPROVED")]))
    );
}

#[tokio::test]
async fn persistent_conflicts_give_up_with_compare_failed() {
    let s = setup().await;
    let id = s.teleport.create_request(request_for("a@example.com"));
    s.teleport.fail_next_compare(100);
    let err = s
        .client
        .modify_plugin_data(&id, |_| Some((map(&[("user", "x")]), ())))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TeleportError::CompareFailed { attempts: 10, .. }),
        "{err:?}"
    );
    assert!(err.is_compare_failed());
}

#[tokio::test]
async fn concurrent_read_modify_write_never_loses_an_update() {
    let s = setup().await;
    let id = s.teleport.create_request(request_for("a@example.com"));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let client = s.client.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            client
                .modify_plugin_data(&id, |current| {
                    let n: u32 = current
                        .and_then(|c| c.get("reviews_count"))
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    Some((map(&[("reviews_count", &(n + 1).to_string())]), ()))
                })
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(
        s.teleport.plugin_data(&id),
        Some(map(&[("reviews_count", "8")]))
    );
}

#[tokio::test]
async fn no_change_from_the_closure_writes_nothing() {
    let s = setup().await;
    let id = s.teleport.create_request(request_for("a@example.com"));
    let out: Option<()> = s.client.modify_plugin_data(&id, |_| None).await.unwrap();
    assert_eq!(out, None);
    assert_eq!(s.teleport.calls(Rpc::UpdatePluginData), 0);
}

#[tokio::test]
async fn expect_on_a_missing_entry_only_matches_empty_values() {
    let s = setup().await;
    let id = s.teleport.create_request(request_for("a@example.com"));
    let err = s
        .client
        .update_plugin_data(&id, map(&[("user", "a")]), map(&[("user", "someone")]))
        .await
        .unwrap_err();
    assert!(err.is_compare_failed(), "{err:?}");
    assert_eq!(s.teleport.plugin_data(&id), None);

    s.client
        .update_plugin_data(
            &id,
            map(&[("user", "a")]),
            map(&[("user", ""), ("messages", "")]),
        )
        .await
        .unwrap();
    // Stored value must match; a key never written counts as "".
    let err = s
        .client
        .update_plugin_data(&id, map(&[("user", "b")]), map(&[("user", "")]))
        .await
        .unwrap_err();
    assert!(err.is_compare_failed());
    s.client
        .update_plugin_data(
            &id,
            map(&[("messages", "c/p")]),
            map(&[("user", "a"), ("messages", "")]),
        )
        .await
        .unwrap();
    assert_eq!(
        s.teleport.plugin_data(&id),
        Some(map(&[("user", "a"), ("messages", "c/p")]))
    );
}

#[tokio::test]
async fn setting_empty_deletes_keys_and_an_emptied_entry_disappears() {
    let s = setup().await;
    let id = s.teleport.create_request(request_for("a@example.com"));
    s.teleport
        .set_plugin_data(&id, map(&[("user", "a"), ("messages", "c/p")]));
    s.client
        .modify_plugin_data(&id, |_| Some((map(&[("user", "a")]), ())))
        .await
        .unwrap();
    assert_eq!(s.teleport.plugin_data(&id), Some(map(&[("user", "a")])));

    s.client
        .update_plugin_data(&id, map(&[("user", "")]), HashMap::new())
        .await
        .unwrap();
    assert_eq!(s.teleport.plugin_data(&id), None);
    assert_eq!(s.client.plugin_data(&id).await.unwrap(), None);
}

#[tokio::test]
async fn plugin_data_needs_the_request_to_exist_and_outlives_it() {
    let s = setup().await;
    let err = s
        .client
        .update_plugin_data("ghost", map(&[("user", "a")]), HashMap::new())
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err:?}");

    let id = s.teleport.create_request(request_for("a@example.com"));
    s.client
        .update_plugin_data(&id, map(&[("user", "a")]), HashMap::new())
        .await
        .unwrap();
    s.teleport.expire(&id);
    assert!(s.client.get_access_request(&id).await.unwrap().is_none());
    assert_eq!(
        s.client.plugin_data(&id).await.unwrap(),
        Some(map(&[("user", "a")]))
    );
}

#[tokio::test]
async fn plugin_data_goes_once_its_grace_after_the_access_expiry_is_over() {
    let s = setup().await;
    // Teleport keeps the data an hour after the request's access expiry; here 300 ms after
    // an expiry that has already passed.
    s.teleport.set_plugin_data_grace(Duration::from_millis(300));
    let id = s.teleport.create_request(NewRequest {
        expires_in: Some(Duration::ZERO),
        ..request_for("a@example.com")
    });
    s.client
        .update_plugin_data(&id, map(&[("user", "a")]), HashMap::new())
        .await
        .unwrap();
    s.teleport.expire(&id);
    assert!(s.client.plugin_data(&id).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(s.client.plugin_data(&id).await.unwrap(), None);
    assert!(
        s.client.list_plugin_data().await.unwrap().is_empty(),
        "gone from the list too"
    );
    // Nothing can bring it back: the request is gone.
    let err = s
        .client
        .update_plugin_data(&id, map(&[("user", "a")]), HashMap::new())
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
}

#[tokio::test]
async fn lists_plugin_data_of_every_request_that_has_some() {
    let s = setup().await;
    let a = s.teleport.create_request(request_for("a@example.com"));
    let b = s.teleport.create_request(request_for("b@example.com"));
    let _without = s.teleport.create_request(request_for("c@example.com"));
    s.teleport.set_plugin_data(&a, map(&[("user", "a")]));
    s.teleport.set_plugin_data(&b, map(&[("user", "b")]));
    let mut all = s.client.list_plugin_data().await.unwrap();
    all.sort_by(|x, y| x.0.cmp(&y.0));
    let mut want = vec![(a, map(&[("user", "a")])), (b, map(&[("user", "b")]))];
    want.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(all, want);
}

#[tokio::test]
async fn setting_state_records_the_delegator_and_a_denied_request_stays_denied() {
    let s = setup().await;
    let id = s.teleport.create_request(request_for("a@example.com"));
    let mut watch = s.client.watch_access_requests(INIT).await.unwrap();
    s.client
        .set_access_request_state(
            &id,
            RequestState::Denied,
            "mattermost:rev@example.com",
            "Denied by rev in Mattermost",
        )
        .await
        .unwrap();

    let changes = s.teleport.state_changes();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].id, id);
    assert_eq!(changes[0].state, RequestState::Denied);
    assert_eq!(changes[0].delegator, "mattermost:rev@example.com");
    assert_eq!(changes[0].reason, "Denied by rev in Mattermost");
    let Some(WatchEvent::Put(put)) = watch.next().await.unwrap() else {
        panic!("state change must emit PUT")
    };
    assert_eq!(put.state, RequestState::Denied);
    assert_eq!(put.resolve_reason, "Denied by rev in Mattermost");

    let err = s
        .client
        .set_access_request_state(&id, RequestState::Approved, "mattermost:x@example.com", "")
        .await
        .unwrap_err();
    assert!(err.is_already_resolved(), "{err:?}");
    assert_eq!(s.teleport.state_changes().len(), 1);
    assert_eq!(s.teleport.request(&id).unwrap().state, RequestState::Denied);
}

#[tokio::test]
async fn setting_state_of_a_missing_request_is_not_found() {
    let s = setup().await;
    let err = s
        .client
        .set_access_request_state("gone", RequestState::Approved, "mattermost:x", "")
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert!(!err.is_already_resolved());
}

#[tokio::test]
async fn identity_file_connects_like_the_triple() {
    crypto();
    let pki = TestPki::new();
    let teleport = TeleportDouble::start(&pki).await;
    let cert = pki.client("access-plugin");
    let file = cert.identity_file();
    let identity =
        Identity::from_identity_file(PemSource::new("/etc/teleport/identity", file.as_bytes()))
            .unwrap();
    let client = TeleportClient::connect(&teleport.address(), &identity)
        .await
        .unwrap();
    let id = teleport.create_request(request_for("a@example.com"));
    assert_eq!(client.list_access_requests().await.unwrap()[0].id, id);
    assert_eq!(teleport.client_serials(), vec![cert.serial_hex]);
}

#[tokio::test]
async fn the_double_records_which_certificate_made_each_call() {
    let s = setup().await;
    let second = s.pki.client("access-plugin");
    let other = TeleportClient::connect(&s.teleport.address(), &second.identity())
        .await
        .unwrap();
    assert_eq!(
        s.teleport.last_client_serial().as_deref(),
        Some(second.serial_hex.as_str())
    );
    s.client.list_access_requests().await.unwrap();
    assert_eq!(
        s.teleport.last_client_serial().as_deref(),
        Some(s.identity.serial_hex.as_str())
    );
    other.ping().await.unwrap();
    assert_eq!(
        s.teleport.client_serials(),
        vec![s.identity.serial_hex.clone(), second.serial_hex]
    );
}

#[tokio::test]
async fn permission_errors_say_what_the_role_needs() {
    let s = setup().await;
    s.teleport
        .fail_next(Rpc::GetAccessRequests, 1, tonic::Code::PermissionDenied);
    let err = s.client.list_access_requests().await.unwrap_err();
    assert!(!err.is_transient());
    let msg = err.to_string();
    assert!(
        msg.contains("GetAccessRequestsV2") && msg.contains("role"),
        "{msg}"
    );
    // The fault was one-shot.
    s.client.list_access_requests().await.unwrap();
}

#[tokio::test]
async fn shut_down_server_fails_calls_transiently() {
    let s = setup().await;
    s.teleport.shutdown();
    let err = s.client.ping().await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
}
