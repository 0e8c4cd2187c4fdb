//! Spec checks the CRD schema cannot express; each names the field and what to do.

use std::collections::BTreeSet;

use meshmig_api::{ControlPlaneMode, MeshMigration, MigrationPhase};

/// A problem with the spec: field and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecProblem {
    /// JSON path of the field.
    pub field: String,
    /// What is wrong and what to do.
    pub message: String,
    /// Condition reason.
    pub reason: &'static str,
}

/// Checks the spec against the cluster: targets resolve, the operator's own namespace and the
/// control-plane namespaces are not migrated.
pub fn validate(
    mm: &MeshMigration,
    targets: &[String],
    operator_namespace: &str,
) -> Option<SpecProblem> {
    name_problem(mm.metadata.name.as_deref().unwrap_or_default())
        .or_else(|| targets_problem(mm, targets, operator_namespace))
        .or_else(|| probe_url_problem(mm))
}

fn name_problem(name: &str) -> Option<SpecProblem> {
    // The name becomes a label value on every object meshmig writes; the CRD refuses longer
    // names, but an older CRD may not.
    (name.len() > 63).then(|| SpecProblem {
        field: "metadata.name".into(),
        message: format!(
            "metadata.name has {} characters; meshmig uses it as a label value, which holds at most 63: re-create the MeshMigration with a shorter name",
            name.len()
        ),
        reason: "InvalidName",
    })
}

fn targets_problem(
    mm: &MeshMigration,
    targets: &[String],
    operator_namespace: &str,
) -> Option<SpecProblem> {
    let spec = &mm.spec;
    let field = if spec.namespaces.is_some() {
        "spec.namespaces"
    } else {
        "spec.namespaceSelector"
    };
    if targets.is_empty() {
        return Some(SpecProblem {
            field: field.into(),
            message: format!(
                "{field} selects no namespace; label the namespaces to migrate or list them"
            ),
            reason: "NoNamespaces",
        });
    }
    let cp = &spec.control_plane;
    targets.iter().find_map(|t| {
        let what = if t == operator_namespace {
            "the operator's own namespace"
        } else if *t == cp.istio_namespace {
            "the Istio control-plane namespace"
        } else if *t == cp.ztunnel_namespace {
            "the ztunnel namespace"
        } else if *t == cp.cni_namespace {
            "the istio-cni namespace"
        } else {
            return None;
        };
        Some(SpecProblem {
            field: field.into(),
            message: format!("{field} contains {t}, {what}; remove it"),
            reason: "ForbiddenNamespace",
        })
    })
}

fn probe_url_problem(mm: &MeshMigration) -> Option<SpecProblem> {
    mm.spec
        .checkpoints
        .probes
        .iter()
        .any(|p| p.url.contains(char::is_whitespace))
        .then(|| SpecProblem {
            field: "spec.checkpoints.probes[].url".into(),
            message: "a probe URL contains whitespace".into(),
            reason: "InvalidProbe",
        })
}

/// What the checks before a migration starts need to know about the cluster.
#[derive(Clone, Debug, Default)]
pub struct ClusterFacts {
    /// Names of the namespaces that exist.
    pub namespaces: BTreeSet<String>,
    /// Names of the Sail `Istio` resources; `None` when the Sail CRDs are not installed.
    pub sail_istios: Option<BTreeSet<String>>,
    /// Probe service accounts (`namespace`, `name`) found missing.
    pub missing_service_accounts: BTreeSet<(String, String)>,
}

/// The probe service accounts worth looking up: those in existing namespaces, other than
/// `default` (which the controller manager creates in every namespace, possibly a moment
/// after the namespace).
pub fn probe_service_accounts(
    mm: &MeshMigration,
    namespaces: &BTreeSet<String>,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = mm
        .spec
        .checkpoints
        .probes
        .iter()
        .filter(|p| p.service_account != "default" && namespaces.contains(&p.from_namespace))
        .map(|p| (p.from_namespace.clone(), p.service_account.clone()))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Checks made before a migration changes anything (they would otherwise surface steps later,
/// after changes, as failures that do not name the field): the control plane, the probes'
/// namespaces and service accounts, and the accepted findings refer to things that exist.
pub fn validate_before_start(mm: &MeshMigration, facts: &ClusterFacts) -> Option<SpecProblem> {
    control_plane_problem(mm, facts)
        .or_else(|| probes_problem(mm, facts))
        .or_else(|| accepted_findings_problem(mm))
}

fn control_plane_problem(mm: &MeshMigration, facts: &ClusterFacts) -> Option<SpecProblem> {
    let cp = &mm.spec.control_plane;
    if !facts.namespaces.contains(&cp.istio_namespace) {
        return Some(SpecProblem {
            field: "spec.controlPlane.istioNamespace".into(),
            message: format!(
                "spec.controlPlane.istioNamespace is {}, which does not exist; set it to the namespace istiod runs in",
                cp.istio_namespace
            ),
            reason: "ControlPlaneNotFound",
        });
    }
    let istios = facts.sail_istios.as_ref()?;
    if cp.mode != ControlPlaneMode::Sail || istios.contains(&cp.istio) {
        return None;
    }
    let have = if istios.is_empty() {
        "there are none; for a control plane installed by Helm or istioctl set spec.controlPlane.mode: External".to_string()
    } else {
        format!(
            "existing: {}",
            istios.iter().cloned().collect::<Vec<_>>().join(", ")
        )
    };
    Some(SpecProblem {
        field: "spec.controlPlane.istio".into(),
        message: format!(
            "spec.controlPlane.istio names the Sail Istio {}, which does not exist ({have})",
            cp.istio
        ),
        reason: "ControlPlaneNotFound",
    })
}

fn probes_problem(mm: &MeshMigration, facts: &ClusterFacts) -> Option<SpecProblem> {
    mm.spec.checkpoints.probes.iter().enumerate().find_map(|(i, p)| {
        if !facts.namespaces.contains(&p.from_namespace) {
            return Some(SpecProblem {
                field: format!("spec.checkpoints.probes[{i}].fromNamespace"),
                message: format!(
                    "spec.checkpoints.probes[{i}].fromNamespace is {}, which does not exist; probe {} cannot run",
                    p.from_namespace, p.name
                ),
                reason: "InvalidProbe",
            });
        }
        let account = (p.from_namespace.clone(), p.service_account.clone());
        facts.missing_service_accounts.contains(&account).then(|| SpecProblem {
            field: format!("spec.checkpoints.probes[{i}].serviceAccount"),
            message: format!(
                "spec.checkpoints.probes[{i}].serviceAccount is {}, which does not exist in namespace {}; create it or name an existing one",
                p.service_account, p.from_namespace
            ),
            reason: "InvalidProbe",
        })
    })
}

fn accepted_findings_problem(mm: &MeshMigration) -> Option<SpecProblem> {
    mm.spec.accepted_findings.iter().enumerate().find_map(|(i, accepted)| {
        let u = meshmig_planner::findings::check_accepted(accepted).err()?;
        Some(SpecProblem {
            field: format!("spec.acceptedFindings[{i}]"),
            message: format!(
                "spec.acceptedFindings[{i}] is {accepted}, but {} is not a finding id (a misspelt id accepts nothing); {}",
                u.id,
                u.hint()
            ),
            reason: "UnknownFinding",
        })
    })
}

/// Whether another active MeshMigration already claims one of the targets. A migration that
/// already holds the namespace (lists it in its status, not itself stopped by a claim) keeps
/// it; between two that do not (or both do), the older one by creation time, then name. The
/// holding rule comes first because creation times have a resolution of one second: by time
/// and name alone a newcomer created in the same second as a running migration, with a name
/// sorting first, would take its namespace over.
pub fn claimed_by(
    mm: &MeshMigration,
    others: &[(MeshMigration, Vec<String>)],
    targets: &[String],
) -> Option<String> {
    let me = (
        mm.metadata.creation_timestamp.clone(),
        mm.metadata.name.clone(),
    );
    for (other, other_targets) in others {
        if other.metadata.uid == mm.metadata.uid || other.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let phase = other.status.as_ref().and_then(|s| s.phase);
        if matches!(
            phase,
            Some(MigrationPhase::Completed | MigrationPhase::RolledBack)
        ) {
            continue;
        }
        let them = (
            other.metadata.creation_timestamp.clone(),
            other.metadata.name.clone(),
        );
        let older = match (&them.0, &me.0) {
            (Some(a), Some(b)) if a.0 != b.0 => a.0 < b.0,
            _ => them.1 < me.1,
        };
        let shared = targets.iter().find(|t| other_targets.contains(t));
        let Some(ns) = shared else { continue };
        let first = match (holds(other, ns), holds(mm, ns)) {
            (true, false) => true,
            (false, true) => false,
            _ => older,
        };
        if first {
            return Some(format!(
                "namespace {ns} is already being migrated by MeshMigration {}; wait for it to complete or roll it back, or remove {ns} from this spec",
                other.metadata.name.as_deref().unwrap_or_default()
            ));
        }
    }
    None
}

/// Whether `mm` has taken `ns` on: its status lists it and it is not held by a claim.
fn holds(mm: &MeshMigration, ns: &str) -> bool {
    let Some(st) = mm.status.as_ref() else {
        return false;
    };
    let claimed_away = st.conditions.iter().any(|c| {
        c.type_ == meshmig_api::names::CONDITION_STALLED
            && c.status == "True"
            && c.reason == CLAIMED_REASON
    });
    !claimed_away && st.namespaces.iter().any(|n| n.name == ns)
}

/// The `Stalled` reason of a migration held by another one's claim.
pub const CLAIMED_REASON: &str = "NamespaceClaimed";

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn mm(name: &str, created: i64, uid: &str, ns: &[&str]) -> MeshMigration {
        let mut m = MeshMigration::new(
            name,
            meshmig_api::MeshMigrationSpec {
                namespaces: Some(ns.iter().map(|s| s.to_string()).collect()),
                ..Default::default()
            },
        );
        m.metadata.uid = Some(uid.into());
        m.metadata.creation_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(created).unwrap(),
        ));
        m
    }

    #[test]
    fn newcomer_is_stalled_by_an_older_claim() {
        let a = mm("a", 100, "1", &["shop"]);
        let b = mm("b", 200, "2", &["shop", "pay"]);
        let others = vec![
            (a.clone(), vec!["shop".to_string()]),
            (b.clone(), vec!["shop".to_string(), "pay".to_string()]),
        ];
        assert!(
            claimed_by(&b, &others, &["shop".into(), "pay".into()])
                .unwrap()
                .contains("MeshMigration a")
        );
        assert_eq!(claimed_by(&a, &others, &["shop".into()]), None);
        let mut done = a.clone();
        done.status = Some(meshmig_api::MeshMigrationStatus {
            phase: Some(MigrationPhase::Completed),
            ..Default::default()
        });
        let others = vec![(done, vec!["shop".to_string()])];
        assert_eq!(claimed_by(&b, &others, &["shop".into()]), None);
    }

    fn facts() -> ClusterFacts {
        ClusterFacts {
            namespaces: ["istio-system", "shop"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            sail_istios: Some(["default".to_string()].into_iter().collect()),
            missing_service_accounts: BTreeSet::new(),
        }
    }

    fn with_probe(m: &mut MeshMigration, from: &str, sa: &str) {
        m.spec.checkpoints.probes.push(
            serde_json::from_value(serde_json::json!({
                "name": "p", "fromNamespace": from, "serviceAccount": sa,
                "url": "http://reviews.shop:9080/", "expect": {"status": 200}
            }))
            .unwrap(),
        );
    }

    #[test]
    fn a_long_name_is_refused_naming_metadata_name() {
        let m = mm(&"m".repeat(64), 1, "1", &["shop"]);
        let p = validate(&m, &["shop".into()], "meshmig-system").unwrap();
        assert_eq!(p.field, "metadata.name");
        assert!(p.message.contains("64 characters"), "{}", p.message);
        assert_eq!(
            validate(
                &mm(&"m".repeat(63), 1, "1", &["shop"]),
                &["shop".into()],
                "x"
            ),
            None
        );
    }

    #[test]
    fn references_to_missing_things_are_refused_before_start() {
        let ok = mm("a", 1, "1", &["shop"]);
        assert_eq!(validate_before_start(&ok, &facts()), None);

        let mut m = ok.clone();
        m.spec.control_plane.istio_namespace = "nowhere".into();
        let p = validate_before_start(&m, &facts()).unwrap();
        assert_eq!(p.field, "spec.controlPlane.istioNamespace");
        assert!(p.message.contains("nowhere"));

        let mut m = ok.clone();
        m.spec.control_plane.istio = "nope".into();
        let p = validate_before_start(&m, &facts()).unwrap();
        assert_eq!(p.field, "spec.controlPlane.istio");
        assert!(
            p.message.contains("nope") && p.message.contains("existing: default"),
            "{}",
            p.message
        );
        // External control planes are not Sail resources; without Sail CRDs nothing to check.
        m.spec.control_plane.mode = ControlPlaneMode::External;
        assert_eq!(validate_before_start(&m, &facts()), None);
        m.spec.control_plane.mode = ControlPlaneMode::Sail;
        let no_sail = ClusterFacts {
            sail_istios: None,
            ..facts()
        };
        assert_eq!(validate_before_start(&m, &no_sail), None);

        let mut m = ok.clone();
        with_probe(&mut m, "shop", "reader");
        with_probe(&mut m, "elsewhere", "reader");
        let p = validate_before_start(&m, &facts()).unwrap();
        assert_eq!(p.field, "spec.checkpoints.probes[1].fromNamespace");
        assert!(p.message.contains("elsewhere"));
        let mut f = facts();
        f.namespaces.insert("elsewhere".into());
        assert_eq!(
            probe_service_accounts(&m, &f.namespaces),
            vec![
                ("elsewhere".to_string(), "reader".to_string()),
                ("shop".to_string(), "reader".to_string())
            ]
        );
        f.missing_service_accounts
            .insert(("shop".into(), "reader".into()));
        let p = validate_before_start(&m, &f).unwrap();
        assert_eq!(p.field, "spec.checkpoints.probes[0].serviceAccount");
        assert!(p.message.contains("reader") && p.message.contains("shop"));

        let mut m = ok.clone();
        m.spec.accepted_findings = vec![
            "vs-mesh-gateway-mix@VirtualService/shop/r".into(),
            "no-such-finding".into(),
        ];
        let known = meshmig_planner::findings::CATALOGUE[0].id;
        m.spec.accepted_findings[0] = format!("{known}@VirtualService/shop/r");
        let p = validate_before_start(&m, &facts()).unwrap();
        assert_eq!(p.field, "spec.acceptedFindings[1]");
        assert!(p.message.contains("no-such-finding"));
    }

    fn holding(mut m: MeshMigration, ns: &str) -> MeshMigration {
        m.status = Some(meshmig_api::MeshMigrationStatus {
            phase: Some(MigrationPhase::Paused),
            namespaces: vec![meshmig_api::NamespaceStatus {
                name: ns.into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        m
    }

    #[test]
    fn a_newcomer_of_the_same_second_never_takes_a_held_namespace() {
        // Same creation second; the newcomer's name sorts first.
        let holder = holding(mm("z-first", 100, "1", &["shop"]), "shop");
        let newcomer = mm("a-second", 100, "2", &["shop"]);
        let others = vec![
            (holder.clone(), vec!["shop".to_string()]),
            (newcomer.clone(), vec!["shop".to_string()]),
        ];
        assert!(
            claimed_by(&newcomer, &others, &["shop".into()])
                .unwrap()
                .contains("MeshMigration z-first")
        );
        assert_eq!(claimed_by(&holder, &others, &["shop".into()]), None);
        // Before either took the namespace on, the name decides, the same way for both.
        let fresh = mm("z-first", 100, "1", &["shop"]);
        let others = vec![
            (fresh.clone(), vec!["shop".to_string()]),
            (newcomer.clone(), vec!["shop".to_string()]),
        ];
        assert_eq!(claimed_by(&newcomer, &others, &["shop".into()]), None);
        assert!(claimed_by(&fresh, &others, &["shop".into()]).is_some());
    }

    #[test]
    fn a_migration_held_by_a_claim_does_not_hold_the_namespace() {
        let mut stopped = holding(mm("a", 100, "1", &["shop"]), "shop");
        if let Some(st) = stopped.status.as_mut() {
            st.conditions
                .push(k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                    type_: meshmig_api::names::CONDITION_STALLED.into(),
                    status: "True".into(),
                    reason: CLAIMED_REASON.into(),
                    message: "claimed".into(),
                    last_transition_time: Time(
                        k8s_openapi::jiff::Timestamp::from_second(1).unwrap(),
                    ),
                    observed_generation: None,
                });
        }
        assert!(!holds(&stopped, "shop"));
        let older_by_time = mm("z", 50, "2", &["shop"]);
        let others = vec![(older_by_time, vec!["shop".to_string()])];
        assert!(claimed_by(&stopped, &others, &["shop".into()]).is_some());
    }

    #[test]
    fn operator_namespace_and_empty_selection_are_refused() {
        let m = mm("a", 1, "1", &["meshmig-system"]);
        let p = validate(&m, &["meshmig-system".into()], "meshmig-system").unwrap();
        assert_eq!(p.field, "spec.namespaces");
        assert!(p.message.contains("operator's own namespace"));
        let p = validate(&m, &[], "meshmig-system").unwrap();
        assert_eq!(p.reason, "NoNamespaces");
        assert_eq!(validate(&m, &["shop".into()], "meshmig-system"), None);
    }
}
