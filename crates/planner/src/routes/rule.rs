//! One VirtualService `http` route → its HTTPRoute rules.

use meshmig_api::gateway::*;
use meshmig_api::istio::{HttpRetry, HttpRewrite, HttpRoute, HttpRouteDestination};
use serde_json::Value;

use super::backend::resolve_backend;
use super::filters::{headers_to_filters, rule_filters};
use super::matching::convert_match;
use super::{Ctx, gateway_duration};
use crate::findings as f;
use crate::object::dns_label;

/// The HTTPRoute rules one VirtualService route becomes, and the `retry` each of them gets
/// (experimental channel only, so added as JSON, not through the typed schema).
pub(super) struct ConvertedRule {
    pub(super) rules: Vec<HttpRouteRules>,
    pub(super) retry: Option<Value>,
}

/// Matches that become one rule, and whether its rewrite replaces the matched prefix (else
/// the full path).
struct MatchGroup {
    matches: Vec<HttpRouteRulesMatches>,
    prefix: bool,
}

fn route_label(r: &HttpRoute, i: usize) -> String {
    match &r.name {
        Some(n) => format!("http[{i}] ({n})"),
        None => format!("http[{i}]"),
    }
}

pub(super) fn convert_rule(ctx: &mut Ctx<'_, '_>, r: &HttpRoute, i: usize) -> ConvertedRule {
    let where_ = route_label(r, i);
    unconverted_field_findings(ctx, r, &where_);
    let matches: Vec<HttpRouteRulesMatches> = r
        .matches
        .iter()
        .flatten()
        .enumerate()
        .map(|(j, m)| convert_match(ctx, m, &format!("{where_}.match[{j}]")))
        .collect();
    if r.rewrite
        .as_ref()
        .is_some_and(|rw| rw.uri_regex_rewrite.is_some())
    {
        ctx.finding(f::VS_URI_REGEX_REWRITE, where_.clone());
    }
    let filters = rule_filters(ctx, r, &where_);
    let backend_refs = backend_refs(ctx, r, &where_);
    let mut timeouts = request_timeout(ctx, r, &where_);
    let retry = r
        .retries
        .as_ref()
        .and_then(|rt| convert_retries(ctx, rt, &mut timeouts, &where_));
    let base = HttpRouteRules {
        backend_refs: (!backend_refs.is_empty()).then_some(backend_refs),
        filters: None,
        matches: None,
        name: r.name.as_ref().map(|n| dns_label(&[n])),
        timeouts,
    };
    // Gateway API allows ReplacePrefixMatch only with PathPrefix matches, so a rewrite over
    // mixed match types is split into one rule per match (order preserved).
    let rewrite = r
        .rewrite
        .as_ref()
        .filter(|rw| rw.uri.is_some() || rw.authority.is_some());
    let groups = match_groups(matches, rewrite.is_some());
    let split = groups.len() > 1;
    let rules = groups
        .into_iter()
        .enumerate()
        .map(|(k, group)| {
            let mut rule = base.clone();
            if split {
                rule.name = Some(split_rule_name(r, i, k));
            }
            let mut fs = filters.clone();
            if let Some(rw) = rewrite {
                fs.push(rewrite_filter(rw, group.prefix));
            }
            rule.matches = (!group.matches.is_empty()).then_some(group.matches);
            rule.filters = (!fs.is_empty()).then_some(fs);
            rule
        })
        .collect();
    ConvertedRule { rules, retry }
}

/// The name of the `k`th rule a rewrite split route `i` into.
fn split_rule_name(r: &HttpRoute, i: usize, k: usize) -> String {
    dns_label(&[
        r.name.as_deref().unwrap_or("rule"),
        &i.to_string(),
        &k.to_string(),
    ])
}

fn unconverted_field_findings(ctx: &mut Ctx<'_, '_>, r: &HttpRoute, where_: &str) {
    if r.fault.is_some() {
        ctx.finding(f::VS_FAULT_INJECTION, where_.to_string());
    }
    if r.delegate.is_some() {
        ctx.finding(f::VS_DELEGATE, where_.to_string());
    }
    if r.direct_response.is_some() {
        ctx.finding(f::VS_DIRECT_RESPONSE, where_.to_string());
    }
}

/// A rewrite over matches that are all path prefixes (or none are) stays one rule.
fn match_groups(matches: Vec<HttpRouteRulesMatches>, rewrites: bool) -> Vec<MatchGroup> {
    if !rewrites || matches.is_empty() {
        return vec![MatchGroup {
            matches,
            prefix: false,
        }];
    }
    let prefix: Vec<bool> = matches
        .iter()
        .map(|m| {
            m.path.as_ref().and_then(|p| p.r#type.clone())
                == Some(HttpRouteRulesMatchesPathType::PathPrefix)
        })
        .collect();
    let all_prefix = prefix.iter().all(|p| *p);
    let none_prefix = prefix.iter().all(|p| !*p);
    if all_prefix || none_prefix {
        return vec![MatchGroup {
            matches,
            prefix: all_prefix,
        }];
    }
    matches
        .into_iter()
        .zip(prefix)
        .map(|(m, prefix)| MatchGroup {
            matches: vec![m],
            prefix,
        })
        .collect()
}

fn rewrite_filter(rw: &HttpRewrite, prefix: bool) -> HttpRouteRulesFilters {
    HttpRouteRulesFilters {
        r#type: HttpRouteRulesFiltersType::UrlRewrite,
        url_rewrite: Some(HttpRouteRulesFiltersUrlRewrite {
            hostname: rw.authority.clone(),
            path: rw
                .uri
                .as_ref()
                .map(|u| HttpRouteRulesFiltersUrlRewritePath {
                    replace_full_path: (!prefix).then(|| u.clone()),
                    replace_prefix_match: prefix.then(|| u.clone()),
                    r#type: if prefix {
                        HttpRouteRulesFiltersUrlRewritePathType::ReplacePrefixMatch
                    } else {
                        HttpRouteRulesFiltersUrlRewritePathType::ReplaceFullPath
                    },
                }),
        }),
        ..Default::default()
    }
}

fn backend_refs(
    ctx: &mut Ctx<'_, '_>,
    r: &HttpRoute,
    where_: &str,
) -> Vec<HttpRouteRulesBackendRefs> {
    let dests: Vec<&HttpRouteDestination> = r.route.iter().flatten().collect();
    let any_positive = dests.iter().any(|d| d.weight.unwrap_or(0) > 0);
    // A zero-weight entry next to weighted ones receives no traffic; omitted.
    let receives_traffic =
        |d: &HttpRouteDestination| !(dests.len() > 1 && any_positive && d.weight.unwrap_or(0) == 0);
    let kept = dests.iter().filter(|d| receives_traffic(d)).count();
    let mut out = Vec::new();
    for (j, d) in dests.iter().enumerate() {
        if !receives_traffic(d) {
            continue;
        }
        let Some(b) = resolve_backend(ctx, &d.destination, &format!("{where_}.route[{j}]")) else {
            continue;
        };
        let weight = if kept == 1 {
            None
        } else {
            d.weight.filter(|w| *w > 0).or(Some(1))
        };
        out.push(HttpRouteRulesBackendRefs {
            group: None,
            kind: None,
            name: b.name,
            namespace: (b.namespace != ctx.route_ns).then_some(b.namespace),
            port: b.port,
            weight,
            filters: backend_filters(d),
        });
    }
    out
}

/// A destination's header operations, as backend filters (the same shape as a rule's,
/// converted through JSON).
fn backend_filters(d: &HttpRouteDestination) -> Option<Vec<HttpRouteRulesBackendRefsFilters>> {
    d.headers
        .as_ref()
        .map(headers_to_filters)
        .filter(|f| !f.is_empty())
        .map(|fs| {
            fs.into_iter()
                .filter_map(|f| {
                    serde_json::to_value(f)
                        .ok()
                        .and_then(|v| serde_json::from_value(v).ok())
                })
                .collect()
        })
}

fn request_timeout(
    ctx: &mut Ctx<'_, '_>,
    r: &HttpRoute,
    where_: &str,
) -> Option<HttpRouteRulesTimeouts> {
    let t = r.timeout.as_ref()?;
    match gateway_duration(t) {
        Some(d) => Some(HttpRouteRulesTimeouts {
            request: Some(d),
            backend_request: None,
        }),
        None => {
            ctx.finding(
                f::VS_MATCH_UNSUPPORTED,
                format!("{where_}: timeout `{t}` cannot be expressed as a Gateway API duration"),
            );
            None
        }
    }
}

/// An Istio `retryOn`, split into the status codes Gateway API can retry on and whether it
/// names other conditions.
struct RetryOn {
    codes: Vec<u16>,
    other_conditions: bool,
}

impl RetryOn {
    fn parse(retry_on: Option<&str>) -> Self {
        let parts = || {
            retry_on
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
        };
        Self {
            codes: parts().filter_map(|c| c.parse().ok()).collect(),
            other_conditions: parts().any(|c| c.parse::<u16>().is_err()),
        }
    }
}

/// The experimental `retry` field, or `None` in the standard channel; either way a finding
/// says what is lost.
fn convert_retries(
    ctx: &mut Ctx<'_, '_>,
    rt: &HttpRetry,
    timeouts: &mut Option<HttpRouteRulesTimeouts>,
    where_: &str,
) -> Option<Value> {
    let experimental = ctx.opts.experimental_channel;
    let mut notes = Vec::new();
    // Without a retry, istiod makes backendRequest the whole request's timeout
    // (checked with its route generation), so it stands for perTryTimeout only beside one.
    match rt.per_try_timeout.as_deref().and_then(gateway_duration) {
        Some(ptt) if experimental => {
            let t = timeouts.get_or_insert_with(HttpRouteRulesTimeouts::default);
            t.backend_request = Some(ptt);
            notes.push("perTryTimeout becomes timeouts.backendRequest");
        }
        Some(_) => notes.push("perTryTimeout is lost with the retries"),
        None => {}
    }
    let retry_on = RetryOn::parse(rt.retry_on.as_deref());
    if retry_on.other_conditions {
        notes.push("retryOn conditions other than status codes are lost");
    }
    let retry = if experimental {
        notes.push("retries become the experimental retry field (attempts and status codes)");
        let mut obj = serde_json::Map::new();
        if let Some(a) = rt.attempts {
            obj.insert("attempts".into(), a.into());
        }
        if !retry_on.codes.is_empty() {
            obj.insert("codes".into(), retry_on.codes.into());
        }
        Some(Value::Object(obj))
    } else {
        notes.push("the installed Gateway API channel has no retry field, so retries are dropped");
        None
    };
    ctx.finding(f::VS_RETRIES, format!("{where_}: {}", notes.join("; ")));
    retry
}
