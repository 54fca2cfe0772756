//! The few system facts and bpf(2) commands aya 0.16 does not expose: where cgroup2 and bpffs
//! are, replacing a link's program in place, and running an iterator bound to a map.

use std::{
    fs::File,
    io::Read,
    os::fd::{AsFd, AsRawFd},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

fn fs_magic(path: &Path) -> std::io::Result<i64> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    // SAFETY: statfs is a C struct of integers, for which all zeros is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out-pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_type as i64)
}

/// The cgroup v2 hierarchy: `explicit` if given (it must be cgroup2), else the first of the
/// known mount points that is cgroup2 (pure v2 at /sys/fs/cgroup, hybrid at .../unified).
pub fn cgroup2_root(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        let magic = fs_magic(p).with_context(|| format!("cannot stat cgroup {}", p.display()))?;
        if magic != CGROUP2_SUPER_MAGIC {
            bail!(
                "{} is not a cgroup v2 directory; pass the cgroup2 mount (see `mount -t cgroup2`)",
                p.display()
            );
        }
        return Ok(p.to_path_buf());
    }
    for candidate in crate::paths::CGROUP2_CANDIDATES {
        if fs_magic(Path::new(candidate)).ok() == Some(CGROUP2_SUPER_MAGIC) {
            return Ok(PathBuf::from(candidate));
        }
    }
    bail!(
        "no cgroup v2 hierarchy found at {:?}; mount one (`mount -t cgroup2 none /sys/fs/cgroup/unified`) or pass --cgroup",
        crate::paths::CGROUP2_CANDIDATES
    )
}

/// The node's cgroup layout: `v2` (cgroup2 alone at /sys/fs/cgroup, as on most Kubernetes
/// nodes), `hybrid` (v1 controllers, cgroup2 at /sys/fs/cgroup/unified), `v1` (no cgroup2
/// mounted) or `none` (no cgroup filesystem at /sys/fs/cgroup).
pub fn cgroup_layout() -> &'static str {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const CGROUP_SUPER_MAGIC: i64 = 0x0027_e0eb;
    let [pure, unified] = crate::paths::CGROUP2_CANDIDATES;
    match fs_magic(Path::new(pure)).ok() {
        Some(CGROUP2_SUPER_MAGIC) => "v2",
        _ if fs_magic(Path::new(unified)).ok() == Some(CGROUP2_SUPER_MAGIC) => "hybrid",
        Some(TMPFS_MAGIC | CGROUP_SUPER_MAGIC) => "v1",
        _ => "none",
    }
}

/// Whether `path` is a bpffs mount.
pub fn is_bpffs(path: &Path) -> bool {
    fs_magic(path).ok() == Some(BPF_FS_MAGIC)
}

/// Makes sure `path` is a bpffs mount, mounting one if it is not.
pub fn ensure_bpffs(path: &Path) -> anyhow::Result<()> {
    if is_bpffs(path) {
        return Ok(());
    }
    std::fs::create_dir_all(path).with_context(|| format!("create {}", path.display()))?;
    let target = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    // SAFETY: valid C strings; a plain bpffs mount.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("mount bpffs at {} (needs CAP_SYS_ADMIN)", path.display()));
    }
    Ok(())
}

/// `enum bpf_attach_type` BPF_TRACE_ITER.
const BPF_TRACE_ITER: u32 = 28;

pub use limiter_common::sys::obj_get;
use limiter_common::sys::{
    BPF_ITER_CREATE, BPF_LINK_CREATE, BPF_LINK_UPDATE, BPF_MAP_LOOKUP_ELEM, BPF_MAP_UPDATE_ELEM,
    bpf, owned, put_u32, put_u64,
};

fn map_elem(cmd: libc::c_long, map: impl AsFd, key: &u32, value: &mut u32) -> std::io::Result<()> {
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, map.as_fd().as_raw_fd() as u32);
    put_u64(&mut attr, 8, key as *const u32 as u64);
    put_u64(&mut attr, 16, value as *mut u32 as u64);
    bpf(cmd, &mut attr).map(|_| ())
}

/// Reads element `key` of a u32 array map (pinned at `path`).
pub fn read_u32_array(path: &Path, key: u32) -> std::io::Result<u32> {
    let map = obj_get(path)?;
    let mut value = 0;
    map_elem(BPF_MAP_LOOKUP_ELEM, &map, &key, &mut value)?;
    Ok(value)
}

/// Writes element `key` of a u32 array map (pinned at `path`).
pub fn write_u32_array(path: &Path, key: u32, mut value: u32) -> std::io::Result<()> {
    let map = obj_get(path)?;
    map_elem(BPF_MAP_UPDATE_ELEM, &map, &key, &mut value)
}

/// Atomically replaces the program of `link` with `prog`: attached programs keep running
/// with no gap while the daemon restarts or upgrades.
pub fn link_update(link: impl AsFd, prog: impl AsFd) -> std::io::Result<()> {
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, link.as_fd().as_raw_fd() as u32);
    put_u32(&mut attr, 4, prog.as_fd().as_raw_fd() as u32);
    bpf(BPF_LINK_UPDATE, &mut attr).map(|_| ())
}

/// Runs an iterator program over the elements of `map` (e.g. a socket-storage map) to the end,
/// returning what it printed (limiter's iterators print nothing; they act on the elements).
pub fn run_map_iterator(prog: impl AsFd, map: impl AsFd) -> std::io::Result<Vec<u8>> {
    // bpf_iter_link_info { struct { __u32 map_fd; } map; } padded to its union size.
    let mut info = [0u8; 16];
    info[..4].copy_from_slice(&(map.as_fd().as_raw_fd() as u32).to_ne_bytes());
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, prog.as_fd().as_raw_fd() as u32);
    put_u32(&mut attr, 8, BPF_TRACE_ITER);
    put_u64(&mut attr, 16, info.as_ptr() as u64);
    put_u32(&mut attr, 24, info.len() as u32);
    let link = bpf(BPF_LINK_CREATE, &mut attr).map(owned)?;
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, link.as_raw_fd() as u32);
    let mut iter = File::from(bpf(BPF_ITER_CREATE, &mut attr).map(owned)?);
    let mut out = Vec::new();
    iter.read_to_end(&mut out)?;
    Ok(out)
}

/// CLOCK_MONOTONIC in ns: the clock of bpf_ktime_get_ns, to read pending-bucket epochs.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
