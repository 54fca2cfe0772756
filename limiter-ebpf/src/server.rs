//! Server side: connections arriving at a destination on this node, in any network namespace.
//!
//! Two hooks decide a SYN, and both take the slot through `admit::decide`:
//! - `sk_lookup`, attached to each network namespace by the daemon, runs when a SYN looks for
//!   a listener. Returning SK_DROP makes the lookup find no socket, so the kernel answers with a
//!   RST and the caller gets ECONNREFUSED at once: this is reject mode.
//! - `cgroup_skb/ingress` at the cgroup v2 root sees every packet delivered to a listening
//!   socket, whatever its namespace. It decides SYNs for drop mode (the SYN is discarded and the
//!   caller retries), decides in reject mode too where no sk_lookup is attached yet (a pod
//!   created a moment ago), and checks the handshake-completing ACK: a reservation that
//!   expired is re-taken if a slot is free, else the ACK is dropped so the connection cannot
//!   become established over the limit.

use aya_ebpf::{
    bindings::BPF_TCP_LISTEN,
    helpers::bpf_ktime_get_ns,
    programs::{SkBuffContext, SkLookupContext},
};
use limiter_common::{
    FlowKey, Pending, RuleConfig, action, pending_flags, rule_flags, rule_kinds, side,
};

use core::ptr::addr_of;

use crate::{
    addr::{self, ctx_ip6, ctx_u32},
    admit::{Decision, decide, source_slots},
    maps::PENDING,
    packet::{IPPROTO_TCP, TCP_FLAG_ACK, TCP_FLAG_SYN, parse, raw_skb},
    rules,
    slots::{epoch_now, give_back, mark_pending, take, unpend},
    verdict::{Undecided, sk_lookup, skb},
};

/// The rule of `dest` if it is enforced on the server side.
#[inline(always)]
fn server_rule(flow: &FlowKey) -> Option<&'static RuleConfig> {
    rules::lookup(&addr::dest(flow.daddr, flow.dport)).filter(|cfg| cfg.decides_server())
}

/// Decides a new flow and records the outcome in PENDING (a reservation, or a dry-run pass
/// that holds no slot), with `confirmed` when the flow's SYN is the packet at hand. Returns
/// whether to let the packet through; a refusal is counted with `refuse_action`.
#[inline(always)]
fn admit_new_flow(cfg: &RuleConfig, flow: &FlowKey, refuse_action: usize, confirmed: bool) -> bool {
    // SAFETY: reading the monotonic clock has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let epoch = epoch_now(now);
    let dest = addr::dest(flow.daddr, flow.dport);
    let confirmed = if confirmed {
        pending_flags::CONFIRMED
    } else {
        0
    };
    let flags = match decide(cfg, side::INBOUND, &flow.saddr, now, epoch) {
        Decision::Admit { flags } => {
            // Counted as accepted once its SYN is seen at the listener (see CONFIRMED).
            if confirmed != 0 {
                rules::count_accepted(cfg.id, side::INBOUND);
            }
            u32::from(flags)
        }
        Decision::Refuse(reason) if cfg.flags & rule_flags::DRY_RUN != 0 => {
            rules::count_refusal(
                now,
                cfg.id,
                side::INBOUND,
                reason,
                action::DRY_RUN,
                &dest,
                &flow.saddr,
            );
            pending_flags::NO_SLOT
        }
        Decision::Refuse(reason) => {
            crate::outcome::refused_here(flow, now);
            rules::count_refusal(
                now,
                cfg.id,
                side::INBOUND,
                reason,
                refuse_action,
                &dest,
                &flow.saddr,
            );
            return false;
        }
    };
    let p = Pending {
        rule_id: cfg.id,
        epoch: epoch as u32,
        flags: flags | confirmed,
    };
    let _ = PENDING.insert(flow, &p, 0);
    true
}

/// The verdict on a lookup for a listener: a SYN refused in reject mode finds none.
#[inline(always)]
pub fn try_sk_lookup(ctx: &SkLookupContext) -> Result<sk_lookup::Verdict, Undecided> {
    let l = ctx.lookup;
    // sk_lookup also runs for every UDP datagram that finds no connected socket: check the
    // protocol before reading anything else.
    // SAFETY: a field of the program's context.
    if unsafe { ctx_u32(addr_of!((*l).protocol)) } != u32::from(IPPROTO_TCP)
        || !rules::exist(rule_kinds::SERVER)
    {
        return Err(Undecided);
    }
    // SAFETY: field addresses of the program's context, each read once.
    let flow = unsafe {
        let family = ctx_u32(addr_of!((*l).family));
        let (remote_ip4, local_ip4) = (
            ctx_u32(addr_of!((*l).remote_ip4)),
            ctx_u32(addr_of!((*l).local_ip4)),
        );
        let remote_ip6 = ctx_ip6(addr_of!((*l).remote_ip6));
        let local_ip6 = ctx_ip6(addr_of!((*l).local_ip6));
        // remote_port is a __be16 followed by padding; local_port is host order.
        let remote_port = ctx_u32(addr_of!((*l).remote_port) as *const u32) as u16;
        let local_port = ctx_u32(addr_of!((*l).local_port));
        FlowKey {
            saddr: addr::from_ctx(family, remote_ip4, remote_ip6),
            daddr: addr::from_ctx(family, local_ip4, local_ip6),
            sport: u16::from_be(remote_port),
            dport: local_port as u16,
        }
    };
    let cfg = server_rule(&flow).ok_or(Undecided)?;
    // Drop mode is decided by the cgroup_skb hook, which can discard silently; a flow with a
    // reservation was decided already.
    if cfg.flags & rule_flags::MODE_DROP != 0 || PENDING.get_ptr(&flow).is_some() {
        return Err(Undecided);
    }
    if admit_new_flow(cfg, &flow, action::REJECT, false) {
        Ok(sk_lookup::Verdict::Pass)
    } else {
        Ok(sk_lookup::Verdict::Drop)
    }
}

/// The verdict on a packet arriving for a socket: a SYN refused in drop mode, or an ACK that
/// would complete a handshake over the limit, is dropped.
#[inline(always)]
pub fn try_cgroup_ingress(ctx: &SkBuffContext) -> Result<skb::Verdict, Undecided> {
    // Only packets handed to a listening socket matter: SYNs and handshake-completing ACKs.
    // SAFETY: the context is a __sk_buff; sk may be NULL and is checked.
    let sk = unsafe { (*raw_skb(ctx)).__bindgen_anon_2.sk };
    if sk.is_null() {
        return Err(Undecided);
    }
    // SAFETY: non-NULL socket pointer from the context.
    let state = unsafe { (*sk).state };
    if state != BPF_TCP_LISTEN {
        connected_packet(ctx, sk as *mut core::ffi::c_void, state);
        return Err(Undecided);
    }
    if !rules::exist(rule_kinds::SERVER) {
        return Err(Undecided);
    }
    let (flow, flags) = parse(ctx)?;
    let cfg = server_rule(&flow).ok_or(Undecided)?;
    let syn = flags & TCP_FLAG_SYN != 0 && flags & TCP_FLAG_ACK == 0;
    if let Some(p) = PENDING.get_ptr_mut(&flow) {
        // SAFETY: pointer to a live map value.
        let p = unsafe { &mut *p };
        if p.rule_id == cfg.id {
            if syn {
                if p.flags & (pending_flags::CONFIRMED | pending_flags::NO_SLOT) == 0 {
                    rules::count_accepted(cfg.id, side::INBOUND);
                }
                p.flags |= pending_flags::CONFIRMED;
                // Admitted by sk_lookup.
                return Ok(skb::Verdict::Pass);
            }
            if p.flags & pending_flags::CONFIRMED == 0 {
                // sk_lookup reserved for a packet that starts no handshake (a stray or
                // duplicate ACK, a FIN): give the slot back now; the listener will answer RST.
                give_back_reservation(cfg, &flow, p);
                return Err(Undecided);
            }
            return keep_reservation(cfg, &flow, p);
        }
    }
    if !syn {
        // An ACK with no reservation: a handshake that began before the rule existed, or a
        // stray ACK. Taking a slot here would let an ACK flood fill the limit; settling at
        // establishment counts the former.
        return Err(Undecided);
    }
    if admit_new_flow(cfg, &flow, action::DROP, true) {
        Ok(skb::Verdict::Pass)
    } else {
        Ok(skb::Verdict::Drop)
    }
}

/// A packet for a socket past its handshake: only the breakers' RST mark needs its record, and
/// most packets do not. (Adoption on kernels without the iterator is the egress hook's: see
/// adopt.rs.)
#[inline(always)]
fn connected_packet(ctx: &SkBuffContext, sk: *mut core::ffi::c_void, state: u32) {
    if !crate::outcome::watches(state) {
        return;
    }
    if let Some(rec) = crate::conn::record(sk, false) {
        crate::outcome::on_ingress(ctx, rec, state);
    }
}

/// Releases an unconfirmed reservation and forgets it.
#[inline(always)]
fn give_back_reservation(cfg: &RuleConfig, flow: &FlowKey, p: &Pending) {
    // SAFETY: reading the monotonic clock has no preconditions.
    let now_epoch = epoch_now(unsafe { bpf_ktime_get_ns() });
    let epoch = u64::from(p.epoch);
    if p.flags & pending_flags::NO_SLOT == 0 {
        if let Some(slots) = rules::slots(cfg.id, side::INBOUND)
            && unpend(slots, epoch, now_epoch)
        {
            give_back(slots);
        }
        if p.flags & pending_flags::PER_SOURCE != 0
            && let Some(src) = source_slots(cfg.id, &flow.saddr)
            && unpend(src, epoch, now_epoch)
        {
            give_back(src);
        }
    }
    let _ = PENDING.remove(flow);
}

/// The ACK that completes a handshake: its reservation must still be live when the socket
/// is established a moment later. Renew an old one into the current bucket; re-take a slot
/// for an expired one, or drop the ACK when none is free.
#[inline(always)]
fn keep_reservation(
    cfg: &RuleConfig,
    flow: &FlowKey,
    p: &mut Pending,
) -> Result<skb::Verdict, Undecided> {
    // SAFETY: reading the monotonic clock has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let epoch = epoch_now(now);
    if u64::from(p.epoch) == epoch || p.flags & pending_flags::NO_SLOT != 0 {
        return Ok(skb::Verdict::Pass);
    }
    let slots = rules::slots(cfg.id, side::INBOUND).ok_or(Undecided)?;
    let moved = unpend(slots, u64::from(p.epoch), epoch);
    let held = moved || take(slots, cfg.max_connections);
    if held && mark_pending(slots, epoch) {
        p.epoch = epoch as u32;
        return Ok(skb::Verdict::Pass);
    }
    if cfg.flags & rule_flags::DRY_RUN != 0 {
        return Ok(skb::Verdict::Pass);
    }
    rules::count_refusal(
        now,
        cfg.id,
        side::INBOUND,
        limiter_common::reason::LIMIT,
        action::DROP,
        &addr::dest(flow.daddr, flow.dport),
        &flow.saddr,
    );
    Ok(skb::Verdict::Drop)
}
