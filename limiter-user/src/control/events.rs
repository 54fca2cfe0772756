//! `limiter events`: the refusal events the kernel reports, over the control socket.
//!
//! Without `--follow` the daemon answers one ordinary response with its recent events and the
//! kernel's counters. With `--follow` the connection stays open: a first response line with the
//! counters, then one line per event, `{"event":{...}}`, and `{"missed":N}` when this follower
//! fell behind the daemon by N events. Nothing is dropped without being counted.

use serde_json::json;
use tokio::io::AsyncWriteExt as _;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::broadcast::{self, error::RecvError};

use crate::control::protocol::Response;
use crate::dataplane::{EventRecord, EventTotals};

/// Where the events come from (the dataplane's feed), as plain functions so the control
/// server stays independent of the dataplane type.
pub struct EventHub {
    pub recent: Box<dyn Fn() -> Vec<EventRecord> + Send + Sync>,
    pub subscribe: Box<dyn Fn() -> broadcast::Receiver<EventRecord> + Send + Sync>,
    pub totals: Box<dyn Fn() -> EventTotals + Send + Sync>,
}

async fn send(write: &mut OwnedWriteHalf, value: &impl serde::Serialize) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(value)?;
    line.push(b'\n');
    write.write_all(&line).await
}

/// Answers an `events` request on `write`; with `follow`, until the client goes away or the
/// daemon stops (`closing` turns true).
pub async fn serve(
    hub: Option<&EventHub>,
    follow: bool,
    mut write: OwnedWriteHalf,
    mut closing: tokio::sync::watch::Receiver<bool>,
) {
    let Some(hub) = hub else {
        let _ = send(
            &mut write,
            &Response::error("this daemon has no event feed"),
        )
        .await;
        return;
    };
    let totals = (hub.totals)();
    if !follow {
        let answer = json!({ "events": (hub.recent)(), "totals": totals });
        let _ = send(&mut write, &Response::ok(answer)).await;
        return;
    }
    let mut events = (hub.subscribe)();
    let start = json!({ "following": true, "totals": totals });
    if send(&mut write, &Response::ok(start)).await.is_err() {
        return;
    }
    loop {
        let received = tokio::select! {
            received = events.recv() => received,
            _ = closing.wait_for(|closing| *closing) => return,
        };
        let line = match received {
            Ok(event) => json!({ "event": event }),
            Err(RecvError::Lagged(missed)) => json!({ "missed": missed }),
            Err(RecvError::Closed) => return,
        };
        if send(&mut write, &line).await.is_err() {
            return; // the follower went away
        }
    }
}
