//! Adoption by the next packet: how a rule counts the connections already open to its
//! destination on kernels where the seeding iterator (seed.rs) cannot run.
//!
//! Every established socket already has a record (sock_ops gives it one). When the daemon
//! creates a rule it raises the adoption generation; the first packet a socket sends after
//! that (cgroup_skb egress) looks its destination up once and, if a rule now covers it and the
//! socket holds no live slot, adopts it exactly as the iterator would (seed::adopt, the same
//! compare-and-swap against the close path). A socket remembers the generation it was checked
//! against, so each costs one rule lookup per rule creation, not one per packet. An idle
//! connection is counted only when it next carries a packet: the daemon reports such rules'
//! seeding as inexact in `limiter status`.
//!
//! Only sent packets adopt: a socket that receives data acknowledges it, so the egress hook
//! sees every connection that carries a packet either way, and looking the record up on
//! received packets too cost each connection a socket-storage lookup per packet for nothing
//! (250-400 ns per server-side connection under bpf_stats once any rule had been created).
//!
//! Off (one constant branch, see features.rs) wherever the iterator runs.

use limiter_common::{CONN_CLOSED, ConnRecord, phase};

use crate::{conn, features, maps::ADOPT_GEN, rules, seed};

/// The adoption generation a packet's socket must be checked against: 0 where adoption by
/// packet is off (the iterator runs on this kernel) or no rule was created yet, so there is
/// nothing to adopt.
///
/// A plain u32, not an Option: an Option's undefined payload on its None path once made LLVM
/// spill a register the helper call had clobbered, which the verifier refuses (R1 !read_ok).
#[inline(always)]
fn generation() -> u32 {
    if !features::adopt_on_packet() {
        return 0;
    }
    ADOPT_GEN.get(0).copied().unwrap_or(0)
}

/// Adopts the socket `sk` of a packet (egress) if a rule created since it was last checked now
/// covers it.
#[inline(always)]
pub fn on_packet(sk: *mut core::ffi::c_void) {
    let generation = generation();
    if generation != 0
        && let Some(rec) = conn::record(sk, false)
    {
        check(rec, generation);
    }
}

/// Adopts the socket of `rec` if it was last checked before `generation` and a rule now covers
/// it.
#[inline(always)]
fn check(rec: &mut ConnRecord, generation: u32) {
    if rec.adopt_gen == generation || rec.phase != phase::ESTABLISHED {
        return;
    }
    rec.adopt_gen = generation;
    let current = rec.rule_id;
    if current == CONN_CLOSED {
        return;
    }
    if let Some(cfg) = rules::lookup(&rec.dest) {
        let rule_id = cfg.id;
        seed::adopt(rec, current, rule_id);
    }
}
