//! Plumbing shared by the reconcilers.

use std::fmt::{Debug, Display};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{self, Action};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::{debug, warn};

use crate::{Ctx, Error, FIELD_MANAGER, Result};

/// How long a failed reconcile waits before it is retried.
const RETRY: Duration = Duration::from_secs(2);

/// Settings of every reconciler. Each running reconcile may hold an API connection of its
/// own (HTTP/1.1), and idle ones stay pooled for a while: unbounded, a burst of 20,000 Pods
/// exhausted the process's file descriptors (the benchmarks run the simulator in process).
pub(crate) fn config() -> controller::Config {
    controller::Config::default().concurrency(16)
}

/// `Kind namespace/name` (or `Kind name` when cluster-scoped), for messages.
pub(crate) fn describe<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    match obj.meta().namespace.as_deref() {
        Some(ns) => format!("{} {ns}/{}", K::kind(&()), obj.name_any()),
        None => format!("{} {}", K::kind(&()), obj.name_any()),
    }
}

/// Logs the failure; the object is retried shortly (every reconciler is idempotent).
pub(crate) fn error_policy<K: Resource<DynamicType = ()>>(
    obj: Arc<K>,
    err: &Error,
    _: Arc<Ctx>,
) -> Action {
    warn!(object = %describe(obj.as_ref()), error = %err, "reconcile failed; retrying");
    Action::requeue(RETRY)
}

/// Drives a controller's output stream to completion, logging what is worth logging.
pub(crate) async fn drain<K, S>(name: &'static str, stream: S)
where
    K: Resource,
    K::DynamicType: Debug,
    S: Stream<Item = Result<(ObjectRef<K>, Action), controller::Error<Error, watcher::Error>>>,
{
    stream
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => debug!(controller = name, object = %obj, "reconciled"),
                // Already logged by error_policy.
                Err(controller::Error::ReconcilerFailed(..)) => {}
                // The object was deleted between the event and the reconcile.
                Err(controller::Error::ObjectNotFound(obj)) => {
                    debug!(controller = name, object = %obj, "gone")
                }
                Err(e) => warn!(controller = name, error = %e, "controller error"),
            }
        })
        .await;
    debug!(controller = name, "stopped");
}

/// Server-side applies `obj` (a full manifest) as the simulator, taking over conflicting
/// fields: the simulator owns what it generates.
pub(crate) async fn apply<K>(api: &Api<K>, name: &str, obj: &Value, what: impl Display) -> Result<K>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map_err(|e| Error::kube("apply", what.to_string(), e))
}

/// Merge-patches the status subresource.
pub(crate) async fn patch_status<K>(
    api: &Api<K>,
    name: &str,
    status: Value,
    what: impl Display,
) -> Result<K>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(&serde_json::json!({ "status": status })),
    )
    .await
    .map_err(|e| Error::kube("patch status of", what.to_string(), e))
}

/// The controller owner reference of a typed object (with `blockOwnerDeletion`, so garbage
/// collection behaves as with a real operator).
pub(crate) fn owner_ref<K: Resource<DynamicType = ()>>(obj: &K) -> Result<Value> {
    let owner = obj
        .controller_owner_ref(&())
        .ok_or_else(|| Error::invalid(describe(obj), "has no uid (not read from the API?)"))?;
    serde_json::to_value(owner).map_err(|e| Error::json(describe(obj), e))
}
