//! In-process measurements, each run in a child process of its own so that its peak memory
//! (VmHWM) is its own: loading and planning a corpus, and VirtualService conversion.

use std::path::{Path, PathBuf};
use std::time::Instant;

use meshmig_planner::Inventory;
use meshmig_planner::model::Model;
use meshmig_planner::routes::{self, ConvertOptions};
use serde::{Deserialize, Serialize};

use crate::Error;

/// One load-and-plan run.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct PlanRun {
    /// Bytes of YAML read.
    pub bytes: u64,
    /// Objects loaded.
    pub objects: usize,
    /// Reading the files (s).
    pub read_s: f64,
    /// Parsing them into the Inventory (`Inventory::load_str`) (s).
    pub load_s: f64,
    /// `plan()` (s).
    pub plan_s: f64,
    /// Peak resident memory of the process (VmHWM), bytes.
    pub peak_rss: u64,
    /// Resident memory after loading, before planning (VmRSS), bytes.
    pub rss_after_load: u64,
    /// Namespaces planned.
    pub namespaces: usize,
    /// Actions in the plan.
    pub actions: usize,
    /// Generated manifests.
    pub manifests: usize,
    /// Unaccepted blockers.
    pub blockers: usize,
    /// Namespace names listed in the generated AuthorizationPolicies' `notNamespaces`
    /// (bypass protection of Services whose callers cannot be enumerated names every
    /// namespace of the migration: this grows with the square of the migration's size).
    #[serde(default)]
    pub not_namespaces_entries: usize,
}

/// One conversion run.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct ConvertRun {
    /// Mesh VirtualServices converted per repeat.
    pub virtual_services: usize,
    /// HTTPRoutes produced per repeat.
    pub routes: usize,
    /// Seconds of each repeat (conversion only: the model is built once, outside).
    pub repeats_s: Vec<f64>,
    /// Loading the file (s).
    pub load_s: f64,
}

/// A field of `/proc/<pid>/status` in bytes (`VmHWM`, `VmRSS`), 0 when unavailable.
pub fn proc_status_bytes(pid: &str, field: &str) -> u64 {
    proc_kb_field(&format!("/proc/{pid}/status"), field)
}

/// A field of `/proc/meminfo` in bytes (`MemTotal`), 0 when unavailable.
pub fn proc_meminfo_bytes(field: &str) -> u64 {
    proc_kb_field("/proc/meminfo", field)
}

/// A `Field:   1234 kB` line of a /proc file, in bytes; 0 when the file or field is missing.
fn proc_kb_field(file: &str, field: &str) -> u64 {
    let Ok(text) = std::fs::read_to_string(file) else {
        return 0;
    };
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(field)?.strip_prefix(':')?;
            let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kb * 1024)
        })
        .unwrap_or(0)
}

/// The manifest files of a path, as the CLI reads them (a directory: every .yaml/.yml/.json
/// below it, sorted).
pub fn files_of(path: &Path) -> Result<Vec<PathBuf>, Error> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let rd = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        for entry in rd {
            let p = entry.map_err(|e| Error::io(&dir, e))?.path();
            if p.is_dir() {
                stack.push(p);
            } else if matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            ) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Loads and plans `path` with the MeshMigration it holds.
pub fn plan_run(path: &Path) -> Result<PlanRun, Error> {
    let files = files_of(path)?;
    let t = Instant::now();
    let mut texts = Vec::with_capacity(files.len());
    for f in &files {
        texts.push((
            f.display().to_string(),
            std::fs::read_to_string(f).map_err(|e| Error::io(f, e))?,
        ));
    }
    let read_s = t.elapsed().as_secs_f64();
    let bytes = texts.iter().map(|(_, t)| t.len() as u64).sum();
    let t = Instant::now();
    let mut inv = Inventory::default();
    let mut objects = 0;
    for (name, text) in &texts {
        objects += inv
            .load_str(text, name)
            .map_err(|e| Error::Msg(e.to_string()))?;
    }
    // As `meshmig plan` does: sorted once after loading, so plan() need not sort a copy.
    inv.sort();
    let load_s = t.elapsed().as_secs_f64();
    drop(texts);
    let rss_after_load = proc_status_bytes("self", "VmRSS");
    let mm = inv
        .mesh_migrations
        .first()
        .cloned()
        .ok_or_else(|| Error::Msg(format!("{}: no MeshMigration", path.display())))?;
    let name = mm.metadata.name.clone().unwrap_or_default();
    let t = Instant::now();
    let plan = meshmig_planner::plan(&inv, &mm.spec, &name);
    let plan_s = t.elapsed().as_secs_f64();
    let actions = plan
        .namespaces
        .iter()
        .flat_map(|n| &n.steps)
        .map(|s| s.actions.len())
        .sum();
    Ok(PlanRun {
        bytes,
        objects,
        read_s,
        load_s,
        plan_s,
        peak_rss: proc_status_bytes("self", "VmHWM"),
        rss_after_load,
        namespaces: plan.namespaces.len(),
        actions,
        manifests: plan.manifests.len(),
        blockers: plan.summary.blockers,
        not_namespaces_entries: not_namespaces_entries(&plan.manifests),
    })
}

/// Entries of every `spec.rules[].from[].source.notNamespaces` of `manifests`.
fn not_namespaces_entries(manifests: &[serde_json::Value]) -> usize {
    manifests
        .iter()
        .filter_map(|m| m.pointer("/spec/rules")?.as_array())
        .flatten()
        .filter_map(|r| r.get("from")?.as_array())
        .flatten()
        .filter_map(|f| f.pointer("/source/notNamespaces")?.as_array())
        .map(Vec::len)
        .sum()
}

/// Converts every mesh VirtualService of `path` `repeats` times with `routes::convert`.
/// With `print`, the HTTPRoutes of the last repeat are written to stdout as YAML (the
/// end-to-end comparison with ingress2gateway, which prints its output).
pub fn convert_run(path: &Path, repeats: usize, print: bool) -> Result<ConvertRun, Error> {
    let t = Instant::now();
    let mut inv = Inventory::default();
    for f in files_of(path)? {
        let text = std::fs::read_to_string(&f).map_err(|e| Error::io(&f, e))?;
        inv.load_str(&text, &f.display().to_string())
            .map_err(|e| Error::Msg(e.to_string()))?;
    }
    inv.sort();
    let load_s = t.elapsed().as_secs_f64();
    let model = Model::new(&inv);
    let mesh: Vec<_> = inv
        .virtual_services
        .iter()
        .filter(|v| routes::is_mesh(v))
        .collect();
    let mut out = ConvertRun {
        virtual_services: mesh.len(),
        load_s,
        ..Default::default()
    };
    let opts = ConvertOptions::default();
    let mut last = Vec::new();
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        let convs: Vec<routes::Conversion> = mesh
            .iter()
            .map(|vs| routes::convert(&model, vs, &inv.destination_rules, opts))
            .collect();
        out.repeats_s.push(t.elapsed().as_secs_f64());
        out.routes = convs.iter().map(|c| c.routes.len()).sum();
        last = convs;
    }
    if print {
        use std::io::Write;
        let routes: Vec<serde_json::Value> = last.into_iter().flat_map(|c| c.routes).collect();
        let yaml = crate::synth::to_yaml(&routes).map_err(Error::Msg)?;
        std::io::stdout()
            .write_all(yaml.as_bytes())
            .map_err(|e| Error::io(Path::new("<stdout>"), e))?;
    }
    Ok(out)
}

/// Median of a sample (0 when empty).
pub fn median(xs: &[f64]) -> f64 {
    let mut v: Vec<f64> = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Minimum of a sample (0 when empty).
pub fn min(xs: &[f64]) -> f64 {
    xs.iter().copied().reduce(f64::min).unwrap_or(0.0)
}

/// Maximum of a sample (0 when empty).
pub fn max(xs: &[f64]) -> f64 {
    xs.iter().copied().reduce(f64::max).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn statistics() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(min(&[3.0, 1.0]), 1.0);
        assert_eq!(max(&[3.0, 1.0]), 3.0);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn own_memory_is_readable() {
        assert!(proc_status_bytes("self", "VmHWM") > 0);
        assert!(proc_status_bytes("self", "VmRSS") > 0);
        assert_eq!(proc_status_bytes("self", "NoSuchField"), 0);
    }

    #[test]
    fn plan_and_convert_a_small_corpus() {
        let dir = tempfile::tempdir().unwrap();
        let opts = crate::synth::Options {
            namespaces: 4,
            seed: 2,
            variant: crate::synth::Variant::Mesh,
        };
        crate::write_corpus(&opts, &dir.path().join("c")).unwrap();
        let r = plan_run(&dir.path().join("c")).unwrap();
        assert_eq!(r.namespaces, 4);
        assert!(r.actions > 100 && r.peak_rss > 0, "{r:?}");
        let c = convert_run(&dir.path().join("c"), 2, false).unwrap();
        assert_eq!(c.virtual_services, 8);
        assert_eq!(c.repeats_s.len(), 2);
        assert!(c.routes >= 6, "{c:?}");
    }
}
