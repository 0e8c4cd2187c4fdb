//! The shipped manifests: deploy/meshmig.yaml (the Helm chart rendered with its defaults)
//! is accepted by a real API server (server-side dry-run), its RBAC is least privilege (no
//! wildcards, no Secrets, no non-resource URLs, exactly the permissions documented in
//! docs/install.md), and the chart carries the generated CRD.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::{BTreeMap, BTreeSet};

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use meshmig_e2e_harness::{Pending, TestEnv, wait_for};
use serde_json::Value;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/{path}"))
        .unwrap_or_else(|e| panic!("{path}: {e} (run 'make generate-chart')"))
}

/// deploy/meshmig.yaml, or the file `MESHMIG_RBAC_MANIFEST` names (to see these tests fail
/// on a broken rendering).
fn manifest() -> String {
    match std::env::var("MESHMIG_RBAC_MANIFEST") {
        Ok(path) => std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")),
        Err(_) => read("deploy/meshmig.yaml"),
    }
}

/// The documents of a YAML stream (split on `---` lines), with their top-level `kind`.
fn documents(yaml: &str) -> Vec<(String, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut flush = |doc: &mut String| {
        let kind = doc
            .lines()
            .find_map(|l| l.strip_prefix("kind: "))
            .map(|k| k.trim().to_string());
        if let Some(kind) = kind {
            docs.push((kind, std::mem::take(doc)));
        }
        doc.clear();
    };
    for line in yaml.lines() {
        if line == "---" {
            flush(&mut current);
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    flush(&mut current);
    docs
}

/// One RBAC rule, as written in the chart.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Rule {
    api_groups: Vec<String>,
    resources: Vec<String>,
    resource_names: Vec<String>,
    non_resource_urls: Vec<String>,
    verbs: Vec<String>,
}

fn flow_list(value: &str, line: &str) -> Vec<String> {
    let inner = value
        .trim()
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or_else(|| {
            panic!("not a flow-style list (the chart keeps RBAC rules in flow style): {line}")
        });
    inner
        .split(',')
        .map(|s| s.trim().trim_matches('"').trim_matches('\'').to_string())
        .filter(|s| !s.is_empty() || inner.contains("\"\""))
        .collect()
}

/// Parses `rules:` of a (Cluster)Role document. The chart writes every rule as a comment
/// (why the operator needs it) followed by `- apiGroups: [...]` and flow-style lists; any
/// other shape fails, so this parser cannot silently miss a rule (the server-side test
/// cross-checks it against the API server's own reading).
fn parse_rules(doc: &str) -> Vec<Rule> {
    let mut rules: Vec<Rule> = Vec::new();
    let mut in_rules = false;
    let mut previous_was_comment = false;
    for line in doc.lines() {
        if line == "rules:" {
            in_rules = true;
            continue;
        }
        if !in_rules {
            continue;
        }
        if !line.starts_with(' ') && !line.is_empty() {
            // The next top-level key.
            in_rules = false;
            continue;
        }
        let t = line.trim();
        if t.starts_with('#') {
            previous_was_comment = true;
            continue;
        }
        let (key, rule_start) = match t.strip_prefix("- ") {
            Some(rest) => (rest, true),
            None => (t, false),
        };
        let (name, value) = key
            .split_once(':')
            .unwrap_or_else(|| panic!("unexpected line in rules: {line:?}"));
        if rule_start {
            assert!(
                previous_was_comment,
                "every RBAC rule needs a comment saying which feature needs it: {line:?}"
            );
            rules.push(Rule::default());
        }
        previous_was_comment = false;
        let rule = rules
            .last_mut()
            .unwrap_or_else(|| panic!("a rule key outside a rule: {line:?}"));
        let list = flow_list(value, line);
        match name {
            "apiGroups" => rule.api_groups = list,
            "resources" => rule.resources = list,
            "resourceNames" => rule.resource_names = list,
            "nonResourceURLs" => rule.non_resource_urls = list,
            "verbs" => rule.verbs = list,
            other => panic!("unexpected rule field {other}: {line:?}"),
        }
    }
    rules
}

/// (apiGroup, resource) → verbs, merging rules.
fn permissions(rules: &[Rule]) -> BTreeMap<(String, String), BTreeSet<String>> {
    let mut out: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for r in rules {
        for g in &r.api_groups {
            for res in &r.resources {
                out.entry((g.clone(), res.clone()))
                    .or_default()
                    .extend(r.verbs.iter().cloned());
            }
        }
    }
    out
}

fn rbac_documents(yaml: &str, kind: &str) -> Vec<String> {
    documents(yaml)
        .into_iter()
        .filter(|(k, _)| k == kind)
        .map(|(_, d)| d)
        .collect()
}

/// What the operator needs, resource by resource (see the comments in
/// charts/meshmig/templates/clusterrole.yaml and the table in docs/install.md). Widening
/// the ClusterRole means changing this table too.
fn expected_cluster_permissions() -> BTreeMap<(String, String), BTreeSet<String>> {
    const READ: &[&str] = &["list", "watch"];
    const WRITE: &[&str] = &["get", "list", "watch", "create", "patch", "delete"];
    let table: &[(&str, &[&str], &[&str])] = &[
        (
            "meshmig.io",
            &["meshmigrations"],
            &["get", "list", "watch", "patch"],
        ),
        ("meshmig.io", &["meshmigrations/status"], &["patch"]),
        ("events.k8s.io", &["events"], &["create", "patch"]),
        ("apiextensions.k8s.io", &["customresourcedefinitions"], READ),
        ("", &["namespaces"], &["get", "list", "watch", "patch"]),
        ("", &["services"], WRITE),
        ("", &["pods"], &["list", "watch", "create", "delete"]),
        ("", &["serviceaccounts"], &["get"]),
        (
            "",
            &["configmaps"],
            &["get", "list", "watch", "create", "delete"],
        ),
        (
            "apps",
            &["deployments", "statefulsets", "daemonsets"],
            &["get", "list", "watch", "patch"],
        ),
        ("apps", &["replicasets"], READ),
        (
            "security.istio.io",
            &["authorizationpolicies", "requestauthentications"],
            WRITE,
        ),
        ("security.istio.io", &["peerauthentications"], READ),
        (
            "networking.istio.io",
            &["virtualservices", "destinationrules"],
            WRITE,
        ),
        (
            "networking.istio.io",
            &[
                "sidecars",
                "envoyfilters",
                "serviceentries",
                "workloadentries",
                "workloadgroups",
            ],
            READ,
        ),
        ("telemetry.istio.io", &["telemetries"], WRITE),
        ("extensions.istio.io", &["wasmplugins"], WRITE),
        (
            "gateway.networking.k8s.io",
            &["gateways", "httproutes"],
            WRITE,
        ),
        (
            "gateway.networking.k8s.io",
            &["referencegrants"],
            &["get", "create", "patch", "delete"],
        ),
        (
            "sailoperator.io",
            &["istios", "istiocnis"],
            &["get", "list", "watch", "patch"],
        ),
        ("sailoperator.io", &["ztunnels"], WRITE),
    ];
    let mut out: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for (group, resources, verbs) in table {
        for r in *resources {
            out.entry((group.to_string(), r.to_string()))
                .or_default()
                .extend(verbs.iter().map(|v| v.to_string()));
        }
    }
    out
}

fn assert_least_privilege(what: &str, rules: &[Rule]) {
    const ALLOWED_VERBS: &[&str] = &[
        "get", "list", "watch", "create", "update", "patch", "delete",
    ];
    assert!(!rules.is_empty(), "{what}: no rules");
    for r in rules {
        let all = r
            .api_groups
            .iter()
            .chain(&r.resources)
            .chain(&r.verbs)
            .chain(&r.resource_names);
        for v in all {
            assert!(!v.contains('*'), "{what}: wildcard in {r:?}");
        }
        assert!(
            r.non_resource_urls.is_empty(),
            "{what}: non-resource URLs {:?}",
            r.non_resource_urls
        );
        assert!(
            !r.api_groups.is_empty() && !r.resources.is_empty() && !r.verbs.is_empty(),
            "{what}: incomplete rule {r:?}"
        );
        for res in &r.resources {
            assert!(
                res != "secrets" && !res.starts_with("secrets/"),
                "{what}: grants {res}: meshmig never reads Secrets"
            );
            assert!(
                ![
                    "pods/exec",
                    "pods/attach",
                    "pods/portforward",
                    "serviceaccounts/token"
                ]
                .contains(&res.as_str()),
                "{what}: grants {res}"
            );
        }
        for v in &r.verbs {
            assert!(
                ALLOWED_VERBS.contains(&v.as_str()),
                "{what}: verb {v} (escalate, bind, impersonate, deletecollection … are never needed)"
            );
        }
        assert!(
            !r.api_groups
                .iter()
                .any(|g| g == "rbac.authorization.k8s.io" || g == "authentication.k8s.io"),
            "{what}: grants RBAC or token permissions: {r:?}"
        );
    }
}

#[test]
fn cluster_role_is_least_privilege() {
    let yaml = manifest();
    let roles = rbac_documents(&yaml, "ClusterRole");
    assert_eq!(roles.len(), 1, "one ClusterRole");
    let rules = parse_rules(&roles[0]);
    assert_least_privilege("ClusterRole", &rules);
    pretty_assertions::assert_eq!(
        permissions(&rules),
        expected_cluster_permissions(),
        "the ClusterRole differs from what the operator needs"
    );
    // Nothing cluster-wide about Leases: leader election has a Role in its namespace.
    assert!(
        !rules
            .iter()
            .any(|r| r.api_groups.contains(&"coordination.k8s.io".to_string())),
        "Leases belong in the namespaced Role"
    );
}

#[test]
fn leader_election_role_is_namespaced_and_limited_to_the_lease() {
    let yaml = manifest();
    let roles = rbac_documents(&yaml, "Role");
    assert_eq!(roles.len(), 1, "one Role");
    let role = &roles[0];
    assert!(role.contains("\n  namespace: meshmig-system\n"), "{role}");
    let rules = parse_rules(role);
    assert_least_privilege("Role", &rules);
    for r in &rules {
        assert_eq!(r.api_groups, ["coordination.k8s.io"], "{r:?}");
        assert_eq!(r.resources, ["leases"], "{r:?}");
        // create cannot be limited by name; everything else is.
        if r.verbs != ["create"] {
            assert_eq!(r.resource_names, ["meshmig-operator"], "{r:?}");
        }
    }
    let bindings = rbac_documents(&yaml, "RoleBinding");
    assert_eq!(bindings.len(), 1);
    assert!(bindings[0].contains("name: meshmig-operator\n    namespace: meshmig-system"));
}

#[test]
fn chart_and_manifest_carry_the_generated_crd() {
    let generated = read("crds/meshmig.io_meshmigrations.yaml");
    let in_chart = read("charts/meshmig/crds/meshmig.io_meshmigrations.yaml");
    assert!(
        generated == in_chart,
        "charts/meshmig/crds/ is stale; run 'make generate-chart'"
    );
    let yaml = manifest();
    assert!(
        yaml.contains(generated.trim_end()),
        "deploy/meshmig.yaml does not carry crds/meshmig.io_meshmigrations.yaml; run 'make generate-chart'"
    );
    let kinds: Vec<String> = documents(&yaml).into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "CustomResourceDefinition",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Service",
            "Deployment"
        ],
        "the default rendering (no ServiceMonitor by default)"
    );
}

/// `kubectl apply --dry-run=server -o json`: every object as the API server would store it.
async fn server_dry_run(env: &TestEnv, path: &str) -> Vec<Value> {
    let out = env
        .kubectl(["apply", "--dry-run=server", "-f", path, "-o", "json"])
        .await
        .unwrap_or_else(|e| panic!("server-side dry-run of {path} failed: {e}"));
    let v: Value = serde_json::from_str(&out).unwrap();
    match v["kind"].as_str() {
        Some("List") => v["items"].as_array().cloned().unwrap_or_default(),
        _ => vec![v],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_rendering_passes_a_server_side_dry_run() {
    let env = TestEnv::start().await.unwrap();
    // No Prometheus Operator here: the default rendering must not need it.
    let crds: Api<CustomResourceDefinition> = env.api();
    assert!(
        crds.get_opt("servicemonitors.monitoring.coreos.com")
            .await
            .unwrap()
            .is_none()
    );
    let path = std::env::var("MESHMIG_RBAC_MANIFEST")
        .unwrap_or_else(|_| format!("{ROOT}/deploy/meshmig.yaml"));
    let yaml = manifest();
    // Namespaced objects can only be dry-run in an existing namespace.
    let namespace = documents(&yaml)
        .into_iter()
        .find(|(k, _)| k == "Namespace")
        .map(|(_, d)| d)
        .unwrap();
    env.apply_yaml(&namespace).await.unwrap();

    let objects = server_dry_run(&env, &path).await;
    let kinds: BTreeSet<String> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap_or_default().to_string())
        .collect();
    for k in [
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "Deployment",
    ] {
        assert!(kinds.contains(k), "{k} missing from {kinds:?}");
    }
    assert!(!kinds.contains("ServiceMonitor"));
    // A dry run changes nothing.
    assert!(
        crds.get_opt("meshmigrations.meshmig.io")
            .await
            .unwrap()
            .is_none()
    );

    // The API server reads the ClusterRole exactly as the text parser does.
    let role = objects.iter().find(|o| o["kind"] == "ClusterRole").unwrap();
    let from_server: Vec<Rule> = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let list = |k: &str| -> Vec<String> {
                r[k].as_array()
                    .map(|a| {
                        a.iter()
                            .map(|s| s.as_str().unwrap_or_default().to_string())
                            .collect()
                    })
                    .unwrap_or_default()
            };
            Rule {
                api_groups: list("apiGroups"),
                resources: list("resources"),
                resource_names: list("resourceNames"),
                non_resource_urls: list("nonResourceURLs"),
                verbs: list("verbs"),
            }
        })
        .collect();
    let from_text = parse_rules(&rbac_documents(&yaml, "ClusterRole")[0]);
    pretty_assertions::assert_eq!(from_server, from_text);
    assert_least_privilege("ClusterRole (server)", &from_server);

    // The Deployment runs hardened, with the operator's namespace and name from the
    // downward API and probes on /healthz and /readyz.
    let deployment = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "meshmig-operator");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(c["resources"]["requests"]["cpu"].is_string());
    let env_vars: BTreeMap<String, Value> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_string(), e.clone()))
        .collect();
    assert_eq!(
        env_vars["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(
        env_vars["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert!(env_vars.contains_key("RUST_LOG"));

    // Applied for real, as docs/install.md says: the ReplicaSet's Pods pass the restricted
    // Pod Security admission of the namespace (the fake nodes then report them ready; no
    // image is pulled, nothing runs).
    env.kubectl(["apply", "-f", &path]).await.unwrap();
    let deployments: Api<Deployment> = env.api_in("meshmig-system");
    let replica_sets: Api<ReplicaSet> = env.api_in("meshmig-system");
    let ready = wait_for(
        "Deployment meshmig-operator available",
        Duration::from_secs(45),
        async || {
            // A refused Pod (e.g. by Pod Security admission) shows on the ReplicaSet.
            for rs in replica_sets.list(&Default::default()).await? {
                let failure = rs.status.and_then(|s| s.conditions).and_then(|c| {
                    c.into_iter()
                        .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")
                });
                if let Some(c) = failure {
                    return Ok(Err(c.message.unwrap_or_default()));
                }
            }
            let st = deployments
                .get("meshmig-operator")
                .await?
                .status
                .unwrap_or_default();
            if st.available_replicas == Some(2) {
                Ok(Ok(()))
            } else {
                Err(Pending::new(format!("{:?}", st.conditions)))
            }
        },
    )
    .await;
    match ready {
        Ok(Ok(())) => {}
        Ok(Err(refused)) => panic!("the operator Pods were refused: {refused}"),
        Err(e) => panic!("{e}"),
    }
    env.stop().await;
}
