//! Probe Pods against a real API server and the real istiod: the simulator ends each one as
//! its request would end in the cluster's state, judged by istiod's own code (needs the
//! `e2e/istio/build.sh` build, for istiod and `meshmig-istio`: `$MESHMIG_ISTIO_HOME`, else
//! the script runs).

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use meshmig_e2e_harness::{Pending, TestEnv, wait_for};
use meshmig_istio_oracle::oracle::{self, Rbac, RbacOptions, ZtunnelConversion, ZtunnelOptions};
use meshmig_sim::{IstioCode, Istiod as _};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(60);

/// The Sail control plane with the ambient profile and ztunnel (Sail restarts istiod into
/// it), a sidecar namespace `shop` and an ambient namespace `amb`.
const CLUSTER: &str = r#"
apiVersion: sailoperator.io/v1
kind: Istio
metadata: {name: default}
spec: {version: v1.27.0, namespace: istio-system, profile: ambient}
---
apiVersion: sailoperator.io/v1
kind: ZTunnel
metadata: {name: default}
spec: {version: v1.27.0, namespace: ztunnel}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: amb, labels: {istio.io/dataplane-mode: ambient}}
"#;

/// In `shop`, `web` (only `client` may GET it); in `amb`, `api` (only `shop/client` may
/// connect, an L4 rule ztunnel enforces).
const WORKLOADS: &str = r#"
apiVersion: v1
kind: ServiceAccount
metadata: {name: client, namespace: shop}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: intruder, namespace: shop}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: app, image: example/web, ports: [{name: http, containerPort: 8080}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web-viewer, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  rules:
  - from: [{source: {principals: [cluster.local/ns/shop/sa/client]}}]
    to: [{operation: {methods: [GET]}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: amb}
spec:
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec: {containers: [{name: app, image: example/api}]}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: amb}
spec:
  selector: {app: api}
  ports: [{name: http, port: 8080}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: api-l4, namespace: amb}
spec:
  selector: {matchLabels: {app: api}}
  rules:
  - from: [{source: {principals: [cluster.local/ns/shop/sa/client]}}]
"#;

/// A probe Pod shaped as meshmig's operator builds it (crates/operator/src/probes.rs).
fn probe(name: &str, namespace: &str, sa: &str, url: &str, expect: (&str, &str)) -> String {
    let (expect_env, expect_value) = expect;
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {namespace}, labels: {{meshmig.io/probe: {name}}}}}
spec:
  serviceAccountName: {sa}
  restartPolicy: Never
  containers:
  - name: probe
    image: curlimages/curl:8.11.1
    command: [sh, -c]
    args: ["curl ...", probe, -X, GET, -H, "x-test: 1"]
    env: [{{name: URL, value: "{url}"}}, {{name: {expect_env}, value: "{expect_value}"}}]
"#
    )
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn wait_ready(
    env: &TestEnv,
    namespace: &str,
    label: &str,
    check: fn(&Pod) -> bool,
) -> Result<(), Box<dyn Error>> {
    let pods: Api<Pod> = env.api_in(namespace);
    wait_for(format!("{namespace} {label} ready"), TIMEOUT, async || {
        let list = pods.list(&ListParams::default().labels(label)).await?.items;
        if !list.is_empty() && list.iter().all(|p| ready(p) && check(p)) {
            Ok(())
        } else {
            Err(Pending::new(format!("{} Pods, not all ready", list.len())))
        }
    })
    .await?;
    Ok(())
}

fn hbone(pod: &Pod) -> bool {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("networking.istio.io/tunnel"))
        .is_some_and(|v| v == "http")
}

fn captured(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("ambient.istio.io/redirection"))
        .is_some_and(|v| v == "enabled")
}

/// Phase and the probe container's termination message, once terminal.
async fn outcome(
    env: &TestEnv,
    namespace: &str,
    name: &str,
) -> Result<(String, String), Box<dyn Error>> {
    let pods: Api<Pod> = env.api_in(namespace);
    let done = wait_for(
        format!("probe {namespace}/{name} done"),
        TIMEOUT,
        async || {
            let pod = pods.get(name).await?;
            let status = pod.status.clone().unwrap_or_default();
            let phase = status.phase.clone().unwrap_or_default();
            if phase != "Succeeded" && phase != "Failed" {
                return Err(Pending::new(format!("phase {phase:?}")));
            }
            let message = status
                .container_statuses
                .iter()
                .flatten()
                .find(|c| c.name == "probe")
                .and_then(|c| c.state.as_ref()?.terminated.as_ref()?.message.clone())
                .unwrap_or_default();
            Ok((phase, message))
        },
    )
    .await?;
    Ok(done)
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_pods_end_as_their_requests_would() -> Result<(), Box<dyn Error>> {
    init_tracing();
    let env = TestEnv::start().await?;
    let mesh = env.start_mesh().await?;
    env.apply_yaml(CLUSTER).await?;
    wait_for(
        "istiod restarted by Sail with ambient",
        TIMEOUT,
        async || {
            if mesh.istiod.ambient() {
                Ok(())
            } else {
                Err(Pending::new("not yet"))
            }
        },
    )
    .await?;
    wait_ready(&env, "ztunnel", "app=ztunnel", |_| true).await?;
    // The namespace's default ServiceAccounts may still be on their way.
    wait_for("workloads applied", TIMEOUT, async || {
        Ok::<_, Pending>(env.apply_yaml(WORKLOADS).await?)
    })
    .await?;
    wait_ready(&env, "shop", "app=web", hbone).await?;
    wait_ready(&env, "amb", "app=api", captured).await?;

    let web = "http://web.shop/";
    let api = "http://api.amb.svc.cluster.local:8080/x";
    let cases = [
        // (name, namespace, service account, url, expectation, phase, message contains)
        (
            "reads",
            "shop",
            "client",
            web,
            ("EXPECT_STATUS", "200"),
            "Succeeded",
            "HTTP 200 as expected",
        ),
        (
            "refused",
            "shop",
            "intruder",
            web,
            ("EXPECT_DENIED", "1"),
            "Succeeded",
            "denied as expected (HTTP 403",
        ),
        (
            "opened",
            "shop",
            "intruder",
            web,
            ("EXPECT_STATUS", "200"),
            "Failed",
            "expected HTTP 200, got HTTP 403",
        ),
        // An ambient caller reaches the sidecar over HBONE as amb/default: not allowed.
        (
            "from-ambient",
            "amb",
            "default",
            web,
            ("EXPECT_DENIED", "1"),
            "Succeeded",
            "its sidecar as cluster.local/ns/amb/sa/default",
        ),
        (
            "to-ambient",
            "shop",
            "client",
            api,
            ("EXPECT_STATUS", "200"),
            "Succeeded",
            "its ztunnel as cluster.local/ns/shop/sa/client: allowed by amb/api-l4",
        ),
        // ztunnel refuses the connection; the caller's sidecar answers 503, which the probe
        // script does not count as "denied".
        (
            "l4-refused",
            "shop",
            "intruder",
            api,
            ("EXPECT_DENIED", "1"),
            "Failed",
            "expected the request to be denied, got HTTP 503",
        ),
        (
            "nowhere",
            "shop",
            "client",
            "http://nope.shop/",
            ("EXPECT_DENIED", "1"),
            "Succeeded",
            "curl exit 6",
        ),
        (
            "https",
            "shop",
            "client",
            "https://web.shop/",
            ("EXPECT_DENIED", "1"),
            "Failed",
            "only http:// is modelled",
        ),
    ];
    let manifests: Vec<String> = cases
        .iter()
        .map(|(name, ns, sa, url, expect, ..)| probe(name, ns, sa, url, *expect))
        .collect();
    env.apply_yaml(&manifests.join("---\n")).await?;
    for (name, ns, _, _, _, want_phase, want_message) in cases {
        let (phase, message) = outcome(&env, ns, name).await?;
        eprintln!("{name}: {phase}: {message}");
        assert_eq!(phase, want_phase, "{name}: {message}");
        assert!(message.contains(want_message), "{name}: {message}");
    }
    mesh.stop().await;
    Ok(())
}

/// Istio's code that cannot be run, as when no `meshmig-istio` build can be found.
#[derive(Debug)]
struct Unavailable;

const UNAVAILABLE: &str = "no meshmig-istio build in this test";

impl IstioCode for Unavailable {
    fn available(&self) -> Result<(), oracle::Error> {
        Err(oracle::Error::Locate(UNAVAILABLE.into()))
    }

    fn rbac(&self, _: &[Value], _: &RbacOptions) -> Result<Rbac, oracle::Error> {
        Err(oracle::Error::Locate(UNAVAILABLE.into()))
    }

    fn ztunnel(
        &self,
        _: &[Value],
        _: &ZtunnelOptions,
    ) -> Result<Vec<ZtunnelConversion>, oracle::Error> {
        Err(oracle::Error::Locate(UNAVAILABLE.into()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_istios_code_a_probe_fails_and_says_why() -> Result<(), Box<dyn Error>> {
    init_tracing();
    let env = TestEnv::start().await?;
    let mesh = env
        .start_mesh_with(|config| config.with_istio_code(Arc::new(Unavailable)))
        .await?;
    env.apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n")
        .await?;
    // Even a request that reaches no proxy (there is no such Service) must not pass.
    let pod = probe(
        "blind",
        "shop",
        "default",
        "http://nope.shop/",
        ("EXPECT_DENIED", "1"),
    );
    wait_for("probe Pod created", TIMEOUT, async || {
        Ok::<_, Pending>(env.apply_yaml(&pod).await?)
    })
    .await?;
    let (phase, message) = outcome(&env, "shop", "blind").await?;
    eprintln!("blind: {phase}: {message}");
    assert_eq!(phase, "Failed", "{message}");
    assert!(
        message.contains("cannot judge this probe") && message.contains(UNAVAILABLE),
        "{message}"
    );
    mesh.stop().await;
    Ok(())
}
