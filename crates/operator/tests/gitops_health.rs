//! The GitOps health checks in `gitops/`, run against MeshMigration fixtures captured from a
//! live run (`gitops/argocd/testdata/`):
//!
//! - the Argo CD health script `gitops/argocd/health.lua`, in an embedded Lua 5.4, called as
//!   Argo CD calls it (the live object as the global `obj`; the returned table's `status` and
//!   `message`), with the expectations of `gitops/argocd/health_test.yaml` (Argo CD's
//!   `health_test.yaml` format, so the script can be contributed upstream unchanged);
//! - the copy of the script embedded in `gitops/argocd/argocd-cm-patch.yaml`;
//! - the Flux `healthCheckExprs` of `gitops/flux/kustomization.yaml`, evaluated with the CEL
//!   interpreter kube-rs uses for the CRD's rules, in the order Flux evaluates them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use kube::core::cel::cel;
use meshmig_planner::Inventory;
use mlua::{Lua, LuaSerdeExt, Table};
use serde_json::Value;

fn gitops() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../gitops")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// One entry of `health_test.yaml`.
#[derive(Debug, Default)]
struct Case {
    status: String,
    message: String,
    input_path: String,
}

/// Parses Argo CD's `health_test.yaml` layout:
///
/// ```yaml
/// tests:
/// - healthStatus:
///     status: Healthy
///     message: "…"          # a double-quoted string (JSON escapes only)
///   inputPath: testdata/healthy.yaml
/// ```
fn health_tests(text: &str) -> Vec<Case> {
    let mut cases: Vec<Case> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let at = || format!("health_test.yaml line {}: {raw:?}", n + 1);
        if line.is_empty() || line.starts_with('#') || line == "tests:" {
            continue;
        }
        if line == "- healthStatus:" {
            cases.push(Case::default());
            continue;
        }
        let case = cases.last_mut().unwrap_or_else(|| panic!("{}", at()));
        let (key, value) = line.split_once(": ").unwrap_or_else(|| panic!("{}", at()));
        match key {
            "status" => case.status = value.to_string(),
            "message" => {
                case.message = serde_json::from_str(value)
                    .unwrap_or_else(|e| panic!("{}: message must be double-quoted: {e}", at()))
            }
            "inputPath" => case.input_path = value.to_string(),
            _ => panic!("{}: unexpected key", at()),
        }
    }
    for c in &cases {
        assert!(
            !c.status.is_empty() && !c.input_path.is_empty(),
            "incomplete entry in health_test.yaml: {c:?}"
        );
    }
    cases
}

/// A fixture as the API server would return it: decoded into the typed MeshMigration (so a
/// fixture with a field of the wrong shape fails here) and encoded back to JSON.
fn fixture(path: &Path) -> Value {
    let mut inv = Inventory::default();
    inv.load_str(&read(path), &path.display().to_string())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        inv.mesh_migrations.len(),
        1,
        "{} must hold exactly one MeshMigration",
        path.display()
    );
    serde_json::to_value(&inv.mesh_migrations[0]).unwrap()
}

/// Runs the health script on `obj` as Argo CD does; returns (status, message).
fn argocd_health(script: &str, obj: &Value) -> (String, String) {
    let lua = Lua::new();
    // Argo CD hands the script an unstructured object: absent fields are nil, never a
    // sentinel value.
    let options = mlua::serde::SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false);
    lua.globals()
        .set("obj", lua.to_value_with(obj, options).unwrap())
        .unwrap();
    let hs: Table = lua
        .load(script)
        .set_name("health.lua")
        .eval()
        .unwrap_or_else(|e| panic!("health.lua failed: {e}"));
    let status: Option<String> = hs.get("status").unwrap();
    let message: Option<String> = hs.get("message").unwrap();
    (status.unwrap_or_default(), message.unwrap_or_default())
}

#[test]
fn argocd_health_script_maps_every_fixture_as_health_test_yaml_says() {
    let dir = gitops().join("argocd");
    let script = read(&dir.join("health.lua"));
    let cases = health_tests(&read(&dir.join("health_test.yaml")));
    assert!(cases.len() >= 8, "only {} cases", cases.len());

    let mut failures = Vec::new();
    let mut seen_status = BTreeSet::new();
    let mut seen_input = BTreeSet::new();
    for c in &cases {
        assert!(
            seen_input.insert(c.input_path.clone()),
            "{} is listed twice",
            c.input_path
        );
        let obj = fixture(&dir.join(&c.input_path));
        let (status, message) = argocd_health(&script, &obj);
        if (status.as_str(), message.as_str()) != (c.status.as_str(), c.message.as_str()) {
            failures.push(format!(
                "{}:\n  expected {} {:?}\n  got      {} {:?}",
                c.input_path, c.status, c.message, status, message
            ));
        }
        seen_status.insert(status);
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    for s in ["Healthy", "Progressing", "Degraded", "Suspended"] {
        assert!(seen_status.contains(s), "no fixture maps to {s}");
    }

    // Every fixture is listed, so none is silently left untested.
    let on_disk: BTreeSet<String> = std::fs::read_dir(dir.join("testdata"))
        .unwrap()
        .map(|e| format!("testdata/{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    assert_eq!(
        on_disk, seen_input,
        "testdata/ and health_test.yaml disagree"
    );
}

#[test]
fn argocd_health_script_handles_missing_fields() {
    let script = read(&gitops().join("argocd/health.lua"));
    let minimal = serde_json::json!({"apiVersion": "meshmig.io/v1alpha1", "kind": "MeshMigration", "metadata": {"name": "x"}});
    assert_eq!(argocd_health(&script, &minimal).0, "Progressing");
    let mut empty_status = minimal.clone();
    empty_status["status"] = serde_json::json!({});
    assert_eq!(argocd_health(&script, &empty_status).0, "Progressing");
    let mut no_conditions = minimal.clone();
    no_conditions["metadata"]["generation"] = 1.into();
    no_conditions["status"] = serde_json::json!({"observedGeneration": 1, "phase": "Completed"});
    assert_eq!(argocd_health(&script, &no_conditions).0, "Progressing");
}

#[test]
fn argocd_cm_patch_embeds_the_health_script_unchanged() {
    let dir = gitops().join("argocd");
    let script = read(&dir.join("health.lua"));
    let patch = read(&dir.join("argocd-cm-patch.yaml"));
    let key = "  resource.customizations.health.meshmig.io_MeshMigration: |";
    let mut lines = patch.lines().skip_while(|l| *l != key);
    assert_eq!(
        lines.next(),
        Some(key),
        "argocd-cm-patch.yaml lacks {key:?}"
    );
    let mut embedded = String::new();
    for l in lines.take_while(|l| l.is_empty() || l.starts_with("    ")) {
        embedded.push_str(l.strip_prefix("    ").unwrap_or(""));
        embedded.push('\n');
    }
    assert_eq!(
        embedded.trim_end(),
        script.trim_end(),
        "argocd-cm-patch.yaml embeds a different health.lua; regenerate it (see its header)"
    );
}

/// The `healthCheckExprs` entry for MeshMigration in the Flux Kustomization: (inProgress,
/// failed, current), each a double-quoted string on one line.
fn flux_exprs() -> (String, String, String) {
    let text = read(&gitops().join("flux/kustomization.yaml"));
    let mut lines = text
        .lines()
        .skip_while(|l| l.trim() != "healthCheckExprs:")
        .skip_while(|l| l.trim() != "kind: MeshMigration");
    assert_eq!(
        lines.next().map(str::trim),
        Some("kind: MeshMigration"),
        "no healthCheckExprs entry for MeshMigration"
    );
    let mut get = |key: &str| -> String {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("missing {key}"))
            .trim();
        let value = line
            .strip_prefix(&format!("{key}: "))
            .unwrap_or_else(|| panic!("expected {key}: …, got {line:?}"));
        serde_json::from_str(value)
            .unwrap_or_else(|e| panic!("{key} must be a double-quoted string: {e}"))
    };
    let in_progress = get("inProgress");
    let failed = get("failed");
    let current = get("current");
    (in_progress, failed, current)
}

/// kstatus result of Flux's CEL health check (RFC-0009): an unobserved generation is
/// InProgress; then inProgress, failed and current are tried in that order; none true is
/// InProgress. An expression that cannot be evaluated (no status yet) keeps Flux waiting.
fn flux_status(exprs: &(String, String, String), obj: &Value) -> &'static str {
    let generation = obj.pointer("/metadata/generation").and_then(Value::as_i64);
    let observed = obj
        .pointer("/status/observedGeneration")
        .and_then(Value::as_i64);
    if observed.is_some() && observed != generation {
        return "InProgress";
    }
    let mut ctx = cel::Context::default();
    for key in ["apiVersion", "kind", "metadata", "spec", "status"] {
        if let Some(v) = obj.get(key) {
            ctx.add_variable(key, v.clone()).unwrap();
        }
    }
    for (expr, result) in [
        (&exprs.0, "InProgress"),
        (&exprs.1, "Failed"),
        (&exprs.2, "Current"),
    ] {
        let program =
            cel::Program::compile(expr).unwrap_or_else(|e| panic!("cannot compile {expr:?}: {e}"));
        match program.execute(&ctx) {
            Ok(cel::Value::Bool(true)) => return result,
            Ok(cel::Value::Bool(false)) => {}
            Ok(other) => panic!("{expr:?} returned {other:?}, not a bool"),
            Err(_) if obj.get("status").is_none() => return "Waiting",
            Err(e) => panic!("{expr:?} failed: {e}"),
        }
    }
    "InProgress"
}

#[test]
fn flux_health_check_exprs_agree_with_the_argocd_mapping() {
    let dir = gitops().join("argocd");
    let exprs = flux_exprs();
    for c in health_tests(&read(&dir.join("health_test.yaml"))) {
        let obj = fixture(&dir.join(&c.input_path));
        let stale =
            obj.pointer("/status/observedGeneration") != obj.pointer("/metadata/generation");
        // Flux has no Suspended: a paused migration stays InProgress until the Kustomization's
        // timeout. A stale status is InProgress before any expression is evaluated.
        let expected = match (c.status.as_str(), stale) {
            _ if obj.get("status").is_none() => "Waiting",
            (_, true) => "InProgress",
            ("Healthy", _) => "Current",
            ("Degraded", _) => "Failed",
            _ => "InProgress",
        };
        assert_eq!(
            flux_status(&exprs, &obj),
            expected,
            "{} (Argo CD: {})",
            c.input_path,
            c.status
        );
    }
}
