//! The rules: what a user asks for, checked, stored and committed all or nothing.
//!
//! The vocabulary first: `spec.rs` (a rule, [`spec::RuleSpec`]), `dest.rs` (its destination:
//! an address, a CIDR or a Service, `service_ref.rs`), `adaptive.rs` (the overload check and
//! the system rule) and `breaker.rs` (the circuit breaker); `status.rs` is what a destination
//! reports. Then, in the order a change runs: `validate.rs` checks a rule, `rulebook.rs` owns
//! every rule (the daemon's one instance), `layers.rs` keeps the config's and the runtime's
//! layers and says which wins, `txn.rs` puts a change in force through the dataplane or undoes
//! it, and `journal.rs` records it beside `state.rs`'s state file, read at the next start.

pub mod adaptive;
pub mod breaker;
pub mod dest;
pub mod journal;
pub mod layers;
pub mod rulebook;
pub mod service_ref;
pub mod spec;
pub mod state;
pub mod status;
pub mod txn;
pub mod validate;
