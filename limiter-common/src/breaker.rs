//! Circuit breakers (docs/breaking.md): the policy of a rule, written by the daemon, and the
//! state of one breaker, owned by the kernel.
//!
//! A breaker belongs to a (rule, endpoint) pair ([`BreakerKey`]): the endpoint is the address
//! connect() showed, so a rule on one address has one breaker, and a `svc/` rule seen through
//! a socket load balancer has one per endpoint. The kernel creates a breaker on first use,
//! runs its state machine with atomic instructions (a connect() on every CPU may race with a
//! handshake outcome on another) and never takes a lock; the daemon only reads breakers, and
//! deletes those of a deleted rule.

use crate::{DestAddr, action};

/// States of a breaker, in the low two bits of [`Breaker::gate`].
pub mod breaker_state {
    /// Connections flow; failures are counted.
    pub const CLOSED: u64 = 0;
    /// New connections are refused at once until the gate's deadline.
    pub const OPEN: u64 = 1;
    /// `probes` connections may go out; the first outcome decides.
    pub const HALF_OPEN: u64 = 2;
    pub const NAMES: [&str; 3] = ["closed", "open", "half_open"];
}

/// Packs a state and its deadline into one word, so that one compare-and-swap changes both:
/// a reader never sees a new state with an old deadline. The deadline loses its two lowest
/// bits (4 ns).
pub const fn gate(state: u64, deadline_ns: u64) -> u64 {
    (deadline_ns & !3) | state
}

/// The state of a [`gate`] word.
pub const fn gate_state(word: u64) -> u64 {
    word & 3
}

/// The deadline of a [`gate`] word: open until (open), probes re-armed at (half-open).
pub const fn gate_deadline(word: u64) -> u64 {
    word & !3
}

/// How a handshake ended, as reported to a breaker (and the cause of a transition event).
pub mod outcome {
    /// The handshake completed.
    pub const SUCCESS: usize = 0;
    /// A RST answered the SYN.
    pub const REFUSED: usize = 1;
    /// No answer within the kernel's initial SYN timeout (1 s), or the caller gave up first.
    pub const TIMEOUT: usize = 2;
    /// The connection was reset within [`super::RESET_WINDOW_NS`] of its handshake.
    pub const RESET: usize = 3;
    /// Failures, by kind (indexes of [`super::Breaker::failures_total`]).
    pub const FAILURE_KINDS: usize = 3;
    /// Causes of transitions beyond outcomes: the failure ratio or slow ratio tripped; the
    /// open time passed (half-open); a half-open breaker had no probe outcome for its open
    /// time and re-armed its probes.
    pub const FAILURE_RATIO: usize = 4;
    pub const SLOW_RATIO: usize = 5;
    pub const OPEN_TIME_PASSED: usize = 6;
    pub const NAMES: [&str; 7] = [
        "success",
        "refused",
        "timeout",
        "reset",
        "failure_ratio",
        "slow_ratio",
        "open_time_passed",
    ];
}

/// An established connection reset within this time of its handshake counts as a failure
/// (the peer accepted and dropped it at once: an overloaded or broken server).
pub const RESET_WINDOW_NS: u64 = 1_000_000_000;

/// Counters of a breaker's statistics window: `[counter][half]`, each word `epoch << 32 |
/// count` like the pending buckets, the window being two halves (a rolling window that
/// covers between half and all of `window_ns`).
pub mod window {
    /// Handshakes that ended (successes and failures).
    pub const ATTEMPTS: usize = 0;
    pub const FAILURES: usize = 1;
    /// Handshakes slower than `slow_ns` (timeouts included).
    pub const SLOW: usize = 2;
    /// connect() calls the breaker refused (the SRE throttle's "requests" include them).
    pub const REJECTED: usize = 3;
    pub const COUNTERS: usize = 4;
}

/// A rule's breaker policy (the BREAKER_RULES map, by rule id). Written by the daemon, read
/// by the kernel; a policy of 0 is off.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Open after this many consecutive failures (0: off).
    pub consecutive_failures: u32,
    /// Open when failures / attempts >= this, in ten-thousandths (0: off).
    pub failure_ratio: u32,
    /// Open when slow / attempts >= this, in ten-thousandths (0: off).
    pub slow_ratio: u32,
    /// SRE throttle's K in thousandths (0: off).
    pub sre_k_milli: u32,
    /// Fewer attempts in the window never trip a ratio and never throttle.
    pub min_attempts: u32,
    /// Connections let through while half-open.
    pub probes: u32,
    /// Most breakers of this rule's endpoints open at once (u32::MAX: no bound).
    pub max_ejected: u32,
    /// The percentage `max_ejected` was computed from (kept for the next daemon; the kernel
    /// reads only `max_ejected`).
    pub max_ejection_percent: u32,
    /// A handshake longer than this is slow.
    pub slow_ns: u64,
    /// The statistics window.
    pub window_ns: u64,
    /// Open time of the first ejection; the n-th lasts n times this.
    pub open_ns: u64,
    /// Cap of the open time; a breaker closed this long starts its multiplier over.
    pub max_open_ns: u64,
}

/// Key of a breaker: a rule and the endpoint connect() showed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BreakerKey {
    pub rule_id: u64,
    pub endpoint: DestAddr,
    pub _pad: [u8; 6],
}

/// One breaker (the BREAKERS map). Every field is changed by the kernel with atomic
/// instructions or by the single winner of a [`gate`] compare-and-swap.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Breaker {
    /// [`gate`]: state and deadline.
    pub gate: u64,
    /// When the breaker last changed state (ns, monotonic).
    pub since_ns: u64,
    /// Probes still allowed while half-open.
    pub probes_left: u64,
    /// Consecutive failures while closed.
    pub consecutive: u64,
    /// The open-time multiplier: ejections in a row.
    pub ejections: u64,
    pub ejections_total: u64,
    /// 1 while the breaker holds one of its rule's `max_ejected` places (the EJECTED map).
    pub holds_ejection: u64,
    /// Openings not done because the rule's `max_ejected` endpoints were open already
    /// (Envoy's `ejections_overflow`).
    pub ejection_overflow_total: u64,
    pub successes_total: u64,
    /// By [`outcome`] kind: refused, timeout, reset.
    pub failures_total: [u64; outcome::FAILURE_KINDS],
    pub slow_total: u64,
    /// connect() calls refused by this breaker, by [`action`].
    pub refused_total: [u64; action::COUNT],
    /// Last connect() or outcome (ns): an idle closed breaker can be forgotten.
    pub last_ns: u64,
    /// The statistics window ([`window`]).
    pub window: [[u64; 2]; window::COUNTERS],
}

impl Breaker {
    /// A new breaker: closed, nothing counted.
    pub const NEW: Self = Self {
        gate: 0,
        since_ns: 0,
        probes_left: 0,
        consecutive: 0,
        ejections: 0,
        ejections_total: 0,
        holds_ejection: 0,
        ejection_overflow_total: 0,
        successes_total: 0,
        failures_total: [0; outcome::FAILURE_KINDS],
        slow_total: 0,
        refused_total: [0; action::COUNT],
        last_ns: 0,
        window: [[0; 2]; window::COUNTERS],
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_keeps_state_and_deadline() {
        let g = gate(breaker_state::HALF_OPEN, 1_000_000_007);
        assert_eq!(gate_state(g), breaker_state::HALF_OPEN);
        assert_eq!(gate_deadline(g), 1_000_000_004);
        assert_eq!(gate_state(gate(breaker_state::CLOSED, 0)), 0);
    }

    #[test]
    fn layouts() {
        assert_eq!(core::mem::size_of::<BreakerConfig>(), 64);
        assert_eq!(core::mem::size_of::<BreakerKey>(), 32);
        assert_eq!(core::mem::size_of::<Breaker>(), 25 * 8);
    }
}
