//! The Envoy RBAC matcher: the RBAC filters istiod builds for a sidecar or a waypoint (the
//! `http` and `tcp` lists of [`crate::oracle::Rbac`]) and Envoy's decision on one request.
//!
//! Written from Envoy's documented API and behaviour, not from its code:
//!
//! - the filters `envoy.extensions.filters.http.rbac.v3.RBAC` and
//!   `envoy.extensions.filters.network.rbac.v3.RBAC` (`rules` enforce, `shadow_rules` only
//!   emit stats and dynamic metadata);
//! - `config.rbac.v3.RBAC`: `action` ALLOW (the default) lets a request through when some
//!   policy matches and refuses it otherwise; DENY refuses it when some policy matches; LOG
//!   only marks it. A filter without `rules` enforces nothing;
//! - `config.rbac.v3.Policy`: it matches when at least one of its `permissions` *and* one of
//!   its `principals` match;
//! - the `Permission` / `Principal` trees (`and_*`, `or_*`, `not_*`, `any`) and their leaves,
//!   `type.matcher.v3.StringMatcher`, `config.route.v3.HeaderMatcher`,
//!   `type.matcher.v3.MetadataMatcher`/`ValueMatcher`, `config.core.v3.CidrRange`, and the
//!   `uri_template` path matcher (`*` one path segment, `**` the rest).
//!
//! Only what istiod emits is modelled (see `e2e/istio/README.md`, `rbac`): every other filter,
//! field, matcher kind or regular-expression construct is an [`RbacError`], so a gap in the
//! model shows up as an error instead of a silent "match" or "no match".
//!
//! How istiod maps policies onto this (observed with the real builder, see the tests):
//! ALLOW and DENY policies become one filter each (ALLOW rules, DENY rules), AUDIT a LOG
//! filter, dry-run policies go to `shadow_rules`, and a CUSTOM policy without a configured
//! extension provider becomes a DENY filter (`…-deny-due-to-bad-CUSTOM-action`). istiod orders
//! the filters CUSTOM, AUDIT, DENY, ALLOW, and Envoy runs them in that order: the first filter
//! that refuses ends the request (HTTP 403 "RBAC: access denied"; a network filter closes the
//! connection).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde_json::{Map, Value};

use crate::ztunnel::Cidr;

const HTTP_RBAC: &str = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";
const NETWORK_RBAC: &str = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC";
const URI_TEMPLATE: &str =
    "type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig";

/// Why a filter cannot be read, or a request cannot be judged by it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RbacError {
    /// Something Envoy has but this matcher does not model.
    #[error("{at}: {what} is not modelled by the Envoy RBAC matcher")]
    Unsupported {
        /// Where in the filter (a JSON path).
        at: String,
        /// What was found.
        what: String,
    },
    /// Something that is not a valid Envoy configuration.
    #[error("{at}: {message}")]
    Invalid {
        /// Where in the filter (a JSON path).
        at: String,
        /// What is wrong.
        message: String,
    },
}

// ---------------------------------------------------------------------------------------------
// The configuration
// ---------------------------------------------------------------------------------------------

/// Which filter chain a filter belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterKind {
    /// `envoy.filters.http.rbac`: judges each HTTP request.
    Http,
    /// `envoy.filters.network.rbac`: judges a TCP connection (no headers, no path).
    Network,
}

/// One RBAC filter.
#[derive(Clone, Debug, PartialEq)]
pub struct Filter {
    /// The filter's name (`envoy.filters.http.rbac`).
    pub name: String,
    /// HTTP or network.
    pub kind: FilterKind,
    /// The enforced rules; `None`: the filter enforces nothing.
    pub rules: Option<Rules>,
    /// Shadow rules (istiod's dry-run policies): evaluated for stats only, never enforced.
    pub shadow_rules: Option<Rules>,
}

/// `config.rbac.v3.RBAC`.
#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    /// What a matching policy does.
    pub action: RuleAction,
    /// The policies by name (istiod: `ns[<ns>]-policy[<name>]-rule[<i>]`).
    pub policies: BTreeMap<String, Policy>,
}

/// `config.rbac.v3.RBAC.Action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleAction {
    /// Only requests matching a policy pass.
    Allow,
    /// Requests matching a policy are refused.
    Deny,
    /// Requests matching a policy are marked for access logging; nothing is refused.
    Log,
}

/// `config.rbac.v3.Policy`.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// What is accessed; one must match.
    pub permissions: Vec<Permission>,
    /// Who accesses; one must match.
    pub principals: Vec<Principal>,
}

/// `config.rbac.v3.Permission`, the kinds istiod emits.
#[derive(Clone, Debug, PartialEq)]
pub enum Permission {
    /// `any: true`.
    Any,
    /// `and_rules`: all must match.
    And(Vec<Permission>),
    /// `or_rules`: one must match.
    Or(Vec<Permission>),
    /// `not_rule`.
    Not(Box<Permission>),
    /// `header` (the method is the `:method` pseudo-header, the host `:authority`).
    Header(HeaderMatcher),
    /// `url_path`: the path without query and fragment.
    UrlPath(StringMatcher),
    /// `uri_template`: istiod's translation of `{*}` / `{**}` paths.
    UriTemplate(PathTemplate),
    /// `destination_ip`.
    DestinationIp(Cidr),
    /// `destination_port`.
    DestinationPort(u32),
    /// `destination_port_range`: `start` inclusive, `end` exclusive.
    DestinationPortRange(u32, u32),
    /// `requested_server_name` (SNI).
    RequestedServerName(StringMatcher),
    /// `metadata` (dynamic metadata, e.g. JWT claims from `envoy.filters.http.jwt_authn`).
    Metadata(MetadataMatcher),
}

/// `config.rbac.v3.Principal`, the kinds istiod emits.
#[derive(Clone, Debug, PartialEq)]
pub enum Principal {
    /// `any: true`.
    Any,
    /// `and_ids`: all must match.
    And(Vec<Principal>),
    /// `or_ids`: one must match.
    Or(Vec<Principal>),
    /// `not_id`.
    Not(Box<Principal>),
    /// `authenticated`: a mutual-TLS peer whose certificate's URI SAN matches (any
    /// authenticated peer when `None`).
    Authenticated(Option<StringMatcher>),
    /// `filter_state`: a string in the connection's filter state (a waypoint reads the HBONE
    /// peer from `io.istio.peer_principal`).
    FilterState {
        /// The filter state key.
        key: String,
        /// Its value must match.
        matcher: StringMatcher,
    },
    /// `direct_remote_ip`: the address of the downstream connection.
    DirectRemoteIp(Cidr),
    /// `remote_ip`: the original client address (`X-Forwarded-For` aware).
    RemoteIp(Cidr),
    /// `source_ip` (deprecated): the downstream address, as `direct_remote_ip`.
    SourceIp(Cidr),
    /// `header`.
    Header(HeaderMatcher),
    /// `url_path`.
    UrlPath(StringMatcher),
    /// `metadata`.
    Metadata(MetadataMatcher),
}

/// `type.matcher.v3.StringMatcher`.
#[derive(Clone, Debug, PartialEq)]
pub struct StringMatcher {
    /// The pattern.
    pub pattern: Pattern,
    /// ASCII case-insensitive (not applied to regular expressions, as in Envoy).
    pub ignore_case: bool,
}

/// The `match_pattern` oneof of a StringMatcher.
#[derive(Clone, Debug, PartialEq)]
pub enum Pattern {
    /// `exact`.
    Exact(String),
    /// `prefix`.
    Prefix(String),
    /// `suffix`.
    Suffix(String),
    /// `contains`.
    Contains(String),
    /// `safe_regex`: RE2, matched against the whole value.
    Regex(Regex),
}

/// `config.route.v3.HeaderMatcher`.
#[derive(Clone, Debug, PartialEq)]
pub struct HeaderMatcher {
    /// Header name, lower case (pseudo-headers start with `:`).
    pub name: String,
    /// What the value must be.
    pub test: HeaderTest,
    /// `invert_match`.
    pub invert: bool,
    /// `treat_missing_header_as_empty`.
    pub missing_as_empty: bool,
}

/// The `header_match_specifier` oneof, normalised (the deprecated `exact_match`,
/// `prefix_match`, … become a [`StringMatcher`]).
#[derive(Clone, Debug, PartialEq)]
pub enum HeaderTest {
    /// The value must match.
    Value(StringMatcher),
    /// `present_match`: the header must be present (`true`) or absent (`false`).
    Present(bool),
}

/// `type.matcher.v3.MetadataMatcher`.
#[derive(Clone, Debug, PartialEq)]
pub struct MetadataMatcher {
    /// The filter namespace of the metadata (`envoy.filters.http.jwt_authn`).
    pub filter: String,
    /// Keys leading to the value.
    pub path: Vec<String>,
    /// What the value must be.
    pub value: ValueMatcher,
    /// `invert`.
    pub invert: bool,
}

/// `type.matcher.v3.ValueMatcher`, the kinds istiod emits.
#[derive(Clone, Debug, PartialEq)]
pub enum ValueMatcher {
    /// `string_match`: a string value matching.
    String(StringMatcher),
    /// `bool_match`.
    Bool(bool),
    /// `present_match`: a value of any primitive kind is there.
    Present(bool),
    /// `list_match.one_of`: a list with one element matching.
    ListOneOf(Box<ValueMatcher>),
    /// `or_match`: one of them matches.
    Or(Vec<ValueMatcher>),
}

// ---------------------------------------------------------------------------------------------
// The request
// ---------------------------------------------------------------------------------------------

/// The connection a request arrives on, as the proxy sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// The URI SAN of the peer's certificate when the connection is mutual TLS
    /// (`spiffe://<td>/ns/<ns>/sa/<sa>`); `None` for plaintext.
    pub peer_certificate: Option<String>,
    /// String filter state (a waypoint sets `io.istio.peer_principal` from the HBONE peer).
    pub filter_state: BTreeMap<String, String>,
    /// The downstream connection's address.
    pub direct_remote_ip: IpAddr,
    /// The original client's address.
    pub remote_ip: IpAddr,
    /// The local address the connection was made to.
    pub destination_ip: IpAddr,
    /// The local port the connection was made to.
    pub destination_port: u16,
    /// SNI, when the client sent one.
    pub requested_server_name: Option<String>,
}

/// An HTTP request's headers, names lower case, pseudo-headers included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequest {
    headers: Vec<(String, String)>,
}

impl HttpRequest {
    /// A request with `:method`, `:authority`, `:path` (query included) and `:scheme` http.
    pub fn new(method: &str, authority: &str, path: &str) -> Self {
        let headers = [
            (":method", method),
            (":authority", authority),
            (":path", path),
            (":scheme", "http"),
        ];
        Self {
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
        }
    }

    /// Adds a header (the name is lower-cased, as HTTP/2 and Envoy's header map do).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    /// The header's value; several headers of one name are joined with `,`, as Envoy does
    /// before matching.
    pub fn header(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self
            .headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect();
        (!values.is_empty()).then(|| values.join(","))
    }

    /// The path without query string and fragment (what `url_path` and `uri_template` see).
    pub fn url_path(&self) -> Option<String> {
        let path = self.header(":path")?;
        let end = path.find(['?', '#']).unwrap_or(path.len());
        Some(path[..end].to_string())
    }
}

/// What one RBAC filter judges.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// The connection.
    pub connection: Connection,
    /// The HTTP request; `None` for a TCP connection (network filters).
    pub http: Option<HttpRequest>,
    /// Dynamic metadata by filter namespace (JWT claims, …); empty when no filter set any.
    pub dynamic_metadata: BTreeMap<String, Value>,
}

// ---------------------------------------------------------------------------------------------
// The decision
// ---------------------------------------------------------------------------------------------

/// The outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Every filter let the request through.
    Allow,
    /// A filter refused it.
    Deny,
}

/// Why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Nothing refused it; the ALLOW policies that admitted it, one per ALLOW filter.
    Allowed {
        /// Policy names.
        allowed_by: Vec<String>,
    },
    /// A DENY filter's policy matched.
    DeniedBy {
        /// Index of the filter in the chain.
        filter: usize,
        /// The policy.
        policy: String,
    },
    /// An ALLOW filter had no matching policy.
    NoAllowMatched {
        /// Index of the filter in the chain.
        filter: usize,
    },
}

/// Decision and reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Allow or deny.
    pub decision: Decision,
    /// Why.
    pub reason: Reason,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            Reason::Allowed { allowed_by } if allowed_by.is_empty() => {
                write!(f, "allowed (no policy refused it)")
            }
            Reason::Allowed { allowed_by } => write!(f, "allowed by {}", allowed_by.join(", ")),
            Reason::DeniedBy { policy, .. } => write!(f, "denied by {policy}"),
            Reason::NoAllowMatched { .. } => write!(f, "denied: no ALLOW policy matched"),
        }
    }
}

/// Reads the filters istiod built (`Rbac::http` or `Rbac::tcp`), in chain order.
pub fn parse_filters(filters: &[Value]) -> Result<Vec<Filter>, RbacError> {
    filters
        .iter()
        .enumerate()
        .map(|(i, f)| Filter::from_json(f, &format!("filters[{i}]")))
        .collect()
}

/// Envoy's decision over a filter chain: the first filter that refuses ends the request.
/// HTTP filters need `request.http`; network filters ignore it.
pub fn evaluate(filters: &[Filter], request: &Request) -> Result<Verdict, RbacError> {
    let mut allowed_by = Vec::new();
    for (i, filter) in filters.iter().enumerate() {
        if filter.kind == FilterKind::Http && request.http.is_none() {
            return Err(RbacError::Invalid {
                at: format!("filters[{i}]"),
                message: "an HTTP RBAC filter judges HTTP requests, not a TCP connection".into(),
            });
        }
        let scope = match filter.kind {
            FilterKind::Http => request.clone(),
            // A network filter sees the connection only, even when HTTP runs over it.
            FilterKind::Network => Request {
                http: None,
                ..request.clone()
            },
        };
        match filter.judge(&scope) {
            FilterOutcome::Passed(policy) => allowed_by.extend(policy),
            FilterOutcome::Denied(policy) => {
                return Ok(denied(Reason::DeniedBy { filter: i, policy }));
            }
            FilterOutcome::NoAllowMatched => {
                return Ok(denied(Reason::NoAllowMatched { filter: i }));
            }
        }
    }
    Ok(Verdict {
        decision: Decision::Allow,
        reason: Reason::Allowed { allowed_by },
    })
}

fn denied(reason: Reason) -> Verdict {
    Verdict {
        decision: Decision::Deny,
        reason,
    }
}

enum FilterOutcome {
    /// Let through; the ALLOW policy that matched, if the filter is an ALLOW filter.
    Passed(Option<String>),
    Denied(String),
    NoAllowMatched,
}

impl Filter {
    /// The enforced rules only: `shadow_rules` never change the outcome.
    fn judge(&self, request: &Request) -> FilterOutcome {
        let Some(rules) = &self.rules else {
            return FilterOutcome::Passed(None);
        };
        let matched = rules.first_match(request);
        match (rules.action, matched) {
            (RuleAction::Allow, Some(policy)) => FilterOutcome::Passed(Some(policy)),
            (RuleAction::Allow, None) => FilterOutcome::NoAllowMatched,
            (RuleAction::Deny, Some(policy)) => FilterOutcome::Denied(policy),
            (RuleAction::Deny | RuleAction::Log, _) => FilterOutcome::Passed(None),
        }
    }
}

impl Rules {
    /// The first matching policy by name (Envoy's order is unspecified; only the name
    /// reported depends on it).
    pub fn first_match(&self, request: &Request) -> Option<String> {
        self.policies
            .iter()
            .find(|(_, p)| p.matches(request))
            .map(|(name, _)| name.clone())
    }
}

impl Policy {
    /// One permission and one principal must match.
    pub fn matches(&self, request: &Request) -> bool {
        self.permissions.iter().any(|p| p.matches(request))
            && self.principals.iter().any(|p| p.matches(request))
    }
}

// ---------------------------------------------------------------------------------------------
// Matching
// ---------------------------------------------------------------------------------------------

impl Permission {
    /// Whether the permission matches.
    pub fn matches(&self, request: &Request) -> bool {
        let c = &request.connection;
        match self {
            Permission::Any => true,
            Permission::And(all) => all.iter().all(|p| p.matches(request)),
            Permission::Or(any) => any.iter().any(|p| p.matches(request)),
            Permission::Not(p) => !p.matches(request),
            Permission::Header(h) => h.matches(request.http.as_ref()),
            Permission::UrlPath(m) => url_path(request).is_some_and(|p| m.matches(&p)),
            Permission::UriTemplate(t) => url_path(request).is_some_and(|p| t.matches(&p)),
            Permission::DestinationIp(cidr) => cidr.contains(c.destination_ip),
            Permission::DestinationPort(port) => u32::from(c.destination_port) == *port,
            Permission::DestinationPortRange(start, end) => {
                (*start..*end).contains(&u32::from(c.destination_port))
            }
            Permission::RequestedServerName(m) => c
                .requested_server_name
                .as_deref()
                .is_some_and(|s| m.matches(s)),
            Permission::Metadata(m) => m.matches(&request.dynamic_metadata),
        }
    }
}

impl Principal {
    /// Whether the principal matches.
    pub fn matches(&self, request: &Request) -> bool {
        let c = &request.connection;
        match self {
            Principal::Any => true,
            Principal::And(all) => all.iter().all(|p| p.matches(request)),
            Principal::Or(any) => any.iter().any(|p| p.matches(request)),
            Principal::Not(p) => !p.matches(request),
            // No certificate (plaintext) is never authenticated, whatever the matcher.
            Principal::Authenticated(m) => c
                .peer_certificate
                .as_deref()
                .is_some_and(|san| m.as_ref().is_none_or(|m| m.matches(san))),
            Principal::FilterState { key, matcher } => {
                c.filter_state.get(key).is_some_and(|v| matcher.matches(v))
            }
            Principal::DirectRemoteIp(cidr) | Principal::SourceIp(cidr) => {
                cidr.contains(c.direct_remote_ip)
            }
            Principal::RemoteIp(cidr) => cidr.contains(c.remote_ip),
            Principal::Header(h) => h.matches(request.http.as_ref()),
            Principal::UrlPath(m) => url_path(request).is_some_and(|p| m.matches(&p)),
            Principal::Metadata(m) => m.matches(&request.dynamic_metadata),
        }
    }
}

fn url_path(request: &Request) -> Option<String> {
    request.http.as_ref().and_then(HttpRequest::url_path)
}

impl StringMatcher {
    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        let fold = |s: &str| {
            if self.ignore_case {
                s.to_ascii_lowercase()
            } else {
                s.to_string()
            }
        };
        let value_folded = fold(value);
        match &self.pattern {
            Pattern::Exact(s) => value_folded == fold(s),
            Pattern::Prefix(s) => value_folded.starts_with(&fold(s)),
            Pattern::Suffix(s) => value_folded.ends_with(&fold(s)),
            Pattern::Contains(s) => value_folded.contains(&fold(s)),
            Pattern::Regex(re) => re.is_full_match(value),
        }
    }
}

impl HeaderMatcher {
    /// Envoy's header matching: an absent header fails every value matcher (inverted or not)
    /// unless it is treated as empty; `present_match` compares presence, and inverting it
    /// inverts that.
    pub fn matches(&self, http: Option<&HttpRequest>) -> bool {
        let value = http.and_then(|h| h.header(&self.name));
        let value = match value {
            Some(v) => Some(v),
            None if self.missing_as_empty => Some(String::new()),
            None => None,
        };
        match (&self.test, value) {
            (HeaderTest::Present(want), value) => (value.is_some() == *want) != self.invert,
            (HeaderTest::Value(m), Some(value)) => m.matches(&value) != self.invert,
            (HeaderTest::Value(_), None) => false,
        }
    }
}

impl MetadataMatcher {
    /// A missing value matches nothing; `invert` inverts the result.
    pub fn matches(&self, metadata: &BTreeMap<String, Value>) -> bool {
        let mut value = metadata.get(&self.filter);
        for key in &self.path {
            value = value.and_then(|v| v.get(key));
        }
        let hit = value.is_some_and(|v| self.value.matches(v));
        hit != self.invert
    }
}

impl ValueMatcher {
    fn matches(&self, value: &Value) -> bool {
        match self {
            ValueMatcher::String(m) => value.as_str().is_some_and(|s| m.matches(s)),
            ValueMatcher::Bool(b) => value.as_bool() == Some(*b),
            ValueMatcher::Present(want) => {
                let primitive = !matches!(value, Value::Null | Value::Object(_));
                primitive == *want
            }
            ValueMatcher::ListOneOf(m) => value
                .as_array()
                .is_some_and(|items| items.iter().any(|v| m.matches(v))),
            ValueMatcher::Or(any) => any.iter().any(|m| m.matches(value)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading the JSON (protojson with proto field names, as the e2e/istio binary writes it)
// ---------------------------------------------------------------------------------------------

type Object = Map<String, Value>;

fn unsupported(at: &str, what: impl Into<String>) -> RbacError {
    RbacError::Unsupported {
        at: at.to_string(),
        what: what.into(),
    }
}

fn invalid(at: &str, message: impl Into<String>) -> RbacError {
    RbacError::Invalid {
        at: at.to_string(),
        message: message.into(),
    }
}

fn object<'v>(value: &'v Value, at: &str) -> Result<&'v Object, RbacError> {
    value
        .as_object()
        .ok_or_else(|| invalid(at, format!("expected an object, found {value}")))
}

/// Rejects every field not in `known`, so an unmodelled field is an error.
fn only(map: &Object, known: &[&str], at: &str) -> Result<(), RbacError> {
    match map.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(unsupported(&format!("{at}.{k}"), format!("field `{k}`"))),
        None => Ok(()),
    }
}

/// The single member of a protobuf oneof written as an object.
fn oneof<'v>(map: &'v Object, at: &str) -> Result<(&'v str, &'v Value), RbacError> {
    let mut members = map.iter();
    match (members.next(), members.next()) {
        (Some((k, v)), None) => Ok((k.as_str(), v)),
        (None, _) => Err(invalid(at, "empty: no member of the oneof is set")),
        (Some(_), Some(_)) => Err(invalid(
            at,
            format!(
                "more than one member of a oneof: {:?}",
                map.keys().collect::<Vec<_>>()
            ),
        )),
    }
}

fn string(value: &Value, at: &str) -> Result<String, RbacError> {
    value
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| invalid(at, format!("expected a string, found {value}")))
}

fn boolean(value: &Value, at: &str) -> Result<bool, RbacError> {
    value
        .as_bool()
        .ok_or_else(|| invalid(at, format!("expected a bool, found {value}")))
}

fn number(value: &Value, at: &str) -> Result<u32, RbacError> {
    value
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| invalid(at, format!("expected a uint32, found {value}")))
}

fn list<'v>(value: &'v Value, at: &str) -> Result<&'v [Value], RbacError> {
    value
        .as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| invalid(at, format!("expected a list, found {value}")))
}

fn field<'v>(map: &'v Object, key: &str) -> Option<&'v Value> {
    map.get(key)
}

fn required<'v>(map: &'v Object, key: &str, at: &str) -> Result<&'v Value, RbacError> {
    map.get(key)
        .ok_or_else(|| invalid(at, format!("`{key}` is required")))
}

/// Parses each element of a list with its index in the path.
fn each<T>(
    value: &Value,
    at: &str,
    parse: impl Fn(&Value, &str) -> Result<T, RbacError>,
) -> Result<Vec<T>, RbacError> {
    list(value, at)?
        .iter()
        .enumerate()
        .map(|(i, v)| parse(v, &format!("{at}[{i}]")))
        .collect()
}

impl Filter {
    /// One filter as `rbac` prints it: `{name, typed_config: {"@type", …}}`.
    pub fn from_json(value: &Value, at: &str) -> Result<Self, RbacError> {
        let map = object(value, at)?;
        only(map, &["name", "typed_config"], at)?;
        let name = string(required(map, "name", at)?, &format!("{at}.name"))?;
        let at = format!("{at}.typed_config");
        let config = object(required(map, "typed_config", &at)?, &at)?;
        let type_url = string(required(config, "@type", &at)?, &format!("{at}.@type"))?;
        let kind = match type_url.as_str() {
            HTTP_RBAC => {
                only(
                    config,
                    &[
                        "@type",
                        "rules",
                        "shadow_rules",
                        "rules_stat_prefix",
                        "shadow_rules_stat_prefix",
                        "track_per_rule_stats",
                    ],
                    &at,
                )?;
                FilterKind::Http
            }
            NETWORK_RBAC => {
                only(
                    config,
                    &[
                        "@type",
                        "rules",
                        "shadow_rules",
                        "stat_prefix",
                        "shadow_rules_stat_prefix",
                        // When the decision is taken does not change it for one request.
                        "enforcement_type",
                    ],
                    &at,
                )?;
                FilterKind::Network
            }
            // ext_authz (a CUSTOM policy with a configured provider) and anything else.
            other => return Err(unsupported(&at, format!("filter type {other} ({name})"))),
        };
        let rules_of = |key: &str| {
            field(config, key)
                .map(|v| Rules::from_json(v, &format!("{at}.{key}")))
                .transpose()
        };
        Ok(Self {
            name,
            kind,
            rules: rules_of("rules")?,
            shadow_rules: rules_of("shadow_rules")?,
        })
    }
}

impl Rules {
    fn from_json(value: &Value, at: &str) -> Result<Self, RbacError> {
        let map = object(value, at)?;
        only(map, &["action", "policies"], at)?;
        let action = match field(map, "action") {
            None => RuleAction::Allow, // the proto default, omitted by protojson
            Some(v) => match string(v, &format!("{at}.action"))?.as_str() {
                "ALLOW" => RuleAction::Allow,
                "DENY" => RuleAction::Deny,
                "LOG" => RuleAction::Log,
                other => return Err(unsupported(at, format!("action {other}"))),
            },
        };
        let mut policies = BTreeMap::new();
        if let Some(v) = field(map, "policies") {
            let at = format!("{at}.policies");
            for (name, policy) in object(v, &at)? {
                let parsed = Policy::from_json(policy, &format!("{at}[{name}]"))?;
                policies.insert(name.clone(), parsed);
            }
        }
        Ok(Self { action, policies })
    }
}

impl Policy {
    fn from_json(value: &Value, at: &str) -> Result<Self, RbacError> {
        let map = object(value, at)?;
        // `condition` / `checked_condition` (CEL) are Envoy features istiod does not use.
        only(map, &["permissions", "principals"], at)?;
        let permissions = match field(map, "permissions") {
            Some(v) => each(v, &format!("{at}.permissions"), Permission::from_json)?,
            None => Vec::new(),
        };
        let principals = match field(map, "principals") {
            Some(v) => each(v, &format!("{at}.principals"), Principal::from_json)?,
            None => Vec::new(),
        };
        Ok(Self {
            permissions,
            principals,
        })
    }
}

impl Permission {
    fn from_json(value: &Value, at: &str) -> Result<Self, RbacError> {
        let (kind, v) = oneof(object(value, at)?, at)?;
        let at = &format!("{at}.{kind}");
        Ok(match kind {
            "any" => any(v, at, Permission::Any)?,
            "and_rules" => Permission::And(set(v, "rules", at, Permission::from_json)?),
            "or_rules" => Permission::Or(set(v, "rules", at, Permission::from_json)?),
            "not_rule" => Permission::Not(Box::new(Permission::from_json(v, at)?)),
            "header" => Permission::Header(HeaderMatcher::from_json(v, at)?),
            "url_path" => Permission::UrlPath(path_matcher(v, at)?),
            "uri_template" => Permission::UriTemplate(uri_template(v, at)?),
            "destination_ip" => Permission::DestinationIp(cidr(v, at)?),
            "destination_port" => Permission::DestinationPort(number(v, at)?),
            "destination_port_range" => {
                let map = object(v, at)?;
                only(map, &["start", "end"], at)?;
                let bound = |k: &str| field(map, k).map_or(Ok(0), |n| number(n, at));
                Permission::DestinationPortRange(bound("start")?, bound("end")?)
            }
            "requested_server_name" => {
                Permission::RequestedServerName(StringMatcher::from_json(v, at)?)
            }
            "metadata" => Permission::Metadata(MetadataMatcher::from_json(v, at)?),
            other => return Err(unsupported(at, format!("permission kind `{other}`"))),
        })
    }
}

impl Principal {
    fn from_json(value: &Value, at: &str) -> Result<Self, RbacError> {
        let (kind, v) = oneof(object(value, at)?, at)?;
        let at = &format!("{at}.{kind}");
        Ok(match kind {
            "any" => any(v, at, Principal::Any)?,
            "and_ids" => Principal::And(set(v, "ids", at, Principal::from_json)?),
            "or_ids" => Principal::Or(set(v, "ids", at, Principal::from_json)?),
            "not_id" => Principal::Not(Box::new(Principal::from_json(v, at)?)),
            "authenticated" => {
                let map = object(v, at)?;
                only(map, &["principal_name"], at)?;
                let name = field(map, "principal_name")
                    .map(|m| StringMatcher::from_json(m, &format!("{at}.principal_name")))
                    .transpose()?;
                Principal::Authenticated(name)
            }
            "filter_state" => {
                let map = object(v, at)?;
                only(map, &["key", "string_match"], at)?;
                Principal::FilterState {
                    key: string(required(map, "key", at)?, at)?,
                    matcher: StringMatcher::from_json(
                        required(map, "string_match", at)?,
                        &format!("{at}.string_match"),
                    )?,
                }
            }
            "direct_remote_ip" => Principal::DirectRemoteIp(cidr(v, at)?),
            "remote_ip" => Principal::RemoteIp(cidr(v, at)?),
            "source_ip" => Principal::SourceIp(cidr(v, at)?),
            "header" => Principal::Header(HeaderMatcher::from_json(v, at)?),
            "url_path" => Principal::UrlPath(path_matcher(v, at)?),
            "metadata" => Principal::Metadata(MetadataMatcher::from_json(v, at)?),
            other => return Err(unsupported(at, format!("principal kind `{other}`"))),
        })
    }
}

/// `any: true` (`any: false` is rejected by Envoy's validation).
fn any<T>(value: &Value, at: &str, it: T) -> Result<T, RbacError> {
    if boolean(value, at)? {
        Ok(it)
    } else {
        Err(invalid(at, "`any` must be true"))
    }
}

/// `{rules: [...]}` / `{ids: [...]}`.
fn set<T>(
    value: &Value,
    key: &str,
    at: &str,
    parse: impl Fn(&Value, &str) -> Result<T, RbacError>,
) -> Result<Vec<T>, RbacError> {
    let map = object(value, at)?;
    only(map, &[key], at)?;
    match field(map, key) {
        Some(v) => each(v, &format!("{at}.{key}"), parse),
        None => Ok(Vec::new()),
    }
}

/// `type.matcher.v3.PathMatcher`: `{path: StringMatcher}`.
fn path_matcher(value: &Value, at: &str) -> Result<StringMatcher, RbacError> {
    let map = object(value, at)?;
    only(map, &["path"], at)?;
    StringMatcher::from_json(required(map, "path", at)?, &format!("{at}.path"))
}

/// `config.core.v3.CidrRange`.
fn cidr(value: &Value, at: &str) -> Result<Cidr, RbacError> {
    let map = object(value, at)?;
    only(map, &["address_prefix", "prefix_len"], at)?;
    let address = string(required(map, "address_prefix", at)?, at)?;
    let ip: IpAddr = address
        .parse()
        .map_err(|_| invalid(at, format!("not an IP address: {address:?}")))?;
    let length = match field(map, "prefix_len") {
        Some(v) => number(v, at)?,
        None => 0,
    };
    let length = u8::try_from(length).map_err(|_| invalid(at, "prefix_len out of range"))?;
    Cidr::new(ip, length).map_err(|e| invalid(at, e.to_string()))
}

fn uri_template(value: &Value, at: &str) -> Result<PathTemplate, RbacError> {
    let map = object(value, at)?;
    only(map, &["name", "typed_config"], at)?;
    let at = format!("{at}.typed_config");
    let config = object(required(map, "typed_config", &at)?, &at)?;
    only(config, &["@type", "path_template"], &at)?;
    let type_url = string(required(config, "@type", &at)?, &at)?;
    if type_url != URI_TEMPLATE {
        return Err(unsupported(&at, format!("path matcher {type_url}")));
    }
    let template = string(required(config, "path_template", &at)?, &at)?;
    PathTemplate::parse(&template).map_err(|what| unsupported(&at, what))
}

impl StringMatcher {
    fn from_json(value: &Value, at: &str) -> Result<Self, RbacError> {
        let map = object(value, at)?;
        let ignore_case = match field(map, "ignore_case") {
            Some(v) => boolean(v, &format!("{at}.ignore_case"))?,
            None => false,
        };
        let patterns: Object = map
            .iter()
            .filter(|(k, _)| k.as_str() != "ignore_case")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let (kind, v) = oneof(&patterns, at)?;
        let at = &format!("{at}.{kind}");
        let pattern = match kind {
            "exact" => Pattern::Exact(string(v, at)?),
            "prefix" => Pattern::Prefix(string(v, at)?),
            "suffix" => Pattern::Suffix(string(v, at)?),
            "contains" => Pattern::Contains(string(v, at)?),
            "safe_regex" => Pattern::Regex(regex_matcher(v, at)?),
            other => return Err(unsupported(at, format!("string matcher `{other}`"))),
        };
        Ok(Self {
            pattern,
            ignore_case,
        })
    }
}

/// `type.matcher.v3.RegexMatcher`: `{regex, google_re2?}`.
fn regex_matcher(value: &Value, at: &str) -> Result<Regex, RbacError> {
    let map = object(value, at)?;
    only(map, &["regex", "google_re2"], at)?;
    let pattern = string(required(map, "regex", at)?, at)?;
    Regex::new(&pattern).map_err(|what| unsupported(at, what))
}

impl HeaderMatcher {
    fn from_json(value: &Value, at: &str) -> Result<Self, RbacError> {
        let map = object(value, at)?;
        let flag =
            |key: &str| field(map, key).map_or(Ok(false), |v| boolean(v, &format!("{at}.{key}")));
        let name = string(required(map, "name", at)?, at)?.to_ascii_lowercase();
        let invert = flag("invert_match")?;
        let missing_as_empty = flag("treat_missing_header_as_empty")?;
        let specifiers: Object = map
            .iter()
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "name" | "invert_match" | "treat_missing_header_as_empty"
                )
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let (kind, v) = oneof(&specifiers, at)?;
        let at = &format!("{at}.{kind}");
        let plain = |pattern: Pattern| {
            HeaderTest::Value(StringMatcher {
                pattern,
                ignore_case: false,
            })
        };
        let test = match kind {
            "string_match" => HeaderTest::Value(StringMatcher::from_json(v, at)?),
            "present_match" => HeaderTest::Present(boolean(v, at)?),
            "exact_match" => plain(Pattern::Exact(string(v, at)?)),
            "prefix_match" => plain(Pattern::Prefix(string(v, at)?)),
            "suffix_match" => plain(Pattern::Suffix(string(v, at)?)),
            "contains_match" => plain(Pattern::Contains(string(v, at)?)),
            "safe_regex_match" => plain(Pattern::Regex(regex_matcher(v, at)?)),
            other => return Err(unsupported(at, format!("header matcher `{other}`"))),
        };
        Ok(Self {
            name,
            test,
            invert,
            missing_as_empty,
        })
    }
}

impl MetadataMatcher {
    fn from_json(value: &Value, at: &str) -> Result<Self, RbacError> {
        let map = object(value, at)?;
        only(map, &["filter", "path", "value", "invert"], at)?;
        let filter = string(required(map, "filter", at)?, at)?;
        let path = match field(map, "path") {
            Some(v) => each(v, &format!("{at}.path"), |segment, at| {
                let segment = object(segment, at)?;
                only(segment, &["key"], at)?;
                string(required(segment, "key", at)?, at)
            })?,
            None => Vec::new(),
        };
        let value = ValueMatcher::from_json(required(map, "value", at)?, &format!("{at}.value"))?;
        let invert = field(map, "invert").map_or(Ok(false), |v| boolean(v, at))?;
        Ok(Self {
            filter,
            path,
            value,
            invert,
        })
    }
}

impl ValueMatcher {
    fn from_json(value: &Value, at: &str) -> Result<Self, RbacError> {
        let (kind, v) = oneof(object(value, at)?, at)?;
        let at = &format!("{at}.{kind}");
        Ok(match kind {
            "string_match" => ValueMatcher::String(StringMatcher::from_json(v, at)?),
            "bool_match" => ValueMatcher::Bool(boolean(v, at)?),
            "present_match" => ValueMatcher::Present(boolean(v, at)?),
            "list_match" => {
                let map = object(v, at)?;
                only(map, &["one_of"], at)?;
                let inner = required(map, "one_of", at)?;
                ValueMatcher::ListOneOf(Box::new(ValueMatcher::from_json(
                    inner,
                    &format!("{at}.one_of"),
                )?))
            }
            "or_match" => {
                let map = object(v, at)?;
                only(map, &["value_matchers"], at)?;
                let matchers = required(map, "value_matchers", at)?;
                ValueMatcher::Or(each(
                    matchers,
                    &format!("{at}.value_matchers"),
                    ValueMatcher::from_json,
                )?)
            }
            other => return Err(unsupported(at, format!("value matcher `{other}`"))),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// URI templates (`envoy.path.match.uri_template`)
// ---------------------------------------------------------------------------------------------

/// A path template: literal text, `*` (one path segment) and a final `**` (the rest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathTemplate {
    tokens: Vec<TemplateToken>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum TemplateToken {
    Literal(String),
    /// One segment: one or more path characters other than `/`.
    Segment,
    /// Zero or more path characters, `/` included; only last.
    Rest,
}

impl PathTemplate {
    /// Reads the template forms istiod writes (`/a/*/b`, `/c/**`); named variables
    /// (`{x}`, `{x=*}`, `{x=**}`) are read as the operator they stand for.
    pub fn parse(template: &str) -> Result<Self, String> {
        let mut tokens = Vec::new();
        for (i, segment) in template.split('/').enumerate() {
            if i > 0 {
                push_literal(&mut tokens, "/");
            }
            match operator(segment)? {
                Some(op) => tokens.push(op),
                None if segment.contains(['*', '{', '}']) => {
                    return Err(format!(
                        "URI template segment {segment:?} (operators must fill a segment)"
                    ));
                }
                None => push_literal(&mut tokens, segment),
            }
        }
        let rest = tokens.iter().position(|t| *t == TemplateToken::Rest);
        if rest.is_some_and(|i| i + 1 != tokens.len()) {
            return Err(format!("URI template {template:?}: `**` must come last"));
        }
        Ok(Self { tokens })
    }

    /// Whether the whole path matches.
    pub fn matches(&self, path: &str) -> bool {
        matches_tokens(&self.tokens, path)
    }
}

fn operator(segment: &str) -> Result<Option<TemplateToken>, String> {
    let inner = segment
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .map(|var| var.split_once('=').map_or("*", |(_, op)| op));
    match inner.unwrap_or(segment) {
        "*" => Ok(Some(TemplateToken::Segment)),
        "**" => Ok(Some(TemplateToken::Rest)),
        _ if inner.is_some() => Err(format!("URI template variable {segment:?}")),
        _ => Ok(None),
    }
}

fn push_literal(tokens: &mut Vec<TemplateToken>, text: &str) {
    if let Some(TemplateToken::Literal(last)) = tokens.last_mut() {
        last.push_str(text);
    } else if !text.is_empty() {
        tokens.push(TemplateToken::Literal(text.to_string()));
    }
}

/// RFC 3986 `pchar` (unreserved, sub-delims, `:`, `@`, and `%` of an escape), as Envoy's
/// template operators accept.
fn path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~%!$&'()*+,;:@=".contains(c)
}

fn matches_tokens(tokens: &[TemplateToken], path: &str) -> bool {
    match tokens.split_first() {
        None => path.is_empty(),
        Some((TemplateToken::Literal(text), rest)) => path
            .strip_prefix(text.as_str())
            .is_some_and(|tail| matches_tokens(rest, tail)),
        Some((TemplateToken::Segment, rest)) => {
            let len = path.find(|c| !path_char(c)).unwrap_or(path.len());
            // A segment is at least one character; try every split (a literal may follow).
            (1..=len).any(|n| matches_tokens(rest, &path[n..]))
        }
        Some((TemplateToken::Rest, _)) => path.chars().all(|c| c == '/' || path_char(c)),
    }
}

// ---------------------------------------------------------------------------------------------
// Regular expressions: the RE2 subset istiod writes
// ---------------------------------------------------------------------------------------------

/// An RE2 expression restricted to what istiod generates (`.*`, `.+`, quoted literals,
/// groups with `|`, `?`): literals, `\`-escaped punctuation, `.`, `( )`, `(?: )`, `|`, `*`,
/// `+`, `?`. Matched against the whole value, as Envoy's `safe_regex` is. Any other
/// construct (classes, anchors, repetition counts, flags) is refused, not guessed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Regex {
    source: String,
    program: Vec<Inst>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    Char(char),
    Any,
    Concat(Vec<Node>),
    Alternate(Vec<Node>),
    Star(Box<Node>),
    Plus(Box<Node>),
    Quest(Box<Node>),
}

/// Instructions of a Thompson NFA, run as a Pike VM (linear in the input, no backtracking).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Inst {
    Char(char),
    /// Any character but `\n` (RE2's `.` without the `s` flag).
    Any,
    Split(usize, usize),
    Jump(usize),
    Match,
}

impl Regex {
    /// Compiles `pattern`, or says which construct is outside the subset.
    pub fn new(pattern: &str) -> Result<Self, String> {
        let chars: Vec<char> = pattern.chars().collect();
        let mut parser = RegexParser {
            chars: &chars,
            pos: 0,
        };
        let node = parser.alternation()?;
        if parser.pos != chars.len() {
            return Err(format!(
                "regex {pattern:?}: unexpected {:?} at {}",
                chars[parser.pos], parser.pos
            ));
        }
        let mut program = Vec::new();
        compile(&node, &mut program);
        program.push(Inst::Match);
        Ok(Self {
            source: pattern.to_string(),
            program,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the whole of `text` matches.
    pub fn is_full_match(&self, text: &str) -> bool {
        let mut current = Vec::new();
        self.add_thread(&mut current, 0);
        for c in text.chars() {
            let mut next = Vec::new();
            for &pc in &current {
                let advances = match self.program[pc] {
                    Inst::Char(want) => c == want,
                    Inst::Any => c != '\n',
                    _ => false,
                };
                if advances {
                    self.add_thread(&mut next, pc + 1);
                }
            }
            if next.is_empty() {
                return false;
            }
            current = next;
        }
        current.iter().any(|&pc| self.program[pc] == Inst::Match)
    }

    /// Adds `pc` and everything reachable from it without consuming input.
    fn add_thread(&self, threads: &mut Vec<usize>, pc: usize) {
        if threads.contains(&pc) {
            return;
        }
        threads.push(pc);
        match self.program[pc] {
            Inst::Split(a, b) => {
                self.add_thread(threads, a);
                self.add_thread(threads, b);
            }
            Inst::Jump(to) => self.add_thread(threads, to),
            _ => {}
        }
    }
}

fn compile(node: &Node, program: &mut Vec<Inst>) {
    match node {
        Node::Char(c) => program.push(Inst::Char(*c)),
        Node::Any => program.push(Inst::Any),
        Node::Concat(nodes) => nodes.iter().for_each(|n| compile(n, program)),
        Node::Alternate(branches) => compile_alternation(branches, program),
        Node::Star(inner) => {
            let split = program.len();
            program.push(Inst::Split(0, 0));
            compile(inner, program);
            program.push(Inst::Jump(split));
            program[split] = Inst::Split(split + 1, program.len());
        }
        Node::Plus(inner) => {
            let start = program.len();
            compile(inner, program);
            program.push(Inst::Split(start, program.len() + 1));
        }
        Node::Quest(inner) => {
            let split = program.len();
            program.push(Inst::Split(0, 0));
            compile(inner, program);
            program[split] = Inst::Split(split + 1, program.len());
        }
    }
}

fn compile_alternation(branches: &[Node], program: &mut Vec<Inst>) {
    let Some((first, others)) = branches.split_first() else {
        return;
    };
    if others.is_empty() {
        compile(first, program);
        return;
    }
    let split = program.len();
    program.push(Inst::Split(0, 0));
    compile(first, program);
    let jump = program.len();
    program.push(Inst::Jump(0));
    let second = program.len();
    compile_alternation(others, program);
    program[split] = Inst::Split(split + 1, second);
    program[jump] = Inst::Jump(program.len());
}

struct RegexParser<'a> {
    chars: &'a [char],
    pos: usize,
}

impl RegexParser<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn source(&self) -> String {
        self.chars.iter().collect()
    }

    fn alternation(&mut self) -> Result<Node, String> {
        let mut branches = vec![self.concatenation()?];
        while self.peek() == Some('|') {
            self.pos += 1;
            branches.push(self.concatenation()?);
        }
        Ok(if branches.len() == 1 {
            branches.remove(0)
        } else {
            Node::Alternate(branches)
        })
    }

    fn concatenation(&mut self) -> Result<Node, String> {
        let mut nodes = Vec::new();
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            let atom = self.atom()?;
            nodes.push(self.quantified(atom)?);
        }
        Ok(Node::Concat(nodes))
    }

    fn quantified(&mut self, atom: Node) -> Result<Node, String> {
        let node = match self.peek() {
            Some('*') => Node::Star(Box::new(atom)),
            Some('+') => Node::Plus(Box::new(atom)),
            Some('?') => Node::Quest(Box::new(atom)),
            _ => return Ok(atom),
        };
        self.pos += 1;
        if matches!(self.peek(), Some('*' | '+' | '?')) {
            return Err(format!(
                "regex {:?}: stacked or non-greedy quantifiers",
                self.source()
            ));
        }
        Ok(node)
    }

    fn atom(&mut self) -> Result<Node, String> {
        let Some(c) = self.peek() else {
            return Err(format!("regex {:?}: unexpected end", self.source()));
        };
        self.pos += 1;
        match c {
            '.' => Ok(Node::Any),
            '(' => self.group(),
            '\\' => self.escaped(),
            '[' | ']' | '{' | '}' | '^' | '$' | '*' | '+' | '?' => Err(format!(
                "regex {:?}: {c:?} at {} is outside the modelled RE2 subset",
                self.source(),
                self.pos - 1
            )),
            other => Ok(Node::Char(other)),
        }
    }

    fn group(&mut self) -> Result<Node, String> {
        if self.peek() == Some('?') {
            if self.chars.get(self.pos + 1) != Some(&':') {
                return Err(format!("regex {:?}: group flags", self.source()));
            }
            self.pos += 2;
        }
        let inner = self.alternation()?;
        if self.peek() != Some(')') {
            return Err(format!("regex {:?}: unclosed group", self.source()));
        }
        self.pos += 1;
        Ok(inner)
    }

    /// `\` before punctuation is that character (Go's `regexp.QuoteMeta` output); letter and
    /// digit escapes (`\d`, `\w`, `\b`, …) are classes or assertions and are refused.
    fn escaped(&mut self) -> Result<Node, String> {
        match self.peek() {
            Some(c) if c.is_ascii_punctuation() => {
                self.pos += 1;
                Ok(Node::Char(c))
            }
            Some(c) => Err(format!(
                "regex {:?}: escape \\{c} is outside the modelled RE2 subset",
                self.source()
            )),
            None => Err(format!("regex {:?}: trailing backslash", self.source())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn connection(peer: Option<&str>) -> Connection {
        Connection {
            peer_certificate: peer.map(str::to_string),
            filter_state: BTreeMap::new(),
            direct_remote_ip: ip("10.1.0.5"),
            remote_ip: ip("10.1.0.5"),
            destination_ip: ip("10.2.0.9"),
            destination_port: 9080,
            requested_server_name: None,
        }
    }

    fn get(path: &str) -> Request {
        Request {
            connection: connection(Some("spiffe://cluster.local/ns/shop/sa/web")),
            http: Some(HttpRequest::new("GET", "reviews.shop:9080", path)),
            dynamic_metadata: BTreeMap::new(),
        }
    }

    fn filter(rules: Value) -> Filter {
        Filter::from_json(
            &json!({"name": "envoy.filters.http.rbac", "typed_config": {"@type": HTTP_RBAC, "rules": rules}}),
            "f",
        )
        .unwrap()
    }

    fn policy(permission: Value, principal: Value) -> Value {
        json!({"permissions": [permission], "principals": [principal]})
    }

    fn decide(rules: Value, request: &Request) -> Decision {
        evaluate(&[filter(rules)], request).unwrap().decision
    }

    #[test]
    fn allow_needs_a_matching_policy_and_deny_refuses_one() {
        let get_only = policy(
            json!({"header": {"name": ":method", "string_match": {"exact": "GET"}}}),
            json!({"any": true}),
        );
        let r = get("/");
        assert_eq!(
            decide(json!({"policies": {"p": get_only.clone()}}), &r),
            Decision::Allow
        );
        assert_eq!(
            decide(json!({"action": "DENY", "policies": {"p": get_only}}), &r),
            Decision::Deny
        );
        // An ALLOW filter with no policies refuses everything; a LOG filter nothing.
        assert_eq!(decide(json!({}), &r), Decision::Deny);
        assert_eq!(
            decide(
                json!({"action": "LOG", "policies": {"p": policy(json!({"any": true}), json!({"any": true}))}}),
                &r
            ),
            Decision::Allow
        );
    }

    #[test]
    fn a_filter_without_rules_and_shadow_rules_enforce_nothing() {
        let deny_all = json!({"action": "DENY", "policies": {"p": policy(json!({"any": true}), json!({"any": true}))}});
        let f = Filter::from_json(
            &json!({"name": "x", "typed_config": {"@type": HTTP_RBAC, "shadow_rules": deny_all, "shadow_rules_stat_prefix": "istio_dry_run_deny_"}}),
            "f",
        )
        .unwrap();
        assert_eq!(evaluate(&[f], &get("/")).unwrap().decision, Decision::Allow);
    }

    #[test]
    fn policies_need_a_permission_and_a_principal() {
        let p = policy(
            json!({"any": true}),
            json!({"authenticated": {"principal_name": {"exact": "spiffe://cluster.local/ns/other/sa/x"}}}),
        );
        assert_eq!(
            decide(json!({"policies": {"p": p}}), &get("/")),
            Decision::Deny
        );
        let none = json!({"permissions": [{"any": true}], "principals": []});
        assert_eq!(
            decide(json!({"policies": {"p": none}}), &get("/")),
            Decision::Deny
        );
    }

    #[test]
    fn the_first_refusing_filter_decides_and_is_named() {
        let deny = filter(
            json!({"action": "DENY", "policies": {"d": policy(json!({"url_path": {"path": {"prefix": "/admin"}}}), json!({"any": true}))}}),
        );
        let allow =
            filter(json!({"policies": {"a": policy(json!({"any": true}), json!({"any": true}))}}));
        let chain = [deny, allow];
        assert_eq!(
            evaluate(&chain, &get("/admin/x?y=1")).unwrap().reason,
            Reason::DeniedBy {
                filter: 0,
                policy: "d".into()
            }
        );
        assert_eq!(
            evaluate(&chain, &get("/public")).unwrap().reason,
            Reason::Allowed {
                allowed_by: vec!["a".into()]
            }
        );
    }

    #[test]
    fn not_and_or_trees() {
        let p = policy(
            json!({"and_rules": {"rules": [
                {"or_rules": {"rules": [{"destination_port": 8080}, {"destination_port": 9080}]}},
                {"not_rule": {"url_path": {"path": {"exact": "/secret"}}}},
            ]}}),
            json!({"and_ids": {"ids": [
                {"not_id": {"direct_remote_ip": {"address_prefix": "10.9.0.0", "prefix_len": 16}}},
                {"or_ids": {"ids": [{"remote_ip": {"address_prefix": "10.1.0.0", "prefix_len": 16}}]}},
            ]}}),
        );
        let rules = json!({"policies": {"p": p}});
        assert_eq!(decide(rules.clone(), &get("/open")), Decision::Allow);
        assert_eq!(decide(rules.clone(), &get("/secret")), Decision::Deny);
        let mut elsewhere = get("/open");
        elsewhere.connection.direct_remote_ip = ip("10.9.1.1");
        assert_eq!(decide(rules.clone(), &elsewhere), Decision::Deny);
        let mut other_port = get("/open");
        other_port.connection.destination_port = 7070;
        assert_eq!(decide(rules, &other_port), Decision::Deny);
    }

    #[test]
    fn plaintext_is_never_authenticated() {
        let any_peer = policy(json!({"any": true}), json!({"authenticated": {}}));
        let rules = json!({"policies": {"p": any_peer}});
        assert_eq!(decide(rules.clone(), &get("/")), Decision::Allow);
        let mut plain = get("/");
        plain.connection.peer_certificate = None;
        assert_eq!(decide(rules, &plain), Decision::Deny);
    }

    #[test]
    fn filter_state_principals() {
        let p = policy(
            json!({"any": true}),
            json!({"filter_state": {"key": "io.istio.peer_principal", "string_match": {"exact": "spiffe://cluster.local/ns/shop/sa/web"}}}),
        );
        let rules = json!({"policies": {"p": p}});
        // The TLS peer alone does not satisfy a filter-state matcher.
        assert_eq!(decide(rules.clone(), &get("/")), Decision::Deny);
        let mut r = get("/");
        r.connection.filter_state.insert(
            "io.istio.peer_principal".into(),
            "spiffe://cluster.local/ns/shop/sa/web".into(),
        );
        assert_eq!(decide(rules, &r), Decision::Allow);
    }

    #[test]
    fn header_matchers_on_present_absent_and_inverted_headers() {
        let m = |v: Value| HeaderMatcher::from_json(&v, "h").unwrap();
        let r = HttpRequest::new("GET", "h", "/")
            .with_header("X-User", "alice")
            .with_header("x-user", "bob");
        let exact = m(json!({"name": "x-user", "string_match": {"exact": "alice,bob"}}));
        assert!(exact.matches(Some(&r)));
        let absent = m(json!({"name": "x-missing", "string_match": {"exact": ""}}));
        assert!(!absent.matches(Some(&r)));
        let inverted_absent =
            m(json!({"name": "x-missing", "exact_match": "a", "invert_match": true}));
        assert!(!inverted_absent.matches(Some(&r)));
        let as_empty = m(
            json!({"name": "x-missing", "string_match": {"exact": ""}, "treat_missing_header_as_empty": true}),
        );
        assert!(as_empty.matches(Some(&r)));
        assert!(m(json!({"name": "x-user", "present_match": true})).matches(Some(&r)));
        assert!(m(json!({"name": "x-missing", "present_match": false})).matches(Some(&r)));
        assert!(
            m(json!({"name": "x-missing", "present_match": true, "invert_match": true}))
                .matches(Some(&r))
        );
        let host = m(
            json!({"name": ":authority", "string_match": {"suffix": ".B.com", "ignore_case": true}}),
        );
        assert!(host.matches(Some(&HttpRequest::new("GET", "x.b.COM", "/"))));
        // A TCP connection has no headers.
        assert!(!exact.matches(None));
    }

    #[test]
    fn metadata_without_values_matches_nothing_unless_inverted() {
        let m = |v: Value| MetadataMatcher::from_json(&v, "m").unwrap();
        let claim = m(
            json!({"filter": "envoy.filters.http.jwt_authn", "path": [{"key": "payload"}, {"key": "groups"}],
            "value": {"or_match": {"value_matchers": [{"list_match": {"one_of": {"string_match": {"exact": "admin"}}}}, {"string_match": {"exact": "admin"}}]}}}),
        );
        let none = BTreeMap::new();
        assert!(!claim.matches(&none));
        let jwt = BTreeMap::from([(
            "envoy.filters.http.jwt_authn".to_string(),
            json!({"payload": {"groups": ["dev", "admin"]}}),
        )]);
        assert!(claim.matches(&jwt));
        let mut inverted = claim.clone();
        inverted.invert = true;
        assert!(inverted.matches(&none));
    }

    #[test]
    fn string_matchers() {
        let m = |v: Value| StringMatcher::from_json(&v, "s").unwrap();
        assert!(m(json!({"exact": "a"})).matches("a"));
        assert!(!m(json!({"exact": "a"})).matches("A"));
        assert!(m(json!({"exact": "a", "ignore_case": true})).matches("A"));
        assert!(m(json!({"prefix": "spiffe://pre"})).matches("spiffe://prefix"));
        assert!(m(json!({"suffix": "/sa/x"})).matches("spiffe://td/ns/a/sa/x"));
        assert!(m(json!({"contains": "/ns/"})).matches("spiffe://td/ns/a/sa/x"));
        assert!(m(json!({"safe_regex": {"regex": ".+"}})).matches("x"));
        assert!(!m(json!({"safe_regex": {"regex": ".+"}})).matches(""));
    }

    #[test]
    fn regex_subset_istiod_writes() {
        let re = |p: &str| Regex::new(p).unwrap();
        let ns = re(".*/ns/z/.*");
        assert!(ns.is_full_match("spiffe://cluster.local/ns/z/sa/x"));
        assert!(!ns.is_full_match("spiffe://cluster.local/ns/zz/sa/x"));
        let sa = re("spiffe://.+/ns/shop/(.+/|)sa/sa1(/.+)?");
        assert!(sa.is_full_match("spiffe://cluster.local/ns/shop/sa/sa1"));
        assert!(sa.is_full_match("spiffe://td/ns/shop/extra/sa/sa1/more"));
        assert!(!sa.is_full_match("spiffe://td/ns/shop/sa/sa10"));
        let quoted = re(r"spiffe://.*/ns/x/\*");
        assert!(quoted.is_full_match("spiffe://td/ns/x/*"));
        assert!(!quoted.is_full_match("spiffe://td/ns/x/y"));
        assert!(re("a(?:b|cd)+e?").is_full_match("abcdb"));
        assert!(re("").is_full_match(""));
        for bad in ["[a-z]", "^a", "a{2}", r"\d", "(a", "a**", "a+?"] {
            assert!(Regex::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn uri_templates() {
        let t = |p: &str| PathTemplate::parse(p).unwrap();
        assert!(t("/a/*/b").matches("/a/x/b"));
        assert!(!t("/a/*/b").matches("/a/x/y/b"));
        assert!(!t("/a/*/b").matches("/a//b"));
        assert!(t("/c/**").matches("/c/x/y"));
        assert!(t("/c/**").matches("/c/"));
        assert!(!t("/c/**").matches("/d/x"));
        assert!(t("/v/{id}/x").matches("/v/7/x"));
        assert!(PathTemplate::parse("/a/**/b").is_err());
        assert!(PathTemplate::parse("/a/x*").is_err());
    }

    #[test]
    fn unknown_kinds_fields_and_filters_are_errors() {
        let bad_permission =
            json!({"policies": {"p": policy(json!({"matcher": {}}), json!({"any": true}))}});
        let f = json!({"name": "x", "typed_config": {"@type": HTTP_RBAC, "rules": bad_permission}});
        assert!(matches!(
            Filter::from_json(&f, "f"),
            Err(RbacError::Unsupported { what, .. }) if what.contains("matcher")
        ));
        let bad_principal =
            json!({"policies": {"p": policy(json!({"any": true}), json!({"custom": {}}))}});
        let f = json!({"name": "x", "typed_config": {"@type": HTTP_RBAC, "rules": bad_principal}});
        assert!(Filter::from_json(&f, "f").is_err());
        let cel = json!({"policies": {"p": {"permissions": [{"any": true}], "principals": [{"any": true}], "condition": {}}}});
        let f = json!({"name": "x", "typed_config": {"@type": HTTP_RBAC, "rules": cel}});
        assert!(Filter::from_json(&f, "f").is_err());
        let ext_authz = json!({"name": "envoy.filters.http.ext_authz", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"}});
        assert!(Filter::from_json(&ext_authz, "f").is_err());
        let two = json!({"policies": {"p": policy(json!({"any": true, "destination_port": 1}), json!({"any": true}))}});
        let f = json!({"name": "x", "typed_config": {"@type": HTTP_RBAC, "rules": two}});
        assert!(matches!(
            Filter::from_json(&f, "f"),
            Err(RbacError::Invalid { .. })
        ));
    }

    #[test]
    fn network_filters_judge_the_connection_only() {
        let f = Filter::from_json(
            &json!({"name": "envoy.filters.network.rbac", "typed_config": {"@type": NETWORK_RBAC, "stat_prefix": "tcp.",
                "rules": {"action": "DENY", "policies": {"p": policy(json!({"header": {"name": ":method", "present_match": true}}), json!({"any": true}))}}}}),
            "f",
        )
        .unwrap();
        // The method header is not visible to a network filter, so this DENY never fires.
        assert_eq!(
            evaluate(std::slice::from_ref(&f), &get("/"))
                .unwrap()
                .decision,
            Decision::Allow
        );
        let http = filter(json!({}));
        let tcp = Request {
            http: None,
            ..get("/")
        };
        assert!(evaluate(&[http], &tcp).is_err());
        assert!(evaluate(&[f], &tcp).is_ok());
    }
}
