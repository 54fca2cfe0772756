//! The control socket: a Unix socket, one JSON request line and one answer line per
//! connection (`events --follow` keeps streaming).
//!
//! `protocol.rs` is the wire format both ends share (documented in docs/cli.md). The CLI's end
//! is `client.rs`. The daemon's end, in the order a request runs: `server.rs` accepts and
//! reads the line, `handler.rs` answers it from the rule book, the dataplane and the overload
//! loop, and `events.rs` streams the kernel's refusal events.

pub mod client;
pub mod events;
pub mod handler;
pub mod protocol;
pub mod server;
