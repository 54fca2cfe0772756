//! sock_ops at the cgroup v2 root: exact accounting of established connections.
//!
//! Every TCP socket that becomes established, in any network namespace, gets a record and the
//! state callback, so its close is seen. If a rule covers its destination the socket holds one
//! slot of that rule: the slot its handshake reserved (server side: the flow's pending entry;
//! client side: the connect() reservation) or, failing that, a slot taken unconditionally,
//! because the connection exists and must be counted.

use aya_ebpf::{
    bindings::{
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_RTO_CB, BPF_SOCK_OPS_RTO_CB_FLAG, BPF_SOCK_OPS_STATE_CB,
        BPF_SOCK_OPS_STATE_CB_FLAG, BPF_SOCK_OPS_TCP_CONNECT_CB, BPF_TCP_CLOSE, BPF_TCP_SYN_SENT,
    },
    helpers::{bpf_ktime_get_ns, generated::bpf_get_netns_cookie},
    programs::SockOpsContext,
};
use aya_log_ebpf::warn;
use limiter_common::{
    CONN_CLOSED, CONN_F_BREAKER, ConnRecord, FlowKey, pending_flags, phase, rule_kinds, side,
};

use core::ptr::addr_of;

use crate::{
    addr::{self, ctx_ip6, ctx_u32},
    conn,
    maps::PENDING,
    outcome, rules,
    slots::{epoch_now, force_take, settle},
    sync::cas,
    verdict::Undecided,
};

/// Everything read from the context, once, before branching (the verifier is happier, and
/// the fields mean the same in every callback that uses them).
struct Sock {
    sk: *mut core::ffi::c_void,
    local: [u8; 16],
    remote: [u8; 16],
    local_port: u16,
    remote_port: u16,
}

#[inline(always)]
fn read(ctx: &SockOpsContext) -> Sock {
    let ops = ctx.ops;
    // SAFETY: field addresses of the program's context; read once each (addr::ctx_u32).
    unsafe {
        let family = ctx_u32(addr_of!((*ops).family));
        let (local_ip4, remote_ip4) = (
            ctx_u32(addr_of!((*ops).local_ip4)),
            ctx_u32(addr_of!((*ops).remote_ip4)),
        );
        let local_ip6 = ctx_ip6(addr_of!((*ops).local_ip6));
        let remote_ip6 = ctx_ip6(addr_of!((*ops).remote_ip6));
        let (local_port, remote_port) = (
            ctx_u32(addr_of!((*ops).local_port)),
            ctx_u32(addr_of!((*ops).remote_port)),
        );
        Sock {
            sk: (*ops).__bindgen_anon_2.sk as *mut core::ffi::c_void,
            local: addr::from_ctx(family, local_ip4, local_ip6),
            remote: addr::from_ctx(family, remote_ip4, remote_ip6),
            // local_port is in host order; remote_port holds the network-order port in its
            // upper half on little-endian hosts, which u32::from_be turns back into the port.
            local_port: local_port as u16,
            remote_port: u32::from_be(remote_port) as u16,
        }
    }
}

/// Accounts for the callback at hand. sock_ops has no verdict to give: `Undecided` only says
/// the connection went uncounted.
pub fn try_sock_ops(ctx: &SockOpsContext) -> Result<(), Undecided> {
    let op = ctx.op();
    match op {
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => passive_established(ctx),
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => active_established(ctx),
        BPF_SOCK_OPS_TCP_CONNECT_CB => connecting(ctx),
        BPF_SOCK_OPS_STATE_CB => {
            // arg 0 is the old state, arg 1 the new one.
            if ctx.arg(1) == BPF_TCP_CLOSE {
                // Only the socket is needed here, unless a breaker needs the addresses.
                // SAFETY: the uapi's pointer member of the program's context.
                let sk = unsafe { (*ctx.ops).__bindgen_anon_2.sk } as *mut core::ffi::c_void;
                if let Some(rec) = conn::record(sk, false) {
                    if rec.flags & CONN_F_BREAKER != 0 {
                        let s = read(ctx);
                        // SAFETY: reading the monotonic clock has no preconditions.
                        let now = unsafe { bpf_ktime_get_ns() };
                        let remote = addr::dest(s.remote, s.remote_port);
                        outcome::closed(rec, ctx.arg(0), &(s.local, s.local_port), &remote, now);
                    }
                    conn::release(rec);
                }
            }
            Ok(())
        }
        BPF_SOCK_OPS_RTO_CB => {
            // Only requested for a connecting socket under a breaker (see `connecting`).
            let s = read(ctx);
            // SAFETY: the uapi's state member of the program's context.
            if unsafe { (*ctx.ops).state } == BPF_TCP_SYN_SENT
                && let Some(rec) = conn::record(s.sk, false)
            {
                // SAFETY: reading the monotonic clock has no preconditions.
                let now = unsafe { bpf_ktime_get_ns() };
                let remote = addr::dest(s.remote, s.remote_port);
                outcome::syn_retransmitted(rec, &(s.local, s.local_port), &remote, now);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Asks for the state callback (the close), and no retransmission callback: those are only
/// wanted while a breaker waits for a handshake's outcome (`watch_handshake`).
fn enable_close_callback(ctx: &SockOpsContext) {
    let flags = (ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) & !BPF_SOCK_OPS_RTO_CB_FLAG;
    let _ = ctx.set_cb_flags(flags as i32);
}

/// Asks for the state callback and the retransmission-timeout callback: a SYN unanswered for
/// the initial SYN timeout is a breaker's timeout (outcome.rs).
fn watch_handshake(ctx: &SockOpsContext) {
    let flags = ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG | BPF_SOCK_OPS_RTO_CB_FLAG;
    let _ = ctx.set_cb_flags(flags as i32);
}

/// The socket's record, or a warning (a rare event: the kernel could not allocate socket
/// storage, so this connection goes uncounted; it never leaks a slot).
#[inline(always)]
fn record_or_warn(ctx: &SockOpsContext, s: &Sock) -> Result<&'static mut ConnRecord, Undecided> {
    conn::record(s.sk, true).ok_or_else(|| {
        warn!(
            ctx,
            "limiter: no socket storage for a connection on local port {}: it is not counted",
            s.local_port
        );
        Undecided
    })
}

fn passive_established(ctx: &SockOpsContext) -> Result<(), Undecided> {
    let s = read(ctx);
    let rec = record_or_warn(ctx, &s)?;
    enable_close_callback(ctx);
    rec.side = side::INBOUND;
    rec.dest = addr::dest(s.local, s.local_port);
    rec.peer = s.remote;
    // SAFETY: reading the monotonic clock has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    rec.established_ns = now;
    rec.phase = phase::ESTABLISHED;
    if !rules::exist(rule_kinds::ANY) {
        return Ok(());
    }
    let Some(cfg) = rules::lookup(&rec.dest) else {
        return Ok(());
    };
    let rule_id = cfg.id;
    let slots = rules::slots(rule_id, side::INBOUND).ok_or(Undecided)?;
    let flow = FlowKey {
        saddr: s.remote,
        daddr: s.local,
        sport: s.remote_port,
        dport: s.local_port,
    };
    let epoch = epoch_now(now);
    // SAFETY: copying the value out of a live map element.
    let pending = PENDING.get_ptr(&flow).map(|p| unsafe { *p });
    match pending {
        Some(p) if p.rule_id == rule_id && p.flags & pending_flags::NO_SLOT != 0 => {
            // Let in by a dry run over the limit: it held no slot; it takes one now.
            force_take(slots);
            let _ = PENDING.remove(&flow);
        }
        Some(p) if p.rule_id == rule_id => {
            let (pending_epoch, flags) = (u64::from(p.epoch), p.flags);
            settle(slots, pending_epoch, epoch);
            if flags & pending_flags::PER_SOURCE != 0
                && let Some(src) = crate::admit::source_slots(rule_id, &s.remote)
            {
                settle(src, pending_epoch, epoch);
                rec.flags |= limiter_common::CONN_F_PER_SOURCE;
            }
            let _ = PENDING.remove(&flow);
        }
        _ => force_take(slots),
    }
    // A seeding run may adopt this socket meanwhile (it is ESTABLISHED with no rule): the
    // compare-and-swap lets exactly one of us count it.
    if !cas(conn::rule_id_ptr(rec), 0, rule_id).1 {
        // A seeding run counted it first; undo ours.
        crate::slots::give_back(slots);
        return Ok(());
    }
    conn::count_established(rec, Some(slots), rule_id, now);
    Ok(())
}

fn connecting(ctx: &SockOpsContext) -> Result<(), Undecided> {
    let s = read(ctx);
    // Client-side drop mode takes its slot when the SYN leaves (client::try_egress_syn): the
    // close callback must be on by then to release it if the handshake fails, and the record
    // must name the caller's pod, which the egress hook cannot read itself.
    if rules::exist(rule_kinds::CLIENT_DROP)
        && crate::client::client_drop_rule(&addr::dest(s.remote, s.remote_port)).is_some()
    {
        enable_close_callback(ctx);
        if let Some(rec) = conn::record(s.sk, true) {
            // SAFETY: the helper reads the socket's network namespace from the context.
            let cookie = unsafe { bpf_get_netns_cookie(ctx.ops as *mut core::ffi::c_void) };
            rec.peer = crate::admit::client_key(cookie);
        }
        return Ok(());
    }
    // No record: not a connection connect() let through under a rule.
    let rec = conn::record(s.sk, false).ok_or(Undecided)?;
    let rule_id = rec.rule_id;
    if rule_id == 0 || rule_id == CONN_CLOSED || rec.phase != phase::RESERVED {
        return Ok(());
    }
    // The SYN is about to leave: the connect() reservation becomes a held slot, released by
    // the close callback whether the handshake succeeds or fails.
    if rec.flags & CONN_F_BREAKER != 0 {
        watch_handshake(ctx);
    } else {
        enable_close_callback(ctx);
    }
    // SAFETY: reading the monotonic clock has no preconditions.
    let epoch = epoch_now(unsafe { bpf_ktime_get_ns() });
    let reserved = u64::from(rec.reserve_epoch);
    if let Some(slots) = rules::slots(rule_id, side::OUTBOUND) {
        settle(slots, reserved, epoch);
    }
    if rec.flags & limiter_common::CONN_F_PER_SOURCE != 0
        && let Some(src) = crate::admit::source_slots(rule_id, &rec.peer)
    {
        settle(src, reserved, epoch);
    }
    rec.phase = phase::CONNECTING;
    Ok(())
}

fn active_established(ctx: &SockOpsContext) -> Result<(), Undecided> {
    let s = read(ctx);
    let rec = record_or_warn(ctx, &s)?;
    enable_close_callback(ctx);
    rec.side = side::OUTBOUND;
    rec.dest = addr::dest(s.remote, s.remote_port);
    // rec.peer of an outbound socket is its client pod key, not an address: set by connect()
    // with its slot, else here, so a rule created later can count the socket to its pod.
    if rec.peer[0] != 0xff {
        // SAFETY: the helper reads the socket's network namespace from the context.
        let cookie = unsafe { bpf_get_netns_cookie(ctx.ops as *mut core::ffi::c_void) };
        rec.peer = crate::admit::client_key(cookie);
    }
    // SAFETY: reading the monotonic clock has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let held = rec.rule_id;
    if held != 0 && held != CONN_CLOSED && rec.phase == phase::CONNECTING {
        // connect() took the slot; it is established now.
        outcome::established(rec, &addr::dest(s.remote, s.remote_port), now);
        conn::count_established(rec, rules::slots(held, side::OUTBOUND), held, now);
        return Ok(());
    }
    rec.established_ns = now;
    rec.phase = phase::ESTABLISHED;
    if !rules::exist(rule_kinds::ANY) {
        return Ok(());
    }
    let Some(cfg) = rules::lookup(&rec.dest) else {
        return Ok(());
    };
    let rule_id = cfg.id;
    let slots = rules::slots(rule_id, side::OUTBOUND).ok_or(Undecided)?;
    force_take(slots);
    // Connected without a decision (the rule came after connect()): it still counts to its pod.
    let entity = crate::admit::take_entity_slot(cfg, rec);
    if !cas(conn::rule_id_ptr(rec), held, rule_id).1 {
        crate::slots::give_back(slots);
        if let Some(src) = entity {
            crate::slots::give_back(src);
            rec.flags = 0;
        }
        return Ok(());
    }
    conn::count_established(rec, Some(slots), rule_id, now);
    Ok(())
}
