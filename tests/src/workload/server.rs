//! The CPU-bound server: the `busy-server` binary in a pod and a CPU cgroup, and the CPU burning
//! it does for each connection.

use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::cgroup::CpuCgroup;
use crate::netns::NetNs;

/// CPU time the calling thread has used (`CLOCK_THREAD_CPUTIME_ID`).
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to the pointer we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(
        rc,
        0,
        "clock_gettime(CLOCK_THREAD_CPUTIME_ID): {}",
        io::Error::last_os_error()
    );
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Spins until the calling thread has used `cpu` of CPU time (not wall time: a thread that is
/// preempted or throttled takes longer). Returns the wall time it took.
pub fn burn_cpu(cpu: Duration) -> Duration {
    let wall = Instant::now();
    let start = thread_cpu_time();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while thread_cpu_time() - start < cpu {
        for i in 0..10_000u64 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i);
        }
        std::hint::black_box(x);
    }
    wall.elapsed()
}

/// How long [`BusyServer::start`] waits for the server to report it listens.
pub const SERVER_READY_TIMEOUT: Duration = Duration::from_secs(5);

/// The `busy-server` binary running in a pod's namespace and in a CPU cgroup; SIGKILLed on drop.
pub struct BusyServer {
    child: Child,
    addr: SocketAddr,
    cpu: Duration,
}

impl BusyServer {
    /// Starts `bin` (pass `env!("CARGO_BIN_EXE_busy-server")`) listening on `addr` inside `ns`,
    /// as a member of `cgroup` from before its first instruction (so all its threads are), each
    /// connection costing `cpu` of CPU time. Returns once it listens.
    pub fn start(
        bin: impl AsRef<Path>,
        ns: &NetNs,
        cgroup: &CpuCgroup,
        addr: SocketAddr,
        cpu: Duration,
    ) -> Self {
        let bin = bin.as_ref();
        let mut command = ns.command(bin);
        command
            .arg(addr.to_string())
            .arg(cpu.as_millis().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        cgroup.spawn_inside(&mut command);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {} in netns {}: {e}", bin.display(), ns.name()));
        let stdout = child.stdout.take().expect("piped stdout");
        // From here the guard owns the child: a failure below still kills it.
        let server = Self { child, addr, cpu };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            // Keep reading so the server never writes into a closed pipe.
            for _ in lines {}
        });
        match rx.recv_timeout(SERVER_READY_TIMEOUT) {
            Ok(Some(Ok(line))) if line.starts_with("listening on ") => {}
            other => panic!(
                "busy-server on {addr} did not report it listens within {SERVER_READY_TIMEOUT:?}: {other:?}"
            ),
        }
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// CPU time each connection costs.
    pub fn cpu_per_connection(&self) -> Duration {
        self.cpu
    }

    /// Thread ids of the server process now.
    pub fn threads(&self) -> Vec<u32> {
        let dir = PathBuf::from(format!("/proc/{}/task", self.pid()));
        std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for BusyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burning_takes_cpu_time_not_wall_time() {
        let before = thread_cpu_time();
        let wall = burn_cpu(Duration::from_millis(30));
        let used = thread_cpu_time() - before;
        assert!(used >= Duration::from_millis(30), "used {used:?}");
        assert!(wall >= used, "wall {wall:?} < cpu {used:?}");
    }

    #[test]
    fn a_sleeping_thread_uses_no_cpu_time() {
        let before = thread_cpu_time();
        std::thread::sleep(Duration::from_millis(30));
        assert!(thread_cpu_time() - before < Duration::from_millis(10));
    }
}
