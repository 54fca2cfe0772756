//! The CPU of the protected workload: cumulative usage and the limit it is measured against.
//!
//! A container throttled at its 2-CPU quota on a 64-CPU node is saturated, while the node looks
//! 3% busy; that is the recurring bug of host-CPU-based protection (Sentinel, kratos). So the
//! limit is the cgroup's quota, the smallest along its ancestors (Kubernetes sets one on the
//! container and one on the pod), and only without any quota the node's online CPUs.

use std::path::{Component, Path, PathBuf};

use super::layout::CgroupLayout;
use super::layout::{V1_QUOTA_DIRS, V1_USAGE_DIRS};
use super::node::{USER_HZ, read_pressure, read_proc_stat};
use super::quota::{Limit, read_limit, v1_limit};
use super::read::{SignalError, keyed_u64, parse_u64, read_optional, read_required};

/// Cumulative throttling counters of a cgroup with the cpu controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Throttling {
    /// Enforcement periods (of `cfs_period_us`) in which the group ran.
    pub nr_periods: u64,
    /// Periods in which it used up its quota and had to wait.
    pub nr_throttled: u64,
    /// Time spent throttled, ns (v2 `throttled_usec` x 1000, v1 `throttled_time`).
    pub throttled_ns: u64,
}

/// One reading of a [`CpuSource`]: cumulative counters, compared by a [`super::Sampler`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpuReading {
    /// CPU time used since the counter started, ns.
    pub usage_ns: u64,
    /// CPU time that existed since the counter started, ns, for a source that counts it
    /// (`/proc/stat` counts idle too); `None` for a cgroup, whose capacity is elapsed x limit.
    pub capacity_ns: Option<u64>,
    /// The quota in CPUs (quota / period), the smallest along the ancestors; `None` without one.
    pub quota_cpus: Option<f64>,
    /// Online CPUs of the node.
    pub node_cpus: u32,
    pub throttling: Option<Throttling>,
    /// PSI `some avg10` in percent, when the kernel and layout provide it.
    pub pressure_some_avg10: Option<f64>,
}

impl CpuReading {
    /// The CPUs the workload may use: its quota, but never more than the node has.
    pub fn limit_cpus(&self) -> f64 {
        let node = f64::from(self.node_cpus.max(1));
        self.quota_cpus.map_or(node, |q| q.min(node))
    }
}

/// Where one source's numbers come from, resolved once so each sample is a few file reads.
#[derive(Clone, Debug)]
pub struct CpuSource {
    usage: Usage,
    /// The group's quota files and those of its ancestors, nearest first.
    limits: Vec<Limit>,
    /// A `cpu.stat` with throttling counters, and whether its times are in µs (v2) or ns (v1).
    throttling: Option<(PathBuf, bool)>,
    pressure: Option<PathBuf>,
    node_cpus: u32,
}

#[derive(Clone, Debug)]
enum Usage {
    /// v2 `cpu.stat`, `usage_usec`.
    V2(PathBuf),
    /// v1 `cpuacct.usage`, ns.
    V1(PathBuf),
    /// `/proc/stat`, busy and total ticks.
    Node(PathBuf),
}

impl CpuSource {
    /// The whole node, from `/proc/stat` and `/proc/pressure/cpu`, for when no workload cgroup is
    /// named.
    pub fn node(proc_stat: &Path, proc_pressure_cpu: &Path) -> Result<CpuSource, SignalError> {
        let cpus = read_proc_stat(proc_stat)?.cpus;
        Ok(CpuSource {
            usage: Usage::Node(proc_stat.to_owned()),
            limits: Vec::new(),
            throttling: None,
            pressure: Some(proc_pressure_cpu.to_owned()),
            node_cpus: cpus,
        })
    }

    /// A workload's cgroup, `cgroup` relative to the hierarchy (`kubepods/burstable/pod1/ctr`;
    /// a leading `/`, as `/proc/PID/cgroup` writes it, is accepted), under the mount `root`
    /// (production: [`super::CGROUP_ROOT`]), on a node with `node_cpus` online CPUs.
    pub fn cgroup(root: &Path, cgroup: &Path, node_cpus: u32) -> Result<CpuSource, SignalError> {
        let rel = relative(cgroup)?;
        let layout = CgroupLayout::detect(root)?;
        let unified = layout.unified_root(root).map(|u| u.join(&rel));
        let pressure = unified.as_ref().map(|u| u.join("cpu.pressure"));
        let ancestors =
            |base: &Path| -> Vec<PathBuf> { rel.ancestors().map(|a| base.join(a)).collect() };
        let mut tried = Vec::new();
        let (usage, limits, throttling) = match layout {
            CgroupLayout::V2 => {
                let dir = root.join(&rel);
                tried.push(dir.clone());
                if !dir.is_dir() {
                    return Err(SignalError::NoCgroup {
                        cgroup: rel,
                        layout: layout.name(),
                        tried,
                    });
                }
                let limits = ancestors(root)
                    .into_iter()
                    .map(|d| Limit::V2(d.join("cpu.max")));
                let stat = dir.join("cpu.stat");
                (
                    Usage::V2(stat.clone()),
                    limits.collect(),
                    Some((stat, true)),
                )
            }
            CgroupLayout::V1 | CgroupLayout::Hybrid => {
                let usage_ctrl = controller(root, &V1_USAGE_DIRS, &rel, &mut tried);
                let quota_ctrl = controller(root, &V1_QUOTA_DIRS, &rel, &mut tried);
                let usage = match (&usage_ctrl, &unified) {
                    (Some(c), _) => Usage::V1(c.join(&rel).join("cpuacct.usage")),
                    // Hybrid without a v1 cpuacct group: the unified cpu.stat still counts usage.
                    (None, Some(u)) if u.is_dir() => Usage::V2(u.join("cpu.stat")),
                    (None, _) => {
                        tried.extend(unified);
                        return Err(SignalError::NoCgroup {
                            cgroup: rel,
                            layout: layout.name(),
                            tried,
                        });
                    }
                };
                let limits = quota_ctrl.as_deref().map(ancestors).unwrap_or_default();
                let limits = limits.into_iter().map(v1_limit).collect();
                let stat = quota_ctrl.map(|c| (c.join(&rel).join("cpu.stat"), false));
                (usage, limits, stat)
            }
        };
        Ok(CpuSource {
            usage,
            limits,
            throttling,
            pressure,
            node_cpus,
        })
    }

    /// Reads the cumulative counters once.
    pub fn read(&self) -> Result<CpuReading, SignalError> {
        // The v2 cpu.stat has both usage and throttling: read it once.
        let mut v2_stat: Option<(&Path, String)> = None;
        let (usage_ns, capacity_ns, node_cpus) = match &self.usage {
            Usage::V2(path) => {
                let text = read_required(path)?;
                let usec =
                    keyed_u64(path, &text, "usage_usec")?.ok_or_else(|| SignalError::Format {
                        path: path.clone(),
                        what: "no usage_usec line".to_owned(),
                    })?;
                v2_stat = Some((path.as_path(), text));
                (usec * 1000, None, self.node_cpus)
            }
            Usage::V1(path) => {
                let text = read_required(path)?;
                (
                    parse_u64(path, "cpuacct.usage", text.trim())?,
                    None,
                    self.node_cpus,
                )
            }
            Usage::Node(path) => {
                let s = read_proc_stat(path)?;
                let ns = 1_000_000_000 / USER_HZ;
                (s.busy_ticks * ns, Some(s.total_ticks * ns), s.cpus)
            }
        };
        let mut quota_cpus: Option<f64> = None;
        for limit in &self.limits {
            if let Some(q) = read_limit(limit)? {
                quota_cpus = Some(quota_cpus.map_or(q, |m| m.min(q)));
            }
        }
        let throttling = match (&self.throttling, v2_stat) {
            (Some((path, usec)), Some((read, text))) if read == path => {
                throttling_from(path, &text, *usec)?
            }
            (Some((path, usec)), _) => match read_optional(path)? {
                Some(text) => throttling_from(path, &text, *usec)?,
                None => None,
            },
            (None, _) => None,
        };
        Ok(CpuReading {
            usage_ns,
            capacity_ns,
            quota_cpus,
            node_cpus,
            throttling,
            pressure_some_avg10: self.pressure.as_deref().and_then(read_pressure),
        })
    }
}

/// The cgroup path as a relative path with no `..`, so it cannot leave the mount.
fn relative(cgroup: &Path) -> Result<PathBuf, SignalError> {
    let mut rel = PathBuf::new();
    for c in cgroup.components() {
        match c {
            Component::Normal(part) => rel.push(part),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(SignalError::CgroupPath {
                    path: cgroup.to_owned(),
                });
            }
        }
    }
    Ok(rel)
}

/// The mount of the first of `controllers` that holds the group.
fn controller(
    root: &Path,
    controllers: &[&str],
    rel: &Path,
    tried: &mut Vec<PathBuf>,
) -> Option<PathBuf> {
    controllers.iter().map(|c| root.join(c)).find(|c| {
        let dir = c.join(rel);
        let found = dir.is_dir();
        tried.push(dir);
        found
    })
}

/// Throttling counters, when the group has the cpu controller (a hybrid unified group or a v2
/// group without it has only the usage lines).
fn throttling_from(path: &Path, text: &str, usec: bool) -> Result<Option<Throttling>, SignalError> {
    let time_key = if usec {
        "throttled_usec"
    } else {
        "throttled_time"
    };
    let fields = (
        keyed_u64(path, text, "nr_periods")?,
        keyed_u64(path, text, "nr_throttled")?,
        keyed_u64(path, text, time_key)?,
    );
    Ok(match fields {
        (Some(nr_periods), Some(nr_throttled), Some(t)) => Some(Throttling {
            nr_periods,
            nr_throttled,
            throttled_ns: if usec { t * 1000 } else { t },
        }),
        _ => None,
    })
}
