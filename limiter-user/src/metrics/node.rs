//! The node's load and CPU usage, from /proc/loadavg and /proc/stat, for the metrics. The files
//! are read by limiter-overload's readers, the same the overload check uses, so the metrics and
//! the check mean the same thing by "busy".

use std::sync::Mutex;
use std::time::{Duration, Instant};

use limiter_overload::signals;

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
        let s = signals::read_proc_stat(signals::PROC_STAT.as_ref()).ok()?;
        Some(CpuTicks {
            busy: s.busy_ticks,
            total: s.total_ticks,
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
    let l = signals::read_loadavg(signals::PROC_LOADAVG.as_ref()).ok()?;
    Some([l.one, l.five, l.fifteen])
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
