//! Overload protection for limiter: the adaptive part, which sets per-destination connection
//! limits from how loaded the protected workload is, as Sentinel's system rule and go-kratos'
//! BBR do for requests inside a process, but at L4, from the node.
//!
//! The pieces, in the order the daemon runs them every sampling tick (250 ms by default):
//!
//! 1. [`signals`]: read the workload's CPU from its cgroup ([`signals::CpuSource`]: v2
//!    `cpu.stat` against `cpu.max`, v1 `cpuacct.usage` against `cpu.cfs_quota_us`, on pure v2,
//!    hybrid and v1 layouts; the node's `/proc/stat` when no cgroup is named), plus throttling,
//!    pressure and the load average. A [`signals::Sampler`] turns two cumulative readings into
//!    the utilisation of the CPUs the workload may use: against its quota, not against the
//!    host, because a container at its quota on a big node is saturated while the node is idle.
//! 2. [`filter`]: smooth that utilisation with an exponential average whose time constant is
//!    in seconds (0.5 s), so a step to overload crosses the 80% threshold in 0.75 s at 250 ms
//!    ticks, where kratos' 0.95-decay average takes 14 s.
//! 3. [`bbr`]: per protected destination, keep a 10 s window of completed connections and their
//!    lifetimes (from the kernel's counters), derive `maxInflight` by Little's law, and decide:
//!    while the filtered CPU is above the threshold (and for a 1 s cool-down after), the
//!    destination is limited to `maxInflight` established connections
//!    ([`bbr::Verdict::limit`]). A service with no data is never limited; existing connections
//!    are never touched, since a limit only refuses new ones.
//! 4. [`priority`]: when the whole node is overloaded, share the node's capacity (for instance
//!    the sum of the destinations' `maxInflight`) among destinations by criticality, sheddable
//!    first to lose and critical-plus last, each class keeping a minimum share and each
//!    destination a max-min fair part of its class.
//! 5. The result, a dynamic limit per destination, is what the daemon writes into the kernel's
//!    limit map, where the eBPF programs refuse connections over it. That step lives in the
//!    daemon (`limiter-user`), not here: this crate is pure computation plus file reading, with
//!    time passed in as nanoseconds so every decision is testable without a clock.

pub mod bbr;
pub mod config;
pub mod filter;
pub mod priority;
pub mod signals;

pub use bbr::{Bbr, BbrConfig, Verdict};
pub use config::{ConfigError, OverloadConfig, SamplingConfig};
pub use filter::{Ewma, FilterConfig};
pub use priority::{Criticality, Demand, PriorityConfig, allocate, max_min_fair};
