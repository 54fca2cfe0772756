//! What the running kernel can do for limiter, probed once at start and kept for the daemon's
//! life: each capability by loading a minimal program or map (probe.rs, aya's probes), never
//! by reading the kernel's version.
//!
//! A required capability missing stops the daemon before anything is attached, with one error
//! naming the kernel, what is missing and the minimum. An optional one missing turns off
//! exactly what depends on it, with one warning at start naming it and the consequence, and
//! `limiter status -o json` and `limiter doctor` carry the set.

use std::collections::BTreeSet;

use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{BpfHelper, is_helper_supported, is_map_supported, is_program_supported},
};
use serde::Serialize;

use super::probe;

/// Names of capabilities to treat as missing although the kernel has them (comma-separated),
/// for tests of the degraded paths and to work around a kernel bug in the field. Only
/// optional capabilities can be turned off this way.
pub const DISABLE_ENV: &str = "LIMITER_DISABLE_CAPABILITIES";

/// The oldest kernel whose BPF has every required capability (bpf_get_netns_cookie in
/// sock_ops is the newest of them). Said in the error of a kernel that lacks one; the probes,
/// not this number, decide.
pub const MINIMUM_KERNEL: &str = "5.15";

/// The optional capabilities the daemon adapts to.
pub const SEED_ITERATOR: &str = "seed_iterator";
pub const SET_RETVAL: &str = "set_retval";

/// One capability and what it means on this kernel.
#[derive(Clone, Debug, Serialize)]
pub struct Capability {
    pub name: &'static str,
    pub available: bool,
    /// Without it the daemon does not start.
    pub required: bool,
    /// The upstream release that brought it, for orientation only.
    pub since: &'static str,
    /// What limiter uses it for.
    pub used_for: &'static str,
    /// What is different while it is missing (None while available).
    pub consequence: Option<&'static str>,
    /// Why the probe said no: the kernel's error, or the switch that turned it off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The probed set.
#[derive(Clone, Debug, Serialize)]
pub struct Capabilities {
    pub kernel: String,
    pub list: Vec<Capability>,
}

type Probe = fn() -> Result<(), String>;

/// Every capability: name, required, since, used for, consequence when missing, probe.
const TABLE: &[(&str, bool, &str, &str, &str, Probe)] = &[
    (
        "bpf_atomics",
        true,
        "5.12",
        "exact slot counters (fetch-add, compare-and-swap)",
        "limiter cannot count exactly: the daemon does not start",
        || probe::atomics().map_err(|e| e.to_string()),
    ),
    (
        "sk_storage",
        true,
        "5.2",
        "one record per socket, so each close releases its slot once",
        "no per-socket accounting: the daemon does not start",
        || map(MapType::SkStorage),
    ),
    (
        "sock_ops",
        true,
        "4.13",
        "accounting of established connections and their closes",
        "no accounting: the daemon does not start",
        || program(ProgramType::SockOps),
    ),
    (
        "netns_cookie_sock_ops",
        true,
        "5.15",
        "client-side counts per pod (the caller's network namespace) in sock_ops",
        "client-side limits cannot count per pod: the daemon does not start",
        || helper(ProgramType::SockOps, BpfHelper::BPF_FUNC_get_netns_cookie),
    ),
    (
        "cgroup_skb",
        true,
        "4.10",
        "server-side drop mode, client-side drop mode, the exactness backstop",
        "no drop mode and no backstop: the daemon does not start",
        || program(ProgramType::CgroupSkb),
    ),
    (
        "connect_hooks",
        true,
        "4.17",
        "client-side refusal inside connect() (cgroup connect4/connect6)",
        "no client-side refusal: the daemon does not start",
        || program(ProgramType::CgroupSockAddr),
    ),
    (
        "netns_cookie_connect",
        true,
        "5.7",
        "client-side counts per pod in connect()",
        "client-side limits cannot count per pod: the daemon does not start",
        || {
            helper(
                ProgramType::CgroupSockAddr,
                BpfHelper::BPF_FUNC_get_netns_cookie,
            )
        },
    ),
    (
        "sk_lookup",
        true,
        "5.9",
        "server-side reject mode: a refused SYN finds no listener and gets a RST",
        "no server-side reject: the daemon does not start",
        || program(ProgramType::SkLookup),
    ),
    (
        "cgroup_links",
        true,
        "5.7",
        "bpf links pinned under <bpffs>/limiter, so limits outlive the daemon",
        "limits would not survive a restart: the daemon does not start",
        || probe::cgroup_links().map_err(|e| e.to_string()),
    ),
    (
        "link_update",
        true,
        "5.7",
        "a restart or upgrade swaps programs into the pinned links with no gap",
        "a restart would leave a gap or double enforcement: the daemon does not start",
        || probe::link_update().map_err(|e| e.to_string()),
    ),
    (
        "ringbuf",
        true,
        "5.8",
        "refusal events (`limiter events`)",
        "no refusal events: the daemon does not start",
        || map(MapType::RingBuf),
    ),
    (
        SET_RETVAL,
        false,
        "5.18",
        "ECONNREFUSED from a connect() refused on the client side",
        "a connect() refused on the client side fails with EPERM instead of ECONNREFUSED \
         (still at once, no packet sent)",
        || helper(ProgramType::CgroupSockAddr, BpfHelper::BPF_FUNC_set_retval),
    ),
    (
        SEED_ITERATOR,
        false,
        "5.9",
        "a new rule counts the connections already open to its destination at once",
        "connections open when a rule is created are counted on their next packet; idle ones \
         stay uncounted until they carry one (status says `seeding: next_packet` per rule)",
        || {
            let vmlinux = aya::Btf::from_sys_fs()
                .map_err(|e| format!("no kernel BTF (/sys/kernel/btf/vmlinux): {e}"))?;
            probe::sk_storage_iterator(&vmlinux).map_err(|e| e.to_string())
        },
    ),
];

fn program(ty: ProgramType) -> Result<(), String> {
    match is_program_supported(ty) {
        Ok(true) => Ok(()),
        Ok(false) => Err("the kernel does not know this program type".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn map(ty: MapType) -> Result<(), String> {
    match is_map_supported(ty) {
        Ok(true) => Ok(()),
        Ok(false) => Err("the kernel does not know this map type".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn helper(ty: ProgramType, helper: BpfHelper) -> Result<(), String> {
    match is_helper_supported(ty, helper) {
        Ok(true) => Ok(()),
        Ok(false) => Err("the helper is not available to this program type".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// The names in [`DISABLE_ENV`].
pub fn disabled_by_env() -> BTreeSet<String> {
    std::env::var(DISABLE_ENV)
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

impl Capabilities {
    /// Probes every capability; `disabled` names optional ones to treat as missing.
    pub fn probe(disabled: &BTreeSet<String>) -> anyhow::Result<Self> {
        let known: BTreeSet<&str> = TABLE.iter().map(|row| row.0).collect();
        for name in disabled {
            let optional = TABLE.iter().any(|row| row.0 == name && !row.1);
            anyhow::ensure!(
                optional,
                "{DISABLE_ENV}: {name:?} is not an optional capability (optional: {}; all: {})",
                optional_names().join(", "),
                known.into_iter().collect::<Vec<_>>().join(", ")
            );
        }
        let list = TABLE
            .iter()
            .map(|&(name, required, since, used_for, consequence, probe)| {
                let result = if disabled.contains(name) {
                    Err(format!("turned off by {DISABLE_ENV}"))
                } else {
                    probe()
                };
                Capability {
                    name,
                    available: result.is_ok(),
                    required,
                    since,
                    used_for,
                    consequence: result.is_err().then_some(consequence),
                    detail: result.err(),
                }
            })
            .collect();
        Ok(Self {
            kernel: kernel_release(),
            list,
        })
    }

    pub fn has(&self, name: &str) -> bool {
        self.list.iter().any(|c| c.name == name && c.available)
    }

    /// Marks an optional capability missing after the fact (its real program was refused
    /// although the probe passed).
    pub fn lose(&mut self, name: &str, why: String) {
        if let Some(c) = self.list.iter_mut().find(|c| c.name == name) {
            c.available = false;
            c.detail = Some(why);
            c.consequence = TABLE.iter().find(|row| row.0 == name).map(|row| row.4);
        }
    }

    pub fn missing_required(&self) -> Vec<&Capability> {
        self.list
            .iter()
            .filter(|c| c.required && !c.available)
            .collect()
    }

    pub fn degraded(&self) -> Vec<&Capability> {
        self.list
            .iter()
            .filter(|c| !c.required && !c.available)
            .collect()
    }

    /// The error of a kernel that cannot run the daemon, or None.
    pub fn unsupported(&self) -> Option<String> {
        let missing = self.missing_required();
        if missing.is_empty() {
            return None;
        }
        let names: Vec<String> = missing
            .iter()
            .map(|c| {
                format!(
                    "{} (since {}; {}: {})",
                    c.name,
                    c.since,
                    c.used_for,
                    c.detail.as_deref().unwrap_or("refused")
                )
            })
            .collect();
        Some(format!(
            "kernel {} cannot run limiter: it lacks {}. The minimum is Linux {MINIMUM_KERNEL} \
             (or a kernel with these BPF features backported); run `limiter doctor` for the \
             full report",
            self.kernel,
            names.join("; ")
        ))
    }
}

fn optional_names() -> Vec<&'static str> {
    TABLE.iter().filter(|row| !row.1).map(|row| row.0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(available: &[(&'static str, bool)]) -> Capabilities {
        Capabilities {
            kernel: "6.1.0-test".into(),
            list: TABLE
                .iter()
                .map(|row| {
                    let ok = available
                        .iter()
                        .find(|(n, _)| *n == row.0)
                        .is_none_or(|(_, ok)| *ok);
                    Capability {
                        name: row.0,
                        available: ok,
                        required: row.1,
                        since: row.2,
                        used_for: row.3,
                        consequence: (!ok).then_some(row.4),
                        detail: (!ok).then(|| "refused".to_string()),
                    }
                })
                .collect(),
        }
    }

    #[test]
    fn a_missing_required_capability_names_kernel_capability_and_minimum() {
        let caps = set(&[("bpf_atomics", false)]);
        let err = caps.unsupported().expect("unsupported");
        assert!(err.contains("6.1.0-test"), "{err}");
        assert!(err.contains("bpf_atomics (since 5.12"), "{err}");
        assert!(err.contains("minimum is Linux 5.15"), "{err}");
        assert!(caps.degraded().is_empty());
    }

    #[test]
    fn a_missing_optional_capability_degrades_only() {
        let caps = set(&[(SEED_ITERATOR, false)]);
        assert_eq!(caps.unsupported(), None);
        let degraded: Vec<_> = caps.degraded().iter().map(|c| c.name).collect();
        assert_eq!(degraded, [SEED_ITERATOR]);
        assert!(!caps.has(SEED_ITERATOR) && caps.has(SET_RETVAL));
    }

    #[test]
    fn only_optional_capabilities_can_be_turned_off() {
        let err = Capabilities::probe(&BTreeSet::from(["bpf_atomics".to_string()]))
            .expect_err("a required capability cannot be turned off");
        assert!(
            err.to_string().contains("not an optional capability"),
            "{err}"
        );
        let err = Capabilities::probe(&BTreeSet::from(["no_such".to_string()]))
            .expect_err("an unknown name is refused");
        assert!(
            err.to_string().contains("set_retval, seed_iterator"),
            "{err}"
        );
    }
}
