//! The standalone TOML config (the original plugin's keys), validated into `PluginSettings`.
//!
//! The keys are those of Teleport's Mattermost plugin (`teleport-plugins/access/mattermost`,
//! and `addr`/`identity`/`recipients`/`[role_to_recipients]` of its successor in
//! `teleport/integrations/access/mattermost`), plus our additions, all listed in
//! [`TEMPLATE`]. Parsing walks the TOML table by hand instead of deriving `Deserialize`, so
//! that every problem (a missing key, a bad value, an unknown key) is reported in one go.
//!
//! One submodule per part: `template` (what `configure` prints), `layout` (keys written
//! outside their sections, as the seed document shows them), `checker` (typed reads that
//! collect problems), `sections` (each section into its settings) and `values` (checks of
//! single values).

mod checker;
mod layout;
mod sections;
mod template;
mod values;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Table;
use url::Url;

use crate::settings::{PluginSettings, ReasonPrompt, Secret, TokenSource};
use crate::telemetry::LogSettings;

pub use template::TEMPLATE;

/// The default config path of `start`, the same as Teleport's plugin.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/teleport-mattermost.toml";

/// The path, under [`HttpSettings::public_url`], that Mattermost POSTs button presses to
/// (the seed's path, kept so existing firewall and proxy rules still match).
pub const ACTION_PATH: &str = "mattermost_action";
/// Where the standalone server takes reason-dialog submissions, beside [`ACTION_PATH`].
pub const DIALOG_PATH: &str = "mattermost_dialog";

/// `teleport.addr` when not set, as in Teleport's plugin.
const DEFAULT_AUTH_SERVER: &str = "localhost:3025";
/// `http.listen_addr` when not set, as in Teleport's plugin.
const DEFAULT_LISTEN_ADDR: &str = ":8081";
/// How long the watch waits for INIT before reconnecting (CONTRACTS.md §1).
const INIT_TIMEOUT: Duration = Duration::from_secs(15);
/// The example token of [`TEMPLATE`]; flagged by [`StandaloneConfig::warnings`].
const EXAMPLE_TOKEN: &str = "api-token";

/// Everything `teleport-mattermost start` needs, from one TOML file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandaloneConfig {
    /// The bridge instance's settings.
    pub settings: PluginSettings,
    /// Where the Teleport identity is read from.
    pub identity: IdentityPaths,
    /// `mattermost.ca_file`: extra CAs (PEM) to trust for the Mattermost URL.
    pub mattermost_ca_file: Option<PathBuf>,
    /// `teleport.ca_file`: extra CAs (PEM) for a Teleport Proxy's web certificate.
    pub teleport_ca_file: Option<PathBuf>,
    /// Keys found outside their section and read from there anyway.
    pub layout_warnings: Vec<String>,
    /// The callback server.
    pub http: HttpSettings,
    /// Logging.
    pub log: LogSettings,
}

/// Where the plugin's Teleport identity lives on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityPaths {
    /// The three files of `tctl auth sign --format=tls`.
    Files {
        /// `client_crt`: the TLS client certificate.
        cert: PathBuf,
        /// `client_key`: its private key.
        key: PathBuf,
        /// `root_cas`: the cluster's CA certificates.
        cas: PathBuf,
    },
    /// `identity`: one file from `tctl auth sign --format=file`.
    IdentityFile(PathBuf),
}

/// The callback server (`[http]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// Where to listen.
    pub listen_addr: SocketAddr,
    /// The externally reachable base URL (`public_addr`, `https://` added when missing).
    pub public_url: Url,
    /// TLS certificate (PEM), given together with the key.
    pub https_cert_file: Option<PathBuf>,
    /// TLS private key (PEM), given together with the certificate.
    pub https_key_file: Option<PathBuf>,
    /// Whether Deny asks for a reason (`deny_reason`).
    pub deny_reason: ReasonPrompt,
    /// Whether Approve asks for a reason (`approve_reason`).
    pub approve_reason: ReasonPrompt,
}

/// One problem in a config file, tied to the key it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key, e.g. `mattermost.url`, or a section name.
    pub key: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error(
        "cannot read config file {path}: {source}; pass the right path with -c, or create one with `teleport-mattermost configure > {path}`"
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid TOML.
    #[error("{}invalid TOML: {message}", file_prefix(.path))]
    Syntax {
        /// The file, when known.
        path: Option<PathBuf>,
        /// The parser's message (with line and column).
        message: String,
    },
    /// The TOML is valid but some keys are missing or wrong; lists every problem.
    #[error("{}{} problem(s) in the config:{}", file_prefix(.path), .problems.len(), list(.problems))]
    Invalid {
        /// The file, when known.
        path: Option<PathBuf>,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

fn file_prefix(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!("{}: ", p.display()))
        .unwrap_or_default()
}

fn list(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("\n  - {p}")).collect()
}

impl ConfigError {
    /// The individual problems (empty for read and syntax errors).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid { problems, .. } => problems,
            _ => &[],
        }
    }

    fn in_file(self, file: &Path) -> Self {
        match self {
            ConfigError::Syntax { message, .. } => ConfigError::Syntax {
                path: Some(file.to_owned()),
                message,
            },
            ConfigError::Invalid { problems, .. } => ConfigError::Invalid {
                path: Some(file.to_owned()),
                problems,
            },
            other => other,
        }
    }
}

impl StandaloneConfig {
    /// Things that are allowed but probably unintended; `start` logs them at WARN.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = self.layout_warnings.clone();
        if self.settings.mattermost.token == TokenSource::Literal(Secret::new(EXAMPLE_TOKEN)) {
            out.push(
                "mattermost.token is the example value from `configure`; set the bot's access token".to_owned(),
            );
        }
        if self.settings.approvers.is_empty() && self.settings.approver_channels.is_empty() {
            out.push(format!(
                "mattermost.approvers and mattermost.approver_channels are empty: only members of {}/{} may approve or deny (checked with Mattermost at every press; before 0.2 anyone who could press a button could); list approvers or approver_channels to choose who decides",
                self.settings.mattermost.team, self.settings.mattermost.channel
            ));
        }
        out
    }
}

/// Reads and validates a config file; errors name the file.
pub fn load(path: &Path) -> Result<StandaloneConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text).map_err(|e| e.in_file(path))
}

/// Validates config text (pure: touches no files, so paths are not checked for existence).
pub fn parse(text: &str) -> Result<StandaloneConfig, ConfigError> {
    let mut root: Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Syntax {
            path: None,
            message: e.to_string().trim_end().to_owned(),
        })?;
    let moved = layout::sectioned(&mut root);
    let mut c = checker::Checker::default();
    let parsed = c.config(&root);
    match parsed {
        Some(mut config) if c.problems.is_empty() => {
            config.layout_warnings = moved;
            Ok(config)
        }
        _ => Err(ConfigError::Invalid {
            path: None,
            problems: c.problems,
        }),
    }
}
