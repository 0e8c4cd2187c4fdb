//! The ztunnel authorization matcher: istiod's `istio.security.Authorization` (the workload
//! API message it sends to ztunnel) and ztunnel's L4 decision over a set of them.
//!
//! Written from ztunnel's behaviour and tests, not from its code:
//!
//! - matching: `src/rbac.rs` (`Authorization::matches`, `matches_internal`,
//!   `StringMatch::matches_principal`, the xDS → `RbacMatch` conversion, and the tests
//!   `rbac_empty_policy`, `rbac_nesting`, `rbac_multi_rule`, `string_match`);
//! - combining: `src/state.rs` (`DemandProxyState::assert_rbac`), with dry-run as ztunnel
//!   1.29 does it (istio/ztunnel#1659, #1745: dry-run policies are only logged);
//! - applicability: `src/state/policy.rs` (`PolicyStore::insert`, `get_by_namespace`).
//!
//! The JSON is protojson as the `e2e/istio` binary writes it (`UseProtoNames`, enums by
//! name, unpopulated fields omitted). The message nesting is
//! `Authorization.groups[].rules[].matches[]`: groups are OR-ed, the rules (ztunnel calls them
//! clauses) of a group AND-ed, the matches of a rule OR-ed, and the fields of a match AND-ed.
//!
//! Callers select the policies a workload is subject to with [`applies_to`], then ask
//! [`decide`] for the verdict.

use std::fmt;
use std::marker::PhantomData;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Why an Authorization (or a part of it) cannot be read, or would not be read by ztunnel as
/// it is written.
#[derive(Debug, thiserror::Error)]
pub enum AuthorizationError {
    #[error("invalid istio.security.Authorization protojson: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unknown istio.security.{proto_enum} value {value}")]
    UnknownEnum {
        proto_enum: &'static str,
        value: String,
    },
    #[error("invalid base64 in a bytes field: {0}")]
    Base64(&'static str),
    #[error("StringMatch sets more than one of exact, prefix, suffix and presence")]
    OneofSetTwice,
    #[error("StringMatch sets none of exact, prefix, suffix and presence; ztunnel drops it")]
    UnsetStringMatch,
    #[error("address has {0} bytes; ztunnel takes only 4 (IPv4) or 16 (IPv6) and drops it")]
    AddressLength(usize),
    #[error("prefix length {length} is longer than the {max} bits of {address}")]
    PrefixLength {
        address: IpAddr,
        length: u32,
        max: u8,
    },
    #[error("port {0} does not fit 16 bits; ztunnel truncates it")]
    PortRange(u32),
    #[error("not a SPIFFE identity of the form spiffe://<td>/ns/<ns>/sa/<sa>: {0:?}")]
    Spiffe(String),
}

// ---------------------------------------------------------------------------------------------
// The message, as protojson
// ---------------------------------------------------------------------------------------------

/// `istio.security.Authorization`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Authorization {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(skip_serializing_if = "is_default")]
    pub scope: Scope,
    #[serde(skip_serializing_if = "is_default")]
    pub action: Action,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<Group>,
    #[serde(alias = "dryRun", skip_serializing_if = "is_default")]
    pub dry_run: bool,
    /// `istio.workload.Extension`s, kept opaque: ztunnel's matcher reads none of them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<serde_json::Value>,
}

/// `istio.security.Group`: its rules are AND-ed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Group {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rules>,
}

/// `istio.security.Rules` (a "clause" in ztunnel): its matches are OR-ed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rules {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<Match>,
}

/// `istio.security.Match`: values of one field are OR-ed, the fields AND-ed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Match {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<StringMatch>,
    #[serde(alias = "notNamespaces", skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<StringMatch>,
    #[serde(alias = "serviceAccounts", skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<ServiceAccountMatch>,
    #[serde(alias = "notServiceAccounts", skip_serializing_if = "Vec::is_empty")]
    pub not_service_accounts: Vec<ServiceAccountMatch>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<StringMatch>,
    #[serde(alias = "notPrincipals", skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<StringMatch>,
    #[serde(alias = "sourceIps", skip_serializing_if = "Vec::is_empty")]
    pub source_ips: Vec<Address>,
    #[serde(alias = "notSourceIps", skip_serializing_if = "Vec::is_empty")]
    pub not_source_ips: Vec<Address>,
    #[serde(alias = "destinationIps", skip_serializing_if = "Vec::is_empty")]
    pub destination_ips: Vec<Address>,
    #[serde(alias = "notDestinationIps", skip_serializing_if = "Vec::is_empty")]
    pub not_destination_ips: Vec<Address>,
    #[serde(alias = "destinationPorts", skip_serializing_if = "Vec::is_empty")]
    pub destination_ports: Vec<u32>,
    #[serde(alias = "notDestinationPorts", skip_serializing_if = "Vec::is_empty")]
    pub not_destination_ports: Vec<u32>,
    /// Opaque, as on [`Authorization::extensions`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<serde_json::Value>,
}

/// `istio.security.Address`: an IP (4 or 16 bytes, base64 in JSON) and a prefix length.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Address {
    #[serde(with = "base64_bytes", skip_serializing_if = "Vec::is_empty")]
    pub address: Vec<u8>,
    #[serde(skip_serializing_if = "is_default")]
    pub length: u32,
}

/// `istio.security.ServiceAccountMatch`. Its second field's proto name is camelCase.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceAccountMatch {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(rename = "serviceAccount", skip_serializing_if = "String::is_empty")]
    pub service_account: String,
}

/// `istio.security.StringMatch`: the `match_type` oneof, which may be unset.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "StringMatchJson", into = "StringMatchJson")]
pub struct StringMatch {
    pub match_type: Option<MatchType>,
}

/// The members of `StringMatch.match_type`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MatchType {
    Exact(String),
    Prefix(String),
    Suffix(String),
    /// Any non-empty value (istiod's translation of `*`).
    Presence,
}

/// `istio.security.Scope`. GLOBAL is the proto default, so protojson omits it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Scope {
    #[default]
    Global,
    Namespace,
    WorkloadSelector,
}

/// `istio.security.Action`. ALLOW is the proto default, so protojson omits it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Action {
    #[default]
    Allow,
    Deny,
}

impl Authorization {
    /// Reads one Authorization from protojson.
    pub fn from_json(json: &str) -> Result<Self, AuthorizationError> {
        Ok(serde_json::from_str(json)?)
    }

    /// The key ztunnel stores the policy under and workloads refer to it by: `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Reports the first value that ztunnel would not read as written: it silently drops an
    /// unset StringMatch and an address it cannot make a CIDR of, and truncates ports to 16
    /// bits (rbac.rs, the xDS → `RbacMatch` conversion). Matching here does the same; this is
    /// the strict check for a caller who wants to know.
    pub fn validate(&self) -> Result<(), AuthorizationError> {
        self.all_matches().try_for_each(Match::validate)
    }

    fn all_matches(&self) -> impl Iterator<Item = &Match> {
        self.groups
            .iter()
            .flat_map(|g| &g.rules)
            .flat_map(|r| &r.matches)
    }
}

impl Match {
    fn validate(&self) -> Result<(), AuthorizationError> {
        let strings = [
            &self.namespaces,
            &self.not_namespaces,
            &self.principals,
            &self.not_principals,
        ];
        let unset = strings
            .iter()
            .flat_map(|l| l.iter())
            .any(|s| s.match_type.is_none());
        if unset {
            return Err(AuthorizationError::UnsetStringMatch);
        }
        let addresses = [
            &self.source_ips,
            &self.not_source_ips,
            &self.destination_ips,
            &self.not_destination_ips,
        ];
        addresses
            .iter()
            .flat_map(|l| l.iter())
            .try_for_each(Address::validate)?;
        let ports = self
            .destination_ports
            .iter()
            .chain(&self.not_destination_ports);
        match ports.copied().find(|p| u16::try_from(*p).is_err()) {
            Some(port) => Err(AuthorizationError::PortRange(port)),
            None => Ok(()),
        }
    }
}

impl Address {
    /// An address of `ip/length`.
    pub fn new(ip: IpAddr, length: u32) -> Self {
        let address = match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        Self { address, length }
    }

    /// The CIDR ztunnel makes of this address, or why it drops it.
    pub fn cidr(&self) -> Result<Cidr, AuthorizationError> {
        let ip = ip_from_bytes(&self.address)?;
        // rbac.rs narrows the proto uint32 to u8 before building the network, so a length of
        // 256 + 24 is read as 24; `validate` reports such lengths.
        let length = self.length as u8;
        Cidr::new(ip, length)
    }

    fn validate(&self) -> Result<(), AuthorizationError> {
        let cidr = self.cidr()?;
        let max = max_prefix_len(cidr.address);
        if self.length > u32::from(max) {
            return Err(AuthorizationError::PrefixLength {
                address: cidr.address,
                length: self.length,
                max,
            });
        }
        Ok(())
    }
}

/// As ztunnel's `byte_to_ip` (state/workload.rs): 4 bytes are IPv4, 16 bytes IPv6.
fn ip_from_bytes(bytes: &[u8]) -> Result<IpAddr, AuthorizationError> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Ok(IpAddr::V4(Ipv4Addr::from(v4)));
    }
    if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
        return Ok(IpAddr::V6(Ipv6Addr::from(v6)));
    }
    Err(AuthorizationError::AddressLength(bytes.len()))
}

impl StringMatch {
    pub fn exact(value: impl Into<String>) -> Self {
        Self::of(MatchType::Exact(value.into()))
    }

    pub fn prefix(value: impl Into<String>) -> Self {
        Self::of(MatchType::Prefix(value.into()))
    }

    pub fn suffix(value: impl Into<String>) -> Self {
        Self::of(MatchType::Suffix(value.into()))
    }

    pub fn presence() -> Self {
        Self::of(MatchType::Presence)
    }

    fn of(match_type: MatchType) -> Self {
        Self {
            match_type: Some(match_type),
        }
    }
}

impl MatchType {
    /// ztunnel's `StringMatch::matches` (test `string_match`): case-sensitive; presence means
    /// non-empty; an empty prefix or suffix matches anything, the empty string included.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            MatchType::Exact(exact) => value == exact,
            MatchType::Prefix(prefix) => value.starts_with(prefix.as_str()),
            MatchType::Suffix(suffix) => value.ends_with(suffix.as_str()),
            MatchType::Presence => !value.is_empty(),
        }
    }
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

// ---------------------------------------------------------------------------------------------
// protojson details: oneof, enums, bytes
// ---------------------------------------------------------------------------------------------

/// The protojson form of the oneof: at most one member key; `presence` is an `Empty` (`{}`).
#[derive(Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct StringMatchJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    exact: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    suffix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence: Option<Empty>,
}

/// `google.protobuf.Empty`.
#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

impl TryFrom<StringMatchJson> for StringMatch {
    type Error = AuthorizationError;

    fn try_from(json: StringMatchJson) -> Result<Self, Self::Error> {
        let members = [
            json.exact.map(MatchType::Exact),
            json.prefix.map(MatchType::Prefix),
            json.suffix.map(MatchType::Suffix),
            json.presence.map(|Empty {}| MatchType::Presence),
        ];
        let mut set = members.into_iter().flatten();
        let match_type = set.next();
        if set.next().is_some() {
            return Err(AuthorizationError::OneofSetTwice);
        }
        Ok(Self { match_type })
    }
}

impl From<StringMatch> for StringMatchJson {
    fn from(m: StringMatch) -> Self {
        let mut json = Self::default();
        match m.match_type {
            Some(MatchType::Exact(v)) => json.exact = Some(v),
            Some(MatchType::Prefix(v)) => json.prefix = Some(v),
            Some(MatchType::Suffix(v)) => json.suffix = Some(v),
            Some(MatchType::Presence) => json.presence = Some(Empty {}),
            None => {}
        }
        json
    }
}

/// A proto enum: its values by name, in the order of their numbers (both are valid protojson).
trait ProtoEnum: Copy + PartialEq + 'static {
    const NAME: &'static str;
    const VALUES: &'static [(&'static str, Self)];

    fn proto_name(self) -> &'static str {
        Self::VALUES
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("", |(name, _)| *name)
    }
}

impl ProtoEnum for Scope {
    const NAME: &'static str = "Scope";
    const VALUES: &'static [(&'static str, Self)] = &[
        ("GLOBAL", Scope::Global),
        ("NAMESPACE", Scope::Namespace),
        ("WORKLOAD_SELECTOR", Scope::WorkloadSelector),
    ];
}

impl ProtoEnum for Action {
    const NAME: &'static str = "Action";
    const VALUES: &'static [(&'static str, Self)] =
        &[("ALLOW", Action::Allow), ("DENY", Action::Deny)];
}

struct ProtoEnumVisitor<T>(PhantomData<T>);

impl<T: ProtoEnum> ProtoEnumVisitor<T> {
    fn unknown(value: impl fmt::Display) -> AuthorizationError {
        AuthorizationError::UnknownEnum {
            proto_enum: T::NAME,
            value: value.to_string(),
        }
    }
}

impl<T: ProtoEnum> Visitor<'_> for ProtoEnumVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an istio.security.{} name or number", T::NAME)
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<T, E> {
        T::VALUES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .ok_or_else(|| E::custom(Self::unknown(format!("{name:?}"))))
    }

    // proto3 enums are open, so protojson reads any number; ztunnel then rejects the whole
    // Authorization for a number it does not know (rbac.rs, `Scope::try_from`/`Action::try_from`).
    fn visit_u64<E: de::Error>(self, number: u64) -> Result<T, E> {
        usize::try_from(number)
            .ok()
            .and_then(|i| T::VALUES.get(i))
            .map(|(_, v)| *v)
            .ok_or_else(|| E::custom(Self::unknown(number)))
    }

    fn visit_i64<E: de::Error>(self, number: i64) -> Result<T, E> {
        match u64::try_from(number) {
            Ok(n) => self.visit_u64(n),
            Err(_) => Err(E::custom(Self::unknown(number))),
        }
    }
}

macro_rules! proto_enum_serde {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.proto_name())
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(ProtoEnumVisitor::<$t>(PhantomData))
            }
        }
    };
}

proto_enum_serde!(Scope);
proto_enum_serde!(Action);

/// protojson `bytes`: written as standard base64 with padding; read in the standard or the
/// URL-safe alphabet, padded or not, as Go's protojson reads it.
mod base64_bytes {
    use super::AuthorizationError;
    use serde::{Deserialize, Deserializer, Serializer, de};

    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        decode(&text).map_err(de::Error::custom)
    }

    pub(super) fn encode(bytes: &[u8]) -> String {
        let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
        for chunk in bytes.chunks(3) {
            let mut group = [0u8; 4];
            group[1..=chunk.len()].copy_from_slice(chunk);
            let bits = u32::from_be_bytes(group);
            for i in 0..4 {
                if i <= chunk.len() {
                    let sextet = (bits >> (18 - 6 * i)) & 0x3f;
                    out.push(char::from(ALPHABET[sextet as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    pub(super) fn decode(text: &str) -> Result<Vec<u8>, AuthorizationError> {
        // Go picks the URL-safe alphabet when either of its two letters appears.
        let url_safe = text.contains(['-', '_']);
        let sextets = unpadded(text)
            .bytes()
            .map(|c| sextet(c, url_safe))
            .collect::<Result<Vec<u8>, _>>()?;
        if sextets.len() % 4 == 1 {
            return Err(AuthorizationError::Base64("truncated"));
        }
        let mut out = Vec::with_capacity(sextets.len() / 4 * 3 + 2);
        for chunk in sextets.chunks(4) {
            let bits = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, s)| acc | (u32::from(*s) << (18 - 6 * i)));
            out.extend_from_slice(&bits.to_be_bytes()[1..chunk.len()]);
        }
        Ok(out)
    }

    /// Padding is only taken off a string of whole quads; anywhere else `=` is invalid.
    fn unpadded(text: &str) -> &str {
        if !text.len().is_multiple_of(4) {
            return text;
        }
        text.strip_suffix("==")
            .or_else(|| text.strip_suffix('='))
            .unwrap_or(text)
    }

    fn sextet(c: u8, url_safe: bool) -> Result<u8, AuthorizationError> {
        match c {
            b'A'..=b'Z' => Ok(c - b'A'),
            b'a'..=b'z' => Ok(c - b'a' + 26),
            b'0'..=b'9' => Ok(c - b'0' + 52),
            b'+' if !url_safe => Ok(62),
            b'/' if !url_safe => Ok(63),
            b'-' if url_safe => Ok(62),
            b'_' if url_safe => Ok(63),
            _ => Err(AuthorizationError::Base64("character outside the alphabet")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The request
// ---------------------------------------------------------------------------------------------

/// A peer's SPIFFE identity, as ztunnel learns it from the mTLS certificate.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

impl Identity {
    pub fn new(
        trust_domain: impl Into<String>,
        namespace: impl Into<String>,
        service_account: impl Into<String>,
    ) -> Self {
        Self {
            trust_domain: trust_domain.into(),
            namespace: namespace.into(),
            service_account: service_account.into(),
        }
    }

    /// Reads `spiffe://<td>/ns/<ns>/sa/<sa>`, exactly five path segments (ztunnel's
    /// `Identity::from_str`).
    pub fn from_spiffe_uri(uri: &str) -> Result<Self, AuthorizationError> {
        let bad = || AuthorizationError::Spiffe(uri.to_owned());
        let path = uri.strip_prefix(SPIFFE_SCHEME).ok_or_else(bad)?;
        match path.split('/').collect::<Vec<_>>().as_slice() {
            [td, "ns", ns, "sa", sa] => Ok(Self::new(*td, *ns, *sa)),
            _ => Err(bad()),
        }
    }

    pub fn spiffe_uri(&self) -> String {
        format!("{SPIFFE_SCHEME}{}", self.principal())
    }

    /// What principal matches are compared with: the URI without `spiffe://`.
    pub fn principal(&self) -> String {
        format!(
            "{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

const SPIFFE_SCHEME: &str = "spiffe://";

/// One inbound connection as ztunnel's RBAC sees it (its `rbac::Connection`). The source
/// namespace is not separate: ztunnel takes it from the identity. ztunnel canonicalizes the
/// peer address (`::ffff:a.b.c.d` → `a.b.c.d`) before matching; pass canonical addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// None for plaintext (passthrough) traffic.
    pub source: Option<Identity>,
    pub source_ip: IpAddr,
    pub destination_ip: IpAddr,
    pub destination_port: u16,
}

/// A network and prefix length; host bits of the address are ignored when matching.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    address: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    pub fn new(address: IpAddr, prefix_len: u8) -> Result<Self, AuthorizationError> {
        let max = max_prefix_len(address);
        if prefix_len > max {
            return Err(AuthorizationError::PrefixLength {
                address,
                length: u32::from(prefix_len),
                max,
            });
        }
        Ok(Self {
            address,
            prefix_len,
        })
    }

    /// An IPv4 network never contains an IPv6 address, nor the reverse.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let len = u32::from(self.prefix_len);
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

fn max_prefix_len(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

// ---------------------------------------------------------------------------------------------
// Matching (rbac.rs, `Authorization::matches`)
// ---------------------------------------------------------------------------------------------

/// Whether the policy's rules match the request; its action and dry-run flag play no part.
/// No groups never match (test `rbac_empty_policy`); a group matches when all its rules do.
pub fn policy_matches(policy: &Authorization, request: &Request) -> bool {
    policy
        .groups
        .iter()
        .any(|group| group_matches(group, request))
}

/// A group with no rules matches everything (`rbac_empty_policy`: `vec![vec![]]`).
fn group_matches(group: &Group, request: &Request) -> bool {
    group.rules.iter().all(|rules| rules_match(rules, request))
}

/// A rule with no matches matches everything (`rbac_empty_policy`: `vec![vec![vec![]]]`);
/// otherwise one of its matches must.
fn rules_match(rules: &Rules, request: &Request) -> bool {
    rules.matches.is_empty() || rules.matches.iter().any(|m| match_matches(m, request))
}

/// Whether one Match matches. A Match with nothing ztunnel can use never matches
/// (`rbac_empty_policy`, `RbacMatch::is_empty`), and emptiness is judged after ztunnel's
/// conversion has dropped unset StringMatches and unusable addresses.
pub fn match_matches(m: &Match, request: &Request) -> bool {
    let effective = EffectiveMatch::of(m);
    !effective.is_empty() && effective.matches(request)
}

/// A Match as ztunnel holds it after conversion (rbac.rs, `TryFrom<&Match> for RbacMatch`).
struct EffectiveMatch<'a> {
    namespaces: Vec<&'a MatchType>,
    not_namespaces: Vec<&'a MatchType>,
    service_accounts: &'a [ServiceAccountMatch],
    not_service_accounts: &'a [ServiceAccountMatch],
    principals: Vec<&'a MatchType>,
    not_principals: Vec<&'a MatchType>,
    source_ips: Vec<Cidr>,
    not_source_ips: Vec<Cidr>,
    destination_ips: Vec<Cidr>,
    not_destination_ips: Vec<Cidr>,
    destination_ports: Vec<u16>,
    not_destination_ports: Vec<u16>,
}

impl<'a> EffectiveMatch<'a> {
    fn of(m: &'a Match) -> Self {
        Self {
            namespaces: set_string_matches(&m.namespaces),
            not_namespaces: set_string_matches(&m.not_namespaces),
            service_accounts: &m.service_accounts,
            not_service_accounts: &m.not_service_accounts,
            principals: set_string_matches(&m.principals),
            not_principals: set_string_matches(&m.not_principals),
            source_ips: usable_cidrs(&m.source_ips),
            not_source_ips: usable_cidrs(&m.not_source_ips),
            destination_ips: usable_cidrs(&m.destination_ips),
            not_destination_ips: usable_cidrs(&m.not_destination_ips),
            destination_ports: truncated_ports(&m.destination_ports),
            not_destination_ports: truncated_ports(&m.not_destination_ports),
        }
    }

    fn is_empty(&self) -> bool {
        self.namespaces.is_empty()
            && self.not_namespaces.is_empty()
            && self.service_accounts.is_empty()
            && self.not_service_accounts.is_empty()
            && self.principals.is_empty()
            && self.not_principals.is_empty()
            && self.source_ips.is_empty()
            && self.not_source_ips.is_empty()
            && self.destination_ips.is_empty()
            && self.not_destination_ips.is_empty()
            && self.destination_ports.is_empty()
            && self.not_destination_ports.is_empty()
    }

    /// Every field must hold (rbac.rs checks them in this order; the order changes nothing).
    fn matches(&self, request: &Request) -> bool {
        self.addresses_match(request)
            && self.port_matches(request.destination_port)
            && self.source_matches(request.source.as_ref())
    }

    fn addresses_match(&self, request: &Request) -> bool {
        let ip_in = |ip: IpAddr| move |cidr: &Cidr| cidr.contains(ip);
        let (dst, src) = (request.destination_ip, request.source_ip);
        field_matches(&self.destination_ips, &self.not_destination_ips, ip_in(dst))
            && field_matches(&self.source_ips, &self.not_source_ips, ip_in(src))
    }

    fn port_matches(&self, port: u16) -> bool {
        field_matches(&self.destination_ports, &self.not_destination_ports, |p| {
            *p == port
        })
    }

    fn source_matches(&self, source: Option<&Identity>) -> bool {
        field_matches(self.service_accounts, self.not_service_accounts, |sa| {
            service_account_matches(sa, source)
        }) && field_matches(&self.principals, &self.not_principals, |p| {
            principal_matches(p, source)
        }) && field_matches(&self.namespaces, &self.not_namespaces, |n| {
            namespace_matches(n, source)
        })
    }
}

/// rbac.rs `matches_internal`: a non-empty positive list needs one hit, a negative list none.
fn field_matches<T>(positive: &[T], negative: &[T], hit: impl Fn(&T) -> bool) -> bool {
    (positive.is_empty() || positive.iter().any(&hit)) && !negative.iter().any(&hit)
}

fn set_string_matches(list: &[StringMatch]) -> Vec<&MatchType> {
    list.iter().filter_map(|s| s.match_type.as_ref()).collect()
}

fn usable_cidrs(list: &[Address]) -> Vec<Cidr> {
    list.iter().filter_map(|a| a.cidr().ok()).collect()
}

/// rbac.rs narrows each uint32 port to u16 (so 65536 + 80 is read as 80).
fn truncated_ports(list: &[u32]) -> Vec<u16> {
    list.iter().map(|p| *p as u16).collect()
}

/// `ServiceAccountMatch::matches`: namespace and account must both be equal; the trust domain
/// is not compared; no identity never matches.
fn service_account_matches(sa: &ServiceAccountMatch, source: Option<&Identity>) -> bool {
    source
        .is_some_and(|id| id.namespace == sa.namespace && id.service_account == sa.service_account)
}

/// `StringMatch::matches_principal`: the URI minus `spiffe://` is compared, and a source with
/// no identity matches nothing, not even a prefix of "" (ztunnel compares "" then fails to strip
/// the scheme from it).
fn principal_matches(m: &MatchType, source: Option<&Identity>) -> bool {
    source.is_some_and(|id| m.matches(&id.principal()))
}

/// The source namespace is the identity's, and "" without one: so exact "" or any prefix or
/// suffix of "" matches plaintext, presence does not (rbac.rs, `Authorization::matches`).
fn namespace_matches(m: &MatchType, source: Option<&Identity>) -> bool {
    m.matches(source.map_or("", |id| id.namespace.as_str()))
}

// ---------------------------------------------------------------------------------------------
// Deciding (state.rs, `DemandProxyState::assert_rbac`)
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
}

/// Why ztunnel decided as it did; the policy keys are `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// A DENY policy matched (ztunnel's `ExplicitlyDenied`).
    DeniedBy(String),
    /// No ALLOW policy applies, and no DENY matched.
    NoAllowPolicies,
    /// An ALLOW policy matched.
    AllowedBy(String),
    /// ALLOW policies apply but none matched (ztunnel's `NotAllowed`).
    NoAllowMatched,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    pub reason: Reason,
}

/// ztunnel's inbound decision over the policies that apply to the destination workload (see
/// [`applies_to`]): any matching DENY denies; else no ALLOW allows; else a matching ALLOW
/// allows; else deny. Dry-run policies are only logged by ztunnel, so they are left out here:
/// a dry-run ALLOW does not make the ALLOW set non-empty (istio/ztunnel#1659, #1745).
pub fn evaluate<'a>(
    policies: impl IntoIterator<Item = &'a Authorization>,
    request: &Request,
) -> Verdict {
    let (allow, deny): (Vec<&Authorization>, Vec<&Authorization>) = policies
        .into_iter()
        .filter(|p| !p.dry_run)
        .partition(|p| p.action == Action::Allow);
    let first_match = |set: &[&Authorization]| {
        set.iter()
            .find(|p| policy_matches(p, request))
            .map(|p| p.key())
    };
    if let Some(key) = first_match(&deny) {
        return verdict(Decision::Deny, Reason::DeniedBy(key));
    }
    if allow.is_empty() {
        return verdict(Decision::Allow, Reason::NoAllowPolicies);
    }
    match first_match(&allow) {
        Some(key) => verdict(Decision::Allow, Reason::AllowedBy(key)),
        None => verdict(Decision::Deny, Reason::NoAllowMatched),
    }
}

/// [`evaluate`] without the reason.
pub fn decide<'a>(
    policies: impl IntoIterator<Item = &'a Authorization>,
    request: &Request,
) -> Decision {
    evaluate(policies, request).decision
}

fn verdict(decision: Decision, reason: Reason) -> Verdict {
    Verdict { decision, reason }
}

/// Whether ztunnel applies the policy to a workload (state.rs `assert_rbac` with
/// policy.rs `PolicyStore`): GLOBAL policies apply to every workload whatever namespace they
/// are in (ztunnel does not know the root namespace; istiod makes only root-namespace policies
/// GLOBAL); NAMESPACE ones to workloads of the policy's namespace; and any policy whose key is
/// in the workload's `authorization_policies` (the workload API field), whatever its scope.
///
/// `workload_policies` is that field, which istiod fills and ztunnel only reads: the keys
/// (`namespace/name`) of the WORKLOAD_SELECTOR policies whose selector matches the workload's
/// labels and whose namespace is the workload's or the root namespace, plus istiod's own
/// PeerAuthentication-derived policies (ambient `buildWorkloadPolicies`). The caller computes it.
pub fn applies_to<S: AsRef<str>>(
    policy: &Authorization,
    workload_namespace: &str,
    workload_policies: &[S],
) -> bool {
    let listed = || {
        let key = policy.key();
        workload_policies.iter().any(|k| k.as_ref() == key)
    };
    match policy.scope {
        Scope::Global => true,
        Scope::Namespace => policy.namespace == workload_namespace || listed(),
        Scope::WorkloadSelector => listed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // ---- fixtures ---------------------------------------------------------------------------

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn shop_frontend() -> Identity {
        Identity::new("cluster.local", "shop", "frontend")
    }

    fn billing_worker() -> Identity {
        Identity::new("corp.example", "billing", "worker")
    }

    fn request(source: Option<Identity>, src: &str, dst: &str, port: u16) -> Request {
        Request {
            source,
            source_ip: ip(src),
            destination_ip: ip(dst),
            destination_port: port,
        }
    }

    /// mTLS from shop/frontend, 10.1.0.5 → 10.2.0.9:8080.
    fn from_frontend() -> Request {
        request(Some(shop_frontend()), "10.1.0.5", "10.2.0.9", 8080)
    }

    /// mTLS from billing/worker, 192.168.4.4 → 10.2.0.10:9090.
    fn from_worker() -> Request {
        request(Some(billing_worker()), "192.168.4.4", "10.2.0.10", 9090)
    }

    /// Plaintext, 10.1.0.5 → 10.2.0.9:8080.
    fn plaintext() -> Request {
        request(None, "10.1.0.5", "10.2.0.9", 8080)
    }

    fn policy(name: &str, action: Action, groups: Vec<Group>) -> Authorization {
        Authorization {
            name: name.into(),
            namespace: "shop".into(),
            scope: Scope::Namespace,
            action,
            groups,
            ..Default::default()
        }
    }

    fn allow(name: &str, groups: Vec<Group>) -> Authorization {
        policy(name, Action::Allow, groups)
    }

    fn deny(name: &str, groups: Vec<Group>) -> Authorization {
        policy(name, Action::Deny, groups)
    }

    fn group(rules: Vec<Vec<Match>>) -> Group {
        Group {
            rules: rules.into_iter().map(|matches| Rules { matches }).collect(),
        }
    }

    /// One group, one rule, one match.
    fn single(m: Match) -> Vec<Group> {
        vec![group(vec![vec![m]])]
    }

    fn matches_single(m: Match, r: &Request) -> bool {
        policy_matches(&allow("p", single(m)), r)
    }

    fn cidr(s: &str) -> Address {
        let (addr, len) = s.split_once('/').unwrap();
        Address::new(ip(addr), len.parse().unwrap())
    }

    fn ns(m: MatchType) -> Match {
        Match {
            namespaces: vec![StringMatch::of(m)],
            ..Default::default()
        }
    }

    fn exact(s: &str) -> MatchType {
        MatchType::Exact(s.into())
    }

    fn sa(namespace: &str, service_account: &str) -> ServiceAccountMatch {
        ServiceAccountMatch {
            namespace: namespace.into(),
            service_account: service_account.into(),
        }
    }

    // ---- protojson ----------------------------------------------------------------------------

    /// Written by hand from the proto field names, as `protojson.Marshal` with `UseProtoNames`
    /// lays out a namespace-wide DENY with a from, a to and a when.
    const SHOP_DENY: &str = r#"{
        "name": "deny-untrusted",
        "namespace": "shop",
        "scope": "NAMESPACE",
        "action": "DENY",
        "groups": [
            {
                "rules": [
                    { "matches": [ { "destination_ports": [8080, 8443] } ] },
                    { "matches": [
                        {
                            "source_ips": [ { "address": "CgAAAA==", "length": 8 } ],
                            "not_source_ips": [ { "address": "IAENuAAAAAAAAAAAAAAAAA==", "length": 32 } ],
                            "namespaces": [ { "prefix": "team-" }, { "presence": {} } ],
                            "not_namespaces": [ { "exact": "istio-system" } ],
                            "service_accounts": [ { "namespace": "shop", "serviceAccount": "frontend" } ],
                            "principals": [ { "suffix": "/sa/frontend" } ],
                            "not_principals": [ { "exact": "cluster.local/ns/shop/sa/admin" } ]
                        }
                    ] },
                    { "matches": [
                        {
                            "destination_ips": [ { "address": "wKgBBw==", "length": 32 } ],
                            "not_destination_ports": [ 9090 ]
                        }
                    ] }
                ]
            }
        ]
    }"#;

    #[test]
    fn parses_a_realistic_document() {
        let p = Authorization::from_json(SHOP_DENY).unwrap();
        assert_eq!(
            (p.name.as_str(), p.namespace.as_str()),
            ("deny-untrusted", "shop")
        );
        assert_eq!(
            (p.scope, p.action, p.dry_run),
            (Scope::Namespace, Action::Deny, false)
        );
        assert_eq!(p.key(), "shop/deny-untrusted");
        let rules = &p.groups[0].rules;
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0].matches[0].destination_ports, vec![8080, 8443]);
        let from = &rules[1].matches[0];
        assert_eq!(from.source_ips, vec![cidr("10.0.0.0/8")]);
        assert_eq!(from.not_source_ips, vec![cidr("2001:db8::/32")]);
        assert_eq!(
            from.namespaces,
            vec![StringMatch::prefix("team-"), StringMatch::presence()]
        );
        assert_eq!(
            from.not_namespaces,
            vec![StringMatch::exact("istio-system")]
        );
        assert_eq!(from.service_accounts, vec![sa("shop", "frontend")]);
        assert_eq!(from.principals, vec![StringMatch::suffix("/sa/frontend")]);
        assert_eq!(
            from.not_principals,
            vec![StringMatch::exact("cluster.local/ns/shop/sa/admin")]
        );
        let when = &rules[2].matches[0];
        assert_eq!(when.destination_ips, vec![cidr("192.168.1.7/32")]);
        assert_eq!(when.not_destination_ports, vec![9090]);
        p.validate().unwrap();
    }

    #[test]
    fn the_realistic_document_decides_as_written() {
        let p = Authorization::from_json(SHOP_DENY).unwrap();
        let frontend_to = |dst: &str, port| request(Some(shop_frontend()), "10.1.0.5", dst, port);
        // The `to` and `from` rules hold; the `when` rule wants 192.168.1.7 and not 9090.
        assert!(policy_matches(&p, &frontend_to("192.168.1.7", 8443)));
        assert!(!policy_matches(&p, &frontend_to("192.168.1.8", 8443)));
        assert!(!policy_matches(&p, &frontend_to("192.168.1.7", 9090)));
        // shop is not team-*, but presence is the other option of that list.
        assert_eq!(
            decide([&p], &frontend_to("192.168.1.7", 8080)),
            Decision::Deny
        );
        // Plaintext has no namespace, so `presence` fails, and no service account.
        let plain = request(None, "10.1.0.5", "192.168.1.7", 8080);
        assert_eq!(decide([&p], &plain), Decision::Allow);
    }

    #[test]
    fn omitted_fields_are_the_proto_defaults() {
        // GLOBAL, ALLOW and false are zero values, which protojson leaves out.
        let p = Authorization::from_json(
            r#"{"name":"allow-all","namespace":"istio-system","groups":[{}]}"#,
        )
        .unwrap();
        assert_eq!(
            (p.scope, p.action, p.dry_run),
            (Scope::Global, Action::Allow, false)
        );
        assert_eq!(p.groups, vec![Group::default()]);
        assert_eq!(
            Authorization::from_json("{}").unwrap(),
            Authorization::default()
        );
    }

    #[test]
    fn serializes_back_to_the_same_protojson() {
        let original: serde_json::Value = serde_json::from_str(SHOP_DENY).unwrap();
        let p: Authorization = serde_json::from_value(original.clone()).unwrap();
        assert_eq!(serde_json::to_value(&p).unwrap(), original);
        // Defaults stay omitted.
        let minimal = json!({"name": "a", "namespace": "b", "groups": [{}]});
        let p: Authorization = serde_json::from_value(minimal.clone()).unwrap();
        assert_eq!(serde_json::to_value(&p).unwrap(), minimal);
    }

    #[test]
    fn reads_dry_run_and_every_enum_name() {
        let p = Authorization::from_json(
            r#"{"scope":"WORKLOAD_SELECTOR","action":"ALLOW","dry_run":true}"#,
        )
        .unwrap();
        assert_eq!(
            (p.scope, p.action, p.dry_run),
            (Scope::WorkloadSelector, Action::Allow, true)
        );
        let p = Authorization::from_json(r#"{"scope":"GLOBAL","action":"DENY"}"#).unwrap();
        assert_eq!((p.scope, p.action), (Scope::Global, Action::Deny));
    }

    #[test]
    fn reads_enum_numbers_as_protojson_does() {
        let p = Authorization::from_json(r#"{"scope":2,"action":1}"#).unwrap();
        assert_eq!((p.scope, p.action), (Scope::WorkloadSelector, Action::Deny));
    }

    #[test]
    fn unknown_enum_values_are_errors() {
        for doc in [
            r#"{"action":"AUDIT"}"#,
            r#"{"action":"allow"}"#,
            r#"{"scope":3}"#,
            r#"{"scope":-1}"#,
            r#"{"action":true}"#,
        ] {
            let err = Authorization::from_json(doc).unwrap_err();
            assert!(matches!(err, AuthorizationError::Json(_)), "{doc}: {err}");
        }
        let err = Authorization::from_json(r#"{"action":"CUSTOM"}"#).unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown istio.security.Action value \"CUSTOM\""),
            "{err}"
        );
    }

    #[test]
    fn camel_case_json_names_are_read_too() {
        let p = Authorization::from_json(
            r#"{"dryRun":true,"groups":[{"rules":[{"matches":[{"notPrincipals":[{"presence":{}}],
                "sourceIps":[{"address":"CgAAAA==","length":8}],"destinationPorts":[80]}]}]}]}"#,
        )
        .unwrap();
        assert!(p.dry_run);
        let m = &p.groups[0].rules[0].matches[0];
        assert_eq!(m.not_principals, vec![StringMatch::presence()]);
        assert_eq!(m.source_ips, vec![cidr("10.0.0.0/8")]);
        assert_eq!(m.destination_ports, vec![80]);
    }

    #[test]
    fn unknown_fields_are_errors() {
        for doc in [
            r#"{"rules":[]}"#,
            r#"{"groups":[{"clauses":[]}]}"#,
            r#"{"groups":[{"rules":[{"matches":[{"paths":[]}]}]}]}"#,
            r#"{"groups":[{"rules":[{"matches":[{"service_accounts":[{"service_account":"x"}]}]}]}]}"#,
            r#"{"groups":[{"rules":[{"matches":[{"principals":[{"regex":"x"}]}]}]}]}"#,
            r#"{"groups":[{"rules":[{"matches":[{"principals":[{"presence":{"x":1}}]}]}]}]}"#,
        ] {
            assert!(Authorization::from_json(doc).is_err(), "{doc}");
        }
    }

    #[test]
    fn extensions_are_read_and_ignored() {
        let p = Authorization::from_json(
            r#"{"extensions":[{"name":"x","config":{"@type":"t"}}],"groups":[{"rules":[{"matches":[
                {"extensions":[{"name":"y"}]}]}]}]}"#,
        )
        .unwrap();
        assert_eq!(p.extensions.len(), 1);
        // A match with nothing but extensions is empty to ztunnel.
        assert!(!policy_matches(&p, &from_frontend()));
    }

    #[test]
    fn a_string_match_with_two_members_is_an_error() {
        let doc =
            r#"{"groups":[{"rules":[{"matches":[{"namespaces":[{"exact":"a","prefix":"b"}]}]}]}]}"#;
        let err = Authorization::from_json(doc).unwrap_err();
        assert!(err.to_string().contains("more than one"), "{err}");
    }

    #[test]
    fn string_match_members_with_empty_values_are_set() {
        // A oneof member is written even when it holds the empty string.
        let doc =
            r#"{"groups":[{"rules":[{"matches":[{"namespaces":[{"exact":""},{"prefix":""}]}]}]}]}"#;
        let p = Authorization::from_json(doc).unwrap();
        assert_eq!(
            p.groups[0].rules[0].matches[0].namespaces,
            vec![StringMatch::exact(""), StringMatch::prefix("")]
        );
    }

    #[test]
    fn bad_base64_is_an_error() {
        for address in ["CgAAAA=", "CgAA*A==", "C", "Cg==AAAA", "+_AA", "CgAAAA==="] {
            let doc = format!(
                r#"{{"groups":[{{"rules":[{{"matches":[{{"source_ips":[{{"address":"{address}","length":8}}]}}]}}]}}]}}"#
            );
            let err = Authorization::from_json(&doc).unwrap_err();
            assert!(err.to_string().contains("base64"), "{address}: {err}");
        }
        let err = Authorization::from_json(
            r#"{"groups":[{"rules":[{"matches":[{"source_ips":[{"address":4}]}]}]}]}"#,
        );
        assert!(err.is_err());
    }

    #[test]
    fn base64_in_either_alphabet_with_or_without_padding() {
        let v6 = ip("fd00::1");
        for text in [
            "/QAAAAAAAAAAAAAAAAAAAQ==",
            "/QAAAAAAAAAAAAAAAAAAAQ",
            "_QAAAAAAAAAAAAAAAAAAAQ",
        ] {
            let doc = format!(r#"{{"address":"{text}","length":128}}"#);
            let a: Address = serde_json::from_str(&doc).unwrap();
            assert_eq!(a.cidr().unwrap(), Cidr::new(v6, 128).unwrap(), "{text}");
        }
        assert_eq!(
            base64_bytes::decode("-__-").unwrap(),
            vec![0xfb, 0xff, 0xfe]
        );
        assert_eq!(
            base64_bytes::decode("+//+").unwrap(),
            vec![0xfb, 0xff, 0xfe]
        );
    }

    #[test]
    fn base64_round_trips_every_tail_length() {
        let data: Vec<u8> = (0u8..=255).rev().collect();
        for len in 0..=7 {
            let bytes = &data[..len];
            let text = base64_bytes::encode(bytes);
            assert_eq!(text.len() % 4, 0);
            assert_eq!(base64_bytes::decode(&text).unwrap(), bytes, "{text}");
        }
        assert_eq!(base64_bytes::encode(&[10, 1, 2, 3]), "CgECAw==");
    }

    // ---- what ztunnel drops or bends --------------------------------------------------------

    #[test]
    fn an_address_of_the_wrong_length_is_dropped() {
        let bad = Address {
            address: vec![10, 0, 0],
            length: 24,
        };
        assert!(matches!(
            bad.cidr(),
            Err(AuthorizationError::AddressLength(3))
        ));
        // Dropped from a list that keeps another constraint: the list is empty, so unconstrained.
        let m = Match {
            source_ips: vec![bad.clone()],
            destination_ports: vec![8080],
            ..Default::default()
        };
        assert!(matches_single(
            m.clone(),
            &from_worker().clone_with_port(8080)
        ));
        // The only constraint: the match is empty, so it never matches.
        let only = Match {
            source_ips: vec![bad],
            ..Default::default()
        };
        assert!(!matches_single(only.clone(), &from_frontend()));
        let err = allow("p", single(only)).validate().unwrap_err();
        assert!(matches!(err, AuthorizationError::AddressLength(3)), "{err}");
    }

    #[test]
    fn a_prefix_longer_than_the_address_is_dropped() {
        let too_long = Address::new(ip("10.1.0.5"), 33);
        assert!(matches!(
            too_long.cidr(),
            Err(AuthorizationError::PrefixLength { max: 32, .. })
        ));
        let m = Match {
            not_source_ips: vec![too_long],
            ..Default::default()
        };
        assert!(!matches_single(m.clone(), &from_frontend()));
        assert!(allow("p", single(m)).validate().is_err());
        let v6 = Address::new(ip("fd00::"), 129);
        assert!(v6.cidr().is_err());
    }

    #[test]
    fn a_prefix_length_is_read_modulo_256() {
        // 256 + 8 is read as 8 by ztunnel; validate says it was not written so.
        let wrapped = Address::new(ip("10.0.0.0"), 264);
        assert_eq!(
            wrapped.cidr().unwrap(),
            Cidr::new(ip("10.0.0.0"), 8).unwrap()
        );
        let m = Match {
            source_ips: vec![wrapped],
            ..Default::default()
        };
        assert!(matches_single(m.clone(), &from_frontend()));
        assert!(matches!(
            allow("p", single(m)).validate(),
            Err(AuthorizationError::PrefixLength { length: 264, .. })
        ));
    }

    #[test]
    fn ports_are_truncated_to_16_bits() {
        let m = Match {
            destination_ports: vec![65536 + 8080],
            ..Default::default()
        };
        assert!(matches_single(m.clone(), &from_frontend()));
        assert!(matches!(
            allow("p", single(m)).validate(),
            Err(AuthorizationError::PortRange(73616))
        ));
    }

    #[test]
    fn an_unset_string_match_is_dropped() {
        let unset = StringMatch::default();
        // Alone it leaves the match empty...
        let m = Match {
            principals: vec![unset.clone()],
            ..Default::default()
        };
        assert!(!matches_single(m.clone(), &from_frontend()));
        assert!(matches!(
            allow("p", single(m)).validate(),
            Err(AuthorizationError::UnsetStringMatch)
        ));
        // ...beside a set one it is not an option.
        let m = Match {
            namespaces: vec![unset, StringMatch::exact("billing")],
            ..Default::default()
        };
        assert!(!matches_single(m.clone(), &from_frontend()));
        assert!(matches_single(m, &from_worker()));
    }

    impl Request {
        fn clone_with_port(&self, port: u16) -> Request {
            Request {
                destination_port: port,
                ..self.clone()
            }
        }
    }

    // ---- structure ----------------------------------------------------------------------------

    #[test]
    fn no_groups_never_matches() {
        for p in [allow("p", vec![]), deny("p", vec![])] {
            for r in [from_frontend(), from_worker(), plaintext()] {
                assert!(!policy_matches(&p, &r));
            }
        }
    }

    #[test]
    fn a_group_without_rules_matches_everything() {
        let p = allow("p", vec![Group::default()]);
        for r in [from_frontend(), from_worker(), plaintext()] {
            assert!(policy_matches(&p, &r));
        }
    }

    #[test]
    fn a_rule_without_matches_matches_everything() {
        let p = allow("p", vec![group(vec![vec![]])]);
        for r in [from_frontend(), from_worker(), plaintext()] {
            assert!(policy_matches(&p, &r));
        }
    }

    #[test]
    fn an_empty_match_never_matches() {
        for r in [from_frontend(), from_worker(), plaintext()] {
            assert!(!matches_single(Match::default(), &r));
        }
        // Beside another match it is just no option.
        let p = allow(
            "p",
            vec![group(vec![vec![Match::default(), ns(exact("shop"))]])],
        );
        assert!(policy_matches(&p, &from_frontend()));
        assert!(!policy_matches(&p, &from_worker()));
    }

    #[test]
    fn groups_are_ored() {
        let p = allow(
            "p",
            vec![
                group(vec![vec![ns(exact("shop"))]]),
                group(vec![vec![ns(exact("billing"))]]),
            ],
        );
        assert!(policy_matches(&p, &from_frontend()));
        assert!(policy_matches(&p, &from_worker()));
        assert!(!policy_matches(&p, &plaintext()));
    }

    #[test]
    fn rules_of_a_group_are_anded() {
        let port_8080 = Match {
            destination_ports: vec![8080],
            ..Default::default()
        };
        let p = allow(
            "p",
            vec![group(vec![
                vec![ns(exact("shop")), ns(exact("billing"))],
                vec![port_8080],
            ])],
        );
        assert!(policy_matches(&p, &from_frontend()));
        // billing is allowed by the first rule, but 9090 fails the second.
        assert!(!policy_matches(&p, &from_worker()));
        assert!(policy_matches(&p, &from_worker().clone_with_port(8080)));
    }

    #[test]
    fn matches_of_a_rule_are_ored() {
        let p = allow(
            "p",
            vec![group(vec![vec![ns(exact("shop")), ns(exact("billing"))]])],
        );
        assert!(policy_matches(&p, &from_frontend()));
        assert!(policy_matches(&p, &from_worker()));
        assert!(!policy_matches(&p, &plaintext()));
    }

    #[test]
    fn fields_of_a_match_are_anded() {
        let m = Match {
            namespaces: vec![StringMatch::exact("shop")],
            destination_ports: vec![9090],
            ..Default::default()
        };
        assert!(!matches_single(m.clone(), &from_frontend()));
        assert!(!matches_single(m.clone(), &from_worker()));
        assert!(matches_single(m, &from_frontend().clone_with_port(9090)));
    }

    #[test]
    fn a_field_with_both_lists_needs_both() {
        let m = Match {
            namespaces: vec![StringMatch::suffix("ing"), StringMatch::exact("shop")],
            not_namespaces: vec![StringMatch::exact("billing")],
            ..Default::default()
        };
        assert!(matches_single(m.clone(), &from_frontend()));
        assert!(!matches_single(m.clone(), &from_worker()));
        let shipping = Identity::new("cluster.local", "shipping", "x");
        assert!(matches_single(
            m,
            &request(Some(shipping), "10.0.0.1", "10.0.0.2", 1)
        ));
    }

    // ---- each field -----------------------------------------------------------------------------

    #[test]
    fn namespaces() {
        let m = ns(exact("shop"));
        assert!(matches_single(m.clone(), &from_frontend()));
        assert!(!matches_single(m.clone(), &from_worker()));
        assert!(!matches_single(m, &plaintext()));
    }

    #[test]
    fn not_namespaces() {
        let m = Match {
            not_namespaces: vec![StringMatch::exact("shop")],
            ..Default::default()
        };
        assert!(!matches_single(m.clone(), &from_frontend()));
        assert!(matches_single(m.clone(), &from_worker()));
        assert!(matches_single(m, &plaintext()));
    }

    #[test]
    fn plaintext_has_the_empty_namespace() {
        // ztunnel compares "" for a source without identity.
        assert!(matches_single(ns(exact("")), &plaintext()));
        assert!(matches_single(
            ns(MatchType::Prefix(String::new())),
            &plaintext()
        ));
        assert!(!matches_single(ns(MatchType::Presence), &plaintext()));
        assert!(matches_single(ns(MatchType::Presence), &from_frontend()));
        let not_present = Match {
            not_namespaces: vec![StringMatch::presence()],
            ..Default::default()
        };
        assert!(matches_single(not_present.clone(), &plaintext()));
        assert!(!matches_single(not_present, &from_frontend()));
    }

    #[test]
    fn service_accounts() {
        let m = Match {
            service_accounts: vec![sa("shop", "frontend")],
            ..Default::default()
        };
        assert!(matches_single(m.clone(), &from_frontend()));
        assert!(!matches_single(m.clone(), &from_worker()));
        assert!(!matches_single(m.clone(), &plaintext()));
        // Account and namespace must both agree; the trust domain is not compared.
        let other_td = Identity::new("elsewhere", "shop", "frontend");
        assert!(matches_single(
            m.clone(),
            &request(Some(other_td), "10.0.0.1", "10.0.0.2", 1)
        ));
        let other_ns = Identity::new("cluster.local", "billing", "frontend");
        assert!(!matches_single(
            m,
            &request(Some(other_ns), "10.0.0.1", "10.0.0.2", 1)
        ));
    }

    #[test]
    fn not_service_accounts() {
        let m = Match {
            not_service_accounts: vec![sa("shop", "frontend")],
            ..Default::default()
        };
        assert!(!matches_single(m.clone(), &from_frontend()));
        assert!(matches_single(m.clone(), &from_worker()));
        assert!(matches_single(m, &plaintext()));
    }

    fn principals(list: Vec<StringMatch>) -> Match {
        Match {
            principals: list,
            ..Default::default()
        }
    }

    #[test]
    fn principals_exact() {
        let m = principals(vec![StringMatch::exact(
            "cluster.local/ns/shop/sa/frontend",
        )]);
        assert!(matches_single(m.clone(), &from_frontend()));
        assert!(!matches_single(m.clone(), &from_worker()));
        assert!(!matches_single(m, &plaintext()));
    }

    #[test]
    fn not_principals() {
        let m = Match {
            not_principals: vec![StringMatch::exact("cluster.local/ns/shop/sa/frontend")],
            ..Default::default()
        };
        assert!(!matches_single(m.clone(), &from_frontend()));
        assert!(matches_single(m.clone(), &from_worker()));
        assert!(matches_single(m, &plaintext()));
    }

    #[test]
    fn principals_are_compared_without_the_spiffe_scheme() {
        let with_scheme = principals(vec![StringMatch::exact(
            "spiffe://cluster.local/ns/shop/sa/frontend",
        )]);
        assert!(!matches_single(with_scheme, &from_frontend()));
        let scheme_prefix = principals(vec![StringMatch::prefix("spiffe://")]);
        assert!(!matches_single(scheme_prefix, &from_frontend()));
        let td_prefix = principals(vec![StringMatch::prefix("cluster.local/")]);
        assert!(matches_single(td_prefix.clone(), &from_frontend()));
        assert!(!matches_single(td_prefix, &from_worker()));
    }

    #[test]
    fn principals_prefix_suffix_presence() {
        let suffix = principals(vec![StringMatch::suffix("/sa/worker")]);
        assert!(matches_single(suffix.clone(), &from_worker()));
        assert!(!matches_single(suffix, &from_frontend()));
        let presence = principals(vec![StringMatch::presence()]);
        assert!(matches_single(presence.clone(), &from_frontend()));
        assert!(matches_single(presence.clone(), &from_worker()));
        assert!(!matches_single(presence, &plaintext()));
    }

    #[test]
    fn plaintext_matches_no_principal_at_all() {
        for m in [
            StringMatch::prefix(""),
            StringMatch::suffix(""),
            StringMatch::exact(""),
            StringMatch::presence(),
        ] {
            assert!(
                !matches_single(principals(vec![m.clone()]), &plaintext()),
                "{m:?}"
            );
            let negative = Match {
                not_principals: vec![m.clone()],
                ..Default::default()
            };
            assert!(matches_single(negative, &plaintext()), "{m:?}");
        }
    }

    #[test]
    fn source_ips() {
        let m = Match {
            source_ips: vec![cidr("10.1.0.5/32")],
            ..Default::default()
        };
        assert!(matches_single(m.clone(), &from_frontend()));
        assert!(matches_single(m.clone(), &plaintext()));
        assert!(!matches_single(m, &from_worker()));
    }

    #[test]
    fn not_source_ips() {
        let m = Match {
            not_source_ips: vec![cidr("10.1.0.5/32")],
            ..Default::default()
        };
        assert!(!matches_single(m.clone(), &from_frontend()));
        assert!(!matches_single(m.clone(), &plaintext()));
        assert!(matches_single(m, &from_worker()));
    }

    #[test]
    fn destination_ips() {
        let m = Match {
            destination_ips: vec![cidr("10.2.0.9/32")],
            ..Default::default()
        };
        assert!(matches_single(m.clone(), &from_frontend()));
        assert!(!matches_single(m, &from_worker()));
    }

    #[test]
    fn not_destination_ips() {
        let m = Match {
            not_destination_ips: vec![cidr("10.2.0.9/32")],
            ..Default::default()
        };
        assert!(!matches_single(m.clone(), &from_frontend()));
        assert!(matches_single(m, &from_worker()));
    }

    #[test]
    fn destination_ports() {
        let m = Match {
            destination_ports: vec![8080, 443],
            ..Default::default()
        };
        assert!(matches_single(m.clone(), &from_frontend()));
        assert!(!matches_single(m, &from_worker()));
    }

    #[test]
    fn not_destination_ports() {
        let m = Match {
            not_destination_ports: vec![8080],
            ..Default::default()
        };
        assert!(!matches_single(m.clone(), &from_frontend()));
        assert!(matches_single(m, &from_worker()));
    }

    // ---- CIDRs and strings --------------------------------------------------------------------

    fn contains(net: &str, addr: &str) -> bool {
        cidr(net).cidr().unwrap().contains(ip(addr))
    }

    #[test]
    fn ipv4_ranges() {
        assert!(contains("10.2.0.0/16", "10.2.255.1"));
        assert!(!contains("10.2.0.0/16", "10.3.0.1"));
        assert!(contains("10.2.0.9/32", "10.2.0.9"));
        assert!(!contains("10.2.0.9/32", "10.2.0.8"));
        assert!(contains("10.2.0.0/31", "10.2.0.1"));
        assert!(!contains("10.2.0.0/31", "10.2.0.2"));
        // Host bits of the network are ignored.
        assert!(contains("10.2.3.4/8", "10.200.0.1"));
    }

    #[test]
    fn ipv6_ranges() {
        assert!(contains("2001:db8::/32", "2001:db8:ffff::1"));
        assert!(!contains("2001:db8::/32", "2001:db9::1"));
        assert!(contains("fd00::1/128", "fd00::1"));
        assert!(!contains("fd00::1/128", "fd00::2"));
        assert!(contains("fd00:1:2:3:4::/64", "fd00:1:2:3::9"));
    }

    #[test]
    fn slash_zero_is_the_whole_family() {
        assert!(contains("0.0.0.0/0", "203.0.113.7"));
        assert!(contains("10.9.9.9/0", "1.2.3.4"));
        assert!(!contains("0.0.0.0/0", "::1"));
        assert!(contains("::/0", "2001:db8::1"));
        assert!(!contains("::/0", "10.0.0.1"));
    }

    #[test]
    fn families_never_mix() {
        // ztunnel does not unmap IPv4-mapped IPv6 inside the matcher.
        assert!(!contains("10.0.0.0/8", "::ffff:10.0.0.1"));
        assert!(!contains("::ffff:10.0.0.0/104", "10.0.0.1"));
        let m = Match {
            source_ips: vec![cidr("10.0.0.0/8")],
            ..Default::default()
        };
        assert!(!matches_single(
            m,
            &request(None, "fd00::5", "10.2.0.9", 8080)
        ));
    }

    #[test]
    fn string_match_forms() {
        let cases = [
            (MatchType::Exact("shop".into()), "shop", true),
            (MatchType::Exact("shop".into()), "shopping", false),
            (MatchType::Exact("shop".into()), "Shop", false),
            (MatchType::Exact("shop".into()), "", false),
            (MatchType::Prefix("team-".into()), "team-a", true),
            (MatchType::Prefix("team-".into()), "a-team-", false),
            (MatchType::Prefix("team-".into()), "", false),
            (MatchType::Prefix(String::new()), "", true),
            (MatchType::Suffix("-prod".into()), "web-prod", true),
            (MatchType::Suffix("-prod".into()), "prod-web", false),
            (MatchType::Suffix("-prod".into()), "", false),
            (MatchType::Presence, "x", true),
            (MatchType::Presence, "", false),
        ];
        for (m, value, expected) in cases {
            assert_eq!(m.matches(value), expected, "{m:?} on {value:?}");
        }
    }

    // ---- deciding -------------------------------------------------------------------------------

    fn from_shop() -> Vec<Group> {
        single(ns(exact("shop")))
    }

    #[test]
    fn no_policies_allow() {
        let none: [Authorization; 0] = [];
        let verdict = evaluate(&none, &from_frontend());
        assert_eq!(
            verdict,
            verdict_of(Decision::Allow, Reason::NoAllowPolicies)
        );
        assert_eq!(decide(&none, &plaintext()), Decision::Allow);
    }

    fn verdict_of(decision: Decision, reason: Reason) -> Verdict {
        Verdict { decision, reason }
    }

    #[test]
    fn deny_wins_over_a_matching_allow() {
        let policies = [
            allow("allow-shop", from_shop()),
            deny("deny-shop", from_shop()),
        ];
        assert_eq!(
            evaluate(&policies, &from_frontend()),
            verdict_of(Decision::Deny, Reason::DeniedBy("shop/deny-shop".into()))
        );
    }

    #[test]
    fn a_deny_that_does_not_match_leaves_the_default() {
        let policies = [deny("deny-shop", from_shop())];
        assert_eq!(decide(&policies, &from_worker()), Decision::Allow);
        assert_eq!(decide(&policies, &from_frontend()), Decision::Deny);
    }

    #[test]
    fn allow_policies_that_do_not_match_deny() {
        let policies = [allow("allow-shop", from_shop())];
        assert_eq!(
            evaluate(&policies, &from_worker()),
            verdict_of(Decision::Deny, Reason::NoAllowMatched)
        );
        assert_eq!(
            evaluate(&policies, &from_frontend()),
            verdict_of(Decision::Allow, Reason::AllowedBy("shop/allow-shop".into()))
        );
    }

    #[test]
    fn one_matching_allow_suffices() {
        let from_billing = single(ns(exact("billing")));
        let policies = [
            allow("allow-shop", from_shop()),
            allow("allow-billing", from_billing),
        ];
        assert_eq!(
            evaluate(&policies, &from_worker()).reason,
            Reason::AllowedBy("shop/allow-billing".into())
        );
        assert_eq!(decide(&policies, &plaintext()), Decision::Deny);
    }

    #[test]
    fn an_allow_without_groups_allows_nothing() {
        // `spec: {}` becomes an ALLOW with no groups: it applies and never matches.
        let policies = [allow("allow-nothing", vec![])];
        for r in [from_frontend(), from_worker(), plaintext()] {
            assert_eq!(decide(&policies, &r), Decision::Deny);
        }
    }

    #[test]
    fn a_deny_of_everything_denies_everything() {
        // `action: DENY, rules: [{}]` becomes one group with no rules.
        let policies = [
            deny("deny-all", vec![Group::default()]),
            allow("allow-shop", from_shop()),
        ];
        assert_eq!(decide(&policies, &from_frontend()), Decision::Deny);
    }

    #[test]
    fn strict_mtls_policy_denies_plaintext_only() {
        // istiod's static STRICT policy: DENY whatever has no principal.
        let strict = Authorization {
            name: "istio_converted_static_strict".into(),
            namespace: "istio-system".into(),
            scope: Scope::WorkloadSelector,
            action: Action::Deny,
            groups: single(Match {
                not_principals: vec![StringMatch::presence()],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(decide([&strict], &plaintext()), Decision::Deny);
        assert_eq!(decide([&strict], &from_frontend()), Decision::Allow);
    }

    #[test]
    fn a_dry_run_deny_is_not_enforced() {
        let mut dry = deny("deny-shop", from_shop());
        dry.dry_run = true;
        assert_eq!(decide([&dry], &from_frontend()), Decision::Allow);
    }

    #[test]
    fn a_dry_run_allow_does_not_count_as_an_allow_policy() {
        let mut dry = allow("allow-shop", from_shop());
        dry.dry_run = true;
        assert_eq!(
            evaluate([&dry], &from_worker()),
            verdict_of(Decision::Allow, Reason::NoAllowPolicies)
        );
        // Nor does its match allow what an enforced ALLOW refuses.
        let billing_only = allow("allow-billing", single(ns(exact("billing"))));
        assert_eq!(
            decide([&dry, &billing_only], &from_frontend()),
            Decision::Deny
        );
        let mut dry_nothing = allow("allow-nothing", vec![]);
        dry_nothing.dry_run = true;
        assert_eq!(decide([&dry_nothing], &from_frontend()), Decision::Allow);
    }

    #[test]
    fn a_dry_run_policy_is_parsed_and_skipped() {
        let p = Authorization::from_json(
            r#"{"name":"deny-all","namespace":"shop","scope":"NAMESPACE","action":"DENY","groups":[{}],"dry_run":true}"#,
        )
        .unwrap();
        assert!(policy_matches(&p, &from_frontend()));
        assert_eq!(decide([&p], &from_frontend()), Decision::Allow);
    }

    // ---- applicability --------------------------------------------------------------------------

    #[test]
    fn global_policies_apply_everywhere() {
        let mut p = allow("mesh", vec![]);
        p.namespace = "istio-system".into();
        p.scope = Scope::Global;
        let none: [&str; 0] = [];
        assert!(applies_to(&p, "shop", &none));
        assert!(applies_to(&p, "istio-system", &none));
    }

    #[test]
    fn namespace_policies_apply_to_their_namespace() {
        let p = allow("ns-wide", vec![]);
        let none: [&str; 0] = [];
        assert!(applies_to(&p, "shop", &none));
        assert!(!applies_to(&p, "billing", &none));
    }

    #[test]
    fn selector_policies_apply_when_the_workload_lists_them() {
        let mut p = allow("web-only", vec![]);
        p.scope = Scope::WorkloadSelector;
        assert!(applies_to(&p, "shop", &["shop/web-only".to_owned()]));
        assert!(!applies_to(&p, "shop", &["shop/other".to_owned()]));
        let none: [&str; 0] = [];
        assert!(!applies_to(&p, "shop", &none));
        // A root-namespace selector policy applies in any namespace that lists it.
        p.namespace = "istio-system".into();
        assert!(applies_to(&p, "billing", &["istio-system/web-only"]));
    }

    #[test]
    fn a_listed_policy_applies_whatever_its_scope() {
        let p = allow("ns-wide", vec![]);
        assert!(applies_to(&p, "billing", &["shop/ns-wide"]));
    }

    #[test]
    fn applicability_feeds_the_decision() {
        let mut selector = deny("deny-web", from_shop());
        selector.scope = Scope::WorkloadSelector;
        let policies = [selector, allow("allow-shop", from_shop())];
        let decide_for = |listed: &[&str]| {
            let applicable = policies.iter().filter(|p| applies_to(p, "shop", listed));
            decide(applicable, &from_frontend())
        };
        assert_eq!(decide_for(&["shop/deny-web"]), Decision::Deny);
        assert_eq!(decide_for(&[]), Decision::Allow);
    }

    // ---- identities -----------------------------------------------------------------------------

    #[test]
    fn spiffe_identities() {
        let id = Identity::from_spiffe_uri("spiffe://cluster.local/ns/shop/sa/frontend").unwrap();
        assert_eq!(id, shop_frontend());
        assert_eq!(id.principal(), "cluster.local/ns/shop/sa/frontend");
        assert_eq!(
            id.spiffe_uri(),
            "spiffe://cluster.local/ns/shop/sa/frontend"
        );
        for bad in [
            "cluster.local/ns/shop/sa/frontend",
            "spiffe://cluster.local/ns/shop/sa/frontend/extra",
            "spiffe://cluster.local/namespace/shop/sa/frontend",
            "spiffe://cluster.local/ns/shop/serviceaccount/frontend",
        ] {
            assert!(Identity::from_spiffe_uri(bad).is_err(), "{bad}");
        }
    }
}
