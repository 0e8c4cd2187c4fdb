//! Classification of the non-authorization kinds: what needs a waypoint, what becomes
//! redundant, what blocks.

use meshmig_api::istio::{DestinationRule, PeerAuthentication, TrafficPolicy};
use serde_json::Value;

/// Whether a `tls` setting is only `mode: ISTIO_MUTUAL` (redundant in ambient: HBONE is
/// always mutual TLS).
pub fn tls_is_istio_mutual_only(tls: Option<&Value>) -> bool {
    let Some(Value::Object(map)) = tls else {
        return false;
    };
    map.get("mode").and_then(Value::as_str) == Some("ISTIO_MUTUAL")
        && map
            .keys()
            .all(|k| k == "mode" || k == "sni" || k == "subjectAltNames")
}

/// Which traffic-policy parts matter in ambient (a waypoint must apply them).
pub fn traffic_policy_parts(p: &TrafficPolicy) -> Vec<&'static str> {
    let mut parts = Vec::new();
    if p.load_balancer.is_some() {
        parts.push("loadBalancer");
    }
    if p.connection_pool.is_some() {
        parts.push("connectionPool");
    }
    if p.outlier_detection.is_some() {
        parts.push("outlierDetection");
    }
    if p.tls.is_some() && !tls_is_istio_mutual_only(p.tls.as_ref()) {
        parts.push("tls");
    }
    if p.port_level_settings
        .as_ref()
        .is_some_and(|s| !s.is_empty())
    {
        parts.push("portLevelSettings");
    }
    if !p.extra.is_empty() {
        parts.push("other");
    }
    parts
}

/// What a DestinationRule means for the migration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrClass {
    /// Traffic-policy parts (top-level) that need a waypoint.
    pub traffic_policy: Vec<&'static str>,
    /// Whether some subset sets its own traffic policy.
    pub subset_policy: bool,
    /// Whether it defines subsets.
    pub has_subsets: bool,
    /// Whether the only traffic policy is ISTIO_MUTUAL TLS.
    pub tls_istio_mutual_only: bool,
}

impl DrClass {
    /// Needs a waypoint (and must be kept).
    pub fn needs_waypoint(&self) -> bool {
        !self.traffic_policy.is_empty()
    }

    /// Only defines subsets (and redundant TLS): removable once routes use per-version
    /// Services.
    pub fn subsets_only(&self) -> bool {
        self.has_subsets && self.traffic_policy.is_empty() && !self.subset_policy
    }
}

/// Classifies a DestinationRule.
pub fn classify_dr(dr: &DestinationRule) -> DrClass {
    let top = dr.spec.traffic_policy.as_ref();
    let traffic_policy = top.map(traffic_policy_parts).unwrap_or_default();
    let subsets = dr.spec.subsets.as_deref().unwrap_or_default();
    DrClass {
        traffic_policy,
        subset_policy: subsets.iter().any(|s| {
            s.traffic_policy
                .as_ref()
                .is_some_and(|p| !traffic_policy_parts(p).is_empty())
        }),
        has_subsets: !subsets.is_empty(),
        tls_istio_mutual_only: top.is_some_and(|p| {
            tls_is_istio_mutual_only(p.tls.as_ref()) && traffic_policy_parts(p).is_empty()
        }),
    }
}

/// What a PeerAuthentication's top-level mode (not its port-level ones) applies to, in the
/// words of a finding: `mesh-wide` in the root namespace without a selector,
/// `namespace-wide` elsewhere without one, else `workload-wide` (every port of the selected
/// workloads). A mesh-wide DISABLE reported as workload-wide hides that every namespace,
/// not one workload, relies on it.
pub fn peer_authn_scope(pa: &PeerAuthentication, root: &str) -> &'static str {
    let selects = pa
        .spec
        .selector
        .as_ref()
        .and_then(|s| s.match_labels.as_ref())
        .is_some_and(|m| !m.is_empty());
    if selects {
        "workload-wide"
    } else if crate::cluster::mesh_wide(pa, root) {
        "mesh-wide"
    } else {
        "namespace-wide"
    }
}

/// mTLS modes a PeerAuthentication sets, workload-wide and per port.
pub fn peer_authn_modes(pa: &PeerAuthentication) -> Vec<(Option<String>, String)> {
    let mut out = Vec::new();
    if let Some(m) = pa.spec.mtls.as_ref().and_then(|m| m.mode.clone()) {
        out.push((None, m));
    }
    for (port, m) in pa.spec.port_level_mtls.iter().flatten() {
        if let Some(mode) = &m.mode {
            out.push((Some(port.clone()), mode.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dr(yaml: &str) -> DestinationRule {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn subsets_only_rules_are_redundant() {
        let c = classify_dr(&dr(
            "spec: {host: r, subsets: [{name: v1, labels: {version: v1}}]}",
        ));
        assert!(c.subsets_only() && !c.needs_waypoint());
        let c = classify_dr(&dr(
            "spec: {host: r, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}, subsets: [{name: v1, labels: {version: v1}}]}",
        ));
        assert!(c.subsets_only() && c.tls_istio_mutual_only);
    }

    #[test]
    fn traffic_policy_needs_waypoint() {
        for tp in [
            "{loadBalancer: {simple: ROUND_ROBIN}}",
            "{connectionPool: {tcp: {maxConnections: 1}}}",
            "{outlierDetection: {consecutive5xxErrors: 1}}",
            "{tls: {mode: SIMPLE}}",
            "{portLevelSettings: [{port: {number: 80}, loadBalancer: {simple: RANDOM}}]}",
        ] {
            let c = classify_dr(&dr(&format!("spec: {{host: r, trafficPolicy: {tp}}}")));
            assert!(c.needs_waypoint(), "{tp}");
            assert!(!c.subsets_only(), "{tp}");
        }
        let c = classify_dr(&dr(
            "spec: {host: r, subsets: [{name: v1, labels: {v: '1'}, trafficPolicy: {loadBalancer: {simple: RANDOM}}}]}",
        ));
        assert!(c.subset_policy && !c.subsets_only() && !c.needs_waypoint());
    }

    #[test]
    fn peer_authn_scopes() {
        let pa = |yaml: &str| -> PeerAuthentication { serde_saphyr::from_str(yaml).unwrap() };
        let root = "istio-system";
        assert_eq!(
            peer_authn_scope(
                &pa("metadata: {name: d, namespace: istio-system}\nspec: {mtls: {mode: DISABLE}}"),
                root
            ),
            "mesh-wide"
        );
        assert_eq!(
            peer_authn_scope(
                &pa("metadata: {name: d, namespace: shop}\nspec: {mtls: {mode: DISABLE}}"),
                root
            ),
            "namespace-wide"
        );
        assert_eq!(
            peer_authn_scope(
                &pa(
                    "metadata: {name: d, namespace: istio-system}\nspec: {selector: {matchLabels: {app: db}}, mtls: {mode: DISABLE}}"
                ),
                root
            ),
            "workload-wide"
        );
    }

    #[test]
    fn peer_authn_port_modes() {
        let pa: PeerAuthentication = serde_saphyr::from_str(
            "spec: {mtls: {mode: STRICT}, portLevelMtls: {'8080': {mode: DISABLE}}}",
        )
        .unwrap();
        assert_eq!(
            peer_authn_modes(&pa),
            vec![
                (None, "STRICT".into()),
                (Some("8080".into()), "DISABLE".into())
            ]
        );
    }
}
