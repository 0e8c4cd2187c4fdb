//! Every label, annotation, finalizer, condition and field-manager name meshmig reads or
//! writes. Keeping them in one place means the operator, the CLI, the planner and the test
//! simulator can never disagree on a spelling.

/// API group of the MeshMigration resource.
pub const GROUP: &str = "meshmig.io";
/// Served and stored version of the MeshMigration resource.
pub const VERSION: &str = "v1alpha1";
/// Field manager used for every server-side apply meshmig performs.
pub const FIELD_MANAGER: &str = "meshmig";
/// Finalizer that lets `spec.onDelete` run before a MeshMigration disappears.
pub const FINALIZER: &str = "meshmig.io/cleanup";

/// Standard label set on every object meshmig creates.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "meshmig";
/// Name of the MeshMigration that created or snapshotted an object.
pub const LABEL_MIGRATION: &str = "meshmig.io/migration";
/// Step number (1..9) a created object or snapshot belongs to.
pub const LABEL_STEP: &str = "meshmig.io/step";
/// Marks snapshot ConfigMaps (value `"true"`).
pub const LABEL_SNAPSHOT: &str = "meshmig.io/snapshot";
/// Marks checkpoint probe Pods; the value is the probe name.
pub const LABEL_PROBE: &str = "meshmig.io/probe";
/// What a generated object is for (`waypoint`, `per-version-service`, `policy-copy`,
/// `bypass-protection`, `httproute`, `destination-rule`, `reference-grant`).
pub const LABEL_ROLE: &str = "meshmig.io/role";
/// On a generated object: `Kind/namespace/name` of the object it was derived from.
pub const ANNOTATION_SOURCE: &str = "meshmig.io/source";
/// kubectl's copy of the last applied object: often larger than the rest of an object and
/// never read by meshmig, so dropped when objects are cached or loaded.
pub const ANNOTATION_LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// `"true"` stops advancing after the current action.
pub const ANNOTATION_PAUSED: &str = "meshmig.io/paused";
/// `"<step>"` releases a step listed in `spec.pauseBefore`.
pub const ANNOTATION_APPROVE: &str = "meshmig.io/approve";
/// `"<step>"` or `"all"`: undo steps in reverse order down to that step.
pub const ANNOTATION_ROLLBACK: &str = "meshmig.io/rollback";
/// The `meshmig.io/rollback` value that undoes every step.
pub const ROLLBACK_ALL: &str = "all";
/// Pod-template annotation meshmig sets to trigger a rollout restart.
pub const ANNOTATION_RESTARTED_AT: &str = "meshmig.io/restartedAt";
/// On a checkpoint probe Pod, `<namespace>/step<step>` (see [`validates`]): whose checkpoint
/// it is, so a step cleans up only its own probes.
pub const ANNOTATION_VALIDATES: &str = "meshmig.io/validates";
/// On the head ConfigMap of a rollback snapshot: how many ConfigMaps the snapshot spans.
pub const ANNOTATION_SNAPSHOT_PARTS: &str = "meshmig.io/snapshot-parts";
/// On the head ConfigMap of a frozen plan inventory: how many ConfigMaps it spans.
pub const ANNOTATION_FROZEN_PARTS: &str = "meshmig.io/parts";
/// On the head ConfigMap of a frozen plan inventory: the hash of the spec it was planned for.
pub const ANNOTATION_SPEC_HASH: &str = "meshmig.io/spec-hash";

/// The [`ANNOTATION_VALIDATES`] value of the probes of `namespace`'s checkpoint of `step`.
pub fn validates(namespace: &str, step: crate::Step) -> String {
    format!("{namespace}/step{step}")
}

/// kstatus condition: the migration finished and everything it promised holds.
pub const CONDITION_READY: &str = "Ready";
/// kstatus condition: the operator is working towards the desired state.
pub const CONDITION_RECONCILING: &str = "Reconciling";
/// kstatus condition: progress is impossible without a change by the user.
pub const CONDITION_STALLED: &str = "Stalled";
/// Advancing is held by the `meshmig.io/paused` annotation or `spec.pauseBefore`.
pub const CONDITION_PAUSED: &str = "Paused";
/// A rollback finished.
pub const CONDITION_ROLLED_BACK: &str = "RolledBack";

/// Istio and Kubernetes names meshmig reads or writes; the semantics behind them live in the
/// planner.
pub mod istio {
    /// Namespace label that turns on sidecar injection (`enabled`/`disabled`).
    pub const INJECTION: &str = "istio-injection";
    /// Namespace/pod label selecting a control-plane revision (also turns on injection).
    pub const REV: &str = "istio.io/rev";
    /// Pod label or annotation that forces injection on or off.
    pub const SIDECAR_INJECT: &str = "sidecar.istio.io/inject";
    /// Pod annotation written by the injector; its presence means the pod has a sidecar.
    pub const SIDECAR_STATUS: &str = "sidecar.istio.io/status";
    /// Namespace/pod label enrolling workloads in ambient (`ambient` or `none`).
    pub const DATAPLANE_MODE: &str = "istio.io/dataplane-mode";
    /// Value of [`DATAPLANE_MODE`] that enrols workloads in ambient.
    pub const DATAPLANE_AMBIENT: &str = "ambient";
    /// Namespace/Service/pod label naming the waypoint to use (`none` opts out).
    pub const USE_WAYPOINT: &str = "istio.io/use-waypoint";
    /// Namespace of the waypoint named by [`USE_WAYPOINT`], when it is elsewhere.
    pub const USE_WAYPOINT_NAMESPACE: &str = "istio.io/use-waypoint-namespace";
    /// Waypoint Gateway label: which traffic it serves (`service`, `workload`, `all`, `none`).
    pub const WAYPOINT_FOR: &str = "istio.io/waypoint-for";
    /// Service label that sends ingress-gateway traffic through the waypoint too.
    pub const INGRESS_USE_WAYPOINT: &str = "istio.io/ingress-use-waypoint";
    /// Pod label the injector sets when the sidecar speaks HBONE.
    pub const TUNNEL: &str = "networking.istio.io/tunnel";
    /// Pod annotation istio-cni sets on ambient-captured pods.
    pub const REDIRECTION: &str = "ambient.istio.io/redirection";
    /// Service status condition set by istiod when the Service is bound to a ready waypoint.
    pub const WAYPOINT_BOUND: &str = "istio.io/WaypointBound";
    /// Gateway annotation overriding the waypoint's service account.
    pub const GATEWAY_SERVICE_ACCOUNT: &str = "gateway.istio.io/service-account";
    /// GatewayClass of waypoint proxies.
    pub const WAYPOINT_CLASS: &str = "istio-waypoint";
    /// Name of the sidecar container.
    pub const PROXY_CONTAINER: &str = "istio-proxy";
    /// Sidecar env var holding the proxy configuration (JSON or YAML).
    pub const PROXY_CONFIG_ENV: &str = "PROXY_CONFIG";
    /// Proxy metadata key that makes a sidecar HBONE-capable.
    pub const ENABLE_HBONE: &str = "ISTIO_META_ENABLE_HBONE";
    /// istiod env var that turns on ambient support (non-Sail installs).
    pub const PILOT_ENABLE_AMBIENT: &str = "PILOT_ENABLE_AMBIENT";
    /// AuthorizationPolicy annotation: evaluate and log, do not enforce.
    pub const DRY_RUN: &str = "istio.io/dry-run";
    /// istiod env: send `istio.io/dry-run` policies to ztunnel, marked dry-run (1.29+).
    pub const AMBIENT_ENABLE_DRY_RUN_AUTHORIZATION_POLICY: &str =
        "AMBIENT_ENABLE_DRY_RUN_AUTHORIZATION_POLICY";
    /// Secret label marking a remote-cluster secret (multicluster).
    pub const MULTICLUSTER_SECRET: &str = "istio/multiCluster";
    /// Label of Istio's gateway workloads; ingress gateways' value holds `ingressgateway`.
    pub const GATEWAY_WORKLOAD: &str = "istio";
    /// Part of a [`GATEWAY_WORKLOAD`] value that marks an ingress gateway.
    pub const INGRESS_GATEWAY: &str = "ingressgateway";
    /// Label the Gateway API controller sets on a Gateway's workloads, naming the Gateway.
    pub const GATEWAY_NAME: &str = "gateway.networking.k8s.io/gateway-name";
    /// Label istiod puts on the Deployment it runs for a Gateway: which controller manages it.
    pub const GATEWAY_MANAGED: &str = "gateway.istio.io/managed";
    /// The [`GATEWAY_MANAGED`] value of waypoints, which are not ingress gateways.
    pub const MESH_CONTROLLER: &str = "istio.io-mesh-controller";
    /// Pod label set by SPIRE-managed identity.
    pub const SPIRE_IDENTITY: &str = "spiffe.io/spire-managed-identity";
}
