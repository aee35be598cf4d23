//! The engine for one plugin instance: Teleport events in, Mattermost posts out.
//!
//! [`Bridge::run`] connects to Teleport, checks Mattermost, watches access requests and, after
//! every INIT, lists all requests so nothing created or resolved while disconnected is missed.
//! Jobs for one request run in order; different requests run concurrently, bounded. A failed
//! job is retried with backoff until it succeeds, so nothing is dropped.

mod notes;
mod posts;
mod queue;
pub mod recipients;
mod reconcile;
mod store;
mod updates;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use queue::Job;
use queue::Queues;

use crate::instance::{Counters, Health, Instance};
use crate::mattermost::MattermostError;
use crate::request::{AccessRequest, RequestState};
use crate::settings::{ReminderSettings, RetryPolicy};
use crate::teleport::client::{
    MIN_SERVER_VERSION, TeleportError, WatchEvent, check_server_version,
};

/// Why one step of the engine failed.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// A Teleport call failed.
    #[error(transparent)]
    Teleport(#[from] TeleportError),
    /// A Mattermost call failed.
    #[error(transparent)]
    Mattermost(#[from] MattermostError),
    /// Access monitoring rules could not be read (not a permission problem: retried).
    #[error(transparent)]
    Monitoring(#[from] crate::teleport::client::MonitoringError),
    /// What a request's routing needs could not be read (retried).
    #[error(transparent)]
    Route(#[from] crate::rule_routing::RouteError),
    /// Another plugin is posting the request right now.
    #[error(
        "another Mattermost plugin is posting request {request} right now; waiting for its posts"
    )]
    OtherPlugin {
        /// The request.
        request: String,
    },
}

/// How often the reminder schedule is checked: often enough that a reminder comes within a
/// quarter of its interval (and at most 30 s) of its time.
fn reminder_tick(settings: &ReminderSettings) -> Duration {
    (settings.after.min(settings.every) / 4)
        .clamp(Duration::from_millis(200), Duration::from_secs(30))
}

/// Backoff for reconnecting and for retrying failed jobs: jittered, 0.5 s doubling to `max`.
pub(crate) fn backoff(max: Duration) -> impl Iterator<Item = Duration> {
    RetryPolicy::forever(Duration::from_millis(500), max).delays()
}

/// Runs one instance until `shutdown` is cancelled.
pub struct Bridge {
    instance: Arc<Instance>,
    queues: Arc<Mutex<Queues>>,
    permits: Arc<Semaphore>,
    /// The latest snapshot of every pending request, for the reminder schedule.
    pending: Arc<Mutex<HashMap<String, Box<AccessRequest>>>>,
    /// Pending requests not yet posted everywhere, and since when: what an on-call engineer
    /// is paged about when it grows old (the `PendingRequestsNotPosted` alert).
    unposted: Unposted,
    tasks: TaskTracker,
}

impl Bridge {
    /// A bridge for an instance.
    pub fn new(instance: Arc<Instance>) -> Self {
        let concurrency = instance.settings().concurrency.max(1);
        Self {
            instance,
            queues: Arc::default(),
            permits: Arc::new(Semaphore::new(concurrency)),
            pending: Arc::default(),
            unposted: Unposted::default(),
            tasks: TaskTracker::new(),
        }
    }

    /// The instance this bridge drives.
    pub fn instance(&self) -> &Arc<Instance> {
        &self.instance
    }

    /// Connects, watches and handles events until `shutdown`; never returns early on errors,
    /// it reports them in the instance status and retries with backoff.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut credentials = self.instance.watch_credentials();
        let mut delays = backoff(Duration::from_secs(30));
        loop {
            credentials.mark_unchanged();
            let mut healthy = false;
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => break,
                outcome = self.session(&shutdown, &mut healthy) => outcome,
                _ = credentials.changed() => {
                    tracing::info!(instance = %self.instance.settings().instance, "credentials changed; reconnecting with the new identity");
                    self.instance.forget_teleport().await;
                    delays = backoff(Duration::from_secs(30));
                    continue;
                }
            };
            if shutdown.is_cancelled() {
                break;
            }
            // A session that got its INIT and finished its resync was healthy: whatever ended
            // it (a dropped stream, a GOAWAY), the next one starts from the shortest delay.
            // Only sessions that fail before that back off further and further.
            if healthy {
                delays = backoff(Duration::from_secs(30));
            }
            let delay = match outcome {
                Ok(()) => Duration::from_millis(100),
                Err(e) => {
                    tracing::warn!(instance = %self.instance.settings().instance, error = %e, healthy, "bridge session failed; retrying");
                    delays.next().unwrap_or(Duration::from_secs(30))
                }
            };
            self.instance.forget_teleport().await;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
                _ = credentials.changed() => {}
            }
        }
        self.tasks.close();
        // Let running jobs finish their current step; they stop retrying once cancelled.
        let _ = tokio::time::timeout(Duration::from_secs(10), self.tasks.wait()).await;
    }

    /// One connection: health checks, watch, resync, then events until the stream ends.
    /// Sets `healthy` once the watch is up and the resync is queued.
    async fn session(
        &self,
        shutdown: &CancellationToken,
        healthy: &mut bool,
    ) -> Result<(), BridgeError> {
        let instance = &self.instance;
        let settings = instance.settings();
        let teleport = match instance.teleport().await {
            Ok(t) => t,
            Err(e) => {
                instance.update_status(|s| {
                    s.teleport = Health::failed(e.condition_reason(), e.to_string())
                });
                return Err(e.into());
            }
        };
        let ping = match teleport.ping().await.and_then(|info| {
            check_server_version(&info.server_version, MIN_SERVER_VERSION).map(|()| info)
        }) {
            Ok(info) => info,
            Err(e) => {
                instance.update_status(|s| {
                    s.teleport = Health::failed(e.condition_reason(), e.to_string())
                });
                return Err(e.into());
            }
        };
        tracing::info!(cluster = %ping.cluster_name, version = %ping.server_version, route = %teleport.route(), "Teleport version check passed");
        instance.set_cluster(ping.clone());

        self.check_mattermost().await?;

        let mut watch = match teleport.watch(settings.teleport.init_timeout, true).await {
            Ok(w) => w,
            Err(e) => {
                instance
                    .update_status(|s| s.teleport = Health::failed("WatchFailed", e.to_string()));
                return Err(e.into());
            }
        };
        Counters::inc(&instance.counters.watch_connects);
        tracing::info!(instance = %settings.instance, "watcher started");
        instance.update_status(|s| {
            s.teleport = Health::ok(
                "Connected",
                format!(
                    "watching access requests on cluster {} (Teleport {}), {}",
                    ping.cluster_name,
                    ping.server_version,
                    teleport.route()
                ),
            )
        });

        // Rules before requests: the resync's requests are routed by them.
        self.load_rules(&teleport, watch.kinds()).await?;
        self.resync(shutdown).await?;
        *healthy = true;

        let mut reminders = settings.reminders.map(|r| {
            let mut tick = tokio::time::interval(reminder_tick(&r));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            (r, tick, HashMap::new())
        });
        loop {
            let event = tokio::select! {
                event = watch.next() => event?,
                () = async {
                    match reminders.as_mut() {
                        Some((_, tick, _)) => { tick.tick().await; }
                        None => std::future::pending().await,
                    }
                } => {
                    if let Some((r, _, queued)) = reminders.as_mut() {
                        self.queue_due_reminders(r, queued, shutdown);
                    }
                    continue;
                }
            };
            let Some(event) = event else { break };
            instance.update_status(|s| s.last_event_time = Some(Utc::now()));
            match event {
                WatchEvent::Put(request) => {
                    let id = request.id.clone();
                    self.submit(&id, Job::Put(request), shutdown);
                }
                WatchEvent::Delete { id } => self.submit(&id, Job::Delete, shutdown),
                WatchEvent::RulePut(rule) => self.rule_changed(*rule),
                WatchEvent::RuleDelete { name } => {
                    let change = instance.routing().remove(&name);
                    tracing::info!(rule = %name, ?change, "access monitoring rule deleted");
                    self.report_rules();
                }
            }
        }
        tracing::info!(instance = %settings.instance, "watch stream ended; reconnecting");
        Ok(())
    }

    /// After INIT: lists the rules when the watch confirmed them, else turns them off.
    async fn load_rules(
        &self,
        teleport: &crate::teleport::client::TeleportClient,
        kinds: &crate::teleport::client::WatchedKinds,
    ) -> Result<(), BridgeError> {
        use crate::rule_routing::Mode;
        use crate::teleport::client::{MonitoringError, RuleListing};
        let routing = self.instance.routing();
        let plugin = &self.instance.settings().teleport.plugin_name;
        if !kinds.rules_confirmed {
            let why = kinds.refused.clone().unwrap_or_else(|| {
                "the watch did not confirm the access_monitoring_rule kind".to_owned()
            });
            tracing::info!(reason = %why, "access monitoring rules are off: this Teleport server does not serve them");
            routing.disable(Mode::NotSupported(why));
            self.report_rules();
            return Ok(());
        }
        match teleport.list_access_monitoring_rules(plugin).await {
            Ok(RuleListing::Rules(rules)) => {
                let count = rules.len();
                for error in routing.replace_all(rules) {
                    tracing::warn!(error = %error, "access monitoring rule skipped");
                }
                tracing::info!(listed = count, routing = routing.rules().len(), plugin_name = %plugin, "access monitoring rules loaded");
            }
            Ok(RuleListing::NotSupported(why)) => {
                tracing::info!(reason = %why, "access monitoring rules are off: this Teleport server does not list them");
                routing.disable(Mode::NotSupported(why));
            }
            Err(MonitoringError::Permission(denied)) => {
                tracing::warn!(error = %denied, "access monitoring rules are off");
                routing.disable(Mode::PermissionDenied(denied.to_string()));
            }
            Err(e) => return Err(e.into()),
        }
        self.report_rules();
        Ok(())
    }

    /// A rule PUT from the watch.
    fn rule_changed(&self, rule: crate::access_monitoring::Rule) {
        let name = rule.name.clone();
        match self.instance.routing().upsert(rule) {
            Ok(change) => tracing::info!(rule = %name, ?change, "access monitoring rule changed"),
            Err(error) => tracing::warn!(error = %error, "access monitoring rule skipped"),
        }
        self.report_rules();
    }

    fn report_rules(&self) {
        let report = self.instance.routing().report();
        self.instance
            .update_status(|s| s.access_monitoring = report);
    }

    /// Runs the Mattermost health check and resolves the main channel.
    async fn check_mattermost(&self) -> Result<(), BridgeError> {
        let instance = &self.instance;
        let settings = instance.settings();
        let mm = instance.mattermost();
        let checked = async {
            let me = mm.me().await?;
            let channel = mm
                .channel_by_names(&settings.mattermost.team, &settings.mattermost.channel)
                .await?;
            Ok::<_, MattermostError>((me, channel))
        }
        .await;
        match checked {
            Ok((me, channel)) => {
                tracing::info!(bot = %me.username, channel = %channel.id, "Mattermost health check passed");
                instance.set_bot_user_id(me.id);
                instance.update_status(|s| {
                    s.mattermost = Health::ok(
                        "Reachable",
                        format!(
                            "posting as @{} to {}/{}",
                            me.username, settings.mattermost.team, settings.mattermost.channel
                        ),
                    )
                });
                Ok(())
            }
            Err(e) => {
                let reason = if e.is_unauthorized() {
                    "Unauthorized"
                } else if e.is_not_found() {
                    "ChannelNotFound"
                } else {
                    "Unreachable"
                };
                instance.update_status(|s| s.mattermost = Health::failed(reason, e.to_string()));
                Err(e.into())
            }
        }
    }

    /// Lists every request, and every plugin data entry whose request is gone, into the queues.
    async fn resync(&self, shutdown: &CancellationToken) -> Result<(), BridgeError> {
        let teleport = self.instance.teleport().await?;
        let requests = teleport.list_access_requests().await?;
        let known: HashSet<String> = requests.iter().map(|r| r.id.clone()).collect();
        let count = requests.len();
        for request in requests {
            let id = request.id.clone();
            self.submit(&id, Job::Put(Box::new(request)), shutdown);
        }
        let mut orphans = 0;
        for (id, data) in teleport.list_plugin_data().await? {
            let data = crate::plugin_data::PluginData::decode(&data);
            if !known.contains(&id) && (data.resolution.is_none() || data.needs_edit()) {
                orphans += 1;
                self.submit(&id, Job::Gone, shutdown);
            }
        }
        tracing::info!(requests = count, orphans, "resync queued");
        Ok(())
    }

    /// Queues a job; starts a worker for the request when none is running.
    fn submit(&self, id: &str, job: Job, shutdown: &CancellationToken) {
        Counters::inc(&self.instance.counters.requests_seen);
        self.track_pending(id, &job);
        let start = self.queues.lock().expect("queue lock").push(id, job);
        if start {
            let worker = Worker {
                id: id.to_string(),
                instance: self.instance.clone(),
                queues: self.queues.clone(),
                permits: self.permits.clone(),
                shutdown: shutdown.clone(),
                unposted: self.unposted.clone(),
            };
            self.tasks.spawn(worker.run());
        }
    }

    /// Queues the pending requests whose next reminder is due, each once per reminder slot
    /// (`queued` remembers the slot last queued; plugin data decides what was posted).
    fn queue_due_reminders(
        &self,
        settings: &ReminderSettings,
        queued: &mut HashMap<String, u32>,
        shutdown: &CancellationToken,
    ) {
        let now = self.instance.now();
        let due: Vec<(Box<AccessRequest>, u32)> = {
            let pending = self.pending.lock().expect("pending lock");
            queued.retain(|id, _| pending.contains_key(id));
            pending
                .values()
                .filter_map(|r| {
                    let n = crate::notice::reminders_due(r.created?, now, settings);
                    (n > queued.get(&r.id).copied().unwrap_or(0)).then(|| (r.clone(), n))
                })
                .collect()
        };
        for (request, n) in due {
            queued.insert(request.id.clone(), n);
            let id = request.id.clone();
            self.submit(&id, Job::Put(request), shutdown);
        }
    }

    fn track_pending(&self, id: &str, job: &Job) {
        let mut pending = self.pending.lock().expect("pending lock");
        match job {
            Job::Put(request) if request.state == RequestState::Pending => {
                pending.insert(id.to_string(), request.clone());
                self.unposted.waiting(&self.instance, id);
            }
            _ => {
                pending.remove(id);
                self.unposted.done(&self.instance, id);
            }
        }
        let count = pending.len();
        self.instance.update_status(|s| s.pending_requests = count);
    }
}

/// Pending requests whose posts are not all made yet, each with when it was first seen.
#[derive(Clone, Default)]
struct Unposted(Arc<Mutex<HashMap<String, chrono::DateTime<Utc>>>>);

impl Unposted {
    /// A pending request arrived; it waits for its posts unless a job already made them.
    fn waiting(&self, instance: &Instance, id: &str) {
        let mut map = self.0.lock().expect("unposted lock");
        map.entry(id.to_string()).or_insert_with(Utc::now);
        Self::report(instance, &map);
    }

    /// Its posts are made (or it is no longer pending).
    fn done(&self, instance: &Instance, id: &str) {
        let mut map = self.0.lock().expect("unposted lock");
        if map.remove(id).is_some() {
            Self::report(instance, &map);
        }
    }

    fn report(instance: &Instance, map: &HashMap<String, chrono::DateTime<Utc>>) {
        let (count, oldest) = (map.len(), map.values().min().copied());
        instance.update_status(|s| {
            s.unposted_requests = count;
            s.oldest_unposted = oldest;
        });
    }
}

/// Drains one request's queue.
struct Worker {
    id: String,
    instance: Arc<Instance>,
    queues: Arc<Mutex<Queues>>,
    permits: Arc<Semaphore>,
    shutdown: CancellationToken,
    unposted: Unposted,
}

impl Worker {
    async fn run(self) {
        let mut delays = backoff(Duration::from_secs(300));
        loop {
            let Some(job) = self.queues.lock().expect("queue lock").pop(&self.id) else {
                return;
            };
            let result = {
                let Ok(_permit) = self.permits.acquire().await else {
                    return;
                };
                match &job {
                    Job::Put(request) => reconcile::put(&self.instance, request).await,
                    Job::Delete => reconcile::delete(&self.instance, &self.id).await,
                    Job::Gone => reconcile::gone(&self.instance, &self.id).await,
                }
            };
            match result {
                Ok(()) => {
                    Counters::inc(&self.instance.counters.jobs_done);
                    // A pending request's job succeeds only once every post it owes is made.
                    if matches!(&job, Job::Put(r) if r.state == RequestState::Pending) {
                        self.unposted.done(&self.instance, &self.id);
                    }
                    delays = backoff(Duration::from_secs(300));
                }
                Err(e) => {
                    Counters::inc(&self.instance.counters.job_retries);
                    let delay = delays.next().unwrap_or(Duration::from_secs(300));
                    tracing::warn!(request = %self.id, error = %e, retry_in = ?delay, "request handling failed; will retry");
                    self.queues.lock().expect("queue lock").retry(&self.id, job);
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}
