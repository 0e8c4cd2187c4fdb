//! meshmig operator: runs MeshMigrations through nine checkpointed, reversible steps.
//!
//! Pure core (`decide`, `checks`, `rollback`, `conditions`, `snapshot`, `frozen`, `probes`,
//! `validate`), thin shell (`observe` reads, `act` writes, `reconcile` wires them).
#![forbid(unsafe_code)]

pub mod act;
pub mod checks;
pub mod client;
pub mod conditions;
pub mod decide;
pub mod error;
pub mod frozen;
pub mod metrics;
pub mod observe;
pub mod probes;
pub mod reconcile;
pub mod rollback;
pub mod run;
pub mod snapshot;
pub mod validate;
