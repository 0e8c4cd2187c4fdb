//! A rollback leaves every workload in the mesh it was in. Each rollback target 2..9 is
//! started from a completed migration and from each step mid-way, and the Pods it leaves
//! (containers, init containers, `sidecar.istio.io/status`, ztunnel redirection, HBONE) and
//! the namespace's objects are compared with those of a fresh undisturbed run held before
//! that step. Comparing objects alone missed Pods recreated outside the mesh.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use meshmig_api::names as mn;
use meshmig_api::{NamespacePhase, Step};
use serde_json::json;

use common::states::*;
use common::*;

const NAME: &str = "rb";

#[tokio::test(flavor = "multi_thread")]
async fn every_rollback_target_from_a_completed_migration_leaves_the_pods_as_before_that_step() {
    let rig = Rig::new(&[]).await;
    let refs = reference(&rig, NAME).await;
    rig.delete_migration(NAME).await;
    rig.apply_migration(NAME, json!({})).await;
    completed(&rig, NAME).await;
    assert_state(&rig, &refs.completed, "completed").await;
    for target in Step::range(Step::ControlPlane, Step::LAST).rev() {
        roll_back(&rig, NAME, target).await;
        assert_state_as(
            &rig,
            &refs[&target],
            &format!("rollback from the completed migration to before step {target}"),
            any_hbone(target),
        )
        .await;
        resume(&rig, NAME).await;
        completed(&rig, NAME).await;
        assert_state(
            &rig,
            &refs.completed,
            &format!("migrated again after the rollback to {target}"),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_started_mid_way_at_each_step_leaves_the_pods_as_before_that_step() {
    let rig = Rig::new(&[]).await;
    let refs = reference(&rig, NAME).await;
    rig.delete_migration(NAME).await;
    rig.apply_migration(NAME, json!({"pauseBefore": HELD}))
        .await;
    for done in Step::range(Step::ControlPlane, Step::PolicySimplification) {
        let next = done.next().unwrap();
        hold_before(&rig, NAME, next).await;
        roll_back(&rig, NAME, done).await;
        assert_state_as(
            &rig,
            &refs[&done],
            &format!("rollback of step {done}, held before step {next}"),
            any_hbone(done),
        )
        .await;
        resume(&rig, NAME).await;
        hold_before(&rig, NAME, next).await;
        assert_state(&rig, &refs[&next], &format!("step {done} done again")).await;
        rig.annotate(NAME, mn::ANNOTATION_APPROVE, Some(&next.to_string()))
            .await;
    }
    // Step 9 while its rollouts run.
    rig.wait_mm(NAME, "step 9 under way", 120, |mm| {
        mm.status
            .as_ref()
            .and_then(|s| s.namespaces.first())
            .is_some_and(|n| {
                n.step == Step::SidecarRemoval && n.phase == NamespacePhase::Validating
            })
    })
    .await;
    roll_back(&rig, NAME, Step::SidecarRemoval).await;
    assert_state(
        &rig,
        &refs[&Step::SidecarRemoval],
        "rollback of step 9 under way",
    )
    .await;
    resume(&rig, NAME).await;
    completed(&rig, NAME).await;
    assert_state(&rig, &refs.completed, "completed after the rollbacks").await;
}
