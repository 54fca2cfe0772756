//! A `limiter daemon` of a test's own: private socket, private bpffs, log kept for failures.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use tempfile::TempDir;

use crate::bpffs::BpffsMount;
use crate::cli::{describe_args, limiter_cli, limiter_command};
use crate::{cmd, status, wait_until};

/// How long the daemon may take to answer `limiter status` after it was started.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the daemon may take to exit after SIGTERM before it gets SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Default wait for counters to reach a value (they move within microseconds).
pub const COUNTER_TIMEOUT: Duration = Duration::from_secs(5);

/// A running daemon, started in the test process's own (root) network namespace: its cgroup
/// programs are global and see every namespace. Stopped on drop (SIGTERM, then SIGKILL after
/// 5 s); if the test is panicking its whole log is printed then.
pub struct Daemon {
    child: Child,
    log: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    socket: PathBuf,
    /// The extra `limiter daemon` arguments, given again on a restart (as a real restart
    /// would: same unit, same flags).
    args: Vec<std::ffi::OsString>,
    /// How long a start (or restart) may take to answer `limiter status`.
    ready_timeout: Duration,
    /// Environment variables of the daemon (e.g. LIMITER_DISABLE_CAPABILITIES), kept across
    /// restarts like the arguments.
    env: Vec<(String, String)>,
    // Dropped in this order: the mount before the folder that holds it.
    bpffs: BpffsMount,
    _dir: TempDir,
}

impl Daemon {
    /// `limiter daemon --socket <tmp>/limiter.sock --bpffs <tmp>/bpffs`, ready to answer.
    pub fn start() -> Self {
        Self::start_with(&[] as &[&str])
    }

    /// Like [`Daemon::start`], with more arguments for `limiter daemon` (`--config FILE`).
    pub fn start_with<S: AsRef<OsStr>>(extra_args: &[S]) -> Self {
        Self::start_with_env(extra_args, &[])
    }

    /// Like [`Daemon::start_with`], with environment variables for the daemon, e.g.
    /// `LIMITER_DISABLE_CAPABILITIES=seed_iterator` to run a degraded path on any kernel.
    pub fn start_with_env<S: AsRef<OsStr>>(extra_args: &[S], env: &[(&str, &str)]) -> Self {
        let mut daemon = Self::spawn_with(extra_args, env, READY_TIMEOUT);
        // The guard owns the child: a failure here still stops it and prints its log.
        if let Err(reason) = daemon.try_wait_ready() {
            panic!("{reason}; its log follows");
        }
        daemon
    }

    /// Like [`Daemon::start_with`], but a daemon that exits or does not answer within
    /// `ready_timeout` is an error carrying its log rather than a panic (for a harness that
    /// reports a kernel where the daemon cannot start). Restarts wait as long.
    pub fn try_start_with<S: AsRef<OsStr>>(
        extra_args: &[S],
        ready_timeout: Duration,
    ) -> Result<Self, StartFailure> {
        let mut daemon = Self::spawn_with(extra_args, &[], ready_timeout);
        match daemon.try_wait_ready() {
            Ok(()) => Ok(daemon),
            Err(reason) => {
                daemon.stop();
                let exit_code = daemon
                    .child
                    .try_wait()
                    .ok()
                    .flatten()
                    .and_then(|s| s.code());
                Err(StartFailure {
                    reason,
                    exit_code,
                    log: daemon.log(),
                })
            }
        }
    }

    fn spawn_with<S: AsRef<OsStr>>(
        extra_args: &[S],
        env: &[(&str, &str)],
        ready_timeout: Duration,
    ) -> Self {
        let (dir, socket, bpffs) = isolation();
        let log = Arc::new(Mutex::new(String::new()));
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (child, readers) = spawn(&socket, bpffs.path(), extra_args, &env, &log);
        Self {
            child,
            log,
            readers,
            socket,
            args: extra_args.iter().map(|a| a.as_ref().to_owned()).collect(),
            ready_timeout,
            env,
            bpffs,
            _dir: dir,
        }
    }

    /// Kills the daemon with SIGKILL (a crash: it cleans up nothing), runs `while_down` while
    /// no daemon runs, then starts a new one on the same socket and pins, which must adopt what
    /// the first one left in the kernel.
    pub fn crash_and_restart(&mut self, while_down: impl FnOnce()) {
        self.restart_after(Signal::SIGKILL, while_down);
    }

    /// Stops the daemon with `signal` (SIGTERM: an orderly stop, as in an upgrade; SIGKILL: a
    /// crash), runs `while_down`, then starts a new daemon on the same socket and pins. The
    /// new one loads its programs afresh and swaps them into the pinned links.
    pub fn restart_after(&mut self, signal: Signal, while_down: impl FnOnce()) {
        let pid = Pid::from_raw(self.child.id() as i32);
        kill(pid, signal).expect("signal the daemon");
        let status = wait_exit(&mut self.child, STOP_TIMEOUT)
            .unwrap_or_else(|| panic!("daemon still running {STOP_TIMEOUT:?} after {signal}"));
        self.note(format!("---- daemon stopped by {signal} ({status}) ----"));
        while_down();
        let (child, readers) = spawn(
            &self.socket,
            self.bpffs.path(),
            &self.args,
            &self.env,
            &self.log,
        );
        self.child = child;
        self.readers.extend(readers);
        self.note("---- daemon restarted on the same pins ----".into());
        if let Err(reason) = self.try_wait_ready() {
            panic!("{reason}; its log follows");
        }
    }

    /// Waits until the daemon answers `limiter status`; the reason if it exits or times out.
    fn try_wait_ready(&mut self) -> Result<(), String> {
        let timeout = self.ready_timeout;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll daemon process") {
                return Err(format!(
                    "limiter daemon exited ({status}) before it answered `status`"
                ));
            }
            let out = self.cli(["status"]);
            if out.status.success() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "limiter daemon did not answer `limiter status --socket {}` within {timeout:?}; \
                     last error: {}",
                    self.socket.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn bpffs(&self) -> &Path {
        self.bpffs.path()
    }

    /// Everything the daemon printed so far (stdout and stderr, in arrival order).
    pub fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// `limiter <args>` against this daemon's socket; returns the output whatever the status.
    pub fn cli<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        limiter_cli(&self.socket, args)
    }

    /// `limiter <args>`, which must succeed; returns its stdout.
    #[track_caller]
    pub fn cli_ok<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "`{}` failed ({}): {}",
            describe_args(args),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        String::from_utf8(out.stdout).expect("limiter prints UTF-8")
    }

    /// `limiter <args>` parsed as JSON.
    #[track_caller]
    pub fn cli_json<S: AsRef<OsStr>>(&self, args: &[S]) -> Value {
        let text = self.cli_ok(args);
        match serde_json::from_str(&text) {
            Ok(json) => json,
            Err(e) => panic!(
                "`{}` printed invalid JSON ({e}): {text}",
                describe_args(args)
            ),
        }
    }

    /// `limiter set DEST ARGS...`, which must succeed, e.g.
    /// `daemon.set(dest, &["--max-connections", "5", "--side", "server"])`.
    #[track_caller]
    pub fn set(&self, dest: impl ToString, args: &[&str]) {
        let dest = dest.to_string();
        let mut full = vec!["set", dest.as_str()];
        full.extend_from_slice(args);
        self.cli_ok(&full);
    }

    /// `limiter set DEST --max-connections N`.
    #[track_caller]
    pub fn set_rule(&self, dest: SocketAddr, max_connections: u32) {
        self.set(dest, &["--max-connections", &max_connections.to_string()]);
    }

    /// `limiter status -o json`.
    #[track_caller]
    pub fn status_json(&self) -> Value {
        self.cli_json(&["status", "-o", "json"])
    }

    /// `limiter list -o json`.
    #[track_caller]
    pub fn list_json(&self) -> Value {
        self.cli_json(&["list", "-o", "json"])
    }

    /// The status entry of `dest`; panics (showing the whole status) if it is not listed.
    #[track_caller]
    pub fn dest_status(&self, dest: SocketAddr) -> Value {
        let status = self.status_json();
        match status::find_destination(&status, dest) {
            Some(entry) => entry.clone(),
            None => panic!("{dest} is not listed by `limiter status`: {status:#}"),
        }
    }

    /// Polls the status of `dest` until `check` accepts it and returns that status; panics after
    /// `timeout` with `what` and the last status seen.
    #[track_caller]
    pub fn wait_for_dest(
        &self,
        dest: SocketAddr,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut(&Value) -> bool,
    ) -> Value {
        let mut last = Value::Null;
        if wait_until(timeout, || {
            last = self.dest_status(dest);
            check(&last)
        }) {
            return last;
        }
        panic!("{dest}: expected {what} within {timeout:?}; last status: {last:#}");
    }

    /// Waits until `dest` counts exactly `inbound` and `outbound` active connections.
    #[track_caller]
    pub fn wait_for_active(&self, dest: SocketAddr, inbound: u64, outbound: u64) -> Value {
        let what = format!("inbound.active == {inbound} and outbound.active == {outbound}");
        self.wait_for_dest(dest, COUNTER_TIMEOUT, &what, |d| {
            status::counter(d, "inbound", "active") == inbound
                && status::counter(d, "outbound", "active") == outbound
        })
    }

    /// Lets the rule of `dest`, created while connections to it were open, count them the way
    /// this kernel can. Where the daemon seeds exactly (`seeding: exact`, the socket-storage
    /// iterator) there is nothing to do: they must be counted with no traffic at all. Where it
    /// reports `next_packet` (a kernel that refuses BPF iterators), each connection is counted
    /// when it next carries a packet, so `send_a_packet_on_each` runs. The caller then waits
    /// for the counts it expects, whichever route ran.
    #[track_caller]
    pub fn let_rule_count_open(&self, dest: SocketAddr, send_a_packet_on_each: impl FnOnce()) {
        if self.seeds_on_next_packet(dest) {
            self.note(format!(
                "{dest}: seeding next_packet: a packet on each open connection"
            ));
            send_a_packet_on_each();
        }
    }

    /// One byte on each of `conns`, for a server that reads and discards (a hold server):
    /// what [`Daemon::let_rule_count_open`] needs on a `next_packet` kernel.
    pub fn one_byte_on_each(conns: &mut [std::net::TcpStream]) {
        for c in conns.iter_mut() {
            std::io::Write::write_all(c, b"n").expect("write one byte on an open connection");
        }
    }

    /// Whether the rule of `dest` counts the connections open at its creation only when they
    /// next carry a packet (`seeding: next_packet`) rather than at once (`exact`).
    #[track_caller]
    pub fn seeds_on_next_packet(&self, dest: SocketAddr) -> bool {
        let d = self.dest_status(dest);
        match d["seeding"].as_str() {
            Some("exact") => false,
            Some("next_packet") => true,
            other => panic!("{dest}: unexpected `seeding` {other:?} in limiter status: {d:#}"),
        }
    }

    /// Adds a harness line to the daemon's log (printed when a test fails).
    fn note(&self, line: String) {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.push_str("[harness] ");
        log.push_str(&line);
        log.push('\n');
    }

    fn stop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        let mut note = match self.child.try_wait() {
            Ok(Some(status)) => format!("daemon had already exited ({status})"),
            _ => {
                let _ = kill(pid, Signal::SIGTERM);
                match wait_exit(&mut self.child, STOP_TIMEOUT) {
                    Some(status) => format!("daemon exited on SIGTERM ({status})"),
                    None => {
                        let _ = self.child.kill();
                        let status = self
                            .child
                            .wait()
                            .map(|s| s.to_string())
                            .unwrap_or_else(|e| e.to_string());
                        let note = format!(
                            "daemon ignored SIGTERM for {STOP_TIMEOUT:?}; killed ({status})"
                        );
                        eprintln!("warning: {note}");
                        note
                    }
                }
            }
        };
        // The pipes close when the process is gone; let the readers take the last lines.
        wait_until(Duration::from_secs(1), || {
            self.readers.iter().all(JoinHandle::is_finished)
        });
        note.insert_str(0, "[harness] ");
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_str(&(note + "\n"));
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "---- limiter daemon log (socket {}) ----\n{}---- end of daemon log ----",
                self.socket.display(),
                self.log()
            );
        }
    }
}

/// Why [`Daemon::try_start_with`] got no running daemon.
#[derive(Debug)]
pub struct StartFailure {
    /// It exited (with this status), or it did not answer in time.
    pub reason: String,
    /// The daemon's exit code, if it exited by itself (not killed by a signal).
    pub exit_code: Option<i32>,
    /// Everything it printed, harness notes included.
    pub log: String,
}

impl StartFailure {
    /// The line of the log that says what went wrong: the first `error...` line (the daemon
    /// prints its fatal error as `error: ...`) or `ERROR` log record, else the last line.
    pub fn first_error_line(&self) -> &str {
        let lines = || self.log.lines().map(str::trim).filter(|l| !l.is_empty());
        lines()
            .find(|l| {
                !l.starts_with("[harness]") && (l.starts_with("error") || l.contains("ERROR"))
            })
            .or_else(|| lines().rfind(|l| !l.starts_with("[harness]")))
            .unwrap_or(&self.reason)
    }

    /// The verifier's own verdict when it rejected a program: the line before the
    /// `verification time` summary that ends its log (e.g. `R7 invalid mem access 'scalar'`).
    pub fn verifier_reason(&self) -> Option<&str> {
        let lines: Vec<&str> = self.log.lines().map(str::trim).collect();
        let summary = lines
            .iter()
            .position(|l| l.starts_with("verification time"))?;
        let before = lines[..summary].iter().rev().find(|l| !l.is_empty())?;
        (!before.starts_with("error")).then_some(*before)
    }
}

/// Spawns `limiter daemon --socket SOCKET --bpffs BPFFS EXTRA...`, its output copied into `log`.
fn spawn<S: AsRef<OsStr>>(
    socket: &Path,
    bpffs: &Path,
    extra_args: &[S],
    env: &[(String, String)],
    log: &Arc<Mutex<String>>,
) -> (Child, Vec<JoinHandle<()>>) {
    let mut command = limiter_command();
    command
        .envs(env.iter().map(|(k, v)| (k, v)))
        .arg("daemon")
        .arg("--socket")
        .arg(socket)
        .arg("--bpffs")
        .arg(bpffs)
        .args(extra_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("spawn `{}`: {e}", cmd::describe(&command)));
    let readers = vec![
        spawn_log_reader(child.stdout.take().expect("piped stdout"), Arc::clone(log)),
        spawn_log_reader(child.stderr.take().expect("piped stderr"), Arc::clone(log)),
    ];
    (child, readers)
}

/// A private folder with the socket path and a bpffs mounted in it.
fn isolation() -> (TempDir, PathBuf, BpffsMount) {
    let dir = tempfile::Builder::new()
        .prefix("limiter-test-")
        .tempdir()
        .expect("create a temp dir");
    let socket = dir.path().join("limiter.sock");
    let bpffs = BpffsMount::new(dir.path().join("bpffs"));
    (dir, socket, bpffs)
}

fn spawn_log_reader(pipe: impl Read + Send + 'static, log: Arc<Mutex<String>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
            log.push_str(&line);
            log.push('\n');
        }
    })
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let mut status = None;
    wait_until(timeout, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    status
}

/// How a `limiter daemon` that had to refuse to start ended.
pub struct DaemonExit {
    pub output: Output,
    pub elapsed: Duration,
}

/// Runs `limiter daemon <args>` (isolated like [`Daemon`]: private socket and bpffs) expecting it
/// to exit by itself within `timeout`. If it is still running then, it is killed and the test
/// fails: a daemon that should have refused to start did start.
pub fn run_daemon_to_exit<S: AsRef<OsStr>>(args: &[S], timeout: Duration) -> DaemonExit {
    run_daemon_to_exit_env(args, &[], timeout)
}

/// [`run_daemon_to_exit`] with environment variables for the daemon.
pub fn run_daemon_to_exit_env<S: AsRef<OsStr>>(
    args: &[S],
    env: &[(&str, &str)],
    timeout: Duration,
) -> DaemonExit {
    let (_dir, socket, bpffs) = isolation();
    let mut command: Command = limiter_command();
    command
        .envs(env.iter().copied())
        .arg("daemon")
        .arg("--socket")
        .arg(&socket)
        .arg("--bpffs")
        .arg(bpffs.path())
        .args(args);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let described = cmd::describe(&command);
    let start = Instant::now();
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("spawn `{described}`: {e}"));
    let pid = Pid::from_raw(child.id() as i32);
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    let (output, elapsed) = match finished.recv_timeout(timeout) {
        Ok(output) => (output, start.elapsed()),
        Err(_) => {
            // Not reaped yet (wait_with_output is still waiting), so the pid is still the daemon's.
            let _ = kill(pid, Signal::SIGKILL);
            let output = finished.recv().expect("waiter thread reports");
            let output = output.unwrap_or_else(|e| panic!("wait for `{described}`: {e}"));
            panic!(
                "`{described}` was still running after {timeout:?} (killed); it should have refused to start.\n\
                 stdout: {}\nstderr: {}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    };
    let output = output.unwrap_or_else(|e| panic!("wait for `{described}`: {e}"));
    drop(bpffs);
    DaemonExit { output, elapsed }
}

#[cfg(test)]
mod tests {
    use super::StartFailure;

    fn failure(log: &str) -> StartFailure {
        StartFailure {
            reason: "limiter daemon exited (exit status: 1) before it answered `status`".into(),
            exit_code: Some(1),
            log: log.into(),
        }
    }

    #[test]
    fn first_error_line_and_verifier_reason_of_a_rejected_program() {
        let f = failure(
            "2026-12-05T07:35:53Z  INFO limiter::daemon: starting\n\
             error: cannot start the dataplane: load program cgroup_ingress: Permission denied. Verifier output: 0: R1=ctx()\n\
             4106: (db) r1 = atomic64_fetch_add((u64 *)(r7 +0), r1)\n\
             R7 invalid mem access 'scalar'\n\
             verification time 103004 usec\n\
             [harness] daemon had already exited (exit status: 1)\n",
        );
        assert!(
            f.first_error_line()
                .starts_with("error: cannot start the dataplane")
        );
        assert_eq!(f.verifier_reason(), Some("R7 invalid mem access 'scalar'"));
    }

    #[test]
    fn a_one_line_verifier_error_is_not_repeated_and_no_error_gives_the_last_line() {
        let f = failure(
            "error: load program sock_ops. Verifier output: BPF_STX uses reserved fields\n\
             verification time 1037 usec\n",
        );
        assert_eq!(f.verifier_reason(), None);
        let quiet = failure("INFO starting\nINFO still loading\n[harness] killed\n");
        assert_eq!(quiet.first_error_line(), "INFO still loading");
        assert_eq!(failure("").first_error_line(), failure("").reason);
    }
}
