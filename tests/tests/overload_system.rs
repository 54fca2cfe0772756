//! The kernel side of overload protection, driven by the node-wide system rule rather than by a
//! CPU-bound workload (tests/tests/overload.rs does that), so the outcome does not depend on how
//! busy the machine is: the rule's `max-load1` is set to about half the node's current load, so
//! the node counts as overloaded by a factor of about 2 for the whole test.
//!
//! What a user relies on: under node overload the sheddable destination is cut before the
//! critical one and neither to zero, refusals are counted as `shed`, the limit never cuts an
//! established connection, and a dead daemon leaves nothing shed after the 1 s expiry.

use std::net::SocketAddr;
use std::time::Duration;

use limiter_integration_tests::cgroup::CpuCgroup;
use limiter_integration_tests::status::{counter, refused};
use limiter_integration_tests::{Daemon, Outcomes, Pod, Testbed, require_root};
use serde_json::Value;

fn load1() -> f64 {
    let text = std::fs::read_to_string("/proc/loadavg").expect("read /proc/loadavg");
    text.split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .expect("a number first in /proc/loadavg")
}

/// Connections that open and close at once, so the destination's window has completions and
/// its `maxInflight` exists (the floor, 4, for connections this short).
fn warm_up(client: &Pod, dest: SocketAddr) {
    for _ in 0..8 {
        drop(client.connect_all(dest, 1));
        std::thread::sleep(Duration::from_millis(30));
    }
}

fn shed_limit(d: &Value) -> Option<u64> {
    d["shed_limit"].as_u64()
}

#[test]
fn node_overload_sheds_sheddable_first_and_a_dead_daemon_sheds_nothing() {
    let _root = require_root();
    let bed = Testbed::new(3);
    let client = bed.pod(1);
    let critical = bed.pod(2).addr_v4(8080);
    let sheddable = bed.pod(3).addr_v4(8080);
    let _servers = [
        bed.pod(2).hold_server(critical),
        bed.pod(3).hold_server(sheddable),
    ];
    // The destinations' own CPU is an idle cgroup's, so only the system rule arms the check
    // (the hold servers are threads of this test process, whose CPU would be anyone's guess).
    let idle = CpuCgroup::new("overload-system", 1.0);
    let cgroup = idle.path();
    // A state dir, as the production default has: the runtime system rule lives there.
    let state = tempfile::tempdir().expect("a temporary state dir");
    let mut daemon = Daemon::start_with(&["--state-dir".as_ref(), state.path().as_os_str()]);
    let adaptive = [
        "--adaptive",
        "--side",
        "server",
        "--workload-cgroup",
        &cgroup,
    ];
    daemon.set(critical, &adaptive);
    let mut sheddable_args = adaptive.to_vec();
    sheddable_args.extend(["--priority", "sheddable"]);
    daemon.set(sheddable, &sheddable_args);
    for dest in [critical, sheddable] {
        // Completions count from the check's first look at the rule (earlier ones have no time).
        daemon.wait_for_dest(dest, Duration::from_secs(3), "the check running", |d| {
            d["cpu_source"].is_string()
        });
        warm_up(client, dest);
        daemon.wait_for_dest(dest, Duration::from_secs(5), "a maxInflight", |d| {
            d["max_inflight"].as_u64().is_some()
        });
        let d = daemon.dest_status(dest);
        assert_eq!(d["shedding"], false, "no overload yet: {d:#}");
        assert_eq!(d["cpu_source"], format!("cgroup {cgroup}"));
    }

    let bound = format!("{:.3}", (load1() / 2.0).max(0.001));
    daemon.cli_ok(&["system", "set", "--max-load1", &bound]);
    let shedding = |d: &Value| d["shedding"] == true && shed_limit(d).is_some();
    let crit = daemon.wait_for_dest(critical, Duration::from_secs(3), "shedding", shedding);
    let shed = daemon.wait_for_dest(sheddable, Duration::from_secs(3), "shedding", shedding);
    let (crit_limit, shed_limit) = (shed_limit(&crit).unwrap(), shed_limit(&shed).unwrap());
    eprintln!(
        "system rule max-load1 {bound} (load1 {:.2}): critical limit {crit_limit}, sheddable limit {shed_limit} (maxInflight {} / {})",
        load1(),
        crit["max_inflight"],
        shed["max_inflight"]
    );
    assert!(shed_limit >= 1, "a class is never shed to zero");
    assert!(
        shed_limit < crit_limit,
        "sheddable ({shed_limit}) is cut before critical ({crit_limit})"
    );
    let status = daemon.status_json();
    assert_eq!(status["node"]["overloaded"], true, "{}", status["node"]);

    // Ten connections held open to each: each gets in up to its limit, the rest is refused.
    let attempts_crit = client.connect_many_timed(critical, 10, Duration::from_secs(3));
    let attempts_shed = client.connect_many_timed(sheddable, 10, Duration::from_secs(3));
    let (oc, os) = (Outcomes::of(&attempts_crit), Outcomes::of(&attempts_shed));
    eprintln!("critical: {}; sheddable: {}", oc.summary(), os.summary());
    assert!(oc.other.is_empty() && os.other.is_empty(), "{oc:?} {os:?}");
    assert!(
        !os.ok.is_empty() && os.ok.len() < oc.ok.len(),
        "sheddable admitted {} < critical admitted {}",
        os.ok.len(),
        oc.ok.len()
    );
    assert!(os.ok.len() as u64 <= shed_limit + 1, "limit held: {os:?}");
    let shed_status = daemon.dest_status(sheddable);
    let refused_shed = refused(&shed_status, "inbound", "shed", "reject");
    assert_eq!(
        refused_shed,
        os.refused.len() as u64,
        "every refusal is counted as shed: {shed_status:#}"
    );
    assert_eq!(shed_status["shed_total"], refused_shed);
    assert_eq!(counter(&shed_status, "inbound", "cx_overflow_total"), 0);

    // Killed while shedding: the kernel's limits expire within SHED_TTL (1 s), nothing is cut.
    let held = os.ok.len();
    let mut after = Vec::new();
    daemon.crash_and_restart(|| {
        std::thread::sleep(Duration::from_millis(1_500));
        after = client.connect_many_timed(sheddable, 10, Duration::from_secs(3));
        let o = Outcomes::of(&after);
        eprintln!("1.5 s after kill -9: sheddable {}", o.summary());
        assert_eq!(
            o.ok.len(),
            10,
            "a dead daemon leaves nothing shed after the expiry: {o:?}"
        );
    });
    let d = daemon.wait_for_dest(sheddable, Duration::from_secs(5), "all held", |d| {
        counter(d, "inbound", "active") == (held + 10) as u64
    });
    eprintln!(
        "after restart: sheddable active {}",
        counter(&d, "inbound", "active")
    );
    // The runtime system rule and the rules' overload settings survived the restart.
    let system = daemon.cli_json(&["system", "get", "-o", "json"]);
    assert_eq!(system["source"], "runtime", "{system}");
    let list = daemon.list_json();
    let listed = list
        .as_array()
        .and_then(|l| l.iter().find(|r| r["destination"] == sheddable.to_string()))
        .unwrap_or_else(|| panic!("{sheddable} not listed: {list:#}"));
    assert_eq!(
        listed["adaptive"]["workload_cgroup"],
        cgroup.as_str(),
        "{listed:#}"
    );
    assert_eq!(listed["priority"], "sheddable", "{listed:#}");
    drop((attempts_crit, attempts_shed, after));
}
