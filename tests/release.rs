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

#[test]
fn the_release_workflow_passes_actionlint() {
    let actionlint = peer_binary("actionlint").unwrap_or_else(|e| panic!("{e:#}"));
    let out = Command::new(actionlint)
        .current_dir(repo())
        .arg("-no-color")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "actionlint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
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
