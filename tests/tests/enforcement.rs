//! Enforcement of one rule on the server side: the limit is exact under a burst, handshakes that
//! never complete give their slot back and stray packets take none, the SYN rate and
//! per-source limits.
//! Clients dial the server pod's address directly.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use limiter_integration_tests::status::{counter, refused};
use limiter_integration_tests::traffic::ConnectAttempt;
use limiter_integration_tests::{
    Daemon, Outcomes, Pod, Testbed, expect_exactly, peak_while, require_root, wait_until,
};

const PORT: u16 = 8080;
const TIMEOUT: Duration = Duration::from_secs(5);
const WAIT: Duration = Duration::from_secs(5);

/// `n` parallel connects from each of `pods`, all at the same time.
fn connect_from(pods: &[&Pod], dest: SocketAddr, n: usize) -> Vec<ConnectAttempt> {
    std::thread::scope(|scope| {
        let runs: Vec<_> = pods
            .iter()
            .map(|pod| scope.spawn(move || pod.connect_many_timed(dest, n, TIMEOUT)))
            .collect();
        runs.into_iter()
            .flat_map(|r| r.join().expect("client thread panicked"))
            .collect()
    })
}

/// 300 simultaneous connects from 3 client pods against a server-side limit: never more than
/// `limit` open at any instant (sampled at the server every 1 ms and in `inbound.active`),
/// exactly `limit` connect, and once they close a second wave gets exactly `limit` again.
fn exact_under_burst(limit: usize) {
    let _root = require_root();
    let bed = Testbed::new(4);
    let dest = bed.pod(4).addr_v4(PORT);
    let server = bed.pod(4).hold_server(dest);
    let daemon = Daemon::start();
    daemon.set(
        dest,
        &["--max-connections", &limit.to_string(), "--side", "server"],
    );
    let clients = [bed.pod(1), bed.pod(2), bed.pod(3)];
    let held = || server.open_count() as u64;
    let active = || counter(&daemon.dest_status(dest), "inbound", "active");

    for wave in 1..=2 {
        let label = format!("limit {limit}, wave {wave}");
        let ((attempts, active_peak, _), held_peak, samples) =
            peak_while(Duration::from_millis(1), held, || {
                peak_while(Duration::from_millis(5), active, || {
                    connect_from(&clients, dest, 100)
                })
            });
        expect_exactly(&label, &attempts, limit);
        println!(
            "{label}: peak held {held_peak} ({samples} samples), peak inbound.active {active_peak}"
        );
        assert!(
            held_peak <= limit as u64,
            "{label}: the server held {held_peak} at once"
        );
        assert!(
            active_peak <= limit as u64,
            "{label}: inbound.active reached {active_peak}"
        );
        assert!(
            wait_until(WAIT, || server.open_count() == limit),
            "{label}: the server holds {}",
            server.open_count()
        );
        daemon.wait_for_dest(dest, WAIT, "inbound.active == limit", |d| {
            counter(d, "inbound", "active") == limit as u64
        });
        drop(attempts);
        assert!(
            wait_until(WAIT, || server.open_count() == 0),
            "{label}: closed connections still held: {}",
            server.open_count()
        );
        daemon.wait_for_dest(dest, WAIT, "inbound.active == 0", |d| {
            counter(d, "inbound", "active") == 0
        });
    }
    assert_eq!(
        server.accepted_count(),
        2 * limit,
        "accepted over both waves"
    );
}

#[test]
fn exact_limit_5_under_300_simultaneous_connects() {
    exact_under_burst(5);
}

#[test]
fn exact_limit_50_under_300_simultaneous_connects() {
    exact_under_burst(50);
}

/// SYNs whose handshake never completes (the sender's kernel cannot answer the SYN-ACK: its
/// RSTs are dropped) hold their reserved slots only for a while: at first a real client is
/// refused, within 4 s it gets all 5 again.
#[test]
fn half_open_handshakes_give_their_slots_back() {
    let _root = require_root();
    let bed = Testbed::new(3);
    let (flooder, client) = (bed.pod(1), bed.pod(2));
    let dest = bed.pod(3).addr_v4(PORT);
    let server = bed.pod(3).hold_server(dest);
    flooder.ns().run(
        "iptables",
        [
            "-w",
            "-A",
            "OUTPUT",
            "-p",
            "tcp",
            "--tcp-flags",
            "RST",
            "RST",
            "-j",
            "DROP",
        ],
    );
    let daemon = Daemon::start();
    daemon.set(dest, &["--max-connections", "5", "--side", "server"]);

    let start = Instant::now();
    let hping = flooder
        .ns()
        .command("timeout")
        .args([
            "10", "hping3", "-S", "-p", "8080", "-c", "5", "-i", "u10000",
        ])
        .arg(dest.ip().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hping3");
    let reserved =
        daemon.wait_for_dest(dest, Duration::from_secs(2), "inbound.pending == 5", |d| {
            counter(d, "inbound", "pending") == 5
        });
    assert_eq!(counter(&reserved, "inbound", "active"), 0, "{reserved:#}");
    let attempts = client.connect_many_timed(dest, 5, TIMEOUT);
    expect_exactly("while 5 handshakes are pending", &attempts, 0);
    let pending_at = start.elapsed();

    let deadline = Duration::from_secs(4);
    daemon.wait_for_dest(
        dest,
        deadline.saturating_sub(start.elapsed()),
        "inbound.pending == 0",
        |d| counter(d, "inbound", "pending") == 0,
    );
    let released_at = start.elapsed();
    let attempts = client.connect_many_timed(dest, 6, TIMEOUT);
    expect_exactly("after the reservations expired", &attempts, 5);
    let connected_at = start.elapsed();
    println!(
        "half-open: pending 5 seen at {pending_at:?}, pending 0 at {released_at:?}, \
         real client got 5 at {connected_at:?}"
    );
    assert!(
        connected_at < deadline,
        "the slots came back only after {connected_at:?}"
    );
    assert!(
        wait_until(WAIT, || server.open_count() == 5),
        "server holds {}",
        server.open_count()
    );
    assert_eq!(
        server.accepted_count(),
        5,
        "no half-open handshake became a connection"
    );
    let out = hping.wait_with_output().expect("wait for hping3");
    println!("hping3: {}", String::from_utf8_lossy(&out.stderr).trim());
}

/// Packets of no connection (stray ACKs, as a late duplicate ACK of a closed connection or a
/// scan sends) start no handshake, so they must not take a slot: after 5 of them a real
/// client still gets all 5.
#[test]
fn stray_acks_take_no_slot() {
    let _root = require_root();
    let bed = Testbed::new(3);
    let dest = bed.pod(3).addr_v4(PORT);
    let server = bed.pod(3).hold_server(dest);
    let daemon = Daemon::start();
    daemon.set(dest, &["--max-connections", "5", "--side", "server"]);

    let ip = dest.ip().to_string();
    let args = [
        "5", "hping3", "-A", "-p", "8080", "-c", "5", "-i", "u10000", &ip,
    ];
    let out = bed.pod(1).ns().output("timeout", args);
    assert!(
        out.status.success(),
        "hping3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = daemon.dest_status(dest);
    println!(
        "after 5 stray ACKs: inbound.accepted_total {}, pending {}",
        d["inbound"]["accepted_total"], d["inbound"]["pending"]
    );
    let attempts = bed.pod(2).connect_many_timed(dest, 6, TIMEOUT);
    expect_exactly("real client after 5 stray ACKs", &attempts, 5);
    assert!(
        wait_until(WAIT, || server.open_count() == 5),
        "server holds {}",
        server.open_count()
    );
    daemon.wait_for_dest(dest, WAIT, "5 accepted, 5 active, none pending", |d| {
        counter(d, "inbound", "accepted_total") == 5
            && counter(d, "inbound", "active") == 5
            && counter(d, "inbound", "pending") == 0
    });
}

/// `--syn-rate 10 --syn-burst 5`: 60 connects offered at 20/s for 3 s, each closed at once:
/// about 6 at once and 10/s after that get in; the rest are refused and counted as `rate`.
#[test]
fn syn_rate_admits_a_burst_then_the_rate() {
    let _root = require_root();
    let bed = Testbed::new(2);
    let dest = bed.pod(2).addr_v4(PORT);
    let _server = bed.pod(2).hold_server(dest);
    let daemon = Daemon::start();
    let limits = [
        "--max-connections",
        "1000",
        "--syn-rate",
        "10",
        "--syn-burst",
        "5",
    ];
    daemon.set(dest, &[&limits[..], &["--side", "server"]].concat());

    let start = Instant::now();
    let mut results = Vec::new(); // (offset of the attempt, attempt)
    for i in 0..60u32 {
        let at = Duration::from_millis(50) * i;
        std::thread::sleep(at.saturating_sub(start.elapsed()));
        let attempt = bed
            .pod(1)
            .connect_many_timed(dest, 1, Duration::from_secs(1));
        results.push((
            start.elapsed(),
            attempt.into_iter().next().expect("one attempt"),
        ));
        // The stream (if any) is dropped here: short-lived connections.
    }
    let o = Outcomes::of(results.iter().map(|(_, a)| a));
    let first_second = results
        .iter()
        .filter(|(at, a)| *at < Duration::from_secs(1) && a.result.is_ok())
        .count();
    println!(
        "syn-rate 10 burst 5: {first_second} admitted in the first second, {} in {:?}; {}",
        o.ok.len(),
        start.elapsed(),
        o.summary()
    );
    assert!(
        (12..=20).contains(&first_second),
        "{first_second} in the first second"
    );
    assert!(
        (25..=45).contains(&o.ok.len()),
        "{} admitted in 3 s",
        o.ok.len()
    );
    assert_eq!(
        o.refused.len(),
        60 - o.ok.len(),
        "refusals are ECONNREFUSED: {}",
        o.summary()
    );
    let refusals = o.refused.len() as u64;
    daemon.wait_for_dest(
        dest,
        WAIT,
        "refused.rate.reject counts every refusal",
        |d| {
            refused(d, "inbound", "rate", "reject") == refusals
                && refused(d, "inbound", "limit", "reject") == 0
        },
    );
}

/// `--per-source 3` under `--max-connections 10`: one client pod gets 3, another still gets 3.
#[test]
fn per_source_limit_leaves_room_for_other_sources() {
    let _root = require_root();
    let bed = Testbed::new(3);
    let dest = bed.pod(3).addr_v4(PORT);
    let _server = bed.pod(3).hold_server(dest);
    let daemon = Daemon::start();
    let args = [
        "--max-connections",
        "10",
        "--per-source",
        "3",
        "--side",
        "server",
    ];
    daemon.set(dest, &args);

    let mut a = bed.pod(1).connect_many_timed(dest, 8, TIMEOUT);
    expect_exactly("per-source 3, pod A", &a, 3);
    let b = bed.pod(2).connect_many_timed(dest, 8, TIMEOUT);
    expect_exactly("per-source 3, pod B", &b, 3);
    daemon.wait_for_dest(dest, WAIT, "6 active, 10 refused per_source", |d| {
        counter(d, "inbound", "active") == 6
            && refused(d, "inbound", "per_source", "reject") == 10
            && refused(d, "inbound", "limit", "reject") == 0
    });

    // A source that closes one of its connections may open one again.
    let one = a
        .iter()
        .position(|x| x.result.is_ok())
        .expect("A has connections");
    a.remove(one);
    daemon.wait_for_dest(dest, WAIT, "inbound.active == 5", |d| {
        counter(d, "inbound", "active") == 5
    });
    let again = bed.pod(1).connect_many_timed(dest, 2, TIMEOUT);
    expect_exactly("per-source 3, pod A after closing one", &again, 1);
}
