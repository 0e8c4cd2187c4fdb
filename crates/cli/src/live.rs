//! Live commands: status, watch, pause, resume, approve, rollback, and `plan --live`.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use meshmig_api::kinds::{Held, Kind};
use meshmig_api::names as mn;
use meshmig_api::{
    CheckResult, MeshMigration, MeshMigrationStatus, MigrationPhase, NamespacePhase,
    NamespaceStatus, Step,
};
use meshmig_planner::Inventory;
use thiserror::Error;

/// Why a live command failed; every message says what to do or which object it was about.
#[derive(Debug, Error)]
pub enum LiveError {
    /// No async runtime.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// No kubeconfig or in-cluster configuration.
    #[error(
        "cannot reach a Kubernetes cluster ({0}); set KUBECONFIG or the current kubectl context"
    )]
    NoCluster(#[source] Box<kube::Error>),
    /// The CRD is not installed.
    #[error(
        "the MeshMigration CRD is not installed in this cluster; install it with `meshmig crd | kubectl apply -f -` or the Helm chart"
    )]
    NoCrd,
    /// The credentials may not list MeshMigrations (the API server's message).
    #[error("not allowed to list MeshMigrations ({0}); check your credentials and RBAC")]
    NotAllowed(String),
    /// The API server does not answer.
    #[error("cannot reach the Kubernetes API: {0}")]
    Unreachable(#[source] Box<kube::Error>),
    /// A MeshMigration cannot be read.
    #[error("cannot read MeshMigration {name}: {source}")]
    Read {
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    /// No such MeshMigration.
    #[error("MeshMigration {name} not found; `meshmig status` lists them")]
    NotFound { name: String },
    /// The annotation could not be written.
    #[error("cannot annotate MeshMigration {name}: {source}")]
    Annotate {
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    /// MeshMigrations cannot be listed.
    #[error("cannot list MeshMigrations: {0}")]
    List(#[source] Box<kube::Error>),
    /// `watch --until-done` gave up.
    #[error("MeshMigration {name} did not finish within {seconds}s")]
    Timeout { name: String, seconds: u64 },
    /// The watch stream closed.
    #[error("the watch ended")]
    WatchEnded,
    /// `watch --until-done`: the MeshMigration stopped short of what was asked.
    #[error("MeshMigration {name} is {phase:?}")]
    Stopped { name: String, phase: MigrationPhase },
    /// A kind cannot be listed for `plan --live`.
    #[error("cannot list {kind}: {source}")]
    ListKind {
        kind: Kind,
        #[source]
        source: Box<kube::Error>,
    },
    /// A listed object does not serialise.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// A listed object does not load into the inventory.
    #[error(transparent)]
    Load(#[from] meshmig_planner::LoadError),
}

impl LiveError {
    /// Whether `watch --until-done` reports this as the migration's outcome (exit code 1)
    /// rather than as a failure of the command: the MeshMigration timed out, stopped short,
    /// or does not exist.
    pub fn is_outcome(&self) -> bool {
        matches!(
            self,
            LiveError::Timeout { .. } | LiveError::Stopped { .. } | LiveError::NotFound { .. }
        )
    }
}

/// A single-threaded runtime for one live command.
pub fn runtime() -> Result<tokio::runtime::Runtime, LiveError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(LiveError::Runtime)
}

/// Connects, with an error that says what to do.
pub async fn client() -> Result<Client, LiveError> {
    let client = Client::try_default()
        .await
        .map_err(|e| LiveError::NoCluster(e.into()))?;
    // Fail early with a clear message when the CRD is not installed.
    let api: Api<MeshMigration> = Api::all(client.clone());
    match api.list(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(client),
        Err(kube::Error::Api(s)) if s.code == 404 => Err(LiveError::NoCrd),
        Err(kube::Error::Api(s)) if s.code == 401 || s.code == 403 => {
            Err(LiveError::NotAllowed(s.message))
        }
        Err(e) => Err(LiveError::Unreachable(e.into())),
    }
}

async fn get(client: &Client, name: &str) -> Result<MeshMigration, LiveError> {
    let api: Api<MeshMigration> = Api::all(client.clone());
    api.get_opt(name)
        .await
        .map_err(|source| LiveError::Read {
            name: name.to_string(),
            source: source.into(),
        })?
        .ok_or_else(|| LiveError::NotFound {
            name: name.to_string(),
        })
}

/// Sets (or, with `None`, removes) an annotation.
pub async fn annotate(name: &str, key: &str, value: Option<&str>) -> Result<(), LiveError> {
    let client = client().await?;
    get(&client, name).await?;
    set_annotation(client, name, key, value).await
}

/// Approves `step`: releases it from `pauseBefore`, or approves the next retry where a
/// namespace failed at it (`"<step>/<n>"` once an approval was spent). Prints the value set.
pub async fn approve(name: &str, step: Step) -> Result<(), LiveError> {
    let client = client().await?;
    let value = get(&client, name).await?.approval_for(step);
    set_annotation(client, name, mn::ANNOTATION_APPROVE, Some(&value)).await?;
    println!(
        "meshmigration/{name} annotated {}={value}",
        mn::ANNOTATION_APPROVE
    );
    Ok(())
}

async fn set_annotation(
    client: Client,
    name: &str,
    key: &str,
    value: Option<&str>,
) -> Result<(), LiveError> {
    let api: Api<MeshMigration> = Api::all(client);
    let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(|source| LiveError::Annotate {
            name: name.to_string(),
            source: source.into(),
        })
}

struct Paint(bool);

impl Paint {
    fn p(&self, code: &str, s: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
}

/// Renders one MeshMigration: namespaces × steps × checks.
pub fn render(mm: &MeshMigration, color: bool) -> String {
    let c = Paint(color);
    let mut out = String::new();
    let name = mm.name_any();
    let st = mm.status.clone().unwrap_or_default();
    let phase = st.phase.unwrap_or(MigrationPhase::Pending);
    let phase_s = format!("{phase:?}");
    let phase_c = match phase {
        MigrationPhase::Completed => c.p("32", &phase_s),
        MigrationPhase::Failed | MigrationPhase::Stalled => c.p("31", &phase_s),
        MigrationPhase::Paused | MigrationPhase::RollingBack | MigrationPhase::RolledBack => {
            c.p("33", &phase_s)
        }
        _ => c.p("36", &phase_s),
    };
    out.push_str(&format!(
        "{} {phase_c}  namespaces {}\n",
        c.p("1", &format!("MeshMigration {name}")),
        st.progress.as_deref().unwrap_or("0/0")
    ));
    for cond in &st.conditions {
        if cond.status == "True" && cond.type_ != mn::CONDITION_RECONCILING {
            out.push_str(&format!("  {}: {}\n", cond.type_, cond.message));
        }
    }
    for ns in &st.namespaces {
        render_namespace(&c, &st, ns, &mut out);
    }
    if !st.open_findings.is_empty() {
        out.push_str(&format!("  open findings: {}\n", st.open_findings.len()));
        for f in st.open_findings.iter().take(5) {
            out.push_str(&format!("    {} {} {}\n", f.severity, f.id, f.object));
        }
    }
    out
}

/// One namespace's line: a box per step, its message and its checks.
fn render_namespace(c: &Paint, st: &MeshMigrationStatus, ns: &NamespaceStatus, out: &mut String) {
    let bar: String = Step::ALL
        .into_iter()
        .map(|s| {
            let done = ns.phase == NamespacePhase::Completed || s < ns.step;
            if done {
                c.p("32", "■")
            } else if s == ns.step {
                match ns.phase {
                    NamespacePhase::Failed => c.p("31", "■"),
                    NamespacePhase::Waiting => c.p("33", "□"),
                    _ => c.p("36", "■"),
                }
            } else {
                c.p("2", "□")
            }
        })
        .collect();
    out.push_str(&format!(
        "  {:<20} {bar} step {} {:<22} {:?}\n",
        ns.name,
        ns.step,
        ns.step.name(),
        ns.phase
    ));
    if let Some(m) = &ns.message {
        out.push_str(&format!("  {:<20} {}\n", "", c.p("2", m)));
    }
    let rolling_back = matches!(
        ns.phase,
        NamespacePhase::RollingBack | NamespacePhase::RolledBack
    );
    if let Some(r) = st
        .rollback
        .as_ref()
        .filter(|_| rolling_back && !ns.checks.is_empty())
    {
        out.push_str(&format!(
            "  {:<20}   checks of the rollback to before step {}:\n",
            "", r.target
        ));
    }
    for chk in &ns.checks {
        let mark = match chk.result {
            CheckResult::Pass => c.p("32", "✓"),
            CheckResult::Pending => c.p("33", "…"),
            CheckResult::Fail => c.p("31", "✗"),
        };
        out.push_str(&format!(
            "  {:<20}   {mark} {:<24} {}\n",
            "", chk.name, chk.message
        ));
    }
}

/// `meshmig status [NAME]`.
pub async fn status(name: Option<&str>, color: bool) -> Result<(), LiveError> {
    let client = client().await?;
    match name {
        Some(n) => print!("{}", render(&get(&client, n).await?, color)),
        None => {
            let api: Api<MeshMigration> = Api::all(client);
            let list = api
                .list(&ListParams::default())
                .await
                .map_err(|e| LiveError::List(e.into()))?;
            if list.items.is_empty() {
                println!(
                    "no MeshMigrations; create one with `kubectl apply -f` (see examples/bookinfo/30-migration.yaml)"
                );
            }
            for mm in &list.items {
                print!("{}", render(mm, color));
            }
        }
    }
    Ok(())
}

/// Whether what was asked of a MeshMigration is done: `Ok` when it reached it (Completed,
/// or, while the rollback annotation asks for one, RolledBack to that target), `Err` with
/// the phase when it stopped short, `None` while it is under way.
fn finished(mm: &MeshMigration) -> Option<Result<(), MigrationPhase>> {
    let status = mm.status.as_ref()?;
    let phase = status.phase?;
    let rolled_back_to = status
        .rollback
        .as_ref()
        .filter(|r| r.completed)
        .map(|r| r.target);
    match (mm.requested_rollback(), phase) {
        (Some(t), MigrationPhase::RolledBack) if rolled_back_to == Some(t) => Some(Ok(())),
        // Completed, or rolled back to an earlier target: the rollback has not begun yet.
        (Some(_), MigrationPhase::Completed | MigrationPhase::RolledBack) => None,
        (None, MigrationPhase::Completed) => Some(Ok(())),
        (
            _,
            p @ (MigrationPhase::Failed | MigrationPhase::Stalled | MigrationPhase::RolledBack),
        ) => Some(Err(p)),
        _ => None,
    }
}

/// `meshmig watch NAME`: prints the view whenever it changes; with `until_done`, returns
/// when what was asked is done: Completed, or the requested rollback (Ok); Failed, Stalled
/// or an unrequested RolledBack (Err).
pub async fn watch(
    name: &str,
    color: bool,
    until_done: bool,
    timeout: Duration,
) -> Result<(), LiveError> {
    let client = client().await?;
    get(&client, name).await?;
    let api: Api<MeshMigration> = Api::all(client);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher(api, cfg).applied_objects().boxed();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::new();
    let mut first = true;
    loop {
        let next = tokio::time::timeout_at(deadline, stream.next()).await;
        let mm = match next {
            Err(_) => {
                return Err(LiveError::Timeout {
                    name: name.to_string(),
                    seconds: timeout.as_secs(),
                });
            }
            Ok(None) => return Err(LiveError::WatchEnded),
            Ok(Some(Err(e))) => {
                eprintln!("meshmig: watch error: {e}; retrying");
                continue;
            }
            Ok(Some(Ok(mm))) => mm,
        };
        let view = render(&mm, color);
        if view != last {
            println!("{view}");
            last = view;
        }
        if until_done {
            match finished(&mm) {
                Some(Ok(())) => return Ok(()),
                // A failure already there when the watch began is what the user may just
                // have approved or fixed: wait for the next change before giving up.
                Some(Err(phase)) if !first => {
                    return Err(LiveError::Stopped {
                        name: name.to_string(),
                        phase,
                    });
                }
                _ => {}
            }
        }
        first = false;
    }
}

/// The Inventory of the live cluster, read through the API (`plan --live`): every kind the
/// inventory lists (see [`Held::Listed`]), and the ConfigMaps it reads by name. Secrets are
/// never read; kinds whose CRD is not installed are skipped.
pub async fn inventory(client: &Client) -> Result<Inventory, LiveError> {
    let mut inv = Inventory::default();
    for kind in Kind::ALL.into_iter().filter(|k| k.held() == Held::Listed) {
        add_all(client, kind, &mut inv).await?;
    }
    add_config_maps(client, &mut inv).await;
    Ok(inv)
}

/// Adds every object of `kind`; none when its CRD is not installed.
async fn add_all(client: &Client, kind: Kind, inv: &mut Inventory) -> Result<(), LiveError> {
    let ar = kind.api_resource();
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    match api.list(&ListParams::default()).await {
        Ok(list) => {
            for mut o in list.items {
                o.types = Some(kube::core::TypeMeta {
                    api_version: ar.api_version.clone(),
                    kind: kind.name().to_string(),
                });
                inv.add_object(serde_json::to_value(&o)?, "cluster")?;
            }
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(source) => Err(LiveError::ListKind {
            kind,
            source: source.into(),
        }),
    }
}

/// The ConfigMaps the planner reads: the Cilium config, if any (a single ConfigMap, not all
/// of them), and istiod's MeshConfig (trust domain and aliases), wherever istiod runs.
async fn add_config_maps(client: &Client, inv: &mut Inventory) {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    if let Ok(Some(cm)) = cms.get_opt("cilium-config").await {
        inv.config_maps.push(cm);
    }
    let all: Api<ConfigMap> = Api::all(client.clone());
    let mesh = ListParams::default().fields(&format!(
        "metadata.name={}",
        meshmig_planner::cluster::MESH_CONFIG_MAP
    ));
    if let Ok(list) = all.list(&mesh).await {
        inv.config_maps.extend(list.items);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(annotation: Option<&str>, status: serde_json::Value) -> MeshMigration {
        let mut mm: MeshMigration = serde_json::from_value(serde_json::json!({
            "apiVersion": "meshmig.io/v1alpha1", "kind": "MeshMigration",
            "metadata": {"name": "bookinfo"},
            "spec": {"namespaces": ["bookinfo"]},
            "status": status,
        }))
        .unwrap();
        if let Some(a) = annotation {
            mm.annotations_mut()
                .insert(mn::ANNOTATION_ROLLBACK.into(), a.into());
        }
        mm
    }

    #[test]
    fn a_watch_waits_for_the_rollback_it_was_asked_for() {
        let completed = serde_json::json!({"phase": "Completed"});
        let rolled = |t: u8| {
            serde_json::json!({"phase": "RolledBack",
                "rollback": {"target": t, "requestedBy": "annotation", "completed": true}})
        };
        assert_eq!(finished(&with(None, completed.clone())), Some(Ok(())));
        // Just asked: the status still says Completed.
        assert_eq!(finished(&with(Some("4"), completed)), None);
        assert_eq!(finished(&with(Some("4"), rolled(4))), Some(Ok(())));
        assert_eq!(finished(&with(Some("all"), rolled(1))), Some(Ok(())));
        // Extended from 4 to 2: not there yet.
        assert_eq!(finished(&with(Some("2"), rolled(4))), None);
        assert_eq!(
            finished(&with(None, rolled(4))),
            Some(Err(MigrationPhase::RolledBack))
        );
        assert_eq!(
            finished(&with(Some("4"), serde_json::json!({"phase": "Stalled"}))),
            Some(Err(MigrationPhase::Stalled))
        );
        assert_eq!(
            finished(&with(
                Some("4"),
                serde_json::json!({"phase": "RollingBack"})
            )),
            None
        );
    }

    #[test]
    fn a_rollback_shows_its_checks_like_a_forward_step() {
        let mm: MeshMigration = serde_json::from_value(serde_json::json!({
            "apiVersion": "meshmig.io/v1alpha1", "kind": "MeshMigration",
            "metadata": {"name": "bookinfo"},
            "spec": {"namespaces": ["bookinfo"]},
            "status": {
                "phase": "Stalled",
                "rollback": {"target": 4, "requestedBy": "annotation", "completed": false},
                "conditions": [{"type": "Stalled", "status": "True", "reason": "RollbackCheckFailed",
                    "message": "the rollback is undone but not verified", "lastTransitionTime": "2026-12-04T00:00:00Z"}],
                "namespaces": [{"name": "bookinfo", "step": 3, "phase": "RollingBack",
                    "message": "rollback to before step 4 failed its checks",
                    "checks": [
                        {"name": "rollouts-complete", "result": "Pass", "message": "no workload is rolling out"},
                        {"name": "pods-meshed-as-before", "result": "Fail", "message": "Deployment bookinfo/reviews-v2 (Pod reviews-v2-abc): no sidecar"}
                    ]}]
            }
        }))
        .unwrap();
        let view = render(&mm, false);
        assert!(
            view.contains("Stalled: the rollback is undone but not verified"),
            "{view}"
        );
        assert!(
            view.contains("checks of the rollback to before step 4:"),
            "{view}"
        );
        assert!(view.contains("✗ pods-meshed-as-before"), "{view}");
        assert!(view.contains("✓ rollouts-complete"), "{view}");
    }
}
