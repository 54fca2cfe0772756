//! The command line: what a user types, sent to the daemon, and its answer printed.
//!
//! In the order a command runs:
//! - `args.rs`: the arguments (clap); every flag says its format and gives an example. A rule's
//!   flags are the fields of [`crate::rules::spec::RuleSpec`] itself.
//! - [`run`] (here) dispatches: `daemon` goes to [`crate::daemon`]; every other command is a
//!   request through [`crate::control::client`].
//! - `rules.rs` (`set`, `get`, `list`, `delete`, `apply`, `reload`, `revert`) and `observe.rs`
//!   (`status`, `events`, `system`) build the request and print the answer.
//! - `render/`: the tables (`-o table`), from the answer's JSON (`-o json` prints it as is).
//! - `doctor.rs`: `limiter doctor`, the one command that needs no daemon.

pub mod args;
pub mod doctor;
mod observe;
pub mod render;
mod rules;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::CommandFactory as _;

use crate::control::{client, protocol::Request};
use args::{Cli, Command};
use render::Format;

/// clap's message without its "error: " prefix, tips and usage block, with the valid values
/// (if clap lists them) kept on the same line.
pub fn one_line_usage_error(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut first = lines
        .next()
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ")
        .to_string();
    // "the following required arguments were not provided:" lists them on the next lines.
    if first.ends_with(':') {
        let listed: Vec<&str> = lines
            .clone()
            .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("tip:"))
            .collect();
        first = format!("{first} {}", listed.join(", "));
    }
    match lines.find(|l| l.starts_with("[possible values:")) {
        Some(values) => format!("{first} {values}"),
        None => first,
    }
}

/// Runs one command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    // The daemon takes `--socket` as given (its config's `socket` comes next); every other
    // command talks to the default socket when it is not given.
    let given_socket = cli.socket;
    let socket = given_socket
        .clone()
        .unwrap_or_else(|| PathBuf::from(crate::paths::SOCKET));
    let socket = socket.as_path();
    match cli.command {
        Command::Daemon(args) if args.cleanup => cleanup(socket, args.settings.bpffs),
        Command::Daemon(mut args) => {
            args.settings.socket = given_socket;
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            runtime.block_on(crate::daemon::run(args))
        }
        Command::Set(args) => rules::set(socket, &args),
        Command::Get(args) => rules::get(socket, args),
        Command::List(args) => rules::list(socket, args.output),
        Command::Delete(args) => rules::delete(socket, args.destination),
        Command::Apply(args) => rules::apply(socket, &args.file),
        Command::Reload => rules::reload(socket),
        Command::Revert(args) => rules::revert(socket, args.destination),
        Command::Events(args) => observe::events(socket, &args),
        Command::System(cmd) => observe::system(socket, cmd),
        Command::Status(args) => observe::status(socket, args.output),
        Command::Doctor(args) => {
            let bpffs = args
                .bpffs
                .unwrap_or_else(|| PathBuf::from(crate::paths::BPFFS));
            let report = doctor::Report::gather(args.cgroup.as_deref(), &bpffs);
            let text = match args.output.output {
                Format::Json => serde_json::to_string_pretty(&report)?,
                Format::Table => report.render(),
            };
            print_line(&text)?;
            anyhow::ensure!(
                report.ready,
                "this node cannot run the limiter daemon: {}",
                report.problems.join("; ")
            );
            Ok(())
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "limiter",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    }
}

/// `limiter daemon --cleanup`: refused while a daemon answers, then every pin removed.
fn cleanup(socket: &Path, bpffs: Option<PathBuf>) -> anyhow::Result<()> {
    if client::request(socket, &Request::Status).is_ok() {
        anyhow::bail!(
            "a limiter daemon is running on {}; stop it first, then run --cleanup",
            socket.display()
        );
    }
    let bpffs = bpffs.unwrap_or_else(|| PathBuf::from(crate::paths::BPFFS));
    let removed = crate::dataplane::cleanup(&bpffs)?;
    println!("{removed}");
    Ok(())
}

pub(crate) fn print_doc(
    data: &serde_json::Value,
    format: Format,
    table: fn(&serde_json::Value) -> anyhow::Result<String>,
) -> anyhow::Result<()> {
    let text = match format {
        Format::Json => serde_json::to_string_pretty(data)?,
        Format::Table => table(data).context("unexpected answer from the daemon")?,
    };
    print_line(&text)
}

/// Prints to stdout; a closed pipe (`limiter status | head -1`) is not an error worth a panic.
pub(crate) fn print_line(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to stdout"),
    }
}
