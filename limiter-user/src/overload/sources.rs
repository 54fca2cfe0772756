//! Which CPU each adaptive destination is judged by: the cgroup named by the rule
//! (`--workload-cgroup`), else the cgroup of the process listening on the destination on this
//! node, else the node as a whole. Resolved once and re-resolved every [`RESOLVE_EVERY_NS`]
//! (a pod may start after its rule, or move), so a tick costs a few file reads.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use limiter_overload::signals::{self, CpuReading, CpuSource};
use tracing::{info, warn};

use crate::adaptive::Adaptive;
use crate::dest::Dest;

/// How often a destination's source is looked for again (a listener scan walks /proc).
const RESOLVE_EVERY_NS: u64 = 10_000_000_000;

struct Entry {
    /// The rule's explicit cgroup when the source was resolved (a change re-resolves at once).
    wanted: Option<String>,
    source: Option<CpuSource>,
    describe: String,
    resolved_ns: u64,
}

pub struct Sources {
    root: PathBuf,
    node_cpus: u32,
    entries: HashMap<Dest, Entry>,
}

impl Sources {
    pub fn new(root: PathBuf) -> Sources {
        let node_cpus = signals::read_proc_stat(signals::PROC_STAT.as_ref())
            .map(|s| s.cpus)
            .unwrap_or(1);
        Sources {
            root,
            node_cpus,
            entries: HashMap::new(),
        }
    }

    /// The workload's CPU counters now, resolving (or re-resolving) its source when due.
    pub fn read(&mut self, now_ns: u64, dest: &Dest, adaptive: &Adaptive) -> Option<CpuReading> {
        let due = match self.entries.get(dest) {
            None => true,
            Some(e) => {
                // A source not found is looked for again at the same pace, not every tick.
                e.wanted != adaptive.workload_cgroup
                    || now_ns.saturating_sub(e.resolved_ns) >= RESOLVE_EVERY_NS
            }
        };
        if due {
            let entry = self.resolve(now_ns, dest, adaptive);
            let changed = self
                .entries
                .get(dest)
                .is_none_or(|old| old.describe != entry.describe);
            if changed {
                info!(%dest, cpu = %entry.describe, "overload check: CPU source");
            }
            self.entries.insert(dest.clone(), entry);
        }
        let entry = self.entries.get_mut(dest)?;
        match entry.source.as_ref()?.read() {
            Ok(r) => Some(r),
            Err(e) => {
                // The cgroup went away (the pod was deleted): look again next tick.
                warn!(%dest, error = %e, "workload CPU unreadable");
                entry.source = None;
                None
            }
        }
    }

    fn resolve(&self, now_ns: u64, dest: &Dest, adaptive: &Adaptive) -> Entry {
        let entry = |source: Option<CpuSource>, describe: String| Entry {
            wanted: adaptive.workload_cgroup.clone(),
            source,
            describe,
            resolved_ns: now_ns,
        };
        if let Some(cgroup) = &adaptive.workload_cgroup {
            return match CpuSource::cgroup(&self.root, Path::new(cgroup), self.node_cpus) {
                Ok(s) => entry(Some(s), format!("cgroup {cgroup}")),
                Err(e) => {
                    // The whole story (every path tried) goes to the log; status stays short.
                    warn!(%dest, error = %e, "workload cgroup not readable; no CPU signal");
                    entry(None, format!("cgroup {cgroup} (not readable)"))
                }
            };
        }
        if let Dest::Addr(addr) = dest
            && let Ok(Some(l)) = super::listener::find_listener(*addr)
            && let Ok(s) = CpuSource::cgroup(&self.root, Path::new(&l.cgroup), self.node_cpus)
        {
            return entry(
                Some(s),
                format!("listener pid {} cgroup {}", l.pid, l.cgroup),
            );
        }
        let node = CpuSource::node(
            signals::PROC_STAT.as_ref(),
            signals::PROC_PRESSURE_CPU.as_ref(),
        );
        match node {
            Ok(s) => entry(Some(s), "node".to_owned()),
            Err(e) => {
                warn!(%dest, error = %e, "node CPU not readable");
                entry(None, "node (not readable)".to_owned())
            }
        }
    }

    /// What `limiter status` shows as `cpu_source`.
    pub fn describe(&self, dest: &Dest) -> Option<String> {
        self.entries.get(dest).map(|e| e.describe.clone())
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&Dest) -> bool) {
        self.entries.retain(|d, _| keep(d));
    }
}
