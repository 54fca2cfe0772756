//! A socket load balancer (Cilium's kube-proxy replacement) on the same `connect4` hook as
//! limiter: a Service-name rule must limit the Service whatever address `connect()` shows.
//!
//! The stand-in ([`SocketLb`]) rewrites the VIP to a backend inside `connect()`, round-robin,
//! with no DNAT and no listener on the VIP. Istio's scenarios 2 and 4 (client side) with
//! `limiter set svc/default/web --max-connections 5 --side client` (Service default/web:
//! ClusterIP 10.96.0.10, port 80 -> 8080; its EndpointSlice lists the server pods) run in three
//! modes:
//! - `dnat`: iptables DNAT in the node namespace (kube-proxy), no stand-in: limiter sees the VIP;
//! - `lb_after`: the stand-in attached after the daemon started and the rule is in force: it
//!   runs after limiter's `connect4`, which sees the VIP;
//! - `lb_before`: the stand-in attached before the daemon starts: it runs first, and limiter's
//!   `connect4` sees a backend pod's address, not the VIP.

use std::net::{SocketAddr, SocketAddrV4};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use limiter_common::names::programs;
use limiter_common::sys::{prog_by_id, prog_name};
use limiter_integration_tests::foreign::{CONNECT4, effective};
use limiter_integration_tests::kube_api::FakeKubeApi;
use limiter_integration_tests::socket_lb::PROG_NAME;
use limiter_integration_tests::status::{counter, find_destination, find_destination_text};
use limiter_integration_tests::traffic::ConnectAttempt;
use limiter_integration_tests::{
    BpffsMount, Daemon, HoldServer, Outcomes, REJECT_LATENCY, SocketLb, Testbed, cgroup2_root,
    holds_for, limiter_bin, require_root, wait_until,
};
use serde_json::Value;
use tempfile::TempDir;

const VIP: &str = "10.96.0.10:80";
const TARGET_PORT: u16 = 8080;
const SVC: &str = "svc/default/web";
const THIS_NODE: &str = "node-a";
const PER_CLIENT: usize = 10;
const LIMIT: usize = 5;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(2500);
const WAIT: Duration = Duration::from_secs(10);

fn vip() -> SocketAddrV4 {
    VIP.parse().expect("VIP is an address")
}

/// A bpffs of the test's own for the stand-in's pin (not limiter's folder).
struct Pins {
    mount: BpffsMount,
    _dir: TempDir, // after the mount
}

impl Pins {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self {
            mount: BpffsMount::new(dir.path().join("bpffs")),
            _dir: dir,
        }
    }

    fn path(&self) -> &Path {
        self.mount.path()
    }
}

/// The ids of the programs on `connect4` at the cgroup root, in the order they run, with names.
fn connect4_chain() -> Vec<(u32, String)> {
    effective(CONNECT4, &cgroup2_root())
        .into_iter()
        .map(|id| {
            let name = prog_by_id(id)
                .and_then(|p| prog_name(&p))
                .unwrap_or_else(|e| format!("? ({e})"));
            (id, name)
        })
        .collect()
}

/// Where the stand-in and limiter's `connect4` run on the hook: (stand-in, limiter's).
fn positions(lb: &SocketLb) -> (usize, usize) {
    let chain = connect4_chain();
    let of = |pred: &dyn Fn(&(u32, String)) -> bool| {
        chain
            .iter()
            .position(pred)
            .unwrap_or_else(|| panic!("not on connect4: {chain:?}"))
    };
    (
        of(&|(id, _)| *id == lb.prog_id),
        of(&|(_, n)| n == programs::CONNECT4),
    )
}

/// With the stand-in attached, connects to the VIP (no DNAT, no listener) reach the backends'
/// servers round-robin, connected to the backend itself; without it, nothing answers there.
#[test]
fn socket_lb_spreads_vip_connects_round_robin() {
    let _root = require_root();
    let bed = Testbed::new(4);
    let backends: Vec<SocketAddrV4> = (2..=4)
        .map(|i| v4(bed.pod(i).addr_v4(TARGET_PORT)))
        .collect();
    let servers: Vec<HoldServer> = (2..=4)
        .zip(&backends)
        .map(|(i, b)| bed.pod(i).hold_server((*b).into()))
        .collect();
    let pins = Pins::new();
    let lb = SocketLb::attach(&cgroup2_root(), vip(), &backends, pins.path());
    assert!(
        effective(CONNECT4, &cgroup2_root()).contains(&lb.prog_id),
        "the stand-in does not run on connect4: {:?}",
        connect4_chain()
    );

    let conns = bed.pod(1).connect_all(vip().into(), 6);
    let accepted = || {
        servers
            .iter()
            .map(HoldServer::accepted_count)
            .collect::<Vec<_>>()
    };
    assert!(
        wait_until(WAIT, || accepted() == [2, 2, 2]),
        "6 connects over 3 backends, round-robin: accepted {:?}",
        accepted()
    );
    for c in &conns {
        let peer = c.peer_addr().expect("peer address");
        assert!(
            backends.iter().any(|b| SocketAddr::from(*b) == peer),
            "a VIP connect is connected to {peer}, not to a backend (the socket LB rewrites it)"
        );
    }
    drop(conns);

    let pin = lb.pin.clone();
    let id = lb.prog_id;
    drop(lb);
    assert!(!pin.exists(), "the stand-in's pin is left");
    assert!(
        !effective(CONNECT4, &cgroup2_root()).contains(&id),
        "the stand-in still runs on connect4 after drop: {:?}",
        connect4_chain()
    );
    let after = bed
        .pod(1)
        .connect_many_timed(vip().into(), 1, Duration::from_secs(1));
    assert!(
        after[0].result.is_err(),
        "a VIP connect without the stand-in connected (nothing serves the VIP)"
    );
    assert_eq!(accepted(), [2, 2, 2], "no server got more");
}

/// With the stand-in attached before the daemon, `limiter doctor` lists it on
/// `cgroup/connect4` as another agent's program, running before limiter's.
#[test]
fn doctor_lists_a_socket_lb_that_runs_before_ours() {
    let _root = require_root();
    let pins = Pins::new();
    let backend: SocketAddrV4 = "10.77.99.2:8080".parse().expect("an address");
    let lb = SocketLb::attach(&cgroup2_root(), vip(), &[backend], pins.path());
    let daemon = Daemon::start();
    let doctor = Command::new(limiter_bin())
        .args(["doctor", "-o", "json", "--bpffs"])
        .arg(daemon.bpffs())
        .output()
        .expect("run limiter doctor");
    let report: Value = serde_json::from_slice(&doctor.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor JSON: {e}: {}{}",
            String::from_utf8_lossy(&doctor.stdout),
            String::from_utf8_lossy(&doctor.stderr)
        )
    });
    let on_hook: Vec<&Value> = report["neighbours"]
        .as_array()
        .unwrap_or_else(|| panic!("no neighbours: {report:#}"))
        .iter()
        .filter(|p| p["hook"] == CONNECT4.name)
        .collect();
    let lb_at = on_hook
        .iter()
        .position(|p| p["name"] == PROG_NAME)
        .unwrap_or_else(|| panic!("{PROG_NAME} is not listed on {}: {report:#}", CONNECT4.name));
    assert_eq!(
        on_hook[lb_at]["ours"], false,
        "{PROG_NAME} is listed as ours: {report:#}"
    );
    let ours_at = on_hook
        .iter()
        .position(|p| p["ours"] == true)
        .unwrap_or_else(|| panic!("limiter's connect4 is not listed: {report:#}"));
    assert!(
        lb_at < ours_at,
        "the stand-in ({lb_at}) runs before ours ({ours_at}) and is listed so: {report:#}"
    );
    // And says which rules it affects: address rules on a VIP, not svc/ rules.
    let note = on_hook[lb_at]["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("address rule on a Service VIP is bypassed") && note.contains("svc/"),
        "the stand-in's note: {report:#}"
    );
    let warned = report["warnings"].as_array().is_some_and(|w| {
        w.iter()
            .any(|w| w.as_str().is_some_and(|w| w.contains(PROG_NAME)))
    });
    assert!(warned, "doctor warns about {PROG_NAME}: {report:#}");
    println!(
        "doctor on {}: {}",
        CONNECT4.name,
        serde_json::to_string(&on_hook).expect("JSON")
    );
    drop(daemon);
    drop(lb);
}

fn v4(addr: SocketAddr) -> SocketAddrV4 {
    match addr {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(a) => panic!("{a} is not IPv4"),
    }
}

/// How the Service's VIP reaches its backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// iptables DNAT in the node namespace (kube-proxy); no socket LB.
    Dnat,
    /// The socket LB attached after the daemon started and the rule is in force.
    LbAfter,
    /// The socket LB attached before the daemon starts (it runs before limiter's connect4).
    LbBefore,
}

/// Client pods 1..=clients and server pods after them (hold servers on :8080), Service
/// default/web resolved by a daemon through a fake API, and the rule `svc/default/web` with a
/// client-side limit of 5 in force, the VIP reached as `mode` says.
struct Cluster {
    label: String,
    lb: Option<SocketLb>,
    daemon: Daemon,
    _api: FakeKubeApi,
    servers: Vec<HoldServer>,
    clients: Vec<u8>,
    _pins: Pins,
    bed: Testbed, // last: dropped after the sockets that live in it
}

impl Cluster {
    fn new(clients: u8, servers: u8, mode: Mode) -> Self {
        let label = format!("{clients} client(s), {servers} server(s), {mode:?}");
        let bed = Testbed::new(clients + servers);
        let backends: Vec<SocketAddrV4> = (clients + 1..=clients + servers)
            .map(|i| v4(bed.pod(i).addr_v4(TARGET_PORT)))
            .collect();
        let hold: Vec<HoldServer> = (clients + 1..)
            .zip(&backends)
            .map(|(i, b)| bed.pod(i).hold_server((*b).into()))
            .collect();
        if mode == Mode::Dnat {
            let targets: Vec<SocketAddr> = backends.iter().map(|b| (*b).into()).collect();
            bed.add_service(vip().into(), &targets);
        }

        let api = FakeKubeApi::with_web_service(vip(), TARGET_PORT, &backends, THIS_NODE);

        let pins = Pins::new();
        let cgroup = cgroup2_root();
        let mut lb = (mode == Mode::LbBefore)
            .then(|| SocketLb::attach(&cgroup, vip(), &backends, pins.path()));
        let daemon = Daemon::start_with(&api.daemon_args(THIS_NODE));
        daemon.set(
            SVC,
            &["--max-connections", &LIMIT.to_string(), "--side", "client"],
        );
        wait_resolved(&daemon);
        if mode == Mode::LbAfter {
            lb = Some(SocketLb::attach(&cgroup, vip(), &backends, pins.path()));
        }
        if let Some(lb) = &lb {
            let (lb_at, ours_at) = positions(lb);
            let before = mode == Mode::LbBefore;
            assert_eq!(
                lb_at < ours_at,
                before,
                "{label}: connect4 runs {:?}",
                connect4_chain()
            );
        }
        Self {
            label,
            lb,
            daemon,
            _api: api,
            servers: hold,
            clients: (1..=clients).collect(),
            _pins: pins,
            bed,
        }
    }

    /// Every client pod makes `PER_CLIENT` parallel connects to the VIP, all at the same time.
    fn connect_all_clients(&self) -> Vec<ConnectAttempt> {
        self.bed
            .connect_from_pods(&self.clients, vip().into(), PER_CLIENT, CONNECT_TIMEOUT)
    }

    fn accepted(&self) -> Vec<usize> {
        self.servers
            .iter()
            .map(HoldServer::accepted_count)
            .collect()
    }

    fn svc_outbound_active(&self) -> u64 {
        let status = self.daemon.status_json();
        find_destination_text(&status, SVC)
            .map(|d| counter(d, "outbound", "active"))
            .unwrap_or_else(|| panic!("{SVC} is not in `limiter status`: {status:#}"))
    }

    /// Each client pod connects `PER_CLIENT` times at once and holds what it gets: exactly
    /// `LIMIT` per client pod connect, the others are refused at once with ECONNREFUSED; the
    /// servers hold the admitted ones and the `svc/` entry counts them as outbound active.
    fn expect_limit_per_client(&self) {
        let label = &self.label;
        let attempts = self.connect_all_clients();
        let o = Outcomes::of(&attempts);
        let per_client: Vec<usize> = attempts
            .chunks(PER_CLIENT)
            .map(|c| c.iter().filter(|a| a.result.is_ok()).count())
            .collect();
        let expected = LIMIT * self.clients.len();
        let held = || {
            self.servers
                .iter()
                .map(HoldServer::open_count)
                .sum::<usize>()
        };
        wait_until(Duration::from_secs(2), || held() == o.ok.len());
        println!(
            "{label}: {}; per client pod {per_client:?}; servers accepted {:?}; {SVC} \
             outbound.active {}",
            o.summary(),
            self.accepted(),
            self.svc_outbound_active()
        );
        assert_eq!(
            per_client,
            vec![LIMIT; self.clients.len()],
            "{label}: each client pod connects {LIMIT} of {PER_CLIENT} (limit {LIMIT} per \
             client pod): {}; servers accepted {:?}",
            o.summary(),
            self.accepted()
        );
        assert_eq!(
            o.refused.len(),
            attempts.len() - expected,
            "{label}: every other attempt is refused with ECONNREFUSED: {}",
            o.summary()
        );
        let slowest = o.refused.iter().max().copied().unwrap_or_default();
        assert!(
            slowest < REJECT_LATENCY,
            "{label}: a refusal took {slowest:?}; reject mode refuses at once"
        );
        assert!(
            wait_until(WAIT, || held() == expected)
                && holds_for(Duration::from_millis(200), || self
                    .accepted()
                    .iter()
                    .sum::<usize>()
                    == expected),
            "{label}: servers hold {} and accepted {:?}; {expected} connected",
            held(),
            self.accepted()
        );
        let mut last = 0;
        assert!(
            wait_until(WAIT, || {
                last = self.svc_outbound_active();
                last == expected as u64
            }),
            "{label}: {SVC} outbound.active is {last} while {expected} are held"
        );
        if let Some(lb) = &self.lb {
            // The stand-in was in the path: the servers saw the VIP connects without DNAT.
            assert!(
                self.accepted().iter().filter(|&&n| n > 0).count() > 1,
                "{label}: the socket LB ({}) spread nothing: {:?}",
                lb.prog_id,
                self.accepted()
            );
        }
    }
}

/// Waits until the `svc/` rule is resolved and its client-side rule on the VIP is in force.
#[track_caller]
fn wait_resolved(daemon: &Daemon) {
    let mut last = Value::Null;
    let ok = wait_until(WAIT, || {
        last = daemon.status_json();
        let entry = find_destination_text(&last, SVC);
        let resolved = entry.is_some_and(|e| {
            e["service_state"] == "resolved"
                && e["resolved"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|d| d == VIP))
        });
        let derived = find_destination(&last, vip().into())
            .is_some_and(|d| d["service"] == SVC && d["rule"]["side"] == "client");
        resolved && derived
    });
    assert!(
        ok,
        "{SVC} is not resolved to a client-side rule on {VIP} within {WAIT:?}: {last:#}"
    );
}

/// Scenario 2: 1 client pod, 3 server pods: 5 connect, 5 are refused at once.
fn scenario_2(mode: Mode) {
    let _root = require_root();
    Cluster::new(1, 3, mode).expect_limit_per_client();
}

/// Scenario 4, client side: 3 client pods, 4 server pods: 15, 5 per client pod.
fn scenario_4(mode: Mode) {
    let _root = require_root();
    Cluster::new(3, 4, mode).expect_limit_per_client();
}

#[test]
fn scenario_2_svc_rule_dnat() {
    scenario_2(Mode::Dnat);
}

#[test]
fn scenario_2_svc_rule_lb_after() {
    scenario_2(Mode::LbAfter);
}

#[test]
fn scenario_2_svc_rule_lb_before() {
    scenario_2(Mode::LbBefore);
}

#[test]
fn scenario_4_svc_rule_dnat() {
    scenario_4(Mode::Dnat);
}

#[test]
fn scenario_4_svc_rule_lb_after() {
    scenario_4(Mode::LbAfter);
}

#[test]
fn scenario_4_svc_rule_lb_before() {
    scenario_4(Mode::LbBefore);
}
