//! A scripted Kubernetes API server behind a `kube::Client`, for the watch and client tests.
//!
//! Requests are answered in arrival order per kind and verb: each list gets the next queued
//! response, each watch the next queued [`Feed`], whose events the test sends while the watch
//! stays open, newline-delimited as the API server streams them. An unscripted request gets a
//! response that never completes, so a test that forgot one times out rather than passing.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Bytes, Frame};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::mpsc;

type MockBody = UnsyncBoxBody<Bytes, Infallible>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Services,
    EndpointSlices,
}

#[derive(Default)]
struct Script {
    lists: Vec<(Kind, StatusCode, String)>,
    watches: Vec<(Kind, mpsc::UnboundedReceiver<Bytes>)>,
}

/// The server side of a mocked client: queue responses, read what was requested.
#[derive(Clone, Default)]
pub struct MockApi {
    script: Arc<Mutex<Script>>,
    requests: Arc<Mutex<Vec<String>>>,
}

/// One open watch response: each [`Feed::send`] is one event line.
pub struct Feed(mpsc::UnboundedSender<Bytes>);

impl Feed {
    /// Sends `{"type": TYPE, "object": OBJECT}` and a newline, as the API server does.
    pub fn send(&self, event_type: &str, object: &Value) {
        let line = format!("{}\n", json!({ "type": event_type, "object": object }));
        self.0
            .send(Bytes::from(line))
            .expect("the watch response was dropped");
    }
}

impl MockApi {
    /// A client whose every request this mock answers, from a task on the current runtime.
    pub fn client(&self) -> Client {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<MockBody>>();
        let this = self.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                send.send_response(this.answer(&request));
            }
        });
        Client::new(service, "default")
    }

    /// Queues a `kind` list answer: `items` under a `*List` with `resource_version`.
    pub fn list(&self, kind: Kind, resource_version: &str, items: &[Value]) {
        let list_kind = match kind {
            Kind::Services => ("ServiceList", "v1"),
            Kind::EndpointSlices => ("EndpointSliceList", "discovery.k8s.io/v1"),
        };
        // A list carries kind and apiVersion once, not per item.
        let items: Vec<Value> = items.iter().cloned().map(strip_type).collect();
        let body = json!({
            "kind": list_kind.0, "apiVersion": list_kind.1,
            "metadata": { "resourceVersion": resource_version }, "items": items,
        });
        self.script
            .lock()
            .unwrap()
            .lists
            .push((kind, StatusCode::OK, body.to_string()));
    }

    /// Queues a failed `kind` list answer with a `Status` body.
    pub fn list_fails(&self, kind: Kind, code: StatusCode, reason: &str, message: &str) {
        let status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code.as_u16(),
        });
        self.script
            .lock()
            .unwrap()
            .lists
            .push((kind, code, status.to_string()));
    }

    /// Queues a `kind` watch answer; the test streams its events through the feed.
    pub fn watch(&self, kind: Kind) -> Feed {
        let (tx, rx) = mpsc::unbounded_channel();
        self.script.lock().unwrap().watches.push((kind, rx));
        Feed(tx)
    }

    /// The path and query of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    fn answer(&self, request: &Request<Body>) -> Response<MockBody> {
        let uri = request.uri().to_string();
        self.requests.lock().unwrap().push(uri.clone());
        let kind = if uri.contains("/endpointslices") {
            Some(Kind::EndpointSlices)
        } else if uri.contains("/services") {
            Some(Kind::Services)
        } else {
            None
        };
        let mut script = self.script.lock().unwrap();
        let (status, body) = if uri.contains("watch=true") {
            let at = script.watches.iter().position(|(k, _)| Some(*k) == kind);
            match at.map(|i| script.watches.remove(i).1) {
                Some(rx) => (StatusCode::OK, events(rx)),
                None => (StatusCode::OK, never()),
            }
        } else if uri.starts_with("/version") {
            (StatusCode::OK, full(VERSION.to_owned()))
        } else {
            let at = script.lists.iter().position(|(k, _, _)| Some(*k) == kind);
            match at.map(|i| script.lists.remove(i)) {
                Some((_, status, body)) => (status, full(body)),
                None => (StatusCode::OK, never()),
            }
        };
        let response = Response::builder()
            .status(status)
            .header("content-type", "application/json");
        response.body(body).unwrap()
    }
}

/// What `GET /version` answers.
const VERSION: &str = r#"{"major":"1","minor":"33","emulationMajor":"1","emulationMinor":"33",
"minCompatibilityMajor":"1","minCompatibilityMinor":"32","gitVersion":"v1.33.2",
"gitCommit":"a57b6f7709f6c2722b92f07b8b4c48210a51fc40","gitTreeState":"clean",
"buildDate":"2025-06-17T18:36:25Z","goVersion":"go1.24.4","compiler":"gc","platform":"linux/amd64"}"#;

fn strip_type(mut item: Value) -> Value {
    if let Some(object) = item.as_object_mut() {
        object.remove("kind");
        object.remove("apiVersion");
    }
    item
}

fn full(body: String) -> MockBody {
    Full::new(Bytes::from(body)).boxed_unsync()
}

/// A body that streams what the feed sends and ends when the feed is dropped.
fn events(rx: mpsc::UnboundedReceiver<Bytes>) -> MockBody {
    let frames = futures::stream::unfold(rx, |mut rx| async {
        let bytes = rx.recv().await?;
        Some((Ok(Frame::data(bytes)), rx))
    });
    StreamBody::new(frames).boxed_unsync()
}

fn never() -> MockBody {
    StreamBody::new(futures::stream::pending::<Result<Frame<Bytes>, Infallible>>()).boxed_unsync()
}
