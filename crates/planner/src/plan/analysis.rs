//! The analysis of one namespace: findings, steps and actions.

use super::*;

#[allow(clippy::too_many_arguments)]
pub(super) fn analyze_namespace<'a>(
    model: &Model<'a>,
    index: &Index<'a>,
    spec: &MeshMigrationSpec,
    facts: &ControlPlaneFacts,
    ns: &str,
    targets: &BTreeSet<String>,
    conversions: &[(&VirtualService, routes::Conversion, String)],
    ingress: &[String],
    root: &str,
    manifests: &mut Manifests,
    findings: &mut Vec<Finding>,
) -> NsWork {
    let inv = model.inv;
    let td = &facts.trust_domain;
    let ns_obj = model.namespace(ns);
    let ns_ref = ObjectRef::namespace(ns);
    let injection = namespace_injection(ns_obj);
    let wp_name = spec.waypoint.name.clone();
    let mut w = NsWork {
        name: ns.to_string(),
        exists: ns_obj.is_some(),
        services: BTreeMap::new(),
        workloads: Vec::new(),
        steps: BTreeMap::new(),
        enforcement: Vec::new(),
        waypoint: WaypointPlan {
            needed: false,
            name: wp_name.clone(),
            for_: "service".into(),
            exists: false,
            principal: format!("{td}/ns/{ns}/sa/{wp_name}"),
        },
        restart: Vec::new(),
        restart_hbone: Vec::new(),
        bypass_admits: BTreeMap::new(),
    };
    for check in Step::Prerequisites.checks() {
        w.act(
            Step::Prerequisites,
            Action::new(Op::Verify, ns_ref.clone(), check.as_str()),
        );
    }
    if ns_obj.is_none() {
        findings.push(Finding::new(
            f::NAMESPACE_NOT_FOUND,
            ns_ref,
            format!("namespace {ns}"),
        ));
        return w;
    }
    let ns_meta = ns_obj.map(|n| &n.metadata);
    for svc in model.services_in(ns) {
        w.services.insert(
            svc_name(svc).to_string(),
            ServicePlan {
                name: svc_name(svc).to_string(),
                needs_waypoint: false,
                served_by_waypoint: false,
                reasons: Vec::new(),
                bypass_protection: false,
            },
        );
    }

    // ---- workloads
    let workloads = model.workloads_in(ns);
    let mut injected: Vec<&Workload<'_>> = Vec::new();
    for wl in workloads {
        let sidecar = wl.has_sidecar(&injection);
        let hbone = !wl.pods.is_empty()
            && wl
                .pods
                .iter()
                .all(|p| !p.has_sidecar() || p.sidecar_hbone());
        let opted_out = wl.opted_out();
        if opted_out {
            findings.push(Finding::new(f::WORKLOAD_OPTED_OUT, wl.object(), ""));
        }
        if wl.host_network {
            findings.push(Finding::new(f::HOSTNETWORK_POD, wl.object(), ""));
        }
        if wl.pods.iter().any(|p| cluster::spire_managed(&p.metadata))
            || wl.pod_labels.contains_key(n::SPIRE_IDENTITY)
        {
            findings.push(Finding::new(f::SPIRE, wl.object(), ""));
        }
        if sidecar && wl.kind == crate::model::WorkloadKind::Pod {
            findings.push(Finding::new(f::UNMANAGED_POD, wl.object(), ""));
        }
        if sidecar {
            injected.push(wl);
            if wl.kind != crate::model::WorkloadKind::Pod {
                w.restart.push(wl.object());
                if !hbone || !facts.ambient {
                    w.restart_hbone.push(wl.object());
                }
            }
        }
        w.workloads.push(WorkloadPlan {
            kind: wl.kind.as_str(),
            name: wl.name.to_string(),
            sidecar,
            hbone,
            opted_out,
        });
    }
    if injected.is_empty() {
        findings.push(Finding::new(
            f::NAMESPACE_NO_SIDECARS,
            ObjectRef::namespace(ns),
            "",
        ));
    }
    if let NamespaceInjection::Revision(rev) = &injection {
        findings.push(Finding::new(
            f::REVISION_LABEL_REMOVED,
            ObjectRef::namespace(ns),
            format!("istio.io/rev={rev}"),
        ));
    }
    let already_ambient =
        ns_meta.and_then(|m| label(m, n::DATAPLANE_MODE)) == Some(n::DATAPLANE_AMBIENT);
    if already_ambient {
        findings.push(Finding::new(
            f::NAMESPACE_ALREADY_AMBIENT,
            ObjectRef::namespace(ns),
            "",
        ));
    }
    let svc_of = |wl: &Workload<'_>| -> Vec<String> {
        model
            .workload_services(wl)
            .iter()
            .map(|s| svc_name(s).to_string())
            .collect()
    };

    // ---- authorization policies
    // Dry-run policies enforce nothing in a sidecar: they are copied as dry-run and never
    // shape what meshmig enforces (waypoint needs, bypass protection, the ALLOW union).
    let (dry_runs, policies): (Vec<(&AuthorizationPolicy, PolicyClass)>, Vec<_>) = index
        .policies_in(ns)
        .iter()
        .map(|p| (*p, authz::classify_with(p, &index.sem)))
        .partition(|(_, c)| c.dry_run && !c.targeted);
    let pod_addressed_workloads: BTreeSet<&str> = {
        let mut set = BTreeSet::new();
        for svc in model.services_in(ns) {
            if is_headless(svc) {
                for wl in model.service_workloads(svc) {
                    set.insert(wl.name);
                }
            }
        }
        for wl in workloads.iter().filter(|w| w.pod_addressed()) {
            set.insert(wl.name);
        }
        set
    };
    for (p, class) in &policies {
        let pref = ObjectRef::from_meta("AuthorizationPolicy", &p.metadata);
        if class.targeted {
            findings.push(Finding::new(f::AUTHZ_TARGETED_EXISTING, pref, ""));
            continue;
        }
        let tds = class.paths_of(authz::AttrKind::TrustDomain);
        if !tds.is_empty() {
            findings.push(Finding::new(
                f::AUTHZ_TRUST_DOMAINS,
                pref.clone(),
                tds.join(", "),
            ));
        }
        let unknown = class.paths_of(authz::AttrKind::Unknown);
        if !unknown.is_empty() {
            findings.push(Finding::new(
                f::AUTHZ_UNKNOWN_FIELD,
                pref.clone(),
                unknown.join(", "),
            ));
        }
        let (selected, others): (Vec<&Workload<'_>>, Vec<&Workload<'_>>) = model
            .selected_workloads(ns, policy_selector(p))
            .into_iter()
            .partition(|wl| {
                injected
                    .iter()
                    .any(|i| i.name == wl.name && i.kind == wl.kind)
            });
        // Workloads without a sidecar that step 6 puts in ambient: from then ztunnel
        // enforces this policy on them as istiod converts it, and no copy covers them.
        let unmeshed: Vec<String> = others
            .iter()
            .filter(|wl| {
                // `sidecar.istio.io/inject: "false"` keeps the sidecar away, not ztunnel.
                let dataplane = wl.pod_labels.get(n::DATAPLANE_MODE).map(String::as_str);
                dataplane != Some("none") && !wl.host_network
            })
            .map(|wl| format!("{} {}", wl.kind.as_str(), wl.name))
            .collect();
        if class.needs_waypoint() && !unmeshed.is_empty() {
            findings.push(Finding::new(
                f::AUTHZ_L7_UNMESHED,
                pref.clone(),
                format!("selects {} (no sidecar)", unmeshed.join(", ")),
            ));
        }
        if class.needs_waypoint() && !selected.is_empty() {
            let id = if matches!(class.action, AuthzAction::Allow | AuthzAction::Deny) {
                findings.push(Finding::new(
                    f::AUTHZ_L7,
                    pref.clone(),
                    class.l7_paths().join(", "),
                ));
                f::AUTHZ_L7.id
            } else {
                findings.push(Finding::new(
                    f::AUTHZ_ACTION_NEEDS_WAYPOINT,
                    pref.clone(),
                    format!("action {:?}", class.action),
                ));
                f::AUTHZ_ACTION_NEEDS_WAYPOINT.id
            };
            for wl in &selected {
                let svcs = svc_of(wl);
                if svcs.is_empty() {
                    findings.push(Finding::new(
                        f::AUTHZ_NO_SERVICE,
                        pref.clone(),
                        format!(
                            "{} {} is selected but no Service selects it",
                            wl.kind.as_str(),
                            wl.name
                        ),
                    ));
                }
                if pod_addressed_workloads.contains(wl.name) {
                    findings.push(Finding::new(
                        f::AUTHZ_WORKLOAD_ADDRESSED,
                        pref.clone(),
                        format!("{} {} is reached by pod IP", wl.kind.as_str(), wl.name),
                    ));
                }
                for s in svcs {
                    w.reason(&s, id, &pref);
                }
            }
        }
    }
    // Mesh-wide policies (root namespace) that apply to workloads here.
    let root_policies: &[&AuthorizationPolicy] = if root != ns {
        index.policies_in(root)
    } else {
        &[]
    };
    for p in root_policies {
        let class = authz::classify_with(p, &index.sem);
        if class.targeted {
            continue;
        }
        let applies = model
            .selected_workloads(ns, policy_selector(p))
            .iter()
            .any(|wl| injected.iter().any(|i| i.name == wl.name));
        if applies && (class.needs_waypoint() || class.source_dependent()) {
            findings.push(Finding::new(
                f::AUTHZ_MESH_WIDE,
                ObjectRef::from_meta("AuthorizationPolicy", &p.metadata),
                format!("applies to workloads in {ns}"),
            ));
        }
    }

    // ---- PeerAuthentication
    let mesh_wide_pas: Vec<usize> = index
        .peer_authns
        .get(root)
        .into_iter()
        .flatten()
        .copied()
        .filter(|i| cluster::mesh_wide(&inv.peer_authentications[*i], root))
        .collect();
    for pa in merged(index.peer_authns.get(ns), Some(&mesh_wide_pas))
        .into_iter()
        .map(|i| &inv.peer_authentications[i])
    {
        let pa_ns = pa.metadata.namespace.as_deref().unwrap_or_default();
        if pa_ns != ns && !cluster::mesh_wide(pa, root) {
            continue;
        }
        let pref = ObjectRef::from_meta("PeerAuthentication", &pa.metadata);
        for (port, mode) in classify::peer_authn_modes(pa) {
            let where_ = port
                .map(|p| format!("port {p}"))
                .unwrap_or_else(|| classify::peer_authn_scope(pa, root).into());
            match mode.as_str() {
                "DISABLE" => findings.push(Finding::new(
                    f::PEER_AUTHN_DISABLE,
                    pref.clone(),
                    format!("{where_} mode DISABLE"),
                )),
                "PERMISSIVE" => {
                    findings.push(Finding::new(f::PEER_AUTHN_PERMISSIVE, pref.clone(), where_))
                }
                _ => {}
            }
        }
    }

    // ---- RequestAuthentication, Telemetry, WasmPlugin: need waypoint + copy
    let mut extra_copies: Vec<ExtraCopy> = Vec::new();
    macro_rules! l7_kind {
        ($list:expr, $kind:literal, $finding:expr) => {
            for o in $list.get(ns).into_iter().flatten().copied() {
                let targeted = o.spec.target_ref.is_some()
                    || o.spec.target_refs.as_ref().is_some_and(|t| !t.is_empty());
                if targeted {
                    continue;
                }
                let oref = ObjectRef::from_meta($kind, &o.metadata);
                findings.push(Finding::new($finding, oref.clone(), ""));
                let sel = o
                    .spec
                    .selector
                    .as_ref()
                    .and_then(|s| s.match_labels.clone())
                    .filter(|m| !m.is_empty());
                for wl in model.selected_workloads(ns, sel.as_ref()) {
                    if !injected.iter().any(|i| i.name == wl.name) {
                        continue;
                    }
                    for s in svc_of(wl) {
                        w.reason(&s, $finding.id, &oref);
                    }
                }
                let value = serde_json::to_value(o).unwrap_or(Value::Null);
                extra_copies.push((oref, value, sel, $finding.id));
            }
        };
    }
    l7_kind!(
        index.request_authns,
        "RequestAuthentication",
        f::REQUEST_AUTHN
    );
    l7_kind!(index.telemetries, "Telemetry", f::TELEMETRY);
    l7_kind!(index.wasm_plugins, "WasmPlugin", f::WASM_PLUGIN);

    // ---- EnvoyFilter, Sidecar
    for ef in merged(index.envoy_filters.get(ns), index.envoy_filters.get(root))
        .into_iter()
        .map(|i| &inv.envoy_filters[i])
    {
        let ef_ns = ef.metadata.namespace.as_deref().unwrap_or_default();
        let sel = ef
            .spec
            .workload_selector
            .as_ref()
            .and_then(|s| s.labels.clone());
        let applies = if ef_ns == ns {
            true
        } else if ef_ns == root {
            model
                .selected_workloads(ns, sel.as_ref().filter(|m| !m.is_empty()))
                .iter()
                .any(|wl| injected.iter().any(|i| i.name == wl.name))
        } else {
            false
        };
        if applies {
            findings.push(Finding::new(
                f::ENVOYFILTER,
                ObjectRef::from_meta("EnvoyFilter", &ef.metadata),
                format!("patches proxies in {ns}"),
            ));
        }
    }
    for sc in merged(index.sidecars.get(ns), index.sidecars.get(root))
        .into_iter()
        .map(|i| &inv.sidecars[i])
    {
        let sc_ns = sc.metadata.namespace.as_deref().unwrap_or_default();
        if sc_ns == ns || sc_ns == root {
            findings.push(Finding::new(
                f::SIDECAR_RESOURCE_IGNORED,
                ObjectRef::from_meta("Sidecar", &sc.metadata),
                "",
            ));
        }
    }

    // ---- DestinationRules for Services here
    for (dr, hname) in index.destination_rules_for(ns) {
        let dref = ObjectRef::from_meta("DestinationRule", &dr.metadata);
        if model.service(ns, hname).is_none() {
            findings.push(Finding::new(
                f::DR_HOST_UNRESOLVED,
                dref,
                format!("host `{}`", dr.spec.host),
            ));
            continue;
        }
        let c = classify::classify_dr(dr);
        if c.needs_waypoint() {
            findings.push(Finding::new(
                f::DR_TRAFFIC_POLICY,
                dref.clone(),
                c.traffic_policy.join(", "),
            ));
            w.reason(hname, f::DR_TRAFFIC_POLICY.id, &dref);
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
            findings.push(Finding::new(
                f::DR_EXPORT_TO,
                dref.clone(),
                format!("exportTo: {to:?}"),
            ));
        }
        if c.tls_istio_mutual_only {
            findings.push(Finding::new(f::DR_TLS_ISTIO_MUTUAL, dref.clone(), ""));
        }
        if c.subset_policy {
            findings.push(Finding::new(f::DR_SUBSET_TRAFFIC_POLICY, dref.clone(), ""));
        }
        if c.subsets_only() {
            findings.push(Finding::new(f::DR_SUBSETS_ONLY, dref.clone(), ""));
        }
    }

    // ---- routes
    let mine: Vec<&(&VirtualService, routes::Conversion, String)> = index
        .conversions_by_owner
        .get(ns)
        .into_iter()
        .flatten()
        .filter_map(|i| conversions.get(*i))
        .collect();
    // Conversions with a parent here, in conversion order (the order of their reasons).
    for (vs, conv, _) in index
        .conversions_by_parent
        .get(ns)
        .into_iter()
        .flatten()
        .filter_map(|i| conversions.get(*i))
    {
        let vref = ObjectRef::from_meta("VirtualService", &vs.metadata);
        for (pns, psvc) in &conv.parents {
            if pns == ns {
                w.reason(psvc, f::VS_MESH_ROUTE.id, &vref);
                // An existing HTTPRoute on the same Service would be mixed with ours.
                for hr in index
                    .http_routes
                    .get(&(pns.as_str(), psvc.as_str()))
                    .into_iter()
                    .flatten()
                {
                    let managed = hr
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(mn::LABEL_MANAGED_BY))
                        .is_some_and(|v| v == mn::MANAGED_BY);
                    if !managed {
                        findings.push(Finding::new(
                            f::HTTPROUTE_EXISTS,
                            ObjectRef::from_meta("HTTPRoute", &hr.metadata),
                            format!("Service {pns}/{psvc} is also routed by {vref}"),
                        ));
                    }
                }
            }
        }
    }
    // Findings are sorted at the end, so their order here does not matter.
    for (vs, conv, _) in &mine {
        findings.extend(conv.findings.iter().cloned());
        if !conv.parents.is_empty() {
            let vref = ObjectRef::from_meta("VirtualService", &vs.metadata);
            findings.push(Finding::new(f::VS_MESH_ROUTE, vref, ""));
        }
    }

    // ---- waypoint decision
    let any_need = w.services.values().any(|s| s.needs_waypoint);
    let existing_wp = index.waypoints.get(ns).copied();
    match spec.waypoint.policy {
        WaypointPolicy::Never => {
            if any_need {
                let needing: Vec<&str> = w
                    .services
                    .values()
                    .filter(|s| s.needs_waypoint)
                    .map(|s| s.name.as_str())
                    .collect();
                findings.push(Finding::new(
                    f::WAYPOINT_DISABLED,
                    ObjectRef::namespace(ns),
                    format!("Services needing one: {}", needing.join(", ")),
                ));
            }
        }
        WaypointPolicy::Always => w.waypoint.needed = true,
        WaypointPolicy::Auto => w.waypoint.needed = any_need,
    }
    if let Some(g) = existing_wp {
        let name = g.metadata.name.clone().unwrap_or_default();
        findings.push(Finding::new(
            f::WAYPOINT_EXISTS,
            ObjectRef::from_meta("Gateway", &g.metadata),
            "",
        ));
        w.waypoint.exists = true;
        w.waypoint.name = name.clone();
        let sa = g
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(n::GATEWAY_SERVICE_ACCOUNT))
            .cloned()
            .unwrap_or(name);
        w.waypoint.principal = format!("{td}/ns/{ns}/sa/{sa}");
        if spec.waypoint.policy != WaypointPolicy::Never {
            w.waypoint.needed = true;
        }
    }
    // waypoint-for: headless Services / StatefulSets need workload-addressed traffic.
    let mut for_workload = false;
    let mut for_service = false;
    for svc in model.services_in(ns) {
        let needs = w
            .services
            .get(svc_name(svc))
            .is_some_and(|s| s.needs_waypoint);
        if !needs {
            continue;
        }
        let wls = model.service_workloads(svc);
        if is_headless(svc) || wls.iter().any(|wl| wl.pod_addressed()) {
            for_workload = true;
            findings.push(Finding::new(
                f::WAYPOINT_FOR_WORKLOAD,
                ObjectRef::from_meta("Service", &svc.metadata),
                "",
            ));
        }
        if !is_headless(svc) {
            for_service = true;
        }
    }
    w.waypoint.for_ = match (for_service, for_workload) {
        (true, true) => "all",
        (false, true) => "workload",
        _ => "service",
    }
    .into();

    // ---- which Services the waypoint will serve
    let waypoint_on = w.waypoint.needed;
    let mut served: BTreeSet<String> = BTreeSet::new();
    if waypoint_on {
        for svc in model.services_in(ns) {
            let opt_out = svc
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(n::USE_WAYPOINT))
                .is_some_and(|v| v == "none");
            if !opt_out {
                served.insert(svc_name(svc).to_string());
                if let Some(sp) = w.services.get_mut(svc_name(svc)) {
                    sp.served_by_waypoint = true;
                }
            }
        }
    }

    // ---- step 3: HBONE restarts
    for obj in w.restart_hbone.clone() {
        w.act(
            Step::HboneSidecars,
            Action::new(
                Op::Restart,
                obj,
                "restart so the sidecar is re-injected with HBONE support",
            ),
        );
    }

    // ---- step 4: waypoint
    if waypoint_on && !w.waypoint.exists {
        let mut labels = BTreeMap::new();
        labels.insert(n::WAYPOINT_FOR.to_string(), w.waypoint.for_.clone());
        let gw = Gateway {
            metadata: ObjectMeta {
                name: Some(w.waypoint.name.clone()),
                namespace: Some(ns.to_string()),
                labels: Some(labels),
                ..Default::default()
            },
            spec: GatewaySpec {
                gateway_class_name: n::WAYPOINT_CLASS.into(),
                listeners: vec![GatewayListeners {
                    name: "mesh".into(),
                    port: 15008,
                    protocol: "HBONE".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
            status: None,
        };
        let v = routes::to_object(&gw, "gateway.networking.k8s.io/v1", "Gateway");
        let (i, obj) = manifests.add(Step::Waypoints, "waypoint", None, v);
        w.act(
            Step::Waypoints,
            Action {
                manifest: Some(i),
                ..Action::new(
                    Op::Create,
                    obj,
                    format!("waypoint for {} traffic", w.waypoint.for_),
                )
            },
        );
    }

    // ---- step 5: per-version Services (+ DestinationRules), grants, routes prepared
    let mut route_manifests: Vec<(usize, ObjectRef, ObjectRef, bool)> = Vec::new();
    // Every subset of a routed Service becomes a per-version Service, not only the ones the
    // routes use today: the subsets-only DestinationRule is removed in step 8 and its
    // versions must stay addressable.
    let mut per_version: Vec<routes::PerVersion> = Vec::new();
    for (_, conv, _) in &mine {
        let routed: BTreeSet<(String, String)> = conv
            .parents
            .iter()
            .cloned()
            .chain(
                conv.per_version
                    .iter()
                    .map(|pv| (pv.namespace.clone(), pv.service.clone())),
            )
            .collect();
        for (pns, psvc) in routed {
            if pns != *ns && targets.contains(&pns) {
                continue;
            }
            for pv in routes::all_subsets_in(model, &pns, &psvc) {
                if !per_version
                    .iter()
                    .any(|x| x.namespace == pv.namespace && x.name == pv.name)
                {
                    per_version.push(pv);
                }
            }
        }
    }
    for pv in &per_version {
        add_per_version(model, pv, manifests, &mut w, findings);
    }
    for (vs, conv, _) in &mine {
        let vref = ObjectRef::from_meta("VirtualService", &vs.metadata);
        for g in &conv.grants {
            let (i, obj) = manifests.add(Step::Policies, "reference-grant", Some(&vref), g.clone());
            w.act(
                Step::Policies,
                Action {
                    manifest: Some(i),
                    ..Action::new(
                        Op::Create,
                        obj,
                        "allow the converted route to reach a backend in another namespace",
                    )
                },
            );
        }
        for r in &conv.routes {
            let (i, obj) = manifests.add(
                Step::WaypointActivation,
                "httproute",
                Some(&vref),
                r.clone(),
            );
            w.act(
                Step::Policies,
                Action {
                    manifest: Some(i),
                    ..Action::new(
                        Op::Prepare,
                        obj.clone(),
                        format!("converted from {vref}; applied in step 7"),
                    )
                },
            );
            route_manifests.push((i, obj, vref.clone(), conv.keeps_gateways));
        }
    }

    // ---- policy migration
    policy_migration(
        model,
        index,
        spec,
        facts,
        ns,
        &w.waypoint.principal.clone(),
        &served,
        &policies,
        &injected,
        targets,
        ingress,
        root,
        &extra_copies,
        manifests,
        &mut w,
        findings,
    );
    dry_run_copies(
        model, ns, &served, &dry_runs, &injected, manifests, &mut w, findings,
    );

    // ---- step 6
    if !already_ambient {
        w.act(
            Step::AmbientEnrollment,
            Action::label(
                ObjectRef::namespace(ns),
                n::DATAPLANE_MODE,
                n::DATAPLANE_AMBIENT,
                "enroll the namespace in ambient (sidecars still win while injected)",
            ),
        );
    }

    // ---- step 7
    if waypoint_on {
        w.act(Step::WaypointActivation, Action::label(ObjectRef::namespace(ns), n::USE_WAYPOINT, &w.waypoint.name.clone(), "send the namespace's Service traffic through the waypoint (guarded: only once it is Programmed)"));
        let bypassed: Vec<String> = w
            .services
            .values()
            .filter(|s| s.bypass_protection)
            .map(|s| s.name.clone())
            .collect();
        for s in bypassed {
            w.act(
                Step::WaypointActivation,
                Action::label(
                    ObjectRef::new("Service", Some(ns), &s),
                    n::INGRESS_USE_WAYPOINT,
                    "true",
                    "ingress gateway traffic goes through the waypoint so its policy copies apply",
                ),
            );
            findings.push(Finding::new(
                f::INGRESS_USE_WAYPOINT,
                ObjectRef::new("Service", Some(ns), &s),
                "",
            ));
            findings.extend(gateway_routes_through_waypoint(inv, ns, &s));
        }
    }
    for (i, obj, vref, _) in &route_manifests {
        w.act(
            Step::WaypointActivation,
            Action {
                manifest: Some(*i),
                ..Action::new(Op::Apply, obj.clone(), format!("replaces {vref}"))
            },
        );
    }
    let mut swapped: BTreeSet<ObjectRef> = BTreeSet::new();
    for (_, _, vref, keeps) in &route_manifests {
        if !swapped.insert(vref.clone()) {
            continue;
        }
        if *keeps {
            w.act(
                Step::WaypointActivation,
                Action::new(
                    Op::RemoveMeshGateway,
                    vref.clone(),
                    "it also serves gateways: only `mesh` is removed from spec.gateways",
                ),
            );
        } else {
            w.act(
                Step::WaypointActivation,
                Action::new(
                    Op::Delete,
                    vref.clone(),
                    "replaced by the HTTPRoute (VirtualService and HTTPRoute must not overlap)",
                ),
            );
        }
    }

    // ---- step 8: subsets-only DestinationRules whose subsets only swapped routes used
    for (dr, hname) in index.destination_rules_for(ns) {
        if model.service(ns, hname).is_none() {
            continue;
        }
        if !classify::classify_dr(dr).subsets_only() {
            continue;
        }
        let dref = ObjectRef::from_meta("DestinationRule", &dr.metadata);
        if dr_still_used(inv, index, dr, ns, hname, &swapped) {
            continue;
        }
        w.act(
            Step::PolicySimplification,
            Action::new(
                Op::Delete,
                dref,
                "only defined subsets; routes now use per-version Services",
            ),
        );
    }

    // ---- step 9
    if injection == NamespaceInjection::Enabled
        || ns_meta.is_some_and(|m| label(m, n::INJECTION).is_some())
    {
        w.act(
            Step::SidecarRemoval,
            Action::unlabel(
                Op::Unlabel,
                ObjectRef::namespace(ns),
                n::INJECTION,
                "stop sidecar injection",
            ),
        );
    }
    if ns_meta.is_some_and(|m| label(m, n::REV).is_some()) {
        w.act(
            Step::SidecarRemoval,
            Action::unlabel(
                Op::Unlabel,
                ObjectRef::namespace(ns),
                n::REV,
                "stop revision-based sidecar injection",
            ),
        );
    }
    for wl in &injected {
        if wl.kind == crate::model::WorkloadKind::Pod {
            continue;
        }
        if wl
            .pod_labels
            .get(n::SIDECAR_INJECT)
            .is_some_and(|v| v == "true")
        {
            w.act(
                Step::SidecarRemoval,
                Action::unlabel(
                    Op::UnlabelTemplate,
                    wl.object(),
                    n::SIDECAR_INJECT,
                    "the pod template forces injection",
                ),
            );
        }
        if wl.pod_labels.contains_key(n::REV) {
            w.act(
                Step::SidecarRemoval,
                Action::unlabel(
                    Op::UnlabelTemplate,
                    wl.object(),
                    n::REV,
                    "the pod template selects an injection revision",
                ),
            );
        }
    }
    for obj in w.restart.clone() {
        w.act(
            Step::SidecarRemoval,
            Action::new(
                Op::Restart,
                obj,
                "restart without a sidecar; ztunnel captures the new pods",
            ),
        );
    }
    // Deletions and deferred objects of step 9 go after the restarts.
    if let Some(list) = w.steps.get_mut(&Step::SidecarRemoval) {
        list.sort_by_key(|a| a.after_rollout);
    }
    w
}

pub(super) fn dr_still_used(
    inv: &Inventory,
    index: &Index<'_>,
    dr: &DestinationRule,
    hns: &str,
    hname: &str,
    swapped: &BTreeSet<ObjectRef>,
) -> bool {
    let subsets: BTreeSet<&str> = dr
        .spec
        .subsets
        .iter()
        .flatten()
        .map(|s| s.name.as_str())
        .collect();
    // Only VirtualServices with a subset destination on this Service can use its subsets.
    let candidates = index
        .subset_routes
        .get(&(hns.to_string(), hname.to_string()))
        .into_iter()
        .flatten()
        .filter_map(|i| inv.virtual_services.get(*i));
    candidates.into_iter().any(|vs| {
        if swapped.contains(&ObjectRef::from_meta("VirtualService", &vs.metadata))
            && !routes::has_gateways(vs)
        {
            return false;
        }
        let vs_ns = vs.metadata.namespace.as_deref().unwrap_or_default();
        vs.spec
            .http
            .iter()
            .flatten()
            .flat_map(|r| r.route.iter().flatten())
            .any(|d| {
                d.destination
                    .subset
                    .as_deref()
                    .is_some_and(|s| subsets.contains(s))
                    && resolve_host(&d.destination.host, vs_ns)
                        == HostTarget::Service(hns.into(), hname.into())
            })
    })
}
