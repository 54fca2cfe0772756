//! Reading the outcome of many connection attempts, and watching a value while work runs.

use std::io::ErrorKind;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::traffic::ConnectAttempt;

/// Connection attempts sorted by outcome, each with its connect latency.
#[derive(Debug, Default)]
pub struct Outcomes {
    /// Latencies of the attempts that connected.
    pub ok: Vec<Duration>,
    /// Latencies of the attempts refused with ECONNREFUSED.
    pub refused: Vec<Duration>,
    /// Latencies of the attempts that ran into their connect timeout.
    pub timed_out: Vec<Duration>,
    /// Any other failure, described.
    pub other: Vec<String>,
}

impl Outcomes {
    pub fn of<'a>(attempts: impl IntoIterator<Item = &'a ConnectAttempt>) -> Self {
        let mut o = Self::default();
        for a in attempts {
            match &a.result {
                Ok(_) => o.ok.push(a.elapsed),
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => o.refused.push(a.elapsed),
                Err(e) if e.kind() == ErrorKind::TimedOut => o.timed_out.push(a.elapsed),
                Err(e) => o
                    .other
                    .push(format!("{e} ({:?}) after {:?}", e.kind(), a.elapsed)),
            }
        }
        o
    }

    pub fn total(&self) -> usize {
        self.ok.len() + self.refused.len() + self.timed_out.len() + self.other.len()
    }

    /// One line: counts, and the median and largest latency of each outcome.
    pub fn summary(&self) -> String {
        let part = |name: &str, d: &[Duration]| {
            if d.is_empty() {
                format!("0 {name}")
            } else {
                format!(
                    "{} {name} (p50 {:?}, max {:?})",
                    d.len(),
                    percentile(d, 50).expect("not empty"),
                    d.iter().max().expect("not empty")
                )
            }
        };
        let mut line = [
            part("succeeded", &self.ok),
            part("refused", &self.refused),
            part("timed out", &self.timed_out),
        ]
        .join(", ");
        if !self.other.is_empty() {
            line.push_str(&format!(", {} other: {:?}", self.other.len(), self.other));
        }
        line
    }
}

/// The `p`-th percentile (nearest rank) of `values`; None if empty.
pub fn percentile(values: &[Duration], p: usize) -> Option<Duration> {
    let mut sorted = values.to_vec();
    sorted.sort();
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

/// How long a refusal in reject mode may take at most (the enforcement issue's bound).
pub const REJECT_LATENCY: Duration = Duration::from_millis(50);

/// Asserts that exactly `ok` attempts connected and every other one was refused at once with
/// ECONNREFUSED (within [`REJECT_LATENCY`]); prints the summary under `label`.
#[track_caller]
pub fn expect_exactly(label: &str, attempts: &[ConnectAttempt], ok: usize) -> Outcomes {
    let o = Outcomes::of(attempts);
    println!("{label}: {}", o.summary());
    assert_eq!(o.ok.len(), ok, "{label}: {}", o.summary());
    assert_eq!(
        o.refused.len(),
        attempts.len() - ok,
        "{label}: {}",
        o.summary()
    );
    let slowest = o.refused.iter().max().copied().unwrap_or_default();
    assert!(
        slowest < REJECT_LATENCY,
        "{label}: a refusal took {slowest:?}"
    );
    o
}

/// Runs `work` on the calling thread while another thread evaluates `sample` every `every`
/// (also once before and once after `work`). Returns what `work` returned, the largest sample
/// and the number of samples taken.
pub fn peak_while<R>(
    every: Duration,
    sample: impl Fn() -> u64 + Sync,
    work: impl FnOnce() -> R,
) -> (R, u64, usize) {
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let (mut peak, mut samples) = (sample(), 1);
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(every);
                peak = peak.max(sample());
                samples += 1;
            }
            (peak.max(sample()), samples + 1)
        });
        // The sampler stops even if `work` panics: the flag is set before the panic resumes.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
        stop.store(true, Ordering::SeqCst);
        let (peak, samples) = sampler
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        match result {
            Ok(r) => (r, peak, samples),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn percentile_is_nearest_rank() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|&m| Duration::from_millis(m))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            percentile(&ms(&[5, 1, 3]), 50),
            Some(Duration::from_millis(3))
        );
        assert_eq!(
            percentile(&ms(&[4, 1, 3, 2]), 50),
            Some(Duration::from_millis(2))
        );
        assert_eq!(percentile(&ms(&[7]), 99), Some(Duration::from_millis(7)));
        assert_eq!(percentile(&[], 50), None);
    }

    #[test]
    fn outcomes_sort_attempts_by_error_kind() {
        let attempt = |kind: Option<ErrorKind>| ConnectAttempt {
            result: Err(io::Error::from(kind.unwrap_or(ErrorKind::Other))),
            elapsed: Duration::from_millis(1),
        };
        let attempts = [
            attempt(Some(ErrorKind::ConnectionRefused)),
            attempt(Some(ErrorKind::ConnectionRefused)),
            attempt(Some(ErrorKind::TimedOut)),
            attempt(None),
        ];
        let o = Outcomes::of(&attempts);
        assert_eq!(
            (
                o.ok.len(),
                o.refused.len(),
                o.timed_out.len(),
                o.other.len()
            ),
            (0, 2, 1, 1)
        );
        assert_eq!(o.total(), 4);
    }

    #[test]
    fn peak_while_sees_the_peak() {
        let value = AtomicU64::new(0);
        let ((), peak, samples) = peak_while(
            Duration::from_millis(1),
            || value.load(Ordering::SeqCst),
            || {
                value.store(7, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(30));
                value.store(2, Ordering::SeqCst);
            },
        );
        assert_eq!(peak, 7);
        assert!(samples >= 3, "{samples} samples");
    }
}
