//! `meshmig` (also `kubectl meshmig`): plan sidecar-to-ambient migrations offline from YAML,
//! print the CRD and the findings catalogue.
#![forbid(unsafe_code)]

mod load;
mod plan_cmd;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use kube::CustomResourceExt;
use meshmig_api::MeshMigration;

/// Plan and drive Istio sidecar-to-ambient migrations.
#[derive(Parser, Debug)]
#[command(name = "meshmig", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Plan a migration offline from YAML files or directories (default: the embedded
    /// bookinfo example). Nothing is contacted or changed.
    Plan(plan_cmd::PlanArgs),
    /// Print the MeshMigration CustomResourceDefinition as YAML.
    Crd,
    /// Print the findings catalogue.
    Findings {
        /// As Markdown (the content of docs/findings.md).
        #[arg(long)]
        markdown: bool,
    },
}

/// When to colour output.
#[derive(Clone, Copy, Debug, ValueEnum, Default)]
pub enum ColorChoice {
    /// When standard output is a terminal and NO_COLOR is unset.
    #[default]
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

impl ColorChoice {
    /// Whether to colour.
    pub fn enabled(self) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Plan(args) => plan_cmd::run(&args),
        Command::Crd => match serde_saphyr::to_string(&MeshMigration::crd()) {
            Ok(s) => {
                print!("{s}");
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => Err(format!("cannot render the CRD: {e}")),
        },
        Command::Findings { markdown } => {
            if markdown {
                print!("{}", meshmig_planner::findings::catalogue_markdown());
            } else {
                for k in meshmig_planner::findings::CATALOGUE {
                    println!("{:<8} {:<34} {}", k.severity.as_str(), k.id, k.title);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("meshmig: {message}");
            ExitCode::from(2)
        }
    }
}
