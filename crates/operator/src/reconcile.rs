//! One reconcile: observe (stores → Inventory) → decide (pure) → act → write status.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use meshmig_api::names as mn;
use meshmig_api::{MeshMigration, MeshMigrationStatus, MigrationPhase, OnDelete, PlanRef, Step};
use meshmig_planner::{Inventory, Plan};
use tracing::{info, warn};

use crate::act::{Actor, owned_by, owner_ref};
use crate::conditions::{self, Desired};
use crate::decide::{self, Decision, Input};
use crate::error::Error;
use crate::frozen;
use crate::metrics::Metrics;
use crate::observe::Stores;
use crate::validate;

mod resolve;

/// Shared state of the controller.
pub struct Ctx {
    pub actor: Actor,
    pub stores: Stores,
    /// MeshMigrations (the controller's own store).
    pub migrations: Store<MeshMigration>,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Decoded frozen inventories, by MeshMigration uid.
    pub frozen: Mutex<HashMap<String, CachedFrozen>>,
    /// Consecutive errors per object, for backoff.
    pub errors: Mutex<HashMap<String, u32>>,
}

/// A decoded frozen inventory, valid while its head ConfigMap keeps this resourceVersion.
pub struct CachedFrozen {
    resource_version: String,
    inventory: Arc<Inventory>,
}

fn now() -> Timestamp {
    Timestamp::now()
}

impl Ctx {
    async fn write_status(
        &self,
        mm: &MeshMigration,
        status: &MeshMigrationStatus,
    ) -> Result<(), Error> {
        if mm.status.as_ref() == Some(status) {
            return Ok(());
        }
        let api: Api<MeshMigration> = Api::all(self.actor.client.clone());
        let patch = serde_json::json!({
            "apiVersion": MeshMigration::api_version(&()),
            "kind": MeshMigration::kind(&()),
            "status": status,
        });
        api.patch_status(
            &mm.name_any(),
            &PatchParams::apply(mn::FIELD_MANAGER),
            &Patch::Apply(&patch),
        )
        .await
        .map(|_| ())
        .map_err(|e| {
            Error::kube(
                format!("write status of MeshMigration {}", mm.name_any()),
                e,
            )
        })
    }

    async fn publish(&self, mm: &MeshMigration, events: &[decide::EventNote]) {
        let reference = mm.object_ref(&());
        for e in events {
            let ev = Event {
                type_: if e.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: e.reason.into(),
                note: Some(e.note.chars().take(1000).collect()),
                action: e.action(),
                secondary: None,
            };
            if let Err(err) = self.recorder.publish(&ev, &reference).await {
                warn!(error = %err, "could not publish event");
            }
        }
    }

    /// A status that reports a spec or environment problem without touching anything else.
    fn stalled(mm: &MeshMigration, reason: &'static str, message: String) -> MeshMigrationStatus {
        let old = mm.status.clone().unwrap_or_default();
        let mut s = old.clone();
        s.observed_generation = mm.metadata.generation;
        s.phase = Some(MigrationPhase::Stalled);
        let desired = [
            Desired::new(mn::CONDITION_READY, false, reason, message.clone()),
            Desired::new(
                mn::CONDITION_RECONCILING,
                false,
                reason,
                "waiting for a change to the spec or the cluster",
            ),
            Desired::new(mn::CONDITION_STALLED, true, reason, message),
            Desired::new(mn::CONDITION_PAUSED, false, "NotPaused", "not paused"),
            Desired::new(
                mn::CONDITION_ROLLED_BACK,
                false,
                "NotRolledBack",
                "no rollback",
            ),
        ];
        s.conditions = conditions::merge(
            &old.conditions,
            &desired,
            mm.metadata.generation,
            &Time(now()),
        );
        s
    }

    async fn load_frozen(
        &self,
        mm: &MeshMigration,
        plan_ref: &PlanRef,
    ) -> Result<Arc<Inventory>, Error> {
        let api: Api<ConfigMap> = Api::namespaced(self.actor.client.clone(), &plan_ref.namespace);
        // The frozen plan's ConfigMaps are written once and never changed, so the watched copy
        // of this run's head is exact; the API is asked only when the watch has not delivered
        // it yet. This keeps a reconcile free of API reads.
        let cached = |name: &str| {
            self.stores
                .config_maps
                .get(&ObjectRef::new(name).within(&plan_ref.namespace))
                .map(|cm| (*cm).clone())
        };
        // The head is known by its UID; a copy that is not this run's head (or a status
        // written before the UID was recorded) goes to the API.
        let cached_head = cached(&plan_ref.config_map).filter(|cm| {
            plan_ref.config_map_uid.is_some() && cm.metadata.uid == plan_ref.config_map_uid
        });
        let head = match cached_head {
            Some(cm) => Some(cm),
            None => api
                .get_opt(&plan_ref.config_map)
                .await
                .map_err(|e| Error::kube(format!("get {}", plan_ref.config_map), e))?,
        };
        let head = head.ok_or_else(|| {
                Error::Plan(format!(
                    "ConfigMap {}/{} holding the frozen plan is missing; roll back with {}: all, or delete and recreate the MeshMigration",
                    plan_ref.namespace, plan_ref.config_map, mn::ANNOTATION_ROLLBACK
                ))
            })?;
        let uid = mm.uid().unwrap_or_default();
        let rv = head.resource_version().unwrap_or_default();
        if let Ok(cache) = self.frozen.lock()
            && let Some(c) = cache.get(&uid)
            && c.resource_version == rv
        {
            return Ok(c.inventory.clone());
        }
        let parts = read_parts(&api, &plan_ref.config_map, head).await?;
        let inv = Arc::new(frozen::decode(&parts).map_err(Error::Plan)?);
        if let Ok(mut cache) = self.frozen.lock() {
            cache.insert(
                uid,
                CachedFrozen {
                    resource_version: rv,
                    inventory: inv.clone(),
                },
            );
        }
        Ok(inv)
    }

    /// A frozen plan of this MeshMigration object that status does not record (see
    /// [`frozen::adopt`]). Asked of the API, not the cache: a miss would re-plan from a
    /// cluster the lost reconcile may already have changed.
    async fn unrecorded_frozen(&self, mm: &MeshMigration) -> Result<Option<PlanRef>, Error> {
        let ns = &self.actor.operator_namespace;
        let name = frozen::config_map_name(&mm.name_any());
        let api: Api<ConfigMap> = Api::namespaced(self.actor.client.clone(), ns);
        let head = api
            .get_opt(&name)
            .await
            .map_err(|e| Error::kube(format!("get {ns}/{name}"), e))?;
        Ok(head.and_then(|h| frozen::adopt(&h, mm)))
    }

    /// The snapshots the checkpoint of a rollback compares with the cluster; a step that
    /// never took one (or whose snapshot was lost) is left out.
    async fn read_snapshots(
        &self,
        mm: &MeshMigration,
        wanted: &[(decide::Scope, meshmig_api::Step)],
    ) -> Result<Vec<crate::snapshot::Snapshot>, Error> {
        let mut out = Vec::new();
        for (scope, step) in wanted {
            match self.actor.read_snapshot(mm, scope, *step).await {
                Ok(Some(s)) => out.push(s),
                Ok(None) => {}
                // An unreadable snapshot was reported when its step was undone.
                Err(Error::Snapshot(m)) => {
                    warn!(migration = %mm.name_any(), step = step.number(), "{m}")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    async fn store_frozen(
        &self,
        mm: &MeshMigration,
        inv: &Inventory,
        hash: &str,
    ) -> Result<PlanRef, Error> {
        let ns = &self.actor.operator_namespace;
        let cms = frozen::encode(inv, &mm.name_any(), ns, hash, owner_ref(mm))
            .map_err(|e| Error::Plan(e.to_string()))?;
        let api: Api<ConfigMap> = Api::namespaced(self.actor.client.clone(), ns);
        let mut head_uid = None;
        for cm in cms.iter().skip(1).chain(cms.first()) {
            let name = cm.name_any();
            // A leftover from an earlier run of the same name is replaced.
            let _ = api.delete(&name, &Default::default()).await;
            let created = api
                .create(&PostParams::default(), cm)
                .await
                .map_err(|e| Error::kube(format!("store frozen plan {ns}/{name}"), e))?;
            head_uid = created.metadata.uid;
        }
        Ok(PlanRef {
            namespace: ns.clone(),
            config_map: frozen::config_map_name(&mm.name_any()),
            spec_hash: hash.to_string(),
            generation: mm.metadata.generation.unwrap_or(0),
            plan_hash: None,
            config_map_uid: head_uid,
        })
    }

    async fn ensure_finalizer(&self, mm: &MeshMigration) -> Result<(), Error> {
        if mm.finalizers().iter().any(|f| f == mn::FINALIZER) {
            return Ok(());
        }
        let mut finalizers = mm.finalizers().to_vec();
        finalizers.push(mn::FINALIZER.into());
        let api: Api<MeshMigration> = Api::all(self.actor.client.clone());
        let patch = serde_json::json!({"metadata": {"resourceVersion": mm.resource_version(), "finalizers": finalizers}});
        api.patch(
            &mm.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map(|_| ())
        .map_err(|e| Error::kube("add finalizer", e))
    }

    async fn remove_finalizer(&self, mm: &MeshMigration) -> Result<(), Error> {
        let api: Api<MeshMigration> = Api::all(self.actor.client.clone());
        // The cached object may be older than our own status write: read the latest and
        // retry on a conflict.
        for _ in 0..5 {
            let Some(latest) = api
                .get_opt(&mm.name_any())
                .await
                .map_err(|e| Error::kube("get MeshMigration", e))?
            else {
                return Ok(());
            };
            if !latest.finalizers().iter().any(|f| f == mn::FINALIZER) {
                return Ok(());
            }
            let finalizers: Vec<String> = latest
                .finalizers()
                .iter()
                .filter(|f| *f != mn::FINALIZER)
                .cloned()
                .collect();
            let patch = serde_json::json!({"metadata": {"resourceVersion": latest.resource_version(), "finalizers": finalizers}});
            match api
                .patch(
                    &mm.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(Error::kube("remove finalizer", e)),
            }
        }
        Err(Error::Invalid(
            "could not remove the finalizer after 5 conflicts".into(),
        ))
    }
}

/// The head and every part of a frozen plan. Parts are read once per head (the decoded plan
/// is cached by the head's resourceVersion), from the API: a watched part could be a leftover.
async fn read_parts(
    api: &Api<ConfigMap>,
    head_name: &str,
    head: ConfigMap,
) -> Result<Vec<ConfigMap>, Error> {
    let count = frozen::parts_of(&head);
    let mut parts = vec![head];
    for i in 1..count {
        let name = format!("{head_name}-p{i}");
        let part = api
            .get_opt(&name)
            .await
            .map_err(|e| Error::kube(format!("get {name}"), e))?
            .ok_or_else(|| Error::Plan(format!("part {name} of the frozen plan is missing")))?;
        parts.push(part);
    }
    Ok(parts)
}

/// Reconciles one MeshMigration.
pub async fn reconcile(mm: Arc<MeshMigration>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = reconcile_inner(&mm, &ctx).await;
    ctx.metrics.reconciled(&result, started.elapsed());
    let key = mm.uid().unwrap_or_default();
    match &result {
        Ok(_) => {
            if let Ok(mut e) = ctx.errors.lock() {
                e.remove(&key);
            }
        }
        Err(err) => {
            warn!(migration = %mm.name_any(), error = %err, "reconcile failed");
            // Make the failure visible in status, without changing progress.
            let old = mm.status.clone().unwrap_or_default();
            let mut s = old.clone();
            // The error is about the current spec: kstatus readers must not take it as stale.
            s.observed_generation = mm.metadata.generation;
            let message = format!("{err}");
            let stalled = !err.transient();
            let at = Time(now());
            conditions::set(
                &mut s.conditions,
                Desired::new(
                    mn::CONDITION_RECONCILING,
                    !stalled,
                    "Error",
                    message.clone(),
                ),
                mm.metadata.generation,
                &at,
            );
            conditions::set(
                &mut s.conditions,
                Desired::new(
                    mn::CONDITION_STALLED,
                    stalled,
                    if stalled { "Error" } else { "Retrying" },
                    message,
                ),
                mm.metadata.generation,
                &at,
            );
            let _ = ctx.write_status(&mm, &s).await;
        }
    }
    result
}

/// The frozen plan status records, or else one found in the cluster (see
/// [`Ctx::unrecorded_frozen`]).
struct PlanRefs {
    /// What the reconcile goes on with.
    current: Option<PlanRef>,
    /// Found in the cluster, not in status.
    adopted: Option<PlanRef>,
}

async fn reconcile_inner(mm: &MeshMigration, ctx: &Ctx) -> Result<Action, Error> {
    if !ctx.stores.ready() {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let refs = plan_refs(mm, ctx).await?;
    if let Some(done) = finalizer(mm, ctx, refs.current.as_ref()).await? {
        return Ok(done);
    }
    let op_ns = &ctx.actor.operator_namespace;
    let targets = ctx.stores.targets(&mm.spec, op_ns);
    if let Some(held) = validated(mm, ctx, &targets, refs.current.is_some()).await? {
        return Ok(held);
    }
    let live = ctx.stores.inventory(&mm.spec, &targets);
    let hash = frozen::spec_hash(&mm.spec);
    let (plan, frozen_inv) =
        match resolve_plan(mm, ctx, refs.current.as_ref(), &hash, &live).await? {
            resolve::Resolution::Planned { plan, frozen } => (*plan, frozen),
            resolve::Resolution::Stalled(stall) => {
                let status = Ctx::stalled(mm, stall.reason, stall.message);
                ctx.write_status(mm, &status).await?;
                return Ok(Action::await_change());
            }
        };
    let observed = Observed::read(mm, ctx).await?;
    let run_token = run_token(mm, &hash);
    let input = Input {
        mm,
        plan: &plan,
        live: &live,
        probe_pods: &observed.probe_pods,
        now: now(),
        run_token: &run_token,
        deleting_with_rollback: mm.meta().deletion_timestamp.is_some(),
        operator_namespace: op_ns,
        present_snapshots: Some(&observed.present),
        frozen: frozen_inv.as_deref(),
        rollback_snapshots: observed.rollback_snapshots.as_deref(),
    };
    let mut decision: Decision = decide::decide(&input);
    let status = &mut decision.status;
    match resolve::record(refs.current.as_ref(), refs.adopted.as_ref(), &plan, status) {
        resolve::Record::Keep => {}
        resolve::Record::Adopt(pr) => status.plan = Some(pr),
        resolve::Record::Freeze => status.plan = Some(freeze(mm, ctx, &live, &hash, &plan).await?),
    }
    carry_out(mm, ctx, &plan, &decision).await?;
    next(mm, ctx, &decision).await
}

/// The plan references of this MeshMigration. Work is carried out before the status write
/// that records it. When that write is lost right after the plan was frozen, the cluster may
/// already carry step 2: planning again from it would plan a different migration, so the
/// stored plan is taken up instead.
async fn plan_refs(mm: &MeshMigration, ctx: &Ctx) -> Result<PlanRefs, Error> {
    let recorded = mm.status.as_ref().and_then(|s| s.plan.clone());
    let adopted = match mm.status.as_ref() {
        Some(s) if s.plan.is_some() || s.rollback.is_some() => None,
        _ => ctx.unrecorded_frozen(mm).await?,
    };
    if let Some(pr) = &adopted {
        info!(migration = %mm.name_any(), config_map = %pr.config_map, "status does not record the frozen plan of this MeshMigration (a lost status write, or a cached copy older than it): resuming with the stored plan");
    }
    Ok(PlanRefs {
        current: recorded.or_else(|| adopted.clone()),
        adopted,
    })
}

/// Whether a MeshMigration being deleted can go at once: it keeps what it did, never
/// started, or has rolled back everything.
fn releasable(mm: &MeshMigration, plan_ref: Option<&PlanRef>) -> bool {
    let rolled_back = mm
        .status
        .as_ref()
        .and_then(|s| s.rollback.as_ref())
        .is_some_and(|r| r.completed && r.target <= Step::Prerequisites);
    mm.spec.on_delete.unwrap_or_default() == OnDelete::Retain || plan_ref.is_none() || rolled_back
}

/// Adds the finalizer, or removes it from a MeshMigration being deleted that can go (then
/// there is nothing more to do).
async fn finalizer(
    mm: &MeshMigration,
    ctx: &Ctx,
    plan_ref: Option<&PlanRef>,
) -> Result<Option<Action>, Error> {
    if mm.meta().deletion_timestamp.is_none() {
        ctx.ensure_finalizer(mm).await?;
        return Ok(None);
    }
    if releasable(mm, plan_ref) {
        ctx.remove_finalizer(mm).await?;
        return Ok(Some(Action::await_change()));
    }
    Ok(None)
}

/// Validates the spec (and, before the migration started, the cluster and the claims of
/// other migrations); a problem is reported as Stalled and holds the reconcile.
async fn validated(
    mm: &MeshMigration,
    ctx: &Ctx,
    targets: &[String],
    started: bool,
) -> Result<Option<Action>, Error> {
    let op_ns = &ctx.actor.operator_namespace;
    if let Some(p) = validate::validate(mm, targets, op_ns) {
        let status = Ctx::stalled(mm, p.reason, p.message);
        ctx.write_status(mm, &status).await?;
        return Ok(Some(Action::await_change()));
    }
    let deleting = mm.meta().deletion_timestamp.is_some();
    if !started
        && !deleting
        && let Some(p) = validate_cluster(mm, ctx).await?
    {
        let status = Ctx::stalled(mm, p.reason, p.message);
        ctx.write_status(mm, &status).await?;
        // Service accounts are not watched: look again in a while.
        return Ok(Some(Action::requeue(Duration::from_secs(30))));
    }
    let others: Vec<(MeshMigration, Vec<String>)> = ctx
        .migrations
        .state()
        .iter()
        .map(|o| ((**o).clone(), ctx.stores.targets(&o.spec, op_ns)))
        .collect();
    if !started && let Some(msg) = validate::claimed_by(mm, &others, targets) {
        let status = Ctx::stalled(mm, validate::CLAIMED_REASON, msg);
        ctx.write_status(mm, &status).await?;
        return Ok(Some(Action::requeue(Duration::from_secs(30))));
    }
    Ok(None)
}

/// What the cluster must offer before a migration starts.
async fn validate_cluster(
    mm: &MeshMigration,
    ctx: &Ctx,
) -> Result<Option<validate::SpecProblem>, Error> {
    let namespaces: std::collections::BTreeSet<String> = ctx
        .stores
        .namespaces
        .state()
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    let wanted = validate::probe_service_accounts(mm, &namespaces);
    let facts = validate::ClusterFacts {
        sail_istios: ctx.stores.istios.as_ref().map(|s| {
            s.state()
                .iter()
                .filter_map(|i| i.metadata.name.clone())
                .collect()
        }),
        missing_service_accounts: ctx.actor.missing_service_accounts(&wanted).await?,
        namespaces,
    };
    Ok(validate::validate_before_start(mm, &facts))
}

/// The plan to carry out: frozen once the migration left step 1, live before.
async fn resolve_plan(
    mm: &MeshMigration,
    ctx: &Ctx,
    plan_ref: Option<&PlanRef>,
    spec_hash: &str,
    live: &Inventory,
) -> Result<resolve::Resolution, Error> {
    let r = resolve::Resolve {
        mm,
        plan_ref,
        spec_hash,
        rollback_requested: mm.requested_rollback().is_some()
            || mm.meta().deletion_timestamp.is_some(),
    };
    match resolve::source(&r) {
        resolve::Source::Live => Ok(resolve::live_plan(mm, live)),
        resolve::Source::Stalled(stall) => Ok(resolve::Resolution::Stalled(stall)),
        resolve::Source::Frozen(pr) => {
            let loaded = ctx.load_frozen(mm, pr).await;
            resolve::plan(&r, pr, loaded, live)
        }
    }
}

/// What the decision reads besides the plan and the live inventory.
struct Observed {
    probe_pods: Vec<k8s_openapi::api::core::v1::Pod>,
    /// Snapshot ConfigMaps that exist, as `namespace/name`.
    present: std::collections::BTreeSet<String>,
    rollback_snapshots: Option<Vec<crate::snapshot::Snapshot>>,
}

impl Observed {
    async fn read(mm: &MeshMigration, ctx: &Ctx) -> Result<Self, Error> {
        let probe_pods = ctx.stores.probe_pods_of(&mm.name_any());
        let present = present_snapshots(mm, ctx).await?;
        let rollback_snapshots = match decide::rollback_snapshots_to_verify(mm) {
            Some(wanted) => Some(ctx.read_snapshots(mm, &wanted).await?),
            None => None,
        };
        Ok(Self {
            probe_pods,
            present,
            rollback_snapshots,
        })
    }
}

/// The snapshot ConfigMaps of this migration that exist. The cache may not have seen a
/// snapshot written a moment ago: absences are confirmed with the API before the migration
/// is held for them.
async fn present_snapshots(
    mm: &MeshMigration,
    ctx: &Ctx,
) -> Result<std::collections::BTreeSet<String>, Error> {
    let mut present = ctx.stores.snapshot_heads(mm);
    let refs: Vec<(String, String)> = mm
        .status
        .iter()
        .flat_map(|s| s.namespaces.iter())
        .flat_map(|n| n.snapshots.iter())
        .map(|r| (r.namespace.clone(), r.config_map.clone()))
        .filter(|(ns, cm)| !present.contains(&format!("{ns}/{cm}")))
        .collect();
    for (ns, cm) in refs {
        let api: Api<ConfigMap> = Api::namespaced(ctx.actor.client.clone(), &ns);
        if api
            .get_opt(&cm)
            .await
            .map_err(|e| Error::kube(format!("get {ns}/{cm}"), e))?
            .is_some_and(|c| owned_by(&c, mm))
        {
            present.insert(format!("{ns}/{cm}"));
        }
    }
    Ok(present)
}

/// Token of this migration run: restart annotation values derive from it.
fn run_token(mm: &MeshMigration, spec_hash: &str) -> String {
    let uid: String = mm.uid().unwrap_or_default().chars().take(8).collect();
    format!("{uid}-{spec_hash}")
}

/// Freezes the live inventory the plan was made from, before the first change.
async fn freeze(
    mm: &MeshMigration,
    ctx: &Ctx,
    live: &Inventory,
    spec_hash: &str,
    plan: &Plan,
) -> Result<PlanRef, Error> {
    let mut pr = ctx.store_frozen(mm, live, spec_hash).await?;
    pr.plan_hash = Some(frozen::plan_hash(plan));
    info!(migration = %mm.name_any(), config_map = %pr.config_map, "plan frozen");
    Ok(pr)
}

/// Carries out the decided work, then writes the status, publishes the events and records
/// the metrics.
async fn carry_out(
    mm: &MeshMigration,
    ctx: &Ctx,
    plan: &Plan,
    decision: &Decision,
) -> Result<(), Error> {
    for w in &decision.work {
        ctx.actor.run(mm, plan, w).await?;
    }
    ctx.write_status(mm, &decision.status).await?;
    ctx.publish(mm, &decision.events).await;
    ctx.metrics.observe_status(&mm.name_any(), &decision.status);
    for (_, outcomes) in &decision.evaluated {
        ctx.metrics.checks_evaluated(outcomes);
    }
    record_step_durations(mm, ctx, &decision.status);
    Ok(())
}

/// Steps this decision completed, with how long they took.
fn record_step_durations(mm: &MeshMigration, ctx: &Ctx, status: &MeshMigrationStatus) {
    let old_status = mm.status.clone().unwrap_or_default();
    for ns in &status.namespaces {
        for h in &ns.history {
            let was_done = old_status
                .namespaces
                .iter()
                .find(|o| o.name == ns.name)
                .and_then(|o| o.history.iter().find(|x| x.step == h.step))
                .is_some_and(|x| x.completed_at.is_some());
            if let (Some(done), false) = (&h.completed_at, was_done) {
                let secs = done.0.duration_since(h.started_at.0).as_secs_f64();
                ctx.metrics.step_completed(h.step, secs.max(0.0));
            }
        }
    }
}

/// When to reconcile again (a deleted MeshMigration whose rollback completed is let go).
async fn next(mm: &MeshMigration, ctx: &Ctx, decision: &Decision) -> Result<Action, Error> {
    if mm.meta().deletion_timestamp.is_some() {
        if decision
            .status
            .rollback
            .as_ref()
            .is_some_and(|r| r.completed)
        {
            ctx.remove_finalizer(mm).await?;
            return Ok(Action::await_change());
        }
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    Ok(if decision.more {
        Action::requeue(Duration::from_millis(100))
    } else if decision.waiting_on_time {
        Action::requeue(Duration::from_secs(5))
    } else {
        // Safety net only: every step waits on watched objects.
        Action::requeue(Duration::from_secs(300))
    })
}

/// Backoff on errors: 1s, 2s, 4s … capped at 2 minutes.
pub fn error_policy(mm: Arc<MeshMigration>, _err: &Error, ctx: Arc<Ctx>) -> Action {
    let key = mm.uid().unwrap_or_default();
    let attempts = ctx
        .errors
        .lock()
        .map(|mut e| {
            let n = e.entry(key).or_insert(0);
            *n += 1;
            *n
        })
        .unwrap_or(1);
    let secs = 1u64 << attempts.min(7);
    Action::requeue(Duration::from_secs(secs.min(120)))
}
