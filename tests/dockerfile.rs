//! The Dockerfile's build stage, replayed without a Docker engine: the same COPY set into an
//! empty directory, then the same RUN commands, so the image build breaks here when it would
//! break in `docker build` (a target cargo needs but the dependency step does not provide).
//!
//! The release build it runs is shared with `tests/image/build.sh`, which makes the test image
//! of the node tier from the same replay.

use std::path::PathBuf;
use std::process::Command;

use teleport_mattermost_testkit::dockerfile::{Dockerfile, repo_root};

/// Where the replay's cargo builds: kept between runs, as Docker keeps its layer cache.
fn replay_target() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target/tmp has a parent")
        .join("dockerfile-replay")
}

#[test]
fn the_build_stage_replayed_in_an_empty_directory_produces_the_binary() {
    let dockerfile = Dockerfile::of_repo().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dockerfile
        .replay_build("build", dir.path(), &replay_target())
        .unwrap_or_else(|e| panic!("the Dockerfile's build stage fails: {e:#}"));
    // The final stage copies exactly this file.
    let config = dockerfile.final_config().unwrap();
    let (src, dest) = &config.copies_from_build[0];
    assert_eq!(src, "/out/teleport-mattermost");
    assert_eq!(config.entrypoint, vec![dest.clone()]);
    let binary = out.join("teleport-mattermost");
    let version = Command::new(&binary).arg("version").output().unwrap();
    assert!(version.status.success());
    assert!(
        String::from_utf8_lossy(&version.stdout).starts_with("teleport-mattermost v"),
        "{version:?}"
    );
}

#[test]
fn a_dependency_step_without_every_cargo_target_fails_the_replay() {
    // The defect this replay exists for: the dependency step did not provide benches/operator.rs,
    // so cargo could not read the manifest. Take the benches out of the step: it must fail.
    let text = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    let broken = text.replace("COPY benches benches\n", "");
    assert_ne!(
        broken, text,
        "the Dockerfile copies the benches for the dependency step"
    );
    let dockerfile = Dockerfile::parse(&broken).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = dockerfile
        .replay_build("build", dir.path(), &replay_target())
        .expect_err("cargo cannot read the manifest without the bench targets");
    assert!(err.to_string().contains("RUN failed"), "{err:#}");
}
