//! The overload signals, read from the kernel's files: CPU of the protected workload from its
//! cgroup (against its quota, because container CPU is not host CPU), the node's CPU from
//! `/proc/stat`, throttling, CPU pressure, and the load average.
//!
//! Every reader takes its paths as arguments, so tests run on fixture trees and production passes
//! the constants below. Errors follow one rule: a missing *optional* file (pressure, a v1
//! `cpu.stat`, a quota file) is `None`; a missing or malformed *required* file is a
//! [`SignalError`] naming the file and what was wrong with it.

mod cgroup;
mod layout;
mod node;
mod quota;
mod read;
mod sampler;

pub use cgroup::{CpuReading, CpuSource, Throttling};
pub use layout::CgroupLayout;
pub use node::{LoadAvg, ProcStat, USER_HZ, read_loadavg, read_pressure, read_proc_stat};
pub use read::{NumberError, SignalError};
pub use sampler::{CpuSample, Sampler, utilisation};

/// Where the cgroup filesystem is mounted on every layout (v2, hybrid and v1 all start here).
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The node's cumulative CPU ticks and its online CPUs (one `cpuN` line each).
pub const PROC_STAT: &str = "/proc/stat";
/// The node's load averages, as Sentinel's `highestSystemLoad` reads them.
pub const PROC_LOADAVG: &str = "/proc/loadavg";
/// The node's CPU pressure; absent or unreadable when PSI is off (the default on some kernels).
pub const PROC_PRESSURE_CPU: &str = "/proc/pressure/cpu";
#[cfg(test)]
mod cgroup_tests;
#[cfg(test)]
mod fixture;
#[cfg(test)]
mod node_tests;
