//! Which CPU each adaptive destination is judged by: the cgroup named by the rule
//! (`--workload-cgroup`), else the cgroup of the process listening on the destination on this
//! node, else the node as a whole. Resolved once and re-resolved every [`RESOLVE_EVERY_NS`]
//! (a pod may start after its rule, or move), so a tick costs a few file reads.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use limiter_overload::signals::{self, CpuReading, CpuSource};
use tracing::{info, warn};

use crate::rules::adaptive::Adaptive;
use crate::rules::dest::Dest;

/// How often a destination's source is looked for again (a listener scan walks /proc).
const RESOLVE_EVERY_NS: u64 = 10_000_000_000;

/// Where a destination's CPU comes from.
enum Source {
    /// The workload's own cgroup.
    Cgroup(CpuSource),
    /// The node as a whole: the reading the loop takes once per tick for every such
    /// destination and for the system rule.
    Node,
    /// Not found (or gone); looked for again after [`RESOLVE_EVERY_NS`].
    None,
}

struct Entry {
    /// The rule's explicit cgroup when the source was resolved (a change re-resolves at once).
    wanted: Option<String>,
    source: Source,
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

    /// The workload's CPU counters now, resolving (or re-resolving) its source when due;
    /// `node` is this tick's reading of the whole node.
    pub fn read(
        &mut self,
        now_ns: u64,
        dest: &Dest,
        adaptive: &Adaptive,
        node: Option<CpuReading>,
    ) -> Option<CpuReading> {
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
        let cgroup = match &entry.source {
            Source::Cgroup(c) => c,
            Source::Node => return node,
            Source::None => return None,
        };
        match cgroup.read() {
            Ok(r) => Some(r),
            Err(e) => {
                // The cgroup went away (the pod was deleted): look again when due.
                warn!(%dest, error = %e, "workload CPU unreadable");
                entry.source = Source::None;
                None
            }
        }
    }

    fn resolve(&self, now_ns: u64, dest: &Dest, adaptive: &Adaptive) -> Entry {
        let entry = |source: Source, describe: String| Entry {
            wanted: adaptive.workload_cgroup.clone(),
            source,
            describe,
            resolved_ns: now_ns,
        };
        if let Some(cgroup) = &adaptive.workload_cgroup {
            return match CpuSource::cgroup(&self.root, Path::new(cgroup), self.node_cpus) {
                Ok(s) => entry(Source::Cgroup(s), format!("cgroup {cgroup}")),
                Err(e) => {
                    // The whole story (every path tried) goes to the log; status stays short.
                    warn!(%dest, error = %e, "workload cgroup not readable; no CPU signal");
                    entry(Source::None, format!("cgroup {cgroup} (not readable)"))
                }
            };
        }
        if let Dest::Addr(addr) = dest
            && let Ok(Some(l)) = super::listener::find_listener(*addr)
            && let Ok(s) = CpuSource::cgroup(&self.root, Path::new(&l.cgroup), self.node_cpus)
        {
            return entry(
                Source::Cgroup(s),
                format!("listener pid {} cgroup {}", l.pid, l.cgroup),
            );
        }
        entry(Source::Node, "node".to_owned())
    }

    /// What `limiter status` shows as `cpu_source`.
    pub fn describe(&self, dest: &Dest) -> Option<String> {
        self.entries.get(dest).map(|e| e.describe.clone())
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&Dest) -> bool) {
        self.entries.retain(|d, _| keep(d));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_destination_without_a_workload_reads_the_nodes_reading_of_the_tick() {
        let mut sources = Sources::new(PathBuf::from("/nonexistent-cgroup-root"));
        let dest: Dest = "10.0.0.0/24:80".parse().unwrap();
        let node = CpuReading {
            usage_ns: 42,
            capacity_ns: Some(100),
            quota_cpus: None,
            node_cpus: 2,
            throttling: None,
            pressure_some_avg10: None,
        };
        let got = sources.read(1, &dest, &Adaptive::default(), Some(node));
        assert_eq!(got, Some(node));
        assert_eq!(sources.describe(&dest).as_deref(), Some("node"));

        // A named cgroup that does not exist gives no reading, not the node's.
        let named = Adaptive {
            workload_cgroup: Some("/gone".into()),
            ..Adaptive::default()
        };
        assert_eq!(sources.read(2, &dest, &named, Some(node)), None);
        assert_eq!(
            sources.describe(&dest).as_deref(),
            Some("cgroup /gone (not readable)")
        );
    }
}
