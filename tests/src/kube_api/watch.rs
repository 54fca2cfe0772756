//! WATCH: a chunked response of newline-delimited events that stays open and follows the store.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::selector::{Route, Selector};
use super::serve::{Connection, POLL, status_body, status_value};
use super::store::{Shared, Store};

/// A watch without `timeoutSeconds` ends after this (the API server picks 30-60 minutes).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// What ended a watch response.
enum WatchEnd {
    Timeout,
    Closed,
    Stopped,
    ClientGone,
    Expired,
}

impl Connection<'_> {
    /// Answers a WATCH of `route` (the request `line`, for the log) until it ends.
    pub(super) fn watch(
        &mut self,
        line: &str,
        route: &Route,
        selector: &Selector,
        query: &BTreeMap<String, String>,
    ) -> io::Result<()> {
        let timeout = query
            .get("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .map_or(DEFAULT_WATCH_TIMEOUT, Duration::from_secs);
        let from = query
            .get("resourceVersion")
            .map(String::as_str)
            .unwrap_or("");
        let initial_events = query.get("sendInitialEvents").map(String::as_str) == Some("true");
        let start = Instant::now();
        let deadline = start + timeout;

        // What to send first, and from which resourceVersion on to follow the changes.
        let (mut cursor, first, generation) = {
            let mut store = self.shared.store();
            let current = store.resource_version;
            let snapshot = |store: &Store| -> Vec<Value> {
                store
                    .objects
                    .iter()
                    .filter(|((kind, ns, _), o)| {
                        *kind == route.kind && route.in_namespace(ns) && selector.matches(o)
                    })
                    .map(|(_, o)| json!({"type": "ADDED", "object": o}))
                    .collect()
            };
            let mut first = Vec::new();
            let cursor = if from.is_empty() || from == "0" || initial_events {
                first = snapshot(&store);
                if initial_events {
                    first.push(json!({"type": "BOOKMARK", "object": {
                        "kind": route.kind.name(), "apiVersion": route.kind.api_version(),
                        "metadata": {"resourceVersion": current.to_string(),
                                     "annotations": {"k8s.io/initial-events-end": "true"}},
                    }}));
                }
                current
            } else {
                match from.parse::<u64>() {
                    Ok(rv) if rv < store.compacted => {
                        first.push(json!({"type": "ERROR", "object": status_value(
                            410, "Expired",
                            &format!("too old resource version: {rv} ({})", store.compacted),
                        )}));
                        u64::MAX
                    }
                    Ok(rv) => rv,
                    Err(_) => {
                        drop(store);
                        let message = format!("invalid resourceVersion {from:?}");
                        self.shared.log(format!("{line} -> 400 {message}"));
                        return self.respond(400, &status_body(400, "BadRequest", &message));
                    }
                }
            };
            store.open_watches += 1;
            (cursor, first, store.watch_generation)
        };
        let _open = OpenWatch(self.shared);

        self.shared.log(format!(
            "{line} -> 200 watch from rv {from:?}, {} initial event(s)",
            first.len()
        ));
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                    Cache-Control: no-cache, private\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut sent = first.len();
        let outcome = (|| -> io::Result<WatchEnd> {
            self.stream.write_all(head.as_bytes())?;
            for event in &first {
                self.write_chunk(&format!("{event}\n"))?;
            }
            if cursor == u64::MAX {
                return Ok(WatchEnd::Expired);
            }
            loop {
                let events = {
                    let mut store = self.shared.store();
                    loop {
                        if self.shared.stopping() {
                            return Ok(WatchEnd::Stopped);
                        }
                        if store.watch_generation != generation {
                            return Ok(WatchEnd::Closed);
                        }
                        if Instant::now() >= deadline {
                            return Ok(WatchEnd::Timeout);
                        }
                        let events = pending_events(&store, route, selector, cursor);
                        cursor = store.resource_version;
                        if !events.is_empty() {
                            break events;
                        }
                        let wait = POLL.min(deadline.saturating_duration_since(Instant::now()));
                        store = self
                            .shared
                            .changed
                            .wait_timeout(store, wait)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0;
                        drop(store);
                        if self.client_gone() {
                            return Ok(WatchEnd::ClientGone);
                        }
                        store = self.shared.store();
                    }
                };
                for event in &events {
                    self.write_chunk(&format!("{event}\n"))?;
                }
                sent += events.len();
            }
        })();
        let why = match &outcome {
            Ok(WatchEnd::Timeout) => "timeoutSeconds reached".to_owned(),
            Ok(WatchEnd::Closed) => "closed by the test".to_owned(),
            Ok(WatchEnd::Stopped) => "server stopping".to_owned(),
            Ok(WatchEnd::ClientGone) => "client closed the connection".to_owned(),
            Ok(WatchEnd::Expired) => "410 Expired sent".to_owned(),
            Err(e) => format!("write failed: {e}"),
        };
        self.shared.log(format!(
            "  watch {line} ended after {:.1}s, {sent} event(s): {why}",
            start.elapsed().as_secs_f64()
        ));
        match outcome {
            Ok(WatchEnd::ClientGone) | Err(_) => Err(io::Error::other("watch client gone")),
            Ok(_) => self.stream.write_all(b"0\r\n\r\n"),
        }
    }
}

/// Counts an open watch while it lives.
struct OpenWatch<'a>(&'a Shared);

impl Drop for OpenWatch<'_> {
    fn drop(&mut self) {
        self.0.store().open_watches -= 1;
    }
}

/// The events after `cursor` that a watch of `route` with `selector` sees, as the API server
/// filters them: by the object before and after each change, so an object that leaves the
/// selection is DELETED (its previous state at the change's resourceVersion) and one that enters
/// it is ADDED.
fn pending_events(store: &Store, route: &Route, selector: &Selector, cursor: u64) -> Vec<Value> {
    let visible = |o: Option<&Value>| {
        o.is_some_and(|o| {
            let ns = o["metadata"]["namespace"].as_str().unwrap_or_default();
            route.in_namespace(ns) && selector.matches(o)
        })
    };
    store
        .changes
        .iter()
        .filter(|c| c.resource_version > cursor && c.kind == route.kind)
        .filter_map(|c| {
            let (was, is) = (visible(c.before.as_ref()), visible(c.after.as_ref()));
            let (event_type, object) = match (was, is) {
                (false, false) => return None,
                (false, true) => ("ADDED", c.after.clone()?),
                (true, true) => ("MODIFIED", c.after.clone()?),
                (true, false) => {
                    let mut last = c.before.clone()?;
                    last["metadata"]["resourceVersion"] = json!(c.resource_version.to_string());
                    ("DELETED", last)
                }
            };
            Some(json!({"type": event_type, "object": object}))
        })
        .collect()
}
