//! The Envoy RBAC matcher on the filters istiod really builds (`meshmig-istio rbac`, from the
//! pinned istio.io/istio): each test writes AuthorizationPolicies, asks istiod's builder for
//! a sidecar's or a waypoint's RBAC, and checks the matcher's decision on requests.

use std::collections::BTreeMap;
use std::net::IpAddr;

use meshmig_istio_oracle::envoy_rbac::{
    self, Connection, Decision, Filter, HttpRequest, Reason, Request,
};
use meshmig_istio_oracle::oracle::{Oracle, Proxy, RbacOptions};
use serde_json::{Value, json};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn policy(namespace: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    })
}

fn dry_run(mut p: Value) -> Value {
    p["metadata"]["annotations"] = json!({"istio.io/dry-run": "true"});
    p
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

/// The HTTP filters istiod builds for a sidecar of `app: web` in `shop`.
fn sidecar(policies: &[Value]) -> Result<Vec<Filter>, Box<dyn std::error::Error>> {
    let opts = RbacOptions::new(Proxy::Sidecar {
        namespace: "shop".into(),
        labels: BTreeMap::from([("app".to_string(), "web".to_string())]),
    });
    let rbac = Oracle::get()?.rbac(policies, &opts)?;
    Ok(envoy_rbac::parse_filters(&rbac.http)?)
}

/// The HTTP filters of waypoint `shop/waypoint` for Service `shop/web`.
fn waypoint(policies: &[Value]) -> Result<Vec<Filter>, Box<dyn std::error::Error>> {
    let opts = RbacOptions::new(Proxy::Waypoint {
        namespace: "shop".into(),
        gateway: "waypoint".into(),
        service: Some("shop/web".into()),
    });
    let rbac = Oracle::get()?.rbac(policies, &opts)?;
    Ok(envoy_rbac::parse_filters(&rbac.http)?)
}

/// A request as a sidecar sees it: mTLS from `<ns>/<sa>` (plaintext with `None`), from
/// 10.1.0.5 to 10.2.0.9:9080.
fn request(from: Option<(&str, &str)>, method: &str, path: &str) -> Request {
    Request {
        connection: Connection {
            peer_certificate: from
                .map(|(ns, sa)| format!("spiffe://cluster.local/ns/{ns}/sa/{sa}")),
            filter_state: BTreeMap::new(),
            direct_remote_ip: ip("10.1.0.5"),
            remote_ip: ip("10.1.0.5"),
            destination_ip: ip("10.2.0.9"),
            destination_port: 9080,
            requested_server_name: None,
        },
        http: Some(HttpRequest::new(method, "web.shop:9080", path)),
        dynamic_metadata: BTreeMap::new(),
    }
}

fn with_header(mut r: Request, name: &str, value: &str) -> Request {
    r.http = r.http.map(|h| h.with_header(name, value));
    r
}

fn on_port(mut r: Request, port: u16) -> Request {
    r.connection.destination_port = port;
    r
}

/// As a waypoint sees it: the HBONE peer in filter state.
fn through_waypoint(mut r: Request) -> Request {
    if let Some(peer) = r.connection.peer_certificate.clone() {
        r.connection
            .filter_state
            .insert("io.istio.peer_principal".into(), peer);
    }
    r
}

fn decide(filters: &[Filter], r: &Request) -> Result<Decision, Box<dyn std::error::Error>> {
    Ok(envoy_rbac::evaluate(filters, r)?.decision)
}

const WEB: Option<(&str, &str)> = Some(("shop", "frontend"));
const OTHER: Option<(&str, &str)> = Some(("billing", "worker"));

#[test]
fn allow_on_principal_and_method() -> TestResult {
    let filters = sidecar(&[policy(
        "shop",
        "viewer",
        json!({"selector": {"matchLabels": {"app": "web"}}, "rules": [{
            "from": [{"source": {"principals": ["cluster.local/ns/shop/sa/frontend"]}}],
            "to": [{"operation": {"methods": ["GET"]}}],
        }]}),
    )])?;
    assert_eq!(
        decide(&filters, &request(WEB, "GET", "/"))?,
        Decision::Allow
    );
    assert_eq!(
        decide(&filters, &request(WEB, "POST", "/"))?,
        Decision::Deny
    );
    assert_eq!(
        decide(&filters, &request(OTHER, "GET", "/"))?,
        Decision::Deny
    );
    assert_eq!(
        decide(&filters, &request(None, "GET", "/"))?,
        Decision::Deny
    );
    let verdict = envoy_rbac::evaluate(&filters, &request(WEB, "GET", "/"))?;
    assert_eq!(
        verdict.reason,
        Reason::Allowed {
            allowed_by: vec!["ns[shop]-policy[viewer]-rule[0]".into()]
        }
    );
    Ok(())
}

#[test]
fn policies_of_other_workloads_do_not_attach() -> TestResult {
    let filters = sidecar(&[policy(
        "shop",
        "other",
        json!({"selector": {"matchLabels": {"app": "db"}}, "rules": []}),
    )])?;
    assert!(filters.is_empty(), "{filters:?}");
    assert_eq!(
        decide(&filters, &request(None, "GET", "/"))?,
        Decision::Allow
    );
    Ok(())
}

#[test]
fn deny_beats_allow_on_paths_and_not_paths() -> TestResult {
    let filters = sidecar(&[
        policy(
            "shop",
            "no-admin",
            json!({"action": "DENY", "rules": [{"to": [{"operation": {
                "paths": ["/admin/*", "*/debug", "/exact"], "notPaths": ["/admin/public*"]}}]}]}),
        ),
        policy("shop", "all", json!({"rules": [{}]})),
    ])?;
    for (path, want) in [
        ("/admin/users", Decision::Deny),
        ("/admin/public/x", Decision::Allow),
        ("/x/debug?verbose=1", Decision::Deny),
        ("/exact", Decision::Deny),
        ("/exact/more", Decision::Allow),
        ("/", Decision::Allow),
    ] {
        assert_eq!(
            decide(&filters, &request(WEB, "GET", path))?,
            want,
            "{path}"
        );
    }
    Ok(())
}

#[test]
fn path_templates() -> TestResult {
    let filters = sidecar(&[policy(
        "shop",
        "templates",
        json!({"rules": [{"to": [{"operation": {"paths": ["/v1/{*}/items", "/files/{**}"]}}]}]}),
    )])?;
    for (path, want) in [
        ("/v1/shop/items", Decision::Allow),
        ("/v1/a/b/items", Decision::Deny),
        ("/files/a/b/c", Decision::Allow),
        ("/other", Decision::Deny),
    ] {
        assert_eq!(
            decide(&filters, &request(WEB, "GET", path))?,
            want,
            "{path}"
        );
    }
    Ok(())
}

#[test]
fn namespaces_not_principals_and_service_accounts() -> TestResult {
    let filters = sidecar(&[policy(
        "shop",
        "sources",
        json!({"rules": [
            {"from": [{"source": {"namespaces": ["bill*"], "notPrincipals": ["cluster.local/ns/billing/sa/intruder"]}}]},
            {"from": [{"source": {"serviceAccounts": ["frontend"]}}]},
        ]}),
    )])?;
    assert_eq!(
        decide(&filters, &request(OTHER, "GET", "/"))?,
        Decision::Allow
    );
    assert_eq!(
        decide(
            &filters,
            &request(Some(("billing", "intruder")), "GET", "/")
        )?,
        Decision::Deny
    );
    // serviceAccounts without a namespace are in the policy's own.
    assert_eq!(
        decide(&filters, &request(WEB, "GET", "/"))?,
        Decision::Allow
    );
    assert_eq!(
        decide(&filters, &request(Some(("shop", "other")), "GET", "/"))?,
        Decision::Deny
    );
    assert_eq!(
        decide(&filters, &request(None, "GET", "/"))?,
        Decision::Deny
    );
    Ok(())
}

#[test]
fn ports_not_ports_and_not_methods() -> TestResult {
    let filters = sidecar(&[policy(
        "shop",
        "ports",
        json!({"action": "DENY", "rules": [{"to": [{"operation": {"ports": ["9080"], "notMethods": ["GET"]}}]}]}),
    )])?;
    assert_eq!(
        decide(&filters, &request(WEB, "POST", "/"))?,
        Decision::Deny
    );
    assert_eq!(
        decide(&filters, &request(WEB, "GET", "/"))?,
        Decision::Allow
    );
    assert_eq!(
        decide(&filters, &on_port(request(WEB, "POST", "/"), 8080))?,
        Decision::Allow
    );
    let not_ports = sidecar(&[policy(
        "shop",
        "not-ports",
        json!({"rules": [{"to": [{"operation": {"notPorts": ["8080"]}}]}]}),
    )])?;
    assert_eq!(
        decide(&not_ports, &request(WEB, "GET", "/"))?,
        Decision::Allow
    );
    assert_eq!(
        decide(&not_ports, &on_port(request(WEB, "GET", "/"), 8080))?,
        Decision::Deny
    );
    Ok(())
}

#[test]
fn when_conditions_on_headers_and_source_namespace() -> TestResult {
    let filters = sidecar(&[policy(
        "shop",
        "when",
        json!({"rules": [{"when": [
            {"key": "request.headers[x-user]", "values": ["alice", "bo*"], "notValues": ["bobby"]},
            {"key": "source.namespace", "notValues": ["billing"]},
        ]}]}),
    )])?;
    let alice = with_header(request(WEB, "GET", "/"), "x-user", "alice");
    assert_eq!(decide(&filters, &alice)?, Decision::Allow);
    let bob = with_header(request(WEB, "GET", "/"), "X-User", "bob");
    assert_eq!(decide(&filters, &bob)?, Decision::Allow);
    let bobby = with_header(request(WEB, "GET", "/"), "x-user", "bobby");
    assert_eq!(decide(&filters, &bobby)?, Decision::Deny);
    assert_eq!(decide(&filters, &request(WEB, "GET", "/"))?, Decision::Deny);
    let from_billing = with_header(request(OTHER, "GET", "/"), "x-user", "alice");
    assert_eq!(decide(&filters, &from_billing)?, Decision::Deny);
    Ok(())
}

#[test]
fn ip_blocks_and_hosts() -> TestResult {
    let filters = sidecar(&[policy(
        "shop",
        "net",
        json!({"rules": [{"from": [{"source": {"ipBlocks": ["10.1.0.0/16"], "notIpBlocks": ["10.1.9.0/24"]}}],
                          "to": [{"operation": {"hosts": ["web.shop:9080", "*.example.com"]}}]}]}),
    )])?;
    assert_eq!(
        decide(&filters, &request(WEB, "GET", "/"))?,
        Decision::Allow
    );
    let mut far = request(WEB, "GET", "/");
    far.connection.direct_remote_ip = ip("10.1.9.7");
    assert_eq!(decide(&filters, &far)?, Decision::Deny);
    let mut other_host = request(WEB, "GET", "/");
    other_host.http = Some(HttpRequest::new("GET", "API.Example.com", "/"));
    assert_eq!(decide(&filters, &other_host)?, Decision::Allow);
    other_host.http = Some(HttpRequest::new("GET", "evil.test", "/"));
    assert_eq!(decide(&filters, &other_host)?, Decision::Deny);
    Ok(())
}

#[test]
fn dry_run_policies_are_shadow_rules_only() -> TestResult {
    let filters = sidecar(&[dry_run(policy(
        "shop",
        "deny-all",
        json!({"action": "DENY", "rules": [{}]}),
    ))])?;
    assert!(
        filters.iter().any(|f| f.shadow_rules.is_some()),
        "{filters:?}"
    );
    assert_eq!(
        decide(&filters, &request(WEB, "GET", "/"))?,
        Decision::Allow
    );
    Ok(())
}

#[test]
fn custom_without_a_provider_denies_what_it_matches() -> TestResult {
    // No extension provider is configured, so istiod turns CUSTOM into a DENY.
    let filters = sidecar(&[policy(
        "shop",
        "ext",
        json!({"action": "CUSTOM", "provider": {"name": "opa"}, "rules": [{"to": [{"operation": {"paths": ["/x"]}}]}]}),
    )])?;
    assert_eq!(
        decide(&filters, &request(WEB, "GET", "/x"))?,
        Decision::Deny
    );
    assert_eq!(
        decide(&filters, &request(WEB, "GET", "/y"))?,
        Decision::Allow
    );
    Ok(())
}

#[test]
fn audit_decides_nothing() -> TestResult {
    let filters = sidecar(&[policy(
        "shop",
        "audit",
        json!({"action": "AUDIT", "rules": [{}]}),
    )])?;
    assert!(!filters.is_empty());
    assert_eq!(
        decide(&filters, &request(None, "DELETE", "/"))?,
        Decision::Allow
    );
    Ok(())
}

#[test]
fn a_waypoint_matches_the_peer_from_filter_state() -> TestResult {
    let policies = [
        policy(
            "shop",
            "svc",
            json!({"targetRefs": [{"kind": "Service", "group": "", "name": "web"}], "rules": [{
                "from": [{"source": {"principals": ["cluster.local/ns/shop/sa/frontend"]}}],
                "to": [{"operation": {"methods": ["GET"]}}]}]}),
        ),
        policy(
            "shop",
            "gw",
            json!({"targetRefs": [{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "waypoint"}],
                   "action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin"]}}]}]}),
        ),
        // Selector policies are not the waypoint's.
        policy("shop", "selector", json!({"action": "DENY", "rules": [{}]})),
    ];
    let filters = waypoint(&policies)?;
    let get = through_waypoint(request(WEB, "GET", "/"));
    assert_eq!(decide(&filters, &get)?, Decision::Allow);
    let admin = through_waypoint(request(WEB, "GET", "/admin"));
    assert_eq!(decide(&filters, &admin)?, Decision::Deny);
    let other = through_waypoint(request(OTHER, "GET", "/"));
    assert_eq!(decide(&filters, &other)?, Decision::Deny);
    // Without the filter state (a TLS peer only) the principal does not match.
    assert_eq!(decide(&filters, &request(WEB, "GET", "/"))?, Decision::Deny);
    Ok(())
}

#[test]
fn every_matcher_kind_istiod_emits_is_read() -> TestResult {
    // One policy with every source, operation and condition field, for a sidecar and a
    // waypoint, both HTTP and TCP chains: nothing may be unsupported.
    let spec = json!({"action": "DENY", "rules": [{
    "from": [{"source": {
        "principals": ["cluster.local/ns/a/sa/b", "*/ns/x/*", "pre*", "*"], "notPrincipals": ["c"],
        "namespaces": ["a", "b*", "*c"], "notNamespaces": ["z"],
        "ipBlocks": ["10.0.0.0/8", "1.2.3.4"], "notIpBlocks": ["10.1.0.0/16"],
        "remoteIpBlocks": ["192.168.0.0/16"], "notRemoteIpBlocks": ["192.168.1.0/24"],
        "requestPrincipals": ["iss/sub", "*"], "notRequestPrincipals": ["bad/sub"],
        "serviceAccounts": ["sa1", "other/sa2"], "notServiceAccounts": ["sa3"]}}],
    "to": [{"operation": {
        "hosts": ["a.example.com", "*.b.com"], "notHosts": ["x.b.com"],
        "ports": ["8080"], "notPorts": ["9090"], "methods": ["GET"], "notMethods": ["DELETE"],
        "paths": ["/exact", "/pre/*", "*/suf", "/a/{*}/b", "/c/{**}"], "notPaths": ["/admin*"]}}],
    "when": [
        {"key": "request.headers[x-user]", "values": ["alice", "bo*", "*"], "notValues": ["mallory"]},
        {"key": "source.ip", "values": ["10.2.0.0/16"]},
        {"key": "source.namespace", "values": ["a"]},
        {"key": "source.principal", "values": ["cluster.local/ns/a/sa/b"]},
        {"key": "destination.ip", "values": ["10.3.0.1"]},
        {"key": "destination.port", "values": ["8080"]},
        {"key": "remote.ip", "values": ["10.4.0.0/16"]},
        {"key": "connection.sni", "values": ["foo.com"]},
        {"key": "request.auth.claims[groups]", "values": ["admin"]},
        {"key": "request.auth.principal", "values": ["iss/sub"]},
        {"key": "request.auth.audiences", "values": ["aud"]},
        {"key": "request.auth.presenter", "values": ["pres"]},
    ]}]});
    let mut targeted = spec.clone();
    targeted["targetRefs"] = json!([{"kind": "Service", "group": "", "name": "web"}]);
    let sidecar_opts = RbacOptions::new(Proxy::Sidecar {
        namespace: "shop".into(),
        labels: BTreeMap::new(),
    });
    let waypoint_opts = RbacOptions::new(Proxy::Waypoint {
        namespace: "shop".into(),
        gateway: "waypoint".into(),
        service: Some("web".into()),
    });
    for (p, opts) in [
        (policy("shop", "big", spec), sidecar_opts),
        (policy("shop", "big", targeted), waypoint_opts),
    ] {
        let rbac = Oracle::get()?.rbac(&[p], &opts)?;
        let http = envoy_rbac::parse_filters(&rbac.http)?;
        let tcp = envoy_rbac::parse_filters(&rbac.tcp)?;
        assert!(!http.is_empty() && !tcp.is_empty());
        // This request misses the first principal condition (no JWT, wrong namespace).
        assert_eq!(
            decide(&http, &request(WEB, "GET", "/exact"))?,
            Decision::Allow
        );
    }
    Ok(())
}
