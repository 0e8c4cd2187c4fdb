//! Wiring: discovery, stores, the controller, and the health/metrics server.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use meshmig_api::MeshMigration;
use thiserror::Error;
use tracing::{info, warn};

use crate::act::Actor;
use crate::metrics::Metrics;
use crate::observe::{Installed, Stores, Trigger};
use crate::reconcile::{self, Ctx};

/// Operator settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The operator's namespace.
    pub namespace: String,
    /// Health and metrics listen address.
    pub http_addr: SocketAddr,
    /// Name reported on Events and used as the lease holder identity.
    pub instance: String,
    /// Hold a Lease so only one replica reconciles.
    pub leader_election: bool,
    /// Lease duration; a killed leader is replaced within it.
    pub lease_seconds: u64,
}

/// A held lease: the leader flag and the lease manager's task.
struct Lease {
    leader: tokio::sync::watch::Receiver<bool>,
    task: tokio::task::JoinHandle<
        Result<kube_lease_manager::LeaseManager, kube_lease_manager::LeaseManagerError>,
    >,
}

impl Lease {
    /// Closing the channel makes the lease manager release the lease, so a standby takes over
    /// at once instead of after the lease expires.
    async fn release(self) {
        drop(self.leader);
        let _ = self.task.await;
    }
}

/// Why the operator could not start or stopped.
#[derive(Debug, Error)]
pub enum RunError {
    /// The leader-election manager could not be set up.
    #[error("leader election: cannot use Lease {namespace}/{LEASE_NAME}: {source}")]
    Lease {
        namespace: String,
        #[source]
        source: kube_lease_manager::LeaseManagerError,
    },
    /// The operator may not list CRDs.
    #[error(
        "cannot list customresourcedefinitions ({0}): the operator's ClusterRole must grant list on apiextensions.k8s.io/customresourcedefinitions"
    )]
    DiscoveryForbidden(String),
    /// CRDs could not be listed, after retries.
    #[error("cannot list customresourcedefinitions after {attempts} attempts: {source}")]
    Discovery {
        attempts: u32,
        #[source]
        source: kube::Error,
    },
    /// The health and metrics server cannot listen.
    #[error("bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The lease manager stopped while this replica waited for the lease.
    #[error("leader election stopped")]
    LeaderElectionStopped,
    /// Another replica took the lease: this one restarts with fresh state.
    #[error("lost the leader lease")]
    LostLease,
}

/// Name of the leader-election Lease in the operator's namespace.
pub const LEASE_NAME: &str = "meshmig-operator";

/// The leader-election manager of one replica.
///
/// Each replica applies the Lease under its own field manager. Under a shared one, two
/// replicas that find the Lease free at the same moment both apply `holderIdentity` without a
/// conflict (a manager may overwrite its own fields), and both believe they lead until their
/// next sync: two controllers acting on the same MeshMigration. With one manager per
/// identity the second apply is refused with a conflict and that replica stays standby.
pub async fn lease_manager(
    client: Client,
    namespace: &str,
    identity: &str,
    lease_seconds: u64,
) -> Result<kube_lease_manager::LeaseManager, RunError> {
    let duration = lease_seconds.max(2);
    kube_lease_manager::LeaseManagerBuilder::new(client, LEASE_NAME)
        .with_namespace(namespace)
        .with_identity(identity)
        .with_duration(duration)
        // Renew at half-life: a holder slowed down by a busy node (or API server) keeps
        // the lease through one late renewal instead of losing it and restarting.
        .with_grace((duration / 2).max(1))
        .with_field_manager(lease_field_manager(identity))
        .build()
        .await
        .map_err(|source| RunError::Lease {
            namespace: namespace.to_string(),
            source,
        })
}

/// The field manager a replica writes the Lease with: ours, qualified by the identity, within
/// the API server's 128 characters (a Pod name alone can be 253; a longer one is shortened
/// with a hash of the whole, so it stays distinct from the other replicas').
pub fn lease_field_manager(identity: &str) -> String {
    meshmig_planner::object::bounded_name(
        &[meshmig_api::names::FIELD_MANAGER, "lease", identity],
        128,
    )
}

/// Names of the installed CRDs.
pub async fn discover(client: &Client) -> Result<Installed, RunError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut attempt = 0u32;
    loop {
        match api.list_metadata(&ListParams::default()).await {
            Ok(list) => {
                return Ok(Installed {
                    crds: list
                        .items
                        .into_iter()
                        .filter_map(|c| c.metadata.name)
                        .collect(),
                });
            }
            // Without permission, retrying cannot help: say which grant is missing.
            Err(kube::Error::Api(s)) if s.code == 401 || s.code == 403 => {
                return Err(RunError::DiscoveryForbidden(s.message));
            }
            // Starting without the Istio, Gateway API and Sail watches would leave the
            // operator blind to them for its whole life, so a transient failure is retried
            // and, if it persists, the process exits for its Deployment to restart it.
            Err(e) if attempt < DISCOVERY_ATTEMPTS => {
                let wait = discovery_backoff(attempt);
                warn!(error = %e, attempt = attempt + 1, retry_in = ?wait, "cannot list CRDs; retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(source) => {
                return Err(RunError::Discovery {
                    attempts: attempt + 1,
                    source,
                });
            }
        }
    }
}

const DISCOVERY_ATTEMPTS: u32 = 10;

/// 0.5 s doubling to at most 30 s: about two and a half minutes over all attempts.
fn discovery_backoff(attempt: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1u64 << attempt.min(6)))
        .min(Duration::from_secs(30))
}

#[derive(Clone)]
struct Health {
    stores: Stores,
    metrics: Arc<Metrics>,
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(h): State<Health>) -> (StatusCode, &'static str) {
    if h.stores.ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
    }
}

async fn metrics_handler(
    State(h): State<Health>,
) -> ([(axum::http::header::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        h.metrics.encode(),
    )
}

/// Runs the operator until `shutdown` resolves: caches and the health server in every
/// replica, the controller only in the one holding the lease. A replica that loses the lease
/// returns an error, so it restarts with fresh state instead of acting on a stale view.
pub async fn run(
    client: Client,
    metrics: Arc<Metrics>,
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let installed = discover(&client).await?;
    let (stores, trigger) = Stores::start(&client, &installed);
    {
        let s = stores.clone();
        tokio::spawn(async move {
            s.wait_ready().await;
            info!("caches synced");
        });
    }
    serve_health(settings.http_addr, stores.clone(), metrics.clone()).await?;
    let wake_rx = relay_changes(trigger);
    let stop_rx = relay_shutdown(shutdown);
    let lease = if settings.leader_election {
        match acquire_lease(&client, &settings, stop_rx.clone()).await? {
            Some(lease) => Some(lease),
            // Shut down while waiting for the lease.
            None => return Ok(()),
        }
    } else {
        None
    };
    metrics.set_leader(true);
    let lost = Arc::new(AtomicBool::new(false));
    let stopped = until_stopped(
        lease.as_ref().map(|l| l.leader.clone()),
        stop_rx,
        lost.clone(),
    );
    let controller = controller(&client);
    let ctx = Arc::new(Ctx {
        actor: Actor {
            client: client.clone(),
            operator_namespace: settings.namespace.clone(),
        },
        stores,
        migrations: controller.store(),
        recorder: recorder(&client, &settings),
        metrics: metrics.clone(),
        frozen: Mutex::new(HashMap::new()),
        errors: Mutex::new(HashMap::new()),
    });
    run_controller(controller, ctx, wake_rx, stopped).await;
    info!("controller stopped");
    metrics.set_leader(false);
    if let Some(lease) = lease {
        lease.release().await;
    }
    if lost.load(AtomicOrdering::SeqCst) {
        return Err(RunError::LostLease);
    }
    Ok(())
}

/// Serves /healthz, /readyz and /metrics in the background.
async fn serve_health(
    addr: SocketAddr,
    stores: Stores,
    metrics: Arc<Metrics>,
) -> Result<(), RunError> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .with_state(Health { stores, metrics });
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Bind { addr, source })?;
    info!(addr = %addr, "serving /healthz, /readyz, /metrics");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!(error = %e, "health server stopped");
        }
    });
    Ok(())
}

/// Keeps the caches fed in every replica (a standby takes over with warm caches); the
/// controller, when running, wakes on the coalesced notifications.
fn relay_changes(trigger: Trigger) -> tokio::sync::mpsc::Receiver<()> {
    let (wake_tx, wake_rx) = tokio::sync::mpsc::channel::<()>(1);
    tokio::spawn(async move {
        let mut trigger = trigger;
        while trigger.next().await.is_some() {
            let _ = wake_tx.try_send(());
        }
    });
    wake_rx
}

/// A shutdown signal, observable from several places.
fn relay_shutdown(
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::sync::watch::Receiver<bool> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    stop_rx
}

/// Waits for the leader lease; `None` when shut down first.
async fn acquire_lease(
    client: &Client,
    settings: &Settings,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Option<Lease>, RunError> {
    let identity = format!("{}-{}", settings.instance, std::process::id());
    let manager = lease_manager(
        client.clone(),
        &settings.namespace,
        &identity,
        settings.lease_seconds,
    )
    .await?;
    let (mut leader, task) = manager.watch().await;
    info!(identity = %identity, "waiting for the leader lease");
    while !*leader.borrow() {
        tokio::select! {
            r = leader.changed() => {
                if r.is_err() {
                    return Err(RunError::LeaderElectionStopped);
                }
            }
            _ = stop.changed() => {
                drop(leader);
                let _ = task.await;
                return Ok(None);
            }
        }
    }
    info!(identity = %identity, "acquired the leader lease");
    Ok(Some(Lease { leader, task }))
}

/// Resolves on shutdown or, under leader election, when the lease is lost (setting `lost`).
async fn until_stopped(
    mut leader: Option<tokio::sync::watch::Receiver<bool>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    lost: Arc<AtomicBool>,
) {
    match leader.as_mut() {
        Some(rx) => loop {
            tokio::select! {
                r = rx.changed() => {
                    if r.is_err() || !*rx.borrow() {
                        lost.store(true, AtomicOrdering::SeqCst);
                        warn!("lost the leader lease; stopping");
                        break;
                    }
                }
                _ = stop.changed() => break,
            }
        },
        None => {
            let _ = stop.changed().await;
        }
    }
}

fn recorder(client: &Client, settings: &Settings) -> Recorder {
    Recorder::new(
        client.clone(),
        Reporter {
            controller: "meshmig-operator".into(),
            instance: Some(settings.instance.clone()),
        },
    )
}

fn controller(client: &Client) -> Controller<MeshMigration> {
    let api: Api<MeshMigration> = Api::all(client.clone());
    Controller::new(api, watcher::Config::default()).with_config(
        ControllerConfig::default()
            .debounce(Duration::from_millis(250))
            .concurrency(4),
    )
}

/// Runs the controller until `stopped` resolves. Besides MeshMigration events, every
/// change in the watched stores wakes a reconcile of every MeshMigration.
async fn run_controller(
    controller: Controller<MeshMigration>,
    ctx: Arc<Ctx>,
    wake_rx: tokio::sync::mpsc::Receiver<()>,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let mm_store = controller.store();
    let wake_stream =
        futures::stream::unfold(
            wake_rx,
            |mut rx| async move { rx.recv().await.map(|v| (v, rx)) },
        );
    let wake = wake_stream.flat_map(move |()| {
        let refs: Vec<ObjectRef<MeshMigration>> = mm_store
            .state()
            .iter()
            .map(|m| ObjectRef::from_obj(&**m))
            .collect();
        futures::stream::iter(refs)
    });
    // The controller wants a Sync shutdown future; relay through a channel.
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        stopped.await;
        let _ = tx.send(());
    });
    controller
        .reconcile_on(wake)
        .graceful_shutdown_on(async move {
            let _ = rx.await;
        })
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_backs_off_to_a_cap() {
        assert_eq!(discovery_backoff(0), Duration::from_millis(500));
        assert_eq!(discovery_backoff(1), Duration::from_secs(1));
        assert_eq!(discovery_backoff(5), Duration::from_secs(16));
        assert_eq!(discovery_backoff(6), Duration::from_secs(30));
        assert_eq!(discovery_backoff(40), Duration::from_secs(30));
        let total: Duration = (0..DISCOVERY_ATTEMPTS).map(discovery_backoff).sum();
        assert!(
            total > Duration::from_secs(60) && total < Duration::from_secs(300),
            "{total:?}"
        );
    }

    #[test]
    fn each_replica_writes_the_lease_under_its_own_bounded_field_manager() {
        let a = lease_field_manager("meshmig-operator-7d9f-abcde-1");
        let b = lease_field_manager("meshmig-operator-7d9f-fghij-1");
        assert_eq!(a, "meshmig-lease-meshmig-operator-7d9f-abcde-1");
        assert_ne!(a, b);
        // Pod names may be 253 characters; two that differ only at the end stay distinct.
        let long_a = format!("{}-1", "x".repeat(250));
        let long_b = format!("{}-2", "x".repeat(250));
        let (la, lb) = (lease_field_manager(&long_a), lease_field_manager(&long_b));
        assert!(la.len() <= 128 && lb.len() <= 128, "{la} {lb}");
        assert_ne!(la, lb);
        assert!(la.starts_with("meshmig-lease-xxx"), "{la}");
        let multibyte = "é".repeat(100);
        assert!(lease_field_manager(&multibyte).len() <= 128);
    }
}
