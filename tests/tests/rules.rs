//! Rules beyond one IPv4 address and one limit: IPv6 destinations, CIDR destinations (one limit
//! shared by every address they cover, the most specific rule winning), rule changes (which
//! never cut an established connection), and dry-run.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use limiter_integration_tests::status::{
    counter, find_destination, find_destination_text, refused,
};
use limiter_integration_tests::traffic::ConnectAttempt;
use limiter_integration_tests::{
    Daemon, Outcomes, Testbed, expect_exactly, require_root, wait_until,
};
use serde_json::Value;

const PORT: u16 = 8080;
const TIMEOUT: Duration = Duration::from_millis(2500);
const WAIT: Duration = Duration::from_secs(5);

/// [`expect_exactly`], keeping the connections that got in.
#[track_caller]
fn expect_exactly_kept(label: &str, attempts: Vec<ConnectAttempt>, ok: usize) -> Vec<TcpStream> {
    expect_exactly(label, &attempts, ok);
    attempts.into_iter().filter_map(|a| a.result.ok()).collect()
}

/// IPv6, scenario 1 style: 10 parallel connects to `[pod]:8080` under a limit of 5 on `side`.
fn ipv6_limit(side: &str, counted: &str) {
    let _root = require_root();
    let bed = Testbed::new(2);
    let dest = bed.pod(2).addr_v6(PORT);
    let server = bed.pod(2).hold_server(dest);
    let daemon = Daemon::start();
    daemon.set(dest, &["--max-connections", "5", "--side", side]);

    let attempts = bed.pod(1).connect_many_timed(dest, 10, TIMEOUT);
    let _conns = expect_exactly_kept(&format!("IPv6 {dest}, {side} side"), attempts, 5);
    assert!(
        wait_until(WAIT, || server.open_count() == 5),
        "server holds {}",
        server.open_count()
    );
    assert_eq!(server.accepted_count(), 5);
    daemon.wait_for_dest(
        dest,
        WAIT,
        "5 active and 5 refused on the enforcing side",
        |d| counter(d, counted, "active") == 5 && refused(d, counted, "limit", "reject") == 5,
    );
}

#[test]
fn ipv6_server_side_limit() {
    ipv6_limit("server", "inbound");
}

#[test]
fn ipv6_client_side_limit() {
    ipv6_limit("client", "outbound");
}

/// The status entry of a destination given as the daemon prints it.
fn entry(daemon: &Daemon, dest: &str) -> Value {
    let status = daemon.status_json();
    find_destination_text(&status, dest)
        .unwrap_or_else(|| panic!("{dest} not listed: {status:#}"))
        .clone()
}

/// A CIDR rule covering two server pods (their /23 of this testbed's address plan; the client
/// pod is outside it) admits 4 in total across both; an exact rule on one pod wins there, and
/// its connections no longer count against the CIDR.
#[test]
fn cidr_rule_shares_its_limit_and_the_most_specific_rule_wins() {
    let _root = require_root();
    let bed = Testbed::new(3);
    let (pod2, pod3) = (bed.pod(2).addr_v4(PORT), bed.pod(3).addr_v4(PORT));
    let [a, b, c, _] = bed.pod(2).v4().octets();
    assert_eq!(c % 2, 0, "pods 2 and 3 share a /23");
    let cidr = format!("{a}.{b}.{c}.0/23:{PORT}");
    assert_ne!(
        bed.pod(1).v4().octets()[2] / 2,
        c / 2,
        "the client pod is outside {cidr}"
    );
    let (s2, s3) = (bed.pod(2).hold_server(pod2), bed.pod(3).hold_server(pod3));
    let daemon = Daemon::start();
    daemon.set(&cidr, &["--max-connections", "4", "--side", "server"]);

    let client = bed.pod(1);
    let attempts: Vec<ConnectAttempt> = std::thread::scope(|scope| {
        let to2 = scope.spawn(|| client.connect_many_timed(pod2, 5, TIMEOUT));
        let to3 = client.connect_many_timed(pod3, 5, TIMEOUT);
        to2.join()
            .expect("connect thread")
            .into_iter()
            .chain(to3)
            .collect()
    });
    let conns = expect_exactly_kept(&format!("{cidr} limit 4, 5 to each pod"), attempts, 4);
    let held = || s2.open_count() + s3.open_count();
    assert!(wait_until(WAIT, || held() == 4), "servers hold {}", held());
    assert!(
        wait_until(WAIT, || counter(
            &entry(&daemon, &cidr),
            "inbound",
            "active"
        ) == 4),
        "{cidr}: expected inbound.active 4: {:#}",
        entry(&daemon, &cidr)
    );
    drop(conns);
    assert!(
        wait_until(WAIT, || held() == 0),
        "servers still hold {}",
        held()
    );
    assert!(
        wait_until(WAIT, || counter(
            &entry(&daemon, &cidr),
            "inbound",
            "active"
        ) == 0),
        "{cidr}: active never fell to 0: {:#}",
        entry(&daemon, &cidr)
    );

    daemon.set(pod3, &["--max-connections", "1", "--side", "server"]);
    let on3 = expect_exactly_kept(
        &format!("exact rule {pod3} limit 1"),
        client.connect_many_timed(pod3, 5, TIMEOUT),
        1,
    );
    let on2 = expect_exactly_kept(
        &format!("{cidr} limit 4 beside it"),
        client.connect_many_timed(pod2, 5, TIMEOUT),
        4,
    );
    assert!(wait_until(WAIT, || held() == 5), "servers hold {}", held());
    assert!(
        wait_until(WAIT, || {
            let status = daemon.status_json();
            counter(&entry(&daemon, &cidr), "inbound", "active") == 4
                && find_destination(&status, pod3)
                    .is_some_and(|d| counter(d, "inbound", "active") == 1)
        }),
        "expected 4 active under {cidr} and 1 under {pod3}: {:#}",
        daemon.status_json()
    );
    drop((on2, on3));
}

/// One byte there and back: the connection is alive and carries data.
#[track_caller]
fn assert_alive(conns: &[TcpStream], when: &str) {
    for (i, mut c) in conns.iter().enumerate() {
        c.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("set read timeout");
        let byte = [i as u8];
        let mut back = [0u8];
        let result = c.write_all(&byte).and_then(|()| c.read_exact(&mut back));
        assert!(
            result.is_ok() && back == byte,
            "{when}: connection {i} of {} is cut: {result:?}",
            conns.len()
        );
    }
}

/// `set` over an existing rule, `delete`, and `set` again with another mode change what new
/// connections get and never touch the established ones.
#[test]
fn rule_changes_never_cut_established_connections() {
    let _root = require_root();
    let bed = Testbed::new(2);
    let dest = bed.pod(2).addr_v4(PORT);
    let d = dest.to_string();
    let _server = bed.pod(2).echo_server(dest);
    let client = bed.pod(1);
    let daemon = Daemon::start();
    daemon.set(&d, &["--max-connections", "10"]);

    let mut conns = client.connect_all(dest, 5);
    daemon.wait_for_active(dest, 5, 5);
    assert_alive(&conns, "under limit 10");

    daemon.set(&d, &["--max-connections", "2"]);
    assert_alive(&conns, "after lowering the limit to 2");
    expect_exactly_kept(
        "limit 2 with 5 open",
        client.connect_many_timed(dest, 3, TIMEOUT),
        0,
    );
    daemon.wait_for_active(dest, 5, 5);

    daemon.cli_ok(&["delete", &d]);
    conns.extend(client.connect_all(dest, 3));
    assert_alive(&conns, "after delete (5 old, 3 new)");

    daemon.set(&d, &["--max-connections", "20", "--mode", "drop"]);
    let rule = &daemon.dest_status(dest)["rule"];
    assert_eq!(rule["mode"], "drop", "{rule}");
    // A new rule (the old one was deleted): it counts the 8 open connections.
    daemon.let_rule_count_open(dest, || {
        assert_alive(
            &conns,
            "a packet on each, to be counted (seeding: next_packet)",
        )
    });
    daemon.wait_for_active(dest, 8, 8);
    assert_alive(&conns, "after set limit 20, drop mode");
    conns.extend(client.connect_all(dest, 12));
    let over = client.connect_many_timed(dest, 1, Duration::from_millis(1500));
    let o = Outcomes::of(&over);
    println!("limit 20 drop with 20 open, one more: {}", o.summary());
    assert_eq!(
        o.timed_out.len(),
        1,
        "drop mode makes the 21st wait: {}",
        o.summary()
    );
    assert_alive(&conns, "20 open under limit 20, drop mode");

    // Lowered below the count: refused until the count falls under the new limit.
    daemon.set(&d, &["--max-connections", "2"]);
    conns.truncate(2);
    daemon.wait_for_active(dest, 2, 2);
    expect_exactly_kept(
        "limit 2 with 2 open",
        client.connect_many_timed(dest, 2, TIMEOUT),
        0,
    );
    conns.truncate(1);
    daemon.wait_for_active(dest, 1, 1);
    let again = expect_exactly_kept(
        "limit 2 with 1 open",
        client.connect_many_timed(dest, 2, TIMEOUT),
        1,
    );
    assert_alive(&conns, "the last original connection");
    assert_alive(&again, "the new one");
}

/// `--dry-run`: nothing is refused, what would have been is counted as `dry_run`.
#[test]
fn dry_run_refuses_nothing_and_counts() {
    let _root = require_root();
    let bed = Testbed::new(2);
    let dest = bed.pod(2).addr_v4(PORT);
    let server = bed.pod(2).hold_server(dest);
    let daemon = Daemon::start();
    daemon.set(dest, &["--max-connections", "2", "--dry-run"]);

    let attempts = bed.pod(1).connect_many_timed(dest, 5, TIMEOUT);
    let _conns = expect_exactly_kept("dry-run, limit 2", attempts, 5);
    assert!(
        wait_until(WAIT, || server.open_count() == 5),
        "server holds {}",
        server.open_count()
    );
    daemon.wait_for_dest(
        dest,
        WAIT,
        "refused.limit.dry_run == 3 on both sides",
        |d| {
            ["inbound", "outbound"].iter().all(|side| {
                refused(d, side, "limit", "dry_run") == 3
                    && refused(d, side, "limit", "reject") == 0
                    && counter(d, side, "active") == 5
            })
        },
    );
}
