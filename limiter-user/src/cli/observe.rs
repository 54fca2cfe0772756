//! The commands that read the daemon's counters: `status`, `events` and `system`.

use std::path::Path;

use anyhow::Context as _;

use super::args::{EventsArgs, SystemCommand};
use super::render::{self, Format};
use super::{print_doc, print_line};
use crate::control::{client, protocol::Request};

/// `limiter status`.
pub fn status(socket: &Path, format: Format) -> anyhow::Result<()> {
    let raw = client::request_raw(socket, &Request::Status)?;
    match format {
        Format::Json => {
            let doc: serde_json::Value = raw.get().parse()?;
            print_line(&serde_json::to_string_pretty(&doc)?)
        }
        // Read straight into the table's types: a `Value` tree of 10 000 destinations
        // took a second and 200 MB.
        Format::Table => print_line(
            &render::status_table(raw.get()).context("unexpected answer from the daemon")?,
        ),
    }
}

/// `limiter system set|get|delete`.
pub fn system(socket: &Path, cmd: SystemCommand) -> anyhow::Result<()> {
    let (request, format) = match cmd {
        SystemCommand::Set(args) => {
            let rule = args.to_rule();
            rule.validate().map_err(anyhow::Error::msg)?;
            let request = Request::System {
                rule: Some(rule),
                clear: false,
            };
            (request, Format::Table)
        }
        SystemCommand::Get(args) => (
            Request::System {
                rule: None,
                clear: false,
            },
            args.output,
        ),
        SystemCommand::Delete => (
            Request::System {
                rule: None,
                clear: true,
            },
            Format::Table,
        ),
    };
    let data = client::request(socket, &request)?;
    print_doc(&data, format, render::overload::system_view)
}

/// `limiter events [--follow]`.
pub fn events(socket: &Path, args: &EventsArgs) -> anyhow::Result<()> {
    let format = args.output.output;
    if !args.follow {
        let data = client::request(socket, &Request::Events { follow: false })?;
        for event in data["events"].as_array().into_iter().flatten() {
            print_line(&render::event_line(event, format))?;
        }
        return Ok(());
    }
    client::follow(socket, |line| {
        if let Some(event) = line.get("event") {
            print_line(&render::event_line(event, format))
        } else if let Some(missed) = line.get("missed") {
            eprintln!("limiter: {missed} events missed (this follower fell behind)");
            Ok(())
        } else {
            Ok(())
        }
    })
}
