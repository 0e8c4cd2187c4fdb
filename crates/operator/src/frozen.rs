//! The frozen inventory: the cluster objects a migration was planned from, stored when the
//! first namespace leaves step 1. Re-planning it with the same spec gives the same plan, so
//! the operator executes exactly what `meshmig plan` showed even as the migration changes the
//! cluster. Encoding is pure; the act layer stores it.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use meshmig_api::names as mn;
use meshmig_api::{MeshMigration, MeshMigrationSpec, PlanRef};
use meshmig_planner::Inventory;
use meshmig_planner::object::dns_subdomain;
use serde_json::Value;
use sha2::{Digest, Sha256};

const KEY: &str = "inventory.json.gz";
const PART: usize = 900 * 1024;

/// Name of the head ConfigMap.
pub fn config_map_name(migration: &str) -> String {
    dns_subdomain(&["meshmig", migration, "plan"])
}

/// Hash of the spec fields the plan depends on.
pub fn spec_hash(spec: &MeshMigrationSpec) -> String {
    // Named fields only: a field added to a struct in a later release must not change the
    // hash of migrations already in flight.
    let cp = &spec.control_plane;
    let relevant = serde_json::json!({
        "namespaces": spec.namespaces,
        "namespaceSelector": spec.namespace_selector,
        "ordering": spec.ordering,
        "controlPlane": [serde_json::json!(cp.mode), serde_json::json!(cp.istio), serde_json::json!(cp.istio_cni), serde_json::json!(cp.ztunnel), serde_json::json!(cp.istio_namespace), serde_json::json!(cp.ztunnel_namespace), serde_json::json!(cp.cni_namespace), serde_json::json!(cp.trust_domain)],
        "waypoint": [serde_json::json!(spec.waypoint.policy), serde_json::json!(spec.waypoint.name)],
        "bypassProtection": spec.bypass_protection,
    });
    let digest = Sha256::digest(relevant.to_string().as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Hash of what a plan makes the operator do (order, actions, manifests), independent of
/// summary counts.
pub fn plan_hash(plan: &meshmig_planner::Plan) -> String {
    let acting = serde_json::json!([
        plan.namespace_order,
        plan.control_plane_actions,
        plan.namespaces,
        plan.manifests
    ]);
    let digest = Sha256::digest(acting.to_string().as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Encodes the inventory into ConfigMaps (head first; write parts before the head).
pub fn encode(
    inv: &Inventory,
    migration: &str,
    namespace: &str,
    hash: &str,
    owner: Option<OwnerReference>,
) -> std::io::Result<Vec<ConfigMap>> {
    let json = serde_json::to_vec(&inv.to_objects())?;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&json)?;
    let gz = enc.finish()?;
    let chunks: Vec<&[u8]> = if gz.is_empty() {
        vec![&gz[..]]
    } else {
        gz.chunks(PART).collect()
    };
    let head = config_map_name(migration);
    let count = chunks.len();
    Ok(chunks
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let mut annotations = BTreeMap::from([(
                meshmig_api::names::ANNOTATION_SPEC_HASH.to_string(),
                hash.to_string(),
            )]);
            if i == 0 {
                annotations.insert(
                    meshmig_api::names::ANNOTATION_FROZEN_PARTS.to_string(),
                    count.to_string(),
                );
            }
            ConfigMap {
                metadata: ObjectMeta {
                    name: Some(if i == 0 {
                        head.clone()
                    } else {
                        format!("{head}-p{i}")
                    }),
                    namespace: Some(namespace.to_string()),
                    labels: Some(BTreeMap::from([
                        (mn::LABEL_MANAGED_BY.to_string(), mn::MANAGED_BY.to_string()),
                        (mn::LABEL_MIGRATION.to_string(), migration.to_string()),
                    ])),
                    annotations: Some(annotations),
                    owner_references: owner.clone().map(|o| vec![o]),
                    ..Default::default()
                },
                binary_data: Some(BTreeMap::from([(KEY.to_string(), ByteString(c.to_vec()))])),
                ..Default::default()
            }
        })
        .collect())
}

/// Number of parts of a head ConfigMap.
pub fn parts_of(head: &ConfigMap) -> usize {
    head.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(meshmig_api::names::ANNOTATION_FROZEN_PARTS))
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
}

/// The reference to a frozen plan found in the cluster but not in status: a reconcile froze
/// it, may have carried out the first changes, and its status write was lost (a crash, a
/// failed request). `None` unless the head belongs to this MeshMigration object and says
/// which spec it was planned for. The plan hash is filled in once the plan is re-derived.
pub fn adopt(head: &ConfigMap, mm: &MeshMigration) -> Option<PlanRef> {
    if !crate::act::owned_by(head, mm) {
        return None;
    }
    let spec_hash = head
        .metadata
        .annotations
        .as_ref()?
        .get(meshmig_api::names::ANNOTATION_SPEC_HASH)?;
    Some(PlanRef {
        namespace: head.metadata.namespace.clone()?,
        config_map: head.metadata.name.clone()?,
        spec_hash: spec_hash.clone(),
        generation: mm.metadata.generation.unwrap_or(0),
        plan_hash: None,
        config_map_uid: head.metadata.uid.clone(),
    })
}

/// Decodes the inventory from head and parts.
pub fn decode(parts: &[ConfigMap]) -> Result<Inventory, String> {
    let mut gz = Vec::new();
    for p in parts {
        let b = p
            .binary_data
            .as_ref()
            .and_then(|d| d.get(KEY))
            .ok_or("a part holds no data")?;
        gz.extend_from_slice(&b.0);
    }
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut json)
        .map_err(|e| e.to_string())?;
    let objects: Vec<Value> = serde_json::from_slice(&json).map_err(|e| e.to_string())?;
    let mut inv = Inventory::default();
    for o in objects {
        inv.add_object(o, "frozen inventory")
            .map_err(|e| e.to_string())?;
    }
    Ok(inv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frozen_inventory_plans_like_the_original() {
        let mut inv = Inventory::default();
        for f in [
            "00-control-plane.yaml",
            "10-bookinfo.yaml",
            "20-istio.yaml",
            "30-migration.yaml",
        ] {
            let path = format!("{}/../../examples/bookinfo/{f}", env!("CARGO_MANIFEST_DIR"));
            inv.load_str(&std::fs::read_to_string(path).unwrap(), f)
                .unwrap();
        }
        let spec = inv.mesh_migrations[0].spec.clone();
        let cms = encode(&inv, "bookinfo", "meshmig-system", &spec_hash(&spec), None).unwrap();
        let back = decode(&cms).unwrap();
        let a = meshmig_planner::plan(&inv, &spec, "bookinfo");
        let b = meshmig_planner::plan(&back, &spec, "bookinfo");
        let (mut a, mut b) = (
            serde_json::to_value(&a).unwrap(),
            serde_json::to_value(&b).unwrap(),
        );
        // Counts of skipped kinds are not objects and are not frozen.
        a["summary"]["skipped"] = serde_json::Value::Null;
        b["summary"]["skipped"] = serde_json::Value::Null;
        for key in a.as_object().unwrap().keys() {
            pretty_assertions::assert_eq!(a[key], b[key], "plan field {key} differs");
        }
    }

    #[test]
    fn only_a_head_of_this_migration_object_is_adopted() {
        let mut mm = MeshMigration::new("m", MeshMigrationSpec::default());
        mm.metadata.uid = Some("uid-now".into());
        mm.metadata.generation = Some(3);
        let mut earlier = mm.clone();
        earlier.metadata.uid = Some("uid-earlier".into());
        let inv = Inventory::default();
        let head_of = |owner: &MeshMigration| {
            let mut cms = encode(
                &inv,
                "m",
                "meshmig-system",
                "abc",
                crate::act::owner_ref(owner),
            )
            .unwrap();
            let mut head = cms.remove(0);
            head.metadata.uid = Some("cm-uid".into());
            head
        };
        let pr = adopt(&head_of(&mm), &mm).expect("this object's head");
        assert_eq!(pr.config_map, config_map_name("m"));
        assert_eq!(pr.namespace, "meshmig-system");
        assert_eq!(
            pr.spec_hash, "abc",
            "the spec it was planned for, not the current one"
        );
        assert_eq!(pr.generation, 3);
        assert_eq!(pr.config_map_uid.as_deref(), Some("cm-uid"));
        assert_eq!(pr.plan_hash, None);
        assert!(
            adopt(&head_of(&earlier), &mm).is_none(),
            "a leftover of an earlier object of the same name"
        );
        let mut no_hash = head_of(&mm);
        no_hash.metadata.annotations = None;
        assert!(adopt(&no_hash, &mm).is_none());
    }

    #[test]
    fn spec_hash_ignores_fields_that_do_not_change_the_plan() {
        let mut s = MeshMigrationSpec {
            namespaces: Some(vec!["a".into()]),
            ..Default::default()
        };
        let h = spec_hash(&s);
        s.accepted_findings.push("x".into());
        s.pause_before.push(meshmig_api::Step::WaypointActivation);
        assert_eq!(spec_hash(&s), h);
        s.namespaces = Some(vec!["b".into()]);
        assert_ne!(spec_hash(&s), h);
    }
}
