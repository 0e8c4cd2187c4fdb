//! Whether a Deployment or DaemonSet has finished rolling out, as `kubectl rollout status`
//! decides it.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use kube::ResourceExt;

/// Rollout state of a workload, with a one-line summary for status messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rollout {
    /// Every desired replica runs the current template and is available.
    pub ready: bool,
    /// e.g. `Deployment istio-system/istiod: 1/1 updated, 0/1 available`.
    pub summary: String,
}

/// Rollout state of a Deployment.
pub fn deployment(d: &Deployment) -> Rollout {
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = d.status.clone().unwrap_or_default();
    let observed = status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let ready = observed && updated >= desired && available >= desired && total <= updated;
    let summary = format!(
        "Deployment {}/{}: {updated}/{desired} updated, {available}/{desired} available{}{}",
        d.namespace().unwrap_or_default(),
        d.name_any(),
        if total > updated {
            format!(", {} old", total - updated)
        } else {
            String::new()
        },
        if observed {
            ""
        } else {
            ", new generation not yet observed"
        },
    );
    Rollout { ready, summary }
}

/// Rollout state of a DaemonSet: ready when it runs, updated and available, on every node it
/// should run on (and there is at least one).
pub fn daemonset(ds: &DaemonSet) -> Rollout {
    let status = ds.status.clone().unwrap_or_default();
    let observed = status.observed_generation.unwrap_or(0) >= ds.metadata.generation.unwrap_or(0);
    let desired = status.desired_number_scheduled;
    let updated = status.updated_number_scheduled.unwrap_or(0);
    let available = status.number_available.unwrap_or(0);
    let ready = observed
        && desired > 0
        && updated >= desired
        && available >= desired
        && status.number_ready >= desired;
    let summary = format!(
        "DaemonSet {}/{}: {updated}/{desired} nodes updated, {available}/{desired} available{}",
        ds.namespace().unwrap_or_default(),
        ds.name_any(),
        if observed {
            ""
        } else {
            ", new generation not yet observed"
        },
    );
    Rollout { ready, summary }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy(generation: i64, status: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "istiod", "namespace": "istio-system", "generation": generation},
            "spec": {"replicas": 1, "selector": {}, "template": {}},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn deployment_ready_only_when_current_generation_is_available() {
        let done = json!({"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1});
        assert!(deployment(&deploy(2, done.clone())).ready);
        let stale = deployment(&deploy(3, done));
        assert!(!stale.ready);
        assert!(
            stale.summary.contains("not yet observed"),
            "{}",
            stale.summary
        );
        let rolling = json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 1});
        let rolling = deployment(&deploy(2, rolling));
        assert!(!rolling.ready);
        assert!(rolling.summary.contains("1 old"), "{}", rolling.summary);
        assert!(!deployment(&deploy(1, json!({}))).ready);
    }

    #[test]
    fn daemonset_needs_every_node() {
        let ds = |desired: i32, ready: i32| -> DaemonSet {
            serde_json::from_value(json!({
                "metadata": {"name": "ztunnel", "namespace": "ztunnel", "generation": 1},
                "spec": {"selector": {}, "template": {}},
                "status": {"observedGeneration": 1, "currentNumberScheduled": desired, "numberMisscheduled": 0,
                    "desiredNumberScheduled": desired, "numberReady": ready, "updatedNumberScheduled": desired,
                    "numberAvailable": ready},
            }))
            .unwrap()
        };
        assert!(daemonset(&ds(2, 2)).ready);
        assert!(!daemonset(&ds(2, 1)).ready);
        assert!(!daemonset(&ds(0, 0)).ready);
        assert_eq!(
            daemonset(&ds(2, 1)).summary,
            "DaemonSet ztunnel/ztunnel: 2/2 nodes updated, 1/2 available"
        );
    }
}
