//! limiter's project tasks, usually run through `./x` (which installs the toolchain first):
//! `cargo xtask test` runs every test, `cargo xtask lint` every check CI makes.
mod bench;
mod module_cycles;
mod overload_plot;
mod vm;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

#[derive(Parser)]
#[command(about = "limiter's project tasks (usually run as ./x test, ./x lint)")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Unit tests, then the privileged integration tests against a freshly built daemon (root),
    /// then the kernel matrix in qemu (vm-test; --no-vm skips it).
    Test(TestArgs),
    /// rustfmt --check, and clippy -D warnings for the host crates and for the eBPF crate.
    Lint,
    /// limiter against iptables, nftables and no limiter, measured side by side (root):
    /// writes docs/benchmarks.md and its plots.
    Bench(bench::BenchArgs),
    /// Draws docs/bench/overload.png from the overload integration test's timeline (run it with
    /// LIMITER_OVERLOAD_TIMELINE=target/overload/timeline.csv).
    PlotOverload(overload_plot::PlotArgs),
    /// Boots Debian's 5.10, 6.1 and 6.12 kernels under qemu (virtme-ng, no KVM) and runs the
    /// release daemon and the kernel smoke suite in each (root); --write-docs writes
    /// docs/kernels.md.
    VmTest(vm::VmArgs),
}

#[derive(clap::Args)]
struct TestArgs {
    /// Build and test with the release profile.
    #[arg(long)]
    release: bool,
    /// When not root, skip the integration tests (with a notice) instead of failing.
    #[arg(long)]
    allow_skip_privileged: bool,
    /// Skip the kernel matrix (`cargo xtask vm-test`: Debian's 5.10, 6.1 and 6.12 kernels in
    /// qemu, about 3 minutes), which otherwise runs after the integration tests.
    #[arg(long)]
    no_vm: bool,
    /// Arguments for the integration test binary, after `--` (e.g. a test name filter).
    #[arg(last = true)]
    test_args: Vec<String>,
}

fn main() -> ExitCode {
    let result = match Cli::parse().task {
        Task::Test(args) => test(&args),
        Task::Lint => lint(),
        Task::Bench(args) => bench::run(&args),
        Task::PlotOverload(args) => overload_plot::run(&args),
        Task::VmTest(args) => vm::run_matrix(&args),
    };
    // Printed by hand: returning the error would add a backtrace whenever RUST_BACKTRACE is set,
    // burying the one line that says which step failed.
    if let Err(e) = result {
        eprintln!("xtask: FAILED: {e:#}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

const NOT_ROOT_BANNER: &str = "\
==============================================================================
xtask: the integration tests need root: they load eBPF programs, attach them to
       cgroups and create network namespaces. Run them as root: sudo ./x test
";

fn test(args: &TestArgs) -> Result<()> {
    let profile: &[&str] = if args.release { &["--release"] } else { &[] };

    // The eBPF crate only builds for bpfel-unknown-none (limiter-user's build.rs builds it), and
    // the integration tests need root and a built daemon: both are handled below, not here.
    run(cargo()
        .args(["test", "--workspace"])
        .args(["--exclude", "limiter-ebpf"])
        .args(["--exclude", "limiter-integration-tests"])
        .args(profile))?;

    run(cargo().args(["build", "-p", "limiter-user"]).args(profile))?;
    let bin = target_dir()
        .join(if args.release { "release" } else { "debug" })
        .join("limiter");
    if !bin.is_file() {
        bail!("the build succeeded but {} does not exist", bin.display());
    }

    if !is_root()? {
        // Loud, because a suite that silently skips its real tests would look green.
        let outcome = if args.allow_skip_privileged {
            "SKIPPED (--allow-skip-privileged): they did NOT run."
        } else {
            "(or pass --allow-skip-privileged to skip them)"
        };
        eprintln!("{NOT_ROOT_BANNER}       {outcome}\n{}", "=".repeat(78));
        if args.allow_skip_privileged {
            return Ok(());
        }
        bail!("integration tests not run: not root");
    }
    // The verdict tests first (seconds, no network): a program that decides wrongly is named
    // before the namespace tests start. They run again in the whole suite below.
    run(cargo()
        .args([
            "test",
            "-p",
            "limiter-integration-tests",
            "--test",
            "verdicts",
        ])
        .args(profile)
        .args(["--", "--test-threads=1"])
        .args(&args.test_args)
        .env("LIMITER_BIN", &bin))?;
    // One at a time: the tests share the node's cgroups, bpffs and iptables.
    run(cargo()
        .args(["test", "-p", "limiter-integration-tests"])
        .args(profile)
        .args(["--", "--test-threads=1"])
        .args(&args.test_args)
        .env("LIMITER_BIN", &bin))?;
    if args.no_vm {
        eprintln!("xtask: the kernel matrix (vm-test) was skipped (--no-vm)");
        return Ok(());
    }
    // The same daemon on the kernels users' nodes run, not only on this machine's.
    vm::run_matrix(&vm::VmArgs::whole_matrix())
}

fn lint() -> Result<()> {
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    for krate in [
        "limiter-user",
        "limiter-overload",
        "limiter-common",
        "limiter-ebpf",
    ] {
        module_cycles::check(&root().join(krate).join("src"))?;
    }
    // `--workspace` would include the eBPF crate, which does not build for the host.
    run(cargo()
        .args(["clippy", "--workspace", "--exclude", "limiter-ebpf"])
        .args(["--all-targets", "--", "-D", "warnings"]))?;
    // The eBPF crate, as aya-build compiles it: BPF target, core built from rust-src (which a
    // stable toolchain allows only with RUSTC_BOOTSTRAP=1), and panic=abort since there is no
    // unwinding without std. Run from its directory so only that package is checked. Its own
    // target dir: sharing target/release, it and `./x daemon` rebuilt each other's host crates.
    run(cargo()
        .current_dir(root().join("limiter-ebpf"))
        .env("RUSTC_BOOTSTRAP", "1")
        .args(["clippy", "--release", "--target", "bpfel-unknown-none"])
        .arg("--target-dir")
        .arg(target_dir().join("ebpf-clippy"))
        .args(["-Z", "build-std=core"])
        .args(["--", "-D", "warnings", "-C", "panic=abort"]))
}

/// The cargo that runs us, so the inner builds use the same (pinned) toolchain.
fn cargo() -> Command {
    let mut cmd =
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo")));
    cmd.current_dir(root());
    cmd
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    // Joining an absolute CARGO_TARGET_DIR replaces the root, as cargo itself resolves it.
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), |d| root().join(d))
}

/// Effective uid 0, read from /proc so that xtask needs no libc binding.
fn is_root() -> Result<bool> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .context("no effective uid in /proc/self/status")?;
    Ok(euid == "0")
}

/// Runs `cmd` after printing it (with the env vars we set), failing unless it succeeds.
fn run(cmd: &mut Command) -> Result<()> {
    let mut shown = String::new();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            shown += &format!("{}={} ", k.display(), v.display());
        }
    }
    shown += "cargo"; // the program is always cargo (maybe by its full path)
    for arg in cmd.get_args() {
        shown += &format!(" {}", arg.display());
    }
    match cmd.get_current_dir().filter(|d| *d != root()) {
        Some(dir) => eprintln!("xtask: (in {}) $ {shown}", dir.display()),
        None => eprintln!("xtask: $ {shown}"),
    }
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn test_args_after_double_dash_reach_the_integration_tests() {
        let cli = Cli::parse_from([
            "xtask",
            "test",
            "--release",
            "--",
            "conn_limit",
            "--nocapture",
        ]);
        let Task::Test(args) = cli.task else {
            panic!("not test")
        };
        assert!(args.release && !args.allow_skip_privileged);
        assert_eq!(args.test_args, ["conn_limit", "--nocapture"]);
    }

    #[test]
    fn is_root_agrees_with_id() {
        let id = Command::new("id").arg("-u").output().expect("id -u");
        let uid = String::from_utf8_lossy(&id.stdout);
        assert_eq!(is_root().unwrap(), uid.trim() == "0");
    }

    #[test]
    fn root_is_the_workspace() {
        assert!(root().join("Cargo.toml").is_file());
        assert!(root().join("limiter-ebpf").is_dir());
    }
}
