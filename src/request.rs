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

/// What kind of access a request asks for (`AccessRequestSpecV3.RequestKind`, field 24, Teleport
/// v18+). `tsh` and `tctl` leave it `Undefined`; the Web UI sets `ShortTerm` ("temporary") or
/// `LongTerm` ("permanent": a place on an access list, by promotion).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RequestKind {
    /// Not set: every request before v18, and those made with `tsh` or `tctl`.
    #[default]
    Undefined,
    /// Temporary access.
    ShortTerm,
    /// Long-term access through an access list.
    LongTerm,
}

impl RequestKind {
    /// Converts Teleport's `types.AccessRequestKind` value; unknown values are `Undefined`.
    pub fn from_wire(value: i32) -> Self {
        match types::AccessRequestKind::try_from(value) {
            Ok(types::AccessRequestKind::ShortTerm) => Self::ShortTerm,
            Ok(types::AccessRequestKind::LongTerm) => Self::LongTerm,
            _ => Self::Undefined,
        }
    }

    /// Teleport's name for it (`UNDEFINED`, `SHORT_TERM`, `LONG_TERM`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Undefined => "UNDEFINED",
            Self::ShortTerm => "SHORT_TERM",
            Self::LongTerm => "LONG_TERM",
        }
    }
}

/// What a requested resource is narrowed to (`ResourceConstraints`, Teleport v18+).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourceConstraints {
    /// An AWS Console app, limited to these role ARNs (`aws_console`, 10).
    AwsConsole {
        /// The role ARNs asked for.
        role_arns: Vec<String>,
    },
    /// An SSH node, limited to these logins (`ssh`, 11).
    Ssh {
        /// The logins asked for.
        logins: Vec<String>,
    },
    /// Constraints of a kind this plugin does not know (a newer Teleport): they exist, but
    /// their details cannot be shown.
    Unknown,
}

/// One requested resource with its constraints.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestedResource {
    /// The cluster it is in.
    pub cluster: String,
    /// Its kind (`node`, `app`, `db`, `kube_cluster`, …).
    pub kind: String,
    /// Its name.
    pub name: String,
    /// A sub-resource (e.g. `namespace/pod`), empty when none.
    pub sub_resource: String,
    /// What it is narrowed to, when anything.
    pub constraints: Option<ResourceConstraints>,
}

impl RequestedResource {
    /// `cluster/kind/name[/sub]`, the form of [`AccessRequest::resources`].
    pub fn path(&self) -> String {
        let mut path = format!("{}/{}/{}", self.cluster, self.kind, self.name);
        if !self.sub_resource.is_empty() {
            path.push('/');
            path.push_str(&self.sub_resource);
        }
        path
    }

    fn from_id(id: &types::ResourceId, constraints: Option<ResourceConstraints>) -> Self {
        Self {
            cluster: id.cluster_name.clone(),
            kind: id.kind.clone(),
            name: id.name.clone(),
            sub_resource: id.sub_resource_name.clone(),
            constraints,
        }
    }
}

/// The access list a PROMOTED request went to (`accessList`, field 20).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PromotedAccessList {
    /// The access list's name (an id).
    pub name: String,
    /// Its title, as people know it.
    pub title: String,
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
    /// Resources asked for (a resource request), as `cluster/kind/name[/sub]`: the paths of
    /// [`requested_resources`](Self::requested_resources).
    pub resources: Vec<String>,
    /// Resources asked for, with their constraints: `RequestedResourceAccessIDs` (26) when the
    /// request has it (it is authoritative), else `RequestedResourceIDs` (14).
    pub requested_resources: Vec<RequestedResource>,
    /// Temporary or long-term (`RequestKind`, 24; v18+).
    pub kind: RequestKind,
    /// Auth attached a grouping of the resources by access list (`LongTermGrouping`, 25), which
    /// it does for long-term requests. Its contents are not decoded.
    pub long_term_grouping: bool,
    /// When the requested access may start, if the requester chose a later time
    /// (`AssumeStartTime`, 21).
    pub assume_start_time: Option<DateTime<Utc>>,
    /// When the pending request itself goes away unless resolved: `ResourceExpiry` (22), else
    /// `Metadata.Expires`.
    pub resource_expiry: Option<DateTime<Utc>>,
    /// The access list a PROMOTED request went to (`accessList`, 20).
    pub promoted_access_list: Option<PromotedAccessList>,
    /// How long the access may last at most, as an end time (`MaxDuration`).
    pub max_duration: Option<DateTime<Utc>>,
    /// When the sessions the access allows end (`SessionTTL`).
    pub session_ttl: Option<DateTime<Utc>>,
    /// Annotations Teleport attached from the requester's roles (`SystemAnnotations`, 9): what
    /// access monitoring rules read as `access_request.spec.system_annotations`.
    pub system_annotations: std::collections::BTreeMap<String, Vec<String>>,
}

impl AccessRequest {
    /// True for a long-term request (Teleport v18+, `RequestKind` LONG_TERM).
    pub fn is_long_term(&self) -> bool {
        self.kind == RequestKind::LongTerm
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
        let requested_resources = requested_resources(&spec);
        let system_annotations = spec
            .system_annotations
            .as_ref()
            .map(|a| {
                a.values
                    .iter()
                    .map(|(k, v)| (k.clone(), v.values.clone()))
                    .collect()
            })
            .unwrap_or_default();
        AccessRequest {
            system_annotations,
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
            resources: requested_resources
                .iter()
                .map(RequestedResource::path)
                .collect(),
            requested_resources,
            kind: RequestKind::from_wire(spec.request_kind),
            long_term_grouping: spec.long_term_grouping.is_some(),
            assume_start_time: timestamp(spec.assume_start_time.as_ref()),
            resource_expiry: timestamp(spec.resource_expiry.as_ref())
                .or_else(|| timestamp(wire.metadata.as_ref().and_then(|m| m.expires.as_ref()))),
            promoted_access_list: spec
                .access_list
                .as_ref()
                .filter(|l| !l.name.is_empty() || !l.title.is_empty())
                .map(|l| PromotedAccessList {
                    name: l.name.clone(),
                    title: l.title.clone(),
                }),
            max_duration: timestamp(spec.max_duration.as_ref()),
            session_ttl: timestamp(spec.session_ttl.as_ref()),
        }
    }
}

/// The requested resources: field 26 when present (Teleport's types.proto: "When present,
/// RequestedResourceAccessIDs should be treated as authoritative"), else field 14, which
/// servers before v18 send alone.
fn requested_resources(spec: &types::AccessRequestSpecV3) -> Vec<RequestedResource> {
    if spec.requested_resource_access_i_ds.is_empty() {
        return spec
            .requested_resource_i_ds
            .iter()
            .map(|id| RequestedResource::from_id(id, None))
            .collect();
    }
    spec.requested_resource_access_i_ds
        .iter()
        .map(|access| {
            let constraints = access.constraints.as_ref().map(|c| match &c.details {
                Some(types::resource_constraints::Details::AwsConsole(aws)) => {
                    ResourceConstraints::AwsConsole {
                        role_arns: aws.role_arns.clone(),
                    }
                }
                Some(types::resource_constraints::Details::Ssh(ssh)) => ResourceConstraints::Ssh {
                    logins: ssh.logins.clone(),
                },
                None => ResourceConstraints::Unknown,
            });
            RequestedResource::from_id(&access.id.clone().unwrap_or_default(), constraints)
        })
        .collect()
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

    fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    fn resource(kind: &str, name: &str) -> types::ResourceId {
        types::ResourceId {
            cluster_name: "prod".into(),
            kind: kind.into(),
            name: name.into(),
            sub_resource_name: String::new(),
        }
    }

    fn with_spec(spec: types::AccessRequestSpecV3) -> AccessRequest {
        AccessRequest::from(&types::AccessRequestV3 {
            metadata: Some(types::Metadata {
                name: "req-1".into(),
                expires: ts(1_800_003_600),
                ..Default::default()
            }),
            spec: Some(spec),
            ..Default::default()
        })
    }

    #[test]
    fn field_26_is_authoritative_over_field_14_and_carries_constraints() {
        let r = with_spec(types::AccessRequestSpecV3 {
            // A v18 server also fills 14; the two lists may differ in order or content.
            requested_resource_i_ds: vec![resource("node", "stale")],
            requested_resource_access_i_ds: vec![
                types::ResourceAccessId {
                    id: Some(resource("app", "aws-console")),
                    constraints: Some(types::ResourceConstraints {
                        version: "v1".into(),
                        details: Some(types::resource_constraints::Details::AwsConsole(
                            types::AwsConsoleResourceConstraints {
                                role_arns: vec!["arn:aws:iam::123:role/Admin".into()],
                            },
                        )),
                    }),
                },
                types::ResourceAccessId {
                    id: Some(types::ResourceId {
                        sub_resource_name: "default/web-0".into(),
                        ..resource("kube_cluster", "k1")
                    }),
                    constraints: None,
                },
            ],
            ..Default::default()
        });
        assert_eq!(
            r.resources,
            vec!["prod/app/aws-console", "prod/kube_cluster/k1/default/web-0"]
        );
        assert_eq!(
            r.requested_resources[0].constraints,
            Some(ResourceConstraints::AwsConsole {
                role_arns: vec!["arn:aws:iam::123:role/Admin".into()]
            })
        );
        assert_eq!(r.requested_resources[1].constraints, None);
        assert_eq!(r.requested_resources[1].sub_resource, "default/web-0");
    }

    #[test]
    fn without_field_26_the_resources_come_from_field_14() {
        let r = with_spec(types::AccessRequestSpecV3 {
            requested_resource_i_ds: vec![resource("node", "web-1")],
            ..Default::default()
        });
        assert_eq!(r.resources, vec!["prod/node/web-1"]);
        assert_eq!(r.requested_resources[0].constraints, None);
    }

    #[test]
    fn constraints_of_an_unknown_kind_are_kept_as_unknown() {
        // A newer Teleport's constraint kind decodes as a ResourceConstraints whose oneof
        // prost did not recognise.
        let r = with_spec(types::AccessRequestSpecV3 {
            requested_resource_access_i_ds: vec![types::ResourceAccessId {
                id: Some(resource("db", "pg")),
                constraints: Some(types::ResourceConstraints {
                    version: "v1".into(),
                    details: None,
                }),
            }],
            ..Default::default()
        });
        assert_eq!(
            r.requested_resources[0].constraints,
            Some(ResourceConstraints::Unknown)
        );
        let ssh = with_spec(types::AccessRequestSpecV3 {
            requested_resource_access_i_ds: vec![types::ResourceAccessId {
                id: Some(resource("node", "web-1")),
                constraints: Some(types::ResourceConstraints {
                    version: "v1".into(),
                    details: Some(types::resource_constraints::Details::Ssh(
                        types::SshResourceConstraints {
                            logins: vec!["root".into()],
                        },
                    )),
                }),
            }],
            ..Default::default()
        });
        assert_eq!(
            ssh.requested_resources[0].constraints,
            Some(ResourceConstraints::Ssh {
                logins: vec!["root".into()]
            })
        );
    }

    #[test]
    fn kind_start_time_pending_expiry_grouping_and_access_list_decode() {
        let r = with_spec(types::AccessRequestSpecV3 {
            request_kind: types::AccessRequestKind::LongTerm as i32,
            long_term_grouping: Some(types::LongTermResourceGrouping {}),
            assume_start_time: ts(1_800_000_600),
            resource_expiry: ts(1_800_007_200),
            state: types::RequestState::Promoted as i32,
            access_list: Some(types::PromotedAccessList {
                name: "0b5e…".into(),
                title: "Prod DBAs".into(),
            }),
            ..Default::default()
        });
        assert_eq!(r.kind, RequestKind::LongTerm);
        assert_eq!(r.kind.as_str(), "LONG_TERM");
        assert!(r.long_term_grouping);
        assert_eq!(r.assume_start_time.unwrap().timestamp(), 1_800_000_600);
        assert_eq!(r.resource_expiry.unwrap().timestamp(), 1_800_007_200);
        assert_eq!(r.state, RequestState::Promoted);
        assert_eq!(r.promoted_access_list.unwrap().title, "Prod DBAs");
    }

    #[test]
    fn an_old_servers_request_has_defaults_and_the_metadata_expiry() {
        // v13-v17: no kind, no 22, no 25, no access list.
        let r = with_spec(types::AccessRequestSpecV3::default());
        assert_eq!(r.kind, RequestKind::Undefined);
        assert!(!r.long_term_grouping);
        assert_eq!(r.assume_start_time, None);
        assert_eq!(
            r.resource_expiry.unwrap().timestamp(),
            1_800_003_600,
            "falls back to Metadata.Expires"
        );
        assert_eq!(r.promoted_access_list, None);
        assert_eq!(RequestKind::from_wire(7), RequestKind::Undefined);
        assert_eq!(
            RequestKind::from_wire(types::AccessRequestKind::ShortTerm as i32),
            RequestKind::ShortTerm
        );
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
