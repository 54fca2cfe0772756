//! Harness for limiter's privileged integration tests.
//!
//! Every test builds its own world from guards that tear it down on drop, panicking or not:
//! [`Testbed`] (a "node" network namespace with "pod" namespaces on veth pairs), traffic helpers
//! that keep their sockets in the test process ([`Pod::connect_all`], [`HoldServer`]), and a
//! [`Daemon`] with a private control socket and a private bpffs mount. See `tests/README.md`.

pub mod bpf;
pub mod bpffs;
pub mod breaker;
pub mod cgroup;
pub mod cli;
mod cmd;
pub mod daemon;
pub mod foreign;
pub mod kube_api;
pub mod measure;
pub mod netns;
pub mod overload;
pub mod service;
pub mod socket_lb;
pub mod status;
pub mod testbed;
pub mod traffic;
pub mod workload;

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

pub use bpffs::BpffsMount;
pub use cgroup::{CpuCgroup, cgroup2_root};
pub use cli::{limiter_bin, limiter_cli};
pub use daemon::{Daemon, DaemonExit, StartFailure, run_daemon_to_exit, run_daemon_to_exit_env};
pub use measure::{Outcomes, REJECT_LATENCY, expect_exactly, peak_while, percentile};
pub use netns::NetNs;
pub use socket_lb::SocketLb;
pub use testbed::{AddrPlan, Pod, Testbed};
pub use traffic::{ConnectAttempt, HoldServer};

/// Proof that the test runs as root, and a lock that runs privileged tests one at a time even
/// without `--test-threads=1` (the daemon's cgroup programs see every namespace on the machine).
/// The lock is machine-wide: every test process numbers its testbeds from the same addresses,
/// and a daemon's rules apply in every namespace, so two test binaries running at once (two
/// `cargo test` runs, or cargo running binaries side by side) would enforce each other's rules.
pub struct Privileged {
    // Dropped in this order: the machine-wide lock is released after the process-wide one.
    _serial: MutexGuard<'static, ()>,
    _machine: MachineLock,
}

/// Where test processes on this machine take turns.
const MACHINE_LOCK: &str = "/run/lock/limiter-integration-tests.lock";

/// An exclusive `flock` on [`MACHINE_LOCK`] (released when the file closes, also if the
/// process dies).
struct MachineLock {
    _file: std::fs::File,
}

impl MachineLock {
    fn acquire() -> Self {
        use std::os::fd::AsRawFd;
        let path = std::path::Path::new(MACHINE_LOCK);
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .unwrap_or_else(|e| panic!("open {MACHINE_LOCK}: {e}"));
        let fd = file.as_raw_fd();
        // SAFETY: flock on a file descriptor we own; no memory is passed.
        if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            eprintln!(
                "waiting for another process's limiter integration tests ({MACHINE_LOCK})..."
            );
            loop {
                // SAFETY: as above; blocks until the holder closes the file or exits.
                if unsafe { libc::flock(fd, libc::LOCK_EX) } == 0 {
                    break;
                }
                let e = std::io::Error::last_os_error();
                assert_eq!(
                    e.kind(),
                    std::io::ErrorKind::Interrupted,
                    "flock {MACHINE_LOCK}: {e}"
                );
            }
        }
        Self { _file: file }
    }
}

/// Call first in every privileged test. Without root the test fails loudly instead of passing:
/// a privileged test that silently does nothing proves nothing.
pub fn require_root() -> Privileged {
    let euid = nix::unistd::geteuid();
    if !euid.is_root() {
        eprintln!(
            "\n*** limiter integration test NOT RUN: it needs root (euid is {euid}).\n\
             *** It creates network namespaces, mounts bpffs and loads eBPF programs.\n\
             *** Run it as root: `cargo xtask test`, or\n\
             ***   sudo -E cargo test -p limiter-integration-tests -- --test-threads=1\n"
        );
        panic!("privileged test run without root (euid {euid}); see the message above");
    }
    static SERIAL: Mutex<()> = Mutex::new(());
    let serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    Privileged {
        _serial: serial,
        _machine: MachineLock::acquire(),
    }
}

/// Polls `condition` every 10 ms until it holds (true) or `timeout` passes (false).
/// The condition is always evaluated once more at the deadline.
pub fn wait_until(timeout: Duration, condition: impl FnMut() -> bool) -> bool {
    wait_until_every(timeout, Duration::from_millis(10), condition)
}

/// [`wait_until`], polling every `interval` (slower polling where each check runs a process
/// and the CPU under test matters).
pub fn wait_until_every(
    timeout: Duration,
    interval: Duration,
    mut condition: impl FnMut() -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(interval);
    }
}

/// Checks that `condition` holds at every 10 ms poll for the whole of `period` (for values
/// that must not move, such as a counter that must stay at zero). Returns false at the first miss.
pub fn holds_for(period: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + period;
    while Instant::now() < deadline {
        if !condition() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    condition()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_until_returns_as_soon_as_the_condition_holds() {
        let mut calls = 0;
        assert!(wait_until(Duration::from_secs(5), || {
            calls += 1;
            calls == 3
        }));
        assert_eq!(calls, 3);
    }

    #[test]
    fn wait_until_gives_up_at_the_deadline() {
        let start = Instant::now();
        assert!(!wait_until(Duration::from_millis(50), || false));
        assert!(start.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn holds_for_stops_at_the_first_miss() {
        let mut calls = 0;
        assert!(!holds_for(Duration::from_secs(5), || {
            calls += 1;
            calls < 3
        }));
        assert_eq!(calls, 3);
    }
}
