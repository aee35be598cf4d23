//! Compiles the Teleport proto subset with protox, so no system `protoc` is needed, and
//! records the git ref that `teleport-mattermost version` prints.

use std::path::Path;
use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/teleport/legacy/client/proto/authservice.proto",
        "proto/teleport/legacy/types/types.proto",
        "proto/teleport/legacy/types/wrappers/wrappers.proto",
        "proto/teleport/header/v1/metadata.proto",
        "proto/teleport/accessmonitoringrules/v1/access_monitoring_rules.proto",
        "proto/teleport/users/v1/users_service.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        // The server side is compiled too: the test double implements it.
        .build_server(true)
        .compile_fds(descriptors)?;

    emit_git_ref();
    Ok(())
}

/// Sets `TELEPORT_MATTERMOST_GIT_REF` to `git describe --always --dirty`, or `unknown` when
/// git or the repository is absent (e.g. building from a source tarball or in a container).
fn emit_git_ref() {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let git_dir = Path::new(&manifest_dir).join(".git");
    // Only describe our own repository, never one the source tree happens to sit inside.
    let git_ref = if git_dir.exists() {
        Command::new("git")
            .args(["-C", &manifest_dir, "describe", "--always", "--dirty"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    } else {
        None
    };
    println!(
        "cargo:rustc-env=TELEPORT_MATTERMOST_GIT_REF={}",
        git_ref.as_deref().unwrap_or("unknown")
    );
    // Re-describe when the checked-out branch or its tip moves. (Edits alone do not rerun
    // the build script, so "-dirty" reflects the tree as of the last rerun.)
    let head = git_dir.join("HEAD");
    if head.is_file() {
        println!("cargo:rerun-if-changed={}", head.display());
        if let Ok(text) = std::fs::read_to_string(&head)
            && let Some(reference) = text.trim().strip_prefix("ref: ")
        {
            let tip = git_dir.join(reference);
            if tip.is_file() {
                println!("cargo:rerun-if-changed={}", tip.display());
            }
        }
    }
}
