//! Another agent's programs on limiter's hooks, for the tests that check limiter never harms
//! them (a CNI such as Cilium attaches to the same cgroup root and netns hooks).
//!
//! Each foreign program is loaded through bpf(2) from a handful of instructions: it adds one
//! to its own counter (an array map) every time it runs and lets everything through, so a test
//! can tell that it is still attached *and* still runs. It is attached with a bpf link pinned in
//! a folder that is not limiter's, as an agent would.

use std::fs::File;
use std::os::fd::{AsFd as _, AsRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};

use limiter_common::sys::{
    Attr, BPF_LINK_CREATE, BPF_MAP_LOOKUP_ELEM, BPF_MAP_UPDATE_ELEM, bpf, link_info, obj_get,
    owned, put_u32, put_u64,
};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_MAP_TYPE_ARRAY: u32 = 2;

/// A hook limiter uses: its name, `enum bpf_prog_type` and `enum bpf_attach_type`.
#[derive(Clone, Copy, Debug)]
pub struct Hook {
    pub name: &'static str,
    prog_type: u32,
    attach_type: u32,
}

/// limiter's cgroup hooks, as attached at the cgroup v2 root.
pub const CGROUP_HOOKS: [Hook; 5] = [
    Hook {
        name: "cgroup_skb/ingress",
        prog_type: 8,
        attach_type: 0,
    },
    Hook {
        name: "cgroup_skb/egress",
        prog_type: 8,
        attach_type: 1,
    },
    Hook {
        name: "sock_ops",
        prog_type: 13,
        attach_type: 3,
    },
    Hook {
        name: "cgroup/connect4",
        prog_type: 18,
        attach_type: 10,
    },
    Hook {
        name: "cgroup/connect6",
        prog_type: 18,
        attach_type: 11,
    },
];

/// `cgroup/connect4` (as in [`CGROUP_HOOKS`]), the hook of a socket load balancer.
pub const CONNECT4: Hook = CGROUP_HOOKS[3];

/// limiter's per-netns hook.
pub const SK_LOOKUP: Hook = Hook {
    name: "sk_lookup",
    prog_type: 30,
    attach_type: 36,
};

/// One foreign program attached to one hook: its counter map, its program id, its pinned link.
pub struct ForeignProgram {
    pub hook: Hook,
    pub prog_id: u32,
    counter: OwnedFd,
    pub pin: PathBuf,
}

/// One eBPF instruction: `code`, `dst` and `src` registers, `off` and `imm`.
pub(crate) fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | (u64::from(dst & 0xf) << 8)
        | (u64::from(src & 0xf) << 12)
        | (u64::from(off as u16) << 16)
        | (u64::from(imm as u32) << 32)
}

/// `r<dst> = map` (a 64-bit load of a map's file descriptor, `BPF_PSEUDO_MAP_FD`): two slots.
pub(crate) fn ld_map_fd(dst: u8, map: &OwnedFd) -> [u64; 2] {
    [insn(0x18, dst, 1, 0, map.as_raw_fd()), 0]
}

/// `counter[0] += 1; return 1` (1 lets the packet, the connect() or the lookup through).
fn counting_program(map: &OwnedFd) -> Vec<u64> {
    let [ld, ld_hi] = ld_map_fd(1, map);
    vec![
        insn(0xb7, 1, 0, 0, 0),   // r1 = 0
        insn(0x63, 10, 1, -4, 0), // *(u32 *)(r10 - 4) = r1: key 0
        insn(0xbf, 2, 10, 0, 0),  // r2 = r10
        insn(0x07, 2, 0, 0, -4),  // r2 += -4
        ld,                       // r1 = the counter map
        ld_hi,                    //   (second half of the 64-bit load)
        insn(0x85, 0, 0, 0, 1),   // call bpf_map_lookup_elem
        insn(0x15, 0, 0, 2, 0),   // if r0 == 0 goto +2
        insn(0xb7, 1, 0, 0, 1),   // r1 = 1
        insn(0xdb, 0, 1, 0, 0),   // lock *(u64 *)(r0 + 0) += r1
        insn(0xb7, 0, 0, 0, 1),   // r0 = 1
        insn(0x95, 0, 0, 0, 0),   // exit
    ]
}

/// A `BPF_MAP_TYPE_ARRAY` of `entries` values of `value_size` bytes (u32 keys); `what` names
/// it in the panic.
pub(crate) fn create_array(value_size: u32, entries: u32, what: &str) -> OwnedFd {
    let mut attr: Attr = [0; 128];
    put_u32(&mut attr, 0, BPF_MAP_TYPE_ARRAY);
    put_u32(&mut attr, 4, 4); // key size
    put_u32(&mut attr, 8, value_size);
    put_u32(&mut attr, 12, entries);
    bpf(BPF_MAP_CREATE, &mut attr)
        .map(owned)
        .unwrap_or_else(|e| panic!("create {what}: {e}"))
}

/// Writes `value` at `key` of an array map.
pub(crate) fn array_set(map: &OwnedFd, key: u32, value: &[u8]) {
    let mut attr: Attr = [0; 128];
    put_u32(&mut attr, 0, map.as_raw_fd() as u32);
    put_u64(&mut attr, 8, &key as *const u32 as u64);
    put_u64(&mut attr, 16, value.as_ptr() as u64);
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).unwrap_or_else(|e| panic!("update map key {key}: {e}"));
}

/// Loads `insns` as a GPL program for `hook` named `name` (15 bytes at most are kept); a
/// verifier rejection panics with its log.
pub(crate) fn load(hook: Hook, insns: &[u64], name: &str) -> OwnedFd {
    let license = c"GPL";
    let mut log = vec![0u8; 65536];
    let mut attr: Attr = [0; 128];
    put_u32(&mut attr, 0, hook.prog_type);
    put_u32(&mut attr, 4, insns.len() as u32);
    put_u64(&mut attr, 8, insns.as_ptr() as u64);
    put_u64(&mut attr, 16, license.as_ptr() as u64);
    put_u32(&mut attr, 24, 1);
    put_u32(&mut attr, 28, log.len() as u32);
    put_u64(&mut attr, 32, log.as_mut_ptr() as u64);
    let name = name.as_bytes();
    attr[48..48 + name.len().min(15)].copy_from_slice(&name[..name.len().min(15)]);
    put_u32(&mut attr, 68, hook.attach_type);
    bpf(BPF_PROG_LOAD, &mut attr)
        .map(owned)
        .unwrap_or_else(|e| {
            let end = log.iter().position(|&b| b == 0).unwrap_or(0);
            panic!(
                "load a {} program: {e}: {}",
                hook.name,
                String::from_utf8_lossy(&log[..end])
            )
        })
}

/// Pins a bpf object (here a link) at `path`, on a bpffs.
pub(crate) fn pin(obj: &OwnedFd, path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("no NUL");
    let mut attr: Attr = [0; 128];
    put_u64(&mut attr, 0, c.as_ptr() as u64);
    put_u32(&mut attr, 8, obj.as_raw_fd() as u32);
    bpf(BPF_OBJ_PIN, &mut attr).unwrap_or_else(|e| panic!("pin {}: {e}", path.display()));
}

/// Attaches `prog` to `target` (a cgroup or a netns) on `hook` with a bpf link, appended
/// after the programs already there; returns the link.
pub(crate) fn link_create(prog: &OwnedFd, hook: Hook, target: &Path) -> OwnedFd {
    let target = File::open(target).unwrap_or_else(|e| panic!("open {}: {e}", target.display()));
    let mut attr: Attr = [0; 128];
    put_u32(&mut attr, 0, prog.as_raw_fd() as u32);
    put_u32(&mut attr, 4, target.as_fd().as_raw_fd() as u32);
    put_u32(&mut attr, 8, hook.attach_type);
    bpf(BPF_LINK_CREATE, &mut attr)
        .map(owned)
        .unwrap_or_else(|e| panic!("attach a {} program: {e}", hook.name))
}

impl ForeignProgram {
    /// Loads a counting program for `hook` (named `name`), attaches it to `target` (a cgroup
    /// or a netns) with a bpf link, and pins the link at `pin`.
    pub fn attach(hook: Hook, target: &Path, name: &str, pin_at: PathBuf) -> Self {
        let counter = create_array(8, 1, "a foreign counter map");
        let prog = load(hook, &counting_program(&counter), name);
        let link = link_create(&prog, hook, target);
        pin(&link, &pin_at);
        let (_, _, prog_id) = link_info(&link).expect("foreign link info");
        Self {
            hook,
            prog_id,
            counter,
            pin: pin_at,
        }
    }

    /// How often the program has run.
    pub fn runs(&self) -> u64 {
        let key = 0u32;
        let mut value = 0u64;
        let mut attr: Attr = [0; 128];
        put_u32(&mut attr, 0, self.counter.as_raw_fd() as u32);
        put_u64(&mut attr, 8, &key as *const u32 as u64);
        put_u64(&mut attr, 16, &mut value as *mut u64 as u64);
        bpf(BPF_MAP_LOOKUP_ELEM, &mut attr).expect("read a foreign counter");
        value
    }

    /// Its link, still pinned, still names this program.
    pub fn link_intact(&self) -> bool {
        obj_get(&self.pin)
            .ok()
            .and_then(|link| link_info(&link).ok())
            .is_some_and(|(_, _, prog)| prog == self.prog_id)
    }
}

/// The program ids that run on `hook` for `target`, in the order they run (effective ones,
/// inherited included, for a cgroup).
pub fn effective(hook: Hook, target: &Path) -> Vec<u32> {
    let target = File::open(target).unwrap_or_else(|e| panic!("open {}: {e}", target.display()));
    let effective = hook.attach_type != SK_LOOKUP.attach_type;
    limiter_common::sys::prog_query(target.as_fd(), hook.attach_type, effective)
        .unwrap_or_else(|e| panic!("query {}: {e}", hook.name))
}
