//! The kernel smoke suite that `cargo xtask vm-test` runs inside each guest kernel: a short
//! pass over what must work on every supported kernel, against the real `limiter` binary
//! (`LIMITER_BIN`). One daemon and one two-pod testbed serve every scenario (each on its own
//! port), so the whole suite stays within about two minutes of a slow (TCG) guest.
//!
//! Each scenario prints `smoke: NAME ok|FAIL|skip (detail) in X s` and appends one JSON line
//! (`name`, `status`, `detail`, `seconds`, and for `probe` the doctor's report) to the results
//! file: `kernel-smoke --results FILE`, or `$LIMITER_SMOKE_RESULTS`. If the daemon cannot start,
//! a `daemon` line records its first error line and exit code, and the suite stops there.
//!
//! Run it as root, on a machine (or guest) no other limiter test uses at the same time.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use limiter_integration_tests::cli::limiter_command;
use limiter_integration_tests::status::{counter, find_destination_text};
use limiter_integration_tests::{
    ConnectAttempt, Daemon, HoldServer, Outcomes, Pod, Testbed, holds_for, require_root, wait_until,
};
use serde_json::{Value, json};

/// Emulated guests are 10-50x slower than the host: every wait is generous.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
const COUNTER_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A refusal "at once" in an emulated guest (the host bound is 50 ms).
const FAST_REFUSAL: Duration = Duration::from_secs(1);
/// How long a dropped SYN is given to (not) connect.
const DROP_WAIT: Duration = Duration::from_secs(3);

/// How one scenario ended.
#[derive(Clone, Copy, PartialEq)]
enum Status {
    Ok,
    Fail,
    /// Could not run here for a reason outside the kernel (e.g. `limiter doctor` not built in).
    Skip,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        }
    }
}

/// Where results go: printed, and appended as JSON lines.
struct Report {
    file: std::fs::File,
    failed: bool,
}

impl Report {
    fn record(&mut self, name: &str, status: Status, detail: &str, took: Duration, extra: Value) {
        let seconds = (took.as_secs_f64() * 10.0).round() / 10.0;
        println!(
            "smoke: {name} {} ({detail}) in {seconds:.1} s",
            status.as_str()
        );
        let mut line = json!({
            "name": name,
            "status": status.as_str(),
            "detail": detail,
            "seconds": seconds,
        });
        if let (Value::Object(line), Value::Object(extra)) = (&mut line, extra) {
            line.extend(extra);
        }
        writeln!(self.file, "{line}").expect("append to the results file");
        self.failed |= status == Status::Fail;
    }

    /// Runs `scenario`; a panic inside it is its failure, with the panic's message as detail.
    fn run(&mut self, name: &str, scenario: impl FnOnce() -> String) {
        let start = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(scenario));
        let took = start.elapsed();
        match outcome {
            Ok(detail) => self.record(name, Status::Ok, &detail, took, json!({})),
            Err(payload) => {
                let message = payload
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| payload.downcast_ref::<&str>().copied())
                    .unwrap_or("panicked");
                self.record(name, Status::Fail, &one_line(message), took, json!({}));
            }
        }
    }
}

fn main() -> ExitCode {
    let results = std::env::args()
        .skip_while(|a| a != "--results")
        .nth(1)
        .or_else(|| std::env::var("LIMITER_SMOKE_RESULTS").ok())
        .map(PathBuf::from);
    let Some(results) = results else {
        eprintln!("usage: kernel-smoke --results FILE (or LIMITER_SMOKE_RESULTS=FILE)");
        return ExitCode::from(2);
    };
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&results)
        .unwrap_or_else(|e| panic!("open {}: {e}", results.display()));
    let mut report = Report {
        file,
        failed: false,
    };
    let _root = require_root();

    probe(&mut report);

    // Declared before the daemon, so its namespaces exist when the daemon attaches sk_lookup
    // (and are dropped after it).
    let bed = Testbed::new(2);
    let start = Instant::now();
    let mut daemon = match Daemon::try_start_with(&[] as &[&str], READY_TIMEOUT) {
        Ok(daemon) => daemon,
        Err(failure) => {
            let mut detail = failure.first_error_line().to_string();
            if let Some(why) = failure
                .verifier_reason()
                .filter(|why| !detail.contains(why))
            {
                detail += &format!(" [verifier: {why}]");
            }
            eprintln!(
                "{} (its log: daemon.log beside the results)",
                failure.reason
            );
            write_daemon_log(&results, &failure.log);
            let extra = json!({ "exit_code": failure.exit_code, "log": failure.log });
            report.record("daemon", Status::Fail, &detail, start.elapsed(), extra);
            return ExitCode::FAILURE;
        }
    };
    report.record("daemon", Status::Ok, "started", start.elapsed(), json!({}));

    let (client, server) = (bed.pod(1), bed.pod(2));
    report.run("accounting", || accounting(&daemon, client, server));
    report.run("server_reject", || server_reject(&daemon, client, server));
    report.run("server_drop", || server_drop(&daemon, client, server));
    report.run("client_reject", || client_reject(&daemon, client, server));
    report.run("seeding", || seeding(&daemon, client, server));
    report.run("breaker", || breaker(&daemon, client, server));
    report.run("restart", || restart(&mut daemon, client, server));
    write_daemon_log(&results, &daemon.log());
    drop(daemon);

    // The optional capabilities switched off, as on a kernel without them: this kernel's
    // verifier must accept the programs with those switches too (it judges the code each
    // switch leaves in), and they must behave as documented (EPERM, adoption by packet).
    report.run("degraded", || {
        let daemon = Daemon::start_with_env(
            &[] as &[&str],
            &[("LIMITER_DISABLE_CAPABILITIES", "seed_iterator,set_retval")],
        );
        let reject = client_reject(&daemon, client, server);
        let seeded = seeding(&daemon, client, server);
        format!("{reject}; {seeded}")
    });
    if report.failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The daemon's whole log as `daemon.log` beside the results (the verifier's full output when a
/// program is rejected, for one).
fn write_daemon_log(results: &std::path::Path, log: &str) {
    if let Some(dir) = results.parent() {
        let _ = std::fs::write(dir.join("daemon.log"), log);
    }
}

/// `limiter doctor -o json`: what this kernel offers, stored whole in the result line. A
/// `limiter` without the subcommand is a skip (the rest of the suite still says what works).
fn probe(report: &mut Report) {
    let start = Instant::now();
    let out = limiter_command()
        .args(["doctor", "-o", "json"])
        .output()
        .expect("run limiter doctor");
    let took = start.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let code = out.status.code();
    match serde_json::from_str::<Value>(&stdout) {
        Ok(doctor) => {
            let ready = doctor["ready"].as_bool();
            // The contract: exit 0 when the node can run the daemon, 1 when not.
            let consistent = matches!(
                (ready, code),
                (Some(true), Some(0)) | (Some(false), Some(1))
            );
            let detail = match ready {
                Some(true) => "ready".to_string(),
                Some(false) => format!("not ready: {}", doctor["problems"]),
                None => "no `ready` field".to_string(),
            };
            let status = if consistent { Status::Ok } else { Status::Fail };
            let detail = if consistent {
                detail
            } else {
                format!("{detail}, but exit code {code:?}")
            };
            report.record("probe", status, &detail, took, json!({ "doctor": doctor }));
        }
        Err(_) if stderr.contains("unrecognized subcommand") || stderr.contains("'doctor'") => {
            let detail = format!("doctor unavailable: {}", one_line(&stderr));
            report.record("probe", Status::Skip, &detail, took, json!({}));
        }
        Err(e) => {
            let detail = format!(
                "limiter doctor -o json ({code:?}) printed no JSON ({e}): {}",
                one_line(&format!("{stdout} {stderr}"))
            );
            report.record("probe", Status::Fail, &detail, took, json!({}));
        }
    }
}

/// Limit N, N connections held: active is N exactly on both sides; closing brings it to 0.
fn accounting(daemon: &Daemon, client: &Pod, server: &Pod) -> String {
    const N: usize = 5;
    let dest = server.addr_v4(8001);
    let _server = server.hold_server(dest);
    daemon.set_rule(dest, N as u32);
    let conns = client.connect_all(dest, N);
    wait_active(daemon, dest, N as u64);
    drop(conns);
    wait_active(daemon, dest, 0);
    format!("{N} held counted {N}/{N}, closed back to 0")
}

/// Server side, reject: connects over the limit get ECONNREFUSED (an RST) at once.
fn server_reject(daemon: &Daemon, client: &Pod, server: &Pod) -> String {
    const N: usize = 3;
    let dest = server.addr_v4(8002);
    let held = server.hold_server(dest);
    daemon.set(
        dest,
        &["--max-connections", &N.to_string(), "--side", "server"],
    );
    let _conns = client.connect_all(dest, N);
    let over = client.connect_many_timed(dest, 3, CONNECT_TIMEOUT);
    // An RST from the server side: ECONNREFUSED on every kernel.
    let slowest = expect_all_refused(
        "over the server-side limit",
        &over,
        ErrorKind::ConnectionRefused,
    );
    expect_accepted(&held, N, "accepted beyond the limit");
    format!("3 over the limit refused, slowest {slowest:?}")
}

/// Server side, drop: a connect over the limit is not established (its SYNs are discarded).
fn server_drop(daemon: &Daemon, client: &Pod, server: &Pod) -> String {
    const N: usize = 2;
    let dest = server.addr_v4(8003);
    let held = server.hold_server(dest);
    let limit = N.to_string();
    daemon.set(
        dest,
        &[
            "--max-connections",
            &limit,
            "--side",
            "server",
            "--mode",
            "drop",
        ],
    );
    let _conns = client.connect_all(dest, N);
    let over = client.connect_many_timed(dest, 1, DROP_WAIT);
    let outcome = Outcomes::of(&over);
    assert!(
        outcome.ok.is_empty() && outcome.refused.is_empty() && outcome.timed_out.len() == 1,
        "a connect over the drop limit should time out: {}",
        outcome.summary()
    );
    expect_accepted(&held, N, "accepted beyond the limit");
    format!("the connect over the limit timed out after {DROP_WAIT:?}")
}

/// Client side: connect() over the limit fails with ECONNREFUSED before a packet leaves.
fn client_reject(daemon: &Daemon, client: &Pod, server: &Pod) -> String {
    const N: usize = 2;
    let dest = server.addr_v4(8004);
    let held = server.hold_server(dest);
    daemon.set(
        dest,
        &["--max-connections", &N.to_string(), "--side", "client"],
    );
    let _conns = client.connect_all(dest, N);
    let over = client.connect_many_timed(dest, 2, CONNECT_TIMEOUT);
    let want = client_refusal(daemon);
    let slowest = expect_all_refused("over the client-side limit", &over, want);
    expect_accepted(&held, N, "the server saw a refused connect");
    format!("2 over the limit refused in connect() ({want:?}), slowest {slowest:?}")
}

/// A circuit breaker on a refusing endpoint (RST): 3 refusals open it, then connect() fails
/// at once inside the kernel; after the open time a probe to the endpoint, now listening,
/// closes it. Runs the breaker's kernel paths (the gate, the RTO and state callbacks, the
/// ingress RST mark) under this kernel's verifier and its real TCP.
fn breaker(daemon: &Daemon, client: &Pod, server: &Pod) -> String {
    let dest = server.addr_v4(8006);
    daemon.set(
        dest,
        &[
            "--side",
            "client",
            "--breaker-consecutive",
            "3",
            "--breaker-open",
            "2s",
        ],
    );
    for i in 1..=3 {
        let refused = client.connect_many_timed(dest, 1, CONNECT_TIMEOUT);
        expect_all_refused(
            &format!("refusing endpoint, attempt {i}"),
            &refused,
            ErrorKind::ConnectionRefused,
        );
    }
    let opened = Instant::now();
    let breaker_of = |daemon: &Daemon| {
        let status = daemon.status_json();
        let d = find_destination_text(&status, &dest.to_string())
            .unwrap_or_else(|| panic!("{dest} missing from {status}"));
        d["breakers"][0].clone()
    };
    let b = breaker_of(daemon);
    assert_eq!(b["state"], "open", "after 3 refusals: {b}");
    assert_eq!(b["failures_total"]["refused"], 3, "{b}");
    let over = client.connect_many_timed(dest, 3, CONNECT_TIMEOUT);
    let want = client_refusal(daemon);
    let slowest = expect_all_refused("breaker open", &over, want);
    assert_eq!(
        breaker_of(daemon)["refused_total"],
        3,
        "refused by the breaker"
    );
    let _listening = server.hold_server(dest);
    std::thread::sleep(Duration::from_secs(2).saturating_sub(opened.elapsed()));
    let flows = wait_until(COUNTER_TIMEOUT, || {
        client.connect_many_timed(dest, 1, CONNECT_TIMEOUT)[0]
            .result
            .is_ok()
    });
    assert!(flows, "the endpoint listens again, yet connects still fail");
    let b = breaker_of(daemon);
    assert_eq!(b["state"], "closed", "after a successful probe: {b}");
    format!(
        "opened after 3 refusals; 3 connects refused by it ({want:?}), slowest {slowest:?}; closed by a probe"
    )
}

/// Connections open before the rule is set are counted after `set`: at once where the daemon
/// seeds exactly (the socket-storage iterator), else each at its next packet, so then each
/// sends a byte first.
fn seeding(daemon: &Daemon, client: &Pod, server: &Pod) -> String {
    const N: usize = 4;
    let dest = server.addr_v4(8005);
    let _server = server.hold_server(dest);
    let mut conns = client.connect_all(dest, N);
    daemon.set_rule(dest, N as u32);
    let d = daemon.dest_status(dest);
    let mode = d["seeding"].as_str().unwrap_or("unknown").to_string();
    daemon.let_rule_count_open(dest, || Daemon::one_byte_on_each(&mut conns));
    wait_active(daemon, dest, N as u64);
    let over = client.connect_many_timed(dest, 1, CONNECT_TIMEOUT);
    let want = client_refusal(daemon);
    expect_all_refused("over the limit reached by seeded connections", &over, want);
    drop(conns);
    wait_active(daemon, dest, 0);
    format!("{N} opened before the rule counted {N}/{N} (seeding {mode})")
}

/// kill -9 and restart: the limit holds while no daemon runs, the new daemon adopts the
/// counts, and the held connections still carry data.
fn restart(daemon: &mut Daemon, client: &Pod, server: &Pod) -> String {
    const N: usize = 3;
    let dest = server.addr_v4(8006);
    let _server = server.echo_server(dest);
    daemon.set_rule(dest, N as u32);
    let mut conns = client.connect_all(dest, N);
    wait_active(daemon, dest, N as u64);
    let down = Instant::now();
    let mut down_for = Duration::ZERO;
    let want = client_refusal(daemon);
    daemon.crash_and_restart(|| {
        expect_all_refused(
            "while no daemon runs",
            &client.connect_many_timed(dest, 1, CONNECT_TIMEOUT),
            want,
        );
        echo_all(&mut conns, "while no daemon runs");
        down_for = down.elapsed();
    });
    let d = wait_active(daemon, dest, N as u64);
    assert_eq!(
        d["rule"]["max_connections"], N as u64,
        "the rule survived the restart: {d}"
    );
    expect_all_refused(
        "after the restart",
        &client.connect_many_timed(dest, 1, CONNECT_TIMEOUT),
        want,
    );
    echo_all(&mut conns, "after the restart");
    drop(conns);
    wait_active(daemon, dest, 0);
    format!(
        "limit held while down ({down_for:.1?}), {N}/{N} adopted, restart took {:.1?}",
        down.elapsed() - down_for
    )
}

/// Waits until `dest` counts exactly `n` active connections on both sides.
#[track_caller]
fn wait_active(daemon: &Daemon, dest: SocketAddr, n: u64) -> Value {
    let what = format!("inbound.active == {n} and outbound.active == {n}");
    daemon.wait_for_dest(dest, COUNTER_TIMEOUT, &what, |d| {
        counter(d, "inbound", "active") == n && counter(d, "outbound", "active") == n
    })
}

/// How connect() fails when the client side refuses it: ECONNREFUSED, or EPERM where the daemon
/// runs without `bpf_set_retval` (before 5.18; `daemon.dataplane.degraded` names it).
fn client_refusal(daemon: &Daemon) -> ErrorKind {
    let status = daemon.status_json();
    let degraded = &status["daemon"]["dataplane"]["degraded"];
    let without_retval = degraded
        .as_array()
        .is_some_and(|names| names.iter().any(|n| n == "set_retval"));
    if without_retval {
        ErrorKind::PermissionDenied
    } else {
        ErrorKind::ConnectionRefused
    }
}

/// Every attempt failed with `want` within [`FAST_REFUSAL`]; returns the slowest.
#[track_caller]
fn expect_all_refused(what: &str, attempts: &[ConnectAttempt], want: ErrorKind) -> Duration {
    let wrong: Vec<String> = attempts
        .iter()
        .filter(|a| !matches!(&a.result, Err(e) if e.kind() == want))
        .map(|a| {
            format!(
                "{:?} after {:?}",
                a.result.as_ref().map(|_| "connected"),
                a.elapsed
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{what}: want every connect to fail with {want:?}; {} did not ({}): {wrong:?}",
        wrong.len(),
        Outcomes::of(attempts).summary()
    );
    let slowest = attempts.iter().map(|a| a.elapsed).max().unwrap_or_default();
    assert!(
        slowest < FAST_REFUSAL,
        "{what}: a refusal took {slowest:?} (want < {FAST_REFUSAL:?})"
    );
    slowest
}

/// The server accepted exactly `n` connections: it accepts on its own thread, so first wait
/// for `n`, then check that no more arrive for a moment.
#[track_caller]
fn expect_accepted(server: &HoldServer, n: usize, what: &str) {
    wait_until(COUNTER_TIMEOUT, || server.accepted_count() >= n);
    let settled = holds_for(Duration::from_millis(300), || server.accepted_count() == n);
    assert!(
        settled,
        "{what}: the server accepted {}, want {n}",
        server.accepted_count()
    );
}

/// Every stream still carries data both ways (the server echoes).
#[track_caller]
fn echo_all(streams: &mut [TcpStream], when: &str) {
    for (i, s) in streams.iter_mut().enumerate() {
        s.set_read_timeout(Some(CONNECT_TIMEOUT))
            .expect("set a read timeout");
        s.write_all(&[i as u8])
            .unwrap_or_else(|e| panic!("{when}: connection {i} cannot send: {e}"));
        let mut b = [0u8; 1];
        match s.read_exact(&mut b) {
            Ok(()) => assert_eq!(b[0], i as u8, "{when}: connection {i} echoed another byte"),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                panic!("{when}: connection {i} got no echo within {CONNECT_TIMEOUT:?}")
            }
            Err(e) => panic!("{when}: connection {i} got no echo: {e}"),
        }
    }
}

/// `text` on one line (a panic message can span several), trimmed to a readable length.
fn one_line(text: &str) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match joined.char_indices().nth(300) {
        Some((cut, _)) => format!("{}...", &joined[..cut]),
        None => joined,
    }
}
