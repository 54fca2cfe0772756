//! The harness itself, for real and without a daemon: namespaces, routing, traffic helpers.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use limiter_integration_tests::workload::{BusyServer, Flood, FloodConfig};
use limiter_integration_tests::{CpuCgroup, NetNs, Testbed, require_root, wait_until};

const WAIT: Duration = Duration::from_secs(5);

/// Pod 1 reaches pod 2 over v4 and v6 through the node namespace, with its own source address
/// (routed, not NATed), and the hold server counts what it holds.
#[test]
fn testbed_connectivity_ipv4_and_ipv6() {
    let _root = require_root();
    let bed = Testbed::new(2);
    let (client, server) = (bed.pod(1), bed.pod(2));

    for (dest, client_ip) in [
        (server.addr_v4(8080), IpAddr::V4(client.v4())),
        (server.addr_v6(8080), IpAddr::V6(client.v6())),
    ] {
        let hold = server.hold_server(dest);
        let mut conns = client.connect_all(dest, 5);
        assert!(
            wait_until(WAIT, || hold.open_count() == 5),
            "{dest}: server holds {} of 5",
            hold.open_count()
        );
        assert_eq!(hold.accepted_count(), 5);
        for c in &conns {
            assert_eq!(c.peer_addr().expect("peer address"), dest);
            assert_eq!(
                c.local_addr().expect("local address").ip(),
                client_ip,
                "source address of pod 1"
            );
        }

        conns.truncate(3);
        assert!(
            wait_until(WAIT, || hold.open_count() == 3),
            "{dest}: after closing 2, server holds {}",
            hold.open_count()
        );
        hold.close_all();
        assert_eq!(hold.open_count(), 0);
        assert_eq!(
            hold.accepted_count(),
            5,
            "closing does not change the accepted count"
        );
    }
}

/// A port with no listener refuses at once, and the attempt records how long it took.
#[test]
fn testbed_connect_many_reports_refusals_with_latency() {
    let _root = require_root();
    let bed = Testbed::new(2);
    let closed_port: SocketAddr = bed.pod(2).addr_v4(9);
    let attempts = bed
        .pod(1)
        .connect_many_timed(closed_port, 3, Duration::from_secs(2));
    assert_eq!(attempts.len(), 3);
    for a in &attempts {
        let err = a.result.as_ref().expect_err("nothing listens on port 9");
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
        assert!(
            a.elapsed < Duration::from_millis(50),
            "refusal took {:?}",
            a.elapsed
        );
    }
}

/// `enter` runs on a thread inside the namespace; the caller's thread is left where it was.
#[test]
fn testbed_enter_runs_inside_the_namespace_only() {
    let _root = require_root();
    let bed = Testbed::new(1);
    let pod = bed.pod(1);
    let netns_inode = |path: &str| {
        std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("stat {path}: {e}"))
            .ino()
    };

    let own = netns_inode("/proc/thread-self/ns/net");
    let inside = pod.ns().enter(|| netns_inode("/proc/thread-self/ns/net"));
    assert_eq!(
        inside,
        std::fs::metadata(pod.ns().path())
            .expect("stat the netns")
            .ino()
    );
    assert_ne!(inside, own);
    assert_eq!(
        netns_inode("/proc/thread-self/ns/net"),
        own,
        "caller's namespace unchanged"
    );

    // The pod's address exists only in the pod.
    let addr = pod.addr_v4(0);
    pod.ns()
        .enter(|| TcpListener::bind(addr))
        .expect("bind the pod address inside the pod");
    let outside =
        TcpListener::bind(addr).expect_err("the pod address must not exist outside the pod");
    assert_eq!(outside.kind(), ErrorKind::AddrNotAvailable, "{outside}");
}

/// Dropping a testbed deletes all its namespaces.
#[test]
fn testbed_namespaces_are_deleted_on_drop() {
    let _root = require_root();
    let bed = Testbed::new(3);
    let names = bed.netns_names();
    assert_eq!(names.len(), 4);
    for name in &names {
        assert!(
            NetNs::is_listed(name),
            "{name} should exist while the testbed lives"
        );
    }
    drop(bed);
    for name in &names {
        assert!(
            !NetNs::is_listed(name),
            "{name} still listed after the testbed was dropped"
        );
    }
}

/// A namespace is deleted even when the code holding its guard panics.
#[test]
fn testbed_namespace_is_deleted_when_a_test_panics() {
    let _root = require_root();
    let mut name = String::new();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let ns = NetNs::new("panics");
        name = ns.name().to_owned();
        panic!("deliberate panic with {name} alive (expected in this test)");
    }));
    assert!(outcome.is_err());
    assert!(!name.is_empty());
    assert!(!NetNs::is_listed(&name), "{name} survived a panic");
}

/// The harness itself: the busy server and every thread it starts run in the test's cgroup,
/// its work is CPU time (so the quota stretches wall time), and the group is removed on drop.
#[test]
fn busy_server_runs_all_its_threads_in_the_quota_cgroup() {
    let _root = require_root();
    let bed = Testbed::new(2);
    let dest = bed.pod(2).addr_v4(8080);
    let cgroup = CpuCgroup::new("harness", 0.5);
    let dirs = cgroup.dirs().to_vec();
    let path = cgroup.path();
    {
        let server = BusyServer::start(
            env!("CARGO_BIN_EXE_busy-server"),
            bed.pod(2).ns(),
            &cgroup,
            dest,
            Duration::from_millis(50),
        );
        let proc_cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", server.pid()))
            .expect("read /proc/PID/cgroup");
        assert!(
            proc_cgroup
                .lines()
                .any(|l| l.ends_with(&format!(":{path}"))),
            "/proc/{}/cgroup names {path}: {proc_cgroup}",
            server.pid()
        );
        assert_eq!(
            cgroup.procs(),
            [server.pid()],
            "the server alone is in the group"
        );
        let usage_before = cgroup.usage();
        let start = Instant::now();
        let flood = Flood::start(
            bed.pod(1).ns(),
            dest,
            FloodConfig {
                concurrency: 6,
                ramp: Duration::ZERO,
                timeout: Duration::from_secs(5),
                max_duration: Duration::from_secs(5),
                ..FloodConfig::default()
            },
        );
        // While the six requests burn, every server thread is in the group in every hierarchy.
        std::thread::sleep(Duration::from_millis(150));
        let threads = server.threads();
        assert!(
            threads.len() >= 2,
            "the server runs a thread per connection: {threads:?}"
        );
        for (dir, members) in dirs.iter().zip(cgroup.threads()) {
            let outside: Vec<_> = threads.iter().filter(|t| !members.contains(t)).collect();
            assert!(
                outside.is_empty(),
                "threads {outside:?} of the server are not in {}",
                dir.display()
            );
        }
        wait_until(Duration::from_secs(5), || flood.counts().completed >= 6);
        let wall = start.elapsed();
        let report = flood.stop();
        let used = cgroup.usage() - usage_before;
        println!(
            "harness: 6 concurrent requests of 50 ms CPU at a 0.5 CPU quota: {}; the group used \
             {used:?} of CPU in {wall:?}, throttled in {} periods",
            report.summary(),
            cgroup.throttled_periods()
        );
        assert!(
            used >= Duration::from_millis(6 * 50),
            "the group was charged {used:?} for 6 x 50 ms"
        );
        // 300 ms of CPU at half a CPU takes at least 600 ms of wall time (less 50 ms of slack
        // for a period's quota that was left at the start).
        // The requests that started in the first 500 ms: the flood's six workers start within
        // a few ms of each other on a quiet machine, but a loaded 2-core one can delay one past
        // 100 ms (seen in CI); 300 ms of CPU at half a CPU still needs 600 ms of wall time.
        let first_six = report.completion_times(Duration::ZERO, Duration::from_millis(500));
        let slowest = first_six.iter().max().copied().unwrap_or_default();
        assert!(
            first_six.len() >= 6 && slowest >= Duration::from_millis(500),
            "6 concurrent requests under the quota: {first_six:?}"
        );
        assert!(
            cgroup.throttled_periods() > 0,
            "the quota throttled the group"
        );
    }
    drop(cgroup);
    for dir in &dirs {
        assert!(!dir.exists(), "{} removed on drop", dir.display());
    }
}
