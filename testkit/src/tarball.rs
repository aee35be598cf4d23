//! The standalone release tarball as a user gets it: made by `packaging/tarball.sh`, unpacked,
//! and installed with its own `install` script into a temporary prefix.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::dockerfile::repo_root;

/// A tarball made and installed; the directory holds everything and goes with it.
pub struct Installed {
    /// Holds the tarball (`dist/`), what it unpacked to and the prefix.
    pub work: tempfile::TempDir,
    /// The tarball, as `tarball.sh` named it.
    pub tarball: PathBuf,
    /// Where `install --prefix` put things (`bin/`, `lib/systemd/system/`).
    pub prefix: PathBuf,
    /// What `install` printed.
    pub install_output: String,
}

impl Installed {
    /// The installed binary.
    pub fn binary(&self) -> PathBuf {
        self.prefix.join("bin/teleport-mattermost")
    }

    /// The installed systemd unit.
    pub fn unit(&self) -> PathBuf {
        self.prefix
            .join("lib/systemd/system/teleport-mattermost.service")
    }
}

/// Makes the tarball of `binary` as `version`, unpacks it and runs its `install --prefix`;
/// panics with the command's output when a step fails.
pub fn make_and_install(version: &str, binary: &Path) -> Installed {
    let work = tempfile::tempdir().unwrap();
    let made = Command::new(repo_root().join("packaging/tarball.sh"))
        .arg(version)
        .arg(binary)
        .arg(work.path().join("dist"))
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let tarball = PathBuf::from(String::from_utf8(made.stdout).unwrap().trim());
    assert!(
        Command::new("tar")
            .arg("xzf")
            .arg(&tarball)
            .current_dir(work.path())
            .status()
            .unwrap()
            .success()
    );
    let prefix = work.path().join("prefix");
    let installed = Command::new(work.path().join("teleport-mattermost/install"))
        .arg("--prefix")
        .arg(&prefix)
        .output()
        .unwrap();
    assert!(installed.status.success(), "{installed:?}");
    Installed {
        tarball,
        prefix,
        install_output: String::from_utf8_lossy(&installed.stdout).into_owned(),
        work,
    }
}

/// Asserts that `systemd-analyze verify` accepts the unit without a complaint.
pub fn assert_unit_verifies(unit: &Path) {
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .output()
        .expect("systemd-analyze (Debian package systemd) is installed");
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
}
