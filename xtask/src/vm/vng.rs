//! virtme-ng: its virtualenv in the cache, and one guest boot with a deadline.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::run_quiet;

/// virtme-ng from PyPI, pinned: its command line and guest init change between releases.
pub const VIRTME_NG_VERSION: &str = "1.42";

/// The folder holding `vng`, in a virtualenv under the cache (built once per version; a venv
/// cannot be moved, so it is built in place and marked complete last).
pub fn ensure_venv(cache: &Path) -> Result<PathBuf> {
    let venv = cache.join(format!("venv-virtme-ng-{VIRTME_NG_VERSION}"));
    let bin = venv.join("bin");
    let complete = venv.join(".complete");
    if complete.is_file() && bin.join("vng").is_file() {
        return Ok(bin);
    }
    eprintln!(
        "xtask: vm-test: creating a virtualenv with virtme-ng {VIRTME_NG_VERSION} in {}",
        venv.display()
    );
    let _ = std::fs::remove_dir_all(&venv);
    run_quiet(Command::new("python3").args(["-m", "venv"]).arg(&venv))
        .context("python3 -m venv (on Debian: apt-get install python3-venv)")?;
    run_quiet(
        Command::new(bin.join("pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(format!("virtme-ng=={VIRTME_NG_VERSION}")),
    )?;
    std::fs::write(&complete, VIRTME_NG_VERSION)
        .with_context(|| format!("write {}", complete.display()))?;
    Ok(bin)
}

/// One boot: a kernel, the host folder shared read-write, and the command the guest runs.
pub struct Boot<'a> {
    pub vng_bin: &'a Path,
    pub vmlinuz: &'a Path,
    pub rwdir: &'a Path,
    pub exec: String,
    /// The guest's console (with `--verbose`, also the command's output) is written here.
    pub console: &'a Path,
    /// Lines of the console starting with this are echoed to stderr as they arrive.
    pub echo_prefix: &'a str,
    pub label: &'a str,
    pub timeout: Duration,
}

/// How a boot ended.
pub enum Ended {
    /// vng returned (whatever its status: the guest's results are in the rwdir).
    Exited,
    /// The deadline passed; qemu and vng were killed.
    TimedOut,
}

pub fn boot(b: &Boot) -> Result<Ended> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut path_with_venv = b.vng_bin.as_os_str().to_owned();
    path_with_venv.push(":");
    path_with_venv.push(path);
    let mut cmd = Command::new(b.vng_bin.join("vng"));
    cmd.arg("--run")
        .arg(b.vmlinuz)
        // qemu hangs with KVM on this machine kind: emulate (TCG).
        .arg("--disable-kvm")
        // Straight to 9p: virtme-ng otherwise waits for a virtiofsd that Debian 12's qemu does
        // not provide in a form it can start, then falls back to 9p anyway.
        .arg("--force-9p")
        .args(["--memory", "2G", "--cpus", "2"])
        // Without it the command's output is lost (no virtio-serial script port here).
        .arg("--verbose")
        .arg(format!("--rwdir={}", b.rwdir.display()))
        .arg("--exec")
        .arg(&b.exec)
        // vng runs virtme-run from PATH.
        .env("PATH", path_with_venv)
        .current_dir(crate::root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills qemu with it.
        .process_group(0);
    let mut child = cmd.spawn().context("start vng")?;
    let console = std::fs::File::create(b.console)
        .with_context(|| format!("create {}", b.console.display()))?;
    let readers: Vec<_> = [
        Box::new(child.stdout.take().expect("piped")) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().expect("piped")),
    ]
    .into_iter()
    .map(|pipe| {
        let mut console = console.try_clone().expect("clone the console file");
        let (prefix, label) = (b.echo_prefix.to_string(), b.label.to_string());
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(console, "{line}");
                // The guest console ends lines with \r.
                let text = line.trim_end_matches('\r');
                if text.starts_with(&prefix) {
                    eprintln!("xtask: vm-test [{label}] {text}");
                }
            }
        })
    })
    .collect();

    let deadline = Instant::now() + b.timeout;
    let ended = loop {
        if child.try_wait().context("wait for vng")?.is_some() {
            break Ended::Exited;
        }
        if Instant::now() >= deadline {
            // The whole group: vng, virtme-run, qemu. Only processes this call started.
            let group = -(child.id() as i32);
            // SAFETY: kill(2) with a process group id; no memory is involved.
            unsafe { libc::kill(group, libc::SIGKILL) };
            let _ = child.wait();
            break Ended::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for r in readers {
        let _ = r.join();
    }
    Ok(ended)
}

/// The guest's command line: the checked-in guest script with the results folder and the two
/// binaries (the guest shares the host's root file system, so host paths work there).
pub fn guest_command(script: &Path, out: &Path, limiter: &Path, smoke: &Path) -> Result<String> {
    let words = [script, out, limiter, smoke];
    for w in words {
        let s = w.to_str().context("a non-UTF-8 path")?;
        if s.chars()
            .any(|c| c.is_whitespace() || "'\"\\$`".contains(c))
        {
            bail!("path {s:?} cannot be passed to the guest's shell as it is");
        }
    }
    Ok(format!(
        "sh {} {} {} {}",
        script.display(),
        out.display(),
        limiter.display(),
        smoke.display()
    ))
}
