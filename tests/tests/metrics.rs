//! The Prometheus endpoint, scraped during real traffic and parsed with a real Prometheus text
//! parser: every per-destination value equals what `limiter status` says; the node and daemon
//! gauges are there; the endpoint is read-only, bounded to GET /metrics, and off when asked.
//! Destinations: the testbed's pods, ports 18100-18199.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use limiter_integration_tests::status::{counter, destinations};
use limiter_integration_tests::{
    CpuCgroup, Daemon, Testbed, require_root, run_daemon_to_exit, wait_until,
};
use prometheus_parse::{Scrape, Value as Sample};
use serde_json::Value;

/// One HTTP/1.1 request to `addr`; the status line, headers and body.
fn http(addr: &str, method: &str, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    (head.to_owned(), body.to_owned())
}

/// The `ADDR:PORT` of the daemon's endpoint, from `status -o json`.
fn metrics_addr(daemon: &Daemon) -> String {
    let status = daemon.status_json();
    let url = status["daemon"]["metrics"]
        .as_str()
        .unwrap_or_else(|| panic!("no daemon.metrics: {status}"));
    url.strip_prefix("http://")
        .and_then(|u| u.strip_suffix("/metrics"))
        .expect("http://ADDR/metrics")
        .to_owned()
}

fn scrape(addr: &str) -> Scrape {
    let (head, body) = http(addr, "GET", "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    Scrape::parse(lines).unwrap_or_else(|e| panic!("unparsable scrape ({e}):\n{body}"))
}

/// Samples of `metric`, by their labels (sorted `k=v` joined with `,`).
fn samples(s: &Scrape, metric: &str) -> BTreeMap<String, f64> {
    s.samples
        .iter()
        .filter(|x| x.metric == metric)
        .map(|x| {
            let mut labels: Vec<String> =
                x.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            let value = match x.value {
                Sample::Counter(v) | Sample::Gauge(v) | Sample::Untyped(v) => v,
                ref other => panic!("{metric}: unexpected {other:?}"),
            };
            (labels.join(","), value)
        })
        .collect()
}

fn one(s: &Scrape, metric: &str) -> f64 {
    let all = samples(s, metric);
    assert_eq!(all.len(), 1, "{metric}: {all:?}");
    all.into_values().next().unwrap()
}

/// What the scrape must hold for the destinations of a `status -o json` document.
fn expected(status: &Value) -> BTreeMap<(&'static str, String), f64> {
    let mut want = BTreeMap::new();
    for d in destinations(status) {
        let dest = d["destination"].as_str().unwrap().to_owned();
        for side in ["inbound", "outbound"] {
            let labels = format!("destination={dest},side={side}");
            for (metric, field) in [
                ("limiter_destination_active_connections", "active"),
                ("limiter_destination_pending_connections", "pending"),
                ("limiter_destination_opened_total", "opened_total"),
                ("limiter_destination_closed_total", "closed_total"),
                ("limiter_destination_accepted_total", "accepted_total"),
                ("limiter_destination_cx_overflow_total", "cx_overflow_total"),
            ] {
                want.insert((metric, labels.clone()), counter(d, side, field) as f64);
            }
            let refused = d[side]["refused"].as_object().cloned().unwrap_or_default();
            for (reason, actions) in refused {
                for (action, n) in actions.as_object().cloned().unwrap_or_default() {
                    let labels =
                        format!("action={action},destination={dest},reason={reason},side={side}");
                    want.insert(
                        ("limiter_destination_refused_total", labels),
                        n.as_f64().unwrap(),
                    );
                }
            }
        }
        if let Some(max) = d["rule"]["max_connections"].as_f64() {
            want.insert(
                (
                    "limiter_destination_max_connections",
                    format!("destination={dest}"),
                ),
                max,
            );
        }
    }
    want
}

/// The same keys, read from a scrape.
fn observed(
    s: &Scrape,
    want: &BTreeMap<(&'static str, String), f64>,
) -> BTreeMap<(&'static str, String), f64> {
    let metrics: std::collections::BTreeSet<&'static str> = want.keys().map(|(m, _)| *m).collect();
    let mut seen = BTreeMap::new();
    for metric in metrics {
        for (labels, v) in samples(s, metric) {
            seen.insert((metric, labels), v);
        }
    }
    seen
}

#[test]
fn a_scrape_parses_and_matches_status() {
    let _root = require_root();
    let bed = Testbed::new(2);
    let (v4, v6) = (bed.pod(2).addr_v4(18100), bed.pod(2).addr_v6(18101));
    let _servers = (bed.pod(2).hold_server(v4), bed.pod(2).hold_server(v6));
    let daemon = Daemon::start_with(&["--metrics-addr", "127.0.0.1:0"]);
    daemon.set(v4, &["--max-connections", "3"]);
    daemon.set(
        v6,
        &["--max-connections", "1", "--dry-run", "--side", "server"],
    );
    let addr = metrics_addr(&daemon);

    // Traffic: 3 held and 2 refused on v4; 2 held on v6, one over its dry-run limit.
    let _held = bed.pod(1).connect_all(v4, 3);
    let refused = bed.pod(1).connect_many_timed(v4, 2, Duration::from_secs(3));
    assert!(
        refused
            .iter()
            .all(|a| matches!(&a.result, Err(e) if e.kind() == ErrorKind::ConnectionRefused))
    );
    let _held6 = bed.pod(1).connect_all(v6, 2);
    daemon.wait_for_active(v4, 3, 3);
    daemon.wait_for_active(v6, 2, 2);

    // Counters settle within microseconds; compare a scrape taken between two equal statuses.
    let mut last = String::new();
    let matched = wait_until(Duration::from_secs(10), || {
        let before = daemon.status_json();
        let s = scrape(&addr);
        let after = daemon.status_json();
        if before["destinations"] != after["destinations"] {
            return false;
        }
        let want = expected(&after);
        let seen = observed(&s, &want);
        last = format!("want {want:#?}\nscraped {seen:#?}");
        seen == want
    });
    assert!(
        matched,
        "the scrape does not match `limiter status`:\n{last}"
    );

    let s = scrape(&addr);
    let status = daemon.status_json();
    let overflow = samples(&s, "limiter_destination_cx_overflow_total");
    assert_eq!(
        overflow[&format!("destination={v4},side=outbound")],
        2.0,
        "{overflow:?}"
    );
    let refusals = samples(&s, "limiter_destination_refused_total");
    let dry = format!("action=dry_run,destination={v6},reason=limit,side=inbound");
    assert_eq!(refusals.get(&dry), Some(&1.0), "{refusals:?}");
    assert_eq!(one(&s, "limiter_up"), 1.0);
    let version = status["daemon"]["version"].as_str().unwrap();
    assert_eq!(
        samples(&s, "limiter_build_info"),
        BTreeMap::from([(format!("version={version}"), 1.0)])
    );
    let rules = samples(&s, "limiter_rules");
    assert_eq!(
        rules,
        BTreeMap::from([
            ("source=config".into(), 0.0),
            ("source=runtime".into(), 2.0)
        ])
    );
    assert!(
        one(&s, "limiter_namespaces") >= 3.0,
        "the testbed's namespaces at least"
    );
    for load in [
        "limiter_node_load1",
        "limiter_node_load5",
        "limiter_node_load15",
    ] {
        assert!(one(&s, load) >= 0.0, "{load}");
    }
    let cpu = one(&s, "limiter_node_cpu_usage_ratio");
    assert!((0.0..=1.0).contains(&cpu), "cpu {cpu}");
    assert_eq!(one(&s, "limiter_config_last_reload_successful"), 1.0);
    assert!(one(&s, "limiter_start_time_seconds") > 1.6e9);

    // Read-only and narrow: other methods and paths are refused and change nothing.
    let rules_before = daemon.list_json();
    for (method, path, want) in [
        ("POST", "/metrics", "HTTP/1.1 405"),
        ("DELETE", "/metrics", "HTTP/1.1 405"),
        ("GET", "/", "HTTP/1.1 404"),
        ("GET", "/metrics/../debug", "HTTP/1.1 404"),
    ] {
        let (head, _) = http(&addr, method, path);
        assert!(head.starts_with(want), "{method} {path}: {head}");
    }
    let (head, body) = http(&addr, "HEAD", "/metrics");
    assert!(
        head.starts_with("HTTP/1.1 200") && body.is_empty(),
        "{head}"
    );
    assert_eq!(daemon.list_json(), rules_before);
}

#[test]
fn the_endpoint_is_off_when_asked_and_a_busy_port_stops_the_start() {
    let _root = require_root();
    let daemon = Daemon::start_with(&["--metrics-addr", "none"]);
    assert_eq!(daemon.status_json()["daemon"]["metrics"], Value::Null);
    drop(daemon);
    // A daemon with its own bpffs (not the node's) serves none unless asked.
    let daemon = Daemon::start();
    assert_eq!(daemon.status_json()["daemon"]["metrics"], Value::Null);
    drop(daemon);

    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let exit = run_daemon_to_exit(&["--metrics-addr", &addr], Duration::from_secs(15));
    let stderr = String::from_utf8_lossy(&exit.output.stderr);
    assert!(!exit.output.status.success());
    let want =
        format!("error: cannot listen for metrics on {addr}; choose another with --metrics-addr");
    assert!(stderr.starts_with(&want), "{stderr}");
    let bad = run_daemon_to_exit(
        &["--metrics-addr", "localhost:9464"],
        Duration::from_secs(15),
    );
    let stderr = String::from_utf8_lossy(&bad.output.stderr);
    assert!(
        stderr.contains("`localhost:9464` is not ADDRESS:PORT or none"),
        "{stderr}"
    );
}

/// The overload check's state is exported as `limiter status` shows it: shedding, the limit in
/// force, maxInflight, the node's overload, and the shed refusals. The node is made overloaded
/// by a system rule at half its current load; the destination's own CPU is an idle cgroup's.
#[test]
fn overload_metrics_match_status() {
    let _root = require_root();
    let bed = Testbed::new(2);
    let dest = bed.pod(2).addr_v4(18200);
    let _server = bed.pod(2).hold_server(dest);
    let idle = CpuCgroup::new("metrics-overload", 1.0);
    let daemon = Daemon::start_with(&["--metrics-addr", "127.0.0.1:0"]);
    let cgroup = idle.path();
    daemon.set(
        dest,
        &[
            "--adaptive",
            "--side",
            "server",
            "--workload-cgroup",
            &cgroup,
        ],
    );
    let addr = metrics_addr(&daemon);
    daemon.wait_for_dest(dest, Duration::from_secs(3), "the check running", |d| {
        d["cpu_source"].is_string()
    });
    for _ in 0..8 {
        drop(bed.pod(1).connect_all(dest, 1));
        std::thread::sleep(Duration::from_millis(30));
    }
    daemon.wait_for_dest(dest, Duration::from_secs(5), "a maxInflight", |d| {
        d["max_inflight"].as_u64().is_some()
    });
    let s = scrape(&addr);
    let label = format!("destination={dest}");
    assert_eq!(samples(&s, "limiter_destination_shedding")[&label], 0.0);
    assert_eq!(one(&s, "limiter_node_overloaded"), 0.0);

    let load1: f64 = std::fs::read_to_string("/proc/loadavg")
        .unwrap()
        .split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .unwrap();
    let bound = format!("{:.3}", (load1 / 2.0).max(0.001));
    daemon.cli_ok(&["system", "set", "--max-load1", &bound]);
    daemon.wait_for_dest(dest, Duration::from_secs(3), "shedding", |d| {
        d["shedding"] == true
    });
    let refused = bed
        .pod(1)
        .connect_many_timed(dest, 10, Duration::from_secs(3));
    let mut last = String::new();
    let matched = wait_until(Duration::from_secs(10), || {
        let before = daemon.dest_status(dest);
        let s = scrape(&addr);
        let after = daemon.dest_status(dest);
        if before != after || after["shedding"] != true {
            return false;
        }
        let want = (
            1.0,
            after["shed_limit"].as_f64(),
            after["max_inflight"].as_f64(),
            after["inbound"]["refused"]["shed"]["reject"].as_f64(),
            1.0,
        );
        let seen = (
            samples(&s, "limiter_destination_shedding")[&label],
            samples(&s, "limiter_destination_shed_limit")
                .get(&label)
                .copied(),
            samples(&s, "limiter_destination_max_inflight")
                .get(&label)
                .copied(),
            samples(&s, "limiter_destination_refused_total")
                .get(&format!("action=reject,{label},reason=shed,side=inbound"))
                .copied(),
            one(&s, "limiter_node_overloaded"),
        );
        last = format!("want {want:?}, scraped {seen:?}");
        seen == want && want.3.is_some_and(|n| n > 0.0)
    });
    assert!(
        matched,
        "overload metrics do not match `limiter status`: {last}"
    );
    drop(refused);
}
