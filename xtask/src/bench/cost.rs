//! Where an accepted connection's cost goes: the kernel's own run-time statistics of each of
//! limiter's programs (`kernel.bpf_stats_enabled`, read with `bpftool prog show`), per
//! connection, for a connection no rule covers and for one a rule covers.

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::{Context as _, Result};

const STATS_SWITCH: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Runs and run time (ns) so far of every loaded program named `limiter_*`.
fn snapshot() -> Result<BTreeMap<String, (u64, u64)>> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "-j"])
        .output()
        .context("run bpftool prog show (Debian package bpftool)")?;
    anyhow::ensure!(out.status.success(), "bpftool prog show failed");
    let progs: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut by_name: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for p in progs.as_array().into_iter().flatten() {
        let Some(name) = p["name"].as_str().filter(|n| n.starts_with("limiter_")) else {
            continue;
        };
        let e = by_name.entry(name.to_string()).or_default();
        e.0 += p["run_cnt"].as_u64().unwrap_or(0);
        e.1 += p["run_time_ns"].as_u64().unwrap_or(0);
    }
    Ok(by_name)
}

/// Per program: runs per connection and ns per connection over `connections` made by `f`.
pub type PerConnection = BTreeMap<String, (f64, f64)>;

/// Runs `f` (which makes `connections` connections) with the kernel's program statistics on,
/// and returns what each limiter program cost per connection. The switch is put back.
pub fn measure(connections: usize, f: impl FnOnce() -> Result<()>) -> Result<PerConnection> {
    let before_switch = std::fs::read_to_string(STATS_SWITCH).unwrap_or_else(|_| "0".into());
    std::fs::write(STATS_SWITCH, "1").context("turn kernel.bpf_stats_enabled on")?;
    let result = (|| {
        let before = snapshot()?;
        f()?;
        let after = snapshot()?;
        let n = connections.max(1) as f64;
        Ok(after
            .into_iter()
            .map(|(name, (runs, ns))| {
                let (r0, t0) = before.get(&name).copied().unwrap_or_default();
                let per = (
                    runs.saturating_sub(r0) as f64 / n,
                    ns.saturating_sub(t0) as f64 / n,
                );
                (name, per)
            })
            .collect())
    })();
    let _ = std::fs::write(STATS_SWITCH, before_switch.trim());
    result
}
