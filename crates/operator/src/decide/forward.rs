//! The forward run: each namespace's phase decides a [`Transition`], applied at once so the
//! namespaces after it in the same round see it, until a round changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::jiff::SignedDuration;
use meshmig_api::names as mn;
use meshmig_api::{
    CheckResult, NamespacePhase, NamespaceStatus, OnFailure, SnapshotRef, Step, StepRecord,
};
use meshmig_planner::plan::{Action, NamespacePlan, Op};

use super::events::{EventNote, titled};
use super::hold::{Hold, gate};
use super::{
    Input, Scope, Work, approval, changed_since_plan, checks_status, drift, parse_duration,
    probe_outcomes, restart_token, scope_of, step_actions, time,
};
use crate::checks::{self, CheckInput, Outcome};

/// Rounds after which a decision stops and lets the next reconcile go on.
const MAX_ROUNDS: usize = 20;

/// What the namespace does after its transition.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Next {
    /// Nothing changed; it waits for a change in the cluster or the spec.
    Stay,
    /// Nothing changed; a checkpoint also waits for its timeout.
    StayTimed,
    /// Its state changed: another round may take it further.
    Moved,
    /// It moved to Validating: the act layer carries out its step before it is checked.
    Acting,
    /// `onFailure: Rollback`: the whole migration rolls back, for this reason.
    RollBack(Option<String>),
}

/// One namespace's transition in one round.
struct Transition {
    status: NamespaceStatus,
    next: Next,
    hold: Option<Hold>,
    work: Vec<Work>,
    events: Vec<EventNote>,
    evaluated: Option<(Step, Vec<Outcome>)>,
}

impl Transition {
    fn new(status: NamespaceStatus, next: Next) -> Self {
        Self {
            status,
            next,
            hold: None,
            work: Vec::new(),
            events: Vec::new(),
            evaluated: None,
        }
    }

    fn event(mut self, e: EventNote) -> Self {
        self.events.push(e);
        self
    }
}

/// What one namespace's phase sees.
struct View<'a, 'i> {
    inp: &'a Input<'i>,
    statuses: &'a [NamespaceStatus],
    index: usize,
    nsp: &'a NamespacePlan,
    /// Work decided so far in this decision.
    work: &'a [Work],
}

impl View<'_, '_> {
    fn status(&self) -> &NamespaceStatus {
        &self.statuses[self.index]
    }

    fn name(&self) -> &str {
        &self.status().name
    }

    fn step(&self) -> Step {
        self.status().step
    }
}

/// The state of a forward run.
pub(super) struct Forward {
    pub statuses: Vec<NamespaceStatus>,
    /// The hold of each namespace held at its last evaluation.
    pub holds: BTreeMap<String, Hold>,
    pub work: Vec<Work>,
    pub events: Vec<EventNote>,
    pub evaluated: Vec<(Step, Vec<Outcome>)>,
    pub more: bool,
    pub waiting_on_time: bool,
}

/// How a forward run ended.
pub(super) enum End {
    Done(Forward),
    /// A failed namespace asks for a rollback of everything.
    RollBack {
        statuses: Vec<NamespaceStatus>,
        events: Vec<EventNote>,
        reason: Option<String>,
    },
}

/// Runs rounds of transitions until one changes nothing (or [`MAX_ROUNDS`]).
pub(super) fn run(
    inp: &Input<'_>,
    statuses: Vec<NamespaceStatus>,
    events: Vec<EventNote>,
    more: bool,
) -> End {
    let mut f = Forward {
        statuses,
        holds: BTreeMap::new(),
        work: Vec::new(),
        events,
        evaluated: Vec::new(),
        more,
        waiting_on_time: false,
    };
    let mut busy: BTreeSet<String> = BTreeSet::new();
    for _round in 0..MAX_ROUNDS {
        let mut changed = false;
        for i in 0..f.statuses.len() {
            let name = f.statuses[i].name.clone();
            if busy.contains(&name) {
                continue;
            }
            let Some(nsp) = inp.plan.namespace(&name) else {
                continue;
            };
            let view = View {
                inp,
                statuses: &f.statuses,
                index: i,
                nsp,
                work: &f.work,
            };
            let t = transition(&view);
            match f.apply(i, t) {
                Next::Stay | Next::StayTimed => {}
                Next::Moved => changed = true,
                Next::Acting => {
                    busy.insert(name);
                    changed = true;
                }
                Next::RollBack(reason) => {
                    return End::RollBack {
                        statuses: f.statuses,
                        events: f.events,
                        reason,
                    };
                }
            }
        }
        if !changed {
            break;
        }
        f.more = true;
    }
    // Namespaces that moved to Validating need the act layer first.
    if !busy.is_empty() {
        f.more = true;
    }
    End::Done(f)
}

impl Forward {
    fn apply(&mut self, i: usize, t: Transition) -> Next {
        if t.next == Next::StayTimed {
            self.waiting_on_time = true;
        }
        match t.hold {
            Some(h) => self.holds.insert(t.status.name.clone(), h),
            None => self.holds.remove(&t.status.name),
        };
        self.statuses[i] = t.status;
        self.work.extend(t.work);
        self.events.extend(t.events);
        self.evaluated.extend(t.evaluated);
        t.next
    }
}

fn transition(v: &View<'_, '_>) -> Transition {
    match v.status().phase {
        NamespacePhase::Completed | NamespacePhase::RolledBack | NamespacePhase::RollingBack => {
            Transition::new(v.status().clone(), Next::Stay)
        }
        NamespacePhase::Failed => failed(v),
        NamespacePhase::Waiting => waiting(v),
        NamespacePhase::Applying => applying(v),
        NamespacePhase::Validating => validating(v),
    }
}

fn record_start(s: &mut NamespaceStatus, step: Step, now: k8s_openapi::jiff::Timestamp) {
    s.history.retain(|h| h.step != step);
    s.history.push(StepRecord {
        step,
        started_at: time(now),
        completed_at: None,
    });
}

fn fail(v: &View<'_, '_>, s: &mut NamespaceStatus, message: String) {
    s.phase = NamespacePhase::Failed;
    s.failed_generation = v.inp.mm.metadata.generation;
    s.message = Some(message);
}

/// A failed step is retried once approved (again) or once the spec changed; otherwise it
/// waits, or rolls everything back with `onFailure: Rollback`.
fn failed(v: &View<'_, '_>) -> Transition {
    let (mm, step) = (v.inp.mm, v.step());
    let current = v.status();
    let approved = approval(mm).is_some_and(|a| a.step == step && a.count > current.retries);
    let respecified = matches!(
        (mm.metadata.generation, current.failed_generation),
        (Some(g), Some(f)) if g > f
    );
    if !approved && !respecified {
        let next = if mm.spec.on_failure == Some(OnFailure::Rollback) {
            Next::RollBack(current.message.clone())
        } else {
            Next::Stay
        };
        return Transition::new(current.clone(), next);
    }
    let mut s = current.clone();
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
    record_start(&mut s, step, v.inp.now);
    Transition::new(s, Next::Moved).event(EventNote::retried(v.name(), step, why))
}

/// A namespace waiting for a step starts it unless a [`Hold`] keeps it.
fn waiting(v: &View<'_, '_>) -> Transition {
    let (inp, step, name) = (v.inp, v.step(), v.name());
    let mut s = v.status().clone();
    if step == Step::Prerequisites && !v.nsp.exists {
        let message =
            format!("Namespace {name} does not exist; create it or remove it from spec.namespaces");
        fail(v, &mut s, message);
        return Transition::new(s, Next::Moved).event(EventNote::namespace_missing(name));
    }
    if let Some(hold) = gate(inp, v.statuses, v.nsp, step) {
        s.message = Some(hold.message());
        let mut t = Transition::new(s, Next::Stay);
        t.hold = Some(hold);
        return t;
    }
    // The approval that released the step is spent: a failure of it waits for "<step>/2",
    // not for the left-over one.
    if inp.mm.spec.pause_before.contains(&step) {
        s.retries = s.retries.max(1);
    }
    s.phase = NamespacePhase::Applying;
    s.message = Some(format!("applying {}", titled(step)));
    s.checks.clear();
    record_start(&mut s, step, inp.now);
    Transition::new(s, Next::Moved).event(EventNote::started(name, step))
}

/// Step 2 changes the shared control plane and is listed in every namespace's plan: once one
/// namespace applied it (this round or earlier), the others only validate it.
fn control_plane_applied(v: &View<'_, '_>) -> bool {
    let executed = v.work.iter().any(|w| {
        matches!(
            w,
            Work::Execute {
                scope: Scope::Cluster,
                step: Step::ControlPlane,
                ..
            }
        )
    });
    executed
        || v.statuses.iter().enumerate().any(|(j, o)| {
            j != v.index
                && (o.step > Step::ControlPlane
                    || (o.step == Step::ControlPlane && o.phase == NamespacePhase::Validating))
        })
}

/// The actions carried out on entering a step: those after the rollout wait for it, and
/// restarts carry this run's token.
fn actions_now(all: &[Action], token: &str) -> Vec<Action> {
    all.iter()
        .filter(|a| !a.after_rollout)
        .cloned()
        .map(|mut a| {
            if a.op == Op::Restart {
                a.value = Some(token.to_string());
            }
            a
        })
        .collect()
}

/// An applying namespace snapshots and carries out its step, then validates it; an object
/// changed since the plan was frozen fails the step instead.
fn applying(v: &View<'_, '_>) -> Transition {
    let (inp, step, name) = (v.inp, v.step(), v.name());
    let mut s = v.status().clone();
    let all_actions = step_actions(v.nsp, step);
    let edited = changed_since_plan(inp, &all_actions);
    if !edited.is_empty() {
        let why = format!(
            "{} changed since the plan was frozen, so what replaces it no longer matches; revert the change, or roll back ({}: all) and apply the MeshMigration again to plan anew",
            edited.join(", "),
            mn::ANNOTATION_ROLLBACK
        );
        fail(v, &mut s, format!("{} failed: {why}", titled(step)));
        return Transition::new(s, Next::Moved).event(EventNote::failed(name, step, &why));
    }
    let scope = scope_of(step, name);
    let mut work = Vec::new();
    if !all_actions.is_empty() {
        if step != Step::ControlPlane || !control_plane_applied(v) {
            let actions = actions_now(&all_actions, &restart_token(inp.run_token, step));
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
        record_snapshot(inp, &mut s, &scope, step);
    }
    s.phase = NamespacePhase::Validating;
    s.checkpoint_started_at = Some(time(inp.now));
    s.message = Some(format!("validating {}", titled(step)));
    let mut t = Transition::new(s, Next::Acting);
    t.work = work;
    t
}

fn record_snapshot(inp: &Input<'_>, s: &mut NamespaceStatus, scope: &Scope, step: Step) {
    if s.snapshots.iter().any(|r| r.step == step) {
        return;
    }
    let migration = inp.mm.metadata.name.as_deref().unwrap_or_default();
    let namespace = scope
        .namespace()
        .filter(|n| !n.is_empty())
        .unwrap_or(inp.operator_namespace);
    s.snapshots.push(SnapshotRef {
        step,
        namespace: namespace.to_string(),
        config_map: crate::snapshot::config_map_name(migration, step),
        parts: 1,
    });
}

/// A validating namespace repairs drift, runs its checkpoint and passes, fails, times out
/// or keeps waiting.
fn validating(v: &View<'_, '_>) -> Transition {
    let mut t = Transition::new(v.status().clone(), Next::Stay);
    repair_drift(v, &mut t);
    let outcomes = checkpoint(v, &mut t.work);
    t.status.checks = checks_status(&v.status().checks, &outcomes, v.inp.now);
    t.evaluated = Some((v.step(), outcomes.clone()));
    let listed = |r: CheckResult| {
        outcomes
            .iter()
            .filter(|o| o.result == r)
            .map(|o| format!("{}: {}", o.name, o.message))
            .collect::<Vec<_>>()
    };
    let (failed, pending) = (listed(CheckResult::Fail), listed(CheckResult::Pending));
    if !failed.is_empty() {
        checkpoint_failed(v, t, &failed.join("; "))
    } else if pending.is_empty() {
        checkpoint_passed(v, t)
    } else if checkpoint_elapsed(v) > checkpoint_timeout(v.inp) {
        checkpoint_timed_out(v, t, &pending.join("; "))
    } else {
        t.status.message = Some(format!(
            "validating {}: {}",
            titled(v.step()),
            pending.join("; ")
        ));
        t.next = Next::StayTimed;
        t
    }
}

/// Objects of earlier steps that someone else deleted or changed are applied again.
fn repair_drift(v: &View<'_, '_>, t: &mut Transition) {
    let (step, name) = (v.step(), v.name());
    let repairs = drift(v.inp, v.nsp, step);
    if repairs.is_empty() {
        return;
    }
    let objects = repairs
        .iter()
        .map(|a| a.object.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    t.events
        .push(EventNote::drift_repaired(name, step, &objects));
    t.work.push(Work::Execute {
        scope: scope_of(step, name),
        step,
        actions: repairs,
    });
}

/// The checks of the namespace's checkpoint; probes to start and, once step 9's rollouts
/// finished, its after-rollout actions go to `work`.
fn checkpoint(v: &View<'_, '_>, work: &mut Vec<Work>) -> Vec<Outcome> {
    let (inp, step, name) = (v.inp, v.step(), v.name());
    let attempt = v
        .status()
        .checkpoint_started_at
        .as_ref()
        .map(|t| t.0.as_second().to_string())
        .unwrap_or_default();
    let (probe_results, to_start) = probe_outcomes(inp, name, step, &attempt);
    work.extend(to_start.into_iter().map(|p| Work::StartProbe(Box::new(p))));
    let token = restart_token(inp.run_token, step);
    let mut input = CheckInput {
        spec: &inp.mm.spec,
        plan: inp.plan,
        ns: v.nsp,
        live: inp.live,
        restart_token: &token,
        probes: probe_results,
        after_rollout_done: false,
    };
    let outcomes = checks::evaluate(step, &input);
    if step != Step::SidecarRemoval || !checks::rollout_done(&outcomes) {
        return outcomes;
    }
    let after: Vec<Action> = step_actions(v.nsp, Step::SidecarRemoval)
        .into_iter()
        .filter(|a| a.after_rollout)
        .collect();
    if !after.is_empty() {
        work.push(Work::Execute {
            scope: scope_of(Step::SidecarRemoval, name),
            step: Step::SidecarRemoval,
            actions: after,
        });
    }
    input.after_rollout_done = true;
    checks::evaluate(step, &input)
}

fn checkpoint_timeout(inp: &Input<'_>) -> SignedDuration {
    parse_duration(&inp.mm.spec.checkpoints.timeout).unwrap_or(SignedDuration::from_mins(10))
}

fn checkpoint_elapsed(v: &View<'_, '_>) -> SignedDuration {
    v.status()
        .checkpoint_started_at
        .as_ref()
        .map(|t| v.inp.now.duration_since(t.0))
        .unwrap_or(SignedDuration::ZERO)
}

fn checkpoint_failed(v: &View<'_, '_>, mut t: Transition, failed: &str) -> Transition {
    let (step, name) = (v.step(), v.name());
    fail(
        v,
        &mut t.status,
        format!("{} failed: {failed}", titled(step)),
    );
    t.next = Next::Moved;
    t.event(EventNote::failed(name, step, failed))
}

/// Checks still pending past the checkpoint timeout fail the step.
fn checkpoint_timed_out(v: &View<'_, '_>, mut t: Transition, pending: &str) -> Transition {
    let (inp, step, name) = (v.inp, v.step(), v.name());
    let timeout = &inp.mm.spec.checkpoints.timeout;
    for c in t
        .status
        .checks
        .iter_mut()
        .filter(|c| c.result == CheckResult::Pending)
    {
        c.result = CheckResult::Fail;
        c.message = format!("still pending after {timeout}: {}", c.message);
        c.last_transition_time = Some(time(inp.now));
    }
    let message = format!("{} timed out after {timeout}: {pending}", titled(step));
    fail(v, &mut t.status, message);
    t.next = Next::Moved;
    t.event(EventNote::timed_out(name, step, pending))
}

/// Every check passed: the namespace goes on to the next step, or is migrated.
fn checkpoint_passed(v: &View<'_, '_>, mut t: Transition) -> Transition {
    let (inp, step, name) = (v.inp, v.step(), v.name());
    let s = &mut t.status;
    if let Some(h) = s.history.iter_mut().find(|h| h.step == step) {
        h.completed_at = Some(time(inp.now));
    }
    s.retries = 0;
    s.checkpoint_started_at = None;
    match step.next() {
        None => {
            s.phase = NamespacePhase::Completed;
            s.message = Some("migrated to ambient".into());
        }
        Some(next) => {
            s.step = next;
            s.phase = NamespacePhase::Waiting;
            s.message = None;
        }
    }
    t.work.push(Work::CleanupProbes {
        namespace: name.to_string(),
        step,
    });
    t.next = Next::Moved;
    t.event(EventNote::passed(name, step))
}
