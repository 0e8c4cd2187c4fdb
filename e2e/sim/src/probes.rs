//! Outcomes of meshmig's checkpoint probe Pods (label `meshmig.io/probe=<probe>`). The test
//! environment's node agent only gets such a Pod Running; nothing runs in it. The simulator
//! then works out what the Pod's curl would get: the path its request takes in the cluster as
//! it is at that moment ([`path`]) and what every proxy on that path enforces, judged by
//! istiod's own code and Envoy/ztunnel matchers ([`enforce`]); it ends the Pod `Succeeded` or
//! `Failed` as the probe script would for that answer ([`request`]).
//!
//! A probe is never passed on a guess: when Istio's code ([`IstioCode`], by default the
//! `meshmig-istio` build) cannot be found or fails, or the request involves something not
//! modelled, the Pod fails with a message saying so.

mod enforce;
mod path;
mod request;

#[cfg(test)]
mod fixtures;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, PodCondition, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use kube::{Client, Resource, ResourceExt};
use meshmig_api::istio::{AuthorizationPolicy, PeerAuthentication};
use meshmig_api::names;
use meshmig_api::sail::Istio;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::conditions::now;
use crate::controller::{describe, drain, error_policy};
use crate::error::{is_conflict, is_not_found};
use crate::views::Gateway;
use crate::{Ctx, Error, Result, workload};

pub use enforce::{IstioCode, LiveIstioCode};
use enforce::{JudgeError, Observed};
use path::{GATEWAY_NAME_LABEL, Mesh, PathError, Snapshot, Workload};
use request::ProbeRequest;

/// How often a probe waiting for the cluster to settle looks again.
const SETTLE_RETRY: Duration = Duration::from_millis(300);
/// How long after the Pod started a probe waits for the cluster to settle before judging
/// the request as things are.
const SETTLE_LIMIT_SECONDS: i64 = 20;
/// Namespace of istiod when no Sail `Istio` names one.
const ISTIOD_NAMESPACE: &str = "istio-system";
/// Label selecting ztunnel DaemonSets (as the Sail simulator creates them).
const ZTUNNEL_SELECTOR: &str = "app=ztunnel";

/// How a probe Pod ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// Whether the script exits 0.
    pub passed: bool,
    /// The termination message of the probe container.
    pub message: String,
}

impl Completion {
    fn failed(message: String) -> Self {
        Self {
            passed: false,
            message,
        }
    }

    /// The script's verdict on the observed response, with the path that led to it.
    fn of(request: &ProbeRequest, observed: &Observed) -> Self {
        let (passed, verdict) = request.expect.judge(&observed.response);
        Self {
            passed,
            message: format!("{verdict} [meshmig-sim: {}]", observed.explanation),
        }
    }
}

/// The MeshConfig: the running one (the `mesh` key of ConfigMap `istio` in istiod's
/// namespace), else the Sail `Istio`'s `values.meshConfig`, else Istio's defaults (trust
/// domain `cluster.local`, root namespace istiod's namespace).
pub fn mesh_settings(istios: &[Istio], running: Option<&Value>) -> Mesh {
    let istio = istios
        .iter()
        .find(|i| i.name_any() == "default")
        .or_else(|| istios.first());
    let sail = istio
        .and_then(|i| i.spec.values.as_ref())
        .and_then(|v| v.get("meshConfig"));
    let setting = |key: &str| {
        [running, sail]
            .into_iter()
            .flatten()
            .find_map(|config| config.get(key)?.as_str().filter(|s| !s.is_empty()))
            .map(str::to_string)
    };
    let istiod_namespace = istiod_namespace(istios);
    Mesh {
        trust_domain: setting("trustDomain").unwrap_or_else(|| Mesh::default().trust_domain),
        root_namespace: setting("rootNamespace").unwrap_or(istiod_namespace),
    }
}

fn istiod_namespace(istios: &[Istio]) -> String {
    istios
        .iter()
        .find_map(|i| i.spec.namespace.clone())
        .unwrap_or_else(|| ISTIOD_NAMESPACE.into())
}

/// Lists every object of a kind whose CRD may be missing (then: none).
async fn list_all<K>(api: Api<K>, what: &str) -> Result<Vec<K>>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.list(&ListParams::default()).await {
        Ok(list) => Ok(list.items),
        Err(e) if is_not_found(&e) => Ok(Vec::new()),
        Err(e) => Err(Error::kube("list", what.to_string(), e)),
    }
}

async fn mesh(client: &Client) -> Result<Mesh> {
    let istios = list_all(Api::<Istio>::all(client.clone()), "Istios").await?;
    let namespace = istiod_namespace(&istios);
    let configmap = Api::<ConfigMap>::namespaced(client.clone(), &namespace)
        .get_opt("istio")
        .await
        .map_err(|e| Error::kube("get", format!("ConfigMap {namespace}/istio"), e))?;
    let running: Option<Value> = configmap
        .and_then(|c| c.data?.get("mesh").cloned())
        .and_then(|yaml| serde_saphyr::from_str(&yaml).ok());
    Ok(mesh_settings(&istios, running.as_ref()))
}

/// What the probe's path depends on: the destination namespace's Services and Pods, waypoint
/// Pods, Gateways, Namespaces, every AuthorizationPolicy and PeerAuthentication, MeshConfig.
async fn snapshot(client: &Client, caller_namespace: &str, host: &str) -> Result<Snapshot> {
    let target = path::service_name(host, caller_namespace).map(|(ns, _)| ns);
    let (services, mut pods) = match &target {
        Some(ns) => (
            list_all(Api::<Service>::namespaced(client.clone(), ns), "Services").await?,
            list_all(Api::<Pod>::namespaced(client.clone(), ns), "Pods").await?,
        ),
        None => (Vec::new(), Vec::new()),
    };
    let waypoint_pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default().labels(GATEWAY_NAME_LABEL))
        .await
        .map_err(|e| Error::kube("list", "waypoint Pods", e))?;
    pods.extend(
        waypoint_pods
            .items
            .into_iter()
            .filter(|p| p.namespace() != target),
    );
    Ok(Snapshot {
        mesh: mesh(client).await?,
        namespaces: list_all(Api::<Namespace>::all(client.clone()), "Namespaces").await?,
        pods,
        services,
        gateways: list_all(Api::<Gateway>::all(client.clone()), "Gateways").await?,
        policies: list_all(
            Api::<AuthorizationPolicy>::all(client.clone()),
            "AuthorizationPolicies",
        )
        .await?,
        peer_authentications: list_all(
            Api::<PeerAuthentication>::all(client.clone()),
            "PeerAuthentications",
        )
        .await?,
    })
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

/// Whether the Pod has been running long enough that a cluster still settling is the state
/// to judge, not a moment to wait out.
fn waited_enough(pod: &Pod) -> bool {
    let started = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| t.0.as_second());
    started.is_none_or(|s| Timestamp::now().as_second() - s > SETTLE_LIMIT_SECONDS)
}

/// The probe's outcome, or `None` while the cluster is settling (Pods about to be captured,
/// a binding being written).
async fn complete(pod: &Pod, ctx: &Ctx) -> Result<Option<Completion>> {
    let request = match ProbeRequest::from_pod(pod) {
        Ok(r) => r,
        Err(why) => return Ok(Some(Completion::failed(format!("meshmig-sim: {why}")))),
    };
    let caller_namespace = pod.namespace().unwrap_or_default();
    let snapshot = snapshot(&ctx.client, &caller_namespace, &request.url.host).await?;
    let settle = !waited_enough(pod);
    if settle {
        let mut pods = path::endpoint_pods(&snapshot, &caller_namespace, &request.url.host);
        pods.push(pod);
        if let Some(why) = path::capture_pending(&snapshot, ztunnel_ready(&ctx.client).await?, pods)
        {
            debug!(pod = %describe(pod), why, "probe waits");
            return Ok(None);
        }
    }
    let caller = Workload::of(pod);
    let code = ctx.config.istio_code.clone();
    let judged = tokio::task::spawn_blocking(move || {
        enforce::observe(code.as_ref(), &snapshot, &caller, &request).map(|o| (request, o))
    })
    .await
    .map_err(|e| Error::invalid(describe(pod), format!("judging the probe panicked: {e}")))?;
    Ok(match judged {
        Ok((request, observed)) => Some(Completion::of(&request, &observed)),
        Err(JudgeError::Path(PathError::Settling(why))) if settle => {
            debug!(pod = %describe(pod), why, "probe waits");
            None
        }
        Err(e) => Some(Completion::failed(format!(
            "meshmig-sim cannot judge this probe, so it fails: {e}"
        ))),
    })
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
    let Some(completion) = complete(&pod, &ctx).await? else {
        return Ok(Action::requeue(SETTLE_RETRY));
    };
    let patch = json!({
        "metadata": {"resourceVersion": pod.resource_version()},
        "status": terminal_status(&pod, completion.passed, &completion.message),
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
            let probe = pod
                .labels()
                .get(names::LABEL_PROBE)
                .cloned()
                .unwrap_or_default();
            info!(pod = %describe(pod.as_ref()), probe, passed = completion.passed, message = completion.message, "probe completed");
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

    fn istio(values: Value) -> Istio {
        serde_json::from_value(json!({"metadata": {"name": "default"}, "spec": {"namespace": "mesh-system", "values": values}}))
            .unwrap()
    }

    #[test]
    fn mesh_settings_prefer_the_running_mesh_config() {
        let sail = [istio(json!({"meshConfig": {"trustDomain": "sail.td"}}))];
        assert_eq!(
            mesh_settings(&sail, None),
            Mesh {
                trust_domain: "sail.td".into(),
                root_namespace: "mesh-system".into()
            }
        );
        let running = json!({"trustDomain": "running.td", "rootNamespace": "root"});
        assert_eq!(
            mesh_settings(&sail, Some(&running)),
            Mesh {
                trust_domain: "running.td".into(),
                root_namespace: "root".into()
            }
        );
        assert_eq!(mesh_settings(&[], None), Mesh::default());
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
        let status = terminal_status(&pod, false, "expected HTTP 200, got HTTP 403");
        assert_eq!(status["phase"], "Failed");
        let probe = &status["containerStatuses"][0]["state"]["terminated"];
        assert_eq!(
            (probe["exitCode"].as_i64(), probe["message"].as_str()),
            (Some(1), Some("expected HTTP 200, got HTTP 403"))
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
            terminal_status(&pod, true, "HTTP 200 as expected")["containerStatuses"][0]["state"]["terminated"]
                ["exitCode"],
            0
        );
    }
}
