//! The waypoint decision of a namespace: whether it gets one, which traffic it is for,
//! and which Services it serves.

use super::*;

/// `istio.io/waypoint-for`: the traffic a waypoint handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WaypointFor {
    Service,
    Workload,
    All,
}

impl WaypointFor {
    fn as_str(self) -> &'static str {
        match self {
            WaypointFor::Service => "service",
            WaypointFor::Workload => "workload",
            WaypointFor::All => "all",
        }
    }
}

/// The waypoint the spec names, before the analysis decides whether it is needed.
pub(super) fn planned_waypoint(cx: &PlanContext<'_>, ns: &str) -> WaypointPlan {
    let name = cx.spec.waypoint.name.clone();
    WaypointPlan {
        needed: false,
        principal: format!("{}/ns/{ns}/sa/{name}", cx.trust_domain()),
        name,
        for_: WaypointFor::Service.as_str().into(),
        exists: false,
    }
}

impl NamespacePlanner<'_, '_> {
    pub(super) fn decide_waypoint(&mut self) {
        self.apply_waypoint_policy();
        self.adopt_existing_waypoint();
        self.out.waypoint.for_ = self.waypoint_for().as_str().into();
        self.mark_served_services();
    }

    fn apply_waypoint_policy(&mut self) {
        let any_need = self.out.services.values().any(|s| s.needs_waypoint);
        match self.cx.spec.waypoint.policy {
            WaypointPolicy::Never => {
                if any_need {
                    let needing: Vec<&str> = self
                        .out
                        .services
                        .values()
                        .filter(|s| s.needs_waypoint)
                        .map(|s| s.name.as_str())
                        .collect();
                    let detail = format!("Services needing one: {}", needing.join(", "));
                    self.finding(f::WAYPOINT_DISABLED, ObjectRef::namespace(self.ns), detail);
                }
            }
            WaypointPolicy::Always => self.out.waypoint.needed = true,
            WaypointPolicy::Auto => self.out.waypoint.needed = any_need,
        }
    }

    /// A waypoint already in the namespace is the one it uses (unless waypoints are off).
    fn adopt_existing_waypoint(&mut self) {
        let Some(g) = self.cx.index.waypoints.get(self.ns).copied() else {
            return;
        };
        let name = g.metadata.name.clone().unwrap_or_default();
        self.finding(
            f::WAYPOINT_EXISTS,
            ObjectRef::from_meta("Gateway", &g.metadata),
            "",
        );
        let sa = g
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(n::GATEWAY_SERVICE_ACCOUNT))
            .cloned()
            .unwrap_or_else(|| name.clone());
        let wp = &mut self.out.waypoint;
        wp.exists = true;
        wp.name = name;
        wp.principal = format!("{}/ns/{}/sa/{sa}", self.cx.trust_domain(), self.ns);
        if self.cx.spec.waypoint.policy != WaypointPolicy::Never {
            wp.needed = true;
        }
    }

    /// Headless Services and StatefulSets need workload-addressed traffic.
    fn waypoint_for(&mut self) -> WaypointFor {
        let model = self.cx.model;
        let mut for_workload = false;
        let mut for_service = false;
        for svc in model.services_in(self.ns) {
            let needs = self
                .out
                .services
                .get(svc_name(svc))
                .is_some_and(|s| s.needs_waypoint);
            if !needs {
                continue;
            }
            let wls = model.service_workloads(svc);
            if is_headless(svc) || wls.iter().any(|wl| wl.pod_addressed()) {
                for_workload = true;
                let sref = ObjectRef::from_meta("Service", &svc.metadata);
                self.finding(f::WAYPOINT_FOR_WORKLOAD, sref, "");
            }
            if !is_headless(svc) {
                for_service = true;
            }
        }
        match (for_service, for_workload) {
            (true, true) => WaypointFor::All,
            (false, true) => WaypointFor::Workload,
            _ => WaypointFor::Service,
        }
    }

    /// Every Service but those labelled `istio.io/use-waypoint: none`.
    fn mark_served_services(&mut self) {
        if !self.out.waypoint.needed {
            return;
        }
        for svc in self.cx.model.services_in(self.ns) {
            let opt_out = svc
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(n::USE_WAYPOINT))
                .is_some_and(|v| v == "none");
            if !opt_out {
                self.state.served.insert(svc_name(svc).to_string());
                if let Some(sp) = self.out.services.get_mut(svc_name(svc)) {
                    sp.served_by_waypoint = true;
                }
            }
        }
    }
}
