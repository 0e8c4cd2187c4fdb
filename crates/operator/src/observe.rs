//! Observe: reflector stores for everything the steps wait for, and the Inventory built from
//! them. Pods, ReplicaSets and CRDs are watched as metadata only.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::stream::BoxStream;
use futures::{StreamExt, future};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use meshmig_api::gateway::{Gateway, HTTPRoute};
use meshmig_api::istio::{
    AuthorizationPolicy, DestinationRule, EnvoyFilter, PeerAuthentication, RequestAuthentication,
    ServiceEntry, Sidecar, Telemetry, VirtualService, WasmPlugin, WorkloadEntry, WorkloadGroup,
};
use meshmig_api::kinds::{Kind, Typed};
use meshmig_api::names as mn;
use meshmig_api::sail::{Istio, IstioCni, ZTunnel};
use meshmig_api::{MeshMigration, MeshMigrationSpec};
use meshmig_planner::Inventory;
use meshmig_planner::inventory::{CrdInfo, PodInfo};
use meshmig_planner::model::label_selector_matches;
use serde::de::DeserializeOwned;
use tracing::warn;

/// A change notification from any watch.
pub type Trigger = BoxStream<'static, ()>;

fn watch<K>(api: Api<K>, cfg: watcher::Config, triggers: &mut Vec<Trigger>) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let kind = K::kind(&Default::default()).to_string();
    let stream = reflector::reflector(writer, watcher(api, cfg).default_backoff().modify(slim))
        .touched_objects()
        .filter_map(move |r| {
            future::ready(match r {
                Ok(_) => Some(()),
                Err(e) => {
                    warn!(kind = %kind, error = %e, "watch error");
                    None
                }
            })
        })
        .boxed();
    triggers.push(stream);
    reader
}

/// Drops what meshmig never reads from a watched object before it is cached: managed fields
/// and kubectl's last-applied copy are often larger than the rest of the object, and with tens
/// of thousands of Pods they were most of the operator's memory. (Snapshots and writes read
/// live objects, never the cache.)
fn slim<K: Resource>(o: &mut K) {
    let meta = o.meta_mut();
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(meshmig_api::names::ANNOTATION_LAST_APPLIED);
    }
}

fn watch_meta<K>(
    client: &Client,
    cfg: watcher::Config,
    triggers: &mut Vec<Trigger>,
) -> Store<PartialObjectMeta<K>>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
    PartialObjectMeta<K>:
        Resource<DynamicType = K::DynamicType> + Clone + DeserializeOwned + Debug + Send + Sync,
{
    // An Api over PartialObjectMeta makes metadata-only list/watch requests.
    watch(
        Api::<PartialObjectMeta<K>>::all(client.clone()),
        cfg,
        triggers,
    )
}

/// Which optional CRDs are installed (kinds whose CRD is missing are not watched).
#[derive(Clone, Debug, Default)]
pub struct Installed {
    /// `plural.group` of every installed CRD at start.
    pub crds: BTreeSet<String>,
}

impl Installed {
    /// Whether `kind` is served: built in, or its CRD is installed.
    fn has(&self, kind: Kind) -> bool {
        kind.crd_name().is_none_or(|crd| self.crds.contains(&crd))
    }
}

/// Reflector stores.
#[derive(Clone)]
pub struct Stores {
    /// Namespaces.
    pub namespaces: Store<Namespace>,
    /// Services.
    pub services: Store<Service>,
    /// Pods, metadata only.
    pub pods: Store<PartialObjectMeta<Pod>>,
    /// Probe Pods (full, label-selected).
    pub probe_pods: Store<Pod>,
    /// Deployments.
    pub deployments: Store<Deployment>,
    /// StatefulSets.
    pub stateful_sets: Store<StatefulSet>,
    /// DaemonSets.
    pub daemon_sets: Store<DaemonSet>,
    /// ReplicaSets, metadata only.
    pub replica_sets: Store<PartialObjectMeta<ReplicaSet>>,
    /// CRDs, metadata only.
    pub crds: Store<PartialObjectMeta<CustomResourceDefinition>>,
    /// ConfigMaps meshmig created (snapshots, frozen plans).
    pub config_maps: Store<ConfigMap>,
    /// kube-system/cilium-config (CNI compatibility).
    pub cilium: Store<ConfigMap>,
    /// istiod's MeshConfig ConfigMaps (`istio` in any namespace): trust domain and aliases.
    pub mesh_configs: Store<ConfigMap>,
    /// Optional kinds (None when their CRD is not installed).
    pub authorization_policies: Option<Store<AuthorizationPolicy>>,
    /// PeerAuthentications.
    pub peer_authentications: Option<Store<PeerAuthentication>>,
    /// RequestAuthentications.
    pub request_authentications: Option<Store<RequestAuthentication>>,
    /// VirtualServices.
    pub virtual_services: Option<Store<VirtualService>>,
    /// DestinationRules.
    pub destination_rules: Option<Store<DestinationRule>>,
    /// Sidecars.
    pub sidecars: Option<Store<Sidecar>>,
    /// EnvoyFilters.
    pub envoy_filters: Option<Store<EnvoyFilter>>,
    /// Telemetries.
    pub telemetries: Option<Store<Telemetry>>,
    /// WasmPlugins.
    pub wasm_plugins: Option<Store<WasmPlugin>>,
    /// WorkloadEntries.
    pub workload_entries: Option<Store<WorkloadEntry>>,
    /// WorkloadGroups.
    pub workload_groups: Option<Store<WorkloadGroup>>,
    /// ServiceEntries.
    pub service_entries: Option<Store<ServiceEntry>>,
    /// Gateways.
    pub gateways: Option<Store<Gateway>>,
    /// HTTPRoutes.
    pub http_routes: Option<Store<HTTPRoute>>,
    /// Sail Istio.
    pub istios: Option<Store<Istio>>,
    /// Sail IstioCNI.
    pub istio_cnis: Option<Store<IstioCni>>,
    /// Sail ZTunnel.
    pub ztunnels: Option<Store<ZTunnel>>,
    ready: Arc<AtomicBool>,
}

impl Stores {
    /// Starts the watches; returns the stores and the merged change stream (which must be
    /// polled for the stores to fill: the controller does).
    pub fn start(client: &Client, installed: &Installed) -> (Self, Trigger) {
        let mut t: Vec<Trigger> = Vec::new();
        let c = client;
        let all = watcher::Config::default();
        macro_rules! opt {
            ($ty:ty) => {
                installed
                    .has(<$ty as Typed>::KIND)
                    .then(|| watch(Api::<$ty>::all(c.clone()), all.clone(), &mut t))
            };
        }
        let snapshot_cms = watcher::Config::default().labels(&format!(
            "{}={}",
            mn::LABEL_MANAGED_BY,
            mn::MANAGED_BY
        ));
        let stores = Stores {
            namespaces: watch(Api::<Namespace>::all(c.clone()), all.clone(), &mut t),
            services: watch(Api::<Service>::all(c.clone()), all.clone(), &mut t),
            pods: watch_meta::<Pod>(c, all.clone(), &mut t),
            probe_pods: watch(
                Api::<Pod>::all(c.clone()),
                watcher::Config::default().labels(mn::LABEL_PROBE),
                &mut t,
            ),
            deployments: watch(Api::<Deployment>::all(c.clone()), all.clone(), &mut t),
            stateful_sets: watch(Api::<StatefulSet>::all(c.clone()), all.clone(), &mut t),
            daemon_sets: watch(Api::<DaemonSet>::all(c.clone()), all.clone(), &mut t),
            replica_sets: watch_meta::<ReplicaSet>(c, all.clone(), &mut t),
            crds: watch_meta::<CustomResourceDefinition>(c, all.clone(), &mut t),
            config_maps: watch(Api::<ConfigMap>::all(c.clone()), snapshot_cms, &mut t),
            cilium: watch(
                Api::<ConfigMap>::namespaced(c.clone(), "kube-system"),
                watcher::Config::default().fields("metadata.name=cilium-config"),
                &mut t,
            ),
            mesh_configs: watch(
                Api::<ConfigMap>::all(c.clone()),
                watcher::Config::default().fields(&format!(
                    "metadata.name={}",
                    meshmig_planner::cluster::MESH_CONFIG_MAP
                )),
                &mut t,
            ),
            authorization_policies: opt!(AuthorizationPolicy),
            peer_authentications: opt!(PeerAuthentication),
            request_authentications: opt!(RequestAuthentication),
            virtual_services: opt!(VirtualService),
            destination_rules: opt!(DestinationRule),
            sidecars: opt!(Sidecar),
            envoy_filters: opt!(EnvoyFilter),
            telemetries: opt!(Telemetry),
            wasm_plugins: opt!(WasmPlugin),
            workload_entries: opt!(WorkloadEntry),
            workload_groups: opt!(WorkloadGroup),
            service_entries: opt!(ServiceEntry),
            gateways: opt!(Gateway),
            http_routes: opt!(HTTPRoute),
            istios: opt!(Istio),
            istio_cnis: opt!(IstioCni),
            ztunnels: opt!(ZTunnel),
            ready: Arc::new(AtomicBool::new(false)),
        };
        (stores, futures::stream::select_all(t).boxed())
    }

    /// Resolves when every store has its initial list; then [`Stores::ready`] is true.
    pub async fn wait_ready(&self) {
        macro_rules! wait {
            ($($s:expr),*) => {
                $( let _ = $s.wait_until_ready().await; )*
            };
        }
        macro_rules! wait_opt {
            ($($s:expr),*) => {
                $( if let Some(s) = &$s { let _ = s.wait_until_ready().await; } )*
            };
        }
        wait!(
            self.namespaces,
            self.services,
            self.pods,
            self.probe_pods,
            self.deployments,
            self.stateful_sets,
            self.daemon_sets,
            self.replica_sets,
            self.crds,
            self.config_maps,
            self.cilium,
            self.mesh_configs
        );
        wait_opt!(
            self.authorization_policies,
            self.peer_authentications,
            self.request_authentications,
            self.virtual_services,
            self.destination_rules,
            self.sidecars,
            self.envoy_filters,
            self.telemetries,
            self.wasm_plugins,
            self.workload_entries,
            self.workload_groups,
            self.service_entries,
            self.gateways,
            self.http_routes,
            self.istios,
            self.istio_cnis,
            self.ztunnels
        );
        self.ready.store(true, Ordering::SeqCst);
    }

    /// Whether the caches are synced.
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Target namespaces of a spec.
    pub fn targets(&self, spec: &MeshMigrationSpec, operator_namespace: &str) -> Vec<String> {
        if let Some(list) = &spec.namespaces {
            return list.clone();
        }
        let Some(sel) = &spec.namespace_selector else {
            return Vec::new();
        };
        let mut out: Vec<String> = self
            .namespaces
            .state()
            .iter()
            .filter_map(|n| {
                let name = n.metadata.name.clone()?;
                let labels = n.metadata.labels.clone().unwrap_or_default();
                let system = ["kube-system", "kube-public", "kube-node-lease"]
                    .contains(&name.as_str())
                    || name == operator_namespace
                    || name == spec.control_plane.istio_namespace
                    || name == spec.control_plane.ztunnel_namespace
                    || name == spec.control_plane.cni_namespace;
                (!system && label_selector_matches(sel, &labels)).then_some(name)
            })
            .collect();
        out.sort();
        out
    }

    /// The Inventory for a migration: its target namespaces plus the control-plane, root and
    /// kube-system namespaces; routing objects from every namespace (they can point into the
    /// targets); ingress gateway workloads from every namespace (bypass protection admits
    /// them).
    pub fn inventory(&self, spec: &MeshMigrationSpec, targets: &[String]) -> Inventory {
        let cp = &spec.control_plane;
        let mut relevant: BTreeSet<&str> = targets.iter().map(String::as_str).collect();
        relevant.extend([
            cp.istio_namespace.as_str(),
            cp.ztunnel_namespace.as_str(),
            cp.cni_namespace.as_str(),
            "kube-system",
        ]);
        let keep = |m: &ObjectMeta| relevant.contains(m.namespace.as_deref().unwrap_or_default());
        let mut inv = Inventory::default();
        for n in self.namespaces.state() {
            if let Some(name) = n.metadata.name.clone() {
                inv.namespaces.insert(name, (*n).clone());
            }
        }
        self.copy_workloads(&mut inv, &keep);
        inv.crds = Some(self.crd_infos());
        inv.config_maps = self
            .cilium
            .state()
            .iter()
            .chain(self.mesh_configs.state().iter())
            .map(|c| (**c).clone())
            .collect();
        self.copy_mesh_config(&mut inv, &keep);
        inv.sort();
        inv
    }

    /// Services, Pods and the workload kinds of the kept namespaces; ingress gateway
    /// Deployments of every namespace.
    fn copy_workloads(&self, inv: &mut Inventory, keep: &dyn Fn(&ObjectMeta) -> bool) {
        inv.services = kept(&self.services, keep);
        inv.pods = self
            .pods
            .state()
            .iter()
            .filter(|p| keep(&p.metadata))
            .map(|p| PodInfo::from_meta(p.metadata.clone()))
            .collect();
        inv.deployments = self
            .deployments
            .state()
            .iter()
            .filter(|d| keep(&d.metadata) || is_ingress_gateway(d))
            .map(|d| (**d).clone())
            .collect();
        inv.stateful_sets = kept(&self.stateful_sets, keep);
        inv.daemon_sets = kept(&self.daemon_sets, keep);
        inv.replica_sets = self
            .replica_sets
            .state()
            .iter()
            .filter(|r| keep(&r.metadata))
            .map(|r| ReplicaSet {
                metadata: r.metadata.clone(),
                ..Default::default()
            })
            .collect();
    }

    /// Every installed CRD by name.
    fn crd_infos(&self) -> BTreeMap<String, CrdInfo> {
        let mut crds = BTreeMap::new();
        for c in self.crds.state() {
            if let Some(name) = c.metadata.name.clone() {
                let annotations = c.metadata.annotations.as_ref();
                let info = CrdInfo::from_annotations(|k| annotations?.get(k).map(String::as_str));
                crds.insert(name, info);
            }
        }
        crds
    }

    /// The Istio, Gateway API and Sail kinds whose CRDs are installed: routing and Sail
    /// objects from everywhere, the rest from the kept namespaces.
    fn copy_mesh_config(&self, inv: &mut Inventory, keep: &dyn Fn(&ObjectMeta) -> bool) {
        let all = &|_: &ObjectMeta| true;
        macro_rules! copy {
            ($($field:ident: $keep:expr),* $(,)?) => {
                $(if let Some(s) = &self.$field {
                    inv.$field = kept(s, $keep);
                })*
            };
        }
        copy!(
            authorization_policies: keep,
            peer_authentications: keep,
            request_authentications: keep,
            virtual_services: all,
            destination_rules: all,
            sidecars: keep,
            envoy_filters: keep,
            telemetries: keep,
            wasm_plugins: keep,
            workload_entries: keep,
            workload_groups: keep,
            service_entries: keep,
            gateways: keep,
            http_routes: keep,
            istios: all,
            istio_cnis: all,
            ztunnels: all,
        );
    }

    /// Snapshot head ConfigMaps of this MeshMigration object (not of an earlier one of the
    /// same name), as `namespace/name`.
    pub fn snapshot_heads(&self, mm: &MeshMigration) -> std::collections::BTreeSet<String> {
        let migration = mm.metadata.name.as_deref().unwrap_or_default();
        self.config_maps
            .state()
            .iter()
            .filter(|c| {
                let l = c.metadata.labels.as_ref();
                l.and_then(|l| l.get(mn::LABEL_SNAPSHOT))
                    .map(String::as_str)
                    == Some("true")
                    && l.and_then(|l| l.get(mn::LABEL_MIGRATION))
                        .map(String::as_str)
                        == Some(migration)
                    && crate::act::owned_by(c.as_ref(), mm)
            })
            .map(|c| {
                format!(
                    "{}/{}",
                    c.metadata.namespace.as_deref().unwrap_or_default(),
                    c.metadata.name.as_deref().unwrap_or_default()
                )
            })
            .collect()
    }

    /// Probe Pods of a migration.
    pub fn probe_pods_of(&self, migration: &str) -> Vec<Pod> {
        self.probe_pods
            .state()
            .iter()
            .filter(|p| {
                p.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(mn::LABEL_MIGRATION))
                    .map(String::as_str)
                    == Some(migration)
            })
            .map(|p| (**p).clone())
            .collect()
    }
}

/// The objects of `store` whose metadata `keep` accepts.
fn kept<K>(store: &Store<K>, keep: &dyn Fn(&ObjectMeta) -> bool) -> Vec<K>
where
    K: Resource + Clone,
    K::DynamicType: Eq + Hash + Clone,
{
    store
        .state()
        .iter()
        .filter(|o| keep(o.meta()))
        .map(|o| (**o).clone())
        .collect()
}

fn is_ingress_gateway(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.as_ref())
        .is_some_and(meshmig_planner::model::is_ingress_gateway)
}

#[cfg(test)]
mod slim_tests {
    use super::*;
    use meshmig_api::names::ANNOTATION_LAST_APPLIED as LAST_APPLIED;

    #[test]
    fn cached_objects_lose_managed_fields_and_last_applied_only() {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "p", "namespace": "shop",
                "labels": {"app": "web"},
                "annotations": {LAST_APPLIED: "{\"big\": true}", "sidecar.istio.io/status": "{}"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}]
            }
        }))
        .unwrap();
        slim(&mut pod);
        assert!(pod.metadata.managed_fields.is_none());
        let annotations = pod.metadata.annotations.unwrap();
        assert!(!annotations.contains_key(LAST_APPLIED));
        assert!(annotations.contains_key("sidecar.istio.io/status"));
        assert_eq!(pod.metadata.labels.unwrap()["app"], "web");
    }

    #[test]
    fn optional_kinds_are_watched_when_their_crd_is_installed() {
        let installed = Installed {
            crds: [
                "authorizationpolicies.security.istio.io",
                "httproutes.gateway.networking.k8s.io",
                "ztunnels.sailoperator.io",
            ]
            .map(String::from)
            .into(),
        };
        assert!(installed.has(Kind::AuthorizationPolicy));
        assert!(installed.has(Kind::HttpRoute));
        assert!(installed.has(Kind::ZTunnel));
        assert!(!installed.has(Kind::Gateway));
        assert!(!installed.has(Kind::EnvoyFilter));
        assert!(installed.has(Kind::Deployment), "built in");
    }
}
