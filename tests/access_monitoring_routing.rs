//! Access monitoring rules end to end: the real bridge against the Teleport double serving
//! rules (or playing v13) and the Mattermost double.

use std::collections::BTreeMap;
use std::time::Duration;

use teleport_mattermost::request::RequestState;
use teleport_mattermost::rule_routing::reason;
use teleport_mattermost_testkit::mattermost::MattermostDouble;
use teleport_mattermost_testkit::stack::{Stack, StackOptions};
use teleport_mattermost_testkit::teleport::{NewRequest, NewRule, Rpc, RuleSupport};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(20);

/// erin (not in the plugin's channel) and the channel sec/alerts.
fn setup(mm: &MattermostDouble) {
    mm.add_user("erin", "erin@example.com");
    mm.add_team("sec");
    let alerts = mm.add_channel("sec", "alerts");
    mm.add_member(&alerts, &mm.bot_user_id());
}

fn dm(stack: &Stack, user: &str) -> String {
    stack.mattermost.dm_channel_id(
        &stack.mattermost.bot_user_id(),
        &stack.mattermost.user_id(user).unwrap(),
    )
}

fn alerts(stack: &Stack) -> String {
    // add_channel is idempotent: it returns the existing channel's id.
    stack.mattermost.add_channel("sec", "alerts")
}

fn rules_reason(stack: &Stack) -> String {
    stack
        .instance
        .status()
        .borrow()
        .access_monitoring
        .reason
        .clone()
}

async fn wait_reason(stack: &Stack, want: &str) {
    assert!(
        Stack::eventually(WAIT, || rules_reason(stack) == want).await,
        "status reason {:?}, want {want}",
        rules_reason(stack)
    );
}

/// Waits until the watch has delivered a rule change (the rule set has `n` rules).
async fn wait_rules(stack: &Stack, n: usize) {
    assert!(
        Stack::eventually(WAIT, || stack.instance.routing().rules().len() == n).await,
        "rule set never reached {n} rules"
    );
}

async fn posted_to(stack: &Stack, id: &str, n: usize) -> Vec<String> {
    assert!(
        Stack::eventually(WAIT, || stack.data(id).messages.len() == n).await,
        "request {id} posted to {:?}, want {n} posts",
        stack.data(id).messages
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut channels: Vec<String> = stack
        .data(id)
        .messages
        .iter()
        .map(|m| m.channel_id.clone())
        .collect();
    channels.sort();
    channels
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn a_rule_routes_to_a_user_and_a_channel_instead_of_role_recipients() {
    let stack = Stack::start_with(
        StackOptions {
            role_to_recipients: BTreeMap::from([(
                "dba".to_string(),
                vec!["carol@example.com".to_string()],
            )]),
            ..Default::default()
        },
        setup,
    )
    .await;
    wait_reason(&stack, reason::RULES_ACTIVE).await;
    stack.teleport.put_rule(NewRule::new(
        "dba-to-security",
        r#"access_request.spec.roles.contains("dba")"#,
        &["erin@example.com", "sec/alerts"],
    ));
    wait_rules(&stack, 1).await;
    let id = stack.teleport.create_request(NewRequest {
        suggested_reviewers: vec!["alice@example.com".into()],
        ..NewRequest::by("bob@example.com")
    });
    let got = posted_to(&stack, &id, 3).await;
    assert_eq!(
        got,
        sorted(vec![
            stack.channel_id.clone(),
            dm(&stack, "erin"),
            alerts(&stack)
        ]),
        "the plugin's channel, then the rule's recipients; neither carol (roleToRecipients) nor alice (suggested)"
    );
    // A request the rule does not match goes the old way.
    let other = stack.teleport.create_request(NewRequest {
        roles: vec!["editor".into()],
        ..NewRequest::by("bob@example.com")
    });
    let got = posted_to(&stack, &other, 1).await;
    assert_eq!(got, vec![stack.channel_id.clone()]);
    // The listing asked what Teleport's plugin asks.
    let list = stack.teleport.rule_list_requests();
    assert_eq!(list[0].page_size, 1000);
    assert_eq!(list[0].subjects, vec!["access_request".to_string()]);
    assert_eq!(list[0].notification_name, "mattermost");
}

#[tokio::test]
async fn rules_added_changed_and_deleted_while_requests_flow() {
    let stack = Stack::start_with(StackOptions::default(), setup).await;
    wait_reason(&stack, reason::RULES_ACTIVE).await;
    let first = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    assert_eq!(posted_to(&stack, &first, 1).await.len(), 1);

    stack
        .teleport
        .put_rule(NewRule::new("r", "true", &["sec/alerts"]));
    wait_rules(&stack, 1).await;
    let second = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    assert!(
        posted_to(&stack, &second, 2)
            .await
            .contains(&alerts(&stack))
    );

    // Changed: now to erin only.
    stack
        .teleport
        .put_rule(NewRule::new("r", "true", &["erin@example.com"]));
    assert!(
        Stack::eventually(WAIT, || stack
            .instance
            .routing()
            .rules()
            .get("r")
            .is_some_and(
                |r| r.rule().recipients == vec!["erin@example.com".to_string()]
            ))
        .await
    );
    let third = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    assert!(
        posted_to(&stack, &third, 2)
            .await
            .contains(&dm(&stack, "erin"))
    );
    // The change did not re-route the request posted before it.
    stack
        .teleport
        .review(&second, "alice@example.com", RequestState::Approved, "");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        stack
            .data(&second)
            .message_in(&dm(&stack, "erin"))
            .is_none()
    );

    stack.teleport.delete_rule("r");
    wait_rules(&stack, 0).await;
    let fourth = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    assert_eq!(
        posted_to(&stack, &fourth, 1).await,
        vec![stack.channel_id.clone()]
    );
}

#[tokio::test]
async fn a_broken_rule_is_skipped_and_reported_and_the_others_still_apply() {
    let stack = Stack::start_with(StackOptions::default(), setup).await;
    wait_reason(&stack, reason::RULES_ACTIVE).await;
    stack
        .teleport
        .put_rule(NewRule::new("good", "true", &["sec/alerts"]));
    stack.teleport.put_rule(NewRule::new(
        "broken",
        r#"access_request.spec.roles.contains("dba""#,
        &["erin@example.com"],
    ));
    wait_reason(&stack, reason::RULE_BROKEN).await;
    let report = stack.instance.status().borrow().access_monitoring.clone();
    assert_eq!(report.broken.len(), 1);
    assert_eq!(report.broken[0].name, "broken");
    assert!(!report.broken[0].revision.is_empty());
    assert!(report.broken[0].error.contains("column"), "{report:?}");
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    let got = posted_to(&stack, &id, 2).await;
    assert!(got.contains(&alerts(&stack)));
    assert!(!got.contains(&dm(&stack, "erin")));
    // Fixed: the report clears.
    stack
        .teleport
        .put_rule(NewRule::new("broken", "false", &["erin@example.com"]));
    wait_reason(&stack, reason::RULES_ACTIVE).await;
}

#[tokio::test]
async fn traits_and_labels_are_read_once_per_request_and_only_when_a_rule_reads_them() {
    let stack = Stack::start_with(StackOptions::default(), setup).await;
    wait_reason(&stack, reason::RULES_ACTIVE).await;
    // No rule reads traits or labels: no calls.
    stack.teleport.put_rule(NewRule::new(
        "roles",
        r#"access_request.spec.roles.contains("nothing")"#,
        &["sec/alerts"],
    ));
    wait_rules(&stack, 1).await;
    let plain = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    posted_to(&stack, &plain, 1).await;
    assert_eq!(stack.teleport.calls(Rpc::GetUser), 0);
    assert_eq!(stack.teleport.calls(Rpc::ListResources), 0);

    stack
        .teleport
        .set_user_traits("bob@example.com", &[("team", &["db"])]);
    stack
        .teleport
        .add_resource("node", "db-1", &[("env", "prod")]);
    stack.teleport.put_rule(NewRule::new(
        "traits",
        r#"contains_any(user.traits["team"], set("db")) && access_request.spec.resource_labels_intersection["env"].contains("prod")"#,
        &["erin@example.com"],
    ));
    wait_rules(&stack, 2).await;
    let id = stack.teleport.create_request(NewRequest {
        resources: vec![teleport_mattermost::request::RequestedResource {
            cluster: "test-cluster".into(),
            kind: "node".into(),
            name: "db-1".into(),
            sub_resource: String::new(),
            constraints: None,
        }],
        ..NewRequest::by("bob@example.com")
    });
    assert!(
        posted_to(&stack, &id, 2)
            .await
            .contains(&dm(&stack, "erin"))
    );
    // Reviews make the engine plan the request again: the routing is remembered.
    stack
        .teleport
        .review(&id, "alice@example.com", RequestState::Approved, "");
    stack
        .teleport
        .review(&id, "carol@example.com", RequestState::Approved, "");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(stack.teleport.calls(Rpc::GetUser), 1);
    assert_eq!(stack.teleport.calls(Rpc::ListResources), 1);
    let asked = &stack.teleport.resource_requests()[0];
    assert!(asked.use_preview_as_roles);
    assert_eq!(asked.resource_type, "node");
}

/// Apps and databases come back from `ListResources` as the service serving them: their labels
/// are the served app's or database's, with the server's own (Teleport's `GetAllLabels`). A
/// request for both an app and a database is matched by the union of their labels, and by the
/// intersection only on what they share.
#[tokio::test]
async fn labels_of_requested_apps_and_databases_route_by_union_and_intersection() {
    let stack = Stack::start_with(StackOptions::default(), |mm: &MattermostDouble| {
        setup(mm);
        mm.add_team("ops");
        let prod = mm.add_channel("ops", "prod");
        mm.add_member(&prod, &mm.bot_user_id());
    })
    .await;
    wait_reason(&stack, reason::RULES_ACTIVE).await;
    stack
        .teleport
        .add_resource("app", "grafana", &[("env", "prod"), ("team", "obs")]);
    stack
        .teleport
        .add_resource("db", "orders", &[("env", "prod"), ("team", "payments")]);
    stack.teleport.put_rule(NewRule::new(
        "payments-anywhere",
        r#"access_request.spec.resource_labels_union["team"].contains("payments")"#,
        &["erin@example.com"],
    ));
    stack.teleport.put_rule(NewRule::new(
        "all-payments",
        r#"access_request.spec.resource_labels_intersection["team"].contains("payments")"#,
        &["sec/alerts"],
    ));
    stack.teleport.put_rule(NewRule::new(
        "all-prod",
        r#"access_request.spec.resource_labels_intersection["env"].contains("prod")"#,
        &["ops/prod"],
    ));
    wait_rules(&stack, 3).await;
    let resource = |kind: &str, name: &str| teleport_mattermost::request::RequestedResource {
        cluster: "test-cluster".into(),
        kind: kind.into(),
        name: name.into(),
        sub_resource: String::new(),
        constraints: None,
    };
    let id = stack.teleport.create_request(NewRequest {
        resources: vec![resource("app", "grafana"), resource("db", "orders")],
        ..NewRequest::by("bob@example.com")
    });
    // Main channel, erin (union has team=payments), ops/prod (both are env=prod); not
    // sec/alerts (only one of them is team=payments).
    let channels = posted_to(&stack, &id, 3).await;
    assert_eq!(channels.len(), 3, "{channels:?}");
    assert!(channels.contains(&dm(&stack, "erin")), "{channels:?}");
    assert!(
        channels.contains(&stack.mattermost.add_channel("ops", "prod")),
        "{channels:?}"
    );
    assert!(!channels.contains(&alerts(&stack)), "{channels:?}");
    let mut asked: Vec<String> = stack
        .teleport
        .resource_requests()
        .iter()
        .map(|r| r.resource_type.clone())
        .collect();
    asked.sort();
    assert_eq!(asked, ["app_server", "db_server"]);
}

#[tokio::test]
async fn permission_denied_is_typed_in_the_status_and_requests_still_flow() {
    let stack = Stack::start_with(StackOptions::default(), setup).await;
    wait_reason(&stack, reason::RULES_ACTIVE).await;
    stack
        .teleport
        .fail_next(Rpc::ListAccessMonitoringRules, 1000, Code::PermissionDenied);
    stack.teleport.drop_watches();
    wait_reason(&stack, reason::PERMISSION_DENIED).await;
    let message = stack
        .instance
        .status()
        .borrow()
        .access_monitoring
        .message
        .clone();
    assert!(
        message.contains("access_monitoring_rule: [list, read]")
            && message.contains("user: [read]"),
        "{message}"
    );
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    assert_eq!(
        posted_to(&stack, &id, 1).await,
        vec![stack.channel_id.clone()]
    );
}

#[tokio::test]
async fn a_denied_trait_read_routes_without_traits_and_says_so() {
    let stack = Stack::start_with(StackOptions::default(), setup).await;
    wait_reason(&stack, reason::RULES_ACTIVE).await;
    stack
        .teleport
        .fail_next(Rpc::GetUser, 1000, Code::PermissionDenied);
    stack.teleport.put_rule(NewRule::new(
        "traits",
        r#"is_empty(user.traits["team"])"#,
        &["sec/alerts"],
    ));
    wait_rules(&stack, 1).await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    assert!(posted_to(&stack, &id, 2).await.contains(&alerts(&stack)));
    wait_reason(&stack, reason::FACTS_UNAVAILABLE).await;

    // The role is fixed: the next request that needs traits reads them, and the status clears.
    stack
        .teleport
        .fail_next(Rpc::GetUser, 0, Code::PermissionDenied);
    stack
        .teleport
        .set_user_traits("bob@example.com", &[("team", &["db"])]);
    let next = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    // bob has a team now: the rule no longer matches, so no post in sec/alerts.
    assert!(!posted_to(&stack, &next, 1).await.contains(&alerts(&stack)));
    wait_reason(&stack, reason::RULES_ACTIVE).await;
}

#[tokio::test]
async fn a_v13_server_turns_rules_off_and_requests_are_still_posted() {
    for support in [
        RuleSupport::V13,
        RuleSupport::RefusesWatch,
        RuleSupport::WatchOnly,
    ] {
        let stack = Stack::start_with(StackOptions::default(), setup).await;
        wait_reason(&stack, reason::RULES_ACTIVE).await;
        stack.teleport.set_rule_support(support);
        stack.teleport.drop_watches();
        wait_reason(&stack, reason::NOT_SUPPORTED).await;
        let id = stack
            .teleport
            .create_request(NewRequest::by("bob@example.com"));
        assert_eq!(
            posted_to(&stack, &id, 1).await,
            vec![stack.channel_id.clone()],
            "{support:?}"
        );
    }
}

#[tokio::test]
async fn a_rule_recipient_who_may_not_decide_gets_no_buttons() {
    let stack = Stack::start_with(
        StackOptions {
            approvers: vec!["alice".into()],
            ..Default::default()
        },
        setup,
    )
    .await;
    wait_reason(&stack, reason::RULES_ACTIVE).await;
    stack
        .teleport
        .put_rule(NewRule::new("all", "true", &["erin", "alice"]));
    wait_rules(&stack, 1).await;
    let id = stack
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    posted_to(&stack, &id, 3).await;
    let erin = stack.mattermost.posts_in(&dm(&stack, "erin"));
    let alice = stack.mattermost.posts_in(&dm(&stack, "alice"));
    assert!(!erin[0].has_buttons(), "a rule never grants press rights");
    assert!(alice[0].has_buttons(), "the approver's DM has buttons");
}
