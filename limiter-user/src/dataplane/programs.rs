//! Loading the programs and attaching them so that they outlive the daemon.
//!
//! Every attachment is a bpf link pinned under `<pin dir>/links/`. On start, a link already
//! pinned there (a previous daemon's) gets the freshly loaded program swapped in with
//! BPF_LINK_UPDATE: enforcement never pauses across a restart or an upgrade, and is never
//! doubled. Only links that do not exist yet are created.

use std::{
    collections::BTreeMap,
    fs::File,
    os::{fd::AsFd, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, anyhow};
use aya::{
    Ebpf,
    programs::{CgroupAttachMode, CgroupSkbAttachType, Iter, SkLookup, links::FdLink},
};
use limiter_common::names::{maps, pins, programs};
use tracing::{info, warn};

use super::sys::link_update;

/// The programs attached to the cgroup v2 root: (program name, link pin name). Programs are
/// named `limiter_*` for whoever lists a cgroup's programs; the pins keep the names of the
/// first releases, under `<bpffs>/limiter/links/` (the folder names us), so that a daemon
/// of this version adopts the links an older one pinned, with no gap.
pub const CGROUP_PROGRAMS: [(&str, &str); 5] = [
    (programs::SOCK_OPS, pins::SOCK_OPS),
    (programs::INGRESS, pins::CGROUP_INGRESS),
    (programs::EGRESS, pins::CGROUP_EGRESS),
    (programs::CONNECT4, pins::CONNECT4),
    (programs::CONNECT6, pins::CONNECT6),
];

/// Loads every enforcing program into the kernel (not attached yet).
pub fn load_all(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    let names = CGROUP_PROGRAMS.iter().map(|(program, _)| program);
    for name in names.chain([&programs::LOOKUP]) {
        let prog = ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("program {name} missing from the object"))?;
        let loaded = match prog {
            aya::programs::Program::SockOps(p) => p.load(),
            aya::programs::Program::CgroupSkb(p) => p.load(),
            aya::programs::Program::CgroupSockAddr(p) => p.load(),
            aya::programs::Program::SkLookup(p) => p.load(),
            _ => return Err(anyhow!("program {name} has an unexpected type")),
        };
        loaded.with_context(|| format!("load program {name} (the verifier log says why)"))?;
    }
    Ok(())
}

/// Loads the seeding iterator (optional: see capabilities::SEED_ITERATOR).
pub fn load_seed(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    let btf = aya::Btf::from_sys_fs().context("read kernel BTF (/sys/kernel/btf/vmlinux)")?;
    let seed: &mut Iter = program(ebpf, programs::SEED)?;
    seed.load("bpf_sk_storage_map", &btf)
        .context("load the seeding iterator (needs BPF iterators, Linux 5.9+)")?;
    Ok(())
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the object"))?
        .try_into()
        .with_context(|| format!("program {name} has an unexpected type"))
}

/// Swaps `prog` into the link pinned at `pin`. False if there is no usable pinned link.
fn update_pinned(pin: &Path, prog: impl AsFd) -> bool {
    if !pin.exists() {
        return false;
    }
    let Ok(link) = super::sys::obj_get(pin) else {
        let _ = std::fs::remove_file(pin);
        return false;
    };
    match link_update(&link, prog) {
        Ok(()) => true,
        Err(e) => {
            // A defunct link (its cgroup or netns is gone) cannot be updated: replace it.
            warn!(pin = %pin.display(), error = %e, "pinned link unusable; attaching anew");
            let _ = std::fs::remove_file(pin);
            false
        }
    }
}

/// Attaches the cgroup programs to `cgroup`, or adopts the links a previous daemon pinned.
pub fn attach_cgroup(ebpf: &mut Ebpf, cgroup: &Path, links_dir: &Path) -> anyhow::Result<()> {
    let cg = File::open(cgroup).with_context(|| format!("open cgroup {}", cgroup.display()))?;
    // bpf links always share the cgroup with other agents' programs (a CNI, a mesh); the
    // kernel refuses the explicit multi-attach flag on link creation.
    let mode = CgroupAttachMode::Single;
    for (name, pin_name) in CGROUP_PROGRAMS {
        let pin = links_dir.join(pin_name);
        let prog = ebpf.program_mut(name).expect("loaded above");
        let fd = prog.fd().context("program fd")?.try_clone()?;
        if update_pinned(&pin, &fd) {
            info!(
                program = name,
                "adopted pinned link, program replaced in place"
            );
            continue;
        }
        let link: FdLink = match prog {
            aya::programs::Program::SockOps(p) => {
                let id = p.attach(&cg, mode)?;
                p.take_link(id)?.try_into()?
            }
            aya::programs::Program::CgroupSkb(p) => {
                let direction = if name == programs::EGRESS {
                    CgroupSkbAttachType::Egress
                } else {
                    CgroupSkbAttachType::Ingress
                };
                let id = p.attach(&cg, direction, mode)?;
                p.take_link(id)?.try_into()?
            }
            aya::programs::Program::CgroupSockAddr(p) => {
                let id = p.attach(&cg, mode)?;
                p.take_link(id)?.try_into()?
            }
            _ => unreachable!("CGROUP_PROGRAMS lists cgroup programs only"),
        };
        link.pin(&pin)
            .with_context(|| format!("pin link {}", pin.display()))?;
        info!(program = name, cgroup = %cgroup.display(), "attached");
    }
    Ok(())
}

/// Network namespaces on this node, by inode, with a path that opens each.
pub fn namespaces() -> BTreeMap<u64, PathBuf> {
    let mut found = BTreeMap::new();
    let mut consider = |path: PathBuf| {
        if let Ok(meta) = std::fs::metadata(&path) {
            found.entry(meta.ino()).or_insert(path);
        }
    };
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let name = entry.file_name();
            if name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                consider(entry.path().join("ns/net"));
            }
        }
    }
    for dir in ["/run/netns", "/var/run/netns"] {
        if let Ok(dir) = std::fs::read_dir(dir) {
            for entry in dir.flatten() {
                consider(entry.path());
            }
        }
    }
    found
}

/// Attaches the server-side lookup program to every network namespace that lacks it, and
/// removes the pins of namespaces that are gone. Returns the number of namespaces covered.
pub fn sync_lookup(ebpf: &mut Ebpf, links_dir: &Path, fresh: bool) -> anyhow::Result<usize> {
    let live = namespaces();
    let prog: &mut SkLookup = program(ebpf, programs::LOOKUP)?;
    let fd = prog.fd()?.try_clone()?;
    let mut pinned = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(links_dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(ino) = name
            .strip_prefix(pins::SK_LOOKUP_PREFIX)
            .and_then(|s| s.parse().ok())
        {
            if live.contains_key(&ino) {
                pinned.insert(ino);
            } else {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    for (ino, path) in &live {
        let pin = links_dir.join(format!("{}{ino}", pins::SK_LOOKUP_PREFIX));
        if pinned.contains(ino) && !fresh {
            continue;
        }
        if pinned.contains(ino) && update_pinned(&pin, &fd) {
            continue;
        }
        let Ok(ns) = File::open(path) else { continue };
        match prog.attach(&ns) {
            Ok(id) => {
                let link: FdLink = prog.take_link(id)?.into();
                link.pin(&pin)
                    .with_context(|| format!("pin link {}", pin.display()))?;
            }
            // A namespace can vanish between the scan and the attach.
            Err(e) => warn!(netns = ino, error = %e, "cannot attach sk_lookup"),
        }
    }
    Ok(live.len())
}

/// Runs the seeding iterator over the socket records (the pinned CONNS map in `maps_dir`).
pub fn run_seed(ebpf: &mut Ebpf, maps_dir: &Path) -> anyhow::Result<()> {
    let map_fd = super::sys::obj_get(&maps_dir.join(maps::CONNS)).context("open the CONNS map")?;
    let prog: &mut Iter = program(ebpf, programs::SEED)?;
    let prog_fd = prog.fd()?.try_clone()?;
    super::sys::run_map_iterator(&prog_fd, &map_fd).context("run the seeding iterator")?;
    Ok(())
}
