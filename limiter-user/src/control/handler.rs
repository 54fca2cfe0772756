//! Answers to the control socket's requests, through the rule book. The socket is an input like
//! the command line, so every rule is checked again here; a refused request changes nothing.

use std::sync::Arc;

use anyhow::bail;
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use crate::control::protocol::{Request, Response};
use crate::rules::rulebook::{RuleBook, Source};

/// Answers requests through the rule book. Blocking: the dataplane makes syscalls.
pub struct Handler {
    book: Arc<RuleBook>,
    /// Builds the `daemon` object of `status` (version, socket, dataplane description) at
    /// each request, since the description changes as the daemon runs.
    daemon: Box<dyn Fn() -> Value + Send + Sync>,
    /// The refusal events, streamed by the control server itself (not through `handle`).
    events: Option<crate::control::events::EventHub>,
    overload: Option<Arc<crate::overload::Overload>>,
}

impl Handler {
    /// `{"destinations": [...], "daemon": {...}}`, serialized from the structs in one pass: with
    /// ten thousand destinations a `Value` tree of it took over 100 MB.
    fn status(&self) -> anyhow::Result<Response> {
        let mut statuses = self.book.dataplane().status()?;
        self.book.annotate_sources(&mut statuses);
        if let Some(o) = &self.overload {
            o.annotate(&mut statuses);
        }
        #[derive(serde::Serialize)]
        struct Status<'a> {
            destinations: &'a [crate::rules::status::DestinationStatus],
            node: crate::overload::NodeReport,
            daemon: Value,
        }
        Ok(Response::ok(Status {
            destinations: &statuses,
            node: self.node(),
            daemon: (self.daemon)(),
        }))
    }

    /// The node's signals as the overload loop last read them.
    fn node(&self) -> crate::overload::NodeReport {
        self.overload.as_ref().map(|o| o.node()).unwrap_or_default()
    }

    /// Adds the overload loop's figures to `status` and `get`.
    pub fn with_overload(mut self, overload: Arc<crate::overload::Overload>) -> Self {
        self.overload = Some(overload);
        self
    }

    pub fn new(book: Arc<RuleBook>, daemon: impl Fn() -> Value + Send + Sync + 'static) -> Self {
        Self {
            book,
            daemon: Box::new(daemon),
            events: None,
            overload: None,
        }
    }

    /// Adds the event feed for `limiter events`.
    pub fn with_events(mut self, hub: Option<crate::control::events::EventHub>) -> Self {
        self.events = hub;
        self
    }

    pub fn events(&self) -> Option<&crate::control::events::EventHub> {
        self.events.as_ref()
    }

    pub fn handle(&self, request: &Request) -> Response {
        // `status` answers straight from the dataplane's structs (see `status`).
        if matches!(request, Request::Status) {
            return self
                .status()
                .unwrap_or_else(|e| Response::error(format!("{e:#}")));
        }
        match self.try_handle(request) {
            Ok(data) => Response::ok(data),
            Err(e) => {
                debug!(?request, error = format!("{e:#}"), "request refused");
                Response::error(format!("{e:#}"))
            }
        }
    }

    fn try_handle(&self, request: &Request) -> anyhow::Result<Value> {
        let book = &self.book;
        match request {
            Request::Set { rule } => {
                book.set(rule.clone())?;
                info!(destination = %rule.destination, rule = rule.summary(), "rule set");
                Ok(serde_json::to_value(rule)?)
            }
            Request::Get { destination } => {
                // One destination's counters, not every rule's status (issue #15).
                let Some(mut status) = book.dataplane().counters(destination)? else {
                    bail!("no rule for {destination}");
                };
                status.source = book.source_of(destination).map(Source::as_str);
                if let Some(o) = &self.overload {
                    o.annotate(std::slice::from_mut(&mut status));
                }
                Ok(serde_json::to_value(status)?)
            }
            Request::List { with_deletions } => {
                let mut listed = book.list();
                for entry in &mut listed {
                    entry.state = book.dataplane().state_of(&entry.rule.destination);
                }
                if *with_deletions {
                    return Ok(json!({
                        "rules": listed,
                        "runtime_deletions": book.runtime_deletions(),
                    }));
                }
                Ok(serde_json::to_value(listed)?)
            }
            Request::Delete { destination } => {
                let config_rule_kept_off = book.delete(destination)?;
                info!(%destination, config_rule_kept_off, "rule deleted; its established connections are untouched");
                let mut answer = json!({ "deleted": destination });
                if config_rule_kept_off {
                    answer["config_rule_kept_off"] = json!(true);
                }
                Ok(answer)
            }
            Request::Status => Ok(serde_json::from_str(
                self.status()?
                    .data
                    .as_deref()
                    .map_or("null", |raw| raw.get()),
            )?),
            Request::Apply { rules } => {
                let outcome = book.apply(rules.clone())?;
                info!(
                    rules = rules.len(),
                    applied = outcome.applied.len(),
                    "rules applied"
                );
                Ok(serde_json::to_value(outcome)?)
            }
            Request::Reload => {
                let reloaded = book
                    .reload()
                    .inspect_err(|e| warn!("reload refused: {e:#}"))?;
                info!(?reloaded, "config reloaded");
                Ok(serde_json::to_value(reloaded)?)
            }
            Request::Revert { destination } => {
                let rule = book.revert(destination)?;
                info!(%destination, config_rule = rule.is_some(), "runtime change reverted");
                Ok(json!({ "reverted": destination, "rule": rule }))
            }
            Request::System { rule, clear } => {
                match (rule, clear) {
                    (Some(_), true) => bail!("a system request either sets a rule or clears it"),
                    (Some(r), false) => {
                        r.validate()
                            .map_err(|e| anyhow::anyhow!("system rule: {e}"))?;
                        book.set_system(Some(*r))?;
                        info!(rule = ?r, "system rule set");
                    }
                    (None, true) => {
                        let had = book.set_system(None)?;
                        info!(had, "runtime system rule deleted");
                    }
                    (None, false) => {}
                }
                let current = book.system();
                Ok(json!({
                    "system": current.map(|(r, _)| r),
                    "source": current.map(|(_, s)| s.as_str()),
                    "node": self.node(),
                }))
            }
            // The control server streams events itself; a caller of `handle` gets this.
            Request::Events { .. } => bail!("events are answered by the control server"),
        }
    }
}
