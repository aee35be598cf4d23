//! Tier 5: a REAL Teleport (v13.3.8 auth and tctl from `tests/teleport/build.sh`) and the real
//! Mattermost of tier 4, with the plugin as users run it: the standalone binary from a config
//! made with `configure`, and the operator over the real apiserver.
//!
//! Run the tier with `tests/teleport/run-tier5.sh`: it starts and provisions Mattermost inside
//! a loopback-only network namespace and runs these tests there; each test starts its own
//! Teleport cluster with `tctl`-bootstrapped users, roles and identities. Without the peers
//! (or outside that script) every test prints one line saying why it was skipped.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use teleport_mattermost::message;
use teleport_mattermost_testkit::real_mattermost::{self, Api, Env};
use teleport_mattermost_testkit::real_teleport::{self, Mode, PLUGIN_USER, RealTeleport};
use teleport_mattermost_testkit::tarball;

const WAIT: Duration = Duration::from_secs(60);
const TEAM: &str = "engineering";
const CHANNEL: &str = "access-requests";
/// The requester's Teleport user: an email, as with SSO, matching Mattermost user bob.
const REQUESTER: &str = "bob@example.com";

fn skip(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The real Mattermost, or `None` after printing why the test is skipped.
fn tier5() -> Option<Env> {
    if !real_teleport::available() {
        skip("skipped: the Teleport peers are not built; run tests/teleport/build.sh");
        return None;
    }
    let env = real_mattermost::env()?;
    Some(env)
}

macro_rules! tier5 {
    () => {
        match tier5() {
            Some(env) => env,
            None => return,
        }
    };
}

/// Returns from a test that needs only the Teleport peers (no Mattermost) when they are not
/// built, and installs the TLS provider.
macro_rules! teleport_peers {
    () => {
        if !real_teleport::available() {
            skip("skipped: the Teleport peers are not built; run tests/teleport/build.sh");
            return;
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
    };
}

/// The `teleport-mattermost` binary under test.
fn plugin_binary() -> PathBuf {
    std::env::var_os("TM_PLUGIN_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_teleport-mattermost")))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A cluster bootstrapped the seed's way, with the plugin's TLS identity signed.
async fn cluster() -> (RealTeleport, [PathBuf; 3]) {
    let teleport = RealTeleport::start(Mode::AuthOnly).await.unwrap();
    teleport.bootstrap(&[REQUESTER]).unwrap();
    let files = teleport.sign_tls(PLUGIN_USER, "auth", "2190h").unwrap();
    (teleport, files)
}

/// `teleport-mattermost configure`, edited the way the seed document says to.
fn seed_config(env: &Env, teleport: &RealTeleport, identity: &str, callback_port: u16) -> String {
    seed_config_of(&plugin_binary(), env, teleport, identity, callback_port)
}

/// [`seed_config`] from `binary`'s own `configure`.
fn seed_config_of(
    binary: &Path,
    env: &Env,
    teleport: &RealTeleport,
    identity: &str,
    callback_port: u16,
) -> String {
    let template = Command::new(binary).arg("configure").output().unwrap();
    assert!(template.status.success());
    let text = String::from_utf8(template.stdout).unwrap();
    let secret = hex::encode(rand::random::<[u8; 32]>());
    let mut edited = text
        .replace("addr = \"example.com:3025\"", &format!("addr = \"{}\"", teleport.auth_addr))
        .replace(
            "url = \"https://mattermost.example.com\"",
            &format!("url = \"{}\"", env.url),
        )
        .replace("team = \"team-name\"", &format!("team = \"{TEAM}\""))
        .replace("channel = \"channel-name\"", &format!("channel = \"{CHANNEL}\""))
        .replace("token = \"api-token\"", &format!("token = \"{}\"", env.bot_token))
        .replace("secret = \"signing-secret-value\"", &format!("secret = \"{secret}\""))
        .replace(
            "public_addr = \"example.com\"",
            &format!("public_addr = \"https://127.0.0.1:{callback_port}\"\nlisten_addr = \"127.0.0.1:{callback_port}\""),
        );
    // The identity: the three files (the template's keys) or an identity file.
    edited = edited
        .lines()
        .filter(|l| {
            !["client_crt =", "root_cas ="]
                .iter()
                .any(|k| l.trim_start().starts_with(k))
        })
        .map(|l| {
            if l.trim_start().starts_with("client_key =") {
                identity.to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(edited.contains(identity), "{edited}");
    edited
}

/// The three-file identity lines of the config.
/// The plugin started standalone on the seed config, with the TLS identity files and a free
/// callback port: how most tests here run it.
fn standalone_with_tls(env: &Env, teleport: &RealTeleport, files: &[PathBuf; 3]) -> Standalone {
    Standalone::start(&seed_config(
        env,
        teleport,
        &tls_identity(files),
        free_port(),
    ))
}

fn tls_identity(files: &[PathBuf; 3]) -> String {
    format!(
        "client_crt = \"{}\"\nclient_key = \"{}\"\nroot_cas = \"{}\"",
        files[0].display(),
        files[1].display(),
        files[2].display()
    )
}

/// `teleport-mattermost start -c FILE -d`, its log captured.
struct Standalone {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Standalone {
    fn start(config: &str) -> Standalone {
        Self::start_as(&plugin_binary(), config)
    }

    fn start_as(binary: &Path, config: &str) -> Standalone {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("teleport-mattermost.toml");
        std::fs::write(&path, config).unwrap();
        let log = dir.path().join("plugin.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(binary)
            .args(["start", "-d", "-c"])
            .arg(&path)
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Standalone {
            child,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_log(&self, text: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "the plugin never logged {text:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn signal(&self, sig: &str) {
        assert!(
            Command::new("kill")
                .args([&format!("-{sig}"), &self.child.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
    }

    async fn stop(mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "did not stop:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A peer process stopped when the test ends, also when it panics.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Mattermost as the test sees it.
struct Chat {
    env: Env,
    api: Api,
    channel_id: String,
}

impl Chat {
    async fn new(env: Env) -> Chat {
        let api = Api::new(&env.url);
        let channel_id = api.channel_id(TEAM, CHANNEL, &env.admin_token).await;
        Chat {
            channel_id,
            env,
            api,
        }
    }

    /// The channel's root posts for a request: ours carry its id as a marker, Teleport's Go
    /// plugin's only name it in the text.
    async fn posts_for(&self, id: &str) -> Vec<Value> {
        self.api
            .channel_posts(&self.channel_id, &self.env.admin_token)
            .await
            .into_iter()
            .filter(|p| {
                p["root_id"] == ""
                    && (p["props"]["teleport_request_id"] == id
                        || p["message"].as_str().is_some_and(|m| m.contains(id)))
            })
            .collect()
    }

    /// Waits for the request's single root post.
    async fn posted(&self, id: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let posts = self.posts_for(id).await;
            if let Some(p) = posts.first() {
                // Give a duplicate the chance to appear before anyone counts.
                tokio::time::sleep(Duration::from_millis(500)).await;
                return p.clone();
            }
            assert!(Instant::now() < deadline, "request {id} was never posted");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until the post's message contains `text`.
    async fn shows(&self, post_id: &str, text: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let post = self.api.post(post_id, &self.env.admin_token).await;
            let message = post["message"].as_str().unwrap_or_default().to_string();
            if message.contains(text) {
                return message;
            }
            assert!(
                Instant::now() < deadline,
                "the post never showed {text:?}: {message}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Presses `action` as `user` through Mattermost; returns the ephemeral answer.
    async fn press(&self, post_id: &str, action: &str, user: &str) -> String {
        let (session, mut events) = self.api.session(&self.env, user).await;
        let (status, body) = self.api.press(post_id, action, &session).await;
        assert_eq!(status, 200, "the press: {body}");
        events
            .ephemeral_on(post_id)
            .await
            .expect("an ephemeral answer")
    }
}

async fn wait_state(teleport: &RealTeleport, id: &str, state: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = teleport.state(id).unwrap();
        if now == state {
            return;
        }
        assert!(Instant::now() < deadline, "{id} is {now}, never {state}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The release tarball, installed with its own `install` script into a temporary prefix, as
/// the seed document's standalone install goes, with its unit verified.
fn installed_from_the_tarball() -> tarball::Installed {
    let installed = tarball::make_and_install(env!("CARGO_PKG_VERSION"), &plugin_binary());
    tarball::assert_unit_verifies(&installed.unit());
    installed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_walkthrough_runs_for_real() {
    let env = tier5!();
    let chat = Chat::new(env.clone()).await;
    let (teleport, files) = cluster().await;
    let install = installed_from_the_tarball();
    let binary = install.binary();
    let plugin = Standalone::start_as(
        &binary,
        &seed_config_of(&binary, &env, &teleport, &tls_identity(&files), free_port()),
    );
    // The seed's startup lines.
    for line in [
        "Starting Teleport Access Mattermost plugin",
        "Teleport version check passed",
        "watcher started",
        "Mattermost health check passed",
        "HTTPS server listening",
    ] {
        plugin.wait_log(line).await;
    }

    let id = teleport.create_request(REQUESTER, "walkthrough").unwrap();
    let post = chat.posted(&id).await;
    let post_id = post["id"].as_str().unwrap().to_string();
    assert!(
        post["message"]
            .as_str()
            .unwrap()
            .contains(&format!("**Request ID**: {id}")),
        "{post}"
    );
    // The requester cannot approve their own request; a reviewer can.
    let refused = chat.press(&post_id, message::ACTION_APPROVE, "bob").await;
    assert!(refused.contains("your own"), "{refused}");
    let answer = chat.press(&post_id, message::ACTION_APPROVE, "alice").await;
    assert!(answer.contains("You approved"), "{answer}");
    wait_state(&teleport, &id, "APPROVED").await;
    chat.shows(&post_id, "APPROVED by @alice").await;

    // Teleport's audit log records who acted.
    let update = teleport
        .audit_events()
        .into_iter()
        .find(|e| e["event"] == "access_request.update" && e["id"] == id.as_str())
        .expect("an access_request.update audit event");
    assert_eq!(
        update["delegator"], "mattermost:alice@example.com",
        "{update}"
    );
    assert_eq!(update["state"], "APPROVED", "{update}");
    assert_eq!(chat.posts_for(&id).await.len(), 1);

    // systemctl reload: SIGHUP re-reads the identity; the plugin goes on.
    plugin.signal("HUP");
    plugin
        .wait_log("SIGHUP: reloading identity and token")
        .await;
    plugin.wait_log("credentials reloaded").await;
    let after = teleport
        .create_request(REQUESTER, "after the reload")
        .unwrap();
    chat.posted(&after).await;
    assert!(plugin.stop().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_through_mattermost_and_a_revocation_in_teleport_edit_the_post() {
    let env = tier5!();
    let chat = Chat::new(env.clone()).await;
    let (teleport, files) = cluster().await;
    let plugin = standalone_with_tls(&env, &teleport, &files);
    plugin.wait_log("watcher started").await;

    let denied = teleport.create_request(REQUESTER, "to be denied").unwrap();
    let post = chat.posted(&denied).await;
    let post_id = post["id"].as_str().unwrap();
    let answer = chat.press(post_id, message::ACTION_DENY, "carol").await;
    assert!(answer.contains("You denied"), "{answer}");
    wait_state(&teleport, &denied, "DENIED").await;
    chat.shows(post_id, "DENIED by @carol").await;

    // Approved through Mattermost, then revoked with tctl: the post follows Teleport.
    let revoked = teleport.create_request(REQUESTER, "to be revoked").unwrap();
    let post = chat.posted(&revoked).await;
    let post_id = post["id"].as_str().unwrap();
    chat.press(post_id, message::ACTION_APPROVE, "alice").await;
    chat.shows(post_id, "APPROVED by @alice").await;
    teleport
        .tctl(&["requests", "deny", &revoked, "--reason=access revoked"])
        .unwrap();
    let text = chat.shows(post_id, "DENIED").await;
    assert!(
        !text.contains("@alice"),
        "the revocation is not alice's: {text}"
    );
    assert!(text.contains("access revoked"), "{text}");
    drop(plugin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_made_while_the_plugin_was_down_are_posted_and_rm_expires_the_post() {
    let env = tier5!();
    let chat = Chat::new(env.clone()).await;
    let (teleport, files) = cluster().await;
    let config = seed_config(&env, &teleport, &tls_identity(&files), free_port());
    let plugin = Standalone::start(&config);
    plugin.wait_log("watcher started").await;
    let first = teleport
        .create_request(REQUESTER, "before the outage")
        .unwrap();
    let first_post = chat.posted(&first).await;
    assert!(plugin.stop().await.success());

    // Down: two requests arrive, one is removed.
    let while_down = teleport
        .create_request(REQUESTER, "during the outage")
        .unwrap();
    let removed = teleport
        .create_request(REQUESTER, "removed during the outage")
        .unwrap();
    teleport.tctl(&["requests", "rm", &removed]).unwrap();

    let plugin = Standalone::start(&config);
    plugin.wait_log("resync queued").await;
    chat.posted(&while_down).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        chat.posts_for(&first).await.len(),
        1,
        "not reposted after the restart"
    );
    assert!(
        chat.posts_for(&removed).await.is_empty(),
        "a deleted request is not posted"
    );

    // tctl requests rm arrives as a DELETE: the post says EXPIRED.
    teleport.tctl(&["requests", "rm", &first]).unwrap();
    chat.shows(first_post["id"].as_str().unwrap(), "EXPIRED")
        .await;
    drop(plugin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_file_from_tctl_works_and_a_rotation_in_place_is_picked_up() {
    let env = tier5!();
    let chat = Chat::new(env.clone()).await;
    let (teleport, _) = cluster().await;
    let identity = teleport
        .sign_file(PLUGIN_USER, "identity", "2190h")
        .unwrap();
    let config = seed_config(
        &env,
        &teleport,
        &format!("identity = \"{}\"", identity.display()),
        free_port(),
    );
    let plugin = Standalone::start(&config);
    plugin.wait_log("watcher started").await;
    let id = teleport.create_request(REQUESTER, "identity file").unwrap();
    chat.posted(&id).await;

    // Re-signed in place: reloaded without a restart, and posting goes on.
    teleport
        .sign_file(PLUGIN_USER, "identity", "2190h")
        .unwrap();
    plugin.wait_log("identity_changed=true").await;
    let after = teleport
        .create_request(REQUESTER, "after the rotation")
        .unwrap();
    chat.posted(&after).await;
    assert_eq!(chat.posts_for(&id).await.len(), 1);
    drop(plugin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_permission_is_named_and_the_plugin_recovers_once_the_role_is_fixed() {
    let env = tier5!();
    let chat = Chat::new(env.clone()).await;
    let (teleport, files) = cluster().await;
    // The role without `update`: the plugin can watch and list, but not write plugin data.
    teleport
        .create(&format!(
            "kind: role\nversion: v6\nmetadata:\n  name: {PLUGIN_USER}\nspec:\n  allow:\n    rules:\n      - resources: [access_request]\n        verbs: [list, read]\n"
        ))
        .unwrap();
    let plugin = standalone_with_tls(&env, &teleport, &files);
    plugin.wait_log("watcher started").await;
    let id = teleport.create_request(REQUESTER, "needs update").unwrap();
    plugin.wait_log("access_plugin_data").await;
    let log = plugin.log();
    assert!(
        log.contains("access denied") && log.contains("update"),
        "the admin is told which permission is missing:\n{log}"
    );
    assert!(
        chat.posts_for(&id).await.is_empty(),
        "nothing posted without a record"
    );

    teleport
        .create(&format!(
            "kind: role\nversion: v6\nmetadata:\n  name: {PLUGIN_USER}\nspec:\n  allow:\n    rules:\n      - resources: [access_request]\n        verbs: [list, read, update]\n"
        ))
        .unwrap();
    chat.posted(&id).await;
    assert_eq!(chat.posts_for(&id).await.len(), 1);
    drop(plugin);
}

/// Teleport's own Go plugin (of the same Teleport release) writes its config; ours reads the
/// same Teleport and takes over its posts.
fn go_plugin_config(
    dir: &Path,
    env: &Env,
    teleport: &RealTeleport,
    files: &[PathBuf; 3],
) -> PathBuf {
    let path = dir.join("go-plugin.toml");
    std::fs::write(
        &path,
        format!(
            "[teleport]\naddr = \"{}\"\nclient_crt = \"{}\"\nclient_key = \"{}\"\nroot_cas = \"{}\"\n\n[mattermost]\nurl = \"{}\"\ntoken = \"{}\"\nrecipients = [\"{TEAM}/{CHANNEL}\"]\n\n[log]\noutput = \"stderr\"\nseverity = \"DEBUG\"\n",
            teleport.auth_addr,
            files[0].display(),
            files[1].display(),
            files[2].display(),
            env.url,
            env.bot_token
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_from_teleports_go_plugin_reposts_nothing_and_edits_its_posts() {
    let env = tier5!();
    let chat = Chat::new(env.clone()).await;
    let (teleport, files) = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let go_log = dir.path().join("go-plugin.log");
    let mut go = Peer(
        Command::new(real_teleport::bin_dir().join("tm-teleport-mattermost-plugin"))
            .args(["start", "-c"])
            .arg(go_plugin_config(dir.path(), &env, &teleport, &files))
            .stdout(std::fs::File::create(&go_log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("go-plugin.err")).unwrap())
            .spawn()
            .unwrap(),
    );
    let id = teleport
        .create_request(REQUESTER, "posted by the Go plugin")
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while chat.posts_for(&id).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the Go plugin never posted:\n{}",
            std::fs::read_to_string(dir.path().join("go-plugin.err")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let post = chat.posted(&id).await;
    let post_id = post["id"].as_str().unwrap().to_string();
    assert!(
        post["props"]["attachments"].is_null(),
        "the Go plugin posts no buttons"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &go.0.id().to_string()])
        .status();
    let _ = go.0.wait();

    let plugin = standalone_with_tls(&env, &teleport, &files);
    plugin.wait_log("resync queued").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        chat.posts_for(&id).await.len(),
        1,
        "ours takes over instead of reposting"
    );
    teleport
        .tctl(&["requests", "approve", &id, "--reason=approved with tctl"])
        .unwrap();
    chat.shows(&post_id, "APPROVED").await;
    drop(plugin);
}

/// The server's keepalive policy (Teleport's gRPC server: pings no more often than every
/// 60 s, else GOAWAY `too_many_pings`) must never cut an idle watch. Six idle minutes: three
/// of the drops seen before the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_watch_survives_six_minutes_without_a_reconnect() {
    let env = tier5!();
    let (teleport, files) = cluster().await;
    let plugin = standalone_with_tls(&env, &teleport, &files);
    plugin.wait_log("watcher started").await;
    tokio::time::sleep(Duration::from_secs(6 * 60 + 15)).await;
    let log = plugin.log();
    assert_eq!(
        log.matches("watcher started").count(),
        1,
        "the watch was re-established while idle:\n{}",
        log.lines()
            .filter(|l| l.contains("WARN") || l.contains("watch"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // And it still delivers.
    let chat = Chat::new(env).await;
    let id = teleport
        .create_request(REQUESTER, "after six idle minutes")
        .unwrap();
    chat.posted(&id).await;
    drop(plugin);
}

/// A cluster with a Proxy, bootstrapped, and the plugin's identity.
async fn proxied(mode: Mode) -> (RealTeleport, [PathBuf; 3]) {
    let teleport = RealTeleport::start(mode).await.unwrap();
    teleport.bootstrap(&[REQUESTER]).unwrap();
    let files = teleport.sign_tls(PLUGIN_USER, "auth", "2190h").unwrap();
    (teleport, files)
}

/// The seed config pointed at `address` (a Proxy), trusting `ca_pem` for its web certificate.
fn proxy_config(
    env: &Env,
    teleport: &RealTeleport,
    files: &[PathBuf; 3],
    address: &str,
    ca_pem: &str,
) -> String {
    let ca = teleport.dir().join(format!("web-ca-{}.pem", free_port()));
    std::fs::write(&ca, ca_pem).unwrap();
    seed_config(env, teleport, &tls_identity(files), free_port()).replace(
        &format!("addr = \"{}\"", teleport.auth_addr),
        &format!("addr = \"{address}\"\nca_file = \"{}\"", ca.display()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_only_the_proxys_address_it_connects_by_tls_routing_posts_and_approves() {
    let env = tier5!();
    let chat = Chat::new(env.clone()).await;
    let (teleport, files) = proxied(Mode::ProxyMultiplex).await;
    let web = teleport.web_addr.clone().unwrap();
    let plugin = Standalone::start(&proxy_config(
        &env,
        &teleport,
        &files,
        &web,
        teleport.web_cert_pem.as_deref().unwrap(),
    ));
    plugin.wait_log("watcher started").await;
    assert!(
        plugin.log().contains(&format!(
            "through the Proxy at {web} by TLS routing (cluster tm.test)"
        )),
        "{}",
        plugin.log()
    );
    let id = teleport
        .create_request(REQUESTER, "through the proxy")
        .unwrap();
    let post = chat.posted(&id).await;
    let post_id = post["id"].as_str().unwrap();
    let answer = chat.press(post_id, message::ACTION_APPROVE, "alice").await;
    assert!(answer.contains("You approved"), "{answer}");
    wait_state(&teleport, &id, "APPROVED").await;
    chat.shows(post_id, "APPROVED by @alice").await;
    drop(plugin);
}

/// A v13 Proxy behind a balancer that strips ALPN: it refuses the WebSocket upgrade
/// (`404 unsupported upgrade types`), and the plugin falls back to the legacy one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_balancer_that_strips_alpn_a_v13_proxy_is_reached_by_the_legacy_upgrade() {
    use teleport_mattermost_testkit::l7_relay::L7Relay;
    let env = tier5!();
    let chat = Chat::new(env.clone()).await;
    let (teleport, files) = proxied(Mode::ProxyMultiplex).await;
    let web: std::net::SocketAddr = teleport.web_addr.clone().unwrap().parse().unwrap();
    let relay = L7Relay::start(web, teleport.web_cert_pem.as_deref().unwrap())
        .await
        .unwrap();
    let plugin = Standalone::start(&proxy_config(
        &env,
        &teleport,
        &files,
        &relay.addr.to_string(),
        &relay.cert_pem,
    ));
    plugin.wait_log("watcher started").await;
    let log = plugin.log();
    assert!(
        log.contains("inside a legacy (Upgrade: alpn) connection upgrade"),
        "the legacy upgrade is in use:\n{log}"
    );
    assert!(
        log.contains("the Proxy refused the WebSocket connection upgrade"),
        "after v13 refused WebSocket:\n{log}"
    );
    let id = teleport
        .create_request(REQUESTER, "through the balancer")
        .unwrap();
    let post = chat.posted(&id).await;
    let answer = chat
        .press(post["id"].as_str().unwrap(), message::ACTION_DENY, "carol")
        .await;
    assert!(answer.contains("You denied"), "{answer}");
    wait_state(&teleport, &id, "DENIED").await;
    drop(plugin);
}

/// A v19 Proxy (played by the relay: WebSocket only, the legacy upgrade refused as v19 does,
/// Pings every second here instead of 30 s) in front of the real v13 Proxy, whose TLS-routing
/// port gets the upgraded bytes: the WebSocket path end to end with a real Auth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_v19_proxy_front_it_goes_through_the_websocket_upgrade() {
    use std::sync::atomic::Ordering;
    use teleport_mattermost_testkit::l7_relay::{
        FindAnswer, FrontConfig, ProxyFront, ProxyVersion,
    };
    let env = tier5!();
    let chat = Chat::new(env.clone()).await;
    let (teleport, files) = proxied(Mode::ProxyMultiplex).await;
    let web: std::net::SocketAddr = teleport.web_addr.clone().unwrap().parse().unwrap();
    let mut config = FrontConfig::new(
        ProxyVersion::V19,
        web,
        FindAnswer::Forward {
            address: web,
            cert_pem: teleport.web_cert_pem.clone().unwrap(),
        },
    );
    config.ping_interval = Duration::from_secs(1);
    config.cluster = Some(real_teleport::CLUSTER.to_string());
    let front = ProxyFront::start(config).await.unwrap();
    let plugin = Standalone::start(&proxy_config(
        &env,
        &teleport,
        &files,
        &front.address(),
        &front.cert_pem,
    ));
    plugin.wait_log("watcher started").await;
    let log = plugin.log();
    assert!(
        log.contains(&format!(
            "through the Proxy at {} by TLS routing inside a WebSocket connection upgrade",
            front.address()
        )),
        "the WebSocket upgrade is in use:\n{log}"
    );
    assert_eq!(front.stats.legacy_upgrades.load(Ordering::Relaxed), 0);
    assert_eq!(front.stats.refused.load(Ordering::Relaxed), 0);
    assert!(
        front.stats.finds.load(Ordering::Relaxed) >= 1,
        "find forwarded"
    );
    let id = teleport
        .create_request(REQUESTER, "through a v19 Proxy")
        .unwrap();
    let post = chat.posted(&id).await;
    let answer = chat
        .press(post["id"].as_str().unwrap(), message::ACTION_DENY, "carol")
        .await;
    assert!(answer.contains("You denied"), "{answer}");
    wait_state(&teleport, &id, "DENIED").await;
    // The Proxy's Pings were answered all along.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (pings, pongs) = (
        front.stats.pings.load(Ordering::Relaxed),
        front.stats.pongs.load(Ordering::Relaxed),
    );
    assert!(
        pings >= 3 && pongs + 1 >= pings,
        "{pongs} pongs for {pings} pings"
    );
    drop(plugin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_in_separate_ports_mode_gets_a_clear_error() {
    let env = tier5!();
    let (teleport, files) = proxied(Mode::ProxySeparate).await;
    let web = teleport.web_addr.clone().unwrap();
    let plugin = Standalone::start(&proxy_config(
        &env,
        &teleport,
        &files,
        &web,
        teleport.web_cert_pem.as_deref().unwrap(),
    ));
    plugin
        .wait_log("without TLS routing (separate ports mode)")
        .await;
    assert!(!plugin.log().contains("watcher started"));
    drop(plugin);
}

/// What tbot's directory destination holds, as its `kubernetes_secret` destination would put
/// it in a Secret (v13's tbot has no such destination, so the test copies it).
fn tbot_secret(out: &Path) -> Option<[(String, String); 3]> {
    let read = |f: &str| std::fs::read_to_string(out.join(f)).ok();
    let (cert, key, cas) = (
        read("tlscert")?,
        read("key")?,
        read("teleport-host-ca.crt")?,
    );
    // tbot rewrites the files in place, the certificate before the key: copy only a matching
    // pair, as a real Secret write (one update of the whole data map) would be.
    teleport_mattermost::teleport::identity::Identity::from_pems(
        teleport_mattermost::teleport::identity::PemSource::new("tlscert", cert.as_bytes()),
        teleport_mattermost::teleport::identity::PemSource::new("key", key.as_bytes()),
        teleport_mattermost::teleport::identity::PemSource::new("cas", cas.as_bytes()),
    )
    .ok()?;
    Some([
        ("tlscert".into(), cert),
        ("key".into(), key),
        ("teleport-host-ca.crt".into(), cas),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_operator_posts_across_tbot_renewals_of_its_identity_secret() {
    use teleport_mattermost_testkit::control_plane::ControlPlane;
    let env = tier5!();
    let chat = Chat::new(env.clone()).await;
    let teleport = RealTeleport::start(Mode::AuthOnly).await.unwrap();
    teleport.bootstrap(&[REQUESTER]).unwrap();

    // Machine ID: a bot that impersonates the plugin's role, joined with its token.
    let bot: Value = serde_json::from_str(
        &teleport
            .tctl(&[
                "bots",
                "add",
                "mattermost",
                &format!("--roles={PLUGIN_USER}"),
                "--format=json",
            ])
            .unwrap(),
    )
    .unwrap();
    let token = bot["token_id"].as_str().unwrap();
    let out = teleport.dir().join("tbot-out");
    let tbot_config = teleport.dir().join("tbot.yaml");
    std::fs::write(
        &tbot_config,
        format!(
            "auth_server: {}\ncertificate_ttl: 2m\nrenewal_interval: 30s\nonboarding:\n  join_method: token\n  token: {token}\nstorage:\n  directory: {}\ndestinations:\n  - directory:\n      path: {}\n",
            teleport.auth_addr,
            teleport.dir().join("tbot-storage").display(),
            out.display()
        ),
    )
    .unwrap();
    let mut tbot = Command::new(real_teleport::bin_dir().join("tbot"))
        .args(["start", "-c"])
        .arg(&tbot_config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(teleport.dir().join("tbot.log")).unwrap())
        .spawn()
        .unwrap();

    // The cluster, the CRD, the Secrets.
    let cp = ControlPlane::start().await.unwrap();
    cp.kubectl_run(
        &["apply", "-f", "-"],
        Some(&teleport_mattermost::operator::crd::crd_yaml()),
    )
    .unwrap();
    cp.kubectl_run(
        &[
            "wait",
            "--for=condition=Established",
            "crd/mattermostaccessplugins.accessplugins.dev",
        ],
        None,
    )
    .unwrap();
    cp.kubectl_run(&["create", "namespace", "teleport"], None)
        .unwrap();
    let put_secret = |name: &str, data: &[(String, String)]| {
        let mut args = vec![
            "-n".to_string(),
            "teleport".into(),
            "create".into(),
            "secret".into(),
            "generic".into(),
            name.into(),
            "--dry-run=client".into(),
            "-o".into(),
            "yaml".into(),
        ];
        let dir = tempfile::tempdir().unwrap();
        for (k, v) in data {
            let file = dir.path().join(k);
            std::fs::write(&file, v).unwrap();
            args.push(format!("--from-file={k}={}", file.display()));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let yaml = cp.kubectl_run(&args, None).unwrap();
        cp.kubectl_run(&["apply", "-f", "-"], Some(&yaml)).unwrap();
    };
    put_secret("mm-bot-token", &[("token".into(), env.bot_token.clone())]);
    put_secret(
        "mm-callback-signing",
        &[(
            "signingSecret".into(),
            hex::encode(rand::random::<[u8; 32]>()),
        )],
    );
    let deadline = Instant::now() + WAIT;
    let mut last = loop {
        if let Some(data) = tbot_secret(&out) {
            break data;
        }
        assert!(Instant::now() < deadline, "tbot wrote no identity");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    put_secret("tbot-identity", &last);

    // The operator, and one resource reading tbot's key names.
    let callback = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let stop = tokio_util::sync::CancellationToken::new();
    let operator = tokio::spawn(teleport_mattermost::operator::run(
        teleport_mattermost::operator::OperatorOptions {
            namespaces: vec!["teleport".into()],
            callback_addr: callback,
            probe_addr: std::net::SocketAddr::from(([127, 0, 0, 1], free_port())),
            leader_election: false,
            lease_name: "teleport-mattermost".into(),
            lease_namespace: "teleport".into(),
            identity: "tier5".into(),
            init_timeout: Duration::from_secs(15),
            drain: Duration::ZERO,
        },
        cp.client().await.unwrap(),
        stop.clone(),
    ));
    cp.kubectl_run(
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: accessplugins.dev/v1alpha1\nkind: MattermostAccessPlugin\nmetadata:\n  name: platform\n  namespace: teleport\nspec:\n  teleport:\n    address: {}\n    identitySecretRef:\n      name: tbot-identity\n      certKey: tlscert\n      keyKey: key\n      casKey: teleport-host-ca.crt\n  mattermost:\n    url: {}\n    team: {TEAM}\n    channel: {CHANNEL}\n    tokenSecretRef:\n      name: mm-bot-token\n  callback:\n    signingSecretRef:\n      name: mm-callback-signing\n    publicURL: http://{callback}\n    allowInsecureHTTP: true\n",
            teleport.auth_addr, env.url
        )),
    )
    .unwrap();

    // Three renewals (every 30 s), copied into the Secret as they come; a request each time.
    let mut renewals = 0;
    let mut ids = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    while renewals < 3 {
        assert!(Instant::now() < deadline, "tbot renewed {renewals} times");
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Some(now) = tbot_secret(&out)
            && now[0].1 != last[0].1
        {
            put_secret("tbot-identity", &now);
            last = now;
            renewals += 1;
            ids.push(
                teleport
                    .create_request(REQUESTER, &format!("renewal {renewals}"))
                    .unwrap(),
            );
        }
    }
    for id in &ids {
        chat.posted(id).await;
    }
    // The first certificate has expired by now: posting goes on with the renewed ones, and a
    // press through Mattermost reaches the operator's callback.
    let last_id = teleport
        .create_request(REQUESTER, "after the renewals")
        .unwrap();
    let post = chat.posted(&last_id).await;
    let answer = chat
        .press(
            post["id"].as_str().unwrap(),
            message::ACTION_APPROVE,
            "alice",
        )
        .await;
    assert!(answer.contains("You approved"), "{answer}");
    wait_state(&teleport, &last_id, "APPROVED").await;
    for id in ids.iter().chain([&last_id]) {
        assert_eq!(
            chat.posts_for(id).await.len(),
            1,
            "{id} posted exactly once"
        );
    }

    // tbot stops: the status says the identity is running out before it breaks.
    let _ = tbot.kill();
    let _ = tbot.wait();
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let status = cp
            .kubectl_run(
                &[
                    "-n",
                    "teleport",
                    "get",
                    "mmap",
                    "platform",
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"IdentityValid\")].reason}",
                ],
                None,
            )
            .unwrap_or_default();
        if status == "ExpiresSoon" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "IdentityValid is {status:?}, never ExpiresSoon"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), operator).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_next_to_teleports_go_plugin_posts_each_request_once_and_warns() {
    let env = tier5!();
    let chat = Chat::new(env.clone()).await;
    let (teleport, files) = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let go = Peer(
        Command::new(real_teleport::bin_dir().join("tm-teleport-mattermost-plugin"))
            .args(["start", "-c"])
            .arg(go_plugin_config(dir.path(), &env, &teleport, &files))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("go-plugin.err")).unwrap())
            .spawn()
            .unwrap(),
    );
    let plugin = standalone_with_tls(&env, &teleport, &files);
    plugin.wait_log("watcher started").await;
    tokio::time::sleep(Duration::from_secs(2)).await; // the Go plugin's watch is up too

    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(
            teleport
                .create_request(REQUESTER, &format!("both plugins {i}"))
                .unwrap(),
        );
    }
    let mut go_posted = 0;
    for id in &ids {
        let post = chat.posted(id).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let posts = chat.posts_for(id).await;
        assert_eq!(
            posts.len(),
            1,
            "{id} is posted once, by one of them: {posts:#?}\n--- ours\n{}\n--- the Go plugin\n{}",
            plugin
                .log()
                .lines()
                .filter(|l| l.contains(id.as_str()))
                .collect::<Vec<_>>()
                .join("\n"),
            std::fs::read_to_string(dir.path().join("go-plugin.err"))
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains(id.as_str()))
                .collect::<Vec<_>>()
                .join("\n")
        );
        if post["props"]["teleport_request_id"].is_null() {
            go_posted += 1;
        }
    }
    if go_posted > 0 {
        assert!(
            plugin
                .log()
                .contains("another Mattermost plugin is posting this request"),
            "{go_posted} requests went to the Go plugin; ours says so:\n{}",
            plugin.log()
        );
    }
    eprintln!(
        "of {} requests, the Go plugin posted {go_posted}",
        ids.len()
    );
    drop(go);
    drop(plugin);
}

/// The plugin's identity from `tctl auth sign --format=tls`, for client-level tests.
fn identity_of(files: &[PathBuf; 3]) -> teleport_mattermost::teleport::identity::Identity {
    use teleport_mattermost::teleport::identity::{Identity, PemSource};
    let read = |p: &PathBuf| std::fs::read(p).unwrap();
    let (crt, key, cas) = (read(&files[0]), read(&files[1]), read(&files[2]));
    Identity::from_pems(
        PemSource::new("auth.crt", &crt),
        PemSource::new("auth.key", &key),
        PemSource::new("auth.cas", &cas),
    )
    .unwrap()
}

/// `tctl lock --user` on the plugin's user: v13.3.8 refuses every call with a bare "access
/// denied" (whose hint names locks), Ping on a new connection included, which the plugin names
/// a lock (`IdentityLocked`): Ping needs no permission.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_plugin_identity_is_named_a_lock() {
    use teleport_mattermost::teleport::client::TeleportClient;
    teleport_peers!();
    let (teleport, files) = cluster().await;
    let identity = identity_of(&files);
    let client = TeleportClient::connect(&teleport.auth_addr, &identity)
        .await
        .unwrap();
    client.list_access_requests().await.unwrap();
    teleport
        .tctl(&[
            "lock",
            &format!("--user={PLUGIN_USER}"),
            "--message=offboarded",
            "--ttl=1h",
        ])
        .unwrap();
    // Auth's lock watcher takes a moment to see the new lock.
    let deadline = Instant::now() + WAIT;
    let per_call = loop {
        match client.list_access_requests().await {
            Err(e) => break e,
            Ok(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Ok(_) => panic!("the lock never applied to the open connection"),
        }
    };
    skip(&format!("v13, a call on the open connection: {per_call}"));
    assert!(per_call.to_string().contains("access denied"), "{per_call}");
    assert!(
        per_call.to_string().contains("tctl get locks"),
        "{per_call}"
    );
    let fresh = TeleportClient::connect(&teleport.auth_addr, &identity)
        .await
        .unwrap_err();
    skip(&format!("v13, a new connection: {fresh:?}"));
    assert!(fresh.is_identity_locked(), "{fresh}");
    assert!(fresh.to_string().contains("tctl get locks"), "{fresh}");
}

/// `disconnect_expired_cert` on a real v13.3.8 Auth keeps a gRPC watch open past the client
/// certificate's expiry (1 minute, the shortest `tctl auth sign` issues): Auth started closing
/// such connections with PR #41826 (May 2024; v16, and v13 to v15 patch releases), which the
/// Teleport double plays. The plugin re-dials on every renewal anyway (tier 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_disconnect_expired_cert_a_real_v13_3_8_auth_keeps_the_watch_past_the_expiry() {
    use teleport_mattermost::teleport::client::{TeleportClient, WatchEvent};
    teleport_peers!();
    let teleport = RealTeleport::start(Mode::AuthOnly).await.unwrap();
    teleport.bootstrap(&[REQUESTER]).unwrap();
    // The cluster's auth preference comes from teleport.yaml; tctl overrides it only when told
    // to (--force --confirm).
    let preference = teleport.dir().join("cap.yaml");
    std::fs::write(
        &preference,
        "kind: cluster_auth_preference\nversion: v2\nmetadata:\n  name: cluster-auth-preference\nspec:\n  type: local\n  second_factor: \"off\"\n  disconnect_expired_cert: true\n",
    )
    .unwrap();
    teleport
        .tctl(&[
            "create",
            "--force",
            "--confirm",
            "-f",
            &preference.display().to_string(),
        ])
        .unwrap();
    let files = teleport.sign_tls(PLUGIN_USER, "short", "1m").unwrap();
    let identity = identity_of(&files);
    let expires = identity.not_after;
    let client = TeleportClient::connect(&teleport.auth_addr, &identity)
        .await
        .unwrap();
    let mut watch = client
        .watch_access_requests(Duration::from_secs(15))
        .await
        .unwrap();
    let past = (expires - chrono::Utc::now()).to_std().unwrap_or_default() + Duration::from_secs(5);
    tokio::time::sleep(past).await;
    let id = teleport
        .create_request(REQUESTER, "after the expiry")
        .unwrap();
    let event = tokio::time::timeout(WAIT, watch.next())
        .await
        .expect("an event within a minute");
    match event {
        Ok(Some(WatchEvent::Put(put))) => assert_eq!(put.id, id),
        other => panic!("v13.3.8 was expected to keep the watch: {other:?}"),
    }
}

/// Access monitoring rules against a real v13.3.8, which has none (they came with v15):
/// - the role the README asks for (`access_monitoring_rule` and `user` rules) is accepted;
///   `review_requests.preview_as_roles` is refused by this Community Edition build, as the
///   README says;
/// - a watch that asks for `access_monitoring_rule` with partial success is opened, and its
///   INIT does not confirm the kind; listing rules is answered as not supported;
/// - the standalone plugin says the rules are off, once, and still posts every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_real_v13_access_monitoring_rules_are_off_and_requests_still_flow() {
    use teleport_mattermost::teleport::client::{RuleListing, TeleportClient, WatchEvent};
    let env = tier5!();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let chat = Chat::new(env.clone()).await;
    let (teleport, files) = cluster().await;

    // The README's role, without and then with review_requests.
    let rules = "      - resources: [access_request]\n        verbs: [list, read, update]\n      - resources: [access_monitoring_rule]\n        verbs: [list, read]\n      - resources: [user]\n        verbs: [read]\n";
    teleport
        .create(&format!(
            "kind: role\nversion: v6\nmetadata:\n  name: {PLUGIN_USER}\nspec:\n  allow:\n    rules:\n{rules}"
        ))
        .expect("v13 takes the README's rules for access_monitoring_rule and user");
    let preview = teleport.create(&format!(
        "kind: role\nversion: v6\nmetadata:\n  name: {PLUGIN_USER}\nspec:\n  allow:\n    rules:\n{rules}    review_requests:\n      preview_as_roles: [access]\n"
    ));
    skip(&format!(
        "v13.3.8, the README's role with review_requests.preview_as_roles: {}",
        match &preview {
            Ok(()) => "accepted".to_owned(),
            Err(e) => format!(
                "refused: {}",
                format!("{e:#}")
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect::<Vec<_>>()
                    .join(" / ")
            ),
        }
    ));

    assert!(
        preview
            .as_ref()
            .is_err_and(|e| format!("{e:#}").contains("only available in enterprise")),
        "Community Edition refuses review_requests: {preview:?}"
    );

    let client = TeleportClient::connect(&teleport.auth_addr, &identity_of(&files))
        .await
        .unwrap();
    let mut watch = client.watch(WAIT, true).await.unwrap();
    skip(&format!(
        "v13.3.8, a watch asking for access_monitoring_rule: {:?}",
        watch.kinds()
    ));
    assert!(watch.kinds().rules_requested);
    assert!(
        !watch.kinds().rules_confirmed,
        "v13 has no access monitoring rules to confirm: {:?}",
        watch.kinds()
    );
    let listing = client
        .list_access_monitoring_rules("mattermost")
        .await
        .unwrap();
    skip(&format!(
        "v13.3.8, ListAccessMonitoringRulesWithFilter: {listing:?}"
    ));
    assert!(
        matches!(listing, RuleListing::NotSupported(_)),
        "{listing:?}"
    );

    // The watch still carries access requests.
    let id = teleport.create_request(REQUESTER, "amr on v13").unwrap();
    let seen = tokio::time::timeout(WAIT, async {
        loop {
            match watch.next().await.unwrap() {
                Some(WatchEvent::Put(request)) if request.id == id => break,
                Some(_) => {}
                None => panic!("the watch ended"),
            }
        }
    })
    .await;
    assert!(seen.is_ok(), "the request never came through the watch");

    // The plugin: rules off, said once, and the request posted once.
    let plugin = standalone_with_tls(&env, &teleport, &files);
    plugin.wait_log("watcher started").await;
    plugin.wait_log("access monitoring rules are off").await;
    chat.posted(&id).await;
    let second = teleport
        .create_request(REQUESTER, "amr on v13, after start")
        .unwrap();
    chat.posted(&second).await;
    assert_eq!(chat.posts_for(&id).await.len(), 1);
    assert_eq!(chat.posts_for(&second).await.len(), 1);
    let log = plugin.log();
    assert_eq!(
        log.matches("access monitoring rules are off").count(),
        1,
        "said once per watch:\n{log}"
    );
    drop(plugin);
}

/// The labels of requested resources, read as the plugin reads them for
/// `resource_labels_union` / `_intersection` (`ListResources` page by page, a name predicate),
/// decoded from a real v13.3.8: an agentless node and a Windows desktop created with tctl,
/// read by a user with the preset `access` role (Community Edition has no `preview_as_roles`;
/// the roles of the caller decide what it sees, as they do there for the plugin).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requested_resources_labels_decode_from_a_real_v13_list_resources() {
    use teleport_mattermost::request::RequestedResource;
    use teleport_mattermost::teleport::client::TeleportClient;
    teleport_peers!();
    let teleport = RealTeleport::start(Mode::AuthOnly).await.unwrap();
    teleport.bootstrap(&[REQUESTER]).unwrap();
    teleport
        .create(
            "kind: node\nversion: v2\nsub_kind: openssh\nmetadata:\n  name: 5b6e1b35-0d4c-4c25-9c3b-2f6f1d3b9a10\n  labels:\n    env: prod\n    team: payments\nspec:\n  addr: 127.0.0.1:22\n  hostname: db-1\n",
        )
        .unwrap();
    teleport
        .create(
            "kind: windows_desktop\nversion: v3\nmetadata:\n  name: desk-1\n  labels:\n    env: prod\n    team: obs\nspec:\n  addr: 127.0.0.1:3389\n  host_id: 8b0b6c2e-8a55-4c50-9a63-0d7f3f4d2b11\n",
        )
        .unwrap();
    teleport
        .tctl(&["users", "add", "label-reader", "--roles=access"])
        .unwrap();
    let files = teleport.sign_tls("label-reader", "reader", "1h").unwrap();
    let client = TeleportClient::connect(&teleport.auth_addr, &identity_of(&files))
        .await
        .unwrap();
    let resource = |kind: &str, name: &str| RequestedResource {
        cluster: String::new(),
        kind: kind.into(),
        name: name.into(),
        sub_resource: String::new(),
        constraints: None,
    };
    let requested = [
        resource("node", "5b6e1b35-0d4c-4c25-9c3b-2f6f1d3b9a10"),
        resource("windows_desktop", "desk-1"),
        resource("node", "not-there"),
    ];
    // ListResources reads Auth's cache, which follows the backend a moment after tctl wrote.
    let deadline = Instant::now() + WAIT;
    let mut labels = loop {
        let labels = client.resource_labels(&requested).await.unwrap();
        if labels.len() >= 2 || Instant::now() > deadline {
            break labels;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    skip(&format!("v13.3.8, ListResources labels: {labels:?}"));
    labels.sort();
    let expected: Vec<std::collections::BTreeMap<String, String>> = vec![
        [("env", "prod"), ("team", "obs")],
        [("env", "prod"), ("team", "payments")],
    ]
    .into_iter()
    .map(|l| l.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    .collect();
    // Teleport may add its own labels (teleport.internal/...); ours must be there.
    assert_eq!(labels.len(), 2, "{labels:?}");
    for (got, want) in labels.iter().zip(&expected) {
        for (k, v) in want {
            assert_eq!(got.get(k), Some(v), "{labels:?}");
        }
    }
}
