//! The shared runtime state of one plugin instance: settings, the current credentials, the
//! Teleport and Mattermost clients built from them, and the status the operator reports.
//!
//! The engine and the callback server both work through an `Instance`, so a credential swap
//! is seen by both at once, and a replica that is not the leader can still serve callbacks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Weak};

use arc_swap::{ArcSwap, ArcSwapOption};
use chrono::{DateTime, Utc};
use tokio::sync::{Mutex, watch};

use crate::mattermost::{
    MattermostClient, MattermostError, NewPostMetadata, PostPriority, PriorityRefusal,
};
use crate::message::Links;
use crate::review::{ButtonPolicy, ChannelName};
use crate::settings::{PluginSettings, Priority, TokenSource};
use crate::teleport::client::{PingInfo, TeleportClient, TeleportError};
use crate::teleport::identity::Identity;

/// The rotating secrets of an instance: the Teleport identity and the Mattermost token.
#[derive(Clone)]
pub struct Credentials {
    /// Teleport client certificate, key and CAs.
    pub identity: Identity,
    /// Mattermost bot token.
    pub token: TokenSource,
}

/// One observed aspect of the instance, as the operator turns it into a condition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// `None` until checked.
    pub ok: Option<bool>,
    /// CamelCase reason, e.g. `Connected` or `Unreachable`.
    pub reason: String,
    /// What an admin should know or do.
    pub message: String,
}

impl Health {
    /// A passing check.
    pub fn ok(reason: &str, message: impl Into<String>) -> Self {
        Self {
            ok: Some(true),
            reason: reason.to_string(),
            message: message.into(),
        }
    }
    /// A failing check.
    pub fn failed(reason: &str, message: impl Into<String>) -> Self {
        Self {
            ok: Some(false),
            reason: reason.to_string(),
            message: message.into(),
        }
    }
}

/// What an instance reports about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceStatus {
    /// Teleport reachable, version accepted, watch established.
    pub teleport: Health,
    /// Mattermost token valid and channel resolved.
    pub mattermost: Health,
    /// Identity parsed and within its validity period.
    pub identity: Health,
    /// Certificate expiry.
    pub identity_expires_at: Option<DateTime<Utc>>,
    /// Certificate start of validity.
    pub identity_not_before: Option<DateTime<Utc>>,
    /// Certificate subject.
    pub identity_subject: String,
    /// Teleport cluster name from `Ping`.
    pub cluster_name: String,
    /// Teleport server version from `Ping`.
    pub teleport_version: String,
    /// Pending requests currently known.
    pub pending_requests: usize,
    /// Pending requests not yet posted everywhere they go.
    pub unposted_requests: usize,
    /// Since when the oldest of them has waited for its posts.
    pub oldest_unposted: Option<DateTime<Utc>>,
    /// When the last watch event arrived.
    pub last_event_time: Option<DateTime<Utc>>,
    /// The last button press that failed for a reason an admin must fix, with the detail the
    /// clicker was spared.
    pub press_problem: Option<String>,
    /// The configured post priority the server refused, and what posts carry instead: a
    /// CamelCase reason and the message.
    pub priority_problem: Option<(String, String)>,
    /// Access monitoring rules: in use or why not, and the broken ones.
    pub access_monitoring: crate::rule_routing::RulesReport,
}

/// Counters, read by metrics and benchmarks.
#[derive(Debug, Default)]
pub struct Counters {
    /// Access request events and resync items handled.
    pub requests_seen: AtomicU64,
    /// Root posts created.
    pub posts: AtomicU64,
    /// Posts adopted after a crash instead of being posted again.
    pub adopted: AtomicU64,
    /// Review replies created.
    pub replies: AtomicU64,
    /// Post edits on resolution.
    pub updates: AtomicU64,
    /// Watch (re)connections.
    pub watch_connects: AtomicU64,
    /// Failed jobs that were retried.
    pub job_retries: AtomicU64,
    /// Jobs (one per event or resync item) handled to completion.
    pub jobs_done: AtomicU64,
    /// Requests found claimed by another plugin before this one posted them.
    pub foreign_records: AtomicU64,
    /// Direct messages sent to requesters.
    pub requester_notes: AtomicU64,
    /// Requests whose requester has no Mattermost account the plugin could find (counted once
    /// per request).
    pub requester_unknown: AtomicU64,
    /// Reminder replies posted.
    pub reminders: AtomicU64,
    /// Suggested reviewers ignored because they name no person (a channel, an empty or
    /// malformed entry), counted once per request.
    pub suggestions_dropped: AtomicU64,
}

impl Counters {
    /// Increments a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// How an identity valid from `not_before` to `not_after` stands at `now`. Valid, but with
/// less than a third of its lifetime left, it "expires soon": renewals (tbot renews 1 h
/// certificates every 20 min) have stopped, or a long-lived one is due for re-signing.
pub fn identity_health(
    subject: &str,
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Health {
    if now >= not_after {
        return Health::failed(
            "CertificateExpired",
            format!(
                "certificate {subject} expired at {}; renew it (tctl auth sign, or check that tbot is running)",
                not_after.to_rfc3339()
            ),
        );
    }
    let left = not_after - now;
    let human = |d: chrono::Duration| {
        if d.num_hours() >= 48 {
            format!("{} days", d.num_days())
        } else if d.num_minutes() >= 120 {
            format!("{} h", d.num_hours())
        } else {
            format!("{} min", d.num_minutes().max(0))
        }
    };
    if left < (not_after - not_before) / 3 {
        return Health::ok(
            "ExpiresSoon",
            format!(
                "certificate {subject} expires in {} (at {}), with less than a third of its lifetime left: renew it (tctl auth sign, or check that tbot is still renewing it)",
                human(left),
                not_after.to_rfc3339()
            ),
        );
    }
    Health::ok(
        "Valid",
        format!(
            "certificate {subject} is valid until {}",
            not_after.to_rfc3339()
        ),
    )
}

/// When [`identity_health`] next changes its verdict, after `now`.
pub fn next_identity_change(
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let soon = not_after - (not_after - not_before) / 3;
    [soon, not_after].into_iter().find(|t| *t > now)
}

/// What time it is, for the schedules of one instance (reminders). Tests set it by hand, so
/// they drive time instead of racing the wall clock.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The system's clock.
    #[default]
    System,
    /// A time set by hand.
    Manual(Arc<std::sync::Mutex<DateTime<Utc>>>),
}

impl Clock {
    /// A hand-set clock starting at `start`.
    pub fn manual(start: DateTime<Utc>) -> Self {
        Clock::Manual(Arc::new(std::sync::Mutex::new(start)))
    }

    /// The time now.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Manual(t) => *t.lock().expect("clock lock"),
        }
    }

    /// Sets a hand-set clock to `t`; the system clock cannot be set.
    pub fn set(&self, t: DateTime<Utc>) {
        if let Clock::Manual(now) = self {
            *now.lock().expect("clock lock") = t;
        }
    }

    /// Moves a hand-set clock forward by `by`; the system clock cannot be moved.
    pub fn advance(&self, by: chrono::Duration) {
        if let Clock::Manual(t) = self {
            *t.lock().expect("clock lock") += by;
        }
    }
}

/// The admin's button policy for `settings`.
pub fn button_policy(settings: &PluginSettings) -> ButtonPolicy {
    let main = ChannelName::new(&settings.mattermost.team, &settings.mattermost.channel);
    let channels: Vec<ChannelName> = settings
        .approver_channels
        .iter()
        .filter_map(|c| ChannelName::parse(c))
        .collect();
    ButtonPolicy::new(
        settings.callback.is_some(),
        &settings.approvers,
        &channels,
        &main,
    )
}

/// Shared state of one plugin instance.
pub struct Instance {
    settings: PluginSettings,
    policy: ButtonPolicy,
    clock: Clock,
    credentials: watch::Sender<Arc<Credentials>>,
    teleport: Mutex<Option<(String, TeleportClient, Arc<()>)>>,
    mattermost: ArcSwap<(TokenSource, MattermostClient)>,
    cluster: ArcSwapOption<PingInfo>,
    bot_user_id: ArcSwapOption<String>,
    status: watch::Sender<InstanceStatus>,
    /// Access monitoring rules and the requests they routed.
    routing: crate::rule_routing::RuleRouting,
    /// What of the configured priority the server refused: see [`PriorityFallback`].
    priority_fallback: std::sync::atomic::AtomicU8,
    /// Counters for metrics.
    pub counters: Counters,
}

/// How much of the configured post priority a server takes, learned from its refusals. Kept
/// for the instance's life: a server does not gain a licence, or have priority switched back
/// on, often enough to be asked at every post; a restart asks again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum PriorityFallback {
    /// As configured.
    AsConfigured = 0,
    /// Without `requested_ack` (the server has no licence for it).
    WithoutAck = 1,
    /// Without any priority (the server's admin switched it off).
    Without = 2,
}

impl PriorityFallback {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::AsConfigured,
            1 => Self::WithoutAck,
            _ => Self::Without,
        }
    }
}

/// The `metadata` of a channel post under `settings`, less what `fallback` drops; `None`
/// for an ordinary post.
pub fn priority_metadata(
    settings: &crate::settings::PrioritySettings,
    fallback: PriorityFallback,
) -> Option<NewPostMetadata> {
    let priority = match settings.priority {
        Priority::None => String::new(),
        p => p.as_str().to_string(),
    };
    let requested_ack = settings.requested_ack && fallback == PriorityFallback::AsConfigured;
    (fallback != PriorityFallback::Without && (!priority.is_empty() || requested_ack)).then_some(
        NewPostMetadata {
            priority: PostPriority {
                priority,
                requested_ack,
            },
        },
    )
}

/// The fallback after the server refused a post's priority for `refusal`, and the status
/// (reason, message) an admin sees.
pub fn priority_refused(
    settings: &crate::settings::PrioritySettings,
    refusal: PriorityRefusal,
    detail: &str,
) -> (PriorityFallback, String, String) {
    match refusal {
        PriorityRefusal::Unlicensed => (
            PriorityFallback::WithoutAck,
            "AcknowledgementUnlicensed".into(),
            format!(
                "requestedAck needs a licensed Mattermost (Professional or above) and this server has none ({detail}); posts go out {}without asking for acknowledgements",
                match settings.priority {
                    Priority::None => String::new(),
                    p => format!("as {} ", p.as_str()),
                }
            ),
        ),
        PriorityRefusal::Disabled => (
            PriorityFallback::Without,
            "PriorityDisabled".into(),
            format!(
                "the Mattermost server does not allow message priority (ServiceSettings.PostPriority is off: {detail}); posts go out as ordinary posts"
            ),
        ),
    }
}

impl Instance {
    /// Creates an instance; nothing connects until it is used.
    pub fn new(
        settings: PluginSettings,
        credentials: Credentials,
    ) -> Result<Arc<Self>, MattermostError> {
        Self::with_clock(settings, credentials, Clock::System)
    }

    /// [`Instance::new`] with its schedules on `clock`.
    pub fn with_clock(
        settings: PluginSettings,
        credentials: Credentials,
        clock: Clock,
    ) -> Result<Arc<Self>, MattermostError> {
        let mattermost = build_mattermost(&settings, &credentials.token)?;
        let token = credentials.token.clone();
        let (credentials, _) = watch::channel(Arc::new(credentials));
        let (status, _) = watch::channel(InstanceStatus::default());
        let routing = crate::rule_routing::RuleRouting::new(
            &settings.teleport.plugin_name,
            settings.teleport.timezone,
        );
        let instance = Arc::new(Self {
            routing,
            policy: button_policy(&settings),
            clock,
            settings,
            credentials,
            teleport: Mutex::new(None),
            mattermost: ArcSwap::from_pointee((token, mattermost)),
            cluster: ArcSwapOption::empty(),
            bot_user_id: ArcSwapOption::empty(),
            status,
            priority_fallback: std::sync::atomic::AtomicU8::new(0),
            counters: Counters::default(),
        });
        instance.note_identity(&instance.credentials());
        Ok(instance)
    }

    /// The instance's settings.
    pub fn settings(&self) -> &PluginSettings {
        &self.settings
    }

    /// Access monitoring rules: where they send each request.
    pub fn routing(&self) -> &crate::rule_routing::RuleRouting {
        &self.routing
    }

    /// Who may decide, and so which posts carry buttons.
    pub fn policy(&self) -> &ButtonPolicy {
        &self.policy
    }

    /// The time now, by the instance's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The link style for messages, from the last `Ping` (before any: the `tsh` lines).
    pub fn links(&self) -> Links {
        match self.cluster() {
            Some(info) => Links::from_ping(info.advanced_workflows, &info.proxy_public_addr),
            None => Links::Tsh,
        }
    }

    /// The current credentials.
    pub fn credentials(&self) -> Arc<Credentials> {
        self.credentials.borrow().clone()
    }

    /// Subscribes to credential changes.
    pub fn watch_credentials(&self) -> watch::Receiver<Arc<Credentials>> {
        self.credentials.subscribe()
    }

    /// Swaps in new, already validated credentials. The Mattermost client is rebuilt when the
    /// token changed; the engine reconnects to Teleport when the identity changed.
    pub fn update_credentials(&self, credentials: Credentials) -> Result<(), MattermostError> {
        let current = self.mattermost.load();
        if current.0 != credentials.token {
            let client = build_mattermost(&self.settings, &credentials.token)?;
            self.mattermost
                .store(Arc::new((credentials.token.clone(), client)));
        }
        self.note_identity(&credentials);
        self.credentials.send_replace(Arc::new(credentials));
        Ok(())
    }

    fn note_identity(&self, credentials: &Credentials) {
        let identity = &credentials.identity;
        let health = match identity.check_time(Utc::now()) {
            Ok(()) => identity_health(
                &identity.subject,
                identity.not_before,
                identity.not_after,
                Utc::now(),
            ),
            Err(e) => Health::failed("Invalid", e.to_string()),
        };
        let (not_before, expires) = (identity.not_before, identity.not_after);
        let subject = identity.subject.clone();
        self.update_status(|s| {
            s.identity = health;
            s.identity_expires_at = Some(expires);
            s.identity_not_before = Some(not_before);
            s.identity_subject = subject;
        });
    }

    /// A Teleport client for the current identity, connecting (or reconnecting after a swap) when needed.
    pub async fn teleport(&self) -> Result<TeleportClient, TeleportError> {
        let credentials = self.credentials();
        let fingerprint = credentials.identity.fingerprint();
        let mut slot = self.teleport.lock().await;
        if let Some((current, client, _)) = slot.as_ref() {
            if *current == fingerprint {
                return Ok(client.clone());
            }
        }
        let (client, lease) = pooled_connection(
            &self.settings.teleport.address,
            &credentials.identity,
            &fingerprint,
            &self.settings.teleport.connect_options(),
        )
        .await?;
        *slot = Some((fingerprint, client.clone(), lease));
        Ok(client)
    }

    /// Drops the cached Teleport client so the next use reconnects.
    pub async fn forget_teleport(&self) {
        *self.teleport.lock().await = None;
    }

    /// The Mattermost client for the current token.
    pub fn mattermost(&self) -> MattermostClient {
        self.mattermost.load().1.clone()
    }

    /// Cluster facts from the last successful `Ping`.
    pub fn cluster(&self) -> Option<Arc<PingInfo>> {
        self.cluster.load_full()
    }

    /// Records cluster facts from `Ping`.
    pub fn set_cluster(&self, info: PingInfo) {
        let (name, version) = (info.cluster_name.clone(), info.server_version.clone());
        self.cluster.store(Some(Arc::new(info)));
        self.update_status(|s| {
            s.cluster_name = name;
            s.teleport_version = version;
        });
    }

    /// The bot's Mattermost user id, once the health check ran.
    pub fn bot_user_id(&self) -> Option<Arc<String>> {
        self.bot_user_id.load_full()
    }

    /// Records the bot's user id.
    pub fn set_bot_user_id(&self, id: String) {
        self.bot_user_id.store(Some(Arc::new(id)));
    }

    /// The bot's user id, asking Mattermost once if the health check has not yet run.
    pub async fn bot_id(&self) -> Result<String, MattermostError> {
        if let Some(id) = self.bot_user_id() {
            return Ok(id.to_string());
        }
        let me = self.mattermost().me().await?;
        self.set_bot_user_id(me.id.clone());
        Ok(me.id)
    }

    /// The `metadata` a new channel post of a pending request carries: the configured
    /// priority, less what the server refused.
    pub fn post_priority(&self) -> Option<NewPostMetadata> {
        let fallback = PriorityFallback::from_u8(self.priority_fallback.load(Ordering::Relaxed));
        priority_metadata(&self.settings.priority, fallback)
    }

    /// Records that the server refused a post's priority for `refusal`, so that posts go out
    /// without what it refused from now on. Logged and reported in the status once.
    pub fn priority_refused(&self, refusal: PriorityRefusal, error: &MattermostError) {
        let detail = error
            .api_error()
            .map(|a| format!("{} {}", error.status().unwrap_or_default(), a.id))
            .unwrap_or_else(|| error.to_string());
        let (fallback, reason, message) =
            priority_refused(&self.settings.priority, refusal, &detail);
        let before = self
            .priority_fallback
            .fetch_max(fallback as u8, Ordering::Relaxed);
        if before < fallback as u8 {
            tracing::warn!(instance = %self.settings.instance, reason = %reason, "{message}");
            self.update_status(|s| s.priority_problem = Some((reason, message)));
        }
    }

    /// Subscribes to status changes.
    pub fn status(&self) -> watch::Receiver<InstanceStatus> {
        self.status.subscribe()
    }

    /// Changes the status; subscribers are woken only when something actually changed.
    pub fn update_status(&self, f: impl FnOnce(&mut InstanceStatus)) {
        self.status.send_if_modified(|s| {
            let before = s.clone();
            f(s);
            *s != before
        });
    }
}

/// Connections shared by instances that use the same Teleport address and identity: one
/// HTTP/2 connection multiplexes all their watch streams, instead of one TLS session (and its
/// buffers) per instance. An entry lives while an instance holds its lease; each key has its
/// own lock, so a slow connect to one cluster never holds up another.
type Slot = Arc<Mutex<Option<(TeleportClient, Weak<()>)>>>;

async fn pooled_connection(
    address: &str,
    identity: &Identity,
    fingerprint: &str,
    options: &crate::teleport::client::ConnectOptions,
) -> Result<(TeleportClient, Arc<()>), TeleportError> {
    static POOL: LazyLock<std::sync::Mutex<HashMap<(String, String), Slot>>> =
        LazyLock::new(Default::default);
    let slot = {
        let mut pool = POOL.lock().expect("pool lock");
        pool.retain(|_, slot| {
            slot.try_lock()
                .map(|s| {
                    s.as_ref()
                        .is_some_and(|(_, users)| users.strong_count() > 0)
                })
                .unwrap_or(true) // being connected right now
        });
        pool.entry((address.to_string(), fingerprint.to_string()))
            .or_default()
            .clone()
    };
    let mut slot = slot.lock().await;
    if let Some((client, users)) = slot.as_ref() {
        if let Some(lease) = users.upgrade() {
            return Ok((client.clone(), lease));
        }
    }
    let client = TeleportClient::connect_with(address, identity, options).await?;
    let lease = Arc::new(());
    *slot = Some((client.clone(), Arc::downgrade(&lease)));
    Ok((client, lease))
}

/// A Mattermost client for the instance's settings with `token` in place of the configured one.
fn build_mattermost(
    settings: &PluginSettings,
    token: &TokenSource,
) -> Result<MattermostClient, MattermostError> {
    let mut mm = settings.mattermost.clone();
    mm.token = token.clone();
    MattermostClient::new(&mm)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + minutes * 60, 0).unwrap()
    }

    #[test]
    fn an_identity_is_valid_then_expires_soon_then_expired() {
        // A tbot-style certificate: one hour, renewed every 20 minutes.
        let (nb, na) = (at(0), at(60));
        assert_eq!(identity_health("CN=bot", nb, na, at(30)).reason, "Valid");
        let soon = identity_health("CN=bot", nb, na, at(45));
        assert_eq!((soon.ok, soon.reason.as_str()), (Some(true), "ExpiresSoon"));
        assert!(
            soon.message.contains("expires in 15 min"),
            "{}",
            soon.message
        );
        assert!(soon.message.contains("tbot"));
        let gone = identity_health("CN=bot", nb, na, at(61));
        assert_eq!(
            (gone.ok, gone.reason.as_str()),
            (Some(false), "CertificateExpired")
        );
    }

    #[test]
    fn a_refused_priority_is_dropped_step_by_step() {
        use crate::settings::PrioritySettings;
        let urgent_ack = PrioritySettings {
            priority: Priority::Urgent,
            requested_ack: true,
        };
        let meta = priority_metadata(&urgent_ack, PriorityFallback::AsConfigured).unwrap();
        assert_eq!(
            (meta.priority.priority.as_str(), meta.priority.requested_ack),
            ("urgent", true)
        );
        let meta = priority_metadata(&urgent_ack, PriorityFallback::WithoutAck).unwrap();
        assert_eq!(
            (meta.priority.priority.as_str(), meta.priority.requested_ack),
            ("urgent", false)
        );
        assert_eq!(
            priority_metadata(&urgent_ack, PriorityFallback::Without),
            None
        );
        // An acknowledgement alone, and nothing at all.
        let ack_only = PrioritySettings {
            priority: Priority::None,
            requested_ack: true,
        };
        let meta = priority_metadata(&ack_only, PriorityFallback::AsConfigured).unwrap();
        assert_eq!(meta.priority.priority, "");
        assert_eq!(
            priority_metadata(&ack_only, PriorityFallback::WithoutAck),
            None
        );
        assert_eq!(
            priority_metadata(&PrioritySettings::default(), PriorityFallback::AsConfigured),
            None
        );

        let (fallback, reason, message) =
            priority_refused(&urgent_ack, PriorityRefusal::Unlicensed, "501 x");
        assert_eq!(fallback, PriorityFallback::WithoutAck);
        assert_eq!(reason, "AcknowledgementUnlicensed");
        assert!(message.contains("as urgent without asking"), "{message}");
        let (fallback, reason, _) =
            priority_refused(&urgent_ack, PriorityRefusal::Disabled, "403 x");
        assert_eq!(
            (fallback, reason.as_str()),
            (PriorityFallback::Without, "PriorityDisabled")
        );
    }

    #[test]
    fn the_next_change_is_a_third_before_expiry_then_expiry() {
        let (nb, na) = (at(0), at(60));
        assert_eq!(next_identity_change(nb, na, at(10)), Some(at(40)));
        assert_eq!(next_identity_change(nb, na, at(41)), Some(at(60)));
        assert_eq!(next_identity_change(nb, na, at(61)), None);
    }
}
