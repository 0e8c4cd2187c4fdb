//! The `meshmig-mesh` binary (what `make demo` and `make cluster` run) against a real API
//! server: it says READY with istiod's version once Pods are injected, plays Sail, and on
//! SIGTERM stops, taking istiod with it.

use std::error::Error;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use meshmig_api::names::istio as n;
use meshmig_api::sail::{Istio, sail_state};
use meshmig_e2e_harness::{Pending, TestEnv, wait_for};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;
use tokio::process::Command;

const TIMEOUT: Duration = Duration::from_secs(90);

fn pod(name: &str) -> Result<Pod, serde_json::Error> {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "example/app"}]},
    }))
}

fn injected(pod: &Pod) -> bool {
    pod.spec.as_ref().is_some_and(|s| {
        s.init_containers
            .iter()
            .flatten()
            .any(|c| c.name == n::PROXY_CONTAINER)
    })
}

/// The first line of `path` starting with `READY`, once there is one.
async fn ready_line(path: &Path, child: &mut tokio::process::Child) -> Result<String, String> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.starts_with("READY")) {
            return Ok(line.to_string());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("meshmig-mesh exited ({status}) before READY"));
        }
        if Instant::now() > deadline {
            return Err(format!("no READY line within {TIMEOUT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meshmig_mesh_runs_istiod_and_sail_until_sigterm() -> Result<(), Box<dyn Error>> {
    let env = TestEnv::start().await?;
    let out = env.dir().join("mesh.out");
    let log = env.dir().join("mesh.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshmig-mesh"))
        .arg("--kubeconfig")
        .arg(env.kubeconfig())
        .arg("--dir")
        .arg(env.dir().join("mesh"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out)?)
        .stderr(std::fs::File::create(&log)?)
        .kill_on_drop(true)
        .spawn()?;
    let ready = ready_line(&out, &mut child)
        .await
        .map_err(|e| format!("{e}; log {}", log.display()))?;
    println!("{ready}");
    assert!(ready.starts_with("READY istiod "), "{ready}");

    // istiod injects from the moment READY is printed.
    env.apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata: {name: app, labels: {istio-injection: enabled}}\n")
        .await?;
    let pods: Api<Pod> = env.api_in("app");
    // The namespace's default ServiceAccount may still be on its way.
    let one = wait_for("Pod app/one created", TIMEOUT, async || {
        Ok::<_, Pending>(pods.create(&PostParams::default(), &pod("one")?).await?)
    })
    .await?;
    assert!(injected(&one), "not injected; log {}", log.display());

    // The simulator beside it plays Sail.
    env.apply_yaml("apiVersion: sailoperator.io/v1\nkind: Istio\nmetadata: {name: default}\nspec: {namespace: istio-system}\n")
        .await?;
    let istios: Api<Istio> = env.api();
    wait_for("Istio default Healthy", TIMEOUT, async || {
        let istio = istios.get("default").await?;
        match sail_state(istio.status.as_ref()) {
            Some("Healthy") => Ok(()),
            other => Err(Pending::new(format!("state {other:?}"))),
        }
    })
    .await?;

    let pid = child.id().ok_or("meshmig-mesh has exited")?;
    kill(Pid::from_raw(i32::try_from(pid)?), Signal::SIGTERM)?;
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .map_err(|_| "meshmig-mesh did not stop within 30 s of SIGTERM")??;
    assert!(status.success(), "{status}; log {}", log.display());
    // istiod went with it: its fail-closed injector refuses a Pod that needs injection.
    let refused = pods
        .create(&PostParams::default(), &pod("two")?)
        .await
        .err()
        .ok_or("a Pod was admitted with istiod stopped")?;
    assert!(
        refused.to_string().contains("sidecar-injector.istio.io"),
        "{refused}"
    );
    Ok(())
}
