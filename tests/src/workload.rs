//! A CPU-bound workload for overload tests, and the client side that loads and measures it.
//!
//! - [`BusyServer`]: the `busy-server` binary (tests/src/bin/busy-server.rs) run inside a pod's
//!   network namespace and inside a [`CpuCgroup`]: for each accepted connection a thread burns
//!   a fixed amount of *CPU time* (thread CPU clock, so a throttled server takes longer wall
//!   time for the same work), writes one byte and closes. Under a quota, completion time grows
//!   with concurrency, as in a real overloaded service.
//! - [`request`]: one client request (connect, wait for the byte, close), classified.
//! - [`Flood`]: `concurrency` workers in a loop of requests from a pod, started over a ramp,
//!   with live counters (for timelines and "time to first refusal") and every request kept.
//! - [`Prober`]: a probe every `interval`, each on its own thread, measuring completion time.

use std::fs::File;
use std::io::{self, BufRead, BufReader, ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use socket2::{Domain, Protocol, Socket, Type};

use crate::cgroup::CpuCgroup;
use crate::measure::percentile;
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

/// How one request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Connected and received the byte.
    Completed,
    /// connect() failed with ECONNREFUSED (a RST, or the client-side refusal in `connect()`).
    Refused,
    /// No byte (or no connection) within the timeout.
    TimedOut,
    /// Cut short because its load generator was stopped (not a result of the server).
    Abandoned,
    /// Anything else, described.
    Failed(String),
}

/// One request: when it started (from its generator's start), how it ended and how long it took.
#[derive(Clone, Debug)]
pub struct Request {
    /// Start, from the epoch of the [`Flood`] or [`Prober`] that made it.
    pub at: Duration,
    /// From the start of connect() to the byte, the refusal, the timeout or the abandon.
    pub elapsed: Duration,
    /// connect() latency, if it connected.
    pub connect: Option<Duration>,
    pub outcome: Outcome,
}

impl Request {
    /// When it ended, from the epoch.
    pub fn done_at(&self) -> Duration {
        self.at + self.elapsed
    }

    pub fn completed(&self) -> bool {
        self.outcome == Outcome::Completed
    }
}

/// Slice in which a waiting request checks its generator's stop flag.
const ABORT_POLL: Duration = Duration::from_millis(50);

/// One request to `addr` from the calling thread's network namespace: connect, wait for one
/// byte, close; all within `timeout`. `abort`, when set, cuts the wait for the byte short
/// ([`Outcome::Abandoned`]). `at` is stored as is.
pub fn request(
    addr: SocketAddr,
    timeout: Duration,
    at: Duration,
    abort: Option<&AtomicBool>,
) -> Request {
    let start = Instant::now();
    let done = |outcome: Outcome, connect: Option<Duration>| Request {
        at,
        elapsed: start.elapsed(),
        connect,
        outcome,
    };
    let socket = match Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)) {
        Ok(s) => s,
        Err(e) => return done(Outcome::Failed(format!("socket: {e}")), None),
    };
    match socket.connect_timeout(&addr.into(), timeout) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => return done(Outcome::Refused, None),
        Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
            return done(Outcome::TimedOut, None);
        }
        Err(e) => return done(Outcome::Failed(format!("connect: {e}")), None),
    }
    let connect = Some(start.elapsed());
    let mut stream = TcpStream::from(socket);
    let mut byte = [0u8; 1];
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            return done(Outcome::TimedOut, connect);
        }
        if abort.is_some_and(|a| a.load(Ordering::SeqCst)) {
            return done(Outcome::Abandoned, connect);
        }
        let slice = if abort.is_some() {
            left.min(ABORT_POLL)
        } else {
            left
        };
        if let Err(e) = stream.set_read_timeout(Some(slice)) {
            return done(Outcome::Failed(format!("set_read_timeout: {e}")), connect);
        }
        match stream.read(&mut byte) {
            Ok(1..) => return done(Outcome::Completed, connect),
            Ok(0) => {
                return done(
                    Outcome::Failed("closed by the server before the byte".into()),
                    connect,
                );
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return done(Outcome::Failed(format!("read: {e}")), connect),
        }
    }
}

/// One request from inside `ns` (see [`request`]), `at` zero.
pub fn probe(ns: &NetNs, addr: SocketAddr, timeout: Duration) -> Request {
    ns.enter(|| request(addr, timeout, Duration::ZERO, None))
}

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

/// What a [`Flood`] does.
#[derive(Clone, Debug)]
pub struct FloodConfig {
    /// Workers, each making one request at a time.
    pub concurrency: usize,
    /// Workers start evenly spread over this time (zero: all at once).
    pub ramp: Duration,
    /// Per request, connect and byte together. A worker that times out abandons the request
    /// (the server keeps working on it, as servers do) and makes a new one: a retry storm.
    pub timeout: Duration,
    /// Pause after a refusal or a failure before the next request (a client's back-off).
    pub backoff: Duration,
    /// Pause after a completed or timed-out request (zero: a closed loop).
    pub think: Duration,
    /// Workers stop by themselves after this, even if nobody calls [`Flood::stop`].
    pub max_duration: Duration,
    /// Open loop instead: start this many requests per second, evenly spaced, whatever becomes
    /// of the earlier ones (each on its own thread, at most `concurrency` at once; an arrival
    /// that finds that many in flight is counted as skipped), as independent users do.
    /// `ramp`, `backoff` and `think` are then unused.
    pub rate: Option<f64>,
}

impl Default for FloodConfig {
    fn default() -> Self {
        Self {
            concurrency: 50,
            ramp: Duration::from_secs(1),
            timeout: Duration::from_secs(3),
            backoff: Duration::from_millis(50),
            think: Duration::ZERO,
            max_duration: Duration::from_secs(30),
            rate: None,
        }
    }
}

/// Live counters of a flood.
#[derive(Default)]
struct FloodStats {
    started: AtomicU64,
    completed: AtomicU64,
    refused: AtomicU64,
    timed_out: AtomicU64,
    failed: AtomicU64,
    /// Open-loop arrivals not started: `concurrency` requests were in flight.
    skipped: AtomicU64,
    /// Requests connected and waiting for their byte now.
    waiting: AtomicU64,
    /// Microseconds from the epoch to the first refusal, plus one (0: none yet).
    first_refusal_us: AtomicU64,
}

/// A snapshot of a flood's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FloodCounts {
    pub started: u64,
    pub completed: u64,
    pub refused: u64,
    pub timed_out: u64,
    pub failed: u64,
    /// Open-loop arrivals not started: `concurrency` requests were in flight.
    pub skipped: u64,
    /// Connected requests waiting for their byte now.
    pub waiting: u64,
    /// When the first refusal came, from the flood's start.
    pub first_refusal: Option<Duration>,
}

/// Load from a pod: see [`FloodConfig`]. Stopped (and its threads joined) on drop.
pub struct Flood {
    epoch: Instant,
    stop: Arc<AtomicBool>,
    stats: Arc<FloodStats>,
    workers: Vec<JoinHandle<Vec<Request>>>,
}

impl Flood {
    /// Starts the workers inside `ns` against `addr`.
    pub fn start(ns: &NetNs, addr: SocketAddr, config: FloodConfig) -> Self {
        let epoch = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(FloodStats::default());
        if let Some(rate) = config.rate {
            assert!(rate > 0.0, "an open-loop rate is positive, got {rate}");
            let (stop2, stats2, path) = (Arc::clone(&stop), Arc::clone(&stats), ns.path());
            let dispatcher = std::thread::Builder::new()
                .name("flood-open-loop".into())
                .spawn(move || open_loop(epoch, &path, addr, &config, rate, &stop2, &stats2))
                .expect("spawn the flood dispatcher");
            return Self {
                epoch,
                stop,
                stats,
                workers: vec![dispatcher],
            };
        }
        let n = config.concurrency.max(1);
        let workers = (0..n)
            .map(|i| {
                let (stop, stats, config) = (Arc::clone(&stop), Arc::clone(&stats), config.clone());
                let path = ns.path();
                let delay = config.ramp.mul_f64(i as f64 / n as f64);
                std::thread::Builder::new()
                    .name(format!("flood-{i}"))
                    .stack_size(256 * 1024)
                    .spawn(move || {
                        join_netns(&path);
                        worker(epoch, delay, addr, &config, &stop, &stats)
                    })
                    .expect("spawn a flood worker")
            })
            .collect();
        Self {
            epoch,
            stop,
            stats,
            workers,
        }
    }

    /// Time since the flood started.
    pub fn elapsed(&self) -> Duration {
        self.epoch.elapsed()
    }

    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    pub fn counts(&self) -> FloodCounts {
        self.watch().counts()
    }

    /// A handle that reads the live counters from another thread, also after the flood stopped.
    pub fn watch(&self) -> FloodWatch {
        FloodWatch {
            stats: Arc::clone(&self.stats),
        }
    }

    /// Stops the workers (requests waiting for a byte are abandoned within 50 ms) and returns
    /// every request they made.
    pub fn stop(mut self) -> FloodReport {
        let requests = self.join();
        FloodReport {
            requests,
            duration: self.epoch.elapsed(),
        }
    }

    fn join(&mut self) -> Vec<Request> {
        self.stop.store(true, Ordering::SeqCst);
        let mut requests: Vec<Request> = self
            .workers
            .drain(..)
            .flat_map(|w| w.join().unwrap_or_default())
            .collect();
        requests.sort_by_key(|r| r.at);
        requests
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.join();
    }
}

/// The live counters of a [`Flood`], readable from any thread.
#[derive(Clone)]
pub struct FloodWatch {
    stats: Arc<FloodStats>,
}

impl FloodWatch {
    pub fn counts(&self) -> FloodCounts {
        let s = &self.stats;
        let first = s.first_refusal_us.load(Ordering::SeqCst);
        FloodCounts {
            started: s.started.load(Ordering::SeqCst),
            completed: s.completed.load(Ordering::SeqCst),
            refused: s.refused.load(Ordering::SeqCst),
            timed_out: s.timed_out.load(Ordering::SeqCst),
            failed: s.failed.load(Ordering::SeqCst),
            skipped: s.skipped.load(Ordering::SeqCst),
            waiting: s.waiting.load(Ordering::SeqCst),
            first_refusal: (first > 0).then(|| Duration::from_micros(first - 1)),
        }
    }
}

fn worker(
    epoch: Instant,
    delay: Duration,
    addr: SocketAddr,
    config: &FloodConfig,
    stop: &AtomicBool,
    stats: &FloodStats,
) -> Vec<Request> {
    let mut done = Vec::new();
    if !sleep_unless(stop, delay) {
        return done;
    }
    while !stop.load(Ordering::SeqCst) && epoch.elapsed() < config.max_duration {
        let r = counted_request(epoch, addr, config.timeout, stop, stats);
        let pause = match &r.outcome {
            Outcome::Completed | Outcome::TimedOut => config.think,
            Outcome::Refused | Outcome::Failed(_) => config.backoff,
            Outcome::Abandoned => Duration::ZERO,
        };
        done.push(r);
        if !sleep_unless(stop, pause) {
            break;
        }
    }
    done
}

/// One request of a flood, counted in `stats` as it starts and ends.
fn counted_request(
    epoch: Instant,
    addr: SocketAddr,
    timeout: Duration,
    stop: &AtomicBool,
    stats: &FloodStats,
) -> Request {
    stats.started.fetch_add(1, Ordering::SeqCst);
    // `waiting` counts the request from its start: a refusal takes microseconds.
    stats.waiting.fetch_add(1, Ordering::SeqCst);
    let r = request(addr, timeout, epoch.elapsed(), Some(stop));
    stats.waiting.fetch_sub(1, Ordering::SeqCst);
    let counter = match &r.outcome {
        Outcome::Completed => Some(&stats.completed),
        Outcome::Refused => {
            let us = u64::try_from(r.done_at().as_micros()).unwrap_or(u64::MAX - 1);
            let _ = stats.first_refusal_us.compare_exchange(
                0,
                us + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
            Some(&stats.refused)
        }
        Outcome::TimedOut => Some(&stats.timed_out),
        Outcome::Abandoned => None,
        Outcome::Failed(_) => Some(&stats.failed),
    };
    if let Some(c) = counter {
        c.fetch_add(1, Ordering::SeqCst);
    }
    r
}

/// The open-loop flood: a request every 1/`rate` s on a thread of its own.
fn open_loop(
    epoch: Instant,
    netns: &Path,
    addr: SocketAddr,
    config: &FloodConfig,
    rate: f64,
    stop: &Arc<AtomicBool>,
    stats: &Arc<FloodStats>,
) -> Vec<Request> {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut running: Vec<JoinHandle<Request>> = Vec::new();
    let mut done = Vec::new();
    let mut next = Instant::now();
    while !stop.load(Ordering::SeqCst) && epoch.elapsed() < config.max_duration {
        let (finished, still): (Vec<_>, Vec<_>) =
            running.into_iter().partition(JoinHandle::is_finished);
        running = still;
        done.extend(finished.into_iter().filter_map(|h| h.join().ok()));
        if running.len() < config.concurrency.max(1) {
            let (stop, counters, path, timeout) = (
                Arc::clone(stop),
                Arc::clone(stats),
                netns.to_owned(),
                config.timeout,
            );
            let spawned = std::thread::Builder::new()
                .name("flood-request".into())
                .stack_size(256 * 1024)
                .spawn(move || {
                    join_netns(&path);
                    counted_request(epoch, addr, timeout, &stop, &counters)
                });
            match spawned {
                Ok(h) => running.push(h),
                Err(_) => {
                    stats.skipped.fetch_add(1, Ordering::SeqCst);
                }
            }
        } else {
            stats.skipped.fetch_add(1, Ordering::SeqCst);
        }
        next += interval;
        if !sleep_unless(stop, next.saturating_duration_since(Instant::now())) {
            break;
        }
    }
    done.extend(running.into_iter().filter_map(|h| h.join().ok()));
    done
}

/// Every request of a stopped flood, sorted by start.
#[derive(Debug)]
pub struct FloodReport {
    pub requests: Vec<Request>,
    /// From the flood's start to its stop.
    pub duration: Duration,
}

impl FloodReport {
    pub fn count(&self, outcome: &Outcome) -> usize {
        self.requests
            .iter()
            .filter(|r| &r.outcome == outcome)
            .count()
    }

    pub fn failures(&self) -> Vec<String> {
        self.requests
            .iter()
            .filter_map(|r| match &r.outcome {
                Outcome::Failed(why) => Some(why.clone()),
                _ => None,
            })
            .collect()
    }

    /// Completion times of the requests that completed and started within `[from, to)`.
    pub fn completion_times(&self, from: Duration, to: Duration) -> Vec<Duration> {
        self.requests
            .iter()
            .filter(|r| r.completed() && r.at >= from && r.at < to)
            .map(|r| r.elapsed)
            .collect()
    }

    /// When the first refusal came, from the flood's start.
    pub fn first_refusal(&self) -> Option<Duration> {
        self.requests
            .iter()
            .filter(|r| r.outcome == Outcome::Refused)
            .map(Request::done_at)
            .min()
    }

    /// One line: counts, and completion times of the completed requests.
    pub fn summary(&self) -> String {
        let all = self.completion_times(Duration::ZERO, Duration::MAX);
        format!(
            "{} requests in {:.1} s: {} completed ({}), {} refused, {} timed out, {} abandoned, {} failed",
            self.requests.len(),
            self.duration.as_secs_f64(),
            all.len(),
            latency_summary(&all),
            self.count(&Outcome::Refused),
            self.count(&Outcome::TimedOut),
            self.count(&Outcome::Abandoned),
            self.failures().len(),
        )
    }
}

/// `p50 X ms, p90 Y ms, max Z ms` of `times` (or `none`).
pub fn latency_summary(times: &[Duration]) -> String {
    if times.is_empty() {
        return "none".into();
    }
    let ms = |d: Option<Duration>| d.unwrap_or_default().as_secs_f64() * 1000.0;
    format!(
        "p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms",
        ms(percentile(times, 50)),
        ms(percentile(times, 90)),
        ms(times.iter().max().copied())
    )
}

/// What a [`Prober`] does.
#[derive(Clone, Debug)]
pub struct ProberConfig {
    /// A new probe every `interval`, whether the previous one finished or not.
    pub interval: Duration,
    /// Per attempt, connect and byte together.
    pub timeout: Duration,
    /// Keep retrying a refused probe every 2 ms for this long (zero: one attempt), so a probe
    /// measures the completion time of work the service admits, not only the shedding.
    pub retry_refused_for: Duration,
    /// The prober stops starting probes by itself after this.
    pub max_duration: Duration,
}

/// One probe: its last attempt, and how many attempts before it were refused.
#[derive(Clone, Debug)]
pub struct Probe {
    /// When the probe's first attempt started, from the prober's epoch.
    pub at: Duration,
    pub refusals: u32,
    /// The last attempt (`at` of the attempt, from the epoch).
    pub last: Request,
}

impl Probe {
    /// Completion time (connect to byte) of the attempt that completed.
    pub fn completion(&self) -> Option<Duration> {
        self.last.completed().then_some(self.last.elapsed)
    }
}

/// Probes from a pod on a schedule, each on its own thread (a slow probe does not delay the
/// next). Stopped on drop (running probes abandoned).
pub struct Prober {
    epoch: Instant,
    stop: Arc<AtomicBool>,
    abort: Arc<AtomicBool>,
    results: Arc<Mutex<Vec<Probe>>>,
    scheduler: Option<JoinHandle<()>>,
}

impl Prober {
    /// Starts probing `addr` from `ns`; `epoch` is the instant the probes' times are measured
    /// from (e.g. the start of a test's timeline).
    pub fn start(ns: &NetNs, addr: SocketAddr, config: ProberConfig, epoch: Instant) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let abort = Arc::new(AtomicBool::new(false));
        let results = Arc::new(Mutex::new(Vec::new()));
        let scheduler = {
            let (stop, abort, results) =
                (Arc::clone(&stop), Arc::clone(&abort), Arc::clone(&results));
            let path = ns.path();
            std::thread::Builder::new()
                .name("prober".into())
                .spawn(move || {
                    let started = Instant::now();
                    let mut probes: Vec<JoinHandle<()>> = Vec::new();
                    let mut next = started;
                    while !stop.load(Ordering::SeqCst) && started.elapsed() < config.max_duration {
                        let (abort, results, path, probe_config) = (
                            Arc::clone(&abort),
                            Arc::clone(&results),
                            path.clone(),
                            config.clone(),
                        );
                        probes.push(
                            std::thread::Builder::new()
                                .name("probe".into())
                                .spawn(move || {
                                    join_netns(&path);
                                    let p = one_probe(epoch, addr, &probe_config, &abort);
                                    results
                                        .lock()
                                        .unwrap_or_else(PoisonError::into_inner)
                                        .push(p);
                                })
                                .expect("spawn a probe"),
                        );
                        next += config.interval;
                        let wait = next.saturating_duration_since(Instant::now());
                        if !sleep_unless(&stop, wait) {
                            break;
                        }
                    }
                    for p in probes {
                        let _ = p.join();
                    }
                })
                .expect("spawn the prober")
        };
        Self {
            epoch,
            stop,
            abort,
            results,
            scheduler: Some(scheduler),
        }
    }

    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// The probes finished so far, in order of completion.
    pub fn finished(&self) -> Vec<Probe> {
        self.watch().finished()
    }

    /// A handle that reads the finished probes from another thread.
    pub fn watch(&self) -> ProbeWatch {
        ProbeWatch {
            results: Arc::clone(&self.results),
        }
    }

    /// Stops starting probes, waits for the running ones to end (each within its timeout), and
    /// returns every probe sorted by start.
    pub fn finish(mut self) -> Vec<Probe> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(s) = self.scheduler.take() {
            let _ = s.join();
        }
        let mut all = self.finished();
        all.sort_by_key(|p| p.at);
        all
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.abort.store(true, Ordering::SeqCst);
        if let Some(s) = self.scheduler.take() {
            let _ = s.join();
        }
    }
}

/// The finished probes of a [`Prober`], readable from any thread.
#[derive(Clone)]
pub struct ProbeWatch {
    results: Arc<Mutex<Vec<Probe>>>,
}

impl ProbeWatch {
    /// The probes finished so far, in order of completion.
    pub fn finished(&self) -> Vec<Probe> {
        self.results
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

fn one_probe(epoch: Instant, addr: SocketAddr, config: &ProberConfig, abort: &AtomicBool) -> Probe {
    let at = epoch.elapsed();
    let mut refusals = 0;
    loop {
        let last = request(addr, config.timeout, epoch.elapsed(), Some(abort));
        let retry = last.outcome == Outcome::Refused
            && epoch.elapsed() < at + config.retry_refused_for
            && !abort.load(Ordering::SeqCst);
        if !retry {
            return Probe { at, refusals, last };
        }
        refusals += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

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

    #[test]
    fn requests_are_classified() {
        // A server on loopback that sends one byte to the first client and closes the second
        // without one.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            use std::io::Write;
            let (mut a, _) = listener.accept().unwrap();
            a.write_all(b"x").unwrap();
            drop(a);
            let (b, _) = listener.accept().unwrap();
            drop(b);
            // A third connection is accepted by the kernel and never answered.
            let (c, _) = listener.accept().unwrap();
            std::thread::sleep(Duration::from_millis(300));
            drop(c);
        });
        let t = Duration::from_secs(2);
        let ok = request(addr, t, Duration::ZERO, None);
        assert_eq!(ok.outcome, Outcome::Completed, "{ok:?}");
        assert!(ok.connect.is_some());
        let closed = request(addr, t, Duration::ZERO, None);
        assert!(matches!(closed.outcome, Outcome::Failed(_)), "{closed:?}");
        let slow = request(addr, Duration::from_millis(100), Duration::ZERO, None);
        assert_eq!(slow.outcome, Outcome::TimedOut, "{slow:?}");
        assert!(slow.elapsed >= Duration::from_millis(100));
        server.join().unwrap();
        // Nobody listens any more.
        let refused = request(addr, t, Duration::from_secs(1), None);
        assert_eq!(refused.outcome, Outcome::Refused, "{refused:?}");
        assert_eq!(refused.at, Duration::from_secs(1));
    }

    #[test]
    fn an_abort_cuts_the_wait_for_the_byte() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let abort = AtomicBool::new(true);
        let r = request(addr, Duration::from_secs(5), Duration::ZERO, Some(&abort));
        assert_eq!(r.outcome, Outcome::Abandoned);
        assert!(r.elapsed < Duration::from_secs(1));
        drop(listener);
    }

    #[test]
    fn reports_count_and_select_by_start() {
        let r = |at_ms: u64, ms: u64, outcome: Outcome| Request {
            at: Duration::from_millis(at_ms),
            elapsed: Duration::from_millis(ms),
            connect: None,
            outcome,
        };
        let report = FloodReport {
            requests: vec![
                r(0, 100, Outcome::Completed),
                r(10, 1, Outcome::Refused),
                r(500, 300, Outcome::Completed),
                r(600, 2, Outcome::Refused),
                r(700, 3000, Outcome::TimedOut),
            ],
            duration: Duration::from_secs(4),
        };
        assert_eq!(report.count(&Outcome::Completed), 2);
        assert_eq!(report.first_refusal(), Some(Duration::from_millis(11)));
        assert_eq!(
            report.completion_times(Duration::from_millis(100), Duration::from_secs(1)),
            [Duration::from_millis(300)]
        );
        assert!(
            report.summary().contains("2 completed"),
            "{}",
            report.summary()
        );
        assert_eq!(latency_summary(&[]), "none");
    }
}
