//! The watch stream: access requests, and access monitoring rules when the server has them.
//!
//! Teleport's own plugins ask for `access_monitoring_rule` beside `access_request` with
//! `AllowPartialSuccess`, and learn from the INIT event's `WatchStatus` which kinds the server
//! confirmed (`integrations/access/common/app.go`, `integrations/lib/watcherjob`). A server
//! that does not know the kind (v13, v14) confirms only `access_request`; one that refuses the
//! whole watch is asked again for access requests alone, so requests keep flowing either way.

use std::time::Duration;

use super::client::{KIND_ACCESS_REQUEST, TeleportClient};
use super::error::{TeleportError, rpc};
use super::monitoring::{KIND_ACCESS_MONITORING_RULE, rule_from_wire};
use crate::access_monitoring::Rule;
use crate::request::AccessRequest;
use crate::teleport::wire::proto::{self, Operation, event};
use crate::teleport::wire::types;

/// One change from the watch stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The request was created or changed (boxed: a request is large, a delete small).
    Put(Box<AccessRequest>),
    /// The request was deleted (usually: it expired).
    Delete {
        /// The request id.
        id: String,
    },
    /// An access monitoring rule was created or changed.
    RulePut(Box<Rule>),
    /// An access monitoring rule was deleted.
    RuleDelete {
        /// The rule's name.
        name: String,
    },
}

/// What the server agreed to watch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchedKinds {
    /// Rules were asked for.
    pub rules_requested: bool,
    /// The INIT event's `WatchStatus` confirmed `access_monitoring_rule`.
    pub rules_confirmed: bool,
    /// The server refused the watch with the rule kind in it (it was then opened for access
    /// requests only): what it said.
    pub refused: Option<String>,
}

/// A watch, positioned after INIT.
pub struct AccessRequestWatch {
    stream: tonic::Streaming<proto::Event>,
    kinds: WatchedKinds,
}

impl AccessRequestWatch {
    /// What the server agreed to watch.
    pub fn kinds(&self) -> &WatchedKinds {
        &self.kinds
    }

    /// The next change; `Ok(None)` when the server ended the stream.
    ///
    /// Events for other kinds, unknown oneof members and repeated INITs are skipped.
    pub async fn next(&mut self) -> Result<Option<WatchEvent>, TeleportError> {
        loop {
            let Some(event) = self.stream.message().await.map_err(rpc("WatchEvents"))? else {
                return Ok(None);
            };
            if let Some(ev) = decode_event(event) {
                return Ok(Some(ev));
            }
        }
    }
}

fn decode_event(event: proto::Event) -> Option<WatchEvent> {
    match (Operation::try_from(event.r#type).ok()?, event.resource?) {
        (Operation::Put, event::Resource::AccessRequest(req)) => {
            Some(WatchEvent::Put(Box::new(AccessRequest::from(&req))))
        }
        (Operation::Put, event::Resource::AccessMonitoringRule(rule)) => {
            Some(WatchEvent::RulePut(Box::new(rule_from_wire(&rule))))
        }
        (Operation::Delete, event::Resource::AccessMonitoringRule(rule)) => {
            Some(WatchEvent::RuleDelete {
                name: rule.metadata?.name,
            })
        }
        (Operation::Delete, event::Resource::ResourceHeader(header))
            if header.kind == KIND_ACCESS_MONITORING_RULE =>
        {
            Some(WatchEvent::RuleDelete {
                name: header.metadata?.name,
            })
        }
        (Operation::Delete, event::Resource::ResourceHeader(header))
            if header.kind.is_empty() || header.kind == KIND_ACCESS_REQUEST =>
        {
            Some(WatchEvent::Delete {
                id: header.metadata?.name,
            })
        }
        (Operation::Delete, event::Resource::AccessRequest(req)) => Some(WatchEvent::Delete {
            id: req.metadata?.name,
        }),
        _ => None,
    }
}

fn kind(name: &str) -> types::WatchKind {
    types::WatchKind {
        kind: name.to_owned(),
        ..Default::default()
    }
}

impl TeleportClient {
    /// Opens a watch on access requests and waits for its INIT event.
    ///
    /// Teleport sends no snapshot: list the requests after this returns to catch up on
    /// anything missed while disconnected.
    pub async fn watch_access_requests(
        &self,
        init_timeout: Duration,
    ) -> Result<AccessRequestWatch, TeleportError> {
        self.watch(init_timeout, false).await
    }

    /// Opens a watch on access requests and, when `rules` is set, on access monitoring rules
    /// too (with partial success, so a server without them still watches requests). A server
    /// that refuses the whole watch because of the rule kind is asked once more, for access
    /// requests only; [`AccessRequestWatch::kinds`] says what was confirmed.
    pub async fn watch(
        &self,
        init_timeout: Duration,
        rules: bool,
    ) -> Result<AccessRequestWatch, TeleportError> {
        if !rules {
            return self
                .open_watch(init_timeout, false)
                .await
                .map(|(stream, _)| AccessRequestWatch {
                    stream,
                    kinds: WatchedKinds::default(),
                });
        }
        match self.open_watch(init_timeout, true).await {
            Ok((stream, confirmed)) => Ok(AccessRequestWatch {
                stream,
                kinds: WatchedKinds {
                    rules_requested: true,
                    rules_confirmed: confirmed.iter().any(|k| k == KIND_ACCESS_MONITORING_RULE),
                    refused: None,
                },
            }),
            // Connectivity problems are not the rule kind's fault: the caller reconnects.
            Err(e @ TeleportError::Rpc { .. }) if !e.is_transient() => {
                tracing::info!(error = %e, "Teleport refused a watch that includes access monitoring rules; watching access requests only");
                let (stream, _) = self.open_watch(init_timeout, false).await?;
                Ok(AccessRequestWatch {
                    stream,
                    kinds: WatchedKinds {
                        rules_requested: true,
                        rules_confirmed: false,
                        refused: Some(e.to_string()),
                    },
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Opens the stream and reads INIT; returns the kinds its `WatchStatus` confirmed.
    async fn open_watch(
        &self,
        init_timeout: Duration,
        rules: bool,
    ) -> Result<(tonic::Streaming<proto::Event>, Vec<String>), TeleportError> {
        let mut kinds = vec![kind(KIND_ACCESS_REQUEST)];
        if rules {
            kinds.push(kind(KIND_ACCESS_MONITORING_RULE));
        }
        let watch = proto::Watch {
            kinds,
            allow_partial_success: rules,
        };
        let mut client = self.inner.clone();
        let opened = async move {
            let mut stream = client
                .watch_events(watch)
                .await
                .map_err(rpc("WatchEvents"))?
                .into_inner();
            let first = stream.message().await.map_err(rpc("WatchEvents"))?;
            match first {
                Some(ev) if ev.r#type == Operation::Init as i32 => {
                    let confirmed = match ev.resource {
                        Some(event::Resource::WatchStatus(status)) => status
                            .spec
                            .map(|s| s.kinds.into_iter().map(|k| k.kind).collect())
                            .unwrap_or_default(),
                        _ => Vec::new(),
                    };
                    Ok((stream, confirmed))
                }
                Some(ev) => Err(TeleportError::NoInit {
                    got: Operation::try_from(ev.r#type)
                        .map(|op| op.as_str_name().to_owned())
                        .unwrap_or_else(|_| format!("operation {}", ev.r#type)),
                }),
                None => Err(TeleportError::NoInit {
                    got: "end of stream".to_owned(),
                }),
            }
        };
        match tokio::time::timeout(init_timeout, opened).await {
            Ok(result) => result,
            Err(_) => Err(TeleportError::InitTimeout {
                after: init_timeout,
            }),
        }
    }
}
