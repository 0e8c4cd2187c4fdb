//! What each proxy on a probe's path enforces at this moment, decided with istiod's own code:
//! the `meshmig-istio` binary (`e2e/istio`, built from the pinned istio.io/istio) gives the
//! Envoy RBAC istiod builds for the sidecar or waypoint and the Authorizations istiod sends to
//! ztunnel; `meshmig_istio_oracle::envoy_rbac` and `::ztunnel` evaluate them as Envoy and
//! ztunnel do.
//!
//! - **sidecar** (destination, inbound): every selector, namespace-wide and mesh-wide policy
//!   that applies to the Pod, in full (`rbac --for sidecar`); a plaintext peer is refused
//!   first when the port's PeerAuthentication is STRICT.
//! - **waypoint**: the targetRefs policies attached to the Service or to the waypoint's
//!   Gateway (and GatewayClass `istio-waypoint` in the root namespace), in full
//!   (`rbac --for waypoint`), with the caller's identity from the HBONE filter state.
//! - **ztunnel** (destination, inbound): the same selector/namespace/mesh-wide policies as
//!   istiod converts them (`ztunnel`, L7 parts dropped), plus istiod's STRICT policy for a
//!   STRICT workload (ztunnel refuses a peer without identity).
//! - **Dry-run** policies are enforced by nobody: Envoy gets them as `shadow_rules`, ztunnel
//!   not at all (istiod sends them only with `AMBIENT_ENABLE_DRY_RUN_AUTHORIZATION_POLICY`,
//!   and then ztunnel only logs them).
//! - **CUSTOM**: no ext-authz server runs here, so a matching CUSTOM rule is a denial. That is
//!   what istiod itself builds for a proxy when no extension provider is configured (its
//!   `deny-due-to-bad-CUSTOM-action` DENY), so the sidecar and waypoint legs deny; istiod
//!   sends ztunnel nothing for CUSTOM, so ztunnel does not enforce it (as in Istio).
//!
//! The request is denied if any proxy on the path denies it. What curl then sees: an HTTP
//! RBAC denial is HTTP 403 (an Envoy in front passes it on); an L4 refusal (ztunnel, STRICT,
//! a network RBAC filter) resets the connection, unless an HTTP Envoy stands between curl and
//! the refusing proxy (the caller's sidecar, or a waypoint already passed): Envoy answers a
//! reset upstream with HTTP 503. An allowed request gets HTTP 200.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::sync::{LazyLock, Mutex};

use meshmig_api::istio::AuthorizationPolicy;
use meshmig_istio_oracle::envoy_rbac::{self, Connection, Decision, HttpRequest, RbacError};
use meshmig_istio_oracle::oracle::{
    self, Oracle, Proxy, Rbac, RbacOptions, ZtunnelConversion, ZtunnelOptions,
};
use meshmig_istio_oracle::ztunnel::{
    self, Authorization, AuthorizationError, Group, Identity, Match, Rules, Scope, StringMatch,
};
use serde_json::{Value, json};

use super::path::{
    self, Dataplane, Endpoint, Hop, Mesh, MtlsMode, PathError, Peer, Protocol, Route, Snapshot,
    Target, Trip, Unreachable, Workload,
};
use super::request::{Expectation, ProbeRequest, Response};

/// Filter state key under which a waypoint keeps the HBONE peer's identity.
const PEER_PRINCIPAL: &str = "io.istio.peer_principal";
/// Name of istiod's ztunnel policy for STRICT PeerAuthentication.
const STRICT_POLICY: &str = "istio_converted_static_strict";
/// Bound on each cache: a new entry beyond it empties the cache.
const CACHE_ENTRIES: usize = 256;

/// istiod's code that judges probe requests, as the `meshmig-istio` binary runs it
/// ([`LiveIstioCode`]); another implementation lets a test take it away.
pub trait IstioCode: Send + Sync + fmt::Debug {
    /// Whether the code can be run at all. Checked before every judgement, so that no probe
    /// passes without it, not even one whose path happens to need no proxy.
    fn available(&self) -> Result<(), oracle::Error>;
    /// `rbac`: the Envoy RBAC filters for one proxy.
    fn rbac(&self, policies: &[Value], opts: &RbacOptions) -> Result<Rbac, oracle::Error>;
    /// `ztunnel`: the Authorization of each policy for ztunnel.
    fn ztunnel(
        &self,
        policies: &[Value],
        opts: &ZtunnelOptions,
    ) -> Result<Vec<ZtunnelConversion>, oracle::Error>;
}

/// The binary (`$MESHMIG_ISTIO_HOME`, else `e2e/istio/build.sh`), with answers cached per
/// input: a probe asks about the same policies and proxies as the one before it.
#[derive(Clone, Copy, Debug, Default)]
pub struct LiveIstioCode;

static RBAC_CACHE: LazyLock<Mutex<HashMap<String, Rbac>>> = LazyLock::new(Default::default);
static ZTUNNEL_CACHE: LazyLock<Mutex<HashMap<String, Vec<ZtunnelConversion>>>> =
    LazyLock::new(Default::default);

fn cached<T: Clone>(
    cache: &Mutex<HashMap<String, T>>,
    key: String,
    compute: impl FnOnce() -> Result<T, oracle::Error>,
) -> Result<T, oracle::Error> {
    // A poisoned lock only means another probe panicked mid-insert; the map is still usable.
    let hit = cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
        .cloned();
    if let Some(hit) = hit {
        return Ok(hit);
    }
    let value = compute()?;
    let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
    if map.len() >= CACHE_ENTRIES {
        map.clear();
    }
    map.insert(key, value.clone());
    Ok(value)
}

fn cache_key(options: &impl fmt::Debug, policies: &[Value]) -> String {
    format!("{options:?}\n{}", Value::from(policies.to_vec()))
}

impl IstioCode for LiveIstioCode {
    fn available(&self) -> Result<(), oracle::Error> {
        Oracle::get().map(|_| ())
    }

    fn rbac(&self, policies: &[Value], opts: &RbacOptions) -> Result<Rbac, oracle::Error> {
        cached(&RBAC_CACHE, cache_key(opts, policies), || {
            Oracle::get()?.rbac(policies, opts)
        })
    }

    fn ztunnel(
        &self,
        policies: &[Value],
        opts: &ZtunnelOptions,
    ) -> Result<Vec<ZtunnelConversion>, oracle::Error> {
        cached(&ZTUNNEL_CACHE, cache_key(opts, policies), || {
            Oracle::get()?.ztunnel(policies, opts)
        })
    }
}

/// Why a request could not be judged. The probe then fails: it must never pass on a guess.
#[derive(Debug, thiserror::Error)]
pub enum JudgeError {
    /// The path is not modelled, or the cluster is settling.
    #[error(transparent)]
    Path(#[from] PathError),
    /// The binary is missing or failed (its message says which).
    #[error("asking istiod's code (meshmig-istio): {0}")]
    Oracle(#[from] oracle::Error),
    /// istiod built Envoy RBAC this matcher does not model.
    #[error("the Envoy RBAC istiod built for {proxy}: {source}")]
    Rbac {
        /// Which proxy.
        proxy: String,
        /// The matcher's error.
        source: RbacError,
    },
    /// istiod sent ztunnel an Authorization the matcher cannot read.
    #[error("istiod's ztunnel Authorization for {policy}: {source}")]
    Authorization {
        /// `namespace/name`.
        policy: String,
        /// The matcher's error.
        source: AuthorizationError,
    },
    /// A policy could not be encoded for the binary.
    #[error("encoding AuthorizationPolicy {policy}: {source}")]
    Encode {
        /// `namespace/name`.
        policy: String,
        /// serde's error.
        source: serde_json::Error,
    },
}

/// What curl gets, and the path that led there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The response.
    pub response: Response,
    /// Where the request went and what each proxy decided.
    pub explanation: String,
}

/// The probe's request from `caller`, judged by every proxy on its path. With several
/// endpoints the request may land on any of them, so the result is one that fails the
/// expectation if any does (a probe that would pass only sometimes fails here every time),
/// else the first.
pub fn observe(
    istiod: &dyn IstioCode,
    snapshot: &Snapshot,
    caller: &Workload,
    request: &ProbeRequest,
) -> Result<Observed, JudgeError> {
    istiod.available()?;
    let from = describe_caller(caller, &snapshot.mesh);
    match path::route(snapshot, caller, &request.url.host, request.url.port)? {
        Route::Unreachable(why) => Ok(unreachable(&why, caller, &from)),
        Route::Reached { target, trips } => {
            let mut observed = Vec::with_capacity(trips.len());
            for trip in &trips {
                let outcome = travel(istiod, snapshot, &target, trip, request)?;
                observed.push(Observed {
                    explanation: format!(
                        "{from} to Service {}/{}:{}: {}",
                        target.namespace, target.service, target.port, outcome.explanation
                    ),
                    response: outcome.response,
                });
            }
            let mut decided = decisive(request.expect, observed);
            if trips.len() > 1 {
                let n = trips.len();
                decided.explanation += &format!(" ({n} endpoints judged, this one decides)");
            }
            Ok(decided)
        }
    }
}

fn decisive(expect: Expectation, mut observed: Vec<Observed>) -> Observed {
    let failing = observed.iter().position(|o| !expect.met_by(&o.response));
    observed.swap_remove(failing.unwrap_or(0))
}

fn describe_caller(caller: &Workload, mesh: &Mesh) -> String {
    let mode = match caller.dataplane {
        Dataplane::Sidecar { hbone: true } => "sidecar (HBONE)",
        Dataplane::Sidecar { hbone: false } => "sidecar",
        Dataplane::Ambient => "ambient",
        Dataplane::Outside => "plaintext",
    };
    format!(
        "from {mode} Pod {}/{} {}",
        caller.namespace,
        caller.name,
        peer_name(caller.identity(mesh).as_ref())
    )
}

fn peer_name(identity: Option<&Identity>) -> String {
    match identity {
        Some(id) => format!("as {}", id.principal()),
        None => "without identity".into(),
    }
}

fn unreachable(why: &Unreachable, caller: &Workload, from: &str) -> Observed {
    let detail = match why {
        Unreachable::UnknownHost(host) => format!("{host} is no Service in the cluster"),
        Unreachable::NoSuchPort { service, port } => {
            format!("Service {service} has no port {port}")
        }
        Unreachable::NoEndpoints { service } => format!("Service {service} has no ready endpoint"),
    };
    let sidecar = matches!(caller.dataplane, Dataplane::Sidecar { .. });
    let response = match why {
        Unreachable::UnknownHost(_) => Response::unresolved(detail.clone()),
        // The caller's sidecar answers itself when the Service has no endpoint.
        Unreachable::NoEndpoints { .. } if sidecar => Response::Status(503),
        Unreachable::NoSuchPort { .. } | Unreachable::NoEndpoints { .. } => {
            Response::refused(detail.clone())
        }
    };
    Observed {
        response,
        explanation: format!("{from}: {detail}"),
    }
}

/// What one proxy did with the request.
enum Judgement {
    Passed(String),
    /// An HTTP RBAC denial: HTTP 403.
    Forbidden(String),
    /// An L4 refusal: the connection is closed.
    Refused(String),
}

fn travel(
    istiod: &dyn IstioCode,
    snapshot: &Snapshot,
    target: &Target,
    trip: &Trip,
    request: &ProbeRequest,
) -> Result<Observed, JudgeError> {
    let mut envoy_in_front = trip.caller_sidecar;
    let mut steps = vec![format!("Pod {}", trip.endpoint.workload.name)];
    if trip.hops.is_empty() {
        steps.push("outside the mesh, nobody enforces".into());
    }
    for hop in &trip.hops {
        let judgement = judge_hop(istiod, snapshot, target, hop, request)?;
        let (Judgement::Passed(detail) | Judgement::Forbidden(detail) | Judgement::Refused(detail)) =
            &judgement;
        let seen_as = peer_name(peer(hop).identity.as_ref());
        steps.push(format!("{} {seen_as}: {detail}", hop_name(hop)));
        let response = match judgement {
            Judgement::Passed(_) => {
                envoy_in_front |= matches!(hop, Hop::Waypoint { .. });
                continue;
            }
            Judgement::Forbidden(_) => Response::Status(403),
            // Envoy answers a reset before response headers with 503.
            Judgement::Refused(_) if target.protocol == Protocol::Http && envoy_in_front => {
                steps.push("the Envoy in front answers the reset with HTTP 503".into());
                Response::Status(503)
            }
            Judgement::Refused(why) => Response::reset(why),
        };
        return Ok(Observed {
            response,
            explanation: steps.join("; "),
        });
    }
    Ok(Observed {
        response: Response::Status(200),
        explanation: steps.join("; "),
    })
}

fn hop_name(hop: &Hop) -> String {
    match hop {
        Hop::Waypoint { waypoint, .. } => {
            format!("waypoint {}/{}", waypoint.namespace, waypoint.gateway)
        }
        Hop::Sidecar { .. } => "its sidecar".into(),
        Hop::Ztunnel { .. } => "its ztunnel".into(),
    }
}

fn peer(hop: &Hop) -> &Peer {
    match hop {
        Hop::Waypoint { peer, .. } | Hop::Sidecar { peer, .. } | Hop::Ztunnel { peer, .. } => peer,
    }
}

fn judge_hop(
    istiod: &dyn IstioCode,
    snapshot: &Snapshot,
    target: &Target,
    hop: &Hop,
    request: &ProbeRequest,
) -> Result<Judgement, JudgeError> {
    match hop {
        Hop::Waypoint { waypoint, peer } => {
            let namespaces = [
                waypoint.namespace.as_str(),
                target.namespace.as_str(),
                snapshot.mesh.root_namespace.as_str(),
            ];
            let proxy = Proxy::Waypoint {
                namespace: waypoint.namespace.clone(),
                gateway: waypoint.gateway.clone(),
                service: Some(format!("{}/{}", target.namespace, target.service)),
            };
            let mut connection = connection(peer, target.vip, target.port);
            if let Some(id) = &peer.identity {
                connection
                    .filter_state
                    .insert(PEER_PRINCIPAL.into(), id.spiffe_uri());
            }
            envoy(
                istiod,
                snapshot,
                &namespaces,
                proxy,
                target.protocol,
                connection,
                request,
            )
        }
        Hop::Sidecar { endpoint, peer } => {
            if peer.identity.is_none() && endpoint.mtls == MtlsMode::Strict {
                return Ok(Judgement::Refused(format!(
                    "PeerAuthentication STRICT on port {}: plaintext refused",
                    endpoint.port
                )));
            }
            let w = &endpoint.workload;
            let namespaces = [w.namespace.as_str(), snapshot.mesh.root_namespace.as_str()];
            let proxy = Proxy::Sidecar {
                namespace: w.namespace.clone(),
                labels: w.labels.clone(),
            };
            let connection = connection(peer, w.ip, endpoint.port);
            envoy(
                istiod,
                snapshot,
                &namespaces,
                proxy,
                target.protocol,
                connection,
                request,
            )
        }
        Hop::Ztunnel { endpoint, peer } => ztunnel_hop(istiod, snapshot, endpoint, peer),
    }
}

fn connection(peer: &Peer, destination_ip: IpAddr, destination_port: u16) -> Connection {
    Connection {
        peer_certificate: peer.identity.as_ref().map(Identity::spiffe_uri),
        filter_state: BTreeMap::new(),
        direct_remote_ip: peer.ip,
        remote_ip: peer.ip,
        destination_ip,
        destination_port,
        // Not modelled: no policy of the probes depends on the SNI of Istio's own mTLS.
        requested_server_name: None,
    }
}

/// A sidecar or waypoint: istiod's RBAC filters for it, and Envoy's decision.
fn envoy(
    istiod: &dyn IstioCode,
    snapshot: &Snapshot,
    namespaces: &[&str],
    proxy: Proxy,
    protocol: Protocol,
    connection: Connection,
    request: &ProbeRequest,
) -> Result<Judgement, JudgeError> {
    let policies = policies_in(snapshot, namespaces)?;
    let described = format!("{proxy:?}");
    let opts = RbacOptions {
        root_namespace: snapshot.mesh.root_namespace.clone(),
        trust_domain: snapshot.mesh.trust_domain.clone(),
        ..RbacOptions::new(proxy)
    };
    let rbac = istiod.rbac(&policies, &opts)?;
    let chain = match protocol {
        Protocol::Http => &rbac.http,
        Protocol::Tcp => &rbac.tcp,
    };
    let rbac_error = |source| JudgeError::Rbac {
        proxy: described.clone(),
        source,
    };
    let filters = envoy_rbac::parse_filters(chain).map_err(rbac_error)?;
    let http = (protocol == Protocol::Http).then(|| curl_request(request));
    let envoy_request = envoy_rbac::Request {
        connection,
        http,
        dynamic_metadata: BTreeMap::new(), // no RequestAuthentication runs: no JWT claims
    };
    let verdict = envoy_rbac::evaluate(&filters, &envoy_request).map_err(rbac_error)?;
    Ok(match (verdict.decision, protocol) {
        (Decision::Allow, _) => Judgement::Passed(verdict.to_string()),
        (Decision::Deny, Protocol::Http) => Judgement::Forbidden(verdict.to_string()),
        (Decision::Deny, Protocol::Tcp) => Judgement::Refused(verdict.to_string()),
    })
}

/// What curl sends: its default `user-agent` and `accept` unless `-H` replaces them.
fn curl_request(request: &ProbeRequest) -> HttpRequest {
    let given = |name: &str| request.headers.iter().any(|(k, _)| k == name);
    let defaults = [("user-agent", "curl"), ("accept", "*/*")];
    let mut http = HttpRequest::new(&request.method, &request.url.authority, &request.url.path);
    for (name, value) in defaults.iter().filter(|(k, _)| !given(k)) {
        http = http.with_header(name, value);
    }
    for (name, value) in &request.headers {
        http = http.with_header(name, value);
    }
    http
}

/// The destination's ztunnel: istiod's conversion of the policies that apply to the Pod,
/// its STRICT policy, and ztunnel's decision.
fn ztunnel_hop(
    istiod: &dyn IstioCode,
    snapshot: &Snapshot,
    endpoint: &Endpoint,
    peer: &Peer,
) -> Result<Judgement, JudgeError> {
    let w = &endpoint.workload;
    let mesh = &snapshot.mesh;
    let namespaces = [w.namespace.as_str(), mesh.root_namespace.as_str()];
    let policies = policies_in(snapshot, &namespaces)?;
    let opts = ZtunnelOptions {
        root_namespace: mesh.root_namespace.clone(),
        trust_domain: mesh.trust_domain.clone(),
        // ztunnel only logs dry-run policies even when istiod sends them.
        enable_dry_run: false,
    };
    let mut authorizations = Vec::new();
    for conversion in istiod.ztunnel(&policies, &opts)? {
        let Some(json) = conversion.authorization else {
            continue; // targetRefs, CUSTOM, AUDIT, dry-run: istiod sends ztunnel nothing
        };
        let policy = format!("{}/{}", conversion.namespace, conversion.name);
        let parsed: Authorization =
            serde_json::from_value(json).map_err(|e| JudgeError::Authorization {
                policy: policy.clone(),
                source: AuthorizationError::Json(e),
            })?;
        authorizations.push(parsed);
    }
    let mut listed = selector_policies(snapshot, w, &namespaces);
    if endpoint.mtls == MtlsMode::Strict {
        let strict = strict_policy(&w.namespace);
        listed.push(strict.key());
        authorizations.push(strict);
    }
    let applicable = authorizations
        .iter()
        .filter(|a| ztunnel::applies_to(a, &w.namespace, &listed));
    let request = ztunnel::Request {
        source: peer.identity.clone(),
        source_ip: peer.ip,
        destination_ip: w.ip,
        destination_port: endpoint.port,
    };
    let verdict = ztunnel::evaluate(applicable, &request);
    let detail = match &verdict.reason {
        ztunnel::Reason::DeniedBy(key) => format!("denied by {key}"),
        ztunnel::Reason::NoAllowPolicies => "allowed (no ALLOW policy applies)".into(),
        ztunnel::Reason::AllowedBy(key) => format!("allowed by {key}"),
        ztunnel::Reason::NoAllowMatched => "denied: no ALLOW policy matched".into(),
    };
    Ok(match verdict.decision {
        ztunnel::Decision::Allow => Judgement::Passed(detail),
        ztunnel::Decision::Deny => Judgement::Refused(detail),
    })
}

/// istiod's workload policies for ztunnel: the selector policies of the Pod's namespace and
/// of the root namespace whose selector matches its labels (the workload API's
/// `authorization_policies`, which istiod fills and ztunnel reads).
fn selector_policies(snapshot: &Snapshot, w: &Workload, namespaces: &[&str]) -> Vec<String> {
    snapshot
        .policies
        .iter()
        .filter(|p| namespaces.contains(&p.metadata.namespace.as_deref().unwrap_or_default()))
        .filter_map(|p| {
            let selector = p.spec.selector.as_ref()?;
            path::selected(selector.match_labels.as_ref(), &w.labels).then(|| {
                format!(
                    "{}/{}",
                    p.metadata.namespace.as_deref().unwrap_or_default(),
                    p.metadata.name.as_deref().unwrap_or_default()
                )
            })
        })
        .collect()
}

/// istiod's policy for a STRICT workload: deny whatever arrives without a principal.
fn strict_policy(namespace: &str) -> Authorization {
    let no_principal = Match {
        not_principals: vec![StringMatch::presence()],
        ..Default::default()
    };
    Authorization {
        name: STRICT_POLICY.into(),
        namespace: namespace.into(),
        scope: Scope::WorkloadSelector,
        action: ztunnel::Action::Deny,
        groups: vec![Group {
            rules: vec![Rules {
                matches: vec![no_principal],
            }],
        }],
        ..Default::default()
    }
}

/// The AuthorizationPolicies of `namespaces`, as the binary reads them.
fn policies_in(snapshot: &Snapshot, namespaces: &[&str]) -> Result<Vec<Value>, JudgeError> {
    snapshot
        .policies
        .iter()
        .filter(|p| namespaces.contains(&p.metadata.namespace.as_deref().unwrap_or_default()))
        .map(policy_json)
        .collect()
}

/// Only what istiod reads: identity, annotations (dry-run), creation time (order), spec.
fn policy_json(policy: &AuthorizationPolicy) -> Result<Value, JudgeError> {
    let m = &policy.metadata;
    let key = format!(
        "{}/{}",
        m.namespace.as_deref().unwrap_or_default(),
        m.name.as_deref().unwrap_or_default()
    );
    let spec = serde_json::to_value(&policy.spec).map_err(|source| JudgeError::Encode {
        policy: key,
        source,
    })?;
    let mut metadata = json!({"name": m.name, "namespace": m.namespace});
    if let Some(annotations) = m.annotations.as_ref().filter(|a| !a.is_empty()) {
        metadata["annotations"] = json!(annotations);
    }
    if let Some(created) = &m.creation_timestamp {
        metadata["creationTimestamp"] = json!(created.0.to_string());
    }
    Ok(json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": metadata,
        "spec": spec,
    }))
}

#[cfg(test)]
mod tests {
    //! Each path case judged end to end by istiod's real code (`meshmig-istio`, found through
    //! `$MESHMIG_ISTIO_HOME` or `e2e/istio/build.sh`) and the Envoy and ztunnel matchers.

    use super::*;
    use crate::probes::fixtures::{
        Mode, client, dry_run, get, peer_authentication, policy, shop, web,
    };
    use crate::probes::request::Expectation;

    const OK: Expectation = Expectation::Status(200);

    fn observe_live(snapshot: &Snapshot, caller: &Workload, request: &ProbeRequest) -> Observed {
        observe(&LiveIstioCode, snapshot, caller, request).unwrap()
    }

    fn response(snapshot: &Snapshot, caller: Mode, method: &str) -> Response {
        observe_live(snapshot, &client(caller), &get("/", method, OK)).response
    }

    fn reset(response: &Response) -> bool {
        matches!(response, Response::NoResponse { curl_exit: 56, .. })
    }

    /// ALLOW `shop/client` to GET the `web` workloads (L4 identity + L7 method).
    fn viewer() -> AuthorizationPolicy {
        policy(
            "web-viewer",
            json!({"selector": {"matchLabels": {"app": "web"}}, "rules": [{
                "from": [{"source": {"principals": ["cluster.local/ns/shop/sa/client"]}}],
                "to": [{"operation": {"methods": ["GET"]}}]}]}),
        )
    }

    #[test]
    fn sidecar_to_sidecar_enforces_the_policy_in_full() {
        let mut snap = shop(vec![web("web-1", Mode::Sidecar, "10.2.0.1")], false);
        snap.policies = vec![viewer()];
        assert_eq!(response(&snap, Mode::Sidecar, "GET"), Response::Status(200));
        assert_eq!(
            response(&snap, Mode::Sidecar, "POST"),
            Response::Status(403)
        );
        let other = Workload {
            service_account: "intruder".into(),
            ..client(Mode::Sidecar)
        };
        let observed = observe_live(&snap, &other, &get("/", "GET", Expectation::Denied));
        assert_eq!(observed.response, Response::Status(403));
        assert!(
            observed.explanation.contains(
                "its sidecar as cluster.local/ns/shop/sa/intruder: denied: no ALLOW policy matched"
            ),
            "{}",
            observed.explanation
        );
    }

    #[test]
    fn sidecar_to_ambient_skips_the_waypoint_and_its_policies() {
        let deny_all_at_waypoint = policy(
            "deny-at-waypoint",
            json!({"targetRefs": [{"kind": "Service", "group": "", "name": "web"}], "action": "DENY", "rules": [{}]}),
        );
        let mut snap = shop(vec![web("web-1", Mode::Ambient, "10.2.0.1")], true);
        snap.policies = vec![deny_all_at_waypoint];
        assert_eq!(response(&snap, Mode::Sidecar, "GET"), Response::Status(200));
        // An ambient caller goes through the waypoint, which denies.
        assert_eq!(response(&snap, Mode::Ambient, "GET"), Response::Status(403));
    }

    #[test]
    fn ambient_through_the_waypoint_reaches_ztunnel_as_the_waypoint() {
        let only_client = policy(
            "l4-client-only",
            json!({"selector": {"matchLabels": {"app": "web"}}, "rules": [{
                "from": [{"source": {"principals": ["cluster.local/ns/shop/sa/client"]}}]}]}),
        );
        let mut snap = shop(vec![web("web-1", Mode::Ambient, "10.2.0.1")], true);
        snap.policies = vec![only_client];
        // The waypoint lets it through; ztunnel sees the waypoint, not the client, and
        // refuses; the waypoint answers the reset with 503.
        let observed = observe_live(&snap, &client(Mode::Ambient), &get("/", "GET", OK));
        assert_eq!(
            observed.response,
            Response::Status(503),
            "{}",
            observed.explanation
        );
        assert!(
            observed
                .explanation
                .contains("its ztunnel as cluster.local/ns/shop/sa/waypoint: denied"),
            "{}",
            observed.explanation
        );
        snap.policies.push(policy(
            "allow-waypoint",
            json!({"selector": {"matchLabels": {"app": "web"}}, "rules": [{
                "from": [{"source": {"principals": ["cluster.local/ns/shop/sa/waypoint"]}}]}]}),
        ));
        assert_eq!(response(&snap, Mode::Ambient, "GET"), Response::Status(200));
    }

    #[test]
    fn ambient_to_ambient_without_a_waypoint_is_judged_by_ztunnel_alone() {
        let mut snap = shop(vec![web("web-1", Mode::Ambient, "10.2.0.1")], false);
        snap.policies = vec![viewer()];
        // ztunnel drops the ALLOW rule with a method: nothing is allowed, the connection reset.
        assert!(reset(&response(&snap, Mode::Ambient, "GET")));
        snap.policies = vec![policy(
            "l4-client-only",
            json!({"selector": {"matchLabels": {"app": "web"}}, "rules": [{
                "from": [{"source": {"principals": ["cluster.local/ns/shop/sa/client"]}}]}]}),
        )];
        assert_eq!(
            response(&snap, Mode::Ambient, "DELETE"),
            Response::Status(200)
        );
        assert!(reset(&response(&snap, Mode::Plain, "GET")));
    }

    #[test]
    fn plaintext_to_a_strict_sidecar_is_refused() {
        let mut snap = shop(vec![web("web-1", Mode::Sidecar, "10.2.0.1")], false);
        assert_eq!(response(&snap, Mode::Plain, "GET"), Response::Status(200));
        snap.peer_authentications = vec![peer_authentication("istio-system", "STRICT")];
        let observed = observe_live(
            &snap,
            &client(Mode::Plain),
            &get("/", "GET", Expectation::Denied),
        );
        assert!(reset(&observed.response), "{observed:?}");
        assert!(
            observed.explanation.contains("STRICT"),
            "{}",
            observed.explanation
        );
        assert_eq!(response(&snap, Mode::Sidecar, "GET"), Response::Status(200));
        // ztunnel refuses plaintext to a STRICT workload too.
        let mut ambient = shop(vec![web("web-1", Mode::Ambient, "10.2.0.1")], false);
        ambient.peer_authentications = snap.peer_authentications.clone();
        assert!(reset(&response(&ambient, Mode::Plain, "GET")));
        // A sidecar without HBONE sends plaintext; its own Envoy answers the reset with 503.
        assert_eq!(
            response(&ambient, Mode::OldSidecar, "GET"),
            Response::Status(503)
        );
        assert_eq!(
            response(&ambient, Mode::Sidecar, "GET"),
            Response::Status(200)
        );
    }

    #[test]
    fn dry_run_policies_are_enforced_by_nobody() {
        let spec = json!({"action": "DENY", "rules": [{}]});
        let targeted = json!({"targetRefs": [{"kind": "Service", "group": "", "name": "web"}], "action": "DENY", "rules": [{}]});
        for mode in [Mode::Sidecar, Mode::Ambient] {
            let mut snap = shop(vec![web("web-1", mode, "10.2.0.1")], true);
            snap.policies = vec![
                dry_run("dry", spec.clone()),
                dry_run("dry-wp", targeted.clone()),
            ];
            for caller in [Mode::Sidecar, Mode::Ambient, Mode::Plain] {
                assert_eq!(
                    response(&snap, caller, "GET"),
                    Response::Status(200),
                    "{mode:?} from {caller:?}"
                );
            }
        }
    }

    #[test]
    fn a_deny_ztunnel_never_fires_lets_a_sidecar_caller_through_to_an_ambient_pod() {
        // istiod keeps only the `from` clause beside an empty `to` match: it never fires.
        let deny_get = policy(
            "deny-get",
            json!({"selector": {"matchLabels": {"app": "web"}}, "action": "DENY", "rules": [{
                "from": [{"source": {"namespaces": ["shop"]}}],
                "to": [{"operation": {"methods": ["GET"]}}]}]}),
        );
        let mut ambient = shop(vec![web("web-1", Mode::Ambient, "10.2.0.1")], true);
        ambient.policies = vec![deny_get];
        assert_eq!(
            response(&ambient, Mode::Sidecar, "GET"),
            Response::Status(200)
        );
        // The same policy on a sidecar denies.
        let mut sidecar = ambient.clone();
        sidecar.pods = vec![web("web-1", Mode::Sidecar, "10.2.0.1")];
        assert_eq!(
            response(&sidecar, Mode::Sidecar, "GET"),
            Response::Status(403)
        );
    }

    #[test]
    fn custom_denies_at_envoy_and_is_not_enforced_by_ztunnel() {
        let custom = policy(
            "ext",
            json!({"selector": {"matchLabels": {"app": "web"}}, "action": "CUSTOM", "provider": {"name": "opa"},
                   "rules": [{"to": [{"operation": {"paths": ["/"]}}]}]}),
        );
        let mut snap = shop(vec![web("web-1", Mode::Sidecar, "10.2.0.1")], false);
        snap.policies = vec![custom];
        assert_eq!(response(&snap, Mode::Sidecar, "GET"), Response::Status(403));
        snap.pods = vec![web("web-1", Mode::Ambient, "10.2.0.1")];
        assert_eq!(response(&snap, Mode::Ambient, "GET"), Response::Status(200));
    }

    #[test]
    fn one_failing_endpoint_fails_the_probe() {
        let mut snap = shop(
            vec![
                web("web-1", Mode::Sidecar, "10.2.0.1"),
                web("web-2", Mode::Ambient, "10.2.0.2"),
            ],
            false,
        );
        snap.policies = vec![viewer()];
        // web-1's sidecar allows; web-2's ztunnel has the ALLOW without its L7 rule.
        let observed = observe_live(&snap, &client(Mode::Sidecar), &get("/", "GET", OK));
        assert_eq!(observed.response, Response::Status(503), "{observed:?}");
        assert!(
            observed.explanation.contains("web-2"),
            "{}",
            observed.explanation
        );
        // A POST is denied by both, but the caller's sidecar turns ztunnel's reset into a 503,
        // which the probe script does not count as "denied".
        let denied = observe_live(
            &snap,
            &client(Mode::Sidecar),
            &get("/", "POST", Expectation::Denied),
        );
        assert_eq!(denied.response, Response::Status(503), "{denied:?}");
    }

    #[test]
    fn unreachable_hosts_fail_like_curl() {
        let snap = shop(vec![], false);
        let mut request = get("/", "GET", OK);
        request.url.host = "nowhere.shop".into();
        let observed = observe_live(&snap, &client(Mode::Ambient), &request);
        assert!(matches!(
            observed.response,
            Response::NoResponse { curl_exit: 6, .. }
        ));
        assert_eq!(
            observe_live(&snap, &client(Mode::Sidecar), &get("/", "GET", OK)).response,
            Response::Status(503)
        );
    }

    #[derive(Debug)]
    struct Missing;

    impl IstioCode for Missing {
        fn available(&self) -> Result<(), oracle::Error> {
            Err(oracle::Error::Locate("no meshmig-istio here".into()))
        }

        fn rbac(&self, _: &[Value], _: &RbacOptions) -> Result<Rbac, oracle::Error> {
            Err(oracle::Error::Locate("no meshmig-istio here".into()))
        }

        fn ztunnel(
            &self,
            _: &[Value],
            _: &ZtunnelOptions,
        ) -> Result<Vec<ZtunnelConversion>, oracle::Error> {
            Err(oracle::Error::Locate("no meshmig-istio here".into()))
        }
    }

    #[test]
    fn without_the_binary_the_request_cannot_be_judged() {
        let snap = shop(vec![web("web-1", Mode::Sidecar, "10.2.0.1")], false);
        let err = observe(
            &Missing,
            &snap,
            &client(Mode::Sidecar),
            &get("/", "GET", OK),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("locating meshmig-istio: no meshmig-istio here"),
            "{err}"
        );
        // Not even a request that no proxy judges passes without it.
        let plain = shop(vec![web("web-1", Mode::Plain, "10.2.0.1")], false);
        assert!(
            observe(
                &Missing,
                &plain,
                &client(Mode::Sidecar),
                &get("/", "GET", OK)
            )
            .is_err()
        );
    }
}
