//! Refusal and breaker events for `limiter events`, through a ring buffer the daemon reads.
//!
//! A flood of refusals must not become a flood of events: each CPU has a token bucket of
//! EVENTS_PER_SECOND_PER_CPU. What it suppresses, and what a full ring buffer loses because the
//! reader fell behind, is counted in EVENT_STATS, never dropped silently.

use aya_ebpf::bindings::BPF_RB_NO_WAKEUP;
use limiter_common::{DestAddr, EVENTS_PER_SECOND_PER_CPU, Event, event_kind, side};

use crate::maps::{EVENT_STATS, EVENTS};

/// Emits a refusal event if this CPU's budget allows. `now_ns` is the decision's own clock
/// reading: a second one cost a refused connect() a tenth of its program time (read_tsc under
/// `perf`).
#[inline(always)]
pub fn refused(
    now_ns: u64,
    rule_id: u64,
    side: u8,
    reason: usize,
    action: usize,
    dest: &DestAddr,
    peer: &[u8; 16],
) {
    emit(
        now_ns,
        Event {
            time_ns: 0,
            rule_id,
            dest: *dest,
            peer: *peer,
            side,
            reason: reason as u8,
            action: action as u8,
            kind: event_kind::REFUSAL,
            _pad: [0; 2],
        },
    );
}

/// Emits a breaker transition event (the breaker of `rule_id` for `endpoint` is now `state`,
/// because of `cause`, a limiter_common::outcome index) at `now_ns` if this CPU's budget allows.
#[inline(always)]
pub fn breaker(now_ns: u64, rule_id: u64, endpoint: &DestAddr, state: u64, cause: usize) {
    emit(
        now_ns,
        Event {
            time_ns: 0,
            rule_id,
            dest: *endpoint,
            peer: [0; 16],
            side: side::OUTBOUND,
            reason: state as u8,
            action: cause as u8,
            kind: event_kind::BREAKER,
            _pad: [0; 2],
        },
    );
}

/// Writes `event` (stamped `now`) to the ring if this CPU's budget allows; counts it otherwise.
#[inline(always)]
fn emit(now: u64, mut event: Event) {
    let Some(stats) = EVENT_STATS.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's element; programs on one CPU do not run concurrently with each other
    // in a way that matters for a statistics budget (a lost update only shifts one token).
    let stats = unsafe { &mut *stats };
    let refill =
        (now.saturating_sub(stats.refilled_ns)) * EVENTS_PER_SECOND_PER_CPU / 1_000_000_000;
    if refill > 0 {
        stats.tokens = (stats.tokens + refill).min(EVENTS_PER_SECOND_PER_CPU);
        stats.refilled_ns = now;
    }
    if stats.tokens == 0 {
        stats.suppressed += 1;
        return;
    }
    stats.tokens -= 1;
    event.time_ns = now;
    // No wakeup: waking the reader from inside a refused connect() made the caller pay for a
    // context switch (refusals measured 2.5 µs without, up to 16 µs with). The daemon drains
    // the ring every 200 ms instead.
    if EVENTS.output(&event, u64::from(BPF_RB_NO_WAKEUP)).is_ok() {
        stats.emitted += 1;
    } else {
        stats.lost += 1;
    }
}
