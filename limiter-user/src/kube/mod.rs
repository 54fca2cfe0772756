//! Service-name destinations, `svc/NAMESPACE/NAME[:PORT]` (issue #6): parsing the reference,
//! resolving it from a Service and its EndpointSlices to client-side and server-side addresses,
//! and watching both so the result follows scale-ups, moves and deletions within seconds.
//!
//! Paths name the crate as `::kube`: at the crate root this module shadows it.

mod client;
mod dataplane;
mod resolve;
mod service_ref;
#[cfg(test)]
mod testing;
mod watch;

pub use client::{API_TIMEOUT, check_reachable, client};
pub use dataplane::{ApiAccess, ServiceDataplane};
pub use resolve::{ResolveState, Resolved, resolve};
pub use service_ref::{PortRef, ServiceRef, ServiceRefError};
pub use watch::watch;

/// The label by which the EndpointSlice controller ties a slice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
