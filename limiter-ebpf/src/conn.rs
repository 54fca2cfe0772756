//! Per-socket records: take them, count an established connection, release on close.

use aya_ebpf::{
    bindings::BPF_SK_STORAGE_GET_F_CREATE,
    helpers::{bpf_ktime_get_ns, generated::bpf_sk_storage_get},
};
use limiter_common::{CONN_CLOSED, CONN_F_PER_SOURCE, ConnRecord, SideSlots, phase};

use crate::{
    admit::source_slots,
    maps::conns_ptr,
    rules,
    slots::give_back,
    sync::{fetch_add, fetch_sub, swap},
};

/// The record of socket `sk`, created (zeroed) if `create`.
#[inline(always)]
pub fn record(sk: *mut core::ffi::c_void, create: bool) -> Option<&'static mut ConnRecord> {
    if sk.is_null() {
        return None;
    }
    let flags = if create {
        u64::from(BPF_SK_STORAGE_GET_F_CREATE)
    } else {
        0
    };
    // SAFETY: sk is the context's socket; the helper checks it and returns NULL on failure.
    let p = unsafe { bpf_sk_storage_get(conns_ptr(), sk, core::ptr::null_mut(), flags) };
    // SAFETY: a non-NULL result points to this socket's ConnRecord, valid while it lives.
    unsafe { (p as *mut ConnRecord).as_mut() }
}

#[inline(always)]
pub fn rule_id_ptr(rec: &mut ConnRecord) -> *mut u64 {
    core::ptr::addr_of_mut!(rec.rule_id)
}

/// Counts `rec` (holding a slot of `rule_id`, whose side state the caller found: `slots`) as
/// established now. The caller passes what it looked up already: one lookup per decision.
#[inline(always)]
pub fn count_established(
    rec: &mut ConnRecord,
    slots: Option<*mut SideSlots>,
    rule_id: u64,
    now_ns: u64,
) {
    rec.phase = phase::ESTABLISHED;
    rec.established_ns = now_ns;
    if let Some(slots) = slots {
        // SAFETY: field of a live map value.
        fetch_add(unsafe { core::ptr::addr_of_mut!((*slots).established) }, 1);
    }
    if let Some(stats) = rules::stats(rule_id, rec.side) {
        stats.opened += 1;
    }
}

/// Releases what the socket holds, exactly once (the exchange makes a second call a no-op).
#[inline(always)]
pub fn release(rec: &mut ConnRecord) {
    let rule_id = swap(rule_id_ptr(rec), CONN_CLOSED);
    if rule_id == 0 || rule_id == CONN_CLOSED {
        return;
    }
    // A RESERVED socket's slot still sits in a pending bucket, which expires by itself;
    // giving it back here too would free it twice.
    if rec.phase == phase::RESERVED {
        return;
    }
    if let Some(slots) = rules::slots(rule_id, rec.side) {
        give_back(slots);
        if rec.phase == phase::ESTABLISHED {
            // SAFETY: field of a live map value.
            fetch_sub(unsafe { core::ptr::addr_of_mut!((*slots).established) }, 1);
        }
    }
    if rec.flags & CONN_F_PER_SOURCE != 0
        && let Some(src) = source_slots(rule_id, &rec.peer)
    {
        give_back(src);
    }
    if rec.phase == phase::ESTABLISHED
        && let Some(stats) = rules::stats(rule_id, rec.side)
    {
        stats.closed += 1;
        // SAFETY: reading the monotonic clock has no preconditions.
        let now = unsafe { bpf_ktime_get_ns() };
        stats.lifetime_ns += now.saturating_sub(rec.established_ns);
    }
}
