//! The path a probe's request takes through the mesh, worked out from a snapshot of the
//! cluster: who the caller is, which Service and endpoints the URL reaches, whether a
//! waypoint sits in between, and which proxies on the way judge the request with which peer
//! identity. Pure: no I/O; [`super::enforce`] asks istiod's code what each proxy enforces.
//!
//! The model (Istio's documented behaviour; `docs/semantics.md`, `/work/shared/DESIGN.md` §4):
//!
//! - **Dataplane of a Pod.** A sidecar (`sidecar.istio.io/status` or an `istio-proxy`
//!   container, native sidecars included) wins; else ztunnel captures it when istio-cni
//!   annotated it `ambient.istio.io/redirection: enabled`; else it is outside the mesh
//!   (plaintext, no identity). Identity: `<trust domain>/ns/<ns>/sa/<service account>`.
//! - **A sidecar caller** sends straight to a destination Pod, even when the Service is bound
//!   to a waypoint: upstream sidecars do not use waypoints (istio/istio#51445). To a sidecar it
//!   sends mutual TLS (auto mTLS), plaintext when the destination's PeerAuthentication is
//!   DISABLE; to an ambient Pod it speaks HBONE only when it has HBONE itself
//!   (`networking.istio.io/tunnel=http` or `ISTIO_META_ENABLE_HBONE`), and otherwise sends
//!   plaintext (ambient Pods carry no `security.istio.io/tlsMode` label), so ztunnel sees no
//!   identity.
//! - **An ambient caller**'s ztunnel sends to the waypoint when the Service is bound
//!   (`istio.io/WaypointBound` True), else straight to the Pod: HBONE to an ambient Pod or an
//!   HBONE sidecar, plaintext to anything else.
//! - **A waypoint** judges with the caller's identity and forwards with its own
//!   (`<td>/ns/<gateway ns>/sa/<gateway name>`, or `gateway.istio.io/service-account`): the
//!   destination's ztunnel or sidecar sees the waypoint, not the caller.
//! - **A plaintext caller** reaches any Pod directly; a sidecar refuses it when the
//!   Pod's PeerAuthentication (workload, else namespace, else mesh-wide; port-level modes
//!   included) is STRICT, and so does ztunnel (istiod's STRICT policy for ztunnel).
//! - **Endpoints** are the Service selector's Pods that are Running and Ready and not being
//!   deleted. Routing (VirtualServices, HTTPRoutes, subsets) is not modelled: every endpoint
//!   is a place the request may land.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::{Namespace, Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use meshmig_api::istio::{AuthorizationPolicy, PeerAuthentication};
use meshmig_api::names::istio as n;
use meshmig_istio_oracle::ztunnel::Identity;

use crate::cni::{REDIRECTION_ENABLED, enrolled, has_sidecar};
use crate::views::Gateway;

/// The Kubernetes DNS suffix Services resolve under.
const CLUSTER_DOMAIN: &str = "svc.cluster.local";
/// Label istiod puts on a waypoint's Deployment, Pods and Service: the Gateway's name.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// The MeshConfig settings the path and istiod's conversions depend on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mesh {
    /// `trustDomain` (default `cluster.local`).
    pub trust_domain: String,
    /// `rootNamespace`: its selector-less policies are mesh-wide (default `istio-system`).
    pub root_namespace: String,
}

impl Default for Mesh {
    fn default() -> Self {
        Self {
            trust_domain: "cluster.local".into(),
            root_namespace: "istio-system".into(),
        }
    }
}

/// What the cluster holds at the moment of the probe.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// MeshConfig.
    pub mesh: Mesh,
    /// Namespaces (their labels choose waypoints and ambient enrolment).
    pub namespaces: Vec<Namespace>,
    /// Pods of the destination namespace and waypoint Pods.
    pub pods: Vec<Pod>,
    /// Services of the destination namespace.
    pub services: Vec<Service>,
    /// Gateways (waypoints).
    pub gateways: Vec<Gateway>,
    /// AuthorizationPolicies.
    pub policies: Vec<AuthorizationPolicy>,
    /// PeerAuthentications.
    pub peer_authentications: Vec<PeerAuthentication>,
}

impl Snapshot {
    fn namespace_labels(&self, name: &str) -> BTreeMap<String, String> {
        self.namespaces
            .iter()
            .find(|ns| ns.name_any() == name)
            .map(|ns| ns.labels().clone())
            .unwrap_or_default()
    }
}

/// How a Pod takes part in the mesh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dataplane {
    /// It runs a sidecar; `hbone` when the sidecar speaks HBONE.
    Sidecar {
        /// Whether it speaks HBONE.
        hbone: bool,
    },
    /// ztunnel captures it.
    Ambient,
    /// Outside the mesh: plaintext, no identity.
    Outside,
}

/// A Pod as the mesh sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Labels (policy selectors match them).
    pub labels: BTreeMap<String, String>,
    /// Service account.
    pub service_account: String,
    /// Pod IP (unspecified when it has none yet).
    pub ip: IpAddr,
    /// Sidecar, ambient or outside.
    pub dataplane: Dataplane,
}

impl Workload {
    /// The Pod's mesh view.
    pub fn of(pod: &Pod) -> Self {
        let spec = pod.spec.as_ref();
        let service_account = spec
            .and_then(|s| s.service_account_name.clone().or(s.service_account.clone()))
            .unwrap_or_else(|| "default".into());
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        Self {
            namespace: pod.namespace().unwrap_or_default(),
            name: pod.name_any(),
            labels: pod.labels().clone(),
            service_account,
            ip,
            dataplane: dataplane(pod),
        }
    }

    /// The SPIFFE identity it presents, none outside the mesh.
    pub fn identity(&self, mesh: &Mesh) -> Option<Identity> {
        match self.dataplane {
            Dataplane::Outside => None,
            Dataplane::Sidecar { .. } | Dataplane::Ambient => Some(Identity::new(
                &mesh.trust_domain,
                &self.namespace,
                &self.service_account,
            )),
        }
    }
}

fn dataplane(pod: &Pod) -> Dataplane {
    if has_sidecar(pod) {
        return Dataplane::Sidecar {
            hbone: sidecar_hbone(pod),
        };
    }
    if captured(pod) {
        Dataplane::Ambient
    } else {
        Dataplane::Outside
    }
}

fn captured(pod: &Pod) -> bool {
    pod.annotations().get(n::REDIRECTION).map(String::as_str) == Some(REDIRECTION_ENABLED)
}

/// The injector's tunnel label, or `ISTIO_META_ENABLE_HBONE=true` on the proxy container,
/// directly or in the `proxyMetadata` of its `PROXY_CONFIG` (JSON or YAML).
fn sidecar_hbone(pod: &Pod) -> bool {
    let labelled = pod.labels().get(n::TUNNEL).map(String::as_str) == Some("http");
    let env = pod.spec.as_ref().is_some_and(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .filter(|c| c.name == n::PROXY_CONTAINER)
            .flat_map(|c| c.env.iter().flatten())
            .any(|e| match (e.name.as_str(), e.value.as_deref()) {
                (n::ENABLE_HBONE, Some(v)) => is_true(v),
                (n::PROXY_CONFIG_ENV, Some(config)) => proxy_config_hbone(config),
                _ => false,
            })
    });
    labelled || env
}

fn is_true(value: &str) -> bool {
    value.eq_ignore_ascii_case("true")
}

fn proxy_config_hbone(config: &str) -> bool {
    let parsed: Option<serde_json::Value> = serde_json::from_str(config)
        .ok()
        .or_else(|| serde_saphyr::from_str(config).ok());
    parsed
        .as_ref()
        .and_then(|c| c.get("proxyMetadata")?.get(n::ENABLE_HBONE)?.as_str())
        .is_some_and(is_true)
}

/// The wire protocol of a Service port, as istiod decides which filter chain serves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP filters judge each request (declared HTTP, or sniffed: curl speaks HTTP).
    Http,
    /// Declared TCP (or TLS, or a database protocol): network filters judge the connection.
    Tcp,
}

/// PeerAuthentication mode of a workload port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MtlsMode {
    /// Mutual TLS only: plaintext is refused.
    Strict,
    /// Both (Istio's default).
    Permissive,
    /// Plaintext only.
    Disable,
}

/// A waypoint a Service is bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waypoint {
    /// The Gateway's namespace.
    pub namespace: String,
    /// The Gateway's name.
    pub gateway: String,
    /// The identity it forwards with.
    pub identity: Identity,
    /// Its address (a waypoint Pod's IP, else the Gateway's address).
    pub ip: IpAddr,
}

/// The Service port the URL reaches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub service: String,
    /// Its cluster IP.
    pub vip: IpAddr,
    /// The Service port.
    pub port: u16,
    /// Its protocol.
    pub protocol: Protocol,
    /// The waypoint it is bound to, if any.
    pub waypoint: Option<Waypoint>,
}

/// One endpoint: a Pod and the port the Service sends to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The Pod.
    pub workload: Workload,
    /// The target (container) port.
    pub port: u16,
    /// Its PeerAuthentication mode on that port.
    pub mtls: MtlsMode,
}

/// Who a proxy on the path sees as the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The identity proved by mTLS/HBONE; `None` for plaintext.
    pub identity: Option<Identity>,
    /// The peer's address.
    pub ip: IpAddr,
}

/// A proxy that judges the request on its way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hop {
    /// The waypoint, for the target Service (targetRefs policies).
    Waypoint {
        /// Which.
        waypoint: Waypoint,
        /// The caller.
        peer: Peer,
    },
    /// The destination's sidecar, inbound (selector, namespace and mesh-wide policies).
    Sidecar {
        /// The destination.
        endpoint: Endpoint,
        /// Who it sees.
        peer: Peer,
    },
    /// The destination's ztunnel, inbound (the same policies, as istiod converts them).
    Ztunnel {
        /// The destination.
        endpoint: Endpoint,
        /// Who it sees.
        peer: Peer,
    },
}

/// The way to one endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trip {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// The proxies that judge the request, in order (none for a Pod outside the mesh).
    pub hops: Vec<Hop>,
    /// Whether curl talks to a local sidecar (which answers for failures further on).
    pub caller_sidecar: bool,
}

/// Where the request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// To the target, over one trip per endpoint.
    Reached {
        /// The Service port (boxed: the larger variant by far).
        target: Box<Target>,
        /// One per endpoint.
        trips: Vec<Trip>,
    },
    /// Nowhere.
    Unreachable(Unreachable),
}

/// Why the request reaches no Pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unreachable {
    /// The host is no Service in the cluster (DNS fails).
    UnknownHost(String),
    /// The Service has no such port.
    NoSuchPort {
        /// `namespace/name`.
        service: String,
        /// The port asked for.
        port: u16,
    },
    /// The Service has no ready endpoint.
    NoEndpoints {
        /// `namespace/name`.
        service: String,
    },
}

/// Why the path cannot be worked out.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Something this model does not cover: the probe must not pass on a guess.
    #[error("not modelled: {0}")]
    NotModelled(String),
    /// The cluster is between two states (a binding being written): ask again shortly.
    #[error("{0}")]
    Settling(String),
}

/// The namespace and name of the Service `host` names, seen from `caller_namespace`: `name`,
/// `name.ns`, `name.ns.svc` or `name.ns.svc.cluster.local`. `None`: not a Service name.
pub fn service_name(host: &str, caller_namespace: &str) -> Option<(String, String)> {
    let host = host.trim_end_matches('.');
    let short = host
        .strip_suffix(CLUSTER_DOMAIN)
        .map(|h| h.trim_end_matches('.'))
        .or_else(|| host.strip_suffix(".svc"))
        .unwrap_or(host);
    match short.split('.').collect::<Vec<_>>().as_slice() {
        [name] if !name.is_empty() => Some((caller_namespace.to_string(), (*name).to_string())),
        [name, ns] if !name.is_empty() && !ns.is_empty() => {
            Some(((*ns).to_string(), (*name).to_string()))
        }
        _ => None,
    }
}

/// The route from `caller` to `host:port`.
pub fn route(
    snapshot: &Snapshot,
    caller: &Workload,
    host: &str,
    port: u16,
) -> Result<Route, PathError> {
    if host.parse::<IpAddr>().is_ok() {
        return Err(PathError::NotModelled(format!(
            "a probe URL with an IP address ({host}): only Service names are routed"
        )));
    }
    let Some((namespace, name)) = service_name(host, &caller.namespace) else {
        return Ok(Route::Unreachable(Unreachable::UnknownHost(host.into())));
    };
    let Some(service) = snapshot
        .services
        .iter()
        .find(|s| s.name_any() == name && s.namespace().as_deref() == Some(namespace.as_str()))
    else {
        return Ok(Route::Unreachable(Unreachable::UnknownHost(host.into())));
    };
    let qualified = format!("{namespace}/{name}");
    let Some(service_port) = service_port(service, port) else {
        return Ok(Route::Unreachable(Unreachable::NoSuchPort {
            service: qualified,
            port,
        }));
    };
    let target = target(snapshot, service, service_port, port)?;
    let endpoints = endpoints(snapshot, service, service_port);
    if endpoints.is_empty() {
        return Ok(Route::Unreachable(Unreachable::NoEndpoints {
            service: qualified,
        }));
    }
    let trips = endpoints
        .into_iter()
        .map(|endpoint| trip(&snapshot.mesh, caller, &target, endpoint))
        .collect();
    Ok(Route::Reached {
        target: Box::new(target),
        trips,
    })
}

fn service_port(service: &Service, port: u16) -> Option<&ServicePort> {
    service
        .spec
        .as_ref()?
        .ports
        .iter()
        .flatten()
        .find(|p| p.port == i32::from(port))
}

fn target(
    snapshot: &Snapshot,
    service: &Service,
    service_port: &ServicePort,
    port: u16,
) -> Result<Target, PathError> {
    let namespace = service.namespace().unwrap_or_default();
    let cluster_ip = service
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.clone())
        .unwrap_or_default();
    let vip = cluster_ip.parse().map_err(|_| {
        PathError::NotModelled(format!(
            "Service {namespace}/{} has cluster IP {cluster_ip:?} (headless Services are not modelled)",
            service.name_any()
        ))
    })?;
    Ok(Target {
        waypoint: bound_waypoint(snapshot, service)?,
        namespace,
        service: service.name_any(),
        vip,
        port,
        protocol: protocol(service_port),
    })
}

/// Istio's protocol selection: `appProtocol`, else the port name's prefix; an undeclared
/// protocol is sniffed, and curl speaks HTTP.
fn protocol(port: &ServicePort) -> Protocol {
    let declared = port
        .app_protocol
        .clone()
        .or_else(|| {
            port.name
                .as_ref()
                .map(|n| n.split('-').next().unwrap_or("").into())
        })
        .unwrap_or_default()
        .to_ascii_lowercase();
    match declared.as_str() {
        "tcp" | "tls" | "https" | "mongo" | "mysql" | "redis" => Protocol::Tcp,
        _ => Protocol::Http,
    }
}

/// The waypoint of a Service whose `istio.io/WaypointBound` condition is True: the binding
/// istiod reports, resolved to the Gateway its labels name.
fn bound_waypoint(snapshot: &Snapshot, service: &Service) -> Result<Option<Waypoint>, PathError> {
    let bound = service
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == n::WAYPOINT_BOUND && c.status == "True")
        });
    if !bound {
        return Ok(None);
    }
    let namespace = service.namespace().unwrap_or_default();
    let settling = |why: String| {
        PathError::Settling(format!(
            "Service {namespace}/{} is WaypointBound but {why}",
            service.name_any()
        ))
    };
    let (gw_namespace, gw_name) =
        requested_waypoint(service, &snapshot.namespace_labels(&namespace))
            .ok_or_else(|| settling("asks for no waypoint".into()))?;
    let gateway = snapshot
        .gateways
        .iter()
        .find(|g| {
            g.name_any() == gw_name && g.namespace().as_deref() == Some(gw_namespace.as_str())
        })
        .ok_or_else(|| settling(format!("Gateway {gw_namespace}/{gw_name} does not exist")))?;
    let service_account = gateway
        .annotations()
        .get(n::GATEWAY_SERVICE_ACCOUNT)
        .cloned()
        .unwrap_or_else(|| gw_name.clone());
    Ok(Some(Waypoint {
        identity: Identity::new(&snapshot.mesh.trust_domain, &gw_namespace, service_account),
        ip: waypoint_ip(snapshot, gateway),
        namespace: gw_namespace,
        gateway: gw_name,
    }))
}

/// The waypoint `(namespace, name)` a Service asks for: its own `istio.io/use-waypoint`
/// label, else its namespace's (`none` opts out), in the namespace that
/// `istio.io/use-waypoint-namespace` beside it names. Read only to find the Gateway of a
/// binding istiod reports: whether a Service is bound is istiod's call.
fn requested_waypoint(
    service: &Service,
    namespace_labels: &BTreeMap<String, String>,
) -> Option<(String, String)> {
    let labels = service.labels();
    if labels.contains_key(GATEWAY_NAME_LABEL) {
        return None; // a waypoint's own Service never goes through a waypoint
    }
    let (source, name) = match labels.get(n::USE_WAYPOINT) {
        Some(name) => (labels, name),
        None => (namespace_labels, namespace_labels.get(n::USE_WAYPOINT)?),
    };
    if name.is_empty() || name == "none" {
        return None;
    }
    let namespace = source
        .get(n::USE_WAYPOINT_NAMESPACE)
        .cloned()
        .or_else(|| service.namespace())
        .unwrap_or_default();
    Some((namespace, name.clone()))
}

fn waypoint_ip(snapshot: &Snapshot, gateway: &Gateway) -> IpAddr {
    let pod_ip = snapshot
        .pods
        .iter()
        .filter(|p| p.namespace() == gateway.namespace())
        .filter(|p| p.labels().get(GATEWAY_NAME_LABEL) == Some(&gateway.name_any()))
        .map(Workload::of)
        .map(|w| w.ip)
        .find(|ip| !ip.is_unspecified());
    let address = || {
        gateway
            .status
            .as_ref()?
            .get("addresses")?
            .get(0)?
            .get("value")?
            .as_str()?
            .parse()
            .ok()
    };
    pod_ip
        .or_else(address)
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// The Service's ready Pods, with the port each receives on.
fn endpoints(snapshot: &Snapshot, service: &Service, port: &ServicePort) -> Vec<Endpoint> {
    let namespace = service.namespace().unwrap_or_default();
    let Some(selector) = service
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .filter(|s| !s.is_empty())
    else {
        return Vec::new(); // Endpoints managed by hand are not modelled: nothing to route to
    };
    let mut endpoints: Vec<Endpoint> = snapshot
        .pods
        .iter()
        .filter(|p| p.namespace().as_deref() == Some(namespace.as_str()) && ready(p))
        .filter(|p| subset(selector, p.labels()))
        .filter_map(|p| {
            let target_port = target_port(p, port)?;
            let workload = Workload::of(p);
            let mtls = mtls_mode(snapshot, &workload, target_port);
            Some(Endpoint {
                workload,
                port: target_port,
                mtls,
            })
        })
        .collect();
    endpoints.sort_by(|a, b| a.workload.name.cmp(&b.workload.name));
    endpoints
}

fn ready(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    pod.metadata.deletion_timestamp.is_none()
        && status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn subset(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// `targetPort` as a number or a container port name (a Pod without that name is skipped,
/// as the EndpointSlice controller skips it); absent: the Service port.
fn target_port(pod: &Pod, port: &ServicePort) -> Option<u16> {
    let number = match &port.target_port {
        None => port.port,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(name)) => {
            pod.spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| p.name.as_deref() == Some(name.as_str()))?
                .container_port
        }
    };
    u16::try_from(number).ok()
}

/// The PeerAuthentication mode of `workload` on `port`: the oldest workload-selector policy
/// of its namespace (its port-level mode first), else the namespace's, else the mesh-wide one
/// in the root namespace; `UNSET` defers to the next; PERMISSIVE by default.
pub fn mtls_mode(snapshot: &Snapshot, workload: &Workload, port: u16) -> MtlsMode {
    let mut policies: Vec<&PeerAuthentication> = snapshot
        .peer_authentications
        .iter()
        .filter(|p| p.namespace().as_deref() == Some(workload.namespace.as_str()))
        .collect();
    policies.sort_by_key(|p| oldest_first(p));
    let workload_mode = policies
        .iter()
        .find(|p| peer_selector(p).is_some_and(|labels| subset(labels, &workload.labels)))
        .and_then(|p| {
            let port_mode = p
                .spec
                .port_level_mtls
                .as_ref()
                .and_then(|ports| ports.get(&port.to_string()))
                .and_then(|m| mode(m.mode.as_deref()));
            port_mode.or_else(|| workload_wide_mode(p))
        });
    workload_mode
        .or_else(|| namespace_wide_mode(snapshot, &workload.namespace))
        .or_else(|| namespace_wide_mode(snapshot, &snapshot.mesh.root_namespace))
        .unwrap_or(MtlsMode::Permissive)
}

fn oldest_first(p: &PeerAuthentication) -> (Option<k8s_openapi::jiff::Timestamp>, String) {
    (
        p.metadata.creation_timestamp.clone().map(|t| t.0),
        p.name_any(),
    )
}

/// A PeerAuthentication's non-empty `matchLabels`; `None` means namespace-wide.
fn peer_selector(p: &PeerAuthentication) -> Option<&BTreeMap<String, String>> {
    p.spec
        .selector
        .as_ref()
        .and_then(|s| s.match_labels.as_ref())
        .filter(|labels| !labels.is_empty())
}

fn workload_wide_mode(p: &PeerAuthentication) -> Option<MtlsMode> {
    mode(p.spec.mtls.as_ref().and_then(|m| m.mode.as_deref()))
}

/// The oldest selector-less PeerAuthentication of `namespace` (mesh-wide in the root one).
fn namespace_wide_mode(snapshot: &Snapshot, namespace: &str) -> Option<MtlsMode> {
    snapshot
        .peer_authentications
        .iter()
        .filter(|p| p.namespace().as_deref() == Some(namespace) && peer_selector(p).is_none())
        .min_by_key(|p| oldest_first(p))
        .and_then(workload_wide_mode)
}

fn mode(value: Option<&str>) -> Option<MtlsMode> {
    match value? {
        "STRICT" => Some(MtlsMode::Strict),
        "PERMISSIVE" => Some(MtlsMode::Permissive),
        "DISABLE" => Some(MtlsMode::Disable),
        _ => None, // UNSET: inherit
    }
}

/// What sends the request to the endpoint, which decides what the endpoint's proxy sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sender {
    Sidecar { hbone: bool },
    Ztunnel,
    Waypoint,
    Plaintext,
}

fn trip(mesh: &Mesh, caller: &Workload, target: &Target, endpoint: Endpoint) -> Trip {
    let from_caller = Peer {
        identity: caller.identity(mesh),
        ip: caller.ip,
    };
    let (sender, mut hops, peer) = match (caller.dataplane, &target.waypoint) {
        // Upstream sidecars never use waypoints (istio/istio#51445).
        (Dataplane::Sidecar { hbone }, _) => (Sender::Sidecar { hbone }, vec![], from_caller),
        (Dataplane::Ambient, Some(waypoint)) => {
            let judged_at_waypoint = Hop::Waypoint {
                waypoint: waypoint.clone(),
                peer: from_caller,
            };
            let onwards = Peer {
                identity: Some(waypoint.identity.clone()),
                ip: waypoint.ip,
            };
            (Sender::Waypoint, vec![judged_at_waypoint], onwards)
        }
        (Dataplane::Ambient, None) => (Sender::Ztunnel, vec![], from_caller),
        (Dataplane::Outside, _) => (Sender::Plaintext, vec![], from_caller),
    };
    hops.extend(arrival(&endpoint, sender, peer));
    Trip {
        endpoint,
        hops,
        caller_sidecar: matches!(caller.dataplane, Dataplane::Sidecar { .. }),
    }
}

/// The proxy in front of the endpoint, and who it sees.
fn arrival(endpoint: &Endpoint, sender: Sender, peer: Peer) -> Option<Hop> {
    let carries_identity = match (endpoint.workload.dataplane, sender) {
        (Dataplane::Outside, _) => return None, // nobody enforces anything there
        (_, Sender::Plaintext) => false,
        // Auto mTLS sends plaintext to a workload whose PeerAuthentication disables mTLS.
        (Dataplane::Sidecar { .. }, Sender::Sidecar { .. }) => endpoint.mtls != MtlsMode::Disable,
        // ztunnel tunnels (HBONE) only to workloads that speak it.
        (Dataplane::Sidecar { hbone }, Sender::Ztunnel) => hbone,
        (Dataplane::Sidecar { .. }, Sender::Waypoint) => true,
        // A sidecar without HBONE cannot tunnel to an ambient Pod: it sends plaintext.
        (Dataplane::Ambient, Sender::Sidecar { hbone }) => hbone,
        (Dataplane::Ambient, Sender::Ztunnel | Sender::Waypoint) => true,
    };
    let peer = Peer {
        identity: peer.identity.filter(|_| carries_identity),
        ip: peer.ip,
    };
    let endpoint = endpoint.clone();
    Some(match endpoint.workload.dataplane {
        Dataplane::Sidecar { .. } => Hop::Sidecar { endpoint, peer },
        _ => Hop::Ztunnel { endpoint, peer },
    })
}

/// A Pod that istio-cni is about to capture: enrolled in ambient, ztunnel ready, but not
/// yet annotated. istio-cni captures a Pod before its containers start; the simulator's
/// annotation comes a moment after the Pod runs, so a probe waits for it rather than seeing
/// a Pod outside the mesh that would never exist.
pub fn capture_pending<'a>(
    snapshot: &Snapshot,
    ztunnel_ready: bool,
    pods: impl IntoIterator<Item = &'a Pod>,
) -> Option<String> {
    if !ztunnel_ready {
        return None;
    }
    pods.into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && !captured(p))
        .find(|p| {
            enrolled(
                &snapshot.namespace_labels(&p.namespace().unwrap_or_default()),
                p,
            )
        })
        .map(|p| {
            format!(
                "Pod {}/{} is enrolled in ambient and not captured yet",
                p.namespace().unwrap_or_default(),
                p.name_any()
            )
        })
}

/// The endpoints' Pods of `host`, for [`capture_pending`].
pub fn endpoint_pods<'a>(
    snapshot: &'a Snapshot,
    caller_namespace: &str,
    host: &str,
) -> Vec<&'a Pod> {
    let Some((namespace, name)) = service_name(host, caller_namespace) else {
        return Vec::new();
    };
    let selector = snapshot
        .services
        .iter()
        .find(|s| s.name_any() == name && s.namespace().as_deref() == Some(namespace.as_str()))
        .and_then(|s| s.spec.as_ref()?.selector.clone())
        .filter(|s| !s.is_empty());
    let Some(selector) = selector else {
        return Vec::new();
    };
    snapshot
        .pods
        .iter()
        .filter(|p| p.namespace().as_deref() == Some(namespace.as_str()) && ready(p))
        .filter(|p| subset(&selector, p.labels()))
        .collect()
}

/// Whether `labels` satisfy a policy's `selector.matchLabels` (no selector: every workload).
pub fn selected(
    match_labels: Option<&BTreeMap<String, String>>,
    labels: &BTreeMap<String, String>,
) -> bool {
    match_labels.is_none_or(|m| subset(m, labels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probes::fixtures::{Mode, client, peer_authentication, pod, shop, waypoint, web};
    use serde_json::json;

    fn id(ns: &str, sa: &str) -> Option<Identity> {
        Some(Identity::new("cluster.local", ns, sa))
    }

    #[test]
    fn the_service_label_overrides_the_namespace_label() {
        let service = |labels: serde_json::Value| -> Service {
            serde_json::from_value(
                json!({"metadata": {"name": "reviews", "namespace": "bookinfo", "labels": labels}}),
            )
            .unwrap()
        };
        let want = |ns_name: &str, name: &str| Some((ns_name.to_string(), name.to_string()));
        let in_ns: BTreeMap<String, String> = [(
            "istio.io/use-waypoint".to_string(),
            "ns-waypoint".to_string(),
        )]
        .into();
        assert_eq!(
            requested_waypoint(&service(json!({})), &in_ns),
            want("bookinfo", "ns-waypoint")
        );
        assert_eq!(
            requested_waypoint(&service(json!({"istio.io/use-waypoint": "mine"})), &in_ns),
            want("bookinfo", "mine")
        );
        assert_eq!(
            requested_waypoint(&service(json!({"istio.io/use-waypoint": "none"})), &in_ns),
            None
        );
        assert_eq!(
            requested_waypoint(&service(json!({})), &BTreeMap::new()),
            None
        );
        let elsewhere =
            json!({"istio.io/use-waypoint": "shared", "istio.io/use-waypoint-namespace": "infra"});
        assert_eq!(
            requested_waypoint(&service(elsewhere), &in_ns),
            want("infra", "shared")
        );
        let own = json!({"gateway.networking.k8s.io/gateway-name": "ns-waypoint"});
        assert_eq!(requested_waypoint(&service(own), &in_ns), None);
    }

    fn trips(snapshot: &Snapshot, caller: &Workload) -> Vec<Trip> {
        match route(snapshot, caller, "web.shop", 80).unwrap() {
            Route::Reached { trips, .. } => trips,
            other => panic!("not reached: {other:?}"),
        }
    }

    fn only_trip(snapshot: &Snapshot, caller: &Workload) -> Trip {
        let mut all = trips(snapshot, caller);
        assert_eq!(all.len(), 1, "{all:?}");
        all.remove(0)
    }

    fn peers(trip: &Trip) -> Vec<(&'static str, Option<Identity>)> {
        trip.hops
            .iter()
            .map(|h| match h {
                Hop::Waypoint { peer, .. } => ("waypoint", peer.identity.clone()),
                Hop::Sidecar { peer, .. } => ("sidecar", peer.identity.clone()),
                Hop::Ztunnel { peer, .. } => ("ztunnel", peer.identity.clone()),
            })
            .collect()
    }

    #[test]
    fn hbone_from_the_label_the_env_or_the_proxy_config() {
        let plain_sidecar = || web("web-1", Mode::OldSidecar, "10.2.0.1");
        assert_eq!(
            dataplane(&plain_sidecar()),
            Dataplane::Sidecar { hbone: false }
        );
        assert_eq!(
            dataplane(&web("web-1", Mode::Sidecar, "10.2.0.1")),
            Dataplane::Sidecar { hbone: true }
        );
        for config in [
            r#"{"proxyMetadata": {"ISTIO_META_ENABLE_HBONE": "true"}}"#,
            "proxyMetadata:\n  ISTIO_META_ENABLE_HBONE: \"true\"\n",
        ] {
            let mut pod = plain_sidecar();
            let spec = pod.spec.as_mut().unwrap();
            let proxy = spec
                .containers
                .iter_mut()
                .find(|c| c.name == "istio-proxy")
                .unwrap();
            proxy.env = Some(vec![k8s_openapi::api::core::v1::EnvVar {
                name: "PROXY_CONFIG".into(),
                value: Some(config.into()),
                value_from: None,
            }]);
            assert_eq!(
                dataplane(&pod),
                Dataplane::Sidecar { hbone: true },
                "{config}"
            );
        }
    }

    #[test]
    fn service_names() {
        let name = |h: &str| service_name(h, "front");
        let web = |ns: &str| Some((ns.to_string(), "web".to_string()));
        assert_eq!(name("web"), web("front"));
        assert_eq!(name("web.shop"), web("shop"));
        assert_eq!(name("web.shop.svc"), web("shop"));
        assert_eq!(name("web.shop.svc.cluster.local"), web("shop"));
        assert_eq!(name("web.shop.svc.cluster.local."), web("shop"));
        assert_eq!(name("api.example.com"), None);
    }

    #[test]
    fn sidecar_to_sidecar_carries_the_callers_identity() {
        let snap = shop(vec![web("web-1", Mode::Sidecar, "10.2.0.1")], false);
        let trip = only_trip(&snap, &client(Mode::Sidecar));
        assert_eq!(peers(&trip), [("sidecar", id("shop", "client"))]);
        assert!(trip.caller_sidecar);
        assert_eq!(trip.endpoint.port, 8080, "the named target port");
    }

    #[test]
    fn sidecar_to_ambient_skips_the_waypoint() {
        let snap = shop(vec![web("web-1", Mode::Ambient, "10.2.0.1")], true);
        let trip = only_trip(&snap, &client(Mode::Sidecar));
        assert_eq!(peers(&trip), [("ztunnel", id("shop", "client"))]);
        // Without HBONE the sidecar cannot tunnel: ztunnel sees plaintext.
        let trip = only_trip(&snap, &client(Mode::OldSidecar));
        assert_eq!(peers(&trip), [("ztunnel", None)]);
    }

    #[test]
    fn ambient_through_the_waypoint_arrives_as_the_waypoint() {
        let snap = shop(vec![web("web-1", Mode::Ambient, "10.2.0.1")], true);
        let trip = only_trip(&snap, &client(Mode::Ambient));
        assert_eq!(
            peers(&trip),
            [
                ("waypoint", id("shop", "client")),
                ("ztunnel", id("shop", "waypoint"))
            ]
        );
        assert!(!trip.caller_sidecar);
        let Hop::Ztunnel { peer, .. } = &trip.hops[1] else {
            panic!("{trip:?}")
        };
        assert_eq!(peer.ip, "10.96.0.99".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn a_waypoint_service_account_annotation_names_its_identity() {
        let mut snap = shop(vec![web("web-1", Mode::Sidecar, "10.2.0.1")], true);
        let mut gw = waypoint();
        gw.metadata.annotations =
            Some([(n::GATEWAY_SERVICE_ACCOUNT.to_string(), "wp-sa".to_string())].into());
        snap.gateways = vec![gw];
        let trip = only_trip(&snap, &client(Mode::Ambient));
        assert_eq!(
            peers(&trip),
            [
                ("waypoint", id("shop", "client")),
                ("sidecar", id("shop", "wp-sa"))
            ]
        );
    }

    #[test]
    fn ambient_to_ambient_without_a_waypoint() {
        let snap = shop(vec![web("web-1", Mode::Ambient, "10.2.0.1")], false);
        let trip = only_trip(&snap, &client(Mode::Ambient));
        assert_eq!(peers(&trip), [("ztunnel", id("shop", "client"))]);
        // To a sidecar without HBONE ztunnel sends plaintext.
        let snap = shop(vec![web("web-1", Mode::OldSidecar, "10.2.0.1")], false);
        let trip = only_trip(&snap, &client(Mode::Ambient));
        assert_eq!(peers(&trip), [("sidecar", None)]);
    }

    #[test]
    fn plaintext_callers_have_no_identity_and_pods_outside_the_mesh_no_proxy() {
        let mut snap = shop(vec![web("web-1", Mode::Sidecar, "10.2.0.1")], true);
        snap.peer_authentications = vec![peer_authentication("shop", "STRICT")];
        let trip = only_trip(&snap, &client(Mode::Plain));
        assert_eq!(peers(&trip), [("sidecar", None)]);
        assert_eq!(trip.endpoint.mtls, MtlsMode::Strict);
        let snap = shop(vec![web("web-1", Mode::Plain, "10.2.0.1")], false);
        assert!(only_trip(&snap, &client(Mode::Sidecar)).hops.is_empty());
    }

    #[test]
    fn every_ready_endpoint_is_a_trip() {
        let mut not_ready = web("web-3", Mode::Sidecar, "10.2.0.3");
        not_ready.status.as_mut().unwrap().conditions = None;
        let mut deleting = web("web-4", Mode::Sidecar, "10.2.0.4");
        deleting.metadata.deletion_timestamp = Some(crate::conditions::now());
        let other = pod(
            "shop",
            "db",
            "db",
            json!({"app": "db"}),
            Mode::Sidecar,
            "10.2.0.5",
        );
        let snap = shop(
            vec![
                web("web-2", Mode::Ambient, "10.2.0.2"),
                web("web-1", Mode::Sidecar, "10.2.0.1"),
                not_ready,
                deleting,
                other,
            ],
            false,
        );
        let names: Vec<String> = trips(&snap, &client(Mode::Sidecar))
            .into_iter()
            .map(|t| t.endpoint.workload.name)
            .collect();
        assert_eq!(names, ["web-1", "web-2"]);
    }

    #[test]
    fn unreachable_targets() {
        let snap = shop(vec![], false);
        let caller = client(Mode::Sidecar);
        assert_eq!(
            route(&snap, &caller, "nope.shop", 80).unwrap(),
            Route::Unreachable(Unreachable::UnknownHost("nope.shop".into()))
        );
        assert_eq!(
            route(&snap, &caller, "web.shop", 81).unwrap(),
            Route::Unreachable(Unreachable::NoSuchPort {
                service: "shop/web".into(),
                port: 81
            })
        );
        assert_eq!(
            route(&snap, &caller, "web", 80).unwrap(),
            Route::Unreachable(Unreachable::NoEndpoints {
                service: "shop/web".into()
            })
        );
        assert!(matches!(
            route(&snap, &caller, "10.96.0.10", 80),
            Err(PathError::NotModelled(_))
        ));
    }

    #[test]
    fn a_binding_without_its_gateway_is_settling() {
        let mut snap = shop(vec![web("web-1", Mode::Ambient, "10.2.0.1")], true);
        snap.gateways.clear();
        assert!(matches!(
            route(&snap, &client(Mode::Ambient), "web.shop", 80),
            Err(PathError::Settling(_))
        ));
    }

    #[test]
    fn peer_authentication_precedence() {
        let w = Workload::of(&web("web-1", Mode::Sidecar, "10.2.0.1"));
        let mut snap = shop(vec![], false);
        assert_eq!(mtls_mode(&snap, &w, 8080), MtlsMode::Permissive);
        snap.peer_authentications = vec![peer_authentication("istio-system", "STRICT")];
        assert_eq!(mtls_mode(&snap, &w, 8080), MtlsMode::Strict);
        snap.peer_authentications
            .push(peer_authentication("shop", "PERMISSIVE"));
        assert_eq!(mtls_mode(&snap, &w, 8080), MtlsMode::Permissive);
        let workload: PeerAuthentication = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "mtls": {"mode": "UNSET"},
                     "portLevelMtls": {"8080": {"mode": "STRICT"}}},
        }))
        .unwrap();
        snap.peer_authentications.push(workload);
        assert_eq!(mtls_mode(&snap, &w, 8080), MtlsMode::Strict);
        // UNSET on other ports defers to the namespace.
        assert_eq!(mtls_mode(&snap, &w, 9090), MtlsMode::Permissive);
    }

    #[test]
    fn protocols() {
        let port = |v: serde_json::Value| -> ServicePort { serde_json::from_value(v).unwrap() };
        assert_eq!(
            protocol(&port(json!({"port": 80, "name": "http-web"}))),
            Protocol::Http
        );
        assert_eq!(protocol(&port(json!({"port": 80}))), Protocol::Http);
        assert_eq!(
            protocol(&port(json!({"port": 80, "name": "tcp-db"}))),
            Protocol::Tcp
        );
        assert_eq!(
            protocol(&port(
                json!({"port": 80, "name": "http", "appProtocol": "tcp"})
            )),
            Protocol::Tcp
        );
    }

    #[test]
    fn pods_about_to_be_captured_are_pending() {
        let mut pod = web("web-1", Mode::Plain, "10.2.0.1");
        let mut snap = shop(vec![], false);
        assert_eq!(capture_pending(&snap, true, [&pod]), None);
        snap.namespaces[0]
            .metadata
            .labels
            .get_or_insert_default()
            .insert(n::DATAPLANE_MODE.into(), "ambient".into());
        assert!(capture_pending(&snap, true, [&pod]).is_some());
        assert_eq!(capture_pending(&snap, false, [&pod]), None);
        pod.metadata
            .annotations
            .get_or_insert_default()
            .insert(n::REDIRECTION.into(), "enabled".into());
        assert_eq!(capture_pending(&snap, true, [&pod]), None);
    }
}
