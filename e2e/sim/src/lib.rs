//! A test-only simulator of the parts of Istio that are visible through the Kubernetes API.
//!
//! It plays the Sail operator (workloads and `.status.state` for `Istio`, `IstioCNI`,
//! `ZTunnel`), istiod's sidecar injector (a real mutating admission webhook), istio-cni's
//! redirection annotation, the waypoint deployment controller and Gateway status, the
//! `istio.io/WaypointBound` Service condition, HTTPRoute status for Service parents, and the
//! outcome of meshmig's checkpoint probe Pods. Nothing here carries traffic or evaluates
//! policy: it is a stand-in that lets an operator be tested against a real API server.
//!
//! ```no_run
//! # async fn demo(client: kube::Client) -> Result<(), meshmig_sim::Error> {
//! let sim = meshmig_sim::Simulator::start(client, meshmig_sim::SimConfig::default()).await?;
//! // ... create Pods, Gateways, Sail resources ...
//! sim.shutdown().await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

mod cni;
pub mod conditions;
mod controller;
mod error;
pub mod inject;
pub mod mesh;
mod probes;
mod routes;
pub mod sail;
mod services;
mod views;
mod waypoint;
pub mod webhook;
pub mod workload;

use std::net::{IpAddr, Ipv4Addr};
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
pub use views::{Gateway, GatewayClass, HttpRoute};

/// Result type of the simulator.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Field manager of every server-side apply the simulator performs.
pub const FIELD_MANAGER: &str = "meshmig-sim";
/// Value of `app.kubernetes.io/managed-by` on objects the simulator creates.
pub const MANAGED_BY: &str = "meshmig-sim";
/// Namespace the simulator owns (probe outcomes live here).
pub const SIM_NAMESPACE: &str = "meshmig-sim";
/// ConfigMap in [`SIM_NAMESPACE`] whose data maps a probe name to `pass` or `fail`.
pub const PROBES_CONFIGMAP: &str = "meshmig-sim-probes";
/// Name of the MutatingWebhookConfiguration the simulator registers.
pub const WEBHOOK_CONFIGURATION: &str = "meshmig-sim-injector";
/// Istio version used when neither a Sail `Istio` nor an istiod image names one.
pub const DEFAULT_ISTIO_VERSION: &str = "1.27.0";

/// A real istiod that runs beside the simulator (a process of the test environment). It
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

/// Settings of a simulator instance.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Address the injection webhook listens on; the API server must be able to reach it.
    pub webhook_addr: IpAddr,
    /// Istio version for images when nothing in the cluster names one.
    pub default_version: String,
    /// Period of the safety-net resync of every reconciler (they are event-driven).
    pub resync: Duration,
    /// The real istiod, when one runs: then the simulator plays only Sail, istio-cni,
    /// ztunnel and the data plane (probes).
    pub istiod: Option<Arc<dyn Istiod>>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            webhook_addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            default_version: DEFAULT_ISTIO_VERSION.to_string(),
            resync: Duration::from_secs(300),
            istiod: None,
        }
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
    /// Starts every simulated component against `client`'s cluster.
    ///
    /// When this returns, the injection webhook is registered *and* the API server has been
    /// seen calling it, so a Pod created afterwards is injected; the reconcilers are running.
    pub async fn start(client: Client, config: SimConfig) -> Result<SimHandle> {
        let token = CancellationToken::new();
        let real_istiod = config.istiod.is_some();
        let ctx = Arc::new(Ctx {
            client: client.clone(),
            config,
        });
        ensure_namespace(&client, SIM_NAMESPACE).await?;
        if real_istiod {
            return Ok(Self::beside_istiod(ctx, client, token));
        }
        waypoint::ensure_gateway_class(&client).await?;

        let server = webhook::WebhookServer::start(ctx.clone(), token.child_token()).await?;
        webhook::register(&client, &server.url(), server.ca_pem()).await?;
        if let Err(e) = webhook::wait_until_called(&client, Duration::from_secs(60)).await {
            // Leaving a failurePolicy=Fail webhook behind would block every Pod creation.
            if let Err(cleanup) = webhook::unregister(&client).await {
                warn!(error = %cleanup, "could not remove the injection webhook after a failed start");
            }
            token.cancel();
            return Err(e);
        }

        let mut tasks = vec![server.into_task()];
        tasks.push(tokio::spawn(sail::run::<meshmig_api::sail::Istio>(
            ctx.clone(),
            token.clone(),
        )));
        tasks.push(tokio::spawn(sail::run::<meshmig_api::sail::IstioCni>(
            ctx.clone(),
            token.clone(),
        )));
        tasks.push(tokio::spawn(sail::run::<meshmig_api::sail::ZTunnel>(
            ctx.clone(),
            token.clone(),
        )));
        tasks.push(tokio::spawn(cni::run(ctx.clone(), token.clone())));
        tasks.push(tokio::spawn(waypoint::run_gateway_classes(
            ctx.clone(),
            token.clone(),
        )));
        tasks.push(tokio::spawn(waypoint::run_gateways(
            ctx.clone(),
            token.clone(),
        )));
        tasks.push(tokio::spawn(services::run(ctx.clone(), token.clone())));
        tasks.push(tokio::spawn(routes::run(ctx.clone(), token.clone())));
        tasks.push(tokio::spawn(probes::run(ctx.clone(), token.clone())));
        info!("mesh simulator started");
        Ok(SimHandle {
            client,
            token,
            tasks,
            stopped: false,
        })
    }
}

impl Simulator {
    /// Beside a real istiod: Sail (driving istiod), istio-cni and the probes only.
    fn beside_istiod(ctx: Arc<Ctx>, client: Client, token: CancellationToken) -> SimHandle {
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
            client,
            token,
            tasks,
            stopped: false,
        }
    }
}

/// A running simulator. [`SimHandle::shutdown`] stops it cleanly and removes its webhook;
/// dropping the handle only stops its tasks (the webhook registration stays behind, which is
/// harmless when the whole test cluster goes away with it).
pub struct SimHandle {
    client: Client,
    token: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    stopped: bool,
}

impl SimHandle {
    /// Stops every component, waits for them (bounded), and removes the webhook registration
    /// so Pods can be created without the simulator.
    pub async fn shutdown(mut self) -> Result<()> {
        self.stopped = true;
        // Unregister first: once the server stops, a registered failurePolicy=Fail webhook
        // would refuse every Pod.
        let unregistered = webhook::unregister(&self.client).await;
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
        unregistered
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
