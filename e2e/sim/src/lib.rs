//! A test-only stand-in for the parts of Istio that cannot run in the test environment.
//!
//! The environment (`e2e/testenv`) is a real API server, controller-manager and scheduler
//! with fake nodes: no container runtime, no network. The real istiod runs beside it as a
//! process (`meshmig-e2e-harness`) and does everything istiod does through the API: sidecar
//! injection, waypoint Deployments and Services, Gateway, Service (`istio.io/WaypointBound`),
//! HTTPRoute and policy status, validation. What is left needs Pods that run or packets that
//! flow, so this crate plays it:
//!
//! - **Sail's operator**: `Istio`, `IstioCNI` and `ZTunnel` get their workloads and
//!   `.status.state`; a profile switch to or from ambient restarts the real istiod, as Sail
//!   re-renders istiod ([`Istiod`]).
//! - **istio-cni and ztunnel**: ambient Pods get `ambient.istio.io/redirection: enabled` once
//!   the ztunnel DaemonSet is ready (its readiness comes from the fake nodes).
//! - **The data plane**: meshmig's checkpoint probe Pods end as their request would, judged
//!   by Istio's own RBAC builder and ztunnel conversion along the path the request takes.
//!
//! ```no_run
//! # async fn demo(client: kube::Client, istiod: std::sync::Arc<dyn meshmig_sim::Istiod>)
//! # -> Result<(), meshmig_sim::Error> {
//! let sim = meshmig_sim::Simulator::start(client, meshmig_sim::SimConfig::new(istiod));
//! // ... create Pods, Sail resources, probe Pods ...
//! sim.shutdown().await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

mod cni;
mod conditions;
mod controller;
mod error;
mod probes;
pub mod sail;
mod views;
pub mod workload;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use error::Error;
pub use probes::{IstioCode, LiveIstioCode};
pub use views::Gateway;

/// Result type of the simulator.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Field manager of every server-side apply the simulator performs.
pub const FIELD_MANAGER: &str = "meshmig-sim";
/// Value of `app.kubernetes.io/managed-by` on objects the simulator creates.
pub const MANAGED_BY: &str = "meshmig-sim";

/// The real istiod that runs beside the simulator (a process of the test environment). It
/// injects sidecars, runs waypoints and writes every status istiod writes, so the simulator
/// does none of that; the simulated Sail operator restarts it when the `Istio` profile
/// switches to or from ambient, as Sail re-renders istiod.
pub trait Istiod: Send + Sync + std::fmt::Debug {
    /// Restarts it with the ambient profile on or off; done once it is ready again.
    fn restart(&self, ambient: bool) -> BoxFuture<'_, std::result::Result<(), String>>;
    /// Whether it runs the ambient profile.
    fn ambient(&self) -> bool;
    /// Its version (the tag of the images it injects).
    fn version(&self) -> String;
}

/// Settings of a simulator instance: [`SimConfig::new`] with the istiod it plays Sail for.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The real istiod; its version is also the image tag of Sail workloads whose resource
    /// names no `spec.version`.
    pub istiod: Arc<dyn Istiod>,
    /// Istio's own code that judges probe requests (default: the `meshmig-istio` build of
    /// `$MESHMIG_ISTIO_HOME`, else of `e2e/istio/build.sh`).
    pub istio_code: Arc<dyn IstioCode>,
    /// Period of the safety-net resync of every reconciler (they are event-driven).
    pub resync: Duration,
}

impl SimConfig {
    /// The simulator beside `istiod`, judging probes with [`LiveIstioCode`].
    pub fn new(istiod: Arc<dyn Istiod>) -> Self {
        Self {
            istiod,
            istio_code: Arc::new(LiveIstioCode),
            resync: Duration::from_secs(300),
        }
    }

    /// Judges probe requests with `code` instead.
    pub fn with_istio_code(mut self, code: Arc<dyn IstioCode>) -> Self {
        self.istio_code = code;
        self
    }
}

/// Shared state of the reconcilers.
pub(crate) struct Ctx {
    pub client: Client,
    pub config: SimConfig,
}

/// The simulator's entry point.
pub struct Simulator;

impl Simulator {
    /// Starts Sail, istio-cni and the probe judge against `client`'s cluster, as tasks of the
    /// current Tokio runtime. They are watch-driven and catch up with whatever exists, so
    /// there is nothing to wait for.
    pub fn start(client: Client, config: SimConfig) -> SimHandle {
        let token = CancellationToken::new();
        let ctx = Arc::new(Ctx { client, config });
        let tasks = vec![
            tokio::spawn(sail::run::<meshmig_api::sail::Istio>(
                ctx.clone(),
                token.clone(),
            )),
            tokio::spawn(sail::run::<meshmig_api::sail::IstioCni>(
                ctx.clone(),
                token.clone(),
            )),
            tokio::spawn(sail::run::<meshmig_api::sail::ZTunnel>(
                ctx.clone(),
                token.clone(),
            )),
            tokio::spawn(cni::run(ctx.clone(), token.clone())),
            tokio::spawn(probes::run(ctx, token.clone())),
        ];
        info!("mesh simulator started beside the real istiod");
        SimHandle {
            token,
            tasks,
            stopped: false,
        }
    }
}

/// A running simulator. [`SimHandle::shutdown`] stops it and waits for its tasks; dropping
/// the handle stops them without waiting.
pub struct SimHandle {
    token: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    stopped: bool,
}

impl SimHandle {
    /// Stops every component and waits for them (bounded: a reconcile stuck on an API call
    /// must not hold up a test's teardown).
    pub async fn shutdown(mut self) {
        self.stopped = true;
        self.token.cancel();
        let tasks = std::mem::take(&mut self.tasks);
        let all = futures::future::join_all(tasks);
        if tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .is_err()
        {
            warn!("simulator tasks did not stop within 10s");
        }
        info!("mesh simulator stopped");
    }

    /// A token that is cancelled when the simulator stops.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.token.clone()
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if !self.stopped {
            self.token.cancel();
            for task in &self.tasks {
                task.abort();
            }
        }
    }
}

/// Creates `name` if it does not exist (server-side apply, nothing else owned).
pub(crate) async fn ensure_namespace(client: &Client, name: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns =
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    api.patch(name, &PatchParams::apply(FIELD_MANAGER), &Patch::Apply(&ns))
        .await
        .map_err(|e| Error::kube("apply", format!("Namespace {name}"), e))?;
    Ok(())
}
