//! Gateway API orders HTTPRoute rules by match specificity, a VirtualService by position:
//! where a later rule would win over an earlier one that may match the same request, the
//! converted route would behave differently.

use std::collections::BTreeMap;

use meshmig_api::istio::{HttpMatchRequest, HttpRoute, StringMatch};

use super::Ctx;
use super::matching::{ValueMatch, string_match_to_regex};
use crate::findings as f;

/// How a path is matched, in Gateway API precedence order (a regex ranks lowest).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum PathKind {
    Regex,
    Prefix,
    Exact,
}

/// A match reduced to what Gateway API precedence and overlap need.
#[derive(Clone, Debug)]
pub(super) struct MatchKey {
    pub(super) path_type: PathKind,
    pub(super) path: String,
    pub(super) method: Option<String>,
    pub(super) headers: BTreeMap<String, ValueMatch>,
    pub(super) query: BTreeMap<String, ValueMatch>,
}

/// The precedence of a match, compared field by field; higher wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Precedence {
    path_type: PathKind,
    /// Only a literal path's length counts.
    path_len: usize,
    has_method: bool,
    headers: usize,
    query: usize,
}

impl MatchKey {
    fn from_istio(m: Option<&HttpMatchRequest>) -> Self {
        let (path_type, path) = match m.and_then(|m| m.uri.as_ref()) {
            Some(StringMatch { exact: Some(e), .. }) => (PathKind::Exact, e.clone()),
            Some(StringMatch {
                prefix: Some(p), ..
            }) => (PathKind::Prefix, p.clone()),
            Some(StringMatch { regex: Some(r), .. }) => (PathKind::Regex, r.clone()),
            _ => (PathKind::Prefix, "/".into()),
        };
        let conv = |map: Option<&BTreeMap<String, StringMatch>>| -> BTreeMap<String, ValueMatch> {
            map.into_iter()
                .flatten()
                .map(|(k, v)| (k.to_ascii_lowercase(), string_match_to_regex(v)))
                .collect()
        };
        Self {
            path_type,
            path,
            method: m
                .and_then(|m| m.method.as_ref())
                .and_then(|m| m.exact.clone()),
            headers: conv(m.and_then(|m| m.headers.as_ref())),
            query: conv(m.and_then(|m| m.query_params.as_ref())),
        }
    }

    pub(super) fn precedence(&self) -> Precedence {
        Precedence {
            path_type: self.path_type,
            path_len: if self.path_type == PathKind::Regex {
                0
            } else {
                self.path.len()
            },
            has_method: self.method.is_some(),
            headers: self.headers.len(),
            query: self.query.len(),
        }
    }

    /// Whether one request could match both.
    pub(super) fn may_overlap(&self, other: &MatchKey) -> bool {
        use PathKind::*;
        let path_overlap = match (self.path_type, other.path_type) {
            (Exact, Exact) => self.path == other.path,
            (Exact, Prefix) => prefix_covers(&other.path, &self.path),
            (Prefix, Exact) => prefix_covers(&self.path, &other.path),
            (Prefix, Prefix) => {
                prefix_covers(&self.path, &other.path) || prefix_covers(&other.path, &self.path)
            }
            (Regex, Exact) => regex_matches(&self.path, &other.path),
            (Exact, Regex) => regex_matches(&other.path, &self.path),
            (Regex, _) | (_, Regex) => {
                let lit = |k: &MatchKey| {
                    if k.path_type == Regex {
                        regex_literal_prefix(&k.path)
                    } else {
                        k.path.clone()
                    }
                };
                let (a, b) = (lit(self), lit(other));
                a.starts_with(&b) || b.starts_with(&a)
            }
        };
        let method_overlap = match (&self.method, &other.method) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        let kv_overlap = |a: &BTreeMap<String, ValueMatch>, b: &BTreeMap<String, ValueMatch>| {
            a.iter().all(|(k, va)| match b.get(k) {
                Some(vb) if va.exact && vb.exact => va.value == vb.value,
                _ => true,
            })
        };
        path_overlap
            && method_overlap
            && kv_overlap(&self.headers, &other.headers)
            && kv_overlap(&self.query, &other.query)
    }
}

/// Whether a VirtualService prefix (string prefix) can match a path the other one matches.
fn prefix_covers(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix)
}

/// Whether a path regex (matched in full, as Envoy does) matches `path`; true when it does
/// not compile (then nothing can be ruled out).
fn regex_matches(re: &str, path: &str) -> bool {
    regex::Regex::new(&format!("^(?:{re})$")).map_or(true, |r| r.is_match(path))
}

/// The literal text every match of a path regex starts with ("" when it cannot be told:
/// an alternation, or a pattern from the first character).
pub(super) fn regex_literal_prefix(re: &str) -> String {
    let re = re.strip_prefix('^').unwrap_or(re);
    if re.contains('|') {
        return String::new();
    }
    let mut out = String::new();
    let mut chars = re.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            // An escaped punctuation character is itself; `\d` and the like are classes.
            '\\' => match chars.next() {
                Some(n) if n.is_ascii_punctuation() => out.push(n),
                _ => break,
            },
            '.' | '$' | '*' | '+' | '?' | '(' | ')' | '[' | ']' | '{' | '}' => break,
            c => out.push(c),
        }
        // A quantified last character may be absent.
        if matches!(chars.peek(), Some('*' | '?' | '{')) {
            out.pop();
            break;
        }
    }
    out
}

pub(super) fn check_precedence(ctx: &mut Ctx<'_, '_>) {
    let routes: Vec<(usize, &HttpRoute)> = ctx.vs.spec.http.iter().flatten().enumerate().collect();
    let keys: Vec<(usize, Vec<MatchKey>)> = routes
        .iter()
        .map(|(i, r)| {
            let ks = match &r.matches {
                Some(ms) if !ms.is_empty() => {
                    ms.iter().map(|m| MatchKey::from_istio(Some(m))).collect()
                }
                _ => vec![MatchKey::from_istio(None)],
            };
            (*i, ks)
        })
        .collect();
    let mut problems = Vec::new();
    for (a, (i, ka)) in keys.iter().enumerate() {
        for (j, kb) in keys.iter().skip(a + 1) {
            let shadowed = ka.iter().any(|x| {
                kb.iter()
                    .any(|y| y.precedence() > x.precedence() && x.may_overlap(y))
            });
            if shadowed {
                problems.push(format!("http[{j}] would take precedence over http[{i}]"));
            }
        }
    }
    if !problems.is_empty() {
        let more = problems.len().saturating_sub(3);
        let mut shown = problems.into_iter().take(3).collect::<Vec<_>>().join("; ");
        if more > 0 {
            shown.push_str(&format!("; and {more} more"));
        }
        ctx.finding(f::VS_RULE_PRECEDENCE, shown);
    }
}
