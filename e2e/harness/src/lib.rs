//! Test harness for meshmig: a real Kubernetes control plane (`e2e/testenv`: etcd,
//! kube-apiserver, kube-controller-manager, kube-scheduler and a fake node agent) per test,
//! with the Istio, Gateway API and Sail CRDs installed, and the mesh: the real istiod
//! (`pilot-discovery` from `e2e/istio/build.sh`, a child process) with, beside it, the
//! simulator ([`meshmig_sim`]) for what cannot run without a container runtime
//! ([`TestEnv::start_mesh`]), or istiod alone ([`TestEnv::start_istiod`]).
//!
//! ```no_run
//! use std::time::Duration;
//! use meshmig_e2e_harness::{Pending, TestEnv, wait_for};
//! use k8s_openapi::api::core::v1::Namespace;
//!
//! # async fn demo() -> Result<(), meshmig_e2e_harness::Error> {
//! let env = TestEnv::builder().nodes(2).start().await?;
//! let mesh = env.start_mesh().await?;
//! env.apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n").await?;
//! let namespaces = env.api::<Namespace>();
//! wait_for("namespace demo", Duration::from_secs(10), async || {
//!     namespaces.get_opt("demo").await?.ok_or_else(|| Pending::new("not created yet"))
//! })
//! .await?;
//! mesh.stop().await;
//! # Ok(()) }
//! ```
//!
//! Environment variables: `MESHMIG_TESTENV_HOME` (a `build.sh` output directory: skips the
//! build), `MESHMIG_ISTIO_HOME` (an `e2e/istio/build.sh` output directory, for istiod and
//! the probe judge), `MESHMIG_E2E_KEEP=1` (keep every environment's directory; directories
//! of environments dropped by a failing test are always kept), `KUBECTL` (kubectl binary).
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

mod apply;
mod error;
mod istiod;
mod process;
mod testenv;
mod wait;

pub use error::Error;
pub use istiod::{
    DEFAULT_VALIDATOR, INJECTOR_WEBHOOK, ISTIOD_NAMESPACE, Istiod, IstiodOptions, IstiodPorts,
    REVISION_VALIDATOR, SharedIstiod, istio_home,
};
pub use testenv::{Mesh, TestEnv, TestEnvBuilder, client_for, testenv_home};
pub use wait::{Pending, wait_for};

/// Field manager of the harness's server-side applies.
pub const FIELD_MANAGER: &str = "meshmig-e2e";

/// Result type of the harness.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub use meshmig_sim::{SimConfig, SimHandle};
