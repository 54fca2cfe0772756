//! Circuit breaking of a Service (`svc/default/web`: ClusterIP 10.96.0.10:80 -> 8080, endpoints
//! pods 2, 3 and 4, client pod 1), issue #13's third "Done when":
//! - behind a socket load balancer that translates before limiter (the stand-in of
//!   tests/socket_lb.rs attached before the daemon), `connect()` shows the endpoint: one breaker
//!   per endpoint, at most `--breaker-max-ejection 50` % of the 3 open (1), so the dead endpoint
//!   is ejected and the other two carry every connection that goes out; a second dead endpoint
//!   is not ejected (overflow);
//! - with only the ClusterIP visible (kube-proxy DNAT), one breaker for the Service; the SRE
//!   throttle (K 2) rejects nothing at 1 failure in 3 and most, not all, attempts when every
//!   endpoint is dead.
//!
//! Dead endpoints have no listener (RST). SYNs reaching each endpoint are counted in its own
//! namespace ([`Wire`]); a connect refused by a breaker sends none.

use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use limiter_integration_tests::breaker::{
    FAST, Wire, breaker_for, breakers_of, connect_once, failures, is_refused, not_closed, num,
};
use limiter_integration_tests::kube_api::FakeKubeApi;
use limiter_integration_tests::status::{find_destination, find_destination_text, refused};
use limiter_integration_tests::{
    BpffsMount, Daemon, HoldServer, SocketLb, Testbed, cgroup2_root, peak_while, require_root,
    wait_until,
};
use serde_json::Value;
use tempfile::TempDir;

const VIP: &str = "10.96.0.10:80";
const TARGET_PORT: u16 = 8080;
const SVC: &str = "svc/default/web";
const THIS_NODE: &str = "node-a";
const WAIT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// The socket-LB stand-in runs before limiter's connect4: limiter sees the endpoint.
    LbBefore,
    /// iptables DNAT in the node namespace (kube-proxy): limiter sees the ClusterIP.
    Dnat,
}

/// The Service, its endpoints' SYN counters, and a daemon with the `svc/` rule in force.
struct Cluster {
    daemon: Daemon,
    _api: FakeKubeApi,
    _lb: Option<SocketLb>,
    _pins: Option<BpffsMount>,
    _pins_dir: TempDir, // after the mount
    bed: Testbed,       // last: dropped after what lives in it
}

impl Cluster {
    fn new(mode: Mode, rule: &[&str]) -> Self {
        let bed = Testbed::new(4);
        let backends: Vec<SocketAddrV4> = (2..=4)
            .map(|i| match bed.pod(i).addr_v4(TARGET_PORT) {
                SocketAddr::V4(a) => a,
                SocketAddr::V6(a) => unreachable!("{a}"),
            })
            .collect();
        let vip: SocketAddrV4 = VIP.parse().expect("VIP");
        if mode == Mode::Dnat {
            let targets: Vec<SocketAddr> = backends.iter().map(|b| (*b).into()).collect();
            bed.add_service(vip.into(), &targets);
        }
        let api = FakeKubeApi::with_web_service(vip, TARGET_PORT, &backends, THIS_NODE);

        let pins_dir = tempfile::tempdir().expect("temp dir");
        let (pins, lb) = match mode {
            Mode::LbBefore => {
                let pins = BpffsMount::new(pins_dir.path().join("bpffs"));
                let lb = SocketLb::attach(&cgroup2_root(), vip, &backends, pins.path());
                (Some(pins), Some(lb))
            }
            Mode::Dnat => (None, None),
        };
        let daemon = Daemon::start_with(&api.daemon_args(THIS_NODE));
        daemon.set(SVC, rule);
        let mut last = Value::Null;
        let resolved = wait_until(WAIT, || {
            last = daemon.status_json();
            find_destination_text(&last, SVC).is_some_and(|e| e["service_state"] == "resolved")
                && find_destination(&last, vip.into()).is_some_and(|d| d["service"] == SVC)
        });
        assert!(resolved, "{SVC} not resolved to a rule on {VIP}: {last:#}");
        Self {
            daemon,
            _api: api,
            _lb: lb,
            _pins: pins,
            _pins_dir: pins_dir,
            bed,
        }
    }

    fn endpoint(&self, pod: u8) -> SocketAddr {
        self.bed.pod(pod).addr_v4(TARGET_PORT)
    }

    /// The breakers of the `svc/` rule, as its status entry lists them.
    fn breakers(&self) -> Vec<Value> {
        breakers_of(&self.daemon.status_json(), &[SVC])
    }

    /// `outbound.refused.breaker.reject` of the `svc/` rule.
    fn breaker_refusals(&self) -> u64 {
        let status = self.daemon.status_json();
        let entry = find_destination_text(&status, SVC)
            .unwrap_or_else(|| panic!("{SVC} not in status: {status:#}"));
        refused(entry, "outbound", "breaker", "reject")
    }

    /// `n` connects to the VIP from pod 1, one after the other, each of which succeeds or is
    /// refused at once (by the endpoint's RST or a breaker). Returns (succeeded, refused).
    #[track_caller]
    fn drive(&self, n: usize, what: &str) -> (usize, usize) {
        let vip: SocketAddr = VIP.parse().expect("VIP");
        let (mut ok, mut no) = (0, 0);
        for _ in 0..n {
            let a = connect_once(self.bed.pod(1), vip, Duration::from_secs(2));
            match &a.result {
                Ok(_) => ok += 1,
                Err(e) => {
                    assert!(
                        is_refused(&a) && a.elapsed < FAST,
                        "{what}: {e} after {:?}",
                        a.elapsed
                    );
                    no += 1;
                }
            }
        }
        (ok, no)
    }
}

fn accepted(servers: &[&HoldServer]) -> usize {
    servers.iter().map(|s| s.accepted_count()).sum()
}

/// Per-endpoint breakers behind a socket LB, max ejection 50 %: with pod 4 dead it is ejected
/// after 3 failures and pods 2 and 3 take every connection that goes out; then pod 3 dies too
/// and is not ejected (1 of 3 at most), its failures counted as ejection overflow.
#[test]
fn svc_per_endpoint_breakers_eject_at_most_half() {
    let _root = require_root();
    let c = Cluster::new(
        Mode::LbBefore,
        &[
            "--side",
            "client",
            "--breaker-consecutive",
            "3",
            "--breaker-max-ejection",
            "50",
            "--breaker-open",
            "30s",
        ],
    );
    let eps: Vec<SocketAddr> = (2..=4).map(|i| c.endpoint(i)).collect();
    let wires: Vec<Wire> = (2..=4)
        .map(|i| Wire::new(c.bed.pod(i), TARGET_PORT))
        .collect();
    let s2 = c.bed.pod(2).hold_server(eps[0]);
    let mut s3 = Some(c.bed.pod(3).hold_server(eps[1]));
    let open_count = || not_closed(&c.breakers()) as u64;

    // Pod 4 dead: 30 connects, round-robin over the three.
    let ((ok, no), peak, _) = peak_while(Duration::from_millis(20), open_count, || {
        c.drive(30, "pod 4 dead")
    });
    println!("pod 4 dead: {ok} connected, {no} refused, peak {peak} breaker(s) open");
    let servers = [&s2, s3.as_ref().expect("pod 3 serves")];
    assert!(
        wait_until(WAIT, || accepted(&servers) == ok),
        "accepted {}",
        accepted(&servers)
    );
    assert_eq!(ok, 20, "pods 2 and 3 take their 20 of 30");
    assert_eq!(
        wires[2].syns(),
        3,
        "pod 4 gets 3 SYNs (the 3 failures), none once ejected"
    );
    let all = c.breakers();
    let dead =
        breaker_for(&all, eps[2]).unwrap_or_else(|| panic!("no breaker for pod 4: {all:#?}"));
    assert_eq!(dead["state"], "open", "{dead:#}");
    assert_eq!(failures(dead, "refused"), 3, "{dead:#}");
    for ep in &eps[..2] {
        let b = breaker_for(&all, *ep).unwrap_or_else(|| panic!("no breaker for {ep}: {all:#?}"));
        assert_eq!(
            (b["state"].as_str(), num(b, "consecutive_failures")),
            (Some("closed"), 0)
        );
    }
    assert_eq!(
        c.breaker_refusals(),
        (no - 3) as u64,
        "refusals by the breaker: {all:#?}"
    );
    assert!(peak <= 1, "{peak} breakers open at once");

    // Pod 3 dies too: its breaker may not open (1 of 3 already is); its connects go out.
    drop(s3.take());
    let (syn3, refusals) = (wires[1].syns(), c.breaker_refusals());
    let ((ok, no), peak, _) = peak_while(Duration::from_millis(20), open_count, || {
        c.drive(30, "pods 3 and 4 dead")
    });
    println!("pods 3 and 4 dead: {ok} connected, {no} refused, peak {peak} breaker(s) open");
    assert!(
        peak <= 1,
        "{peak} of 3 breakers open at once (max ejection 50 %)"
    );
    assert_eq!(ok, 10, "pod 2 takes its 10 of 30");
    assert_eq!(
        wires[1].syns() - syn3,
        10,
        "pod 3 is not ejected: its 10 SYNs go out"
    );
    assert_eq!(wires[2].syns(), 3, "pod 4 stays ejected");
    assert_eq!(
        c.breaker_refusals() - refusals,
        10,
        "pod 4's 10 are refused by its breaker"
    );
    let all = c.breakers();
    let b3 = breaker_for(&all, eps[1]).unwrap_or_else(|| panic!("no breaker for pod 3: {all:#?}"));
    assert_eq!(b3["state"], "closed", "{b3:#}");
    assert!(num(b3, "ejection_overflow_total") >= 1, "{b3:#}");
    assert_eq!(not_closed(&all), 1, "{all:#?}");
    assert_eq!(
        breaker_for(&all, eps[2]).map(|b| b["state"].clone()),
        Some("open".into())
    );
}

/// Only the ClusterIP visible (DNAT after connect()): one breaker, the Service's, with the SRE
/// throttle (K 2, window 2 s). One dead endpoint of three: no local rejection. All dead (and
/// the healthy window gone by): most attempts are rejected locally, but not all.
#[test]
fn svc_vip_only_sre_throttle() {
    let _root = require_root();
    let c = Cluster::new(
        Mode::Dnat,
        &[
            "--side",
            "client",
            "--breaker-sre",
            "2",
            "--breaker-window",
            "2s",
        ],
    );
    let wires: Vec<Wire> = (2..=4)
        .map(|i| Wire::new(c.bed.pod(i), TARGET_PORT))
        .collect();
    let syns = || wires.iter().map(Wire::syns).sum::<u64>();
    let mut servers: Vec<HoldServer> = (2..=3)
        .map(|i| c.bed.pod(i).hold_server(c.endpoint(i)))
        .collect();

    let (ok, no) = c.drive(30, "1 of 3 dead");
    println!(
        "1 of 3 dead: {ok} connected, {no} refused; SYNs to pod 4: {}",
        wires[2].syns()
    );
    assert_eq!(
        c.breaker_refusals(),
        0,
        "the throttle rejects nothing at 1 failure in 3"
    );
    assert_eq!(
        (ok, no),
        (20, 10),
        "kube-proxy's round-robin: 1 in 3 to the dead pod"
    );
    assert_eq!(wires[2].syns(), 10, "every failure is the dead pod's RST");
    let all = c.breakers();
    let vip: SocketAddr = VIP.parse().expect("VIP");
    assert_eq!(all.len(), 1, "one breaker, the ClusterIP's: {all:#?}");
    assert!(
        breaker_for(&all, vip).is_some_and(|b| b["state"] == "closed"),
        "{all:#?}"
    );

    servers.clear();
    std::thread::sleep(Duration::from_millis(4500)); // 2 windows: the successes are gone
    let (s0, r0) = (syns(), c.breaker_refusals());
    let n = 60;
    let (ok, no) = c.drive(n, "all dead");
    let (sent, rejected) = (syns() - s0, c.breaker_refusals() - r0);
    println!("all dead: {n} connects: {rejected} rejected locally, {sent} went out");
    assert_eq!((ok, no), (0, n), "nothing connects");
    assert_eq!(
        sent + rejected,
        n as u64,
        "each attempt went out or was rejected locally"
    );
    assert!(
        rejected > n as u64 / 2,
        "most are rejected: {rejected} of {n}"
    );
    assert!(sent >= 1, "not all: some still go out ({sent})");
    let b = breaker_for(&c.breakers(), vip)
        .cloned()
        .expect("the ClusterIP's breaker");
    assert_eq!(num(&b, "refused_total"), rejected, "{b:#}");
}
