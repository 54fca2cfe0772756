//! A CPU-bound workload for overload tests, and the client side that loads and measures it.
//!
//! - [`BusyServer`]: the `busy-server` binary (tests/src/bin/busy-server.rs) run inside a pod's
//!   network namespace and inside a [`CpuCgroup`](crate::cgroup::CpuCgroup): for each accepted
//!   connection a thread burns a fixed amount of *CPU time* (thread CPU clock, so a throttled
//!   server takes longer wall time for the same work), writes one byte and closes. Under a
//!   quota, completion time grows with concurrency, as in a real overloaded service.
//! - [`request()`]: one client request (connect, wait for the byte, close), classified.
//! - [`Flood`]: `concurrency` workers in a loop of requests from a pod, started over a ramp,
//!   with live counters (for timelines and "time to first refusal") and every request kept.
//! - [`Prober`]: a probe every `interval`, each on its own thread, measuring completion time.

mod flood;
mod prober;
mod report;
mod request;
mod server;

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;

pub use flood::{Flood, FloodConfig, FloodCounts, FloodWatch};
pub use prober::{Probe, ProbeWatch, Prober, ProberConfig};
pub use report::{FloodReport, latency_summary};
pub use request::{Outcome, Request, probe, request};
pub use server::{BusyServer, SERVER_READY_TIMEOUT, burn_cpu, thread_cpu_time};

/// Joins the calling thread to the network namespace at `path` (for threads this module spawns).
fn join_netns(path: &Path) {
    let file = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("setns(CLONE_NEWNET) into {}: {e}", path.display()));
}

/// Sleeps `d` in short slices; returns early (false) once `stop` is set.
fn sleep_unless(stop: &AtomicBool, d: Duration) -> bool {
    let deadline = Instant::now() + d;
    loop {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(10)));
    }
}
