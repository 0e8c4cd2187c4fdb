//! The pure state machine: from the MeshMigration, its frozen plan and the live cluster
//! view, decide what to do next and what the status becomes once that succeeded.
//!
//! Per namespace: `Waiting` (for gates) → `Applying` (snapshot, then act) → `Validating`
//! (checkpoint) → next step's `Waiting` … → `Completed`; `Failed` on a failing or timed-out
//! checkpoint; `RollingBack` → `RolledBack` when a rollback is requested.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use meshmig_api::names::{self as mn, istio as n};
use meshmig_api::{
    CheckResult, CheckStatus, FindingRef, MeshMigration, MeshMigrationStatus, MigrationPhase,
    NamespacePhase, NamespaceStatus, OnFailure, Ordering, RequestedBy, RollbackStatus, Step,
    StepRecord, WindowKind,
};
use meshmig_planner::plan::{Action, NamespacePlan, Op, Plan};
use meshmig_planner::{Inventory, Severity};

use crate::checks::{self, CheckInput, Outcome};
use crate::conditions::{self, Desired};
use crate::probes;

/// Where a step's changes live.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Cluster-scoped objects (step 2); snapshot in the operator's namespace.
    Cluster,
    /// One target namespace.
    Namespace(String),
}

impl Scope {
    /// Namespace for `Scope::Namespace`.
    pub fn namespace(&self) -> Option<&str> {
        match self {
            Scope::Cluster => None,
            Scope::Namespace(n) => Some(n),
        }
    }
}

/// A side effect for the act layer, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Work {
    /// Record the prior state of everything `actions` touch, unless a snapshot of this scope
    /// and step already exists (it is never overwritten: a re-run after a crash must not
    /// snapshot its own changes).
    Snapshot {
        /// Scope.
        scope: Scope,
        /// Step.
        step: Step,
        /// Actions about to run.
        actions: Vec<Action>,
    },
    /// Carry out actions (idempotent).
    Execute {
        /// Scope.
        scope: Scope,
        /// Step.
        step: Step,
        /// Actions.
        actions: Vec<Action>,
    },
    /// Create a probe Pod (idempotent).
    StartProbe(Box<Pod>),
    /// Delete the probe Pods of a checkpoint.
    CleanupProbes {
        /// Validated namespace.
        namespace: String,
        /// Step.
        step: Step,
    },
    /// Undo one step from its snapshot (idempotent).
    Undo {
        /// Scope.
        scope: Scope,
        /// Step.
        step: Step,
    },
    /// Delete the snapshots of undone steps.
    DeleteSnapshots {
        /// Scope.
        scope: Scope,
        /// Step.
        step: Step,
    },
    /// Delete the frozen plan (after a full rollback).
    DeletePlan,
}

/// An Event to publish on the MeshMigration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventNote {
    /// Warning (true) or Normal.
    pub warning: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// Note.
    pub note: String,
}

/// Output of [`decide`].
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Status to write once every work item succeeded.
    pub status: MeshMigrationStatus,
    /// Work, in order.
    pub work: Vec<Work>,
    /// Events to publish.
    pub events: Vec<EventNote>,
    /// Whether more progress is possible right away (requeue immediately) or only after a
    /// change (the watches wake the controller; a slow safety-net requeue still applies).
    pub more: bool,
    /// Whether a checkpoint is waiting on something time-based (a timeout).
    pub waiting_on_time: bool,
    /// Every checkpoint evaluated in this decision: step and outcomes (for metrics).
    pub evaluated: Vec<(Step, Vec<Outcome>)>,
}

/// Inputs of [`decide`].
pub struct Input<'a> {
    /// The MeshMigration.
    pub mm: &'a MeshMigration,
    /// Its frozen plan.
    pub plan: &'a Plan,
    /// The live cluster view.
    pub live: &'a Inventory,
    /// Probe Pods of this migration.
    pub probe_pods: &'a [Pod],
    /// Now.
    pub now: Timestamp,
    /// Token identifying this migration run (restart annotation values derive from it).
    pub run_token: &'a str,
    /// The MeshMigration is being deleted with `onDelete: Rollback`.
    pub deleting_with_rollback: bool,
    /// The operator's namespace (cluster-scoped snapshots and the plan live there).
    pub operator_namespace: &'a str,
    /// Snapshot ConfigMaps that exist, as `namespace/name` (None: not known, do not check).
    pub present_snapshots: Option<&'a BTreeSet<String>>,
    /// The frozen inventory the plan was computed from (None before it is frozen).
    pub frozen: Option<&'a Inventory>,
    /// Snapshots of the undone steps, read by the shell for the checkpoint of a rollback
    /// ([`rollback_snapshots_to_verify`] says which); `None` when not read.
    pub rollback_snapshots: Option<&'a [crate::snapshot::Snapshot]>,
}

/// Objects a step is about to delete or edit that changed since the plan was frozen: the
/// generated objects that replace them would no longer match them.
fn changed_since_plan(inp: &Input<'_>, actions: &[Action]) -> Vec<String> {
    let Some(frozen) = inp.frozen else {
        return Vec::new();
    };
    actions
        .iter()
        .filter(|a| matches!(a.op, Op::Delete | Op::RemoveMeshGateway))
        .filter_map(|a| {
            let now = crate::checks::live_object(inp.live, &a.object)?;
            let then = crate::checks::live_object(frozen, &a.object)?;
            let spec =
                |v: &Option<serde_json::Value>| v.as_ref().and_then(|v| v.get("spec").cloned());
            // Gone is fine (nothing left to delete); a different spec is not.
            (now.is_some() && spec(&now) != spec(&then)).then(|| a.object.to_string())
        })
        .collect()
}

/// Whether `part` is contained in `whole`: every field of `part` has the same value in
/// `whole` (which may have more, e.g. server defaults).
pub fn json_subset(part: &serde_json::Value, whole: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (part, whole) {
        (Value::Object(a), Value::Object(b)) => a
            .iter()
            .all(|(k, v)| b.get(k).is_some_and(|w| json_subset(v, w))),
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| json_subset(x, y))
        }
        _ => part == whole,
    }
}

/// Objects meshmig created in earlier steps that were since deleted or changed by someone
/// else: the actions that put them back (idempotent server-side applies).
fn drift(inp: &Input<'_>, nsp: &NamespacePlan, step: Step) -> Vec<Action> {
    let mut out = Vec::new();
    for s in nsp
        .steps
        .iter()
        .filter(|s| (Step::Waypoints..step).contains(&s.number))
    {
        for a in s
            .actions
            .iter()
            .filter(|a| matches!(a.op, Op::Create | Op::Apply))
        {
            let Some(manifest) = a.manifest.and_then(|i| inp.plan.manifests.get(i)) else {
                continue;
            };
            let live = crate::checks::live_object(inp.live, &a.object);
            let ok = match live {
                Some(Some(v)) => json_subset(
                    manifest.get("spec").unwrap_or(&serde_json::Value::Null),
                    v.get("spec").unwrap_or(&serde_json::Value::Null),
                ),
                Some(None) => false,
                // A kind the operator does not watch: trust the earlier apply.
                None => true,
            };
            if !ok {
                out.push(a.clone());
            }
        }
    }
    out
}

/// Pod-template annotation value meshmig sets when restarting in `step`.
pub fn restart_token(run_token: &str, step: Step) -> String {
    format!("{run_token}.step{step}")
}

fn annotation<'a>(mm: &'a MeshMigration, key: &str) -> Option<&'a str> {
    mm.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// Parses a duration such as `10m`, `1h30m`, `45s`, `500ms`.
pub fn parse_duration(s: &str) -> Option<SignedDuration> {
    let mut total_ms: i64 = 0;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let unit = if c == 'm' && chars.peek() == Some(&'s') {
            chars.next();
            1.0
        } else {
            match c {
                'h' => 3_600_000.0,
                'm' => 60_000.0,
                's' => 1000.0,
                _ => return None,
            }
        };
        let v: f64 = num.parse().ok()?;
        total_ms += (v * unit) as i64;
        num.clear();
        any = true;
    }
    (any && num.is_empty()).then(|| SignedDuration::from_millis(total_ms))
}

fn time(ts: Timestamp) -> Time {
    Time(ts)
}

/// Highest step whose changes may be present in a namespace (`None`: not even step 1 ran).
fn applied_top(s: &NamespaceStatus) -> Option<Step> {
    match s.phase {
        NamespacePhase::Completed => Some(Step::LAST),
        NamespacePhase::Applying
        | NamespacePhase::Validating
        | NamespacePhase::Failed
        | NamespacePhase::RollingBack => Some(s.step),
        NamespacePhase::Waiting | NamespacePhase::RolledBack => s.step.previous(),
    }
}

/// A target namespace that is gone or terminating. Deleting a namespace takes everything in
/// it, snapshots included, so that is what to report, and nothing is left there to undo.
fn namespace_vanished(live: &Inventory, ns: &str) -> bool {
    live.namespaces
        .get(ns)
        .is_none_or(|n| n.metadata.deletion_timestamp.is_some())
}

fn done_with(s: &NamespaceStatus, step: Step) -> bool {
    s.phase == NamespacePhase::Completed || (s.step > step && s.phase != NamespacePhase::RolledBack)
}

fn step_actions(ns: &NamespacePlan, step: Step) -> Vec<Action> {
    ns.steps
        .iter()
        .find(|s| s.number == step)
        .map(|s| {
            s.actions
                .iter()
                .filter(|a| a.op != Op::Verify)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// Scope of a step's changes.
pub fn scope_of(step: Step, ns: &str) -> Scope {
    if step == Step::ControlPlane {
        Scope::Cluster
    } else {
        Scope::Namespace(ns.to_string())
    }
}

fn record_start(s: &mut NamespaceStatus, step: Step, now: Timestamp) {
    s.history.retain(|h| h.step != step);
    s.history.push(StepRecord {
        step,
        started_at: time(now),
        completed_at: None,
    });
}

fn record_done(s: &mut NamespaceStatus, step: Step, now: Timestamp) {
    if let Some(h) = s.history.iter_mut().find(|h| h.step == step) {
        h.completed_at = Some(time(now));
    }
}

fn checks_status(old: &[CheckStatus], outcomes: &[Outcome], now: Timestamp) -> Vec<CheckStatus> {
    outcomes
        .iter()
        .map(|o| {
            let prev = old.iter().find(|c| c.name == o.name);
            let last = match prev {
                Some(p) if p.result == o.result => p.last_transition_time.clone(),
                _ => Some(time(now)),
            };
            CheckStatus {
                name: o.name.clone(),
                result: o.result,
                message: o.message.clone(),
                last_transition_time: last,
            }
        })
        .collect()
}

/// Unaccepted fail-open windows that entering `step` would open in a namespace.
fn fail_open_guard(inp: &Input<'_>, ns: &NamespacePlan, step: Step) -> Option<String> {
    let accepted = &inp.mm.spec.accepted_findings;
    for e in &ns.enforcement {
        for w in e.windows.iter().filter(|w| w.kind == WindowKind::FailOpen) {
            if w.from_step <= step && step <= w.to_step {
                let f = meshmig_planner::Finding::new(
                    meshmig_planner::findings::ENFORCEMENT_FAIL_OPEN,
                    e.policy.clone(),
                    "",
                );
                if !accepted.iter().any(|a| f.matches_acceptance(a)) {
                    return Some(format!(
                        "step {step} would open a fail-open window for {} on Service {} ({}); accept `enforcement-fail-open@{}` in spec.acceptedFindings or change the plan",
                        e.policy, e.service, w.reason, e.policy
                    ));
                }
            }
        }
    }
    None
}

fn waypoint_programmed(live: &Inventory, ns: &NamespacePlan) -> Result<(), String> {
    if !ns.waypoint.needed {
        return Ok(());
    }
    let gw = live.gateways.iter().find(|g| {
        g.metadata.namespace.as_deref() == Some(&ns.name)
            && g.metadata.name.as_deref() == Some(&ns.waypoint.name)
    });
    let programmed = gw
        .and_then(|g| g.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Programmed" && c.status == "True")
        });
    // istiod sets Programmed once the waypoint's Service has an address, before any of its
    // Pods is ready: the Deployment must be available too.
    let available = live.deployments.iter().any(|d| {
        d.metadata.namespace.as_deref() == Some(&ns.name)
            && d.metadata.name.as_deref() == Some(&ns.waypoint.name)
            && d.status
                .as_ref()
                .is_some_and(|s| s.available_replicas.unwrap_or(0) >= 1)
    });
    match (programmed, available) {
        (true, true) => Ok(()),
        (false, _) => Err(format!(
            "guard: Gateway {}/{} is not Programmed; {} is set only on a ready waypoint",
            ns.name,
            ns.waypoint.name,
            n::USE_WAYPOINT
        )),
        (true, false) => Err(format!(
            "guard: Gateway {}/{} is Programmed but its Deployment has no available replica; {} is set only on a ready waypoint",
            ns.name,
            ns.waypoint.name,
            n::USE_WAYPOINT
        )),
    }
}

/// Why a namespace may not start `step` yet, if anything holds it.
fn gate(
    inp: &Input<'_>,
    statuses: &[NamespaceStatus],
    ns: &NamespacePlan,
    step: Step,
) -> Option<(String, bool)> {
    let mm = inp.mm;
    let name = mm.metadata.name.as_deref().unwrap_or_default();
    if annotation(mm, mn::ANNOTATION_PAUSED) == Some("true") {
        return Some((
            format!(
                "paused by the {} annotation; remove it to resume",
                mn::ANNOTATION_PAUSED
            ),
            true,
        ));
    }
    if mm.spec.pause_before.contains(&step)
        && annotation(mm, mn::ANNOTATION_APPROVE) != Some(&step.to_string())
    {
        return Some((
            format!(
                "step {step} ({}) waits for approval: kubectl annotate meshmigration {name} {}={step} --overwrite",
                Step::name(step),
                mn::ANNOTATION_APPROVE
            ),
            true,
        ));
    }
    if let Some(b) = step.barrier() {
        let behind: Vec<&str> = statuses
            .iter()
            .filter(|s| !done_with(s, b))
            .map(|s| s.name.as_str())
            .collect();
        if !behind.is_empty() {
            return Some((
                format!(
                    "barrier: step {step} starts when every namespace finished step {b}; waiting for {}",
                    behind.join(", ")
                ),
                false,
            ));
        }
    }
    if step.restarts_workloads() && mm.spec.ordering.unwrap_or_default() == Ordering::Listed {
        let pos = inp
            .plan
            .namespace_order
            .iter()
            .position(|n| *n == ns.name)
            .unwrap_or(0);
        let before: Vec<&str> = inp.plan.namespace_order[..pos]
            .iter()
            .filter(|n| {
                statuses
                    .iter()
                    .any(|s| s.name == **n && !done_with(s, step))
            })
            .map(String::as_str)
            .collect();
        if !before.is_empty() {
            return Some((
                format!(
                    "ordering: step {step} runs one namespace at a time; waiting for {}",
                    before.join(", ")
                ),
                false,
            ));
        }
    }
    if step == Step::WaypointActivation
        && let Err(m) = waypoint_programmed(inp.live, ns)
    {
        return Some((m, false));
    }
    fail_open_guard(inp, ns, step).map(|m| (m, false))
}

/// The probes of a checkpoint: outcomes, and Pods to start.
fn probe_outcomes(
    inp: &Input<'_>,
    ns: &str,
    step: Step,
    attempt: &str,
) -> (Vec<(String, CheckResult, String)>, Vec<Pod>) {
    let name = inp.mm.metadata.name.as_deref().unwrap_or_default();
    let mut outcomes = Vec::new();
    let mut start = Vec::new();
    for p in &inp.mm.spec.checkpoints.probes {
        if !probes::applies(p, step, ns, &inp.plan.namespace_order) {
            continue;
        }
        let pod_name = probes::pod_name(name, &p.name, ns, step, attempt);
        let observed = checks::probe_pod(inp.probe_pods, &pod_name, &p.from_namespace);
        if observed.is_none() {
            start.push(probes::pod(name, p, ns, step, attempt));
        }
        let (r, m) = probes::outcome(observed, &p.name);
        outcomes.push((p.name.clone(), r, m));
    }
    (outcomes, start)
}

fn init_statuses(old: &MeshMigrationStatus, plan: &Plan) -> Vec<NamespaceStatus> {
    plan.namespace_order
        .iter()
        .map(|ns| {
            old.namespaces
                .iter()
                .find(|s| s.name == *ns)
                .cloned()
                .unwrap_or(NamespaceStatus {
                    name: ns.clone(),
                    step: Step::Prerequisites,
                    phase: NamespacePhase::Waiting,
                    ..Default::default()
                })
        })
        .collect()
}

/// The approve annotation: `"<step>"` or `"<step>/<n>"` (n counts how many retries of a
/// failed step are approved; default 1).
pub fn approval(mm: &MeshMigration) -> Option<(Step, u32)> {
    let v = annotation(mm, mn::ANNOTATION_APPROVE)?.trim();
    let (step, n) = match v.split_once('/') {
        Some((s, n)) => (s, n.parse().ok()?),
        None => (v, 1),
    };
    let step: Step = step.parse().ok()?;
    Some((step, n))
}

/// The approve value that retries the first failed namespace's step.
fn retry_value(namespaces: &[NamespaceStatus], failed: &[&NamespaceStatus]) -> String {
    failed.first().map_or_else(
        || "<step>".to_string(),
        |s| meshmig_api::approval_value(namespaces, s.step),
    )
}

/// The decision.
pub fn decide(inp: &Input<'_>) -> Decision {
    let mm = inp.mm;
    let old = mm.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status.observed_generation = mm.metadata.generation;
    let mut statuses = init_statuses(&old, inp.plan);
    let mut work = Vec::new();
    let mut events = Vec::new();
    let mut more = false;
    let mut waiting_on_time = false;
    let mut evaluated: Vec<(Step, Vec<Outcome>)> = Vec::new();

    // ---- rollback requests
    let requested = if inp.deleting_with_rollback {
        Some((Step::FIRST, RequestedBy::OnDelete, None))
    } else if let Some(t) = mm.requested_rollback() {
        Some((t, RequestedBy::Annotation, None))
    } else {
        old.rollback
            .as_ref()
            .filter(|r| !r.completed && r.requested_by != RequestedBy::Annotation)
            .map(|r| (r.target, r.requested_by, r.reason.clone()))
    };
    let resumed_partial = mm.requested_rollback().is_none()
        && old.rollback.as_ref().is_some_and(|r| {
            r.completed
                && r.target > Step::Prerequisites
                && r.requested_by == RequestedBy::Annotation
        });
    if resumed_partial {
        for s in statuses
            .iter_mut()
            .filter(|s| s.phase == NamespacePhase::RolledBack)
        {
            s.phase = NamespacePhase::Waiting;
            s.message = None;
        }
        status.rollback = None;
        events.push(EventNote {
            warning: false,
            reason: "Resumed",
            note: "rollback annotation removed: resuming".into(),
        });
        more = true;
    } else if let Some((target, by, reason)) = requested {
        let already_done = old
            .rollback
            .as_ref()
            .is_some_and(|r| r.completed && r.target <= target);
        if !already_done {
            return rollback(inp, old, statuses, target, by, reason, events);
        }
    }
    let terminal_rollback = status
        .rollback
        .as_ref()
        .is_some_and(|r| r.completed && r.target <= Step::Prerequisites);

    // ---- forward
    let plan = inp.plan;
    if !terminal_rollback {
        for s in statuses.iter_mut().filter(|s| {
            matches!(
                s.phase,
                NamespacePhase::Waiting | NamespacePhase::Applying | NamespacePhase::Validating
            ) && applied_top(s).is_some()
                && namespace_vanished(inp.live, &s.name)
        }) {
            let step = s.step;
            s.phase = NamespacePhase::Failed;
            s.failed_generation = mm.metadata.generation;
            s.message = Some(format!(
                "Namespace {} was deleted during step {step} ({}); what meshmig changed in it went with it. Remove it from spec.namespaces, or roll back with {}: all",
                s.name,
                Step::name(step),
                mn::ANNOTATION_ROLLBACK
            ));
            events.push(EventNote {
                warning: true,
                reason: "StepFailed",
                note: format!("{}: namespace deleted during step {step}", s.name),
            });
        }
    }
    if let Some(present) = inp.present_snapshots {
        let missing: Vec<String> = statuses
            .iter()
            .flat_map(|s| s.snapshots.iter().map(move |r| (s, r)))
            .filter(|(s, r)| Some(r.step) <= applied_top(s))
            .filter(|(_, r)| {
                r.namespace == inp.operator_namespace || !namespace_vanished(inp.live, &r.namespace)
            })
            .map(|(_, r)| format!("{}/{}", r.namespace, r.config_map))
            .filter(|k| !present.contains(k))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if !missing.is_empty() && !terminal_rollback {
            for s in statuses
                .iter_mut()
                .filter(|s| s.phase != NamespacePhase::Completed)
            {
                s.message = Some(format!(
                    "held: snapshot ConfigMap {} is missing, so meshmig could no longer undo that step; restore it (e.g. from a backup) to continue, or roll back with {}: all (steps without a snapshot are then left as they are)",
                    missing.join(", "),
                    mn::ANNOTATION_ROLLBACK
                ));
            }
            status.namespaces = statuses;
            let mut d = finish(inp, &old, status, work, events, false, false);
            let msg = format!(
                "snapshot ConfigMap(s) missing: {}; meshmig does not proceed past what it cannot undo",
                missing.join(", ")
            );
            let now = time(inp.now);
            conditions::set(
                &mut d.status.conditions,
                Desired::new(mn::CONDITION_STALLED, true, "SnapshotMissing", msg.clone()),
                inp.mm.metadata.generation,
                &now,
            );
            conditions::set(
                &mut d.status.conditions,
                Desired::new(mn::CONDITION_RECONCILING, false, "SnapshotMissing", msg),
                inp.mm.metadata.generation,
                &now,
            );
            d.status.phase = Some(MigrationPhase::Stalled);
            return d;
        }
    }
    if !terminal_rollback {
        let mut busy: BTreeSet<String> = BTreeSet::new();
        for _round in 0..20 {
            let mut changed = false;
            for i in 0..statuses.len() {
                let ns_name = statuses[i].name.clone();
                if busy.contains(&ns_name) {
                    continue;
                }
                let Some(nsp) = plan.namespace(&ns_name) else {
                    continue;
                };
                let step = statuses[i].step;
                match statuses[i].phase {
                    NamespacePhase::Completed
                    | NamespacePhase::RolledBack
                    | NamespacePhase::RollingBack => {}
                    NamespacePhase::Failed => {
                        let approved = approval(mm)
                            .is_some_and(|(st, n)| st == step && n > statuses[i].retries);
                        let respecified = matches!((mm.metadata.generation, statuses[i].failed_generation), (Some(g), Some(f)) if g > f);
                        if approved || respecified {
                            let s = &mut statuses[i];
                            if approved {
                                s.retries += 1;
                            }
                            s.phase = NamespacePhase::Applying;
                            s.failed_generation = None;
                            let why = if approved {
                                "approved"
                            } else {
                                "the spec changed"
                            };
                            s.message = Some(format!("retrying step {step} ({why})"));
                            record_start(s, step, inp.now);
                            events.push(EventNote {
                                warning: false,
                                reason: "StepRetried",
                                note: format!(
                                    "{ns_name}: step {step} ({}) retried ({why})",
                                    Step::name(step)
                                ),
                            });
                            changed = true;
                        } else if mm.spec.on_failure == Some(OnFailure::Rollback) {
                            let reason = statuses[i].message.clone();
                            return rollback(
                                inp,
                                old,
                                statuses,
                                Step::Prerequisites,
                                RequestedBy::OnFailure,
                                reason,
                                events,
                            );
                        }
                    }
                    NamespacePhase::Waiting => {
                        if step == Step::Prerequisites && !nsp.exists {
                            let s = &mut statuses[i];
                            s.phase = NamespacePhase::Failed;
                            s.failed_generation = mm.metadata.generation;
                            s.message = Some(format!(
                                "Namespace {ns_name} does not exist; create it or remove it from spec.namespaces"
                            ));
                            events.push(EventNote {
                                warning: true,
                                reason: "StepFailed",
                                note: format!("{ns_name}: namespace does not exist"),
                            });
                            changed = true;
                            continue;
                        }
                        match gate(inp, &statuses, nsp, step) {
                            Some((msg, _)) => {
                                if statuses[i].message.as_deref() != Some(&msg) {
                                    statuses[i].message = Some(msg);
                                }
                            }
                            None => {
                                let s = &mut statuses[i];
                                // The approval that released the step is spent: a failure
                                // of it waits for "<step>/2", not for the left-over one.
                                if mm.spec.pause_before.contains(&step) {
                                    s.retries = s.retries.max(1);
                                }
                                s.phase = NamespacePhase::Applying;
                                s.message =
                                    Some(format!("applying step {step} ({})", Step::name(step)));
                                s.checks.clear();
                                record_start(s, step, inp.now);
                                events.push(EventNote {
                                    warning: false,
                                    reason: "StepStarted",
                                    note: format!(
                                        "{ns_name}: step {step} ({}) started",
                                        Step::name(step)
                                    ),
                                });
                                changed = true;
                            }
                        }
                    }
                    NamespacePhase::Applying => {
                        let token = restart_token(inp.run_token, step);
                        let actions: Vec<Action> = step_actions(nsp, step)
                            .into_iter()
                            .filter(|a| !a.after_rollout)
                            .map(|mut a| {
                                if a.op == Op::Restart {
                                    a.value = Some(token.clone());
                                }
                                a
                            })
                            .collect();
                        let all_actions = step_actions(nsp, step);
                        let scope = scope_of(step, &ns_name);
                        let edited = changed_since_plan(inp, &all_actions);
                        if !edited.is_empty() {
                            let msg = format!(
                                "step {step} ({}) failed: {} changed since the plan was frozen, so what replaces it no longer matches; revert the change, or roll back ({}: all) and apply the MeshMigration again to plan anew",
                                Step::name(step),
                                edited.join(", "),
                                mn::ANNOTATION_ROLLBACK
                            );
                            let s = &mut statuses[i];
                            s.phase = NamespacePhase::Failed;
                            s.failed_generation = mm.metadata.generation;
                            s.message = Some(msg.clone());
                            events.push(EventNote {
                                warning: true,
                                reason: "StepFailed",
                                note: format!("{ns_name}: {msg}"),
                            });
                            changed = true;
                            continue;
                        }
                        // Step 2 changes the shared control plane and is listed in every
                        // namespace's plan: once one namespace applied it (this round or
                        // earlier), the others only validate it.
                        let cluster_applied = step == Step::ControlPlane
                            && (work.iter().any(|w| {
                                matches!(
                                    w,
                                    Work::Execute {
                                        scope: Scope::Cluster,
                                        step: Step::ControlPlane,
                                        ..
                                    }
                                )
                            }) || statuses.iter().enumerate().any(|(j, o)| {
                                j != i
                                    && (o.step > Step::ControlPlane
                                        || (o.step == Step::ControlPlane
                                            && o.phase == NamespacePhase::Validating))
                            }));
                        let has_actions = !all_actions.is_empty();
                        if has_actions && !cluster_applied {
                            work.push(Work::Snapshot {
                                scope: scope.clone(),
                                step,
                                actions: all_actions,
                            });
                            if !actions.is_empty() {
                                work.push(Work::Execute {
                                    scope: scope.clone(),
                                    step,
                                    actions,
                                });
                            }
                        }
                        if has_actions {
                            let cm = crate::snapshot::config_map_name(
                                mm.metadata.name.as_deref().unwrap_or_default(),
                                step,
                            );
                            let snap_ns = scope.namespace().unwrap_or("").to_string();
                            let s = &mut statuses[i];
                            if !s.snapshots.iter().any(|r| r.step == step) {
                                s.snapshots.push(meshmig_api::SnapshotRef {
                                    step,
                                    namespace: if snap_ns.is_empty() {
                                        inp.operator_namespace.to_string()
                                    } else {
                                        snap_ns
                                    },
                                    config_map: cm,
                                    parts: 1,
                                });
                            }
                        }
                        let s = &mut statuses[i];
                        s.phase = NamespacePhase::Validating;
                        s.checkpoint_started_at = Some(time(inp.now));
                        s.message = Some(format!("validating step {step} ({})", Step::name(step)));
                        busy.insert(ns_name);
                        changed = true;
                    }
                    NamespacePhase::Validating => {
                        let repairs = drift(inp, nsp, step);
                        if !repairs.is_empty() {
                            let names = repairs
                                .iter()
                                .map(|a| a.object.to_string())
                                .collect::<Vec<_>>()
                                .join(", ");
                            events.push(EventNote {
                                warning: true,
                                reason: "DriftRepaired",
                                note: format!("{ns_name}: step {step}: re-applied objects deleted or changed by someone else: {names}"),
                            });
                            work.push(Work::Execute {
                                scope: scope_of(step, &ns_name),
                                step,
                                actions: repairs,
                            });
                        }
                        let attempt = statuses[i]
                            .checkpoint_started_at
                            .as_ref()
                            .map(|t| t.0.as_second().to_string())
                            .unwrap_or_default();
                        let (probe_results, to_start) =
                            probe_outcomes(inp, &ns_name, step, &attempt);
                        for p in to_start {
                            work.push(Work::StartProbe(Box::new(p)));
                        }
                        let token = restart_token(inp.run_token, step);
                        let mut input = CheckInput {
                            spec: &mm.spec,
                            plan,
                            ns: nsp,
                            live: inp.live,
                            restart_token: &token,
                            probes: probe_results,
                            after_rollout_done: false,
                        };
                        let mut outcomes = checks::evaluate(step, &input);
                        if step == Step::SidecarRemoval && checks::rollout_done(&outcomes) {
                            let after: Vec<Action> = step_actions(nsp, Step::SidecarRemoval)
                                .into_iter()
                                .filter(|a| a.after_rollout)
                                .collect();
                            if !after.is_empty() {
                                work.push(Work::Execute {
                                    scope: scope_of(Step::SidecarRemoval, &ns_name),
                                    step: Step::SidecarRemoval,
                                    actions: after,
                                });
                            }
                            input.after_rollout_done = true;
                            outcomes = checks::evaluate(step, &input);
                        }
                        let new_checks = checks_status(&statuses[i].checks, &outcomes, inp.now);
                        evaluated.push((step, outcomes.clone()));
                        let failed: Vec<&Outcome> = outcomes
                            .iter()
                            .filter(|o| o.result == CheckResult::Fail)
                            .collect();
                        let pending: Vec<&Outcome> = outcomes
                            .iter()
                            .filter(|o| o.result == CheckResult::Pending)
                            .collect();
                        let timeout = parse_duration(&mm.spec.checkpoints.timeout)
                            .unwrap_or(SignedDuration::from_mins(10));
                        let elapsed = statuses[i]
                            .checkpoint_started_at
                            .as_ref()
                            .map(|t| inp.now.duration_since(t.0))
                            .unwrap_or(SignedDuration::ZERO);
                        let s = &mut statuses[i];
                        s.checks = new_checks;
                        if !failed.is_empty() {
                            let msg = failed
                                .iter()
                                .map(|o| format!("{}: {}", o.name, o.message))
                                .collect::<Vec<_>>()
                                .join("; ");
                            s.phase = NamespacePhase::Failed;
                            s.failed_generation = mm.metadata.generation;
                            s.message =
                                Some(format!("step {step} ({}) failed: {msg}", Step::name(step)));
                            events.push(EventNote {
                                warning: true,
                                reason: "StepFailed",
                                note: format!(
                                    "{ns_name}: step {step} ({}) failed: {msg}",
                                    Step::name(step)
                                ),
                            });
                            changed = true;
                        } else if !pending.is_empty() {
                            if elapsed > timeout {
                                let msg = pending
                                    .iter()
                                    .map(|o| format!("{}: {}", o.name, o.message))
                                    .collect::<Vec<_>>()
                                    .join("; ");
                                for c in s
                                    .checks
                                    .iter_mut()
                                    .filter(|c| c.result == CheckResult::Pending)
                                {
                                    c.result = CheckResult::Fail;
                                    c.message = format!(
                                        "still pending after {}: {}",
                                        mm.spec.checkpoints.timeout, c.message
                                    );
                                    c.last_transition_time = Some(time(inp.now));
                                }
                                s.phase = NamespacePhase::Failed;
                                s.failed_generation = mm.metadata.generation;
                                s.message = Some(format!(
                                    "step {step} ({}) timed out after {}: {msg}",
                                    Step::name(step),
                                    mm.spec.checkpoints.timeout
                                ));
                                events.push(EventNote {
                                    warning: true,
                                    reason: "StepFailed",
                                    note: format!(
                                        "{ns_name}: step {step} ({}) timed out: {msg}",
                                        Step::name(step)
                                    ),
                                });
                                changed = true;
                            } else {
                                waiting_on_time = true;
                                let msg = pending
                                    .iter()
                                    .map(|o| format!("{}: {}", o.name, o.message))
                                    .collect::<Vec<_>>()
                                    .join("; ");
                                s.message = Some(format!(
                                    "validating step {step} ({}): {msg}",
                                    Step::name(step)
                                ));
                            }
                        } else {
                            record_done(s, step, inp.now);
                            s.retries = 0;
                            events.push(EventNote {
                                warning: false,
                                reason: "StepPassed",
                                note: format!(
                                    "{ns_name}: step {step} ({}) passed",
                                    Step::name(step)
                                ),
                            });
                            work.push(Work::CleanupProbes {
                                namespace: ns_name.clone(),
                                step,
                            });
                            s.checkpoint_started_at = None;
                            if step >= Step::SidecarRemoval {
                                s.phase = NamespacePhase::Completed;
                                s.message = Some("migrated to ambient".into());
                            } else {
                                s.step = step.next().unwrap_or(Step::LAST);
                                s.phase = NamespacePhase::Waiting;
                                s.message = None;
                            }
                            changed = true;
                        }
                    }
                }
            }
            if !changed {
                break;
            }
            more = true;
        }
        // Namespaces that moved to Validating in this round need the act layer first.
        if !busy.is_empty() {
            more = true;
        }
    }
    status.namespaces = statuses;
    let mut d = finish(inp, &old, status, work, events, more, waiting_on_time);
    d.evaluated = evaluated;
    d
}

fn open_findings(inp: &Input<'_>) -> Vec<FindingRef> {
    inp.plan
        .findings
        .iter()
        .filter(|f| f.severity != Severity::Info)
        .filter(|f| {
            !inp.mm
                .spec
                .accepted_findings
                .iter()
                .any(|e| f.matches_acceptance(e))
        })
        .take(50)
        .map(|f| FindingRef {
            id: f.id.to_string(),
            severity: f.severity.as_str().to_string(),
            object: f.object.to_string(),
            message: f.message.clone(),
        })
        .collect()
}

/// Drops repeats of a cluster-scoped work item: every namespace's step 2 lists the same
/// control-plane changes, and carrying them out (or undoing them, or repairing their drift)
/// once per decision is enough; namespace-scoped items are never the same twice.
fn dedupe_cluster_work(work: Vec<Work>) -> Vec<Work> {
    let mut out: Vec<Work> = Vec::with_capacity(work.len());
    for w in work {
        let cluster = matches!(
            &w,
            Work::Snapshot {
                scope: Scope::Cluster,
                ..
            } | Work::Execute {
                scope: Scope::Cluster,
                ..
            } | Work::Undo {
                scope: Scope::Cluster,
                ..
            } | Work::DeleteSnapshots {
                scope: Scope::Cluster,
                ..
            }
        );
        if cluster && out.contains(&w) {
            continue;
        }
        out.push(w);
    }
    out
}

/// Overall phase, conditions and summary fields.
fn finish(
    inp: &Input<'_>,
    old: &MeshMigrationStatus,
    mut status: MeshMigrationStatus,
    work: Vec<Work>,
    events: Vec<EventNote>,
    more: bool,
    waiting_on_time: bool,
) -> Decision {
    let mm = inp.mm;
    let work = dedupe_cluster_work(work);
    let ns = &status.namespaces;
    let total = ns.len();
    let done = ns
        .iter()
        .filter(|s| s.phase == NamespacePhase::Completed)
        .count();
    status.progress = Some(format!("{done}/{total}"));
    status.current_step = ns
        .iter()
        .filter(|s| s.phase != NamespacePhase::Completed)
        .map(|s| s.step)
        .min()
        .or_else(|| (total > 0).then_some(Step::SidecarRemoval));
    status.open_findings = open_findings(inp);
    let failed: Vec<&NamespaceStatus> = ns
        .iter()
        .filter(|s| s.phase == NamespacePhase::Failed)
        .collect();
    let rolling = ns.iter().any(|s| s.phase == NamespacePhase::RollingBack);
    let rolled = status.rollback.as_ref().is_some_and(|r| r.completed);
    let paused_annotation = annotation(mm, mn::ANNOTATION_PAUSED) == Some("true");
    let awaiting: Vec<&NamespaceStatus> = ns
        .iter()
        .filter(|s| {
            s.phase == NamespacePhase::Waiting
                && s.message
                    .as_deref()
                    .is_some_and(|m| m.contains("waits for approval") || m.starts_with("paused"))
        })
        .collect();
    let all_done = total > 0 && done == total;
    let started = ns
        .iter()
        .any(|s| s.step > Step::Prerequisites || s.phase != NamespacePhase::Waiting);
    let phase = if all_done {
        MigrationPhase::Completed
    } else if rolling {
        MigrationPhase::RollingBack
    } else if rolled {
        MigrationPhase::RolledBack
    } else if !failed.is_empty() {
        MigrationPhase::Failed
    } else if paused_annotation
        || (!awaiting.is_empty()
            && ns.iter().all(|s| {
                s.phase == NamespacePhase::Waiting || s.phase == NamespacePhase::Completed
            }))
    {
        MigrationPhase::Paused
    } else if started {
        MigrationPhase::Progressing
    } else {
        MigrationPhase::Pending
    };
    status.phase = Some(phase);
    let summary = |s: &NamespaceStatus| {
        format!(
            "{}: step {} {:?}{}",
            s.name,
            s.step,
            s.phase,
            s.message
                .as_ref()
                .map(|m| format!(" — {m}"))
                .unwrap_or_default()
        )
    };
    let mut desired = Vec::new();
    let stalled_msg = failed
        .iter()
        .map(|s| summary(s))
        .collect::<Vec<_>>()
        .join("; ");
    match phase {
        MigrationPhase::Completed => {
            desired.push(Desired::new(
                mn::CONDITION_READY,
                true,
                "Completed",
                format!("{total} namespace(s) migrated to ambient"),
            ));
            desired.push(Desired::new(
                mn::CONDITION_RECONCILING,
                false,
                "Completed",
                "nothing left to do",
            ));
            desired.push(Desired::new(
                mn::CONDITION_STALLED,
                false,
                "Completed",
                "nothing left to do",
            ));
        }
        MigrationPhase::Failed => {
            desired.push(Desired::new(
                mn::CONDITION_READY,
                false,
                "CheckpointFailed",
                stalled_msg.clone(),
            ));
            desired.push(Desired::new(
                mn::CONDITION_RECONCILING,
                false,
                "CheckpointFailed",
                "waiting for the user: fix, then approve the step again, or roll back",
            ));
            desired.push(Desired::new(
                mn::CONDITION_STALLED,
                true,
                "CheckpointFailed",
                format!("{stalled_msg}. Fix the cause and retry with `{}: \"{}\"`, or roll back with `{}: all`", mn::ANNOTATION_APPROVE, retry_value(ns, &failed), mn::ANNOTATION_ROLLBACK),
            ));
        }
        MigrationPhase::RolledBack => {
            let target = status
                .rollback
                .as_ref()
                .map(|r| r.target)
                .unwrap_or(Step::Prerequisites);
            desired.push(Desired::new(
                mn::CONDITION_READY,
                false,
                "RolledBack",
                format!("rolled back to before step {target}"),
            ));
            desired.push(Desired::new(
                mn::CONDITION_RECONCILING,
                false,
                "RolledBack",
                "rollback complete",
            ));
            desired.push(Desired::new(
                mn::CONDITION_STALLED,
                false,
                "RolledBack",
                "rollback complete",
            ));
        }
        MigrationPhase::RollingBack => {
            desired.push(Desired::new(
                mn::CONDITION_READY,
                false,
                "RollingBack",
                "undoing steps",
            ));
            desired.push(Desired::new(
                mn::CONDITION_RECONCILING,
                true,
                "RollingBack",
                ns.iter().map(summary).collect::<Vec<_>>().join("; "),
            ));
            desired.push(Desired::new(
                mn::CONDITION_STALLED,
                false,
                "RollingBack",
                "undoing steps",
            ));
        }
        MigrationPhase::Paused => {
            desired.push(Desired::new(mn::CONDITION_READY, false, "Paused", "paused"));
            desired.push(Desired::new(
                mn::CONDITION_RECONCILING,
                false,
                "Paused",
                "paused",
            ));
            desired.push(Desired::new(
                mn::CONDITION_STALLED,
                false,
                "Paused",
                "paused",
            ));
        }
        _ => {
            desired.push(Desired::new(
                mn::CONDITION_READY,
                false,
                "Progressing",
                format!("{done}/{total} namespace(s) migrated"),
            ));
            desired.push(Desired::new(
                mn::CONDITION_RECONCILING,
                true,
                "Progressing",
                ns.iter().map(summary).collect::<Vec<_>>().join("; "),
            ));
            desired.push(Desired::new(
                mn::CONDITION_STALLED,
                false,
                "Progressing",
                "progressing",
            ));
        }
    }
    let paused_msg = if paused_annotation {
        Some(format!("{} is \"true\"", mn::ANNOTATION_PAUSED))
    } else if !awaiting.is_empty() {
        awaiting.first().and_then(|s| s.message.clone())
    } else {
        None
    };
    desired.push(match paused_msg {
        Some(m) => Desired::new(
            mn::CONDITION_PAUSED,
            true,
            if paused_annotation {
                "PausedByAnnotation"
            } else {
                "AwaitingApproval"
            },
            m,
        ),
        None => Desired::new(mn::CONDITION_PAUSED, false, "NotPaused", "not paused"),
    });
    desired.push(match status.rollback.as_ref().filter(|r| r.completed) {
        Some(r) => Desired::new(
            mn::CONDITION_ROLLED_BACK,
            true,
            "RolledBack",
            format!(
                "rolled back to before step {} ({}){}",
                r.target,
                r.requested_by,
                r.reason
                    .as_ref()
                    .map(|x| format!(": {x}"))
                    .unwrap_or_default()
            ),
        ),
        None => Desired::new(
            mn::CONDITION_ROLLED_BACK,
            false,
            "NotRolledBack",
            "no rollback",
        ),
    });
    let now = time(inp.now);
    status.conditions = conditions::merge(&old.conditions, &desired, mm.metadata.generation, &now);
    Decision {
        status,
        work,
        events,
        more,
        waiting_on_time,
        evaluated: Vec::new(),
    }
}

/// Highest step with a snapshot of this MeshMigration object for `ns`, recorded in status
/// or not. A step's snapshot is taken before the step changes anything and the status write
/// that records the step comes after its work, so a crash in between leaves changes that
/// only the snapshot knows of; a rollback starts from here too.
fn snapshotted_top(inp: &Input<'_>, ns: &str) -> Option<Step> {
    let present = inp.present_snapshots?;
    let name = inp.mm.metadata.name.as_deref().unwrap_or_default();
    Step::range(Step::ControlPlane, Step::LAST)
        .rev()
        .find(|&step| {
            let in_ns = scope_of(step, ns)
                .namespace()
                .unwrap_or(inp.operator_namespace)
                .to_string();
            present.contains(&format!(
                "{in_ns}/{}",
                crate::snapshot::config_map_name(name, step)
            ))
        })
}

/// Undoes steps, highest first across namespaces, down to `target`; then holds the
/// rollback at its checkpoint until the namespaces are as they were before `target`.
fn rollback(
    inp: &Input<'_>,
    old: MeshMigrationStatus,
    mut statuses: Vec<NamespaceStatus>,
    target: Step,
    by: RequestedBy,
    reason: Option<String>,
    mut events: Vec<EventNote>,
) -> Decision {
    let mut status = old.clone();
    status.observed_generation = inp.mm.metadata.generation;
    let mut work = Vec::new();
    let fresh = old
        .rollback
        .as_ref()
        .is_none_or(|r| r.completed || r.target != target);
    if fresh {
        events.push(EventNote {
            warning: true,
            reason: "RollbackStarted",
            note: format!(
                "rolling back to before step {target} ({by}){}",
                reason
                    .as_ref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
        });
    }
    let control_plane_undone = old
        .rollback
        .as_ref()
        .is_some_and(|r| !r.completed && r.target == target && r.control_plane_undone);
    status.rollback = Some(RollbackStatus {
        target,
        requested_by: by,
        completed: false,
        reason,
        control_plane_undone,
    });
    for s in statuses.iter_mut() {
        if s.phase != NamespacePhase::RollingBack {
            // Step 1 changes nothing, so a namespace where nothing ran rolls back from it.
            let top = applied_top(s).max(snapshotted_top(inp, &s.name));
            s.step = top.unwrap_or(Step::FIRST);
            s.phase = NamespacePhase::RollingBack;
            s.checks.clear();
            s.checkpoint_started_at = None;
        }
    }
    let lowest = target.max(Step::ControlPlane);
    let top = statuses.iter().map(|s| s.step).max().unwrap_or(Step::FIRST);
    let mut evaluated = Vec::new();
    let (more, verdict) = if top < lowest {
        let verdict = verify_rollback(inp, &mut statuses, target, &mut work, &mut evaluated);
        if verdict == Verdict::Passed {
            complete_rollback(&mut status, &mut statuses, target, &mut work, &mut events);
        }
        (verdict == Verdict::Reading, Some(verdict))
    } else if top == Step::HboneSidecars && lowest == Step::ControlPlane && !control_plane_undone {
        // Step 3's undo restarts workloads: their new sidecars must come from the control
        // plane as it was, so it is restored first (everything that needs ambient is gone).
        work.push(Work::Undo {
            scope: Scope::Cluster,
            step: Step::ControlPlane,
        });
        for s in statuses.iter_mut() {
            s.message =
                Some("restored the control plane (step 2) ahead of step 3's restarts".into());
        }
        if let Some(r) = status.rollback.as_mut() {
            r.control_plane_undone = true;
        }
        (true, None)
    } else if top == Step::HboneSidecars
        && control_plane_undone
        && let Err(m) = crate::checks::control_plane_settled(
            inp.live,
            &inp.mm.spec,
            inp.plan.control_plane.mode,
            inp.frozen,
        )
    {
        for s in statuses.iter_mut() {
            s.message = Some(format!(
                "waiting for the restored control plane before undoing step 3: {m}"
            ));
        }
        (false, None)
    } else if top == Step::ControlPlane {
        if !control_plane_undone {
            work.push(Work::Undo {
                scope: Scope::Cluster,
                step: Step::ControlPlane,
            });
        }
        for s in statuses.iter_mut().filter(|s| s.step == Step::ControlPlane) {
            s.step = Step::Prerequisites;
            s.message = Some("undid step 2 (Control plane)".into());
        }
        (true, None)
    } else {
        (
            undo_top(inp, &mut statuses, top, &mut work, &mut events),
            None,
        )
    };
    status.namespaces = statuses;
    let waiting = matches!(verdict, Some(Verdict::Checking | Verdict::Failed(_)));
    let mut d = finish(inp, &old, status, work, events, more, waiting);
    d.evaluated = evaluated;
    if let Some(Verdict::Failed(msg)) = verdict {
        hold_unverified_rollback(inp, &mut d.status, msg);
    }
    d
}

/// Undoes step `top` in every namespace that has it, in reverse namespace order. Undoing
/// step 9 restarts workloads to bring their sidecars back; step 8 is undone only once those
/// rollouts finished, so waypoint-era objects are not removed under ambient pods. Whether
/// more can be undone right away.
fn undo_top(
    inp: &Input<'_>,
    statuses: &mut [NamespaceStatus],
    top: Step,
    work: &mut Vec<Work>,
    events: &mut Vec<EventNote>,
) -> bool {
    let order: Vec<String> = inp.plan.namespace_order.iter().rev().cloned().collect();
    let mut waiting = false;
    let before = work.len();
    for ns in order {
        let Some(s) = statuses.iter_mut().find(|s| s.name == ns && s.step == top) else {
            continue;
        };
        if namespace_vanished(inp.live, &ns) {
            // Undoing would write into a terminating namespace and be refused forever.
            events.push(EventNote {
                warning: true,
                reason: "StepNotUndone",
                note: format!(
                    "{ns}: step {top} ({}) not undone: the namespace was deleted",
                    Step::name(top)
                ),
            });
            s.step = top.previous().unwrap_or(Step::FIRST);
            s.message = Some(format!(
                "namespace deleted; step {top} ({}) left as it was",
                Step::name(top)
            ));
            continue;
        }
        if top == Step::PolicySimplification
            && let Err(m) = crate::checks::namespace_settled(inp.live, &ns)
        {
            s.message = Some(format!(
                "waiting for rollouts before undoing step {top}: {m}"
            ));
            waiting = true;
            continue;
        }
        let lost = inp.present_snapshots.and_then(|present| {
            s.snapshots
                .iter()
                .find(|r| r.step == top)
                .map(|r| format!("{}/{}", r.namespace, r.config_map))
                .filter(|k| !present.contains(k))
        });
        if let Some(cm) = lost {
            events.push(EventNote {
                warning: true,
                reason: "StepNotUndone",
                note: format!("{ns}: step {top} ({}) cannot be undone: its snapshot ConfigMap {cm} is missing; its changes are left as they are", Step::name(top)),
            });
        }
        work.push(Work::Undo {
            scope: Scope::Namespace(ns.clone()),
            step: top,
        });
        work.push(Work::CleanupProbes {
            namespace: ns.clone(),
            step: top,
        });
        s.step = top.previous().unwrap_or(Step::FIRST);
        s.message = Some(format!("undid step {top} ({})", Step::name(top)));
        events.push(EventNote {
            warning: false,
            reason: "StepUndone",
            note: format!("{ns}: step {top} ({}) undone", Step::name(top)),
        });
    }
    !(waiting && work.len() == before)
}

/// Where the checkpoint of a rollback stands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Verdict {
    /// The shell has not read the undone steps' snapshots yet.
    Reading,
    /// Checks are pending.
    Checking,
    /// A check failed, or stayed pending past the checkpoint timeout: what it says.
    Failed(String),
    /// Every check passed in every namespace.
    Passed,
}

/// The steps whose snapshots the checkpoint of a rollback compares with the cluster, once
/// every step down to the target is undone (`None` before that, or when no rollback runs).
pub fn rollback_snapshots_to_verify(mm: &MeshMigration) -> Option<Vec<(Scope, Step)>> {
    let status = mm.status.as_ref()?;
    let r = status.rollback.as_ref().filter(|r| !r.completed)?;
    let lowest = r.target.max(Step::ControlPlane);
    let undone = !status.namespaces.is_empty()
        && status
            .namespaces
            .iter()
            .all(|s| s.phase == NamespacePhase::RollingBack && s.step < lowest);
    if !undone {
        return None;
    }
    let mut out = Vec::new();
    if lowest <= Step::ControlPlane {
        out.push((Scope::Cluster, Step::ControlPlane));
    }
    for s in &status.namespaces {
        out.extend(
            Step::range(lowest.max(Step::HboneSidecars), Step::LAST)
                .map(|step| (Scope::Namespace(s.name.clone()), step)),
        );
    }
    Some(out)
}

/// Evaluates the checkpoint of the rollback in every namespace.
fn verify_rollback(
    inp: &Input<'_>,
    statuses: &mut [NamespaceStatus],
    target: Step,
    work: &mut Vec<Work>,
    evaluated: &mut Vec<(Step, Vec<Outcome>)>,
) -> Verdict {
    let Some(snapshots) = inp.rollback_snapshots else {
        for s in statuses.iter_mut() {
            s.message = Some(format!(
                "every step down to {target} undone; verifying the rollback"
            ));
        }
        return Verdict::Reading;
    };
    let timeout =
        parse_duration(&inp.mm.spec.checkpoints.timeout).unwrap_or(SignedDuration::from_mins(10));
    let mut failed = Vec::new();
    let mut pending = false;
    for s in statuses.iter_mut() {
        let Some(nsp) = inp.plan.namespace(&s.name) else {
            continue;
        };
        if namespace_vanished(inp.live, &s.name) {
            continue;
        }
        let started = s
            .checkpoint_started_at
            .get_or_insert_with(|| time(inp.now))
            .0;
        let mut outcomes = rollback_outcomes(inp, nsp, snapshots, target, started, work);
        if inp.now.duration_since(started) > timeout {
            time_out(&mut outcomes, &inp.mm.spec.checkpoints.timeout);
        }
        s.checks = checks_status(&s.checks, &outcomes, inp.now);
        evaluated.push((target, outcomes.clone()));
        let summary = |r: CheckResult| {
            outcomes
                .iter()
                .filter(|o| o.result == r)
                .map(|o| format!("{}: {}", o.name, o.message))
                .collect::<Vec<_>>()
        };
        let (fails, waits) = (summary(CheckResult::Fail), summary(CheckResult::Pending));
        s.message = Some(if !fails.is_empty() {
            failed.push(format!("{}: {}", s.name, fails.join("; ")));
            format!(
                "rollback to before step {target} failed its checks: {}",
                fails.join("; ")
            )
        } else if !waits.is_empty() {
            pending = true;
            format!(
                "verifying the rollback to before step {target}: {}",
                waits.join("; ")
            )
        } else {
            format!("rollback to before step {target} verified")
        });
    }
    if !failed.is_empty() {
        Verdict::Failed(failed.join(" | "))
    } else if pending {
        Verdict::Checking
    } else {
        Verdict::Passed
    }
}

/// The checks of one namespace's rollback. Probes run as at the checkpoint of the last kept
/// step: that checkpoint validated the state the rollback returns to.
fn rollback_outcomes(
    inp: &Input<'_>,
    nsp: &NamespacePlan,
    snapshots: &[crate::snapshot::Snapshot],
    target: Step,
    started: Timestamp,
    work: &mut Vec<Work>,
) -> Vec<Outcome> {
    let attempt = format!("rollback-{}", started.as_second());
    // A rollback of everything keeps no step, so no checkpoint's probes apply.
    let (probe_results, to_start) = target
        .previous()
        .map(|kept| probe_outcomes(inp, &nsp.name, kept, &attempt))
        .unwrap_or_default();
    work.extend(to_start.into_iter().map(|p| Work::StartProbe(Box::new(p))));
    let mine: Vec<crate::snapshot::Snapshot> = snapshots
        .iter()
        .filter(|x| x.namespace.as_deref().is_none_or(|n| n == nsp.name))
        .cloned()
        .collect();
    crate::rollback::evaluate(&crate::rollback::RollbackCheckInput {
        target,
        ns: nsp,
        live: inp.live,
        snapshots: &mine,
        migration: inp.mm.metadata.name.as_deref().unwrap_or_default(),
        probes: probe_results,
    })
}

/// Pending checks past the checkpoint timeout fail.
fn time_out(outcomes: &mut [Outcome], timeout: &str) {
    for o in outcomes
        .iter_mut()
        .filter(|o| o.result == CheckResult::Pending)
    {
        o.result = CheckResult::Fail;
        o.message = format!("still pending after {timeout}: {}", o.message);
    }
}

/// Every check passed: the rollback is complete, its snapshots go, and a rollback of step 2
/// also drops the frozen plan.
fn complete_rollback(
    status: &mut MeshMigrationStatus,
    statuses: &mut [NamespaceStatus],
    target: Step,
    work: &mut Vec<Work>,
    events: &mut Vec<EventNote>,
) {
    for s in statuses.iter_mut() {
        s.phase = NamespacePhase::RolledBack;
        s.step = target;
        s.message = Some(format!("rolled back to before step {target}"));
        s.snapshots.retain(|r| r.step < target);
        s.checkpoint_started_at = None;
        if let Some(kept) = target.previous() {
            work.push(Work::CleanupProbes {
                namespace: s.name.clone(),
                step: kept,
            });
        }
    }
    for st in Step::range(target.max(Step::ControlPlane), Step::LAST).rev() {
        if st == Step::ControlPlane {
            work.push(Work::DeleteSnapshots {
                scope: Scope::Cluster,
                step: Step::ControlPlane,
            });
        } else {
            for s in statuses.iter() {
                work.push(Work::DeleteSnapshots {
                    scope: Scope::Namespace(s.name.clone()),
                    step: st,
                });
            }
        }
    }
    if target <= Step::ControlPlane {
        work.push(Work::DeletePlan);
        status.plan = None;
    }
    if let Some(r) = status.rollback.as_mut() {
        r.completed = true;
    }
    events.push(EventNote {
        warning: false,
        reason: "RolledBack",
        note: format!("rolled back to before step {target}"),
    });
}

/// A rollback whose checkpoint failed is not reported as rolled back: it is Stalled, and says
/// which workloads lack what. The checks run again on every change, so fixing the cause
/// (e.g. restarting a workload outside the mesh) completes it.
fn hold_unverified_rollback(inp: &Input<'_>, status: &mut MeshMigrationStatus, failed: String) {
    let msg = format!(
        "the rollback is undone but not verified: {failed}. Fix the cause (a workload outside the mesh needs a restart: kubectl rollout restart); meshmig checks again on every change and reports RolledBack once every check passes"
    );
    let now = time(inp.now);
    let generation = inp.mm.metadata.generation;
    for (type_, value) in [
        (mn::CONDITION_STALLED, true),
        (mn::CONDITION_RECONCILING, false),
        (mn::CONDITION_READY, false),
    ] {
        conditions::set(
            &mut status.conditions,
            Desired::new(type_, value, ROLLBACK_CHECK_FAILED, msg.clone()),
            generation,
            &now,
        );
    }
    status.phase = Some(MigrationPhase::Stalled);
}

/// Reason of the Stalled condition of a rollback whose checkpoint failed.
pub const ROLLBACK_CHECK_FAILED: &str = "RollbackCheckFailed";

/// Existing snapshot steps per scope, from status (for tests and the act layer).
pub fn snapshot_steps(status: &MeshMigrationStatus) -> BTreeMap<String, BTreeSet<Step>> {
    let mut out: BTreeMap<String, BTreeSet<Step>> = BTreeMap::new();
    for ns in &status.namespaces {
        for s in &ns.snapshots {
            out.entry(ns.name.clone()).or_default().insert(s.step);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10m"), Some(SignedDuration::from_mins(10)));
        assert_eq!(parse_duration("1h30m"), Some(SignedDuration::from_mins(90)));
        assert_eq!(
            parse_duration("500ms"),
            Some(SignedDuration::from_millis(500))
        );
        assert_eq!(
            parse_duration("1.5s"),
            Some(SignedDuration::from_millis(1500))
        );
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("x"), None);
    }
}
