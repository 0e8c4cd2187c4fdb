//! The state machine, driven with synthetic cluster views (no API server: `decide` is pure).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use meshmig_api::Step;
use std::collections::BTreeMap;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use meshmig_api::names as mn;
use meshmig_api::{CheckResult, MeshMigration, MigrationPhase, NamespacePhase, OnFailure};
use meshmig_operator::conditions::is_true;
use meshmig_operator::decide::{Decision, Input, Scope, Work, decide};
use meshmig_operator::snapshot::{Entry, Snapshot};
use meshmig_planner::{Inventory, Plan, plan};

fn bookinfo() -> (Inventory, MeshMigration) {
    let mut inv = Inventory::default();
    for f in [
        "00-control-plane.yaml",
        "10-bookinfo.yaml",
        "20-istio.yaml",
        "30-migration.yaml",
    ] {
        let path = format!("{}/../../examples/bookinfo/{f}", env!("CARGO_MANIFEST_DIR"));
        inv.load_str(&std::fs::read_to_string(path).unwrap(), f)
            .unwrap();
    }
    inv.load_str(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: gateways.gateway.networking.k8s.io}\n---\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: httproutes.gateway.networking.k8s.io}\n",
        "crds",
    )
    .unwrap();
    let mut mm = inv.mesh_migrations[0].clone();
    mm.metadata.uid = Some("uid-1".into());
    mm.metadata.generation = Some(1);
    mm.spec.checkpoints.probes.clear();
    (inv, mm)
}

struct World {
    live: Inventory,
    mm: MeshMigration,
    plan: Plan,
    now: Timestamp,
    /// What the shell would read for the checkpoint of a rollback.
    snapshots: Vec<Snapshot>,
}

impl World {
    fn new() -> Self {
        let (live, mm) = bookinfo();
        let plan = plan(&live, &mm.spec, "bookinfo");
        Self {
            live,
            mm,
            plan,
            now: Timestamp::from_second(1_800_000_000).unwrap(),
            snapshots: Vec::new(),
        }
    }

    fn decide(&self) -> Decision {
        self.decide_with(None)
    }

    /// Decides with these snapshot ConfigMaps (`namespace/name`) present in the cluster.
    fn decide_with(&self, present: Option<&std::collections::BTreeSet<String>>) -> Decision {
        decide(&Input {
            mm: &self.mm,
            plan: &self.plan,
            live: &self.live,
            probe_pods: &[],
            now: self.now,
            run_token: "run",
            deleting_with_rollback: false,
            operator_namespace: "meshmig-system",
            present_snapshots: present,
            frozen: None,
            rollback_snapshots: Some(&self.snapshots),
        })
    }

    /// Decides and adopts the resulting status, as a successful reconcile would.
    fn step(&mut self) -> Decision {
        let d = self.decide();
        self.mm.status = Some(d.status.clone());
        self.now = self.now.checked_add(SignedDuration::from_secs(1)).unwrap();
        d
    }

    /// Every Deployment finished its rollout, as a cooperative cluster's would.
    fn settle_rollouts(&mut self) {
        for d in &mut self.live.deployments {
            let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            d.metadata.generation = Some(1);
            d.status = Some(k8s_openapi::api::apps::v1::DeploymentStatus {
                observed_generation: Some(1),
                replicas: Some(want),
                updated_replicas: Some(want),
                available_replicas: Some(want),
                ready_replicas: Some(want),
                ..Default::default()
            });
        }
    }

    fn ns(&self) -> meshmig_api::NamespaceStatus {
        self.mm.status.as_ref().unwrap().namespaces[0].clone()
    }

    fn annotate(&mut self, k: &str, v: &str) {
        self.mm
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(k.into(), v.into());
    }
}

#[test]
fn step_one_passes_and_step_two_snapshots_before_acting() {
    let mut w = World::new();
    let d = w.step();
    // Waiting -> Applying (no actions in step 1) -> Validating, in one decision.
    assert_eq!(w.ns().phase, NamespacePhase::Validating, "{:?}", w.ns());
    assert!(d.work.is_empty(), "step 1 changes nothing: {:?}", d.work);
    let d = w.step();
    // Step 1 passed; step 2 applied: snapshot first, then the actions.
    assert_eq!(w.ns().step, Step::ControlPlane);
    assert_eq!(w.ns().phase, NamespacePhase::Validating);
    let kinds: Vec<&str> = d
        .work
        .iter()
        .map(|x| match x {
            Work::Snapshot { .. } => "snapshot",
            Work::Execute { .. } => "execute",
            Work::CleanupProbes { .. } => "cleanup",
            _ => "other",
        })
        .collect();
    let snap = kinds.iter().position(|k| *k == "snapshot").unwrap();
    let exec = kinds.iter().position(|k| *k == "execute").unwrap();
    assert!(snap < exec, "{kinds:?}");
    match &d.work[snap] {
        Work::Snapshot { scope, step, .. } => {
            assert_eq!(*scope, Scope::Cluster);
            assert_eq!(*step, Step::ControlPlane);
        }
        _ => unreachable!(),
    }
    assert!(d.events.iter().any(|e| e.reason == "StepPassed"));
    assert!(
        d.events
            .iter()
            .any(|e| e.reason == "StepStarted" && e.note.contains("step 2"))
    );
    let status = w.mm.status.as_ref().unwrap();
    assert!(is_true(&status.conditions, mn::CONDITION_RECONCILING));
    assert!(!is_true(&status.conditions, mn::CONDITION_READY));
}

#[test]
fn pending_checks_stay_pending_then_time_out() {
    let mut w = World::new();
    w.step();
    w.step();
    // Step 2 waits for Sail to report Healthy: nothing in the synthetic world does.
    let d = w.step();
    let ns = w.ns();
    assert_eq!(ns.phase, NamespacePhase::Validating);
    assert!(
        ns.checks
            .iter()
            .any(|c| c.result == CheckResult::Pending && c.message.contains("Istio default")),
        "{:?}",
        ns.checks
    );
    assert!(d.waiting_on_time);
    // Same input again: the check's transition time does not move.
    let before = ns.checks.clone();
    w.step();
    assert_eq!(
        w.ns().checks[0].last_transition_time,
        before[0].last_transition_time
    );
    // Past the timeout (5m in the bookinfo spec): Failed, with a Stalled condition.
    w.now = w.now.checked_add(SignedDuration::from_mins(6)).unwrap();
    let d = w.step();
    let ns = w.ns();
    assert_eq!(ns.phase, NamespacePhase::Failed);
    assert!(ns.message.as_deref().unwrap().contains("timed out"));
    assert!(ns.checks.iter().any(|c| c.result == CheckResult::Fail));
    assert!(
        d.events
            .iter()
            .any(|e| e.reason == "StepFailed" && e.warning)
    );
    let status = w.mm.status.as_ref().unwrap();
    assert_eq!(status.phase, Some(MigrationPhase::Failed));
    assert!(is_true(&status.conditions, mn::CONDITION_STALLED));
}

fn make_sail_healthy(w: &mut World) {
    for i in &mut w.live.istios {
        i.spec.profile = Some("ambient".into());
        i.status = Some(serde_json::json!({"state": "Healthy"}));
    }
    for i in &mut w.live.istio_cnis {
        i.spec.profile = Some("ambient".into());
        i.status = Some(serde_json::json!({"state": "Healthy"}));
    }
    w.live
        .load_str(
            "apiVersion: sailoperator.io/v1\nkind: ZTunnel\nmetadata: {name: default}\nspec: {namespace: ztunnel}\nstatus: {state: Healthy}\n---\napiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: ztunnel, namespace: ztunnel, generation: 1}\nspec: {selector: {matchLabels: {a: b}}, template: {metadata: {labels: {a: b}}}}\nstatus: {desiredNumberScheduled: 2, numberReady: 2, numberAvailable: 2, updatedNumberScheduled: 2, currentNumberScheduled: 2, numberMisscheduled: 0, observedGeneration: 1}\n",
            "ztunnel",
        )
        .unwrap();
}

#[test]
fn on_failure_rollback_undoes_the_started_steps() {
    let mut w = World::new();
    w.settle_rollouts();
    w.mm.spec.on_failure = Some(OnFailure::Rollback);
    w.step();
    w.step();
    w.now = w.now.checked_add(SignedDuration::from_mins(6)).unwrap();
    // Step 2 times out: Failed, and with onFailure: Rollback the rollback starts at once.
    let d = w.step();
    assert!(
        d.work.contains(&Work::Undo {
            scope: Scope::Cluster,
            step: Step::ControlPlane
        }),
        "{:?}",
        d.work
    );
    assert!(d.events.iter().any(|e| e.reason == "RollbackStarted"));
    let d = w.step();
    assert!(d.work.contains(&Work::DeletePlan));
    assert!(d.work.contains(&Work::DeleteSnapshots {
        scope: Scope::Cluster,
        step: Step::ControlPlane
    }));
    let status = w.mm.status.as_ref().unwrap();
    assert_eq!(status.phase, Some(MigrationPhase::RolledBack));
    assert!(is_true(&status.conditions, mn::CONDITION_ROLLED_BACK));
    let rb = status.rollback.as_ref().unwrap();
    assert_eq!(rb.requested_by, meshmig_api::RequestedBy::OnFailure);
    assert!(
        rb.reason.as_deref().unwrap().contains("timed out"),
        "{rb:?}"
    );
    // Terminal: nothing more happens.
    let d = w.step();
    assert!(d.work.is_empty(), "{:?}", d.work);
}

#[test]
fn pause_before_holds_a_step_until_approved_and_paused_holds() {
    let mut w = World::new();
    w.mm.spec.pause_before = vec![Step::ControlPlane];
    w.step();
    w.step();
    let ns = w.ns();
    assert_eq!(
        (ns.step, ns.phase),
        (Step::ControlPlane, NamespacePhase::Waiting)
    );
    assert!(ns.message.unwrap().contains("meshmig.io/approve=2"));
    let status = w.mm.status.as_ref().unwrap();
    assert!(is_true(&status.conditions, mn::CONDITION_PAUSED));
    assert_eq!(status.phase, Some(MigrationPhase::Paused));
    // The paused annotation holds too, even once approved.
    w.annotate(mn::ANNOTATION_APPROVE, "2");
    w.annotate(mn::ANNOTATION_PAUSED, "true");
    w.step();
    assert_eq!(w.ns().phase, NamespacePhase::Waiting);
    assert!(w.ns().message.unwrap().contains("paused"));
    // Removing it resumes.
    w.mm.metadata
        .annotations
        .as_mut()
        .unwrap()
        .remove(mn::ANNOTATION_PAUSED);
    w.step();
    assert_eq!(
        (w.ns().step, w.ns().phase),
        (Step::ControlPlane, NamespacePhase::Validating)
    );
}

#[test]
fn full_run_with_a_cooperative_cluster_then_rollback_all_undoes_every_step_in_reverse_the_control_plane_before_step_three()
 {
    let mut w = World::new();
    make_sail_healthy(&mut w);
    w.settle_rollouts();
    // Run until a checkpoint needs something the synthetic world lacks.
    for _ in 0..10 {
        w.step();
    }
    let reached = w.ns().step;
    assert!(
        reached >= Step::HboneSidecars,
        "reached step {reached}: {:?}",
        w.ns()
    );
    // Roll everything back: steps are undone highest first, except that the control plane
    // (step 2) is restored before step 3's restarts, so their sidecars come from it.
    w.annotate(mn::ANNOTATION_ROLLBACK, "all");
    let mut undone = Vec::new();
    for _ in 0..20 {
        let d = w.step();
        for x in &d.work {
            if let Work::Undo { step, .. } = x {
                undone.push(*step);
            }
        }
        if w.mm.status.as_ref().unwrap().phase == Some(MigrationPhase::RolledBack) {
            break;
        }
    }
    let mut expected: Vec<Step> = Step::range(Step::Waypoints, reached).rev().collect();
    expected.extend([Step::ControlPlane, Step::HboneSidecars]);
    assert_eq!(undone, expected);
    let status = w.mm.status.as_ref().unwrap();
    assert!(is_true(&status.conditions, mn::CONDITION_ROLLED_BACK));
    assert_eq!(w.ns().phase, NamespacePhase::RolledBack);
    assert!(status.plan.is_none());
}

#[test]
fn barrier_holds_step_seven_until_every_namespace_finished_six() {
    let mut w = World::new();
    let status = meshmig_api::MeshMigrationStatus {
        namespaces: vec![
            meshmig_api::NamespaceStatus {
                name: "bookinfo".into(),
                step: Step::WaypointActivation,
                phase: NamespacePhase::Waiting,
                ..Default::default()
            },
            meshmig_api::NamespaceStatus {
                name: "other".into(),
                step: Step::AmbientEnrollment,
                phase: NamespacePhase::Validating,
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    w.plan.namespace_order.push("other".into());
    let mut other = w.plan.namespaces[0].clone();
    other.name = "other".into();
    w.plan.namespaces.push(other);
    w.mm.status = Some(status);
    let d = w.decide();
    let ns = &d.status.namespaces[0];
    assert_eq!(ns.phase, NamespacePhase::Waiting);
    assert!(
        ns.message.as_deref().unwrap().contains("barrier"),
        "{:?}",
        ns.message
    );
}

#[test]
fn step_seven_is_guarded_by_a_programmed_waypoint() {
    let mut w = World::new();
    w.mm.status = Some(meshmig_api::MeshMigrationStatus {
        namespaces: vec![meshmig_api::NamespaceStatus {
            name: "bookinfo".into(),
            step: Step::WaypointActivation,
            phase: NamespacePhase::Waiting,
            ..Default::default()
        }],
        ..Default::default()
    });
    let d = w.decide();
    assert_eq!(d.status.namespaces[0].phase, NamespacePhase::Waiting);
    assert!(
        d.status.namespaces[0]
            .message
            .as_deref()
            .unwrap()
            .contains("not Programmed")
    );
    assert!(d.work.is_empty());
}

#[test]
fn an_unaccepted_fail_open_window_holds_the_step_it_opens() {
    let mut w = World::new();
    w.plan.namespaces[0].enforcement[0]
        .windows
        .push(meshmig_planner::plan::Window {
            from_step: Step::SidecarRemoval,
            to_step: Step::SidecarRemoval,
            kind: meshmig_api::WindowKind::FailOpen,
            reason: "test window".into(),
        });
    w.mm.status = Some(meshmig_api::MeshMigrationStatus {
        namespaces: vec![meshmig_api::NamespaceStatus {
            name: "bookinfo".into(),
            step: Step::SidecarRemoval,
            phase: NamespacePhase::Waiting,
            ..Default::default()
        }],
        ..Default::default()
    });
    let d = w.decide();
    assert!(
        d.status.namespaces[0]
            .message
            .as_deref()
            .unwrap()
            .contains("fail-open"),
        "{:?}",
        d.status.namespaces[0].message
    );
    let policy = w.plan.namespaces[0].enforcement[0].policy.to_string();
    w.mm.spec
        .accepted_findings
        .push(format!("enforcement-fail-open@{policy}"));
    let d = w.decide();
    assert_eq!(d.status.namespaces[0].phase, NamespacePhase::Validating);
}

#[test]
fn missing_namespace_fails_step_one_with_a_message() {
    let mut w = World::new();
    w.live.namespaces.clear();
    w.plan = plan(&w.live, &w.mm.spec, "bookinfo");
    w.step();
    let ns = w.ns();
    assert_eq!(ns.phase, NamespacePhase::Failed);
    assert!(ns.message.unwrap().contains("does not exist"));
}

#[test]
fn a_namespace_deleted_mid_way_fails_it_instead_of_holding_for_its_snapshots() {
    let mut w = World::new();
    make_sail_healthy(&mut w);
    for _ in 0..10 {
        w.step();
    }
    let reached = w.ns().step;
    assert!(
        reached >= Step::HboneSidecars,
        "reached step {reached}: {:?}",
        w.ns()
    );
    // The namespace starts terminating and its snapshot ConfigMaps go with it; only the
    // cluster-scoped step-2 snapshot (operator namespace) is left.
    w.live
        .namespaces
        .get_mut("bookinfo")
        .unwrap()
        .metadata
        .deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(w.now));
    let present: std::collections::BTreeSet<String> = w
        .ns()
        .snapshots
        .iter()
        .filter(|r| r.namespace == "meshmig-system")
        .map(|r| format!("{}/{}", r.namespace, r.config_map))
        .collect();
    assert!(w.ns().snapshots.len() > present.len(), "{:?}", w.ns());
    let d = w.decide_with(Some(&present));
    assert!(
        !d.work
            .iter()
            .any(|x| matches!(x, Work::Snapshot { .. } | Work::Execute { .. })),
        "nothing is written into a terminating namespace: {:?}",
        d.work
    );
    let ns = &d.status.namespaces[0];
    assert_eq!(ns.phase, NamespacePhase::Failed, "{ns:?}");
    let msg = ns.message.as_deref().unwrap();
    assert!(msg.contains("bookinfo was deleted"), "{msg}");
    assert_eq!(d.status.phase, Some(MigrationPhase::Failed));
    let stalled = d
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == mn::CONDITION_STALLED)
        .unwrap();
    assert_eq!(stalled.reason, "CheckpointFailed", "{stalled:?}");
    w.mm.status = Some(d.status);
    // Rolling back skips the namespaced steps (nothing left to undo there) but still
    // undoes the cluster-wide step 2.
    w.annotate(mn::ANNOTATION_ROLLBACK, "all");
    let mut undone = Vec::new();
    let mut not_undone = 0;
    for _ in 0..20 {
        let d = w.decide_with(Some(&present));
        for x in &d.work {
            if let Work::Undo { scope, step } = x {
                undone.push((scope.clone(), *step));
            }
        }
        not_undone += d
            .events
            .iter()
            .filter(|e| e.reason == "StepNotUndone")
            .count();
        w.mm.status = Some(d.status);
        if w.mm.status.as_ref().unwrap().phase == Some(MigrationPhase::RolledBack) {
            break;
        }
    }
    assert_eq!(undone, vec![(Scope::Cluster, Step::ControlPlane)]);
    assert_eq!(not_undone, usize::from(reached.number()) - 2);
}

#[test]
fn an_approval_retries_a_failed_step_once_and_a_new_spec_retries_it_too() {
    let mut w = World::new();
    w.step();
    w.step();
    w.now = w.now.checked_add(SignedDuration::from_mins(6)).unwrap();
    w.step(); // step 2 times out
    assert_eq!(w.ns().phase, NamespacePhase::Failed);
    // Approve: one retry.
    w.annotate(mn::ANNOTATION_APPROVE, "2");
    let d = w.step();
    assert!(
        d.events.iter().any(|e| e.reason == "StepRetried"),
        "{:?}",
        d.events
    );
    assert_eq!(w.ns().phase, NamespacePhase::Validating);
    assert_eq!(w.ns().retries, 1);
    w.now = w.now.checked_add(SignedDuration::from_mins(6)).unwrap();
    w.step(); // fails again
    assert_eq!(w.ns().phase, NamespacePhase::Failed);
    // The same approval does not retry forever.
    for _ in 0..3 {
        let d = w.step();
        assert!(!d.events.iter().any(|e| e.reason == "StepRetried"));
        assert_eq!(w.ns().phase, NamespacePhase::Failed);
    }
    // "2/2" approves a second retry.
    w.annotate(mn::ANNOTATION_APPROVE, "2/2");
    w.step();
    assert_eq!(w.ns().phase, NamespacePhase::Validating);
    assert_eq!(w.ns().retries, 2);
    w.now = w.now.checked_add(SignedDuration::from_mins(6)).unwrap();
    w.step();
    assert_eq!(w.ns().phase, NamespacePhase::Failed);
    // A changed spec (new generation) retries without an approval.
    w.mm.metadata
        .annotations
        .as_mut()
        .unwrap()
        .remove(mn::ANNOTATION_APPROVE);
    w.mm.metadata.generation = Some(2);
    let d = w.step();
    assert!(
        d.events
            .iter()
            .any(|e| e.reason == "StepRetried" && e.note.contains("spec changed")),
        "{:?}",
        d.events
    );
}

#[test]
fn the_approval_that_released_a_step_does_not_also_retry_it() {
    let mut w = World::new();
    w.mm.spec.pause_before = vec![Step::ControlPlane];
    w.step();
    w.step();
    w.annotate(mn::ANNOTATION_APPROVE, "2");
    w.step();
    assert_eq!(
        (w.ns().step, w.ns().phase),
        (Step::ControlPlane, NamespacePhase::Validating)
    );
    w.now = w.now.checked_add(SignedDuration::from_mins(6)).unwrap();
    w.step(); // step 2 times out
    assert_eq!(w.ns().phase, NamespacePhase::Failed);
    // The left-over "2" released the step; it does not retry it behind the user's back.
    for _ in 0..3 {
        let d = w.step();
        assert!(!d.events.iter().any(|e| e.reason == "StepRetried"));
        assert_eq!(w.ns().phase, NamespacePhase::Failed);
    }
    let status = w.mm.status.as_ref().unwrap();
    let stalled = status
        .conditions
        .iter()
        .find(|c| c.type_ == mn::CONDITION_STALLED)
        .unwrap();
    assert!(stalled.message.contains("\"2/2\""), "{}", stalled.message);
    assert_eq!(w.mm.approval_for(Step::ControlPlane), "2/2");
    w.annotate(mn::ANNOTATION_APPROVE, "2/2");
    let d = w.step();
    assert!(d.events.iter().any(|e| e.reason == "StepRetried"));
}

/// Step 2 changes the shared control plane; every namespace's plan lists it, but it is
/// snapshotted and carried out once, not once per namespace.
#[test]
fn the_shared_control_plane_step_is_carried_out_once_for_all_namespaces() {
    let two = |first: (Step, NamespacePhase), second: (Step, NamespacePhase)| {
        let mut w = World::new();
        w.plan.namespace_order.push("other".into());
        let mut other = w.plan.namespaces[0].clone();
        other.name = "other".into();
        w.plan.namespaces.push(other);
        let mut ns = w.live.namespaces["bookinfo"].clone();
        ns.metadata.name = Some("other".into());
        w.live.namespaces.insert("other".into(), ns);
        w.mm.status = Some(meshmig_api::MeshMigrationStatus {
            namespaces: vec![
                meshmig_api::NamespaceStatus {
                    name: "bookinfo".into(),
                    step: first.0,
                    phase: first.1,
                    ..Default::default()
                },
                meshmig_api::NamespaceStatus {
                    name: "other".into(),
                    step: second.0,
                    phase: second.1,
                    ..Default::default()
                },
            ],
            ..Default::default()
        });
        w.decide()
    };
    let step2 = |d: &meshmig_operator::decide::Decision| {
        let snapshots = d
            .work
            .iter()
            .filter(|w| {
                matches!(
                    w,
                    Work::Snapshot {
                        step: Step::ControlPlane,
                        ..
                    }
                )
            })
            .count();
        let executes = d
            .work
            .iter()
            .filter(|w| {
                matches!(
                    w,
                    Work::Execute {
                        step: Step::ControlPlane,
                        ..
                    }
                )
            })
            .count();
        (snapshots, executes)
    };

    // Both enter step 2 in the same decision: one snapshot, one execution; both validate
    // and both record the one cluster snapshot.
    let d = two(
        (Step::ControlPlane, NamespacePhase::Applying),
        (Step::ControlPlane, NamespacePhase::Applying),
    );
    assert_eq!(step2(&d), (1, 1), "{:#?}", d.work);
    for ns in &d.status.namespaces {
        assert_eq!(ns.phase, NamespacePhase::Validating, "{}", ns.name);
        assert!(
            ns.snapshots.iter().any(|r| r.step == Step::ControlPlane),
            "{}",
            ns.name
        );
    }

    // One namespace already past step 2: the other only validates it.
    let d = two(
        (Step::ControlPlane, NamespacePhase::Applying),
        (Step::HboneSidecars, NamespacePhase::Validating),
    );
    assert_eq!(step2(&d).1, 0, "{:#?}", d.work);
    assert_eq!(d.status.namespaces[0].phase, NamespacePhase::Validating);

    // Alone, a namespace applies step 2 (the rule needs another namespace to have done it).
    let d = two(
        (Step::ControlPlane, NamespacePhase::Applying),
        (Step::Prerequisites, NamespacePhase::Validating),
    );
    assert_eq!(step2(&d), (1, 1), "{:#?}", d.work);
}

#[test]
fn a_rollback_also_undoes_steps_only_their_snapshots_know_of() {
    // A reconcile took the snapshots of steps 2 and 3 and changed the cluster, then its
    // status write was lost: status knows nothing, the snapshots are the record.
    let mut w = World::new();
    w.settle_rollouts();
    make_sail_healthy(&mut w);
    let name = w.mm.metadata.name.clone().unwrap();
    let present: std::collections::BTreeSet<String> = [
        format!(
            "meshmig-system/{}",
            meshmig_operator::snapshot::config_map_name(&name, Step::ControlPlane)
        ),
        format!(
            "bookinfo/{}",
            meshmig_operator::snapshot::config_map_name(&name, Step::HboneSidecars)
        ),
    ]
    .into();
    w.annotate(mn::ANNOTATION_ROLLBACK, "all");
    let mut undone = Vec::new();
    let mut deleted = Vec::new();
    for _ in 0..20 {
        let d = w.decide_with(Some(&present));
        for x in &d.work {
            match x {
                Work::Undo { scope, step } => undone.push((scope.clone(), *step)),
                Work::DeleteSnapshots { scope, step } => deleted.push((scope.clone(), *step)),
                _ => {}
            }
        }
        w.mm.status = Some(d.status);
        if w.mm.status.as_ref().unwrap().phase == Some(MigrationPhase::RolledBack) {
            break;
        }
    }
    assert_eq!(
        w.mm.status.as_ref().unwrap().phase,
        Some(MigrationPhase::RolledBack)
    );
    assert_eq!(
        undone,
        vec![
            (Scope::Cluster, Step::ControlPlane),
            (Scope::Namespace("bookinfo".into()), Step::HboneSidecars)
        ]
    );
    assert!(deleted.contains(&(Scope::Namespace("bookinfo".into()), Step::HboneSidecars)));
    assert!(deleted.contains(&(Scope::Cluster, Step::ControlPlane)));

    // Without snapshots there is nothing to undo, and nothing is invented.
    let mut w = World::new();
    w.annotate(mn::ANNOTATION_ROLLBACK, "all");
    let none = std::collections::BTreeSet::new();
    let d = w.decide_with(Some(&none));
    assert!(
        !d.work.iter().any(|x| matches!(x, Work::Undo { .. })),
        "{:?}",
        d.work
    );
}

/// A Pod of reviews-v2 as the API shows it (metadata only, as the operator watches Pods).
fn reviews_v2_pod(w: &mut World, annotations: &str, labels: &str) {
    w.live.pods.clear();
    w.live
        .load_str(
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: reviews-v2-abc, namespace: bookinfo, labels: {{app: reviews, version: v2{labels}}}, annotations: {{{annotations}}}}}\nstatus: {{phase: Running}}\n"
            ),
            "pod",
        )
        .unwrap();
}

/// bookinfo migrated up to step 5 (step 6 waits), then rolled back to before step 4.
fn rolled_back_to_four(w: &mut World) {
    w.settle_rollouts();
    w.mm.status = Some(meshmig_api::MeshMigrationStatus {
        namespaces: vec![meshmig_api::NamespaceStatus {
            name: "bookinfo".into(),
            step: Step::AmbientEnrollment,
            phase: NamespacePhase::Waiting,
            ..Default::default()
        }],
        ..Default::default()
    });
    w.annotate(mn::ANNOTATION_ROLLBACK, "4");
}

#[test]
fn a_rollback_is_reported_only_once_every_pod_runs_as_before_and_names_the_ones_that_do_not() {
    let mut w = World::new();
    rolled_back_to_four(&mut w);
    // Recreated while injection was still off: no sidecar, and not captured either.
    reviews_v2_pod(&mut w, "", "");
    let mut undone = Vec::new();
    for _ in 0..4 {
        let d = w.step();
        undone.extend(d.work.iter().filter_map(|x| match x {
            Work::Undo { step, .. } => Some(*step),
            _ => None,
        }));
    }
    assert_eq!(undone, [Step::Policies, Step::Waypoints]);
    let status = w.mm.status.clone().unwrap();
    assert_eq!(status.phase, Some(MigrationPhase::RollingBack));
    assert!(!is_true(&status.conditions, mn::CONDITION_ROLLED_BACK));
    let ns = w.ns();
    let check = ns
        .checks
        .iter()
        .find(|c| c.name == "pods-meshed-as-before")
        .unwrap_or_else(|| panic!("{:?}", ns.checks));
    assert_eq!(check.result, CheckResult::Pending);
    assert!(
        check.message.contains("Deployment bookinfo/reviews-v2")
            && check.message.contains("outside the mesh")
            && check.message.contains("a sidecar that speaks HBONE"),
        "{}",
        check.message
    );

    // Past the checkpoint timeout: Stalled, naming the workload and what it lacks.
    w.now = w.now.checked_add(SignedDuration::from_mins(6)).unwrap();
    let d = w.step();
    let status = w.mm.status.clone().unwrap();
    assert_eq!(status.phase, Some(MigrationPhase::Stalled));
    let stalled = status
        .conditions
        .iter()
        .find(|c| c.type_ == mn::CONDITION_STALLED)
        .unwrap();
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", "RollbackCheckFailed")
    );
    assert!(
        stalled.message.contains("reviews-v2"),
        "{}",
        stalled.message
    );
    assert!(!is_true(&status.conditions, mn::CONDITION_RECONCILING));
    assert!(!is_true(&status.conditions, mn::CONDITION_ROLLED_BACK));
    assert!(
        !d.work
            .iter()
            .any(|x| matches!(x, Work::DeleteSnapshots { .. })),
        "snapshots stay while the rollback is unverified: {:?}",
        d.work
    );

    // Restarted by hand, now with an HBONE sidecar: the rollback completes.
    reviews_v2_pod(
        &mut w,
        "sidecar.istio.io/status: '{}'",
        ", networking.istio.io/tunnel: http",
    );
    let d = w.step();
    let status = w.mm.status.clone().unwrap();
    assert_eq!(
        status.phase,
        Some(MigrationPhase::RolledBack),
        "{:?}",
        w.ns()
    );
    assert!(is_true(&status.conditions, mn::CONDITION_ROLLED_BACK));
    assert!(!is_true(&status.conditions, mn::CONDITION_STALLED));
    assert!(d.work.contains(&Work::DeleteSnapshots {
        scope: Scope::Namespace("bookinfo".into()),
        step: Step::Waypoints
    }));
    assert!(
        w.ns().checks.iter().all(|c| c.result == CheckResult::Pass),
        "{:?}",
        w.ns().checks
    );
}

#[test]
fn a_rollback_waits_for_what_its_snapshots_recorded_to_be_back() {
    let mut w = World::new();
    rolled_back_to_four(&mut w);
    reviews_v2_pod(
        &mut w,
        "sidecar.istio.io/status: '{}'",
        ", networking.istio.io/tunnel: http",
    );
    // Step 5 recorded an injection label the cluster no longer has (a stand-in for any
    // recorded change that did not come back).
    w.snapshots = vec![Snapshot {
        migration: "bookinfo".into(),
        step: Step::Policies,
        namespace: Some("bookinfo".into()),
        entries: vec![Entry::Label {
            object: meshmig_planner::ObjectRef::namespace("bookinfo"),
            key: "istio-injection".into(),
            previous: Some("disabled".into()),
        }],
    }];
    for _ in 0..4 {
        w.step();
    }
    let ns = w.ns();
    let check = ns
        .checks
        .iter()
        .find(|c| c.name == "snapshot-restored")
        .unwrap_or_else(|| panic!("{:?}", ns.checks));
    assert_eq!(check.result, CheckResult::Pending);
    assert!(
        check.message.contains(
            "Namespace//bookinfo: label istio-injection is \"enabled\", was \"disabled\""
        ),
        "{}",
        check.message
    );
    assert_eq!(
        w.mm.status.as_ref().unwrap().phase,
        Some(MigrationPhase::RollingBack)
    );
    // Without the shell's reading, the checkpoint asks for it instead of judging.
    let d = decide(&Input {
        mm: &w.mm,
        plan: &w.plan,
        live: &w.live,
        probe_pods: &[],
        now: w.now,
        run_token: "run",
        deleting_with_rollback: false,
        operator_namespace: "meshmig-system",
        present_snapshots: None,
        frozen: None,
        rollback_snapshots: None,
    });
    assert!(d.more);
    assert_eq!(
        meshmig_operator::decide::rollback_snapshots_to_verify(&w.mm),
        Some(vec![
            (Scope::Namespace("bookinfo".into()), Step::Waypoints),
            (Scope::Namespace("bookinfo".into()), Step::Policies),
            (Scope::Namespace("bookinfo".into()), Step::AmbientEnrollment),
            (
                Scope::Namespace("bookinfo".into()),
                Step::WaypointActivation
            ),
            (
                Scope::Namespace("bookinfo".into()),
                Step::PolicySimplification
            ),
            (Scope::Namespace("bookinfo".into()), Step::SidecarRemoval),
        ])
    );
}

#[test]
fn step_seven_waits_for_the_waypoint_deployment_as_istiod_programs_the_gateway_before_it() {
    let mut w = World::new();
    w.mm.status = Some(meshmig_api::MeshMigrationStatus {
        namespaces: vec![meshmig_api::NamespaceStatus {
            name: "bookinfo".into(),
            step: Step::WaypointActivation,
            phase: NamespacePhase::Waiting,
            ..Default::default()
        }],
        ..Default::default()
    });
    // istiod's waypoint Gateway: Programmed as soon as its Service has an address.
    w.live
        .load_str(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: waypoint, namespace: bookinfo}\nspec: {gatewayClassName: istio-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}\nstatus: {conditions: [{type: Programmed, status: 'True', reason: Programmed, message: ok, lastTransitionTime: '2026-12-04T00:00:00Z'}]}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: waypoint, namespace: bookinfo}\nspec: {selector: {matchLabels: {a: b}}, template: {metadata: {labels: {a: b}}}}\nstatus: {availableReplicas: 0}\n",
            "waypoint",
        )
        .unwrap();
    let d = w.decide();
    let msg = d.status.namespaces[0].message.clone().unwrap();
    assert_eq!(d.status.namespaces[0].phase, NamespacePhase::Waiting);
    assert!(msg.contains("no available replica"), "{msg}");
    for d in &mut w.live.deployments {
        if d.metadata.name.as_deref() == Some("waypoint") {
            d.status.as_mut().unwrap().available_replicas = Some(1);
        }
    }
    let d = w.decide();
    assert_ne!(
        d.status.namespaces[0].phase,
        NamespacePhase::Waiting,
        "{:?}",
        d.status.namespaces[0].message
    );
}

#[test]
fn a_waypoint_copy_istiod_does_not_accept_holds_step_seven_with_its_message() {
    let mut w = World::new();
    w.settle_rollouts();
    w.mm.status = Some(meshmig_api::MeshMigrationStatus {
        namespaces: vec![meshmig_api::NamespaceStatus {
            name: "bookinfo".into(),
            step: Step::WaypointActivation,
            phase: NamespacePhase::Validating,
            checkpoint_started_at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                w.now,
            )),
            ..Default::default()
        }],
        ..Default::default()
    });
    // The copy of reviews-viewer as step 5 created it, with the status istiod writes while
    // the Service is not bound.
    let copy = w
        .plan
        .manifests
        .iter()
        .find(|m| {
            m["metadata"]["annotations"]["meshmig.io/source"]
                == "AuthorizationPolicy/bookinfo/reviews-viewer"
        })
        .unwrap()
        .clone();
    let mut copy = copy;
    copy["status"] = serde_json::json!({"conditions": [{"type": "WaypointAccepted", "status": "False", "reason": "AncestorNotBound", "message": "the Service is not bound to a waypoint"}]});
    w.live
        .load_str(&serde_json::to_string(&copy).unwrap(), "copy")
        .unwrap();
    let d = w.decide();
    let check = d.status.namespaces[0]
        .checks
        .iter()
        .find(|c| c.name == "policies-accepted")
        .unwrap_or_else(|| panic!("{:?}", d.status.namespaces[0].checks))
        .clone();
    assert_eq!(check.result, CheckResult::Pending);
    assert!(
        check
            .message
            .contains("WaypointAccepted=False (AncestorNotBound): the Service is not bound"),
        "{}",
        check.message
    );
}
