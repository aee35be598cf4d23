//! What `/readyz` answers: whether this replica can take a button press right now.
//!
//! A replica is ready when its callback server is listening, every watch it relies on has
//! listed its objects once (the caches are synced), every cached object has been reconciled at
//! least once (so its instance is registered with the callback server), and it is not shutting
//! down. Leadership does not matter: every replica serves callbacks, a follower included.
//!
//! The state is filled in from the watch streams themselves (their first `InitDone`), not from
//! `Store::wait_until_ready`: in kube-runtime 5 that future keeps a single waker, so a second
//! task waiting on the same store (the Controller waits on it too) is never woken.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Why a replica is not ready, as `/readyz` says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    /// The callback server has not bound its address yet (e.g. the port is taken).
    CallbackNotListening(String),
    /// Some watches have not finished their initial list.
    CachesSyncing {
        /// Watches still listing.
        pending: Vec<String>,
    },
    /// Cached objects that have not been reconciled yet.
    Reconciling {
        /// How many.
        remaining: usize,
    },
    /// SIGTERM arrived: the Service should stop sending presses here.
    ShuttingDown,
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::CallbackNotListening(why) => {
                write!(f, "callback server not listening: {why}")
            }
            NotReady::CachesSyncing { pending } => {
                write!(f, "caches syncing: {}", pending.join(", "))
            }
            NotReady::Reconciling { remaining } => {
                write!(f, "reconciling: {remaining} object(s) not handled yet")
            }
            NotReady::ShuttingDown => f.write_str("shutting down"),
        }
    }
}

/// The readiness inputs, shared by the tasks that produce them and the probe server.
#[derive(Debug)]
pub struct Readiness {
    callback: Mutex<Result<SocketAddr, String>>,
    watches: Mutex<Vec<(String, bool)>>,
    reconciled: Mutex<HashSet<String>>,
    stopping: AtomicBool,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            callback: Mutex::new(Err("not started".into())),
            watches: Mutex::default(),
            reconciled: Mutex::default(),
            stopping: AtomicBool::new(false),
        }
    }
}

impl Readiness {
    /// Registers a watch that must list once before the replica is ready; returns its index.
    pub fn expect_watch(&self, name: impl Into<String>) -> usize {
        let mut watches = self.watches.lock().expect("readiness lock");
        watches.push((name.into(), false));
        watches.len() - 1
    }

    /// The watch listed its objects (its first `InitDone`); later relists keep it synced.
    pub fn watch_synced(&self, index: usize) {
        let mut watches = self.watches.lock().expect("readiness lock");
        if let Some(w) = watches.get_mut(index) {
            if !w.1 {
                tracing::info!(watch = %w.0, "cache synced");
            }
            w.1 = true;
        }
    }

    /// The callback server is bound (`Ok`) or cannot bind yet (`Err` with the reason).
    pub fn set_callback(&self, state: Result<SocketAddr, String>) {
        *self.callback.lock().expect("readiness lock") = state;
    }

    /// An object was reconciled (whatever the outcome: its instance is registered or its
    /// status says why not).
    pub fn reconciled(&self, uid: &str) {
        let mut done = self.reconciled.lock().expect("readiness lock");
        if !done.contains(uid) {
            done.insert(uid.to_string());
        }
    }

    /// SIGTERM: never ready again.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// The verdict, given the UIDs currently in the object caches.
    pub fn check<'a>(&self, cached: impl IntoIterator<Item = &'a str>) -> Result<(), NotReady> {
        let pending: Vec<String> = self
            .watches
            .lock()
            .expect("readiness lock")
            .iter()
            .filter(|(_, synced)| !synced)
            .map(|(name, _)| name.clone())
            .collect();
        let remaining = {
            let done = self.reconciled.lock().expect("readiness lock");
            cached
                .into_iter()
                .filter(|uid| !done.contains(*uid))
                .count()
        };
        verdict(
            self.callback.lock().expect("readiness lock").clone(),
            pending,
            remaining,
            self.stopping.load(Ordering::Relaxed),
        )
    }
}

/// The decision itself, first reason first: shutting down, callback, caches, reconciles.
pub fn verdict(
    callback: Result<SocketAddr, String>,
    pending_watches: Vec<String>,
    unreconciled: usize,
    stopping: bool,
) -> Result<(), NotReady> {
    if stopping {
        return Err(NotReady::ShuttingDown);
    }
    if let Err(why) = callback {
        return Err(NotReady::CallbackNotListening(why));
    }
    if !pending_watches.is_empty() {
        return Err(NotReady::CachesSyncing {
            pending: pending_watches,
        });
    }
    if unreconciled > 0 {
        return Err(NotReady::Reconciling {
            remaining: unreconciled,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> Result<SocketAddr, String> {
        Ok("127.0.0.1:8080".parse().unwrap())
    }

    #[test]
    fn ready_needs_listening_synced_and_reconciled() {
        assert_eq!(verdict(addr(), vec![], 0, false), Ok(()));
        assert_eq!(
            verdict(Err("address in use".into()), vec![], 0, false),
            Err(NotReady::CallbackNotListening("address in use".into()))
        );
        assert_eq!(
            verdict(addr(), vec!["secrets".into()], 0, false),
            Err(NotReady::CachesSyncing {
                pending: vec!["secrets".into()]
            })
        );
        assert_eq!(
            verdict(addr(), vec![], 2, false),
            Err(NotReady::Reconciling { remaining: 2 })
        );
    }

    #[test]
    fn shutting_down_wins_over_everything() {
        assert_eq!(
            verdict(addr(), vec![], 0, true),
            Err(NotReady::ShuttingDown)
        );
    }

    #[test]
    fn state_turns_ready_once_every_input_is_in_and_never_again_after_stop() {
        let r = Readiness::default();
        let crs = r.expect_watch("mattermostaccessplugins in team-a");
        let secrets = r.expect_watch("secrets in team-a");
        assert!(matches!(
            r.check([]),
            Err(NotReady::CallbackNotListening(_))
        ));
        r.set_callback(addr());
        assert!(matches!(r.check([]), Err(NotReady::CachesSyncing { .. })));
        r.watch_synced(crs);
        r.watch_synced(secrets);
        assert_eq!(
            r.check(["uid-1"]),
            Err(NotReady::Reconciling { remaining: 1 })
        );
        r.reconciled("uid-1");
        assert_eq!(r.check(["uid-1"]), Ok(()));
        r.stop();
        assert_eq!(r.check(["uid-1"]), Err(NotReady::ShuttingDown));
    }
}
