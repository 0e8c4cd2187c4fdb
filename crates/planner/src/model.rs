//! Derived view of an [`Inventory`]: workloads, what selects what, and injection state,
//! computed once and indexed by namespace so analysis never scans the whole inventory per
//! object.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Namespace, PodTemplateSpec, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use meshmig_api::istio::DestinationRule;
use meshmig_api::names::istio as n;

use crate::inventory::{Inventory, PodInfo, annotation, label};
use crate::object::ObjectRef;
use crate::routes::{HostTarget, resolve_host};

/// Empty label map used where an object has none.
static EMPTY: BTreeMap<String, String> = BTreeMap::new();

/// Labels of an object (empty when absent).
pub fn labels(meta: &ObjectMeta) -> &BTreeMap<String, String> {
    meta.labels.as_ref().unwrap_or(&EMPTY)
}

/// Whether every `selector` entry is in `labels` (an empty selector matches everything).
pub fn selector_matches(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Whether a Kubernetes LabelSelector matches `labels`.
pub fn label_selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    if let Some(m) = &sel.match_labels
        && !selector_matches(m, labels)
    {
        return false;
    }
    for e in sel.match_expressions.iter().flatten() {
        let value = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        let ok = match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// Namespace-level injection setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamespaceInjection {
    /// `istio-injection=enabled`.
    Enabled,
    /// `istio.io/rev=<rev>` (and no `istio-injection` label).
    Revision(String),
    /// `istio-injection=disabled`, or no injection label.
    Off,
}

/// Injection setting of a namespace (`istio-injection` wins over `istio.io/rev`).
pub fn namespace_injection(ns: Option<&Namespace>) -> NamespaceInjection {
    let Some(meta) = ns.map(|n| &n.metadata) else {
        return NamespaceInjection::Off;
    };
    match label(meta, n::INJECTION) {
        Some("enabled") => NamespaceInjection::Enabled,
        Some(_) => NamespaceInjection::Off,
        None => match label(meta, n::REV) {
            Some(rev) if !rev.is_empty() => NamespaceInjection::Revision(rev.to_string()),
            _ => NamespaceInjection::Off,
        },
    }
}

/// Kind of workload controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WorkloadKind {
    /// apps/v1 Deployment.
    Deployment,
    /// apps/v1 StatefulSet.
    StatefulSet,
    /// apps/v1 DaemonSet.
    DaemonSet,
    /// A Pod no known controller owns.
    Pod,
}

impl WorkloadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
            WorkloadKind::Pod => "Pod",
        }
    }
}

/// A workload: a controller's pod template (or a bare Pod) and its observed Pods.
#[derive(Clone, Debug)]
pub struct Workload<'a> {
    pub kind: WorkloadKind,
    pub namespace: &'a str,
    pub name: &'a str,
    /// Labels of the pods it creates.
    pub pod_labels: &'a BTreeMap<String, String>,
    /// Annotations of the pods it creates.
    pub pod_annotations: &'a BTreeMap<String, String>,
    /// `hostNetwork` of its pods.
    pub host_network: bool,
    /// Service account of its pods.
    pub service_account: &'a str,
    /// Observed pods.
    pub pods: Vec<&'a PodInfo>,
}

impl Workload<'_> {
    /// Reference to the workload object.
    pub fn object(&self) -> ObjectRef {
        ObjectRef::new(self.kind.as_str(), Some(self.namespace), self.name)
    }

    /// Whether its pods opt out of injection or ambient capture.
    pub fn opted_out(&self) -> bool {
        let get = |k: &str| {
            self.pod_labels
                .get(k)
                .or_else(|| self.pod_annotations.get(k))
                .map(String::as_str)
        };
        get(n::SIDECAR_INJECT) == Some("false") || get(n::DATAPLANE_MODE) == Some("none")
    }

    /// Whether its pods run (or, with no pods observed, will get) a sidecar.
    pub fn has_sidecar(&self, ns: &NamespaceInjection) -> bool {
        if !self.pods.is_empty() {
            return self.pods.iter().any(|p| p.has_sidecar());
        }
        if self.opted_out() || self.host_network {
            return false;
        }
        let forced = self
            .pod_labels
            .get(n::SIDECAR_INJECT)
            .is_some_and(|v| v == "true");
        forced || *ns != NamespaceInjection::Off || self.pod_labels.contains_key(n::REV)
    }

    /// Whether the pod template forces injection with a label that must go in step 9.
    pub fn template_forces_injection(&self) -> bool {
        self.pod_labels
            .get(n::SIDECAR_INJECT)
            .is_some_and(|v| v == "true")
            || self.pod_labels.contains_key(n::REV)
    }

    /// Whether workloads address these pods by IP (StatefulSets).
    pub fn pod_addressed(&self) -> bool {
        self.kind == WorkloadKind::StatefulSet
    }

    /// SPIFFE principal of its pods.
    pub fn principal(&self, trust_domain: &str) -> String {
        format!(
            "{trust_domain}/ns/{}/sa/{}",
            self.namespace, self.service_account
        )
    }
}

/// The namespace Kubernetes gives an object whose manifest names none: offline inventories
/// hold such objects, and every index of the model files them here.
pub const DEFAULT_NAMESPACE: &str = "default";

fn namespace_of(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
}

impl<'a> Workload<'a> {
    fn from_template(kind: WorkloadKind, meta: &'a ObjectMeta, t: &'a PodTemplateSpec) -> Self {
        let template_meta = t.metadata.as_ref();
        let spec = t.spec.as_ref();
        Workload {
            kind,
            namespace: namespace_of(meta),
            name: meta.name.as_deref().unwrap_or_default(),
            pod_labels: template_meta
                .and_then(|m| m.labels.as_ref())
                .unwrap_or(&EMPTY),
            pod_annotations: template_meta
                .and_then(|m| m.annotations.as_ref())
                .unwrap_or(&EMPTY),
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
            service_account: spec
                .and_then(|s| s.service_account_name.as_deref())
                .filter(|s| !s.is_empty())
                .unwrap_or("default"),
            pods: Vec::new(),
        }
    }

    /// A Pod no known controller owns is a workload of its own.
    fn bare_pod(pod: &'a PodInfo) -> Self {
        Workload {
            kind: WorkloadKind::Pod,
            namespace: namespace_of(&pod.metadata),
            name: pod.metadata.name.as_deref().unwrap_or_default(),
            pod_labels: labels(&pod.metadata),
            pod_annotations: pod.metadata.annotations.as_ref().unwrap_or(&EMPTY),
            host_network: pod.host_network.unwrap_or(false),
            service_account: "default",
            pods: vec![pod],
        }
    }

    /// Whether its pods are an ingress gateway (see [`is_ingress_gateway`]).
    pub fn is_ingress_gateway(&self) -> bool {
        is_ingress_gateway(self.pod_labels)
    }
}

/// Whether pods with these labels are an ingress gateway, which bypass protection admits:
/// an Istio ingress gateway deployment (`istio: …ingressgateway…`), or the deployment
/// istiod runs for a Gateway API Gateway other than a waypoint (waypoints are managed by
/// the mesh controller).
pub fn is_ingress_gateway(pod_labels: &BTreeMap<String, String>) -> bool {
    use meshmig_api::names::istio;
    pod_labels
        .get(istio::GATEWAY_WORKLOAD)
        .is_some_and(|v| v.contains(istio::INGRESS_GATEWAY))
        || pod_labels.contains_key(istio::GATEWAY_NAME)
            && pod_labels
                .get(istio::GATEWAY_MANAGED)
                .is_some_and(|v| v != istio::MESH_CONTROLLER)
}

/// The controller workload a pod's owner reference leads to.
#[derive(Clone, Copy)]
struct Owner<'a> {
    kind: WorkloadKind,
    name: &'a str,
}

/// What attributes pods to the controllers of the inventory.
struct PodOwners<'a> {
    /// ReplicaSet (namespace, name) → the Deployment that owns it.
    replica_sets: HashMap<(&'a str, &'a str), &'a str>,
    /// Controller (namespace, kind, name) → its pod selector.
    selectors: HashMap<(&'a str, WorkloadKind, &'a str), &'a LabelSelector>,
}

impl<'a> PodOwners<'a> {
    fn new(inv: &'a Inventory) -> Self {
        let replica_sets = inv
            .replica_sets
            .iter()
            .filter_map(|rs| {
                let owner = rs
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .find(|o| o.kind == "Deployment")?;
                let key = (
                    namespace_of(&rs.metadata),
                    rs.metadata.name.as_deref().unwrap_or_default(),
                );
                Some((key, owner.name.as_str()))
            })
            .collect();
        Self {
            replica_sets,
            selectors: controller_selectors(inv),
        }
    }

    /// The controller a pod's controlling owner reference names (a ReplicaSet: its
    /// Deployment).
    fn owner(&self, pod: &'a PodInfo) -> Option<Owner<'a>> {
        let ns = namespace_of(&pod.metadata);
        let owner = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))?;
        match owner.kind.as_str() {
            "ReplicaSet" => self
                .replica_sets
                .get(&(ns, owner.name.as_str()))
                .map(|name| Owner {
                    kind: WorkloadKind::Deployment,
                    name,
                }),
            "StatefulSet" => Some(Owner {
                kind: WorkloadKind::StatefulSet,
                name: owner.name.as_str(),
            }),
            "DaemonSet" => Some(Owner {
                kind: WorkloadKind::DaemonSet,
                name: owner.name.as_str(),
            }),
            _ => None,
        }
    }

    /// Whether workload `w` owns `pod`: by owner reference, else (no owner known) by a
    /// controller's non-empty selector.
    fn owns(&self, w: &Workload<'_>, owner: Option<Owner<'_>>, pod: &PodInfo) -> bool {
        match owner {
            Some(o) => w.kind == o.kind && w.name == o.name,
            None => {
                w.kind != WorkloadKind::Pod
                    && self
                        .selectors
                        .get(&(w.namespace, w.kind, w.name))
                        .is_some_and(|s| {
                            (s.match_labels.is_some() || s.match_expressions.is_some())
                                && label_selector_matches(s, labels(&pod.metadata))
                        })
            }
        }
    }
}

fn controller_selectors(inv: &Inventory) -> HashMap<(&str, WorkloadKind, &str), &LabelSelector> {
    fn key(m: &ObjectMeta, k: WorkloadKind) -> (&str, WorkloadKind, &str) {
        (namespace_of(m), k, m.name.as_deref().unwrap_or_default())
    }
    let deployments = inv.deployments.iter().filter_map(|d| {
        Some((
            key(&d.metadata, WorkloadKind::Deployment),
            &d.spec.as_ref()?.selector,
        ))
    });
    let stateful_sets = inv.stateful_sets.iter().filter_map(|d| {
        Some((
            key(&d.metadata, WorkloadKind::StatefulSet),
            &d.spec.as_ref()?.selector,
        ))
    });
    let daemon_sets = inv.daemon_sets.iter().filter_map(|d| {
        Some((
            key(&d.metadata, WorkloadKind::DaemonSet),
            &d.spec.as_ref()?.selector,
        ))
    });
    deployments
        .chain(stateful_sets)
        .chain(daemon_sets)
        .collect()
}

/// The controllers' workloads by namespace, without pods yet.
fn controller_workloads<'a>(inv: &'a Inventory) -> HashMap<&'a str, Vec<Workload<'a>>> {
    let mut workloads: HashMap<&'a str, Vec<Workload<'a>>> = HashMap::new();
    let mut add = |w: Workload<'a>| workloads.entry(w.namespace).or_default().push(w);
    for d in &inv.deployments {
        if let Some(s) = &d.spec {
            add(Workload::from_template(
                WorkloadKind::Deployment,
                &d.metadata,
                &s.template,
            ));
        }
    }
    for d in &inv.stateful_sets {
        if let Some(s) = &d.spec {
            add(Workload::from_template(
                WorkloadKind::StatefulSet,
                &d.metadata,
                &s.template,
            ));
        }
    }
    for d in &inv.daemon_sets {
        if let Some(s) = &d.spec {
            add(Workload::from_template(
                WorkloadKind::DaemonSet,
                &d.metadata,
                &s.template,
            ));
        }
    }
    workloads
}

/// Every workload by namespace, sorted by kind and name, each with its observed pods.
fn workloads_by_namespace(inv: &Inventory) -> HashMap<&str, Vec<Workload<'_>>> {
    let mut workloads = controller_workloads(inv);
    let owners = PodOwners::new(inv);
    for pod in &inv.pods {
        let owner = owners.owner(pod);
        let list = workloads.entry(namespace_of(&pod.metadata)).or_default();
        match list.iter_mut().find(|w| owners.owns(w, owner, pod)) {
            Some(w) => w.pods.push(pod),
            None => list.push(Workload::bare_pod(pod)),
        }
    }
    for list in workloads.values_mut() {
        list.sort_by(|a, b| (a.kind, a.name).cmp(&(b.kind, b.name)));
    }
    workloads
}

fn services_by_namespace(inv: &Inventory) -> HashMap<&str, Vec<&Service>> {
    let mut services: HashMap<&str, Vec<&Service>> = HashMap::new();
    for s in &inv.services {
        services
            .entry(namespace_of(&s.metadata))
            .or_default()
            .push(s);
    }
    for list in services.values_mut() {
        list.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    }
    services
}

/// A DestinationRule whose host resolves to a Service (its namespace is where the model
/// files it), with that Service's name.
#[derive(Clone, Debug)]
pub struct ServiceDestinationRule<'a> {
    pub rule: &'a DestinationRule,
    pub service: String,
    /// Position in `inv.destination_rules`.
    index: usize,
}

/// The DestinationRules by the namespace of the Service their host resolves to (a short
/// host relative to the rule's namespace), in inventory order.
fn destination_rules_by_namespace(
    inv: &Inventory,
) -> HashMap<String, Vec<ServiceDestinationRule<'_>>> {
    let mut out: HashMap<String, Vec<ServiceDestinationRule<'_>>> = HashMap::new();
    for (index, rule) in inv.destination_rules.iter().enumerate() {
        if let HostTarget::Service(ns, service) =
            resolve_host(&rule.spec.host, namespace_of(&rule.metadata))
        {
            out.entry(ns).or_default().push(ServiceDestinationRule {
                rule,
                service,
                index,
            });
        }
    }
    out
}

/// Everything the analysis looks up, indexed by namespace.
pub struct Model<'a> {
    pub inv: &'a Inventory,
    pub workloads: HashMap<&'a str, Vec<Workload<'a>>>,
    pub services: HashMap<&'a str, Vec<&'a Service>>,
    /// DestinationRules by the namespace of the Service their host resolves to, in
    /// inventory order: subset lookups and each namespace's analysis would otherwise scan
    /// every DestinationRule, which is quadratic in the number of namespaces.
    destination_rules: HashMap<String, Vec<ServiceDestinationRule<'a>>>,
}

impl<'a> Model<'a> {
    pub fn new(inv: &'a Inventory) -> Self {
        Self {
            inv,
            workloads: workloads_by_namespace(inv),
            services: services_by_namespace(inv),
            destination_rules: destination_rules_by_namespace(inv),
        }
    }

    /// The DestinationRules whose host resolves to a Service in `ns`, in inventory order.
    pub fn destination_rules_in(&self, ns: &str) -> &[ServiceDestinationRule<'a>] {
        self.destination_rules
            .get(ns)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The DestinationRules of `drs` whose host resolves to Service `ns`/`name` (a short
    /// host relative to the rule's namespace, or `default`), in slice order. Uses the index
    /// when `drs` is the inventory's own list, and scans otherwise.
    pub fn destination_rules_for<'d>(
        &self,
        drs: &'d [DestinationRule],
        ns: &str,
        name: &str,
    ) -> Vec<&'d DestinationRule> {
        if std::ptr::eq(drs, self.inv.destination_rules.as_slice()) {
            return self
                .destination_rules_in(ns)
                .iter()
                .filter(|r| r.service == name)
                .filter_map(|r| drs.get(r.index))
                .collect();
        }
        let target = HostTarget::Service(ns.into(), name.into());
        drs.iter()
            .filter(|dr| resolve_host(&dr.spec.host, namespace_of(&dr.metadata)) == target)
            .collect()
    }

    /// Principals of the ingress gateways in the inventory, sorted.
    pub fn ingress_principals(&self, trust_domain: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .workloads
            .values()
            .flatten()
            .filter(|w| w.is_ingress_gateway())
            .map(|w| w.principal(trust_domain))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    pub fn workloads_in(&self, ns: &str) -> &[Workload<'a>] {
        self.workloads
            .get(ns)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    pub fn services_in(&self, ns: &str) -> &[&'a Service] {
        self.services.get(ns).map(Vec::as_slice).unwrap_or_default()
    }

    pub fn service(&self, ns: &str, name: &str) -> Option<&'a Service> {
        self.services_in(ns)
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(name))
            .copied()
    }

    /// Workloads a Service selects.
    pub fn service_workloads(&self, svc: &Service) -> Vec<&Workload<'a>> {
        let ns = namespace_of(&svc.metadata);
        match service_selector(svc) {
            Some(sel) => self
                .workloads_in(ns)
                .iter()
                .filter(|w| selector_matches(sel, w.pod_labels))
                .collect(),
            None => Vec::new(),
        }
    }

    /// Services that select a workload.
    pub fn workload_services(&self, w: &Workload<'_>) -> Vec<&'a Service> {
        self.services_in(w.namespace)
            .iter()
            .filter(|s| service_selector(s).is_some_and(|sel| selector_matches(sel, w.pod_labels)))
            .copied()
            .collect()
    }

    /// Workloads a `matchLabels` selector picks in a namespace (`None`: all of them).
    pub fn selected_workloads(
        &self,
        ns: &str,
        selector: Option<&BTreeMap<String, String>>,
    ) -> Vec<&Workload<'a>> {
        self.workloads_in(ns)
            .iter()
            .filter(|w| selector.is_none_or(|s| selector_matches(s, w.pod_labels)))
            .collect()
    }

    pub fn namespace(&self, name: &str) -> Option<&'a Namespace> {
        self.inv.namespaces.get(name)
    }
}

/// A Service's pod selector; `None` when it selects nothing (no selector or empty).
pub fn service_selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    svc.spec
        .as_ref()?
        .selector
        .as_ref()
        .filter(|s| !s.is_empty())
}

/// Whether a Service is headless.
pub fn is_headless(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .is_some_and(|ip| ip == "None")
}

/// Whether a pod or workload annotation/label value is set.
pub fn meta_flag<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    label(meta, key).or_else(|| annotation(meta, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(yaml: &str) -> Inventory {
        let mut i = Inventory::default();
        i.load_str(yaml, "t").unwrap();
        i
    }

    const BASE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: a, labels: {istio-injection: enabled}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: a}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web, version: v1}}
    spec: {serviceAccountName: web-sa, containers: [{name: c, image: x}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: a}
spec: {selector: {app: web}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-abc, namespace: a, labels: {app: web, version: v1}, annotations: {sidecar.istio.io/status: "{}"}}
spec: {containers: [{name: c, image: x}, {name: istio-proxy, image: p}]}
---
apiVersion: v1
kind: Pod
metadata: {name: lonely, namespace: a, labels: {run: lonely}}
spec: {hostNetwork: true, containers: [{name: c, image: x}]}
"#;

    #[test]
    fn pods_are_attributed_to_workloads() {
        let i = inv(BASE);
        let m = Model::new(&i);
        let ws = m.workloads_in("a");
        assert_eq!(ws.len(), 2);
        let web = ws.iter().find(|w| w.name == "web").unwrap();
        assert_eq!(web.pods.len(), 1);
        assert_eq!(web.service_account, "web-sa");
        assert!(web.has_sidecar(&NamespaceInjection::Enabled));
        assert_eq!(
            web.principal("cluster.local"),
            "cluster.local/ns/a/sa/web-sa"
        );
        let lonely = ws.iter().find(|w| w.name == "lonely").unwrap();
        assert_eq!(lonely.kind, WorkloadKind::Pod);
        assert!(lonely.host_network);
        let svc = m.service("a", "web").unwrap();
        assert_eq!(m.service_workloads(svc).len(), 1);
        assert_eq!(m.workload_services(web).len(), 1);
    }

    #[test]
    fn destination_rules_without_a_namespace_are_those_of_default() {
        let i = inv(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r}\nspec: {host: web}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: q, namespace: a}\nspec: {host: web.b.svc.cluster.local}\n",
        );
        let m = Model::new(&i);
        let in_default = m.destination_rules_in("default");
        assert_eq!(in_default.len(), 1);
        assert_eq!(in_default[0].rule.metadata.name.as_deref(), Some("r"));
        assert_eq!(in_default[0].service, "web");
        assert!(m.destination_rules_in("").is_empty());
        assert_eq!(m.destination_rules_in("b")[0].service, "web");
        let named = m.destination_rules_for(&i.destination_rules, "default", "web");
        assert_eq!(named.len(), 1);
        assert!(
            m.destination_rules_for(&i.destination_rules, "default", "other")
                .is_empty()
        );
    }

    #[test]
    fn ingress_gateways_are_istio_ingress_and_gateway_api_deployments_but_not_waypoints() {
        let l = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(is_ingress_gateway(&l(&[("istio", "ingressgateway")])));
        assert!(is_ingress_gateway(&l(&[(
            "istio",
            "internal-ingressgateway"
        )])));
        let gateway_api = [
            ("gateway.networking.k8s.io/gateway-name", "public"),
            ("gateway.istio.io/managed", "istio.io-gateway-controller"),
        ];
        assert!(is_ingress_gateway(&l(&gateway_api)));
        let waypoint = [
            ("gateway.networking.k8s.io/gateway-name", "waypoint"),
            ("gateway.istio.io/managed", "istio.io-mesh-controller"),
        ];
        assert!(!is_ingress_gateway(&l(&waypoint)));
        assert!(!is_ingress_gateway(&l(&[(
            "gateway.networking.k8s.io/gateway-name",
            "unmanaged"
        )])));
        assert!(!is_ingress_gateway(&l(&[("istio", "egressgateway")])));
    }

    #[test]
    fn injection_labels() {
        let i = inv(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a, labels: {istio-injection: enabled, istio.io/rev: canary}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: b, labels: {istio.io/rev: canary}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: c, labels: {istio-injection: disabled, istio.io/rev: canary}}\n",
        );
        assert_eq!(
            namespace_injection(i.namespaces.get("a")),
            NamespaceInjection::Enabled
        );
        assert_eq!(
            namespace_injection(i.namespaces.get("b")),
            NamespaceInjection::Revision("canary".into())
        );
        assert_eq!(
            namespace_injection(i.namespaces.get("c")),
            NamespaceInjection::Off
        );
        assert_eq!(namespace_injection(None), NamespaceInjection::Off);
    }

    #[test]
    fn label_selector_expressions() {
        let sel: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchLabels": {"team": "x"},
            "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]},
                                 {"key": "skip", "operator": "DoesNotExist"}]
        }))
        .unwrap();
        let l = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(label_selector_matches(
            &sel,
            &l(&[("team", "x"), ("env", "prod")])
        ));
        assert!(!label_selector_matches(
            &sel,
            &l(&[("team", "x"), ("env", "dev")])
        ));
        assert!(!label_selector_matches(
            &sel,
            &l(&[("team", "x"), ("env", "prod"), ("skip", "1")])
        ));
    }
}
