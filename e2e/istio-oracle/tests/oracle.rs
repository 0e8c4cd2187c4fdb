//! Runs the real `meshmig-istio` binary (built from istio.io/istio by e2e/istio/build.sh,
//! or `$MESHMIG_ISTIO_HOME`) and pins what Istio actually answers.

use std::collections::BTreeMap;

use meshmig_istio_oracle::oracle::{
    Error, Oracle, Outcome, Proxy, RbacOptions, ZtunnelConversion, ZtunnelOptions,
};
use serde_json::{Value, json};

fn policy(namespace: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    })
}

fn convert_one(spec: Value) -> Result<ZtunnelConversion, Error> {
    let mut out =
        Oracle::get()?.ztunnel(&[policy("shop", "p", spec)], &ZtunnelOptions::default())?;
    Ok(out.remove(0))
}

#[test]
fn validate_rejects_invalid_policies_and_accepts_a_valid_one() -> Result<(), Error> {
    let objects = [
        policy("shop", "bad-action", json!({"action": "PERMIT"})),
        policy(
            "shop",
            "empty-source",
            json!({"rules": [{"from": [{"source": {}}]}]}),
        ),
        policy(
            "shop",
            "ok",
            json!({
                "selector": {"matchLabels": {"app": "web"}},
                "rules": [{
                    "from": [{"source": {"principals": ["cluster.local/ns/a/sa/b"]}}],
                    "to": [{"operation": {"ports": ["8080"]}}],
                }],
            }),
        ),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"}}),
    ];
    let verdicts = Oracle::get()?.validate(&objects)?;

    let valid: Vec<Option<bool>> = verdicts.iter().map(|v| v.valid()).collect();
    assert_eq!(valid, [Some(false), Some(false), Some(true), None]);
    assert!(
        verdicts[0].errors().iter().any(|e| e.contains("PERMIT")),
        "{:?}",
        verdicts[0]
    );
    assert_eq!(
        verdicts[1].errors(),
        ["invalid policy empty-source.shop: `from.source` must not be empty, found at rule 0"]
    );
    assert_eq!(
        verdicts[2].outcome,
        Outcome::Checked {
            valid: true,
            errors: vec![],
            warnings: vec![]
        }
    );
    assert!(
        matches!(&verdicts[3].outcome, Outcome::Skipped { reason } if reason.contains("v1/Service"))
    );
    assert_eq!(
        (verdicts[3].kind.as_str(), verdicts[3].name.as_str()),
        ("Service", "web")
    );
    Ok(())
}

#[test]
fn validate_warns_on_a_deny_with_only_http_attributes_and_skips_gateway_api() -> Result<(), Error> {
    let objects = [
        policy(
            "shop",
            "deny-paths",
            json!({"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin"]}}]}]}),
        ),
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "r", "namespace": "shop"},
            "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "web"}]},
        }),
    ];
    let verdicts = Oracle::get()?.validate(&objects)?;
    match &verdicts[0].outcome {
        Outcome::Checked {
            valid: true,
            warnings,
            ..
        } => assert!(
            warnings
                .iter()
                .any(|w| w.contains("will deny all traffic to TCP ports")),
            "{warnings:?}"
        ),
        other => panic!("deny-paths: {other:?}"),
    }
    assert_eq!(verdicts[1].valid(), None, "{:?}", verdicts[1]);
    Ok(())
}

#[test]
fn ztunnel_l4_allow_with_principals_and_ports() -> Result<(), Error> {
    let c = convert_one(json!({
        "selector": {"matchLabels": {"app": "web"}},
        "action": "ALLOW",
        "rules": [{
            "from": [{"source": {"principals": ["cluster.local/ns/shop/sa/client", "*/sa/admin"]}}],
            "to": [{"operation": {"ports": ["8080", "9090"]}}],
        }],
    }))?;
    // ALLOW is the enum's zero value, so protojson omits `action`. The `to` clause comes
    // before the `from` clause.
    assert_eq!(
        c.authorization,
        Some(json!({
            "name": "p",
            "namespace": "shop",
            "scope": "WORKLOAD_SELECTOR",
            "groups": [{"rules": [
                {"matches": [{"destination_ports": [8080, 9090]}]},
                {"matches": [{"principals": [
                    {"exact": "cluster.local/ns/shop/sa/client"},
                    {"suffix": "/sa/admin"},
                ]}]},
            ]}],
        }))
    );
    let status = c.status.as_ref().expect("a status");
    assert!(status.accepted());
    assert_eq!(
        (
            status.condition.as_str(),
            status.reason.as_str(),
            status.message.as_str()
        ),
        ("ZtunnelAccepted", "Accepted", "attached to ztunnel")
    );
    Ok(())
}

#[test]
fn ztunnel_deny_with_a_method_keeps_the_source_and_an_empty_match() -> Result<(), Error> {
    let c = convert_one(json!({
        "action": "DENY",
        "rules": [{
            "from": [{"source": {"namespaces": ["a"]}}],
            "to": [{"operation": {"methods": ["POST"]}}],
        }],
    }))?;
    // The `to` block held only an L7 attribute: its clause survives with an empty match
    // (which ztunnel never matches, so this DENY never fires).
    assert_eq!(
        c.authorization,
        Some(json!({
            "name": "p",
            "namespace": "shop",
            "scope": "NAMESPACE",
            "action": "DENY",
            "groups": [{"rules": [
                {"matches": [{}]},
                {"matches": [{"namespaces": [{"exact": "a"}]}]},
            ]}],
        }))
    );
    let status = c.status.as_ref().expect("a status");
    assert!(status.accepted(), "{status:?}");
    assert_eq!(status.reason, "UnsupportedValue");
    assert!(
        status
            .message
            .starts_with("ztunnel does not support HTTP attributes (found: methods)")
            && status.message.contains("more restrictive than requested"),
        "{status:?}"
    );
    Ok(())
}

#[test]
fn ztunnel_allow_drops_every_rule_with_an_l7_attribute() -> Result<(), Error> {
    let c = convert_one(json!({
        "selector": {"matchLabels": {"app": "web"}},
        "rules": [
            {"from": [{"source": {"namespaces": ["a"]}}], "when": [{"key": "request.headers[x-user]", "values": ["alice"]}]},
            {"from": [{"source": {"namespaces": ["b"]}}]},
        ],
    }))?;
    // Rule 0 disappears entirely, its L4 source included; rule 1 is kept.
    assert_eq!(
        c.authorization,
        Some(json!({
            "name": "p",
            "namespace": "shop",
            "scope": "WORKLOAD_SELECTOR",
            "groups": [{"rules": [{"matches": [{"namespaces": [{"exact": "b"}]}]}]}],
        }))
    );
    let status = c.status.expect("a status");
    assert_eq!(status.reason, "UnsupportedValue");
    assert!(
        status.message.contains("(found: request.headers[x-user])"),
        "{status:?}"
    );

    // With only L7 rules nothing is left: an ALLOW policy without groups.
    let c = convert_one(json!({"rules": [{"to": [{"operation": {"paths": ["/x"]}}]}]}))?;
    assert_eq!(
        c.authorization,
        Some(json!({"name": "p", "namespace": "shop", "scope": "NAMESPACE"}))
    );
    Ok(())
}

#[test]
fn ztunnel_policies_istiod_does_not_send() -> Result<(), Error> {
    let policies = [
        policy(
            "shop",
            "waypoint",
            json!({"targetRefs": [{"group": "", "kind": "Service", "name": "web"}], "rules": [{}]}),
        ),
        policy(
            "shop",
            "custom",
            json!({"action": "CUSTOM", "provider": {"name": "ext"}, "rules": [{}]}),
        ),
        policy("shop", "audit", json!({"action": "AUDIT", "rules": [{}]})),
        json!({
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "dry", "namespace": "shop", "annotations": {"istio.io/dry-run": "true"}},
            "spec": {"action": "DENY", "rules": [{"from": [{"source": {"namespaces": ["a"]}}]}]},
        }),
    ];
    let out = Oracle::get()?.ztunnel(&policies, &ZtunnelOptions::default())?;
    // name, whether an Authorization is sent, the condition (status, reason) if any.
    let summary: Vec<String> = out
        .iter()
        .map(|c| {
            let status = c.status.as_ref().map(|s| (s.accepted(), s.reason.as_str()));
            format!("{} {} {status:?}", c.name, c.authorization.is_some())
        })
        .collect();
    assert_eq!(
        summary,
        [
            "waypoint false None",
            "custom false Some((false, \"UnsupportedValue\"))",
            "audit false Some((false, \"UnsupportedValue\"))",
            "dry false Some((false, \"UnsupportedValue\"))",
        ]
    );
    assert_eq!(
        out[1].status.as_ref().map(|s| s.message.as_str()),
        Some("ztunnel does not support the CUSTOM action")
    );

    // With the feature flag on, the dry-run policy is sent, marked dry_run.
    let opts = ZtunnelOptions {
        enable_dry_run: true,
        ..Default::default()
    };
    let dry = Oracle::get()?.ztunnel(&policies[3..], &opts)?;
    let authorization = dry[0].authorization.as_ref().expect("an Authorization");
    assert_eq!(authorization["dry_run"], json!(true));
    assert_eq!(authorization["action"], json!("DENY"));
    Ok(())
}

#[test]
fn ztunnel_empty_rule_no_rules_and_mesh_wide_scope() -> Result<(), Error> {
    let policies = [
        policy("shop", "allow-all", json!({"rules": [{}]})),
        policy("shop", "deny-nothing", json!({"action": "DENY"})),
        policy("istio-system", "mesh-allow-all", json!({"rules": [{}]})),
    ];
    let out = Oracle::get()?.ztunnel(&policies, &ZtunnelOptions::default())?;
    let authorizations: Vec<Option<Value>> = out.into_iter().map(|c| c.authorization).collect();
    assert_eq!(
        authorizations,
        [
            // One group with no rules.
            Some(
                json!({"name": "allow-all", "namespace": "shop", "scope": "NAMESPACE", "groups": [{}]})
            ),
            // No groups at all.
            Some(
                json!({"name": "deny-nothing", "namespace": "shop", "scope": "NAMESPACE", "action": "DENY"})
            ),
            // The root namespace is mesh-wide: GLOBAL, the zero value, so no `scope`.
            Some(json!({"name": "mesh-allow-all", "namespace": "istio-system", "groups": [{}]})),
        ]
    );

    // Another root namespace makes istio-system an ordinary namespace.
    let opts = ZtunnelOptions {
        root_namespace: "mesh-root".into(),
        ..Default::default()
    };
    let out = Oracle::get()?.ztunnel(&policies[2..], &opts)?;
    let scope = out[0].authorization.as_ref().map(|a| a["scope"].clone());
    assert_eq!(scope, Some(json!("NAMESPACE")));
    Ok(())
}

/// One process for thousands of policies, answers in input order, and every status-only
/// policy keeps its own status (istiod's batch keys them all "/": the binary works round it).
#[test]
fn ztunnel_large_batch_keeps_order_and_every_status() -> Result<(), Error> {
    let policies: Vec<Value> = (0..3000)
        .map(|i| {
            let spec = match i % 3 {
                0 => json!({"action": "AUDIT", "rules": [{}]}),
                1 => json!({"action": "DENY", "rules": [{"to": [{"operation": {"ports": [i.to_string()]}}]}]}),
                _ => json!({"targetRefs": [{"group": "", "kind": "Service", "name": "s"}]}),
            };
            policy(&format!("ns-{}", i % 7), &format!("p-{i}"), spec)
        })
        .collect();
    let out = Oracle::get()?.ztunnel(&policies, &ZtunnelOptions::default())?;
    for (i, c) in out.iter().enumerate() {
        assert_eq!(c.name, format!("p-{i}"));
        match i % 3 {
            0 => assert!(
                c.authorization.is_none() && c.status.as_ref().is_some_and(|s| !s.accepted())
            ),
            1 => {
                let port = c.authorization.as_ref().map(|a| {
                    a["groups"][0]["rules"][0]["matches"][0]["destination_ports"][0].clone()
                });
                assert_eq!(port, Some(json!(i)));
            }
            _ => assert!(c.authorization.is_none() && c.status.is_none()),
        }
    }
    Ok(())
}

#[test]
fn ztunnel_rejects_other_kinds_naming_the_object() -> Result<(), Error> {
    let objects = [
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"}}),
    ];
    match Oracle::get()?.ztunnel(&objects, &ZtunnelOptions::default()) {
        Err(Error::Failed { stderr, .. }) => {
            assert!(
                stderr.contains("Service web") && stderr.contains("not an AuthorizationPolicy"),
                "{stderr}"
            )
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    Ok(())
}

#[test]
fn rbac_for_a_sidecar_selects_by_labels_and_builds_a_deny_on_the_method() -> Result<(), Error> {
    let policies = [
        policy(
            "shop",
            "deny-post",
            json!({
                "selector": {"matchLabels": {"app": "web"}},
                "action": "DENY",
                "rules": [{"from": [{"source": {"namespaces": ["a"]}}], "to": [{"operation": {"methods": ["POST"]}}]}],
            }),
        ),
        policy(
            "shop",
            "other-app",
            json!({"selector": {"matchLabels": {"app": "db"}}, "rules": [{}]}),
        ),
        policy(
            "shop",
            "waypoint-only",
            json!({"targetRefs": [{"group": "", "kind": "Service", "name": "web"}], "rules": [{}]}),
        ),
    ];
    let sidecar = Proxy::Sidecar {
        namespace: "shop".into(),
        labels: BTreeMap::from([("app".to_string(), "web".to_string())]),
    };
    let rbac = Oracle::get()?.rbac(&policies, &RbacOptions::new(sidecar))?;
    assert_eq!(rbac.policies.deny, ["shop/deny-post"]);
    assert!(rbac.policies.allow.is_empty(), "{:?}", rbac.policies);
    assert_eq!(rbac.http.len(), 1, "{:#?}", rbac.http);
    let rules = &rbac.http[0]["typed_config"]["rules"];
    assert_eq!(rules["action"], json!("DENY"));
    let permission = &rules["policies"]["ns[shop]-policy[deny-post]-rule[0]"]["permissions"][0];
    assert_eq!(
        permission["and_rules"]["rules"][0]["or_rules"]["rules"][0]["header"],
        json!({"name": ":method", "string_match": {"exact": "POST"}})
    );

    let waypoint = Proxy::Waypoint {
        namespace: "shop".into(),
        gateway: "waypoint".into(),
        service: Some("web".into()),
    };
    let rbac = Oracle::get()?.rbac(&policies, &RbacOptions::new(waypoint))?;
    assert_eq!(rbac.policies.allow, ["shop/waypoint-only"]);
    assert!(rbac.policies.deny.is_empty(), "{:?}", rbac.policies);
    Ok(())
}
