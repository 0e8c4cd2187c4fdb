//! Backends of a converted route: Services, per-version Services for subsets, and the
//! ReferenceGrants cross-namespace backends need.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use meshmig_api::gateway::*;
use meshmig_api::istio::{Destination, DestinationRule, Subset, TrafficPolicy};

use super::{Ctx, HostTarget, PerVersion, resolve_host, to_object};
use crate::findings as f;
use crate::model::Model;
use crate::object::{ObjectRef, dns_label, dns_subdomain};

/// A resolved backend: Service name and namespace, port.
pub(super) struct Backend {
    pub(super) namespace: String,
    pub(super) name: String,
    pub(super) port: Option<i32>,
}

/// A Kubernetes Service, by namespace and name.
struct ServiceId {
    namespace: String,
    name: String,
}

/// A subset found in a DestinationRule.
struct FoundSubset<'d> {
    rule: &'d DestinationRule,
    subset: &'d Subset,
}

fn service_ports(svc: &Service) -> Vec<i32> {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .map(|p| p.iter().map(|p| p.port).collect())
        .unwrap_or_default()
}

fn managed_by_meshmig(m: &ObjectMeta) -> bool {
    m.labels
        .as_ref()
        .and_then(|l| l.get(meshmig_api::names::LABEL_MANAGED_BY))
        .is_some_and(|v| v == meshmig_api::names::MANAGED_BY)
}

/// The DestinationRule subset `subset` of `svc` a caller in `ctx.vs_ns` uses.
fn find_subset<'m>(ctx: &Ctx<'m, '_>, svc: &ServiceId, subset: &str) -> Option<FoundSubset<'m>> {
    let mut candidates: Vec<FoundSubset<'m>> = ctx
        .model
        .destination_rules_for(ctx.drs, &svc.namespace, &svc.name)
        .into_iter()
        .filter_map(|dr| {
            dr.spec
                .subsets
                .iter()
                .flatten()
                .find(|s| s.name == subset)
                .map(|s| FoundSubset {
                    rule: dr,
                    subset: s,
                })
        })
        .collect();
    // Istio looks in the caller's namespace first, then the service's.
    candidates.sort_by_key(|c| {
        let ns = c.rule.metadata.namespace.as_deref().unwrap_or("default");
        (
            ns != ctx.vs_ns,
            ns != svc.namespace,
            c.rule.metadata.name.clone(),
        )
    });
    candidates.into_iter().next()
}

fn per_version(svc_ns: &str, svc: &str, dr: &DestinationRule, s: &Subset) -> PerVersion {
    PerVersion {
        namespace: svc_ns.to_string(),
        service: svc.to_string(),
        subset: s.name.clone(),
        name: dns_label(&[svc, &s.name]),
        labels: s.labels.clone().unwrap_or_default(),
        traffic_policy: effective_policy(
            dr.spec.traffic_policy.as_ref(),
            s.traffic_policy.as_ref(),
        ),
        destination_rule: ObjectRef::from_meta("DestinationRule", &dr.metadata),
    }
}

/// Per-version Services for every subset of every DestinationRule of a Service, in
/// DestinationRule order.
pub fn all_subsets(drs: &[DestinationRule], svc_ns: &str, svc: &str) -> Vec<PerVersion> {
    let target = HostTarget::Service(svc_ns.into(), svc.into());
    subsets_of(
        drs.iter().filter(|dr| {
            let dr_ns = dr.metadata.namespace.as_deref().unwrap_or("default");
            resolve_host(&dr.spec.host, dr_ns) == target
        }),
        svc_ns,
        svc,
    )
}

/// [`all_subsets`] of the inventory's own DestinationRules, through the model's index.
pub fn all_subsets_in(model: &Model<'_>, svc_ns: &str, svc: &str) -> Vec<PerVersion> {
    subsets_of(
        model.destination_rules_for(&model.inv.destination_rules, svc_ns, svc),
        svc_ns,
        svc,
    )
}

/// Per-version Services of `drs`, which all resolve to Service `svc_ns`/`svc`.
fn subsets_of<'d>(
    drs: impl IntoIterator<Item = &'d DestinationRule>,
    svc_ns: &str,
    svc: &str,
) -> Vec<PerVersion> {
    let mut out: Vec<PerVersion> = Vec::new();
    for dr in drs {
        for s in dr.spec.subsets.iter().flatten() {
            let name = dns_label(&[svc, &s.name]);
            if out.iter().any(|p| p.name == name) {
                continue;
            }
            out.push(per_version(svc_ns, svc, dr, s));
        }
    }
    out
}

/// Merge of the top-level and subset traffic policies, keeping only what matters in
/// ambient (ISTIO_MUTUAL TLS is implied by HBONE).
pub fn effective_policy(
    top: Option<&TrafficPolicy>,
    sub: Option<&TrafficPolicy>,
) -> Option<TrafficPolicy> {
    let mut p = top.cloned().unwrap_or_default();
    if let Some(s) = sub {
        let s = s.clone();
        if s.load_balancer.is_some() {
            p.load_balancer = s.load_balancer;
        }
        if s.connection_pool.is_some() {
            p.connection_pool = s.connection_pool;
        }
        if s.outlier_detection.is_some() {
            p.outlier_detection = s.outlier_detection;
        }
        if s.tls.is_some() {
            p.tls = s.tls;
        }
        if s.port_level_settings.is_some() {
            p.port_level_settings = s.port_level_settings;
        }
        p.extra.extend(s.extra);
    }
    if crate::classify::tls_is_istio_mutual_only(p.tls.as_ref()) {
        p.tls = None;
    }
    let empty = p.load_balancer.is_none()
        && p.connection_pool.is_none()
        && p.outlier_detection.is_none()
        && p.tls.is_none()
        && p.port_level_settings.is_none()
        && p.extra.is_empty();
    (!empty).then_some(p)
}

pub(super) fn resolve_backend(
    ctx: &mut Ctx<'_, '_>,
    d: &Destination,
    where_: &str,
) -> Option<Backend> {
    let svc_id = destination_service(ctx, d, where_)?;
    let Some(svc) = ctx.model.service(&svc_id.namespace, &svc_id.name) else {
        ctx.finding(
            f::VS_HOST_UNRESOLVED,
            format!(
                "{where_}: destination Service {}/{} is not in the inventory",
                svc_id.namespace, svc_id.name
            ),
        );
        return None;
    };
    let port = backend_port(ctx, svc, d, &svc_id.name, where_);
    let name = match &d.subset {
        Some(subset) => subset_backend(ctx, &svc_id, subset, where_),
        None => None,
    }
    .unwrap_or_else(|| svc_id.name.clone());
    if svc_id.namespace != ctx.route_ns {
        ctx.finding(
            f::VS_CROSS_NAMESPACE_BACKEND,
            format!("{where_}: backend {}/{name}", svc_id.namespace),
        );
        grant_access(ctx, &svc_id.namespace, &name);
    }
    Some(Backend {
        namespace: svc_id.namespace,
        name,
        port,
    })
}

fn destination_service(ctx: &mut Ctx<'_, '_>, d: &Destination, where_: &str) -> Option<ServiceId> {
    match resolve_host(&d.host, &ctx.vs_ns) {
        HostTarget::Service(namespace, name) => Some(ServiceId { namespace, name }),
        HostTarget::Wildcard => {
            ctx.finding(
                f::VS_WILDCARD_HOST,
                format!("{where_}: destination `{}`", d.host),
            );
            None
        }
        HostTarget::External => {
            ctx.finding(
                f::VS_HOST_UNRESOLVED,
                format!(
                    "{where_}: destination `{}` is not a Kubernetes Service",
                    d.host
                ),
            );
            None
        }
    }
}

/// The destination's port, or the Service's first when it names none.
fn backend_port(
    ctx: &mut Ctx<'_, '_>,
    svc: &Service,
    d: &Destination,
    svc_name: &str,
    where_: &str,
) -> Option<i32> {
    match d.port.as_ref().and_then(|p| p.number) {
        Some(p) => i32::try_from(p).ok(),
        None => {
            let ports = service_ports(svc);
            if ports.len() > 1 {
                ctx.finding(
                    f::VS_PORT_AMBIGUOUS,
                    format!(
                        "{where_}: destination {svc_name} has ports {ports:?}; using {}",
                        ports[0]
                    ),
                );
            }
            ports.first().copied()
        }
    }
}

/// The per-version Service that stands for `subset`, recorded in the conversion; `None`
/// (the Service itself) when no DestinationRule defines the subset.
fn subset_backend(
    ctx: &mut Ctx<'_, '_>,
    svc: &ServiceId,
    subset: &str,
    where_: &str,
) -> Option<String> {
    let (ns, svc_name) = (&svc.namespace, &svc.name);
    let Some(found) = find_subset(ctx, svc, subset) else {
        ctx.finding(
            f::VS_SUBSET_UNKNOWN,
            format!("{where_}: subset `{subset}` of {ns}/{svc_name}"),
        );
        return None;
    };
    let pv = per_version(ns, svc_name, found.rule, found.subset);
    if ctx
        .model
        .service(ns, &pv.name)
        .is_some_and(|x| !managed_by_meshmig(&x.metadata))
    {
        // The route would send this subset's traffic to someone else's Service.
        ctx.finding(
            f::PER_VERSION_SERVICE_CONFLICT,
            format!(
                "{where_}: subset `{subset}` of {ns}/{svc_name} needs Service {ns}/{}, which exists",
                pv.name
            ),
        );
    }
    let name = pv.name.clone();
    if !ctx.out.per_version.contains(&pv) {
        ctx.out.per_version.push(pv);
    }
    Some(name)
}

/// The ReferenceGrant that lets the route's namespace send to Service `ns`/`name`.
fn grant_access(ctx: &mut Ctx<'_, '_>, ns: &str, name: &str) {
    let grant = ReferenceGrant {
        metadata: ObjectMeta {
            name: Some(dns_subdomain(&["meshmig", &ctx.route_ns, name])),
            namespace: Some(ns.to_string()),
            ..Default::default()
        },
        spec: ReferenceGrantSpec {
            from: vec![ReferenceGrantFrom {
                group: "gateway.networking.k8s.io".into(),
                kind: "HTTPRoute".into(),
                namespace: ctx.route_ns.clone(),
            }],
            to: vec![ReferenceGrantTo {
                group: String::new(),
                kind: "Service".into(),
                name: Some(name.to_string()),
            }],
        },
    };
    let grant = to_object(
        &grant,
        "gateway.networking.k8s.io/v1beta1",
        "ReferenceGrant",
    );
    if !ctx.out.grants.contains(&grant) {
        ctx.out.grants.push(grant);
    }
}
