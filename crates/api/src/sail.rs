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

/// CustomResourceDefinitions for the Sail kinds, generated from these views: the fields
/// meshmig uses are typed, everything else is preserved. Test environments install them
/// when no published Sail CRD is available.
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    [("Istio", "istios"), ("IstioCNI", "istiocnis"), ("ZTunnel", "ztunnels")]
        .into_iter()
        .filter_map(|(kind, plural)| {
            let crd = serde_json::json!({
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": format!("{plural}.sailoperator.io")},
                "spec": {
                    "group": "sailoperator.io",
                    "scope": "Cluster",
                    "names": {
                        "kind": kind,
                        "listKind": format!("{kind}List"),
                        "plural": plural,
                        "singular": kind.to_lowercase(),
                    },
                    "versions": [{
                        "name": "v1",
                        "served": true,
                        "storage": true,
                        "subresources": {"status": {}},
                        "additionalPrinterColumns": [
                            {"name": "Profile", "type": "string", "jsonPath": ".spec.profile"},
                            {"name": "Version", "type": "string", "jsonPath": ".spec.version"},
                            {"name": "Status", "type": "string", "jsonPath": ".status.state"},
                        ],
                        "schema": {"openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "x-kubernetes-preserve-unknown-fields": true,
                                    "properties": {
                                        "version": {"type": "string"},
                                        "namespace": {"type": "string"},
                                        "profile": {"type": "string"},
                                        "values": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                                    },
                                },
                                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                            },
                        }},
                    }],
                },
            });
            serde_json::from_value(crd).ok()
        })
        .collect()
}
