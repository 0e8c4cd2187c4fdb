//! istiod's sidecar-injection decision and a stand-in for its injection template, as pure
//! functions. The webhook in [`crate::webhook`] only adds I/O around them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use meshmig_api::names::istio as n;
use serde_json::{Value, json};

/// Label the injector sets on every injected Pod.
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";
/// Canonical-service labels the injector fills in when absent.
pub const CANONICAL_NAME_LABEL: &str = "service.istio.io/canonical-name";
/// See [`CANONICAL_NAME_LABEL`].
pub const CANONICAL_REVISION_LABEL: &str = "service.istio.io/canonical-revision";

/// Whether a Pod gets a sidecar, and why not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Inject, for this control-plane revision.
    Inject {
        /// `istio.io/rev` that selected the injector, `default` otherwise.
        revision: String,
    },
    /// Leave the Pod alone.
    Skip(String),
}

/// Istio's injection policy for a Pod being created in a namespace with `namespace_labels`:
///
/// - never for hostNetwork Pods, Pods with `sidecar.istio.io/inject: "false"` (label or
///   annotation), or Pods that already have a sidecar;
/// - namespace `istio-injection=enabled` injects, any other value of that label does not;
/// - otherwise `istio.io/rev` on the namespace (or on the Pod) injects that revision;
/// - otherwise a Pod label `sidecar.istio.io/inject: "true"` injects.
pub fn decide(namespace_labels: &BTreeMap<String, String>, pod: &Pod) -> Decision {
    let empty = BTreeMap::new();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    let skip = |why: &str| Decision::Skip(why.to_string());

    if has_sidecar(pod) {
        return skip("already injected");
    }
    if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
        return skip("hostNetwork pod");
    }
    if labels.get(n::SIDECAR_INJECT).map(String::as_str) == Some("false") {
        return skip("pod label sidecar.istio.io/inject=false");
    }
    if annotations.get(n::SIDECAR_INJECT).map(String::as_str) == Some("false") {
        return skip("pod annotation sidecar.istio.io/inject=false");
    }
    match namespace_labels.get(n::INJECTION).map(String::as_str) {
        Some("enabled") => {
            return Decision::Inject {
                revision: "default".into(),
            };
        }
        Some(other) => return Decision::Skip(format!("namespace label istio-injection={other}")),
        None => {}
    }
    if let Some(rev) = namespace_labels.get(n::REV).or_else(|| labels.get(n::REV)) {
        return Decision::Inject {
            revision: rev.clone(),
        };
    }
    if labels.get(n::SIDECAR_INJECT).map(String::as_str) == Some("true") {
        return Decision::Inject {
            revision: "default".into(),
        };
    }
    skip("no injection label on the namespace or the pod")
}

/// `true` when the Pod already carries a sidecar (status annotation or `istio-proxy`).
pub fn has_sidecar(pod: &Pod) -> bool {
    let annotated = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(n::SIDECAR_STATUS));
    let container = pod.spec.as_ref().is_some_and(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .any(|c| c.name == n::PROXY_CONTAINER)
    });
    annotated || container
}

/// What is injected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sidecar {
    /// Image tag of `proxyv2`.
    pub version: String,
    /// The control plane is ambient: the sidecar speaks HBONE.
    pub hbone: bool,
    /// Revision recorded in the status annotation.
    pub revision: String,
    /// Namespace of istiod, for the discovery address.
    pub istiod_namespace: String,
}

/// The `PROXY_CONFIG` env value: JSON, with `proxyMetadata.ISTIO_META_ENABLE_HBONE` only for
/// HBONE sidecars.
pub fn proxy_config(sidecar: &Sidecar) -> String {
    let mut config =
        json!({"discoveryAddress": format!("istiod.{}.svc:15012", sidecar.istiod_namespace)});
    if sidecar.hbone {
        config["proxyMetadata"] = json!({ n::ENABLE_HBONE: "true" });
    }
    config.to_string()
}

/// The `sidecar.istio.io/status` annotation, shaped like Istio's.
pub fn status_annotation(revision: &str) -> String {
    json!({
        "initContainers": null,
        "containers": [n::PROXY_CONTAINER],
        "volumes": null,
        "imagePullSecrets": null,
        "revision": revision,
    })
    .to_string()
}

/// Escapes one JSON Pointer reference token (RFC 6901): `~` → `~0`, `/` → `~1`.
pub fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn add(path: String, value: Value) -> Value {
    json!({"op": "add", "path": path, "value": value})
}

/// The JSON Patch (RFC 6902) operations that inject `sidecar` into `pod`.
pub fn patch(pod: &Pod, sidecar: &Sidecar) -> Vec<Value> {
    let mut ops = Vec::new();
    let labels = pod.metadata.labels.clone();
    if labels.is_none() {
        ops.push(add("/metadata/labels".into(), json!({})));
    }
    if pod.metadata.annotations.is_none() {
        ops.push(add("/metadata/annotations".into(), json!({})));
    }
    let labels = labels.unwrap_or_default();
    let label =
        |key: &str, value: &str| add(format!("/metadata/labels/{}", escape(key)), json!(value));

    ops.push(add(
        format!("/metadata/annotations/{}", escape(n::SIDECAR_STATUS)),
        json!(status_annotation(&sidecar.revision)),
    ));
    ops.push(label(TLS_MODE_LABEL, "istio"));
    if !labels.contains_key(CANONICAL_NAME_LABEL) {
        ops.push(label(CANONICAL_NAME_LABEL, &canonical_name(pod)));
    }
    if !labels.contains_key(CANONICAL_REVISION_LABEL) {
        let revision = labels
            .get("app.kubernetes.io/version")
            .or_else(|| labels.get("version"))
            .map(String::as_str)
            .unwrap_or("latest");
        ops.push(label(CANONICAL_REVISION_LABEL, revision));
    }
    if sidecar.hbone {
        ops.push(label(n::TUNNEL, "http"));
    }

    let mut env = vec![json!({"name": n::PROXY_CONFIG_ENV, "value": proxy_config(sidecar)})];
    if sidecar.hbone {
        // The injection template also exports every proxyMetadata entry as an env var.
        env.push(json!({"name": n::ENABLE_HBONE, "value": "true"}));
    }
    ops.push(add(
        "/spec/containers/-".into(),
        json!({
            "name": n::PROXY_CONTAINER,
            "image": format!("docker.io/istio/proxyv2:{}", sidecar.version),
            "args": ["proxy", "sidecar"],
            "env": env,
            "ports": [{"name": "http-envoy-prom", "containerPort": 15090, "protocol": "TCP"}],
        }),
    ));
    ops
}

/// The workload name Istio would use for the canonical-service label.
fn canonical_name(pod: &Pod) -> String {
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    if let Some(name) = labels
        .get("app.kubernetes.io/name")
        .or_else(|| labels.get("app"))
    {
        return name.clone();
    }
    pod.metadata
        .name
        .clone()
        .or_else(|| {
            pod.metadata
                .generate_name
                .as_ref()
                .map(|g| g.trim_end_matches('-').to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn pod(value: Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn plain_pod() -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "app", "image": "app"}]}})
    }

    fn inject(rev: &str) -> Decision {
        Decision::Inject {
            revision: rev.into(),
        }
    }

    #[test]
    fn injection_policy() {
        let plain = pod(plain_pod());
        let enabled = labels(&[("istio-injection", "enabled")]);
        assert_eq!(decide(&enabled, &plain), inject("default"));
        assert_eq!(
            decide(&labels(&[("istio.io/rev", "canary")]), &plain),
            inject("canary")
        );
        // istio-injection wins over istio.io/rev, in both directions.
        assert_eq!(
            decide(
                &labels(&[("istio-injection", "enabled"), ("istio.io/rev", "canary")]),
                &plain
            ),
            inject("default")
        );
        assert!(matches!(
            decide(
                &labels(&[("istio-injection", "disabled"), ("istio.io/rev", "canary")]),
                &plain
            ),
            Decision::Skip(_)
        ));
        assert!(matches!(
            decide(&BTreeMap::new(), &plain),
            Decision::Skip(_)
        ));

        let mut opt_in = plain_pod();
        opt_in["metadata"]["labels"] = json!({"sidecar.istio.io/inject": "true"});
        assert_eq!(
            decide(&BTreeMap::new(), &pod(opt_in.clone())),
            inject("default")
        );
        assert!(matches!(
            decide(&labels(&[("istio-injection", "disabled")]), &pod(opt_in)),
            Decision::Skip(_)
        ));

        let mut opt_out_label = plain_pod();
        opt_out_label["metadata"]["labels"] = json!({"sidecar.istio.io/inject": "false"});
        let mut opt_out_annotation = plain_pod();
        opt_out_annotation["metadata"]["annotations"] = json!({"sidecar.istio.io/inject": "false"});
        let mut host_network = plain_pod();
        host_network["spec"]["hostNetwork"] = json!(true);
        let mut injected = plain_pod();
        injected["metadata"]["annotations"] = json!({"sidecar.istio.io/status": "{}"});
        for p in [opt_out_label, opt_out_annotation, host_network, injected] {
            assert!(
                matches!(decide(&enabled, &pod(p.clone())), Decision::Skip(_)),
                "{p}"
            );
        }

        let mut rev_pod = plain_pod();
        rev_pod["metadata"]["labels"] = json!({"istio.io/rev": "stable"});
        assert_eq!(decide(&BTreeMap::new(), &pod(rev_pod)), inject("stable"));
    }

    #[test]
    fn pointer_tokens_are_escaped() {
        assert_eq!(
            escape("security.istio.io/tlsMode"),
            "security.istio.io~1tlsMode"
        );
        assert_eq!(escape("a~b/c"), "a~0b~1c");
    }

    fn sidecar(hbone: bool) -> Sidecar {
        Sidecar {
            version: "1.27.0".into(),
            hbone,
            revision: "default".into(),
            istiod_namespace: "istio-system".into(),
        }
    }

    fn apply(pod: &Value, ops: Vec<Value>) -> Value {
        let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops)).unwrap();
        let mut out = pod.clone();
        json_patch::patch(&mut out, &patch).unwrap();
        out
    }

    #[test]
    fn patch_applies_to_a_pod_without_labels_or_annotations() {
        let raw = plain_pod();
        let ops = patch(&pod(raw.clone()), &sidecar(false));
        assert!(
            ops.iter()
                .any(|op| op["path"] == "/metadata/labels/security.istio.io~1tlsMode")
        );
        let out = apply(&raw, ops);
        assert_eq!(
            out["metadata"]["labels"]["security.istio.io/tlsMode"],
            "istio"
        );
        assert_eq!(
            out["metadata"]["labels"]["service.istio.io/canonical-name"],
            "p"
        );
        assert_eq!(
            out["metadata"]["labels"].get("networking.istio.io/tunnel"),
            None
        );
        let status: Value = serde_json::from_str(
            out["metadata"]["annotations"]["sidecar.istio.io/status"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(status["containers"], json!(["istio-proxy"]));
        let proxy = &out["spec"]["containers"][1];
        assert_eq!(proxy["name"], "istio-proxy");
        assert_eq!(proxy["image"], "docker.io/istio/proxyv2:1.27.0");
        assert_eq!(
            proxy["env"],
            json!([{"name": "PROXY_CONFIG", "value": r#"{"discoveryAddress":"istiod.istio-system.svc:15012"}"#}])
        );
        // The result is still a valid Pod, and now has a sidecar.
        assert!(has_sidecar(&pod(out)));
    }

    #[test]
    fn hbone_sidecars_carry_metadata_and_tunnel_label() {
        let mut raw = plain_pod();
        raw["metadata"]["labels"] = json!({"app": "reviews", "version": "v2"});
        raw["metadata"]["annotations"] = json!({"keep": "me"});
        let out = apply(&raw, patch(&pod(raw.clone()), &sidecar(true)));
        let labels = &out["metadata"]["labels"];
        assert_eq!(labels["networking.istio.io/tunnel"], "http");
        assert_eq!(labels["app"], "reviews");
        assert_eq!(labels["service.istio.io/canonical-name"], "reviews");
        assert_eq!(labels["service.istio.io/canonical-revision"], "v2");
        assert_eq!(out["metadata"]["annotations"]["keep"], "me");
        let env = &out["spec"]["containers"][1]["env"];
        let config: Value = serde_json::from_str(env[0]["value"].as_str().unwrap()).unwrap();
        assert_eq!(config["proxyMetadata"]["ISTIO_META_ENABLE_HBONE"], "true");
        assert_eq!(
            env[1],
            json!({"name": "ISTIO_META_ENABLE_HBONE", "value": "true"})
        );
    }
}
