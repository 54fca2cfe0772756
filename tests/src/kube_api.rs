//! A fake Kubernetes API server for the `svc/` rule tests: plain HTTP/1.1 on 127.0.0.1, std
//! threads only, serving what kube-rs's client and kube-runtime's `watcher` ask for.
//!
//! - `GET /version`;
//! - LIST `GET /api/v1/[namespaces/NS/]services` and
//!   `GET /apis/discovery.k8s.io/v1/[namespaces/NS/]endpointslices`, with `fieldSelector`
//!   (`metadata.name`, `metadata.namespace`) and `labelSelector` (`k=v`, `k==v`, `k!=v`, `k`,
//!   `!k`, `k in (a,b)`, `k notin (a,b)`), answering a `*List` with `metadata.resourceVersion`
//!   and items without `kind`/`apiVersion`, as the API server prints them;
//! - GET of one object (`.../services/NAME`);
//! - WATCH, the same collections with `watch=true`: a chunked response of newline-delimited
//!   `{"type": "ADDED|MODIFIED|DELETED", "object": {..}}` events after `resourceVersion`
//!   (absent or "0": the current objects first, as ADDED), that stays open and pushes each change
//!   made through [`FakeKubeApi::apply`] and [`FakeKubeApi::delete`], until `timeoutSeconds`, the
//!   client goes, [`FakeKubeApi::close_watches`] or the server stops. Selectors are applied to the
//!   object before and after each change, as the API server does: a watch sees an object that
//!   stops matching as DELETED, one that starts matching as ADDED. `sendInitialEvents=true`
//!   (streaming lists) ends the initial ADDED events with the `k8s.io/initial-events-end`
//!   BOOKMARK. A watch from a resourceVersion older than [`FakeKubeApi::compact`] gets the
//!   API server's `410 Expired` ERROR event.
//!
//! Every change takes the next resourceVersion of one counter for the whole server, as etcd's
//! revision does. Every request is logged with its answer ([`FakeKubeApi::log`]); the log is
//! printed if the test panics while the server is alive.
//!
//! Anything else gets a 404 or 400 `Status`, so a client that asks for more than the fake knows
//! fails visibly instead of hanging.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

/// How often a waiting connection thread looks at the stop flag and the client's socket.
const POLL: Duration = Duration::from_millis(50);
/// A watch without `timeoutSeconds` ends after this (the API server picks 30-60 minutes).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);
/// The largest request head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// What `GET /version` answers.
const VERSION: &str = r#"{"major":"1","minor":"33","emulationMajor":"1","emulationMinor":"33","minCompatibilityMajor":"1","minCompatibilityMinor":"32","gitVersion":"v1.33.2","gitCommit":"a57b6f7709f6c2722b92f07b8b4c48210a51fc40","gitTreeState":"clean","buildDate":"2025-06-17T18:36:25Z","goVersion":"go1.24.4","compiler":"gc","platform":"linux/amd64"}"#;

/// The object kinds the fake serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Service,
    EndpointSlice,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Service => "v1",
            Kind::EndpointSlice => "discovery.k8s.io/v1",
        }
    }

    fn list_kind(self) -> &'static str {
        match self {
            Kind::Service => "ServiceList",
            Kind::EndpointSlice => "EndpointSliceList",
        }
    }

    /// The resource's plural, as in the URL.
    fn plural(self) -> &'static str {
        match self {
            Kind::Service => "services",
            Kind::EndpointSlice => "endpointslices",
        }
    }

    fn of_object(object: &Value) -> Kind {
        match object.get("kind").and_then(Value::as_str) {
            Some("Service") => Kind::Service,
            Some("EndpointSlice") => Kind::EndpointSlice,
            other => panic!("the fake API serves Service and EndpointSlice, not {other:?}"),
        }
    }
}

/// One stored change: the object before (None: created) and after (None: deleted).
struct Change {
    resource_version: u64,
    kind: Kind,
    before: Option<Value>,
    after: Option<Value>,
}

struct Store {
    /// The last resourceVersion given out.
    resource_version: u64,
    objects: BTreeMap<(Kind, String, String), Value>,
    changes: Vec<Change>,
    /// Watches from a resourceVersion below this get 410 Expired.
    compacted: u64,
    /// Bumped by `close_watches`: every watch started under an older value ends.
    watch_generation: u64,
    open_watches: usize,
    uid_counter: u64,
}

struct Shared {
    store: Mutex<Store>,
    changed: Condvar,
    stop: AtomicBool,
    log: Mutex<Vec<String>>,
    requests: AtomicU64,
    started: Instant,
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn log(&self, line: String) {
        let at = self.started.elapsed().as_secs_f64();
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(format!("{at:9.3}s {line}"));
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// The fake API server, listening on `127.0.0.1:<ephemeral>` until dropped, with a kubeconfig
/// file that points at it.
pub struct FakeKubeApi {
    shared: Arc<Shared>,
    addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    kubeconfig: PathBuf,
    _dir: TempDir,
}

impl FakeKubeApi {
    /// Starts the server with no objects.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake Kubernetes API");
        let addr = listener.local_addr().expect("fake API address");
        let shared = Arc::new(Shared {
            store: Mutex::new(Store {
                // Not 0 or 1: "0" means "any" to a watch, and real clusters are far from 1.
                resource_version: 1000,
                objects: BTreeMap::new(),
                changes: Vec::new(),
                compacted: 0,
                watch_generation: 0,
                open_watches: 0,
                uid_counter: 0,
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            log: Mutex::new(Vec::new()),
            requests: AtomicU64::new(0),
            started: Instant::now(),
        });
        let connections = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let shared = Arc::clone(&shared);
            let connections = Arc::clone(&connections);
            std::thread::Builder::new()
                .name("fake-kube-api".into())
                .spawn(move || accept_loop(&listener, &shared, &connections))
                .expect("spawn the fake API's acceptor")
        };
        let dir = tempfile::Builder::new()
            .prefix("limiter-fake-kube-")
            .tempdir()
            .expect("temp dir for the kubeconfig");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, kubeconfig_text(&format!("http://{addr}")))
            .expect("write the kubeconfig");
        shared.log(format!("listening on http://{addr}"));
        Self {
            shared,
            addr,
            acceptor: Some(acceptor),
            connections,
            kubeconfig,
            _dir: dir,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig whose current context points at this server (with a bearer token that the
    /// fake accepts, like any other).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Creates or replaces `object` (a Service or EndpointSlice with `metadata.namespace` and
    /// `metadata.name`); watches see ADDED or MODIFIED. Sets its `resourceVersion` (and `uid`,
    /// `creationTimestamp` on creation) and returns the resourceVersion.
    pub fn apply(&self, object: Value) -> u64 {
        let kind = Kind::of_object(&object);
        let (namespace, name) = namespace_name(&object);
        let mut object = object;
        let mut store = self.shared.store();
        store.resource_version += 1;
        let rv = store.resource_version;
        let key = (kind, namespace.clone(), name.clone());
        let before = store.objects.get(&key).cloned();
        let metadata = object
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .expect("metadata is an object");
        metadata.insert("resourceVersion".into(), json!(rv.to_string()));
        let (uid, created) = match &before {
            Some(b) => (
                b["metadata"]["uid"].clone(),
                b["metadata"]["creationTimestamp"].clone(),
            ),
            None => {
                store.uid_counter += 1;
                let uid = format!(
                    "7e57{:04x}-0000-4000-8000-{:012x}",
                    kind as u8, store.uid_counter
                );
                (json!(uid), json!("2025-06-20T08:00:00Z"))
            }
        };
        metadata.entry("uid").or_insert(uid);
        metadata.entry("creationTimestamp").or_insert(created);
        let verb = if before.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        store.objects.insert(key, object.clone());
        store.changes.push(Change {
            resource_version: rv,
            kind,
            before,
            after: Some(object),
        });
        drop(store);
        self.shared.changed.notify_all();
        self.shared.log(format!(
            "[test] {verb} {} {namespace}/{name} at rv {rv}",
            kind.name()
        ));
        rv
    }

    /// Deletes an object; watches see DELETED with its last state at a new resourceVersion,
    /// which is returned. Panics if there is no such object.
    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) -> u64 {
        let mut store = self.shared.store();
        let key = (kind, namespace.to_owned(), name.to_owned());
        let Some(before) = store.objects.remove(&key) else {
            panic!("fake API: no {} {namespace}/{name} to delete", kind.name());
        };
        store.resource_version += 1;
        let rv = store.resource_version;
        store.changes.push(Change {
            resource_version: rv,
            kind,
            before: Some(before),
            after: None,
        });
        drop(store);
        self.shared.changed.notify_all();
        self.shared.log(format!(
            "[test] DELETED {} {namespace}/{name} at rv {rv}",
            kind.name()
        ));
        rv
    }

    /// The stored object, if any.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        let key = (kind, namespace.to_owned(), name.to_owned());
        self.shared.store().objects.get(&key).cloned()
    }

    /// The last resourceVersion given out.
    pub fn resource_version(&self) -> u64 {
        self.shared.store().resource_version
    }

    /// Watch responses open now.
    pub fn open_watches(&self) -> usize {
        self.shared.store().open_watches
    }

    /// Ends every open watch response now (its final chunk is sent), as an API server restart
    /// or a watch timeout does; the clients watch again from their last resourceVersion.
    pub fn close_watches(&self) {
        self.shared.store().watch_generation += 1;
        self.shared.changed.notify_all();
        self.shared.log("[test] closing every watch".into());
    }

    /// Forgets the history up to now, like etcd's compaction: a watch from an older
    /// resourceVersion gets a `410 Expired` ERROR event and must list again.
    pub fn compact(&self) {
        let mut store = self.shared.store();
        store.compacted = store.resource_version;
        store.changes.clear();
        let rv = store.resource_version;
        drop(store);
        self.shared.log(format!("[test] compacted at rv {rv}"));
    }

    /// Requests answered so far.
    pub fn request_count(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Every logged line so far: each request with its answer, each watch's end, each change.
    pub fn log(&self) -> Vec<String> {
        self.shared
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until `n` watch responses are open at once (the client's watchers are running), or
    /// `timeout` passes; returns whether they are.
    pub fn wait_for_watches(&self, n: usize, timeout: Duration) -> bool {
        crate::wait_until(timeout, || self.open_watches() >= n)
    }
}

impl Drop for FakeKubeApi {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.changed.notify_all();
        // Wake the acceptor, blocked in accept().
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let connections = std::mem::take(
            &mut *self
                .connections
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for connection in connections {
            let _ = connection.join();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- fake Kubernetes API log ({}) ----\n{}\n---- end of fake API log ----",
                self.url(),
                self.log().join("\n")
            );
        }
    }
}

/// A kubeconfig with one cluster at `server`, as `kubectl config view --raw` prints one.
fn kubeconfig_text(server: &str) -> String {
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: fake\n  cluster:\n    server: {server}\n\
         users:\n\
         - name: limiter\n  user:\n    token: fake-token-for-tests\n\
         contexts:\n\
         - name: fake\n  context:\n    cluster: fake\n    user: limiter\n    namespace: default\n\
         current-context: fake\n\
         preferences: {{}}\n"
    )
}

fn namespace_name(object: &Value) -> (String, String) {
    let metadata = &object["metadata"];
    let name = metadata["name"]
        .as_str()
        .expect("object has metadata.name")
        .to_owned();
    let namespace = metadata["namespace"]
        .as_str()
        .expect("object has metadata.namespace")
        .to_owned();
    (namespace, name)
}

/// A ClusterIP Service `namespace/name` at `cluster_ip`, with TCP `ports` of
/// (name, port, targetPort), selecting pods labelled `app: name`.
pub fn service(
    namespace: &str,
    name: &str,
    cluster_ip: impl Into<IpAddr>,
    ports: &[(&str, u16, u16)],
) -> Value {
    let cluster_ip: IpAddr = cluster_ip.into();
    let family = if cluster_ip.is_ipv4() { "IPv4" } else { "IPv6" };
    let ports: Vec<Value> = ports
        .iter()
        .map(|(port_name, port, target)| {
            json!({"name": port_name, "port": port, "protocol": "TCP", "targetPort": target})
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app": name},
        },
        "spec": {
            "clusterIP": cluster_ip.to_string(),
            "clusterIPs": [cluster_ip.to_string()],
            "internalTrafficPolicy": "Cluster",
            "ipFamilies": [family],
            "ipFamilyPolicy": "SingleStack",
            "ports": ports,
            "selector": {"app": name},
            "sessionAffinity": "None",
            "type": "ClusterIP",
        },
        "status": {"loadBalancer": {}},
    })
}

/// One endpoint of an EndpointSlice: a ready pod at `address` on node `node`.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub address: IpAddr,
    pub node: String,
    pub ready: bool,
}

impl Endpoint {
    pub fn ready(address: impl Into<IpAddr>, node: &str) -> Self {
        Self {
            address: address.into(),
            node: node.to_owned(),
            ready: true,
        }
    }
}

/// An EndpointSlice `namespace/name` of Service `service` (labelled
/// `kubernetes.io/service-name`, owned by it), with TCP `ports` of (name, port) and `endpoints`,
/// as the EndpointSlice controller writes one. The address type follows the first endpoint
/// (IPv4 if none).
pub fn endpoint_slice(
    namespace: &str,
    name: &str,
    service: &str,
    ports: &[(&str, u16)],
    endpoints: &[Endpoint],
) -> Value {
    let v6 = endpoints.first().is_some_and(|e| e.address.is_ipv6());
    let ports: Vec<Value> = ports
        .iter()
        .map(|(port_name, port)| json!({"name": port_name, "port": port, "protocol": "TCP"}))
        .collect();
    let endpoints: Vec<Value> = endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| {
            json!({
                "addresses": [e.address.to_string()],
                "conditions": {"ready": e.ready, "serving": e.ready, "terminating": false},
                "nodeName": e.node,
                "targetRef": {
                    "kind": "Pod",
                    "name": format!("{service}-5d8f7c9b6-{i}x{}", e.address.to_string().replace([':', '.'], "")),
                    "namespace": namespace,
                },
            })
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "generateName": format!("{service}-"),
            "labels": {
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                "kubernetes.io/service-name": service,
            },
            "ownerReferences": [{
                "apiVersion": "v1", "kind": "Service", "name": service,
                "blockOwnerDeletion": true, "controller": true,
                "uid": "00000000-0000-4000-8000-000000000000",
            }],
        },
        "addressType": if v6 { "IPv6" } else { "IPv4" },
        "endpoints": endpoints,
        "ports": ports,
    })
}

// ---------------------------------------------------------------------------------------------
// Serving

fn accept_loop(
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

struct Connection<'a> {
    stream: TcpStream,
    shared: &'a Shared,
    /// Bytes read past the last request head.
    buffer: Vec<u8>,
}

/// What ended a watch response.
enum WatchEnd {
    Timeout,
    Closed,
    Stopped,
    ClientGone,
    Expired,
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

    fn watch(
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

    /// Whether the client has closed its end (EOF on a peek that does not block).
    fn client_gone(&self) -> bool {
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

    fn write_chunk(&mut self, data: &str) -> io::Result<()> {
        let chunk = format!("{:x}\r\n{data}\r\n", data.len());
        self.stream.write_all(chunk.as_bytes())?;
        self.stream.flush()
    }

    fn respond(&mut self, code: u16, body: &str) -> io::Result<()> {
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

/// `/api/v1[/namespaces/NS]/services[/NAME]` or
/// `/apis/discovery.k8s.io/v1[/namespaces/NS]/endpointslices[/NAME]`.
struct Route {
    kind: Kind,
    namespace: Option<String>,
    name: Option<String>,
}

impl Route {
    fn parse(path: &str) -> Option<Route> {
        let rest = path
            .strip_prefix("/api/v1/")
            .map(|r| (r, Kind::Service))
            .or_else(|| {
                path.strip_prefix("/apis/discovery.k8s.io/v1/")
                    .map(|r| (r, Kind::EndpointSlice))
            })?;
        let (rest, kind) = rest;
        let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
        let (namespace, resource, name) = match parts[..] {
            ["namespaces", ns, resource] => (Some(ns), resource, None),
            ["namespaces", ns, resource, name] => (Some(ns), resource, Some(name)),
            [resource] => (None, resource, None),
            _ => return None,
        };
        if resource != kind.plural() {
            return None;
        }
        Some(Route {
            kind,
            namespace: namespace.map(str::to_owned),
            name: name.map(str::to_owned),
        })
    }

    fn in_namespace(&self, namespace: &str) -> bool {
        self.namespace.as_deref().is_none_or(|ns| ns == namespace)
    }
}

/// A field selector and a label selector, both required to match.
#[derive(Debug, Default)]
struct Selector {
    fields: Vec<Requirement>,
    labels: Vec<Requirement>,
}

#[derive(Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

impl Requirement {
    fn matches(&self, values: &BTreeMap<String, String>) -> bool {
        let get = |k: &String| values.get(k);
        match self {
            Requirement::Equals(k, v) => get(k) == Some(v),
            Requirement::NotEquals(k, v) => get(k) != Some(v),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
            Requirement::In(k, vs) => get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|v| !vs.contains(v)),
        }
    }
}

impl Selector {
    fn from_query(query: &BTreeMap<String, String>) -> Result<Selector, String> {
        let mut selector = Selector::default();
        if let Some(fields) = query.get("fieldSelector") {
            selector.fields = parse_selector(fields)?;
            for requirement in &selector.fields {
                let key = match requirement {
                    Requirement::Equals(k, _) | Requirement::NotEquals(k, _) => k,
                    _ => {
                        return Err(format!(
                            "invalid field selector {fields:?}: only =, == and != are supported"
                        ));
                    }
                };
                if key != "metadata.name" && key != "metadata.namespace" {
                    return Err(format!("field label not supported: {key}"));
                }
            }
        }
        if let Some(labels) = query.get("labelSelector") {
            selector.labels = parse_selector(labels)?;
        }
        Ok(selector)
    }

    fn matches(&self, object: &Value) -> bool {
        let metadata = &object["metadata"];
        let fields: BTreeMap<String, String> = ["name", "namespace"]
            .iter()
            .filter_map(|f| Some((format!("metadata.{f}"), metadata[f].as_str()?.to_owned())))
            .collect();
        let labels: BTreeMap<String, String> = metadata["labels"]
            .as_object()
            .map(|l| {
                l.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        self.fields.iter().all(|r| r.matches(&fields))
            && self.labels.iter().all(|r| r.matches(&labels))
    }
}

/// Parses a selector: comma-separated requirements (commas inside `(...)` belong to a set).
fn parse_selector(text: &str) -> Result<Vec<Requirement>, String> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&text[start..]);
    let invalid = |why: &str| format!("invalid selector {text:?}: {why}");
    let mut requirements = Vec::new();
    for term in terms.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
        let set = |rest: &str| -> Result<Vec<String>, String> {
            let inner = rest
                .trim()
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| invalid("a set is (a,b,...)"))?;
            Ok(inner.split(',').map(|v| v.trim().to_owned()).collect())
        };
        let requirement = if let Some((k, v)) = term.split_once("!=") {
            Requirement::NotEquals(k.trim().to_owned(), v.trim().to_owned())
        } else if let Some((k, v)) = term.split_once("==") {
            Requirement::Equals(k.trim().to_owned(), v.trim().to_owned())
        } else if let Some((k, v)) = term.split_once('=') {
            Requirement::Equals(k.trim().to_owned(), v.trim().to_owned())
        } else if let Some((k, rest)) = term.split_once(" notin ") {
            Requirement::NotIn(k.trim().to_owned(), set(rest)?)
        } else if let Some((k, rest)) = term.split_once(" in ") {
            Requirement::In(k.trim().to_owned(), set(rest)?)
        } else if let Some(k) = term.strip_prefix('!') {
            Requirement::NotExists(k.trim().to_owned())
        } else {
            Requirement::Exists(term.to_owned())
        };
        let key = match &requirement {
            Requirement::Equals(k, _)
            | Requirement::NotEquals(k, _)
            | Requirement::Exists(k)
            | Requirement::NotExists(k)
            | Requirement::In(k, _)
            | Requirement::NotIn(k, _) => k,
        };
        if key.is_empty() || key.contains(|c: char| c.is_whitespace() || "()!=,".contains(c)) {
            return Err(invalid(&format!("bad key {key:?}")));
        }
        requirements.push(requirement);
    }
    Ok(requirements)
}

/// `a=1&b=x%3Dy` into {a: 1, b: x=y} (`+` is a space; empty pairs, as kube's leading `?&`, are
/// skipped).
fn parse_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn strip_type(mut item: Value) -> Value {
    if let Some(object) = item.as_object_mut() {
        object.remove("kind");
        object.remove("apiVersion");
    }
    item
}

fn status_value(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    })
}

fn status_body(code: u16, reason: &str, message: &str) -> String {
    status_value(code, reason, message).to_string()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    /// A raw HTTP/1.1 client on one keep-alive connection.
    struct Client {
        stream: TcpStream,
        buffer: Vec<u8>,
    }

    struct Head {
        code: u16,
        chunked: bool,
        length: usize,
    }

    impl Client {
        fn new(api: &FakeKubeApi) -> Self {
            let stream = TcpStream::connect(api.addr()).unwrap();
            stream.set_read_timeout(Some(WAIT)).unwrap();
            Self {
                stream,
                buffer: Vec::new(),
            }
        }

        fn fill(&mut self) {
            let mut chunk = [0u8; 4096];
            let n = self
                .stream
                .read(&mut chunk)
                .expect("read from the fake API");
            assert!(n > 0, "the fake API closed the connection");
            self.buffer.extend_from_slice(&chunk[..n]);
        }

        fn line(&mut self) -> String {
            loop {
                if let Some(at) = find(&self.buffer, b"\r\n") {
                    let line = String::from_utf8(self.buffer[..at].to_vec()).unwrap();
                    self.buffer.drain(..at + 2);
                    return line;
                }
                self.fill();
            }
        }

        fn bytes(&mut self, n: usize) -> Vec<u8> {
            while self.buffer.len() < n {
                self.fill();
            }
            self.buffer.drain(..n).collect()
        }

        fn send(&mut self, target: &str) -> Head {
            let request =
                format!("GET {target} HTTP/1.1\r\nHost: fake\r\nAccept: application/json\r\n\r\n");
            self.stream.write_all(request.as_bytes()).unwrap();
            let status = self.line();
            let code = status.split(' ').nth(1).unwrap().parse().unwrap();
            let (mut chunked, mut length) = (false, 0);
            loop {
                let line = self.line().to_ascii_lowercase();
                if line.is_empty() {
                    break;
                }
                if line == "transfer-encoding: chunked" {
                    chunked = true;
                }
                if let Some(n) = line.strip_prefix("content-length: ") {
                    length = n.parse().unwrap();
                }
            }
            Head {
                code,
                chunked,
                length,
            }
        }

        fn get(&mut self, target: &str) -> (u16, Value) {
            let head = self.send(target);
            assert!(!head.chunked, "{target} answered chunked");
            let body = self.bytes(head.length);
            (head.code, serde_json::from_slice(&body).unwrap())
        }

        /// The next chunk of a chunked body; None at the terminal chunk.
        fn chunk(&mut self) -> Option<Value> {
            let size = usize::from_str_radix(&self.line(), 16).unwrap();
            let data = self.bytes(size);
            assert_eq!(self.line(), "", "chunk not terminated by CRLF");
            if size == 0 {
                return None;
            }
            let text = String::from_utf8(data).unwrap();
            assert!(text.ends_with('\n'), "an event is one line: {text:?}");
            Some(serde_json::from_str(&text).unwrap())
        }

        /// The next event's type, object name and resourceVersion.
        fn event(&mut self) -> (String, String, u64) {
            let event = self.chunk().expect("an event, not the end of the watch");
            let object = &event["object"];
            let rv = object["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            let name = object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            (event["type"].as_str().unwrap().to_owned(), name, rv)
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn names(list: &Value) -> Vec<String> {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                format!(
                    "{}/{}",
                    i["metadata"]["namespace"].as_str().unwrap(),
                    i["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect()
    }

    /// Services web and api in default, web in staging, each with one slice.
    fn populated() -> FakeKubeApi {
        let api = FakeKubeApi::start();
        for (ns, name, vip) in [
            ("default", "web", "10.96.0.1"),
            ("default", "api", "10.96.0.2"),
            ("staging", "web", "10.96.0.3"),
        ] {
            api.apply(service(ns, name, ip(vip), &[("http", 80, 8080)]));
            let endpoints = [Endpoint::ready(ip("10.244.1.5"), "node-a")];
            api.apply(endpoint_slice(
                ns,
                &format!("{name}-abcde"),
                name,
                &[("http", 8080)],
                &endpoints,
            ));
        }
        api
    }

    const SERVICES: &str = "/api/v1/namespaces/default/services";
    const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";

    #[test]
    fn lists_honour_namespace_and_selectors() {
        let api = populated();
        let mut client = Client::new(&api);
        // As kube-runtime's watcher asks (`?&`, percent-encoded selector).
        let (code, list) = client.get(&format!(
            "{SERVICES}?&fieldSelector=metadata.name%3Dweb&limit=500&resourceVersion=0&resourceVersionMatch=NotOlderThan"
        ));
        assert_eq!(code, 200);
        assert_eq!(names(&list), ["default/web"]);
        assert_eq!(list["kind"], "ServiceList");
        assert_eq!(
            list["metadata"]["resourceVersion"],
            api.resource_version().to_string()
        );
        assert!(
            list["items"][0].get("kind").is_none(),
            "list items carry no kind: {list}"
        );
        assert_eq!(list["items"][0]["spec"]["clusterIP"], "10.96.0.1");

        let (_, all) = client.get("/api/v1/services?fieldSelector=metadata.name=web");
        assert_eq!(names(&all), ["default/web", "staging/web"]);
        let (_, both) = client.get(SERVICES);
        assert_eq!(names(&both), ["default/api", "default/web"]);

        let (code, slices) = client.get(&format!(
            "{SLICES}?labelSelector=kubernetes.io%2Fservice-name%3Dweb"
        ));
        assert_eq!(code, 200);
        assert_eq!(names(&slices), ["default/web-abcde"]);
        assert_eq!(slices["kind"], "EndpointSliceList");
        let (_, not_web) = client.get(&format!(
            "{SLICES}?labelSelector=kubernetes.io%2Fservice-name!%3Dweb"
        ));
        assert_eq!(names(&not_web), ["default/api-abcde"]);
        let (_, one) = client.get(&format!("{SERVICES}/api"));
        assert_eq!(one["metadata"]["name"], "api");
        assert!(
            api.log()
                .iter()
                .any(|l| l.contains("GET /api/v1/services?fieldSelector")
                    && l.contains("-> 200 list of 2")),
            "{:#?}",
            api.log()
        );
    }

    #[test]
    fn unknown_paths_and_bad_selectors_are_statuses() {
        let api = populated();
        let mut client = Client::new(&api);
        let (code, status) = client.get("/api/v1/namespaces/default/pods");
        assert_eq!((code, status["kind"].as_str()), (404, Some("Status")));
        let (code, status) = client.get(&format!(
            "{SERVICES}?fieldSelector=spec.clusterIP%3D10.96.0.1"
        ));
        assert_eq!((code, status["reason"].as_str()), (400, Some("BadRequest")));
        assert!(
            status["message"]
                .as_str()
                .unwrap()
                .contains("field label not supported")
        );
        let (code, _) = client.get(&format!("{SERVICES}/nope"));
        assert_eq!(code, 404);
        let (code, version) = client.get("/version");
        assert_eq!(
            (code, version["gitVersion"].as_str()),
            (200, Some("v1.33.2"))
        );
        assert_eq!(api.request_count(), 4, "all on one keep-alive connection");
    }

    #[test]
    fn a_watch_streams_matching_changes_and_ends_at_its_timeout() {
        let api = populated();
        let from = api.resource_version();
        let mut client = Client::new(&api);
        let head = client.send(&format!(
            "{SERVICES}?&watch=true&timeoutSeconds=2&allowWatchBookmarks=true&fieldSelector=metadata.name%3Dweb&resourceVersion={from}"
        ));
        assert!(head.code == 200 && head.chunked);
        assert!(api.wait_for_watches(1, WAIT));
        let started = Instant::now();

        let mut other = service("default", "api", ip("10.96.0.2"), &[("http", 81, 8081)]);
        api.apply(other.clone());
        let mut web = service("default", "web", ip("10.96.0.1"), &[("http", 80, 9090)]);
        let modified = api.apply(web.clone());
        api.apply(service(
            "staging",
            "web",
            ip("10.96.0.3"),
            &[("http", 82, 8082)],
        ));
        let deleted = api.delete(Kind::Service, "default", "web");
        web["metadata"]["labels"]["new"] = json!("yes");
        let added = api.apply(web);
        other["metadata"]["name"] = json!("api2");
        api.apply(other);

        assert_eq!(client.event(), ("MODIFIED".into(), "web".into(), modified));
        assert_eq!(client.event(), ("DELETED".into(), "web".into(), deleted));
        assert_eq!(client.event(), ("ADDED".into(), "web".into(), added));
        assert!(client.chunk().is_none(), "only web's events, then the end");
        let lasted = started.elapsed();
        assert!(
            lasted >= Duration::from_millis(1800) && lasted < Duration::from_secs(4),
            "{lasted:?}"
        );
        assert!(crate::wait_until(WAIT, || api.open_watches() == 0));
        // The connection is still good for the next request.
        assert_eq!(client.get("/version").0, 200);
    }

    #[test]
    fn a_watch_from_zero_starts_with_the_objects_and_follows_the_selection() {
        let api = populated();
        let mut client = Client::new(&api);
        let selector = "labelSelector=kubernetes.io%2Fservice-name%3Dweb";
        assert!(
            client
                .send(&format!("{SLICES}?watch=true&{selector}"))
                .chunked
        );
        assert_eq!(client.event().0, "ADDED");
        // The slice leaves the selection (relabelled), then another one enters it.
        let mut slice = api
            .get(Kind::EndpointSlice, "default", "web-abcde")
            .unwrap();
        slice["metadata"]["labels"]["kubernetes.io/service-name"] = json!("old-web");
        let left = api.apply(slice);
        let mut slice = api
            .get(Kind::EndpointSlice, "default", "api-abcde")
            .unwrap();
        slice["metadata"]["labels"]["kubernetes.io/service-name"] = json!("web");
        let entered = api.apply(slice);
        assert_eq!(client.event(), ("DELETED".into(), "web-abcde".into(), left));
        assert_eq!(
            client.event(),
            ("ADDED".into(), "api-abcde".into(), entered)
        );
        api.close_watches();
        assert!(client.chunk().is_none(), "close_watches ends the stream");
    }

    #[test]
    fn streaming_lists_end_with_the_initial_events_bookmark() {
        let api = populated();
        let mut client = Client::new(&api);
        client.send(&format!(
            "{SERVICES}?&watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"
        ));
        let names: Vec<String> = (0..2).map(|_| client.event().1).collect();
        assert_eq!(names, ["api", "web"]);
        let bookmark = client.chunk().unwrap();
        assert_eq!(bookmark["type"], "BOOKMARK");
        assert_eq!(
            bookmark["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
            "true"
        );
    }

    #[test]
    fn a_watch_from_compacted_history_gets_410_expired() {
        let api = populated();
        let old = api.resource_version() - 1;
        api.compact();
        let mut client = Client::new(&api);
        client.send(&format!("{SERVICES}?watch=true&resourceVersion={old}"));
        let error = client.chunk().unwrap();
        assert_eq!(error["type"], "ERROR");
        assert_eq!(error["object"]["code"], 410);
        assert_eq!(error["object"]["reason"], "Expired");
        assert!(client.chunk().is_none());
    }

    #[test]
    fn a_watch_whose_client_leaves_is_closed() {
        let api = populated();
        let mut client = Client::new(&api);
        client.send(&format!(
            "{SERVICES}?watch=true&resourceVersion={}",
            api.resource_version()
        ));
        assert!(api.wait_for_watches(1, WAIT));
        drop(client);
        assert!(
            crate::wait_until(WAIT, || api.open_watches() == 0),
            "{:#?}",
            api.log()
        );
    }

    #[test]
    fn selectors_parse_like_the_api_servers() {
        use Requirement::*;
        let s = |k: &str| k.to_owned();
        assert_eq!(
            parse_selector("a=1,b==2,c!=3,d,!e,f in (x, y),g notin (z)").unwrap(),
            vec![
                Equals(s("a"), s("1")),
                Equals(s("b"), s("2")),
                NotEquals(s("c"), s("3")),
                Exists(s("d")),
                NotExists(s("e")),
                In(s("f"), vec![s("x"), s("y")]),
                NotIn(s("g"), vec![s("z")]),
            ]
        );
        assert!(parse_selector("=x").is_err());
        assert_eq!(
            percent_decode("kubernetes.io%2Fservice-name%3Dweb+x"),
            "kubernetes.io/service-name=web x"
        );
        assert_eq!(percent_decode("100%"), "100%");
        let query = parse_query("&watch=true&fieldSelector=metadata.name%3Dweb");
        assert_eq!(
            query.get("fieldSelector").map(String::as_str),
            Some("metadata.name=web")
        );
        assert_eq!(query.len(), 2);
    }

    #[test]
    fn the_kubeconfig_points_at_the_server() {
        let api = FakeKubeApi::start();
        let text = std::fs::read_to_string(api.kubeconfig()).unwrap();
        assert!(text.contains(&format!("server: {}\n", api.url())), "{text}");
        assert!(text.contains("current-context: fake"), "{text}");
    }
}
