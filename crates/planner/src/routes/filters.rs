//! The filters of a converted rule: header modifiers, redirects, mirrors and CORS.

use meshmig_api::gateway::*;
use meshmig_api::istio::{
    CorsPolicy, Destination, HeaderOperations, Headers, HttpRedirect, HttpRoute,
};
use serde_json::Value;

use super::backend::resolve_backend;
use super::{Ctx, duration_seconds, gateway_duration};
use crate::findings as f;

/// The filters of a route, in the order the sidecar applies them.
pub(super) fn rule_filters(
    ctx: &mut Ctx<'_, '_>,
    r: &HttpRoute,
    where_: &str,
) -> Vec<HttpRouteRulesFilters> {
    let mut filters = Vec::new();
    if let Some(h) = &r.headers {
        filters.extend(headers_to_filters(h));
    }
    if let Some(redirect) = &r.redirect {
        filters.push(redirect_filter(ctx, redirect, where_));
    }
    for m in mirrors(r) {
        if let Some(filter) = mirror_filter(ctx, &m, where_) {
            filters.push(filter);
        }
    }
    if let Some(filter) = cors_filter(ctx, r, where_) {
        filters.push(filter);
    }
    filters
}

/// The set, add and remove lists of a header modifier; `None` when all are empty.
fn header_modifier(h: &HeaderOperations) -> Option<HttpRouteRulesFiltersRequestHeaderModifier> {
    let set = h.set.as_ref().filter(|m| !m.is_empty()).map(|m| {
        m.iter()
            .map(|(k, v)| HttpRouteRulesFiltersRequestHeaderModifierSet {
                name: k.clone(),
                value: v.clone(),
            })
            .collect()
    });
    let add = h.add.as_ref().filter(|m| !m.is_empty()).map(|m| {
        m.iter()
            .map(|(k, v)| HttpRouteRulesFiltersRequestHeaderModifierAdd {
                name: k.clone(),
                value: v.clone(),
            })
            .collect()
    });
    let remove = h.remove.clone().filter(|r| !r.is_empty());
    (set.is_some() || add.is_some() || remove.is_some())
        .then_some(HttpRouteRulesFiltersRequestHeaderModifier { set, add, remove })
}

pub(super) fn headers_to_filters(h: &Headers) -> Vec<HttpRouteRulesFilters> {
    let mut out = Vec::new();
    if let Some(modifier) = h.request.as_ref().and_then(header_modifier) {
        out.push(HttpRouteRulesFilters {
            r#type: HttpRouteRulesFiltersType::RequestHeaderModifier,
            request_header_modifier: Some(modifier),
            ..Default::default()
        });
    }
    if let Some(modifier) = h.response.as_ref().and_then(header_modifier) {
        // Same shape as the request modifier; converted through JSON.
        let modifier = serde_json::to_value(modifier)
            .ok()
            .and_then(|v| serde_json::from_value(v).ok());
        out.push(HttpRouteRulesFilters {
            r#type: HttpRouteRulesFiltersType::ResponseHeaderModifier,
            response_header_modifier: modifier,
            ..Default::default()
        });
    }
    out
}

fn redirect_filter(
    ctx: &mut Ctx<'_, '_>,
    redirect: &HttpRedirect,
    where_: &str,
) -> HttpRouteRulesFilters {
    let status_code = i64::from(redirect.redirect_code.unwrap_or(301));
    if ![301, 302, 303, 307, 308].contains(&status_code) {
        ctx.finding(
            f::VS_MATCH_UNSUPPORTED,
            format!("{where_}: redirect code {status_code} is not supported"),
        );
    }
    if redirect.derive_port.is_some() {
        ctx.finding(
            f::VS_MATCH_UNSUPPORTED,
            format!("{where_}: redirect derivePort has no equivalent"),
        );
    }
    HttpRouteRulesFilters {
        r#type: HttpRouteRulesFiltersType::RequestRedirect,
        request_redirect: Some(HttpRouteRulesFiltersRequestRedirect {
            hostname: redirect.authority.clone(),
            path: redirect
                .uri
                .as_ref()
                .map(|u| HttpRouteRulesFiltersRequestRedirectPath {
                    replace_full_path: Some(u.clone()),
                    replace_prefix_match: None,
                    r#type: HttpRouteRulesFiltersRequestRedirectPathType::ReplaceFullPath,
                }),
            // Without a port or scheme the sidecar redirects to the scheme's default
            // port; a waypoint would take the request's port (checked with istiod).
            port: redirect
                .port
                .and_then(|p| i32::try_from(p).ok())
                .or_else(|| {
                    (redirect.scheme.is_none() && redirect.derive_port.is_none()).then_some(80)
                }),
            scheme: redirect.scheme.as_deref().and_then(|s| match s {
                "http" => Some(HttpRouteRulesFiltersRequestRedirectScheme::Http),
                "https" => Some(HttpRouteRulesFiltersRequestRedirectScheme::Https),
                _ => None,
            }),
            status_code: Some(status_code),
        }),
        ..Default::default()
    }
}

/// Where a route mirrors to, and the share of requests (all when `None`).
struct Mirror<'r> {
    destination: &'r Destination,
    percent: Option<f64>,
}

fn mirrors(r: &HttpRoute) -> Vec<Mirror<'_>> {
    let mut out = Vec::new();
    if let Some(m) = &r.mirror {
        let percent = r
            .mirror_percentage
            .as_ref()
            .and_then(|p| p.as_f64())
            .or_else(|| r.mirror_percent.as_ref().and_then(Value::as_f64));
        out.push(Mirror {
            destination: m,
            percent,
        });
    }
    for m in r.mirrors.iter().flatten() {
        out.push(Mirror {
            destination: &m.destination,
            percent: m.percentage.as_ref().and_then(|p| p.as_f64()),
        });
    }
    out
}

fn mirror_filter(
    ctx: &mut Ctx<'_, '_>,
    m: &Mirror<'_>,
    where_: &str,
) -> Option<HttpRouteRulesFilters> {
    let b = resolve_backend(ctx, m.destination, &format!("{where_}.mirror"))?;
    let fraction = m.percent.filter(|p| *p < 100.0).map(|p| {
        let numerator = (p * 10_000.0).round() as i32;
        if (f64::from(numerator) / 10_000.0 - p).abs() > f64::EPSILON {
            ctx.finding(f::VS_MIRROR_PERCENT, format!("{where_}: {p}%"));
        }
        HttpRouteRulesFiltersRequestMirrorFraction {
            numerator,
            denominator: Some(1_000_000),
        }
    });
    Some(HttpRouteRulesFilters {
        r#type: HttpRouteRulesFiltersType::RequestMirror,
        request_mirror: Some(HttpRouteRulesFiltersRequestMirror {
            backend_ref: HttpRouteRulesFiltersRequestMirrorBackendRef {
                group: None,
                kind: None,
                name: b.name,
                namespace: (b.namespace != ctx.route_ns).then_some(b.namespace),
                port: b.port,
            },
            fraction,
            percent: None,
        }),
        ..Default::default()
    })
}

fn cors_filter(
    ctx: &mut Ctx<'_, '_>,
    r: &HttpRoute,
    where_: &str,
) -> Option<HttpRouteRulesFilters> {
    let cors = r.cors_policy.as_ref()?;
    if !ctx.opts.cors_filter {
        ctx.finding(
            f::VS_CORS_UNSUPPORTED,
            format!("{where_}: corsPolicy (the installed HTTPRoute CRD has no CORS filter)"),
        );
        return None;
    }
    if cors
        .extra
        .get("unmatchedPreflights")
        .and_then(Value::as_str)
        != Some("IGNORE")
    {
        ctx.finding(f::VS_CORS_PREFLIGHT, format!("{where_}: corsPolicy"));
    }
    let origins = cors_origins(ctx, cors, where_);
    let max_age = cors
        .max_age
        .as_deref()
        .and_then(gateway_duration)
        .and_then(|d| duration_seconds(&d));
    Some(HttpRouteRulesFilters {
        r#type: HttpRouteRulesFiltersType::Cors,
        cors: Some(HttpRouteRulesFiltersCors {
            allow_credentials: cors.allow_credentials,
            allow_headers: cors.allow_headers.clone(),
            allow_methods: cors.allow_methods.clone(),
            allow_origins: (!origins.is_empty()).then_some(origins),
            expose_headers: cors.expose_headers.clone(),
            max_age,
        }),
        ..Default::default()
    })
}

fn cors_origins(ctx: &mut Ctx<'_, '_>, cors: &CorsPolicy, where_: &str) -> Vec<String> {
    let mut origins: Vec<String> = cors.allow_origin.clone().unwrap_or_default();
    for o in cors.allow_origins.iter().flatten() {
        match (&o.exact, &o.prefix, &o.regex) {
            (Some(e), _, _) => origins.push(e.clone()),
            _ => ctx.finding(
                f::VS_MATCH_UNSUPPORTED,
                format!(
                    "{where_}: CORS origins must be exact (prefix/regex origins have no equivalent)"
                ),
            ),
        }
    }
    origins
}
