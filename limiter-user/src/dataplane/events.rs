//! Refusal and breaker events from the kernel's EVENTS ring buffer, for `limiter events`.
//!
//! A thread drains the ring buffer every 200 ms (the kernel writes without waking it, so a
//! refusal never pays for waking the daemon) into
//! a broadcast channel for followers and a short history for `limiter events` without
//! `--follow`. The kernel rate-limits and counts what it could not emit (EVENT_STATS); a
//! follower that falls behind the channel is told how many events it missed.

use std::{
    collections::VecDeque,
    os::fd::AsRawFd as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use aya::maps::{MapData, PerCpuArray, RingBuf};
use limiter_common::{
    DestAddr, Event, EventStats, action, breaker_state, event_kind, outcome, reason, side,
};
use serde::Serialize;
use tokio::sync::broadcast;

use super::sys::monotonic_ns;

/// Events kept for `limiter events` without `--follow`.
const HISTORY: usize = 1024;
/// Events a follower may lag behind before it is told it missed some.
const CHANNEL: usize = 4096;

/// One event, as `limiter events -o json` prints it (one object per line): a refusal, or a
/// circuit breaker's transition (`kind`).
#[derive(Clone, Debug, Serialize)]
pub struct EventRecord {
    /// `refusal` or `breaker`.
    pub kind: &'static str,
    /// RFC 3339 wall-clock time of the decision.
    pub time: String,
    /// The destination of the connection (for a CIDR rule: the address within it); for a
    /// breaker, its rule's destination.
    pub destination: String,
    /// Refusal: the caller, a source address (inbound) or `pod:<netns cookie>` (outbound).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub side: &'static str,
    /// Refusal: why (`limit`, `rate`, `per_source`, `shed`, `table_full`, `breaker`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// Refusal: what was done (`reject`, `drop`, `dry_run`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<&'static str>,
    /// Breaker: the endpoint whose breaker changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Breaker: its new state (`closed`, `open`, `half_open`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'static str>,
    /// Breaker: why (`refused`, `timeout`, `reset`, `failure_ratio`, `slow_ratio`,
    /// `open_time_passed`, `success`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<&'static str>,
}

/// Rule ids -> destinations, kept by the dataplane, to name a breaker event's rule.
pub type RuleNames = Arc<std::sync::RwLock<std::collections::HashMap<u64, String>>>;

/// Kernel-side totals, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct EventTotals {
    pub emitted: u64,
    /// Not emitted: over the per-CPU rate (limiter_common::EVENTS_PER_SECOND_PER_CPU).
    pub suppressed: u64,
    /// Not emitted: the ring buffer was full.
    pub lost: u64,
}

pub struct EventFeed {
    pub sender: broadcast::Sender<EventRecord>,
    /// Names the rules of breaker events.
    pub rules: RuleNames,
    history: Arc<Mutex<VecDeque<EventRecord>>>,
    stats: PerCpuArray<MapData, EventStats>,
    stop: Arc<AtomicBool>,
}

fn socket_addr(d: &DestAddr) -> std::net::SocketAddr {
    let ip = std::net::Ipv6Addr::from(d.addr);
    let ip = ip
        .to_ipv4_mapped()
        .map_or(std::net::IpAddr::V6(ip), std::net::IpAddr::V4);
    std::net::SocketAddr::new(ip, d.port())
}

fn name<T: Copy>(names: &[T], i: u8) -> Option<T> {
    names.get(usize::from(i)).copied()
}

fn record(e: &Event, rules: &RuleNames) -> EventRecord {
    let age = Duration::from_nanos(monotonic_ns().saturating_sub(e.time_ns));
    let at = SystemTime::now() - age;
    let time = humantime::format_rfc3339_millis(at).to_string();
    let side = if e.side == side::INBOUND {
        "inbound"
    } else {
        "outbound"
    };
    if e.kind == event_kind::BREAKER {
        let endpoint = socket_addr(&e.dest).to_string();
        let destination = rules
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&e.rule_id)
            .cloned()
            .unwrap_or_else(|| endpoint.clone());
        return EventRecord {
            kind: "breaker",
            time,
            destination,
            source: None,
            side,
            reason: None,
            action: None,
            endpoint: Some(endpoint),
            state: name(&breaker_state::NAMES, e.reason),
            cause: name(&outcome::NAMES, e.action),
        };
    }
    let source = if e.side == side::OUTBOUND {
        format!(
            "pod:{}",
            u64::from_be_bytes(e.peer[8..].try_into().expect("8 bytes"))
        )
    } else {
        let ip = std::net::Ipv6Addr::from(e.peer);
        ip.to_ipv4_mapped()
            .map_or(ip.to_string(), |v4| v4.to_string())
    };
    EventRecord {
        kind: "refusal",
        time,
        destination: socket_addr(&e.dest).to_string(),
        source: Some(source),
        side,
        reason: Some(name(&reason::NAMES, e.reason).unwrap_or("unknown")),
        action: Some(name(&action::NAMES, e.action).unwrap_or("unknown")),
        endpoint: None,
        state: None,
        cause: None,
    }
}

impl EventFeed {
    pub fn start(
        mut ring: RingBuf<MapData>,
        stats: PerCpuArray<MapData, EventStats>,
    ) -> anyhow::Result<Self> {
        let (sender, _) = broadcast::channel(CHANNEL);
        let history = Arc::new(Mutex::new(VecDeque::with_capacity(HISTORY)));
        let stop = Arc::new(AtomicBool::new(false));
        let rules = RuleNames::default();
        let (tx, hist, halt) = (sender.clone(), Arc::clone(&history), Arc::clone(&stop));
        let names = Arc::clone(&rules);
        std::thread::Builder::new()
            .name("limiter-events".into())
            .spawn(move || {
                let fd = ring.as_raw_fd();
                while !halt.load(Ordering::Relaxed) {
                    let mut pfd = libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    unsafe { libc::poll(&mut pfd, 1, 200) };
                    while let Some(item) = ring.next() {
                        if item.len() < size_of::<Event>() {
                            continue;
                        }
                        // SAFETY: the kernel wrote an Event (limiter-ebpf events.rs).
                        let e: Event = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                        let r = record(&e, &names);
                        let mut h = hist.lock().unwrap_or_else(|p| p.into_inner());
                        if h.len() == HISTORY {
                            h.pop_front();
                        }
                        h.push_back(r.clone());
                        drop(h);
                        let _ = tx.send(r); // no follower: nothing to do
                    }
                }
            })?;
        Ok(Self {
            sender,
            rules,
            history,
            stats,
            stop,
        })
    }

    pub fn recent(&self) -> Vec<EventRecord> {
        let h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        h.iter().cloned().collect()
    }

    pub fn totals(&self) -> EventTotals {
        let mut t = EventTotals::default();
        if let Ok(per_cpu) = self.stats.get(&0, 0) {
            for s in per_cpu.iter() {
                t.emitted += s.emitted;
                t.suppressed += s.suppressed;
                t.lost += s.lost;
            }
        }
        t
    }
}

impl Drop for EventFeed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
