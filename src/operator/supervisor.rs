//! One supervised bridge instance per `MattermostAccessPlugin`, keyed by UID.
//!
//! Every replica keeps an [`Instance`] per object so it can serve button presses; only the
//! leader runs the [`Bridge`]s that watch Teleport and post. Losing the lease stops them at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::build::Built;
use crate::bridge::Bridge;
use crate::callback::Registry;
use crate::instance::Instance;
use crate::settings::InstanceId;

/// What applying a build did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// A new instance was started.
    Started,
    /// The settings changed: the instance was replaced.
    Restarted,
    /// Only the identity or token changed: swapped in place.
    Swapped,
    /// Nothing changed.
    Unchanged,
}

struct Entry {
    instance: Arc<Instance>,
    bridge: Option<(CancellationToken, JoinHandle<()>)>,
    status_task: JoinHandle<()>,
}

impl Entry {
    fn stop_bridge(&mut self) {
        if let Some((token, task)) = self.bridge.take() {
            token.cancel();
            // Don't wait: the bridge finishes its current step in the background.
            drop(task);
        }
    }
}

/// Runs and tracks the instances.
pub struct Supervisor {
    entries: Mutex<HashMap<String, Entry>>,
    registry: Arc<Registry>,
    leader: Mutex<bool>,
    status_changed: mpsc::UnboundedSender<InstanceId>,
}

impl Supervisor {
    /// A supervisor publishing instances to `registry`; status changes are announced on `status_changed`.
    pub fn new(registry: Arc<Registry>, status_changed: mpsc::UnboundedSender<InstanceId>) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            registry,
            leader: Mutex::new(false),
            status_changed,
        }
    }

    /// The instance of an object, if running.
    pub fn instance(&self, uid: &str) -> Option<Arc<Instance>> {
        self.entries
            .lock()
            .expect("supervisor lock")
            .get(uid)
            .map(|e| e.instance.clone())
    }

    /// UIDs of every running instance.
    pub fn uids(&self) -> Vec<String> {
        self.entries
            .lock()
            .expect("supervisor lock")
            .keys()
            .cloned()
            .collect()
    }

    /// Every running instance.
    pub fn instances(&self) -> Vec<Arc<Instance>> {
        self.entries
            .lock()
            .expect("supervisor lock")
            .values()
            .map(|e| e.instance.clone())
            .collect()
    }

    /// Starts, restarts, swaps or keeps the instance for `uid`.
    pub fn apply(
        &self,
        uid: &str,
        built: Built,
    ) -> Result<Applied, crate::mattermost::MattermostError> {
        let mut entries = self.entries.lock().expect("supervisor lock");
        if let Some(entry) = entries.get_mut(uid) {
            if entry.instance.settings() == &built.settings {
                let current = entry.instance.credentials();
                if current.identity.fingerprint() == built.credentials.identity.fingerprint()
                    && current.token == built.credentials.token
                {
                    return Ok(Applied::Unchanged);
                }
                entry.instance.update_credentials(built.credentials)?;
                return Ok(Applied::Swapped);
            }
        }
        let restarted = match entries.remove(uid) {
            Some(mut old) => {
                old.stop_bridge();
                old.status_task.abort();
                true
            }
            None => false,
        };
        let instance = Instance::new(built.settings, built.credentials)?;
        self.registry.insert(instance.clone());
        let mut entry = Entry {
            status_task: self.forward_status(&instance),
            instance,
            bridge: None,
        };
        if *self.leader.lock().expect("leader lock") {
            entry.bridge = Some(start_bridge(&entry.instance));
        }
        entries.insert(uid.to_string(), entry);
        Ok(if restarted {
            Applied::Restarted
        } else {
            Applied::Started
        })
    }

    /// Stops and forgets the instance for `uid`; true when one was running.
    pub fn stop(&self, uid: &str) -> bool {
        let removed = self.entries.lock().expect("supervisor lock").remove(uid);
        match removed {
            Some(mut entry) => {
                entry.stop_bridge();
                entry.status_task.abort();
                self.registry.remove(&entry.instance.settings().instance);
                true
            }
            None => false,
        }
    }

    /// Starts every bridge on gaining the lease, and stops them all at once on losing it.
    pub fn set_leader(&self, leader: bool) {
        let mut current = self.leader.lock().expect("leader lock");
        if *current == leader {
            return;
        }
        *current = leader;
        let mut entries = self.entries.lock().expect("supervisor lock");
        for entry in entries.values_mut() {
            if leader {
                entry.bridge = Some(start_bridge(&entry.instance));
            } else {
                entry.stop_bridge();
            }
        }
    }

    /// True while this replica holds the lease.
    pub fn is_leader(&self) -> bool {
        *self.leader.lock().expect("leader lock")
    }

    /// Stops everything (shutdown).
    pub fn stop_all(&self) {
        for uid in self.uids() {
            self.stop(&uid);
        }
    }

    fn forward_status(&self, instance: &Arc<Instance>) -> JoinHandle<()> {
        let mut status = instance.status();
        let id = instance.settings().instance.clone();
        let tx = self.status_changed.clone();
        tokio::spawn(async move {
            while status.changed().await.is_ok() {
                if tx.send(id.clone()).is_err() {
                    return;
                }
                // Coalesce bursts (e.g. lastEventTime on every event) into one status write.
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        })
    }
}

fn start_bridge(instance: &Arc<Instance>) -> (CancellationToken, JoinHandle<()>) {
    let token = CancellationToken::new();
    let task = tokio::spawn(Bridge::new(instance.clone()).run(token.clone()));
    (token, task)
}
