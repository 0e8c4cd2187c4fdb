//! How a Pod takes part in the mesh, and how each planned workload must be meshed at each
//! point of a migration. A rollback is checked against this: a Pod that ends up with neither
//! a sidecar nor ambient capture runs in plaintext with no policy enforced, and nothing in
//! the Kubernetes API says so.

use meshmig_api::Step;
use meshmig_api::names::istio as n;

use crate::inventory::{PodInfo, annotation};
use crate::plan::WorkloadPlan;

/// How one Pod is meshed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MeshMode {
    /// It runs `istio-proxy`. A Pod with a sidecar is never captured by ztunnel, whatever
    /// its labels say.
    Sidecar {
        /// The sidecar speaks HBONE (the injector's tunnel label or its proxy config).
        hbone: bool,
    },
    /// istio-cni redirected its traffic to ztunnel.
    Ambient,
    /// Neither: plaintext, no policy enforced.
    Outside,
}

impl MeshMode {
    /// The mode of a Pod as the API shows it.
    pub fn of_pod(pod: &PodInfo) -> Self {
        if pod.has_sidecar() {
            MeshMode::Sidecar {
                hbone: pod.sidecar_hbone(),
            }
        } else if annotation(&pod.metadata, n::REDIRECTION) == Some("enabled") {
            MeshMode::Ambient
        } else {
            MeshMode::Outside
        }
    }
}

/// How a workload's Pods must be meshed at some point of the migration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    /// A sidecar; one that speaks HBONE when `hbone`.
    Sidecar {
        /// HBONE is required.
        hbone: bool,
    },
    /// Captured by ztunnel.
    Ambient,
    /// Whatever it was: the migration never restarts it (opted out, or never injected).
    Unchanged,
}

impl Expected {
    /// How a workload's Pods are meshed before `step` runs: the state the checkpoint of the
    /// step before validated, and what a rollback to before `step` must leave.
    pub fn before(w: &WorkloadPlan, step: Step) -> Self {
        if w.opted_out || !w.sidecar {
            Expected::Unchanged
        } else {
            Expected::Sidecar {
                hbone: step > Step::HboneSidecars,
            }
        }
    }

    /// How a workload's Pods are meshed once the migration completed (after step 9).
    pub fn completed(w: &WorkloadPlan) -> Self {
        if w.opted_out || !w.sidecar {
            Expected::Unchanged
        } else {
            Expected::Ambient
        }
    }

    /// What a Pod in `mode` lacks to meet this expectation, in words; `None` when it meets
    /// it. An HBONE sidecar meets a plain sidecar expectation: it is what step 3 leaves and
    /// it admits the same callers.
    pub fn lack(self, mode: MeshMode) -> Option<&'static str> {
        match (self, mode) {
            (Expected::Unchanged, _)
            | (Expected::Ambient, MeshMode::Ambient)
            | (Expected::Sidecar { hbone: true }, MeshMode::Sidecar { hbone: true })
            | (Expected::Sidecar { hbone: false }, MeshMode::Sidecar { .. }) => None,
            (Expected::Sidecar { .. }, MeshMode::Sidecar { hbone: false }) => {
                Some("its sidecar does not speak HBONE")
            }
            (Expected::Sidecar { .. }, MeshMode::Ambient) => {
                Some("no sidecar (ztunnel captures it instead)")
            }
            (Expected::Sidecar { .. }, MeshMode::Outside)
            | (Expected::Ambient, MeshMode::Outside) => {
                Some("no sidecar and no ambient capture: it runs outside the mesh")
            }
            (Expected::Ambient, MeshMode::Sidecar { .. }) => Some("it still runs a sidecar"),
        }
    }

    /// The expectation in words.
    pub fn describe(self) -> &'static str {
        match self {
            Expected::Sidecar { hbone: true } => "a sidecar that speaks HBONE",
            Expected::Sidecar { hbone: false } => "a sidecar",
            Expected::Ambient => "ambient capture",
            Expected::Unchanged => "no change",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    fn workload(sidecar: bool, opted_out: bool) -> WorkloadPlan {
        WorkloadPlan {
            kind: "Deployment",
            name: "reviews-v2".into(),
            sidecar,
            hbone: false,
            opted_out,
        }
    }

    fn pod(annotations: &[(&str, &str)], labels: &[(&str, &str)]) -> PodInfo {
        let map = |kv: &[(&str, &str)]| {
            Some(
                kv.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            )
        };
        PodInfo::from_meta(ObjectMeta {
            name: Some("p".into()),
            annotations: map(annotations),
            labels: map(labels),
            ..Default::default()
        })
    }

    #[test]
    fn a_pod_with_a_sidecar_is_never_ambient_whatever_its_annotations_say() {
        let both = pod(
            &[(n::SIDECAR_STATUS, "{}"), (n::REDIRECTION, "enabled")],
            &[(n::TUNNEL, "http")],
        );
        assert_eq!(MeshMode::of_pod(&both), MeshMode::Sidecar { hbone: true });
        let plain = pod(&[(n::SIDECAR_STATUS, "{}")], &[]);
        assert_eq!(MeshMode::of_pod(&plain), MeshMode::Sidecar { hbone: false });
        assert_eq!(
            MeshMode::of_pod(&pod(&[(n::REDIRECTION, "enabled")], &[])),
            MeshMode::Ambient
        );
        assert_eq!(MeshMode::of_pod(&pod(&[], &[])), MeshMode::Outside);
        assert_eq!(
            MeshMode::of_pod(&pod(&[(n::REDIRECTION, "disabled")], &[])),
            MeshMode::Outside
        );
    }

    #[test]
    fn a_sidecar_workload_keeps_its_sidecar_until_step_nine_and_speaks_hbone_after_step_three() {
        let w = workload(true, false);
        for step in Step::range(Step::FIRST, Step::HboneSidecars) {
            assert_eq!(
                Expected::before(&w, step),
                Expected::Sidecar { hbone: false },
                "before step {step}"
            );
        }
        for step in Step::range(Step::Waypoints, Step::LAST) {
            assert_eq!(
                Expected::before(&w, step),
                Expected::Sidecar { hbone: true },
                "before step {step}"
            );
        }
        assert_eq!(Expected::completed(&w), Expected::Ambient);
    }

    #[test]
    fn workloads_the_migration_never_restarts_are_left_as_they_were() {
        for w in [workload(false, false), workload(true, true)] {
            for step in Step::ALL {
                assert_eq!(Expected::before(&w, step), Expected::Unchanged);
            }
            assert_eq!(Expected::completed(&w), Expected::Unchanged);
        }
    }

    #[test]
    fn what_a_pod_lacks_is_named() {
        let hbone = Expected::Sidecar { hbone: true };
        assert_eq!(hbone.lack(MeshMode::Sidecar { hbone: true }), None);
        assert_eq!(
            hbone.lack(MeshMode::Sidecar { hbone: false }),
            Some("its sidecar does not speak HBONE")
        );
        assert_eq!(
            hbone.lack(MeshMode::Outside),
            Some("no sidecar and no ambient capture: it runs outside the mesh")
        );
        assert!(hbone.lack(MeshMode::Ambient).is_some());
        let plain = Expected::Sidecar { hbone: false };
        assert_eq!(plain.lack(MeshMode::Sidecar { hbone: true }), None);
        assert_eq!(plain.lack(MeshMode::Sidecar { hbone: false }), None);
        assert_eq!(Expected::Ambient.lack(MeshMode::Ambient), None);
        assert_eq!(
            Expected::Ambient.lack(MeshMode::Sidecar { hbone: true }),
            Some("it still runs a sidecar")
        );
        assert_eq!(Expected::Unchanged.lack(MeshMode::Outside), None);
    }
}
