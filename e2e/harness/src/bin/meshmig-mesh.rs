//! `meshmig-mesh`: the mesh `make demo` and `make cluster` run against a cluster until
//! SIGTERM/SIGINT — the real istiod (from `e2e/istio/build.sh`) and, beside it, the
//! simulator for what cannot run without a container runtime (see e2e/README.md).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use meshmig_e2e_harness::{Mesh, client_for};
use meshmig_sim::Istiod as _;
use tokio::signal::unix::{SignalKind, signal};
use tracing::info;

/// Runs the real istiod and the mesh simulator beside it.
#[derive(Parser)]
#[command(name = "meshmig-mesh", version)]
struct Cli {
    /// kubeconfig of the cluster (an e2e/testenv API server).
    #[arg(long, value_name = "PATH")]
    kubeconfig: PathBuf,
    /// Directory for istiod's rendered configuration, certificates and log (must not exist).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
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
            eprintln!("meshmig-mesh: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let client = client_for(&cli.kubeconfig).await?;
    let mesh = Mesh::start(client, &cli.kubeconfig, cli.dir).await?;
    // Launchers wait for this line; the rest of it is for people.
    println!(
        "READY istiod {} (log {})",
        mesh.istiod.version(),
        mesh.istiod.log_path().await.display()
    );
    std::io::stdout().flush()?;
    let token = mesh.sim.cancellation_token();
    let stopped_by = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        () = token.cancelled() => "cancellation",
    };
    info!(signal = stopped_by, "shutting down");
    mesh.stop().await;
    Ok(())
}
