//! Answers to the control socket's requests, through the rule book. The socket is an input like
//! the command line, so every rule is checked again here; a refused request changes nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::bail;
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use crate::api::{Request, Response};
use crate::dest::Dest;
use crate::rulebook::{RuleBook, Source};

/// Answers requests through the rule book. Blocking: the dataplane makes syscalls.
pub struct Handler {
    book: Arc<RuleBook>,
    /// Builds the `daemon` object of `status` (version, socket, dataplane description) at
    /// each request, since the description changes as the daemon runs.
    daemon: Box<dyn Fn() -> Value + Send + Sync>,
    /// The refusal events, streamed by the control server itself (not through `handle`).
    events: Option<crate::event_stream::EventHub>,
}

impl Handler {
    pub fn new(book: Arc<RuleBook>, daemon: impl Fn() -> Value + Send + Sync + 'static) -> Self {
        Self {
            book,
            daemon: Box::new(daemon),
            events: None,
        }
    }

    /// Adds the event feed for `limiter events`.
    pub fn with_events(mut self, hub: Option<crate::event_stream::EventHub>) -> Self {
        self.events = hub;
        self
    }

    pub fn events(&self) -> Option<&crate::event_stream::EventHub> {
        self.events.as_ref()
    }

    pub fn handle(&self, request: &Request) -> Response {
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
                info!(destination = %rule.destination, rule = crate::output::rule_summary(rule), "rule set");
                Ok(serde_json::to_value(rule)?)
            }
            Request::Get { destination } => {
                let wanted = destination.to_string();
                let statuses = book.dataplane().status()?;
                let found = statuses.into_iter().find(|d| d.destination == wanted);
                match found {
                    Some(status) => {
                        let mut doc = serde_json::to_value(status)?;
                        add_sources(std::slice::from_mut(&mut doc), &book.sources());
                        Ok(doc)
                    }
                    None => bail!("no rule for {destination}"),
                }
            }
            Request::List => Ok(serde_json::to_value(book.list())?),
            Request::Delete { destination } => {
                let config_rule_kept_off = book.delete(destination)?;
                info!(%destination, config_rule_kept_off, "rule deleted; its established connections are untouched");
                let mut answer = json!({ "deleted": destination });
                if config_rule_kept_off {
                    answer["config_rule_kept_off"] = json!(true);
                }
                Ok(answer)
            }
            Request::Status => {
                let statuses = book.dataplane().status()?;
                let mut doc = crate::output::status_document(&statuses, (self.daemon)());
                if let Some(entries) = doc["destinations"].as_array_mut() {
                    add_sources(entries, &book.sources());
                }
                Ok(doc)
            }
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
            // The control server streams events itself; a caller of `handle` gets this.
            Request::Events { .. } => bail!("events are answered by the control server"),
        }
    }
}

/// Adds `"source": "config"|"runtime"` to each destination entry of `status` / `get`.
fn add_sources(entries: &mut [Value], sources: &BTreeMap<Dest, Source>) {
    let by_text: BTreeMap<String, Source> =
        sources.iter().map(|(d, s)| (d.to_string(), *s)).collect();
    for entry in entries {
        let source = entry["destination"]
            .as_str()
            .and_then(|d| by_text.get(d).copied());
        if let (Some(source), Some(fields)) = (source, entry.as_object_mut()) {
            fields.insert("source".into(), json!(source));
        }
    }
}
