//! Reading YAML files and directories into an Inventory.

use std::borrow::Cow;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use meshmig_planner::inventory::{Origin, locate};
use meshmig_planner::{Inventory, LoadError, ObjectRef, documents};
use thiserror::Error;

/// Why the inputs cannot be loaded; every message names the file (and object).
#[derive(Debug, Error)]
pub enum InputError {
    /// A file or directory cannot be read.
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Standard input cannot be read.
    #[error("standard input: {0}")]
    Stdin(#[source] std::io::Error),
    /// A text holds no documents: usually an export that failed.
    #[error("{name}: empty: no Kubernetes objects")]
    Empty { name: String },
    /// A directory holds no manifests.
    #[error("{}: no .yaml, .yml or .json files in this directory", path.display())]
    EmptyDirectory { path: PathBuf },
    /// A text does not load (the error names the file, line and object).
    #[error(transparent)]
    Load(#[from] LoadError),
    /// Nothing the planner uses.
    #[error("no Kubernetes objects meshmig uses were found in the input")]
    NothingUsed,
    /// An object given more than once with different contents (the error names every
    /// copy), and how many other objects are in the same case.
    #[error("{error}{}", others_too(*others))]
    Conflict {
        /// The conflict of the first such object.
        error: LoadError,
        others: usize,
    },
}

fn others_too(others: usize) -> String {
    match others {
        0 => String::new(),
        1 => " (1 other object too)".into(),
        n => format!(" ({n} other objects too)"),
    }
}

fn read_error(path: &Path) -> impl FnOnce(std::io::Error) -> InputError + '_ {
    move |source| InputError::Read {
        path: path.to_path_buf(),
        source,
    }
}

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

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), InputError> {
    let entries = fs::read_dir(dir).map_err(read_error(dir))?;
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
fn load_text(inv: &mut Inventory, text: &str, name: &str) -> Result<(), InputError> {
    if documents::is_blank(text) {
        return Err(InputError::Empty {
            name: name.to_string(),
        });
    }
    inv.load_str(text, name)?;
    Ok(())
}

/// Loads every path (file, directory, or `-` for standard input). Errors are one line and
/// name the file. An object given more than once is loaded once when the copies are
/// identical, and is an error naming every copy when they are not.
pub fn load(paths: &[PathBuf]) -> Result<Loaded, InputError> {
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
                .map_err(InputError::Stdin)?;
            load_text(&mut inv, &text, STDIN)?;
            sources.push(Source::Stdin(text));
            continue;
        }
        let meta = fs::metadata(path).map_err(read_error(path))?;
        let files = if meta.is_dir() {
            let mut files = Vec::new();
            collect(path, &mut files)?;
            if files.is_empty() {
                return Err(InputError::EmptyDirectory { path: path.clone() });
            }
            files
        } else {
            vec![path.clone()]
        };
        for file in files {
            let text = fs::read_to_string(&file).map_err(read_error(&file))?;
            load_text(&mut inv, &text, &file.display().to_string())?;
            sources.push(Source::File(file));
        }
    }
    if inv.is_empty() {
        return Err(InputError::NothingUsed);
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
fn conflict_message(loaded: &Loaded, object: &ObjectRef, others: usize) -> InputError {
    let origins = loaded
        .origins(std::slice::from_ref(object))
        .into_iter()
        .map(|(_, at)| at)
        .collect();
    InputError::Conflict {
        error: LoadError::Conflict {
            object: object.to_string(),
            origins,
        },
        others,
    }
}
