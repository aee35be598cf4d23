//! What a release ships, checked offline: the GitHub workflow (actionlint, with shellcheck on
//! its scripts, plus the promises the docs make about it) and the standalone tarball, built,
//! installed into a prefix with its own `install` script, its systemd unit verified by
//! `systemd-analyze verify`. Pushing to GHCR cannot be tested here.

use std::path::{Path, PathBuf};
use std::process::Command;

use teleport_mattermost_testkit::control_plane::peer_binary;
use teleport_mattermost_testkit::tarball;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn workflow() -> String {
    std::fs::read_to_string(repo().join(".github/workflows/release.yml")).unwrap()
}

/// Every workflow file, each named to actionlint (with shellcheck on its `run:` scripts when
/// shellcheck is installed, as tests/run-all.sh installs it).
#[test]
fn every_workflow_passes_actionlint() {
    let actionlint = peer_binary("actionlint").unwrap_or_else(|e| panic!("{e:#}"));
    let mut workflows: Vec<String> = std::fs::read_dir(repo().join(".github/workflows"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yml") || n.ends_with(".yaml"))
        .map(|n| format!(".github/workflows/{n}"))
        .collect();
    workflows.sort();
    assert_eq!(
        workflows,
        [".github/workflows/ci.yml", ".github/workflows/release.yml"],
        "a new workflow? add it here"
    );
    let out = Command::new(actionlint)
        .current_dir(repo())
        .args(["-no-color", "-verbose"])
        .args(&workflows)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "actionlint:\n{}{stderr}",
        String::from_utf8_lossy(&out.stdout),
    );
    assert!(
        stderr.contains(&format!("Found 0 errors in {} files", workflows.len())),
        "{stderr}"
    );
}

/// What .github/workflows/ci.yml promises contributors: every push and pull request runs fmt,
/// clippy, all four cargo-deny checks and tiers 1 to 5, with the peers cached by their pins.
#[test]
fn pushes_and_pull_requests_run_the_checks_and_the_tiers() {
    let text = std::fs::read_to_string(repo().join(".github/workflows/ci.yml")).unwrap();
    let ci: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    assert_eq!(ci["on"]["push"]["branches"][0], "**", "every branch");
    assert!(
        ci["on"].as_mapping().unwrap().contains_key("pull_request"),
        "and pull requests"
    );
    let runs = |job: &str| -> Vec<String> {
        ci["jobs"][job]["steps"]
            .as_sequence()
            .unwrap_or_else(|| panic!("no job {job}"))
            .iter()
            .filter_map(|s| s["run"].as_str().or(s["with"]["command"].as_str()))
            .map(str::to_owned)
            .collect()
    };
    let all: Vec<String> = ["lint", "deny", "tests"]
        .iter()
        .flat_map(|j| runs(j))
        .collect();
    for wanted in [
        "cargo fmt --all -- --check",
        "cargo clippy --workspace --all-targets --locked -- -D warnings",
        "check advisories licenses bans sources",
        "cargo test --workspace --locked",
        "tests/mattermost/run-tier4.sh",
        "tests/teleport/run-tier5.sh",
        "tests/control-plane/build.sh",
    ] {
        assert!(
            all.iter().any(|r| r.contains(wanted)),
            "ci.yml runs no {wanted:?}: {all:?}"
        );
    }
    // Tier 4 on both Mattermost lines, as tests/run-all.sh runs it.
    let lines: Vec<&str> = ci["jobs"]["tests"]["steps"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter(|s| s["run"].as_str() == Some("tests/mattermost/run-tier4.sh"))
        .map(|s| s["env"]["TM_MM_LINE"].as_str().unwrap_or("default"))
        .collect();
    assert_eq!(lines, ["current", "default"], "tier 4 on both lines");
    assert!(
        all.iter()
            .any(|r| r.contains("tests/mattermost/build.sh current")),
        "the current Mattermost is built"
    );
    // The peer cache is keyed on the scripts that pin the peers' versions.
    let cache = ci["jobs"]["tests"]["steps"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("actions/cache@"))
        })
        .expect("the tests job caches the peers");
    let key = cache["with"]["key"].as_str().unwrap();
    assert!(key.contains("hashFiles('tests/**/build.sh'"), "{key}");
    for script in [
        "tests/control-plane/build.sh",
        "tests/mattermost/build.sh",
        "tests/teleport/build.sh",
    ] {
        assert!(
            std::fs::read_to_string(repo().join(script))
                .unwrap()
                .contains("VERSION=\"${"),
            "{script} pins its versions"
        );
    }
}

#[test]
fn a_tag_publishes_both_architectures_the_chart_and_the_release_assets() {
    let w = workflow();
    let parsed: serde_yaml_ng::Value = serde_yaml_ng::from_str(&w).unwrap();
    assert_eq!(parsed["on"]["push"]["tags"][0], "v*.*.*");
    for promise in [
        "platforms: linux/amd64,linux/arm64",
        "ghcr.io/${{ github.repository }}",
        "helm push dist/teleport-mattermost-*.tgz",
        "oci://ghcr.io/",
        "crds/mattermostaccessplugins.yaml",
        "manifests/install.yaml",
        "teleport-access-mattermost-*-linux-amd64-bin.tar.gz",
        "packaging/tarball.sh",
        // Signed, keyless, with an SBOM and provenance (docs/install.md, "Verify what you
        // install"); the signing itself is exercised offline by the node tier.
        "id-token: write",
        "provenance: mode=max",
        "sbom: true",
        "cosign sign --yes \"${IMAGE}@${DIGEST}\"",
        "charts/teleport-mattermost@${DIGEST}",
        "cargo cyclonedx --format json",
        "cargo auditable build --release --locked --bin teleport-mattermost",
        "dist/teleport-mattermost-v*.cdx.json",
    ] {
        assert!(w.contains(promise), "the workflow lacks {promise:?}");
    }
    // The image it publishes is the chart's default repository.
    let values =
        std::fs::read_to_string(repo().join("charts/teleport-mattermost/values.yaml")).unwrap();
    assert!(values.contains("repository: ghcr.io/teleport-mattermost/teleport-mattermost"));
}

#[test]
fn the_standalone_tarball_installs_into_a_prefix_with_a_verified_unit() {
    let installed = tarball::make_and_install(
        "9.9.9",
        Path::new(env!("CARGO_BIN_EXE_teleport-mattermost")),
    );
    let tarball = &installed.tarball;
    assert_eq!(
        tarball,
        &installed
            .work
            .path()
            .join("dist/teleport-access-mattermost-v9.9.9-linux-amd64-bin.tar.gz")
    );
    assert!(tarball.exists());
    let listing = Command::new("tar")
        .arg("tzf")
        .arg(tarball)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    for file in [
        "install",
        "teleport-mattermost",
        "teleport-mattermost.service",
    ] {
        assert!(
            listing
                .lines()
                .any(|l| l == format!("teleport-mattermost/{file}")),
            "{file} missing from:\n{listing}"
        );
    }
    assert!(installed.install_output.contains("teleport-mattermost v"));
    let unit_path = installed.unit();
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    let bin = installed.binary();
    assert!(unit.contains(&format!(
        "ExecStart={} start --config=/etc/teleport-mattermost.toml",
        bin.display()
    )));
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    for hardening in [
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
    ] {
        assert!(unit.contains(hardening), "{hardening}");
    }
    // The shipped unit itself names /usr/local/bin, where a plain `sudo ./install` puts it.
    let shipped =
        std::fs::read_to_string(repo().join("packaging/teleport-mattermost.service")).unwrap();
    assert!(shipped.contains(
        "ExecStart=/usr/local/bin/teleport-mattermost start --config=/etc/teleport-mattermost.toml"
    ));

    tarball::assert_unit_verifies(&unit_path);
}
