//! Circuit breaking on the client side (issue #13, docs/breaking.md): a dead endpoint, whether
//! its SYNs vanish (blackholed) or it answers RST (nothing listens), opens its breaker after 3
//! failures in a row; connects then fail at once with ECONNREFUSED and no packet leaves; after
//! the open time one probe goes out; when the endpoint is back the first successful probe closes
//! the breaker. A destination merely at its connection limit never trips it. Services:
//! tests/breaker_svc.rs; status, events and metrics: tests/breaker_visible.rs.
//!
//! The endpoint is pod 2 (port 8080), the client pod 1. "No packet" is counted by an nftables
//! counter inside the endpoint's namespace ([`Wire`]). Refusal speed is asserted with a generous
//! bound ([`FAST`], 100 ms, far below the 1 s SYN timeout); the microsecond figure is the
//! benchmark's (`cargo xtask bench`, section 9).

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use limiter_integration_tests::breaker::{
    FAST, Wire, breaker_for, breakers_of, connect_once, expect_fail_fast, failures, is_refused,
    is_timed_out, num, wait_breaker, wait_transitions,
};
use limiter_integration_tests::status::refused;
use limiter_integration_tests::{Daemon, Outcomes, Testbed, holds_for, require_root};
use serde_json::Value;

const PORT: u16 = 8080;
/// The client's connect timeout against a blackholed endpoint: past the kernel's first SYN
/// retransmission (1 s), which is when the breaker counts the timeout.
const PAST_FIRST_RETRY: Duration = Duration::from_millis(1200);
const WAIT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dead {
    /// A listener whose SYNs are dropped in its namespace: connects time out.
    Blackholed,
    /// No listener: the endpoint's kernel answers RST.
    Refusing,
}

impl Dead {
    /// The `failures_total` field and the transition cause this kind of failure gives.
    fn failure(self) -> &'static str {
        match self {
            Dead::Blackholed => "timeout",
            Dead::Refusing => "refused",
        }
    }
}

/// One echo round trip on `conn`.
fn round_trip(conn: &mut std::net::TcpStream) -> bool {
    conn.set_read_timeout(Some(Duration::from_secs(2))).ok();
    let mut buf = [0u8; 4];
    conn.write_all(b"ping").is_ok() && conn.read_exact(&mut buf).is_ok() && &buf == b"ping"
}

/// The whole life of a breaker against a dead endpoint: no breaker, 3 failures, open, a probe
/// that fails (re-open, twice as long), the endpoint back, the probe that closes it.
fn dead_endpoint(dead: Dead, v6: bool) {
    let _root = require_root();
    let bed = Testbed::new(2);
    let (client, pod) = (bed.pod(1), bed.pod(2));
    let dest = if v6 {
        pod.addr_v6(PORT)
    } else {
        pod.addr_v4(PORT)
    };
    let label = format!("{dead:?} {dest}");
    let wire = Wire::new(pod, PORT);
    // Blackholed: the server is there, and a connection made before keeps working throughout.
    let mut server = (dead == Dead::Blackholed).then(|| pod.echo_server(dest));
    let mut held = match dead {
        Dead::Blackholed => client.connect_all(dest, 1),
        Dead::Refusing => Vec::new(),
    };
    if dead == Dead::Blackholed {
        wire.blackhole();
    }
    let daemon = Daemon::start();
    let rule = [dest.to_string()];
    let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
    let expect_failure = |a: &limiter_integration_tests::ConnectAttempt, what: &str| match dead {
        Dead::Blackholed => assert!(
            is_timed_out(a) && a.elapsed >= PAST_FIRST_RETRY - Duration::from_millis(100),
            "{label}, {what}: a connect must wait for its timeout: {:?} after {:?}",
            a.result,
            a.elapsed
        ),
        Dead::Refusing => assert!(is_refused(a), "{label}, {what}: {:?}", a.result),
    };

    // No breaker: every attempt sends its SYN and waits (blackholed: past the retransmission).
    let s = wire.syns();
    let a = connect_once(client, dest, Duration::from_millis(1500));
    expect_failure(&a, "without a breaker");
    let sent = wire.syns() - s;
    let want = if dead == Dead::Blackholed { 2 } else { 1 };
    assert_eq!(sent, want, "{label}: SYNs of one connect without a breaker");
    println!(
        "{label}: without a breaker: {:?} after {:?}",
        a.result.err(),
        a.elapsed
    );

    daemon.set(
        dest,
        &["--breaker-consecutive", "3", "--breaker-open", "2s"],
    );
    for i in 1..=3 {
        let a = connect_once(client, dest, PAST_FIRST_RETRY);
        expect_failure(&a, &format!("failure {i}"));
        if i == 2 {
            wait_breaker(&daemon, &rule, dest, WAIT, "closed after 2 failures", |b| {
                b["state"] == "closed" && b["consecutive_failures"] == 2
            });
        }
    }
    let b = wait_breaker(&daemon, &rule, dest, WAIT, "open after 3 failures", |b| {
        b["state"] == "open"
    });
    assert_eq!(failures(&b, dead.failure()), 3, "{label}: {b:#}");
    assert_eq!(num(&b, "ejections_total"), 1, "{label}: {b:#}");
    let remaining = b["open_remaining_seconds"].as_f64().unwrap_or(-1.0);
    assert!(remaining > 0.0 && remaining <= 2.0, "{label}: {b:#}");

    // Open: refused at once, no SYN leaves; established connections are not cut.
    expect_fail_fast(client, dest, &wire, 20, &format!("{label}, open"));
    let d = daemon.dest_status(dest);
    assert_eq!(refused(&d, "outbound", "breaker", "reject"), 20, "{d:#}");
    let b = breaker_for(&breakers_of(&daemon.status_json(), &rule), dest).cloned();
    assert_eq!(
        b.as_ref().map(|b| num(b, "refused_total")),
        Some(20),
        "{b:?}"
    );
    for conn in &mut held {
        assert!(
            round_trip(conn),
            "{label}: the connection made before was cut"
        );
    }

    // The open time passes: of 5 simultaneous connects, one probe goes out; it fails.
    wait_breaker(&daemon, &rule, dest, WAIT, "the open time passed", |b| {
        b["state"] != "open" || b["open_remaining_seconds"].as_f64() == Some(0.0)
    });
    let s = wire.syns();
    let probes = client.connect_many_timed(dest, 5, PAST_FIRST_RETRY);
    let o = Outcomes::of(&probes);
    println!("{label}: half-open, 5 connects: {}", o.summary());
    let sent = wire.syns() - s;
    match dead {
        Dead::Blackholed => {
            assert_eq!(
                (o.timed_out.len(), o.refused.len()),
                (1, 4),
                "{}",
                o.summary()
            );
            assert!((1..=2).contains(&sent), "{label}: the probe's SYNs: {sent}");
        }
        Dead::Refusing => {
            assert_eq!(o.refused.len(), 5, "{}", o.summary());
            assert_eq!(sent, 1, "{label}: one probe's SYN: {}", o.summary());
        }
    }
    let fast = o.refused.iter().filter(|d| **d < FAST).count();
    assert!(
        fast >= 4,
        "{label}: the others are refused at once: {}",
        o.summary()
    );
    let b = wait_breaker(&daemon, &rule, dest, WAIT, "re-opened by the probe", |b| {
        b["state"] == "open" && b["ejections_total"] == 2
    });
    let remaining = b["open_remaining_seconds"].as_f64().unwrap_or(-1.0);
    assert!(
        remaining > 2.5 && remaining <= 4.0,
        "{label}: the second ejection lasts 2 x 2 s: {b:#}"
    );

    // The endpoint comes back while open: traffic flows again within the open time left plus
    // one handshake (1 s of slack for this machine), through the first successful probe.
    match dead {
        Dead::Blackholed => wire.restore(),
        Dead::Refusing => server = Some(pod.echo_server(dest)),
    }
    let back = Instant::now();
    let bound = Duration::from_secs_f64(remaining) + Duration::from_secs(1);
    let mut conn = None;
    while conn.is_none() && back.elapsed() < bound + Duration::from_secs(2) {
        let a = connect_once(client, dest, Duration::from_secs(2));
        match a.result {
            Ok(c) => conn = Some(c),
            Err(ref e) => assert!(
                is_refused(&a) && a.elapsed < FAST,
                "{label}: while open, connects are refused at once: {e} after {:?}",
                a.elapsed
            ),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = back.elapsed();
    println!(
        "{label}: traffic flows {took:?} after the endpoint came back ({remaining:.2} s open left)"
    );
    let mut conn = conn.unwrap_or_else(|| panic!("{label}: no connect succeeded in {took:?}"));
    assert!(
        took <= bound,
        "{label}: recovery took {took:?}, more than {bound:?}"
    );
    assert!(
        round_trip(&mut conn),
        "{label}: the probe's connection carries data"
    );
    let b = wait_breaker(&daemon, &rule, dest, WAIT, "closed by the probe", |b| {
        b["state"] == "closed"
    });
    assert_eq!(num(&b, "consecutive_failures"), 0, "{b:#}");
    assert_eq!(
        failures(&b, dead.failure()),
        4,
        "3 failures and a failed probe: {b:#}"
    );
    let more = client.connect_all(dest, 5);
    assert_eq!(more.len(), 5);

    let states: Vec<String> = wait_transitions(&daemon, dest, 5, WAIT)
        .into_iter()
        .map(|(state, _)| state)
        .collect();
    assert_eq!(
        states,
        ["open", "half_open", "open", "half_open", "closed"],
        "{label}: transitions in `limiter events`"
    );
    drop((more, conn, held, server, daemon));
}

#[test]
fn blackholed_endpoint_v4_breaker_opens_probes_and_closes() {
    dead_endpoint(Dead::Blackholed, false);
}

#[test]
fn blackholed_endpoint_v6_breaker_opens_probes_and_closes() {
    dead_endpoint(Dead::Blackholed, true);
}

#[test]
fn refusing_endpoint_v4_breaker_opens_probes_and_closes() {
    dead_endpoint(Dead::Refusing, false);
}

#[test]
fn refusing_endpoint_v6_breaker_opens_probes_and_closes() {
    dead_endpoint(Dead::Refusing, true);
}

/// `--max-connections 5 --breaker-consecutive 1`: bursts of 50 from one pod are refused beyond
/// 5 with reason `limit`, and the breaker never opens (limiter's own refusals are no failures).
#[test]
fn a_destination_at_its_limit_never_opens_its_breaker() {
    let _root = require_root();
    let bed = Testbed::new(2);
    let dest = bed.pod(2).addr_v4(PORT);
    let _server = bed.pod(2).hold_server(dest);
    let wire = Wire::new(bed.pod(2), PORT);
    let daemon = Daemon::start();
    let rule = [dest.to_string()];
    let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
    daemon.set(
        dest,
        &["--max-connections", "5", "--breaker-consecutive", "1"],
    );
    for wave in 1..=2 {
        let attempts = bed
            .pod(1)
            .connect_many_timed(dest, 50, Duration::from_secs(3));
        let o = Outcomes::of(&attempts);
        println!("wave {wave}: {}", o.summary());
        assert_eq!(
            (o.ok.len(), o.refused.len()),
            (5, 45),
            "wave {wave}: {}",
            o.summary()
        );
        let d = daemon.wait_for_dest(dest, WAIT, "45 more limit refusals", |d| {
            refused(d, "outbound", "limit", "reject") == 45 * wave
        });
        assert_eq!(refused(&d, "outbound", "breaker", "reject"), 0, "{d:#}");
        let closed = holds_for(Duration::from_millis(300), || {
            let all = breakers_of(&daemon.status_json(), &rule);
            all.iter().all(|b| {
                b["state"] == "closed"
                    && b["consecutive_failures"] == 0
                    && b["ejections_total"] == 0
                    && ["refused", "timeout", "reset"]
                        .iter()
                        .all(|k| b["failures_total"][k] == 0)
            })
        });
        let status = daemon.status_json();
        assert!(
            closed,
            "wave {wave}: breaker: {:#}",
            Value::from(breakers_of(&status, &rule))
        );
        drop(attempts);
        daemon.wait_for_active(dest, 0, 0);
    }
    assert_eq!(wire.syns(), 10, "5 SYNs per wave reached the server");
}

/// The same with the limit held by the server side on this node: two client pods open 10
/// each; the server side admits 5 and answers others with limiter's own RST (how the 15
/// refusals split between the client side, 5 per pod, and the server side depends on how the
/// pods' connects interleave). A refusal by limiter is no failure of the destination.
#[test]
fn limiter_server_side_refusals_never_open_the_client_breaker() {
    let _root = require_root();
    let bed = Testbed::new(3);
    let dest = bed.pod(3).addr_v4(PORT);
    let _server = bed.pod(3).hold_server(dest);
    let daemon = Daemon::start();
    let rule = [dest.to_string()];
    let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
    daemon.set(
        dest,
        &["--max-connections", "5", "--breaker-consecutive", "1"],
    );
    let attempts = bed.connect_from_pods(&[1, 2], dest, 10, Duration::from_secs(3));
    let o = Outcomes::of(&attempts);
    println!("2 client pods x 10: {}", o.summary());
    assert_eq!((o.ok.len(), o.refused.len()), (5, 15), "{}", o.summary());
    let ok = holds_for(Duration::from_millis(300), || {
        breakers_of(&daemon.status_json(), &rule)
            .iter()
            .all(|b| b["state"] == "closed" && b["ejections_total"] == 0)
    });
    let status = daemon.status_json();
    assert!(
        ok,
        "the breaker stays closed: {:#}",
        Value::from(breakers_of(&status, &rule))
    );
    daemon.wait_for_dest(
        dest,
        WAIT,
        "15 limit refusals, some by the server side",
        |d| {
            let server = refused(d, "inbound", "limit", "reject");
            server >= 1 && server + refused(d, "outbound", "limit", "reject") == 15
        },
    );
    let d = daemon.dest_status(dest);
    assert_eq!(refused(&d, "outbound", "breaker", "reject"), 0, "{d:#}");
    drop(attempts);
}
