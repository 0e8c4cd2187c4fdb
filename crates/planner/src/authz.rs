//! AuthorizationPolicy classification: what ztunnel can enforce (L4) and what needs a
//! waypoint (L7), field by field, and what ztunnel would do with a selector policy left
//! behind.

use meshmig_api::istio::{AuthorizationPolicy, Condition, Operation, Rule, Source};
use serde::Serialize;

/// Policy action.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// ALLOW (also the default when `action` is absent).
    Allow,
    /// DENY.
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
    /// `trustDomains`/`notTrustDomains`: silently ignored by ztunnel.
    TrustDomain,
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
    /// Every attribute the rule uses.
    pub attrs: Vec<Attr>,
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

/// What ztunnel does with this policy when it is left as a selector policy.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ZtunnelEffect {
    /// Enforced exactly.
    Exact,
    /// ALLOW rules with L7 attributes are dropped: requests only they admitted are denied
    /// (fail-closed). `all_dropped` means no rule survives: the workload denies everything.
    AllowRulesDropped,
    /// DENY rules lose their L7 parts and deny more than before (fail-closed).
    DenyBroadened,
    /// DENY rules made only of L7 parts do nothing (fail-open).
    DenyIgnored,
    /// AUDIT/CUSTOM/unknown actions are not enforced by ztunnel at all (fail-open).
    NotEnforced,
}

/// Classification of an AuthorizationPolicy.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct PolicyClass {
    /// Action.
    pub action: Action,
    /// Per-rule classification.
    pub rules: Vec<RuleClass>,
    /// Whether the policy uses `targetRef(s)` (waypoint-enforced already).
    pub targeted: bool,
    /// Whether it has a selector (else it is namespace- or mesh-wide).
    pub has_selector: bool,
    /// What ztunnel does with it as a selector policy (may hold several effects).
    pub ztunnel: Vec<ZtunnelEffect>,
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
}

/// `when` keys ztunnel can evaluate, with what they depend on.
fn when_key_kind(key: &str) -> AttrKind {
    match key {
        "source.principal" | "source.namespace" => AttrKind::Identity,
        "source.ip" => AttrKind::SourceIp,
        "destination.ip" | "destination.port" => AttrKind::Destination,
        _ => AttrKind::L7,
    }
}

fn push(attrs: &mut Vec<Attr>, present: bool, path: String, kind: AttrKind) {
    if present {
        attrs.push(Attr { path, kind });
    }
}

fn has(v: &Option<Vec<String>>) -> bool {
    v.is_some()
}

fn classify_source(s: &Source, p: &str, attrs: &mut Vec<Attr>) {
    use AttrKind::*;
    push(
        attrs,
        has(&s.principals),
        format!("{p}.principals"),
        Identity,
    );
    push(
        attrs,
        has(&s.not_principals),
        format!("{p}.notPrincipals"),
        Identity,
    );
    push(
        attrs,
        has(&s.namespaces),
        format!("{p}.namespaces"),
        Identity,
    );
    push(
        attrs,
        has(&s.not_namespaces),
        format!("{p}.notNamespaces"),
        Identity,
    );
    push(
        attrs,
        has(&s.service_accounts),
        format!("{p}.serviceAccounts"),
        Identity,
    );
    push(
        attrs,
        has(&s.not_service_accounts),
        format!("{p}.notServiceAccounts"),
        Identity,
    );
    push(attrs, has(&s.ip_blocks), format!("{p}.ipBlocks"), SourceIp);
    push(
        attrs,
        has(&s.not_ip_blocks),
        format!("{p}.notIpBlocks"),
        SourceIp,
    );
    push(
        attrs,
        has(&s.request_principals),
        format!("{p}.requestPrincipals"),
        L7,
    );
    push(
        attrs,
        has(&s.not_request_principals),
        format!("{p}.notRequestPrincipals"),
        L7,
    );
    push(
        attrs,
        has(&s.remote_ip_blocks),
        format!("{p}.remoteIpBlocks"),
        L7,
    );
    push(
        attrs,
        has(&s.not_remote_ip_blocks),
        format!("{p}.notRemoteIpBlocks"),
        L7,
    );
    for key in s.extra.keys() {
        let kind = if key == "trustDomains" || key == "notTrustDomains" {
            TrustDomain
        } else {
            Unknown
        };
        attrs.push(Attr {
            path: format!("{p}.{key}"),
            kind,
        });
    }
}

fn classify_operation(o: &Operation, p: &str, attrs: &mut Vec<Attr>) {
    use AttrKind::*;
    push(attrs, has(&o.ports), format!("{p}.ports"), Destination);
    push(
        attrs,
        has(&o.not_ports),
        format!("{p}.notPorts"),
        Destination,
    );
    push(attrs, has(&o.hosts), format!("{p}.hosts"), L7);
    push(attrs, has(&o.not_hosts), format!("{p}.notHosts"), L7);
    push(attrs, has(&o.methods), format!("{p}.methods"), L7);
    push(attrs, has(&o.not_methods), format!("{p}.notMethods"), L7);
    push(attrs, has(&o.paths), format!("{p}.paths"), L7);
    push(attrs, has(&o.not_paths), format!("{p}.notPaths"), L7);
    for key in o.extra.keys() {
        attrs.push(Attr {
            path: format!("{p}.{key}"),
            kind: Unknown,
        });
    }
}

fn classify_condition(c: &Condition, p: &str, attrs: &mut Vec<Attr>) {
    attrs.push(Attr {
        path: format!("{p}[key={}]", c.key),
        kind: when_key_kind(&c.key),
    });
    for key in c.extra.keys() {
        attrs.push(Attr {
            path: format!("{p}.{key}"),
            kind: AttrKind::Unknown,
        });
    }
}

/// Classifies one rule; `i` is its index in `rules`.
pub fn classify_rule(rule: &Rule, i: usize) -> RuleClass {
    let mut attrs = Vec::new();
    for (j, from) in rule.from.iter().flatten().enumerate() {
        let p = format!("rules[{i}].from[{j}]");
        if let Some(s) = &from.source {
            classify_source(s, &format!("{p}.source"), &mut attrs);
        }
        for key in from.extra.keys() {
            attrs.push(Attr {
                path: format!("{p}.{key}"),
                kind: AttrKind::Unknown,
            });
        }
    }
    for (j, to) in rule.to.iter().flatten().enumerate() {
        let p = format!("rules[{i}].to[{j}]");
        if let Some(o) = &to.operation {
            classify_operation(o, &format!("{p}.operation"), &mut attrs);
        }
        for key in to.extra.keys() {
            attrs.push(Attr {
                path: format!("{p}.{key}"),
                kind: AttrKind::Unknown,
            });
        }
    }
    for (j, c) in rule.when.iter().flatten().enumerate() {
        classify_condition(c, &format!("rules[{i}].when[{j}]"), &mut attrs);
    }
    for key in rule.extra.keys() {
        attrs.push(Attr {
            path: format!("rules[{i}].{key}"),
            kind: AttrKind::Unknown,
        });
    }
    RuleClass { attrs }
}

/// Classifies a policy.
pub fn classify(policy: &AuthorizationPolicy) -> PolicyClass {
    let spec = &policy.spec;
    let action = Action::parse(spec.action.as_deref());
    let rules: Vec<RuleClass> = spec
        .rules
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| classify_rule(r, i))
        .collect();
    let mut ztunnel = Vec::new();
    match action {
        Action::Allow => {
            if rules.iter().any(RuleClass::has_l7) {
                ztunnel.push(ZtunnelEffect::AllowRulesDropped);
            }
        }
        Action::Deny => {
            for r in rules.iter().filter(|r| r.has_l7()) {
                let effect = if r.has_l4() {
                    ZtunnelEffect::DenyBroadened
                } else {
                    ZtunnelEffect::DenyIgnored
                };
                if !ztunnel.contains(&effect) {
                    ztunnel.push(effect);
                }
            }
        }
        Action::Audit | Action::Custom | Action::Unknown(_) => {
            ztunnel.push(ZtunnelEffect::NotEnforced)
        }
    }
    // Trust-domain conditions are silently dropped by ztunnel even in otherwise-L4 rules.
    if rules
        .iter()
        .any(|r| r.attrs.iter().any(|a| a.kind == AttrKind::TrustDomain))
        && !ztunnel.contains(&ZtunnelEffect::NotEnforced)
    {
        let effect = if action == Action::Deny {
            ZtunnelEffect::DenyIgnored
        } else {
            ZtunnelEffect::AllowRulesDropped
        };
        if !ztunnel.contains(&effect) {
            ztunnel.push(effect);
        }
    }
    if ztunnel.is_empty() {
        ztunnel.push(ZtunnelEffect::Exact);
    }
    PolicyClass {
        action,
        rules,
        targeted: spec.target_ref.is_some()
            || spec.target_refs.as_ref().is_some_and(|t| !t.is_empty()),
        has_selector: spec
            .selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref())
            .is_some_and(|m| !m.is_empty()),
        ztunnel,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> AuthorizationPolicy {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn kinds(c: &PolicyClass) -> Vec<AttrKind> {
        c.rules
            .iter()
            .flat_map(|r| r.attrs.iter().map(|a| a.kind))
            .collect()
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
        serviceAccounts: [e]
        notServiceAccounts: [f]
        ipBlocks: [1.2.3.4]
        notIpBlocks: [5.6.7.8]
"#,
        ));
        assert!(!c.needs_waypoint());
        assert_eq!(c.ztunnel, vec![ZtunnelEffect::Exact]);
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
        assert!(classify(&policy("spec: {action: AUDIT, rules: [{}]}")).needs_waypoint());
        let c = classify(&policy(
            "spec: {action: CUSTOM, provider: {name: ext}, rules: [{}]}",
        ));
        assert!(c.needs_waypoint());
        assert_eq!(c.ztunnel, vec![ZtunnelEffect::NotEnforced]);
        assert!(!classify(&policy("spec: {action: DENY, rules: [{}]}")).needs_waypoint());
        assert!(!classify(&policy("spec: {}")).needs_waypoint());
        assert_eq!(Action::parse(Some("FOO")), Action::Unknown("FOO".into()));
        assert!(classify(&policy("spec: {action: FOO}")).needs_waypoint());
    }

    #[test]
    fn ztunnel_effects_on_selector_policies() {
        let c = classify(&policy(
            "spec: {rules: [{from: [{source: {principals: [a]}}], to: [{operation: {methods: [GET]}}]}]}",
        ));
        assert_eq!(c.ztunnel, vec![ZtunnelEffect::AllowRulesDropped]);
        let c = classify(&policy(
            "spec: {action: DENY, rules: [{from: [{source: {namespaces: [a]}}], to: [{operation: {paths: [/admin]}}]}]}",
        ));
        assert_eq!(c.ztunnel, vec![ZtunnelEffect::DenyBroadened]);
        let c = classify(&policy(
            "spec: {action: DENY, rules: [{to: [{operation: {paths: [/admin]}}]}]}",
        ));
        assert_eq!(c.ztunnel, vec![ZtunnelEffect::DenyIgnored]);
    }

    #[test]
    fn trust_domains_and_unknown_fields() {
        let c = classify(&policy(
            "spec: {rules: [{from: [{source: {trustDomains: [td]}}]}]}",
        ));
        assert_eq!(kinds(&c), vec![AttrKind::TrustDomain]);
        assert!(c.needs_waypoint());
        let c = classify(&policy(
            "spec: {action: DENY, rules: [{from: [{source: {notTrustDomains: [td]}}]}]}",
        ));
        assert_eq!(c.ztunnel, vec![ZtunnelEffect::DenyIgnored]);
        let c = classify(&policy(
            "spec: {rules: [{to: [{operation: {frobs: [x]}}]}]}",
        ));
        assert_eq!(kinds(&c), vec![AttrKind::Unknown]);
        assert!(c.needs_waypoint());
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
        let c = classify(&policy(
            "spec: {targetRefs: [{kind: Service, group: '', name: a}]}",
        ));
        assert!(c.targeted && !c.has_selector);
        let c = classify(&policy("spec: {selector: {}}"));
        assert!(!c.has_selector);
    }
}
