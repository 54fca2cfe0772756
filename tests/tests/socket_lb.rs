//! A socket load balancer (Cilium's kube-proxy replacement) on the same `connect4` hook as
//! limiter. The stand-in ([`SocketLb`]) rewrites the VIP to a backend inside `connect()`,
//! round-robin, with no DNAT and no listener on the VIP.

use std::net::{SocketAddr, SocketAddrV4};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use limiter_common::sys::{prog_by_id, prog_name};
use limiter_integration_tests::foreign::{CONNECT4, effective};
use limiter_integration_tests::socket_lb::PROG_NAME;
use limiter_integration_tests::{
    BpffsMount, Daemon, HoldServer, SocketLb, Testbed, cgroup2_root, limiter_bin, require_root,
    wait_until,
};
use serde_json::Value;
use tempfile::TempDir;

const VIP: &str = "10.96.0.10:80";
const TARGET_PORT: u16 = 8080;
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
