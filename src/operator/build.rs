//! Pure reconcile stages: check a `MattermostAccessPlugin` and the data of the Secrets it
//! references, and build the `PluginSettings` and `Credentials` of its bridge instance.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::crd::{CaBundleKind, CaBundleRef, ConnectionSpec, MattermostAccessPluginSpec};
use crate::instance::Credentials;
use crate::settings::{
    CaBundle, CallbackSettings, DEFAULT_CONCURRENCY, InstanceId, MattermostSettings,
    PluginSettings, PrioritySettings, RateLimit, ReminderSettings, RequesterSettings, RetryPolicy,
    Secret, TeleportSettings, TokenSource,
};
use crate::teleport::identity::{Identity, IdentityError, PemSource};
use crate::teleport::route::ConnectionMode;

/// The data of the Secrets (or ConfigMaps) a spec references, by name; `None` for one that
/// does not exist.
pub type SecretData = BTreeMap<String, Option<BTreeMap<String, Vec<u8>>>>;

/// Everything a spec references, as read from the cluster.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Referenced Secrets.
    pub secrets: SecretData,
    /// Referenced ConfigMaps.
    pub config_maps: SecretData,
}

/// One thing wrong with an object or its Secrets, phrased for `kubectl describe`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A referenced Secret does not exist.
    #[error(
        "Secret {namespace}/{name} does not exist; create it (see manifests/examples/secrets.yaml)"
    )]
    SecretMissing {
        /// Namespace.
        namespace: String,
        /// Secret name.
        name: String,
    },
    /// A referenced ConfigMap does not exist.
    #[error("ConfigMap {namespace}/{name} does not exist; create it or fix the reference")]
    ConfigMapMissing {
        /// Namespace.
        namespace: String,
        /// ConfigMap name.
        name: String,
    },
    /// A referenced Secret or ConfigMap lacks a key.
    #[error("{kind} {namespace}/{name} has no key {key}{hint}")]
    KeyMissing {
        /// `Secret` or `ConfigMap`.
        kind: &'static str,
        /// Namespace.
        namespace: String,
        /// Secret name.
        name: String,
        /// The missing key.
        key: String,
        /// What usually goes there.
        hint: String,
    },
    /// The Teleport identity is unusable (malformed, mismatched, expired or not yet valid).
    #[error("{0}")]
    Identity(IdentityError),
    /// A value is not usable although the schema accepted it.
    #[error("{field}: {message}")]
    Invalid {
        /// The spec field.
        field: String,
        /// What is wrong.
        message: String,
    },
}

impl Problem {
    /// CamelCase reason for conditions and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            Problem::SecretMissing { .. } => "SecretMissing",
            Problem::ConfigMapMissing { .. } => "ConfigMapMissing",
            Problem::KeyMissing { .. } => "SecretKeyMissing",
            Problem::Identity(IdentityError::Expired { .. }) => "CertificateExpired",
            Problem::Identity(IdentityError::NotYetValid { .. }) => "CertificateNotYetValid",
            Problem::Identity(_) => "IdentityInvalid",
            Problem::Invalid { .. } => "InvalidSpec",
        }
    }

    /// True when the problem is about the Teleport identity only: a running instance can keep
    /// its last good identity.
    pub fn is_identity(&self) -> bool {
        matches!(self, Problem::Identity(_))
    }
}

/// Settings and credentials for one instance.
#[derive(Clone)]
pub struct Built {
    /// Everything but the rotating secrets.
    pub settings: PluginSettings,
    /// Identity and token.
    pub credentials: Credentials,
}

/// Why an instance could not be built.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// Every problem found.
    pub problems: Vec<Problem>,
}

/// Operator-wide settings that are not in the CR.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// How long a watch may take to send INIT.
    pub init_timeout: Duration,
    /// Concurrency per instance.
    pub concurrency: usize,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            init_timeout: Duration::from_secs(15),
            concurrency: DEFAULT_CONCURRENCY,
        }
    }
}

struct Reader<'a> {
    namespace: &'a str,
    sources: &'a Sources,
    problems: Vec<Problem>,
}

impl Reader<'_> {
    /// A key of a referenced Secret.
    fn key(&mut self, name: &str, key: &str, hint: &str) -> Option<Vec<u8>> {
        self.key_of(CaBundleKind::Secret, name, key, hint)
    }

    /// A key of a referenced Secret or ConfigMap.
    fn key_of(&mut self, kind: CaBundleKind, name: &str, key: &str, hint: &str) -> Option<Vec<u8>> {
        let (objects, kind_name) = match kind {
            CaBundleKind::Secret => (&self.sources.secrets, "Secret"),
            CaBundleKind::ConfigMap => (&self.sources.config_maps, "ConfigMap"),
        };
        match objects.get(name) {
            Some(Some(data)) => match data.get(key) {
                Some(v) => Some(v.clone()),
                None => {
                    self.problems.push(Problem::KeyMissing {
                        kind: kind_name,
                        namespace: self.namespace.to_string(),
                        name: name.to_string(),
                        key: key.to_string(),
                        hint: hint.to_string(),
                    });
                    None
                }
            },
            _ => {
                let (namespace, name) = (self.namespace.to_string(), name.to_string());
                let missing = match kind {
                    CaBundleKind::Secret => Problem::SecretMissing { namespace, name },
                    CaBundleKind::ConfigMap => Problem::ConfigMapMissing { namespace, name },
                };
                if !self.problems.contains(&missing) {
                    self.problems.push(missing);
                }
                None
            }
        }
    }
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).trim().to_string()
}

/// Checks the identity Secret's data and parses the identity, checking its validity at `now`.
fn identity(
    reader: &mut Reader<'_>,
    spec: &MattermostAccessPluginSpec,
    now: DateTime<Utc>,
) -> Option<Identity> {
    let r = &spec.teleport.identity_secret_ref;
    let namespace = reader.namespace.to_string();
    let label = |key: &str| format!("Secret {namespace}/{} key {key}", r.name);
    let parsed = match &r.identity_file_key {
        Some(key) => {
            let bytes = reader.key(
                &r.name,
                key,
                " (an identity file from tctl auth sign --format=file)",
            )?;
            Identity::from_identity_file(PemSource::new(&label(key), &bytes))
        }
        None => {
            let hint = " (from tctl auth sign --format=tls)";
            let cert = reader.key(&r.name, &r.cert_key, hint);
            let key = reader.key(&r.name, &r.key_key, hint);
            let cas = reader.key(&r.name, &r.cas_key, hint);
            let (cert, key, cas) = (cert?, key?, cas?);
            Identity::from_pems(
                PemSource::new(&label(&r.cert_key), &cert),
                PemSource::new(&label(&r.key_key), &key),
                PemSource::new(&label(&r.cas_key), &cas),
            )
        }
    };
    match parsed.and_then(|id| id.check_time(now).map(|()| id)) {
        Ok(id) => Some(id),
        Err(e) => {
            reader.problems.push(Problem::Identity(e));
            None
        }
    }
}

/// Reads and checks the CA bundle `r` points at, if any; a problem is reported for `field`.
fn read_ca_bundle(
    reader: &mut Reader<'_>,
    r: Option<&CaBundleRef>,
    field: &str,
) -> Option<CaBundle> {
    let r = r?;
    let bytes = reader.key_of(r.kind, &r.name, &r.key, " (PEM CA certificates)")?;
    let kind = match r.kind {
        CaBundleKind::Secret => "Secret",
        CaBundleKind::ConfigMap => "ConfigMap",
    };
    let label = format!("{kind} {}/{} key {}", reader.namespace, r.name, r.key);
    CaBundle::from_pem(&label, &bytes)
        .map_err(|message| {
            reader.problems.push(Problem::Invalid {
                field: field.into(),
                message,
            })
        })
        .ok()
}

/// Builds an instance's settings and credentials, or reports every problem found.
pub fn build(
    namespace: &str,
    name: &str,
    spec: &MattermostAccessPluginSpec,
    sources: &Sources,
    defaults: &Defaults,
    now: DateTime<Utc>,
) -> Result<Built, Rejected> {
    let mut reader = Reader {
        namespace,
        sources,
        problems: Vec::new(),
    };
    let identity = identity(&mut reader, spec, now);

    let token_ref = &spec.mattermost.token_secret_ref;
    let token = reader
        .key(
            &token_ref.name,
            &token_ref.key,
            " (the Mattermost bot's access token)",
        )
        .map(text);
    if token.as_deref() == Some("") {
        reader.problems.push(Problem::Invalid {
            field: format!(
                "Secret {namespace}/{} key {}",
                token_ref.name, token_ref.key
            ),
            message: "the bot token is empty".into(),
        });
    }

    let instance = InstanceId::new(namespace, name);
    let callback = match &spec.callback {
        None => None,
        Some(cb) => {
            let secret = reader
                .key(
                    &cb.signing_secret_ref.name,
                    &cb.signing_secret_ref.key,
                    " (a long random value, e.g. openssl rand -hex 32)",
                )
                .map(text);
            let base = cb.public_url.trim_end_matches('/');
            let url = format!("{base}/v1/actions/{namespace}/{name}");
            let dialog_url = format!("{base}/v1/dialogs/{namespace}/{name}");
            let weak = secret
                .as_deref()
                .and_then(crate::review::signature::weak_secret);
            match (
                secret,
                url::Url::parse(&url).and_then(|a| Ok((a, url::Url::parse(&dialog_url)?))),
            ) {
                (Some(_), _) if weak.is_some() => {
                    reader.problems.push(Problem::Invalid {
                        field: "callback.signingSecretRef".into(),
                        message: format!("the signing secret {}", weak.unwrap_or_default()),
                    });
                    None
                }
                (Some(s), Ok((action_url, dialog_url))) => Some(CallbackSettings {
                    action_url,
                    dialog_url,
                    signing_secret: Secret::new(s),
                    answer_within: crate::callback::DEFAULT_ANSWER_WITHIN,
                    deny_reason: cb.deny_reason,
                    approve_reason: cb.approve_reason,
                }),
                (_, Err(e)) => {
                    reader.problems.push(Problem::Invalid {
                        field: "callback.publicURL".into(),
                        message: format!("{e}"),
                    });
                    None
                }
                (None, _) => None,
            }
        }
    };
    let mattermost_ca = read_ca_bundle(
        &mut reader,
        spec.mattermost.ca_bundle_ref.as_ref(),
        "mattermost.caBundleRef",
    );
    let proxy_ca = read_ca_bundle(
        &mut reader,
        spec.teleport.ca_bundle_ref.as_ref(),
        "teleport.caBundleRef",
    );
    let timezone =
        match crate::access_monitoring::timezone(spec.teleport.timezone.as_deref().unwrap_or("")) {
            Ok(tz) => tz,
            Err(e) => {
                reader.problems.push(Problem::Invalid {
                    field: "teleport.timezone".into(),
                    message: e.to_string(),
                });
                chrono_tz::Tz::UTC
            }
        };
    let plugin_name = spec
        .teleport
        .plugin_name
        .clone()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| crate::access_monitoring::DEFAULT_PLUGIN_NAME.to_owned());
    let url = match url::Url::parse(&spec.mattermost.url) {
        Ok(u) => Some(u),
        Err(e) => {
            reader.problems.push(Problem::Invalid {
                field: "mattermost.url".into(),
                message: e.to_string(),
            });
            None
        }
    };

    let reminders = spec.reminders.as_ref().and_then(|r| {
        let mut duration = |field: &str, text: &str| match crate::settings::parse_duration(text) {
            Ok(d) => Some(d),
            Err(message) => {
                reader.problems.push(Problem::Invalid {
                    field: format!("reminders.{field}"),
                    message,
                });
                None
            }
        };
        let after = duration("after", &r.after)?;
        let every = match &r.every {
            Some(text) => duration("every", text)?,
            None => after,
        };
        let settings = ReminderSettings {
            after,
            every,
            max: r.max,
        };
        if let Some((field, message)) = settings.problem() {
            reader.problems.push(Problem::Invalid {
                field: format!("reminders.{field}"),
                message,
            });
            return None;
        }
        Some(settings)
    });
    let requester = spec
        .requester
        .as_ref()
        .map(|r| RequesterSettings {
            lookup: r.lookup,
            notify_on_post: r.notify_on_post,
        })
        .unwrap_or_default();

    let problems = reader.problems;
    match (identity, token, url) {
        (Some(identity), Some(token), Some(url)) if problems.is_empty() => {
            let rate = spec.rate_limit();
            let token = TokenSource::Literal(Secret::new(token));
            Ok(Built {
                settings: PluginSettings {
                    instance,
                    teleport: TeleportSettings {
                        address: spec.teleport.address.clone(),
                        init_timeout: defaults.init_timeout,
                        keepalive: crate::teleport::client::KEEPALIVE_INTERVAL,
                        connection: match spec.teleport.connection {
                            ConnectionSpec::Auto => ConnectionMode::Auto,
                            ConnectionSpec::Auth => ConnectionMode::Auth,
                            ConnectionSpec::Proxy => ConnectionMode::Proxy,
                        },
                        proxy_ca,
                        plugin_name,
                        timezone,
                    },
                    mattermost: MattermostSettings {
                        url,
                        team: spec.mattermost.team.clone(),
                        channel: spec.mattermost.channel.clone(),
                        // The token travels in `credentials` so it can rotate without a
                        // restart; settings compare equal across a token change.
                        token: TokenSource::Literal(Secret::new("")),
                        rate_limit: RateLimit {
                            per_second: rate.per_second,
                            burst: rate.burst,
                        },
                        retry: RetryPolicy::default(),
                        ca_bundle: mattermost_ca,
                    },
                    callback,
                    recipients: spec.recipients.clone(),
                    role_to_recipients: spec.role_to_recipients.clone(),
                    approvers: spec.approvers.clone(),
                    approver_channels: spec.approver_channels.clone(),
                    max_suggested_reviewers: spec.max_suggested_reviewers(),
                    concurrency: defaults.concurrency,
                    requester,
                    reminders,
                    priority: PrioritySettings {
                        priority: spec.mattermost.priority,
                        requested_ack: spec.mattermost.requested_ack,
                    },
                },
                credentials: Credentials { identity, token },
            })
        }
        _ => Err(Rejected { problems }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> MattermostAccessPluginSpec {
        serde_yaml_ng::from_str(yaml).expect("spec")
    }

    const SPEC: &str = r#"
teleport:
  address: teleport.example.com:3025
  identitySecretRef: {name: identity}
mattermost:
  url: https://mm.example.com
  team: eng
  channel: access
  tokenSecretRef: {name: token}
callback:
  signingSecretRef: {name: signing}
  publicURL: https://cb.example.com/
approvers: [alice]
"#;

    fn secrets(identity: Option<&[(&str, &[u8])]>) -> Sources {
        let mut out = SecretData::new();
        out.insert(
            "identity".into(),
            identity.map(|kv| {
                kv.iter()
                    .map(|(k, v)| (k.to_string(), v.to_vec()))
                    .collect()
            }),
        );
        out.insert(
            "token".into(),
            Some(BTreeMap::from([("token".into(), b"bot-token\n".to_vec())])),
        );
        out.insert(
            "signing".into(),
            Some(BTreeMap::from([(
                "signingSecret".into(),
                b"0123456789abcdef0123456789abcdef".to_vec(),
            )])),
        );
        Sources {
            secrets: out,
            config_maps: SecretData::new(),
        }
    }

    #[test]
    fn a_missing_secret_and_a_missing_key_are_named() {
        let got = build(
            "ns",
            "p",
            &spec(SPEC),
            &secrets(None),
            &Defaults::default(),
            Utc::now(),
        )
        .err()
        .expect("rejected");
        assert_eq!(
            got.problems,
            vec![Problem::SecretMissing {
                namespace: "ns".into(),
                name: "identity".into()
            }]
        );
        assert_eq!(got.problems[0].reason(), "SecretMissing");

        let got = build(
            "ns",
            "p",
            &spec(SPEC),
            &secrets(Some(&[("auth.crt", b"x"), ("auth.key", b"y")])),
            &Defaults::default(),
            Utc::now(),
        )
        .err()
        .expect("rejected");
        assert_eq!(got.problems.len(), 1);
        assert_eq!(
            got.problems[0].to_string(),
            "Secret ns/identity has no key auth.cas (from tctl auth sign --format=tls)"
        );
    }

    #[test]
    fn garbage_pem_is_an_identity_problem_naming_the_key() {
        let got = build(
            "ns",
            "p",
            &spec(SPEC),
            &secrets(Some(&[
                ("auth.crt", b"not a pem"),
                ("auth.key", b"nope"),
                ("auth.cas", b"nope"),
            ])),
            &Defaults::default(),
            Utc::now(),
        )
        .err()
        .expect("rejected");
        assert!(
            got.problems.iter().all(Problem::is_identity),
            "{:?}",
            got.problems
        );
        assert!(
            got.problems[0]
                .to_string()
                .contains("Secret ns/identity key auth.crt"),
            "{}",
            got.problems[0]
        );
    }

    #[test]
    fn a_short_signing_secret_is_refused() {
        let mut data = secrets(None);
        data.secrets.insert(
            "signing".into(),
            Some(BTreeMap::from([(
                "signingSecret".into(),
                b"short".to_vec(),
            )])),
        );
        let got = build(
            "ns",
            "p",
            &spec(SPEC),
            &data,
            &Defaults::default(),
            Utc::now(),
        )
        .err()
        .expect("rejected");
        assert!(got.problems.iter().any(|p| matches!(
            p,
            Problem::Invalid { field, .. } if field == "callback.signingSecretRef"
        )));
    }
}
