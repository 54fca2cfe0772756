//! Client traffic of the benchmark: connect() one at a time and time each call, count the
//! packets a pod sends, and wait for a server to settle.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use limiter_integration_tests::{HoldServer, NetNs, wait_until};
use socket2::{Domain, Protocol, Socket, Type};

use super::stats;

/// The outcome of a series of connects, latencies in microseconds.
#[derive(Debug, Default)]
pub struct Probe {
    pub ok: Vec<f64>,
    pub refused: Vec<f64>,
    /// Connects still in progress when their timeout ran out (SYN dropped, retried).
    pub timed_out: usize,
    pub other: Vec<String>,
    /// Wall time of the whole series.
    pub wall: Duration,
    /// Packets the client's eth0 sent during the series.
    pub tx_packets: u64,
}

impl Probe {
    pub fn attempts(&self) -> usize {
        self.ok.len() + self.refused.len() + self.timed_out + self.other.len()
    }

    /// Connections per second, counting connect and close.
    pub fn rate(&self) -> Option<f64> {
        (self.wall > Duration::ZERO && !self.ok.is_empty())
            .then(|| self.ok.len() as f64 / self.wall.as_secs_f64())
    }

    pub fn merge(&mut self, other: Self) {
        self.ok.extend(other.ok);
        self.refused.extend(other.refused);
        self.timed_out += other.timed_out;
        self.other.extend(other.other);
        self.wall += other.wall;
        self.tx_packets += other.tx_packets;
    }
}

/// How a probe paces itself.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    /// At most this many connects.
    pub count: usize,
    /// Stop starting new connects after this long.
    pub budget: Duration,
    /// Each connect() gives up after this (SO_SNDTIMEO: connect returns EINPROGRESS).
    pub timeout: Duration,
    /// Pause between connects.
    pub gap: Duration,
}

/// `pace.count` connects to `dest`, one after the other, from a thread inside `ns`. Each
/// socket is closed right after its connect (FIN for an established one). Only the connect()
/// call itself is timed.
pub fn probe(ns: &NetNs, dest: SocketAddr, pace: Pace) -> Probe {
    ns.enter(|| {
        let tx0 = tx_packets("eth0");
        let mut p = Probe::default();
        let start = Instant::now();
        for _ in 0..pace.count {
            if start.elapsed() >= pace.budget {
                break;
            }
            let socket = match Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)) {
                Ok(s) => s,
                Err(e) => {
                    p.other.push(format!("socket(): {e}"));
                    continue;
                }
            };
            let _ = socket.set_write_timeout(Some(pace.timeout));
            let t = Instant::now();
            let result = socket.connect(&dest.into());
            let took = stats::us(t.elapsed());
            match result {
                Ok(()) => p.ok.push(took),
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => p.refused.push(took),
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => p.timed_out += 1,
                Err(e) => p.other.push(e.to_string()),
            }
            drop(socket);
            if !pace.gap.is_zero() {
                std::thread::sleep(pace.gap);
            }
        }
        p.wall = start.elapsed();
        p.tx_packets = tx_packets("eth0").saturating_sub(tx0);
        p
    })
}

/// Packets sent by `iface` of the calling thread's network namespace.
pub fn tx_packets(iface: &str) -> u64 {
    let dev = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap_or_default();
    dev.lines()
        .find_map(|l| {
            let (name, counters) = l.split_once(':')?;
            (name.trim() == iface).then(|| counters.split_whitespace().nth(9)?.parse().ok())?
        })
        .unwrap_or(0)
}

/// Waits until `server` has accepted everything queued: its count has not moved for 30 ms
/// (5 s at most). Returns the connections it holds open.
pub fn settled(server: &HoldServer) -> usize {
    let mut last = (server.accepted_count(), Instant::now());
    wait_until(Duration::from_secs(5), || {
        let now = server.accepted_count();
        if now != last.0 {
            last = (now, Instant::now());
        }
        last.1.elapsed() >= Duration::from_millis(30)
    });
    server.open_count()
}

/// Waits until `server` holds no connection (5 s at most), then `linger` more, so that
/// closes are accounted everywhere (limiter's slots, conntrack's states) before the next run.
pub fn drained(server: &HoldServer, linger: Duration) -> bool {
    let ok = wait_until(Duration::from_secs(5), || server.open_count() == 0);
    std::thread::sleep(linger);
    ok
}
