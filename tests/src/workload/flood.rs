//! Load from a pod: closed-loop workers or an open loop of arrivals, with live counters.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::report::FloodReport;
use super::request::{Outcome, Request, request};
use super::{join_netns, sleep_unless};
use crate::netns::NetNs;

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
