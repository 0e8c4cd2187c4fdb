//! The plan: findings, per-namespace steps and actions, generated manifests and the
//! enforcement timeline. `plan()` is the only entry point; it is pure.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use meshmig_api::gateway::{Gateway, GatewayListeners, GatewaySpec};
use meshmig_api::istio::{
    AuthorizationPolicy, DestinationRule, DestinationRuleSpec, PolicyTargetReference,
    RequestAuthentication, Telemetry, VirtualService, WasmPlugin,
};
use meshmig_api::names::{self as mn, istio as n};
use meshmig_api::{
    BypassProtection, CheckId, ControlPlaneMode, Enforcer, MeshMigrationSpec, Step, WaypointPolicy,
    WindowKind,
};
use serde::Serialize;
use serde_json::{Value, json};

use crate::authz::{self, Action as AuthzAction, PolicyClass};
use crate::classify;
use crate::cluster::{self, ControlPlaneFacts};
use crate::findings::{self as f, Finding, Severity};
use crate::inventory::{Inventory, label};
use crate::model::{
    Model, NamespaceInjection, Workload, WorkloadKind, is_headless, labels, namespace_injection,
    selector_matches, service_selector,
};
use crate::object::{ObjectRef, dns_subdomain};
use crate::routes::{self, ConvertOptions, HostTarget, is_mesh, resolve_host};
mod analysis;
mod index;
mod manifests;
mod namespace;
#[expect(
    dead_code,
    reason = "its ingress_principals is superseded by Model::ingress_principals: delete both on merge"
)]
mod protection;
mod steps;
mod timeline;
mod waypoint;

use index::*;
use manifests::*;
use namespace::*;
use protection::*;
use timeline::*;
use waypoint::*;

/// What an action does.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Op {
    /// Read-only check.
    Verify,
    /// Merge-patch a Sail resource's spec (`patch`).
    Patch,
    /// Create a generated object (`manifest`).
    Create,
    /// Write a generated object that is only prepared, not applied, in this step.
    Prepare,
    /// Apply a generated object prepared earlier (`manifest`).
    Apply,
    /// Set a label (`key`=`value`) on the object.
    Label,
    /// Remove a label (`key`) from the object.
    Unlabel,
    /// Remove a label (`key`) from a workload's pod template.
    UnlabelTemplate,
    /// Rollout-restart a workload.
    Restart,
    /// Delete the object (snapshotted first).
    Delete,
    /// Remove `mesh` from a VirtualService's gateways (it also serves gateways).
    RemoveMeshGateway,
}

/// One action of a step.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Action {
    pub op: Op,
    /// The object acted on.
    pub object: ObjectRef,
    /// Why, in words.
    pub detail: String,
    /// Label key (label/unlabel ops).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Label value (label op).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Index into [`Plan::manifests`] (create/prepare/apply ops).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest: Option<usize>,
    /// Merge patch (patch op).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<Value>,
    /// Only once the workloads the object concerns run without sidecars (step 9).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub after_rollout: bool,
}

impl Action {
    fn new(op: Op, object: ObjectRef, detail: impl Into<String>) -> Self {
        Self {
            op,
            object,
            detail: detail.into(),
            key: None,
            value: None,
            manifest: None,
            patch: None,
            after_rollout: false,
        }
    }

    fn label(object: ObjectRef, key: &str, value: &str, detail: impl Into<String>) -> Self {
        Self {
            key: Some(key.into()),
            value: Some(value.into()),
            ..Self::new(Op::Label, object, detail)
        }
    }

    fn unlabel(op: Op, object: ObjectRef, key: &str, detail: impl Into<String>) -> Self {
        Self {
            key: Some(key.into()),
            ..Self::new(op, object, detail)
        }
    }
}

/// One step of one namespace.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StepPlan {
    pub number: Step,
    pub name: &'static str,
    /// Actions, in order.
    pub actions: Vec<Action>,
    /// Names of the checkpoint's checks.
    pub checks: Vec<CheckId>,
}

/// Why a Service needs the waypoint.
#[derive(Serialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reason {
    /// Finding id.
    pub id: &'static str,
    /// Object responsible.
    pub object: ObjectRef,
}

/// Plan for one Service.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServicePlan {
    pub name: String,
    /// Whether its own features need a waypoint.
    pub needs_waypoint: bool,
    /// Whether it will be served by the namespace waypoint (step 7).
    pub served_by_waypoint: bool,
    /// Why it needs one.
    pub reasons: Vec<Reason>,
    /// Whether bypass protection guards its workloads.
    pub bypass_protection: bool,
}

/// The namespace waypoint.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WaypointPlan {
    /// Whether the namespace gets (or has) a waypoint.
    pub needed: bool,
    /// Gateway name.
    pub name: String,
    /// `istio.io/waypoint-for`.
    #[serde(rename = "for")]
    pub for_: String,
    /// Whether it already exists.
    pub exists: bool,
    /// Its SPIFFE principal.
    pub principal: String,
}

/// One workload's migration.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadPlan {
    pub kind: &'static str,
    pub name: String,
    /// Has (or will get) a sidecar.
    pub sidecar: bool,
    /// Its sidecars speak HBONE already.
    pub hbone: bool,
    /// Opted out of the mesh.
    pub opted_out: bool,
}

/// A window in which enforcement differs from before the migration.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Window {
    /// First step (state after it is applied).
    pub from_step: Step,
    pub to_step: Step,
    /// Which way enforcement differs.
    pub kind: WindowKind,
    /// Which callers and why.
    pub reason: String,
}

/// Who enforces a policy after a step.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StepEnforcement {
    pub step: Step,
    /// Proxies enforcing it (`sidecar`, `ztunnel`, `waypoint`).
    pub enforced_by: Vec<Enforcer>,
}

/// Timeline of one policy on one Service.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Enforcement {
    pub service: String,
    pub policy: ObjectRef,
    /// Whether it moves to the waypoint.
    pub moves_to_waypoint: bool,
    /// Who enforces it after each step.
    pub by_step: Vec<StepEnforcement>,
    /// Fail-open and fail-closed windows.
    pub windows: Vec<Window>,
}

/// Plan for one namespace.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NamespacePlan {
    pub name: String,
    /// Whether it exists in the inventory.
    pub exists: bool,
    pub waypoint: WaypointPlan,
    pub services: Vec<ServicePlan>,
    pub workloads: Vec<WorkloadPlan>,
    pub steps: Vec<StepPlan>,
    /// Enforcement timeline.
    pub enforcement: Vec<Enforcement>,
}

#[derive(Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Blockers not accepted.
    pub blockers: usize,
    /// Blockers accepted by the spec.
    pub accepted_blockers: usize,
    pub warnings: usize,
    /// Informational findings.
    pub infos: usize,
    /// Objects in the inventory.
    pub inventory_objects: usize,
    /// Skipped kinds.
    pub skipped: BTreeMap<String, usize>,
}

/// The whole plan.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// Name of the MeshMigration (labels of generated objects).
    pub migration: String,
    /// Findings, most severe first.
    pub findings: Vec<Finding>,
    pub control_plane: ControlPlaneFacts,
    /// Cluster-level actions of step 2 (also listed in each namespace's step 2).
    pub control_plane_actions: Vec<Action>,
    /// Commands the user runs for an External control plane.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub control_plane_commands: Vec<String>,
    /// Order in which namespaces go through the restart steps.
    pub namespace_order: Vec<String>,
    /// Per-namespace plans, in `namespace_order`.
    pub namespaces: Vec<NamespacePlan>,
    /// Generated objects, in step order.
    pub manifests: Vec<Value>,
    /// Step each manifest belongs to (parallel to `manifests`).
    #[serde(skip)]
    pub manifest_steps: Vec<Step>,
    pub summary: Summary,
}

impl Plan {
    /// Unaccepted blockers.
    pub fn blockers(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.is_blocking())
    }

    pub fn namespace(&self, name: &str) -> Option<&NamespacePlan> {
        self.namespaces.iter().find(|n| n.name == name)
    }
}

pub(super) fn svc_name(s: &Service) -> &str {
    s.metadata.name.as_deref().unwrap_or_default()
}

pub(super) fn policy_selector(p: &AuthorizationPolicy) -> Option<&BTreeMap<String, String>> {
    p.spec
        .selector
        .as_ref()
        .and_then(|s| s.match_labels.as_ref())
        .filter(|m| !m.is_empty())
}

/// Target namespaces from the spec, in spec order (selector: sorted by name).
pub fn target_namespaces(inv: &Inventory, spec: &MeshMigrationSpec) -> Vec<String> {
    const SYSTEM: [&str; 4] = [
        "kube-system",
        "kube-public",
        "kube-node-lease",
        "istio-system",
    ];
    if let Some(list) = &spec.namespaces {
        let mut seen = BTreeSet::new();
        return list
            .iter()
            .filter(|n| seen.insert(n.as_str()))
            .cloned()
            .collect();
    }
    if let Some(sel) = &spec.namespace_selector {
        return inv
            .namespaces
            .iter()
            .filter(|(name, _)| {
                !SYSTEM.contains(&name.as_str())
                    && *name != &spec.control_plane.istio_namespace
                    && *name != &spec.control_plane.ztunnel_namespace
            })
            .filter(|(_, ns)| crate::model::label_selector_matches(sel, labels(&ns.metadata)))
            .map(|(name, _)| name.clone())
            .collect();
    }
    Vec::new()
}

/// Namespaces with sidecar injection on (the default targets of an offline plan).
pub fn injected_namespaces(inv: &Inventory) -> Vec<String> {
    inv.namespaces
        .iter()
        .filter(|(name, ns)| {
            name.as_str() != "istio-system"
                && namespace_injection(Some(ns)) != NamespaceInjection::Off
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// The plan for a MeshMigration spec over an inventory. `migration` names the
/// MeshMigration (it labels every generated object).
pub fn plan(inv: &Inventory, spec: &MeshMigrationSpec, migration: &str) -> Plan {
    let threads = crate::parallel::threads_for(usize::MAX, 1);
    plan_on(inv, spec, migration, threads)
}

/// [`plan`] with the namespaces analyzed on up to `threads` threads.
fn plan_on(inv: &Inventory, spec: &MeshMigrationSpec, migration: &str, threads: usize) -> Plan {
    // The plan must not depend on listing order (the operator's caches iterate in hash
    // order); sorting a copy is only needed when the caller did not sort.
    let inv: Cow<'_, Inventory> = if inv.is_sorted() {
        Cow::Borrowed(inv)
    } else {
        let mut copy = inv.clone();
        copy.sort();
        Cow::Owned(copy)
    };
    let inv = inv.as_ref();
    let model = Model::new(inv);
    let (facts, mut findings) = cluster::analyze(inv, spec);
    let targets = target_namespaces(inv, spec);
    let target_set: BTreeSet<String> = targets.iter().cloned().collect();
    let conversions = convert_virtual_services(&model, &target_set, &mut findings);
    let index = Index::new(inv, &target_set, &conversions, facts.ztunnel_semantics());
    let ingress = model.ingress_principals(&facts.trust_domain);
    let control_plane = control_plane_actions(spec, &facts);
    let cx = PlanContext {
        model: &model,
        index: &index,
        spec,
        facts: &facts,
        targets: &target_set,
        conversions: &conversions,
        ingress: &ingress,
        migration,
    };
    let (mut works, manifests) = analyze_namespaces(&cx, &targets, threads, &mut findings);

    // Step 2 actions are cluster-wide; listed in every namespace so each one's step 2 is
    // self-contained.
    for w in works.iter_mut().filter(|w| w.exists) {
        for a in &control_plane.actions {
            w.act(Step::ControlPlane, a.clone());
        }
    }
    let td = &facts.trust_domain;
    let order = namespace_order(spec, inv, &targets, td, &index.sem);
    // Windows that depend on the order of step 9 across namespaces.
    order_windows(&mut works, &order, &index, td, &mut findings);
    finalize_findings(&mut findings, spec);
    let manifests = OrderedManifests::new(manifests);
    let namespaces = namespace_plans(works, &order, &manifests.remap);
    let summary = summarize(&findings, inv);
    Plan {
        migration: migration.to_string(),
        findings,
        control_plane: facts,
        control_plane_actions: control_plane.actions,
        control_plane_commands: control_plane.commands,
        namespace_order: order,
        namespaces,
        manifests: manifests.values,
        manifest_steps: manifests.steps,
        summary,
    }
}

/// The mesh VirtualServices that route into the targets (or live in one), converted.
fn convert_virtual_services<'a>(
    model: &Model<'a>,
    targets: &BTreeSet<String>,
    findings: &mut Vec<Finding>,
) -> Vec<VsConversion<'a>> {
    let inv = model.inv;
    let convert_opts = ConvertOptions::for_crd(
        inv.crds
            .as_ref()
            .and_then(|c| c.get("httproutes.gateway.networking.k8s.io")),
    );
    let mut conversions = Vec::new();
    for vs in &inv.virtual_services {
        let vs_ns = vs.metadata.namespace.clone().unwrap_or_default();
        let vs_ref = ObjectRef::from_meta("VirtualService", &vs.metadata);
        let in_target = vs
            .spec
            .hosts
            .iter()
            .flatten()
            .any(|h| match resolve_host(h, &vs_ns) {
                HostTarget::Service(ns, _) => targets.contains(&ns),
                _ => false,
            })
            || targets.contains(&vs_ns);
        if !in_target {
            continue;
        }
        if !is_mesh(vs) {
            findings.push(Finding::new(f::VS_GATEWAY_ONLY, vs_ref, ""));
            continue;
        }
        let conversion = routes::convert(model, vs, &inv.destination_rules, convert_opts);
        // Only when something is generated: a VirtualService that is not converted stays.
        if conversion.keeps_gateways && !conversion.routes.is_empty() {
            findings.push(Finding::new(f::VS_MESH_AND_GATEWAY, vs_ref.clone(), ""));
        }
        let owner = conversion
            .parents
            .iter()
            .map(|(ns, _)| ns)
            .find(|ns| targets.contains(*ns))
            .cloned()
            .unwrap_or(vs_ns);
        conversions.push(VsConversion {
            vs,
            conversion,
            owner,
        });
    }
    conversions
}

/// Every target's part of the plan, in target order, with all their manifests.
/// Namespaces are analyzed independently of each other (they only read the shared
/// context), then concatenated in the order of the targets, exactly as one thread
/// analyzing them in turn would have produced them; manifest indexes shift by what came
/// before.
fn analyze_namespaces(
    cx: &PlanContext<'_>,
    targets: &[String],
    threads: usize,
    findings: &mut Vec<Finding>,
) -> (Vec<NsWork>, Vec<Manifest>) {
    let analyzed = crate::parallel::map(targets, threads, |ns| NamespacePlanner::new(cx, ns).run());
    let mut works: Vec<NsWork> = Vec::with_capacity(analyzed.len());
    let mut manifests: Vec<Manifest> = Vec::new();
    for mut a in analyzed {
        let offset = manifests.len();
        for action in a.work.steps.values_mut().flatten() {
            if let Some(m) = &mut action.manifest {
                *m += offset;
            }
        }
        manifests.extend(a.manifests);
        findings.extend(a.findings);
        works.push(a.work);
    }
    (works, manifests)
}

/// Deduplicated, marked accepted where the spec accepts them, most severe first.
fn finalize_findings(findings: &mut Vec<Finding>, spec: &MeshMigrationSpec) {
    findings.sort();
    findings.dedup();
    for fi in findings.iter_mut() {
        fi.accepted = spec
            .accepted_findings
            .iter()
            .any(|e| fi.matches_acceptance(e));
    }
    findings.sort_by(|a, b| (a.severity, &a.object, a.id).cmp(&(b.severity, &b.object, b.id)));
}

/// The namespaces' finished plans, in `order`.
fn namespace_plans(
    works: Vec<NsWork>,
    order: &[String],
    remap: &HashMap<usize, usize>,
) -> Vec<NamespacePlan> {
    let mut by_name: HashMap<String, NsWork> =
        works.into_iter().map(|w| (w.name.clone(), w)).collect();
    order
        .iter()
        .filter_map(|ns| by_name.remove(ns))
        .map(|w| w.finish(remap))
        .collect()
}

fn summarize(findings: &[Finding], inv: &Inventory) -> Summary {
    let count = |severity: Severity| findings.iter().filter(|f| f.severity == severity).count();
    Summary {
        blockers: findings.iter().filter(|f| f.is_blocking()).count(),
        accepted_blockers: findings
            .iter()
            .filter(|f| f.severity == Severity::Blocker && f.accepted)
            .count(),
        warnings: count(Severity::Warning),
        infos: count(Severity::Info),
        inventory_objects: inv.len(),
        skipped: inv.skipped.clone(),
    }
}

/// Step 2: the cluster-level actions, and the commands the user runs when the control
/// plane is managed outside meshmig.
struct ControlPlaneStep {
    actions: Vec<Action>,
    commands: Vec<String>,
}

fn control_plane_actions(spec: &MeshMigrationSpec, facts: &ControlPlaneFacts) -> ControlPlaneStep {
    // The mode analysis settled on, not the spec's: a default (Sail) spec on a Helm or
    // istioctl install is planned as External (see `cluster::analyze`).
    match facts.mode {
        ControlPlaneMode::Sail => ControlPlaneStep {
            actions: sail_actions(&spec.control_plane, facts),
            commands: Vec::new(),
        },
        ControlPlaneMode::External => external_control_plane(&spec.control_plane),
    }
}

fn sail_actions(cp: &meshmig_api::ControlPlaneSpec, facts: &ControlPlaneFacts) -> Vec<Action> {
    let ztunnel = json!({
        "apiVersion": "sailoperator.io/v1",
        "kind": "ZTunnel",
        "metadata": {"name": cp.ztunnel},
        "spec": {
            "namespace": cp.ztunnel_namespace,
            "version": facts.version,
            "profile": "ambient",
        },
    });
    vec![
        Action {
            patch: Some(
                json!({"spec": {"profile": "ambient", "values": {"pilot": {"trustedZtunnelNamespace": cp.ztunnel_namespace}}}}),
            ),
            ..Action::new(
                Op::Patch,
                ObjectRef::new("Istio", None, &cp.istio),
                "switch the control plane to the ambient profile and trust ztunnel's namespace",
            )
        },
        Action {
            patch: Some(json!({"spec": {"profile": "ambient"}})),
            ..Action::new(
                Op::Patch,
                ObjectRef::new("IstioCNI", None, &cp.istio_cni),
                "switch istio-cni to the ambient profile",
            )
        },
        Action {
            patch: Some(ztunnel),
            ..Action::new(
                Op::Create,
                ObjectRef::new("ZTunnel", None, &cp.ztunnel),
                format!("deploy ztunnel in namespace {}", cp.ztunnel_namespace),
            )
        },
    ]
}

fn external_control_plane(cp: &meshmig_api::ControlPlaneSpec) -> ControlPlaneStep {
    let commands = vec![
        format!(
            "helm upgrade istio-cni istio/cni -n {} --set profile=ambient --wait",
            cp.cni_namespace
        ),
        format!(
            "helm upgrade istiod istio/istiod -n {} --set profile=ambient --set pilot.trustedZtunnelNamespace={} --wait",
            cp.istio_namespace, cp.ztunnel_namespace
        ),
        format!(
            "helm install ztunnel istio/ztunnel -n {} --create-namespace --wait",
            cp.ztunnel_namespace
        ),
    ];
    let actions = vec![Action::new(
        Op::Verify,
        ObjectRef::new("Deployment", Some(&cp.istio_namespace), "istiod"),
        "control plane is managed outside meshmig: run the commands shown, meshmig waits for PILOT_ENABLE_AMBIENT=true and a ready ztunnel",
    )];
    ControlPlaneStep { actions, commands }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_namespace_lists_are_abbreviated_in_messages() {
        let few: Vec<String> = ["a", "b"].map(String::from).to_vec();
        assert_eq!(abbreviated_list(&few, 10), "a, b");
        let many: Vec<String> = (0..13).map(|i| format!("ns{i:02}")).collect();
        assert_eq!(
            abbreviated_list(&many, 3),
            "ns00, ns01, ns02 and 10 more, listed in the policy's notNamespaces"
        );
    }

    #[test]
    fn namespaces_analyzed_on_several_threads_give_the_plan_of_one_thread() {
        let template = include_str!("../../tests/data/namespace-template.yaml");
        let names: Vec<String> = (0..70).map(|i| format!("team-{i:02}")).collect();
        let mut inv = Inventory::default();
        for n in &names {
            inv.load_str(&template.replace("NS", n), n).unwrap();
        }
        inv.sort();
        let spec: MeshMigrationSpec = serde_json::from_value(json!({
            "controlPlane": {"mode": "Sail", "istio": "default"},
            "waypoint": {"policy": "Auto"},
            "namespaces": names,
        }))
        .unwrap();
        let one = serde_json::to_value(plan_on(&inv, &spec, "m", 1)).unwrap();
        assert!(one["manifests"].as_array().unwrap().len() > 70 * 3);
        for threads in [2, 4] {
            let many = serde_json::to_value(plan_on(&inv, &spec, "m", threads)).unwrap();
            assert!(many == one, "{threads} threads planned differently");
        }
    }

    #[test]
    fn a_destination_rule_without_a_namespace_is_analyzed_with_the_services_of_default() {
        let mut inv = Inventory::default();
        inv.load_str(
            r#"
apiVersion: v1
kind: Namespace
metadata: {name: default, labels: {istio-injection: enabled}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: db}
spec:
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: app, image: example/db:1}]}
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec: {selector: {app: db}, ports: [{name: http, port: 80}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db}
spec:
  host: db
  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}
"#,
            "t",
        )
        .unwrap();
        let spec = MeshMigrationSpec {
            namespaces: Some(vec!["default".into()]),
            ..Default::default()
        };
        let p = plan(&inv, &spec, "m");
        let db = p
            .namespace("default")
            .unwrap()
            .services
            .iter()
            .find(|s| s.name == "db");
        let db = db.unwrap();
        assert!(db.needs_waypoint);
        assert_eq!(db.reasons[0].id, f::DR_TRAFFIC_POLICY.id);
        assert_eq!(
            db.reasons[0].object,
            ObjectRef::new("DestinationRule", None, "db")
        );
    }

    #[test]
    fn principal_namespaces() {
        assert_eq!(
            principal_namespace("cluster.local/ns/front/sa/web"),
            Some("front")
        );
        assert_eq!(principal_namespace("spiffe://x"), None);
    }

    #[test]
    fn every_step_has_checks() {
        for s in Step::ALL {
            assert!(!s.checks().is_empty());
        }
    }
}
