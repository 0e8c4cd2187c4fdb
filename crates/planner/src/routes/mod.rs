//! Mesh VirtualService → HTTPRoute conversion (parentRef = Service), per the table in the
//! design: rule order preserved, subsets become per-version Services, unsupported parts
//! become findings naming the object and the route.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use meshmig_api::gateway::*;
use meshmig_api::istio::{DestinationRule, TrafficPolicy, VirtualService};
use serde_json::Value;

use crate::findings::{self as f, Finding, FindingKind};
use crate::model::Model;
use crate::object::{ObjectRef, dns_subdomain};

mod backend;
mod filters;
mod matching;
mod precedence;
mod rule;

pub use backend::{all_subsets, all_subsets_in, effective_policy};

/// Where a VirtualService host points.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum HostTarget {
    /// A Kubernetes Service `(namespace, name)`.
    Service(String, String),
    /// A wildcard host.
    Wildcard,
    /// Something else (external host, ServiceEntry).
    External,
}

/// Resolves a host as Istio does for Kubernetes Services: a short name (no dot) is
/// relative to `from_ns`; only a full `name.ns.svc.<domain>` names a Service in another
/// namespace. Istio never expands a dotted name (`name.ns`, `name.ns.svc`): it is taken as
/// written, matches no Service, and a rule naming it applies to nothing.
pub fn resolve_host(host: &str, from_ns: &str) -> HostTarget {
    if host.contains('*') {
        return HostTarget::Wildcard;
    }
    let parts: Vec<&str> = host.split('.').collect();
    match parts.as_slice() {
        [name] => HostTarget::Service(from_ns.into(), (*name).into()),
        [name, ns, "svc", domain @ ..] if !domain.is_empty() => {
            HostTarget::Service((*ns).into(), (*name).into())
        }
        _ => HostTarget::External,
    }
}

/// Whether a VirtualService applies to sidecars (its `gateways` is absent/empty or lists
/// `mesh`).
pub fn is_mesh(vs: &VirtualService) -> bool {
    vs.spec
        .gateways
        .as_ref()
        .is_none_or(|g| g.is_empty() || g.iter().any(|g| g == "mesh"))
}

/// Whether it also applies to gateways.
pub fn has_gateways(vs: &VirtualService) -> bool {
    vs.spec
        .gateways
        .as_ref()
        .is_some_and(|g| g.iter().any(|g| g != "mesh"))
}

/// A per-version Service the conversion needs, for subset `subset` of `service`.
#[derive(Clone, Debug, PartialEq)]
pub struct PerVersion {
    pub namespace: String,
    /// Parent Service name.
    pub service: String,
    pub subset: String,
    /// Name of the per-version Service.
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Effective traffic policy (subset over top-level), if any remains relevant.
    pub traffic_policy: Option<TrafficPolicy>,
    /// The DestinationRule that defines the subset.
    pub destination_rule: ObjectRef,
}

/// Result of converting one VirtualService.
#[derive(Clone, Debug, Default)]
pub struct Conversion {
    /// Services the VS routes (the parents of the HTTPRoutes), `(namespace, name)`.
    pub parents: Vec<(String, String)>,
    /// HTTPRoutes, as objects (one per parent namespace).
    pub routes: Vec<Value>,
    /// Per-version Services needed.
    pub per_version: Vec<PerVersion>,
    /// ReferenceGrants needed for cross-namespace backends.
    pub grants: Vec<Value>,
    pub findings: Vec<Finding>,
    /// Whether the VS also serves gateways (it is patched, not deleted, in step 7).
    pub keeps_gateways: bool,
}

/// Conversion options: which optional HTTPRoute fields the installed Gateway API has.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConvertOptions {
    /// The installed HTTPRoute CRD is from the experimental channel (has `retry`).
    pub experimental_channel: bool,
    /// It has the `CORS` filter (the experimental channel, or the standard one from v1.5).
    pub cors_filter: bool,
}

/// The release whose standard channel has the HTTPRoute CORS filter.
const CORS_STANDARD_SINCE: (u64, u64) = (1, 5);

impl ConvertOptions {
    /// From the installed HTTPRoute CRD. Without one (an offline plan of an inventory that
    /// holds no CRDs) the standard channel of a current release is assumed: the operator
    /// decides again from the cluster's CRD.
    pub fn for_crd(crd: Option<&crate::inventory::CrdInfo>) -> Self {
        let experimental = crd.and_then(|c| c.channel.as_deref()) == Some("experimental");
        let version = crd.and_then(|c| c.bundle_version.as_deref()).and_then(|v| {
            let mut it = v
                .trim_start_matches('v')
                .split('.')
                .map(|x| x.parse::<u64>());
            Some((it.next()?.ok()?, it.next()?.ok()?))
        });
        Self {
            experimental_channel: experimental,
            cors_filter: experimental || version.is_none_or(|v| v >= CORS_STANDARD_SINCE),
        }
    }
}

/// One VirtualService's conversion: its inputs, and the output it builds up.
struct Ctx<'m, 'a> {
    model: &'m Model<'a>,
    vs: &'m VirtualService,
    /// Every DestinationRule of the inventory, where subsets are looked up.
    drs: &'m [DestinationRule],
    opts: ConvertOptions,
    vs_ref: ObjectRef,
    vs_ns: String,
    route_ns: String,
    out: Conversion,
}

impl Ctx<'_, '_> {
    fn finding(&mut self, kind: FindingKind, detail: String) {
        let finding = Finding::new(kind, self.vs_ref.clone(), detail);
        if !self.out.findings.contains(&finding) {
            self.out.findings.push(finding);
        }
    }
}

/// `name.ns` or `name.ns.svc` where `ns` is a namespace: meant as a Service, but Istio takes
/// it as written.
fn looks_like_short_service_name(model: &Model<'_>, host: &str) -> bool {
    let parts: Vec<&str> = host.split('.').collect();
    match parts.as_slice() {
        [_, ns] | [_, ns, "svc"] => model.namespace(ns).is_some(),
        _ => false,
    }
}

/// Converts a mesh VirtualService. `destination_rules` are all DestinationRules in the
/// inventory (subset lookup).
pub fn convert(
    model: &Model<'_>,
    vs: &VirtualService,
    destination_rules: &[DestinationRule],
    opts: ConvertOptions,
) -> Conversion {
    let vs_ns = vs
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let vs_name = vs.metadata.name.clone().unwrap_or_default();
    let mut ctx = Ctx {
        model,
        vs,
        drs: destination_rules,
        opts,
        vs_ref: ObjectRef::new("VirtualService", Some(&vs_ns), &vs_name),
        vs_ns: vs_ns.clone(),
        route_ns: vs_ns,
        out: Conversion {
            keeps_gateways: has_gateways(vs),
            ..Default::default()
        },
    };
    let parents_by_ns = resolve_parents(&mut ctx);
    if vs.spec.tcp.as_ref().is_some_and(|t| !t.is_empty())
        || vs.spec.tls.as_ref().is_some_and(|t| !t.is_empty())
    {
        ctx.finding(
            f::VS_TCP_TLS_ROUTE,
            "spec.tcp/spec.tls routes are not converted".into(),
        );
    }
    if vs.spec.http.as_ref().is_none_or(|h| h.is_empty()) {
        // Nothing to convert: the VirtualService stays (its TCP/TLS routes are reported).
        ctx.out.parents.clear();
        return ctx.out;
    }
    for (ns, names) in parents_by_ns {
        ctx.route_ns = ns;
        let route = build_route(&mut ctx, &names);
        check_limits(&mut ctx, &route);
        ctx.out.routes.push(route);
    }
    if !ctx.out.routes.is_empty() {
        check_export_to(&mut ctx);
        precedence::check_precedence(&mut ctx);
    }
    ctx.out
}

/// The Services the hosts name, recorded as the conversion's parents and grouped by
/// namespace: an HTTPRoute attached to a Service in its own namespace is a producer route
/// (applies to every caller, as the exported VS did).
fn resolve_parents(ctx: &mut Ctx<'_, '_>) -> BTreeMap<String, Vec<String>> {
    let mut parents_by_ns: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for host in ctx.vs.spec.hosts.iter().flatten() {
        match resolve_host(host, &ctx.vs_ns) {
            HostTarget::Wildcard => ctx.finding(f::VS_WILDCARD_HOST, format!("host `{host}`")),
            HostTarget::External if looks_like_short_service_name(ctx.model, host) => ctx.finding(
                f::VS_HOST_UNRESOLVED,
                format!("host `{host}` is not expanded by Istio (only a short name or name.namespace.svc.<domain> names a Service), so this VirtualService matches nothing today"),
            ),
            HostTarget::External => ctx.finding(
                f::VS_HOST_UNRESOLVED,
                format!("host `{host}` is not a Kubernetes Service name"),
            ),
            HostTarget::Service(ns, name) => {
                if ctx.model.service(&ns, &name).is_some() {
                    parents_by_ns
                        .entry(ns.clone())
                        .or_default()
                        .push(name.clone());
                    ctx.out.parents.push((ns, name));
                } else {
                    ctx.finding(
                        f::VS_HOST_UNRESOLVED,
                        format!("host `{host}` has no Service {ns}/{name} in the inventory"),
                    );
                }
            }
        }
    }
    parents_by_ns
}

/// A VirtualService exported to fewer than every namespace applies only to callers there;
/// its HTTPRoute, attached to the Service, applies to every caller of the waypoint.
fn check_export_to(ctx: &mut Ctx<'_, '_>) {
    let Some(to) = ctx.vs.spec.export_to.as_ref().filter(|t| !t.is_empty()) else {
        return;
    };
    if to.iter().any(|t| t == "*") {
        return;
    }
    ctx.finding(
        f::VS_EXPORT_TO,
        format!("exportTo: {to:?} (its HTTPRoute would route every caller)"),
    );
}

/// Gateway API's limits on one HTTPRoute (its CRD's validation): beyond them the API server
/// refuses the route when step 7 applies it.
fn check_limits(ctx: &mut Ctx<'_, '_>, route: &Value) {
    let rules = route
        .pointer("/spec/rules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let count = |r: &Value, key: &str| r.get(key).and_then(Value::as_array).map_or(0, Vec::len);
    let mut over = Vec::new();
    if rules.len() > MAX_RULES {
        over.push(format!("{} rules (at most {MAX_RULES})", rules.len()));
    }
    let total: usize = rules.iter().map(|r| count(r, "matches")).sum();
    if total > MAX_MATCHES_TOTAL {
        over.push(format!(
            "{total} matches in all (at most {MAX_MATCHES_TOTAL})"
        ));
    }
    for (i, r) in rules.iter().enumerate() {
        for (key, max) in [
            ("matches", MAX_MATCHES_PER_RULE),
            ("backendRefs", MAX_PER_RULE),
            ("filters", MAX_PER_RULE),
        ] {
            if count(r, key) > max {
                over.push(format!("rule {i}: {} {key} (at most {max})", count(r, key)));
            }
        }
    }
    if !over.is_empty() {
        ctx.finding(f::VS_HTTPROUTE_LIMITS, over.join("; "));
    }
}

/// Gateway API's HTTPRoute limits (its CRD's schema and CEL rules).
const MAX_RULES: usize = 16;
const MAX_MATCHES_PER_RULE: usize = 64;
const MAX_MATCHES_TOTAL: usize = 128;
const MAX_PER_RULE: usize = 16;

fn build_route(ctx: &mut Ctx<'_, '_>, parents: &[String]) -> Value {
    let vs = ctx.vs;
    let vs_name = vs.metadata.name.clone().unwrap_or_default();
    let name = if ctx.route_ns == ctx.vs_ns {
        dns_subdomain(&[&vs_name])
    } else {
        dns_subdomain(&[&vs_name, &ctx.vs_ns])
    };
    let parent_refs = parents
        .iter()
        .map(|p| HttpRouteParentRefs {
            group: Some(String::new()),
            kind: Some("Service".into()),
            name: p.clone(),
            ..Default::default()
        })
        .collect();
    let mut rules = Vec::new();
    let mut retries: Vec<(usize, Value)> = Vec::new();
    for (i, r) in vs.spec.http.iter().flatten().enumerate() {
        let converted = rule::convert_rule(ctx, r, i);
        for rule in converted.rules {
            if let Some(retry) = &converted.retry {
                retries.push((rules.len(), retry.clone()));
            }
            rules.push(rule);
        }
    }
    let route = HTTPRoute {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(ctx.route_ns.clone()),
            ..Default::default()
        },
        spec: HttpRouteSpec {
            parent_refs: Some(parent_refs),
            rules: Some(rules),
            ..Default::default()
        },
        status: None,
    };
    let mut value = to_object(&route, "gateway.networking.k8s.io/v1", "HTTPRoute");
    // `retry` exists only in the experimental channel's schema, so it is added as JSON.
    for (i, retry) in retries {
        if let Some(rule) = value.pointer_mut(&format!("/spec/rules/{i}"))
            && let Some(obj) = rule.as_object_mut()
        {
            obj.insert("retry".into(), retry);
        }
    }
    value
}

/// Serializes a typed object with its apiVersion and kind first.
pub fn to_object<T: serde::Serialize>(obj: &T, api_version: &str, kind: &str) -> Value {
    let mut v = serde_json::to_value(obj).unwrap_or(Value::Null);
    if let Some(map) = v.as_object_mut() {
        map.insert("apiVersion".into(), api_version.into());
        map.insert("kind".into(), kind.into());
    }
    v
}

/// Converts a protobuf duration (`10s`, `0.5s`, `1m`, `100ms`) to a Gateway API duration
/// (`10s`, `500ms`, `1m`), or `None` when it cannot be expressed.
pub fn gateway_duration(d: &str) -> Option<String> {
    let d = d.trim();
    let (num, unit_ms) = if let Some(n) = d.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = d.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = d.strip_suffix('m') {
        (n, 60_000.0)
    } else if let Some(n) = d.strip_suffix('h') {
        (n, 3_600_000.0)
    } else {
        return None;
    };
    let value: f64 = num.parse().ok()?;
    if !value.is_finite() || value < 0.0 {
        return None;
    }
    let ms = (value * unit_ms).round() as u64;
    if ms == 0 {
        return Some("0s".into());
    }
    let out = if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    };
    // Gateway API durations allow at most 5 digits per unit.
    let digits = out
        .trim_end_matches(|c: char| c.is_ascii_alphabetic())
        .len();
    (digits <= 5).then_some(out)
}

fn duration_seconds(d: &str) -> Option<i32> {
    let (num, mult) = if let Some(n) = d.strip_suffix("ms") {
        return n.parse::<i32>().ok().map(|ms| ms / 1000);
    } else if let Some(n) = d.strip_suffix('s') {
        (n, 1)
    } else if let Some(n) = d.strip_suffix('m') {
        (n, 60)
    } else if let Some(n) = d.strip_suffix('h') {
        (n, 3600)
    } else {
        return None;
    };
    num.parse::<i32>().ok()?.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::precedence::{MatchKey, PathKind, regex_literal_prefix};
    use super::*;

    #[test]
    fn host_resolution() {
        use HostTarget::*;
        assert_eq!(
            resolve_host("reviews", "bookinfo"),
            Service("bookinfo".into(), "reviews".into())
        );
        // Istio never expands a dotted short name: it names no Service.
        assert_eq!(resolve_host("reviews.other", "bookinfo"), External);
        assert_eq!(resolve_host("reviews.other.svc", "bookinfo"), External);
        assert_eq!(
            resolve_host("reviews.other.svc.cluster.local", "bookinfo"),
            Service("other".into(), "reviews".into())
        );
        assert_eq!(resolve_host("*.bookinfo.svc.cluster.local", "x"), Wildcard);
        assert_eq!(resolve_host("api.example.com", "x"), External);
    }

    #[test]
    fn durations() {
        assert_eq!(gateway_duration("10s").as_deref(), Some("10s"));
        assert_eq!(gateway_duration("0.5s").as_deref(), Some("500ms"));
        assert_eq!(gateway_duration("90s").as_deref(), Some("90s"));
        assert_eq!(gateway_duration("120s").as_deref(), Some("2m"));
        assert_eq!(gateway_duration("1h").as_deref(), Some("1h"));
        assert_eq!(gateway_duration("abc"), None);
        assert_eq!(gateway_duration("-1s"), None);
        assert_eq!(duration_seconds("2m"), Some(120));
    }

    fn exact(value: &str) -> super::matching::ValueMatch {
        super::matching::ValueMatch {
            exact: true,
            value: value.into(),
        }
    }

    #[test]
    fn precedence_detects_shadowing() {
        let m = |p: &str| MatchKey {
            path_type: PathKind::Prefix,
            path: p.into(),
            method: None,
            headers: BTreeMap::new(),
            query: BTreeMap::new(),
        };
        let a = m("/api");
        let b = m("/api/v2");
        assert!(b.precedence() > a.precedence());
        assert!(a.may_overlap(&b));
        let c = m("/other");
        assert!(!c.may_overlap(&b));
        let mut h1 = m("/");
        h1.headers.insert("end-user".into(), exact("jason"));
        let mut h2 = m("/");
        h2.headers.insert("end-user".into(), exact("bob"));
        assert!(!h1.may_overlap(&h2));
    }

    const SHOP: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: shop}\nspec: {selector: {app: api}, ports: [{name: http, port: 8080}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {selector: {app: web}, ports: [{name: http, port: 8080}]}\n";

    /// Converts a VirtualService (YAML `spec:` body) of namespace shop, host api.
    fn convert_spec(spec: &str, opts: ConvertOptions) -> Conversion {
        let mut inv = crate::Inventory::default();
        inv.load_str(SHOP, "shop").unwrap();
        inv.load_str(
            &format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: api, namespace: shop}}\nspec:\n{spec}"),
            "vs",
        )
        .unwrap();
        let model = Model::new(&inv);
        convert(
            &model,
            &inv.virtual_services[0],
            &inv.destination_rules,
            opts,
        )
    }

    fn ids(c: &Conversion) -> Vec<&'static str> {
        c.findings.iter().map(|f| f.id).collect()
    }

    #[test]
    fn a_header_presence_match_stays_a_condition() {
        let c = convert_spec(
            "  hosts: [api]\n  http:\n  - match: [{headers: {x-debug: {}}, queryParams: {trace: {}}}]\n    route: [{destination: {host: web}}]\n  - route: [{destination: {host: api}}]\n",
            ConvertOptions::for_crd(None),
        );
        let m = &c.routes[0]["spec"]["rules"][0]["matches"][0];
        assert_eq!(
            m["headers"][0],
            serde_json::json!({"name": "x-debug", "type": "RegularExpression", "value": ".*"})
        );
        assert_eq!(m["queryParams"][0]["value"], ".*");
    }

    #[test]
    fn a_prefix_ending_in_a_slash_is_a_blocker_and_a_dotted_host_names_nothing() {
        let c = convert_spec(
            "  hosts: [api]\n  http:\n  - match: [{uri: {prefix: /v1/}}]\n    route: [{destination: {host: web}}]\n",
            ConvertOptions::for_crd(None),
        );
        assert!(
            ids(&c).contains(&"vs-prefix-trailing-slash"),
            "{:?}",
            c.findings
        );
        let c = convert_spec(
            "  hosts: [api.shop]\n  http:\n  - route: [{destination: {host: web}}]\n",
            ConvertOptions::for_crd(None),
        );
        assert!(c.routes.is_empty());
        assert!(ids(&c).contains(&"vs-host-unresolved"));
    }

    #[test]
    fn routes_that_cannot_overlap_raise_no_precedence_blocker() {
        let c = convert_spec(
            "  hosts: [api]\n  http:\n  - match: [{uri: {prefix: /api/}}]\n    route: [{destination: {host: web}}]\n  - match: [{uri: {regex: '/img/[0-9]+'}}]\n    route: [{destination: {host: api}}]\n",
            ConvertOptions::for_crd(None),
        );
        assert!(!ids(&c).contains(&"vs-rule-precedence"), "{:?}", c.findings);
        let key = |t: PathKind, p: &str| MatchKey {
            path_type: t,
            path: p.into(),
            method: None,
            headers: BTreeMap::new(),
            query: BTreeMap::new(),
        };
        assert!(!key(PathKind::Regex, "/img/[0-9]+").may_overlap(&key(PathKind::Prefix, "/api/")));
        assert!(key(PathKind::Regex, "/img/[0-9]+").may_overlap(&key(PathKind::Prefix, "/im")));
        assert!(key(PathKind::Regex, "/img/[0-9]+").may_overlap(&key(PathKind::Exact, "/img/42")));
        assert!(!key(PathKind::Regex, "/img/[0-9]+").may_overlap(&key(PathKind::Exact, "/img/x")));
        assert!(key(PathKind::Regex, "/a|/b").may_overlap(&key(PathKind::Prefix, "/b")));
        assert_eq!(regex_literal_prefix("^/v1/items?"), "/v1/item");
        assert_eq!(regex_literal_prefix("/a\\.b.*"), "/a.b");
    }

    #[test]
    fn an_http_route_over_gateway_api_limits_is_a_blocker() {
        let mut spec = "  hosts: [api]\n  http:\n".to_string();
        for i in 0..17 {
            spec.push_str(&format!(
                "  - match: [{{uri: {{exact: /r{i}}}}}]\n    route: [{{destination: {{host: web}}}}]\n"
            ));
        }
        let c = convert_spec(&spec, ConvertOptions::for_crd(None));
        let f = c
            .findings
            .iter()
            .find(|f| f.id == "vs-httproute-limits")
            .unwrap();
        assert!(f.message.contains("17 rules (at most 16)"), "{}", f.message);
    }

    #[test]
    fn an_export_restricted_virtual_service_is_a_blocker() {
        let c = convert_spec(
            "  hosts: [api]\n  exportTo: [\".\"]\n  http:\n  - route: [{destination: {host: web}}]\n",
            ConvertOptions::for_crd(None),
        );
        assert!(ids(&c).contains(&"vs-export-to"));
        let c = convert_spec(
            "  hosts: [api]\n  exportTo: [\"*\"]\n  http:\n  - route: [{destination: {host: web}}]\n",
            ConvertOptions::for_crd(None),
        );
        assert!(!ids(&c).contains(&"vs-export-to"));
    }

    #[test]
    fn redirects_and_per_try_timeouts_keep_what_the_sidecar_did() {
        let c = convert_spec(
            "  hosts: [api]\n  http:\n  - match: [{uri: {exact: /old}}]\n    redirect: {uri: /new, authority: web.example.com}\n  - route: [{destination: {host: web}}]\n    retries: {attempts: 2, perTryTimeout: 2s}\n",
            ConvertOptions::for_crd(None),
        );
        let rules = &c.routes[0]["spec"]["rules"];
        assert_eq!(rules[0]["filters"][0]["requestRedirect"]["port"], 80);
        // No retry field in the standard channel: no backendRequest either (istiod would
        // make it the whole request's timeout).
        assert!(
            rules[1]["timeouts"]["backendRequest"].is_null(),
            "{rules:#}"
        );
        let c = convert_spec(
            "  hosts: [api]\n  http:\n  - route: [{destination: {host: web}}]\n    retries: {attempts: 2, perTryTimeout: 2s}\n",
            ConvertOptions {
                experimental_channel: true,
                cors_filter: true,
            },
        );
        assert_eq!(
            c.routes[0]["spec"]["rules"][0]["timeouts"]["backendRequest"],
            "2s"
        );
    }

    #[test]
    fn retries_and_cors_follow_the_installed_gateway_api() {
        let crd = |channel: &str, version: &str| crate::inventory::CrdInfo {
            channel: Some(channel.into()),
            bundle_version: Some(version.into()),
        };
        let o = ConvertOptions::for_crd(Some(&crd("standard", "v1.4.1")));
        assert!(!o.experimental_channel && !o.cors_filter);
        let o = ConvertOptions::for_crd(Some(&crd("standard", "v1.6.3")));
        assert!(!o.experimental_channel && o.cors_filter);
        let o = ConvertOptions::for_crd(Some(&crd("experimental", "v1.4.1")));
        assert!(o.experimental_channel && o.cors_filter);
        let o = ConvertOptions::for_crd(None);
        assert!(!o.experimental_channel && o.cors_filter);
        let spec = "  hosts: [api]\n  http:\n  - corsPolicy: {allowOrigins: [{exact: https://a.example}]}\n    route: [{destination: {host: web}}]\n";
        let old = convert_spec(
            spec,
            ConvertOptions::for_crd(Some(&crd("standard", "v1.4.1"))),
        );
        assert!(ids(&old).contains(&"vs-cors-unsupported"));
        assert!(old.routes[0]["spec"]["rules"][0]["filters"].is_null());
        let new = convert_spec(
            spec,
            ConvertOptions::for_crd(Some(&crd("standard", "v1.6.3"))),
        );
        assert!(!ids(&new).contains(&"vs-cors-unsupported"));
        assert_eq!(
            new.routes[0]["spec"]["rules"][0]["filters"][0]["type"],
            "CORS"
        );
    }
}
