//! Prometheus metrics.

use std::sync::Mutex;
use std::time::Duration;

use meshmig_api::MeshMigrationStatus;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::Error;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabel {
    check: String,
    result: String,
}

/// The operator's metrics.
pub struct Metrics {
    /// Registry (served at /metrics).
    pub registry: Mutex<Registry>,
    reconciles: Counter,
    errors: Family<ReasonLabel, Counter>,
    reconcile_seconds: Histogram,
    phases: Family<PhaseLabel, Gauge>,
    checks: Family<CheckLabel, Counter>,
    by_migration: Mutex<std::collections::HashMap<String, String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("meshmig");
        let reconciles = Counter::default();
        let errors = Family::<ReasonLabel, Counter>::default();
        let reconcile_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let phases = Family::<PhaseLabel, Gauge>::default();
        let checks = Family::<CheckLabel, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles of MeshMigrations",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciles by reason",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration",
            reconcile_seconds.clone(),
        );
        registry.register("migrations", "MeshMigrations by phase", phases.clone());
        registry.register(
            "checkpoint_results",
            "Checkpoint check results",
            checks.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            reconciles,
            errors,
            reconcile_seconds,
            phases,
            checks,
            by_migration: Mutex::new(Default::default()),
        }
    }
}

impl Metrics {
    /// Records a reconcile.
    pub fn reconciled<T>(&self, result: &Result<T, Error>, took: Duration) {
        self.reconciles.inc();
        self.reconcile_seconds.observe(took.as_secs_f64());
        if let Err(e) = result {
            self.errors
                .get_or_create(&ReasonLabel {
                    reason: e.reason().into(),
                })
                .inc();
        }
    }

    /// Records a migration's phase and its checks.
    pub fn observe_status(&self, migration: &str, status: &MeshMigrationStatus) {
        let phase = status
            .phase
            .map(|p| format!("{p:?}"))
            .unwrap_or_else(|| "Pending".into());
        if let Ok(mut by) = self.by_migration.lock() {
            if let Some(old) = by.insert(migration.to_string(), phase.clone()) {
                self.phases.get_or_create(&PhaseLabel { phase: old }).dec();
            }
            self.phases.get_or_create(&PhaseLabel { phase }).inc();
        }
        for ns in &status.namespaces {
            for c in &ns.checks {
                self.checks
                    .get_or_create(&CheckLabel {
                        check: c.name.clone(),
                        result: format!("{:?}", c.result),
                    })
                    .inc();
            }
        }
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Ok(r) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        }
        out
    }
}
