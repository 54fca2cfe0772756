//! The raw bpf(2) call for the few commands aya 0.16 does not expose, shared by the daemon
//! (replacing a link's program, running a map iterator, reading the layout word) and the
//! benchmark (BPF_PROG_TEST_RUN, link enumeration). Userspace only (`sys` feature).
//!
//! `bpf_attr` is a zeroed byte block with fields written at their kernel offsets: the kernel
//! requires every unused byte to be zero, and 128 bytes covers every command used.

extern crate std;

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;

/// A `union bpf_attr`, zero-padded.
pub type Attr = [u8; 128];

pub const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
pub const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
pub const BPF_OBJ_GET: libc::c_long = 7;
pub const BPF_PROG_TEST_RUN: libc::c_long = 10;
pub const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
pub const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
pub const BPF_LINK_CREATE: libc::c_long = 28;
pub const BPF_LINK_UPDATE: libc::c_long = 29;
pub const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
pub const BPF_LINK_GET_NEXT_ID: libc::c_long = 31;
pub const BPF_ITER_CREATE: libc::c_long = 33;
pub const BPF_LINK_DETACH: libc::c_long = 34;

/// bpf(2): the command's result (often a new file descriptor), or the errno.
pub fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<i64> {
    // SAFETY: attr is a zero-padded bpf_attr large enough for every command used, and the
    // pointers callers write into it point at buffers that outlive the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

pub fn put_u32(attr: &mut Attr, off: usize, v: u32) {
    attr[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

pub fn put_u64(attr: &mut Attr, off: usize, v: u64) {
    attr[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}

pub fn get_u32(bytes: &[u8], off: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[off..off + 4]);
    u32::from_ne_bytes(b)
}

/// Takes ownership of a file descriptor a bpf(2) command returned.
pub fn owned(fd: i64) -> OwnedFd {
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// Opens a pinned bpf object (map, link or program).
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())?;
    let mut attr = [0u8; 128];
    put_u64(&mut attr, 0, c.as_ptr() as u64);
    bpf(BPF_OBJ_GET, &mut attr).map(owned)
}

/// BPF_PROG_QUERY: the programs attached to a cgroup or a network namespace.
pub const BPF_PROG_QUERY: libc::c_long = 16;
/// BPF_PROG_QUERY flag: the programs that run for the target, inherited ones included, in the
/// order they run.
pub const BPF_F_QUERY_EFFECTIVE: u32 = 1;

/// BPF_OBJ_GET_INFO_BY_FD: fills `info` with the start of the object's info struct.
fn obj_info(obj: &OwnedFd, info: &mut [u8]) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, obj.as_raw_fd() as u32);
    put_u32(&mut attr, 4, info.len() as u32);
    put_u64(&mut attr, 8, info.as_mut_ptr() as u64);
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).map(drop)
}

/// What a link is: `(type, link id, program id)` from BPF_OBJ_GET_INFO_BY_FD.
pub fn link_info(link: &OwnedFd) -> io::Result<(u32, u32, u32)> {
    // struct bpf_link_info { __u32 type; __u32 id; __u32 prog_id; union {...} }
    let mut info = [0u8; 64];
    obj_info(link, &mut info)?;
    Ok((get_u32(&info, 0), get_u32(&info, 4), get_u32(&info, 8)))
}

/// A file descriptor of the program with id `id`.
pub fn prog_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, id);
    bpf(BPF_PROG_GET_FD_BY_ID, &mut attr).map(owned)
}

/// The name a program was loaded with (at most 15 bytes, as the kernel keeps it).
pub fn prog_name(prog: &OwnedFd) -> io::Result<std::string::String> {
    // struct bpf_prog_info: char name[16] at offset 64.
    let mut info = [0u8; 96];
    obj_info(prog, &mut info)?;
    let name = &info[64..80];
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Ok(std::string::String::from_utf8_lossy(&name[..end]).into_owned())
}

/// The ids of the programs on `target` (a cgroup or netns fd) for `attach_type`, in the order
/// they run; `effective` includes those inherited from parent cgroups.
pub fn prog_query(
    target: std::os::fd::BorrowedFd<'_>,
    attach_type: u32,
    effective: bool,
) -> io::Result<std::vec::Vec<u32>> {
    use std::os::fd::AsRawFd as _;
    let mut ids = std::vec![0u32; 256];
    let mut attr = [0u8; 128];
    // struct { target_fd; attach_type; query_flags; attach_flags; prog_ids (u64); prog_cnt }
    put_u32(&mut attr, 0, target.as_raw_fd() as u32);
    put_u32(&mut attr, 4, attach_type);
    put_u32(
        &mut attr,
        8,
        if effective { BPF_F_QUERY_EFFECTIVE } else { 0 },
    );
    put_u64(&mut attr, 16, ids.as_mut_ptr() as u64);
    put_u32(&mut attr, 24, ids.len() as u32);
    bpf(BPF_PROG_QUERY, &mut attr)?;
    ids.truncate(get_u32(&attr, 24) as usize);
    Ok(ids)
}
