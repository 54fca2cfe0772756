//! Service-name destinations, `svc/NAMESPACE/NAME[:PORT]` (issue #6): parsing the reference,
//! resolving it from a Service and its EndpointSlices to client-side and server-side addresses,
//! and watching both so the result follows scale-ups, moves and deletions within seconds.
//!
//! In the order things happen: `services.rs` (the `Dataplane` in front of the kernel's) takes
//! a `svc/` rule and starts `watch.rs` on its Service and EndpointSlices, through the API access
//! `client.rs` built at start; each change is turned into addresses by `resolve.rs` and written
//! as address rules to the kernel's dataplane. The reference itself is parsed with the other
//! destinations, in [`crate::rules::service_ref`].

mod client;
mod resolve;
mod services;
#[cfg(test)]
mod testing;
mod watch;

pub use client::{API_TIMEOUT, check_reachable, client};
pub use services::{ApiAccess, ServiceDataplane};
