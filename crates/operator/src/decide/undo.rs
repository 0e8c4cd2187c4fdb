//! Rollback: steps are undone highest first across namespaces, down to the target; then the
//! rollback is held at its checkpoint until the namespaces are as they were before it.

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use meshmig_api::names as mn;
use meshmig_api::{
    CheckResult, MeshMigration, MeshMigrationStatus, MigrationPhase, NamespacePhase,
    NamespaceStatus, RequestedBy, RollbackStatus, Step,
};
use meshmig_planner::plan::NamespacePlan;

use super::events::{EventNote, titled};
use super::finish::{Progress, finish};
use super::{
    Decision, Input, Scope, Work, applied_top, checks_status, namespace_vanished, parse_duration,
    probe_outcomes, scope_of, time,
};
use crate::checks::Outcome;
use crate::conditions::{self, Desired};

/// Reason of the Stalled condition of a rollback whose checkpoint failed.
pub const ROLLBACK_CHECK_FAILED: &str = "RollbackCheckFailed";

/// A rollback to run: down to before `target`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Request {
    pub target: Step,
    pub by: RequestedBy,
    pub reason: Option<String>,
}

/// Work and events of a rollback so far.
struct Undo<'a, 'i> {
    inp: &'a Input<'i>,
    target: Step,
    work: Vec<Work>,
    events: Vec<EventNote>,
    evaluated: Vec<(Step, Vec<Outcome>)>,
}

/// What one rollback decision reached.
struct Reached {
    /// Whether more can be undone right away.
    more: bool,
    /// Where the checkpoint stands, once every step down to the target is undone.
    verdict: Option<Verdict>,
}

impl Reached {
    fn undoing(more: bool) -> Self {
        Self {
            more,
            verdict: None,
        }
    }
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

/// Undoes steps down to `req.target`, then verifies the rollback.
pub(super) fn rollback(
    inp: &Input<'_>,
    old: MeshMigrationStatus,
    mut statuses: Vec<NamespaceStatus>,
    req: Request,
    mut events: Vec<EventNote>,
) -> Decision {
    let mut status = old.clone();
    status.observed_generation = inp.mm.metadata.generation;
    let target = req.target;
    let running = old
        .rollback
        .as_ref()
        .filter(|r| !r.completed && r.target == target);
    if running.is_none() {
        events.push(EventNote::rollback_started(
            target,
            req.by,
            req.reason.as_deref(),
        ));
    }
    let control_plane_undone = running.is_some_and(|r| r.control_plane_undone);
    status.rollback = Some(RollbackStatus {
        target,
        requested_by: req.by,
        completed: false,
        reason: req.reason,
        control_plane_undone,
    });
    start_rolling_back(inp, &mut statuses);
    let mut u = Undo {
        inp,
        target,
        work: Vec::new(),
        events,
        evaluated: Vec::new(),
    };
    let reached = next_undo(&mut u, &mut status, &mut statuses, control_plane_undone);
    status.namespaces = statuses;
    let waiting = matches!(
        reached.verdict,
        Some(Verdict::Checking | Verdict::Failed(_))
    );
    let progress = Progress::new(u.work, u.events, reached.more, waiting);
    let mut d = finish(inp, &old, status, progress);
    d.evaluated = u.evaluated;
    if let Some(Verdict::Failed(msg)) = reached.verdict {
        hold_unverified_rollback(inp, &mut d.status, msg);
    }
    d
}

/// Every namespace not rolling back yet starts from the highest step whose changes it may
/// hold.
fn start_rolling_back(inp: &Input<'_>, statuses: &mut [NamespaceStatus]) {
    for s in statuses
        .iter_mut()
        .filter(|s| s.phase != NamespacePhase::RollingBack)
    {
        // Step 1 changes nothing, so a namespace where nothing ran rolls back from it.
        let top = applied_top(s).max(snapshotted_top(inp, &s.name));
        s.step = top.unwrap_or(Step::FIRST);
        s.phase = NamespacePhase::RollingBack;
        s.checks.clear();
        s.checkpoint_started_at = None;
    }
}

/// The next thing the rollback does, from the highest step still in place.
fn next_undo(
    u: &mut Undo<'_, '_>,
    status: &mut MeshMigrationStatus,
    statuses: &mut [NamespaceStatus],
    control_plane_undone: bool,
) -> Reached {
    let lowest = u.target.max(Step::ControlPlane);
    let top = statuses.iter().map(|s| s.step).max().unwrap_or(Step::FIRST);
    if top < lowest {
        let verdict = verify_rollback(u, statuses);
        if verdict == Verdict::Passed {
            complete_rollback(u, status, statuses);
        }
        return Reached {
            more: verdict == Verdict::Reading,
            verdict: Some(verdict),
        };
    }
    if top == Step::HboneSidecars && lowest == Step::ControlPlane && !control_plane_undone {
        return restore_control_plane_first(u, status, statuses);
    }
    if top == Step::HboneSidecars && control_plane_undone {
        let inp = u.inp;
        let settled = crate::checks::control_plane_settled(
            inp.live,
            &inp.mm.spec,
            inp.plan.control_plane.mode,
            inp.frozen,
        );
        if let Err(m) = settled {
            for s in statuses.iter_mut() {
                s.message = Some(format!(
                    "waiting for the restored control plane before undoing step {}: {m}",
                    Step::HboneSidecars
                ));
            }
            return Reached::undoing(false);
        }
    }
    if top == Step::ControlPlane {
        if !control_plane_undone {
            u.work.push(undo_control_plane());
        }
        for s in statuses.iter_mut().filter(|s| s.step == Step::ControlPlane) {
            s.step = Step::Prerequisites;
            s.message = Some(format!("undid {}", titled(Step::ControlPlane)));
        }
        return Reached::undoing(true);
    }
    Reached::undoing(undo_top(u, statuses, top))
}

fn undo_control_plane() -> Work {
    Work::Undo {
        scope: Scope::Cluster,
        step: Step::ControlPlane,
    }
}

/// Step 3's undo restarts workloads: their new sidecars must come from the control plane as
/// it was, so it is restored first (everything that needs ambient is gone).
fn restore_control_plane_first(
    u: &mut Undo<'_, '_>,
    status: &mut MeshMigrationStatus,
    statuses: &mut [NamespaceStatus],
) -> Reached {
    u.work.push(undo_control_plane());
    for s in statuses.iter_mut() {
        s.message = Some(format!(
            "restored the control plane (step {}) ahead of step {}'s restarts",
            Step::ControlPlane,
            Step::HboneSidecars
        ));
    }
    if let Some(r) = status.rollback.as_mut() {
        r.control_plane_undone = true;
    }
    Reached::undoing(true)
}

/// Undoes step `top` in every namespace that has it, in reverse namespace order. Undoing
/// step 9 restarts workloads to bring their sidecars back; step 8 is undone only once those
/// rollouts finished, so waypoint-era objects are not removed under ambient pods. Whether
/// more can be undone right away.
fn undo_top(u: &mut Undo<'_, '_>, statuses: &mut [NamespaceStatus], top: Step) -> bool {
    let inp = u.inp;
    let mut waiting = false;
    let before = u.work.len();
    for ns in inp.plan.namespace_order.iter().rev() {
        let Some(s) = statuses.iter_mut().find(|s| s.name == *ns && s.step == top) else {
            continue;
        };
        if namespace_vanished(inp.live, ns) {
            // Undoing would write into a terminating namespace and be refused forever.
            u.events
                .push(EventNote::not_undone_namespace_deleted(ns, top));
            s.step = top.previous().unwrap_or(Step::FIRST);
            s.message = Some(format!("namespace deleted; {} left as it was", titled(top)));
            continue;
        }
        if top == Step::PolicySimplification
            && let Err(m) = crate::checks::namespace_settled(inp.live, ns)
        {
            s.message = Some(format!(
                "waiting for rollouts before undoing step {top}: {m}"
            ));
            waiting = true;
            continue;
        }
        undo_step(u, s, top);
    }
    !(waiting && u.work.len() == before)
}

/// Undoes `step` in one namespace (reporting a lost snapshot, whose changes stay).
fn undo_step(u: &mut Undo<'_, '_>, s: &mut NamespaceStatus, step: Step) {
    let ns = s.name.clone();
    let lost = u.inp.present_snapshots.and_then(|present| {
        s.snapshots
            .iter()
            .find(|r| r.step == step)
            .map(|r| format!("{}/{}", r.namespace, r.config_map))
            .filter(|k| !present.contains(k))
    });
    if let Some(cm) = lost {
        u.events
            .push(EventNote::not_undone_snapshot_missing(&ns, step, &cm));
    }
    u.work.push(Work::Undo {
        scope: Scope::Namespace(ns.clone()),
        step,
    });
    u.work.push(Work::CleanupProbes {
        namespace: ns.clone(),
        step,
    });
    s.step = step.previous().unwrap_or(Step::FIRST);
    s.message = Some(format!("undid {}", titled(step)));
    u.events.push(EventNote::undone(&ns, step));
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
fn verify_rollback(u: &mut Undo<'_, '_>, statuses: &mut [NamespaceStatus]) -> Verdict {
    let (inp, target) = (u.inp, u.target);
    let Some(snapshots) = inp.rollback_snapshots else {
        for s in statuses.iter_mut() {
            s.message = Some(format!(
                "every step down to {target} undone; verifying the rollback"
            ));
        }
        return Verdict::Reading;
    };
    let mut failed = Vec::new();
    let mut pending = false;
    for s in statuses.iter_mut() {
        let Some(nsp) = inp.plan.namespace(&s.name) else {
            continue;
        };
        if namespace_vanished(inp.live, &s.name) {
            continue;
        }
        match verify_namespace(u, s, nsp, snapshots) {
            Verdict::Failed(f) => failed.push(f),
            Verdict::Checking => pending = true,
            Verdict::Reading | Verdict::Passed => {}
        }
    }
    if !failed.is_empty() {
        Verdict::Failed(failed.join(" | "))
    } else if pending {
        Verdict::Checking
    } else {
        Verdict::Passed
    }
}

/// The rollback's checkpoint in one namespace (a failure says which namespace).
fn verify_namespace(
    u: &mut Undo<'_, '_>,
    s: &mut NamespaceStatus,
    nsp: &NamespacePlan,
    snapshots: &[crate::snapshot::Snapshot],
) -> Verdict {
    let (inp, target) = (u.inp, u.target);
    let timeout =
        parse_duration(&inp.mm.spec.checkpoints.timeout).unwrap_or(SignedDuration::from_mins(10));
    let started = s
        .checkpoint_started_at
        .get_or_insert_with(|| time(inp.now))
        .0;
    let mut outcomes = rollback_outcomes(u, nsp, snapshots, started);
    if inp.now.duration_since(started) > timeout {
        time_out(&mut outcomes, &inp.mm.spec.checkpoints.timeout);
    }
    s.checks = checks_status(&s.checks, &outcomes, inp.now);
    let listed = |r: CheckResult| {
        outcomes
            .iter()
            .filter(|o| o.result == r)
            .map(|o| format!("{}: {}", o.name, o.message))
            .collect::<Vec<_>>()
    };
    let (fails, waits) = (listed(CheckResult::Fail), listed(CheckResult::Pending));
    u.evaluated.push((target, outcomes));
    let (message, verdict) = if !fails.is_empty() {
        let fails = fails.join("; ");
        (
            format!("rollback to before step {target} failed its checks: {fails}"),
            Verdict::Failed(format!("{}: {fails}", s.name)),
        )
    } else if !waits.is_empty() {
        (
            format!(
                "verifying the rollback to before step {target}: {}",
                waits.join("; ")
            ),
            Verdict::Checking,
        )
    } else {
        (
            format!("rollback to before step {target} verified"),
            Verdict::Passed,
        )
    };
    s.message = Some(message);
    verdict
}

/// The checks of one namespace's rollback. Probes run as at the checkpoint of the last kept
/// step: that checkpoint validated the state the rollback returns to.
fn rollback_outcomes(
    u: &mut Undo<'_, '_>,
    nsp: &NamespacePlan,
    snapshots: &[crate::snapshot::Snapshot],
    started: Timestamp,
) -> Vec<Outcome> {
    let (inp, target) = (u.inp, u.target);
    let attempt = format!("rollback-{}", started.as_second());
    // A rollback of everything keeps no step, so no checkpoint's probes apply.
    let (probe_results, to_start) = target
        .previous()
        .map(|kept| probe_outcomes(inp, &nsp.name, kept, &attempt))
        .unwrap_or_default();
    u.work
        .extend(to_start.into_iter().map(|p| Work::StartProbe(Box::new(p))));
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
    u: &mut Undo<'_, '_>,
    status: &mut MeshMigrationStatus,
    statuses: &mut [NamespaceStatus],
) {
    let target = u.target;
    for s in statuses.iter_mut() {
        s.phase = NamespacePhase::RolledBack;
        s.step = target;
        s.message = Some(format!("rolled back to before step {target}"));
        s.snapshots.retain(|r| r.step < target);
        s.checkpoint_started_at = None;
        if let Some(kept) = target.previous() {
            u.work.push(Work::CleanupProbes {
                namespace: s.name.clone(),
                step: kept,
            });
        }
    }
    for st in Step::range(target.max(Step::ControlPlane), Step::LAST).rev() {
        if st == Step::ControlPlane {
            u.work.push(Work::DeleteSnapshots {
                scope: Scope::Cluster,
                step: Step::ControlPlane,
            });
        } else {
            u.work
                .extend(statuses.iter().map(|s| Work::DeleteSnapshots {
                    scope: Scope::Namespace(s.name.clone()),
                    step: st,
                }));
        }
    }
    if target.is_cluster_wide() {
        u.work.push(Work::DeletePlan);
        status.plan = None;
    }
    if let Some(r) = status.rollback.as_mut() {
        r.completed = true;
    }
    u.events.push(EventNote::rolled_back(target));
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
