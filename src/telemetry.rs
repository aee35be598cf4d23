//! Logging setup (text or JSON, stdout/stderr/file).

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use tracing::Level;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

/// Where log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogOutput {
    /// Standard output.
    Stdout,
    /// Standard error (the default, as in Teleport's plugins).
    Stderr,
    /// A file, appended to and created if missing.
    File(PathBuf),
}

/// How each log line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Logging settings: `[log]` of the standalone config, or the operator's flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// Where to write.
    pub output: LogOutput,
    /// The least severe level written; `RUST_LOG`, when set, replaces it.
    pub severity: Level,
    /// Text or JSON.
    pub format: LogFormat,
    /// `start -d`: raise the default level to DEBUG, even over `RUST_LOG`
    /// (whose per-module directives still apply).
    pub debug: bool,
}

impl Default for LogSettings {
    /// stderr, INFO, text: the defaults of Teleport's plugins.
    fn default() -> Self {
        Self {
            output: LogOutput::Stderr,
            severity: Level::INFO,
            format: LogFormat::Text,
            debug: false,
        }
    }
}

/// Parses a severity name as Teleport's plugins accept it (logrus names, any case):
/// `trace`, `debug`, `info`, `warn`/`warning`, `error`; `fatal` and `panic` mean ERROR.
pub fn parse_severity(name: &str) -> Option<Level> {
    Some(match name.trim().to_ascii_lowercase().as_str() {
        "trace" => Level::TRACE,
        "debug" => Level::DEBUG,
        "info" => Level::INFO,
        "warn" | "warning" => Level::WARN,
        "error" | "err" | "fatal" | "panic" => Level::ERROR,
        _ => return None,
    })
}

/// Why logging could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log file cannot be opened for appending.
    #[error(
        "cannot open log file {path}: {source}; check that its directory exists and is writable, or set [log] output = \"stderr\""
    )]
    OpenLogFile {
        /// The configured file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `RUST_LOG` holds an invalid filter.
    #[error(
        "RUST_LOG={value:?} is not a valid filter ({reason}); use e.g. RUST_LOG=info or RUST_LOG=teleport_mattermost=debug, or unset it"
    )]
    InvalidFilter {
        /// The variable's value.
        value: String,
        /// The parser's message.
        reason: String,
    },
    /// A global subscriber is already installed.
    #[error("logging is already initialised: {0}")]
    AlreadyInitialized(String),
}

/// Dependencies that are very chatty at DEBUG; they log at most at INFO unless `RUST_LOG`
/// asks otherwise, so `-d` shows the plugin's own decisions rather than HTTP/2 frames.
const NOISY_TARGETS: &[&str] = &[
    "h2",
    "hyper",
    "hyper_util",
    "reqwest",
    "rustls",
    "tonic",
    "tower",
    "tower_http",
    "kube_client",
    "kube_runtime",
];

/// Builds the level filter: `RUST_LOG` when set, else `severity`; `debug` then raises the
/// default level to DEBUG.
fn build_filter(
    settings: &LogSettings,
    rust_log: Option<&str>,
) -> Result<EnvFilter, TelemetryError> {
    let rust_log = rust_log.map(str::trim).filter(|v| !v.is_empty());
    let mut filter = match rust_log {
        Some(value) => {
            EnvFilter::builder()
                .parse(value)
                .map_err(|e| TelemetryError::InvalidFilter {
                    value: value.to_owned(),
                    reason: e.to_string(),
                })?
        }
        None => {
            let dep_level = if settings.severity < Level::INFO {
                // ERROR/WARN are "less than" INFO in tracing's ordering (less verbose).
                settings.severity
            } else {
                Level::INFO
            };
            let mut f = EnvFilter::default()
                .add_directive(LevelFilter::from_level(settings.severity).into());
            for target in NOISY_TARGETS {
                if let Ok(d) = format!("{target}={dep_level}").parse() {
                    f = f.add_directive(d);
                }
            }
            f
        }
    };
    if settings.debug {
        filter = filter.add_directive(LevelFilter::DEBUG.into());
    }
    Ok(filter)
}

/// Installs the global tracing subscriber. Call once, early in `main`.
pub fn init_logging(settings: &LogSettings) -> Result<(), TelemetryError> {
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = build_filter(settings, rust_log.as_deref())?;
    let (writer, ansi) = match &settings.output {
        LogOutput::Stdout => (
            BoxMakeWriter::new(std::io::stdout),
            std::io::stdout().is_terminal(),
        ),
        LogOutput::Stderr => (
            BoxMakeWriter::new(std::io::stderr),
            std::io::stderr().is_terminal(),
        ),
        LogOutput::File(path) => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| TelemetryError::OpenLogFile {
                    path: path.clone(),
                    source,
                })?;
            (BoxMakeWriter::new(Arc::new(file)), false)
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let result = match settings.format {
        LogFormat::Text => builder.with_ansi(ansi).try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    result.map_err(|e| TelemetryError::AlreadyInitialized(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_names_follow_logrus() {
        assert_eq!(parse_severity("INFO"), Some(Level::INFO));
        assert_eq!(parse_severity("warning"), Some(Level::WARN));
        assert_eq!(parse_severity("Warn"), Some(Level::WARN));
        assert_eq!(parse_severity("DEBUG"), Some(Level::DEBUG));
        assert_eq!(parse_severity("fatal"), Some(Level::ERROR));
        assert_eq!(parse_severity("loud"), None);
    }

    #[test]
    fn severity_is_the_default_level() {
        let s = LogSettings {
            severity: Level::WARN,
            ..LogSettings::default()
        };
        let f = build_filter(&s, None).unwrap();
        assert_eq!(f.max_level_hint(), Some(LevelFilter::WARN));
    }

    #[test]
    fn rust_log_replaces_severity_and_debug_raises_it() {
        let s = LogSettings::default();
        let f = build_filter(&s, Some("error")).unwrap();
        assert_eq!(f.max_level_hint(), Some(LevelFilter::ERROR));
        let s = LogSettings {
            debug: true,
            ..LogSettings::default()
        };
        let f = build_filter(&s, Some("error")).unwrap();
        assert_eq!(f.max_level_hint(), Some(LevelFilter::DEBUG));
    }

    #[test]
    fn bad_rust_log_names_the_variable() {
        let err = build_filter(&LogSettings::default(), Some("=[")).unwrap_err();
        assert!(err.to_string().contains("RUST_LOG"), "{err}");
    }
}
