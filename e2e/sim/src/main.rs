//! `meshmig-sim sail-crds DIR`: writes the Sail CRDs for a test API server to install.
//! (The simulator itself runs beside the real istiod, in `meshmig-mesh` or in the test
//! harness; it has no process of its own.)

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Test-only tools of the mesh simulator (see e2e/README.md).
#[derive(Parser)]
#[command(name = "meshmig-sim", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the Sail CRDs (Istio, IstioCNI, ZTunnel) into DIR, one file each, and exit.
    SailCrds {
        /// Directory to write into (created if missing).
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let Command::SailCrds { dir } = Cli::parse().command;
    match meshmig_sim::sail::write_crds(&dir) {
        Ok(paths) => {
            for path in paths {
                println!("{}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "meshmig-sim: writing the Sail CRDs into {}: {e}",
                dir.display()
            );
            ExitCode::FAILURE
        }
    }
}
