//! istio-cni's view of ambient enrolment: a Pod enrolled in ambient (by its namespace or its
//! own `istio.io/dataplane-mode` label) that has no sidecar gets
//! `ambient.istio.io/redirection: enabled` once ztunnel is ready; the annotation goes away
//! when the Pod is no longer enrolled. As with the real node agent, running Pods are
//! captured without a restart.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Client, ResourceExt};
use meshmig_api::names::istio as n;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::controller::{describe, drain, error_policy};
use crate::{Ctx, Error, Result, workload};

/// Value of the redirection annotation on captured Pods.
pub const REDIRECTION_ENABLED: &str = "enabled";
/// Namespaces ambient never captures.
const NEVER_CAPTURED: [&str; 1] = ["kube-system"];
/// Label selecting ztunnel DaemonSets (as the Sail simulator creates them).
const ZTUNNEL_SELECTOR: &str = "app=ztunnel";

/// `true` when istiod injected a sidecar into `pod`: its status annotation, or an
/// `istio-proxy` container (a native sidecar is an init container).
pub fn has_sidecar(pod: &Pod) -> bool {
    let annotated = pod.annotations().contains_key(n::SIDECAR_STATUS);
    let container = pod.spec.as_ref().is_some_and(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .any(|c| c.name == n::PROXY_CONTAINER)
    });
    annotated || container
}

/// `true` when ambient mode should capture `pod` (ignoring whether ztunnel is up).
pub fn enrolled(namespace_labels: &BTreeMap<String, String>, pod: &Pod) -> bool {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    if NEVER_CAPTURED.contains(&namespace) || has_sidecar(pod) {
        return false;
    }
    if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
        return false;
    }
    let mode = pod
        .labels()
        .get(n::DATAPLANE_MODE)
        .or_else(|| namespace_labels.get(n::DATAPLANE_MODE))
        .map(String::as_str);
    mode == Some(n::DATAPLANE_AMBIENT)
}

async fn ztunnel_ready(client: &Client) -> Result<bool> {
    let list = Api::<DaemonSet>::all(client.clone())
        .list(&ListParams::default().labels(ZTUNNEL_SELECTOR))
        .await
        .map_err(|e| Error::kube("list", format!("DaemonSets {ZTUNNEL_SELECTOR}"), e))?;
    Ok(list
        .items
        .iter()
        .any(|ds| ds.name_any() == "ztunnel" && workload::daemonset(ds).ready))
}

async fn reconcile(pod: Arc<Pod>, ctx: Arc<Ctx>) -> Result<Action> {
    let terminal = matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    let scheduled = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_some();
    if pod.metadata.deletion_timestamp.is_some() || terminal || !scheduled {
        return Ok(Action::await_change());
    }
    let namespace = pod.namespace().unwrap_or_default();
    let ns = Api::<Namespace>::all(ctx.client.clone())
        .get_opt(&namespace)
        .await
        .map_err(|e| Error::kube("get", format!("Namespace {namespace}"), e))?;
    let ns_labels = ns
        .map(|ns| ns.metadata.labels.unwrap_or_default())
        .unwrap_or_default();

    let captured =
        pod.annotations().get(n::REDIRECTION).map(String::as_str) == Some(REDIRECTION_ENABLED);
    let want = enrolled(&ns_labels, &pod);
    // Without a ready ztunnel nothing is captured yet; the ztunnel watch brings the Pod back.
    if want == captured || (want && !ztunnel_ready(&ctx.client).await?) {
        return Ok(Action::requeue(ctx.config.resync));
    }
    let value = if want {
        json!(REDIRECTION_ENABLED)
    } else {
        json!(null)
    };
    let patch = json!({"metadata": {"annotations": {n::REDIRECTION: value}}});
    Api::<Pod>::namespaced(ctx.client.clone(), &namespace)
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|e| Error::kube("annotate", describe(pod.as_ref()), e))?;
    info!(pod = %describe(pod.as_ref()), captured = !value.is_null(), "ambient redirection");
    Ok(Action::requeue(ctx.config.resync))
}

/// Runs until `token` is cancelled.
pub(crate) async fn run(ctx: Arc<Ctx>, token: CancellationToken) {
    let client = ctx.client.clone();
    let controller = Controller::new(Api::<Pod>::all(client.clone()), watcher::Config::default());
    let pods = controller.store();
    let pods_in_namespace = pods.clone();
    let stream = controller
        // A namespace label change (enrolment) re-evaluates every Pod in it.
        .watches(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
            move |ns: Namespace| {
                let name = ns.name_any();
                pods_in_namespace
                    .state()
                    .into_iter()
                    .filter(|p| p.namespace().as_deref() == Some(name.as_str()))
                    .map(|p| ObjectRef::from_obj(p.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        // ztunnel becoming ready captures every enrolled Pod.
        .watches(
            Api::<DaemonSet>::all(client),
            watcher::Config::default().labels(ZTUNNEL_SELECTOR),
            move |_| {
                pods.state()
                    .into_iter()
                    .map(|p| ObjectRef::from_obj(p.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .with_config(crate::controller::config())
        .graceful_shutdown_on(token.cancelled_owned())
        .run(reconcile, error_policy, ctx);
    drain("cni", stream).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, labels: serde_json::Value, annotations: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": ns, "labels": labels, "annotations": annotations},
            "spec": {"containers": [{"name": "app"}]},
        }))
        .unwrap()
    }

    fn ambient_ns() -> BTreeMap<String, String> {
        [(n::DATAPLANE_MODE.to_string(), "ambient".to_string())].into()
    }

    #[test]
    fn enrolment_follows_namespace_and_pod_labels() {
        assert!(enrolled(&ambient_ns(), &pod("a", json!({}), json!({}))));
        assert!(!enrolled(&BTreeMap::new(), &pod("a", json!({}), json!({}))));
        assert!(enrolled(
            &BTreeMap::new(),
            &pod(
                "a",
                json!({"istio.io/dataplane-mode": "ambient"}),
                json!({})
            )
        ));
        assert!(!enrolled(
            &ambient_ns(),
            &pod("a", json!({"istio.io/dataplane-mode": "none"}), json!({}))
        ));
        assert!(!enrolled(
            &ambient_ns(),
            &pod("kube-system", json!({}), json!({}))
        ));
        // A sidecar wins over ambient enrolment, a native one (an init container) too.
        assert!(!enrolled(
            &ambient_ns(),
            &pod("a", json!({}), json!({"sidecar.istio.io/status": "{}"}))
        ));
        let mut native = pod("a", json!({}), json!({}));
        if let Some(spec) = native.spec.as_mut() {
            spec.init_containers = Some(vec![
                serde_json::from_value(json!({"name": "istio-proxy", "restartPolicy": "Always"}))
                    .unwrap(),
            ]);
        }
        assert!(!enrolled(&ambient_ns(), &native));
    }
}
