//! The generated objects of a plan and their order in it.

use super::*;

/// A generated object and the step that creates it.
pub(super) struct Manifest {
    pub(super) step: Step,
    pub(super) value: Value,
}

pub(super) struct Manifests {
    pub(super) migration: String,
    pub(super) items: Vec<Manifest>,
}

impl Manifests {
    pub(super) fn new(migration: &str) -> Self {
        Self {
            migration: migration.to_string(),
            items: Vec::new(),
        }
    }

    /// Adds a generated object with meshmig's labels; returns its (pre-sort) index.
    pub(super) fn add(
        &mut self,
        step: Step,
        role: &str,
        source: Option<&ObjectRef>,
        mut v: Value,
    ) -> (usize, ObjectRef) {
        if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            if let Some(l) = meta
                .entry("labels")
                .or_insert_with(|| json!({}))
                .as_object_mut()
            {
                l.insert(mn::LABEL_MANAGED_BY.into(), mn::MANAGED_BY.into());
                l.insert(mn::LABEL_MIGRATION.into(), self.migration.clone().into());
                l.insert(mn::LABEL_STEP.into(), step.to_string().into());
                l.insert(mn::LABEL_ROLE.into(), role.into());
            }
            if let Some(src) = source
                && let Some(a) = meta
                    .entry("annotations")
                    .or_insert_with(|| json!({}))
                    .as_object_mut()
            {
                a.insert(mn::ANNOTATION_SOURCE.into(), src.to_string().into());
            }
        }
        let object = reference_of(&v);
        self.items.push(Manifest { step, value: v });
        (self.items.len() - 1, object)
    }
}

fn reference_of(v: &Value) -> ObjectRef {
    let kind = v
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let meta = v.get("metadata");
    let get = |k: &str| {
        meta.and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    ObjectRef {
        kind,
        namespace: get("namespace"),
        name: get("name").unwrap_or_default(),
    }
}

/// The manifests of a plan in step order, and where each pre-sort index went.
pub(super) struct OrderedManifests {
    pub(super) values: Vec<Value>,
    pub(super) steps: Vec<Step>,
    /// Pre-sort index → index in `values`.
    pub(super) remap: HashMap<usize, usize>,
}

impl OrderedManifests {
    pub(super) fn new(mut items: Vec<Manifest>) -> Self {
        let mut idx: Vec<usize> = (0..items.len()).collect();
        idx.sort_by_key(|i| items[*i].step);
        let remap = idx
            .iter()
            .enumerate()
            .map(|(new, old)| (*old, new))
            .collect();
        let steps = idx.iter().map(|i| items[*i].step).collect();
        // Moved out rather than cloned: the manifests are most of the plan's memory.
        let values = idx
            .iter()
            .map(|i| std::mem::take(&mut items[*i].value))
            .collect();
        Self {
            values,
            steps,
            remap,
        }
    }
}
