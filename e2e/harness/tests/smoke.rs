//! Smoke suite: a real API server (e2e/testenv) with the mesh (the real istiod and the
//! simulator beside it), exercising what the operator relies on and the simulator provides:
//! Sail driving istiod, ztunnel and istio-cni capture. What istiod itself does to Pods,
//! waypoints and policies is in tests/istiod.rs. Each test starts its own environment, so
//! they run in parallel.

use std::collections::BTreeSet;
use std::error::Error;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Container, Namespace, Node, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use meshmig_api::names::{self, istio as n};
use meshmig_api::sail::{Istio, IstioCni, ZTunnel, sail_state};
use meshmig_e2e_harness::{Pending, TestEnv, wait_for};
use meshmig_sim::Istiod as _;
use serde_json::{Value, json};

type TestResult = Result<(), Box<dyn Error>>;

const TIMEOUT: Duration = Duration::from_secs(90);

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

fn example(file: &str) -> Result<String, Box<dyn Error>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/bookinfo")
        .join(file);
    std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()).into())
}

/// `(ready, total)` containers of a Pod.
fn readiness(pod: &Pod) -> (usize, usize) {
    let total = pod.spec.as_ref().map_or(0, |s| s.containers.len());
    let ready = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |cs| cs.iter().filter(|c| c.ready).count());
    (ready, total)
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// `istio-proxy`: istiod injects it as a native sidecar (an init container that keeps
/// running, `restartPolicy: Always`).
fn proxy(pod: &Pod) -> Option<&Container> {
    pod.spec
        .as_ref()?
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == n::PROXY_CONTAINER && c.restart_policy.as_deref() == Some("Always"))
}

fn init_container_names(pod: &Pod) -> Vec<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .map(|cs| cs.iter().map(|c| c.name.as_str()).collect())
        .unwrap_or_default()
}

fn proxy_env(pod: &Pod, name: &str) -> Option<String> {
    proxy(pod)?
        .env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)?
        .value
        .clone()
}

/// HBONE as the sidecar gets it: env `ISTIO_META_ENABLE_HBONE`, the same key in
/// PROXY_CONFIG's `proxyMetadata`, and the `networking.istio.io/tunnel=http` label.
fn hbone(pod: &Pod) -> (Option<String>, bool, Option<&str>) {
    let config: Value = proxy_env(pod, n::PROXY_CONFIG_ENV)
        .and_then(|c| serde_json::from_str(&c).ok())
        .unwrap_or_default();
    let meta =
        config.pointer(&format!("/proxyMetadata/{}", n::ENABLE_HBONE)) == Some(&json!("true"));
    (
        proxy_env(pod, n::ENABLE_HBONE),
        meta,
        pod.labels().get(n::TUNNEL).map(String::as_str),
    )
}

const NO_HBONE: (Option<String>, bool, Option<&str>) = (None, false, None);

fn live(pods: Vec<Pod>) -> Vec<Pod> {
    pods.into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// Waits until every Deployment in `namespace` has rolled out and there are `count` live
/// Pods, all Running with `containers` of `containers` ready, none with a uid in `not`.
async fn wait_pods(
    env: &TestEnv,
    namespace: &str,
    count: usize,
    containers: usize,
    not: &BTreeSet<String>,
) -> Result<Vec<Pod>, meshmig_e2e_harness::Error> {
    let deployments: Api<Deployment> = env.api_in(namespace);
    let pods: Api<Pod> = env.api_in(namespace);
    let what = format!(
        "{count} Pods in {namespace} Running with {containers}/{containers} containers ready"
    );
    wait_for(what, TIMEOUT, async || {
        for d in deployments.list(&ListParams::default()).await? {
            let rollout = meshmig_sim::workload::deployment(&d);
            if !rollout.ready {
                return Err(Pending::new(rollout.summary));
            }
        }
        let list = live(pods.list(&ListParams::default()).await?.items);
        let good: Vec<&Pod> = list
            .iter()
            .filter(|p| {
                phase(p) == "Running"
                    && readiness(p) == (containers, containers)
                    && !not.contains(&p.uid().unwrap_or_default())
            })
            .collect();
        if good.len() == count && list.len() == count {
            Ok(list)
        } else {
            let states: Vec<String> = list
                .iter()
                .map(|p| {
                    format!(
                        "{} {} {}/{}",
                        p.name_any(),
                        phase(p),
                        readiness(p).0,
                        readiness(p).1
                    )
                })
                .collect();
            Err(Pending::new(format!(
                "{} of {} match: {}",
                good.len(),
                list.len(),
                states.join(", ")
            )))
        }
    })
    .await
}

/// Rollout-restarts every Deployment in `namespace` the way meshmig does (pod-template
/// annotation) and returns the uids of the Pods it replaces.
async fn restart(
    env: &TestEnv,
    namespace: &str,
    stamp: &str,
) -> Result<BTreeSet<String>, Box<dyn Error>> {
    let pods: Api<Pod> = env.api_in(namespace);
    let before = pods
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter_map(|p| p.uid())
        .collect();
    let deployments: Api<Deployment> = env.api_in(namespace);
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {names::ANNOTATION_RESTARTED_AT: stamp}}}}});
    for d in deployments.list(&ListParams::default()).await? {
        deployments
            .patch(
                &d.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
    }
    Ok(before)
}

/// Waits until the Sail resource `name` is Healthy for its current generation.
async fn wait_healthy<K>(env: &TestEnv, name: &str) -> Result<K, meshmig_e2e_harness::Error>
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + serde::Serialize,
{
    let api: Api<K> = env.api();
    let what = format!("{} {name} Healthy at its current generation", K::kind(&()));
    wait_for(what, TIMEOUT, async || {
        let obj = api.get(name).await?;
        let value = serde_json::to_value(&obj)?;
        let status = value.get("status");
        let state = sail_state(status);
        let observed = status
            .and_then(|s| s.get("observedGeneration"))
            .and_then(Value::as_i64);
        if state == Some("Healthy") && observed == obj.meta().generation {
            Ok(obj)
        } else {
            Err(Pending::new(format!(
                "state {state:?}, observedGeneration {observed:?} of {:?}",
                obj.meta().generation
            )))
        }
    })
    .await
}

/// Every bookinfo Pod: istiod's native sidecar at istiod's version, with its status
/// annotation, and HBONE as `want` says.
fn assert_injected(pods: &[Pod], version: &str, want_hbone: bool) -> TestResult {
    for pod in pods {
        let name = pod.name_any();
        let status: Value = serde_json::from_str(
            pod.annotations()
                .get(n::SIDECAR_STATUS)
                .ok_or(format!("{name}: no sidecar status"))?,
        )?;
        assert_eq!(
            status["initContainers"],
            json!(["istio-init", n::PROXY_CONTAINER]),
            "{name}"
        );
        assert_eq!(
            init_container_names(pod),
            ["istio-init", n::PROXY_CONTAINER],
            "{name}"
        );
        let image = proxy(pod).and_then(|c| c.image.as_deref()).unwrap_or("");
        assert!(
            image.starts_with(&format!("docker.io/istio/proxyv2:{version}")),
            "{name}: proxy image {image}"
        );
        let (env, meta, tunnel) = hbone(pod);
        if want_hbone {
            assert_eq!(
                (env.as_deref(), meta, tunnel),
                (Some("true"), true, Some("http")),
                "{name}: HBONE after the ambient switch"
            );
        } else {
            assert_eq!(
                (env, meta, tunnel),
                NO_HBONE,
                "{name}: HBONE before ambient"
            );
        }
    }
    Ok(())
}

/// ztunnel's DaemonSet ready, one ztunnel Pod Running and Ready on each of `nodes`.
async fn wait_ztunnel(env: &TestEnv, nodes: &BTreeSet<String>) -> TestResult {
    let ztunnel_pods: Api<Pod> = env.api_in("ztunnel");
    wait_for("ztunnel ready on every node", TIMEOUT, async || {
        let ready: BTreeSet<String> = live(
            ztunnel_pods
                .list(&ListParams::default().labels("app=ztunnel"))
                .await?
                .items,
        )
        .iter()
        .filter(|p| phase(p) == "Running" && readiness(p) == (1, 1))
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
        if &ready == nodes {
            Ok(())
        } else {
            Err(Pending::new(format!("ready on {ready:?} of {nodes:?}")))
        }
    })
    .await?;
    let ds = env.api_in::<DaemonSet>("ztunnel").get("ztunnel").await?;
    assert!(meshmig_sim::workload::daemonset(&ds).ready);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookinfo_gets_sidecars_restarts_and_switches_to_ambient() -> TestResult {
    init_tracing();
    let env = TestEnv::builder().nodes(2).start().await?;
    let mesh = env.start_mesh().await?;
    let version = mesh.istiod.version();

    env.apply_yaml(&example("00-control-plane.yaml")?).await?;
    env.apply_yaml(&example("10-bookinfo.yaml")?).await?;
    wait_healthy::<Istio>(&env, "default").await?;
    wait_healthy::<IstioCni>(&env, "default").await?;
    assert!(
        !mesh.istiod.ambient(),
        "istiod ambient under profile default"
    );

    // istiod injects every bookinfo Pod (the app container 1/1, the sidecar beside it).
    let sidecar_pods = wait_pods(&env, "bookinfo", 6, 1, &BTreeSet::new()).await?;
    assert_injected(&sidecar_pods, &version, false)?;

    // A rollout restart replaces every Pod (real Deployment controller, real scheduler).
    let before = restart(&env, "bookinfo", "first").await?;
    let restarted = wait_pods(&env, "bookinfo", 6, 1, &before).await?;
    assert_injected(&restarted, &version, false)?;

    // Switch the control plane to ambient and add ztunnel: Sail restarts istiod.
    let patch = Patch::Merge(json!({"spec": {"profile": "ambient"}}));
    env.api::<Istio>()
        .patch("default", &PatchParams::default(), &patch)
        .await?;
    env.api::<IstioCni>()
        .patch("default", &PatchParams::default(), &patch)
        .await?;
    env.apply_yaml("apiVersion: sailoperator.io/v1\nkind: ZTunnel\nmetadata: {name: default}\nspec: {version: v1.27.0, namespace: ztunnel}\n")
        .await?;
    let istio = wait_healthy::<Istio>(&env, "default").await?;
    assert_eq!(istio.metadata.generation, Some(2));
    wait_healthy::<IstioCni>(&env, "default").await?;
    wait_healthy::<ZTunnel>(&env, "default").await?;
    assert!(
        mesh.istiod.ambient(),
        "Sail did not restart istiod with the ambient profile"
    );

    // The Deployment that stands for istiod was rolled out with ambient enabled.
    let istiod = env
        .api_in::<Deployment>("istio-system")
        .get("istiod")
        .await?;
    let discovery = &istiod
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .ok_or("istiod has no pod spec")?
        .containers[0];
    assert!(
        discovery
            .env
            .iter()
            .flatten()
            .any(|e| e.name == n::PILOT_ENABLE_AMBIENT && e.value.as_deref() == Some("true"))
    );

    let nodes: BTreeSet<String> = env
        .api::<Node>()
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(|n| n.name_any())
        .collect();
    assert_eq!(nodes.len(), 2);
    wait_ztunnel(&env, &nodes).await?;

    // Sidecars injected before the switch keep theirs; restarted ones speak HBONE.
    let old = live(
        env.api_in::<Pod>("bookinfo")
            .list(&ListParams::default())
            .await?
            .items,
    );
    assert!(
        old.iter().all(|p| hbone(p) == NO_HBONE),
        "old sidecars changed in place"
    );
    let before = restart(&env, "bookinfo", "hbone").await?;
    let hbone_pods = wait_pods(&env, "bookinfo", 6, 1, &before).await?;
    assert_injected(&hbone_pods, &version, true)?;
    println!(
        "istiod RSS with bookinfo, after the ambient switch: {} MiB",
        mesh.istiod.rss_bytes().await.unwrap_or(0) / (1 << 20)
    );

    // Sail workloads are owned by their resource: deleting the IstioCNI removes its DaemonSet.
    env.api::<IstioCni>()
        .delete("default", &DeleteParams::foreground())
        .await?;
    let daemonsets: Api<DaemonSet> = env.api_in("istio-cni");
    wait_for(
        "DaemonSet istio-cni/istio-cni-node garbage-collected",
        TIMEOUT,
        async || match daemonsets.get_opt("istio-cni-node").await? {
            None => Ok(()),
            Some(_) => Err(Pending::new("still there")),
        },
    )
    .await?;
    mesh.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambient_capture_follows_ztunnel_and_enrolment() -> TestResult {
    init_tracing();
    let env = TestEnv::start().await?;
    let mesh = env.start_mesh().await?;

    // An ambient namespace: istiod injects nothing, and without ztunnel nothing is captured.
    env.apply_yaml(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: mesh, labels: {istio.io/dataplane-mode: ambient}}\n",
    )
    .await?;
    env.apply_yaml(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api, namespace: mesh}\nspec:\n  selector: {matchLabels: {app: api}}\n  \
         template:\n    metadata: {labels: {app: api}}\n    spec: {containers: [{name: app, image: example/api}]}\n",
    )
    .await?;
    let api_pod = wait_pods(&env, "mesh", 1, 1, &BTreeSet::new())
        .await?
        .remove(0);
    assert!(
        proxy(&api_pod).is_none() && !api_pod.annotations().contains_key(n::SIDECAR_STATUS),
        "ambient Pod was injected"
    );
    assert_eq!(
        api_pod.annotations().get(n::REDIRECTION),
        None,
        "captured without ztunnel"
    );

    let pods: Api<Pod> = env.api_in("mesh");
    let pod_name = api_pod.name_any();
    let redirection = async |want: Option<&str>| {
        wait_for(
            format!("Pod mesh/{pod_name} redirection annotation {want:?}"),
            TIMEOUT,
            async || {
                let pod = pods.get(&pod_name).await?;
                let have = pod.annotations().get(n::REDIRECTION).cloned();
                if have.as_deref() == want {
                    Ok(())
                } else {
                    Err(Pending::new(format!("annotation is {have:?}")))
                }
            },
        )
        .await
    };
    // ztunnel installed "by Helm" (no Sail): once it is ready, the running Pod is captured.
    env.apply_yaml(
        r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: ztunnel, namespace: istio-system, labels: {app: ztunnel}}
spec:
  selector: {matchLabels: {app: ztunnel}}
  template:
    metadata: {labels: {app: ztunnel}}
    spec: {containers: [{name: istio-proxy, image: docker.io/istio/ztunnel:1.27.0}]}
"#,
    )
    .await?;
    redirection(Some("enabled")).await?;
    assert_eq!(
        pods.get(&pod_name).await?.uid(),
        api_pod.uid(),
        "captured by a restart"
    );
    // Leaving ambient releases it; coming back captures it again.
    let unenroll = json!({"metadata": {"labels": {n::DATAPLANE_MODE: null}}});
    env.api::<Namespace>()
        .patch("mesh", &PatchParams::default(), &Patch::Merge(&unenroll))
        .await?;
    redirection(None).await?;
    let enroll = json!({"metadata": {"labels": {n::DATAPLANE_MODE: n::DATAPLANE_AMBIENT}}});
    env.api::<Namespace>()
        .patch("mesh", &PatchParams::default(), &Patch::Merge(&enroll))
        .await?;
    redirection(Some("enabled")).await?;
    mesh.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restricted_service_account_and_clear_errors() -> TestResult {
    init_tracing();
    // The API server alone: nothing here needs the mesh.
    let env = TestEnv::start().await?;

    env.apply_yaml(
        r#"
apiVersion: v1
kind: Namespace
metadata: {name: team, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: auditor, namespace: team}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: pod-reader, namespace: team}
rules: [{apiGroups: [""], resources: [pods], verbs: [get, list, watch]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: auditor-reads-pods, namespace: team}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}
subjects: [{kind: ServiceAccount, name: auditor, namespace: team}]
"#,
    )
    .await?;
    assert_eq!(
        env.kubectl([
            "get",
            "namespace",
            "team",
            "-o",
            "jsonpath={.metadata.labels.istio-injection}"
        ])
        .await?,
        "enabled"
    );

    // RBAC is real: the ServiceAccount may do what its Role grants and nothing else.
    let token = env.mint_token("team", "auditor").await?;
    let auditor = env.client_with_token(&token)?;
    Api::<Pod>::namespaced(auditor.clone(), "team")
        .list(&ListParams::default())
        .await?;
    let forbidden = |result: Result<_, kube::Error>, what: &str| match result {
        Err(kube::Error::Api(status)) if status.code == 403 => Ok(()),
        other => Err(format!("{what}: expected 403 Forbidden, got {other:?}")),
    };
    forbidden(
        Api::<Secret>::namespaced(auditor.clone(), "team")
            .list(&ListParams::default())
            .await
            .map(|_| ()),
        "list secrets",
    )?;
    forbidden(
        Api::<Pod>::namespaced(auditor.clone(), "default")
            .list(&ListParams::default())
            .await
            .map(|_| ()),
        "list pods elsewhere",
    )?;
    let patch = Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}}));
    forbidden(
        Api::<Namespace>::all(auditor)
            .patch("team", &PatchParams::default(), &patch)
            .await
            .map(|_| ()),
        "label namespace",
    )?;
    let garbage = env.client_with_token("not-a-token")?;
    match Api::<Pod>::namespaced(garbage, "team")
        .list(&ListParams::default())
        .await
    {
        Err(kube::Error::Api(status)) if status.code == 401 => {}
        other => return Err(format!("a bogus token: expected 401, got {other:?}").into()),
    }

    // Probe outcomes (judged by Istio's RBAC along the path each request takes) are tested
    // in e2e/sim/tests/probes.rs.

    // Errors name the object.
    let err = env
        .apply_yaml("apiVersion: example.com/v1\nkind: Nope\nmetadata: {name: thing}\n")
        .await
        .err()
        .ok_or("applying an unknown kind succeeded")?;
    assert!(err.to_string().contains("Nope thing"), "{err}");
    Ok(())
}
