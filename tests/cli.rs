//! The `teleport-mattermost` binary: version, configure and start's config errors.

use std::process::{Command, Output};

use teleport_mattermost::config;

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_teleport-mattermost"))
        .args(args)
        // Keep the environment from choosing a config file or log filter for the test.
        .env_remove("TELEPORT_MATTERMOST_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .expect("run teleport-mattermost")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

#[test]
fn version_prints_name_version_and_git_ref() {
    let out = run(&["version"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let line = text.trim_end();
    let prefix = format!("teleport-mattermost v{} git:", env!("CARGO_PKG_VERSION"));
    assert!(line.starts_with(&prefix), "{line:?}");
    let git_ref = &line[prefix.len()..];
    assert!(
        !git_ref.is_empty() && !git_ref.contains(char::is_whitespace),
        "{line:?}"
    );
    assert_eq!(text.lines().count(), 1);
}

#[test]
fn configure_prints_a_config_that_parses() {
    let out = run(&["configure"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text, config::TEMPLATE);
    // Its example signing secret is refused (anyone could forge presses with it); with a real
    // one the file is complete.
    let err = config::parse(&text).unwrap_err().to_string();
    assert!(err.contains("1 problem"), "{err}");
    assert!(
        err.contains("mattermost.secret") && err.contains("openssl rand -hex 32"),
        "{err}"
    );
    let fixed = text.replace(
        "secret = \"signing-secret-value\"",
        "secret = \"3f1c0a9b8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b\"",
    );
    config::parse(&fixed).unwrap_or_else(|e| panic!("configure output does not parse: {e}"));
}

#[test]
fn start_with_a_missing_file_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let out = run(&["start", "-c", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains(&missing.display().to_string()), "{err}");
    assert!(err.contains("cannot read config file"), "{err}");
}

#[test]
fn start_with_a_bad_file_lists_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        r#"
[teleport]
addr = "teleport.example.com"
[mattermost]
url = "not a url"
team = "eng"
[http]
listen_addr = "nowhere"
[log]
severity = "chatty"
"#,
    )
    .unwrap();
    let out = run(&["start", "--config", bad.to_str().unwrap(), "-d"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains(&bad.display().to_string()), "{err}");
    for key in [
        "teleport.addr",
        "teleport.identity",
        "mattermost.url",
        "mattermost.channel",
        "mattermost.token",
        "mattermost.secret",
        "http.public_addr",
        "http.listen_addr",
        "log.severity",
    ] {
        assert!(
            err.contains(&format!("  - {key}: ")),
            "{key} missing from:\n{err}"
        );
    }
}

#[test]
fn unknown_subcommand_fails() {
    let out = run(&["frobnicate"]);
    assert!(!out.status.success());
}
