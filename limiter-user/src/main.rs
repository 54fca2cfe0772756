//! `limiter`: the node daemon and the commands that talk to it.
//!
//! The path of `limiter set 10.0.0.2:8080 --max-connections 5`, from the command line to the
//! kernel (each step in one place):
//!
//! 1. `cli.rs` parses the arguments into a `RuleSpec` (`model.rs`; destinations in `dest.rs`).
//! 2. `control::request` sends `{"op":"set","rule":...}` over the socket (protocol: `api.rs`).
//! 3. In the daemon (`daemon.rs` assembles it), `control.rs` reads the line and
//!    `handler.rs` turns it into a call on the rule book.
//! 4. `rulebook.rs` validates it (`validate.rs`), edits the runtime layer (`layers.rs`: config
//!    and runtime rules, which wins), and commits only the destinations it touches.
//! 5. `txn.rs` applies each change through the `Dataplane` trait (`model.rs`), undoing the
//!    steps already made if one fails; `journal.rs` records it beside the state file
//!    (`state.rs`), or the change is undone.
//! 6. `kube/dataplane.rs` resolves `svc/` rules to addresses; every address rule goes on to
//!    `dataplane/mod.rs`, which owns the kernel: `dataplane/tables.rs` writes the rule into the
//!    pinned RULES trie, with its counters, breaker policy (`dataplane/breakers.rs`) and hook
//!    kinds (`dataplane/kinds.rs`).
//! 7. The kernel programs (crate `limiter-ebpf`) decide each connection from that map:
//!    `server.rs` (sk_lookup, cgroup_skb), `client.rs` (connect4/6), `accounting.rs`
//!    (sock_ops), all through `admit.rs`.
//!
//! Reading back: `status` and `get` come from `dataplane/tables.rs` (counters) through
//! `handler.rs`, rendered by `output*.rs`; `metrics*.rs` serve the same counters to Prometheus;
//! `overload/` runs the adaptive check and writes shed limits through the same `Dataplane`.

mod adaptive;
mod api;
mod breaker;
mod cli;
mod config;
mod control;
mod daemon;
mod dataplane;
mod dest;
mod doctor;
mod event_stream;
mod handler;
mod journal;
mod kube;
mod layers;
mod memory;
mod metrics;
mod metrics_dest;
mod metrics_http;
mod model;
mod node;
mod output;
mod output_list;
mod output_overload;
mod overload;
mod paths;
mod rulebook;
mod settings;
mod state;
#[cfg(test)]
mod testutil;
mod txn;
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

/// `limiter events [--follow]`.
fn events(socket: &std::path::Path, args: &cli::EventsArgs) -> anyhow::Result<()> {
    let format = args.output.output;
    if !args.follow {
        let data = control::request(socket, &Request::Events { follow: false })?;
        for event in data["events"].as_array().into_iter().flatten() {
            print_line(&output::event_line(event, format))?;
        }
        return Ok(());
    }
    event_stream::follow(socket, |line| {
        if let Some(event) = line.get("event") {
            print_line(&output::event_line(event, format))
        } else if let Some(missed) = line.get("missed") {
            eprintln!("limiter: {missed} events missed (this follower fell behind)");
            Ok(())
        } else {
            Ok(())
        }
    })
}

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
            eprintln!("error: {}", one_line_usage_error(&e));
            return ExitCode::FAILURE;
        }
    };
    match run(cli) {
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
            let opts = args.into_options(socket.clone());
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
            let json = args.output == Format::Json;
            // Config rules deleted at runtime are not rules in force, so not in the list's
            // array; the table mentions them under it, from the same request.
            let data = control::request(
                &client_socket(),
                &Request::List {
                    with_deletions: !json,
                },
            )?;
            if json {
                return print_doc(&data, args.output, output::list_table);
            }
            let mut text =
                output::list_table(&data["rules"]).context("unexpected answer from the daemon")?;
            text += &output::runtime_deletions_note(&data["runtime_deletions"]);
            print_line(&text)
        }
        Command::Delete(args) => {
            let destination = args.destination;
            let answer = control::request(
                &client_socket(),
                &Request::Delete {
                    destination: destination.clone(),
                },
            )?;
            match answer["config_rule_kept_off"].as_bool() {
                Some(true) => print_line(&format!(
                    "deleted {destination} (a config rule: kept off until `limiter revert {destination}`)"
                )),
                _ => print_line(&format!("deleted {destination}")),
            }
        }
        Command::Apply(args) => apply(&client_socket(), &args.file),
        Command::Reload => {
            let answer = control::request(&client_socket(), &Request::Reload)?;
            print_line(
                &output::reload_summary(&answer).context("unexpected answer from the daemon")?,
            )
        }
        Command::Revert(args) => {
            let destination = args.destination;
            let answer = control::request(
                &client_socket(),
                &Request::Revert {
                    destination: destination.clone(),
                },
            )?;
            let rule: Option<model::RuleSpec> = serde_json::from_value(answer["rule"].clone())
                .context("unexpected answer from the daemon")?;
            print_line(&match rule {
                Some(rule) => format!(
                    "reverted {destination}: the config's rule is in force: {}",
                    output::rule_summary(&rule)
                ),
                None => format!("reverted {destination}: no rule (the config has none)"),
            })
        }
        Command::Events(args) => events(&client_socket(), &args),
        Command::System(cmd) => {
            let (request, format) = match cmd {
                cli::SystemCommand::Set(args) => {
                    let rule = args.to_rule();
                    rule.validate().map_err(anyhow::Error::msg)?;
                    let request = Request::System {
                        rule: Some(rule),
                        clear: false,
                    };
                    (request, Format::Table)
                }
                cli::SystemCommand::Get(args) => (
                    Request::System {
                        rule: None,
                        clear: false,
                    },
                    args.output,
                ),
                cli::SystemCommand::Delete => (
                    Request::System {
                        rule: None,
                        clear: true,
                    },
                    Format::Table,
                ),
            };
            let data = control::request(&client_socket(), &request)?;
            print_doc(&data, format, output::system_view)
        }
        Command::Status(args) => {
            let raw = control::request_raw(&client_socket(), &Request::Status)?;
            match args.output {
                Format::Json => {
                    let doc: serde_json::Value = raw.get().parse()?;
                    print_line(&serde_json::to_string_pretty(&doc)?)
                }
                // Read straight into the table's types: a `Value` tree of 10 000 destinations
                // took a second and 200 MB.
                Format::Table => print_line(
                    &output::status_table(raw.get())
                        .context("unexpected answer from the daemon")?,
                ),
            }
        }
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

/// `limiter apply -f FILE`: checks the whole file here (with its line numbers), then sends
/// every rule in one request; the daemon checks again and applies all or none.
fn apply(socket: &std::path::Path, file: &std::path::Path) -> anyhow::Result<()> {
    let (name, text) = if file == std::path::Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("cannot read the rules from standard input")?;
        (PathBuf::from("<stdin>"), text)
    } else {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        (file.to_owned(), text)
    };
    let rules = config::parse_rules(&name, &text)?;
    let shown = name.display();
    if rules.is_empty() {
        return print_line(&format!("nothing to apply: {shown} has no [[rules]]"));
    }
    let count = rules.len();
    let request = Request::Apply { rules };
    let size = serde_json::to_vec(&request)?.len();
    if size > api::MAX_REQUEST_BYTES {
        anyhow::bail!(
            "{shown}: {count} rules make a request of {size} bytes, over the daemon's limit of {} bytes; \
             split the file",
            api::MAX_REQUEST_BYTES
        );
    }
    let answer = control::request(socket, &request)?;
    let summary = output::apply_summary(&answer).context("unexpected answer from the daemon")?;
    print_line(&format!("applied {count} rules from {shown}: {summary}"))
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
