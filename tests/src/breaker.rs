//! Circuit-breaker tests' helpers (tests/tests/breaker.rs, tests/tests/breaker_svc.rs): what
//! reaches an endpoint, a dead endpoint made at will inside its own namespace, and reading
//! breakers from `limiter status -o json`, `limiter events -o json`.
//!
//! [`Wire`] is an nftables table in the endpoint pod's namespace (never the host's): a counter
//! of the SYNs that arrive for one port, and on request a second table that drops them (a
//! blackholed endpoint). Without a listener the pod's kernel answers RST (a refusing endpoint).

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::status::destinations;
use crate::traffic::ConnectAttempt;
use crate::{Daemon, Pod, wait_until};

/// How long a refusal by an open breaker may take here: far below the 1 s SYN retransmission a
/// dead endpoint costs, and generous for a loaded 2-core machine (its microsecond figure
/// belongs to `cargo xtask bench`, section 9).
pub const FAST: Duration = Duration::from_millis(100);

/// Table names in the pod's namespace.
const COUNT_TABLE: &str = "limtest_count";
const DROP_TABLE: &str = "limtest_blackhole";

/// The SYNs arriving at one pod's port, and a switch that drops them there.
pub struct Wire<'a> {
    pod: &'a Pod,
    port: u16,
}

impl<'a> Wire<'a> {
    /// Starts counting the SYNs (SYN without ACK, IPv4 and IPv6) that arrive in `pod` for
    /// `port`. The count runs before any drop.
    pub fn new(pod: &'a Pod, port: u16) -> Self {
        nft_script(
            pod,
            &format!(
                "table inet {COUNT_TABLE} {{\n\
                   counter syns {{ }}\n\
                   chain input {{\n\
                     type filter hook input priority -100; policy accept;\n\
                     tcp dport {port} tcp flags & (syn | ack) == syn counter name \"syns\"\n\
                   }}\n\
                 }}\n"
            ),
        );
        Self { pod, port }
    }

    /// SYNs counted so far.
    pub fn syns(&self) -> u64 {
        let out = self.pod.ns().run(
            "nft",
            ["-j", "list", "counter", "inet", COUNT_TABLE, "syns"],
        );
        let json: Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("nft -j list counter printed invalid JSON ({e}): {out}"));
        json["nftables"]
            .as_array()
            .and_then(|items| items.iter().find_map(|i| i["counter"]["packets"].as_u64()))
            .unwrap_or_else(|| panic!("no packet count in {out}"))
    }

    /// Drops every SYN to the port inside the pod (after counting it): connects time out,
    /// established connections go on.
    pub fn blackhole(&self) {
        nft_script(
            self.pod,
            &format!(
                "table inet {DROP_TABLE} {{\n\
                   chain input {{\n\
                     type filter hook input priority 0; policy accept;\n\
                     tcp dport {} tcp flags & (syn | ack) == syn drop\n\
                   }}\n\
                 }}\n",
                self.port
            ),
        );
    }

    /// Lifts [`Wire::blackhole`].
    pub fn restore(&self) {
        self.pod
            .ns()
            .run("nft", ["delete", "table", "inet", DROP_TABLE]);
    }

    /// Asserts the count stays at `syns` for `period` (packets in flight have landed by then).
    #[track_caller]
    pub fn expect_still(&self, syns: u64, period: Duration, what: &str) {
        let deadline = Instant::now() + period;
        loop {
            let now = self.syns();
            assert_eq!(now, syns, "{what}: SYNs arriving at the endpoint");
            if Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Loads an nft script in `pod`'s namespace.
fn nft_script(pod: &Pod, script: &str) {
    let file = tempfile::NamedTempFile::new().expect("temp file for an nft script");
    std::fs::write(file.path(), script).expect("write the nft script");
    let path = file.path().to_str().expect("UTF-8 temp path").to_owned();
    pod.ns().run("nft", ["-f", &path]);
}

/// One connect from `pod` to `addr` with `timeout`.
pub fn connect_once(pod: &Pod, addr: SocketAddr, timeout: Duration) -> ConnectAttempt {
    pod.connect_many_timed(addr, 1, timeout)
        .pop()
        .expect("one attempt")
}

pub fn is_refused(a: &ConnectAttempt) -> bool {
    matches!(&a.result, Err(e) if e.kind() == ErrorKind::ConnectionRefused)
}

/// A connect that ran into its own timeout (the endpoint never answered).
pub fn is_timed_out(a: &ConnectAttempt) -> bool {
    matches!(&a.result, Err(e) if e.kind() == ErrorKind::TimedOut)
}

/// `n` connects one after the other, each of which must be refused with ECONNREFUSED within
/// [`FAST`], with no SYN reaching `wire`'s endpoint (checked for 300 ms after the last).
#[track_caller]
pub fn expect_fail_fast(pod: &Pod, addr: SocketAddr, wire: &Wire, n: usize, what: &str) {
    let before = wire.syns();
    let start = Instant::now();
    let attempts: Vec<ConnectAttempt> = (0..n)
        .map(|_| connect_once(pod, addr, Duration::from_secs(2)))
        .collect();
    let took = start.elapsed();
    let slowest = attempts.iter().map(|a| a.elapsed).max().unwrap_or_default();
    let bad: Vec<String> = attempts
        .iter()
        .filter(|a| !is_refused(a) || a.elapsed >= FAST)
        .map(|a| format!("{:?} after {:?}", a.result.as_ref().err(), a.elapsed))
        .collect();
    println!("{what}: {n} connects refused in {took:?}, slowest {slowest:?}");
    assert!(
        bad.is_empty(),
        "{what}: every connect must fail at once with ECONNREFUSED (< {FAST:?}): {bad:?}"
    );
    wire.expect_still(before, Duration::from_millis(300), what);
}

/// The `breakers` of every status entry whose `destination` is one of `dests` (as printed:
/// `10.77.2.2:8080`, `svc/default/web`; IPv6 compared as addresses).
pub fn breakers_of(status: &Value, dests: &[&str]) -> Vec<Value> {
    let wanted = |d: &str| {
        dests.iter().any(|w| {
            *w == d
                || matches!(
                    (w.parse::<SocketAddr>(), d.parse::<SocketAddr>()),
                    (Ok(a), Ok(b)) if a == b
                )
        })
    };
    destinations(status)
        .iter()
        .filter(|d| d["destination"].as_str().is_some_and(wanted))
        .flat_map(|d| d["breakers"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// The breaker of `endpoint` among `breakers`, if listed.
pub fn breaker_for(breakers: &[Value], endpoint: SocketAddr) -> Option<&Value> {
    breakers.iter().find(|b| {
        b["endpoint"]
            .as_str()
            .and_then(|e| e.parse::<SocketAddr>().ok())
            == Some(endpoint)
    })
}

/// How many of `breakers` are not closed (open or half-open).
pub fn not_closed(breakers: &[Value]) -> usize {
    breakers.iter().filter(|b| b["state"] != "closed").count()
}

/// `field` of a breaker as an integer (panics if it is not one).
#[track_caller]
pub fn num(breaker: &Value, field: &str) -> u64 {
    breaker[field]
        .as_u64()
        .unwrap_or_else(|| panic!("breaker field `{field}` is not a count: {breaker}"))
}

/// `failures_total.<kind>` of a breaker.
#[track_caller]
pub fn failures(breaker: &Value, kind: &str) -> u64 {
    breaker["failures_total"][kind]
        .as_u64()
        .unwrap_or_else(|| panic!("`failures_total.{kind}` is not a count: {breaker}"))
}

/// Polls the breaker of (`dest`'s rule, `endpoint`) until `check` accepts it; returns it, or
/// panics after `timeout` with `what` and the last status.
#[track_caller]
pub fn wait_breaker(
    daemon: &Daemon,
    dests: &[&str],
    endpoint: SocketAddr,
    timeout: Duration,
    what: &str,
    mut check: impl FnMut(&Value) -> bool,
) -> Value {
    let mut last = Value::Null;
    let mut found = None;
    let ok = wait_until(timeout, || {
        last = daemon.status_json();
        found = breaker_for(&breakers_of(&last, dests), endpoint).cloned();
        found.as_ref().is_some_and(&mut check)
    });
    match found {
        Some(b) if ok => b,
        _ => panic!(
            "breaker of {dests:?} for {endpoint}: expected {what} within {timeout:?}; last \
             status: {last:#}"
        ),
    }
}

/// `limiter events -o json`: one JSON object per line.
#[track_caller]
pub fn events(daemon: &Daemon) -> Vec<Value> {
    daemon
        .cli_ok(&["events", "-o", "json"])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("event line is not JSON ({e}): {l}"))
        })
        .collect()
}

/// The transitions among `events` (`"kind": "breaker"`) of `endpoint`, as (state, cause).
pub fn transitions(events: &[Value], endpoint: SocketAddr) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| e["kind"] == "breaker")
        .filter(|e| {
            e["endpoint"]
                .as_str()
                .and_then(|s| s.parse::<SocketAddr>().ok())
                == Some(endpoint)
        })
        .map(|e| {
            let text = |k: &str| e[k].as_str().unwrap_or("?").to_owned();
            (text("state"), text("cause"))
        })
        .collect()
}

/// The transitions of `endpoint` in `limiter events -o json`, polled until there are at least
/// `n` (events reach the daemon asynchronously) or `timeout` passes; what was seen then.
pub fn wait_transitions(
    daemon: &Daemon,
    endpoint: SocketAddr,
    n: usize,
    timeout: Duration,
) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    wait_until(timeout, || {
        seen = transitions(&events(daemon), endpoint);
        seen.len() >= n
    });
    seen
}
