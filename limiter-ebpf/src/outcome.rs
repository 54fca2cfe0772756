//! How the handshake of a connection under a circuit breaker ended, from what the kernel shows
//! without reading any payload, reported once per connection to its breaker (breaker.rs):
//! - success: sock_ops' active-established callback (rtt = now - connect());
//! - timeout: the first SYN retransmission (sock_ops' RTO callback in SYN-SENT: no answer
//!   within the initial SYN timeout), or the caller closing the socket before any answer;
//! - refused: a RST answering the SYN (the ingress hook marks the socket, the close reports);
//! - reset: a RST within RESET_WINDOW_NS of the handshake (marked the same way). A local
//!   abort (SO_LINGER 0) carries no RST in, so it never counts.

use aya_ebpf::{
    bindings::{BPF_TCP_ESTABLISHED, BPF_TCP_SYN_SENT, bpf_sock},
    helpers::bpf_ktime_get_ns,
    programs::SkBuffContext,
};
use limiter_common::{
    CONN_CLOSED, CONN_F_BREAKER, CONN_F_ENDPOINT, CONN_F_PROBE, CONN_F_REPORTED, CONN_F_RST,
    ConnRecord, DestAddr, RESET_WINDOW_NS, outcome,
};

use crate::{breaker, conn, maps::BREAKERS_ON};

const TCP_FLAG_RST: u8 = 0x04;

#[inline(always)]
fn tracked(rec: &ConnRecord) -> bool {
    rec.flags & CONN_F_BREAKER != 0
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
#[inline(always)]
pub fn syn_retransmitted(rec: &mut ConnRecord, remote: &DestAddr, now: u64) {
    if tracked(rec) && rec.flags & CONN_F_REPORTED == 0 {
        rec.flags |= CONN_F_REPORTED;
        send(rec, remote, outcome::TIMEOUT, now);
    }
}

/// The socket closed from `old_state` (before the record releases its slot).
#[inline(always)]
pub fn closed(rec: &mut ConnRecord, old_state: u32, remote: &DestAddr, now: u64) {
    if !tracked(rec) {
        return;
    }
    let rst = rec.flags & CONN_F_RST != 0;
    if old_state == BPF_TCP_SYN_SENT && rec.flags & CONN_F_REPORTED == 0 {
        rec.flags |= CONN_F_REPORTED;
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

/// The ingress hook's part: marks a RST arriving for a client socket whose handshake is in
/// progress, or established less than RESET_WINDOW_NS ago, under a breaker. Costs one state
/// read per packet otherwise, and one flag read for established sockets while breakers exist.
#[inline(always)]
pub fn on_ingress(ctx: &SkBuffContext, sk: *mut bpf_sock, state: u32) {
    let connecting = state == BPF_TCP_SYN_SENT;
    if !connecting && (state != BPF_TCP_ESTABLISHED || BREAKERS_ON.get(0).copied() != Some(1)) {
        return;
    }
    let Some(rec) = conn::record(sk as *mut core::ffi::c_void, false) else {
        return;
    };
    if !tracked(rec) {
        return;
    }
    // SAFETY: reading the monotonic clock has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if !connecting && now.saturating_sub(rec.established_ns) >= RESET_WINDOW_NS {
        return;
    }
    if let Some((_, flags)) = crate::server::parse(ctx)
        && flags & TCP_FLAG_RST != 0
    {
        rec.flags |= CONN_F_RST;
    }
}
