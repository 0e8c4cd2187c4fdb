//! A lenient partial view of the Gateway API Gateway, which the probe judge reads to find a
//! waypoint. Only the fields it uses are typed; anything else (including fields of Gateway
//! API versions newer than any Rust binding) is kept, so no Gateway the API server accepted
//! fails to parse.

use std::collections::BTreeMap;

use k8s_openapi::NamespaceResourceScope;
use serde::{Deserialize, Serialize};
use serde_json::Value;

type Extra = BTreeMap<String, Value>;

/// Spec of a Gateway: only the class is typed (the probe judge reads metadata and status).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    /// Class of the Gateway (`istio-waypoint` for waypoints).
    #[serde(default)]
    pub gateway_class_name: String,
    /// Everything else (listeners, addresses, …).
    #[serde(flatten)]
    pub extra: Extra,
}

meshmig_api::partial_view!(
    /// `gateway.networking.k8s.io` Gateway.
    Gateway, GatewaySpec, group = "gateway.networking.k8s.io", version = "v1",
    kind = "Gateway", plural = "gateways", scope = NamespaceResourceScope
);
