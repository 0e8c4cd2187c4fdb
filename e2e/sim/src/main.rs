//! `meshmig-sim`: runs the mesh simulator against a cluster until SIGTERM/SIGINT.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use meshmig_sim::{DEFAULT_ISTIO_VERSION, SimConfig, Simulator};
use tokio::signal::unix::{SignalKind, signal};
use tracing::info;

/// Test-only simulator of Istio's API-visible behaviour (see e2e/README.md).
#[derive(Parser)]
#[command(name = "meshmig-sim", version)]
struct Cli {
    /// kubeconfig of the cluster to act on; without it, the usual client defaults apply.
    #[arg(long, value_name = "PATH")]
    kubeconfig: Option<PathBuf>,
    /// Address the injection webhook listens on (the API server must reach it).
    #[arg(long, default_value = "127.0.0.1")]
    webhook_addr: IpAddr,
    /// Istio version used when the cluster names none.
    #[arg(long, default_value = DEFAULT_ISTIO_VERSION)]
    default_version: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Write the Sail CRDs (Istio, IstioCNI, ZTunnel) into DIR, one file each, and exit.
    SailCrds {
        /// Directory to write into (created if missing).
        dir: PathBuf,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut message = format!("meshmig-sim: {e}");
            let mut source = e.source();
            while let Some(s) = source {
                message.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(Command::SailCrds { dir }) = cli.command {
        for path in meshmig_sim::sail::write_crds(&dir)? {
            println!("{}", path.display());
        }
        return Ok(());
    }
    let client = match &cli.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            let config =
                kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                    .await?;
            Client::try_from(config)?
        }
        None => Client::try_default().await?,
    };
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;

    let config = SimConfig {
        webhook_addr: cli.webhook_addr,
        default_version: cli.default_version,
        ..SimConfig::default()
    };
    let sim = Simulator::start(client, config).await?;
    // Launchers (the e2e harness, `make cluster`) wait for this line.
    println!("READY");
    std::io::stdout().flush()?;

    let token = sim.cancellation_token();
    let stopped_by = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        () = token.cancelled() => "cancellation",
    };
    info!(signal = stopped_by, "shutting down");
    sim.shutdown().await?;
    Ok(())
}
