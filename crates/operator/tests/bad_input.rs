//! A corpus of invalid and hostile MeshMigrations. Each is either refused by the API server at
//! admission (schema, CEL) with a message naming the field, or accepted and answered by the
//! operator with a `Stalled` condition or a Failed step naming the field or namespace —
//! without the operator crashing and without any change to the cluster. A valid migration
//! still completes afterwards.
//!
//! Every input goes through `kubectl apply --server-side` (field validation Strict, as users
//! apply manifests). The outcome table is printed and written to
//! target/reliability/bad_input.txt.
//!
//! `a_newcomer_never_takes_over_a_claimed_namespace` checks the claim rule where creation
//! times tie (their resolution is one second).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use meshmig_api::Step;
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use meshmig_api::names as mn;
use meshmig_api::{MeshMigration, MigrationPhase, NamespacePhase};
use serde_json::{Value, json};

use common::*;

/// What the input must get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Refused at admission; the error contains every needle.
    Rejected,
    /// Accepted, then `Stalled=True` whose message contains every needle.
    Stalled,
    /// Accepted, then a namespace's step Failed with a message containing every needle.
    Failed,
}

struct Case {
    id: &'static str,
    summary: String,
    object: Value,
    expect: Expect,
    needles: Vec<String>,
}

fn mm(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "meshmig.io/v1alpha1", "kind": "MeshMigration", "metadata": {"name": name}, "spec": spec})
}

fn probe(extra: Value) -> Value {
    let mut p = json!({"name": "p", "fromNamespace": "bookinfo", "url": "http://reviews.bookinfo:9080/", "expect": {"status": 200}});
    if let (Some(p), Some(e)) = (p.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            p.insert(k.clone(), v.clone());
        }
    }
    p
}

fn with_probes(probes: Vec<Value>) -> Value {
    json!({"namespaces": ["bookinfo"], "checkpoints": {"probes": probes}})
}

fn case(
    id: &'static str,
    summary: impl Into<String>,
    spec: Value,
    expect: Expect,
    needles: &[&str],
) -> Case {
    Case {
        id,
        summary: summary.into(),
        object: mm(id, spec),
        expect,
        needles: needles.iter().map(|s| s.to_string()).collect(),
    }
}

fn corpus() -> Vec<Case> {
    use Expect::*;
    let bi = || json!(["bookinfo"]);
    let mut v = vec![
        // pauseBefore and probe steps out of range.
        case(
            "pause-0",
            "pauseBefore: [0]",
            json!({"namespaces": bi(), "pauseBefore": [0]}),
            Rejected,
            &["spec.pauseBefore[0]"],
        ),
        case(
            "pause-10",
            "pauseBefore: [10]",
            json!({"namespaces": bi(), "pauseBefore": [10]}),
            Rejected,
            &["spec.pauseBefore[0]"],
        ),
        case(
            "pause-dup",
            "pauseBefore: [3, 3]",
            json!({"namespaces": bi(), "pauseBefore": [3, 3]}),
            Rejected,
            &["spec.pauseBefore"],
        ),
        case(
            "probe-step-0",
            "probe steps: [0]",
            with_probes(vec![probe(json!({"steps": [0]}))]),
            Rejected,
            &["spec.checkpoints.probes[0].steps[0]"],
        ),
        case(
            "probe-step-12",
            "probe steps: [3, 12]",
            with_probes(vec![probe(json!({"steps": [3, 12]}))]),
            Rejected,
            &["spec.checkpoints.probes[0].steps[1]"],
        ),
        // Target selection.
        case(
            "ns-empty",
            "namespaces: []",
            json!({"namespaces": []}),
            Rejected,
            &["spec.namespaces"],
        ),
        case(
            "ns-dup",
            "namespaces: [bookinfo, bookinfo]",
            json!({"namespaces": ["bookinfo", "bookinfo"]}),
            Rejected,
            &["spec.namespaces", "bookinfo"],
        ),
        case(
            "ns-and-selector",
            "namespaces and namespaceSelector",
            json!({"namespaces": bi(), "namespaceSelector": {"matchLabels": {"a": "b"}}}),
            Rejected,
            &["spec.namespaces", "spec.namespaceSelector"],
        ),
        case(
            "ns-neither",
            "neither namespaces nor namespaceSelector",
            json!({"pauseBefore": [2]}),
            Rejected,
            &["spec.namespaces", "spec.namespaceSelector"],
        ),
        case(
            "ns-kube-system",
            "namespaces: [kube-system]",
            json!({"namespaces": ["kube-system"]}),
            Rejected,
            &["spec.namespaces", "system namespaces"],
        ),
        case(
            "ns-kube-public",
            "namespaces: [bookinfo, kube-public]",
            json!({"namespaces": ["bookinfo", "kube-public"]}),
            Rejected,
            &["spec.namespaces", "system namespaces"],
        ),
        case(
            "ns-kube-node-lease",
            "namespaces: [kube-node-lease]",
            json!({"namespaces": ["kube-node-lease"]}),
            Rejected,
            &["spec.namespaces", "system namespaces"],
        ),
        case(
            "ns-istio-system",
            "namespaces: [istio-system]",
            json!({"namespaces": ["istio-system"]}),
            Rejected,
            &["spec.namespaces", "system namespaces"],
        ),
        case(
            "ns-bad-name",
            "namespaces: [Bad_Name]",
            json!({"namespaces": ["Bad_Name"]}),
            Rejected,
            &["spec.namespaces[0]"],
        ),
        case(
            "ns-600",
            "600 namespaces",
            json!({"namespaces": (0..600).map(|i| format!("ns-{i}")).collect::<Vec<_>>()}),
            Rejected,
            &["spec.namespaces"],
        ),
        case(
            "ns-string",
            "namespaces: \"bookinfo\" (a string)",
            json!({"namespaces": "bookinfo"}),
            Rejected,
            &["spec.namespaces"],
        ),
        case(
            "ns-operator",
            "namespaces: [meshmig-system] (the operator's own)",
            json!({"namespaces": ["meshmig-system"]}),
            Stalled,
            &[
                "spec.namespaces",
                "meshmig-system",
                "operator's own namespace",
            ],
        ),
        case(
            "ns-ztunnel",
            "namespaces: [bookinfo, ztunnel]",
            json!({"namespaces": ["bookinfo", "ztunnel"]}),
            Stalled,
            &["spec.namespaces", "ztunnel"],
        ),
        case(
            "ns-istio-cni",
            "namespaces: [istio-cni]",
            json!({"namespaces": ["istio-cni"]}),
            Stalled,
            &["spec.namespaces", "istio-cni"],
        ),
        case(
            "ns-missing",
            "namespaces: [does-not-exist]",
            json!({"namespaces": ["does-not-exist"]}),
            Failed,
            &["does-not-exist", "does not exist"],
        ),
        case(
            "ns-500-missing",
            "500 namespaces, none exists",
            json!({"namespaces": (0..500).map(|i| format!("gone-{i}")).collect::<Vec<_>>()}),
            Failed,
            &["gone-0", "does not exist"],
        ),
        case(
            "selector-nothing",
            "namespaceSelector matching no namespace",
            json!({"namespaceSelector": {"matchLabels": {"meshmig.io/test": "nothing"}}}),
            Stalled,
            &["spec.namespaceSelector", "selects no namespace"],
        ),
        case(
            "selector-bad-operator",
            "namespaceSelector with operator Foo",
            json!({"namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "Foo", "values": ["bookinfo"]}]}}),
            Stalled,
            &["spec.namespaceSelector"],
        ),
        // Timeouts.
        case(
            "timeout-1s",
            "checkpoints.timeout: 1s",
            json!({"namespaces": bi(), "checkpoints": {"timeout": "1s"}}),
            Rejected,
            &["spec.checkpoints.timeout", "between 10s and 24h"],
        ),
        case(
            "timeout-48h",
            "checkpoints.timeout: 48h",
            json!({"namespaces": bi(), "checkpoints": {"timeout": "48h"}}),
            Rejected,
            &["spec.checkpoints.timeout", "between 10s and 24h"],
        ),
        case(
            "timeout-forever",
            "checkpoints.timeout: forever",
            json!({"namespaces": bi(), "checkpoints": {"timeout": "forever"}}),
            Rejected,
            &["spec.checkpoints.timeout"],
        ),
        case(
            "timeout-negative",
            "checkpoints.timeout: -5m",
            json!({"namespaces": bi(), "checkpoints": {"timeout": "-5m"}}),
            Rejected,
            &["spec.checkpoints.timeout"],
        ),
        case(
            "timeout-number",
            "checkpoints.timeout: 5 (a number)",
            json!({"namespaces": bi(), "checkpoints": {"timeout": 5}}),
            Rejected,
            &["spec.checkpoints.timeout"],
        ),
        // Huge specs.
        case(
            "probe-url-3000",
            "a probe with a 3000-character URL",
            with_probes(vec![probe(
                json!({"url": format!("http://reviews.bookinfo:9080/{}", "a".repeat(2970))}),
            )]),
            Rejected,
            &["spec.checkpoints.probes[0].url"],
        ),
        case(
            "probes-40",
            "40 probes",
            with_probes(
                (0..40)
                    .map(|i| probe(json!({"name": format!("p{i}")})))
                    .collect(),
            ),
            Rejected,
            &["spec.checkpoints.probes"],
        ),
        case(
            "findings-300",
            "300 acceptedFindings",
            json!({"namespaces": bi(), "acceptedFindings": (0..300).map(|i| format!("finding-{i}")).collect::<Vec<_>>()}),
            Rejected,
            &["spec.acceptedFindings"],
        ),
        case(
            "headers-17",
            "a probe with 17 headers",
            with_probes(vec![probe(
                json!({"headers": (0..17).map(|i| (format!("x-h{i}"), json!("v"))).collect::<serde_json::Map<_, _>>()}),
            )]),
            Rejected,
            &["spec.checkpoints.probes[0].headers"],
        ),
        // Unknown fields (Strict field validation).
        case(
            "unknown-spec-foo",
            "unknown field spec.foo",
            json!({"namespaces": bi(), "foo": 1}),
            Rejected,
            &["spec.foo"],
        ),
        case(
            "unknown-waypoint-frobnicate",
            "unknown field spec.waypoint.frobnicate",
            json!({"namespaces": bi(), "waypoint": {"frobnicate": true}}),
            Rejected,
            &["spec.waypoint.frobnicate"],
        ),
        // Wrong types and enum values.
        case(
            "pause-string",
            "pauseBefore: [\"seven\"]",
            json!({"namespaces": bi(), "pauseBefore": ["seven"]}),
            Rejected,
            &["spec.pauseBefore"],
        ),
        case(
            "waypoint-policy",
            "waypoint.policy: Sometimes",
            json!({"namespaces": bi(), "waypoint": {"policy": "Sometimes"}}),
            Rejected,
            &["spec.waypoint.policy", "Sometimes"],
        ),
        case(
            "waypoint-name",
            "waypoint.name: Bad_Name",
            json!({"namespaces": bi(), "waypoint": {"name": "Bad_Name"}}),
            Rejected,
            &["spec.waypoint.name"],
        ),
        case(
            "on-failure",
            "onFailure: Explode",
            json!({"namespaces": bi(), "onFailure": "Explode"}),
            Rejected,
            &["spec.onFailure", "Explode"],
        ),
        case(
            "on-delete",
            "onDelete: Forget",
            json!({"namespaces": bi(), "onDelete": "Forget"}),
            Rejected,
            &["spec.onDelete", "Forget"],
        ),
        case(
            "cp-mode",
            "controlPlane.mode: Magic",
            json!({"namespaces": bi(), "controlPlane": {"mode": "Magic"}}),
            Rejected,
            &["spec.controlPlane.mode", "Magic"],
        ),
        case(
            "cp-istio-ns-empty",
            "controlPlane.istioNamespace: \"\"",
            json!({"namespaces": bi(), "controlPlane": {"istioNamespace": ""}}),
            Rejected,
            &["spec.controlPlane.istioNamespace"],
        ),
        case(
            "ordering",
            "ordering: Random",
            json!({"namespaces": bi(), "ordering": "Random"}),
            Rejected,
            &["spec.ordering", "Random"],
        ),
        // Probes.
        case(
            "probe-both",
            "probe expect with both status and denied",
            with_probes(vec![probe(
                json!({"expect": {"status": 200, "denied": true}}),
            )]),
            Rejected,
            &[
                "spec.checkpoints.probes[0].expect",
                "exactly one of status or denied",
            ],
        ),
        case(
            "probe-neither",
            "probe expect with neither status nor denied",
            with_probes(vec![probe(json!({"expect": {}}))]),
            Rejected,
            &[
                "spec.checkpoints.probes[0].expect",
                "exactly one of status or denied",
            ],
        ),
        case(
            "probe-denied-false",
            "probe expect.denied: false",
            with_probes(vec![probe(json!({"expect": {"denied": false}}))]),
            Rejected,
            &[
                "spec.checkpoints.probes[0].expect",
                "denied may only be true",
            ],
        ),
        case(
            "probe-no-scheme",
            "probe URL without scheme",
            with_probes(vec![probe(json!({"url": "reviews.bookinfo:9080/"}))]),
            Rejected,
            &["spec.checkpoints.probes[0].url"],
        ),
        case(
            "probe-status-700",
            "probe expect.status: 700",
            with_probes(vec![probe(json!({"expect": {"status": 700}}))]),
            Rejected,
            &["spec.checkpoints.probes[0].expect.status"],
        ),
        case(
            "probe-method",
            "probe method: TRACE",
            with_probes(vec![probe(json!({"method": "TRACE"}))]),
            Rejected,
            &["spec.checkpoints.probes[0].method", "TRACE"],
        ),
        case(
            "probe-dup-name",
            "two probes named p",
            with_probes(vec![
                probe(json!({})),
                probe(json!({"url": "http://details.bookinfo:9080/"})),
            ]),
            Rejected,
            &["spec.checkpoints.probes"],
        ),
        case(
            "probe-no-from",
            "probe without fromNamespace",
            with_probes(vec![
                json!({"name": "p", "url": "http://reviews.bookinfo:9080/", "expect": {"status": 200}}),
            ]),
            Rejected,
            &["fromNamespace"],
        ),
        // acceptedFindings.
        case(
            "finding-spaces",
            "acceptedFindings: [\"Not An Id\"]",
            json!({"namespaces": bi(), "acceptedFindings": ["Not An Id"]}),
            Rejected,
            &["spec.acceptedFindings[0]"],
        ),
        case(
            "finding-half-ref",
            "acceptedFindings: [\"vs-mesh@VirtualService\"]",
            json!({"namespaces": bi(), "acceptedFindings": ["vs-mesh@VirtualService"]}),
            Rejected,
            &["spec.acceptedFindings[0]"],
        ),
        case(
            "finding-empty",
            "acceptedFindings: [\"\"]",
            json!({"namespaces": bi(), "acceptedFindings": [""]}),
            Rejected,
            &["spec.acceptedFindings[0]"],
        ),
    ];
    // References to things that do not exist: answered before anything changes (held
    // before step 2 in case they were not).
    let held = |extra: Value| {
        let mut s = json!({"namespaces": bi(), "pauseBefore": [2]});
        for (k, val) in extra.as_object().unwrap() {
            s[k] = val.clone();
        }
        s
    };
    v.extend([
        case(
            "probe-from-missing",
            "probe fromNamespace: nowhere (does not exist)",
            held(json!({"checkpoints": {"probes": [probe(json!({"fromNamespace": "nowhere"}))]}})),
            Stalled,
            &["spec.checkpoints.probes[0].fromNamespace", "nowhere"],
        ),
        case(
            "probe-sa-missing",
            "probe serviceAccount: nobody (does not exist)",
            held(json!({"checkpoints": {"probes": [probe(json!({"serviceAccount": "nobody"}))]}})),
            Stalled,
            &["spec.checkpoints.probes[0].serviceAccount", "nobody"],
        ),
        case(
            "finding-unknown",
            "acceptedFindings: [no-such-finding]",
            held(json!({"acceptedFindings": ["no-such-finding"]})),
            Stalled,
            &["spec.acceptedFindings[0]", "no-such-finding"],
        ),
        case(
            "cp-istio-missing",
            "controlPlane.istio: nope (no such Sail Istio)",
            held(json!({"controlPlane": {"istio": "nope"}})),
            Stalled,
            &["spec.controlPlane.istio", "nope"],
        ),
        case(
            "cp-istio-ns-missing",
            "controlPlane.istioNamespace: nowhere",
            held(json!({"controlPlane": {"istioNamespace": "nowhere"}})),
            Stalled,
            &["spec.controlPlane.istioNamespace", "nowhere"],
        ),
    ]);
    // Names.
    for (id, len) in [("name-64", 64), ("name-253", 253)] {
        v.push(Case {
            id,
            summary: format!("metadata.name of {len} characters (a label value holds 63)"),
            object: mm(&"m".repeat(len), json!({"namespaces": bi()})),
            expect: Rejected,
            needles: vec!["metadata.name".into(), "at most 63".into()],
        });
    }
    v.push(Case {
        id: "name-300",
        summary: "metadata.name of 300 characters".into(),
        object: mm(&"n".repeat(300), json!({"namespaces": bi()})),
        expect: Rejected,
        needles: vec!["metadata.name".into()],
    });
    v.push(Case {
        id: "name-bad",
        summary: "metadata.name: Bad_Name".into(),
        object: mm("Bad_Name", json!({"namespaces": bi()})),
        expect: Rejected,
        needles: vec!["metadata.name".into()],
    });
    v
}

/// The outcome of an accepted input, once the operator answered.
#[derive(Debug)]
struct Answer {
    kind: &'static str,
    message: String,
    /// Length of the longest condition message.
    longest: usize,
}

fn answer(mm: &MeshMigration) -> Option<Answer> {
    let longest = mm
        .status
        .iter()
        .flat_map(|s| s.conditions.iter())
        .map(|c| c.message.len())
        .max()
        .unwrap_or(0);
    answer_of(mm).map(|(kind, message)| Answer {
        kind,
        message,
        longest,
    })
}

fn answer_of(mm: &MeshMigration) -> Option<(&'static str, String)> {
    let st = mm.status.as_ref()?;
    let cond = |t: &str| {
        st.conditions
            .iter()
            .find(|c| c.type_ == t && c.status == "True")
    };
    if let Some(n) = st
        .namespaces
        .iter()
        .find(|n| n.phase == NamespacePhase::Failed)
    {
        return Some((
            "Failed",
            format!(
                "{} step {}: {}",
                n.name,
                n.step,
                n.message.clone().unwrap_or_default()
            ),
        ));
    }
    if let Some(c) = cond(mn::CONDITION_STALLED) {
        return Some(("Stalled", format!("{}: {}", c.reason, c.message)));
    }
    if let Some(c) = cond(mn::CONDITION_RECONCILING).filter(|c| c.reason == "Error") {
        return Some(("Reconciling", format!("{}: {}", c.reason, c.message)));
    }
    if st
        .namespaces
        .iter()
        .any(|n| n.step >= Step::ControlPlane && n.phase == NamespacePhase::Waiting)
        || st.phase == Some(MigrationPhase::Completed)
    {
        return Some((
            "Accepted",
            format!(
                "no error reported; phase {:?}, {}",
                st.phase,
                st.namespaces
                    .iter()
                    .map(|n| format!("{} step {} {:?}", n.name, n.step, n.phase))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    None
}

fn first_line(s: &str, max: usize) -> String {
    let one = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > max {
        format!("{}…", one.chars().take(max).collect::<String>())
    } else {
        one
    }
}

/// Applies `object` with `kubectl apply --server-side`; the error (stderr) if refused.
async fn apply(rig: &Rig, dir: &std::path::Path, id: &str, object: &Value) -> Result<(), String> {
    let path = dir.join(format!("{id}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(object).unwrap()).unwrap();
    match rig
        .env
        .kubectl(["apply", "--server-side", "-f", path.to_str().unwrap()])
        .await
    {
        Ok(_) => Ok(()),
        Err(meshmig_e2e_harness::Error::Kubectl { stderr, .. }) => Err(stderr),
        Err(e) => panic!("kubectl: {e}"),
    }
}

async fn wait_answer(rig: &Rig, name: &str, secs: u64) -> Answer {
    let api = rig.migrations();
    let start = Instant::now();
    loop {
        if let Ok(mm) = api.get(name).await
            && let Some(a) = answer(&mm)
        {
            return a;
        }
        if start.elapsed() > Duration::from_secs(secs) {
            let st = api.get(name).await.ok().and_then(|m| m.status);
            return Answer {
                kind: "Unanswered",
                message: format!("no answer in {secs}s; status {st:?}"),
                longest: 0,
            };
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct Row {
    id: &'static str,
    summary: String,
    outcome: String,
    ok: bool,
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_or_reported_and_changes_nothing() {
    let started = Instant::now();
    let mut rig = Rig::new(&[]).await;
    let baseline = rig.user_objects("bookinfo").await;
    let dir = tempfile::tempdir().unwrap();
    let mut rows: Vec<Row> = Vec::new();

    for c in corpus() {
        let name = c.object["metadata"]["name"].as_str().unwrap().to_string();
        let result = apply(&rig, dir.path(), c.id, &c.object).await;
        let (outcome, ok) = match result {
            Err(stderr) => {
                let ok = c.expect == Expect::Rejected
                    && c.needles.iter().all(|n| stderr.contains(n.as_str()));
                (
                    format!("rejected at admission: {}", first_line(&stderr, 260)),
                    ok,
                )
            }
            Ok(()) => {
                let a = wait_answer(&rig, &name, 30).await;
                let ok = match c.expect {
                    Expect::Stalled => a.kind == "Stalled",
                    Expect::Failed => a.kind == "Failed",
                    Expect::Rejected => false,
                } && c.needles.iter().all(|n| a.message.contains(n.as_str()));
                assert!(
                    a.longest <= meshmig_operator::conditions::MAX_MESSAGE + 100,
                    "{}: a condition message of {} bytes",
                    c.id,
                    a.longest
                );
                let size = if a.longest > 2000 {
                    format!(" (a condition message of {} bytes)", a.longest)
                } else {
                    String::new()
                };
                let outcome = format!(
                    "accepted → {}: {}{size}",
                    a.kind,
                    first_line(&a.message, 260)
                );
                rig.delete_migration(&name).await;
                // Nothing changed, nothing of meshmig left.
                let after = rig.user_objects("bookinfo").await;
                assert_eq!(after, baseline, "{}: the cluster changed", c.id);
                let leftovers = rig.meshmig_objects().await;
                assert!(
                    leftovers.is_empty(),
                    "{}: meshmig objects left: {leftovers:?}",
                    c.id
                );
                (outcome, ok)
            }
        };
        let alive = rig
            .operators
            .iter_mut()
            .all(|(_, ch)| ch.try_wait().unwrap().is_none());
        assert!(alive, "{}: the operator exited:\n{}", c.id, rig.log_tail());
        rows.push(Row {
            id: c.id,
            summary: c.summary,
            outcome,
            ok,
        });
    }

    // A namespace claimed by another active MeshMigration (created at least a second later:
    // creation times have a resolution of one second; see
    // `a_newcomer_never_takes_over_a_claimed_namespace`).
    rig.apply_migration(
        "claim-holder",
        json!({"pauseBefore": [1], "onDelete": "Rollback"}),
    )
    .await;
    rig.wait_mm("claim-holder", "held before step 1", 30, |mm| {
        phase(mm) == Some(MigrationPhase::Paused)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let claimed = mm(
        "claim-newcomer",
        json!({"namespaces": ["bookinfo"], "onDelete": "Rollback"}),
    );
    let (outcome, ok) = match apply(&rig, dir.path(), "claim-newcomer", &claimed).await {
        Err(e) => (
            format!("rejected at admission: {}", first_line(&e, 260)),
            false,
        ),
        Ok(()) => {
            let a = wait_answer(&rig, "claim-newcomer", 30).await;
            let ok = a.kind == "Stalled"
                && a.message.contains("bookinfo")
                && a.message.contains("MeshMigration claim-holder");
            rig.delete_migration("claim-newcomer").await;
            (
                format!("accepted → {}: {}", a.kind, first_line(&a.message, 260)),
                ok,
            )
        }
    };
    rig.delete_migration("claim-holder").await;
    rig.wait_available("bookinfo").await;
    assert_eq!(
        rig.user_objects("bookinfo").await,
        baseline,
        "ns-claimed: the cluster changed"
    );
    assert!(rig.meshmig_objects().await.is_empty());
    rows.push(Row {
        id: "ns-claimed",
        summary: "namespace bookinfo already claimed by an active MeshMigration".into(),
        outcome,
        ok,
    });

    // Unknown fields sent without field validation (a POST, as kube-rs does by default):
    // the API server prunes them.
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("meshmig.io", "v1alpha1", "MeshMigration"),
        "meshmigrations",
    );
    let api: Api<DynamicObject> = Api::all_with(rig.env.client(), &ar);
    let obj: DynamicObject = serde_json::from_value(mm(
        "pruned",
        json!({"namespaces": ["bookinfo"], "pauseBefore": [1], "foo": 1, "waypoint": {"frobnicate": true}}),
    ))
    .unwrap();
    let stored = api.create(&PostParams::default(), &obj).await.unwrap();
    let pruned = stored.data["spec"].get("foo").is_none()
        && stored.data["spec"]["waypoint"].get("frobnicate").is_none();
    rig.delete_migration("pruned").await;
    rows.push(Row {
        id: "unknown-fields-post",
        summary: "spec.foo and spec.waypoint.frobnicate in a POST without fieldValidation".into(),
        outcome: if pruned {
            "accepted, unknown fields pruned by the API server (fieldValidation default)".into()
        } else {
            format!("accepted and stored: {}", stored.data["spec"])
        },
        ok: pruned,
    });

    // The operator is alive and still migrates a valid MeshMigration.
    let alive = rig
        .operators
        .iter_mut()
        .all(|(_, ch)| ch.try_wait().unwrap().is_none());
    assert!(alive, "the operator exited:\n{}", rig.log_tail());
    assert_eq!(rig.user_objects("bookinfo").await, baseline);
    rig.apply_migration("valid", json!({})).await;
    rig.wait_mm("valid", "Completed", 150, |mm| {
        phase(mm) == Some(MigrationPhase::Completed)
    })
    .await;
    rig.assert_migrated("bookinfo").await;

    // The table.
    let rejected = rows
        .iter()
        .filter(|r| r.outcome.starts_with("rejected"))
        .count();
    let answered = rows.len() - rejected;
    let failures = rows.iter().filter(|r| !r.ok).count();
    let mut table = format!(
        "bad input: {} inputs: {rejected} rejected at admission, {answered} accepted and answered by the operator (Stalled / Failed step / pruned), failures = {failures}; the cluster unchanged after each; operator alive; a valid migration completed afterwards ({:.0?} in all)\n",
        rows.len(),
        started.elapsed()
    );
    for r in &rows {
        let mark = if r.ok { "ok " } else { "BAD" };
        table.push_str(&format!(
            "{mark} {:<28} {:<62} → {}\n",
            r.id, r.summary, r.outcome
        ));
    }
    println!("{table}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/reliability");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("bad_input.txt"), &table);
    let bad: Vec<&Row> = rows.iter().filter(|r| !r.ok).collect();
    assert!(
        bad.is_empty(),
        "inputs without the expected outcome:\n{}",
        bad.iter()
            .map(|r| format!("{}: {} → {}", r.id, r.summary, r.outcome))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(rows.len() >= 30);
}

/// A migration that holds a namespace keeps it against a newcomer created in the same second
/// (creation times have a resolution of one second) whose name sorts first.
#[tokio::test(flavor = "multi_thread")]
async fn a_newcomer_never_takes_over_a_claimed_namespace() {
    let rig = Rig::new(&[]).await;
    let baseline = rig.user_objects("bookinfo").await;
    rig.apply_migration(
        "z-first",
        json!({"pauseBefore": [1], "onDelete": "Rollback"}),
    )
    .await;
    rig.wait_mm("z-first", "held before step 1", 30, |mm| {
        phase(mm) == Some(MigrationPhase::Paused)
    })
    .await;
    rig.apply_migration(
        "a-second",
        json!({"pauseBefore": [2], "onDelete": "Rollback"}),
    )
    .await;
    let created = |mm: &MeshMigration| {
        mm.metadata
            .creation_timestamp
            .clone()
            .map(|t| t.0.to_string())
    };
    let first = rig.migrations().get("z-first").await.unwrap();
    let a = wait_answer(&rig, "a-second", 30).await;
    let second = rig.migrations().get("a-second").await.unwrap();
    let first_now = rig.migrations().get("z-first").await.unwrap();
    println!(
        "z-first created {:?}, a-second created {:?}; a-second: {} {}; z-first now {:?}",
        created(&first),
        created(&second),
        a.kind,
        a.message,
        first_now.status.as_ref().and_then(|s| s.phase)
    );
    rig.delete_migration("a-second").await;
    rig.delete_migration("z-first").await;
    rig.wait_available("bookinfo").await;
    assert_eq!(rig.user_objects("bookinfo").await, baseline);
    assert!(
        a.kind == "Stalled" && a.message.contains("MeshMigration z-first"),
        "the newcomer was not stopped: {} {}",
        a.kind,
        a.message
    );
}
