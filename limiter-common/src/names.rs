//! The names of limiter's kernel objects: its maps, programs, pins and load-time globals, in
//! one place for the kernel crate and userspace.
//!
//! Every name here is part of what a running node holds: maps and links are pinned under
//! `<bpffs>/limiter/` by these names, and a daemon of a later version adopts the pins of an
//! earlier one by them. Never rename one; add a new name instead.
//!
//! The kernel crate cannot use these constants where the names are made (aya's `#[map(name =
//! "...")]` takes a literal, and a program or global is named by its Rust identifier), so
//! limiter-user's tests parse the built object and check that it holds exactly these names
//! (`dataplane/names_tests.rs`).

/// The maps of limiter-ebpf/src/maps.rs, by name. A map pinned by the daemon is pinned under
/// `<bpffs>/limiter/maps/` with its name: these are also the map pins.
pub mod maps {
    pub const RULES: &str = "RULES";
    pub const RULE_STATE: &str = "RULE_STATE";
    pub const RULE_STATS: &str = "RULE_STATS";
    pub const SHED: &str = "SHED";
    pub const ALIASES: &str = "ALIASES";
    pub const TRANSLATED_FIRST: &str = "TRANSLATED_FIRST";
    pub const PENDING: &str = "PENDING";
    pub const SOURCES: &str = "SOURCES";
    pub const EVENTS: &str = "EVENTS";
    pub const EVENT_STATS: &str = "EVENT_STATS";
    pub const LAYOUT: &str = "LAYOUT";
    pub const ADOPT_GEN: &str = "ADOPT_GEN";
    pub const SEED: &str = "SEED";
    pub const CONNS: &str = "CONNS";
    pub const BREAKER_RULES: &str = "BREAKER_RULES";
    pub const BREAKERS: &str = "BREAKERS";
    pub const EJECTED: &str = "EJECTED";
    pub const BREAKERS_ON: &str = "BREAKERS_ON";
    pub const SELF_REFUSED: &str = "SELF_REFUSED";
    pub const RULE_KINDS: &str = "RULE_KINDS";
    pub const OPAQUE: &str = "OPAQUE";

    /// Every map of limiter's own (aya-log adds its own maps besides).
    pub const ALL: [&str; 21] = [
        RULES,
        RULE_STATE,
        RULE_STATS,
        SHED,
        ALIASES,
        TRANSLATED_FIRST,
        PENDING,
        SOURCES,
        EVENTS,
        EVENT_STATS,
        LAYOUT,
        ADOPT_GEN,
        SEED,
        CONNS,
        BREAKER_RULES,
        BREAKERS,
        EJECTED,
        BREAKERS_ON,
        SELF_REFUSED,
        RULE_KINDS,
        OPAQUE,
    ];
}

/// The programs of limiter-ebpf/src/main.rs, by name: `limiter_*`, at most 15 characters (the
/// kernel's limit), so that `bpftool prog` and other agents can tell them apart.
pub mod programs {
    /// sock_ops at the cgroup v2 root: accounting of established connections.
    pub const SOCK_OPS: &str = "limiter_sockops";
    /// cgroup_skb/ingress at the cgroup v2 root: server-side drop mode and the backstop.
    pub const INGRESS: &str = "limiter_ingress";
    /// cgroup_skb/egress at the cgroup v2 root: client-side drop mode.
    pub const EGRESS: &str = "limiter_egress";
    /// cgroup/connect4 at the cgroup v2 root: client-side refusal inside connect().
    pub const CONNECT4: &str = "limiter_conn4";
    /// cgroup/connect6 at the cgroup v2 root.
    pub const CONNECT6: &str = "limiter_conn6";
    /// sk_lookup, one attachment per network namespace: server-side reject mode.
    pub const LOOKUP: &str = "limiter_lookup";
    /// The seeding iterator over the socket records, run by the daemon (never attached).
    pub const SEED: &str = "limiter_seed";

    /// Every program of the object.
    pub const ALL: [&str; 7] = [SOCK_OPS, INGRESS, EGRESS, CONNECT4, CONNECT6, LOOKUP, SEED];
}

/// What the daemon pins under `<bpffs>/limiter/`.
pub mod pins {
    /// The folder of the map pins (each pinned by its name, see [`super::maps`]).
    pub const MAPS_DIR: &str = "maps";
    /// The folder of the link pins: every attachment is a bpf link pinned here.
    pub const LINKS_DIR: &str = "links";

    /// Link pins of the cgroup programs. They keep the names of the first releases (before
    /// the programs were named `limiter_*`), so that a daemon adopts the links an older one
    /// pinned, with no gap in enforcement.
    pub const SOCK_OPS: &str = "sock_ops";
    pub const CGROUP_INGRESS: &str = "cgroup_ingress";
    pub const CGROUP_EGRESS: &str = "cgroup_egress";
    pub const CONNECT4: &str = "connect4";
    pub const CONNECT6: &str = "connect6";
    /// Link pins of sk_lookup: this prefix and the inode of the network namespace, e.g.
    /// `sk_lookup-4026531840`.
    pub const SK_LOOKUP_PREFIX: &str = "sk_lookup-";
}

/// Globals in the object's `.rodata` that the daemon sets at load time, from what it probed in
/// the running kernel (limiter-ebpf/src/features.rs).
pub mod globals {
    /// u8, 1 where connect4/6 may call `bpf_set_retval` (Linux 5.18+).
    pub const HAS_SET_RETVAL: &str = "LIMITER_HAS_SET_RETVAL";
    /// u8, 1 where connections open when a rule appears are adopted by their next packet
    /// (no seeding iterator).
    pub const ADOPT_ON_PACKET: &str = "LIMITER_ADOPT_ON_PACKET";

    /// Every global the daemon sets.
    pub const ALL: [&str; 2] = [HAS_SET_RETVAL, ADOPT_ON_PACKET];
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A program's name in the kernel has at most 15 characters (BPF_OBJ_NAME_LEN - 1): a
    /// longer one would be cut, and lose what tells it apart.
    #[test]
    fn program_names_fit_the_kernel() {
        for name in programs::ALL {
            assert!(name.len() <= 15, "{name} is longer than 15 characters");
            assert!(name.starts_with("limiter_"), "{name} is not limiter_*");
        }
    }

    /// The kernel keeps the first 15 characters of a map's name (TRANSLATED_FIRST loses its
    /// last): those must still tell every map apart in `bpftool map`.
    #[test]
    fn map_names_differ_as_the_kernel_keeps_them() {
        let kept = |name: &'static str| &name[..name.len().min(15)];
        for (i, name) in maps::ALL.iter().enumerate() {
            assert!(
                !maps::ALL[..i].iter().any(|other| kept(other) == kept(name)),
                "{name} is not told apart from another map in the kernel"
            );
        }
    }
}
