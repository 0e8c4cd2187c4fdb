//! Reading YAML files and directories into an Inventory.

use std::borrow::Cow;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use meshmig_planner::inventory::{Origin, locate};
use meshmig_planner::{Inventory, LoadError, ObjectRef, documents};

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

/// One input, kept so that an error about an object can say where the object is: the
/// inventory does not record it (see [`meshmig_planner::inventory::locate`]).
enum Source {
    /// A file, read again when needed.
    File(PathBuf),
    /// Standard input, which cannot be read twice.
    Stdin(String),
    /// An embedded example file.
    Embedded(&'static str, &'static str),
}

/// The inventory of the inputs, and the inputs.
pub struct Loaded {
    /// Every object of the inputs, sorted, identical copies once.
    pub inv: Inventory,
    sources: Vec<Source>,
}

impl Loaded {
    /// An inventory that did not come from inputs (`--live`).
    pub fn without_sources(inv: Inventory) -> Self {
        Self {
            inv,
            sources: Vec::new(),
        }
    }

    /// Where the inputs hold each of `objects`, in input order. A file that cannot be read
    /// again is passed over: this only makes a message more precise.
    pub fn origins(&self, objects: &[ObjectRef]) -> Vec<(ObjectRef, Origin)> {
        let mut found = Vec::new();
        for source in &self.sources {
            let (name, text) = match source {
                Source::File(p) => match fs::read_to_string(p) {
                    Ok(text) => (p.display().to_string(), Cow::Owned(text)),
                    Err(_) => continue,
                },
                Source::Stdin(text) => (STDIN.to_string(), Cow::Borrowed(text.as_str())),
                Source::Embedded(name, text) => (name.to_string(), Cow::Borrowed(*text)),
            };
            found.extend(locate(&text, &name, objects));
        }
        found
    }

    /// Forgets standard input (its text can be large) once no message needs it.
    pub fn into_inventory(self) -> Inventory {
        self.inv
    }
}

/// How standard input is named in messages.
const STDIN: &str = "<stdin>";

/// Loads one text, refusing an empty one: an empty file is usually an export that failed.
fn load_text(inv: &mut Inventory, text: &str, name: &str) -> Result<(), String> {
    if documents::is_blank(text) {
        return Err(format!("{name}: empty: no Kubernetes objects"));
    }
    inv.load_str(text, name).map_err(|e| e.to_string())?;
    Ok(())
}

/// Loads every path (file, directory, or `-` for standard input). Errors are one line and
/// name the file. An object given more than once is loaded once when the copies are
/// identical, and is an error naming every copy when they are not.
pub fn load(paths: &[PathBuf]) -> Result<Loaded, String> {
    let mut inv = Inventory::default();
    let mut sources = Vec::new();
    if paths.is_empty() {
        for (name, text) in BOOKINFO {
            load_text(&mut inv, text, name)?;
            sources.push(Source::Embedded(name, text));
        }
    }
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| format!("standard input: {e}"))?;
            load_text(&mut inv, &text, STDIN)?;
            sources.push(Source::Stdin(text));
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
            load_text(&mut inv, &text, &file.display().to_string())?;
            sources.push(Source::File(file));
        }
    }
    if inv.is_empty() {
        return Err("no Kubernetes objects meshmig uses were found in the input".into());
    }
    let conflicts = inv.dedup();
    let loaded = Loaded { inv, sources };
    match conflicts.first() {
        Some(first) => Err(conflict_message(&loaded, first, conflicts.len() - 1)),
        None => Ok(loaded),
    }
}

/// The error for an object given more than once with different contents, naming every
/// copy, and how many other objects are in the same case.
fn conflict_message(loaded: &Loaded, object: &ObjectRef, others: usize) -> String {
    let origins = loaded
        .origins(std::slice::from_ref(object))
        .into_iter()
        .map(|(_, at)| at)
        .collect();
    let error = LoadError::Conflict {
        object: object.to_string(),
        origins,
    };
    match others {
        0 => error.to_string(),
        1 => format!("{error} (1 other object too)"),
        n => format!("{error} ({n} other objects too)"),
    }
}
