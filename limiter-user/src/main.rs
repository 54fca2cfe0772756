//! `limiter`: the node daemon and the commands that talk to it. Each folder's `mod.rs` opens
//! with a map of its files in the order they run.
//!
//! The path of `limiter set 10.0.0.2:8080 --max-connections 5`, each step in one place:
//!
//! 1. `cli/args.rs` parses it (clap) into a [`rules::spec::RuleSpec`], whose destination is a
//!    [`rules::dest::Dest`]; `cli/rules.rs` sends it with `control/client.rs` as one JSON line,
//!    `{"op":"set","rule":...}` (`control/protocol.rs`).
//! 2. The daemon (`daemon/mod.rs` assembles it from `daemon/settings.rs` and
//!    `daemon/config.rs`) reads the line in `control/server.rs`; `control/handler.rs` calls
//!    the rule book.
//! 3. `rules/rulebook.rs` validates it (`rules/validate.rs`), stores it in the runtime layer
//!    (`rules/layers.rs`: config and runtime rules, which wins) and commits the destinations
//!    it touches through `rules/txn.rs`, undone if a step fails; `rules/journal.rs` records it
//!    beside the state file (`rules/state.rs`).
//! 4. Every change goes through the [`dataplane::Dataplane`] trait: `kubernetes/services.rs`
//!    resolves `svc/` rules to addresses, then `dataplane/tables.rs` writes the rule into the
//!    pinned RULES trie of the kernel (with `dataplane/breakers.rs` and `dataplane/kinds.rs`).
//! 5. The kernel programs (crate `limiter-ebpf`) decide each connection from that map:
//!    `server.rs` (sk_lookup, cgroup_skb), `client.rs` (connect4/6), `accounting.rs`
//!    (sock_ops), all through `admit.rs`.
//!
//! Reading back: `status` and `get` come from the same tables through the handler, rendered by
//! `cli/render/`; `metrics/` serves them to Prometheus; `overload/` runs the adaptive check and
//! writes shed limits through the same `Dataplane`.

mod cli;
mod control;
mod daemon;
mod dataplane;
#[cfg(test)]
mod deploy_tests;
mod kubernetes;
mod memory;
mod metrics;
mod overload;
mod paths;
mod rules;
#[cfg(test)]
mod testutil;

use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::args::Cli;

fn main() -> ExitCode {
    // Before the first allocation of any thread (see memory.rs).
    memory::keep_large_buffers_apart();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // Help and --version are not errors.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // Every usage error is one line like any other error (scripts read the first
            // line); clap's tips and usage block are left to `--help`.
            eprintln!("error: {}", cli::one_line_usage_error(&e));
            return ExitCode::FAILURE;
        }
    };
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` joins the context chain on one line: one clear message, no debug dump.
            eprintln!("error: {e:#}");
            // A kernel that cannot run the daemon has an exit status of its own, so that a
            // supervisor (or the kernel matrix) tells it from a passing failure.
            match e.downcast_ref::<dataplane::UnsupportedKernel>() {
                Some(_) => ExitCode::from(dataplane::UnsupportedKernel::EXIT_CODE),
                None => ExitCode::FAILURE,
            }
        }
    }
}
