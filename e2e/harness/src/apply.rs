//! Server-side apply of multi-document YAML, for any kind the API server serves.

use std::collections::HashMap;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::{self, ApiCapabilities, ApiResource, Scope};
use kube::{Client, core::GroupVersionKind};
use serde_json::Value;

use crate::{Error, FIELD_MANAGER, Result};

/// The documents of a YAML stream, with `kind: List` expanded and empty documents dropped.
pub(crate) fn documents(yaml: &str) -> Result<Vec<Value>> {
    let docs: Vec<Option<Value>> = serde_saphyr::from_multiple(yaml).map_err(|e| Error::Apply {
        index: 0,
        object: "YAML stream".into(),
        message: format!("not valid YAML: {e}"),
    })?;
    let mut out = Vec::new();
    for doc in docs.into_iter().flatten() {
        if doc.is_null() {
            continue;
        }
        match (
            doc.get("kind").and_then(Value::as_str),
            doc.get("items").and_then(Value::as_array),
        ) {
            (Some("List"), Some(items)) => out.extend(items.iter().cloned()),
            _ => out.push(doc),
        }
    }
    Ok(out)
}

fn describe(doc: &Value) -> String {
    let kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("<no kind>");
    let meta = doc.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("<no name>");
    match meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
    {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

fn gvk(doc: &Value) -> Option<GroupVersionKind> {
    let api_version = doc.get("apiVersion")?.as_str()?;
    let kind = doc.get("kind")?.as_str()?;
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    Some(GroupVersionKind::gvk(group, version, kind))
}

/// Applies every document in order (so a Namespace can precede what lives in it), force-owning
/// conflicting fields as [`FIELD_MANAGER`]. Namespaced objects without a namespace go to
/// `default`. Returns the objects as stored.
pub(crate) async fn apply_yaml(client: &Client, yaml: &str) -> Result<Vec<DynamicObject>> {
    let mut resources: HashMap<GroupVersionKind, (ApiResource, ApiCapabilities)> = HashMap::new();
    let mut applied = Vec::new();
    for (index, doc) in documents(yaml)?.into_iter().enumerate() {
        let object = describe(&doc);
        let fail = |message: String| Error::Apply {
            index,
            object: object.clone(),
            message,
        };
        let gvk = gvk(&doc).ok_or_else(|| fail("missing apiVersion or kind".into()))?;
        let name = doc
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .ok_or_else(|| fail("missing metadata.name (apply cannot use generateName)".into()))?
            .to_string();
        if !resources.contains_key(&gvk) {
            let found = discovery::pinned_kind(client, &gvk).await.map_err(|e| {
                fail(format!(
                    "the API server does not serve {}/{} {}: {e}",
                    gvk.group, gvk.version, gvk.kind
                ))
            })?;
            resources.insert(gvk.clone(), found);
        }
        let Some((resource, capabilities)) = resources.get(&gvk) else {
            return Err(fail("discovery result lost".into()));
        };
        let api: Api<DynamicObject> = match capabilities.scope {
            Scope::Namespaced => {
                let ns = doc
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("default");
                Api::namespaced_with(client.clone(), ns, resource)
            }
            Scope::Cluster => Api::all_with(client.clone(), resource),
        };
        let stored = api
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&doc),
            )
            .await
            .map_err(|e| fail(e.to_string()))?;
        applied.push(stored);
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_skip_empties_and_expand_lists() {
        let yaml = "---\n# only a comment\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n\
                    apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: b, namespace: a}}\n";
        let docs = documents(yaml).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(describe(&docs[0]), "Namespace a");
        assert_eq!(describe(&docs[1]), "ConfigMap a/b");
        assert_eq!(
            gvk(&docs[0]),
            Some(GroupVersionKind::gvk("", "v1", "Namespace"))
        );
    }

    #[test]
    fn group_versions_are_split() {
        let doc = serde_json::json!({"apiVersion": "sailoperator.io/v1", "kind": "Istio"});
        assert_eq!(
            gvk(&doc),
            Some(GroupVersionKind::gvk("sailoperator.io", "v1", "Istio"))
        );
    }

    #[test]
    fn bad_yaml_is_reported() {
        let err = documents("a: [").unwrap_err();
        assert!(err.to_string().contains("not valid YAML"), "{err}");
    }
}
