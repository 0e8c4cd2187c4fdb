//! `meshmig-operator`.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use meshmig_operator::run::{Settings, run};
use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Runs MeshMigrations: Istio sidecar to ambient, step by step.
#[derive(Parser, Debug)]
#[command(name = "meshmig-operator", version)]
struct Args {
    /// Namespace of the operator (cluster-scoped snapshots and frozen plans live here).
    #[arg(long, env = "POD_NAMESPACE", default_value = "meshmig-system")]
    namespace: String,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "MESHMIG_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// Log format; the level comes from RUST_LOG (default info).
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Instance name reported on Events (defaults to the Pod name).
    #[arg(long, env = "POD_NAME", default_value = "meshmig-operator")]
    instance: String,
    /// Leader election on a Lease, so several replicas are safe (only the leader writes).
    #[arg(long, env = "MESHMIG_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Lease duration in seconds: a killed leader is replaced within it.
    #[arg(long, env = "MESHMIG_LEASE_SECONDS", default_value_t = 15)]
    lease_seconds: u64,
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    match args.log_format {
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
    }
    let metrics = std::sync::Arc::new(meshmig_operator::metrics::Metrics::default());
    let client = match meshmig_operator::client::counting_client(metrics.clone()).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "meshmig-operator: cannot reach the Kubernetes API ({e}); set KUBECONFIG or run in a cluster"
            );
            return ExitCode::from(2);
        }
    };
    let settings = Settings {
        namespace: args.namespace,
        http_addr: args.http_addr,
        instance: args.instance,
        leader_election: args.leader_election,
        lease_seconds: args.lease_seconds,
    };
    match run(client, metrics, settings, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshmig-operator: {e}");
            ExitCode::FAILURE
        }
    }
}
