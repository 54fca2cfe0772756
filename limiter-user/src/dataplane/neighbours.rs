//! Other agents' programs on the hooks limiter uses: listed at start and by `limiter doctor`,
//! so that an operator sees who else decides on the same connections and in which order.
//!
//! The cgroup hooks are queried with BPF_F_QUERY_EFFECTIVE on the governed cgroup: the
//! programs that really run for its sockets (those of parent cgroups included), in the order
//! they run. Ours are told apart by the program ids of the links pinned under
//! `<bpffs>/limiter/links`, not by name.

use std::{
    collections::BTreeSet,
    fs::File,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use limiter_common::sys::{link_info, obj_get, prog_by_id, prog_name, prog_query};
use serde::Serialize;

/// The hooks limiter attaches to: name and `enum bpf_attach_type`.
const CGROUP_HOOKS: [(&str, u32); 5] = [
    ("cgroup_skb/ingress", 0),
    ("cgroup_skb/egress", 1),
    ("sock_ops", 3),
    ("cgroup/connect4", 10),
    ("cgroup/connect6", 11),
];
const SK_LOOKUP: (&str, u32) = ("sk_lookup", 36);
/// The hooks where a socket load balancer translates addresses.
const CONNECT_HOOKS: [&str; 2] = ["cgroup/connect4", "cgroup/connect6"];

/// The cgroup hooks by name, for checking that each of ours is effective.
pub const CGROUP_HOOK_NAMES: [&str; 5] = [
    CGROUP_HOOKS[0].0,
    CGROUP_HOOKS[1].0,
    CGROUP_HOOKS[2].0,
    CGROUP_HOOKS[3].0,
    CGROUP_HOOKS[4].0,
];

/// One program on a hook, in run order.
#[derive(Clone, Debug, Serialize)]
pub struct HookProgram {
    pub hook: &'static str,
    /// 0 runs first.
    pub position: usize,
    pub id: u32,
    pub name: String,
    pub ours: bool,
    /// For sk_lookup: the inode of the network namespace (as in /proc/PID/ns/net).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns: Option<u64>,
    /// What this program means for limiter's rules, where it is recognised.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'static str>,
}

/// What the hooks hold; `error` says why a hook could not be read.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Neighbours {
    pub cgroup: PathBuf,
    pub programs: Vec<HookProgram>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

impl Neighbours {
    /// Programs of other agents only.
    pub fn others(&self) -> impl Iterator<Item = &HookProgram> {
        self.programs.iter().filter(|p| !p.ours)
    }

    /// Whether another agent's program runs before ours on connect4 or connect6, and so may
    /// have translated the address our program sees.
    pub fn translation_possible_before_us(&self) -> bool {
        self.programs
            .iter()
            .any(|p| !p.ours && CONNECT_HOOKS.contains(&p.hook) && before_ours(&self.programs, p))
    }
}

fn before_ours(programs: &[HookProgram], p: &HookProgram) -> bool {
    programs
        .iter()
        .any(|o| o.ours && o.hook == p.hook && p.position < o.position)
}

const CILIUM_SOCK_LB: &str = "Cilium's socket load balancer: it rewrites a Service VIP to a \
backend inside connect(). Where it runs before limiter's connect4/6, limiter sees the backend, \
so a client-side address rule on the VIP is bypassed: use a svc/NAMESPACE/NAME rule, which \
counts the Service's endpoints as the Service; rules on backend addresses still apply";
const BEFORE_OUR_CONNECT: &str = "runs before limiter's connect hook: if it translates \
addresses (a socket load balancer), limiter sees the translated address, so a client-side \
address rule on a Service VIP is bypassed; svc/NAMESPACE/NAME rules hold: while such a program \
runs first, limiter counts a Service's endpoints as the Service (a direct connection to one of \
its pods then counts too)";
const CILIUM: &str = "a Cilium program: it decides before or after limiter as listed; limiter \
refuses only what its rules refuse and lets everything else through to it";

fn note_for(name: &str) -> Option<&'static str> {
    if name.starts_with("cil_sock") {
        Some(CILIUM_SOCK_LB)
    } else if name.starts_with("cil_") {
        Some(CILIUM)
    } else {
        None
    }
}

/// Program ids of limiter's own links pinned in `links_dir` (none if it does not exist).
fn our_program_ids(links_dir: &Path) -> BTreeSet<u32> {
    let Ok(dir) = std::fs::read_dir(links_dir) else {
        return BTreeSet::new();
    };
    dir.flatten()
        .filter_map(|e| obj_get(&e.path()).ok())
        .filter_map(|link| link_info(&link).ok())
        .map(|(_, _, prog)| prog)
        .collect()
}

fn describe(hook: &'static str, ids: Vec<u32>, ours: &BTreeSet<u32>) -> Vec<HookProgram> {
    ids.into_iter()
        .enumerate()
        .map(|(position, id)| {
            let name = prog_by_id(id)
                .and_then(|fd| prog_name(&fd))
                .unwrap_or_else(|_| "?".into());
            HookProgram {
                hook,
                position,
                id,
                netns: None,
                note: note_for(&name),
                name,
                ours: ours.contains(&id),
            }
        })
        .collect()
}

/// Every program on limiter's cgroup hooks at `cgroup`, and on sk_lookup in this process's
/// network namespace or, with `every_netns`, in every network namespace of the node.
pub fn scan(cgroup: &Path, links_dir: &Path, every_netns: bool) -> Neighbours {
    let ours = our_program_ids(links_dir);
    let mut found = Neighbours {
        cgroup: cgroup.to_path_buf(),
        ..Default::default()
    };
    match File::open(cgroup) {
        Ok(cg) => {
            for (hook, attach_type) in CGROUP_HOOKS {
                match prog_query(cg.as_fd(), attach_type, true) {
                    Ok(ids) => found.programs.extend(describe(hook, ids, &ours)),
                    Err(e) => found
                        .errors
                        .push(format!("{hook} at {}: {e}", cgroup.display())),
                }
            }
        }
        Err(e) => found
            .errors
            .push(format!("open cgroup {}: {e}", cgroup.display())),
    }
    note_programs_before_our_connect(&mut found.programs);
    let (hook, attach_type) = SK_LOOKUP;
    let namespaces = if every_netns {
        super::programs::namespaces()
    } else {
        std::iter::once((0, PathBuf::from("/proc/self/ns/net"))).collect()
    };
    for (inode, path) in namespaces {
        // A namespace can vanish between the listing and the query: not an error.
        let Ok(ns) = File::open(&path) else { continue };
        match prog_query(ns.as_fd(), attach_type, false) {
            Ok(ids) => found
                .programs
                .extend(describe(hook, ids, &ours).into_iter().map(|p| HookProgram {
                    netns: (inode != 0).then_some(inode),
                    ..p
                })),
            Err(e) => found
                .errors
                .push(format!("{hook} in {}: {e}", path.display())),
        }
    }
    found
}

/// Another agent's program that runs before ours on connect4/6 may translate the address
/// limiter then sees: say what that means where nothing more specific is known of it.
fn note_programs_before_our_connect(programs: &mut [HookProgram]) {
    for hook in CONNECT_HOOKS {
        let Some(ours) = programs
            .iter()
            .find(|p| p.hook == hook && p.ours)
            .map(|p| p.position)
        else {
            continue;
        };
        for p in programs
            .iter_mut()
            .filter(|p| p.hook == hook && !p.ours && p.position < ours && p.note.is_none())
        {
            p.note = Some(BEFORE_OUR_CONNECT);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cilium_programs_are_recognised() {
        assert_eq!(note_for("cil_sock4_connect"), Some(CILIUM_SOCK_LB));
        assert_eq!(note_for("cil_from_container"), Some(CILIUM));
        assert_eq!(note_for("connect4"), None);
    }

    #[test]
    fn an_unknown_program_before_our_connect_hook_is_explained() {
        let program = |hook, position, name: &str, ours| HookProgram {
            hook,
            position,
            netns: None,
            id: position as u32 + 1,
            name: name.into(),
            ours,
            note: note_for(name),
        };
        let mut programs = vec![
            program("cgroup/connect4", 0, "socklb_connect4", false),
            program("cgroup/connect4", 1, "connect4", true),
            program("cgroup/connect4", 2, "after_us", false),
            program("cgroup/connect6", 0, "no_ours_here", false),
        ];
        let found = Neighbours {
            programs: programs.clone(),
            ..Default::default()
        };
        assert!(found.translation_possible_before_us());
        let after_only = Neighbours {
            programs: programs[1..].to_vec(),
            ..Default::default()
        };
        assert!(!after_only.translation_possible_before_us());
        note_programs_before_our_connect(&mut programs);
        assert_eq!(programs[0].note, Some(BEFORE_OUR_CONNECT));
        assert_eq!(programs[2].note, None, "after ours it sees what we saw");
        assert_eq!(programs[3].note, None, "no limiter program on that hook");
    }
}
