//! Reading YAML files and directories into an Inventory.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use meshmig_planner::Inventory;

/// The embedded bookinfo example (`examples/bookinfo`), used when no path is given.
pub const BOOKINFO: &[(&str, &str)] = &[
    (
        "examples/bookinfo/00-control-plane.yaml",
        include_str!("../../../examples/bookinfo/00-control-plane.yaml"),
    ),
    (
        "examples/bookinfo/10-bookinfo.yaml",
        include_str!("../../../examples/bookinfo/10-bookinfo.yaml"),
    ),
    (
        "examples/bookinfo/20-istio.yaml",
        include_str!("../../../examples/bookinfo/20-istio.yaml"),
    ),
    (
        "examples/bookinfo/30-migration.yaml",
        include_str!("../../../examples/bookinfo/30-migration.yaml"),
    ),
];

fn is_manifest(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries = fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            collect(&p, out)?;
        } else if is_manifest(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// Loads every path (file, directory, or `-` for standard input). Errors are one line and
/// name the file.
pub fn load(paths: &[PathBuf]) -> Result<Inventory, String> {
    let mut inv = Inventory::default();
    if paths.is_empty() {
        for (name, text) in BOOKINFO {
            inv.load_str(text, name).map_err(|e| e.to_string())?;
        }
        return Ok(inv);
    }
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| format!("standard input: {e}"))?;
            inv.load_str(&text, "<stdin>").map_err(|e| e.to_string())?;
            continue;
        }
        let meta = fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let files = if meta.is_dir() {
            let mut files = Vec::new();
            collect(path, &mut files)?;
            if files.is_empty() {
                return Err(format!(
                    "{}: no .yaml, .yml or .json files in this directory",
                    path.display()
                ));
            }
            files
        } else {
            vec![path.clone()]
        };
        for file in files {
            let text = fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let name = file.display().to_string();
            inv.load_str(&text, &name).map_err(|e| e.to_string())?;
        }
    }
    if inv.is_empty() {
        return Err("no Kubernetes objects meshmig uses were found in the input".into());
    }
    inv.sort();
    Ok(inv)
}
