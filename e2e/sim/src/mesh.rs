//! What the control plane looks like right now: whether it is ambient-capable (which decides
//! whether newly injected sidecars speak HBONE) and which Istio version it runs.

use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::{Api, ListParams};
use meshmig_api::names::istio as n;
use meshmig_api::sail::{Istio, sail_state};

use crate::error::is_not_found;
use crate::sail::{STATE_HEALTHY, image_tag};
use crate::workload;
use crate::{Error, Result};

/// Namespace where an externally installed (Helm/istioctl) istiod is looked for.
pub const EXTERNAL_ISTIOD_NAMESPACE: &str = "istio-system";

/// The control plane as the injector sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlPlane {
    /// New sidecars get HBONE.
    pub ambient: bool,
    /// Image tag of proxies (`1.27.0`).
    pub version: String,
    /// Namespace of istiod (for the proxies' discovery address).
    pub namespace: String,
    /// Why `ambient` is what it is, for logs.
    pub reason: String,
}

/// Decides the control plane from the Sail `Istio` resources and the istiod Deployment in
/// `istio-system`: ambient when a Sail `Istio` with profile `ambient` is `Healthy`, or when
/// istiod's `discovery` container has `PILOT_ENABLE_AMBIENT=true` and that template has rolled
/// out (the injector is istiod, so a sidecar gets HBONE once an ambient istiod serves it).
pub fn evaluate(
    istios: &[Istio],
    istiod: Option<&Deployment>,
    default_version: &str,
) -> ControlPlane {
    let sail_ambient = istios.iter().find(|i| {
        i.spec.profile.as_deref() == Some("ambient")
            && sail_state(i.status.as_ref()) == Some(STATE_HEALTHY)
    });
    let discovery = istiod.and_then(|d| {
        d.spec
            .as_ref()?
            .template
            .spec
            .as_ref()?
            .containers
            .iter()
            .find(|c| c.name == "discovery")
            .cloned()
    });
    let env_ambient = discovery.as_ref().is_some_and(|c| {
        c.env.iter().flatten().any(|e| {
            e.name == n::PILOT_ENABLE_AMBIENT
                && e.value
                    .as_deref()
                    .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        })
    });
    let rolled_out = istiod.is_some_and(|d| workload::deployment(d).ready);

    let sail = sail_ambient
        .or_else(|| {
            istios
                .iter()
                .find(|i| sail_state(i.status.as_ref()) == Some(STATE_HEALTHY))
        })
        .or(istios.first());
    let version = match (sail, discovery.as_ref().and_then(|c| c.image.as_deref())) {
        (Some(istio), _) => image_tag(istio.spec.version.as_deref(), default_version),
        (None, Some(image)) => image
            .rsplit_once(':')
            .map(|(_, tag)| tag.to_string())
            .unwrap_or_else(|| default_version.into()),
        (None, None) => default_version.to_string(),
    };
    let namespace = sail
        .and_then(|i| i.spec.namespace.clone())
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| EXTERNAL_ISTIOD_NAMESPACE.to_string());

    let (ambient, reason) = match (sail_ambient, env_ambient, rolled_out) {
        (Some(istio), _, _) => (
            true,
            format!(
                "Sail Istio {} has profile ambient and is Healthy",
                istio.metadata.name.as_deref().unwrap_or("")
            ),
        ),
        (None, true, true) => (
            true,
            format!("istiod in {EXTERNAL_ISTIOD_NAMESPACE} runs with PILOT_ENABLE_AMBIENT=true"),
        ),
        (None, true, false) => (
            false,
            "istiod with PILOT_ENABLE_AMBIENT=true is still rolling out".to_string(),
        ),
        (None, false, _) => (false, "no ambient-enabled control plane".to_string()),
    };
    ControlPlane {
        ambient,
        version,
        namespace,
        reason,
    }
}

/// Reads the control plane from the API now (not from a cache: the answer must reflect what a
/// test saw just before it created a Pod).
pub async fn observe(client: &Client, default_version: &str) -> Result<ControlPlane> {
    let istios = match Api::<Istio>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(list) => list.items,
        Err(e) if is_not_found(&e) => Vec::new(), // Sail CRDs not installed: External mode
        Err(e) => return Err(Error::kube("list", "Istio (sailoperator.io/v1)", e)),
    };
    let istiod = Api::<Deployment>::namespaced(client.clone(), EXTERNAL_ISTIOD_NAMESPACE)
        .get_opt("istiod")
        .await
        .map_err(|e| {
            Error::kube(
                "get",
                format!("Deployment {EXTERNAL_ISTIOD_NAMESPACE}/istiod"),
                e,
            )
        })?;
    Ok(evaluate(&istios, istiod.as_ref(), default_version))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn istio(profile: &str, state: Option<&str>) -> Istio {
        serde_json::from_value(json!({
            "apiVersion": "sailoperator.io/v1", "kind": "Istio",
            "metadata": {"name": "default"},
            "spec": {"version": "v1.26.2", "namespace": "istio-system", "profile": profile},
            "status": state.map(|s| json!({"state": s})),
        }))
        .unwrap()
    }

    fn istiod(ambient: bool, rolled_out: bool) -> Deployment {
        let env = if ambient {
            json!([{"name": "PILOT_ENABLE_AMBIENT", "value": "true"}])
        } else {
            json!([])
        };
        let available = if rolled_out { 1 } else { 0 };
        serde_json::from_value(json!({
            "metadata": {"name": "istiod", "namespace": "istio-system", "generation": 1},
            "spec": {"replicas": 1, "selector": {}, "template": {"spec": {"containers": [
                {"name": "discovery", "image": "docker.io/istio/pilot:1.25.0", "env": env}]}}},
            "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": available},
        }))
        .unwrap()
    }

    #[test]
    fn sail_ambient_needs_healthy() {
        assert!(evaluate(&[istio("ambient", Some("Healthy"))], None, "1.27.0").ambient);
        assert!(!evaluate(&[istio("ambient", Some("Reconciling"))], None, "1.27.0").ambient);
        assert!(!evaluate(&[istio("default", Some("Healthy"))], None, "1.27.0").ambient);
        assert_eq!(
            evaluate(&[istio("default", None)], None, "1.27.0").version,
            "1.26.2"
        );
    }

    #[test]
    fn external_istiod_env_decides_once_rolled_out() {
        let cp = evaluate(&[], Some(&istiod(true, true)), "1.27.0");
        assert!(cp.ambient, "{cp:?}");
        assert_eq!(cp.version, "1.25.0");
        assert!(!evaluate(&[], Some(&istiod(true, false)), "1.27.0").ambient);
        assert!(!evaluate(&[], Some(&istiod(false, true)), "1.27.0").ambient);
        let none = evaluate(&[], None, "1.27.0");
        assert_eq!((none.ambient, none.version.as_str()), (false, "1.27.0"));
    }
}
