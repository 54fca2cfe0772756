//! limiter's kernel programs. Each entry point is a thin wrapper that maps every outcome of its
//! `try_*` function to a deliberate verdict (verdict.rs); the logic lives in the modules. Its
//! fail-open is written there, once: what a `try_*` function leaves `Undecided` passes.
//!
//! Every program is named `limiter_*` (at most 15 characters, the kernel's limit), so that
//! `bpftool prog` and other agents (a CNI listing a cgroup's programs) can tell ours apart.
//! The names are limiter_common::names::programs, which userspace loads them by (a test there
//! checks this object against them).
#![no_std]
#![no_main]
// Atomic compare-and-swap on map memory (see sync.rs); the eBPF build runs with
// RUSTC_BOOTSTRAP=1 for -Z build-std already.
#![feature(core_intrinsics)]
#![allow(
    internal_features,
    reason = "core_intrinsics is the only way to BPF compare-and-swap, see sync.rs"
)]

mod accounting;
mod addr;
mod admit;
mod adopt;
mod breaker;
mod client;
mod conn;
mod events;
mod features;
mod maps;
mod outcome;
mod packet;
mod rules;
mod seed;
mod server;
mod slots;
mod sync;
mod verdict;
mod verifier;

use aya_ebpf::{
    macros::{cgroup_sock_addr, sk_lookup, sock_ops},
    programs::{SkLookupContext, SockAddrContext, SockOpsContext},
};

/// Accounting of established connections (cgroup v2 root).
#[sock_ops]
pub fn limiter_sockops(ctx: SockOpsContext) -> u32 {
    match accounting::try_sock_ops(&ctx) {
        // A connection that could not be counted is not refused either.
        Ok(()) | Err(_) => verdict::sock_ops::HANDLED,
    }
}

/// Server-side reject: runs when a SYN looks for a listener (one attachment per netns).
#[sk_lookup]
pub fn limiter_lookup(ctx: SkLookupContext) -> u32 {
    server::try_sk_lookup(&ctx).unwrap_or(verdict::sk_lookup::Verdict::Pass) as u32
}

/// The cgroup_skb entry points. clippy's not_unsafe_ptr_arg_deref fires on the wrapper that
/// aya's macro generates around each (a `pub fn` taking the raw context pointer), where an
/// attribute on our function cannot reach; the allow is scoped to this module for that reason.
#[allow(
    clippy::not_unsafe_ptr_arg_deref,
    reason = "fires on the wrapper aya's macro generates, which our attributes cannot reach"
)]
mod skb_programs {
    use aya_ebpf::{macros::cgroup_skb, programs::SkBuffContext};

    use crate::{client, server, verdict::skb};

    /// Server-side drop, and the exactness backstop for every namespace (cgroup v2 root).
    #[cgroup_skb(ingress)]
    pub fn limiter_ingress(ctx: SkBuffContext) -> i32 {
        server::try_cgroup_ingress(&ctx).unwrap_or(skb::Verdict::Pass) as i32
    }

    /// Client-side drop mode: the SYN of a connecting socket takes a slot or is dropped.
    #[cgroup_skb(egress)]
    pub fn limiter_egress(ctx: SkBuffContext) -> i32 {
        client::try_egress_syn(&ctx).unwrap_or(skb::Verdict::Pass) as i32
    }
}

/// Client-side limits inside connect() for IPv4 (cgroup v2 root).
#[cgroup_sock_addr(connect4)]
pub fn limiter_conn4(ctx: SockAddrContext) -> i32 {
    client::try_connect(&ctx, false).unwrap_or(verdict::sock_addr::Verdict::Allow) as i32
}

/// Client-side limits inside connect() for IPv6 and IPv4-mapped addresses (cgroup v2 root).
#[cgroup_sock_addr(connect6)]
pub fn limiter_conn6(ctx: SockAddrContext) -> i32 {
    client::try_connect(&ctx, true).unwrap_or(verdict::sock_addr::Verdict::Allow) as i32
}

/// Seeding iterator over the socket records; run by the daemon when a rule is created.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/bpf_sk_storage_map")]
pub fn limiter_seed(ctx: *mut seed::IterCtx) -> i32 {
    match seed::try_seed(ctx) {
        // The walk goes on to the next socket whatever became of this one.
        Ok(()) | Err(_) => verdict::iter::NEXT,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
