//! A CPU-quota cgroup of a test's own, for a workload that must be CPU-bound at a known quota.
//!
//! Two layouts are handled, detected from `/proc/self/mounts`:
//! - **v1** (this project's machines are hybrid: v1 controllers, cgroup2 at
//!   `/sys/fs/cgroup/unified` without the cpu controller): the group is created under the `cpu`
//!   mount (quota: `cpu.cfs_period_us`, `cpu.cfs_quota_us`) and, when `cpuacct` is mounted
//!   separately, under the `cpuacct` mount too (usage: `cpuacct.usage`), with the same name, so
//!   `/proc/PID/cgroup` shows the same path for both controllers. Co-mounted `cpu,cpuacct` is
//!   one directory.
//! - **pure cgroup v2** at `/sys/fs/cgroup`: one directory with `cpu.max`, after enabling `+cpu`
//!   in the root's `cgroup.subtree_control` if it is not enabled yet.

use std::io::{self, ErrorKind};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::wait_until;

/// Where a pure cgroup v2 machine mounts its hierarchy.
pub const CGROUP2_ROOT: &str = "/sys/fs/cgroup";

/// CFS enforcement period used for every quota (the kernel's default, 100 ms).
pub const PERIOD_US: u64 = 100_000;

/// How the CPU controllers are mounted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    /// cgroup v1: the `cpu` controller's mount, and `cpuacct`'s if it is a separate mount
    /// (`None` when co-mounted with `cpu`).
    V1 {
        cpu: PathBuf,
        cpuacct: Option<PathBuf>,
    },
    /// cgroup v2 with the cpu controller available, at this mount.
    V2 { root: PathBuf },
}

impl Layout {
    /// The layout of this machine.
    pub fn detect() -> io::Result<Layout> {
        let mounts = std::fs::read_to_string("/proc/self/mounts")?;
        if let Some(v1) = Self::v1_from_mounts(&mounts) {
            return Ok(v1);
        }
        let root = Path::new(CGROUP2_ROOT);
        let controllers =
            std::fs::read_to_string(root.join("cgroup.controllers")).map_err(|e| {
                let why = format!(
                    "no v1 cpu controller mounted and {CGROUP2_ROOT}/cgroup.controllers \
                     unreadable: {e}"
                );
                io::Error::new(e.kind(), why)
            })?;
        if controllers.split_whitespace().any(|c| c == "cpu") {
            Ok(Layout::V2 {
                root: root.to_owned(),
            })
        } else {
            Err(io::Error::new(
                ErrorKind::Unsupported,
                format!(
                    "no v1 cpu controller mounted and {CGROUP2_ROOT} offers no cpu controller \
                     (cgroup.controllers: {:?})",
                    controllers.trim()
                ),
            ))
        }
    }

    /// The v1 layout described by a `/proc/mounts` text, if the `cpu` controller is mounted as
    /// v1 (a v1 `cpuacct` mount alone is not enough: there would be no quota).
    pub fn v1_from_mounts(mounts: &str) -> Option<Layout> {
        let mut cpu = None;
        let mut cpuacct = None;
        for line in mounts.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [_, mount_point, "cgroup", options, ..] = fields[..] else {
                continue;
            };
            let options: Vec<&str> = options.split(',').collect();
            let mount_point = PathBuf::from(unescape_mount_field(mount_point));
            if options.contains(&"cpu") && cpu.is_none() {
                cpu = Some(mount_point.clone());
            }
            if options.contains(&"cpuacct") && cpuacct.is_none() {
                cpuacct = Some(mount_point);
            }
        }
        let cpu = cpu?;
        let cpuacct = cpuacct.filter(|c| *c != cpu);
        Some(Layout::V1 { cpu, cpuacct })
    }
}

/// `/proc/mounts` escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_field(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let code = bytes[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            if let Ok(byte) = u8::try_from(code) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `cfs_quota_us` for `cpus` CPUs at [`PERIOD_US`] (at least 1 ms, the kernel's minimum).
pub fn quota_us(cpus: f64) -> u64 {
    assert!(
        cpus.is_finite() && cpus > 0.0,
        "a CPU quota must be a positive number of CPUs, got {cpus}"
    );
    ((cpus * PERIOD_US as f64).round() as u64).max(1000)
}

/// The v2 `cpu.max` line for `cpus` CPUs.
pub fn cpu_max_line(cpus: f64) -> String {
    format!("{} {PERIOD_US}", quota_us(cpus))
}

/// Value of `key` in a flat keyed file such as `cpu.stat` (`nr_throttled 3`).
pub fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some(key))
            .then(|| words.next()?.parse().ok())
            .flatten()
    })
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A cgroup `/limiter-test-<role>-<pid>-<n>` with a CPU quota, removed on drop after its
/// processes are killed (a process of the test itself is moved back to the root instead).
pub struct CpuCgroup {
    name: String,
    layout: Layout,
    /// The group's directory in each hierarchy it was created in (quota one first).
    dirs: Vec<PathBuf>,
    cpus: f64,
}

impl CpuCgroup {
    /// Creates the group with a quota of `cpus` CPUs (0.5: 50 ms per 100 ms period), on this
    /// machine's layout. Panics with the reason if it cannot.
    pub fn new(role: &str, cpus: f64) -> Self {
        let layout = Layout::detect().unwrap_or_else(|e| panic!("cgroup layout: {e}"));
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("limiter-test-{role}-{}-{n}", std::process::id());
        let roots: Vec<PathBuf> = match &layout {
            Layout::V1 { cpu, cpuacct } => std::iter::once(cpu.clone())
                .chain(cpuacct.iter().cloned())
                .collect(),
            Layout::V2 { root } => {
                enable_cpu_controller(root);
                vec![root.clone()]
            }
        };
        let mut group = Self {
            name,
            layout,
            dirs: Vec::new(),
            cpus,
        };
        // Each directory is owned by the guard as soon as it exists, so a failure below still
        // removes what was created.
        for root in roots {
            let dir = root.join(&group.name);
            match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    eprintln!("note: reusing leftover cgroup {}", dir.display());
                }
                Err(e) => panic!("create cgroup {}: {e}", dir.display()),
            }
            group.dirs.push(dir);
        }
        group.set_quota(cpus);
        group
    }

    /// Changes the quota to `cpus` CPUs.
    pub fn set_quota(&mut self, cpus: f64) {
        let dir = &self.dirs[0];
        match self.layout {
            Layout::V1 { .. } => {
                // The period first: a quota is checked against the current period.
                write(&dir.join("cpu.cfs_period_us"), &PERIOD_US.to_string());
                write(&dir.join("cpu.cfs_quota_us"), &quota_us(cpus).to_string());
            }
            Layout::V2 { .. } => write(&dir.join("cpu.max"), &cpu_max_line(cpus)),
        }
        self.cpus = cpus;
    }

    /// The quota, in CPUs.
    pub fn cpus(&self) -> f64 {
        self.cpus
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The directory name, without a slash.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The group as `/proc/PID/cgroup` prints it (`/limiter-test-overload-123-0`): what
    /// `limiter set --workload-cgroup` takes.
    pub fn path(&self) -> String {
        format!("/{}", self.name)
    }

    /// The group's directory in each hierarchy.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Moves process `pid` (all its threads) into the group, in every hierarchy.
    pub fn add_pid(&self, pid: u32) {
        for dir in &self.dirs {
            write(&dir.join("cgroup.procs"), &pid.to_string());
        }
    }

    /// Makes `command`'s child join the group between fork and exec, before it can start a
    /// thread, so every thread it ever has is in the group.
    pub fn spawn_inside(&self, command: &mut Command) {
        let files: Vec<std::ffi::CString> = self
            .dirs
            .iter()
            .map(|d| {
                std::ffi::CString::new(d.join("cgroup.procs").as_os_str().as_bytes())
                    .expect("cgroup paths have no NUL")
            })
            .collect();
        // SAFETY: the hook runs in the child after fork; it only calls open, write and close
        // (async-signal-safe) on strings prepared before the fork, and allocates nothing.
        unsafe {
            command.pre_exec(move || {
                for file in &files {
                    let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    // "0" is the writing process itself.
                    let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                    let error = io::Error::last_os_error();
                    libc::close(fd);
                    if written != 1 {
                        return Err(error);
                    }
                }
                Ok(())
            });
        }
    }

    /// Pids of the processes in the group (from the quota hierarchy).
    pub fn procs(&self) -> Vec<u32> {
        read_ids(&self.dirs[0].join("cgroup.procs"))
    }

    /// Thread ids in the group, in each hierarchy (v1 `tasks`, v2 `cgroup.threads`).
    pub fn threads(&self) -> Vec<Vec<u32>> {
        let file = match self.layout {
            Layout::V1 { .. } => "tasks",
            Layout::V2 { .. } => "cgroup.threads",
        };
        self.dirs.iter().map(|d| read_ids(&d.join(file))).collect()
    }

    /// CPU time the group has used since it was created.
    pub fn usage(&self) -> Duration {
        match &self.layout {
            Layout::V1 { .. } => {
                // cpuacct.usage is in the cpuacct hierarchy (the last dir; the only one if
                // co-mounted).
                let file = self.dirs[self.dirs.len() - 1].join("cpuacct.usage");
                let text = read(&file);
                Duration::from_nanos(
                    text.trim()
                        .parse()
                        .unwrap_or_else(|e| panic!("{}: {e}: {text:?}", file.display())),
                )
            }
            Layout::V2 { .. } => {
                let file = self.dirs[0].join("cpu.stat");
                let text = read(&file);
                let usec = keyed_value(&text, "usage_usec")
                    .unwrap_or_else(|| panic!("{} has no usage_usec: {text}", file.display()));
                Duration::from_micros(usec)
            }
        }
    }

    /// Periods in which the group was throttled (`nr_throttled` of `cpu.stat`).
    pub fn throttled_periods(&self) -> u64 {
        let file = self.dirs[0].join("cpu.stat");
        keyed_value(&read(&file), "nr_throttled").unwrap_or(0)
    }

    /// Kills the group's processes (never this test process, which is moved to the root) and
    /// waits until every hierarchy reports the group empty. True if it is empty.
    pub fn kill_members(&self) -> bool {
        let me = std::process::id();
        for dir in &self.dirs {
            for pid in read_ids(&dir.join("cgroup.procs")) {
                if pid == me {
                    let root = dir.parent().expect("a cgroup has a parent");
                    let _ = std::fs::write(root.join("cgroup.procs"), me.to_string());
                } else if let Ok(raw) = i32::try_from(pid) {
                    let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
                }
            }
        }
        wait_until(Duration::from_secs(5), || {
            self.dirs
                .iter()
                .all(|d| read_ids(&d.join("cgroup.procs")).is_empty())
        })
    }
}

impl Drop for CpuCgroup {
    fn drop(&mut self) {
        // Never panic here: this may run while a failed test unwinds.
        if !self.kill_members() {
            eprintln!(
                "warning: cgroup {} still has processes after SIGKILL: {:?}",
                self.path(),
                self.procs()
            );
        }
        for dir in self.dirs.iter().rev() {
            // rmdir may fail with EBUSY for a moment after the last task exits.
            let mut last = None;
            let removed = wait_until(Duration::from_secs(2), || match std::fs::remove_dir(dir) {
                Ok(()) => true,
                Err(e) if e.kind() == ErrorKind::NotFound => true,
                Err(e) => {
                    last = Some(e);
                    false
                }
            });
            if !removed {
                eprintln!(
                    "warning: could not remove cgroup {}: {last:?}",
                    dir.display()
                );
            }
        }
    }
}

/// Enables the cpu controller for the root's children (v2), unless it already is.
/// The cgroup v2 root the daemon governs by default: `/sys/fs/cgroup` on a pure v2 machine,
/// else the hybrid layout's `/sys/fs/cgroup/unified`. Panics without a cgroup2 mount.
pub fn cgroup2_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("read /proc/self/mounts");
    cgroup2_root_in(&mounts).expect("a cgroup2 mount at /sys/fs/cgroup or /sys/fs/cgroup/unified")
}

/// [`cgroup2_root`] from the text of `/proc/self/mounts`.
fn cgroup2_root_in(mounts: &str) -> Option<PathBuf> {
    [CGROUP2_ROOT, "/sys/fs/cgroup/unified"]
        .into_iter()
        .find(|p| {
            mounts
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(p) && l.contains(" cgroup2 "))
        })
        .map(PathBuf::from)
}

fn enable_cpu_controller(root: &Path) {
    let control = root.join("cgroup.subtree_control");
    let enabled = read(&control);
    if !enabled.split_whitespace().any(|c| c == "cpu") {
        write(&control, "+cpu");
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn write(path: &Path, value: &str) {
    std::fs::write(path, value)
        .unwrap_or_else(|e| panic!("write {value:?} to {}: {e}", path.display()));
}

/// The ids listed one per line in `path`; none if it cannot be read (a removed group).
fn read_ids(path: &Path) -> Vec<u32> {
    std::fs::read_to_string(path)
        .map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This project's machines: separate v1 `cpu` and `cpuacct` mounts, cgroup2 at `unified`.
    const HYBRID: &str = "\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
";

    #[test]
    fn cgroup2_root_prefers_pure_v2_then_the_hybrid_mount() {
        let pure = "cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n";
        assert_eq!(cgroup2_root_in(pure), Some(CGROUP2_ROOT.into()));
        assert_eq!(
            cgroup2_root_in(HYBRID),
            Some("/sys/fs/cgroup/unified".into())
        );
        assert_eq!(cgroup2_root_in("proc /proc proc rw 0 0\n"), None);
    }

    #[test]
    fn finds_separate_cpu_and_cpuacct_mounts() {
        assert_eq!(
            Layout::v1_from_mounts(HYBRID),
            Some(Layout::V1 {
                cpu: "/sys/fs/cgroup/cpu".into(),
                cpuacct: Some("/sys/fs/cgroup/cpuacct".into()),
            })
        );
    }

    #[test]
    fn co_mounted_cpu_and_cpuacct_are_one_directory() {
        let mounts = "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,nodev,noexec,relatime,cpu,cpuacct 0 0\n\
                      cgroup /sys/fs/cgroup/pids cgroup rw,pids 0 0\n";
        assert_eq!(
            Layout::v1_from_mounts(mounts),
            Some(Layout::V1 {
                cpu: "/sys/fs/cgroup/cpu,cpuacct".into(),
                cpuacct: None,
            })
        );
    }

    #[test]
    fn pure_v2_and_cpuacct_alone_are_not_v1_cpu() {
        let v2 = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime 0 0\n";
        assert_eq!(Layout::v1_from_mounts(v2), None);
        let no_cpu = "cgroup /sys/fs/cgroup/cpuacct cgroup rw,cpuacct 0 0\n";
        assert_eq!(Layout::v1_from_mounts(no_cpu), None);
        // `cpuset` is not `cpu`.
        let cpuset = "cgroup /sys/fs/cgroup/cpuset cgroup rw,cpuset 0 0\n";
        assert_eq!(Layout::v1_from_mounts(cpuset), None);
    }

    #[test]
    fn mount_points_are_unescaped() {
        assert_eq!(unescape_mount_field(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape_mount_field(r"/plain\"), r"/plain\");
    }

    #[test]
    fn quotas_are_per_100_ms_period() {
        assert_eq!(quota_us(1.0), 100_000);
        assert_eq!(quota_us(0.5), 50_000);
        assert_eq!(quota_us(0.001), 1000, "the kernel's minimum");
        assert_eq!(cpu_max_line(1.5), "150000 100000");
    }

    #[test]
    #[should_panic(expected = "positive number of CPUs")]
    fn a_zero_quota_is_refused() {
        quota_us(0.0);
    }

    #[test]
    fn reads_keyed_values() {
        let stat = "nr_periods 10\nnr_throttled 3\nthrottled_time 123\n";
        assert_eq!(keyed_value(stat, "nr_throttled"), Some(3));
        assert_eq!(keyed_value(stat, "nr_periods"), Some(10));
        assert_eq!(keyed_value(stat, "usage_usec"), None);
        assert_eq!(keyed_value(stat, "throttled"), None);
    }
}
