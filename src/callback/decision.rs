//! Deciding a request from a press: exactly one press acts, and what it tells people is true.
//!
//! The press first claims the decision by compare-and-swap on the request's plugin data
//! (`mm_claim`: who, which state, when), which every replica sees, so of two concurrent
//! presses (or a double click) one wins and the other is told who is deciding; nothing else
//! reaches Teleport. Then it re-reads the request, sets its state, and records who decided it.
//!
//! All of that runs in its own task, so the HTTP timeout in front of the press cannot cancel
//! it between the claim and the state change. Every way out that did not change Teleport
//! releases the claim; if the task itself is dropped (the runtime shutting down), a guard
//! releases it; a replica that crashed mid-press leaves a claim that expires after
//! [`CLAIM_TTL`]. A state change whose answer was lost (a timeout) is judged by re-reading the
//! request, never assumed either way.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use crate::instance::Instance;
use crate::plugin_data::{Claim, ClaimRefused, PluginData};
use crate::request::{AccessRequest, RequestState};
use crate::teleport::client::{TeleportClient, TeleportError};

/// A claim older than this no longer blocks other presses: its replica died mid-press.
pub const CLAIM_TTL: Duration = Duration::from_secs(120);
/// Longest wait for Teleport's answer to the state change; well inside [`CLAIM_TTL`], so a
/// live press always holds its claim.
pub const SET_STATE_TIMEOUT: Duration = Duration::from_secs(60);

/// The press to carry out, after the clicker was authorized.
#[derive(Debug, Clone)]
pub struct Press {
    /// The request.
    pub request_id: String,
    /// `Approved` or `Denied`.
    pub state: RequestState,
    /// `@alice`.
    pub by: String,
    /// `mattermost:<email or username>`, recorded in Teleport's audit log.
    pub delegator: String,
    /// The resolution reason written to Teleport.
    pub reason: String,
}

/// How a press ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decided {
    /// This press changed the request; `request` is its new state.
    Done(Box<AccessRequest>),
    /// Someone else is deciding it right now.
    Deciding(Claim),
    /// It was decided already (by `by`, when known), or resolved elsewhere.
    Already {
        /// Teleport's state.
        state: RequestState,
        /// Who decided it through a button, if known.
        by: Option<String>,
    },
    /// It no longer exists in Teleport (expired or deleted).
    Gone,
    /// Teleport could not be read or refused the change; nothing was changed.
    Failed {
        /// A short reason for the clicker.
        short: &'static str,
        /// The full error, for logs and status.
        detail: String,
    },
}

/// Releases a claim if the press ends without recording its decision, even when the task is
/// dropped mid-way.
struct ClaimGuard {
    teleport: TeleportClient,
    request_id: String,
    claim: Option<Claim>,
}

impl ClaimGuard {
    fn disarm(&mut self) {
        self.claim = None;
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        let Some(claim) = self.claim.take() else {
            return;
        };
        let teleport = self.teleport.clone();
        let id = std::mem::take(&mut self.request_id);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = release(&teleport, &id, &claim).await {
                    tracing::warn!(request = %id, error = %e, "could not release a press's claim; it expires by itself");
                }
            });
        }
    }
}

async fn release(teleport: &TeleportClient, id: &str, claim: &Claim) -> Result<(), TeleportError> {
    teleport
        .modify_plugin_data(id, |current| {
            let mut data = PluginData::decode(current?);
            data.release(claim).then(|| (data.encode(), ()))
        })
        .await
        .map(|_| ())
}

/// Claims the decision, carries it out and records it. Never panics; every error is a
/// [`Decided`].
pub async fn decide(instance: Arc<Instance>, request: AccessRequest, press: Press) -> Decided {
    let teleport = match instance.teleport().await {
        Ok(t) => t,
        Err(e) => return failed("Teleport is unreachable right now", e),
    };

    // 1. The claim.
    let now_ms = Utc::now().timestamp_millis();
    let ttl_ms = CLAIM_TTL.as_millis() as i64;
    let mut refused = None;
    let claimed = teleport
        .modify_plugin_data(&press.request_id, |current| {
            refused = None;
            let mut data = current
                .map(PluginData::decode)
                .unwrap_or_else(|| PluginData::for_request(&request));
            match data.claim(press.state, &press.by, now_ms, ttl_ms) {
                Ok(claim) => Some((data.encode(), claim)),
                Err(r) => {
                    refused = Some(r);
                    None
                }
            }
        })
        .await;
    let claim = match claimed {
        Ok(Some(claim)) => claim,
        Ok(None) => {
            return match refused {
                Some(ClaimRefused::Deciding(claim)) => Decided::Deciding(claim),
                Some(ClaimRefused::Decided { state, by }) => Decided::Already { state, by },
                None => Decided::Failed {
                    short: "Could not record the decision",
                    detail: "plugin data update produced nothing".into(),
                },
            };
        }
        Err(e) => return failed("Could not record the decision in Teleport", e),
    };
    // If this task is dropped before it ends (the runtime stopping), the guard releases the
    // claim; on every ordinary way out it is released or recorded here.
    let mut guard = ClaimGuard {
        teleport: teleport.clone(),
        request_id: press.request_id.clone(),
        claim: Some(claim.clone()),
    };
    let decided = carry_out(&teleport, request, &press).await;
    let kept = match &decided {
        // Record who decided (and drop the claim), so every edit names them.
        Decided::Done(_) => teleport
            .modify_plugin_data(&press.request_id, |current| {
                let mut data = PluginData::decode(current?);
                data.record_decision(&claim);
                Some((data.encode(), ()))
            })
            .await
            .map(|_| ()),
        _ => release(&teleport, &press.request_id, &claim).await,
    };
    guard.disarm();
    if let Err(e) = kept {
        // Only the name on the posts (or a claim that expires by itself) is at stake: the
        // live claim still names the presser until then.
        tracing::warn!(request = %press.request_id, error = %e, "could not record the end of a press in plugin data");
    }
    decided
}

/// Steps 2 and 3 under the claim: re-read the request, then change its state.
async fn carry_out(teleport: &TeleportClient, request: AccessRequest, press: &Press) -> Decided {
    // Still pending? Someone may have resolved it in Teleport since the press was read.
    match teleport.get_access_request(&press.request_id).await {
        Ok(Some(r)) if r.state == RequestState::Pending => {}
        Ok(Some(r)) => {
            return Decided::Already {
                state: r.state,
                by: None,
            };
        }
        Ok(None) => return Decided::Gone,
        Err(e) => return failed("Could not read the request from Teleport", e),
    }

    // The state change. A lost answer is judged by what Teleport now says.
    let set = tokio::time::timeout(
        SET_STATE_TIMEOUT,
        teleport.set_access_request_state(
            &press.request_id,
            press.state,
            &press.delegator,
            &press.reason,
        ),
    )
    .await;
    match set {
        Ok(Ok(())) => {}
        Ok(Err(e)) if e.is_already_resolved() => {
            let state = teleport
                .get_access_request(&press.request_id)
                .await
                .ok()
                .flatten()
                .map(|r| r.state)
                .unwrap_or(RequestState::None);
            return Decided::Already { state, by: None };
        }
        outcome => {
            let detail = match outcome {
                Ok(Err(e)) => e.to_string(),
                _ => format!("SetAccessRequestState did not answer within {SET_STATE_TIMEOUT:?}"),
            };
            // Only this press's own write counts as its success: Teleport keeps the reason it
            // was given, and a decision made meanwhile in tctl or the web UI carries another.
            match teleport.get_access_request(&press.request_id).await {
                Ok(Some(r)) if r.state == press.state && r.resolve_reason == press.reason => {
                    tracing::warn!(request = %press.request_id, %detail, "the state change's answer was lost, but Teleport shows it applied");
                }
                Ok(Some(r)) if r.state.is_resolved() => {
                    tracing::warn!(request = %press.request_id, %detail, state = r.state.as_str(), "the state change failed, and the request was decided elsewhere meanwhile");
                    return Decided::Already {
                        state: r.state,
                        by: None,
                    };
                }
                _ => {
                    return Decided::Failed {
                        short: "Teleport did not accept the change",
                        detail,
                    };
                }
            }
        }
    }
    Decided::Done(Box::new(AccessRequest {
        state: press.state,
        resolve_reason: press.reason.clone(),
        ..request
    }))
}

fn failed(short: &'static str, e: TeleportError) -> Decided {
    Decided::Failed {
        short,
        detail: e.to_string(),
    }
}
