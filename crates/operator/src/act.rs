//! The only module that changes the cluster. Every operation is idempotent: re-running any
//! of them after a crash converges to the same state.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use meshmig_api::kinds::Kind;
use meshmig_api::names as mn;
use meshmig_api::{MeshMigration, Step};
use meshmig_planner::ObjectRef;
use meshmig_planner::plan::{Action, Op, Plan};
use serde_json::{Value, json};
use tracing::{debug, info};

use crate::decide::{Scope, Work};
use crate::error::Error;
use crate::snapshot::{self, Entry, Snapshot};

/// What the act layer needs.
#[derive(Clone)]
pub struct Actor {
    /// API client.
    pub client: Client,
    /// The operator's namespace.
    pub operator_namespace: String,
}

/// The kind named `kind` when meshmig may write it.
pub fn resource_of(kind: &str) -> Option<Kind> {
    Kind::writable(kind)
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// The object a create names is there already. Only reason `AlreadyExists` means that: a 409
/// `Conflict` answer to a create means the API server did not carry it out, so taking it for
/// "already there" would let a step run without its snapshot or a rollback lose an object.
fn is_already_exists(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists")
}

impl Actor {
    fn api(&self, o: &ObjectRef) -> Result<Api<DynamicObject>, Error> {
        let kind = resource_of(&o.kind).ok_or_else(|| Error::Unsupported(o.to_string()))?;
        let ar = kind.api_resource();
        Ok(if kind.namespaced() {
            Api::namespaced_with(self.client.clone(), o.ns(), &ar)
        } else {
            Api::all_with(self.client.clone(), &ar)
        })
    }

    async fn get(&self, o: &ObjectRef) -> Result<Option<DynamicObject>, Error> {
        match self.api(o)?.get(&o.name).await {
            Ok(obj) => Ok(Some(obj)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(Error::kube(format!("get {o}"), e)),
        }
    }

    async fn merge_patch(&self, o: &ObjectRef, patch: Value) -> Result<(), Error> {
        let pp = PatchParams {
            field_manager: Some(mn::FIELD_MANAGER.into()),
            ..Default::default()
        };
        self.api(o)?
            .patch(&o.name, &pp, &Patch::Merge(patch))
            .await
            .map(|_| ())
            .map_err(|e| Error::kube(format!("patch {o}"), e))
    }

    /// Server-side apply of a generated object with our field manager, never forced: a field
    /// owned by someone else surfaces as a conflict.
    async fn apply(&self, manifest: &Value) -> Result<(), Error> {
        let o = object_ref(manifest);
        let pp = PatchParams::apply(mn::FIELD_MANAGER);
        self.api(&o)?
            .patch(&o.name, &pp, &Patch::Apply(manifest))
            .await
            .map(|_| ())
            .map_err(|e| Error::kube(format!("apply {o}"), e))
    }

    async fn delete(&self, o: &ObjectRef) -> Result<(), Error> {
        match self.api(o)?.delete(&o.name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(Error::kube(format!("delete {o}"), e)),
        }
    }

    async fn create(&self, manifest: &Value) -> Result<(), Error> {
        let o = object_ref(manifest);
        let obj: DynamicObject = serde_json::from_value(manifest.clone())
            .map_err(|e| Error::Invalid(format!("{o}: {e}")))?;
        match self.api(&o)?.create(&PostParams::default(), &obj).await {
            Ok(_) => Ok(()),
            Err(e) if is_already_exists(&e) => Ok(()),
            Err(e) => Err(Error::kube(format!("create {o}"), e)),
        }
    }

    /// Which of the given (`namespace`, `name`) service accounts do not exist.
    pub async fn missing_service_accounts(
        &self,
        wanted: &[(String, String)],
    ) -> Result<std::collections::BTreeSet<(String, String)>, Error> {
        let mut missing = std::collections::BTreeSet::new();
        for (ns, name) in wanted {
            let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), ns);
            match api.get_metadata_opt(name).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    missing.insert((ns.clone(), name.clone()));
                }
                Err(e) => return Err(Error::kube(format!("get ServiceAccount {ns}/{name}"), e)),
            }
        }
        Ok(missing)
    }

    /// Carries out one work item.
    pub async fn run(&self, mm: &MeshMigration, plan: &Plan, w: &Work) -> Result<(), Error> {
        match w {
            Work::Snapshot {
                scope,
                step,
                actions,
            } => self.snapshot(mm, plan, scope, *step, actions).await,
            Work::Execute { actions, .. } => {
                for a in actions {
                    self.execute(plan, a).await?;
                }
                Ok(())
            }
            Work::StartProbe(pod) => self.start_probe(pod).await,
            Work::CleanupProbes { namespace, step } => {
                self.cleanup_probes(mm, namespace, *step).await
            }
            Work::Undo { scope, step } => self.undo(mm, scope, *step).await,
            Work::DeleteSnapshots { scope, step } => self.delete_snapshots(mm, scope, *step).await,
            Work::DeletePlan => self.delete_plan(mm).await,
        }
    }

    async fn start_probe(&self, pod: &Pod) -> Result<(), Error> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        match api.create(&PostParams::default(), pod).await {
            Ok(_) => Ok(()),
            Err(e) if is_already_exists(&e) => Ok(()),
            Err(e) => Err(Error::kube(
                format!("create probe Pod {ns}/{}", pod.name_any()),
                e,
            )),
        }
    }

    async fn delete_snapshots(
        &self,
        mm: &MeshMigration,
        scope: &Scope,
        step: Step,
    ) -> Result<(), Error> {
        let ns = scope
            .namespace()
            .unwrap_or(&self.operator_namespace)
            .to_string();
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &ns);
        let selector = format!(
            "{}={},{}={step},{}=true",
            mn::LABEL_MIGRATION,
            mm.name_any(),
            mn::LABEL_STEP,
            mn::LABEL_SNAPSHOT
        );
        match api.list(&ListParams::default().labels(&selector)).await {
            Ok(list) => {
                // A MeshMigration re-created under the same name carries the same
                // labels: only this object's ConfigMaps are its to delete.
                for cm in list.into_iter().filter(|c| owned_by(c, mm)) {
                    let o = ObjectRef::new(Kind::ConfigMap.name(), Some(&ns), &cm.name_any());
                    self.delete(&o).await?;
                }
                Ok(())
            }
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(Error::kube(format!("list snapshots in {ns}"), e)),
        }
    }

    async fn delete_plan(&self, mm: &MeshMigration) -> Result<(), Error> {
        let name = crate::frozen::config_map_name(&mm.name_any());
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.operator_namespace);
        let heads = api
            .list(&ListParams::default().labels(&format!(
                "{}={}",
                mn::LABEL_MIGRATION,
                mm.name_any()
            )))
            .await
            .map_err(|e| Error::kube("list plan ConfigMaps", e))?;
        for cm in heads
            .into_iter()
            .filter(|c| c.name_any().starts_with(&name) && owned_by(c, mm))
        {
            self.delete(&ObjectRef::new(
                Kind::ConfigMap.name(),
                Some(&self.operator_namespace),
                &cm.name_any(),
            ))
            .await?;
        }
        Ok(())
    }

    async fn cleanup_probes(
        &self,
        mm: &MeshMigration,
        validated: &str,
        step: Step,
    ) -> Result<(), Error> {
        let mut namespaces: Vec<&str> = mm
            .spec
            .checkpoints
            .probes
            .iter()
            .map(|p| p.from_namespace.as_str())
            .collect();
        namespaces.sort_unstable();
        namespaces.dedup();
        let selector = format!(
            "{}={},{}={step}",
            mn::LABEL_MIGRATION,
            mm.name_any(),
            mn::LABEL_STEP
        );
        for ns in namespaces {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
            let pods = match api.list(&ListParams::default().labels(&selector)).await {
                Ok(p) => p,
                Err(e) if is_not_found(&e) => continue,
                Err(e) => return Err(Error::kube(format!("list probe Pods in {ns}"), e)),
            };
            let marker = mn::validates(validated, step);
            for p in pods
                .into_iter()
                .filter(|p| p.annotations().get(mn::ANNOTATION_VALIDATES) == Some(&marker))
            {
                self.delete(&ObjectRef::new(Kind::Pod.name(), Some(ns), &p.name_any()))
                    .await?;
            }
        }
        Ok(())
    }

    async fn execute(&self, plan: &Plan, a: &Action) -> Result<(), Error> {
        let o = &a.object;
        debug!(op = ?a.op, object = %o, "execute");
        match a.op {
            Op::Verify | Op::Prepare => Ok(()),
            Op::Patch => {
                self.merge_patch(o, a.patch.clone().unwrap_or(Value::Null))
                    .await
            }
            Op::Create | Op::Apply => self.apply_planned(plan, a).await,
            Op::Label => {
                let key = a.key.clone().unwrap_or_default();
                self.merge_patch(o, json!({"metadata": {"labels": {key: a.value}}}))
                    .await
            }
            Op::Unlabel => {
                let key = a.key.clone().unwrap_or_default();
                match self
                    .merge_patch(o, json!({"metadata": {"labels": {key: null}}}))
                    .await
                {
                    Err(Error::Kube { source, .. }) if is_not_found(source.as_ref()) => Ok(()),
                    r => r,
                }
            }
            Op::UnlabelTemplate => {
                let key = a.key.clone().unwrap_or_default();
                self.merge_patch(
                    o,
                    json!({"spec": {"template": {"metadata": {"labels": {key: null}}}}}),
                )
                .await
            }
            Op::Restart => {
                // The token is derived from the plan and step, so re-running is a no-op.
                let token = a.value.clone().unwrap_or_default();
                self.merge_patch(o, json!({"spec": {"template": {"metadata": {"annotations": {mn::ANNOTATION_RESTARTED_AT: token}}}}}))
                    .await
            }
            Op::Delete => self.delete(o).await,
            Op::RemoveMeshGateway => self.remove_mesh_gateway(o).await,
        }
    }

    /// Applies the manifest a create or apply action names (or carries).
    async fn apply_planned(&self, plan: &Plan, a: &Action) -> Result<(), Error> {
        let o = &a.object;
        let manifest = match (a.manifest, &a.patch) {
            (Some(i), _) => plan.manifests.get(i).cloned(),
            (None, Some(p)) => Some(p.clone()),
            _ => None,
        };
        let mut manifest =
            manifest.ok_or_else(|| Error::Invalid(format!("no manifest for {o}")))?;
        if o.kind == Kind::ZTunnel.name() {
            add_labels(&mut manifest, &plan.migration);
        }
        self.apply(&manifest).await
    }

    /// Removes `mesh` from a VirtualService's gateways, if there.
    async fn remove_mesh_gateway(&self, o: &ObjectRef) -> Result<(), Error> {
        let Some(vs) = self.get(o).await? else {
            return Ok(());
        };
        let gateways: Vec<Value> = vs
            .data
            .pointer("/spec/gateways")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if !gateways.iter().any(|g| g == "mesh") {
            return Ok(());
        }
        let kept: Vec<Value> = gateways.into_iter().filter(|g| g != "mesh").collect();
        self.merge_patch(o, json!({"spec": {"gateways": kept}}))
            .await
    }

    async fn snapshot(
        &self,
        mm: &MeshMigration,
        plan: &Plan,
        scope: &Scope,
        step: Step,
        actions: &[Action],
    ) -> Result<(), Error> {
        let ns = scope
            .namespace()
            .unwrap_or(&self.operator_namespace)
            .to_string();
        let head = snapshot::config_map_name(&mm.name_any(), step);
        let cms: Api<ConfigMap> = Api::namespaced(self.client.clone(), &ns);
        if self.has_snapshot(&cms, mm, &ns, &head).await? {
            // Taken before this step changed anything; never overwritten.
            return Ok(());
        }
        let snap = Snapshot {
            migration: mm.name_any(),
            step,
            namespace: scope.namespace().map(str::to_string),
            entries: self.entries_before(plan, actions).await?,
        };
        let owner = owner_ref(mm);
        let parts =
            snapshot::encode(&snap, &ns, owner).map_err(|e| Error::Invalid(e.to_string()))?;
        // Parts first, head last: the head's existence marks a complete snapshot.
        for cm in parts.iter().skip(1).chain(parts.first()) {
            match cms.create(&PostParams::default(), cm).await {
                Ok(_) => {}
                Err(e) if is_already_exists(&e) => {}
                Err(e) => {
                    return Err(Error::kube(
                        format!("create snapshot {ns}/{}", cm.name_any()),
                        e,
                    ));
                }
            }
        }
        info!(migration = %mm.name_any(), step = step.number(), namespace = %ns, entries = snap.entries.len(), "snapshot taken");
        Ok(())
    }

    /// Whether this MeshMigration's snapshot `head` exists. One left by an earlier
    /// MeshMigration of the same name that the garbage collector has not removed yet
    /// describes another run, so it is deleted.
    async fn has_snapshot(
        &self,
        cms: &Api<ConfigMap>,
        mm: &MeshMigration,
        ns: &str,
        head: &str,
    ) -> Result<bool, Error> {
        let existing = match cms.get_opt(head).await {
            Ok(Some(existing)) => existing,
            Ok(None) => return Ok(false),
            Err(e) => return Err(Error::kube(format!("get snapshot {ns}/{head}"), e)),
        };
        if owned_by(&existing, mm) {
            return Ok(true);
        }
        for i in 0..snapshot::parts_of(&existing) {
            let name = snapshot::part_name(head, i);
            self.delete(&ObjectRef::new(Kind::ConfigMap.name(), Some(ns), &name))
                .await?;
        }
        Ok(false)
    }

    /// The snapshot entries of the objects `actions` change, as they are now.
    async fn entries_before(&self, plan: &Plan, actions: &[Action]) -> Result<Vec<Entry>, Error> {
        let mut entries = Vec::new();
        for a in actions {
            if matches!(a.op, Op::Verify | Op::Prepare) {
                continue;
            }
            let current = self
                .get(&a.object)
                .await?
                .map(|c| serde_json::to_value(c).unwrap_or(Value::Null));
            let manifest = a
                .manifest
                .and_then(|i| plan.manifests.get(i))
                .or(a.patch.as_ref());
            entries.extend(snapshot::entry(a, current.as_ref(), manifest));
        }
        Ok(entries)
    }

    /// Reads a snapshot; `None` when its head does not exist.
    pub async fn read_snapshot(
        &self,
        mm: &MeshMigration,
        scope: &Scope,
        step: Step,
    ) -> Result<Option<Snapshot>, Error> {
        let ns = scope
            .namespace()
            .unwrap_or(&self.operator_namespace)
            .to_string();
        let head_name = snapshot::config_map_name(&mm.name_any(), step);
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &ns);
        let Some(head) = api
            .get_opt(&head_name)
            .await
            .map_err(|e| Error::kube(format!("get snapshot {ns}/{head_name}"), e))?
        else {
            return Ok(None);
        };
        if !owned_by(&head, mm) {
            // Another run's snapshot (same name, earlier MeshMigration): not ours to undo.
            return Ok(None);
        }
        let count = snapshot::parts_of(&head);
        let mut parts = vec![Some(head)];
        for i in 1..count {
            let name = snapshot::part_name(&head_name, i);
            parts.push(
                api.get_opt(&name)
                    .await
                    .map_err(|e| Error::kube(format!("get snapshot {ns}/{name}"), e))?,
            );
        }
        snapshot::decode(&parts)
            .map(Some)
            .map_err(|e| Error::Snapshot(e.to_string()))
    }

    async fn undo(&self, mm: &MeshMigration, scope: &Scope, step: Step) -> Result<(), Error> {
        let Some(snap) = self.read_snapshot(mm, scope, step).await? else {
            // No snapshot: the step never started changing anything.
            debug!(step = step.number(), ?scope, "nothing to undo");
            return Ok(());
        };
        info!(migration = %mm.name_any(), step = step.number(), ?scope, entries = snap.entries.len(), "undoing step");
        for e in snapshot::undo_order(&snap.entries) {
            self.undo_entry(mm, e).await?;
        }
        Ok(())
    }

    async fn undo_entry(&self, mm: &MeshMigration, e: &Entry) -> Result<(), Error> {
        match e {
            Entry::Create {
                object, existed, ..
            } => {
                if *existed {
                    return Ok(());
                }
                self.delete_if_ours(mm, object).await
            }
            Entry::Label {
                object,
                key,
                previous,
            } => {
                self.patch_if_present(object, json!({"metadata": {"labels": {key: previous}}}))
                    .await
            }
            Entry::TemplateLabel {
                object,
                key,
                previous,
            } => {
                self.patch_if_present(
                    object,
                    json!({"spec": {"template": {"metadata": {"labels": {key: previous}}}}}),
                )
                .await
            }
            Entry::Restart { object, previous } => {
                self.patch_if_present(object, json!({"spec": {"template": {"metadata": {"annotations": {mn::ANNOTATION_RESTARTED_AT: previous}}}}}))
                    .await
            }
            Entry::Delete { object, manifest } => {
                if self.get(object).await?.is_some() {
                    return Ok(());
                }
                self.create(manifest).await
            }
            Entry::SailSpec {
                object,
                profile,
                values,
            } => {
                self.restore_sail_spec(object, profile.as_ref(), values.as_ref())
                    .await
            }
            Entry::Gateways { object, previous } => {
                self.patch_if_present(object, json!({"spec": {"gateways": previous}}))
                    .await
            }
        }
    }

    /// Deletes an object meshmig created for this migration; leaves anything else.
    async fn delete_if_ours(&self, mm: &MeshMigration, object: &ObjectRef) -> Result<(), Error> {
        if let Some(obj) = self.get(object).await? {
            let labels = obj.labels();
            if labels.get(mn::LABEL_MANAGED_BY).map(String::as_str) == Some(mn::MANAGED_BY)
                && labels.get(mn::LABEL_MIGRATION) == Some(&mm.name_any())
            {
                self.delete(object).await?;
            }
        }
        Ok(())
    }

    /// A merge patch of an object that still exists (a deleted one has nothing to restore).
    async fn patch_if_present(&self, object: &ObjectRef, patch: Value) -> Result<(), Error> {
        if self.get(object).await?.is_none() {
            return Ok(());
        }
        self.merge_patch(object, patch).await
    }

    /// Puts a Sail resource's `spec.profile` and `spec.values` back as they were (absent ones
    /// removed).
    async fn restore_sail_spec(
        &self,
        object: &ObjectRef,
        profile: Option<&Value>,
        values: Option<&Value>,
    ) -> Result<(), Error> {
        let Some(current) = self.get(object).await? else {
            return Ok(());
        };
        let mut ops = Vec::new();
        for (path, prev) in [("/spec/profile", profile), ("/spec/values", values)] {
            let exists = current.data.pointer(path).is_some();
            match prev {
                Some(v) => ops.push(json!({"op": "add", "path": path, "value": v})),
                None if exists => ops.push(json!({"op": "remove", "path": path})),
                None => {}
            }
        }
        if ops.is_empty() {
            return Ok(());
        }
        let patch: json_patch::Patch =
            serde_json::from_value(Value::Array(ops)).map_err(|e| Error::Invalid(e.to_string()))?;
        let pp = PatchParams {
            field_manager: Some(mn::FIELD_MANAGER.into()),
            ..Default::default()
        };
        self.api(object)?
            .patch(&object.name, &pp, &Patch::<()>::Json(patch))
            .await
            .map(|_| ())
            .map_err(|e| Error::kube(format!("restore {object}"), e))
    }
}

fn add_labels(manifest: &mut Value, migration: &str) {
    if let Some(meta) = manifest.get_mut("metadata").and_then(Value::as_object_mut) {
        let labels = meta.entry("labels").or_insert_with(|| json!({}));
        if let Some(l) = labels.as_object_mut() {
            l.insert(mn::LABEL_MANAGED_BY.into(), mn::MANAGED_BY.into());
            l.insert(mn::LABEL_MIGRATION.into(), migration.into());
        }
    }
}

/// Reference of a manifest.
pub fn object_ref(v: &Value) -> ObjectRef {
    let get = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
    ObjectRef {
        kind: get("/kind").unwrap_or_default(),
        namespace: get("/metadata/namespace"),
        name: get("/metadata/name").unwrap_or_default(),
    }
}

/// Owner reference to the MeshMigration, so its snapshots go when it goes.
pub fn owner_ref(mm: &MeshMigration) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: MeshMigration::api_version(&()).to_string(),
        kind: MeshMigration::kind(&()).to_string(),
        name: mm.metadata.name.clone()?,
        uid: mm.metadata.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: None,
    })
}

/// Whether `obj` belongs to this MeshMigration object, not to an earlier one of the same
/// name: names and labels repeat when a MeshMigration is deleted and created again, uids
/// do not.
pub fn owned_by(obj: &impl Resource, mm: &MeshMigration) -> bool {
    mm.meta().uid.as_ref().is_some_and(|uid| {
        obj.meta()
            .owner_references
            .iter()
            .flatten()
            .any(|o| &o.uid == uid)
    })
}

/// Labels every object meshmig creates carries (for code outside the planner).
pub fn managed_labels(migration: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (mn::LABEL_MANAGED_BY.to_string(), mn::MANAGED_BY.to_string()),
        (mn::LABEL_MIGRATION.to_string(), migration.to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_the_planner_acts_on_is_known() {
        for k in [
            "Namespace",
            "Service",
            "Deployment",
            "StatefulSet",
            "DaemonSet",
            "AuthorizationPolicy",
            "RequestAuthentication",
            "Telemetry",
            "WasmPlugin",
            "VirtualService",
            "DestinationRule",
            "Gateway",
            "HTTPRoute",
            "ReferenceGrant",
            "Istio",
            "IstioCNI",
            "ZTunnel",
        ] {
            assert!(resource_of(k).is_some(), "{k}");
        }
        assert!(
            resource_of("Secret").is_none(),
            "meshmig never touches Secrets"
        );
    }

    fn api_error(code: u16, reason: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("injected", reason)
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn only_the_same_migration_object_owns_its_config_maps() {
        let mm = |uid: Option<&str>| {
            let mut m = MeshMigration::new("crash", Default::default());
            m.metadata.uid = uid.map(str::to_string);
            m
        };
        let earlier = mm(Some("uid-earlier"));
        let now = mm(Some("uid-now"));
        let mut cm = ConfigMap::default();
        cm.metadata.owner_references = owner_ref(&earlier).map(|o| vec![o]);
        assert!(owned_by(&cm, &earlier));
        assert!(
            !owned_by(&cm, &now),
            "same name, re-created: not the new object's"
        );
        assert!(!owned_by(&ConfigMap::default(), &now), "no owner");
        assert!(
            !owned_by(&cm, &mm(None)),
            "an object without uid owns nothing"
        );
    }

    #[test]
    fn only_already_exists_counts_as_created() {
        assert!(is_already_exists(&api_error(409, "AlreadyExists")));
        // A 409 Conflict on a create was not carried out.
        assert!(!is_already_exists(&api_error(409, "Conflict")));
        assert!(!is_already_exists(&api_error(500, "InternalError")));
    }
}
