//! `limiter`: the node daemon and the commands that talk to it.

mod api;
mod cli;
mod config;
mod control;
mod daemon;
mod dataplane;
mod dest;
mod model;
mod output;
mod paths;
mod validate;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser as _};

use crate::api::Request;
use crate::cli::{Cli, Command};
use crate::output::Format;

/// clap's message without its "error: " prefix, tips and usage block, with the valid values
/// (if clap lists them) kept on the same line.
fn one_line_usage_error(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines
        .next()
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ")
        .to_string();
    match lines.find(|l| l.starts_with("[possible values:")) {
        Some(values) => format!("{first} {values}"),
        None => first,
    }
}

fn main() -> ExitCode {
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
            eprintln!("error: {}", one_line_usage_error(&e));
            return ExitCode::FAILURE;
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` joins the context chain on one line: one clear message, no debug dump.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let socket = cli.socket;
    let client_socket = || {
        socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(paths::SOCKET))
    };
    match cli.command {
        Command::Daemon(args) if args.cleanup => {
            let socket = client_socket();
            if control::request(&socket, &Request::Status).is_ok() {
                anyhow::bail!(
                    "a limiter daemon is running on {}; stop it first, then run --cleanup",
                    socket.display()
                );
            }
            let bpffs = args
                .bpffs
                .unwrap_or_else(|| PathBuf::from(crate::paths::BPFFS));
            let removed = dataplane::cleanup(&bpffs)?;
            println!("{removed}");
            Ok(())
        }
        Command::Daemon(args) => {
            let opts = daemon::Options {
                config: args.config,
                socket: socket.clone(),
                cgroup: args.cgroup,
                bpffs: args.bpffs,
                log_level: args.log_level,
            };
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            runtime.block_on(daemon::run(opts))
        }
        Command::Set(args) => {
            let rule = args.to_rule();
            // Checked here too, for the same message without a round trip; the daemon checks again.
            validate::validate(&rule)?;
            let stored = control::request(&client_socket(), &Request::Set { rule })?;
            let stored: model::RuleSpec =
                serde_json::from_value(stored).context("unexpected answer from the daemon")?;
            print_line(&format!(
                "set {}: {}",
                stored.destination,
                output::rule_summary(&stored)
            ))
        }
        Command::Get(args) => {
            let data = control::request(
                &client_socket(),
                &Request::Get {
                    destination: args.destination,
                },
            )?;
            print_doc(&data, args.output.output, output::get_view)
        }
        Command::List(args) => {
            let data = control::request(&client_socket(), &Request::List)?;
            print_doc(&data, args.output, output::list_table)
        }
        Command::Delete(args) => {
            let destination = args.destination;
            control::request(
                &client_socket(),
                &Request::Delete {
                    destination: destination.clone(),
                },
            )?;
            print_line(&format!("deleted {destination}"))
        }
        Command::Status(args) => {
            let data = control::request(&client_socket(), &Request::Status)?;
            print_doc(&data, args.output, output::status_table)
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

fn print_doc(
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
fn print_line(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to stdout"),
    }
}
