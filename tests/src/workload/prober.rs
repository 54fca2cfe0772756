//! Probes on a schedule, each on its own thread, measuring completion time under load.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::request::{Outcome, Request, request};
use super::{join_netns, sleep_unless};
use crate::netns::NetNs;

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
