//! A whole plugin instance wired to both doubles on loopback: the Teleport double, the
//! Mattermost double, the real engine and the real callback server. Tests, benches and the
//! sandbox all start one of these.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use teleport_mattermost::bridge::Bridge;
use teleport_mattermost::callback::{Registry, router};
use teleport_mattermost::http_server;
use teleport_mattermost::instance::{Clock, Credentials, Instance, InstanceStatus};
use teleport_mattermost::plugin_data::PluginData;
use teleport_mattermost::settings::{
    CallbackSettings, InstanceId, MattermostSettings, PluginSettings, RateLimit, ReasonPrompt,
    RetryPolicy, Secret, TeleportSettings, TokenSource,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::mattermost::MattermostDouble;
use crate::pki::{ClientCert, TestPki};
use crate::teleport::TeleportDouble;

/// Team and channel every stack posts to.
pub const TEAM: &str = "engineering";
/// Channel every stack posts to.
pub const CHANNEL: &str = "access-requests";

/// How to build a stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Mattermost usernames or emails allowed to press buttons.
    pub approvers: Vec<String>,
    /// Channels (`team/channel`) whose members may press buttons. With neither these nor
    /// approvers, the members of the stack's channel may.
    pub approver_channels: Vec<String>,
    /// Suggested reviewers messaged per request.
    pub max_suggested_reviewers: usize,
    /// The instance's clock for its schedules (reminders); the system's by default.
    pub clock: Clock,
    /// Extra recipients for every request.
    pub recipients: Vec<String>,
    /// Recipients per role.
    pub role_to_recipients: BTreeMap<String, Vec<String>>,
    /// Concurrent requests.
    pub concurrency: usize,
    /// Client-side Mattermost rate limit.
    pub rate_limit: RateLimit,
    /// Whether posts carry buttons.
    pub buttons: bool,
    /// Watch INIT bound.
    pub init_timeout: Duration,
    /// Mattermost retries; short delays by default so tests run quickly.
    pub retry: RetryPolicy,
    /// How long a press may take before it is answered "still being processed".
    pub answer_within: Duration,
    /// Whether Deny asks for a reason.
    pub deny_reason: ReasonPrompt,
    /// Whether Approve asks for a reason.
    pub approve_reason: ReasonPrompt,
    /// What the requester is told.
    pub requester: teleport_mattermost::settings::RequesterSettings,
    /// Reminders (any interval: not validated here, so tests can use seconds).
    pub reminders: Option<teleport_mattermost::settings::ReminderSettings>,
    /// The callback server's connection limits.
    pub server_limits: http_server::Limits,
    /// How often the plugin pings Teleport on an idle connection.
    pub keepalive: Duration,
    /// The Teleport double's keepalive enforcement (Teleport's by default).
    pub teleport_ping_policy: crate::grpc_link::PingPolicy,
    /// Extra CAs the plugin trusts for Mattermost.
    pub mattermost_ca: Option<teleport_mattermost::settings::CaBundle>,
    /// How pending requests' channel posts stand out.
    pub priority: teleport_mattermost::settings::PrioritySettings,
    /// The plugin name access monitoring rules address.
    pub plugin_name: String,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            approvers: Vec::new(),
            approver_channels: Vec::new(),
            max_suggested_reviewers: teleport_mattermost::settings::DEFAULT_MAX_SUGGESTED_REVIEWERS,
            clock: Clock::System,
            recipients: Vec::new(),
            role_to_recipients: BTreeMap::new(),
            concurrency: 32,
            rate_limit: RateLimit {
                per_second: 0,
                burst: 1,
            },
            buttons: true,
            init_timeout: Duration::from_secs(2),
            retry: RetryPolicy {
                max_attempts: 6,
                base_delay: Duration::from_millis(20),
                max_delay: Duration::from_secs(2),
            },
            answer_within: teleport_mattermost::callback::DEFAULT_ANSWER_WITHIN,
            deny_reason: ReasonPrompt::Never,
            approve_reason: ReasonPrompt::Never,
            requester: Default::default(),
            reminders: None,
            server_limits: http_server::Limits::default(),
            keepalive: teleport_mattermost::teleport::client::KEEPALIVE_INTERVAL,
            teleport_ping_policy: crate::grpc_link::PingPolicy::default(),
            mattermost_ca: None,
            priority: Default::default(),
            plugin_name: teleport_mattermost::access_monitoring::DEFAULT_PLUGIN_NAME.to_owned(),
        }
    }
}

/// Where the plugin posts: the Mattermost double or a real server.
#[derive(Debug, Clone)]
pub struct MattermostTarget {
    /// Base URL of the server.
    pub url: url::Url,
    /// The bot token the plugin authenticates with.
    pub token: String,
}

/// The plugin under test, as one process of ours would run it: its instance and engine,
/// the callback server, and the Teleport double it watches. It posts to whatever
/// Mattermost it is given.
pub struct Plugin {
    /// The certificate authority of the Teleport double.
    pub pki: TestPki,
    /// The Teleport double.
    pub teleport: TeleportDouble,
    /// The current instance.
    pub instance: Arc<Instance>,
    /// The registry the callback server answers from.
    pub registry: Arc<Registry>,
    /// The plugin's client certificate in use.
    pub client_cert: ClientCert,
    settings: PluginSettings,
    clock: Clock,
    bridge: Option<(CancellationToken, JoinHandle<()>)>,
    callback: JoinHandle<()>,
}

impl Plugin {
    /// Starts the Teleport double, the callback server and the engine, posting to `mattermost`.
    pub async fn start(mattermost: MattermostTarget, options: &StackOptions) -> Plugin {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let pki = TestPki::new();
        let teleport = TeleportDouble::start(&pki).await;
        teleport.set_ping_policy(options.teleport_ping_policy);

        let registry = Arc::new(Registry::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind callback server");
        let addr = listener.local_addr().expect("callback addr");
        let app = router(registry.clone());
        let callback = tokio::spawn(http_server::serve(
            listener,
            app,
            options.server_limits,
            CancellationToken::new(),
        ));

        let instance_id = InstanceId::new("test", "team-a");
        let settings = PluginSettings {
            teleport: TeleportSettings {
                address: teleport.address(),
                init_timeout: options.init_timeout,
                keepalive: options.keepalive,
                connection: Default::default(),
                proxy_ca: None,
                plugin_name: options.plugin_name.clone(),
                timezone: chrono_tz::Tz::UTC,
            },
            mattermost: MattermostSettings {
                url: mattermost.url,
                team: TEAM.into(),
                channel: CHANNEL.into(),
                token: TokenSource::Literal(Secret::new(mattermost.token)),
                rate_limit: options.rate_limit,
                retry: options.retry,
                ca_bundle: options.mattermost_ca.clone(),
            },
            callback: options.buttons.then(|| CallbackSettings {
                action_url: format!(
                    "http://{addr}/v1/actions/{}/{}",
                    instance_id.namespace, instance_id.name
                )
                .parse()
                .expect("callback url"),
                signing_secret: Secret::new("test-signing-secret-0123456789abcdef"),
                answer_within: options.answer_within,
                dialog_url: format!(
                    "http://{addr}/v1/dialogs/{}/{}",
                    instance_id.namespace, instance_id.name
                )
                .parse()
                .expect("dialog url"),
                deny_reason: options.deny_reason,
                approve_reason: options.approve_reason,
            }),
            instance: instance_id,
            recipients: options.recipients.clone(),
            role_to_recipients: options.role_to_recipients.clone(),
            approvers: options.approvers.clone(),
            approver_channels: options.approver_channels.clone(),
            max_suggested_reviewers: options.max_suggested_reviewers,
            concurrency: options.concurrency,
            requester: options.requester,
            reminders: options.reminders,
            priority: options.priority,
        };
        let client_cert = pki.client("access-plugin-mattermost");
        let instance = Instance::with_clock(
            settings.clone(),
            Credentials {
                identity: client_cert.identity(),
                token: settings.mattermost.token.clone(),
            },
            options.clock.clone(),
        )
        .expect("instance");
        registry.insert(instance.clone());
        let mut plugin = Plugin {
            pki,
            teleport,
            instance,
            registry,
            client_cert,
            settings,
            clock: options.clock.clone(),
            bridge: None,
            callback,
        };
        plugin.start_bridge();
        plugin
    }

    fn start_bridge(&mut self) {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(Bridge::new(self.instance.clone()).run(shutdown.clone()));
        self.bridge = Some((shutdown, task));
    }

    /// Kills the engine mid-flight, as a crash would: no graceful shutdown. The callback
    /// server keeps answering.
    pub async fn crash(&mut self) {
        if let Some((_, task)) = self.bridge.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Starts a fresh instance and engine with the same settings and credentials, as a restarted process would.
    pub async fn restart(&mut self) {
        self.crash().await;
        let credentials = (*self.instance.credentials()).clone();
        self.instance =
            Instance::with_clock(self.settings.clone(), credentials, self.clock.clone())
                .expect("instance");
        self.registry.insert(self.instance.clone());
        self.start_bridge();
    }

    /// Waits up to `timeout` for the instance's status to satisfy `done`; returns the last status seen.
    pub async fn status_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&InstanceStatus) -> bool,
    ) -> InstanceStatus {
        let mut status = self.instance.status();
        let _ = tokio::time::timeout(timeout, async {
            loop {
                if done(&status.borrow_and_update()) {
                    return;
                }
                if status.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        status.borrow().clone()
    }

    /// This plugin's data for a request, as the engine reads it.
    pub fn data(&self, id: &str) -> PluginData {
        self.teleport.decoded_plugin_data(id)
    }

    /// Waits until the engine has established its watch (status `TeleportConnected`).
    pub async fn wait_connected(&self) {
        let status = self
            .status_until(Duration::from_secs(20), |s| s.teleport.ok == Some(true))
            .await;
        assert_eq!(
            status.teleport.ok,
            Some(true),
            "engine did not connect: {status:?}"
        );
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        if let Some((shutdown, task)) = self.bridge.take() {
            shutdown.cancel();
            task.abort();
        }
        self.callback.abort();
        self.teleport.shutdown();
    }
}

/// The plugin posting to the Mattermost double, with `TEAM/CHANNEL` and `USERS` provisioned.
///
/// It dereferences to its [`Plugin`], so `stack.teleport` and `stack.crash()` read as one thing.
pub struct Stack {
    /// The plugin under test.
    pub plugin: Plugin,
    /// The Mattermost double.
    pub mattermost: MattermostDouble,
    /// The channel id of `TEAM/CHANNEL`.
    pub channel_id: String,
}

impl std::ops::Deref for Stack {
    type Target = Plugin;
    fn deref(&self) -> &Plugin {
        &self.plugin
    }
}

impl std::ops::DerefMut for Stack {
    fn deref_mut(&mut self) -> &mut Plugin {
        &mut self.plugin
    }
}

/// How long [`Stack::posted`] waits for a request's post.
const POSTED_WITHIN: Duration = Duration::from_secs(20);

/// Users the Mattermost double knows: `(username, email)`.
pub const USERS: [(&str, &str); 4] = [
    ("alice", "alice@example.com"),
    ("bob", "bob@example.com"),
    ("carol", "carol@example.com"),
    ("mallory", "mallory@example.com"),
];

/// Gives a Mattermost double the team, channel and users every test expects: `TEAM/CHANNEL`
/// and [`USERS`], all of them (and the bot) members of the channel. Returns the channel's id.
pub fn provision(mattermost: &MattermostDouble) -> String {
    mattermost.add_team(TEAM);
    let channel_id = mattermost.add_channel(TEAM, CHANNEL);
    mattermost.add_member(&channel_id, &mattermost.bot_user_id());
    for (user, email) in USERS {
        mattermost.add_user(user, email);
        mattermost.add_member(&channel_id, user);
    }
    channel_id
}

impl Stack {
    /// Starts the Mattermost double and a plugin posting to it.
    pub async fn start(options: StackOptions) -> Stack {
        Stack::launch(options, |_| {}).await
    }

    /// [`Stack::started`], with `setup` giving the Mattermost double more (channels, members)
    /// after the usual provisioning and before the plugin starts.
    pub async fn start_with(options: StackOptions, setup: impl FnOnce(&MattermostDouble)) -> Stack {
        let stack = Stack::launch(options, setup).await;
        stack.wait_connected().await;
        stack
    }

    async fn launch(options: StackOptions, setup: impl FnOnce(&MattermostDouble)) -> Stack {
        let mattermost = MattermostDouble::start().await;
        let channel_id = provision(&mattermost);
        setup(&mattermost);
        let target = MattermostTarget {
            url: mattermost.url(),
            token: mattermost.bot_token(),
        };
        let plugin = Plugin::start(target, &options).await;
        Stack {
            plugin,
            mattermost,
            channel_id,
        }
    }

    /// [`Stack::start`], then waits until the plugin is connected to both doubles.
    pub async fn started(options: StackOptions) -> Stack {
        let stack = Stack::start(options).await;
        stack.wait_connected().await;
        stack
    }

    /// The request's channel post, once it is recorded in plugin data (presses need that).
    pub async fn posted(&self, request_id: &str) -> crate::mattermost::Post {
        assert!(
            Stack::eventually(POSTED_WITHIN, || !self.data(request_id).messages.is_empty()).await,
            "request {request_id} was never posted"
        );
        self.root_posts_for(request_id).remove(0)
    }

    /// Polls `check` until it returns true or `timeout` passes; returns whether it did.
    pub async fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if check() {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Root posts (not thread replies) in the main channel for a request.
    pub fn root_posts_for(&self, request_id: &str) -> Vec<crate::mattermost::Post> {
        self.mattermost
            .posts()
            .into_iter()
            .filter(|p| {
                p.root_id.is_empty()
                    && p.props.get("teleport_request_id").and_then(|v| v.as_str())
                        == Some(request_id)
            })
            .collect()
    }
}
