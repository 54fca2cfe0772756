//! Reading a cgroup_skb packet: the TCP flow and flags of an ingress packet (IPv4, or IPv6
//! past its extension headers). Shared by the server side's decisions (`server.rs`) and the
//! breakers' outcome watch (`outcome.rs`).

use aya_ebpf::{EbpfContext as _, bindings::__sk_buff, programs::SkBuffContext};
use limiter_common::FlowKey;

use crate::{addr, verdict::Undecided};

pub const IPPROTO_TCP: u8 = 6;
// skb->protocol is a __be16 widened to u32: compare with the byte-swapped 16-bit value.
pub const ETH_P_IP: u32 = (0x0800u16).to_be() as u32;
pub const ETH_P_IPV6: u32 = (0x86ddu16).to_be() as u32;
pub const TCP_FLAG_SYN: u8 = 0x02;
pub const TCP_FLAG_ACK: u8 = 0x10;

#[inline(always)]
/// The context as the kernel's `__sk_buff`, for the fields aya does not wrap (named apart from
/// verdict.rs's `skb` module, which server.rs imports beside it).
pub fn raw_skb(ctx: &SkBuffContext) -> *mut __sk_buff {
    ctx.as_ptr() as *mut __sk_buff
}

/// Reads a `T` at `offset` of the packet; a packet too short for it cannot be decided.
#[inline(always)]
fn load<T>(ctx: &SkBuffContext, offset: usize) -> Result<T, Undecided> {
    ctx.load(offset).map_err(|_| Undecided)
}

/// Where the TCP header of an IPv6 packet starts, past up to four extension headers
/// (hop-by-hop, routing, destination options, fragment). Without the walk, a SYN carrying a
/// hop-by-hop header would pass undecided.
#[inline(always)]
fn ipv6_tcp_offset(ctx: &SkBuffContext) -> Result<usize, Undecided> {
    const HOPOPTS: u8 = 0;
    const ROUTING: u8 = 43;
    const FRAGMENT: u8 = 44;
    const DSTOPTS: u8 = 60;
    let mut next: u8 = load(ctx, 6)?;
    let mut offset = 40usize;
    for _ in 0..4 {
        match next {
            IPPROTO_TCP => return Ok(offset),
            HOPOPTS | ROUTING | DSTOPTS => {
                let len: u8 = load(ctx, offset + 1)?;
                next = load(ctx, offset)?;
                offset += (usize::from(len) + 1) * 8;
            }
            FRAGMENT => {
                next = load(ctx, offset)?;
                offset += 8;
            }
            _ => return Err(Undecided),
        }
    }
    if next == IPPROTO_TCP {
        Ok(offset)
    } else {
        // TCP past more extension headers than are walked.
        Err(Undecided)
    }
}

/// Reads the TCP flow and flags of an ingress packet (data starts at the network header).
#[inline(always)]
pub fn parse(ctx: &SkBuffContext) -> Result<(FlowKey, u8), Undecided> {
    // SAFETY: the context pointer of a cgroup_skb program is a __sk_buff.
    let proto = unsafe { (*raw_skb(ctx)).protocol };
    let (saddr, daddr, l4) = if proto == ETH_P_IP {
        let vihl: u8 = load(ctx, 0)?;
        if load::<u8>(ctx, 9)? != IPPROTO_TCP {
            return Err(Undecided);
        }
        let s: u32 = load(ctx, 12)?;
        let d: u32 = load(ctx, 16)?;
        (
            addr::mapped_v4(s),
            addr::mapped_v4(d),
            usize::from(vihl & 0x0f) * 4,
        )
    } else if proto == ETH_P_IPV6 {
        let s: [u8; 16] = load(ctx, 8)?;
        let d: [u8; 16] = load(ctx, 24)?;
        (s, d, ipv6_tcp_offset(ctx)?)
    } else {
        return Err(Undecided);
    };
    let sport: u16 = load(ctx, l4)?;
    let dport: u16 = load(ctx, l4 + 2)?;
    let flags: u8 = load(ctx, l4 + 13)?;
    let flow = FlowKey {
        saddr,
        daddr,
        sport: u16::from_be(sport),
        dport: u16::from_be(dport),
    };
    Ok((flow, flags))
}
