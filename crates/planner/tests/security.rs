//! Security property of every plan in the fixture corpus: after the migration, no request is
//! admitted that the original policies denied.
//!
//! Every migrated workload is judged on a grid of requests (callers × methods × paths ×
//! ports), before (the sidecar enforces the originals in full) and after (the waypoint
//! enforces the targetRefs copies in full and the destination's ztunnel enforces the
//! remaining selector policies, seeing the waypoint's identity; callers that skip the
//! waypoint meet ztunnel alone).
//!
//! The ztunnel leg is Istio's: istiod's own conversion of each remaining policy into the
//! `Authorization` it sends to ztunnel (`e2e/istio`, through `meshmig-istio-oracle`),
//! evaluated by the ztunnel matcher, never meshmig's model of it. The sidecar and waypoint
//! legs enforce policies in full; a small evaluator of AuthorizationPolicy semantics plays
//! them (Envoy's RBAC filter does not run here).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;

use meshmig_api::MeshMigrationSpec;
use meshmig_api::istio::{AuthorizationPolicy, Condition, Operation, Rule, Source};
use meshmig_istio_oracle::oracle::{Oracle, ZtunnelOptions};
use meshmig_istio_oracle::ztunnel::{Authorization, Decision, Identity, Request, decide};
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

fn action(p: &AuthorizationPolicy) -> &str {
    p.spec.action.as_deref().unwrap_or("ALLOW")
}

/// A dry-run policy is evaluated and logged by a sidecar or waypoint, never enforced
/// (`istio.io/dry-run`, read as a Go boolean).
fn dry_run(p: &AuthorizationPolicy) -> bool {
    let v = p
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("istio.io/dry-run"));
    matches!(
        v.map(String::as_str),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True")
    )
}

/// Whether a proxy enforcing `policies` in full (a sidecar or a waypoint) admits `r`.
fn allowed(policies: &[&AuthorizationPolicy], r: &Req) -> bool {
    let enforced: Vec<&AuthorizationPolicy> =
        policies.iter().copied().filter(|p| !dry_run(p)).collect();
    let policies = &enforced[..];
    let matches = |p: &AuthorizationPolicy| {
        p.spec
            .rules
            .iter()
            .flatten()
            .any(|rule| rule_matches_full(rule, r))
    };
    for p in policies {
        // External authorization: treat a match as a denial.
        if matches!(action(p), "DENY" | "CUSTOM") && matches(p) {
            return false;
        }
    }
    let allows: Vec<&&AuthorizationPolicy> =
        policies.iter().filter(|p| action(p) == "ALLOW").collect();
    allows.is_empty() || allows.iter().any(|p| matches(p))
}

/// Istio's conversion of every policy ztunnel would be given, by the policy's content.
struct Conversions(HashMap<String, Option<Authorization>>);

fn policy_key(p: &AuthorizationPolicy) -> String {
    serde_json::to_string(p).unwrap()
}

impl Conversions {
    /// Converts every policy with istiod's own code, in one call per root namespace.
    fn of(policies: Vec<(String, AuthorizationPolicy)>) -> Self {
        let oracle = Oracle::get().unwrap_or_else(|e| panic!("Istio's code is the judge: {e}"));
        // istiod keys policies by namespace/name: inventories of the corpus reuse names, so
        // each call holds each name once.
        let mut batches: Vec<(String, BTreeMap<String, AuthorizationPolicy>)> = Vec::new();
        let mut seen = BTreeSet::new();
        for (root, p) in policies {
            let key = policy_key(&p);
            if !seen.insert(key.clone()) {
                continue;
            }
            let name =
                |x: &AuthorizationPolicy| (x.metadata.namespace.clone(), x.metadata.name.clone());
            let free = batches
                .iter_mut()
                .find(|(r, b)| *r == root && b.values().all(|x| name(x) != name(&p)));
            match free {
                Some((_, b)) => {
                    b.insert(key, p);
                }
                None => batches.push((root, BTreeMap::from([(key, p)]))),
            }
        }
        let mut out = HashMap::new();
        for (root, ps) in batches {
            let objects: Vec<serde_json::Value> = ps
                .values()
                .map(|p| {
                    let mut v = serde_json::to_value(p).unwrap();
                    v["apiVersion"] = "security.istio.io/v1".into();
                    v["kind"] = "AuthorizationPolicy".into();
                    v
                })
                .collect();
            let opts = ZtunnelOptions {
                root_namespace: root,
                ..Default::default()
            };
            let converted = oracle.ztunnel(&objects, &opts).unwrap();
            assert_eq!(converted.len(), objects.len());
            for (key, c) in ps.keys().zip(converted) {
                let auth = c.authorization.map(|a| {
                    Authorization::from_json(&a.to_string())
                        .unwrap_or_else(|e| panic!("istiod's Authorization {a}: {e}"))
                });
                out.insert(key.clone(), auth);
            }
        }
        Conversions(out)
    }

    /// Whether the destination's ztunnel admits `r`, enforcing `policies` (already selected
    /// for the workload) as istiod converts them.
    fn ztunnel_allows(&self, policies: &[&AuthorizationPolicy], r: &Req) -> bool {
        let auths: Vec<&Authorization> = policies
            .iter()
            .filter_map(|p| {
                self.0
                    .get(&policy_key(p))
                    .unwrap_or_else(|| panic!("not converted: {}", policy_key(p)))
                    .as_ref()
            })
            .collect();
        decide(auths, &ztunnel_request(r)) == Decision::Allow
    }
}

/// The grid's request as ztunnel sees it: the peer identity, addresses of the test's own
/// (documentation ranges, which no fixture's ipBlocks name), the port.
fn ztunnel_request(r: &Req) -> Request {
    let source = r.principal.as_deref().map(|p| {
        let parts: Vec<&str> = p.split('/').collect();
        Identity::new(
            parts.first().copied().unwrap_or_default(),
            parts.get(2).copied().unwrap_or_default(),
            parts.get(4).copied().unwrap_or_default(),
        )
    });
    Request {
        source,
        source_ip: IpAddr::from([192, 0, 2, 10]),
        destination_ip: IpAddr::from([198, 51, 100, 20]),
        destination_port: r.port.parse().unwrap_or(0),
    }
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

/// One inventory of the corpus and its plan.
struct Case {
    name: String,
    inv: Inventory,
    plan: Plan,
}

impl Case {
    /// Every policy a ztunnel of this case may be given: the originals and the generated
    /// ones, with the root namespace istiod reads them under.
    fn policies(&self) -> Vec<(String, AuthorizationPolicy)> {
        let root = self.plan.control_plane.root_namespace.clone();
        let generated = self
            .plan
            .manifests
            .iter()
            .filter(|m| m["kind"] == "AuthorizationPolicy")
            .map(|m| serde_json::from_value(m.clone()).unwrap());
        self.inv
            .authorization_policies
            .iter()
            .cloned()
            .chain(generated)
            .map(|p| (root.clone(), p))
            .collect()
    }
}

/// Checks one inventory; returns the number of requests evaluated.
fn check(case: &Case, conversions: &Conversions, failures: &mut Vec<String>) -> usize {
    let (name, inv, plan) = (&case.name, &case.inv, &case.plan);
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
    let applied = applied_manifests(plan);
    let deleted = deleted(plan);
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
                                let before = allowed(&originals, &req);
                                evaluated += 1;
                                if served {
                                    let through = allowed(&copies, &req)
                                        && conversions.ztunnel_allows(
                                            &remaining,
                                            &Req {
                                                principal: Some(waypoint.clone()),
                                                ..req.clone()
                                            },
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
                                    let direct = conversions.ztunnel_allows(&remaining, &req);
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
    let mut corpus = Vec::new();
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
        let plan = plan(&inv, &spec, "sec");
        corpus.push(Case {
            name: dir.file_name().unwrap().to_string_lossy().into_owned(),
            inv,
            plan,
        });
    }
    let conversions = Conversions::of(corpus.iter().flat_map(Case::policies).collect());
    let mut failures = Vec::new();
    let mut total = 0;
    let mut checked = 0;
    for case in &corpus {
        let n = check(case, &conversions, &mut failures);
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
    println!(
        "security: {checked} inventories, {total} requests, {} policies converted by istiod, 0 violations",
        conversions.0.len()
    );
}

#[test]
fn the_evaluator_itself_distinguishes() {
    // Sanity: in full, an ALLOW on GET denies POST; istiod drops that rule for ztunnel, so
    // ztunnel denies everything. An L7-only DENY denies /admin in full and never fires at
    // ztunnel (its only match is empty).
    let p: AuthorizationPolicy = serde_saphyr::from_str(
        "metadata: {name: p, namespace: a}\nspec: {rules: [{to: [{operation: {methods: [GET]}}]}]}",
    )
    .unwrap();
    let d: AuthorizationPolicy = serde_saphyr::from_str("metadata: {name: d, namespace: a}\nspec: {action: DENY, rules: [{to: [{operation: {paths: [/admin]}}]}]}").unwrap();
    let conversions = Conversions::of(vec![
        ("istio-system".into(), p.clone()),
        ("istio-system".into(), d.clone()),
    ]);
    let get = Req {
        principal: Some("cluster.local/ns/a/sa/x".into()),
        method: "GET",
        path: "/",
        port: "80".into(),
        host: "h".into(),
    };
    let post = Req {
        method: "POST",
        ..get.clone()
    };
    assert!(allowed(&[&p], &get));
    assert!(!allowed(&[&p], &post));
    assert!(!conversions.ztunnel_allows(&[&p], &get));
    let admin = Req {
        path: "/admin",
        ..get.clone()
    };
    assert!(!allowed(&[&d], &admin));
    assert!(
        conversions.ztunnel_allows(&[&d], &admin),
        "an L7-only DENY does nothing at ztunnel"
    );
}
