//! The overload check of every adaptive destination, one tick at a time, with time and signals
//! passed in: the daemon's loop (`super`) reads files and maps, this decides.
//!
//! Per destination: the workload's CPU reading becomes a utilisation ([`Sampler`]), smoothed
//! ([`Ewma`], tau 0.5 s); the kernel's counters of the measured side give the completions and
//! lifetimes for [`Bbr`]; its verdict is the limit the kernel enforces until the next tick.
//!
//! Node-wide (the system rule, after Sentinel's): when the node's load1 or filtered CPU is above
//! the rule's bound, every adaptive destination's check is armed, and the node's concurrency is
//! cut by the factor it is over (`max_cpu / cpu`, `max_load1 / load1`, the smaller): the sum of
//! the destinations' `maxInflight` times that factor is shared by criticality with
//! [`allocate`], so sheddable destinations lose first and critical-plus last, each class keeping
//! its minimum share.

use std::collections::{HashMap, HashSet};

use limiter_overload::signals::{CpuReading, Sampler};
use limiter_overload::{Bbr, Criticality, Demand, Ewma, OverloadConfig, allocate};

use crate::rules::adaptive::{Adaptive, SystemRule};
use crate::rules::dest::Dest;

/// What the kernel counts on the measured side of a destination.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SideCounters {
    /// Established now.
    pub active: u64,
    /// Connections closed so far, and the sum of their lifetimes (ns).
    pub closed: u64,
    pub lifetime_ns: u64,
}

/// One destination's input for a tick.
pub struct DestInput<'a> {
    pub dest: &'a Dest,
    pub adaptive: &'a Adaptive,
    pub priority: Criticality,
    /// The workload's CPU counters now; None when unreadable (the check then keeps its last
    /// filtered value: a missing file must not read as idle and disarm it).
    pub reading: Option<CpuReading>,
    pub counters: SideCounters,
}

/// The node's signals for a tick.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeInput {
    pub reading: Option<CpuReading>,
    pub load1: Option<f64>,
}

/// What a tick decided for one destination, and the figures `limiter status` shows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DestReport {
    /// Filtered CPU of the workload, fraction of what it may use.
    pub cpu: Option<f64>,
    /// Share of the last tick's enforcement periods in which the workload was throttled, and
    /// its CPU pressure (`some avg10`, %), where the cgroup has them: shown, not used by the
    /// check (throttling alone also marks a workload at its quota with an empty queue).
    pub throttled: Option<f64>,
    pub pressure: Option<f64>,
    pub inflight: u64,
    pub max_pass: Option<f64>,
    pub min_rt_ms: Option<f64>,
    pub max_inflight: Option<u64>,
    /// The limit to enforce until the next tick; None = no shedding.
    pub limit: Option<u64>,
}

struct DestCheck {
    adaptive: Adaptive,
    bbr: Bbr,
    filter: Ewma,
    sampler: Sampler,
    last_counters: Option<SideCounters>,
    report: DestReport,
}

/// The node's state as shown by `limiter status` (top-level `node`).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct NodeReport {
    /// Filtered CPU of the whole node, fraction of all CPUs.
    pub cpu: Option<f64>,
    pub load1: Option<f64>,
    /// The system rule finds the node overloaded.
    pub overloaded: bool,
}

pub struct Controller {
    config: OverloadConfig,
    node_filter: Ewma,
    node_sampler: Sampler,
    node: NodeReport,
    dests: HashMap<Dest, DestCheck>,
}

impl Controller {
    pub fn new(config: OverloadConfig) -> Controller {
        Controller {
            node_filter: Ewma::new(&config.filter),
            node_sampler: Sampler::new(),
            node: NodeReport::default(),
            dests: HashMap::new(),
            config,
        }
    }

    pub fn node(&self) -> NodeReport {
        self.node
    }

    pub fn report(&self, dest: &Dest) -> Option<&DestReport> {
        self.dests.get(dest).map(|d| &d.report)
    }

    /// One tick at `now_ns`: returns each destination's limit (None = not shedding), in the
    /// order of `inputs`. Destinations not in `inputs` are forgotten.
    pub fn tick(
        &mut self,
        now_ns: u64,
        node: NodeInput,
        system: &SystemRule,
        inputs: &[DestInput<'_>],
    ) -> Vec<Option<u64>> {
        let node_factor = self.observe_node(now_ns, node, system);
        let live: HashSet<&Dest> = inputs.iter().map(|i| i.dest).collect();
        self.dests.retain(|d, _| live.contains(d));
        let mut wants = Vec::with_capacity(inputs.len());
        for input in inputs {
            let check = self.check_for(input);
            let sample = input.reading.and_then(|r| check.sampler.observe(now_ns, r));
            let cpu = match sample {
                Some(s) => Some(check.filter.update(now_ns, s.utilisation)),
                None => check.filter.value(),
            };
            let c = input.counters;
            if let Some(last) = check.last_counters {
                // A counter below its last value means the rule was recreated: its counters
                // started over, so all of them are new.
                let (closed, life) = if c.closed < last.closed {
                    (c.closed, c.lifetime_ns)
                } else {
                    (
                        c.closed - last.closed,
                        c.lifetime_ns.saturating_sub(last.lifetime_ns),
                    )
                };
                check.bbr.record(now_ns, closed, life);
            } else {
                check.bbr.record(now_ns, 0, 0);
            }
            check.last_counters = Some(c);
            // Node overload arms every check, whatever the workload's own CPU says.
            let armed_cpu = if node_factor.is_some() {
                f64::INFINITY
            } else {
                cpu.unwrap_or(0.0)
            };
            let verdict = check.bbr.evaluate(now_ns, armed_cpu, c.active);
            let (throttled, pressure) = match sample {
                Some(s) => (s.throttled_ratio, s.pressure_some_avg10),
                None => (check.report.throttled, check.report.pressure),
            };
            check.report = DestReport {
                cpu,
                throttled,
                pressure,
                inflight: c.active,
                max_pass: check.bbr.max_pass(now_ns),
                min_rt_ms: check.bbr.min_rt_ms(now_ns),
                max_inflight: check.bbr.max_inflight(now_ns),
                limit: verdict.limit,
            };
            wants.push((input.priority, verdict.limit));
        }
        if let Some(factor) = node_factor {
            self.share_by_priority(inputs, &wants, factor);
        }
        inputs
            .iter()
            .map(|i| self.dests.get(i.dest).and_then(|d| d.report.limit))
            .collect()
    }

    fn check_for(&mut self, input: &DestInput<'_>) -> &mut DestCheck {
        let fresh = || {
            let cfg = input.adaptive.bbr_config(&self.config.bbr);
            // A rule is validated against the built-in defaults when it is accepted; combined
            // with the daemon's [overload] defaults it can still be out of range (a window
            // shorter than [overload] bbr.buckets milliseconds): say so, use [overload] alone.
            let bbr = Bbr::new(cfg).unwrap_or_else(|e| {
                tracing::warn!(dest = %input.dest, error = %e, "adaptive settings out of range with the daemon's [overload] defaults; using those");
                Bbr::new(self.config.bbr).expect("[overload] was validated at start")
            });
            DestCheck {
                adaptive: input.adaptive.clone(),
                bbr,
                filter: Ewma::new(&self.config.filter),
                sampler: Sampler::new(),
                last_counters: None,
                report: DestReport::default(),
            }
        };
        let stale = self
            .dests
            .get(input.dest)
            .is_some_and(|d| d.adaptive != *input.adaptive);
        if stale {
            // Changed parameters (or another cgroup): a new check, a new window.
            self.dests.remove(input.dest);
        }
        if !self.dests.contains_key(input.dest) {
            let check = fresh();
            self.dests.insert(input.dest.clone(), check);
        }
        self.dests.get_mut(input.dest).expect("inserted above")
    }

    /// Updates the node's signals; returns the factor the node's concurrency must shrink by
    /// when the system rule finds it overloaded.
    fn observe_node(&mut self, now_ns: u64, node: NodeInput, system: &SystemRule) -> Option<f64> {
        if let Some(s) = node
            .reading
            .and_then(|r| self.node_sampler.observe(now_ns, r))
        {
            self.node_filter.update(now_ns, s.utilisation);
        }
        let cpu = self.node_filter.value();
        let mut factor: Option<f64> = None;
        let mut over = |bound: f64, value: f64| {
            if value > bound {
                let f = bound / value;
                factor = Some(factor.map_or(f, |g: f64| g.min(f)));
            }
        };
        if let (Some(max), Some(load)) = (system.max_load1, node.load1) {
            over(max, load);
        }
        if let (Some(max), Some(cpu)) = (system.max_cpu, cpu) {
            over(max.get(), cpu);
        }
        self.node = NodeReport {
            cpu,
            load1: node.load1,
            overloaded: factor.is_some(),
        };
        factor
    }

    /// Under node overload: the armed destinations' capacity, cut by `factor`, shared by
    /// criticality. A destination's limit never rises above its own `maxInflight` and never
    /// falls below 1.
    fn share_by_priority(
        &mut self,
        inputs: &[DestInput<'_>],
        wants: &[(Criticality, Option<u64>)],
        factor: f64,
    ) {
        let armed: Vec<(usize, Demand)> = wants
            .iter()
            .enumerate()
            .filter_map(|(i, (class, limit))| {
                limit.map(|want| {
                    (
                        i,
                        Demand {
                            class: *class,
                            want,
                        },
                    )
                })
            })
            .collect();
        let total: u64 = armed.iter().map(|(_, d)| d.want).sum();
        let capacity = (total as f64 * factor).floor() as u64;
        let demands: Vec<Demand> = armed.iter().map(|(_, d)| *d).collect();
        let grants = allocate(&self.config.priority, capacity, &demands);
        for ((i, demand), grant) in armed.iter().zip(grants) {
            if let Some(check) = self.dests.get_mut(inputs[*i].dest) {
                check.report.limit = Some(grant.clamp(1, demand.want));
            }
        }
    }
}

#[cfg(test)]
#[path = "controller_tests.rs"]
mod tests;
