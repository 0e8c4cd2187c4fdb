//! The plan of one namespace: what every namespace's analysis reads, the planner that
//! builds one namespace's part (its methods live in analysis.rs, waypoint.rs and
//! steps.rs), and the finished [`NamespacePlan`].

use super::*;

/// A mesh VirtualService's conversion, carried by the plan of `owner`: the namespace of
/// its first target parent, else its own.
pub(super) struct VsConversion<'a> {
    pub(super) vs: &'a VirtualService,
    pub(super) conversion: routes::Conversion,
    pub(super) owner: String,
}

/// What the analysis of every namespace reads; built once per plan and shared by the
/// threads that analyze namespaces.
pub(super) struct PlanContext<'p> {
    pub(super) model: &'p Model<'p>,
    pub(super) index: &'p Index<'p>,
    pub(super) spec: &'p MeshMigrationSpec,
    pub(super) facts: &'p ControlPlaneFacts,
    pub(super) targets: &'p BTreeSet<String>,
    pub(super) conversions: &'p [VsConversion<'p>],
    /// Principals of the ingress gateways, which bypass protection admits.
    pub(super) ingress: &'p [String],
    /// Labels every generated object.
    pub(super) migration: &'p str,
}

impl PlanContext<'_> {
    pub(super) fn root(&self) -> &str {
        &self.facts.root_namespace
    }

    pub(super) fn trust_domain(&self) -> &str {
        &self.facts.trust_domain
    }
}

/// A non-authorization object that gets waypoint copies: reference, object, selector, finding id.
pub(super) type ExtraCopy = (
    ObjectRef,
    Value,
    Option<BTreeMap<String, String>>,
    &'static str,
);

/// The parts of a [`NamespacePlan`] being built, which policy migration (protection.rs)
/// and the cross-namespace windows (timeline.rs) add to.
pub(super) struct NsWork {
    pub(super) name: String,
    pub(super) exists: bool,
    pub(super) services: BTreeMap<String, ServicePlan>,
    pub(super) workloads: Vec<WorkloadPlan>,
    pub(super) steps: BTreeMap<Step, Vec<Action>>,
    pub(super) enforcement: Vec<Enforcement>,
    pub(super) waypoint: WaypointPlan,
    /// Workloads that restart in step 9 (sidecar removal).
    pub(super) restart: Vec<ObjectRef>,
    /// Workloads that restart in step 3 to get HBONE-capable sidecars.
    pub(super) restart_hbone: Vec<ObjectRef>,
    /// Per guarded Service, the namespaces whose sidecar callers its bypass protection lets
    /// past without the waypoint.
    pub(super) bypass_admits: BTreeMap<String, BTreeSet<String>>,
}

impl ServicePlan {
    pub(super) fn new(name: &str) -> Self {
        ServicePlan {
            name: name.to_string(),
            needs_waypoint: false,
            served_by_waypoint: false,
            reasons: Vec::new(),
            bypass_protection: false,
        }
    }
}

impl NsWork {
    fn new(name: &str, exists: bool, waypoint: WaypointPlan) -> Self {
        Self {
            name: name.to_string(),
            exists,
            services: BTreeMap::new(),
            workloads: Vec::new(),
            steps: BTreeMap::new(),
            enforcement: Vec::new(),
            waypoint,
            restart: Vec::new(),
            restart_hbone: Vec::new(),
            bypass_admits: BTreeMap::new(),
        }
    }

    /// Records that `object` makes Service `svc` need the waypoint.
    pub(super) fn reason(&mut self, svc: &str, id: &'static str, object: &ObjectRef) {
        let sp = self
            .services
            .entry(svc.to_string())
            .or_insert_with(|| ServicePlan::new(svc));
        sp.needs_waypoint = true;
        let r = Reason {
            id,
            object: object.clone(),
        };
        if !sp.reasons.contains(&r) {
            sp.reasons.push(r);
        }
    }

    /// Adds an action to a step, once.
    pub(super) fn act(&mut self, step: Step, a: Action) {
        let list = self.steps.entry(step).or_default();
        if !list.contains(&a) {
            list.push(a);
        }
    }

    /// The finished plan, its actions pointing at the manifests in their final order.
    pub(super) fn finish(mut self, remap: &HashMap<usize, usize>) -> NamespacePlan {
        let steps = Step::ALL
            .into_iter()
            .map(|s| {
                let mut actions = self.steps.remove(&s).unwrap_or_default();
                for a in &mut actions {
                    a.manifest = a.manifest.and_then(|m| remap.get(&m).copied());
                }
                StepPlan {
                    number: s,
                    name: s.name(),
                    actions,
                    checks: s.checks().to_vec(),
                }
            })
            .collect();
        NamespacePlan {
            name: self.name,
            exists: self.exists,
            waypoint: self.waypoint,
            services: self.services.into_values().collect(),
            workloads: self.workloads,
            steps,
            enforcement: self.enforcement,
        }
    }
}

/// A generated HTTPRoute: prepared in step 5, applied in step 7 where it replaces `source`.
pub(super) struct RouteManifest {
    pub(super) manifest: usize,
    pub(super) route: ObjectRef,
    pub(super) source: ObjectRef,
    /// The VirtualService also serves gateways: it loses `mesh` instead of being deleted.
    pub(super) keeps_gateways: bool,
}

/// What the analysis of a namespace learns and the steps that follow it use.
pub(super) struct NsState<'p> {
    pub(super) injection: NamespaceInjection,
    /// The namespace already carries the ambient dataplane label.
    pub(super) already_ambient: bool,
    /// Workloads that have (or will get) a sidecar.
    pub(super) injected: Vec<&'p Workload<'p>>,
    /// The namespace's enforcing AuthorizationPolicies, classified.
    pub(super) policies: Vec<(&'p AuthorizationPolicy, PolicyClass)>,
    /// Dry-run policies enforce nothing in a sidecar: they are copied as dry-run and never
    /// shape what meshmig enforces (waypoint needs, bypass protection, the ALLOW union).
    pub(super) dry_runs: Vec<(&'p AuthorizationPolicy, PolicyClass)>,
    pub(super) extra_copies: Vec<ExtraCopy>,
    /// Conversions this namespace's plan carries.
    pub(super) owned: Vec<&'p VsConversion<'p>>,
    /// Services the waypoint serves from step 7.
    pub(super) served: BTreeSet<String>,
    pub(super) routes: Vec<RouteManifest>,
    /// VirtualServices step 7 replaces by their HTTPRoutes.
    pub(super) swapped: BTreeSet<ObjectRef>,
}

/// Builds the plan of one namespace: `cx` is shared, `state` is what the analysis
/// learned so far, and `out`, `manifests` and `findings` are what it produces.
pub(super) struct NamespacePlanner<'c, 'p> {
    pub(super) cx: &'c PlanContext<'p>,
    pub(super) ns: &'c str,
    pub(super) state: NsState<'p>,
    pub(super) out: NsWork,
    pub(super) manifests: Manifests,
    pub(super) findings: Vec<Finding>,
}

/// One namespace's part of the plan, before the parts are put together.
pub(super) struct NamespaceAnalysis {
    pub(super) work: NsWork,
    /// Generated objects, with indexes local to this namespace.
    pub(super) manifests: Vec<Manifest>,
    pub(super) findings: Vec<Finding>,
}

impl<'c, 'p> NamespacePlanner<'c, 'p> {
    pub(super) fn new(cx: &'c PlanContext<'p>, ns: &'c str) -> Self {
        let ns_obj = cx.model.namespace(ns);
        let waypoint = planned_waypoint(cx, ns);
        Self {
            cx,
            ns,
            state: NsState {
                injection: namespace_injection(ns_obj),
                already_ambient: false,
                injected: Vec::new(),
                policies: Vec::new(),
                dry_runs: Vec::new(),
                extra_copies: Vec::new(),
                owned: Vec::new(),
                served: BTreeSet::new(),
                routes: Vec::new(),
                swapped: BTreeSet::new(),
            },
            out: NsWork::new(ns, ns_obj.is_some(), waypoint),
            manifests: Manifests::new(cx.migration),
            findings: Vec::new(),
        }
    }

    /// Findings, steps and actions of the namespace.
    pub(super) fn run(mut self) -> NamespaceAnalysis {
        let ns_ref = ObjectRef::namespace(self.ns);
        for check in Step::Prerequisites.checks() {
            self.out.act(
                Step::Prerequisites,
                Action::new(Op::Verify, ns_ref.clone(), check.as_str()),
            );
        }
        if self.out.exists {
            self.analyze();
            self.decide_waypoint();
            self.plan_steps();
        } else {
            let detail = format!("namespace {}", self.ns);
            self.finding(f::NAMESPACE_NOT_FOUND, ns_ref, detail);
        }
        NamespaceAnalysis {
            work: self.out,
            manifests: self.manifests.items,
            findings: self.findings,
        }
    }

    pub(super) fn finding(
        &mut self,
        kind: f::FindingKind,
        object: ObjectRef,
        detail: impl AsRef<str>,
    ) {
        self.findings.push(Finding::new(kind, object, detail));
    }
}
