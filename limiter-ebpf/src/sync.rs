//! Atomic operations on map memory.
//!
//! `core::sync::atomic` offers no compare-and-swap on the BPF target (its spec says
//! `atomic-cas: false`), although the kernel has had BPF_ATOMIC cmpxchg/fetch-add since 5.12.
//! The intrinsics compile to exactly those instructions (with bpf-linker's `+alu32`, see
//! build.rs). Every slot counter is changed only through these functions.

use core::intrinsics::{AtomicOrdering::SeqCst, atomic_cxchg, atomic_xadd, atomic_xchg};

/// Reads a counter that other CPUs update atomically (an aligned 64-bit load is atomic).
#[inline(always)]
pub fn load(p: *const u64) -> u64 {
    // SAFETY: callers pass pointers into map values, valid for the program's run.
    unsafe { core::ptr::read_volatile(p) }
}

/// Writes a word that other CPUs read (an aligned 64-bit store is atomic); for fields only
/// the winner of a compare-and-swap writes, and statistics.
#[inline(always)]
pub fn store(p: *mut u64, v: u64) {
    // SAFETY: as for `load`.
    unsafe { core::ptr::write_volatile(p, v) }
}

/// Adds `v` (wrapping; pass `0u64.wrapping_sub(n)` to subtract) and returns the old value.
#[inline(always)]
pub fn fetch_add(p: *mut u64, v: u64) -> u64 {
    // SAFETY: as for `load`; the instruction is atomic.
    unsafe { atomic_xadd::<u64, u64, { SeqCst }>(p, v) }
}

/// Subtracts `v`, never below zero as seen by readers that clamp (counts are only ever
/// decremented after a matching increment, so this does not underflow in practice).
#[inline(always)]
pub fn fetch_sub(p: *mut u64, v: u64) -> u64 {
    fetch_add(p, 0u64.wrapping_sub(v))
}

/// Replaces `*p` with `new` if it equals `old`. Returns the value seen and whether it swapped.
#[inline(always)]
pub fn cas(p: *mut u64, old: u64, new: u64) -> (u64, bool) {
    // SAFETY: as for `load`.
    let (seen, _) = unsafe { atomic_cxchg::<u64, { SeqCst }, { SeqCst }>(p, old, new) };
    // Success is derived from the value seen rather than from cmpxchg's own flag: with the
    // flag, rustc 1.99's bitcode fails to load in bpf-linker ("Invalid br record").
    (seen, seen == old)
}

/// Stores `new` and returns the previous value.
#[inline(always)]
pub fn swap(p: *mut u64, new: u64) -> u64 {
    // SAFETY: as for `load`.
    unsafe { atomic_xchg::<u64, { SeqCst }>(p, new) }
}
