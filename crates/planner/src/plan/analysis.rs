//! The analysis of one namespace, kind by kind: findings, and why its Services need the
//! waypoint.

use meshmig_api::istio::WorkloadSelector;

use super::*;

impl<'p> NamespacePlanner<'_, 'p> {
    /// Everything the namespace's objects say, before the waypoint is decided.
    pub(super) fn analyze(&mut self) {
        for svc in self.cx.model.services_in(self.ns) {
            let name = svc_name(svc);
            self.out
                .services
                .insert(name.to_string(), ServicePlan::new(name));
        }
        self.analyze_workloads();
        self.analyze_namespace_labels();
        self.analyze_policies();
        self.analyze_root_policies();
        self.analyze_peer_authentications();
        let index = self.cx.index;
        self.analyze_l7(index.request_authns.get(self.ns), f::REQUEST_AUTHN);
        self.analyze_l7(index.telemetries.get(self.ns), f::TELEMETRY);
        self.analyze_l7(index.wasm_plugins.get(self.ns), f::WASM_PLUGIN);
        self.analyze_envoy_filters();
        self.analyze_sidecars();
        self.analyze_destination_rules();
        self.state.owned = index
            .conversions_by_owner
            .get(self.ns)
            .into_iter()
            .flatten()
            .filter_map(|i| self.cx.conversions.get(*i))
            .collect();
        self.analyze_route_parents();
        self.analyze_owned_routes();
    }

    /// The names of the Services that select a workload.
    fn services_of(&self, wl: &Workload<'_>) -> Vec<String> {
        self.cx
            .model
            .workload_services(wl)
            .iter()
            .map(|s| svc_name(s).to_string())
            .collect()
    }

    /// Whether `wl` is one of the injected workloads.
    fn is_injected(&self, wl: &Workload<'_>) -> bool {
        self.state
            .injected
            .iter()
            .any(|i| i.name == wl.name && i.kind == wl.kind)
    }

    /// Whether an injected workload has `wl`'s name, whatever its kind.
    fn injected_named(&self, wl: &Workload<'_>) -> bool {
        self.state.injected.iter().any(|i| i.name == wl.name)
    }

    fn analyze_workloads(&mut self) {
        let model = self.cx.model;
        for wl in model.workloads_in(self.ns) {
            self.analyze_workload(wl);
        }
        if self.state.injected.is_empty() {
            self.finding(f::NAMESPACE_NO_SIDECARS, ObjectRef::namespace(self.ns), "");
        }
    }

    fn analyze_workload(&mut self, wl: &'p Workload<'p>) {
        let sidecar = wl.has_sidecar(&self.state.injection);
        let hbone = !wl.pods.is_empty()
            && wl
                .pods
                .iter()
                .all(|p| !p.has_sidecar() || p.sidecar_hbone());
        let opted_out = wl.opted_out();
        if opted_out {
            self.finding(f::WORKLOAD_OPTED_OUT, wl.object(), "");
        }
        if wl.host_network {
            self.finding(f::HOSTNETWORK_POD, wl.object(), "");
        }
        if wl.pods.iter().any(|p| cluster::spire_managed(&p.metadata))
            || wl.pod_labels.contains_key(n::SPIRE_IDENTITY)
        {
            self.finding(f::SPIRE, wl.object(), "");
        }
        if sidecar && wl.kind == WorkloadKind::Pod {
            self.finding(f::UNMANAGED_POD, wl.object(), "");
        }
        if sidecar {
            self.state.injected.push(wl);
            if wl.kind != WorkloadKind::Pod {
                self.out.restart.push(wl.object());
                if !hbone || !self.cx.facts.ambient {
                    self.out.restart_hbone.push(wl.object());
                }
            }
        }
        self.out.workloads.push(WorkloadPlan {
            kind: wl.kind.as_str(),
            name: wl.name.to_string(),
            sidecar,
            hbone,
            opted_out,
        });
    }

    fn analyze_namespace_labels(&mut self) {
        let ns_ref = ObjectRef::namespace(self.ns);
        if let NamespaceInjection::Revision(rev) = &self.state.injection {
            let detail = format!("istio.io/rev={rev}");
            self.finding(f::REVISION_LABEL_REMOVED, ns_ref.clone(), detail);
        }
        let ns_meta = self.cx.model.namespace(self.ns).map(|n| &n.metadata);
        self.state.already_ambient =
            ns_meta.and_then(|m| label(m, n::DATAPLANE_MODE)) == Some(n::DATAPLANE_AMBIENT);
        if self.state.already_ambient {
            self.finding(f::NAMESPACE_ALREADY_AMBIENT, ns_ref, "");
        }
    }

    /// Workloads reached by pod IP: those behind a headless Service, and StatefulSets.
    fn pod_addressed_workloads(&self) -> BTreeSet<&'p str> {
        let model = self.cx.model;
        let mut set = BTreeSet::new();
        for svc in model.services_in(self.ns) {
            if is_headless(svc) {
                for wl in model.service_workloads(svc) {
                    set.insert(wl.name);
                }
            }
        }
        for wl in model
            .workloads_in(self.ns)
            .iter()
            .filter(|w| w.pod_addressed())
        {
            set.insert(wl.name);
        }
        set
    }

    fn analyze_policies(&mut self) {
        let sem = &self.cx.index.sem;
        let (dry_runs, policies): (Vec<_>, Vec<_>) = self
            .cx
            .index
            .policies_in(self.ns)
            .iter()
            .map(|p| (*p, authz::classify_with(p, sem)))
            .partition(|(_, c)| c.dry_run && !c.targeted);
        let pod_addressed = self.pod_addressed_workloads();
        for (p, class) in &policies {
            self.analyze_policy(p, class, &pod_addressed);
        }
        self.state.policies = policies;
        self.state.dry_runs = dry_runs;
    }

    fn analyze_policy(
        &mut self,
        p: &AuthorizationPolicy,
        class: &PolicyClass,
        pod_addressed: &BTreeSet<&str>,
    ) {
        let pref = ObjectRef::from_meta("AuthorizationPolicy", &p.metadata);
        if class.targeted {
            self.finding(f::AUTHZ_TARGETED_EXISTING, pref, "");
            return;
        }
        let tds = class.paths_of(authz::AttrKind::TrustDomain);
        if !tds.is_empty() {
            self.finding(f::AUTHZ_TRUST_DOMAINS, pref.clone(), tds.join(", "));
        }
        let unknown = class.paths_of(authz::AttrKind::Unknown);
        if !unknown.is_empty() {
            self.finding(f::AUTHZ_UNKNOWN_FIELD, pref.clone(), unknown.join(", "));
        }
        let (selected, others): (Vec<&Workload<'_>>, Vec<&Workload<'_>>) = self
            .cx
            .model
            .selected_workloads(self.ns, policy_selector(p))
            .into_iter()
            .partition(|wl| self.is_injected(wl));
        if !class.needs_waypoint() {
            return;
        }
        self.policy_selects_unmeshed(&pref, &others);
        if !selected.is_empty() {
            self.policy_needs_waypoint(&pref, class, &selected, pod_addressed);
        }
    }

    /// Workloads without a sidecar that step 6 puts in ambient: from then ztunnel enforces
    /// the policy on them as istiod converts it, and no copy covers them.
    fn policy_selects_unmeshed(&mut self, pref: &ObjectRef, others: &[&Workload<'_>]) {
        let unmeshed: Vec<String> = others
            .iter()
            .filter(|wl| {
                // `sidecar.istio.io/inject: "false"` keeps the sidecar away, not ztunnel.
                let dataplane = wl.pod_labels.get(n::DATAPLANE_MODE).map(String::as_str);
                dataplane != Some("none") && !wl.host_network
            })
            .map(|wl| format!("{} {}", wl.kind.as_str(), wl.name))
            .collect();
        if !unmeshed.is_empty() {
            let detail = format!("selects {} (no sidecar)", unmeshed.join(", "));
            self.finding(f::AUTHZ_L7_UNMESHED, pref.clone(), detail);
        }
    }

    /// An L7 (or CUSTOM/AUDIT) policy on injected workloads: their Services need the
    /// waypoint.
    fn policy_needs_waypoint(
        &mut self,
        pref: &ObjectRef,
        class: &PolicyClass,
        selected: &[&Workload<'_>],
        pod_addressed: &BTreeSet<&str>,
    ) {
        let kind = if matches!(class.action, AuthzAction::Allow | AuthzAction::Deny) {
            self.finding(f::AUTHZ_L7, pref.clone(), class.l7_paths().join(", "));
            f::AUTHZ_L7
        } else {
            let detail = format!("action {:?}", class.action);
            self.finding(f::AUTHZ_ACTION_NEEDS_WAYPOINT, pref.clone(), detail);
            f::AUTHZ_ACTION_NEEDS_WAYPOINT
        };
        for wl in selected {
            let svcs = self.services_of(wl);
            let what = format!("{} {}", wl.kind.as_str(), wl.name);
            if svcs.is_empty() {
                let detail = format!("{what} is selected but no Service selects it");
                self.finding(f::AUTHZ_NO_SERVICE, pref.clone(), detail);
            }
            if pod_addressed.contains(wl.name) {
                let detail = format!("{what} is reached by pod IP");
                self.finding(f::AUTHZ_WORKLOAD_ADDRESSED, pref.clone(), detail);
            }
            for s in svcs {
                self.out.reason(&s, kind.id, pref);
            }
        }
    }

    /// Mesh-wide policies (root namespace) that apply to workloads here.
    fn analyze_root_policies(&mut self) {
        let cx = self.cx;
        if cx.root() == self.ns {
            return;
        }
        for p in cx.index.policies_in(cx.root()) {
            let class = authz::classify_with(p, &cx.index.sem);
            if class.targeted {
                continue;
            }
            let applies = cx
                .model
                .selected_workloads(self.ns, policy_selector(p))
                .iter()
                .any(|wl| self.injected_named(wl));
            if applies && (class.needs_waypoint() || class.source_dependent()) {
                let detail = format!("applies to workloads in {}", self.ns);
                let pref = ObjectRef::from_meta("AuthorizationPolicy", &p.metadata);
                self.finding(f::AUTHZ_MESH_WIDE, pref, detail);
            }
        }
    }

    fn analyze_peer_authentications(&mut self) {
        let (inv, index, root) = (self.cx.model.inv, self.cx.index, self.cx.root());
        let mesh_wide: Vec<usize> = index
            .peer_authns
            .get(root)
            .into_iter()
            .flatten()
            .copied()
            .filter(|i| cluster::mesh_wide(&inv.peer_authentications[*i], root))
            .collect();
        for pa in merged(index.peer_authns.get(self.ns), Some(&mesh_wide))
            .into_iter()
            .map(|i| &inv.peer_authentications[i])
        {
            let pa_ns = pa.metadata.namespace.as_deref().unwrap_or_default();
            if pa_ns != self.ns && !cluster::mesh_wide(pa, root) {
                continue;
            }
            let pref = ObjectRef::from_meta("PeerAuthentication", &pa.metadata);
            for (port, mode) in classify::peer_authn_modes(pa) {
                let where_ = port
                    .map(|p| format!("port {p}"))
                    .unwrap_or_else(|| classify::peer_authn_scope(pa, root).into());
                match mode.as_str() {
                    "DISABLE" => {
                        let detail = format!("{where_} mode DISABLE");
                        self.finding(f::PEER_AUTHN_DISABLE, pref.clone(), detail);
                    }
                    "PERMISSIVE" => self.finding(f::PEER_AUTHN_PERMISSIVE, pref.clone(), where_),
                    _ => {}
                }
            }
        }
    }

    /// RequestAuthentication, Telemetry and WasmPlugin objects that are not targeted: they
    /// need the waypoint and get copies for it.
    fn analyze_l7<T: L7Object>(&mut self, list: Option<&Vec<&T>>, kind: f::FindingKind) {
        for o in list.into_iter().flatten().copied() {
            if o.targeted() {
                continue;
            }
            let oref = ObjectRef::from_meta(T::KIND, o.meta());
            self.finding(kind, oref.clone(), "");
            let sel = o
                .selector()
                .and_then(|s| s.match_labels.clone())
                .filter(|m| !m.is_empty());
            for wl in self.cx.model.selected_workloads(self.ns, sel.as_ref()) {
                if !self.injected_named(wl) {
                    continue;
                }
                for s in self.services_of(wl) {
                    self.out.reason(&s, kind.id, &oref);
                }
            }
            let value = serde_json::to_value(o).unwrap_or(Value::Null);
            self.state.extra_copies.push((oref, value, sel, kind.id));
        }
    }

    fn analyze_envoy_filters(&mut self) {
        let (inv, index, root) = (self.cx.model.inv, self.cx.index, self.cx.root());
        for ef in merged(
            index.envoy_filters.get(self.ns),
            index.envoy_filters.get(root),
        )
        .into_iter()
        .map(|i| &inv.envoy_filters[i])
        {
            let ef_ns = ef.metadata.namespace.as_deref().unwrap_or_default();
            let sel = ef
                .spec
                .workload_selector
                .as_ref()
                .and_then(|s| s.labels.clone());
            let applies = if ef_ns == self.ns {
                true
            } else if ef_ns == root {
                self.cx
                    .model
                    .selected_workloads(self.ns, sel.as_ref().filter(|m| !m.is_empty()))
                    .iter()
                    .any(|wl| self.injected_named(wl))
            } else {
                false
            };
            if applies {
                let detail = format!("patches proxies in {}", self.ns);
                let eref = ObjectRef::from_meta("EnvoyFilter", &ef.metadata);
                self.finding(f::ENVOYFILTER, eref, detail);
            }
        }
    }

    fn analyze_sidecars(&mut self) {
        let (inv, index, root) = (self.cx.model.inv, self.cx.index, self.cx.root());
        for sc in merged(index.sidecars.get(self.ns), index.sidecars.get(root))
            .into_iter()
            .map(|i| &inv.sidecars[i])
        {
            let sc_ns = sc.metadata.namespace.as_deref().unwrap_or_default();
            if sc_ns == self.ns || sc_ns == root {
                let sref = ObjectRef::from_meta("Sidecar", &sc.metadata);
                self.finding(f::SIDECAR_RESOURCE_IGNORED, sref, "");
            }
        }
    }

    /// DestinationRules for Services here.
    fn analyze_destination_rules(&mut self) {
        let model = self.cx.model;
        for r in model.destination_rules_in(self.ns) {
            let dref = ObjectRef::from_meta("DestinationRule", &r.rule.metadata);
            if model.service(self.ns, &r.service).is_none() {
                let detail = format!("host `{}`", r.rule.spec.host);
                self.finding(f::DR_HOST_UNRESOLVED, dref, detail);
                continue;
            }
            self.analyze_destination_rule(r.rule, &r.service, dref);
        }
    }

    fn analyze_destination_rule(&mut self, dr: &DestinationRule, svc: &str, dref: ObjectRef) {
        let c = classify::classify_dr(dr);
        if c.needs_waypoint() {
            let detail = c.traffic_policy.join(", ");
            self.finding(f::DR_TRAFFIC_POLICY, dref.clone(), detail);
            self.out.reason(svc, f::DR_TRAFFIC_POLICY.id, &dref);
        }
        let relied_on =
            c.needs_waypoint() || dr.spec.subsets.as_ref().is_some_and(|s| !s.is_empty());
        if let Some(to) = dr
            .spec
            .export_to
            .as_ref()
            .filter(|t| !t.is_empty() && !t.iter().any(|x| x == "*"))
            && relied_on
        {
            self.finding(f::DR_EXPORT_TO, dref.clone(), format!("exportTo: {to:?}"));
        }
        if c.tls_istio_mutual_only {
            self.finding(f::DR_TLS_ISTIO_MUTUAL, dref.clone(), "");
        }
        if c.subset_policy {
            self.finding(f::DR_SUBSET_TRAFFIC_POLICY, dref.clone(), "");
        }
        if c.subsets_only() {
            self.finding(f::DR_SUBSETS_ONLY, dref, "");
        }
    }

    /// Conversions with a parent here, in conversion order (the order of their reasons).
    fn analyze_route_parents(&mut self) {
        let cx = self.cx;
        for c in cx
            .index
            .conversions_by_parent
            .get(self.ns)
            .into_iter()
            .flatten()
            .filter_map(|i| cx.conversions.get(*i))
        {
            let vref = ObjectRef::from_meta("VirtualService", &c.vs.metadata);
            for (pns, psvc) in &c.conversion.parents {
                if pns == self.ns {
                    self.out.reason(psvc, f::VS_MESH_ROUTE.id, &vref);
                    self.existing_http_routes(pns, psvc, &vref);
                }
            }
        }
    }

    /// An existing HTTPRoute on the same Service would be mixed with ours.
    fn existing_http_routes(&mut self, pns: &str, psvc: &str, vref: &ObjectRef) {
        let routes = self.cx.index.http_routes.get(&(pns, psvc));
        for hr in routes.into_iter().flatten() {
            let managed = hr
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(mn::LABEL_MANAGED_BY))
                .is_some_and(|v| v == mn::MANAGED_BY);
            if !managed {
                let detail = format!("Service {pns}/{psvc} is also routed by {vref}");
                let href = ObjectRef::from_meta("HTTPRoute", &hr.metadata);
                self.finding(f::HTTPROUTE_EXISTS, href, detail);
            }
        }
    }

    /// Findings are sorted at the end, so their order here does not matter.
    fn analyze_owned_routes(&mut self) {
        for c in &self.state.owned {
            self.findings.extend(c.conversion.findings.iter().cloned());
            if !c.conversion.parents.is_empty() {
                let vref = ObjectRef::from_meta("VirtualService", &c.vs.metadata);
                self.findings.push(Finding::new(f::VS_MESH_ROUTE, vref, ""));
            }
        }
    }
}

/// The objects other than AuthorizationPolicies whose selector form needs the waypoint and
/// a copy for it.
trait L7Object: Serialize {
    const KIND: &'static str;
    fn meta(&self) -> &ObjectMeta;
    fn selector(&self) -> Option<&WorkloadSelector>;
    /// Attached with `targetRef(s)`: ztunnel or a waypoint already decides where it
    /// applies.
    fn targeted(&self) -> bool;
}

macro_rules! l7_object {
    ($($ty:ty => $kind:literal),*) => {$(
        impl L7Object for $ty {
            const KIND: &'static str = $kind;
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn selector(&self) -> Option<&WorkloadSelector> {
                self.spec.selector.as_ref()
            }
            fn targeted(&self) -> bool {
                self.spec.target_ref.is_some()
                    || self.spec.target_refs.as_ref().is_some_and(|t| !t.is_empty())
            }
        }
    )*};
}

l7_object!(
    RequestAuthentication => "RequestAuthentication",
    Telemetry => "Telemetry",
    WasmPlugin => "WasmPlugin"
);
