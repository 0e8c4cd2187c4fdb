//! The `MeshMigration` custom resource (`meshmig.io/v1alpha1`).
//!
//! Everything the API server can check is expressed in the schema (types, ranges, patterns,
//! list semantics) or as CEL rules, so a bad spec is refused at admission with a message that
//! names the field instead of surfacing later as a `Stalled` condition.

// The derive's repeated `printcolumn(type_ = …)` keys look like duplicated attributes to clippy.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::enforcement::RequestedBy;
use crate::step::Step;

/// Migrates the workloads of the selected namespaces from Istio sidecar mode to ambient mode
/// (ztunnel for L4, waypoint proxies for L7) in nine checkpointed steps, with rollback.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "meshmig.io",
    version = "v1alpha1",
    kind = "MeshMigration",
    plural = "meshmigrations",
    shortname = "mm",
    category = "meshmig",
    status = "MeshMigrationStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "MeshMigration moves the workloads of the selected namespaces from Istio sidecar mode to ambient mode in nine checkpointed, reversible steps.",
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Overall phase of the migration"
    ),
    printcolumn(
        name = "Step",
        type_ = "integer",
        json_path = ".status.currentStep",
        description = "Lowest step any namespace is working on (1..9)"
    ),
    printcolumn(
        name = "Namespaces",
        type_ = "string",
        json_path = ".status.progress",
        description = "Namespaces completed / total"
    ),
    validation = Rule::new("self.metadata.name.size() <= 63").message("metadata.name must be at most 63 characters: meshmig uses it as a label value").reason(Reason::FieldValueInvalid),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    cel,
    validation = Rule::new("has(self.namespaces) != has(self.namespaceSelector)").message("set exactly one of spec.namespaces or spec.namespaceSelector").reason(Reason::FieldValueInvalid),
    validation = Rule::new("!has(self.namespaces) || self.namespaces.size() > 0").message("spec.namespaces must name at least one namespace").reason(Reason::FieldValueInvalid)
)]
#[serde(rename_all = "camelCase")]
pub struct MeshMigrationSpec {
    /// Namespaces to migrate, by name. Mutually exclusive with namespaceSelector. With
    /// `ordering: Listed` the order is the order in which rollouts happen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 500),
        inner(
            length(min = 1, max = 63),
            regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
        )
    )]
    #[x_kube(
        merge_strategy = ListMerge::Set,
        validation = Rule::new("!self.exists(n, n in ['kube-system', 'kube-public', 'kube-node-lease', 'istio-system'])").message("spec.namespaces must not contain system namespaces (kube-system, kube-public, kube-node-lease, istio-system)").reason(Reason::FieldValueForbidden)
    )]
    pub namespaces: Option<Vec<String>>,

    /// Selects the namespaces to migrate by label. Mutually exclusive with namespaces. System
    /// namespaces and the operator's own namespace are never selected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,

    /// How namespaces are sequenced for the steps that restart workloads (3 and 9).
    /// `Listed` (default): one namespace at a time, in list order (selector: by name).
    /// `Auto`: callers before the services they call, as derived from policies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering: Option<Ordering>,

    /// The Istio control plane to switch to ambient.
    #[serde(default)]
    pub control_plane: ControlPlaneSpec,

    /// Waypoint (L7 proxy) creation policy.
    #[serde(default)]
    pub waypoint: WaypointSpec,

    /// When bypass protection (a selector policy that only admits the waypoint and known
    /// transitional callers) is put in place. `Immediate` (default) installs it in step 5:
    /// unknown sidecar callers are denied (fail-closed). `Deferred` installs it after sidecar
    /// removal: callers that skip the waypoint are not checked against waypoint policies
    /// until then (fail-open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bypass_protection: Option<BypassProtection>,

    /// Steps (1..9) that wait for the annotation `meshmig.io/approve: "<step>"` before they
    /// start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 9), inner(range(min = 1, max = 9)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub pause_before: Vec<Step>,

    /// Checkpoint settings: how long a check may stay Pending, and traffic probes.
    #[serde(default)]
    pub checkpoints: CheckpointSpec,

    /// What to do when a checkpoint fails: `Pause` (default) keeps the namespace where it is
    /// and reports; `Rollback` undoes the migration of that namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<OnFailure>,

    /// What to do when the MeshMigration is deleted: `Retain` (default) leaves the cluster as
    /// it is; `Rollback` undoes every completed step first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_delete: Option<OnDelete>,

    /// Findings the user explicitly accepts, so they no longer block the migration. Either a
    /// finding id (`sidecar-resource-ignored`, accepts every instance) or
    /// `id@Kind/namespace/name` (accepts one object's finding).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 200),
        inner(
            length(min = 1, max = 320),
            regex(
                pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(@[A-Za-z]+/[-a-z0-9.]*/[-a-z0-9.]+)?$"
            )
        )
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub accepted_findings: Vec<String>,
}

/// Namespace sequencing for restart steps.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum Ordering {
    /// In list order (selector: by name), one namespace at a time.
    #[default]
    Listed,
    /// Callers before the services they call, derived from policies.
    Auto,
}

/// Who runs the Istio control plane.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum ControlPlaneMode {
    /// Managed by the Sail operator (`Istio`, `IstioCNI`, `ZTunnel` resources): meshmig
    /// changes it.
    #[default]
    Sail,
    /// Installed by Helm or istioctl: meshmig changes nothing, verifies, and puts the exact
    /// commands to run in the condition message.
    External,
}

/// The Istio control plane to switch to ambient.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlaneSpec {
    /// `Sail` (default) or `External`.
    #[serde(default)]
    pub mode: ControlPlaneMode,
    /// Name of the Sail `Istio` resource.
    #[serde(default = "default_istio")]
    #[schemars(length(min = 1, max = 253))]
    pub istio: String,
    /// Name of the Sail `IstioCNI` resource.
    #[serde(default = "default_istio")]
    #[schemars(length(min = 1, max = 253))]
    pub istio_cni: String,
    /// Name of the Sail `ZTunnel` resource meshmig creates or verifies.
    #[serde(default = "default_istio")]
    #[schemars(length(min = 1, max = 253))]
    pub ztunnel: String,
    /// Namespace of istiod.
    #[serde(default = "default_istio_namespace")]
    #[schemars(length(min = 1, max = 63))]
    pub istio_namespace: String,
    /// Namespace of the ztunnel DaemonSet.
    #[serde(default = "default_ztunnel_namespace")]
    #[schemars(length(min = 1, max = 63))]
    pub ztunnel_namespace: String,
    /// Namespace of istio-cni.
    #[serde(default = "default_cni_namespace")]
    #[schemars(length(min = 1, max = 63))]
    pub cni_namespace: String,
    /// Mesh trust domain, used to build the waypoint principal. Defaults to the trust domain
    /// in the Istio resource's mesh config, else `cluster.local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub trust_domain: Option<String>,
}

impl Default for ControlPlaneSpec {
    fn default() -> Self {
        Self {
            mode: ControlPlaneMode::Sail,
            istio: default_istio(),
            istio_cni: default_istio(),
            ztunnel: default_istio(),
            istio_namespace: default_istio_namespace(),
            ztunnel_namespace: default_ztunnel_namespace(),
            cni_namespace: default_cni_namespace(),
            trust_domain: None,
        }
    }
}

fn default_istio() -> String {
    "default".into()
}
fn default_istio_namespace() -> String {
    "istio-system".into()
}
fn default_ztunnel_namespace() -> String {
    "ztunnel".into()
}
fn default_cni_namespace() -> String {
    "istio-cni".into()
}

/// Whether a waypoint is created for a namespace.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum WaypointPolicy {
    /// Only where the plan finds L7 features (policies, routes, traffic policy).
    #[default]
    Auto,
    /// In every migrated namespace.
    Always,
    /// Never; L7 features that would need one become blocker findings.
    Never,
}

/// Waypoint creation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaypointSpec {
    /// `Auto` (default), `Always` or `Never`.
    #[serde(default)]
    pub policy: WaypointPolicy,
    /// Name of the waypoint Gateway created in each namespace that needs one.
    #[serde(default = "default_waypoint_name")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
}

impl Default for WaypointSpec {
    fn default() -> Self {
        Self {
            policy: WaypointPolicy::Auto,
            name: default_waypoint_name(),
        }
    }
}

fn default_waypoint_name() -> String {
    "waypoint".into()
}

/// When bypass protection is installed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum BypassProtection {
    /// In step 5; callers that cannot be enumerated are denied (fail-closed).
    #[default]
    Immediate,
    /// After sidecar removal; callers that skip the waypoint are unchecked until then
    /// (fail-open).
    Deferred,
}

/// Reaction to a failed checkpoint.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum OnFailure {
    /// Stop and report; the user fixes, then approves or rolls back.
    #[default]
    Pause,
    /// Undo the namespace's completed steps automatically.
    Rollback,
}

/// Reaction to deletion of the MeshMigration.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum OnDelete {
    /// Leave the cluster as it is.
    #[default]
    Retain,
    /// Undo every step first.
    Rollback,
}

/// Checkpoint settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointSpec {
    /// How long a check may stay Pending before the step fails (Go duration, 10s..24h).
    #[serde(default = "default_timeout")]
    #[schemars(
        length(min = 2, max = 32),
        regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$")
    )]
    #[x_kube(
        validation = Rule::new("duration(self) >= duration('10s') && duration(self) <= duration('24h')").message("spec.checkpoints.timeout must be between 10s and 24h").reason(Reason::FieldValueInvalid)
    )]
    pub timeout: String,
    /// HTTP probes run as short-lived Pods at checkpoints; both allowed and denied
    /// expectations are checked, so a step that silently opens access fails its gate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub probes: Vec<ProbeSpec>,
}

impl Default for CheckpointSpec {
    fn default() -> Self {
        Self {
            timeout: default_timeout(),
            probes: Vec::new(),
        }
    }
}

fn default_timeout() -> String {
    "10m".into()
}

/// An HTTP request made from a namespace, under a service account, with an expected outcome.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeSpec {
    /// Unique name of the probe (a DNS label).
    #[schemars(
        length(min = 1, max = 40),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Namespace the probe Pod runs in (the caller's namespace).
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub from_namespace: String,
    /// Service account of the probe Pod, so identity-based policies are exercised.
    #[serde(default = "default_service_account")]
    #[schemars(length(min = 1, max = 253))]
    pub service_account: String,
    /// URL to request, e.g. `http://reviews.bookinfo:9080/reviews/1`.
    #[schemars(length(min = 8, max = 2048), regex(pattern = r"^https?://[^\s]+$"))]
    pub url: String,
    /// HTTP method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<HttpMethod>,
    /// Request headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16))]
    pub headers: BTreeMap<String, String>,
    /// Expected outcome.
    pub expect: ProbeExpectation,
    /// Steps (1..9) whose checkpoint runs this probe. Default: 3 to 9.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 9), inner(range(min = 1, max = 9)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub steps: Vec<Step>,
    /// Image of the probe Pod (must provide `sh` and `curl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
}

fn default_service_account() -> String {
    "default".into()
}

/// HTTP method of a probe.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[allow(clippy::upper_case_acronyms)]
pub enum HttpMethod {
    /// GET (default).
    #[default]
    GET,
    /// HEAD.
    HEAD,
    /// POST.
    POST,
    /// PUT.
    PUT,
    /// PATCH.
    PATCH,
    /// DELETE.
    DELETE,
    /// OPTIONS.
    OPTIONS,
}

/// Expected outcome of a probe: exactly one of `status` or `denied`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.status) != has(self.denied)").message("probe expect must set exactly one of status or denied").reason(Reason::FieldValueInvalid),
    validation = Rule::new("!has(self.denied) || self.denied").message("expect.denied may only be true; to expect success set expect.status").reason(Reason::FieldValueInvalid)
)]
pub struct ProbeExpectation {
    /// Expected HTTP status code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 599))]
    pub status: Option<u16>,
    /// The request must be refused by policy (HTTP 403 or a reset connection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denied: Option<bool>,
}

/// Observed state of a MeshMigration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct MeshMigrationStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// kstatus conditions: Ready, Reconciling, Stalled, plus Paused and RolledBack.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Overall phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<MigrationPhase>,
    /// Lowest step any unfinished namespace is working on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step: Option<Step>,
    /// Namespaces completed / total, e.g. `1/3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// Per-namespace progress.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub namespaces: Vec<NamespaceStatus>,
    /// Snapshots of cluster-scoped objects (Sail resources), stored in the operator's
    /// namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_snapshots: Vec<SnapshotRef>,
    /// Findings of the last plan that are neither accepted nor informational.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub open_findings: Vec<FindingRef>,
    /// Where the frozen plan this migration executes is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanRef>,
    /// The rollback in progress or last completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackStatus>,
}

/// The frozen plan: computed when the migration starts and executed step by step, so later
/// cluster changes (made by the migration itself) do not change what it does.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanRef {
    /// Namespace of the ConfigMap holding the plan (the operator's namespace).
    pub namespace: String,
    /// Name of the first ConfigMap of the plan.
    pub config_map: String,
    /// Hash of the spec fields the plan depends on; a change after step 1 stalls the
    /// migration until it is rolled back.
    pub spec_hash: String,
    /// Generation the plan was computed for.
    pub generation: i64,
    /// Hash of the plan's steps, actions and manifests when it was frozen: a later operator
    /// version whose planner would act differently on the same inventory stalls instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_hash: Option<String>,
    /// UID of the first ConfigMap of the plan, so a watched copy can be told apart from a
    /// leftover of an earlier run with the same name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_uid: Option<String>,
}

/// A rollback.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackStatus {
    /// Lowest step undone (1 = everything).
    pub target: Step,
    /// `annotation`, `onFailure` or `onDelete`.
    pub requested_by: RequestedBy,
    /// Whether it finished.
    pub completed: bool,
    /// Why it was started (the failing check, for onFailure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The control plane (step 2) was restored ahead of step 3's restarts, so the Pods they
    /// create are injected by the control plane as it was before the migration.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub control_plane_undone: bool,
}

/// Overall phase of a migration.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum MigrationPhase {
    /// Accepted, not started.
    #[default]
    Pending,
    /// Steps are running.
    Progressing,
    /// Held by the paused annotation or an unapproved step.
    Paused,
    /// A checkpoint failed; waiting for the user.
    Failed,
    /// Undoing steps.
    RollingBack,
    /// Undone.
    RolledBack,
    /// Every namespace completed step 9.
    Completed,
    /// The spec or the cluster prevents progress (see the Stalled condition).
    Stalled,
}

/// Progress of one namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceStatus {
    /// Namespace name.
    pub name: String,
    /// Step being worked on (1..9); with phase Completed, the last step completed.
    pub step: Step,
    /// Phase within the step.
    pub phase: NamespacePhase,
    /// Results of the current step's checkpoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckStatus>,
    /// Snapshot ConfigMaps holding what each step changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<SnapshotRef>,
    /// When each step started and completed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<StepRecord>,
    /// Human-readable summary of what the namespace waits for or why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the current step's checkpoint started (its timeout counts from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_started_at: Option<Time>,
    /// Approvals the current step has spent: its release from `pauseBefore` and each retry
    /// after a failure (the next retry needs `"<step>/<retries + 1>"`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: u32,
    /// Generation of the spec when the current step failed; a newer spec retries it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_generation: Option<i64>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Phase of a namespace within its current step.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum NamespacePhase {
    /// Snapshotting and changing objects.
    #[default]
    Applying,
    /// Evaluating the checkpoint.
    Validating,
    /// Waiting for a barrier, an approval, or the pause annotation to go.
    Waiting,
    /// Step 9 completed.
    Completed,
    /// The checkpoint failed or timed out.
    Failed,
    /// Undoing steps.
    RollingBack,
    /// Undone.
    RolledBack,
}

/// Result of one checkpoint check.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum CheckResult {
    /// The check holds.
    Pass,
    /// Not yet; re-evaluated on the next change.
    Pending,
    /// The check cannot pass without intervention.
    Fail,
}

/// One checkpoint check.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckStatus {
    /// Check name, e.g. `waypoint-programmed`.
    pub name: String,
    /// Pass, Pending or Fail.
    pub result: CheckResult,
    /// What was checked and, when not passing, which object is wrong and what to do.
    pub message: String,
    /// When the result last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
}

/// Where the snapshot of one step is stored.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotRef {
    /// Step the snapshot belongs to.
    pub step: Step,
    /// Namespace of the ConfigMap.
    pub namespace: String,
    /// Name of the first ConfigMap; further parts are `<name>-p1`, `<name>-p2`, ….
    pub config_map: String,
    /// Number of ConfigMaps the snapshot is split into.
    #[serde(default = "one")]
    pub parts: u32,
}

fn one() -> u32 {
    1
}

/// Start and end of one step in one namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepRecord {
    /// Step number.
    pub step: Step,
    /// When the step's first action started.
    pub started_at: Time,
    /// When its checkpoint passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
}

/// A finding that blocks or warns, as reported in status.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FindingRef {
    /// Finding id, e.g. `peer-authn-disable`.
    pub id: String,
    /// `blocker` or `warning`.
    pub severity: String,
    /// `Kind/namespace/name` of the object concerned.
    pub object: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl MeshMigration {
    /// The rollback target the `meshmig.io/rollback` annotation asks for (`all` is step 1);
    /// `None` when it is absent or names no step.
    pub fn requested_rollback(&self) -> Option<Step> {
        let value = self
            .metadata
            .annotations
            .as_ref()?
            .get(crate::names::ANNOTATION_ROLLBACK)?
            .trim();
        if value == crate::names::ROLLBACK_ALL {
            Some(Step::FIRST)
        } else {
            value.parse().ok()
        }
    }

    /// The `meshmig.io/approve` value that approves `step` now (see [`approval_value`]).
    pub fn approval_for(&self, step: Step) -> String {
        approval_value(
            self.status
                .as_ref()
                .map_or(&[], |s| s.namespaces.as_slice()),
            step,
        )
    }
}

/// The `meshmig.io/approve` value that approves `step` given the namespaces' status:
/// `"<step>"` releases it from `pauseBefore` and approves the first retry; where a namespace
/// failed at `step` after approvals were spent (`retries`), `"<step>/<n>"` approves the next.
pub fn approval_value(namespaces: &[NamespaceStatus], step: Step) -> String {
    let used = namespaces
        .iter()
        .filter(|n| n.step == step && n.phase == NamespacePhase::Failed)
        .map(|n| n.retries)
        .max()
        .unwrap_or(0);
    match used {
        0 => step.to_string(),
        n => format!("{step}/{}", n + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACTIVATION: Step = Step::WaypointActivation;

    fn failed_at(step: Step, retries: u32) -> NamespaceStatus {
        NamespaceStatus {
            name: "shop".into(),
            step,
            phase: NamespacePhase::Failed,
            retries,
            ..NamespaceStatus::default()
        }
    }

    fn with(namespaces: Vec<NamespaceStatus>) -> MeshMigration {
        let mut mm = MeshMigration::new("m", MeshMigrationSpec::default());
        mm.status = Some(MeshMigrationStatus {
            namespaces,
            ..MeshMigrationStatus::default()
        });
        mm
    }

    #[test]
    fn the_rollback_annotation_names_a_step_or_all() {
        let annotated = |v: &str| {
            let mut mm = with(vec![]);
            mm.metadata.annotations =
                Some([(crate::names::ANNOTATION_ROLLBACK.to_string(), v.to_string())].into());
            mm.requested_rollback()
        };
        assert_eq!(annotated("all"), Some(Step::Prerequisites));
        assert_eq!(annotated(" 4 "), Some(Step::Waypoints));
        assert_eq!(annotated("10"), None);
        assert_eq!(annotated("yes"), None);
        assert_eq!(with(vec![]).requested_rollback(), None);
    }

    #[test]
    fn approval_counts_the_approvals_a_failed_step_used() {
        assert_eq!(with(vec![]).approval_for(ACTIVATION), "7");
        assert_eq!(
            with(vec![failed_at(ACTIVATION, 0)]).approval_for(ACTIVATION),
            "7"
        );
        // Released from pauseBefore by "7", then failed: "7" is spent.
        assert_eq!(
            with(vec![failed_at(ACTIVATION, 1)]).approval_for(ACTIVATION),
            "7/2"
        );
        assert_eq!(
            with(vec![failed_at(ACTIVATION, 1), failed_at(ACTIVATION, 3)]).approval_for(ACTIVATION),
            "7/4"
        );
        // Another step's failures do not count.
        assert_eq!(
            with(vec![failed_at(Step::Policies, 2)]).approval_for(ACTIVATION),
            "7"
        );
    }
}
