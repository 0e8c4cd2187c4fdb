//! The Sail operator, as seen through the API: `Istio`, `IstioCNI` and `ZTunnel` get their
//! workload (istiod Deployment, istio-cni-node and ztunnel DaemonSets), owned by the custom
//! resource, and a `.status.state` of `Healthy` once that workload has rolled out. The
//! fake nodes run nothing, so the istiod Deployment only stands for the real istiod, which
//! runs as a process and is restarted here when the `Istio` profile switches to or from
//! ambient.

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::ClusterResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use kube::api::Api;
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use meshmig_api::names;
use meshmig_api::sail::{Istio, IstioCni, SailSpec, ZTunnel};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::controller::{apply, describe, drain, error_policy, owner_ref, patch_status};
use crate::workload::{self, Rollout};
use crate::{Ctx, Error, MANAGED_BY, Result, conditions, ensure_namespace};

/// `.status.state` of a Sail resource whose workload is rolled out.
pub const STATE_HEALTHY: &str = "Healthy";
/// `.status.state` while the workload is rolling out.
pub const STATE_RECONCILING: &str = "Reconciling";

/// What a Sail kind installs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    /// `Istio`: the istiod Deployment.
    Istiod,
    /// `IstioCNI`: the istio-cni-node DaemonSet.
    Cni,
    /// `ZTunnel`: the ztunnel DaemonSet.
    Ztunnel,
}

impl Component {
    /// Namespace used when `spec.namespace` is empty.
    pub fn default_namespace(self) -> &'static str {
        match self {
            Self::Istiod => "istio-system",
            Self::Cni => "istio-cni",
            Self::Ztunnel => "ztunnel",
        }
    }

    /// Name of the workload.
    pub fn workload_name(self) -> &'static str {
        match self {
            Self::Istiod => "istiod",
            Self::Cni => "istio-cni-node",
            Self::Ztunnel => "ztunnel",
        }
    }

    /// Kind of the Sail resource.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Istiod => "Istio",
            Self::Cni => "IstioCNI",
            Self::Ztunnel => "ZTunnel",
        }
    }
}

/// The three Sail kinds, seen alike.
pub trait SailResource:
    Resource<DynamicType = (), Scope = ClusterResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// What this kind installs.
    const COMPONENT: Component;
    /// The spec fields shared by every Sail kind.
    fn sail_spec(&self) -> &SailSpec;
    /// The status as stored.
    fn sail_status(&self) -> Option<&Value>;
}

macro_rules! sail_resource {
    ($ty:ty, $component:expr) => {
        impl SailResource for $ty {
            const COMPONENT: Component = $component;
            fn sail_spec(&self) -> &SailSpec {
                &self.spec
            }
            fn sail_status(&self) -> Option<&Value> {
                self.status.as_ref()
            }
        }
    };
}
sail_resource!(Istio, Component::Istiod);
sail_resource!(IstioCni, Component::Cni);
sail_resource!(ZTunnel, Component::Ztunnel);

/// Image tag for a Sail `spec.version` (`v1.27.0` → `1.27.0`).
pub fn image_tag(version: Option<&str>, default: &str) -> String {
    version
        .map(|v| v.trim().trim_start_matches('v'))
        .filter(|v| !v.is_empty())
        .unwrap_or(default)
        .to_string()
}

fn labels(app: &str) -> Value {
    json!({"app": app, names::LABEL_MANAGED_BY: MANAGED_BY})
}

/// Pod labels shared by every control-plane workload: never injected, never captured.
fn pod_labels(app: &str) -> Value {
    json!({"app": app, names::istio::SIDECAR_INJECT: "false", names::istio::DATAPLANE_MODE: "none"})
}

/// The istiod Deployment. `PILOT_ENABLE_AMBIENT` is set only for the ambient profile, which
/// is what a rollout (new pod template) keys on when the profile changes.
pub fn istiod_deployment(namespace: &str, version: &str, ambient: bool, owner: &Value) -> Value {
    let mut env = vec![json!({"name": "REVISION", "value": "default"})];
    if ambient {
        env.push(json!({"name": names::istio::PILOT_ENABLE_AMBIENT, "value": "true"}));
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "istiod",
            "namespace": namespace,
            "labels": labels("istiod"),
            "ownerReferences": [owner],
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "istiod"}},
            "template": {
                "metadata": {"labels": pod_labels("istiod")},
                "spec": {
                    "containers": [{
                        "name": "discovery",
                        "image": format!("docker.io/istio/pilot:{version}"),
                        "args": ["discovery"],
                        "env": env,
                        "ports": [{"name": "grpc-xds", "containerPort": 15012}],
                    }],
                },
            },
        },
    })
}

fn daemonset(namespace: &str, name: &str, container: Value, owner: &Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels(name),
            "ownerReferences": [owner],
        },
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": pod_labels(name)},
                "spec": {
                    "containers": [container],
                    // Node agents run on every node, tainted or not.
                    "tolerations": [{"operator": "Exists"}],
                },
            },
        },
    })
}

/// The istio-cni-node DaemonSet; the ambient profile turns on its ambient support.
pub fn cni_daemonset(namespace: &str, version: &str, ambient: bool, owner: &Value) -> Value {
    let container = json!({
        "name": "install-cni",
        "image": format!("docker.io/istio/install-cni:{version}"),
        "env": [{"name": "AMBIENT_ENABLED", "value": if ambient { "true" } else { "false" }}],
    });
    daemonset(namespace, "istio-cni-node", container, owner)
}

/// The ztunnel DaemonSet.
pub fn ztunnel_daemonset(namespace: &str, version: &str, owner: &Value) -> Value {
    let container = json!({
        "name": "istio-proxy",
        "image": format!("docker.io/istio/ztunnel:{version}"),
        "args": ["proxy", "ztunnel"],
    });
    daemonset(namespace, "ztunnel", container, owner)
}

/// The status a Sail resource should have for its workload's rollout, or `None` when the
/// stored status already says so (nothing to write).
pub fn desired_status(
    generation: Option<i64>,
    rollout: &Rollout,
    current: Option<&Value>,
) -> Option<Value> {
    let state = if rollout.ready {
        STATE_HEALTHY
    } else {
        STATE_RECONCILING
    };
    let ready = if rollout.ready {
        conditions::new(
            "Ready",
            true,
            "Healthy",
            rollout.summary.clone(),
            generation,
        )
    } else {
        conditions::new(
            "Ready",
            false,
            "Progressing",
            rollout.summary.clone(),
            generation,
        )
    };
    let reconciled = conditions::new(
        "Reconciled",
        true,
        "ReconcileSuccess",
        "workload applied",
        generation,
    );
    let have = conditions::read(current);
    let merged = conditions::merge(&have, vec![reconciled, ready]);
    let unchanged = current.and_then(|s| s.get("state")).and_then(Value::as_str) == Some(state)
        && current
            .and_then(|s| s.get("observedGeneration"))
            .and_then(Value::as_i64)
            == generation
        && conditions::equivalent(&have, &merged);
    (!unchanged)
        .then(|| json!({"state": state, "observedGeneration": generation, "conditions": merged}))
}

async fn reconcile<K: SailResource>(obj: Arc<K>, ctx: Arc<Ctx>) -> Result<Action> {
    if obj.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change()); // garbage collection removes the workload
    }
    let component = K::COMPONENT;
    let spec = obj.sail_spec();
    let namespace = spec
        .namespace
        .as_deref()
        .filter(|ns| !ns.is_empty())
        .unwrap_or(component.default_namespace());
    let version = image_tag(spec.version.as_deref(), &ctx.config.istiod.version());
    let ambient = spec.profile.as_deref() == Some("ambient");
    let owner = owner_ref(obj.as_ref())?;
    ensure_namespace(&ctx.client, namespace).await?;

    let name = component.workload_name();
    let rollout = match component {
        Component::Istiod => {
            let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), namespace);
            let manifest = istiod_deployment(namespace, &version, ambient, &owner);
            let applied = apply(
                &api,
                name,
                &manifest,
                format!("Deployment {namespace}/{name}"),
            )
            .await?;
            let mut rollout = workload::deployment(&applied);
            // The Deployment stands for istiod (its rollout is what Sail's status reports);
            // the real istiod is re-rendered as Sail would: restarted with the profile's
            // settings.
            let istiod = &ctx.config.istiod;
            if istiod.ambient() != ambient {
                istiod.restart(ambient).await.map_err(|e| {
                    Error::Istiod(format!("restarting istiod (ambient={ambient}): {e}"))
                })?;
                rollout.ready = false;
                rollout.summary = "istiod restarted with the new profile".into();
            }
            rollout
        }
        Component::Cni | Component::Ztunnel => {
            let api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), namespace);
            let manifest = if component == Component::Cni {
                cni_daemonset(namespace, &version, ambient, &owner)
            } else {
                ztunnel_daemonset(namespace, &version, &owner)
            };
            let applied = apply(
                &api,
                name,
                &manifest,
                format!("DaemonSet {namespace}/{name}"),
            )
            .await?;
            workload::daemonset(&applied)
        }
    };

    if let Some(status) = desired_status(obj.meta().generation, &rollout, obj.sail_status()) {
        let api: Api<K> = Api::all(ctx.client.clone());
        patch_status(&api, &obj.name_any(), status, describe(obj.as_ref())).await?;
    }
    Ok(Action::requeue(ctx.config.resync))
}

/// The Sail resources of kind `K` that own `child`. (The runtime's `owns` would look the
/// cluster-scoped owner up under the child's namespace and never find it.)
fn owners<K: SailResource, C: Resource>(child: C) -> Vec<ObjectRef<K>> {
    let group = format!("{}/", K::group(&()));
    child
        .meta()
        .owner_references
        .iter()
        .flatten()
        .filter(|o| o.kind == K::kind(&()) && o.api_version.starts_with(&group))
        .map(|o| ObjectRef::new(&o.name))
        .collect()
}

/// Runs the controller for one Sail kind until `token` is cancelled.
pub(crate) async fn run<K: SailResource>(ctx: Arc<Ctx>, token: CancellationToken) {
    let client = ctx.client.clone();
    let managed =
        watcher::Config::default().labels(&format!("{}={}", names::LABEL_MANAGED_BY, MANAGED_BY));
    let controller = Controller::new(Api::<K>::all(client.clone()), watcher::Config::default());
    let controller = match K::COMPONENT {
        Component::Istiod => controller.watches(
            Api::<Deployment>::all(client),
            managed,
            owners::<K, Deployment>,
        ),
        Component::Cni | Component::Ztunnel => controller.watches(
            Api::<DaemonSet>::all(client),
            managed,
            owners::<K, DaemonSet>,
        ),
    };
    let stream = controller
        .with_config(crate::controller::config())
        .graceful_shutdown_on(token.cancelled_owned())
        .run(reconcile::<K>, error_policy, ctx);
    drain(K::COMPONENT.kind(), stream).await;
}

/// Writes the Sail CRDs (from `meshmig_api::sail::crds()`) into `dir`, one file per CRD, for
/// a test API server to install. JSON is valid YAML, so the files are plain JSON.
pub fn write_crds(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let crds = meshmig_api::sail::crds();
    if crds.len() != 3 {
        return Err(Error::invalid(
            "meshmig_api::sail::crds()",
            format!("returned {} CRDs, want 3", crds.len()),
        ));
    }
    let mut written = Vec::new();
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let path = dir.join(format!("{name}.yaml"));
        let text = serde_json::to_string_pretty(&crd)
            .map_err(|e| Error::json(format!("CRD {name}"), e))?;
        std::fs::write(&path, text)?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(ready: bool) -> Rollout {
        Rollout {
            ready,
            summary: "Deployment istio-system/istiod: ...".into(),
        }
    }

    #[test]
    fn version_becomes_an_image_tag() {
        assert_eq!(image_tag(Some("v1.27.0"), "x"), "1.27.0");
        assert_eq!(image_tag(Some("1.26.1"), "x"), "1.26.1");
        assert_eq!(image_tag(Some(""), "1.27.0"), "1.27.0");
        assert_eq!(image_tag(None, "1.27.0"), "1.27.0");
    }

    #[test]
    fn istiod_env_follows_the_profile() {
        let owner = json!({});
        let env = |ambient| {
            istiod_deployment("istio-system", "1.27.0", ambient, &owner)["spec"]["template"]["spec"]
                ["containers"][0]["env"]
                .to_string()
        };
        assert!(env(true).contains(r#""name":"PILOT_ENABLE_AMBIENT","value":"true""#));
        assert!(!env(false).contains("PILOT_ENABLE_AMBIENT"));
    }

    #[test]
    fn status_is_written_only_when_it_changes() {
        let first = desired_status(Some(1), &rollout(false), None).unwrap();
        assert_eq!(first["state"], STATE_RECONCILING);
        assert_eq!(desired_status(Some(1), &rollout(false), Some(&first)), None);
        let healthy = desired_status(Some(1), &rollout(true), Some(&first)).unwrap();
        assert_eq!(healthy["state"], STATE_HEALTHY);
        assert_eq!(healthy["observedGeneration"], 1);
        let ready = healthy["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["status"], "True");
        assert_eq!(ready["observedGeneration"], 1);
        // A new generation must be observed even if the workload already looks ready.
        assert!(desired_status(Some(2), &rollout(true), Some(&healthy)).is_some());
    }

    #[test]
    fn crds_are_written_as_json_documents() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_crds(&dir.path().join("crds")).unwrap();
        assert_eq!(files.len(), 3);
        for f in files {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
            assert_eq!(v["kind"], "CustomResourceDefinition");
            assert_eq!(v["spec"]["group"], "sailoperator.io");
        }
    }
}
