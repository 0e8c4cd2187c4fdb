//! Istio's own code as the judge of meshmig's Istio semantics (test-only).
//!
//! - [`oracle`] runs the `meshmig-istio` binary that `e2e/istio/build.sh` builds from the
//!   pinned `istio.io/istio` module: Istio's validation and istiod's AuthorizationPolicy →
//!   ztunnel `Authorization` conversion.
//! - [`ztunnel`] evaluates those Authorizations as ztunnel does, written from ztunnel's
//!   documented behaviour and its tests (see docs/semantics.md).

pub mod envoy_rbac;
pub mod oracle;
pub mod ztunnel;
