//! The settings of overload protection, as they appear in the daemon's configuration file. Every
//! field has a default, so an empty table turns protection on with the reference behaviour
//! (kratos' window and threshold, with a faster CPU filter).

use serde::{Deserialize, Serialize};

use crate::bbr::BbrConfig;
use crate::filter::FilterConfig;
use crate::priority::PriorityConfig;

/// A setting out of range. Says which field, its value and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{field} = {value}: {reason}")]
    Invalid {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
}

/// All overload-protection settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OverloadConfig {
    pub sampling: SamplingConfig,
    pub filter: FilterConfig,
    pub bbr: BbrConfig,
    pub priority: PriorityConfig,
}

/// How often the daemon reads the CPU signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingConfig {
    /// Interval between two CPU readings, ms. 250 ms (kratos v1's rate) leaves room for three
    /// samples inside the 1 s reaction target; reading a few cgroup files costs microseconds.
    pub interval_ms: u64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig { interval_ms: 250 }
    }
}

impl OverloadConfig {
    /// Checks every section; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(10..=500).contains(&self.sampling.interval_ms) {
            return Err(ConfigError::Invalid {
                field: "sampling.interval_ms",
                value: self.sampling.interval_ms.to_string(),
                reason: "must be 10-500: the kernel drops a shed limit not refreshed within 1 s, \
                         and slower sampling could not react within a second",
            });
        }
        self.filter.validate()?;
        self.bbr.validate()?;
        self.priority.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_the_defaults_and_valid() {
        let c: OverloadConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, OverloadConfig::default());
        c.validate().unwrap();
        assert_eq!(c.sampling.interval_ms, 250);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = serde_json::from_str::<OverloadConfig>(r#"{"bbr": {"windw_ms": 1}}"#).unwrap_err();
        assert!(e.to_string().contains("windw_ms"), "{e}");
    }

    #[test]
    fn sampling_out_of_range_is_named() {
        let mut c = OverloadConfig::default();
        c.sampling.interval_ms = 5_000;
        let e = c.validate().unwrap_err();
        assert!(
            e.to_string().starts_with("sampling.interval_ms = 5000"),
            "{e}"
        );
    }
}
