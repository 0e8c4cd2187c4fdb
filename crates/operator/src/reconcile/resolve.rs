//! Which plan a reconcile carries out, decided purely: the frozen one once the migration left
//! step 1 (unless the spec or the operator changed under it), the live one before; and,
//! after the decision, whether the plan is adopted from the cluster or frozen now.

use std::sync::Arc;

use kube::ResourceExt;
use meshmig_api::names as mn;
use meshmig_api::{MeshMigration, MeshMigrationStatus, PlanRef, Step};
use meshmig_planner::{Inventory, Plan};

use crate::error::Error;
use crate::frozen;

/// Why a migration cannot go on with the plan it started with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stall {
    pub reason: &'static str,
    pub message: String,
}

/// Where the plan comes from.
#[derive(Debug, PartialEq)]
pub enum Source<'a> {
    /// Planned from the live cluster: nothing is frozen yet.
    Live,
    /// Re-planned from the frozen inventory this reference points to.
    Frozen(&'a PlanRef),
    /// The spec changed after the migration started.
    Stalled(Stall),
}

/// What the shell knows when it resolves the plan.
pub struct Resolve<'a> {
    pub mm: &'a MeshMigration,
    /// The frozen plan status records, or the one adopted from the cluster.
    pub plan_ref: Option<&'a PlanRef>,
    /// Hash of the current spec ([`frozen::spec_hash`]).
    pub spec_hash: &'a str,
    /// A rollback is asked for (annotation, or deletion with `onDelete: Rollback`): undoing
    /// goes on whatever changed.
    pub rollback_requested: bool,
}

/// The plan to carry out.
#[derive(Debug)]
pub enum Resolution {
    Planned {
        plan: Box<Plan>,
        /// The frozen inventory it was planned from (`None`: planned from the live cluster).
        frozen: Option<Arc<Inventory>>,
    },
    Stalled(Stall),
}

/// Where the plan comes from; the frozen inventory is loaded only for [`Source::Frozen`].
pub fn source<'a>(r: &Resolve<'a>) -> Source<'a> {
    match r.plan_ref {
        None => Source::Live,
        Some(pr) if pr.spec_hash != r.spec_hash && !r.rollback_requested => {
            Source::Stalled(Stall {
                reason: "SpecChanged",
                message: format!(
                    "spec.namespaces, namespaceSelector, ordering, controlPlane, waypoint or bypassProtection changed after the migration started; restore them, or roll back with {}: all and then delete and re-create the MeshMigration to plan with the new spec",
                    mn::ANNOTATION_ROLLBACK
                ),
            })
        }
        Some(pr) => Source::Frozen(pr),
    }
}

/// The plan from the frozen inventory `loaded` for `pr`, or the live one when the frozen one
/// is gone and only undoing is left.
pub fn plan(
    r: &Resolve<'_>,
    pr: &PlanRef,
    loaded: Result<Arc<Inventory>, Error>,
    live: &Inventory,
) -> Result<Resolution, Error> {
    match loaded {
        Ok(inv) => {
            let p = meshmig_planner::plan(&inv, &r.mm.spec, &r.mm.name_any());
            let changed = pr
                .plan_hash
                .as_ref()
                .is_some_and(|h| *h != frozen::plan_hash(&p));
            if changed && !r.rollback_requested {
                return Ok(Resolution::Stalled(plan_changed()));
            }
            Ok(Resolution::Planned {
                plan: Box::new(p),
                frozen: Some(inv),
            })
        }
        // The plan was deleted by the rollback that just finished (this object is older than
        // that status write). Undoing needs only the snapshots; the live inventory gives the
        // namespace order when the frozen one is gone.
        Err(Error::Plan(_)) if fully_rolled_back(r.mm.status.as_ref()) || r.rollback_requested => {
            Ok(live_plan(r.mm, live))
        }
        Err(e) => Err(e),
    }
}

/// The plan from the live cluster.
pub fn live_plan(mm: &MeshMigration, live: &Inventory) -> Resolution {
    Resolution::Planned {
        plan: Box::new(meshmig_planner::plan(live, &mm.spec, &mm.name_any())),
        frozen: None,
    }
}

fn plan_changed() -> Stall {
    Stall {
        reason: "PlanChanged",
        message: format!(
            "this operator version would carry out a different plan than the one this migration started with (an operator upgrade during the migration); roll back with {}: all, or run the earlier operator version until the migration completes",
            mn::ANNOTATION_ROLLBACK
        ),
    }
}

/// A completed rollback of the control plane or everything: its plan is gone.
fn fully_rolled_back(status: Option<&MeshMigrationStatus>) -> bool {
    status
        .and_then(|s| s.rollback.as_ref())
        .is_some_and(|r| r.completed && r.target.is_cluster_wide())
}

/// What the decision's status records of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// Nothing new.
    Keep,
    /// The plan found in the cluster but not in status, with the hash of what it makes the
    /// operator do.
    Adopt(PlanRef),
    /// Freeze the live inventory now: the decision leaves step 1, before its first change.
    Freeze,
}

/// Whether the decided `status` adopts the unrecorded frozen plan, or freezes one.
pub fn record(
    plan_ref: Option<&PlanRef>,
    adopted: Option<&PlanRef>,
    plan: &Plan,
    status: &MeshMigrationStatus,
) -> Record {
    if let Some(pr) = adopted
        && status.plan.is_none()
        && !fully_rolled_back(Some(status))
    {
        let mut pr = pr.clone();
        pr.plan_hash = Some(frozen::plan_hash(plan));
        return Record::Adopt(pr);
    }
    let leaves_step_one = status
        .namespaces
        .iter()
        .any(|s| s.step >= Step::ControlPlane);
    if plan_ref.is_none() && leaves_step_one && status.rollback.is_none() {
        Record::Freeze
    } else {
        Record::Keep
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;
    use meshmig_api::{MeshMigrationSpec, NamespaceStatus, RequestedBy, RollbackStatus};

    fn mm() -> MeshMigration {
        let mut mm = MeshMigration::new("m", MeshMigrationSpec::default());
        mm.metadata.generation = Some(1);
        mm
    }

    fn plan_ref(spec_hash: &str) -> PlanRef {
        PlanRef {
            namespace: "meshmig-system".into(),
            config_map: "meshmig-m-plan".into(),
            spec_hash: spec_hash.into(),
            generation: 1,
            plan_hash: None,
            config_map_uid: None,
        }
    }

    fn rollback(target: Step, completed: bool) -> RollbackStatus {
        RollbackStatus {
            target,
            requested_by: RequestedBy::Annotation,
            completed,
            reason: None,
            control_plane_undone: false,
        }
    }

    #[test]
    fn a_changed_spec_stalls_unless_a_rollback_is_asked_for() {
        let mm = mm();
        let pr = plan_ref("old");
        let mut r = Resolve {
            mm: &mm,
            plan_ref: None,
            spec_hash: "new",
            rollback_requested: false,
        };
        assert_eq!(source(&r), Source::Live);
        r.plan_ref = Some(&pr);
        match source(&r) {
            Source::Stalled(s) => assert_eq!(s.reason, "SpecChanged"),
            other => panic!("{other:?}"),
        }
        r.rollback_requested = true;
        assert_eq!(source(&r), Source::Frozen(&pr));
        r.rollback_requested = false;
        r.spec_hash = "old";
        assert_eq!(source(&r), Source::Frozen(&pr));
    }

    #[test]
    fn a_different_plan_from_the_same_inventory_stalls_unless_rolling_back() {
        let mm = mm();
        let live = Inventory::default();
        let mut pr = plan_ref("h");
        pr.plan_hash = Some("not-this-plan".into());
        let mut r = Resolve {
            mm: &mm,
            plan_ref: Some(&pr),
            spec_hash: "h",
            rollback_requested: false,
        };
        let inv = Arc::new(Inventory::default());
        match plan(&r, &pr, Ok(inv.clone()), &live).unwrap() {
            Resolution::Stalled(s) => assert_eq!(s.reason, "PlanChanged"),
            other => panic!("{other:?}"),
        }
        r.rollback_requested = true;
        assert!(matches!(
            plan(&r, &pr, Ok(inv.clone()), &live).unwrap(),
            Resolution::Planned {
                frozen: Some(_),
                ..
            }
        ));
        let same = meshmig_planner::plan(&inv, &mm.spec, "m");
        let mut unchanged = pr.clone();
        unchanged.plan_hash = Some(frozen::plan_hash(&same));
        let r = Resolve {
            plan_ref: Some(&unchanged),
            rollback_requested: false,
            ..r
        };
        assert!(matches!(
            plan(&r, &unchanged, Ok(inv), &live).unwrap(),
            Resolution::Planned {
                frozen: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn a_missing_frozen_plan_is_an_error_unless_only_undoing_is_left() {
        let mut mm = mm();
        let live = Inventory::default();
        let pr = plan_ref("h");
        let gone = || Err(Error::Plan("missing".into()));
        let r = Resolve {
            mm: &mm,
            plan_ref: Some(&pr),
            spec_hash: "h",
            rollback_requested: false,
        };
        assert!(matches!(plan(&r, &pr, gone(), &live), Err(Error::Plan(_))));
        let rolling = Resolve {
            rollback_requested: true,
            ..r
        };
        assert!(matches!(
            plan(&rolling, &pr, gone(), &live).unwrap(),
            Resolution::Planned { frozen: None, .. }
        ));
        mm.status = Some(MeshMigrationStatus {
            rollback: Some(rollback(Step::ControlPlane, true)),
            ..Default::default()
        });
        let done = Resolve {
            mm: &mm,
            plan_ref: Some(&pr),
            spec_hash: "h",
            rollback_requested: false,
        };
        assert!(matches!(
            plan(&done, &pr, gone(), &live).unwrap(),
            Resolution::Planned { frozen: None, .. }
        ));
    }

    #[test]
    fn the_plan_is_frozen_before_the_first_change_and_an_unrecorded_one_adopted() {
        let p = meshmig_planner::plan(&Inventory::default(), &MeshMigrationSpec::default(), "m");
        let ns = |step| NamespaceStatus {
            name: "a".into(),
            step,
            ..Default::default()
        };
        let mut status = MeshMigrationStatus {
            namespaces: vec![ns(Step::Prerequisites)],
            ..Default::default()
        };
        assert_eq!(record(None, None, &p, &status), Record::Keep);
        status.namespaces = vec![ns(Step::ControlPlane)];
        assert_eq!(record(None, None, &p, &status), Record::Freeze);
        let pr = plan_ref("h");
        assert_eq!(record(Some(&pr), None, &p, &status), Record::Keep);
        match record(Some(&pr), Some(&pr), &p, &status) {
            Record::Adopt(a) => assert_eq!(a.plan_hash, Some(frozen::plan_hash(&p))),
            other => panic!("{other:?}"),
        }
        status.rollback = Some(rollback(Step::Prerequisites, true));
        assert_eq!(record(Some(&pr), Some(&pr), &p, &status), Record::Keep);
        status.rollback = Some(rollback(Step::Waypoints, false));
        assert_eq!(record(None, None, &p, &status), Record::Keep);
    }
}
