//! Partial typed views of the Istio kinds meshmig reads and writes.
//!
//! Field names follow the Istio API (`security.istio.io`, `networking.istio.io`,
//! `telemetry.istio.io`, `extensions.istio.io`). Fields meshmig does not reason about stay in
//! `extra`, so an object survives a read-modify-write untouched. Lists are `Option<Vec<_>>`
//! because for Istio an absent list and an empty list can differ (an ALLOW policy with
//! `rules: []` denies everything, just like one with no `rules`; a rule with `from: []` is
//! kept as written).

use std::collections::BTreeMap;

use k8s_openapi::NamespaceResourceScope;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::partial_view;
use crate::view::Extra;

type Strings = Option<Vec<String>>;
type Labels = Option<BTreeMap<String, String>>;

/// `selector: {matchLabels: …}` of security and telemetry kinds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSelector {
    /// Pod labels; every one must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_labels: Labels,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `targetRef`/`targetRefs` entry of a policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PolicyTargetReference {
    /// API group of the target (`""` for Service, `gateway.networking.k8s.io` for Gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind of the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name of the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Namespace of the target (cross-namespace references never match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

impl PolicyTargetReference {
    /// A reference to a Service in the policy's own namespace.
    pub fn service(name: &str) -> Self {
        Self {
            group: Some(String::new()),
            kind: Some("Service".into()),
            name: Some(name.into()),
            namespace: None,
            extra: Extra::new(),
        }
    }
}

// ---------------------------------------------------------------- security.istio.io

/// Spec of `AuthorizationPolicy`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationPolicySpec {
    /// Workloads the policy applies to (absent: the whole namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// Deprecated single target reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// Targets (Service, ServiceEntry, Gateway, GatewayClass); enforced by waypoints only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_refs: Option<Vec<PolicyTargetReference>>,
    /// ALLOW (default), DENY, AUDIT or CUSTOM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Extension provider for CUSTOM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<Value>,
    /// Rules; a request matching any rule triggers the action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<Rule>>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One AuthorizationPolicy rule: all of `from`, `to`, `when` must match.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// Sources; any may match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<RuleFrom>>,
    /// Operations; any may match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<RuleTo>>,
    /// Extra conditions; all must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<Vec<Condition>>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `from` entry.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RuleFrom {
    /// The source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Source of a request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    /// Peer identities (`<trust-domain>/ns/<ns>/sa/<sa>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principals: Strings,
    /// Negated peer identities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_principals: Strings,
    /// Request (JWT) principals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_principals: Strings,
    /// Negated request principals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_request_principals: Strings,
    /// Peer namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Strings,
    /// Negated peer namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_namespaces: Strings,
    /// Peer service accounts (`ns/sa` or `sa`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_accounts: Strings,
    /// Negated peer service accounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_service_accounts: Strings,
    /// Peer IP blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_blocks: Strings,
    /// Negated peer IP blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_ip_blocks: Strings,
    /// Original client IP blocks (X-Forwarded-For), L7.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_ip_blocks: Strings,
    /// Negated original client IP blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_remote_ip_blocks: Strings,
    /// Other fields (e.g. `trustDomains`, which ztunnel ignores).
    #[serde(flatten)]
    pub extra: Extra,
}

/// `to` entry.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RuleTo {
    /// The operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Operation of a request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    /// Host header values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Strings,
    /// Negated hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_hosts: Strings,
    /// Destination ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Strings,
    /// Negated destination ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_ports: Strings,
    /// HTTP methods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Strings,
    /// Negated HTTP methods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_methods: Strings,
    /// HTTP paths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Strings,
    /// Negated HTTP paths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_paths: Strings,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `when` condition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Attribute name, e.g. `request.headers[x-token]` or `source.ip`.
    #[serde(default)]
    pub key: String,
    /// Accepted values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Strings,
    /// Rejected values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_values: Strings,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

partial_view!(
    /// `security.istio.io` AuthorizationPolicy.
    AuthorizationPolicy, AuthorizationPolicySpec, group = "security.istio.io", version = "v1",
    kind = "AuthorizationPolicy", plural = "authorizationpolicies", scope = NamespaceResourceScope
);

/// Mutual TLS setting.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PeerMtls {
    /// UNSET, DISABLE, PERMISSIVE or STRICT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Spec of `PeerAuthentication`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PeerAuthenticationSpec {
    /// Workloads it applies to (absent: namespace or, in the root namespace, mesh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// Workload-wide mTLS mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<PeerMtls>,
    /// Per-port mTLS modes (keys are port numbers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_level_mtls: Option<BTreeMap<String, PeerMtls>>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

partial_view!(
    /// `security.istio.io` PeerAuthentication.
    PeerAuthentication, PeerAuthenticationSpec, group = "security.istio.io", version = "v1",
    kind = "PeerAuthentication", plural = "peerauthentications", scope = NamespaceResourceScope
);

/// Spec of `RequestAuthentication`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RequestAuthenticationSpec {
    /// Workloads it applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// Deprecated single target reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// Targets (waypoint-enforced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_refs: Option<Vec<PolicyTargetReference>>,
    /// JWT rules, kept verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_rules: Option<Vec<Value>>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

partial_view!(
    /// `security.istio.io` RequestAuthentication.
    RequestAuthentication, RequestAuthenticationSpec, group = "security.istio.io", version = "v1",
    kind = "RequestAuthentication", plural = "requestauthentications", scope = NamespaceResourceScope
);

// ---------------------------------------------------------------- networking.istio.io

/// Spec of `VirtualService`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServiceSpec {
    /// Destination hosts the routes apply to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Strings,
    /// Gateways (and `mesh` for sidecars) the routes apply to; absent means `mesh`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateways: Strings,
    /// HTTP routes, evaluated in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<Vec<HttpRoute>>,
    /// TLS routes, kept verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Vec<Value>>,
    /// TCP routes, kept verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<Vec<Value>>,
    /// Namespaces the routes are exported to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_to: Strings,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// An HTTP route of a VirtualService.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoute {
    /// Route name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Match conditions; any may match.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub matches: Option<Vec<HttpMatchRequest>>,
    /// Weighted destinations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<Vec<HttpRouteDestination>>,
    /// Redirect instead of forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<HttpRedirect>,
    /// Fixed response (no Gateway API equivalent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<Value>,
    /// Delegation to another VirtualService (no Gateway API equivalent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate: Option<Value>,
    /// Rewrite of path and authority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<HttpRewrite>,
    /// Request timeout (protobuf duration, e.g. `10s`, `0.5s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<HttpRetry>,
    /// Fault injection (no Gateway API equivalent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Value>,
    /// Mirror destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Destination>,
    /// Multiple mirror destinations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirrors: Option<Vec<HttpMirrorPolicy>>,
    /// Fraction of requests mirrored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_percentage: Option<Percent>,
    /// Deprecated integer mirror percentage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_percent: Option<Value>,
    /// CORS policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors_policy: Option<CorsPolicy>,
    /// Header manipulation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Match conditions of an HTTP route; all must hold.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HttpMatchRequest {
    /// Match name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Path match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<StringMatch>,
    /// Scheme match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<StringMatch>,
    /// Method match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatch>,
    /// Authority match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<StringMatch>,
    /// Header matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, StringMatch>>,
    /// Destination port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Source workload labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_labels: Labels,
    /// Gateways the match applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateways: Strings,
    /// Query parameter matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_params: Option<BTreeMap<String, StringMatch>>,
    /// Case-insensitive URI match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_uri_case: Option<bool>,
    /// Headers that must not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub without_headers: Option<BTreeMap<String, StringMatch>>,
    /// Source namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
    /// Stats prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stat_prefix: Option<String>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// String match: one of exact, prefix, regex.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct StringMatch {
    /// Exact value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// Prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// RE2 regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A weighted destination.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteDestination {
    /// Destination.
    #[serde(default)]
    pub destination: Destination,
    /// Relative weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    /// Header manipulation for this destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A destination host, subset and port.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    /// Host (short name, FQDN or ServiceEntry host).
    #[serde(default)]
    pub host: String,
    /// DestinationRule subset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    /// Port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Port selector.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PortSelector {
    /// Port number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<u32>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Redirect.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HttpRedirect {
    /// Replacement path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Replacement authority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// Replacement port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derive_port: Option<String>,
    /// Replacement scheme.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Status code (default 301).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_code: Option<u32>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Rewrite.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HttpRewrite {
    /// Replacement path or matched prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Replacement authority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// Regex rewrite (no Gateway API equivalent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri_regex_rewrite: Option<Value>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Retry policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HttpRetry {
    /// Number of retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i32>,
    /// Timeout per attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<String>,
    /// Envoy retry conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<String>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One entry of `mirrors`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HttpMirrorPolicy {
    /// Mirror destination.
    #[serde(default)]
    pub destination: Destination,
    /// Fraction mirrored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A percentage, 0..100.
impl Percent {
    /// The value as a float.
    pub fn as_f64(&self) -> Option<f64> {
        self.value.as_ref().and_then(serde_json::Number::as_f64)
    }
}

/// A percentage, 0..100.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Percent {
    /// Value, kept as written (an integer stays an integer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Number>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// CORS policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CorsPolicy {
    /// Allowed origins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_origins: Option<Vec<StringMatch>>,
    /// Deprecated exact allowed origins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_origin: Strings,
    /// Allowed methods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_methods: Strings,
    /// Allowed headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_headers: Strings,
    /// Exposed headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose_headers: Strings,
    /// Preflight cache duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
    /// Whether credentials are allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Header manipulation for requests and responses.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Headers {
    /// Request headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<HeaderOperations>,
    /// Response headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HeaderOperations>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Set, add and remove headers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HeaderOperations {
    /// Overwrite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Labels,
    /// Append.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add: Labels,
    /// Remove.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove: Strings,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

partial_view!(
    /// `networking.istio.io` VirtualService.
    VirtualService, VirtualServiceSpec, group = "networking.istio.io", version = "v1",
    kind = "VirtualService", plural = "virtualservices", scope = NamespaceResourceScope
);

/// Traffic policy of a DestinationRule or subset; sub-policies kept verbatim.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TrafficPolicy {
    /// Load balancing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<Value>,
    /// Connection pool limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<Value>,
    /// Outlier detection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<Value>,
    /// Upstream TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Value>,
    /// Per-port overrides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_level_settings: Option<Vec<Value>>,
    /// Other fields (tunnel, proxyProtocol, …).
    #[serde(flatten)]
    pub extra: Extra,
}

/// A named subset of a service's endpoints.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Subset {
    /// Subset name.
    #[serde(default)]
    pub name: String,
    /// Pod labels selecting the subset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Labels,
    /// Subset traffic policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Spec of `DestinationRule`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DestinationRuleSpec {
    /// Host the rule applies to.
    #[serde(default)]
    pub host: String,
    /// Traffic policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
    /// Subsets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subsets: Option<Vec<Subset>>,
    /// Export scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_to: Strings,
    /// Workload selector (sidecar-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

partial_view!(
    /// `networking.istio.io` DestinationRule.
    DestinationRule, DestinationRuleSpec, group = "networking.istio.io", version = "v1",
    kind = "DestinationRule", plural = "destinationrules", scope = NamespaceResourceScope
);

/// `workloadSelector: {labels: …}` of Sidecar and EnvoyFilter.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LabelsSelector {
    /// Pod labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Labels,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Spec of `Sidecar`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SidecarSpec {
    /// Workloads it applies to (absent: namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<LabelsSelector>,
    /// Egress listeners, kept verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<Value>>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

partial_view!(
    /// `networking.istio.io` Sidecar.
    Sidecar, SidecarSpec, group = "networking.istio.io", version = "v1",
    kind = "Sidecar", plural = "sidecars", scope = NamespaceResourceScope
);

/// Spec of `EnvoyFilter`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EnvoyFilterSpec {
    /// Workloads it applies to (absent: namespace, or mesh in the root namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<LabelsSelector>,
    /// Targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_refs: Option<Vec<PolicyTargetReference>>,
    /// Patches, kept verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_patches: Option<Vec<Value>>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

partial_view!(
    /// `networking.istio.io` EnvoyFilter.
    EnvoyFilter, EnvoyFilterSpec, group = "networking.istio.io", version = "v1alpha3",
    kind = "EnvoyFilter", plural = "envoyfilters", scope = NamespaceResourceScope
);

/// Spec of `ServiceEntry`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEntrySpec {
    /// Hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Strings,
    /// MESH_EXTERNAL or MESH_INTERNAL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Selects WorkloadEntries or pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<LabelsSelector>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

partial_view!(
    /// `networking.istio.io` ServiceEntry.
    ServiceEntry, ServiceEntrySpec, group = "networking.istio.io", version = "v1",
    kind = "ServiceEntry", plural = "serviceentries", scope = NamespaceResourceScope
);

/// Spec of `WorkloadEntry`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadEntrySpec {
    /// Address of the (usually VM) workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Labels,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

partial_view!(
    /// `networking.istio.io` WorkloadEntry.
    WorkloadEntry, WorkloadEntrySpec, group = "networking.istio.io", version = "v1",
    kind = "WorkloadEntry", plural = "workloadentries", scope = NamespaceResourceScope
);

/// Spec of `WorkloadGroup`, kept verbatim.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct WorkloadGroupSpec {
    /// All fields.
    #[serde(flatten)]
    pub extra: Extra,
}

partial_view!(
    /// `networking.istio.io` WorkloadGroup.
    WorkloadGroup, WorkloadGroupSpec, group = "networking.istio.io", version = "v1",
    kind = "WorkloadGroup", plural = "workloadgroups", scope = NamespaceResourceScope
);

// ---------------------------------------------------------------- telemetry / extensions

/// Spec of `Telemetry`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TelemetrySpec {
    /// Workloads it applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// Deprecated single target reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// Targets (waypoint-enforced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_refs: Option<Vec<PolicyTargetReference>>,
    /// Other fields (tracing, metrics, accessLogging).
    #[serde(flatten)]
    pub extra: Extra,
}

partial_view!(
    /// `telemetry.istio.io` Telemetry.
    Telemetry, TelemetrySpec, group = "telemetry.istio.io", version = "v1",
    kind = "Telemetry", plural = "telemetries", scope = NamespaceResourceScope
);

/// Spec of `WasmPlugin`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct WasmPluginSpec {
    /// Workloads it applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// Deprecated single target reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// Targets (waypoint-enforced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_refs: Option<Vec<PolicyTargetReference>>,
    /// Other fields (url, phase, pluginConfig, …).
    #[serde(flatten)]
    pub extra: Extra,
}

partial_view!(
    /// `extensions.istio.io` WasmPlugin.
    WasmPlugin, WasmPluginSpec, group = "extensions.istio.io", version = "v1alpha1",
    kind = "WasmPlugin", plural = "wasmplugins", scope = NamespaceResourceScope
);
