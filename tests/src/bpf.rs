//! The few bpf(2) commands the verdict tests and the benchmark need: open a pinned link, find
//! its program, run that program on crafted input (BPF_PROG_TEST_RUN), and tell whether a link
//! still exists.
//!
//! The bpf(2) call itself is limiter-common's `sys` shim, which the daemon uses too.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

pub use limiter_common::sys::link_info;
pub use limiter_common::sys::obj_get;
use limiter_common::sys::{
    BPF_LINK_DETACH, BPF_LINK_GET_FD_BY_ID, BPF_LINK_GET_NEXT_ID, BPF_OBJ_GET_INFO_BY_FD,
    BPF_PROG_TEST_RUN, bpf, get_u32, owned, prog_by_id, put_u32, put_u64,
};

/// `enum bpf_link_type`: the two kinds of link limiter attaches.
pub const LINK_TYPE_CGROUP: u32 = 3;
pub const LINK_TYPE_NETNS: u32 = 5;

/// The program behind the link pinned at `pin`.
pub fn prog_of_pinned_link(pin: &Path) -> io::Result<OwnedFd> {
    let link = obj_get(pin)?;
    let (_, _, prog_id) = link_info(&link)?;
    prog_by_id(prog_id)
}

/// Detaches a link from its hook now, whoever else still holds it (a pin in a bpffs that
/// another mount namespace keeps alive, say).
pub fn link_detach(link: &OwnedFd) -> io::Result<()> {
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, link.as_raw_fd() as u32);
    bpf(BPF_LINK_DETACH, &mut attr).map(drop)
}

/// Whether the link of id `id` exists and is still attached to a cgroup or a netns (a
/// detached link reports cgroup id, or netns inode, 0).
pub fn link_attached(id: u32) -> bool {
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, id);
    let Ok(fd) = bpf(BPF_LINK_GET_FD_BY_ID, &mut attr).map(owned) else {
        return false;
    };
    let mut info = [0u8; 64];
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, fd.as_raw_fd() as u32);
    put_u32(&mut attr, 4, info.len() as u32);
    put_u64(&mut attr, 8, info.as_mut_ptr() as u64);
    if bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).is_err() {
        return true;
    }
    // The union after prog_id is 8-aligned: cgroup_id (u64) or netns_ino (u32) at 16.
    match get_u32(&info, 0) {
        LINK_TYPE_CGROUP => u64::from_ne_bytes(info[16..24].try_into().expect("8")) != 0,
        LINK_TYPE_NETNS => get_u32(&info, 16) != 0,
        _ => true,
    }
}

/// Links of every type on the machine: `(type, link id)`, in id order.
pub fn all_links() -> Vec<(u32, u32)> {
    let mut found = Vec::new();
    let mut next = 0u32;
    // Bounded: the kernel hands out ids in increasing order and stops with ENOENT.
    for _ in 0..100_000 {
        let mut attr = [0u8; 128];
        put_u32(&mut attr, 0, next);
        if bpf(BPF_LINK_GET_NEXT_ID, &mut attr).is_err() {
            break;
        }
        next = get_u32(&attr, 4);
        let mut attr = [0u8; 128];
        put_u32(&mut attr, 0, next);
        if let Ok(fd) = bpf(BPF_LINK_GET_FD_BY_ID, &mut attr).map(owned)
            && let Ok((ty, id, _)) = link_info(&fd)
        {
            found.push((ty, id));
        }
    }
    found
}

/// One BPF_PROG_TEST_RUN: the program's return value and the kernel's own time per run.
#[derive(Clone, Copy, Debug)]
pub struct TestRun {
    pub retval: u32,
    pub ns_per_run: u32,
}

/// Runs `prog` `repeat` times on `data` (packet) and `ctx` (program context) in the kernel.
pub fn test_run(prog: &OwnedFd, data: &[u8], ctx: &[u8], repeat: u32) -> io::Result<TestRun> {
    // attr.test: prog_fd 0, retval 4, data_size_in 8, data_size_out 12, data_in 16,
    // data_out 24, repeat 32, duration 36, ctx_size_in 40, ctx_size_out 44, ctx_in 48, ...
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, prog.as_raw_fd() as u32);
    if !data.is_empty() {
        put_u32(&mut attr, 8, data.len() as u32);
        put_u64(&mut attr, 16, data.as_ptr() as u64);
    }
    put_u32(&mut attr, 32, repeat);
    if !ctx.is_empty() {
        put_u32(&mut attr, 40, ctx.len() as u32);
        put_u64(&mut attr, 48, ctx.as_ptr() as u64);
    }
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    Ok(TestRun {
        retval: get_u32(&attr, 4),
        ns_per_run: get_u32(&attr, 36),
    })
}

/// `struct bpf_sk_lookup` as BPF_PROG_TEST_RUN takes it: a TCP/IPv4 SYN from `remote` to
/// `local`, addresses in network order, remote port big-endian, local port host order.
pub fn sk_lookup_ctx(remote: std::net::SocketAddrV4, local: std::net::SocketAddrV4) -> [u8; 72] {
    sk_lookup(remote.into(), local.into(), libc::IPPROTO_TCP)
}

/// `struct bpf_sk_lookup` for a packet of `protocol` (IPPROTO_TCP, IPPROTO_UDP) from `remote`
/// to `local`, IPv4 or IPv6 (both of one family).
pub fn sk_lookup(
    remote: std::net::SocketAddr,
    local: std::net::SocketAddr,
    protocol: i32,
) -> [u8; 72] {
    use std::net::SocketAddr::{V4, V6};
    let mut c = [0u8; 72];
    let family = if remote.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    c[8..12].copy_from_slice(&(family as u32).to_ne_bytes());
    c[12..16].copy_from_slice(&(protocol as u32).to_ne_bytes());
    match (remote, local) {
        (V4(r), V4(l)) => {
            c[16..20].copy_from_slice(&r.ip().octets()); // remote_ip4
            c[40..44].copy_from_slice(&l.ip().octets()); // local_ip4
        }
        (V6(r), V6(l)) => {
            c[20..36].copy_from_slice(&r.ip().octets()); // remote_ip6
            c[44..60].copy_from_slice(&l.ip().octets()); // local_ip6
        }
        _ => panic!("sk_lookup context of mixed families: {remote} -> {local}"),
    }
    c[36..38].copy_from_slice(&remote.port().to_be_bytes()); // remote_port (__be16)
    c[60..64].copy_from_slice(&u32::from(local.port()).to_ne_bytes()); // local_port
    c
}

/// An Ethernet + IPv4 + TCP SYN frame from `src` to `dst` (checksums are not checked on this
/// path), the input BPF_PROG_TEST_RUN takes for cgroup_skb programs.
pub fn syn_frame(src: std::net::SocketAddrV4, dst: std::net::SocketAddrV4) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 20];
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes()); // ethertype IPv4
    let ip = &mut f[14..34];
    ip[0] = 0x45; // version 4, 20-byte header
    ip[2..4].copy_from_slice(&40u16.to_be_bytes()); // total length
    ip[8] = 64; // ttl
    ip[9] = libc::IPPROTO_TCP as u8;
    ip[12..16].copy_from_slice(&src.ip().octets());
    ip[16..20].copy_from_slice(&dst.ip().octets());
    let tcp = &mut f[34..54];
    tcp[0..2].copy_from_slice(&src.port().to_be_bytes());
    tcp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    tcp[12] = 5 << 4; // data offset: 20 bytes
    tcp[13] = 0x02; // SYN
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes()); // window
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crafted_inputs_have_the_kernel_layout() {
        let (r, l) = (
            "10.250.1.2:40000".parse().unwrap(),
            "10.250.2.2:8105".parse().unwrap(),
        );
        let c = sk_lookup_ctx(r, l);
        assert_eq!(&c[16..20], &[10, 250, 1, 2]);
        assert_eq!(&c[36..38], &40000u16.to_be_bytes());
        assert_eq!(get_u32(&c, 60), 8105);
        let c6 = sk_lookup(
            "[2001:db8::1]:40000".parse().unwrap(),
            "[2001:db8::2]:8105".parse().unwrap(),
            libc::IPPROTO_UDP,
        );
        assert_eq!(get_u32(&c6, 8), libc::AF_INET6 as u32);
        assert_eq!(get_u32(&c6, 12), libc::IPPROTO_UDP as u32);
        assert_eq!(c6[20], 0x20);
        assert_eq!(c6[59], 2);
        let f = syn_frame(r, l);
        assert_eq!(f.len(), 54);
        assert_eq!(&f[34 + 2..34 + 4], &8105u16.to_be_bytes());
        assert_eq!(f[34 + 13], 0x02);
    }
}
