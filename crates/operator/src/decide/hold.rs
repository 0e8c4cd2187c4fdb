//! What holds a namespace before a step, or the whole migration: each hold renders the
//! namespace message and the condition it reports, so nothing reads a decision back from a
//! message.

use meshmig_api::names as mn;
use meshmig_api::{NamespaceStatus, Ordering, Step, WindowKind};
use meshmig_planner::plan::NamespacePlan;

use super::{Input, annotation, done_with, waypoint_programmed};

/// Why a namespace (or, for a missing snapshot, the migration) does not go on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hold {
    /// The paused annotation is `"true"`.
    Paused,
    /// The step is in `spec.pauseBefore` and not approved yet.
    AwaitingApproval {
        step: Step,
        /// The MeshMigration, for the command that approves it.
        migration: String,
    },
    /// Namespaces that have not finished the step's barrier step yet.
    Barrier {
        step: Step,
        barrier: Step,
        behind: Vec<String>,
    },
    /// `ordering: Listed`: namespaces listed earlier that have not finished the step.
    Ordering { step: Step, before: Vec<String> },
    /// The waypoint is not ready to take traffic: what is missing.
    WaypointNotProgrammed(String),
    /// The step opens an unaccepted fail-open window.
    FailOpen {
        step: Step,
        policy: String,
        service: String,
        why: String,
    },
    /// Snapshot ConfigMaps (`namespace/name`) of applied steps are gone: nothing proceeds
    /// past what could no longer be undone.
    SnapshotMissing { missing: Vec<String> },
}

impl Hold {
    /// Whether the hold waits for the user (the migration reports Paused).
    pub fn pauses(&self) -> bool {
        matches!(self, Hold::Paused | Hold::AwaitingApproval { .. })
    }

    /// The reason of the condition the hold sets.
    pub fn reason(&self) -> &'static str {
        match self {
            Hold::Paused => "PausedByAnnotation",
            Hold::AwaitingApproval { .. } => "AwaitingApproval",
            Hold::Barrier { .. } => "Barrier",
            Hold::Ordering { .. } => "Ordering",
            Hold::WaypointNotProgrammed(_) => "WaypointNotProgrammed",
            Hold::FailOpen { .. } => "FailOpenWindow",
            Hold::SnapshotMissing { .. } => "SnapshotMissing",
        }
    }

    /// The message of the condition the hold sets.
    pub fn condition_message(&self) -> String {
        match self {
            Hold::Paused => format!("{} is \"true\"", mn::ANNOTATION_PAUSED),
            Hold::SnapshotMissing { missing } => format!(
                "snapshot ConfigMap(s) missing: {}; meshmig does not proceed past what it cannot undo",
                missing.join(", ")
            ),
            _ => self.message(),
        }
    }

    /// The message of a held namespace.
    pub fn message(&self) -> String {
        match self {
            Hold::Paused => format!(
                "paused by the {} annotation; remove it to resume",
                mn::ANNOTATION_PAUSED
            ),
            Hold::AwaitingApproval { step, migration } => format!(
                "step {step} ({}) waits for approval: kubectl annotate meshmigration {migration} {}={step} --overwrite",
                step.name(),
                mn::ANNOTATION_APPROVE
            ),
            Hold::Barrier {
                step,
                barrier,
                behind,
            } => format!(
                "barrier: step {step} starts when every namespace finished step {barrier}; waiting for {}",
                behind.join(", ")
            ),
            Hold::Ordering { step, before } => format!(
                "ordering: step {step} runs one namespace at a time; waiting for {}",
                before.join(", ")
            ),
            Hold::WaypointNotProgrammed(why) => why.clone(),
            Hold::FailOpen {
                step,
                policy,
                service,
                why,
            } => format!(
                "step {step} would open a fail-open window for {policy} on Service {service} ({why}); accept `enforcement-fail-open@{policy}` in spec.acceptedFindings or change the plan"
            ),
            Hold::SnapshotMissing { missing } => format!(
                "held: snapshot ConfigMap {} is missing, so meshmig could no longer undo that step; restore it (e.g. from a backup) to continue, or roll back with {}: all (steps without a snapshot are then left as they are)",
                missing.join(", "),
                mn::ANNOTATION_ROLLBACK
            ),
        }
    }
}

/// What holds a namespace before it starts `step`, if anything.
pub(super) fn gate(
    inp: &Input<'_>,
    statuses: &[NamespaceStatus],
    ns: &NamespacePlan,
    step: Step,
) -> Option<Hold> {
    user_hold(inp, step)
        .or_else(|| barrier(statuses, step))
        .or_else(|| ordering(inp, statuses, ns, step))
        .or_else(|| {
            (step == Step::WaypointActivation)
                .then(|| waypoint_programmed(inp.live, ns).err())
                .flatten()
                .map(Hold::WaypointNotProgrammed)
        })
        .or_else(|| fail_open(inp, ns, step))
}

fn user_hold(inp: &Input<'_>, step: Step) -> Option<Hold> {
    let mm = inp.mm;
    if annotation(mm, mn::ANNOTATION_PAUSED) == Some("true") {
        return Some(Hold::Paused);
    }
    let approved = annotation(mm, mn::ANNOTATION_APPROVE) == Some(&step.to_string());
    (mm.spec.pause_before.contains(&step) && !approved).then(|| Hold::AwaitingApproval {
        step,
        migration: mm.metadata.name.clone().unwrap_or_default(),
    })
}

fn barrier(statuses: &[NamespaceStatus], step: Step) -> Option<Hold> {
    let barrier = step.barrier()?;
    let behind: Vec<String> = statuses
        .iter()
        .filter(|s| !done_with(s, barrier))
        .map(|s| s.name.clone())
        .collect();
    (!behind.is_empty()).then_some(Hold::Barrier {
        step,
        barrier,
        behind,
    })
}

fn ordering(
    inp: &Input<'_>,
    statuses: &[NamespaceStatus],
    ns: &NamespacePlan,
    step: Step,
) -> Option<Hold> {
    if !step.restarts_workloads() || inp.mm.spec.ordering.unwrap_or_default() != Ordering::Listed {
        return None;
    }
    let order = &inp.plan.namespace_order;
    let pos = order.iter().position(|n| *n == ns.name).unwrap_or(0);
    let before: Vec<String> = order[..pos]
        .iter()
        .filter(|n| {
            statuses
                .iter()
                .any(|s| s.name == **n && !done_with(s, step))
        })
        .cloned()
        .collect();
    (!before.is_empty()).then_some(Hold::Ordering { step, before })
}

/// An unaccepted fail-open window that entering `step` would open in a namespace.
fn fail_open(inp: &Input<'_>, ns: &NamespacePlan, step: Step) -> Option<Hold> {
    let accepted = &inp.mm.spec.accepted_findings;
    ns.enforcement.iter().find_map(|e| {
        let f = meshmig_planner::Finding::new(
            meshmig_planner::findings::ENFORCEMENT_FAIL_OPEN,
            e.policy.clone(),
            "",
        );
        e.windows
            .iter()
            .filter(|w| w.kind == WindowKind::FailOpen)
            .filter(|w| w.from_step <= step && step <= w.to_step)
            .find(|_| !accepted.iter().any(|a| f.matches_acceptance(a)))
            .map(|w| Hold::FailOpen {
                step,
                policy: e.policy.to_string(),
                service: e.service.clone(),
                why: w.reason.clone(),
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_user_holds_pause_and_each_renders_its_condition() {
        let approval = Hold::AwaitingApproval {
            step: Step::WaypointActivation,
            migration: "m".into(),
        };
        assert!(Hold::Paused.pauses() && approval.pauses());
        assert_eq!(
            approval.message(),
            "step 7 (Waypoint activation) waits for approval: kubectl annotate meshmigration m meshmig.io/approve=7 --overwrite"
        );
        assert_eq!(approval.condition_message(), approval.message());
        assert_eq!(Hold::Paused.reason(), "PausedByAnnotation");
        assert_eq!(
            Hold::Paused.condition_message(),
            "meshmig.io/paused is \"true\""
        );
        let barrier = Hold::Barrier {
            step: Step::WaypointActivation,
            barrier: Step::AmbientEnrollment,
            behind: vec!["a".into(), "b".into()],
        };
        assert!(!barrier.pauses());
        assert_eq!(
            barrier.message(),
            "barrier: step 7 starts when every namespace finished step 6; waiting for a, b"
        );
        let missing = Hold::SnapshotMissing {
            missing: vec!["ns/cm".into()],
        };
        assert!(!missing.pauses());
        assert_eq!(missing.reason(), "SnapshotMissing");
        assert!(
            missing
                .message()
                .starts_with("held: snapshot ConfigMap ns/cm is missing")
        );
    }
}
