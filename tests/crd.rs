//! The generated `MattermostAccessPlugin` CRD: drift against the committed YAML, a snapshot of
//! what the schema promises an admin, and the example CR checked against both the Rust types
//! and the schema.

use std::collections::BTreeSet;
use std::path::PathBuf;

use regex::Regex;
use serde_json::{Value, json};
use teleport_mattermost::operator::crd::{
    self, CALLBACK_HTTPS_MESSAGE, CALLBACK_HTTPS_RULE, MattermostAccessPlugin,
};
use teleport_mattermost::settings::Priority;

fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn crd_json() -> Value {
    serde_json::to_value(crd::crd()).expect("the CRD serializes")
}

/// `spec.versions[0].schema.openAPIV3Schema`.
fn root_schema() -> Value {
    crd_json()["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// The schema of the object at `path` (dot-separated property names from the root).
fn schema_at(path: &str) -> Value {
    let mut schema = root_schema();
    for key in path.split('.') {
        schema = schema["properties"][key].clone();
        assert!(!schema.is_null(), "no property {key} on the way to {path}");
    }
    schema
}

fn example_yaml() -> String {
    let path = repo_path("manifests/examples/mattermostaccessplugin.yaml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn committed_crd_yaml_matches_the_rust_types() {
    let path = repo_path("crds/mattermostaccessplugins.yaml");
    let generated = crd::crd_yaml();
    if std::env::var_os("UPDATE_CRD").is_some() {
        std::fs::write(&path, &generated).expect("write the CRD YAML");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is out of date with src/operator/crd.rs. Regenerate it with \
         `UPDATE_CRD=1 cargo test --test crd` or \
         `teleport-mattermost crd > crds/mattermostaccessplugins.yaml`, and commit it.",
        path.display()
    );
}

#[test]
fn crd_is_namespaced_with_short_name_mmap_and_a_status_subresource() {
    let crd = crd_json();
    assert_eq!(
        crd["metadata"]["name"],
        "mattermostaccessplugins.accessplugins.dev"
    );
    assert_eq!(crd["spec"]["group"], "accessplugins.dev");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    let names = &crd["spec"]["names"];
    assert_eq!(names["kind"], "MattermostAccessPlugin");
    assert_eq!(names["plural"], "mattermostaccessplugins");
    assert_eq!(names["shortNames"], json!(["mmap"]));
    let versions = crd["spec"]["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0]["name"], "v1alpha1");
    assert_eq!(versions[0]["served"], true);
    assert_eq!(versions[0]["storage"], true);
    assert_eq!(versions[0]["subresources"]["status"], json!({}));
}

#[test]
fn printer_columns_are_ready_team_channel_expires_age() {
    let columns = crd_json()["spec"]["versions"][0]["additionalPrinterColumns"].clone();
    let columns: Vec<(String, String, String)> = columns
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let field = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
            (field("name"), field("type"), field("jsonPath"))
        })
        .collect();
    let expected = [
        (
            "Ready",
            "string",
            r#".status.conditions[?(@.type=="Ready")].status"#,
        ),
        ("Team", "string", ".spec.mattermost.team"),
        ("Channel", "string", ".spec.mattermost.channel"),
        ("Expires", "string", ".status.identityExpiresAt"),
        ("Age", "date", ".metadata.creationTimestamp"),
    ]
    .map(|(n, t, p)| (n.to_owned(), t.to_owned(), p.to_owned()));
    assert_eq!(columns, expected);
}

#[test]
fn callback_requires_https_unless_insecure_http_is_allowed() {
    let callback = schema_at("spec.callback");
    assert_eq!(
        callback["x-kubernetes-validations"],
        json!([{ "rule": CALLBACK_HTTPS_RULE, "message": CALLBACK_HTTPS_MESSAGE }])
    );
    // The rule reads these two fields by their YAML names.
    assert!(CALLBACK_HTTPS_RULE.contains("self.publicURL.startsWith('https://')"));
    assert!(CALLBACK_HTTPS_RULE.contains("self.allowInsecureHTTP"));
    assert_eq!(
        callback["properties"]["allowInsecureHTTP"]["default"],
        false
    );
    assert!(callback["properties"]["publicURL"]["maxLength"].is_u64());
}

#[test]
fn required_fields_are_enforced_by_the_schema() {
    let required = |path: &str| -> BTreeSet<String> {
        let schema = if path.is_empty() {
            root_schema()
        } else {
            schema_at(path)
        };
        serde_json::from_value(schema["required"].clone()).unwrap_or_default()
    };
    let set = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(required("spec"), set(&["mattermost", "teleport"]));
    assert_eq!(
        required("spec.teleport"),
        set(&["address", "identitySecretRef"])
    );
    assert_eq!(required("spec.teleport.identitySecretRef"), set(&["name"]));
    assert_eq!(
        required("spec.mattermost"),
        set(&["channel", "team", "tokenSecretRef", "url"])
    );
    assert_eq!(required("spec.mattermost.tokenSecretRef"), set(&["name"]));
    assert_eq!(
        required("spec.callback"),
        set(&["publicURL", "signingSecretRef"])
    );
    assert_eq!(required("spec.callback.signingSecretRef"), set(&["name"]));
}

#[test]
fn secret_key_names_default_to_what_tctl_and_the_docs_produce() {
    let default = |path: &str| schema_at(path)["default"].clone();
    assert_eq!(
        default("spec.teleport.identitySecretRef.certKey"),
        "auth.crt"
    );
    assert_eq!(
        default("spec.teleport.identitySecretRef.keyKey"),
        "auth.key"
    );
    assert_eq!(
        default("spec.teleport.identitySecretRef.casKey"),
        "auth.cas"
    );
    assert_eq!(default("spec.mattermost.tokenSecretRef.key"), "token");
    assert_eq!(
        default("spec.callback.signingSecretRef.key"),
        "signingSecret"
    );
    assert_eq!(default("spec.mattermost.rateLimit.perSecond"), 100);
    assert_eq!(default("spec.mattermost.rateLimit.burst"), 100);
    assert_eq!(default("spec.suspend"), false);
}

#[test]
fn patterns_guard_addresses_urls_and_names() {
    let pattern = |path: &str| {
        let schema = schema_at(path);
        let pattern = schema["pattern"]
            .as_str()
            .unwrap_or_else(|| panic!("{path} has no pattern"));
        Regex::new(pattern).unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let address = pattern("spec.teleport.address");
    for ok in ["teleport.example.com:443", "10.0.0.5:3025", "[::1]:3025"] {
        assert!(address.is_match(ok), "{ok}");
    }
    for bad in [
        "teleport.example.com",
        "https://teleport.example.com:443",
        ":3025",
    ] {
        assert!(!address.is_match(bad), "{bad}");
    }

    let url = pattern("spec.mattermost.url");
    for ok in [
        "https://mm.example.com",
        "http://mm:8065/",
        "https://example.com/chat",
    ] {
        assert!(url.is_match(ok), "{ok}");
    }
    for bad in [
        "mm.example.com",
        "ftp://mm.example.com",
        "https://mm.example.com/?x=1",
    ] {
        assert!(!url.is_match(bad), "{bad}");
    }

    for field in ["team", "channel"] {
        let name = pattern(&format!("spec.mattermost.{field}"));
        assert!(name.is_match("access-requests_2"));
        for bad in ["Access-Requests", "town square", "", "~access"] {
            assert!(!name.is_match(bad), "{field} {bad:?}");
        }
    }

    let public_url = pattern("spec.callback.publicURL");
    assert!(public_url.is_match("https://cb.example.com/mattermost"));
    assert!(
        !public_url.is_match("https://cb.example.com/"),
        "trailing slash"
    );

    let secret_name = pattern("spec.teleport.identitySecretRef.name");
    assert!(secret_name.is_match("mm-teleport-identity"));
    assert!(!secret_name.is_match("MM_Identity"));
    let secret_key = pattern("spec.teleport.identitySecretRef.certKey");
    assert!(secret_key.is_match("auth.crt"));
    assert!(!secret_key.is_match("auth/crt"));
}

#[test]
fn recipient_and_approver_entries_must_not_be_empty() {
    for path in ["spec.recipients", "spec.approvers"] {
        let schema = schema_at(path);
        assert_eq!(schema["items"]["minLength"], 1, "{path}");
        assert!(schema["maxItems"].is_u64(), "{path}");
    }
    let per_role = schema_at("spec.roleToRecipients")["additionalProperties"].clone();
    assert_eq!(per_role["items"]["minLength"], 1);
    assert!(per_role["maxItems"].is_u64());
}

/// What `kubectl explain` shows an auditor: who may decide, and that nothing else grants it.
#[test]
fn the_approver_docs_state_the_authorization_model() {
    let approvers = schema_at("spec.approvers")["description"].clone();
    let approvers = approvers.as_str().unwrap();
    for promise in [
        "approverChannels",
        "only members of mattermost.channel may decide",
        "never gain the right by being messaged",
        "nobody may decide their own request",
    ] {
        assert!(
            approvers.contains(promise),
            "{promise:?} missing: {approvers}"
        );
    }
    let channels = schema_at("spec.approverChannels")["description"].clone();
    let channels = channels.as_str().unwrap();
    assert!(
        channels.contains("checked with Mattermost at every press"),
        "{channels}"
    );
    assert!(channels.contains("bot must be a member"), "{channels}");
    assert_eq!(
        schema_at("spec.approverChannels")["items"]["pattern"],
        teleport_mattermost::operator::crd::CHANNEL_REF_PATTERN
    );
    let suggested = schema_at("spec.suggestedReviewers.maxMessages").clone();
    assert_eq!(suggested["maximum"].as_f64(), Some(50.0));
    assert_eq!(suggested["default"], 10);
    assert!(
        suggested["description"]
            .as_str()
            .unwrap()
            .contains("channels come only from recipients and roleToRecipients")
    );
}

#[test]
fn status_conditions_merge_by_type() {
    let conditions = schema_at("status.conditions");
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
    let status = schema_at("status");
    for field in [
        "observedGeneration",
        "teleportClusterName",
        "teleportVersion",
        "identityExpiresAt",
        "pendingRequests",
        "lastEventTime",
        "approvalPolicy",
    ] {
        assert!(!status["properties"][field].is_null(), "status.{field}");
    }
    assert_eq!(
        status["properties"]["identityExpiresAt"]["format"],
        "date-time"
    );
}

#[test]
fn descriptions_are_unwrapped_for_kubectl_explain() {
    fn check(schema: &Value, path: &str) {
        if let Some(description) = schema["description"].as_str() {
            assert!(!description.contains('\n'), "{path}: {description:?}");
        }
        for (name, child) in schema["properties"].as_object().into_iter().flatten() {
            check(child, &format!("{path}.{name}"));
        }
        for key in ["items", "additionalProperties"] {
            if schema[key].is_object() {
                check(&schema[key], &format!("{path}[{key}]"));
            }
        }
    }
    check(&root_schema(), "");
    assert!(schema_at("spec.approvers")["description"].is_string());
}

/// The apiserver rejects a CRD whose schema is not structural: every node needs a type, and
/// no `$ref`, `anyOf`, `oneOf` or `allOf` may carry types of their own.
#[test]
fn schema_is_structural() {
    fn check(schema: &Value, path: &str) {
        let object = schema.as_object().unwrap_or_else(|| panic!("{path}"));
        for key in [
            "$ref",
            "anyOf",
            "oneOf",
            "allOf",
            "$schema",
            "definitions",
            "$defs",
        ] {
            assert!(!object.contains_key(key), "{path} has {key}");
        }
        let open = object.contains_key("x-kubernetes-preserve-unknown-fields")
            || object.contains_key("x-kubernetes-int-or-string");
        assert!(open || object.contains_key("type"), "{path} has no type");
        if let Some(Value::Object(properties)) = object.get("properties") {
            for (name, child) in properties {
                check(child, &format!("{path}.{name}"));
            }
        }
        for key in ["items", "additionalProperties"] {
            if let Some(child @ Value::Object(_)) = object.get(key) {
                check(child, &format!("{path}[{key}]"));
            }
        }
    }
    check(&root_schema(), "");
}

#[test]
fn example_cr_deserializes_with_defaults_applied() {
    let plugin: MattermostAccessPlugin =
        serde_yaml_ng::from_str(&example_yaml()).expect("the example is a MattermostAccessPlugin");
    assert_eq!(plugin.metadata.namespace.as_deref(), Some("teleport"));
    let spec = &plugin.spec;
    let identity = &spec.teleport.identity_secret_ref;
    assert_eq!(
        [&identity.cert_key, &identity.key_key, &identity.cas_key],
        ["auth.crt", "auth.key", "auth.cas"]
    );
    assert_eq!(identity.identity_file_key, None);
    assert_eq!(spec.mattermost.token_secret_ref.key, "token");
    let callback = spec.callback.as_ref().expect("the example has buttons");
    assert_eq!(callback.signing_secret_ref.key, "signingSecret");
    assert!(!callback.allow_insecure_http);
    assert!(spec.role_to_recipients.contains_key("*"));
    assert_eq!(
        spec.referenced_secrets().into_iter().collect::<Vec<_>>(),
        [
            "mm-bot-token",
            "mm-callback-signing",
            "mm-teleport-identity"
        ]
    );
    assert!(
        spec.approvers.is_empty() && spec.approver_channels.is_empty(),
        "the example leaves approvers commented out: the channel is the boundary"
    );
    assert!(
        spec.approval_policy()
            .starts_with("members of ~platform/access-requests"),
        "{}",
        spec.approval_policy()
    );
}

#[test]
fn example_cr_satisfies_the_schema() {
    let example: Value = serde_yaml_ng::from_str(&example_yaml()).unwrap();
    assert_eq!(example["apiVersion"], "accessplugins.dev/v1alpha1");
    assert_eq!(example["kind"], "MattermostAccessPlugin");
    let errors = validate(&root_schema(), &example, "");
    assert!(errors.is_empty(), "{errors:#?}");
}

/// The README's example resource (the yaml block under "### The custom resource").
fn readme_example_yaml() -> String {
    let readme = std::fs::read_to_string(repo_path("README.md")).unwrap();
    let section = readme
        .split_once("### The custom resource\n")
        .expect("the README has the custom resource section")
        .1;
    let block = section
        .split_once("```yaml\n")
        .expect("the section opens with a yaml block")
        .1;
    block.split_once("```").unwrap().0.to_owned()
}

#[test]
fn the_readmes_example_resource_satisfies_the_schema_field_by_field() {
    let example: Value = serde_yaml_ng::from_str(&readme_example_yaml()).unwrap();
    assert_eq!(example["kind"], "MattermostAccessPlugin");
    // Unknown fields are errors here (the apiserver would prune them without a word).
    let errors = validate(&root_schema(), &example, "");
    assert!(errors.is_empty(), "{errors:#?}");
    let plugin: MattermostAccessPlugin =
        serde_yaml_ng::from_value(serde_yaml_ng::from_str(&readme_example_yaml()).unwrap())
            .expect("the README's example is a MattermostAccessPlugin");
    // What the README promises each commented line does, as the operator reads it.
    assert_eq!(plugin.spec.mattermost.priority, Priority::Important);
    assert!(!plugin.spec.mattermost.requested_ack);
    assert_eq!(plugin.spec.approver_channels, ["security/access-approvers"]);
    assert_eq!(plugin.spec.approvers, ["alice", "bob@example.com"]);
}

#[test]
fn schema_rejects_typical_mistakes() {
    let example: Value = serde_yaml_ng::from_str(&example_yaml()).unwrap();
    let cases: [(&str, Value, &str); 6] = [
        (
            "/spec/mattermost/channel",
            json!("Access Requests"),
            "pattern",
        ),
        (
            "/spec/teleport/address",
            json!("teleport.example.com"),
            "pattern",
        ),
        ("/spec/recipients/0", json!(""), "minLength"),
        ("/spec/roleToRecipients/*/0", json!(""), "minLength"),
        ("/spec/mattermost/team", json!("Platform Team"), "pattern"),
        (
            "/spec/callback/publicUrl",
            json!("https://x"),
            "unknown field",
        ),
    ];
    let mut example = example;
    example["spec"]["approvers"] = json!(["alice"]);
    let cases: Vec<_> = cases
        .into_iter()
        .chain([("/spec/approvers/0", json!(""), "minLength")])
        .collect();
    for (pointer, value, expected) in cases {
        let mut broken = example.clone();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        match broken.pointer_mut(parent).unwrap() {
            Value::Array(items) => items[key.parse::<usize>().unwrap()] = value,
            Value::Object(map) => {
                map.insert(key.to_owned(), value);
            }
            other => panic!("{parent} is {other}"),
        }
        let errors = validate(&root_schema(), &broken, "");
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "{pointer}: expected a {expected} error, got {errors:?}"
        );
    }
}

/// A small subset of OpenAPI v3 validation: the keywords this CRD uses, plus the pruning of
/// unknown fields (which the apiserver does silently, hiding typos like `publicUrl`).
fn validate(schema: &Value, value: &Value, path: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true)) {
        return errors;
    }
    if value.is_null() {
        if schema.get("nullable") != Some(&json!(true)) {
            errors.push(format!("{path}: null"));
        }
        return errors;
    }
    match (schema["type"].as_str(), value) {
        (Some("object"), Value::Object(map)) => {
            let properties = schema["properties"].as_object();
            for name in schema["required"].as_array().into_iter().flatten() {
                if !map.contains_key(name.as_str().unwrap()) {
                    errors.push(format!("{path}: required field {name} missing"));
                }
            }
            for (key, child) in map {
                let child_path = format!("{path}.{key}");
                // The apiserver always knows these three at the root, schema or not.
                let implicit =
                    path.is_empty() && ["apiVersion", "kind", "metadata"].contains(&key.as_str());
                if implicit {
                    continue;
                }
                if let Some(child_schema) = properties.and_then(|p| p.get(key)) {
                    errors.extend(validate(child_schema, child, &child_path));
                } else if let Some(additional) = schema.get("additionalProperties") {
                    errors.extend(validate(additional, child, &child_path));
                } else if properties.is_some() {
                    errors.push(format!("{child_path}: unknown field"));
                }
            }
        }
        (Some("array"), Value::Array(items)) => {
            if let Some(max) = schema["maxItems"].as_u64()
                && items.len() as u64 > max
            {
                errors.push(format!("{path}: more than maxItems {max}"));
            }
            for (i, item) in items.iter().enumerate() {
                errors.extend(validate(&schema["items"], item, &format!("{path}[{i}]")));
            }
        }
        (Some("string"), Value::String(s)) => {
            let length = s.chars().count() as u64;
            if schema["minLength"].as_u64().is_some_and(|min| length < min) {
                errors.push(format!("{path}: shorter than minLength"));
            }
            if schema["maxLength"].as_u64().is_some_and(|max| length > max) {
                errors.push(format!("{path}: longer than maxLength"));
            }
            if let Some(pattern) = schema["pattern"].as_str()
                && !Regex::new(pattern).unwrap().is_match(s)
            {
                errors.push(format!("{path}: {s:?} does not match pattern {pattern}"));
            }
        }
        (Some("boolean"), Value::Bool(_)) => {}
        (Some("integer"), Value::Number(n)) if n.is_i64() || n.is_u64() => {
            if let Some(min) = schema["minimum"].as_f64()
                && n.as_f64().unwrap() < min
            {
                errors.push(format!("{path}: below minimum {min}"));
            }
        }
        (expected, _) => errors.push(format!("{path}: expected {expected:?}, got {value}")),
    }
    errors
}

/// Every enum value, with the path of the field it belongs to.
fn enum_values(schema: &Value, path: &str, out: &mut Vec<(String, Value)>) {
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        out.extend(values.iter().map(|v| (path.to_string(), v.clone())));
    }
    for key in ["properties", "additionalProperties", "items"] {
        match schema.get(key) {
            Some(Value::Object(children)) if key == "properties" => {
                for (name, child) in children {
                    enum_values(child, &format!("{path}.{name}"), out);
                }
            }
            Some(child @ Value::Object(_)) => enum_values(child, path, out),
            _ => {}
        }
    }
}

#[test]
fn no_choice_is_a_word_yaml_1_1_reads_as_a_boolean() {
    // kubectl and the API server read YAML 1.1, where an unquoted `off`, `no` or `y` is a
    // boolean: an admin writing `denyReason: off` would get a type error, not "off".
    let booleans = ["y", "yes", "n", "no", "true", "false", "on", "off"];
    let mut values = Vec::new();
    enum_values(&root_schema(), "", &mut values);
    assert!(
        values.iter().any(|(p, _)| p == ".spec.callback.denyReason"),
        "the walk finds the enums: {values:?}"
    );
    for (path, value) in values {
        let text = value.as_str().unwrap_or_default().to_ascii_lowercase();
        assert!(!booleans.contains(&text.as_str()), "{path}: {value}");
    }
}

#[test]
fn priority_is_a_choice_of_three_and_an_acknowledgement_a_boolean() {
    let priority = schema_at("spec.mattermost.priority");
    assert_eq!(priority["enum"], json!(["none", "important", "urgent"]));
    let doc = priority["description"].as_str().unwrap();
    assert!(doc.contains("\"none\" (the default)"), "{doc}");
    let ack = schema_at("spec.mattermost.requestedAck");
    assert_eq!(ack["type"], "boolean");
    let doc = ack["description"].as_str().unwrap();
    assert!(doc.contains("licensed Mattermost"), "{doc}");
    assert!(doc.contains("AcknowledgementUnlicensed"), "{doc}");

    let mut example: Value = serde_yaml_ng::from_str(&example_yaml()).unwrap();
    example["spec"]["mattermost"]["priority"] = json!("urgent");
    example["spec"]["mattermost"]["requestedAck"] = json!(true);
    assert_eq!(validate(&root_schema(), &example, ""), Vec::<String>::new());
    // The apiserver checks the enum; the typo "high" is not in it.
    assert!(
        !priority["enum"]
            .as_array()
            .unwrap()
            .contains(&json!("high"))
    );
}
