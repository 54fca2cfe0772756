//! Slots: how a connection is admitted without ever exceeding a limit.
//!
//! A side of a rule has one counter, `used`, of slots taken (established connections plus
//! handshakes in flight). A new connection is admitted only by raising `used` from below the
//! limit with compare-and-swap, so concurrent SYNs on different CPUs can never both take the
//! last slot. A handshake's slot is also recorded in a pending bucket of the current epoch
//! (one-second buckets, `epoch << 32 | count` in one word); when the connection is
//! established the bucket count is decremented and the slot stays in `used` as an established
//! one. A handshake that never completes leaves its count in the bucket, and the next admission
//! after the bucket's lifetime subtracts the whole bucket from `used` (reclaim). Reclaim and
//! completion race on the same word with compare-and-swap, so a slot is released exactly once.

use limiter_common::{
    PENDING_BUCKET_NS, PENDING_BUCKETS, PENDING_LIFETIME_BUCKETS, SideSlots, pack_pending,
    unpack_pending,
};

use crate::sync::{cas, fetch_add, fetch_sub, load};

/// Retries of a compare-and-swap loop before giving up. Contention comes from at most one
/// softirq or syscall per CPU at a time, so a handful of retries always suffices in practice;
/// a loop that still fails refuses the connection (never over-admits).
const CAS_RETRIES: u32 = 16;

/// Current pending-bucket epoch.
#[inline(always)]
pub fn epoch_now(now_ns: u64) -> u64 {
    now_ns / PENDING_BUCKET_NS
}

#[inline(always)]
fn used_ptr(s: *mut SideSlots) -> *mut u64 {
    // SAFETY: s points into a map value; taking a field address does not read it.
    unsafe { core::ptr::addr_of_mut!((*s).used) }
}

#[inline(always)]
fn bucket_ptr(s: *mut SideSlots, epoch: u64) -> *mut u64 {
    let i = (epoch % PENDING_BUCKETS as u64) as usize;
    // SAFETY: as above; i < PENDING_BUCKETS.
    unsafe { core::ptr::addr_of_mut!((*s).pending[i]) }
}

/// Returns expired handshake reservations to the free slots.
#[inline(always)]
pub fn reclaim(s: *mut SideSlots, now_epoch: u64) {
    for i in 0..PENDING_BUCKETS as u64 {
        let b = bucket_ptr(s, i);
        let word = load(b);
        let (epoch, count) = unpack_pending(word);
        if count > 0 && now_epoch >= epoch + PENDING_LIFETIME_BUCKETS && cas(b, word, 0).1 {
            fetch_sub(used_ptr(s), count);
        }
    }
}

/// Takes one slot if fewer than `limit` are used (`limit` 0: no limit). True if taken.
#[inline(always)]
pub fn take(s: *mut SideSlots, limit: u32) -> bool {
    let used = used_ptr(s);
    if limit == 0 {
        fetch_add(used, 1);
        return true;
    }
    let mut cur = load(used);
    for _ in 0..CAS_RETRIES {
        if cur >= u64::from(limit) {
            return false;
        }
        let (seen, swapped) = cas(used, cur, cur + 1);
        if swapped {
            return true;
        }
        cur = seen;
    }
    false
}

/// Gives back a slot taken with [`take`] and not recorded as pending or established.
#[inline(always)]
pub fn give_back(s: *mut SideSlots) {
    fetch_sub(used_ptr(s), 1);
}

/// Counts a slot unconditionally (a connection that is established whatever we decide: adopted
/// at rule creation, or let through in dry-run).
#[inline(always)]
pub fn force_take(s: *mut SideSlots) {
    fetch_add(used_ptr(s), 1);
}

/// Records a taken slot as a handshake reservation in the current bucket. False (and the slot
/// given back) if the bucket could not be updated; the caller then refuses the connection.
#[inline(always)]
pub fn mark_pending(s: *mut SideSlots, now_epoch: u64) -> bool {
    let b = bucket_ptr(s, now_epoch);
    let mut word = load(b);
    for _ in 0..CAS_RETRIES {
        let (epoch, count) = unpack_pending(word);
        // The ring has more buckets than a reservation lives, so a bucket of another epoch
        // at this index has expired: take it over and return its count to the free slots.
        let (next, stale) = if epoch == now_epoch {
            (pack_pending(now_epoch, count + 1), 0)
        } else {
            (pack_pending(now_epoch, 1), count)
        };
        let (seen, swapped) = cas(b, word, next);
        if swapped {
            if stale > 0 {
                fetch_sub(used_ptr(s), stale);
            }
            return true;
        }
        word = seen;
    }
    give_back(s);
    false
}

/// Removes a live reservation of `epoch` from its bucket, keeping its slot in `used`. False if
/// the reservation had expired (its slot was or will be reclaimed with the bucket).
#[inline(always)]
pub fn unpend(s: *mut SideSlots, epoch: u64, now_epoch: u64) -> bool {
    let b = bucket_ptr(s, epoch);
    let mut word = load(b);
    for _ in 0..CAS_RETRIES {
        let (e, count) = unpack_pending(word);
        if e != epoch || count == 0 || now_epoch >= epoch + PENDING_LIFETIME_BUCKETS {
            return false;
        }
        let (seen, swapped) = cas(b, word, pack_pending(e, count - 1));
        if swapped {
            return true;
        }
        word = seen;
    }
    false
}

/// Turns the reservation made in `epoch` into a held slot; if it expired meanwhile, takes a
/// slot unconditionally, because the connection exists now and must be counted.
#[inline(always)]
pub fn settle(s: *mut SideSlots, epoch: u64, now_epoch: u64) {
    if !unpend(s, epoch, now_epoch) {
        force_take(s);
    }
}

/// Token bucket as GCRA on one word: admits if the theoretical arrival time is not more than
/// `burst` intervals ahead of now. `rate` 0: no rate limit.
#[inline(always)]
pub fn rate_admit(s: *mut SideSlots, rate: u32, burst: u32, now_ns: u64) -> bool {
    if rate == 0 {
        return true;
    }
    let interval = 1_000_000_000 / u64::from(rate);
    let tolerance = interval * u64::from(burst);
    // SAFETY: field address of a map value.
    let tat_ptr = unsafe { core::ptr::addr_of_mut!((*s).rate_tat_ns) };
    let mut tat = load(tat_ptr);
    for _ in 0..CAS_RETRIES {
        let base = if tat > now_ns { tat } else { now_ns };
        if base - now_ns > tolerance {
            return false;
        }
        let (seen, swapped) = cas(tat_ptr, tat, base + interval);
        if swapped {
            return true;
        }
        tat = seen;
    }
    false
}
