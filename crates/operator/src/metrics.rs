//! Prometheus metrics.

use std::sync::Mutex;
use std::time::Duration;

use meshmig_api::MeshMigrationStatus;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

use crate::error::{Error, Reason};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabel {
    verb: String,
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabel {
    step: String,
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
    requests: Family<RequestLabel, Counter>,
    step_seconds: Family<StepLabel, Histogram>,
    leader: Gauge,
    api_errors: Family<CodeLabel, Counter>,
    by_migration: Mutex<std::collections::HashMap<String, String>>,
}

/// Registers `metric` and returns it (a metric is a handle: the clone registered and the one
/// kept count together).
fn register<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("meshmig");
        let r = &mut registry;
        let m = Self {
            reconciles: register(
                r,
                "reconciles",
                "Reconciles of MeshMigrations",
                Counter::default(),
            ),
            errors: register(
                r,
                "reconcile_errors",
                "Failed reconciles by reason",
                Family::default(),
            ),
            reconcile_seconds: register(
                r,
                "reconcile_duration_seconds",
                "Reconcile duration",
                Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            ),
            phases: register(
                r,
                "migrations",
                "MeshMigrations by phase",
                Family::default(),
            ),
            checks: register(
                r,
                "checkpoint_results",
                "Checkpoint check results",
                Family::default(),
            ),
            requests: register(
                r,
                "api_requests",
                "Kubernetes API requests by verb and resource",
                Family::default(),
            ),
            step_seconds: register(
                r,
                "step_duration_seconds",
                "Duration of completed steps (start to checkpoint pass)",
                Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.5, 2.0, 14))),
            ),
            api_errors: register(
                r,
                "api_errors",
                "Kubernetes API responses with an error status, by code",
                Family::default(),
            ),
            leader: register(
                r,
                "leader",
                "1 when this replica holds the leader lease",
                Gauge::default(),
            ),
            by_migration: Mutex::new(Default::default()),
            registry: Mutex::new(Registry::default()),
        };
        // Every reason exists from the start, so dashboards see zeros rather than gaps.
        for reason in Reason::ALL {
            let _ = m.errors.get_or_create(&ReasonLabel {
                reason: reason.label().into(),
            });
        }
        Self {
            registry: Mutex::new(registry),
            ..m
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

    /// Counts evaluated checks.
    pub fn checks_evaluated(&self, outcomes: &[crate::checks::Outcome]) {
        for o in outcomes {
            self.checks
                .get_or_create(&CheckLabel {
                    check: o.name.clone(),
                    result: format!("{:?}", o.result),
                })
                .inc();
        }
    }

    /// Counts an API request.
    pub fn api_request(&self, verb: &str, resource: &str) {
        self.requests
            .get_or_create(&RequestLabel {
                verb: verb.into(),
                resource: resource.into(),
            })
            .inc();
    }

    /// Counts an API error response.
    pub fn api_error(&self, code: u16) {
        self.api_errors
            .get_or_create(&CodeLabel {
                code: code.to_string(),
            })
            .inc();
    }

    /// Records a completed step's duration.
    pub fn step_completed(&self, step: meshmig_api::Step, seconds: f64) {
        self.step_seconds
            .get_or_create(&StepLabel {
                step: step.to_string(),
            })
            .observe(seconds);
    }

    /// Records leadership.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
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
