//! Wiring: discovery, stores, the controller, and the health/metrics server.

use std::collections::HashMap;
use std::net::SocketAddr;
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
use tracing::{info, warn};

use crate::act::Actor;
use crate::metrics::Metrics;
use crate::observe::{Installed, Stores};
use crate::reconcile::{self, Ctx};

/// Operator settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The operator's namespace.
    pub namespace: String,
    /// Health and metrics listen address.
    pub http_addr: SocketAddr,
    /// Name reported on Events.
    pub instance: String,
}

/// Names of the installed CRDs.
pub async fn discover(client: &Client) -> Installed {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    match api.list_metadata(&ListParams::default()).await {
        Ok(list) => Installed {
            crds: list
                .items
                .into_iter()
                .filter_map(|c| c.metadata.name)
                .collect(),
        },
        Err(e) => {
            warn!(error = %e, "cannot list CRDs; Istio, Gateway API and Sail kinds are not watched");
            Installed::default()
        }
    }
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

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow_free::Result {
    let installed = discover(&client).await;
    let (stores, trigger) = Stores::start(&client, &installed);
    let metrics = Arc::new(Metrics::default());
    {
        let s = stores.clone();
        tokio::spawn(async move {
            s.wait_ready().await;
            info!("caches synced");
        });
    }
    let health = Health {
        stores: stores.clone(),
        metrics: metrics.clone(),
    };
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .with_state(health);
    let listener = tokio::net::TcpListener::bind(settings.http_addr)
        .await
        .map_err(|e| format!("bind {}: {e}", settings.http_addr))?;
    info!(addr = %settings.http_addr, "serving /healthz, /readyz, /metrics");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!(error = %e, "health server stopped");
        }
    });

    let api: Api<MeshMigration> = Api::all(client.clone());
    let controller = Controller::new(api, watcher::Config::default()).with_config(
        ControllerConfig::default()
            .debounce(Duration::from_millis(250))
            .concurrency(4),
    );
    let migrations = controller.store();
    let mm_store = migrations.clone();
    let wake = trigger.flat_map(move |()| {
        let refs: Vec<ObjectRef<MeshMigration>> = mm_store
            .state()
            .iter()
            .map(|m| ObjectRef::from_obj(&**m))
            .collect();
        futures::stream::iter(refs)
    });
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "meshmig-operator".into(),
            instance: Some(settings.instance.clone()),
        },
    );
    let ctx = Arc::new(Ctx {
        actor: Actor {
            client: client.clone(),
            operator_namespace: settings.namespace.clone(),
        },
        stores,
        migrations,
        recorder,
        metrics,
        frozen: Mutex::new(HashMap::new()),
        errors: Mutex::new(HashMap::new()),
    });
    // The controller wants a Sync shutdown future; relay the signal through a channel.
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        shutdown.await;
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
    info!("controller stopped");
    Ok(())
}

/// A tiny result alias with a string error, to keep `main` free of extra dependencies.
pub mod anyhow_free {
    /// Result with a message.
    pub type Result = std::result::Result<(), String>;
}
