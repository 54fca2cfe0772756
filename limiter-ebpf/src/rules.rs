//! Finding the rule of a destination, and the per-CPU counters of a decision.

use aya_ebpf::maps::lpm_trie::Key;
use limiter_common::{
    DestAddr, EXACT_PREFIX_BITS, RuleConfig, RuleState, SideSlots, SideStats, side,
};

use crate::maps::{RULE_KINDS, RULE_STATE, RULE_STATS, RULES};

/// True if some rule of `kind` (limiter_common::rule_kinds) exists: a hook none needs stops
/// here, before reading its context.
#[inline(always)]
pub fn exist(kind: u32) -> bool {
    RULE_KINDS.get(0).is_some_and(|k| k & kind != 0)
}

/// The most specific rule covering `dest`, if any.
#[inline(always)]
pub fn lookup(dest: &DestAddr) -> Option<&'static RuleConfig> {
    RULES.get(&Key::new(EXACT_PREFIX_BITS, *dest))
}

/// The slot state of one side of a rule.
#[inline(always)]
pub fn slots(rule_id: u64, which: u8) -> Option<*mut SideSlots> {
    let state: *mut RuleState = RULE_STATE.get_ptr_mut(&rule_id)?;
    // SAFETY: field address inside a live map value.
    Some(unsafe {
        if which == side::INBOUND {
            core::ptr::addr_of_mut!((*state).inbound)
        } else {
            core::ptr::addr_of_mut!((*state).outbound)
        }
    })
}

/// This CPU's counters of one side of a rule.
#[inline(always)]
pub fn stats(rule_id: u64, which: u8) -> Option<&'static mut SideStats> {
    let stats = RULE_STATS.get_ptr_mut(&rule_id)?;
    // SAFETY: per-CPU value, only this CPU writes it while this program runs.
    Some(unsafe {
        if which == side::INBOUND {
            &mut (*stats).inbound
        } else {
            &mut (*stats).outbound
        }
    })
}

/// Counts a refusal of `reason` with `action` (limiter_common::{reason, action}) of a new
/// connection from `peer` to `dest`, decided at `now_ns`, and reports it as an event
/// (rate-limited). Breaker refusals are only reported here: each breaker counts its own
/// (breaker::count_refused).
#[inline(always)]
pub fn count_refusal(
    now_ns: u64,
    rule_id: u64,
    which: u8,
    reason: usize,
    action: usize,
    dest: &DestAddr,
    peer: &[u8; 16],
) {
    if let Some(s) = stats(rule_id, which)
        && reason < limiter_common::reason::COUNTED
        && action < limiter_common::action::COUNT
    {
        s.refused[reason][action] += 1;
    }
    crate::events::refused(now_ns, rule_id, which, reason, action, dest, peer);
}

/// Counts an admission decision.
#[inline(always)]
pub fn count_accepted(rule_id: u64, which: u8) {
    if let Some(s) = stats(rule_id, which) {
        s.accepted += 1;
    }
}
