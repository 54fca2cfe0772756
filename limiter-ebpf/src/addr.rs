//! Turning context fields into limiter's address representation (IPv4 as IPv4-mapped IPv6).

use limiter_common::DestAddr;

pub const AF_INET: u32 = 2;

/// An IPv4 address as the kernel hands it in context fields (network order in a u32).
#[inline(always)]
pub fn mapped_v4(ip4_be: u32) -> [u8; 16] {
    let b = ip4_be.to_ne_bytes();
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, b[0], b[1], b[2], b[3],
    ]
}

/// An IPv6 address as four network-order u32 words.
#[inline(always)]
pub fn v6_words(w: [u32; 4]) -> [u8; 16] {
    let (a, b, c, d) = (
        w[0].to_ne_bytes(),
        w[1].to_ne_bytes(),
        w[2].to_ne_bytes(),
        w[3].to_ne_bytes(),
    );
    [
        a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1], d[2],
        d[3],
    ]
}

/// An address of either family from context fields.
#[inline(always)]
pub fn from_ctx(family: u32, ip4: u32, ip6: [u32; 4]) -> [u8; 16] {
    if family == AF_INET {
        mapped_v4(ip4)
    } else {
        v6_words(ip6)
    }
}

#[inline(always)]
pub fn dest(addr: [u8; 16], port: u16) -> DestAddr {
    DestAddr {
        port: port.to_be_bytes(),
        addr,
    }
}

/// Reads a context field. The verifier accepts context loads only at a constant offset from
/// the context pointer itself; a volatile load per field keeps LLVM from copying a field
/// through a derived pointer (which the verifier rejects as "modified ctx ptr").
#[inline(always)]
pub fn ctx_u32(p: *const u32) -> u32 {
    // SAFETY: p points into the program's context, at a field the program may read.
    unsafe { core::ptr::read_volatile(p) }
}

/// Reads a 4-word IPv6 address field of a context, one word at a time (see [`ctx_u32`]).
#[inline(always)]
pub fn ctx_ip6(p: *const [u32; 4]) -> [u32; 4] {
    let w = p as *const u32;
    // SAFETY: the four words of the field.
    unsafe {
        [
            ctx_u32(w),
            ctx_u32(w.add(1)),
            ctx_u32(w.add(2)),
            ctx_u32(w.add(3)),
        ]
    }
}
