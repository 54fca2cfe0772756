//! `limiter events`: refusals reported by the kernel with destination, source, reason and action,
//! streamed with `--follow`, rate-limited under a flood and every suppressed or lost one counted.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use limiter_integration_tests::status::counter;
use limiter_integration_tests::{Daemon, Testbed, limiter_bin, require_root, wait_until};
use serde_json::Value;

/// `limiter events --follow -o json`, its lines delivered on a channel; killed on drop.
struct Follower {
    child: Child,
    lines: mpsc::Receiver<Value>,
}

impl Follower {
    fn start(daemon: &Daemon) -> Self {
        let mut child = std::process::Command::new(limiter_bin())
            .args(["events", "--follow", "-o", "json", "--socket"])
            .arg(daemon.socket())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn limiter events --follow");
        let out = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line).expect("each event line is JSON");
                if tx.send(value).is_err() {
                    return;
                }
            }
        });
        Self { child, lines }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn refusals_are_reported_and_followed() {
    let _root = require_root();
    let bed = Testbed::new(2);
    let (client, server) = (bed.pod(1), bed.pod(2));
    let dest = server.addr_v4(8080);
    let _srv = server.hold_server(dest);
    let daemon = Daemon::start();
    daemon.set(dest, &["--max-connections", "2", "--side", "server"]);
    let follower = Follower::start(&daemon);
    std::thread::sleep(Duration::from_millis(300)); // let it subscribe

    let attempts = client.connect_many(dest, 5, Duration::from_secs(2));
    assert_eq!(
        attempts.iter().filter(|a| a.is_err()).count(),
        3,
        "{attempts:?}"
    );

    let expected = |e: &Value| {
        e["destination"] == dest.to_string()
            && e["source"] == client.v4().to_string()
            && e["side"] == "inbound"
            && e["reason"] == "limit"
            && e["action"] == "reject"
            && e["time"].as_str().is_some_and(|t| t.ends_with('Z'))
    };
    let followed: Vec<Value> = (0..3)
        .map(|i| {
            follower
                .lines
                .recv_timeout(Duration::from_secs(5))
                .unwrap_or_else(|_| panic!("the follower got only {i} of 3 events"))
        })
        .collect();
    for e in &followed {
        assert!(expected(e), "followed event: {e}");
    }

    let listed = daemon.cli_ok(&["events", "-o", "json"]);
    let listed: Vec<Value> = listed
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(listed.len(), 3, "recent events: {listed:?}");
    assert!(listed.iter().all(expected), "recent events: {listed:?}");
}

#[test]
fn a_flood_of_refusals_is_rate_limited_and_every_refusal_accounted() {
    let _root = require_root();
    let bed = Testbed::new(2);
    let (flooder, server) = (bed.pod(1), bed.pod(2));
    let dest = server.addr_v4(8080);
    let _srv = server.hold_server(dest);
    let daemon = Daemon::start();
    daemon.set(dest, &["--max-connections", "1", "--side", "server"]);
    let _held = bed.pod(1).connect_all(dest, 1);

    let _ = flooder.ns().output(
        "timeout",
        [
            "2",
            "hping3",
            "-S",
            "--flood",
            "-p",
            "8080",
            &server.v4().to_string(),
        ],
    );
    let totals = |d: &Value| {
        let t = &d["daemon"]["dataplane"]["events"];
        ["emitted", "suppressed", "lost"].map(|k| t[k].as_u64().expect("event counter"))
    };
    let refused = || {
        let d = daemon.dest_status(dest);
        let r = &d["inbound"]["refused"];
        r.as_object()
            .expect("refused by reason")
            .values()
            .flat_map(|by_action| by_action.as_object().expect("by action").values())
            .map(|n| n.as_u64().expect("count"))
            .sum::<u64>()
    };
    // Every refusal is exactly one of: emitted, suppressed (over the rate), lost (ring full).
    assert!(
        wait_until(Duration::from_secs(3), || {
            totals(&daemon.status_json()).iter().sum::<u64>() == refused()
        }),
        "events {:?} account for every refusal ({})",
        totals(&daemon.status_json()),
        refused()
    );
    let [emitted, suppressed, lost] = totals(&daemon.status_json());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    println!(
        "flood: {} refusals, {emitted} events emitted, {suppressed} suppressed, {lost} lost",
        refused()
    );
    assert!(suppressed > 0, "a flood is rate-limited");
    // 1000 per second per CPU, a full bucket of 1000 at the start, for a 2 s flood.
    assert!(
        emitted <= cpus * 1000 * 3 + 100,
        "{emitted} events emitted for {cpus} CPUs in 2 s"
    );
    assert_eq!(counter(&daemon.dest_status(dest), "inbound", "active"), 1);
}
