//! The standalone TOML: the template parses, every problem is reported with its key, and the
//! seed's forms (`:8081`, token files, `auth_server`) keep working.

use std::net::SocketAddr;
use std::path::PathBuf;

use teleport_mattermost::config::{self, ConfigError, IdentityPaths, TEMPLATE};
use teleport_mattermost::settings::{InstanceId, RateLimit, TokenSource};
use teleport_mattermost::telemetry::{LogFormat, LogOutput};

/// A minimal valid config in the seed's shape.
const SEED: &str = r#"
[teleport]
auth_server = "teleport.example.com:3025"
client_key = "/var/lib/teleport/plugins/mattermost/auth.key"
client_crt = "/var/lib/teleport/plugins/mattermost/auth.crt"
root_cas = "/var/lib/teleport/plugins/mattermost/auth.cas"

[mattermost]
url = "https://mattermost.example.com"
team = "eng"
channel = "access-requests"
token = "tok-123"
secret = "0123456789abcdef0123456789abcdef"

[http]
public_addr = "plugin.example.com"
listen_addr = ":8081"

[log]
output = "stderr"
severity = "INFO"
"#;

fn problems(text: &str) -> Vec<String> {
    match config::parse(text) {
        Ok(_) => panic!("config unexpectedly valid:\n{text}"),
        Err(e) => e.problems().iter().map(ToString::to_string).collect(),
    }
}

fn has_problem(problems: &[String], key: &str) -> bool {
    problems.iter().any(|p| p.starts_with(&format!("{key}:")))
}

/// The template with a real signing secret in place of its example.
fn template_with_a_secret() -> String {
    TEMPLATE.replace(
        "secret = \"signing-secret-value\"",
        "secret = \"3f1c0a9b8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b\"",
    )
}

#[test]
fn template_parses_once_its_example_secret_is_replaced() {
    let c = config::parse(&template_with_a_secret()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.settings.teleport.address, "example.com:3025");
    assert_eq!(c.http.public_url.as_str(), "https://example.com/");
    assert_eq!(
        c.http.listen_addr,
        "0.0.0.0:8081".parse::<SocketAddr>().unwrap()
    );
    // The template's example token is flagged at startup.
    let warnings = c.warnings().join("\n");
    assert!(warnings.contains("mattermost.token"), "{warnings}");
}

#[test]
fn weak_signing_secrets_are_refused_with_how_to_make_one() {
    for weak in [
        "signing-secret-value",
        "x",
        "0123456789abcdef0123456789abcde",
    ] {
        let text = SEED.replace("0123456789abcdef0123456789abcdef", weak);
        let found = problems(&text);
        assert!(
            has_problem(&found, "mattermost.secret"),
            "{weak}: {found:?}"
        );
        assert!(
            found.iter().any(|p| p.contains("openssl rand -hex 32")),
            "{weak}: {found:?}"
        );
    }
    config::parse(SEED).expect("32 characters are enough");
}

#[test]
fn template_documents_every_key() {
    for key in [
        "addr",
        "identity",
        "client_key",
        "client_crt",
        "root_cas",
        "url",
        "team",
        "channel",
        "token",
        "secret",
        "approvers",
        "recipients",
        "role_to_recipients",
        "rate_limit_per_second",
        "rate_limit_burst",
        "public_addr",
        "listen_addr",
        "https_key_file",
        "https_cert_file",
        "output",
        "severity",
        "format",
    ] {
        assert!(
            TEMPLATE.contains(&format!("{key} =")) || TEMPLATE.contains(&format!("{key}]")),
            "template lacks {key}"
        );
    }
    for section in ["[teleport]", "[mattermost]", "[http]", "[log]"] {
        assert!(TEMPLATE.contains(section));
    }
}

#[test]
fn seed_config_builds_settings() {
    let c = config::parse(SEED).unwrap_or_else(|e| panic!("{e}"));
    let s = &c.settings;
    assert_eq!(s.instance, InstanceId::standalone());
    assert_eq!(s.teleport.address, "teleport.example.com:3025");
    assert_eq!(s.teleport.init_timeout.as_secs(), 15);
    assert_eq!(s.mattermost.url.as_str(), "https://mattermost.example.com/");
    assert_eq!(s.mattermost.team, "eng");
    assert_eq!(s.mattermost.channel, "access-requests");
    assert_eq!(s.mattermost.rate_limit, RateLimit::default());
    assert_eq!(
        s.concurrency,
        teleport_mattermost::settings::DEFAULT_CONCURRENCY
    );
    let cb = s.callback.as_ref().unwrap();
    assert_eq!(
        cb.action_url.as_str(),
        "https://plugin.example.com/mattermost_action"
    );
    assert_eq!(
        cb.signing_secret.expose(),
        "0123456789abcdef0123456789abcdef"
    );
    assert_eq!(
        c.identity,
        IdentityPaths::Files {
            cert: "/var/lib/teleport/plugins/mattermost/auth.crt".into(),
            key: "/var/lib/teleport/plugins/mattermost/auth.key".into(),
            cas: "/var/lib/teleport/plugins/mattermost/auth.cas".into(),
        }
    );
    assert_eq!(c.log.output, LogOutput::Stderr);
    assert_eq!(c.log.severity, tracing::Level::INFO);
    assert_eq!(c.log.format, LogFormat::Text);
    assert_eq!(c.http.https_cert_file, None);
}

#[test]
fn listen_addr_without_host_means_all_interfaces() {
    let c = config::parse(SEED).unwrap();
    assert_eq!(
        c.http.listen_addr,
        "0.0.0.0:8081".parse::<SocketAddr>().unwrap()
    );
    let text = SEED.replace("\":8081\"", "\"127.0.0.1:9443\"");
    let c = config::parse(&text).unwrap();
    assert_eq!(
        c.http.listen_addr,
        "127.0.0.1:9443".parse::<SocketAddr>().unwrap()
    );
}

#[test]
fn token_is_a_literal_or_a_file() {
    let c = config::parse(SEED).unwrap();
    assert!(
        matches!(&c.settings.mattermost.token, TokenSource::Literal(s) if s.expose() == "tok-123")
    );
    let abs = SEED.replace("\"tok-123\"", "\"/run/secrets/mm-token\"");
    assert_eq!(
        config::parse(&abs).unwrap().settings.mattermost.token,
        TokenSource::File(PathBuf::from("/run/secrets/mm-token"))
    );
    let rel = SEED.replace("\"tok-123\"", "\"./mm-token\"");
    assert_eq!(
        config::parse(&rel).unwrap().settings.mattermost.token,
        TokenSource::File(PathBuf::from("./mm-token"))
    );
}

#[test]
fn every_missing_required_key_is_named() {
    let p = problems("[teleport]\nidentity = \"/auth_id\"\n");
    for key in [
        "mattermost.url",
        "mattermost.team",
        "mattermost.channel",
        "mattermost.token",
        "mattermost.secret",
        "http.public_addr",
    ] {
        assert!(has_problem(&p, key), "no problem for {key}: {p:#?}");
    }
    assert_eq!(p.len(), 6, "{p:#?}");
}

#[test]
fn missing_credentials_are_reported() {
    let text = SEED
        .lines()
        .filter(|l| !l.starts_with("client_") && !l.starts_with("root_cas"))
        .collect::<Vec<_>>()
        .join("\n");
    let p = problems(&text);
    assert!(has_problem(&p, "teleport.identity"), "{p:#?}");

    let partial = SEED.replace("root_cas = ", "# root_cas = ");
    let p = problems(&partial);
    assert!(has_problem(&p, "teleport.root_cas"), "{p:#?}");

    let both = SEED.replace("[teleport]", "[teleport]\nidentity = \"/auth_id\"");
    let p = problems(&both);
    assert!(has_problem(&p, "teleport.identity"), "{p:#?}");
}

#[test]
fn identity_file_is_an_alternative() {
    let text = r#"
[teleport]
addr = "tenant.teleport.sh:443"
identity = "/var/lib/teleport/plugins/mattermost/auth_id"
refresh_identity = true
[mattermost]
url = "http://localhost:8065"
team = "t"
channel = "c"
token = "x"
secret = "0123456789abcdef0123456789abcdef"
[http]
public_addr = "http://localhost:8081/prefix"
"#;
    let c = config::parse(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.identity,
        IdentityPaths::IdentityFile("/var/lib/teleport/plugins/mattermost/auth_id".into())
    );
    assert_eq!(c.settings.teleport.address, "tenant.teleport.sh:443");
    assert_eq!(
        c.settings.callback.unwrap().action_url.as_str(),
        "http://localhost:8081/prefix/mattermost_action"
    );
}

#[test]
fn several_problems_are_all_reported_at_once() {
    let text = r#"
[teleport]
addr = "no-port"
identity = "/auth_id"
[mattermost]
url = "mattermost.example.com"
team = "My Team"
channel = ""
token = "x"
secret = "s"
recipients = ["", "nonsense"]
approvers = ["alice", ""]
rate_limit_per_second = -1
chanel = "typo"
[http]
public_addr = "ftp://example.com"
listen_addr = "8081"
https_key_file = "/k.pem"
[log]
severity = "LOUD"
format = "xml"
[extra]
"#;
    let err = config::parse(text).unwrap_err();
    let p: Vec<String> = err.problems().iter().map(ToString::to_string).collect();
    for key in [
        "teleport.addr",
        "mattermost.url",
        "mattermost.team",
        "mattermost.channel",
        "mattermost.recipients[0]",
        "mattermost.recipients[1]",
        "mattermost.approvers[1]",
        "mattermost.rate_limit_per_second",
        "mattermost.chanel",
        "http.public_addr",
        "http.listen_addr",
        "http.https_cert_file",
        "log.severity",
        "log.format",
        "extra",
    ] {
        assert!(has_problem(&p, key), "no problem for {key}: {p:#?}");
    }
    // The whole message lists them too, one per line.
    let msg = err.to_string();
    assert!(msg.contains(&format!("{} problem(s)", p.len())), "{msg}");
    assert!(
        msg.contains("mattermost.url: is not a valid URL (relative URL without a base); use e.g. https://mattermost.example.com"),
        "{msg}"
    );
}

#[test]
fn unknown_keys_are_named() {
    let text = SEED.replace("[log]", "[log]\nseverty = \"DEBUG\"");
    let p = problems(&text);
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(has_problem(&p, "log.severty"), "{p:#?}");
}

#[test]
fn wrong_types_are_named_once() {
    let text = SEED.replace("team = \"eng\"", "team = 5");
    let p = problems(&text);
    assert_eq!(
        p,
        vec!["mattermost.team: must be a string, not a integer".to_string()]
    );
}

#[test]
fn https_files_go_together() {
    let text = SEED.replace(
        "listen_addr = \":8081\"",
        "https_cert_file = \"/c.pem\"\nhttps_key_file = \"/k.pem\"",
    );
    let c = config::parse(&text).unwrap();
    assert_eq!(c.http.https_cert_file, Some(PathBuf::from("/c.pem")));
    assert_eq!(c.http.https_key_file, Some(PathBuf::from("/k.pem")));
    let p = problems(&SEED.replace("listen_addr = \":8081\"", "https_cert_file = \"/c.pem\""));
    assert!(has_problem(&p, "http.https_key_file"), "{p:#?}");
}

#[test]
fn recipients_role_map_and_approvers() {
    let text = SEED.replace(
        "secret = ",
        "recipients = [\"eng/security\", \"a@example.com\"]\napprovers = [\"@alice\", \"bob@example.com\"]\nrate_limit_per_second = 0\nrate_limit_burst = 5\nrole_to_recipients = { \"dba\" = [\"eng/dba\"], \"*\" = [\"c@example.com\"] }\nsecret = ",
    );
    let c = config::parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let s = &c.settings;
    assert_eq!(s.recipients, ["eng/security", "a@example.com"]);
    assert_eq!(s.approvers, ["alice", "bob@example.com"]);
    assert_eq!(s.role_to_recipients["dba"], ["eng/dba"]);
    assert_eq!(s.role_to_recipients["*"], ["c@example.com"]);
    assert_eq!(
        s.mattermost.rate_limit,
        RateLimit {
            per_second: 0,
            burst: 5
        }
    );
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
}

#[test]
fn top_level_role_to_recipients_is_accepted() {
    let text = format!("{SEED}\n[role_to_recipients]\n\"*\" = [\"eng/all\"]\n");
    let c = config::parse(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.settings.role_to_recipients["*"], ["eng/all"]);
    let bad = format!("{SEED}\n[role_to_recipients]\n\"*\" = \"eng/all\"\n");
    assert!(has_problem(&problems(&bad), "role_to_recipients.*"));
}

#[test]
fn log_settings() {
    let text = SEED
        .replace(
            "output = \"stderr\"",
            "output = \"/var/log/tm.log\"\nformat = \"json\"",
        )
        .replace("\"INFO\"", "\"warning\"");
    let c = config::parse(&text).unwrap();
    assert_eq!(c.log.output, LogOutput::File("/var/log/tm.log".into()));
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.log.severity, tracing::Level::WARN);
}

#[test]
fn invalid_toml_is_a_syntax_error() {
    let err = config::parse("[mattermost\nurl = ").unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { .. }), "{err}");
    assert!(err.to_string().contains("invalid TOML"), "{err}");
}

#[test]
fn load_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let err = config::load(&missing).unwrap_err();
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[mattermost]\nurl = \"x\"\n").unwrap();
    let err = config::load(&bad).unwrap_err();
    assert!(
        err.to_string().starts_with(&bad.display().to_string()),
        "{err}"
    );
    assert!(err.problems().len() > 1);
}

/// The seed document's example lists the keys without their sections: it is read, each key in
/// the one section it belongs to, and the warnings say how to rewrite it.
#[test]
fn a_config_with_its_keys_outside_their_sections_is_read_with_warnings() {
    let flat = r#"
auth_server = "teleport.example.com:3025"
client_key = "/var/lib/teleport/plugins/mattermost/auth.key"
client_crt = "/var/lib/teleport/plugins/mattermost/auth.crt"
root_cas = "/var/lib/teleport/plugins/mattermost/auth.cas"
url = "https://mattermost.example.com"
team = "eng"
channel = "access-requests"
token = "tok-123"
secret = "0123456789abcdef0123456789abcdef"
public_addr = "plugin.example.com"
listen_addr = ":8081"
output = "stderr"
severity = "INFO"
"#;
    let config = config::parse(flat).unwrap_or_else(|e| panic!("{e}"));
    let sectioned = config::parse(SEED).unwrap();
    assert_eq!(config.settings, sectioned.settings);
    assert_eq!(config.identity, sectioned.identity);
    let warnings = config.warnings().join("\n");
    for key in [
        "teleport.auth_server",
        "mattermost.url",
        "http.public_addr",
        "log.severity",
    ] {
        assert!(warnings.contains(&format!("read as {key}")), "{warnings}");
    }
    assert!(warnings.contains("configure"), "{warnings}");

    // A key that belongs to two sections cannot be placed: it is named.
    let ambiguous = format!("ca_file = \"/etc/ca.pem\"\n{flat}");
    assert!(has_problem(&problems(&ambiguous), "ca_file"));
}

#[test]
fn reason_prompts_default_to_never_and_name_their_choices() {
    use teleport_mattermost::settings::ReasonPrompt;
    let seed = config::parse(SEED).unwrap();
    let callback = seed.settings.callback.as_ref().unwrap();
    assert_eq!(callback.deny_reason, ReasonPrompt::Never);
    assert_eq!(callback.approve_reason, ReasonPrompt::Never);
    assert_eq!(
        callback.dialog_url.as_str(),
        "https://plugin.example.com/mattermost_dialog",
        "beside /mattermost_action"
    );

    let set = SEED.replace(
        "listen_addr = \":8081\"",
        "listen_addr = \":8081\"\ndeny_reason = \"required\"\napprove_reason = \"Optional\"",
    );
    let c = config::parse(&set).unwrap_or_else(|e| panic!("{e}"));
    let callback = c.settings.callback.as_ref().unwrap();
    assert_eq!(callback.deny_reason, ReasonPrompt::Required);
    assert_eq!(callback.approve_reason, ReasonPrompt::Optional);

    let wrong = SEED.replace(
        "listen_addr = \":8081\"",
        "listen_addr = \":8081\"\ndeny_reason = \"always\"\napprove_reason = true",
    );
    let p = problems(&wrong);
    assert!(
        p.iter().any(|p| p
            == "http.deny_reason: \"always\" is not a choice; use \"never\", \"optional\" or \"required\""),
        "{p:?}"
    );
    assert!(has_problem(&p, "http.approve_reason"), "{p:?}");
}

#[test]
fn requester_and_reminder_sections_parse_and_name_their_problems() {
    use std::time::Duration;
    use teleport_mattermost::settings::{ReminderSettings, RequesterLookup};
    let seed = config::parse(SEED).unwrap();
    assert_eq!(seed.settings.requester.lookup, RequesterLookup::None);
    assert_eq!(seed.settings.reminders, None, "off by default");

    let set = format!(
        "{SEED}\n[requester]\nlookup = \"username\"\nnotify_on_post = true\n\n[reminders]\nafter = \"30m\"\nmax = 2\n"
    );
    let c = config::parse(&set).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.settings.requester.lookup, RequesterLookup::Username);
    assert!(c.settings.requester.notify_on_post);
    assert_eq!(
        c.settings.reminders,
        Some(ReminderSettings {
            after: Duration::from_secs(1800),
            every: Duration::from_secs(1800),
            max: 2
        }),
        "every defaults to after"
    );

    let wrong = format!(
        "{SEED}\n[requester]\nlookup = \"phone\"\nnotify_on_post = \"yes\"\n\n[reminders]\nafter = \"20s\"\nevery = \"soon\"\nmax = 50\n"
    );
    let p = problems(&wrong);
    for key in [
        "requester.lookup",
        "requester.notify_on_post",
        "reminders.every",
        "reminders.max",
    ] {
        assert!(has_problem(&p, key), "{key}: {p:?}");
    }
    let short = format!("{SEED}\n[reminders]\nafter = \"20s\"\n");
    assert_eq!(
        problems(&short),
        vec!["reminders.after: must be at least 1m".to_string()]
    );
    let missing = format!("{SEED}\n[reminders]\nevery = \"1h\"\n");
    assert!(has_problem(&problems(&missing), "reminders.after"));
}

#[test]
fn priority_defaults_to_none_and_names_its_choices() {
    use teleport_mattermost::settings::{Priority, PrioritySettings};
    let seed = config::parse(SEED).unwrap();
    assert_eq!(seed.settings.priority, PrioritySettings::default());
    assert!(!seed.settings.priority.any());

    // As the template documents it, uncommented.
    let template = template_with_a_secret()
        .replace("# priority = \"important\"", "priority = \"important\"")
        .replace("# requested_ack = false", "requested_ack = true");
    let c = config::parse(&template).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.settings.priority,
        PrioritySettings {
            priority: Priority::Important,
            requested_ack: true
        }
    );

    let wrong = SEED.replace(
        "token = \"tok-123\"",
        "token = \"tok-123\"\npriority = \"high\"\nrequested_ack = \"yes\"",
    );
    let p = problems(&wrong);
    assert!(
        p.iter().any(|p| p
            == "mattermost.priority: \"high\" is not a choice; use \"none\", \"important\" or \"urgent\""),
        "{p:?}"
    );
    assert!(has_problem(&p, "mattermost.requested_ack"), "{p:?}");
}
