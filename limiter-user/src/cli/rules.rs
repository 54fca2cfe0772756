//! The rule commands: `set`, `get`, `list`, `delete`, `apply`, `reload` and `revert`, each one
//! request to the daemon and one line (or table) printed.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::args::{GetArgs, SetArgs};
use super::render::{self, Format};
use super::{print_doc, print_line};
use crate::control::{client, protocol::Request};
use crate::rules::dest::Dest;
use crate::rules::spec::RuleSpec;

/// `limiter set DEST ...`.
pub fn set(socket: &Path, args: &SetArgs) -> anyhow::Result<()> {
    let rule = args.to_rule();
    // Checked here too, for the same message without a round trip; the daemon checks again.
    crate::rules::validate::validate(&rule)?;
    let stored = client::request(socket, &Request::Set { rule })?;
    let stored: RuleSpec =
        serde_json::from_value(stored).context("unexpected answer from the daemon")?;
    print_line(&format!("set {}: {}", stored.destination, stored.summary()))
}

/// `limiter get DEST`.
pub fn get(socket: &Path, args: GetArgs) -> anyhow::Result<()> {
    let data = client::request(
        socket,
        &Request::Get {
            destination: args.destination,
        },
    )?;
    print_doc(&data, args.output.output, render::get_view)
}

/// `limiter list`.
pub fn list(socket: &Path, format: Format) -> anyhow::Result<()> {
    let json = format == Format::Json;
    // Config rules deleted at runtime are not rules in force, so not in the list's
    // array; the table mentions them under it, from the same request.
    let data = client::request(
        socket,
        &Request::List {
            with_deletions: !json,
        },
    )?;
    if json {
        return print_doc(&data, format, render::list::list_table);
    }
    let mut text =
        render::list::list_table(&data["rules"]).context("unexpected answer from the daemon")?;
    text += &render::list::runtime_deletions_note(&data["runtime_deletions"]);
    print_line(&text)
}

/// `limiter delete DEST`.
pub fn delete(socket: &Path, destination: Dest) -> anyhow::Result<()> {
    let answer = client::request(
        socket,
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

/// `limiter reload`.
pub fn reload(socket: &Path) -> anyhow::Result<()> {
    let answer = client::request(socket, &Request::Reload)?;
    print_line(&render::list::reload_summary(&answer).context("unexpected answer from the daemon")?)
}

/// `limiter revert DEST`.
pub fn revert(socket: &Path, destination: Dest) -> anyhow::Result<()> {
    let answer = client::request(
        socket,
        &Request::Revert {
            destination: destination.clone(),
        },
    )?;
    let rule: Option<RuleSpec> = serde_json::from_value(answer["rule"].clone())
        .context("unexpected answer from the daemon")?;
    print_line(&match rule {
        Some(rule) => format!(
            "reverted {destination}: the config's rule is in force: {}",
            rule.summary()
        ),
        None => format!("reverted {destination}: no rule (the config has none)"),
    })
}

/// `limiter apply -f FILE`: checks the whole file here (with its line numbers), then sends
/// every rule in one request; the daemon checks again and applies all or none.
pub fn apply(socket: &Path, file: &Path) -> anyhow::Result<()> {
    let (name, text) = if file == Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("cannot read the rules from standard input")?;
        (PathBuf::from("<stdin>"), text)
    } else {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        (file.to_owned(), text)
    };
    let rules = crate::daemon::config::parse_rules(&name, &text)?;
    let shown = name.display();
    if rules.is_empty() {
        return print_line(&format!("nothing to apply: {shown} has no [[rules]]"));
    }
    let count = rules.len();
    let request = Request::Apply { rules };
    let size = serde_json::to_vec(&request)?.len();
    if size > crate::control::protocol::MAX_REQUEST_BYTES {
        anyhow::bail!(
            "{shown}: {count} rules make a request of {size} bytes, over the daemon's limit of {} bytes; \
             split the file",
            crate::control::protocol::MAX_REQUEST_BYTES
        );
    }
    let answer = client::request(socket, &request)?;
    let summary =
        render::list::apply_summary(&answer).context("unexpected answer from the daemon")?;
    print_line(&format!("applied {count} rules from {shown}: {summary}"))
}
