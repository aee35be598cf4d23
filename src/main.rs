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
    /// Runs the Kubernetes operator: one plugin instance per MattermostAccessPlugin object.
    Operator(OperatorArgs),
    /// GETs an HTTP(S) URL and succeeds on 200: the chart's `helm test`, which runs this
    /// image against the operator's /readyz.
    Probe {
        /// The URL, e.g. http://teleport-mattermost:9090/readyz.
        url: String,
        /// Seconds to wait for an answer.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
    },
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

/// Flags of `operator`; each can also come from the environment (as the Helm chart sets them).
#[derive(Debug, clap::Args)]
struct OperatorArgs {
    /// Namespaces to watch, comma-separated; empty watches all namespaces.
    #[arg(
        long,
        env = "WATCH_NAMESPACES",
        value_delimiter = ',',
        default_value = ""
    )]
    namespaces: Vec<String>,
    /// Address of the plain-HTTP button callback server (put an Ingress in front).
    #[arg(long, env = "CALLBACK_ADDR", default_value = "0.0.0.0:8080")]
    callback_addr: std::net::SocketAddr,
    /// Address serving /healthz, /readyz and /metrics.
    #[arg(long, env = "PROBE_ADDR", default_value = "0.0.0.0:9090")]
    probe_addr: std::net::SocketAddr,
    /// Log format: text or json.
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    log_format: String,
    /// Log level (RUST_LOG, when set, takes precedence).
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Run watchers only while holding a coordination.k8s.io Lease (needed for 2+ replicas).
    #[arg(long, env = "LEADER_ELECTION", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    leader_election: bool,
    /// Name of the Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "teleport-mattermost")]
    lease_name: String,
    /// Namespace of the Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// This replica's identity in the Lease.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds button presses are still served after SIGTERM (unready meanwhile), so the
    /// Service stops routing to this pod before it closes; keep it below the pod's
    /// terminationGracePeriodSeconds.
    #[arg(long, env = "SHUTDOWN_DRAIN_SECONDS", default_value_t = 5)]
    shutdown_drain_seconds: u64,
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
        Command::Operator(args) => operator(args),
        Command::Probe { url, timeout } => probe(&url, std::time::Duration::from_secs(timeout)),
    }
}

fn probe(url: &str, timeout: std::time::Duration) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let answer = runtime.block_on(async {
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        let response = client.get(url).send().await?;
        let status = response.status();
        Ok::<_, reqwest::Error>((status, response.text().await.unwrap_or_default()))
    });
    match answer {
        Ok((status, body)) if status.is_success() => {
            println!("{url}: {status} {}", body.trim());
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            eprintln!("{url}: {status} {}", body.trim());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{url}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn operator(args: OperatorArgs) -> ExitCode {
    let format = match args.log_format.as_str() {
        "text" => telemetry::LogFormat::Text,
        "json" => telemetry::LogFormat::Json,
        other => {
            eprintln!("error: --log-format must be text or json, not {other:?}");
            return ExitCode::FAILURE;
        }
    };
    let Some(severity) = telemetry::parse_severity(&args.log_level) else {
        eprintln!(
            "error: --log-level must be one of trace, debug, info, warn, error; not {:?}",
            args.log_level
        );
        return ExitCode::FAILURE;
    };
    if let Err(e) = telemetry::init_logging(&telemetry::LogSettings {
        format,
        severity,
        ..Default::default()
    }) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let identity = args.identity.clone().unwrap_or_else(|| {
        std::env::var("HOSTNAME")
            .unwrap_or_else(|_| format!("teleport-mattermost-{}", std::process::id()))
    });
    let options = teleport_mattermost::operator::OperatorOptions {
        namespaces: args
            .namespaces
            .into_iter()
            .filter(|n| !n.trim().is_empty())
            .collect(),
        callback_addr: args.callback_addr,
        probe_addr: args.probe_addr,
        leader_election: args.leader_election,
        lease_name: args.lease_name,
        lease_namespace: args.lease_namespace,
        identity,
        init_timeout: std::time::Duration::from_secs(15),
        drain: std::time::Duration::from_secs(args.shutdown_drain_seconds),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        git = GIT_REF,
        ?options,
        "starting the operator"
    );
    let result: anyhow::Result<()> = runtime.block_on(async move {
        let client = kube::Client::try_default().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the Kubernetes API (in-cluster config or KUBECONFIG): {e}"
            )
        })?;
        let shutdown = tokio_util::sync::CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            stop.cancel();
        });
        teleport_mattermost::operator::run(options, client, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "operator stopped");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
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
