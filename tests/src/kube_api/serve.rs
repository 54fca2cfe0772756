//! Serving: one thread per connection, HTTP/1.1 keep-alive, GET only; lists and single objects
//! are answered here, watches in [`super::watch`].

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{Value, json};

use super::selector::{Route, Selector, parse_query};
use super::store::Shared;

/// How often a waiting connection thread looks at the stop flag and the client's socket.
pub(super) const POLL: Duration = Duration::from_millis(50);
/// The largest request head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// What `GET /version` answers.
const VERSION: &str = r#"{"major":"1","minor":"33","emulationMajor":"1","emulationMinor":"33","minCompatibilityMajor":"1","minCompatibilityMinor":"32","gitVersion":"v1.33.2","gitCommit":"a57b6f7709f6c2722b92f07b8b4c48210a51fc40","gitTreeState":"clean","buildDate":"2025-06-17T18:36:25Z","goVersion":"go1.24.4","compiler":"gc","platform":"linux/amd64"}"#;

/// Accepts connections until the server stops, each served on a thread of its own.
pub(super) fn accept_loop(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    connections: &Mutex<Vec<JoinHandle<()>>>,
) {
    for stream in listener.incoming() {
        if shared.stopping() {
            return;
        }
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                shared.log(format!("accept failed: {e}"));
                std::thread::sleep(POLL);
                continue;
            }
        };
        let peer = stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let shared = Arc::clone(shared);
        let handle = std::thread::Builder::new()
            .name(format!("fake-kube-{peer}"))
            .spawn(move || {
                let mut connection = Connection::new(stream, &shared);
                if let Err(e) = connection.serve() {
                    shared.log(format!("connection {peer}: {e}"));
                }
            })
            .expect("spawn a fake API connection thread");
        let mut connections = connections.lock().unwrap_or_else(PoisonError::into_inner);
        connections.retain(|c| !c.is_finished());
        connections.push(handle);
    }
}

/// A parsed request: method, path, decoded query parameters, and the raw target for the log.
#[derive(Debug)]
struct Request {
    method: String,
    target: String,
    path: String,
    query: BTreeMap<String, String>,
    close: bool,
}

/// One client connection, answered request after request.
pub(super) struct Connection<'a> {
    pub(super) stream: TcpStream,
    pub(super) shared: &'a Shared,
    /// Bytes read past the last request head.
    buffer: Vec<u8>,
}

impl<'a> Connection<'a> {
    fn new(stream: TcpStream, shared: &'a Shared) -> Self {
        Self {
            stream,
            shared,
            buffer: Vec::new(),
        }
    }

    /// Answers requests on this connection (HTTP/1.1 keep-alive) until the client closes it or
    /// the server stops.
    fn serve(&mut self) -> io::Result<()> {
        self.stream.set_read_timeout(Some(POLL))?;
        self.stream.set_nodelay(true)?;
        while let Some(request) = self.read_request()? {
            self.shared.requests.fetch_add(1, Ordering::SeqCst);
            self.answer(&request)?;
            if request.close {
                break;
            }
        }
        let _ = self.stream.shutdown(Shutdown::Both);
        Ok(())
    }

    /// The next request head (a body, if any, is read and discarded); None when the client
    /// closed the connection or the server stops.
    fn read_request(&mut self) -> io::Result<Option<Request>> {
        let end = loop {
            if let Some(at) = find(&self.buffer, b"\r\n\r\n") {
                break at;
            }
            if self.buffer.len() > MAX_HEAD {
                return Err(io::Error::other("request head too large"));
            }
            if self.shared.stopping() {
                return Ok(None);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(None),
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
                Err(e) if is_timeout(&e) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(None),
                Err(e) => return Err(e),
            }
        };
        let head = String::from_utf8_lossy(&self.buffer[..end]).into_owned();
        self.buffer.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default();
        let mut words = request_line.split(' ');
        let (method, target) = (
            words.next().unwrap_or_default(),
            words.next().unwrap_or_default(),
        );
        let mut content_length = 0usize;
        let mut close = false;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            match name.as_str() {
                "content-length" => content_length = value.parse().unwrap_or(0),
                "connection" => close = value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        // Discard a body (the fake only answers GET, but keep the connection in step).
        while self.buffer.len() < content_length {
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(None),
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
                Err(e) if is_timeout(&e) && !self.shared.stopping() => {}
                Err(e) => return Err(e),
            }
        }
        self.buffer.drain(..content_length);
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, parse_query(query)),
            None => (target, BTreeMap::new()),
        };
        Ok(Some(Request {
            method: method.to_owned(),
            target: target.to_owned(),
            path: path.to_owned(),
            query,
            close,
        }))
    }

    fn answer(&mut self, request: &Request) -> io::Result<()> {
        let line = format!("{} {}", request.method, request.target);
        if request.method != "GET" {
            let status = status_body(405, "MethodNotAllowed", "the fake API serves GET only");
            self.shared.log(format!("{line} -> 405"));
            return self.respond(405, &status);
        }
        if request.path == "/version" {
            self.shared.log(format!("{line} -> 200 version"));
            return self.respond(200, VERSION);
        }
        let Some(route) = Route::parse(&request.path) else {
            let message = format!(
                "the server could not find the requested resource ({})",
                request.path
            );
            self.shared.log(format!("{line} -> 404"));
            return self.respond(404, &status_body(404, "NotFound", &message));
        };
        if let Some(name) = &route.name {
            let found = route.namespace.as_ref().and_then(|ns| {
                self.shared
                    .store()
                    .objects
                    .get(&(route.kind, ns.clone(), name.clone()))
                    .cloned()
            });
            return match found {
                Some(object) => {
                    self.shared.log(format!("{line} -> 200 get"));
                    self.respond(200, &object.to_string())
                }
                None => {
                    let message = format!("{} \"{name}\" not found", route.kind.plural());
                    self.shared.log(format!("{line} -> 404 get"));
                    self.respond(404, &status_body(404, "NotFound", &message))
                }
            };
        }
        let selector = match Selector::from_query(&request.query) {
            Ok(selector) => selector,
            Err(message) => {
                self.shared.log(format!("{line} -> 400 {message}"));
                return self.respond(400, &status_body(400, "BadRequest", &message));
            }
        };
        let watch = matches!(
            request.query.get("watch").map(String::as_str),
            Some("true" | "1")
        );
        if watch {
            self.watch(&line, &route, &selector, &request.query)
        } else {
            let (body, count, rv) = self.list(&route, &selector);
            self.shared
                .log(format!("{line} -> 200 list of {count} at rv {rv}"));
            self.respond(200, &body)
        }
    }

    fn list(&self, route: &Route, selector: &Selector) -> (String, usize, u64) {
        let store = self.shared.store();
        let items: Vec<Value> = store
            .objects
            .iter()
            .filter(|((kind, ns, _), object)| {
                *kind == route.kind && route.in_namespace(ns) && selector.matches(object)
            })
            .map(|(_, object)| strip_type(object.clone()))
            .collect();
        let count = items.len();
        let body = json!({
            "kind": route.kind.list_kind(),
            "apiVersion": route.kind.api_version(),
            "metadata": {"resourceVersion": store.resource_version.to_string()},
            "items": items,
        });
        (body.to_string(), count, store.resource_version)
    }

    /// Whether the client has closed its end (EOF on a peek that does not block).
    pub(super) fn client_gone(&self) -> bool {
        if self.stream.set_nonblocking(true).is_err() {
            return true;
        }
        let mut byte = [0u8; 1];
        let gone = match self.stream.peek(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !is_timeout(&e),
        };
        let _ = self.stream.set_nonblocking(false);
        gone
    }

    pub(super) fn write_chunk(&mut self, data: &str) -> io::Result<()> {
        let chunk = format!("{:x}\r\n{data}\r\n", data.len());
        self.stream.write_all(chunk.as_bytes())?;
        self.stream.flush()
    }

    pub(super) fn respond(&mut self, code: u16, body: &str) -> io::Result<()> {
        let reason = match code {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            _ => "Error",
        };
        let response = format!(
            "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\n\
             Cache-Control: no-cache, private\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream.write_all(response.as_bytes())?;
        self.stream.flush()
    }
}

fn strip_type(mut item: Value) -> Value {
    if let Some(object) = item.as_object_mut() {
        object.remove("kind");
        object.remove("apiVersion");
    }
    item
}

pub(super) fn status_value(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    })
}

pub(super) fn status_body(code: u16, reason: &str, message: &str) -> String {
    status_value(code, reason, message).to_string()
}

pub(super) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

pub(super) fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
