//! The circuit-breaker maps as userspace sees them: a rule's policy (BREAKER_RULES, written
//! here), its breakers (BREAKERS, created and changed by the kernel, only read and forgotten
//! here) and the Service ejection counts (EJECTED). The switch that tells the ingress hook
//! breakers exist (BREAKERS_ON) is kept with the rule kinds (kinds.rs).
//!
//! Order, as for rules: a policy is written before the rule's BREAKER flag is published, and
//! removed (with its breakers) after a rule without it is; the kernel treats a flag without a
//! policy as no breaker.

use std::collections::HashMap as StdHashMap;
use std::net::SocketAddr;

use anyhow::Context as _;
use aya::maps::{HashMap, MapData};
use limiter_common::{
    Breaker, BreakerConfig, BreakerKey, EXACT_PREFIX_BITS, action, breaker_state, gate_deadline,
    gate_state, names,
};

use crate::rules::dest::Dest;
use crate::rules::status::{BreakerStatus, FailureCounts};

/// A closed breaker with no connect() or outcome for this long is forgotten (a CIDR rule's
/// endpoints come and go); it comes back closed and empty on its next connect().
const IDLE_NS: u64 = 600 * 1_000_000_000;

pub struct Breakers {
    policies: HashMap<MapData, u64, BreakerConfig>,
    breakers: HashMap<MapData, BreakerKey, Breaker>,
    ejected: HashMap<MapData, u64, u64>,
}

impl Breakers {
    pub fn open(ebpf: &mut aya::Ebpf) -> anyhow::Result<Self> {
        Ok(Self {
            policies: super::take_map(ebpf, names::maps::BREAKER_RULES)?,
            breakers: super::take_map(ebpf, names::maps::BREAKERS)?,
            ejected: super::take_map(ebpf, names::maps::EJECTED)?,
        })
    }

    /// The policy of rule `id` found in the kernel (a previous daemon's), if any.
    pub fn policy(&self, id: u64) -> Option<BreakerConfig> {
        self.policies.get(&id, 0).ok()
    }

    /// Writes the policy of rule `id` (before its BREAKER flag is published).
    pub fn set_policy(&mut self, id: u64, policy: &BreakerConfig) -> anyhow::Result<()> {
        super::tables::with_retry(|| self.policies.insert(&id, policy, 0))
            .context("write the breaker policy (BREAKER_RULES full?)")
    }

    /// Removes the policy of rule `id` and forgets its breakers (after a rule without the
    /// BREAKER flag is published, or the rule is gone).
    pub fn remove(&mut self, id: u64) -> anyhow::Result<()> {
        if self.policies.get(&id, 0).is_err() {
            return Ok(());
        }
        let _ = self.policies.remove(&id);
        self.forget(|k, _| k.rule_id == id);
        let _ = self.ejected.remove(&id);
        Ok(())
    }

    /// Forgets closed breakers idle for IDLE_NS.
    pub fn prune_idle(&mut self, now_ns: u64) {
        self.forget(|_, b| {
            gate_state(b.gate) == breaker_state::CLOSED
                && b.holds_ejection == 0
                && now_ns.saturating_sub(b.last_ns) > IDLE_NS
        });
    }

    fn forget(&mut self, doomed: impl Fn(&BreakerKey, &Breaker) -> bool) {
        let keys: Vec<BreakerKey> = self
            .breakers
            .iter()
            .filter_map(Result::ok)
            .filter(|(k, b)| doomed(k, b))
            .map(|(k, _)| k)
            .collect();
        for k in keys {
            let _ = self.breakers.remove(&k);
        }
    }

    /// Every breaker, by rule id, as `status` shows it (one pass over the map).
    pub fn status(&self, now_ns: u64) -> StdHashMap<u64, RuleBreakers> {
        let mut out: StdHashMap<u64, RuleBreakers> = StdHashMap::new();
        for (key, b) in self.breakers.iter().filter_map(Result::ok) {
            let rule = out.entry(key.rule_id).or_default();
            for (total, n) in rule.refused.iter_mut().zip(b.refused_total) {
                *total += n;
            }
            rule.list.push(status_of(&key, &b, now_ns));
        }
        for rule in out.values_mut() {
            rule.list.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
        }
        out
    }
}

/// The breakers of one rule.
#[derive(Default)]
pub struct RuleBreakers {
    pub list: Vec<BreakerStatus>,
    /// connect() calls they refused, by action (limiter_common::action).
    pub refused: [u64; action::COUNT],
}

fn endpoint(key: &BreakerKey) -> String {
    match Dest::from_lpm_key(EXACT_PREFIX_BITS, &key.endpoint) {
        Dest::Addr(a) => SocketAddr::to_string(&a),
        other => other.to_string(),
    }
}

fn status_of(key: &BreakerKey, b: &Breaker, now_ns: u64) -> BreakerStatus {
    let state = gate_state(b.gate);
    let seconds = |ns: u64| ns as f64 / 1e9;
    BreakerStatus {
        endpoint: endpoint(key),
        state: breaker_state::NAMES
            .get(state as usize)
            .copied()
            .unwrap_or("closed"),
        consecutive_failures: b.consecutive,
        successes_total: b.successes_total,
        failures_total: FailureCounts {
            refused: b.failures_total[0],
            timeout: b.failures_total[1],
            reset: b.failures_total[2],
        },
        slow_total: b.slow_total,
        ejections_total: b.ejections_total,
        ejection_overflow_total: b.ejection_overflow_total,
        refused_total: b.refused_total.iter().sum(),
        in_state_seconds: seconds(now_ns.saturating_sub(b.since_ns)),
        open_remaining_seconds: (state == breaker_state::OPEN)
            .then(|| seconds(gate_deadline(b.gate).saturating_sub(now_ns))),
    }
}
