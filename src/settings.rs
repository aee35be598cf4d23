//! `PluginSettings`: everything one bridge instance needs, built either from the standalone
//! TOML (`config`) or from a `MattermostAccessPlugin` and its Secrets (`operator`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

/// Identifies one plugin instance: `namespace/name` of its custom resource, or
/// [`InstanceId::standalone`] for the TOML-configured process.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId {
    /// Kubernetes namespace (empty for standalone).
    pub namespace: String,
    /// Resource name (`standalone` for standalone).
    pub name: String,
}

impl InstanceId {
    /// An instance backed by a custom resource.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The single instance of `teleport-mattermost start`.
    pub fn standalone() -> Self {
        Self::new("", "standalone")
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// A secret string that never appears in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret value; call only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where the Mattermost bot token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// The token itself.
    Literal(Secret),
    /// A file holding the token; re-read whenever it changes.
    File(PathBuf),
}

/// Client-side rate limit for calls to one Mattermost server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained requests per second; 0 disables the limiter.
    pub per_second: u32,
    /// Requests allowed in a burst.
    pub burst: u32,
}

impl Default for RateLimit {
    /// A ceiling well above Mattermost's own default `RateLimitSettings` (10/s, burst 100):
    /// a server that limits calls says so in its answers and is paced to below this, so
    /// the ceiling only holds back a burst to a server that does not limit at all.
    fn default() -> Self {
        Self {
            per_second: 100,
            burst: 100,
        }
    }
}

/// How the Mattermost client retries 429, 5xx and transport errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per call, including the first.
    pub max_attempts: u32,
    /// First backoff delay (jittered, doubled each time).
    pub base_delay: Duration,
    /// Upper bound of one delay, including server-requested waits.
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// The jittered exponential delays between attempts: `max_attempts - 1` of them, starting
    /// near `base_delay`, doubling, never above `max_delay`. The one backoff of the project:
    /// Mattermost retries, plugin-data compare-and-swap, reconnects and job retries.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + Send + use<> {
        use backon::{BackoffBuilder, ExponentialBuilder};
        let max = self.max_delay;
        ExponentialBuilder::default()
            .with_min_delay(self.base_delay)
            .with_max_delay(self.max_delay)
            .with_factor(2.0)
            .with_jitter()
            .with_max_times(self.max_attempts.saturating_sub(1) as usize)
            .build()
            // backon's jitter adds up to one more delay on top; keep the documented bound.
            .map(move |d| d.min(max))
    }

    /// Retries without end, `base_delay` doubling to `max_delay`.
    pub fn forever(base_delay: Duration, max_delay: Duration) -> Self {
        Self {
            max_attempts: u32::MAX,
            base_delay,
            max_delay,
        }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
        }
    }
}

/// Mattermost connection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MattermostSettings {
    /// Base URL, e.g. `https://mattermost.example.com`.
    pub url: Url,
    /// Team URL name (not display name).
    pub team: String,
    /// Channel URL name within the team.
    pub channel: String,
    /// The bot token.
    pub token: TokenSource,
    /// Client-side rate limit.
    pub rate_limit: RateLimit,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Extra CAs to trust for `url`, for a server behind an internal CA.
    pub ca_bundle: Option<CaBundle>,
}

/// Extra CA certificates (PEM) to trust for one server, on top of the system's roots.
#[derive(Clone, PartialEq, Eq)]
pub struct CaBundle {
    pem: std::sync::Arc<[u8]>,
    count: usize,
}

impl fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaBundle({} certificates)", self.count)
    }
}

impl CaBundle {
    /// Checks that `pem` holds at least one certificate; `label` names where it came from.
    pub fn from_pem(label: &str, pem: &[u8]) -> Result<Self, String> {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject as _;
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{label} is not a PEM certificate bundle: {e}"))?;
        if certs.is_empty() {
            return Err(format!(
                "{label} holds no PEM CERTIFICATE block; it should hold the CA certificate(s) that signed the server's certificate"
            ));
        }
        Ok(Self {
            count: certs.len(),
            pem: pem.into(),
        })
    }

    /// The PEM text.
    pub fn pem(&self) -> &[u8] {
        &self.pem
    }

    /// How many certificates it holds.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Never true: a bundle holds at least one certificate.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// Settings for the Approve/Deny buttons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackSettings {
    /// The full URL Mattermost POSTs button presses to (`integration.url`).
    pub action_url: Url,
    /// HMAC key for button contexts.
    pub signing_secret: Secret,
    /// How long a press may take before it is answered "still being processed" (its outcome
    /// then follows in the thread).
    pub answer_within: Duration,
    /// The full URL Mattermost POSTs reason-dialog submissions to.
    pub dialog_url: Url,
    /// Whether Deny asks for a reason.
    pub deny_reason: ReasonPrompt,
    /// Whether Approve asks for a reason.
    pub approve_reason: ReasonPrompt,
}

/// Whether pressing a button asks the reviewer for a reason first.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ReasonPrompt {
    /// The button acts at once (the default). Not "off": YAML 1.1 readers, kubectl's among
    /// them, take an unquoted `off` for `false`.
    #[default]
    Never,
    /// A dialog asks for a reason; it may be left empty.
    Optional,
    /// A dialog asks for a reason, and the button does nothing without one.
    Required,
}

impl ReasonPrompt {
    /// The name used in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonPrompt::Never => "never",
            ReasonPrompt::Optional => "optional",
            ReasonPrompt::Required => "required",
        }
    }

    /// Parses a config value.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "never" => Some(ReasonPrompt::Never),
            "optional" => Some(ReasonPrompt::Optional),
            "required" => Some(ReasonPrompt::Required),
            _ => None,
        }
    }
}

/// Teleport connection settings (the identity itself is delivered separately, since it rotates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeleportSettings {
    /// Auth server address, `host:port`.
    pub address: String,
    /// How long to wait for the watch stream's INIT event before reconnecting.
    pub init_timeout: Duration,
    /// How often the connection is pinged when nothing arrives (see
    /// [`crate::teleport::client::KEEPALIVE_INTERVAL`]).
    pub keepalive: Duration,
    /// Direct to Auth, through a Proxy, or worked out from the address.
    pub connection: crate::teleport::route::ConnectionMode,
    /// Extra CAs for a Proxy's web certificate (a self-hosted Proxy with a private CA).
    pub proxy_ca: Option<CaBundle>,
    /// The plugin name access monitoring rules address (`notification.name`); `mattermost`
    /// by default, as Teleport's own plugin.
    pub plugin_name: String,
    /// The timezone of `day()` and `clock_between()` in rule conditions; UTC by default.
    pub timezone: chrono_tz::Tz,
}

impl TeleportSettings {
    /// How the client connects.
    pub fn connect_options(&self) -> crate::teleport::client::ConnectOptions {
        crate::teleport::client::ConnectOptions {
            mode: self.connection,
            web_ca: self.proxy_ca.clone(),
            keepalive: self.keepalive,
        }
    }
}

/// Everything one bridge instance needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSettings {
    /// Which instance this is.
    pub instance: InstanceId,
    /// Teleport connection.
    pub teleport: TeleportSettings,
    /// Mattermost connection and target channel.
    pub mattermost: MattermostSettings,
    /// Buttons; `None` posts notifications without buttons.
    pub callback: Option<CallbackSettings>,
    /// Extra recipients for every request: emails (DM) or `team/channel`.
    pub recipients: Vec<String>,
    /// Recipients per requested role, with `"*"` as the fallback.
    pub role_to_recipients: BTreeMap<String, Vec<String>>,
    /// Mattermost usernames or emails allowed to press the buttons.
    pub approvers: Vec<String>,
    /// Channels (`team/channel`) whose members may press the buttons. With neither these nor
    /// `approvers`, the members of the instance's own channel may.
    pub approver_channels: Vec<String>,
    /// How many of a request's suggested reviewers get a direct message, at most.
    pub max_suggested_reviewers: usize,
    /// How many requests are processed at once.
    pub concurrency: usize,
    /// What the requester is told.
    pub requester: RequesterSettings,
    /// Reminders for requests left unreviewed; `None` sends none.
    pub reminders: Option<ReminderSettings>,
    /// How a pending request's posts in channels stand out.
    pub priority: PrioritySettings,
}

/// Mattermost's message priority, shown as a label on a post and in the reader's
/// notifications (Mattermost 7.7 and later; older servers ignore it).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// An ordinary post (the default).
    #[default]
    None,
    /// Labelled "Important".
    Important,
    /// Labelled "Urgent".
    Urgent,
}

impl Priority {
    /// The name used in configs, and Mattermost's value ("" for none).
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::None => "none",
            Priority::Important => "important",
            Priority::Urgent => "urgent",
        }
    }

    /// Parses a config value.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "none" => Some(Priority::None),
            "important" => Some(Priority::Important),
            "urgent" => Some(Priority::Urgent),
            _ => None,
        }
    }
}

/// How the post of a pending request stands out in each channel it goes to (not in direct
/// messages, which notify their reader anyway).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrioritySettings {
    /// The message priority.
    pub priority: Priority,
    /// Ask the channel's readers to acknowledge the post (a licensed Mattermost only; an
    /// unlicensed one refuses it, and the post goes out without it).
    pub requested_ack: bool,
}

impl PrioritySettings {
    /// True when posts carry anything beyond an ordinary post.
    pub fn any(&self) -> bool {
        self.priority != Priority::None || self.requested_ack
    }
}

/// How the requester's Mattermost account is found from their Teleport user name.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum RequesterLookup {
    /// The requester is not messaged (the default).
    #[default]
    None,
    /// The Teleport user name is the requester's Mattermost email.
    Email,
    /// The Teleport user name is the requester's Mattermost username (for an email-style
    /// name, the part before the @).
    Username,
}

impl RequesterLookup {
    /// The name used in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            RequesterLookup::None => "none",
            RequesterLookup::Email => "email",
            RequesterLookup::Username => "username",
        }
    }

    /// Parses a config value.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "none" => Some(RequesterLookup::None),
            "email" => Some(RequesterLookup::Email),
            "username" => Some(RequesterLookup::Username),
            _ => None,
        }
    }
}

/// What the requester is told by direct message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequesterSettings {
    /// How their account is found; `None` tells them nothing.
    pub lookup: RequesterLookup,
    /// Also tell them when the request is posted for review, not only how it ended.
    pub notify_on_post: bool,
}

/// Reminders in the threads of requests still pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReminderSettings {
    /// The first reminder comes this long after the request was created.
    pub after: Duration,
    /// Later reminders come this long after the previous one.
    pub every: Duration,
    /// At most this many reminders per request.
    pub max: u32,
}

/// The shortest reminder delay or interval accepted: reminders are for humans.
pub const MIN_REMINDER_INTERVAL: Duration = Duration::from_secs(60);
/// The most reminders one request may get.
pub const MAX_REMINDERS: u32 = 20;
/// Reminders per request when not set.
pub const DEFAULT_REMINDERS: u32 = 3;

impl ReminderSettings {
    /// Why these settings cannot work, if they cannot: `(field, message)`.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        let min = humantime::format_duration(MIN_REMINDER_INTERVAL);
        if self.after < MIN_REMINDER_INTERVAL {
            return Some(("after", format!("must be at least {min}")));
        }
        if self.every < MIN_REMINDER_INTERVAL {
            return Some(("every", format!("must be at least {min}")));
        }
        if self.max == 0 || self.max > MAX_REMINDERS {
            return Some(("max", format!("must be between 1 and {MAX_REMINDERS}")));
        }
        None
    }
}

/// Parses a duration such as "30m", "1h30m" or "2h 15m".
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("{text:?} is not a duration ({e}); use e.g. \"30m\", \"1h30m\" or \"2h\"")
    })
}

/// Suggested reviewers messaged per request when not set: enough for a team's on-call and
/// leads, few enough that a requester cannot flood Mattermost by listing hundreds.
pub const DEFAULT_MAX_SUGGESTED_REVIEWERS: usize = 10;
/// The most suggested reviewers an admin may have messaged per request.
pub const MAX_SUGGESTED_REVIEWERS: usize = 50;

/// Default number of requests processed concurrently by one instance.
pub const DEFAULT_CONCURRENCY: usize = 32;
