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
pub mod supervisor;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use axum::serve::ListenerExt as _;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::callback::{Registry, router};
use crate::settings::InstanceId;
use build::Defaults;
use controller::{Context, error_policy, reconcile};
use crd::MattermostAccessPlugin;
use metrics::Probes;
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
}

/// Runs the operator until `shutdown` is cancelled.
pub async fn run(
    options: OperatorOptions,
    client: kube::Client,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let registry = Arc::new(Registry::default());
    let (status_tx, mut status_rx) = mpsc::unbounded_channel::<InstanceId>();
    let supervisor = Arc::new(Supervisor::new(registry.clone(), status_tx));
    let probes = Arc::new(Probes {
        ready: Default::default(),
        supervisor: supervisor.clone(),
        registry: registry.clone(),
    });

    let callback = serve(options.callback_addr, router(registry.clone()), &shutdown)
        .await
        .context("starting the callback server")?;
    let probe = serve(
        options.probe_addr,
        metrics::router(probes.clone()),
        &shutdown,
    )
    .await
    .context("starting the probe server")?;
    tracing::info!(callback = %callback, probes = %probe, "listening");

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
    });

    let scopes: Vec<Option<String>> = if options.namespaces.is_empty() {
        vec![None]
    } else {
        options.namespaces.iter().cloned().map(Some).collect()
    };
    let mut stores = Vec::new();
    let mut controllers = Vec::new();
    for scope in scopes {
        let (crs, secrets): (Api<MattermostAccessPlugin>, Api<PartialObjectMeta<Secret>>) =
            match &scope {
                Some(ns) => (
                    Api::namespaced(client.clone(), ns),
                    Api::namespaced(client.clone(), ns),
                ),
                None => (Api::all(client.clone()), Api::all(client.clone())),
            };
        // managedFields are never read here and are the bulk of each cached object.
        let (store, writer) = reflector::store();
        let objects = watcher(crs, watcher::Config::default().any_semantic())
            .default_backoff()
            .modify(|cr| cr.managed_fields_mut().clear())
            .reflect(writer)
            .applied_objects();
        let controller = Controller::for_stream(objects, store.clone());
        stores.push(store.clone());
        let mapper_store = store.clone();
        // Metadata only: the operator is told a Secret changed without caching every
        // Secret's data; reconcile reads just the ones it references.
        let secret_changes =
            watcher(secrets, watcher::Config::default().any_semantic()).touched_objects();
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
                    referencing(
                        &mapper_store,
                        &secret.namespace().unwrap_or_default(),
                        &secret.name_any(),
                    )
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

    // Ready once every object has been listed.
    {
        let stores = stores.clone();
        let probes = probes.clone();
        tokio::spawn(async move {
            for store in &stores {
                let _ = store.wait_until_ready().await;
            }
            probes.ready.store(true, Ordering::Relaxed);
            tracing::info!("controller ready");
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
    tracing::info!("shutting down");
    supervisor.stop_all();
    for c in controllers {
        let _ = tokio::time::timeout(Duration::from_secs(10), c).await;
    }
    if let Some(task) = election {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    Ok(())
}

/// The objects in `namespace` that reference Secret `name`.
fn referencing(
    store: &Store<MattermostAccessPlugin>,
    namespace: &str,
    name: &str,
) -> Vec<ObjectRef<MattermostAccessPlugin>> {
    store
        .state()
        .into_iter()
        .filter(|cr| {
            cr.namespace().as_deref() == Some(namespace)
                && cr.spec.referenced_secrets().contains(name)
        })
        .map(|cr| ObjectRef::from_obj(&*cr))
        .collect()
}

/// Binds and serves `app` on `addr` until `shutdown`; returns the bound address.
async fn serve(
    addr: SocketAddr,
    app: axum::Router,
    shutdown: &CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listener.local_addr()?;
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let listener = listener.tap_io(|tcp| {
            // Nagle would hold small responses for the peer's delayed ACK.
            let _ = tcp.set_nodelay(true);
        });
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
    });
    Ok(bound)
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
