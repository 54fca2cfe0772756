//! The per-destination check, after go-kratos BBR (itself after Sentinel's adaptive system rule
//! and TCP BBR), with connections in place of requests.
//!
//! Little's law: a pipe that completes `maxPass` connections per bucket, each living at least
//! `minRt` ms, holds `maxPass x minRt x buckets_per_second / 1000` connections when it runs at
//! its best. Past that, extra connections only queue. So a new connection is shed when the
//! workload's CPU is above the threshold *and* more connections are established than that.
//!
//! Differences from kratos, and why:
//! - **Deltas are spread over time.** The daemon reads the kernel's counters every tick (250 ms),
//!   longer than a bucket (100 ms). Putting a whole delta into one bucket would multiply
//!   `maxPass` by 2.5 and leave empty buckets; each delta is split over the buckets its interval
//!   covers, in proportion to the overlap.
//! - **No data, no shedding.** kratos' floors (`maxPass` 1, `minRt` 1 ms) let a cold service be
//!   shed down to one request in flight. Here a window without one completed connection gives
//!   no `maxInflight` at all, and the check never sheds: nothing is known about the pipe yet.
//! - **A floor.** `maxInflight` is at least `min_inflight` (default 4), so a thin window (a
//!   single short-lived health-check connection sets `minRt`) cannot shrink a service below a
//!   health check plus a client's minimal pool. Floods are hundreds of connections; 4 does not
//!   let one through.
//! - **Cool-down from the last overloaded sample**, not from the first shed as in kratos (whose
//!   hold has already expired when a long overload ends). And it also holds when the kernel
//!   enforces the limit: established connections then never exceed it, so "last shed" would
//!   never be seen. The hold only keeps the check armed; it is never extended while the CPU is
//!   below the threshold, so shedding stops at most `cool_down_ms` after the overload ends.

use serde::{Deserialize, Serialize};

use crate::ConfigError;

const MS: u64 = 1_000_000;

/// Settings of the per-destination check.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BbrConfig {
    /// Length of the statistics window, ms (kratos: 10 s).
    pub window_ms: u64,
    /// Buckets in the window (kratos: 100, so 100 ms each).
    pub buckets: u32,
    /// Filtered CPU, as a fraction of the allowed CPUs, above which the check sheds (kratos: 800
    /// per mille).
    pub cpu_threshold: f64,
    /// How long the check stays armed after the CPU was last above the threshold, ms.
    pub cool_down_ms: u64,
    /// The least `maxInflight` can be once the window has data.
    pub min_inflight: u64,
}

impl Default for BbrConfig {
    fn default() -> Self {
        BbrConfig {
            window_ms: 10_000,
            buckets: 100,
            cpu_threshold: 0.8,
            cool_down_ms: 1_000,
            min_inflight: 4,
        }
    }
}

impl BbrConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, value: String, reason| {
            Err(ConfigError::Invalid {
                field,
                value,
                reason,
            })
        };
        if self.buckets < 2 {
            return invalid(
                "bbr.buckets",
                self.buckets.to_string(),
                "must be at least 2 (the current bucket is never used)",
            );
        }
        if self.window_ms / u64::from(self.buckets) == 0 {
            return invalid(
                "bbr.window_ms",
                self.window_ms.to_string(),
                "must give buckets of at least 1 ms (window_ms >= buckets)",
            );
        }
        if !(self.cpu_threshold > 0.0 && self.cpu_threshold <= 1.0) {
            return invalid(
                "bbr.cpu_threshold",
                self.cpu_threshold.to_string(),
                "must be in (0, 1]: a fraction of the allowed CPUs",
            );
        }
        if self.min_inflight == 0 {
            return invalid(
                "bbr.min_inflight",
                "0".to_owned(),
                "must be at least 1: a service is never shed to zero",
            );
        }
        Ok(())
    }
}

/// What the check decided at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// A new connection arriving now should be refused.
    pub shed: bool,
    /// The limit the kernel should enforce now (`Some(maxInflight)` while the check is armed),
    /// so a flood between two ticks is refused at once; `None` = no overload limit.
    pub limit: Option<u64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Bucket {
    /// Absolute bucket number (time / bucket length); tells a stale slot from a current one.
    id: u64,
    /// Connections completed (fractional once a delta is spread over buckets).
    pass: f64,
    /// Sum of their lifetimes, ns.
    lifetime_ns: f64,
}

/// State of one protected destination. Time is passed in as monotonic nanoseconds.
#[derive(Clone, Debug)]
pub struct Bbr {
    config: BbrConfig,
    bucket_ns: u64,
    ring: Vec<Bucket>,
    last_record: Option<u64>,
    last_overload: Option<u64>,
}

impl Bbr {
    pub fn new(config: BbrConfig) -> Result<Bbr, ConfigError> {
        config.validate()?;
        let bucket_ns = config.window_ms * MS / u64::from(config.buckets);
        let ring = vec![
            Bucket {
                id: u64::MAX,
                ..Bucket::default()
            };
            config.buckets as usize
        ];
        Ok(Bbr {
            config,
            bucket_ns,
            ring,
            last_record: None,
            last_overload: None,
        })
    }

    pub fn config(&self) -> &BbrConfig {
        &self.config
    }

    /// Adds the connections completed since the previous call: `completed` of them, whose
    /// lifetimes sum to `lifetime_ns`. The delta is spread over the time since the previous call
    /// (one bucket's length for the first call); what falls before the window is dropped.
    pub fn record(&mut self, now_ns: u64, completed: u64, lifetime_ns: u64) {
        let from = self
            .last_record
            .map_or(now_ns.saturating_sub(self.bucket_ns), |l| l.min(now_ns));
        self.last_record = Some(now_ns.max(self.last_record.unwrap_or(0)));
        if completed == 0 {
            return;
        }
        let (pass, life) = (completed as f64, lifetime_ns as f64);
        let span = now_ns - from;
        if span == 0 {
            self.add(now_ns / self.bucket_ns, pass, life);
            return;
        }
        let start = from.max(now_ns.saturating_sub(self.config.window_ms * MS));
        let mut id = start / self.bucket_ns;
        while id * self.bucket_ns < now_ns {
            let lo = start.max(id * self.bucket_ns);
            let hi = now_ns.min((id + 1) * self.bucket_ns);
            let share = (hi - lo) as f64 / span as f64;
            self.add(id, pass * share, life * share);
            id += 1;
        }
    }

    fn add(&mut self, id: u64, pass: f64, lifetime_ns: f64) {
        let len = self.ring.len() as u64;
        let slot = &mut self.ring[(id % len) as usize];
        if slot.id != id {
            *slot = Bucket {
                id,
                pass: 0.0,
                lifetime_ns: 0.0,
            };
        }
        slot.pass += pass;
        slot.lifetime_ns += lifetime_ns;
    }

    /// The complete buckets still inside the window at `now_ns` (the current one is partial and
    /// would understate `maxPass`, so it is left out, as kratos does).
    fn window(&self, now_ns: u64) -> impl Iterator<Item = &Bucket> {
        let current = now_ns / self.bucket_ns;
        let oldest = current.saturating_sub(self.ring.len() as u64 - 1);
        self.ring
            .iter()
            .filter(move |b| b.id >= oldest && b.id < current && b.pass > 0.0)
    }

    /// Most connections completed in one bucket of the window; `None` when none completed.
    pub fn max_pass(&self, now_ns: u64) -> Option<f64> {
        self.window(now_ns).map(|b| b.pass).reduce(f64::max)
    }

    /// Least mean lifetime of a bucket with completions, ms; `None` when none completed.
    pub fn min_rt_ms(&self, now_ns: u64) -> Option<f64> {
        self.window(now_ns)
            .map(|b| b.lifetime_ns / b.pass / MS as f64)
            .reduce(f64::min)
    }

    /// `maxPass x minRt x buckets_per_second / 1000`, rounded up, at least `min_inflight`;
    /// `None` while the window has no completed connection (never shed then).
    pub fn max_inflight(&self, now_ns: u64) -> Option<u64> {
        let (pass, rt) = (self.max_pass(now_ns)?, self.min_rt_ms(now_ns)?);
        let buckets_per_second = 1e9 / self.bucket_ns as f64;
        // Less a hair, so that 50.000000001 from float error stays 50.
        let raw = (pass * rt * buckets_per_second / 1000.0 - 1e-9).ceil();
        Some((raw.max(0.0) as u64).max(self.config.min_inflight))
    }

    /// The decision at `now_ns`, given the filtered CPU (fraction of the allowed CPUs) and the
    /// connections established now. Arms the check while the CPU is above the threshold and for
    /// `cool_down_ms` after; while armed, sheds when `inflight > maxInflight`.
    pub fn evaluate(&mut self, now_ns: u64, cpu: f64, inflight: u64) -> Verdict {
        let Some(max) = self.max_inflight(now_ns) else {
            return Verdict {
                shed: false,
                limit: None,
            };
        };
        if cpu > self.config.cpu_threshold {
            self.last_overload = Some(now_ns);
        }
        let armed = self
            .last_overload
            .is_some_and(|at| now_ns.saturating_sub(at) <= self.config.cool_down_ms * MS);
        if !armed {
            self.last_overload = None;
        }
        Verdict {
            shed: armed && inflight > max,
            limit: armed.then_some(max),
        }
    }

    /// Whether a new connection arriving now should be refused (see [`Bbr::evaluate`]).
    pub fn should_shed(&mut self, now_ns: u64, cpu: f64, inflight: u64) -> bool {
        self.evaluate(now_ns, cpu, inflight).shed
    }
}

#[cfg(test)]
#[path = "bbr_tests.rs"]
mod tests;
