//! The migration's vocabulary: its nine steps and the checks that gate them.
//!
//! A step is written to the API as its number, so the `MeshMigration` schema keeps the plain
//! integers users type in `pauseBefore` and read in `status`; inside meshmig it is a [`Step`],
//! and the step numbers appear as literals only here.

use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

/// One of the nine migration steps, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum Step {
    /// Check that the cluster can be migrated at all.
    Prerequisites,
    /// Switch the control plane to the ambient profile, with istio-cni and ztunnel.
    ControlPlane,
    /// Restart sidecar workloads so their sidecars speak HBONE.
    HboneSidecars,
    /// Deploy the waypoints, unused yet.
    Waypoints,
    /// Create the waypoint copies of the policies, beside the originals.
    Policies,
    /// Label the namespace for ambient (sidecars stay injected).
    AmbientEnrollment,
    /// Bind the Services to their waypoints.
    WaypointActivation,
    /// Remove the policies the waypoint copies replaced.
    PolicySimplification,
    /// Stop injection and restart workloads without their sidecars.
    SidecarRemoval,
}

impl Step {
    /// Every step, in order.
    pub const ALL: [Step; 9] = [
        Step::Prerequisites,
        Step::ControlPlane,
        Step::HboneSidecars,
        Step::Waypoints,
        Step::Policies,
        Step::AmbientEnrollment,
        Step::WaypointActivation,
        Step::PolicySimplification,
        Step::SidecarRemoval,
    ];
    /// The step a migration starts with.
    pub const FIRST: Step = Step::Prerequisites;
    /// The step that completes a namespace.
    pub const LAST: Step = Step::SidecarRemoval;

    /// The step's number, 1..=9: what the API and the annotations carry.
    pub const fn number(self) -> u8 {
        match self {
            Step::Prerequisites => 1,
            Step::ControlPlane => 2,
            Step::HboneSidecars => 3,
            Step::Waypoints => 4,
            Step::Policies => 5,
            Step::AmbientEnrollment => 6,
            Step::WaypointActivation => 7,
            Step::PolicySimplification => 8,
            Step::SidecarRemoval => 9,
        }
    }

    /// The step numbered `n`, if 1..=9.
    pub fn from_number(n: u8) -> Option<Step> {
        Step::ALL.into_iter().find(|s| s.number() == n)
    }

    /// Its name, as the docs and the CLI show it.
    pub const fn name(self) -> &'static str {
        match self {
            Step::Prerequisites => "Prerequisites",
            Step::ControlPlane => "Control plane",
            Step::HboneSidecars => "HBONE sidecars",
            Step::Waypoints => "Waypoints",
            Step::Policies => "Policies",
            Step::AmbientEnrollment => "Ambient enrollment",
            Step::WaypointActivation => "Waypoint activation",
            Step::PolicySimplification => "Policy simplification",
            Step::SidecarRemoval => "Sidecar removal",
        }
    }

    /// The step after this one.
    pub fn next(self) -> Option<Step> {
        Step::from_number(self.number() + 1)
    }

    /// The step before this one.
    pub fn previous(self) -> Option<Step> {
        self.number().checked_sub(1).and_then(Step::from_number)
    }

    /// Steps `from..=to`, in order (empty when `from > to`).
    pub fn range(from: Step, to: Step) -> impl DoubleEndedIterator<Item = Step> {
        Step::ALL
            .into_iter()
            .filter(move |s| (from..=to).contains(s))
    }

    /// The step every namespace of the migration must have finished before any namespace
    /// starts this one: the reference procedure's sequencing rules (DESIGN.md §3), which keep
    /// one namespace's waypoints and sidecar removal from running ahead of the mesh state of
    /// the namespaces whose workloads call it.
    pub fn barrier(self) -> Option<Step> {
        match self {
            Step::WaypointActivation => Some(Step::AmbientEnrollment),
            Step::SidecarRemoval => Some(Step::PolicySimplification),
            _ => None,
        }
    }

    /// Whether the step restarts workloads (and so follows `ordering: Listed`).
    pub fn restarts_workloads(self) -> bool {
        matches!(self, Step::HboneSidecars | Step::SidecarRemoval)
    }

    /// Whether undoing this step changes the control plane, which is cluster-wide: a
    /// rollback to it or below it touches every namespace at once.
    pub fn is_cluster_wide(self) -> bool {
        self <= Step::ControlPlane
    }

    /// The checks of its checkpoint, in the order they are reported.
    pub fn checks(self) -> &'static [CheckId] {
        use CheckId as C;
        match self {
            Step::Prerequisites => &[
                C::IstioVersion,
                C::NoBlockers,
                C::GatewayApiCrds,
                C::CniCompatible,
            ],
            Step::ControlPlane => &[C::ControlPlaneAmbient, C::IstioCniReady, C::ZtunnelReady],
            Step::HboneSidecars => &[C::RolloutsComplete, C::SidecarsHbone, C::Probes],
            Step::Waypoints => &[
                C::WaypointProgrammed,
                C::WaypointReady,
                C::WaypointUnused,
                C::Probes,
            ],
            Step::Policies => &[C::ObjectsExist, C::ObjectsAccepted, C::Probes],
            Step::AmbientEnrollment => &[C::NamespaceEnrolled, C::SidecarsStillInjected, C::Probes],
            Step::WaypointActivation => &[
                C::WaypointProgrammed,
                C::ServicesBound,
                C::RoutesAccepted,
                C::PoliciesAccepted,
                C::Probes,
            ],
            Step::PolicySimplification => {
                &[C::ObjectsRemoved, C::MigratedObjectsPresent, C::Probes]
            }
            Step::SidecarRemoval => &[
                C::RolloutsComplete,
                C::NoSidecars,
                C::PodsRedirected,
                C::OriginalsRemoved,
                C::Probes,
            ],
        }
    }
}

/// A namespace starts at the first step.
impl Default for Step {
    fn default() -> Step {
        Step::FIRST
    }
}

impl From<Step> for u8 {
    fn from(step: Step) -> u8 {
        step.number()
    }
}

impl TryFrom<u8> for Step {
    type Error = StepError;

    fn try_from(n: u8) -> Result<Step, StepError> {
        Step::from_number(n).ok_or_else(|| StepError(n.to_string()))
    }
}

impl FromStr for Step {
    type Err = StepError;

    fn from_str(s: &str) -> Result<Step, StepError> {
        s.trim()
            .parse::<u8>()
            .ok()
            .and_then(Step::from_number)
            .ok_or_else(|| StepError(s.to_string()))
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.number())
    }
}

/// The schema of the number a step is written as (the same as `u8`'s, so the CRD keeps the
/// ranges its fields declare).
impl JsonSchema for Step {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        u8::schema_name()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        u8::json_schema(generator)
    }
}

/// A value that is not a step number.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a step: steps are numbered 1 to 9")]
pub struct StepError(String);

/// A check of a checkpoint: its identifier is the `name` of a check in the status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckId {
    /// The Istio version supports the migration.
    IstioVersion,
    /// The plan has no blocker left.
    NoBlockers,
    /// The Gateway API CRDs are installed.
    GatewayApiCrds,
    /// The CNI plugin can run beside istio-cni.
    CniCompatible,
    /// The namespace exists.
    NamespaceExists,
    /// istiod runs the ambient profile.
    ControlPlaneAmbient,
    /// istio-cni runs on every node.
    IstioCniReady,
    /// ztunnel runs on every node.
    ZtunnelReady,
    /// Every restart meshmig made has rolled out.
    RolloutsComplete,
    /// Every sidecar speaks HBONE.
    SidecarsHbone,
    /// The checkpoint's probes got the outcome they expect.
    Probes,
    /// istiod reports the waypoint Gateway Programmed.
    WaypointProgrammed,
    /// The waypoint Deployment is available.
    WaypointReady,
    /// No Service uses the waypoint yet.
    WaypointUnused,
    /// The objects the step created exist.
    ObjectsExist,
    /// istiod accepted the objects the step created.
    ObjectsAccepted,
    /// The namespace is enrolled in ambient.
    NamespaceEnrolled,
    /// Sidecars are still injected (enrollment leaves them until step 9).
    SidecarsStillInjected,
    /// istiod reports the Services bound to their waypoints.
    ServicesBound,
    /// istiod accepted the mesh HTTPRoutes.
    RoutesAccepted,
    /// istiod reports the waypoint policies accepted.
    PoliciesAccepted,
    /// The objects the step removes are gone.
    ObjectsRemoved,
    /// The waypoint copies of removed objects are present.
    MigratedObjectsPresent,
    /// No Pod has a sidecar.
    NoSidecars,
    /// ztunnel captures every Pod.
    PodsRedirected,
    /// The originals of migrated objects are removed.
    OriginalsRemoved,
    /// A rollback: every Pod is meshed as it was before the undone steps.
    PodsMeshedAsBefore,
    /// A rollback: the snapshot's objects are back.
    SnapshotRestored,
}

impl CheckId {
    /// The identifier, as the status names the check.
    pub fn as_str(self) -> &'static str {
        use CheckId as C;
        match self {
            C::IstioVersion => "istio-version",
            C::NoBlockers => "no-blockers",
            C::GatewayApiCrds => "gateway-api-crds",
            C::CniCompatible => "cni-compatible",
            C::NamespaceExists => "namespace-exists",
            C::ControlPlaneAmbient => "control-plane-ambient",
            C::IstioCniReady => "istio-cni-ready",
            C::ZtunnelReady => "ztunnel-ready",
            C::RolloutsComplete => "rollouts-complete",
            C::SidecarsHbone => "sidecars-hbone",
            C::Probes => "probes",
            C::WaypointProgrammed => "waypoint-programmed",
            C::WaypointReady => "waypoint-ready",
            C::WaypointUnused => "waypoint-unused",
            C::ObjectsExist => "objects-exist",
            C::ObjectsAccepted => "objects-accepted",
            C::NamespaceEnrolled => "namespace-enrolled",
            C::SidecarsStillInjected => "sidecars-still-injected",
            C::ServicesBound => "services-bound",
            C::RoutesAccepted => "routes-accepted",
            C::PoliciesAccepted => "policies-accepted",
            C::ObjectsRemoved => "objects-removed",
            C::MigratedObjectsPresent => "migrated-objects-present",
            C::NoSidecars => "no-sidecars",
            C::PodsRedirected => "pods-redirected",
            C::OriginalsRemoved => "originals-removed",
            C::PodsMeshedAsBefore => "pods-meshed-as-before",
            C::SnapshotRestored => "snapshot-restored",
        }
    }
}

impl fmt::Display for CheckId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<CheckId> for str {
    fn eq(&self, other: &CheckId) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<CheckId> for String {
    fn eq(&self, other: &CheckId) -> bool {
        self == other.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_is_its_number_on_the_wire() {
        for (i, step) in Step::ALL.into_iter().enumerate() {
            let n = u8::try_from(i + 1).unwrap();
            assert_eq!(step.number(), n);
            assert_eq!(serde_json::to_string(&step).unwrap(), n.to_string());
            assert_eq!(serde_json::from_str::<Step>(&n.to_string()).unwrap(), step);
            assert_eq!(n.to_string().parse::<Step>().unwrap(), step);
        }
        assert!(serde_json::from_str::<Step>("0").is_err());
        assert!(serde_json::from_str::<Step>("10").is_err());
        let err = "ten".parse::<Step>().unwrap_err().to_string();
        assert!(err.contains("\"ten\"") && err.contains("1 to 9"), "{err}");
    }

    #[test]
    fn steps_are_ordered_and_walk_both_ways() {
        assert_eq!(Step::FIRST.previous(), None);
        assert_eq!(Step::LAST.next(), None);
        assert_eq!(Step::Policies.next(), Some(Step::AmbientEnrollment));
        assert_eq!(Step::Policies.previous(), Some(Step::Waypoints));
        let mid: Vec<u8> = Step::range(Step::HboneSidecars, Step::Policies)
            .map(Step::number)
            .collect();
        assert_eq!(mid, [3, 4, 5]);
        assert_eq!(Step::range(Step::LAST, Step::FIRST).count(), 0);
        assert!(
            Step::range(Step::FIRST, Step::LAST)
                .rev()
                .eq(Step::ALL.into_iter().rev())
        );
    }

    #[test]
    fn barriers_restarts_and_the_cluster_wide_steps() {
        let barriers: Vec<(u8, u8)> = Step::ALL
            .into_iter()
            .filter_map(|s| s.barrier().map(|b| (s.number(), b.number())))
            .collect();
        assert_eq!(barriers, [(7, 6), (9, 8)]);
        let restarts: Vec<u8> = Step::ALL
            .into_iter()
            .filter(|s| s.restarts_workloads())
            .map(Step::number)
            .collect();
        assert_eq!(restarts, [3, 9]);
        assert!(Step::ControlPlane.is_cluster_wide() && !Step::HboneSidecars.is_cluster_wide());
    }

    #[test]
    fn the_schema_is_the_number_it_is_written_as() {
        let mut generator = SchemaGenerator::default();
        assert_eq!(
            Step::json_schema(&mut generator),
            u8::json_schema(&mut generator)
        );
    }

    #[test]
    fn check_ids_are_their_status_names() {
        let every_step_check: Vec<CheckId> = Step::ALL
            .into_iter()
            .flat_map(|s| s.checks().to_vec())
            .collect();
        for id in every_step_check {
            let wire = serde_json::to_value(id).unwrap();
            assert_eq!(wire, serde_json::Value::String(id.as_str().into()));
            assert_eq!(serde_json::from_value::<CheckId>(wire).unwrap(), id);
        }
        assert!(*"services-bound" == CheckId::ServicesBound);
        assert_eq!(Step::Waypoints.checks().last(), Some(&CheckId::Probes));
    }
}
