//! The Events a decision publishes on the MeshMigration. Each knows the namespace and step it
//! is about as data; its note is rendered from them when it is built.

use meshmig_api::{RequestedBy, Step};

/// An Event to publish on the MeshMigration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventNote {
    /// Warning (true) or Normal.
    pub warning: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// The namespace it is about (`None`: the whole migration).
    pub namespace: Option<String>,
    /// The step it is about, if one.
    pub step: Option<Step>,
    pub note: String,
}

/// "step N (Name)", as notes and messages name a step.
pub(super) fn titled(step: Step) -> String {
    format!("step {step} ({})", step.name())
}

impl EventNote {
    fn of_namespace(
        warning: bool,
        reason: &'static str,
        namespace: &str,
        step: Option<Step>,
        detail: String,
    ) -> Self {
        Self {
            warning,
            reason,
            namespace: Some(namespace.to_string()),
            step,
            note: format!("{namespace}: {detail}"),
        }
    }

    fn of_migration(warning: bool, reason: &'static str, step: Option<Step>, note: String) -> Self {
        Self {
            warning,
            reason,
            namespace: None,
            step,
            note,
        }
    }

    /// Machine-readable action: `Step<N>/<namespace>` for a step of a namespace. The recorder
    /// folds events with the same reason and action into one series, so the action carries
    /// what the event is about.
    pub fn action(&self) -> String {
        match (self.step, &self.namespace) {
            (Some(step), Some(ns)) => format!(
                "Step{}/{}",
                step.number(),
                ns.chars().take(63).collect::<String>()
            ),
            (Some(step), None) => format!("Step{}", step.number()),
            (None, _) => "Reconcile".into(),
        }
    }

    pub(super) fn resumed() -> Self {
        Self::of_migration(
            false,
            "Resumed",
            None,
            "rollback annotation removed: resuming".into(),
        )
    }

    pub(super) fn namespace_deleted(ns: &str, step: Step) -> Self {
        Self::of_namespace(
            true,
            "StepFailed",
            ns,
            Some(step),
            format!("namespace deleted during step {step}"),
        )
    }

    pub(super) fn namespace_missing(ns: &str) -> Self {
        Self::of_namespace(
            true,
            "StepFailed",
            ns,
            None,
            "namespace does not exist".into(),
        )
    }

    pub(super) fn started(ns: &str, step: Step) -> Self {
        let detail = format!("{} started", titled(step));
        Self::of_namespace(false, "StepStarted", ns, Some(step), detail)
    }

    pub(super) fn retried(ns: &str, step: Step, why: &str) -> Self {
        let detail = format!("{} retried ({why})", titled(step));
        Self::of_namespace(false, "StepRetried", ns, Some(step), detail)
    }

    pub(super) fn failed(ns: &str, step: Step, why: &str) -> Self {
        let detail = format!("{} failed: {why}", titled(step));
        Self::of_namespace(true, "StepFailed", ns, Some(step), detail)
    }

    pub(super) fn timed_out(ns: &str, step: Step, pending: &str) -> Self {
        let detail = format!("{} timed out: {pending}", titled(step));
        Self::of_namespace(true, "StepFailed", ns, Some(step), detail)
    }

    pub(super) fn passed(ns: &str, step: Step) -> Self {
        let detail = format!("{} passed", titled(step));
        Self::of_namespace(false, "StepPassed", ns, Some(step), detail)
    }

    pub(super) fn drift_repaired(ns: &str, step: Step, objects: &str) -> Self {
        let detail = format!(
            "step {step}: re-applied objects deleted or changed by someone else: {objects}"
        );
        Self::of_namespace(true, "DriftRepaired", ns, Some(step), detail)
    }

    pub(super) fn undone(ns: &str, step: Step) -> Self {
        let detail = format!("{} undone", titled(step));
        Self::of_namespace(false, "StepUndone", ns, Some(step), detail)
    }

    pub(super) fn not_undone_namespace_deleted(ns: &str, step: Step) -> Self {
        let detail = format!("{} not undone: the namespace was deleted", titled(step));
        Self::of_namespace(true, "StepNotUndone", ns, Some(step), detail)
    }

    pub(super) fn not_undone_snapshot_missing(ns: &str, step: Step, config_map: &str) -> Self {
        let detail = format!(
            "{} cannot be undone: its snapshot ConfigMap {config_map} is missing; its changes are left as they are",
            titled(step)
        );
        Self::of_namespace(true, "StepNotUndone", ns, Some(step), detail)
    }

    pub(super) fn rollback_started(target: Step, by: RequestedBy, reason: Option<&str>) -> Self {
        let note = format!(
            "rolling back to before step {target} ({by}){}",
            reason.map(|r| format!(": {r}")).unwrap_or_default()
        );
        Self::of_migration(true, "RollbackStarted", Some(target), note)
    }

    pub(super) fn rolled_back(target: Step) -> Self {
        let note = format!("rolled back to before step {target}");
        Self::of_migration(false, "RolledBack", Some(target), note)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_action_names_the_step_and_namespace_from_data() {
        let e = EventNote::started("bookinfo", Step::WaypointActivation);
        assert_eq!(e.note, "bookinfo: step 7 (Waypoint activation) started");
        assert_eq!(e.action(), "Step7/bookinfo");
        assert_eq!(
            EventNote::namespace_deleted("a", Step::Policies).action(),
            "Step5/a"
        );
        assert_eq!(EventNote::namespace_missing("a").action(), "Reconcile");
        assert_eq!(EventNote::resumed().action(), "Reconcile");
        assert_eq!(EventNote::rolled_back(Step::ControlPlane).action(), "Step2");
        let long = "n".repeat(70);
        assert_eq!(
            EventNote::passed(&long, Step::FIRST).action(),
            format!("Step1/{}", "n".repeat(63))
        );
    }
}
