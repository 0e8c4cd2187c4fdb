//! The planner on the embedded bookinfo example, checked against what a user expects.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use meshmig_planner::Inventory;
use meshmig_planner::plan::{Op, Plan, plan};
use serde_json::Value;

fn bookinfo() -> Plan {
    let (inv, spec) = bookinfo_inventory();
    plan(&inv, &spec, "bookinfo")
}

fn bookinfo_inventory() -> (Inventory, meshmig_api::MeshMigrationSpec) {
    let mut inv = Inventory::default();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/bookinfo");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        inv.load_str(
            &std::fs::read_to_string(&f).unwrap(),
            &f.display().to_string(),
        )
        .unwrap();
    }
    let mm = inv.mesh_migrations.first().unwrap().clone();
    (inv, mm.spec)
}

fn manifests<'a>(p: &'a Plan, kind: &str) -> Vec<&'a Value> {
    p.manifests.iter().filter(|m| m["kind"] == kind).collect()
}

#[test]
fn services_with_l7_content_need_the_waypoint_with_reasons() {
    let p = bookinfo();
    assert_eq!(
        p.summary.blockers,
        0,
        "{:#?}",
        p.blockers().collect::<Vec<_>>()
    );
    let ns = p.namespace("bookinfo").unwrap();
    assert!(ns.waypoint.needed);
    assert_eq!(
        ns.waypoint.principal,
        "cluster.local/ns/bookinfo/sa/waypoint"
    );
    let svc = |n: &str| ns.services.iter().find(|s| s.name == n).unwrap();
    let reasons = |n: &str| {
        svc(n)
            .reasons
            .iter()
            .map(|r| format!("{} {}", r.id, r.object))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        reasons("reviews"),
        vec![
            "authz-l7 AuthorizationPolicy/bookinfo/reviews-viewer",
            "vs-mesh-route VirtualService/bookinfo/reviews"
        ]
    );
    assert_eq!(
        reasons("details"),
        vec!["authz-l7 AuthorizationPolicy/bookinfo/details-viewer"]
    );
    assert_eq!(
        reasons("productpage"),
        vec!["authz-l7 AuthorizationPolicy/bookinfo/productpage-viewer"]
    );
    // ratings has only an identity rule: served by the waypoint, no L7 need of its own.
    assert!(!svc("ratings").needs_waypoint && svc("ratings").served_by_waypoint);
}

#[test]
fn reviews_gets_per_version_services_and_an_httproute() {
    let p = bookinfo();
    let mut names: Vec<&str> = manifests(&p, "Service")
        .iter()
        .map(|s| s["metadata"]["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, vec!["reviews-v1", "reviews-v2", "reviews-v3"]);
    let v2 = manifests(&p, "Service")
        .into_iter()
        .find(|s| s["metadata"]["name"] == "reviews-v2")
        .unwrap();
    assert_eq!(
        v2["spec"]["selector"],
        serde_json::json!({"app": "reviews", "version": "v2"})
    );

    let routes = manifests(&p, "HTTPRoute");
    assert_eq!(routes.len(), 1);
    let r = routes[0];
    assert_eq!(
        r["spec"]["parentRefs"],
        serde_json::json!([{"group": "", "kind": "Service", "name": "reviews"}])
    );
    let rules = r["spec"]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 2);
    assert_eq!(
        rules[0]["matches"][0]["headers"],
        serde_json::json!([{"name": "end-user", "type": "Exact", "value": "jason"}])
    );
    assert_eq!(
        rules[0]["backendRefs"],
        serde_json::json!([{"name": "reviews-v2", "port": 9080}])
    );
    assert!(rules[1].get("matches").is_none());
    assert_eq!(
        rules[1]["backendRefs"],
        serde_json::json!([{"name": "reviews-v1", "port": 9080}])
    );
    // No weight-0 (or any weight) on single destinations.
    assert!(!r.to_string().contains("\"weight\""));

    // The VirtualService is swapped in step 7: route applied, then the VS deleted.
    let ns = p.namespace("bookinfo").unwrap();
    let step7: Vec<(Op, String)> = ns.steps[6]
        .actions
        .iter()
        .map(|a| (a.op, a.object.to_string()))
        .collect();
    let apply = step7
        .iter()
        .position(|a| *a == (Op::Apply, "HTTPRoute/bookinfo/reviews".into()))
        .unwrap();
    let delete = step7
        .iter()
        .position(|a| *a == (Op::Delete, "VirtualService/bookinfo/reviews".into()))
        .unwrap();
    assert!(apply < delete);
}

#[test]
fn l7_policies_get_targetrefs_copies() {
    let p = bookinfo();
    for policy in ["productpage-viewer", "details-viewer", "reviews-viewer"] {
        let service = policy.trim_end_matches("-viewer");
        let copy = manifests(&p, "AuthorizationPolicy")
            .into_iter()
            .find(|m| {
                m["metadata"]["annotations"]["meshmig.io/source"]
                    == format!("AuthorizationPolicy/bookinfo/{policy}")
            })
            .unwrap_or_else(|| panic!("no copy of {policy}"));
        assert_eq!(
            copy["spec"]["targetRefs"],
            serde_json::json!([{"group": "", "kind": "Service", "name": service}])
        );
        assert!(copy["spec"].get("selector").is_none());
        assert_eq!(
            copy["spec"]["rules"][0]["to"][0]["operation"]["methods"],
            serde_json::json!(["GET"])
        );
    }
}

#[test]
fn bypass_protection_is_selector_based_and_admits_the_waypoint() {
    let p = bookinfo();
    let bypass: Vec<&Value> = manifests(&p, "AuthorizationPolicy")
        .into_iter()
        .filter(|m| m["metadata"]["labels"]["meshmig.io/role"] == "bypass-protection")
        .collect();
    assert!(!bypass.is_empty());
    for b in &bypass {
        let spec = &b["spec"];
        assert!(
            spec.get("targetRefs").is_none() && spec.get("targetRef").is_none(),
            "{b}"
        );
        assert!(spec["selector"]["matchLabels"].is_object(), "{b}");
        assert!(
            b.to_string()
                .contains("cluster.local/ns/bookinfo/sa/waypoint"),
            "{b}"
        );
    }
    let reviews = bypass
        .iter()
        .find(|b| b["metadata"]["name"] == "meshmig-bypass-reviews")
        .unwrap();
    assert_eq!(reviews["spec"]["action"], "DENY");
    assert_eq!(
        reviews["spec"]["rules"][0]["from"][0]["source"]["notPrincipals"],
        serde_json::json!([
            "cluster.local/ns/bookinfo/sa/bookinfo-productpage",
            "cluster.local/ns/bookinfo/sa/waypoint"
        ])
    );
    // Never the guide's mistakes.
    let all = serde_json::to_string(&p.manifests).unwrap();
    assert!(!all.contains("source.workload_name"));
}

#[test]
fn json_contract() {
    let p = bookinfo();
    let v = serde_json::to_value(&p).unwrap();
    let f = &v["findings"][0];
    for k in ["id", "severity", "object", "message"] {
        assert!(f.get(k).is_some(), "finding lacks {k}");
    }
    for k in ["kind", "namespace", "name"] {
        assert!(f["object"].get(k).is_some(), "finding object lacks {k}");
    }
    let ns = &v["namespaces"][0];
    assert_eq!(ns["name"], "bookinfo");
    for k in ["needed", "name", "for"] {
        assert!(ns["waypoint"].get(k).is_some(), "waypoint lacks {k}");
    }
    let s = &ns["services"][0];
    for k in ["name", "needsWaypoint", "reasons"] {
        assert!(s.get(k).is_some(), "service lacks {k}");
    }
    let step = &ns["steps"][1];
    for k in ["number", "name", "actions"] {
        assert!(step.get(k).is_some(), "step lacks {k}");
    }
    assert!(step["actions"][0].get("op").is_some() && step["actions"][0].get("object").is_some());
    let e = &ns["enforcement"][0];
    for k in ["service", "policy", "windows"] {
        assert!(e.get(k).is_some(), "enforcement lacks {k}");
    }
    let w = ns["enforcement"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["windows"].as_array().unwrap().iter())
        .next()
        .unwrap();
    for k in ["fromStep", "toStep", "kind", "reason"] {
        assert!(w.get(k).is_some(), "window lacks {k}");
    }
    assert!(v["manifests"].as_array().unwrap().len() > 5);
}

#[test]
fn the_plan_does_not_depend_on_input_order() {
    let mut inv = Inventory::default();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/bookinfo");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in &files {
        inv.load_str(&std::fs::read_to_string(f).unwrap(), "f")
            .unwrap();
    }
    let spec = inv.mesh_migrations[0].spec.clone();
    let a = serde_json::to_value(plan(&inv, &spec, "x")).unwrap();
    inv.authorization_policies.reverse();
    inv.deployments.reverse();
    inv.services.reverse();
    inv.destination_rules.reverse();
    let b = serde_json::to_value(plan(&inv, &spec, "x")).unwrap();
    assert_eq!(a, b);
}

#[test]
fn dry_run_policies_never_yield_an_enforcing_object() {
    let (mut inv, spec) = bookinfo_inventory();
    for p in &mut inv.authorization_policies {
        p.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert("istio.io/dry-run".into(), "true".into());
    }
    let p = plan(&inv, &spec, "bookinfo");
    let policies = manifests(&p, "AuthorizationPolicy");
    assert!(
        !policies.is_empty(),
        "the dry-run policies are still copied"
    );
    for m in &policies {
        assert_eq!(
            m["metadata"]["annotations"]["istio.io/dry-run"], "true",
            "an enforcing policy was generated: {m:#}"
        );
        assert!(
            m["spec"]["targetRefs"].is_array(),
            "not a waypoint copy: {m:#}"
        );
    }
    // Nothing is deleted or enforced because of them.
    let deleted: Vec<String> = p
        .namespaces
        .iter()
        .flat_map(|n| &n.steps)
        .flat_map(|s| &s.actions)
        .filter(|a| a.op == Op::Delete && a.object.kind == "AuthorizationPolicy")
        .map(|a| a.object.to_string())
        .collect();
    assert!(deleted.is_empty(), "{deleted:?}");
    // The same plan without the annotation generates bypass protection: the test can fail.
    let (inv, spec) = bookinfo_inventory();
    let enforcing = plan(&inv, &spec, "bookinfo");
    assert!(
        manifests(&enforcing, "AuthorizationPolicy")
            .iter()
            .any(|m| m["metadata"]["annotations"]["istio.io/dry-run"].is_null())
    );
}
