//! The per-namespace index of the inventory the planner queries.

use super::*;
use meshmig_api::gateway::HTTPRoute;

/// Indexes of the inventory built once per plan. Each namespace's analysis used to scan
/// every object of the inventory (and the enforcement timeline every policy), which made
/// planning quadratic in the number of namespaces; these lists keep inventory order, so
/// everything that depends on order comes out as before.
pub(super) struct Index<'a> {
    /// AuthorizationPolicies by `metadata.namespace`.
    pub(super) policies: HashMap<&'a str, Vec<&'a AuthorizationPolicy>>,
    /// The first AuthorizationPolicy of each reference.
    pub(super) policy_by_ref: HashMap<ObjectRef, &'a AuthorizationPolicy>,
    /// PeerAuthentications by namespace (absent: ""), as inventory indexes.
    pub(super) peer_authns: HashMap<&'a str, Vec<usize>>,
    /// RequestAuthentications by `metadata.namespace`.
    pub(super) request_authns: HashMap<&'a str, Vec<&'a RequestAuthentication>>,
    /// Telemetries by `metadata.namespace`.
    pub(super) telemetries: HashMap<&'a str, Vec<&'a Telemetry>>,
    /// WasmPlugins by `metadata.namespace`.
    pub(super) wasm_plugins: HashMap<&'a str, Vec<&'a WasmPlugin>>,
    /// EnvoyFilters by namespace (absent: ""), as inventory indexes.
    pub(super) envoy_filters: HashMap<&'a str, Vec<usize>>,
    /// Sidecars by namespace (absent: ""), as inventory indexes.
    pub(super) sidecars: HashMap<&'a str, Vec<usize>>,
    /// HTTPRoutes (managed or not) by the Service (`namespace`, `name`) a parentRef names.
    pub(super) http_routes: HashMap<(&'a str, &'a str), Vec<&'a HTTPRoute>>,
    /// The first waypoint Gateway of each namespace.
    pub(super) waypoints: HashMap<&'a str, &'a Gateway>,
    /// VirtualServices (inventory indexes) by the Service a subset destination resolves to.
    pub(super) subset_routes: HashMap<(String, String), Vec<usize>>,
    /// Conversions (indexes) with a parent Service in each namespace.
    pub(super) conversions_by_parent: HashMap<String, Vec<usize>>,
    /// Conversions (indexes) owned by each namespace.
    pub(super) conversions_by_owner: HashMap<String, Vec<usize>>,
    /// The sorted targets for a finding of every namespace whose callers cannot be listed:
    /// all of them when few, else the first few and a count (a finding per Service naming
    /// thousands of namespaces made the plan's size grow with the square of the migration).
    pub(super) targets_joined: String,
    /// What this control plane's istiod and ztunnel do with AuthorizationPolicies.
    pub(super) sem: authz::ZtunnelSemantics,
}

pub(super) fn by_namespace<'a, T>(
    list: &'a [T],
    meta: impl Fn(&T) -> &ObjectMeta,
) -> HashMap<&'a str, Vec<&'a T>> {
    let mut out: HashMap<&'a str, Vec<&'a T>> = HashMap::new();
    for o in list {
        if let Some(ns) = meta(o).namespace.as_deref() {
            out.entry(ns).or_default().push(o);
        }
    }
    out
}

pub(super) fn indexes_by_namespace<T>(
    list: &[T],
    meta: impl Fn(&T) -> &ObjectMeta,
) -> HashMap<&str, Vec<usize>> {
    let mut out: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, o) in list.iter().enumerate() {
        out.entry(meta(o).namespace.as_deref().unwrap_or_default())
            .or_default()
            .push(i);
    }
    out
}

/// The indexes of `a` and `b` (each ascending) merged, ascending and without duplicates.
pub(super) fn merged(a: Option<&Vec<usize>>, b: Option<&Vec<usize>>) -> Vec<usize> {
    let mut out: Vec<usize> = a.into_iter().chain(b).flatten().copied().collect();
    out.sort_unstable();
    out.dedup();
    out
}

impl<'a> Index<'a> {
    pub(super) fn new(
        inv: &'a Inventory,
        targets: &BTreeSet<String>,
        conversions: &[VsConversion<'a>],
        sem: authz::ZtunnelSemantics,
    ) -> Self {
        Self {
            policies: by_namespace(&inv.authorization_policies, |o| &o.metadata),
            policy_by_ref: policy_by_ref(inv),
            peer_authns: indexes_by_namespace(&inv.peer_authentications, |o| &o.metadata),
            request_authns: by_namespace(&inv.request_authentications, |o| &o.metadata),
            telemetries: by_namespace(&inv.telemetries, |o| &o.metadata),
            wasm_plugins: by_namespace(&inv.wasm_plugins, |o| &o.metadata),
            envoy_filters: indexes_by_namespace(&inv.envoy_filters, |o| &o.metadata),
            sidecars: indexes_by_namespace(&inv.sidecars, |o| &o.metadata),
            http_routes: http_routes_by_parent(inv),
            waypoints: waypoints_by_namespace(inv),
            subset_routes: subset_routes(inv),
            conversions_by_parent: conversions_by_parent(conversions),
            conversions_by_owner: conversions_by_owner(conversions),
            targets_joined: abbreviated_list(targets, 10),
            sem,
        }
    }

    /// AuthorizationPolicies whose `metadata.namespace` is `ns`, in inventory order.
    pub(super) fn policies_in(&self, ns: &str) -> &[&'a AuthorizationPolicy] {
        self.policies.get(ns).map(Vec::as_slice).unwrap_or_default()
    }
}

fn policy_by_ref(inv: &Inventory) -> HashMap<ObjectRef, &AuthorizationPolicy> {
    let mut out = HashMap::new();
    for p in &inv.authorization_policies {
        out.entry(ObjectRef::from_meta("AuthorizationPolicy", &p.metadata))
            .or_insert(p);
    }
    out
}

fn http_routes_by_parent(inv: &Inventory) -> HashMap<(&str, &str), Vec<&HTTPRoute>> {
    let mut out: HashMap<(&str, &str), Vec<&HTTPRoute>> = HashMap::new();
    for hr in &inv.http_routes {
        let hns = hr.metadata.namespace.as_deref().unwrap_or_default();
        for r in hr.spec.parent_refs.iter().flatten() {
            if r.kind.as_deref() != Some("Service") {
                continue;
            }
            let list = out
                .entry((r.namespace.as_deref().unwrap_or(hns), r.name.as_str()))
                .or_default();
            if !list.last().is_some_and(|l| std::ptr::eq(*l, hr)) {
                list.push(hr);
            }
        }
    }
    out
}

fn waypoints_by_namespace(inv: &Inventory) -> HashMap<&str, &Gateway> {
    let mut out: HashMap<&str, &Gateway> = HashMap::new();
    for g in &inv.gateways {
        if let Some(ns) = g.metadata.namespace.as_deref()
            && g.spec.gateway_class_name == n::WAYPOINT_CLASS
        {
            out.entry(ns).or_insert(g);
        }
    }
    out
}

fn subset_routes(inv: &Inventory) -> HashMap<(String, String), Vec<usize>> {
    let mut out: HashMap<(String, String), Vec<usize>> = HashMap::new();
    for (i, vs) in inv.virtual_services.iter().enumerate() {
        let vs_ns = vs.metadata.namespace.as_deref().unwrap_or_default();
        for d in vs
            .spec
            .http
            .iter()
            .flatten()
            .flat_map(|r| r.route.iter().flatten())
            .filter(|d| d.destination.subset.is_some())
        {
            if let HostTarget::Service(hns, hname) = resolve_host(&d.destination.host, vs_ns) {
                let list = out.entry((hns, hname)).or_default();
                if list.last() != Some(&i) {
                    list.push(i);
                }
            }
        }
    }
    out
}

fn conversions_by_parent(conversions: &[VsConversion<'_>]) -> HashMap<String, Vec<usize>> {
    let mut out: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, c) in conversions.iter().enumerate() {
        for (pns, _) in &c.conversion.parents {
            let list = out.entry(pns.clone()).or_default();
            if list.last() != Some(&i) {
                list.push(i);
            }
        }
    }
    out
}

fn conversions_by_owner(conversions: &[VsConversion<'_>]) -> HashMap<String, Vec<usize>> {
    let mut out: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, c) in conversions.iter().enumerate() {
        out.entry(c.owner.clone()).or_default().push(i);
    }
    out
}
