//! `cargo xtask vm-test`: Debian's own kernels under qemu (virtme-ng, no KVM), the freshly built
//! daemon and the kernel smoke suite (`tests/src/bin/kernel-smoke.rs`) run inside each.
//!
//! Steps: check the host's tools; a virtme-ng virtualenv in the cache; the release `limiter`
//! and `kernel-smoke` binaries (the guest shares the host's root file system, so they are
//! simply there); per kernel: the newest package of its series through apt, unpacked into the
//! cache, booted with `scripts/vm-guest.sh`, results read back from a shared folder under the
//! target dir. The cache is `${XDG_CACHE_HOME:-$HOME/.cache}/limiter/vm`, outside the repository
//! so that every clone on a machine (and CI) reuses it.

mod kernels;
mod report;
mod results;
mod vng;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::{cargo, root, run, target_dir};
use results::{GuestResults, KernelRun, Outcome, Probe};

/// What a kernel must do for the matrix to pass.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Expect {
    /// The daemon starts and every smoke scenario passes.
    Pass,
    /// Below the documented minimum (5.15): passing (degraded) is fine, and so is the daemon
    /// refusing to start with its minimum-kernel error (exit 3). Anything else fails.
    PassOrUnsupported,
}

/// Where apt finds a kernel's packages.
#[derive(Clone, Copy, Debug)]
pub enum Suite {
    /// The system's own sources (bookworm on this project's machines).
    System,
    /// Another Debian suite, through a private sources list under the cache.
    Other(&'static str),
}

impl Suite {
    fn name(self) -> &'static str {
        match self {
            Suite::System => "the system's sources",
            Suite::Other(suite) => suite,
        }
    }
}

/// One kernel series of the matrix: the newest `<prefix>N<suffix>` package is booted.
#[derive(Debug)]
pub struct Kernel {
    pub series: &'static str,
    pub suite: Suite,
    pub package_prefix: &'static str,
    pub package_suffix: &'static str,
    pub expect: Expect,
}

/// The matrix, and what each kernel must do.
pub const KERNELS: &[Kernel] = &[
    Kernel {
        series: "5.10",
        suite: Suite::Other("bullseye"),
        package_prefix: "linux-image-5.10.0-",
        package_suffix: "-amd64-unsigned",
        expect: Expect::PassOrUnsupported,
    },
    Kernel {
        series: "6.1",
        suite: Suite::System,
        package_prefix: "linux-image-6.1.0-",
        package_suffix: "-amd64-unsigned",
        expect: Expect::Pass,
    },
    Kernel {
        series: "6.12",
        suite: Suite::System,
        package_prefix: "linux-image-6.12.",
        package_suffix: "+deb12-amd64-unsigned",
        expect: Expect::Pass,
    },
];

/// Debian packages the VM plumbing needs (scripts/setup.sh installs them): qemu, depmod, a
/// static busybox for virtme-ng's initramfs (Debian's kernels have 9p and virtio as modules),
/// and venv for virtme-ng's virtualenv.
const HOST_PACKAGES: &[&str] = &["qemu-system-x86", "kmod", "busybox-static", "python3-venv"];

#[derive(clap::Args)]
pub struct VmArgs {
    /// A kernel series to boot (repeatable): 5.10, 6.1 or 6.12. Default: all three.
    #[arg(long = "kernel", value_name = "SERIES", value_parser = parse_series)]
    kernels: Vec<&'static Kernel>,
    /// Write the results to docs/kernels.md.
    #[arg(long)]
    write_docs: bool,
    /// Per-kernel limit in seconds (boot, suite and power-off); qemu is killed after it.
    #[arg(long, value_name = "SECONDS", default_value_t = 360)]
    timeout: u64,
}

impl VmArgs {
    /// Every kernel, default timeout, docs untouched: the matrix as `cargo xtask test` runs it.
    pub fn whole_matrix() -> Self {
        Self {
            kernels: Vec::new(),
            write_docs: false,
            timeout: 360,
        }
    }
}

fn parse_series(s: &str) -> Result<&'static Kernel, String> {
    KERNELS.iter().find(|k| k.series == s).ok_or_else(|| {
        let known: Vec<&str> = KERNELS.iter().map(|k| k.series).collect();
        format!("unknown kernel series '{s}' (known: {})", known.join(", "))
    })
}

/// The host's own capability report (`limiter doctor -o json`), for the docs.
fn host_probe(limiter: &Path) -> Option<report::Host> {
    let out = Command::new(limiter)
        .args(["doctor", "-o", "json"])
        .output()
        .ok()?;
    let doctor: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(report::Host {
        release: doctor["kernel"].as_str().unwrap_or("unknown").to_string(),
        probe: Probe::from_doctor(&doctor),
    })
}

pub fn run_matrix(args: &VmArgs) -> Result<()> {
    let started = Instant::now();
    check_host()?;
    let cache = cache_dir()?;
    let _lock = one_at_a_time(&cache)?;
    let vng_bin = vng::ensure_venv(&cache)?;

    run(cargo().args(["build", "--release", "-p", "limiter-user"]))?;
    run(cargo()
        .args(["build", "--release", "-p", "limiter-integration-tests"])
        .args(["--bin", "kernel-smoke"]))?;
    let release = target_dir().join("release");
    let (limiter, smoke) = (release.join("limiter"), release.join("kernel-smoke"));
    for bin in [&limiter, &smoke] {
        if !bin.is_file() {
            bail!("the build succeeded but {} does not exist", bin.display());
        }
    }

    let kernels: Vec<&Kernel> = if args.kernels.is_empty() {
        KERNELS.iter().collect()
    } else {
        args.kernels.clone()
    };
    let timeout = Duration::from_secs(args.timeout);
    let mut runs = Vec::new();
    for kernel in kernels {
        let run = one_kernel(kernel, &cache, &vng_bin, &limiter, &smoke, timeout);
        eprintln!(
            "xtask: vm-test [{}] {} in {:.0} s (and {:.0} s to fetch and unpack the kernel)",
            kernel.series,
            report::outcome_text(&run),
            run.wall.as_secs_f64(),
            run.prepare.as_secs_f64()
        );
        runs.push(run);
    }

    println!("\n{}", report::terminal(&runs));
    println!(
        "vm-test: {} kernel(s) in {:.0} s; results and consoles in {}",
        runs.len(),
        started.elapsed().as_secs_f64(),
        results_root().display()
    );
    if args.write_docs {
        let doc = root().join("docs/kernels.md");
        let from = report::Provenance {
            commit: commit(),
            date: output_of("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            command: "cargo xtask vm-test --write-docs".into(),
        };
        let host = host_probe(&limiter);
        std::fs::write(&doc, report::markdown(&runs, host.as_ref(), &from))
            .with_context(|| format!("write {}", doc.display()))?;
        println!("vm-test: wrote {}", doc.display());
    }
    let failed: Vec<&str> = runs
        .iter()
        .filter(|r| !r.meets_expectation())
        .map(|r| r.series)
        .collect();
    if !failed.is_empty() {
        bail!("kernel(s) not as expected: {}", failed.join(", "));
    }
    Ok(())
}

/// Boots of one kernel, at most, when a boot fails before the guest runs anything.
const MAX_BOOTS: u32 = 2;

/// Prepares and boots one kernel. Never fails: a problem is the kernel's outcome.
fn one_kernel(
    kernel: &'static Kernel,
    cache: &Path,
    vng_bin: &Path,
    limiter: &Path,
    smoke: &Path,
    timeout: Duration,
) -> KernelRun {
    let mut run = KernelRun {
        series: kernel.series,
        expect: kernel.expect,
        package: String::new(),
        version: String::new(),
        release: String::new(),
        outcome: Outcome::Fail(String::new()),
        scenarios: Vec::new(),
        probe: Probe::Unavailable("not run".into()),
        wall: Duration::ZERO,
        prepare: Duration::ZERO,
        cgroup: None,
        failed_boots: Vec::new(),
    };
    let start = Instant::now();
    let prepared = kernels::prepare(kernel, cache);
    run.prepare = start.elapsed();
    let prepared = match prepared {
        Ok(p) => p,
        Err(e) => {
            run.outcome = Outcome::Fail(format!("could not prepare the kernel: {e:#}"));
            return run;
        }
    };
    run.package = prepared.package.clone();
    run.version = prepared.version.clone();
    run.release = prepared.release.clone();
    eprintln!(
        "xtask: vm-test [{}] booting {} ({} {}), at most {} s",
        kernel.series,
        prepared.release,
        prepared.package,
        prepared.version,
        timeout.as_secs()
    );

    let out = results_root().join(&prepared.release);
    let mut boot = 1;
    let (ended, results) = loop {
        let booted = (|| {
            let _ = std::fs::remove_dir_all(&out);
            std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
            let script = root().join("scripts/vm-guest.sh");
            let exec = vng::guest_command(&script, &out, limiter, smoke)?;
            let console = out.join("console.log");
            let start = Instant::now();
            let ended = vng::boot(&vng::Boot {
                vng_bin,
                vmlinuz: &prepared.vmlinuz,
                rwdir: &out,
                exec,
                console: &console,
                echo_prefix: "smoke:",
                label: kernel.series,
                timeout,
            })?;
            anyhow::Ok((ended, start.elapsed()))
        })();
        let (ended, wall) = match booted {
            Ok(b) => b,
            Err(e) => {
                run.outcome = Outcome::Fail(format!("could not boot: {e:#}"));
                return run;
            }
        };
        run.wall += wall;
        let results = GuestResults::read(&out);
        let timed_out = matches!(ended, vng::Ended::TimedOut);
        if !results.boot_failed(timed_out) || boot == MAX_BOOTS {
            break (ended, results);
        }
        // The emulated guest died before running any of limiter's code (seen once in CI: a
        // 6.12 guest panicked 3 s into its boot, the same kernel booting cleanly before and
        // after): the boot is retried, and the report says so.
        let why = results.boot_failure();
        eprintln!(
            "xtask: vm-test [{}] boot {boot} failed ({why}); booting again",
            kernel.series
        );
        let kept = out.with_file_name(format!("{}.boot{boot}-console.log", prepared.release));
        let _ = std::fs::rename(out.join("console.log"), &kept);
        run.failed_boots
            .push(format!("{why} (console kept in {})", kept.display()));
        boot += 1;
    };
    let timed_out = matches!(ended, vng::Ended::TimedOut);
    if let Some(uname) = &results.uname {
        run.release = uname.clone();
    }
    run.cgroup = results.mounts.as_deref().map(results::cgroup_mounts);
    run.scenarios = results.scenarios();
    run.probe = results.probe();
    run.outcome = results.outcome(timed_out);
    if timed_out {
        if let Outcome::Fail(why) = &mut run.outcome {
            *why += &format!(" (guest killed after {} s)", timeout.as_secs());
        }
    } else if !results.finished && run.outcome == Outcome::Pass {
        run.outcome = Outcome::Fail("the guest script did not finish (see console.log)".into());
    }
    run
}

/// Says which Debian packages are missing (and that `./x setup` installs them).
fn check_host() -> Result<()> {
    if !crate::is_root()? {
        bail!(
            "vm-test needs root: the guest runs the daemon and the smoke suite as the user \
             who started it, and they need root there"
        );
    }
    let missing: Vec<&str> = HOST_PACKAGES
        .iter()
        .copied()
        .filter(|p| output_of("dpkg-query", &["-W", "-f=${Status}", p]) != "install ok installed")
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing Debian packages for vm-test: {} (`./x setup` installs them, or \
             apt-get install {})",
            missing.join(" "),
            missing.join(" ")
        );
    }
    Ok(())
}

/// An exclusive lock on `<cache>/lock`, held until the returned file closes: two runs at once
/// would share the cache's downloads and the results folders (and each guest takes 2 GiB).
fn one_at_a_time(cache: &Path) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd as _;
    let path = cache.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    // SAFETY: flock(2) on a descriptor we own; no memory is passed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        eprintln!(
            "xtask: vm-test: waiting for another vm-test ({})",
            path.display()
        );
        // SAFETY: as above; blocks until the other run's file closes.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            let e = std::io::Error::last_os_error();
            bail!("lock {}: {e}", path.display());
        }
    }
    Ok(file)
}

/// `${XDG_CACHE_HOME:-$HOME/.cache}/limiter/vm`.
fn cache_dir() -> Result<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .context("neither XDG_CACHE_HOME nor HOME is set")?;
    let dir = base.join("limiter/vm");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

/// The folder each guest writes into (`<target>/vm-test/<release>/`).
fn results_root() -> PathBuf {
    target_dir().join("vm-test")
}

fn commit() -> String {
    let mut commit = output_of("git", &["rev-parse", "--short", "HEAD"]);
    if !output_of("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty() {
        commit += "-dirty";
    }
    commit
}

fn output_of(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .current_dir(root())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Runs a tool whose output only matters when it fails: shown then, with the command.
fn run_quiet(cmd: &mut Command) -> Result<()> {
    let shown = format!(
        "{} {}",
        cmd.get_program().display(),
        cmd.get_args()
            .map(|a| a.display().to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = cmd
        .output()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !out.status.success() {
        bail!(
            "`{shown}` failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_is_known_once_and_parses() {
        for k in KERNELS {
            assert_eq!(parse_series(k.series).unwrap().series, k.series);
            assert_eq!(KERNELS.iter().filter(|o| o.series == k.series).count(), 1);
        }
        assert!(
            parse_series("4.19")
                .unwrap_err()
                .contains("5.10, 6.1, 6.12")
        );
    }

    #[test]
    fn only_the_kernel_below_the_minimum_may_be_unsupported() {
        for k in KERNELS {
            let old = k.series == "5.10";
            assert_eq!(k.expect == Expect::PassOrUnsupported, old, "{k:?}");
        }
    }
}
