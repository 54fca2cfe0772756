//! Kernel capabilities: what the daemon probed is reported, and each optional capability,
//! turned off with LIMITER_DISABLE_CAPABILITIES (as a kernel without it would be), degrades
//! exactly what depends on it and nothing else. Both paths run on every kernel.

use std::io::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use limiter_integration_tests::status::counter;
use limiter_integration_tests::{
    Daemon, Testbed, holds_for, limiter_bin, require_root, run_daemon_to_exit_env,
};
use serde_json::Value;

const DISABLE: &str = "LIMITER_DISABLE_CAPABILITIES";

fn capability<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["daemon"]["dataplane"]["capabilities"]
        .as_array()
        .and_then(|caps| caps.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("capability {name} missing from status: {status:#}"))
}

/// Without the socket-storage iterator, a rule created over open connections counts each
/// when it next carries a packet: idle ones are not counted (and status says so per rule),
/// and once counted they are enforced against like any other.
#[test]
fn without_the_seed_iterator_open_connections_count_on_their_next_packet() {
    let _root = require_root();
    let bed = Testbed::new(2);
    let dest = bed.pod(2).addr_v4(8080);
    let _server = bed.pod(2).hold_server(dest);
    let daemon = Daemon::start_with_env(&[] as &[&str], &[(DISABLE, "seed_iterator")]);
    let status = daemon.status_json();
    let cap = capability(&status, "seed_iterator");
    assert_eq!(cap["available"], false, "{cap:#}");
    assert!(
        cap["detail"].as_str().unwrap_or("").contains(DISABLE),
        "the reason names the switch: {cap:#}"
    );
    assert_eq!(status["daemon"]["dataplane"]["seeding"], "next_packet");
    assert_eq!(
        status["daemon"]["dataplane"]["degraded"],
        serde_json::json!(["seed_iterator"])
    );

    let mut conns = bed.pod(1).connect_all(dest, 4);
    daemon.set(dest, &["--max-connections", "4", "--side", "server"]);
    let d = daemon.dest_status(dest);
    assert_eq!(d["seeding"], "next_packet", "{d:#}");
    // Idle: nothing carries a packet, so nothing is counted (the documented consequence).
    let mut last = Value::Null;
    let idle = holds_for(Duration::from_millis(500), || {
        last = daemon.dest_status(dest);
        counter(&last, "inbound", "active") == 0 && counter(&last, "outbound", "active") == 0
    });
    assert!(idle, "idle connections counted without a packet: {last:#}");

    // One byte on two of them: those two are counted, on both sides.
    for c in &mut conns[..2] {
        c.write_all(b"x").expect("write on an open connection");
    }
    daemon.wait_for_active(dest, 2, 2);
    for c in &mut conns[2..] {
        c.write_all(b"x").expect("write on an open connection");
    }
    daemon.wait_for_active(dest, 4, 4);
    // Adopted connections hold their slots: the limit of 4 is full.
    let refused = bed.pod(1).connect_many(dest, 2, Duration::from_secs(3));
    assert!(
        refused.iter().all(|r| r.is_err()),
        "a connection over the adopted 4 was admitted: {refused:?}"
    );
    drop(conns);
    daemon.wait_for_active(dest, 0, 0);
}

/// Without bpf_set_retval (before Linux 5.18), a connect() refused on the client side still
/// fails at once, with EPERM instead of ECONNREFUSED.
#[test]
fn without_set_retval_a_client_refusal_is_eperm_and_still_immediate() {
    let _root = require_root();
    let bed = Testbed::new(2);
    let dest = bed.pod(2).addr_v4(8080);
    let _server = bed.pod(2).hold_server(dest);
    let daemon = Daemon::start_with_env(&[] as &[&str], &[(DISABLE, "set_retval")]);
    assert_eq!(
        capability(&daemon.status_json(), "set_retval")["available"],
        false
    );
    daemon.set(dest, &["--max-connections", "1", "--side", "client"]);
    let _held = bed.pod(1).connect_all(dest, 1);
    let attempts = bed
        .pod(1)
        .connect_many_timed(dest, 3, Duration::from_secs(3));
    for a in &attempts {
        let err = a.result.as_ref().expect_err("over the limit of 1");
        assert_eq!(
            err.raw_os_error(),
            Some(libc::EPERM),
            "refused with {err} after {:?}",
            a.elapsed
        );
        assert!(
            a.elapsed < limiter_integration_tests::REJECT_LATENCY,
            "refusal took {:?}",
            a.elapsed
        );
    }
}

/// A required capability cannot be switched off: the daemon refuses the switch, names the
/// optional ones, and attaches nothing.
#[test]
fn a_required_capability_cannot_be_turned_off() {
    let _root = require_root();
    let exit = run_daemon_to_exit_env(
        &[] as &[&str],
        &[(DISABLE, "bpf_atomics")],
        Duration::from_secs(20),
    );
    let stderr = String::from_utf8_lossy(&exit.output.stderr);
    assert_eq!(exit.output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("\"bpf_atomics\" is not an optional capability")
            && stderr.contains("set_retval, seed_iterator"),
        "{stderr}"
    );
}

/// `limiter doctor` on this machine: the capability table, every program limiter attached
/// listed as its own while a daemon runs, exit 0.
#[test]
fn doctor_reports_capabilities_and_our_programs() {
    let _root = require_root();
    let daemon = Daemon::start();
    let bpffs = daemon.bpffs().to_path_buf();
    let started = Instant::now();
    let out = Command::new(limiter_bin())
        .args(["doctor", "-o", "json", "--bpffs"])
        .arg(&bpffs)
        .output()
        .expect("run limiter doctor");
    assert!(out.status.success(), "doctor: {out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("doctor -o json is JSON");
    assert_eq!(report["ready"], true, "{report:#}");
    assert_eq!(report["bpffs"]["mounted"], true, "{report:#}");
    let caps = report["capabilities"].as_array().expect("capabilities");
    for name in [
        "bpf_atomics",
        "sk_storage",
        "sk_lookup",
        "set_retval",
        "seed_iterator",
    ] {
        assert!(
            caps.iter().any(|c| c["name"] == name),
            "{name} not probed: {report:#}"
        );
    }
    // The same answers as the running daemon probed.
    let status = daemon.status_json();
    for c in caps {
        let name = c["name"].as_str().expect("name");
        assert_eq!(
            c["available"],
            capability(&status, name)["available"],
            "doctor and daemon disagree on {name}"
        );
    }
    let ours: Vec<&str> = report["neighbours"]
        .as_array()
        .expect("neighbours")
        .iter()
        .filter(|p| p["ours"] == true)
        .filter_map(|p| p["hook"].as_str())
        .collect();
    for hook in [
        "cgroup_skb/ingress",
        "cgroup_skb/egress",
        "sock_ops",
        "cgroup/connect4",
        "cgroup/connect6",
        "sk_lookup",
    ] {
        assert!(ours.contains(&hook), "ours on {hook}? {report:#}");
    }
    println!("doctor answered in {:?}", started.elapsed());
    let text = Command::new(limiter_bin())
        .arg("doctor")
        .output()
        .expect("run limiter doctor");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("CAPABILITY") && text.contains("verdict: ready"),
        "{text}"
    );
}

/// What is wrong is said exactly: not root, and no bpffs where one is expected.
#[test]
fn doctor_says_what_is_wrong() {
    let _root = require_root();
    let missing = tempfile::tempdir().expect("temp dir");
    let out = Command::new(limiter_bin())
        .args(["doctor", "--bpffs"])
        .arg(missing.path())
        .output()
        .expect("run limiter doctor");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("no bpffs at {}", missing.path().display())),
        "{text}"
    );
    // As nobody: the probes cannot run, and doctor says why and fails.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(limiter_bin())
        .arg("doctor")
        .output()
        .expect("run limiter doctor as nobody");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("not running as root") && stderr.contains("cannot run the limiter daemon"),
        "{stdout}{stderr}"
    );
}
