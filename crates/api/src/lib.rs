//! meshmig's API: the `MeshMigration` custom resource, every name meshmig reads or writes,
//! and partial typed views of the Istio, Sail and Gateway API kinds it works with.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod enforcement;
pub mod istio;
pub mod kinds;
pub mod migration;
pub mod names;
pub mod sail;
pub mod step;
#[doc(hidden)]
pub mod view;

pub use enforcement::{Enforcer, RequestedBy, WindowKind};
pub use migration::*;
pub use step::{CheckId, Step, StepError};

/// Gateway API types meshmig generates (from the `gateway-api` crate).
pub mod gateway {
    pub use gateway_api::apis::standard::gateways::{Gateway, GatewayListeners, GatewaySpec};
    /// The HTTPRoute root type under its Kubernetes name.
    pub use gateway_api::apis::standard::httproutes::HttpRoute as HTTPRoute;
    pub use gateway_api::apis::standard::httproutes::*;
    pub use gateway_api::apis::standard::referencegrants::{
        ReferenceGrant, ReferenceGrantFrom, ReferenceGrantSpec, ReferenceGrantTo,
    };
}
