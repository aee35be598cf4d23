//! The README's Access Monitoring Rules section: its example rule routes as it says, and the
//! keys it documents exist in the CRD and the standalone config.

use teleport_mattermost::access_monitoring::{RequestFacts, Rule, RuleSet};

fn section() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let start = readme
        .find("### Access Monitoring Rules")
        .expect("the README has an Access Monitoring Rules section");
    let rest = &readme[start..];
    let end = rest[4..].find("\n### ").map_or(rest.len(), |i| i + 4);
    rest[..end].to_string()
}

fn first_yaml(text: &str) -> String {
    let start = text.find("```yaml\n").expect("a yaml block") + 8;
    let end = text[start..].find("```").expect("closed") + start;
    text[start..end].to_string()
}

#[test]
fn the_readme_rule_routes_as_documented() {
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&first_yaml(&section())).unwrap();
    assert_eq!(doc["kind"], "access_monitoring_rule");
    let spec = &doc["spec"];
    let strings = |v: &serde_yaml_ng::Value| -> Vec<String> {
        v.as_sequence()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let rule = Rule {
        name: doc["metadata"]["name"].as_str().unwrap().into(),
        subjects: strings(&spec["subjects"]),
        condition: spec["condition"].as_str().unwrap().into(),
        notification_name: spec["notification"]["name"].as_str().unwrap().into(),
        recipients: strings(&spec["notification"]["recipients"]),
        ..Default::default()
    };
    let mut rules = RuleSet::new("mattermost", chrono_tz::Tz::UTC);
    rules.upsert(rule).expect("the README's condition parses");
    let dba = RequestFacts {
        roles: ["dba".to_string()].into(),
        ..Default::default()
    }
    .with_user_traits([("team", ["platform"])]);
    let routed = rules.recipients_for(&dba).expect("the example matches");
    assert!(routed.contains("security/access-alerts") && routed.contains("erin@example.com"));
    let other = RequestFacts {
        roles: ["editor".to_string()].into(),
        ..Default::default()
    };
    assert_eq!(rules.recipients_for(&other), None);
}

#[test]
fn the_documented_keys_exist() {
    let text = section();
    let crd = teleport_mattermost::operator::crd::crd_yaml();
    for key in [
        "pluginName",
        "timezone",
        "accessMonitoringRules",
        "brokenRules",
    ] {
        assert!(crd.contains(&format!("{key}:")), "the CRD has {key}");
    }
    for key in ["spec.teleport.pluginName", "spec.teleport.timezone"] {
        assert!(text.contains(key), "the README names {key}");
    }
    let template = teleport_mattermost::config::TEMPLATE;
    for key in ["plugin_name", "timezone"] {
        assert!(
            template.contains(&format!("# {key} = ")),
            "the template shows {key}"
        );
        assert!(
            text.contains(&format!("`[teleport] {key}`")),
            "the README names {key}"
        );
    }
    for reason in [
        "RulesActive",
        "RuleBroken",
        "NotSupported",
        "PermissionDenied",
        "FactsUnavailable",
    ] {
        assert!(text.contains(reason), "the README names {reason}");
    }
}
