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

mod objects;
mod selector;
mod serve;
mod store;
mod watch;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

pub use objects::{Endpoint, endpoint_slice, service};
pub use store::Kind;

use serve::accept_loop;
use store::{Change, Shared, Store, namespace_name};

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

    /// Starts the server holding the Service `default/web` at `vip` (port `http`, to
    /// `target_port`) and one EndpointSlice of `backends`, each ready on `node`: the Service
    /// of the socket-LB and breaker tests.
    pub fn with_web_service(
        vip: std::net::SocketAddrV4,
        target_port: u16,
        backends: &[std::net::SocketAddrV4],
        node: &str,
    ) -> Self {
        let api = Self::start();
        api.apply(service(
            "default",
            "web",
            *vip.ip(),
            &[("http", vip.port(), target_port)],
        ));
        let endpoints: Vec<Endpoint> = backends
            .iter()
            .map(|b| Endpoint::ready(*b.ip(), node))
            .collect();
        api.apply(endpoint_slice(
            "default",
            "web-7xk2p",
            "web",
            &[("http", target_port)],
            &endpoints,
        ));
        api
    }

    /// The `limiter daemon` arguments of a daemon that resolves `svc/` rules through this
    /// server as the node `node`: `--kubeconfig FILE --node-name NODE`.
    pub fn daemon_args(&self, node: &str) -> Vec<std::ffi::OsString> {
        vec![
            "--kubeconfig".into(),
            self.kubeconfig.clone().into_os_string(),
            "--node-name".into(),
            node.into(),
        ]
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
