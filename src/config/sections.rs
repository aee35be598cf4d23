//! Each section of the file into its settings.

use std::collections::BTreeMap;
use std::path::PathBuf;

use toml::Table;

use super::checker::Checker;
use super::layout::{
    HTTP_KEYS, LOG_KEYS, MATTERMOST_KEYS, REMINDER_KEYS, REQUESTER_KEYS, SECTIONS, TELEPORT_KEYS,
};
use super::values::{
    callback_url, check_approver, check_channel, check_host_port, check_recipient, parse_http_url,
    parse_listen_addr,
};
use super::*;
use crate::settings::{
    CallbackSettings, DEFAULT_CONCURRENCY, DEFAULT_MAX_SUGGESTED_REVIEWERS, InstanceId,
    MAX_SUGGESTED_REVIEWERS, MattermostSettings, Priority, PrioritySettings, RateLimit,
    ReminderSettings, RequesterLookup, RequesterSettings, RetryPolicy, TeleportSettings,
};
use crate::telemetry::{LogFormat, LogOutput, parse_severity};
use crate::teleport::route::ConnectionMode;

/// What [mattermost] holds.
pub(super) struct MattermostSection {
    settings: MattermostSettings,
    secret: Secret,
    recipients: Vec<String>,
    role_map: BTreeMap<String, Vec<String>>,
    approvers: Vec<String>,
    approver_channels: Vec<String>,
    max_suggested_reviewers: usize,
    priority: PrioritySettings,
}

impl Checker {
    pub(super) fn config(&mut self, root: &Table) -> Option<StandaloneConfig> {
        for key in root.keys() {
            if !SECTIONS.iter().any(|(name, _)| name == key) && key != "role_to_recipients" {
                self.problem(
                    key.clone(),
                    "unknown section or key; known sections are [teleport], [mattermost], [http], [log], [requester], [reminders] and [role_to_recipients]",
                );
            }
        }
        let (teleport, identity) = self.teleport(root);
        let mattermost = self.mattermost(root);
        let http = self.http(root);
        let log = self.log(root);
        let requester = self.requester(root);
        let reminders = self.reminders(root);

        // Teleport's newer plugin reads a top-level [role_to_recipients]; accept it too.
        let top_level = self.role_map("role_to_recipients", root.get("role_to_recipients"));
        let MattermostSection {
            settings: mattermost,
            secret,
            recipients,
            mut role_map,
            approvers,
            approver_channels,
            max_suggested_reviewers,
            priority,
        } = mattermost?;
        if !top_level.is_empty() && !role_map.is_empty() {
            self.problem(
                "role_to_recipients",
                "is set both here and as mattermost.role_to_recipients; keep one",
            );
        }
        role_map.extend(top_level);

        let (teleport, identity, http, log) = (teleport?, identity?, http?, log?);
        let (requester, reminders) = (requester?, reminders?);
        let action_url = callback_url(&http.public_url, ACTION_PATH);
        let dialog_url = callback_url(&http.public_url, DIALOG_PATH);
        Some(StandaloneConfig {
            settings: PluginSettings {
                instance: InstanceId::standalone(),
                teleport,
                mattermost,
                callback: Some(CallbackSettings {
                    action_url,
                    dialog_url,
                    signing_secret: secret,
                    answer_within: crate::callback::DEFAULT_ANSWER_WITHIN,
                    deny_reason: http.deny_reason,
                    approve_reason: http.approve_reason,
                }),
                recipients,
                role_to_recipients: role_map,
                approvers,
                approver_channels,
                max_suggested_reviewers,
                concurrency: DEFAULT_CONCURRENCY,
                requester,
                reminders,
                priority,
            },
            identity,
            mattermost_ca_file: self.ca_file.take(),
            teleport_ca_file: self.proxy_ca_file.take(),
            layout_warnings: Vec::new(),
            http,
            log,
        })
    }

    pub(super) fn teleport(
        &mut self,
        root: &Table,
    ) -> (Option<TeleportSettings>, Option<IdentityPaths>) {
        let s = self.section(root, "teleport", TELEPORT_KEYS);
        let addr = self.string(&s, "addr");
        let auth_server = self.string(&s, "auth_server");
        if addr.is_some() && auth_server.is_some() {
            self.problem(
                "teleport.auth_server",
                "is an old name of teleport.addr and both are set; keep only addr",
            );
        }
        let address = addr
            .or(auth_server)
            .unwrap_or_else(|| DEFAULT_AUTH_SERVER.to_owned());
        let key_name = if s.get("addr").is_some() {
            "teleport.addr"
        } else {
            "teleport.auth_server"
        };
        let address_ok = match check_host_port(&address) {
            Some(why) => {
                self.problem(key_name, format!("{address:?} {why}"));
                false
            }
            None => true,
        };
        if let Some(v) = s.get("refresh_identity")
            && !v.is_bool()
        {
            self.problem(
                "teleport.refresh_identity",
                format!("must be true or false, not a {}", v.type_str()),
            );
        }

        let connection = match self.string(&s, "connection") {
            None => ConnectionMode::Auto,
            Some(text) => ConnectionMode::parse(&text).unwrap_or_else(|| {
                self.problem(
                    "teleport.connection",
                    format!("{text:?} is not one of auto, auth, proxy"),
                );
                ConnectionMode::Auto
            }),
        };
        self.proxy_ca_file = self.string(&s, "ca_file").map(PathBuf::from);
        let plugin_name = self
            .string(&s, "plugin_name")
            .unwrap_or_else(|| crate::access_monitoring::DEFAULT_PLUGIN_NAME.to_owned());
        let timezone = match self.string(&s, "timezone") {
            None => chrono_tz::Tz::UTC,
            Some(text) => crate::access_monitoring::timezone(&text).unwrap_or_else(|e| {
                self.problem("teleport.timezone", e.to_string());
                chrono_tz::Tz::UTC
            }),
        };
        let identity_file = self.string(&s, "identity");
        let key = self.string(&s, "client_key");
        let crt = self.string(&s, "client_crt");
        let cas = self.string(&s, "root_cas");
        let identity = match (identity_file, key, crt, cas) {
            (Some(id), None, None, None) => Some(IdentityPaths::IdentityFile(PathBuf::from(id))),
            (Some(_), _, _, _) => {
                self.problem(
                    "teleport.identity",
                    "cannot be combined with client_key, client_crt and root_cas; use the identity file or the three TLS files",
                );
                None
            }
            (None, Some(key), Some(cert), Some(cas)) => Some(IdentityPaths::Files {
                cert: PathBuf::from(cert),
                key: PathBuf::from(key),
                cas: PathBuf::from(cas),
            }),
            (None, None, None, None) => {
                self.problem(
                    "teleport.identity",
                    "no Teleport credentials; set identity = \"/path/auth_id\" (tctl auth sign --format=file) or client_key, client_crt and root_cas (tctl auth sign --format=tls)",
                );
                None
            }
            (None, key, crt, cas) => {
                for (name, v) in [("client_key", key), ("client_crt", crt), ("root_cas", cas)] {
                    if v.is_none() {
                        self.problem(
                            format!("teleport.{name}"),
                            "is required when any of client_key, client_crt, root_cas is set (the three files of tctl auth sign --format=tls)",
                        );
                    }
                }
                None
            }
        };
        let teleport = address_ok.then_some(TeleportSettings {
            address,
            init_timeout: INIT_TIMEOUT,
            keepalive: crate::teleport::client::KEEPALIVE_INTERVAL,
            connection,
            proxy_ca: None,
            plugin_name,
            timezone,
        });
        (teleport, identity)
    }

    #[allow(clippy::type_complexity)]
    pub(super) fn mattermost(&mut self, root: &Table) -> Option<MattermostSection> {
        let s = self.section(root, "mattermost", MATTERMOST_KEYS);
        let url = self
            .required(&s, "url", "https://mattermost.example.com")
            .and_then(|u| match parse_http_url(&u) {
                Ok(url) => Some(url),
                Err(why) => {
                    self.problem(
                        "mattermost.url",
                        format!("{why}; use e.g. https://mattermost.example.com"),
                    );
                    None
                }
            });
        let team = self
            .required(&s, "team", "team-name")
            .and_then(|t| self.url_name("mattermost.team", "team", &t).then_some(t));
        let channel = self.required(&s, "channel", "channel-name").and_then(|c| {
            self.url_name("mattermost.channel", "channel", &c)
                .then_some(c)
        });
        let token = self
            .required(&s, "token", "the bot's access token")
            .map(|t| {
                if t.starts_with('/') || t.starts_with("./") {
                    TokenSource::File(PathBuf::from(t))
                } else {
                    TokenSource::Literal(Secret::new(t))
                }
            });
        let secret = self
            .required(&s, "secret", "output of openssl rand -hex 32")
            .filter(
                |secret| match crate::review::signature::weak_secret(secret) {
                    Some(why) => {
                        self.problem("mattermost.secret", why);
                        false
                    }
                    None => true,
                },
            )
            .map(Secret::new);
        let recipients = self.string_list(
            "mattermost.recipients",
            s.get("recipients"),
            check_recipient,
        );
        let role_map = self.role_map("mattermost.role_to_recipients", s.get("role_to_recipients"));
        let approvers = self
            .string_list("mattermost.approvers", s.get("approvers"), check_approver)
            .into_iter()
            // "@alice" is how Mattermost shows usernames; the API wants "alice".
            .map(|a| a.strip_prefix('@').unwrap_or(&a).to_owned())
            .collect();
        let approver_channels = self.string_list(
            "mattermost.approver_channels",
            s.get("approver_channels"),
            check_channel,
        );
        let max_suggested_reviewers = self
            .integer(
                &s,
                "max_suggested_reviewers",
                0,
                MAX_SUGGESTED_REVIEWERS as i64,
            )
            .map_or(DEFAULT_MAX_SUGGESTED_REVIEWERS, |v| v as usize);

        let default = RateLimit::default();
        let per_second = self.integer(&s, "rate_limit_per_second", 0, i64::from(u32::MAX));
        let burst = self.integer(&s, "rate_limit_burst", 1, i64::from(u32::MAX));
        let rate_limit = RateLimit {
            per_second: per_second.map_or(default.per_second, |v| v as u32),
            burst: burst.map_or(default.burst, |v| v as u32),
        };

        // Read at start (like the identity files), so `parse` stays a pure function of the text.
        self.ca_file = self.string(&s, "ca_file").map(PathBuf::from);

        let level = match self.string(&s, "priority") {
            None => Some(Priority::None),
            Some(text) => {
                let parsed = Priority::parse(&text);
                if parsed.is_none() {
                    self.problem(
                        s.key("priority"),
                        format!(
                            "{text:?} is not a choice; use \"none\", \"important\" or \"urgent\""
                        ),
                    );
                }
                parsed
            }
        };
        let requested_ack = self.boolean(&s, "requested_ack");

        Some(MattermostSection {
            settings: MattermostSettings {
                url: url?,
                team: team?,
                channel: channel?,
                token: token?,
                rate_limit,
                retry: RetryPolicy::default(),
                ca_bundle: None,
            },
            secret: secret?,
            recipients,
            role_map,
            approvers,
            approver_channels,
            max_suggested_reviewers,
            priority: PrioritySettings {
                priority: level?,
                requested_ack: requested_ack?,
            },
        })
    }

    /// Team and channel names must be URL names (what the API looks up), not display names.
    pub(super) fn url_name(&mut self, key: &str, what: &str, name: &str) -> bool {
        let ok = name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !ok {
            self.problem(
                key,
                format!(
                    "{name:?} is not a {what} URL name; use the name from the {what}'s address (lowercase letters, digits, '-' and '_', at most 64), not its display name"
                ),
            );
        }
        ok
    }

    pub(super) fn http(&mut self, root: &Table) -> Option<HttpSettings> {
        let s = self.section(root, "http", HTTP_KEYS);
        let public_url = self
            .required(&s, "public_addr", "teleport-mattermost.example.com")
            .and_then(|addr| {
                let with_scheme = if addr.contains("://") {
                    addr.clone()
                } else {
                    format!("https://{addr}")
                };
                match parse_http_url(&with_scheme) {
                    Ok(url) if url.query().is_none() && url.fragment().is_none() => Some(url),
                    Ok(_) => {
                        self.problem(
                            "http.public_addr",
                            "must not have a query or fragment; use e.g. https://teleport-mattermost.example.com",
                        );
                        None
                    }
                    Err(why) => {
                        self.problem(
                            "http.public_addr",
                            format!("{addr:?}: {why}; use e.g. teleport-mattermost.example.com or https://teleport-mattermost.example.com:8081"),
                        );
                        None
                    }
                }
            });
        let listen = self
            .string(&s, "listen_addr")
            .unwrap_or_else(|| DEFAULT_LISTEN_ADDR.to_owned());
        let listen_addr = match parse_listen_addr(&listen) {
            Some(a) => Some(a),
            None => {
                self.problem(
                    "http.listen_addr",
                    format!("{listen:?} is not an address to listen on; use [ip]:port, e.g. \":8081\" (all interfaces) or \"127.0.0.1:8081\""),
                );
                None
            }
        };
        let key = self.string(&s, "https_key_file").map(PathBuf::from);
        let cert = self.string(&s, "https_cert_file").map(PathBuf::from);
        let tls_ok = match (&key, &cert) {
            (Some(_), None) => {
                self.problem(
                    "http.https_cert_file",
                    "is required when https_key_file is set; give both or neither",
                );
                false
            }
            (None, Some(_)) => {
                self.problem(
                    "http.https_key_file",
                    "is required when https_cert_file is set; give both or neither",
                );
                false
            }
            _ => true,
        };
        let deny_reason = self.reason_prompt(&s, "deny_reason");
        let approve_reason = self.reason_prompt(&s, "approve_reason");
        let (public_url, listen_addr) = (public_url?, listen_addr?);
        tls_ok.then_some(HttpSettings {
            listen_addr,
            public_url,
            https_cert_file: cert,
            https_key_file: key,
            deny_reason: deny_reason?,
            approve_reason: approve_reason?,
        })
    }

    pub(super) fn requester(&mut self, root: &Table) -> Option<RequesterSettings> {
        let s = self.section(root, "requester", REQUESTER_KEYS);
        let lookup = match self.string(&s, "lookup") {
            None => Some(RequesterLookup::None),
            Some(text) => {
                let parsed = RequesterLookup::parse(&text);
                if parsed.is_none() {
                    self.problem(
                        s.key("lookup"),
                        format!(
                            "{text:?} is not a choice; use \"email\", \"username\" or \"none\""
                        ),
                    );
                }
                parsed
            }
        };
        let notify_on_post = self.boolean(&s, "notify_on_post");
        Some(RequesterSettings {
            lookup: lookup?,
            notify_on_post: notify_on_post?,
        })
    }

    /// `Some(None)` when there is no [reminders] section.
    pub(super) fn reminders(&mut self, root: &Table) -> Option<Option<ReminderSettings>> {
        let s = self.section(root, "reminders", REMINDER_KEYS);
        if s.table.is_none_or(|t| t.is_empty()) {
            return Some(None);
        }
        let duration = |checker: &mut Self, key: &str| -> Option<Option<std::time::Duration>> {
            match checker.string(&s, key) {
                None => Some(None),
                Some(text) => match crate::settings::parse_duration(&text) {
                    Ok(d) => Some(Some(d)),
                    Err(why) => {
                        checker.problem(s.key(key), why);
                        None
                    }
                },
            }
        };
        let after = duration(self, "after");
        let every = duration(self, "every");
        let max = self.integer(&s, "max", 1, i64::from(crate::settings::MAX_REMINDERS));
        let after = match after? {
            Some(a) => a,
            None => {
                self.problem(
                    s.key("after"),
                    "is required for reminders; set e.g. after = \"30m\"",
                );
                return None;
            }
        };
        let settings = ReminderSettings {
            after,
            every: every?.unwrap_or(after),
            max: max.map_or(crate::settings::DEFAULT_REMINDERS, |m| m as u32),
        };
        if let Some((field, message)) = settings.problem() {
            self.problem(s.key(field), message);
            return None;
        }
        Some(Some(settings))
    }

    pub(super) fn log(&mut self, root: &Table) -> Option<LogSettings> {
        let s = self.section(root, "log", LOG_KEYS);
        let output = match self.string(&s, "output") {
            None => LogOutput::Stderr,
            Some(o) if o.eq_ignore_ascii_case("stderr") => LogOutput::Stderr,
            Some(o) if o.eq_ignore_ascii_case("stdout") => LogOutput::Stdout,
            Some(path) => LogOutput::File(PathBuf::from(path)),
        };
        let severity = match self.string(&s, "severity") {
            None => Some(tracing::Level::INFO),
            Some(name) => {
                let level = parse_severity(&name);
                if level.is_none() {
                    self.problem(
                        "log.severity",
                        format!("{name:?} is not a severity; use DEBUG, INFO, WARN or ERROR"),
                    );
                }
                level
            }
        };
        let format = match self.string(&s, "format").map(|f| f.to_ascii_lowercase()) {
            None => Some(LogFormat::Text),
            Some(f) if f == "text" => Some(LogFormat::Text),
            Some(f) if f == "json" => Some(LogFormat::Json),
            Some(f) => {
                self.problem(
                    "log.format",
                    format!("{f:?} is not a log format; use \"text\" or \"json\""),
                );
                None
            }
        };
        Some(LogSettings {
            output,
            severity: severity?,
            format: format?,
            debug: false,
        })
    }
}
