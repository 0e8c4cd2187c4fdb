//! The migration's phase, conditions and summary fields, from its namespaces' states.

use std::collections::BTreeMap;

use meshmig_api::names as mn;
use meshmig_api::{
    FindingRef, MeshMigrationStatus, MigrationPhase, NamespacePhase, NamespaceStatus, Step,
};
use meshmig_planner::Severity;

use super::events::EventNote;
use super::hold::Hold;
use super::{Decision, Input, Scope, Work, annotation, time};
use crate::conditions::{self, Desired};

/// The approve value that retries the first failed namespace's step.
fn retry_value(namespaces: &[NamespaceStatus], failed: &[&NamespaceStatus]) -> String {
    failed.first().map_or_else(
        || "<step>".to_string(),
        |s| meshmig_api::approval_value(namespaces, s.step),
    )
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

/// What a decision did besides the status: handed to [`finish`].
pub(super) struct Progress {
    pub work: Vec<Work>,
    pub events: Vec<EventNote>,
    /// Whether more progress is possible right away.
    pub more: bool,
    /// Whether a checkpoint waits for a timeout.
    pub waiting_on_time: bool,
    /// Held namespaces, by name.
    pub holds: BTreeMap<String, Hold>,
}

impl Progress {
    pub fn new(work: Vec<Work>, events: Vec<EventNote>, more: bool, waiting_on_time: bool) -> Self {
        Self {
            work,
            events,
            more,
            waiting_on_time,
            holds: BTreeMap::new(),
        }
    }
}

/// Overall phase, conditions and summary fields.
pub(super) fn finish(
    inp: &Input<'_>,
    old: &MeshMigrationStatus,
    mut status: MeshMigrationStatus,
    p: Progress,
) -> Decision {
    summarize(inp, &mut status);
    let ns = &status.namespaces;
    let paused_annotation = annotation(inp.mm, mn::ANNOTATION_PAUSED) == Some("true");
    // The first namespace a user hold keeps waiting names the Paused condition.
    let awaiting = ns
        .iter()
        .filter(|s| s.phase == NamespacePhase::Waiting)
        .find_map(|s| p.holds.get(&s.name).filter(|h| h.pauses()));
    let rolled = status.rollback.as_ref().is_some_and(|r| r.completed);
    let phase = migration_phase(ns, rolled, paused_annotation, awaiting.is_some());
    let pause = if paused_annotation {
        Some(Hold::Paused)
    } else {
        awaiting.cloned()
    };
    let mut desired = phase_conditions(phase, &status).to_vec();
    desired.push(paused_condition(pause.as_ref()));
    desired.push(rolled_back_condition(&status));
    status.phase = Some(phase);
    let now = time(inp.now);
    status.conditions =
        conditions::merge(&old.conditions, &desired, inp.mm.metadata.generation, &now);
    Decision {
        status,
        work: dedupe_cluster_work(p.work),
        events: p.events,
        more: p.more,
        waiting_on_time: p.waiting_on_time,
        evaluated: Vec::new(),
    }
}

/// Progress, the current step and the open findings.
fn summarize(inp: &Input<'_>, status: &mut MeshMigrationStatus) {
    let ns = &status.namespaces;
    let total = ns.len();
    let done = completed(ns);
    status.progress = Some(format!("{done}/{total}"));
    status.current_step = ns
        .iter()
        .filter(|s| s.phase != NamespacePhase::Completed)
        .map(|s| s.step)
        .min()
        .or_else(|| (total > 0).then_some(Step::LAST));
    status.open_findings = open_findings(inp);
}

fn completed(ns: &[NamespaceStatus]) -> usize {
    ns.iter()
        .filter(|s| s.phase == NamespacePhase::Completed)
        .count()
}

fn migration_phase(
    ns: &[NamespaceStatus],
    rolled: bool,
    paused_annotation: bool,
    awaiting: bool,
) -> MigrationPhase {
    let all_done = !ns.is_empty() && completed(ns) == ns.len();
    let started = ns
        .iter()
        .any(|s| s.step > Step::Prerequisites || s.phase != NamespacePhase::Waiting);
    let only_waiting = ns
        .iter()
        .all(|s| s.phase == NamespacePhase::Waiting || s.phase == NamespacePhase::Completed);
    if all_done {
        MigrationPhase::Completed
    } else if ns.iter().any(|s| s.phase == NamespacePhase::RollingBack) {
        MigrationPhase::RollingBack
    } else if rolled {
        MigrationPhase::RolledBack
    } else if ns.iter().any(|s| s.phase == NamespacePhase::Failed) {
        MigrationPhase::Failed
    } else if paused_annotation || (awaiting && only_waiting) {
        MigrationPhase::Paused
    } else if started {
        MigrationPhase::Progressing
    } else {
        MigrationPhase::Pending
    }
}

/// The kstatus triple (Ready, Reconciling, Stalled) of a phase: one reason, each its own
/// status and message.
struct Kstatus {
    reason: &'static str,
    ready: (bool, String),
    reconciling: (bool, String),
    stalled: (bool, String),
}

impl Kstatus {
    fn desired(self) -> [Desired; 3] {
        [
            Desired::new(mn::CONDITION_READY, self.ready.0, self.reason, self.ready.1),
            Desired::new(
                mn::CONDITION_RECONCILING,
                self.reconciling.0,
                self.reason,
                self.reconciling.1,
            ),
            Desired::new(
                mn::CONDITION_STALLED,
                self.stalled.0,
                self.reason,
                self.stalled.1,
            ),
        ]
    }
}

/// "ns: step N Phase — message" for each namespace.
fn summary(ns: &[&NamespaceStatus]) -> String {
    ns.iter()
        .map(|s| {
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
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn phase_conditions(phase: MigrationPhase, status: &MeshMigrationStatus) -> [Desired; 3] {
    let ns = &status.namespaces;
    let all: Vec<&NamespaceStatus> = ns.iter().collect();
    let (done, total) = (completed(ns), ns.len());
    let k = |reason, ready: &str, reconciling: (bool, String), stalled: &str| Kstatus {
        reason,
        ready: (false, ready.to_string()),
        reconciling,
        stalled: (false, stalled.to_string()),
    };
    let kstatus = match phase {
        MigrationPhase::Completed => Kstatus {
            ready: (true, format!("{total} namespace(s) migrated to ambient")),
            ..k(
                "Completed",
                "",
                (false, "nothing left to do".into()),
                "nothing left to do",
            )
        },
        MigrationPhase::Failed => failed_conditions(ns),
        MigrationPhase::RolledBack => {
            let target = status
                .rollback
                .as_ref()
                .map(|r| r.target)
                .unwrap_or(Step::Prerequisites);
            let ready = format!("rolled back to before step {target}");
            k(
                "RolledBack",
                &ready,
                (false, "rollback complete".into()),
                "rollback complete",
            )
        }
        MigrationPhase::RollingBack => k(
            "RollingBack",
            "undoing steps",
            (true, summary(&all)),
            "undoing steps",
        ),
        MigrationPhase::Paused => k("Paused", "paused", (false, "paused".into()), "paused"),
        _ => {
            let ready = format!("{done}/{total} namespace(s) migrated");
            k("Progressing", &ready, (true, summary(&all)), "progressing")
        }
    };
    kstatus.desired()
}

fn failed_conditions(ns: &[NamespaceStatus]) -> Kstatus {
    let failed: Vec<&NamespaceStatus> = ns
        .iter()
        .filter(|s| s.phase == NamespacePhase::Failed)
        .collect();
    let stalled = summary(&failed);
    Kstatus {
        reason: "CheckpointFailed",
        ready: (false, stalled.clone()),
        reconciling: (
            false,
            "waiting for the user: fix, then approve the step again, or roll back".into(),
        ),
        stalled: (
            true,
            format!(
                "{stalled}. Fix the cause and retry with `{}: \"{}\"`, or roll back with `{}: all`",
                mn::ANNOTATION_APPROVE,
                retry_value(ns, &failed),
                mn::ANNOTATION_ROLLBACK
            ),
        ),
    }
}

fn paused_condition(pause: Option<&Hold>) -> Desired {
    match pause {
        Some(h) => Desired::new(
            mn::CONDITION_PAUSED,
            true,
            h.reason(),
            h.condition_message(),
        ),
        None => Desired::new(mn::CONDITION_PAUSED, false, "NotPaused", "not paused"),
    }
}

fn rolled_back_condition(status: &MeshMigrationStatus) -> Desired {
    match status.rollback.as_ref().filter(|r| r.completed) {
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
    }
}
