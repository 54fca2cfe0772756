//! An overload run's timeline: every [`TICK`], the daemon's adaptive status of the destination,
//! the workload's CPU measured from its cgroup, the last probe's completion time and the flood's
//! counters.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cgroup::CpuCgroup;
use crate::cli::limiter_cli;
use crate::status::{find_destination, refused};
use crate::workload::{FloodWatch, ProbeWatch};

/// How often a [`Timeline`] samples.
pub const TICK: Duration = Duration::from_millis(250);

/// The adaptive fields of one destination's status (absent or null: None).
#[derive(Clone, Debug, Default)]
pub struct Adaptive {
    pub cpu: Option<f64>,
    pub inflight: Option<u64>,
    pub max_pass: Option<f64>,
    pub min_rt_ms: Option<f64>,
    pub max_inflight: Option<u64>,
    pub shedding: Option<bool>,
    pub shed_total: Option<u64>,
}

impl Adaptive {
    pub fn of(d: &Value) -> Self {
        Self {
            cpu: d.get("cpu").and_then(Value::as_f64),
            inflight: d.get("inflight").and_then(Value::as_u64),
            max_pass: d.get("max_pass").and_then(Value::as_f64),
            min_rt_ms: d.get("min_rt_ms").and_then(Value::as_f64),
            max_inflight: d.get("max_inflight").and_then(Value::as_u64),
            shedding: d.get("shedding").and_then(Value::as_bool),
            shed_total: d.get("shed_total").and_then(Value::as_u64),
        }
    }
}

/// One row of a timeline.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub t: Duration,
    /// The daemon's view (None when it did not answer, or has no such field).
    pub adaptive: Adaptive,
    /// The workload's CPU over the last tick, measured by the test from its cgroup, as a
    /// fraction of the quota.
    pub cgroup_cpu: f64,
    /// Completion time of the last probe that completed during this tick.
    pub probe: Option<Duration>,
    /// Flood counters (cumulative).
    pub flood_completed: u64,
    pub flood_refused: u64,
    pub flood_timed_out: u64,
}

/// Samples the daemon's status, the cgroup and the load every [`TICK`] on its own thread.
pub struct Timeline {
    stop: Arc<AtomicBool>,
    flood: Arc<Mutex<Option<FloodWatch>>>,
    worker: Option<JoinHandle<Vec<Sample>>>,
}

impl Timeline {
    /// `socket`: the daemon's (read with `limiter status`, so it also runs while the daemon is
    /// down and a test holds the `Daemon` mutably).
    pub fn start(
        epoch: Instant,
        socket: PathBuf,
        dest: SocketAddr,
        cgroup: Arc<CpuCgroup>,
        probes: Option<ProbeWatch>,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flood: Arc<Mutex<Option<FloodWatch>>> = Arc::default();
        let worker = {
            let (stop, flood) = (Arc::clone(&stop), Arc::clone(&flood));
            std::thread::spawn(move || {
                let mut samples = Vec::new();
                let mut last_usage = (Instant::now(), cgroup.usage());
                let mut seen_probes = 0;
                let mut next = Instant::now();
                // Bounded: no test runs a timeline for a minute.
                while !stop.load(Ordering::SeqCst) && epoch.elapsed() < Duration::from_secs(60) {
                    next += TICK;
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                    let t = epoch.elapsed();
                    let adaptive = status_of(&socket, dest)
                        .map(|d| Adaptive::of(&d))
                        .unwrap_or_default();
                    let (now, usage) = (Instant::now(), cgroup.usage());
                    let cgroup_cpu = (usage - last_usage.1).as_secs_f64()
                        / (now - last_usage.0).as_secs_f64()
                        / cgroup.cpus();
                    last_usage = (now, usage);
                    let finished = probes
                        .as_ref()
                        .map(ProbeWatch::finished)
                        .unwrap_or_default();
                    let probe = finished[seen_probes..]
                        .iter()
                        .rev()
                        .find_map(|p| p.completion());
                    seen_probes = finished.len();
                    let counts = flood
                        .lock()
                        .expect("flood watch lock")
                        .as_ref()
                        .map(FloodWatch::counts)
                        .unwrap_or_default();
                    samples.push(Sample {
                        t,
                        adaptive,
                        cgroup_cpu,
                        probe,
                        flood_completed: counts.completed,
                        flood_refused: counts.refused,
                        flood_timed_out: counts.timed_out,
                    });
                }
                samples
            })
        };
        Self {
            stop,
            flood,
            worker: Some(worker),
        }
    }

    /// From now on the timeline also records this flood's counters.
    pub fn watch_flood(&self, watch: FloodWatch) {
        *self.flood.lock().expect("flood watch lock") = Some(watch);
    }

    pub fn finish(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        self.worker
            .take()
            .expect("finished once")
            .join()
            .expect("timeline thread panicked")
    }
}

impl Drop for Timeline {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// The status entry of `dest` from the daemon at `socket`; None if it does not answer.
fn status_of(socket: &Path, dest: SocketAddr) -> Option<Value> {
    let out = limiter_cli(socket, ["status", "-o", "json"]);
    if !out.status.success() {
        return None;
    }
    let status: Value = serde_json::from_slice(&out.stdout).ok()?;
    find_destination(&status, dest).cloned()
}

/// Shed refusals of one status entry, by its `shed_total` or, if absent, its side counters.
pub fn shed_total(d: &Value) -> u64 {
    d.get("shed_total")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| {
            ["inbound", "outbound"]
                .iter()
                .flat_map(|side| ["reject", "drop"].map(|action| refused(d, side, "shed", action)))
                .sum()
        })
}

/// The first tick whose status shows a shed refusal (`shed_total` > 0), from `flood_start`: when
/// the daemon counted it.
pub fn first_shed(samples: &[Sample], flood_start: Duration) -> Option<Duration> {
    samples
        .iter()
        .find(|x| x.adaptive.shed_total.is_some_and(|n| n > 0))
        .map(|x| x.t.saturating_sub(flood_start))
}

/// Where the steady state of shedding starts: once the connections admitted during the ramp,
/// before the limit was armed, have drained (inflight down to maxInflight); `flood_end` if never.
pub fn steady_from(samples: &[Sample], flood_start: Duration, flood_end: Duration) -> Duration {
    samples
        .iter()
        .find(|x| {
            let a = &x.adaptive;
            x.t > flood_start
                && a.shedding == Some(true)
                && a.inflight
                    .zip(a.max_inflight)
                    .is_some_and(|(i, m)| i <= m + 1)
        })
        .map_or(flood_end, |x| x.t)
}
