//! The overload tests' world (tests/tests/overload.rs): a CPU-bound server in a pod under a CPU
//! quota of its own cgroup, a pod that floods it, a pod that probes it, and a daemon; with the
//! [`Timeline`] those tests record, print and save as CSV.

mod output;
mod timeline;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub use output::{ms, print_timeline, save_timeline, timeline_csv};
pub use timeline::{Adaptive, Sample, TICK, Timeline, first_shed, shed_total, steady_from};

use crate::cgroup::CpuCgroup;
use crate::measure::percentile;
use crate::workload::{
    BusyServer, Flood, FloodConfig, Outcome, ProbeWatch, Prober, ProberConfig, latency_summary,
    probe,
};
use crate::{Daemon, Testbed};

pub const PORT: u16 = 8080;
/// The workload's CPU quota, in CPUs: one of the machine's two cores, so the flood, the daemon
/// and the test keep the other.
pub const QUOTA_CPUS: f64 = 1.0;
/// CPU time each connection costs the server: the unloaded completion time.
pub const CPU_PER_CONNECTION: Duration = Duration::from_millis(50);
/// Flood workers (a closed loop each, with a timeout and a back-off after a refusal).
pub const FLOOD_CONCURRENCY: usize = 50;
/// The flood reaches full concurrency over this time, as real load ramps.
pub const FLOOD_RAMP: Duration = Duration::from_millis(1500);
pub const FLOOD_TIMEOUT: Duration = Duration::from_secs(1);
pub const FLOOD_BACKOFF: Duration = Duration::from_millis(50);
/// Sequential requests that measure the unloaded completion time and give the daemon's window
/// its first completed connections.
pub const WARM_UP: usize = 15;

/// Pods: 1 floods, 2 probes, 3 serves.
pub const FLOOD_POD: u8 = 1;
pub const PROBE_POD: u8 = 2;
pub const SERVER_POD: u8 = 3;

/// A server pod running the busy server in its own CPU cgroup, two client pods, a daemon.
pub struct Setup {
    // Dropped in this order: the daemon, the server, its cgroup, the namespaces.
    pub daemon: Daemon,
    pub server: BusyServer,
    pub cgroup: Arc<CpuCgroup>,
    pub bed: Testbed,
    /// The server's address, in the server pod.
    pub dest: SocketAddr,
}

impl Setup {
    /// Starts `busy_server` (pass `env!("CARGO_BIN_EXE_busy-server")`) and a daemon.
    pub fn new(busy_server: &str) -> Self {
        let bed = Testbed::new(3);
        let dest = bed.pod(SERVER_POD).addr_v4(PORT);
        let cgroup = Arc::new(CpuCgroup::new("overload", QUOTA_CPUS));
        let server = BusyServer::start(
            busy_server,
            bed.pod(SERVER_POD).ns(),
            &cgroup,
            dest,
            CPU_PER_CONNECTION,
        );
        let daemon = Daemon::start();
        Self {
            daemon,
            server,
            cgroup,
            bed,
            dest,
        }
    }

    /// `limiter set DEST --adaptive --workload-cgroup CG` (reject mode, the defaults).
    pub fn set_adaptive(&self) {
        let cgroup = self.cgroup.path();
        self.daemon.set(
            self.dest,
            &["--adaptive", "--workload-cgroup", cgroup.as_str()],
        );
    }

    /// [`WARM_UP`] sequential requests, 100 ms apart (the workload's CPU stays well below any
    /// threshold); returns their median completion time, printed.
    pub fn warm_up(&self, label: &str) -> Duration {
        let mut times = Vec::new();
        for _ in 0..WARM_UP {
            let r = probe(
                self.bed.pod(PROBE_POD).ns(),
                self.dest,
                Duration::from_secs(3),
            );
            assert_eq!(
                r.outcome,
                Outcome::Completed,
                "{label}: an unloaded request did not complete: {r:?}"
            );
            times.push(r.elapsed);
            std::thread::sleep(Duration::from_millis(100));
        }
        let p50 = percentile(&times, 50).expect("warm-up requests");
        println!(
            "{label}: unloaded completion time over {WARM_UP} sequential requests: {} \
             ({CPU_PER_CONNECTION:?} of CPU each, quota {QUOTA_CPUS} CPU)",
            latency_summary(&times)
        );
        assert!(
            p50 < CPU_PER_CONNECTION * 4,
            "{label}: unloaded requests take {p50:?} for {CPU_PER_CONNECTION:?} of CPU: the \
             machine is too busy for this test"
        );
        p50
    }

    pub fn start_flood(&self) -> Flood {
        Flood::start(
            self.bed.pod(FLOOD_POD).ns(),
            self.dest,
            FloodConfig {
                concurrency: FLOOD_CONCURRENCY,
                ramp: FLOOD_RAMP,
                timeout: FLOOD_TIMEOUT,
                backoff: FLOOD_BACKOFF,
                think: Duration::ZERO,
                max_duration: Duration::from_secs(20),
                rate: None,
            },
        )
    }

    pub fn start_prober(&self, epoch: Instant, config: ProberConfig) -> Prober {
        Prober::start(self.bed.pod(PROBE_POD).ns(), self.dest, config, epoch)
    }

    /// A [`Timeline`] of the destination from `epoch`, with the probes' completion times if
    /// given.
    pub fn start_timeline(&self, epoch: Instant, probes: Option<ProbeWatch>) -> Timeline {
        Timeline::start(
            epoch,
            self.daemon.socket().to_owned(),
            self.dest,
            Arc::clone(&self.cgroup),
            probes,
        )
    }

    /// Waits until the daemon has completed connections in its window (`max_inflight` set).
    pub fn wait_for_window_data(&self) -> Value {
        self.daemon.wait_for_dest(
            self.dest,
            Duration::from_secs(5),
            "max_inflight (the warm-up completed connections)",
            |d| d.get("max_inflight").and_then(Value::as_u64).is_some(),
        )
    }
}

/// Polls `condition` every 100 ms until it holds (true) or `timeout` passes (false). Slower
/// than `wait_until`, since each `limiter status` runs a process: on two cores, polling every
/// 10 ms would take CPU from the workload under test.
pub fn poll(timeout: Duration, condition: impl FnMut() -> bool) -> bool {
    crate::wait_until_every(timeout, Duration::from_millis(100), condition)
}
