//! Cluster objects for the probe tests: a `shop` namespace with Service `web` (port 80 →
//! 8080) and a `client` caller, in each dataplane mode.

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use meshmig_api::istio::{AuthorizationPolicy, PeerAuthentication};
use serde_json::{Value, json};

use super::path::{Snapshot, Workload};
use super::request::{Expectation, ProbeRequest, Url};
use crate::views::Gateway;

/// How a fixture Pod runs.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// Injected sidecar with HBONE.
    Sidecar,
    /// Injected sidecar without HBONE (injected before the control plane was ambient).
    OldSidecar,
    /// Captured by ztunnel.
    Ambient,
    /// Not in the mesh.
    Plain,
}

fn from<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).unwrap()
}

/// A Running, Ready Pod.
pub fn pod(namespace: &str, name: &str, sa: &str, labels: Value, mode: Mode, ip: &str) -> Pod {
    let mut pod = json!({
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "annotations": {}},
        "spec": {"serviceAccountName": sa, "containers": [{"name": "app", "image": "app", "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]},
    });
    match mode {
        Mode::Sidecar | Mode::OldSidecar => {
            pod["metadata"]["annotations"]["sidecar.istio.io/status"] = json!("{}");
            let mut proxy = json!({"name": "istio-proxy", "image": "proxyv2"});
            if matches!(mode, Mode::Sidecar) {
                pod["metadata"]["labels"]["networking.istio.io/tunnel"] = json!("http");
                proxy["env"] = json!([{"name": "ISTIO_META_ENABLE_HBONE", "value": "true"}]);
            }
            pod["spec"]["containers"]
                .as_array_mut()
                .unwrap()
                .push(proxy);
        }
        Mode::Ambient => {
            pod["metadata"]["annotations"]["ambient.istio.io/redirection"] = json!("enabled");
        }
        Mode::Plain => {}
    }
    from(pod)
}

/// A `web` Pod of `shop`.
pub fn web(name: &str, mode: Mode, ip: &str) -> Pod {
    pod("shop", name, "web", json!({"app": "web"}), mode, ip)
}

/// The caller: `shop/client` under service account `client`.
pub fn client(mode: Mode) -> Workload {
    Workload::of(&pod(
        "shop",
        "client",
        "client",
        json!({"app": "client"}),
        mode,
        "10.1.0.5",
    ))
}

/// Service `shop/web`, port 80 → `http` (8080), `status.conditions` as given.
pub fn service(bound: bool) -> Service {
    let conditions = if bound {
        json!([{"type": "istio.io/WaypointBound", "status": "True", "reason": "Bound", "message": "",
            "lastTransitionTime": "2024-01-01T00:00:00Z"}])
    } else {
        json!([])
    };
    from(json!({
        "metadata": {"name": "web", "namespace": "shop", "labels": if bound { json!({"istio.io/use-waypoint": "waypoint"}) } else { json!({}) }},
        "spec": {"clusterIP": "10.96.0.10", "selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
        "status": {"conditions": conditions},
    }))
}

/// Waypoint `shop/waypoint`, Programmed.
pub fn waypoint() -> Gateway {
    from(json!({
        "metadata": {"name": "waypoint", "namespace": "shop"},
        "spec": {"gatewayClassName": "istio-waypoint"},
        "status": {"addresses": [{"type": "IPAddress", "value": "10.96.0.99"}]},
    }))
}

/// An AuthorizationPolicy in `shop`.
pub fn policy(name: &str, spec: Value) -> AuthorizationPolicy {
    from(
        json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": "shop"}, "spec": spec}),
    )
}

/// The same, annotated `istio.io/dry-run: "true"`.
pub fn dry_run(name: &str, spec: Value) -> AuthorizationPolicy {
    let mut p = policy(name, spec);
    p.metadata.annotations = Some([("istio.io/dry-run".to_string(), "true".to_string())].into());
    p
}

/// A namespace-wide PeerAuthentication in `namespace`.
pub fn peer_authentication(namespace: &str, mode: &str) -> PeerAuthentication {
    from(
        json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": namespace}, "spec": {"mtls": {"mode": mode}}}),
    )
}

fn namespace(name: &str, labels: Value) -> Namespace {
    from(json!({"metadata": {"name": name, "labels": labels}}))
}

/// `shop` with `pods`, Service `web` (bound to the waypoint when `bound`), the waypoint.
pub fn shop(pods: Vec<Pod>, bound: bool) -> Snapshot {
    Snapshot {
        namespaces: vec![
            namespace("shop", json!({})),
            namespace("istio-system", json!({})),
        ],
        pods,
        services: vec![service(bound)],
        gateways: vec![waypoint()],
        ..Snapshot::default()
    }
}

/// `GET http://web.shop/` (or `method`), expecting `expect`.
pub fn get(path: &str, method: &str, expect: Expectation) -> ProbeRequest {
    ProbeRequest {
        url: Url {
            host: "web.shop".into(),
            port: 80,
            authority: "web.shop".into(),
            path: path.into(),
        },
        method: method.into(),
        headers: Vec::new(),
        expect,
    }
}
