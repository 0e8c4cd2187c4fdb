//! Synthetic mesh inventories, deterministic by seed.
//!
//! Every namespace `app-NNNNN` is a small sidecar-mode application: about 10 Services, a
//! Deployment per version (a few Services have two versions), their ReplicaSets and about 20
//! injected Pods (with `sidecar.istio.io/status`), 5 AuthorizationPolicies (L4 identity, L7
//! methods/paths, `notNamespaces`, `when` keys), 2 VirtualServices (header and URI matches,
//! weights, a rewrite, retries, a timeout), DestinationRules with subsets and traffic policy,
//! and a PeerAuthentication. About one namespace in 40 carries a blocker (an EnvoyFilter,
//! fault injection, a TCP route, a port with mTLS DISABLE, an unknown subset). The cluster
//! part is a Sail `Istio` and `IstioCNI`, an ingress gateway and a MeshMigration naming every
//! namespace.
//!
//! Each namespace is generated from its own PRNG stream (seed, index), so the gateway-bound
//! variant for ingress2gateway ([`Variant::Gateway`]) carries exactly the same routes.

use serde_json::{Value, json};

/// SplitMix64: tiny, fast and good enough for picking names and shapes.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A stream for `(seed, stream)`.
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut r = Rng(seed ^ stream.wrapping_mul(0xA24B_AED4_963E_E407));
        r.next_u64();
        r
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; 0 when `n == 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// True with probability `1/n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    /// A Kubernetes-style random suffix (`pod-template-hash` alphabet).
    pub fn suffix(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        (0..len)
            .map(|_| {
                let i = self.below(ALPHABET.len() as u64) as usize;
                char::from(ALPHABET.get(i).copied().unwrap_or(b'x'))
            })
            .collect()
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// Which corpus to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Variant {
    /// The sidecar-mode mesh meshmig plans (mesh VirtualServices).
    Mesh,
    /// Only Istio Gateways and the same VirtualServices bound to them
    /// (`networking.istio.io/v1beta1`), the input ingress2gateway's Istio provider converts.
    Gateway,
}

/// Corpus options.
#[derive(Clone, Debug)]
pub struct Options {
    /// Number of application namespaces.
    pub namespaces: usize,
    /// PRNG seed.
    pub seed: u64,
    /// Which corpus.
    pub variant: Variant,
}

/// Name of the i-th namespace (0-based).
pub fn namespace_name(i: usize) -> String {
    format!("app-{:05}", i + 1)
}

/// Name of the MeshMigration of a corpus.
pub const MIGRATION: &str = "fleet";

/// Label every generated application namespace carries (the selector of large corpora).
pub const FLEET_LABEL: &str = "meshmig.io/bench-fleet";

/// The CRD limits `spec.namespaces` to this many entries; larger corpora select by label.
pub const MAX_LISTED: usize = 500;

const SERVICES: [&str; 16] = [
    "frontend",
    "cart",
    "checkout",
    "catalog",
    "payments",
    "shipping",
    "users",
    "search",
    "reviews",
    "ratings",
    "inventory",
    "orders",
    "email",
    "recommend",
    "ads",
    "auth",
];

const TRUST_DOMAIN: &str = "cluster.local";
const ISTIO_VERSION: &str = "v1.27.0";
const PROXY_IMAGE: &str = "docker.io/istio/proxyv2:1.27.0";

/// One application Service of a namespace.
#[derive(Clone, Debug)]
struct Svc {
    name: &'static str,
    versions: Vec<&'static str>,
}

/// The shape of one namespace, drawn from its PRNG stream.
struct Shape {
    ns: String,
    services: Vec<Svc>,
    rng: Rng,
    /// 0 = no blocker, else which one.
    blocker: u64,
}

fn shape(opts: &Options, i: usize) -> Shape {
    let mut rng = Rng::new(opts.seed, i as u64 + 1);
    let mut names = SERVICES;
    rng.shuffle(&mut names);
    // 10 Services; 3 of them (the first three after the shuffle) have a v2, so 13
    // Deployments. The VirtualServices route the first two.
    let services = names
        .iter()
        .take(10)
        .enumerate()
        .map(|(k, name)| Svc {
            name,
            versions: if k < 3 { vec!["v1", "v2"] } else { vec!["v1"] },
        })
        .collect();
    let blocker = if rng.one_in(40) { 1 + rng.below(5) } else { 0 };
    Shape {
        ns: namespace_name(i),
        services,
        rng,
        blocker,
    }
}

fn principal(ns: &str, sa: &str) -> String {
    format!("{TRUST_DOMAIN}/ns/{ns}/sa/{sa}")
}

/// Every object of the corpus, in a stable order: cluster objects, then each namespace, then
/// the MeshMigration (mesh variant).
pub fn corpus(opts: &Options) -> Vec<Value> {
    let mut out = Vec::new();
    match opts.variant {
        Variant::Mesh => {
            out.extend(cluster_objects());
            for i in 0..opts.namespaces {
                out.extend(namespace_objects(opts, i));
            }
            out.push(migration(opts));
        }
        Variant::Gateway => {
            for i in 0..opts.namespaces {
                out.extend(gateway_objects(opts, i));
            }
        }
    }
    out
}

/// The control plane: Sail `Istio` and `IstioCNI` (sidecar mode), their namespaces, and an
/// ingress gateway whose principal bypass protection admits.
pub fn cluster_objects() -> Vec<Value> {
    let mut out = vec![
        json!({"apiVersion": "sailoperator.io/v1", "kind": "Istio", "metadata": {"name": "default"},
            "spec": {"version": ISTIO_VERSION, "namespace": "istio-system", "profile": "default",
                "updateStrategy": {"type": "InPlace"},
                "values": {"meshConfig": {"trustDomain": TRUST_DOMAIN}}}}),
        json!({"apiVersion": "sailoperator.io/v1", "kind": "IstioCNI", "metadata": {"name": "default"},
            "spec": {"version": ISTIO_VERSION, "namespace": "istio-cni", "profile": "default"}}),
    ];
    for ns in ["istio-system", "istio-cni", "istio-ingress"] {
        out.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
    }
    let labels = json!({"app": "istio-ingressgateway", "istio": "ingressgateway"});
    out.push(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "istio-ingressgateway", "namespace": "istio-ingress", "labels": labels},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels},
                "spec": {"serviceAccountName": "istio-ingressgateway",
                    "containers": [{"name": "istio-proxy", "image": PROXY_IMAGE}]}}}}));
    out.push(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "istio-ingressgateway", "namespace": "istio-ingress", "labels": labels},
        "spec": {"type": "LoadBalancer", "selector": labels,
            "ports": [{"name": "http2", "port": 80, "targetPort": 8080}]}}));
    out
}

/// The MeshMigration naming every namespace (listed up to [`MAX_LISTED`], else by label).
pub fn migration(opts: &Options) -> Value {
    let mut spec = json!({
        "controlPlane": {"mode": "Sail", "istio": "default"},
        "waypoint": {"policy": "Auto"},
        "onFailure": "Pause",
    });
    if opts.namespaces <= MAX_LISTED {
        spec["namespaces"] = (0..opts.namespaces).map(namespace_name).collect();
    } else {
        spec["namespaceSelector"] = json!({"matchLabels": {FLEET_LABEL: "true"}});
    }
    json!({"apiVersion": "meshmig.io/v1alpha1", "kind": "MeshMigration",
        "metadata": {"name": MIGRATION}, "spec": spec})
}

fn sidecar_status() -> String {
    json!({"initContainers": ["istio-init"], "containers": ["istio-proxy"],
        "volumes": ["workload-socket", "credential-socket", "workload-certs", "istio-envoy",
            "istio-data", "istio-podinfo", "istio-token", "istiod-ca-cert"],
        "imagePullSecrets": null, "revision": "default"})
    .to_string()
}

/// The objects of the i-th namespace (mesh variant). The PRNG stream is drawn in a fixed
/// order (namespace, workloads, PeerAuthentication, policies), so a seed gives one corpus.
pub fn namespace_objects(opts: &Options, i: usize) -> Vec<Value> {
    let Shape {
        ns,
        services,
        mut rng,
        blocker,
    } = shape(opts, i);
    let ns = ns.as_str();
    let mut out = Vec::with_capacity(80);
    out.push(namespace_object(ns, i, &mut rng));
    out.extend(service_objects(ns, &services));
    out.extend(workload_objects(ns, &services, &mut rng));
    out.push(peer_authentication(ns, &services, blocker, &mut rng));
    // AuthorizationPolicies (5): L4 identity, L7, notNamespaces DENY, `when`, ports
    out.extend(authorization_policies(ns, i, &services, &mut rng));
    out.extend(destination_rules(ns, &services));
    out.extend(virtual_services(ns, &services, blocker, None));
    // Blockers that are extra objects
    if blocker == 1 {
        out.push(
            json!({"apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
            "metadata": {"name": "add-header", "namespace": ns},
            "spec": {"workloadSelector": {"labels": {"app": services[0].name}},
                "configPatches": [{"applyTo": "HTTP_FILTER",
                    "match": {"context": "SIDECAR_INBOUND"},
                    "patch": {"operation": "INSERT_BEFORE",
                        "value": {"name": "envoy.lua"}}}]}}),
        );
    }
    out
}

fn namespace_object(ns: &str, i: usize, rng: &mut Rng) -> Value {
    let mut ns_labels = json!({FLEET_LABEL: "true", "team": format!("team-{}", i % 37)});
    if rng.one_in(10) {
        ns_labels["istio.io/rev"] = "default".into();
    } else {
        ns_labels["istio-injection"] = "enabled".into();
    }
    json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": ns, "labels": ns_labels}})
}

fn service_objects(ns: &str, services: &[Svc]) -> Vec<Value> {
    services
        .iter()
        .map(|s| {
            json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": s.name, "namespace": ns,
                "labels": {"app": s.name, "service": s.name}},
            "spec": {"selector": {"app": s.name},
                "ports": [{"name": "http", "port": 8080, "targetPort": 8080, "protocol": "TCP"},
                          {"name": "grpc-admin", "port": 9090, "targetPort": 9090, "protocol": "TCP"}]}})
        })
        .collect()
}

/// One version of a Service: a Deployment, its ReplicaSet and Pods.
struct Workload<'a> {
    ns: &'a str,
    svc: &'a Svc,
    version: &'a str,
    replicas: u64,
    /// The injected sidecar's `sidecar.istio.io/status` annotation.
    sidecar_status: &'a str,
}

/// Deployments, ReplicaSets and Pods: 20 Pods over 13 Deployments, the first 7 run 2
/// replicas.
fn workload_objects(ns: &str, services: &[Svc], rng: &mut Rng) -> Vec<Value> {
    let status = sidecar_status();
    let mut out = Vec::new();
    let versions = services
        .iter()
        .flat_map(|s| s.versions.iter().map(move |v| (s, *v)));
    for (k, (svc, version)) in versions.enumerate() {
        let w = Workload {
            ns,
            svc,
            version,
            replicas: if k < 7 { 2 } else { 1 },
            sidecar_status: &status,
        };
        out.extend(workload(&w, rng));
    }
    out
}

fn workload(w: &Workload<'_>, rng: &mut Rng) -> Vec<Value> {
    let (ns, s, version, replicas) = (w.ns, w.svc, w.version, w.replicas);
    let mut out = Vec::new();
    let name = format!("{}-{version}", s.name);
    let labels = json!({"app": s.name, "version": version});
    let hash = rng.suffix(10);
    let container = json!({"name": s.name,
        "image": format!("registry.example.com/{}/{}:{}", ns, s.name, version),
        "ports": [{"containerPort": 8080}, {"containerPort": 9090}]});
    out.push(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": labels,
            "annotations": {"deployment.kubernetes.io/revision": "1"}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels},
                "spec": {"serviceAccountName": s.name, "containers": [container]}}},
        "status": {"replicas": replicas, "readyReplicas": replicas,
            "availableReplicas": replicas, "updatedReplicas": replicas}}));
    let rs = format!("{name}-{hash}");
    out.push(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": rs, "namespace": ns,
            "labels": {"app": s.name, "version": version, "pod-template-hash": hash},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                "uid": format!("{:032x}", rng.next_u64()), "controller": true}]},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels}}}));
    for _ in 0..replicas {
        out.push(pod(w, &rs, &hash, rng));
    }
    out
}

fn pod(w: &Workload<'_>, rs: &str, hash: &str, rng: &mut Rng) -> Value {
    let (ns, s, version, status) = (w.ns, w.svc, w.version, w.sidecar_status);
    let pod = format!("{rs}-{}", rng.suffix(5));
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod, "namespace": ns,
            "labels": {"app": s.name, "version": version, "pod-template-hash": hash,
                "security.istio.io/tlsMode": "istio",
                "service.istio.io/canonical-name": s.name,
                "service.istio.io/canonical-revision": version},
            "annotations": {"sidecar.istio.io/status": status,
                "kubectl.kubernetes.io/default-container": s.name,
                "prometheus.io/path": "/stats/prometheus", "prometheus.io/port": "15020",
                "prometheus.io/scrape": "true"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs,
                "uid": format!("{:032x}", rng.next_u64()), "controller": true}]},
        "spec": {"serviceAccountName": s.name,
            "nodeName": format!("node-{}", rng.below(10)),
            "containers": [
                {"name": s.name, "image": format!("registry.example.com/{}/{}:{}", ns, s.name, version)},
                {"name": "istio-proxy", "image": PROXY_IMAGE,
                 "args": ["proxy", "sidecar", "--domain", format!("{ns}.svc.cluster.local")]}]},
        "status": {"phase": "Running"}})
}

fn peer_authentication(ns: &str, services: &[Svc], blocker: u64, rng: &mut Rng) -> Value {
    let mut pa = json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": ns},
        "spec": {"mtls": {"mode": if rng.one_in(5) { "PERMISSIVE" } else { "STRICT" }}}});
    if blocker == 4 {
        pa["spec"]["selector"] = json!({"matchLabels": {"app": services[9].name}});
        pa["spec"]["portLevelMtls"] = json!({"9090": {"mode": "DISABLE"}});
    }
    pa
}

/// Subsets (and a traffic policy) for the versioned Services; TLS-only rules for two more.
fn destination_rules(ns: &str, services: &[Svc]) -> Vec<Value> {
    let mut out = Vec::new();
    for (k, s) in services.iter().enumerate().take(3) {
        let subsets: Vec<Value> = s
            .versions
            .iter()
            .map(|v| json!({"name": v, "labels": {"version": v}}))
            .collect();
        let host = if k == 1 {
            format!("{}.{ns}.svc.cluster.local", s.name)
        } else {
            s.name.to_string()
        };
        let mut spec = json!({"host": host, "subsets": subsets});
        match k {
            0 => {
                spec["trafficPolicy"] = json!({"connectionPool": {"http": {"http2MaxRequests": 1000,
                    "maxRequestsPerConnection": 10}}, "outlierDetection": {"consecutive5xxErrors": 5,
                    "interval": "30s", "baseEjectionTime": "60s"}});
            }
            1 => {
                spec["trafficPolicy"] = json!({"loadBalancer": {"simple": "LEAST_REQUEST"},
                    "tls": {"mode": "ISTIO_MUTUAL"}});
            }
            _ => {}
        }
        out.push(
            json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": s.name, "namespace": ns}, "spec": spec}),
        );
    }
    for s in services.iter().skip(3).take(2) {
        out.push(
            json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": s.name, "namespace": ns},
            "spec": {"host": s.name, "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}}}),
        );
    }

    out
}

fn authorization_policies(ns: &str, i: usize, services: &[Svc], rng: &mut Rng) -> Vec<Value> {
    let ap = |name: String, spec: Value| {
        json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec})
    };
    let sel = |s: &Svc| json!({"matchLabels": {"app": s.name}});
    let caller = |k: usize| services.get(k).map_or("default", |s| s.name);
    let mut out = Vec::new();
    // L4: identity only.
    let (a, b) = (&services[3], caller(0));
    out.push(ap(
        format!("{}-callers", a.name),
        json!({"selector": sel(a), "action": "ALLOW",
            "rules": [{"from": [{"source": {"principals": [principal(ns, b), principal(ns, caller(2))]}}]}]}),
    ));
    // L7: identity + methods and paths.
    let c = &services[4];
    out.push(ap(
        format!("{}-api", c.name),
        json!({"selector": sel(c), "action": "ALLOW",
            "rules": [{"from": [{"source": {"principals": [principal(ns, caller(0))]}}],
                       "to": [{"operation": {"methods": ["GET", "HEAD"], "paths": ["/api/*", "/healthz"]}}]},
                      {"from": [{"source": {"principals": [principal(ns, caller(1))]}}],
                       "to": [{"operation": {"methods": ["GET"], "paths": ["/public/*"]}}]}]}),
    ));
    // DENY with a negative form (callers outside the namespace and the ingress).
    let d = &services[5];
    out.push(ap(
        format!("{}-deny-outside", d.name),
        json!({"selector": sel(d), "action": "DENY",
            "rules": [{"from": [{"source": {"notNamespaces": [ns, "istio-ingress"]}}]}]}),
    ));
    // `when` keys: an L7 header condition and an L4 source condition.
    let e = &services[6];
    let tenant = format!("tenant-{}", rng.below(100));
    out.push(ap(
        format!("{}-tenant", e.name),
        json!({"selector": sel(e), "action": "ALLOW",
            "rules": [{"from": [{"source": {"principals": [principal(ns, caller(4))]}}],
                       "when": [{"key": "request.headers[x-tenant]", "values": [tenant]},
                                {"key": "source.namespace", "values": [ns]}]}]}),
    ));
    // L4 ports, with callers from the previous namespace (earlier in the listed order).
    let f = &services[7];
    let prev = if i == 0 {
        ns.to_string()
    } else {
        namespace_name(i - 1)
    };
    out.push(ap(
        format!("{}-ports", f.name),
        json!({"selector": sel(f), "action": "ALLOW",
            "rules": [{"from": [{"source": {"namespaces": [ns, prev]}}],
                       "to": [{"operation": {"ports": ["8080"]}}]}]}),
    ));
    out
}

/// The two VirtualServices of a namespace. With `gateway`, they are bound to that Istio
/// Gateway (and use `networking.istio.io/v1beta1`, which ingress2gateway reads).
fn virtual_services(ns: &str, services: &[Svc], blocker: u64, gateway: Option<&str>) -> Vec<Value> {
    let (a, b) = (services[0].name, services[1].name);
    let fqdn = |s: &str| format!("{s}.{ns}.svc.cluster.local");
    let mut canary = json!({
        "hosts": [a],
        "http": [
            {"name": "canary", "match": [{"headers": {"x-canary": {"exact": "true"}}}],
             "route": [{"destination": {"host": a, "subset": "v2", "port": {"number": 8080}}}]},
            {"name": "split",
             "route": [{"destination": {"host": a, "subset": "v1", "port": {"number": 8080}}, "weight": 90},
                       {"destination": {"host": a, "subset": "v2", "port": {"number": 8080}}, "weight": 10}],
             "retries": {"attempts": 3, "perTryTimeout": "2s", "retryOn": "5xx,connect-failure"},
             "timeout": "10s"}
        ]
    });
    let mut api = json!({
        "hosts": [fqdn(b)],
        "http": [
            {"name": "v2-api", "match": [{"uri": {"prefix": "/v2/"}}],
             "rewrite": {"uri": "/"},
             "route": [{"destination": {"host": fqdn(b), "subset": "v2", "port": {"number": 8080}}}],
             "headers": {"request": {"set": {"x-api-version": "2"}}}},
            {"name": "exact-health", "match": [{"uri": {"exact": "/healthz"}, "method": {"exact": "GET"}}],
             "route": [{"destination": {"host": fqdn(b), "subset": "v1", "port": {"number": 8080}}}]},
            {"name": "default",
             "route": [{"destination": {"host": fqdn(b), "subset": "v1", "port": {"number": 8080}}}],
             "timeout": "5s"}
        ]
    });
    match blocker {
        2 => {
            canary["http"][1]["fault"] =
                json!({"delay": {"percentage": {"value": 1.0}, "fixedDelay": "2s"}});
        }
        3 => {
            api["tcp"] = json!([{"match": [{"port": 9090}],
                "route": [{"destination": {"host": fqdn(b), "port": {"number": 9090}}}]}]);
        }
        5 => {
            canary["http"][0]["route"][0]["destination"]["subset"] = "v3".into();
        }
        _ => {}
    }
    let api_version = if gateway.is_some() {
        "networking.istio.io/v1beta1"
    } else {
        "networking.istio.io/v1"
    };
    [(format!("{a}-canary"), canary), (format!("{b}-api"), api)]
        .into_iter()
        .map(|(name, mut spec)| {
            if let Some(g) = gateway {
                spec["gateways"] = json!([g]);
            }
            json!({"apiVersion": api_version, "kind": "VirtualService",
                "metadata": {"name": name, "namespace": ns}, "spec": spec})
        })
        .collect()
}

/// The gateway variant of the i-th namespace: an Istio Gateway and the same two
/// VirtualServices bound to it.
pub fn gateway_objects(opts: &Options, i: usize) -> Vec<Value> {
    let Shape {
        ns,
        services,
        blocker,
        ..
    } = shape(opts, i);
    let mut out = vec![
        json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "Gateway",
        "metadata": {"name": "ingress", "namespace": ns},
        "spec": {"selector": {"istio": "ingressgateway"},
            "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}}),
    ];
    out.extend(virtual_services(&ns, &services, blocker, Some("ingress")));
    out
}

/// Multi-document YAML of `objects`.
pub fn to_yaml(objects: &[Value]) -> Result<String, String> {
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(o).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use meshmig_planner::Inventory;

    fn opts(n: usize, seed: u64) -> Options {
        Options {
            namespaces: n,
            seed,
            variant: Variant::Mesh,
        }
    }

    #[test]
    fn deterministic_by_seed() {
        let a = to_yaml(&corpus(&opts(5, 7))).unwrap();
        let b = to_yaml(&corpus(&opts(5, 7))).unwrap();
        let c = to_yaml(&corpus(&opts(5, 8))).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn loads_and_plans_with_the_shape_asked_for() {
        let n = 40;
        let text = to_yaml(&corpus(&opts(n, 1))).unwrap();
        let mut inv = Inventory::default();
        inv.load_str(&text, "gen.yaml").unwrap();
        assert!(inv.skipped.is_empty(), "{:?}", inv.skipped);
        assert_eq!(inv.namespaces.len(), n + 3);
        assert_eq!(inv.services.len(), n * 10 + 1);
        assert_eq!(inv.pods.len(), n * 20);
        assert_eq!(inv.authorization_policies.len(), n * 5);
        assert_eq!(inv.virtual_services.len(), n * 2);
        assert_eq!(inv.peer_authentications.len(), n);
        assert_eq!(inv.mesh_migrations.len(), 1);
        let mm = &inv.mesh_migrations[0];
        let plan = meshmig_planner::plan(&inv, &mm.spec, MIGRATION);
        assert_eq!(plan.namespaces.len(), n);
        // Every namespace gets a waypoint (L7 policies, routes, traffic policy) and its two
        // VirtualServices become HTTPRoutes.
        for ns in &plan.namespaces {
            assert!(ns.exists && ns.waypoint.needed, "{}", ns.name);
        }
        let routes = plan
            .manifests
            .iter()
            .filter(|m| m["kind"] == "HTTPRoute")
            .count();
        assert!(routes >= 2 * n - 5, "{routes} HTTPRoutes");
        // Restart steps act on every Deployment.
        let restarts: usize = plan
            .namespaces
            .iter()
            .flat_map(|n| &n.steps)
            .filter(|s| s.number == meshmig_api::Step::SidecarRemoval)
            .map(|s| {
                s.actions
                    .iter()
                    .filter(|a| format!("{:?}", a.op) == "Restart")
                    .count()
            })
            .sum();
        assert_eq!(restarts, n * 13);
    }

    #[test]
    fn a_few_blockers_across_the_corpus() {
        let opts = opts(200, 3);
        let blocked = (0..200).filter(|i| shape(&opts, *i).blocker != 0).count();
        assert!((1..=15).contains(&blocked), "{blocked}");
        let text = to_yaml(&corpus(&opts)).unwrap();
        let mut inv = Inventory::default();
        inv.load_str(&text, "gen.yaml").unwrap();
        let plan = meshmig_planner::plan(&inv, &inv.mesh_migrations[0].spec, MIGRATION);
        assert!(plan.summary.blockers >= 1);
    }

    #[test]
    fn large_corpora_select_by_label() {
        let mm = migration(&opts(MAX_LISTED + 1, 1));
        assert!(mm["spec"].get("namespaces").is_none());
        assert_eq!(
            mm["spec"]["namespaceSelector"]["matchLabels"][FLEET_LABEL],
            "true"
        );
        let small = migration(&opts(3, 1));
        assert_eq!(small["spec"]["namespaces"][2], "app-00003");
    }

    #[test]
    fn gateway_variant_carries_the_same_routes() {
        let o = opts(3, 9);
        let mesh: Vec<Value> = corpus(&o)
            .into_iter()
            .filter(|v| v["kind"] == "VirtualService")
            .collect();
        let gw = corpus(&Options {
            variant: Variant::Gateway,
            ..o
        });
        let gw_vs: Vec<&Value> = gw
            .iter()
            .filter(|v| v["kind"] == "VirtualService")
            .collect();
        assert_eq!(mesh.len(), gw_vs.len());
        for (m, g) in mesh.iter().zip(gw_vs) {
            assert_eq!(m["spec"]["http"], g["spec"]["http"]);
            assert_eq!(g["spec"]["gateways"][0], "ingress");
            assert_eq!(g["apiVersion"], "networking.istio.io/v1beta1");
        }
        assert_eq!(gw.iter().filter(|v| v["kind"] == "Gateway").count(), 3);
    }
}
