//! The plugin data this plugin keeps on each access request in Teleport, and its codec.
//!
//! The first seven keys are the ones Teleport's own Mattermost plugin writes, with the same
//! meaning, so an install can take over from it without reposting. Our own keys (prefixed `mm_`)
//! make posting exactly-once across crashes: an intent is recorded before each post, and a
//! later attempt that finds the intent looks for the post by its marker instead of posting again.

use std::collections::HashMap;

use crate::request::{AccessRequest, RequestState};

/// Teleport plugin key: requesting user.
pub const KEY_USER: &str = "user";
/// Teleport plugin key: requested roles, comma-joined.
pub const KEY_ROLES: &str = "roles";
/// Teleport plugin key: the requester's reason.
pub const KEY_REQUEST_REASON: &str = "request_reason";
/// Teleport plugin key: how many reviews have been replied to (decimal, `""` when 0).
pub const KEY_REVIEWS_COUNT: &str = "reviews_count";
/// Teleport plugin key: `""`, `APPROVED`, `DENIED`, `EXPIRED` or `PROMOTED`.
pub const KEY_RESOLUTION: &str = "resolution";
/// Teleport plugin key: the resolver's reason.
pub const KEY_RESOLVE_REASON: &str = "resolve_reason";
/// Teleport plugin key: `channelID/postID` items joined by `,`.
pub const KEY_MESSAGES: &str = "messages";
/// Ours: posts being made right now, `slot@unix_ms` items joined by `,`.
pub const KEY_INFLIGHT: &str = "mm_inflight";
/// Ours: channels whose thread already has the reply to review number `reviews_count`.
pub const KEY_REPLIED: &str = "mm_replied";
/// Ours: who resolved the request through a button, e.g. `@alice`.
pub const KEY_RESOLVED_BY: &str = "mm_resolved_by";
/// Ours: the state that button press set (`APPROVED` or `DENIED`), so a later revocation in
/// Teleport is not shown as that person's.
pub const KEY_RESOLVED_AS: &str = "mm_resolved_as";
/// Ours: the resolution every message has been edited to show, and by whom:
/// `APPROVED` or `APPROVED|@alice`.
pub const KEY_EDITED: &str = "mm_edited";
/// Ours: a button press deciding the request right now, `STATE|@user|unix_ms`. Taken by
/// compare-and-swap before Teleport is written, so exactly one press acts, on any replica.
pub const KEY_CLAIM: &str = "mm_claim";
/// Ours: how many reviews the posts' progress line shows.
pub const KEY_REVIEWS_SHOWN: &str = "mm_reviews_shown";

/// Ours: notes made once per request, `channelID/tag` items joined by `,`: the requester's
/// direct messages (`posted`, `APPROVED`, …) and the reminders (`remind1`, …) in each thread.
/// The bare item `requester-unknown` records that the requester has no Mattermost account.
pub const KEY_NOTES: &str = "mm_notes";

/// Every key this plugin writes; encoding always emits all of them so that clearing one
/// deletes it in Teleport (an empty `Set` value deletes the key).
pub const ALL_KEYS: [&str; 15] = [
    KEY_USER,
    KEY_ROLES,
    KEY_REQUEST_REASON,
    KEY_REVIEWS_COUNT,
    KEY_RESOLUTION,
    KEY_RESOLVE_REASON,
    KEY_MESSAGES,
    KEY_INFLIGHT,
    KEY_REPLIED,
    KEY_RESOLVED_BY,
    KEY_RESOLVED_AS,
    KEY_EDITED,
    KEY_CLAIM,
    KEY_REVIEWS_SHOWN,
    KEY_NOTES,
];

/// The [`KEY_NOTES`] item recording that the requester could not be found in Mattermost.
const REQUESTER_UNKNOWN: &str = "requester-unknown";

/// One post made for a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageRef {
    /// Channel (or DM channel) id.
    pub channel_id: String,
    /// Post id.
    pub post_id: String,
}

/// What a recorded intent is about to post.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Slot {
    /// The request's post in a channel.
    Root {
        /// Target channel.
        channel_id: String,
    },
    /// The thread reply for review `index` under the request's post in a channel.
    Reply {
        /// Channel of the root post.
        channel_id: String,
        /// Review index in the request.
        index: usize,
    },
    /// A note made once: a direct message to the requester, or a reminder in a thread.
    Note {
        /// Where it is posted.
        channel_id: String,
        /// Which note (`posted`, `APPROVED`, `remind1`, …): ASCII letters, digits and `-`.
        tag: String,
    },
}

impl Slot {
    /// The channel this slot posts to.
    pub fn channel_id(&self) -> &str {
        match self {
            Slot::Root { channel_id }
            | Slot::Reply { channel_id, .. }
            | Slot::Note { channel_id, .. } => channel_id,
        }
    }

    fn encode(&self) -> String {
        match self {
            Slot::Root { channel_id } => channel_id.clone(),
            Slot::Reply { channel_id, index } => format!("{channel_id}/r{index}"),
            Slot::Note { channel_id, tag } => format!("{channel_id}/n{tag}"),
        }
    }

    fn decode(s: &str) -> Option<Slot> {
        if let Some((channel_id, tag)) = s.split_once("/n") {
            return Some(Slot::Note {
                channel_id: channel_id.to_string(),
                tag: tag.to_string(),
            });
        }
        match s.split_once("/r") {
            Some((channel_id, index)) => Some(Slot::Reply {
                channel_id: channel_id.to_string(),
                index: index.parse().ok()?,
            }),
            None if !s.is_empty() => Some(Slot::Root {
                channel_id: s.to_string(),
            }),
            None => None,
        }
    }
}

/// A recorded intent to post: the slot and when it was recorded (unix ms).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Intent {
    /// What is being posted.
    pub slot: Slot,
    /// When the intent was recorded, in unix milliseconds.
    pub since_ms: i64,
}

/// A press that is deciding the request: who, to which state, since when.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Claim {
    /// `Approved` or `Denied`.
    pub state: RequestState,
    /// Who pressed, e.g. `@alice`.
    pub by: String,
    /// When the claim was taken, in unix milliseconds.
    pub at_ms: i64,
}

impl Claim {
    fn encode(&self) -> String {
        format!("{}|{}|{}", self.state.as_str(), self.by, self.at_ms)
    }

    fn decode(s: &str) -> Option<Claim> {
        let mut parts = s.splitn(3, '|');
        let state = RequestState::parse(parts.next()?)?;
        let by = parts.next()?.to_string();
        let at_ms = parts.next()?.parse().ok()?;
        Some(Claim { state, by, at_ms })
    }

    /// True while the claim still holds: a replica that crashed mid-press leaves one behind,
    /// and it must not block the request forever.
    pub fn is_live(&self, now_ms: i64, ttl_ms: i64) -> bool {
        now_ms - self.at_ms < ttl_ms
    }
}

/// Why a press may not decide the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimRefused {
    /// Another press (or a double click) is deciding it right now.
    Deciding(Claim),
    /// It is decided already; `by` is who pressed, when known.
    Decided {
        /// The state it was decided to.
        state: RequestState,
        /// Who decided it through a button, if anyone.
        by: Option<String>,
    },
}

/// Decoded plugin data of one access request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginData {
    /// Requesting user.
    pub user: String,
    /// Requested roles.
    pub roles: Vec<String>,
    /// The requester's reason.
    pub request_reason: String,
    /// Reviews already replied to in every thread.
    pub reviews_count: usize,
    /// Final state, once known.
    pub resolution: Option<RequestState>,
    /// The resolver's reason.
    pub resolve_reason: String,
    /// Posts made, one per channel.
    pub messages: Vec<MessageRef>,
    /// Posts being made.
    pub inflight: Vec<Intent>,
    /// Channels that already have the reply for review `reviews_count`.
    pub replied: Vec<String>,
    /// Who resolved through a button (`@alice`), if anyone.
    pub resolved_by: String,
    /// The state that press set.
    pub resolved_as: Option<RequestState>,
    /// The resolution the messages were edited to show.
    pub edited: Option<RequestState>,
    /// Who the edited messages name as having acted (empty: nobody).
    pub edited_by: String,
    /// A press deciding the request right now.
    pub claim: Option<Claim>,
    /// How many reviews the posts' progress line shows.
    pub reviews_shown: usize,
    /// Notes made once ([`KEY_NOTES`]).
    pub notes: Vec<String>,
}

fn split_list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|s| !s.is_empty())
}

impl PluginData {
    /// Fresh data for a request seen for the first time.
    pub fn for_request(request: &AccessRequest) -> Self {
        Self {
            user: request.user.clone(),
            roles: request.roles.clone(),
            request_reason: request.request_reason.clone(),
            ..Self::default()
        }
    }

    /// Decodes Teleport's map; unknown keys are ignored and malformed items skipped.
    pub fn decode(map: &HashMap<String, String>) -> Self {
        let get = |k: &str| map.get(k).map(String::as_str).unwrap_or("");
        Self {
            user: get(KEY_USER).to_string(),
            roles: split_list(get(KEY_ROLES)).map(str::to_string).collect(),
            request_reason: get(KEY_REQUEST_REASON).to_string(),
            reviews_count: get(KEY_REVIEWS_COUNT).parse().unwrap_or(0),
            resolution: RequestState::parse(get(KEY_RESOLUTION)),
            resolve_reason: get(KEY_RESOLVE_REASON).to_string(),
            messages: split_list(get(KEY_MESSAGES))
                .filter_map(|item| {
                    let (channel_id, post_id) = item.split_once('/')?;
                    Some(MessageRef {
                        channel_id: channel_id.to_string(),
                        post_id: post_id.to_string(),
                    })
                })
                .collect(),
            inflight: split_list(get(KEY_INFLIGHT))
                .filter_map(|item| {
                    let (slot, since) = item.rsplit_once('@')?;
                    Some(Intent {
                        slot: Slot::decode(slot)?,
                        since_ms: since.parse().ok()?,
                    })
                })
                .collect(),
            replied: split_list(get(KEY_REPLIED)).map(str::to_string).collect(),
            resolved_by: get(KEY_RESOLVED_BY).to_string(),
            resolved_as: RequestState::parse(get(KEY_RESOLVED_AS)),
            edited: RequestState::parse(get(KEY_EDITED).split('|').next().unwrap_or("")),
            edited_by: get(KEY_EDITED)
                .split_once('|')
                .map(|(_, by)| by.to_string())
                .unwrap_or_default(),
            claim: Claim::decode(get(KEY_CLAIM)),
            reviews_shown: get(KEY_REVIEWS_SHOWN).parse().unwrap_or(0),
            notes: split_list(get(KEY_NOTES)).map(str::to_string).collect(),
        }
    }

    /// Encodes every key, empty values included, so cleared keys are deleted.
    pub fn encode(&self) -> HashMap<String, String> {
        let join = |items: Vec<String>| items.join(",");
        let state = |s: Option<RequestState>| s.map(|s| s.as_str().to_string()).unwrap_or_default();
        HashMap::from([
            (KEY_USER.into(), self.user.clone()),
            (KEY_ROLES.into(), self.roles.join(",")),
            (KEY_REQUEST_REASON.into(), self.request_reason.clone()),
            (
                KEY_REVIEWS_COUNT.into(),
                match self.reviews_count {
                    0 => String::new(),
                    n => n.to_string(),
                },
            ),
            (KEY_RESOLUTION.into(), state(self.resolution)),
            (KEY_RESOLVE_REASON.into(), self.resolve_reason.clone()),
            (
                KEY_MESSAGES.into(),
                join(
                    self.messages
                        .iter()
                        .map(|m| format!("{}/{}", m.channel_id, m.post_id))
                        .collect(),
                ),
            ),
            (
                KEY_INFLIGHT.into(),
                join(
                    self.inflight
                        .iter()
                        .map(|i| format!("{}@{}", i.slot.encode(), i.since_ms))
                        .collect(),
                ),
            ),
            (KEY_REPLIED.into(), self.replied.join(",")),
            (KEY_RESOLVED_BY.into(), self.resolved_by.clone()),
            (KEY_RESOLVED_AS.into(), state(self.resolved_as)),
            (
                KEY_EDITED.into(),
                match (self.edited, self.edited_by.is_empty()) {
                    (Some(s), false) => format!("{}|{}", s.as_str(), self.edited_by),
                    (edited, _) => state(edited),
                },
            ),
            (
                KEY_CLAIM.into(),
                self.claim.as_ref().map(Claim::encode).unwrap_or_default(),
            ),
            (
                KEY_REVIEWS_SHOWN.into(),
                match self.reviews_shown {
                    0 => String::new(),
                    n => n.to_string(),
                },
            ),
            (KEY_NOTES.into(), self.notes.join(",")),
        ])
    }

    /// True for a record another plugin made and has not posted yet: the request's fields, but
    /// none of ours (our first write always carries the intents to post) and no messages.
    /// Teleport's own Mattermost plugin creates it before it posts, so seeing it means that
    /// plugin is handling the request right now.
    pub fn is_someone_elses_fresh_record(&self) -> bool {
        self.messages.is_empty()
            && self.inflight.is_empty()
            && self.resolution.is_none()
            && self.replied.is_empty()
            && self.edited.is_none()
            && self.claim.is_none()
            && self.resolved_by.is_empty()
            && self.reviews_shown == 0
            && self.notes.is_empty()
    }

    /// True when the note `tag` was made in `channel_id`.
    pub fn noted(&self, channel_id: &str, tag: &str) -> bool {
        let item = format!("{channel_id}/{tag}");
        self.notes.contains(&item)
    }

    /// True when the note `tag` was made in any channel.
    pub fn noted_any(&self, tag: &str) -> bool {
        let suffix = format!("/{tag}");
        self.notes.iter().any(|n| n.ends_with(&suffix))
    }

    /// Records that the note `tag` exists in `channel_id` and drops its intent.
    pub fn record_note(&mut self, channel_id: &str, tag: &str) {
        let slot = Slot::Note {
            channel_id: channel_id.to_string(),
            tag: tag.to_string(),
        };
        self.inflight.retain(|i| i.slot != slot);
        if !self.noted(channel_id, tag) {
            self.notes.push(format!("{channel_id}/{tag}"));
        }
    }

    /// True once the requester was found to have no Mattermost account.
    pub fn requester_unknown(&self) -> bool {
        self.notes.iter().any(|n| n == REQUESTER_UNKNOWN)
    }

    /// Records that the requester has no Mattermost account: they are not looked up again.
    pub fn mark_requester_unknown(&mut self) {
        if !self.requester_unknown() {
            self.notes.push(REQUESTER_UNKNOWN.to_string());
        }
    }

    /// The post in a channel, if one was recorded.
    pub fn message_in(&self, channel_id: &str) -> Option<&MessageRef> {
        self.messages.iter().find(|m| m.channel_id == channel_id)
    }

    /// The recorded intent for a slot, if any.
    pub fn intent(&self, slot: &Slot) -> Option<&Intent> {
        self.inflight.iter().find(|i| &i.slot == slot)
    }

    /// Records intents for slots that have none yet; returns true when anything changed.
    pub fn add_intents<'a>(
        &mut self,
        slots: impl IntoIterator<Item = &'a Slot>,
        now_ms: i64,
    ) -> bool {
        let mut changed = false;
        for slot in slots {
            if self.intent(slot).is_none() {
                self.inflight.push(Intent {
                    slot: slot.clone(),
                    since_ms: now_ms,
                });
                changed = true;
            }
        }
        changed
    }

    /// Records a post made (or adopted) for a root slot and drops its intent.
    pub fn record_message(&mut self, message: MessageRef) {
        let slot = Slot::Root {
            channel_id: message.channel_id.clone(),
        };
        self.inflight.retain(|i| i.slot != slot);
        if self.message_in(&message.channel_id).is_none() {
            self.messages.push(message);
        }
    }

    /// Records that the reply for review `index` exists in a channel's thread and drops its intent.
    /// Once every message has it, the review counts as replied.
    pub fn record_reply(&mut self, channel_id: &str, index: usize) {
        if index != self.reviews_count {
            return;
        }
        let slot = Slot::Reply {
            channel_id: channel_id.to_string(),
            index,
        };
        self.inflight.retain(|i| i.slot != slot);
        if !self.replied.iter().any(|c| c == channel_id) {
            self.replied.push(channel_id.to_string());
        }
        if self
            .messages
            .iter()
            .all(|m| self.replied.contains(&m.channel_id))
        {
            self.reviews_count += 1;
            self.replied.clear();
        }
    }

    /// Records the state Teleport reports. An approval, denial or promotion always wins, so
    /// the posts follow Teleport even through a revocation (APPROVED → DENIED); an expiry
    /// (the request deleted) is recorded only when nothing else was. Returns true when the
    /// resolution changed.
    pub fn resolve(&mut self, state: RequestState, reason: &str) -> bool {
        let changed = match state {
            RequestState::Expired => self.resolution.is_none(),
            s if s.is_resolved() => self.resolution != Some(s),
            _ => false,
        };
        if changed {
            self.resolution = Some(state);
            self.resolve_reason = reason.to_string();
        }
        changed
    }

    /// Who produced the recorded resolution, as Teleport's own resolve reason says (a press
    /// writes "Approved by Mattermost user @alice …"): never the holder of a claim, whose
    /// press may have failed while someone decided in tctl or the web UI. None when the
    /// decision came from elsewhere (tctl, the web UI, expiry, a revocation).
    pub fn actor(&self) -> Option<String> {
        crate::review::reason::decided_by(self.resolution?, &self.resolve_reason)
    }

    /// True when messages still need editing to show the resolution and who acted.
    pub fn needs_edit(&self) -> bool {
        self.resolution.is_some()
            && (self.edited != self.resolution
                || self.edited_by != self.actor().unwrap_or_default())
            && !self.messages.is_empty()
    }

    /// Records that every message now shows the resolution and its actor.
    pub fn mark_edited(&mut self) {
        self.edited = self.resolution;
        self.edited_by = self.actor().unwrap_or_default();
    }

    /// Takes the decision for a press by `by` to `state`, unless a live claim or an earlier
    /// decision stands in the way.
    pub fn claim(
        &mut self,
        state: RequestState,
        by: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<Claim, ClaimRefused> {
        if let Some(resolution) = self.resolution {
            return Err(ClaimRefused::Decided {
                state: resolution,
                by: self.actor(),
            });
        }
        if !self.resolved_by.is_empty() {
            return Err(ClaimRefused::Decided {
                state: self.resolved_as.unwrap_or(RequestState::Approved),
                by: Some(self.resolved_by.clone()),
            });
        }
        if let Some(claim) = self.claim.as_ref().filter(|c| c.is_live(now_ms, ttl_ms)) {
            return Err(ClaimRefused::Deciding(claim.clone()));
        }
        let claim = Claim {
            state,
            by: by.to_string(),
            at_ms: now_ms,
        };
        self.claim = Some(claim.clone());
        Ok(claim)
    }

    /// Drops `claim` if it is still the one held (the press failed or found nothing to do).
    pub fn release(&mut self, claim: &Claim) -> bool {
        if self.claim.as_ref() == Some(claim) {
            self.claim = None;
            true
        } else {
            false
        }
    }

    /// Records that the press holding `claim` changed the request in Teleport.
    pub fn record_decision(&mut self, claim: &Claim) {
        self.release(claim);
        self.resolved_by = claim.by.clone();
        self.resolved_as = Some(claim.state);
    }

    /// A request rebuilt from the stored fields, for rendering edits after Teleport deleted it.
    pub fn as_request(&self, id: &str) -> AccessRequest {
        AccessRequest {
            id: id.to_string(),
            user: self.user.clone(),
            roles: self.roles.clone(),
            state: self.resolution.unwrap_or(RequestState::Pending),
            request_reason: self.request_reason.clone(),
            resolve_reason: self.resolve_reason.clone(),
            ..AccessRequest::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn decodes_data_written_by_teleports_go_plugin() {
        let data = PluginData::decode(&map(&[
            ("user", "bob"),
            ("roles", "admin,dba"),
            ("request_reason", "prod fix"),
            ("reviews_count", "2"),
            ("resolution", "APPROVED"),
            ("resolve_reason", "ok"),
            ("messages", "chan1/post1,chan2/post2"),
        ]));
        assert_eq!(data.user, "bob");
        assert_eq!(data.roles, vec!["admin", "dba"]);
        assert_eq!(data.reviews_count, 2);
        assert_eq!(data.resolution, Some(RequestState::Approved));
        assert_eq!(
            data.messages,
            vec![
                MessageRef {
                    channel_id: "chan1".into(),
                    post_id: "post1".into()
                },
                MessageRef {
                    channel_id: "chan2".into(),
                    post_id: "post2".into()
                }
            ]
        );
        assert!(data.inflight.is_empty());
    }

    #[test]
    fn encodes_teleport_key_names_and_formats() {
        let mut data = PluginData {
            user: "bob".into(),
            roles: vec!["admin".into(), "dba".into()],
            request_reason: "why".into(),
            ..Default::default()
        };
        data.record_message(MessageRef {
            channel_id: "c1".into(),
            post_id: "p1".into(),
        });
        data.resolve(RequestState::Denied, "nope");
        let m = data.encode();
        assert_eq!(m["user"], "bob");
        assert_eq!(m["roles"], "admin,dba");
        assert_eq!(m["request_reason"], "why");
        assert_eq!(m["reviews_count"], "");
        assert_eq!(m["resolution"], "DENIED");
        assert_eq!(m["resolve_reason"], "nope");
        assert_eq!(m["messages"], "c1/p1");
        let keys: Vec<_> = ALL_KEYS.iter().map(|k| k.to_string()).collect();
        for k in m.keys() {
            assert!(keys.contains(k), "unexpected key {k}");
        }
        assert_eq!(m.len(), ALL_KEYS.len());
    }

    #[test]
    fn round_trips_intents_and_replies() {
        let mut data = PluginData::default();
        let root = Slot::Root {
            channel_id: "c1".into(),
        };
        let reply = Slot::Reply {
            channel_id: "c2".into(),
            index: 3,
        };
        assert!(data.add_intents([&root, &reply], 1_700_000_000_123));
        assert!(!data.add_intents([&root], 5), "existing intent is kept");
        data.replied = vec!["c9".into()];
        data.edited = Some(RequestState::Expired);
        data.edited_by = "@bob".into();
        data.resolved_by = "@alice".into();
        data.resolved_as = Some(RequestState::Approved);
        let back = PluginData::decode(&data.encode());
        assert_eq!(back, data);
        assert_eq!(back.intent(&reply).unwrap().since_ms, 1_700_000_000_123);
    }

    #[test]
    fn recording_a_message_clears_its_intent() {
        let mut data = PluginData::default();
        let slot = Slot::Root {
            channel_id: "c1".into(),
        };
        data.add_intents([&slot], 10);
        data.record_message(MessageRef {
            channel_id: "c1".into(),
            post_id: "p1".into(),
        });
        assert!(data.intent(&slot).is_none());
        data.record_message(MessageRef {
            channel_id: "c1".into(),
            post_id: "p2".into(),
        });
        assert_eq!(data.messages.len(), 1, "one post per channel");
    }

    #[test]
    fn review_counts_once_every_thread_has_its_reply() {
        let mut data = PluginData::default();
        for c in ["c1", "c2"] {
            data.record_message(MessageRef {
                channel_id: c.into(),
                post_id: format!("p-{c}"),
            });
        }
        data.record_reply("c1", 0);
        assert_eq!(data.reviews_count, 0);
        assert_eq!(data.replied, vec!["c1"]);
        data.record_reply("c1", 0);
        assert_eq!(data.replied, vec!["c1"], "idempotent");
        data.record_reply("c2", 0);
        assert_eq!(data.reviews_count, 1);
        assert!(data.replied.is_empty());
        data.record_reply("c1", 0);
        assert_eq!(data.reviews_count, 1, "a stale reply index is ignored");
    }

    #[test]
    fn teleports_state_wins_and_an_expiry_never_overwrites_a_decision() {
        let mut data = PluginData::default();
        assert!(data.resolve(RequestState::Approved, "lgtm"));
        assert!(!data.resolve(RequestState::Approved, "lgtm"), "unchanged");
        assert!(!data.resolve(RequestState::Expired, ""));
        assert_eq!(data.resolution, Some(RequestState::Approved));
        assert!(
            data.resolve(RequestState::Denied, "revoked"),
            "a revocation (APPROVED -> DENIED) is followed"
        );
        assert_eq!(data.resolution, Some(RequestState::Denied));
        assert_eq!(data.resolve_reason, "revoked");
        assert!(!PluginData::default().resolve(RequestState::Pending, ""));
        let mut expired = PluginData::default();
        assert!(expired.resolve(RequestState::Expired, ""));
    }

    #[test]
    fn one_claim_at_a_time_and_none_after_a_decision() {
        let ttl = 60_000;
        let mut data = PluginData::default();
        let alice = data
            .claim(RequestState::Approved, "@alice", 1_000, ttl)
            .unwrap();
        assert_eq!(
            data.claim(RequestState::Denied, "@carol", 2_000, ttl),
            Err(ClaimRefused::Deciding(alice.clone())),
            "a concurrent press is told who is deciding"
        );
        assert_eq!(
            data.claim(RequestState::Approved, "@alice", 2_000, ttl),
            Err(ClaimRefused::Deciding(alice.clone())),
            "a double click does not act twice"
        );
        let back = PluginData::decode(&data.encode());
        assert_eq!(back.claim, Some(alice.clone()), "the claim round-trips");

        data.record_decision(&alice);
        assert_eq!(data.claim, None);
        assert_eq!(
            data.claim(RequestState::Denied, "@carol", 3_000, ttl),
            Err(ClaimRefused::Decided {
                state: RequestState::Approved,
                by: Some("@alice".into())
            })
        );
    }

    #[test]
    fn a_claim_left_by_a_crashed_replica_expires_and_a_stale_release_is_ignored() {
        let ttl = 60_000;
        let mut data = PluginData::default();
        let old = data
            .claim(RequestState::Approved, "@alice", 0, ttl)
            .unwrap();
        let new = data
            .claim(RequestState::Denied, "@carol", ttl, ttl)
            .expect("expired claims do not block");
        assert!(
            !data.release(&old),
            "the old holder cannot release the new claim"
        );
        assert_eq!(data.claim, Some(new.clone()));
        assert!(data.release(&new));
        assert_eq!(data.claim, None);
    }

    #[test]
    fn the_actor_is_who_teleports_reason_says_decided_never_a_claim() {
        let mut data = PluginData::default();
        let claim = data
            .claim(RequestState::Approved, "@alice", 0, 60_000)
            .unwrap();
        // Approved in tctl while alice's press still held its claim.
        data.resolve(RequestState::Approved, "approved by the on-call admin");
        assert_eq!(data.actor(), None, "the claim holder did not decide");
        data.record_decision(&claim);
        assert_eq!(data.actor(), None, "nor after recording her press");
        let mut pressed = PluginData::default();
        pressed.resolve(
            RequestState::Approved,
            "Approved by Mattermost user @alice (alice@example.com) via the Mattermost plugin",
        );
        assert_eq!(pressed.actor().as_deref(), Some("@alice"));
        pressed.resolve(RequestState::Denied, "revoked with tctl");
        assert_eq!(pressed.actor(), None, "a revocation is not alice's");
    }

    #[test]
    fn needs_edit_until_edited_matches_resolution() {
        let mut data = PluginData::default();
        data.resolve(RequestState::Denied, "");
        assert!(!data.needs_edit(), "nothing posted, nothing to edit");
        data.record_message(MessageRef {
            channel_id: "c".into(),
            post_id: "p".into(),
        });
        assert!(data.needs_edit());
        data.mark_edited();
        assert!(!data.needs_edit());
        data.resolve_reason = "Denied by Mattermost user @alice via the Mattermost plugin".into();
        assert!(data.needs_edit(), "the posts must name who acted");
        data.mark_edited();
        assert_eq!(data.edited_by, "@alice");
        assert!(!data.needs_edit());
        assert_eq!(PluginData::decode(&data.encode()), data);
    }

    #[test]
    fn malformed_items_are_skipped() {
        let data = PluginData::decode(&map(&[
            ("messages", "nochannel,,c/p"),
            ("mm_inflight", "c1@notanumber,c2@5,/rx@1"),
            ("reviews_count", "x"),
        ]));
        assert_eq!(data.messages.len(), 1);
        assert_eq!(data.inflight.len(), 1);
        assert_eq!(data.reviews_count, 0);
    }

    #[test]
    fn notes_and_their_intents_round_trip_and_are_recorded_once() {
        let mut data = PluginData::default();
        let note = Slot::Note {
            channel_id: "dm1".into(),
            tag: "APPROVED".into(),
        };
        let reminder = Slot::Note {
            channel_id: "chan".into(),
            tag: "remind2".into(),
        };
        data.add_intents([&note, &reminder], 5);
        let back = PluginData::decode(&data.encode());
        assert_eq!(back.intent(&note).map(|i| i.since_ms), Some(5));
        assert_eq!(
            back.intent(&reminder).map(|i| i.slot.clone()),
            Some(reminder.clone())
        );
        let mut data = back;
        data.record_note("dm1", "APPROVED");
        data.record_note("dm1", "APPROVED");
        assert_eq!(data.notes, vec!["dm1/APPROVED".to_string()]);
        assert!(data.intent(&note).is_none(), "recording drops the intent");
        assert!(data.noted("dm1", "APPROVED") && data.noted_any("APPROVED"));
        assert!(!data.noted_any("DENIED"));
        data.mark_requester_unknown();
        data.mark_requester_unknown();
        let back = PluginData::decode(&data.encode());
        assert!(back.requester_unknown());
        assert_eq!(back.notes.len(), 2);
        assert!(
            !back.is_someone_elses_fresh_record(),
            "notes are ours: the record is not another plugin's"
        );
    }
}
