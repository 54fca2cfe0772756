//! The circuit-breaking part of a rule (`--breaker-*`, `[rules.breaker]`), as users write it,
//! and its kernel form. The state machine runs in the kernel (limiter-ebpf breaker.rs); see
//! docs/breaking.md.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use limiter_common::BreakerConfig;
use serde::{Deserialize, Serialize};

use crate::rules::adaptive::{Fraction, Span};

/// Defaults, after the references users know: Istio's baseEjectionTime (30 s), Envoy's
/// max_ejection_time (300 s) and interval (10 s), Sentinel's minRequestAmount (5), Istio's
/// maxEjectionPercent (10).
pub const DEFAULT_SLOW: Duration = Duration::from_secs(1);
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);
pub const DEFAULT_MIN_ATTEMPTS: u32 = 5;
pub const DEFAULT_OPEN: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_OPEN: Duration = Duration::from_secs(300);
pub const DEFAULT_PROBES: u32 = 1;
pub const DEFAULT_MAX_EJECTION_PERCENT: u32 = 10;

/// The SRE throttle's K (Kratos' `k`), kept in thousandths so rules compare exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Multiplier(u32);

impl Multiplier {
    pub fn milli(self) -> u32 {
        self.0
    }
}

impl TryFrom<f64> for Multiplier {
    type Error = String;

    fn try_from(k: f64) -> Result<Self, String> {
        if !(1.0..=10.0).contains(&k) {
            return Err(format!(
                "{k} is not a K from 1 to 10; Kratos and the Google SRE book use 1.5 to 2"
            ));
        }
        Ok(Multiplier((k * 1000.0).round() as u32))
    }
}

impl FromStr for Multiplier {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let k: f64 = s
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not a number; expected K such as 2"))?;
        Multiplier::try_from(k)
    }
}

impl fmt::Display for Multiplier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", f64::from(self.0) / 1000.0)
    }
}

impl Serialize for Multiplier {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(f64::from(self.0) / 1000.0)
    }
}

impl<'de> Deserialize<'de> for Multiplier {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Multiplier::try_from(f64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A rule's circuit breaker: at least one policy (consecutive failures, a failure or slow
/// ratio, the SRE throttle) and the timings they share. Unset fields take the defaults above.
/// The doc comments are the help of `limiter set`'s `--breaker-*` flags.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[command(next_help_heading = "Circuit breaking (client side, see docs/breaking.md)")]
#[serde(deny_unknown_fields)]
pub struct Breaker {
    /// Open the breaker after N consecutive failed connects (refused, timed out or reset;
    /// Istio's consecutiveErrors), e.g. 3.
    #[arg(
        id = "breaker_consecutive",
        long = "breaker-consecutive",
        value_name = "N"
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,

    /// Open when failed / attempted connects over the window reach this fraction (Sentinel's
    /// error ratio), e.g. 0.5.
    #[arg(
        id = "breaker_failure_ratio",
        long = "breaker-failure-ratio",
        value_name = "FRACTION"
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_ratio: Option<Fraction>,

    /// Open when slow handshakes (longer than --breaker-slow; timeouts too) reach this
    /// fraction of the attempts over the window (Sentinel's slow-call ratio), e.g. 0.5.
    #[arg(
        id = "breaker_slow_ratio",
        long = "breaker-slow-ratio",
        value_name = "FRACTION"
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_ratio: Option<Fraction>,

    /// A handshake longer than this is slow, e.g. 200ms. [default: 1s]
    #[arg(id = "breaker_slow", long = "breaker-slow", value_name = "DURATION")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow: Option<Span>,

    /// SRE adaptive throttle (Kratos): reject locally with probability
    /// max(0, (attempts - K x successes) / (attempts + 1)) over the window; K from 1 to 10,
    /// e.g. 2.
    #[arg(id = "breaker_sre", long = "breaker-sre", value_name = "K")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sre_k: Option<Multiplier>,

    /// Statistics window of the ratios and the throttle, e.g. 10s. [default: 10s]
    #[arg(
        id = "breaker_window",
        long = "breaker-window",
        value_name = "DURATION"
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Span>,

    /// Fewer attempts in the window never trip a ratio and never throttle, e.g. 20.
    /// [default: 5]
    #[arg(
        id = "breaker_min_attempts",
        long = "breaker-min-attempts",
        value_name = "N"
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_attempts: Option<u32>,

    /// How long the breaker stays open the first time (Istio's baseEjectionTime); the n-th
    /// ejection in a row lasts n times this, e.g. 30s. [default: 30s]
    #[arg(id = "breaker_open", long = "breaker-open", value_name = "DURATION")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open: Option<Span>,

    /// Longest open time (Envoy's max_ejection_time), e.g. 5m. [default: 5m]
    #[arg(
        id = "breaker_max_open",
        long = "breaker-max-open",
        value_name = "DURATION"
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_open: Option<Span>,

    /// Connections let through when half-open; the first outcome decides, e.g. 1.
    /// [default: 1]
    #[arg(id = "breaker_probes", long = "breaker-probes", value_name = "N")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<u32>,

    /// Most of a Service's endpoints ejected at once, in percent (Istio's
    /// maxEjectionPercent; at least one of two or more, never all below 100), e.g. 50.
    /// [default: 10]
    #[arg(
        id = "breaker_max_ejection",
        long = "breaker-max-ejection",
        value_name = "PERCENT"
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<u32>,
}

fn span_or(s: Option<Span>, default: Duration) -> Duration {
    s.map_or(default, |s| s.0)
}

fn within(name: &str, v: Duration, lo: Duration, hi: Duration) -> Result<(), String> {
    if (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(format!(
            "breaker-{name} {} must be from {} to {}",
            humantime::format_duration(v),
            humantime::format_duration(lo),
            humantime::format_duration(hi)
        ))
    }
}

impl Breaker {
    /// The policies of a breaker, as in the RULE column: `consecutive 3 open 30s`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(n) = self.consecutive_failures {
            parts.push(format!("consecutive {n}"));
        }
        if let Some(r) = self.failure_ratio {
            parts.push(format!("failure-ratio {r}"));
        }
        if let Some(r) = self.slow_ratio {
            parts.push(format!("slow-ratio {r}"));
        }
        if let Some(k) = self.sre_k {
            parts.push(format!("sre k {k}"));
        }
        let open = self.open.map_or(DEFAULT_OPEN, |o| o.0);
        parts.push(format!("open {}", humantime::format_duration(open)));
        parts.join(" ")
    }

    /// True when a policy is set (otherwise the breaker would never act).
    pub fn has_policy(&self) -> bool {
        self.consecutive_failures.is_some()
            || self.failure_ratio.is_some()
            || self.slow_ratio.is_some()
            || self.sre_k.is_some()
    }

    /// Checks the parameters; the message names the CLI flag.
    pub fn validate(&self) -> Result<(), String> {
        if !self.has_policy() {
            return Err(
                "a breaker needs a policy: breaker-consecutive, breaker-failure-ratio, \
                 breaker-slow-ratio or breaker-sre"
                    .to_owned(),
            );
        }
        if self.consecutive_failures == Some(0) {
            return Err("breaker-consecutive must be at least 1".to_owned());
        }
        if self.min_attempts == Some(0) {
            return Err("breaker-min-attempts must be at least 1".to_owned());
        }
        if let Some(p) = self.probes
            && !(1..=1000).contains(&p)
        {
            return Err(format!("breaker-probes {p} must be from 1 to 1000"));
        }
        if let Some(p) = self.max_ejection_percent
            && p > 100
        {
            return Err(format!(
                "breaker-max-ejection {p} must be a percentage, 0 to 100"
            ));
        }
        let second = Duration::from_secs(1);
        let (open, max_open) = (
            span_or(self.open, DEFAULT_OPEN),
            span_or(self.max_open, DEFAULT_MAX_OPEN),
        );
        within(
            "slow",
            span_or(self.slow, DEFAULT_SLOW),
            Duration::from_millis(1),
            60 * second,
        )?;
        within(
            "window",
            span_or(self.window, DEFAULT_WINDOW),
            second,
            3600 * second,
        )?;
        within("open", open, Duration::from_millis(100), 86_400 * second)?;
        within(
            "max-open",
            max_open,
            Duration::from_millis(100),
            86_400 * second,
        )?;
        if max_open < open {
            return Err(format!(
                "breaker-max-open {} cannot be shorter than breaker-open {}",
                humantime::format_duration(max_open),
                humantime::format_duration(open)
            ));
        }
        Ok(())
    }

    /// Most of `endpoints` breakers open at once: the percentage, at least one where there
    /// are two or more (as Envoy ejects one host whatever the percentage), never all unless
    /// it is 100 %; 0 % turns ejection of a Service's endpoints off (Istio's meaning).
    pub fn max_ejected(&self, endpoints: usize) -> u32 {
        let percent = self
            .max_ejection_percent
            .unwrap_or(DEFAULT_MAX_EJECTION_PERCENT) as usize;
        let mut n = endpoints * percent / 100;
        if percent > 0 && percent < 100 && endpoints >= 2 {
            n = n.clamp(1, endpoints - 1);
        }
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// The kernel form; `endpoints`: how many endpoints the Service the rule stands for has
    /// now (None: the rule is not a Service's, its endpoint breakers are not bounded).
    pub fn to_config(&self, endpoints: Option<usize>) -> BreakerConfig {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let ratio = |f: Option<Fraction>| f.map_or(0, |f| (f.get() * 10_000.0).round() as u32);
        BreakerConfig {
            consecutive_failures: self.consecutive_failures.unwrap_or(0),
            failure_ratio: ratio(self.failure_ratio),
            slow_ratio: ratio(self.slow_ratio),
            sre_k_milli: self.sre_k.map_or(0, Multiplier::milli),
            min_attempts: self.min_attempts.unwrap_or(DEFAULT_MIN_ATTEMPTS),
            probes: self.probes.unwrap_or(DEFAULT_PROBES),
            max_ejected: endpoints.map_or(u32::MAX, |n| self.max_ejected(n)),
            max_ejection_percent: self
                .max_ejection_percent
                .unwrap_or(DEFAULT_MAX_EJECTION_PERCENT),
            slow_ns: ns(span_or(self.slow, DEFAULT_SLOW)),
            window_ns: ns(span_or(self.window, DEFAULT_WINDOW)),
            open_ns: ns(span_or(self.open, DEFAULT_OPEN)),
            max_open_ns: ns(span_or(self.max_open, DEFAULT_MAX_OPEN)),
        }
    }

    /// The user form of a policy found in the kernel (a previous daemon's). Values equal to
    /// the defaults come back unset, as a user who relied on them wrote them.
    pub fn from_config(c: &BreakerConfig) -> Self {
        let nonzero = |v: u32| (v != 0).then_some(v);
        let ratio = |v: u32| nonzero(v).and_then(|v| Fraction::try_from(f64::from(v) / 1e4).ok());
        let span = |ns: u64, default: Duration| {
            let d = Duration::from_nanos(ns);
            (d != default).then_some(Span(d))
        };
        Breaker {
            consecutive_failures: nonzero(c.consecutive_failures),
            failure_ratio: ratio(c.failure_ratio),
            slow_ratio: ratio(c.slow_ratio),
            slow: span(c.slow_ns, DEFAULT_SLOW),
            sre_k: nonzero(c.sre_k_milli)
                .and_then(|k| Multiplier::try_from(f64::from(k) / 1000.0).ok()),
            window: span(c.window_ns, DEFAULT_WINDOW),
            min_attempts: Some(c.min_attempts).filter(|&m| m != DEFAULT_MIN_ATTEMPTS),
            open: span(c.open_ns, DEFAULT_OPEN),
            max_open: span(c.max_open_ns, DEFAULT_MAX_OPEN),
            probes: Some(c.probes).filter(|&p| p != DEFAULT_PROBES),
            max_ejection_percent: Some(c.max_ejection_percent)
                .filter(|&p| p != DEFAULT_MAX_EJECTION_PERCENT),
        }
    }
}

#[cfg(test)]
#[path = "breaker_tests.rs"]
mod tests;
