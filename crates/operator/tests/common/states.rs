//! The state of bookinfo at each step of a fresh, undisturbed run, and what a rollback to
//! before some step must leave: the Pods' mesh state and the namespace's objects.

use std::collections::BTreeMap;

use meshmig_api::names as mn;
use meshmig_api::{CheckResult, MigrationPhase, NamespacePhase, Step};
use serde_json::{Value, json};

use super::{Rig, phase};

pub const NS: &str = "bookinfo";
/// Every step that can be held for approval.
pub const HELD: [Step; 7] = [
    Step::HboneSidecars,
    Step::Waypoints,
    Step::Policies,
    Step::AmbientEnrollment,
    Step::WaypointActivation,
    Step::PolicySimplification,
    Step::SidecarRemoval,
];

/// The reference states: before each step from 2 on, and once the migration completed.
pub struct References {
    pub before: BTreeMap<Step, State>,
    pub completed: State,
}

impl std::ops::Index<&Step> for References {
    type Output = State;

    fn index(&self, step: &Step) -> &State {
        &self.before[step]
    }
}

/// What a rollback to before some step must reproduce.
#[derive(Clone, Debug, PartialEq)]
pub struct State {
    pub pods: BTreeMap<String, Vec<Value>>,
    pub objects: BTreeMap<String, Value>,
}

/// The state once rollouts settled.
pub async fn state(rig: &Rig) -> State {
    rig.wait_settled(NS).await;
    State {
        pods: rig.pod_mesh_state(NS).await,
        objects: rig.namespace_state(NS).await,
    }
}

/// Whether a rollback to before `target` may leave HBONE sidecars where the fresh run had
/// plain ones. Before step 3 the control plane already runs ambient, so any Pod recreated
/// then (step 3's undo restores its restart annotation: a rollout) gets a sidecar that
/// speaks HBONE, where the fresh run's Pods, never restarted, have plain ones. Both are
/// sidecars that admit the same callers.
pub fn any_hbone(target: Step) -> bool {
    target == Step::HboneSidecars
}

pub async fn assert_state(rig: &Rig, want: &State, what: &str) {
    assert_state_as(rig, want, what, false).await;
}

/// Compares the state with `want`; with `any_hbone`, without the HBONE tunnel label.
pub async fn assert_state_as(rig: &Rig, want: &State, what: &str, any_hbone: bool) {
    let strip = |pods: &BTreeMap<String, Vec<Value>>| {
        let mut pods = pods.clone();
        if any_hbone {
            for p in pods.values_mut().flatten() {
                p.as_object_mut().unwrap().remove("tunnel");
            }
        }
        pods
    };
    let got = state(rig).await;
    pretty_assertions::assert_eq!(
        strip(&got.pods),
        strip(&want.pods),
        "{what}: Pod-level mesh state differs"
    );
    pretty_assertions::assert_eq!(got.objects, want.objects, "{what}: objects differ");
}

pub async fn hold_before(rig: &Rig, name: &str, step: Step) {
    rig.wait_mm(name, &format!("held before step {step}"), 180, |mm| {
        mm.status
            .as_ref()
            .and_then(|s| s.namespaces.first())
            .is_some_and(|n| n.step == step && n.phase == NamespacePhase::Waiting)
    })
    .await;
}

pub async fn completed(rig: &Rig, name: &str) {
    rig.wait_mm(name, "Completed", 240, |mm| {
        phase(mm) == Some(MigrationPhase::Completed)
    })
    .await;
}

/// The rollback annotation's value for a target (`all` for 1).
pub fn rollback_value(target: Step) -> String {
    if target <= Step::Prerequisites {
        mn::ROLLBACK_ALL.to_string()
    } else {
        target.to_string()
    }
}

/// Waits until a requested rollback is reported, and checks it is reported only with every
/// check of its checkpoint passed.
pub async fn rolled_back(rig: &Rig, name: &str, target: Step, secs: u64) {
    let mm = rig
        .wait_mm(name, &format!("rolled back to {target}"), secs, |mm| {
            // The target too: a rollback extended from an earlier one starts RolledBack.
            phase(mm) == Some(MigrationPhase::RolledBack)
                && mm
                    .status
                    .as_ref()
                    .and_then(|s| s.rollback.as_ref())
                    .is_some_and(|r| r.completed && r.target == target.max(Step::Prerequisites))
        })
        .await;
    let status = mm.status.unwrap();
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == mn::CONDITION_ROLLED_BACK && c.status == "True"),
        "{:?}",
        status.conditions
    );
    for ns in &status.namespaces {
        assert!(
            !ns.checks.is_empty() && ns.checks.iter().all(|c| c.result == CheckResult::Pass),
            "rollback to {target}: {:?}",
            ns.checks
        );
    }
}

/// Requests a rollback to before `target` and waits until it is reported.
pub async fn roll_back(rig: &Rig, name: &str, target: Step) {
    rig.annotate(name, mn::ANNOTATION_ROLLBACK, Some(&rollback_value(target)))
        .await;
    rolled_back(rig, name, target, 240).await;
}

/// Removes the rollback annotation: a partial rollback resumes forward.
pub async fn resume(rig: &Rig, name: &str) {
    rig.annotate(name, mn::ANNOTATION_ROLLBACK, None).await;
}

/// A fresh undisturbed run held before every step: the state before each step from 2 on,
/// and the completed migration's. It ends rolled back (the caller deletes it).
pub async fn reference(rig: &Rig, name: &str) -> References {
    let mut out = BTreeMap::new();
    out.insert(Step::ControlPlane, state(rig).await);
    rig.apply_migration(name, json!({"pauseBefore": HELD}))
        .await;
    for next in HELD {
        hold_before(rig, name, next).await;
        out.insert(next, state(rig).await);
        rig.annotate(name, mn::ANNOTATION_APPROVE, Some(&next.to_string()))
            .await;
    }
    completed(rig, name).await;
    let refs = References {
        before: out,
        completed: state(rig).await,
    };
    // The states differ where the steps say they do: sidecars go in step 9.
    assert_ne!(refs[&Step::SidecarRemoval].pods, refs.completed.pods);
    roll_back(rig, name, Step::Prerequisites).await;
    assert_state(
        rig,
        &refs[&Step::ControlPlane],
        "rollback of the reference run",
    )
    .await;
    refs
}
