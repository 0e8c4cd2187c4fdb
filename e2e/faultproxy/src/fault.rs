//! The pure parts: what a request is, which fault it gets (deterministic for a seed), and
//! the `Status` bodies the injected errors carry.

use std::fmt;
use std::time::Duration;

use serde_json::{Value, json};

/// A fault the proxy can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// HTTP 500 with a `Status` body (reason `InternalError`); the request is not forwarded.
    ServerError,
    /// HTTP 429 with `Retry-After: 1` and a `Status` body (reason `TooManyRequests`); not
    /// forwarded.
    Throttle,
    /// HTTP 409 with a `Status` body (reason `Conflict`); only for writes; not forwarded.
    Conflict,
    /// The request is forwarded after a delay (0.5–2 s by default).
    Slow,
    /// The connection is closed without a response; the request is not forwarded.
    DropBefore,
    /// The request is forwarded (a write takes effect) and its response read, then the
    /// connection is closed without a response. Not for watches.
    DropAfter,
    /// A watch stream is cut (the connection closed mid-stream). Decided per stream, not per
    /// request: see [`watch_cut_after`].
    WatchCut,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 7] = [
        FaultKind::ServerError,
        FaultKind::Throttle,
        FaultKind::Conflict,
        FaultKind::Slow,
        FaultKind::DropBefore,
        FaultKind::DropAfter,
        FaultKind::WatchCut,
    ];

    /// Short name, as in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::ServerError => "500",
            FaultKind::Throttle => "429",
            FaultKind::Conflict => "409",
            FaultKind::Slow => "slow",
            FaultKind::DropBefore => "drop-before",
            FaultKind::DropAfter => "drop-after",
            FaultKind::WatchCut => "watch-cut",
        }
    }

    /// The kinds [`choose`] picks from, per request.
    pub const PER_REQUEST: [FaultKind; 6] = [
        FaultKind::ServerError,
        FaultKind::Throttle,
        FaultKind::Conflict,
        FaultKind::Slow,
        FaultKind::DropBefore,
        FaultKind::DropAfter,
    ];

    /// Whether the kind can be injected into this request.
    pub fn applies_to(self, req: &RequestInfo) -> bool {
        match self {
            FaultKind::Conflict => req.is_write(),
            FaultKind::WatchCut => req.watch,
            FaultKind::DropAfter => !req.watch,
            FaultKind::ServerError | FaultKind::Throttle | FaultKind::Slow => true,
            FaultKind::DropBefore => true,
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What an API request is about, from its method, path and query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestInfo {
    /// HTTP method.
    pub method: http::Method,
    /// Kubernetes verb: get, list, watch, create, update, patch, delete, deletecollection,
    /// or other.
    pub verb: &'static str,
    /// API group (`""` for the core group).
    pub group: String,
    /// Resource (plural), with `/subresource` when there is one, e.g. `meshmigrations/status`.
    pub resource: String,
    /// Namespace of the request, if namespaced.
    pub namespace: Option<String>,
    /// Object name, if the path names one.
    pub name: Option<String>,
    /// Whether the request is a watch (`watch=true`).
    pub watch: bool,
}

/// Subresources of `namespaces` (`/api/v1/namespaces/<name>/<sub>`), which otherwise look
/// like a namespaced list of `<sub>`.
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];

impl RequestInfo {
    /// Parses an API request.
    pub fn parse(method: &http::Method, path: &str, query: Option<&str>) -> Self {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        // /api/v1/... or /apis/group/version/...
        let (group, rest): (&str, &[&str]) = match parts.first() {
            Some(&"api") => ("", parts.get(2..).unwrap_or_default()),
            Some(&"apis") => (
                parts.get(1).copied().unwrap_or_default(),
                parts.get(3..).unwrap_or_default(),
            ),
            _ => ("", &[]),
        };
        let (namespace, rest) = match rest {
            ["namespaces", _, sub] if group.is_empty() && NAMESPACE_SUBRESOURCES.contains(sub) => {
                (None, rest)
            }
            ["namespaces", ns, tail @ ..] if !tail.is_empty() => (Some((*ns).to_string()), tail),
            _ => (None, rest),
        };
        let resource = rest.first().copied().unwrap_or("other");
        let name = rest.get(1).map(|s| (*s).to_string());
        let subresource = rest.get(2).copied();
        let watch =
            query.is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
        let verb = match *method {
            http::Method::GET if watch => "watch",
            http::Method::GET if name.is_some() => "get",
            http::Method::GET => "list",
            http::Method::POST => "create",
            http::Method::PUT => "update",
            http::Method::PATCH => "patch",
            http::Method::DELETE if name.is_some() => "delete",
            http::Method::DELETE => "deletecollection",
            _ => "other",
        };
        let resource = match subresource {
            Some(s) => format!("{resource}/{s}"),
            None => resource.to_string(),
        };
        RequestInfo {
            method: method.clone(),
            verb,
            group: group.to_string(),
            resource,
            namespace,
            name,
            watch,
        }
    }

    /// Whether the request changes something (POST, PUT, PATCH, DELETE).
    pub fn is_write(&self) -> bool {
        matches!(
            self.method,
            http::Method::POST | http::Method::PUT | http::Method::PATCH | http::Method::DELETE
        )
    }

    /// `verb resource`, e.g. `patch namespaces`: the key of per-call statistics.
    pub fn call(&self) -> String {
        format!("{} {}", self.verb, self.resource)
    }
}

/// Which requests may get a fault: every verb and resource listed (an empty list matches
/// all). Resources match with or without their subresource (`meshmigrations` matches
/// `meshmigrations/status`; `meshmigrations/status` matches only that).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Verbs (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, …).
    pub verbs: Vec<String>,
    /// Resources (plural, optionally `/subresource`).
    pub resources: Vec<String>,
}

impl Filter {
    /// Every request.
    pub fn any() -> Self {
        Filter::default()
    }

    /// Only `verb` on `resource`, e.g. `Filter::only("patch", "namespaces")`.
    pub fn only(verb: &str, resource: &str) -> Self {
        Filter {
            verbs: vec![verb.to_string()],
            resources: vec![resource.to_string()],
        }
    }

    /// Whether `req` may get a fault.
    pub fn matches(&self, req: &RequestInfo) -> bool {
        let verb_ok = self.verbs.is_empty() || self.verbs.iter().any(|v| v == req.verb);
        let base = req.resource.split('/').next().unwrap_or_default();
        let resource_ok = self.resources.is_empty()
            || self
                .resources
                .iter()
                .any(|r| *r == req.resource || (!r.contains('/') && r == base));
        verb_ok && resource_ok
    }
}

/// xorshift64*: deterministic for a seed, dependency-free.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value, 0 included).
    pub fn new(seed: u64) -> Self {
        // splitmix64 of the seed, so nearby seeds give unrelated sequences; never 0.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(z | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n) (0 when n is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// Uniform in [lo, hi] milliseconds.
    pub fn millis_between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }
}

/// Whether `kind` may be injected into `req`: enabled (`kinds` empty or containing it),
/// applicable, and not excluded for it (`exclude`: a kind and the requests it must never be
/// injected into).
fn allowed(
    kind: FaultKind,
    kinds: &[FaultKind],
    exclude: &[(FaultKind, Filter)],
    req: &RequestInfo,
) -> bool {
    (kinds.is_empty() || kinds.contains(&kind))
        && kind.applies_to(req)
        && !exclude.iter().any(|(x, f)| *x == kind && f.matches(req))
}

/// Decides the fault of one request: none unless the filter matches and a draw falls below
/// `rate`; then one of the allowed [`FaultKind::PER_REQUEST`] kinds, equally likely.
/// Deterministic: the same seed and the same sequence of requests give the same faults.
pub fn choose(
    rng: &mut Rng,
    rate: f64,
    filter: &Filter,
    kinds: &[FaultKind],
    exclude: &[(FaultKind, Filter)],
    req: &RequestInfo,
) -> Option<FaultKind> {
    if rate <= 0.0 || !filter.matches(req) {
        return None;
    }
    if rng.next_f64() >= rate {
        return None;
    }
    let applicable: Vec<FaultKind> = FaultKind::PER_REQUEST
        .into_iter()
        .filter(|k| allowed(*k, kinds, exclude, req))
        .collect();
    let i = rng.below(applicable.len() as u64) as usize;
    applicable.get(i).copied()
}

/// A watch stream is cut at least this long into a period of its life.
pub const WATCH_CUT_MIN: Duration = Duration::from_millis(500);

/// When to cut a watch stream, measured from its start: in each `period` of its life the
/// stream is cut with probability `rate`, at a uniform time within that period (at least
/// [`WATCH_CUT_MIN`] into it). None when the stream is not to be cut (not a watch, not
/// matched, `WatchCut` not allowed, rate 0).
pub fn watch_cut_after(
    rng: &mut Rng,
    rate: f64,
    filter: &Filter,
    kinds: &[FaultKind],
    exclude: &[(FaultKind, Filter)],
    req: &RequestInfo,
    period: Duration,
) -> Option<Duration> {
    if !req.watch
        || rate <= 0.0
        || !filter.matches(req)
        || !allowed(FaultKind::WatchCut, kinds, exclude, req)
    {
        return None;
    }
    let mut periods: u32 = 0;
    while rng.next_f64() >= rate {
        periods += 1;
        if periods >= 100_000 {
            return None;
        }
    }
    let period_ms = period.as_millis() as u64;
    let min_ms = (WATCH_CUT_MIN.as_millis() as u64).min(period_ms);
    let within = Duration::from_millis(rng.millis_between(min_ms, period_ms));
    Some(period * periods + within)
}

/// HTTP status code, reason and message of an injected error response.
pub fn injected_error(kind: FaultKind, req: &RequestInfo) -> Option<(u16, &'static str, String)> {
    let what = match &req.name {
        Some(n) => format!("{} \"{n}\"", req.resource),
        None => req.resource.clone(),
    };
    match kind {
        FaultKind::ServerError => Some((
            500,
            "InternalError",
            format!(
                "Internal error occurred: {} {what}: injected by meshmig-faultproxy",
                req.verb
            ),
        )),
        FaultKind::Throttle => Some((
            429,
            "TooManyRequests",
            format!(
                "Too many requests, please try again later ({} {what}, injected by meshmig-faultproxy)",
                req.verb
            ),
        )),
        FaultKind::Conflict => Some((
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {what}: the object has been modified; please apply your changes to the latest version and try again (injected by meshmig-faultproxy)"
            ),
        )),
        _ => None,
    }
}

/// The `Status` body of an error response, as the API server writes it.
pub fn status_body(code: u16, reason: &str, message: &str, req: &RequestInfo) -> Value {
    let mut details = serde_json::Map::new();
    if let Some(name) = &req.name {
        details.insert("name".into(), json!(name));
    }
    if !req.group.is_empty() {
        details.insert("group".into(), json!(req.group));
    }
    details.insert(
        "kind".into(),
        json!(req.resource.split('/').next().unwrap_or_default()),
    );
    if code == 429 {
        details.insert("retryAfterSeconds".into(), json!(1));
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details,
        "code": code,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use http::Method;

    fn req(method: Method, path: &str, query: Option<&str>) -> RequestInfo {
        RequestInfo::parse(&method, path, query)
    }

    #[test]
    fn requests_are_parsed() {
        let r = req(Method::PATCH, "/api/v1/namespaces/bookinfo", None);
        assert_eq!(
            (r.verb, r.resource.as_str(), r.name.as_deref(), r.namespace),
            ("patch", "namespaces", Some("bookinfo"), None)
        );
        let r = req(
            Method::GET,
            "/api/v1/namespaces/b/pods",
            Some("watch=true&rv=1"),
        );
        assert_eq!(
            (r.verb, r.resource.as_str(), r.namespace.as_deref(), r.watch),
            ("watch", "pods", Some("b"), true)
        );
        let r = req(Method::POST, "/api/v1/namespaces/b/configmaps", None);
        assert_eq!(
            (r.verb, r.resource.as_str(), r.name),
            ("create", "configmaps", None)
        );
        let r = req(
            Method::PATCH,
            "/apis/meshmig.io/v1alpha1/meshmigrations/x/status",
            None,
        );
        assert_eq!(
            (
                r.verb,
                r.resource.as_str(),
                r.group.as_str(),
                r.name.as_deref()
            ),
            ("patch", "meshmigrations/status", "meshmig.io", Some("x"))
        );
        let r = req(Method::PUT, "/api/v1/namespaces/b/finalize", None);
        assert_eq!(
            (r.verb, r.resource.as_str(), r.name.as_deref()),
            ("update", "namespaces/finalize", Some("b"))
        );
        let r = req(
            Method::DELETE,
            "/apis/security.istio.io/v1/namespaces/b/authorizationpolicies/p",
            None,
        );
        assert_eq!(
            (r.verb, r.resource.as_str()),
            ("delete", "authorizationpolicies")
        );
        assert!(r.is_write());
        assert!(!req(Method::GET, "/api/v1/pods", None).is_write());
        assert_eq!(req(Method::GET, "/api/v1/pods", None).verb, "list");
    }

    #[test]
    fn filters_match_verb_and_resource() {
        let f = Filter::only("patch", "namespaces");
        assert!(f.matches(&req(Method::PATCH, "/api/v1/namespaces/bookinfo", None)));
        assert!(!f.matches(&req(Method::GET, "/api/v1/namespaces/bookinfo", None)));
        assert!(!f.matches(&req(Method::PATCH, "/api/v1/namespaces/b/services/s", None)));
        let f = Filter {
            verbs: vec![],
            resources: vec!["meshmigrations".into()],
        };
        assert!(f.matches(&req(
            Method::PATCH,
            "/apis/meshmig.io/v1alpha1/meshmigrations/x/status",
            None
        )));
        let f = Filter {
            verbs: vec![],
            resources: vec!["meshmigrations/status".into()],
        };
        assert!(!f.matches(&req(
            Method::PATCH,
            "/apis/meshmig.io/v1alpha1/meshmigrations/x",
            None
        )));
        assert!(Filter::any().matches(&req(Method::GET, "/version", None)));
    }

    fn sample() -> Vec<RequestInfo> {
        let mut v = Vec::new();
        for i in 0..400 {
            v.push(match i % 4 {
                0 => req(Method::GET, "/api/v1/namespaces/b/pods", Some("watch=true")),
                1 => req(Method::PATCH, "/api/v1/namespaces/b", None),
                2 => req(Method::GET, "/api/v1/namespaces/b/configmaps/c", None),
                _ => req(Method::POST, "/api/v1/namespaces/b/configmaps", None),
            });
        }
        v
    }

    fn run(seed: u64, rate: f64, kinds: &[FaultKind]) -> Vec<Option<FaultKind>> {
        let mut rng = Rng::new(seed);
        sample()
            .iter()
            .map(|r| choose(&mut rng, rate, &Filter::any(), kinds, &[], r))
            .collect()
    }

    /// Seed 42, rate 0.5, over `sample()`: watch, patch, get, create, watch, …
    const GOLDEN: [&str; 12] = [
        "drop-before",
        "429",
        "-",
        "-",
        "drop-before",
        "-",
        "-",
        "409",
        "drop-before",
        "slow",
        "-",
        "-",
    ];

    #[test]
    fn selection_is_deterministic_by_seed() {
        assert_eq!(run(7, 0.3, &[]), run(7, 0.3, &[]));
        assert_ne!(run(7, 0.3, &[]), run(8, 0.3, &[]));
        // Golden prefix, so a change of the algorithm is a conscious one.
        let first: Vec<String> = run(42, 0.5, &[])
            .into_iter()
            .take(12)
            .map(|f| f.map_or("-".to_string(), |k| k.name().to_string()))
            .collect();
        assert_eq!(first, GOLDEN);
    }

    #[test]
    fn rate_bounds_and_kind_applicability() {
        assert!(run(1, 0.0, &[]).iter().all(Option::is_none));
        let all = run(1, 1.0, &[]);
        assert!(all.iter().all(Option::is_some));
        let reqs = sample();
        for (r, f) in reqs.iter().zip(&all) {
            let k = f.unwrap();
            assert!(k.applies_to(r), "{k} on {r:?}");
            if k == FaultKind::Conflict {
                assert!(r.is_write());
            }
            assert_ne!(k, FaultKind::WatchCut);
            if k == FaultKind::DropAfter {
                assert!(!r.watch);
            }
        }
        // Every per-request kind shows up at rate 1 over 400 requests.
        for k in FaultKind::PER_REQUEST {
            assert!(all.contains(&Some(k)), "{k} never chosen");
        }
        // About 10% at rate 0.1.
        let n = run(3, 0.1, &[]).iter().filter(|f| f.is_some()).count();
        assert!((20..=65).contains(&n), "{n} of 400");
        // Only enabled kinds; a kind that never applies means no fault.
        let only = run(5, 1.0, &[FaultKind::Conflict]);
        for (r, f) in reqs.iter().zip(&only) {
            assert_eq!(f.is_some(), r.is_write(), "{r:?}");
        }
    }

    #[test]
    fn watch_streams_are_cut_per_period_of_their_life() {
        let period = Duration::from_secs(5);
        let min = WATCH_CUT_MIN;
        let w = req(Method::GET, "/api/v1/pods", Some("watch=true"));
        let cut = |rng: &mut Rng, rate: f64, r: &RequestInfo| {
            watch_cut_after(rng, rate, &Filter::any(), &[], &[], r, period)
        };
        // Rate 1: within the first period.
        let mut rng = Rng::new(9);
        for _ in 0..200 {
            let d = cut(&mut rng, 1.0, &w).unwrap();
            assert!(d >= min && d <= period, "{d:?}");
        }
        // Rate 0.1: about 10 periods on average; deterministic by seed.
        let mut rng = Rng::new(9);
        let cuts: Vec<Duration> = (0..2000).map(|_| cut(&mut rng, 0.1, &w).unwrap()).collect();
        let mean = cuts.iter().sum::<Duration>() / 2000;
        assert!(
            mean > Duration::from_secs(40) && mean < Duration::from_secs(60),
            "{mean:?}"
        );
        let mut again = Rng::new(9);
        assert_eq!(cut(&mut again, 0.1, &w), Some(cuts[0]));
        // Never for other requests, rate 0, a filter that does not match, or when excluded.
        let mut rng = Rng::new(9);
        let get = req(Method::GET, "/api/v1/pods", None);
        assert_eq!(cut(&mut rng, 1.0, &get), None);
        assert_eq!(cut(&mut rng, 0.0, &w), None);
        let f = Filter::only("watch", "services");
        assert_eq!(
            watch_cut_after(&mut rng, 1.0, &f, &[], &[], &w, period),
            None
        );
        let only_500 = [FaultKind::ServerError];
        assert_eq!(
            watch_cut_after(&mut rng, 1.0, &Filter::any(), &only_500, &[], &w, period),
            None
        );
        let ex = [(FaultKind::WatchCut, Filter::any())];
        assert_eq!(
            watch_cut_after(&mut rng, 1.0, &Filter::any(), &[], &ex, &w, period),
            None
        );
    }

    #[test]
    fn filtered_requests_never_get_faults() {
        let mut rng = Rng::new(11);
        let f = Filter::only("patch", "namespaces");
        for r in sample() {
            let got = choose(&mut rng, 1.0, &f, &[FaultKind::ServerError], &[], &r);
            assert_eq!(got.is_some(), r.verb == "patch", "{r:?}");
        }
    }

    #[test]
    fn excluded_kinds_are_never_injected_into_matching_requests() {
        let mut rng = Rng::new(13);
        let exclude = [(
            FaultKind::Conflict,
            Filter {
                verbs: vec!["create".into()],
                resources: vec![],
            },
        )];
        let mut conflicts_on_patch = 0;
        for r in sample() {
            let got = choose(&mut rng, 1.0, &Filter::any(), &[], &exclude, &r);
            assert!(got.is_some(), "{r:?}");
            if r.verb == "create" {
                assert_ne!(got, Some(FaultKind::Conflict), "{r:?}");
            }
            if r.verb == "patch" && got == Some(FaultKind::Conflict) {
                conflicts_on_patch += 1;
            }
        }
        assert!(conflicts_on_patch > 0);
        // Excluding the only enabled kind leaves no fault.
        let none = choose(
            &mut rng,
            1.0,
            &Filter::any(),
            &[FaultKind::Conflict],
            &exclude,
            &req(Method::POST, "/api/v1/namespaces/b/configmaps", None),
        );
        assert_eq!(none, None);
    }

    #[test]
    fn status_bodies_are_api_server_statuses() {
        let r = req(Method::PATCH, "/api/v1/namespaces/bookinfo", None);
        let (code, reason, message) = injected_error(FaultKind::Conflict, &r).unwrap();
        let body = status_body(code, reason, &message, &r);
        assert_eq!(body["kind"], "Status");
        assert_eq!(body["apiVersion"], "v1");
        assert_eq!(body["status"], "Failure");
        assert_eq!(body["reason"], "Conflict");
        assert_eq!(body["code"], 409);
        assert_eq!(body["details"]["name"], "bookinfo");
        assert_eq!(body["details"]["kind"], "namespaces");
        assert!(message.contains("namespaces \"bookinfo\""), "{message}");
        let r = req(Method::GET, "/apis/apps/v1/namespaces/b/deployments", None);
        let (code, reason, message) = injected_error(FaultKind::Throttle, &r).unwrap();
        let body = status_body(code, reason, &message, &r);
        assert_eq!(
            (body["code"].as_u64(), body["reason"].as_str()),
            (Some(429), Some("TooManyRequests"))
        );
        assert_eq!(body["details"]["retryAfterSeconds"], 1);
        assert_eq!(body["details"]["group"], "apps");
        let (code, reason, message) = injected_error(FaultKind::ServerError, &r).unwrap();
        assert_eq!((code, reason), (500, "InternalError"));
        let body = status_body(code, reason, &message, &r);
        assert!(injected_error(FaultKind::Slow, &r).is_none());
        // kube-rs parses it as an API error with code and reason.
        let parsed: kube::core::Status = serde_json::from_value(body).unwrap();
        assert_eq!(
            (parsed.code, parsed.reason.as_str()),
            (500, "InternalError")
        );
        assert!(parsed.is_failure());
    }
}
