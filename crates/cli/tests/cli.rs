//! The `meshmig` binary as a user runs it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::process::{Command, Output};

fn meshmig(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshmig"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn plan_without_arguments_plans_bookinfo() {
    let o = meshmig(&["plan"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("migration \"bookinfo\""));
    assert!(out.contains("Step 7 · Waypoint activation"));
    assert!(out.contains("HTTPRoute/bookinfo/reviews"));
}

#[test]
fn yaml_output_parses_back_into_the_json_manifests() {
    let json = meshmig(&["plan", "-o", "json"]);
    assert!(json.status.success(), "{}", stderr(&json));
    let plan: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let yaml = meshmig(&["plan", "-o", "yaml"]);
    assert!(yaml.status.success(), "{}", stderr(&yaml));
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(&String::from_utf8_lossy(&yaml.stdout)).unwrap();
    let docs: Vec<serde_json::Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
    assert_eq!(serde_json::Value::Array(docs), plan["manifests"]);
    for m in plan["manifests"].as_array().unwrap() {
        assert_eq!(
            m["metadata"]["labels"]["app.kubernetes.io/managed-by"], "meshmig",
            "{m}"
        );
    }
}

fn bad_input(contents: Option<&str>, expect: &str) {
    let dir = tempfile::tempdir().unwrap();
    let target = match contents {
        Some(c) => {
            let p = dir.path().join("input.yaml");
            std::fs::write(&p, c).unwrap();
            p
        }
        None => dir.path().to_path_buf(),
    };
    let o = meshmig(&["plan", target.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.contains(expect), "{err} lacks {expect}");
    assert!(!err.contains("panicked"));
}

#[test]
fn malformed_yaml_is_one_line_exit_2() {
    bad_input(
        Some("apiVersion: v1\nkind: Service\nmetadata: {name: [\n"),
        "input.yaml:",
    );
}

#[test]
fn empty_directory_is_one_line_exit_2() {
    bad_input(None, "no .yaml, .yml or .json files");
}

#[test]
fn non_kubernetes_yaml_is_one_line_exit_2() {
    bad_input(
        Some("title: my notes\nitems: [1, 2]\n"),
        "is not a Kubernetes object",
    );
}

#[test]
fn missing_file_is_one_line_exit_2() {
    let o = meshmig(&["plan", "/nonexistent/path.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/nonexistent/path.yaml"));
}

#[test]
fn fail_on_blockers_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("in.yaml");
    std::fs::write(
        &p,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a, labels: {istio-injection: enabled}}\n---\n\
         apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p, namespace: a}\nspec: {mtls: {mode: DISABLE}}\n",
    )
    .unwrap();
    let o = meshmig(&["plan", p.to_str().unwrap(), "--fail-on-blockers"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let o = meshmig(&[
        "plan",
        p.to_str().unwrap(),
        "--fail-on-blockers",
        "--accept",
        "peer-authn-disable",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn crd_and_findings_commands() {
    let o = meshmig(&["crd"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("meshmigrations.meshmig.io"));
    let o = meshmig(&["findings", "--markdown"]);
    assert!(o.status.success());
    let md = String::from_utf8_lossy(&o.stdout);
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/findings.md"
    ))
    .unwrap();
    assert!(
        md == committed,
        "docs/findings.md is stale: run make generate"
    );
}
