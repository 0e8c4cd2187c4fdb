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
use thiserror::Error;

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

/// Why a command failed (exit code 2).
#[derive(Debug, Error)]
enum CliError {
    #[error(transparent)]
    Plan(#[from] plan_cmd::PlanError),
    #[error(transparent)]
    Live(#[from] live::LiveError),
    #[error("rollback target must be a step 1..9 or `all`, not `{0}`")]
    RollbackTarget(String),
    #[error("cannot render the CRD: {0}")]
    Crd(#[from] serde_saphyr::SerializeError),
}

fn live<F: std::future::Future<Output = Result<(), live::LiveError>>>(
    f: F,
) -> Result<ExitCode, CliError> {
    Ok(live::runtime()?.block_on(f).map(|()| ExitCode::SUCCESS)?)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    use meshmig_api::names as mn;
    let result = match cli.command {
        Command::Plan(args) => plan_cmd::run(&args).map_err(CliError::from),
        Command::Watch {
            name,
            until_done,
            timeout,
            color,
        } => watch(
            &name,
            until_done,
            std::time::Duration::from_secs(timeout),
            color,
        ),
        Command::Crd => serde_saphyr::to_string(&MeshMigration::crd())
            .map(|s| {
                print!("{s}");
                ExitCode::SUCCESS
            })
            .map_err(CliError::from),
        Command::Findings { markdown } => {
            findings(markdown);
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { name, color } => live(live::status(name.as_deref(), color.enabled())),
        Command::Pause { name } => live(live::annotate(&name, mn::ANNOTATION_PAUSED, Some("true"))),
        Command::Resume { name } => live(live::annotate(&name, mn::ANNOTATION_PAUSED, None)),
        Command::Approve { name, step } => live(live::approve(&name, step)),
        Command::Rollback { name, to } => rollback(&name, to),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("meshmig: {message}");
            ExitCode::from(2)
        }
    }
}

/// `meshmig watch`: with `--until-done`, a MeshMigration that stops short exits 1.
fn watch(
    name: &str,
    until_done: bool,
    timeout: std::time::Duration,
    color: ColorChoice,
) -> Result<ExitCode, CliError> {
    let watched = live::runtime()
        .and_then(|rt| rt.block_on(live::watch(name, color.enabled(), until_done, timeout)));
    match watched {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if until_done && e.is_outcome() => {
            eprintln!("meshmig: {e}");
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}

fn findings(markdown: bool) {
    if markdown {
        print!("{}", meshmig_planner::findings::catalogue_markdown());
    } else {
        for k in meshmig_planner::findings::CATALOGUE {
            println!("{:<8} {:<34} {}", k.severity.as_str(), k.id, k.title);
        }
    }
}

/// `meshmig rollback`: sets the rollback annotation to a step or `all`.
fn rollback(name: &str, to: String) -> Result<ExitCode, CliError> {
    use meshmig_api::names as mn;
    let valid = to == mn::ROLLBACK_ALL || to.parse::<meshmig_api::Step>().is_ok();
    if valid {
        live(live::annotate(name, mn::ANNOTATION_ROLLBACK, Some(&to)))
    } else {
        Err(CliError::RollbackTarget(to))
    }
}
