//! The operator on a real API server (e2e/testenv) with the mesh simulator: bookinfo is
//! migrated, paused, approved, rolled back, failed, crashed and resumed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use common::*;
use meshmig_api::Step;
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use meshmig_api::names as mn;
use meshmig_api::{CheckResult, MigrationPhase, NamespacePhase};
use meshmig_e2e_harness::{Pending, wait_for};
use serde_json::json;
use tokio::process::Command;

#[tokio::test(flavor = "multi_thread")]
async fn bookinfo_migrates_to_ready() {
    let rig = Rig::new(&[]).await;
    rig.apply_migration("bookinfo", json!({"checkpoints": {"timeout": "2m", "probes": [
        {"name": "reads", "fromNamespace": "bookinfo", "serviceAccount": "bookinfo-productpage", "url": "http://reviews.bookinfo:9080/", "expect": {"status": 200}},
        {"name": "denied", "fromNamespace": "bookinfo", "serviceAccount": "bookinfo-ratings", "url": "http://reviews.bookinfo:9080/", "expect": {"denied": true}}
    ]}}))
    .await;
    // `kubectl wait` is how users and pipelines wait for it.
    let out = rig
        .env
        .kubectl([
            "wait",
            "--for=condition=Ready",
            "meshmigration/bookinfo",
            "--timeout=150s",
        ])
        .await;
    assert!(out.is_ok(), "{out:?}\n{}", rig.log_tail());
    rig.assert_migrated("bookinfo").await;
    let mm = rig.migrations().get("bookinfo").await.unwrap();
    let st = mm.status.unwrap();
    assert_eq!(st.phase, Some(MigrationPhase::Completed));
    assert_eq!(st.observed_generation, mm.metadata.generation);
    let ns = &st.namespaces[0];
    assert_eq!(ns.history.len(), 9);
    assert!(ns.snapshots.len() >= 7, "{:?}", ns.snapshots);
    // Probe Pods are cleaned up.
    let pods: Api<Pod> = rig.env.api_in("bookinfo");
    wait_for("probe Pods removed", Duration::from_secs(30), async || {
        let left = pods
            .list(&ListParams::default().labels(mn::LABEL_PROBE))
            .await?
            .items
            .len();
        if left == 0 {
            Ok(())
        } else {
            Err(Pending::new(format!("{left} left")))
        }
    })
    .await
    .unwrap();
    // Events for step start and pass.
    let all = migration_events(&rig.env).await;
    assert!(
        all.contains("StepStarted") && all.contains("StepPassed"),
        "{all}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_all_after_each_step_restores_every_original_object() {
    let rig = Rig::new(&[]).await;
    let baseline = rig.user_objects("bookinfo").await;
    assert!(baseline.len() > 10);
    let original = common::states::state(&rig).await;
    for k in Step::range(Step::ControlPlane, Step::LAST) {
        let name = format!("rb-{k}");
        let spec = match k.next() {
            Some(next) => json!({"pauseBefore": [next]}),
            None => json!({}),
        };
        rig.apply_migration(&name, spec).await;
        rig.wait_mm(&name, &format!("held after step {k}"), 120, |mm| {
            let st = mm.status.clone().unwrap_or_default();
            st.namespaces.first().is_some_and(|n| {
                (k.next() == Some(n.step) && n.phase == NamespacePhase::Waiting)
                    || (k == Step::LAST && n.phase == NamespacePhase::Completed)
            })
        })
        .await;
        rig.annotate(&name, mn::ANNOTATION_ROLLBACK, Some("all"))
            .await;
        let mm = rig
            .wait_mm(&name, "rolled back", 180, |mm| {
                phase(mm) == Some(MigrationPhase::RolledBack)
            })
            .await;
        assert!(
            mm.status
                .as_ref()
                .unwrap()
                .conditions
                .iter()
                .any(|c| c.type_ == mn::CONDITION_ROLLED_BACK && c.status == "True")
        );
        rig.wait_available("bookinfo").await;
        let after = rig.user_objects("bookinfo").await;
        for (key, before) in &baseline {
            let now = after
                .get(key)
                .unwrap_or_else(|| panic!("after rollback from step {k}: {key} is gone"));
            pretty_assertions::assert_eq!(
                before,
                now,
                "after rollback from step {k}: {key} differs"
            );
        }
        assert_eq!(
            after.len(),
            baseline.len(),
            "after rollback from step {k}: objects {:?}",
            after.keys().collect::<Vec<_>>()
        );
        let leftovers = rig.meshmig_objects().await;
        assert!(
            leftovers.is_empty(),
            "after rollback from step {k}, meshmig objects remain: {leftovers:?}"
        );
        // Every Pod is back in the mesh mode it had (the control plane is restored before
        // step 3's restarts, so even the HBONE setting is as before).
        common::states::assert_state(&rig, &original, &format!("after rollback from step {k}"))
            .await;
        rig.delete_migration(&name).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_before_holds_until_approved_and_paused_holds_until_removed() {
    let rig = Rig::new(&[]).await;
    rig.apply_migration("held", json!({"pauseBefore": [4]}))
        .await;
    let mm = rig
        .wait_mm("held", "waiting for approval of step 4", 90, |mm| {
            mm.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == mn::CONDITION_PAUSED && c.status == "True")
            })
        })
        .await;
    assert_eq!(
        mm.status.as_ref().unwrap().namespaces[0].step,
        Step::Waypoints
    );
    // Still held a moment later.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mm = rig.migrations().get("held").await.unwrap();
    assert_eq!(
        mm.status.as_ref().unwrap().namespaces[0].phase,
        NamespacePhase::Waiting
    );
    // Pause, then approve: the pause annotation still holds.
    rig.annotate("held", mn::ANNOTATION_PAUSED, Some("true"))
        .await;
    rig.annotate("held", mn::ANNOTATION_APPROVE, Some("4"))
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mm = rig.migrations().get("held").await.unwrap();
    let ns = &mm.status.as_ref().unwrap().namespaces[0];
    assert_eq!(
        (ns.step, ns.phase),
        (Step::Waypoints, NamespacePhase::Waiting),
        "{:?}",
        ns.message
    );
    assert_eq!(phase(&mm), Some(MigrationPhase::Paused));
    // Removing it resumes, to the end.
    rig.annotate("held", mn::ANNOTATION_PAUSED, None).await;
    rig.wait_mm("held", "completed", 150, |mm| {
        phase(mm) == Some(MigrationPhase::Completed)
    })
    .await;
    rig.assert_migrated("bookinfo").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_probe_at_step_seven_rolls_back_with_the_check_named() {
    let rig = Rig::new(&[]).await;
    let baseline = rig.user_objects("bookinfo").await;
    // A probe that is wrong about the policy: ratings may not read reviews (reviews-viewer
    // admits productpage only), so istiod's RBAC for the reviews sidecar answers 403.
    rig.apply_migration("failing", json!({"onFailure": "Rollback", "checkpoints": {"probes": [
        {"name": "l7-check", "fromNamespace": "bookinfo", "serviceAccount": "bookinfo-ratings", "url": "http://reviews.bookinfo:9080/", "expect": {"status": 200}, "steps": [7]}
    ]}}))
    .await;
    let mm = rig
        .wait_mm("failing", "rolled back", 180, |mm| {
            phase(mm) == Some(MigrationPhase::RolledBack)
        })
        .await;
    let st = mm.status.unwrap();
    let rb = st.rollback.unwrap();
    assert_eq!(rb.requested_by, meshmig_api::RequestedBy::OnFailure);
    let reason = rb.reason.unwrap_or_default();
    assert!(
        reason.contains("step 7") && reason.contains("probe l7-check"),
        "{reason}"
    );
    let cond = st
        .conditions
        .iter()
        .find(|c| c.type_ == mn::CONDITION_ROLLED_BACK)
        .unwrap();
    assert!(cond.message.contains("l7-check"), "{}", cond.message);
    assert!(reason.contains("403"), "the probe's own answer: {reason}");
    let events = migration_events(&rig.env).await;
    assert!(
        events
            .lines()
            .any(|l| l.starts_with("StepFailed") && l.contains("l7-check")),
        "{events}"
    );
    assert!(events.contains("RolledBack"), "{events}");
    rig.wait_available("bookinfo").await;
    let after = rig.user_objects("bookinfo").await;
    assert_eq!(after, baseline);
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_operator_mid_migration_resumes_to_the_same_end_state() {
    let mut rig = Rig::new(&[]).await;
    rig.apply_migration("crashy", json!({})).await;
    let mut kills = 0;
    // Kill it at every step it reaches, while the step is being applied or validated.
    for target in [
        Step::HboneSidecars,
        Step::Policies,
        Step::WaypointActivation,
        Step::SidecarRemoval,
    ] {
        rig.wait_mm("crashy", &format!("step {target}"), 120, |mm| {
            mm.status
                .as_ref()
                .and_then(|s| s.namespaces.first())
                .is_some_and(|n| n.step >= target || n.phase == NamespacePhase::Completed)
        })
        .await;
        rig.kill_operator("op-a").await;
        kills += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
        rig.start_operator("op-a").await;
    }
    assert_eq!(kills, 4);
    let mm = rig
        .wait_mm("crashy", "completed", 180, |mm| {
            phase(mm) == Some(MigrationPhase::Completed)
        })
        .await;
    rig.assert_migrated("bookinfo").await;
    // Each step was snapshotted exactly once.
    let cms: Api<ConfigMap> = rig.env.api_in("bookinfo");
    let snaps = cms
        .list(&ListParams::default().labels(&format!(
            "{}=true,{}=crashy",
            mn::LABEL_SNAPSHOT,
            mn::LABEL_MIGRATION
        )))
        .await
        .unwrap();
    let mut steps: Vec<String> = snaps
        .items
        .iter()
        .map(|c| c.labels()[mn::LABEL_STEP].clone())
        .collect();
    steps.sort();
    let mut dedup = steps.clone();
    dedup.dedup();
    assert_eq!(steps, dedup, "duplicate snapshots");
    assert_eq!(mm.status.unwrap().namespaces[0].history.len(), 9);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_namespaces_respect_the_barriers() {
    let rig = Rig::new(&["bookinfo2"]).await;
    // productpage admits any caller for GET: callers in bookinfo2 still have sidecars after
    // bookinfo's step 9 and skip the waypoint's method check until they migrate too. The
    // planner reports that window; this migration accepts it.
    rig.apply_migration(
        "pair",
        json!({"namespaces": ["bookinfo", "bookinfo2"], "acceptedFindings": ["enforcement-fail-open"]}),
    )
    .await;
    let mm = rig
        .wait_mm("pair", "completed", 240, |mm| {
            phase(mm) == Some(MigrationPhase::Completed)
        })
        .await;
    rig.assert_migrated("bookinfo").await;
    rig.assert_migrated("bookinfo2").await;
    let st = mm.status.unwrap();
    let at = |step: Step, started: bool| -> Vec<k8s_openapi::jiff::Timestamp> {
        st.namespaces
            .iter()
            .map(|n| {
                let h = n.history.iter().find(|h| h.step == step).unwrap();
                if started {
                    h.started_at.0
                } else {
                    h.completed_at.as_ref().unwrap().0
                }
            })
            .collect()
    };
    for (barrier, before) in [
        (Step::WaypointActivation, Step::AmbientEnrollment),
        (Step::SidecarRemoval, Step::PolicySimplification),
    ] {
        let last_done = at(before, false).into_iter().max().unwrap();
        for start in at(barrier, true) {
            assert!(
                start >= last_done,
                "step {barrier} started at {start} before every namespace finished step {before} ({last_done})"
            );
        }
    }
    // Listed ordering: step 9 of bookinfo2 started after bookinfo finished it.
    let b1 = st.namespaces.iter().find(|n| n.name == "bookinfo").unwrap();
    let b2 = st
        .namespaces
        .iter()
        .find(|n| n.name == "bookinfo2")
        .unwrap();
    let done1 = b1
        .history
        .iter()
        .find(|h| h.step == Step::SidecarRemoval)
        .unwrap()
        .completed_at
        .as_ref()
        .unwrap()
        .0;
    let start2 = b2
        .history
        .iter()
        .find(|h| h.step == Step::SidecarRemoval)
        .unwrap()
        .started_at
        .0;
    assert!(start2 >= done1);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_only_the_leader_reconciles_and_a_killed_leader_is_replaced() {
    let mut rig = Rig::new(&[]).await;
    rig.start_operator("op-b").await;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = rig.env.api_in("meshmig-system");
    let holder = async |leases: &Api<k8s_openapi::api::coordination::v1::Lease>| -> Option<String> {
        leases
            .get_opt("meshmig-operator")
            .await
            .ok()
            .flatten()?
            .spec?
            .holder_identity
    };
    let first = wait_for("a leader", Duration::from_secs(30), async || {
        holder(&leases)
            .await
            .filter(|h| !h.is_empty())
            .ok_or_else(|| Pending::new("no holder"))
    })
    .await
    .unwrap();
    let (leader, standby) = if first.starts_with("op-a") {
        ("op-a", "op-b")
    } else {
        ("op-b", "op-a")
    };
    rig.apply_migration("ha", json!({})).await;
    rig.wait_mm("ha", "step 4", 120, |mm| {
        mm.status
            .as_ref()
            .and_then(|s| s.namespaces.first())
            .is_some_and(|n| n.step >= Step::Waypoints)
    })
    .await;
    // Only the leader acted so far.
    let standby_log = std::fs::read_to_string(rig.log_of(standby)).unwrap_or_default();
    assert!(
        !standby_log.contains("snapshot taken") && !standby_log.contains("plan frozen"),
        "the standby reconciled:\n{standby_log}\nleader's log:\n{}",
        std::fs::read_to_string(rig.log_of(leader)).unwrap_or_default()
    );
    assert!(standby_log.contains("waiting for the leader lease"));
    let killed_at = std::time::Instant::now();
    rig.kill_operator(leader).await;
    let new = wait_for(
        "the standby takes the lease",
        Duration::from_secs(20),
        async || {
            holder(&leases)
                .await
                .filter(|h| h.starts_with(standby))
                .ok_or_else(|| Pending::new("not yet"))
        },
    )
    .await
    .unwrap();
    let handover = killed_at.elapsed();
    // Lease of 4s: the standby takes over once it expires (plus its retry interval).
    assert!(
        handover < Duration::from_secs(12),
        "handover took {handover:?}"
    );
    assert!(new.starts_with(standby));
    rig.wait_mm("ha", "completed by the new leader", 150, |mm| {
        phase(mm) == Some(MigrationPhase::Completed)
    })
    .await;
    rig.assert_migrated("bookinfo").await;
    let standby_log = std::fs::read_to_string(rig.log_of(standby)).unwrap_or_default();
    assert!(
        standby_log.contains("acquired the leader lease"),
        "{standby_log}"
    );
}

/// Replicas that find the Lease free at the same moment: exactly one leads. All replicas once
/// applied the Lease under one field manager, so a replica whose apply reached the API server
/// after another's had won overwrote the holder without a conflict, and for a renewal period
/// two controllers acted (seen in CI: the standby took a snapshot). The last round makes that
/// interleaving certain: one replica's Lease writes pass a proxy that holds them for a second,
/// so its apply arrives after the other replica has taken the free Lease.
#[tokio::test(flavor = "multi_thread")]
async fn replicas_racing_for_a_free_lease_elect_exactly_one_leader() {
    use meshmig_faultproxy::{FaultConfig, FaultKind, FaultProxy, Filter};
    use meshmig_operator::run::{LEASE_NAME, lease_manager};
    let env = meshmig_e2e_harness::TestEnv::start().await.unwrap();
    env.apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata: {name: race}\n")
        .await
        .unwrap();
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = env.api_in("race");
    let slow = FaultProxy::start(
        env.kubeconfig(),
        FaultConfig {
            rate: 1.0,
            filter: Filter::only("patch", "leases"),
            kinds: vec![FaultKind::Slow],
            slow: (Duration::from_secs(1), Duration::from_secs(1)),
            ..FaultConfig::default()
        },
    )
    .await
    .unwrap();
    let slow_client = meshmig_e2e_harness::client_for(slow.kubeconfig_path())
        .await
        .unwrap();
    // Rounds of six replicas on the API server, then the staged round: the slow replica
    // first, the other once the proxy holds the slow one's apply of the free Lease.
    let mut rounds: Vec<Vec<kube::Client>> = vec![vec![env.client(); 6]; 3];
    rounds.push(vec![slow_client, env.client()]);
    let staged = rounds.len() - 1;
    for (round, clients) in rounds.into_iter().enumerate() {
        let mut managers = Vec::new();
        for (i, client) in clients.into_iter().enumerate() {
            let id = format!("r{round}-{i}");
            managers.push((
                id.clone(),
                lease_manager(client, "race", &id, 30).await.unwrap(),
            ));
        }
        let (won_tx, mut won_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut racers = Vec::new();
        for (i, (id, m)) in managers.into_iter().enumerate() {
            if round == staged && i == 1 {
                wait_for(
                    "the slow replica's apply held",
                    Duration::from_secs(20),
                    async || {
                        (slow.stats().call("patch leases").requests > 0)
                            .then_some(())
                            .ok_or_else(|| Pending::new("no Lease patch yet"))
                    },
                )
                .await
                .unwrap();
            }
            let won_tx = won_tx.clone();
            racers.push(tokio::spawn(async move {
                // A standby waits here for the Lease to expire; a leader answers at once.
                if let Ok(true) = m.changed().await {
                    let _ = won_tx.send((id, m));
                }
            }));
        }
        let mut leaders = vec![
            tokio::time::timeout(Duration::from_secs(30), won_rx.recv())
                .await
                .unwrap_or_else(|_| panic!("round {round}: nobody took the free Lease"))
                .unwrap(),
        ];
        // Long enough for a delayed replica's apply, transition count and re-read (3 s).
        tokio::time::sleep(Duration::from_secs(4)).await;
        for r in &racers {
            r.abort();
        }
        while let Ok(other) = won_rx.try_recv() {
            leaders.push(other);
        }
        let holder = leases
            .get(LEASE_NAME)
            .await
            .unwrap()
            .spec
            .and_then(|s| s.holder_identity);
        let ids: Vec<&str> = leaders.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(
            ids.len(),
            1,
            "round {round}: leaders {ids:?}, Lease held by {holder:?}"
        );
        assert_eq!(holder.as_deref(), Some(ids[0]), "round {round}");
        if round == staged {
            // The interleaving happened: the slow replica's apply reached a taken Lease.
            let refused = slow.writes().iter().any(|w| {
                w.verb == "patch" && w.resource.starts_with("leases") && w.status == Some(409)
            });
            assert!(refused, "{:#?}", slow.writes());
            assert_eq!(ids, [format!("r{staged}-1")]);
        }
        // Free the Lease for the next round's race.
        leaders[0].1.release().await.unwrap();
    }
}

/// An HTTP GET on 127.0.0.1 without a client library (plain HTTP/1.0).
async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_and_health_endpoints_report_the_migration() {
    let mut rig = Rig::new(&[]).await;
    // Replace the default operator with one on a known port.
    rig.kill_operator("op-a").await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = std::fs::File::create(rig.env.dir().join("operator-metrics.log")).unwrap();
    let _op = Command::new(env!("CARGO_BIN_EXE_meshmig-operator"))
        .args([
            "--namespace",
            "meshmig-system",
            "--http-addr",
            &format!("127.0.0.1:{port}"),
            "--lease-seconds",
            "4",
        ])
        .env("KUBECONFIG", rig.env.kubeconfig())
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_for("/readyz", Duration::from_secs(30), async || {
        let r = tokio::time::timeout(Duration::from_secs(2), async {
            match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                Ok(_) => Ok(http_get(port, "/readyz").await),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
        .map_err(|e| Pending::new(e.to_string()))?
        .map_err(Pending::new)?;
        if r.starts_with("HTTP/1.0 200") || r.starts_with("HTTP/1.1 200") {
            Ok(())
        } else {
            Err(Pending::new(r))
        }
    })
    .await
    .unwrap();
    assert!(http_get(port, "/healthz").await.contains("200 OK"));
    rig.apply_migration("metered", json!({})).await;
    rig.wait_mm("metered", "completed", 150, |mm| {
        phase(mm) == Some(MigrationPhase::Completed)
    })
    .await;
    let body = http_get(port, "/metrics").await;
    for needle in [
        "meshmig_reconciles_total",
        "meshmig_reconcile_duration_seconds_bucket",
        "meshmig_migrations{phase=\"Completed\"} 1",
        "meshmig_checkpoint_results_total{check=\"waypoint-programmed\",result=\"Pass\"}",
        "meshmig_step_duration_seconds_count{step=\"9\"} 1",
        "meshmig_api_requests_total{verb=\"watch\",resource=\"pods\"}",
        "meshmig_api_requests_total{verb=\"patch\",resource=\"meshmigrations/status\"}",
        "meshmig_leader 1",
        "meshmig_reconcile_errors_total{reason=\"conflict\"}",
        "meshmig_api_errors_total{code=\"404\"}",
    ] {
        assert!(body.contains(needle), "/metrics lacks {needle}:\n{body}");
    }
    assert!(body.contains("application/openmetrics-text"));
    // The operator never asks for Secrets.
    assert!(
        !body.contains("resource=\"secrets\""),
        "the operator requested Secrets:\n{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn safety_rails_claims_on_delete_rollback_and_a_vanished_namespace() {
    let mut rig = Rig::new(&[]).await;
    let baseline = rig.user_objects("bookinfo").await;
    // A spec naming the operator's own namespace is Stalled with the field named.
    rig.env
        .apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n")
        .await
        .unwrap();
    rig.apply_migration("own", json!({"namespaces": ["meshmig-system"]}))
        .await;
    let mm = rig
        .wait_mm("own", "stalled", 30, |mm| {
            phase(mm) == Some(MigrationPhase::Stalled)
        })
        .await;
    let stalled = mm
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == mn::CONDITION_STALLED)
        .unwrap();
    assert_eq!(stalled.status, "True");
    assert!(
        stalled.message.contains("spec.namespaces")
            && stalled.message.contains("operator's own namespace"),
        "{}",
        stalled.message
    );
    rig.delete_migration("own").await;

    // The first claims bookinfo; a newcomer on the same namespace is Stalled and changes nothing.
    rig.apply_migration("first", json!({"pauseBefore": [5], "onDelete": "Rollback"}))
        .await;
    rig.wait_mm("first", "held before step 5", 90, |mm| {
        mm.status
            .as_ref()
            .and_then(|s| s.namespaces.first())
            .is_some_and(|n| n.step == Step::Policies && n.phase == NamespacePhase::Waiting)
    })
    .await;
    rig.apply_migration("second", json!({})).await;
    let mm = rig
        .wait_mm("second", "stalled by the claim", 30, |mm| {
            phase(mm) == Some(MigrationPhase::Stalled)
        })
        .await;
    let msg = &mm
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == mn::CONDITION_STALLED)
        .unwrap()
        .message;
    assert!(msg.contains("MeshMigration first"), "{msg}");
    rig.delete_migration("second").await;

    // onDelete: Rollback undoes steps 4..2 before the finalizer lets it go.
    rig.delete_migration("first").await;
    rig.wait_available("bookinfo").await;
    assert_eq!(rig.user_objects("bookinfo").await, baseline);
    let leftovers = rig.meshmig_objects().await;
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A target namespace that disappears mid-way is reported, not crashed on.
    rig.env
        .apply_yaml(
            &std::fs::read_to_string(format!("{BOOKINFO}/10-bookinfo.yaml"))
                .unwrap()
                .replace("namespace: bookinfo", "namespace: gone")
                .replace("name: bookinfo\n", "name: gone\n"),
        )
        .await
        .unwrap();
    rig.wait_available("gone").await;
    rig.apply_migration(
        "vanishing",
        json!({"namespaces": ["gone"], "pauseBefore": [4]}),
    )
    .await;
    rig.wait_mm("vanishing", "held before step 4", 90, |mm| {
        mm.status
            .as_ref()
            .and_then(|s| s.namespaces.first())
            .is_some_and(|n| n.step == Step::Waypoints && n.phase == NamespacePhase::Waiting)
    })
    .await;
    rig.env
        .kubectl(["delete", "namespace", "gone", "--wait=false"])
        .await
        .unwrap();
    rig.annotate("vanishing", mn::ANNOTATION_APPROVE, Some("4"))
        .await;
    let mm = rig
        .wait_mm("vanishing", "failed, naming the namespace", 120, |mm| {
            phase(mm) == Some(MigrationPhase::Failed)
        })
        .await;
    let ns = &mm.status.as_ref().unwrap().namespaces[0];
    assert!(
        ns.message.as_deref().unwrap_or_default().contains("gone"),
        "{:?}",
        ns.message
    );
    // The operator is still alive and serving the other migrations.
    assert!(
        rig.operators
            .iter_mut()
            .all(|(_, c)| c.try_wait().unwrap().is_none()),
        "the operator exited:\n{}",
        rig.log_tail()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn drift_is_repaired_or_reported_and_a_lost_snapshot_holds_the_migration() {
    let rig = Rig::new(&[]).await;
    rig.apply_migration("drifty", json!({"pauseBefore": [7, 8]}))
        .await;
    let held = |step: Step| {
        move |mm: &meshmig_api::MeshMigration| {
            mm.status
                .as_ref()
                .and_then(|s| s.namespaces.first())
                .is_some_and(|n| n.step == step && n.phase == NamespacePhase::Waiting)
        }
    };
    rig.wait_mm(
        "drifty",
        "held before step 7",
        90,
        held(Step::WaypointActivation),
    )
    .await;
    // Someone deletes bypass protection and edits a waypoint copy.
    rig.env
        .kubectl([
            "delete",
            "authorizationpolicy",
            "-n",
            "bookinfo",
            "meshmig-bypass-reviews",
        ])
        .await
        .unwrap();
    rig.env
        .kubectl(["delete", "service", "-n", "bookinfo", "reviews-v3"])
        .await
        .unwrap();
    rig.annotate("drifty", mn::ANNOTATION_APPROVE, Some("7"))
        .await;
    rig.wait_mm(
        "drifty",
        "held before step 8",
        120,
        held(Step::PolicySimplification),
    )
    .await;
    let aps = rig.dynamic(
        "security.istio.io",
        "v1",
        "AuthorizationPolicy",
        "authorizationpolicies",
        Some("bookinfo"),
    );
    assert!(
        aps.get_opt("meshmig-bypass-reviews")
            .await
            .unwrap()
            .is_some(),
        "bypass protection was not recreated"
    );
    let svcs: Api<k8s_openapi::api::core::v1::Service> = rig.env.api_in("bookinfo");
    assert!(
        svcs.get_opt("reviews-v3").await.unwrap().is_some(),
        "per-version Service was not recreated"
    );
    let events = migration_events(&rig.env).await;
    assert!(
        events
            .lines()
            .any(|l| l.starts_with("DriftRepaired") && l.contains("meshmig-bypass-reviews")),
        "{events}"
    );

    // A snapshot the migration would need to undo a step disappears: it holds, and says so.
    let cms: Api<ConfigMap> = rig.env.api_in("bookinfo");
    cms.delete("meshmig-drifty-step5", &Default::default())
        .await
        .unwrap();
    rig.annotate("drifty", mn::ANNOTATION_APPROVE, Some("8"))
        .await;
    let mm = rig
        .wait_mm("drifty", "stalled on the missing snapshot", 60, |mm| {
            phase(mm) == Some(MigrationPhase::Stalled)
        })
        .await;
    let st = mm.status.unwrap();
    let c = st
        .conditions
        .iter()
        .find(|c| c.type_ == mn::CONDITION_STALLED)
        .unwrap();
    assert_eq!(c.reason, "SnapshotMissing");
    assert!(
        c.message.contains("bookinfo/meshmig-drifty-step5"),
        "{}",
        c.message
    );
    assert_eq!(st.namespaces[0].step, Step::PolicySimplification);
    assert_eq!(
        st.namespaces[0].phase,
        NamespacePhase::Waiting,
        "it must not proceed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_object_edited_after_planning_fails_the_step_that_would_replace_it() {
    let rig = Rig::new(&[]).await;
    rig.apply_migration("edited", json!({"pauseBefore": [7]}))
        .await;
    rig.wait_mm("edited", "held before step 7", 90, |mm| {
        mm.status
            .as_ref()
            .and_then(|s| s.namespaces.first())
            .is_some_and(|n| {
                n.step == Step::WaypointActivation && n.phase == NamespacePhase::Waiting
            })
    })
    .await;
    // Someone changes the VirtualService the planned HTTPRoute replaces.
    rig.env
        .kubectl([
            "patch",
            "virtualservice",
            "-n",
            "bookinfo",
            "reviews",
            "--type",
            "json",
            "-p",
            r#"[{"op":"replace","path":"/spec/http/0/route/0/destination/subset","value":"v3"}]"#,
        ])
        .await
        .unwrap();
    rig.annotate("edited", mn::ANNOTATION_APPROVE, Some("7"))
        .await;
    let mm = rig
        .wait_mm("edited", "failed", 60, |mm| {
            phase(mm) == Some(MigrationPhase::Failed)
        })
        .await;
    let msg = mm.status.unwrap().namespaces[0]
        .message
        .clone()
        .unwrap_or_default();
    assert!(
        msg.contains("VirtualService/bookinfo/reviews changed since the plan was frozen"),
        "{msg}"
    );
    // Nothing of step 7 happened: the VirtualService is still there, no route was applied.
    let vs = rig.dynamic(
        "networking.istio.io",
        "v1",
        "VirtualService",
        "virtualservices",
        Some("bookinfo"),
    );
    assert!(vs.get_opt("reviews").await.unwrap().is_some());
    let ns = rig
        .env
        .api::<k8s_openapi::api::core::v1::Namespace>()
        .get("bookinfo")
        .await
        .unwrap();
    assert!(
        !ns.labels()
            .contains_key(meshmig_api::names::istio::USE_WAYPOINT)
    );
}

/// With the real istiod, a Service bound to a waypoint that does not exist gets
/// `istio.io/WaypointBound=False` from istiod: step 7's checkpoint holds with istiod's reason
/// and message, and proceeds once the binding is fixed.
#[tokio::test(flavor = "multi_thread")]
async fn step_seven_holds_while_istiod_reports_a_service_not_bound() {
    let rig = Rig::new(&[]).await;
    rig.apply_migration("bound", json!({"pauseBefore": [7]}))
        .await;
    rig.wait_mm("bound", "held before step 7", 180, |mm| {
        mm.status
            .as_ref()
            .and_then(|s| s.namespaces.first())
            .is_some_and(|n| {
                n.step == Step::WaypointActivation && n.phase == NamespacePhase::Waiting
            })
    })
    .await;
    // The Service's own label wins over the namespace's that step 7 sets.
    let services: kube::Api<k8s_openapi::api::core::v1::Service> = rig.env.api_in("bookinfo");
    let label = |v: Option<&str>| json!({"metadata": {"labels": {"istio.io/use-waypoint": v}}});
    services
        .patch(
            "reviews",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&label(Some("ghost"))),
        )
        .await
        .unwrap();
    rig.annotate("bound", mn::ANNOTATION_APPROVE, Some("7"))
        .await;
    let mm = rig
        .wait_mm("bound", "step 7 held by services-bound", 120, |mm| {
            mm.status
                .as_ref()
                .and_then(|s| s.namespaces.first())
                .and_then(|n| n.checks.iter().find(|c| c.name == "services-bound"))
                .is_some_and(|c| {
                    c.result == CheckResult::Pending
                        && c.message.contains("Service bookinfo/reviews (")
                })
        })
        .await;
    let ns = &mm.status.as_ref().unwrap().namespaces[0];
    let check = ns
        .checks
        .iter()
        .find(|c| c.name == "services-bound")
        .unwrap();
    println!("istiod says: {}", check.message);
    // Still there a while later: the checkpoint does not pass on its own.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let mm = rig.migrations().get("bound").await.unwrap();
    let ns = &mm.status.as_ref().unwrap().namespaces[0];
    assert_eq!(
        (ns.step, ns.phase),
        (Step::WaypointActivation, NamespacePhase::Validating),
        "{:?}",
        ns.message
    );
    services
        .patch(
            "reviews",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&label(None)),
        )
        .await
        .unwrap();
    rig.wait_mm("bound", "Completed", 180, |mm| {
        phase(mm) == Some(MigrationPhase::Completed)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_that_opens_access_mid_migration_fails_the_gate() {
    let rig = Rig::new(&[]).await;
    rig.apply_migration("opened", json!({"pauseBefore": [9], "checkpoints": {"probes": [
        {"name": "ratings-may-not-read-reviews", "fromNamespace": "bookinfo", "serviceAccount": "bookinfo-ratings", "url": "http://reviews.bookinfo:9080/", "expect": {"denied": true}}
    ]}}))
    .await;
    rig.wait_mm("opened", "held before step 9", 180, |mm| {
        mm.status
            .as_ref()
            .and_then(|s| s.namespaces.first())
            .is_some_and(|n| n.step == Step::SidecarRemoval && n.phase == NamespacePhase::Waiting)
    })
    .await;
    // Someone admits ratings at the waypoint, where reviews is enforced once its callers leave
    // their sidecars in step 9. Nothing in the simulator is told: the probe's request is
    // judged by istiod's RBAC for the waypoint.
    rig.env
        .apply_yaml(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
             metadata: {name: reviews-open, namespace: bookinfo}\n\
             spec:\n  targetRefs: [{kind: Service, group: '', name: reviews}]\n  action: ALLOW\n\
             \x20 rules: [{from: [{source: {principals: [cluster.local/ns/bookinfo/sa/bookinfo-ratings]}}]}]\n",
        )
        .await
        .unwrap();
    rig.annotate("opened", mn::ANNOTATION_APPROVE, Some("9"))
        .await;
    let mm = rig
        .wait_mm("opened", "step 9 failed by the probe", 240, |mm| {
            mm.status
                .as_ref()
                .and_then(|s| s.namespaces.first())
                .is_some_and(|n| {
                    n.step == Step::SidecarRemoval && n.phase == NamespacePhase::Failed
                })
        })
        .await;
    let ns = &mm.status.as_ref().unwrap().namespaces[0];
    let probes = ns.checks.iter().find(|c| c.name == "probes").unwrap();
    println!("probes: {}", probes.message);
    assert_eq!(probes.result, CheckResult::Fail, "{probes:?}");
    assert!(
        probes.message.contains("ratings-may-not-read-reviews") && probes.message.contains("200"),
        "{}",
        probes.message
    );
    // The approval that released step 9 is spent: closing the hole and approving the retry
    // ("9/2", what `meshmig approve` sets) completes the migration.
    let retry = mm.approval_for(Step::SidecarRemoval);
    assert_eq!(retry, "9/2");
    rig.env
        .kubectl([
            "delete",
            "authorizationpolicy",
            "reviews-open",
            "-n",
            "bookinfo",
        ])
        .await
        .unwrap();
    rig.annotate("opened", mn::ANNOTATION_APPROVE, Some(&retry))
        .await;
    rig.wait_mm("opened", "Completed after the retry", 240, |mm| {
        phase(mm) == Some(MigrationPhase::Completed)
    })
    .await;
}
