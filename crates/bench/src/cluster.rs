//! Cluster benchmarks on the e2e environment (the real kube-apiserver of `e2e/testenv`, the
//! real istiod, and the mesh simulator beside it), with the release operator binary as a
//! child process:
//!
//! - `cluster-rss`: the operator's resident memory while it watches many Pods (metadata
//!   only) across many namespaces;
//! - `migrate`: a migration of N bookinfo copies: API requests per namespace (the operator's
//!   `meshmig_api_requests` counter) against the minimum the frozen plan needs, and the
//!   operator's overhead over the rollouts and readiness it waits for.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{CustomResourceExt, Resource, ResourceExt};
use meshmig_api::{MeshMigration, MigrationPhase, NamespacePhase, Step};
use meshmig_e2e_harness::{Mesh, Pending, TestEnv, wait_for};
use meshmig_planner::plan::Op;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use crate::Error;
use crate::measure::proc_status_bytes;

const CONTROL_PLANE: &str = include_str!("../../../examples/bookinfo/00-control-plane.yaml");
const BOOKINFO_APPS: &str = include_str!("../../../examples/bookinfo/10-bookinfo.yaml");
const BOOKINFO_ISTIO: &str = include_str!("../../../examples/bookinfo/20-istio.yaml");
const OPERATOR_NAMESPACE: &str = "meshmig-system";

/// Arguments of `meshmig-bench cluster-rss`.
#[derive(clap::Args, Debug)]
pub struct RssArgs {
    /// The operator binary.
    #[arg(long, default_value = "target/release/meshmig-operator")]
    pub operator: PathBuf,
    /// Namespaces holding the Pods.
    #[arg(long, default_value_t = 1000)]
    pub namespaces: usize,
    /// Pods in all.
    #[arg(long, default_value_t = 20000)]
    pub pods: usize,
    /// Concurrent create requests.
    #[arg(long, default_value_t = 48)]
    pub concurrency: usize,
    /// Operator processes started one after the other (each is one run).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Seconds after /readyz before the first sample.
    #[arg(long, default_value_t = 15)]
    pub settle_seconds: u64,
    /// VmRSS samples per run.
    #[arg(long, default_value_t = 5)]
    pub samples: usize,
    /// Seconds between samples.
    #[arg(long, default_value_t = 2)]
    pub sample_interval: u64,
    /// Where logs and CRDs go.
    #[arg(long, default_value = "target/bench")]
    pub work_dir: PathBuf,
    /// Result file (JSON).
    #[arg(long, default_value = "target/bench/cluster-rss.json")]
    pub results: PathBuf,
}

/// Arguments of `meshmig-bench migrate`.
#[derive(clap::Args, Debug)]
pub struct MigrateArgs {
    /// The operator binary.
    #[arg(long, default_value = "target/release/meshmig-operator")]
    pub operator: PathBuf,
    /// bookinfo copies migrated by one MeshMigration.
    #[arg(long, default_value_t = 20)]
    pub namespaces: usize,
    /// Migrations, each on a fresh API server.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Seconds a migration may take.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Where logs and CRDs go.
    #[arg(long, default_value = "target/bench")]
    pub work_dir: PathBuf,
    /// Result file (JSON).
    #[arg(long, default_value = "target/bench/cluster-migrate.json")]
    pub results: PathBuf,
}

/// One operator process watching the Pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct RssRun {
    /// Start to /readyz (caches synced), seconds.
    pub ready_s: f64,
    /// VmRSS samples after settling, bytes.
    pub rss: Vec<u64>,
    /// VmHWM at the end, bytes.
    pub hwm: u64,
}

/// `cluster-rss` results.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Rss {
    /// Namespaces holding the Pods.
    pub namespaces: usize,
    /// Pods created.
    pub pods: usize,
    /// Creating them (namespaces and Pods), seconds.
    pub create_s: f64,
    /// Seconds after /readyz before sampling.
    pub settle_s: u64,
    pub runs: Vec<RssRun>,
}

/// An interval during which something outside the operator was busy (a rollout, a
/// waypoint being programmed, the control plane reconciling), seconds from the start.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Busy {
    /// Kind/namespace/name.
    pub object: String,
    /// Namespace ("" for cluster-scoped).
    pub namespace: String,
    /// Start, s.
    pub start: f64,
    /// End, s.
    pub end: f64,
}

/// One migration of N namespaces.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct MigrateRun {
    /// Namespaces migrated.
    pub namespaces: usize,
    /// Setting up the environment (API server, istiod and simulator, N bookinfo copies),
    /// seconds.
    pub setup_s: f64,
    /// MeshMigration applied to phase Completed, seconds.
    pub wall_s: f64,
    /// Length of the union of all busy intervals within the migration, seconds.
    pub external_s: f64,
    /// The busy intervals.
    pub busy: Vec<Busy>,
    /// When each namespace entered each step (index 0: step 1) and completed (last), s.
    pub step_starts: BTreeMap<String, Vec<Option<f64>>>,
    /// `meshmig_api_requests_total` by `verb resource`, during the migration only.
    pub requests: BTreeMap<String, u64>,
    /// The same counter at operator start-up (before the MeshMigration), for reference.
    pub startup_requests: BTreeMap<String, u64>,
    /// Reconciles during the migration.
    pub reconciles: u64,
    /// `meshmig_step_duration_seconds` sum and count by step.
    pub step_seconds: BTreeMap<Step, StepTime>,
    /// The minimum writes the frozen plan needs, by kind of write.
    pub minimum: BTreeMap<String, u64>,
}

/// The operator's time in one step, summed over namespaces (written as `[sum, count]`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq)]
#[serde(from = "(f64, u64)", into = "(f64, u64)")]
pub struct StepTime {
    pub sum_s: f64,
    pub count: u64,
}

impl From<(f64, u64)> for StepTime {
    fn from((sum_s, count): (f64, u64)) -> Self {
        Self { sum_s, count }
    }
}

impl From<StepTime> for (f64, u64) {
    fn from(t: StepTime) -> Self {
        (t.sum_s, t.count)
    }
}

/// `migrate` results.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Migrate {
    pub runs: Vec<MigrateRun>,
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io(Path::new("tokio runtime"), e))
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<(), Error> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let text = serde_json::to_string_pretty(v).map_err(|e| Error::Msg(e.to_string()))?;
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}

/// The bookinfo manifests moved to namespace `ns` (as the operator's e2e tests do).
fn bookinfo_in(text: &str, ns: &str) -> String {
    text.replace("namespace: bookinfo", &format!("namespace: {ns}"))
        .replace("name: bookinfo\n", &format!("name: {ns}\n"))
        .replace("ns/bookinfo/", &format!("ns/{ns}/"))
}

/// An API server with the mesh (the real istiod and the simulator beside it).
struct Cluster {
    env: TestEnv,
    mesh: Mesh,
}

impl Cluster {
    async fn stop(self) {
        self.mesh.stop().await;
        self.env.stop().await;
    }
}

/// A fresh API server with the mesh, the operator's namespace and the Sail control plane in
/// sidecar mode.
async fn start_env(work_dir: &Path) -> Result<Cluster, Error> {
    let crds = work_dir.join("crds");
    std::fs::create_dir_all(&crds).map_err(|e| Error::io(&crds, e))?;
    let crd = serde_json::to_string(&MeshMigration::crd()).map_err(|e| e.to_string())?;
    let file = crds.join("meshmig.yaml");
    std::fs::write(&file, crd).map_err(|e| Error::io(&file, e))?;
    let env = TestEnv::builder().nodes(2).crd_dir(&crds).start().await?;
    let mesh = env.start_mesh().await?;
    env.apply_yaml(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {OPERATOR_NAMESPACE}}}\n"
    ))
    .await?;
    env.apply_yaml(CONTROL_PLANE).await?;
    Ok(Cluster { env, mesh })
}

/// Deploys bookinfo copies into `namespaces` and waits until every Deployment is available,
/// then adds their Istio configuration.
async fn deploy_bookinfo(env: &TestEnv, namespaces: &[String]) -> Result<(), Error> {
    for ns in namespaces {
        env.apply_yaml(&bookinfo_in(BOOKINFO_APPS, ns)).await?;
    }
    for ns in namespaces {
        let api: Api<Deployment> = env.api_in(ns);
        wait_for(
            format!("Deployments of {ns} available"),
            Duration::from_secs(300),
            async || {
                let list = api.list(&ListParams::default()).await?;
                let waiting = list
                    .items
                    .iter()
                    .filter(|d| d.status.as_ref().and_then(|s| s.available_replicas) < Some(1))
                    .count();
                if list.items.is_empty() || waiting > 0 {
                    return Err(Pending::new(format!("{waiting} not available")));
                }
                Ok(())
            },
        )
        .await?;
    }
    for ns in namespaces {
        env.apply_yaml(&bookinfo_in(BOOKINFO_ISTIO, ns)).await?;
    }
    Ok(())
}

async fn apply_migration(env: &TestEnv, name: &str, namespaces: &[String]) -> Result<(), Error> {
    let obj = json!({
        "apiVersion": "meshmig.io/v1alpha1", "kind": "MeshMigration",
        "metadata": {"name": name},
        "spec": {"namespaces": namespaces, "controlPlane": {"mode": "Sail", "istio": "default"},
                 "checkpoints": {"timeout": "10m"}, "onFailure": "Pause",
                 // Copies of bookinfo call each other's productpage across namespaces, so
                 // the order of sidecar removal opens a reviewed, accepted window.
                 "acceptedFindings": ["enforcement-fail-open"]}
    });
    env.apply_yaml(&obj.to_string()).await?;
    Ok(())
}

/// The operator as a child process, with its health/metrics address.
struct Operator {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    log: PathBuf,
    started: Instant,
}

fn free_port() -> Result<u16, Error> {
    // Bound and released at once: the operator binds it a moment later. A collision would
    // make the operator exit, which start-up reports.
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::io(Path::new("127.0.0.1:0"), e))?;
    let port = l
        .local_addr()
        .map_err(|e| Error::io(Path::new("127.0.0.1:0"), e))?
        .port();
    Ok(port)
}

impl Operator {
    async fn start(binary: &Path, env: &TestEnv, log: PathBuf) -> Result<Operator, Error> {
        let binary = std::fs::canonicalize(binary).map_err(|e| Error::io(binary, e))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let file = std::fs::File::create(&log).map_err(|e| Error::io(&log, e))?;
        let file2 = file.try_clone().map_err(|e| Error::io(&log, e))?;
        let child = Command::new(&binary)
            .args(["--namespace", OPERATOR_NAMESPACE, "--http-addr"])
            .arg(addr.to_string())
            .args(["--instance", "bench", "--lease-seconds", "4"])
            .env("KUBECONFIG", env.kubeconfig())
            .env("RUST_LOG", "info,kube=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(file2))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::io(&binary, e))?;
        let pid = child
            .id()
            .ok_or_else(|| Error::Msg("operator exited at once".into()))?;
        Ok(Operator {
            child,
            pid,
            addr,
            log,
            started: Instant::now(),
        })
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Waits for /readyz (caches synced); returns seconds since start.
    async fn wait_ready(&mut self, timeout: Duration) -> Result<f64, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Error::Msg(format!(
                    "operator exited ({status}):\n{}",
                    self.log_tail()
                )));
            }
            if let Ok((200, _)) = http_get(self.addr, "/readyz").await {
                return Ok(self.started.elapsed().as_secs_f64());
            }
            if Instant::now() > deadline {
                return Err(Error::Msg(format!(
                    "operator not ready after {timeout:?}:\n{}",
                    self.log_tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn metrics(&self) -> Result<String, Error> {
        match http_get(self.addr, "/metrics").await? {
            (200, body) => Ok(body),
            (code, body) => Err(Error::Msg(format!("/metrics: {code}: {body}"))),
        }
    }

    /// SIGTERM (so it releases its lease), then SIGKILL after 10 s.
    async fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// A plain HTTP/1.0 GET (the operator's health server), returning status and body.
async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), Error> {
    let io = |e| Error::io(Path::new(path), e);
    let mut s = tokio::net::TcpStream::connect(addr).await.map_err(io)?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .map_err(io)?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.map_err(io)?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_string()))
}

/// One sample of a Prometheus text exposition.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

pub fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let mut map = BTreeMap::new();
        for kv in labels.split(',').filter(|s| !s.is_empty()) {
            if let Some((k, v)) = kv.split_once('=') {
                map.insert(k.trim().to_string(), v.trim_matches('"').to_string());
            }
        }
        out.push(Sample {
            name: name.to_string(),
            labels: map,
            value,
        });
    }
    out
}

/// `meshmig_api_requests_total` by `verb resource`.
pub fn request_counts(metrics: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for sample in parse_metrics(metrics) {
        if sample.name == "meshmig_api_requests_total" {
            let label = |k: &str| sample.labels.get(k).map(String::as_str).unwrap_or("?");
            let key = format!("{} {}", label("verb"), label("resource"));
            *out.entry(key).or_default() += sample.value as u64;
        }
    }
    out
}

fn metric_value(metrics: &str, wanted: &str) -> f64 {
    parse_metrics(metrics)
        .into_iter()
        .filter(|s| s.name == wanted)
        .map(|s| s.value)
        .sum()
}

/// Counts of `after` minus `before` (zero and negative entries dropped).
pub fn delta(
    after: &BTreeMap<String, u64>,
    before: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v.saturating_sub(before.get(k).copied().unwrap_or(0));
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

// ---------------------------------------------------------------- cluster-rss

/// The scheduler of the benchmark's Pods: none exists.
const UNSCHEDULED: &str = "meshmig-bench-unscheduled";

fn pod_object(ns: &str, i: usize) -> Value {
    // Metadata like an injected sidecar Pod of a Deployment (labels, Istio's annotations);
    // no ownerReferences, which the garbage collector would resolve against absent owners.
    let app = format!("svc-{}", i % 10);
    let version = if i % 20 < 10 { "v1" } else { "v2" };
    let status = r#"{"initContainers":["istio-init"],"containers":["istio-proxy"],"volumes":["workload-socket","credential-socket","workload-certs","istio-envoy","istio-data","istio-podinfo","istio-token","istiod-ca-cert"],"imagePullSecrets":null,"revision":"default"}"#;
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": format!("{app}-{version}-7d4f9c6b8-{i:05}"),
            "namespace": ns,
            "labels": {
                "app": app, "version": version, "pod-template-hash": "7d4f9c6b8",
                "security.istio.io/tlsMode": "istio",
                "service.istio.io/canonical-name": app,
                "service.istio.io/canonical-revision": version,
            },
            "annotations": {
                "kubectl.kubernetes.io/default-container": "app",
                "istio.io/rev": "default",
                "sidecar.istio.io/status": status,
                "prometheus.io/path": "/stats/prometheus",
                "prometheus.io/port": "15020",
                "prometheus.io/scrape": "true",
            },
        },
        "spec": {
            // No scheduler claims the Pod, so it stays Pending and unchanged: a metadata-only
            // watch sees the same objects as for Running Pods (the kubelet does not change
            // metadata), without 20,000 status writes (two minutes here) before measuring.
            "schedulerName": UNSCHEDULED,
            "serviceAccountName": "default",
            "containers": [
                {"name": "app", "image": "registry.example/app:1.0", "ports": [{"containerPort": 8080}]},
                {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.27.0"},
            ],
        },
    })
}

async fn create_pods(env: &TestEnv, args: &RssArgs) -> Result<(), Error> {
    let ns_name = |i: usize| format!("scale-{i:04}");
    let nss: Api<Namespace> = env.api();
    futures::stream::iter(0..args.namespaces)
        .map(|i| {
            let nss = nss.clone();
            async move {
                let ns: Namespace = serde_json::from_value(json!({
                    "metadata": {"name": ns_name(i), "labels": {"team": format!("team-{}", i % 17)}}
                }))
                .map_err(|e| Error::Msg(e.to_string()))?;
                nss.create(&PostParams::default(), &ns).await?;
                Ok::<(), Error>(())
            }
        })
        .buffer_unordered(args.concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    let client = env.client();
    let namespaces = args.namespaces.max(1);
    futures::stream::iter(0..args.pods)
        .map(|i| {
            let ns = ns_name(i % namespaces);
            let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
            async move {
                let pod: Pod = serde_json::from_value(pod_object(&ns, i))
                    .map_err(|e| Error::Msg(e.to_string()))?;
                // The ServiceAccount admission plugin refuses Pods until the controller
                // manager has created the namespace's `default` ServiceAccount, which lags
                // behind namespace creation: retry that refusal for a while.
                let mut attempt = 0u32;
                loop {
                    match api.create(&PostParams::default(), &pod).await {
                        Ok(_) => break,
                        Err(kube::Error::Api(e))
                            if e.code == 403
                                && e.message.contains("serviceaccount")
                                && attempt < 60 =>
                        {
                            attempt += 1;
                            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok::<(), Error>(())
            }
        })
        .buffer_unordered(args.concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Pods left to no scheduler (see [`pod_object`]).
async fn pending_pods(env: &TestEnv) -> Result<usize, Error> {
    let api: Api<Pod> = env.api();
    let mut n = 0;
    let mut lp = ListParams::default()
        .fields(&format!(
            "status.phase=Pending,spec.schedulerName={UNSCHEDULED}"
        ))
        .limit(5000);
    loop {
        let page = api.list_metadata(&lp).await?;
        n += page.items.len();
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => return Ok(n),
        }
    }
}

async fn rss_async(args: &RssArgs) -> Result<Rss, Error> {
    std::fs::create_dir_all(&args.work_dir).map_err(|e| Error::io(&args.work_dir, e))?;
    let cluster = start_env(&args.work_dir).await?;
    let env = &cluster.env;
    // A migration of one bookinfo, so the operator reconciles as it normally does.
    let bookinfo = vec!["bookinfo".to_string()];
    deploy_bookinfo(env, &bookinfo).await?;
    let mut out = Rss {
        namespaces: args.namespaces,
        pods: args.pods,
        settle_s: args.settle_seconds,
        ..Default::default()
    };
    let t = Instant::now();
    create_pods(env, args).await?;
    out.create_s = t.elapsed().as_secs_f64();
    eprintln!(
        "cluster-rss: created {} Pods in {} namespaces in {:.1} s",
        args.pods, args.namespaces, out.create_s
    );
    let pending = pending_pods(env).await?;
    if pending < args.pods {
        return Err(Error::Msg(format!(
            "{pending} of the {} Pods created are Pending unscheduled; something scheduled the rest",
            args.pods
        )));
    }
    apply_migration(env, "bookinfo", &bookinfo).await?;
    for r in 0..args.runs.max(1) {
        out.runs.push(rss_run(args, env, r + 1).await?);
    }
    cluster.stop().await;
    Ok(out)
}

/// One operator process: started, settled, sampled, stopped.
async fn rss_run(args: &RssArgs, env: &TestEnv, run: usize) -> Result<RssRun, Error> {
    let log = args.work_dir.join(format!("operator-rss-{run}.log"));
    let mut op = Operator::start(&args.operator, env, log).await?;
    let ready_s = op.wait_ready(Duration::from_secs(300)).await?;
    tokio::time::sleep(Duration::from_secs(args.settle_seconds)).await;
    let pid = op.pid.to_string();
    let mut rss = Vec::new();
    for s in 0..args.samples.max(1) {
        if s > 0 {
            tokio::time::sleep(Duration::from_secs(args.sample_interval)).await;
        }
        rss.push(proc_status_bytes(&pid, "VmRSS"));
    }
    let hwm = proc_status_bytes(&pid, "VmHWM");
    eprintln!(
        "cluster-rss: run {run}: ready after {ready_s:.1} s, VmRSS {:?} MiB, VmHWM {} MiB",
        rss.iter().map(|b| b / 1048576).collect::<Vec<_>>(),
        hwm / 1048576
    );
    if rss.contains(&0) {
        return Err(Error::Msg(format!(
            "operator {pid} is gone:\n{}",
            op.log_tail()
        )));
    }
    op.stop().await;
    Ok(RssRun { ready_s, rss, hwm })
}

/// Runs `cluster-rss`.
pub fn rss(args: &RssArgs) -> Result<(), Error> {
    let out = runtime()?.block_on(rss_async(args))?;
    write_json(&args.results, &out)?;
    eprintln!("cluster-rss: results in {}", args.results.display());
    Ok(())
}

// ---------------------------------------------------------------- migrate

/// Busy intervals of objects, recorded from watch events.
struct Tracker {
    t0: Instant,
    open: HashMap<String, Opened>,
    done: Vec<Busy>,
}

/// A busy interval that has not ended yet.
struct Opened {
    namespace: String,
    start: f64,
}

impl Tracker {
    fn observe(&mut self, object: String, namespace: String, busy: bool) {
        let now = self.t0.elapsed().as_secs_f64();
        match (busy, self.open.contains_key(&object)) {
            (true, false) => {
                self.open.insert(
                    object,
                    Opened {
                        namespace,
                        start: now,
                    },
                );
            }
            (false, true) => {
                if let Some(Opened { namespace, start }) = self.open.remove(&object) {
                    self.done.push(Busy {
                        object,
                        namespace,
                        start,
                        end: now,
                    });
                }
            }
            _ => {}
        }
    }

    fn finish(&mut self, end: f64) -> Vec<Busy> {
        let mut out = std::mem::take(&mut self.done);
        for (object, Opened { namespace, start }) in self.open.drain() {
            out.push(Busy {
                object,
                namespace,
                start,
                end,
            });
        }
        out.sort_by(|a, b| a.start.total_cmp(&b.start));
        out
    }
}

fn track<K>(
    api: Api<K>,
    kind: &'static str,
    busy: fn(&K) -> bool,
    tracker: Arc<Mutex<Tracker>>,
) -> tokio::task::JoinHandle<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(ev) = events.next().await {
            let (obj, is_busy) = match ev {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                    let b = busy(&o);
                    (o, b)
                }
                Ok(watcher::Event::Delete(o)) => (o, false),
                _ => continue,
            };
            let ns = obj.namespace().unwrap_or_default();
            let key = format!("{kind}/{ns}/{}", obj.name_any());
            if let Ok(mut t) = tracker.lock() {
                t.observe(key, ns, is_busy);
            }
        }
    })
}

fn deployment_busy(d: &Deployment) -> bool {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(s) = d.status.as_ref() else {
        return true;
    };
    s.observed_generation.unwrap_or(0) < d.metadata.generation.unwrap_or(0)
        || s.replicas.unwrap_or(0) != want
        || s.updated_replicas.unwrap_or(0) != want
        || s.available_replicas.unwrap_or(0) != want
}

fn daemonset_busy(d: &DaemonSet) -> bool {
    let Some(s) = d.status.as_ref() else {
        return true;
    };
    s.observed_generation.unwrap_or(0) < d.metadata.generation.unwrap_or(0)
        || s.number_ready != s.desired_number_scheduled
        || s.updated_number_scheduled.unwrap_or(0) != s.desired_number_scheduled
}

fn gateway_busy(g: &DynamicObject) -> bool {
    let programmed = g.data["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Programmed" && c["status"] == "True")
    });
    !programmed
}

fn sail_busy(o: &DynamicObject) -> bool {
    let st = &o.data["status"];
    st["state"] != meshmig_sim::sail::STATE_HEALTHY
        || st["observedGeneration"].as_i64().unwrap_or(0) < o.metadata.generation.unwrap_or(0)
}

/// Length of the union of intervals, clipped to `[from, to]`.
pub fn union_len(intervals: &[(f64, f64)], from: f64, to: f64) -> f64 {
    let mut v: Vec<(f64, f64)> = intervals
        .iter()
        .map(|&(a, b)| (a.max(from), b.min(to)))
        .filter(|(a, b)| b > a)
        .collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut total = 0.0;
    let mut cur: Option<(f64, f64)> = None;
    for (a, b) in v {
        cur = match cur {
            Some((ca, cb)) if a <= cb => Some((ca, cb.max(b))),
            Some((ca, cb)) => {
                total += cb - ca;
                Some((a, b))
            }
            None => Some((a, b)),
        };
    }
    if let Some((a, b)) = cur {
        total += b - a;
    }
    total
}

/// The writes the frozen plan needs: one request per acting action (cluster-level step 2
/// actions once, not per namespace), one snapshot ConfigMap per (namespace, step) that
/// changes or deletes existing objects, the frozen inventory ConfigMaps, and two status
/// writes per step for the whole migration (step started, step passed), all namespaces
/// batched into one write.
pub fn minimum_writes(plan: &meshmig_planner::Plan, frozen_parts: u64) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    let cluster: Vec<&meshmig_planner::plan::Action> = plan.control_plane_actions.iter().collect();
    let changes_existing = |op: &Op| {
        matches!(
            op,
            Op::Patch
                | Op::Label
                | Op::Unlabel
                | Op::UnlabelTemplate
                | Op::Restart
                | Op::Delete
                | Op::RemoveMeshGateway
        )
    };
    for a in &cluster {
        if a.op != Op::Verify {
            *out.entry(format!("{:?}", a.op).to_lowercase()).or_default() += 1;
        }
    }
    if cluster.iter().any(|a| changes_existing(&a.op)) {
        *out.entry("snapshot".into()).or_default() += 1;
    }
    for ns in &plan.namespaces {
        for step in &ns.steps {
            let acting: Vec<_> = step
                .actions
                .iter()
                .filter(|a| a.op != Op::Verify && !cluster.contains(a))
                .collect();
            for a in &acting {
                *out.entry(format!("{:?}", a.op).to_lowercase()).or_default() += 1;
            }
            if acting.iter().any(|a| changes_existing(&a.op)) {
                *out.entry("snapshot".into()).or_default() += 1;
            }
        }
    }
    out.insert("frozen-inventory".into(), frozen_parts);
    // Started and passed, for each step.
    out.insert("status".into(), 2 * Step::ALL.len() as u64);
    out
}

async fn minimum_of(env: &TestEnv, name: &str) -> Result<BTreeMap<String, u64>, Error> {
    let mm = env.api::<MeshMigration>().get(name).await?;
    let cms: Api<ConfigMap> = env.api_in(OPERATOR_NAMESPACE);
    let head_name = meshmig_operator::frozen::config_map_name(name);
    let head = cms.get(&head_name).await?;
    let n = meshmig_operator::frozen::parts_of(&head);
    let mut parts = vec![head];
    for i in 1..n {
        parts.push(cms.get(&format!("{head_name}-p{i}")).await?);
    }
    let inv = meshmig_operator::frozen::decode(&parts).map_err(Error::Msg)?;
    let plan = meshmig_planner::plan(&inv, &mm.spec, name);
    Ok(minimum_writes(&plan, n as u64))
}

/// Slots of `MigrateRun::step_starts`: one per step, in order, then completion.
const STEP_SLOTS: usize = Step::ALL.len() + 1;

/// The slot of `step_starts` a namespace has reached.
fn step_slot(ns: &meshmig_api::NamespaceStatus) -> usize {
    if ns.phase == NamespacePhase::Completed {
        Step::ALL.len()
    } else {
        Step::ALL.iter().position(|s| *s == ns.step).unwrap_or(0)
    }
}

/// A migration's environment, ready: bookinfo copies deployed and the operator settled.
struct MigrationSetup {
    cluster: Cluster,
    namespaces: Vec<String>,
    op: Operator,
    /// The operator's metrics before the migration.
    before: String,
    setup_s: f64,
}

async fn set_up_migration(args: &MigrateArgs, run: usize) -> Result<MigrationSetup, Error> {
    let t_setup = Instant::now();
    let cluster = start_env(&args.work_dir).await?;
    let namespaces: Vec<String> = (1..=args.namespaces)
        .map(|i| format!("bench-{i:02}"))
        .collect();
    deploy_bookinfo(&cluster.env, &namespaces).await?;
    let log = args.work_dir.join(format!("operator-migrate-{run}.log"));
    let mut op = Operator::start(&args.operator, &cluster.env, log).await?;
    op.wait_ready(Duration::from_secs(120)).await?;
    // Let it take the lease and settle, so start-up requests are not counted as migration.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = op.metrics().await?;
    let setup_s = t_setup.elapsed().as_secs_f64();
    eprintln!(
        "migrate: run {run}: {} bookinfo copies ready in {setup_s:.1} s",
        namespaces.len()
    );
    Ok(MigrationSetup {
        cluster,
        namespaces,
        op,
        before,
        setup_s,
    })
}

/// Watches of everything outside the operator that can be busy.
fn start_trackers(
    client: &kube::Client,
    tracker: &Arc<Mutex<Tracker>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let sail = |kind: &str, plural: &str| {
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("sailoperator.io", "v1", kind),
            plural,
        );
        Api::<DynamicObject>::all_with(client.clone(), &ar)
    };
    let gw = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "Gateway"),
        "gateways",
    );
    vec![
        track(
            Api::<Deployment>::all(client.clone()),
            "Deployment",
            deployment_busy,
            tracker.clone(),
        ),
        track(
            Api::<DaemonSet>::all(client.clone()),
            "DaemonSet",
            daemonset_busy,
            tracker.clone(),
        ),
        track(
            Api::<DynamicObject>::all_with(client.clone(), &gw),
            "Gateway",
            gateway_busy,
            tracker.clone(),
        ),
        track(sail("Istio", "istios"), "Istio", sail_busy, tracker.clone()),
        track(
            sail("IstioCNI", "istiocnis"),
            "IstioCNI",
            sail_busy,
            tracker.clone(),
        ),
        track(
            sail("ZTunnel", "ztunnels"),
            "ZTunnel",
            sail_busy,
            tracker.clone(),
        ),
    ]
}

/// The clock of a migration: `t0` started the trackers, the migration was applied
/// `offset` s later; times in the results count from then.
struct Clock {
    t0: Instant,
    offset: f64,
}

impl Clock {
    fn now(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }
}

/// Follows the MeshMigration's status until phase Completed, recording when each namespace
/// entered each step at watch-event precision; returns the clock time it completed.
async fn watch_until_completed(
    args: &MigrateArgs,
    setup: &MigrationSetup,
    clock: &Clock,
    step_starts: &mut BTreeMap<String, Vec<Option<f64>>>,
) -> Result<f64, Error> {
    let mm_api: Api<MeshMigration> = setup.cluster.env.api();
    let mut events = watcher(
        mm_api,
        watcher::Config::default().fields("metadata.name=fleet"),
    )
    .default_backoff()
    .applied_objects()
    .boxed();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout);
    let mut last = String::new();
    loop {
        let ev = match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(Ok(mm))) => mm,
            Ok(Some(Err(_))) => continue,
            Ok(None) => return Err(Error::Msg("MeshMigration watch ended".into())),
            Err(_) => {
                return Err(Error::Msg(format!(
                    "migration of {} namespaces not completed after {} s: {last}\noperator log:\n{}",
                    setup.namespaces.len(),
                    args.timeout,
                    setup.op.log_tail()
                )));
            }
        };
        let now = clock.now();
        let st = ev.status.clone().unwrap_or_default();
        for ns in &st.namespaces {
            record_step_starts(step_starts, ns, now - clock.offset)?;
        }
        last = format!("phase {:?}", st.phase);
        if st.phase == Some(MigrationPhase::Completed) {
            return Ok(now);
        }
    }
}

/// A namespace seen at step k has started every step up to k; a failed one ends the run.
fn record_step_starts(
    step_starts: &mut BTreeMap<String, Vec<Option<f64>>>,
    ns: &meshmig_api::NamespaceStatus,
    at: f64,
) -> Result<(), Error> {
    if let Some(v) = step_starts.get_mut(&ns.name) {
        let i = step_slot(ns);
        for slot in v.iter_mut().take(i + 1) {
            if slot.is_none() {
                *slot = Some(at);
            }
        }
    }
    if ns.phase == NamespacePhase::Failed {
        return Err(Error::Msg(format!(
            "namespace {} failed at step {}: {}",
            ns.name,
            ns.step,
            ns.message.clone().unwrap_or_default()
        )));
    }
    Ok(())
}

/// The busy intervals, on the migration's clock, up to its end.
fn busy_intervals(tracker: &Mutex<Tracker>, clock: &Clock, wall_end: f64) -> Vec<Busy> {
    match tracker.lock() {
        Ok(mut t) => t
            .finish(wall_end)
            .into_iter()
            .map(|b| Busy {
                start: (b.start - clock.offset).max(0.0),
                end: b.end - clock.offset,
                ..b
            })
            .filter(|b| b.end > 0.0)
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// `meshmig_step_duration_seconds` sum and count, by step.
fn step_times(metrics: &str) -> BTreeMap<Step, StepTime> {
    let mut out: BTreeMap<Step, StepTime> = BTreeMap::new();
    for sample in parse_metrics(metrics) {
        let Some(step) = sample
            .labels
            .get("step")
            .and_then(|s| s.parse::<Step>().ok())
        else {
            continue;
        };
        let e = out.entry(step).or_default();
        match sample.name.as_str() {
            "meshmig_step_duration_seconds_sum" => e.sum_s = sample.value,
            "meshmig_step_duration_seconds_count" => e.count = sample.value as u64,
            _ => {}
        }
    }
    out
}

async fn migrate_once(args: &MigrateArgs, run: usize) -> Result<MigrateRun, Error> {
    let setup = set_up_migration(args, run).await?;
    let t0 = Instant::now();
    let tracker = Arc::new(Mutex::new(Tracker {
        t0,
        open: HashMap::new(),
        done: Vec::new(),
    }));
    let tasks = start_trackers(&setup.cluster.env.client(), &tracker);
    // The watches' initial lists land before the migration starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let clock = Clock {
        t0,
        offset: t0.elapsed().as_secs_f64(),
    };
    apply_migration(&setup.cluster.env, "fleet", &setup.namespaces).await?;
    let mut step_starts: BTreeMap<String, Vec<Option<f64>>> = setup
        .namespaces
        .iter()
        .map(|n| (n.clone(), vec![None; STEP_SLOTS]))
        .collect();
    let wall_end = watch_until_completed(args, &setup, &clock, &mut step_starts).await?;
    let wall_s = wall_end - clock.offset;
    let after = setup.op.metrics().await?;
    for t in &tasks {
        t.abort();
    }
    let busy = busy_intervals(&tracker, &clock, wall_end);
    let spans: Vec<(f64, f64)> = busy.iter().map(|b| (b.start, b.end)).collect();
    let external_s = union_len(&spans, 0.0, wall_s);
    let before = &setup.before;
    let startup_requests = request_counts(before);
    let requests = delta(&request_counts(&after), &startup_requests);
    let reconciles = (metric_value(&after, "meshmig_reconciles_total")
        - metric_value(before, "meshmig_reconciles_total"))
    .max(0.0) as u64;
    let minimum = minimum_of(&setup.cluster.env, "fleet").await?;
    let namespaces = setup.namespaces.len();
    eprintln!(
        "migrate: run {run}: {namespaces} namespaces in {wall_s:.1} s (external {external_s:.1} s), {} requests, {reconciles} reconciles",
        requests.values().sum::<u64>()
    );
    setup.op.stop().await;
    setup.cluster.stop().await;
    Ok(MigrateRun {
        namespaces,
        setup_s: setup.setup_s,
        wall_s,
        external_s,
        busy,
        step_starts,
        requests,
        startup_requests,
        reconciles,
        step_seconds: step_times(&after),
        minimum,
    })
}

/// Runs `migrate`.
pub fn migrate(args: &MigrateArgs) -> Result<(), Error> {
    std::fs::create_dir_all(&args.work_dir).map_err(|e| Error::io(&args.work_dir, e))?;
    let rt = runtime()?;
    let mut out = Migrate::default();
    for run in 1..=args.runs.max(1) {
        out.runs.push(rt.block_on(migrate_once(args, run))?);
        // Partial results survive a later failure.
        write_json(&args.results, &out)?;
    }
    eprintln!("migrate: results in {}", args.results.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn union_of_overlapping_intervals() {
        assert_eq!(union_len(&[], 0.0, 10.0), 0.0);
        assert_eq!(
            union_len(&[(1.0, 3.0), (2.0, 4.0), (6.0, 7.0)], 0.0, 10.0),
            4.0
        );
        // Clipped to the window.
        assert_eq!(union_len(&[(-2.0, 1.0), (9.0, 12.0)], 0.0, 10.0), 2.0);
    }

    #[test]
    fn request_counter_is_read_and_subtracted() {
        let text = "# HELP meshmig_api_requests Kubernetes API requests\n\
            meshmig_api_requests_total{verb=\"patch\",resource=\"deployments\"} 12\n\
            meshmig_api_requests_total{verb=\"list\",resource=\"pods\"} 3\n\
            meshmig_reconciles_total 7\n# EOF\n";
        let after = request_counts(text);
        assert_eq!(after["patch deployments"], 12);
        let before = BTreeMap::from([("patch deployments".to_string(), 2)]);
        let d = delta(&after, &before);
        assert_eq!(d["patch deployments"], 10);
        assert_eq!(d["list pods"], 3);
        assert_eq!(metric_value(text, "meshmig_reconciles_total"), 7.0);
    }

    #[test]
    fn step_times_are_keyed_by_step_number_on_the_wire() {
        let text = "meshmig_step_duration_seconds_sum{step=\"3\"} 4.5\n\
            meshmig_step_duration_seconds_count{step=\"3\"} 2\n";
        let times = step_times(text);
        assert_eq!(
            times[&Step::HboneSidecars],
            StepTime {
                sum_s: 4.5,
                count: 2
            }
        );
        let wire = serde_json::to_value(&times).unwrap();
        assert_eq!(wire, json!({"3": [4.5, 2]}));
        let back: BTreeMap<Step, StepTime> = serde_json::from_value(wire).unwrap();
        assert_eq!(back, times);
    }

    #[test]
    fn step_slots_follow_the_steps_then_completion() {
        let mut ns = meshmig_api::NamespaceStatus {
            step: Step::Prerequisites,
            ..Default::default()
        };
        assert_eq!(step_slot(&ns), 0);
        ns.step = Step::SidecarRemoval;
        assert_eq!(step_slot(&ns), STEP_SLOTS - 2);
        ns.phase = NamespacePhase::Completed;
        assert_eq!(step_slot(&ns), STEP_SLOTS - 1);
    }

    #[test]
    fn tracker_closes_intervals() {
        let mut t = Tracker {
            t0: Instant::now(),
            open: HashMap::new(),
            done: Vec::new(),
        };
        t.observe("a".into(), "ns".into(), true);
        t.observe("a".into(), "ns".into(), true);
        t.observe("a".into(), "ns".into(), false);
        t.observe("b".into(), "ns".into(), true);
        let out = t.finish(100.0);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].end, 100.0);
    }

    #[test]
    fn minimum_of_bookinfo_counts_each_acting_action_once() {
        let mut inv = meshmig_planner::Inventory::default();
        for text in [CONTROL_PLANE, BOOKINFO_APPS, BOOKINFO_ISTIO] {
            inv.load_str(text, "bookinfo").unwrap();
        }
        let spec: meshmig_api::MeshMigrationSpec =
            serde_json::from_value(json!({"namespaces": ["bookinfo"]})).unwrap();
        let plan = meshmig_planner::plan(&inv, &spec, "bookinfo");
        let min = minimum_writes(&plan, 1);
        assert_eq!(min["status"], 18);
        assert!(min["restart"] >= 6, "{min:?}");
        assert!(min["snapshot"] >= 3, "{min:?}");
    }
}
