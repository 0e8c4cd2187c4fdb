//! A real istiod (pilot-discovery from e2e/istio/build.sh) against the test API server: what
//! it does to Pods, waypoints and Istio config, printed for whoever replaces the simulator's
//! parts with it. Each test starts its own environment and istiod, so they run in parallel.

use std::error::Error;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Pod, Service, ServiceAccount};
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, PostParams};
use kube::discovery::ApiResource;
use meshmig_api::names::istio as n;
use meshmig_e2e_harness::{Istiod, IstiodOptions, Pending, TestEnv, wait_for};
use meshmig_sim::Gateway;
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

async fn start(options: IstiodOptions) -> Result<(TestEnv, Istiod), Box<dyn Error>> {
    let env = TestEnv::start().await?;
    let started = Instant::now();
    let istiod = env.start_istiod(options).await?;
    println!(
        "istiod {} ready in {:.1?}, RSS {} MiB, log {}",
        istiod.version(),
        started.elapsed(),
        istiod.rss_bytes().unwrap_or(0) / (1 << 20),
        istiod.log_path().display()
    );
    Ok((env, istiod))
}

/// `istio-proxy`, wherever the injector put it: a native sidecar (an init container with
/// `restartPolicy: Always`) or a regular container.
fn proxy(pod: &Pod) -> Option<&Container> {
    let spec = pod.spec.as_ref()?;
    let init = spec.init_containers.iter().flatten();
    init.chain(&spec.containers)
        .find(|c| c.name == n::PROXY_CONTAINER)
}

fn env_value(container: &Container, name: &str) -> Option<String> {
    container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == name)?
        .value
        .clone()
}

/// HBONE as the sidecar would see it: env `ISTIO_META_ENABLE_HBONE`, or the same key in
/// PROXY_CONFIG's `proxyMetadata`.
fn hbone(pod: &Pod) -> (Option<String>, Option<String>) {
    let Some(proxy) = proxy(pod) else {
        return (None, None);
    };
    let config: Value = env_value(proxy, n::PROXY_CONFIG_ENV)
        .and_then(|c| serde_json::from_str(&c).ok())
        .unwrap_or_default();
    let meta = config
        .pointer(&format!("/proxyMetadata/{}", n::ENABLE_HBONE))
        .and_then(Value::as_str)
        .map(str::to_string);
    (env_value(proxy, n::ENABLE_HBONE), meta)
}

fn describe(pod: &Pod) -> String {
    let spec = pod.spec.clone().unwrap_or_default();
    let names = |cs: &[Container]| {
        cs.iter()
            .map(|c| {
                let restart = c
                    .restart_policy
                    .as_deref()
                    .map(|r| format!(" restartPolicy={r}"));
                format!(
                    "{} ({}{})",
                    c.name,
                    c.image.as_deref().unwrap_or(""),
                    restart.unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let proxy_env = proxy(pod)
        .map(|p| {
            p.env
                .iter()
                .flatten()
                .map(|e| e.name.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    format!(
        "Pod {}:\n  initContainers: {}\n  containers: {}\n  labels: {:?}\n  annotations: {:?}\n  \
         volumes: {}\n  istio-proxy env: {proxy_env}\n  HBONE (env, PROXY_CONFIG): {:?}",
        pod.name_any(),
        names(spec.init_containers.as_deref().unwrap_or_default()),
        names(&spec.containers),
        pod.labels(),
        pod.annotations().keys().collect::<Vec<_>>(),
        spec.volumes
            .iter()
            .flatten()
            .map(|v| v.name.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        hbone(pod),
    )
}

fn app_pod(name: &str) -> serde_json::Result<Pod> {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "shop", "version": "v1"}},
        "spec": {"containers": [{"name": "app", "image": "docker.io/library/nginx:1.29",
                                  "ports": [{"containerPort": 8080}]}]},
    }))
}

fn condition<'a>(conditions: Option<&'a Value>, type_: &str) -> Option<&'a Value> {
    conditions?.as_array()?.iter().find(|c| c["type"] == type_)
}

fn brief(condition: &Value) -> String {
    format!(
        "{}={} ({}: {})",
        condition["type"].as_str().unwrap_or(""),
        condition["status"].as_str().unwrap_or(""),
        condition["reason"].as_str().unwrap_or(""),
        condition["message"].as_str().unwrap_or("")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injects_sidecars_restarts_into_ambient_and_runs_waypoints() -> TestResult {
    init_tracing();
    let (env, mut istiod) = start(IstiodOptions::default()).await?;
    env.apply_yaml(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {istio-injection: enabled}}\n",
    )
    .await?;
    let pods = env.api_in::<Pod>("shop");
    // The namespace's ServiceAccount comes from the controller-manager, a moment later.
    let accounts = env.api_in::<ServiceAccount>("shop");
    wait_for("ServiceAccount shop/default", TIMEOUT, async || {
        accounts
            .get_opt("default")
            .await?
            .ok_or_else(|| Pending::new("not yet"))
    })
    .await?;

    // (1) A real sidecar.
    let before = pods
        .create(&PostParams::default(), &app_pod("before")?)
        .await?;
    println!("sidecar mode, {}", describe(&before));
    assert!(
        before.annotations().contains_key(n::SIDECAR_STATUS),
        "no {} annotation",
        n::SIDECAR_STATUS
    );
    let init = before
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.clone())
        .unwrap_or_default();
    let native = init.iter().find(|c| c.name == n::PROXY_CONTAINER);
    assert_eq!(
        native.and_then(|c| c.restart_policy.as_deref()),
        Some("Always"),
        "istio-proxy is not a native sidecar"
    );
    println!(
        "sidecar.istio.io/status: {}",
        before.annotations()[n::SIDECAR_STATUS]
    );
    assert_eq!(hbone(&before), (None, None), "HBONE without ambient");

    // (2) Ambient: PILOT_ENABLE_AMBIENT and the profile's injection values.
    let restarted = Instant::now();
    istiod.restart(true).await?;
    println!(
        "restarted with ambient in {:.1?}, RSS {} MiB",
        restarted.elapsed(),
        istiod.rss_bytes().unwrap_or(0) / (1 << 20)
    );
    let after = pods
        .create(&PostParams::default(), &app_pod("after")?)
        .await?;
    println!("ambient, {}", describe(&after));
    let (env_hbone, meta_hbone) = hbone(&after);
    assert!(
        env_hbone.as_deref() == Some("true") || meta_hbone.as_deref() == Some("true"),
        "no HBONE after the ambient restart: {:?}",
        (env_hbone, meta_hbone)
    );
    assert_eq!(
        hbone(&pods.get("before").await?),
        (None, None),
        "the old Pod changed"
    );

    // (3) A waypoint: istiod's GatewayClass, Deployment, Service and status.
    let gateway_class = ApiResource {
        group: "gateway.networking.k8s.io".into(),
        version: "v1".into(),
        api_version: "gateway.networking.k8s.io/v1".into(),
        kind: "GatewayClass".into(),
        plural: "gatewayclasses".into(),
    };
    let classes: Api<DynamicObject> = Api::all_with(env.client(), &gateway_class);
    let class = wait_for("GatewayClass istio-waypoint", TIMEOUT, async || {
        classes
            .get_opt(n::WAYPOINT_CLASS)
            .await?
            .ok_or_else(|| Pending::new("absent"))
    })
    .await?;
    println!(
        "GatewayClasses: {:?}; istio-waypoint: controller {}, {:?}",
        classes
            .list(&Default::default())
            .await?
            .items
            .iter()
            .map(|c| c.name_any())
            .collect::<Vec<_>>(),
        class.data["spec"]["controllerName"],
        class.data.pointer("/status/conditions").map(|cs| {
            cs.as_array()
                .into_iter()
                .flatten()
                .map(brief)
                .collect::<Vec<_>>()
        })
    );
    env.apply_yaml(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: shop, labels: {istio.io/waypoint-for: service}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop, labels: {istio.io/use-waypoint: waypoint}}
spec:
  selector: {app: shop}
  ports: [{name: http, port: 9080, targetPort: 8080}]
"#,
    )
    .await?;
    let gateways = env.api_in::<Gateway>("shop");
    let status = wait_for("waypoint Programmed", TIMEOUT, async || {
        let gateway = serde_json::to_value(gateways.get("waypoint").await?)?;
        let status = gateway.get("status").cloned().unwrap_or_default();
        match condition(status.get("conditions"), "Programmed") {
            Some(c) if c["status"] == "True" => Ok(status),
            other => Err(Pending::new(format!("Programmed: {other:?}"))),
        }
    })
    .await?;
    let conditions: Vec<String> = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(brief)
        .collect();
    println!(
        "waypoint status: {conditions:?}, addresses {}",
        status["addresses"]
    );
    let deployment = env.api_in::<Deployment>("shop").get("waypoint").await?;
    let template = deployment.spec.as_ref().map(|s| &s.template);
    println!(
        "waypoint Deployment: labels {:?}, owners {:?}, containers {:?}",
        deployment.labels(),
        deployment
            .owner_references()
            .iter()
            .map(|o| format!("{}/{}", o.kind, o.name))
            .collect::<Vec<_>>(),
        template.and_then(|t| t.spec.as_ref()).map(|s| s
            .containers
            .iter()
            .map(|c| format!("{} {}", c.name, c.image.as_deref().unwrap_or("")))
            .collect::<Vec<_>>())
    );
    // The identity ztunnel sees behind the waypoint (docs/semantics.md): sa/<gateway name>.
    assert_eq!(
        template
            .and_then(|t| t.spec.as_ref())
            .and_then(|s| s.service_account_name.as_deref()),
        Some("waypoint"),
        "the waypoint Pods run as the ServiceAccount named after the Gateway"
    );
    let services = env.api_in::<Service>("shop");
    let service = services.get("waypoint").await?;
    println!(
        "waypoint Service: labels {:?}, ports {:?}",
        service.labels(),
        service
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .map(|ps| {
                ps.iter()
                    .map(|p| format!("{}:{}", p.name.as_deref().unwrap_or(""), p.port))
                    .collect::<Vec<_>>()
            })
    );
    assert_eq!(
        service
            .labels()
            .get("gateway.networking.k8s.io/gateway-name")
            .map(String::as_str),
        Some("waypoint")
    );
    let bound = wait_for("reviews WaypointBound", TIMEOUT, async || {
        let service = serde_json::to_value(services.get("reviews").await?)?;
        condition(service.pointer("/status/conditions"), n::WAYPOINT_BOUND)
            .cloned()
            .ok_or_else(|| Pending::new("no condition"))
    })
    .await?;
    println!("Service reviews: {}", brief(&bound));

    // A valid policy gets istiod's ambient status.
    env.apply_yaml(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-shop, namespace: shop}
spec:
  selector: {matchLabels: {app: shop}}
  rules: [{from: [{source: {namespaces: [shop]}}]}]
"#,
    )
    .await?;
    let resource = ApiResource {
        group: "security.istio.io".into(),
        version: "v1".into(),
        api_version: "security.istio.io/v1".into(),
        kind: "AuthorizationPolicy".into(),
        plural: "authorizationpolicies".into(),
    };
    let policies: Api<DynamicObject> = Api::namespaced_with(env.client(), "shop", &resource);
    let accepted = wait_for("ZtunnelAccepted", TIMEOUT, async || {
        let policy = policies.get("allow-shop").await?;
        condition(policy.data.pointer("/status/conditions"), "ZtunnelAccepted")
            .cloned()
            .ok_or_else(|| Pending::new("no condition"))
    })
    .await?;
    println!("AuthorizationPolicy allow-shop: {}", brief(&accepted));
    println!(
        "istiod RSS at the end: {} MiB",
        istiod.rss_bytes().unwrap_or(0) / (1 << 20)
    );
    istiod.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn its_validating_webhook_refuses_invalid_istio_config() -> TestResult {
    init_tracing();
    let (env, _istiod) = start(IstiodOptions::default()).await?;
    env.apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n")
        .await?;
    // The CRD's schema accepts an empty source; Istio's validation does not.
    let invalid = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: empty-source, namespace: shop}
spec:
  rules: [{from: [{source: {}}]}]
"#;
    let err = env
        .apply_yaml(invalid)
        .await
        .err()
        .ok_or("the invalid policy was admitted")?;
    println!("refused: {err}");
    let message = err.to_string();
    assert!(message.contains("validation.istio.io"), "{message}");
    assert!(message.contains("denied the request"), "{message}");
    // A valid one still goes through.
    env.apply_yaml(&invalid.replace("source: {}", "source: {namespaces: [shop]}"))
        .await?;
    Ok(())
}
