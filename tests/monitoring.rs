//! The chart's alerts and dashboard, checked with the tools their users run them with:
//! - promtool (Debian's `prometheus` package) checks the rules the chart renders and runs the
//!   unit tests in tests/prometheus/alerts.test.yaml, one or more per alert;
//! - TypeScript checks the dashboard against Grafana's own schema, the `Dashboard` type of the
//!   `@grafana/schema` package (generated from Grafana's dashboard kind), with excess-property
//!   checks, so a misspelt or misplaced field fails; plus the layout rules Grafana does not
//!   check (ids, grid, data source);
//! - every metric the rules and the dashboard read is in a scrape of `/metrics` of the operator
//!   binary, started as its pod starts it against the real kube-apiserver (tier 3), after it
//!   posted a request and answered a press.
//!
//! tests/run-all.sh installs promtool and the schema; a missing tool fails the test with the
//! command that installs it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value as Json;
use teleport_mattermost_testkit::cluster::{Env, NS};
use teleport_mattermost_testkit::control_plane::peer_binary;
use teleport_mattermost_testkit::pod::{self, PodProcess};
use teleport_mattermost_testkit::teleport::NewRequest;

const CHART: &str = "charts/teleport-mattermost";
const ALERT_TESTS: &str = "tests/prometheus/alerts.test.yaml";
const DASHBOARD: &str = "charts/teleport-mattermost/files/dashboard.json";
const RUNBOOK: &str = "docs/runbook.md";
/// The versions tests/run-all.sh installs into the tools cache.
const GRAFANA_SCHEMA: &str = "@grafana/schema@13.2.3";
const TYPESCRIPT: &str = "typescript@5.9.3";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn tools_cache() -> PathBuf {
    std::env::var_os("TM_TOOLS_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME"))
                .join(".cache/teleport-mattermost/tools")
        })
}

/// Runs a command; panics with its output unless it succeeds.
fn run_ok(cmd: &mut Command) -> String {
    let described = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawning {described}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{described} failed:\n{text}");
    text
}

fn promtool() -> PathBuf {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join("promtool"))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "promtool is not installed: `apt-get install --no-install-recommends prometheus` \
             (tests/run-all.sh does)"
        )
    })
}

/// `helm template` of the chart with `sets`, as JSON documents.
fn render(sets: &[&str]) -> Vec<Json> {
    let helm = peer_binary("helm").unwrap_or_else(|e| panic!("{e:#}"));
    let mut cmd = Command::new(helm);
    cmd.current_dir(repo())
        .args(["template", "tm", CHART, "--namespace", "tm-system"]);
    for s in sets {
        cmd.args(["--set", s]);
    }
    pod::documents(&run_ok(&mut cmd))
}

/// The rendered PrometheusRule's rules, with the default values.
fn rendered_rules() -> Json {
    let docs = render(&["prometheusRule.enabled=true"]);
    let rule = docs
        .into_iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("prometheusRule.enabled renders a PrometheusRule");
    rule["spec"].clone()
}

fn alerts(spec: &Json) -> Vec<&Json> {
    spec["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .filter(|r| r.get("alert").is_some())
        .collect()
}

#[test]
fn every_alert_passes_promtool_and_its_unit_tests() {
    let promtool = promtool();
    let spec = rendered_rules();
    let dir = tempfile::tempdir().unwrap();
    // promtool reads rule_files relative to the test file, so both go side by side.
    std::fs::write(
        dir.path().join("rules.yaml"),
        serde_yaml_ng::to_string(&spec).unwrap(),
    )
    .unwrap();
    std::fs::copy(
        repo().join(ALERT_TESTS),
        dir.path().join("alerts.test.yaml"),
    )
    .unwrap();
    let checked = run_ok(Command::new(&promtool).current_dir(dir.path()).args([
        "check",
        "rules",
        "rules.yaml",
    ]));
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = run_ok(Command::new(&promtool).current_dir(dir.path()).args([
        "test",
        "rules",
        "alerts.test.yaml",
    ]));
    assert!(tested.contains("SUCCESS"), "{tested}");

    // Each alert is shown firing by at least one unit test.
    let tests: Json = serde_yaml_ng::from_str(&read(ALERT_TESTS)).unwrap();
    let proven: BTreeSet<&str> = tests["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().unwrap())
        .filter(|c| c["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()))
        .map(|c| c["alertname"].as_str().unwrap())
        .collect();
    let names: Vec<&str> = alerts(&spec)
        .iter()
        .map(|a| a["alert"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 10, "{names:?}");
    let unproven: Vec<_> = names.iter().filter(|n| !proven.contains(*n)).collect();
    assert!(
        unproven.is_empty(),
        "alerts no unit test fires: {unproven:?}"
    );
}

#[test]
fn every_alert_tells_what_happened_and_links_its_runbook_section() {
    let spec = rendered_rules();
    let runbook = read(RUNBOOK);
    let base =
        "https://github.com/teleport-mattermost/teleport-mattermost/blob/main/docs/runbook.md";
    for alert in alerts(&spec) {
        let name = alert["alert"].as_str().unwrap();
        let a = &alert["annotations"];
        for key in ["summary", "description"] {
            assert!(
                a[key].as_str().is_some_and(|s| s.len() > 20),
                "{name} has no {key}"
            );
        }
        assert_eq!(
            a["runbook_url"].as_str(),
            Some(format!("{base}#{}", name.to_lowercase()).as_str()),
            "{name}'s runbook_url"
        );
        // GitHub's anchor for "## Name" is the lowercased name.
        let section = runbook
            .split_once(&format!("\n## {name}\n"))
            .unwrap_or_else(|| panic!("{RUNBOOK} has no section \"## {name}\""))
            .1;
        let section = section.split("\n## ").next().unwrap();
        for part in ["**Meaning.**", "**Check.**", "**Fix"] {
            assert!(
                section.contains(part),
                "the runbook section of {name} lacks {part}"
            );
        }
        assert!(
            ["critical", "warning"].contains(&alert["labels"]["severity"].as_str().unwrap_or("")),
            "{name} has a severity"
        );
    }
}

// ---- the dashboard --------------------------------------------------------------------------

fn dashboard() -> Json {
    serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON")
}

fn panels(dashboard: &Json) -> Vec<&Json> {
    dashboard["panels"].as_array().unwrap().iter().collect()
}

#[test]
fn the_dashboard_passes_grafanas_dashboard_schema() {
    let tools = tools_cache().join("grafana-schema");
    let tsc = tools.join("node_modules/typescript/bin/tsc");
    let schema = tools.join("node_modules/@grafana/schema/dist/types/index.d.ts");
    assert!(
        tsc.is_file() && schema.is_file(),
        "Grafana's dashboard schema is not installed: `npm install --prefix {} {GRAFANA_SCHEMA} {TYPESCRIPT}` \
         (tests/run-all.sh does)",
        tools.display()
    );
    let dir = tempfile::tempdir().unwrap();
    // String enums of the schema (thresholds' "absolute", mappings' "value", ...) are spelt as
    // their values in JSON: `Plain` turns each into the union of its values, and leaves
    // everything else, excess-property checks included, to the compiler.
    let source = format!(
        "import type {{ Dashboard }} from \"@grafana/schema\";\n\
         type Plain<T> = T extends string ? `${{T}}` : T extends (infer U)[] ? Plain<U>[] : \
         T extends object ? {{ [K in keyof T]: Plain<T[K]> }} : T;\n\
         export const dashboard: Plain<Dashboard> = {};\n",
        read(DASHBOARD)
    );
    std::fs::write(dir.path().join("dashboard.ts"), source).unwrap();
    let tsconfig = serde_json::json!({
        "compilerOptions": {
            "strict": true, "noEmit": true, "skipLibCheck": true, "types": [],
            "module": "esnext", "moduleResolution": "bundler", "target": "es2022",
            "paths": { "@grafana/schema": [schema] }
        },
        "files": ["dashboard.ts"]
    });
    std::fs::write(dir.path().join("tsconfig.json"), tsconfig.to_string()).unwrap();
    let check = |what: &str| {
        Command::new("node")
            .arg(&tsc)
            .args(["-p", "."])
            .current_dir(dir.path())
            .output()
            .unwrap_or_else(|e| panic!("running tsc on {what}: {e}"))
    };
    let out = check("the dashboard");
    assert!(
        out.status.success(),
        "{DASHBOARD} does not match Grafana's Dashboard schema:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // And the check bites: a misspelt panel field is refused.
    let misspelt = std::fs::read_to_string(dir.path().join("dashboard.ts"))
        .unwrap()
        .replacen("\"gridPos\"", "\"gridpos\"", 1);
    std::fs::write(dir.path().join("dashboard.ts"), misspelt).unwrap();
    let out = check("a misspelt dashboard");
    assert!(!out.status.success(), "tsc accepted a misspelt gridPos");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("gridpos"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn the_dashboard_lays_out_unique_panels_on_the_grid_reading_the_chosen_data_source() {
    let d = dashboard();
    assert_eq!(d["uid"], "teleport-mattermost");
    let variables: BTreeMap<&str, &Json> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v))
        .collect();
    assert_eq!(variables["datasource"]["type"], "datasource");
    assert_eq!(variables["datasource"]["query"], "prometheus");
    let mut ids = BTreeSet::new();
    let mut cells: BTreeMap<(u64, u64), &str> = BTreeMap::new();
    let mut titles = Vec::new();
    for p in panels(&d) {
        let title = p["title"].as_str().unwrap();
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "{title}: duplicate id"
        );
        let g = &p["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| g[k].as_u64().unwrap());
        assert!(
            x + w <= 24 && w > 0 && h > 0,
            "{title} leaves the 24-column grid"
        );
        for cx in x..x + w {
            for cy in y..y + h {
                if let Some(other) = cells.insert((cx, cy), title) {
                    panic!("{title} overlaps {other}");
                }
            }
        }
        titles.push(title);
        if p["type"] == "row" {
            continue;
        }
        assert!(
            p["description"].as_str().is_some_and(|s| !s.is_empty()),
            "{title}"
        );
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} queries nothing");
        let refs: BTreeSet<&str> = targets
            .iter()
            .map(|t| {
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
                assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()), "{title}");
                t["refId"].as_str().unwrap()
            })
            .collect();
        assert_eq!(refs.len(), targets.len(), "{title}: duplicate refIds");
    }
    // What the issue asked the dashboard to show.
    for wanted in [
        "Request flow",
        "Posting latency",
        "Presses by outcome",
        "Rate-limit headroom",
        "Identity expiry",
        "Leader",
    ] {
        assert!(titles.contains(&wanted), "no panel {wanted:?}: {titles:?}");
    }
}

// ---- the metrics they read exist --------------------------------------------------------------

/// The `teleport_mattermost_*` names in a PromQL text.
fn metric_names(text: &str, into: &mut BTreeSet<String>) {
    let re = regex::Regex::new(r"\bteleport_mattermost_[a-z0-9_]*[a-z0-9]").unwrap();
    into.extend(re.find_iter(text).map(|m| m.as_str().to_string()));
}

/// Every series name the rules and the dashboard (queries and variables) read.
fn names_used() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for alert in alerts(&rendered_rules()) {
        metric_names(alert["expr"].as_str().unwrap(), &mut names);
    }
    let d = dashboard();
    for p in panels(&d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            metric_names(t["expr"].as_str().unwrap(), &mut names);
        }
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        metric_names(&v["query"].to_string(), &mut names);
    }
    names
}

/// From an OpenMetrics text: the series names its `# TYPE` lines declare (a counter `x` is
/// sampled as `x_total`, a histogram as `x_bucket`, `x_sum`, `x_count`), and the names that
/// have samples.
fn scraped_names(body: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut declared = BTreeSet::new();
    let mut sampled = BTreeSet::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            declared.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') && !line.is_empty() {
            sampled.insert(line.split(['{', ' ']).next().unwrap().to_string());
        }
    }
    (declared, sampled)
}

#[tokio::test]
async fn every_metric_the_alerts_and_the_dashboard_read_is_in_a_scrape_of_the_operator() {
    let used = names_used();
    assert!(used.len() >= 15, "{used:?}");

    let env = Env::start().await;
    let (release, release_ns) = ("teleport-mattermost", "tm-system");
    env.cp
        .kubectl_run(&["create", "namespace", release_ns], None)
        .unwrap();
    let sets = [
        "crds.install=false".to_string(),
        format!("watchNamespaces={{{NS}}}"),
    ];
    env.apply(&pod::render(&env.cp, release, release_ns, &sets).unwrap())
        .unwrap();
    let kubeconfig = pod::service_account_kubeconfig(&env.cp, release_ns, release).unwrap();
    let (container, _) = pod::container(
        &env.cp,
        release,
        release_ns,
        &sets,
        "teleport-mattermost-5b7c9-metrc",
    )
    .unwrap();
    let log = std::env::temp_dir().join(format!("tm-monitoring-{}.log", std::process::id()));
    let operator = PodProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_teleport-mattermost")),
        &container,
        &kubeconfig,
        &log,
    )
    .unwrap();
    operator
        .wait_ready(Duration::from_millis(250), Duration::from_secs(60))
        .await
        .unwrap();

    // An object on a rate-limited Mattermost, a request posted, a press answered.
    env.mattermost.set_rate_limit(50, 100);
    env.put_all_secrets(&env.pki.client("access-plugin-mattermost"))
        .await;
    let cr = env
        .cr_yaml("platform", container.callback)
        .replace("perSecond: 0", "perSecond: 100")
        .replace("burst: 1\n", "burst: 100\n");
    env.apply(&cr).unwrap();
    env.wait_condition("platform", "Ready", "True").await;
    // The runbook's checks, as written there, against the real API server.
    let runbook = read(RUNBOOK);
    let watch_message = r#"{.status.conditions[?(@.type=="TeleportConnected")].message}"#;
    assert!(runbook.contains(&format!("-o jsonpath='{watch_message}'")));
    let message = env
        .cp
        .kubectl_run(
            &[
                "-n",
                NS,
                "get",
                "mmap",
                "platform",
                "-o",
                &format!("jsonpath={watch_message}"),
            ],
            None,
        )
        .unwrap();
    assert!(message.contains("watching access requests"), "{message:?}");
    assert!(runbook.contains("-o jsonpath='{.status.lastPressProblem}'"));
    env.cp
        .kubectl_run(
            &[
                "-n",
                NS,
                "get",
                "mmap",
                "platform",
                "-o",
                "jsonpath={.status.lastPressProblem}",
            ],
            None,
        )
        .unwrap();
    let described = env
        .cp
        .kubectl_run(&["-n", NS, "describe", "mmap", "platform"], None)
        .unwrap();
    assert!(described.contains("TeleportConnected"), "{described}");
    let id = env
        .teleport
        .create_request(NewRequest::by("bob@example.com"));
    let post = env.recorded_post(&id).await;
    let pressed = env
        .mattermost
        .press(&post, "Approve", "alice")
        .await
        .unwrap();
    assert_eq!(pressed.status, 200, "{:?}", pressed.body);

    let (status, body) = operator.probe("/metrics").await.expect("/metrics answers");
    assert_eq!(status, 200);
    let (declared, sampled) = scraped_names(&body);
    let undeclared: Vec<_> = used.difference(&declared).collect();
    assert!(
        undeclared.is_empty(),
        "the rules or the dashboard read metrics /metrics does not have: {undeclared:?}\n\
         declared: {declared:?}"
    );
    // Declared is not enough: each has a sample for this scene, except the learned rate, which
    // needs a burst long enough to measure the server's refill (tier 4's pacing benchmark).
    let needs_a_burst = BTreeSet::from(["teleport_mattermost_mattermost_rate_learned".to_string()]);
    let unsampled: Vec<_> = used
        .iter()
        .filter(|n| !sampled.contains(*n) && !needs_a_burst.contains(*n))
        .collect();
    assert!(
        unsampled.is_empty(),
        "no samples of {unsampled:?} after a post and a press:\n{body}"
    );
    let object = format!("namespace=\"{NS}\",name=\"platform\"");
    for series in [
        "teleport_mattermost_ready{",
        "teleport_mattermost_teleport_connected{",
        "teleport_mattermost_posts_total{",
        "teleport_mattermost_post_duration_seconds_count{",
        "teleport_mattermost_mattermost_rate_remaining{",
    ] {
        assert!(
            body.lines()
                .any(|l| l.starts_with(series) && l.contains(&object) && !l.ends_with(" 0")),
            "{series}{object}}} is missing or 0:\n{body}"
        );
    }
}
