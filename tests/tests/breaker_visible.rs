//! Circuit breakers seen from outside (issue #13, docs/breaking.md "What you see"): an open
//! breaker in `limiter status -o json` (every field) and its table, `limiter events -o json`
//! (transitions and refusals with reason `breaker`) and the Prometheus metrics; and the rules
//! a breaker cannot have (server side, drop mode, no policy), refused with a clear error.
//! The endpoint is pod 2 (port 8080) with no listener (RST), the client pod 1.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use limiter_integration_tests::breaker::{
    Wire, breaker_for, breakers_of, connect_once, events, expect_fail_fast, failures, is_refused,
    num, transitions, wait_breaker, wait_transitions,
};
use limiter_integration_tests::{Daemon, Testbed, require_root};
use prometheus_parse::{Scrape, Value as Sample};
use serde_json::Value;

const PORT: u16 = 8080;
const WAIT: Duration = Duration::from_secs(5);

fn scrape(daemon: &Daemon) -> Scrape {
    let status = daemon.status_json();
    let addr = status["daemon"]["metrics"]
        .as_str()
        .and_then(|u| u.strip_prefix("http://"))
        .and_then(|u| u.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no daemon.metrics: {status}"))
        .to_owned();
    let mut s = std::net::TcpStream::connect(&addr).expect("connect to the metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read the scrape");
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("parse the scrape")
}

/// The value of `metric` whose labels include every one of `labels`; None if absent.
fn sample(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .filter(|x| x.metric == metric)
        .find(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            Sample::Counter(v) | Sample::Gauge(v) | Sample::Untyped(v) => v,
            ref other => panic!("{metric}: unexpected {other:?}"),
        })
}

/// A refusing endpoint with `--breaker-consecutive 2 --breaker-open 1s`: the open breaker in
/// `status -o json` (every field), the table's BREAKER column, `events -o json` (transition and
/// refusals with reason `breaker`) and the metrics; then closed again in each.
#[test]
fn breaker_state_is_visible_in_status_events_and_metrics() {
    let _root = require_root();
    let bed = Testbed::new(2);
    let (client, pod) = (bed.pod(1), bed.pod(2));
    let dest = pod.addr_v4(PORT);
    let wire = Wire::new(pod, PORT);
    let daemon = Daemon::start_with(&["--metrics-addr", "127.0.0.1:0"]);
    let text = dest.to_string();
    let rule = [text.as_str()];
    daemon.set(
        dest,
        &[
            "--side",
            "client",
            "--breaker-consecutive",
            "2",
            "--breaker-open",
            "1s",
        ],
    );
    for _ in 0..2 {
        assert!(is_refused(&connect_once(
            client,
            dest,
            Duration::from_secs(2)
        )));
    }
    let b = wait_breaker(&daemon, &rule, dest, WAIT, "open", |b| b["state"] == "open");
    expect_fail_fast(client, dest, &wire, 3, "open");

    let status = daemon.status_json();
    let b = breaker_for(&breakers_of(&status, &rule), dest)
        .cloned()
        .unwrap_or(b);
    for field in [
        "consecutive_failures",
        "successes_total",
        "slow_total",
        "ejections_total",
    ] {
        num(&b, field);
    }
    assert_eq!(num(&b, "ejection_overflow_total"), 0, "{b:#}");
    assert_eq!(num(&b, "refused_total"), 3, "{b:#}");
    assert_eq!(failures(&b, "refused"), 2, "{b:#}");
    assert_eq!(
        (failures(&b, "timeout"), failures(&b, "reset")),
        (0, 0),
        "{b:#}"
    );
    assert!(
        b["in_state_seconds"].as_f64().is_some_and(|s| s >= 0.0),
        "{b:#}"
    );
    assert!(
        b["open_remaining_seconds"]
            .as_f64()
            .is_some_and(|s| s <= 1.0),
        "{b:#}"
    );
    let table = daemon.cli_ok(&["status"]);
    let row = table
        .lines()
        .find(|l| l.starts_with(&text))
        .unwrap_or_default();
    assert!(
        table.contains("BREAKER") && row.contains(" open"),
        "status table:\n{table}"
    );

    let ev = events(&daemon);
    assert_eq!(
        transitions(&ev, dest),
        [("open".into(), "refused".into())],
        "{ev:#?}"
    );
    let t = ev
        .iter()
        .find(|e| e["kind"] == "breaker")
        .expect("a transition");
    assert_eq!(
        t["destination"].as_str().and_then(|d| d.parse().ok()),
        Some(dest),
        "{t}"
    );
    let refusals = ev.iter().filter(|e| e["reason"] == "breaker").count();
    assert_eq!(refusals, 3, "refusal events with reason breaker: {ev:#?}");

    let m = scrape(&daemon);
    let of = [("destination", text.as_str()), ("endpoint", text.as_str())];
    assert_eq!(sample(&m, "limiter_breaker_state", &of), Some(1.0));
    assert_eq!(
        sample(&m, "limiter_breaker_ejections_total", &of),
        Some(1.0)
    );
    let by_breaker = [
        ("destination", text.as_str()),
        ("side", "outbound"),
        ("reason", "breaker"),
        ("action", "reject"),
    ];
    assert_eq!(
        sample(&m, "limiter_destination_refused_total", &by_breaker),
        Some(3.0)
    );

    // Back: a listener, the open time passes, the probe closes it.
    let _server = pod.hold_server(dest);
    std::thread::sleep(Duration::from_millis(1100));
    let _conns = client.connect_all(dest, 1);
    let b = wait_breaker(&daemon, &rule, dest, WAIT, "closed", |b| {
        b["state"] == "closed"
    });
    assert_eq!(b["open_remaining_seconds"], Value::Null, "{b:#}");
    assert!(num(&b, "successes_total") >= 1, "{b:#}");
    let states = wait_transitions(&daemon, dest, 3, WAIT);
    let names: Vec<&str> = states.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(names, ["open", "half_open", "closed"], "{states:?}");
    assert!(
        ["success", "probe_success"].contains(&states[2].1.as_str()),
        "{states:?}"
    );
    assert_eq!(
        sample(&scrape(&daemon), "limiter_breaker_state", &of),
        Some(0.0)
    );
}

/// A breaker on the server side, or in drop mode, is refused with a clear error and changes
/// nothing; a breaker alone (no --max-connections) is a valid client rule.
#[test]
fn breaker_on_the_server_side_or_in_drop_mode_is_refused() {
    let _root = require_root();
    let daemon = Daemon::start();
    let dest: SocketAddr = "10.77.200.2:8080".parse().unwrap();
    daemon.set(dest, &["--max-connections", "10"]);
    let before = daemon.list_json();
    let d = dest.to_string();
    for (args, words) in [
        (
            vec!["--side", "server", "--breaker-consecutive", "3"],
            ["breaker", "server"],
        ),
        (
            vec!["--mode", "drop", "--breaker-consecutive", "3"],
            ["breaker", "drop"],
        ),
        (vec!["--breaker-open", "2s"], ["breaker", "polic"]),
    ] {
        let mut full = vec!["set", d.as_str(), "--max-connections", "10"];
        full.extend(args.iter().copied());
        let out = daemon.cli(&full);
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("limiter {}: {}", full.join(" "), stderr.trim());
        assert!(!out.status.success(), "{full:?} was accepted");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(
            words.iter().all(|w| stderr.contains(w)),
            "{full:?}: {stderr}"
        );
        assert_eq!(daemon.list_json(), before, "{full:?} changed the rules");
    }
    daemon.set(dest, &["--breaker-consecutive", "3"]);
    let list = daemon.list_json();
    assert!(
        list.to_string().contains("breaker"),
        "a breaker-only rule: {list:#}"
    );
}
