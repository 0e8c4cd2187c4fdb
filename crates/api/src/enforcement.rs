//! Who enforces a policy, and how a migration step can leave it enforced differently.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A proxy that enforces AuthorizationPolicies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Enforcer {
    /// The destination's sidecar (selector, namespace-wide and mesh-wide policies).
    Sidecar,
    /// The destination node's ztunnel, in ambient (the L4 parts of the same policies).
    Ztunnel,
    /// The waypoint serving the destination (targetRefs policies).
    Waypoint,
}

impl Enforcer {
    /// The name the plan shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Enforcer::Sidecar => "sidecar",
            Enforcer::Ztunnel => "ztunnel",
            Enforcer::Waypoint => "waypoint",
        }
    }
}

impl fmt::Display for Enforcer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which way enforcement differs from the sidecar's during a window of steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WindowKind {
    /// Requests the sidecar refused are admitted: a security gap, gated by a finding.
    FailOpen,
    /// Requests the sidecar admitted are refused: an outage risk.
    FailClosed,
}

impl WindowKind {
    /// The name the plan and findings use.
    pub fn as_str(self) -> &'static str {
        match self {
            WindowKind::FailOpen => "fail-open",
            WindowKind::FailClosed => "fail-closed",
        }
    }
}

impl fmt::Display for WindowKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What started a rollback (`status.rollback.requestedBy`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum RequestedBy {
    /// The `meshmig.io/rollback` annotation.
    Annotation,
    /// A failed checkpoint with `onFailure: Rollback`.
    OnFailure,
    /// Deleting the MeshMigration with `onDelete: Rollback`.
    OnDelete,
}

impl RequestedBy {
    /// The value the status carries.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestedBy::Annotation => "annotation",
            RequestedBy::OnFailure => "onFailure",
            RequestedBy::OnDelete => "onDelete",
        }
    }
}

impl fmt::Display for RequestedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_is_written_as_its_name() {
        for e in [Enforcer::Sidecar, Enforcer::Ztunnel, Enforcer::Waypoint] {
            assert_eq!(serde_json::to_value(e).unwrap(), e.as_str());
        }
        for w in [WindowKind::FailOpen, WindowKind::FailClosed] {
            assert_eq!(serde_json::to_value(w).unwrap(), w.as_str());
        }
        for r in [
            RequestedBy::Annotation,
            RequestedBy::OnFailure,
            RequestedBy::OnDelete,
        ] {
            let wire = serde_json::to_value(r).unwrap();
            assert_eq!(wire, r.as_str());
            assert_eq!(serde_json::from_value::<RequestedBy>(wire).unwrap(), r);
        }
    }
}
