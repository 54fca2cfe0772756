//! From cumulative counters to rates: the utilisation of the allowed CPUs between two readings,
//! and the share of enforcement periods that were throttled.

use super::cgroup::CpuReading;

/// Utilisation between two readings taken `elapsed_ns` apart, as a fraction of the CPUs the
/// workload may use (1.0 = using all of its quota, or all of the node without one).
///
/// `/proc/stat` counts its own capacity (idle ticks included), so the node's fraction is busy
/// over total ticks and does not depend on how punctually the sampler woke up; a cgroup counts
/// only usage, so its capacity is `elapsed x limit`.
///
/// Clamped to `0.0..=node_cpus / limit`: a counter that went backwards (the cgroup was
/// recreated) reads as idle rather than as a huge number, and no group can use more than the
/// whole node (with `cpu.cfs_burst_us` it may briefly exceed 1.0 of its quota, which is kept).
/// `None` when no time (or no tick) passed, since no rate exists then.
pub fn utilisation(prev: &CpuReading, cur: &CpuReading, elapsed_ns: u64) -> Option<f64> {
    let used = cur.usage_ns.saturating_sub(prev.usage_ns) as f64;
    let limit = cur.limit_cpus();
    let capacity = match (prev.capacity_ns, cur.capacity_ns) {
        (Some(a), Some(b)) => b.checked_sub(a)? as f64 / f64::from(cur.node_cpus.max(1)) * limit,
        _ => elapsed_ns as f64 * limit,
    };
    if capacity <= 0.0 {
        return None;
    }
    let ceiling = f64::from(cur.node_cpus.max(1)) / limit;
    Some((used / capacity).clamp(0.0, ceiling.max(1.0)))
}

/// One sample: the rates between the previous reading and this one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpuSample {
    /// See [`utilisation`].
    pub utilisation: f64,
    /// Of the enforcement periods in this interval, the fraction in which the group was
    /// throttled (0..=1); `None` without throttling counters or when no period passed.
    pub throttled_ratio: Option<f64>,
    /// Time spent throttled in this interval, ns.
    pub throttled_ns: Option<u64>,
    /// PSI `some avg10` at this reading, percent (already an average: passed through).
    pub pressure_some_avg10: Option<f64>,
}

/// Keeps the previous reading so the daemon can feed one reading per tick. Time is passed in
/// (monotonic nanoseconds), so tests need no clock.
#[derive(Clone, Debug, Default)]
pub struct Sampler {
    last: Option<(u64, CpuReading)>,
}

impl Sampler {
    pub fn new() -> Sampler {
        Sampler::default()
    }

    /// Takes a reading made at `now_ns`; returns the sample since the previous one (`None` for
    /// the first reading, or when no time passed since the previous one, which is then kept).
    pub fn observe(&mut self, now_ns: u64, reading: CpuReading) -> Option<CpuSample> {
        let Some((at, prev)) = self.last else {
            self.last = Some((now_ns, reading));
            return None;
        };
        let elapsed = now_ns.checked_sub(at).filter(|&e| e > 0)?;
        let utilisation = utilisation(&prev, &reading, elapsed);
        if utilisation.is_some() {
            self.last = Some((now_ns, reading));
        }
        let (throttled_ratio, throttled_ns) = match (prev.throttling, reading.throttling) {
            (Some(a), Some(b)) => {
                let periods = b.nr_periods.saturating_sub(a.nr_periods);
                let throttled = b.nr_throttled.saturating_sub(a.nr_throttled);
                let ratio = (periods > 0).then(|| (throttled as f64 / periods as f64).min(1.0));
                (ratio, Some(b.throttled_ns.saturating_sub(a.throttled_ns)))
            }
            _ => (None, None),
        };
        Some(CpuSample {
            utilisation: utilisation?,
            throttled_ratio,
            throttled_ns,
            pressure_some_avg10: reading.pressure_some_avg10,
        })
    }
}
