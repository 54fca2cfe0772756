//! Client side: connect() by processes on this node, refused inside the syscall.
//!
//! cgroup/connect4 and connect6 at the cgroup v2 root run before the kernel routes or sends
//! anything, with the address the caller passed: a Service VIP is limited as the VIP, before
//! any DNAT. A refused connect() returns ECONNREFUSED (bpf_set_retval; EPERM on kernels
//! without it) and no packet leaves.
//! An admitted one holds a reservation; sock_ops turns it into a held slot when the SYN is
//! sent, and if connect() fails before that, the reservation expires with its bucket.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{__sk_buff, BPF_TCP_SYN_SENT},
    helpers::{
        bpf_ktime_get_ns,
        generated::{bpf_get_netns_cookie, bpf_set_retval},
    },
    programs::{SkBuffContext, SockAddrContext},
};
use limiter_common::{
    CONN_CLOSED, CONN_F_BREAKER, CONN_F_ENDPOINT, CONN_F_PER_SOURCE, CONN_F_PROBE, DestAddr,
    RuleConfig, action, phase, reason, rule_flags, rule_kinds, side,
};

use core::ptr::addr_of;

use crate::{
    addr::{self, ctx_ip6, ctx_u32},
    admit::{Decision, client_key, decide, source_slots},
    breaker, conn,
    maps::{ALIASES, TRANSLATED_FIRST},
    rules,
    slots::{epoch_now, settle},
    verdict::{Undecided, skb, sock_addr},
};

const SOCK_STREAM: u32 = 1;
const IPPROTO_TCP: u32 = 6;
const ECONNREFUSED: i32 = 111;

#[inline(always)]
fn client_rule(dest: &DestAddr) -> Option<&'static RuleConfig> {
    rules::lookup(dest).filter(|cfg| cfg.decides_client())
}

/// The client-side rule a connection to `dest` counts under, and the destination it counts as:
/// `dest`'s own rule, else, where `dest` is an endpoint of a Service (a socket load balancer
/// translated the ClusterIP before this program ran, see TRANSLATED_FIRST), the rule of the
/// ClusterIP it stands for. So a `svc/` rule limits its Service whichever address connect()
/// shows.
#[inline(always)]
fn client_rule_of(dest: &DestAddr) -> Option<(&'static RuleConfig, DestAddr)> {
    if let Some(cfg) = client_rule(dest) {
        return Some((cfg, *dest));
    }
    if TRANSLATED_FIRST.get(0).copied() != Some(1) {
        return None;
    }
    // SAFETY: a plain read of a map value that only userspace writes (whole-value updates).
    let service = *unsafe { ALIASES.get(dest) }?;
    client_rule(&service).map(|cfg| (cfg, service))
}

/// The verdict on a connect(). `v6`: the program is attached as connect6 (the kernel lets
/// connect4 read only user_ip4, and connect6 only user_ip6).
#[inline(always)]
pub fn try_connect(ctx: &SockAddrContext, v6: bool) -> Result<sock_addr::Verdict, Undecided> {
    if !rules::exist(rule_kinds::CLIENT) {
        return Err(Undecided);
    }
    let a = ctx.sock_addr;
    // SAFETY: field addresses of the program's context, each read once.
    let (ty, protocol, ip, port, sk) = unsafe {
        let ty = ctx_u32(addr_of!((*a).type_));
        let protocol = ctx_u32(addr_of!((*a).protocol));
        let ip = if v6 {
            addr::v6_words(ctx_ip6(addr_of!((*a).user_ip6)))
        } else {
            addr::mapped_v4(ctx_u32(addr_of!((*a).user_ip4)))
        };
        // user_port holds the network-order port in its low 16 bits.
        let port = u16::from_be(ctx_u32(addr_of!((*a).user_port)) as u16);
        let sk = (*a).__bindgen_anon_1.sk as *mut core::ffi::c_void;
        (ty, protocol, ip, port, sk)
    };
    if ty != SOCK_STREAM || protocol != IPPROTO_TCP {
        return Err(Undecided);
    }
    let dialed = addr::dest(ip, port);
    let (cfg, dest) = client_rule_of(&dialed).ok_or(Undecided)?;
    // Drop mode cannot refuse here: the SYN itself is dropped on egress (try_egress_syn).
    if cfg.flags & rule_flags::MODE_DROP != 0 {
        return Err(Undecided);
    }
    // The socket's record if it has one already; one is created only for a connection let
    // through, so a refused connect() allocates no socket storage.
    let existing = conn::record(sk, false);
    if let Some(rec) = &existing
        && rec.rule_id != 0
        && rec.rule_id != CONN_CLOSED
        && rec.phase != phase::RESERVED
    {
        // A second connect() on a socket already connecting: the kernel answers EALREADY.
        return Err(Undecided);
    }
    // SAFETY: the helper reads the caller's network namespace from the context.
    let entity = client_key(unsafe { bpf_get_netns_cookie(ctx.as_ptr()) });
    // SAFETY: reading the monotonic clock has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let epoch = epoch_now(now);
    // The breaker first: an endpoint it holds open is refused before it can take a slot.
    let tracked = match breaker_gate(cfg, &dialed, &dest, now) {
        BreakerSays::Through(flags) => flags,
        BreakerSays::Refuse(found) if cfg.flags & rule_flags::DRY_RUN != 0 => {
            count_breaker_refusal(now, cfg, &dialed, found, action::DRY_RUN, &entity);
            CONN_F_BREAKER | endpoint_flag(&dialed, &dest)
        }
        BreakerSays::Refuse(found) => {
            count_breaker_refusal(now, cfg, &dialed, found, action::REJECT, &entity);
            return Ok(refuse());
        }
    };
    // Each breaker outcome is a different constant here; as one unknown value the verifier
    // walks the decision below once, not once per outcome (verifier.rs).
    let tracked = crate::verifier::opaque(u64::from(tracked)) as u8;
    match decide(cfg, side::OUTBOUND, &entity, now, epoch) {
        Decision::Admit { flags } => {
            let Some(rec) = existing.or_else(|| conn::record(sk, true)) else {
                // No socket storage for it (the kernel could not allocate): it goes uncounted;
                // its reservation expires with its bucket, and a probe is given back.
                if tracked & CONN_F_PROBE != 0 {
                    breaker::return_probe(&breaker::key(cfg.id, &dialed));
                }
                return Err(Undecided);
            };
            rec.side = side::OUTBOUND;
            rec.dest = dest;
            rec.peer = entity;
            rec.flags = flags | tracked;
            if tracked != 0 {
                // The handshake's start, until it ends (outcome.rs).
                rec.established_ns = now;
            }
            rec.phase = phase::RESERVED;
            rec.reserve_epoch = epoch as u32;
            rec.rule_id = cfg.id;
            rules::count_accepted(cfg.id, side::OUTBOUND);
            Ok(sock_addr::Verdict::Allow)
        }
        Decision::Refuse(reason) => {
            if tracked & CONN_F_PROBE != 0 {
                // Refused for another reason: the probe did not go out.
                breaker::return_probe(&breaker::key(cfg.id, &dialed));
            }
            if cfg.flags & rule_flags::DRY_RUN != 0 {
                rules::count_refusal(
                    now,
                    cfg.id,
                    side::OUTBOUND,
                    reason,
                    action::DRY_RUN,
                    &dest,
                    &entity,
                );
                return Ok(sock_addr::Verdict::Allow);
            }
            rules::count_refusal(
                now,
                cfg.id,
                side::OUTBOUND,
                reason,
                action::REJECT,
                &dest,
                &entity,
            );
            Ok(refuse())
        }
    }
}

/// Refuses the connect() at once: ECONNREFUSED, no packet sent.
#[inline(always)]
fn refuse() -> sock_addr::Verdict {
    if crate::features::has_set_retval() {
        // SAFETY: sets the syscall's return value; valid in cgroup sock_addr programs.
        unsafe { bpf_set_retval(-ECONNREFUSED) };
    }
    // Without bpf_set_retval (before Linux 5.18) the caller sees EPERM: still refused at
    // once, with no packet sent.
    sock_addr::Verdict::Refuse
}

/// CONN_F_ENDPOINT where connect() showed an endpoint standing for the Service address the
/// rule counts (`dest`): its breaker is the endpoint's.
#[inline(always)]
fn endpoint_flag(dialed: &DestAddr, dest: &DestAddr) -> u8 {
    if dialed == dest { 0 } else { CONN_F_ENDPOINT }
}

/// What the breaker of an endpoint says to a connect().
enum BreakerSays {
    /// Let it through with these record flags (0 for a rule without a breaker).
    Through(u8),
    /// Refuse it.
    Refuse(breaker::Found),
}

/// What the breaker of the endpoint `dialed` says to a connect() under `cfg`.
#[inline(always)]
fn breaker_gate(cfg: &RuleConfig, dialed: &DestAddr, dest: &DestAddr, now: u64) -> BreakerSays {
    let untracked = BreakerSays::Through(0);
    if cfg.flags & rule_flags::BREAKER == 0 {
        return untracked;
    }
    let Some(policy) = breaker::config(cfg.id) else {
        return untracked;
    };
    let tracked = CONN_F_BREAKER | endpoint_flag(dialed, dest);
    match breaker::on_connect(&breaker::key(cfg.id, dialed), policy, now) {
        // A full table: this endpoint has no breaker, but its outcomes are still reported (a
        // breaker may be created for it once there is room).
        None | Some((breaker::Gate::Pass, _)) => BreakerSays::Through(tracked),
        Some((breaker::Gate::Probe, _)) => BreakerSays::Through(tracked | CONN_F_PROBE),
        Some((breaker::Gate::Refuse, found)) => BreakerSays::Refuse(found),
    }
}

/// Counts (per breaker) and reports a connect() to `dialed` refused by its breaker at `now`.
#[inline(always)]
fn count_breaker_refusal(
    now: u64,
    cfg: &RuleConfig,
    dialed: &DestAddr,
    found: breaker::Found,
    act: usize,
    entity: &[u8; 16],
) {
    breaker::count_refused(found, act);
    rules::count_refusal(
        now,
        cfg.id,
        side::OUTBOUND,
        reason::BREAKER,
        act,
        dialed,
        entity,
    );
}

/// The rule a connection to `dest` counts under if it is enforced on the client side in drop
/// mode, and the destination it counts as (see [`client_rule_of`]).
#[inline(always)]
pub fn client_drop_rule(dest: &DestAddr) -> Option<(&'static RuleConfig, DestAddr)> {
    client_rule_of(dest).filter(|(cfg, _)| cfg.flags & rule_flags::MODE_DROP != 0)
}

/// Client-side drop mode: a SYN leaving a connecting socket takes a slot or is discarded
/// (the kernel retransmits it after its SYN timeout, so callers queue with backoff). The
/// destination is the socket's own, i.e. the address the caller dialed before any DNAT.
#[inline(always)]
pub fn try_egress_syn(ctx: &SkBuffContext) -> Result<skb::Verdict, Undecided> {
    let skb = ctx.as_ptr() as *mut __sk_buff;
    // This runs for every packet every socket sends: only the socket's state is read before
    // the common case (not a connecting socket) returns.
    // SAFETY: the context is a __sk_buff; sk may be NULL and is checked.
    let sk = unsafe { (*skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return Err(Undecided);
    }
    // SAFETY: non-NULL socket pointer from the context.
    if unsafe { (*sk).state } != BPF_TCP_SYN_SENT {
        crate::adopt::on_packet(sk as *mut core::ffi::c_void);
        return Err(Undecided);
    }
    if !rules::exist(rule_kinds::CLIENT_DROP) {
        return Err(Undecided);
    }
    // SAFETY: context fields of the socket, each read once.
    let (family, ip4, ip6, port) = unsafe {
        (
            ctx_u32(addr_of!((*skb).family)),
            ctx_u32(addr_of!((*skb).remote_ip4)),
            ctx_ip6(addr_of!((*skb).remote_ip6)),
            ctx_u32(addr_of!((*skb).remote_port)),
        )
    };
    let seen = addr::dest(addr::from_ctx(family, ip4, ip6), u32::from_be(port) as u16);
    // Not `ok_or(..)?`: with it LLVM laid this path out otherwise, and the verifier walked the
    // program twice as long (57 221 instructions against 27 127 on Linux 6.18).
    let Some((cfg, dest)) = client_drop_rule(&seen) else {
        return Err(Undecided);
    };
    let rec = conn::record(sk as *mut core::ffi::c_void, true).ok_or(Undecided)?;
    if rec.rule_id == cfg.id {
        return Ok(skb::Verdict::Pass); // a retransmission of a SYN that already holds its slot
    }
    // sock_ops wrote the caller's pod key into the record when the SYN was about to leave.
    let entity = rec.peer;
    // SAFETY: reading the monotonic clock has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let epoch = epoch_now(now);
    match decide(cfg, side::OUTBOUND, &entity, now, epoch) {
        Decision::Admit { flags } => {
            if let Some(slots) = rules::slots(cfg.id, side::OUTBOUND) {
                settle(slots, epoch, epoch);
            }
            if flags & CONN_F_PER_SOURCE != 0
                && let Some(src) = source_slots(cfg.id, &entity)
            {
                settle(src, epoch, epoch);
            }
            rec.flags = flags;
            rec.side = side::OUTBOUND;
            rec.dest = dest;
            rec.phase = phase::CONNECTING;
            rec.rule_id = cfg.id;
            rules::count_accepted(cfg.id, side::OUTBOUND);
            Ok(skb::Verdict::Pass)
        }
        Decision::Refuse(reason) => {
            // A dry run lets the SYN go and counts what it would have dropped.
            let (act, verdict) = if cfg.flags & rule_flags::DRY_RUN != 0 {
                (action::DRY_RUN, skb::Verdict::Pass)
            } else {
                (action::DROP, skb::Verdict::Drop)
            };
            rules::count_refusal(now, cfg.id, side::OUTBOUND, reason, act, &dest, &entity);
            Ok(verdict)
        }
    }
}
