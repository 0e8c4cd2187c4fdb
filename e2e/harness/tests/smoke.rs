//! Smoke suite: a real API server (e2e/testenv) with the mesh simulator, exercising what the
//! operator will rely on. Each test starts its own environment, so they run in parallel.

use std::collections::BTreeSet;
use std::error::Error;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret, Service, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use meshmig_api::names::{self, istio as n};
use meshmig_api::sail::{Istio, IstioCni, ZTunnel, sail_state};
use meshmig_e2e_harness::{Pending, TestEnv, wait_for};
use meshmig_sim::{Gateway, GatewayClass, HttpRoute};
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

fn proxy(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::Container> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == n::PROXY_CONTAINER)
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

/// `ISTIO_META_ENABLE_HBONE` in the sidecar's PROXY_CONFIG proxyMetadata.
fn proxy_config_hbone(pod: &Pod) -> bool {
    let config: Value = proxy_env(pod, n::PROXY_CONFIG_ENV)
        .and_then(|c| serde_json::from_str(&c).ok())
        .unwrap_or_default();
    config.pointer(&format!("/proxyMetadata/{}", n::ENABLE_HBONE)) == Some(&json!("true"))
}

fn tunnel_label(pod: &Pod) -> Option<&str> {
    pod.labels().get(n::TUNNEL).map(String::as_str)
}

fn live(pods: Vec<Pod>) -> Vec<Pod> {
    pods.into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

fn condition<'a>(status: Option<&'a Value>, type_: &str) -> Option<&'a Value> {
    status?
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookinfo_gets_sidecars_restarts_and_switches_to_ambient() -> TestResult {
    init_tracing();
    let env = TestEnv::builder().nodes(2).start().await?;
    let _sim = env.start_simulator().await?;

    env.apply_yaml(&example("00-control-plane.yaml")?).await?;
    env.apply_yaml(&example("10-bookinfo.yaml")?).await?;
    wait_healthy::<Istio>(&env, "default").await?;
    wait_healthy::<IstioCni>(&env, "default").await?;

    // Every bookinfo Pod is injected: 2/2, istio-proxy, status annotation, no HBONE.
    let sidecar_pods = wait_pods(&env, "bookinfo", 6, 2, &BTreeSet::new()).await?;
    for pod in &sidecar_pods {
        let name = pod.name_any();
        let status: Value = serde_json::from_str(
            pod.annotations()
                .get(n::SIDECAR_STATUS)
                .ok_or(format!("{name}: no sidecar status"))?,
        )?;
        assert_eq!(status["containers"], json!([n::PROXY_CONTAINER]), "{name}");
        assert_eq!(
            proxy(pod).and_then(|c| c.image.as_deref()),
            Some("docker.io/istio/proxyv2:1.27.0"),
            "{name}"
        );
        assert_eq!(
            pod.labels()
                .get("security.istio.io/tlsMode")
                .map(String::as_str),
            Some("istio"),
            "{name}"
        );
        assert!(
            !proxy_config_hbone(pod) && tunnel_label(pod).is_none(),
            "{name} has HBONE before ambient"
        );
    }

    // A rollout restart replaces every Pod (real Deployment controller, real scheduler).
    let before = restart(&env, "bookinfo", "first").await?;
    let restarted = wait_pods(&env, "bookinfo", 6, 2, &before).await?;
    assert!(
        restarted.iter().all(|p| !proxy_config_hbone(p)),
        "sidecars got HBONE without an ambient control plane"
    );

    // Switch the control plane to ambient and add ztunnel.
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

    // istiod was rolled out with ambient enabled.
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

    // ztunnel is ready on every node.
    let nodes: BTreeSet<String> = env
        .api::<Node>()
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(|n| n.name_any())
        .collect();
    assert_eq!(nodes.len(), 2);
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
        if ready == nodes {
            Ok(())
        } else {
            Err(Pending::new(format!("ready on {ready:?} of {nodes:?}")))
        }
    })
    .await?;
    let ds = env.api_in::<DaemonSet>("ztunnel").get("ztunnel").await?;
    assert!(meshmig_sim::workload::daemonset(&ds).ready);

    // Sidecars injected before the switch do not speak HBONE; new ones do.
    let old = live(
        env.api_in::<Pod>("bookinfo")
            .list(&ListParams::default())
            .await?
            .items,
    );
    assert!(
        old.iter()
            .all(|p| !proxy_config_hbone(p) && tunnel_label(p).is_none()),
        "old sidecars changed in place"
    );
    let before = restart(&env, "bookinfo", "hbone").await?;
    let hbone_pods = wait_pods(&env, "bookinfo", 6, 2, &before).await?;
    for pod in &hbone_pods {
        let name = pod.name_any();
        assert!(
            proxy_config_hbone(pod),
            "{name}: PROXY_CONFIG without HBONE: {:?}",
            proxy_env(pod, n::PROXY_CONFIG_ENV)
        );
        assert_eq!(tunnel_label(pod), Some("http"), "{name}");
        assert_eq!(
            proxy_env(pod, n::ENABLE_HBONE).as_deref(),
            Some("true"),
            "{name}"
        );
    }

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
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waypoints_ambient_capture_and_routes_with_an_external_control_plane() -> TestResult {
    init_tracing();
    let env = TestEnv::start().await?;
    let _sim = env.start_simulator().await?;

    // External mode: no Sail Istio; istiod and ztunnel are installed "by Helm".
    env.apply_yaml(
        r#"
apiVersion: v1
kind: Namespace
metadata: {name: istio-system}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: istiod, namespace: istio-system}
spec:
  selector: {matchLabels: {app: istiod}}
  template:
    metadata: {labels: {app: istiod}}
    spec:
      containers:
      - name: discovery
        image: docker.io/istio/pilot:1.26.3
        env: [{name: PILOT_ENABLE_AMBIENT, value: "true"}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: ztunnel, namespace: istio-system, labels: {app: ztunnel}}
spec:
  selector: {matchLabels: {app: ztunnel}}
  template:
    metadata: {labels: {app: ztunnel}}
    spec: {containers: [{name: istio-proxy, image: docker.io/istio/ztunnel:1.26.3}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: mesh, labels: {istio.io/dataplane-mode: ambient}}
"#,
    )
    .await?;
    wait_pods(&env, "istio-system", 2, 1, &BTreeSet::new()).await?;

    // Sidecars injected under an ambient istiod speak HBONE, at istiod's version.
    let app = |ns: &str, name: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  selector: {{matchLabels: {{app: {name}}}}}\n  \
             template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec: {{containers: [{{name: app, image: example/{name}}}]}}\n"
        )
    };
    env.apply_yaml(&app("shop", "web")).await?;
    let web = wait_pods(&env, "shop", 1, 2, &BTreeSet::new()).await?;
    assert!(
        proxy_config_hbone(&web[0]) && tunnel_label(&web[0]) == Some("http"),
        "external ambient istiod: no HBONE"
    );
    assert_eq!(
        proxy(&web[0]).and_then(|c| c.image.as_deref()),
        Some("docker.io/istio/proxyv2:1.26.3")
    );

    // An ambient namespace without injection: 1/1 Pods, captured by the CNI.
    env.apply_yaml(&app("mesh", "api")).await?;
    let api_pod = wait_pods(&env, "mesh", 1, 1, &BTreeSet::new())
        .await?
        .remove(0);
    assert!(proxy(&api_pod).is_none(), "ambient pod was injected");
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
    redirection(Some("enabled")).await?;
    // Leaving ambient removes it from the running Pod.
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

    // The waypoint GatewayClass is there and accepted.
    let classes: Api<GatewayClass> = env.api();
    wait_for(
        "GatewayClass istio-waypoint Accepted",
        TIMEOUT,
        async || {
            let class = classes.get(n::WAYPOINT_CLASS).await?;
            match condition(class.status.as_ref(), "Accepted") {
                Some(c)
                    if c["status"] == "True"
                        && class.spec.controller_name == "istio.io/mesh-controller" =>
                {
                    Ok(())
                }
                other => Err(Pending::new(format!("Accepted is {other:?}"))),
            }
        },
    )
    .await?;

    // A waypoint becomes Programmed, with its Service address.
    env.apply_yaml(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: mesh, labels: {istio.io/waypoint-for: service}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
"#,
    )
    .await?;
    let gateways: Api<Gateway> = env.api_in("mesh");
    let gateway = wait_for(
        "Gateway mesh/waypoint Programmed with an address",
        TIMEOUT,
        async || {
            let gw = gateways.get("waypoint").await?;
            let programmed = condition(gw.status.as_ref(), "Programmed");
            let addresses = gw
                .status
                .as_ref()
                .and_then(|s| s.get("addresses"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            match programmed {
                Some(c) if c["status"] == "True" && !addresses.is_empty() => Ok(gw),
                other => Err(Pending::new(format!(
                    "Programmed {other:?}, addresses {addresses:?}"
                ))),
            }
        },
    )
    .await?;
    let status = gateway.status.clone().unwrap_or_default();
    let programmed = condition(Some(&status), "Programmed").ok_or("no Programmed")?;
    assert_eq!(
        (&programmed["reason"], &programmed["observedGeneration"]),
        (&json!("Programmed"), &json!(1))
    );
    let waypoint_svc = env.api_in::<Service>("mesh").get("waypoint").await?;
    let cluster_ip = waypoint_svc
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.clone())
        .ok_or("no cluster IP")?;
    assert_eq!(
        status["addresses"],
        json!([{"type": "IPAddress", "value": cluster_ip}])
    );
    assert!(
        waypoint_svc
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .is_some_and(|ps| ps.iter().any(|p| p.port == 15008))
    );
    assert_eq!(status["listeners"][0]["name"], "mesh");
    let waypoint_deploy = env.api_in::<Deployment>("mesh").get("waypoint").await?;
    let owners: Vec<&str> = waypoint_deploy
        .owner_references()
        .iter()
        .map(|o| o.uid.as_str())
        .collect();
    assert_eq!(
        owners,
        [gateway.uid().unwrap_or_default()],
        "waypoint Deployment owners"
    );
    assert_eq!(
        waypoint_deploy
            .labels()
            .get("gateway.networking.k8s.io/gateway-name")
            .map(String::as_str),
        Some("waypoint")
    );
    env.api_in::<ServiceAccount>("mesh").get("waypoint").await?;

    // Services bind to it (or say why not).
    env.apply_yaml(
        r#"
apiVersion: v1
kind: Service
metadata: {name: api, namespace: mesh, labels: {istio.io/use-waypoint: waypoint}}
spec: {selector: {app: api}, ports: [{name: http, port: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: lost, namespace: mesh, labels: {istio.io/use-waypoint: nowhere}}
spec: {selector: {app: lost}, ports: [{name: http, port: 8080}]}
"#,
    )
    .await?;
    let services: Api<Service> = env.api_in("mesh");
    let bound = async |service: &str, want: (&str, &str)| {
        wait_for(
            format!("Service mesh/{service} WaypointBound {want:?}"),
            TIMEOUT,
            async || {
                let svc = services.get(service).await?;
                let c = svc
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .into_iter()
                    .find(|c| c.type_ == n::WAYPOINT_BOUND);
                match c {
                    Some(c) if (c.status.as_str(), c.reason.as_str()) == want => Ok(()),
                    other => Err(Pending::new(format!("condition is {other:?}"))),
                }
            },
        )
        .await
    };
    bound("api", ("True", "Bound")).await?;
    bound("lost", ("False", "NotFound")).await?;

    // Mesh HTTPRoutes are accepted; a missing backend is reported.
    env.apply_yaml(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api, namespace: mesh}
spec:
  parentRefs: [{group: "", kind: Service, name: api, port: 8080}]
  rules: [{backendRefs: [{name: api, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: broken, namespace: mesh}
spec:
  parentRefs: [{group: "", kind: Service, name: api, port: 8080}]
  rules: [{backendRefs: [{name: api-v9, port: 8080}]}]
"#,
    )
    .await?;
    let routes: Api<HttpRoute> = env.api_in("mesh");
    let route_status = async |route: &str, accepted: &str, resolved: (&str, &str)| {
        wait_for(
            format!("HTTPRoute mesh/{route} Accepted={accepted} ResolvedRefs={resolved:?}"),
            TIMEOUT,
            async || {
                let r = routes.get(route).await?;
                let parent = r
                    .status
                    .as_ref()
                    .and_then(|s| s.pointer("/parents/0"))
                    .cloned()
                    .ok_or("no status.parents")?;
                let a = condition(Some(&parent), "Accepted").map(|c| c["status"].clone());
                let rr = condition(Some(&parent), "ResolvedRefs")
                    .map(|c| (c["status"].clone(), c["reason"].clone()));
                let ok = parent["controllerName"] == "istio.io/gateway-controller"
                    && parent["parentRef"]
                        == json!({"group": "", "kind": "Service", "name": "api", "port": 8080})
                    && a == Some(json!(accepted))
                    && rr == Some((json!(resolved.0), json!(resolved.1)));
                if ok {
                    Ok(())
                } else {
                    Err(Pending::new(format!("parent status {parent}")))
                }
            },
        )
        .await
    };
    route_status("api", "True", ("True", "ResolvedRefs")).await?;
    route_status("broken", "True", ("False", "BackendNotFound")).await?;

    // Deleting the waypoint: garbage collection removes its Deployment, the binding goes.
    gateways
        .delete("waypoint", &DeleteParams::foreground())
        .await?;
    let deployments: Api<Deployment> = env.api_in("mesh");
    wait_for(
        "waypoint Deployment garbage-collected",
        TIMEOUT,
        async || match deployments.get_opt("waypoint").await? {
            None => Ok(()),
            Some(_) => Err(Pending::new("still there")),
        },
    )
    .await?;
    bound("api", ("False", "NotFound")).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restricted_service_account_and_clear_errors() -> TestResult {
    init_tracing();
    let env = TestEnv::start().await?;
    let _sim = env.start_simulator().await?;

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

    // Probe outcomes (judged by Istio's RBAC for the path each request takes) are tested in
    // e2e/sim/tests/probes.rs.

    // Errors name the object.
    let err = env
        .apply_yaml("apiVersion: example.com/v1\nkind: Nope\nmetadata: {name: thing}\n")
        .await
        .err()
        .ok_or("applying an unknown kind succeeded")?;
    assert!(err.to_string().contains("Nope thing"), "{err}");
    Ok(())
}
