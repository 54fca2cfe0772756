//! `limiter doctor`: will limiter work on this node? Everything the daemon would find at start,
//! gathered without starting it: the kernel, the cgroup layout, bpffs, BTF, the probed
//! capabilities (dataplane::capabilities) and the other programs on limiter's hooks
//! (dataplane::neighbours). A problem means the daemon cannot run here; a warning that it runs
//! with something missing or surprising.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::dataplane::{
    capabilities::{self, Capabilities, Capability},
    neighbours::{self, HookProgram},
    sys,
};

const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, Serialize)]
pub struct CgroupReport {
    /// `v2`, `hybrid`, `v1` or `none` (dataplane::sys::cgroup_layout).
    pub layout: &'static str,
    /// The cgroup v2 directory the daemon would attach to, if there is one.
    pub root: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct BpffsReport {
    pub path: PathBuf,
    pub mounted: bool,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub kernel: String,
    /// The daemon can run here (perhaps degraded: see `warnings`).
    pub ready: bool,
    pub root: bool,
    pub cgroup: CgroupReport,
    pub bpffs: BpffsReport,
    pub btf: bool,
    /// Empty when the probes could not run (not root).
    pub capabilities: Vec<Capability>,
    /// Every program on limiter's hooks, limiter's own included (`ours`), in run order.
    pub neighbours: Vec<HookProgram>,
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
}

impl Report {
    pub fn gather(cgroup: Option<&Path>, bpffs: &Path) -> Self {
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let layout = sys::cgroup_layout();
        let cgroup_root = match sys::cgroup2_root(cgroup) {
            Ok(p) => Some(p),
            Err(e) => {
                problems.push(format!("{e:#}"));
                None
            }
        };
        let mounted = sys::is_bpffs(bpffs);
        if !mounted {
            warnings.push(format!(
                "no bpffs at {}: the daemon mounts one at start; in a pod, mount the host's \
                 /sys/fs/bpf (hostPath), or the pinned limits die with the pod",
                bpffs.display()
            ));
        }
        let btf = Path::new(VMLINUX_BTF).exists();
        let mut caps = Vec::new();
        let mut found = Vec::new();
        if root {
            match Capabilities::probe(&capabilities::disabled_by_env()) {
                Ok(probed) => {
                    if let Some(why) = probed.unsupported() {
                        problems.push(why);
                    }
                    for c in probed.degraded() {
                        warnings.push(format!(
                            "{} missing ({}): {}",
                            c.name,
                            c.detail.as_deref().unwrap_or("refused"),
                            c.consequence.unwrap_or("")
                        ));
                    }
                    caps = probed.list;
                }
                Err(e) => problems.push(format!("{e:#}")),
            }
            if let Some(cg) = &cgroup_root {
                let links = bpffs
                    .join(crate::paths::PIN_DIR_NAME)
                    .join(limiter_common::names::pins::LINKS_DIR);
                let scan = neighbours::scan(cg, &links, true);
                for p in scan.others() {
                    if let Some(note) = p.note {
                        warnings.push(format!("{} on {} (id {}): {note}", p.name, p.hook, p.id));
                    }
                }
                problems.extend(scan.errors.iter().cloned());
                found = scan.programs;
            }
        } else {
            problems.push(
                "not running as root: the probes load eBPF programs (CAP_BPF, CAP_NET_ADMIN, \
                 CAP_PERFMON) and so does the daemon; run `sudo limiter doctor`"
                    .into(),
            );
        }
        Self {
            kernel: capabilities::kernel_release(),
            ready: problems.is_empty(),
            root,
            cgroup: CgroupReport {
                layout,
                root: cgroup_root,
            },
            bpffs: BpffsReport {
                path: bpffs.to_path_buf(),
                mounted,
            },
            btf,
            capabilities: caps,
            neighbours: found,
            problems,
            warnings,
        }
    }

    /// The report for people.
    pub fn render(&self) -> String {
        let yes = |b: bool| if b { "yes" } else { "no" };
        let mut out = String::new();
        let root = match &self.cgroup.root {
            Some(p) => format!("cgroup v2 at {}", p.display()),
            None => "no cgroup v2 hierarchy".into(),
        };
        out += &format!("kernel    {}\n", self.kernel);
        out += &format!("cgroup    {} ({root})\n", self.cgroup.layout);
        out += &format!(
            "bpffs     {}: {}\n",
            self.bpffs.path.display(),
            if self.bpffs.mounted {
                "mounted"
            } else {
                "not mounted"
            }
        );
        out += &format!("BTF       {VMLINUX_BTF}: {}\n", yes(self.btf));
        if !self.capabilities.is_empty() {
            out += &format!(
                "\n{:<24} {:<9} {:<8} {:<6} WHAT IT GIVES / WITHOUT IT\n",
                "CAPABILITY", "AVAILABLE", "REQUIRED", "SINCE"
            );
            for c in &self.capabilities {
                let what = match c.consequence {
                    Some(without) => format!("without it: {without}"),
                    None => c.used_for.to_string(),
                };
                out += &format!(
                    "{:<24} {:<9} {:<8} {:<6} {what}\n",
                    c.name,
                    yes(c.available),
                    yes(c.required),
                    c.since
                );
            }
        }
        if self.root {
            out += "\nPROGRAMS ON LIMITER'S HOOKS (in run order)\n";
            if self.neighbours.is_empty() {
                out += "none (limiter is not attached, and no other agent is)\n";
            }
            for p in &self.neighbours {
                let owner = if p.ours { "limiter" } else { "other agent" };
                let hook = match p.netns {
                    Some(inode) => format!("{} (netns {inode})", p.hook),
                    None => p.hook.to_string(),
                };
                out += &format!(
                    "{hook:<20} #{:<3} id {:<7} {:<16} {owner}\n",
                    p.position, p.id, p.name
                );
            }
        }
        for w in &self.warnings {
            out += &format!("\nwarning: {w}");
        }
        for p in &self.problems {
            out += &format!("\nproblem: {p}");
        }
        let degraded: Vec<&str> = self
            .capabilities
            .iter()
            .filter(|c| !c.available && !c.required)
            .map(|c| c.name)
            .collect();
        out += &match (self.ready, degraded.is_empty()) {
            (false, _) => "\n\nverdict: the limiter daemon cannot run on this node".to_string(),
            (true, true) => "\n\nverdict: ready, every capability available".to_string(),
            (true, false) => format!("\n\nverdict: ready, degraded ({})", degraded.join(", ")),
        };
        out
    }
}
