//! The manifests of `meshmig plan --output yaml` are valid for a real API server: a
//! server-side dry-run of each (with the Istio, Gateway API and Sail CRDs installed).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::process::Command;

use meshmig_e2e_harness::TestEnv;

#[tokio::test(flavor = "multi_thread")]
async fn plan_manifests_pass_a_server_side_dry_run() {
    let out = Command::new(env!("CARGO_BIN_EXE_meshmig"))
        .args(["plan", "-o", "yaml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    let env = TestEnv::start().await.unwrap();
    // The target namespace must exist for namespaced dry-runs.
    env.apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata: {name: bookinfo}\n")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plan.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let result = env
        .kubectl([
            "apply",
            "--server-side",
            "--field-manager=meshmig",
            "--dry-run=server",
            "-f",
            file.to_str().unwrap(),
        ])
        .await
        .unwrap_or_else(|e| panic!("dry-run refused the plan's manifests: {e}"));
    let docs = yaml.matches("\n---\n").count() + usize::from(yaml.starts_with("---"));
    let accepted = result
        .lines()
        .filter(|l| l.contains("(server dry run)"))
        .count();
    assert_eq!(accepted, docs, "{result}");
    assert!(
        result.contains(
            "httproute.gateway.networking.k8s.io/reviews serverside-applied (server dry run)"
        ),
        "{result}"
    );
}
