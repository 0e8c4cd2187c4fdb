//! The actions of each step of one namespace, from what its analysis found.

use super::*;

impl NamespacePlanner<'_, '_> {
    /// The actions of steps 3 to 9, in the order the operator runs them.
    pub(super) fn plan_steps(&mut self) {
        self.hbone_restarts();
        self.create_waypoint();
        self.per_version_services();
        self.prepare_routes();
        self.migrate_policies();
        self.enroll_in_ambient();
        self.activate_waypoint();
        self.apply_routes();
        self.simplify_destination_rules();
        self.remove_sidecars();
    }

    fn hbone_restarts(&mut self) {
        for obj in self.out.restart_hbone.clone() {
            self.out.act(
                Step::HboneSidecars,
                Action::new(
                    Op::Restart,
                    obj,
                    "restart so the sidecar is re-injected with HBONE support",
                ),
            );
        }
    }

    fn create_waypoint(&mut self) {
        let wp = &self.out.waypoint;
        if !wp.needed || wp.exists {
            return;
        }
        let gw = waypoint_gateway(&wp.name, self.ns, &wp.for_);
        let detail = format!("waypoint for {} traffic", wp.for_);
        let v = routes::to_object(&gw, "gateway.networking.k8s.io/v1", "Gateway");
        let (i, obj) = self.manifests.add(Step::Waypoints, "waypoint", None, v);
        self.out.act(
            Step::Waypoints,
            Action {
                manifest: Some(i),
                ..Action::new(Op::Create, obj, detail)
            },
        );
    }

    /// Every subset of a routed Service becomes a per-version Service, not only the ones the
    /// routes use today: the subsets-only DestinationRule is removed in step 8 and its
    /// versions must stay addressable.
    fn per_version_services(&mut self) {
        let mut per_version: Vec<routes::PerVersion> = Vec::new();
        for c in &self.state.owned {
            for (pns, psvc) in routed_services(&c.conversion) {
                if pns != self.ns && self.cx.targets.contains(&pns) {
                    continue;
                }
                for pv in routes::all_subsets_in(self.cx.model, &pns, &psvc) {
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
            add_per_version(
                self.cx.model,
                pv,
                &mut self.manifests,
                &mut self.out,
                &mut self.findings,
            );
        }
    }

    /// The ReferenceGrants (created in step 5) and HTTPRoutes (prepared in step 5, applied
    /// in step 7) of the conversions this namespace carries.
    fn prepare_routes(&mut self) {
        let owned = self.state.owned.clone();
        for c in owned {
            let vref = ObjectRef::from_meta("VirtualService", &c.vs.metadata);
            for g in &c.conversion.grants {
                let (i, obj) =
                    self.manifests
                        .add(Step::Policies, "reference-grant", Some(&vref), g.clone());
                self.out.act(
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
            for r in &c.conversion.routes {
                self.prepare_route(r, &vref, c.conversion.keeps_gateways);
            }
        }
    }

    fn prepare_route(&mut self, route: &Value, vref: &ObjectRef, keeps_gateways: bool) {
        let (i, obj) = self.manifests.add(
            Step::WaypointActivation,
            "httproute",
            Some(vref),
            route.clone(),
        );
        self.out.act(
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
        self.state.routes.push(RouteManifest {
            manifest: i,
            route: obj,
            source: vref.clone(),
            keeps_gateways,
        });
    }

    /// Policy copies, bypass protection and the enforcement timeline (protection.rs): the
    /// one place this module calls into it.
    fn migrate_policies(&mut self) {
        let cx = self.cx;
        let st = &self.state;
        let principal = self.out.waypoint.principal.clone();
        policy_migration(
            cx.model,
            cx.index,
            cx.spec,
            cx.facts,
            self.ns,
            &principal,
            &st.served,
            &st.policies,
            &st.injected,
            cx.targets,
            cx.ingress,
            cx.root(),
            &st.extra_copies,
            &mut self.manifests,
            &mut self.out,
            &mut self.findings,
        );
        dry_run_copies(
            cx.model,
            self.ns,
            &st.served,
            &st.dry_runs,
            &st.injected,
            &mut self.manifests,
            &mut self.out,
            &mut self.findings,
        );
    }

    fn enroll_in_ambient(&mut self) {
        if self.state.already_ambient {
            return;
        }
        self.out.act(
            Step::AmbientEnrollment,
            Action::label(
                ObjectRef::namespace(self.ns),
                n::DATAPLANE_MODE,
                n::DATAPLANE_AMBIENT,
                "enroll the namespace in ambient (sidecars still win while injected)",
            ),
        );
    }

    fn activate_waypoint(&mut self) {
        if !self.out.waypoint.needed {
            return;
        }
        let name = self.out.waypoint.name.clone();
        self.out.act(
            Step::WaypointActivation,
            Action::label(
                ObjectRef::namespace(self.ns),
                n::USE_WAYPOINT,
                &name,
                "send the namespace's Service traffic through the waypoint (guarded: only once it is Programmed)",
            ),
        );
        let bypassed: Vec<String> = self
            .out
            .services
            .values()
            .filter(|s| s.bypass_protection)
            .map(|s| s.name.clone())
            .collect();
        for s in bypassed {
            self.ingress_through_waypoint(&s);
        }
    }

    /// Ingress gateway traffic to a Service under bypass protection goes through the
    /// waypoint, so its policy copies apply.
    fn ingress_through_waypoint(&mut self, svc: &str) {
        let sref = ObjectRef::new("Service", Some(self.ns), svc);
        self.out.act(
            Step::WaypointActivation,
            Action::label(
                sref.clone(),
                n::INGRESS_USE_WAYPOINT,
                "true",
                "ingress gateway traffic goes through the waypoint so its policy copies apply",
            ),
        );
        self.finding(f::INGRESS_USE_WAYPOINT, sref, "");
        let findings = gateway_routes_through_waypoint(self.cx.model.inv, self.ns, svc);
        self.findings.extend(findings);
    }

    /// The prepared HTTPRoutes are applied, then the VirtualServices they replace go.
    fn apply_routes(&mut self) {
        for r in &self.state.routes {
            self.out.act(
                Step::WaypointActivation,
                Action {
                    manifest: Some(r.manifest),
                    ..Action::new(Op::Apply, r.route.clone(), format!("replaces {}", r.source))
                },
            );
        }
        for r in &self.state.routes {
            if !self.state.swapped.insert(r.source.clone()) {
                continue;
            }
            let action = if r.keeps_gateways {
                Action::new(
                    Op::RemoveMeshGateway,
                    r.source.clone(),
                    "it also serves gateways: only `mesh` is removed from spec.gateways",
                )
            } else {
                Action::new(
                    Op::Delete,
                    r.source.clone(),
                    "replaced by the HTTPRoute (VirtualService and HTTPRoute must not overlap)",
                )
            };
            self.out.act(Step::WaypointActivation, action);
        }
    }

    /// Subsets-only DestinationRules whose subsets only swapped routes used.
    fn simplify_destination_rules(&mut self) {
        let model = self.cx.model;
        for r in model.destination_rules_in(self.ns) {
            if model.service(self.ns, &r.service).is_none() {
                continue;
            }
            if !classify::classify_dr(r.rule).subsets_only() {
                continue;
            }
            let dref = ObjectRef::from_meta("DestinationRule", &r.rule.metadata);
            let inv = model.inv;
            if dr_still_used(
                inv,
                self.cx.index,
                r.rule,
                self.ns,
                &r.service,
                &self.state.swapped,
            ) {
                continue;
            }
            self.out.act(
                Step::PolicySimplification,
                Action::new(
                    Op::Delete,
                    dref,
                    "only defined subsets; routes now use per-version Services",
                ),
            );
        }
    }

    fn remove_sidecars(&mut self) {
        self.stop_namespace_injection();
        for wl in self.state.injected.clone() {
            if wl.kind != WorkloadKind::Pod {
                self.stop_template_injection(wl);
            }
        }
        for obj in self.out.restart.clone() {
            self.out.act(
                Step::SidecarRemoval,
                Action::new(
                    Op::Restart,
                    obj,
                    "restart without a sidecar; ztunnel captures the new pods",
                ),
            );
        }
        // Deletions and deferred objects of step 9 go after the restarts.
        if let Some(list) = self.out.steps.get_mut(&Step::SidecarRemoval) {
            list.sort_by_key(|a| a.after_rollout);
        }
    }

    fn stop_namespace_injection(&mut self) {
        let ns_meta = self.cx.model.namespace(self.ns).map(|n| &n.metadata);
        let ns_ref = ObjectRef::namespace(self.ns);
        if self.state.injection == NamespaceInjection::Enabled
            || ns_meta.is_some_and(|m| label(m, n::INJECTION).is_some())
        {
            self.out.act(
                Step::SidecarRemoval,
                Action::unlabel(
                    Op::Unlabel,
                    ns_ref.clone(),
                    n::INJECTION,
                    "stop sidecar injection",
                ),
            );
        }
        if ns_meta.is_some_and(|m| label(m, n::REV).is_some()) {
            self.out.act(
                Step::SidecarRemoval,
                Action::unlabel(
                    Op::Unlabel,
                    ns_ref,
                    n::REV,
                    "stop revision-based sidecar injection",
                ),
            );
        }
    }

    /// Pod template labels that would inject the sidecar again.
    fn stop_template_injection(&mut self, wl: &Workload<'_>) {
        if wl
            .pod_labels
            .get(n::SIDECAR_INJECT)
            .is_some_and(|v| v == "true")
        {
            self.out.act(
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
            self.out.act(
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
}

/// The Services a conversion routes: its parents and the Services of its per-version
/// backends, as (namespace, name).
fn routed_services(conv: &routes::Conversion) -> BTreeSet<(String, String)> {
    conv.parents
        .iter()
        .cloned()
        .chain(
            conv.per_version
                .iter()
                .map(|pv| (pv.namespace.clone(), pv.service.clone())),
        )
        .collect()
}

fn waypoint_gateway(name: &str, ns: &str, waypoint_for: &str) -> Gateway {
    let mut labels = BTreeMap::new();
    labels.insert(n::WAYPOINT_FOR.to_string(), waypoint_for.to_string());
    Gateway {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
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
    }
}

/// Whether a VirtualService that stays still routes to one of `dr`'s subsets of Service
/// `hns`/`hname`.
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
