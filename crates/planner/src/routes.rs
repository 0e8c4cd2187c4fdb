//! Mesh VirtualService → HTTPRoute conversion (parentRef = Service), per the table in the
//! design: rule order preserved, subsets become per-version Services, unsupported parts
//! become findings naming the object and the route.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use meshmig_api::gateway::*;
use meshmig_api::istio::{
    Destination, DestinationRule, HeaderOperations, HttpMatchRequest, HttpRoute,
    HttpRouteDestination, StringMatch, Subset, TrafficPolicy, VirtualService,
};
use serde_json::Value;

use crate::findings::{self as f, Finding, FindingKind};
use crate::model::Model;
use crate::object::{ObjectRef, dns_label, dns_subdomain};

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
    /// Namespace.
    pub namespace: String,
    /// Parent Service name.
    pub service: String,
    /// Subset name.
    pub subset: String,
    /// Name of the per-version Service.
    pub name: String,
    /// Subset labels.
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
    /// Findings.
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

struct Ctx<'m, 'a> {
    model: &'m Model<'a>,
    vs: &'m VirtualService,
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

fn managed_by_meshmig(m: &ObjectMeta) -> bool {
    m.labels
        .as_ref()
        .and_then(|l| l.get(meshmig_api::names::LABEL_MANAGED_BY))
        .is_some_and(|v| v == meshmig_api::names::MANAGED_BY)
}

fn route_label(r: &HttpRoute, i: usize) -> String {
    match &r.name {
        Some(n) => format!("http[{i}] ({n})"),
        None => format!("http[{i}]"),
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
    let vs_ref = ObjectRef::new("VirtualService", Some(&vs_ns), &vs_name);
    let mut ctx = Ctx {
        model,
        vs,
        vs_ref,
        vs_ns: vs_ns.clone(),
        route_ns: vs_ns.clone(),
        out: Conversion {
            keeps_gateways: has_gateways(vs),
            ..Default::default()
        },
    };
    // Parents, grouped by namespace: an HTTPRoute attached to a Service in its own
    // namespace is a producer route (applies to every caller, as the exported VS did).
    let mut parents_by_ns: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for host in vs.spec.hosts.iter().flatten() {
        match resolve_host(host, &vs_ns) {
            HostTarget::Wildcard => ctx.finding(f::VS_WILDCARD_HOST, format!("host `{host}`")),
            HostTarget::External if looks_like_short_service_name(model, host) => ctx.finding(
                f::VS_HOST_UNRESOLVED,
                format!("host `{host}` is not expanded by Istio (only a short name or name.namespace.svc.<domain> names a Service), so this VirtualService matches nothing today"),
            ),
            HostTarget::External => ctx.finding(
                f::VS_HOST_UNRESOLVED,
                format!("host `{host}` is not a Kubernetes Service name"),
            ),
            HostTarget::Service(ns, name) => {
                if model.service(&ns, &name).is_some() {
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
        ctx.route_ns = ns.clone();
        let route = build_route(&mut ctx, &names, destination_rules, opts);
        check_limits(&mut ctx, &route);
        ctx.out.routes.push(route);
    }
    if !ctx.out.routes.is_empty() {
        check_export_to(&mut ctx);
        check_precedence(&mut ctx);
    }
    ctx.out
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

fn build_route(
    ctx: &mut Ctx<'_, '_>,
    parents: &[String],
    drs: &[DestinationRule],
    opts: ConvertOptions,
) -> Value {
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
        let (converted, retry) = convert_rule(ctx, r, i, drs, opts);
        for rule in converted {
            if let Some(retry) = &retry {
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

fn regex_escape(s: &str) -> String {
    regex::escape(s)
}

/// A header or query-parameter match as (exact?, value). An empty match (`{}`) is Istio's
/// presence match: any value, including the empty one, so the regex `.*` (a header or
/// parameter that is absent never matches a regex).
fn string_match_to_regex(m: &StringMatch) -> (bool, String) {
    if let Some(e) = &m.exact {
        (true, e.clone())
    } else if let Some(p) = &m.prefix {
        (false, format!("^{}.*", regex_escape(p)))
    } else if let Some(r) = &m.regex {
        (false, r.clone())
    } else {
        (false, ".*".to_string())
    }
}

fn convert_match(
    ctx: &mut Ctx<'_, '_>,
    m: &HttpMatchRequest,
    where_: &str,
) -> HttpRouteRulesMatches {
    let mut out = HttpRouteRulesMatches::default();
    if let Some(uri) = &m.uri {
        out.path = Some(if let Some(e) = &uri.exact {
            HttpRouteRulesMatchesPath {
                r#type: Some(HttpRouteRulesMatchesPathType::Exact),
                value: Some(e.clone()),
            }
        } else if let Some(p) = &uri.prefix {
            if p != "/" && !p.ends_with('/') {
                ctx.finding(
                    f::VS_PREFIX_NOT_SEGMENT,
                    format!("{where_}: prefix `{p}` would also have matched `{p}x`"),
                );
            }
            if let Some(bare) = p.strip_suffix('/').filter(|b| !b.is_empty()) {
                // istiod drops the trailing slash of a PathPrefix (checked with its route
                // generation); a regex would rank below the rules it must precede.
                ctx.finding(
                    f::VS_PREFIX_TRAILING_SLASH,
                    format!("{where_}: prefix `{p}` as a PathPrefix also matches `{bare}`"),
                );
            }
            HttpRouteRulesMatchesPath {
                r#type: Some(HttpRouteRulesMatchesPathType::PathPrefix),
                value: Some(p.clone()),
            }
        } else if let Some(r) = &uri.regex {
            HttpRouteRulesMatchesPath {
                r#type: Some(HttpRouteRulesMatchesPathType::RegularExpression),
                value: Some(r.clone()),
            }
        } else {
            HttpRouteRulesMatchesPath {
                r#type: Some(HttpRouteRulesMatchesPathType::PathPrefix),
                value: Some("/".into()),
            }
        });
    }
    if m.ignore_uri_case == Some(true) {
        ctx.finding(f::VS_IGNORE_URI_CASE, format!("{where_}: ignoreUriCase"));
    }
    let mut headers = Vec::new();
    for (name, sm) in m.headers.iter().flatten() {
        if name.starts_with(':') {
            ctx.finding(
                f::VS_MATCH_UNSUPPORTED,
                format!("{where_}: pseudo-header match `{name}`"),
            );
            continue;
        }
        let (exact, value) = string_match_to_regex(sm);
        headers.push(HttpRouteRulesMatchesHeaders {
            name: name.clone(),
            r#type: Some(if exact {
                HttpRouteRulesMatchesHeadersType::Exact
            } else {
                HttpRouteRulesMatchesHeadersType::RegularExpression
            }),
            value,
        });
    }
    if !headers.is_empty() {
        out.headers = Some(headers);
    }
    let mut query = Vec::new();
    for (name, sm) in m.query_params.iter().flatten() {
        let (exact, value) = string_match_to_regex(sm);
        query.push(HttpRouteRulesMatchesQueryParams {
            name: name.clone(),
            r#type: Some(if exact {
                HttpRouteRulesMatchesQueryParamsType::Exact
            } else {
                HttpRouteRulesMatchesQueryParamsType::RegularExpression
            }),
            value,
        });
    }
    if !query.is_empty() {
        out.query_params = Some(query);
    }
    if let Some(method) = &m.method {
        match method.exact.as_deref().and_then(parse_method) {
            Some(mm) => out.method = Some(mm),
            None => ctx.finding(
                f::VS_MATCH_UNSUPPORTED,
                format!("{where_}: method match must be an exact standard method"),
            ),
        }
    }
    let mut unsupported = Vec::new();
    if m.scheme.is_some() {
        unsupported.push("scheme");
    }
    if m.authority.is_some() {
        unsupported.push("authority");
    }
    if m.port.is_some() {
        unsupported.push("port");
    }
    if m.gateways.as_ref().is_some_and(|g| !g.is_empty()) {
        unsupported.push("gateways");
    }
    if !unsupported.is_empty() {
        ctx.finding(
            f::VS_MATCH_UNSUPPORTED,
            format!("{where_}: match on {}", unsupported.join(", ")),
        );
    }
    if m.source_labels.is_some() || m.source_namespace.is_some() {
        ctx.finding(f::VS_SOURCE_MATCH, where_.to_string());
    }
    if m.without_headers.as_ref().is_some_and(|w| !w.is_empty()) {
        ctx.finding(f::VS_WITHOUT_HEADERS, where_.to_string());
    }
    out
}

fn parse_method(m: &str) -> Option<HttpRouteRulesMatchesMethod> {
    use HttpRouteRulesMatchesMethod::*;
    Some(match m {
        "GET" => Get,
        "HEAD" => Head,
        "POST" => Post,
        "PUT" => Put,
        "DELETE" => Delete,
        "CONNECT" => Connect,
        "OPTIONS" => Options,
        "TRACE" => Trace,
        "PATCH" => Patch,
        _ => return None,
    })
}

/// Set, add and remove lists of a header modifier.
type HeaderParts = (
    Option<Vec<HttpRouteRulesFiltersRequestHeaderModifierSet>>,
    Option<Vec<HttpRouteRulesFiltersRequestHeaderModifierAdd>>,
    Option<Vec<String>>,
);

fn header_filters(h: &HeaderOperations) -> HeaderParts {
    let set = h.set.as_ref().filter(|m| !m.is_empty()).map(|m| {
        m.iter()
            .map(|(k, v)| HttpRouteRulesFiltersRequestHeaderModifierSet {
                name: k.clone(),
                value: v.clone(),
            })
            .collect()
    });
    let add = h.add.as_ref().filter(|m| !m.is_empty()).map(|m| {
        m.iter()
            .map(|(k, v)| HttpRouteRulesFiltersRequestHeaderModifierAdd {
                name: k.clone(),
                value: v.clone(),
            })
            .collect()
    });
    let remove = h.remove.clone().filter(|r| !r.is_empty());
    (set, add, remove)
}

fn headers_to_filters(h: &meshmig_api::istio::Headers) -> Vec<HttpRouteRulesFilters> {
    let mut out = Vec::new();
    if let Some(req) = &h.request {
        let (set, add, remove) = header_filters(req);
        if set.is_some() || add.is_some() || remove.is_some() {
            out.push(HttpRouteRulesFilters {
                r#type: HttpRouteRulesFiltersType::RequestHeaderModifier,
                request_header_modifier: Some(HttpRouteRulesFiltersRequestHeaderModifier {
                    set,
                    add,
                    remove,
                }),
                ..Default::default()
            });
        }
    }
    if let Some(resp) = &h.response {
        let (set, add, remove) = header_filters(resp);
        if set.is_some() || add.is_some() || remove.is_some() {
            // Same shape as the request modifier; converted through JSON.
            let modifier = serde_json::to_value(HttpRouteRulesFiltersRequestHeaderModifier {
                set,
                add,
                remove,
            })
            .ok()
            .and_then(|v| serde_json::from_value(v).ok());
            out.push(HttpRouteRulesFilters {
                r#type: HttpRouteRulesFiltersType::ResponseHeaderModifier,
                response_header_modifier: modifier,
                ..Default::default()
            });
        }
    }
    out
}

/// A resolved backend: Service name and namespace, port.
struct Backend {
    namespace: String,
    name: String,
    port: Option<i32>,
}

fn service_ports(svc: &Service) -> Vec<i32> {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .map(|p| p.iter().map(|p| p.port).collect())
        .unwrap_or_default()
}

fn find_subset<'d>(
    model: &Model<'_>,
    drs: &'d [DestinationRule],
    svc_ns: &str,
    svc: &str,
    subset: &str,
    prefer_ns: &str,
) -> Option<(&'d DestinationRule, &'d Subset)> {
    let mut candidates: Vec<(&DestinationRule, &Subset)> = model
        .destination_rules_for(drs, svc_ns, svc)
        .into_iter()
        .filter_map(|dr| {
            dr.spec
                .subsets
                .iter()
                .flatten()
                .find(|s| s.name == subset)
                .map(|s| (dr, s))
        })
        .collect();
    // Istio looks in the caller's namespace first, then the service's.
    candidates.sort_by_key(|(dr, _)| {
        let ns = dr.metadata.namespace.as_deref().unwrap_or("default");
        (ns != prefer_ns, ns != svc_ns, dr.metadata.name.clone())
    });
    candidates.into_iter().next()
}

/// Per-version Services for every subset of every DestinationRule of a Service, in
/// DestinationRule order.
pub fn all_subsets(drs: &[DestinationRule], svc_ns: &str, svc: &str) -> Vec<PerVersion> {
    let target = HostTarget::Service(svc_ns.into(), svc.into());
    subsets_of(
        drs.iter().filter(|dr| {
            let dr_ns = dr.metadata.namespace.as_deref().unwrap_or("default");
            resolve_host(&dr.spec.host, dr_ns) == target
        }),
        svc_ns,
        svc,
    )
}

/// [`all_subsets`] of the inventory's own DestinationRules, through the model's index.
pub fn all_subsets_in(model: &Model<'_>, svc_ns: &str, svc: &str) -> Vec<PerVersion> {
    subsets_of(
        model.destination_rules_for(&model.inv.destination_rules, svc_ns, svc),
        svc_ns,
        svc,
    )
}

/// Per-version Services of `drs`, which all resolve to Service `svc_ns`/`svc`.
fn subsets_of<'d>(
    drs: impl IntoIterator<Item = &'d DestinationRule>,
    svc_ns: &str,
    svc: &str,
) -> Vec<PerVersion> {
    let mut out: Vec<PerVersion> = Vec::new();
    for dr in drs {
        for s in dr.spec.subsets.iter().flatten() {
            let name = dns_label(&[svc, &s.name]);
            if out.iter().any(|p| p.name == name) {
                continue;
            }
            out.push(PerVersion {
                namespace: svc_ns.to_string(),
                service: svc.to_string(),
                subset: s.name.clone(),
                name,
                labels: s.labels.clone().unwrap_or_default(),
                traffic_policy: effective_policy(
                    dr.spec.traffic_policy.as_ref(),
                    s.traffic_policy.as_ref(),
                ),
                destination_rule: ObjectRef::from_meta("DestinationRule", &dr.metadata),
            });
        }
    }
    out
}

/// Merge of the top-level and subset traffic policies, keeping only what matters in
/// ambient (ISTIO_MUTUAL TLS is implied by HBONE).
pub fn effective_policy(
    top: Option<&TrafficPolicy>,
    sub: Option<&TrafficPolicy>,
) -> Option<TrafficPolicy> {
    let mut p = top.cloned().unwrap_or_default();
    if let Some(s) = sub {
        let s = s.clone();
        if s.load_balancer.is_some() {
            p.load_balancer = s.load_balancer;
        }
        if s.connection_pool.is_some() {
            p.connection_pool = s.connection_pool;
        }
        if s.outlier_detection.is_some() {
            p.outlier_detection = s.outlier_detection;
        }
        if s.tls.is_some() {
            p.tls = s.tls;
        }
        if s.port_level_settings.is_some() {
            p.port_level_settings = s.port_level_settings;
        }
        p.extra.extend(s.extra);
    }
    if crate::classify::tls_is_istio_mutual_only(p.tls.as_ref()) {
        p.tls = None;
    }
    let empty = p.load_balancer.is_none()
        && p.connection_pool.is_none()
        && p.outlier_detection.is_none()
        && p.tls.is_none()
        && p.port_level_settings.is_none()
        && p.extra.is_empty();
    (!empty).then_some(p)
}

fn resolve_backend(
    ctx: &mut Ctx<'_, '_>,
    d: &Destination,
    drs: &[DestinationRule],
    where_: &str,
) -> Option<Backend> {
    let (ns, svc_name) = match resolve_host(&d.host, &ctx.vs_ns) {
        HostTarget::Service(ns, n) => (ns, n),
        HostTarget::Wildcard => {
            ctx.finding(
                f::VS_WILDCARD_HOST,
                format!("{where_}: destination `{}`", d.host),
            );
            return None;
        }
        HostTarget::External => {
            ctx.finding(
                f::VS_HOST_UNRESOLVED,
                format!(
                    "{where_}: destination `{}` is not a Kubernetes Service",
                    d.host
                ),
            );
            return None;
        }
    };
    let Some(svc) = ctx.model.service(&ns, &svc_name) else {
        ctx.finding(
            f::VS_HOST_UNRESOLVED,
            format!("{where_}: destination Service {ns}/{svc_name} is not in the inventory"),
        );
        return None;
    };
    let ports = service_ports(svc);
    let port = match d.port.as_ref().and_then(|p| p.number) {
        Some(p) => i32::try_from(p).ok(),
        None => {
            if ports.len() > 1 {
                ctx.finding(
                    f::VS_PORT_AMBIGUOUS,
                    format!(
                        "{where_}: destination {svc_name} has ports {ports:?}; using {}",
                        ports[0]
                    ),
                );
            }
            ports.first().copied()
        }
    };
    let mut name = svc_name.clone();
    if let Some(subset) = &d.subset {
        match find_subset(ctx.model, drs, &ns, &svc_name, subset, &ctx.vs_ns) {
            Some((dr, s)) => {
                let pv_name = dns_label(&[&svc_name, subset]);
                if ctx
                    .model
                    .service(&ns, &pv_name)
                    .is_some_and(|x| !managed_by_meshmig(&x.metadata))
                {
                    // The route would send this subset's traffic to someone else's Service.
                    ctx.finding(
                        f::PER_VERSION_SERVICE_CONFLICT,
                        format!("{where_}: subset `{subset}` of {ns}/{svc_name} needs Service {ns}/{pv_name}, which exists"),
                    );
                }
                let dr_ref = ObjectRef::from_meta("DestinationRule", &dr.metadata);
                let pv = PerVersion {
                    namespace: ns.clone(),
                    service: svc_name.clone(),
                    subset: subset.clone(),
                    name: pv_name.clone(),
                    labels: s.labels.clone().unwrap_or_default(),
                    traffic_policy: effective_policy(
                        dr.spec.traffic_policy.as_ref(),
                        s.traffic_policy.as_ref(),
                    ),
                    destination_rule: dr_ref,
                };
                if !ctx.out.per_version.contains(&pv) {
                    ctx.out.per_version.push(pv);
                }
                name = pv_name;
            }
            None => {
                ctx.finding(
                    f::VS_SUBSET_UNKNOWN,
                    format!("{where_}: subset `{subset}` of {ns}/{svc_name}"),
                );
            }
        }
    }
    if ns != ctx.route_ns {
        ctx.finding(
            f::VS_CROSS_NAMESPACE_BACKEND,
            format!("{where_}: backend {ns}/{name}"),
        );
        let grant = ReferenceGrant {
            metadata: ObjectMeta {
                name: Some(dns_subdomain(&["meshmig", &ctx.route_ns, &name])),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            spec: ReferenceGrantSpec {
                from: vec![ReferenceGrantFrom {
                    group: "gateway.networking.k8s.io".into(),
                    kind: "HTTPRoute".into(),
                    namespace: ctx.route_ns.clone(),
                }],
                to: vec![ReferenceGrantTo {
                    group: String::new(),
                    kind: "Service".into(),
                    name: Some(name.clone()),
                }],
            },
        };
        let grant = to_object(
            &grant,
            "gateway.networking.k8s.io/v1beta1",
            "ReferenceGrant",
        );
        if !ctx.out.grants.contains(&grant) {
            ctx.out.grants.push(grant);
        }
    }
    Some(Backend {
        namespace: ns,
        name,
        port,
    })
}

fn convert_rule(
    ctx: &mut Ctx<'_, '_>,
    r: &HttpRoute,
    i: usize,
    drs: &[DestinationRule],
    opts: ConvertOptions,
) -> (Vec<HttpRouteRules>, Option<Value>) {
    let where_ = route_label(r, i);
    if r.fault.is_some() {
        ctx.finding(f::VS_FAULT_INJECTION, where_.clone());
    }
    if r.delegate.is_some() {
        ctx.finding(f::VS_DELEGATE, where_.clone());
    }
    if r.direct_response.is_some() {
        ctx.finding(f::VS_DIRECT_RESPONSE, where_.clone());
    }
    let matches: Vec<HttpRouteRulesMatches> = r
        .matches
        .iter()
        .flatten()
        .enumerate()
        .map(|(j, m)| convert_match(ctx, m, &format!("{where_}.match[{j}]")))
        .collect();
    let mut filters: Vec<HttpRouteRulesFilters> = Vec::new();
    // Rewrite: a prefix match rewrites the matched prefix, anything else the full path.
    let mut rewrite_kind_per_match: Vec<bool> = Vec::new();
    if let Some(rw) = &r.rewrite {
        if rw.uri_regex_rewrite.is_some() {
            ctx.finding(f::VS_URI_REGEX_REWRITE, where_.clone());
        }
        rewrite_kind_per_match = matches
            .iter()
            .map(|m| {
                m.path.as_ref().and_then(|p| p.r#type.clone())
                    == Some(HttpRouteRulesMatchesPathType::PathPrefix)
            })
            .collect();
    }
    if let Some(h) = &r.headers {
        filters.extend(headers_to_filters(h));
    }
    if let Some(redirect) = &r.redirect {
        let status_code = i64::from(redirect.redirect_code.unwrap_or(301));
        if ![301, 302, 303, 307, 308].contains(&status_code) {
            ctx.finding(
                f::VS_MATCH_UNSUPPORTED,
                format!("{where_}: redirect code {status_code} is not supported"),
            );
        }
        if redirect.derive_port.is_some() {
            ctx.finding(
                f::VS_MATCH_UNSUPPORTED,
                format!("{where_}: redirect derivePort has no equivalent"),
            );
        }
        filters.push(HttpRouteRulesFilters {
            r#type: HttpRouteRulesFiltersType::RequestRedirect,
            request_redirect: Some(HttpRouteRulesFiltersRequestRedirect {
                hostname: redirect.authority.clone(),
                path: redirect
                    .uri
                    .as_ref()
                    .map(|u| HttpRouteRulesFiltersRequestRedirectPath {
                        replace_full_path: Some(u.clone()),
                        replace_prefix_match: None,
                        r#type: HttpRouteRulesFiltersRequestRedirectPathType::ReplaceFullPath,
                    }),
                // Without a port or scheme the sidecar redirects to the scheme's default
                // port; a waypoint would take the request's port (checked with istiod).
                port: redirect
                    .port
                    .and_then(|p| i32::try_from(p).ok())
                    .or_else(|| {
                        (redirect.scheme.is_none() && redirect.derive_port.is_none()).then_some(80)
                    }),
                scheme: redirect.scheme.as_deref().and_then(|s| match s {
                    "http" => Some(HttpRouteRulesFiltersRequestRedirectScheme::Http),
                    "https" => Some(HttpRouteRulesFiltersRequestRedirectScheme::Https),
                    _ => None,
                }),
                status_code: Some(status_code),
            }),
            ..Default::default()
        });
    }
    // Mirrors.
    let mut mirrors: Vec<(&Destination, Option<f64>)> = Vec::new();
    if let Some(m) = &r.mirror {
        let pct = r
            .mirror_percentage
            .as_ref()
            .and_then(|p| p.as_f64())
            .or_else(|| r.mirror_percent.as_ref().and_then(Value::as_f64));
        mirrors.push((m, pct));
    }
    for m in r.mirrors.iter().flatten() {
        mirrors.push((
            &m.destination,
            m.percentage.as_ref().and_then(|p| p.as_f64()),
        ));
    }
    for (d, pct) in mirrors {
        if let Some(b) = resolve_backend(ctx, d, drs, &format!("{where_}.mirror")) {
            let fraction = pct.filter(|p| *p < 100.0).map(|p| {
                let numerator = (p * 10_000.0).round() as i32;
                if (f64::from(numerator) / 10_000.0 - p).abs() > f64::EPSILON {
                    ctx.finding(f::VS_MIRROR_PERCENT, format!("{where_}: {p}%"));
                }
                HttpRouteRulesFiltersRequestMirrorFraction {
                    numerator,
                    denominator: Some(1_000_000),
                }
            });
            filters.push(HttpRouteRulesFilters {
                r#type: HttpRouteRulesFiltersType::RequestMirror,
                request_mirror: Some(HttpRouteRulesFiltersRequestMirror {
                    backend_ref: HttpRouteRulesFiltersRequestMirrorBackendRef {
                        group: None,
                        kind: None,
                        name: b.name,
                        namespace: (b.namespace != ctx.route_ns).then_some(b.namespace),
                        port: b.port,
                    },
                    fraction,
                    percent: None,
                }),
                ..Default::default()
            });
        }
    }
    if r.cors_policy.is_some() && !opts.cors_filter {
        ctx.finding(
            f::VS_CORS_UNSUPPORTED,
            format!("{where_}: corsPolicy (the installed HTTPRoute CRD has no CORS filter)"),
        );
    }
    if let Some(cors) = r.cors_policy.as_ref().filter(|_| opts.cors_filter) {
        if cors
            .extra
            .get("unmatchedPreflights")
            .and_then(Value::as_str)
            != Some("IGNORE")
        {
            ctx.finding(f::VS_CORS_PREFLIGHT, format!("{where_}: corsPolicy"));
        }
        let mut origins: Vec<String> = cors.allow_origin.clone().unwrap_or_default();
        for o in cors.allow_origins.iter().flatten() {
            match (&o.exact, &o.prefix, &o.regex) {
                (Some(e), _, _) => origins.push(e.clone()),
                _ => ctx.finding(
                    f::VS_MATCH_UNSUPPORTED,
                    format!("{where_}: CORS origins must be exact (prefix/regex origins have no equivalent)"),
                ),
            }
        }
        let max_age = cors
            .max_age
            .as_deref()
            .and_then(gateway_duration)
            .and_then(|d| duration_seconds(&d));
        filters.push(HttpRouteRulesFilters {
            r#type: HttpRouteRulesFiltersType::Cors,
            cors: Some(HttpRouteRulesFiltersCors {
                allow_credentials: cors.allow_credentials,
                allow_headers: cors.allow_headers.clone(),
                allow_methods: cors.allow_methods.clone(),
                allow_origins: (!origins.is_empty()).then_some(origins),
                expose_headers: cors.expose_headers.clone(),
                max_age,
            }),
            ..Default::default()
        });
    }
    // Backends.
    let mut backend_refs: Vec<HttpRouteRulesBackendRefs> = Vec::new();
    let dests: Vec<&HttpRouteDestination> = r.route.iter().flatten().collect();
    let any_positive = dests.iter().any(|d| d.weight.unwrap_or(0) > 0);
    let kept = dests
        .iter()
        .filter(|d| !(dests.len() > 1 && any_positive && d.weight.unwrap_or(0) == 0))
        .count();
    for (j, d) in dests.iter().enumerate() {
        if dests.len() > 1 && any_positive && d.weight.unwrap_or(0) == 0 {
            // A zero-weight entry next to weighted ones receives no traffic; omitted.
            continue;
        }
        let Some(b) = resolve_backend(ctx, &d.destination, drs, &format!("{where_}.route[{j}]"))
        else {
            continue;
        };
        let weight = if kept == 1 {
            None
        } else {
            d.weight.filter(|w| *w > 0).or(Some(1))
        };
        let filters = d
            .headers
            .as_ref()
            .map(headers_to_filters)
            .filter(|f| !f.is_empty())
            .map(|fs| {
                fs.into_iter()
                    .filter_map(|f| {
                        serde_json::to_value(f)
                            .ok()
                            .and_then(|v| serde_json::from_value(v).ok())
                    })
                    .collect()
            });
        backend_refs.push(HttpRouteRulesBackendRefs {
            group: None,
            kind: None,
            name: b.name,
            namespace: (b.namespace != ctx.route_ns).then_some(b.namespace),
            port: b.port,
            weight,
            filters,
        });
    }
    let mut timeouts = None;
    if let Some(t) = &r.timeout {
        match gateway_duration(t) {
            Some(d) => {
                timeouts = Some(HttpRouteRulesTimeouts {
                    request: Some(d),
                    backend_request: None,
                })
            }
            None => ctx.finding(
                f::VS_MATCH_UNSUPPORTED,
                format!("{where_}: timeout `{t}` cannot be expressed as a Gateway API duration"),
            ),
        }
    }
    let mut retry = None;
    if let Some(rt) = &r.retries {
        let mut notes = Vec::new();
        // Without a retry, istiod makes backendRequest the whole request's timeout
        // (checked with its route generation), so it stands for perTryTimeout only beside one.
        match rt.per_try_timeout.as_deref().and_then(gateway_duration) {
            Some(ptt) if opts.experimental_channel => {
                let t = timeouts.get_or_insert_with(HttpRouteRulesTimeouts::default);
                t.backend_request = Some(ptt);
                notes.push("perTryTimeout becomes timeouts.backendRequest");
            }
            Some(_) => notes.push("perTryTimeout is lost with the retries"),
            None => {}
        }
        let codes: Vec<u16> = rt
            .retry_on
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .filter_map(|c| c.trim().parse().ok())
            .collect();
        let conditions: Vec<&str> = rt
            .retry_on
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty() && c.parse::<u16>().is_err())
            .collect();
        if !conditions.is_empty() {
            notes.push("retryOn conditions other than status codes are lost");
        }
        if opts.experimental_channel {
            notes.push("retries become the experimental retry field (attempts and status codes)");
            let mut obj = serde_json::Map::new();
            if let Some(a) = rt.attempts {
                obj.insert("attempts".into(), a.into());
            }
            if !codes.is_empty() {
                obj.insert("codes".into(), codes.into());
            }
            retry = Some(Value::Object(obj));
        } else {
            notes.push(
                "the installed Gateway API channel has no retry field, so retries are dropped",
            );
        }
        ctx.finding(f::VS_RETRIES, format!("{where_}: {}", notes.join("; ")));
    }
    let base = HttpRouteRules {
        backend_refs: (!backend_refs.is_empty()).then_some(backend_refs),
        filters: None,
        matches: None,
        name: r.name.as_ref().map(|n| dns_label(&[n])),
        timeouts,
    };
    // Gateway API allows ReplacePrefixMatch only with PathPrefix matches, so a rewrite over
    // mixed match types is split into one rule per match (order preserved).
    let rewrite = r
        .rewrite
        .as_ref()
        .filter(|rw| rw.uri.is_some() || rw.authority.is_some());
    let groups: Vec<(Vec<HttpRouteRulesMatches>, bool)> = match rewrite {
        Some(_) if !matches.is_empty() => {
            let all_prefix = rewrite_kind_per_match.iter().all(|p| *p);
            let none_prefix = rewrite_kind_per_match.iter().all(|p| !*p);
            if all_prefix || none_prefix {
                vec![(matches.clone(), all_prefix)]
            } else {
                matches
                    .iter()
                    .cloned()
                    .zip(rewrite_kind_per_match.iter().copied())
                    .map(|(m, p)| (vec![m], p))
                    .collect()
            }
        }
        _ => vec![(matches.clone(), false)],
    };
    let split = groups.len() > 1;
    let rules = groups
        .into_iter()
        .enumerate()
        .map(|(k, (ms, prefix))| {
            let mut rule = base.clone();
            if split {
                rule.name = Some(dns_label(&[
                    r.name.as_deref().unwrap_or("rule"),
                    &i.to_string(),
                    &k.to_string(),
                ]));
            }
            rule.matches = (!ms.is_empty()).then_some(ms);
            let mut fs = filters.clone();
            if let Some(rw) = rewrite {
                fs.push(HttpRouteRulesFilters {
                    r#type: HttpRouteRulesFiltersType::UrlRewrite,
                    url_rewrite: Some(HttpRouteRulesFiltersUrlRewrite {
                        hostname: rw.authority.clone(),
                        path: rw
                            .uri
                            .as_ref()
                            .map(|u| HttpRouteRulesFiltersUrlRewritePath {
                                replace_full_path: (!prefix).then(|| u.clone()),
                                replace_prefix_match: prefix.then(|| u.clone()),
                                r#type: if prefix {
                                    HttpRouteRulesFiltersUrlRewritePathType::ReplacePrefixMatch
                                } else {
                                    HttpRouteRulesFiltersUrlRewritePathType::ReplaceFullPath
                                },
                            }),
                    }),
                    ..Default::default()
                });
            }
            rule.filters = (!fs.is_empty()).then_some(fs);
            rule
        })
        .collect();
    (rules, retry)
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

// ---------------------------------------------------------------- precedence

/// A match reduced to what Gateway API precedence and overlap need.
#[derive(Clone, Debug)]
struct MatchKey {
    path_type: u8, // 2 exact, 1 prefix, 0 regex
    path: String,
    method: Option<String>,
    headers: BTreeMap<String, (bool, String)>,
    query: BTreeMap<String, (bool, String)>,
}

impl MatchKey {
    fn from_istio(m: Option<&HttpMatchRequest>) -> Self {
        let (path_type, path) = match m.and_then(|m| m.uri.as_ref()) {
            Some(StringMatch { exact: Some(e), .. }) => (2, e.clone()),
            Some(StringMatch {
                prefix: Some(p), ..
            }) => (1, p.clone()),
            Some(StringMatch { regex: Some(r), .. }) => (0, r.clone()),
            _ => (1, "/".into()),
        };
        let conv =
            |map: Option<&BTreeMap<String, StringMatch>>| -> BTreeMap<String, (bool, String)> {
                map.into_iter()
                    .flatten()
                    .map(|(k, v)| (k.to_ascii_lowercase(), string_match_to_regex(v)))
                    .collect()
            };
        Self {
            path_type,
            path,
            method: m
                .and_then(|m| m.method.as_ref())
                .and_then(|m| m.exact.clone()),
            headers: conv(m.and_then(|m| m.headers.as_ref())),
            query: conv(m.and_then(|m| m.query_params.as_ref())),
        }
    }

    /// Gateway API precedence, higher wins.
    fn precedence(&self) -> (u8, usize, bool, usize, usize) {
        (
            self.path_type,
            if self.path_type == 0 {
                0
            } else {
                self.path.len()
            },
            self.method.is_some(),
            self.headers.len(),
            self.query.len(),
        )
    }

    /// Whether one request could match both.
    fn may_overlap(&self, other: &MatchKey) -> bool {
        let path_overlap = match (self.path_type, other.path_type) {
            (2, 2) => self.path == other.path,
            (2, 1) => prefix_covers(&other.path, &self.path),
            (1, 2) => prefix_covers(&self.path, &other.path),
            (1, 1) => {
                prefix_covers(&self.path, &other.path) || prefix_covers(&other.path, &self.path)
            }
            (0, 2) => regex_matches(&self.path, &other.path),
            (2, 0) => regex_matches(&other.path, &self.path),
            (0, _) | (_, 0) => {
                let lit = |k: &MatchKey| {
                    if k.path_type == 0 {
                        regex_literal_prefix(&k.path)
                    } else {
                        k.path.clone()
                    }
                };
                let (a, b) = (lit(self), lit(other));
                a.starts_with(&b) || b.starts_with(&a)
            }
            _ => true,
        };
        let method_overlap = match (&self.method, &other.method) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        let kv_overlap = |a: &BTreeMap<String, (bool, String)>,
                          b: &BTreeMap<String, (bool, String)>| {
            a.iter().all(|(k, (ea, va))| match b.get(k) {
                Some((eb, vb)) if *ea && *eb => va == vb,
                _ => true,
            })
        };
        path_overlap
            && method_overlap
            && kv_overlap(&self.headers, &other.headers)
            && kv_overlap(&self.query, &other.query)
    }
}

/// Whether a VirtualService prefix (string prefix) can match a path the other one matches.
fn prefix_covers(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix)
}

/// Whether a path regex (matched in full, as Envoy does) matches `path`; true when it does
/// not compile (then nothing can be ruled out).
fn regex_matches(re: &str, path: &str) -> bool {
    regex::Regex::new(&format!("^(?:{re})$")).map_or(true, |r| r.is_match(path))
}

/// The literal text every match of a path regex starts with ("" when it cannot be told:
/// an alternation, or a pattern from the first character).
fn regex_literal_prefix(re: &str) -> String {
    let re = re.strip_prefix('^').unwrap_or(re);
    if re.contains('|') {
        return String::new();
    }
    let mut out = String::new();
    let mut chars = re.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            // An escaped punctuation character is itself; `\d` and the like are classes.
            '\\' => match chars.next() {
                Some(n) if n.is_ascii_punctuation() => out.push(n),
                _ => break,
            },
            '.' | '$' | '*' | '+' | '?' | '(' | ')' | '[' | ']' | '{' | '}' => break,
            c => out.push(c),
        }
        // A quantified last character may be absent.
        if matches!(chars.peek(), Some('*' | '?' | '{')) {
            out.pop();
            break;
        }
    }
    out
}

fn check_precedence(ctx: &mut Ctx<'_, '_>) {
    let routes: Vec<(usize, &HttpRoute)> = ctx.vs.spec.http.iter().flatten().enumerate().collect();
    let keys: Vec<(usize, Vec<MatchKey>)> = routes
        .iter()
        .map(|(i, r)| {
            let ks = match &r.matches {
                Some(ms) if !ms.is_empty() => {
                    ms.iter().map(|m| MatchKey::from_istio(Some(m))).collect()
                }
                _ => vec![MatchKey::from_istio(None)],
            };
            (*i, ks)
        })
        .collect();
    let mut problems = Vec::new();
    for (a, (i, ka)) in keys.iter().enumerate() {
        for (j, kb) in keys.iter().skip(a + 1) {
            let shadowed = ka.iter().any(|x| {
                kb.iter()
                    .any(|y| y.precedence() > x.precedence() && x.may_overlap(y))
            });
            if shadowed {
                problems.push(format!("http[{j}] would take precedence over http[{i}]"));
            }
        }
    }
    if !problems.is_empty() {
        let more = problems.len().saturating_sub(3);
        let mut shown = problems.into_iter().take(3).collect::<Vec<_>>().join("; ");
        if more > 0 {
            shown.push_str(&format!("; and {more} more"));
        }
        ctx.finding(f::VS_RULE_PRECEDENCE, shown);
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn precedence_detects_shadowing() {
        let m = |p: &str| MatchKey {
            path_type: 1,
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
        h1.headers.insert("end-user".into(), (true, "jason".into()));
        let mut h2 = m("/");
        h2.headers.insert("end-user".into(), (true, "bob".into()));
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
        let key = |t: u8, p: &str| MatchKey {
            path_type: t,
            path: p.into(),
            method: None,
            headers: BTreeMap::new(),
            query: BTreeMap::new(),
        };
        assert!(!key(0, "/img/[0-9]+").may_overlap(&key(1, "/api/")));
        assert!(key(0, "/img/[0-9]+").may_overlap(&key(1, "/im")));
        assert!(key(0, "/img/[0-9]+").may_overlap(&key(2, "/img/42")));
        assert!(!key(0, "/img/[0-9]+").may_overlap(&key(2, "/img/x")));
        assert!(key(0, "/a|/b").may_overlap(&key(1, "/b")));
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
