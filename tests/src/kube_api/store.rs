//! What the fake stores: the objects, every change with its resourceVersion (one counter for the
//! whole server, as etcd's revision), and the state the connection threads share.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use serde_json::Value;

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

    pub(super) fn list_kind(self) -> &'static str {
        match self {
            Kind::Service => "ServiceList",
            Kind::EndpointSlice => "EndpointSliceList",
        }
    }

    /// The resource's plural, as in the URL.
    pub(super) fn plural(self) -> &'static str {
        match self {
            Kind::Service => "services",
            Kind::EndpointSlice => "endpointslices",
        }
    }

    pub(super) fn of_object(object: &Value) -> Kind {
        match object.get("kind").and_then(Value::as_str) {
            Some("Service") => Kind::Service,
            Some("EndpointSlice") => Kind::EndpointSlice,
            other => panic!("the fake API serves Service and EndpointSlice, not {other:?}"),
        }
    }
}

/// One stored change: the object before (None: created) and after (None: deleted).
pub(super) struct Change {
    pub(super) resource_version: u64,
    pub(super) kind: Kind,
    pub(super) before: Option<Value>,
    pub(super) after: Option<Value>,
}

pub(super) struct Store {
    /// The last resourceVersion given out.
    pub(super) resource_version: u64,
    pub(super) objects: BTreeMap<(Kind, String, String), Value>,
    pub(super) changes: Vec<Change>,
    /// Watches from a resourceVersion below this get 410 Expired.
    pub(super) compacted: u64,
    /// Bumped by `close_watches`: every watch started under an older value ends.
    pub(super) watch_generation: u64,
    pub(super) open_watches: usize,
    pub(super) uid_counter: u64,
}

pub(super) struct Shared {
    pub(super) store: Mutex<Store>,
    pub(super) changed: Condvar,
    pub(super) stop: AtomicBool,
    pub(super) log: Mutex<Vec<String>>,
    pub(super) requests: AtomicU64,
    pub(super) started: Instant,
}

impl Shared {
    pub(super) fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn log(&self, line: String) {
        let at = self.started.elapsed().as_secs_f64();
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(format!("{at:9.3}s {line}"));
    }

    pub(super) fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// The `metadata.namespace` and `metadata.name` of an object.
pub(super) fn namespace_name(object: &Value) -> (String, String) {
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
