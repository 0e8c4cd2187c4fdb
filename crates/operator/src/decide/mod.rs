//! The pure state machine: from the MeshMigration, its frozen plan and the live cluster
//! view, decide what to do next and what the status becomes once that succeeded.
//!
//! Per namespace: `Waiting` (for gates) → `Applying` (snapshot, then act) → `Validating`
//! (checkpoint) → next step's `Waiting` … → `Completed`; `Failed` on a failing or timed-out
//! checkpoint; `RollingBack` → `RolledBack` when a rollback is requested.

mod events;
mod finish;
mod forward;
mod hold;
mod undo;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use meshmig_api::names::{self as mn, istio as n};
use meshmig_api::{
    CheckResult, CheckStatus, MeshMigration, MeshMigrationStatus, MigrationPhase, NamespacePhase,
    NamespaceStatus, RequestedBy, Step,
};
use meshmig_planner::Inventory;
use meshmig_planner::plan::{Action, NamespacePlan, Op, Plan};

pub use events::EventNote;
pub use hold::Hold;
pub use undo::{ROLLBACK_CHECK_FAILED, rollback_snapshots_to_verify};

use crate::checks::{self, Outcome};
use crate::conditions::{self, Desired};
use crate::probes;
use finish::{Progress, finish};
use forward::End;
use undo::Request;

/// Where a step's changes live.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Cluster-scoped objects (step 2); snapshot in the operator's namespace.
    Cluster,
    /// One target namespace.
    Namespace(String),
}

impl Scope {
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
        scope: Scope,
        step: Step,
        /// Actions about to run.
        actions: Vec<Action>,
    },
    /// Carry out actions (idempotent).
    Execute {
        scope: Scope,
        step: Step,
        actions: Vec<Action>,
    },
    /// Create a probe Pod (idempotent).
    StartProbe(Box<Pod>),
    /// Delete the probe Pods of a checkpoint.
    CleanupProbes {
        /// Validated namespace.
        namespace: String,
        step: Step,
    },
    /// Undo one step from its snapshot (idempotent).
    Undo { scope: Scope, step: Step },
    /// Delete the snapshots of undone steps.
    DeleteSnapshots { scope: Scope, step: Step },
    /// Delete the frozen plan (after a full rollback).
    DeletePlan,
}

/// Output of [`decide`].
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Status to write once every work item succeeded.
    pub status: MeshMigrationStatus,
    pub work: Vec<Work>,
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
    pub mm: &'a MeshMigration,
    pub plan: &'a Plan,
    pub live: &'a Inventory,
    pub probe_pods: &'a [Pod],
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

pub fn scope_of(step: Step, ns: &str) -> Scope {
    if step == Step::ControlPlane {
        Scope::Cluster
    } else {
        Scope::Namespace(ns.to_string())
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

/// The approve annotation: `"<step>"` or `"<step>/<n>"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Approval {
    pub step: Step,
    /// How many retries of the failed step are approved (default 1).
    pub count: u32,
}

/// The approve annotation, if it names a step.
pub fn approval(mm: &MeshMigration) -> Option<Approval> {
    let v = annotation(mm, mn::ANNOTATION_APPROVE)?.trim();
    let (step, count) = match v.split_once('/') {
        Some((s, n)) => (s, n.parse().ok()?),
        None => (v, 1),
    };
    let step: Step = step.parse().ok()?;
    Some(Approval { step, count })
}

/// What the rollback annotation, `onDelete` and an unfinished rollback ask of this decision.
enum RollbackAsk {
    /// Nothing: go forward.
    None,
    /// A partial rollback whose annotation was removed: the rolled-back namespaces resume.
    Resume,
    Start(Request),
}

fn rollback_ask(inp: &Input<'_>, old: &MeshMigrationStatus) -> RollbackAsk {
    let mm = inp.mm;
    let resumed_partial = mm.requested_rollback().is_none()
        && old.rollback.as_ref().is_some_and(|r| {
            r.completed
                && r.target > Step::Prerequisites
                && r.requested_by == RequestedBy::Annotation
        });
    if resumed_partial {
        return RollbackAsk::Resume;
    }
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
    match requested {
        Some((target, _, _))
            if old
                .rollback
                .as_ref()
                .is_some_and(|r| r.completed && r.target <= target) =>
        {
            RollbackAsk::None
        }
        Some((target, by, reason)) => RollbackAsk::Start(Request { target, by, reason }),
        None => RollbackAsk::None,
    }
}

/// Namespaces that vanished while a step of theirs was under way fail: what meshmig changed
/// in them went with them.
fn fail_vanished(inp: &Input<'_>, statuses: &mut [NamespaceStatus]) -> Vec<EventNote> {
    let mut events = Vec::new();
    for s in statuses.iter_mut().filter(|s| {
        matches!(
            s.phase,
            NamespacePhase::Waiting | NamespacePhase::Applying | NamespacePhase::Validating
        ) && applied_top(s).is_some()
            && namespace_vanished(inp.live, &s.name)
    }) {
        let step = s.step;
        s.phase = NamespacePhase::Failed;
        s.failed_generation = inp.mm.metadata.generation;
        s.message = Some(format!(
            "Namespace {} was deleted during step {step} ({}); what meshmig changed in it went with it. Remove it from spec.namespaces, or roll back with {}: all",
            s.name,
            step.name(),
            mn::ANNOTATION_ROLLBACK
        ));
        events.push(EventNote::namespace_deleted(&s.name, step));
    }
    events
}

/// Snapshot ConfigMaps of applied steps that are gone (a snapshot in a deleted namespace
/// went with everything it could restore).
fn missing_snapshots(inp: &Input<'_>, statuses: &[NamespaceStatus]) -> Option<Hold> {
    let present = inp.present_snapshots?;
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
    (!missing.is_empty()).then_some(Hold::SnapshotMissing { missing })
}

/// The migration is held where a step could no longer be undone: Stalled, every namespace
/// not completed says why.
fn hold_for_snapshots(
    inp: &Input<'_>,
    old: &MeshMigrationStatus,
    mut status: MeshMigrationStatus,
    mut statuses: Vec<NamespaceStatus>,
    events: Vec<EventNote>,
    hold: &Hold,
) -> Decision {
    for s in statuses
        .iter_mut()
        .filter(|s| s.phase != NamespacePhase::Completed)
    {
        s.message = Some(hold.message());
    }
    status.namespaces = statuses;
    let mut d = finish(
        inp,
        old,
        status,
        Progress::new(Vec::new(), events, false, false),
    );
    let now = time(inp.now);
    for (type_, value) in [
        (mn::CONDITION_STALLED, true),
        (mn::CONDITION_RECONCILING, false),
    ] {
        conditions::set(
            &mut d.status.conditions,
            Desired::new(type_, value, hold.reason(), hold.condition_message()),
            inp.mm.metadata.generation,
            &now,
        );
    }
    d.status.phase = Some(MigrationPhase::Stalled);
    d
}

/// The decision: rollback first, if one is asked for; else the forward run.
pub fn decide(inp: &Input<'_>) -> Decision {
    let old = inp.mm.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status.observed_generation = inp.mm.metadata.generation;
    let mut statuses = init_statuses(&old, inp.plan);
    let mut events = Vec::new();
    let mut more = false;
    match rollback_ask(inp, &old) {
        RollbackAsk::Start(req) => return undo::rollback(inp, old, statuses, req, events),
        RollbackAsk::Resume => {
            resume(&mut statuses);
            status.rollback = None;
            events.push(EventNote::resumed());
            more = true;
        }
        RollbackAsk::None => {}
    }
    let terminal_rollback = status
        .rollback
        .as_ref()
        .is_some_and(|r| r.completed && r.target <= Step::Prerequisites);
    if terminal_rollback {
        status.namespaces = statuses;
        return finish(
            inp,
            &old,
            status,
            Progress::new(Vec::new(), events, more, false),
        );
    }
    events.extend(fail_vanished(inp, &mut statuses));
    if let Some(hold) = missing_snapshots(inp, &statuses) {
        return hold_for_snapshots(inp, &old, status, statuses, events, &hold);
    }
    match forward::run(inp, statuses, events, more) {
        End::RollBack {
            statuses,
            events,
            reason,
        } => {
            let req = Request {
                target: Step::Prerequisites,
                by: RequestedBy::OnFailure,
                reason,
            };
            undo::rollback(inp, old, statuses, req, events)
        }
        End::Done(f) => {
            status.namespaces = f.statuses;
            let progress = Progress {
                work: f.work,
                events: f.events,
                more: f.more,
                waiting_on_time: f.waiting_on_time,
                holds: f.holds,
            };
            let mut d = finish(inp, &old, status, progress);
            d.evaluated = f.evaluated;
            d
        }
    }
}

/// The namespaces a partial rollback left go forward again from where it left them.
fn resume(statuses: &mut [NamespaceStatus]) {
    for s in statuses
        .iter_mut()
        .filter(|s| s.phase == NamespacePhase::RolledBack)
    {
        s.phase = NamespacePhase::Waiting;
        s.message = None;
    }
}

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
