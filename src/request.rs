//! The access request as the bridge sees it: a plain model decoded from Teleport's wire types.

use chrono::{DateTime, Utc};

use crate::teleport::wire::types;

/// Go's zero `time.Time`, which gogoproto sends for unset non-nullable timestamps.
const GO_ZERO_TIME_SECONDS: i64 = -62_135_596_800;

/// Lifecycle state of an access request, plus `Expired` for requests Teleport deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RequestState {
    /// Unknown or unset state on the wire.
    #[default]
    None,
    /// Waiting for reviews.
    Pending,
    /// Approved; the user may assume the roles.
    Approved,
    /// Denied.
    Denied,
    /// Promoted to an access list.
    Promoted,
    /// Deleted by Teleport (expired) before it was resolved.
    Expired,
}

impl RequestState {
    /// Converts Teleport's `types.RequestState` enum value.
    pub fn from_wire(value: i32) -> Self {
        match types::RequestState::try_from(value) {
            Ok(types::RequestState::Pending) => Self::Pending,
            Ok(types::RequestState::Approved) => Self::Approved,
            Ok(types::RequestState::Denied) => Self::Denied,
            Ok(types::RequestState::Promoted) => Self::Promoted,
            _ => Self::None,
        }
    }

    /// The wire value; `Expired` has no wire form and maps to `NONE`.
    pub fn to_wire(self) -> types::RequestState {
        match self {
            Self::Pending => types::RequestState::Pending,
            Self::Approved => types::RequestState::Approved,
            Self::Denied => types::RequestState::Denied,
            Self::Promoted => types::RequestState::Promoted,
            Self::None | Self::Expired => types::RequestState::None,
        }
    }

    /// The name used in plugin data `resolution` and in messages (`APPROVED`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Pending => "PENDING",
            Self::Approved => "APPROVED",
            Self::Denied => "DENIED",
            Self::Promoted => "PROMOTED",
            Self::Expired => "EXPIRED",
        }
    }

    /// Parses a name written by [`RequestState::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "PENDING" => Self::Pending,
            "APPROVED" => Self::Approved,
            "DENIED" => Self::Denied,
            "PROMOTED" => Self::Promoted,
            "EXPIRED" => Self::Expired,
            _ => return None,
        })
    }

    /// True for every final state.
    pub fn is_resolved(self) -> bool {
        matches!(
            self,
            Self::Approved | Self::Denied | Self::Promoted | Self::Expired
        )
    }
}

/// One reviewer's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Review {
    /// Teleport user who reviewed.
    pub author: String,
    /// The state this review proposes (approved or denied).
    pub proposed_state: RequestState,
    /// Free-text reason, possibly empty.
    pub reason: String,
    /// When the review was submitted.
    pub created: Option<DateTime<Utc>>,
}

/// An access request, decoded from `types.AccessRequestV3`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccessRequest {
    /// Request id (`Metadata.Name`).
    pub id: String,
    /// Requesting Teleport user.
    pub user: String,
    /// Requested roles.
    pub roles: Vec<String>,
    /// Current state.
    pub state: RequestState,
    /// Creation time.
    pub created: Option<DateTime<Utc>>,
    /// When the pending request itself expires.
    pub expires: Option<DateTime<Utc>>,
    /// The requester's reason.
    pub request_reason: String,
    /// The resolver's reason.
    pub resolve_reason: String,
    /// Reviews so far, oldest first.
    pub reviews: Vec<Review>,
    /// Teleport users suggested as reviewers (usually emails).
    pub suggested_reviewers: Vec<String>,
    /// Resources asked for (a resource request), as `cluster/kind/name[/sub]`.
    pub resources: Vec<String>,
    /// How long the access may last at most, as an end time (`MaxDuration`).
    pub max_duration: Option<DateTime<Utc>>,
    /// When the sessions the access allows end (`SessionTTL`).
    pub session_ttl: Option<DateTime<Utc>>,
}

impl AccessRequest {
    /// True for a long-term request (Teleport v18+, `RequestKind` LONG_TERM).
    // Until the wire model carries `RequestKind` (field 24), no request is long-term.
    pub fn is_long_term(&self) -> bool {
        false
    }
}

/// Converts a protobuf timestamp, treating a missing or Go-zero one as unset.
pub fn timestamp(ts: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    let ts = ts?;
    if ts.seconds == GO_ZERO_TIME_SECONDS || (ts.seconds == 0 && ts.nanos == 0) {
        return None;
    }
    DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).unwrap_or(0))
}

/// Converts a time to a protobuf timestamp.
pub fn to_timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

impl From<&types::AccessRequestV3> for AccessRequest {
    fn from(wire: &types::AccessRequestV3) -> Self {
        let id = wire
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let spec = wire.spec.clone().unwrap_or_default();
        AccessRequest {
            id,
            user: spec.user,
            roles: spec.roles,
            state: RequestState::from_wire(spec.state),
            created: timestamp(spec.created.as_ref()),
            expires: timestamp(spec.expires.as_ref()),
            request_reason: spec.request_reason,
            resolve_reason: spec.resolve_reason,
            reviews: spec
                .reviews
                .iter()
                .map(|r| Review {
                    author: r.author.clone(),
                    proposed_state: RequestState::from_wire(r.proposed_state),
                    reason: r.reason.clone(),
                    created: timestamp(r.created.as_ref()),
                })
                .collect(),
            suggested_reviewers: spec.suggested_reviewers,
            resources: spec
                .requested_resource_i_ds
                .iter()
                .map(|r| {
                    let mut id = format!("{}/{}/{}", r.cluster_name, r.kind, r.name);
                    if !r.sub_resource_name.is_empty() {
                        id.push('/');
                        id.push_str(&r.sub_resource_name);
                    }
                    id
                })
                .collect(),
            max_duration: timestamp(spec.max_duration.as_ref()),
            session_ttl: timestamp(spec.session_ttl.as_ref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_zero_and_missing_timestamps_are_unset() {
        let zero = prost_types::Timestamp {
            seconds: GO_ZERO_TIME_SECONDS,
            nanos: 0,
        };
        assert_eq!(timestamp(Some(&zero)), None);
        assert_eq!(timestamp(None), None);
        let real = prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 5,
        };
        assert_eq!(timestamp(Some(&real)).unwrap().timestamp(), 1_700_000_000);
    }

    #[test]
    fn state_names_round_trip() {
        for s in [
            RequestState::Pending,
            RequestState::Approved,
            RequestState::Denied,
            RequestState::Promoted,
            RequestState::Expired,
        ] {
            assert_eq!(RequestState::parse(s.as_str()), Some(s));
        }
        assert!(!RequestState::Pending.is_resolved());
        assert!(RequestState::Expired.is_resolved());
    }

    #[test]
    fn decodes_wire_request() {
        let wire = types::AccessRequestV3 {
            kind: "access_request".into(),
            metadata: Some(types::Metadata {
                name: "req-1".into(),
                ..Default::default()
            }),
            spec: Some(types::AccessRequestSpecV3 {
                user: "bob".into(),
                roles: vec!["admin".into()],
                state: types::RequestState::Denied as i32,
                reviews: vec![types::AccessReview {
                    author: "alice".into(),
                    proposed_state: types::RequestState::Denied as i32,
                    reason: "no".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = AccessRequest::from(&wire);
        assert_eq!(r.id, "req-1");
        assert_eq!(r.state, RequestState::Denied);
        assert_eq!(r.reviews[0].proposed_state, RequestState::Denied);
    }
}
