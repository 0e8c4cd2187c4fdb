//! Runs the real `meshmig-istio` binary (built from istio.io/istio by e2e/istio/build.sh,
//! or `$MESHMIG_ISTIO_HOME`) and pins what Istio actually answers.

use std::collections::BTreeMap;

use meshmig_istio_oracle::oracle::{
    Error, Oracle, Outcome, Proxy, RbacOptions, RoutesOptions, ZtunnelConversion, ZtunnelOptions,
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

/// A namespace with a Service `web` (two versions) and a Deployment (which istiod ignores).
fn shop(namespace_labels: Value) -> Vec<Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": "shop", "labels": namespace_labels}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
               "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 8080}]}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web-v1", "namespace": "shop"},
               "spec": {"selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web", "version": "v1"}}}}}),
    ]
}

#[test]
fn routes_for_a_sidecar_follow_the_virtual_service_and_its_subsets() -> Result<(), Error> {
    let mut objects = shop(json!({"istio-injection": "enabled"}));
    objects.push(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"host": "web", "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                            {"name": "v2", "labels": {"version": "v2"}}]},
    }));
    objects.push(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"hosts": ["web"], "http": [
            {"name": "jason", "match": [{"headers": {"end-user": {"exact": "jason"}}}],
             "route": [{"destination": {"host": "web", "subset": "v2"}}], "timeout": "3s"},
            {"name": "split", "route": [{"destination": {"host": "web", "subset": "v1"}, "weight": 90},
                                        {"destination": {"host": "web", "subset": "v2"}, "weight": 10}]},
        ]},
    }));
    let routes = Oracle::get()?.routes(&objects, &RoutesOptions::sidecar("shop"))?;
    assert_eq!(routes.proxy.proxy_type, "sidecar");
    assert!(
        routes
            .ignored
            .iter()
            .any(|i| i.contains("Deployment shop/web-v1")),
        "{:?}",
        routes.ignored
    );
    let vh = routes
        .sidecar_virtual_host(8080, "web.shop.svc.cluster.local")
        .expect("a virtual host for web");
    assert!(vh.domains.iter().any(|d| d == "web"), "{:?}", vh.domains);
    let names: Vec<&str> = vh.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["jason", "split"]);
    let jason = &vh.routes[0];
    assert!(
        jason
            .config
            .ends_with("/namespaces/shop/virtual-service/web"),
        "{}",
        jason.config
    );
    assert_eq!(jason.route_match.path.kind, "prefix");
    assert_eq!(jason.route_match.headers[0].name, "end-user");
    assert_eq!(
        (
            jason.route_match.headers[0].value.kind.as_str(),
            jason.route_match.headers[0].value.value.as_str()
        ),
        ("exact", "jason")
    );
    let action = jason.action.route.as_ref().expect("a route action");
    assert_eq!(action.timeout.as_deref(), Some("3s"));
    assert_eq!(
        action.clusters[0].name,
        "outbound|8080|v2|web.shop.svc.cluster.local"
    );
    assert_eq!(action.clusters[0].weight, None);
    let split = vh.routes[1].action.route.as_ref().expect("a route action");
    let weights: Vec<(&str, Option<u32>)> = split
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c.weight))
        .collect();
    assert_eq!(
        weights,
        [
            ("outbound|8080|v1|web.shop.svc.cluster.local", Some(90)),
            ("outbound|8080|v2|web.shop.svc.cluster.local", Some(10)),
        ]
    );
    // No timeout on the VirtualService: istiod disables Envoy's 15 s default.
    assert_eq!(split.timeout.as_deref(), Some("0s"));
    let v2 = &routes.clusters["outbound|8080|v2|web.shop.svc.cluster.local"];
    assert!(v2.resolved);
    assert_eq!((v2.namespace.as_str(), v2.name.as_str()), ("shop", "web"));
    assert_eq!(v2.selector, BTreeMap::from([("app".into(), "web".into())]));
    assert_eq!(
        v2.subset_labels,
        Some(BTreeMap::from([("version".into(), "v2".into())]))
    );
    assert_eq!(v2.subset_found, Some(true));
    assert_eq!(v2.subset_rule, "shop/web");
    Ok(())
}

#[test]
fn routes_for_a_waypoint_come_from_the_http_route_with_api_server_defaults() -> Result<(), Error> {
    let mut objects =
        shop(json!({"istio.io/dataplane-mode": "ambient", "istio.io/use-waypoint": "waypoint"}));
    objects.push(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-v2", "namespace": "shop"},
        "spec": {"selector": {"app": "web", "version": "v2"}, "ports": [{"name": "http", "port": 8080}]},
    }));
    objects.push(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "waypoint", "namespace": "shop"},
        "spec": {"gatewayClassName": "istio-waypoint",
                 "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]},
    }));
    // No path in either match, no weight, no group/kind: the API server's CRD defaults fill
    // them in (without them istiod's conversion would fail).
    objects.push(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "web"}], "rules": [
            {"name": "jason", "matches": [{"headers": [{"name": "end-user", "value": "jason"}]}],
             "backendRefs": [{"name": "web-v2", "port": 8080}]},
            {"backendRefs": [{"name": "web", "port": 8080}],
             "filters": [{"type": "RequestRedirect", "requestRedirect": {"hostname": "example.com"}}]},
        ]},
    }));
    let mut opts = RoutesOptions::waypoint("shop", "waypoint");
    opts.raw = true;
    let routes = Oracle::get()?.routes(&objects, &opts)?;
    assert_eq!(routes.proxy.proxy_type, "waypoint");
    assert_eq!(
        routes.proxy.services,
        [
            "shop/web-v2.shop.svc.cluster.local",
            "shop/web.shop.svc.cluster.local"
        ]
    );
    let rc = routes
        .waypoint_route_config("web.shop.svc.cluster.local", 8080)
        .expect("a filter chain for web");
    assert_eq!(
        rc.filter_chain,
        "inbound-vip|8080|http|web.shop.svc.cluster.local"
    );
    let vh = &rc.virtual_hosts[0];
    assert_eq!(vh.domains, ["*"]);
    let jason = &vh.routes[0];
    assert_eq!(jason.name, "jason");
    assert!(jason.raw.is_some());
    assert_eq!(jason.route_match.headers[0].value.kind, "exact");
    let action = jason.action.route.as_ref().expect("a route action");
    assert_eq!(
        action.clusters[0].name,
        "inbound-vip|8080|http|web-v2.shop.svc.cluster.local"
    );
    // Gateway API requires 500 for a backend that cannot be resolved.
    assert_eq!(action.cluster_not_found_status, 500);
    let v2 = &routes.clusters["inbound-vip|8080|http|web-v2.shop.svc.cluster.local"];
    assert_eq!(
        v2.selector,
        BTreeMap::from([
            ("app".into(), "web".into()),
            ("version".into(), "v2".into())
        ])
    );
    assert_eq!(v2.subset_labels, None);
    // The redirect: istiod derives the port from the request's (the Service port) when the
    // filter names neither a port nor a scheme; 302 is the CRD's default code.
    let redirect = vh.routes[1].action.redirect.as_ref().expect("a redirect");
    assert_eq!(
        (redirect.host.as_str(), redirect.port, redirect.code),
        ("example.com", 8080, 302)
    );
    Ok(())
}

#[test]
fn routes_for_a_waypoint_need_its_gateway() -> Result<(), Error> {
    let objects = shop(json!({}));
    match Oracle::get()?.routes(&objects, &RoutesOptions::waypoint("shop", "waypoint")) {
        Err(Error::Failed { stderr, .. }) => {
            assert!(stderr.contains("no Gateway shop/waypoint"), "{stderr}");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    Ok(())
}
