//! Circuit breakers (docs/breaking.md): connect() asks the endpoint's breaker ([`on_connect`]),
//! and the socket's handshake outcome is reported back to it ([`report`], from sock_ops and
//! the ingress hook, see outcome.rs).
//!
//! The state machine (closed -> open -> half-open -> closed or open again) lives in one word
//! per breaker, its [`gate`]: state and deadline change together by compare-and-swap, so of
//! two CPUs tripping the same breaker exactly one opens it, and a reader never sees "open"
//! with a stale deadline. The policies:
//! - consecutive failures (Istio/Envoy): a counter, reset by a success;
//! - failure ratio and slow ratio over a window (Sentinel degrade rules);
//! - the SRE adaptive throttle (Kratos): while closed, reject locally with probability
//!   max(0, (total - K x accepts) / (total + 1)).
//!
//! Refusals by limiter itself never reach a breaker: only handshakes that went out report.

use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_get_prandom_u32};
use limiter_common::{
    Breaker, BreakerConfig, BreakerKey, DestAddr,
    breaker_state::{CLOSED, HALF_OPEN, OPEN},
    gate, gate_deadline, gate_state, outcome, pack_pending, unpack_pending, window,
};

use crate::{
    events,
    maps::{BREAKER_RULES, BREAKERS, EJECTED},
    sync::{cas, fetch_add, fetch_sub, load, store, swap},
};

/// A field of a breaker in map memory.
macro_rules! field {
    ($b:expr, $($f:tt)+) => {
        // SAFETY: $b points to a live map value; taking a field address does not read it.
        unsafe { core::ptr::addr_of_mut!((*$b).$($f)+) }
    };
}

/// Retries of a compare-and-swap loop (contention is at most one caller per CPU).
const CAS_RETRIES: u32 = 8;

/// What connect() may do.
pub enum Gate {
    /// Go ahead.
    Pass,
    /// Go ahead as one of the half-open breaker's probes.
    Probe,
    /// Refuse at once.
    Refuse,
}

/// The breaker policy of a rule (set only on rules whose flags say BREAKER).
#[inline(always)]
pub fn config(rule_id: u64) -> Option<&'static BreakerConfig> {
    // SAFETY: a plain read of a map value that only userspace writes (whole-value updates).
    unsafe { BREAKER_RULES.get(&rule_id) }
}

#[inline(always)]
pub fn key(rule_id: u64, endpoint: &DestAddr) -> BreakerKey {
    BreakerKey {
        rule_id,
        endpoint: *endpoint,
        _pad: [0; 6],
    }
}

/// The value a breaker is created with, from the object's data rather than the stack: it
/// alone would take 200 of connect4/6's 512 stack bytes.
static NEW_BREAKER: Breaker = Breaker::NEW;

/// The breaker of `key`, created closed on first use. None when the table is full: that
/// endpoint then has no breaker and its connections flow.
#[inline(always)]
fn find_or_create(key: &BreakerKey, now: u64) -> Option<*mut Breaker> {
    if let Some(p) = BREAKERS.get_ptr_mut(key) {
        return Some(p);
    }
    // A concurrent insert of the same key fails with EEXIST; the lookup then finds it.
    let created = BREAKERS
        .insert(key, &NEW_BREAKER, u64::from(BPF_NOEXIST))
        .is_ok();
    let b = BREAKERS.get_ptr_mut(key)?;
    if created {
        // Closed since now.
        store(field!(b, since_ns), now);
    }
    Some(b)
}

/// The breaker [`on_connect`] found, for what the same connect() does after its verdict
/// (returning a probe, counting a refusal) without a second lookup.
#[derive(Clone, Copy)]
pub struct Found(*mut Breaker);

/// Asks the breaker of `key` whether a connect() may go out at `now`; None when the table is
/// full and the endpoint has no breaker (its connections flow).
#[inline(always)]
pub fn on_connect(key: &BreakerKey, cfg: &BreakerConfig, now: u64) -> Option<(Gate, Found)> {
    let b = find_or_create(key, now)?;
    // A lost update of this statistic only delays forgetting the breaker.
    store(field!(b, last_ns), now);
    let word = load(field!(b, gate));
    let verdict = match gate_state(word) {
        CLOSED if cfg.sre_k_milli != 0 && sre_rejects(b, cfg, now) => Gate::Refuse,
        CLOSED => Gate::Pass,
        OPEN if now < gate_deadline(word) => Gate::Refuse,
        // The open time has passed, or a half-open breaker saw no probe outcome for an open
        // time (a probe whose connect() failed before its SYN never reports): the caller that
        // moves the gate is the first of a new round of probes.
        _ if now >= gate_deadline(word) => {
            if cas(field!(b, gate), word, gate(HALF_OPEN, now + cfg.open_ns)).1 {
                // The gate's winner alone writes these.
                store(
                    field!(b, probes_left),
                    u64::from(cfg.probes.saturating_sub(1)),
                );
                if gate_state(word) == OPEN {
                    store(field!(b, since_ns), now);
                }
                if gate_state(word) == OPEN {
                    events::breaker(
                        now,
                        key.rule_id,
                        &key.endpoint,
                        HALF_OPEN,
                        outcome::OPEN_TIME_PASSED,
                    );
                }
                Gate::Probe
            } else {
                Gate::Refuse
            }
        }
        _ if take_probe(b) => Gate::Probe,
        _ => Gate::Refuse,
    };
    if matches!(verdict, Gate::Refuse) {
        count_window(b, window::REJECTED, cfg, now);
    }
    Some((verdict, Found(b)))
}

/// Gives back a probe of the breaker of `key` that did not go out (the connection was refused
/// for another reason). Found again by its key: a pointer carried from [`on_connect`] through
/// the admission decision made the verifier walk the decision twice (see verifier.rs).
#[inline(always)]
pub fn return_probe(key: &BreakerKey) {
    if let Some(b) = BREAKERS.get_ptr_mut(key) {
        fetch_add(field!(b, probes_left), 1);
    }
}

/// Counts a connect() this breaker refused, by action (limiter_common::action).
#[inline(always)]
pub fn count_refused(found: Found, action: usize) {
    if action < limiter_common::action::COUNT {
        fetch_add(field!(found.0, refused_total[action]), 1);
    }
}

#[inline(always)]
fn take_probe(b: *mut Breaker) -> bool {
    let p = field!(b, probes_left);
    let mut left = load(p);
    for _ in 0..CAS_RETRIES {
        if left == 0 {
            return false;
        }
        let (seen, swapped) = cas(p, left, left - 1);
        if swapped {
            return true;
        }
        left = seen;
    }
    false
}

/// Reports how a handshake to `key` ended (`kind`: limiter_common::outcome), `rtt_ns` after
/// its connect(). `probe`: it was a half-open breaker's probe. `endpoint`: the breaker is one
/// of a Service's endpoints (bounded by the rule's `max_ejected`).
#[inline(always)]
pub fn report(
    key: &BreakerKey,
    cfg: &BreakerConfig,
    kind: usize,
    rtt_ns: u64,
    probe: bool,
    endpoint: bool,
    now: u64,
) {
    let Some(b) = BREAKERS.get_ptr_mut(key) else {
        return;
    };
    store(field!(b, last_ns), now);
    let failed = kind != outcome::SUCCESS;
    let slow = kind == outcome::TIMEOUT || (!failed && rtt_ns > cfg.slow_ns);
    count_window(b, window::ATTEMPTS, cfg, now);
    if failed {
        count_window(b, window::FAILURES, cfg, now);
        let i = kind - 1;
        if i < outcome::FAILURE_KINDS {
            fetch_add(field!(b, failures_total[i]), 1);
        }
    } else {
        fetch_add(field!(b, successes_total), 1);
    }
    if slow {
        count_window(b, window::SLOW, cfg, now);
        fetch_add(field!(b, slow_total), 1);
    }
    let word = load(field!(b, gate));
    match gate_state(word) {
        HALF_OPEN if probe && failed => reopen(b, key, cfg, word, kind, now),
        HALF_OPEN if probe => close(b, key, word, now),
        CLOSED => {
            let run = if failed {
                fetch_add(field!(b, consecutive), 1) + 1
            } else {
                swap(field!(b, consecutive), 0);
                0
            };
            if cfg.consecutive_failures != 0 && run >= u64::from(cfg.consecutive_failures) {
                trip(b, key, cfg, word, kind, endpoint, now);
            } else if (failed || slow)
                && let Some(cause) = ratio_trips(b, cfg, now)
            {
                trip(b, key, cfg, word, cause, endpoint, now);
            }
        }
        // Outcomes of connections admitted before the breaker opened change nothing.
        _ => {}
    }
}

/// Opens a closed breaker (`word` is its gate as read). A breaker of one of a Service's
/// endpoints first takes one of the rule's `max_ejected` places, so a Service is never cut
/// off by its own breakers; without a place it stays closed and counts an overflow.
#[inline(always)]
fn trip(
    b: *mut Breaker,
    key: &BreakerKey,
    cfg: &BreakerConfig,
    word: u64,
    cause: usize,
    endpoint: bool,
    now: u64,
) {
    let bounded = endpoint && cfg.max_ejected != u32::MAX;
    if bounded && !take_ejection(key.rule_id, cfg.max_ejected) {
        fetch_add(field!(b, ejection_overflow_total), 1);
        return;
    }
    let (since, ejections) = (load(field!(b, since_ns)), load(field!(b, ejections)));
    // A breaker that stayed closed for the longest open time starts its multiplier over.
    let n = if now.saturating_sub(since) >= cfg.max_open_ns {
        1
    } else {
        ejections + 1
    };
    if !cas(field!(b, gate), word, gate(OPEN, now + open_time(cfg, n))).1 {
        if bounded {
            give_ejection(key.rule_id);
        }
        return;
    }
    // The gate's winner alone writes these.
    store(field!(b, ejections), n);
    store(field!(b, since_ns), now);
    store(field!(b, holds_ejection), u64::from(bounded));
    swap(field!(b, consecutive), 0);
    fetch_add(field!(b, ejections_total), 1);
    events::breaker(now, key.rule_id, &key.endpoint, OPEN, cause);
}

/// A probe failed: open again, for longer.
#[inline(always)]
fn reopen(
    b: *mut Breaker,
    key: &BreakerKey,
    cfg: &BreakerConfig,
    word: u64,
    cause: usize,
    now: u64,
) {
    let n = load(field!(b, ejections)) + 1;
    if cas(field!(b, gate), word, gate(OPEN, now + open_time(cfg, n))).1 {
        // The gate's winner alone writes these.
        store(field!(b, ejections), n);
        store(field!(b, since_ns), now);
        fetch_add(field!(b, ejections_total), 1);
        events::breaker(now, key.rule_id, &key.endpoint, OPEN, cause);
    }
}

/// A probe succeeded: close, and give back the Service's ejection place.
#[inline(always)]
fn close(b: *mut Breaker, key: &BreakerKey, word: u64, now: u64) {
    if cas(field!(b, gate), word, gate(CLOSED, 0)).1 {
        // The gate's winner alone writes this.
        store(field!(b, since_ns), now);
        swap(field!(b, consecutive), 0);
        if swap(field!(b, holds_ejection), 0) != 0 {
            give_ejection(key.rule_id);
        }
        events::breaker(now, key.rule_id, &key.endpoint, CLOSED, outcome::SUCCESS);
    }
}

/// Open time of the `n`-th ejection in a row: n x open, at most max_open.
#[inline(always)]
fn open_time(cfg: &BreakerConfig, n: u64) -> u64 {
    // Compared by division: a checked multiplication needs a 128-bit helper BPF lacks.
    if cfg.open_ns == 0 || n > cfg.max_open_ns / cfg.open_ns {
        cfg.max_open_ns
    } else {
        cfg.open_ns * n
    }
}

#[inline(always)]
fn take_ejection(rule_id: u64, max: u32) -> bool {
    let _ = EJECTED.insert(&rule_id, &0, u64::from(BPF_NOEXIST));
    let Some(p) = EJECTED.get_ptr_mut(&rule_id) else {
        return false;
    };
    let mut open = load(p);
    for _ in 0..CAS_RETRIES {
        if open >= u64::from(max) {
            return false;
        }
        let (seen, swapped) = cas(p, open, open + 1);
        if swapped {
            return true;
        }
        open = seen;
    }
    false
}

#[inline(always)]
fn give_ejection(rule_id: u64) {
    if let Some(p) = EJECTED.get_ptr_mut(&rule_id) {
        fetch_sub(p, 1);
    }
}

/// The window's half of `now`: windows are two halves, each word `epoch << 32 | count`.
#[inline(always)]
fn half_epoch(cfg: &BreakerConfig, now: u64) -> u64 {
    now / (cfg.window_ns / 2).max(1)
}

#[inline(always)]
fn count_window(b: *mut Breaker, counter: usize, cfg: &BreakerConfig, now: u64) {
    if counter >= window::COUNTERS {
        return;
    }
    let epoch = half_epoch(cfg, now);
    let p = field!(b, window[counter][(epoch & 1) as usize]);
    let mut word = load(p);
    for _ in 0..CAS_RETRIES {
        let (e, count) = unpack_pending(word);
        let next = if e == epoch {
            pack_pending(epoch, count + 1)
        } else {
            pack_pending(epoch, 1)
        };
        let (seen, swapped) = cas(p, word, next);
        if swapped {
            return;
        }
        word = seen;
    }
}

/// The count of `counter` over the window (this half and the previous one).
#[inline(always)]
fn window_sum(b: *mut Breaker, counter: usize, cfg: &BreakerConfig, now: u64) -> u64 {
    if counter >= window::COUNTERS {
        return 0;
    }
    let epoch = half_epoch(cfg, now);
    let mut sum = 0;
    for half in 0..2 {
        let (e, count) = unpack_pending(load(field!(b, window[counter][half])));
        if e == epoch || e + 1 == epoch {
            sum += count;
        }
    }
    sum
}

/// Which ratio policy, if any, trips now (Sentinel's check on each completed call).
#[inline(always)]
fn ratio_trips(b: *mut Breaker, cfg: &BreakerConfig, now: u64) -> Option<usize> {
    let attempts = window_sum(b, window::ATTEMPTS, cfg, now);
    if attempts == 0 || attempts < u64::from(cfg.min_attempts) {
        return None;
    }
    let over = |n: u64, ratio: u32| ratio != 0 && n * 10_000 >= u64::from(ratio) * attempts;
    if over(window_sum(b, window::FAILURES, cfg, now), cfg.failure_ratio) {
        Some(outcome::FAILURE_RATIO)
    } else if over(window_sum(b, window::SLOW, cfg, now), cfg.slow_ratio) {
        Some(outcome::SLOW_RATIO)
    } else {
        None
    }
}

/// The SRE throttle's draw: reject with probability max(0, (total - K x accepts) / (total +
/// 1)), total counting this window's ended handshakes and local rejections.
#[inline(always)]
fn sre_rejects(b: *mut Breaker, cfg: &BreakerConfig, now: u64) -> bool {
    let attempts = window_sum(b, window::ATTEMPTS, cfg, now);
    let failures = window_sum(b, window::FAILURES, cfg, now);
    let total = attempts + window_sum(b, window::REJECTED, cfg, now);
    if total == 0 || total < u64::from(cfg.min_attempts) {
        return false;
    }
    let accepts = attempts.saturating_sub(failures);
    let (total_m, needed_m) = (total * 1000, accepts * u64::from(cfg.sre_k_milli));
    if total_m <= needed_m {
        return false;
    }
    // The probability in 1/65536ths against a 16-bit draw: no product can overflow.
    let p16 = (total_m - needed_m) * 65_536 / ((total + 1) * 1000);
    // SAFETY: the helper has no preconditions.
    let draw = u64::from(unsafe { bpf_get_prandom_u32() } & 0xffff);
    draw < p16
}
