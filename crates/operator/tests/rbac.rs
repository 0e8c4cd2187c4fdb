//! The shipped RBAC is enough, and is what the operator runs with: the ServiceAccount,
//! ClusterRole, ClusterRoleBinding, Role and RoleBinding from deploy/meshmig.yaml are
//! installed on a real API server, and the operator runs with a kubeconfig holding only that
//! ServiceAccount's token. It migrates bookinfo to Ready, rolls it back and lets the
//! MeshMigration go, never meeting a Forbidden. (Bookinfo and the MeshMigration are applied
//! as admin; istiod and the simulator beside it run as admin too.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use meshmig_api::names::{self as mn, istio as n};
use meshmig_api::{MeshMigration, MigrationPhase};
use meshmig_e2e_harness::{Mesh, Pending, TestEnv, wait_for};
use serde_json::json;
use tokio::process::{Child, Command};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
const BOOKINFO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/bookinfo");
const NAMESPACE: &str = "meshmig-system";
const SERVICE_ACCOUNT: &str = "meshmig-operator";

/// The documents of deploy/meshmig.yaml whose top-level kind is one of `kinds`, in order.
/// `MESHMIG_RBAC_MANIFEST=<file>` tests another rendering instead (e.g. one with a rule
/// removed, to see the test fail).
fn manifest_documents(kinds: &[&str]) -> String {
    let path = std::env::var("MESHMIG_RBAC_MANIFEST")
        .unwrap_or_else(|_| format!("{ROOT}/deploy/meshmig.yaml"));
    let yaml = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e} (run 'make generate-chart')"));
    let mut out = String::new();
    for doc in yaml.split("\n---\n") {
        let kind = doc
            .lines()
            .find_map(|l| l.strip_prefix("kind: "))
            .map(str::trim);
        if kind.is_some_and(|k| kinds.contains(&k)) {
            out.push_str("---\n");
            out.push_str(doc.trim_start_matches("---\n"));
            out.push('\n');
        }
    }
    out
}

/// A kubeconfig for the admin kubeconfig's server and CA, authenticating with `token` only.
fn restricted_kubeconfig(admin: &Path, token: &str, path: &Path) {
    let admin = kube::config::Kubeconfig::read_from(admin).unwrap();
    let cluster = admin.clusters[0].cluster.clone().unwrap();
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "testenv", "cluster": {
            "server": cluster.server,
            "certificate-authority-data": cluster.certificate_authority_data,
        }}],
        "users": [{"name": SERVICE_ACCOUNT, "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {
            "cluster": "testenv", "user": SERVICE_ACCOUNT, "namespace": NAMESPACE,
        }}],
        "current-context": "operator",
    });
    // JSON is YAML.
    std::fs::write(path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
}

struct Rig {
    /// The real istiod and the simulator beside it (dropped before the environment).
    _mesh: Mesh,
    env: TestEnv,
    operator: Option<Child>,
    kubeconfig: PathBuf,
    log: PathBuf,
    _crds: tempfile::TempDir,
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(c) = self.operator.as_mut() {
            let _ = c.start_kill();
        }
    }
}

impl Rig {
    async fn new() -> Rig {
        // The CRD as shipped in the manifest.
        let crds = tempfile::tempdir().unwrap();
        std::fs::write(
            crds.path().join("meshmig.yaml"),
            manifest_documents(&["CustomResourceDefinition"]),
        )
        .unwrap();
        let env = TestEnv::builder()
            .nodes(2)
            .crd_dir(crds.path())
            .start()
            .await
            .unwrap();
        let mesh = env.start_mesh().await.unwrap();
        // The Namespace and RBAC from deploy/meshmig.yaml (the Deployment cannot run here:
        // the operator runs as a local process with the ServiceAccount's token instead).
        env.apply_yaml(&manifest_documents(&[
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
        ]))
        .await
        .unwrap();
        env.apply_file(format!("{BOOKINFO}/00-control-plane.yaml"))
            .await
            .unwrap();
        env.apply_file(format!("{BOOKINFO}/10-bookinfo.yaml"))
            .await
            .unwrap();
        let deployments: Api<Deployment> = env.api_in("bookinfo");
        wait_for(
            "bookinfo Deployments available",
            Duration::from_secs(90),
            async || {
                let list = deployments.list(&ListParams::default()).await?;
                let waiting = list
                    .items
                    .iter()
                    .filter(|d| {
                        d.status
                            .as_ref()
                            .and_then(|s| s.available_replicas)
                            .unwrap_or(0)
                            < 1
                    })
                    .count();
                if list.items.is_empty() || waiting > 0 {
                    return Err(Pending::new(format!("{waiting} not available")));
                }
                Ok(())
            },
        )
        .await
        .unwrap();
        env.apply_file(format!("{BOOKINFO}/20-istio.yaml"))
            .await
            .unwrap();

        let token = env.mint_token(NAMESPACE, SERVICE_ACCOUNT).await.unwrap();
        let kubeconfig = env.dir().join("operator.kubeconfig");
        restricted_kubeconfig(env.kubeconfig(), &token, &kubeconfig);
        // It really is restricted: no Secrets.
        let restricted: Client = env.client_with_token(&token).unwrap();
        match Api::<Secret>::all(restricted)
            .list(&ListParams::default())
            .await
        {
            Err(kube::Error::Api(s)) if s.code == 403 => {}
            other => panic!("the operator's ServiceAccount may list Secrets: {other:?}"),
        }
        let log = env.dir().join("operator.log");
        let mut rig = Rig {
            _mesh: mesh,
            env,
            operator: None,
            kubeconfig,
            log,
            _crds: crds,
        };
        rig.start_operator();
        rig
    }

    /// The operator binary with the ServiceAccount's kubeconfig, as the Deployment runs it
    /// (its defaults: leader election on).
    fn start_operator(&mut self) {
        let log = std::fs::File::create(&self.log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_meshmig-operator"))
            .args(["--namespace", NAMESPACE, "--http-addr", "127.0.0.1:0"])
            .env("KUBECONFIG", &self.kubeconfig)
            .env("POD_NAME", "meshmig-operator-rbac-test")
            .env("RUST_LOG", "info,kube=warn")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.operator = Some(child);
    }

    /// The operator log, without colours.
    fn log(&self) -> String {
        let raw = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' && chars.peek() == Some(&'[') {
                // CSI: ESC [ parameters… final letter
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    /// Lines of the operator log that say a request was refused.
    fn forbidden(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| {
                // kube's ErrorResponse: `... is forbidden: User ... reason: "Forbidden", code: 403`
                l.to_ascii_lowercase().contains("forbidden") || l.contains("code: 403")
            })
            .map(str::to_string)
            .collect()
    }

    fn log_tail(&self) -> String {
        let s = self.log();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Waits until `pred` holds; fails at once, naming the refused requests, as soon as
    /// the operator logs a Forbidden.
    async fn wait_mm(
        &self,
        name: &str,
        what: &str,
        secs: u64,
        pred: impl Fn(&MeshMigration) -> bool,
    ) -> MeshMigration {
        let api: Api<MeshMigration> = self.env.api();
        let r = wait_for(
            format!("MeshMigration {name}: {what}"),
            Duration::from_secs(secs),
            async || {
                let denied = self.forbidden();
                if !denied.is_empty() {
                    // Not `Pending`: no point in waiting.
                    return Ok(Err(denied));
                }
                let mm = api.get(name).await?;
                if pred(&mm) {
                    return Ok(Ok(mm));
                }
                let st = mm.status.clone().unwrap_or_default();
                Err(Pending::new(format!(
                    "phase {:?}; {}",
                    st.phase,
                    st.namespaces
                        .iter()
                        .map(|n| format!(
                            "{} step {} {:?}: {}",
                            n.name,
                            n.step,
                            n.phase,
                            n.message.clone().unwrap_or_default()
                        ))
                        .collect::<Vec<_>>()
                        .join(" | ")
                )))
            },
        )
        .await;
        match r {
            Ok(Ok(mm)) => mm,
            Ok(Err(denied)) => panic!(
                "{what}: the operator was refused with the shipped RBAC:\n{}",
                denied.join("\n")
            ),
            Err(e) => panic!("{e}\noperator log:\n{}", self.log_tail()),
        }
    }

    /// Waits until the MeshMigration is gone (its finalizer removed); fails at once on a
    /// Forbidden.
    async fn wait_gone(&self, name: &str, secs: u64) {
        let api: Api<MeshMigration> = self.env.api();
        let r = wait_for(
            format!("MeshMigration {name} deleted"),
            Duration::from_secs(secs),
            async || {
                let denied = self.forbidden();
                if !denied.is_empty() {
                    return Ok(Err(denied));
                }
                match api.get_opt(name).await? {
                    None => Ok(Ok(())),
                    Some(_) => Err(Pending::new("still present")),
                }
            },
        )
        .await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(denied)) => panic!(
                "deleting {name}: the operator was refused with the shipped RBAC:\n{}",
                denied.join("\n")
            ),
            Err(e) => panic!("{e}\noperator log:\n{}", self.log_tail()),
        }
    }

    fn dynamic(&self, group: &str, version: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
        let ar =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        Api::namespaced_with(self.env.client(), "bookinfo", &ar)
    }
}

fn condition(mm: &MeshMigration, type_: &str) -> bool {
    mm.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == "True")
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_migrates_and_rolls_back_bookinfo_with_the_shipped_rbac() {
    let rig = Rig::new().await;
    let mm_yaml = json!({"apiVersion": "meshmig.io/v1alpha1", "kind": "MeshMigration",
    "metadata": {"name": "bookinfo"},
    "spec": {"namespaces": ["bookinfo"], "checkpoints": {"timeout": "2m", "probes": [
        {"name": "reads", "fromNamespace": "bookinfo", "serviceAccount": "bookinfo-productpage", "url": "http://reviews.bookinfo:9080/", "expect": {"status": 200}},
        {"name": "denied", "fromNamespace": "bookinfo", "serviceAccount": "bookinfo-ratings", "url": "http://reviews.bookinfo:9080/", "expect": {"denied": true}}
    ]}}});
    rig.env
        .apply_yaml(&serde_json::to_string(&mm_yaml).unwrap())
        .await
        .unwrap();

    // ---- migrate, as bookinfo_migrates_to_ready in e2e.rs
    let mm = rig
        .wait_mm("bookinfo", "Ready", 150, |mm| {
            condition(mm, mn::CONDITION_READY)
        })
        .await;
    let st = mm.status.clone().unwrap();
    assert_eq!(st.phase, Some(MigrationPhase::Completed));
    assert_eq!(st.namespaces[0].history.len(), 9);
    assert!(
        st.namespaces[0].snapshots.len() >= 7,
        "{:?}",
        st.namespaces[0].snapshots
    );
    let ns: Namespace = rig.env.api::<Namespace>().get("bookinfo").await.unwrap();
    assert_eq!(
        ns.labels().get(n::DATAPLANE_MODE).map(String::as_str),
        Some("ambient")
    );
    assert_eq!(
        ns.labels().get(n::USE_WAYPOINT).map(String::as_str),
        Some("waypoint")
    );
    let vs = rig.dynamic(
        "networking.istio.io",
        "v1",
        "VirtualService",
        "virtualservices",
    );
    assert!(vs.get_opt("reviews").await.unwrap().is_none());
    let routes = rig.dynamic("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes");
    assert!(routes.get_opt("reviews").await.unwrap().is_some());
    let pods: Api<Pod> = rig.env.api_in("bookinfo");
    for p in pods.list(&ListParams::default()).await.unwrap() {
        if p.labels().contains_key("app")
            && !p
                .labels()
                .contains_key("gateway.networking.k8s.io/gateway-name")
            && p.metadata.deletion_timestamp.is_none()
        {
            // istiod injects istio-proxy as a native sidecar (an init container).
            let spec = p.spec.as_ref().unwrap();
            let names: Vec<&str> = spec
                .containers
                .iter()
                .chain(spec.init_containers.iter().flatten())
                .map(|c| c.name.as_str())
                .collect();
            assert_eq!(names.len(), 1, "{} still has {names:?}", p.name_any());
            assert!(
                !p.annotations().contains_key(n::SIDECAR_STATUS),
                "{} is still injected",
                p.name_any()
            );
        }
    }
    wait_for("probe Pods removed", Duration::from_secs(30), async || {
        let left = pods
            .list(&ListParams::default().labels(mn::LABEL_PROBE))
            .await?
            .items
            .len();
        if left == 0 {
            Ok(())
        } else {
            Err(Pending::new(format!("{left} left")))
        }
    })
    .await
    .unwrap();
    // Events were published (events.k8s.io create).
    let events = rig
        .env
        .kubectl([
            "get",
            "events.events.k8s.io",
            "-A",
            "--field-selector",
            "regarding.kind=MeshMigration",
            "-o",
            "custom-columns=R:.reason",
        ])
        .await
        .unwrap();
    assert!(
        events.contains("StepStarted") && events.contains("StepPassed"),
        "{events}"
    );

    // ---- roll everything back: re-creates what was deleted, deletes what was created,
    // restores labels and the Sail resources
    let patch = json!({"metadata": {"annotations": {mn::ANNOTATION_ROLLBACK: "all"}}});
    rig.env
        .api::<MeshMigration>()
        .patch("bookinfo", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    rig.wait_mm("bookinfo", "rolled back", 120, |mm| {
        mm.status.as_ref().and_then(|s| s.phase) == Some(MigrationPhase::RolledBack)
    })
    .await;
    assert!(
        vs.get_opt("reviews").await.unwrap().is_some(),
        "VirtualService reviews re-created"
    );
    assert!(routes.get_opt("reviews").await.unwrap().is_none());
    let ns: Namespace = rig.env.api::<Namespace>().get("bookinfo").await.unwrap();
    assert!(
        !ns.labels().contains_key(n::DATAPLANE_MODE),
        "{:?}",
        ns.labels()
    );

    // ---- deleting the MeshMigration removes its finalizer and frozen plan
    let api: Api<MeshMigration> = rig.env.api();
    api.delete("bookinfo", &DeleteParams::default())
        .await
        .unwrap();
    rig.wait_gone("bookinfo", 30).await;

    let denied = rig.forbidden();
    assert!(
        denied.is_empty(),
        "the operator was refused with the shipped RBAC:\n{}",
        denied.join("\n")
    );
    let log = rig.log();
    assert!(
        !log.contains("could not publish event"),
        "events were refused:\n{}",
        rig.log_tail()
    );
}
