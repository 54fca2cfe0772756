//! Criticality across destinations, as in Google SRE's classes: under node-wide overload the
//! capacity goes to the most critical destinations first, and sheddable ones are cut first.
//!
//! Strict priority alone starves: a flood of critical traffic would take everything and the
//! sheddable destinations would drop to zero connections, which also breaks their health checks
//! and makes their clients retry harder. So every class that asks for capacity is first given a
//! reserve of `min_share` of it (default 5%: four classes keep 20% at most in reserve, the other
//! 80% or more follows priority). Within a class, destinations share by max-min fairness: small
//! demands are met in full, and what is left is split equally among the large ones, so one
//! flooding destination cannot take its neighbours' share.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// A rule's criticality, from most to least protected: `critical-plus`, `critical` (default),
/// `sheddable-plus`, `sheddable`. Ordered so that a greater value is more critical.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Criticality {
    Sheddable,
    SheddablePlus,
    #[default]
    Critical,
    CriticalPlus,
}

impl Criticality {
    /// Every class, most critical first: the order capacity is granted in.
    pub const ALL: [Criticality; 4] = [
        Criticality::CriticalPlus,
        Criticality::Critical,
        Criticality::SheddablePlus,
        Criticality::Sheddable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Criticality::CriticalPlus => "critical-plus",
            Criticality::Critical => "critical",
            Criticality::SheddablePlus => "sheddable-plus",
            Criticality::Sheddable => "sheddable",
        }
    }
}

impl fmt::Display for Criticality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not a criticality; says which ones are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown priority {input:?}; expected critical-plus, critical, sheddable-plus or sheddable"
)]
pub struct ParseCriticalityError {
    pub input: String,
}

impl FromStr for Criticality {
    type Err = ParseCriticalityError;

    /// Parses the `--priority` spelling (`critical-plus`, ...).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Criticality::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| ParseCriticalityError {
                input: s.to_owned(),
            })
    }
}

/// Settings of the node-wide allocator.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PriorityConfig {
    /// Fraction of the node capacity reserved for each class that has demand, so none is
    /// starved to zero. At most 0.25 (four classes).
    pub min_share: f64,
}

impl Default for PriorityConfig {
    fn default() -> Self {
        PriorityConfig { min_share: 0.05 }
    }
}

impl PriorityConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=0.25).contains(&self.min_share) {
            return Err(ConfigError::Invalid {
                field: "priority.min_share",
                value: self.min_share.to_string(),
                reason: "must be in [0, 0.25]: four classes cannot reserve more than the whole",
            });
        }
        Ok(())
    }
}

/// What one destination asks for: the connections it wants established.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Demand {
    pub class: Criticality,
    pub want: u64,
}

/// Shares `capacity` connections among destinations; returns one grant per demand, in the same
/// order. A grant never exceeds its demand and the grants never sum to more than `capacity`.
///
/// 1. Each class with demand gets a reserve of `ceil(min_share x capacity)` (at least 1 when
///    `min_share > 0`), capped at its demand; reserves are taken most critical class first,
///    which only matters when the capacity is smaller than the reserves.
/// 2. What is left goes to the classes most critical first, each up to its whole demand.
/// 3. Each class's total is split among its destinations by max-min fairness.
///
/// When the total demand fits, everyone gets what they want.
pub fn allocate(config: &PriorityConfig, capacity: u64, demands: &[Demand]) -> Vec<u64> {
    let class_demand = |c: Criticality| -> u64 {
        demands
            .iter()
            .filter(|d| d.class == c)
            .map(|d| d.want)
            .sum()
    };
    let wanted = Criticality::ALL.map(class_demand);
    let reserve_each = if config.min_share > 0.0 {
        ((config.min_share * capacity as f64).ceil() as u64).max(1)
    } else {
        0
    };
    let mut left = capacity;
    let mut totals = [0u64; 4];
    for (total, want) in totals.iter_mut().zip(wanted) {
        *total = want.min(reserve_each).min(left);
        left -= *total;
    }
    for (total, want) in totals.iter_mut().zip(wanted) {
        let more = (want - *total).min(left);
        *total += more;
        left -= more;
    }
    let mut grants = vec![0; demands.len()];
    for (class, total) in Criticality::ALL.into_iter().zip(totals) {
        let members: Vec<usize> = (0..demands.len())
            .filter(|&i| demands[i].class == class)
            .collect();
        let wants: Vec<u64> = members.iter().map(|&i| demands[i].want).collect();
        for (i, g) in members.into_iter().zip(max_min_fair(total, &wants)) {
            grants[i] = g;
        }
    }
    grants
}

/// Max-min fair shares of `total` among `wants`: in increasing order of demand, each gets the
/// smaller of its demand and an equal split of what is left. Integer remainders go one each to
/// the first of the unsatisfied demands, in input order, so the result is deterministic.
pub fn max_min_fair(total: u64, wants: &[u64]) -> Vec<u64> {
    let mut order: Vec<usize> = (0..wants.len()).collect();
    order.sort_by_key(|&i| (wants[i], i));
    let mut grants = vec![0; wants.len()];
    let mut left = total;
    for (k, &i) in order.iter().enumerate() {
        let remaining = (order.len() - k) as u64;
        let fair = left / remaining;
        if wants[i] <= fair {
            grants[i] = wants[i];
            left -= wants[i];
            continue;
        }
        // This demand and every larger one exceed the equal split: all get the split.
        let mut rest: Vec<usize> = order[k..].to_vec();
        rest.sort_unstable();
        let extra = left % remaining;
        for (j, &r) in rest.iter().enumerate() {
            grants[r] = fair + u64::from((j as u64) < extra);
        }
        break;
    }
    grants
}

#[cfg(test)]
#[path = "priority_tests.rs"]
mod tests;
