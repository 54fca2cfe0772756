//! A stand-in for Cilium's socket load balancer (kube-proxy replacement): a `cgroup/connect4`
//! program that rewrites a Service VIP:port to one of its backends inside `connect()`, so the
//! socket is connected to the backend and no packet ever carries the VIP (no DNAT anywhere).
//!
//! Programs on one cgroup hook run in attach order: attached before limiter's daemon starts,
//! the stand-in runs first and limiter's `connect4` sees the backend; attached after, limiter
//! sees the VIP. The program is a handful of hand-written instructions loaded through bpf(2)
//! (with [`crate::foreign`]'s helpers) and named `socklb_connect4`; it is attached with a bpf
//! link pinned in a folder that is not limiter's, as an agent would.

use std::net::SocketAddrV4;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};

use limiter_common::sys::{Attr, BPF_LINK_DETACH, bpf, link_info, put_u32};

use crate::foreign::{CONNECT4, array_set, create_array, insn, ld_map_fd, link_create, load, pin};

/// The program's name, as `bpftool prog` and `limiter doctor` show it.
pub const PROG_NAME: &str = "socklb_connect4";

/// `struct bpf_sock_addr` offsets: `user_ip4` (network order) and `user_port` (a u32 holding
/// the network-order port in its low 16 bits).
const USER_IP4: i16 = 4;
const USER_PORT: i16 = 24;

/// A socket load balancer for one VIP, attached at a cgroup; detached and unpinned on drop.
pub struct SocketLb {
    pub vip: SocketAddrV4,
    pub backends: Vec<SocketAddrV4>,
    /// The program's id (as `bpftool prog` and `limiter doctor` show it).
    pub prog_id: u32,
    pub pin: PathBuf,
    link: OwnedFd,
}

/// `user_ip4` as the program reads it: the address's bytes in memory order.
fn ip_word(addr: &SocketAddrV4) -> u32 {
    u32::from_ne_bytes(addr.ip().octets())
}

/// `user_port` as the program reads it: the network-order port in the low 16 bits.
fn port_word(addr: &SocketAddrV4) -> u32 {
    u32::from(u16::from_ne_bytes(addr.port().to_be_bytes()))
}

/// A backends map value: `{ u32 user_ip4; u32 user_port }`.
fn backend_value(addr: &SocketAddrV4) -> [u8; 8] {
    let mut v = [0u8; 8];
    v[..4].copy_from_slice(&ip_word(addr).to_ne_bytes());
    v[4..].copy_from_slice(&port_word(addr).to_ne_bytes());
    v
}

/// The program:
///
/// ```text
/// ip = ctx->user_ip4; port = ctx->user_port;
/// if (ip == VIP && port == VIP_PORT) {
///     n = atomic_fetch_add(&counter[0], 1) % backends;
///     b = backend[n]; ctx->user_ip4 = b.ip; ctx->user_port = b.port;
/// }
/// return 1;
/// ```
fn program(vip: &SocketAddrV4, n: usize, counter: &OwnedFd, backends: &OwnedFd) -> Vec<u64> {
    let [counter_lo, counter_hi] = ld_map_fd(1, counter);
    let [backends_lo, backends_hi] = ld_map_fd(1, backends);
    // Jumps to `out` are written with offset 0 and fixed below.
    const TO_OUT: i16 = 0;
    let mut p = vec![
        insn(0xbf, 6, 1, 0, 0),                          // r6 = ctx
        insn(0x61, 2, 6, USER_IP4, 0), // r2 = ctx->user_ip4 (both fields read before branching)
        insn(0x61, 3, 6, USER_PORT, 0), // r3 = ctx->user_port
        insn(0x56, 2, 0, TO_OUT, ip_word(vip) as i32), // if w2 != VIP goto out (32-bit compare)
        insn(0x56, 3, 0, TO_OUT, port_word(vip) as i32), // if w3 != VIP port goto out
        insn(0xb7, 1, 0, 0, 0),        // r1 = 0
        insn(0x63, 10, 1, -4, 0),      // *(u32 *)(r10 - 4) = r1: key 0
        insn(0xbf, 2, 10, 0, 0),       // r2 = r10
        insn(0x07, 2, 0, 0, -4),       // r2 += -4
        counter_lo,                    // r1 = the counter map
        counter_hi,                    //
        insn(0x85, 0, 0, 0, 1),        // call bpf_map_lookup_elem
        insn(0x15, 0, 0, TO_OUT, 0),   // if r0 == 0 goto out
        insn(0xb7, 1, 0, 0, 1),        // r1 = 1
        insn(0xdb, 0, 1, 0, 0x01),     // r1 = atomic_fetch_add((u64 *)(r0 + 0), r1)
        insn(0x97, 1, 0, 0, n as i32), // r1 %= n (BPF_ALU64 | BPF_MOD | BPF_K)
        insn(0x63, 10, 1, -8, 0),      // *(u32 *)(r10 - 8) = r1: the backend's index
        insn(0xbf, 2, 10, 0, 0),       // r2 = r10
        insn(0x07, 2, 0, 0, -8),       // r2 += -8
        backends_lo,                   // r1 = the backends map
        backends_hi,                   //
        insn(0x85, 0, 0, 0, 1),        // call bpf_map_lookup_elem
        insn(0x15, 0, 0, TO_OUT, 0),   // if r0 == 0 goto out
        insn(0x61, 2, 0, 0, 0),        // r2 = backend.ip
        insn(0x61, 3, 0, 4, 0),        // r3 = backend.port
        insn(0x63, 6, 2, USER_IP4, 0), // ctx->user_ip4 = r2
        insn(0x63, 6, 3, USER_PORT, 0), // ctx->user_port = r3
    ];
    let out = p.len();
    for (pc, i) in p.iter_mut().enumerate() {
        // The conditional jumps (JMP/JMP32 with JNE or JEQ against an immediate).
        if matches!(*i as u8, 0x56 | 0x15) {
            let off = (out - pc - 1) as u16;
            *i = (*i & !(0xffff << 16)) | (u64::from(off) << 16);
        }
    }
    p.push(insn(0xb7, 0, 0, 0, 1)); // out: r0 = 1 (connect() goes on)
    p.push(insn(0x95, 0, 0, 0, 0)); // exit
    p
}

impl SocketLb {
    /// Loads the stand-in for `vip` over `backends` (round-robin, in this order), attaches it
    /// to `cgroup`'s `connect4` after the programs already there, and pins its link in `pins`
    /// (a bpffs folder) as `socklb_connect4`.
    pub fn attach(
        cgroup: &Path,
        vip: SocketAddrV4,
        backends: &[SocketAddrV4],
        pins: &Path,
    ) -> Self {
        assert!(!backends.is_empty(), "a socket LB needs a backend");
        let n = u32::try_from(backends.len()).expect("a few backends");
        let counter = create_array(8, 1, "the socket LB's counter map");
        let table = create_array(8, n, "the socket LB's backends map");
        for (i, b) in (0..n).zip(backends) {
            array_set(&table, i, &backend_value(b));
        }
        let prog = load(
            CONNECT4,
            &program(&vip, backends.len(), &counter, &table),
            PROG_NAME,
        );
        let link = link_create(&prog, CONNECT4, cgroup);
        let pin_at = pins.join(PROG_NAME);
        pin(&link, &pin_at);
        let (_, _, prog_id) = link_info(&link).expect("socket LB link info");
        Self {
            vip,
            backends: backends.to_vec(),
            prog_id,
            pin: pin_at,
            link,
        }
    }
}

impl Drop for SocketLb {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.pin);
        let mut attr: Attr = [0; 128];
        put_u32(&mut attr, 0, self.link.as_raw_fd() as u32);
        if let Err(e) = bpf(BPF_LINK_DETACH, &mut attr) {
            eprintln!("detach the socket LB ({}): {e}", self.pin.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_what_the_kernel_stores_in_bpf_sock_addr() {
        let vip: SocketAddrV4 = "10.96.0.10:80".parse().expect("an address");
        // Network order in memory: 0a 60 00 0a, and the port 0x0050 as bytes 00 50.
        assert_eq!(ip_word(&vip).to_ne_bytes(), [10, 96, 0, 10]);
        assert_eq!(port_word(&vip).to_ne_bytes()[..2], [0x00, 0x50]);
        assert_eq!(port_word(&vip) >> 16, 0);
        assert_eq!(backend_value(&vip)[..4], [10, 96, 0, 10]);
    }

    #[test]
    fn every_jump_lands_on_the_return() {
        // Map fds are only copied into the instructions: any open fd does.
        let file = std::fs::File::open("/dev/null").expect("open /dev/null");
        let fd = OwnedFd::from(file);
        let vip: SocketAddrV4 = "10.96.0.10:80".parse().expect("an address");
        let p = program(&vip, 3, &fd, &fd);
        let out = p.len() - 2;
        assert_eq!(p[out] as u8, 0xb7, "r0 = 1 before exit");
        let jumps: Vec<usize> = (0..p.len())
            .filter(|&pc| matches!(p[pc] as u8, 0x56 | 0x15))
            .collect();
        assert_eq!(jumps.len(), 4);
        for pc in jumps {
            let off = (p[pc] >> 16) as u16 as i16;
            assert_eq!(pc as i64 + 1 + i64::from(off), out as i64, "jump at {pc}");
        }
    }
}
