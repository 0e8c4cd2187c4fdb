//! Outcomes of meshmig's checkpoint probe Pods (label `meshmig.io/probe=<probe>`). The test
//! environment's node agent only gets such a Pod Running; the simulator then completes it,
//! `Succeeded` or `Failed` as ConfigMap `meshmig-sim/meshmig-sim-probes` says for that probe
//! (`pass`, the default, or `fail`). No request is sent: this is how tests make a gate fail.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, PodCondition};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use kube::{Resource, ResourceExt};
use meshmig_api::names;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::conditions::now;
use crate::controller::{describe, drain, error_policy};
use crate::error::is_conflict;
use crate::{Ctx, Error, PROBES_CONFIGMAP, Result, SIM_NAMESPACE};

/// Message of a probe container that passed.
pub const PASSED: &str = "expectation met";
/// Message of a probe container that failed.
pub const FAILED: &str = "expectation not met";

/// Whether probe `probe` passes, and the message its container exits with.
pub fn outcome(data: Option<&BTreeMap<String, String>>, probe: &str) -> (bool, String) {
    match data.and_then(|d| d.get(probe)).map(|v| v.trim()) {
        None | Some("pass") => (true, PASSED.to_string()),
        Some("fail") => (false, FAILED.to_string()),
        Some(other) => (
            false,
            format!(
                "meshmig-sim: unknown outcome {other:?} for probe {probe} in ConfigMap {SIM_NAMESPACE}/{PROBES_CONFIGMAP} (want pass or fail)"
            ),
        ),
    }
}

/// The status patch that ends `pod`: every container terminated (the probe containers with
/// exit code 0 or 1 and `message`, a sidecar with 0), Ready and ContainersReady False.
pub fn terminal_status(pod: &Pod, passed: bool, message: &str) -> Value {
    let finished = now();
    let status = pod.status.clone().unwrap_or_default();
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.clone())
        .unwrap_or_default();
    let statuses: Vec<Value> = containers
        .iter()
        .map(|c| {
            let old = status.container_statuses.iter().flatten().find(|s| s.name == c.name);
            let started = old
                .and_then(|s| s.state.as_ref())
                .and_then(|s| s.running.as_ref())
                .and_then(|r| r.started_at.clone())
                .unwrap_or_else(|| finished.clone());
            let is_probe = c.name != names::istio::PROXY_CONTAINER;
            let (exit_code, reason) = if passed || !is_probe { (0, "Completed") } else { (1, "Error") };
            let mut terminated = json!({
                "exitCode": exit_code,
                "reason": reason,
                "startedAt": started,
                "finishedAt": finished,
            });
            if is_probe {
                terminated["message"] = json!(message);
            }
            if let Some(id) = old.and_then(|s| s.container_id.as_ref()) {
                terminated["containerID"] = json!(id);
            }
            json!({
                "name": c.name,
                "image": old.map(|s| s.image.clone()).or_else(|| c.image.clone()).unwrap_or_default(),
                "imageID": old.map(|s| s.image_id.clone()).unwrap_or_default(),
                "containerID": old.and_then(|s| s.container_id.clone()),
                "ready": false,
                "started": false,
                "restartCount": old.map(|s| s.restart_count).unwrap_or(0),
                "state": {"terminated": terminated},
            })
        })
        .collect();

    let reason = if passed { "PodCompleted" } else { "PodFailed" };
    let mut pod_conditions: Vec<PodCondition> = status.conditions.unwrap_or_default();
    for type_ in ["Ready", "ContainersReady"] {
        let condition = PodCondition {
            type_: type_.to_string(),
            status: "False".to_string(),
            reason: Some(reason.to_string()),
            last_transition_time: Some(finished.clone()),
            observed_generation: pod.meta().generation,
            ..PodCondition::default()
        };
        match pod_conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) => *c = condition,
            None => pod_conditions.push(condition),
        }
    }
    json!({
        "phase": if passed { "Succeeded" } else { "Failed" },
        "message": message,
        "conditions": pod_conditions,
        "containerStatuses": statuses,
    })
}

async fn reconcile(pod: Arc<Pod>, ctx: Arc<Ctx>) -> Result<Action> {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    // Pending: the node agent has not started it yet. Terminal: already decided.
    if pod.metadata.deletion_timestamp.is_some() || phase != Some("Running") {
        return Ok(Action::await_change());
    }
    let probe = pod
        .labels()
        .get(names::LABEL_PROBE)
        .cloned()
        .unwrap_or_default();
    let configmap = Api::<ConfigMap>::namespaced(ctx.client.clone(), SIM_NAMESPACE)
        .get_opt(PROBES_CONFIGMAP)
        .await
        .map_err(|e| {
            Error::kube(
                "get",
                format!("ConfigMap {SIM_NAMESPACE}/{PROBES_CONFIGMAP}"),
                e,
            )
        })?;
    let (passed, message) = outcome(configmap.as_ref().and_then(|c| c.data.as_ref()), &probe);

    let patch = json!({
        "metadata": {"resourceVersion": pod.resource_version()},
        "status": terminal_status(&pod, passed, &message),
    });
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
    match api
        .patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => {
            info!(pod = %describe(pod.as_ref()), probe, passed, "probe completed");
            Ok(Action::await_change())
        }
        // Changed meanwhile (the node agent still settling it): the watch brings the new one.
        Err(e) if is_conflict(&e) => Ok(Action::await_change()),
        Err(e) => Err(Error::kube("complete probe", describe(pod.as_ref()), e)),
    }
}

/// Runs until `token` is cancelled.
pub(crate) async fn run(ctx: Arc<Ctx>, token: CancellationToken) {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let stream = Controller::new(api, watcher::Config::default().labels(names::LABEL_PROBE))
        .with_config(crate::controller::config())
        .graceful_shutdown_on(token.cancelled_owned())
        .run(reconcile, error_policy, ctx);
    drain("probes", stream).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_defaults_to_pass() {
        let data: BTreeMap<String, String> = [
            ("a".to_string(), "fail".to_string()),
            ("b".into(), "typo".into()),
        ]
        .into();
        assert_eq!(outcome(None, "x"), (true, PASSED.to_string()));
        assert_eq!(outcome(Some(&data), "x"), (true, PASSED.to_string()));
        assert_eq!(outcome(Some(&data), "a"), (false, FAILED.to_string()));
        let (passed, message) = outcome(Some(&data), "b");
        assert!(!passed);
        assert!(message.contains("\"typo\""), "{message}");
    }

    #[test]
    fn terminal_status_exits_probe_containers_only_with_failure() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "probe", "namespace": "bookinfo", "labels": {"meshmig.io/probe": "p"}},
            "spec": {"containers": [{"name": "probe", "image": "curl"}, {"name": "istio-proxy", "image": "proxyv2"}]},
            "status": {"phase": "Running", "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "probe", "image": "curl", "imageID": "id", "ready": true, "restartCount": 0,
                    "state": {"running": {"startedAt": "2024-01-01T00:00:00Z"}}}]},
        }))
        .unwrap();
        let status = terminal_status(&pod, false, FAILED);
        assert_eq!(status["phase"], "Failed");
        let probe = &status["containerStatuses"][0]["state"]["terminated"];
        assert_eq!(
            (probe["exitCode"].as_i64(), probe["message"].as_str()),
            (Some(1), Some(FAILED))
        );
        assert_eq!(probe["startedAt"], "2024-01-01T00:00:00Z");
        assert_eq!(
            status["containerStatuses"][1]["state"]["terminated"]["exitCode"],
            0
        );
        let conditions = status["conditions"].as_array().unwrap();
        assert_eq!(conditions.len(), 3);
        assert!(
            conditions
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "False")
        );
        assert_eq!(
            terminal_status(&pod, true, PASSED)["containerStatuses"][0]["state"]["terminated"]["exitCode"],
            0
        );
    }
}
