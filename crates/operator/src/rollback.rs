//! The checkpoint of a rollback, pure like every forward checkpoint: once every step down to
//! the target is undone, `RolledBack` is reported only when the namespace really is as it
//! was before that step. Undoing the objects is not enough: a Pod recreated while the
//! injection label was still off runs outside the mesh, and its objects look fine.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use meshmig_api::names as mn;
use meshmig_api::{CheckResult, Step};
use meshmig_planner::inventory::label;
use meshmig_planner::mesh_mode::{Expected, MeshMode};
use meshmig_planner::model::Model;
use meshmig_planner::plan::NamespacePlan;
use meshmig_planner::{Inventory, ObjectRef, PodInfo};
use serde_json::Value;

use crate::checks::{self, Outcome};
use crate::decide::json_subset;
use crate::snapshot::{Entry, Snapshot};

/// Every Pod of a workload the migration restarts runs in the mesh mode it had before the
/// target step.
pub const MESHED_AS_BEFORE: &str = "pods-meshed-as-before";
/// No workload of the namespace is still rolling out.
pub const ROLLOUTS_COMPLETE: &str = "rollouts-complete";
/// What the undone steps' snapshots recorded is back.
pub const SNAPSHOT_RESTORED: &str = "snapshot-restored";

/// How many offending objects a message names before it says how many more there are.
const SHOWN: usize = 5;

/// Everything the checkpoint of a rollback looks at.
pub struct RollbackCheckInput<'a> {
    /// Rolled back to before this step.
    pub target: Step,
    /// The namespace's plan.
    pub ns: &'a NamespacePlan,
    /// The live cluster.
    pub live: &'a Inventory,
    /// Snapshots of the undone steps (this namespace's, and the cluster's step 2).
    pub snapshots: &'a [Snapshot],
    /// Name of the MeshMigration (labels of the objects it created).
    pub migration: &'a str,
    /// Outcomes of the probes that run in the state before the target step.
    pub probes: Vec<(String, CheckResult, String)>,
}

/// Evaluates the checkpoint of a rollback for one namespace.
pub fn evaluate(inp: &RollbackCheckInput<'_>) -> Vec<Outcome> {
    let mut out = vec![rollouts(inp), meshed_as_before(inp), restored(inp)];
    checks::probes_outcome(&inp.probes, &mut out);
    out
}

fn rollouts(inp: &RollbackCheckInput<'_>) -> Outcome {
    match checks::namespace_settled(inp.live, &inp.ns.name) {
        Ok(()) => Outcome::pass(ROLLOUTS_COMPLETE, "no workload is rolling out"),
        Err(m) => Outcome::pending(ROLLOUTS_COMPLETE, m),
    }
}

fn active(p: &PodInfo) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && label(&p.metadata, mn::LABEL_PROBE).is_none()
        && !matches!(p.phase.as_deref(), Some("Succeeded" | "Failed"))
}

fn meshed_as_before(inp: &RollbackCheckInput<'_>) -> Outcome {
    let ns = inp.ns.name.as_str();
    let model = Model::new(inp.live);
    let live = model.workloads_in(ns);
    let mut checked = 0;
    let mut lacking = Vec::new();
    for w in &inp.ns.workloads {
        let expected = Expected::before(w, inp.target);
        if expected == Expected::Unchanged {
            continue;
        }
        // A workload deleted since planning has no Pods to check.
        let Some(found) = live
            .iter()
            .find(|x| x.kind.as_str() == w.kind && x.name == w.name)
        else {
            continue;
        };
        checked += 1;
        for pod in found.pods.iter().filter(|p| active(p)) {
            if let Some(lack) = expected.lack(MeshMode::of_pod(pod)) {
                lacking.push(format!(
                    "{} {ns}/{} (Pod {}): {lack}, expected {}",
                    w.kind,
                    w.name,
                    pod.metadata.name.as_deref().unwrap_or_default(),
                    expected.describe()
                ));
            }
        }
    }
    if lacking.is_empty() {
        Outcome::pass(
            MESHED_AS_BEFORE,
            format!(
                "the Pods of {checked} workload(s) run as they did before step {}",
                inp.target
            ),
        )
    } else {
        Outcome::pending(MESHED_AS_BEFORE, listed(&lacking))
    }
}

fn listed(items: &[String]) -> String {
    let mut s = items
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if items.len() > SHOWN {
        s.push_str(&format!("; and {} more", items.len() - SHOWN));
    }
    s
}

/// One thing a snapshot entry recorded about an object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Aspect {
    Existence,
    Label(String),
    TemplateLabel(String),
    RestartAnnotation,
    SailProfile,
    Gateways,
}

/// What the object's aspect must be after the undo.
#[derive(Clone, Debug, PartialEq)]
enum Want {
    /// Recreated as the snapshot kept it.
    Present(Value),
    /// Gone, unless it is not meshmig's (undo deletes only what this migration created).
    Absent,
    /// A label or annotation value (`None`: absent).
    Text(Option<String>),
    /// A JSON value (`None`: absent).
    Json(Option<Value>),
}

fn want_of(e: &Entry) -> Option<(Aspect, Want)> {
    Some(match e {
        Entry::Create { existed: true, .. } => return None,
        Entry::Create { .. } => (Aspect::Existence, Want::Absent),
        Entry::Delete { manifest, .. } => (Aspect::Existence, Want::Present(manifest.clone())),
        Entry::Label { key, previous, .. } => {
            (Aspect::Label(key.clone()), Want::Text(previous.clone()))
        }
        Entry::TemplateLabel { key, previous, .. } => (
            Aspect::TemplateLabel(key.clone()),
            Want::Text(previous.clone()),
        ),
        Entry::Restart { previous, .. } => {
            (Aspect::RestartAnnotation, Want::Text(previous.clone()))
        }
        Entry::SailSpec { profile, .. } => (Aspect::SailProfile, Want::Json(profile.clone())),
        Entry::Gateways { previous, .. } => (
            Aspect::Gateways,
            Want::Json(previous.as_ref().map(|g| Value::from(g.clone()))),
        ),
    })
}

/// What must hold once every snapshot is undone. When several undone steps recorded the
/// same aspect of an object, the lowest step's record is the state before all of them.
fn expectations(snapshots: &[Snapshot]) -> BTreeMap<(ObjectRef, Aspect), Want> {
    let mut by_step: Vec<&Snapshot> = snapshots.iter().collect();
    by_step.sort_by_key(|s| std::cmp::Reverse(s.step));
    let mut out = BTreeMap::new();
    for snap in by_step {
        let mut this_step = BTreeMap::new();
        for e in &snap.entries {
            if let Some((aspect, want)) = want_of(e) {
                // The first entry of a step saw the object before that step changed it.
                this_step
                    .entry((e.object().clone(), aspect))
                    .or_insert(want);
            }
        }
        out.extend(this_step);
    }
    out
}

fn restored(inp: &RollbackCheckInput<'_>) -> Outcome {
    let wants = expectations(inp.snapshots);
    let differ: Vec<String> = wants
        .iter()
        .filter_map(|((o, aspect), want)| differs(inp, o, aspect, want))
        .collect();
    if differ.is_empty() {
        Outcome::pass(
            SNAPSHOT_RESTORED,
            format!(
                "{} recorded change(s) of {} snapshot(s) undone",
                wants.len(),
                inp.snapshots.len()
            ),
        )
    } else {
        Outcome::pending(SNAPSHOT_RESTORED, listed(&differ))
    }
}

fn show(v: &Option<String>) -> String {
    v.as_deref()
        .map_or_else(|| "absent".to_string(), |s| format!("{s:?}"))
}

/// Why the live object does not match `want`; `None` when it does or the operator cannot
/// see that kind.
fn differs(
    inp: &RollbackCheckInput<'_>,
    o: &ObjectRef,
    aspect: &Aspect,
    want: &Want,
) -> Option<String> {
    match (aspect, want) {
        (Aspect::Existence, Want::Present(manifest)) => match checks::live_object(inp.live, o)? {
            None => Some(format!("{o} was not recreated")),
            Some(live) => {
                let spec = |v: &Value| v.get("spec").cloned().unwrap_or(Value::Null);
                (!json_subset(&spec(manifest), &spec(&live)))
                    .then(|| format!("{o} differs from its snapshot"))
            }
        },
        (Aspect::Existence, _) => {
            let live = checks::live_object(inp.live, o)??;
            let labels = live.pointer("/metadata/labels");
            let ours = labels
                .and_then(|l| l.get(mn::LABEL_MANAGED_BY))
                .and_then(Value::as_str)
                == Some(mn::MANAGED_BY)
                && labels
                    .and_then(|l| l.get(mn::LABEL_MIGRATION))
                    .and_then(Value::as_str)
                    == Some(inp.migration);
            ours.then(|| format!("{o}, created by the migration, is still present"))
        }
        (Aspect::Label(key), Want::Text(prev)) => {
            let meta = object_meta(inp.live, o)?;
            let now = label(meta, key).map(str::to_string);
            (now != *prev)
                .then(|| format!("{o}: label {key} is {}, was {}", show(&now), show(prev)))
        }
        (Aspect::TemplateLabel(key), Want::Text(prev)) => {
            let meta = template(inp.live, o)?.metadata.as_ref();
            let now = meta.and_then(|m| label(m, key)).map(str::to_string);
            (now != *prev).then(|| {
                format!(
                    "{o}: pod-template label {key} is {}, was {}",
                    show(&now),
                    show(prev)
                )
            })
        }
        (Aspect::RestartAnnotation, Want::Text(prev)) => {
            let meta = template(inp.live, o)?.metadata.as_ref();
            let now = meta
                .and_then(|m| {
                    meshmig_planner::inventory::annotation(m, mn::ANNOTATION_RESTARTED_AT)
                })
                .map(str::to_string);
            (now != *prev).then(|| {
                format!(
                    "{o}: restart annotation is {}, was {}",
                    show(&now),
                    show(prev)
                )
            })
        }
        (Aspect::SailProfile, Want::Json(prev)) => {
            let now = sail_profile(inp.live, o)?;
            let was = prev.as_ref().and_then(Value::as_str).map(str::to_string);
            (now != was).then(|| format!("{o}: spec.profile is {}, was {}", show(&now), show(&was)))
        }
        (Aspect::Gateways, Want::Json(prev)) => {
            let live = checks::live_object(inp.live, o)??;
            let now = live.pointer("/spec/gateways").cloned();
            (now != *prev).then(|| format!("{o}: spec.gateways differs from its snapshot"))
        }
        _ => None,
    }
}

fn same(m: &ObjectMeta, o: &ObjectRef) -> bool {
    m.namespace.as_deref() == o.namespace.as_deref() && m.name.as_deref() == Some(&o.name)
}

fn object_meta<'a>(live: &'a Inventory, o: &ObjectRef) -> Option<&'a ObjectMeta> {
    match o.kind.as_str() {
        "Namespace" => live.namespaces.get(&o.name).map(|n| &n.metadata),
        "Service" => live
            .services
            .iter()
            .find(|s| same(&s.metadata, o))
            .map(|s| &s.metadata),
        _ => None,
    }
}

fn template<'a>(live: &'a Inventory, o: &ObjectRef) -> Option<&'a PodTemplateSpec> {
    match o.kind.as_str() {
        "Deployment" => live
            .deployments
            .iter()
            .find(|d| same(&d.metadata, o))
            .and_then(|d| d.spec.as_ref())
            .map(|s| &s.template),
        "StatefulSet" => live
            .stateful_sets
            .iter()
            .find(|d| same(&d.metadata, o))
            .and_then(|d| d.spec.as_ref())
            .map(|s| &s.template),
        "DaemonSet" => live
            .daemon_sets
            .iter()
            .find(|d| same(&d.metadata, o))
            .and_then(|d| d.spec.as_ref())
            .map(|s| &s.template),
        _ => None,
    }
}

fn sail_profile(live: &Inventory, o: &ObjectRef) -> Option<Option<String>> {
    let name = Some(o.name.as_str());
    match o.kind.as_str() {
        "Istio" => live
            .istios
            .iter()
            .find(|i| i.metadata.name.as_deref() == name)
            .map(|i| i.spec.profile.clone()),
        "IstioCNI" => live
            .istio_cnis
            .iter()
            .find(|i| i.metadata.name.as_deref() == name)
            .map(|i| i.spec.profile.clone()),
        "ZTunnel" => live
            .ztunnels
            .iter()
            .find(|i| i.metadata.name.as_deref() == name)
            .map(|i| i.spec.profile.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn snap(step: Step, entries: Vec<Entry>) -> Snapshot {
        Snapshot {
            migration: "m".into(),
            step,
            namespace: Some("ns".into()),
            entries,
        }
    }

    fn restart(previous: Option<&str>) -> Entry {
        Entry::Restart {
            object: ObjectRef::new("Deployment", Some("ns"), "app"),
            previous: previous.map(str::to_string),
        }
    }

    fn live(yaml: &str) -> Inventory {
        let mut inv = Inventory::default();
        inv.load_str(yaml, "live").unwrap();
        inv
    }

    fn plan_ns() -> NamespacePlan {
        NamespacePlan {
            name: "ns".into(),
            exists: true,
            waypoint: meshmig_planner::plan::WaypointPlan {
                needed: false,
                name: "waypoint".into(),
                for_: "service".into(),
                exists: false,
                principal: String::new(),
            },
            services: Vec::new(),
            workloads: Vec::new(),
            steps: Vec::new(),
            enforcement: Vec::new(),
        }
    }

    fn restored_in(inv: &Inventory, snapshots: &[Snapshot]) -> Outcome {
        let ns = plan_ns();
        restored(&RollbackCheckInput {
            target: Step::HboneSidecars,
            ns: &ns,
            live: inv,
            snapshots,
            migration: "m",
            probes: Vec::new(),
        })
    }

    #[test]
    fn the_lowest_undone_step_says_what_an_object_was_before_all_of_them() {
        // Step 3 restarted from no annotation, step 9 from step 3's: after undoing both, the
        // annotation is absent, not step 3's.
        let wants = expectations(&[
            snap(Step::SidecarRemoval, vec![restart(Some("run.step3"))]),
            snap(
                Step::HboneSidecars,
                vec![restart(None), restart(Some("later"))],
            ),
        ]);
        let key = (
            ObjectRef::new("Deployment", Some("ns"), "app"),
            Aspect::RestartAnnotation,
        );
        assert_eq!(wants.get(&key), Some(&Want::Text(None)));
        assert_eq!(wants.len(), 1);
    }

    #[test]
    fn a_restart_annotation_left_from_an_undone_step_is_named() {
        let inv = live(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: app, namespace: ns}\nspec: {selector: {matchLabels: {a: b}}, template: {metadata: {labels: {a: b}, annotations: {meshmig.io/restartedAt: run.step9}}}}\n",
        );
        let o = restored_in(
            &inv,
            &[snap(Step::SidecarRemoval, vec![restart(Some("run.step3"))])],
        );
        assert_eq!(o.result, CheckResult::Pending);
        assert!(
            o.message
                .contains("restart annotation is \"run.step9\", was \"run.step3\""),
            "{}",
            o.message
        );
        let o = restored_in(
            &inv,
            &[snap(Step::SidecarRemoval, vec![restart(Some("run.step9"))])],
        );
        assert_eq!(o.result, CheckResult::Pass, "{}", o.message);
    }

    #[test]
    fn deleted_objects_must_be_back_as_kept_and_created_ones_gone_unless_not_ours() {
        let vs = ObjectRef::new("VirtualService", Some("ns"), "reviews");
        let kept = json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "reviews", "namespace": "ns"}, "spec": {"hosts": ["reviews"]}});
        let deleted = snap(
            Step::WaypointActivation,
            vec![Entry::Delete {
                object: vs.clone(),
                manifest: kept,
            }],
        );
        let o = restored_in(&Inventory::default(), std::slice::from_ref(&deleted));
        assert!(o.message.contains("was not recreated"), "{}", o.message);
        let other = live(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews, namespace: ns}\nspec: {hosts: [ratings]}\n",
        );
        let o = restored_in(&other, std::slice::from_ref(&deleted));
        assert!(
            o.message.contains("differs from its snapshot"),
            "{}",
            o.message
        );
        let same = live(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews, namespace: ns}\nspec: {hosts: [reviews]}\n",
        );
        assert_eq!(restored_in(&same, &[deleted]).result, CheckResult::Pass);

        let created = snap(
            Step::WaypointActivation,
            vec![Entry::Create {
                object: ObjectRef::new("HTTPRoute", Some("ns"), "reviews"),
                api_version: "gateway.networking.k8s.io/v1".into(),
                existed: false,
            }],
        );
        let ours = live(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: reviews, namespace: ns, labels: {app.kubernetes.io/managed-by: meshmig, meshmig.io/migration: m}}\nspec: {}\n",
        );
        let o = restored_in(&ours, std::slice::from_ref(&created));
        assert!(o.message.contains("is still present"), "{}", o.message);
        let users = live(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: reviews, namespace: ns}\nspec: {}\n",
        );
        assert_eq!(restored_in(&users, &[created]).result, CheckResult::Pass);
    }

    #[test]
    fn the_control_plane_profile_must_be_back() {
        let inv = live(
            "apiVersion: sailoperator.io/v1\nkind: Istio\nmetadata: {name: default}\nspec: {profile: ambient}\n",
        );
        let entry = |profile: Option<Value>| {
            snap(
                Step::ControlPlane,
                vec![Entry::SailSpec {
                    object: ObjectRef::new("Istio", None, "default"),
                    profile,
                    values: None,
                }],
            )
        };
        let o = restored_in(&inv, &[entry(None)]);
        assert!(
            o.message
                .contains("spec.profile is \"ambient\", was absent"),
            "{}",
            o.message
        );
        assert_eq!(
            restored_in(&inv, &[entry(Some(json!("ambient")))]).result,
            CheckResult::Pass
        );
    }

    #[test]
    fn long_lists_are_cut_and_counted() {
        let items: Vec<String> = (0..8).map(|i| format!("x{i}")).collect();
        assert_eq!(listed(&items), "x0; x1; x2; x3; x4; and 3 more");
    }
}
