//! The daemon's overload loop: every sampling interval (250 ms) it reads each adaptive
//! destination's workload CPU and kernel counters, runs the check ([`controller`]) and writes
//! the resulting limits into the kernel's SHED map with an expiry, so a daemon that stops
//! refreshing them stops shedding within `SHED_TTL_NS` (1 s). See docs/overload.md.

mod controller;
mod listener;
mod sources;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use limiter_overload::OverloadConfig;
use limiter_overload::signals::{self, CpuSource};
use tracing::{debug, warn};

use crate::dataplane::Dataplane;
use crate::rules::adaptive::SystemRule;
use crate::rules::dest::Dest;
use crate::rules::rulebook::RuleBook;
use crate::rules::spec::{RuleSpec, Side};
use crate::rules::status::{DestinationStatus, OverloadStatus};

pub use controller::NodeReport;
use controller::{Controller, DestInput, NodeInput, SideCounters};
use sources::Sources;

struct State {
    controller: Controller,
    sources: Sources,
    /// The limit last written per destination, to clear it once when shedding stops.
    written: HashMap<Dest, u64>,
    node_source: Option<CpuSource>,
}

pub struct Overload {
    state: Mutex<State>,
    interval: Duration,
}

/// The side the check measures and limits: the server side when the rule enforces it (the
/// destination is served here and it is the workload being protected), else the client side.
pub fn measured_side(rule: &RuleSpec) -> u8 {
    match rule.side {
        Side::Server | Side::Both => limiter_common::side::INBOUND,
        Side::Client => limiter_common::side::OUTBOUND,
    }
}

impl Overload {
    pub fn new(config: OverloadConfig) -> Overload {
        let node_source = CpuSource::node(
            signals::PROC_STAT.as_ref(),
            signals::PROC_PRESSURE_CPU.as_ref(),
        )
        .map_err(|e| warn!(error = %e, "node CPU unreadable; the system rule's max_cpu is off"))
        .ok();
        Overload {
            interval: Duration::from_millis(config.sampling.interval_ms),
            state: Mutex::new(State {
                controller: Controller::new(config),
                sources: Sources::new(PathBuf::from(signals::CGROUP_ROOT)),
                written: HashMap::new(),
                node_source,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs the loop on a thread of its own (file reads and map syscalls, never async) for as
    /// long as the process lives; the kernel's limits expire by themselves after it.
    /// Holds the rule book weakly: the loop ends when the daemon lets go of it.
    pub fn spawn(self: &Arc<Self>, book: &Arc<RuleBook>) -> std::io::Result<()> {
        let this = Arc::clone(self);
        let book = Arc::downgrade(book);
        std::thread::Builder::new()
            .name("limiter-overload".into())
            .spawn(move || {
                while let Some(book) = book.upgrade() {
                    let system = book.system().map(|(s, _)| s).unwrap_or_default();
                    this.tick(book.dataplane().as_ref(), &system);
                    drop(book);
                    std::thread::sleep(this.interval);
                }
            })
            .map(drop)
    }

    /// One sampling tick: read, decide, write the kernel's limits.
    pub fn tick(&self, dataplane: &dyn Dataplane, system: &SystemRule) {
        let rules = dataplane.adaptive_rules();
        let now = crate::dataplane::monotonic_ns();
        let mut state = self.lock();
        let state = &mut *state;
        let node = NodeInput {
            reading: state.node_source.as_ref().and_then(|s| s.read().ok()),
            load1: signals::read_loadavg(signals::PROC_LOADAVG.as_ref())
                .ok()
                .map(|l| l.one),
        };
        let mut inputs = Vec::with_capacity(rules.len());
        // The measured side of each input, in the same order.
        let mut sides = Vec::with_capacity(rules.len());
        for rule in &rules {
            let Some(adaptive) = &rule.adaptive else {
                continue;
            };
            let side = measured_side(rule);
            let counters = match dataplane.counters(&rule.destination) {
                Ok(Some(s)) => {
                    let s = if side == limiter_common::side::INBOUND {
                        &s.inbound
                    } else {
                        &s.outbound
                    };
                    SideCounters {
                        active: s.active,
                        closed: s.closed_total,
                        lifetime_ns: (s.lifetime_seconds_total * 1e9) as u64,
                    }
                }
                // Deleted since `adaptive_rules`: the next tick forgets it.
                Ok(None) => continue,
                Err(e) => {
                    debug!(dest = %rule.destination, error = %format!("{e:#}"), "counters unreadable");
                    continue;
                }
            };
            let reading = state
                .sources
                .read(now, &rule.destination, adaptive, node.reading);
            sides.push(side);
            inputs.push(DestInput {
                dest: &rule.destination,
                adaptive,
                priority: rule.priority.unwrap_or_default(),
                reading,
                counters,
            });
        }
        let limits = state.controller.tick(now, node, system, &inputs);
        let live: HashSet<&Dest> = inputs.iter().map(|i| i.dest).collect();
        state.sources.retain(|d| live.contains(d));
        let mut written = HashMap::new();
        for ((input, limit), side) in inputs.iter().zip(limits).zip(sides) {
            let had = state.written.remove(input.dest);
            let result = match limit {
                // Rewritten every tick: each write pushes the expiry on by SHED_TTL.
                Some(l) => dataplane
                    .set_shed(input.dest, Some((side, l.min(u64::from(u32::MAX)) as u32)))
                    .map(|()| {
                        written.insert(input.dest.clone(), l);
                    }),
                None if had.is_some() => dataplane.set_shed(input.dest, None),
                None => Ok(()),
            };
            if let Err(e) = result {
                warn!(dest = %input.dest, error = %format!("{e:#}"), "could not write the shed limit");
            }
        }
        // Rules no longer adaptive (or deleted): clear what was written for them.
        for dest in state.written.keys() {
            let _ = dataplane.set_shed(dest, None);
        }
        state.written = written;
    }

    /// Fills the overload figures of `limiter status`.
    pub fn annotate(&self, statuses: &mut [DestinationStatus]) {
        let state = self.lock();
        for s in statuses.iter_mut() {
            let Some(rule) = s.rule.as_ref() else {
                continue;
            };
            if rule.adaptive.is_none() {
                continue;
            }
            let Some(report) = state.controller.report(&rule.destination) else {
                continue;
            };
            s.overload = OverloadStatus {
                cpu: report.cpu,
                cpu_source: state.sources.describe(&rule.destination),
                cpu_throttled: report.throttled,
                cpu_pressure: report.pressure,
                inflight: Some(report.inflight),
                max_pass: report.max_pass,
                min_rt_ms: report.min_rt_ms,
                max_inflight: report.max_inflight,
                shed_limit: report.limit,
                shedding: report.limit.is_some(),
                shed_total: s.overload.shed_total,
            };
        }
    }

    pub fn node(&self) -> NodeReport {
        self.lock().controller.node()
    }
}
