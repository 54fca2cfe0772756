//! Smoothing of the CPU samples, fast enough to protect.
//!
//! Raw 250 ms samples are noisy (a GC pause, a cron job), and shedding on one of them would
//! refuse connections for nothing; but go-kratos' smoothing, `v = 0.95 v + 0.05 x` every 500 ms,
//! is an exponential average with a time constant of `0.5 / -ln 0.95` = 9.7 s (half-life 6.8 s):
//! after CPU jumps from 20% to 100% it takes 14 s to cross 80%, long after the service fell over.
//! The target here is to start shedding within 1 s of an overload and to stop within 2 s after
//! it ends.
//!
//! The filter is an exponential moving average whose time constant `tau` is given in seconds,
//! not in samples: each update uses `alpha = 1 - exp(-dt / tau)` with the real time `dt` since
//! the previous one. A late tick (the daemon was descheduled) then weighs more, a double tick
//! less, and changing the sampling interval does not change the reaction time. Its step response
//! is `1 - exp(-t / tau)` of the step; with the default `tau` = 0.5 s and 250 ms sampling:
//!
//! | step                | crosses 0.8 after (analytic)      | measured at 250 ms ticks |
//! |---------------------|-----------------------------------|--------------------------|
//! | 0.2 -> 1.0 (attack) | `tau ln 4`   = 0.69 s             | 0.75 s (3rd sample)      |
//! | 1.0 -> 0.2 (release)| `tau ln 4/3` = 0.14 s             | 0.25 s (1st sample)      |
//! | kratos, 0.2 -> 1.0  | 27.03 ticks of 500 ms             | 14.0 s (28th tick)       |
//!
//! (`filter_tests.rs` measures and prints these.) Release adds the BBR cool-down (1 s) before
//! shedding stops: 1.25 s in all, within the 2 s target. A symmetric filter was kept over an
//! asymmetric attack/release pair because the cool-down already holds the decision after a dip;
//! slowing the release as well would only delay recovery.

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// How much the CPU signal is smoothed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilterConfig {
    /// Time constant of the average, ms: a step reaches 63% of its height after `tau_ms` and
    /// 75% after `1.39 x tau_ms`. 0 disables smoothing.
    pub tau_ms: u64,
}

impl Default for FilterConfig {
    fn default() -> Self {
        FilterConfig { tau_ms: 500 }
    }
}

impl FilterConfig {
    /// Keeps the reaction within the 1 s target's order of magnitude: above 5 s the filter
    /// would be as slow as the one it replaces.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.tau_ms > 5_000 {
            return Err(ConfigError::Invalid {
                field: "filter.tau_ms",
                value: self.tau_ms.to_string(),
                reason: "must be at most 5000 (5 s); shedding must start within about a second",
            });
        }
        Ok(())
    }
}

/// An exponential moving average over irregularly spaced samples, with an injected clock
/// (monotonic nanoseconds).
#[derive(Clone, Debug, PartialEq)]
pub struct Ewma {
    tau_ns: u64,
    state: Option<(u64, f64)>,
}

impl Ewma {
    pub fn new(config: &FilterConfig) -> Ewma {
        Ewma {
            tau_ns: config.tau_ms.saturating_mul(1_000_000),
            state: None,
        }
    }

    /// The weight of a new sample taken `dt_ns` after the previous one.
    pub fn alpha(tau_ns: u64, dt_ns: u64) -> f64 {
        if tau_ns == 0 {
            1.0
        } else {
            1.0 - (-(dt_ns as f64) / tau_ns as f64).exp()
        }
    }

    /// Adds the sample taken at `now_ns` and returns the smoothed value.
    ///
    /// The first sample is taken as is: starting from 0 would hide an overload that exists when
    /// the daemon starts. A non-finite sample is ignored, and so is the time of a sample that is
    /// not later than the previous one (its weight is then 0).
    pub fn update(&mut self, now_ns: u64, sample: f64) -> f64 {
        if !sample.is_finite() {
            return self.value().unwrap_or(0.0);
        }
        let value = match self.state {
            None => sample,
            Some((at, value)) => {
                let alpha = Self::alpha(self.tau_ns, now_ns.saturating_sub(at));
                value + alpha * (sample - value)
            }
        };
        let at = self.state.map_or(now_ns, |(at, _)| at.max(now_ns));
        self.state = Some((at, value));
        value
    }

    /// The smoothed value, `None` before the first sample.
    pub fn value(&self) -> Option<f64> {
        self.state.map(|(_, v)| v)
    }
}

#[cfg(test)]
#[path = "filter_tests.rs"]
mod tests;
