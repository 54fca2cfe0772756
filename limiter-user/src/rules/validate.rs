//! Checks of a rule that the types cannot express. Every input path (the CLI, the control
//! socket, the config file) runs the same checks, so a rule the daemon holds is always valid.

use crate::rules::spec::{Mode, RuleSpec, Side};

/// Why a rule is refused. Messages use the CLI's flag names, which the config file's field
/// names mirror (`max-connections` / `max_connections`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuleError {
    #[error("max-connections must be at least 1")]
    MaxConnectionsZero,
    #[error("syn-rate must be at least 1 new connection per second")]
    SynRateZero,
    #[error("syn-burst must be at least 1")]
    SynBurstZero,
    #[error("syn-burst needs syn-rate: the burst is the depth of the syn-rate token bucket")]
    BurstWithoutRate,
    #[error("per-source must be at least 1")]
    PerSourceZero,
    #[error("per-source ({per_source}) cannot exceed max-connections ({max_connections})")]
    PerSourceAboveMax {
        per_source: u32,
        max_connections: u32,
    },
    #[error("adaptive: {0}")]
    Adaptive(String),
    #[error("priority needs adaptive: it orders the shedding of adaptive destinations")]
    PriorityWithoutAdaptive,
    #[error("{0}")]
    Breaker(String),
    #[error(
        "a breaker acts on the connections local processes open (side client or both): with \
         side server it would never act"
    )]
    BreakerServerSide,
    #[error(
        "a breaker fails connects at once; mode drop makes callers retry their SYNs instead: \
         use mode reject with a breaker"
    )]
    BreakerWithDrop,
}

impl RuleError {
    /// The field of the rule (as the config file and the JSON name it) that is wrong.
    pub fn field(&self) -> &'static str {
        match self {
            RuleError::MaxConnectionsZero => "max_connections",
            RuleError::SynRateZero => "syn_rate",
            RuleError::SynBurstZero | RuleError::BurstWithoutRate => "syn_burst",
            RuleError::PerSourceZero | RuleError::PerSourceAboveMax { .. } => "per_source",
            RuleError::Adaptive(_) => "adaptive",
            RuleError::PriorityWithoutAdaptive => "priority",
            RuleError::Breaker(_) => "breaker",
            RuleError::BreakerServerSide => "side",
            RuleError::BreakerWithDrop => "mode",
        }
    }
}

/// Checks one rule on its own (duplicates across rules are the caller's concern).
pub fn validate(rule: &RuleSpec) -> Result<(), RuleError> {
    if rule.max_connections == Some(0) {
        return Err(RuleError::MaxConnectionsZero);
    }
    if rule.syn_rate == Some(0) {
        return Err(RuleError::SynRateZero);
    }
    match (rule.syn_rate, rule.syn_burst) {
        (_, Some(0)) => return Err(RuleError::SynBurstZero),
        (None, Some(_)) => return Err(RuleError::BurstWithoutRate),
        _ => {}
    }
    if rule.per_source == Some(0) {
        return Err(RuleError::PerSourceZero);
    }
    if let (Some(per_source), Some(max_connections)) = (rule.per_source, rule.max_connections)
        && per_source > max_connections
    {
        return Err(RuleError::PerSourceAboveMax {
            per_source,
            max_connections,
        });
    }
    if let Some(adaptive) = &rule.adaptive {
        adaptive.validate().map_err(RuleError::Adaptive)?;
    }
    if rule.priority.is_some() && rule.adaptive.is_none() {
        return Err(RuleError::PriorityWithoutAdaptive);
    }
    if let Some(breaker) = &rule.breaker {
        breaker.validate().map_err(RuleError::Breaker)?;
        if rule.side == Side::Server {
            return Err(RuleError::BreakerServerSide);
        }
        if rule.mode == Mode::Drop {
            return Err(RuleError::BreakerWithDrop);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> RuleSpec {
        RuleSpec {
            destination: "10.0.0.2:8080".parse().unwrap(),
            max_connections: Some(5),
            mode: Default::default(),
            side: Default::default(),
            syn_rate: None,
            syn_burst: None,
            per_source: None,
            dry_run: false,
            adaptive: None,
            breaker: None,
            priority: None,
            derived: false,
        }
    }

    #[test]
    fn accepts_sensible_rules() {
        validate(&rule()).unwrap();
        let accounting_only = RuleSpec {
            max_connections: None,
            ..rule()
        };
        validate(&accounting_only).unwrap();
        let full = RuleSpec {
            syn_rate: Some(100),
            syn_burst: Some(200),
            per_source: Some(5),
            ..rule()
        };
        validate(&full).unwrap();
    }

    #[test]
    fn refuses_each_inconsistency() {
        let cases = [
            (
                RuleSpec {
                    max_connections: Some(0),
                    ..rule()
                },
                "max-connections must be at least 1",
            ),
            (
                RuleSpec {
                    syn_rate: Some(0),
                    ..rule()
                },
                "syn-rate must be at least 1 new connection per second",
            ),
            (
                RuleSpec {
                    syn_rate: Some(10),
                    syn_burst: Some(0),
                    ..rule()
                },
                "syn-burst must be at least 1",
            ),
            (
                RuleSpec {
                    syn_burst: Some(10),
                    ..rule()
                },
                "syn-burst needs syn-rate: the burst is the depth of the syn-rate token bucket",
            ),
            (
                RuleSpec {
                    per_source: Some(0),
                    ..rule()
                },
                "per-source must be at least 1",
            ),
            (
                RuleSpec {
                    per_source: Some(6),
                    ..rule()
                },
                "per-source (6) cannot exceed max-connections (5)",
            ),
        ];
        for (rule, want) in cases {
            assert_eq!(validate(&rule).unwrap_err().to_string(), want);
        }
    }
}
