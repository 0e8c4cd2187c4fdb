//! Crash-resume: the operator is SIGKILLed at seeded random points while it migrates
//! bookinfo and while it rolls it back, to every target in turn. Every trial must end in
//! the state of an undisturbed run — objects and the Pods' mesh state — with each step's
//! snapshot taken exactly once and unchanged.
//!
//! A second test makes the state such a kill leaves between a reconcile's work and its
//! status write, and checks the next operator resumes from what was stored.
//!
//! `MESHMIG_CRASH_TRIALS` (default 30) and `MESHMIG_CRASH_SEED` (default 20261128) control
//! the run; results are printed and written to target/reliability/crash.txt.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use meshmig_api::Step;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use meshmig_api::MigrationPhase;
use meshmig_api::names as mn;
use meshmig_e2e_harness::{Pending, wait_for};
use serde_json::{Value, json};

use common::states::{self, NS, State};
use common::*;

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

const NAME: &str = "crash";

/// Decoded snapshots of the migration, by `namespace/step`.
async fn snapshots(rig: &Rig) -> BTreeMap<String, Value> {
    let items = snapshot_config_maps(rig, NAME).await;
    let mut heads: BTreeMap<String, usize> = BTreeMap::new();
    for cm in &items {
        *heads
            .entry(format!(
                "{}/{}",
                cm.namespace().unwrap_or_default(),
                cm.labels()[mn::LABEL_STEP]
            ))
            .or_default() += usize::from(
            cm.annotations()
                .contains_key(meshmig_api::names::ANNOTATION_SNAPSHOT_PARTS),
        );
    }
    let mut out = BTreeMap::new();
    for (key, count) in heads {
        assert_eq!(count, 1, "snapshot {key} has {count} heads");
        let (ns, step) = key.split_once('/').unwrap();
        let head_name = meshmig_operator::snapshot::config_map_name(NAME, step.parse().unwrap());
        let parts: Vec<Option<ConfigMap>> = {
            let head = items
                .iter()
                .find(|c| c.name_any() == head_name && c.namespace().as_deref() == Some(ns))
                .cloned()
                .unwrap();
            let n = meshmig_operator::snapshot::parts_of(&head);
            let mut v = vec![Some(head)];
            for i in 1..n {
                let name = meshmig_operator::snapshot::part_name(&head_name, i);
                v.push(
                    items
                        .iter()
                        .find(|c| c.name_any() == name && c.namespace().as_deref() == Some(ns))
                        .cloned(),
                );
            }
            v
        };
        let snap = meshmig_operator::snapshot::decode(&parts)
            .unwrap_or_else(|e| panic!("snapshot {key}: {e}"));
        out.insert(key, normalize(serde_json::to_value(snap).unwrap()));
    }
    out
}

/// Restart tokens carry the MeshMigration's uid, which differs between runs.
fn normalize(v: Value) -> Value {
    match v {
        Value::String(s) => match s.split_once('-') {
            Some((uid, rest))
                if uid.len() == 8
                    && uid.chars().all(|c| c.is_ascii_hexdigit())
                    && rest.contains(".step") =>
            {
                Value::String(format!("RUN-{rest}"))
            }
            _ => Value::String(s),
        },
        Value::Array(a) => Value::Array(a.into_iter().map(normalize).collect()),
        Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, normalize(v))).collect()),
        other => other,
    }
}

/// Rollback targets of the rollback trials, in turn (1: `all`).
const ROLLBACK_TARGETS: [Step; 9] = [
    Step::Prerequisites,
    Step::SidecarRemoval,
    Step::PolicySimplification,
    Step::WaypointActivation,
    Step::AmbientEnrollment,
    Step::Policies,
    Step::Waypoints,
    Step::HboneSidecars,
    Step::ControlPlane,
];

/// Everything as before the migration: the user's objects, the Pods' mesh state, and
/// nothing of meshmig's left.
async fn assert_original(
    rig: &Rig,
    baseline: &BTreeMap<String, Value>,
    pods: &State,
    what: &str,
    any_hbone: bool,
) {
    states::assert_state_as(rig, pods, what, any_hbone).await;
    rig.wait_available(NS).await;
    assert_eq!(
        &rig.user_objects(NS).await,
        baseline,
        "{what}: the user's objects differ"
    );
    let leftovers = rig.meshmig_objects().await;
    assert!(leftovers.is_empty(), "{what}: leftovers {leftovers:?}");
}

async fn wait_phase(rig: &Rig, want: MigrationPhase, secs: u64) {
    wait_phase_of(rig, NAME, want, secs).await;
}

async fn wait_phase_of(rig: &Rig, name: &str, want: MigrationPhase, secs: u64) {
    rig.wait_mm(name, &format!("{want:?}"), secs, |mm| {
        phase(mm) == Some(want)
    })
    .await;
}

async fn gone(rig: &Rig) {
    rig.delete_migration(NAME).await;
    let api: Api<ConfigMap> = rig.env.api();
    wait_for(
        "snapshots garbage-collected",
        Duration::from_secs(60),
        async || {
            let n = api
                .list(&ListParams::default().labels(&format!("{}={NAME}", mn::LABEL_MIGRATION)))
                .await?
                .items
                .len();
            if n == 0 {
                Ok(())
            } else {
                Err(Pending::new(format!("{n} ConfigMaps left")))
            }
        },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_random_points_of_migration_and_rollback_changes_nothing() {
    let trials: usize = std::env::var("MESHMIG_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let seed: u64 = std::env::var("MESHMIG_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_261_128);
    let mut rng = Rng(seed | 1);
    let mut rig = Rig::new(&[]).await;
    // No lease: a restarted operator resumes at once (leader election is tested elsewhere).
    rig.kill_operator("op-a").await;
    rig.operator_args = vec!["--leader-election=false".into()];
    rig.start_operator("op-a").await;
    let baseline = rig.user_objects("bookinfo").await;
    // What a rollback to each target must leave, from a run held before every step.
    let before = states::reference(&rig, NAME).await;
    gone(&rig).await;

    // The undisturbed reference run.
    let t0 = Instant::now();
    rig.apply_migration(NAME, json!({})).await;
    wait_phase(&rig, MigrationPhase::Completed, 180).await;
    let migrate_time = t0.elapsed();
    let reference_state = rig.namespace_state(NS).await;
    let reference_snapshots = snapshots(&rig).await;
    assert_eq!(
        reference_snapshots.len(),
        8,
        "steps 2..9: {:?}",
        reference_snapshots.keys()
    );
    // Snapshots hold no Secret (meshmig never reads, changes or deletes one).
    let all = serde_json::to_string(&reference_snapshots).unwrap();
    assert!(
        !all.contains("\"kind\":\"Secret\""),
        "a snapshot mentions a Secret"
    );
    let t1 = Instant::now();
    rig.annotate(NAME, mn::ANNOTATION_ROLLBACK, Some("all"))
        .await;
    wait_phase(&rig, MigrationPhase::RolledBack, 180).await;
    let rollback_time = t1.elapsed();
    assert_original(
        &rig,
        &baseline,
        &before[&Step::ControlPlane],
        "the undisturbed rollback",
        false,
    )
    .await;
    gone(&rig).await;

    let mut outcomes = Vec::new();
    let mut trial = 0;
    while trial < trials {
        // A migration trial: kill at a random point, maybe twice.
        rig.apply_migration(NAME, json!({})).await;
        let mut kills = Vec::new();
        for _ in 0..=rng.below(2) {
            let at = Duration::from_millis(rng.below(migrate_time.as_millis() as u64));
            tokio::time::sleep(at).await;
            rig.kill_operator("op-a").await;
            tokio::time::sleep(Duration::from_millis(rng.below(500))).await;
            rig.start_operator("op-a").await;
            kills.push(at);
        }
        wait_phase(&rig, MigrationPhase::Completed, 240).await;
        let state = rig.namespace_state(NS).await;
        pretty_assertions::assert_eq!(
            state,
            reference_state,
            "trial {trial}: migrated state differs (kills at {kills:?})"
        );
        rig.assert_migrated("bookinfo").await;
        let snaps = snapshots(&rig).await;
        pretty_assertions::assert_eq!(
            snaps,
            reference_snapshots,
            "trial {trial}: snapshots differ (kills at {kills:?})"
        );
        outcomes.push(format!("trial {trial:2}: migration, SIGKILL at {kills:?}: completed, state and 8 snapshots identical"));
        trial += 1;
        if trial >= trials {
            rig.annotate(NAME, mn::ANNOTATION_ROLLBACK, Some("all"))
                .await;
            wait_phase(&rig, MigrationPhase::RolledBack, 180).await;
            rig.wait_available("bookinfo").await;
            gone(&rig).await;
            break;
        }

        // A rollback trial, to each target in turn.
        let target = ROLLBACK_TARGETS[(trial / 2) % ROLLBACK_TARGETS.len()];
        rig.annotate(
            NAME,
            mn::ANNOTATION_ROLLBACK,
            Some(&states::rollback_value(target)),
        )
        .await;
        let mut kills = Vec::new();
        for _ in 0..=rng.below(2) {
            let at = Duration::from_millis(rng.below(rollback_time.as_millis() as u64));
            tokio::time::sleep(at).await;
            rig.kill_operator("op-a").await;
            tokio::time::sleep(Duration::from_millis(rng.below(500))).await;
            rig.start_operator("op-a").await;
            kills.push(at);
        }
        states::rolled_back(&rig, NAME, target, 240).await;
        let what = format!("trial {trial}: rollback to {target} (kills at {kills:?})");
        states::assert_state_as(
            &rig,
            &before[&target.max(Step::ControlPlane)],
            &what,
            states::any_hbone(target),
        )
        .await;
        if target > Step::Prerequisites {
            // The rest of the way, undisturbed, to compare with the original objects.
            states::roll_back(&rig, NAME, Step::Prerequisites).await;
        }
        // After a rollback to 3, step 3's restarts already ran under the ambient control
        // plane; the rest of the way restores the control plane but restarts nothing.
        assert_original(
            &rig,
            &baseline,
            &before[&Step::ControlPlane],
            &what,
            states::any_hbone(target),
        )
        .await;
        outcomes.push(format!("trial {trial:2}: rollback to {target}, SIGKILL at {kills:?}: rolled back, Pods and objects as before step {target}, then every original object identical, nothing left"));
        trial += 1;
        gone(&rig).await;
    }
    let report = format!(
        "crash-resume: seed {seed}, {} trials, undisturbed migration {migrate_time:?}, rollback {rollback_time:?}, failures 0\n{}\n",
        outcomes.len(),
        outcomes.join("\n")
    );
    println!("{report}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/reliability");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("crash.txt"), &report);
}

/// What a SIGKILL between a reconcile's work and its status write leaves, made on purpose:
/// the operator froze the plan and carried out step 2, and status does not say so. The next
/// operator resumes with the stored plan (planning again from a cluster that step 2 already
/// changed would plan another migration: for pods re-injected by an earlier rollback it drops
/// step 3 and its snapshot), and a rollback undoes step 2 although status never recorded it.
#[tokio::test(flavor = "multi_thread")]
async fn a_status_write_lost_after_the_plan_froze_resumes_with_that_plan_and_undoes_it() {
    const NAME: &str = "lost-write";
    let mut rig = Rig::new(&[]).await;
    rig.kill_operator("op-a").await;
    rig.operator_args = vec!["--leader-election=false".into()];
    rig.start_operator("op-a").await;
    let baseline = rig.user_objects("bookinfo").await;
    let held = |mm: &meshmig_api::MeshMigration| {
        mm.status
            .as_ref()
            .and_then(|s| s.namespaces.first())
            .is_some_and(|n| {
                n.step == Step::HboneSidecars && n.phase == meshmig_api::NamespacePhase::Waiting
            })
    };
    rig.apply_migration(NAME, json!({"pauseBefore": [3]})).await;
    rig.wait_mm(NAME, "held before step 3", 120, held).await;
    let plans: Api<ConfigMap> = rig.env.api_in("meshmig-system");
    let plan_cm = meshmig_operator::frozen::config_map_name(NAME);
    let frozen_uid = plans.get(&plan_cm).await.unwrap().uid();
    assert!(
        rig.user_objects("bookinfo").await != baseline,
        "step 2 changed the control plane"
    );

    let lose_status = async |rig: &mut Rig| {
        rig.kill_operator("op-a").await;
        rig.migrations()
            .patch_status(
                NAME,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"status": null})),
            )
            .await
            .unwrap();
        let mm = rig.migrations().get(NAME).await.unwrap();
        assert!(mm.status.is_none_or(|s| s.plan.is_none()), "status kept");
    };
    lose_status(&mut rig).await;
    rig.start_operator("op-a").await;
    let mm = rig
        .wait_mm(NAME, "held before step 3 after the lost write", 120, held)
        .await;
    assert_eq!(
        plans.get(&plan_cm).await.unwrap().uid(),
        frozen_uid,
        "the plan was frozen again from the changed cluster"
    );
    assert_eq!(
        mm.status
            .and_then(|s| s.plan)
            .and_then(|p| p.config_map_uid),
        frozen_uid,
        "status records the stored plan"
    );

    lose_status(&mut rig).await;
    rig.annotate(NAME, mn::ANNOTATION_ROLLBACK, Some("all"))
        .await;
    rig.start_operator("op-a").await;
    wait_phase_of(&rig, NAME, MigrationPhase::RolledBack, 180).await;
    rig.wait_available("bookinfo").await;
    pretty_assertions::assert_eq!(
        rig.user_objects("bookinfo").await,
        baseline,
        "step 2 left in place"
    );
    let leftovers = rig.meshmig_objects().await;
    assert!(leftovers.is_empty(), "leftovers {leftovers:?}");
}
