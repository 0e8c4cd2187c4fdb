//! Lenient partial views of the Gateway API kinds the simulator reads. Only the fields it uses
//! are typed; anything else (including fields of Gateway API versions newer than any Rust
//! binding) is kept, so no object the API server accepted can stall a watch.

use std::collections::BTreeMap;

use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};
use serde::{Deserialize, Serialize};
use serde_json::Value;

type Extra = BTreeMap<String, Value>;

/// Spec of a GatewayClass.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GatewayClassSpec {
    /// Controller that implements the class.
    #[serde(default)]
    pub controller_name: String,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

meshmig_api::partial_view!(
    /// `gateway.networking.k8s.io` GatewayClass.
    GatewayClass, GatewayClassSpec, group = "gateway.networking.k8s.io", version = "v1",
    kind = "GatewayClass", plural = "gatewayclasses", scope = ClusterResourceScope
);

/// Spec of a Gateway.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    /// Class of the Gateway (`istio-waypoint` for waypoints).
    #[serde(default)]
    pub gateway_class_name: String,
    /// Listeners; only their names are reported back in status.
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A Gateway listener.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    /// Listener name.
    #[serde(default)]
    pub name: String,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

meshmig_api::partial_view!(
    /// `gateway.networking.k8s.io` Gateway.
    Gateway, GatewaySpec, group = "gateway.networking.k8s.io", version = "v1",
    kind = "Gateway", plural = "gateways", scope = NamespaceResourceScope
);

/// Spec of an HTTPRoute.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteSpec {
    /// Parents the route attaches to.
    #[serde(default)]
    pub parent_refs: Vec<ObjectRef>,
    /// Rules; only their backends are read.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

/// An HTTPRoute rule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// Backends of the rule.
    #[serde(default)]
    pub backend_refs: Vec<ObjectRef>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A parentRef or backendRef; unknown fields (port, sectionName, weight, …) are kept so a
/// parentRef can be echoed back in status exactly as given.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// API group; empty or absent for core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind; absent means the reference's default kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Namespace; absent means the route's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

impl ObjectRef {
    /// `true` when this refers to a core `Service` (`kind` defaults to `default_kind`).
    pub fn is_service(&self, default_kind: &str) -> bool {
        let group_is_core = matches!(self.group.as_deref(), None | Some("") | Some("core"));
        group_is_core && self.kind.as_deref().unwrap_or(default_kind) == "Service"
    }
}

meshmig_api::partial_view!(
    /// `gateway.networking.k8s.io` HTTPRoute.
    HttpRoute, HttpRouteSpec, group = "gateway.networking.k8s.io", version = "v1",
    kind = "HTTPRoute", plural = "httproutes", scope = NamespaceResourceScope
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_refs_round_trip_with_unknown_fields() {
        let route: HttpRoute = serde_json::from_value(serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "reviews", "namespace": "bookinfo"},
            "spec": {
                "parentRefs": [{"group": "", "kind": "Service", "name": "reviews", "port": 9080}],
                "rules": [{"backendRefs": [{"name": "reviews-v1", "port": 9080, "weight": 90}], "matches": []}],
                "hostnames": ["x"],
            },
        }))
        .unwrap();
        let parent = &route.spec.parent_refs[0];
        assert!(parent.is_service("Gateway"));
        assert_eq!(
            serde_json::to_value(parent).unwrap(),
            serde_json::json!({"group": "", "kind": "Service", "name": "reviews", "port": 9080})
        );
        assert!(route.spec.rules[0].backend_refs[0].is_service("Service"));
        assert!(!route.spec.rules[0].backend_refs[0].is_service("Gateway"));
        assert!(route.spec.extra.contains_key("hostnames"));
    }
}
