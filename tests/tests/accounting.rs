//! Connection accounting: `limiter status` counts established connections per destination, on
//! the server side (inbound) and the client side (outbound), in any network namespace.

use std::net::SocketAddr;
use std::time::Duration;

use limiter_integration_tests::status::{counter, find_destination, nonzero_numbers};
use limiter_integration_tests::{
    Daemon, Testbed, expect_exactly, holds_for, require_root, wait_until,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(5);

/// Every number under `inbound` and `outbound` that is not zero, by path.
fn nonzero_counters(d: &Value) -> Vec<String> {
    ["inbound", "outbound"]
        .iter()
        .flat_map(|side| nonzero_numbers(&d[*side], side))
        .collect()
}

fn both_sides(d: &Value, field: &str, expected: u64) -> bool {
    counter(d, "inbound", field) == expected && counter(d, "outbound", field) == expected
}

/// 50 connections from pod 1 to pod 2: counted on both sides, followed down as they close.
fn accounting_round_trip(dest_of: impl Fn(&Testbed) -> SocketAddr) {
    let _root = require_root();
    let bed = Testbed::new(2);
    let dest = dest_of(&bed);
    let server = bed.pod(2).hold_server(dest);
    let daemon = Daemon::start();
    daemon.set_rule(dest, 1000);

    let mut conns = bed.pod(1).connect_all(dest, 50);
    daemon.wait_for_active(dest, 50, 50);

    conns.truncate(30); // closes 20
    daemon.wait_for_active(dest, 30, 30);

    drop(conns);
    daemon.wait_for_active(dest, 0, 0);
    daemon.wait_for_dest(
        dest,
        WAIT,
        "opened_total == closed_total == 50 on both sides",
        |d| both_sides(d, "opened_total", 50) && both_sides(d, "closed_total", 50),
    );
    assert_eq!(
        server.accepted_count(),
        50,
        "the server accepted every connection"
    );
}

#[test]
fn accounting_ipv4() {
    accounting_round_trip(|bed| bed.pod(2).addr_v4(8080));
}

#[test]
fn accounting_ipv6() {
    accounting_round_trip(|bed| bed.pod(2).addr_v6(8080));
}

/// A rule set while connections are open starts with them counted, and closing them brings the
/// count to zero, never below (a u64 that wrapped would read as a huge number).
#[test]
fn rule_created_while_open_counts_existing() {
    let _root = require_root();
    let bed = Testbed::new(2);
    let dest = bed.pod(2).addr_v4(8080);
    let server = bed.pod(2).hold_server(dest);
    let daemon = Daemon::start();

    let mut conns = bed.pod(1).connect_all(dest, 10);
    assert!(
        wait_until(WAIT, || server.open_count() == 10),
        "server holds {} of 10",
        server.open_count()
    );
    assert!(
        find_destination(&daemon.status_json(), dest).is_none(),
        "{dest} listed before it has a rule"
    );

    daemon.set_rule(dest, 1000);
    daemon.let_rule_count_open(dest, || Daemon::one_byte_on_each(&mut conns));
    daemon.wait_for_active(dest, 10, 10);

    drop(conns);
    daemon.wait_for_active(dest, 0, 0);
    let mut last = Value::Null;
    let steady = holds_for(Duration::from_millis(500), || {
        last = daemon.dest_status(dest);
        both_sides(&last, "active", 0)
    });
    assert!(
        steady,
        "{dest}: active left zero after the connections closed: {last:#}"
    );
}

/// A client-side limit counts per client pod, so a rule created over open connections must
/// count them to the pod that holds them: that pod is full, another pod is not. (Accounting
/// covers both sides: the server pod counts them inbound too.)
#[test]
fn client_rule_created_while_open_counts_them_to_their_pod() {
    let _root = require_root();
    let bed = Testbed::new(3);
    let dest = bed.pod(2).addr_v4(8080);
    let _server = bed.pod(2).hold_server(dest);
    let daemon = Daemon::start();
    let mut held = bed.pod(1).connect_all(dest, 2);

    daemon.set(dest, &["--max-connections", "2", "--side", "client"]);
    daemon.let_rule_count_open(dest, || Daemon::one_byte_on_each(&mut held));
    daemon.wait_for_active(dest, 2, 2);
    expect_exactly(
        "pod 1, already holding 2 of 2",
        &bed.pod(1)
            .connect_many_timed(dest, 3, Duration::from_secs(3)),
        0,
    );
    let pod3 = bed
        .pod(3)
        .connect_many_timed(dest, 3, Duration::from_secs(3));
    expect_exactly("pod 3, holding none", &pod3, 2);
    // Closing the adopted connections gives pod 1 its share back.
    drop(held);
    daemon.wait_for_active(dest, 2, 2);
    expect_exactly(
        "pod 1 after closing its 2",
        &bed.pod(1)
            .connect_many_timed(dest, 3, Duration::from_secs(3)),
        2,
    );
    drop(pod3);
}

/// Only destinations with a rule are listed; a rule without traffic shows zeros everywhere.
#[test]
fn destinations_without_rule_are_not_listed_and_idle_rule_shows_zeros() {
    let _root = require_root();
    let bed = Testbed::new(2);
    let ruled = bed.pod(2).addr_v4(8080);
    let unruled = bed.pod(2).addr_v4(9090);
    let _ruled_server = bed.pod(2).hold_server(ruled);
    let unruled_server = bed.pod(2).hold_server(unruled);
    let daemon = Daemon::start();
    daemon.set_rule(ruled, 100);

    let idle = daemon.dest_status(ruled);
    let nonzero = nonzero_counters(&idle);
    assert!(
        nonzero.is_empty(),
        "idle {ruled} has non-zero {nonzero:?}: {idle:#}"
    );
    assert!(
        both_sides(&idle, "active", 0),
        "active present and zero on both sides: {idle:#}"
    );
    let rule = &idle["rule"];
    assert_eq!(
        rule["destination"].as_str().and_then(|s| s.parse().ok()),
        Some(ruled),
        "rule: {rule}"
    );
    assert_eq!(rule["max_connections"], 100, "rule: {rule}");
    assert_eq!(rule["mode"], "reject", "default mode; rule: {rule}");
    assert_eq!(rule["side"], "both", "default side; rule: {rule}");

    let _conns = bed.pod(1).connect_all(unruled, 5);
    assert!(
        wait_until(WAIT, || unruled_server.open_count() == 5),
        "server holds {} of 5",
        unruled_server.open_count()
    );
    let mut last = Value::Null;
    let quiet = holds_for(Duration::from_millis(300), || {
        last = daemon.status_json();
        find_destination(&last, unruled).is_none()
            && find_destination(&last, ruled).is_some_and(|d| nonzero_counters(d).is_empty())
    });
    assert!(
        quiet,
        "traffic to {unruled} (no rule) showed up in status or moved {ruled}: {last:#}"
    );

    let rules = daemon.list_json();
    let listed: Vec<_> = rules
        .as_array()
        .unwrap_or_else(|| panic!("`list -o json` is not an array: {rules}"))
        .iter()
        .map(|r| {
            r["destination"]
                .as_str()
                .and_then(|s| s.parse::<SocketAddr>().ok())
        })
        .collect();
    assert_eq!(listed, [Some(ruled)], "list: {rules:#}");
}
