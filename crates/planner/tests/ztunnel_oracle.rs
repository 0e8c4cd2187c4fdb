//! Property test of meshmig's model of what ztunnel enforces for a selector or namespace-wide
//! AuthorizationPolicy (`meshmig_planner::authz`), with Istio's own code as the judge.
//!
//! A seeded generator writes a few thousand AuthorizationPolicies that cover every `source`
//! and `operation` field and their not-forms, every `when` key meshmig knows, all four
//! actions, the dry-run annotation, and the shapes that matter to the conversion (L4 and L7 in
//! one block and in sibling blocks, several rules and blocks, `rules: [{}]`, no rules). Istio
//! validates them (invalid ones are regenerated, and counted), then istiod's own conversion
//! (`meshmig-istio`, through `meshmig-istio-oracle`) turns each policy, and each of its rules
//! as a one-rule policy, into the `Authorization` it sends to ztunnel, in one call (a second,
//! small call converts the dry-run policies again with istiod's dry-run flag on). On a grid
//! of requests (callers × destination ports × source IPs × destination IPs, varying only the
//! dimensions a policy looks at, plus the witness requests meshmig names for its effects) the
//! test compares:
//!
//! - **structure**: whether an Authorization is sent, its action and `dry_run`;
//! - **match**: meshmig's `ZtunnelView::matches` against the ztunnel matcher on istiod's
//!   Authorization, per policy and per rule;
//! - **decision**: meshmig's allow/deny over one policy and over chunks of policies against
//!   the matcher's `decide`;
//! - **effects**: the `ZtunnelEffect`s meshmig claims, per policy and per rule, against the
//!   effects derived from Istio's conversion (see [`derive_effects`]);
//! - **risks**: `ztunnel_fail_open`/`ztunnel_fail_closed` against the directions derived the
//!   same way (see [`derive_risk`]).
//!
//! The sidecar's side of an effect (what the policy means when enforced in full) is this
//! file's own evaluator ([`RefPolicy`]): L4 attributes (and trust domains) are evaluated, HTTP
//! attributes are unknown at L4 (some HTTP request satisfies them, another does not).
//!
//! `MESHMIG_AUTHZ_SEED` and `MESHMIG_AUTHZ_POLICIES` override the seed and the policy count;
//! `MESHMIG_AUTHZ_DEBUG` prints Istio's reasons for the invalid policies it regenerates.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Instant;

use meshmig_api::istio::AuthorizationPolicy;
use meshmig_istio_oracle::oracle::{Oracle, ZtunnelOptions};
use meshmig_istio_oracle::ztunnel::{
    self as zt, Authorization, Cidr, Decision, Identity, MatchType, Request,
};
use meshmig_planner::authz;
use serde_json::{Value, json};

const DEFAULT_SEED: u64 = 0x6d65_7368_6d69_6721;
const DEFAULT_POLICIES: usize = 2400;
const MAX_PRINTED: usize = 20;
const ROOT_NS: &str = "istio-system";

// =============================================================================================
// Seeded generator
// =============================================================================================

/// xorshift64* (deterministic, no dependency).
struct Rng(u64);

impl Rng {
    /// The state is the seed mixed by splitmix64 (never zero, distinct seeds apart).
    fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

/// How often each field, key, action and shape was generated (valid policies only).
#[derive(Default)]
struct Coverage(BTreeMap<String, usize>);

impl Coverage {
    fn add(&mut self, what: impl Into<String>) {
        *self.0.entry(what.into()).or_default() += 1;
    }

    fn merge(&mut self, other: Coverage) {
        for (k, v) in other.0 {
            *self.0.entry(k).or_default() += v;
        }
    }

    fn get(&self, what: &str) -> usize {
        self.0.get(what).copied().unwrap_or(0)
    }
}

const TDS: &[&str] = &["cluster.local", "corp.example"];
const NSS: &[&str] = &["shop", "billing", "ops"];
const SAS: &[&str] = &["frontend", "worker", "api"];
const SRC_IPS: &[&str] = &[
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.3",
    "10.1.2.0/24",
    "10.1.2.3/16",
    "192.168.0.0/24",
    "0.0.0.0/0",
    "2001:db8::/32",
    "2001:db8::5",
    "fd00::/8",
    "::/0",
];
const DST_IPS: &[&str] = &[
    "10.2.0.9",
    "10.2.0.0/16",
    "10.0.0.0/8",
    "2001:db8:1::1",
    "fd00::/16",
];
const PORTS: &[&str] = &["80", "8080", "9090", "443", "080"];
const TRUST_DOMAINS: &[&str] = &["cluster.local", "corp.example", "corp.*", "*.local", "*"];

/// What kind of values a field takes.
#[derive(Clone, Copy)]
enum Gen {
    Principal,
    Namespace,
    ServiceAccount,
    SrcIp,
    DstIp,
    Port,
    TrustDomain,
    L7(&'static [&'static str]),
}

/// A generated field: name, values, and whether ztunnel can enforce it.
struct FieldSpec {
    name: &'static str,
    kind: Gen,
    l4: bool,
}

const fn field(name: &'static str, kind: Gen, l4: bool) -> FieldSpec {
    FieldSpec { name, kind, l4 }
}

const SOURCE_FIELDS: &[FieldSpec] = &[
    field("principals", Gen::Principal, true),
    field("notPrincipals", Gen::Principal, true),
    field("namespaces", Gen::Namespace, true),
    field("notNamespaces", Gen::Namespace, true),
    field("serviceAccounts", Gen::ServiceAccount, true),
    field("notServiceAccounts", Gen::ServiceAccount, true),
    field("ipBlocks", Gen::SrcIp, true),
    field("notIpBlocks", Gen::SrcIp, true),
    field("trustDomains", Gen::TrustDomain, false),
    field("notTrustDomains", Gen::TrustDomain, false),
    field(
        "requestPrincipals",
        Gen::L7(&["iss/sub", "*", "iss/*"]),
        false,
    ),
    field("notRequestPrincipals", Gen::L7(&["iss/sub", "*"]), false),
    field("remoteIpBlocks", Gen::L7(&["1.2.3.4", "10.0.0.0/8"]), false),
    field("notRemoteIpBlocks", Gen::L7(&["1.2.3.4"]), false),
];

const OPERATION_FIELDS: &[FieldSpec] = &[
    field("ports", Gen::Port, true),
    field("notPorts", Gen::Port, true),
    field("hosts", Gen::L7(&["a.example", "*.example"]), false),
    field("notHosts", Gen::L7(&["b.example"]), false),
    field("methods", Gen::L7(&["GET", "POST"]), false),
    field("notMethods", Gen::L7(&["DELETE"]), false),
    field("paths", Gen::L7(&["/admin*", "/api", "*/x"]), false),
    field("notPaths", Gen::L7(&["/healthz"]), false),
];

const WHEN_KEYS: &[FieldSpec] = &[
    field("source.ip", Gen::SrcIp, true),
    field("source.namespace", Gen::Namespace, true),
    field("source.principal", Gen::Principal, true),
    field("destination.ip", Gen::DstIp, true),
    field("destination.port", Gen::Port, true),
    field("request.headers[x-token]", Gen::L7(&["a", "b*"]), false),
    field("request.auth.principal", Gen::L7(&["iss/sub"]), false),
    field("request.auth.claims[groups]", Gen::L7(&["admin"]), false),
    field("request.auth.audiences", Gen::L7(&["aud"]), false),
    field("request.auth.presenter", Gen::L7(&["pres"]), false),
    field("remote.ip", Gen::L7(&["1.2.3.4", "10.0.0.0/8"]), false),
    field("connection.sni", Gen::L7(&["a.example"]), false),
    field(
        "experimental.envoy.filters.network.mysql_proxy[db.table]",
        Gen::L7(&["t"]),
        false,
    ),
];

/// Istio rejects serviceAccounts beside namespaces or principals in one source.
fn conflicts(a: &FieldSpec, b: &FieldSpec) -> bool {
    let sa = |f: &FieldSpec| matches!(f.kind, Gen::ServiceAccount);
    let id = |f: &FieldSpec| matches!(f.kind, Gen::Principal | Gen::Namespace);
    (sa(a) && id(b)) || (id(a) && sa(b))
}

/// How a rule mixes attributes.
#[derive(Clone, Copy, PartialEq)]
enum Mix {
    L4,
    L7,
    Mixed,
    TrustDomain,
}

struct Generator<'a> {
    rng: &'a mut Rng,
    cov: Coverage,
}

impl Generator<'_> {
    fn principal(&mut self) -> String {
        let (td, ns, sa) = (
            *self.rng.pick(TDS),
            *self.rng.pick(NSS),
            *self.rng.pick(SAS),
        );
        let (form, v) = match self.rng.below(10) {
            0..=3 => ("exact", format!("{td}/ns/{ns}/sa/{sa}")),
            4 => ("*", "*".to_string()),
            5 | 6 => {
                let choices = [
                    format!("{td}/ns/{ns}/*"),
                    format!("{td}/*"),
                    "cluster.local/ns/sh*".to_string(),
                    "corp*".to_string(),
                ];
                ("prefix", self.rng.pick(&choices).clone())
            }
            _ => {
                let choices = [
                    format!("*/sa/{sa}"),
                    format!("*/ns/{ns}/sa/{sa}"),
                    "*worker".to_string(),
                    "*/ns/ops/sa/*".to_string(),
                ];
                ("suffix", self.rng.pick(&choices).clone())
            }
        };
        self.cov.add(format!("value principal {form}"));
        v
    }

    fn namespace(&mut self) -> String {
        let choices = ["shop", "billing", "ops", "sh*", "*ing", "*", "bill*"];
        self.rng.pick(&choices).to_string()
    }

    fn service_account(&mut self) -> String {
        let (ns, sa) = (*self.rng.pick(NSS), *self.rng.pick(SAS));
        if self.rng.chance(50) {
            self.cov.add("value serviceAccount bare");
            sa.to_string()
        } else {
            self.cov.add("value serviceAccount ns/sa");
            format!("{ns}/{sa}")
        }
    }

    fn value(&mut self, kind: Gen) -> String {
        match kind {
            Gen::Principal => self.principal(),
            Gen::Namespace => self.namespace(),
            Gen::ServiceAccount => self.service_account(),
            Gen::SrcIp => {
                let v = self.rng.pick(SRC_IPS).to_string();
                self.cov.add(if v.contains(':') {
                    "value ip v6"
                } else {
                    "value ip v4"
                });
                v
            }
            Gen::DstIp => self.rng.pick(DST_IPS).to_string(),
            Gen::Port => self.rng.pick(PORTS).to_string(),
            Gen::TrustDomain => self.rng.pick(TRUST_DOMAINS).to_string(),
            Gen::L7(values) => self.rng.pick(values).to_string(),
        }
    }

    fn values(&mut self, kind: Gen) -> Value {
        let n = 1 + self.rng.below(2);
        Value::from((0..n).map(|_| self.value(kind)).collect::<Vec<_>>())
    }

    fn pick_fields<'f>(&mut self, fields: &'f [FieldSpec], mix: Mix) -> Vec<&'f FieldSpec> {
        let n = 1 + self.rng.below(3);
        let mut out: Vec<&FieldSpec> = Vec::new();
        if mix == Mix::TrustDomain
            && let Some(td) = fields.iter().find(|f| matches!(f.kind, Gen::TrustDomain))
        {
            out.push(td);
        }
        let start = self.rng.below(fields.len());
        let mut order: Vec<&FieldSpec> = fields
            .iter()
            .cycle()
            .skip(start)
            .take(fields.len())
            .collect();
        // A random order, but the first fitting field always comes (no empty block).
        for i in (1..order.len()).rev() {
            order.swap(i, self.rng.below(i + 1));
        }
        for f in order {
            if out.len() >= n {
                break;
            }
            let is_td = matches!(f.kind, Gen::TrustDomain);
            let fits = match mix {
                Mix::L4 => f.l4,
                Mix::L7 => !f.l4 && !is_td,
                Mix::Mixed | Mix::TrustDomain => true,
            };
            if fits && !out.iter().any(|o| o.name == f.name || conflicts(o, f)) {
                out.push(f);
            }
        }
        out
    }

    fn block(&mut self, fields: &[FieldSpec], mix: Mix, what: &str) -> Value {
        let mut obj = serde_json::Map::new();
        let picked = self.pick_fields(fields, mix);
        let (l4, l7) = (picked.iter().any(|f| f.l4), picked.iter().any(|f| !f.l4));
        if l4 && l7 {
            self.cov
                .add(format!("shape {what} block with L4 and non-L4"));
        }
        for f in picked {
            self.cov.add(format!("{what}.{}", f.name));
            obj.insert(f.name.to_string(), self.values(f.kind));
        }
        Value::Object(obj)
    }

    fn condition(&mut self, mix: Mix) -> Value {
        let candidates: Vec<&FieldSpec> = WHEN_KEYS
            .iter()
            .filter(|k| match mix {
                Mix::L4 => k.l4,
                Mix::L7 => !k.l4,
                _ => true,
            })
            .collect();
        let k = *self.rng.pick(&candidates);
        let mut c = json!({"key": k.name});
        let form = self.rng.below(5);
        if form < 3 || form == 4 {
            c["values"] = self.values(k.kind);
        }
        if form >= 3 {
            c["notValues"] = self.values(k.kind);
        }
        let kind = match form {
            0..=2 => "values",
            3 => "notValues",
            _ => "values+notValues",
        };
        self.cov.add(format!("when[{}] {kind}", k.name));
        c
    }

    fn rule(&mut self) -> Value {
        let mix = *self.rng.pick(&[
            Mix::L4,
            Mix::L4,
            Mix::L7,
            Mix::Mixed,
            Mix::Mixed,
            Mix::TrustDomain,
        ]);
        let mut rule = serde_json::Map::new();
        if self.rng.chance(65) {
            let n = 1 + self.rng.below(3);
            let blocks: Vec<Value> = (0..n)
                .map(|_| {
                    let m = self.block_mix(mix);
                    json!({"source": self.block(SOURCE_FIELDS, m, "source")})
                })
                .collect();
            if n > 1 {
                self.cov.add("shape several from blocks");
            }
            rule.insert("from".into(), blocks.into());
        }
        if self.rng.chance(50) {
            let n = 1 + self.rng.below(2);
            let mix = if mix == Mix::TrustDomain {
                Mix::Mixed
            } else {
                mix
            };
            let blocks: Vec<Value> = (0..n)
                .map(|_| {
                    let m = self.block_mix(mix);
                    json!({"operation": self.block(OPERATION_FIELDS, m, "operation")})
                })
                .collect();
            if n > 1 {
                self.cov.add("shape several to blocks");
            }
            rule.insert("to".into(), blocks.into());
        }
        if self.rng.chance(40) {
            let n = 1 + self.rng.below(2);
            let mix = if mix == Mix::TrustDomain {
                Mix::Mixed
            } else {
                mix
            };
            let conds: Vec<Value> = (0..n)
                .map(|_| {
                    let m = self.block_mix(mix);
                    self.condition(m)
                })
                .collect();
            rule.insert("when".into(), conds.into());
        }
        if rule.is_empty() {
            self.cov.add("shape empty rule among others");
        }
        Value::Object(rule)
    }

    /// Mixed rules also get pure blocks, so L4 and L7 meet in sibling blocks too.
    fn block_mix(&mut self, mix: Mix) -> Mix {
        match mix {
            Mix::Mixed => *self.rng.pick(&[Mix::L4, Mix::L7, Mix::Mixed]),
            other => other,
        }
    }

    fn spec(&mut self) -> Value {
        let mut spec = serde_json::Map::new();
        let action = match self.rng.below(100) {
            0..=7 => None,
            8..=37 => Some("ALLOW"),
            38..=81 => Some("DENY"),
            82..=90 => Some("AUDIT"),
            _ => Some("CUSTOM"),
        };
        self.cov
            .add(format!("action {}", action.unwrap_or("(absent: ALLOW)")));
        if let Some(a) = action {
            spec.insert("action".into(), a.into());
        }
        if action == Some("CUSTOM") {
            spec.insert("provider".into(), json!({"name": "ext-authz"}));
        }
        if self.rng.chance(50) {
            self.cov.add("shape selector");
            let app = *self.rng.pick(&["api", "web"]);
            spec.insert("selector".into(), json!({"matchLabels": {"app": app}}));
        } else {
            self.cov.add("shape namespace-wide");
        }
        let needs_rules = matches!(action, Some("DENY" | "CUSTOM"));
        match self.rng.below(100) {
            0..=3 if !needs_rules => self.cov.add("shape no rules"),
            4..=6 if !needs_rules => {
                self.cov.add("shape rules: []");
                spec.insert("rules".into(), json!([]));
            }
            7..=11 => {
                self.cov.add("shape rules: [{}]");
                spec.insert("rules".into(), json!([{}]));
            }
            _ => {
                let n = *self.rng.pick(&[1, 1, 1, 2, 2, 3]);
                if n > 1 {
                    self.cov.add("shape several rules");
                }
                let rules: Vec<Value> = (0..n).map(|_| self.rule()).collect();
                spec.insert("rules".into(), rules.into());
            }
        }
        Value::Object(spec)
    }

    fn policy(&mut self, name: &str) -> Value {
        let ns = *self.rng.pick(&["shop", "shop", "shop", "billing", ROOT_NS]);
        let mut meta = json!({"name": name, "namespace": ns});
        if self.rng.chance(12) {
            let v = *self.rng.pick(&["true", "true", "True", "1", "false"]);
            self.cov.add(format!("annotation istio.io/dry-run={v}"));
            meta["annotations"] = json!({"istio.io/dry-run": v});
        }
        json!({
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": meta,
            "spec": self.spec(),
        })
    }
}

/// The policy reduced to its rule `j`, under its own name.
fn one_rule_policy(p: &Value, j: usize) -> Value {
    let mut q = p.clone();
    let name = format!("{}-r{j}", p["metadata"]["name"].as_str().unwrap());
    q["metadata"]["name"] = name.into();
    q["spec"]["rules"] = json!([p["spec"]["rules"][j].clone()]);
    q
}

fn rule_count(p: &Value) -> usize {
    p["spec"]["rules"].as_array().map_or(0, Vec::len)
}

/// A generated policy and its one-rule policies, all valid.
struct Case {
    policy: Value,
    rules: Vec<Value>,
}

/// Generates `count` valid policies: every batch goes through Istio's validation, and invalid
/// policies (or policies with an invalid rule) are replaced by fresh ones.
fn generate(rng: &mut Rng, count: usize, oracle: &Oracle) -> (Vec<Case>, Coverage, usize) {
    let mut cases = Vec::new();
    let mut cov = Coverage::default();
    let mut invalid = 0;
    let mut serial = 0;
    for _round in 0..20 {
        let missing = count - cases.len();
        if missing == 0 {
            break;
        }
        let mut batch = Vec::new();
        let mut covs = Vec::new();
        for _ in 0..missing {
            let mut g = Generator {
                rng,
                cov: Coverage::default(),
            };
            let p = g.policy(&format!("p{serial}"));
            serial += 1;
            let rules = (0..rule_count(&p))
                .map(|j| one_rule_policy(&p, j))
                .collect();
            batch.push(Case { policy: p, rules });
            covs.push(g.cov);
        }
        let objects: Vec<Value> = batch
            .iter()
            .flat_map(|c| std::iter::once(&c.policy).chain(&c.rules))
            .cloned()
            .collect();
        let verdicts = oracle.validate(&objects).unwrap();
        if std::env::var_os("MESHMIG_AUTHZ_DEBUG").is_some() {
            for e in verdicts.iter().flat_map(|v| v.errors()) {
                eprintln!("invalid: {e}");
            }
        }
        // The policy's verdict, then one per one-rule policy: all must be valid.
        let mut it = verdicts.iter().map(|v| v.valid() == Some(true));
        for (case, c) in batch.into_iter().zip(covs) {
            let ok: Vec<bool> = it.by_ref().take(case.rules.len() + 1).collect();
            let ok = ok.iter().all(|v| *v);
            if ok {
                cases.push(case);
                cov.merge(c);
            } else {
                invalid += 1;
            }
        }
    }
    assert_eq!(
        cases.len(),
        count,
        "could not generate enough valid policies"
    );
    (cases, cov, invalid)
}

// =============================================================================================
// The sidecar's side: the policy as written, enforced in full (three-valued at L4)
// =============================================================================================

/// Kleene truth value: `Unknown` is "depends on the HTTP request".
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

/// One L4 attribute (or trust domains), positive or negated.
#[derive(Debug)]
enum Pred {
    Principal(Vec<MatchType>),
    Namespace(Vec<MatchType>),
    ServiceAccount(Vec<(String, String)>),
    TrustDomain(Vec<MatchType>),
    SrcIp(Vec<Cidr>),
    DstIp(Vec<Cidr>),
    Port(Vec<u16>),
}

#[derive(Debug)]
struct Lit {
    pred: Pred,
    negated: bool,
}

/// A `from`/`to` block or a `when` condition: its L4 literals, and whether it also holds an
/// attribute L4 cannot see.
#[derive(Debug, Default)]
struct Item {
    lits: Vec<Lit>,
    l7: bool,
}

#[derive(Debug, Default)]
struct RefRule {
    clauses: Vec<Vec<Item>>,
}

#[derive(Debug, Default)]
struct RefPolicy {
    rules: Vec<RefRule>,
}

/// Which request dimensions a policy looks at (the grid varies only those).
#[derive(Clone, Copy, Default)]
struct Dims {
    identity: bool,
    src_ip: bool,
    dst_ip: bool,
    port: bool,
}

fn string_match(v: &str) -> MatchType {
    if v == "*" {
        MatchType::Presence
    } else if let Some(s) = v.strip_prefix('*') {
        MatchType::Suffix(s.into())
    } else if let Some(p) = v.strip_suffix('*') {
        MatchType::Prefix(p.into())
    } else {
        MatchType::Exact(v.into())
    }
}

fn cidr(v: &str) -> Cidr {
    let (addr, len) = match v.split_once('/') {
        Some((a, l)) => (a.parse::<IpAddr>().unwrap(), l.parse::<u8>().unwrap()),
        None => {
            let a: IpAddr = v.parse().unwrap();
            (a, if a.is_ipv4() { 32 } else { 128 })
        }
    };
    Cidr::new(addr, len).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The literal for an L4 field (`None` for anything L4 cannot see).
fn pred(name: &str, values: &[String], ns: &str) -> Option<Pred> {
    let m = || values.iter().map(|v| string_match(v)).collect();
    Some(match name {
        "principals" | "source.principal" => Pred::Principal(m()),
        "namespaces" | "source.namespace" => Pred::Namespace(m()),
        "trustDomains" => Pred::TrustDomain(m()),
        "serviceAccounts" => Pred::ServiceAccount(
            values
                .iter()
                .map(|v| match v.split_once('/') {
                    Some((n, s)) => (n.to_string(), s.to_string()),
                    None => (ns.to_string(), v.clone()),
                })
                .collect(),
        ),
        "ipBlocks" | "source.ip" => Pred::SrcIp(values.iter().map(|v| cidr(v)).collect()),
        "destination.ip" => Pred::DstIp(values.iter().map(|v| cidr(v)).collect()),
        "ports" | "destination.port" => {
            Pred::Port(values.iter().map(|v| v.parse().unwrap()).collect())
        }
        _ => return None,
    })
}

fn note_dims(p: &Pred, d: &mut Dims) {
    match p {
        Pred::Principal(_)
        | Pred::Namespace(_)
        | Pred::ServiceAccount(_)
        | Pred::TrustDomain(_) => d.identity = true,
        Pred::SrcIp(_) => d.src_ip = true,
        Pred::DstIp(_) => d.dst_ip = true,
        Pred::Port(_) => d.port = true,
    }
}

fn block_item(obj: &Value, ns: &str, d: &mut Dims) -> Item {
    let mut item = Item::default();
    for (k, v) in obj.as_object().into_iter().flatten() {
        let values = strings(v);
        if values.is_empty() {
            continue;
        }
        let (negated, base) = match k.strip_prefix("not") {
            Some(rest) => (true, lower_first(rest)),
            None => (false, k.clone()),
        };
        match pred(&base, &values, ns) {
            Some(p) => {
                note_dims(&p, d);
                item.lits.push(Lit { pred: p, negated });
            }
            None => item.l7 = true,
        }
    }
    item
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_lowercase().to_string() + c.as_str())
        .unwrap_or_default()
}

fn condition_item(c: &Value, ns: &str, d: &mut Dims) -> Item {
    let key = c["key"].as_str().unwrap();
    let mut item = Item::default();
    for (field, negated) in [("values", false), ("notValues", true)] {
        let values = strings(&c[field]);
        if values.is_empty() {
            continue;
        }
        match pred(key, &values, ns) {
            Some(p) => {
                note_dims(&p, d);
                item.lits.push(Lit { pred: p, negated });
            }
            None => item.l7 = true,
        }
    }
    if pred(key, &[], ns).is_none() {
        item.l7 = true;
    }
    item
}

fn ref_rule(rule: &Value, ns: &str, d: &mut Dims) -> RefRule {
    let mut clauses = Vec::new();
    for (list, inner) in [("to", "operation"), ("from", "source")] {
        if let Some(blocks) = rule[list].as_array().filter(|b| !b.is_empty()) {
            clauses.push(
                blocks
                    .iter()
                    .map(|b| block_item(&b[inner], ns, d))
                    .collect(),
            );
        }
    }
    for c in rule["when"].as_array().into_iter().flatten() {
        clauses.push(vec![condition_item(c, ns, d)]);
    }
    RefRule { clauses }
}

fn ref_policy(p: &Value) -> (RefPolicy, Dims) {
    let ns = p["metadata"]["namespace"].as_str().unwrap();
    let mut d = Dims::default();
    let rules = p["spec"]["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| ref_rule(r, ns, &mut d))
        .collect();
    (RefPolicy { rules }, d)
}

fn lit_holds(l: &Lit, r: &Request) -> bool {
    let id = r.source.as_ref();
    let hit = match &l.pred {
        Pred::Principal(ms) => ms
            .iter()
            .any(|m| id.is_some_and(|i| m.matches(&i.principal()))),
        Pred::Namespace(ms) => ms
            .iter()
            .any(|m| m.matches(id.map_or("", |i| i.namespace.as_str()))),
        Pred::TrustDomain(ms) => ms
            .iter()
            .any(|m| id.is_some_and(|i| m.matches(&i.trust_domain))),
        Pred::ServiceAccount(sas) => sas
            .iter()
            .any(|(n, s)| id.is_some_and(|i| i.namespace == *n && i.service_account == *s)),
        Pred::SrcIp(c) => c.iter().any(|c| c.contains(r.source_ip)),
        Pred::DstIp(c) => c.iter().any(|c| c.contains(r.destination_ip)),
        Pred::Port(ps) => ps.contains(&r.destination_port),
    };
    hit != l.negated
}

impl Item {
    fn eval(&self, r: &Request) -> Tv {
        if !self.lits.iter().all(|l| lit_holds(l, r)) {
            Tv::False
        } else if self.l7 {
            Tv::Unknown
        } else {
            Tv::True
        }
    }
}

impl RefRule {
    fn eval(&self, r: &Request) -> Tv {
        self.clauses.iter().fold(Tv::True, |acc, c| {
            acc.and(c.iter().fold(Tv::False, |o, i| o.or(i.eval(r))))
        })
    }
}

impl RefPolicy {
    fn eval(&self, r: &Request) -> Tv {
        self.rules
            .iter()
            .fold(Tv::False, |acc, rule| acc.or(rule.eval(r)))
    }
}

// =============================================================================================
// The grid
// =============================================================================================

struct Grid {
    identities: Vec<Option<Identity>>,
    ports: Vec<u16>,
    src_ips: Vec<IpAddr>,
    dst_ips: Vec<IpAddr>,
}

impl Grid {
    fn new() -> Self {
        let mut identities = vec![None];
        for td in ["cluster.local", "corp.example", "other.td"] {
            for ns in ["shop", "billing", "ops", "shipping", "other"] {
                for sa in ["frontend", "worker", "api", "other"] {
                    identities.push(Some(Identity::new(td, ns, sa)));
                }
            }
        }
        // The literal `*` of a `*/ns/ops/sa/*` principal (a suffix match).
        identities.push(Some(Identity::new("cluster.local", "ops", "*")));
        let ips = |xs: &[&str]| xs.iter().map(|s| s.parse().unwrap()).collect();
        Grid {
            identities,
            ports: vec![80, 8080, 9090, 443, 7777],
            src_ips: ips(&[
                "10.1.2.3",
                "10.1.9.9",
                "10.9.9.9",
                "192.168.0.7",
                "172.16.0.1",
                "2001:db8::5",
                "2001:db8::6",
                "fd00::1",
                "2001:dead::1",
            ]),
            dst_ips: ips(&[
                "10.2.0.9",
                "10.2.5.5",
                "10.3.0.1",
                "172.20.0.1",
                "2001:db8:1::1",
                "fd00::2",
                "2001:dead::2",
            ]),
        }
    }

    /// The requests varying only the dimensions `d` (the others take their first value).
    fn requests(&self, d: Dims) -> Vec<Req> {
        fn take<T: Clone>(xs: &[T], all: bool) -> &[T] {
            if all { xs } else { &xs[..1] }
        }
        let mut out = Vec::new();
        for id in take(&self.identities, d.identity) {
            for port in take(&self.ports, d.port) {
                for src in take(&self.src_ips, d.src_ip) {
                    for dst in take(&self.dst_ips, d.dst_ip) {
                        out.push(Req::new(Request {
                            source: id.clone(),
                            source_ip: *src,
                            destination_ip: *dst,
                            destination_port: *port,
                        }));
                    }
                }
            }
        }
        out
    }
}

/// A request in both crates' types (converted once).
struct Req {
    istio: Request,
    mesh: authz::L4Request,
}

impl Req {
    fn new(istio: Request) -> Self {
        let mesh = authz::L4Request {
            source: istio.source.as_ref().map(|i| {
                authz::PeerIdentity::new(&i.trust_domain, &i.namespace, &i.service_account)
            }),
            source_ip: istio.source_ip,
            destination_ip: istio.destination_ip,
            destination_port: istio.destination_port,
        };
        Req { istio, mesh }
    }

    fn of(mesh: &authz::L4Request) -> Self {
        let istio = Request {
            source: mesh
                .source
                .as_ref()
                .map(|i| Identity::new(&i.trust_domain, &i.namespace, &i.service_account)),
            source_ip: mesh.source_ip,
            destination_ip: mesh.destination_ip,
            destination_port: mesh.destination_port,
        };
        Req {
            istio,
            mesh: mesh.clone(),
        }
    }
}

/// The grid's requests for every combination of dimensions, built once.
struct Grids(Vec<Vec<Req>>);

impl Grids {
    fn new() -> Self {
        let g = Grid::new();
        Grids(
            (0..16u8)
                .map(|m| {
                    g.requests(Dims {
                        identity: m & 1 != 0,
                        src_ip: m & 2 != 0,
                        dst_ip: m & 4 != 0,
                        port: m & 8 != 0,
                    })
                })
                .collect(),
        )
    }

    fn get(&self, d: Dims) -> &[Req] {
        let m = usize::from(d.identity)
            | usize::from(d.src_ip) << 1
            | usize::from(d.dst_ip) << 2
            | usize::from(d.port) << 3;
        &self.0[m]
    }
}

// =============================================================================================
// Istio's side
// =============================================================================================

/// istiod's conversion of one policy.
#[derive(Clone)]
struct Istio {
    authorization: Option<Authorization>,
}

impl Istio {
    fn enforced(&self) -> Option<&Authorization> {
        self.authorization.as_ref().filter(|a| !a.dry_run)
    }

    fn matches(&self, r: &Request) -> bool {
        self.authorization
            .as_ref()
            .is_some_and(|a| zt::policy_matches(a, r))
    }

    fn json(&self) -> String {
        match &self.authorization {
            Some(a) => serde_json::to_string(a).unwrap(),
            None => "null (no Authorization)".into(),
        }
    }
}

fn convert(oracle: &Oracle, objects: &[Value], dry_run_flag: bool) -> Vec<Istio> {
    let opts = ZtunnelOptions {
        root_namespace: ROOT_NS.into(),
        enable_dry_run: dry_run_flag,
        ..Default::default()
    };
    oracle
        .ztunnel(objects, &opts)
        .unwrap()
        .into_iter()
        .map(|c| Istio {
            authorization: c.authorization.map(|a| {
                Authorization::from_json(&a.to_string())
                    .unwrap_or_else(|e| panic!("istiod's Authorization {a}: {e}"))
            }),
        })
        .collect()
}

fn is_dry_run(p: &Value) -> bool {
    matches!(
        p["metadata"]["annotations"]["istio.io/dry-run"].as_str(),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True")
    )
}

fn action_of(p: &Value) -> &str {
    p["spec"]["action"].as_str().unwrap_or("ALLOW")
}

/// What Istio's conversion and the reference say about one request.
struct Row {
    z: bool,
    f: Tv,
    f_rules: Vec<Tv>,
}

fn rows<'r>(istio: &Istio, refp: &RefPolicy, reqs: impl Iterator<Item = &'r Req>) -> Vec<Row> {
    reqs.map(|r| Row {
        z: istio.matches(&r.istio),
        f: refp.eval(&r.istio),
        f_rules: refp.rules.iter().map(|rule| rule.eval(&r.istio)).collect(),
    })
    .collect()
}

/// The effects Istio's conversion has on a policy, judged on the requests of `rows`: the
/// sidecar's side is [`RefPolicy`] (`F`), ztunnel's is the matcher on istiod's
/// Authorization (`Z`).
///
/// - dry-run (annotation parsed as true): the sidecar only logs it; `DryRun` when ztunnel
///   does not enforce it either (no Authorization, or `dry_run: true`), else `DryRunEnforced`;
/// - CUSTOM/AUDIT: `NotEnforced` (istiod sends no Authorization);
/// - DENY: a request with `¬Z ∧ F ≠ False` is fail-open: `DenyIgnored` when `Z` matches no
///   request at all, else `DenyNarrowed`; one with `Z ∧ F ≠ True` is fail-closed:
///   `DenyBroadened`;
/// - ALLOW: a request with `¬Z ∧ F ≠ False` is fail-closed, caused by each rule `i` with
///   `Fᵢ ≠ False` there: `AllowRulesDropped` if istiod dropped rule `i` (its one-rule policy
///   has no groups), else `AllowNarrowed`; one with `Z ∧ F ≠ True` is fail-open:
///   `AllowBroadened`;
/// - `Exact` when none of these holds.
fn derive_effects(
    p: &Value,
    enforced: bool,
    rule_dropped: &[bool],
    rows: &[Row],
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let action = action_of(p);
    let one = |e: &str| BTreeSet::from([e.to_string()]);
    if is_dry_run(p) {
        return one(if enforced { "DryRunEnforced" } else { "DryRun" });
    }
    if !matches!(action, "ALLOW" | "DENY") || !enforced {
        return one("NotEnforced");
    }
    let z_any = rows.iter().any(|r| r.z);
    for r in rows {
        match (action, r.z) {
            ("DENY", false) if r.f != Tv::False => {
                out.insert(if z_any { "DenyNarrowed" } else { "DenyIgnored" }.to_string());
            }
            ("DENY", true) if r.f != Tv::True => {
                out.insert("DenyBroadened".to_string());
            }
            ("ALLOW", false) if r.f != Tv::False => {
                for (f, dropped) in r.f_rules.iter().zip(rule_dropped) {
                    if *f != Tv::False {
                        let e = if *dropped {
                            "AllowRulesDropped"
                        } else {
                            "AllowNarrowed"
                        };
                        out.insert(e.to_string());
                    }
                }
            }
            ("ALLOW", true) if r.f != Tv::True => {
                out.insert("AllowBroadened".to_string());
            }
            _ => {}
        }
    }
    if out.is_empty() {
        out.insert("Exact".into());
    }
    out
}

/// The directions of the differences, judged like [`derive_effects`]: (fail-open,
/// fail-closed). A DENY is fail-open on `¬Z ∧ F ≠ False` and fail-closed on `Z ∧ F ≠ True`;
/// an ALLOW the other way round. CUSTOM is fail-open when its rules match some request (the
/// sidecar may deny it, ztunnel enforces nothing); AUDIT and dry-run policies that ztunnel
/// does not enforce change no decision; a dry-run policy ztunnel enforces is judged against a
/// sidecar that enforces nothing.
fn derive_risk(p: &Value, enforced: bool, rows: &[Row]) -> (bool, bool) {
    let any = |f: &dyn Fn(bool, Tv) -> bool| rows.iter().any(|r| f(r.z, r.f));
    let action = action_of(p);
    if is_dry_run(p) {
        return match (enforced, action) {
            (false, _) => (false, false),
            (true, "DENY") => (false, any(&|z, _| z)),
            (true, _) => (any(&|z, _| z), any(&|z, _| !z)),
        };
    }
    match action {
        "AUDIT" => (false, false),
        "DENY" if enforced => (
            any(&|z, f| !z && f != Tv::False),
            any(&|z, f| z && f != Tv::True),
        ),
        "ALLOW" if enforced => (
            any(&|z, f| z && f != Tv::True),
            any(&|z, f| !z && f != Tv::False),
        ),
        _ => (any(&|_, f| f != Tv::False), false),
    }
}

// =============================================================================================
// meshmig's side (the model under test)
// =============================================================================================

/// What meshmig predicts for one policy.
struct Prediction {
    view: authz::ZtunnelView,
    effects: BTreeSet<String>,
    /// (fail-open, fail-closed).
    risk: (bool, bool),
    /// Per-rule effects, as meshmig classifies the rules of the policy.
    rule_effects: Vec<BTreeSet<String>>,
    /// Requests meshmig names as witnesses of its effects (checked against Istio too).
    witnesses: Vec<Req>,
}

fn typed(p: &Value) -> AuthorizationPolicy {
    serde_json::from_value(p.clone()).unwrap()
}

fn effect_names(effects: &[authz::ZtunnelEffect]) -> BTreeSet<String> {
    effects.iter().map(|e| format!("{e:?}")).collect()
}

fn semantics(dry_run_flag: bool) -> authz::ZtunnelSemantics {
    authz::ZtunnelSemantics {
        dry_run_flag,
        root_namespace: ROOT_NS.into(),
        ..Default::default()
    }
}

/// meshmig's model: `ztunnel_view` for structure, matches and decisions; `classify_with` for
/// the effects and risks (policy and rules); `ztunnel_analysis` for the witnesses.
fn predict(p: &Value, dry_run_flag: bool) -> Prediction {
    let policy = typed(p);
    let sem = semantics(dry_run_flag);
    let class = authz::classify_with(&policy, &sem);
    let analysis = authz::ztunnel_analysis(&policy, &sem);
    Prediction {
        view: authz::ztunnel_view(&policy, &sem),
        effects: effect_names(&class.ztunnel),
        risk: (class.ztunnel_fail_open(), class.ztunnel_fail_closed()),
        rule_effects: class
            .rules
            .iter()
            .map(|r| effect_names(&r.ztunnel))
            .collect(),
        witnesses: analysis
            .witnesses
            .iter()
            .map(|w| Req::of(&w.request))
            .collect(),
    }
}

// =============================================================================================
// Comparison
// =============================================================================================

#[derive(Default)]
struct Report {
    counts: BTreeMap<&'static str, usize>,
    /// How often Istio's conversion showed each effect (policies and rules).
    effects: BTreeMap<String, usize>,
    printed: Vec<String>,
    compared: usize,
}

impl Report {
    fn mismatch(&mut self, category: &'static str, detail: impl FnOnce() -> String) {
        *self.counts.entry(category).or_default() += 1;
        if self.printed.len() < MAX_PRINTED {
            self.printed.push(format!("[{category}] {}", detail()));
        }
    }

    fn merge(&mut self, o: Report) {
        for (k, v) in o.counts {
            *self.counts.entry(k).or_default() += v;
        }
        for (k, v) in o.effects {
            *self.effects.entry(k).or_default() += v;
        }
        let room = MAX_PRINTED.saturating_sub(self.printed.len());
        self.printed.extend(o.printed.into_iter().take(room));
        self.compared += o.compared;
    }

    fn total(&self) -> usize {
        self.counts.values().sum()
    }
}

fn yaml(p: &Value) -> String {
    serde_saphyr::to_string(p).unwrap_or_else(|_| p.to_string())
}

fn show(r: &Request) -> String {
    let who = r
        .source
        .as_ref()
        .map_or("plaintext".to_string(), Identity::principal);
    format!(
        "{who} {} -> {}:{}",
        r.source_ip, r.destination_ip, r.destination_port
    )
}

fn name(p: &Value) -> &str {
    p["metadata"]["name"].as_str().unwrap_or_default()
}

/// One policy (or one-rule policy) checked: structure, then matches and decisions.
fn compare_view(rep: &mut Report, p: &Value, pred: &Prediction, istio: &Istio, reqs: &[&Req]) {
    let a = istio.authorization.as_ref();
    let mine = pred.view.authorization();
    let structure_ok = match (mine, a) {
        (None, None) => true,
        (Some(m), Some(a)) => {
            m.dry_run == a.dry_run
                && (m.action == authz::ZtunnelAction::Deny) == (a.action == zt::Action::Deny)
        }
        _ => false,
    };
    if !structure_ok {
        rep.mismatch("structure", || {
            format!(
                "{}: meshmig {:?}\nIstio: {}\n{}",
                name(p),
                pred.view,
                istio.json(),
                yaml(p)
            )
        });
        return;
    }
    let category = if p["metadata"]["name"]
        .as_str()
        .is_some_and(|n| n.contains("-r"))
    {
        "rule-match"
    } else {
        "policy-match"
    };
    for r in reqs {
        rep.compared += 1;
        let (m, i) = (pred.view.matches(&r.mesh), istio.matches(&r.istio));
        if m != i {
            rep.mismatch(category, || {
                format!(
                    "{}: request {}: meshmig matches={m}, Istio matches={i}\nIstio: {}\nmeshmig: {}\n{}",
                    name(p),
                    show(&r.istio),
                    istio.json(),
                    serde_json::to_string(&pred.view).unwrap_or_default(),
                    yaml(p)
                )
            });
            return;
        }
        let dm = authz::ztunnel_decide([&pred.view], &r.mesh);
        let di = zt::decide(a, &r.istio);
        if !same_decision(dm, di) {
            rep.mismatch("decision", || {
                format!(
                    "{}: request {}: meshmig {dm:?}, Istio {di:?}\nIstio: {}\n{}",
                    name(p),
                    show(&r.istio),
                    istio.json(),
                    yaml(p)
                )
            });
            return;
        }
    }
}

fn same_decision(m: authz::ZtunnelDecision, i: Decision) -> bool {
    matches!(
        (m, i),
        (authz::ZtunnelDecision::Allow, Decision::Allow)
            | (authz::ZtunnelDecision::Deny, Decision::Deny)
    )
}

fn compare_effects(
    rep: &mut Report,
    category: &'static str,
    p: &Value,
    claimed: &BTreeSet<String>,
    derived: &BTreeSet<String>,
    istio: &Istio,
) {
    for e in derived {
        *rep.effects.entry(format!("{category} {e}")).or_default() += 1;
    }
    if claimed != derived {
        rep.mismatch(category, || {
            format!(
                "{}: meshmig claims {claimed:?}, Istio's conversion gives {derived:?}\nIstio: {}\n{}",
                name(p),
                istio.json(),
                yaml(p)
            )
        });
    }
}

/// Everything about one generated policy.
struct Checked<'a> {
    case: &'a Case,
    istio: Istio,
    rules: Vec<Istio>,
}

/// The requests one policy is judged on: the grid (varying what the policy looks at) and
/// meshmig's witnesses.
fn judged_on<'g>(grids: &'g Grids, p: &Value, pred: &'g Prediction) -> (RefPolicy, Vec<&'g Req>) {
    let (refp, dims) = ref_policy(p);
    let reqs = grids.get(dims).iter().chain(&pred.witnesses).collect();
    (refp, reqs)
}

fn check_case(rep: &mut Report, grids: &Grids, c: &Checked<'_>, dry_run_flag: bool) -> Prediction {
    let p = &c.case.policy;
    let pred = predict(p, dry_run_flag);
    let (refp, reqs) = judged_on(grids, p, &pred);
    compare_view(rep, p, &pred, &c.istio, &reqs);
    if dry_run_flag {
        return pred;
    }
    let dropped: Vec<bool> = c
        .rules
        .iter()
        .map(|i| {
            action_of(p) != "DENY"
                && i.authorization
                    .as_ref()
                    .is_some_and(|a| a.groups.is_empty())
        })
        .collect();
    let table = rows(&c.istio, &refp, reqs.iter().copied());
    let enforced = c.istio.enforced().is_some();
    let derived = derive_effects(p, enforced, &dropped, &table);
    compare_effects(rep, "policy-effect", p, &pred.effects, &derived, &c.istio);
    let risk = derive_risk(p, enforced, &table);
    if risk != pred.risk {
        rep.mismatch("policy-risk", || {
            format!(
                "{}: meshmig (fail-open, fail-closed) = {:?}, Istio's conversion gives {risk:?}\nIstio: {}\n{}",
                name(p),
                pred.risk,
                c.istio.json(),
                yaml(p)
            )
        });
    }
    for (j, (rp, ri)) in c.case.rules.iter().zip(&c.rules).enumerate() {
        let claimed = pred.rule_effects.get(j).cloned().unwrap_or_default();
        if c.case.rules.len() == 1
            && serde_json::to_string(&ri.authorization.as_ref().map(|a| &a.groups)).ok()
                == serde_json::to_string(&c.istio.authorization.as_ref().map(|a| &a.groups)).ok()
        {
            // The one-rule policy is the policy: same conversion, same requests.
            compare_effects(rep, "rule-effect", rp, &claimed, &derived, ri);
            continue;
        }
        let rpred = predict(rp, dry_run_flag);
        let (rref, rreq) = judged_on(grids, rp, &rpred);
        compare_view(rep, rp, &rpred, ri, &rreq);
        let table = rows(ri, &rref, rreq.iter().copied());
        let derived = derive_effects(rp, ri.enforced().is_some(), &dropped[j..=j], &table);
        compare_effects(rep, "rule-effect", rp, &claimed, &derived, ri);
    }
    pred
}

/// Decisions over chunks of policies (several policies on one workload).
fn check_chunks(rep: &mut Report, grids: &Grids, checked: &[Checked<'_>], preds: &[Prediction]) {
    let all = Dims {
        identity: true,
        src_ip: true,
        dst_ip: false,
        port: true,
    };
    let reqs = grids.get(all);
    for (cs, ps) in checked.chunks(4).zip(preds.chunks(4)) {
        let auths: Vec<&Authorization> = cs
            .iter()
            .filter_map(|c| c.istio.authorization.as_ref())
            .collect();
        for r in reqs.iter().step_by(7) {
            rep.compared += 1;
            let dm = authz::ztunnel_decide(ps.iter().map(|p| &p.view), &r.mesh);
            let di = zt::decide(auths.iter().copied(), &r.istio);
            if !same_decision(dm, di) {
                rep.mismatch("chunk-decision", || {
                    let names: Vec<&str> = cs.iter().map(|c| name(&c.case.policy)).collect();
                    format!(
                        "policies {names:?}, request {}: meshmig {dm:?}, Istio {di:?}",
                        show(&r.istio)
                    )
                });
                break;
            }
        }
    }
}

/// Checks every case on two threads (the machine has two cores).
fn check_all(grids: &Grids, checked: &[Checked<'_>]) -> (Report, Vec<Prediction>) {
    let half = checked.len().div_ceil(2);
    let (mut rep, mut preds) = (Report::default(), Vec::new());
    std::thread::scope(|scope| {
        let handles: Vec<_> = checked
            .chunks(half.max(1))
            .map(|part| {
                scope.spawn(move || {
                    let mut rep = Report::default();
                    let preds: Vec<Prediction> = part
                        .iter()
                        .map(|c| check_case(&mut rep, grids, c, false))
                        .collect();
                    (rep, preds)
                })
            })
            .collect();
        for h in handles {
            let (r, p) = h.join().unwrap();
            rep.merge(r);
            preds.extend(p);
        }
    });
    (rep, preds)
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn print_coverage(cov: &Coverage) {
    let mut line = String::new();
    for (k, v) in &cov.0 {
        let _ = write!(line, "{k}={v}; ");
    }
    println!("coverage: {line}");
}

/// Every field, key and action must have been generated (among valid policies).
fn assert_coverage(cov: &Coverage) {
    let mut missing = Vec::new();
    for f in SOURCE_FIELDS {
        missing.push(format!("source.{}", f.name));
    }
    for f in OPERATION_FIELDS {
        missing.push(format!("operation.{}", f.name));
    }
    for k in WHEN_KEYS {
        missing.push(format!("when[{}] values", k.name));
        missing.push(format!("when[{}] notValues", k.name));
    }
    for a in ["ALLOW", "DENY", "AUDIT", "CUSTOM", "(absent: ALLOW)"] {
        missing.push(format!("action {a}"));
    }
    for s in [
        "shape rules: [{}]",
        "shape no rules",
        "shape rules: []",
        "shape selector",
        "shape namespace-wide",
        "shape several rules",
        "shape several from blocks",
        "shape several to blocks",
        "shape source block with L4 and non-L4",
        "shape operation block with L4 and non-L4",
        "annotation istio.io/dry-run=true",
        "value principal exact",
        "value principal *",
        "value principal prefix",
        "value principal suffix",
        "value ip v6",
    ] {
        missing.push(s.to_string());
    }
    missing.retain(|m| cov.get(m) == 0);
    assert!(
        missing.is_empty(),
        "the generator never produced: {missing:?}"
    );
}

#[test]
fn ztunnel_model_agrees_with_istio() {
    let start = Instant::now();
    let seed = env_or("MESHMIG_AUTHZ_SEED", DEFAULT_SEED);
    let count = env_or("MESHMIG_AUTHZ_POLICIES", DEFAULT_POLICIES);
    println!("seed {seed} (MESHMIG_AUTHZ_SEED), {count} policies (MESHMIG_AUTHZ_POLICIES)");
    let oracle = Oracle::get().unwrap_or_else(|e| panic!("Istio's code is the judge: {e}"));
    let mut rng = Rng::new(seed);
    let (cases, cov, invalid) = generate(&mut rng, count, oracle);
    print_coverage(&cov);
    assert_coverage(&cov);

    // One conversion call for everything; a second, with istiod's dry-run flag on, for the
    // dry-run policies only.
    let objects: Vec<Value> = cases
        .iter()
        .flat_map(|c| std::iter::once(&c.policy).chain(&c.rules))
        .cloned()
        .collect();
    let mut converted = convert(oracle, &objects, false).into_iter();
    let checked: Vec<Checked<'_>> = cases
        .iter()
        .map(|case| Checked {
            case,
            istio: converted.next().unwrap(),
            rules: (0..case.rules.len())
                .map(|_| converted.next().unwrap())
                .collect(),
        })
        .collect();
    let dry: Vec<&Case> = cases
        .iter()
        .filter(|c| c.policy["metadata"]["annotations"].is_object())
        .collect();
    let dry_objects: Vec<Value> = dry.iter().map(|c| c.policy.clone()).collect();
    let dry_converted = convert(oracle, &dry_objects, true);

    println!(
        "generated, validated and converted in {:.1}s",
        start.elapsed().as_secs_f64()
    );
    let grids = Grids::new();
    let (mut rep, preds) = check_all(&grids, &checked);
    check_chunks(&mut rep, &grids, &checked, &preds);
    for (case, istio) in dry.iter().zip(dry_converted) {
        let c = Checked {
            case,
            istio,
            rules: Vec::new(),
        };
        check_case(&mut rep, &grids, &c, true);
    }

    let rules: usize = cases.iter().map(|c| c.rules.len()).sum();
    for m in &rep.printed {
        println!("MISMATCH {m}\n");
    }
    println!("effects seen: {:?}", rep.effects);
    println!(
        "summary: {} policies ({invalid} invalid regenerated), {rules} rules, {} requests compared, {} mismatches {:?}, seed {seed}, {:.1}s",
        cases.len(),
        rep.compared,
        rep.total(),
        rep.counts,
        start.elapsed().as_secs_f64()
    );
    if count >= 1000 {
        // Every effect Istio's conversion has at the served version must have been exercised.
        let missing: Vec<&str> = [
            "Exact",
            "AllowRulesDropped",
            "AllowNarrowed",
            "AllowBroadened",
            "DenyBroadened",
            "DenyNarrowed",
            "DenyIgnored",
            "NotEnforced",
            "DryRun",
        ]
        .into_iter()
        .filter(|e| !rep.effects.contains_key(&format!("policy-effect {e}")))
        .collect();
        assert!(
            missing.is_empty(),
            "no generated policy had the effects {missing:?}"
        );
    }
    assert_eq!(
        rep.total(),
        0,
        "meshmig's ztunnel model disagrees with Istio (seed {seed})"
    );
}
