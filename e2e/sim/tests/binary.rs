//! The `meshmig-sim` binary against a real API server: it injects while running, and on
//! SIGTERM removes its webhook so the cluster works without it.

use std::error::Error;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use meshmig_e2e_harness::{Pending, TestEnv, wait_for};
use serde_json::json;

fn pod(name: &str) -> Result<Pod, serde_json::Error> {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "example/app"}]},
    }))
}

fn has_proxy(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .is_some_and(|s| s.containers.iter().any(|c| c.name == "istio-proxy"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_injects_and_unregisters_on_sigterm() -> Result<(), Box<dyn Error>> {
    let env = TestEnv::start().await?;
    let sim = env
        .spawn_simulator(env!("CARGO_BIN_EXE_meshmig-sim"))
        .await?;
    env.apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata: {name: app, labels: {istio-injection: enabled}}\n")
        .await?;
    let pods: Api<Pod> = env.api_in("app");
    // The namespace's default ServiceAccount may still be on its way.
    let injected = wait_for("Pod app/one created", Duration::from_secs(30), async || {
        Ok::<_, Pending>(pods.create(&PostParams::default(), &pod("one")?).await?)
    })
    .await?;
    let log = sim.log_path().to_path_buf();
    assert!(
        has_proxy(&injected),
        "not injected; simulator log: {}",
        log.display()
    );

    sim.stop().await;
    let webhooks: Api<MutatingWebhookConfiguration> = env.api();
    assert!(
        webhooks
            .get_opt(meshmig_sim::WEBHOOK_CONFIGURATION)
            .await?
            .is_none(),
        "webhook left behind"
    );
    // With the simulator gone, Pods are admitted (not refused by a dead webhook) as they are.
    let plain = wait_for(
        "Pod app/two created without the simulator",
        Duration::from_secs(30),
        async || Ok::<_, Pending>(pods.create(&PostParams::default(), &pod("two")?).await?),
    )
    .await?;
    assert!(!has_proxy(&plain));
    Ok(())
}
