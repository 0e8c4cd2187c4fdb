//! Route equivalence of every VirtualService → HTTPRoute conversion in the fixture corpus,
//! judged by istiod's own route generation.
//!
//! For each fixture (and `examples/bookinfo`) whose plan applies an HTTPRoute converted from
//! a mesh VirtualService, `meshmig-istio routes` (through `meshmig-istio-oracle`) builds:
//!
//! - **before**: the outbound routes of two sidecars, one in the VirtualService's namespace
//!   and one in a namespace of its own (`meshmig-probe`), from the original objects
//!   (VirtualServices, DestinationRules, Services, …);
//! - **after**: the routes of the waypoint serving the route's parent Service, from the
//!   objects as the plan leaves them (its generated HTTPRoutes, per-version Services, waypoint
//!   Gateway and labels applied; the objects it deletes removed).
//!
//! A grid of requests (paths, headers, query parameters, methods, drawn from the matchers of
//! both route tables) is evaluated against both with the small Envoy route matcher below, and
//! the outcomes are compared after normalising clusters to the pods they reach.
//!
//! **The matcher** (Envoy's semantics, as far as istiod's routes use them): the virtual host
//! is the sidecar's whose domains hold the Service's FQDN in the route configuration named by
//! the port, or the waypoint's filter chain for that Service and port. Its routes are tried
//! in order and the first whose match holds wins (none: 404). A match holds when the path
//! matcher (prefix, exact, RE2 regex over the whole path, path-separated prefix; the query is
//! not part of the path; `caseSensitive: false` compares ASCII case-insensitively), every
//! header matcher (`:method`, `:authority`, `:path` and `:scheme` are pseudo-headers; a
//! missing header fails every matcher but an absence/presence check, which `invert` flips;
//! `invert` flips the others only when the header is present) and every query parameter
//! matcher (the first value of the parameter) hold. A route with a match part the oracle does
//! not model is reported, never guessed.
//!
//! **Outcomes** compared, per request: the action (forward, redirect, fixed response, none);
//! the backends with their share of the weight, each backend being the namespace, the
//! workloads selected (Service selector plus subset labels) and the target port; the path
//! and Host after rewrites; the request headers after every header operation (cluster, then
//! route, then virtual host; removals before additions), on the request as sent and with
//! every touched header already present; the response headers likewise on a synthetic
//! response; timeout; retry policy; mirrors (backend and percentage); CORS; fault injection;
//! the redirect's Location and code; a fixed response's status and body.
//!
//! A difference is **explained** only when the plan has a finding about that VirtualService
//! whose id is in [`EXPLAINED_BY`] for that aspect; any other difference fails the test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use meshmig_api::MeshMigrationSpec;
use meshmig_istio_oracle::oracle::{
    HeaderMatch, HeaderOps, Oracle, PathMatch, Route, RouteConfig, Routes, RoutesOptions,
    StringMatch, VirtualHost,
};
use meshmig_planner::Inventory;
use meshmig_planner::model::{Model, selector_matches};
use meshmig_planner::plan::{Op, Plan, injected_namespaces, plan};
use regex::Regex;
use serde_json::{Value, json};

/// How a finding's explanation is scoped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    /// The request hit (on either side) a rule the finding names (`http[i]`); a finding
    /// that names no rule covers the whole VirtualService.
    Rule,
    /// Both sides matched a rule the finding names, and not the same one (rule order).
    SwappedRules,
}

/// Finding ids that explain a difference in the listed aspects of a converted
/// VirtualService's outcome (`*`: any aspect), and how. Each entry says why the difference
/// is the finding's subject.
const EXPLAINED_BY: &[(&str, &[&str], Scope)] = &[
    // Fault injection has no Gateway API equivalent: the waypoint has no fault filter config.
    ("vs-fault-injection", &["fault"], Scope::Rule),
    // Only attempts and status codes survive; retryOn conditions, and without the
    // experimental channel the whole policy, are lost (the finding says which).
    ("vs-retries", &["retry"], Scope::Rule),
    // Case-insensitive URI matching has no Gateway API equivalent: requests differing in
    // case match other rules.
    ("vs-ignore-uri-case", &["*"], Scope::Rule),
    // A VirtualService prefix is a string prefix, a PathPrefix matches whole segments.
    ("vs-prefix-not-segment", &["*"], Scope::Rule),
    // istiod drops a PathPrefix's trailing slash: `/v1/` also takes `/v1` (a blocker).
    ("vs-prefix-trailing-slash", &["*"], Scope::Rule),
    // istiod's HTTPRoute CORS filter answers preflights the policy does not match; the
    // sidecar forwarded them (unless unmatchedPreflights: IGNORE).
    ("vs-cors-preflight", &["cors"], Scope::Rule),
    // The installed Gateway API has no CORS filter: the policy is dropped (a blocker).
    ("vs-cors-unsupported", &["cors"], Scope::Rule),
    // Gateway API orders rules by specificity, the VirtualService by position.
    ("vs-rule-precedence", &["*"], Scope::SwappedRules),
    // Match parts, redirect codes, timeouts and CORS origins that cannot be expressed.
    ("vs-match-unsupported", &["*"], Scope::Rule),
    // Rules the HTTPRoute cannot express at all (blockers).
    ("vs-source-match", &["*"], Scope::Rule),
    ("vs-without-headers", &["*"], Scope::Rule),
    ("vs-delegate", &["*"], Scope::Rule),
    ("vs-direct-response", &["*"], Scope::Rule),
    ("vs-uri-regex-rewrite", &["*"], Scope::Rule),
    // A subset no DestinationRule defines: the sidecar routes to an empty subset cluster.
    ("vs-subset-unknown", &["backends", "mirrors"], Scope::Rule),
    // A Service that meshmig did not create already has the per-version name: the route
    // reaches its pods (explains only when the finding is about the VirtualService).
    (
        "per-version-service-conflict",
        &["backends", "mirrors"],
        Scope::Rule,
    ),
    // A DestinationRule exported to its own namespace only: callers elsewhere never saw its
    // subsets (their sidecars route to the whole Service), the waypoint applies them.
    ("dr-export-to", &["backends", "mirrors"], Scope::Rule),
    // A mirror percentage below the HTTPRoute's precision.
    ("vs-mirror-percent", &["mirrors"], Scope::Rule),
    // A destination without a port on a multi-port Service: the sidecar keeps the port the
    // request came in on, the backendRef names one port (the finding says which).
    ("vs-port-ambiguous", &["backends", "mirrors"], Scope::Rule),
];

// ---------------------------------------------------------------- corpus

/// One inventory of the corpus, its plan, and its objects as loaded.
struct Case {
    name: String,
    inv: Inventory,
    plan: Plan,
    objects: Vec<Value>,
}

/// A converted VirtualService: `(namespace, name)`, its HTTPRoutes and their parents.
struct Converted {
    namespace: String,
    name: String,
    /// Parent Services `(namespace, name)` of its HTTPRoutes.
    parents: Vec<(String, String)>,
}

const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "GatewayClass",
    "CustomResourceDefinition",
    "Istio",
    "IstioCNI",
    "ZTunnel",
    "IstioRevision",
    "ClusterRole",
    "ClusterRoleBinding",
    "Node",
];

fn load_case(dir: &Path) -> Case {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| p.file_name().is_some_and(|n| n != "expected.yaml"))
        .collect();
    files.sort();
    let mut inv = Inventory::default();
    let mut objects = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        inv.load_str(&text, "x").unwrap();
        for mut doc in serde_saphyr::from_multiple::<Value>(&text).unwrap() {
            if !doc.is_object() {
                continue;
            }
            let kind = doc["kind"].as_str().unwrap_or_default().to_string();
            if !CLUSTER_SCOPED.contains(&kind.as_str())
                && doc["metadata"]["namespace"].as_str().is_none()
                && let Some(md) = doc["metadata"].as_object_mut()
            {
                md.insert("namespace".into(), "default".into());
            }
            objects.push(doc);
        }
    }
    let spec = match inv.mesh_migrations.first() {
        Some(m) => m.spec.clone(),
        None => MeshMigrationSpec {
            namespaces: Some(injected_namespaces(&inv)),
            ..Default::default()
        },
    };
    let plan = plan(&inv, &spec, "routes");
    Case {
        name: dir.file_name().unwrap().to_string_lossy().into_owned(),
        inv,
        plan,
        objects,
    }
}

fn actions(plan: &Plan) -> impl Iterator<Item = &meshmig_planner::plan::Action> {
    plan.namespaces
        .iter()
        .flat_map(|n| n.steps.iter())
        .flat_map(|s| s.actions.iter())
}

/// The VirtualServices whose HTTPRoutes the plan applies.
fn converted(plan: &Plan) -> Vec<Converted> {
    let mut out: BTreeMap<(String, String), BTreeSet<(String, String)>> = BTreeMap::new();
    for a in actions(plan).filter(|a| a.op == Op::Apply) {
        let Some(m) = a.manifest.map(|i| &plan.manifests[i]) else {
            continue;
        };
        if m["kind"] != "HTTPRoute" {
            continue;
        }
        let source = m["metadata"]["annotations"]["meshmig.io/source"]
            .as_str()
            .unwrap_or_default();
        let Some(rest) = source.strip_prefix("VirtualService/") else {
            continue;
        };
        let (vns, vname) = rest.split_once('/').unwrap();
        let route_ns = m["metadata"]["namespace"].as_str().unwrap().to_string();
        let parents = out.entry((vns.into(), vname.into())).or_default();
        for p in m["spec"]["parentRefs"].as_array().into_iter().flatten() {
            if p["kind"] == "Service" {
                let ns = p["namespace"].as_str().unwrap_or(&route_ns).to_string();
                parents.insert((ns, p["name"].as_str().unwrap().to_string()));
            }
        }
    }
    out.into_iter()
        .map(|((namespace, name), parents)| Converted {
            namespace,
            name,
            parents: parents.into_iter().collect(),
        })
        .collect()
}

fn object_key(v: &Value) -> (String, String, String) {
    (
        v["kind"].as_str().unwrap_or_default().to_string(),
        v["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        v["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// The objects as the plan leaves them after its last step.
fn migrated(case: &Case) -> Vec<Value> {
    let mut objects = case.objects.clone();
    let mut added = BTreeSet::new();
    for a in actions(&case.plan) {
        let key = (
            a.object.kind.clone(),
            a.object.namespace.clone().unwrap_or_default(),
            a.object.name.clone(),
        );
        match a.op {
            Op::Create | Op::Apply => {
                let Some(i) = a.manifest else { continue };
                if !added.insert(i) {
                    continue;
                }
                let m = case.plan.manifests[i].clone();
                let k = object_key(&m);
                objects.retain(|o| object_key(o) != k);
                objects.push(m);
            }
            Op::Delete => objects.retain(|o| object_key(o) != key),
            Op::RemoveMeshGateway => {
                for o in objects.iter_mut().filter(|o| object_key(o) == key) {
                    if let Some(gws) = o["spec"]["gateways"].as_array_mut() {
                        gws.retain(|g| g != "mesh");
                    }
                }
            }
            Op::Label | Op::Unlabel => {
                if a.object.kind == "Namespace"
                    && !objects
                        .iter()
                        .any(|o| o["kind"] == "Namespace" && o["metadata"]["name"] == a.object.name)
                {
                    objects.push(json!({"apiVersion": "v1", "kind": "Namespace",
                        "metadata": {"name": a.object.name}}));
                }
                for o in objects.iter_mut().filter(|o| object_key(o) == key) {
                    let md = o["metadata"].as_object_mut().unwrap();
                    let labels = md.entry("labels").or_insert_with(|| json!({}));
                    let k = a.key.clone().unwrap();
                    if a.op == Op::Label {
                        labels[&k] = a.value.clone().unwrap_or_default().into();
                    } else if let Some(l) = labels.as_object_mut() {
                        l.remove(&k);
                    }
                }
            }
            _ => {}
        }
    }
    objects
}

// ---------------------------------------------------------------- requests

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Req {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    /// Lower-case names.
    headers: BTreeMap<String, String>,
    host: String,
}

impl Req {
    fn full_path(&self) -> String {
        if self.query.is_empty() {
            self.path.clone()
        } else {
            let q: Vec<String> = self.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{}?{}", self.path, q.join("&"))
        }
    }

    fn header(&self, name: &str) -> Option<String> {
        match name {
            ":method" => Some(self.method.clone()),
            ":authority" | "host" => Some(self.host.clone()),
            ":path" => Some(self.full_path()),
            ":scheme" => Some("http".into()),
            n => self.headers.get(&n.to_ascii_lowercase()).cloned(),
        }
    }

    fn describe(&self) -> String {
        let mut s = format!("{} {}", self.method, self.full_path());
        for (k, v) in &self.headers {
            let _ = write!(s, " [{k}: {v}]");
        }
        s
    }
}

/// A value that satisfies a string matcher, when one can be made.
fn sample(m: &StringMatch) -> Vec<String> {
    let v = &m.value;
    match m.kind.as_str() {
        "exact" => vec![v.clone(), format!("{v}x"), v.to_ascii_uppercase()],
        "prefix" => vec![v.clone(), format!("{v}x"), v.to_ascii_uppercase()],
        "suffix" => vec![format!("x{v}")],
        "contains" => vec![format!("x{v}x")],
        "regex" => regex_samples(v),
        "present" => vec!["x".into()],
        _ => vec![],
    }
}

/// Strings a (simple) RE2 regex matches: a literal read off the pattern, kept only when the
/// regex really matches it.
fn regex_samples(pattern: &str) -> Vec<String> {
    let Ok(re) = Regex::new(&format!("^(?:{pattern})$")) else {
        return vec![];
    };
    let mut candidates = Vec::new();
    for alternative in [0, 1] {
        let mut out = String::new();
        let mut chars = pattern.chars().peekable();
        let mut depth_skip = 0usize;
        while let Some(c) = chars.next() {
            match c {
                '^' | '$' | '(' | ')' => {}
                '?' if out.is_empty() => {}
                '*' | '+' | '?' => {}
                '|' => {
                    // Take the first (or second) alternative of the pattern's first `|`.
                    if alternative == 0 {
                        break;
                    }
                    out.clear();
                    depth_skip += 1;
                }
                '\\' => match chars.next() {
                    Some('d') => out.push('1'),
                    Some('w') => out.push('a'),
                    Some('s') => out.push(' '),
                    Some(x) => out.push(x),
                    None => {}
                },
                '.' => out.push('a'),
                '[' => {
                    let mut class = String::new();
                    for c in chars.by_ref() {
                        if c == ']' {
                            break;
                        }
                        class.push(c);
                    }
                    out.push(if class.starts_with('^') {
                        'z'
                    } else {
                        class.chars().next().unwrap_or('a')
                    });
                }
                '{' => {
                    for c in chars.by_ref() {
                        if c == '}' {
                            break;
                        }
                    }
                }
                c => out.push(c),
            }
        }
        let _ = depth_skip;
        candidates.push(out.replace("?:", "").replace("?i", ""));
    }
    let mut out: Vec<String> = candidates.into_iter().filter(|c| re.is_match(c)).collect();
    out.dedup();
    out
}

fn path_samples(p: &PathMatch) -> Vec<String> {
    let v = &p.value;
    let mut out = match p.kind.as_str() {
        "prefix" | "pathSeparatedPrefix" => {
            let trimmed = v.trim_end_matches('/');
            vec![
                v.clone(),
                format!("{v}x"),
                format!("{trimmed}/x"),
                format!("{trimmed}x"),
                trimmed.to_string(),
                v.to_ascii_uppercase(),
            ]
        }
        "exact" => vec![
            v.clone(),
            format!("{v}/"),
            format!("{v}x"),
            v.to_ascii_uppercase(),
        ],
        "regex" => regex_samples(v),
        _ => vec![],
    };
    out.retain(|p| p.starts_with('/'));
    out
}

fn all_routes<'a>(vhosts: &[&'a VirtualHost]) -> impl Iterator<Item = &'a Route> {
    vhosts.iter().flat_map(|vh| vh.routes.iter())
}

/// The request grid: paths × header sets × query sets × methods, from the matchers of both
/// tables, plus each route's matchers satisfied together.
fn grid(vhosts: &[&VirtualHost], host: &str) -> Vec<Req> {
    let mut paths: BTreeSet<String> = ["/", "/x", "/api/v1/items", "/productpage"]
        .into_iter()
        .map(String::from)
        .collect();
    let mut methods: BTreeSet<String> = ["GET", "POST"].into_iter().map(String::from).collect();
    let mut header_sets: BTreeSet<Vec<(String, String)>> = BTreeSet::new();
    let mut query_sets: BTreeSet<Vec<(String, String)>> = BTreeSet::new();
    header_sets.insert(vec![]);
    query_sets.insert(vec![]);
    let mut combined: Vec<Req> = Vec::new();
    for r in all_routes(vhosts) {
        let m = &r.route_match;
        let route_paths = path_samples(&m.path);
        paths.extend(route_paths.iter().cloned());
        let mut together_headers = Vec::new();
        let mut method = None;
        for h in &m.headers {
            let values = sample(&h.value);
            if h.name == ":method" {
                methods.extend(values.iter().filter(|v| !v.is_empty()).cloned());
                method = values.first().cloned();
                continue;
            }
            if h.name.starts_with(':') {
                continue;
            }
            let name = h.name.to_ascii_lowercase();
            for v in &values {
                header_sets.insert(vec![(name.clone(), v.clone())]);
            }
            header_sets.insert(vec![(name.clone(), "nomatch".into())]);
            if let Some(v) = values.first() {
                together_headers.push((name.clone(), v.clone()));
            }
        }
        together_headers.sort();
        header_sets.insert(together_headers.clone());
        let mut together_query = Vec::new();
        for q in &m.query_params {
            let values = sample(&q.value);
            for v in &values {
                query_sets.insert(vec![(q.name.clone(), v.clone())]);
            }
            query_sets.insert(vec![(q.name.clone(), "nomatch".into())]);
            if let Some(v) = values.first() {
                together_query.push((q.name.clone(), v.clone()));
            }
        }
        together_query.sort();
        query_sets.insert(together_query.clone());
        // The route's whole match at once (a path, its headers, query and method).
        let path = route_paths.first().cloned().unwrap_or_else(|| "/".into());
        combined.push(Req {
            method: method.unwrap_or_else(|| "GET".into()),
            path,
            query: together_query,
            headers: together_headers.into_iter().collect(),
            host: host.into(),
        });
    }
    let mut out: BTreeSet<Req> = combined.into_iter().collect();
    'grid: for p in &paths {
        for h in &header_sets {
            for q in &query_sets {
                for m in &methods {
                    out.insert(Req {
                        method: m.clone(),
                        path: p.clone(),
                        query: q.clone(),
                        headers: h.iter().cloned().collect(),
                        host: host.into(),
                    });
                    if out.len() >= 20_000 {
                        break 'grid;
                    }
                }
            }
        }
    }
    out.into_iter().collect()
}

// ---------------------------------------------------------------- the matcher

fn full_regex(pattern: &str) -> Option<Regex> {
    Regex::new(&format!("^(?:{pattern})$")).ok()
}

fn string_matches(m: &StringMatch, value: &str) -> Result<bool, String> {
    let (v, want) = if m.ignore_case {
        (value.to_ascii_lowercase(), m.value.to_ascii_lowercase())
    } else {
        (value.to_string(), m.value.clone())
    };
    Ok(match m.kind.as_str() {
        "exact" => v == want,
        "prefix" => v.starts_with(&want),
        "suffix" => v.ends_with(&want),
        "contains" => v.contains(&want),
        "regex" => {
            let re = full_regex(&m.value).ok_or_else(|| format!("bad regex {}", m.value))?;
            re.is_match(value)
        }
        "present" => true,
        "absent" => false,
        other => return Err(format!("string matcher `{other}`")),
    })
}

fn header_matches(h: &HeaderMatch, req: &Req) -> Result<bool, String> {
    let value = req.header(&h.name);
    let presence = matches!(h.value.kind.as_str(), "present" | "absent");
    let value = match (value, h.missing_as_empty) {
        (Some(v), _) => v,
        (None, true) => String::new(),
        (None, false) => {
            return Ok(if presence {
                (h.value.kind == "absent") != h.invert
            } else {
                false
            });
        }
    };
    if presence {
        return Ok((h.value.kind == "present") != h.invert);
    }
    Ok(string_matches(&h.value, &value)? != h.invert)
}

/// Whether a route's match holds; `Err` when it has a part the matcher does not model.
fn route_matches(r: &Route, req: &Req) -> Result<bool, String> {
    let m = &r.route_match;
    if !m.unsupported.is_empty() {
        return Err(format!("match on {}", m.unsupported.join(", ")));
    }
    let p = &m.path;
    let (path, value) = if p.case_sensitive {
        (req.path.clone(), p.value.clone())
    } else {
        (req.path.to_ascii_lowercase(), p.value.to_ascii_lowercase())
    };
    let path_ok = match p.kind.as_str() {
        "prefix" => path.starts_with(&value),
        "exact" => path == value,
        "regex" => {
            let re = full_regex(&p.value).ok_or_else(|| format!("bad regex {}", p.value))?;
            re.is_match(&req.path)
        }
        "pathSeparatedPrefix" => {
            path == value
                || path
                    .strip_prefix(&value)
                    .is_some_and(|rest| rest.starts_with('/'))
        }
        other => return Err(format!("path matcher `{other}`")),
    };
    if !path_ok {
        return Ok(false);
    }
    for h in &m.headers {
        if !header_matches(h, req)? {
            return Ok(false);
        }
    }
    for q in &m.query_params {
        let value = req.query.iter().find(|(k, _)| *k == q.name).map(|(_, v)| v);
        let ok = match (value, q.value.kind.as_str()) {
            (None, "absent") => true,
            (None, _) => false,
            (Some(_), "present") => true,
            (Some(v), _) => string_matches(&q.value, v)?,
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Resolves clusters to the pods they reach.
struct Resolver<'a> {
    routes: &'a Routes,
    model: &'a Model<'a>,
    /// Services of the view, `(namespace, name)` → ports `(port, targetPort)`.
    services: BTreeMap<(String, String), Vec<(i64, String)>>,
}

impl<'a> Resolver<'a> {
    fn new(routes: &'a Routes, model: &'a Model<'a>, objects: &[Value]) -> Self {
        let mut services = BTreeMap::new();
        for o in objects.iter().filter(|o| o["kind"] == "Service") {
            let (_, ns, name) = object_key(o);
            let ports = o["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let port = p["port"].as_i64().unwrap_or(0);
                    let target = match &p["targetPort"] {
                        Value::Null => port.to_string(),
                        Value::String(s) => s.clone(),
                        v => v.to_string(),
                    };
                    (port, target)
                })
                .collect();
            services.insert((ns, name), ports);
        }
        Self {
            routes,
            model,
            services,
        }
    }

    /// `namespace: pods {a, b} port <targetPort>`, or why it reaches nothing known.
    fn backend(&self, cluster: &str) -> String {
        let Some(c) = self.routes.clusters.get(cluster) else {
            return format!("cluster {cluster} (not in istiod's table)");
        };
        if !c.resolved {
            return format!("cluster {cluster} (no Service)");
        }
        let mut selector = c.selector.clone();
        if c.subset_found == Some(false) {
            return format!(
                "{}: subset `{}` of {} that {} does not define",
                c.namespace, c.subset, c.name, c.subset_rule
            );
        }
        if let Some(l) = &c.subset_labels {
            selector.extend(l.clone());
        }
        let target = self
            .services
            .get(&(c.namespace.clone(), c.name.clone()))
            .and_then(|ports| ports.iter().find(|(p, _)| *p == i64::from(c.port)))
            .map_or_else(
                || format!("{} (port not found)", c.port),
                |(_, t)| t.clone(),
            );
        let pods: Vec<&str> = self
            .model
            .workloads_in(&c.namespace)
            .iter()
            .filter(|w| selector_matches(&selector, w.pod_labels))
            .map(|w| w.name)
            .collect();
        if pods.is_empty() {
            let sel: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!(
                "{}: no pods ({{{}}}) port {target}",
                c.namespace,
                sel.join(",")
            )
        } else {
            format!("{}: pods {{{}}} port {target}", c.namespace, pods.join(","))
        }
    }
}

/// A request's outcome, aspect by aspect (absent aspects do not apply).
type Outcome = BTreeMap<&'static str, String>;

fn apply_ops(headers: &mut BTreeMap<String, Vec<String>>, ops: &HeaderOps) {
    for r in &ops.remove {
        headers.remove(&r.to_ascii_lowercase());
    }
    for a in &ops.add {
        let name = a.name.to_ascii_lowercase();
        match a.action.as_str() {
            "append" => headers.entry(name).or_default().push(a.value.clone()),
            "addIfAbsent" => {
                headers.entry(name).or_insert_with(|| vec![a.value.clone()]);
            }
            "overwriteIfExists" => {
                if let Some(v) = headers.get_mut(&name) {
                    *v = vec![a.value.clone()];
                }
            }
            _ => {
                headers.insert(name, vec![a.value.clone()]);
            }
        }
    }
}

/// The headers after the operations, on `base` and on `base` with every touched header
/// already present (value `orig`), as `name=v1|v2` changes only.
fn header_effect(base: &BTreeMap<String, String>, layers: &[&HeaderOps]) -> String {
    let touched: BTreeSet<String> = layers
        .iter()
        .flat_map(|o| {
            o.add
                .iter()
                .map(|a| a.name.to_ascii_lowercase())
                .chain(o.remove.iter().map(|r| r.to_ascii_lowercase()))
        })
        .collect();
    if touched.is_empty() {
        return String::new();
    }
    let mut out = Vec::new();
    for prefilled in [false, true] {
        let mut h: BTreeMap<String, Vec<String>> = base
            .iter()
            .map(|(k, v)| (k.clone(), vec![v.clone()]))
            .collect();
        if prefilled {
            for t in &touched {
                h.entry(t.clone()).or_insert_with(|| vec!["orig".into()]);
            }
        }
        for ops in layers {
            apply_ops(&mut h, ops);
        }
        let shown: Vec<String> = touched
            .iter()
            .map(|t| match h.get(t) {
                Some(v) => format!("{t}={}", v.join("|")),
                None => format!("{t}=<absent>"),
            })
            .collect();
        out.push(shown.join(","));
    }
    out.join(" / ")
}

fn rewrite_path(
    r: &Route,
    req: &Req,
    prefix: Option<&String>,
    regex: Option<(&str, &str)>,
) -> String {
    let query = req.full_path()[req.path.len()..].to_string();
    let path = if let Some(p) = prefix {
        let m = &r.route_match.path;
        match m.kind.as_str() {
            "prefix" | "pathSeparatedPrefix" => format!("{p}{}", &req.path[m.value.len()..]),
            _ => p.clone(),
        }
    } else if let Some((pattern, substitution)) = regex {
        match Regex::new(pattern) {
            Ok(re) => {
                let sub = Regex::new(r"\\(\d)")
                    .unwrap()
                    .replace_all(substitution, "$${$1}");
                re.replace_all(&req.path, sub.as_ref()).into_owned()
            }
            Err(_) => format!("<bad regex {pattern}>"),
        }
    } else {
        req.path.clone()
    };
    format!("{path}{query}")
}

fn evaluate(vh: &VirtualHost, req: &Req, res: &Resolver<'_>) -> (Option<usize>, Outcome) {
    let mut out = Outcome::new();
    let mut hit = None;
    for (i, r) in vh.routes.iter().enumerate() {
        match route_matches(r, req) {
            Ok(true) => {
                hit = Some(i);
                break;
            }
            Ok(false) => {}
            Err(e) => {
                out.insert("action", format!("unevaluable route {}: {e}", r.name));
                return (Some(i), out);
            }
        }
    }
    let Some(i) = hit else {
        out.insert("action", "no route (404)".into());
        return (None, out);
    };
    let r = &vh.routes[i];
    if !vh.unsupported.is_empty() {
        out.insert("virtualHost", vh.unsupported.join(","));
    }
    if !r.unsupported.is_empty() {
        out.insert("unsupported", r.unsupported.join(","));
    }
    if let Some(c) = &r.cors {
        out.insert("cors", format!("{c:?}"));
    }
    if let Some(f) = &r.fault {
        out.insert("fault", format!("{f:?}"));
    }
    match r.action.kind.as_str() {
        "route" => {
            let a = r.action.route.as_ref().unwrap();
            out.insert("action", "forward".into());
            let total: u64 = a
                .clusters
                .iter()
                .map(|c| u64::from(c.weight.unwrap_or(1)))
                .sum();
            let mut shares: BTreeMap<String, u64> = BTreeMap::new();
            let mut req_headers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            let mut resp_headers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            let mut hosts: BTreeSet<String> = BTreeSet::new();
            for c in &a.clusters {
                let w = u64::from(c.weight.unwrap_or(1));
                if w == 0 {
                    continue;
                }
                let mut b = res.backend(&c.name);
                if res.routes.clusters.get(&c.name).is_none_or(|c| !c.resolved) {
                    let _ = write!(b, " (answered {})", a.cluster_not_found_status);
                }
                *shares.entry(b.clone()).or_default() += w;
                req_headers
                    .entry(b.clone())
                    .or_default()
                    .insert(header_effect(
                        &req.headers,
                        &[&c.request_headers, &r.request_headers, &vh.request_headers],
                    ));
                resp_headers
                    .entry(b.clone())
                    .or_default()
                    .insert(header_effect(
                        &BTreeMap::new(),
                        &[
                            &c.response_headers,
                            &r.response_headers,
                            &vh.response_headers,
                        ],
                    ));
                hosts.insert(
                    if let Some(h) = c.host_rewrite.as_ref().or(a.host_rewrite.as_ref()) {
                        h.clone()
                    } else if a.auto_host_rewrite {
                        "<upstream host>".into()
                    } else {
                        req.host.clone()
                    },
                );
            }
            let shown: Vec<String> = shares
                .iter()
                .map(|(b, w)| format!("{b} ×{:.4}", *w as f64 / total.max(1) as f64))
                .collect();
            out.insert("backends", shown.join("; "));
            let join = |m: BTreeMap<String, BTreeSet<String>>| -> String {
                m.into_iter()
                    .filter(|(_, v)| v.iter().any(|s| !s.is_empty()))
                    .map(|(k, v)| {
                        format!("{k} => {}", v.into_iter().collect::<Vec<_>>().join(" | "))
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            out.insert("requestHeaders", join(req_headers));
            out.insert("responseHeaders", join(resp_headers));
            out.insert(
                "path",
                rewrite_path(
                    r,
                    req,
                    a.prefix_rewrite.as_ref(),
                    a.regex_rewrite
                        .as_ref()
                        .map(|x| (x.pattern.as_str(), x.substitution.as_str())),
                ),
            );
            out.insert("host", hosts.into_iter().collect::<Vec<_>>().join("|"));
            out.insert(
                "timeout",
                a.timeout.clone().unwrap_or_else(|| "unset (15s)".into()),
            );
            out.insert("retry", format!("{:?}", a.retry));
            if !a.hash_policy.is_empty() {
                out.insert("hashPolicy", serde_json::to_string(&a.hash_policy).unwrap());
            }
            if let Some(t) = &a.idle_timeout {
                out.insert("idleTimeout", t.clone());
            }
            let mirrors: Vec<String> = a
                .mirrors
                .iter()
                .map(|m| format!("{} {}%", res.backend(&m.cluster), m.percent))
                .collect();
            out.insert("mirrors", mirrors.join("; "));
            if !a.unsupported.is_empty() {
                out.insert("unsupported", a.unsupported.join(","));
            }
        }
        "redirect" => {
            let d = r.action.redirect.as_ref().unwrap();
            out.insert("action", "redirect".into());
            let scheme = if d.scheme.is_empty() {
                "http"
            } else {
                &d.scheme
            };
            let host = if d.host.is_empty() {
                &req.host
            } else {
                &d.host
            };
            let port = if d.port == 0 {
                String::new()
            } else {
                format!(":{}", d.port)
            };
            let mut path = match (&d.path, &d.prefix_rewrite, &d.regex_rewrite) {
                (Some(p), _, _) => {
                    if p.contains('?') {
                        p.clone()
                    } else {
                        format!("{p}{}", &req.full_path()[req.path.len()..])
                    }
                }
                (_, Some(p), _) => rewrite_path(r, req, Some(p), None),
                (_, _, Some(x)) => rewrite_path(r, req, None, Some((&x.pattern, &x.substitution))),
                _ => req.full_path(),
            };
            if d.strip_query && d.path.as_ref().is_none_or(|p| !p.contains('?')) {
                path = path.split('?').next().unwrap_or_default().to_string();
            }
            out.insert(
                "redirect",
                format!("{} {scheme}://{host}{port}{path}", d.code),
            );
        }
        "directResponse" => {
            let d = r.action.direct_response.as_ref().unwrap();
            out.insert("action", "fixed response".into());
            out.insert("direct", format!("{} {:?}", d.status, d.body));
        }
        other => {
            out.insert("action", format!("action `{other}`"));
        }
    }
    (Some(i), out)
}

// ---------------------------------------------------------------- comparison

/// One observed difference.
#[derive(Clone, Debug)]
struct Difference {
    fixture: String,
    vs: String,
    /// The sidecar's namespace.
    caller: String,
    port: u16,
    aspect: &'static str,
    sidecar: String,
    waypoint: String,
    example: String,
    requests: usize,
    explained_by: Option<String>,
}

/// Counts of one compared VirtualService.
#[derive(Default)]
struct Tally {
    routes: usize,
    requests: usize,
    per_route: BTreeMap<String, usize>,
    notes: Vec<String>,
}

/// The rules (`http[i]`) a finding names; empty when it names none.
fn finding_rules(message: &str) -> BTreeSet<usize> {
    let re = Regex::new(r"http\[(\d+)\]").unwrap();
    re.captures_iter(message)
        .filter_map(|c| c[1].parse().ok())
        .collect()
}

/// The finding (id) that explains a difference in `aspect` for a request that hit VS rule
/// `sidecar` before and `waypoint` after (`None`: no route, or a route of unknown origin).
fn explained(
    case: &Case,
    vs: &Converted,
    aspect: &str,
    sidecar: Option<usize>,
    waypoint: Option<usize>,
) -> Option<String> {
    case.plan
        .findings
        .iter()
        .filter(|f| {
            let same_ns = f.object.namespace.as_deref() == Some(vs.namespace.as_str());
            (f.object.kind == "VirtualService" && same_ns && f.object.name == vs.name)
                // A DestinationRule of the namespace the routes rely on (its subsets).
                || (f.object.kind == "DestinationRule" && same_ns && f.id == "dr-export-to")
        })
        .find(|f| {
            EXPLAINED_BY.iter().any(|(id, aspects, scope)| {
                if *id != f.id || !(aspects.contains(&"*") || aspects.contains(&aspect)) {
                    return false;
                }
                let rules = finding_rules(&f.message);
                match scope {
                    Scope::Rule => {
                        rules.is_empty()
                            || [sidecar, waypoint]
                                .iter()
                                .flatten()
                                .any(|i| rules.contains(i))
                    }
                    Scope::SwappedRules => match (sidecar, waypoint) {
                        (Some(a), Some(b)) => a != b && rules.contains(&a) && rules.contains(&b),
                        _ => false,
                    },
                }
            })
        })
        .map(|f| f.id.to_string())
}

/// VS rule index of each of the sidecar's routes from the VirtualService (in order):
/// istiod emits one route per match (one for a rule without matches), skipping matches
/// for other sources or gateways, and stops after a catch-all. `None` when the routes do
/// not line up with the rules (by count, or by name for a named rule).
fn sidecar_rules(
    vs: &meshmig_api::istio::VirtualService,
    ours: &[&Route],
    caller_ns: &str,
) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    for (i, rule) in vs.spec.http.iter().flatten().enumerate() {
        let kept = match &rule.matches {
            Some(ms) if !ms.is_empty() => ms
                .iter()
                .filter(|m| m.source_labels.as_ref().is_none_or(BTreeMap::is_empty))
                .filter(|m| {
                    m.source_namespace
                        .as_deref()
                        .is_none_or(|ns| ns == caller_ns)
                })
                .filter(|m| {
                    m.gateways
                        .as_ref()
                        .is_none_or(|g| g.is_empty() || g.iter().any(|g| g == "mesh"))
                })
                .count(),
            _ => 1,
        };
        for _ in 0..kept {
            let r = ours.get(out.len())?;
            if let Some(name) = &rule.name
                && &r.name != name
            {
                return None;
            }
            out.push(i);
            if out.len() == ours.len() {
                return Some(out);
            }
        }
    }
    (out.len() == ours.len()).then_some(out)
}

/// VS rule index of the waypoint's routes, by Envoy route name: istiod names a route after
/// its HTTPRoute rule (`<ns>.<route>.<k>` for an unnamed one), and meshmig's rules follow
/// the VirtualService's, a rule split per match being named `<name>-<i>-<k>`.
fn waypoint_rules(case: &Case, vs: &Converted) -> BTreeMap<String, usize> {
    let src = format!("VirtualService/{}/{}", vs.namespace, vs.name);
    let n_rules = case
        .inv
        .virtual_services
        .iter()
        .find(|v| {
            v.metadata.namespace.as_deref() == Some(&vs.namespace)
                && v.metadata.name.as_deref() == Some(&vs.name)
        })
        .map_or(0, |v| v.spec.http.as_ref().map_or(0, Vec::len));
    let mut out = BTreeMap::new();
    for m in case.plan.manifests.iter().filter(|m| {
        m["kind"] == "HTTPRoute" && m["metadata"]["annotations"]["meshmig.io/source"] == src
    }) {
        let (_, ns, name) = object_key(m);
        let rules: Vec<&Value> = m["spec"]["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .collect();
        let rule_name = |k: usize| rules[k]["name"].as_str().map(str::to_string);
        let mut k = 0;
        for i in 0..n_rules {
            if k >= rules.len() {
                break;
            }
            let split = |k: usize| {
                rule_name(k).is_some_and(|n| {
                    n.rsplit('-').nth(1) == Some(i.to_string().as_str())
                        && n.split('-').count() >= 3
                })
            };
            let first = k;
            if split(k) {
                while k < rules.len() && split(k) {
                    k += 1;
                }
            } else {
                k += 1;
            }
            for j in first..k {
                let envoy = rule_name(j).unwrap_or_else(|| format!("{ns}.{name}.{j}"));
                out.insert(envoy, i);
            }
        }
    }
    out
}

fn waypoint_vhost(rc: &RouteConfig) -> Option<&VirtualHost> {
    rc.virtual_hosts.first()
}

#[allow(clippy::too_many_arguments)]
fn compare(
    case: &Case,
    vs: &Converted,
    caller: &str,
    sidecar: &Routes,
    waypoint: &Routes,
    after: &[Value],
    tally: &mut Tally,
    diffs: &mut Vec<Difference>,
) {
    let model = Model::new(&case.inv);
    let res_s = Resolver::new(sidecar, &model, &case.objects);
    let res_w = Resolver::new(waypoint, &model, after);
    let vs_config = format!("/namespaces/{}/virtual-service/{}", vs.namespace, vs.name);
    let vs_label = format!("{}/{}", vs.namespace, vs.name);
    let typed = case.inv.virtual_services.iter().find(|v| {
        v.metadata.namespace.as_deref() == Some(&vs.namespace)
            && v.metadata.name.as_deref() == Some(&vs.name)
    });
    let w_rules = waypoint_rules(case, vs);
    // MESHMIG_ROUTES_TRACE=<fixture> prints every request of that fixture and both outcomes.
    let trace = std::env::var("MESHMIG_ROUTES_TRACE").ok();
    for (pns, pname) in &vs.parents {
        let fqdn = format!("{pname}.{pns}.svc.cluster.local");
        let Some(ports) = res_s.services.get(&(pns.clone(), pname.clone())) else {
            continue;
        };
        for &(port, _) in ports {
            let port = u16::try_from(port).unwrap();
            let s_vh = sidecar.sidecar_virtual_host(port, &fqdn);
            let w_rc = waypoint.waypoint_route_config(&fqdn, port);
            let (s_vh, w_vh) = match (s_vh, w_rc.and_then(waypoint_vhost)) {
                (Some(s), Some(w)) => (s, w),
                (None, None) => continue,
                (s, w) => {
                    let aspect = "routeTable";
                    diffs.push(Difference {
                        fixture: case.name.clone(),
                        vs: vs_label.clone(),
                        caller: caller.to_string(),
                        port,
                        aspect,
                        sidecar: s.map_or("no virtual host".into(), |v| v.name.clone()),
                        waypoint: w
                            .map_or("no HTTP filter chain".into(), |_| format!("{fqdn}:{port}")),
                        example: String::new(),
                        requests: 0,
                        explained_by: explained(case, vs, aspect, None, None),
                    });
                    continue;
                }
            };
            let ours: Vec<&Route> = s_vh
                .routes
                .iter()
                .filter(|r| r.config.ends_with(&vs_config))
                .collect();
            if ours.is_empty() {
                let from: BTreeSet<&str> = s_vh.routes.iter().map(|r| r.config.as_str()).collect();
                tally.notes.push(format!(
                    "caller {caller}, port {port}: the sidecar has no route from the VirtualService (its routes come from {from:?})"
                ));
                continue;
            }
            let s_map = typed.and_then(|t| sidecar_rules(t, &ours, caller));
            if s_map.is_none() {
                tally.notes.push(format!(
                    "caller {caller}, port {port}: sidecar routes do not line up with the VirtualService's rules; findings explain any rule"
                ));
            }
            // VS rule of the sidecar route at index `i` of the virtual host.
            let s_rule = |i: usize| -> Option<usize> {
                let r = &s_vh.routes[i];
                let k = ours.iter().position(|o| std::ptr::eq(*o, r))?;
                s_map.as_ref().map(|m| m[k])
            };
            if caller == vs.namespace {
                tally.routes += ours.len();
            }
            let requests = grid(&[s_vh, w_vh], &fqdn);
            tally.requests += requests.len();
            // (aspect, sidecar, waypoint, explanation) → (first request, count)
            type Key = (&'static str, String, String, Option<String>);
            let mut seen: BTreeMap<Key, (String, usize)> = BTreeMap::new();
            for req in &requests {
                let (si, so) = evaluate(s_vh, req, &res_s);
                let (wi, wo) = evaluate(w_vh, req, &res_w);
                if let Some(i) = si {
                    *tally
                        .per_route
                        .entry(format!("{caller} {port} {} #{i}", s_vh.routes[i].name))
                        .or_default() += 1;
                }
                if trace.as_deref() == Some(case.name.as_str()) {
                    println!(
                        "TRACE {caller} {port} {}\n  sidecar  {so:?}\n  waypoint {wo:?}",
                        req.describe()
                    );
                }
                let rule_s = si.and_then(s_rule);
                let rule_w = wi.and_then(|i| w_rules.get(&w_vh.routes[i].name).copied());
                // With no rule mapping, a rule-scoped finding may explain any rule.
                let rule_s = if s_map.is_none() && si.is_some() {
                    rule_w.or(Some(usize::MAX))
                } else {
                    rule_s
                };
                let mut note = |aspect: &'static str, a: String, b: String| {
                    let why = explained(case, vs, aspect, rule_s, rule_w).or_else(|| {
                        (s_map.is_none())
                            .then(|| explained(case, vs, aspect, None, None))
                            .flatten()
                    });
                    let e = seen
                        .entry((aspect, a, b, why))
                        .or_insert_with(|| (req.describe(), 0));
                    e.1 += 1;
                };
                if so.get("action") != wo.get("action") {
                    let show = |o: &Outcome| {
                        o.iter()
                            .map(|(k, v)| format!("{k}: {v}"))
                            .collect::<Vec<_>>()
                            .join("; ")
                    };
                    note("action", show(&so), show(&wo));
                    continue;
                }
                let aspects: BTreeSet<&&str> = so.keys().chain(wo.keys()).collect();
                for aspect in aspects {
                    let a = so.get(*aspect).cloned().unwrap_or_default();
                    let b = wo.get(*aspect).cloned().unwrap_or_default();
                    if a != b {
                        note(aspect, a, b);
                    }
                }
            }
            for ((aspect, s, w, why), (example, n)) in seen {
                diffs.push(Difference {
                    fixture: case.name.clone(),
                    vs: vs_label.clone(),
                    caller: caller.to_string(),
                    port,
                    aspect,
                    sidecar: s,
                    waypoint: w,
                    example,
                    requests: n,
                    explained_by: why,
                });
            }
        }
    }
}

// ---------------------------------------------------------------- the test

/// One `routes` call to make.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Call {
    Sidecar(usize, String),
    Waypoint(usize, String, String),
}

/// A caller that has no configuration of its own: a sidecar in a namespace the inventory
/// does not have.
const PROBE_NAMESPACE: &str = "meshmig-probe";

/// The sidecars whose routes are the "before": one in the VirtualService's namespace (the
/// DestinationRules it picks first are that namespace's), one in a namespace of its own.
fn callers(vs: &Converted) -> Vec<String> {
    vec![vs.namespace.clone(), PROBE_NAMESPACE.to_string()]
}

fn corpus() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/bookinfo"));
    dirs.sort();
    dirs
}

#[test]
fn converted_routes_are_equivalent_in_istiod() {
    let started = Instant::now();
    let oracle = Oracle::get().unwrap();
    let cases: Vec<Case> = corpus().iter().map(|d| load_case(d)).collect();
    let conversions: Vec<Vec<Converted>> = cases.iter().map(|c| converted(&c.plan)).collect();
    let afters: Vec<Vec<Value>> = cases.iter().map(migrated).collect();

    // MESHMIG_ROUTES_DUMP=<dir> writes each case's objects, before and after, for running
    // `meshmig-istio routes` by hand.
    if let Some(dir) = std::env::var_os("MESHMIG_ROUTES_DUMP") {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, case) in cases
            .iter()
            .enumerate()
            .filter(|(i, _)| !conversions[*i].is_empty())
        {
            let write = |suffix: &str, objects: &[Value]| {
                let path = dir.join(format!("{}-{suffix}.json", case.name));
                std::fs::write(path, serde_json::to_vec_pretty(objects).unwrap()).unwrap();
            };
            write("before", &case.objects);
            write("after", &afters[i]);
        }
    }

    // Every proxy to ask istiod about.
    let mut calls = BTreeSet::new();
    for (i, convs) in conversions.iter().enumerate() {
        for v in convs {
            for caller in callers(v) {
                calls.insert(Call::Sidecar(i, caller));
            }
            for (pns, _) in &v.parents {
                if let Some(ns) = cases[i].plan.namespace(pns) {
                    calls.insert(Call::Waypoint(i, pns.clone(), ns.waypoint.name.clone()));
                }
            }
        }
    }
    let calls: Vec<Call> = calls.into_iter().collect();
    let answers: Mutex<BTreeMap<Call, Routes>> = Mutex::new(BTreeMap::new());
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                loop {
                    let k = next.fetch_add(1, Ordering::SeqCst);
                    let Some(call) = calls.get(k) else { break };
                    let routes = match call {
                        Call::Sidecar(i, ns) => {
                            oracle.routes(&cases[*i].objects, &RoutesOptions::sidecar(ns))
                        }
                        Call::Waypoint(i, ns, gw) => {
                            oracle.routes(&afters[*i], &RoutesOptions::waypoint(ns, gw))
                        }
                    };
                    let routes = routes.unwrap_or_else(|e| panic!("{call:?}: {e}"));
                    answers.lock().unwrap().insert(call.clone(), routes);
                }
            });
        }
    });
    let answers = answers.into_inner().unwrap();

    let mut report = String::new();
    let mut diffs = Vec::new();
    let (mut fixtures, mut vss, mut routes, mut requests) = (0, 0, 0, 0);
    for (i, case) in cases.iter().enumerate() {
        if conversions[i].is_empty() {
            continue;
        }
        fixtures += 1;
        for vs in &conversions[i] {
            let mut tally = Tally::default();
            let before = diffs.len();
            for caller in callers(vs) {
                let sidecar = &answers[&Call::Sidecar(i, caller.clone())];
                for (pns, _) in &vs.parents {
                    let Some(ns) = case.plan.namespace(pns) else {
                        continue;
                    };
                    let waypoint =
                        &answers[&Call::Waypoint(i, pns.clone(), ns.waypoint.name.clone())];
                    compare(
                        case, vs, &caller, sidecar, waypoint, &afters[i], &mut tally, &mut diffs,
                    );
                }
            }
            vss += 1;
            routes += tally.routes;
            requests += tally.requests;
            let per_route: Vec<usize> = tally.per_route.values().copied().collect();
            // Distinct differences (the same one seen by both callers counts once).
            let distinct: BTreeSet<(u16, &str, &str, &str, bool)> = diffs[before..]
                .iter()
                .map(|d| {
                    (
                        d.port,
                        d.aspect,
                        d.sidecar.as_str(),
                        d.waypoint.as_str(),
                        d.explained_by.is_some(),
                    )
                })
                .collect();
            for n in &tally.notes {
                let _ = writeln!(
                    report,
                    "  note {} {}/{}: {n}",
                    case.name, vs.namespace, vs.name
                );
            }
            let _ = writeln!(
                report,
                "{:<28} {:<28} routes {:>2}  requests {:>5}  per route {:>4}..{:<4}  differences {} ({} explained)",
                case.name,
                format!("{}/{}", vs.namespace, vs.name),
                tally.routes,
                tally.requests,
                per_route.iter().min().copied().unwrap_or(0),
                per_route.iter().max().copied().unwrap_or(0),
                distinct.len(),
                distinct.iter().filter(|d| d.4).count(),
            );
        }
    }
    // The same difference seen by both callers is reported once, naming both.
    type Group = (
        String,
        String,
        u16,
        &'static str,
        String,
        String,
        Option<String>,
    );
    let mut groups: BTreeMap<Group, (Vec<String>, String, usize)> = BTreeMap::new();
    for d in &diffs {
        let key = (
            d.fixture.clone(),
            d.vs.clone(),
            d.port,
            d.aspect,
            d.sidecar.clone(),
            d.waypoint.clone(),
            d.explained_by.clone(),
        );
        let g = groups
            .entry(key)
            .or_insert_with(|| (Vec::new(), d.example.clone(), 0));
        g.0.push(d.caller.clone());
        g.2 += d.requests;
    }
    let explained_n = groups.keys().filter(|k| k.6.is_some()).count();
    let unexplained_n = groups.len() - explained_n;
    let _ = writeln!(
        report,
        "route equivalence: {fixtures} fixtures, {vss} VirtualServices, {routes} routes compared, \
         {requests} requests, {} differences ({explained_n} explained, {unexplained_n} unexplained), \
         {} istiod calls, {:.1}s",
        groups.len(),
        calls.len(),
        started.elapsed().as_secs_f64()
    );
    for ((fixture, vs, port, aspect, sidecar, waypoint, why), (callers, example, n)) in &groups {
        let _ = writeln!(
            report,
            "{} {fixture} {vs} port {port} {aspect}: {n} request(s) from {}, e.g. {example}\n    \
             sidecar:  {sidecar}\n    waypoint: {waypoint}",
            if why.is_some() {
                "EXPLAINED"
            } else {
                "UNEXPLAINED"
            },
            callers.join(" and "),
        );
        if let Some(id) = why {
            let _ = writeln!(report, "    by finding {id}");
        }
    }
    println!("\n{report}");
    assert!(
        fixtures >= 10,
        "only {fixtures} fixtures convert a VirtualService"
    );
    assert!(
        unexplained_n == 0,
        "{unexplained_n} unexplained route differences:\n{report}"
    );
}

/// The comparison is not vacuous: bookinfo's HTTPRoute with jason's backend swapped to v3
/// and the default rule's weight split must show up as differences.
#[test]
fn a_broken_conversion_is_caught() {
    let oracle = Oracle::get().unwrap();
    let case =
        load_case(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/bookinfo"));
    let convs = converted(&case.plan);
    let reviews = convs.iter().find(|v| v.name == "reviews").unwrap();
    let mut after = migrated(&case);
    let route = after
        .iter_mut()
        .find(|o| o["kind"] == "HTTPRoute" && o["metadata"]["name"] == "reviews")
        .unwrap();
    route["spec"]["rules"][0]["backendRefs"][0]["name"] = "reviews-v3".into();
    route["spec"]["rules"][1]["backendRefs"] = json!([
        {"name": "reviews-v1", "port": 9080, "weight": 50},
        {"name": "reviews-v2", "port": 9080, "weight": 50},
    ]);
    let sidecar = oracle
        .routes(&case.objects, &RoutesOptions::sidecar("bookinfo"))
        .unwrap();
    let waypoint = oracle
        .routes(&after, &RoutesOptions::waypoint("bookinfo", "waypoint"))
        .unwrap();
    let mut tally = Tally::default();
    let mut diffs = Vec::new();
    compare(
        &case, reviews, "bookinfo", &sidecar, &waypoint, &after, &mut tally, &mut diffs,
    );
    let shown: Vec<String> = diffs
        .iter()
        .map(|d| {
            format!(
                "{} {} | {} | {}",
                d.aspect, d.example, d.sidecar, d.waypoint
            )
        })
        .collect();
    assert_eq!(tally.routes, 2, "{shown:#?}");
    assert!(
        shown
            .iter()
            .any(|d| d.starts_with("backends GET / [end-user: jason]")
                && d.contains("pods {reviews-v2}")
                && d.contains("pods {reviews-v3}")),
        "{shown:#?}"
    );
    assert!(
        shown
            .iter()
            .any(|d| d.starts_with("backends GET / |") && d.contains("×0.5000")),
        "{shown:#?}"
    );
    assert!(diffs.iter().all(|d| d.explained_by.is_none()), "{shown:#?}");
}

fn req(method: &str, path: &str, headers: &[(&str, &str)]) -> Req {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    Req {
        method: method.into(),
        path: path.into(),
        query: query
            .split('&')
            .filter(|q| !q.is_empty())
            .map(|q| {
                let (k, v) = q.split_once('=').unwrap_or((q, ""));
                (k.to_string(), v.to_string())
            })
            .collect(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        host: "web.shop.svc.cluster.local".into(),
    }
}

fn route(m: Value, action: Value) -> Route {
    let empty = json!({"add": [], "remove": []});
    serde_json::from_value(json!({
        "name": "r", "match": m, "action": action, "requestHeaders": empty,
        "responseHeaders": empty, "cors": null, "fault": null, "perFilterConfig": [],
        "unsupported": [],
    }))
    .unwrap()
}

fn path(kind: &str, value: &str) -> Value {
    json!({"path": {"type": kind, "value": value, "caseSensitive": true},
           "headers": [], "queryParams": [], "unsupported": []})
}

/// The matcher itself, on Envoy's documented semantics.
#[test]
fn the_matcher_follows_envoy() {
    let none = json!({"type": "none"});
    let m = |r: &Route, q: Req| route_matches(r, &q).unwrap();
    // A prefix is a string prefix; a path-separated prefix matches whole segments; neither
    // sees the query.
    let prefix = route(path("prefix", "/api"), none.clone());
    assert!(m(&prefix, req("GET", "/apix", &[])));
    let separated = route(path("pathSeparatedPrefix", "/api"), none.clone());
    assert!(m(&separated, req("GET", "/api", &[])));
    assert!(m(&separated, req("GET", "/api/v1", &[])));
    assert!(!m(&separated, req("GET", "/apix", &[])));
    assert!(m(&separated, req("GET", "/api?x=1", &[])));
    let exact = route(path("exact", "/api"), none.clone());
    assert!(m(&exact, req("GET", "/api?x=1", &[])));
    assert!(!m(&exact, req("GET", "/api/", &[])));
    // A regex must match the whole path.
    let regex = route(path("regex", "/items/[0-9]+"), none.clone());
    assert!(m(&regex, req("GET", "/items/12", &[])));
    assert!(!m(&regex, req("GET", "/items/12/x", &[])));
    // Headers: a missing header fails a value matcher even when inverted; absence matches.
    let mut hm = path("prefix", "/");
    hm["headers"] = json!([
        {"name": "x-a", "match": {"type": "exact", "value": "1"}, "invert": true},
        {"name": "x-b", "match": {"type": "absent"}},
        {"name": ":method", "match": {"type": "exact", "value": "POST"}},
    ]);
    let headers = route(hm, none.clone());
    assert!(m(&headers, req("POST", "/", &[("x-a", "2")])));
    assert!(!m(&headers, req("POST", "/", &[])));
    assert!(!m(&headers, req("POST", "/", &[("x-a", "1")])));
    assert!(!m(&headers, req("POST", "/", &[("x-a", "2"), ("x-b", "")])));
    assert!(!m(&headers, req("GET", "/", &[("x-a", "2")])));
    let mut qm = path("prefix", "/");
    qm["queryParams"] = json!([{"name": "debug", "match": {"type": "exact", "value": "1"}}]);
    let query = route(qm, none);
    assert!(m(&query, req("GET", "/?debug=1", &[])));
    assert!(!m(&query, req("GET", "/?debug=2", &[])));
    assert!(!m(&query, req("GET", "/", &[])));
    // Rewrites: a prefix rewrite replaces the matched prefix (the whole path for an exact
    // match); a regex rewrite replaces every match, `\1` being a capture group.
    let r = route(path("prefix", "/old/"), json!({"type": "none"}));
    assert_eq!(
        rewrite_path(
            &r,
            &req("GET", "/old/a?q=1", &[]),
            Some(&"/new/".to_string()),
            None
        ),
        "/new/a?q=1"
    );
    let r = route(path("exact", "/health"), json!({"type": "none"}));
    assert_eq!(
        rewrite_path(
            &r,
            &req("GET", "/health", &[]),
            Some(&"/api".to_string()),
            None
        ),
        "/api"
    );
    assert_eq!(
        rewrite_path(
            &r,
            &req("GET", "/x/a/b", &[]),
            None,
            Some(("^/x/(.*)", "/\\1"))
        ),
        "/a/b"
    );
    // Header operations: removals first, then additions by their action.
    let ops: HeaderOps = serde_json::from_value(json!({
        "add": [{"name": "x-a", "value": "1", "action": "append"},
                {"name": "x-b", "value": "2", "action": "overwrite"},
                {"name": "x-c", "value": "3", "action": "addIfAbsent"}],
        "remove": ["x-d"],
    }))
    .unwrap();
    let base = BTreeMap::from([
        ("x-a".to_string(), "0".to_string()),
        ("x-d".to_string(), "9".to_string()),
    ]);
    assert_eq!(
        header_effect(&base, &[&ops]),
        "x-a=0|1,x-b=2,x-c=3,x-d=<absent> / x-a=0|1,x-b=2,x-c=orig,x-d=<absent>"
    );
    // Regex samples really match.
    for p in ["^/items/[0-9]+$", "^2\\..*", "GET|HEAD", "^[a-z]+$"] {
        let samples = regex_samples(p);
        let re = full_regex(p).unwrap();
        assert!(
            !samples.is_empty() && samples.iter().all(|s| re.is_match(s)),
            "{p}: {samples:?}"
        );
    }
}
