//! The kernel probes aya 0.16 does not offer: each loads (or half-attaches) a minimal program
//! through bpf(2) and reads the kernel's answer, so that what a kernel can do is learnt from
//! the kernel itself, never from its version number (backports make version numbers lie).
//!
//! Program types, maps and helpers are probed with aya's own `aya::sys::is_*_supported`
//! (capabilities.rs); these cover BPF atomics, bpf links and the socket-storage iterator.

use std::io;
use std::os::fd::{AsRawFd as _, OwnedFd};

use limiter_common::sys::{Attr, BPF_LINK_CREATE, BPF_LINK_UPDATE, bpf, owned, put_u32, put_u64};

const BPF_PROG_LOAD: libc::c_long = 5;

/// `enum bpf_prog_type` values used here.
const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
const BPF_PROG_TYPE_CGROUP_SKB: u32 = 8;
const BPF_PROG_TYPE_TRACING: u32 = 26;
/// `enum bpf_attach_type` values used here.
const BPF_CGROUP_INET_INGRESS: u32 = 0;
const BPF_TRACE_ITER: u32 = 28;

/// One eBPF instruction, as the kernel reads it (`struct bpf_insn`).
#[derive(Clone, Copy)]
struct Insn(u64);

impl Insn {
    const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Self {
        Self(
            code as u64
                | ((dst as u64 & 0xf) << 8)
                | ((src as u64 & 0xf) << 12)
                | ((off as u16 as u64) << 16)
                | ((imm as u32 as u64) << 32),
        )
    }
    /// `dst = imm` (64-bit).
    const fn mov(dst: u8, imm: i32) -> Self {
        Self::new(0xb7, dst, 0, 0, imm)
    }
    /// `*(u64 *)(dst + off) = src`.
    const fn store(dst: u8, off: i16, src: u8) -> Self {
        Self::new(0x7b, dst, src, off, 0)
    }
    /// A 64-bit BPF_ATOMIC operation on `*(u64 *)(dst + off)` (BPF_STX | BPF_ATOMIC | BPF_DW).
    const fn atomic(dst: u8, off: i16, src: u8, op: i32) -> Self {
        Self::new(0xdb, dst, src, off, op)
    }
    const fn exit() -> Self {
        Self::new(0x95, 0, 0, 0, 0)
    }
}

/// BPF_ATOMIC operations (BPF_FETCH is 0x01).
const ATOMIC_FETCH_ADD: i32 = 0x01;
const ATOMIC_XCHG: i32 = 0xe1;
const ATOMIC_CMPXCHG: i32 = 0xf1;
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const FP: u8 = 10;

/// A refused load: the errno and the start of the verifier's log.
#[derive(Debug)]
pub struct Refused {
    pub error: io::Error,
    pub log: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The verifier's statistics lines say nothing about why.
        let stats = ["processed ", "verification time", "stack depth"];
        let first = self
            .log
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !stats.iter().any(|s| l.starts_with(s)));
        match first {
            Some(line) => write!(f, "{} ({})", self.error, line.trim()),
            None => write!(f, "{}", self.error),
        }
    }
}

fn load(
    prog_type: u32,
    attach_type: u32,
    attach_btf_id: u32,
    insns: &[Insn],
) -> Result<OwnedFd, Refused> {
    let words: Vec<u64> = insns.iter().map(|i| i.0).collect();
    let license = c"GPL";
    let mut log = vec![0u8; 4096];
    let mut attr: Attr = [0; 128];
    put_u32(&mut attr, 0, prog_type);
    put_u32(&mut attr, 4, words.len() as u32);
    put_u64(&mut attr, 8, words.as_ptr() as u64);
    put_u64(&mut attr, 16, license.as_ptr() as u64);
    put_u32(&mut attr, 24, 1); // log_level
    put_u32(&mut attr, 28, log.len() as u32);
    put_u64(&mut attr, 32, log.as_mut_ptr() as u64);
    put_u32(&mut attr, 68, attach_type); // expected_attach_type
    put_u32(&mut attr, 108, attach_btf_id);
    bpf(BPF_PROG_LOAD, &mut attr).map(owned).map_err(|error| {
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        Refused {
            error,
            log: String::from_utf8_lossy(&log[..end]).into_owned(),
        }
    })
}

/// BPF atomics with fetch (fetch-add, exchange, compare-and-exchange): Linux 5.12. Every slot
/// counter changes only through them. Older kernels refuse the encoding ("reserved fields").
pub fn atomics() -> Result<(), Refused> {
    let insns = [
        Insn::mov(R1, 0),
        Insn::store(FP, -8, R1),
        Insn::mov(R2, 1),
        Insn::atomic(FP, -8, R2, ATOMIC_FETCH_ADD),
        Insn::mov(R0, 0),
        Insn::atomic(FP, -8, R2, ATOMIC_CMPXCHG),
        Insn::atomic(FP, -8, R2, ATOMIC_XCHG),
        Insn::mov(R0, 0),
        Insn::exit(),
    ];
    load(BPF_PROG_TYPE_SOCKET_FILTER, 0, 0, &insns).map(drop)
}

/// The answer of a bpf(2) command given an invalid target: EBADF means the kernel knows the
/// command and went as far as looking the target up; EINVAL that it does not have it.
fn known_command(result: io::Result<i64>) -> Result<(), Refused> {
    match result {
        Err(e) if e.raw_os_error() == Some(libc::EBADF) => Ok(()),
        Ok(fd) => {
            drop(owned(fd));
            Ok(())
        }
        Err(error) => Err(Refused {
            error,
            log: String::new(),
        }),
    }
}

/// bpf links on cgroups (BPF_LINK_CREATE, Linux 5.7): the links limiter pins so that its
/// programs outlive the daemon. Asked with no cgroup at all (target -1), so nothing attaches.
pub fn cgroup_links() -> Result<(), Refused> {
    let prog = load(
        BPF_PROG_TYPE_CGROUP_SKB,
        BPF_CGROUP_INET_INGRESS,
        0,
        &[Insn::mov(R0, 1), Insn::exit()],
    )?;
    let mut attr: Attr = [0; 128];
    put_u32(&mut attr, 0, prog.as_raw_fd() as u32);
    put_u32(&mut attr, 4, u32::MAX);
    put_u32(&mut attr, 8, BPF_CGROUP_INET_INGRESS);
    known_command(bpf(BPF_LINK_CREATE, &mut attr))
}

/// BPF_LINK_UPDATE (Linux 5.7): a restarted or upgraded daemon swaps its programs into the
/// pinned links with no gap. Asked of no link (-1), so nothing changes.
pub fn link_update() -> Result<(), Refused> {
    let mut attr: Attr = [0; 128];
    put_u32(&mut attr, 0, u32::MAX);
    put_u32(&mut attr, 4, u32::MAX);
    known_command(bpf(BPF_LINK_UPDATE, &mut attr))
}

/// The socket-storage map iterator (Linux 5.9, a tracing-type program): loads an empty
/// iterator program for the target `bpf_sk_storage_map`. Some kernels refuse every tracing
/// program (EPERM) while all the hooks limiter enforces with work.
pub fn sk_storage_iterator(vmlinux: &aya::Btf) -> Result<(), Refused> {
    let target = vmlinux
        .id_by_type_name_kind("bpf_iter_bpf_sk_storage_map", aya_obj::btf::BtfKind::Func)
        .map_err(|e| Refused {
            error: io::Error::new(io::ErrorKind::Unsupported, e.to_string()),
            log: String::new(),
        })?;
    load(
        BPF_PROG_TYPE_TRACING,
        BPF_TRACE_ITER,
        target,
        &[Insn::mov(R0, 0), Insn::exit()],
    )
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_are_encoded_as_the_kernel_reads_them() {
        // r2 = atomic_fetch_add((u64 *)(r10 - 8), r2): db 2a f8 ff 01 00 00 00
        let i = Insn::atomic(FP, -8, R2, ATOMIC_FETCH_ADD);
        assert_eq!(i.0.to_le_bytes(), [0xdb, 0x2a, 0xf8, 0xff, 0x01, 0, 0, 0]);
        assert_eq!(
            Insn::mov(R0, 1).0.to_le_bytes(),
            [0xb7, 0, 0, 0, 1, 0, 0, 0]
        );
        assert_eq!(Insn::exit().0.to_le_bytes(), [0x95, 0, 0, 0, 0, 0, 0, 0]);
    }
}
