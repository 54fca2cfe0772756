//! Refusal events from the kernel's EVENTS ring buffer, for `limiter events`.
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
use limiter_common::{DestAddr, Event, EventStats, action, reason, side};
use serde::Serialize;
use tokio::sync::broadcast;

use super::sys::monotonic_ns;

/// Events kept for `limiter events` without `--follow`.
const HISTORY: usize = 1024;
/// Events a follower may lag behind before it is told it missed some.
const CHANNEL: usize = 4096;

/// One refusal, as `limiter events -o json` prints it (one object per line).
#[derive(Clone, Debug, Serialize)]
pub struct EventRecord {
    /// RFC 3339 wall-clock time of the decision.
    pub time: String,
    /// The destination of the connection (for a CIDR rule: the address within it).
    pub destination: String,
    /// The caller: a source address (inbound), or `pod:<netns cookie>` (outbound).
    pub source: String,
    pub side: &'static str,
    pub reason: &'static str,
    pub action: &'static str,
}

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

fn record(e: &Event) -> EventRecord {
    let age = Duration::from_nanos(monotonic_ns().saturating_sub(e.time_ns));
    let at = SystemTime::now() - age;
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
        time: humantime::format_rfc3339_millis(at).to_string(),
        destination: socket_addr(&e.dest).to_string(),
        source,
        side: if e.side == side::INBOUND {
            "inbound"
        } else {
            "outbound"
        },
        reason: reason::NAMES
            .get(usize::from(e.reason))
            .copied()
            .unwrap_or("unknown"),
        action: action::NAMES
            .get(usize::from(e.action))
            .copied()
            .unwrap_or("unknown"),
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
        let (tx, hist, halt) = (sender.clone(), Arc::clone(&history), Arc::clone(&stop));
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
                        let r = record(&e);
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
