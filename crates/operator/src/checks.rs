//! Checkpoint evaluation: pure functions from the frozen plan and the live cluster view to
//! Pass / Pending / Fail with a message that names the object and what is wrong.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use meshmig_api::names::{self as mn, istio as n};
use meshmig_api::sail::sail_state;
use meshmig_api::{CheckResult, ControlPlaneMode, MeshMigrationSpec, Step};
use meshmig_planner::inventory::{annotation, label};
use meshmig_planner::plan::{NamespacePlan, Op, Plan};
use meshmig_planner::{Inventory, ObjectRef};
use serde_json::Value;

/// Outcome of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Check name.
    pub name: String,
    /// Result.
    pub result: CheckResult,
    /// Message.
    pub message: String,
}

impl Outcome {
    pub(crate) fn new(name: &str, result: CheckResult, message: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            result,
            message: message.into(),
        }
    }
    pub(crate) fn pass(name: &str, message: impl Into<String>) -> Self {
        Self::new(name, CheckResult::Pass, message)
    }
    pub(crate) fn pending(name: &str, message: impl Into<String>) -> Self {
        Self::new(name, CheckResult::Pending, message)
    }
    pub(crate) fn fail(name: &str, message: impl Into<String>) -> Self {
        Self::new(name, CheckResult::Fail, message)
    }
}

/// Everything a checkpoint looks at.
pub struct CheckInput<'a> {
    /// The MeshMigration's spec (current generation).
    pub spec: &'a MeshMigrationSpec,
    /// The frozen plan.
    pub plan: &'a Plan,
    /// The namespace's part of it.
    pub ns: &'a NamespacePlan,
    /// The live cluster.
    pub live: &'a Inventory,
    /// Restart token of the step (pod-template annotation value meshmig set).
    pub restart_token: &'a str,
    /// Probe outcomes for this checkpoint (name, result, message); empty when none apply.
    pub probes: Vec<(String, CheckResult, String)>,
    /// Whether the step's after-rollout actions have been carried out.
    pub after_rollout_done: bool,
}

/// The step's actions of an op.
fn actions(
    ns: &NamespacePlan,
    step: Step,
    op: Op,
) -> impl Iterator<Item = &meshmig_planner::plan::Action> {
    ns.steps
        .iter()
        .filter(move |s| s.number == step)
        .flat_map(|s| s.actions.iter())
        .filter(move |a| a.op == op)
}

fn find_deployment<'a>(live: &'a Inventory, o: &ObjectRef) -> Option<&'a Deployment> {
    live.deployments.iter().find(|d| {
        d.metadata.namespace.as_deref() == o.namespace.as_deref()
            && d.metadata.name.as_deref() == Some(&o.name)
    })
}

fn template_annotation(t: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>) -> Option<&str> {
    t?.metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(mn::ANNOTATION_RESTARTED_AT)
        .map(String::as_str)
}

/// Whether a workload's rollout with the given template token is complete; `Err` says why
/// not.
pub fn rollout_complete(live: &Inventory, o: &ObjectRef, token: &str) -> Result<(), String> {
    match o.kind.as_str() {
        "Deployment" => {
            let d = find_deployment(live, o).ok_or_else(|| format!("{o} not found"))?;
            let spec = d.spec.as_ref().ok_or_else(|| format!("{o} has no spec"))?;
            if template_annotation(Some(&spec.template)) != Some(token) {
                return Err(format!("{o} has not been restarted yet"));
            }
            let want = spec.replicas.unwrap_or(1);
            let st = d.status.clone().unwrap_or_default();
            if st.observed_generation.unwrap_or(0) < d.metadata.generation.unwrap_or(0) {
                return Err(format!("{o}: rollout not observed yet"));
            }
            let updated = st.updated_replicas.unwrap_or(0);
            let available = st.available_replicas.unwrap_or(0);
            let total = st.replicas.unwrap_or(0);
            if updated < want || available < want || total > want {
                return Err(format!(
                    "{o}: {updated}/{want} updated, {available}/{want} available, {total} total"
                ));
            }
            Ok(())
        }
        "StatefulSet" => {
            let s: &StatefulSet = live
                .stateful_sets
                .iter()
                .find(|d| {
                    d.metadata.namespace == o.namespace
                        && d.metadata.name.as_deref() == Some(&o.name)
                })
                .ok_or_else(|| format!("{o} not found"))?;
            let spec = s.spec.as_ref().ok_or_else(|| format!("{o} has no spec"))?;
            if template_annotation(Some(&spec.template)) != Some(token) {
                return Err(format!("{o} has not been restarted yet"));
            }
            let st = s.status.clone().unwrap_or_default();
            let want = spec.replicas.unwrap_or(1);
            if st.observed_generation.unwrap_or(0) < s.metadata.generation.unwrap_or(0)
                || st.update_revision != st.current_revision
                || st.ready_replicas.unwrap_or(0) < want
            {
                return Err(format!(
                    "{o}: {}/{want} ready on the new revision",
                    st.ready_replicas.unwrap_or(0)
                ));
            }
            Ok(())
        }
        "DaemonSet" => {
            let s: &DaemonSet = live
                .daemon_sets
                .iter()
                .find(|d| {
                    d.metadata.namespace == o.namespace
                        && d.metadata.name.as_deref() == Some(&o.name)
                })
                .ok_or_else(|| format!("{o} not found"))?;
            let spec = s.spec.as_ref().ok_or_else(|| format!("{o} has no spec"))?;
            if template_annotation(Some(&spec.template)) != Some(token) {
                return Err(format!("{o} has not been restarted yet"));
            }
            daemonset_ready(s).map_err(|m| format!("{o}: {m}"))
        }
        _ => Ok(()),
    }
}

/// Whether every Deployment, StatefulSet and DaemonSet of a namespace has finished rolling
/// out (no old or unavailable replicas).
pub fn namespace_settled(live: &Inventory, ns: &str) -> Result<(), String> {
    let mut busy = Vec::new();
    for d in live
        .deployments
        .iter()
        .filter(|d| d.metadata.namespace.as_deref() == Some(ns))
    {
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let st = d.status.clone().unwrap_or_default();
        if st.observed_generation.unwrap_or(0) < d.metadata.generation.unwrap_or(0)
            || st.updated_replicas.unwrap_or(0) < want
            || st.available_replicas.unwrap_or(0) < want
            || st.replicas.unwrap_or(0) > want
        {
            busy.push(format!(
                "Deployment {ns}/{}",
                d.metadata.name.as_deref().unwrap_or_default()
            ));
        }
    }
    for s in live
        .stateful_sets
        .iter()
        .filter(|d| d.metadata.namespace.as_deref() == Some(ns))
    {
        let want = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let st = s.status.clone().unwrap_or_default();
        if st.observed_generation.unwrap_or(0) < s.metadata.generation.unwrap_or(0)
            || st.update_revision != st.current_revision
            || st.ready_replicas.unwrap_or(0) < want
        {
            busy.push(format!(
                "StatefulSet {ns}/{}",
                s.metadata.name.as_deref().unwrap_or_default()
            ));
        }
    }
    for d in live
        .daemon_sets
        .iter()
        .filter(|d| d.metadata.namespace.as_deref() == Some(ns))
    {
        if daemonset_ready(d).is_err()
            && d.status
                .as_ref()
                .is_some_and(|s| s.desired_number_scheduled > 0)
        {
            busy.push(format!(
                "DaemonSet {ns}/{}",
                d.metadata.name.as_deref().unwrap_or_default()
            ));
        }
    }
    if busy.is_empty() {
        Ok(())
    } else {
        Err(format!("rolling out: {}", busy.join(", ")))
    }
}

fn daemonset_ready(s: &DaemonSet) -> Result<(), String> {
    let st = s.status.clone().unwrap_or_default();
    let desired = st.desired_number_scheduled;
    if st.observed_generation.unwrap_or(0) < s.metadata.generation.unwrap_or(0) {
        return Err("rollout not observed yet".into());
    }
    if desired == 0 {
        return Err("scheduled on no node".into());
    }
    let updated = st.updated_number_scheduled.unwrap_or(0);
    let available = st.number_available.unwrap_or(0);
    if updated < desired || available < desired || st.number_ready < desired {
        return Err(format!(
            "{}/{desired} nodes ready",
            st.number_ready.min(available)
        ));
    }
    Ok(())
}

fn sail<'a>(
    live: &'a Inventory,
    kind: &str,
    name: &str,
) -> Option<(&'a Option<String>, Option<&'a Value>)> {
    match kind {
        "Istio" => live
            .istios
            .iter()
            .find(|i| i.metadata.name.as_deref() == Some(name))
            .map(|i| (&i.spec.profile, i.status.as_ref())),
        "IstioCNI" => live
            .istio_cnis
            .iter()
            .find(|i| i.metadata.name.as_deref() == Some(name))
            .map(|i| (&i.spec.profile, i.status.as_ref())),
        _ => live
            .ztunnels
            .iter()
            .find(|i| i.metadata.name.as_deref() == Some(name))
            .map(|i| (&i.spec.profile, i.status.as_ref())),
    }
}

fn sail_check(
    live: &Inventory,
    check: &str,
    kind: &str,
    name: &str,
    want_ambient: bool,
) -> Outcome {
    match sail(live, kind, name) {
        None => Outcome::pending(check, format!("{kind} {name} not found yet")),
        Some((profile, status)) => {
            if want_ambient && profile.as_deref() != Some("ambient") {
                return Outcome::pending(
                    check,
                    format!(
                        "{kind} {name}: spec.profile is {:?}, waiting for ambient",
                        profile.as_deref().unwrap_or("")
                    ),
                );
            }
            match sail_state(status) {
                Some("Healthy") => Outcome::pass(check, format!("{kind} {name} is Healthy")),
                Some(other) => {
                    Outcome::pending(check, format!("{kind} {name}: status.state is {other}"))
                }
                None => Outcome::pending(check, format!("{kind} {name}: no status yet")),
            }
        }
    }
}

/// Whether the Sail resources meshmig changes in step 2 run the profile they had in
/// `before` (the frozen inventory, when known): the spec is back, Healthy, and its status
/// describes this generation. External control planes are changed by the user, not by
/// meshmig: nothing to wait for.
pub fn control_plane_settled(
    live: &Inventory,
    spec: &MeshMigrationSpec,
    mode: ControlPlaneMode,
    before: Option<&Inventory>,
) -> Result<(), String> {
    let cp = &spec.control_plane;
    if mode != ControlPlaneMode::Sail {
        return Ok(());
    }
    for (kind, name) in [
        ("Istio", cp.istio.as_str()),
        ("IstioCNI", cp.istio_cni.as_str()),
    ] {
        // Gone (deleted by the user): nothing runs a stale spec.
        let Some((generation, profile, status)) = sail_resource(live, kind, name) else {
            continue;
        };
        if let Some((_, was, _)) = before.and_then(|b| sail_resource(b, kind, name))
            && profile != was
        {
            return Err(format!(
                "{kind} {name}: spec.profile is {:?}, waiting for {:?}",
                profile.unwrap_or(""),
                was.unwrap_or("")
            ));
        }
        let observed = status
            .and_then(|s| s.get("observedGeneration"))
            .and_then(Value::as_i64);
        if observed.is_some_and(|o| o < generation) {
            return Err(format!(
                "{kind} {name}: the restored spec is not observed yet"
            ));
        }
        match sail_state(status) {
            Some("Healthy") => {}
            other => {
                return Err(format!(
                    "{kind} {name}: status.state is {}",
                    other.unwrap_or("not reported yet")
                ));
            }
        }
    }
    Ok(())
}

/// Generation, `spec.profile` and status of a Sail `Istio` or `IstioCNI`.
fn sail_resource<'a>(
    inv: &'a Inventory,
    kind: &str,
    name: &str,
) -> Option<(i64, Option<&'a str>, Option<&'a Value>)> {
    let pick =
        |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
         p: &'a Option<String>,
         s: &'a Option<Value>| { (m.generation.unwrap_or(0), p.as_deref(), s.as_ref()) };
    match kind {
        "Istio" => inv
            .istios
            .iter()
            .find(|i| i.metadata.name.as_deref() == Some(name))
            .map(|i| pick(&i.metadata, &i.spec.profile, &i.status)),
        _ => inv
            .istio_cnis
            .iter()
            .find(|i| i.metadata.name.as_deref() == Some(name))
            .map(|i| pick(&i.metadata, &i.spec.profile, &i.status)),
    }
}

fn daemonset_check(live: &Inventory, check: &str, ns: &str, name: &str) -> Outcome {
    match live.daemon_sets.iter().find(|d| {
        d.metadata.namespace.as_deref() == Some(ns) && d.metadata.name.as_deref() == Some(name)
    }) {
        None => Outcome::pending(check, format!("DaemonSet {ns}/{name} not found yet")),
        Some(d) => match daemonset_ready(d) {
            Ok(()) => Outcome::pass(check, format!("DaemonSet {ns}/{name} ready on every node")),
            Err(m) => Outcome::pending(check, format!("DaemonSet {ns}/{name}: {m}")),
        },
    }
}

fn condition_true(status: Option<&Value>, type_: &str) -> Option<bool> {
    status?
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
        .map(|c| c.get("status").and_then(Value::as_str) == Some("True"))
}

fn waypoint_checks(inp: &CheckInput<'_>, out: &mut Vec<Outcome>, programmed_name: &str) {
    let ns = &inp.ns.name;
    let wp = &inp.ns.waypoint;
    if !wp.needed {
        out.push(Outcome::pass(programmed_name, "no waypoint needed"));
        return;
    }
    let gw = inp.live.gateways.iter().find(|g| {
        g.metadata.namespace.as_deref() == Some(ns) && g.metadata.name.as_deref() == Some(&wp.name)
    });
    match gw {
        None => out.push(Outcome::pending(
            programmed_name,
            format!("Gateway {ns}/{} not found yet", wp.name),
        )),
        Some(g) => {
            let status = serde_json::to_value(&g.status).ok();
            let programmed = condition_true(status.as_ref(), "Programmed") == Some(true);
            let addresses = g
                .status
                .as_ref()
                .and_then(|s| s.addresses.as_ref())
                .is_some_and(|a| !a.is_empty());
            if programmed && addresses {
                out.push(Outcome::pass(
                    programmed_name,
                    format!("Gateway {ns}/{} is Programmed with an address", wp.name),
                ));
            } else {
                out.push(Outcome::pending(
                    programmed_name,
                    format!(
                        "Gateway {ns}/{}: Programmed={programmed}, addresses set={addresses}",
                        wp.name
                    ),
                ));
            }
        }
    }
}

fn probes(inp: &CheckInput<'_>, out: &mut Vec<Outcome>) {
    probes_outcome(&inp.probes, out);
}

/// The `probes` check from the outcomes of a checkpoint's probes.
pub(crate) fn probes_outcome(probes: &[(String, CheckResult, String)], out: &mut Vec<Outcome>) {
    if probes.is_empty() {
        out.push(Outcome::pass("probes", "no probes for this checkpoint"));
        return;
    }
    let joined = |result: CheckResult| -> Option<String> {
        let hits: Vec<&str> = probes
            .iter()
            .filter(|p| p.1 == result)
            .map(|p| p.2.as_str())
            .collect();
        (!hits.is_empty()).then(|| hits.join("; "))
    };
    if let Some(m) = joined(CheckResult::Fail) {
        out.push(Outcome::fail("probes", m));
    } else if let Some(m) = joined(CheckResult::Pending) {
        out.push(Outcome::pending("probes", m));
    } else {
        out.push(Outcome::pass(
            "probes",
            format!("{} probe(s) passed", probes.len()),
        ));
    }
}

fn pods_in<'a>(
    live: &'a Inventory,
    ns: &'a str,
) -> impl Iterator<Item = &'a meshmig_planner::PodInfo> {
    live.pods.iter().filter(move |p| {
        p.metadata.namespace.as_deref() == Some(ns)
            && p.metadata.deletion_timestamp.is_none()
            && label(&p.metadata, mn::LABEL_PROBE).is_none()
            && !matches!(p.phase.as_deref(), Some("Succeeded" | "Failed"))
    })
}

/// The live object as JSON: `Some(None)` when a watched kind has no such object, `None` for
/// kinds the operator does not watch.
pub fn live_object(live: &Inventory, o: &ObjectRef) -> Option<Option<Value>> {
    fn find<T: serde::Serialize>(
        list: &[T],
        meta: impl Fn(&T) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
        o: &ObjectRef,
    ) -> Option<Value> {
        list.iter()
            .find(|x| {
                let m = meta(x);
                m.namespace.as_deref() == o.namespace.as_deref()
                    && m.name.as_deref() == Some(&o.name)
            })
            .and_then(|x| serde_json::to_value(x).ok())
    }
    Some(match o.kind.as_str() {
        "Service" => find(&live.services, |x| &x.metadata, o),
        "AuthorizationPolicy" => find(&live.authorization_policies, |x| &x.metadata, o),
        "DestinationRule" => find(&live.destination_rules, |x| &x.metadata, o),
        "VirtualService" => find(&live.virtual_services, |x| &x.metadata, o),
        "RequestAuthentication" => find(&live.request_authentications, |x| &x.metadata, o),
        "Telemetry" => find(&live.telemetries, |x| &x.metadata, o),
        "WasmPlugin" => find(&live.wasm_plugins, |x| &x.metadata, o),
        "Gateway" => find(&live.gateways, |x| &x.metadata, o),
        "HTTPRoute" => find(&live.http_routes, |x| &x.metadata, o),
        _ => return None,
    })
}

fn exists(live: &Inventory, o: &ObjectRef) -> bool {
    let same = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        m.namespace.as_deref() == o.namespace.as_deref() && m.name.as_deref() == Some(&o.name)
    };
    match o.kind.as_str() {
        "Service" => live.services.iter().any(|x| same(&x.metadata)),
        "AuthorizationPolicy" => live
            .authorization_policies
            .iter()
            .any(|x| same(&x.metadata)),
        "DestinationRule" => live.destination_rules.iter().any(|x| same(&x.metadata)),
        "VirtualService" => live.virtual_services.iter().any(|x| same(&x.metadata)),
        "RequestAuthentication" => live
            .request_authentications
            .iter()
            .any(|x| same(&x.metadata)),
        "Telemetry" => live.telemetries.iter().any(|x| same(&x.metadata)),
        "WasmPlugin" => live.wasm_plugins.iter().any(|x| same(&x.metadata)),
        "Gateway" => live.gateways.iter().any(|x| same(&x.metadata)),
        "HTTPRoute" => live.http_routes.iter().any(|x| same(&x.metadata)),
        // Kinds the operator does not watch (ReferenceGrant): their creation succeeded.
        _ => true,
    }
}

/// The check that step 5's policies are accepted by ztunnel (selector policies).
const OBJECTS_ACCEPTED: &str = "objects-accepted";
/// The check that step 5's waypoint copies are accepted by the waypoint (step 7).
const POLICIES_ACCEPTED: &str = "policies-accepted";
/// istiod's status condition on a policy it sends to ztunnel.
const ZTUNNEL_ACCEPTED: &str = "ZtunnelAccepted";
/// istiod's status condition on a targetRefs policy its waypoint enforces.
const WAYPOINT_ACCEPTED: &str = "WaypointAccepted";

/// Whether step 5's AuthorizationPolicies of one sort (selector policies for
/// `ZtunnelAccepted`, targetRefs copies for `WaypointAccepted`) carry istiod's condition as
/// True. A False one waits, with istiod's reason and message (and fails at the timeout); a
/// control plane that writes no policy status is not judged.
fn policies_accepted(inp: &CheckInput<'_>, check: &str, condition: &str) -> Outcome {
    let targeted = condition == WAYPOINT_ACCEPTED;
    let mut refused = Vec::new();
    let mut seen = 0;
    for a in actions(inp.ns, Step::Policies, Op::Create)
        .filter(|a| a.object.kind == "AuthorizationPolicy")
    {
        let Some(p) = inp.live.authorization_policies.iter().find(|p| {
            p.metadata.namespace.as_deref() == a.object.namespace.as_deref()
                && p.metadata.name.as_deref() == Some(&a.object.name)
        }) else {
            continue;
        };
        let is_targeted = p.spec.target_refs.as_ref().is_some_and(|t| !t.is_empty());
        if is_targeted != targeted {
            continue;
        }
        let Some(c) = status_condition(p.status.as_ref(), condition) else {
            continue;
        };
        seen += 1;
        if c.get("status").and_then(Value::as_str) != Some("True") {
            let field = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or_default();
            refused.push(format!(
                "{}: {condition}={} ({}): {}",
                a.object,
                field("status"),
                field("reason"),
                field("message")
            ));
        }
    }
    if !refused.is_empty() {
        Outcome::pending(check, refused.join("; "))
    } else if seen == 0 {
        Outcome::pass(
            check,
            format!("no {condition} status reported by the control plane"),
        )
    } else {
        Outcome::pass(check, format!("{seen} policy(ies) {condition}=True"))
    }
}

fn status_condition<'s>(status: Option<&'s Value>, type_: &str) -> Option<&'s Value> {
    status?
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
}

/// Evaluates the checkpoint of `step`.
pub fn evaluate(step: Step, inp: &CheckInput<'_>) -> Vec<Outcome> {
    let mut out = Vec::new();
    let ns = inp.ns.name.as_str();
    let live = inp.live;
    let ns_obj = live.namespaces.get(ns);
    if ns_obj.is_none() {
        out.push(Outcome::fail(
            "namespace-exists",
            format!(
                "Namespace {ns} does not exist (deleted?); recreate it or roll the migration back"
            ),
        ));
        return out;
    }
    match step {
        Step::Prerequisites => {
            let (facts, findings) = meshmig_planner::cluster::analyze(live, inp.spec);
            match facts
                .version
                .as_deref()
                .and_then(meshmig_planner::cluster::parse_version)
            {
                Some(v) if v >= meshmig_planner::cluster::MIN_VERSION => {
                    out.push(Outcome::pass("istio-version", format!("Istio {v}")))
                }
                Some(v) => out.push(Outcome::fail(
                    "istio-version",
                    format!("Istio {v} is older than 1.24; upgrade first"),
                )),
                None => out.push(Outcome::fail(
                    "istio-version",
                    "the Istio version could not be determined from the control plane",
                )),
            }
            let blockers: Vec<String> = inp
                .plan
                .findings
                .iter()
                .filter(|f| f.severity == meshmig_planner::Severity::Blocker)
                .filter(|f| {
                    !inp.spec
                        .accepted_findings
                        .iter()
                        .any(|e| f.matches_acceptance(e))
                })
                .map(|f| format!("{} on {}", f.id, f.object))
                .collect();
            if blockers.is_empty() {
                out.push(Outcome::pass(
                    "no-blockers",
                    "no unaccepted blocker findings",
                ));
            } else {
                let shown: Vec<&str> = blockers.iter().take(5).map(String::as_str).collect();
                out.push(Outcome::fail(
                    "no-blockers",
                    format!(
                        "{} unaccepted blocker(s): {}{}; fix them or list them in spec.acceptedFindings (see `meshmig plan --live`)",
                        blockers.len(),
                        shown.join(", "),
                        if blockers.len() > 5 { ", …" } else { "" }
                    ),
                ));
            }
            let crds = live.crds.as_ref();
            let missing: Vec<&str> = [
                "gateways.gateway.networking.k8s.io",
                "httproutes.gateway.networking.k8s.io",
            ]
            .into_iter()
            .filter(|c| !crds.is_some_and(|m| m.contains_key(*c)))
            .collect();
            if missing.is_empty() {
                out.push(Outcome::pass(
                    "gateway-api-crds",
                    "Gateway API CRDs are installed",
                ));
            } else {
                out.push(Outcome::fail(
                    "gateway-api-crds",
                    format!(
                        "CRDs not installed: {}; install the Gateway API standard channel",
                        missing.join(", ")
                    ),
                ));
            }
            let cni: Vec<String> = findings
                .iter()
                .filter(|f| f.id.starts_with("cni-"))
                .map(|f| format!("{} ({})", f.id, f.object))
                .collect();
            if cni.is_empty() {
                out.push(Outcome::pass(
                    "cni-compatible",
                    "no incompatible CNI settings found",
                ));
            } else {
                out.push(Outcome::fail("cni-compatible", cni.join(", ")));
            }
        }
        Step::ControlPlane => {
            let cp = &inp.spec.control_plane;
            // The planned mode: an istiod without a Sail Istio is planned as External.
            match inp.plan.control_plane.mode {
                ControlPlaneMode::Sail => {
                    out.push(sail_check(
                        live,
                        "control-plane-ambient",
                        "Istio",
                        &cp.istio,
                        true,
                    ));
                    out.push(sail_check(
                        live,
                        "istio-cni-ready",
                        "IstioCNI",
                        &cp.istio_cni,
                        true,
                    ));
                    let z = sail_check(live, "ztunnel-ready", "ZTunnel", &cp.ztunnel, false);
                    if z.result == CheckResult::Pass {
                        out.push(daemonset_check(
                            live,
                            "ztunnel-ready",
                            &cp.ztunnel_namespace,
                            "ztunnel",
                        ));
                    } else {
                        out.push(z);
                    }
                }
                ControlPlaneMode::External => {
                    let commands = inp.plan.control_plane_commands.join("; ");
                    let istiod = live.deployments.iter().find(|d| {
                        d.metadata.namespace.as_deref() == Some(cp.istio_namespace.as_str())
                            && d.metadata
                                .name
                                .as_deref()
                                .is_some_and(|n| n.starts_with("istiod"))
                    });
                    let ambient = istiod.is_some_and(|d| {
                        d.spec
                            .as_ref()
                            .and_then(|s| s.template.spec.as_ref())
                            .is_some_and(|s| {
                                s.containers.iter().any(|c| {
                                    c.env.iter().flatten().any(|e| {
                                        e.name == n::PILOT_ENABLE_AMBIENT
                                            && e.value.as_deref() == Some("true")
                                    })
                                })
                            })
                    });
                    if ambient {
                        out.push(Outcome::pass(
                            "control-plane-ambient",
                            "istiod runs with PILOT_ENABLE_AMBIENT=true",
                        ));
                    } else {
                        out.push(Outcome::pending(
                            "control-plane-ambient",
                            format!("istiod in {} lacks PILOT_ENABLE_AMBIENT=true; the control plane is managed outside meshmig — run: {commands}", cp.istio_namespace),
                        ));
                    }
                    out.push(daemonset_check(
                        live,
                        "istio-cni-ready",
                        &cp.cni_namespace,
                        "istio-cni-node",
                    ));
                    out.push(daemonset_check(
                        live,
                        "ztunnel-ready",
                        &cp.ztunnel_namespace,
                        "ztunnel",
                    ));
                }
            }
        }
        Step::HboneSidecars | Step::SidecarRemoval => {
            let mut waiting = Vec::new();
            for a in actions(inp.ns, step, Op::Restart) {
                if let Err(m) = rollout_complete(live, &a.object, inp.restart_token) {
                    waiting.push(m);
                }
            }
            if waiting.is_empty() {
                out.push(Outcome::pass(
                    "rollouts-complete",
                    "every restarted workload finished its rollout",
                ));
            } else {
                out.push(Outcome::pending("rollouts-complete", waiting.join("; ")));
            }
            if step == Step::HboneSidecars {
                let lacking: Vec<String> = pods_in(live, ns)
                    .filter(|p| p.has_sidecar() && !p.sidecar_hbone())
                    .map(|p| {
                        format!(
                            "Pod {ns}/{}",
                            p.metadata.name.as_deref().unwrap_or_default()
                        )
                    })
                    .collect();
                if lacking.is_empty() {
                    out.push(Outcome::pass(
                        "sidecars-hbone",
                        "every sidecar is HBONE-capable",
                    ));
                } else {
                    out.push(Outcome::pending(
                        "sidecars-hbone",
                        format!("sidecars without HBONE: {}", lacking.join(", ")),
                    ));
                }
            } else {
                let with_sidecar: Vec<String> = pods_in(live, ns)
                    .filter(|p| p.has_sidecar())
                    .map(|p| {
                        format!(
                            "Pod {ns}/{}",
                            p.metadata.name.as_deref().unwrap_or_default()
                        )
                    })
                    .collect();
                if with_sidecar.is_empty() {
                    out.push(Outcome::pass("no-sidecars", "no pod runs istio-proxy"));
                } else {
                    out.push(Outcome::pending(
                        "no-sidecars",
                        format!("still running a sidecar: {} (Pods without a controller must be recreated by hand)", with_sidecar.join(", ")),
                    ));
                }
                let unredirected: Vec<String> = pods_in(live, ns)
                    .filter(|p| !p.has_sidecar() && p.host_network != Some(true))
                    .filter(|p| label(&p.metadata, n::DATAPLANE_MODE) != Some("none"))
                    .filter(|p| annotation(&p.metadata, n::REDIRECTION) != Some("enabled"))
                    .map(|p| {
                        format!(
                            "Pod {ns}/{}",
                            p.metadata.name.as_deref().unwrap_or_default()
                        )
                    })
                    .collect();
                if unredirected.is_empty() {
                    out.push(Outcome::pass(
                        "pods-redirected",
                        "every pod is captured by ztunnel",
                    ));
                } else {
                    out.push(Outcome::pending(
                        "pods-redirected",
                        format!(
                            "not yet captured by ztunnel ({}: enabled missing): {}",
                            n::REDIRECTION,
                            unredirected.join(", ")
                        ),
                    ));
                }
                let removals: Vec<&ObjectRef> = actions(inp.ns, Step::SidecarRemoval, Op::Delete)
                    .map(|a| &a.object)
                    .collect();
                let remaining: Vec<String> = removals
                    .iter()
                    .filter(|o| exists(live, o))
                    .map(|o| o.to_string())
                    .collect();
                if !inp.after_rollout_done {
                    out.push(Outcome::pending(
                        "originals-removed",
                        "waiting for the rollout before removing selector originals",
                    ));
                } else if remaining.is_empty() {
                    out.push(Outcome::pass(
                        "originals-removed",
                        format!("{} selector original(s) removed", removals.len()),
                    ));
                } else {
                    out.push(Outcome::pending(
                        "originals-removed",
                        format!("still present: {}", remaining.join(", ")),
                    ));
                }
            }
            probes(inp, &mut out);
        }
        Step::Waypoints => {
            waypoint_checks(inp, &mut out, "waypoint-programmed");
            let wp = &inp.ns.waypoint;
            if wp.needed {
                let dep = live.deployments.iter().find(|d| {
                    d.metadata.namespace.as_deref() == Some(ns)
                        && d.metadata.name.as_deref() == Some(&wp.name)
                });
                let ready = dep
                    .and_then(|d| d.status.as_ref())
                    .is_some_and(|s| s.available_replicas.unwrap_or(0) >= 1);
                if ready {
                    out.push(Outcome::pass(
                        "waypoint-ready",
                        format!("Deployment {ns}/{} is available", wp.name),
                    ));
                } else {
                    out.push(Outcome::pending(
                        "waypoint-ready",
                        format!("Deployment {ns}/{} is not available yet", wp.name),
                    ));
                }
                let ns_uses = ns_obj
                    .and_then(|n| label(&n.metadata, n::USE_WAYPOINT))
                    .is_some();
                let svc_uses: Vec<&str> = live
                    .services
                    .iter()
                    .filter(|s| {
                        s.metadata.namespace.as_deref() == Some(ns)
                            && label(&s.metadata, n::USE_WAYPOINT).is_some_and(|v| v != "none")
                    })
                    .filter_map(|s| s.metadata.name.as_deref())
                    .collect();
                if wp.exists || (!ns_uses && svc_uses.is_empty()) {
                    out.push(Outcome::pass(
                        "waypoint-unused",
                        "nothing is routed through the waypoint yet",
                    ));
                } else {
                    out.push(Outcome::fail(
                        "waypoint-unused",
                        format!("istio.io/use-waypoint is already set (namespace: {ns_uses}, Services: {}); remove it so activation happens in step 7", svc_uses.join(", ")),
                    ));
                }
            } else {
                out.push(Outcome::pass("waypoint-ready", "no waypoint needed"));
                out.push(Outcome::pass("waypoint-unused", "no waypoint needed"));
            }
            probes(inp, &mut out);
        }
        Step::Policies => {
            let missing: Vec<String> = actions(inp.ns, Step::Policies, Op::Create)
                .map(|a| &a.object)
                .filter(|o| !exists(live, o))
                .map(ToString::to_string)
                .collect();
            if missing.is_empty() {
                out.push(Outcome::pass(
                    "objects-exist",
                    "every generated object exists",
                ));
            } else {
                out.push(Outcome::pending(
                    "objects-exist",
                    format!("not found yet: {}", missing.join(", ")),
                ));
            }
            // Selector policies (bypass protection) must be taken by ztunnel; the targetRefs
            // copies stay WaypointAccepted=False (AncestorNotBound) until step 7 binds.
            out.push(policies_accepted(inp, OBJECTS_ACCEPTED, ZTUNNEL_ACCEPTED));
            probes(inp, &mut out);
        }
        Step::AmbientEnrollment => {
            let enrolled = ns_obj.and_then(|n| label(&n.metadata, n::DATAPLANE_MODE))
                == Some(n::DATAPLANE_AMBIENT);
            if enrolled {
                out.push(Outcome::pass(
                    "namespace-enrolled",
                    format!(
                        "Namespace {ns} has {}={}",
                        n::DATAPLANE_MODE,
                        n::DATAPLANE_AMBIENT
                    ),
                ));
            } else {
                out.push(Outcome::pending(
                    "namespace-enrolled",
                    format!(
                        "Namespace {ns} lacks {}={}",
                        n::DATAPLANE_MODE,
                        n::DATAPLANE_AMBIENT
                    ),
                ));
            }
            let expected = inp.ns.workloads.iter().filter(|w| w.sidecar).count();
            let lost: Vec<String> = inp
                .ns
                .workloads
                .iter()
                .filter(|w| w.sidecar && w.kind == "Deployment")
                .filter(|w| {
                    let o = ObjectRef::new("Deployment", Some(ns), &w.name);
                    find_deployment(live, &o).is_none_or(|d| {
                        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                        d.status
                            .as_ref()
                            .and_then(|s| s.available_replicas)
                            .unwrap_or(0)
                            < want
                    })
                })
                .map(|w| format!("Deployment {ns}/{}", w.name))
                .collect();
            let redirected_with_sidecar = pods_in(live, ns).any(|p| {
                p.has_sidecar() && annotation(&p.metadata, n::REDIRECTION) == Some("enabled")
            });
            if !lost.is_empty() {
                out.push(Outcome::pending(
                    "sidecars-still-injected",
                    format!("not available: {}", lost.join(", ")),
                ));
            } else if redirected_with_sidecar {
                out.push(Outcome::fail(
                    "sidecars-still-injected",
                    "a pod with a sidecar is also captured by ztunnel",
                ));
            } else {
                out.push(Outcome::pass(
                    "sidecars-still-injected",
                    format!("{expected} workload(s) keep their sidecars while injected"),
                ));
            }
            probes(inp, &mut out);
        }
        Step::WaypointActivation => {
            waypoint_checks(inp, &mut out, "waypoint-programmed");
            let unbound: Vec<String> = inp
                .ns
                .services
                .iter()
                .filter(|s| s.served_by_waypoint)
                .filter(|s| {
                    let svc = live.services.iter().find(|x| {
                        x.metadata.namespace.as_deref() == Some(ns)
                            && x.metadata.name.as_deref() == Some(&s.name)
                    });
                    let bound = svc
                        .and_then(|x| x.status.as_ref())
                        .and_then(|st| st.conditions.as_ref())
                        .is_some_and(|cs| {
                            cs.iter()
                                .any(|c| c.type_ == n::WAYPOINT_BOUND && c.status == "True")
                        });
                    !bound
                })
                .map(|s| {
                    // istiod says why (e.g. WaypointIsNotReady): pass its words on.
                    let why = live
                        .services
                        .iter()
                        .find(|x| {
                            x.metadata.namespace.as_deref() == Some(ns)
                                && x.metadata.name.as_deref() == Some(&s.name)
                        })
                        .and_then(|x| x.status.as_ref()?.conditions.as_ref())
                        .and_then(|cs| cs.iter().find(|c| c.type_ == n::WAYPOINT_BOUND))
                        .map(|c| format!(" ({}: {})", c.reason, c.message))
                        .unwrap_or_default();
                    format!("Service {ns}/{}{why}", s.name)
                })
                .collect();
            if unbound.is_empty() {
                out.push(Outcome::pass(
                    "services-bound",
                    "every served Service is bound to the waypoint",
                ));
            } else {
                out.push(Outcome::pending(
                    "services-bound",
                    format!(
                        "{} not True yet on: {}",
                        n::WAYPOINT_BOUND,
                        unbound.join(", ")
                    ),
                ));
            }
            let mut not_accepted = Vec::new();
            for a in actions(inp.ns, Step::WaypointActivation, Op::Apply) {
                let route = live.http_routes.iter().find(|r| {
                    r.metadata.namespace.as_deref() == a.object.namespace.as_deref()
                        && r.metadata.name.as_deref() == Some(&a.object.name)
                });
                let accepted = route.and_then(|r| r.status.as_ref()).is_some_and(|st| {
                    !st.parents.is_empty()
                        && st.parents.iter().all(|p| {
                            p.conditions
                                .iter()
                                .any(|c| c.type_ == "Accepted" && c.status == "True")
                        })
                });
                if !accepted {
                    not_accepted.push(a.object.to_string());
                }
            }
            let vs_left: Vec<String> = actions(inp.ns, Step::WaypointActivation, Op::Delete)
                .map(|a| &a.object)
                .filter(|o| exists(live, o))
                .map(ToString::to_string)
                .collect();
            if !not_accepted.is_empty() {
                out.push(Outcome::pending(
                    "routes-accepted",
                    format!("not Accepted yet: {}", not_accepted.join(", ")),
                ));
            } else if !vs_left.is_empty() {
                out.push(Outcome::pending(
                    "routes-accepted",
                    format!("VirtualService still present: {}", vs_left.join(", ")),
                ));
            } else {
                out.push(Outcome::pass(
                    "routes-accepted",
                    "every HTTPRoute is Accepted and replaces its VirtualService",
                ));
            }
            out.push(policies_accepted(inp, POLICIES_ACCEPTED, WAYPOINT_ACCEPTED));
            probes(inp, &mut out);
        }
        Step::PolicySimplification => {
            let remaining: Vec<String> = actions(inp.ns, Step::PolicySimplification, Op::Delete)
                .map(|a| &a.object)
                .filter(|o| exists(live, o))
                .map(ToString::to_string)
                .collect();
            if remaining.is_empty() {
                out.push(Outcome::pass(
                    "objects-removed",
                    "redundant sidecar-era objects removed",
                ));
            } else {
                out.push(Outcome::pending(
                    "objects-removed",
                    format!("still present: {}", remaining.join(", ")),
                ));
            }
            let missing: Vec<String> = actions(inp.ns, Step::Policies, Op::Create)
                .map(|a| &a.object)
                .filter(|o| !exists(live, o))
                .map(ToString::to_string)
                .collect();
            if missing.is_empty() {
                out.push(Outcome::pass(
                    "migrated-objects-present",
                    "every generated object is present",
                ));
            } else {
                out.push(Outcome::fail(
                    "migrated-objects-present",
                    format!(
                        "deleted by someone else: {}; it is recreated when the step is retried",
                        missing.join(", ")
                    ),
                ));
            }
            probes(inp, &mut out);
        }
    }
    out
}

/// Whether the step-9 after-rollout actions may run: the namespace's rollouts are complete
/// and no sidecar remains.
pub fn rollout_done(outcomes: &[Outcome]) -> bool {
    ["rollouts-complete", "no-sidecars"].iter().all(|name| {
        outcomes
            .iter()
            .any(|o| o.name == *name && o.result == CheckResult::Pass)
    })
}

/// Probe Pod observed for a name.
pub fn probe_pod<'a>(pods: &'a [Pod], name: &str, namespace: &str) -> Option<&'a Pod> {
    pods.iter().find(|p| {
        p.metadata.name.as_deref() == Some(name)
            && p.metadata.namespace.as_deref() == Some(namespace)
    })
}
