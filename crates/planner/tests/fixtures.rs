//! Fixture cases: `tests/fixtures/<case>/input.yaml` is planned and summarised; the summary
//! must equal the reviewed `expected.txt`. Run with `UPDATE_FIXTURES=1` to rewrite the
//! expectations, then review the diff before committing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::fmt::Write;
use std::path::{Path, PathBuf};

use meshmig_api::MeshMigrationSpec;
use meshmig_planner::Inventory;
use meshmig_planner::plan::{Op, Plan, injected_namespaces, plan};

fn summarize(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# findings");
    for f in &plan.findings {
        let detail = f.message.split(". ").next().unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<7} {} {}{} — {detail}",
            f.severity.as_str(),
            f.id,
            f.object,
            if f.accepted { " [accepted]" } else { "" }
        );
    }
    for c in &plan.control_plane_commands {
        let _ = writeln!(out, "command: {c}");
    }
    let _ = writeln!(out, "# order: {}", plan.namespace_order.join(" "));
    for ns in &plan.namespaces {
        let _ = writeln!(out, "# namespace {}", ns.name);
        let w = &ns.waypoint;
        let _ = writeln!(
            out,
            "waypoint needed={} name={} for={} exists={} principal={}",
            w.needed, w.name, w.for_, w.exists, w.principal
        );
        for s in &ns.services {
            let reasons: Vec<String> = s
                .reasons
                .iter()
                .map(|r| format!("{} {}", r.id, r.object))
                .collect();
            let _ = writeln!(
                out,
                "service {} needs={} served={} bypass={} reasons=[{}]",
                s.name,
                s.needs_waypoint,
                s.served_by_waypoint,
                s.bypass_protection,
                reasons.join("; ")
            );
        }
        for step in &ns.steps {
            for a in step.actions.iter().filter(|a| a.op != Op::Verify) {
                let kv = match (&a.key, &a.value) {
                    (Some(k), Some(v)) => format!(" {k}={v}"),
                    (Some(k), None) => format!(" {k}-"),
                    _ => String::new(),
                };
                let op = serde_json::to_value(a.op)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "step {} {op} {}{kv}{}",
                    step.number,
                    a.object,
                    if a.after_rollout {
                        " (after rollout)"
                    } else {
                        ""
                    }
                );
            }
        }
        for e in &ns.enforcement {
            for win in &e.windows {
                let _ = writeln!(
                    out,
                    "window {} <- {} {} {}-{}: {}",
                    e.service, e.policy, win.kind, win.from_step, win.to_step, win.reason
                );
            }
        }
    }
    let _ = writeln!(out, "# manifests");
    for m in &plan.manifests {
        let _ = writeln!(out, "---");
        out.push_str(&serde_saphyr::to_string(m).unwrap_or_default());
    }
    out
}

fn run_case(dir: &Path) -> Result<(), String> {
    let input = std::fs::read_to_string(dir.join("input.yaml")).map_err(|e| e.to_string())?;
    let mut inv = Inventory::default();
    inv.load_str(&input, "input.yaml")
        .map_err(|e| e.to_string())?;
    let (name, spec) = match inv.mesh_migrations.first() {
        Some(m) => (m.metadata.name.clone().unwrap_or_default(), m.spec.clone()),
        None => {
            let spec = MeshMigrationSpec {
                namespaces: Some(injected_namespaces(&inv)),
                ..Default::default()
            };
            ("fixture".to_string(), spec)
        }
    };
    let actual = summarize(&plan(&inv, &spec, &name));
    let expected_path = dir.join("expected.txt");
    if std::env::var_os("UPDATE_FIXTURES").is_some() {
        std::fs::write(&expected_path, &actual).map_err(|e| e.to_string())?;
        return Ok(());
    }
    let expected = std::fs::read_to_string(&expected_path).map_err(|e| {
        format!(
            "{}: {e} (run with UPDATE_FIXTURES=1 and review)",
            expected_path.display()
        )
    })?;
    if expected != actual {
        let diff: Vec<String> = expected
            .lines()
            .zip(actual.lines())
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .take(5)
            .map(|(i, (a, b))| format!("line {}:\n  expected: {a}\n  actual:   {b}", i + 1))
            .collect();
        return Err(format!(
            "{} differs from the plan ({} vs {} lines)\n{}",
            expected_path.display(),
            expected.lines().count(),
            actual.lines().count(),
            diff.join("\n")
        ));
    }
    Ok(())
}

#[test]
fn fixtures() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("input.yaml").exists())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 40,
        "expected at least 40 fixture cases, found {}",
        cases.len()
    );
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| run_case(c).err().map(|e| format!("{}: {e}", c.display())))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} fixtures failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

#[test]
fn every_blocker_and_warning_has_a_fixture() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut all = String::new();
    for e in std::fs::read_dir(&root).unwrap() {
        let p = e.unwrap().path().join("expected.txt");
        if let Ok(t) = std::fs::read_to_string(p) {
            all.push_str(&t);
        }
    }
    let missing: Vec<&str> = meshmig_planner::findings::CATALOGUE
        .iter()
        .filter(|k| k.severity != meshmig_planner::Severity::Info)
        .filter(|k| !all.contains(&format!("{} {} ", k.severity.as_str(), k.id)))
        .map(|k| k.id)
        .collect();
    assert!(missing.is_empty(), "no fixture triggers: {missing:?}");
}
