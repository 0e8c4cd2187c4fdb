//! istiod's `istio.io/WaypointBound` Service condition: a Service that asks for a waypoint
//! (its own `istio.io/use-waypoint` label, else its namespace's; `none` opts out) is bound
//! when that Gateway exists and is Programmed.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Client, ResourceExt};
use meshmig_api::names::istio as n;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::controller::{describe, drain, error_policy};
use crate::error::is_not_found;
use crate::views::Gateway;
use crate::waypoint::GATEWAY_NAME_LABEL;
use crate::{Ctx, Error, Result, conditions};

/// The waypoint `(namespace, name)` a Service asks for, if any.
pub fn requested_waypoint(
    service: &Service,
    namespace_labels: &BTreeMap<String, String>,
) -> Option<(String, String)> {
    let labels = service.labels();
    if labels.contains_key(GATEWAY_NAME_LABEL) {
        return None; // a waypoint's own Service never goes through a waypoint
    }
    let (source, name) = match labels.get(n::USE_WAYPOINT) {
        Some(name) => (labels, name),
        None => (namespace_labels, namespace_labels.get(n::USE_WAYPOINT)?),
    };
    if name.is_empty() || name == "none" {
        return None;
    }
    let namespace = source
        .get(n::USE_WAYPOINT_NAMESPACE)
        .cloned()
        .or_else(|| service.namespace())
        .unwrap_or_default();
    Some((namespace, name.clone()))
}

/// The `istio.io/WaypointBound` condition for a Service asking for `waypoint`, given the
/// Gateway found under that name (if any).
pub fn bound_condition(
    waypoint: &(String, String),
    gateway: Option<&Gateway>,
    generation: Option<i64>,
) -> Condition {
    let (namespace, name) = waypoint;
    match gateway {
        Some(gw) if gw.spec.gateway_class_name == n::WAYPOINT_CLASS => {
            if conditions::is_true(&conditions::read(gw.status.as_ref()), "Programmed") {
                conditions::new(
                    n::WAYPOINT_BOUND,
                    true,
                    "Bound",
                    format!("bound to {namespace}/{name}"),
                    generation,
                )
            } else {
                let message = format!("waypoint {namespace}/{name} is not programmed");
                conditions::new(
                    n::WAYPOINT_BOUND,
                    false,
                    "NotProgrammed",
                    message,
                    generation,
                )
            }
        }
        _ => {
            let message = format!("waypoint {namespace}/{name} not found");
            conditions::new(n::WAYPOINT_BOUND, false, "NotFound", message, generation)
        }
    }
}

async fn find_gateway(client: &Client, namespace: &str, name: &str) -> Result<Option<Gateway>> {
    match Api::<Gateway>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
    {
        Ok(gw) => Ok(gw),
        Err(e) if is_not_found(&e) => Ok(None), // no Gateway API CRDs
        Err(e) => Err(Error::kube("get", format!("Gateway {namespace}/{name}"), e)),
    }
}

async fn reconcile(service: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action> {
    if service.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = service.namespace().unwrap_or_default();
    let ns_labels = Api::<Namespace>::all(ctx.client.clone())
        .get_opt(&namespace)
        .await
        .map_err(|e| Error::kube("get", format!("Namespace {namespace}"), e))?
        .and_then(|ns| ns.metadata.labels)
        .unwrap_or_default();

    let have: Vec<Condition> = service
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let want = match requested_waypoint(&service, &ns_labels) {
        Some(waypoint) => {
            let gateway = find_gateway(&ctx.client, &waypoint.0, &waypoint.1).await?;
            let condition =
                bound_condition(&waypoint, gateway.as_ref(), service.metadata.generation);
            conditions::merge(&have, vec![condition])
        }
        None => conditions::remove(&have, n::WAYPOINT_BOUND),
    };
    if conditions::equivalent(&have, &want) {
        return Ok(Action::requeue(ctx.config.resync));
    }
    // The whole list is replaced, so guard against a concurrent writer with resourceVersion.
    let patch = json!({
        "metadata": {"resourceVersion": service.resource_version()},
        "status": {"conditions": want},
    });
    Api::<Service>::namespaced(ctx.client.clone(), &namespace)
        .patch_status(
            &service.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|e| Error::kube("patch status of", describe(service.as_ref()), e))?;
    let bound = want
        .iter()
        .find(|c| c.type_ == n::WAYPOINT_BOUND)
        .map(|c| format!("{} ({})", c.status, c.reason));
    info!(service = %describe(service.as_ref()), bound = bound.as_deref().unwrap_or("removed"), "WaypointBound");
    Ok(Action::requeue(ctx.config.resync))
}

/// Runs until `token` is cancelled.
pub(crate) async fn run(ctx: Arc<Ctx>, token: CancellationToken) {
    let client = ctx.client.clone();
    let controller = Controller::new(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    );
    let services = controller.store();
    let in_namespace = services.clone();
    let stream = controller
        .watches(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
            move |ns: Namespace| {
                let name = ns.name_any();
                in_namespace
                    .state()
                    .into_iter()
                    .filter(|s| s.namespace().as_deref() == Some(name.as_str()))
                    .map(|s| ObjectRef::from_obj(s.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        // Any waypoint change may bind or unbind Services anywhere (use-waypoint-namespace).
        .watches(
            Api::<Gateway>::all(client),
            watcher::Config::default(),
            move |_: Gateway| {
                services
                    .state()
                    .into_iter()
                    .map(|s| ObjectRef::from_obj(s.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .with_config(crate::controller::config())
        .graceful_shutdown_on(token.cancelled_owned())
        .run(reconcile, error_policy, ctx);
    drain("waypoint-binding", stream).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(labels: serde_json::Value) -> Service {
        serde_json::from_value(
            json!({"metadata": {"name": "reviews", "namespace": "bookinfo", "labels": labels}}),
        )
        .unwrap()
    }

    fn ns(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn gateway(programmed: &str) -> Gateway {
        serde_json::from_value(json!({
            "metadata": {"name": "waypoint", "namespace": "bookinfo"},
            "spec": {"gatewayClassName": "istio-waypoint"},
            "status": {"conditions": [{"type": "Programmed", "status": programmed, "reason": "x", "message": "",
                "lastTransitionTime": "2024-01-01T00:00:00Z"}]},
        }))
        .unwrap()
    }

    #[test]
    fn service_label_overrides_namespace_label() {
        let want = |ns_name: &str, name: &str| Some((ns_name.to_string(), name.to_string()));
        let in_ns = ns(&[("istio.io/use-waypoint", "ns-waypoint")]);
        assert_eq!(
            requested_waypoint(&service(json!({})), &in_ns),
            want("bookinfo", "ns-waypoint")
        );
        assert_eq!(
            requested_waypoint(&service(json!({"istio.io/use-waypoint": "mine"})), &in_ns),
            want("bookinfo", "mine")
        );
        assert_eq!(
            requested_waypoint(&service(json!({"istio.io/use-waypoint": "none"})), &in_ns),
            None
        );
        assert_eq!(
            requested_waypoint(&service(json!({})), &BTreeMap::new()),
            None
        );
        let elsewhere =
            json!({"istio.io/use-waypoint": "shared", "istio.io/use-waypoint-namespace": "infra"});
        assert_eq!(
            requested_waypoint(&service(elsewhere), &in_ns),
            want("infra", "shared")
        );
        let own = json!({"gateway.networking.k8s.io/gateway-name": "ns-waypoint"});
        assert_eq!(requested_waypoint(&service(own), &in_ns), None);
    }

    #[test]
    fn bound_only_to_a_programmed_waypoint() {
        let wp = ("bookinfo".to_string(), "waypoint".to_string());
        let c = bound_condition(&wp, Some(&gateway("True")), Some(1));
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "Bound"));
        let c = bound_condition(&wp, Some(&gateway("False")), Some(1));
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "NotProgrammed")
        );
        let c = bound_condition(&wp, None, Some(1));
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "NotFound")
        );
    }
}
