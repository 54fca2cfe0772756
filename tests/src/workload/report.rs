//! What a stopped [`Flood`](super::Flood) made: every request, counted and summarized.

use std::time::Duration;

use super::request::{Outcome, Request};
use crate::measure::percentile;

/// Every request of a stopped flood, sorted by start.
#[derive(Debug)]
pub struct FloodReport {
    pub requests: Vec<Request>,
    /// From the flood's start to its stop.
    pub duration: Duration,
}

impl FloodReport {
    pub fn count(&self, outcome: &Outcome) -> usize {
        self.requests
            .iter()
            .filter(|r| &r.outcome == outcome)
            .count()
    }

    pub fn failures(&self) -> Vec<String> {
        self.requests
            .iter()
            .filter_map(|r| match &r.outcome {
                Outcome::Failed(why) => Some(why.clone()),
                _ => None,
            })
            .collect()
    }

    /// Completion times of the requests that completed and started within `[from, to)`.
    pub fn completion_times(&self, from: Duration, to: Duration) -> Vec<Duration> {
        self.requests
            .iter()
            .filter(|r| r.completed() && r.at >= from && r.at < to)
            .map(|r| r.elapsed)
            .collect()
    }

    /// Wall times of the requests that started within `[from, to)` and completed or were
    /// abandoned at the flood's stop: for an abandoned one, a lower bound of its completion time.
    pub fn lower_bounds(&self, from: Duration, to: Duration) -> Vec<Duration> {
        self.requests
            .iter()
            .filter(|r| r.at >= from && r.at < to)
            .filter(|r| matches!(r.outcome, Outcome::Completed | Outcome::Abandoned))
            .map(|r| r.elapsed)
            .collect()
    }

    /// When the first refusal came, from the flood's start.
    pub fn first_refusal(&self) -> Option<Duration> {
        self.requests
            .iter()
            .filter(|r| r.outcome == Outcome::Refused)
            .map(Request::done_at)
            .min()
    }

    /// One line: counts, and completion times of the completed requests.
    pub fn summary(&self) -> String {
        let all = self.completion_times(Duration::ZERO, Duration::MAX);
        format!(
            "{} requests in {:.1} s: {} completed ({}), {} refused, {} timed out, {} abandoned, {} failed",
            self.requests.len(),
            self.duration.as_secs_f64(),
            all.len(),
            latency_summary(&all),
            self.count(&Outcome::Refused),
            self.count(&Outcome::TimedOut),
            self.count(&Outcome::Abandoned),
            self.failures().len(),
        )
    }
}

/// `p50 X ms, p90 Y ms, max Z ms` of `times` (or `none`).
pub fn latency_summary(times: &[Duration]) -> String {
    if times.is_empty() {
        return "none".into();
    }
    let ms = |d: Option<Duration>| d.unwrap_or_default().as_secs_f64() * 1000.0;
    format!(
        "p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms",
        ms(percentile(times, 50)),
        ms(percentile(times, 90)),
        ms(times.iter().max().copied())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_count_and_select_by_start() {
        let r = |at_ms: u64, ms: u64, outcome: Outcome| Request {
            at: Duration::from_millis(at_ms),
            elapsed: Duration::from_millis(ms),
            connect: None,
            outcome,
        };
        let report = FloodReport {
            requests: vec![
                r(0, 100, Outcome::Completed),
                r(10, 1, Outcome::Refused),
                r(500, 300, Outcome::Completed),
                r(600, 2, Outcome::Refused),
                r(700, 3000, Outcome::TimedOut),
                r(800, 50, Outcome::Abandoned),
            ],
            duration: Duration::from_secs(4),
        };
        assert_eq!(report.count(&Outcome::Completed), 2);
        assert_eq!(report.first_refusal(), Some(Duration::from_millis(11)));
        assert_eq!(
            report.completion_times(Duration::from_millis(100), Duration::from_secs(1)),
            [Duration::from_millis(300)]
        );
        assert_eq!(
            report.lower_bounds(Duration::ZERO, Duration::from_secs(1)),
            [100, 300, 50].map(Duration::from_millis)
        );
        assert!(
            report.summary().contains("2 completed"),
            "{}",
            report.summary()
        );
        assert_eq!(latency_summary(&[]), "none");
    }
}
