//! `meshmig plan`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use meshmig_api::{
    BypassProtection, ControlPlaneMode, MeshMigration, MeshMigrationSpec, Ordering, WaypointPolicy,
};
use meshmig_planner::plan::{injected_namespaces, plan};
use meshmig_planner::report::{Style, render};
use meshmig_planner::{Inventory, ObjectRef, findings};
use serde_json::Value;
use thiserror::Error;

use crate::ColorChoice;
use crate::live::LiveError;
use crate::load::{InputError, Loaded, load};

/// An entry of a MeshMigration's `spec.acceptedFindings` that names no finding.
#[derive(Debug, Error)]
#[error(
    "{at}{object}: spec.acceptedFindings[{index}] is `{entry}`, but `{id}` is not a finding id (a misspelt id accepts nothing); {hint}"
)]
pub struct UnknownAccepted {
    /// Where the MeshMigration is (`file:line: `), when known.
    pub at: String,
    pub object: ObjectRef,
    pub index: usize,
    pub entry: String,
    pub id: String,
    /// What the user may have meant.
    pub hint: String,
}

/// Why `meshmig plan` failed.
#[derive(Debug, Error)]
pub enum PlanError {
    /// An `--accept` entry names no finding.
    #[error("unknown finding `{id}` in --accept; {hint}")]
    UnknownAccept {
        id: String,
        /// What the user may have meant.
        hint: String,
    },
    /// The MeshMigration's `spec.acceptedFindings` names no finding.
    #[error(transparent)]
    UnknownAccepted(Box<UnknownAccepted>),
    /// Several MeshMigrations and none chosen.
    #[error("the input holds {} MeshMigrations ({}); choose one with --name", names.len(), names.join(", "))]
    AmbiguousMigration { names: Vec<String> },
    /// Nothing to migrate.
    #[error("no namespace has sidecar injection enabled; name the namespaces with --namespace")]
    NoInjectedNamespace,
    /// The input files.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The cluster (`--live`).
    #[error(transparent)]
    Live(#[from] LiveError),
    /// The plan does not serialise as JSON.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// A manifest does not serialise as YAML.
    #[error("{0}")]
    Yaml(#[from] serde_saphyr::SerializeError),
}

/// Output format.
#[derive(Clone, Copy, Debug, ValueEnum, Default, PartialEq, Eq)]
pub enum Output {
    /// A report grouped by step.
    #[default]
    Text,
    /// The whole plan as JSON.
    Json,
    /// The generated manifests, in step order.
    Yaml,
}

/// Arguments of `meshmig plan`.
#[derive(Args, Debug)]
pub struct PlanArgs {
    /// YAML/JSON files or directories (`-` reads standard input); `kubectl get … -o yaml`
    /// output works. Without paths the embedded bookinfo example is planned.
    pub paths: Vec<PathBuf>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Output,
    /// Namespaces to migrate (default: the MeshMigration in the input, else every injected
    /// namespace).
    #[arg(short = 'n', long = "namespace")]
    pub namespaces: Vec<String>,
    /// Name of the MeshMigration in the input to use, and the name generated objects are
    /// labelled with.
    #[arg(long)]
    pub name: Option<String>,
    /// Control plane mode (overrides the MeshMigration in the input).
    #[arg(long, value_enum)]
    pub control_plane: Option<CpMode>,
    /// Waypoint policy (overrides the MeshMigration in the input).
    #[arg(long, value_enum)]
    pub waypoint: Option<WpPolicy>,
    /// Bypass protection (overrides the MeshMigration in the input).
    #[arg(long, value_enum)]
    pub bypass_protection: Option<Bypass>,
    /// Order callers before the services they call.
    #[arg(long)]
    pub auto_order: bool,
    /// Accept a finding (`id` or `id@Kind/namespace/name`); repeatable.
    #[arg(long = "accept")]
    pub accept: Vec<String>,
    /// Also show informational findings and the full enforcement timeline.
    #[arg(short, long)]
    pub verbose: bool,
    /// Read the inventory from the current cluster (KUBECONFIG) instead of files.
    #[arg(long, conflicts_with = "paths")]
    pub live: bool,
    /// Exit with code 3 when unaccepted blockers remain.
    #[arg(long)]
    pub fail_on_blockers: bool,
    /// Colour.
    #[arg(long, value_enum, default_value_t)]
    pub color: ColorChoice,
}

/// Control plane mode.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum CpMode {
    /// Sail operator.
    Sail,
    /// Helm/istioctl.
    External,
}

/// Waypoint policy.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum WpPolicy {
    /// Where needed.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// Bypass protection timing.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Bypass {
    /// In step 5.
    Immediate,
    /// Prepared only.
    Deferred,
}

/// Refuses `--accept` entries whose id is not a finding: they would accept nothing.
fn check_accept_flags(accept: &[String]) -> Result<(), PlanError> {
    for entry in accept {
        findings::check_accepted(entry).map_err(|u| PlanError::UnknownAccept {
            id: u.id.clone(),
            hint: u.hint(),
        })?;
    }
    Ok(())
}

/// Refuses a MeshMigration whose `spec.acceptedFindings` names an unknown finding, as the
/// operator does (it stalls with reason UnknownFinding before changing anything): a plan of
/// it would be one the operator refuses to start.
fn check_accepted_findings(m: &MeshMigration, loaded: &Loaded) -> Result<(), PlanError> {
    for (i, entry) in m.spec.accepted_findings.iter().enumerate() {
        let Err(u) = findings::check_accepted(entry) else {
            continue;
        };
        let oref = ObjectRef::from_meta("MeshMigration", &m.metadata);
        let at = loaded
            .origins(std::slice::from_ref(&oref))
            .first()
            .map(|(_, at)| format!("{at}: "))
            .unwrap_or_default();
        return Err(PlanError::UnknownAccepted(Box::new(UnknownAccepted {
            at,
            object: oref,
            index: i,
            entry: entry.clone(),
            id: u.id.clone(),
            hint: u.hint(),
        })));
    }
    Ok(())
}

/// The inventory of the cluster (`--live`) or of the paths.
fn inventory(args: &PlanArgs) -> Result<Loaded, PlanError> {
    if !args.live {
        return Ok(load(&args.paths)?);
    }
    let inv = crate::live::runtime()?.block_on(async {
        let client = crate::live::client().await?;
        crate::live::inventory(&client).await
    })?;
    Ok(Loaded::without_sources(inv))
}

/// Runs `meshmig plan`.
pub fn run(args: &PlanArgs) -> Result<ExitCode, PlanError> {
    // Before reading the input, which can take long.
    check_accept_flags(&args.accept)?;
    let loaded = inventory(args)?;
    let found = chosen_migration(args, &loaded.inv)?;
    if let Some(m) = found {
        check_accepted_findings(m, &loaded)?;
    }
    let (name, mut spec) = match found {
        Some(m) => (
            m.metadata.name.clone().unwrap_or_else(|| "meshmig".into()),
            m.spec.clone(),
        ),
        None => (
            args.name.clone().unwrap_or_else(|| "meshmig".into()),
            MeshMigrationSpec::default(),
        ),
    };
    choose_namespaces(args, &loaded.inv, &mut spec)?;
    apply_overrides(args, &mut spec);
    // Standard input's text is no longer needed for messages: free it before planning.
    let inv = loaded.into_inventory();
    let plan = plan(&inv, &spec, &name);
    match args.output {
        Output::Text => print!(
            "{}",
            render(
                &plan,
                Style {
                    color: args.color.enabled()
                },
                args.verbose
            )
        ),
        Output::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
        Output::Yaml => print!("{}", manifests_yaml(&plan.manifests)?),
    }
    if args.fail_on_blockers && plan.summary.blockers > 0 {
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}

/// The MeshMigration of the input to plan: the one named by `--name`, or the only one;
/// several and no `--name` nor `--namespace` is an error.
fn chosen_migration<'a>(
    args: &PlanArgs,
    inv: &'a Inventory,
) -> Result<Option<&'a MeshMigration>, PlanError> {
    let found = match &args.name {
        Some(name) => inv
            .mesh_migrations
            .iter()
            .find(|m| m.metadata.name.as_deref() == Some(name)),
        None if inv.mesh_migrations.len() == 1 => inv.mesh_migrations.first(),
        None => None,
    };
    if found.is_none()
        && args.name.is_none()
        && args.namespaces.is_empty()
        && inv.mesh_migrations.len() > 1
    {
        let names = inv
            .mesh_migrations
            .iter()
            .filter_map(|m| m.metadata.name.clone())
            .collect();
        return Err(PlanError::AmbiguousMigration { names });
    }
    Ok(found)
}

/// `--namespace` replaces the spec's namespaces; with neither, every injected namespace.
fn choose_namespaces(
    args: &PlanArgs,
    inv: &Inventory,
    spec: &mut MeshMigrationSpec,
) -> Result<(), PlanError> {
    if !args.namespaces.is_empty() {
        spec.namespaces = Some(args.namespaces.clone());
        spec.namespace_selector = None;
    } else if spec.namespaces.is_none() && spec.namespace_selector.is_none() {
        let injected = injected_namespaces(inv);
        if injected.is_empty() {
            return Err(PlanError::NoInjectedNamespace);
        }
        spec.namespaces = Some(injected);
    }
    Ok(())
}

/// The flags that override the spec.
fn apply_overrides(args: &PlanArgs, spec: &mut MeshMigrationSpec) {
    if let Some(m) = args.control_plane {
        spec.control_plane.mode = match m {
            CpMode::Sail => ControlPlaneMode::Sail,
            CpMode::External => ControlPlaneMode::External,
        };
    }
    if let Some(p) = args.waypoint {
        spec.waypoint.policy = match p {
            WpPolicy::Auto => WaypointPolicy::Auto,
            WpPolicy::Always => WaypointPolicy::Always,
            WpPolicy::Never => WaypointPolicy::Never,
        };
    }
    if let Some(b) = args.bypass_protection {
        spec.bypass_protection = Some(match b {
            Bypass::Immediate => BypassProtection::Immediate,
            Bypass::Deferred => BypassProtection::Deferred,
        });
    }
    if args.auto_order {
        spec.ordering = Some(Ordering::Auto);
    }
    spec.accepted_findings.extend(args.accept.iter().cloned());
}

/// The manifests as a multi-document YAML stream.
pub fn manifests_yaml(manifests: &[Value]) -> Result<String, PlanError> {
    let mut out = String::new();
    for m in manifests {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(m)?);
    }
    Ok(out)
}
