//! `svc/` rules over the kernel dataplane: a [`Dataplane`] that passes address rules through and
//! turns each Service rule into the address rules it stands for now, following the watcher.
//!
//! The rule book above sees Service rules as rules like any other (layers, state file, `list`,
//! all-or-nothing `apply`); the kernel below sees address rules only. In between:
//! - a Service rule puts one address rule per resolved address in force, with the Service rule's
//!   limits: client-side on each ClusterIP:port, server-side on each endpoint on this node (an
//!   address in both gets `side both`);
//! - an address rule set by hand wins over a derived one on the same address (the Service's is
//!   then "shadowed" and comes back when the hand-set rule is deleted), and between two Service
//!   rules the first keeps an address;
//! - derived rules carry `rule_flags::DERIVED` in the kernel, so a restarted daemon hides them
//!   from the rule book (which would otherwise adopt them as runtime rules) and its watchers
//!   claim them again without a gap; those no Service claims any more are removed once every
//!   watcher has resolved.
//!
//! Changing a rule's addresses never touches established connections: replacing an address
//! rule keeps its counters, deleting one only stops limiting new connections.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::bail;
use tokio::sync::watch as channel;
use tracing::{info, warn};

use super::resolve::{ResolveState, Resolved};
use crate::dataplane::Dataplane;
use crate::rules::dest::Dest;
use crate::rules::service_ref::ServiceRef;
use crate::rules::spec::{RuleSpec, Side};
use crate::rules::status::{BreakerStatus, DestinationStatus, ServiceStatus, SideStatus};

/// What the daemon needs to watch Services: an API client, this node's name, and the runtime
/// the watchers run on.
#[derive(Clone)]
pub struct ApiAccess {
    pub client: kube::Client,
    pub node: String,
    pub runtime: tokio::runtime::Handle,
}

struct Watched {
    rule: RuleSpec,
    resolved: Resolved,
    /// Address rules in force for it now.
    applied: BTreeMap<Dest, RuleSpec>,
    /// Addresses it resolves to that another rule holds.
    shadowed: BTreeSet<Dest>,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for Watched {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[derive(Default)]
struct Shared {
    services: BTreeMap<Dest, Watched>,
    /// Derived rules found in the kernel at start that no watcher has claimed yet.
    orphans: BTreeSet<Dest>,
    /// The aliases a previous daemon left and no watcher claimed are gone.
    aliases_pruned: bool,
}

pub struct ServiceDataplane {
    inner: Arc<dyn Dataplane>,
    /// The API access, or why there is none (the message `set svc/...` fails with).
    api: Result<ApiAccess, String>,
    shared: Arc<Mutex<Shared>>,
}

/// The address rules `rule` stands for when its Service resolves to `resolved`.
pub fn derive(rule: &RuleSpec, resolved: &Resolved) -> BTreeMap<Dest, RuleSpec> {
    let mut out: BTreeMap<Dest, RuleSpec> = BTreeMap::new();
    let mut add = |addr: &std::net::SocketAddr, side: Side| {
        let dest = Dest::Addr(*addr);
        let side = match out.get(&dest).map(|r| r.side) {
            Some(existing) if existing != side => Side::Both,
            _ => side,
        };
        out.insert(
            dest.clone(),
            RuleSpec {
                destination: dest,
                side,
                derived: true,
                ..rule.clone()
            },
        );
    };
    let client = matches!(rule.side, Side::Client | Side::Both);
    let server = matches!(rule.side, Side::Server | Side::Both);
    for a in resolved.client.iter().filter(|_| client) {
        add(a, Side::Client);
    }
    for a in resolved.server.iter().filter(|_| server) {
        add(a, Side::Server);
    }
    out
}

impl ServiceDataplane {
    /// Wraps `inner`; derived rules already in the kernel wait for their watchers.
    pub fn new(inner: Arc<dyn Dataplane>, api: Result<ApiAccess, String>) -> Self {
        let orphans = inner
            .rules()
            .into_iter()
            .filter(|r| r.derived)
            .map(|r| r.destination)
            .collect();
        ServiceDataplane {
            inner,
            api,
            shared: Arc::new(Mutex::new(Shared {
                services: BTreeMap::new(),
                orphans,
                aliases_pruned: false,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        lock(&self.shared)
    }

    /// Called once the start's rules are in force: with no Service rule at all, derived rules
    /// a previous daemon left are nobody's and go now.
    pub fn started(&self) {
        let mut shared = self.lock();
        if shared.services.is_empty() {
            collect_orphans(&*self.inner, &mut shared);
        }
    }

    fn watch(
        &self,
        api: &ApiAccess,
        svc: &Dest,
        service: &ServiceRef,
    ) -> Vec<tokio::task::AbortHandle> {
        let (tx, mut rx) = channel::channel(Resolved::default());
        let watcher = api.runtime.spawn(super::watch::watch(
            api.client.clone(),
            service.clone(),
            api.node.clone(),
            tx,
        ));
        let (inner, shared, svc) = (self.inner.clone(), self.shared.clone(), svc.clone());
        let follower = api.runtime.spawn(async move {
            while rx.changed().await.is_ok() {
                let resolved = rx.borrow_and_update().clone();
                info!(service = %svc, state = %resolved.state, client = resolved.client.len(), server = resolved.server.len(), "Service resolved");
                let mut shared = lock(&shared);
                if let Some(w) = shared.services.get_mut(&svc) {
                    w.resolved = resolved;
                }
                reconcile(&*inner, &mut shared, &svc);
                collect_orphans(&*inner, &mut shared);
            }
        });
        vec![watcher.abort_handle(), follower.abort_handle()]
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // Each step below is one dataplane call: a panic mid-way leaves a consistent state.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether a rule set by hand (by address: not derived from a Service) holds `dest`.
fn held_by_hand(inner: &dyn Dataplane, dest: &Dest) -> bool {
    inner.rule_of(dest).is_some_and(|r| !r.derived)
}

/// Puts `svc`'s address rules in force for its current resolution. Errors are logged: the next
/// change retries, and `status` shows what is in force.
fn reconcile(inner: &dyn Dataplane, shared: &mut Shared, svc: &Dest) {
    let Some(w) = shared.services.get(svc) else {
        return;
    };
    let want = derive(&w.rule, &w.resolved);
    let by_hand: BTreeSet<&Dest> = want.keys().filter(|d| held_by_hand(inner, d)).collect();
    // An API error or a missing Service before any resolution must not lift what a previous
    // daemon put in force: only a resolved state replaces the address rules.
    let authoritative = !matches!(
        w.resolved.state,
        ResolveState::Waiting | ResolveState::ApiError(_)
    );
    if !authoritative {
        return;
    }
    let taken: BTreeSet<Dest> = shared
        .services
        .iter()
        .filter(|(d, _)| *d != svc)
        .flat_map(|(_, o)| o.applied.keys().cloned())
        .collect();
    let Some(w) = shared.services.get_mut(svc) else {
        return;
    };
    w.shadowed.clear();
    for (dest, spec) in &want {
        if by_hand.contains(dest) || taken.contains(dest) {
            w.shadowed.insert(dest.clone());
            continue;
        }
        if w.applied.get(dest) == Some(spec) && !shared.orphans.contains(dest) {
            continue;
        }
        match inner.apply_rule(spec) {
            Ok(()) => {
                w.applied.insert(dest.clone(), spec.clone());
                shared.orphans.remove(dest);
            }
            Err(e) => {
                warn!(service = %svc, %dest, error = %format!("{e:#}"), "derived rule not applied")
            }
        }
    }
    // A socket load balancer that runs before limiter (Cilium's) shows an endpoint in
    // connect() instead of the ClusterIP: the client side counts those too.
    let client_side = matches!(w.rule.side, Side::Client | Side::Both);
    let aliases = if client_side {
        w.resolved.aliases.clone()
    } else {
        BTreeMap::new()
    };
    if let Err(e) = inner.set_service_aliases(svc, &aliases) {
        warn!(service = %svc, error = %format!("{e:#}"), "service endpoints not mapped to the ClusterIP");
    }
    let gone: Vec<Dest> = w
        .applied
        .keys()
        .filter(|d| !want.contains_key(*d) || w.shadowed.contains(*d))
        .cloned()
        .collect();
    for dest in gone {
        // A shadowed address is held by a hand-set rule now: it is not ours to delete.
        if !w.shadowed.contains(&dest)
            && let Err(e) = inner.delete_rule(&dest)
        {
            warn!(service = %svc, %dest, error = %format!("{e:#}"), "derived rule not removed");
            continue;
        }
        w.applied.remove(&dest);
    }
}

/// Removes derived rules of a previous daemon that no Service claimed, once every watcher has
/// an authoritative answer (until then one of them may still claim its addresses).
fn collect_orphans(inner: &dyn Dataplane, shared: &mut Shared) {
    if shared.orphans.is_empty() && shared.aliases_pruned {
        return;
    }
    let settled = shared.services.values().all(|w| {
        !matches!(
            w.resolved.state,
            ResolveState::Waiting | ResolveState::ApiError(_)
        )
    });
    if !settled {
        return;
    }
    if !shared.aliases_pruned {
        match inner.prune_service_aliases() {
            Ok(()) => shared.aliases_pruned = true,
            Err(e) => {
                warn!(error = %format!("{e:#}"), "stale service endpoint aliases not removed")
            }
        }
    }
    for dest in std::mem::take(&mut shared.orphans) {
        info!(%dest, "removing an address rule derived from a Service rule that is gone");
        if let Err(e) = inner.delete_rule(&dest) {
            warn!(%dest, error = %format!("{e:#}"), "stale derived rule not removed");
        }
    }
}

/// A Service rule's counters: the sums of its addresses' sides, and their breakers.
type Totals = (SideStatus, SideStatus, Vec<BreakerStatus>);

/// The `status` entry of the Service rule `dest`, with its addresses' `totals`.
fn service_entry(dest: &Dest, w: &Watched, totals: Totals) -> DestinationStatus {
    let (inbound, outbound, breakers) = totals;
    DestinationStatus {
        destination: dest.to_string(),
        inbound,
        outbound,
        rule: Some(w.rule.clone()),
        source: None,
        seeding: None,
        overload: Default::default(),
        service: ServiceStatus {
            service: None,
            service_state: Some(w.resolved.state.to_string()),
            resolved: Some(w.applied.keys().map(Dest::to_string).collect()),
        },
        breakers,
    }
}

fn sum(total: &mut SideStatus, s: &SideStatus) {
    total.active += s.active;
    total.pending += s.pending;
    total.opened_total += s.opened_total;
    total.closed_total += s.closed_total;
    total.lifetime_seconds_total += s.lifetime_seconds_total;
    total.accepted_total += s.accepted_total;
    total.cx_overflow_total += s.cx_overflow_total;
    for (r, by_action) in total.refused.0.iter_mut().enumerate() {
        for (a, n) in by_action.iter_mut().enumerate() {
            *n += s.refused.0[r][a];
        }
    }
}

impl Dataplane for ServiceDataplane {
    fn apply_rule(&self, rule: &RuleSpec) -> anyhow::Result<()> {
        let Some(service) = rule.destination.service() else {
            let mut shared = self.lock();
            self.inner.apply_rule(rule)?;
            // Set by hand over a derived rule: the hand-set one holds the address from now on.
            for w in shared.services.values_mut() {
                if w.applied.remove(&rule.destination).is_some() {
                    w.shadowed.insert(rule.destination.clone());
                }
            }
            shared.orphans.remove(&rule.destination);
            return Ok(());
        };
        let api = match &self.api {
            Ok(api) => api,
            // The rule book names the destination already ("cannot apply the rule for ...").
            Err(why) => bail!("{why}"),
        };
        let mut shared = self.lock();
        if let Some(w) = shared.services.get_mut(&rule.destination) {
            w.rule = rule.clone();
            reconcile(&*self.inner, &mut shared, &rule.destination);
            return Ok(());
        }
        let tasks = self.watch(api, &rule.destination, service);
        shared.services.insert(
            rule.destination.clone(),
            Watched {
                rule: rule.clone(),
                resolved: Resolved::default(),
                applied: BTreeMap::new(),
                shadowed: BTreeSet::new(),
                tasks,
            },
        );
        Ok(())
    }

    fn delete_rule(&self, dest: &Dest) -> anyhow::Result<bool> {
        let mut shared = self.lock();
        if dest.service().is_some() {
            let Some(w) = shared.services.remove(dest) else {
                return Ok(false);
            };
            for d in w.applied.keys() {
                self.inner.delete_rule(d)?;
            }
            self.inner.set_service_aliases(dest, &BTreeMap::new())?;
            // Another Service rule resolving to one of these addresses takes it now.
            let waiting: Vec<Dest> = shared
                .services
                .iter()
                .filter(|(_, o)| o.shadowed.iter().any(|d| w.applied.contains_key(d)))
                .map(|(d, _)| d.clone())
                .collect();
            for svc in waiting {
                reconcile(&*self.inner, &mut shared, &svc);
            }
            return Ok(true);
        }
        let existed = self.inner.delete_rule(dest)?;
        // A Service rule that resolves to this address takes it back.
        let waiting: Vec<Dest> = shared
            .services
            .iter()
            .filter(|(_, w)| w.shadowed.contains(dest))
            .map(|(d, _)| d.clone())
            .collect();
        for svc in waiting {
            reconcile(&*self.inner, &mut shared, &svc);
        }
        Ok(existed)
    }

    fn status(&self) -> anyhow::Result<Vec<DestinationStatus>> {
        let shared = self.lock();
        let mut out = self.inner.status()?;
        let mut totals: BTreeMap<&Dest, Totals> = BTreeMap::new();
        // Derived address (as status prints it) -> its Service rule: one lookup per line.
        let owner: BTreeMap<String, &Dest> = shared
            .services
            .iter()
            .flat_map(|(svc, w)| w.applied.keys().map(move |d| (d.to_string(), svc)))
            .collect();
        for s in &mut out {
            let Some(&svc) = owner.get(&s.destination) else {
                continue;
            };
            s.service.service = Some(svc.to_string());
            let t = totals.entry(svc).or_default();
            sum(&mut t.0, &s.inbound);
            sum(&mut t.1, &s.outbound);
            t.2.extend(s.breakers.iter().cloned());
        }
        for (dest, w) in &shared.services {
            out.push(service_entry(
                dest,
                w,
                totals.remove(dest).unwrap_or_default(),
            ));
        }
        Ok(out)
    }

    fn rules(&self) -> Vec<RuleSpec> {
        let shared = self.lock();
        let mut rules: Vec<RuleSpec> = self
            .inner
            .rules()
            .into_iter()
            .filter(|r| !r.derived)
            .collect();
        rules.extend(shared.services.values().map(|w| w.rule.clone()));
        rules
    }

    fn rule_of(&self, dest: &Dest) -> Option<RuleSpec> {
        if dest.service().is_some() {
            return self.lock().services.get(dest).map(|w| w.rule.clone());
        }
        // As `rules`: an address a Service rule derived is not a rule of its own.
        self.inner.rule_of(dest).filter(|r| !r.derived)
    }

    fn adaptive_rules(&self) -> Vec<RuleSpec> {
        self.inner.adaptive_rules()
    }

    fn counters(&self, dest: &Dest) -> anyhow::Result<Option<DestinationStatus>> {
        let shared = self.lock();
        if dest.service().is_none() {
            let Some(mut st) = self.inner.counters(dest)? else {
                return Ok(None);
            };
            // An address a Service rule derived names its Service, as in `status`.
            st.service.service = shared
                .services
                .iter()
                .find(|(_, w)| w.applied.contains_key(dest))
                .map(|(svc, _)| svc.to_string());
            return Ok(Some(st));
        }
        let Some(w) = shared.services.get(dest) else {
            return Ok(None);
        };
        let mut totals = Totals::default();
        for d in w.applied.keys() {
            if let Some(st) = self.inner.counters(d)? {
                sum(&mut totals.0, &st.inbound);
                sum(&mut totals.1, &st.outbound);
                totals.2.extend(st.breakers);
            }
        }
        Ok(Some(service_entry(dest, w, totals)))
    }

    fn state_of(&self, dest: &Dest) -> Option<String> {
        let shared = self.lock();
        let w = shared.services.get(dest)?;
        let mut state = w.resolved.state.to_string();
        if !w.shadowed.is_empty() {
            let held: Vec<String> = w.shadowed.iter().map(Dest::to_string).collect();
            state += &format!(" ({} held by other rules)", held.join(", "));
        }
        Some(state)
    }

    fn set_shed(&self, dest: &Dest, shed: Option<(u8, u32)>) -> anyhow::Result<()> {
        self.inner.set_shed(dest, shed)
    }
}

#[cfg(test)]
#[path = "services_tests.rs"]
mod tests;
