//! Partial typed views of the Sail operator's kinds (`sailoperator.io/v1`), all cluster-scoped.

use k8s_openapi::ClusterResourceScope;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::partial_view;
use crate::view::Extra;

/// Spec shared by `Istio`, `IstioCNI` and `ZTunnel`: the fields meshmig reads or sets.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SailSpec {
    /// Istio version, e.g. `v1.27.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Namespace the component is installed in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Profile, e.g. `default` or `ambient`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Helm values passed to the component's chart, kept verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Value>,
    /// Other fields (updateStrategy, …).
    #[serde(flatten)]
    pub extra: Extra,
}

partial_view!(
    /// `sailoperator.io` Istio: the control plane.
    Istio, SailSpec, group = "sailoperator.io", version = "v1",
    kind = "Istio", plural = "istios", scope = ClusterResourceScope
);

partial_view!(
    /// `sailoperator.io` IstioCNI: the CNI node agent.
    IstioCni, SailSpec, group = "sailoperator.io", version = "v1",
    kind = "IstioCNI", plural = "istiocnis", scope = ClusterResourceScope
);

partial_view!(
    /// `sailoperator.io` ZTunnel: the ambient node proxy.
    ZTunnel, SailSpec, group = "sailoperator.io", version = "v1",
    kind = "ZTunnel", plural = "ztunnels", scope = ClusterResourceScope
);

/// `.status.state` of a Sail resource (`Healthy`, `ReconcileError`, …), if reported.
pub fn sail_state(status: Option<&Value>) -> Option<&str> {
    status?.get("state")?.as_str()
}
