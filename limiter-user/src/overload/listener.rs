//! Finds the process that serves a destination on this node, so that the adaptive overload check
//! can watch the CPU of the workload behind a rule that names no `--workload-cgroup`.
//!
//! The serving socket is a TCP listener, usually in a pod's network namespace. One scan walks
//! `/proc` once and groups processes by network namespace, so that each namespace is read once,
//! through any one of its processes.
//!
//! Only namespaces that own the address (a LOCAL route in `net/fib_trie`, an entry of
//! `net/if_inet6`) are considered, and their TCP tables are read only then. That is for cost:
//! every read of `net/tcp` or `net/tcp6` walks the whole established hash of the kernel, shared by
//! all namespaces (5 ms per file here, empty or not), while the address tables of a pod are a few
//! lines. Most nodes do not host a rule's destination and rescan every ~10 s, so a miss must be
//! cheap. It is also what makes wildcards right: the node's sshd on `0.0.0.0:22` must not claim
//! port 22 of every pod. The price: a listener bound to an address its namespace does not have
//! (IP_FREEBIND, IP_TRANSPARENT) is not found.
//!
//! Within the owners, a listener on the exact address wins over a wildcard one (`0.0.0.0`, or
//! `::`, which takes IPv4 too unless it is v6-only; `/proc` does not say, so we assume not).
//!
//! Processes come and go while we scan and a few are unreadable: an error about one process skips
//! that process. Only an unreadable proc root is an error.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use procfs::net::{TcpNetEntry, TcpState};
use procfs::process::Process;
use procfs::{ProcError, ProcessCGroups};

/// Where the workload serving an address lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    /// The lowest pid holding the listening socket (a pre-forking server's parent).
    pub pid: i32,
    /// The inode of the listener's network namespace, as in `net:[INODE]`.
    pub netns_inode: u64,
    /// The cgroup of the cpu controller as `/proc/PID/cgroup` prints it: the cgroup v1 line whose
    /// controllers include `cpu` (else `cpuacct`), or the v2 `0::` line when no v1 hierarchy
    /// has them.
    pub cgroup: String,
}

/// The listener serving `addr` on this node, if a process listens for it.
pub fn find_listener(addr: SocketAddr) -> io::Result<Option<Listener>> {
    find_listener_in(Path::new("/proc"), addr)
}

/// [`find_listener`] over the proc tree at `proc_root`.
pub fn find_listener_in(proc_root: &Path, addr: SocketAddr) -> io::Result<Option<Listener>> {
    // ::ffff:a.b.c.d is the IPv4 address, as the rules' destinations say.
    let want = SocketAddr::new(addr.ip().to_canonical(), addr.port());
    let namespaces = namespaces(proc_root)?;
    // Ties go to the namespace with the lowest pid (the node's own comes first), for a stable answer.
    let mut by_first_pid: Vec<(u64, &[i32])> = namespaces
        .iter()
        .map(|(&netns, pids)| (netns, pids.as_slice()))
        .collect();
    by_first_pid.sort_by_key(|(_, pids)| pids[0]);
    let mut candidates: Vec<Candidate<'_>> = by_first_pid
        .into_iter()
        .filter(|(_, pids)| owns(proc_root, pids, want.ip()))
        .filter_map(|(netns, pids)| listeners_in(proc_root, netns, pids, want))
        .collect();
    // Exact listeners first; the sort is stable, so ties keep the lowest-pid order.
    candidates.sort_by_key(|c| !c.exact);
    // A candidate whose processes all left since its tables were read yields nothing: try the next.
    let found = candidates.iter().find_map(|c| owner(proc_root, c));
    tracing::debug!(%want, namespaces = namespaces.len(), ?found, "listener scan");
    Ok(found)
}

/// Processes of each network namespace, by namespace inode, lowest pid first.
fn namespaces(proc_root: &Path) -> io::Result<BTreeMap<u64, Vec<i32>>> {
    let mut by_netns: BTreeMap<u64, Vec<i32>> = BTreeMap::new();
    for entry in fs::read_dir(proc_root)? {
        let Some(pid) = entry?
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        match fs::read_link(pid_path(proc_root, pid).join("ns/net")) {
            Ok(link) => match link.to_str().and_then(netns_inode) {
                Some(inode) => by_netns.entry(inode).or_default().push(pid),
                None => tracing::trace!(pid, ?link, "not a netns link"),
            },
            // Gone, a zombie, or not ours to read.
            Err(e) => tracing::trace!(pid, %e, "skipping process"),
        }
    }
    by_netns.values_mut().for_each(|pids| pids.sort_unstable());
    Ok(by_netns)
}

/// `net:[4026531840]` -> 4026531840.
fn netns_inode(link: &str) -> Option<u64> {
    link.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// Listening sockets of one namespace that serve the wanted address.
struct Candidate<'a> {
    netns: u64,
    pids: &'a [i32],
    /// Whether `inodes` are exact-address listeners; if not they are wildcards.
    exact: bool,
    inodes: HashSet<u64>,
}

fn listeners_in<'a>(
    proc_root: &Path,
    netns: u64,
    pids: &'a [i32],
    want: SocketAddr,
) -> Option<Candidate<'a>> {
    // Any process of the namespace shows its tables; the first one still readable will do.
    let (exact, wildcard) = pids
        .iter()
        .find_map(|&pid| listeners_of(proc_root, pid, want))?;
    let (exact, inodes) = match (exact.is_empty(), wildcard.is_empty()) {
        (false, _) => (true, exact),
        (true, false) => (false, wildcard),
        (true, true) => return None,
    };
    Some(Candidate {
        netns,
        pids,
        exact,
        inodes,
    })
}

/// Inodes of the listeners of `pid`'s namespace on `want` exactly and through a wildcard, or
/// `None` if `pid` cannot be read. IPv4 may be served from tcp and, through `::` and
/// `::ffff:a.b.c.d`, from tcp6; IPv6 only from tcp6.
fn listeners_of(
    proc_root: &Path,
    pid: i32,
    want: SocketAddr,
) -> Option<(HashSet<u64>, HashSet<u64>)> {
    let process = Process::new_with_root(pid_path(proc_root, pid)).ok()?;
    let mut exact = HashSet::new();
    let mut wildcard = HashSet::new();
    if want.is_ipv4() {
        classify(process.tcp().ok()?, want, &mut exact, &mut wildcard);
        // tcp6 could add only listeners of the same or a lower rank: save its 5 ms.
        if !exact.is_empty() {
            return Some((exact, wildcard));
        }
    }
    match process.tcp6() {
        Ok(entries) => classify(entries, want, &mut exact, &mut wildcard),
        // tcp6 is absent when IPv6 is disabled, and when the process just left: if its tcp is
        // still there, it is the former.
        Err(ProcError::NotFound(_))
            if want.is_ipv4() && pid_path(proc_root, pid).join("net/tcp").exists() => {}
        Err(_) => return None,
    }
    Some((exact, wildcard))
}

fn classify(
    entries: Vec<TcpNetEntry>,
    want: SocketAddr,
    exact: &mut HashSet<u64>,
    wildcard: &mut HashSet<u64>,
) {
    for e in entries.into_iter().filter(|e| e.state == TcpState::Listen) {
        match serves(e.local_address, want) {
            Some(true) => exact.insert(e.inode),
            Some(false) => wildcard.insert(e.inode),
            None => false,
        };
    }
}

/// Whether a socket bound to `local` serves `want`: `Some(true)` on the exact address,
/// `Some(false)` through a wildcard, `None` if not.
fn serves(local: SocketAddr, want: SocketAddr) -> Option<bool> {
    if local.port() != want.port() {
        return None;
    }
    if local.ip().to_canonical() == want.ip() {
        return Some(true);
    }
    let wildcard = match (local.ip(), want.ip()) {
        (IpAddr::V4(l), IpAddr::V4(_)) => l.is_unspecified(),
        (IpAddr::V6(l), _) => l.is_unspecified(),
        (IpAddr::V4(_), IpAddr::V6(_)) => false,
    };
    wildcard.then_some(false)
}

/// Whether `ip` is a local address of the namespace of `pids`. Unknown counts as no: watching
/// the wrong workload is worse than a miss, which the next scan retries.
fn owns(proc_root: &Path, pids: &[i32], ip: IpAddr) -> bool {
    let file = match ip {
        IpAddr::V4(_) => "net/fib_trie",
        IpAddr::V6(_) => "net/if_inet6",
    };
    let Some(text) = pids
        .iter()
        .find_map(|&pid| fs::read_to_string(pid_path(proc_root, pid).join(file)).ok())
    else {
        return false;
    };
    match ip {
        IpAddr::V4(ip) => fib_trie_has_local(&text, ip),
        IpAddr::V6(ip) => if_inet6_has(&text, ip),
    }
}

/// Whether a `LOCAL` route of `/proc/net/fib_trie` covers `ip`. Leaves look like
/// `|-- 10.0.0.5` followed by one `/32 host LOCAL` line per route; a LOCAL route may be a
/// prefix (`127.0.0.0` `/8 host LOCAL`), so this checks containment, not equality.
fn fib_trie_has_local(fib_trie: &str, ip: Ipv4Addr) -> bool {
    let mut leaf: Option<Ipv4Addr> = None;
    for line in fib_trie.lines().map(str::trim_start) {
        if let Some(addr) = line.strip_prefix("|-- ") {
            leaf = addr.trim().parse().ok();
        } else if let Some(route) = line.strip_prefix('/') {
            // `/LEN SCOPE TYPE [tos=N]`
            let fields: Vec<&str> = route.split_whitespace().collect();
            let len = fields.first().and_then(|l| l.parse::<u32>().ok());
            if let (Some(net), Some(len), Some(&"LOCAL")) = (leaf, len, fields.get(2))
                && len <= 32
            {
                let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
                if u32::from(ip) & mask == u32::from(net) & mask {
                    return true;
                }
            }
        } else {
            // `+-- 10.0.0.0/8 ...` inner nodes and `Main:` / `Local:` headers.
            leaf = None;
        }
    }
    false
}

/// Whether `/proc/net/if_inet6` lists `ip`; its first column is the address as 32 hex digits in
/// network order.
fn if_inet6_has(if_inet6: &str, ip: Ipv6Addr) -> bool {
    if_inet6
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|hex| u128::from_str_radix(hex, 16).ok())
        .any(|a| Ipv6Addr::from(a) == ip)
}

/// The lowest pid of the candidate's namespace holding one of its sockets, with its cgroup.
/// Only that namespace is searched: a socket held solely from another namespace is rare, and
/// searching every process's fds instead would make each miss cost a walk of all fds on the node.
fn owner(proc_root: &Path, c: &Candidate<'_>) -> Option<Listener> {
    c.pids.iter().find_map(|&pid| {
        if !holds_any(proc_root, pid, &c.inodes) {
            return None;
        }
        let process = Process::new_with_root(pid_path(proc_root, pid)).ok()?;
        let cgroup = cpu_cgroup(&process.cgroups().ok()?)?;
        Some(Listener {
            pid,
            netns_inode: c.netns,
            cgroup,
        })
    })
}

/// Whether `pid` has an fd on one of `inodes`. One readlink per fd; procfs's `fd()` would also
/// open and stat each.
fn holds_any(proc_root: &Path, pid: i32, inodes: &HashSet<u64>) -> bool {
    let Ok(fds) = fs::read_dir(pid_path(proc_root, pid).join("fd")) else {
        return false;
    };
    fds.filter_map(|fd| fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|link| socket_inode(link.to_str()?))
        .any(|inode| inodes.contains(&inode))
}

/// `socket:[12345]` -> 12345.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The cgroup whose CPU use is the workload's: the v1 hierarchy with `cpu`, else the one with
/// `cpuacct` (they may be mounted apart), else the v2 `0::` line. On hybrid hosts the v2 line is
/// present too but carries no cpu controller, so v1 goes first.
fn cpu_cgroup(groups: &ProcessCGroups) -> Option<String> {
    let v1 = |controller: &str| {
        groups
            .0
            .iter()
            .find(|g| g.hierarchy != 0 && g.controllers.iter().any(|c| c == controller))
    };
    v1("cpu")
        .or_else(|| v1("cpuacct"))
        .or_else(|| groups.0.iter().find(|g| g.hierarchy == 0))
        .map(|g| g.pathname.clone())
}

fn pid_path(proc_root: &Path, pid: i32) -> PathBuf {
    proc_root.join(pid.to_string())
}

#[cfg(test)]
#[path = "listener_tests.rs"]
mod tests;
