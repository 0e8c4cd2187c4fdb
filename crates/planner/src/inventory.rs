//! The Inventory: a typed snapshot of everything the planner looks at.
//!
//! The offline CLI fills it from YAML files; the operator fills it from reflector stores. The
//! planner never sees a client. Secrets are reduced to their metadata on entry, so secret data
//! can never reach a plan, a log or a snapshot.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use meshmig_api::MeshMigration;
use meshmig_api::gateway::{Gateway, HTTPRoute};
use meshmig_api::istio::{
    AuthorizationPolicy, DestinationRule, EnvoyFilter, PeerAuthentication, RequestAuthentication,
    ServiceEntry, Sidecar, Telemetry, VirtualService, WasmPlugin, WorkloadEntry, WorkloadGroup,
};
use meshmig_api::kinds::{Held, Kind};
use meshmig_api::names::istio as n;
use meshmig_api::sail::{Istio, IstioCni, ZTunnel};
use serde_json::Value;
use serde_json::value::RawValue;
use thiserror::Error;

use crate::json::{self, JsonDocument};
use crate::object::ObjectRef;
use crate::{documents, parallel};

/// What the planner needs of a Pod. Built from a full Pod (offline) or from its metadata only
/// (the operator watches Pods metadata-only): everything that decides a plan or a check is in
/// labels and annotations, and spec-derived fields are `None` when unknown.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodInfo {
    /// Metadata (labels, annotations, owner references).
    pub metadata: ObjectMeta,
    /// `spec.hostNetwork`, when known.
    pub host_network: Option<bool>,
    /// Container names, when known.
    pub containers: Option<Vec<String>>,
    /// Whether the `istio-proxy` sidecar speaks HBONE (from `PROXY_CONFIG`), when known.
    pub proxy_hbone: Option<bool>,
    /// `status.phase`, when known.
    pub phase: Option<String>,
}

impl PodInfo {
    /// From a full Pod.
    pub fn from_pod(pod: &Pod) -> Self {
        let spec = pod.spec.as_ref();
        let proxy = spec.and_then(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
                .find(|c| c.name == n::PROXY_CONTAINER)
        });
        Self {
            metadata: pod.metadata.clone(),
            host_network: spec.map(|s| s.host_network.unwrap_or(false)),
            containers: spec.map(|s| s.containers.iter().map(|c| c.name.clone()).collect()),
            proxy_hbone: proxy.map(|c| {
                c.env.iter().flatten().any(|e| {
                    (e.name == n::PROXY_CONFIG_ENV
                        && e.value.as_deref().is_some_and(proxy_config_enables_hbone))
                        || (e.name == n::ENABLE_HBONE && e.value.as_deref() == Some("true"))
                })
            }),
            phase: pod.status.as_ref().and_then(|s| s.phase.clone()),
        }
    }

    /// From metadata only.
    pub fn from_meta(metadata: ObjectMeta) -> Self {
        Self {
            metadata,
            ..Default::default()
        }
    }

    /// Whether the pod runs an injected sidecar.
    pub fn has_sidecar(&self) -> bool {
        annotation(&self.metadata, n::SIDECAR_STATUS).is_some()
            || self
                .containers
                .as_ref()
                .is_some_and(|c| c.iter().any(|c| c == n::PROXY_CONTAINER))
    }

    /// Whether the sidecar speaks HBONE: the injector's tunnel label or the proxy config.
    pub fn sidecar_hbone(&self) -> bool {
        label(&self.metadata, n::TUNNEL) == Some("http") || self.proxy_hbone == Some(true)
    }
}

/// Whether a `PROXY_CONFIG` value (JSON, or YAML) sets `ISTIO_META_ENABLE_HBONE` to true.
pub fn proxy_config_enables_hbone(config: &str) -> bool {
    let parsed: Option<Value> = serde_json::from_str(config)
        .ok()
        .or_else(|| serde_saphyr::from_str(config).ok());
    parsed
        .as_ref()
        .and_then(|v| v.get("proxyMetadata"))
        .and_then(|m| m.get(n::ENABLE_HBONE))
        .is_some_and(|v| v.as_str() == Some("true") || v.as_bool() == Some(true))
}

/// A label value.
pub fn label<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.labels.as_ref()?.get(key).map(String::as_str)
}

/// An annotation value.
pub fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// A CRD the inventory saw (name and Gateway API channel annotation).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CrdInfo {
    /// `gateway.networking.k8s.io/channel` annotation, if any.
    pub channel: Option<String>,
    /// `gateway.networking.k8s.io/bundle-version` annotation (e.g. `v1.6.3`), if any.
    pub bundle_version: Option<String>,
}

impl CrdInfo {
    /// Gateway API's annotation naming the channel a CRD comes from.
    pub const CHANNEL: &'static str = "gateway.networking.k8s.io/channel";
    /// Gateway API's annotation naming the release a CRD comes from.
    pub const BUNDLE_VERSION: &'static str = "gateway.networking.k8s.io/bundle-version";

    /// From a CRD's annotations (looked up by name).
    pub fn from_annotations<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Self {
        Self {
            channel: get(Self::CHANNEL).map(str::to_string),
            bundle_version: get(Self::BUNDLE_VERSION).map(str::to_string),
        }
    }
}

/// A typed snapshot of the cluster objects the planner reasons about.
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    /// Namespaces by name.
    pub namespaces: BTreeMap<String, Namespace>,
    /// Services.
    pub services: Vec<Service>,
    /// Pods (see [`PodInfo`]).
    pub pods: Vec<PodInfo>,
    /// Deployments.
    pub deployments: Vec<Deployment>,
    /// StatefulSets.
    pub stateful_sets: Vec<StatefulSet>,
    /// DaemonSets.
    pub daemon_sets: Vec<DaemonSet>,
    /// ReplicaSets (to attribute Pods to Deployments).
    pub replica_sets: Vec<ReplicaSet>,
    /// AuthorizationPolicies.
    pub authorization_policies: Vec<AuthorizationPolicy>,
    /// PeerAuthentications.
    pub peer_authentications: Vec<PeerAuthentication>,
    /// RequestAuthentications.
    pub request_authentications: Vec<RequestAuthentication>,
    /// VirtualServices.
    pub virtual_services: Vec<VirtualService>,
    /// DestinationRules.
    pub destination_rules: Vec<DestinationRule>,
    /// Sidecar resources.
    pub sidecars: Vec<Sidecar>,
    /// EnvoyFilters.
    pub envoy_filters: Vec<EnvoyFilter>,
    /// Telemetry resources.
    pub telemetries: Vec<Telemetry>,
    /// WasmPlugins.
    pub wasm_plugins: Vec<WasmPlugin>,
    /// WorkloadEntries.
    pub workload_entries: Vec<WorkloadEntry>,
    /// WorkloadGroups.
    pub workload_groups: Vec<WorkloadGroup>,
    /// ServiceEntries.
    pub service_entries: Vec<ServiceEntry>,
    /// Gateway API Gateways (waypoints included).
    pub gateways: Vec<Gateway>,
    /// Gateway API HTTPRoutes.
    pub http_routes: Vec<HTTPRoute>,
    /// Sail Istio resources.
    pub istios: Vec<Istio>,
    /// Sail IstioCNI resources.
    pub istio_cnis: Vec<IstioCni>,
    /// Sail ZTunnel resources.
    pub ztunnels: Vec<ZTunnel>,
    /// ConfigMaps that matter to the plan (Cilium and Istio configuration).
    pub config_maps: Vec<ConfigMap>,
    /// Metadata of Secrets labelled `istio/multiCluster=true` (data is dropped on entry).
    pub multicluster_secrets: Vec<ObjectMeta>,
    /// CRDs by name, when CRDs were part of the input.
    pub crds: Option<BTreeMap<String, CrdInfo>>,
    /// MeshMigration objects found in the input.
    pub mesh_migrations: Vec<MeshMigration>,
    /// Kinds that were skipped, with counts (`group/Kind`).
    pub skipped: BTreeMap<String, usize>,
    /// Namespaces and CRDs loaded twice with different contents (their maps hold one of
    /// each name); reported by [`Inventory::dedup`].
    conflicts: Vec<ObjectRef>,
}

/// Why an input could not be loaded.
#[derive(Debug, Error, PartialEq)]
pub enum LoadError {
    /// The text is not valid YAML.
    #[error("{source_name}{}: invalid YAML: {message}", position(*.line, *.column))]
    Yaml {
        /// File or stream name.
        source_name: String,
        /// 1-based line, 0 when unknown.
        line: u64,
        /// 1-based column, 0 when unknown.
        column: u64,
        /// What is wrong, without a position (the line above is the only one).
        message: String,
    },
    /// The text is a Helm chart template, not its output.
    #[error(
        "{source_name}{}: looks like an unrendered Helm template (`{template}`): run `helm template` first and plan its output",
        position(*.line, 0)
    )]
    HelmTemplate {
        /// File or stream name.
        source_name: String,
        /// 1-based line of the first template, 0 when unknown.
        line: u64,
        /// The template, e.g. `{{ .Values.name }}`.
        template: String,
    },
    /// A document is not a Kubernetes object.
    #[error("{source_name}: document {document} is not a Kubernetes object: {message}")]
    NotKubernetes {
        /// File or stream name.
        source_name: String,
        /// 1-based document index.
        document: usize,
        /// What is missing.
        message: String,
    },
    /// A Kubernetes object has fields of the wrong type.
    #[error("{source_name}: {object}: {message}")]
    Invalid {
        /// File or stream name.
        source_name: String,
        /// `Kind/namespace/name`.
        object: String,
        /// Decoder message.
        message: String,
    },
    /// The input gives one object (kind, namespace and name) more than once, with different
    /// contents: which copy to plan is not meshmig's guess.
    #[error(
        "{object} is given {} with different contents: {}; keep one (identical copies are loaded once)",
        times(.origins.len()),
        places(.origins)
    )]
    Conflict {
        /// `Kind/namespace/name`.
        object: String,
        /// Where each copy is.
        origins: Vec<Origin>,
    },
}

/// `:line:column`, `:line`, or nothing when unknown.
fn position(line: u64, column: u64) -> String {
    match (line, column) {
        (0, _) => String::new(),
        (l, 0) => format!(":{l}"),
        (l, c) => format!(":{l}:{c}"),
    }
}

/// "twice", "3 times"; "more than once" when not every copy was found again.
fn times(n: usize) -> String {
    match n {
        0 | 1 => "more than once".into(),
        2 => "twice".into(),
        n => format!("{n} times"),
    }
}

/// "a, b and c".
fn places(origins: &[Origin]) -> String {
    let all: Vec<String> = origins.iter().map(Origin::to_string).collect();
    match all.split_last() {
        None => "the inputs could not be read again to say where".into(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

/// Where an object was read: file, line and number of its document, and its item when the
/// document is a `List`. Printed `a.yaml:14 (document 2)` or `a.json:1 (document 1, item 7)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// File or stream name.
    pub source_name: String,
    /// 1-based document index in the file.
    pub document: usize,
    /// 1-based line on which the document starts.
    pub line: u64,
    /// 1-based index in the document's `items`, when it is a `List`.
    pub item: Option<usize>,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{} (document {}",
            self.source_name, self.line, self.document
        )?;
        if let Some(item) = self.item {
            write!(f, ", item {item}")?;
        }
        write!(f, ")")
    }
}

/// The YAML parser's options: budgets for exports of hundreds of MB; a repeated key is an
/// error unless `first_wins` (only to name the object of that error).
fn yaml_options(first_wins: bool) -> serde_saphyr::Options {
    let duplicate_keys = if first_wins {
        serde_saphyr::DuplicateKeyPolicy::FirstWins
    } else {
        serde_saphyr::DuplicateKeyPolicy::Error
    };
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_events: 200_000_000,
            max_nodes: 200_000_000,
            max_total_scalar_bytes: 4_000_000_000,
            max_documents: 10_000_000,
        },
        duplicate_keys: duplicate_keys,
    }
}

/// The YAML parser's error for `part`, at its line in the whole text. The parser's own text
/// is not used whole: it repeats the position relative to the part (a second, different line
/// number) and speaks to programmers ("set DuplicateKeyPolicy in Options").
fn yaml_error(e: &serde_saphyr::Error, part: &documents::Part<'_>, source_name: &str) -> LoadError {
    use serde_saphyr::MessageFormatter;
    let location = e.location().filter(|l| l.line() > 0);
    let line_in_part = location.map_or(0, |l| l.line());
    let column = location.map_or(0, |l| l.column());
    let message = match e.without_snippet() {
        serde_saphyr::Error::DuplicateMappingKey { key, .. } => {
            duplicate_key_message(part, key.as_deref(), line_in_part, column)
        }
        inner => serde_saphyr::UserMessageFormatter
            .format_message(inner)
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect(),
    };
    LoadError::Yaml {
        source_name: source_name.to_string(),
        line: location.map_or(0, |_| line_in_part + part.first_line - 1),
        column,
        message,
    }
}

/// Which key is repeated, where its first occurrence is, and in which object.
fn duplicate_key_message(
    part: &documents::Part<'_>,
    key: Option<&str>,
    line_in_part: u64,
    column: u64,
) -> String {
    let object = object_of_part(part)
        .map(|o| format!("{o}: "))
        .unwrap_or_default();
    let Some(key) = key else {
        return format!("{object}a key is repeated in one mapping; keep one");
    };
    let first = first_key_line(part.text, key, line_in_part, column)
        .map(|l| format!(" (first on line {})", l + part.first_line - 1))
        .unwrap_or_default();
    format!("{object}key `{key}` is repeated in one mapping{first}; keep one")
}

/// `Kind/namespace/name` of a part that is one object, read keeping the first of repeated
/// keys. Large parts (a `List` export) are not parsed again for it.
fn object_of_part(part: &documents::Part<'_>) -> Option<String> {
    if part.text.len() > json::LARGE_JSON {
        return None;
    }
    let docs: Vec<Value> =
        serde_saphyr::from_multiple_with_options(part.text, yaml_options(true)).ok()?;
    let [doc] = docs.as_slice() else {
        return None;
    };
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
    let kind = text(doc.get("kind"));
    if kind.is_empty() || (kind.ends_with("List") && doc.get("items").is_some()) {
        return None;
    }
    let meta = doc.get("metadata");
    Some(format!(
        "{kind}/{}/{}",
        text(meta.and_then(|m| m.get("namespace"))),
        text(meta.and_then(|m| m.get("name")))
    ))
}

/// The earlier line (1-based, in `text`) of the block mapping that holds `key` at the same
/// column as the repeated one at `line`/`column`, if it is written in block style.
fn first_key_line(text: &str, key: &str, line: u64, column: u64) -> Option<u64> {
    let lines: Vec<&str> = text.lines().collect();
    let index = usize::try_from(line).ok()?.checked_sub(1)?;
    let want = usize::try_from(column).ok()?.checked_sub(1)?;
    for (i, l) in lines.get(..index)?.iter().enumerate().rev() {
        let (col, item, rest) = key_start(l);
        if rest.is_empty() || rest.starts_with('#') || col > want {
            continue;
        }
        let named = [
            format!("{key}:"),
            format!("\"{key}\":"),
            format!("'{key}':"),
        ]
        .iter()
        .any(|k| rest.starts_with(k.as_str()));
        if col == want && named {
            return Some(i as u64 + 1);
        }
        if col < want || item {
            // Left the mapping: a less indented key, or the `- ` line its list item starts on.
            return None;
        }
    }
    None
}

/// Column (0-based) of where a block line's key starts, after indentation and list markers
/// (`- - key: v`), whether there was a marker, and the text from the key on.
fn key_start(line: &str) -> (usize, bool, &str) {
    let mut rest = line.trim_start();
    let mut item = false;
    while let Some(r) = rest
        .strip_prefix('-')
        .filter(|r| r.starts_with([' ', '\t']))
    {
        rest = r.trim_start();
        item = true;
    }
    (line.len() - rest.len(), item, rest)
}

/// The order of [`Inventory::sort`]: namespace, then name (absent ones as empty).
fn sort_key(m: &ObjectMeta) -> (&str, &str) {
    (
        m.namespace.as_deref().unwrap_or_default(),
        m.name.as_deref().unwrap_or_default(),
    )
}

/// Calls `$m!` with every list of objects that have `metadata` (all but the multicluster
/// Secrets), so sorting and its check cannot drift apart.
macro_rules! object_lists {
    ($m:ident) => {
        $m!(
            services,
            deployments,
            stateful_sets,
            daemon_sets,
            replica_sets,
            authorization_policies,
            peer_authentications,
            request_authentications,
            virtual_services,
            destination_rules,
            sidecars,
            envoy_filters,
            telemetries,
            wasm_plugins,
            workload_entries,
            workload_groups,
            service_entries,
            gateways,
            http_routes,
            istios,
            istio_cnis,
            ztunnels,
            config_maps,
            mesh_migrations,
            pods
        )
    };
}

/// Calls `$m!` with every [`Kind`] the inventory holds as a list of its typed objects, and
/// that list: loading, writing out, finding and deduplicating them read this one list.
macro_rules! typed_lists {
    ($m:ident) => {
        $m!(
            Service: services,
            Deployment: deployments,
            StatefulSet: stateful_sets,
            DaemonSet: daemon_sets,
            ReplicaSet: replica_sets,
            AuthorizationPolicy: authorization_policies,
            PeerAuthentication: peer_authentications,
            RequestAuthentication: request_authentications,
            VirtualService: virtual_services,
            DestinationRule: destination_rules,
            Sidecar: sidecars,
            EnvoyFilter: envoy_filters,
            Telemetry: telemetries,
            WasmPlugin: wasm_plugins,
            WorkloadEntry: workload_entries,
            WorkloadGroup: workload_groups,
            ServiceEntry: service_entries,
            Istio: istios,
            IstioCni: istio_cnis,
            ZTunnel: ztunnels,
            Gateway: gateways,
            HttpRoute: http_routes,
            ConfigMap: config_maps,
            MeshMigration: mesh_migrations
        )
    };
}

impl Inventory {
    /// Loads every Kubernetes object of a (multi-document) YAML or JSON text. `kind: List`
    /// and `*List` documents (`kubectl get … -o yaml`) are expanded; kinds the planner does not
    /// use are counted in [`Inventory::skipped`]. Large texts are parsed on every core (see
    /// [`crate::documents`]); the result, errors included, is the same as parsing in order.
    pub fn load_str(&mut self, text: &str, source_name: &str) -> Result<usize, LoadError> {
        self.load_text(text, source_name)
            .map_err(|e| e.explained_by_templates(text))
    }

    /// [`Inventory::load_str`] without the Helm template diagnosis.
    fn load_text(&mut self, text: &str, source_name: &str) -> Result<usize, LoadError> {
        let parts = documents::split(text);
        let threads = parallel::threads_for(text.len(), 1 << 20);
        if threads == 1 {
            return self.load_parts(&parts, source_name).map(|(n, _)| n);
        }
        let runs = documents::balance(&parts, threads);
        let results: Vec<Result<(Inventory, usize, usize), LoadError>> =
            parallel::on_threads(&runs, |run| {
                let mut inv = Inventory::default();
                inv.load_parts(run, source_name)
                    .map(|(objects, documents)| (inv, objects, documents))
            });
        // Documents are numbered across the whole text, as if parsed in one go.
        let mut documents_before = 0;
        let mut objects = 0;
        for r in results {
            match r {
                Ok((inv, n, docs)) => {
                    self.append(inv);
                    objects += n;
                    documents_before += docs;
                }
                Err(LoadError::NotKubernetes {
                    source_name,
                    document,
                    message,
                }) => {
                    return Err(LoadError::NotKubernetes {
                        source_name,
                        document: document + documents_before,
                        message,
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Ok(objects)
    }

    /// Loads consecutive parts of one text; returns the objects and documents read.
    fn load_parts(
        &mut self,
        parts: &[documents::Part<'_>],
        source_name: &str,
    ) -> Result<(usize, usize), LoadError> {
        let mut documents = 0;
        let mut count = 0;
        for part in parts {
            match json::document(part.text) {
                Some(JsonDocument::Object(doc)) => {
                    documents += 1;
                    count += self.add_document(doc, source_name, documents)?;
                    continue;
                }
                Some(JsonDocument::List(items)) => {
                    if let Some(n) = self.add_json_items(&items, source_name, documents + 1)? {
                        documents += 1;
                        count += n;
                        continue;
                    }
                }
                None => {}
            }
            let docs: Vec<Value> =
                serde_saphyr::from_multiple_with_options(part.text, yaml_options(false))
                    .map_err(|e| yaml_error(&e, part, source_name))?;
            for doc in docs {
                documents += 1;
                if doc.is_null() {
                    continue;
                }
                count += self.add_document(doc, source_name, documents)?;
            }
        }
        Ok((count, documents))
    }

    /// Moves every object of `other` into `self`, after its own (a later Namespace of the
    /// same name wins, as when loading in order).
    fn append(&mut self, mut other: Inventory) {
        macro_rules! lists {
            ($($v:ident),*) => { $( self.$v.append(&mut other.$v); )* };
        }
        object_lists!(lists);
        self.multicluster_secrets
            .append(&mut other.multicluster_secrets);
        self.conflicts.append(&mut other.conflicts);
        for ns in std::mem::take(&mut other.namespaces).into_values() {
            self.insert_namespace(ns);
        }
        for (name, info) in other.crds.into_iter().flatten() {
            self.insert_crd(name, info);
        }
        for (k, n) in other.skipped {
            *self.skipped.entry(k).or_default() += n;
        }
    }

    /// Adds the items of a JSON list (document number `document`), parsed on every core;
    /// the same objects in the same order, and the same first error, as one by one.
    /// `Ok(None)`, with nothing added, when an item is not for the JSON reader (see
    /// [`json::strict`]): the YAML parser must read the whole document, as it would have
    /// refused it before adding anything.
    fn add_json_items(
        &mut self,
        items: &[&RawValue],
        source_name: &str,
        document: usize,
    ) -> Result<Option<usize>, LoadError> {
        let threads = parallel::threads_for(items.len(), 256);
        // Per chunk: `None` when an item is not for the JSON reader, else the objects
        // added up to the first error and that error. Items after an error are still read,
        // as the YAML parser would have refused any of them first.
        let add = |chunk: &[&RawValue]| {
            let mut inv = Inventory::default();
            let mut count = 0;
            let mut error = None;
            for raw in chunk {
                let item = json::strict(raw.get())?;
                if error.is_none() {
                    match inv.add_document(item, source_name, document) {
                        Ok(n) => count += n,
                        Err(e) => error = Some(e),
                    }
                }
            }
            Some((inv, count, error))
        };
        let results: Vec<Option<(Inventory, usize, Option<LoadError>)>> = if threads == 1 {
            vec![add(items)]
        } else {
            let chunks: Vec<&[&RawValue]> = items.chunks(items.len().div_ceil(threads)).collect();
            parallel::on_threads(&chunks, |chunk| add(chunk))
        };
        let Some(results) = results.into_iter().collect::<Option<Vec<_>>>() else {
            return Ok(None);
        };
        let mut count = 0;
        for (inv, n, error) in results {
            self.append(inv);
            count += n;
            if let Some(e) = error {
                return Err(e);
            }
        }
        Ok(Some(count))
    }

    fn add_document(
        &mut self,
        doc: Value,
        source_name: &str,
        document: usize,
    ) -> Result<usize, LoadError> {
        let not_k8s = |message: &str| LoadError::NotKubernetes {
            source_name: source_name.to_string(),
            document,
            message: message.to_string(),
        };
        let Value::Object(mut map) = doc else {
            return Err(not_k8s("expected a mapping with apiVersion and kind"));
        };
        let kind = map.get("kind").and_then(Value::as_str).unwrap_or_default();
        let api_version = map
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if kind.is_empty() || api_version.is_empty() {
            return Err(not_k8s("apiVersion and kind are required"));
        }
        let list = kind.ends_with("List") && map.get("items").is_some_and(Value::is_array);
        if list && let Some(Value::Array(items)) = map.remove("items") {
            let mut count = 0;
            for item in items {
                count += self.add_document(item, source_name, document)?;
            }
            return Ok(count);
        }
        self.add_object(Value::Object(map), source_name).map(|()| 1)
    }

    /// Adds one object given as JSON.
    pub fn add_object(&mut self, mut obj: Value, source_name: &str) -> Result<(), LoadError> {
        strip_unread_metadata(&mut obj);
        let str_at = |o: &Value, p: &str| {
            o.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let kind_name = str_at(&obj, "/kind");
        let api_version = str_at(&obj, "/apiVersion");
        let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        let object = format!(
            "{kind_name}/{}/{}",
            str_at(&obj, "/metadata/namespace"),
            str_at(&obj, "/metadata/name")
        );
        // No Kubernetes name holds a brace: this is a chart's template, not its output.
        if object.contains("{{") {
            return Err(LoadError::HelmTemplate {
                source_name: source_name.to_string(),
                line: 0,
                template: documents::template_of(&object),
            });
        }
        let invalid = |e: serde_json::Error| LoadError::Invalid {
            source_name: source_name.to_string(),
            object: object.clone(),
            message: e.to_string(),
        };
        match Kind::from_group_kind(group, &kind_name) {
            Some(kind) if kind.held() != Held::Not => self.add_held(kind, obj).map_err(invalid),
            _ => {
                let key = if group.is_empty() {
                    kind_name
                } else {
                    format!("{group}/{kind_name}")
                };
                *self.skipped.entry(key).or_default() += 1;
                Ok(())
            }
        }
    }

    /// Adds an object of a kind the inventory holds.
    fn add_held(&mut self, kind: Kind, obj: Value) -> Result<(), serde_json::Error> {
        macro_rules! typed {
            ($($k:ident: $v:ident),*) => {
                match kind {
                    $(Kind::$k => self.$v.push(decode(obj)?),)*
                    Kind::Namespace => self.insert_namespace(decode(obj)?),
                    Kind::Pod => self.pods.push(PodInfo::from_pod(&decode(obj)?)),
                    Kind::Secret => self.add_secret(&obj)?,
                    Kind::CustomResourceDefinition => {
                        let name = obj.pointer("/metadata/name").and_then(Value::as_str);
                        let name = name.unwrap_or_default().to_string();
                        let annotations = obj.pointer("/metadata/annotations");
                        let info = CrdInfo::from_annotations(|k| annotations?.get(k)?.as_str());
                        self.insert_crd(name, info);
                    }
                    Kind::ReferenceGrant => {}
                }
            };
        }
        typed_lists!(typed);
        Ok(())
    }

    /// Keeps the metadata of a remote-cluster Secret; data never enters.
    fn add_secret(&mut self, obj: &Value) -> Result<(), serde_json::Error> {
        let meta: ObjectMeta = obj
            .get("metadata")
            .cloned()
            .map(serde_json::from_value)
            .transpose()?
            .unwrap_or_default();
        if label(&meta, n::MULTICLUSTER_SECRET) == Some("true") {
            self.multicluster_secrets.push(ObjectMeta {
                name: meta.name,
                namespace: meta.namespace,
                labels: meta.labels,
                ..Default::default()
            });
        } else {
            *self.skipped.entry(Kind::Secret.name().into()).or_default() += 1;
        }
        Ok(())
    }

    /// Adds a Namespace; a later one of the same name replaces it, as when loading in order,
    /// and is a conflict when it differs (see [`Inventory::dedup`]).
    fn insert_namespace(&mut self, ns: Namespace) {
        let name = ns.metadata.name.clone().unwrap_or_default();
        if let Some(old) = self.namespaces.insert(name.clone(), ns)
            && Some(&old) != self.namespaces.get(&name)
        {
            self.conflicts.push(ObjectRef::namespace(&name));
        }
    }

    /// Adds a CRD, like [`Inventory::insert_namespace`].
    fn insert_crd(&mut self, name: String, info: CrdInfo) {
        let crds = self.crds.get_or_insert_with(BTreeMap::new);
        if let Some(old) = crds.insert(name.clone(), info)
            && Some(&old) != crds.get(&name)
        {
            self.conflicts
                .push(ObjectRef::new("CustomResourceDefinition", None, &name));
        }
    }

    /// Sorts (see [`Inventory::sort`]) and keeps one copy of every object that was loaded
    /// more than once identically: exports of overlapping selections (`kubectl get` of a
    /// namespace and of a kind) repeat objects. Returns the objects loaded more than once
    /// with different contents, sorted; both copies stay, so the caller must refuse the
    /// input. Copies are compared as loaded: without managed fields and kubectl's
    /// last-applied annotation, a Pod as its [`PodInfo`], a status that does not decode
    /// dropped.
    pub fn dedup(&mut self) -> Vec<ObjectRef> {
        self.sort();
        let mut conflicts = std::mem::take(&mut self.conflicts);
        macro_rules! dedup_lists {
            ($($k:ident: $v:ident),*) => {
                $( dedup_sorted(&mut self.$v, |o| &o.metadata, Kind::$k.name(), &mut conflicts); )*
            };
        }
        typed_lists!(dedup_lists);
        dedup_sorted(
            &mut self.pods,
            |o| &o.metadata,
            Kind::Pod.name(),
            &mut conflicts,
        );
        dedup_sorted(
            &mut self.multicluster_secrets,
            |m| m,
            Kind::Secret.name(),
            &mut conflicts,
        );
        conflicts.sort();
        conflicts.dedup();
        conflicts
    }

    /// Number of objects held (skipped kinds excluded).
    pub fn len(&self) -> usize {
        self.namespaces.len()
            + self.services.len()
            + self.pods.len()
            + self.deployments.len()
            + self.stateful_sets.len()
            + self.daemon_sets.len()
            + self.replica_sets.len()
            + self.authorization_policies.len()
            + self.peer_authentications.len()
            + self.request_authentications.len()
            + self.virtual_services.len()
            + self.destination_rules.len()
            + self.sidecars.len()
            + self.envoy_filters.len()
            + self.telemetries.len()
            + self.wasm_plugins.len()
            + self.workload_entries.len()
            + self.workload_groups.len()
            + self.service_entries.len()
            + self.gateways.len()
            + self.http_routes.len()
            + self.istios.len()
            + self.istio_cnis.len()
            + self.ztunnels.len()
            + self.config_maps.len()
            + self.multicluster_secrets.len()
            + self.crds.as_ref().map_or(0, BTreeMap::len)
            + self.mesh_migrations.len()
    }

    /// Whether nothing was loaded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sorts every list by namespace and name, so the plan does not depend on the order in
    /// which objects were listed or loaded.
    pub fn sort(&mut self) {
        // Borrowed keys: a sort compares O(n log n) times, and cloned keys cost two
        // allocations per comparison (1.4 s of 350,000 objects).
        fn cmp(a: &ObjectMeta, b: &ObjectMeta) -> std::cmp::Ordering {
            sort_key(a).cmp(&sort_key(b))
        }
        macro_rules! by_meta {
            ($($v:ident),*) => { $( self.$v.sort_by(|a, b| cmp(&a.metadata, &b.metadata)); )* };
        }
        object_lists!(by_meta);
        self.multicluster_secrets.sort_by(cmp);
    }

    /// Whether every list is sorted by namespace and name (see [`Inventory::sort`]).
    pub fn is_sorted(&self) -> bool {
        macro_rules! sorted {
            ($($v:ident),*) => { true $( && self.$v.windows(2).all(|w| sort_key(&w[0].metadata) <= sort_key(&w[1].metadata)) )* };
        }
        object_lists!(sorted)
            && self
                .multicluster_secrets
                .windows(2)
                .all(|w| sort_key(&w[0]) <= sort_key(&w[1]))
    }

    /// Every object as a Kubernetes object, such that loading them back
    /// ([`Inventory::add_object`]) gives an inventory that plans identically. Used to freeze
    /// the inventory a migration was planned from.
    pub fn to_objects(&self) -> Vec<Value> {
        let mut out = Vec::with_capacity(self.len());
        for kind in Kind::ALL {
            self.objects_of(kind, &mut out);
        }
        out
    }

    /// Adds the objects of `kind` to `out`, as [`Inventory::to_objects`] writes them.
    fn objects_of(&self, kind: Kind, out: &mut Vec<Value>) {
        let api_version = kind.api_version();
        let name = kind.name();
        macro_rules! typed {
            ($($k:ident: $v:ident),*) => {
                match kind {
                    $(Kind::$k => out.extend(self.$v.iter().map(|o| with_type(o, &api_version, name))),)*
                    Kind::Namespace => {
                        out.extend(self.namespaces.values().map(|o| with_type(o, &api_version, name)))
                    }
                    Kind::Pod => out.extend(self.pods.iter().map(pod_object)),
                    Kind::Secret => out.extend(self.multicluster_secrets.iter().map(|m| {
                        serde_json::json!({"apiVersion": api_version, "kind": name, "metadata": serde_json::to_value(m).unwrap_or(Value::Null)})
                    })),
                    Kind::CustomResourceDefinition => out.extend(
                        self.crds.iter().flatten().map(|(name, info)| crd_object(name, info)),
                    ),
                    Kind::ReferenceGrant => {}
                }
            };
        }
        typed_lists!(typed);
    }

    /// The object `o` as JSON, for the kinds checks compare with the live cluster
    /// ([`meshmig_api::kinds::KindInfo::compared`]): `Some(None)` when the inventory has no
    /// such object, `None` for other kinds.
    pub fn compared_object(&self, o: &ObjectRef) -> Option<Option<Value>> {
        let kind = Kind::from_name(&o.kind).filter(|k| k.compared())?;
        Some(self.find_typed(kind, o.namespace.as_deref(), &o.name))
    }

    /// An object of a kind held as a typed list (see `typed_lists!`), as JSON; `None` when
    /// there is no such object or the kind is held otherwise.
    pub fn find_typed(&self, kind: Kind, namespace: Option<&str>, name: &str) -> Option<Value> {
        fn find<T: serde::Serialize>(
            list: &[T],
            meta: impl Fn(&T) -> &ObjectMeta,
            namespace: Option<&str>,
            name: &str,
        ) -> Option<Value> {
            list.iter()
                .find(|x| {
                    let m = meta(x);
                    m.namespace.as_deref() == namespace && m.name.as_deref() == Some(name)
                })
                .and_then(|x| serde_json::to_value(x).ok())
        }
        macro_rules! typed {
            ($($k:ident: $v:ident),*) => {
                match kind {
                    $(Kind::$k => find(&self.$v, |x| &x.metadata, namespace, name),)*
                    _ => None,
                }
            };
        }
        typed_lists!(typed)
    }
}

/// An object as JSON, with the given `apiVersion` and `kind` where it has none.
fn with_type<T: serde::Serialize>(o: &T, api_version: &str, kind: &str) -> Value {
    let mut v = serde_json::to_value(o).unwrap_or(Value::Null);
    if let Some(m) = v.as_object_mut() {
        let missing = |m: &serde_json::Map<String, Value>, k: &str| {
            m.get(k).and_then(Value::as_str).is_none_or(str::is_empty)
        };
        if missing(m, "apiVersion") {
            m.insert("apiVersion".into(), api_version.into());
        }
        if missing(m, "kind") {
            m.insert("kind".into(), kind.into());
        }
    }
    v
}

/// A Pod as much as its [`PodInfo`] knows of it, such that loading it back gives the same.
fn pod_object(p: &PodInfo) -> Value {
    let mut containers: Vec<Value> = p
        .containers
        .iter()
        .flatten()
        .map(|c| serde_json::json!({"name": c}))
        .collect();
    if p.proxy_hbone == Some(true) {
        let proxy = serde_json::json!({"name": n::PROXY_CONTAINER, "env": [{
            "name": n::PROXY_CONFIG_ENV,
            "value": serde_json::json!({"proxyMetadata": {n::ENABLE_HBONE: "true"}}).to_string(),
        }]});
        containers.retain(|c| c["name"] != n::PROXY_CONTAINER);
        containers.push(proxy);
    }
    let mut pod = serde_json::json!({
        "apiVersion": Kind::Pod.api_version(),
        "kind": Kind::Pod.name(),
        "metadata": serde_json::to_value(&p.metadata).unwrap_or(Value::Null),
    });
    if p.containers.is_some() || p.host_network.is_some() {
        pod["spec"] = serde_json::json!({"hostNetwork": p.host_network.unwrap_or(false), "containers": containers});
    }
    if let Some(phase) = &p.phase {
        pod["status"] = serde_json::json!({"phase": phase});
    }
    pod
}

/// A CRD as much as its [`CrdInfo`] knows of it.
fn crd_object(name: &str, info: &CrdInfo) -> Value {
    let mut meta = serde_json::json!({"name": name});
    let mut annotations = serde_json::Map::new();
    for (k, v) in [
        (CrdInfo::CHANNEL, &info.channel),
        (CrdInfo::BUNDLE_VERSION, &info.bundle_version),
    ] {
        if let Some(v) = v {
            annotations.insert(k.into(), v.clone().into());
        }
    }
    if !annotations.is_empty() {
        meta["annotations"] = Value::Object(annotations);
    }
    let kind = Kind::CustomResourceDefinition;
    serde_json::json!({"apiVersion": kind.api_version(), "kind": kind.name(), "metadata": meta})
}

/// Drops what the planner never reads: exports (`kubectl get -o yaml`) carry managed fields
/// and kubectl's last-applied copy, often larger than the rest of the object.
fn strip_unread_metadata(obj: &mut Value) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
        if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            a.remove(meshmig_api::names::ANNOTATION_LAST_APPLIED);
        }
    }
}

/// A kind whose `status` is decoded apart from the rest (see [`decode`]).
trait WithStatus: serde::de::DeserializeOwned {
    /// Sets the status from its JSON; `None` when it does not decode.
    fn set_status(&mut self, status: Value);
}

// A ConfigMap has no status.
impl WithStatus for ConfigMap {
    fn set_status(&mut self, _: Value) {}
}

macro_rules! with_status {
    ($($t:ty),*) => {
        $(impl WithStatus for $t {
            fn set_status(&mut self, status: Value) {
                self.status = serde_json::from_value(status).unwrap_or(None);
            }
        })*
    };
}

with_status!(
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
    Gateway,
    HTTPRoute,
    Istio,
    IstioCni,
    ZTunnel,
    MeshMigration
);

/// Decodes an object, its `status` apart: a status that does not decode is dropped instead of
/// refusing the object. Statuses are written by controllers of versions meshmig does not know
/// (an HTTPRoute parent without `controllerName`), and the planner plans from specs: of a
/// status it reads only a Pod's phase.
fn decode<T: WithStatus>(mut obj: Value) -> Result<T, serde_json::Error> {
    let status = obj.as_object_mut().and_then(|m| m.remove("status"));
    let mut decoded: T = serde_json::from_value(obj)?;
    if let Some(status) = status {
        decoded.set_status(status);
    }
    Ok(decoded)
}

/// A reference to an object as loaded, an empty namespace as none.
fn object_ref(kind: &str, meta: &ObjectMeta) -> ObjectRef {
    let namespace = meta.namespace.as_deref().filter(|n| !n.is_empty());
    ObjectRef::new(kind, namespace, meta.name.as_deref().unwrap_or_default())
}

/// Removes the later of consecutive identical objects with the same namespace and name from
/// a sorted list; adds to `conflicts` those that differ (and keeps both).
fn dedup_sorted<T: PartialEq>(
    list: &mut Vec<T>,
    meta: impl Fn(&T) -> &ObjectMeta,
    kind: &str,
    conflicts: &mut Vec<ObjectRef>,
) {
    list.dedup_by(|later, earlier| {
        if sort_key(meta(later)) != sort_key(meta(earlier)) {
            return false;
        }
        if later != earlier {
            conflicts.push(object_ref(kind, meta(later)));
            return false;
        }
        true
    });
}

/// Where `text` holds one of `objects` (of the kinds an [`Inventory`] keeps), in text order.
/// The inventory keeps no origins (a 350,000-object export would pay for them on every
/// load), so an error about a loaded object reads its inputs again to say where it is.
/// Documents are numbered as when loading; a text that does not load yields what was found
/// before its error.
pub fn locate(text: &str, source_name: &str, objects: &[ObjectRef]) -> Vec<(ObjectRef, Origin)> {
    let mut found = Vec::new();
    let mut document = 0;
    for part in documents::split(text) {
        let line = documents::content_line(&part);
        let Some(docs) = part_documents(&part) else {
            break;
        };
        for doc in docs {
            document += 1;
            let origin = Origin {
                source_name: source_name.to_string(),
                document,
                line,
                item: None,
            };
            locate_in(doc, &origin, objects, &mut found);
        }
    }
    found
}

/// The documents of a part, read as when loading; `None` when it does not parse.
fn part_documents(part: &documents::Part<'_>) -> Option<Vec<Value>> {
    match json::document(part.text) {
        Some(JsonDocument::Object(doc)) => return Some(vec![doc]),
        Some(JsonDocument::List(items)) => {
            if let Some(items) = items.iter().map(|r| json::strict(r.get())).collect() {
                return Some(vec![
                    serde_json::json!({"apiVersion": "v1", "kind": "List", "items": Value::Array(items)}),
                ]);
            }
        }
        None => {}
    }
    serde_saphyr::from_multiple_with_options(part.text, yaml_options(false)).ok()
}

/// Adds `doc` (or each item of a `List`) to `found` when it is one of `objects`.
fn locate_in(
    doc: Value,
    origin: &Origin,
    objects: &[ObjectRef],
    found: &mut Vec<(ObjectRef, Origin)>,
) {
    let Value::Object(mut map) = doc else {
        return;
    };
    let kind = map
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if kind.ends_with("List")
        && origin.item.is_none()
        && let Some(Value::Array(items)) = map.remove("items")
    {
        for (i, item) in items.into_iter().enumerate() {
            let at = Origin {
                item: Some(i + 1),
                ..origin.clone()
            };
            locate_in(item, &at, objects, found);
        }
        return;
    }
    let Some(meta) = map
        .get("metadata")
        .and_then(|m| serde_json::from_value::<ObjectMeta>(m.clone()).ok())
    else {
        return;
    };
    let oref = object_ref(&kind, &meta);
    if !objects.contains(&oref) {
        return;
    }
    // Only what the inventory keeps: not an Istio `Gateway` for a Gateway API one.
    let mut probe = Inventory::default();
    if probe.add_object(Value::Object(map), "").is_ok() && probe.len() == 1 {
        found.push((oref, origin.clone()));
    }
}

impl LoadError {
    /// The error to report for a text that failed to load: when the text is a Helm chart
    /// template, that is the cause, whatever the parser tripped over.
    fn explained_by_templates(self, text: &str) -> Self {
        let source_name = match &self {
            LoadError::HelmTemplate { line: 0, .. } => {
                return self.with_template_line(text);
            }
            LoadError::HelmTemplate { .. } | LoadError::Conflict { .. } => return self,
            LoadError::Yaml {
                source_name, line, ..
            } => {
                // The line the parser stopped at holds a template (quoted or not).
                let at = usize::try_from(*line)
                    .ok()
                    .and_then(|l| text.lines().nth(l.checked_sub(1)?))
                    .filter(|l| l.contains("{{"));
                if let Some(l) = at {
                    return LoadError::HelmTemplate {
                        source_name: source_name.clone(),
                        line: *line,
                        template: documents::template_of(l),
                    };
                }
                source_name
            }
            LoadError::NotKubernetes { source_name, .. }
            | LoadError::Invalid { source_name, .. } => source_name,
        };
        match documents::template_line(text) {
            Some((line, template)) => LoadError::HelmTemplate {
                source_name: source_name.clone(),
                line,
                template,
            },
            None => self,
        }
    }

    /// A template error found in an object's name, at the first line holding that template
    /// (else any).
    fn with_template_line(self, text: &str) -> Self {
        let LoadError::HelmTemplate {
            source_name,
            template,
            ..
        } = self
        else {
            return self;
        };
        let first_with = |needle: &str| {
            (1..)
                .zip(text.lines())
                .find(|(_, l)| l.contains(needle))
                .map(|(n, _)| n)
        };
        let line = first_with(&template)
            .or_else(|| first_with("{{"))
            .unwrap_or(0);
        LoadError::HelmTemplate {
            source_name,
            line,
            template,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn loads_multi_document_and_lists() {
        let mut inv = Inventory::default();
        let text = r#"
apiVersion: v1
kind: Namespace
metadata: {name: a}
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: s, namespace: a}
  spec: {selector: {app: s}, ports: [{port: 80}]}
- apiVersion: example.com/v1
  kind: Widget
  metadata: {name: w}
---
"#;
        assert_eq!(inv.load_str(text, "t.yaml"), Ok(3));
        assert_eq!(inv.namespaces.len(), 1);
        assert_eq!(inv.services.len(), 1);
        assert_eq!(inv.skipped.get("example.com/Widget"), Some(&1));
    }

    /// A text big enough to be parsed on several threads.
    fn large_text(documents: usize, bad: Option<usize>) -> String {
        (1..=documents)
            .map(|i| {
                if Some(i) == bad {
                    "---\nname: not-kubernetes\n".to_string()
                } else {
                    format!(
                        "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: s{i}\n  namespace: ns{}\n  labels: {{app: s{i}, team: t}}\nspec:\n  selector: {{app: s{i}}}\n  ports:\n  - {{name: http, port: 8080, targetPort: 8080}}\n  - {{name: grpc, port: 9090}}\n",
                        i % 50
                    )
                }
            })
            .collect()
    }

    /// Every object of the bookinfo example, as YAML.
    fn bookinfo_yaml() -> String {
        [
            include_str!("../../../examples/bookinfo/00-control-plane.yaml"),
            include_str!("../../../examples/bookinfo/10-bookinfo.yaml"),
            include_str!("../../../examples/bookinfo/20-istio.yaml"),
        ]
        .join("\n---\n")
    }

    #[test]
    fn json_documents_load_like_the_same_yaml() {
        let yaml = bookinfo_yaml();
        let mut from_yaml = Inventory::default();
        let n = from_yaml.load_str(&yaml, "b.yaml").unwrap();
        assert!(n > 20, "{n} objects");
        let docs: Vec<Value> = serde_saphyr::from_multiple(&yaml).unwrap();
        let docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
        // One JSON document per object, pretty and compact, after markers and comments.
        let json = docs
            .iter()
            .enumerate()
            .map(|(i, d)| {
                if i % 2 == 0 {
                    format!(
                        "---\n# object {i}\n{}\n",
                        serde_json::to_string_pretty(d).unwrap()
                    )
                } else {
                    format!("--- {}\n", serde_json::to_string(d).unwrap())
                }
            })
            .collect::<String>();
        let mut from_json = Inventory::default();
        assert_eq!(from_json.load_str(&json, "b.json"), Ok(n));
        assert_eq!(format!("{from_json:?}"), format!("{from_yaml:?}"));
        // `kubectl get … -o json`: one List.
        let list = serde_json::to_string_pretty(
            &json!({"apiVersion": "v1", "kind": "List", "items": docs}),
        )
        .unwrap();
        let mut from_list = Inventory::default();
        assert_eq!(from_list.load_str(&list, "b.json"), Ok(n));
        assert_eq!(format!("{from_list:?}"), format!("{from_yaml:?}"));
    }

    #[test]
    fn a_large_json_list_loads_in_parallel_like_the_same_yaml() {
        let yaml = large_text(10_000, None);
        let mut from_yaml = Inventory::default();
        assert_eq!(from_yaml.load_str(&yaml, "big.yaml"), Ok(10_000));
        let items: Vec<Value> = documents::split(&yaml)
            .iter()
            .flat_map(|p| serde_saphyr::from_multiple::<Value>(p.text).unwrap())
            .collect();
        assert_eq!(items.len(), 10_000);
        let list = |items: &[Value]| {
            serde_json::to_string_pretty(
                &json!({"apiVersion": "v1", "kind": "List", "items": items}),
            )
            .unwrap()
        };
        let text = list(&items);
        assert!(text.len() > json::LARGE_JSON, "{} bytes", text.len());
        assert!(matches!(json::document(&text), Some(JsonDocument::List(l)) if l.len() == 10_000));
        let mut from_json = Inventory::default();
        assert_eq!(from_json.load_str(&text, "big.json"), Ok(10_000));
        assert_eq!(format!("{from_json:?}"), format!("{from_yaml:?}"));
        // The first bad item's error, naming the list's document, as when loading in order.
        let mut bad = items.clone();
        bad[8_500] = json!({"name": "not-kubernetes"});
        bad[100] = json!(7);
        let text = format!("{}\n---\n{}", list(&items[..10]), list(&bad));
        match Inventory::default()
            .load_str(&text, "big.json")
            .unwrap_err()
        {
            LoadError::NotKubernetes {
                document, message, ..
            } => {
                assert_eq!(document, 2);
                assert!(message.contains("expected a mapping"), "{message}");
            }
            e => panic!("{e}"),
        }
        // A repeated key in one item: the YAML parser reads the list, and refuses it.
        let mut text = list(&items);
        let at = text.find("\"name\": \"s5000\"").unwrap();
        text.insert_str(at, "\"name\": \"twice\", ");
        assert!(json::strict(&text).is_none());
        match Inventory::default()
            .load_str(&text, "big.json")
            .unwrap_err()
        {
            LoadError::Yaml { message, .. } => {
                assert!(message.contains("key `name` is repeated"), "{message}")
            }
            e => panic!("{e}"),
        }
    }

    #[test]
    fn only_a_whole_json_object_takes_the_json_path() {
        let svc = r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}}"#;
        assert!(json::document(svc).is_some());
        assert!(json::document(&format!("--- \n# c\n  {svc}\n")).is_some());
        // YAML flow mappings, trailing comments and JSON errors go to the YAML parser.
        assert!(json::document("{apiVersion: v1, kind: Service}").is_none());
        assert!(json::document(&format!("{svc} # c")).is_none());
        assert!(json::document(r#"{"a": 1"#).is_none());
        assert!(json::document("[1, 2]").is_none());
        assert!(json::document("---\n").is_none());
        let mut inv = Inventory::default();
        assert_eq!(
            inv.load_str(&format!("{svc} # trailing comment"), "c.yaml"),
            Ok(1)
        );
        // The error of a broken JSON document is the YAML parser's, with its line.
        let text = format!("{svc}\n---\n{{\"apiVersion\": \"v1\",\n \"kind\": [}}\n");
        match Inventory::default().load_str(&text, "c.json").unwrap_err() {
            LoadError::Yaml { line, .. } => assert!((3..=4).contains(&line), "line {line}"),
            e => panic!("{e}"),
        }
    }

    #[test]
    fn parallel_loading_equals_loading_in_order() {
        let text = large_text(10_000, None);
        assert!(
            text.len() > 2 << 20,
            "{} bytes: too small for threads",
            text.len()
        );
        let mut parallel = Inventory::default();
        assert_eq!(parallel.load_str(&text, "big.yaml"), Ok(10_000));
        let mut serial = Inventory::default();
        let parts = documents::split(&text);
        assert_eq!(serial.load_parts(&parts, "big.yaml"), Ok((10_000, 10_000)));
        assert_eq!(parallel.services, serial.services);
        assert_eq!(
            parallel.services[9_999].metadata.name.as_deref(),
            Some("s10000")
        );
    }

    #[test]
    fn errors_of_parallel_loading_name_the_document_and_line_of_the_whole_text() {
        let bad = 8_501;
        let text = large_text(10_000, Some(bad));
        let err = Inventory::default()
            .load_str(&text, "big.yaml")
            .unwrap_err();
        assert!(
            matches!(err, LoadError::NotKubernetes { document, .. } if document == bad),
            "{err}"
        );
        // A YAML error late in the text reports its line in the whole text.
        let mut text = large_text(10_000, None);
        let line = text.lines().count() + 2;
        text.push_str("---\napiVersion: v1\nkind: [\n");
        match Inventory::default()
            .load_str(&text, "big.yaml")
            .unwrap_err()
        {
            LoadError::Yaml { line: l, .. } => {
                assert!(l >= line as u64 && l <= line as u64 + 1, "{l} vs {line}")
            }
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn exports_lose_managed_fields_and_last_applied_only() {
        let mut inv = Inventory::default();
        let text = r#"
apiVersion: v1
kind: Service
metadata:
  name: s
  namespace: a
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: '{"big": true}'
    keep: "yes"
  managedFields:
  - manager: kubectl
    operation: Apply
spec: {selector: {app: s}, ports: [{port: 80}]}
"#;
        inv.load_str(text, "s.yaml").unwrap();
        let meta = &inv.services[0].metadata;
        assert!(meta.managed_fields.is_none());
        let annotations = meta.annotations.as_ref().unwrap();
        assert_eq!(annotations.len(), 1);
        assert_eq!(annotations.get("keep").map(String::as_str), Some("yes"));
    }

    #[test]
    fn malformed_yaml_names_file_and_line() {
        let mut inv = Inventory::default();
        let err = inv
            .load_str(
                "apiVersion: v1\nkind: Namespace\nmetadata: {name: [\n",
                "bad.yaml",
            )
            .unwrap_err();
        match err {
            LoadError::Yaml {
                source_name, line, ..
            } => {
                assert_eq!(source_name, "bad.yaml");
                assert!(line >= 3, "line {line}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_yaml_error_names_one_line_that_of_the_whole_text() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: [\n";
        let err = Inventory::default().load_str(text, "bad.yaml").unwrap_err();
        assert_eq!(
            err.to_string(),
            "bad.yaml:7:18: invalid YAML: unclosed bracket '['"
        );
    }

    #[test]
    fn a_repeated_key_is_named_with_its_lines_and_object() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\n  name: web2\n";
        let err = Inventory::default().load_str(text, "s.yaml").unwrap_err();
        assert_eq!(
            err.to_string(),
            "s.yaml:10:3: invalid YAML: Service/shop/web: key `name` is repeated in one mapping (first on line 8); keep one"
        );
        // In a list item: the item's first line; the earlier item's key is not it.
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: ns1}\nspec:\n  ports:\n  - port: 1\n    name: a\n  - name: b\n    port: 2\n    name: c\n";
        let err = Inventory::default().load_str(text, "p.yaml").unwrap_err();
        assert_eq!(
            err.to_string(),
            "p.yaml:10:5: invalid YAML: Service/ns1/s: key `name` is repeated in one mapping (first on line 8); keep one"
        );
        let text = "apiVersion: v1\nkind: Service\nmetadata:\n  labels: {}\n  - x\n";
        let err = Inventory::default().load_str(text, "o.yaml").unwrap_err();
        assert!(!err.to_string().contains("Options"), "{err}");
    }

    #[test]
    fn helm_templates_are_named_with_their_line() {
        let cases = [
            (
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: {{ .Values.name }}\n",
                "t.yaml:4: looks like an unrendered Helm template (`{{ .Values.name }}`): run `helm template` first and plan its output",
            ),
            (
                "{{- if .Values.enabled }}\napiVersion: v1\nkind: Service\n",
                "t.yaml:1: looks like an unrendered Helm template (`{{- if .Values.enabled }}`)",
            ),
            // Quoted: YAML reads a string, but no object is named with braces.
            (
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: \"{{ .Release.Name }}-web\"\n",
                "t.yaml:4: looks like an unrendered Helm template (`{{ .Release.Name }}`)",
            ),
            // A template the parser trips over inside quotes.
            (
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: \"{{ include \"x\" . }}\"\n",
                "t.yaml:4: looks like an unrendered Helm template (`{{ include \"x\" . }}`)",
            ),
        ];
        for (text, expected) in cases {
            let err = Inventory::default().load_str(text, "t.yaml").unwrap_err();
            assert!(
                err.to_string().starts_with(expected),
                "{err}\nvs {expected}"
            );
        }
        // Templates in strings of a loaded object are data, and another error stays itself.
        let rule = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: alerts, namespace: m}\ndata: {summary: \"{{ $labels.pod }} is down\"}\n";
        assert_eq!(Inventory::default().load_str(rule, "r.yaml"), Ok(1));
        let err = Inventory::default()
            .load_str(&format!("{rule}---\nkind: [\n"), "r.yaml")
            .unwrap_err();
        assert!(matches!(err, LoadError::Yaml { .. }), "{err}");
    }

    /// One object of each kind the inventory keeps, with `status`.
    fn with_status(api_version: &str, kind: &str, status: &str) -> String {
        let spec = match kind {
            "HTTPRoute" => "spec: {parentRefs: [{name: svc, kind: Service, group: \"\"}]}\n",
            "Gateway" => {
                "spec: {gatewayClassName: istio-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}\n"
            }
            "ConfigMap" => "data: {a: b}\n",
            "MeshMigration" => "spec: {namespaces: [ns1]}\n",
            _ => "",
        };
        format!(
            "---\napiVersion: {api_version}\nkind: {kind}\nmetadata: {{name: x, namespace: ns1}}\n{spec}status: {status}\n"
        )
    }

    const KEPT_KINDS: &[(&str, &str)] = &[
        ("v1", "Namespace"),
        ("v1", "Service"),
        ("v1", "Pod"),
        ("v1", "ConfigMap"),
        ("apps/v1", "Deployment"),
        ("apps/v1", "StatefulSet"),
        ("apps/v1", "DaemonSet"),
        ("apps/v1", "ReplicaSet"),
        ("security.istio.io/v1", "AuthorizationPolicy"),
        ("security.istio.io/v1", "PeerAuthentication"),
        ("security.istio.io/v1", "RequestAuthentication"),
        ("networking.istio.io/v1", "VirtualService"),
        ("networking.istio.io/v1", "DestinationRule"),
        ("networking.istio.io/v1", "Sidecar"),
        ("networking.istio.io/v1alpha3", "EnvoyFilter"),
        ("networking.istio.io/v1", "ServiceEntry"),
        ("networking.istio.io/v1", "WorkloadEntry"),
        ("networking.istio.io/v1", "WorkloadGroup"),
        ("telemetry.istio.io/v1", "Telemetry"),
        ("extensions.istio.io/v1alpha1", "WasmPlugin"),
        ("gateway.networking.k8s.io/v1", "Gateway"),
        ("gateway.networking.k8s.io/v1", "HTTPRoute"),
        ("sailoperator.io/v1", "Istio"),
        ("sailoperator.io/v1", "IstioCNI"),
        ("sailoperator.io/v1", "ZTunnel"),
        ("meshmig.io/v1alpha1", "MeshMigration"),
    ];

    #[test]
    fn a_status_that_does_not_decode_is_dropped_and_the_object_kept() {
        // Wrong for every typed status: conditions, phase, parents, replicas.
        let broken =
            "{conditions: 7, phase: [1], parents: 7, replicas: x, loadBalancer: 7, listeners: 7}";
        for (api_version, kind) in KEPT_KINDS {
            let mut inv = Inventory::default();
            let text = with_status(api_version, kind, broken);
            assert_eq!(inv.load_str(&text, "s.yaml"), Ok(1), "{kind}");
            assert_eq!(inv.len(), 1, "{kind}");
            let object = &inv.to_objects()[0];
            assert_eq!(object["metadata"]["name"], "x", "{kind}");
            // Istio and Sail views keep any status verbatim; the typed ones drop it.
            let verbatim = api_version.contains("istio.io") || api_version.starts_with("sail");
            assert_eq!(object.get("status").is_some(), verbatim, "{kind}: {object}");
        }
        // The case found in the field: a parent status without controllerName.
        let mut inv = Inventory::default();
        let text = with_status(
            "gateway.networking.k8s.io/v1",
            "HTTPRoute",
            "{parents: [{parentRef: {name: svc}, conditions: []}]}",
        );
        assert_eq!(inv.load_str(&text, "r.yaml"), Ok(1));
        assert!(inv.http_routes[0].status.is_none());
        assert_eq!(
            inv.http_routes[0].spec.parent_refs.as_ref().map(Vec::len),
            Some(1)
        );
        // A status that decodes is kept: a Pod's phase.
        let mut inv = Inventory::default();
        inv.load_str(&with_status("v1", "Pod", "{phase: Running}"), "p.yaml")
            .unwrap();
        assert_eq!(inv.pods[0].phase.as_deref(), Some("Running"));
        let mut inv = Inventory::default();
        inv.load_str(&with_status("v1", "Pod", "{phase: null}"), "p.yaml")
            .unwrap();
        assert_eq!(inv.pods[0].phase, None);
    }

    const AP: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: shop}\nspec: {action: DENY, rules: [{}]}\n";

    #[test]
    fn identical_copies_are_loaded_once() {
        let mut inv = Inventory::default();
        let ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n";
        inv.load_str(&format!("{AP}---\n{ns}---\n{AP}"), "a.yaml")
            .unwrap();
        // `kubectl get -o json` of an overlapping selection: the same objects again.
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
            serde_saphyr::from_str::<Value>(AP).unwrap(),
            serde_saphyr::from_str::<Value>(ns).unwrap(),
        ]});
        inv.load_str(&list.to_string(), "b.json").unwrap();
        assert_eq!(inv.authorization_policies.len(), 3);
        assert_eq!(inv.dedup(), Vec::<ObjectRef>::new());
        assert_eq!(inv.authorization_policies.len(), 1);
        assert_eq!(inv.namespaces.len(), 1);
        assert!(inv.is_sorted());
    }

    #[test]
    fn different_copies_are_conflicts() {
        let mut inv = Inventory::default();
        inv.load_str(AP, "a.yaml").unwrap();
        inv.load_str(&AP.replace("DENY", "ALLOW"), "b.yaml")
            .unwrap();
        let ns = |labels: &str| {
            format!(
                "apiVersion: v1\nkind: Namespace\nmetadata: {{name: shop, labels: {{{labels}}}}}\n"
            )
        };
        inv.load_str(&ns("a: '1'"), "c.yaml").unwrap();
        inv.load_str(&ns("a: '2'"), "d.yaml").unwrap();
        assert_eq!(
            inv.dedup(),
            [
                ObjectRef::new("AuthorizationPolicy", Some("shop"), "p"),
                ObjectRef::namespace("shop"),
            ]
        );
        // Both copies stay: the caller refuses the input.
        assert_eq!(inv.authorization_policies.len(), 2);
    }

    #[test]
    fn conflicts_are_found_across_the_threads_of_a_large_text() {
        let ns = |v: &str| {
            format!(
                "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: twice, labels: {{v: '{v}'}}}}\n"
            )
        };
        let text = format!("{}{}{}", ns("1"), large_text(10_000, None), ns("2"));
        assert!(text.len() > 2 << 20, "too small for threads");
        let mut inv = Inventory::default();
        inv.load_str(&text, "big.yaml").unwrap();
        assert_eq!(inv.dedup(), [ObjectRef::namespace("twice")]);
    }

    #[test]
    fn located_objects_name_file_document_line_and_item() {
        let gateway = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g, namespace: shop}\nspec: {gatewayClassName: istio-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}\n";
        let istio_gateway =
            gateway.replace("gateway.networking.k8s.io/v1", "networking.istio.io/v1");
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "other", "namespace": "shop"}},
            serde_saphyr::from_str::<Value>(AP).unwrap(),
        ]});
        let text = format!("# export\n---\n{AP}---\n{istio_gateway}---\n{list}\n---\n\n{gateway}");
        let wanted = [
            ObjectRef::new("AuthorizationPolicy", Some("shop"), "p"),
            ObjectRef::new("Gateway", Some("shop"), "g"),
        ];
        let found: Vec<String> = locate(&text, "x.yaml", &wanted)
            .iter()
            .map(|(o, at)| format!("{o} {at}"))
            .collect();
        assert_eq!(
            found,
            [
                "AuthorizationPolicy/shop/p x.yaml:3 (document 1)",
                "AuthorizationPolicy/shop/p x.yaml:13 (document 3, item 2)",
                "Gateway/shop/g x.yaml:16 (document 4)",
            ]
        );
        let conflict = LoadError::Conflict {
            object: wanted[0].to_string(),
            origins: locate(&text, "x.yaml", &wanted[..1])
                .into_iter()
                .map(|(_, at)| at)
                .collect(),
        };
        assert_eq!(
            conflict.to_string(),
            "AuthorizationPolicy/shop/p is given twice with different contents: x.yaml:3 (document 1) and x.yaml:13 (document 3, item 2); keep one (identical copies are loaded once)"
        );
    }

    #[test]
    fn non_kubernetes_yaml_is_an_error() {
        let mut inv = Inventory::default();
        let err = inv.load_str("name: x\nvalue: 3\n", "cfg.yaml").unwrap_err();
        assert!(matches!(err, LoadError::NotKubernetes { .. }), "{err}");
        assert!(err.to_string().contains("cfg.yaml"));
    }

    #[test]
    fn wrong_types_name_the_object() {
        let mut inv = Inventory::default();
        let err = inv
            .load_str(
                "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: ns1}\nspec: {ports: 3}\n",
                "svc.yaml",
            )
            .unwrap_err();
        assert!(err.to_string().contains("Service/ns1/s"), "{err}");
    }

    #[test]
    fn secrets_keep_no_data() {
        let mut inv = Inventory::default();
        let text = r#"
apiVersion: v1
kind: Secret
metadata: {name: remote, namespace: istio-system, labels: {istio/multiCluster: "true"}}
data: {token: c2VjcmV0}
---
apiVersion: v1
kind: Secret
metadata: {name: other, namespace: x}
data: {password: c2VjcmV0}
"#;
        inv.load_str(text, "s.yaml").unwrap();
        assert_eq!(inv.multicluster_secrets.len(), 1);
        assert_eq!(inv.skipped.get("Secret"), Some(&1));
        assert!(!format!("{inv:?}").contains("c2VjcmV0"));
    }

    #[test]
    fn objects_round_trip() {
        let mut inv = Inventory::default();
        for f in ["00-control-plane.yaml", "10-bookinfo.yaml", "20-istio.yaml"] {
            let path = format!("{}/../../examples/bookinfo/{f}", env!("CARGO_MANIFEST_DIR"));
            inv.load_str(&std::fs::read_to_string(path).unwrap(), f)
                .unwrap();
        }
        inv.pods.push(PodInfo {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("bookinfo".into()),
                ..Default::default()
            },
            host_network: Some(false),
            containers: Some(vec!["app".into(), "istio-proxy".into()]),
            proxy_hbone: Some(true),
            phase: Some("Running".into()),
        });
        let mut back = Inventory::default();
        for o in inv.to_objects() {
            back.add_object(o, "frozen").unwrap();
        }
        assert_eq!(back.len(), inv.len());
        assert_eq!(back.pods, inv.pods);
        assert_eq!(back.authorization_policies, inv.authorization_policies);
        assert_eq!(back.istios, inv.istios);
        assert_eq!(back.deployments, inv.deployments);
    }

    #[test]
    fn compared_objects_are_found_by_kind_namespace_and_name() {
        let mut inv = Inventory::default();
        inv.load_str(
            "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: shop}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: reviews, namespace: shop}\n",
            "t",
        )
        .unwrap();
        let svc = inv.compared_object(&ObjectRef::new("Service", Some("shop"), "reviews"));
        assert_eq!(svc.unwrap().unwrap()["metadata"]["name"], "reviews");
        assert_eq!(
            inv.compared_object(&ObjectRef::new("Service", Some("other"), "reviews")),
            Some(None)
        );
        // Deployments are held but not compared; ReferenceGrants not held at all.
        assert_eq!(
            inv.compared_object(&ObjectRef::new("Deployment", Some("shop"), "reviews")),
            None
        );
        assert_eq!(
            inv.compared_object(&ObjectRef::new("ReferenceGrant", Some("shop"), "g")),
            None
        );
        assert!(
            inv.find_typed(Kind::Deployment, Some("shop"), "reviews")
                .is_some()
        );
    }

    #[test]
    fn hbone_from_proxy_config() {
        assert!(proxy_config_enables_hbone(
            r#"{"proxyMetadata":{"ISTIO_META_ENABLE_HBONE":"true"}}"#
        ));
        assert!(proxy_config_enables_hbone(
            "proxyMetadata:\n  ISTIO_META_ENABLE_HBONE: \"true\"\n"
        ));
        assert!(!proxy_config_enables_hbone(r#"{"proxyMetadata":{}}"#));
        assert!(!proxy_config_enables_hbone("not json"));
    }
}
