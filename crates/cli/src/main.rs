//! `meshmig` (also `kubectl meshmig`): plan sidecar-to-ambient migrations offline from YAML,
//! print the CRD and the findings catalogue.
#![forbid(unsafe_code)]

mod live;
mod load;
mod plan_cmd;

// Loading large exports is parsed on every core; with glibc's allocator two threads were
// barely faster than one (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Show MeshMigrations: namespaces × steps × checks.
    Status {
        /// A MeshMigration (default: all).
        name: Option<String>,
        /// Colour.
        #[arg(long, value_enum, default_value_t)]
        color: ColorChoice,
    },
    /// Follow a MeshMigration live.
    Watch {
        /// The MeshMigration.
        name: String,
        /// Return when it is Completed (exit 0) or Failed/Stalled/RolledBack (exit 1).
        #[arg(long)]
        until_done: bool,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
        /// Colour.
        #[arg(long, value_enum, default_value_t)]
        color: ColorChoice,
    },
    /// Stop advancing after the current action (annotation meshmig.io/paused).
    Pause {
        /// The MeshMigration.
        name: String,
    },
    /// Remove the pause annotation.
    Resume {
        /// The MeshMigration.
        name: String,
    },
    /// Release a step held by spec.pauseBefore, or retry a failed step.
    Approve {
        /// The MeshMigration.
        name: String,
        /// Step number (1..9).
        step: meshmig_api::Step,
    },
    /// Undo steps in reverse order, down to STEP or `all`.
    Rollback {
        /// The MeshMigration.
        name: String,
        /// Step (1..9) or `all`.
        #[arg(default_value = "all")]
        to: String,
    },
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

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

fn live<F: std::future::Future<Output = Result<(), String>>>(f: F) -> Result<ExitCode, String> {
    runtime()?.block_on(f).map(|()| ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    use meshmig_api::names as mn;
    let result = match cli.command {
        Command::Plan(args) => plan_cmd::run(&args),
        Command::Status { name, color } => live(live::status(name.as_deref(), color.enabled())),
        Command::Watch {
            name,
            until_done,
            timeout,
            color,
        } => {
            match runtime().and_then(|rt| {
                rt.block_on(live::watch(
                    &name,
                    color.enabled(),
                    until_done,
                    std::time::Duration::from_secs(timeout),
                ))
            }) {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e) if until_done && e.starts_with("MeshMigration") => {
                    eprintln!("meshmig: {e}");
                    Ok(ExitCode::from(1))
                }
                Err(e) => Err(e),
            }
        }
        Command::Pause { name } => live(live::annotate(&name, mn::ANNOTATION_PAUSED, Some("true"))),
        Command::Resume { name } => live(live::annotate(&name, mn::ANNOTATION_PAUSED, None)),
        Command::Approve { name, step } => live(live::approve(&name, step)),
        Command::Rollback { name, to } => {
            let valid = to == mn::ROLLBACK_ALL || to.parse::<meshmig_api::Step>().is_ok();
            if valid {
                live(live::annotate(&name, mn::ANNOTATION_ROLLBACK, Some(&to)))
            } else {
                Err(format!(
                    "rollback target must be a step 1..9 or `all`, not `{to}`"
                ))
            }
        }
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
