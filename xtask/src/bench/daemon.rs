//! The benchmark's own `limiter daemon`: private control socket and bpffs (like the test
//! harness's `Daemon`), plus what a benchmark needs on top: its pid for RSS and CPU, requests
//! sent straight to the control socket (no CLI process per rule), suspending it with its rules
//! kept, and proof on stop that none of its programs stays attached.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use limiter_integration_tests::{BpffsMount, wait_until};
use serde_json::{Value, json};

use limiter_integration_tests::bpf;

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const LOG_LINES: usize = 50;

/// The outcome of [`BenchDaemon::apply_many`].
pub struct Installed {
    pub set: usize,
    pub took: Duration,
    pub enomem_retries: usize,
}

pub struct BenchDaemon {
    bin: PathBuf,
    child: Option<Child>,
    dir: PathBuf,
    socket: PathBuf,
    /// The last lines the daemon printed (for errors).
    log: Arc<Mutex<VecDeque<String>>>,
    /// Ids of the links it pinned, checked gone after stop.
    links: Vec<u32>,
    bpffs: Option<BpffsMount>,
    /// How long the last start took until the daemon answered a request.
    pub started_in: Duration,
}

impl BenchDaemon {
    /// Starts `bin daemon` with a fresh private bpffs; waits until it answers.
    pub fn start(bin: &Path) -> Result<Self> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "limiter-bench-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let mut d = Self {
            bin: bin.to_owned(),
            child: None,
            socket: dir.join("limiter.sock"),
            bpffs: Some(BpffsMount::new(dir.join("bpffs"))),
            dir,
            log: Arc::default(),
            links: Vec::new(),
            started_in: Duration::ZERO,
        };
        d.spawn()?;
        Ok(d)
    }

    fn spawn(&mut self) -> Result<()> {
        let start = Instant::now();
        let mut child = Command::new(&self.bin)
            .arg("daemon")
            .arg("--socket")
            .arg(&self.socket)
            .arg("--bpffs")
            .arg(self.dir.join("bpffs"))
            // A state file, as a node daemon keeps: every change writes it, every start reads it.
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .env_remove("LIMITER_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("start {} daemon", self.bin.display()))?;
        for pipe in [
            Box::new(child.stdout.take().expect("piped")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("piped")),
        ] {
            let log = Arc::clone(&self.log);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
                    if log.len() == LOG_LINES {
                        log.pop_front();
                    }
                    log.push_back(line);
                }
            });
        }
        self.child = Some(child);
        let deadline = start + READY_TIMEOUT;
        loop {
            // A request that costs the same at any rule count (`limiter system get`), so the
            // time is the start's, not an answer's.
            let last = match self.request(&json!({"op": "system"})) {
                Ok(_) => break,
                Err(e) => format!("{e:#}"),
            };
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() >= deadline {
                bail!(
                    "limiter daemon did not answer ({exited:?}): {last}\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.started_in = start.elapsed();
        self.links = self.pinned_link_ids()?;
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn links_dir(&self) -> PathBuf {
        self.dir
            .join("bpffs/limiter")
            .join(limiter_common::names::pins::LINKS_DIR)
    }

    fn pinned_link_ids(&self) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(self.links_dir())?.flatten() {
            let link = bpf::obj_get(&entry.path())
                .with_context(|| format!("open pinned link {}", entry.path().display()))?;
            ids.push(bpf::link_info(&link)?.1);
        }
        Ok(ids)
    }

    pub fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.iter().map(|l| format!("  daemon: {l}\n")).collect()
    }

    /// One request on the control socket (one line of JSON each way); the answer's `data`.
    pub fn request(&self, req: &Value) -> Result<Value> {
        let answer = self.request_text(req)?;
        let answer: Value = serde_json::from_str(&answer).context("daemon answer")?;
        if answer["ok"] != json!(true) {
            bail!("daemon refused {req}: {}", answer["error"]);
        }
        Ok(answer["data"].clone())
    }

    /// The answer line to `req` as the daemon wrote it, unparsed (to time the daemon alone).
    pub fn request_text(&self, req: &Value) -> Result<String> {
        let mut s = UnixStream::connect(&self.socket)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        s.write_all(format!("{req}\n").as_bytes())?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        Ok(answer)
    }

    /// `limiter set DEST --max-connections MAX --side SIDE --mode MODE`.
    pub fn set(&self, dest: &str, max: u32, side: &str, mode: &str) -> Result<()> {
        let rule = json!({"destination": dest, "max_connections": max, "side": side, "mode": mode});
        self.request(&json!({"op": "set", "rule": rule})).map(drop)
    }

    /// `limiter ARGS...` against this daemon, through the CLI (for flags whose JSON form the
    /// benchmark does not spell itself, e.g. the breaker's). Its stdout.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.bin)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .env_remove("LIMITER_SOCKET")
            .output()
            .with_context(|| format!("run {}", self.bin.display()))?;
        if !out.status.success() {
            bail!(
                "limiter {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn delete(&self, dest: &str) -> Result<()> {
        self.request(&json!({"op": "delete", "destination": dest}))
            .map(drop)
    }

    /// Sends `rules` in `apply` requests of `batch` rules each (one transaction per request),
    /// stopping at `budget`. Returns how many were set, the wall time, and how many requests
    /// failed with ENOMEM and were sent again (see [`Self::retrying`]).
    pub fn apply_many(&self, rules: &[Value], batch: usize, budget: Duration) -> Result<Installed> {
        let (mut set, mut retries) = (0, 0);
        let start = Instant::now();
        for chunk in rules.chunks(batch.max(1)) {
            if start.elapsed() >= budget {
                break;
            }
            retries += self.retrying(&json!({"op": "apply", "rules": chunk}))?;
            set += chunk.len();
        }
        Ok(Installed {
            set,
            took: start.elapsed(),
            enomem_retries: retries,
        })
    }

    /// Sends `req` again (after 10 ms, at most 100 times) while the daemon answers ENOMEM: a
    /// burst of rule creations can exhaust the kernel's ready per-CPU memory for the rule
    /// counters (RULE_STATS) until the allocator populates more. Returns the retries.
    fn retrying(&self, req: &Value) -> Result<usize> {
        for retries in 0..100 {
            match self.request(req) {
                Err(e) if format!("{e:#}").contains("Cannot allocate memory") => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => return other.map(|_| retries),
            }
        }
        bail!("the daemon answered ENOMEM 100 times in a row")
    }

    /// Stops the process (SIGTERM, SIGKILL after 5 s). Its pinned links keep enforcing.
    fn stop_process(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: signalling our own child, not yet reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        if !wait_until(Duration::from_secs(5), || {
            child.try_wait().ok().flatten().is_some()
        }) {
            let _ = child.kill();
        }
        let _ = child.wait();
    }

    /// Detaches every link pinned in the links folder and removes its pin, then checks that
    /// none of this daemon's links is attached any more. Detaching explicitly (rather than
    /// only dropping the pins) works even when another process's mount namespace still holds
    /// a copy of the bpffs mount, and with it the pins.
    fn detach_links(&mut self) -> Result<()> {
        if let Ok(dir) = std::fs::read_dir(self.links_dir()) {
            for entry in dir.flatten() {
                if let Ok(link) = bpf::obj_get(&entry.path()) {
                    let _ = bpf::link_detach(&link);
                }
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let ids = std::mem::take(&mut self.links);
        if !wait_until(Duration::from_secs(5), || {
            ids.iter().all(|&id| !bpf::link_attached(id))
        }) {
            let left: Vec<_> = ids.iter().filter(|&&id| bpf::link_attached(id)).collect();
            bail!("limiter links {left:?} still attached 5 s after they were detached");
        }
        Ok(())
    }

    /// Stops the daemon and detaches its programs, keeping its maps (rules included) pinned,
    /// so that [`Self::resume`] adopts them: the node has no limiter while suspended.
    pub fn suspend(&mut self) -> Result<()> {
        self.stop_process();
        self.detach_links()
    }

    /// Starts the daemon again on the same bpffs: it adopts the rules kept in the maps.
    pub fn resume(&mut self) -> Result<()> {
        self.spawn()
    }

    /// Stops the daemon, unmounts its bpffs and checks that no program of it stays attached.
    pub fn shutdown(mut self) -> Result<()> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<()> {
        self.stop_process();
        let detached = self.detach_links();
        drop(self.bpffs.take());
        let _ = std::fs::remove_dir_all(&self.dir);
        detached
    }

    /// Resident set size of the daemon now, in MiB.
    pub fn rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some(kb / 1024.0)
    }

    /// CPU time (user + system) the daemon has used so far.
    pub fn cpu_time(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).ok()?;
        // Fields after the command name (which may hold spaces): utime is the 12th, stime 13th.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Some(Duration::from_nanos(ticks * 1_000_000_000 / hz))
    }
}

impl Drop for BenchDaemon {
    fn drop(&mut self) {
        if self.bpffs.is_some()
            && let Err(e) = self.teardown()
        {
            eprintln!("bench: warning: {e:#}");
        }
    }
}
