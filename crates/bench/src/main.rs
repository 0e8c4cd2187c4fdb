//! `meshmig-bench`: synthetic inventories and the benchmarks behind `make bench`
//! (see bench/README.md and BENCHMARKS.md).
#![forbid(unsafe_code)]

mod cluster;
mod measure;
mod offline;
mod report;
mod synth;

// As the meshmig CLI, whose loading and planning it measures.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Errors of the benchmarks, one line each.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or process operation failed.
    #[error("{path}: {source}")]
    Io {
        /// What was being accessed.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Anything else.
    #[error("{0}")]
    Msg(String),
}

impl Error {
    /// An I/O error about `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

impl From<String> for Error {
    fn from(s: String) -> Self {
        Error::Msg(s)
    }
}

impl From<meshmig_e2e_harness::Error> for Error {
    fn from(e: meshmig_e2e_harness::Error) -> Self {
        Error::Msg(e.to_string())
    }
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Msg(format!("kube: {e}"))
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "meshmig-bench",
    version,
    about = "meshmig's benchmarks (make bench)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate a synthetic sidecar-mode mesh (deterministic by seed).
    Gen {
        /// Application namespaces.
        #[arg(long, default_value_t = 100)]
        namespaces: usize,
        /// PRNG seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// `mesh` (for meshmig) or `gateway` (the same routes bound to Istio Gateways, for
        /// ingress2gateway).
        #[arg(long, value_enum, default_value_t = synth::Variant::Mesh)]
        variant: synth::Variant,
        /// Output: a file (`.yaml`/`.yml`/`.json`), or a directory (one file per namespace);
        /// default standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Load and plan a corpus in this process; prints one JSON line (times, peak RSS).
    PlanRun {
        /// File or directory.
        path: PathBuf,
    },
    /// Convert every mesh VirtualService of a corpus with `routes::convert`; prints JSON
    /// (with --print: the HTTPRoutes as YAML on stdout and the JSON on stderr).
    ConvertRun {
        /// File or directory.
        path: PathBuf,
        /// Conversions of the whole corpus, timed one by one.
        #[arg(long, default_value_t = 5)]
        repeat: usize,
        /// Print the HTTPRoutes.
        #[arg(long)]
        print: bool,
    },
    /// Planner and conversion benchmarks (child processes), and ingress2gateway.
    Offline(offline::Args),
    /// Operator memory while watching many Pods on the test API server.
    ClusterRss(cluster::RssArgs),
    /// A migration of N bookinfo copies: API requests per namespace and operator overhead.
    Migrate(cluster::MigrateArgs),
    /// Combine result files into BENCHMARKS.md and print the table.
    Report(report::Args),
}

/// Writes a corpus to a file (by extension) or a directory (one file per namespace).
pub fn write_corpus(opts: &synth::Options, out: &Path) -> Result<(), Error> {
    let is_file = matches!(
        out.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    );
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    if is_file {
        let text = synth::to_yaml(&synth::corpus(opts)).map_err(Error::Msg)?;
        return std::fs::write(out, text).map_err(|e| Error::io(out, e));
    }
    std::fs::create_dir_all(out.join("ns")).map_err(|e| Error::io(out, e))?;
    let write = |name: PathBuf, objects: &[serde_json::Value]| -> Result<(), Error> {
        let text = synth::to_yaml(objects).map_err(Error::Msg)?;
        std::fs::write(&name, text).map_err(|e| Error::io(&name, e))
    };
    match opts.variant {
        synth::Variant::Mesh => {
            write(out.join("00-cluster.yaml"), &synth::cluster_objects())?;
            for i in 0..opts.namespaces {
                write(
                    out.join("ns")
                        .join(format!("{}.yaml", synth::namespace_name(i))),
                    &synth::namespace_objects(opts, i),
                )?;
            }
            write(out.join("zz-migration.yaml"), &[synth::migration(opts)])?;
        }
        synth::Variant::Gateway => {
            for i in 0..opts.namespaces {
                write(
                    out.join("ns")
                        .join(format!("{}.yaml", synth::namespace_name(i))),
                    &synth::gateway_objects(opts, i),
                )?;
            }
        }
    }
    Ok(())
}

fn print_json<T: serde::Serialize>(v: &T, to_stderr: bool) -> Result<(), Error> {
    let s = serde_json::to_string(v).map_err(|e| Error::Msg(e.to_string()))?;
    if to_stderr {
        eprintln!("{s}");
    } else {
        println!("{s}");
    }
    Ok(())
}

fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Gen {
            namespaces,
            seed,
            variant,
            out,
        } => {
            let opts = synth::Options {
                namespaces,
                seed,
                variant,
            };
            match out {
                Some(path) => write_corpus(&opts, &path),
                None => {
                    let text = synth::to_yaml(&synth::corpus(&opts)).map_err(Error::Msg)?;
                    print!("{text}");
                    Ok(())
                }
            }
        }
        Command::PlanRun { path } => print_json(&measure::plan_run(&path)?, false),
        Command::ConvertRun {
            path,
            repeat,
            print,
        } => print_json(&measure::convert_run(&path, repeat, print)?, print),
        Command::Offline(args) => offline::run(&args),
        Command::ClusterRss(args) => cluster::rss(&args),
        Command::Migrate(args) => cluster::migrate(&args),
        Command::Report(args) => report::run(&args),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshmig-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
