//! The node's load and CPU usage, from /proc/loadavg and /proc/stat, for the metrics.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use procfs::{Current as _, CurrentSI as _};

/// Shortest window over which the CPU usage is computed: two scrapes closer than this get the
/// same value rather than a ratio of a few ticks.
const MIN_WINDOW: Duration = Duration::from_secs(1);

/// Busy and total CPU ticks of every CPU together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuTicks {
    pub busy: u64,
    pub total: u64,
}

impl CpuTicks {
    fn read() -> Option<CpuTicks> {
        let t = procfs::KernelStats::current().ok()?.total;
        let idle = t.idle + t.iowait.unwrap_or(0);
        let total = t.user
            + t.nice
            + t.system
            + idle
            + t.irq.unwrap_or(0)
            + t.softirq.unwrap_or(0)
            + t.steal.unwrap_or(0);
        Some(CpuTicks {
            busy: total - idle,
            total,
        })
    }
}

/// Fraction of CPU time spent busy between two samples (0 to 1), None if no tick passed.
pub fn usage(before: CpuTicks, after: CpuTicks) -> Option<f64> {
    let total = after.total.checked_sub(before.total)?;
    let busy = after.busy.saturating_sub(before.busy);
    (total > 0).then(|| (busy as f64 / total as f64).clamp(0.0, 1.0))
}

/// CPU usage over the time since the previous scrape (at least [`MIN_WINDOW`]; since boot at
/// the first one), without a background sampler.
#[derive(Debug, Default)]
pub struct CpuUsage {
    last: Mutex<Option<(Instant, CpuTicks, Option<f64>)>>,
}

impl CpuUsage {
    pub fn sample(&self) -> Option<f64> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match *last {
            Some((at, _, ratio)) if now.duration_since(at) < MIN_WINDOW => ratio,
            previous => {
                let ticks = CpuTicks::read()?;
                let before = previous.map_or(CpuTicks { busy: 0, total: 0 }, |(_, t, _)| t);
                let ratio = usage(before, ticks);
                *last = Some((now, ticks, ratio));
                ratio
            }
        }
    }
}

/// 1, 5 and 15 minute load averages.
pub fn load() -> Option<[f64; 3]> {
    let l = procfs::LoadAverage::current().ok()?;
    // Through the decimal text, so 2.23 stays 2.23 and does not become 2.2300000190734863.
    let exact = |v: f32| v.to_string().parse().unwrap_or(f64::from(v));
    Some([exact(l.one), exact(l.five), exact(l.fifteen)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_the_busy_share_of_the_ticks_between_samples() {
        let a = CpuTicks {
            busy: 100,
            total: 1000,
        };
        let b = CpuTicks {
            busy: 130,
            total: 1100,
        };
        assert_eq!(usage(a, b), Some(0.3));
        assert_eq!(usage(a, a), None, "no tick passed");
        assert_eq!(usage(b, a), None, "counters went back");
    }

    #[test]
    fn reads_this_machine() {
        let [one, five, fifteen] = load().expect("/proc/loadavg");
        assert!(one >= 0.0 && five >= 0.0 && fifteen >= 0.0);
        let cpu = CpuUsage::default();
        let first = cpu.sample().expect("/proc/stat");
        assert!((0.0..=1.0).contains(&first), "{first}");
        assert_eq!(cpu.sample(), Some(first), "within a second: the same value");
    }
}
