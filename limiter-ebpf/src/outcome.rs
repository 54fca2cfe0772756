//! How the handshake of a connection under a circuit breaker ended, from what the kernel shows
//! without reading any payload, reported once per connection to its breaker (breaker.rs):
//! - success: sock_ops' active-established callback (rtt = now - connect());
//! - timeout: the first SYN retransmission (sock_ops' RTO callback in SYN-SENT: no answer
//!   within the initial SYN timeout), or the caller closing the socket before any answer;
//! - refused: a RST answering the SYN (the ingress hook marks the socket, the close reports);
//! - reset: a RST within RESET_WINDOW_NS of the handshake (marked the same way). A local
//!   abort (SO_LINGER 0) carries no RST in, so it never counts.
//!
//! A refusal by limiter's own server side on this node (its RST, or its dropped SYN) is not
//! the endpoint's failure: the server side notes the client's address and port
//! (SELF_REFUSED) and the client's outcome is then not reported.

use aya_ebpf::{
    bindings::{BPF_TCP_ESTABLISHED, BPF_TCP_SYN_SENT},
    helpers::bpf_ktime_get_ns,
    programs::SkBuffContext,
};
use limiter_common::{
    CONN_CLOSED, CONN_F_BREAKER, CONN_F_ENDPOINT, CONN_F_PROBE, CONN_F_REPORTED, CONN_F_RST,
    ConnRecord, DestAddr, FlowKey, RESET_WINDOW_NS, outcome,
};

use crate::{
    breaker,
    maps::{BREAKERS_ON, SELF_REFUSED},
};

const TCP_FLAG_RST: u8 = 0x04;

#[inline(always)]
fn tracked(rec: &ConnRecord) -> bool {
    rec.flags & CONN_F_BREAKER != 0
}

/// How long a refusal by limiter's own server side is remembered for its client.
const SELF_REFUSED_NS: u64 = 30_000_000_000;

/// The key of a client socket in SELF_REFUSED.
#[inline(always)]
fn client_key(addr: [u8; 16], port: u16) -> FlowKey {
    FlowKey {
        saddr: addr,
        daddr: [0; 16],
        sport: port,
        dport: 0,
    }
}

/// Limiter's server side refused `flow` (a SYN from a client, perhaps on this node): if the
/// client is a local socket under a breaker, its failure is limiter's, not the endpoint's.
#[inline(always)]
pub fn refused_here(flow: &FlowKey, now: u64) {
    if BREAKERS_ON.get(0).copied() == Some(1) {
        let _ = SELF_REFUSED.insert(&client_key(flow.saddr, flow.sport), &now, 0);
    }
}

/// True if limiter's own server side refused the SYN of the local socket `local` lately.
#[inline(always)]
fn refused_by_us(local: &([u8; 16], u16), now: u64) -> bool {
    // SAFETY: a copy of an LRU value; a concurrent update only changes the time read.
    match unsafe { SELF_REFUSED.get(&client_key(local.0, local.1)) } {
        Some(&at) => now.saturating_sub(at) < SELF_REFUSED_NS,
        None => false,
    }
}

/// Reports `kind` for the connection of `rec`; `remote` is the socket's peer (the endpoint,
/// for a breaker of a Service's endpoint).
#[inline(always)]
fn send(rec: &ConnRecord, remote: &DestAddr, kind: usize, now: u64) {
    let rule_id = rec.rule_id;
    if rule_id == 0 || rule_id == CONN_CLOSED {
        return;
    }
    let Some(cfg) = breaker::config(rule_id) else {
        return; // the rule or its breaker is gone
    };
    let endpoint = rec.flags & CONN_F_ENDPOINT != 0;
    let key = breaker::key(rule_id, if endpoint { remote } else { &rec.dest });
    // established_ns holds the connect() time until the handshake ends.
    let rtt = now.saturating_sub(rec.established_ns);
    let probe = rec.flags & CONN_F_PROBE != 0;
    breaker::report(&key, cfg, kind, rtt, probe, endpoint, now);
}

/// The handshake completed (call before the record's established_ns is overwritten).
#[inline(always)]
pub fn established(rec: &mut ConnRecord, remote: &DestAddr, now: u64) {
    if tracked(rec) && rec.flags & CONN_F_REPORTED == 0 {
        rec.flags |= CONN_F_REPORTED;
        send(rec, remote, outcome::SUCCESS, now);
    }
}

/// The SYN went unanswered for the kernel's initial SYN timeout and is being retransmitted.
/// `local`: the socket's own address and port.
#[inline(always)]
pub fn syn_retransmitted(
    rec: &mut ConnRecord,
    local: &([u8; 16], u16),
    remote: &DestAddr,
    now: u64,
) {
    if tracked(rec) && rec.flags & CONN_F_REPORTED == 0 {
        rec.flags |= CONN_F_REPORTED;
        if !refused_by_us(local, now) {
            send(rec, remote, outcome::TIMEOUT, now);
        }
    }
}

/// The socket closed from `old_state` (before the record releases its slot).
#[inline(always)]
pub fn closed(
    rec: &mut ConnRecord,
    old_state: u32,
    local: &([u8; 16], u16),
    remote: &DestAddr,
    now: u64,
) {
    if !tracked(rec) {
        return;
    }
    let rst = rec.flags & CONN_F_RST != 0;
    if old_state == BPF_TCP_SYN_SENT && rec.flags & CONN_F_REPORTED == 0 {
        rec.flags |= CONN_F_REPORTED;
        if refused_by_us(local, now) {
            return; // limiter's own server side refused it on this node
        }
        let kind = if rst {
            outcome::REFUSED
        } else {
            outcome::TIMEOUT
        };
        send(rec, remote, kind, now);
    } else if old_state == BPF_TCP_ESTABLISHED
        && rst
        && now.saturating_sub(rec.established_ns) < RESET_WINDOW_NS
    {
        // The success was reported at the handshake; the reset is a failure of its own.
        send(rec, remote, outcome::RESET, now);
    }
}

/// Whether the ingress hook must look at a packet for a socket in `state`: a connecting one,
/// or an established one while breakers exist (see [`on_ingress`]). One state read, and one
/// flag read for established sockets, is all other packets cost.
#[inline(always)]
pub fn watches(state: u32) -> bool {
    state == BPF_TCP_SYN_SENT
        || (state == BPF_TCP_ESTABLISHED && BREAKERS_ON.get(0).copied() == Some(1))
}

/// The ingress hook's part, for a packet [`watches`] chose: marks a RST arriving for a client
/// socket whose handshake is in progress, or established less than RESET_WINDOW_NS ago, under
/// a breaker.
#[inline(always)]
pub fn on_ingress(ctx: &SkBuffContext, rec: &mut ConnRecord, state: u32) {
    let connecting = state == BPF_TCP_SYN_SENT;
    if !tracked(rec) {
        return;
    }
    // SAFETY: reading the monotonic clock has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if !connecting && now.saturating_sub(rec.established_ns) >= RESET_WINDOW_NS {
        return;
    }
    if let Ok((_, flags)) = crate::packet::parse(ctx)
        && flags & TCP_FLAG_RST != 0
    {
        rec.flags |= CONN_F_RST;
    }
}
