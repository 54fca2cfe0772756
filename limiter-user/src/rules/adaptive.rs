//! The overload-protection part of a rule (`--adaptive`, `--priority`) and the node-wide system
//! rule, as users write them. The check itself lives in `limiter-overload`; the daemon's loop in
//! `overload/`. See docs/overload.md.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use limiter_overload::BbrConfig;
use serde::{Deserialize, Serialize};

/// A fraction in (0, 1], kept in ten-thousandths so rules compare exactly (a float field would
/// make `0.8` typed twice two different rules after arithmetic) and print as typed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fraction(u16);

impl Fraction {
    const SCALE: f64 = 10_000.0;

    pub fn get(self) -> f64 {
        f64::from(self.0) / Self::SCALE
    }
}

impl TryFrom<f64> for Fraction {
    type Error = String;

    fn try_from(v: f64) -> Result<Self, String> {
        if !(v > 0.0 && v <= 1.0) {
            return Err(format!("{v} is not a fraction in (0, 1]; e.g. 0.8 for 80%"));
        }
        Ok(Fraction((v * Self::SCALE).round().max(1.0) as u16))
    }
}

impl FromStr for Fraction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let v: f64 = s
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not a number; expected a fraction such as 0.8"))?;
        Fraction::try_from(v)
    }
}

impl fmt::Display for Fraction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.get())
    }
}

impl Serialize for Fraction {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.get())
    }
}

impl<'de> Deserialize<'de> for Fraction {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Fraction::try_from(f64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A duration written the human way (`10s`, `500ms`), in the CLI, the config and the JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span(pub Duration);

impl FromStr for Span {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        humantime::parse_duration(s.trim())
            .map(Span)
            .map_err(|e| format!("`{s}` is not a duration ({e}); expected e.g. 10s or 500ms"))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_duration(self.0).fmt(f)
    }
}

impl Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// `--adaptive` and its parameters; every field defaults to the reference behaviour (kratos'
/// window and threshold, our cool-down). An empty table (`adaptive = {}`) turns it on. The doc
/// comments are the flags' help in `limiter set`; the group makes every one of them need
/// `--adaptive`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[group(id = "adaptive_settings", multiple = true, requires = "adaptive")]
#[command(next_help_heading = "Overload protection")]
#[serde(deny_unknown_fields)]
pub struct Adaptive {
    /// Filtered CPU of the workload, as a fraction of what it may use (its cgroup quota),
    /// above which --adaptive sheds, e.g. 0.8. [default: 0.8]
    #[arg(long, value_name = "FRACTION")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_threshold: Option<Fraction>,

    /// Window of completed connections that maxPass and minRt come from, e.g. 10s.
    /// [default: 10s]
    #[arg(long, value_name = "DURATION")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Span>,

    /// Buckets in the window (2-1000), e.g. 100. [default: 100]
    #[arg(long, value_name = "N")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buckets: Option<u32>,

    /// How long shedding stays armed after the CPU was last above the threshold, e.g. 1s.
    /// [default: 1s]
    #[arg(long, value_name = "DURATION")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<Span>,

    /// The workload's cgroup as /proc/PID/cgroup prints it, e.g. /kubepods/burstable/pod12.
    /// [default: the cgroup of the process listening on DEST on this node, else the node]
    #[arg(long, value_name = "CGROUP")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_cgroup: Option<String>,
}

impl Adaptive {
    /// The check's settings: the rule's own, else the daemon's defaults (`base`).
    pub fn bbr_config(&self, base: &BbrConfig) -> BbrConfig {
        BbrConfig {
            window_ms: self
                .window
                .map_or(base.window_ms, |w| w.0.as_millis() as u64),
            buckets: self.buckets.unwrap_or(base.buckets),
            cpu_threshold: self.cpu_threshold.map_or(base.cpu_threshold, Fraction::get),
            cool_down_ms: self
                .cooldown
                .map_or(base.cool_down_ms, |c| c.0.as_millis() as u64),
            min_inflight: base.min_inflight,
        }
    }

    /// Checks the parameters as the check itself would; the message names the CLI flag.
    pub fn validate(&self) -> Result<(), String> {
        let cfg = self.bbr_config(&BbrConfig::default());
        if let Some(c) = &self.workload_cgroup
            && (!c.starts_with('/') || c.split('/').any(|p| p == ".."))
        {
            return Err(format!(
                "workload-cgroup `{c}` must be a cgroup path as /proc/PID/cgroup prints it, \
                 starting with / and without .., e.g. /kubepods/burstable/pod1234"
            ));
        }
        if let Some(w) = self.window
            && !(Duration::from_secs(1)..=Duration::from_secs(600)).contains(&w.0)
        {
            return Err(format!("window {w} must be from 1s to 10m"));
        }
        if let Some(c) = self.cooldown
            && c.0 > Duration::from_secs(60)
        {
            return Err(format!("cooldown {c} must be at most 1m"));
        }
        if let Some(b) = self.buckets
            && !(2..=1000).contains(&b)
        {
            return Err(format!("buckets {b} must be from 2 to 1000"));
        }
        cfg.validate().map_err(|e| e.to_string())
    }
}

/// The node-wide system rule (after Sentinel's): when the node's 1-minute load or its filtered
/// CPU is above these, every adaptive destination's check is armed and the node's capacity is
/// shared by priority.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemRule {
    /// 1-minute load average above which the node is overloaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_load1: Option<f64>,
    /// Filtered node CPU (fraction of all CPUs) above which the node is overloaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cpu: Option<Fraction>,
}

// Validated values are finite (never NaN), so equality is an equivalence.
impl Eq for SystemRule {}

impl SystemRule {
    pub fn is_empty(&self) -> bool {
        self.max_load1.is_none() && self.max_cpu.is_none()
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.is_empty() {
            return Err("a system rule needs max-load1, max-cpu or both".to_owned());
        }
        match self.max_load1 {
            Some(l) if !(l > 0.0 && l.is_finite()) => {
                Err(format!("max-load1 {l} must be a positive number, e.g. 8"))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
#[path = "adaptive_tests.rs"]
mod tests;
