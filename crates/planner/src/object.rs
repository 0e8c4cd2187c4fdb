//! References to Kubernetes objects and naming helpers.

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `kind`, `namespace` and `name` of an object; printed as `Kind/namespace/name` (cluster-scoped
/// objects: `Kind//name`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    /// Kind, e.g. `AuthorizationPolicy`.
    pub kind: String,
    /// Namespace; `None` for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

impl ObjectRef {
    /// A reference.
    pub fn new(kind: &str, namespace: Option<&str>, name: &str) -> Self {
        Self {
            kind: kind.to_string(),
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
        }
    }

    /// A reference to a namespaced object from its metadata.
    pub fn from_meta(kind: &str, meta: &ObjectMeta) -> Self {
        Self {
            kind: kind.to_string(),
            namespace: meta.namespace.clone(),
            name: meta.name.clone().unwrap_or_default(),
        }
    }

    /// A reference to a Namespace object.
    pub fn namespace(name: &str) -> Self {
        Self::new("Namespace", None, name)
    }

    /// Namespace or the empty string.
    pub fn ns(&self) -> &str {
        self.namespace.as_deref().unwrap_or("")
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.kind, self.ns(), self.name)
    }
}

/// A DNS-1123 label (max 63 chars) made from `parts` joined by `-`: lower-cased, invalid
/// characters replaced, and — when too long — truncated with a short hash of the full name so
/// distinct inputs keep distinct names.
pub fn dns_label(parts: &[&str]) -> String {
    bounded_name(parts, 63)
}

/// Like [`dns_label`] but for DNS-1123 subdomain names (max 253 chars).
pub fn dns_subdomain(parts: &[&str]) -> String {
    bounded_name(parts, 253)
}

/// A name of at most `max` characters made from `parts` the way [`dns_label`] makes one.
pub fn bounded_name(parts: &[&str], max: usize) -> String {
    let joined = parts.join("-");
    let mut name: String = joined
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let changed = name != joined;
    if name.len() > max || changed {
        let digest = Sha256::digest(joined.as_bytes());
        let hash: String = digest.iter().take(3).map(|b| format!("{b:02x}")).collect();
        if name.len() > max || (changed && name.len() + 7 > max) {
            name.truncate(max - 7);
        }
        if changed || name.len() + 7 <= max {
            name = format!("{}-{hash}", name.trim_end_matches('-'));
        }
    }
    let trimmed = name.trim_matches('-');
    if trimmed.is_empty() {
        "x".into()
    } else {
        trimmed.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names_stay_as_they_are() {
        assert_eq!(dns_label(&["reviews", "v1"]), "reviews-v1");
        assert_eq!(
            dns_subdomain(&["allow-get", "waypoint", "reviews"]),
            "allow-get-waypoint-reviews"
        );
    }

    #[test]
    fn invalid_characters_get_a_hash_suffix() {
        let a = dns_label(&["reviews", "V_1"]);
        let b = dns_label(&["reviews", "v-1"]);
        assert!(a.starts_with("reviews-v-1-"), "{a}");
        assert_ne!(a, b);
        assert!(a.len() <= 63);
    }

    #[test]
    fn long_names_are_truncated_with_hash() {
        let long = "a".repeat(80);
        let a = dns_label(&[&long, "x"]);
        let b = dns_label(&[&long, "y"]);
        assert!(a.len() <= 63, "{}", a.len());
        assert_ne!(a, b);
    }

    #[test]
    fn display_uses_kind_namespace_name() {
        let r = ObjectRef::new("Service", Some("bookinfo"), "reviews");
        assert_eq!(r.to_string(), "Service/bookinfo/reviews");
        assert_eq!(ObjectRef::namespace("x").to_string(), "Namespace//x");
    }
}
