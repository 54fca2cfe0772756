//! The RULE_KINDS switch (limiter_common::rule_kinds) and the BREAKERS_ON one: how many rules
//! of each kind are in force, so that a hook no rule needs returns at once. Counted, not
//! recomputed, so a `set` costs the same at 100 000 rules as at one.
//!
//! Order: a kind is switched on before the rule needing it is published, and off only after
//! the last such rule is gone (`add` before, `remove` after), so the kernel never skips a rule
//! in force.

use std::path::PathBuf;

use anyhow::Context as _;
use limiter_common::{names, rule_kinds};

use super::sys;

/// A userspace-only kind beside the kernel's: the rule has a breaker (BREAKERS_ON).
pub const BREAKER: u32 = 1 << 16;

/// Bits counted: the kernel's kinds, then BREAKER.
const BITS: [u32; 5] = [
    rule_kinds::ANY,
    rule_kinds::CLIENT,
    rule_kinds::SERVER,
    rule_kinds::CLIENT_DROP,
    BREAKER,
];

/// How many rules in force have each kind.
#[derive(Debug, Default)]
struct Counts([u64; BITS.len()]);

impl Counts {
    fn change(&mut self, kinds: u32, add: bool) {
        for (count, bit) in self.0.iter_mut().zip(BITS) {
            if kinds & bit != 0 {
                *count = if add {
                    *count + 1
                } else {
                    count.saturating_sub(1)
                };
            }
        }
    }

    /// The kinds at least one rule has.
    fn current(&self) -> u32 {
        self.0
            .iter()
            .zip(BITS)
            .filter(|(n, _)| **n > 0)
            .fold(0, |k, (_, bit)| k | bit)
    }
}

pub struct Kinds {
    counts: Counts,
    /// What the maps hold now.
    written: Option<u32>,
    kinds_pin: PathBuf,
    breakers_pin: PathBuf,
}

impl Kinds {
    pub fn new(maps_dir: &std::path::Path) -> Self {
        Self {
            counts: Counts::default(),
            written: None,
            kinds_pin: maps_dir.join(names::maps::RULE_KINDS),
            breakers_pin: maps_dir.join(names::maps::BREAKERS_ON),
        }
    }

    /// Counts a rule of `kinds` and switches them on.
    pub fn add(&mut self, kinds: u32) -> anyhow::Result<()> {
        self.counts.change(kinds, true);
        self.write()
    }

    /// Forgets a rule of `kinds` and switches off what no rule needs any more.
    pub fn remove(&mut self, kinds: u32) -> anyhow::Result<()> {
        self.counts.change(kinds, false);
        self.write()
    }

    /// Writes the switches (at start: whatever they held before).
    pub fn write(&mut self) -> anyhow::Result<()> {
        let now = self.counts.current();
        if self.written == Some(now) {
            return Ok(());
        }
        sys::write_u32_array(&self.kinds_pin, 0, now & !BREAKER)
            .context("write the rule kinds switch")?;
        sys::write_u32_array(&self.breakers_pin, 0, u32::from(now & BREAKER != 0))
            .context("write the breakers switch")?;
        self.written = Some(now);
        Ok(())
    }
}

/// The kinds of `rule` (under id `id`): the kernel's, and BREAKER where it has one.
pub fn of(id: u64, rule: &crate::rules::spec::RuleSpec) -> u32 {
    let mut kinds = super::tables::to_config(id, rule).kinds();
    if rule.breaker.is_some() && rule.side != crate::rules::spec::Side::Server {
        kinds |= BREAKER;
    }
    kinds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_stays_on_while_one_rule_needs_it() {
        let mut c = Counts::default();
        let client = rule_kinds::ANY | rule_kinds::CLIENT;
        c.change(client, true);
        c.change(client | BREAKER, true);
        assert_eq!(c.current(), client | BREAKER);
        c.change(client | BREAKER, false);
        assert_eq!(c.current(), client, "the other client rule keeps CLIENT on");
        c.change(client, false);
        assert_eq!(c.current(), 0);
        c.change(rule_kinds::SERVER, false);
        assert_eq!(c.current(), 0, "never below zero");
    }
}
