//! Spec checks the CRD schema cannot express; each names the field and what to do.

use meshmig_api::{MeshMigration, MigrationPhase};

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
    for t in targets {
        let forbidden = if t == operator_namespace {
            Some("the operator's own namespace")
        } else if *t == cp.istio_namespace {
            Some("the Istio control-plane namespace")
        } else if *t == cp.ztunnel_namespace {
            Some("the ztunnel namespace")
        } else if *t == cp.cni_namespace {
            Some("the istio-cni namespace")
        } else {
            None
        };
        if let Some(what) = forbidden {
            return Some(SpecProblem {
                field: field.into(),
                message: format!("{field} contains {t}, {what}; remove it"),
                reason: "ForbiddenNamespace",
            });
        }
    }
    if spec
        .checkpoints
        .probes
        .iter()
        .any(|p| p.url.contains(char::is_whitespace))
    {
        return Some(SpecProblem {
            field: "spec.checkpoints.probes[].url".into(),
            message: "a probe URL contains whitespace".into(),
            reason: "InvalidProbe",
        });
    }
    None
}

/// Whether another active MeshMigration already claims one of the targets; the older one
/// (by creation time, then name) keeps it.
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
        if !older {
            continue;
        }
        if let Some(ns) = targets.iter().find(|t| other_targets.contains(t)) {
            return Some(format!(
                "namespace {ns} is already being migrated by MeshMigration {}; wait for it to complete or roll it back, or remove {ns} from this spec",
                other.metadata.name.as_deref().unwrap_or_default()
            ));
        }
    }
    None
}

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
