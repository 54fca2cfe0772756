//! The rule maps as userspace sees them: publish, replace and remove rules, read counters.
//!
//! A new rule's counters are created before the rule is published in the trie, and a
//! deleted rule leaves the trie before its counters go, so the kernel never finds a rule
//! without counters. Sockets still holding a slot of a deleted rule find no counters at close
//! and release nothing.

use std::collections::BTreeMap;

use anyhow::{Context as _, anyhow};
use aya::{
    Ebpf,
    maps::{Array, HashMap, LpmTrie, MapData, PerCpuHashMap, PerCpuValues, lpm_trie::Key},
};
use limiter_common::{
    DestAddr, PENDING_BUCKET_NS, RuleConfig, RuleState, RuleStats, SHED_TTL_NS, SeedRequest,
    ShedLimit, SideSlots, SideStats, action, names, reason, rule_flags,
};

use crate::rules::dest::Dest;
use crate::rules::spec::{Mode, RuleSpec, Side};
use crate::rules::status::{DestinationStatus, SideStatus};

pub struct Tables {
    rules: LpmTrie<MapData, DestAddr, RuleConfig>,
    state: HashMap<MapData, u64, RuleState>,
    stats: PerCpuHashMap<MapData, u64, RuleStats>,
    seed: Array<MapData, SeedRequest>,
    adopt_gen: Array<MapData, u32>,
    shed: HashMap<MapData, u64, ShedLimit>,
}

/// Runs a map update, retrying a transient ENOMEM. Maps that are not preallocated take their
/// elements from per-CPU caches that the kernel refills asynchronously (irq_work); a burst of
/// inserts from userspace (an `apply` of thousands of rules) can drain a cache and get ENOMEM
/// although memory is plentiful. A real shortage still fails after about 100 ms.
pub(super) fn with_retry<T>(
    mut update: impl FnMut() -> Result<T, aya::maps::MapError>,
) -> Result<T, aya::maps::MapError> {
    let mut attempt = 0;
    loop {
        match update() {
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::ENOMEM) && attempt < 100 =>
            {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            other => return other,
        }
    }
}

/// The kernel form of a rule.
pub fn to_config(id: u64, rule: &RuleSpec) -> RuleConfig {
    let mut flags = match rule.side {
        Side::Server => rule_flags::SIDE_SERVER,
        Side::Client => rule_flags::SIDE_CLIENT,
        Side::Both => rule_flags::SIDE_SERVER | rule_flags::SIDE_CLIENT,
    };
    if rule.mode == Mode::Drop {
        flags |= rule_flags::MODE_DROP;
    }
    if rule.dry_run {
        flags |= rule_flags::DRY_RUN;
    }
    if rule.adaptive.is_some() {
        flags |= rule_flags::ADAPTIVE;
    }
    if rule.derived {
        flags |= rule_flags::DERIVED;
    }
    if rule.breaker.is_some() && rule.side != Side::Server {
        flags |= rule_flags::BREAKER;
    }
    RuleConfig {
        id,
        max_connections: rule.max_connections.unwrap_or(0),
        flags,
        syn_rate: rule.syn_rate.unwrap_or(0),
        syn_burst: rule.syn_burst.or(rule.syn_rate).unwrap_or(0),
        per_source: rule.per_source.unwrap_or(0),
        _pad: 0,
    }
}

/// The user form of a rule found in the kernel (a previous daemon's).
pub fn from_config(dest: Dest, cfg: &RuleConfig) -> RuleSpec {
    let side = match (
        cfg.flags & rule_flags::SIDE_SERVER != 0,
        cfg.flags & rule_flags::SIDE_CLIENT != 0,
    ) {
        (true, false) => Side::Server,
        (false, true) => Side::Client,
        _ => Side::Both,
    };
    let nonzero = |v: u32| (v != 0).then_some(v);
    RuleSpec {
        destination: dest,
        max_connections: nonzero(cfg.max_connections),
        mode: if cfg.flags & rule_flags::MODE_DROP != 0 {
            Mode::Drop
        } else {
            Mode::Reject
        },
        side,
        syn_rate: nonzero(cfg.syn_rate),
        syn_burst: nonzero(cfg.syn_burst).filter(|b| Some(*b) != nonzero(cfg.syn_rate)),
        per_source: nonzero(cfg.per_source),
        dry_run: cfg.flags & rule_flags::DRY_RUN != 0,
        // The check's parameters live in the daemon's config and state file, which the next
        // daemon re-applies; without them the kernel still says the rule is adaptive, and the
        // check resumes with the defaults rather than leaving the destination unprotected.
        adaptive: (cfg.flags & rule_flags::ADAPTIVE != 0).then(Default::default),
        breaker: None,
        priority: None,
        derived: cfg.flags & rule_flags::DERIVED != 0,
    }
}

/// The rules a previous daemon pinned, read in one pass over the trie.
pub struct Pinned {
    /// By destination, with their ids.
    pub rules: BTreeMap<Dest, (u64, RuleSpec)>,
    /// The [`limiter_common::rule_kinds`] they need, for RULE_KINDS before the programs attach.
    pub kinds: u32,
    /// Those with a breaker, whose policy is in BREAKER_RULES.
    pub with_breaker: Vec<Dest>,
}

/// The LPM key of an address destination; a Service must have been resolved before.
fn kernel_key(dest: &Dest) -> anyhow::Result<(u32, DestAddr)> {
    dest.lpm_key()
        .ok_or_else(|| anyhow!("{dest} is a Service: only its resolved addresses go to the kernel"))
}

impl Tables {
    pub fn open(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        Ok(Self {
            rules: super::take_map(ebpf, names::maps::RULES)?,
            state: super::take_map(ebpf, names::maps::RULE_STATE)?,
            stats: super::take_map(ebpf, names::maps::RULE_STATS)?,
            seed: super::take_map(ebpf, names::maps::SEED)?,
            adopt_gen: super::take_map(ebpf, names::maps::ADOPT_GEN)?,
            shed: super::take_map(ebpf, names::maps::SHED)?,
        })
    }

    /// Rules already in the (pinned) trie: one pass, which at 100 000 rules is most of what a
    /// restart costs.
    pub fn existing(&self) -> anyhow::Result<Pinned> {
        let mut pinned = Pinned {
            rules: BTreeMap::new(),
            kinds: 0,
            with_breaker: Vec::new(),
        };
        for entry in self.rules.iter() {
            let (key, cfg) = entry.context("read the rules map")?;
            let dest = Dest::from_lpm_key(key.prefix_len(), &key.data());
            pinned.kinds |= cfg.kinds();
            if cfg.flags & limiter_common::rule_flags::BREAKER != 0 {
                pinned.with_breaker.push(dest.clone());
            }
            pinned
                .rules
                .insert(dest.clone(), (cfg.id, from_config(dest, &cfg)));
        }
        Ok(pinned)
    }

    /// Creates the counters of a new rule (zeroed).
    pub fn create_counters(&mut self, id: u64) -> anyhow::Result<()> {
        let cpus = aya::util::nr_cpus().map_err(|(msg, e)| anyhow!("{msg}: {e}"))?;
        let zeros = || PerCpuValues::try_from(vec![RuleStats::default(); cpus.get() as usize]);
        with_retry(|| self.stats.insert(&id, zeros()?, 0))
            .context("create rule counters (RULE_STATS full?)")?;
        if let Err(e) = with_retry(|| self.state.insert(&id, &RuleState::default(), 0)) {
            let _ = self.stats.remove(&id);
            return Err(e).context("create rule slots (RULE_STATE full?)");
        }
        Ok(())
    }

    pub fn remove_counters(&mut self, id: u64) {
        let _ = self.state.remove(&id);
        let _ = self.stats.remove(&id);
        let _ = self.shed.remove(&id);
    }

    /// Writes (or clears) the overload check's limit of rule `id`, valid for SHED_TTL_NS.
    pub fn set_shed(&mut self, id: u64, shed: Option<(u8, u32)>) -> anyhow::Result<()> {
        match shed {
            Some((side, limit)) => {
                let value = ShedLimit {
                    expires_ns: super::sys::monotonic_ns() + SHED_TTL_NS,
                    limit: limit.max(1),
                    side,
                    _pad: [0; 3],
                };
                with_retry(|| self.shed.insert(&id, &value, 0)).context("write the shed limit")
            }
            None => match self.shed.remove(&id) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
                Err(e) => Err(e).context("clear the shed limit"),
            },
        }
    }

    /// Publishes or atomically replaces the rule of `dest`.
    pub fn publish(&mut self, dest: &Dest, cfg: &RuleConfig) -> anyhow::Result<()> {
        let (prefix, data) = kernel_key(dest)?;
        let key = Key::new(prefix, data);
        with_retry(|| self.rules.insert(&key, cfg, 0))
            .with_context(|| format!("publish the rule for {dest} (rules map full?)"))
    }

    pub fn unpublish(&mut self, dest: &Dest) -> anyhow::Result<()> {
        let (prefix, data) = kernel_key(dest)?;
        self.rules
            .remove(&Key::new(prefix, data))
            .with_context(|| format!("remove the rule for {dest}"))
    }

    /// Sets the parameters of the next seeding run.
    pub fn set_seed(&mut self, id: u64, dest: &Dest) -> anyhow::Result<()> {
        let (prefix_len, dest) = kernel_key(dest)?;
        let req = SeedRequest {
            rule_id: id,
            prefix_len,
            dest,
            ..Default::default()
        };
        self.seed.set(0, &req, 0).context("write the seed request")
    }

    /// Raises the adoption generation: every established socket looks its destination up
    /// again on its next packet (kernels without the seeding iterator; limiter-ebpf adopt.rs).
    /// Only this daemon writes it, so read-then-write does not race.
    pub fn next_adoption_generation(&mut self) -> anyhow::Result<()> {
        let current = self
            .adopt_gen
            .get(&0, 0)
            .context("read the adoption generation")?;
        self.adopt_gen
            .set(0, &current.wrapping_add(1).max(1), 0)
            .context("raise the adoption generation")
    }

    pub fn status(
        &self,
        id: u64,
        rule: &RuleSpec,
        seeding: &'static str,
    ) -> anyhow::Result<DestinationStatus> {
        let state = self.state.get(&id, 0).unwrap_or_default();
        let mut stats = RuleStats::default();
        if let Ok(per_cpu) = self.stats.get(&id, 0) {
            for cpu in per_cpu.iter() {
                add(&mut stats.inbound, &cpu.inbound);
                add(&mut stats.outbound, &cpu.outbound);
            }
        }
        let epoch = super::sys::monotonic_ns() / PENDING_BUCKET_NS;
        Ok(DestinationStatus {
            destination: rule.destination.to_string(),
            inbound: side_status(&state.inbound, &stats.inbound, epoch),
            outbound: side_status(&state.outbound, &stats.outbound, epoch),
            rule: Some(rule.clone()),
            source: None,
            seeding: Some(seeding),
            overload: crate::rules::status::OverloadStatus {
                shed_total: [&stats.inbound, &stats.outbound]
                    .iter()
                    .flat_map(|s| s.refused[reason::SHED])
                    .sum(),
                ..Default::default()
            },
            service: Default::default(),
            breakers: Vec::new(),
        })
    }
}

fn add(total: &mut SideStats, cpu: &SideStats) {
    total.opened += cpu.opened;
    total.closed += cpu.closed;
    total.lifetime_ns += cpu.lifetime_ns;
    total.accepted += cpu.accepted;
    for r in 0..reason::COUNTED {
        for a in 0..action::COUNT {
            total.refused[r][a] += cpu.refused[r][a];
        }
    }
}

fn side_status(slots: &SideSlots, stats: &SideStats, epoch: u64) -> SideStatus {
    let mut refused = crate::rules::status::RefusedCounts::default();
    refused.0[..reason::COUNTED].copy_from_slice(&stats.refused);
    let limit = &stats.refused[reason::LIMIT];
    SideStatus {
        active: slots.established,
        pending: slots.live_pending(epoch),
        opened_total: stats.opened,
        closed_total: stats.closed,
        lifetime_seconds_total: stats.lifetime_ns as f64 / 1e9,
        accepted_total: stats.accepted,
        cx_overflow_total: limit[action::REJECT] + limit[action::DROP],
        refused,
    }
}

#[cfg(test)]
#[path = "tables_tests.rs"]
mod tests;
