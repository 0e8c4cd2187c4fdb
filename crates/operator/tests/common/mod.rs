//! Shared rig for the operator's end-to-end tests: a real API server, the mesh simulator,
//! bookinfo in sidecar mode and the operator as a child process.

#![allow(dead_code)] // each test binary uses part of it

pub mod states;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{CustomResourceExt, ResourceExt};
use meshmig_api::names::{self as mn, istio as n};
use meshmig_api::{MeshMigration, MigrationPhase};
use meshmig_e2e_harness::{Mesh, Pending, TestEnv, wait_for};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

pub const BOOKINFO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/bookinfo");

pub struct Rig {
    /// The real istiod and the simulator beside it (dropped before the environment).
    pub mesh: Mesh,
    pub env: TestEnv,
    pub operators: Vec<(String, Child)>,
    /// Extra operator arguments (e.g. `--leader-election=false`).
    pub operator_args: Vec<String>,
    /// Kubeconfig for operators started from now on (e.g. a fault proxy's); default: the
    /// environment's admin kubeconfig.
    pub kubeconfig: Option<std::path::PathBuf>,
    log: PathBuf,
    _crds: tempfile::TempDir,
}

impl Rig {
    /// A fresh API server with the simulator, bookinfo in sidecar mode, and the operator.
    pub async fn new(extra_namespaces: &[&str]) -> Rig {
        let crds = tempfile::tempdir().unwrap();
        std::fs::write(
            crds.path().join("meshmig.yaml"),
            serde_json::to_string(&MeshMigration::crd()).unwrap(),
        )
        .unwrap();
        let env = TestEnv::builder()
            .nodes(2)
            .crd_dir(crds.path())
            .start()
            .await
            .unwrap();
        let mesh = env.start_mesh().await.unwrap();
        env.apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata: {name: meshmig-system}\n")
            .await
            .unwrap();
        env.apply_file(format!("{BOOKINFO}/00-control-plane.yaml"))
            .await
            .unwrap();
        let apps = std::fs::read_to_string(format!("{BOOKINFO}/10-bookinfo.yaml")).unwrap();
        let istio = std::fs::read_to_string(format!("{BOOKINFO}/20-istio.yaml")).unwrap();
        env.apply_yaml(&apps).await.unwrap();
        for ns in extra_namespaces {
            env.apply_yaml(
                &apps
                    .replace("namespace: bookinfo", &format!("namespace: {ns}"))
                    .replace("name: bookinfo\n", &format!("name: {ns}\n")),
            )
            .await
            .unwrap();
        }
        let mut rig = Rig {
            log: env.dir().join("operator.log"),
            env,
            mesh,
            operators: Vec::new(),
            operator_args: Vec::new(),
            kubeconfig: None,
            _crds: crds,
        };
        for ns in std::iter::once("bookinfo").chain(extra_namespaces.iter().copied()) {
            rig.wait_available(ns).await;
        }
        rig.env.apply_yaml(&istio).await.unwrap();
        for ns in extra_namespaces {
            rig.env
                .apply_yaml(
                    &istio
                        .replace("namespace: bookinfo", &format!("namespace: {ns}"))
                        .replace("ns/bookinfo/", &format!("ns/{ns}/")),
                )
                .await
                .unwrap();
        }
        rig.start_operator("op-a").await;
        rig
    }

    pub fn log_of(&self, instance: &str) -> PathBuf {
        if instance == "op-a" {
            self.log.clone()
        } else {
            self.env.dir().join(format!("operator-{instance}.log"))
        }
    }

    pub async fn start_operator(&mut self, instance: &str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_of(instance))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_meshmig-operator"))
            .args([
                "--namespace",
                "meshmig-system",
                "--http-addr",
                "127.0.0.1:0",
                "--instance",
                instance,
                "--lease-seconds",
                "4",
            ])
            .args(&self.operator_args)
            .env(
                "KUBECONFIG",
                self.kubeconfig
                    .as_deref()
                    .unwrap_or_else(|| self.env.kubeconfig()),
            )
            .env("RUST_LOG", "info,kube=warn")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.operators.push((instance.to_string(), child));
    }

    /// SIGKILL: no chance to finish anything, or to release the lease.
    pub async fn kill_operator(&mut self, instance: &str) {
        if let Some(i) = self.operators.iter().position(|(n, _)| n == instance) {
            let (_, mut c) = self.operators.remove(i);
            c.kill().await.unwrap();
        }
    }

    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        s.lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub async fn wait_available(&self, ns: &str) {
        let api: Api<Deployment> = self.env.api_in(ns);
        wait_for(
            format!("Deployments of {ns} available"),
            Duration::from_secs(90),
            async || {
                let list = api.list(&ListParams::default()).await?;
                let waiting: Vec<String> = list
                    .items
                    .iter()
                    .filter(|d| {
                        d.status
                            .as_ref()
                            .and_then(|s| s.available_replicas)
                            .unwrap_or(0)
                            < 1
                    })
                    .map(|d| d.name_any())
                    .collect();
                if list.items.is_empty() || !waiting.is_empty() {
                    return Err(Pending::new(format!("not available: {waiting:?}")));
                }
                Ok(())
            },
        )
        .await
        .unwrap();
    }

    pub fn migrations(&self) -> Api<MeshMigration> {
        self.env.api()
    }

    pub async fn apply_migration(&self, name: &str, spec: Value) {
        let mut spec = spec;
        if spec.get("namespaces").is_none() {
            spec["namespaces"] = json!(["bookinfo"]);
        }
        let obj = json!({"apiVersion": "meshmig.io/v1alpha1", "kind": "MeshMigration", "metadata": {"name": name}, "spec": spec});
        self.env
            .apply_yaml(&serde_json::to_string(&obj).unwrap())
            .await
            .unwrap();
    }

    /// Waits until `pred` holds on the MeshMigration; fails with its status and the operator
    /// log otherwise.
    pub async fn wait_mm(
        &self,
        name: &str,
        what: &str,
        secs: u64,
        pred: impl Fn(&MeshMigration) -> bool,
    ) -> MeshMigration {
        let api = self.migrations();
        let r = wait_for(
            format!("MeshMigration {name}: {what}"),
            Duration::from_secs(secs),
            async || {
                let mm = api.get(name).await?;
                if pred(&mm) {
                    Ok(mm)
                } else {
                    Err(Pending::new(progress(&mm)))
                }
            },
        )
        .await;
        match r {
            Ok(mm) => mm,
            Err(e) => panic!("{e}\noperator log:\n{}", self.log_tail()),
        }
    }

    pub async fn annotate(&self, name: &str, key: &str, value: Option<&str>) {
        let patch = json!({"metadata": {"annotations": {key: value}}});
        self.migrations()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    pub async fn delete_migration(&self, name: &str) {
        let api = self.migrations();
        api.delete(name, &DeleteParams::default()).await.unwrap();
        wait_for(
            format!("MeshMigration {name} deleted"),
            Duration::from_secs(60),
            async || match api.get_opt(name).await? {
                None => Ok(()),
                Some(_) => Err(Pending::new("still present")),
            },
        )
        .await
        .unwrap();
    }

    pub fn dynamic(
        &self,
        group: &str,
        version: &str,
        kind: &str,
        plural: &str,
        ns: Option<&str>,
    ) -> Api<DynamicObject> {
        let ar =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        match ns {
            Some(ns) => Api::namespaced_with(self.env.client(), ns, &ar),
            None => Api::all_with(self.env.client(), &ar),
        }
    }

    /// Labels, annotations and spec of every user object meshmig may touch.
    pub async fn user_objects(&self, ns: &str) -> BTreeMap<String, Value> {
        let kinds = [
            ("", "v1", "Namespace", "namespaces", false),
            ("", "v1", "Service", "services", true),
            ("apps", "v1", "Deployment", "deployments", true),
            (
                "security.istio.io",
                "v1",
                "AuthorizationPolicy",
                "authorizationpolicies",
                true,
            ),
            (
                "security.istio.io",
                "v1",
                "PeerAuthentication",
                "peerauthentications",
                true,
            ),
            (
                "networking.istio.io",
                "v1",
                "VirtualService",
                "virtualservices",
                true,
            ),
            (
                "networking.istio.io",
                "v1",
                "DestinationRule",
                "destinationrules",
                true,
            ),
            ("sailoperator.io", "v1", "Istio", "istios", false),
            ("sailoperator.io", "v1", "IstioCNI", "istiocnis", false),
        ];
        let mut out = BTreeMap::new();
        for (g, v, k, p, namespaced) in kinds {
            let api = self.dynamic(g, v, k, p, namespaced.then_some(ns));
            for o in api.list(&ListParams::default()).await.unwrap() {
                if k == "Namespace" && o.name_any() != ns {
                    continue;
                }
                if o.labels().get(mn::LABEL_MANAGED_BY).is_some() {
                    continue;
                }
                let mut annotations = o.annotations().clone();
                // Written by controllers, not by users or meshmig.
                annotations.remove("deployment.kubernetes.io/revision");
                out.insert(
                    format!("{k}/{}", o.name_any()),
                    json!({"labels": o.labels(), "annotations": annotations, "spec": o.data.get("spec")}),
                );
            }
        }
        out
    }

    /// Every object meshmig created (label app.kubernetes.io/managed-by=meshmig), except
    /// probe Pods that are still terminating.
    pub async fn meshmig_objects(&self) -> Vec<String> {
        let sel =
            ListParams::default().labels(&format!("{}={}", mn::LABEL_MANAGED_BY, mn::MANAGED_BY));
        let kinds = [
            ("", "v1", "Service", "services"),
            ("", "v1", "ConfigMap", "configmaps"),
            (
                "security.istio.io",
                "v1",
                "AuthorizationPolicy",
                "authorizationpolicies",
            ),
            (
                "networking.istio.io",
                "v1",
                "DestinationRule",
                "destinationrules",
            ),
            ("gateway.networking.k8s.io", "v1", "Gateway", "gateways"),
            ("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes"),
            ("sailoperator.io", "v1", "ZTunnel", "ztunnels"),
        ];
        let mut out = Vec::new();
        for (g, v, k, p) in kinds {
            for o in self.dynamic(g, v, k, p, None).list(&sel).await.unwrap() {
                out.push(format!(
                    "{k}/{}/{}",
                    o.namespace().unwrap_or_default(),
                    o.name_any()
                ));
            }
        }
        out
    }

    pub async fn assert_migrated(&self, ns: &str) {
        let pods: Api<Pod> = self.env.api_in(ns);
        let list = pods.list(&ListParams::default()).await.unwrap();
        let app_pods: Vec<&Pod> = list
            .items
            .iter()
            .filter(|p| {
                p.labels().contains_key("app")
                    && !p
                        .labels()
                        .contains_key("gateway.networking.k8s.io/gateway-name")
            })
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        assert_eq!(app_pods.len(), 6, "bookinfo pods in {ns}");
        for p in app_pods {
            let spec = p.spec.as_ref().unwrap();
            // istiod injects istio-proxy as a native sidecar (an init container).
            let names: Vec<&String> = spec
                .containers
                .iter()
                .chain(spec.init_containers.iter().flatten())
                .map(|c| &c.name)
                .collect();
            assert_eq!(names.len(), 1, "{} still has {names:?}", p.name_any());
            assert!(
                !p.annotations().contains_key(n::SIDECAR_STATUS),
                "{} is still injected",
                p.name_any()
            );
            let ready = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .map(|cs| cs.iter().filter(|c| c.ready).count());
            assert_eq!(ready, Some(1), "{} is not 1/1", p.name_any());
            assert_eq!(
                p.annotations().get(n::REDIRECTION).map(String::as_str),
                Some("enabled"),
                "{}",
                p.name_any()
            );
        }
        let nsobj: Namespace = self.env.api::<Namespace>().get(ns).await.unwrap();
        let labels = nsobj.labels();
        assert_eq!(
            labels.get(n::DATAPLANE_MODE).map(String::as_str),
            Some("ambient")
        );
        assert_eq!(
            labels.get(n::USE_WAYPOINT).map(String::as_str),
            Some("waypoint")
        );
        assert!(
            !labels.contains_key(n::INJECTION) && !labels.contains_key(n::REV),
            "{labels:?}"
        );
        let vs = self.dynamic(
            "networking.istio.io",
            "v1",
            "VirtualService",
            "virtualservices",
            Some(ns),
        );
        assert!(
            vs.get_opt("reviews").await.unwrap().is_none(),
            "VirtualService reviews still exists"
        );
        let hr = self.dynamic(
            "gateway.networking.k8s.io",
            "v1",
            "HTTPRoute",
            "httproutes",
            Some(ns),
        );
        let route = hr.get("reviews").await.unwrap();
        assert_eq!(
            route.data["spec"]["rules"][0]["backendRefs"][0]["name"],
            "reviews-v2"
        );
        let aps = self.dynamic(
            "security.istio.io",
            "v1",
            "AuthorizationPolicy",
            "authorizationpolicies",
            Some(ns),
        );
        let all = aps.list(&ListParams::default()).await.unwrap().items;
        for policy in ["productpage-viewer", "details-viewer", "reviews-viewer"] {
            let copy = all
                .iter()
                .find(|a| {
                    a.annotations().get(mn::ANNOTATION_SOURCE)
                        == Some(&format!("AuthorizationPolicy/{ns}/{policy}"))
                })
                .unwrap_or_else(|| panic!("no waypoint copy of {policy}"));
            assert!(copy.data["spec"]["targetRefs"].is_array());
            assert!(
                all.iter().all(|a| a.name_any() != policy),
                "selector original {policy} still exists"
            );
        }
        let bypass = all
            .iter()
            .find(|a| a.name_any() == "meshmig-bypass-reviews")
            .expect("bypass protection");
        assert!(bypass.data["spec"]["selector"]["matchLabels"].is_object());
        assert!(bypass.data["spec"].get("targetRefs").is_none());
    }
}

impl Rig {
    /// Waits until no workload of `ns` is rolling out and no Pod of it is terminating, so
    /// the Pods listed next are the ones that stay.
    pub async fn wait_settled(&self, ns: &str) {
        let deployments: Api<Deployment> = self.env.api_in(ns);
        let pods: Api<Pod> = self.env.api_in(ns);
        let r = wait_for(
            format!("rollouts of {ns} settled"),
            Duration::from_secs(120),
            async || {
                let mut busy = Vec::new();
                for d in deployments.list(&ListParams::default()).await? {
                    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                    let st = d.status.clone().unwrap_or_default();
                    if st.observed_generation.unwrap_or(0) < d.metadata.generation.unwrap_or(0)
                        || st.updated_replicas.unwrap_or(0) < want
                        || st.available_replicas.unwrap_or(0) < want
                        || st.replicas.unwrap_or(0) != want
                    {
                        busy.push(d.name_any());
                    }
                }
                for p in pods.list(&ListParams::default()).await? {
                    if p.metadata.deletion_timestamp.is_some() && !is_probe(&p) {
                        busy.push(format!("Pod {} terminating", p.name_any()));
                    }
                }
                if busy.is_empty() {
                    Ok(())
                } else {
                    Err(Pending::new(format!("busy: {busy:?}")))
                }
            },
        )
        .await;
        if let Err(e) = r {
            panic!("{e}\noperator log:\n{}", self.log_tail());
        }
    }

    /// How the Pods of `ns` take part in the mesh, per workload: for each Pod its containers,
    /// init containers, `sidecar.istio.io/status`, ztunnel redirection and HBONE tunnel
    /// label. Pod names, restart tokens and probe Pods are left out: they differ between
    /// runs that leave the mesh in the same state.
    pub async fn pod_mesh_state(&self, ns: &str) -> BTreeMap<String, Vec<Value>> {
        let pods: Api<Pod> = self.env.api_in(ns);
        let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for p in pods.list(&ListParams::default()).await.unwrap() {
            if p.metadata.deletion_timestamp.is_some() || is_probe(&p) {
                continue;
            }
            let spec = p.spec.clone().unwrap_or_default();
            let names = |cs: &[k8s_openapi::api::core::v1::Container]| {
                cs.iter().map(|c| c.name.clone()).collect::<Vec<_>>()
            };
            let annotation = |k: &str| p.annotations().get(k).cloned();
            out.entry(workload_of(&p)).or_default().push(json!({
                "containers": names(&spec.containers),
                "initContainers": names(spec.init_containers.as_deref().unwrap_or_default()),
                "sidecarStatus": annotation(n::SIDECAR_STATUS),
                "redirection": annotation(n::REDIRECTION),
                "tunnel": p.labels().get(n::TUNNEL),
            }));
        }
        for v in out.values_mut() {
            v.sort_by_key(|x| x.to_string());
        }
        out
    }

    /// Namespace labels and, for every object meshmig creates or changes in `ns` (theirs
    /// and the user's), labels and spec: what a rollback to some step must leave as it was
    /// at that step.
    pub async fn namespace_state(&self, ns: &str) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        let nsobj = self.env.api::<Namespace>().get(ns).await.unwrap();
        out.insert(format!("Namespace/{ns}"), json!(nsobj.labels()));
        for (g, v, k, p) in [
            ("", "v1", "Service", "services"),
            (
                "security.istio.io",
                "v1",
                "AuthorizationPolicy",
                "authorizationpolicies",
            ),
            (
                "networking.istio.io",
                "v1",
                "DestinationRule",
                "destinationrules",
            ),
            (
                "networking.istio.io",
                "v1",
                "VirtualService",
                "virtualservices",
            ),
            ("gateway.networking.k8s.io", "v1", "Gateway", "gateways"),
            ("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes"),
        ] {
            for o in self
                .dynamic(g, v, k, p, Some(ns))
                .list(&ListParams::default())
                .await
                .unwrap()
            {
                let mut labels = o.labels().clone();
                labels.remove(mn::LABEL_STEP);
                let mut spec = o.data.get("spec").cloned().unwrap_or(Value::Null);
                // Allocated by the API server each time a Service is created.
                if let Some(m) = spec.as_object_mut() {
                    m.remove("clusterIP");
                    m.remove("clusterIPs");
                }
                out.insert(
                    format!("{k}/{}", o.name_any()),
                    json!({"labels": labels, "spec": spec}),
                );
            }
        }
        out
    }
}

fn is_probe(p: &Pod) -> bool {
    p.labels().contains_key(mn::LABEL_PROBE)
}

/// The Deployment (or other controller) a Pod belongs to: a ReplicaSet's name less its hash.
fn workload_of(p: &Pod) -> String {
    let owner = p
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    match owner {
        Some(o) if o.kind == "ReplicaSet" => match o.name.rsplit_once('-') {
            Some((deployment, _)) => format!("Deployment/{deployment}"),
            None => format!("ReplicaSet/{}", o.name),
        },
        Some(o) => format!("{}/{}", o.kind, o.name),
        None => format!("Pod/{}", p.name_any()),
    }
}

/// Reason and note of the Events about MeshMigrations (events.k8s.io, where notes live).
pub async fn migration_events(env: &TestEnv) -> String {
    env.kubectl([
        "get",
        "events.events.k8s.io",
        "-A",
        "--field-selector",
        "regarding.kind=MeshMigration",
        "-o",
        "custom-columns=R:.reason,N:.note",
    ])
    .await
    .unwrap()
}

pub fn phase(mm: &MeshMigration) -> Option<MigrationPhase> {
    mm.status.as_ref().and_then(|s| s.phase)
}

/// A MeshMigration's phase and per-namespace progress in one line, for failure messages.
pub fn progress(mm: &MeshMigration) -> String {
    let st = mm.status.clone().unwrap_or_default();
    format!(
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
    )
}

/// The snapshot ConfigMaps (heads and parts) of a migration.
pub async fn snapshot_config_maps(rig: &Rig, migration: &str) -> Vec<ConfigMap> {
    let api: Api<ConfigMap> = rig.env.api();
    api.list(&ListParams::default().labels(&format!(
        "{}=true,{}={migration}",
        mn::LABEL_SNAPSHOT,
        mn::LABEL_MIGRATION
    )))
    .await
    .unwrap()
    .items
}
