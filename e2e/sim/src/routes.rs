//! HTTPRoute status for mesh routes (parentRef of kind Service), as istiod writes it: one
//! `status.parents[]` entry per Service parent, with `Accepted` (the parent Service exists) and
//! `ResolvedRefs` (every backendRef is an existing Service). Routes attached to Gateways are
//! left to whatever implements those Gateways.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::controller::{describe, drain, error_policy, patch_status, status_unchanged};
use crate::views::{HttpRoute, ObjectRef as RouteRef};
use crate::{Ctx, Error, Result, conditions};

/// `controllerName` istiod uses in route status.
pub const ISTIO_GATEWAY_CONTROLLER: &str = "istio.io/gateway-controller";

/// `(namespace, name)` of every Service a route refers to: Service parents and backends.
pub fn referenced_services(route: &HttpRoute) -> BTreeSet<(String, String)> {
    let route_ns = route.namespace().unwrap_or_default();
    let parents = route
        .spec
        .parent_refs
        .iter()
        .filter(|p| p.is_service("Gateway"));
    let backends = route
        .spec
        .rules
        .iter()
        .flat_map(|r| &r.backend_refs)
        .filter(|b| b.is_service("Service"));
    parents
        .chain(backends)
        .map(|r| {
            (
                r.namespace.clone().unwrap_or_else(|| route_ns.clone()),
                r.name.clone(),
            )
        })
        .collect()
}

/// The route's `status.parents`, given which of its referenced Services exist; `None` when
/// the route has no Service parent (not a mesh route).
pub fn route_parents(route: &HttpRoute, exists: &dyn Fn(&str, &str) -> bool) -> Option<Value> {
    let route_ns = route.namespace().unwrap_or_default();
    let generation = route.metadata.generation;
    let service_parents: Vec<&RouteRef> = route
        .spec
        .parent_refs
        .iter()
        .filter(|p| p.is_service("Gateway"))
        .collect();
    if service_parents.is_empty() {
        return None;
    }

    let mut unresolved = Vec::new();
    for backend in route.spec.rules.iter().flat_map(|r| &r.backend_refs) {
        let ns = backend.namespace.as_deref().unwrap_or(&route_ns);
        if !backend.is_service("Service") {
            unresolved.push((
                "InvalidKind",
                format!("backendRef {} is not a Service", backend.name),
            ));
        } else if !exists(ns, &backend.name) {
            unresolved.push((
                "BackendNotFound",
                format!("backend Service {ns}/{} not found", backend.name),
            ));
        }
    }
    let resolved = match unresolved.first() {
        None => conditions::new(
            "ResolvedRefs",
            true,
            "ResolvedRefs",
            "All references resolved",
            generation,
        ),
        Some((reason, _)) => {
            let message = unresolved
                .iter()
                .map(|(_, m)| m.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            conditions::new("ResolvedRefs", false, reason, message, generation)
        }
    };

    let old_parents: Vec<Value> = route
        .status
        .as_ref()
        .and_then(|s| s.get("parents"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    // Entries written by other controllers stay.
    let mut parents: Vec<Value> = old_parents
        .iter()
        .filter(|p| {
            p.get("controllerName").and_then(Value::as_str) != Some(ISTIO_GATEWAY_CONTROLLER)
        })
        .cloned()
        .collect();
    for parent in service_parents {
        let parent_ref = serde_json::to_value(parent).unwrap_or(Value::Null);
        let ns = parent.namespace.as_deref().unwrap_or(&route_ns);
        let accepted = if exists(ns, &parent.name) {
            conditions::new("Accepted", true, "Accepted", "Route was valid", generation)
        } else {
            conditions::new(
                "Accepted",
                false,
                "NoMatchingParent",
                format!("parent Service {ns}/{} not found", parent.name),
                generation,
            )
        };
        let old = old_parents.iter().find(|p| {
            p.get("controllerName").and_then(Value::as_str) == Some(ISTIO_GATEWAY_CONTROLLER)
                && p.get("parentRef") == Some(&parent_ref)
        });
        let merged = conditions::merge(&conditions::read(old), vec![accepted, resolved.clone()]);
        parents.push(json!({"parentRef": parent_ref, "controllerName": ISTIO_GATEWAY_CONTROLLER, "conditions": merged}));
    }
    Some(Value::Array(parents))
}

async fn existing_services(
    client: &Client,
    refs: BTreeSet<(String, String)>,
) -> Result<BTreeSet<(String, String)>> {
    let mut found = BTreeSet::new();
    for (ns, name) in refs {
        let service = Api::<Service>::namespaced(client.clone(), &ns)
            .get_opt(&name)
            .await
            .map_err(|e| Error::kube("get", format!("Service {ns}/{name}"), e))?;
        if service.is_some() {
            found.insert((ns, name));
        }
    }
    Ok(found)
}

async fn reconcile(route: Arc<HttpRoute>, ctx: Arc<Ctx>) -> Result<Action> {
    if route.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let found = existing_services(&ctx.client, referenced_services(&route)).await?;
    let exists = |ns: &str, name: &str| found.contains(&(ns.to_string(), name.to_string()));
    let Some(parents) = route_parents(&route, &exists) else {
        return Ok(Action::await_change());
    };
    let status = json!({"parents": parents});
    if !status_unchanged(route.status.as_ref(), &status) {
        let api: Api<HttpRoute> =
            Api::namespaced(ctx.client.clone(), &route.namespace().unwrap_or_default());
        patch_status(&api, &route.name_any(), status, describe(route.as_ref())).await?;
        info!(route = %describe(route.as_ref()), "HTTPRoute status");
    }
    Ok(Action::requeue(ctx.config.resync))
}

/// Runs until `token` is cancelled.
pub(crate) async fn run(ctx: Arc<Ctx>, token: CancellationToken) {
    let client = ctx.client.clone();
    let controller = Controller::new(
        Api::<HttpRoute>::all(client.clone()),
        watcher::Config::default(),
    );
    let routes = controller.store();
    let stream = controller
        // A Service appearing or disappearing changes Accepted/ResolvedRefs of routes naming it.
        .watches(
            Api::<Service>::all(client),
            watcher::Config::default(),
            move |svc: Service| {
                let key = (svc.namespace().unwrap_or_default(), svc.name_any());
                routes
                    .state()
                    .into_iter()
                    .filter(|r| referenced_services(r).contains(&key))
                    .map(|r| ObjectRef::from_obj(r.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .with_config(crate::controller::config())
        .graceful_shutdown_on(token.cancelled_owned())
        .run(reconcile, error_policy, ctx);
    drain("httproute", stream).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(status: Option<Value>) -> HttpRoute {
        serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "reviews", "namespace": "bookinfo", "generation": 1},
            "spec": {
                "parentRefs": [{"group": "", "kind": "Service", "name": "reviews", "port": 9080}],
                "rules": [{"backendRefs": [{"name": "reviews-v1", "port": 9080}, {"name": "reviews-v2", "port": 9080}]}],
            },
            "status": status,
        }))
        .unwrap()
    }

    fn condition(parent: &Value, type_: &str) -> (String, String) {
        let c = parent["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == type_)
            .unwrap();
        (
            c["status"].as_str().unwrap().to_string(),
            c["reason"].as_str().unwrap().to_string(),
        )
    }

    #[test]
    fn references_default_to_the_route_namespace() {
        let refs = referenced_services(&route(None));
        assert!(refs.contains(&("bookinfo".into(), "reviews".into())));
        assert!(refs.contains(&("bookinfo".into(), "reviews-v2".into())));
    }

    #[test]
    fn accepted_and_resolved_follow_existing_services() {
        let all = |_: &str, _: &str| true;
        let parents = route_parents(&route(None), &all).unwrap();
        let parent = &parents[0];
        assert_eq!(parent["controllerName"], ISTIO_GATEWAY_CONTROLLER);
        assert_eq!(
            parent["parentRef"],
            json!({"group": "", "kind": "Service", "name": "reviews", "port": 9080})
        );
        assert_eq!(
            condition(parent, "Accepted"),
            ("True".into(), "Accepted".into())
        );
        assert_eq!(
            condition(parent, "ResolvedRefs"),
            ("True".into(), "ResolvedRefs".into())
        );

        let no_v2 = |_: &str, name: &str| name != "reviews-v2";
        let parents = route_parents(&route(None), &no_v2).unwrap();
        assert_eq!(
            condition(&parents[0], "ResolvedRefs"),
            ("False".into(), "BackendNotFound".into())
        );

        let none = |_: &str, _: &str| false;
        let parents = route_parents(&route(None), &none).unwrap();
        assert_eq!(
            condition(&parents[0], "Accepted"),
            ("False".into(), "NoMatchingParent".into())
        );
    }

    #[test]
    fn other_controllers_entries_are_kept() {
        let other = json!({"parents": [{"controllerName": "example.com/gw", "parentRef": {"name": "gw"}, "conditions": []}]});
        let parents = route_parents(&route(Some(other)), &|_: &str, _: &str| true).unwrap();
        assert_eq!(parents.as_array().unwrap().len(), 2);
        assert_eq!(parents[0]["controllerName"], "example.com/gw");
    }

    #[test]
    fn gateway_routes_are_not_ours() {
        let mut r = route(None);
        r.spec.parent_refs[0].kind = None; // defaults to Gateway
        assert!(route_parents(&r, &|_: &str, _: &str| true).is_none());
    }
}
