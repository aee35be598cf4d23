//! The Kubernetes operator: one bridge instance per `MattermostAccessPlugin` object.
//!
//! [`crd`] holds the custom resource's Rust types, from which the CRD YAML in `crds/` is
//! generated. [`build`] checks an object and its Secrets and builds the instance settings
//! (pure); the [`controller`] fetches, applies through the [`supervisor`], and writes status and
//! Events. One callback server serves every object; `/healthz`, `/readyz` and `/metrics` are in
//! [`metrics`]. With leader election, only the lease holder runs watchers and posts; every
//! replica serves button presses.

pub mod build;
pub mod controller;
pub mod crd;
pub mod metrics;
pub mod readiness;
pub mod supervisor;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::callback::{Registry, router};
use crate::http_server::{self, Limits};
use crate::settings::InstanceId;
use build::Defaults;
use controller::{Context, error_policy, reconcile};
use crd::MattermostAccessPlugin;
use metrics::Probes;
use readiness::Readiness;
use supervisor::Supervisor;

/// How the operator runs.
#[derive(Debug, Clone)]
pub struct OperatorOptions {
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    /// Plain-HTTP callback server address (behind the Ingress).
    pub callback_addr: SocketAddr,
    /// `/healthz`, `/readyz`, `/metrics`.
    pub probe_addr: SocketAddr,
    /// Run watchers only while holding a Lease.
    pub leader_election: bool,
    /// Lease name.
    pub lease_name: String,
    /// Lease namespace (the operator's own).
    pub lease_namespace: String,
    /// This replica's identity in the Lease (the pod name).
    pub identity: String,
    /// How long a Teleport watch may take to send INIT.
    pub init_timeout: Duration,
    /// After SIGTERM, how long button presses are still served (unready meanwhile), so the
    /// Service stops routing here before the server closes.
    pub drain: Duration,
}

/// Runs the operator until `shutdown` is cancelled (SIGTERM), then drains: `/readyz` turns
/// unready at once, the bridges stop and the Lease is released so another replica takes over,
/// and button presses are still served for `options.drain` while the Service's endpoints
/// catch up.
pub async fn run(
    options: OperatorOptions,
    client: kube::Client,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let registry = Arc::new(Registry::default());
    let (status_tx, mut status_rx) = mpsc::unbounded_channel::<InstanceId>();
    let supervisor = Arc::new(Supervisor::new(registry.clone(), status_tx));
    let readiness = Arc::new(Readiness::default());
    let probes = Arc::new(Probes {
        readiness: readiness.clone(),
        stores: Default::default(),
        supervisor: supervisor.clone(),
        registry: registry.clone(),
    });
    // The servers outlive `shutdown` by the drain period.
    let servers = CancellationToken::new();

    // Probes first, so liveness answers while the rest starts.
    let listener = tokio::net::TcpListener::bind(options.probe_addr)
        .await
        .with_context(|| format!("cannot listen on {} (--probe-addr)", options.probe_addr))?;
    let probe = listener.local_addr()?;
    let probe_server = tokio::spawn(http_server::serve(
        listener,
        metrics::router(probes.clone()),
        Limits::default(),
        servers.clone(),
    ));
    tracing::info!(probes = %probe, "probe server listening");
    let callback_server = tokio::spawn(serve_callbacks(
        options.callback_addr,
        router(registry.clone()),
        readiness.clone(),
        servers.clone(),
    ));

    // Reconcile triggers from instance status changes and leadership changes.
    let (trigger_tx, _) = broadcast::channel::<InstanceId>(4096);
    {
        let trigger_tx = trigger_tx.clone();
        tokio::spawn(async move {
            while let Some(id) = status_rx.recv().await {
                let _ = trigger_tx.send(id);
            }
        });
    }

    let ctx = Arc::new(Context {
        client: client.clone(),
        supervisor: supervisor.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "teleport-mattermost".into(),
                instance: Some(options.identity.clone()),
            },
        ),
        defaults: Defaults {
            init_timeout: options.init_timeout,
            ..Defaults::default()
        },
        readiness: readiness.clone(),
    });

    let scopes: Vec<Option<String>> = if options.namespaces.is_empty() {
        vec![None]
    } else {
        options.namespaces.iter().cloned().map(Some).collect()
    };
    let mut stores = Vec::new();
    let mut controllers = Vec::new();
    for scope in scopes {
        let (crs, secrets, config_maps): (
            Api<MattermostAccessPlugin>,
            Api<PartialObjectMeta<Secret>>,
            Api<PartialObjectMeta<ConfigMap>>,
        ) = match &scope {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (
                Api::all(client.clone()),
                Api::all(client.clone()),
                Api::all(client.clone()),
            ),
        };
        let place = scope
            .as_deref()
            .map(|ns| format!("namespace {ns}"))
            .unwrap_or_else(|| "all namespaces".into());
        // managedFields are never read here and are the bulk of each cached object.
        let (store, writer) = reflector::store();
        let objects = watcher(crs, watcher::Config::default().any_semantic())
            .default_backoff()
            .modify(|cr| cr.managed_fields_mut().clear())
            .reflect(writer)
            .inspect_ok(on_synced(
                &readiness,
                format!("MattermostAccessPlugins in {place}"),
            ))
            .applied_objects();
        let controller = Controller::for_stream(objects, store.clone());
        stores.push(store.clone());
        let mapper_store = store.clone();
        // Metadata only: the operator is told a Secret changed without caching every
        // Secret's data; reconcile reads just the ones it references.
        let secret_changes = watcher(secrets, watcher::Config::default().any_semantic())
            .default_backoff()
            .inspect_ok(on_synced(&readiness, format!("Secrets in {place}")))
            .touched_objects();
        let config_map_changes = watcher(config_maps, watcher::Config::default().any_semantic())
            .default_backoff()
            .inspect_ok(on_synced(&readiness, format!("ConfigMaps in {place}")))
            .touched_objects();
        let config_map_store = store.clone();
        let scope_filter = scope.clone();
        let triggers = tokio_stream::wrappers::BroadcastStream::new(trigger_tx.subscribe())
            .filter_map(move |id| {
                let scope = scope_filter.clone();
                async move {
                    let id = id.ok()?;
                    if scope.as_ref().is_some_and(|s| *s != id.namespace) {
                        return None;
                    }
                    Some(ObjectRef::<MattermostAccessPlugin>::new(&id.name).within(&id.namespace))
                }
            });
        let ctx = ctx.clone();
        let stop = shutdown.clone();
        controllers.push(tokio::spawn(
            controller
                .watches_stream(secret_changes, move |secret| {
                    referencing(&mapper_store, &secret, |spec| spec.referenced_secrets())
                })
                .watches_stream(config_map_changes, move |config_map| {
                    referencing(&config_map_store, &config_map, |spec| {
                        spec.referenced_config_maps()
                    })
                })
                .reconcile_on(triggers)
                .graceful_shutdown_on(async move { stop.cancelled().await })
                .run(reconcile, error_policy, ctx)
                .for_each(|result| async move {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "controller event");
                    }
                }),
        ));
    }
    let _ = probes.stores.set(stores.clone());

    // Say once when the replica turns ready, for whoever reads the log.
    {
        let probes = probes.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if probes.ready().is_ok() {
                    tracing::info!("controller ready");
                    return;
                }
            }
        });
    }

    // Objects deleted from the cluster are not reconciled; stop their instances here.
    {
        let stores = stores.clone();
        let supervisor = supervisor.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let live: HashSet<String> = stores
                    .iter()
                    .flat_map(|s| s.state())
                    .filter_map(|cr| cr.uid())
                    .collect();
                for uid in supervisor.uids() {
                    if !live.contains(&uid) && supervisor.stop(&uid) {
                        tracing::info!(%uid, "object deleted: stopped its instance");
                    }
                }
            }
        });
    }

    let election = if options.leader_election {
        Some(
            elect(
                &options,
                client.clone(),
                supervisor.clone(),
                stores.clone(),
                trigger_tx.clone(),
                shutdown.clone(),
            )
            .await?,
        )
    } else {
        supervisor.set_leader(true);
        None
    };

    shutdown.cancelled().await;
    let draining_since = tokio::time::Instant::now();
    readiness.stop();
    tracing::info!(drain = ?options.drain, "shutting down: not ready; stopping the watchers, still serving button presses");
    // Stop posting now (the election task also releases the Lease), but keep every instance
    // registered so presses that are still routed here are answered.
    supervisor.set_leader(false);
    for c in controllers {
        let _ = tokio::time::timeout(Duration::from_secs(10), c).await;
    }
    if let Some(task) = election {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    tokio::time::sleep_until(draining_since + options.drain).await;
    servers.cancel();
    supervisor.stop_all();
    let _ = tokio::time::timeout(Duration::from_secs(10), callback_server).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), probe_server).await;
    tracing::info!("stopped");
    Ok(())
}

/// Binds the callback address, retrying while it is taken (readiness says why meanwhile),
/// then serves until `stop`.
async fn serve_callbacks(
    addr: SocketAddr,
    app: axum::Router,
    readiness: Arc<Readiness>,
    stop: CancellationToken,
) {
    let mut delays = crate::bridge::backoff(Duration::from_secs(10));
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => break listener,
            Err(e) => {
                let why = format!("cannot listen on {addr} (--callback-addr): {e}");
                tracing::error!("{why}; retrying");
                readiness.set_callback(Err(why));
                let delay = delays.next().unwrap_or(Duration::from_secs(10));
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    };
    match listener.local_addr() {
        Ok(bound) => {
            tracing::info!(callback = %bound, "callback server listening");
            readiness.set_callback(Ok(bound));
        }
        Err(e) => readiness.set_callback(Err(e.to_string())),
    }
    http_server::serve(listener, app, Limits::default(), stop).await;
}

/// Registers a watch with readiness and returns the hook that marks it synced on its first
/// complete list.
fn on_synced<K>(readiness: &Arc<Readiness>, name: String) -> impl Fn(&watcher::Event<K>) + use<K> {
    let index = readiness.expect_watch(name);
    let readiness = readiness.clone();
    move |event| {
        if matches!(event, watcher::Event::InitDone) {
            readiness.watch_synced(index);
        }
    }
}

/// The objects in the namespace of `changed` (a Secret or ConfigMap) whose spec names it
/// among `referenced`.
fn referencing<K: kube::Resource>(
    store: &Store<MattermostAccessPlugin>,
    changed: &K,
    referenced: impl Fn(&crd::MattermostAccessPluginSpec) -> std::collections::BTreeSet<String>,
) -> Vec<ObjectRef<MattermostAccessPlugin>> {
    let namespace = changed.namespace().unwrap_or_default();
    let name = changed.name_any();
    store
        .state()
        .into_iter()
        .filter(|cr| {
            cr.namespace().as_deref() == Some(namespace.as_str())
                && referenced(&cr.spec).contains(&name)
        })
        .map(|cr| ObjectRef::from_obj(&*cr))
        .collect()
}

/// Holds a Lease: the supervisor runs bridges only while this replica is the holder.
async fn elect(
    options: &OperatorOptions,
    client: kube::Client,
    supervisor: Arc<Supervisor>,
    stores: Vec<Store<MattermostAccessPlugin>>,
    triggers: broadcast::Sender<InstanceId>,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client, &options.lease_name)
        .with_namespace(&options.lease_namespace)
        .with_identity(&options.identity)
        .with_duration(10)
        .with_grace(3)
        .build()
        .await
        .context("setting up leader election")?;
    let (mut leader, lease_task) = manager.watch().await;
    Ok(tokio::spawn(async move {
        loop {
            let is_leader = *leader.borrow_and_update();
            if is_leader != supervisor.is_leader() {
                tracing::info!(leader = is_leader, "leadership changed");
                supervisor.set_leader(is_leader);
                if is_leader {
                    // Write every object's status now that this replica is in charge.
                    for cr in stores.iter().flat_map(|s| s.state()) {
                        let _ = triggers.send(InstanceId::new(
                            cr.namespace().unwrap_or_default(),
                            cr.name_any(),
                        ));
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = leader.changed() => if changed.is_err() { break },
            }
        }
        supervisor.set_leader(false);
        // Dropping the receiver makes the manager release the lease.
        drop(leader);
        let _ = lease_task.await;
    }))
}
