//! Keeps one `svc/` destination resolved: watches the Service and its EndpointSlices and
//! republishes [`resolve`] whenever the result changes.
//!
//! kube-runtime's `watcher` does the list+watch, resumes from the last resourceVersion, relists
//! after 410 Gone, and with `default_backoff` retries API failures forever. Each relist arrives
//! as Init, InitApply..., InitDone: the cache swaps to the new list only at InitDone, so objects
//! deleted while the watch was down disappear and a half-listed state is never published.

use std::collections::BTreeMap;
use std::pin::pin;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt as _};
use tokio::sync::watch as channel;

use super::resolve::{ResolveState, Resolved, SERVICE_NAME_LABEL, resolve};
use crate::rules::service_ref::ServiceRef;

/// Watches `svc` and publishes what it resolves to on `node` into `tx`, only when that changes.
///
/// Returns when every receiver of `tx` is gone. The first publication waits until both the
/// Service and its EndpointSlices have been listed once, so a rule never flaps through a
/// half-known state; until then the channel holds what the caller put in (normally
/// [`Resolved::default`], "waiting"). A deleted or missing Service is
/// [`ResolveState::ServiceMissing`], not an error. API errors are retried with backoff: before the
/// first resolution they are published as [`ResolveState::ApiError`] (so `status` can say why a
/// rule is pending); after it, the last result stays, because limits on addresses that were right
/// a moment ago beat no limits while the API is unreachable.
pub async fn watch(client: Client, svc: ServiceRef, node: String, tx: channel::Sender<Resolved>) {
    let services = Api::<Service>::namespaced(client.clone(), &svc.namespace);
    let slices = Api::<EndpointSlice>::namespaced(client, &svc.namespace);
    let by_name = watcher::Config::default().fields(&format!("metadata.name={}", svc.name));
    let by_label = watcher::Config::default().labels(&format!("{SERVICE_NAME_LABEL}={}", svc.name));
    let mut service_events = pin!(watcher::watcher(services, by_name).default_backoff());
    let mut slice_events = pin!(watcher::watcher(slices, by_label).default_backoff());

    let mut service_cache = Cache::<Service>::default();
    let mut slice_cache = Cache::<EndpointSlice>::default();
    let mut resolved_once = false;
    loop {
        let outcome = tokio::select! {
            () = tx.closed() => return,
            Some(event) = service_events.next() => event.map(|e| service_cache.apply(e)),
            Some(event) = slice_events.next() => event.map(|e| slice_cache.apply(e)),
        };
        match outcome {
            Ok(false) => {}
            Ok(true) if service_cache.synced && slice_cache.synced => {
                let service = service_cache.objects.get(&svc.name);
                let slices: Vec<EndpointSlice> = slice_cache.objects.values().cloned().collect();
                publish(&tx, resolve(service, &slices, &node, svc.port.as_ref()));
                resolved_once = true;
            }
            Ok(true) => {}
            Err(error) => {
                tracing::warn!(service = %svc, %error, "Kubernetes watch failed; retrying");
                if !resolved_once {
                    publish(
                        &tx,
                        Resolved::empty(ResolveState::ApiError(error.to_string())),
                    );
                }
            }
        }
    }
}

/// Sends `resolved` unless the receivers already have it, so they wake only on real changes.
fn publish(tx: &channel::Sender<Resolved>, resolved: Resolved) {
    tx.send_if_modified(|current| {
        let changed = *current != resolved;
        if changed {
            *current = resolved;
        }
        changed
    });
}

/// The objects one watcher has seen, by name (both watches are in one namespace).
struct Cache<K> {
    objects: BTreeMap<String, K>,
    /// The list being received since Init; it replaces `objects` at InitDone.
    relist: Option<BTreeMap<String, K>>,
    /// A first list has completed.
    synced: bool,
}

impl<K> Default for Cache<K> {
    fn default() -> Self {
        Cache {
            objects: BTreeMap::new(),
            relist: None,
            synced: false,
        }
    }
}

impl<K: kube::Resource> Cache<K> {
    /// Applies one event; true when `objects` may have changed.
    fn apply(&mut self, event: Event<K>) -> bool {
        match event {
            Event::Apply(object) => {
                self.objects.insert(object.name_any(), object);
            }
            Event::Delete(object) => {
                self.objects.remove(&object.name_any());
            }
            Event::Init => {
                self.relist = Some(BTreeMap::new());
                return false;
            }
            Event::InitApply(object) => {
                self.relist
                    .get_or_insert_default()
                    .insert(object.name_any(), object);
                return false;
            }
            Event::InitDone => {
                self.objects = self.relist.take().unwrap_or_default();
                self.synced = true;
            }
        }
        true
    }
}

#[cfg(test)]
#[path = "watch_tests.rs"]
mod tests;
