//! Istio's four connection-pool scenarios (docs: REFERENCE.md section 1) enforced at the node.
//!
//! Limit 5; every client pod makes 10 parallel connects to a Service VIP (10.96.0.10:80, only
//! iptables DNAT in the node namespace, round-robin over the server pods' :8080 like
//! kube-proxy) and holds what it gets open, as a long request would. Server-side rules name
//! the pod address (the destination after DNAT); client-side rules name the VIP (what the
//! caller dialed). Every client goes through the VIP, also with a single server pod.
//! Drop mode (scenarios 1 and 2): the excess SYNs are discarded, so the excess callers wait on
//! their kernel's SYN retries (about 1 s each here) instead of failing.

use std::net::SocketAddr;
use std::time::Duration;

use limiter_integration_tests::status::{counter, refused};
use limiter_integration_tests::traffic::ConnectAttempt;
use limiter_integration_tests::{
    Daemon, HoldServer, Outcomes, Testbed, holds_for, peak_while, percentile, require_root,
    wait_until,
};

const VIP: &str = "10.96.0.10:80";
const PORT: u16 = 8080;
const PER_CLIENT: usize = 10;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(2500);
/// A refused connect in reject mode must fail at once (REFERENCE.md: "refused at once").
const REJECT_LATENCY: Duration = Duration::from_millis(50);
const WAIT: Duration = Duration::from_secs(5);
/// A SYN dropped here is retried after about 1 s: a caller that waited less was not dropped.
const SYN_RETRY: Duration = Duration::from_millis(900);

/// Client pods 1..=clients, server pods after them, each with a hold server on :8080 behind
/// the VIP, and a daemon started after every namespace exists (so sk_lookup covers them all).
struct Cluster {
    daemon: Daemon,
    servers: Vec<HoldServer>,
    backends: Vec<SocketAddr>,
    clients: Vec<u8>,
    bed: Testbed, // last: dropped after the sockets that live in it
}

impl Cluster {
    fn new(clients: u8, servers: u8) -> Self {
        let bed = Testbed::new(clients + servers);
        let backends: Vec<SocketAddr> = (clients + 1..=clients + servers)
            .map(|i| bed.pod(i).addr_v4(PORT))
            .collect();
        bed.add_service(vip(), &backends);
        let servers = backends
            .iter()
            .zip(clients + 1..)
            .map(|(addr, i)| bed.pod(i).hold_server(*addr))
            .collect();
        Self {
            daemon: Daemon::start(),
            servers,
            backends,
            clients: (1..=clients).collect(),
            bed,
        }
    }

    fn set(&self, dest: impl ToString, args: &[&str]) {
        let mut full = vec!["--max-connections", "5"];
        full.extend_from_slice(args);
        self.daemon.set(dest.to_string(), &full);
    }

    /// Every client pod makes `PER_CLIENT` parallel connects to the VIP, all at the same time.
    fn connect_all_clients(&self) -> Vec<ConnectAttempt> {
        self.bed
            .connect_from_pods(&self.clients, vip(), PER_CLIENT, CONNECT_TIMEOUT)
    }

    fn accepted(&self) -> Vec<usize> {
        self.servers
            .iter()
            .map(HoldServer::accepted_count)
            .collect()
    }

    /// The reject-mode outcome every scenario expects: exactly `expected` connected, every
    /// other attempt refused with ECONNREFUSED within 50 ms, and the servers accepted exactly
    /// `expected` in total (and hold them). Prints the figures.
    #[track_caller]
    fn expect_reject_outcome(&self, label: &str, attempts: &[ConnectAttempt], expected: usize) {
        let o = Outcomes::of(attempts);
        println!("{label}: {}", o.summary());
        assert_eq!(o.ok.len(), expected, "{label}: {}", o.summary());
        assert_eq!(
            o.refused.len(),
            attempts.len() - expected,
            "{label}: every other attempt is refused with ECONNREFUSED: {}",
            o.summary()
        );
        let slowest = o.refused.iter().max().copied().unwrap_or_default();
        assert!(
            slowest < REJECT_LATENCY,
            "{label}: a refusal took {slowest:?} (p50 {:?}); reject mode refuses at once",
            percentile(&o.refused, 50).unwrap_or_default()
        );
        let held = || {
            self.servers
                .iter()
                .map(HoldServer::open_count)
                .sum::<usize>()
        };
        assert!(
            wait_until(WAIT, || held() == expected),
            "{label}: servers hold {} connections, accepted {:?}; {expected} connected",
            held(),
            self.accepted()
        );
        assert!(
            holds_for(Duration::from_millis(200), || self
                .accepted()
                .iter()
                .sum::<usize>()
                == expected),
            "{label}: servers accepted {:?} in total, clients connected {expected}",
            self.accepted()
        );
        println!("{label}: servers accepted {:?}", self.accepted());
    }

    /// Waits until `dest` shows `side.active == active` and `side.refused.limit.reject == refusals`.
    #[track_caller]
    fn expect_counters(&self, dest: SocketAddr, side: &str, active: u64, refusals: u64) {
        let what = format!("{side}.active == {active}, {side}.refused.limit.reject == {refusals}");
        self.daemon.wait_for_dest(dest, WAIT, &what, |d| {
            counter(d, side, "active") == active && refused(d, side, "limit", "reject") == refusals
        });
    }
}

fn vip() -> SocketAddr {
    VIP.parse().expect("VIP is an address")
}

/// 1 client, 1 server pod, server-side limit on the pod: 5 connect, 5 are refused at once.
#[test]
fn scenario_1_one_client_one_server_server_side() {
    let _root = require_root();
    let c = Cluster::new(1, 1);
    let pod = c.backends[0];
    c.set(pod, &["--side", "server"]);

    let attempts = c.connect_all_clients();
    c.expect_reject_outcome("scenario 1 (1 client, 1 server)", &attempts, 5);
    c.expect_counters(pod, "inbound", 5, 5);
}

/// 1 client, 3 server pods, client-side limit on the VIP: still 5, the limit covers the
/// service, not each replica.
#[test]
fn scenario_2_one_client_three_servers_client_side() {
    let _root = require_root();
    let c = Cluster::new(1, 3);
    c.set(vip(), &["--side", "client"]);

    let attempts = c.connect_all_clients();
    c.expect_reject_outcome("scenario 2 (1 client, 3 servers)", &attempts, 5);
    c.expect_counters(vip(), "outbound", 5, 5);
    assert!(
        c.accepted().iter().all(|&n| n >= 1),
        "round-robin reached every replica: {:?}",
        c.accepted()
    );
}

/// 3 clients, 1 server pod, server-side limit: 5 in total, whoever asks.
#[test]
fn scenario_3_three_clients_one_server_server_side() {
    let _root = require_root();
    let c = Cluster::new(3, 1);
    let pod = c.backends[0];
    c.set(pod, &["--side", "server"]);

    let attempts = c.connect_all_clients();
    c.expect_reject_outcome("scenario 3 (3 clients, 1 server)", &attempts, 5);
    c.expect_counters(pod, "inbound", 5, 25);
}

/// 3 clients and `servers` server pods, a server-side limit of 5 per pod and a client-side
/// limit of 5 on the VIP (which counts per client pod, like a sidecar per client): 15.
fn scenario_4(servers: u8) {
    let _root = require_root();
    let c = Cluster::new(3, servers);
    c.set(vip(), &["--side", "client"]);
    for pod in &c.backends {
        c.set(pod, &["--side", "server"]);
    }

    let attempts = c.connect_all_clients();
    let label = format!("scenario 4 (3 clients, {servers} servers)");
    c.expect_reject_outcome(&label, &attempts, 15);
    for (client, per_client) in c.clients.iter().zip(attempts.chunks(PER_CLIENT)) {
        let ok = per_client.iter().filter(|a| a.result.is_ok()).count();
        assert_eq!(
            ok, 5,
            "{label}: client pod {client} connected {ok}, its own limit is 5"
        );
    }
    assert!(
        c.accepted().iter().all(|&n| n <= 5),
        "{label}: no replica over its limit: {:?}",
        c.accepted()
    );
    c.expect_counters(vip(), "outbound", 15, 15);
    for (pod, &accepted) in c.backends.iter().zip(&c.accepted()) {
        c.daemon
            .wait_for_dest(*pod, WAIT, "inbound.active == accepted", |d| {
                counter(d, "inbound", "active") == accepted as u64
            });
    }
}

#[test]
fn scenario_4_three_clients_three_servers_both_sides() {
    scenario_4(3);
}

/// With a fourth replica still 15: each client admits only 5.
#[test]
fn scenario_4_three_clients_four_servers_both_sides() {
    scenario_4(4);
}

/// Drop mode: the 5 excess connects hang on SYN retries and run into their 2.5 s timeout
/// while the 5 winners hold their connections.
fn drop_excess_times_out(label: &str, c: &Cluster, dest: SocketAddr, side: &str) {
    let attempts = c.connect_all_clients();
    let o = Outcomes::of(&attempts);
    println!("{label}: {}", o.summary());
    assert_eq!(
        (o.ok.len(), o.timed_out.len()),
        (5, 5),
        "{label}: 5 connect, 5 time out: {}",
        o.summary()
    );
    let first_waiter = o.timed_out.iter().min().copied().unwrap_or_default();
    assert!(
        first_waiter >= SYN_RETRY,
        "{label}: an excess connect failed after {first_waiter:?}, before any SYN retry"
    );
    let slowest_winner = o.ok.iter().max().copied().unwrap_or_default();
    assert!(
        slowest_winner < SYN_RETRY,
        "{label}: a winner needed {slowest_winner:?}, a SYN retry: its first SYN was dropped"
    );
    assert!(
        holds_for(Duration::from_millis(200), || c
            .accepted()
            .iter()
            .sum::<usize>()
            == 5),
        "{label}: servers accepted {:?}, 5 connected",
        c.accepted()
    );
    let what = format!("{side}.active == 5 and {side}.refused.limit.drop >= 5");
    c.daemon.wait_for_dest(dest, WAIT, &what, |d| {
        counter(d, side, "active") == 5 && refused(d, side, "limit", "drop") >= 5
    });
}

/// Drop mode with winners that close after 1.5 s: the 5 waiters get in on a SYN retry
/// (about 2 s after they started), and the servers never hold more than 5 at once.
fn drop_waiters_get_in_when_winners_close(label: &str, c: &Cluster, dest: SocketAddr, side: &str) {
    let held = || c.servers.iter().map(HoldServer::open_count).sum::<usize>() as u64;
    let active = || counter(&c.daemon.dest_status(dest), side, "active");
    let client = c.bed.pod(c.clients[0]);
    let ((attempts, active_peak, _), held_peak, samples) =
        peak_while(Duration::from_millis(1), held, || {
            peak_while(Duration::from_millis(5), active, || {
                client.connect_many_holding(
                    vip(),
                    PER_CLIENT,
                    Duration::from_secs(5),
                    Duration::from_millis(1500),
                )
            })
        });
    let o = Outcomes::of(&attempts);
    let (late, early): (Vec<Duration>, Vec<Duration>) = o.ok.iter().partition(|&&d| d >= SYN_RETRY);
    println!(
        "{label}: {}; late connects p50 {:?}; peak held by servers {held_peak} ({samples} samples), \
         peak {side}.active {active_peak}",
        o.summary(),
        percentile(&late, 50).unwrap_or_default()
    );
    assert_eq!(
        o.ok.len(),
        PER_CLIENT,
        "{label}: everyone gets in: {}",
        o.summary()
    );
    assert_eq!(
        (early.len(), late.len()),
        (5, 5),
        "{label}: 5 at once, 5 on a retry: {early:?} {late:?}"
    );
    let slowest = late.iter().max().copied().unwrap_or_default();
    assert!(
        slowest <= Duration::from_millis(3200),
        "{label}: a waiter needed {slowest:?}; the slots were free from 1.5 s on"
    );
    assert_eq!(held_peak, 5, "{label}: servers held at most 5 at once");
    assert!(
        active_peak <= 5,
        "{label}: {side}.active peaked at {active_peak}"
    );
    assert_eq!(
        c.accepted().iter().sum::<usize>(),
        PER_CLIENT,
        "{label}: {:?}",
        c.accepted()
    );
}

#[test]
fn scenario_1_drop_mode_excess_connects_time_out() {
    let _root = require_root();
    let c = Cluster::new(1, 1);
    let pod = c.backends[0];
    c.set(pod, &["--side", "server", "--mode", "drop"]);
    drop_excess_times_out("scenario 1, drop", &c, pod, "inbound");
}

#[test]
fn scenario_2_drop_mode_excess_connects_time_out() {
    let _root = require_root();
    let c = Cluster::new(1, 3);
    c.set(vip(), &["--side", "client", "--mode", "drop"]);
    drop_excess_times_out("scenario 2, drop", &c, vip(), "outbound");
}

#[test]
fn scenario_1_drop_mode_waiters_get_in_when_winners_close() {
    let _root = require_root();
    let c = Cluster::new(1, 1);
    let pod = c.backends[0];
    c.set(pod, &["--side", "server", "--mode", "drop"]);
    drop_waiters_get_in_when_winners_close("scenario 1, drop, closing", &c, pod, "inbound");
}

#[test]
fn scenario_2_drop_mode_waiters_get_in_when_winners_close() {
    let _root = require_root();
    let c = Cluster::new(1, 3);
    c.set(vip(), &["--side", "client", "--mode", "drop"]);
    drop_waiters_get_in_when_winners_close("scenario 2, drop, closing", &c, vip(), "outbound");
}
