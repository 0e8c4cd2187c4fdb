//! Rollback snapshots: what a step is about to change, recorded before it changes anything,
//! stored in ConfigMaps (gzip'd into `binaryData` when large, split past 1 MiB).
//!
//! Encoding and decoding are pure; `act` reads and writes the ConfigMaps.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use meshmig_api::Step;
use meshmig_api::names as mn;
use meshmig_planner::ObjectRef;
use meshmig_planner::object::dns_subdomain;
use meshmig_planner::plan::{Action, Op};
use serde::{Deserialize, Serialize};
use serde_json::Value;

const DATA_KEY: &str = "snapshot.json";
const GZ_KEY: &str = "snapshot.json.gz";
/// Above this size the JSON is gzip'd.
pub const GZIP_ABOVE: usize = 256 * 1024;
/// Maximum payload per ConfigMap (the API limit is 1 MiB including metadata).
pub const PART_SIZE: usize = 900 * 1024;

/// The prior state of one object a step touches.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "change", rename_all = "kebab-case")]
pub enum Entry {
    /// The step creates the object; `existed` says it was there before (then it is left).
    Create {
        /// The object.
        object: ObjectRef,
        /// `group/version`.
        api_version: String,
        /// It already existed before the step.
        existed: bool,
    },
    /// The step sets or removes a label on the object.
    Label {
        /// The object.
        object: ObjectRef,
        /// Label key.
        key: String,
        /// Value before the step (`None`: absent).
        previous: Option<String>,
    },
    /// The step sets or removes a label on a workload's pod template.
    TemplateLabel {
        /// The workload.
        object: ObjectRef,
        /// Label key.
        key: String,
        /// Value before the step.
        previous: Option<String>,
    },
    /// The step restarts a workload (pod-template annotation).
    Restart {
        /// The workload.
        object: ObjectRef,
        /// Annotation value before the step.
        previous: Option<String>,
    },
    /// The step deletes the object: the whole object is kept.
    Delete {
        /// The object.
        object: ObjectRef,
        /// The object as it was (server fields stripped).
        manifest: Value,
    },
    /// The step patches a Sail resource's spec.
    SailSpec {
        /// The object.
        object: ObjectRef,
        /// `spec.profile` before (`None`: absent).
        profile: Option<Value>,
        /// `spec.values` before (`None`: absent).
        values: Option<Value>,
    },
    /// The step removes `mesh` from a VirtualService's gateways.
    Gateways {
        /// The VirtualService.
        object: ObjectRef,
        /// `spec.gateways` before (`None`: absent).
        previous: Option<Vec<String>>,
    },
}

impl Entry {
    /// The object the entry is about.
    pub fn object(&self) -> &ObjectRef {
        match self {
            Entry::Create { object, .. }
            | Entry::Label { object, .. }
            | Entry::TemplateLabel { object, .. }
            | Entry::Restart { object, .. }
            | Entry::Delete { object, .. }
            | Entry::SailSpec { object, .. }
            | Entry::Gateways { object, .. } => object,
        }
    }
}

/// When an undo entry runs. What an entry restores decides it, never its place in the
/// list: the injector only looks at a Pod when it is created, so a rollout that runs before
/// the namespace's injection label is back creates Pods outside the mesh for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum UndoStage {
    /// Labels on Namespaces and Services that decide how Pods are meshed and where traffic
    /// goes: injection and `istio.io/rev` back, ambient enrollment and waypoint use off.
    MeshLabels,
    /// Pod-template labels that force injection: the rollout after them must see them.
    TemplateLabels,
    /// Rollout restarts: the new Pods are created under the labels restored above.
    Restarts,
    /// Objects created, deleted or edited by the step, which relied on those labels.
    Dependents,
}

impl Entry {
    /// The stage of the undo this entry belongs to.
    pub fn undo_stage(&self) -> UndoStage {
        match self {
            Entry::Label { .. } => UndoStage::MeshLabels,
            Entry::TemplateLabel { .. } => UndoStage::TemplateLabels,
            Entry::Restart { .. } => UndoStage::Restarts,
            Entry::Create { .. }
            | Entry::Delete { .. }
            | Entry::SailSpec { .. }
            | Entry::Gateways { .. } => UndoStage::Dependents,
        }
    }
}

/// The entries in the order undo carries them out: stage by stage, and within a stage the
/// reverse of the order the step made its changes.
pub fn undo_order(entries: &[Entry]) -> Vec<&Entry> {
    let mut out: Vec<&Entry> = entries.iter().rev().collect();
    // Stable: the reverse action order survives inside each stage.
    out.sort_by_key(|e| e.undo_stage());
    out
}

/// The snapshot entry of one action: what the object (`current`, `None` when absent) was
/// before the step. `manifest` is the generated object a create or apply writes. `None`
/// for actions that change nothing, or that delete an object already gone.
pub fn entry(a: &Action, current: Option<&Value>, manifest: Option<&Value>) -> Option<Entry> {
    let o = a.object.clone();
    let key = a.key.clone().unwrap_or_default();
    let at = |path: &str, key: &str| -> Option<String> {
        current?
            .pointer(path)?
            .get(key)?
            .as_str()
            .map(str::to_string)
    };
    Some(match a.op {
        Op::Verify | Op::Prepare => return None,
        Op::Patch => Entry::SailSpec {
            object: o,
            profile: current.and_then(|d| d.pointer("/spec/profile")).cloned(),
            values: current.and_then(|d| d.pointer("/spec/values")).cloned(),
        },
        Op::Create | Op::Apply => Entry::Create {
            api_version: manifest
                .and_then(|m| m.get("apiVersion"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            object: o,
            existed: current.is_some(),
        },
        Op::Label | Op::Unlabel => Entry::Label {
            previous: at("/metadata/labels", &key),
            object: o,
            key,
        },
        Op::UnlabelTemplate => Entry::TemplateLabel {
            previous: at("/spec/template/metadata/labels", &key),
            object: o,
            key,
        },
        Op::Restart => Entry::Restart {
            previous: at(
                "/spec/template/metadata/annotations",
                mn::ANNOTATION_RESTARTED_AT,
            ),
            object: o,
        },
        Op::Delete => Entry::Delete {
            object: o,
            manifest: strip_server_fields(current?.clone()),
        },
        Op::RemoveMeshGateway => Entry::Gateways {
            previous: current
                .and_then(|d| d.pointer("/spec/gateways"))
                .and_then(|g| serde_json::from_value(g.clone()).ok()),
            object: o,
        },
    })
}

/// Everything one step changes in one scope (a namespace, or the cluster).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// MeshMigration name.
    pub migration: String,
    /// Step.
    pub step: Step,
    /// Namespace the step ran for (`None`: cluster-scoped step 2).
    pub namespace: Option<String>,
    /// Prior state, in action order ([`undo_order`] says how undo runs them).
    pub entries: Vec<Entry>,
}

/// Name of the head ConfigMap of a snapshot; parts are `<name>-p1`, `<name>-p2`, ….
pub fn config_map_name(migration: &str, step: Step) -> String {
    dns_subdomain(&["meshmig", migration, &format!("step{step}")])
}

/// Name of part `i` (0 is the head).
pub fn part_name(head: &str, i: usize) -> String {
    if i == 0 {
        head.to_string()
    } else {
        format!("{head}-p{i}")
    }
}

/// Removes server-populated fields so an object can be recreated as it was.
pub fn strip_server_fields(mut v: Value) -> Value {
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "managedFields",
            "generation",
            "selfLink",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            meta.remove(k);
        }
    }
    if let Some(obj) = v.as_object_mut() {
        obj.remove("status");
    }
    v
}

/// Encodes a snapshot into ConfigMaps, head first. Parts must be written before the head:
/// the head's presence means the snapshot is complete.
pub fn encode(
    snapshot: &Snapshot,
    namespace: &str,
    owner: Option<OwnerReference>,
) -> Result<Vec<ConfigMap>, serde_json::Error> {
    let json = serde_json::to_vec(snapshot)?;
    let (key, payload, binary) = if json.len() > GZIP_ABOVE {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        // Writing to a Vec cannot fail; errors are mapped for completeness.
        enc.write_all(&json).map_err(serde_json::Error::io)?;
        (GZ_KEY, enc.finish().map_err(serde_json::Error::io)?, true)
    } else {
        (DATA_KEY, json, false)
    };
    let chunks: Vec<&[u8]> = if payload.is_empty() {
        vec![&payload[..]]
    } else {
        payload.chunks(PART_SIZE).collect()
    };
    let head = config_map_name(&snapshot.migration, snapshot.step);
    let count = chunks.len();
    let mut out = Vec::with_capacity(count);
    for (i, chunk) in chunks.into_iter().enumerate() {
        let mut labels = BTreeMap::new();
        labels.insert(mn::LABEL_MANAGED_BY.to_string(), mn::MANAGED_BY.to_string());
        labels.insert(mn::LABEL_MIGRATION.to_string(), snapshot.migration.clone());
        labels.insert(mn::LABEL_STEP.to_string(), snapshot.step.to_string());
        labels.insert(mn::LABEL_SNAPSHOT.to_string(), "true".to_string());
        let mut annotations = BTreeMap::new();
        if i == 0 {
            annotations.insert(
                meshmig_api::names::ANNOTATION_SNAPSHOT_PARTS.to_string(),
                count.to_string(),
            );
        }
        let mut cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(part_name(&head, i)),
                namespace: Some(namespace.to_string()),
                labels: Some(labels),
                annotations: (!annotations.is_empty()).then_some(annotations),
                owner_references: owner.clone().map(|o| vec![o]),
                ..Default::default()
            },
            ..Default::default()
        };
        if binary || count > 1 {
            let mut data = BTreeMap::new();
            data.insert(key.to_string(), ByteString(chunk.to_vec()));
            cm.binary_data = Some(data);
        } else {
            let mut data = BTreeMap::new();
            data.insert(key.to_string(), String::from_utf8_lossy(chunk).to_string());
            cm.data = Some(data);
        }
        out.push(cm);
    }
    Ok(out)
}

/// Why a snapshot cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// A part is missing.
    #[error("snapshot {0} is incomplete: part {1} of {2} is missing")]
    MissingPart(String, usize, usize),
    /// The content is corrupt.
    #[error("snapshot {0} is corrupt: {1}")]
    Corrupt(String, String),
}

/// Decodes a snapshot from its head and parts (`parts[i]` is part `i`).
pub fn decode(parts: &[Option<ConfigMap>]) -> Result<Snapshot, DecodeError> {
    let head = parts.first().and_then(Option::as_ref);
    let name = head
        .and_then(|h| h.metadata.name.clone())
        .unwrap_or_else(|| "<unknown>".into());
    let Some(head) = head else {
        return Err(DecodeError::MissingPart(name, 0, 1));
    };
    let count: usize = head
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(meshmig_api::names::ANNOTATION_SNAPSHOT_PARTS))
        .and_then(|c| c.parse().ok())
        .unwrap_or(1);
    let mut payload = Vec::new();
    let mut gz = false;
    for i in 0..count {
        let Some(cm) = parts.get(i).and_then(Option::as_ref) else {
            return Err(DecodeError::MissingPart(name, i, count));
        };
        if let Some(b) = cm
            .binary_data
            .as_ref()
            .and_then(|d| d.get(GZ_KEY).or_else(|| d.get(DATA_KEY)))
        {
            gz |= cm
                .binary_data
                .as_ref()
                .is_some_and(|d| d.contains_key(GZ_KEY));
            payload.extend_from_slice(&b.0);
        } else if let Some(s) = cm.data.as_ref().and_then(|d| d.get(DATA_KEY)) {
            payload.extend_from_slice(s.as_bytes());
        } else {
            return Err(DecodeError::Corrupt(
                name,
                format!("part {i} holds no snapshot data"),
            ));
        }
    }
    let json = if gz {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&payload[..])
            .read_to_end(&mut out)
            .map_err(|e| DecodeError::Corrupt(name.clone(), e.to_string()))?;
        out
    } else {
        payload
    };
    serde_json::from_slice(&json).map_err(|e| DecodeError::Corrupt(name, e.to_string()))
}

/// Number of parts recorded on a head ConfigMap.
pub fn parts_of(head: &ConfigMap) -> usize {
    head.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(meshmig_api::names::ANNOTATION_SNAPSHOT_PARTS))
        .and_then(|c| c.parse().ok())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(n: usize, payload: usize) -> Snapshot {
        Snapshot {
            migration: "bookinfo".into(),
            step: Step::WaypointActivation,
            namespace: Some("bookinfo".into()),
            entries: (0..n)
                .map(|i| Entry::Delete {
                    object: ObjectRef::new("VirtualService", Some("bookinfo"), &format!("vs-{i}")),
                    manifest: serde_json::json!({"spec": {"blob": "x".repeat(payload)}, "n": i}),
                })
                .collect(),
        }
    }

    fn roundtrip(s: &Snapshot) -> Vec<ConfigMap> {
        let cms = encode(s, "bookinfo", None).unwrap();
        let parts: Vec<Option<ConfigMap>> = cms.iter().cloned().map(Some).collect();
        assert_eq!(&decode(&parts).unwrap(), s);
        cms
    }

    #[test]
    fn small_snapshots_are_plain_json() {
        let cms = roundtrip(&snap(2, 10));
        assert_eq!(cms.len(), 1);
        assert!(cms[0].data.as_ref().unwrap().contains_key(DATA_KEY));
        assert_eq!(
            cms[0].metadata.name.as_deref(),
            Some("meshmig-bookinfo-step7")
        );
        let labels = cms[0].metadata.labels.as_ref().unwrap();
        assert_eq!(
            labels.get(mn::LABEL_SNAPSHOT).map(String::as_str),
            Some("true")
        );
    }

    #[test]
    fn large_snapshots_are_gzipped() {
        let cms = roundtrip(&snap(100, 5_000));
        assert_eq!(cms.len(), 1);
        assert!(cms[0].binary_data.as_ref().unwrap().contains_key(GZ_KEY));
    }

    #[test]
    fn huge_snapshots_are_split_and_a_missing_part_is_reported() {
        // Incompressible-ish payload: distinct numbers.
        let mut s = snap(0, 0);
        for i in 0..60_000u64 {
            s.entries.push(Entry::Restart {
                object: ObjectRef::new(
                    "Deployment",
                    Some("ns"),
                    &format!("d{}", i.wrapping_mul(2654435761)),
                ),
                previous: Some(format!("{:x}", i.wrapping_mul(0x9e3779b97f4a7c15))),
            });
        }
        let cms = roundtrip(&s);
        assert!(cms.len() > 1, "{} parts", cms.len());
        for cm in &cms {
            let size: usize = cm
                .binary_data
                .as_ref()
                .unwrap()
                .values()
                .map(|b| b.0.len())
                .sum();
            assert!(size <= PART_SIZE);
        }
        let mut parts: Vec<Option<ConfigMap>> = cms.into_iter().map(Some).collect();
        parts[1] = None;
        assert!(matches!(
            decode(&parts),
            Err(DecodeError::MissingPart(_, 1, _))
        ));
    }

    #[test]
    fn server_fields_are_stripped() {
        let v = strip_server_fields(serde_json::json!({
            "metadata": {"name": "a", "uid": "u", "resourceVersion": "1", "managedFields": [], "labels": {"x": "y"}},
            "spec": {"a": 1}, "status": {"b": 2}
        }));
        assert_eq!(
            v,
            serde_json::json!({"metadata": {"name": "a", "labels": {"x": "y"}}, "spec": {"a": 1}})
        );
    }

    /// The embedded bookinfo's plan, whose nine steps touch every kind of entry.
    fn bookinfo_plan() -> meshmig_planner::Plan {
        let mut inv = meshmig_planner::Inventory::default();
        for f in ["00-control-plane.yaml", "10-bookinfo.yaml", "20-istio.yaml"] {
            let path = format!("{}/../../examples/bookinfo/{f}", env!("CARGO_MANIFEST_DIR"));
            inv.load_str(&std::fs::read_to_string(path).unwrap(), f)
                .unwrap();
        }
        let spec: meshmig_api::MeshMigrationSpec =
            serde_json::from_value(serde_json::json!({"namespaces": ["bookinfo"]})).unwrap();
        meshmig_planner::plan(&inv, &spec, "bookinfo")
    }

    /// Every object present before the step, with the label or annotation it changes.
    fn entries_of(actions: &[Action]) -> Vec<Entry> {
        let prior = serde_json::json!({
            "metadata": {"labels": {"istio-injection": "enabled", "istio.io/rev": "default", "sidecar.istio.io/inject": "true"}},
            "spec": {"gateways": ["mesh"], "template": {"metadata": {"annotations": {mn::ANNOTATION_RESTARTED_AT: "before"}}}}
        });
        actions
            .iter()
            .filter_map(|a| entry(a, Some(&prior), None))
            .collect()
    }

    #[test]
    fn every_step_is_undone_labels_first_then_restarts_then_dependent_objects() {
        let plan = bookinfo_plan();
        let ns = plan.namespace("bookinfo").unwrap();
        let mut restarting_steps = Vec::new();
        for step in ns.steps.iter().filter(|s| s.number >= Step::ControlPlane) {
            let entries = entries_of(&step.actions);
            let order = undo_order(&entries);
            assert_eq!(order.len(), entries.len(), "step {}", step.number);
            let stages: Vec<UndoStage> = order.iter().map(|e| e.undo_stage()).collect();
            assert!(
                stages.windows(2).all(|w| w[0] <= w[1]),
                "step {}: undo stages out of order: {stages:?}",
                step.number
            );
            // Inside a stage, the changes are undone last-made first.
            for stage in [
                UndoStage::MeshLabels,
                UndoStage::TemplateLabels,
                UndoStage::Restarts,
                UndoStage::Dependents,
            ] {
                let made: Vec<&Entry> = entries
                    .iter()
                    .rev()
                    .filter(|e| e.undo_stage() == stage)
                    .collect();
                let undone: Vec<&Entry> = order
                    .iter()
                    .copied()
                    .filter(|e| e.undo_stage() == stage)
                    .collect();
                assert_eq!(undone, made, "step {} stage {stage:?}", step.number);
            }
            if entries.iter().any(|e| matches!(e, Entry::Restart { .. })) {
                restarting_steps.push(step.number);
            }
        }
        assert_eq!(
            restarting_steps,
            [Step::HboneSidecars, Step::SidecarRemoval],
            "bookinfo restarts in steps 3 and 9"
        );
    }

    #[test]
    fn undoing_sidecar_removal_brings_injection_back_before_any_pod_is_recreated() {
        let plan = bookinfo_plan();
        let ns = plan.namespace("bookinfo").unwrap();
        let step9 = ns
            .steps
            .iter()
            .find(|s| s.number == Step::SidecarRemoval)
            .unwrap();
        let entries = entries_of(&step9.actions);
        let order = undo_order(&entries);
        let first_restart = order
            .iter()
            .position(|e| matches!(e, Entry::Restart { .. }))
            .expect("step 9 restarts the workloads");
        let injection = order
            .iter()
            .position(|e| {
                matches!(e, Entry::Label { object, key, previous }
                    if object.kind == "Namespace" && key == "istio-injection" && previous.as_deref() == Some("enabled"))
            })
            .expect("step 9 removes the injection label");
        assert!(
            injection < first_restart,
            "the injection label must be back before the first restart: {order:#?}"
        );
        // The action order, reversed, would restart first: the bug this ordering fixes.
        let naive: Vec<&Entry> = entries.iter().rev().collect();
        let naive_restart = naive
            .iter()
            .position(|e| matches!(e, Entry::Restart { .. }))
            .unwrap();
        let naive_label = naive
            .iter()
            .position(|e| matches!(e, Entry::Label { .. }))
            .unwrap();
        assert!(naive_restart < naive_label, "{naive:#?}");
        // Selector originals deleted after the rollout come back after the restarts.
        let recreated = order
            .iter()
            .position(|e| matches!(e, Entry::Delete { .. }))
            .expect("step 9 deletes selector originals");
        assert!(recreated > first_restart);
    }
}
