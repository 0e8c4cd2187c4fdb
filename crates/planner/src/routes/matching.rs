//! Istio `HTTPMatchRequest` → Gateway API `HTTPRouteMatch`.

use meshmig_api::gateway::*;
use meshmig_api::istio::{HttpMatchRequest, StringMatch};

use super::Ctx;
use crate::findings as f;

/// A header or query-parameter match: an exact value or a regular expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ValueMatch {
    pub(super) exact: bool,
    pub(super) value: String,
}

/// An empty match (`{}`) is Istio's presence match: any value, including the empty one, so
/// the regex `.*` (a header or parameter that is absent never matches a regex).
pub(super) fn string_match_to_regex(m: &StringMatch) -> ValueMatch {
    let (exact, value) = if let Some(e) = &m.exact {
        (true, e.clone())
    } else if let Some(p) = &m.prefix {
        (false, format!("^{}.*", regex::escape(p)))
    } else if let Some(r) = &m.regex {
        (false, r.clone())
    } else {
        (false, ".*".to_string())
    };
    ValueMatch { exact, value }
}

pub(super) fn convert_match(
    ctx: &mut Ctx<'_, '_>,
    m: &HttpMatchRequest,
    where_: &str,
) -> HttpRouteRulesMatches {
    let mut out = HttpRouteRulesMatches::default();
    if let Some(uri) = &m.uri {
        out.path = Some(path_match(ctx, uri, where_));
    }
    if m.ignore_uri_case == Some(true) {
        ctx.finding(f::VS_IGNORE_URI_CASE, format!("{where_}: ignoreUriCase"));
    }
    out.headers = header_matches(ctx, m, where_);
    out.query_params = query_matches(m);
    if let Some(method) = &m.method {
        match method.exact.as_deref().and_then(parse_method) {
            Some(mm) => out.method = Some(mm),
            None => ctx.finding(
                f::VS_MATCH_UNSUPPORTED,
                format!("{where_}: method match must be an exact standard method"),
            ),
        }
    }
    unsupported_match_findings(ctx, m, where_);
    out
}

fn path_match(ctx: &mut Ctx<'_, '_>, uri: &StringMatch, where_: &str) -> HttpRouteRulesMatchesPath {
    let (kind, value) = if let Some(e) = &uri.exact {
        (HttpRouteRulesMatchesPathType::Exact, e.clone())
    } else if let Some(p) = &uri.prefix {
        prefix_findings(ctx, p, where_);
        (HttpRouteRulesMatchesPathType::PathPrefix, p.clone())
    } else if let Some(r) = &uri.regex {
        (HttpRouteRulesMatchesPathType::RegularExpression, r.clone())
    } else {
        (HttpRouteRulesMatchesPathType::PathPrefix, "/".into())
    };
    HttpRouteRulesMatchesPath {
        r#type: Some(kind),
        value: Some(value),
    }
}

/// A VirtualService prefix is a string prefix, a PathPrefix a path-segment prefix.
fn prefix_findings(ctx: &mut Ctx<'_, '_>, p: &str, where_: &str) {
    if p != "/" && !p.ends_with('/') {
        ctx.finding(
            f::VS_PREFIX_NOT_SEGMENT,
            format!("{where_}: prefix `{p}` would also have matched `{p}x`"),
        );
    }
    if let Some(bare) = p.strip_suffix('/').filter(|b| !b.is_empty()) {
        // istiod drops the trailing slash of a PathPrefix (checked with its route
        // generation); a regex would rank below the rules it must precede.
        ctx.finding(
            f::VS_PREFIX_TRAILING_SLASH,
            format!("{where_}: prefix `{p}` as a PathPrefix also matches `{bare}`"),
        );
    }
}

fn header_matches(
    ctx: &mut Ctx<'_, '_>,
    m: &HttpMatchRequest,
    where_: &str,
) -> Option<Vec<HttpRouteRulesMatchesHeaders>> {
    let mut headers = Vec::new();
    for (name, sm) in m.headers.iter().flatten() {
        if name.starts_with(':') {
            ctx.finding(
                f::VS_MATCH_UNSUPPORTED,
                format!("{where_}: pseudo-header match `{name}`"),
            );
            continue;
        }
        let vm = string_match_to_regex(sm);
        headers.push(HttpRouteRulesMatchesHeaders {
            name: name.clone(),
            r#type: Some(if vm.exact {
                HttpRouteRulesMatchesHeadersType::Exact
            } else {
                HttpRouteRulesMatchesHeadersType::RegularExpression
            }),
            value: vm.value,
        });
    }
    (!headers.is_empty()).then_some(headers)
}

fn query_matches(m: &HttpMatchRequest) -> Option<Vec<HttpRouteRulesMatchesQueryParams>> {
    let query: Vec<_> = m
        .query_params
        .iter()
        .flatten()
        .map(|(name, sm)| {
            let vm = string_match_to_regex(sm);
            HttpRouteRulesMatchesQueryParams {
                name: name.clone(),
                r#type: Some(if vm.exact {
                    HttpRouteRulesMatchesQueryParamsType::Exact
                } else {
                    HttpRouteRulesMatchesQueryParamsType::RegularExpression
                }),
                value: vm.value,
            }
        })
        .collect();
    (!query.is_empty()).then_some(query)
}

fn unsupported_match_findings(ctx: &mut Ctx<'_, '_>, m: &HttpMatchRequest, where_: &str) {
    let unsupported: Vec<&str> = [
        ("scheme", m.scheme.is_some()),
        ("authority", m.authority.is_some()),
        ("port", m.port.is_some()),
        (
            "gateways",
            m.gateways.as_ref().is_some_and(|g| !g.is_empty()),
        ),
    ]
    .into_iter()
    .filter_map(|(field, set)| set.then_some(field))
    .collect();
    if !unsupported.is_empty() {
        ctx.finding(
            f::VS_MATCH_UNSUPPORTED,
            format!("{where_}: match on {}", unsupported.join(", ")),
        );
    }
    if m.source_labels.is_some() || m.source_namespace.is_some() {
        ctx.finding(f::VS_SOURCE_MATCH, where_.to_string());
    }
    if m.without_headers.as_ref().is_some_and(|w| !w.is_empty()) {
        ctx.finding(f::VS_WITHOUT_HEADERS, where_.to_string());
    }
}

fn parse_method(m: &str) -> Option<HttpRouteRulesMatchesMethod> {
    use HttpRouteRulesMatchesMethod::*;
    Some(match m {
        "GET" => Get,
        "HEAD" => Head,
        "POST" => Post,
        "PUT" => Put,
        "DELETE" => Delete,
        "CONNECT" => Connect,
        "OPTIONS" => Options,
        "TRACE" => Trace,
        "PATCH" => Patch,
        _ => return None,
    })
}
