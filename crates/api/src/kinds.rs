//! The one table of the kinds meshmig handles: how each is addressed on the API server
//! (group, version, plural, scope) and what meshmig does with it (writes it, reads it into
//! the planner's inventory, compares it with the plan). The operator's writer, its watches,
//! the CLI's live loader and the planner's inventory all read it, so they cannot disagree on
//! a kind.
//!
//! Group, version, kind and scope come from the types' own `Resource` implementations
//! (k8s-openapi's constants, the partial views' constants); plurals of the views and of the
//! Gateway API types are spelt here and checked against their `kube::Resource`
//! implementations by the tests.

use std::fmt;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};
use kube::core::{ApiResource, GroupVersionKind};

use crate::istio::{
    AuthorizationPolicy, DestinationRule, EnvoyFilter, PeerAuthentication, RequestAuthentication,
    ServiceEntry, Sidecar, Telemetry, VirtualService, WasmPlugin, WorkloadEntry, WorkloadGroup,
};
use crate::sail::{Istio, IstioCni, ZTunnel};

/// Whether objects of a kind live in a namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// In a namespace.
    Namespaced,
    /// Cluster-wide.
    Cluster,
}

/// The [`Scope`] of a `k8s_openapi` scope type, so the table takes it from the types.
pub trait ScopeOf {
    /// The scope.
    const SCOPE: Scope;
}

impl ScopeOf for NamespaceResourceScope {
    const SCOPE: Scope = Scope::Namespaced;
}

impl ScopeOf for ClusterResourceScope {
    const SCOPE: Scope = Scope::Cluster;
}

/// How objects of a kind enter the planner's inventory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    /// Every object: listed by the CLI's live loader, loaded from files, watched by the
    /// operator (MeshMigrations apart: the controller itself watches those).
    Listed,
    /// Only particular objects (the Cilium and mesh ConfigMaps), which live readers fetch by
    /// name; every one in files.
    ByName,
    /// Only from files, and then only the metadata of remote-cluster Secrets: live readers
    /// never read Secrets.
    FilesOnly,
    /// Not at all: counted as skipped when loaded.
    Not,
}

/// A kind meshmig handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[allow(missing_docs)]
pub enum Kind {
    Namespace,
    Service,
    Pod,
    Deployment,
    StatefulSet,
    DaemonSet,
    ReplicaSet,
    AuthorizationPolicy,
    PeerAuthentication,
    RequestAuthentication,
    VirtualService,
    DestinationRule,
    Sidecar,
    EnvoyFilter,
    Telemetry,
    WasmPlugin,
    WorkloadEntry,
    WorkloadGroup,
    ServiceEntry,
    Istio,
    IstioCni,
    ZTunnel,
    Gateway,
    HttpRoute,
    ReferenceGrant,
    ConfigMap,
    Secret,
    CustomResourceDefinition,
    MeshMigration,
}

/// One row of the table.
#[derive(Clone, Copy, Debug)]
pub struct KindInfo {
    /// The row's kind (the table is indexed by it).
    pub kind: Kind,
    /// API group, empty for the core group.
    pub group: &'static str,
    /// The version meshmig reads and writes.
    pub version: &'static str,
    /// The Kubernetes kind name.
    pub name: &'static str,
    /// Plural (the resource's URL path segment).
    pub plural: &'static str,
    /// Scope.
    pub scope: Scope,
    /// meshmig may create, patch or delete objects of this kind (the operator's writer
    /// refuses the others).
    pub write: bool,
    /// How objects enter the inventory.
    pub held: Held,
    /// Checks compare the live object with what the plan wrote or the snapshot holds (drift,
    /// change since the plan, rollback verification); for other kinds they cannot see the
    /// object or do not look at its content, and trust the write.
    pub compared: bool,
}

/// A kind under no constraint yet: read-only, not in the inventory, not compared.
const fn row(
    kind: Kind,
    (group, version, name): (&'static str, &'static str, &'static str),
    plural: &'static str,
    scope: Scope,
) -> KindInfo {
    KindInfo {
        kind,
        group,
        version,
        name,
        plural,
        scope,
        write: false,
        held: Held::Not,
        compared: false,
    }
}

/// A row from a k8s-openapi type: every field from its `Resource` constants.
const fn builtin<K: k8s_openapi::Resource>(kind: Kind) -> KindInfo
where
    K::Scope: ScopeOf,
{
    row(
        kind,
        (K::GROUP, K::VERSION, K::KIND),
        K::URL_PATH_SEGMENT,
        <K::Scope as ScopeOf>::SCOPE,
    )
}

/// Group, version and kind of a partial view, from its constants.
macro_rules! view {
    ($t:ty) => {
        (<$t>::GROUP, <$t>::VERSION, <$t>::KIND)
    };
}

/// The scope of any `kube::Resource`.
macro_rules! scope {
    ($t:ty) => {
        <<$t as kube::Resource>::Scope as ScopeOf>::SCOPE
    };
}

impl KindInfo {
    const fn write(mut self) -> Self {
        self.write = true;
        self
    }

    const fn held(mut self, held: Held) -> Self {
        self.held = held;
        self
    }

    const fn listed(self) -> Self {
        self.held(Held::Listed)
    }

    const fn compared(mut self) -> Self {
        self.compared = true;
        self
    }
}

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// The table, in [`Kind`] order.
const TABLE: [KindInfo; Kind::ALL.len()] = [
    builtin::<Namespace>(Kind::Namespace).write().listed(),
    builtin::<Service>(Kind::Service)
        .write()
        .listed()
        .compared(),
    builtin::<Pod>(Kind::Pod).write().listed(),
    builtin::<Deployment>(Kind::Deployment).write().listed(),
    builtin::<StatefulSet>(Kind::StatefulSet).write().listed(),
    builtin::<DaemonSet>(Kind::DaemonSet).write().listed(),
    builtin::<ReplicaSet>(Kind::ReplicaSet).listed(),
    row(
        Kind::AuthorizationPolicy,
        view!(AuthorizationPolicy),
        "authorizationpolicies",
        scope!(AuthorizationPolicy),
    )
    .write()
    .listed()
    .compared(),
    row(
        Kind::PeerAuthentication,
        view!(PeerAuthentication),
        "peerauthentications",
        scope!(PeerAuthentication),
    )
    .write()
    .listed(),
    row(
        Kind::RequestAuthentication,
        view!(RequestAuthentication),
        "requestauthentications",
        scope!(RequestAuthentication),
    )
    .write()
    .listed()
    .compared(),
    row(
        Kind::VirtualService,
        view!(VirtualService),
        "virtualservices",
        scope!(VirtualService),
    )
    .write()
    .listed()
    .compared(),
    row(
        Kind::DestinationRule,
        view!(DestinationRule),
        "destinationrules",
        scope!(DestinationRule),
    )
    .write()
    .listed()
    .compared(),
    row(Kind::Sidecar, view!(Sidecar), "sidecars", scope!(Sidecar)).listed(),
    row(
        Kind::EnvoyFilter,
        view!(EnvoyFilter),
        "envoyfilters",
        scope!(EnvoyFilter),
    )
    .listed(),
    row(
        Kind::Telemetry,
        view!(Telemetry),
        "telemetries",
        scope!(Telemetry),
    )
    .write()
    .listed()
    .compared(),
    row(
        Kind::WasmPlugin,
        view!(WasmPlugin),
        "wasmplugins",
        scope!(WasmPlugin),
    )
    .write()
    .listed()
    .compared(),
    row(
        Kind::WorkloadEntry,
        view!(WorkloadEntry),
        "workloadentries",
        scope!(WorkloadEntry),
    )
    .listed(),
    row(
        Kind::WorkloadGroup,
        view!(WorkloadGroup),
        "workloadgroups",
        scope!(WorkloadGroup),
    )
    .listed(),
    row(
        Kind::ServiceEntry,
        view!(ServiceEntry),
        "serviceentries",
        scope!(ServiceEntry),
    )
    .listed(),
    row(Kind::Istio, view!(Istio), "istios", scope!(Istio))
        .write()
        .listed(),
    row(
        Kind::IstioCni,
        view!(IstioCni),
        "istiocnis",
        scope!(IstioCni),
    )
    .write()
    .listed(),
    row(Kind::ZTunnel, view!(ZTunnel), "ztunnels", scope!(ZTunnel))
        .write()
        .listed(),
    row(
        Kind::Gateway,
        (GATEWAY_GROUP, "v1", "Gateway"),
        "gateways",
        scope!(crate::gateway::Gateway),
    )
    .write()
    .listed()
    .compared(),
    row(
        Kind::HttpRoute,
        (GATEWAY_GROUP, "v1", "HTTPRoute"),
        "httproutes",
        scope!(crate::gateway::HTTPRoute),
    )
    .write()
    .listed()
    .compared(),
    // v1beta1, not the crate type's v1: the version the planner writes, served by every
    // Gateway API release (v1 only by recent ones). Not watched, so neither held nor compared.
    row(
        Kind::ReferenceGrant,
        (GATEWAY_GROUP, "v1beta1", "ReferenceGrant"),
        "referencegrants",
        scope!(crate::gateway::ReferenceGrant),
    )
    .write(),
    builtin::<ConfigMap>(Kind::ConfigMap)
        .write()
        .held(Held::ByName),
    builtin::<Secret>(Kind::Secret).held(Held::FilesOnly),
    builtin::<CustomResourceDefinition>(Kind::CustomResourceDefinition).listed(),
    row(
        Kind::MeshMigration,
        (crate::names::GROUP, crate::names::VERSION, "MeshMigration"),
        "meshmigrations",
        scope!(crate::MeshMigration),
    )
    .listed(),
];

/// API groups served by the API server itself, whose kinds need no CRD.
const BUILT_IN_GROUPS: [&str; 3] = ["", "apps", "apiextensions.k8s.io"];

impl Kind {
    /// Every kind, in table order (the order the planner's inventory writes them out).
    pub const ALL: [Kind; 29] = [
        Kind::Namespace,
        Kind::Service,
        Kind::Pod,
        Kind::Deployment,
        Kind::StatefulSet,
        Kind::DaemonSet,
        Kind::ReplicaSet,
        Kind::AuthorizationPolicy,
        Kind::PeerAuthentication,
        Kind::RequestAuthentication,
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::Sidecar,
        Kind::EnvoyFilter,
        Kind::Telemetry,
        Kind::WasmPlugin,
        Kind::WorkloadEntry,
        Kind::WorkloadGroup,
        Kind::ServiceEntry,
        Kind::Istio,
        Kind::IstioCni,
        Kind::ZTunnel,
        Kind::Gateway,
        Kind::HttpRoute,
        Kind::ReferenceGrant,
        Kind::ConfigMap,
        Kind::Secret,
        Kind::CustomResourceDefinition,
        Kind::MeshMigration,
    ];

    /// The kind's row.
    pub fn info(self) -> &'static KindInfo {
        &TABLE[self as usize]
    }

    /// The kind named `name` (kind names are unique among the kinds meshmig handles).
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The kind of an object of API group `group` named `name` (any version).
    pub fn from_group_kind(group: &str, name: &str) -> Option<Kind> {
        Kind::from_name(name).filter(|k| k.group() == group)
    }

    /// The kind meshmig may write named `name`.
    pub fn writable(name: &str) -> Option<Kind> {
        Kind::from_name(name).filter(|k| k.info().write)
    }

    /// The Kubernetes kind name.
    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// API group.
    pub fn group(self) -> &'static str {
        self.info().group
    }

    /// `group/version`, or the version alone in the core group.
    pub fn api_version(self) -> String {
        let i = self.info();
        if i.group.is_empty() {
            i.version.to_string()
        } else {
            format!("{}/{}", i.group, i.version)
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn namespaced(self) -> bool {
        self.info().scope == Scope::Namespaced
    }

    /// How objects of this kind enter the inventory.
    pub fn held(self) -> Held {
        self.info().held
    }

    /// See [`KindInfo::compared`].
    pub fn compared(self) -> bool {
        self.info().compared
    }

    /// The name of the CRD that serves this kind (`plural.group`); `None` for built-in kinds.
    pub fn crd_name(self) -> Option<String> {
        let i = self.info();
        (!BUILT_IN_GROUPS.contains(&i.group)).then(|| format!("{}.{}", i.plural, i.group))
    }

    /// What `kube::Api` needs to address the kind.
    pub fn api_resource(self) -> ApiResource {
        let i = self.info();
        let gvk = GroupVersionKind::gvk(i.group, i.version, i.name);
        ApiResource::from_gvk_with_plural(&gvk, i.plural)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The [`Kind`] of a typed object.
pub trait Typed {
    /// Its kind.
    const KIND: Kind;
}

macro_rules! typed {
    ($($t:ty => $k:ident),* $(,)?) => {
        $(impl Typed for $t {
            const KIND: Kind = Kind::$k;
        })*
    };
}

typed!(
    Namespace => Namespace,
    Service => Service,
    Pod => Pod,
    Deployment => Deployment,
    StatefulSet => StatefulSet,
    DaemonSet => DaemonSet,
    ReplicaSet => ReplicaSet,
    AuthorizationPolicy => AuthorizationPolicy,
    PeerAuthentication => PeerAuthentication,
    RequestAuthentication => RequestAuthentication,
    VirtualService => VirtualService,
    DestinationRule => DestinationRule,
    Sidecar => Sidecar,
    EnvoyFilter => EnvoyFilter,
    Telemetry => Telemetry,
    WasmPlugin => WasmPlugin,
    WorkloadEntry => WorkloadEntry,
    WorkloadGroup => WorkloadGroup,
    ServiceEntry => ServiceEntry,
    Istio => Istio,
    IstioCni => IstioCni,
    ZTunnel => ZTunnel,
    crate::gateway::Gateway => Gateway,
    crate::gateway::HTTPRoute => HttpRoute,
    crate::gateway::ReferenceGrant => ReferenceGrant,
    ConfigMap => ConfigMap,
    Secret => Secret,
    CustomResourceDefinition => CustomResourceDefinition,
    crate::MeshMigration => MeshMigration,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_indexed_by_kind_and_names_are_unique() {
        for (i, k) in Kind::ALL.into_iter().enumerate() {
            assert_eq!(k as usize, i, "{k:?}");
            assert_eq!(k.info().kind, k);
            assert_eq!(Kind::from_name(k.name()), Some(k));
        }
    }

    /// Every row agrees with the `kube::Resource` implementation of its type; the version
    /// of ReferenceGrant apart (see the table).
    #[test]
    fn rows_match_the_types() {
        fn check<K: kube::Resource<DynamicType = ()> + Typed>()
        where
            K::Scope: ScopeOf,
        {
            let i = K::KIND.info();
            assert_eq!(i.group, K::group(&()), "{:?}", K::KIND);
            assert_eq!(i.name, K::kind(&()), "{:?}", K::KIND);
            assert_eq!(i.plural, K::plural(&()), "{:?}", K::KIND);
            assert_eq!(i.scope, <K::Scope as ScopeOf>::SCOPE, "{:?}", K::KIND);
            if K::KIND != Kind::ReferenceGrant {
                assert_eq!(i.version, K::version(&()), "{:?}", K::KIND);
                assert_eq!(K::KIND.api_version(), K::api_version(&()), "{:?}", K::KIND);
            }
        }
        macro_rules! check_all {
            ($($t:ty),*) => { 0 $( + { check::<$t>(); 1 } )* };
        }
        let checked = check_all!(
            Namespace,
            Service,
            Pod,
            Deployment,
            StatefulSet,
            DaemonSet,
            ReplicaSet,
            AuthorizationPolicy,
            PeerAuthentication,
            RequestAuthentication,
            VirtualService,
            DestinationRule,
            Sidecar,
            EnvoyFilter,
            Telemetry,
            WasmPlugin,
            WorkloadEntry,
            WorkloadGroup,
            ServiceEntry,
            Istio,
            IstioCni,
            ZTunnel,
            crate::gateway::Gateway,
            crate::gateway::HTTPRoute,
            crate::gateway::ReferenceGrant,
            ConfigMap,
            Secret,
            CustomResourceDefinition,
            crate::MeshMigration
        );
        assert_eq!(checked, Kind::ALL.len());
        assert_eq!(
            Kind::ReferenceGrant.api_version(),
            "gateway.networking.k8s.io/v1beta1"
        );
    }

    /// The lists the registries held before they read the table.
    #[test]
    fn flags_keep_the_registries_lists() {
        let with = |f: fn(&KindInfo) -> bool| -> Vec<&str> {
            let mut v: Vec<&str> = TABLE.iter().filter(|i| f(i)).map(|i| i.name).collect();
            v.sort_unstable();
            v
        };
        assert_eq!(
            with(|i| i.write),
            [
                "AuthorizationPolicy",
                "ConfigMap",
                "DaemonSet",
                "Deployment",
                "DestinationRule",
                "Gateway",
                "HTTPRoute",
                "Istio",
                "IstioCNI",
                "Namespace",
                "PeerAuthentication",
                "Pod",
                "ReferenceGrant",
                "RequestAuthentication",
                "Service",
                "StatefulSet",
                "Telemetry",
                "VirtualService",
                "WasmPlugin",
                "ZTunnel"
            ]
        );
        assert_eq!(
            with(|i| i.compared),
            [
                "AuthorizationPolicy",
                "DestinationRule",
                "Gateway",
                "HTTPRoute",
                "RequestAuthentication",
                "Service",
                "Telemetry",
                "VirtualService",
                "WasmPlugin"
            ]
        );
        assert_eq!(
            with(|i| i.held != Held::Listed),
            ["ConfigMap", "ReferenceGrant", "Secret"]
        );
    }

    #[test]
    fn lookups() {
        assert_eq!(
            Kind::from_group_kind("gateway.networking.k8s.io", "HTTPRoute"),
            Some(Kind::HttpRoute)
        );
        // An Istio Gateway is not the Gateway API's.
        assert_eq!(
            Kind::from_group_kind("networking.istio.io", "Gateway"),
            None
        );
        assert_eq!(Kind::writable("Secret"), None);
        assert_eq!(Kind::writable("ReferenceGrant"), Some(Kind::ReferenceGrant));
        assert_eq!(Kind::Pod.crd_name(), None);
        assert_eq!(
            Kind::WasmPlugin.crd_name().as_deref(),
            Some("wasmplugins.extensions.istio.io")
        );
        assert_eq!(Kind::Deployment.api_version(), "apps/v1");
        assert!(!Kind::Istio.namespaced());
        let ar = Kind::EnvoyFilter.api_resource();
        assert_eq!(ar.api_version, "networking.istio.io/v1alpha3");
        assert_eq!(ar.plural, "envoyfilters");
    }
}
