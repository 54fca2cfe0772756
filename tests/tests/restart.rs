//! A daemon that crashes or restarts takes nothing with it: the limits stay enforced by the
//! kernel while no daemon runs, no established connection is cut, and a new daemon adopts the
//! pinned programs with the right counts and the rules set at runtime.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use limiter_integration_tests::status::counter;
use limiter_integration_tests::{Daemon, Pod, Testbed, require_root};

const OPEN: usize = 20;

/// Every stream still carries data both ways (the server echoes).
#[track_caller]
fn assert_all_alive(streams: &mut [TcpStream], when: &str) {
    for (i, s) in streams.iter_mut().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("set a read timeout");
        s.write_all(&[i as u8])
            .unwrap_or_else(|e| panic!("{when}: connection {i} cannot send: {e}"));
        let mut b = [0u8; 1];
        s.read_exact(&mut b)
            .unwrap_or_else(|e| panic!("{when}: connection {i} got no echo: {e}"));
        assert_eq!(b[0], i as u8, "{when}: connection {i} echoed another byte");
    }
}

/// One more connect beyond the limit is refused at once with ECONNREFUSED.
#[track_caller]
fn assert_refused(client: &Pod, dest: SocketAddr, when: &str) {
    let attempt = client
        .connect_many_timed(dest, 1, Duration::from_secs(3))
        .pop()
        .expect("one attempt");
    match &attempt.result {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
        other => panic!("{when}: a connect beyond the limit gave {other:?}, want ECONNREFUSED"),
    }
    assert!(
        attempt.elapsed < Duration::from_millis(50),
        "{when}: refusal took {:?}, want < 50 ms",
        attempt.elapsed
    );
}

#[test]
fn kill_9_keeps_limits_counts_rules_and_connections() {
    let _root = require_root();
    let bed = Testbed::new(2);
    let (client, server_pod) = (bed.pod(1), bed.pod(2));
    let dest = server_pod.addr_v4(8080);
    let server = server_pod.echo_server(dest);
    let mut daemon = Daemon::start();
    daemon.set_rule(dest, OPEN as u32);

    let mut conns = client.connect_all(dest, OPEN);
    daemon.wait_for_active(dest, OPEN as u64, OPEN as u64);
    assert_refused(client, dest, "with the daemon running");

    daemon.crash_and_restart(|| {
        assert_refused(client, dest, "while no daemon runs");
        assert_all_alive(&mut conns, "while no daemon runs");
    });

    // The new daemon adopted the kernel state: same counts, the runtime rule, still enforcing.
    let d = daemon.wait_for_active(dest, OPEN as u64, OPEN as u64);
    assert_eq!(counter(&d, "inbound", "opened_total"), OPEN as u64);
    assert_eq!(
        d["rule"]["max_connections"], OPEN as u64,
        "the rule set at runtime survived: {d}"
    );
    assert_refused(client, dest, "after the restart");
    assert_all_alive(&mut conns, "after the restart");
    assert_eq!(
        server.accepted_count(),
        OPEN,
        "no connection beyond the limit"
    );

    // Closing after the restart is counted by the adopted programs.
    conns.truncate(5);
    daemon.wait_for_active(dest, 5, 5);
    drop(conns);
    daemon.wait_for_active(dest, 0, 0);
    let fresh = client.connect_all(dest, OPEN);
    daemon.wait_for_active(dest, OPEN as u64, OPEN as u64);
    drop(fresh);
}
