//! Security property of every plan in the fixture corpus: after the migration, no request is
//! admitted that the original policies denied.
//!
//! A small evaluator of AuthorizationPolicy semantics is run over a grid of requests
//! (callers × methods × paths × ports) for every migrated workload, before (the sidecar
//! enforces the originals in full) and after (the waypoint enforces the targetRefs copies in
//! full and the destination's ztunnel enforces the remaining selector policies at L4, seeing
//! the waypoint's identity; callers that skip the waypoint meet ztunnel alone).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::BTreeSet;
use std::path::PathBuf;

use meshmig_api::MeshMigrationSpec;
use meshmig_api::istio::{AuthorizationPolicy, Condition, Operation, Rule, Source};
use meshmig_planner::model::{Model, namespace_injection, selector_matches, service_selector};
use meshmig_planner::plan::{Op, Plan, injected_namespaces, plan};
use meshmig_planner::{Inventory, Severity};

#[derive(Clone, Debug)]
struct Req {
    principal: Option<String>,
    method: &'static str,
    path: &'static str,
    port: String,
    host: String,
}

impl Req {
    fn namespace(&self) -> Option<&str> {
        let p = self.principal.as_deref()?;
        let mut it = p.split('/');
        while let Some(x) = it.next() {
            if x == "ns" {
                return it.next();
            }
        }
        None
    }
}

fn wild(pattern: &str, value: &str) -> bool {
    if pattern == "*" {
        return !value.is_empty();
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        return value.ends_with(suffix);
    }
    if let Some(prefix) = pattern.strip_suffix('*') {
        return value.starts_with(prefix);
    }
    pattern == value
}

fn any(list: &Option<Vec<String>>, value: Option<&str>) -> bool {
    match (list, value) {
        (Some(l), Some(v)) => l.iter().any(|p| wild(p, v)),
        _ => false,
    }
}

/// A positive attribute: absent means "no constraint".
fn pos(list: &Option<Vec<String>>, value: Option<&str>) -> bool {
    list.is_none() || any(list, value)
}

/// A negative attribute.
fn neg(list: &Option<Vec<String>>, value: Option<&str>) -> bool {
    list.is_none() || !any(list, value)
}

/// Whether a source matches; `l4` drops what ztunnel cannot see (returns None when the
/// source has only such attributes and nothing else).
fn source_matches(s: &Source, r: &Req, l4_strip: bool) -> bool {
    let principal = r.principal.as_deref();
    let ns = r.namespace();
    let sa = r.principal.as_ref().map(|p| {
        let parts: Vec<&str> = p.split('/').collect();
        format!(
            "{}/{}",
            parts.get(2).unwrap_or(&""),
            parts.get(4).unwrap_or(&"")
        )
    });
    let l4 = pos(&s.principals, principal)
        && neg(&s.not_principals, principal)
        && pos(&s.namespaces, ns)
        && neg(&s.not_namespaces, ns)
        && pos(&s.service_accounts, sa.as_deref())
        && neg(&s.not_service_accounts, sa.as_deref())
        // No source IP in the grid: positive IP blocks never match.
        && pos(&s.ip_blocks, None)
        && neg(&s.not_ip_blocks, None);
    if l4_strip {
        return l4;
    }
    // Requests in the grid carry no JWT and no X-Forwarded-For.
    l4 && pos(&s.request_principals, None)
        && neg(&s.not_request_principals, None)
        && pos(&s.remote_ip_blocks, None)
        && neg(&s.not_remote_ip_blocks, None)
        && s.extra.is_empty()
}

fn operation_matches(o: &Operation, r: &Req, l4_strip: bool) -> bool {
    let l4 = pos(&o.ports, Some(&r.port)) && neg(&o.not_ports, Some(&r.port));
    if l4_strip {
        return l4;
    }
    l4 && pos(&o.hosts, Some(&r.host))
        && neg(&o.not_hosts, Some(&r.host))
        && pos(&o.methods, Some(r.method))
        && neg(&o.not_methods, Some(r.method))
        && pos(&o.paths, Some(r.path))
        && neg(&o.not_paths, Some(r.path))
        && o.extra.is_empty()
}

fn condition_matches(c: &Condition, r: &Req) -> Option<bool> {
    let value: Option<String> = match c.key.as_str() {
        "source.principal" => r.principal.clone(),
        "source.namespace" => r.namespace().map(str::to_string),
        "destination.port" => Some(r.port.clone()),
        "source.ip" | "destination.ip" => None,
        // L7 keys: no headers, no JWT in the grid.
        _ => return None,
    };
    Some(pos(&c.values, value.as_deref()) && neg(&c.not_values, value.as_deref()))
}

fn l7_condition(c: &Condition) -> bool {
    !matches!(
        c.key.as_str(),
        "source.principal"
            | "source.namespace"
            | "destination.port"
            | "source.ip"
            | "destination.ip"
    )
}

fn rule_has_l7(rule: &Rule) -> bool {
    let c = meshmig_planner::authz::classify_rule(rule, 0);
    c.has_l7()
}

/// Full (sidecar/waypoint) match of a rule.
fn rule_matches_full(rule: &Rule, r: &Req) -> bool {
    let from = rule.from.as_ref().is_none_or(|fs| {
        fs.iter().any(|f| {
            f.source
                .as_ref()
                .is_none_or(|s| source_matches(s, r, false))
        })
    });
    let to = rule.to.as_ref().is_none_or(|ts| {
        ts.iter().any(|t| {
            t.operation
                .as_ref()
                .is_none_or(|o| operation_matches(o, r, false))
        })
    });
    let when = rule.when.iter().flatten().all(|c| {
        match condition_matches(c, r) {
            Some(b) => b,
            // L7 key with no value in the grid: only a notValues-only condition matches.
            None => c.values.is_none(),
        }
    });
    from && to && when
}

/// What ztunnel does with a rule: ALLOW rules with L7 parts are dropped; DENY rules lose
/// their L7 parts, and are ignored when nothing is left.
fn rule_matches_l4(rule: &Rule, r: &Req, allow: bool) -> bool {
    if rule_has_l7(rule) {
        if allow {
            return false;
        }
        let class = meshmig_planner::authz::classify_rule(rule, 0);
        if !class.has_l4() {
            return false;
        }
    }
    let from = rule.from.as_ref().is_none_or(|fs| {
        fs.iter()
            .any(|f| f.source.as_ref().is_none_or(|s| source_matches(s, r, true)))
    });
    let to = rule.to.as_ref().is_none_or(|ts| {
        ts.iter().any(|t| {
            t.operation
                .as_ref()
                .is_none_or(|o| operation_matches(o, r, true))
        })
    });
    let when = rule
        .when
        .iter()
        .flatten()
        .filter(|c| !l7_condition(c))
        .all(|c| condition_matches(c, r).unwrap_or(true));
    from && to && when
}

fn action(p: &AuthorizationPolicy) -> &str {
    p.spec.action.as_deref().unwrap_or("ALLOW")
}

fn allowed(policies: &[&AuthorizationPolicy], r: &Req, l4: bool) -> bool {
    let matches = |p: &AuthorizationPolicy, allow: bool| {
        p.spec.rules.iter().flatten().any(|rule| {
            if l4 {
                rule_matches_l4(rule, r, allow)
            } else {
                rule_matches_full(rule, r)
            }
        })
    };
    for p in policies {
        match action(p) {
            "DENY" if matches(p, false) => return false,
            // External authorization: treat a match as a denial on the full path; ztunnel
            // does not run it at all.
            "CUSTOM" if !l4 && matches(p, false) => return false,
            _ => {}
        }
    }
    let allows: Vec<&&AuthorizationPolicy> =
        policies.iter().filter(|p| action(p) == "ALLOW").collect();
    allows.is_empty() || allows.iter().any(|p| matches(p, true))
}

fn applied_manifests(plan: &Plan) -> BTreeSet<usize> {
    plan.namespaces
        .iter()
        .flat_map(|n| n.steps.iter())
        .flat_map(|s| s.actions.iter())
        .filter(|a| matches!(a.op, Op::Create | Op::Apply))
        .filter_map(|a| a.manifest)
        .collect()
}

fn deleted(plan: &Plan) -> BTreeSet<String> {
    plan.namespaces
        .iter()
        .flat_map(|n| n.steps.iter())
        .flat_map(|s| s.actions.iter())
        .filter(|a| a.op == Op::Delete)
        .map(|a| a.object.to_string())
        .collect()
}

/// Checks one inventory; returns the number of requests evaluated.
fn check(
    name: &str,
    inv: &Inventory,
    spec: &MeshMigrationSpec,
    failures: &mut Vec<String>,
) -> usize {
    let plan = plan(inv, spec, "sec");
    let unaccepted: Vec<&str> = plan
        .blockers()
        .filter(|f| f.id != "enforcement-fail-open")
        .map(|f| f.id)
        .collect();
    if !unaccepted.is_empty() {
        // Such a migration never starts.
        return 0;
    }
    let fail_open: BTreeSet<String> = plan
        .findings
        .iter()
        .filter(|f| f.id == "enforcement-fail-open")
        .map(|f| f.object.to_string())
        .collect();
    let model = Model::new(inv);
    let applied = applied_manifests(&plan);
    let deleted = deleted(&plan);
    let generated: Vec<(usize, AuthorizationPolicy)> = plan
        .manifests
        .iter()
        .enumerate()
        .filter(|(i, m)| m["kind"] == "AuthorizationPolicy" && applied.contains(i))
        .map(|(i, m)| (i, serde_json::from_value(m.clone()).unwrap()))
        .collect();
    let targets: BTreeSet<String> = plan.namespace_order.iter().cloned().collect();
    let root = plan.control_plane.root_namespace.clone();
    let mut evaluated = 0;
    for ns in &plan.namespaces {
        if !ns.exists {
            continue;
        }
        let injection = namespace_injection(model.namespace(&ns.name));
        let waypoint = ns.waypoint.principal.clone();
        let mut callers: BTreeSet<Option<String>> =
            BTreeSet::from([None, Some("cluster.local/ns/outsider/sa/x".into())]);
        for p in &inv.authorization_policies {
            for rule in p.spec.rules.iter().flatten() {
                for f in rule.from.iter().flatten() {
                    if let Some(s) = &f.source {
                        for pr in s.principals.iter().flatten().filter(|p| !p.contains('*')) {
                            callers.insert(Some(pr.clone()));
                        }
                    }
                }
            }
        }
        for w in model.workloads_in(&ns.name) {
            callers.insert(Some(w.principal(&plan.control_plane.trust_domain)));
        }
        for wl in model.workloads_in(&ns.name) {
            if !wl.has_sidecar(&injection) || wl.opted_out() {
                continue;
            }
            let applies = |p: &AuthorizationPolicy| {
                let sel = p
                    .spec
                    .selector
                    .as_ref()
                    .and_then(|s| s.match_labels.as_ref())
                    .filter(|m| !m.is_empty());
                let targeted = p.spec.target_ref.is_some()
                    || p.spec.target_refs.as_ref().is_some_and(|t| !t.is_empty());
                !targeted && sel.is_none_or(|s| selector_matches(s, wl.pod_labels))
            };
            let originals: Vec<&AuthorizationPolicy> = inv
                .authorization_policies
                .iter()
                .filter(|p| {
                    let pns = p.metadata.namespace.as_deref().unwrap_or_default();
                    (pns == ns.name || pns == root) && applies(p)
                })
                .collect();
            let remaining: Vec<&AuthorizationPolicy> = originals
                .iter()
                .copied()
                .filter(|p| {
                    !deleted.contains(&format!(
                        "AuthorizationPolicy/{}/{}",
                        p.metadata.namespace.as_deref().unwrap_or_default(),
                        p.metadata.name.as_deref().unwrap_or_default()
                    ))
                })
                .chain(generated.iter().map(|(_, p)| p).filter(|p| {
                    p.metadata.namespace.as_deref() == Some(&ns.name)
                        && p.spec.selector.is_some()
                        && applies(p)
                }))
                .collect();
            for svc in model.workload_services(wl) {
                let sname = svc.metadata.name.clone().unwrap_or_default();
                let served = ns
                    .services
                    .iter()
                    .any(|s| s.name == sname && s.served_by_waypoint);
                let copies: Vec<&AuthorizationPolicy> = generated
                    .iter()
                    .map(|(_, p)| p)
                    .filter(|p| p.metadata.namespace.as_deref() == Some(&ns.name))
                    .filter(|p| {
                        p.spec.target_refs.iter().flatten().any(|t| {
                            t.kind.as_deref() == Some("Service")
                                && t.name.as_deref() == Some(&sname)
                        })
                    })
                    .collect();
                let ports: Vec<String> = svc
                    .spec
                    .as_ref()
                    .and_then(|s| s.ports.as_ref())
                    .map(|ps| ps.iter().map(|p| p.port.to_string()).collect())
                    .unwrap_or_default();
                let _ = service_selector(svc);
                let host = format!("{sname}.{}.svc.cluster.local", ns.name);
                for caller in &callers {
                    if caller.as_deref() == Some(waypoint.as_str()) {
                        continue;
                    }
                    let caller_ns = Req {
                        principal: caller.clone(),
                        method: "GET",
                        path: "/",
                        port: String::new(),
                        host: String::new(),
                    }
                    .namespace()
                    .map(str::to_string);
                    let in_migration = caller_ns.as_ref().is_some_and(|n| targets.contains(n));
                    for method in ["GET", "POST", "DELETE"] {
                        for path in ["/", "/admin", "/v1/items", "/secure/x"] {
                            for port in ports.iter().chain(std::iter::once(&"9090".to_string())) {
                                let req = Req {
                                    principal: caller.clone(),
                                    method,
                                    path,
                                    port: port.clone(),
                                    host: host.clone(),
                                };
                                let before = allowed(&originals, &req, false);
                                evaluated += 1;
                                if served {
                                    let through = allowed(&copies, &req, false)
                                        && allowed(
                                            &remaining,
                                            &Req {
                                                principal: Some(waypoint.clone()),
                                                ..req.clone()
                                            },
                                            true,
                                        );
                                    if through && !before {
                                        failures.push(format!("{name}: {sname} via waypoint admits {req:?}, which the original policies denied"));
                                    }
                                }
                                // Callers that skip the waypoint: sidecars outside the migration
                                // (and everyone, where no waypoint serves the Service).
                                let direct_possible =
                                    !served || (!in_migration && caller.is_some());
                                let accepted_window = originals.iter().any(|p| {
                                    fail_open.contains(&format!(
                                        "AuthorizationPolicy/{}/{}",
                                        p.metadata.namespace.as_deref().unwrap_or_default(),
                                        p.metadata.name.as_deref().unwrap_or_default()
                                    ))
                                });
                                if direct_possible && !accepted_window {
                                    let direct = allowed(&remaining, &req, true);
                                    if direct && !before {
                                        failures.push(format!("{name}: {sname} directly admits {req:?}, which the original policies denied"));
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    let _ = Severity::Blocker;
    evaluated
}

#[test]
fn no_generated_policy_admits_what_the_originals_denied() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/bookinfo"));
    cases.sort();
    let mut failures = Vec::new();
    let mut total = 0;
    let mut checked = 0;
    for dir in cases {
        let mut inv = Inventory::default();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        for f in &files {
            inv.load_str(&std::fs::read_to_string(f).unwrap(), "x")
                .unwrap();
        }
        if inv.authorization_policies.is_empty() {
            continue;
        }
        let spec = match inv.mesh_migrations.first() {
            Some(m) => m.spec.clone(),
            None => MeshMigrationSpec {
                namespaces: Some(injected_namespaces(&inv)),
                ..Default::default()
            },
        };
        let n = check(
            &dir.file_name().unwrap().to_string_lossy(),
            &inv,
            &spec,
            &mut failures,
        );
        if n > 0 {
            checked += 1;
        }
        total += n;
    }
    assert!(
        checked >= 15,
        "only {checked} inventories with policies were checked"
    );
    assert!(total > 5_000, "only {total} requests evaluated");
    assert!(
        failures.is_empty(),
        "{} violations, e.g.:\n{}",
        failures.len(),
        failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    println!("security: {checked} inventories, {total} requests, 0 violations");
}

#[test]
fn the_evaluator_itself_distinguishes() {
    // Sanity: an ALLOW on GET denies POST; at L4 the same rule is dropped (deny all).
    let p: AuthorizationPolicy = serde_saphyr::from_str(
        "metadata: {name: p, namespace: a}\nspec: {rules: [{to: [{operation: {methods: [GET]}}]}]}",
    )
    .unwrap();
    let get = Req {
        principal: None,
        method: "GET",
        path: "/",
        port: "80".into(),
        host: "h".into(),
    };
    let post = Req {
        method: "POST",
        ..get.clone()
    };
    assert!(allowed(&[&p], &get, false));
    assert!(!allowed(&[&p], &post, false));
    assert!(!allowed(&[&p], &get, true));
    let d: AuthorizationPolicy = serde_saphyr::from_str("metadata: {name: d, namespace: a}\nspec: {action: DENY, rules: [{to: [{operation: {paths: [/admin]}}]}]}").unwrap();
    let admin = Req {
        path: "/admin",
        ..get.clone()
    };
    assert!(!allowed(&[&d], &admin, false));
    assert!(
        allowed(&[&d], &admin, true),
        "an L7-only DENY does nothing at ztunnel"
    );
}
