//! Node-wide signals from procfs: `/proc/stat` (the whole node's CPU, used when no workload cgroup
//! is named, and the online CPU count that a cgroup without a quota is measured against),
//! `/proc/loadavg` and the PSI files. Parsed here rather than with the `procfs` crate so each
//! reader takes an injectable path and returns this crate's errors.

use std::path::Path;

use super::read::{SignalError, parse_f64, parse_u64, read_required};

/// Ticks per second of the counters in `/proc/stat` (the kernel's `USER_HZ`, what
/// `sysconf(_SC_CLK_TCK)` returns). It is 100 on every architecture Kubernetes runs on. Only the
/// conversion to nanoseconds depends on it: node utilisation is busy ticks over total ticks, so
/// a different value would scale both and cancel out.
pub const USER_HZ: u64 = 100;

/// The aggregate `cpu` line of `/proc/stat` and the number of online CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// Ticks every CPU spent doing work: all but idle and iowait. Steal counts as busy, since
    /// the workload could not use that time either.
    pub busy_ticks: u64,
    /// Ticks of every CPU together (user, nice, system, idle, iowait, irq, softirq, steal; guest
    /// time is already inside user and nice, so it is not added again).
    pub total_ticks: u64,
    /// Online CPUs: one `cpuN` line each (hotplugged-out CPUs have none).
    pub cpus: u32,
}

/// Reads `/proc/stat` (production: [`super::PROC_STAT`]).
pub fn read_proc_stat(path: &Path) -> Result<ProcStat, SignalError> {
    let text = read_required(path)?;
    let format = |what: &str| SignalError::Format {
        path: path.to_owned(),
        what: what.to_owned(),
    };
    let mut lines = text.lines();
    let first = lines.next().ok_or_else(|| format("empty file"))?;
    let mut fields = first.split_whitespace();
    if fields.next() != Some("cpu") {
        return Err(format("the first line is not the aggregate `cpu` line"));
    }
    const NAMES: [&str; 8] = [
        "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
    ];
    let mut ticks = [0u64; 8];
    let mut seen = 0;
    for (slot, (name, value)) in ticks.iter_mut().zip(NAMES.iter().zip(fields)) {
        *slot = parse_u64(path, &format!("cpu {name}"), value)?;
        seen += 1;
    }
    // user, nice, system and idle exist on every kernel; the rest were added over 2.5-2.6.
    if seen < 4 {
        return Err(format("the `cpu` line has fewer than 4 counters"));
    }
    let total_ticks = ticks.iter().sum::<u64>();
    let idle = ticks[3] + ticks[4];
    let cpus = std::iter::once(first)
        .chain(lines)
        .filter(|l| {
            l.strip_prefix("cpu")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count();
    if cpus == 0 {
        return Err(format("no `cpuN` line: cannot count the online CPUs"));
    }
    Ok(ProcStat {
        busy_ticks: total_ticks - idle,
        total_ticks,
        cpus: u32::try_from(cpus).unwrap_or(u32::MAX),
    })
}

/// `/proc/loadavg`: the run-queue averages Sentinel's `highestSystemLoad` compares with a
/// threshold. On a shared node they include every container, which is why the CPU check reads
/// the workload's cgroup instead; load stays a node-wide guard.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoadAvg {
    pub one: f64,
    pub five: f64,
    pub fifteen: f64,
    /// Runnable tasks now (the `R` of `R/T`).
    pub runnable: u64,
    /// Tasks that exist now (the `T` of `R/T`).
    pub tasks: u64,
}

impl LoadAvg {
    /// The 1-minute load per online CPU: 1.0 means every CPU had, on average, one runnable task.
    pub fn one_per_cpu(&self, cpus: u32) -> f64 {
        self.one / f64::from(cpus.max(1))
    }
}

/// Reads `/proc/loadavg` (production: [`super::PROC_LOADAVG`]), e.g. `0.23 0.36 1.10 1/91 15047`.
pub fn read_loadavg(path: &Path) -> Result<LoadAvg, SignalError> {
    let text = read_required(path)?;
    let fields: Vec<&str> = text.split_whitespace().collect();
    if fields.len() < 4 {
        return Err(SignalError::Format {
            path: path.to_owned(),
            what: format!("expected `L1 L5 L15 R/T ...`, found {:?}", text.trim()),
        });
    }
    let (runnable, tasks) = fields[3]
        .split_once('/')
        .ok_or_else(|| SignalError::Format {
            path: path.to_owned(),
            what: format!("the 4th field {:?} is not RUNNABLE/TASKS", fields[3]),
        })?;
    Ok(LoadAvg {
        one: parse_f64(path, "load1", fields[0])?,
        five: parse_f64(path, "load5", fields[1])?,
        fifteen: parse_f64(path, "load15", fields[2])?,
        runnable: parse_u64(path, "runnable", runnable)?,
        tasks: parse_u64(path, "tasks", tasks)?,
    })
}

/// The `some avg10` of a PSI file (`/proc/pressure/cpu` or a cgroup's `cpu.pressure`), in
/// percent: the share of the last 10 s in which at least one task waited for a CPU.
///
/// Pressure is a bonus signal: PSI is off by default on some kernels (the file is then missing,
/// or reading it fails with EOPNOTSUPP), so any failure, a malformed line included, is `None`
/// and never stops the CPU check.
pub fn read_pressure(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let some = text.lines().find(|l| l.starts_with("some "))?;
    let avg10 = some
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("avg10="))?;
    avg10
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
}
