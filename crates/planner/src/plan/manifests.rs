//! The generated objects of a plan, deduplicated by reference.

use super::*;

// ------------------------------------------------------------------ manifests

pub(super) struct Manifests {
    pub(super) migration: String,
    pub(super) items: Vec<(Step, ObjectRef, Value)>,
}

impl Manifests {
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
        let obj = ObjectRef {
            kind,
            namespace: get("namespace"),
            name: get("name").unwrap_or_default(),
        };
        self.items.push((step, obj.clone(), v));
        (self.items.len() - 1, obj)
    }
}
