//! Adaptive overload protection (issue #4), end to end: a CPU-bound server in a pod, under a CPU
//! quota of its own cgroup, flooded from another pod. With `limiter set DEST --adaptive` the
//! daemon sees the workload's CPU above its threshold and has the kernel shed the connections
//! beyond `maxInflight` (reject: ECONNREFUSED or a RST), so the work it admits completes in a
//! small multiple of the unloaded time; without a rule completion time keeps growing; and a
//! daemon that dies leaves no service shed once the kernel's limit expires.
//!
//! Every test prints its figures (`--nocapture`) and a timeline sampled every 250 ms. With
//! `LIMITER_OVERLOAD_TIMELINE=FILE`, the adaptive test also writes its timeline as CSV
//! (`t_s,cpu,inflight,max_inflight,shed_total,shedding,probe_ms,flood`, for
//! docs/bench/overload.png: `cargo xtask plot-overload`)
//! and the test without a rule writes its own next to it (`FILE` with `-no-rule` before the
//! extension).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use limiter_integration_tests::cgroup::CpuCgroup;
use limiter_integration_tests::status::{find_destination, refused};
use limiter_integration_tests::workload::{
    BusyServer, Flood, FloodConfig, FloodWatch, Outcome, ProbeWatch, Prober, ProberConfig,
    latency_summary, probe,
};
use limiter_integration_tests::{
    Daemon, Outcomes, Testbed, limiter_cli, percentile, require_root, wait_until,
};
use serde_json::Value;

const BUSY_SERVER: &str = env!("CARGO_BIN_EXE_busy-server");
const PORT: u16 = 8080;
/// The workload's CPU quota, in CPUs: one of the machine's two cores, so the flood, the daemon
/// and the test keep the other.
const QUOTA_CPUS: f64 = 1.0;
/// CPU time each connection costs the server: the unloaded completion time.
const CPU_PER_CONNECTION: Duration = Duration::from_millis(50);
/// Flood workers (a closed loop each, with a timeout and a back-off after a refusal).
const FLOOD_CONCURRENCY: usize = 50;
/// The flood reaches full concurrency over this time, as real load ramps.
const FLOOD_RAMP: Duration = Duration::from_millis(1500);
const FLOOD_TIMEOUT: Duration = Duration::from_secs(1);
const FLOOD_BACKOFF: Duration = Duration::from_millis(50);
/// Sequential requests that measure the unloaded completion time and give the daemon's window
/// its first completed connections.
const WARM_UP: usize = 15;
const TICK: Duration = Duration::from_millis(250);

/// How long the adaptive test floods.
const FLOOD_DURATION: Duration = Duration::from_secs(7);

/// Pods: 1 floods, 2 probes, 3 serves.
const FLOOD_POD: u8 = 1;
const PROBE_POD: u8 = 2;
const SERVER_POD: u8 = 3;

/// A server pod running the busy server in its own CPU cgroup, two client pods, a daemon.
struct Setup {
    // Dropped in this order: the daemon, the server, its cgroup, the namespaces.
    daemon: Daemon,
    _server: BusyServer,
    cgroup: Arc<CpuCgroup>,
    bed: Testbed,
    dest: SocketAddr,
}

impl Setup {
    fn new() -> Self {
        let bed = Testbed::new(3);
        let dest = bed.pod(SERVER_POD).addr_v4(PORT);
        let cgroup = Arc::new(CpuCgroup::new("overload", QUOTA_CPUS));
        let server = BusyServer::start(
            BUSY_SERVER,
            bed.pod(SERVER_POD).ns(),
            &cgroup,
            dest,
            CPU_PER_CONNECTION,
        );
        let daemon = Daemon::start();
        Self {
            daemon,
            _server: server,
            cgroup,
            bed,
            dest,
        }
    }

    /// `limiter set DEST --adaptive --workload-cgroup CG` (reject mode, the defaults).
    fn set_adaptive(&self) {
        let cgroup = self.cgroup.path();
        self.daemon.set(
            self.dest,
            &["--adaptive", "--workload-cgroup", cgroup.as_str()],
        );
    }

    /// [`WARM_UP`] sequential requests, 100 ms apart (the workload's CPU stays well below any
    /// threshold); returns their median completion time, printed.
    fn warm_up(&self, label: &str) -> Duration {
        let mut times = Vec::new();
        for _ in 0..WARM_UP {
            let r = probe(
                self.bed.pod(PROBE_POD).ns(),
                self.dest,
                Duration::from_secs(3),
            );
            assert_eq!(
                r.outcome,
                Outcome::Completed,
                "{label}: an unloaded request did not complete: {r:?}"
            );
            times.push(r.elapsed);
            std::thread::sleep(Duration::from_millis(100));
        }
        let p50 = percentile(&times, 50).expect("warm-up requests");
        println!(
            "{label}: unloaded completion time over {WARM_UP} sequential requests: {} \
             ({CPU_PER_CONNECTION:?} of CPU each, quota {QUOTA_CPUS} CPU)",
            latency_summary(&times)
        );
        assert!(
            p50 < CPU_PER_CONNECTION * 4,
            "{label}: unloaded requests take {p50:?} for {CPU_PER_CONNECTION:?} of CPU: the \
             machine is too busy for this test"
        );
        p50
    }

    fn start_flood(&self) -> Flood {
        Flood::start(
            self.bed.pod(FLOOD_POD).ns(),
            self.dest,
            FloodConfig {
                concurrency: FLOOD_CONCURRENCY,
                ramp: FLOOD_RAMP,
                timeout: FLOOD_TIMEOUT,
                backoff: FLOOD_BACKOFF,
                think: Duration::ZERO,
                max_duration: Duration::from_secs(20),
                rate: None,
            },
        )
    }

    fn start_prober(&self, epoch: Instant, config: ProberConfig) -> Prober {
        Prober::start(self.bed.pod(PROBE_POD).ns(), self.dest, config, epoch)
    }

    /// Waits until the daemon has completed connections in its window (`max_inflight` set).
    fn wait_for_window_data(&self) -> Value {
        self.daemon.wait_for_dest(
            self.dest,
            Duration::from_secs(5),
            "max_inflight (the warm-up completed connections)",
            |d| d.get("max_inflight").and_then(Value::as_u64).is_some(),
        )
    }
}

/// The adaptive fields of one destination's status (absent or null: None).
#[derive(Clone, Debug, Default)]
struct Adaptive {
    cpu: Option<f64>,
    inflight: Option<u64>,
    max_pass: Option<f64>,
    min_rt_ms: Option<f64>,
    max_inflight: Option<u64>,
    shedding: Option<bool>,
    shed_total: Option<u64>,
}

impl Adaptive {
    fn of(d: &Value) -> Self {
        Self {
            cpu: d.get("cpu").and_then(Value::as_f64),
            inflight: d.get("inflight").and_then(Value::as_u64),
            max_pass: d.get("max_pass").and_then(Value::as_f64),
            min_rt_ms: d.get("min_rt_ms").and_then(Value::as_f64),
            max_inflight: d.get("max_inflight").and_then(Value::as_u64),
            shedding: d.get("shedding").and_then(Value::as_bool),
            shed_total: d.get("shed_total").and_then(Value::as_u64),
        }
    }
}

/// One row of a timeline.
#[derive(Clone, Debug, Default)]
struct Sample {
    t: Duration,
    /// The daemon's view (None when it did not answer, or has no such field).
    adaptive: Adaptive,
    /// The workload's CPU over the last tick, measured by the test from its cgroup, as a
    /// fraction of the quota.
    cgroup_cpu: f64,
    /// Completion time of the last probe that completed during this tick.
    probe: Option<Duration>,
    /// Flood counters (cumulative).
    flood_completed: u64,
    flood_refused: u64,
    flood_timed_out: u64,
}

/// Samples the daemon's status, the cgroup and the load every [`TICK`] on its own thread.
struct Timeline {
    stop: Arc<AtomicBool>,
    flood: Arc<std::sync::Mutex<Option<FloodWatch>>>,
    worker: Option<JoinHandle<Vec<Sample>>>,
}

impl Timeline {
    /// `socket`: the daemon's (read with `limiter status`, so it also runs while the daemon is
    /// down and a test holds the `Daemon` mutably).
    fn start(
        epoch: Instant,
        socket: PathBuf,
        dest: SocketAddr,
        cgroup: Arc<CpuCgroup>,
        probes: Option<ProbeWatch>,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flood: Arc<std::sync::Mutex<Option<FloodWatch>>> = Arc::default();
        let worker = {
            let (stop, flood) = (Arc::clone(&stop), Arc::clone(&flood));
            std::thread::spawn(move || {
                let mut samples = Vec::new();
                let mut last_usage = (Instant::now(), cgroup.usage());
                let mut seen_probes = 0;
                let mut next = Instant::now();
                // Bounded: no test runs a timeline for a minute.
                while !stop.load(Ordering::SeqCst) && epoch.elapsed() < Duration::from_secs(60) {
                    next += TICK;
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                    let t = epoch.elapsed();
                    let adaptive = status_of(&socket, dest)
                        .map(|d| Adaptive::of(&d))
                        .unwrap_or_default();
                    let (now, usage) = (Instant::now(), cgroup.usage());
                    let cgroup_cpu = (usage - last_usage.1).as_secs_f64()
                        / (now - last_usage.0).as_secs_f64()
                        / cgroup.cpus();
                    last_usage = (now, usage);
                    let finished = probes
                        .as_ref()
                        .map(ProbeWatch::finished)
                        .unwrap_or_default();
                    let probe = finished[seen_probes..]
                        .iter()
                        .rev()
                        .find_map(|p| p.completion());
                    seen_probes = finished.len();
                    let counts = flood
                        .lock()
                        .expect("flood watch lock")
                        .as_ref()
                        .map(FloodWatch::counts)
                        .unwrap_or_default();
                    samples.push(Sample {
                        t,
                        adaptive,
                        cgroup_cpu,
                        probe,
                        flood_completed: counts.completed,
                        flood_refused: counts.refused,
                        flood_timed_out: counts.timed_out,
                    });
                }
                samples
            })
        };
        Self {
            stop,
            flood,
            worker: Some(worker),
        }
    }

    /// From now on the timeline also records this flood's counters.
    fn watch_flood(&self, watch: FloodWatch) {
        *self.flood.lock().expect("flood watch lock") = Some(watch);
    }

    fn finish(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        self.worker
            .take()
            .expect("finished once")
            .join()
            .expect("timeline thread panicked")
    }
}

impl Drop for Timeline {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// The status entry of `dest` from the daemon at `socket`; None if it does not answer.
fn status_of(socket: &Path, dest: SocketAddr) -> Option<Value> {
    let out = limiter_cli(socket, ["status", "-o", "json"]);
    if !out.status.success() {
        return None;
    }
    let status: Value = serde_json::from_slice(&out.stdout).ok()?;
    find_destination(&status, dest).cloned()
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

fn opt_f(v: Option<f64>, decimals: usize) -> String {
    v.map(|v| format!("{v:.decimals$}")).unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The timeline as a table, with `marks` (time, label) as lines between the rows.
fn print_timeline(label: &str, samples: &[Sample], marks: &[(Duration, &str)]) {
    let mut text = format!(
        "{label}: timeline every {TICK:?}\n{:>6} {:>5} {:>6} {:>8} {:>8} {:>7} {:>8} {:>5} {:>9} {:>8} {:>9} {:>8} {:>8}\n",
        "t_s",
        "cpu",
        "cg_cpu",
        "inflight",
        "max_infl",
        "maxpass",
        "minrt_ms",
        "shed",
        "shed_tot",
        "probe_ms",
        "flood_ok",
        "refused",
        "timedout"
    );
    let mut marks = marks.to_vec();
    marks.sort();
    let mut marks = marks.into_iter().peekable();
    for s in samples {
        while let Some((_, m)) = marks.next_if(|(t, _)| *t <= s.t) {
            let _ = writeln!(text, "------ {m}");
        }
        let a = &s.adaptive;
        let _ = writeln!(
            text,
            "{:>6.2} {:>5} {:>6.2} {:>8} {:>8} {:>7} {:>8} {:>5} {:>9} {:>8} {:>9} {:>8} {:>8}",
            s.t.as_secs_f64(),
            opt_f(a.cpu, 2),
            s.cgroup_cpu,
            opt(a.inflight),
            opt(a.max_inflight),
            opt_f(a.max_pass, 1),
            opt_f(a.min_rt_ms, 1),
            opt(a.shedding),
            opt(a.shed_total),
            opt_f(s.probe.map(ms), 0),
            s.flood_completed,
            s.flood_refused,
            s.flood_timed_out
        );
    }
    for (_, m) in marks {
        let _ = writeln!(text, "------ {m}");
    }
    println!("{text}");
}

/// The timeline as CSV (`t_s,cpu,inflight,max_inflight,shed_total,shedding,probe_ms,flood`);
/// empty cells where a value is unknown. `cpu` is the daemon's, or, where the daemon reports
/// none (no rule), the one the test measured from the cgroup; `flood` is 1 while it runs.
fn timeline_csv(samples: &[Sample], flood: (Duration, Duration)) -> String {
    let mut csv =
        String::from("t_s,cpu,inflight,max_inflight,shed_total,shedding,probe_ms,flood\n");
    for s in samples {
        let a = &s.adaptive;
        let _ = writeln!(
            csv,
            "{:.3},{:.3},{},{},{},{},{},{}",
            s.t.as_secs_f64(),
            a.cpu.unwrap_or(s.cgroup_cpu),
            opt(a.inflight),
            opt(a.max_inflight),
            opt(a.shed_total),
            opt(a.shedding),
            opt_f(s.probe.map(ms), 1),
            u8::from(s.t >= flood.0 && s.t < flood.1)
        );
    }
    csv
}

/// Writes the CSV to `$LIMITER_OVERLOAD_TIMELINE` (with `suffix` before its extension).
fn save_timeline(samples: &[Sample], flood: (Duration, Duration), suffix: &str) {
    let Some(file) = std::env::var_os("LIMITER_OVERLOAD_TIMELINE") else {
        return;
    };
    let file = PathBuf::from(file);
    let file = if suffix.is_empty() {
        file
    } else {
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = match file.extension() {
            Some(ext) => format!("{stem}{suffix}.{}", ext.to_string_lossy()),
            None => format!("{stem}{suffix}"),
        };
        file.with_file_name(name)
    };
    std::fs::write(&file, timeline_csv(samples, flood))
        .unwrap_or_else(|e| panic!("write the timeline to {}: {e}", file.display()));
    println!("timeline written to {}", file.display());
}

/// Polls `condition` every 100 ms until it holds (true) or `timeout` passes (false). Slower
/// than `wait_until`, since each `limiter status` runs a process: on two cores, polling every
/// 10 ms would take CPU from the workload under test.
fn poll(timeout: Duration, condition: impl FnMut() -> bool) -> bool {
    limiter_integration_tests::wait_until_every(timeout, Duration::from_millis(100), condition)
}

/// Shed refusals of one status entry, by its `shed_total` or, if absent, its side counters.
fn shed_total(d: &Value) -> u64 {
    d.get("shed_total")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| {
            ["inbound", "outbound"]
                .iter()
                .flat_map(|side| ["reject", "drop"].map(|action| refused(d, side, "shed", action)))
                .sum()
        })
}

/// With the rule, a CPU-bound flood is shed within about a second, what is admitted completes
/// in a small multiple of the unloaded time, and shedding stops soon after the flood does.
#[test]
fn adaptive_sheds_a_cpu_bound_flood_and_keeps_latency_bounded() {
    let _root = require_root();
    let label = "adaptive";
    let s = Setup::new();
    s.set_adaptive();
    let unloaded = s.warm_up(label);
    let before = s.wait_for_window_data();
    println!("{label}: after the warm-up: {:?}", Adaptive::of(&before));
    assert_eq!(
        shed_total(&before),
        0,
        "{label}: nothing shed before the flood: {before:#}"
    );

    let epoch = Instant::now();
    let prober = s.start_prober(
        epoch,
        ProberConfig {
            interval: TICK,
            timeout: Duration::from_secs(5),
            retry_refused_for: Duration::from_secs(1),
            max_duration: Duration::from_secs(30),
        },
    );
    let timeline = Timeline::start(
        epoch,
        s.daemon.socket().to_owned(),
        s.dest,
        Arc::clone(&s.cgroup),
        Some(prober.watch()),
    );
    std::thread::sleep(Duration::from_secs(1));

    let flood_start = epoch.elapsed();
    let flood = s.start_flood();
    timeline.watch_flood(flood.watch());
    std::thread::sleep(FLOOD_DURATION);
    let during = s.daemon.dest_status(s.dest);
    let report = flood.stop();
    let flood_end = epoch.elapsed();

    // Shedding stops by itself once the workload's CPU is back under the threshold.
    let mut last = Value::Null;
    let stopped = poll(Duration::from_secs(6), || {
        last = s.daemon.dest_status(s.dest);
        last.get("shedding") == Some(&Value::Bool(false))
    });
    let shedding_off = epoch.elapsed() - flood_end;
    let after = probe(s.bed.pod(PROBE_POD).ns(), s.dest, Duration::from_secs(3));
    std::thread::sleep(Duration::from_secs(1));
    let probes = prober.finish();
    let samples = timeline.finish();

    print_timeline(
        label,
        &samples,
        &[
            (flood_start, "flood starts"),
            (flood_end, "flood stops"),
            (flood_end + shedding_off, "shedding: false"),
        ],
    );
    save_timeline(&samples, (flood_start, flood_end), "");
    let first_refusal = report.first_refusal();
    // As the daemon counts it: the first tick with a shed refusal.
    let first_shed_status = samples
        .iter()
        .find(|x| x.adaptive.shed_total.is_some_and(|n| n > 0))
        .map(|x| x.t.saturating_sub(flood_start));
    println!(
        "{label}: flood of {FLOOD_CONCURRENCY}: {}",
        report.summary()
    );
    println!(
        "{label}: first refusal {first_refusal:?} after the flood started (client side); \
         status shows shed_total > 0 at the tick {first_shed_status:?} after; status at the \
         flood's end: {:?}",
        Adaptive::of(&during)
    );
    // The steady state: once the connections admitted during the ramp, before the limit was
    // armed, have drained (inflight down to maxInflight), to the flood's end.
    let steady_from = samples
        .iter()
        .find(|x| {
            let a = &x.adaptive;
            x.t > flood_start
                && a.shedding == Some(true)
                && a.inflight
                    .zip(a.max_inflight)
                    .is_some_and(|(i, m)| i <= m + 1)
        })
        .map_or(flood_end, |x| x.t);
    let in_steady = |at: Duration| at >= steady_from && at < flood_end;
    let probe_times: Vec<Duration> = probes
        .iter()
        .filter(|p| in_steady(p.last.at))
        .filter_map(|p| p.completion())
        .collect();
    let probes_refused = probes
        .iter()
        .filter(|p| in_steady(p.at) && p.last.outcome == Outcome::Refused)
        .count();
    let flood_times = report.completion_times(steady_from - flood_start, flood_end - flood_start);
    println!(
        "{label}: completion times while shedding (from t={:.2} s): probes {} ({} probes refused \
         for 1 s), flood {}; unloaded p50 {:.0} ms",
        steady_from.as_secs_f64(),
        latency_summary(&probe_times),
        probes_refused,
        latency_summary(&flood_times),
        ms(unloaded)
    );
    println!(
        "{label}: shedding false {shedding_off:?} after the flood stopped; then a probe: {:?} in {:?}",
        after.outcome, after.elapsed
    );

    let refused_total = report.count(&Outcome::Refused);
    assert!(
        refused_total > 0 && shed_total(&during) > 0,
        "{label}: the flood was shed: {refused_total} refusals seen by the clients, status {during:#}"
    );
    let first_refusal = first_refusal.expect("refusals were seen");
    assert!(
        first_refusal <= Duration::from_secs(3),
        "{label}: first refusal {first_refusal:?} after the flood started; want within ~2 s"
    );
    assert!(
        report.failures().is_empty(),
        "{label}: refusals are clean ECONNREFUSED, nothing else: {:?}",
        report.failures()
    );
    assert!(
        probe_times.len() >= 3,
        "{label}: only {} probes completed while shedding ({probes_refused} refused for 1 s)",
        probe_times.len()
    );
    let p50 = percentile(&probe_times, 50).expect("probe times");
    // maxInflight is at least 4 and the workload is one CPU's worth: what is admitted waits
    // for about maxInflight - 1 others (measured: 4-5x with maxInflight 4-5).
    assert!(
        p50 <= unloaded * 8,
        "{label}: probes admitted while shedding complete in p50 {p50:?}, more than 8x the \
         unloaded {unloaded:?}"
    );
    // Without the limit every one of the flood's requests shares the quota with all the
    // others: at least FLOOD_CONCURRENCY x the unloaded time (see the test without a rule).
    let unlimited = CPU_PER_CONNECTION.mul_f64(FLOOD_CONCURRENCY as f64 / QUOTA_CPUS);
    assert!(
        p50 * 3 <= unlimited,
        "{label}: p50 {p50:?} is not clearly below the {unlimited:?} of the flood without a rule"
    );
    assert!(
        stopped,
        "{label}: still shedding 6 s after the flood stopped: {last:#}"
    );
    assert!(
        shedding_off <= Duration::from_secs(4),
        "{label}: shedding stopped {shedding_off:?} after the flood; want within ~3 s"
    );
    assert_eq!(
        after.outcome,
        Outcome::Completed,
        "{label}: a request after the flood: {after:?}"
    );
    assert!(
        after.elapsed <= unloaded * 4,
        "{label}: a request after the flood took {:?} (unloaded {unloaded:?})",
        after.elapsed
    );
}

/// Without a rule, load above the workload's capacity makes every request wait for all the
/// others: completion time keeps growing with the time spent overloaded, far above the unloaded
/// time (the comparison issue #4 asks for). The load is an open loop at 1.25x capacity
/// (independent users do not wait for each other; a closed loop of N workers would only ever
/// reach N x the unloaded time, and with client timeouts it collapses into a retry storm that
/// no probe outlives).
#[test]
fn without_a_rule_completion_time_grows_without_bound() {
    let _root = require_root();
    let label = "no rule";
    let s = Setup::new();
    let unloaded = s.warm_up(label);

    let capacity = QUOTA_CPUS / CPU_PER_CONNECTION.as_secs_f64();
    let rate = 1.25 * capacity;
    let epoch = Instant::now();
    let probe_timeout = Duration::from_secs(6);
    let prober = s.start_prober(
        epoch,
        ProberConfig {
            interval: Duration::from_millis(500),
            timeout: probe_timeout,
            retry_refused_for: Duration::ZERO,
            max_duration: Duration::from_secs(30),
        },
    );
    let timeline = Timeline::start(
        epoch,
        s.daemon.socket().to_owned(),
        s.dest,
        Arc::clone(&s.cgroup),
        Some(prober.watch()),
    );
    std::thread::sleep(Duration::from_millis(500));
    let flood_start = epoch.elapsed();
    let flood = Flood::start(
        s.bed.pod(FLOOD_POD).ns(),
        s.dest,
        FloodConfig {
            concurrency: 500,
            timeout: Duration::from_secs(10),
            max_duration: Duration::from_secs(20),
            rate: Some(rate),
            ..FloodConfig::default()
        },
    );
    timeline.watch_flood(flood.watch());
    std::thread::sleep(Duration::from_secs(5));
    // No more probes; the flood goes on until the last ones complete or time out, so that
    // each probe measures a sustained overload, not the drain after it.
    let probing_end = epoch.elapsed();
    let probes = prober.finish();
    let flood_end = epoch.elapsed();
    let report = flood.stop();
    let samples = timeline.finish();
    print_timeline(
        label,
        &samples,
        &[
            (flood_start, "flood starts"),
            (probing_end, "last probe starts"),
            (flood_end, "flood stops"),
        ],
    );
    save_timeline(&samples, (flood_start, flood_end), "-no-rule");
    println!(
        "{label}: open-loop flood at {rate:.0}/s (capacity {capacity:.0}/s): {}",
        report.summary()
    );
    // The flood's own requests, by the second they started in: many more samples than the
    // probes. A request abandoned at the flood's stop took at least what it had waited.
    let at_least = |second: u64| -> Vec<Duration> {
        let from = Duration::from_secs(second);
        report
            .requests
            .iter()
            .filter(|r| r.at >= from && r.at < from + Duration::from_secs(1))
            .filter(|r| matches!(r.outcome, Outcome::Completed | Outcome::Abandoned))
            .map(|r| r.elapsed)
            .collect()
    };
    for second in 0..4 {
        let from = Duration::from_secs(second);
        println!(
            "{label}: flood requests started in second {second}..{}: completed {}; with the \
             abandoned ones as lower bounds: {}",
            second + 1,
            latency_summary(&report.completion_times(from, from + Duration::from_secs(1))),
            latency_summary(&at_least(second))
        );
    }
    let (first_second, fourth_second) = (
        percentile(&at_least(0), 50).expect("requests in the first second"),
        percentile(&at_least(3), 50).expect("requests in the fourth second"),
    );

    // A probe that timed out took at least its timeout.
    let during: Vec<(Duration, Duration, &Outcome)> = probes
        .iter()
        .filter(|p| p.at >= flood_start && p.at < probing_end)
        .map(|p| (p.at - flood_start, p.last.elapsed, &p.last.outcome))
        .collect();
    for (at, took, outcome) in &during {
        println!(
            "{label}: probe at +{:.1} s: {outcome:?} after {:.0} ms ({:.0}x unloaded)",
            at.as_secs_f64(),
            ms(*took),
            took.as_secs_f64() / unloaded.as_secs_f64()
        );
    }
    assert_eq!(
        report.count(&Outcome::Refused),
        0,
        "{label}: nothing refuses"
    );
    assert!(
        during
            .iter()
            .all(|(_, _, o)| matches!(o, Outcome::Completed | Outcome::TimedOut)),
        "{label}: every probe completed or timed out: {during:?}"
    );
    let early: Vec<Duration> = during
        .iter()
        .filter(|(at, _, _)| *at < Duration::from_millis(1500))
        .map(|(_, took, _)| *took)
        .collect();
    let late: Vec<Duration> = during
        .iter()
        .filter(|(at, _, _)| *at >= Duration::from_millis(3000))
        .map(|(_, took, _)| *took)
        .collect();
    let (early_p50, late_p50) = (
        percentile(&early, 50).expect("early probes"),
        percentile(&late, 50).expect("late probes"),
    );
    println!(
        "{label}: probes in the first 1.5 s of the flood: {}; from 3 s on: {}; unloaded p50 {:.0} ms",
        latency_summary(&early),
        latency_summary(&late),
        ms(unloaded)
    );
    assert!(
        late_p50 > early_p50,
        "{label}: later probes are slower: early p50 {early_p50:?}, late p50 {late_p50:?}"
    );
    assert!(
        fourth_second >= first_second * 3,
        "{label}: the flood's requests of the fourth second take p50 {fourth_second:?}, not \
         much more than the first second's {first_second:?}"
    );
    assert!(
        late_p50 >= unloaded * 15,
        "{label}: late probes take p50 {late_p50:?}, want far above the unloaded {unloaded:?}"
    );
}

/// A daemon killed while it sheds leaves nothing shed: its kernel limit expires about a second
/// later and connections beyond `maxInflight` are admitted again, the flood still running.
#[test]
fn killed_daemon_stops_shedding_after_expiry() {
    let _root = require_root();
    let label = "kill -9 while shedding";
    let mut s = Setup::new();
    s.set_adaptive();
    s.warm_up(label);
    s.wait_for_window_data();

    let epoch = Instant::now();
    let timeline = Timeline::start(
        epoch,
        s.daemon.socket().to_owned(),
        s.dest,
        Arc::clone(&s.cgroup),
        None,
    );
    let flood = s.start_flood();
    timeline.watch_flood(flood.watch());
    let shedding = poll(Duration::from_secs(5), || {
        let d = s.daemon.dest_status(s.dest);
        d.get("shedding") == Some(&Value::Bool(true))
            && shed_total(&d) > 0
            && flood.counts().refused > 0
    });
    let d = s.daemon.dest_status(s.dest);
    assert!(shedding, "{label}: the flood is shed: {d:#}");
    // Let the ramp's admitted backlog drain, so the flood holds about maxInflight.
    std::thread::sleep(Duration::from_secs(1));
    let d = s.daemon.dest_status(s.dest);
    let max_inflight = d.get("max_inflight").and_then(Value::as_u64);
    println!(
        "{label}: shedding at +{:.1} s: {:?}",
        epoch.elapsed().as_secs_f64(),
        Adaptive::of(&d)
    );
    const BURST: usize = 15;
    let burst = || {
        s.bed
            .pod(PROBE_POD)
            .connect_many_timed(s.dest, BURST, Duration::from_secs(1))
    };
    let before = Outcomes::of(&burst());
    println!(
        "{label}: a burst of {BURST} connects while shedding: {}",
        before.summary()
    );
    assert!(
        !before.refused.is_empty(),
        "{label}: a burst beyond maxInflight {max_inflight:?} is shed while the daemon runs: {}",
        before.summary()
    );

    let mut admitted_after = None;
    let mut bursts = Vec::new();
    let mut killed_at = Duration::ZERO;
    s.daemon.crash_and_restart(|| {
        let killed = Instant::now();
        killed_at = epoch.elapsed();
        while killed.elapsed() < Duration::from_secs(6) {
            let o = Outcomes::of(&burst());
            let t = killed.elapsed();
            bursts.push(format!("+{:.2} s: {}", t.as_secs_f64(), o.summary()));
            if o.ok.len() == BURST {
                admitted_after = Some(t);
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let restarted_at = epoch.elapsed();
    let report = flood.stop();
    let flood_end = epoch.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let samples = timeline.finish();
    let admitted_mark = admitted_after.map(|t| killed_at + t);
    let mut marks = vec![
        (Duration::ZERO, "flood starts"),
        (killed_at, "daemon killed (SIGKILL)"),
        (restarted_at, "daemon restarted"),
        (flood_end, "flood stops"),
    ];
    if let Some(t) = admitted_mark {
        marks.push((t, "a whole burst admitted"));
    }
    print_timeline(label, &samples, &marks);
    for b in &bursts {
        println!("{label}: burst after the kill {b}");
    }
    println!("{label}: flood: {}", report.summary());
    let admitted_after = admitted_after.unwrap_or_else(|| {
        panic!("{label}: 6 s after the daemon was killed, bursts are still refused: {bursts:#?}")
    });
    println!("{label}: a whole burst of {BURST} admitted {admitted_after:?} after the kill");
    assert!(
        admitted_after <= Duration::from_secs(3),
        "{label}: shedding went on {admitted_after:?} after the daemon died; the kernel limit \
         expires in about 1 s"
    );
}

/// The harness itself: the busy server and every thread it starts run in the test's cgroup,
/// its work is CPU time (so the quota stretches wall time), and the group is removed on drop.
#[test]
fn busy_server_runs_all_its_threads_in_the_quota_cgroup() {
    let _root = require_root();
    let bed = Testbed::new(2);
    let dest = bed.pod(2).addr_v4(PORT);
    let cgroup = CpuCgroup::new("harness", 0.5);
    let dirs = cgroup.dirs().to_vec();
    let path = cgroup.path();
    {
        let server = BusyServer::start(
            BUSY_SERVER,
            bed.pod(2).ns(),
            &cgroup,
            dest,
            Duration::from_millis(50),
        );
        let proc_cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", server.pid()))
            .expect("read /proc/PID/cgroup");
        assert!(
            proc_cgroup
                .lines()
                .any(|l| l.ends_with(&format!(":{path}"))),
            "/proc/{}/cgroup names {path}: {proc_cgroup}",
            server.pid()
        );
        assert_eq!(
            cgroup.procs(),
            [server.pid()],
            "the server alone is in the group"
        );
        let usage_before = cgroup.usage();
        let start = Instant::now();
        let flood = Flood::start(
            bed.pod(1).ns(),
            dest,
            FloodConfig {
                concurrency: 6,
                ramp: Duration::ZERO,
                timeout: Duration::from_secs(5),
                backoff: Duration::from_millis(50),
                think: Duration::ZERO,
                max_duration: Duration::from_secs(5),
                rate: None,
            },
        );
        // While the six requests burn, every server thread is in the group in every hierarchy.
        std::thread::sleep(Duration::from_millis(150));
        let threads = server.threads();
        assert!(
            threads.len() >= 2,
            "the server runs a thread per connection: {threads:?}"
        );
        for (dir, members) in dirs.iter().zip(cgroup.threads()) {
            let outside: Vec<_> = threads.iter().filter(|t| !members.contains(t)).collect();
            assert!(
                outside.is_empty(),
                "threads {outside:?} of the server are not in {}",
                dir.display()
            );
        }
        wait_until(Duration::from_secs(5), || flood.counts().completed >= 6);
        let wall = start.elapsed();
        let report = flood.stop();
        let used = cgroup.usage() - usage_before;
        println!(
            "harness: 6 concurrent requests of 50 ms CPU at a 0.5 CPU quota: {}; the group used \
             {used:?} of CPU in {wall:?}, throttled in {} periods",
            report.summary(),
            cgroup.throttled_periods()
        );
        assert!(
            used >= Duration::from_millis(6 * 50),
            "the group was charged {used:?} for 6 x 50 ms"
        );
        // 300 ms of CPU at half a CPU takes at least 600 ms of wall time (less 50 ms of slack
        // for a period's quota that was left at the start).
        let first_six = report.completion_times(Duration::ZERO, Duration::from_millis(100));
        let slowest = first_six.iter().max().copied().unwrap_or_default();
        assert!(
            first_six.len() >= 6 && slowest >= Duration::from_millis(500),
            "6 concurrent requests under the quota: {first_six:?}"
        );
        assert!(
            cgroup.throttled_periods() > 0,
            "the quota throttled the group"
        );
    }
    drop(cgroup);
    for dir in &dirs {
        assert!(!dir.exists(), "{} removed on drop", dir.display());
    }
}

/// Without `--workload-cgroup`, the check finds the workload from the process listening on the
/// destination (in the server pod's namespace) and reads that process's cgroup.
#[test]
fn the_listeners_cgroup_is_found_without_naming_it() {
    let _root = require_root();
    let s = Setup::new();
    s.daemon.set(s.dest, &["--adaptive"]);
    let want = format!(
        "listener pid {} cgroup {}",
        s._server.pid(),
        s.cgroup.path()
    );
    let d = s
        .daemon
        .wait_for_dest(s.dest, Duration::from_secs(5), &want, |d| {
            d["cpu_source"] == want.as_str()
        });
    println!("cpu source found: {} (cpu {})", d["cpu_source"], d["cpu"]);
}
