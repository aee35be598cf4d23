//! `teleport-mattermost`: the command line. Everything but argument handling lives in the
//! library crate.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use teleport_mattermost::config::{self, DEFAULT_CONFIG_PATH};
use teleport_mattermost::standalone;
use teleport_mattermost::telemetry::{self, LogOutput};

/// The git ref recorded by build.rs (`unknown` outside a git checkout).
const GIT_REF: &str = env!("TELEPORT_MATTERMOST_GIT_REF");

/// Teleport access requests in Mattermost, with Approve/Deny buttons.
#[derive(Debug, Parser)]
#[command(name = "teleport-mattermost", about, disable_version_flag = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Prints an example TOML configuration file, with every key explained.
    Configure,
    /// Prints the version and exits.
    Version,
    /// Prints the MattermostAccessPlugin CustomResourceDefinition as YAML.
    Crd,
    /// Runs the plugin standalone from a TOML configuration file.
    Start {
        /// TOML config file path.
        #[arg(
            short = 'c',
            long = "config",
            value_name = "FILE",
            default_value = DEFAULT_CONFIG_PATH,
            env = "TELEPORT_MATTERMOST_CONFIG"
        )]
        config: PathBuf,
        /// Enable verbose (DEBUG) logging.
        #[arg(short = 'd', long)]
        debug: bool,
        /// Serve the button callback over plain HTTP (e.g. behind a TLS-terminating proxy).
        #[arg(long = "insecure-no-tls")]
        insecure_no_tls: bool,
    },
}

fn main() -> ExitCode {
    // One TLS crypto provider for the whole process, before anything touches TLS. An Err
    // only means one is installed already, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let cli = Cli::parse();
    match cli.command {
        Command::Configure => {
            print!("{}", config::TEMPLATE);
            ExitCode::SUCCESS
        }
        Command::Crd => {
            print!("{}", teleport_mattermost::operator::crd::crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!(
                "teleport-mattermost v{} git:{GIT_REF}",
                env!("CARGO_PKG_VERSION")
            );
            ExitCode::SUCCESS
        }
        Command::Start {
            config,
            debug,
            insecure_no_tls,
        } => start(config, debug, insecure_no_tls),
    }
}

fn start(path: PathBuf, debug: bool, insecure_no_tls: bool) -> ExitCode {
    let mut config = match config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            // The error lists every problem, one per line, each with its key.
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    config.log.debug = debug;
    if let Err(e) = telemetry::init_logging(&config.log) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    tracing::info!(
        config = %path.display(),
        version = env!("CARGO_PKG_VERSION"),
        git = GIT_REF,
        "configuration loaded"
    );
    if debug {
        tracing::debug!("DEBUG logging enabled");
    }
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let options = standalone::Options {
        debug,
        insecure_no_tls,
        config_path: Some(path),
    };
    let logs_on_stderr = config.log.output == LogOutput::Stderr;
    let result = runtime.block_on(standalone::run(config, options));
    match result {
        Ok(()) => {
            tracing::info!("Successfully shut down teleport-mattermost");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "teleport-mattermost stopped");
            // When logs go elsewhere, the operator running `start` should still see why.
            if !logs_on_stderr {
                eprintln!("error: {e}");
            }
            ExitCode::FAILURE
        }
    }
}
