//! Seeding: a rule created while connections to its destination are open counts them.
//!
//! Every established TCP socket already has a record (sock_ops gives it one), so this
//! iterator walks the socket-storage map itself, in every network namespace at once, and
//! adopts each established socket that matches the new rule and holds no live slot. Adoption
//! is a compare-and-swap on the record's rule id, the same word the close path exchanges, so
//! a socket closing during the walk is either counted and released, or neither.

use aya_ebpf::helpers::generated::bpf_sk_storage_get;
use limiter_common::{CONN_CLOSED, ConnRecord, DestAddr, SeedRequest, phase};

use crate::{
    admit::take_entity_slot,
    conn,
    maps::{RULE_STATE, SEED, conns_ptr},
    rules,
    slots::{force_take, give_back},
    sync::cas,
    verdict::Undecided,
};

/// Context of an `iter/bpf_sk_storage_map` program (struct bpf_iter__bpf_sk_storage_map).
#[repr(C)]
pub struct IterCtx {
    meta: *mut core::ffi::c_void,
    map: *mut core::ffi::c_void,
    sk: *mut core::ffi::c_void,
    value: *mut core::ffi::c_void,
}

/// True if the first `bits` bits of `a` and `b` (port, then address) are equal.
#[inline(always)]
fn prefix_matches(a: &DestAddr, b: &DestAddr, bits: u32) -> bool {
    let mut x = [0u8; 18];
    let mut y = [0u8; 18];
    x[..2].copy_from_slice(&a.port);
    x[2..].copy_from_slice(&a.addr);
    y[..2].copy_from_slice(&b.port);
    y[2..].copy_from_slice(&b.addr);
    let mut left = bits;
    for i in 0..18 {
        if left == 0 {
            break;
        }
        let mask: u8 = if left >= 8 {
            0xff
        } else {
            0xffu8 << (8 - left)
        };
        if x[i] & mask != y[i] & mask {
            return false;
        }
        left = left.saturating_sub(8);
    }
    true
}

/// Adopts the socket at hand if the new rule covers it.
#[inline(always)]
pub fn try_seed(ctx: *mut IterCtx) -> Result<(), Undecided> {
    // SAFETY: ctx is the iterator context; sk is NULL once the walk is over.
    let sk = unsafe { (*ctx).sk };
    if sk.is_null() {
        return Ok(());
    }
    let req: SeedRequest = *SEED.get(0).ok_or(Undecided)?;
    // SAFETY: sk is the iterated socket; the helper returns NULL if it has no record.
    let p = unsafe { bpf_sk_storage_get(conns_ptr(), sk, core::ptr::null_mut(), 0) };
    // SAFETY: non-NULL result points to the socket's record.
    let rec = unsafe { (p as *mut ConnRecord).as_mut() }.ok_or(Undecided)?;
    if rec.phase != phase::ESTABLISHED || !prefix_matches(&rec.dest, &req.dest, req.prefix_len) {
        return Err(Undecided);
    }
    let current = rec.rule_id;
    adopt(rec, current, req.rule_id);
    Ok(())
}

/// Counts an established socket that holds no live slot (`current`: its record's rule id,
/// read by the caller) to `rule_id`, unless the close path or another adoption wins the race.
/// Shared by the iterator and by adoption on the next packet (adopt.rs).
#[inline(always)]
pub fn adopt(rec: &mut ConnRecord, current: u64, rule_id: u64) {
    if current == CONN_CLOSED || current == rule_id {
        return;
    }
    // A slot of another live rule stays where it is; one of a deleted rule is void.
    if current != 0 && RULE_STATE.get_ptr(&current).is_some() {
        return;
    }
    let Some(slots) = rules::slots(rule_id, rec.side) else {
        return;
    };
    // The rule as published: a client-side limit counts per pod, and the pod's share must
    // include what it already holds. (A server-side per-source share is not seeded.)
    let entity = match rules::lookup(&rec.dest) {
        Some(cfg) if cfg.id == rule_id => take_entity_slot(cfg, rec),
        _ => {
            rec.flags = 0;
            None
        }
    };
    if cas(conn::rule_id_ptr(rec), current, rule_id).1 {
        force_take(slots);
        let established = rec.established_ns;
        conn::count_established(rec, Some(slots), rule_id, established);
    } else if let Some(src) = entity {
        give_back(src);
        rec.flags = 0;
    }
}
