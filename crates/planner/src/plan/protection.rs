//! Which policies move, their waypoint copies, and bypass protection.

use super::*;

/// Ingress gateway principals (Istio gateway deployments).
pub(super) fn ingress_principals(model: &Model<'_>, td: &str) -> Vec<String> {
    let mut out: Vec<String> = model
        .workloads
        .values()
        .flatten()
        .filter(|w| {
            w.pod_labels
                .get("istio")
                .is_some_and(|v| v.contains("ingressgateway"))
                || w.pod_labels
                    .contains_key("gateway.networking.k8s.io/gateway-name")
                    && w.pod_labels
                        .get("gateway.istio.io/managed")
                        .is_some_and(|v| v != "istio.io-mesh-controller")
        })
        .map(|w| w.principal(td))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Caller identities an ALLOW policy admits, when they can be listed.
#[derive(Default, Clone, Debug)]
pub(super) struct Callers {
    pub(super) principals: BTreeSet<String>,
    pub(super) namespaces: BTreeSet<String>,
    /// Some rule admits callers that cannot be listed (no source constraint, negative
    /// forms, IP blocks).
    pub(super) any: bool,
    /// Every rule is a single positive principals-or-namespaces source, nothing else:
    /// bypass protection reproduces it exactly.
    pub(super) exact: bool,
}

pub(super) fn allow_callers(
    p: &AuthorizationPolicy,
    class: &PolicyClass,
    td: &str,
    policy_ns: &str,
) -> Callers {
    let mut c = Callers {
        exact: true,
        ..Default::default()
    };
    let rules = p.spec.rules.as_deref().unwrap_or_default();
    if rules.is_empty() {
        // An ALLOW policy without rules admits nobody.
        return c;
    }
    for (rule, rc) in rules.iter().zip(&class.rules) {
        let froms = rule.from.as_deref().unwrap_or_default();
        let simple = froms.len() == 1
            && rule.to.is_none()
            && rule.when.is_none()
            && rc.identity_only()
            && froms[0].source.as_ref().is_some_and(|s| {
                (s.principals.is_some() as u8 + s.namespaces.is_some() as u8) == 1
                    && s.not_principals.is_none()
                    && s.not_namespaces.is_none()
                    && s.service_accounts.is_none()
                    && s.not_service_accounts.is_none()
            });
        if !simple {
            c.exact = false;
        }
        if froms.is_empty() {
            c.any = true;
            continue;
        }
        for from in froms {
            let Some(s) = &from.source else {
                c.any = true;
                continue;
            };
            let mut listed = false;
            for pr in s.principals.iter().flatten() {
                if pr.contains('*') {
                    c.any = true;
                } else {
                    c.principals.insert(pr.clone());
                }
                listed = true;
            }
            for ns in s.namespaces.iter().flatten() {
                if ns.contains('*') {
                    c.any = true;
                } else {
                    c.namespaces.insert(ns.clone());
                }
                listed = true;
            }
            for sa in s.service_accounts.iter().flatten() {
                let principal = match sa.split_once('/') {
                    Some((ns, sa)) => format!("{td}/ns/{ns}/sa/{sa}"),
                    None => format!("{td}/ns/{policy_ns}/sa/{sa}"),
                };
                c.principals.insert(principal);
                listed = true;
            }
            if !listed {
                c.any = true;
            }
        }
    }
    c
}

/// The waypoint-targeted copy of a selector policy for Service `svc`. A dry-run policy's
/// copy is dry-run too.
pub(super) fn waypoint_copy(p: &AuthorizationPolicy, svc: &str, ns: &str) -> Value {
    let mut spec_v = serde_json::to_value(&p.spec).unwrap_or(Value::Null);
    if let Some(m) = spec_v.as_object_mut() {
        m.remove("selector");
        m.remove("targetRef");
        m.insert(
            "targetRefs".into(),
            serde_json::to_value(vec![PolicyTargetReference::service(svc)]).unwrap_or(Value::Null),
        );
    }
    let name = dns_subdomain(&[
        p.metadata.name.as_deref().unwrap_or_default(),
        svc,
        "waypoint",
    ]);
    let mut metadata = json!({"name": name, "namespace": ns});
    if let Some(v) = p
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(n::DRY_RUN))
    {
        metadata["annotations"] = json!({ n::DRY_RUN: v });
    }
    json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": metadata,
        "spec": spec_v,
    })
}

/// Step 5 creates the waypoint copy of policy `p` for Service `svc`.
pub(super) fn add_waypoint_copy(
    manifests: &mut Manifests,
    w: &mut NsWork,
    p: &AuthorizationPolicy,
    svc: &str,
    ns: &str,
    what: &str,
) {
    let pref = ObjectRef::from_meta("AuthorizationPolicy", &p.metadata);
    let (mi, obj) = manifests.add(
        Step::Policies,
        "policy-copy",
        Some(&pref),
        waypoint_copy(p, svc, ns),
    );
    w.act(
        Step::Policies,
        Action {
            manifest: Some(mi),
            ..Action::new(
                Op::Create,
                obj,
                format!("{what} of {pref} for Service {svc}"),
            )
        },
    );
}

/// Dry-run policies: a dry-run copy on the waypoint of every served Service whose workloads
/// they select (so what they would decide stays observable), nothing enforcing, and, where
/// this Istio's ztunnel enforces dry-run policies (1.24), the window that opens.
#[allow(clippy::too_many_arguments)]
pub(super) fn dry_run_copies(
    model: &Model<'_>,
    ns: &str,
    served: &BTreeSet<String>,
    dry_runs: &[(&AuthorizationPolicy, PolicyClass)],
    injected: &[&Workload<'_>],
    manifests: &mut Manifests,
    w: &mut NsWork,
    findings: &mut Vec<Finding>,
) {
    for (p, c) in dry_runs {
        let pref = ObjectRef::from_meta("AuthorizationPolicy", &p.metadata);
        let svcs: BTreeSet<String> = model
            .selected_workloads(ns, policy_selector(p))
            .iter()
            .filter(|wl| {
                injected
                    .iter()
                    .any(|i| i.name == wl.name && i.kind == wl.kind)
            })
            .flat_map(|wl| model.workload_services(wl))
            .map(|s| svc_name(s).to_string())
            .collect();
        let copied: Vec<&String> = svcs.iter().filter(|s| served.contains(*s)).collect();
        for s in &copied {
            add_waypoint_copy(manifests, w, p, s, ns, "dry-run waypoint copy");
        }
        findings.push(Finding::new(
            f::AUTHZ_DRY_RUN,
            pref.clone(),
            if copied.is_empty() {
                "no waypoint serves its Services: left as it is".to_string()
            } else {
                format!("copied as dry-run for {}", abbreviated_list(copied, 10))
            },
        ));
        if c.has_effect(authz::ZtunnelEffect::DryRunEnforced) {
            dry_run_enforced(&pref, &svcs, w, findings);
        }
    }
}

/// Istio 1.24's ztunnel enforces dry-run policies: once a workload runs without a sidecar,
/// its dry-run policies decide (fail-closed where they deny, or where an ALLOW excludes).
pub(super) fn dry_run_enforced(
    pref: &ObjectRef,
    svcs: &BTreeSet<String>,
    w: &mut NsWork,
    findings: &mut Vec<Finding>,
) {
    findings.push(Finding::new(f::AUTHZ_DRY_RUN_ENFORCED, pref.clone(), ""));
    for s in svcs {
        let reason = "Istio 1.24's ztunnel enforces this dry-run policy: once its workloads run without sidecars it refuses what the sidecar only logged".to_string();
        findings.push(Finding::new(
            f::ENFORCEMENT_FAIL_CLOSED,
            pref.clone(),
            format!("Service {s}, step 9: {reason}"),
        ));
        w.enforcement.push(Enforcement {
            service: s.clone(),
            policy: pref.clone(),
            moves_to_waypoint: false,
            by_step: Step::ALL
                .into_iter()
                .map(|k| StepEnforcement {
                    step: k,
                    enforced_by: if k < Step::SidecarRemoval {
                        vec![]
                    } else {
                        vec![Enforcer::Ztunnel]
                    },
                })
                .collect(),
            windows: vec![Window {
                from_step: Step::SidecarRemoval,
                to_step: Step::SidecarRemoval,
                kind: WindowKind::FailClosed,
                reason,
            }],
        });
    }
}

/// The workloads of Service `svc` a policy's selector leaves out, when there are any: its
/// waypoint copy (targetRefs the Service) and the Service's bypass protection would apply
/// to them too.
pub(super) fn partially_selected(
    model: &Model<'_>,
    ns: &str,
    svc: &str,
    p: &AuthorizationPolicy,
) -> Option<String> {
    let sel = policy_selector(p)?;
    let service = model.service(ns, svc)?;
    let missed: Vec<String> = model
        .service_workloads(service)
        .into_iter()
        .filter(|wl| !selector_matches(sel, wl.pod_labels))
        .map(|wl| format!("{} {}", wl.kind.as_str(), wl.name))
        .collect();
    (!missed.is_empty()).then(|| abbreviated_list(&missed, 5))
}

/// Gateway VirtualServices that route to Service `svc` of `ns`, which gets
/// `istio.io/ingress-use-waypoint`: istiod then gives the gateway's every cluster of the
/// Service, subset clusters included, the waypoint's endpoints (`findServiceWaypoint` in its
/// endpoint builder), and the waypoint's HTTPRoute for the Service picks the backend. A
/// subset the gateway route chose no longer applies (blocker); without one, ingress traffic
/// now follows the mesh route (warning).
pub(super) fn gateway_routes_through_waypoint(
    inv: &Inventory,
    ns: &str,
    svc: &str,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for vs in inv
        .virtual_services
        .iter()
        .filter(|v| routes::has_gateways(v))
    {
        let vs_ns = vs.metadata.namespace.as_deref().unwrap_or_default();
        let dests = vs
            .spec
            .http
            .iter()
            .flatten()
            .flat_map(|r| r.route.iter().flatten())
            .map(|d| &d.destination)
            .filter(|d| resolve_host(&d.host, vs_ns) == HostTarget::Service(ns.into(), svc.into()));
        let subsets: BTreeSet<&str> = dests.clone().filter_map(|d| d.subset.as_deref()).collect();
        if dests.count() == 0 {
            continue;
        }
        let vref = ObjectRef::from_meta("VirtualService", &vs.metadata);
        out.push(if subsets.is_empty() {
            Finding::new(
                f::VS_GATEWAY_THROUGH_WAYPOINT,
                vref,
                format!("ingress traffic it sends to {ns}/{svc} goes through the waypoint from step 7, where {svc}'s HTTPRoute (if any) decides the backend"),
            )
        } else {
            Finding::new(
                f::VS_GATEWAY_SUBSET_THROUGH_WAYPOINT,
                vref,
                format!(
                    "its routes to subsets {} of {ns}/{svc} go through the waypoint from step 7, where {svc}'s HTTPRoute decides the backend instead",
                    subsets.into_iter().collect::<Vec<_>>().join(", ")
                ),
            )
        });
    }
    out
}

/// The namespaces whose sidecar callers bypass protection admits: those the ALLOW policies
/// name (alone or in principals), and, when the callers cannot be listed, every namespace
/// of the migration.
pub(super) fn admitted_namespaces(
    callers: &Callers,
    targets: &BTreeSet<String>,
) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = callers.namespaces.clone();
    out.extend(
        callers
            .principals
            .iter()
            .filter_map(|p| principal_namespace(p))
            .map(str::to_string),
    );
    if callers.any {
        out.extend(targets.iter().cloned());
    }
    out
}

/// The moved DENY policies of Service `s` that apply to every workload it selects (only
/// those may narrow its bypass protection).
pub(super) fn svc_denies<'p>(
    moved: &BTreeMap<usize, BTreeSet<String>>,
    policies: &[(&'p AuthorizationPolicy, PolicyClass)],
    s: &str,
    selected: &[&Workload<'_>],
) -> Vec<&'p AuthorizationPolicy> {
    moved
        .iter()
        .filter(|(_, svcs)| svcs.contains(s))
        .map(|(i, _)| &policies[*i])
        .filter(|(_, c)| c.action == AuthzAction::Deny && !c.dry_run)
        .filter(|(p, _)| {
            !selected.is_empty()
                && selected.iter().all(|wl| {
                    policy_selector(p).is_none_or(|sel| selector_matches(sel, wl.pod_labels))
                })
        })
        .map(|(p, _)| *p)
        .collect()
}

/// The admitted namespaces one of `denies` refuses every request from.
pub(super) fn refused_namespaces(
    admitted: &BTreeSet<String>,
    denies: Vec<&AuthorizationPolicy>,
    sem: &authz::ZtunnelSemantics,
) -> BTreeSet<String> {
    if denies.is_empty() {
        return BTreeSet::new();
    }
    admitted
        .iter()
        .filter(|n| {
            denies
                .iter()
                .any(|p| authz::matches_every_peer_in(p, sem, n))
        })
        .cloned()
        .collect()
}

/// A moved DENY protects nobody from callers that skip the waypoint: sidecar callers
/// outside the migration that bypass protection admits reach the workloads through ztunnel
/// alone, once the original is gone (and before that ztunnel enforces only what istiod
/// converts of it). Fail-open for those it could deny, until they migrate.
pub(super) fn deny_outside_windows(
    p: &AuthorizationPolicy,
    sem: &authz::ZtunnelSemantics,
    admitted: &BTreeSet<String>,
    targets: &BTreeSet<String>,
) -> Vec<Window> {
    let outside: Vec<&str> = admitted
        .iter()
        .filter(|n| !targets.contains(*n))
        .filter(|n| authz::may_match_peer_in(p, sem, n))
        .map(String::as_str)
        .collect();
    if outside.is_empty() {
        return Vec::new();
    }
    vec![Window {
        from_step: Step::SidecarRemoval,
        to_step: Step::SidecarRemoval,
        kind: WindowKind::FailOpen,
        reason: format!(
            "sidecar callers from {} (outside this migration) are admitted by bypass protection and skip the waypoint copy of this DENY until they migrate",
            outside.join(", ")
        ),
    }]
}

/// During the step-9 rollout, sidecar callers still running reach the new pods directly,
/// where ztunnel enforces the original only as istiod converts it: where that admits what
/// the policy denied (a DENY that never fires, or an ALLOW whose trust-domain conditions
/// are dropped), it is fail-open for the callers it concerns. Those are the namespace's own
/// sidecar callers, and with unordered step 9 the other namespaces' admitted ones too.
pub(super) fn rollout_fail_open(
    p: &AuthorizationPolicy,
    c: &PolicyClass,
    sem: &authz::ZtunnelSemantics,
    ns: &str,
    admitted: &BTreeSet<String>,
    ordering: meshmig_api::Ordering,
) -> Option<Window> {
    if !c.ztunnel_fail_open() {
        return None;
    }
    let concurrent: Vec<&str> = std::iter::once(ns)
        .chain(
            admitted
                .iter()
                .map(String::as_str)
                .filter(|_| ordering != meshmig_api::Ordering::Listed),
        )
        // An ALLOW that ztunnel widens concerns every caller; a DENY only those it names.
        .filter(|n| c.action != AuthzAction::Deny || authz::may_match_peer_in(p, sem, n))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if concurrent.is_empty() {
        return None;
    }
    let what = if !matches!(c.action, AuthzAction::Allow | AuthzAction::Deny) {
        "ztunnel does not enforce this policy at all (CUSTOM and AUDIT policies run only in proxies)"
    } else if c.action == AuthzAction::Deny {
        "ztunnel does not fire this DENY as written (istiod drops its L7 conditions, and a block or condition made only of them never matches)"
    } else {
        "ztunnel admits more than this policy (istiod drops its trust-domain conditions)"
    };
    Some(Window {
        from_step: Step::SidecarRemoval,
        to_step: Step::SidecarRemoval,
        kind: WindowKind::FailOpen,
        reason: format!(
            "during the step-9 rollout, sidecar callers in {} reach the new pods directly, and {what} until it is removed",
            concurrent.join(", ")
        ),
    })
}

/// Whether a DENY policy's source conditions could match traffic that arrives from the
/// waypoint (negative identity forms that do not exclude it, or IP conditions).
pub(super) fn deny_matches_waypoint(
    p: &AuthorizationPolicy,
    waypoint_principal: &str,
    waypoint_ns: &str,
) -> bool {
    p.spec.rules.iter().flatten().any(|r| {
        r.from
            .iter()
            .flatten()
            .filter_map(|f| f.source.as_ref())
            .any(|s| {
                let excludes_principal = s
                    .not_principals
                    .as_ref()
                    .is_some_and(|l| l.iter().any(|x| x == waypoint_principal || x == "*"));
                let excludes_ns = s
                    .not_namespaces
                    .as_ref()
                    .is_some_and(|l| l.iter().any(|x| x == waypoint_ns || x == "*"));
                (s.not_principals.is_some() && !excludes_principal)
                    || (s.not_namespaces.is_some() && !excludes_ns)
                    || s.not_service_accounts.is_some()
                    || s.ip_blocks.is_some()
                    || s.not_ip_blocks.is_some()
            })
            || r.when.iter().flatten().any(|c| {
                c.key == "source.ip"
                    || (c.not_values.is_some()
                        && matches!(c.key.as_str(), "source.principal" | "source.namespace"))
            })
    })
}

/// Namespace of a principal `<td>/ns/<ns>/sa/<sa>`.
pub(super) fn principal_namespace(p: &str) -> Option<&str> {
    let mut it = p.split('/');
    while let Some(part) = it.next() {
        if part == "ns" {
            return it.next();
        }
    }
    None
}

pub(super) fn add_per_version(
    model: &Model<'_>,
    pv: &routes::PerVersion,
    manifests: &mut Manifests,
    w: &mut NsWork,
    findings: &mut Vec<Finding>,
) {
    let Some(parent) = model.service(&pv.namespace, &pv.service) else {
        return;
    };
    if let Some(existing) = model.service(&pv.namespace, &pv.name) {
        let managed = existing
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(mn::LABEL_MANAGED_BY))
            .is_some_and(|v| v == mn::MANAGED_BY);
        if !managed {
            findings.push(Finding::new(
                f::PER_VERSION_SERVICE_CONFLICT,
                ObjectRef::from_meta("Service", &existing.metadata),
                format!("needed for subset {} of {}", pv.subset, pv.service),
            ));
            return;
        }
    }
    let mut selector = service_selector(parent).cloned().unwrap_or_default();
    selector.extend(pv.labels.clone());
    let ports: Vec<ServicePort> = parent
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|p| ServicePort {
            name: p.name,
            port: p.port,
            target_port: p.target_port,
            protocol: p.protocol,
            app_protocol: p.app_protocol,
            node_port: None,
        })
        .collect();
    let svc = Service {
        metadata: ObjectMeta {
            name: Some(pv.name.clone()),
            namespace: Some(pv.namespace.clone()),
            labels: parent.metadata.labels.clone().map(|mut l| {
                l.remove(n::USE_WAYPOINT);
                l
            }),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(ports),
            ..Default::default()
        }),
        status: None,
    };
    let mut v = serde_json::to_value(&svc).unwrap_or(Value::Null);
    if let Some(m) = v.as_object_mut() {
        m.insert("apiVersion".into(), "v1".into());
        m.insert("kind".into(), "Service".into());
    }
    let (i, obj) = manifests.add(
        Step::Policies,
        "per-version-service",
        Some(&pv.destination_rule),
        v,
    );
    w.act(
        Step::Policies,
        Action {
            manifest: Some(i),
            ..Action::new(
                Op::Create,
                obj,
                format!(
                    "subset {} of {} ({})",
                    pv.subset, pv.service, pv.destination_rule
                ),
            )
        },
    );
    if let Some(tp) = &pv.traffic_policy {
        let dr = DestinationRule::new(
            &pv.name,
            DestinationRuleSpec {
                host: format!("{}.{}.svc.cluster.local", pv.name, pv.namespace),
                traffic_policy: Some(tp.clone()),
                ..Default::default()
            },
        );
        let mut v = serde_json::to_value(&dr).unwrap_or(Value::Null);
        if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("namespace".into(), pv.namespace.clone().into());
        }
        let (i, obj) = manifests.add(
            Step::Policies,
            "destination-rule",
            Some(&pv.destination_rule),
            v,
        );
        w.act(
            Step::Policies,
            Action {
                manifest: Some(i),
                ..Action::new(
                    Op::Create,
                    obj,
                    format!("traffic policy of subset {}", pv.subset),
                )
            },
        );
    }
}

/// `a, b, c` for up to `max` items; else the first `max` and how many more there are.
pub(super) fn abbreviated_list<'s>(
    items: impl IntoIterator<Item = &'s String>,
    max: usize,
) -> String {
    let mut shown = Vec::new();
    let mut more = 0usize;
    for i in items {
        if shown.len() < max {
            shown.push(i.as_str());
        } else {
            more += 1;
        }
    }
    let mut out = shown.join(", ");
    if more > 0 {
        out.push_str(&format!(
            " and {more} more, listed in the policy's notNamespaces"
        ));
    }
    out
}

/// The union of two sorted sets as a sorted JSON array of strings.
pub(super) fn sorted_union(a: &BTreeSet<String>, b: &BTreeSet<String>) -> Vec<Value> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.iter().peekable(), b.iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => match x.cmp(y) {
                std::cmp::Ordering::Less => a.next(),
                std::cmp::Ordering::Greater => b.next(),
                std::cmp::Ordering::Equal => {
                    b.next();
                    a.next()
                }
            },
            (Some(_), None) => a.next(),
            (None, _) => b.next(),
        };
        match next {
            Some(s) => out.push(Value::from(s.as_str())),
            None => return out,
        }
    }
}

/// Copies of selector policies for the waypoint, bypass protection, deletions of originals
/// and the enforcement timeline of one namespace.
#[allow(clippy::too_many_arguments)]
pub(super) fn policy_migration(
    model: &Model<'_>,
    index: &Index<'_>,
    spec: &MeshMigrationSpec,
    facts: &ControlPlaneFacts,
    ns: &str,
    waypoint_principal: &str,
    served: &BTreeSet<String>,
    policies: &[(&AuthorizationPolicy, PolicyClass)],
    injected: &[&Workload<'_>],
    targets: &BTreeSet<String>,
    ingress: &[String],
    root: &str,
    extra: &[ExtraCopy],
    manifests: &mut Manifests,
    w: &mut NsWork,
    findings: &mut Vec<Finding>,
) {
    let td = &facts.trust_domain;
    let deferred = spec.bypass_protection == Some(BypassProtection::Deferred);
    // Policies that apply to each injected workload (namespace-wide or selecting it).
    let applies = |p: &AuthorizationPolicy, wl: &Workload<'_>| {
        policy_selector(p).is_none_or(|s| selector_matches(s, wl.pod_labels))
    };
    let root_policies: &[&AuthorizationPolicy] = if root != ns {
        index.policies_in(root)
    } else {
        &[]
    };
    let mesh_wide_allow = |wl: &Workload<'_>| {
        root_policies.iter().any(|p| {
            authz::Action::parse(p.spec.action.as_deref()) == AuthzAction::Allow
                && policy_selector(p).is_none_or(|s| selector_matches(s, wl.pod_labels))
        })
    };

    // policy index -> services it is copied for
    let mut moved: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    // service -> workload names with moved policies
    let mut guarded: BTreeMap<String, Vec<&Workload<'_>>> = BTreeMap::new();
    for wl in injected {
        let svcs: Vec<String> = model
            .workload_services(wl)
            .iter()
            .map(|s| svc_name(s).to_string())
            .filter(|s| served.contains(s))
            .collect();
        if svcs.is_empty() {
            continue;
        }
        let on_wl: Vec<usize> = policies
            .iter()
            .enumerate()
            .filter(|(_, (p, c))| !c.targeted && applies(p, wl))
            .map(|(i, _)| i)
            .collect();
        let mut moving: BTreeSet<usize> = on_wl
            .iter()
            .copied()
            .filter(|i| {
                let c = &policies[*i].1;
                c.needs_waypoint() || c.source_dependent()
            })
            .collect();
        // ALLOW policies form a union: copying some but not all would deny at the
        // waypoint what the rest allowed.
        if moving
            .iter()
            .any(|i| policies[*i].1.action == AuthzAction::Allow)
        {
            moving.extend(
                on_wl
                    .iter()
                    .copied()
                    .filter(|i| policies[*i].1.action == AuthzAction::Allow),
            );
        }
        for i in &moving {
            let c = &policies[*i].1;
            let pref = ObjectRef::from_meta("AuthorizationPolicy", &policies[*i].0.metadata);
            if !c.needs_waypoint() && c.source_dependent() {
                findings.push(Finding::new(
                    f::AUTHZ_IDENTITY_THROUGH_WAYPOINT,
                    pref.clone(),
                    "",
                ));
            }
            for s in &svcs {
                if let Some(missed) = partially_selected(model, ns, s, policies[*i].0) {
                    findings.push(Finding::new(
                        f::AUTHZ_PARTIAL_SELECTOR,
                        pref.clone(),
                        format!("selects only some of Service {s}'s workloads: not {missed}"),
                    ));
                }
            }
            for s in &svcs {
                moved.entry(*i).or_default().insert(s.clone());
            }
        }
        if !moving.is_empty() {
            for s in &svcs {
                guarded.entry(s.clone()).or_default().push(wl);
            }
        }
    }

    // ---- copies (step 5)
    for (i, svcs) in &moved {
        let (p, _) = &policies[*i];
        for s in svcs {
            add_waypoint_copy(manifests, w, p, s, ns, "waypoint copy");
        }
    }
    for (oref, value, sel, _) in extra {
        let kind = oref.kind.as_str();
        let wls = model.selected_workloads(ns, sel.as_ref());
        let mut svcs: BTreeSet<String> = BTreeSet::new();
        for wl in wls {
            if injected.iter().any(|i| i.name == wl.name) {
                for s in model.workload_services(wl) {
                    if served.contains(svc_name(s)) {
                        svcs.insert(svc_name(s).to_string());
                    }
                }
            }
        }
        for s in svcs {
            let mut spec_v = value.get("spec").cloned().unwrap_or(Value::Null);
            if let Some(m) = spec_v.as_object_mut() {
                m.remove("selector");
                m.remove("targetRef");
                m.insert(
                    "targetRefs".into(),
                    serde_json::to_value(vec![PolicyTargetReference::service(&s)])
                        .unwrap_or(Value::Null),
                );
            }
            let api_version = match kind {
                "RequestAuthentication" => {
                    format!(
                        "{}/{}",
                        RequestAuthentication::GROUP,
                        RequestAuthentication::VERSION
                    )
                }
                "Telemetry" => format!("{}/{}", Telemetry::GROUP, Telemetry::VERSION),
                _ => format!("{}/{}", WasmPlugin::GROUP, WasmPlugin::VERSION),
            };
            let v = json!({
                "apiVersion": api_version,
                "kind": kind,
                "metadata": {"name": dns_subdomain(&[&oref.name, &s, "waypoint"]), "namespace": ns},
                "spec": spec_v,
            });
            let (mi, obj) = manifests.add(Step::Policies, "policy-copy", Some(oref), v);
            w.act(
                Step::Policies,
                Action {
                    manifest: Some(mi),
                    ..Action::new(
                        Op::Create,
                        obj,
                        format!("waypoint copy of {oref} for Service {s}"),
                    )
                },
            );
        }
    }

    // ---- bypass protection, per guarded Service
    let mut enumerable_by_svc: BTreeMap<String, bool> = BTreeMap::new();
    let mut unknown_callers_by_svc: BTreeMap<String, bool> = BTreeMap::new();
    for (s, wls) in &guarded {
        let Some(svc) = model.service(ns, s) else {
            continue;
        };
        let Some(selector) = service_selector(svc).cloned() else {
            continue;
        };
        let mut callers = Callers::default();
        let mut exact_all = true;
        let mut has_allow = false;
        for wl in wls {
            let allows: Vec<&(&AuthorizationPolicy, PolicyClass)> = policies
                .iter()
                .filter(|(p, c)| !c.targeted && c.action == AuthzAction::Allow && applies(p, wl))
                .collect();
            if allows.is_empty() {
                // No ALLOW policy: every source is admitted.
                callers.any = true;
                exact_all = false;
            }
            for (p, c) in allows {
                has_allow = true;
                let cs = allow_callers(p, c, td, ns);
                callers.principals.extend(cs.principals);
                callers.namespaces.extend(cs.namespaces);
                callers.any |= cs.any;
                exact_all &= cs.exact;
            }
            if mesh_wide_allow(wl) {
                has_allow = true;
            }
        }
        // Namespaces a moved DENY refuses outright are not admitted: letting their sidecar
        // callers past would skip the DENY's waypoint copy (and denying them is exact).
        let refused = refused_namespaces(
            &admitted_namespaces(&callers, targets),
            svc_denies(
                &moved,
                policies,
                s,
                &model.selected_workloads(ns, Some(&selector)),
            ),
            &index.sem,
        );
        // The callers as the sidecar matched them (cluster.local and aliases read as the
        // trust domain): ztunnel compares the generated principals exactly.
        let mut principals: BTreeSet<String> = callers
            .principals
            .iter()
            .filter(|p| principal_namespace(p).is_none_or(|n| !refused.contains(n)))
            .flat_map(|p| authz::sidecar_principals(p, td, &facts.trust_domain_aliases))
            .collect();
        principals.insert(waypoint_principal.to_string());
        principals.extend(ingress.iter().cloned());
        // Sorted and without duplicates (the JSON array of a BTreeSet), built straight as
        // JSON: with callers that cannot be listed it names every namespace of the
        // migration, once per guarded Service, so intermediate copies of it are costly.
        let namespaces: Vec<Value> = if callers.any {
            // Transitional sidecar callers inside the migration are known even when the
            // policies cannot list them.
            sorted_union(&callers.namespaces, targets)
        } else {
            callers
                .namespaces
                .iter()
                .map(|n| Value::from(n.as_str()))
                .collect()
        }
        .into_iter()
        .filter(|n| n.as_str().is_none_or(|n| !refused.contains(n)))
        .collect();
        if callers.any {
            findings.push(Finding::new(
                f::BYPASS_CALLERS_UNENUMERABLE,
                ObjectRef::new("Service", Some(ns), s),
                format!(
                    "bypass protection admits the waypoint, ingress gateways and the migration's namespaces ({}) only{}",
                    index.targets_joined,
                    if refused.is_empty() {
                        String::new()
                    } else {
                        format!(
                            ", less those a DENY refuses outright ({})",
                            abbreviated_list(&refused, 10)
                        )
                    }
                ),
            ));
        }
        let mut admits = admitted_namespaces(&callers, targets);
        admits.retain(|n| !refused.contains(n));
        w.bypass_admits.insert(s.clone(), admits);
        enumerable_by_svc.insert(s.clone(), !callers.any && exact_all);
        unknown_callers_by_svc.insert(s.clone(), callers.any);
        let mut source = serde_json::Map::new();
        source.insert("notPrincipals".into(), json!(principals));
        if !namespaces.is_empty() {
            source.insert("notNamespaces".into(), Value::Array(namespaces));
        }
        let deny = json!({
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": dns_subdomain(&["meshmig-bypass", s]), "namespace": ns},
            "spec": {
                "selector": {"matchLabels": selector},
                "action": "DENY",
                "rules": [{"from": [{"source": Value::Object(source)}]}],
            },
        });
        let src = ObjectRef::new("Service", Some(ns), s);
        let defer_this = deferred && callers.any;
        let (step, op, detail) = if defer_this {
            (
                Step::SidecarRemoval,
                Op::Prepare,
                "bypass protection, prepared only (bypassProtection: Deferred): apply it once every sidecar caller has migrated",
            )
        } else {
            (
                Step::Policies,
                Op::Create,
                "bypass protection: only the waypoint and known transitional callers may reach these workloads directly",
            )
        };
        let (mi, obj) = manifests.add(step, "bypass-protection", Some(&src), deny);
        w.act(
            step,
            Action {
                manifest: Some(mi),
                after_rollout: step == Step::SidecarRemoval,
                ..Action::new(op, obj, detail)
            },
        );
        if has_allow {
            let allow = json!({
                "apiVersion": "security.istio.io/v1",
                "kind": "AuthorizationPolicy",
                "metadata": {"name": dns_subdomain(&["meshmig-allow-waypoint", s]), "namespace": ns},
                "spec": {
                    "selector": {"matchLabels": selector},
                    "action": "ALLOW",
                    "rules": [{"from": [{"source": {"principals": [waypoint_principal]}}]}],
                },
            });
            let (mi, obj) = manifests.add(Step::Policies, "bypass-protection", Some(&src), allow);
            w.act(Step::Policies, Action {
                manifest: Some(mi),
                ..Action::new(Op::Create, obj, "admit the waypoint, which enforces the copies, past the remaining ALLOW policies")
            });
        }
        if let Some(sp) = w.services.get_mut(s) {
            sp.bypass_protection = true;
        }
    }

    // ---- deletions of originals and the timeline
    for (i, svcs) in &moved {
        let (p, c) = &policies[*i];
        let pref = ObjectRef::from_meta("AuthorizationPolicy", &p.metadata);
        let exact_everywhere = svcs
            .iter()
            .all(|s| enumerable_by_svc.get(s).copied().unwrap_or(false));
        let identity_only_allow = c.action == AuthzAction::Allow
            && !c.needs_waypoint()
            && allow_callers(p, c, td, ns).exact;
        let delete_step: Step = if identity_only_allow && exact_everywhere && !deferred {
            Step::PolicySimplification
        } else {
            Step::SidecarRemoval
        };
        let detail = if delete_step == Step::PolicySimplification {
            "identity-only ALLOW reproduced exactly by bypass protection and enforced by its waypoint copies".to_string()
        } else {
            "selector original: ztunnel would drop its L7 rules or see the waypoint's identity; its waypoint copies enforce it".to_string()
        };
        w.act(
            delete_step,
            Action {
                after_rollout: delete_step == Step::SidecarRemoval,
                ..Action::new(Op::Delete, pref.clone(), detail)
            },
        );
        for s in svcs {
            let mut windows = Vec::new();
            let callers = if c.action == AuthzAction::Allow {
                Some(allow_callers(p, c, td, ns))
            } else {
                None
            };
            let any_source = unknown_callers_by_svc.get(s).copied().unwrap_or(false);
            if any_source && !deferred {
                windows.push(Window {
                    from_step: Step::Policies,
                    to_step: Step::SidecarRemoval,
                    kind: WindowKind::FailClosed,
                    reason: "sidecar callers outside this migration that the policies do not name are denied by bypass protection until they migrate".into(),
                });
            }
            if any_source && deferred {
                windows.push(Window {
                    from_step: Step::SidecarRemoval,
                    to_step: Step::SidecarRemoval,
                    kind: WindowKind::FailOpen,
                    reason: "bypass protection is only prepared (Deferred): sidecar callers skip the waypoint copy until it is applied".into(),
                });
            }
            if let Some(cs) = &callers {
                let outside: BTreeSet<&str> = cs
                    .principals
                    .iter()
                    .filter_map(|p| principal_namespace(p))
                    .chain(cs.namespaces.iter().map(String::as_str))
                    .filter(|n| !targets.contains(*n))
                    .collect();
                let constrains_more_than_identity = !c.rules.iter().all(|r| r.identity_only());
                if !outside.is_empty() && constrains_more_than_identity {
                    windows.push(Window {
                        from_step: Step::SidecarRemoval,
                        to_step: Step::SidecarRemoval,
                        kind: WindowKind::FailOpen,
                        reason: format!(
                            "sidecar callers from {} (outside this migration) are admitted by bypass protection and skip the waypoint copy's other conditions until they migrate",
                            outside.into_iter().collect::<Vec<_>>().join(", ")
                        ),
                    });
                }
            }
            if c.action == AuthzAction::Allow && c.needs_waypoint() {
                windows.push(Window {
                    from_step: Step::SidecarRemoval,
                    to_step: Step::SidecarRemoval,
                    kind: WindowKind::FailClosed,
                    reason: "during the step-9 rollout, callers still running sidecars reach pods without sidecars directly, where ztunnel drops this policy's L7 rules until it is removed".into(),
                });
            }
            if c.action == AuthzAction::Deny && deny_matches_waypoint(p, waypoint_principal, ns) {
                windows.push(Window {
                    from_step: Step::WaypointActivation,
                    to_step: Step::SidecarRemoval,
                    kind: WindowKind::FailClosed,
                    reason: "traffic through the waypoint carries the waypoint's identity and IP, which this DENY's source conditions match, until the original is removed after the step-9 rollout".into(),
                });
            }
            if c.action == AuthzAction::Deny && c.ztunnel_fail_closed() {
                windows.push(Window {
                    from_step: Step::SidecarRemoval,
                    to_step: Step::SidecarRemoval,
                    kind: WindowKind::FailClosed,
                    reason: "during the step-9 rollout ztunnel enforces this DENY without its L7 conditions until it is removed".into(),
                });
            }
            let admitted = w.bypass_admits.get(s).cloned().unwrap_or_default();
            if c.action == AuthzAction::Deny {
                windows.extend(deny_outside_windows(p, &index.sem, &admitted, targets));
            }
            windows.extend(rollout_fail_open(
                p,
                c,
                &index.sem,
                ns,
                &admitted,
                spec.ordering.unwrap_or_default(),
            ));
            for win in &windows {
                let kind = if win.kind == WindowKind::FailOpen {
                    f::ENFORCEMENT_FAIL_OPEN
                } else {
                    f::ENFORCEMENT_FAIL_CLOSED
                };
                findings.push(Finding::new(
                    kind,
                    pref.clone(),
                    format!(
                        "Service {s}, steps {}-{}: {}",
                        win.from_step, win.to_step, win.reason
                    ),
                ));
            }
            let by_step = Step::ALL
                .into_iter()
                .map(|k| StepEnforcement {
                    step: k,
                    enforced_by: if k < Step::WaypointActivation {
                        vec![Enforcer::Sidecar]
                    } else if k < Step::SidecarRemoval {
                        vec![Enforcer::Sidecar, Enforcer::Waypoint]
                    } else {
                        vec![Enforcer::Waypoint]
                    },
                })
                .collect();
            w.enforcement.push(Enforcement {
                service: s.clone(),
                policy: pref.clone(),
                moves_to_waypoint: true,
                by_step,
                windows,
            });
        }
    }
    // Policies that stay with ztunnel.
    for (i, (p, c)) in policies.iter().enumerate() {
        if moved.contains_key(&i) || c.targeted {
            continue;
        }
        let pref = ObjectRef::from_meta("AuthorizationPolicy", &p.metadata);
        let mut svcs: BTreeSet<String> = BTreeSet::new();
        for wl in injected
            .iter()
            .filter(|wl| policy_selector(p).is_none_or(|s| selector_matches(s, wl.pod_labels)))
        {
            for s in model.workload_services(wl) {
                svcs.insert(svc_name(s).to_string());
            }
        }
        for s in svcs {
            let mut windows = Vec::new();
            let aliased = authz::alias_dependent_principals(
                p,
                &facts.trust_domain,
                &facts.trust_domain_aliases,
            );
            if !aliased.is_empty() {
                let (kind, id) = if c.action == AuthzAction::Deny {
                    (WindowKind::FailOpen, f::ENFORCEMENT_FAIL_OPEN)
                } else {
                    (WindowKind::FailClosed, f::ENFORCEMENT_FAIL_CLOSED)
                };
                let reason = format!(
                    "ztunnel compares principals exactly: {} no longer match the callers the sidecar matched through the trust domain {} and its aliases",
                    aliased.join(", "),
                    facts.trust_domain
                );
                findings.push(Finding::new(
                    f::AUTHZ_PRINCIPAL_ALIAS,
                    pref.clone(),
                    aliased.join(", "),
                ));
                findings.push(Finding::new(
                    id,
                    pref.clone(),
                    format!("Service {s}, step 9: {reason}"),
                ));
                windows.push(Window {
                    from_step: Step::SidecarRemoval,
                    to_step: Step::SidecarRemoval,
                    kind,
                    reason,
                });
            }
            // ztunnel enforces it from step 9 as istiod converts it (reachable with L7 parts
            // only when no waypoint serves the Service: policy Never, or the Service opted
            // out); each direction in which that differs from the sidecar is a window.
            for (differs, kind, id, what) in [
                (
                    c.ztunnel_fail_open(),
                    WindowKind::FailOpen,
                    f::ENFORCEMENT_FAIL_OPEN,
                    "admits requests the sidecar refused",
                ),
                (
                    c.ztunnel_fail_closed(),
                    WindowKind::FailClosed,
                    f::ENFORCEMENT_FAIL_CLOSED,
                    "refuses requests the sidecar admitted",
                ),
            ] {
                if !differs {
                    continue;
                }
                let win = Window {
                    from_step: Step::SidecarRemoval,
                    to_step: Step::SidecarRemoval,
                    kind,
                    reason: format!(
                        "no waypoint serves this Service, and ztunnel, enforcing the policy as istiod converts it, {what}"
                    ),
                };
                findings.push(Finding::new(
                    id,
                    pref.clone(),
                    format!("Service {s}, step 9: {}", win.reason),
                ));
                windows.push(win);
            }
            w.enforcement.push(Enforcement {
                service: s,
                policy: pref.clone(),
                moves_to_waypoint: false,
                by_step: Step::ALL
                    .into_iter()
                    .map(|k| StepEnforcement {
                        step: k,
                        enforced_by: if k < Step::SidecarRemoval {
                            vec![Enforcer::Sidecar]
                        } else {
                            vec![Enforcer::Ztunnel]
                        },
                    })
                    .collect(),
                windows,
            });
        }
    }
}
