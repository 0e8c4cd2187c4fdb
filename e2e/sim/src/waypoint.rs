//! Istio's waypoint deployment controller: the `istio-waypoint` GatewayClass, and for each
//! Gateway of that class a ServiceAccount, Deployment and Service named after it (owned by
//! it), plus Gateway status (`Accepted`, `Programmed` once the Deployment is available,
//! `addresses`, listener status).

use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use kube::{Client, Resource, ResourceExt};
use meshmig_api::names::{self, istio as n};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::controller::{
    apply, describe, drain, error_policy, owner_ref, patch_status, status_unchanged,
};
use crate::error::is_not_found;
use crate::views::{Gateway, GatewayClass};
use crate::workload::{self, Rollout};
use crate::{Ctx, Error, FIELD_MANAGER, MANAGED_BY, Result, conditions, mesh};

/// Controller name of the waypoint GatewayClass.
pub const WAYPOINT_CONTROLLER: &str = "istio.io/mesh-controller";
/// Label on a waypoint's Deployment, Pods and Service naming its Gateway.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";
/// HBONE port of a waypoint.
pub const HBONE_PORT: i32 = 15008;

/// Creates the `istio-waypoint` GatewayClass. Without the Gateway API CRDs there is nothing
/// to do (logged, not fatal: the rest of the simulator still works).
pub(crate) async fn ensure_gateway_class(client: &Client) -> Result<()> {
    let api: Api<GatewayClass> = Api::all(client.clone());
    let class = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GatewayClass",
        "metadata": {"name": n::WAYPOINT_CLASS, "labels": {names::LABEL_MANAGED_BY: MANAGED_BY}},
        "spec": {"controllerName": WAYPOINT_CONTROLLER, "description": "The default Istio waypoint GatewayClass (meshmig-sim)"},
    });
    match api
        .patch(
            n::WAYPOINT_CLASS,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(&class),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => {
            warn!("Gateway API CRDs are not installed: waypoints are not simulated");
            Ok(())
        }
        Err(e) => Err(Error::kube(
            "apply",
            format!("GatewayClass {}", n::WAYPOINT_CLASS),
            e,
        )),
    }
}

async fn reconcile_class(class: Arc<GatewayClass>, ctx: Arc<Ctx>) -> Result<Action> {
    if class.spec.controller_name != WAYPOINT_CONTROLLER {
        return Ok(Action::await_change());
    }
    let generation = class.metadata.generation;
    let have = conditions::read(class.status.as_ref());
    let accepted = conditions::new(
        "Accepted",
        true,
        "Accepted",
        "Handled by Istio controller (meshmig-sim)",
        generation,
    );
    let desired = json!({"conditions": conditions::merge(&have, vec![accepted])});
    if !status_unchanged(class.status.as_ref(), &desired) {
        let api: Api<GatewayClass> = Api::all(ctx.client.clone());
        patch_status(&api, &class.name_any(), desired, describe(class.as_ref())).await?;
    }
    Ok(Action::requeue(ctx.config.resync))
}

/// Runs the GatewayClass status controller until `token` is cancelled.
pub(crate) async fn run_gateway_classes(ctx: Arc<Ctx>, token: CancellationToken) {
    let api: Api<GatewayClass> = Api::all(ctx.client.clone());
    let stream = Controller::new(api, watcher::Config::default())
        .with_config(crate::controller::config())
        .graceful_shutdown_on(token.cancelled_owned())
        .run(reconcile_class, error_policy, ctx);
    drain("gatewayclass", stream).await;
}

fn managed_labels(gateway: &str) -> Value {
    json!({
        GATEWAY_NAME_LABEL: gateway,
        "gateway.istio.io/managed": "istio.io-mesh-controller",
        names::LABEL_MANAGED_BY: MANAGED_BY,
    })
}

/// The waypoint Deployment for Gateway `name`.
pub fn waypoint_deployment(
    namespace: &str,
    name: &str,
    service_account: &str,
    version: &str,
    owner: &Value,
) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": managed_labels(name), "ownerReferences": [owner]},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {GATEWAY_NAME_LABEL: name}},
            "template": {
                "metadata": {"labels": {
                    GATEWAY_NAME_LABEL: name,
                    "gateway.istio.io/managed": "istio.io-mesh-controller",
                    n::SIDECAR_INJECT: "false",
                    n::DATAPLANE_MODE: "none",
                }},
                "spec": {
                    "serviceAccountName": service_account,
                    "containers": [{
                        "name": n::PROXY_CONTAINER,
                        "image": format!("docker.io/istio/proxyv2:{version}"),
                        "args": ["proxy", "waypoint"],
                        "ports": [
                            {"name": "mesh", "containerPort": HBONE_PORT, "protocol": "TCP"},
                            {"name": "status-port", "containerPort": 15021, "protocol": "TCP"},
                        ],
                    }],
                },
            },
        },
    })
}

/// The waypoint Service for Gateway `name`.
pub fn waypoint_service(namespace: &str, name: &str, owner: &Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": managed_labels(name), "ownerReferences": [owner]},
        "spec": {
            "type": "ClusterIP",
            "selector": {GATEWAY_NAME_LABEL: name},
            "ports": [
                {"name": "status-port", "port": 15021, "protocol": "TCP", "targetPort": 15021},
                {"name": "mesh", "port": HBONE_PORT, "protocol": "TCP", "targetPort": HBONE_PORT},
            ],
        },
    })
}

/// The Gateway status for a waypoint whose Deployment is in `rollout` and whose Service has
/// `address`. `Programmed` needs both.
pub fn gateway_status(gateway: &Gateway, rollout: &Rollout, address: Option<&str>) -> Value {
    let generation = gateway.metadata.generation;
    let current = gateway.status.as_ref();
    let programmed = rollout.ready && address.is_some();
    let service = format!(
        "{}.{}.svc.cluster.local",
        gateway.name_any(),
        gateway.namespace().unwrap_or_default()
    );
    let programmed_condition = if programmed {
        conditions::new(
            "Programmed",
            true,
            "Programmed",
            format!("Resource programmed, assigned to service(s) {service}:{HBONE_PORT}"),
            generation,
        )
    } else if address.is_none() {
        conditions::new(
            "Programmed",
            false,
            "AddressNotAssigned",
            format!("Service {service} has no cluster IP yet"),
            generation,
        )
    } else {
        conditions::new(
            "Programmed",
            false,
            "Pending",
            format!("Waiting for {}", rollout.summary),
            generation,
        )
    };
    let accepted = conditions::new(
        "Accepted",
        true,
        "Accepted",
        "Resource accepted",
        generation,
    );
    let merged = conditions::merge(
        &conditions::read(current),
        vec![accepted.clone(), programmed_condition.clone()],
    );

    let old_listeners = current
        .and_then(|s| s.get("listeners"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let listeners: Vec<Value> = gateway
        .spec
        .listeners
        .iter()
        .map(|l| {
            let old = old_listeners.iter().find(|o| o.get("name").and_then(Value::as_str) == Some(l.name.as_str()));
            let have = conditions::read(old);
            let wanted = vec![
                accepted.clone(),
                programmed_condition.clone(),
                conditions::new("ResolvedRefs", true, "ResolvedRefs", "No errors found", generation),
                conditions::new("Conflicted", false, "NoConflicts", "No conflicts found", generation),
            ];
            json!({"name": l.name, "attachedRoutes": 0, "conditions": conditions::merge(&have, wanted)})
        })
        .collect();
    let addresses: Vec<Value> = address
        .map(|ip| json!({"type": "IPAddress", "value": ip}))
        .into_iter()
        .collect();
    json!({"conditions": merged, "addresses": addresses, "listeners": listeners})
}

async fn reconcile_gateway(gateway: Arc<Gateway>, ctx: Arc<Ctx>) -> Result<Action> {
    if gateway.spec.gateway_class_name != n::WAYPOINT_CLASS
        || gateway.meta().deletion_timestamp.is_some()
    {
        return Ok(Action::await_change());
    }
    let namespace = gateway.namespace().unwrap_or_default();
    let name = gateway.name_any();
    let owner = owner_ref(gateway.as_ref())?;
    let version = mesh::observe(&ctx.client, &ctx.config.default_version)
        .await?
        .version;

    // A service account named by annotation belongs to the user; otherwise the waypoint's own.
    let service_account = match gateway.annotations().get(n::GATEWAY_SERVICE_ACCOUNT) {
        Some(sa) => sa.clone(),
        None => {
            let sa = json!({
                "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": name, "namespace": namespace, "labels": managed_labels(&name), "ownerReferences": [owner]},
            });
            let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &namespace);
            apply(
                &api,
                &name,
                &sa,
                format!("ServiceAccount {namespace}/{name}"),
            )
            .await?;
            name.clone()
        }
    };
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let manifest = waypoint_deployment(&namespace, &name, &service_account, &version, &owner);
    let deployment = apply(
        &deployments,
        &name,
        &manifest,
        format!("Deployment {namespace}/{name}"),
    )
    .await?;
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &namespace);
    let service = apply(
        &services,
        &name,
        &waypoint_service(&namespace, &name, &owner),
        format!("Service {namespace}/{name}"),
    )
    .await?;
    let address = service
        .spec
        .and_then(|s| s.cluster_ip)
        .filter(|ip| !ip.is_empty() && ip != "None");

    let rollout = workload::deployment(&deployment);
    let status = gateway_status(&gateway, &rollout, address.as_deref());
    if !status_unchanged(gateway.status.as_ref(), &status) {
        let api: Api<Gateway> = Api::namespaced(ctx.client.clone(), &namespace);
        patch_status(&api, &name, status, describe(gateway.as_ref())).await?;
        info!(gateway = %describe(gateway.as_ref()), programmed = rollout.ready, "waypoint status");
    }
    Ok(Action::requeue(ctx.config.resync))
}

/// Runs the waypoint controller until `token` is cancelled.
pub(crate) async fn run_gateways(ctx: Arc<Ctx>, token: CancellationToken) {
    let client = ctx.client.clone();
    let managed =
        watcher::Config::default().labels(&format!("{}={}", names::LABEL_MANAGED_BY, MANAGED_BY));
    let stream = Controller::new(
        Api::<Gateway>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<Deployment>::all(client.clone()), managed.clone())
    .owns(Api::<Service>::all(client), managed)
    .with_config(crate::controller::config())
    .graceful_shutdown_on(token.cancelled_owned())
    .run(reconcile_gateway, error_policy, ctx);
    drain("waypoint", stream).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(status: Option<Value>) -> Gateway {
        serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "waypoint", "namespace": "bookinfo", "generation": 2},
            "spec": {"gatewayClassName": "istio-waypoint", "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]},
            "status": status,
        }))
        .unwrap()
    }

    fn rollout(ready: bool) -> Rollout {
        Rollout {
            ready,
            summary: "Deployment bookinfo/waypoint: 0/1 available".into(),
        }
    }

    fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
        status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == type_)
            .unwrap()
    }

    #[test]
    fn programmed_needs_a_ready_deployment_and_an_address() {
        let pending = gateway_status(&gateway(None), &rollout(false), Some("10.96.0.20"));
        assert_eq!(condition(&pending, "Programmed")["status"], "False");
        assert_eq!(condition(&pending, "Programmed")["reason"], "Pending");
        assert_eq!(condition(&pending, "Accepted")["status"], "True");
        let no_ip = gateway_status(&gateway(None), &rollout(true), None);
        assert_eq!(
            condition(&no_ip, "Programmed")["reason"],
            "AddressNotAssigned"
        );
        assert_eq!(no_ip["addresses"], json!([]));

        let done = gateway_status(
            &gateway(Some(pending.clone())),
            &rollout(true),
            Some("10.96.0.20"),
        );
        let programmed = condition(&done, "Programmed");
        assert_eq!(
            (programmed["status"].as_str(), programmed["reason"].as_str()),
            (Some("True"), Some("Programmed"))
        );
        assert_eq!(programmed["observedGeneration"], 2);
        assert_eq!(
            done["addresses"],
            json!([{"type": "IPAddress", "value": "10.96.0.20"}])
        );
        assert_eq!(done["listeners"][0]["name"], "mesh");
        assert_eq!(done["listeners"][0]["attachedRoutes"], 0);

        // Recomputing from the written status changes nothing.
        let again = gateway_status(
            &gateway(Some(done.clone())),
            &rollout(true),
            Some("10.96.0.20"),
        );
        assert!(status_unchanged(Some(&done), &again));
        assert!(!status_unchanged(Some(&pending), &done));
    }
}
