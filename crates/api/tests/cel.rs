//! The CRD's CEL rules, evaluated client-side (the e2e suite checks them on a real API
//! server too).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use meshmig_api::{MeshMigration, MeshMigrationSpec};
use serde_json::json;

fn validate(spec: serde_json::Value) -> Result<(), String> {
    let obj = json!({"apiVersion": "meshmig.io/v1alpha1", "kind": "MeshMigration", "metadata": {"name": "x"}, "spec": spec.clone()});
    // The spec must decode into the typed struct first, as it would for the operator.
    let mm: MeshMigration = serde_json::from_value(obj).map_err(|e| e.to_string())?;
    // Validate the object as the user wrote it (defaults are not applied client-side), with
    // the nested types' rules inlined in the schema.
    let _ = &mm;
    MeshMigrationSpec::validate_cel(&spec, None).map_err(|e| e.to_string())
}

#[test]
fn valid_specs_pass() {
    validate(json!({"namespaces": ["bookinfo"]})).unwrap();
    validate(json!({"namespaceSelector": {"matchLabels": {"mesh": "migrate"}}})).unwrap();
    validate(
        json!({"namespaces": ["a"], "checkpoints": {"timeout": "15m", "probes": [
        {"name": "p", "fromNamespace": "a", "url": "http://x:80/", "expect": {"status": 200}},
        {"name": "q", "fromNamespace": "a", "url": "http://x:80/", "expect": {"denied": true}}]}}),
    )
    .unwrap();
}

#[test]
fn namespaces_xor_selector() {
    assert!(validate(json!({})).unwrap_err().contains("exactly one"));
    assert!(
        validate(json!({"namespaces": ["a"], "namespaceSelector": {}}))
            .unwrap_err()
            .contains("exactly one")
    );
}

#[test]
fn empty_and_system_namespaces_are_refused() {
    assert!(
        validate(json!({"namespaces": []}))
            .unwrap_err()
            .contains("at least one")
    );
    assert!(
        validate(json!({"namespaces": ["kube-system"]}))
            .unwrap_err()
            .contains("system namespaces")
    );
}

#[test]
fn timeouts_are_bounded() {
    assert!(
        validate(json!({"namespaces": ["a"], "checkpoints": {"timeout": "1s"}}))
            .unwrap_err()
            .contains("between 10s and 24h")
    );
    assert!(
        validate(json!({"namespaces": ["a"], "checkpoints": {"timeout": "48h"}}))
            .unwrap_err()
            .contains("between 10s and 24h")
    );
}

#[test]
fn probe_expectation_is_exactly_one() {
    let probe = |expect| {
        json!({"namespaces": ["a"], "checkpoints": {"probes": [
        {"name": "p", "fromNamespace": "a", "url": "http://x/", "expect": expect}]}})
    };
    assert!(
        validate(probe(json!({})))
            .unwrap_err()
            .contains("exactly one")
    );
    assert!(
        validate(probe(json!({"status": 200, "denied": true})))
            .unwrap_err()
            .contains("exactly one")
    );
    assert!(
        validate(probe(json!({"denied": false})))
            .unwrap_err()
            .contains("may only be true")
    );
}
