//! The double's access monitoring rules, users and resources (Teleport v15+).
//!
//! Follows Teleport's sources:
//! - `lib/services/local/access_monitoring_rules.go` and
//!   `lib/auth/accessmonitoringrules/accessmonitoringrulesv1/service.go`:
//!   `ListAccessMonitoringRulesWithFilter` pages by `page_size`/`page_token` and keeps the
//!   rules whose subjects include one of `subjects` and whose notification name is
//!   `notification_name` (when given);
//! - `lib/services/watcher.go` / `lib/services/local/events.go`: with `AllowPartialSuccess`, a
//!   kind the server does not know is left out of the INIT `WatchStatus`; without it, the whole
//!   watch is refused (`BadParameter`, gRPC `InvalidArgument`); a rule arrives as oneof 54 on
//!   PUT and DELETE;
//! - `lib/auth/users/usersv1/service.go` `GetUser`; `lib/auth/auth_with_roles.go`
//!   `ListResources` with `UsePreviewAsRoles`.

use std::collections::BTreeMap;

use teleport_mattermost::teleport::wire::proto::{self, Operation, event};
use teleport_mattermost::teleport::wire::teleport::accessmonitoringrules::v1 as amr;
use teleport_mattermost::teleport::wire::teleport::header::v1 as header;
use teleport_mattermost::teleport::wire::teleport::users::v1 as users;
use teleport_mattermost::teleport::wire::{types, wrappers};
use tonic::{Request, Response, Status};

use super::{Inner, Rpc, State, TeleportDouble};

/// The access monitoring rule kind.
pub const KIND_RULE: &str = "access_monitoring_rule";

/// How the double treats access monitoring rules: the Teleport generations seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RuleSupport {
    /// v15+: the watch confirms the kind, the service lists rules.
    #[default]
    Served,
    /// v13/v14: a partial-success watch confirms only `access_request`; the rules service and
    /// `users.v1` answer Unimplemented.
    V13,
    /// A server that refuses the whole watch when it names the rule kind (and has no rules
    /// service).
    RefusesWatch,
    /// The watch confirms the kind but the list answers Unimplemented.
    WatchOnly,
}

/// A rule to create with [`TeleportDouble::put_rule`].
#[derive(Debug, Clone)]
pub struct NewRule {
    /// `metadata.name`.
    pub name: String,
    /// `spec.subjects`.
    pub subjects: Vec<String>,
    /// `spec.condition`.
    pub condition: String,
    /// `spec.notification.name`.
    pub notification: String,
    /// `spec.notification.recipients`.
    pub recipients: Vec<String>,
}

impl NewRule {
    /// A rule for the `mattermost` plugin about access requests.
    pub fn new(name: &str, condition: &str, recipients: &[&str]) -> Self {
        Self {
            name: name.into(),
            subjects: vec!["access_request".into()],
            condition: condition.into(),
            notification: "mattermost".into(),
            recipients: recipients.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// The double's AMR state.
#[derive(Debug, Default)]
pub(super) struct AmrState {
    pub(super) support: RuleSupport,
    pub(super) rules: BTreeMap<String, amr::AccessMonitoringRule>,
    pub(super) revision: u64,
    pub(super) traits: BTreeMap<String, BTreeMap<String, Vec<String>>>,
    /// (kind, name) → labels.
    pub(super) resources: BTreeMap<(String, String), BTreeMap<String, String>>,
    /// Every `ListAccessMonitoringRulesWithFilter` request, for the tests.
    pub(super) list_requests: Vec<amr::ListAccessMonitoringRulesWithFilterRequest>,
    /// Every `ListResources` request.
    pub(super) resource_requests: Vec<proto::ListResourcesRequest>,
}

impl State {
    fn emit_rule(&mut self, op: Operation, rule: amr::AccessMonitoringRule) {
        let event = proto::Event {
            r#type: op as i32,
            resource: Some(event::Resource::AccessMonitoringRule(rule)),
        };
        self.rule_watchers
            .retain(|tx| tx.send(Ok(event.clone())).is_ok());
    }
}

impl TeleportDouble {
    /// Plays a Teleport generation for access monitoring rules.
    pub fn set_rule_support(&self, support: RuleSupport) {
        self.inner.lock().amr.support = support;
    }

    /// Creates or replaces a rule, with a new revision, and tells rule watches (PUT).
    pub fn put_rule(&self, rule: NewRule) {
        let mut state = self.inner.lock();
        state.amr.revision += 1;
        let wire = amr::AccessMonitoringRule {
            metadata: Some(header::Metadata {
                name: rule.name.clone(),
                revision: format!("rev-{}", state.amr.revision),
                ..Default::default()
            }),
            kind: KIND_RULE.into(),
            version: "v1".into(),
            spec: Some(amr::AccessMonitoringRuleSpec {
                subjects: rule.subjects,
                condition: rule.condition,
                notification: Some(amr::Notification {
                    name: rule.notification,
                    recipients: rule.recipients,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        state.amr.rules.insert(rule.name, wire.clone());
        state.emit_rule(Operation::Put, wire);
    }

    /// Deletes a rule and tells rule watches (DELETE, carrying the rule's header).
    pub fn delete_rule(&self, name: &str) {
        let mut state = self.inner.lock();
        if let Some(rule) = state.amr.rules.remove(name) {
            let header_only = amr::AccessMonitoringRule {
                metadata: rule.metadata,
                kind: KIND_RULE.into(),
                ..Default::default()
            };
            state.emit_rule(Operation::Delete, header_only);
        }
    }

    /// Sets a user's traits (what `GetUser` answers).
    pub fn set_user_traits(&self, user: &str, traits: &[(&str, &[&str])]) {
        self.inner.lock().amr.traits.insert(
            user.into(),
            traits
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect(),
        );
    }

    /// Registers a resource (`node`, `kube_cluster`, `windows_desktop`, `app`, `db`) with
    /// labels.
    pub fn add_resource(&self, kind: &str, name: &str, labels: &[(&str, &str)]) {
        self.inner.lock().amr.resources.insert(
            (kind.into(), name.into()),
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
    }

    /// Every rule list request so far.
    pub fn rule_list_requests(&self) -> Vec<amr::ListAccessMonitoringRulesWithFilterRequest> {
        self.inner.lock().amr.list_requests.clone()
    }

    /// Every `ListResources` request so far.
    pub fn resource_requests(&self) -> Vec<proto::ListResourcesRequest> {
        self.inner.lock().amr.resource_requests.clone()
    }
}

/// What a watch asking for `kinds` gets: `Err` to refuse it, else the confirmed kinds and
/// whether rule events go to it.
pub(super) fn watch_kinds(
    state: &State,
    kinds: Vec<types::WatchKind>,
    partial: bool,
) -> Result<(Vec<types::WatchKind>, bool), Status> {
    let wants_rules = kinds.iter().any(|k| k.kind == KIND_RULE);
    if !wants_rules {
        return Ok((kinds, false));
    }
    match state.amr.support {
        RuleSupport::Served | RuleSupport::WatchOnly => Ok((kinds, true)),
        RuleSupport::V13 if partial => Ok((
            kinds.into_iter().filter(|k| k.kind != KIND_RULE).collect(),
            false,
        )),
        RuleSupport::V13 | RuleSupport::RefusesWatch => Err(Status::invalid_argument(format!(
            "watcher does not support kind {KIND_RULE:?}"
        ))),
    }
}

pub(super) struct RulesService(pub(super) std::sync::Arc<Inner>);

#[tonic::async_trait]
impl amr::access_monitoring_rules_service_server::AccessMonitoringRulesService for RulesService {
    async fn list_access_monitoring_rules_with_filter(
        &self,
        request: Request<amr::ListAccessMonitoringRulesWithFilterRequest>,
    ) -> Result<Response<amr::ListAccessMonitoringRulesWithFilterResponse>, Status> {
        let mut state = self.0.begin(Rpc::ListAccessMonitoringRules, &request)?;
        let filter = request.into_inner();
        state.amr.list_requests.push(filter.clone());
        if state.amr.support != RuleSupport::Served {
            return Err(Status::unimplemented(
                "unknown service teleport.accessmonitoringrules.v1.AccessMonitoringRulesService",
            ));
        }
        let matching: Vec<&amr::AccessMonitoringRule> = state
            .amr
            .rules
            .values()
            .filter(|r| {
                let spec = r.spec.clone().unwrap_or_default();
                let subject = filter.subjects.is_empty()
                    || spec.subjects.iter().any(|s| filter.subjects.contains(s));
                let name = filter.notification_name.is_empty()
                    || spec.notification.as_ref().map(|n| n.name.as_str())
                        == Some(filter.notification_name.as_str());
                subject && name
            })
            .collect();
        let start: usize = filter.page_token.parse().unwrap_or(0);
        let size = filter.page_size.clamp(1, 1000) as usize;
        let page: Vec<_> = matching
            .iter()
            .skip(start)
            .take(size)
            .map(|r| (*r).clone())
            .collect();
        let next = if start + size < matching.len() {
            (start + size).to_string()
        } else {
            String::new()
        };
        Ok(Response::new(
            amr::ListAccessMonitoringRulesWithFilterResponse {
                rules: page,
                next_page_token: next,
            },
        ))
    }
}

pub(super) struct UsersService(pub(super) std::sync::Arc<Inner>);

#[tonic::async_trait]
impl users::users_service_server::UsersService for UsersService {
    async fn get_user(
        &self,
        request: Request<users::GetUserRequest>,
    ) -> Result<Response<users::GetUserResponse>, Status> {
        let state = self.0.begin(Rpc::GetUser, &request)?;
        if state.amr.support == RuleSupport::V13 {
            return Err(Status::unimplemented(
                "unknown service teleport.users.v1.UsersService",
            ));
        }
        let name = request.into_inner().name;
        let Some(traits) = state.amr.traits.get(&name) else {
            return Err(Status::not_found(format!("user {name:?} is not found")));
        };
        let traits = wrappers::LabelValues {
            values: traits
                .iter()
                .map(|(k, v)| (k.clone(), wrappers::StringValues { values: v.clone() }))
                .collect(),
        };
        Ok(Response::new(users::GetUserResponse {
            user: Some(types::UserV2 {
                kind: "user".into(),
                version: "v2".into(),
                metadata: Some(types::Metadata {
                    name,
                    ..Default::default()
                }),
                spec: Some(types::UserSpecV2 {
                    traits: Some(traits),
                }),
                ..Default::default()
            }),
        }))
    }
}

/// The names a `resource.metadata.name == "a" || …` predicate asks for.
fn predicate_names(predicate: &str) -> Vec<String> {
    predicate
        .split("||")
        .filter_map(|part| {
            let value = part.split("==").nth(1)?.trim();
            serde_json::from_str::<String>(value).ok()
        })
        .collect()
}

/// The metadata of the service serving an app or database: the resource's name, and a label
/// of the server itself, which Teleport's `GetAllLabels` (and so the plugin) counts among the
/// resource's labels too.
fn service_metadata(name: &str) -> types::Metadata {
    types::Metadata {
        name: name.to_owned(),
        labels: [("teleport.internal/service".to_owned(), "agent-1".to_owned())].into(),
        ..Default::default()
    }
}

/// `ListResources`, for the kinds the plugin reads labels of.
pub(super) fn list_resources(
    state: &mut State,
    request: proto::ListResourcesRequest,
) -> Result<proto::ListResourcesResponse, Status> {
    state.amr.resource_requests.push(request.clone());
    let kind = match request.resource_type.as_str() {
        "node" | "kube_cluster" | "windows_desktop" => request.resource_type.clone(),
        "app_server" => "app".to_owned(),
        "db_server" => "db".to_owned(),
        other => {
            return Err(Status::invalid_argument(format!(
                "unsupported resource type {other:?}"
            )));
        }
    };
    let names = predicate_names(&request.predicate_expression);
    let resources = state
        .amr
        .resources
        .iter()
        .filter(|((k, n), _)| *k == kind && (names.is_empty() || names.contains(n)))
        .map(|((k, n), labels)| {
            use proto::paginated_resource::Resource;
            let metadata = Some(types::Metadata {
                name: n.clone(),
                labels: labels.clone().into_iter().collect(),
                ..Default::default()
            });
            let resource = match k.as_str() {
                "node" => Resource::Node(types::ServerV2 {
                    kind: "node".into(),
                    metadata,
                    ..Default::default()
                }),
                "kube_cluster" => Resource::KubeCluster(types::KubernetesClusterV3 {
                    kind: "kube_cluster".into(),
                    metadata,
                    ..Default::default()
                }),
                // An app or database arrives as the service serving it: the server carries
                // the service's own labels, the app or database its labels
                // (`api/types/appserver.go`, `databaseserver.go`).
                "app" => Resource::AppServer(types::AppServerV3 {
                    kind: "app_server".into(),
                    metadata: Some(service_metadata(n)),
                    spec: Some(types::AppServerSpecV3 {
                        app: Some(types::AppV3 {
                            kind: "app".into(),
                            metadata,
                            ..Default::default()
                        }),
                    }),
                    ..Default::default()
                }),
                "db" => Resource::DatabaseServer(types::DatabaseServerV3 {
                    kind: "db_server".into(),
                    metadata: Some(service_metadata(n)),
                    spec: Some(types::DatabaseServerSpecV3 {
                        database: Some(types::DatabaseV3 {
                            kind: "db".into(),
                            metadata,
                            ..Default::default()
                        }),
                    }),
                    ..Default::default()
                }),
                _ => Resource::WindowsDesktop(types::WindowsDesktopV3 {
                    header: Some(types::ResourceHeader {
                        kind: "windows_desktop".into(),
                        version: "v3".into(),
                        metadata,
                        ..Default::default()
                    }),
                }),
            };
            proto::PaginatedResource {
                resource: Some(resource),
            }
        })
        .collect();
    Ok(proto::ListResourcesResponse {
        resources,
        ..Default::default()
    })
}
