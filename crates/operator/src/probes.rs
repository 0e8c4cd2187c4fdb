//! Checkpoint probes: HTTP requests made by short-lived Pods in the caller's namespace, under
//! the caller's service account, so identity-based policies are exercised. Building the Pod
//! and reading its outcome are pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, Pod, PodSpec, SeccompProfile, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use meshmig_api::names as mn;
use meshmig_api::{CheckResult, HttpMethod, ProbeSpec, Step};
use sha2::{Digest, Sha256};

/// Image used when a probe names none.
pub const DEFAULT_IMAGE: &str = "curlimages/curl:8.11.1";

/// Steps whose checkpoint runs a probe by default.
pub const DEFAULT_STEPS: [Step; 7] = [
    Step::HboneSidecars,
    Step::Waypoints,
    Step::Policies,
    Step::AmbientEnrollment,
    Step::WaypointActivation,
    Step::PolicySimplification,
    Step::SidecarRemoval,
];

// The script compares the outcome itself and reports through the termination message; it
// asks the sidecar (if any) to exit so the Pod can complete.
const SCRIPT: &str = r#"code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$@" "$URL"); rc=$?
curl -s -X POST http://127.0.0.1:15020/quitquitquit >/dev/null 2>&1 || true
if [ -n "$EXPECT_DENIED" ]; then
  if [ "$code" = "403" ] || [ "$code" = "000" ] || [ "$rc" -ne 0 ]; then
    echo "denied as expected (HTTP $code, curl exit $rc)" > /dev/termination-log; exit 0
  fi
  echo "expected the request to be denied, got HTTP $code" > /dev/termination-log; exit 1
fi
if [ "$code" = "$EXPECT_STATUS" ]; then
  echo "HTTP $code as expected" > /dev/termination-log; exit 0
fi
echo "expected HTTP $EXPECT_STATUS, got HTTP $code (curl exit $rc)" > /dev/termination-log; exit 1
"#;

/// Whether a probe runs at the checkpoint of `step` for namespace `validated`: at its steps,
/// and for the namespace its URL points into (or every namespace when the URL points
/// outside the migration).
pub fn applies(probe: &ProbeSpec, step: Step, validated: &str, targets: &[String]) -> bool {
    let steps: &[Step] = if probe.steps.is_empty() {
        &DEFAULT_STEPS
    } else {
        &probe.steps
    };
    if !steps.contains(&step) {
        return false;
    }
    match url_namespace(&probe.url) {
        Some(ns) if targets.contains(&ns) => ns == validated,
        _ => true,
    }
}

/// Namespace of a Service URL such as `http://reviews.bookinfo:9080/x` or
/// `http://reviews.bookinfo.svc.cluster.local/`.
pub fn url_namespace(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split(['/', ':', '?']).next()?;
    let parts: Vec<&str> = host.split('.').collect();
    (parts.len() >= 2).then(|| parts[1].to_string())
}

/// Name of the probe Pod for one checkpoint attempt (`attempt` distinguishes retries).
pub fn pod_name(
    migration: &str,
    probe: &str,
    validated: &str,
    step: Step,
    attempt: &str,
) -> String {
    let digest =
        Sha256::digest(format!("{migration}/{validated}/{step}/{attempt}/{probe}").as_bytes());
    let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let mut base = format!("meshmig-probe-{probe}");
    base.truncate(52);
    format!("{}-{hash}", base.trim_end_matches('-'))
}

/// The probe Pod.
pub fn pod(migration: &str, probe: &ProbeSpec, validated: &str, step: Step, attempt: &str) -> Pod {
    let mut labels = BTreeMap::new();
    labels.insert(mn::LABEL_MANAGED_BY.to_string(), mn::MANAGED_BY.to_string());
    labels.insert(mn::LABEL_MIGRATION.to_string(), migration.to_string());
    labels.insert(mn::LABEL_PROBE.to_string(), probe.name.clone());
    labels.insert(mn::LABEL_STEP.to_string(), step.to_string());
    let mut args = vec![
        SCRIPT.to_string(),
        "probe".to_string(),
        "-X".to_string(),
        format!("{:?}", probe.method.unwrap_or(HttpMethod::GET)),
    ];
    for (k, v) in &probe.headers {
        args.push("-H".into());
        args.push(format!("{k}: {v}"));
    }
    let env = |name: &str, value: String| k8s_openapi::api::core::v1::EnvVar {
        name: name.into(),
        value: Some(value),
        value_from: None,
    };
    let mut envs = vec![env("URL", probe.url.clone())];
    match (probe.expect.status, probe.expect.denied) {
        (_, Some(true)) => envs.push(env("EXPECT_DENIED", "1".into())),
        (Some(s), _) => envs.push(env("EXPECT_STATUS", s.to_string())),
        _ => envs.push(env("EXPECT_STATUS", "200".into())),
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(migration, &probe.name, validated, step, attempt)),
            namespace: Some(probe.from_namespace.clone()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                mn::ANNOTATION_VALIDATES.to_string(),
                mn::validates(validated, step),
            )])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            service_account_name: Some(probe.service_account.clone()),
            restart_policy: Some("Never".into()),
            termination_grace_period_seconds: Some(1),
            active_deadline_seconds: Some(120),
            containers: vec![Container {
                name: "probe".into(),
                image: Some(probe.image.clone().unwrap_or_else(|| DEFAULT_IMAGE.into())),
                command: Some(vec!["sh".into(), "-c".into()]),
                args: Some(args),
                env: Some(envs),
                termination_message_policy: Some("FallbackToLogsOnError".into()),
                security_context: Some(SecurityContext {
                    allow_privilege_escalation: Some(false),
                    run_as_non_root: Some(true),
                    run_as_user: Some(65532),
                    read_only_root_filesystem: Some(true),
                    capabilities: Some(Capabilities {
                        drop: Some(vec!["ALL".into()]),
                        add: None,
                    }),
                    seccomp_profile: Some(SeccompProfile {
                        type_: "RuntimeDefault".into(),
                        localhost_profile: None,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

/// Outcome of a probe Pod: result and message.
pub fn outcome(pod: Option<&Pod>, probe: &str) -> (CheckResult, String) {
    let Some(pod) = pod else {
        return (CheckResult::Pending, format!("probe {probe}: starting"));
    };
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    let message = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == "probe"))
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref())
        .and_then(|t| t.message.clone())
        .or_else(|| status.and_then(|s| s.message.clone()))
        .unwrap_or_default();
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    match phase {
        "Succeeded" => (
            CheckResult::Pass,
            format!("probe {probe}: {}", message.trim()),
        ),
        "Failed" => (
            CheckResult::Fail,
            format!("probe {probe} failed (Pod {ns}/{name}): {}", message.trim()),
        ),
        other => (
            CheckResult::Pending,
            format!("probe {probe}: Pod {ns}/{name} is {other}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshmig_api::ProbeExpectation;

    fn probe(url: &str, steps: Vec<Step>) -> ProbeSpec {
        ProbeSpec {
            name: "p".into(),
            from_namespace: "front".into(),
            service_account: "web".into(),
            url: url.into(),
            method: None,
            headers: BTreeMap::from([("end-user".into(), "jason".into())]),
            expect: ProbeExpectation {
                status: Some(200),
                denied: None,
            },
            steps,
            image: None,
        }
    }

    #[test]
    fn url_namespaces() {
        assert_eq!(
            url_namespace("http://reviews.bookinfo:9080/r").as_deref(),
            Some("bookinfo")
        );
        assert_eq!(
            url_namespace("http://reviews.bookinfo.svc.cluster.local/").as_deref(),
            Some("bookinfo")
        );
        assert_eq!(url_namespace("http://reviews/").as_deref(), None);
    }

    #[test]
    fn probes_run_for_the_namespace_they_target() {
        let targets = vec!["bookinfo".to_string(), "front".to_string()];
        let p = probe("http://reviews.bookinfo:9080/", vec![]);
        assert!(applies(&p, Step::HboneSidecars, "bookinfo", &targets));
        assert!(!applies(&p, Step::HboneSidecars, "front", &targets));
        assert!(!applies(&p, Step::ControlPlane, "bookinfo", &targets));
        let p = probe("http://api.example.com/", vec![Step::WaypointActivation]);
        assert!(
            applies(&p, Step::WaypointActivation, "front", &targets)
                && applies(&p, Step::WaypointActivation, "bookinfo", &targets)
        );
        assert!(!applies(&p, Step::AmbientEnrollment, "front", &targets));
    }

    #[test]
    fn pod_uses_the_callers_identity_and_passes_headers_as_arguments() {
        let pod = pod(
            "bookinfo",
            &probe("http://reviews.bookinfo:9080/", vec![]),
            "bookinfo",
            Step::WaypointActivation,
            "t1",
        );
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.service_account_name.as_deref(), Some("web"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("front"));
        let args = spec.containers[0].args.as_ref().unwrap();
        assert!(args.contains(&"end-user: jason".to_string()));
        assert_eq!(
            pod.metadata
                .labels
                .as_ref()
                .unwrap()
                .get(mn::LABEL_PROBE)
                .map(String::as_str),
            Some("p")
        );
        // Different attempts get different Pods.
        assert_ne!(
            pod_name("m", "p", "n", Step::WaypointActivation, "a"),
            pod_name("m", "p", "n", Step::WaypointActivation, "b")
        );
        assert!(
            pod_name(
                &"m".repeat(100),
                &"p".repeat(60),
                "n",
                Step::WaypointActivation,
                "a"
            )
            .len()
                <= 63
        );
    }

    #[test]
    fn outcomes() {
        assert_eq!(outcome(None, "p").0, CheckResult::Pending);
        let mut pod = pod(
            "m",
            &probe("http://x.y/", vec![]),
            "y",
            Step::HboneSidecars,
            "a",
        );
        pod.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some("Failed".into()),
            message: Some("expected HTTP 200, got HTTP 403".into()),
            ..Default::default()
        });
        let (r, m) = outcome(Some(&pod), "p");
        assert_eq!(r, CheckResult::Fail);
        assert!(m.contains("got HTTP 403"), "{m}");
    }
}
