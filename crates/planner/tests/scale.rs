//! Planning many namespaces: the per-namespace indexes built once per plan must give each
//! namespace exactly what scanning the whole inventory gave it. The same namespace planned
//! among 3 or among 12 identical namespaces (loaded in another order) gets the same plan,
//! and every count grows in proportion. Speed itself is measured by the benchmarks
//! (`meshmig-bench plan-run`), not here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use meshmig_api::MeshMigrationSpec;
use meshmig_planner::Inventory;
use meshmig_planner::plan::{NamespacePlan, Plan, plan};
use serde_json::Value;

/// One namespace; `NS` stands for its name.
const NAMESPACE: &str = include_str!("data/namespace-template.yaml");

fn name(i: usize) -> String {
    format!("team-{i:03}")
}

/// `n` identical namespaces, loaded last to first (so the planner sorts them).
fn inventory(n: usize) -> Inventory {
    let mut inv = Inventory::default();
    for i in (0..n).rev() {
        inv.load_str(&NAMESPACE.replace("NS", &name(i)), &name(i))
            .unwrap();
    }
    inv
}

fn run(n: usize) -> Plan {
    let spec: MeshMigrationSpec = serde_json::from_value(serde_json::json!({
        "controlPlane": {"mode": "Sail", "istio": "default"},
        "waypoint": {"policy": "Auto"},
        "namespaces": (0..n).map(name).collect::<Vec<_>>(),
    }))
    .unwrap();
    plan(&inventory(n), &spec, "scale")
}

/// A namespace's plan with manifest indexes replaced by the manifests themselves, and the
/// migration's namespace list (named by bypass protection) blanked.
fn namespace_view(p: &Plan, ns: &str) -> Value {
    let np: &NamespacePlan = p.namespace(ns).unwrap();
    let mut v = serde_json::to_value(np).unwrap();
    for step in v["steps"].as_array_mut().unwrap() {
        for a in step["actions"].as_array_mut().unwrap() {
            if let Some(i) = a.get("manifest").and_then(Value::as_u64) {
                let mut m = p.manifests[i as usize].clone();
                if let Some(rules) = m.pointer_mut("/spec/rules/0/from/0/source/notNamespaces") {
                    *rules = Value::Null;
                }
                a["manifest"] = m;
            }
        }
    }
    v
}

#[test]
fn a_namespace_plans_the_same_among_few_or_many() {
    let small = run(3);
    let large = run(12);
    assert_eq!(small.namespaces.len(), 3);
    assert_eq!(large.namespaces.len(), 12);
    for ns in [name(0), name(2)] {
        assert_eq!(
            namespace_view(&small, &ns),
            namespace_view(&large, &ns),
            "{ns}"
        );
    }
    // The last namespace of the large plan looks like the first one, names aside.
    let first = serde_json::to_string(&namespace_view(&large, &name(0))).unwrap();
    let last = serde_json::to_string(&namespace_view(&large, &name(11))).unwrap();
    assert_eq!(first.replace(&name(0), &name(11)), last);
}

#[test]
fn counts_grow_in_proportion_to_namespaces() {
    let small = run(3);
    let large = run(12);
    let actions = |p: &Plan| -> usize {
        p.namespaces
            .iter()
            .flat_map(|n| &n.steps)
            .map(|s| s.actions.len())
            .sum()
    };
    let per_version = |p: &Plan| {
        p.manifests
            .iter()
            .filter(|m| m["kind"] == "Service")
            .count()
    };
    assert!(actions(&small) > 0 && per_version(&small) > 0);
    assert_eq!(actions(&large), 4 * actions(&small));
    assert_eq!(large.manifests.len(), 4 * small.manifests.len());
    assert_eq!(per_version(&large), 4 * per_version(&small));
    // Cluster-wide findings (control plane) appear once; every other one once per namespace.
    let per_ns = |p: &Plan| {
        p.findings
            .iter()
            .filter(|f| f.object.namespace.is_some() || f.object.kind == "Namespace")
            .count()
    };
    assert_eq!(per_ns(&large), 4 * per_ns(&small));
}
