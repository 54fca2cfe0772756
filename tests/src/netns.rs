//! A named network namespace that exists exactly as long as its guard.

use std::ffi::OsStr;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::CloneFlags;

use crate::cmd;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace `lim-<pid>-<n>-<role>` (unique per process and per guard), created with
/// `ip netns add` and deleted on drop, even when the test panics. Its `lo` is up.
///
/// Deleting the namespace also deletes its veth pairs. Sockets still open inside it keep the
/// kernel object alive but the name is gone, so drop sockets before the namespace.
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates the namespace; `role` ("node", "pod1") makes leftovers recognisable.
    pub fn new(role: &str) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("lim-{}-{n}-{role}", std::process::id());
        cmd::run_checked(Command::new("ip").args(["netns", "add", &name]));
        // The guard exists from here on, so a failure below still deletes the namespace.
        let ns = Self { name };
        ns.run("ip", ["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`, the bind mount that `ip netns` keeps for the namespace.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// A command that runs `program` inside the namespace. It goes through
    /// `nsenter --net=...` rather than `ip netns exec`, which remounts /sys and so would hide
    /// the cgroup filesystem from the program.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(program);
        c
    }

    /// Runs `program args` inside the namespace; panics with its output unless it succeeds.
    /// Returns its stdout.
    pub fn run<I, S>(&self, program: &str, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        cmd::run_checked(self.command(program).args(args))
    }

    /// Runs `program args` inside the namespace and returns its output, whatever its status.
    pub fn output<I, S>(&self, program: &str, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        cmd::output(self.command(program).args(args))
    }

    /// Sets a sysctl of this namespace (`net.*` sysctls are per namespace).
    pub fn sysctl(&self, key: &str, value: &str) {
        self.run("sysctl", ["-q", "-w", &format!("{key}={value}")]);
    }

    /// Runs `f` on a fresh thread that has joined this namespace and returns its result.
    ///
    /// Network namespaces are per thread: the calling thread is untouched, and sockets created
    /// inside `f` stay in this namespace for their whole life, whichever thread uses them later.
    /// A panic in `f` is propagated to the caller.
    pub fn enter<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let path = self.path();
        let file = File::open(&path).unwrap_or_else(|e| {
            panic!("open {} to enter netns {}: {e}", path.display(), self.name)
        });
        let name = &self.name;
        std::thread::scope(|scope| {
            let worker = scope.spawn(move || {
                nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns(CLONE_NEWNET) into netns {name}: {e}"));
                f()
            });
            worker
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Whether a namespace of this name is listed by `ip netns list`.
    pub fn is_listed(name: &str) -> bool {
        let listing = cmd::run_checked(Command::new("ip").args(["netns", "list"]));
        // Lines look like `lim-1-0-node (id: 3)` or just `lim-1-0-node`.
        listing
            .lines()
            .any(|line| line.split_whitespace().next() == Some(name))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Never panic here: this may run while a failed test unwinds.
        match Command::new("ip")
            .args(["netns", "delete", &self.name])
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "warning: `ip netns delete {}` failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => eprintln!(
                "warning: could not run `ip netns delete {}`: {e}",
                self.name
            ),
        }
    }
}
