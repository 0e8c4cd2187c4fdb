//! AuthorizationPolicy classification: what ztunnel can enforce (L4) and what needs a
//! waypoint (L7), field by field, and what ztunnel does with a selector or namespace-wide
//! policy left behind.
//!
//! # meshmig's model of istiod's conversion
//!
//! [`ztunnel_view`] predicts the `istio.security.Authorization` istiod sends to ztunnel for a
//! policy (or that it sends none), as meshmig's own typed [`ZtunnelView`]; [`ZtunnelView::matches`]
//! and [`ztunnel_decide`] evaluate it as ztunnel does. The rules below were observed on
//! istiod's own conversion code at the served version (1.31) through `e2e/istio-oracle`, and
//! the property test `tests/ztunnel_oracle.rs` holds the model to them:
//!
//! - each rule is one group; its `to` list, its `from` list and each `when` condition are
//!   separate clauses (AND), the blocks of a list are the matches of its clause (OR);
//! - a match keeps only the L4 attributes (principals, namespaces, service accounts, source
//!   and destination IPs, destination ports and their not-forms; the `when` keys
//!   `source.ip`, `source.namespace`, `source.principal`, `destination.ip`,
//!   `destination.port`). A block or condition with no L4 attribute becomes an empty match,
//!   and ztunnel never matches an empty match;
//! - an ALLOW rule with any L7 attribute is dropped whole (its L4 parts too); a policy whose
//!   rules were all dropped is still sent, with no groups: it matches nothing, so an ALLOW of
//!   that kind denies everything at its workloads;
//! - `trustDomains`/`notTrustDomains` are removed from the match silently, like L7 in a DENY,
//!   but they do not make istiod drop an ALLOW rule, and the status stays `Accepted`;
//! - empty lists count as absent (`methods: []` is not L7);
//! - `rules: [{}]` is one group without clauses (matches everything); no rules, no groups;
//! - CUSTOM and AUDIT get no Authorization; dry-run policies depend on the version
//!   ([`ZtunnelSemantics`]);
//! - strings: `*` is presence, `*x` a suffix, `x*` a prefix (the leading `*` wins), anything
//!   else exact; a service account without `/` is in the policy's namespace; ports and IPs
//!   that do not parse are dropped (validation rejects them anyway); `080` is port 80.
//!
//! istiod's status message for a DENY with L7 says "more restrictive than requested": that is
//! wrong whenever a block or condition held only L7 attributes (the rule then never fires).
//! The truth is the conversion plus the matcher, which is what this module models.
//!
//! # Effects
//!
//! [`ZtunnelEffect`]s compare what ztunnel enforces (`Z`) with what the policy means when a
//! sidecar enforces it in full (`F`). At L4, `F` is three-valued: an HTTP attribute is
//! *unknown* (some HTTP request satisfies it, another does not). The effects are found by
//! evaluating both on representative requests built from the policy's own values (see
//! [`ZtunnelAnalysis`]), and each effect comes with a witness request.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use meshmig_api::istio::{AuthorizationPolicy, Condition, Operation, Rule, Source};
use serde::Serialize;

use crate::cluster::IstioVersion;

/// Policy action.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// ALLOW (also the default when `action` is absent).
    Allow,
    Deny,
    /// AUDIT (waypoint only).
    Audit,
    /// CUSTOM (external authorization; waypoint only).
    Custom,
    /// A value this version does not know; treated like CUSTOM (waypoint only).
    Unknown(String),
}

impl Action {
    /// Parses `spec.action`.
    pub fn parse(action: Option<&str>) -> Self {
        match action.unwrap_or("ALLOW") {
            "ALLOW" | "" => Action::Allow,
            "DENY" => Action::Deny,
            "AUDIT" => Action::Audit,
            "CUSTOM" => Action::Custom,
            other => Action::Unknown(other.to_string()),
        }
    }
}

/// What an attribute depends on, for deciding who can enforce it.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum AttrKind {
    /// Peer identity (principals, namespaces, service accounts; `source.principal`,
    /// `source.namespace`): L4, but changed by a waypoint in the path.
    Identity,
    /// Peer IP (`ipBlocks`, `source.ip`): L4, but changed by a waypoint in the path.
    SourceIp,
    /// Destination port or IP: L4, unaffected by a waypoint.
    Destination,
    /// Needs HTTP parsing (or is otherwise only available to waypoints).
    L7,
    /// `trustDomains`/`notTrustDomains` (Istio ≥ 1.30): istiod removes them from ztunnel's
    /// match without a word (status `Accepted`), and keeps the rest of the block and rule.
    TrustDomain,
    /// An L4 attribute the version's istiod does not convert for ztunnel
    /// (`serviceAccounts`/`notServiceAccounts` before 1.25): treated like L7.
    NotConverted,
    /// A field this version does not know: treated as L7.
    Unknown,
}

impl AttrKind {
    /// Whether ztunnel can enforce it.
    pub fn is_l4(self) -> bool {
        matches!(
            self,
            AttrKind::Identity | AttrKind::SourceIp | AttrKind::Destination
        )
    }

    /// Whether istiod treats it as an HTTP attribute for ztunnel: an ALLOW rule holding one is
    /// dropped, a DENY match loses it. Trust domains are removed too, but silently and without
    /// dropping the ALLOW rule, so they are not HTTP here.
    fn is_http(self) -> bool {
        matches!(
            self,
            AttrKind::L7 | AttrKind::NotConverted | AttrKind::Unknown
        )
    }
}

/// One attribute used by a rule.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    /// JSON path in the policy, e.g. `rules[0].to[0].operation.methods`.
    pub path: String,
    /// Classification.
    pub kind: AttrKind,
}

/// Classification of one rule.
#[derive(Serialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleClass {
    /// Every attribute the rule uses (empty lists are absent, as istiod reads them).
    pub attrs: Vec<Attr>,
    /// What ztunnel does with this rule, judged as a one-rule policy with the policy's action
    /// and annotations (so a rule of a dry-run policy is `DryRun`, of a CUSTOM one
    /// `NotEnforced`).
    pub ztunnel: Vec<ZtunnelEffect>,
}

impl RuleClass {
    /// Whether any attribute needs a waypoint.
    pub fn has_l7(&self) -> bool {
        self.attrs.iter().any(|a| !a.kind.is_l4())
    }

    /// Whether any L4 attribute remains once L7 ones are stripped.
    pub fn has_l4(&self) -> bool {
        self.attrs.iter().any(|a| a.kind.is_l4())
    }

    /// Whether the rule depends on who the caller is (identity or IP).
    pub fn source_dependent(&self) -> bool {
        self.attrs
            .iter()
            .any(|a| matches!(a.kind, AttrKind::Identity | AttrKind::SourceIp))
    }

    /// Whether the rule depends on anything beyond the caller's identity (namespaces,
    /// principals, service accounts): used to decide whether bypass protection alone
    /// reproduces it.
    pub fn identity_only(&self) -> bool {
        !self.attrs.is_empty() && self.attrs.iter().all(|a| a.kind == AttrKind::Identity)
    }
}

/// What ztunnel does with a policy (or rule) left as a selector policy, compared with a
/// sidecar enforcing it in full. A policy may have several effects.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum ZtunnelEffect {
    /// Enforced exactly: no request is treated differently.
    Exact,
    /// istiod dropped ALLOW rules that have an L7 attribute: requests only they admitted are
    /// denied (fail-closed). When no rule survives the workload denies everything
    /// ([`PolicyClass::ztunnel_allows_nothing`]).
    AllowRulesDropped,
    /// An ALLOW rule istiod kept admits less: a block of only trust domains became an empty
    /// match (fail-closed).
    AllowNarrowed,
    /// An ALLOW rule admits more: trust domains were removed from a block that keeps other
    /// attributes (fail-open).
    AllowBroadened,
    /// A DENY denies requests the sidecar did not deny: L7 attributes (or trust domains) were
    /// removed from a block that keeps L4 ones (fail-closed).
    DenyBroadened,
    /// A DENY that still fires denies less: a block of only L7 attributes (or trust domains)
    /// became an empty match beside other blocks (fail-open for what it covered).
    DenyNarrowed,
    /// The DENY never fires at ztunnel although the sidecar denies some requests: a clause
    /// (the `to` list, the `from` list or a `when` condition) held only L7 attributes (or
    /// trust domains) and became an empty match (fail-open).
    DenyIgnored,
    /// AUDIT/CUSTOM/unknown actions are not enforced by ztunnel at all (istiod sends no
    /// Authorization). Fail-open for CUSTOM and unknown actions; AUDIT only loses its logs.
    NotEnforced,
    /// A dry-run policy (`istio.io/dry-run: "true"`) that ztunnel does not enforce (Istio
    /// ≥ 1.25), like the sidecar, which only logs it: no request is treated differently.
    DryRun,
    /// A dry-run policy ztunnel enforces (Istio 1.24) while the sidecar only logged it.
    DryRunEnforced,
}

/// Whether some request is treated differently by ztunnel than by the sidecar, per direction.
#[derive(Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZtunnelRisk {
    /// ztunnel admits a request the sidecar (for some HTTP request) denied.
    pub fail_open: bool,
    /// ztunnel denies a request the sidecar (for some HTTP request) admitted.
    pub fail_closed: bool,
}

/// Classification of an AuthorizationPolicy.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct PolicyClass {
    pub action: Action,
    /// Per-rule classification.
    pub rules: Vec<RuleClass>,
    /// Whether the policy uses `targetRef(s)` (waypoint-enforced already).
    pub targeted: bool,
    /// Whether it has a selector (else it is namespace- or mesh-wide).
    pub has_selector: bool,
    /// Whether it carries `istio.io/dry-run` with a true value (as Go's `ParseBool` reads it).
    pub dry_run: bool,
    /// What ztunnel does with it as a selector policy (may hold several effects; sorted).
    pub ztunnel: Vec<ZtunnelEffect>,
    /// The directions in which ztunnel's enforcement differs from the sidecar's.
    pub ztunnel_risk: ZtunnelRisk,
    /// ztunnel gets an enforced ALLOW that matches no request: everything is denied.
    pub ztunnel_allows_nothing: bool,
}

impl PolicyClass {
    /// Needs a waypoint to be enforced as written.
    pub fn needs_waypoint(&self) -> bool {
        !matches!(self.action, Action::Allow | Action::Deny)
            || self.rules.iter().any(RuleClass::has_l7)
    }

    /// Paths of attributes that need a waypoint.
    pub fn l7_paths(&self) -> Vec<&str> {
        self.rules
            .iter()
            .flat_map(|r| r.attrs.iter())
            .filter(|a| !a.kind.is_l4())
            .map(|a| a.path.as_str())
            .collect()
    }

    /// Paths of attributes of a given kind.
    pub fn paths_of(&self, kind: AttrKind) -> Vec<&str> {
        self.rules
            .iter()
            .flat_map(|r| r.attrs.iter())
            .filter(|a| a.kind == kind)
            .map(|a| a.path.as_str())
            .collect()
    }

    /// Whether any rule depends on the caller's identity or IP.
    pub fn source_dependent(&self) -> bool {
        self.rules.iter().any(RuleClass::source_dependent)
    }

    /// Whether ztunnel enforces it exactly.
    pub fn ztunnel_exact(&self) -> bool {
        self.ztunnel == [ZtunnelEffect::Exact]
    }

    /// Whether ztunnel admits some request the sidecar's full enforcement denies (for some
    /// HTTP request): the unsafe direction.
    pub fn ztunnel_fail_open(&self) -> bool {
        self.ztunnel_risk.fail_open
    }

    /// Whether ztunnel denies some request the sidecar's full enforcement admits (for some
    /// HTTP request): the safe direction (over-deny).
    pub fn ztunnel_fail_closed(&self) -> bool {
        self.ztunnel_risk.fail_closed
    }

    /// Whether the policy has the effect.
    pub fn has_effect(&self, effect: ZtunnelEffect) -> bool {
        self.ztunnel.contains(&effect)
    }
}

// =============================================================================================
// Version-keyed semantics
// =============================================================================================

/// The Istio version meshmig's model is verified against (`e2e/istio`'s pin).
pub const SERVED_VERSION: IstioVersion = version(1, 31);
/// istiod converts `serviceAccounts`/`notServiceAccounts` for ztunnel from this version.
const SERVICE_ACCOUNTS_SINCE: IstioVersion = version(1, 25);
/// istiod stops sending dry-run policies to ztunnel (which enforced them) from this version.
const DRY_RUN_SKIPPED_SINCE: IstioVersion = version(1, 25);
/// `AMBIENT_ENABLE_DRY_RUN_AUTHORIZATION_POLICY` sends dry-run policies marked `dry_run`, and
/// ztunnel only logs them, from this version.
const DRY_RUN_FLAG_SINCE: IstioVersion = version(1, 29);

const fn version(major: u32, minor: u32) -> IstioVersion {
    IstioVersion {
        major,
        minor,
        patch: 0,
    }
}

/// The istiod settings the conversion depends on.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct ZtunnelSemantics {
    /// istiod's version; `None` (unknown) means [`SERVED_VERSION`].
    pub version: Option<IstioVersion>,
    /// `AMBIENT_ENABLE_DRY_RUN_AUTHORIZATION_POLICY` (Istio's default: false).
    pub dry_run_flag: bool,
    /// MeshConfig `trustDomain`. istiod does not rewrite principals with it for ztunnel, and
    /// ztunnel applies no aliases; the analysis uses it for readable witnesses.
    pub trust_domain: String,
    /// MeshConfig `rootNamespace`: its selector-less policies are mesh-wide (scope GLOBAL).
    pub root_namespace: String,
}

impl Default for ZtunnelSemantics {
    fn default() -> Self {
        Self {
            version: None,
            dry_run_flag: false,
            trust_domain: "cluster.local".into(),
            root_namespace: "istio-system".into(),
        }
    }
}

/// What istiod does with a dry-run policy for ztunnel.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DryRunHandling {
    /// Sent as if it were not dry-run, and enforced (1.24).
    Enforced,
    /// Not sent (1.25–1.28; and later without the flag).
    NotSent,
    /// Sent with `dry_run: true`; ztunnel only logs it (≥ 1.29 with the flag).
    SentDryRun,
}

impl ZtunnelSemantics {
    /// The semantics of a given version (defaults otherwise).
    pub fn for_version(version: Option<IstioVersion>) -> Self {
        Self {
            version,
            ..Self::default()
        }
    }

    /// The version the model applies.
    pub fn effective_version(&self) -> IstioVersion {
        self.version.unwrap_or(SERVED_VERSION)
    }

    /// Whether istiod converts `serviceAccounts` for ztunnel.
    pub fn converts_service_accounts(&self) -> bool {
        self.effective_version() >= SERVICE_ACCOUNTS_SINCE
    }

    /// What istiod does with dry-run policies.
    pub fn dry_run(&self) -> DryRunHandling {
        let v = self.effective_version();
        if v < DRY_RUN_SKIPPED_SINCE {
            DryRunHandling::Enforced
        } else if v >= DRY_RUN_FLAG_SINCE && self.dry_run_flag {
            DryRunHandling::SentDryRun
        } else {
            DryRunHandling::NotSent
        }
    }
}

/// `istio.io/dry-run`, read as Go's `strconv.ParseBool` (what istiod uses): `1`, `t`, `T`,
/// `true`, `TRUE`, `True` are true; anything else is not (validation rejects non-booleans).
pub fn is_dry_run(policy: &AuthorizationPolicy) -> bool {
    let value = policy
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(meshmig_api::names::istio::DRY_RUN));
    matches!(
        value.map(String::as_str),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True")
    )
}

// =============================================================================================
// Attribute classification
// =============================================================================================

/// `when` keys ztunnel can evaluate, with what they depend on.
fn when_key_kind(key: &str) -> AttrKind {
    match key {
        "source.principal" | "source.namespace" => AttrKind::Identity,
        "source.ip" => AttrKind::SourceIp,
        "destination.ip" | "destination.port" => AttrKind::Destination,
        _ => AttrKind::L7,
    }
}

/// A present field: istiod ignores an empty list.
fn has(v: &Option<Vec<String>>) -> bool {
    v.as_ref().is_some_and(|v| !v.is_empty())
}

/// The fields of a source and their kinds (serviceAccounts depend on the version).
fn source_fields<'a>(
    s: &'a Source,
    sem: &ZtunnelSemantics,
) -> Vec<(&'static str, &'a Option<Vec<String>>, AttrKind)> {
    use AttrKind::*;
    let sa = if sem.converts_service_accounts() {
        Identity
    } else {
        NotConverted
    };
    vec![
        ("principals", &s.principals, Identity),
        ("notPrincipals", &s.not_principals, Identity),
        ("namespaces", &s.namespaces, Identity),
        ("notNamespaces", &s.not_namespaces, Identity),
        ("serviceAccounts", &s.service_accounts, sa),
        ("notServiceAccounts", &s.not_service_accounts, sa),
        ("ipBlocks", &s.ip_blocks, SourceIp),
        ("notIpBlocks", &s.not_ip_blocks, SourceIp),
        ("requestPrincipals", &s.request_principals, L7),
        ("notRequestPrincipals", &s.not_request_principals, L7),
        ("remoteIpBlocks", &s.remote_ip_blocks, L7),
        ("notRemoteIpBlocks", &s.not_remote_ip_blocks, L7),
    ]
}

fn operation_fields(o: &Operation) -> [(&'static str, &Option<Vec<String>>, AttrKind); 8] {
    use AttrKind::*;
    [
        ("ports", &o.ports, Destination),
        ("notPorts", &o.not_ports, Destination),
        ("hosts", &o.hosts, L7),
        ("notHosts", &o.not_hosts, L7),
        ("methods", &o.methods, L7),
        ("notMethods", &o.not_methods, L7),
        ("paths", &o.paths, L7),
        ("notPaths", &o.not_paths, L7),
    ]
}

/// Kind of a source field this crate's API keeps in `extra`.
fn source_extra_kind(key: &str) -> AttrKind {
    if key == "trustDomains" || key == "notTrustDomains" {
        AttrKind::TrustDomain
    } else {
        AttrKind::Unknown
    }
}

/// Whether an `extra` value is present (a non-empty list, or any other non-null value).
fn extra_present(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Array(a) => !a.is_empty(),
        serde_json::Value::Null => false,
        _ => true,
    }
}

fn classify_source(s: &Source, p: &str, sem: &ZtunnelSemantics, attrs: &mut Vec<Attr>) {
    for (name, values, kind) in source_fields(s, sem) {
        if has(values) {
            attrs.push(Attr {
                path: format!("{p}.{name}"),
                kind,
            });
        }
    }
    for (key, _) in s.extra.iter().filter(|(_, v)| extra_present(v)) {
        attrs.push(Attr {
            path: format!("{p}.{key}"),
            kind: source_extra_kind(key),
        });
    }
}

fn classify_operation(o: &Operation, p: &str, attrs: &mut Vec<Attr>) {
    for (name, values, kind) in operation_fields(o) {
        if has(values) {
            attrs.push(Attr {
                path: format!("{p}.{name}"),
                kind,
            });
        }
    }
    push_unknown(attrs, p, o.extra.keys());
}

fn push_unknown<'a>(attrs: &mut Vec<Attr>, p: &str, keys: impl Iterator<Item = &'a String>) {
    for key in keys {
        attrs.push(Attr {
            path: format!("{p}.{key}"),
            kind: AttrKind::Unknown,
        });
    }
}

fn classify_condition(c: &Condition, p: &str, attrs: &mut Vec<Attr>) {
    attrs.push(Attr {
        path: format!("{p}[key={}]", c.key),
        kind: when_key_kind(&c.key),
    });
    push_unknown(attrs, p, c.extra.keys());
}

/// The attributes of one rule; `i` is its index in `rules`.
fn rule_attrs(rule: &Rule, i: usize, sem: &ZtunnelSemantics) -> Vec<Attr> {
    let mut attrs = Vec::new();
    for (j, from) in rule.from.iter().flatten().enumerate() {
        let p = format!("rules[{i}].from[{j}]");
        if let Some(s) = &from.source {
            classify_source(s, &format!("{p}.source"), sem, &mut attrs);
        }
        push_unknown(&mut attrs, &p, from.extra.keys());
    }
    for (j, to) in rule.to.iter().flatten().enumerate() {
        let p = format!("rules[{i}].to[{j}]");
        if let Some(o) = &to.operation {
            classify_operation(o, &format!("{p}.operation"), &mut attrs);
        }
        push_unknown(&mut attrs, &p, to.extra.keys());
    }
    for (j, c) in rule.when.iter().flatten().enumerate() {
        classify_condition(c, &format!("rules[{i}].when[{j}]"), &mut attrs);
    }
    push_unknown(&mut attrs, &format!("rules[{i}]"), rule.extra.keys());
    attrs
}

/// Classifies one rule's attributes at the served version (`i` is its index in `rules`);
/// [`classify_with`] also fills in its ztunnel effects.
pub fn classify_rule(rule: &Rule, i: usize) -> RuleClass {
    RuleClass {
        attrs: rule_attrs(rule, i, &ZtunnelSemantics::default()),
        ztunnel: Vec::new(),
    }
}

// =============================================================================================
// The view: meshmig's prediction of istiod's Authorization
// =============================================================================================

/// A string as istiod writes it for ztunnel.
#[derive(Serialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum StringMatch {
    /// The whole value.
    Exact(String),
    /// `x*`.
    Prefix(String),
    /// `*x` (a leading `*` wins over a trailing one: `*/ns/x/sa/*` is a suffix with a `*`).
    Suffix(String),
    /// `*`: any non-empty value.
    Presence,
}

impl StringMatch {
    /// istiod's reading of a policy string.
    pub fn parse(v: &str) -> Self {
        if v == "*" {
            StringMatch::Presence
        } else if let Some(s) = v.strip_prefix('*') {
            StringMatch::Suffix(s.to_string())
        } else if let Some(p) = v.strip_suffix('*') {
            StringMatch::Prefix(p.to_string())
        } else {
            StringMatch::Exact(v.to_string())
        }
    }

    /// ztunnel's comparison: case-sensitive; presence means non-empty.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            StringMatch::Exact(e) => value == e,
            StringMatch::Prefix(p) => value.starts_with(p.as_str()),
            StringMatch::Suffix(s) => value.ends_with(s.as_str()),
            StringMatch::Presence => !value.is_empty(),
        }
    }
}

/// A `namespace/serviceAccount` pair; ztunnel compares both and ignores the trust domain.
#[derive(Serialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServiceAccountRef {
    /// Namespace (the policy's when the value has no `/`).
    pub namespace: String,
    /// Service account (everything after the first `/`).
    pub name: String,
}

impl ServiceAccountRef {
    fn parse(v: &str, policy_namespace: &str) -> Self {
        let (namespace, name) = v.split_once('/').unwrap_or((policy_namespace, v));
        Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

/// An IP network (host bits are kept as written and ignored when matching, as ztunnel does).
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    /// The address as written.
    pub address: IpAddr,
    /// Prefix length (32/128 for a bare address).
    pub prefix_len: u8,
}

impl IpNet {
    /// `a.b.c.d`, `a.b.c.d/n`, IPv6 likewise; `None` when istiod would drop it.
    pub fn parse(v: &str) -> Option<Self> {
        let (address, prefix_len) = match v.split_once('/') {
            Some((a, len)) if len.bytes().all(|b| b.is_ascii_digit()) => {
                (a.parse::<IpAddr>().ok()?, len.parse::<u8>().ok()?)
            }
            Some(_) => return None,
            None => {
                let a = v.parse::<IpAddr>().ok()?;
                (a, max_prefix(a))
            }
        };
        (prefix_len <= max_prefix(address)).then_some(Self {
            address,
            prefix_len,
        })
    }

    /// Whether the network holds `ip`; an IPv4 network never holds an IPv6 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                let (net, ip) = (bits(self.address), bits(ip));
                let shift = u32::from(max_prefix(self.address) - self.prefix_len);
                net.checked_shr(shift).unwrap_or(0) == ip.checked_shr(shift).unwrap_or(0)
            }
            _ => false,
        }
    }

    /// The first address of the network.
    fn first(&self) -> IpAddr {
        let shift = u32::from(max_prefix(self.address) - self.prefix_len);
        let low = bits(self.address)
            .checked_shr(shift)
            .and_then(|n| n.checked_shl(shift))
            .unwrap_or(0);
        from_bits(self.address, low)
    }

    /// The address after the last one, if the family has one.
    fn after_last(&self) -> Option<IpAddr> {
        let shift = u32::from(max_prefix(self.address) - self.prefix_len);
        let size = 1u128.checked_shl(shift)?;
        let next = bits(self.first()).checked_add(size)?;
        let max = if self.address.is_ipv4() {
            u128::from(u32::MAX)
        } else {
            u128::MAX
        };
        (next <= max).then(|| from_bits(self.address, next))
    }
}

fn max_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

/// The address as a number, right-aligned (IPv4 in the low 32 bits).
fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_bits(family: IpAddr, n: u128) -> IpAddr {
    match family {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(u32::try_from(n).unwrap_or(u32::MAX))),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// A port as istiod parses it (decimal digits only; leading zeros allowed).
fn parse_port(v: &str) -> Option<u16> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// One `istio.security.Match`: the fields are AND-ed, the values of a field OR-ed, and a
/// not-field must have no hit. A match with no field never matches.
#[derive(Serialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ZtunnelMatch {
    /// Source namespaces (a plaintext caller's namespace is "").
    pub namespaces: Vec<StringMatch>,
    /// Negated source namespaces.
    pub not_namespaces: Vec<StringMatch>,
    /// Source principals, compared with `<td>/ns/<ns>/sa/<sa>` (no identity: no hit).
    pub principals: Vec<StringMatch>,
    /// Negated principals.
    pub not_principals: Vec<StringMatch>,
    /// Source service accounts.
    pub service_accounts: Vec<ServiceAccountRef>,
    /// Negated service accounts.
    pub not_service_accounts: Vec<ServiceAccountRef>,
    pub source_ips: Vec<IpNet>,
    /// Negated source IPs.
    pub not_source_ips: Vec<IpNet>,
    pub destination_ips: Vec<IpNet>,
    /// Negated destination IPs.
    pub not_destination_ips: Vec<IpNet>,
    pub destination_ports: Vec<u16>,
    /// Negated destination ports.
    pub not_destination_ports: Vec<u16>,
}

/// A positive list needs a hit unless empty; a negative list must have none.
fn field_holds<T>(pos: &[T], neg: &[T], hit: impl Fn(&T) -> bool) -> bool {
    (pos.is_empty() || pos.iter().any(&hit)) && !neg.iter().any(&hit)
}

impl ZtunnelMatch {
    /// Whether it has no field (ztunnel never matches such a match).
    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty()
            && self.not_namespaces.is_empty()
            && self.principals.is_empty()
            && self.not_principals.is_empty()
            && self.service_accounts.is_empty()
            && self.not_service_accounts.is_empty()
            && self.source_ips.is_empty()
            && self.not_source_ips.is_empty()
            && self.destination_ips.is_empty()
            && self.not_destination_ips.is_empty()
            && self.destination_ports.is_empty()
            && self.not_destination_ports.is_empty()
    }

    /// ztunnel's verdict: an empty match never matches.
    pub fn matches(&self, r: &L4Request) -> bool {
        !self.is_empty() && self.holds(r)
    }

    /// Whether every field holds (an empty match holds everywhere).
    fn holds(&self, r: &L4Request) -> bool {
        self.identity_holds(r.source.as_ref())
            && self.source_ip_holds(r.source_ip)
            && self.destination_ip_holds(r.destination_ip)
            && self.port_holds(r.destination_port)
    }

    fn identity_holds(&self, id: Option<&PeerIdentity>) -> bool {
        let ns = id.map_or("", |i| i.namespace.as_str());
        let principal_holds = || {
            // Formatted only when a principal is compared.
            let principal = id.map(PeerIdentity::principal);
            field_holds(&self.principals, &self.not_principals, |m| {
                principal.as_deref().is_some_and(|p| m.matches(p))
            })
        };
        field_holds(&self.namespaces, &self.not_namespaces, |m| m.matches(ns))
            && field_holds(&self.service_accounts, &self.not_service_accounts, |sa| {
                id.is_some_and(|i| i.namespace == sa.namespace && i.service_account == sa.name)
            })
            && (self.principals.is_empty() && self.not_principals.is_empty() || principal_holds())
    }

    fn source_ip_holds(&self, ip: IpAddr) -> bool {
        field_holds(&self.source_ips, &self.not_source_ips, |n| n.contains(ip))
    }

    fn destination_ip_holds(&self, ip: IpAddr) -> bool {
        field_holds(&self.destination_ips, &self.not_destination_ips, |n| {
            n.contains(ip)
        })
    }

    fn port_holds(&self, port: u16) -> bool {
        field_holds(&self.destination_ports, &self.not_destination_ports, |p| {
            *p == port
        })
    }
}

/// One `istio.security.Rules` (a clause): its matches are OR-ed.
#[derive(Serialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ZtunnelClause {
    /// Matches (one per block of a `to`/`from` list, one for a `when` condition).
    pub matches: Vec<ZtunnelMatch>,
}

/// One `istio.security.Group`: its clauses are AND-ed; no clause matches everything.
#[derive(Serialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ZtunnelGroup {
    /// Index of the policy rule it comes from.
    pub rule: usize,
    /// Clauses, in istiod's order: `to`, `from`, then each `when` condition.
    pub clauses: Vec<ZtunnelClause>,
}

impl ZtunnelGroup {
    fn matches(&self, r: &L4Request) -> bool {
        self.clauses
            .iter()
            .all(|c| c.matches.is_empty() || c.matches.iter().any(|m| m.matches(r)))
    }
}

/// `istio.security.Scope`.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ZtunnelScope {
    /// Root namespace without selector: every workload of the mesh.
    Global,
    /// No selector: the policy's namespace.
    Namespace,
    /// A selector (even an empty one): the workloads istiod lists.
    WorkloadSelector,
}

/// The action ztunnel knows.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ZtunnelAction {
    Allow,
    Deny,
}

/// meshmig's prediction of the `istio.security.Authorization` istiod sends.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct ZtunnelAuthorization {
    /// Policy name.
    pub name: String,
    /// Policy namespace.
    pub namespace: String,
    pub scope: ZtunnelScope,
    pub action: ZtunnelAction,
    /// Groups (OR-ed), one per rule istiod kept; none matches nothing.
    pub groups: Vec<ZtunnelGroup>,
    /// Sent as dry-run: ztunnel (≥ 1.29) only logs it.
    pub dry_run: bool,
}

impl ZtunnelAuthorization {
    /// Whether its groups match (action and dry-run play no part).
    pub fn matches(&self, r: &L4Request) -> bool {
        self.groups.iter().any(|g| g.matches(r))
    }
}

/// Why istiod sends no Authorization.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum NotSentReason {
    /// `targetRef(s)`: waypoints enforce it.
    TargetRefs,
    /// AUDIT, CUSTOM or an unknown action.
    Action(Action),
    /// Dry-run, at a version or with settings that skip it.
    DryRun,
}

/// What ztunnel gets for a policy.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ZtunnelView {
    /// istiod sends this Authorization.
    Sent(ZtunnelAuthorization),
    /// istiod sends nothing.
    NotSent(NotSentReason),
}

impl ZtunnelView {
    /// The Authorization, if sent.
    pub fn authorization(&self) -> Option<&ZtunnelAuthorization> {
        match self {
            ZtunnelView::Sent(a) => Some(a),
            ZtunnelView::NotSent(_) => None,
        }
    }

    /// The Authorization ztunnel enforces (sent and not dry-run).
    pub fn enforced(&self) -> Option<&ZtunnelAuthorization> {
        self.authorization().filter(|a| !a.dry_run)
    }

    /// Whether the Authorization's groups match (false when nothing is sent).
    pub fn matches(&self, r: &L4Request) -> bool {
        self.authorization().is_some_and(|a| a.matches(r))
    }
}

/// A peer's SPIFFE identity.
#[derive(Serialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerIdentity {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

impl PeerIdentity {
    /// An identity.
    pub fn new(trust_domain: &str, namespace: &str, service_account: &str) -> Self {
        Self {
            trust_domain: trust_domain.to_string(),
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
        }
    }

    /// What principal matches compare with: `<td>/ns/<ns>/sa/<sa>`.
    pub fn principal(&self) -> String {
        format!(
            "{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

/// A connection as ztunnel's authorization sees it.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct L4Request {
    /// The peer's identity; `None` for plaintext.
    pub source: Option<PeerIdentity>,
    /// Source IP (canonical: no IPv4-mapped IPv6).
    pub source_ip: IpAddr,
    pub destination_ip: IpAddr,
    pub destination_port: u16,
}

/// ztunnel's verdict.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ZtunnelDecision {
    /// Admitted.
    Allow,
    /// Denied.
    Deny,
}

/// ztunnel's decision over the views of the policies that apply to a workload: a matching
/// enforced DENY denies; else no enforced ALLOW admits; else a matching ALLOW admits; else
/// deny. Dry-run and unsent policies play no part (an ALLOW with no groups does: it is sent,
/// so the workload has an ALLOW policy that matches nothing).
pub fn ztunnel_decide<'a>(
    views: impl IntoIterator<Item = &'a ZtunnelView>,
    r: &L4Request,
) -> ZtunnelDecision {
    let enforced: Vec<&ZtunnelAuthorization> = views
        .into_iter()
        .filter_map(ZtunnelView::enforced)
        .collect();
    let (deny, allow): (Vec<_>, Vec<_>) = enforced
        .into_iter()
        .partition(|a| a.action == ZtunnelAction::Deny);
    if deny.iter().any(|a| a.matches(r)) {
        return ZtunnelDecision::Deny;
    }
    if allow.is_empty() || allow.iter().any(|a| a.matches(r)) {
        ZtunnelDecision::Allow
    } else {
        ZtunnelDecision::Deny
    }
}

// =============================================================================================
// The compiled policy: what both the view and the sidecar's full semantics are built from
// =============================================================================================

/// A `from`/`to` block or a `when` condition.
#[derive(Clone, Debug, Default)]
struct Item {
    /// The L4 attributes, as istiod converts them.
    l4: ZtunnelMatch,
    /// `trustDomains` (full semantics only: istiod removes them).
    trust_domains: Vec<StringMatch>,
    not_trust_domains: Vec<StringMatch>,
    /// Holds an attribute L4 cannot evaluate (HTTP, unknown, not converted): the sidecar's
    /// verdict depends on the HTTP request, and istiod drops an ALLOW rule holding it.
    conditional: bool,
}

impl Item {
    fn trust_domain_holds(&self, id: Option<&PeerIdentity>) -> bool {
        let td = |m: &StringMatch| id.is_some_and(|i| m.matches(&i.trust_domain));
        field_holds(&self.trust_domains, &self.not_trust_domains, td)
    }

    /// Whether the item is reproduced exactly by its ztunnel match.
    fn faithful(&self) -> bool {
        !self.conditional
            && self.trust_domains.is_empty()
            && self.not_trust_domains.is_empty()
            && !self.l4.is_empty()
    }
}

/// One rule: its clauses (AND) of items (OR).
#[derive(Clone, Debug)]
struct RuleModel {
    index: usize,
    clauses: Vec<Vec<Item>>,
    /// istiod drops it from an ALLOW (it holds an HTTP attribute).
    http: bool,
}

/// A policy, compiled.
#[derive(Clone, Debug)]
struct PolicyModel {
    name: String,
    namespace: String,
    scope: ZtunnelScope,
    action: Action,
    dry_run: bool,
    targeted: bool,
    rules: Vec<RuleModel>,
}

fn string_matches(values: &Option<Vec<String>>) -> Vec<StringMatch> {
    values
        .iter()
        .flatten()
        .map(|v| StringMatch::parse(v))
        .collect()
}

fn nets(values: &Option<Vec<String>>) -> Vec<IpNet> {
    values
        .iter()
        .flatten()
        .filter_map(|v| IpNet::parse(v))
        .collect()
}

fn ports(values: &Option<Vec<String>>) -> Vec<u16> {
    values
        .iter()
        .flatten()
        .filter_map(|v| parse_port(v))
        .collect()
}

fn extra_strings(extra: &BTreeMap<String, serde_json::Value>, key: &str) -> Vec<StringMatch> {
    extra
        .get(key)
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_str)
        .map(StringMatch::parse)
        .collect()
}

fn source_item(s: &Source, ns: &str, sem: &ZtunnelSemantics) -> Item {
    let sas = |v: &Option<Vec<String>>| -> Vec<ServiceAccountRef> {
        if !sem.converts_service_accounts() {
            return Vec::new();
        }
        v.iter()
            .flatten()
            .map(|x| ServiceAccountRef::parse(x, ns))
            .collect()
    };
    let l4 = ZtunnelMatch {
        principals: string_matches(&s.principals),
        not_principals: string_matches(&s.not_principals),
        namespaces: string_matches(&s.namespaces),
        not_namespaces: string_matches(&s.not_namespaces),
        service_accounts: sas(&s.service_accounts),
        not_service_accounts: sas(&s.not_service_accounts),
        source_ips: nets(&s.ip_blocks),
        not_source_ips: nets(&s.not_ip_blocks),
        ..ZtunnelMatch::default()
    };
    let conditional = source_fields(s, sem)
        .iter()
        .any(|(_, v, kind)| kind.is_http() && has(v))
        || s.extra
            .iter()
            .any(|(k, v)| extra_present(v) && source_extra_kind(k) == AttrKind::Unknown);
    Item {
        l4,
        trust_domains: extra_strings(&s.extra, "trustDomains"),
        not_trust_domains: extra_strings(&s.extra, "notTrustDomains"),
        conditional,
    }
}

fn operation_item(o: &Operation) -> Item {
    let l4 = ZtunnelMatch {
        destination_ports: ports(&o.ports),
        not_destination_ports: ports(&o.not_ports),
        ..ZtunnelMatch::default()
    };
    let conditional = operation_fields(o)
        .iter()
        .any(|(_, v, kind)| kind.is_http() && has(v))
        || !o.extra.is_empty();
    Item {
        l4,
        conditional,
        ..Item::default()
    }
}

/// A `when` condition: an L4 key gives one match with its values and notValues; any other
/// key an empty match (istiod lists it among the HTTP attributes).
fn condition_item(c: &Condition) -> Item {
    let (v, nv) = (&c.values, &c.not_values);
    let mut l4 = ZtunnelMatch::default();
    match c.key.as_str() {
        "source.ip" => (l4.source_ips, l4.not_source_ips) = (nets(v), nets(nv)),
        "destination.ip" => (l4.destination_ips, l4.not_destination_ips) = (nets(v), nets(nv)),
        "destination.port" => {
            (l4.destination_ports, l4.not_destination_ports) = (ports(v), ports(nv))
        }
        "source.namespace" => {
            (l4.namespaces, l4.not_namespaces) = (string_matches(v), string_matches(nv))
        }
        "source.principal" => {
            (l4.principals, l4.not_principals) = (string_matches(v), string_matches(nv))
        }
        _ => {
            return Item {
                conditional: true,
                ..Item::default()
            };
        }
    }
    Item {
        l4,
        conditional: !c.extra.is_empty(),
        ..Item::default()
    }
}

/// An item for fields of the API this crate does not know (treated as L7).
fn unknown_item() -> Item {
    Item {
        conditional: true,
        ..Item::default()
    }
}

fn rule_model(rule: &Rule, index: usize, ns: &str, sem: &ZtunnelSemantics) -> RuleModel {
    let mut clauses: Vec<Vec<Item>> = Vec::new();
    let to: Vec<Item> = rule
        .to
        .iter()
        .flatten()
        .map(|t| match (&t.operation, t.extra.is_empty()) {
            (Some(o), true) => operation_item(o),
            _ => unknown_item(),
        })
        .collect();
    let from: Vec<Item> = rule
        .from
        .iter()
        .flatten()
        .map(|f| match (&f.source, f.extra.is_empty()) {
            (Some(s), true) => source_item(s, ns, sem),
            _ => unknown_item(),
        })
        .collect();
    // An empty list adds no clause (`from: []` is no condition at all).
    clauses.extend([to, from].into_iter().filter(|c| !c.is_empty()));
    clauses.extend(rule.when.iter().flatten().map(|c| vec![condition_item(c)]));
    if !rule.extra.is_empty() {
        clauses.push(vec![unknown_item()]);
    }
    let http = clauses.iter().flatten().any(|i| i.conditional);
    RuleModel {
        index,
        clauses,
        http,
    }
}

fn scope_of(policy: &AuthorizationPolicy, sem: &ZtunnelSemantics) -> ZtunnelScope {
    // istiod keys the scope on the selector's presence: `selector: {}` is WORKLOAD_SELECTOR.
    if policy.spec.selector.is_some() {
        ZtunnelScope::WorkloadSelector
    } else if policy.metadata.namespace.as_deref() == Some(sem.root_namespace.as_str()) {
        ZtunnelScope::Global
    } else {
        ZtunnelScope::Namespace
    }
}

fn policy_model(policy: &AuthorizationPolicy, sem: &ZtunnelSemantics) -> PolicyModel {
    let spec = &policy.spec;
    let ns = policy.metadata.namespace.clone().unwrap_or_default();
    let rules = spec
        .rules
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| rule_model(r, i, &ns, sem))
        .collect();
    PolicyModel {
        name: policy.metadata.name.clone().unwrap_or_default(),
        namespace: ns,
        scope: scope_of(policy, sem),
        action: Action::parse(spec.action.as_deref()),
        dry_run: is_dry_run(policy),
        targeted: spec.target_ref.is_some()
            || spec.target_refs.as_ref().is_some_and(|t| !t.is_empty()),
        rules,
    }
}

impl PolicyModel {
    /// Whether ztunnel gets every block and condition exactly as written.
    fn faithful(&self) -> bool {
        self.rules
            .iter()
            .flat_map(|r| r.clauses.iter().flatten())
            .all(Item::faithful)
    }

    /// The same policy reduced to one rule (rule-level effects are those of this policy).
    fn only_rule(&self, i: usize) -> PolicyModel {
        PolicyModel {
            rules: self.rules.get(i).cloned().into_iter().collect(),
            ..self.clone()
        }
    }

    /// The Authorization for ztunnel; `as_selector` ignores targetRefs (what ztunnel would
    /// do with the policy if it were a selector policy).
    fn view(&self, sem: &ZtunnelSemantics, as_selector: bool) -> ZtunnelView {
        if self.targeted && !as_selector {
            return ZtunnelView::NotSent(NotSentReason::TargetRefs);
        }
        let action = match self.action {
            Action::Allow => ZtunnelAction::Allow,
            Action::Deny => ZtunnelAction::Deny,
            ref other => return ZtunnelView::NotSent(NotSentReason::Action(other.clone())),
        };
        let dry_run = match (self.dry_run, sem.dry_run()) {
            (false, _) | (true, DryRunHandling::Enforced) => false,
            (true, DryRunHandling::SentDryRun) => true,
            (true, DryRunHandling::NotSent) => {
                return ZtunnelView::NotSent(NotSentReason::DryRun);
            }
        };
        ZtunnelView::Sent(ZtunnelAuthorization {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            scope: self.scope,
            action,
            groups: self.groups(action),
            dry_run,
        })
    }

    fn groups(&self, action: ZtunnelAction) -> Vec<ZtunnelGroup> {
        self.rules
            .iter()
            .filter(|r| action == ZtunnelAction::Deny || !r.http)
            .map(|r| ZtunnelGroup {
                rule: r.index,
                clauses: r
                    .clauses
                    .iter()
                    .map(|c| ZtunnelClause {
                        matches: c.iter().map(|i| i.l4.clone()).collect(),
                    })
                    .collect(),
            })
            .collect()
    }
}

/// Whether the policy, as a sidecar or waypoint enforces it (in full), matches some request
/// from a peer of `namespace` (any service account; the request's HTTP attributes, IPs and
/// ports are free). A DENY for which this is false never concerns that namespace's callers.
pub fn may_match_peer_in(
    policy: &AuthorizationPolicy,
    sem: &ZtunnelSemantics,
    namespace: &str,
) -> bool {
    let m = policy_model(policy, sem);
    let (items, rules) = Search::layout(&m);
    let search = Search::with_identities(items, rules, |items| {
        peers_in(identity_candidates(items, &m, sem), namespace)
    });
    search.full_matches_something()
}

/// Whether the policy, enforced in full, matches every request from every peer of
/// `namespace` (whatever its service account, IPs, ports and HTTP attributes): for a DENY,
/// that namespace's callers are refused outright. False when the search is incomplete.
pub fn matches_every_peer_in(
    policy: &AuthorizationPolicy,
    sem: &ZtunnelSemantics,
    namespace: &str,
) -> bool {
    let m = policy_model(policy, sem);
    let (items, rules) = Search::layout(&m);
    let search = Search::with_identities(items, rules, |items| {
        peers_in(identity_candidates(items, &m, sem), namespace)
    });
    let mut all = true;
    let complete = search.each(|_, v| {
        all = v.f == Tv::True;
        all
    });
    all && complete
}

/// The principals a sidecar or waypoint matches for a policy's `principal`: istiod reads
/// `cluster.local` and every trust-domain alias as the mesh's own trust domain and expands
/// the principal to the trust domain and each alias (checked with Istio's Envoy RBAC
/// builder). ztunnel compares the principal exactly as written.
pub fn sidecar_principals(principal: &str, trust_domain: &str, aliases: &[String]) -> Vec<String> {
    let Some((td, rest)) = principal.split_once('/') else {
        return vec![principal.to_string()];
    };
    let local = td == trust_domain || td == "cluster.local" || aliases.iter().any(|a| a == td);
    if !local || (aliases.is_empty() && td == trust_domain) {
        return vec![principal.to_string()];
    }
    std::iter::once(trust_domain)
        .chain(aliases.iter().map(String::as_str))
        .map(|d| format!("{d}/{rest}"))
        .collect()
}

/// The principals of a policy (positive and negative, and `source.principal` conditions)
/// that a sidecar reads through the trust domain or its aliases but ztunnel, comparing
/// exactly, does not match as the sidecar did.
pub fn alias_dependent_principals(
    policy: &AuthorizationPolicy,
    trust_domain: &str,
    aliases: &[String],
) -> Vec<String> {
    let mut out = Vec::new();
    for rule in policy.spec.rules.iter().flatten() {
        let sources = rule.from.iter().flatten().filter_map(|f| f.source.as_ref());
        let listed = sources.flat_map(|s| {
            s.principals
                .iter()
                .flatten()
                .chain(s.not_principals.iter().flatten())
        });
        let conditions = rule
            .when
            .iter()
            .flatten()
            .filter(|c| c.key == "source.principal")
            .flat_map(|c| {
                c.values
                    .iter()
                    .flatten()
                    .chain(c.not_values.iter().flatten())
            });
        for p in listed.chain(conditions) {
            if sidecar_principals(p, trust_domain, aliases) != [p.clone()] && !out.contains(p) {
                out.push(p.clone());
            }
        }
    }
    out
}

/// meshmig's prediction of what istiod sends to ztunnel for `policy`.
pub fn ztunnel_view(policy: &AuthorizationPolicy, sem: &ZtunnelSemantics) -> ZtunnelView {
    policy_model(policy, sem).view(sem, false)
}

// =============================================================================================
// Effects: ztunnel's enforcement against the sidecar's, on representative requests
// =============================================================================================

/// A request on which an effect shows.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct ZtunnelWitness {
    pub effect: ZtunnelEffect,
    /// A request where ztunnel and the sidecar differ that way (for `DenyNarrowed`, also one
    /// where ztunnel's DENY still fires).
    pub request: L4Request,
}

/// The effects of a policy (or of one rule as a one-rule policy) at ztunnel.
///
/// `Z(r)`: ztunnel's Authorization matches `r`. `F(r)`: the policy as written matches `r`
/// when enforced in full (L4 attributes and trust domains evaluated; HTTP attributes unknown,
/// so `F` is `False`, `Unknown` or `True`). For ALLOW/DENY policies ztunnel enforces:
///
/// - DENY: `¬Z ∧ F ≠ False` is fail-open: `DenyIgnored` when `Z` matches nothing at all, else
///   `DenyNarrowed`; `Z ∧ F ≠ True` is fail-closed: `DenyBroadened`;
/// - ALLOW: `¬Z ∧ F ≠ False` is fail-closed, caused by every rule with `Fᵢ ≠ False` there:
///   `AllowRulesDropped` for a rule istiod dropped, else `AllowNarrowed`; `Z ∧ F ≠ True` is
///   fail-open: `AllowBroadened`;
/// - none of these: `Exact`.
///
/// Dry-run policies are `DryRun` (neither enforces them) or `DryRunEnforced` (1.24: ztunnel
/// does); CUSTOM/AUDIT/unknown actions `NotEnforced`.
///
/// The requests tried are representative: per dimension, values that realise every
/// combination of the policy's own values (each port and one other; each network's first
/// address and the one after its last, and `0.0.0.0`/`::`; identities built from the trust
/// domains, namespaces and service accounts that the principals, namespaces, service accounts
/// and trust domains name, with prefixes and suffixes completed by a character no value uses,
/// plus plaintext). Every combination of the policy's predicates that some request satisfies
/// is satisfied by one of them, so the effects are exact. Beyond [`MAX_COMBINATIONS`]
/// requests or [`MAX_IDENTITIES`] identities the search stops and both risks are assumed.
#[derive(Serialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ZtunnelAnalysis {
    /// Effects, sorted (`[Exact]` when none).
    pub effects: Vec<ZtunnelEffect>,
    /// One witness per effect that shows on a request (none for `Exact`, `NotEnforced`,
    /// `DryRun`).
    pub witnesses: Vec<ZtunnelWitness>,
    /// Directions of the differences.
    pub risk: ZtunnelRisk,
    /// An enforced ALLOW that matches no request.
    pub allows_nothing: bool,
    /// The search hit [`MAX_COMBINATIONS`] or [`MAX_IDENTITIES`] (risks assumed).
    pub truncated: bool,
}

/// Bound on the representative requests tried for one policy.
pub const MAX_COMBINATIONS: usize = 1 << 20;

/// The effects of `policy` at ztunnel, as a selector policy.
pub fn ztunnel_analysis(policy: &AuthorizationPolicy, sem: &ZtunnelSemantics) -> ZtunnelAnalysis {
    analyze(&policy_model(policy, sem), sem)
}

/// The effects of rule `i` of `policy`, as a one-rule policy with the same action and
/// annotations.
pub fn ztunnel_rule_analysis(
    policy: &AuthorizationPolicy,
    i: usize,
    sem: &ZtunnelSemantics,
) -> ZtunnelAnalysis {
    analyze(&policy_model(policy, sem).only_rule(i), sem)
}

fn analyze(m: &PolicyModel, sem: &ZtunnelSemantics) -> ZtunnelAnalysis {
    let view = m.view(sem, true);
    if m.dry_run {
        return dry_run_analysis(m, &view, sem);
    }
    match (&m.action, view.enforced()) {
        (Action::Allow | Action::Deny, Some(auth)) if m.faithful() => ZtunnelAnalysis {
            // Every block and condition is one ztunnel match with the same attributes, and no
            // rule is dropped: nothing to search.
            allows_nothing: m.action == Action::Allow && auth.groups.is_empty(),
            ..ZtunnelAnalysis::only(ZtunnelEffect::Exact)
        },
        (Action::Allow | Action::Deny, Some(_)) => Search::new(m, sem).run(&m.action),
        (Action::Audit, _) => ZtunnelAnalysis::only(ZtunnelEffect::NotEnforced),
        _ => {
            // CUSTOM (or unknown): the sidecar may deny whatever its rules match; ztunnel
            // enforces nothing. Fail-open when the rules can match at all.
            let mut a = ZtunnelAnalysis::only(ZtunnelEffect::NotEnforced);
            a.risk.fail_open = Search::new(m, sem).full_matches_something();
            a
        }
    }
}

fn dry_run_analysis(
    m: &PolicyModel,
    view: &ZtunnelView,
    sem: &ZtunnelSemantics,
) -> ZtunnelAnalysis {
    if view.enforced().is_none() {
        return ZtunnelAnalysis::only(ZtunnelEffect::DryRun);
    }
    // 1.24: ztunnel enforces what the sidecar only logs. A DENY denies what it matches; an
    // ALLOW alone denies what it does not match, and beside other ALLOW policies also admits
    // what it matches.
    let mut a = ZtunnelAnalysis::only(ZtunnelEffect::DryRunEnforced);
    let (z_any, z_all) = Search::new(m, sem).ztunnel_coverage();
    a.risk = match m.action {
        Action::Deny => ZtunnelRisk {
            fail_open: false,
            fail_closed: z_any,
        },
        _ => ZtunnelRisk {
            fail_open: z_any,
            fail_closed: !z_all,
        },
    };
    a
}

impl ZtunnelAnalysis {
    fn only(effect: ZtunnelEffect) -> Self {
        Self {
            effects: vec![effect],
            ..Self::default()
        }
    }
}

/// Per-dimension representatives, deduplicated by what the items say about them.
struct Dimension<T> {
    reps: Vec<T>,
    /// `z[c][k]`: item `k`'s ztunnel match holds for representative class `c` in this
    /// dimension; `f[c][k]` the same for the full semantics.
    z: Vec<Vec<bool>>,
    f: Vec<Vec<bool>>,
}

impl<T: Clone> Dimension<T> {
    fn new(candidates: Vec<T>, items: &[&Item], holds: impl Fn(&Item, &T) -> (bool, bool)) -> Self {
        let mut d = Dimension {
            reps: Vec::new(),
            z: Vec::new(),
            f: Vec::new(),
        };
        for c in candidates {
            let (z, f): (Vec<bool>, Vec<bool>) = items.iter().map(|i| holds(i, &c)).unzip();
            if !d.z.iter().zip(&d.f).any(|(z2, f2)| *z2 == z && *f2 == f) {
                d.reps.push(c);
                d.z.push(z);
                d.f.push(f);
            }
        }
        d
    }
}

/// Three-valued truth of the full semantics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tv {
    False,
    Unknown,
    True,
}

impl Tv {
    fn and(self, o: Tv) -> Tv {
        match (self, o) {
            (Tv::False, _) | (_, Tv::False) => Tv::False,
            (Tv::True, Tv::True) => Tv::True,
            _ => Tv::Unknown,
        }
    }

    fn or(self, o: Tv) -> Tv {
        match (self, o) {
            (Tv::True, _) | (_, Tv::True) => Tv::True,
            (Tv::False, Tv::False) => Tv::False,
            _ => Tv::Unknown,
        }
    }
}

/// The search over representative requests.
struct Search<'a> {
    items: Vec<&'a Item>,
    /// Per rule: clauses of item indices, and whether istiod dropped it.
    rules: Vec<(Vec<Vec<usize>>, bool)>,
    identities: Dimension<Option<PeerIdentity>>,
    src: Dimension<IpAddr>,
    dst: Dimension<IpAddr>,
    ports: Dimension<u16>,
    /// The identity candidates were cut at [`MAX_IDENTITIES`]: the search is incomplete.
    capped: bool,
}

/// Bound on the identity candidates built for one policy.
pub const MAX_IDENTITIES: usize = 1 << 14;

/// Verdicts of one representative request.
struct Verdict {
    z: bool,
    f: Tv,
    /// Per rule: its full-semantics verdict.
    f_rules: Vec<Tv>,
}

impl<'a> Search<'a> {
    fn new(m: &'a PolicyModel, sem: &ZtunnelSemantics) -> Self {
        let (items, rules) = Self::layout(m);
        let candidates = identity_candidates(&items, m, sem);
        Self::with_identities(items, rules, |_| candidates)
    }

    /// Every block and condition of the policy, and per rule its clauses of item indices
    /// and whether istiod drops it (an ALLOW rule with an HTTP attribute).
    #[allow(clippy::type_complexity)]
    fn layout(m: &'a PolicyModel) -> (Vec<&'a Item>, Vec<(Vec<Vec<usize>>, bool)>) {
        let deny = m.action != Action::Allow;
        let mut items = Vec::new();
        let mut rules = Vec::new();
        for r in &m.rules {
            let clauses = r
                .clauses
                .iter()
                .map(|c| {
                    c.iter()
                        .map(|i| {
                            items.push(i);
                            items.len() - 1
                        })
                        .collect()
                })
                .collect();
            rules.push((clauses, !deny && r.http));
        }
        (items, rules)
    }

    /// The search, over the identity candidates `candidates` builds from the items.
    fn with_identities(
        items: Vec<&'a Item>,
        rules: Vec<(Vec<Vec<usize>>, bool)>,
        candidates: impl FnOnce(&[&Item]) -> Vec<Option<PeerIdentity>>,
    ) -> Self {
        let mut candidates = candidates(&items);
        let capped = candidates.len() > MAX_IDENTITIES;
        candidates.truncate(MAX_IDENTITIES);
        let identities = Dimension::new(candidates, &items, |i, id| {
            let id = id.as_ref();
            (
                i.l4.identity_holds(id),
                i.l4.identity_holds(id) && i.trust_domain_holds(id),
            )
        });
        let src = ip_dimension(
            &items,
            |i| [&i.l4.source_ips, &i.l4.not_source_ips],
            |i, ip| i.l4.source_ip_holds(ip),
        );
        let dst = ip_dimension(
            &items,
            |i| [&i.l4.destination_ips, &i.l4.not_destination_ips],
            |i, ip| i.l4.destination_ip_holds(ip),
        );
        let ports = Dimension::new(port_candidates(&items), &items, |i, p| {
            (i.l4.port_holds(*p), i.l4.port_holds(*p))
        });
        Search {
            items,
            rules,
            identities,
            src,
            dst,
            ports,
            capped,
        }
    }

    /// Calls `visit` with every representative request's class indices and verdicts, until
    /// it returns false or the bound is reached; returns whether every one was visited.
    fn each(&self, mut visit: impl FnMut([usize; 4], &Verdict) -> bool) -> bool {
        if self.capped {
            return false;
        }
        let mut seen = 0usize;
        for a in 0..self.identities.reps.len() {
            for b in 0..self.src.reps.len() {
                for c in 0..self.dst.reps.len() {
                    for d in 0..self.ports.reps.len() {
                        seen += 1;
                        if seen > MAX_COMBINATIONS {
                            return false;
                        }
                        if !visit([a, b, c, d], &self.verdict([a, b, c, d])) {
                            return true;
                        }
                    }
                }
            }
        }
        true
    }

    fn verdict(&self, [a, b, c, d]: [usize; 4]) -> Verdict {
        let item = |k: usize| -> (bool, Tv) {
            let z = self.identities.z[a][k]
                && self.src.z[b][k]
                && self.dst.z[c][k]
                && self.ports.z[d][k];
            let f = self.identities.f[a][k]
                && self.src.f[b][k]
                && self.dst.f[c][k]
                && self.ports.f[d][k];
            let i = self.items[k];
            let tv = match (f, i.conditional) {
                (false, _) => Tv::False,
                (true, true) => Tv::Unknown,
                (true, false) => Tv::True,
            };
            (z && !i.l4.is_empty(), tv)
        };
        let mut z = false;
        let mut f = Tv::False;
        let mut f_rules = Vec::with_capacity(self.rules.len());
        for (clauses, dropped) in &self.rules {
            let (mut rz, mut rf) = (!dropped, Tv::True);
            for clause in clauses {
                let (cz, cf) = clause.iter().fold((false, Tv::False), |(cz, cf), k| {
                    let (iz, itv) = item(*k);
                    (cz || iz, cf.or(itv))
                });
                rz &= cz;
                rf = rf.and(cf);
            }
            z |= rz;
            f = f.or(rf);
            f_rules.push(rf);
        }
        Verdict { z, f, f_rules }
    }

    fn request(&self, [a, b, c, d]: [usize; 4]) -> L4Request {
        L4Request {
            source: self.identities.reps[a].clone(),
            source_ip: self.src.reps[b],
            destination_ip: self.dst.reps[c],
            destination_port: self.ports.reps[d],
        }
    }

    /// Whether the policy as written matches some request (`F ≠ False`).
    fn full_matches_something(&self) -> bool {
        let mut found = false;
        let complete = self.each(|_, v| {
            found = v.f != Tv::False;
            !found
        });
        found || !complete
    }

    /// Whether ztunnel's Authorization matches some / every request.
    fn ztunnel_coverage(&self) -> (bool, bool) {
        let (mut any, mut all) = (false, true);
        let complete = self.each(|_, v| {
            any |= v.z;
            all &= v.z;
            true
        });
        (any || !complete, all && complete)
    }

    fn run(&self, action: &Action) -> ZtunnelAnalysis {
        let deny = *action == Action::Deny;
        let mut found = Found::default();
        let complete = self.each(|at, v| {
            found.record(deny, at, v, &self.rules);
            true
        });
        found.into_analysis(self, deny, complete)
    }
}

/// What the search found, with the first witness of each effect.
#[derive(Default)]
struct Found {
    witnesses: Vec<(ZtunnelEffect, [usize; 4])>,
    /// A request where ztunnel's Authorization matches.
    z_match: Option<[usize; 4]>,
    /// A request where ztunnel's Authorization does not match.
    z_miss: bool,
    /// A fail-open DENY request.
    deny_open: Option<[usize; 4]>,
}

impl Found {
    fn note(&mut self, effect: ZtunnelEffect, at: [usize; 4]) {
        if !self.witnesses.iter().any(|(e, _)| *e == effect) {
            self.witnesses.push((effect, at));
        }
    }

    fn record(
        &mut self,
        deny: bool,
        at: [usize; 4],
        v: &Verdict,
        rules: &[(Vec<Vec<usize>>, bool)],
    ) {
        if v.z {
            self.z_match.get_or_insert(at);
        } else {
            self.z_miss = true;
        }
        if deny {
            if !v.z && v.f != Tv::False {
                self.deny_open.get_or_insert(at);
            }
            if v.z && v.f != Tv::True {
                self.note(ZtunnelEffect::DenyBroadened, at);
            }
            return;
        }
        if !v.z && v.f != Tv::False {
            for ((_, dropped), f) in rules.iter().zip(&v.f_rules) {
                if *f != Tv::False {
                    let e = if *dropped {
                        ZtunnelEffect::AllowRulesDropped
                    } else {
                        ZtunnelEffect::AllowNarrowed
                    };
                    self.note(e, at);
                }
            }
        }
        if v.z && v.f != Tv::True {
            self.note(ZtunnelEffect::AllowBroadened, at);
        }
    }

    fn into_analysis(mut self, s: &Search<'_>, deny: bool, complete: bool) -> ZtunnelAnalysis {
        let mut extra = Vec::new();
        if let Some(open) = self.deny_open {
            match self.z_match {
                Some(fires) => {
                    self.note(ZtunnelEffect::DenyNarrowed, open);
                    extra.push((ZtunnelEffect::DenyNarrowed, fires));
                }
                None => self.note(ZtunnelEffect::DenyIgnored, open),
            }
        }
        let mut effects: Vec<ZtunnelEffect> = self.witnesses.iter().map(|(e, _)| *e).collect();
        effects.sort();
        let risk = ZtunnelRisk {
            fail_open: !complete
                || effects.iter().any(|e| {
                    matches!(
                        e,
                        ZtunnelEffect::AllowBroadened
                            | ZtunnelEffect::DenyNarrowed
                            | ZtunnelEffect::DenyIgnored
                    )
                }),
            fail_closed: !complete
                || effects.iter().any(|e| {
                    matches!(
                        e,
                        ZtunnelEffect::AllowRulesDropped
                            | ZtunnelEffect::AllowNarrowed
                            | ZtunnelEffect::DenyBroadened
                    )
                }),
        };
        let witnesses = self
            .witnesses
            .iter()
            .chain(&extra)
            .map(|(effect, at)| ZtunnelWitness {
                effect: *effect,
                request: s.request(*at),
            })
            .collect();
        let allows_nothing = !deny && complete && self.z_match.is_none();
        if effects.is_empty() {
            effects.push(ZtunnelEffect::Exact);
        }
        ZtunnelAnalysis {
            effects,
            witnesses,
            risk,
            allows_nothing,
            truncated: !complete,
        }
    }
}

fn port_candidates(items: &[&Item]) -> Vec<u16> {
    let mut ports: Vec<u16> = items
        .iter()
        .flat_map(|i| {
            i.l4.destination_ports
                .iter()
                .chain(&i.l4.not_destination_ports)
        })
        .copied()
        .collect();
    ports.sort_unstable();
    ports.dedup();
    // A port no value names (the lowest free one).
    if let Some(free) = (1..=u16::MAX).find(|p| ports.binary_search(p).is_err()) {
        ports.push(free);
    }
    ports
}

/// Addresses realising every region of the networks: each network's first address and the
/// one after its last (every gap between nested networks starts at one of them), and the
/// first address of each family.
fn ip_dimension<'i>(
    items: &[&'i Item],
    nets_of: impl Fn(&'i Item) -> [&'i Vec<IpNet>; 2],
    holds: impl Fn(&Item, IpAddr) -> bool,
) -> Dimension<IpAddr> {
    let mut candidates = vec![
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    ];
    for i in items {
        for n in nets_of(i).into_iter().flatten() {
            candidates.push(n.first());
            candidates.extend(n.after_last());
        }
    }
    Dimension::new(candidates, items, |i, ip| (holds(i, *ip), holds(i, *ip)))
}

/// Constraints on one component (trust domain, namespace or service account) of an identity.
#[derive(Default)]
struct Component {
    exact: Vec<String>,
    prefixes: Vec<String>,
    suffixes: Vec<String>,
}

impl Component {
    fn add(&mut self, m: &StringMatch) {
        match m {
            StringMatch::Exact(e) => self.exact.push(e.clone()),
            StringMatch::Prefix(p) if !p.is_empty() => self.prefixes.push(p.clone()),
            StringMatch::Suffix(s) if !s.is_empty() => self.suffixes.push(s.clone()),
            _ => {}
        }
    }

    /// Values realising every combination of the constraints: the exact values, and each
    /// prefix (or none) + `filler` + each suffix (or none). `filler` occurs in no value, so
    /// such a value starts with exactly the listed prefixes of its prefix and ends with exactly
    /// the listed suffixes of its suffix.
    fn candidates(&self, filler: &str) -> Vec<String> {
        let mut out = self.exact.clone();
        let none = String::new();
        for p in self.prefixes.iter().chain([&none]) {
            for s in self.suffixes.iter().chain([&none]) {
                out.push(format!("{p}{filler}{s}"));
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

/// The parts of a principal, `<td>/ns/<ns>/sa/<sa>`, as segments between `/`.
#[derive(Clone, Copy)]
enum Segment {
    Td,
    Ns,
    Sa,
    Literal,
}

const PRINCIPAL_SHAPE: [Segment; 5] = [
    Segment::Td,
    Segment::Literal,
    Segment::Ns,
    Segment::Literal,
    Segment::Sa,
];

#[derive(Default)]
struct Components {
    td: Component,
    ns: Component,
    sa: Component,
}

impl Components {
    fn get(&mut self, s: Segment) -> Option<&mut Component> {
        match s {
            Segment::Td => Some(&mut self.td),
            Segment::Ns => Some(&mut self.ns),
            Segment::Sa => Some(&mut self.sa),
            Segment::Literal => None,
        }
    }

    /// A principal match decomposed into component constraints (identities have no `/` in a
    /// component): an exact principal fixes all three; a prefix fixes the components it covers
    /// whole and is a prefix of the one it ends in; a suffix likewise from the end.
    fn add_principal(&mut self, m: &StringMatch) {
        match m {
            StringMatch::Exact(e) => {
                if let [td, "ns", ns, "sa", sa] = e.split('/').collect::<Vec<_>>()[..] {
                    self.td.exact.push(td.into());
                    self.ns.exact.push(ns.into());
                    self.sa.exact.push(sa.into());
                }
            }
            StringMatch::Prefix(p) => {
                self.add_partial(p.split('/').collect(), PRINCIPAL_SHAPE, true)
            }
            StringMatch::Suffix(s) => {
                let mut shape = PRINCIPAL_SHAPE;
                shape.reverse();
                self.add_partial(s.rsplit('/').collect(), shape, false)
            }
            StringMatch::Presence => {}
        }
    }

    fn add_partial(&mut self, segs: Vec<&str>, shape: [Segment; 5], prefix: bool) {
        let last = segs.len().saturating_sub(1);
        for (k, (seg, part)) in segs.iter().zip(shape).enumerate() {
            let partial = if prefix {
                StringMatch::Prefix(seg.to_string())
            } else {
                StringMatch::Suffix(seg.to_string())
            };
            if let Some(c) = self.get(part) {
                c.add(&if k == last {
                    partial
                } else {
                    StringMatch::Exact(seg.to_string())
                });
            }
        }
    }
}

/// Every string an item compares identities with.
fn identity_strings<'i>(i: &'i Item) -> impl Iterator<Item = &'i str> {
    let l4 = &i.l4;
    let sm = |m: &'i StringMatch| match m {
        StringMatch::Exact(v) | StringMatch::Prefix(v) | StringMatch::Suffix(v) => v.as_str(),
        StringMatch::Presence => "",
    };
    let sa = l4
        .service_accounts
        .iter()
        .chain(&l4.not_service_accounts)
        .flat_map(|s| [s.namespace.as_str(), s.name.as_str()]);
    [
        &l4.principals,
        &l4.not_principals,
        &l4.namespaces,
        &l4.not_namespaces,
        &i.trust_domains,
        &i.not_trust_domains,
    ]
    .into_iter()
    .flatten()
    .map(sm)
    .chain(sa)
}

/// A character no value uses, to complete prefixes and suffixes.
fn filler(items: &[&Item]) -> String {
    let used = |c: char| {
        items
            .iter()
            .any(|i| identity_strings(i).any(|s| s.contains(c)))
    };
    ['~', '^', '`', '|', '!', '#', '%', '&', '=']
        .into_iter()
        .find(|c| !used(*c))
        .map_or_else(|| "\u{1}".to_string(), String::from)
}

/// The candidates moved into `namespace` (no plaintext peer): each trust domain and
/// service account the policy distinguishes, in that namespace.
fn peers_in(candidates: Vec<Option<PeerIdentity>>, namespace: &str) -> Vec<Option<PeerIdentity>> {
    let mut mine: Vec<Option<PeerIdentity>> = candidates
        .into_iter()
        .flatten()
        .map(|id| {
            Some(PeerIdentity::new(
                &id.trust_domain,
                namespace,
                &id.service_account,
            ))
        })
        .collect();
    mine.sort_by_key(|id| id.as_ref().map(PeerIdentity::principal));
    mine.dedup();
    mine
}

fn identity_candidates(
    items: &[&Item],
    m: &PolicyModel,
    sem: &ZtunnelSemantics,
) -> Vec<Option<PeerIdentity>> {
    let mut c = Components::default();
    c.td.exact.push(sem.trust_domain.clone());
    c.ns.exact.push(m.namespace.clone());
    for i in items {
        let l4 = &i.l4;
        for p in l4.principals.iter().chain(&l4.not_principals) {
            c.add_principal(p);
        }
        for n in l4.namespaces.iter().chain(&l4.not_namespaces) {
            c.ns.add(n);
        }
        for sa in l4.service_accounts.iter().chain(&l4.not_service_accounts) {
            c.ns.exact.push(sa.namespace.clone());
            c.sa.exact.push(sa.name.clone());
        }
        for t in i.trust_domains.iter().chain(&i.not_trust_domains) {
            c.td.add(t);
        }
    }
    let fill = filler(items);
    let (tds, nss, sas) = (
        c.td.candidates(&fill),
        c.ns.candidates(&fill),
        c.sa.candidates(&fill),
    );
    let mut out = vec![None];
    for td in &tds {
        for ns in &nss {
            for sa in &sas {
                out.push(Some(PeerIdentity::new(td, ns, sa)));
            }
        }
    }
    out
}

// =============================================================================================
// Classification
// =============================================================================================

/// Classifies a policy with the served version's semantics.
pub fn classify(policy: &AuthorizationPolicy) -> PolicyClass {
    classify_with(policy, &ZtunnelSemantics::default())
}

/// Classifies a policy for a given istiod (version, dry-run flag, root namespace).
pub fn classify_with(policy: &AuthorizationPolicy, sem: &ZtunnelSemantics) -> PolicyClass {
    let spec = &policy.spec;
    let model = policy_model(policy, sem);
    let rules: Vec<RuleClass> = spec
        .rules
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| RuleClass {
            attrs: rule_attrs(r, i, sem),
            ztunnel: analyze(&model.only_rule(i), sem).effects,
        })
        .collect();
    let analysis = analyze(&model, sem);
    PolicyClass {
        action: model.action.clone(),
        rules,
        targeted: model.targeted,
        has_selector: spec
            .selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref())
            .is_some_and(|m| !m.is_empty()),
        dry_run: model.dry_run,
        ztunnel: analysis.effects,
        ztunnel_risk: analysis.risk,
        ztunnel_allows_nothing: analysis.allows_nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ZtunnelEffect::*;

    fn policy(yaml: &str) -> AuthorizationPolicy {
        let mut p: AuthorizationPolicy = serde_saphyr::from_str(yaml).unwrap();
        if p.metadata.namespace.is_none() {
            p.metadata.namespace = Some("shop".into());
            p.metadata.name = Some("p".into());
        }
        p
    }

    fn kinds(c: &PolicyClass) -> Vec<AttrKind> {
        c.rules
            .iter()
            .flat_map(|r| r.attrs.iter().map(|a| a.kind))
            .collect()
    }

    fn at(v: &str) -> ZtunnelSemantics {
        ZtunnelSemantics::for_version(crate::cluster::parse_version(v))
    }

    fn req(id: Option<(&str, &str, &str)>, src: &str, port: u16) -> L4Request {
        L4Request {
            source: id.map(|(td, ns, sa)| PeerIdentity::new(td, ns, sa)),
            source_ip: src.parse().unwrap(),
            destination_ip: "10.2.0.9".parse().unwrap(),
            destination_port: port,
        }
    }

    fn from(ns: &str) -> L4Request {
        req(Some(("cluster.local", ns, "default")), "10.1.0.5", 8080)
    }

    fn sent(p: &AuthorizationPolicy) -> ZtunnelAuthorization {
        match ztunnel_view(p, &ZtunnelSemantics::default()) {
            ZtunnelView::Sent(a) => a,
            other => panic!("not sent: {other:?}"),
        }
    }

    #[test]
    fn every_source_field_is_classified() {
        let c = classify(&policy(
            r#"
spec:
  rules:
  - from:
    - source:
        principals: [a]
        notPrincipals: [b]
        namespaces: [c]
        notNamespaces: [d]
        ipBlocks: [1.2.3.4]
        notIpBlocks: [5.6.7.8]
    - source:
        serviceAccounts: [e]
        notServiceAccounts: [f]
"#,
        ));
        assert!(!c.needs_waypoint());
        assert_eq!(c.ztunnel, vec![Exact]);
        assert!(c.source_dependent());
        let c = classify(&policy(
            "spec: {rules: [{from: [{source: {requestPrincipals: ['*']}}]}]}",
        ));
        assert!(c.needs_waypoint());
        for f in [
            "notRequestPrincipals",
            "remoteIpBlocks",
            "notRemoteIpBlocks",
        ] {
            let c = classify(&policy(&format!(
                "spec: {{rules: [{{from: [{{source: {{{f}: [x]}}}}]}}]}}"
            )));
            assert!(c.needs_waypoint(), "{f}");
            assert_eq!(c.l7_paths(), vec![format!("rules[0].from[0].source.{f}")]);
        }
    }

    #[test]
    fn every_operation_field_is_classified() {
        for f in ["ports", "notPorts"] {
            let c = classify(&policy(&format!(
                "spec: {{rules: [{{to: [{{operation: {{{f}: ['80']}}}}]}}]}}"
            )));
            assert!(!c.needs_waypoint(), "{f}");
            assert!(!c.source_dependent(), "{f}");
        }
        for f in [
            "hosts",
            "notHosts",
            "methods",
            "notMethods",
            "paths",
            "notPaths",
        ] {
            let c = classify(&policy(&format!(
                "spec: {{rules: [{{to: [{{operation: {{{f}: [x]}}}}]}}]}}"
            )));
            assert!(c.needs_waypoint(), "{f}");
        }
    }

    #[test]
    fn empty_lists_are_absent() {
        // istiod ignores `methods: []`: the rule is L4 and is not dropped.
        let p = policy("spec: {rules: [{to: [{operation: {ports: ['80'], methods: []}}]}]}");
        let c = classify(&p);
        assert!(!c.needs_waypoint());
        assert_eq!(c.ztunnel, vec![Exact]);
        assert_eq!(sent(&p).groups.len(), 1);
    }

    #[test]
    fn when_keys() {
        for (key, l4) in [
            ("source.ip", true),
            ("source.namespace", true),
            ("source.principal", true),
            ("destination.ip", true),
            ("destination.port", true),
            ("request.headers[x-token]", false),
            ("request.auth.principal", false),
            ("request.auth.claims[groups]", false),
            ("request.auth.audiences", false),
            ("request.auth.presenter", false),
            ("source.serviceAccount", false),
            ("remote.ip", false),
            ("connection.sni", false),
            (
                "experimental.envoy.filters.network.mysql_proxy[db.table]",
                false,
            ),
        ] {
            let c = classify(&policy(&format!(
                "spec: {{rules: [{{when: [{{key: '{key}', values: [x]}}]}}]}}"
            )));
            assert_eq!(!c.needs_waypoint(), l4, "{key}");
        }
        let c = classify(&policy(
            "spec: {rules: [{when: [{key: 'request.headers[x]', notValues: [x]}]}]}",
        ));
        assert!(c.needs_waypoint());
    }

    #[test]
    fn actions() {
        let c = classify(&policy("spec: {action: AUDIT, rules: [{}]}"));
        assert!(c.needs_waypoint());
        // AUDIT decides nothing: ztunnel skipping it only loses the audit log.
        assert_eq!(c.ztunnel, vec![NotEnforced]);
        assert!(!c.ztunnel_fail_open() && !c.ztunnel_fail_closed());
        let c = classify(&policy(
            "spec: {action: CUSTOM, provider: {name: ext}, rules: [{}]}",
        ));
        assert!(c.needs_waypoint());
        assert_eq!(c.ztunnel, vec![NotEnforced]);
        assert!(c.ztunnel_fail_open() && !c.ztunnel_fail_closed());
        assert!(!classify(&policy("spec: {action: DENY, rules: [{}]}")).needs_waypoint());
        assert!(!classify(&policy("spec: {}")).needs_waypoint());
        assert_eq!(Action::parse(Some("FOO")), Action::Unknown("FOO".into()));
        assert!(classify(&policy("spec: {action: FOO}")).needs_waypoint());
        for a in ["AUDIT", "CUSTOM", "FOO"] {
            let p = policy(&format!("spec: {{action: {a}, rules: [{{}}]}}"));
            let view = ztunnel_view(&p, &ZtunnelSemantics::default());
            assert!(
                matches!(view, ZtunnelView::NotSent(NotSentReason::Action(_))),
                "{a}"
            );
        }
    }

    #[test]
    fn ztunnel_effects_on_selector_policies() {
        // ALLOW with L7: the whole rule is dropped; none left, so the workload denies all.
        let c = classify(&policy(
            "spec: {rules: [{from: [{source: {principals: [cluster.local/ns/a/sa/b]}}], to: [{operation: {methods: [GET]}}]}]}",
        ));
        assert_eq!(c.ztunnel, vec![AllowRulesDropped]);
        assert!(c.ztunnel_allows_nothing && c.ztunnel_fail_closed() && !c.ztunnel_fail_open());
        // Was DenyBroadened: the `to` clause is an empty match, so the rule never fires.
        let c = classify(&policy(
            "spec: {action: DENY, rules: [{from: [{source: {namespaces: [a]}}], to: [{operation: {paths: [/admin]}}]}]}",
        ));
        assert_eq!(c.ztunnel, vec![DenyIgnored]);
        assert!(c.ztunnel_fail_open() && !c.ztunnel_fail_closed());
        let c = classify(&policy(
            "spec: {action: DENY, rules: [{to: [{operation: {paths: [/admin]}}]}]}",
        ));
        assert_eq!(c.ztunnel, vec![DenyIgnored]);
        // L4 beside L7 in one block survives: deny the whole port.
        let c = classify(&policy(
            "spec: {action: DENY, rules: [{to: [{operation: {ports: ['80'], methods: [POST]}}]}]}",
        ));
        assert_eq!(c.ztunnel, vec![DenyBroadened]);
        assert!(!c.ztunnel_fail_open() && c.ztunnel_fail_closed());
    }

    #[test]
    fn deny_narrowed_and_broadened_at_once() {
        // Block 1 loses requestPrincipals (broadened), block 2 is L7-only (narrowed).
        let p = policy(
            "spec: {action: DENY, rules: [{from: [{source: {namespaces: [a], requestPrincipals: ['*']}}, {source: {remoteIpBlocks: [1.2.3.4]}}]}]}",
        );
        let a = ztunnel_analysis(&p, &ZtunnelSemantics::default());
        assert_eq!(a.effects, vec![DenyBroadened, DenyNarrowed]);
        assert!(a.risk.fail_open && a.risk.fail_closed);
        let view = ztunnel_view(&p, &ZtunnelSemantics::default());
        for w in &a.witnesses {
            let fires = view.matches(&w.request);
            match w.effect {
                DenyBroadened => assert!(fires, "{w:?}"),
                DenyNarrowed => {}
                other => panic!("{other:?}"),
            }
        }
        // The narrowed witnesses: one where the DENY misses, one where it still fires.
        let narrowed: Vec<bool> = a
            .witnesses
            .iter()
            .filter(|w| w.effect == DenyNarrowed)
            .map(|w| view.matches(&w.request))
            .collect();
        assert_eq!(narrowed, vec![false, true]);
        assert!(view.matches(&from("a")) && !view.matches(&from("b")));
    }

    #[test]
    fn rule_effects_are_per_rule() {
        let c = classify(&policy(
            "spec: {action: DENY, rules: [{from: [{source: {namespaces: [a]}}]}, {to: [{operation: {paths: [/x]}}]}]}",
        ));
        assert_eq!(c.rules[0].ztunnel, vec![Exact]);
        assert_eq!(c.rules[1].ztunnel, vec![DenyIgnored]);
        // The policy still fires (rule 0), so as a whole it is narrowed, not ignored.
        assert_eq!(c.ztunnel, vec![DenyNarrowed]);
        // Another rule can cover what one rule's conversion changes: exact as a whole.
        let c = classify(&policy(
            "spec: {action: DENY, rules: [{from: [{source: {namespaces: [a]}}], to: [{operation: {ports: ['80'], methods: [GET]}}]}, {from: [{source: {namespaces: [a]}}]}]}",
        ));
        assert_eq!(c.rules[0].ztunnel, vec![DenyBroadened]);
        assert_eq!(c.ztunnel, vec![Exact]);
    }

    #[test]
    fn trust_domains_are_removed_silently() {
        let c = classify(&policy(
            "spec: {rules: [{from: [{source: {trustDomains: [td]}}]}]}",
        ));
        assert_eq!(kinds(&c), vec![AttrKind::TrustDomain]);
        assert!(c.needs_waypoint());
        // Not dropped like L7: kept as an empty match, which admits nothing.
        assert_eq!(c.ztunnel, vec![AllowNarrowed]);
        let p =
            policy("spec: {rules: [{from: [{source: {trustDomains: [td], namespaces: [a]}}]}]}");
        let c = classify(&p);
        // td/ns/a and other.td/ns/a alike: the ALLOW admits more (fail-open).
        assert_eq!(c.ztunnel, vec![AllowBroadened]);
        assert!(c.ztunnel_fail_open() && !c.ztunnel_fail_closed());
        let view = ztunnel_view(&p, &ZtunnelSemantics::default());
        assert!(view.matches(&req(Some(("other.td", "a", "x")), "10.0.0.1", 80)));
        let c = classify(&policy(
            "spec: {action: DENY, rules: [{from: [{source: {notTrustDomains: [td]}}]}]}",
        ));
        assert_eq!(c.ztunnel, vec![DenyIgnored]);
        let c = classify(&policy(
            "spec: {action: DENY, rules: [{from: [{source: {trustDomains: [td], namespaces: [a]}}]}]}",
        ));
        assert_eq!(c.ztunnel, vec![DenyBroadened]);
    }

    #[test]
    fn unknown_fields() {
        let c = classify(&policy(
            "spec: {rules: [{to: [{operation: {frobs: [x]}}]}]}",
        ));
        assert_eq!(kinds(&c), vec![AttrKind::Unknown]);
        assert!(c.needs_waypoint());
        assert_eq!(c.ztunnel, vec![AllowRulesDropped]);
    }

    #[test]
    fn the_view_is_istiods_conversion() {
        let p = policy(
            r#"
metadata: {name: p, namespace: shop}
spec:
  selector: {matchLabels: {app: a}}
  action: DENY
  rules:
  - from:
    - source: {principals: ["*", "cluster.local/ns/x/*", "*/sa/y", "*/ns/x/sa/*"], serviceAccounts: []}
    - source: {serviceAccounts: [bare, other/sa], requestPrincipals: ["*"]}
    - source: {remoteIpBlocks: [1.2.3.4]}
    to: [{operation: {ports: ["080", "http"], notPorts: ["9090"]}}]
    when:
    - {key: source.ip, values: ["2001:db8::/32", "10.1.2.3"], notValues: ["10.0.0.0/8"]}
    - {key: "request.headers[x]", values: [a]}
"#,
        );
        let a = sent(&p);
        assert_eq!(
            (a.scope, a.action, a.dry_run),
            (ZtunnelScope::WorkloadSelector, ZtunnelAction::Deny, false)
        );
        let g = &a.groups[0];
        assert_eq!(g.clauses.len(), 4, "to, from, then each when condition");
        assert_eq!(g.clauses[0].matches[0].destination_ports, vec![80]);
        assert_eq!(g.clauses[0].matches[0].not_destination_ports, vec![9090]);
        let from = &g.clauses[1].matches;
        assert_eq!(
            from[0].principals,
            vec![
                StringMatch::Presence,
                StringMatch::Prefix("cluster.local/ns/x/".into()),
                StringMatch::Suffix("/sa/y".into()),
                StringMatch::Suffix("/ns/x/sa/*".into()),
            ]
        );
        assert_eq!(
            from[1].service_accounts,
            vec![
                ServiceAccountRef {
                    namespace: "shop".into(),
                    name: "bare".into()
                },
                ServiceAccountRef {
                    namespace: "other".into(),
                    name: "sa".into()
                },
            ]
        );
        assert!(from[2].is_empty(), "an L7-only block is an empty match");
        let ips = &g.clauses[2].matches[0];
        assert_eq!(ips.source_ips.len(), 2);
        assert_eq!(ips.source_ips[1].prefix_len, 32);
        assert!(g.clauses[3].matches[0].is_empty());
        // The header condition's empty match means the DENY never fires.
        assert!(!a.matches(&req(Some(("cluster.local", "x", "y")), "10.1.2.3", 80)));
        let root = policy(
            "metadata: {name: r, namespace: istio-system}\nspec: {action: DENY, rules: [{}]}",
        );
        let a = sent(&root);
        assert_eq!(a.scope, ZtunnelScope::Global);
        assert_eq!(
            a.groups,
            vec![ZtunnelGroup {
                rule: 0,
                clauses: vec![]
            }]
        );
        assert!(a.matches(&req(None, "1.1.1.1", 1)));
        assert_eq!(
            sent(&policy("spec: {selector: {}}")).scope,
            ZtunnelScope::WorkloadSelector
        );
        let none = sent(&policy("spec: {}"));
        assert!(none.groups.is_empty() && !none.matches(&req(None, "1.1.1.1", 1)));
    }

    #[test]
    fn allow_rules_with_l7_are_dropped_whole() {
        let p = policy(
            "spec: {rules: [{to: [{operation: {ports: ['80']}}]}, {from: [{source: {namespaces: [a]}}], to: [{operation: {paths: [/x]}}]}]}",
        );
        let a = sent(&p);
        assert_eq!(a.groups.iter().map(|g| g.rule).collect::<Vec<_>>(), vec![0]);
        let c = classify(&p);
        assert_eq!(c.ztunnel, vec![AllowRulesDropped]);
        assert_eq!(c.rules[0].ztunnel, vec![Exact]);
        assert!(!c.ztunnel_allows_nothing);
    }

    #[test]
    fn decisions() {
        let allow = ztunnel_view(
            &policy("spec: {rules: [{from: [{source: {namespaces: [a]}}]}]}"),
            &ZtunnelSemantics::default(),
        );
        let deny = ztunnel_view(
            &policy(
                "spec: {action: DENY, rules: [{from: [{source: {principals: ['*/sa/bad']}}]}]}",
            ),
            &ZtunnelSemantics::default(),
        );
        let dropped = ztunnel_view(
            &policy("spec: {rules: [{to: [{operation: {methods: [GET]}}]}]}"),
            &ZtunnelSemantics::default(),
        );
        let bad = req(Some(("cluster.local", "a", "bad")), "10.0.0.1", 80);
        assert_eq!(ztunnel_decide([&allow], &from("a")), ZtunnelDecision::Allow);
        assert_eq!(ztunnel_decide([&allow], &from("b")), ZtunnelDecision::Deny);
        assert_eq!(ztunnel_decide([&allow, &deny], &bad), ZtunnelDecision::Deny);
        assert_eq!(ztunnel_decide([&deny], &from("b")), ZtunnelDecision::Allow);
        // An ALLOW with no groups is still an ALLOW policy: it makes everything else denied.
        assert_eq!(
            ztunnel_decide([&dropped], &from("a")),
            ZtunnelDecision::Deny
        );
        assert_eq!(
            ztunnel_decide([&dropped, &allow], &from("a")),
            ZtunnelDecision::Allow
        );
        assert_eq!(ztunnel_decide([], &from("a")), ZtunnelDecision::Allow);
    }

    #[test]
    fn plaintext_callers() {
        let m = |yaml: &str| ztunnel_view(&policy(yaml), &ZtunnelSemantics::default());
        let plain = req(None, "10.0.0.1", 80);
        // No identity: its namespace is "", it has no principal and no service account.
        assert!(m("spec: {rules: [{from: [{source: {notNamespaces: [a]}}]}]}").matches(&plain));
        assert!(m("spec: {rules: [{from: [{source: {notPrincipals: ['*']}}]}]}").matches(&plain));
        assert!(!m("spec: {rules: [{from: [{source: {namespaces: ['*']}}]}]}").matches(&plain));
        assert!(!m("spec: {rules: [{from: [{source: {principals: ['*']}}]}]}").matches(&plain));
        assert!(
            m("spec: {rules: [{from: [{source: {notServiceAccounts: [x]}}]}]}").matches(&plain)
        );
    }

    #[test]
    fn service_accounts_before_1_25() {
        let p = policy("spec: {rules: [{from: [{source: {serviceAccounts: [x]}}]}]}");
        let c = classify_with(&p, &at("1.24.3"));
        assert_eq!(kinds(&c), vec![AttrKind::NotConverted]);
        assert!(c.needs_waypoint());
        assert_eq!(c.ztunnel, vec![AllowRulesDropped]);
        assert!(c.ztunnel_allows_nothing);
        let c = classify_with(&p, &at("1.25.0"));
        assert_eq!(
            (kinds(&c), c.ztunnel),
            (vec![AttrKind::Identity], vec![Exact])
        );
        let d =
            policy("spec: {action: DENY, rules: [{from: [{source: {notServiceAccounts: [x]}}]}]}");
        assert_eq!(classify_with(&d, &at("1.24")).ztunnel, vec![DenyIgnored]);
        assert_eq!(classify(&d).ztunnel, vec![Exact]);
    }

    #[test]
    fn dry_run_by_version() {
        let p = policy(
            "metadata: {name: d, namespace: shop, annotations: {istio.io/dry-run: 'true'}}\nspec: {action: DENY, rules: [{from: [{source: {namespaces: [a]}}]}]}",
        );
        // 1.24: sent as enforced; the sidecar only logs it, ztunnel denies.
        let sem = at("1.24.1");
        assert!(matches!(ztunnel_view(&p, &sem), ZtunnelView::Sent(ref a) if !a.dry_run));
        let c = classify_with(&p, &sem);
        assert_eq!(c.ztunnel, vec![DryRunEnforced]);
        assert!(c.dry_run && c.ztunnel_fail_closed() && !c.ztunnel_fail_open());
        // 1.25–1.28: never sent, flag or not.
        for v in ["1.25", "1.28.2"] {
            let sem = ZtunnelSemantics {
                dry_run_flag: true,
                ..at(v)
            };
            assert_eq!(
                ztunnel_view(&p, &sem),
                ZtunnelView::NotSent(NotSentReason::DryRun),
                "{v}"
            );
        }
        // 1.29+: not sent without the flag; with it, sent marked dry_run (only logged).
        assert_eq!(
            ztunnel_view(&p, &ZtunnelSemantics::default()),
            ZtunnelView::NotSent(NotSentReason::DryRun)
        );
        let flagged = ZtunnelSemantics {
            dry_run_flag: true,
            ..at("1.29.0")
        };
        let view = ztunnel_view(&p, &flagged);
        assert!(matches!(view, ZtunnelView::Sent(ref a) if a.dry_run));
        assert_eq!(view.enforced(), None);
        assert_eq!(ztunnel_decide([&view], &from("a")), ZtunnelDecision::Allow);
        for sem in [ZtunnelSemantics::default(), flagged] {
            let c = classify_with(&p, &sem);
            assert_eq!(c.ztunnel, vec![DryRun]);
            assert_eq!(c.rules[0].ztunnel, vec![DryRun]);
            assert!(!c.ztunnel_fail_open() && !c.ztunnel_fail_closed());
        }
        let mut off = p.clone();
        off.metadata.annotations =
            Some([("istio.io/dry-run".to_string(), "false".to_string())].into());
        assert!(!is_dry_run(&off));
        assert_eq!(classify(&off).ztunnel, vec![Exact]);
    }

    #[test]
    fn networks() {
        let n = IpNet::parse("10.1.2.3/16").unwrap();
        assert!(
            n.contains("10.1.200.1".parse().unwrap()) && !n.contains("10.2.0.0".parse().unwrap())
        );
        assert_eq!(n.first(), "10.1.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(n.after_last(), Some("10.2.0.0".parse().unwrap()));
        assert_eq!(IpNet::parse("255.0.0.0/8").unwrap().after_last(), None);
        let v6 = IpNet::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8::5".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        assert!(
            IpNet::parse("0.0.0.0/0")
                .unwrap()
                .contains("1.2.3.4".parse().unwrap())
        );
        assert!(
            !IpNet::parse("0.0.0.0/0")
                .unwrap()
                .contains("::1".parse().unwrap())
        );
        assert_eq!(IpNet::parse("::/0").unwrap().after_last(), None);
        for bad in ["10.0.0.0/33", "x", "10.0.0.0/8 ", "*"] {
            assert_eq!(IpNet::parse(bad), None, "{bad}");
        }
        assert_eq!(parse_port("080"), Some(80));
        assert_eq!(parse_port("+80"), None);
        assert_eq!(parse_port("70000"), None);
    }

    #[test]
    fn gaps_between_nested_networks_are_searched() {
        // Only 10.1.0.0 and up (after the /16) is in 10/8 but not in 10.0/16; every first
        // address of a network given is outside that region.
        let p = policy(
            "spec: {action: DENY, rules: [{from: [{source: {ipBlocks: [10.0.0.0/8], notIpBlocks: [10.0.0.0/16], requestPrincipals: ['*']}}]}]}",
        );
        let a = ztunnel_analysis(&p, &ZtunnelSemantics::default());
        assert_eq!(a.effects, vec![DenyBroadened]);
        assert_eq!(
            a.witnesses[0].request.source_ip,
            "10.1.0.0".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn identities_are_built_from_the_policy() {
        // Broadened only for callers in a namespace starting with "pay" but neither "pay" nor
        // "payroll": the witness must be built to fit (`pay` + a character no value uses).
        let p = policy(
            "spec: {action: DENY, rules: [{from: [{source: {principals: ['cluster.local/ns/pay*'], notPrincipals: ['*/sa/x-api', 'cluster.local/ns/payroll/*'], notNamespaces: [pay], requestPrincipals: ['*']}}, {source: {principals: ['*-api'], notNamespaces: ['pay*']}}]}]}",
        );
        let a = ztunnel_analysis(&p, &ZtunnelSemantics::default());
        assert_eq!(a.effects, vec![DenyBroadened]);
        let id = a.witnesses[0].request.source.clone().unwrap();
        assert!(
            id.namespace.starts_with("pay")
                && id.namespace != "pay"
                && !id.namespace.starts_with("payroll"),
            "{id:?}"
        );
        let view = ztunnel_view(&p, &ZtunnelSemantics::default());
        assert!(view.matches(&a.witnesses[0].request));
    }

    #[test]
    fn a_rule_that_matches_nobody_changes_nothing() {
        // No SPIFFE identity has the principal "a": dropping the rule admits no one less.
        let c = classify(&policy(
            "spec: {rules: [{from: [{source: {principals: [a]}}], to: [{operation: {methods: [GET]}}]}]}",
        ));
        assert_eq!(c.ztunnel, vec![Exact]);
        assert!(c.needs_waypoint() && c.ztunnel_allows_nothing);
    }

    #[test]
    fn huge_policies_assume_both_risks() {
        // Namespace prefixes and suffixes, service-account prefixes and suffixes: about
        // 2 × 41² × 11² identities to try, far more than the bound.
        let list = |f: &dyn Fn(usize) -> String, n: usize| {
            (0..n)
                .map(|i| format!("'{}'", f(i)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let p = policy(&format!(
            "spec: {{action: DENY, rules: [{{from: [{{source: {{namespaces: [{}], principals: [{}], requestPrincipals: ['*']}}}}, {{source: {{notNamespaces: [{}], notPrincipals: [{}]}}}}]}}]}}",
            list(&|i| format!("p{i}*"), 40),
            list(&|i| format!("cluster.local/ns/n/sa/y{i}*"), 10),
            list(&|i| format!("*s{i}"), 40),
            list(&|i| format!("*x{i}"), 10),
        ));
        let a = ztunnel_analysis(&p, &ZtunnelSemantics::default());
        assert!(a.truncated);
        assert!(a.risk.fail_open && a.risk.fail_closed);
    }

    #[test]
    fn identity_only_rules() {
        let c = classify(&policy(
            "spec: {rules: [{from: [{source: {principals: [a], namespaces: [b]}}]}]}",
        ));
        assert!(c.rules[0].identity_only());
        let c = classify(&policy(
            "spec: {rules: [{from: [{source: {principals: [a]}}], to: [{operation: {ports: ['80']}}]}]}",
        ));
        assert!(!c.rules[0].identity_only());
        assert!(!classify(&policy("spec: {rules: [{}]}")).rules[0].identity_only());
    }

    #[test]
    fn selectors_and_targets() {
        let c = classify(&policy("spec: {selector: {matchLabels: {app: a}}}"));
        assert!(c.has_selector && !c.targeted);
        let p = policy("spec: {targetRefs: [{kind: Service, group: '', name: a}]}");
        let c = classify(&p);
        assert!(c.targeted && !c.has_selector);
        assert_eq!(
            ztunnel_view(&p, &ZtunnelSemantics::default()),
            ZtunnelView::NotSent(NotSentReason::TargetRefs)
        );
        let c = classify(&policy("spec: {selector: {}}"));
        assert!(!c.has_selector);
    }

    #[test]
    fn served_version_is_the_default() {
        let sem = ZtunnelSemantics::default();
        assert_eq!(sem.effective_version(), SERVED_VERSION);
        assert!(sem.converts_service_accounts());
        assert_eq!(sem.dry_run(), DryRunHandling::NotSent);
        assert_eq!(at("1.24").dry_run(), DryRunHandling::Enforced);
    }

    #[test]
    fn a_policy_concerns_the_callers_of_a_namespace_only_if_its_sources_can_name_them() {
        let sem = ZtunnelSemantics::default();
        let may = |yaml: &str, ns: &str| may_match_peer_in(&policy(yaml), &sem, ns);
        let post_from_a = "spec: {action: DENY, rules: [{from: [{source: {namespaces: [a]}}], to: [{operation: {methods: [POST]}}]}]}";
        assert!(may(post_from_a, "a"));
        assert!(!may(post_from_a, "b"));
        let outside = "spec: {action: DENY, rules: [{from: [{source: {notNamespaces: [shop]}}], to: [{operation: {paths: [/admin]}}]}]}";
        assert!(!may(outside, "shop"));
        assert!(may(outside, "elsewhere"));
        assert!(may(
            "spec: {action: DENY, rules: [{to: [{operation: {methods: [POST]}}]}]}",
            "any"
        ));
        let principal = "spec: {action: DENY, rules: [{from: [{source: {principals: [cluster.local/ns/a/sa/x]}}]}]}";
        assert!(may(principal, "a"));
        assert!(!may(principal, "b"));
        let prefix = "spec: {action: DENY, rules: [{from: [{source: {principals: ['cluster.local/ns/a*']}}]}]}";
        assert!(may(prefix, "ab"));
        assert!(!may(prefix, "b"));
        // Every service account of the namespace excluded but one: still concerned.
        let not_x = "spec: {action: DENY, rules: [{from: [{source: {namespaces: [a], notPrincipals: [cluster.local/ns/a/sa/x]}}]}]}";
        assert!(may(not_x, "a"));
        // A rule whose L4 part can never hold concerns nobody.
        assert!(!may(
            "spec: {action: DENY, rules: [{from: [{source: {namespaces: [a], notNamespaces: [a]}}]}]}",
            "a"
        ));
        let all = |yaml: &str, ns: &str| matches_every_peer_in(&policy(yaml), &sem, ns);
        let others = "spec: {action: DENY, rules: [{from: [{source: {notNamespaces: [shop]}}]}]}";
        assert!(all(others, "elsewhere"));
        assert!(!all(others, "shop"));
        // Only POSTs, or all but one service account: not every request.
        assert!(!all(post_from_a, "a"));
        assert!(!all(not_x, "a"));
        assert!(all(
            "spec: {action: DENY, rules: [{from: [{source: {namespaces: [a]}}]}]}",
            "a"
        ));
    }

    #[test]
    fn sidecars_read_cluster_local_and_aliases_as_the_trust_domain_and_ztunnel_does_not() {
        let aliases = vec!["old.td".to_string()];
        // As Istio's RBAC builder expands them (trust domain example.org, alias old.td).
        assert_eq!(
            sidecar_principals("cluster.local/ns/a/sa/b", "example.org", &aliases),
            ["example.org/ns/a/sa/b", "old.td/ns/a/sa/b"]
        );
        assert_eq!(
            sidecar_principals("old.td/ns/c/sa/d", "example.org", &aliases),
            ["example.org/ns/c/sa/d", "old.td/ns/c/sa/d"]
        );
        assert_eq!(
            sidecar_principals("cluster.local/ns/a/sa/b", "example.org", &[]),
            ["example.org/ns/a/sa/b"]
        );
        assert_eq!(
            sidecar_principals("other.td/ns/a/sa/b", "example.org", &aliases),
            ["other.td/ns/a/sa/b"]
        );
        assert_eq!(
            sidecar_principals("cluster.local/ns/a/sa/b", "cluster.local", &[]),
            ["cluster.local/ns/a/sa/b"]
        );
        let p = policy(
            "spec: {rules: [{from: [{source: {principals: [cluster.local/ns/a/sa/b, example.org/ns/x/sa/y]}}], when: [{key: source.principal, notValues: [old.td/ns/c/sa/d]}]}]}",
        );
        assert_eq!(
            alias_dependent_principals(&p, "example.org", &aliases),
            [
                "cluster.local/ns/a/sa/b",
                "example.org/ns/x/sa/y",
                "old.td/ns/c/sa/d"
            ]
        );
        assert!(alias_dependent_principals(&p, "cluster.local", &[]).is_empty());
    }
}
