//! meshmig's planner: an [`Inventory`] of cluster objects in, a [`Plan`] out.
//!
//! Pure by construction: no Kubernetes client and no I/O. The offline CLI and the operator
//! both call [`plan()`], so what `meshmig plan` prints is what the operator does.
#![forbid(unsafe_code)]

pub mod authz;
pub mod classify;
pub mod cluster;
pub mod documents;
pub mod findings;
pub mod inventory;
mod json;
pub mod mesh_mode;
pub mod model;
pub mod object;
mod parallel;
pub mod plan;
pub mod report;
pub mod routes;

pub use findings::{Finding, Severity};
pub use inventory::{Inventory, LoadError, PodInfo};
pub use object::ObjectRef;
pub use plan::{Plan, plan};
