//! `teleport-mattermost start`: the real binary with a seed-style TOML file, against the
//! doubles on loopback.

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use teleport_mattermost::request::RequestState;
use teleport_mattermost_testkit::cluster::free_addr;
use teleport_mattermost_testkit::mattermost::MattermostDouble;
use teleport_mattermost_testkit::pki::{ClientCert, TestPki};
use teleport_mattermost_testkit::stack::{CHANNEL, Stack, TEAM, provision};
use teleport_mattermost_testkit::teleport::{NewRequest, TeleportDouble};

fn write_identity(dir: &Path, cert: &ClientCert) {
    std::fs::write(dir.join("auth.crt"), &cert.cert_pem).unwrap();
    std::fs::write(dir.join("auth.key"), &cert.key_pem).unwrap();
    std::fs::write(dir.join("auth.cas"), &cert.cas_pem).unwrap();
}

fn signal(child: &std::process::Child, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_posts_approves_reloads_and_stops_gracefully() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pki = TestPki::new();
    let teleport = TeleportDouble::start(&pki).await;
    let mattermost = MattermostDouble::start().await;
    provision(&mattermost);

    let dir = tempfile::tempdir().unwrap();
    let first = pki.client("access-plugin-mattermost");
    write_identity(dir.path(), &first);
    let callback = free_addr();
    let config = format!(
        r#"[teleport]
auth_server = "{teleport}"
client_key = "{dir}/auth.key"
client_crt = "{dir}/auth.crt"
root_cas = "{dir}/auth.cas"

[mattermost]
url = "{url}"
team = "{TEAM}"
channel = "{CHANNEL}"
token = "{token}"
secret = "0123456789abcdef0123456789abcdef"

[http]
public_addr = "http://{callback}"
listen_addr = "{callback}"
deny_reason = "required"

[log]
output = "{dir}/plugin.log"
severity = "INFO"
"#,
        teleport = teleport.address(),
        dir = dir.path().display(),
        url = mattermost.url().as_str().trim_end_matches('/'),
        token = mattermost.bot_token(),
    );
    let config_path = dir.path().join("teleport-mattermost.toml");
    std::fs::write(&config_path, config).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_teleport-mattermost"))
        .args(["start", "-c"])
        .arg(&config_path)
        .arg("--insecure-no-tls")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    assert!(
        Stack::eventually(Duration::from_secs(30), || teleport.active_watches() == 1).await,
        "the plugin starts watching"
    );
    let id = teleport.create_request(NewRequest {
        user: "bob@example.com".into(),
        roles: vec!["dba".into()],
        ..Default::default()
    });
    let posted = || {
        teleport
            .decoded_plugin_data(&id)
            .messages
            .first()
            .map(|m| m.post_id.clone())
    };
    assert!(Stack::eventually(Duration::from_secs(20), || posted().is_some()).await);
    let post = mattermost.post(&posted().unwrap()).unwrap();
    let action_url = post.props["attachments"][0]["actions"][0]["integration"]["url"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(action_url, format!("http://{callback}/mattermost_action"));
    let outcome = mattermost
        .press(&post.id, "Approve", "alice")
        .await
        .unwrap();
    assert_eq!(outcome.status, 200, "{:?}", outcome.body);
    assert_eq!(teleport.request(&id).unwrap().state, RequestState::Approved);

    // Renewed files are picked up without a signal (polled every 5 s)...
    let second = pki.client("access-plugin-mattermost");
    write_identity(dir.path(), &second);
    assert!(
        Stack::eventually(Duration::from_secs(15), || teleport.last_client_serial()
            == Some(second.serial_hex.clone()))
        .await,
        "renewed identity files are used"
    );
    // ...and at once on SIGHUP.
    let third = pki.client("access-plugin-mattermost");
    write_identity(dir.path(), &third);
    signal(&child, "HUP");
    assert!(
        Stack::eventually(Duration::from_secs(4), || teleport.last_client_serial()
            == Some(third.serial_hex.clone()))
        .await,
        "SIGHUP reloads the identity"
    );
    // A bad renewal keeps the working identity.
    std::fs::write(dir.path().join("auth.crt"), "garbage").unwrap();
    signal(&child, "HUP");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let id2 = teleport.create_request(NewRequest {
        user: "bob@example.com".into(),
        ..Default::default()
    });
    assert!(
        Stack::eventually(Duration::from_secs(20), || !teleport
            .decoded_plugin_data(&id2)
            .messages
            .is_empty())
        .await,
        "still posting with the previous identity"
    );

    // Deny asks for the reason (deny_reason = "required"), submitted beside the action route.
    let post2 = mattermost
        .post(&teleport.decoded_plugin_data(&id2).messages[0].post_id)
        .unwrap();
    let pressed = mattermost.press(&post2.id, "Deny", "alice").await.unwrap();
    assert_eq!(pressed.status, 200, "{pressed:?}");
    let dialog = mattermost.dialogs_for("alice").pop().expect("a dialog");
    assert_eq!(dialog.url, format!("http://{callback}/mattermost_dialog"));
    let answer = mattermost
        .submit_dialog(
            &dialog,
            "alice",
            &post2.channel_id,
            serde_json::json!({"reason": "not this week"}),
            None,
        )
        .await
        .unwrap();
    assert!(answer.closes(), "{answer:?}");
    let denied = teleport.request(&id2).unwrap();
    assert_eq!(denied.state, RequestState::Denied);
    assert!(
        denied.resolve_reason.ends_with(": not this week"),
        "{}",
        denied.resolve_reason
    );

    signal(&child, "TERM");
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "graceful exit on SIGTERM: {status}");

    let log = std::fs::read_to_string(dir.path().join("plugin.log")).unwrap();
    for line in [
        "Starting Teleport Access Mattermost plugin",
        "Teleport version check passed",
        "watcher started",
        "Mattermost health check passed",
        "new identity rejected",
    ] {
        assert!(log.contains(line), "log lacks {line:?}:\n{log}");
    }
}

#[test]
fn start_with_an_expired_certificate_fails_with_its_not_after() {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let now = time::OffsetDateTime::now_utc();
    let expired = pki.client_valid(
        "access-plugin-mattermost",
        now - time::Duration::days(30),
        now - time::Duration::days(1),
    );
    write_identity(dir.path(), &expired);
    let config = format!(
        "[teleport]\nauth_server = \"127.0.0.1:1\"\nclient_key = \"{d}/auth.key\"\nclient_crt = \"{d}/auth.crt\"\nroot_cas = \"{d}/auth.cas\"\n\n[mattermost]\nurl = \"http://127.0.0.1:1\"\nteam = \"t\"\nchannel = \"c\"\ntoken = \"x\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n\n[http]\npublic_addr = \"example.com\"\nlisten_addr = \"127.0.0.1:0\"\n",
        d = dir.path().display()
    );
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_teleport-mattermost"))
        .args(["start", "--insecure-no-tls", "-c"])
        .arg(&path)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success());
    assert!(err.contains("expired"), "{err}");
    assert!(err.contains("auth.crt"), "names the file: {err}");
}

/// `[mattermost] ca_file`: a Mattermost behind an internal CA is trusted through it; without
/// it, the log says the certificate is not trusted and names the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_file_trusts_a_mattermost_behind_an_internal_ca() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pki = TestPki::new();
    let teleport = TeleportDouble::start(&pki).await;
    let corp = TestPki::new();
    let (cert, key) = corp.server_cert();
    let mattermost = MattermostDouble::start_https(&cert, &key).await;
    provision(&mattermost);
    let dir = tempfile::tempdir().unwrap();
    write_identity(dir.path(), &pki.client("access-plugin-mattermost"));
    std::fs::write(dir.path().join("corp-ca.pem"), corp.ca_pem()).unwrap();
    let callback = free_addr();
    let config = |ca_line: &str| {
        format!(
            "[teleport]\naddr = \"{teleport}\"\nclient_key = \"{d}/auth.key\"\nclient_crt = \"{d}/auth.crt\"\nroot_cas = \"{d}/auth.cas\"\n\n[mattermost]\nurl = \"{url}\"\nteam = \"{TEAM}\"\nchannel = \"{CHANNEL}\"\ntoken = \"{token}\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n{ca_line}\n\n[http]\npublic_addr = \"http://{callback}\"\nlisten_addr = \"{callback}\"\n\n[log]\noutput = \"{d}/plugin.log\"\n",
            teleport = teleport.address(),
            d = dir.path().display(),
            url = mattermost.url().as_str().trim_end_matches('/'),
            token = mattermost.bot_token(),
        )
    };
    let run = |text: String| {
        let path = dir.path().join("teleport-mattermost.toml");
        std::fs::write(&path, text).unwrap();
        Command::new(env!("CARGO_BIN_EXE_teleport-mattermost"))
            .args(["start", "--insecure-no-tls", "-c"])
            .arg(&path)
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let log = || std::fs::read_to_string(dir.path().join("plugin.log")).unwrap_or_default();

    let mut untrusted = run(config(""));
    assert!(
        Stack::eventually(Duration::from_secs(20), || log().contains("UnknownIssuer")).await,
        "{}",
        log()
    );
    assert!(
        log().contains("mattermost.ca_file"),
        "the hint names the key: {}",
        log()
    );
    let _ = untrusted.kill();
    let _ = untrusted.wait();

    let mut trusted = run(config(&format!(
        "ca_file = \"{}/corp-ca.pem\"",
        dir.path().display()
    )));
    assert!(
        Stack::eventually(Duration::from_secs(20), || teleport.active_watches() == 1).await,
        "{}",
        log()
    );
    let id = teleport.create_request(NewRequest::default());
    assert!(
        Stack::eventually(Duration::from_secs(20), || !teleport
            .decoded_plugin_data(&id)
            .messages
            .is_empty())
        .await,
        "posted over HTTPS to the internal-CA server: {}",
        log()
    );
    signal(&trusted, "TERM");
    let _ = trusted.wait();
}
