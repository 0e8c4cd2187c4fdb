//! The plan: findings, per-namespace steps and actions, generated manifests and the
//! enforcement timeline. `plan()` is the only entry point; it is pure.

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
    Model, NamespaceInjection, Workload, is_headless, labels, namespace_injection,
    selector_matches, service_selector,
};
use crate::object::{ObjectRef, dns_subdomain};
use crate::routes::{self, ConvertOptions, HostTarget, is_mesh, resolve_host};

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
    /// What to do.
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
    /// 1..9.
    pub number: Step,
    /// Step name.
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
    /// Service name.
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
    /// Kind.
    pub kind: &'static str,
    /// Name.
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
    /// Last step.
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
    /// Step.
    pub step: Step,
    /// Proxies enforcing it (`sidecar`, `ztunnel`, `waypoint`).
    pub enforced_by: Vec<Enforcer>,
}

/// Timeline of one policy on one Service.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Enforcement {
    /// Service name.
    pub service: String,
    /// The policy.
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
    /// Namespace.
    pub name: String,
    /// Whether it exists in the inventory.
    pub exists: bool,
    /// Waypoint.
    pub waypoint: WaypointPlan,
    /// Services.
    pub services: Vec<ServicePlan>,
    /// Workloads.
    pub workloads: Vec<WorkloadPlan>,
    /// Steps 1..9.
    pub steps: Vec<StepPlan>,
    /// Enforcement timeline.
    pub enforcement: Vec<Enforcement>,
}

/// Counts.
#[derive(Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Blockers not accepted.
    pub blockers: usize,
    /// Blockers accepted by the spec.
    pub accepted_blockers: usize,
    /// Warnings.
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
    /// Control plane facts.
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
    /// Counts.
    pub summary: Summary,
}

impl Plan {
    /// Unaccepted blockers.
    pub fn blockers(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.is_blocking())
    }

    /// A namespace's plan.
    pub fn namespace(&self, name: &str) -> Option<&NamespacePlan> {
        self.namespaces.iter().find(|n| n.name == name)
    }
}

// ------------------------------------------------------------------ manifests

struct Manifests {
    migration: String,
    items: Vec<(Step, ObjectRef, Value)>,
}

impl Manifests {
    /// Adds a generated object with meshmig's labels; returns its (pre-sort) index.
    fn add(
        &mut self,
        step: Step,
        role: &str,
        source: Option<&ObjectRef>,
        mut v: Value,
    ) -> (usize, ObjectRef) {
        if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            if let Some(l) = meta
                .entry("labels")
                .or_insert_with(|| json!({}))
                .as_object_mut()
            {
                l.insert(mn::LABEL_MANAGED_BY.into(), mn::MANAGED_BY.into());
                l.insert(mn::LABEL_MIGRATION.into(), self.migration.clone().into());
                l.insert(mn::LABEL_STEP.into(), step.to_string().into());
                l.insert(mn::LABEL_ROLE.into(), role.into());
            }
            if let Some(src) = source
                && let Some(a) = meta
                    .entry("annotations")
                    .or_insert_with(|| json!({}))
                    .as_object_mut()
            {
                a.insert(mn::ANNOTATION_SOURCE.into(), src.to_string().into());
            }
        }
        let kind = v
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let meta = v.get("metadata");
        let get = |k: &str| {
            meta.and_then(|m| m.get(k))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let obj = ObjectRef {
            kind,
            namespace: get("namespace"),
            name: get("name").unwrap_or_default(),
        };
        self.items.push((step, obj.clone(), v));
        (self.items.len() - 1, obj)
    }
}

// ------------------------------------------------------------------ analysis

/// A non-authorization object that gets waypoint copies: reference, object, selector, finding id.
type ExtraCopy = (
    ObjectRef,
    Value,
    Option<BTreeMap<String, String>>,
    &'static str,
);

/// Per-namespace working state.
struct NsWork {
    name: String,
    exists: bool,
    services: BTreeMap<String, ServicePlan>,
    workloads: Vec<WorkloadPlan>,
    steps: BTreeMap<Step, Vec<Action>>,
    enforcement: Vec<Enforcement>,
    waypoint: WaypointPlan,
    /// Workloads that restart in steps 3 and 9.
    restart: Vec<ObjectRef>,
    restart_hbone: Vec<ObjectRef>,
    /// Per guarded Service, the namespaces whose sidecar callers its bypass protection lets
    /// past without the waypoint.
    bypass_admits: BTreeMap<String, BTreeSet<String>>,
}

impl NsWork {
    fn reason(&mut self, svc: &str, id: &'static str, object: &ObjectRef) {
        let sp = self
            .services
            .entry(svc.to_string())
            .or_insert_with(|| ServicePlan {
                name: svc.to_string(),
                needs_waypoint: false,
                served_by_waypoint: false,
                reasons: Vec::new(),
                bypass_protection: false,
            });
        sp.needs_waypoint = true;
        let r = Reason {
            id,
            object: object.clone(),
        };
        if !sp.reasons.contains(&r) {
            sp.reasons.push(r);
        }
    }

    fn act(&mut self, step: Step, a: Action) {
        let list = self.steps.entry(step).or_default();
        if !list.contains(&a) {
            list.push(a);
        }
    }
}

fn svc_name(s: &Service) -> &str {
    s.metadata.name.as_deref().unwrap_or_default()
}

fn policy_selector(p: &AuthorizationPolicy) -> Option<&BTreeMap<String, String>> {
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

/// Ingress gateway principals (Istio gateway deployments).
fn ingress_principals(model: &Model<'_>, td: &str) -> Vec<String> {
    let mut out: Vec<String> = model
        .workloads
        .values()
        .flatten()
        .filter(|w| {
            w.pod_labels
                .get("istio")
                .is_some_and(|v| v.contains("ingressgateway"))
                || w.pod_labels
                    .contains_key("gateway.networking.k8s.io/gateway-name")
                    && w.pod_labels
                        .get("gateway.istio.io/managed")
                        .is_some_and(|v| v != "istio.io-mesh-controller")
        })
        .map(|w| w.principal(td))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Caller identities an ALLOW policy admits, when they can be listed.
#[derive(Default, Clone, Debug)]
struct Callers {
    principals: BTreeSet<String>,
    namespaces: BTreeSet<String>,
    /// Some rule admits callers that cannot be listed (no source constraint, negative
    /// forms, IP blocks).
    any: bool,
    /// Every rule is a single positive principals-or-namespaces source, nothing else:
    /// bypass protection reproduces it exactly.
    exact: bool,
}

fn allow_callers(
    p: &AuthorizationPolicy,
    class: &PolicyClass,
    td: &str,
    policy_ns: &str,
) -> Callers {
    let mut c = Callers {
        exact: true,
        ..Default::default()
    };
    let rules = p.spec.rules.as_deref().unwrap_or_default();
    if rules.is_empty() {
        // An ALLOW policy without rules admits nobody.
        return c;
    }
    for (rule, rc) in rules.iter().zip(&class.rules) {
        let froms = rule.from.as_deref().unwrap_or_default();
        let simple = froms.len() == 1
            && rule.to.is_none()
            && rule.when.is_none()
            && rc.identity_only()
            && froms[0].source.as_ref().is_some_and(|s| {
                (s.principals.is_some() as u8 + s.namespaces.is_some() as u8) == 1
                    && s.not_principals.is_none()
                    && s.not_namespaces.is_none()
                    && s.service_accounts.is_none()
                    && s.not_service_accounts.is_none()
            });
        if !simple {
            c.exact = false;
        }
        if froms.is_empty() {
            c.any = true;
            continue;
        }
        for from in froms {
            let Some(s) = &from.source else {
                c.any = true;
                continue;
            };
            let mut listed = false;
            for pr in s.principals.iter().flatten() {
                if pr.contains('*') {
                    c.any = true;
                } else {
                    c.principals.insert(pr.clone());
                }
                listed = true;
            }
            for ns in s.namespaces.iter().flatten() {
                if ns.contains('*') {
                    c.any = true;
                } else {
                    c.namespaces.insert(ns.clone());
                }
                listed = true;
            }
            for sa in s.service_accounts.iter().flatten() {
                let principal = match sa.split_once('/') {
                    Some((ns, sa)) => format!("{td}/ns/{ns}/sa/{sa}"),
                    None => format!("{td}/ns/{policy_ns}/sa/{sa}"),
                };
                c.principals.insert(principal);
                listed = true;
            }
            if !listed {
                c.any = true;
            }
        }
    }
    c
}

/// The waypoint-targeted copy of a selector policy for Service `svc`. A dry-run policy's
/// copy is dry-run too.
fn waypoint_copy(p: &AuthorizationPolicy, svc: &str, ns: &str) -> Value {
    let mut spec_v = serde_json::to_value(&p.spec).unwrap_or(Value::Null);
    if let Some(m) = spec_v.as_object_mut() {
        m.remove("selector");
        m.remove("targetRef");
        m.insert(
            "targetRefs".into(),
            serde_json::to_value(vec![PolicyTargetReference::service(svc)]).unwrap_or(Value::Null),
        );
    }
    let name = dns_subdomain(&[
        p.metadata.name.as_deref().unwrap_or_default(),
        svc,
        "waypoint",
    ]);
    let mut metadata = json!({"name": name, "namespace": ns});
    if let Some(v) = p
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(n::DRY_RUN))
    {
        metadata["annotations"] = json!({ n::DRY_RUN: v });
    }
    json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": metadata,
        "spec": spec_v,
    })
}

/// Step 5 creates the waypoint copy of policy `p` for Service `svc`.
fn add_waypoint_copy(
    manifests: &mut Manifests,
    w: &mut NsWork,
    p: &AuthorizationPolicy,
    svc: &str,
    ns: &str,
    what: &str,
) {
    let pref = ObjectRef::from_meta("AuthorizationPolicy", &p.metadata);
    let (mi, obj) = manifests.add(
        Step::Policies,
        "policy-copy",
        Some(&pref),
        waypoint_copy(p, svc, ns),
    );
    w.act(
        Step::Policies,
        Action {
            manifest: Some(mi),
            ..Action::new(
                Op::Create,
                obj,
                format!("{what} of {pref} for Service {svc}"),
            )
        },
    );
}

/// Dry-run policies: a dry-run copy on the waypoint of every served Service whose workloads
/// they select (so what they would decide stays observable), nothing enforcing, and, where
/// this Istio's ztunnel enforces dry-run policies (1.24), the window that opens.
#[allow(clippy::too_many_arguments)]
fn dry_run_copies(
    model: &Model<'_>,
    ns: &str,
    served: &BTreeSet<String>,
    dry_runs: &[(&AuthorizationPolicy, PolicyClass)],
    injected: &[&Workload<'_>],
    manifests: &mut Manifests,
    w: &mut NsWork,
    findings: &mut Vec<Finding>,
) {
    for (p, c) in dry_runs {
        let pref = ObjectRef::from_meta("AuthorizationPolicy", &p.metadata);
        let svcs: BTreeSet<String> = model
            .selected_workloads(ns, policy_selector(p))
            .iter()
            .filter(|wl| {
                injected
                    .iter()
                    .any(|i| i.name == wl.name && i.kind == wl.kind)
            })
            .flat_map(|wl| model.workload_services(wl))
            .map(|s| svc_name(s).to_string())
            .collect();
        let copied: Vec<&String> = svcs.iter().filter(|s| served.contains(*s)).collect();
        for s in &copied {
            add_waypoint_copy(manifests, w, p, s, ns, "dry-run waypoint copy");
        }
        findings.push(Finding::new(
            f::AUTHZ_DRY_RUN,
            pref.clone(),
            if copied.is_empty() {
                "no waypoint serves its Services: left as it is".to_string()
            } else {
                format!("copied as dry-run for {}", abbreviated_list(copied, 10))
            },
        ));
        if c.has_effect(authz::ZtunnelEffect::DryRunEnforced) {
            dry_run_enforced(&pref, &svcs, w, findings);
        }
    }
}

/// Istio 1.24's ztunnel enforces dry-run policies: once a workload runs without a sidecar,
/// its dry-run policies decide (fail-closed where they deny, or where an ALLOW excludes).
fn dry_run_enforced(
    pref: &ObjectRef,
    svcs: &BTreeSet<String>,
    w: &mut NsWork,
    findings: &mut Vec<Finding>,
) {
    findings.push(Finding::new(f::AUTHZ_DRY_RUN_ENFORCED, pref.clone(), ""));
    for s in svcs {
        let reason = "Istio 1.24's ztunnel enforces this dry-run policy: once its workloads run without sidecars it refuses what the sidecar only logged".to_string();
        findings.push(Finding::new(
            f::ENFORCEMENT_FAIL_CLOSED,
            pref.clone(),
            format!("Service {s}, step 9: {reason}"),
        ));
        w.enforcement.push(Enforcement {
            service: s.clone(),
            policy: pref.clone(),
            moves_to_waypoint: false,
            by_step: Step::ALL
                .into_iter()
                .map(|k| StepEnforcement {
                    step: k,
                    enforced_by: if k < Step::SidecarRemoval {
                        vec![]
                    } else {
                        vec![Enforcer::Ztunnel]
                    },
                })
                .collect(),
            windows: vec![Window {
                from_step: Step::SidecarRemoval,
                to_step: Step::SidecarRemoval,
                kind: WindowKind::FailClosed,
                reason,
            }],
        });
    }
}

/// The workloads of Service `svc` a policy's selector leaves out, when there are any: its
/// waypoint copy (targetRefs the Service) and the Service's bypass protection would apply
/// to them too.
fn partially_selected(
    model: &Model<'_>,
    ns: &str,
    svc: &str,
    p: &AuthorizationPolicy,
) -> Option<String> {
    let sel = policy_selector(p)?;
    let service = model.service(ns, svc)?;
    let missed: Vec<String> = model
        .service_workloads(service)
        .into_iter()
        .filter(|wl| !selector_matches(sel, wl.pod_labels))
        .map(|wl| format!("{} {}", wl.kind.as_str(), wl.name))
        .collect();
    (!missed.is_empty()).then(|| abbreviated_list(&missed, 5))
}

/// Gateway VirtualServices that route to Service `svc` of `ns`, which gets
/// `istio.io/ingress-use-waypoint`: istiod then gives the gateway's every cluster of the
/// Service, subset clusters included, the waypoint's endpoints (`findServiceWaypoint` in its
/// endpoint builder), and the waypoint's HTTPRoute for the Service picks the backend. A
/// subset the gateway route chose no longer applies (blocker); without one, ingress traffic
/// now follows the mesh route (warning).
fn gateway_routes_through_waypoint(inv: &Inventory, ns: &str, svc: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    for vs in inv
        .virtual_services
        .iter()
        .filter(|v| routes::has_gateways(v))
    {
        let vs_ns = vs.metadata.namespace.as_deref().unwrap_or_default();
        let dests = vs
            .spec
            .http
            .iter()
            .flatten()
            .flat_map(|r| r.route.iter().flatten())
            .map(|d| &d.destination)
            .filter(|d| resolve_host(&d.host, vs_ns) == HostTarget::Service(ns.into(), svc.into()));
        let subsets: BTreeSet<&str> = dests.clone().filter_map(|d| d.subset.as_deref()).collect();
        if dests.count() == 0 {
            continue;
        }
        let vref = ObjectRef::from_meta("VirtualService", &vs.metadata);
        out.push(if subsets.is_empty() {
            Finding::new(
                f::VS_GATEWAY_THROUGH_WAYPOINT,
                vref,
                format!("ingress traffic it sends to {ns}/{svc} goes through the waypoint from step 7, where {svc}'s HTTPRoute (if any) decides the backend"),
            )
        } else {
            Finding::new(
                f::VS_GATEWAY_SUBSET_THROUGH_WAYPOINT,
                vref,
                format!(
                    "its routes to subsets {} of {ns}/{svc} go through the waypoint from step 7, where {svc}'s HTTPRoute decides the backend instead",
                    subsets.into_iter().collect::<Vec<_>>().join(", ")
                ),
            )
        });
    }
    out
}

/// The namespaces whose sidecar callers bypass protection admits: those the ALLOW policies
/// name (alone or in principals), and, when the callers cannot be listed, every namespace
/// of the migration.
fn admitted_namespaces(callers: &Callers, targets: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = callers.namespaces.clone();
    out.extend(
        callers
            .principals
            .iter()
            .filter_map(|p| principal_namespace(p))
            .map(str::to_string),
    );
    if callers.any {
        out.extend(targets.iter().cloned());
    }
    out
}

/// The moved DENY policies of Service `s` that apply to every workload it selects (only
/// those may narrow its bypass protection).
fn svc_denies<'p>(
    moved: &BTreeMap<usize, BTreeSet<String>>,
    policies: &[(&'p AuthorizationPolicy, PolicyClass)],
    s: &str,
    selected: &[&Workload<'_>],
) -> Vec<&'p AuthorizationPolicy> {
    moved
        .iter()
        .filter(|(_, svcs)| svcs.contains(s))
        .map(|(i, _)| &policies[*i])
        .filter(|(_, c)| c.action == AuthzAction::Deny && !c.dry_run)
        .filter(|(p, _)| {
            !selected.is_empty()
                && selected.iter().all(|wl| {
                    policy_selector(p).is_none_or(|sel| selector_matches(sel, wl.pod_labels))
                })
        })
        .map(|(p, _)| *p)
        .collect()
}

/// The admitted namespaces one of `denies` refuses every request from.
fn refused_namespaces(
    admitted: &BTreeSet<String>,
    denies: Vec<&AuthorizationPolicy>,
    sem: &authz::ZtunnelSemantics,
) -> BTreeSet<String> {
    if denies.is_empty() {
        return BTreeSet::new();
    }
    admitted
        .iter()
        .filter(|n| {
            denies
                .iter()
                .any(|p| authz::matches_every_peer_in(p, sem, n))
        })
        .cloned()
        .collect()
}

/// A moved DENY protects nobody from callers that skip the waypoint: sidecar callers
/// outside the migration that bypass protection admits reach the workloads through ztunnel
/// alone, once the original is gone (and before that ztunnel enforces only what istiod
/// converts of it). Fail-open for those it could deny, until they migrate.
fn deny_outside_windows(
    p: &AuthorizationPolicy,
    sem: &authz::ZtunnelSemantics,
    admitted: &BTreeSet<String>,
    targets: &BTreeSet<String>,
) -> Vec<Window> {
    let outside: Vec<&str> = admitted
        .iter()
        .filter(|n| !targets.contains(*n))
        .filter(|n| authz::may_match_peer_in(p, sem, n))
        .map(String::as_str)
        .collect();
    if outside.is_empty() {
        return Vec::new();
    }
    vec![Window {
        from_step: Step::SidecarRemoval,
        to_step: Step::SidecarRemoval,
        kind: WindowKind::FailOpen,
        reason: format!(
            "sidecar callers from {} (outside this migration) are admitted by bypass protection and skip the waypoint copy of this DENY until they migrate",
            outside.join(", ")
        ),
    }]
}

/// During the step-9 rollout, sidecar callers still running reach the new pods directly,
/// where ztunnel enforces the original only as istiod converts it: where that admits what
/// the policy denied (a DENY that never fires, or an ALLOW whose trust-domain conditions
/// are dropped), it is fail-open for the callers it concerns. Those are the namespace's own
/// sidecar callers, and with unordered step 9 the other namespaces' admitted ones too.
fn rollout_fail_open(
    p: &AuthorizationPolicy,
    c: &PolicyClass,
    sem: &authz::ZtunnelSemantics,
    ns: &str,
    admitted: &BTreeSet<String>,
    ordering: meshmig_api::Ordering,
) -> Option<Window> {
    if !c.ztunnel_fail_open() {
        return None;
    }
    let concurrent: Vec<&str> = std::iter::once(ns)
        .chain(
            admitted
                .iter()
                .map(String::as_str)
                .filter(|_| ordering != meshmig_api::Ordering::Listed),
        )
        // An ALLOW that ztunnel widens concerns every caller; a DENY only those it names.
        .filter(|n| c.action != AuthzAction::Deny || authz::may_match_peer_in(p, sem, n))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if concurrent.is_empty() {
        return None;
    }
    let what = if !matches!(c.action, AuthzAction::Allow | AuthzAction::Deny) {
        "ztunnel does not enforce this policy at all (CUSTOM and AUDIT policies run only in proxies)"
    } else if c.action == AuthzAction::Deny {
        "ztunnel does not fire this DENY as written (istiod drops its L7 conditions, and a block or condition made only of them never matches)"
    } else {
        "ztunnel admits more than this policy (istiod drops its trust-domain conditions)"
    };
    Some(Window {
        from_step: Step::SidecarRemoval,
        to_step: Step::SidecarRemoval,
        kind: WindowKind::FailOpen,
        reason: format!(
            "during the step-9 rollout, sidecar callers in {} reach the new pods directly, and {what} until it is removed",
            concurrent.join(", ")
        ),
    })
}

/// Whether a DENY policy's source conditions could match traffic that arrives from the
/// waypoint (negative identity forms that do not exclude it, or IP conditions).
fn deny_matches_waypoint(
    p: &AuthorizationPolicy,
    waypoint_principal: &str,
    waypoint_ns: &str,
) -> bool {
    p.spec.rules.iter().flatten().any(|r| {
        r.from
            .iter()
            .flatten()
            .filter_map(|f| f.source.as_ref())
            .any(|s| {
                let excludes_principal = s
                    .not_principals
                    .as_ref()
                    .is_some_and(|l| l.iter().any(|x| x == waypoint_principal || x == "*"));
                let excludes_ns = s
                    .not_namespaces
                    .as_ref()
                    .is_some_and(|l| l.iter().any(|x| x == waypoint_ns || x == "*"));
                (s.not_principals.is_some() && !excludes_principal)
                    || (s.not_namespaces.is_some() && !excludes_ns)
                    || s.not_service_accounts.is_some()
                    || s.ip_blocks.is_some()
                    || s.not_ip_blocks.is_some()
            })
            || r.when.iter().flatten().any(|c| {
                c.key == "source.ip"
                    || (c.not_values.is_some()
                        && matches!(c.key.as_str(), "source.principal" | "source.namespace"))
            })
    })
}

/// Namespace of a principal `<td>/ns/<ns>/sa/<sa>`.
fn principal_namespace(p: &str) -> Option<&str> {
    let mut it = p.split('/');
    while let Some(part) = it.next() {
        if part == "ns" {
            return it.next();
        }
    }
    None
}

/// Indexes of the inventory built once per plan. Each namespace's analysis used to scan
/// every object of the inventory (and the enforcement timeline every policy), which made
/// planning quadratic in the number of namespaces; these lists keep inventory order, so
/// everything that depends on order comes out as before.
struct Index<'a> {
    /// AuthorizationPolicies by `metadata.namespace`.
    policies: HashMap<&'a str, Vec<&'a AuthorizationPolicy>>,
    /// The first AuthorizationPolicy of each reference.
    policy_by_ref: HashMap<ObjectRef, &'a AuthorizationPolicy>,
    /// PeerAuthentications by namespace (absent: ""), as inventory indexes.
    peer_authns: HashMap<&'a str, Vec<usize>>,
    /// RequestAuthentications by `metadata.namespace`.
    request_authns: HashMap<&'a str, Vec<&'a RequestAuthentication>>,
    /// Telemetries by `metadata.namespace`.
    telemetries: HashMap<&'a str, Vec<&'a Telemetry>>,
    /// WasmPlugins by `metadata.namespace`.
    wasm_plugins: HashMap<&'a str, Vec<&'a WasmPlugin>>,
    /// EnvoyFilters by namespace (absent: ""), as inventory indexes.
    envoy_filters: HashMap<&'a str, Vec<usize>>,
    /// Sidecars by namespace (absent: ""), as inventory indexes.
    sidecars: HashMap<&'a str, Vec<usize>>,
    /// DestinationRules by the namespace of the Service their host names (short hosts
    /// relative to the rule's namespace, absent: ""), with that Service's name.
    destination_rules: HashMap<String, Vec<(&'a DestinationRule, String)>>,
    /// HTTPRoutes (managed or not) by the Service (`namespace`, `name`) a parentRef names.
    http_routes: HashMap<(&'a str, &'a str), Vec<&'a meshmig_api::gateway::HTTPRoute>>,
    /// The first waypoint Gateway of each namespace.
    waypoints: HashMap<&'a str, &'a Gateway>,
    /// VirtualServices (inventory indexes) by the Service a subset destination resolves to.
    subset_routes: HashMap<(String, String), Vec<usize>>,
    /// Conversions (indexes) with a parent Service in each namespace.
    conversions_by_parent: HashMap<String, Vec<usize>>,
    /// Conversions (indexes) owned by each namespace.
    conversions_by_owner: HashMap<String, Vec<usize>>,
    /// The sorted targets for a finding of every namespace whose callers cannot be listed:
    /// all of them when few, else the first few and a count (a finding per Service naming
    /// thousands of namespaces made the plan's size grow with the square of the migration).
    targets_joined: String,
    /// What this control plane's istiod and ztunnel do with AuthorizationPolicies.
    sem: authz::ZtunnelSemantics,
}

fn by_namespace<'a, T>(
    list: &'a [T],
    meta: impl Fn(&T) -> &ObjectMeta,
) -> HashMap<&'a str, Vec<&'a T>> {
    let mut out: HashMap<&'a str, Vec<&'a T>> = HashMap::new();
    for o in list {
        if let Some(ns) = meta(o).namespace.as_deref() {
            out.entry(ns).or_default().push(o);
        }
    }
    out
}

fn indexes_by_namespace<T>(
    list: &[T],
    meta: impl Fn(&T) -> &ObjectMeta,
) -> HashMap<&str, Vec<usize>> {
    let mut out: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, o) in list.iter().enumerate() {
        out.entry(meta(o).namespace.as_deref().unwrap_or_default())
            .or_default()
            .push(i);
    }
    out
}

/// The indexes of `a` and `b` (each ascending) merged, ascending and without duplicates.
fn merged(a: Option<&Vec<usize>>, b: Option<&Vec<usize>>) -> Vec<usize> {
    let mut out: Vec<usize> = a.into_iter().chain(b).flatten().copied().collect();
    out.sort_unstable();
    out.dedup();
    out
}

impl<'a> Index<'a> {
    fn new(
        inv: &'a Inventory,
        targets: &BTreeSet<String>,
        conversions: &[(&'a VirtualService, routes::Conversion, String)],
        sem: authz::ZtunnelSemantics,
    ) -> Self {
        let mut policy_by_ref = HashMap::new();
        for p in &inv.authorization_policies {
            policy_by_ref
                .entry(ObjectRef::from_meta("AuthorizationPolicy", &p.metadata))
                .or_insert(p);
        }
        let mut destination_rules: HashMap<String, Vec<(&'a DestinationRule, String)>> =
            HashMap::new();
        for dr in &inv.destination_rules {
            let dr_ns = dr.metadata.namespace.as_deref().unwrap_or_default();
            if let HostTarget::Service(hns, hname) = resolve_host(&dr.spec.host, dr_ns) {
                destination_rules.entry(hns).or_default().push((dr, hname));
            }
        }
        let mut http_routes: HashMap<(&str, &str), Vec<&meshmig_api::gateway::HTTPRoute>> =
            HashMap::new();
        for hr in &inv.http_routes {
            let hns = hr.metadata.namespace.as_deref().unwrap_or_default();
            for r in hr.spec.parent_refs.iter().flatten() {
                if r.kind.as_deref() != Some("Service") {
                    continue;
                }
                let list = http_routes
                    .entry((r.namespace.as_deref().unwrap_or(hns), r.name.as_str()))
                    .or_default();
                if !list.last().is_some_and(|l| std::ptr::eq(*l, hr)) {
                    list.push(hr);
                }
            }
        }
        let mut waypoints: HashMap<&str, &Gateway> = HashMap::new();
        for g in &inv.gateways {
            if let Some(ns) = g.metadata.namespace.as_deref()
                && g.spec.gateway_class_name == n::WAYPOINT_CLASS
            {
                waypoints.entry(ns).or_insert(g);
            }
        }
        let mut subset_routes: HashMap<(String, String), Vec<usize>> = HashMap::new();
        for (i, vs) in inv.virtual_services.iter().enumerate() {
            let vs_ns = vs.metadata.namespace.as_deref().unwrap_or_default();
            for d in vs
                .spec
                .http
                .iter()
                .flatten()
                .flat_map(|r| r.route.iter().flatten())
                .filter(|d| d.destination.subset.is_some())
            {
                if let HostTarget::Service(hns, hname) = resolve_host(&d.destination.host, vs_ns) {
                    let list = subset_routes.entry((hns, hname)).or_default();
                    if list.last() != Some(&i) {
                        list.push(i);
                    }
                }
            }
        }
        let mut conversions_by_parent: HashMap<String, Vec<usize>> = HashMap::new();
        let mut conversions_by_owner: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, (_, conv, owner)) in conversions.iter().enumerate() {
            for (pns, _) in &conv.parents {
                let list = conversions_by_parent.entry(pns.clone()).or_default();
                if list.last() != Some(&i) {
                    list.push(i);
                }
            }
            conversions_by_owner
                .entry(owner.clone())
                .or_default()
                .push(i);
        }
        Self {
            policies: by_namespace(&inv.authorization_policies, |o| &o.metadata),
            policy_by_ref,
            peer_authns: indexes_by_namespace(&inv.peer_authentications, |o| &o.metadata),
            request_authns: by_namespace(&inv.request_authentications, |o| &o.metadata),
            telemetries: by_namespace(&inv.telemetries, |o| &o.metadata),
            wasm_plugins: by_namespace(&inv.wasm_plugins, |o| &o.metadata),
            envoy_filters: indexes_by_namespace(&inv.envoy_filters, |o| &o.metadata),
            sidecars: indexes_by_namespace(&inv.sidecars, |o| &o.metadata),
            destination_rules,
            http_routes,
            waypoints,
            subset_routes,
            conversions_by_parent,
            conversions_by_owner,
            targets_joined: abbreviated_list(targets, 10),
            sem,
        }
    }

    /// AuthorizationPolicies whose `metadata.namespace` is `ns`, in inventory order.
    fn policies_in(&self, ns: &str) -> &[&'a AuthorizationPolicy] {
        self.policies.get(ns).map(Vec::as_slice).unwrap_or_default()
    }

    /// DestinationRules whose host names a Service in `ns`, with its name.
    fn destination_rules_for(&self, ns: &str) -> &[(&'a DestinationRule, String)] {
        self.destination_rules
            .get(ns)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
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
    let sorted;
    let inv = if inv.is_sorted() {
        inv
    } else {
        let mut copy = inv.clone();
        copy.sort();
        sorted = copy;
        &sorted
    };
    let model = Model::new(inv);
    let (facts, mut findings) = cluster::analyze(inv, spec);
    let td = facts.trust_domain.clone();
    let targets = target_namespaces(inv, spec);
    let target_set: BTreeSet<String> = targets.iter().cloned().collect();
    let mut manifests = Manifests {
        migration: migration.to_string(),
        items: Vec::new(),
    };
    let convert_opts = ConvertOptions::for_crd(
        inv.crds
            .as_ref()
            .and_then(|c| c.get("httproutes.gateway.networking.k8s.io")),
    );
    let ingress = ingress_principals(&model, &td);
    let root = facts.root_namespace.clone();

    // ---- control plane actions (step 2)
    let (cp_actions, cp_commands) = control_plane_actions(spec, &facts);

    // ---- VirtualService conversions, assigned to the namespace of their first target parent
    let mut conversions: Vec<(&VirtualService, routes::Conversion, String)> = Vec::new();
    for vs in &inv.virtual_services {
        let vs_ns = vs.metadata.namespace.clone().unwrap_or_default();
        let vs_ref = ObjectRef::from_meta("VirtualService", &vs.metadata);
        let in_target = vs
            .spec
            .hosts
            .iter()
            .flatten()
            .any(|h| match resolve_host(h, &vs_ns) {
                HostTarget::Service(ns, _) => target_set.contains(&ns),
                _ => false,
            })
            || target_set.contains(&vs_ns);
        if !in_target {
            continue;
        }
        if !is_mesh(vs) {
            findings.push(Finding::new(f::VS_GATEWAY_ONLY, vs_ref, ""));
            continue;
        }
        let conv = routes::convert(&model, vs, &inv.destination_rules, convert_opts);
        // Only when something is generated: a VirtualService that is not converted stays.
        if conv.keeps_gateways && !conv.routes.is_empty() {
            findings.push(Finding::new(f::VS_MESH_AND_GATEWAY, vs_ref.clone(), ""));
        }
        let owner_ns = conv
            .parents
            .iter()
            .map(|(ns, _)| ns)
            .find(|ns| target_set.contains(*ns))
            .cloned()
            .unwrap_or(vs_ns);
        conversions.push((vs, conv, owner_ns));
    }
    let index = Index::new(inv, &target_set, &conversions, facts.ztunnel_semantics());

    // Namespaces are analyzed independently of each other (they only read the shared indexes).
    let analyzed = crate::parallel::map(&targets, threads, |ns| {
        let mut local = Manifests {
            migration: migration.to_string(),
            items: Vec::new(),
        };
        let mut local_findings = Vec::new();
        let w = analyze_namespace(
            &model,
            &index,
            spec,
            &facts,
            ns,
            &target_set,
            &conversions,
            &ingress,
            &root,
            &mut local,
            &mut local_findings,
        );
        (w, local.items, local_findings)
    });
    // Concatenated in the order of the targets, exactly as one thread analyzing them in
    // turn would have produced them; manifest indexes shift by what came before.
    let mut works: Vec<NsWork> = Vec::with_capacity(analyzed.len());
    for (mut w, items, local_findings) in analyzed {
        let offset = manifests.items.len();
        for a in w.steps.values_mut().flatten() {
            if let Some(m) = &mut a.manifest {
                *m += offset;
            }
        }
        manifests.items.extend(items);
        findings.extend(local_findings);
        works.push(w);
    }

    // Step 2 actions are cluster-wide; listed in every namespace so each one's step 2 is
    // self-contained.
    for w in works.iter_mut().filter(|w| w.exists) {
        for a in &cp_actions {
            w.act(Step::ControlPlane, a.clone());
        }
    }

    let order = namespace_order(spec, inv, &targets, &td, &index.sem);
    // Windows that depend on the order of step 9 across namespaces.
    order_windows(&mut works, &order, &index, &td, &mut findings);

    // ---- finalize findings: dedup, acceptance, sort
    findings.sort();
    findings.dedup();
    for fi in &mut findings {
        fi.accepted = spec
            .accepted_findings
            .iter()
            .any(|e| fi.matches_acceptance(e));
    }
    findings.sort_by(|a, b| (a.severity, &a.object, a.id).cmp(&(b.severity, &b.object, b.id)));

    // ---- manifests in step order, with action indexes remapped
    let mut idx: Vec<usize> = (0..manifests.items.len()).collect();
    idx.sort_by_key(|i| manifests.items[*i].0);
    let remap: HashMap<usize, usize> = idx
        .iter()
        .enumerate()
        .map(|(new, old)| (*old, new))
        .collect();
    let manifest_steps = idx.iter().map(|i| manifests.items[*i].0).collect();
    // Moved out rather than cloned: the manifests are most of the plan's memory.
    let manifest_values: Vec<Value> = idx
        .iter()
        .map(|i| std::mem::take(&mut manifests.items[*i].2))
        .collect();

    let mut namespaces: Vec<NamespacePlan> = Vec::new();
    let by_name: HashMap<String, NsWork> = works.into_iter().map(|w| (w.name.clone(), w)).collect();
    let mut by_name = by_name;
    for ns in &order {
        let Some(mut w) = by_name.remove(ns) else {
            continue;
        };
        let steps = Step::ALL
            .into_iter()
            .map(|s| {
                let mut actions = w.steps.remove(&s).unwrap_or_default();
                for a in &mut actions {
                    a.manifest = a.manifest.and_then(|m| remap.get(&m).copied());
                }
                StepPlan {
                    number: s,
                    name: s.name(),
                    actions,
                    checks: s.checks().to_vec(),
                }
            })
            .collect();
        namespaces.push(NamespacePlan {
            name: w.name,
            exists: w.exists,
            waypoint: w.waypoint,
            services: w.services.into_values().collect(),
            workloads: w.workloads,
            steps,
            enforcement: w.enforcement,
        });
    }

    let summary = Summary {
        blockers: findings.iter().filter(|f| f.is_blocking()).count(),
        accepted_blockers: findings
            .iter()
            .filter(|f| f.severity == Severity::Blocker && f.accepted)
            .count(),
        warnings: findings
            .iter()
            .filter(|f| f.severity == Severity::Warning)
            .count(),
        infos: findings
            .iter()
            .filter(|f| f.severity == Severity::Info)
            .count(),
        inventory_objects: inv.len(),
        skipped: inv.skipped.clone(),
    };
    Plan {
        migration: migration.to_string(),
        findings,
        control_plane: facts,
        control_plane_actions: cp_actions,
        control_plane_commands: cp_commands,
        namespace_order: order,
        namespaces,
        manifests: manifest_values,
        manifest_steps,
        summary,
    }
}

fn control_plane_actions(
    spec: &MeshMigrationSpec,
    facts: &ControlPlaneFacts,
) -> (Vec<Action>, Vec<String>) {
    let cp = &spec.control_plane;
    // The mode analysis settled on, not the spec's: a default (Sail) spec on a Helm or
    // istioctl install is planned as External (see `cluster::analyze`).
    match facts.mode {
        ControlPlaneMode::Sail => {
            let mut actions = vec![
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
            ];
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
            actions.push(Action {
                patch: Some(ztunnel),
                ..Action::new(
                    Op::Create,
                    ObjectRef::new("ZTunnel", None, &cp.ztunnel),
                    format!("deploy ztunnel in namespace {}", cp.ztunnel_namespace),
                )
            });
            (actions, Vec::new())
        }
        ControlPlaneMode::External => {
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
            (actions, commands)
        }
    }
}

/// Order of namespaces for restart steps: the spec's order, or callers before callees.
fn namespace_order(
    spec: &MeshMigrationSpec,
    inv: &Inventory,
    targets: &[String],
    td: &str,
    sem: &authz::ZtunnelSemantics,
) -> Vec<String> {
    if spec.ordering != Some(meshmig_api::Ordering::Auto) {
        return targets.to_vec();
    }
    // Edges caller -> callee from ALLOW policies naming caller namespaces.
    let set: BTreeSet<&str> = targets.iter().map(String::as_str).collect();
    let mut callers_of: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for p in &inv.authorization_policies {
        let ns = p.metadata.namespace.as_deref().unwrap_or_default();
        if !set.contains(ns) {
            continue;
        }
        let class = authz::classify_with(p, sem);
        if class.action != AuthzAction::Allow {
            continue;
        }
        let c = allow_callers(p, &class, td, ns);
        let entry = callers_of.entry(ns).or_default();
        for pr in &c.principals {
            if let Some(cns) = principal_namespace(pr) {
                entry.insert(cns.to_string());
            }
        }
        entry.extend(c.namespaces.iter().cloned());
    }
    // Kahn's algorithm, stable by spec order; cycles fall back to spec order.
    let mut done: Vec<String> = Vec::new();
    // Membership of `done` (a scan of it made this cubic in the number of namespaces).
    let mut placed: BTreeSet<String> = BTreeSet::new();
    let mut remaining: Vec<&String> = targets.iter().collect();
    while !remaining.is_empty() {
        let pick = remaining
            .iter()
            .position(|ns| {
                // Every in-migration caller of ns (other than ns) already placed.
                callers_of.get(ns.as_str()).is_none_or(|cs| {
                    cs.iter()
                        .filter(|c| c.as_str() != ns.as_str() && set.contains(c.as_str()))
                        .all(|c| placed.contains(c))
                })
            })
            .unwrap_or(0);
        let next = remaining.remove(pick).clone();
        placed.insert(next.clone());
        done.push(next);
    }
    done
}

/// Fail-open windows created by serving a namespace before its in-migration callers.
fn order_windows(
    works: &mut [NsWork],
    order: &[String],
    index: &Index<'_>,
    td: &str,
    findings: &mut Vec<Finding>,
) {
    let pos: HashMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    for w in works.iter_mut() {
        let my = pos.get(w.name.as_str()).copied().unwrap_or(0);
        for e in &mut w.enforcement {
            if !e.moves_to_waypoint {
                continue;
            }
            let Some(p) = index.policy_by_ref.get(&e.policy) else {
                continue;
            };
            let class = authz::classify_with(p, &index.sem);
            if class.action == AuthzAction::Deny {
                let admitted = w.bypass_admits.get(&e.service).cloned().unwrap_or_default();
                let later: Vec<&str> = admitted
                    .iter()
                    .filter(|ns| pos.get(ns.as_str()).is_some_and(|i| *i > my))
                    .filter(|ns| authz::may_match_peer_in(p, &index.sem, ns))
                    .map(String::as_str)
                    .collect();
                if !later.is_empty() {
                    let reason = format!(
                        "sidecar callers in {} (step 9 after {}) are admitted by bypass protection and skip the waypoint copy of this DENY until they run without sidecars; list them first",
                        later.join(", "),
                        w.name
                    );
                    push_order_window(e, reason, findings);
                }
                continue;
            }
            if class.action != AuthzAction::Allow || class.rules.iter().all(|r| r.identity_only()) {
                continue;
            }
            let c = allow_callers(p, &class, td, &w.name);
            let mut later: BTreeSet<&str> = c
                .principals
                .iter()
                .filter_map(|p| principal_namespace(p))
                .chain(c.namespaces.iter().map(String::as_str))
                .filter(|ns| pos.get(ns).is_some_and(|i| *i > my))
                .collect();
            if c.any {
                later.extend(order.iter().skip(my + 1).map(String::as_str));
            }
            if later.is_empty() {
                continue;
            }
            let list = later.into_iter().collect::<Vec<_>>().join(", ");
            let reason = format!(
                "sidecar callers in {list} (step 9 after {}) skip the waypoint copy until they run without sidecars; use ordering: Auto or list callers first",
                w.name
            );
            push_order_window(e, reason, findings);
        }
    }
}

/// A step-9 fail-open window of a moved policy, and its finding, once.
fn push_order_window(e: &mut Enforcement, reason: String, findings: &mut Vec<Finding>) {
    if e.windows.iter().any(|x| x.reason == reason) {
        return;
    }
    findings.push(Finding::new(
        f::ENFORCEMENT_FAIL_OPEN,
        e.policy.clone(),
        format!("Service {}, steps 9-9: {reason}", e.service),
    ));
    e.windows.push(Window {
        from_step: Step::SidecarRemoval,
        to_step: Step::SidecarRemoval,
        kind: WindowKind::FailOpen,
        reason,
    });
}

#[allow(clippy::too_many_arguments)]
fn analyze_namespace<'a>(
    model: &Model<'a>,
    index: &Index<'a>,
    spec: &MeshMigrationSpec,
    facts: &ControlPlaneFacts,
    ns: &str,
    targets: &BTreeSet<String>,
    conversions: &[(&VirtualService, routes::Conversion, String)],
    ingress: &[String],
    root: &str,
    manifests: &mut Manifests,
    findings: &mut Vec<Finding>,
) -> NsWork {
    let inv = model.inv;
    let td = &facts.trust_domain;
    let ns_obj = model.namespace(ns);
    let ns_ref = ObjectRef::namespace(ns);
    let injection = namespace_injection(ns_obj);
    let wp_name = spec.waypoint.name.clone();
    let mut w = NsWork {
        name: ns.to_string(),
        exists: ns_obj.is_some(),
        services: BTreeMap::new(),
        workloads: Vec::new(),
        steps: BTreeMap::new(),
        enforcement: Vec::new(),
        waypoint: WaypointPlan {
            needed: false,
            name: wp_name.clone(),
            for_: "service".into(),
            exists: false,
            principal: format!("{td}/ns/{ns}/sa/{wp_name}"),
        },
        restart: Vec::new(),
        restart_hbone: Vec::new(),
        bypass_admits: BTreeMap::new(),
    };
    for check in Step::Prerequisites.checks() {
        w.act(
            Step::Prerequisites,
            Action::new(Op::Verify, ns_ref.clone(), check.as_str()),
        );
    }
    if ns_obj.is_none() {
        findings.push(Finding::new(
            f::NAMESPACE_NOT_FOUND,
            ns_ref,
            format!("namespace {ns}"),
        ));
        return w;
    }
    let ns_meta = ns_obj.map(|n| &n.metadata);
    for svc in model.services_in(ns) {
        w.services.insert(
            svc_name(svc).to_string(),
            ServicePlan {
                name: svc_name(svc).to_string(),
                needs_waypoint: false,
                served_by_waypoint: false,
                reasons: Vec::new(),
                bypass_protection: false,
            },
        );
    }

    // ---- workloads
    let workloads = model.workloads_in(ns);
    let mut injected: Vec<&Workload<'_>> = Vec::new();
    for wl in workloads {
        let sidecar = wl.has_sidecar(&injection);
        let hbone = !wl.pods.is_empty()
            && wl
                .pods
                .iter()
                .all(|p| !p.has_sidecar() || p.sidecar_hbone());
        let opted_out = wl.opted_out();
        if opted_out {
            findings.push(Finding::new(f::WORKLOAD_OPTED_OUT, wl.object(), ""));
        }
        if wl.host_network {
            findings.push(Finding::new(f::HOSTNETWORK_POD, wl.object(), ""));
        }
        if wl.pods.iter().any(|p| cluster::spire_managed(&p.metadata))
            || wl.pod_labels.contains_key(n::SPIRE_IDENTITY)
        {
            findings.push(Finding::new(f::SPIRE, wl.object(), ""));
        }
        if sidecar && wl.kind == crate::model::WorkloadKind::Pod {
            findings.push(Finding::new(f::UNMANAGED_POD, wl.object(), ""));
        }
        if sidecar {
            injected.push(wl);
            if wl.kind != crate::model::WorkloadKind::Pod {
                w.restart.push(wl.object());
                if !hbone || !facts.ambient {
                    w.restart_hbone.push(wl.object());
                }
            }
        }
        w.workloads.push(WorkloadPlan {
            kind: wl.kind.as_str(),
            name: wl.name.to_string(),
            sidecar,
            hbone,
            opted_out,
        });
    }
    if injected.is_empty() {
        findings.push(Finding::new(
            f::NAMESPACE_NO_SIDECARS,
            ObjectRef::namespace(ns),
            "",
        ));
    }
    if let NamespaceInjection::Revision(rev) = &injection {
        findings.push(Finding::new(
            f::REVISION_LABEL_REMOVED,
            ObjectRef::namespace(ns),
            format!("istio.io/rev={rev}"),
        ));
    }
    let already_ambient =
        ns_meta.and_then(|m| label(m, n::DATAPLANE_MODE)) == Some(n::DATAPLANE_AMBIENT);
    if already_ambient {
        findings.push(Finding::new(
            f::NAMESPACE_ALREADY_AMBIENT,
            ObjectRef::namespace(ns),
            "",
        ));
    }
    let svc_of = |wl: &Workload<'_>| -> Vec<String> {
        model
            .workload_services(wl)
            .iter()
            .map(|s| svc_name(s).to_string())
            .collect()
    };

    // ---- authorization policies
    // Dry-run policies enforce nothing in a sidecar: they are copied as dry-run and never
    // shape what meshmig enforces (waypoint needs, bypass protection, the ALLOW union).
    let (dry_runs, policies): (Vec<(&AuthorizationPolicy, PolicyClass)>, Vec<_>) = index
        .policies_in(ns)
        .iter()
        .map(|p| (*p, authz::classify_with(p, &index.sem)))
        .partition(|(_, c)| c.dry_run && !c.targeted);
    let pod_addressed_workloads: BTreeSet<&str> = {
        let mut set = BTreeSet::new();
        for svc in model.services_in(ns) {
            if is_headless(svc) {
                for wl in model.service_workloads(svc) {
                    set.insert(wl.name);
                }
            }
        }
        for wl in workloads.iter().filter(|w| w.pod_addressed()) {
            set.insert(wl.name);
        }
        set
    };
    for (p, class) in &policies {
        let pref = ObjectRef::from_meta("AuthorizationPolicy", &p.metadata);
        if class.targeted {
            findings.push(Finding::new(f::AUTHZ_TARGETED_EXISTING, pref, ""));
            continue;
        }
        let tds = class.paths_of(authz::AttrKind::TrustDomain);
        if !tds.is_empty() {
            findings.push(Finding::new(
                f::AUTHZ_TRUST_DOMAINS,
                pref.clone(),
                tds.join(", "),
            ));
        }
        let unknown = class.paths_of(authz::AttrKind::Unknown);
        if !unknown.is_empty() {
            findings.push(Finding::new(
                f::AUTHZ_UNKNOWN_FIELD,
                pref.clone(),
                unknown.join(", "),
            ));
        }
        let (selected, others): (Vec<&Workload<'_>>, Vec<&Workload<'_>>) = model
            .selected_workloads(ns, policy_selector(p))
            .into_iter()
            .partition(|wl| {
                injected
                    .iter()
                    .any(|i| i.name == wl.name && i.kind == wl.kind)
            });
        // Workloads without a sidecar that step 6 puts in ambient: from then ztunnel
        // enforces this policy on them as istiod converts it, and no copy covers them.
        let unmeshed: Vec<String> = others
            .iter()
            .filter(|wl| {
                // `sidecar.istio.io/inject: "false"` keeps the sidecar away, not ztunnel.
                let dataplane = wl.pod_labels.get(n::DATAPLANE_MODE).map(String::as_str);
                dataplane != Some("none") && !wl.host_network
            })
            .map(|wl| format!("{} {}", wl.kind.as_str(), wl.name))
            .collect();
        if class.needs_waypoint() && !unmeshed.is_empty() {
            findings.push(Finding::new(
                f::AUTHZ_L7_UNMESHED,
                pref.clone(),
                format!("selects {} (no sidecar)", unmeshed.join(", ")),
            ));
        }
        if class.needs_waypoint() && !selected.is_empty() {
            let id = if matches!(class.action, AuthzAction::Allow | AuthzAction::Deny) {
                findings.push(Finding::new(
                    f::AUTHZ_L7,
                    pref.clone(),
                    class.l7_paths().join(", "),
                ));
                f::AUTHZ_L7.id
            } else {
                findings.push(Finding::new(
                    f::AUTHZ_ACTION_NEEDS_WAYPOINT,
                    pref.clone(),
                    format!("action {:?}", class.action),
                ));
                f::AUTHZ_ACTION_NEEDS_WAYPOINT.id
            };
            for wl in &selected {
                let svcs = svc_of(wl);
                if svcs.is_empty() {
                    findings.push(Finding::new(
                        f::AUTHZ_NO_SERVICE,
                        pref.clone(),
                        format!(
                            "{} {} is selected but no Service selects it",
                            wl.kind.as_str(),
                            wl.name
                        ),
                    ));
                }
                if pod_addressed_workloads.contains(wl.name) {
                    findings.push(Finding::new(
                        f::AUTHZ_WORKLOAD_ADDRESSED,
                        pref.clone(),
                        format!("{} {} is reached by pod IP", wl.kind.as_str(), wl.name),
                    ));
                }
                for s in svcs {
                    w.reason(&s, id, &pref);
                }
            }
        }
    }
    // Mesh-wide policies (root namespace) that apply to workloads here.
    let root_policies: &[&AuthorizationPolicy] = if root != ns {
        index.policies_in(root)
    } else {
        &[]
    };
    for p in root_policies {
        let class = authz::classify_with(p, &index.sem);
        if class.targeted {
            continue;
        }
        let applies = model
            .selected_workloads(ns, policy_selector(p))
            .iter()
            .any(|wl| injected.iter().any(|i| i.name == wl.name));
        if applies && (class.needs_waypoint() || class.source_dependent()) {
            findings.push(Finding::new(
                f::AUTHZ_MESH_WIDE,
                ObjectRef::from_meta("AuthorizationPolicy", &p.metadata),
                format!("applies to workloads in {ns}"),
            ));
        }
    }

    // ---- PeerAuthentication
    let mesh_wide_pas: Vec<usize> = index
        .peer_authns
        .get(root)
        .into_iter()
        .flatten()
        .copied()
        .filter(|i| cluster::mesh_wide(&inv.peer_authentications[*i], root))
        .collect();
    for pa in merged(index.peer_authns.get(ns), Some(&mesh_wide_pas))
        .into_iter()
        .map(|i| &inv.peer_authentications[i])
    {
        let pa_ns = pa.metadata.namespace.as_deref().unwrap_or_default();
        if pa_ns != ns && !cluster::mesh_wide(pa, root) {
            continue;
        }
        let pref = ObjectRef::from_meta("PeerAuthentication", &pa.metadata);
        for (port, mode) in classify::peer_authn_modes(pa) {
            let where_ = port
                .map(|p| format!("port {p}"))
                .unwrap_or_else(|| classify::peer_authn_scope(pa, root).into());
            match mode.as_str() {
                "DISABLE" => findings.push(Finding::new(
                    f::PEER_AUTHN_DISABLE,
                    pref.clone(),
                    format!("{where_} mode DISABLE"),
                )),
                "PERMISSIVE" => {
                    findings.push(Finding::new(f::PEER_AUTHN_PERMISSIVE, pref.clone(), where_))
                }
                _ => {}
            }
        }
    }

    // ---- RequestAuthentication, Telemetry, WasmPlugin: need waypoint + copy
    let mut extra_copies: Vec<ExtraCopy> = Vec::new();
    macro_rules! l7_kind {
        ($list:expr, $kind:literal, $finding:expr) => {
            for o in $list.get(ns).into_iter().flatten().copied() {
                let targeted = o.spec.target_ref.is_some()
                    || o.spec.target_refs.as_ref().is_some_and(|t| !t.is_empty());
                if targeted {
                    continue;
                }
                let oref = ObjectRef::from_meta($kind, &o.metadata);
                findings.push(Finding::new($finding, oref.clone(), ""));
                let sel = o
                    .spec
                    .selector
                    .as_ref()
                    .and_then(|s| s.match_labels.clone())
                    .filter(|m| !m.is_empty());
                for wl in model.selected_workloads(ns, sel.as_ref()) {
                    if !injected.iter().any(|i| i.name == wl.name) {
                        continue;
                    }
                    for s in svc_of(wl) {
                        w.reason(&s, $finding.id, &oref);
                    }
                }
                let value = serde_json::to_value(o).unwrap_or(Value::Null);
                extra_copies.push((oref, value, sel, $finding.id));
            }
        };
    }
    l7_kind!(
        index.request_authns,
        "RequestAuthentication",
        f::REQUEST_AUTHN
    );
    l7_kind!(index.telemetries, "Telemetry", f::TELEMETRY);
    l7_kind!(index.wasm_plugins, "WasmPlugin", f::WASM_PLUGIN);

    // ---- EnvoyFilter, Sidecar
    for ef in merged(index.envoy_filters.get(ns), index.envoy_filters.get(root))
        .into_iter()
        .map(|i| &inv.envoy_filters[i])
    {
        let ef_ns = ef.metadata.namespace.as_deref().unwrap_or_default();
        let sel = ef
            .spec
            .workload_selector
            .as_ref()
            .and_then(|s| s.labels.clone());
        let applies = if ef_ns == ns {
            true
        } else if ef_ns == root {
            model
                .selected_workloads(ns, sel.as_ref().filter(|m| !m.is_empty()))
                .iter()
                .any(|wl| injected.iter().any(|i| i.name == wl.name))
        } else {
            false
        };
        if applies {
            findings.push(Finding::new(
                f::ENVOYFILTER,
                ObjectRef::from_meta("EnvoyFilter", &ef.metadata),
                format!("patches proxies in {ns}"),
            ));
        }
    }
    for sc in merged(index.sidecars.get(ns), index.sidecars.get(root))
        .into_iter()
        .map(|i| &inv.sidecars[i])
    {
        let sc_ns = sc.metadata.namespace.as_deref().unwrap_or_default();
        if sc_ns == ns || sc_ns == root {
            findings.push(Finding::new(
                f::SIDECAR_RESOURCE_IGNORED,
                ObjectRef::from_meta("Sidecar", &sc.metadata),
                "",
            ));
        }
    }

    // ---- DestinationRules for Services here
    for (dr, hname) in index.destination_rules_for(ns) {
        let dref = ObjectRef::from_meta("DestinationRule", &dr.metadata);
        if model.service(ns, hname).is_none() {
            findings.push(Finding::new(
                f::DR_HOST_UNRESOLVED,
                dref,
                format!("host `{}`", dr.spec.host),
            ));
            continue;
        }
        let c = classify::classify_dr(dr);
        if c.needs_waypoint() {
            findings.push(Finding::new(
                f::DR_TRAFFIC_POLICY,
                dref.clone(),
                c.traffic_policy.join(", "),
            ));
            w.reason(hname, f::DR_TRAFFIC_POLICY.id, &dref);
        }
        let relied_on =
            c.needs_waypoint() || dr.spec.subsets.as_ref().is_some_and(|s| !s.is_empty());
        if let Some(to) = dr
            .spec
            .export_to
            .as_ref()
            .filter(|t| !t.is_empty() && !t.iter().any(|x| x == "*"))
            && relied_on
        {
            findings.push(Finding::new(
                f::DR_EXPORT_TO,
                dref.clone(),
                format!("exportTo: {to:?}"),
            ));
        }
        if c.tls_istio_mutual_only {
            findings.push(Finding::new(f::DR_TLS_ISTIO_MUTUAL, dref.clone(), ""));
        }
        if c.subset_policy {
            findings.push(Finding::new(f::DR_SUBSET_TRAFFIC_POLICY, dref.clone(), ""));
        }
        if c.subsets_only() {
            findings.push(Finding::new(f::DR_SUBSETS_ONLY, dref.clone(), ""));
        }
    }

    // ---- routes
    let mine: Vec<&(&VirtualService, routes::Conversion, String)> = index
        .conversions_by_owner
        .get(ns)
        .into_iter()
        .flatten()
        .filter_map(|i| conversions.get(*i))
        .collect();
    // Conversions with a parent here, in conversion order (the order of their reasons).
    for (vs, conv, _) in index
        .conversions_by_parent
        .get(ns)
        .into_iter()
        .flatten()
        .filter_map(|i| conversions.get(*i))
    {
        let vref = ObjectRef::from_meta("VirtualService", &vs.metadata);
        for (pns, psvc) in &conv.parents {
            if pns == ns {
                w.reason(psvc, f::VS_MESH_ROUTE.id, &vref);
                // An existing HTTPRoute on the same Service would be mixed with ours.
                for hr in index
                    .http_routes
                    .get(&(pns.as_str(), psvc.as_str()))
                    .into_iter()
                    .flatten()
                {
                    let managed = hr
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(mn::LABEL_MANAGED_BY))
                        .is_some_and(|v| v == mn::MANAGED_BY);
                    if !managed {
                        findings.push(Finding::new(
                            f::HTTPROUTE_EXISTS,
                            ObjectRef::from_meta("HTTPRoute", &hr.metadata),
                            format!("Service {pns}/{psvc} is also routed by {vref}"),
                        ));
                    }
                }
            }
        }
    }
    // Findings are sorted at the end, so their order here does not matter.
    for (vs, conv, _) in &mine {
        findings.extend(conv.findings.iter().cloned());
        if !conv.parents.is_empty() {
            let vref = ObjectRef::from_meta("VirtualService", &vs.metadata);
            findings.push(Finding::new(f::VS_MESH_ROUTE, vref, ""));
        }
    }

    // ---- waypoint decision
    let any_need = w.services.values().any(|s| s.needs_waypoint);
    let existing_wp = index.waypoints.get(ns).copied();
    match spec.waypoint.policy {
        WaypointPolicy::Never => {
            if any_need {
                let needing: Vec<&str> = w
                    .services
                    .values()
                    .filter(|s| s.needs_waypoint)
                    .map(|s| s.name.as_str())
                    .collect();
                findings.push(Finding::new(
                    f::WAYPOINT_DISABLED,
                    ObjectRef::namespace(ns),
                    format!("Services needing one: {}", needing.join(", ")),
                ));
            }
        }
        WaypointPolicy::Always => w.waypoint.needed = true,
        WaypointPolicy::Auto => w.waypoint.needed = any_need,
    }
    if let Some(g) = existing_wp {
        let name = g.metadata.name.clone().unwrap_or_default();
        findings.push(Finding::new(
            f::WAYPOINT_EXISTS,
            ObjectRef::from_meta("Gateway", &g.metadata),
            "",
        ));
        w.waypoint.exists = true;
        w.waypoint.name = name.clone();
        let sa = g
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(n::GATEWAY_SERVICE_ACCOUNT))
            .cloned()
            .unwrap_or(name);
        w.waypoint.principal = format!("{td}/ns/{ns}/sa/{sa}");
        if spec.waypoint.policy != WaypointPolicy::Never {
            w.waypoint.needed = true;
        }
    }
    // waypoint-for: headless Services / StatefulSets need workload-addressed traffic.
    let mut for_workload = false;
    let mut for_service = false;
    for svc in model.services_in(ns) {
        let needs = w
            .services
            .get(svc_name(svc))
            .is_some_and(|s| s.needs_waypoint);
        if !needs {
            continue;
        }
        let wls = model.service_workloads(svc);
        if is_headless(svc) || wls.iter().any(|wl| wl.pod_addressed()) {
            for_workload = true;
            findings.push(Finding::new(
                f::WAYPOINT_FOR_WORKLOAD,
                ObjectRef::from_meta("Service", &svc.metadata),
                "",
            ));
        }
        if !is_headless(svc) {
            for_service = true;
        }
    }
    w.waypoint.for_ = match (for_service, for_workload) {
        (true, true) => "all",
        (false, true) => "workload",
        _ => "service",
    }
    .into();

    // ---- which Services the waypoint will serve
    let waypoint_on = w.waypoint.needed;
    let mut served: BTreeSet<String> = BTreeSet::new();
    if waypoint_on {
        for svc in model.services_in(ns) {
            let opt_out = svc
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(n::USE_WAYPOINT))
                .is_some_and(|v| v == "none");
            if !opt_out {
                served.insert(svc_name(svc).to_string());
                if let Some(sp) = w.services.get_mut(svc_name(svc)) {
                    sp.served_by_waypoint = true;
                }
            }
        }
    }

    // ---- step 3: HBONE restarts
    for obj in w.restart_hbone.clone() {
        w.act(
            Step::HboneSidecars,
            Action::new(
                Op::Restart,
                obj,
                "restart so the sidecar is re-injected with HBONE support",
            ),
        );
    }

    // ---- step 4: waypoint
    if waypoint_on && !w.waypoint.exists {
        let mut labels = BTreeMap::new();
        labels.insert(n::WAYPOINT_FOR.to_string(), w.waypoint.for_.clone());
        let gw = Gateway {
            metadata: ObjectMeta {
                name: Some(w.waypoint.name.clone()),
                namespace: Some(ns.to_string()),
                labels: Some(labels),
                ..Default::default()
            },
            spec: GatewaySpec {
                gateway_class_name: n::WAYPOINT_CLASS.into(),
                listeners: vec![GatewayListeners {
                    name: "mesh".into(),
                    port: 15008,
                    protocol: "HBONE".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
            status: None,
        };
        let v = routes::to_object(&gw, "gateway.networking.k8s.io/v1", "Gateway");
        let (i, obj) = manifests.add(Step::Waypoints, "waypoint", None, v);
        w.act(
            Step::Waypoints,
            Action {
                manifest: Some(i),
                ..Action::new(
                    Op::Create,
                    obj,
                    format!("waypoint for {} traffic", w.waypoint.for_),
                )
            },
        );
    }

    // ---- step 5: per-version Services (+ DestinationRules), grants, routes prepared
    let mut route_manifests: Vec<(usize, ObjectRef, ObjectRef, bool)> = Vec::new();
    // Every subset of a routed Service becomes a per-version Service, not only the ones the
    // routes use today: the subsets-only DestinationRule is removed in step 8 and its
    // versions must stay addressable.
    let mut per_version: Vec<routes::PerVersion> = Vec::new();
    for (_, conv, _) in &mine {
        let routed: BTreeSet<(String, String)> = conv
            .parents
            .iter()
            .cloned()
            .chain(
                conv.per_version
                    .iter()
                    .map(|pv| (pv.namespace.clone(), pv.service.clone())),
            )
            .collect();
        for (pns, psvc) in routed {
            if pns != *ns && targets.contains(&pns) {
                continue;
            }
            for pv in routes::all_subsets_in(model, &pns, &psvc) {
                if !per_version
                    .iter()
                    .any(|x| x.namespace == pv.namespace && x.name == pv.name)
                {
                    per_version.push(pv);
                }
            }
        }
    }
    for pv in &per_version {
        add_per_version(model, pv, manifests, &mut w, findings);
    }
    for (vs, conv, _) in &mine {
        let vref = ObjectRef::from_meta("VirtualService", &vs.metadata);
        for g in &conv.grants {
            let (i, obj) = manifests.add(Step::Policies, "reference-grant", Some(&vref), g.clone());
            w.act(
                Step::Policies,
                Action {
                    manifest: Some(i),
                    ..Action::new(
                        Op::Create,
                        obj,
                        "allow the converted route to reach a backend in another namespace",
                    )
                },
            );
        }
        for r in &conv.routes {
            let (i, obj) = manifests.add(
                Step::WaypointActivation,
                "httproute",
                Some(&vref),
                r.clone(),
            );
            w.act(
                Step::Policies,
                Action {
                    manifest: Some(i),
                    ..Action::new(
                        Op::Prepare,
                        obj.clone(),
                        format!("converted from {vref}; applied in step 7"),
                    )
                },
            );
            route_manifests.push((i, obj, vref.clone(), conv.keeps_gateways));
        }
    }

    // ---- policy migration
    policy_migration(
        model,
        index,
        spec,
        facts,
        ns,
        &w.waypoint.principal.clone(),
        &served,
        &policies,
        &injected,
        targets,
        ingress,
        root,
        &extra_copies,
        manifests,
        &mut w,
        findings,
    );
    dry_run_copies(
        model, ns, &served, &dry_runs, &injected, manifests, &mut w, findings,
    );

    // ---- step 6
    if !already_ambient {
        w.act(
            Step::AmbientEnrollment,
            Action::label(
                ObjectRef::namespace(ns),
                n::DATAPLANE_MODE,
                n::DATAPLANE_AMBIENT,
                "enroll the namespace in ambient (sidecars still win while injected)",
            ),
        );
    }

    // ---- step 7
    if waypoint_on {
        w.act(Step::WaypointActivation, Action::label(ObjectRef::namespace(ns), n::USE_WAYPOINT, &w.waypoint.name.clone(), "send the namespace's Service traffic through the waypoint (guarded: only once it is Programmed)"));
        let bypassed: Vec<String> = w
            .services
            .values()
            .filter(|s| s.bypass_protection)
            .map(|s| s.name.clone())
            .collect();
        for s in bypassed {
            w.act(
                Step::WaypointActivation,
                Action::label(
                    ObjectRef::new("Service", Some(ns), &s),
                    n::INGRESS_USE_WAYPOINT,
                    "true",
                    "ingress gateway traffic goes through the waypoint so its policy copies apply",
                ),
            );
            findings.push(Finding::new(
                f::INGRESS_USE_WAYPOINT,
                ObjectRef::new("Service", Some(ns), &s),
                "",
            ));
            findings.extend(gateway_routes_through_waypoint(inv, ns, &s));
        }
    }
    for (i, obj, vref, _) in &route_manifests {
        w.act(
            Step::WaypointActivation,
            Action {
                manifest: Some(*i),
                ..Action::new(Op::Apply, obj.clone(), format!("replaces {vref}"))
            },
        );
    }
    let mut swapped: BTreeSet<ObjectRef> = BTreeSet::new();
    for (_, _, vref, keeps) in &route_manifests {
        if !swapped.insert(vref.clone()) {
            continue;
        }
        if *keeps {
            w.act(
                Step::WaypointActivation,
                Action::new(
                    Op::RemoveMeshGateway,
                    vref.clone(),
                    "it also serves gateways: only `mesh` is removed from spec.gateways",
                ),
            );
        } else {
            w.act(
                Step::WaypointActivation,
                Action::new(
                    Op::Delete,
                    vref.clone(),
                    "replaced by the HTTPRoute (VirtualService and HTTPRoute must not overlap)",
                ),
            );
        }
    }

    // ---- step 8: subsets-only DestinationRules whose subsets only swapped routes used
    for (dr, hname) in index.destination_rules_for(ns) {
        if model.service(ns, hname).is_none() {
            continue;
        }
        if !classify::classify_dr(dr).subsets_only() {
            continue;
        }
        let dref = ObjectRef::from_meta("DestinationRule", &dr.metadata);
        if dr_still_used(inv, index, dr, ns, hname, &swapped) {
            continue;
        }
        w.act(
            Step::PolicySimplification,
            Action::new(
                Op::Delete,
                dref,
                "only defined subsets; routes now use per-version Services",
            ),
        );
    }

    // ---- step 9
    if injection == NamespaceInjection::Enabled
        || ns_meta.is_some_and(|m| label(m, n::INJECTION).is_some())
    {
        w.act(
            Step::SidecarRemoval,
            Action::unlabel(
                Op::Unlabel,
                ObjectRef::namespace(ns),
                n::INJECTION,
                "stop sidecar injection",
            ),
        );
    }
    if ns_meta.is_some_and(|m| label(m, n::REV).is_some()) {
        w.act(
            Step::SidecarRemoval,
            Action::unlabel(
                Op::Unlabel,
                ObjectRef::namespace(ns),
                n::REV,
                "stop revision-based sidecar injection",
            ),
        );
    }
    for wl in &injected {
        if wl.kind == crate::model::WorkloadKind::Pod {
            continue;
        }
        if wl
            .pod_labels
            .get(n::SIDECAR_INJECT)
            .is_some_and(|v| v == "true")
        {
            w.act(
                Step::SidecarRemoval,
                Action::unlabel(
                    Op::UnlabelTemplate,
                    wl.object(),
                    n::SIDECAR_INJECT,
                    "the pod template forces injection",
                ),
            );
        }
        if wl.pod_labels.contains_key(n::REV) {
            w.act(
                Step::SidecarRemoval,
                Action::unlabel(
                    Op::UnlabelTemplate,
                    wl.object(),
                    n::REV,
                    "the pod template selects an injection revision",
                ),
            );
        }
    }
    for obj in w.restart.clone() {
        w.act(
            Step::SidecarRemoval,
            Action::new(
                Op::Restart,
                obj,
                "restart without a sidecar; ztunnel captures the new pods",
            ),
        );
    }
    // Deletions and deferred objects of step 9 go after the restarts.
    if let Some(list) = w.steps.get_mut(&Step::SidecarRemoval) {
        list.sort_by_key(|a| a.after_rollout);
    }
    w
}

fn dr_still_used(
    inv: &Inventory,
    index: &Index<'_>,
    dr: &DestinationRule,
    hns: &str,
    hname: &str,
    swapped: &BTreeSet<ObjectRef>,
) -> bool {
    let subsets: BTreeSet<&str> = dr
        .spec
        .subsets
        .iter()
        .flatten()
        .map(|s| s.name.as_str())
        .collect();
    // Only VirtualServices with a subset destination on this Service can use its subsets.
    let candidates = index
        .subset_routes
        .get(&(hns.to_string(), hname.to_string()))
        .into_iter()
        .flatten()
        .filter_map(|i| inv.virtual_services.get(*i));
    candidates.into_iter().any(|vs| {
        if swapped.contains(&ObjectRef::from_meta("VirtualService", &vs.metadata))
            && !routes::has_gateways(vs)
        {
            return false;
        }
        let vs_ns = vs.metadata.namespace.as_deref().unwrap_or_default();
        vs.spec
            .http
            .iter()
            .flatten()
            .flat_map(|r| r.route.iter().flatten())
            .any(|d| {
                d.destination
                    .subset
                    .as_deref()
                    .is_some_and(|s| subsets.contains(s))
                    && resolve_host(&d.destination.host, vs_ns)
                        == HostTarget::Service(hns.into(), hname.into())
            })
    })
}

fn add_per_version(
    model: &Model<'_>,
    pv: &routes::PerVersion,
    manifests: &mut Manifests,
    w: &mut NsWork,
    findings: &mut Vec<Finding>,
) {
    let Some(parent) = model.service(&pv.namespace, &pv.service) else {
        return;
    };
    if let Some(existing) = model.service(&pv.namespace, &pv.name) {
        let managed = existing
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(mn::LABEL_MANAGED_BY))
            .is_some_and(|v| v == mn::MANAGED_BY);
        if !managed {
            findings.push(Finding::new(
                f::PER_VERSION_SERVICE_CONFLICT,
                ObjectRef::from_meta("Service", &existing.metadata),
                format!("needed for subset {} of {}", pv.subset, pv.service),
            ));
            return;
        }
    }
    let mut selector = service_selector(parent).cloned().unwrap_or_default();
    selector.extend(pv.labels.clone());
    let ports: Vec<ServicePort> = parent
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|p| ServicePort {
            name: p.name,
            port: p.port,
            target_port: p.target_port,
            protocol: p.protocol,
            app_protocol: p.app_protocol,
            node_port: None,
        })
        .collect();
    let svc = Service {
        metadata: ObjectMeta {
            name: Some(pv.name.clone()),
            namespace: Some(pv.namespace.clone()),
            labels: parent.metadata.labels.clone().map(|mut l| {
                l.remove(n::USE_WAYPOINT);
                l
            }),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(ports),
            ..Default::default()
        }),
        status: None,
    };
    let mut v = serde_json::to_value(&svc).unwrap_or(Value::Null);
    if let Some(m) = v.as_object_mut() {
        m.insert("apiVersion".into(), "v1".into());
        m.insert("kind".into(), "Service".into());
    }
    let (i, obj) = manifests.add(
        Step::Policies,
        "per-version-service",
        Some(&pv.destination_rule),
        v,
    );
    w.act(
        Step::Policies,
        Action {
            manifest: Some(i),
            ..Action::new(
                Op::Create,
                obj,
                format!(
                    "subset {} of {} ({})",
                    pv.subset, pv.service, pv.destination_rule
                ),
            )
        },
    );
    if let Some(tp) = &pv.traffic_policy {
        let dr = DestinationRule::new(
            &pv.name,
            DestinationRuleSpec {
                host: format!("{}.{}.svc.cluster.local", pv.name, pv.namespace),
                traffic_policy: Some(tp.clone()),
                ..Default::default()
            },
        );
        let mut v = serde_json::to_value(&dr).unwrap_or(Value::Null);
        if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("namespace".into(), pv.namespace.clone().into());
        }
        let (i, obj) = manifests.add(
            Step::Policies,
            "destination-rule",
            Some(&pv.destination_rule),
            v,
        );
        w.act(
            Step::Policies,
            Action {
                manifest: Some(i),
                ..Action::new(
                    Op::Create,
                    obj,
                    format!("traffic policy of subset {}", pv.subset),
                )
            },
        );
    }
}

/// `a, b, c` for up to `max` items; else the first `max` and how many more there are.
fn abbreviated_list<'s>(items: impl IntoIterator<Item = &'s String>, max: usize) -> String {
    let mut shown = Vec::new();
    let mut more = 0usize;
    for i in items {
        if shown.len() < max {
            shown.push(i.as_str());
        } else {
            more += 1;
        }
    }
    let mut out = shown.join(", ");
    if more > 0 {
        out.push_str(&format!(
            " and {more} more, listed in the policy's notNamespaces"
        ));
    }
    out
}

/// The union of two sorted sets as a sorted JSON array of strings.
fn sorted_union(a: &BTreeSet<String>, b: &BTreeSet<String>) -> Vec<Value> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.iter().peekable(), b.iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => match x.cmp(y) {
                std::cmp::Ordering::Less => a.next(),
                std::cmp::Ordering::Greater => b.next(),
                std::cmp::Ordering::Equal => {
                    b.next();
                    a.next()
                }
            },
            (Some(_), None) => a.next(),
            (None, _) => b.next(),
        };
        match next {
            Some(s) => out.push(Value::from(s.as_str())),
            None => return out,
        }
    }
}

/// Copies of selector policies for the waypoint, bypass protection, deletions of originals
/// and the enforcement timeline of one namespace.
#[allow(clippy::too_many_arguments)]
fn policy_migration(
    model: &Model<'_>,
    index: &Index<'_>,
    spec: &MeshMigrationSpec,
    facts: &ControlPlaneFacts,
    ns: &str,
    waypoint_principal: &str,
    served: &BTreeSet<String>,
    policies: &[(&AuthorizationPolicy, PolicyClass)],
    injected: &[&Workload<'_>],
    targets: &BTreeSet<String>,
    ingress: &[String],
    root: &str,
    extra: &[ExtraCopy],
    manifests: &mut Manifests,
    w: &mut NsWork,
    findings: &mut Vec<Finding>,
) {
    let td = &facts.trust_domain;
    let deferred = spec.bypass_protection == Some(BypassProtection::Deferred);
    // Policies that apply to each injected workload (namespace-wide or selecting it).
    let applies = |p: &AuthorizationPolicy, wl: &Workload<'_>| {
        policy_selector(p).is_none_or(|s| selector_matches(s, wl.pod_labels))
    };
    let root_policies: &[&AuthorizationPolicy] = if root != ns {
        index.policies_in(root)
    } else {
        &[]
    };
    let mesh_wide_allow = |wl: &Workload<'_>| {
        root_policies.iter().any(|p| {
            authz::Action::parse(p.spec.action.as_deref()) == AuthzAction::Allow
                && policy_selector(p).is_none_or(|s| selector_matches(s, wl.pod_labels))
        })
    };

    // policy index -> services it is copied for
    let mut moved: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    // service -> workload names with moved policies
    let mut guarded: BTreeMap<String, Vec<&Workload<'_>>> = BTreeMap::new();
    for wl in injected {
        let svcs: Vec<String> = model
            .workload_services(wl)
            .iter()
            .map(|s| svc_name(s).to_string())
            .filter(|s| served.contains(s))
            .collect();
        if svcs.is_empty() {
            continue;
        }
        let on_wl: Vec<usize> = policies
            .iter()
            .enumerate()
            .filter(|(_, (p, c))| !c.targeted && applies(p, wl))
            .map(|(i, _)| i)
            .collect();
        let mut moving: BTreeSet<usize> = on_wl
            .iter()
            .copied()
            .filter(|i| {
                let c = &policies[*i].1;
                c.needs_waypoint() || c.source_dependent()
            })
            .collect();
        // ALLOW policies form a union: copying some but not all would deny at the
        // waypoint what the rest allowed.
        if moving
            .iter()
            .any(|i| policies[*i].1.action == AuthzAction::Allow)
        {
            moving.extend(
                on_wl
                    .iter()
                    .copied()
                    .filter(|i| policies[*i].1.action == AuthzAction::Allow),
            );
        }
        for i in &moving {
            let c = &policies[*i].1;
            let pref = ObjectRef::from_meta("AuthorizationPolicy", &policies[*i].0.metadata);
            if !c.needs_waypoint() && c.source_dependent() {
                findings.push(Finding::new(
                    f::AUTHZ_IDENTITY_THROUGH_WAYPOINT,
                    pref.clone(),
                    "",
                ));
            }
            for s in &svcs {
                if let Some(missed) = partially_selected(model, ns, s, policies[*i].0) {
                    findings.push(Finding::new(
                        f::AUTHZ_PARTIAL_SELECTOR,
                        pref.clone(),
                        format!("selects only some of Service {s}'s workloads: not {missed}"),
                    ));
                }
            }
            for s in &svcs {
                moved.entry(*i).or_default().insert(s.clone());
            }
        }
        if !moving.is_empty() {
            for s in &svcs {
                guarded.entry(s.clone()).or_default().push(wl);
            }
        }
    }

    // ---- copies (step 5)
    for (i, svcs) in &moved {
        let (p, _) = &policies[*i];
        for s in svcs {
            add_waypoint_copy(manifests, w, p, s, ns, "waypoint copy");
        }
    }
    for (oref, value, sel, _) in extra {
        let kind = oref.kind.as_str();
        let wls = model.selected_workloads(ns, sel.as_ref());
        let mut svcs: BTreeSet<String> = BTreeSet::new();
        for wl in wls {
            if injected.iter().any(|i| i.name == wl.name) {
                for s in model.workload_services(wl) {
                    if served.contains(svc_name(s)) {
                        svcs.insert(svc_name(s).to_string());
                    }
                }
            }
        }
        for s in svcs {
            let mut spec_v = value.get("spec").cloned().unwrap_or(Value::Null);
            if let Some(m) = spec_v.as_object_mut() {
                m.remove("selector");
                m.remove("targetRef");
                m.insert(
                    "targetRefs".into(),
                    serde_json::to_value(vec![PolicyTargetReference::service(&s)])
                        .unwrap_or(Value::Null),
                );
            }
            let api_version = match kind {
                "RequestAuthentication" => {
                    format!(
                        "{}/{}",
                        RequestAuthentication::GROUP,
                        RequestAuthentication::VERSION
                    )
                }
                "Telemetry" => format!("{}/{}", Telemetry::GROUP, Telemetry::VERSION),
                _ => format!("{}/{}", WasmPlugin::GROUP, WasmPlugin::VERSION),
            };
            let v = json!({
                "apiVersion": api_version,
                "kind": kind,
                "metadata": {"name": dns_subdomain(&[&oref.name, &s, "waypoint"]), "namespace": ns},
                "spec": spec_v,
            });
            let (mi, obj) = manifests.add(Step::Policies, "policy-copy", Some(oref), v);
            w.act(
                Step::Policies,
                Action {
                    manifest: Some(mi),
                    ..Action::new(
                        Op::Create,
                        obj,
                        format!("waypoint copy of {oref} for Service {s}"),
                    )
                },
            );
        }
    }

    // ---- bypass protection, per guarded Service
    let mut enumerable_by_svc: BTreeMap<String, bool> = BTreeMap::new();
    let mut unknown_callers_by_svc: BTreeMap<String, bool> = BTreeMap::new();
    for (s, wls) in &guarded {
        let Some(svc) = model.service(ns, s) else {
            continue;
        };
        let Some(selector) = service_selector(svc).cloned() else {
            continue;
        };
        let mut callers = Callers::default();
        let mut exact_all = true;
        let mut has_allow = false;
        for wl in wls {
            let allows: Vec<&(&AuthorizationPolicy, PolicyClass)> = policies
                .iter()
                .filter(|(p, c)| !c.targeted && c.action == AuthzAction::Allow && applies(p, wl))
                .collect();
            if allows.is_empty() {
                // No ALLOW policy: every source is admitted.
                callers.any = true;
                exact_all = false;
            }
            for (p, c) in allows {
                has_allow = true;
                let cs = allow_callers(p, c, td, ns);
                callers.principals.extend(cs.principals);
                callers.namespaces.extend(cs.namespaces);
                callers.any |= cs.any;
                exact_all &= cs.exact;
            }
            if mesh_wide_allow(wl) {
                has_allow = true;
            }
        }
        // Namespaces a moved DENY refuses outright are not admitted: letting their sidecar
        // callers past would skip the DENY's waypoint copy (and denying them is exact).
        let refused = refused_namespaces(
            &admitted_namespaces(&callers, targets),
            svc_denies(
                &moved,
                policies,
                s,
                &model.selected_workloads(ns, Some(&selector)),
            ),
            &index.sem,
        );
        // The callers as the sidecar matched them (cluster.local and aliases read as the
        // trust domain): ztunnel compares the generated principals exactly.
        let mut principals: BTreeSet<String> = callers
            .principals
            .iter()
            .filter(|p| principal_namespace(p).is_none_or(|n| !refused.contains(n)))
            .flat_map(|p| authz::sidecar_principals(p, td, &facts.trust_domain_aliases))
            .collect();
        principals.insert(waypoint_principal.to_string());
        principals.extend(ingress.iter().cloned());
        // Sorted and without duplicates (the JSON array of a BTreeSet), built straight as
        // JSON: with callers that cannot be listed it names every namespace of the
        // migration, once per guarded Service, so intermediate copies of it are costly.
        let namespaces: Vec<Value> = if callers.any {
            // Transitional sidecar callers inside the migration are known even when the
            // policies cannot list them.
            sorted_union(&callers.namespaces, targets)
        } else {
            callers
                .namespaces
                .iter()
                .map(|n| Value::from(n.as_str()))
                .collect()
        }
        .into_iter()
        .filter(|n| n.as_str().is_none_or(|n| !refused.contains(n)))
        .collect();
        if callers.any {
            findings.push(Finding::new(
                f::BYPASS_CALLERS_UNENUMERABLE,
                ObjectRef::new("Service", Some(ns), s),
                format!(
                    "bypass protection admits the waypoint, ingress gateways and the migration's namespaces ({}) only{}",
                    index.targets_joined,
                    if refused.is_empty() {
                        String::new()
                    } else {
                        format!(
                            ", less those a DENY refuses outright ({})",
                            abbreviated_list(&refused, 10)
                        )
                    }
                ),
            ));
        }
        let mut admits = admitted_namespaces(&callers, targets);
        admits.retain(|n| !refused.contains(n));
        w.bypass_admits.insert(s.clone(), admits);
        enumerable_by_svc.insert(s.clone(), !callers.any && exact_all);
        unknown_callers_by_svc.insert(s.clone(), callers.any);
        let mut source = serde_json::Map::new();
        source.insert("notPrincipals".into(), json!(principals));
        if !namespaces.is_empty() {
            source.insert("notNamespaces".into(), Value::Array(namespaces));
        }
        let deny = json!({
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": dns_subdomain(&["meshmig-bypass", s]), "namespace": ns},
            "spec": {
                "selector": {"matchLabels": selector},
                "action": "DENY",
                "rules": [{"from": [{"source": Value::Object(source)}]}],
            },
        });
        let src = ObjectRef::new("Service", Some(ns), s);
        let defer_this = deferred && callers.any;
        let (step, op, detail) = if defer_this {
            (
                Step::SidecarRemoval,
                Op::Prepare,
                "bypass protection, prepared only (bypassProtection: Deferred): apply it once every sidecar caller has migrated",
            )
        } else {
            (
                Step::Policies,
                Op::Create,
                "bypass protection: only the waypoint and known transitional callers may reach these workloads directly",
            )
        };
        let (mi, obj) = manifests.add(step, "bypass-protection", Some(&src), deny);
        w.act(
            step,
            Action {
                manifest: Some(mi),
                after_rollout: step == Step::SidecarRemoval,
                ..Action::new(op, obj, detail)
            },
        );
        if has_allow {
            let allow = json!({
                "apiVersion": "security.istio.io/v1",
                "kind": "AuthorizationPolicy",
                "metadata": {"name": dns_subdomain(&["meshmig-allow-waypoint", s]), "namespace": ns},
                "spec": {
                    "selector": {"matchLabels": selector},
                    "action": "ALLOW",
                    "rules": [{"from": [{"source": {"principals": [waypoint_principal]}}]}],
                },
            });
            let (mi, obj) = manifests.add(Step::Policies, "bypass-protection", Some(&src), allow);
            w.act(Step::Policies, Action {
                manifest: Some(mi),
                ..Action::new(Op::Create, obj, "admit the waypoint, which enforces the copies, past the remaining ALLOW policies")
            });
        }
        if let Some(sp) = w.services.get_mut(s) {
            sp.bypass_protection = true;
        }
    }

    // ---- deletions of originals and the timeline
    for (i, svcs) in &moved {
        let (p, c) = &policies[*i];
        let pref = ObjectRef::from_meta("AuthorizationPolicy", &p.metadata);
        let exact_everywhere = svcs
            .iter()
            .all(|s| enumerable_by_svc.get(s).copied().unwrap_or(false));
        let identity_only_allow = c.action == AuthzAction::Allow
            && !c.needs_waypoint()
            && allow_callers(p, c, td, ns).exact;
        let delete_step: Step = if identity_only_allow && exact_everywhere && !deferred {
            Step::PolicySimplification
        } else {
            Step::SidecarRemoval
        };
        let detail = if delete_step == Step::PolicySimplification {
            "identity-only ALLOW reproduced exactly by bypass protection and enforced by its waypoint copies".to_string()
        } else {
            "selector original: ztunnel would drop its L7 rules or see the waypoint's identity; its waypoint copies enforce it".to_string()
        };
        w.act(
            delete_step,
            Action {
                after_rollout: delete_step == Step::SidecarRemoval,
                ..Action::new(Op::Delete, pref.clone(), detail)
            },
        );
        for s in svcs {
            let mut windows = Vec::new();
            let callers = if c.action == AuthzAction::Allow {
                Some(allow_callers(p, c, td, ns))
            } else {
                None
            };
            let any_source = unknown_callers_by_svc.get(s).copied().unwrap_or(false);
            if any_source && !deferred {
                windows.push(Window {
                    from_step: Step::Policies,
                    to_step: Step::SidecarRemoval,
                    kind: WindowKind::FailClosed,
                    reason: "sidecar callers outside this migration that the policies do not name are denied by bypass protection until they migrate".into(),
                });
            }
            if any_source && deferred {
                windows.push(Window {
                    from_step: Step::SidecarRemoval,
                    to_step: Step::SidecarRemoval,
                    kind: WindowKind::FailOpen,
                    reason: "bypass protection is only prepared (Deferred): sidecar callers skip the waypoint copy until it is applied".into(),
                });
            }
            if let Some(cs) = &callers {
                let outside: BTreeSet<&str> = cs
                    .principals
                    .iter()
                    .filter_map(|p| principal_namespace(p))
                    .chain(cs.namespaces.iter().map(String::as_str))
                    .filter(|n| !targets.contains(*n))
                    .collect();
                let constrains_more_than_identity = !c.rules.iter().all(|r| r.identity_only());
                if !outside.is_empty() && constrains_more_than_identity {
                    windows.push(Window {
                        from_step: Step::SidecarRemoval,
                        to_step: Step::SidecarRemoval,
                        kind: WindowKind::FailOpen,
                        reason: format!(
                            "sidecar callers from {} (outside this migration) are admitted by bypass protection and skip the waypoint copy's other conditions until they migrate",
                            outside.into_iter().collect::<Vec<_>>().join(", ")
                        ),
                    });
                }
            }
            if c.action == AuthzAction::Allow && c.needs_waypoint() {
                windows.push(Window {
                    from_step: Step::SidecarRemoval,
                    to_step: Step::SidecarRemoval,
                    kind: WindowKind::FailClosed,
                    reason: "during the step-9 rollout, callers still running sidecars reach pods without sidecars directly, where ztunnel drops this policy's L7 rules until it is removed".into(),
                });
            }
            if c.action == AuthzAction::Deny && deny_matches_waypoint(p, waypoint_principal, ns) {
                windows.push(Window {
                    from_step: Step::WaypointActivation,
                    to_step: Step::SidecarRemoval,
                    kind: WindowKind::FailClosed,
                    reason: "traffic through the waypoint carries the waypoint's identity and IP, which this DENY's source conditions match, until the original is removed after the step-9 rollout".into(),
                });
            }
            if c.action == AuthzAction::Deny && c.ztunnel_fail_closed() {
                windows.push(Window {
                    from_step: Step::SidecarRemoval,
                    to_step: Step::SidecarRemoval,
                    kind: WindowKind::FailClosed,
                    reason: "during the step-9 rollout ztunnel enforces this DENY without its L7 conditions until it is removed".into(),
                });
            }
            let admitted = w.bypass_admits.get(s).cloned().unwrap_or_default();
            if c.action == AuthzAction::Deny {
                windows.extend(deny_outside_windows(p, &index.sem, &admitted, targets));
            }
            windows.extend(rollout_fail_open(
                p,
                c,
                &index.sem,
                ns,
                &admitted,
                spec.ordering.unwrap_or_default(),
            ));
            for win in &windows {
                let kind = if win.kind == WindowKind::FailOpen {
                    f::ENFORCEMENT_FAIL_OPEN
                } else {
                    f::ENFORCEMENT_FAIL_CLOSED
                };
                findings.push(Finding::new(
                    kind,
                    pref.clone(),
                    format!(
                        "Service {s}, steps {}-{}: {}",
                        win.from_step, win.to_step, win.reason
                    ),
                ));
            }
            let by_step = Step::ALL
                .into_iter()
                .map(|k| StepEnforcement {
                    step: k,
                    enforced_by: if k < Step::WaypointActivation {
                        vec![Enforcer::Sidecar]
                    } else if k < Step::SidecarRemoval {
                        vec![Enforcer::Sidecar, Enforcer::Waypoint]
                    } else {
                        vec![Enforcer::Waypoint]
                    },
                })
                .collect();
            w.enforcement.push(Enforcement {
                service: s.clone(),
                policy: pref.clone(),
                moves_to_waypoint: true,
                by_step,
                windows,
            });
        }
    }
    // Policies that stay with ztunnel.
    for (i, (p, c)) in policies.iter().enumerate() {
        if moved.contains_key(&i) || c.targeted {
            continue;
        }
        let pref = ObjectRef::from_meta("AuthorizationPolicy", &p.metadata);
        let mut svcs: BTreeSet<String> = BTreeSet::new();
        for wl in injected
            .iter()
            .filter(|wl| policy_selector(p).is_none_or(|s| selector_matches(s, wl.pod_labels)))
        {
            for s in model.workload_services(wl) {
                svcs.insert(svc_name(s).to_string());
            }
        }
        for s in svcs {
            let mut windows = Vec::new();
            let aliased = authz::alias_dependent_principals(
                p,
                &facts.trust_domain,
                &facts.trust_domain_aliases,
            );
            if !aliased.is_empty() {
                let (kind, id) = if c.action == AuthzAction::Deny {
                    (WindowKind::FailOpen, f::ENFORCEMENT_FAIL_OPEN)
                } else {
                    (WindowKind::FailClosed, f::ENFORCEMENT_FAIL_CLOSED)
                };
                let reason = format!(
                    "ztunnel compares principals exactly: {} no longer match the callers the sidecar matched through the trust domain {} and its aliases",
                    aliased.join(", "),
                    facts.trust_domain
                );
                findings.push(Finding::new(
                    f::AUTHZ_PRINCIPAL_ALIAS,
                    pref.clone(),
                    aliased.join(", "),
                ));
                findings.push(Finding::new(
                    id,
                    pref.clone(),
                    format!("Service {s}, step 9: {reason}"),
                ));
                windows.push(Window {
                    from_step: Step::SidecarRemoval,
                    to_step: Step::SidecarRemoval,
                    kind,
                    reason,
                });
            }
            // ztunnel enforces it from step 9 as istiod converts it (reachable with L7 parts
            // only when no waypoint serves the Service: policy Never, or the Service opted
            // out); each direction in which that differs from the sidecar is a window.
            for (differs, kind, id, what) in [
                (
                    c.ztunnel_fail_open(),
                    WindowKind::FailOpen,
                    f::ENFORCEMENT_FAIL_OPEN,
                    "admits requests the sidecar refused",
                ),
                (
                    c.ztunnel_fail_closed(),
                    WindowKind::FailClosed,
                    f::ENFORCEMENT_FAIL_CLOSED,
                    "refuses requests the sidecar admitted",
                ),
            ] {
                if !differs {
                    continue;
                }
                let win = Window {
                    from_step: Step::SidecarRemoval,
                    to_step: Step::SidecarRemoval,
                    kind,
                    reason: format!(
                        "no waypoint serves this Service, and ztunnel, enforcing the policy as istiod converts it, {what}"
                    ),
                };
                findings.push(Finding::new(
                    id,
                    pref.clone(),
                    format!("Service {s}, step 9: {}", win.reason),
                ));
                windows.push(win);
            }
            w.enforcement.push(Enforcement {
                service: s,
                policy: pref.clone(),
                moves_to_waypoint: false,
                by_step: Step::ALL
                    .into_iter()
                    .map(|k| StepEnforcement {
                        step: k,
                        enforced_by: if k < Step::SidecarRemoval {
                            vec![Enforcer::Sidecar]
                        } else {
                            vec![Enforcer::Ztunnel]
                        },
                    })
                    .collect(),
                windows,
            });
        }
    }
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
        let template = include_str!("../tests/data/namespace-template.yaml");
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
