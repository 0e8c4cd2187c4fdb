//! Cluster-level facts and step-1 prerequisites: Istio version, control plane mode, trust
//! domain, multicluster, VMs, SPIRE, CNI, Gateway API CRDs.

use k8s_openapi::api::apps::v1::Deployment;
use meshmig_api::istio::PeerAuthentication;
use meshmig_api::names::istio as n;
use meshmig_api::sail::Istio;
use meshmig_api::{ControlPlaneMode, ControlPlaneSpec, MeshMigrationSpec};
use serde::Serialize;
use serde_json::Value;

use crate::findings::{self as f, Finding};
use crate::inventory::{Inventory, label};
use crate::object::ObjectRef;

/// A parsed Istio version.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct IstioVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl std::fmt::Display for IstioVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Parses `v1.27.0`, `1.26.1`, `1.24-alpha.x`, an image tag such as
/// `docker.io/istio/pilot:1.26.1-distroless`, or a Sail revision-style `v1.27-latest`.
pub fn parse_version(s: &str) -> Option<IstioVersion> {
    let tag = s.rsplit(':').next().unwrap_or(s);
    let tag = tag.trim_start_matches('v');
    let mut nums = tag
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<u32>().ok());
    let major = nums.next()??;
    let minor = nums.next()??;
    let patch = nums.next().flatten().unwrap_or(0);
    // Image tags such as `latest` or digests carry no version.
    if !tag.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    Some(IstioVersion {
        major,
        minor,
        patch,
    })
}

/// Minimum Istio version for this migration.
pub const MIN_VERSION: IstioVersion = IstioVersion {
    major: 1,
    minor: 24,
    patch: 0,
};

/// What the planner knows about the control plane.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlaneFacts {
    /// Sail or External.
    pub mode: ControlPlaneMode,
    /// Istio version, when found.
    pub version: Option<String>,
    /// Trust domain used for principals.
    pub trust_domain: String,
    /// MeshConfig `trustDomainAliases`: sidecars and waypoints accept them (and a policy's
    /// `cluster.local/...` principal) as the trust domain; ztunnel compares principals
    /// exactly and accepts neither.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trust_domain_aliases: Vec<String>,
    /// Whether the control plane is already in ambient mode.
    pub ambient: bool,
    /// The Sail Istio resource or istiod Deployment that was found.
    pub object: Option<ObjectRef>,
    /// Mesh root namespace (where mesh-wide policies live).
    pub root_namespace: String,
    /// istiod runs with `AMBIENT_ENABLE_DRY_RUN_AUTHORIZATION_POLICY=true`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dry_run_authz_flag: bool,
}

impl ControlPlaneFacts {
    /// What istiod and ztunnel of this control plane do with AuthorizationPolicies.
    pub fn ztunnel_semantics(&self) -> crate::authz::ZtunnelSemantics {
        crate::authz::ZtunnelSemantics {
            version: self.version.as_deref().and_then(parse_version),
            dry_run_flag: self.dry_run_authz_flag,
            trust_domain: self.trust_domain.clone(),
            root_namespace: self.root_namespace.clone(),
        }
    }
}

fn values_get<'a>(values: Option<&'a Value>, path: &[&str]) -> Option<&'a Value> {
    let mut v = values?;
    for p in path {
        v = v.get(p)?;
    }
    Some(v)
}

/// The MeshConfig fields the planner reads.
#[derive(Clone, Debug, Default, PartialEq)]
struct MeshSettings {
    trust_domain: Option<String>,
    trust_domain_aliases: Option<Vec<String>>,
    root_namespace: Option<String>,
}

impl MeshSettings {
    /// From a MeshConfig document (Sail's `values.meshConfig`, or the `mesh` key of the
    /// `istio` ConfigMap).
    fn of(mesh: Option<&Value>) -> Self {
        let text = |k: &str| mesh?.get(k)?.as_str().map(str::to_string);
        Self {
            trust_domain: text("trustDomain"),
            trust_domain_aliases: mesh
                .and_then(|m| m.get("trustDomainAliases"))
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                }),
            root_namespace: text("rootNamespace"),
        }
    }

    /// What istiod runs with: the `mesh` key of the ConfigMap `istio` in its namespace
    /// (rendered by Sail or Helm from the values, defaults included).
    fn of_config_map(inv: &Inventory, istio_namespace: &str) -> Self {
        let mesh = inv
            .config_maps
            .iter()
            .find(|c| {
                c.metadata.name.as_deref() == Some(MESH_CONFIG_MAP)
                    && c.metadata.namespace.as_deref() == Some(istio_namespace)
            })
            .and_then(|c| c.data.as_ref()?.get("mesh"))
            .and_then(|m| serde_saphyr::from_str::<Value>(m).ok());
        Self::of(mesh.as_ref())
    }

    /// `self`, with what it leaves unset taken from `other`.
    fn or(self, other: Self) -> Self {
        Self {
            trust_domain: self.trust_domain.or(other.trust_domain),
            trust_domain_aliases: self.trust_domain_aliases.or(other.trust_domain_aliases),
            root_namespace: self.root_namespace.or(other.root_namespace),
        }
    }
}

/// A boolean env value as istiod reads it (Go's `strconv.ParseBool`), or a YAML boolean.
fn truthy(v: &Value) -> bool {
    v.as_bool()
        .unwrap_or_else(|| matches!(v.as_str(), Some("1" | "t" | "T" | "true" | "TRUE" | "True")))
}

/// Name of the ConfigMap holding istiod's MeshConfig (default revision).
pub const MESH_CONFIG_MAP: &str = "istio";

/// What the control plane object of the inventory says, in either mode.
#[derive(Default)]
struct ControlPlaneSeen {
    object: Option<ObjectRef>,
    version: Option<String>,
    mesh: MeshSettings,
    ambient: bool,
    dry_run_authz_flag: bool,
    multicluster: bool,
}

/// The Sail `Istio` named in the spec.
fn sail_istio<'a>(inv: &'a Inventory, cp: &ControlPlaneSpec) -> Option<&'a Istio> {
    inv.istios
        .iter()
        .find(|i| i.metadata.name.as_deref() == Some(&cp.istio))
}

/// The istiod Deployment (`istiod`, `istiod-<revision>`) in the control plane's namespace.
fn istiod_deployment<'a>(inv: &'a Inventory, cp: &ControlPlaneSpec) -> Option<&'a Deployment> {
    inv.deployments.iter().find(|d| {
        d.metadata.namespace.as_deref() == Some(&cp.istio_namespace)
            && d.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("istiod"))
    })
}

/// Whether Sail deployed it: Sail's Helm post-renderer makes its IstioRevision the owner of
/// every object it renders.
fn sail_managed(d: &Deployment) -> bool {
    d.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.api_version.split('/').next() == Some(SAIL_GROUP))
}

/// API group of the Sail operator's kinds.
const SAIL_GROUP: &str = "sailoperator.io";

/// The mode to plan with, and the istiod Deployment when it was detected: the spec's mode,
/// except that a Sail spec (the default, so often not chosen) with no Sail `Istio` of that
/// name but an istiod that Sail does not manage is a Helm or istioctl install. Planning it as
/// Sail would patch an `Istio` that does not exist and never learn the version.
fn effective_mode<'a>(
    inv: &'a Inventory,
    cp: &ControlPlaneSpec,
) -> (ControlPlaneMode, Option<&'a Deployment>) {
    if cp.mode != ControlPlaneMode::Sail || sail_istio(inv, cp).is_some() {
        return (cp.mode, None);
    }
    match istiod_deployment(inv, cp).filter(|d| !sail_managed(d)) {
        Some(d) => (ControlPlaneMode::External, Some(d)),
        None => (cp.mode, None),
    }
}

/// The facts a Sail `Istio` gives.
fn sail_facts(istio: &Istio, name: &str) -> ControlPlaneSeen {
    let values = istio.spec.values.as_ref();
    ControlPlaneSeen {
        object: Some(ObjectRef::new("Istio", None, name)),
        version: istio.spec.version.clone(),
        mesh: MeshSettings::of(values_get(values, &["meshConfig"])),
        ambient: istio.spec.profile.as_deref() == Some("ambient"),
        dry_run_authz_flag: values_get(
            values,
            &[
                "pilot",
                "env",
                n::AMBIENT_ENABLE_DRY_RUN_AUTHORIZATION_POLICY,
            ],
        )
        .is_some_and(truthy),
        multicluster: values_get(values, &["global", "multiCluster", "enabled"])
            .and_then(Value::as_bool)
            .unwrap_or(false),
    }
}

/// The facts an istiod Deployment gives: the version from its image, the flags from its
/// environment.
fn istiod_facts(d: &Deployment) -> ControlPlaneSeen {
    let containers = d
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let discovery = containers
        .iter()
        .find(|c| c.name == "discovery")
        .or(containers.first());
    let env = |name: &str| {
        discovery.is_some_and(|c| {
            c.env.iter().flatten().any(|e| {
                e.name == name && e.value.as_deref().is_some_and(|v| truthy(&Value::from(v)))
            })
        })
    };
    ControlPlaneSeen {
        object: Some(ObjectRef::from_meta("Deployment", &d.metadata)),
        version: discovery
            .and_then(|c| c.image.as_deref())
            .and_then(parse_version)
            .map(|v| v.to_string()),
        ambient: env(n::PILOT_ENABLE_AMBIENT),
        dry_run_authz_flag: env(n::AMBIENT_ENABLE_DRY_RUN_AUTHORIZATION_POLICY),
        ..Default::default()
    }
}

/// Control plane facts and step-1 findings.
pub fn analyze(inv: &Inventory, spec: &MeshMigrationSpec) -> (ControlPlaneFacts, Vec<Finding>) {
    let cp = &spec.control_plane;
    let mut findings = Vec::new();
    let (mode, detected) = effective_mode(inv, cp);
    let seen = match mode {
        ControlPlaneMode::Sail => sail_istio(inv, cp)
            .map(|i| sail_facts(i, &cp.istio))
            .unwrap_or_default(),
        ControlPlaneMode::External => istiod_deployment(inv, cp)
            .map(istiod_facts)
            .unwrap_or_default(),
    };
    if let Some(d) = detected {
        findings.push(Finding::new(
            f::CONTROL_PLANE_EXTERNAL_DETECTED,
            ObjectRef::from_meta("Deployment", &d.metadata),
            format!(
                "no Sail Istio `{}` in the inventory, and Sail does not manage this istiod",
                cp.istio
            ),
        ));
    }
    findings.extend(version_finding(&seen, mode, cp));
    findings.extend(multicluster_findings(inv, &seen, cp));
    findings.extend(vm_findings(inv));
    findings.extend(cni_findings(inv));
    findings.extend(crd_findings(inv));
    (facts(inv, cp, mode, seen), findings)
}

/// A control plane that is missing, or whose version is unknown or too old.
fn version_finding(
    seen: &ControlPlaneSeen,
    mode: ControlPlaneMode,
    cp: &ControlPlaneSpec,
) -> Option<Finding> {
    match (&seen.object, &seen.version) {
        (None, _) => Some(Finding::new(
            f::CONTROL_PLANE_NOT_FOUND,
            match mode {
                ControlPlaneMode::Sail => ObjectRef::new("Istio", None, &cp.istio),
                ControlPlaneMode::External => {
                    ObjectRef::new("Deployment", Some(&cp.istio_namespace), "istiod")
                }
            },
            "no matching control plane object in the inventory",
        )),
        (Some(obj), None) => Some(Finding::new(f::ISTIO_VERSION_UNKNOWN, obj.clone(), "")),
        (Some(obj), Some(v)) => match parse_version(v) {
            Some(parsed) if parsed < MIN_VERSION => Some(Finding::new(
                f::ISTIO_VERSION_UNSUPPORTED,
                obj.clone(),
                format!("version {v}"),
            )),
            Some(_) => None,
            None => Some(Finding::new(
                f::ISTIO_VERSION_UNKNOWN,
                obj.clone(),
                format!("cannot parse version `{v}`"),
            )),
        },
    }
}

fn multicluster_findings(
    inv: &Inventory,
    seen: &ControlPlaneSeen,
    cp: &ControlPlaneSpec,
) -> Vec<Finding> {
    let mut findings: Vec<Finding> = inv
        .multicluster_secrets
        .iter()
        .map(|s| {
            Finding::new(
                f::MULTICLUSTER,
                ObjectRef::from_meta("Secret", s),
                "remote-cluster secret",
            )
        })
        .collect();
    if seen.multicluster {
        findings.push(Finding::new(
            f::MULTICLUSTER,
            ObjectRef::new("Istio", None, &cp.istio),
            "values.global.multiCluster.enabled is true",
        ));
    }
    findings
}

fn vm_findings(inv: &Inventory) -> Vec<Finding> {
    let entries = inv
        .workload_entries
        .iter()
        .map(|we| ObjectRef::from_meta("WorkloadEntry", &we.metadata));
    let groups = inv
        .workload_groups
        .iter()
        .map(|wg| ObjectRef::from_meta("WorkloadGroup", &wg.metadata));
    entries
        .chain(groups)
        .map(|obj| Finding::new(f::VM_WORKLOADS, obj, ""))
        .collect()
}

/// Cilium settings that break istio-cni's traffic redirection.
fn cni_findings(inv: &Inventory) -> Vec<Finding> {
    let mut findings = Vec::new();
    for cm in &inv.config_maps {
        if cm.metadata.name.as_deref() == Some("cilium-config") {
            let data = cm.data.as_ref();
            let get = |k: &str| data.and_then(|d| d.get(k)).map(String::as_str);
            let obj = ObjectRef::from_meta("ConfigMap", &cm.metadata);
            if get("cni-exclusive") == Some("true") {
                findings.push(Finding::new(f::CNI_CILIUM_EXCLUSIVE, obj.clone(), ""));
            }
            if get("enable-bpf-masquerade") == Some("true") {
                findings.push(Finding::new(f::CNI_CILIUM_BPF_MASQUERADE, obj, ""));
            }
        }
    }
    findings
}

fn crd_findings(inv: &Inventory) -> Vec<Finding> {
    let Some(crds) = &inv.crds else {
        return vec![Finding::new(
            f::CRDS_NOT_INSPECTED,
            ObjectRef::new(
                "CustomResourceDefinition",
                None,
                "gateways.gateway.networking.k8s.io",
            ),
            "",
        )];
    };
    [
        "gateways.gateway.networking.k8s.io",
        "httproutes.gateway.networking.k8s.io",
    ]
    .into_iter()
    .filter(|name| !crds.contains_key(*name))
    .map(|name| {
        Finding::new(
            f::GATEWAY_API_CRDS_MISSING,
            ObjectRef::new("CustomResourceDefinition", None, name),
            format!("CRD {name} is not installed"),
        )
    })
    .collect()
}

fn facts(
    inv: &Inventory,
    cp: &ControlPlaneSpec,
    mode: ControlPlaneMode,
    seen: ControlPlaneSeen,
) -> ControlPlaneFacts {
    // The running config first: Sail's values may omit what its profile sets.
    let mesh = MeshSettings::of_config_map(inv, &cp.istio_namespace).or(seen.mesh);
    ControlPlaneFacts {
        mode,
        version: seen.version,
        trust_domain: cp
            .trust_domain
            .clone()
            .or(mesh.trust_domain)
            .unwrap_or_else(|| "cluster.local".into()),
        trust_domain_aliases: mesh.trust_domain_aliases.unwrap_or_default(),
        ambient: seen.ambient,
        object: seen.object,
        root_namespace: mesh
            .root_namespace
            .unwrap_or_else(|| cp.istio_namespace.clone()),
        dry_run_authz_flag: seen.dry_run_authz_flag,
    }
}

/// SPIRE-managed pods and PeerAuthentication checks for one namespace are in the namespace
/// analysis; this helper reports whether a pod uses SPIRE.
pub fn spire_managed(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> bool {
    label(meta, n::SPIRE_IDENTITY).is_some()
}

/// Whether a PeerAuthentication in the root namespace without selector is mesh-wide.
pub fn mesh_wide(pa: &PeerAuthentication, root: &str) -> bool {
    pa.metadata.namespace.as_deref() == Some(root)
        && pa
            .spec
            .selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref())
            .is_none_or(|m| m.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        let v = |s| parse_version(s);
        assert_eq!(
            v("v1.27.0"),
            Some(IstioVersion {
                major: 1,
                minor: 27,
                patch: 0
            })
        );
        assert_eq!(
            v("docker.io/istio/pilot:1.26.1-distroless")
                .map(|v| v.to_string())
                .as_deref(),
            Some("1.26.1")
        );
        assert_eq!(v("1.24-alpha.abc").map(|v| v.minor), Some(24));
        assert_eq!(v("istio/pilot:latest"), None);
        assert!(v("1.23.4").unwrap() < MIN_VERSION);
        assert!(v("1.24.0").unwrap() >= MIN_VERSION);
    }

    fn facts(yaml: &str, spec_td: Option<&str>) -> ControlPlaneFacts {
        let mut inv = Inventory::default();
        inv.load_str(yaml, "t").unwrap();
        let mut spec = MeshMigrationSpec::default();
        spec.control_plane.trust_domain = spec_td.map(str::to_string);
        analyze(&inv, &spec).0
    }

    const SAIL: &str = "apiVersion: sailoperator.io/v1\nkind: Istio\nmetadata: {name: default}\nspec: {version: v1.27.0, values: {meshConfig: {trustDomain: from.values, rootNamespace: values-root}}}\n";
    const MESH: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |\n    trustDomain: from.configmap\n    trustDomainAliases: [old.td, cluster.local]\n";

    #[test]
    fn the_trust_domain_comes_from_the_spec_then_the_running_mesh_config_then_sail_values() {
        let f = facts(&format!("{SAIL}---\n{MESH}"), None);
        assert_eq!(f.trust_domain, "from.configmap");
        assert_eq!(f.trust_domain_aliases, ["old.td", "cluster.local"]);
        // The ConfigMap sets no root namespace: Sail's values do.
        assert_eq!(f.root_namespace, "values-root");
        let f = facts(SAIL, None);
        assert_eq!(f.trust_domain, "from.values");
        assert!(f.trust_domain_aliases.is_empty());
        assert_eq!(
            facts(&format!("{SAIL}---\n{MESH}"), Some("from.spec")).trust_domain,
            "from.spec"
        );
        assert_eq!(facts("", None).trust_domain, "cluster.local");
    }

    const ISTIOD: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: istiod, namespace: istio-system}\nspec:\n  selector: {matchLabels: {app: istiod}}\n  template:\n    metadata: {labels: {app: istiod}}\n    spec:\n      containers:\n      - name: discovery\n        image: docker.io/istio/pilot:1.26.1\n        env: [{name: PILOT_ENABLE_AMBIENT, value: \"true\"}]\n";

    fn analyzed(yaml: &str, mode: ControlPlaneMode) -> (ControlPlaneFacts, Vec<&'static str>) {
        let mut inv = Inventory::default();
        inv.load_str(yaml, "t").unwrap();
        let mut spec = MeshMigrationSpec::default();
        spec.control_plane.mode = mode;
        let (facts, findings) = analyze(&inv, &spec);
        (facts, findings.iter().map(|f| f.id).collect())
    }

    #[test]
    fn a_default_spec_on_a_helm_istiod_is_planned_as_external() {
        let (facts, ids) = analyzed(ISTIOD, ControlPlaneMode::Sail);
        assert_eq!(facts.mode, ControlPlaneMode::External);
        assert_eq!(facts.version.as_deref(), Some("1.26.1"));
        assert!(facts.ambient);
        assert_eq!(
            facts.object.map(|o| o.to_string()).as_deref(),
            Some("Deployment/istio-system/istiod")
        );
        assert!(
            ids.contains(&f::CONTROL_PLANE_EXTERNAL_DETECTED.id),
            "{ids:?}"
        );
        assert!(!ids.contains(&f::CONTROL_PLANE_NOT_FOUND.id), "{ids:?}");
        assert!(!ids.contains(&f::ISTIO_VERSION_UNKNOWN.id), "{ids:?}");
        // Chosen explicitly: nothing was detected.
        let (facts, ids) = analyzed(ISTIOD, ControlPlaneMode::External);
        assert_eq!(facts.mode, ControlPlaneMode::External);
        assert!(
            !ids.contains(&f::CONTROL_PLANE_EXTERNAL_DETECTED.id),
            "{ids:?}"
        );
    }

    #[test]
    fn sail_stays_sail_when_its_istio_exists_or_it_manages_istiod() {
        let (facts, ids) = analyzed(&format!("{SAIL}---\n{ISTIOD}"), ControlPlaneMode::Sail);
        assert_eq!(facts.mode, ControlPlaneMode::Sail);
        assert_eq!(facts.version.as_deref(), Some("v1.27.0"));
        assert!(
            !ids.contains(&f::CONTROL_PLANE_EXTERNAL_DETECTED.id),
            "{ids:?}"
        );
        // Sail's istiod without its Istio in the inventory: the Istio is missing, not Sail.
        let owned = ISTIOD.replace(
            "namespace: istio-system}",
            "namespace: istio-system, ownerReferences: [{apiVersion: sailoperator.io/v1, kind: IstioRevision, name: default, uid: u1}]}",
        );
        let (facts, ids) = analyzed(&owned, ControlPlaneMode::Sail);
        assert_eq!(facts.mode, ControlPlaneMode::Sail);
        assert!(ids.contains(&f::CONTROL_PLANE_NOT_FOUND.id), "{ids:?}");
        // Nothing at all: Sail, not found.
        let (facts, ids) = analyzed("", ControlPlaneMode::Sail);
        assert_eq!(facts.mode, ControlPlaneMode::Sail);
        assert!(ids.contains(&f::CONTROL_PLANE_NOT_FOUND.id), "{ids:?}");
    }

    #[test]
    fn an_external_control_plane_reads_the_mesh_config_map() {
        let mut inv = Inventory::default();
        inv.load_str(MESH, "t").unwrap();
        let mut spec = MeshMigrationSpec::default();
        spec.control_plane.mode = ControlPlaneMode::External;
        let f = analyze(&inv, &spec).0;
        assert_eq!(f.trust_domain, "from.configmap");
        assert_eq!(f.root_namespace, "istio-system");
    }
}
