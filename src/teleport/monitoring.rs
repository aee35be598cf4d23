//! The Teleport calls behind access monitoring rules: listing the rules, and the facts a
//! condition may read that the request does not carry (the requester's traits, the requested
//! resources' labels).
//!
//! Teleport's plugin (`integrations/access/accessmonitoring/access_monitoring_rules.go`) lists
//! with `ListAccessMonitoringRulesWithFilter`, 1,000 per page, `subjects = [access_request]`
//! and `notification_name = <plugin name>`; reads traits with `GetUserOrLoginState`; and reads
//! labels with `ListResources` and `UsePreviewAsRoles` (`api/accessrequest`
//! `GetResourcesByResourceIDs`).

use std::collections::BTreeMap;

use tonic::Code;

use super::client::TeleportClient;
use super::error::{TeleportError, rpc};
use crate::access_monitoring::{ACCESS_REQUEST_SUBJECT, Rule};
use crate::request::RequestedResource;
use crate::teleport::wire::proto;
use crate::teleport::wire::teleport::accessmonitoringrules::v1 as amr;
use crate::teleport::wire::teleport::users::v1 as users;

/// The resource kind of access monitoring rules in watches and events.
pub const KIND_ACCESS_MONITORING_RULE: &str = "access_monitoring_rule";

/// Rules per page, as Teleport's plugin asks.
pub const RULE_PAGE_SIZE: i64 = 1000;

/// Pages followed at most: 1,000 pages of 1,000 rules is far beyond any real cluster, and a
/// server that keeps answering with a page token must not keep the plugin listing forever.
const MAX_PAGES: usize = 1000;

/// The role rules the plugin's Teleport user needs for access monitoring rules, in the words of
/// a Teleport role (the preset `access-plugin` role grants the first two; the third is what
/// `access-plugin-with-review` adds).
pub const ROLE_RULES: &str = "`access_monitoring_rule: [list, read]` (the rules), `user: [read]` \
     (`user.traits`), and `review_requests.preview_as_roles` naming a role that may list the \
     requested nodes, apps, databases, Kubernetes clusters and desktops \
     (`resource_labels_union` / `_intersection`), as Teleport's preset `access-plugin` and \
     `access-plugin-with-review` roles do";

/// What the plugin's Teleport role does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "Teleport refused to let the plugin {what} ({detail}); access monitoring rules need the \
     plugin's role to allow {ROLE_RULES}"
)]
pub struct MonitoringPermission {
    /// What was refused, e.g. "list access monitoring rules".
    pub what: &'static str,
    /// Teleport's message.
    pub detail: String,
}

/// Why a rule call failed.
#[derive(Debug, thiserror::Error)]
pub enum MonitoringError {
    /// The role lacks a permission: the plugin routes without what it could not read.
    #[error(transparent)]
    Permission(#[from] MonitoringPermission),
    /// The server has no such service (Teleport before v15 for rules).
    #[error("Teleport {call} is not available on this server ({detail})")]
    NotSupported {
        /// The call.
        call: &'static str,
        /// Teleport's message.
        detail: String,
    },
    /// Anything else (retry).
    #[error(transparent)]
    Teleport(#[from] TeleportError),
}

fn classify(
    call: &'static str,
    what: &'static str,
) -> impl FnOnce(tonic::Status) -> MonitoringError {
    move |status| match status.code() {
        Code::PermissionDenied => MonitoringError::Permission(MonitoringPermission {
            what,
            detail: status.message().to_owned(),
        }),
        Code::Unimplemented => MonitoringError::NotSupported {
            call,
            detail: status.message().to_owned(),
        },
        _ => MonitoringError::Teleport(rpc(call)(status)),
    }
}

/// A rule as plain data, from the wire.
pub fn rule_from_wire(rule: &amr::AccessMonitoringRule) -> Rule {
    let metadata = rule.metadata.clone().unwrap_or_default();
    let spec = rule.spec.clone().unwrap_or_default();
    let notification = spec.notification.unwrap_or_default();
    Rule {
        name: metadata.name,
        revision: metadata.revision,
        subjects: spec.subjects,
        states: spec.states,
        condition: spec.condition,
        notification_name: notification.name,
        recipients: notification.recipients,
    }
}

/// Every requested resource kind `ListResources` can show, and the resource type to ask for
/// (`api/types` `MapResourceKindToListResourcesType`).
fn list_type(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "node" => "node",
        "app" => "app_server",
        "db" => "db_server",
        "kube_cluster" => "kube_cluster",
        "windows_desktop" => "windows_desktop",
        _ => return None,
    })
}

/// `resource.metadata.name == "a" || …`, as Teleport's `anyNameMatcher` builds it.
fn any_name(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("resource.metadata.name == {n:?}"))
        .collect::<Vec<_>>()
        .join(" || ")
}

/// A resource's static labels, as Teleport's `GetAllLabels` combines them: an app or database
/// server's own labels, overlaid with those of the app or database it serves
/// (`api/types/appserver.go`, `databaseserver.go`). Dynamic (command) labels are not read.
fn labels_of(resource: proto::PaginatedResource) -> Option<BTreeMap<String, String>> {
    use proto::paginated_resource::Resource;
    let (own, served) = match resource.resource? {
        Resource::Node(r) => (r.metadata, None),
        Resource::WindowsDesktop(r) => (r.header.and_then(|h| h.metadata), None),
        Resource::KubeCluster(r) => (r.metadata, None),
        Resource::AppServer(r) => (
            r.metadata,
            r.spec.and_then(|s| s.app).and_then(|a| a.metadata),
        ),
        Resource::DatabaseServer(r) => (
            r.metadata,
            r.spec.and_then(|s| s.database).and_then(|d| d.metadata),
        ),
    };
    if own.is_none() && served.is_none() {
        return None;
    }
    let mut labels: BTreeMap<String, String> = own
        .map(|m| m.labels.into_iter().collect())
        .unwrap_or_default();
    labels.extend(served.into_iter().flat_map(|m| m.labels));
    Some(labels)
}

/// The result of listing rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleListing {
    /// The rules that address this plugin's name (the server filters; the rule set checks again).
    Rules(Vec<Rule>),
    /// The server has no access monitoring rules (v13, v14): what it said.
    NotSupported(String),
}

impl TeleportClient {
    /// Every access monitoring rule for `plugin_name`, page by page.
    pub async fn list_access_monitoring_rules(
        &self,
        plugin_name: &str,
    ) -> Result<RuleListing, MonitoringError> {
        let mut client =
            amr::access_monitoring_rules_service_client::AccessMonitoringRulesServiceClient::new(
                self.channel.clone(),
            )
            .max_decoding_message_size(64 * 1024 * 1024);
        let mut rules = Vec::new();
        let mut token = String::new();
        for _ in 0..MAX_PAGES {
            let request = amr::ListAccessMonitoringRulesWithFilterRequest {
                page_size: RULE_PAGE_SIZE,
                page_token: token.clone(),
                subjects: vec![ACCESS_REQUEST_SUBJECT.to_owned()],
                notification_name: plugin_name.to_owned(),
                automatic_review_name: String::new(),
            };
            let page = match client
                .list_access_monitoring_rules_with_filter(request)
                .await
                .map_err(classify(
                    "ListAccessMonitoringRulesWithFilter",
                    "list access monitoring rules",
                )) {
                Ok(page) => page.into_inner(),
                Err(MonitoringError::NotSupported { detail, .. }) => {
                    return Ok(RuleListing::NotSupported(detail));
                }
                Err(e) => return Err(e),
            };
            rules.extend(page.rules.iter().map(rule_from_wire));
            if page.next_page_token.is_empty() {
                return Ok(RuleListing::Rules(rules));
            }
            token = page.next_page_token;
        }
        tracing::warn!(
            pages = MAX_PAGES,
            "Teleport kept paging access monitoring rules; using the rules read so far"
        );
        Ok(RuleListing::Rules(rules))
    }

    /// The requester's traits (`user.traits`), from `teleport.users.v1.UsersService.GetUser`.
    /// A user Teleport does not know has none.
    pub async fn user_traits(
        &self,
        user: &str,
    ) -> Result<BTreeMap<String, Vec<String>>, MonitoringError> {
        let mut client = users::users_service_client::UsersServiceClient::new(self.channel.clone());
        let request = users::GetUserRequest {
            name: user.to_owned(),
            ..Default::default()
        };
        let response = match client.get_user(request).await {
            Ok(r) => r.into_inner(),
            Err(status) if status.code() == Code::NotFound => return Ok(BTreeMap::new()),
            Err(status) => return Err(classify("GetUser", "read users (user.traits)")(status)),
        };
        Ok(response
            .user
            .and_then(|u| u.spec)
            .and_then(|s| s.traits)
            .map(|t| t.values.into_iter().map(|(k, v)| (k, v.values)).collect())
            .unwrap_or_default())
    }

    /// The labels of each requested resource that `ListResources` shows through the plugin's
    /// `preview_as_roles` (one map per resource found; resources of other kinds and of leaf
    /// clusters contribute none).
    pub async fn resource_labels(
        &self,
        resources: &[RequestedResource],
    ) -> Result<Vec<BTreeMap<String, String>>, MonitoringError> {
        let mut by_type: BTreeMap<&'static str, Vec<&str>> = BTreeMap::new();
        for r in resources {
            if let Some(t) = list_type(&r.kind) {
                by_type.entry(t).or_default().push(&r.name);
            }
        }
        let mut out = Vec::new();
        for (resource_type, names) in by_type {
            let mut start_key = String::new();
            for _ in 0..MAX_PAGES {
                let request = proto::ListResourcesRequest {
                    resource_type: resource_type.to_owned(),
                    limit: names.len().clamp(1, 1000) as i32,
                    start_key: start_key.clone(),
                    predicate_expression: any_name(&names),
                    use_preview_as_roles: true,
                    ..Default::default()
                };
                let page = self
                    .inner
                    .clone()
                    .list_resources(request)
                    .await
                    .map_err(classify(
                        "ListResources",
                        "list the requested resources (resource labels)",
                    ))?
                    .into_inner();
                out.extend(page.resources.into_iter().filter_map(labels_of));
                if page.next_key.is_empty() {
                    break;
                }
                start_key = page.next_key;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_matched_as_teleport_builds_the_predicate() {
        assert_eq!(
            any_name(&["a", "b\"c"]),
            r#"resource.metadata.name == "a" || resource.metadata.name == "b\"c""#
        );
    }

    #[test]
    fn the_permission_error_names_every_role_rule() {
        let e = MonitoringPermission {
            what: "read users (user.traits)",
            detail: "access denied".into(),
        };
        let text = e.to_string();
        for needed in [
            "access_monitoring_rule: [list, read]",
            "user: [read]",
            "preview_as_roles",
        ] {
            assert!(text.contains(needed), "{text}");
        }
    }
}
