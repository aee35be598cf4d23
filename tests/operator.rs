//! The operator against a real kube-apiserver + etcd (tier 3), with the Teleport and
//! Mattermost doubles on loopback. The control-plane binaries come from
//! `tests/control-plane/build.sh`; each test starts its own apiserver.

use std::time::Duration;

use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;
use teleport_mattermost_testkit::cluster::{Env, NS, Operator, WAIT};
use teleport_mattermost_testkit::stack::TEAM;
use teleport_mattermost_testkit::teleport::NewRequest;

/// Starts the operator, writes valid Secrets with `cert`, applies object `platform` and waits
/// until it is Ready.
async fn ready_platform(
    env: &Env,
    cert: &teleport_mattermost_testkit::pki::ClientCert,
) -> Operator {
    let operator = Operator::start(env).await;
    env.put_all_secrets(cert).await;
    env.apply(&env.cr_yaml("platform", operator.callback))
        .unwrap();
    env.wait_condition("platform", "Ready", "True").await;
    operator
}

fn request() -> NewRequest {
    NewRequest {
        user: "bob@example.com".into(),
        roles: vec!["dba".into()],
        reason: "operator test".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn crd_installs_and_the_schema_rejects_bad_objects() {
    let env = Env::start().await;
    let good = env.cr_yaml("good", "127.0.0.1:8080".parse().unwrap());
    // The server-side dry run runs the schema and CEL rules without storing anything.
    env.cp
        .kubectl_run(&["apply", "--dry-run=server", "-f", "-"], Some(&good))
        .expect("a valid object is accepted");

    let http_without_opt_in = good.replace("    allowInsecureHTTP: true\n", "");
    let err = env.apply(&http_without_opt_in).unwrap_err().to_string();
    assert!(err.contains("https"), "CEL rule message expected: {err}");

    // `off` is YAML 1.1's false: the choices avoid it, and the server says what it read.
    let off = good.replace(
        "    allowInsecureHTTP: true\n",
        "    allowInsecureHTTP: true\n    denyReason: off\n",
    );
    let err = env.apply(&off).unwrap_err().to_string();
    assert!(err.contains("spec.callback.denyReason"), "{err}");
    let required = good.replace(
        "    allowInsecureHTTP: true\n",
        "    allowInsecureHTTP: true\n    denyReason: required\n    approveReason: optional\n",
    );
    env.cp
        .kubectl_run(&["apply", "--dry-run=server", "-f", "-"], Some(&required))
        .expect("the reason choices are accepted");

    let bad_team = good.replace(&format!("team: {TEAM}"), "team: Not A Team");
    let err = env.apply(&bad_team).unwrap_err().to_string();
    assert!(
        err.contains("spec.mattermost.team"),
        "pattern error expected: {err}"
    );

    let empty_approver = format!("{good}  approvers:\n    - \"\"\n");
    let err = env.apply(&empty_approver).unwrap_err().to_string();
    assert!(err.contains("approvers"), "minLength error expected: {err}");

    let no_identity = good.replace(
        "    identitySecretRef:\n      name: mm-teleport-identity\n",
        "",
    );
    let err = env.apply(&no_identity).unwrap_err().to_string();
    assert!(
        err.contains("identitySecretRef"),
        "required error expected: {err}"
    );
}

#[tokio::test]
async fn valid_object_becomes_ready_posts_and_approves() {
    let env = Env::start().await;
    let operator = Operator::start(&env).await;
    env.put_all_secrets(&env.pki.client("access-plugin-mattermost"))
        .await;
    env.apply(&env.cr_yaml("platform", operator.callback))
        .unwrap();
    let cr = env.wait_condition("platform", "Ready", "True").await;
    let status = cr.status.unwrap();
    assert_eq!(status.observed_generation, cr.metadata.generation);
    assert!(status.identity_expires_at.is_some());
    assert!(status.teleport_version.is_some());
    for t in [
        "TeleportConnected",
        "MattermostReachable",
        "IdentityValid",
        "CallbackReady",
    ] {
        let c = status.condition(t).unwrap();
        assert_eq!(c.status, "True", "{t}: {c:?}");
    }

    let id = env.teleport.create_request(request());
    let post_id = env.recorded_post(&id).await;
    let outcome = env
        .mattermost
        .press(&post_id, "Approve", "alice")
        .await
        .unwrap();
    assert_eq!(outcome.status, 200, "{:?}", outcome.body);
    assert_eq!(
        env.teleport.state_changes()[0].delegator,
        "mattermost:alice@example.com"
    );

    // The status is stable: rewriting it would bump the resourceVersion forever.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = env
        .crs()
        .get("platform")
        .await
        .unwrap()
        .metadata
        .resource_version;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = env
        .crs()
        .get("platform")
        .await
        .unwrap()
        .metadata
        .resource_version;
    assert_eq!(before, after, "no status write loop");
    operator.stop().await;
}

#[tokio::test]
async fn missing_secret_is_reported_with_an_event_and_recovers() {
    let env = Env::start().await;
    let operator = Operator::start(&env).await;
    env.put_secret("mm-bot-token", &[("token", &env.mattermost.bot_token())])
        .await;
    env.put_secret(
        "mm-callback-signing",
        &[("signingSecret", "0123456789abcdef0123456789abcdef")],
    )
    .await;
    env.apply(&env.cr_yaml("platform", operator.callback))
        .unwrap();
    let cr = env.wait_condition("platform", "Ready", "False").await;
    let status = cr.status.unwrap();
    let ready = status.condition("Ready").unwrap();
    assert_eq!(ready.reason, "SecretMissing");
    assert!(
        ready
            .message
            .contains("Secret team-a/mm-teleport-identity does not exist"),
        "{}",
        ready.message
    );
    let events = env
        .cp
        .kubectl_run(&["get", "events", "-n", NS, "-o", "json"], None)
        .unwrap();
    assert!(
        events.contains("SecretMissing"),
        "an Event names the problem"
    );

    // A Secret with a key missing is named precisely.
    let cert = env.pki.client("access-plugin-mattermost");
    env.put_secret(
        "mm-teleport-identity",
        &[("auth.crt", &cert.cert_pem), ("auth.key", &cert.key_pem)],
    )
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let cr = env.crs().get("platform").await.unwrap();
        let msg = cr
            .status
            .and_then(|s| s.condition("Ready").map(|c| c.message.clone()))
            .unwrap_or_default();
        if msg.contains("has no key auth.cas") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "missing key not reported: {msg}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    env.put_identity(&cert).await;
    env.wait_condition("platform", "Ready", "True").await;
    operator.stop().await;
}

#[tokio::test]
async fn rotating_the_identity_secret_swaps_certificates_without_losing_posts() {
    let env = Env::start().await;
    let first = env.pki.client("access-plugin-mattermost");
    let operator = ready_platform(&env, &first).await;
    assert_eq!(
        env.teleport.last_client_serial(),
        Some(first.serial_hex.clone())
    );

    let mut ids = Vec::new();
    let mut rotations = Vec::new();
    for round in 0..3 {
        for _ in 0..10 {
            ids.push(env.teleport.create_request(request()));
        }
        let next = env.pki.client("access-plugin-mattermost");
        let started = tokio::time::Instant::now();
        env.put_identity(&next).await;
        for _ in 0..10 {
            ids.push(env.teleport.create_request(request()));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        while env.teleport.last_client_serial() != Some(next.serial_hex.clone()) {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "round {round}: new certificate not in use within 5 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        rotations.push(started.elapsed());
    }
    for id in &ids {
        env.wait_posted(id).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in &ids {
        assert_eq!(env.posts_for(id), 1, "request {id} posted exactly once");
    }
    eprintln!("rotation took {rotations:?}");
    operator.stop().await;
}

#[tokio::test]
async fn a_bad_new_identity_keeps_the_old_one_and_says_so() {
    let env = Env::start().await;
    let good = env.pki.client("access-plugin-mattermost");
    let operator = ready_platform(&env, &good).await;

    let now = time::OffsetDateTime::now_utc();
    let expired = env.pki.client_valid(
        "access-plugin-mattermost",
        now - time::Duration::days(10),
        now - time::Duration::days(1),
    );
    env.put_identity(&expired).await;
    let cr = env
        .wait_condition("platform", "IdentityValid", "False")
        .await;
    let status = cr.status.unwrap();
    let c = status.condition("IdentityValid").unwrap();
    assert_eq!(c.reason, "CertificateExpired");
    assert!(
        c.message.contains("still using the previous certificate"),
        "{}",
        c.message
    );

    let id = env.teleport.create_request(request());
    env.wait_posted(&id).await;
    assert_eq!(
        env.teleport.last_client_serial(),
        Some(good.serial_hex.clone()),
        "old identity still in use"
    );
    operator.stop().await;
}

#[tokio::test]
async fn deleting_or_suspending_the_object_stops_its_watcher() {
    let env = Env::start().await;
    let operator = ready_platform(&env, &env.pki.client("access-plugin-mattermost")).await;
    assert!(env.teleport.active_watches() >= 1);

    env.crs()
        .patch(
            "platform",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": true}})),
        )
        .await
        .unwrap();
    let cr = env.wait_condition("platform", "Ready", "False").await;
    assert_eq!(
        cr.status.unwrap().condition("Ready").unwrap().reason,
        "Suspended"
    );
    wait_for(
        || env.teleport.active_watches() == 0,
        "suspend stops the watch",
    )
    .await;

    env.crs()
        .patch(
            "platform",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": false}})),
        )
        .await
        .unwrap();
    env.wait_condition("platform", "Ready", "True").await;
    env.crs()
        .delete("platform", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        || env.teleport.active_watches() == 0,
        "delete stops the watch",
    )
    .await;
    let id = env.teleport.create_request(request());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(env.posts_for(&id), 0, "nothing is posted once deleted");
    let _ = env.channel_id;
    operator.stop().await;
}

async fn wait_for(mut check: impl FnMut() -> bool, what: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn fifty_objects_reconcile_to_ready() {
    let env = Env::start().await;
    let operator = Operator::start(&env).await;
    env.put_all_secrets(&env.pki.client("access-plugin-mattermost"))
        .await;
    let yaml: String = (0..50)
        .map(|i| {
            format!(
                "---\n{}",
                env.cr_yaml(&format!("team-{i:02}"), operator.callback)
            )
        })
        .collect();
    env.apply(&yaml).unwrap();
    for i in 0..50 {
        env.wait_condition(&format!("team-{i:02}"), "Ready", "True")
            .await;
    }
    assert!(env.teleport.active_watches() >= 50, "one watch per object");
    operator.stop().await;
}

#[tokio::test]
async fn a_mattermost_behind_an_internal_ca_is_trusted_through_a_ca_bundle_configmap() {
    use teleport_mattermost_testkit::mattermost::MattermostDouble;
    use teleport_mattermost_testkit::pki::TestPki;
    use teleport_mattermost_testkit::stack::provision;
    let env = Env::start().await;
    let operator = Operator::start(&env).await;
    let corp = TestPki::new();
    let (cert, key) = corp.server_cert();
    let internal = MattermostDouble::start_https(&cert, &key).await;
    let channel = provision(&internal);
    env.put_all_secrets(&env.pki.client("access-plugin-mattermost"))
        .await;
    env.put_secret("mm-bot-token", &[("token", &internal.bot_token())])
        .await;
    let url = internal.url().as_str().trim_end_matches('/').to_string();
    let yaml = env
        .cr_yaml("platform", operator.callback)
        .replace(env.mattermost.url().as_str().trim_end_matches('/'), &url);
    assert!(yaml.contains("https://127.0.0.1:"), "{yaml}");

    // Not trusted yet: the condition says why.
    env.apply(&yaml).unwrap();
    let cr = env
        .wait_condition("platform", "MattermostReachable", "False")
        .await;
    let message = cr
        .status
        .unwrap()
        .condition("MattermostReachable")
        .unwrap()
        .message
        .clone();
    assert!(
        message.to_lowercase().contains("certificate") || message.contains("UnknownIssuer"),
        "{message}"
    );

    // The CA bundle in a ConfigMap, referenced from the object: Ready, and posting.
    env.cp
        .kubectl_run(
            &[
                "-n",
                NS,
                "create",
                "configmap",
                "corp-ca",
                "--from-file=ca.crt=/dev/stdin",
            ],
            Some(&corp.ca_pem()),
        )
        .unwrap();
    let with_ca = yaml.replace(
        "    rateLimit:",
        "    caBundleRef:\n      name: corp-ca\n    rateLimit:",
    );
    env.apply(&with_ca).unwrap();
    env.wait_condition("platform", "Ready", "True").await;
    let id = env.teleport.create_request(request());
    let deadline = tokio::time::Instant::now() + WAIT;
    while internal.posts_in(&channel).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} never posted over HTTPS"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A ConfigMap holding no certificate is named in the status.
    env.cp
        .kubectl_run(
            &[
                "-n",
                NS,
                "create",
                "configmap",
                "not-a-ca",
                "--from-literal=ca.crt=hello",
            ],
            None,
        )
        .unwrap();
    env.apply(&with_ca.replace("name: corp-ca", "name: not-a-ca"))
        .unwrap();
    let cr = env.wait_condition("platform", "Ready", "False").await;
    let ready = cr
        .status
        .unwrap()
        .condition("Ready")
        .unwrap()
        .message
        .clone();
    assert!(
        ready.contains("ConfigMap team-a/not-a-ca key ca.crt"),
        "{ready}"
    );
    operator.stop().await;
}

#[tokio::test]
async fn a_resource_asking_for_a_deny_reason_opens_the_dialog_and_records_the_reason() {
    let env = Env::start().await;
    let operator = Operator::start(&env).await;
    env.put_all_secrets(&env.pki.client("access-plugin-mattermost"))
        .await;
    let cr = env.cr_yaml("platform", operator.callback).replace(
        "    allowInsecureHTTP: true\n",
        "    allowInsecureHTTP: true\n    denyReason: required\n",
    );
    env.apply(&cr).unwrap();
    env.wait_condition("platform", "Ready", "True").await;

    let id = env.teleport.create_request(request());
    let post_id = env.recorded_post(&id).await;
    let pressed = env
        .mattermost
        .press(&post_id, "Deny", "alice")
        .await
        .unwrap();
    assert_eq!(pressed.status, 200, "{pressed:?}");
    let dialogs = env.mattermost.dialogs_for("alice");
    assert_eq!(dialogs.len(), 1, "Deny opened the reason dialog");
    assert!(
        dialogs[0].url.ends_with("/v1/dialogs/team-a/platform"),
        "{}",
        dialogs[0].url
    );
    let channel = env.mattermost.post(&post_id).unwrap().channel_id;
    let answer = env
        .mattermost
        .submit_dialog(
            &dialogs[0],
            "alice",
            &channel,
            json!({"reason": "no change window today"}),
            None,
        )
        .await
        .unwrap();
    assert!(answer.closes(), "{answer:?}");
    let changes = env.teleport.state_changes();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert!(
        changes[0].reason.ends_with(": no change window today"),
        "{}",
        changes[0].reason
    );
}

#[tokio::test]
async fn a_resource_telling_the_requester_messages_them_and_bad_reminders_are_named() {
    let env = Env::start().await;
    let operator = Operator::start(&env).await;
    env.put_all_secrets(&env.pki.client("access-plugin-mattermost"))
        .await;
    // Reminders more often than once a minute are refused with the field named.
    let too_often = format!(
        "{}  reminders:\n    after: 30s\n",
        env.cr_yaml("platform", operator.callback)
    );
    env.apply(&too_often).unwrap();
    let cr = env.wait_condition("platform", "Ready", "False").await;
    let ready = cr.status.unwrap().condition("Ready").unwrap().clone();
    assert!(
        ready
            .message
            .contains("reminders.after: must be at least 1m"),
        "{}",
        ready.message
    );

    let telling = format!(
        "{}  requester:\n    lookup: email\n  reminders:\n    after: 1h\n",
        env.cr_yaml("platform", operator.callback)
    );
    env.apply(&telling).unwrap();
    env.wait_condition("platform", "Ready", "True").await;
    let id = env.teleport.create_request(request());
    let post_id = env.recorded_post(&id).await;
    env.mattermost
        .press(&post_id, "Approve", "alice")
        .await
        .unwrap();
    let bot = env.mattermost.bot_user_id();
    let bob = env.mattermost.user_id("bob").expect("bob");
    let dm = env.mattermost.dm_channel_id(&bot, &bob);
    let told = || {
        env.mattermost
            .posts_in(&dm)
            .into_iter()
            .any(|p| p.message.contains("was APPROVED by @alice"))
    };
    assert!(
        teleport_mattermost_testkit::stack::Stack::eventually(Duration::from_secs(20), told).await,
        "bob is told: {:?}",
        env.mattermost.posts_in(&dm)
    );
}
