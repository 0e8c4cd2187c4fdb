//! The order namespaces migrate in and the enforcement windows it opens.

use super::*;

/// Order of namespaces for restart steps: the spec's order, or callers before callees.
pub(super) fn namespace_order(
    spec: &MeshMigrationSpec,
    inv: &Inventory,
    targets: &[String],
    td: &str,
    sem: &authz::ZtunnelSemantics,
) -> Vec<String> {
    if spec.ordering != Some(meshmig_api::Ordering::Auto) {
        return targets.to_vec();
    }
    // Edges caller -> callee from ALLOW policies naming caller namespaces.
    let set: BTreeSet<&str> = targets.iter().map(String::as_str).collect();
    let mut callers_of: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for p in &inv.authorization_policies {
        let ns = p.metadata.namespace.as_deref().unwrap_or_default();
        if !set.contains(ns) {
            continue;
        }
        let class = authz::classify_with(p, sem);
        if class.action != AuthzAction::Allow {
            continue;
        }
        let c = allow_callers(p, &class, td, ns);
        let entry = callers_of.entry(ns).or_default();
        for pr in &c.principals {
            if let Some(cns) = principal_namespace(pr) {
                entry.insert(cns.to_string());
            }
        }
        entry.extend(c.namespaces.iter().cloned());
    }
    // Kahn's algorithm, stable by spec order; cycles fall back to spec order.
    let mut done: Vec<String> = Vec::new();
    // Membership of `done` (a scan of it made this cubic in the number of namespaces).
    let mut placed: BTreeSet<String> = BTreeSet::new();
    let mut remaining: Vec<&String> = targets.iter().collect();
    while !remaining.is_empty() {
        let pick = remaining
            .iter()
            .position(|ns| {
                // Every in-migration caller of ns (other than ns) already placed.
                callers_of.get(ns.as_str()).is_none_or(|cs| {
                    cs.iter()
                        .filter(|c| c.as_str() != ns.as_str() && set.contains(c.as_str()))
                        .all(|c| placed.contains(c))
                })
            })
            .unwrap_or(0);
        let next = remaining.remove(pick).clone();
        placed.insert(next.clone());
        done.push(next);
    }
    done
}

/// Fail-open windows created by serving a namespace before its in-migration callers.
pub(super) fn order_windows(
    works: &mut [NsWork],
    order: &[String],
    index: &Index<'_>,
    td: &str,
    findings: &mut Vec<Finding>,
) {
    let pos: HashMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    for w in works.iter_mut() {
        let my = pos.get(w.name.as_str()).copied().unwrap_or(0);
        for e in &mut w.enforcement {
            if !e.moves_to_waypoint {
                continue;
            }
            let Some(p) = index.policy_by_ref.get(&e.policy) else {
                continue;
            };
            let class = authz::classify_with(p, &index.sem);
            if class.action == AuthzAction::Deny {
                let admitted = w.bypass_admits.get(&e.service).cloned().unwrap_or_default();
                let later: Vec<&str> = admitted
                    .iter()
                    .filter(|ns| pos.get(ns.as_str()).is_some_and(|i| *i > my))
                    .filter(|ns| authz::may_match_peer_in(p, &index.sem, ns))
                    .map(String::as_str)
                    .collect();
                if !later.is_empty() {
                    let reason = format!(
                        "sidecar callers in {} (step 9 after {}) are admitted by bypass protection and skip the waypoint copy of this DENY until they run without sidecars; list them first",
                        later.join(", "),
                        w.name
                    );
                    push_order_window(e, reason, findings);
                }
                continue;
            }
            if class.action != AuthzAction::Allow || class.rules.iter().all(|r| r.identity_only()) {
                continue;
            }
            let c = allow_callers(p, &class, td, &w.name);
            let mut later: BTreeSet<&str> = c
                .principals
                .iter()
                .filter_map(|p| principal_namespace(p))
                .chain(c.namespaces.iter().map(String::as_str))
                .filter(|ns| pos.get(ns).is_some_and(|i| *i > my))
                .collect();
            if c.any {
                later.extend(order.iter().skip(my + 1).map(String::as_str));
            }
            if later.is_empty() {
                continue;
            }
            let list = later.into_iter().collect::<Vec<_>>().join(", ");
            let reason = format!(
                "sidecar callers in {list} (step 9 after {}) skip the waypoint copy until they run without sidecars; use ordering: Auto or list callers first",
                w.name
            );
            push_order_window(e, reason, findings);
        }
    }
}

/// A step-9 fail-open window of a moved policy, and its finding, once.
pub(super) fn push_order_window(e: &mut Enforcement, reason: String, findings: &mut Vec<Finding>) {
    if e.windows.iter().any(|x| x.reason == reason) {
        return;
    }
    findings.push(Finding::new(
        f::ENFORCEMENT_FAIL_OPEN,
        e.policy.clone(),
        format!("Service {}, steps 9-9: {reason}", e.service),
    ));
    e.windows.push(Window {
        from_step: Step::SidecarRemoval,
        to_step: Step::SidecarRemoval,
        kind: WindowKind::FailOpen,
        reason,
    });
}
