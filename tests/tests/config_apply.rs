//! The declarative side of the daemon: a config file applied at start, each kind of invalid
//! file refused with its place (at start, by `limiter apply -f`, by `limiter reload`) and
//! changing nothing, `apply` all or nothing, reload on `limiter reload` and SIGHUP with runtime
//! changes keeping precedence, and runtime rules that come back after a restart from the state
//! file. Destinations: the testbed's pods, or TEST-NET-1 (192.0.2.0/24, never routed) where no
//! traffic is needed; ports 18000-18099 only.

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use limiter_integration_tests::cli::describe_args;
use limiter_integration_tests::{
    Daemon, Pod, Testbed, require_root, run_daemon_to_exit, wait_until,
};
use serde_json::{Value, json};
use tempfile::TempDir;

const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

fn arg(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

/// `[[rules]]` tables for `(destination, max_connections)` pairs.
fn rules_toml(rules: &[(&str, u32)]) -> String {
    rules
        .iter()
        .map(|(d, max)| format!("[[rules]]\ndestination = \"{d}\"\nmax_connections = {max}\n\n"))
        .collect()
}

/// `limiter list -o json` as `(destination, max_connections, source)`.
fn listed(daemon: &Daemon) -> Vec<(String, u64, String)> {
    let list = daemon.list_json();
    let rules = list
        .as_array()
        .unwrap_or_else(|| panic!("list is not an array: {list}"));
    rules
        .iter()
        .map(|r| {
            let text = |k: &str| {
                r[k].as_str()
                    .unwrap_or_else(|| panic!("no {k} in {r}"))
                    .to_owned()
            };
            (
                text("destination"),
                r["max_connections"].as_u64().unwrap_or(0),
                text("source"),
            )
        })
        .collect()
}

fn rule(dest: &str, max: u64, source: &str) -> (String, u64, String) {
    (dest.to_owned(), max, source.to_owned())
}

/// `limiter ARGS` must fail with one line on stderr starting with `want`; returns that line.
#[track_caller]
fn expect_error(daemon: &Daemon, args: &[&str], want: &str) -> String {
    let out = daemon.cli(args);
    let stderr = String::from_utf8_lossy(&out.stderr).trim_end().to_owned();
    assert!(!out.status.success(), "`{}` succeeded", describe_args(args));
    assert_eq!(
        stderr.lines().count(),
        1,
        "`{}`: one line wanted: {stderr}",
        describe_args(args)
    );
    assert!(
        stderr.starts_with(want),
        "`{}`: want `{want}...`, got: {stderr}",
        describe_args(args)
    );
    stderr
}

/// One raw request line on the control socket, as a script would send it; the answer.
fn raw_request(socket: &Path, line: &str) -> Value {
    let mut s = UnixStream::connect(socket).expect("connect to the control socket");
    // The daemon may refuse (an oversized request) and close before it read everything.
    let _ = s
        .write_all(line.as_bytes())
        .and_then(|()| s.write_all(b"\n"));
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read the answer");
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("invalid answer ({e}): {answer}"))
}

/// `n` connects from `pod` to `dest` must all succeed, and one more must be refused at once.
#[track_caller]
fn assert_limit(pod: &Pod, dest: SocketAddr, n: usize) -> Vec<std::net::TcpStream> {
    let conns = pod.connect_all(dest, n);
    let extra = pod
        .connect_many_timed(dest, 1, Duration::from_secs(3))
        .pop()
        .expect("one");
    match &extra.result {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => conns,
        other => panic!(
            "{dest}: connect {} of a limit of {n} gave {other:?}, want ECONNREFUSED",
            n + 1
        ),
    }
}

#[test]
fn a_valid_config_is_applied_and_listed_as_config() {
    let _root = require_root();
    let bed = Testbed::new(2);
    let (v4, v6) = (bed.pod(2).addr_v4(18001), bed.pod(2).addr_v6(18002));
    let _servers = (bed.pod(2).hold_server(v4), bed.pod(2).hold_server(v6));
    let dir = TempDir::new().unwrap();
    let text = format!(
        "[daemon]\nlog_level = \"debug\"\n\n{}[[rules]]\ndestination = \"{v6}\"\n\
         max_connections = 1\nmode = \"reject\"\nside = \"client\"\nsyn_rate = 100\n",
        rules_toml(&[(&v4.to_string(), 2)])
    );
    let config = write(dir.path(), "limiter.toml", &text);
    let daemon = Daemon::start_with(&["--config", arg(&config)]);

    let list = daemon.list_json();
    assert_eq!(
        list,
        json!([
            {"destination": v4.to_string(), "max_connections": 2, "mode": "reject",
             "side": "both", "source": "config"},
            {"destination": v6.to_string(), "max_connections": 1, "mode": "reject",
             "side": "client", "syn_rate": 100, "source": "config"},
        ])
    );
    assert!(
        daemon
            .cli_ok(&["list"])
            .lines()
            .nth(1)
            .unwrap()
            .ends_with("config")
    );
    let status = daemon.status_json();
    assert_eq!(status["daemon"]["config"], json!(config));
    assert_eq!(status["destinations"][0]["source"], "config");
    // In force in the kernel.
    let _c4 = assert_limit(bed.pod(1), v4, 2);
    let _c6 = assert_limit(bed.pod(1), v6, 1);
}

/// Bad files: the text, and what the error says after `FILE:`.
fn bad_rule_files() -> Vec<(String, &'static str)> {
    let d = "192.0.2.1:18010";
    vec![
        (
            format!("[[rules]]\ndestination = \"{d}\nmax_connections = 1\n"),
            "2:31: invalid basic string",
        ),
        (
            format!("[[rules]]\ndestination = \"{d}\"\nmax_conections = 5\n"),
            "3:1: unknown field `max_conections`",
        ),
        (
            "[[rules]]\ndestination = \"192.0.2.1:99999\"\n".into(),
            "2:15: port 99999 is out of range 1-65535",
        ),
        (
            "[[rules]]\ndestination = \"192.0.2.1/24:18010\"\n".into(),
            "2:15: 192.0.2.1/24 has host bits set",
        ),
        (
            format!("[[rules]]\ndestination = \"{d}\"\nmax_connections = 2\nper_source = 3\n"),
            "4:1: rule for 192.0.2.1:18010, field `per_source`: per-source (3) cannot exceed max-connections (2)",
        ),
        (
            format!("[[rules]]\ndestination = \"{d}\"\nmax_connections = 0\n"),
            "3:1: rule for 192.0.2.1:18010, field `max_connections`: max-connections must be at least 1",
        ),
        (
            format!("[[rules]]\ndestination = \"{d}\"\nmax_connections = \"five\"\n"),
            "3:19: invalid type: string \"five\"",
        ),
        (
            format!("[[rules]]\ndestination = \"{d}\"\nmode = \"sometimes\"\n"),
            "3:8: unknown variant `sometimes`",
        ),
        (
            format!(
                "{}[[rules]]\ndestination = \"[::ffff:192.0.2.1]:18010\"\n",
                rules_toml(&[(d, 1)])
            ),
            "5:1: a second rule for 192.0.2.1:18010 (the first is at line 1)",
        ),
    ]
}

fn bad_daemon_files() -> Vec<(String, &'static str)> {
    vec![
        (
            "[daemon]\nsockett = \"/x\"\n".into(),
            "2:1: unknown field `sockett`",
        ),
        (
            "[daemon]\nmetrics_addr = \"localhost\"\n".into(),
            "2:16: `localhost` is not ADDRESS:PORT or none",
        ),
        (
            "[daemon]\nsocket_group = \"no-such-group-18\"\n".into(),
            "2:16: no group named `no-such-group-18`",
        ),
        (
            "[daemon]\nlog_level = \"info,,=[\"\n".into(),
            "2:1: log_level \"info,,=[\" is not a level or filter",
        ),
    ]
}

#[test]
fn each_kind_of_invalid_config_is_refused_with_its_place_and_changes_nothing() {
    let _root = require_root();
    let dir = TempDir::new().unwrap();
    // At start: the daemon stops before it touches anything.
    for (i, (text, want)) in bad_rule_files()
        .into_iter()
        .chain(bad_daemon_files())
        .enumerate()
    {
        let file = write(dir.path(), &format!("bad{i}.toml"), &text);
        let exit = run_daemon_to_exit(&["--config", arg(&file)], EXIT_TIMEOUT);
        let stderr = String::from_utf8_lossy(&exit.output.stderr);
        assert!(!exit.output.status.success(), "{text}: the daemon started");
        let want = format!("error: {}:{want}", file.display());
        assert!(
            stderr.trim_end().starts_with(&want),
            "want `{want}...`, got: {stderr}"
        );
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    }

    // At runtime: `apply -f` and `reload` of a bad file change none of the rules in force.
    let good = rules_toml(&[("192.0.2.1:18010", 5), ("192.0.2.2:18011", 6)]);
    let config = write(dir.path(), "limiter.toml", &good);
    let daemon = Daemon::start_with(&["--config", arg(&config)]);
    daemon.set("192.0.2.3:18012", &["--max-connections", "7"]);
    let before = daemon.list_json();
    for (text, want) in bad_rule_files() {
        let file = write(dir.path(), "apply.toml", &text);
        expect_error(
            &daemon,
            &["apply", "-f", arg(&file)],
            &format!("error: {}:{want}", file.display()),
        );
        assert_eq!(
            daemon.list_json(),
            before,
            "apply of a bad file changed the rules:\n{text}"
        );

        std::fs::write(&config, &text).unwrap();
        let line = expect_error(
            &daemon,
            &["reload"],
            &format!("error: {}:{want}", config.display()),
        );
        assert!(
            line.ends_with("; the running rules are unchanged"),
            "{line}"
        );
        assert_eq!(
            daemon.list_json(),
            before,
            "reload of a bad file changed the rules:\n{text}"
        );
    }
    for (text, _) in bad_daemon_files() {
        let file = write(dir.path(), "apply.toml", &text);
        let want = format!(
            "error: {}:1:1: `limiter apply` takes [[rules]] tables only",
            file.display()
        );
        expect_error(&daemon, &["apply", "-f", arg(&file)], &want);
        assert_eq!(daemon.list_json(), before);
    }
    // A corrupt state file stops the start, named.
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    write(
        &state,
        "rules.json",
        "{\"version\": 1, \"rules\": [{\"destination\": \"192.0.2.1\"}]}",
    );
    let exit = run_daemon_to_exit(&["--state-dir", arg(&state)], EXIT_TIMEOUT);
    let stderr = String::from_utf8_lossy(&exit.output.stderr);
    let want = format!(
        "error: the state file {}/rules.json is corrupt",
        state.display()
    );
    assert!(stderr.starts_with(&want), "{stderr}");
    assert!(stderr.contains("192.0.2.1 has no port"), "{stderr}");
}

#[test]
fn apply_is_all_or_nothing_and_wins_over_the_config() {
    let _root = require_root();
    let bed = Testbed::new(2);
    let (a, b) = (bed.pod(2).addr_v4(18020), bed.pod(2).addr_v4(18021));
    let _servers = (bed.pod(2).hold_server(a), bed.pod(2).hold_server(b));
    let (a_s, b_s) = (a.to_string(), b.to_string());
    let dir = TempDir::new().unwrap();
    let config = write(dir.path(), "limiter.toml", &rules_toml(&[(&a_s, 5)]));
    let daemon = Daemon::start_with(&["--config", arg(&config)]);

    let cidr = format!(
        "{}.0/24:18022",
        bed.pod(2).v4().to_string().rsplit_once('.').unwrap().0
    );
    let file = write(
        dir.path(),
        "apply.toml",
        &rules_toml(&[(&a_s, 2), (&b_s, 3), (&cidr, 4)]),
    );
    let out = daemon.cli_ok(&["apply", "-f", arg(&file)]);
    assert_eq!(
        out.trim(),
        format!(
            "applied 3 rules from {}: 3 changed, 0 unchanged",
            file.display()
        )
    );
    let want = vec![
        rule(&a_s, 2, "runtime"),
        rule(&b_s, 3, "runtime"),
        rule(&cidr, 4, "runtime"),
    ];
    assert_eq!(listed(&daemon), want);
    assert_eq!(daemon.list_json()[0]["config_rule"]["max_connections"], 5);
    let table = daemon.cli_ok(&["list"]);
    assert!(
        table
            .lines()
            .nth(1)
            .unwrap()
            .ends_with("runtime (overrides config)"),
        "{table}"
    );
    let again = daemon.cli_ok(&["apply", "-f", arg(&file)]);
    assert!(
        again.trim().ends_with(": 0 changed, 3 unchanged"),
        "{again}"
    );

    // A bad rule anywhere: nothing is applied, through the CLI or straight on the socket.
    let bad = format!(
        "{}[[rules]]\ndestination = \"192.0.2.9:18023\"\nsyn_burst = 5\n",
        rules_toml(&[(&b_s, 30)])
    );
    let bad_file = write(dir.path(), "bad.toml", &bad);
    let refused = format!(
        "error: {}:7:1: rule for 192.0.2.9:18023, field `syn_burst`: syn-burst needs syn-rate",
        bad_file.display()
    );
    expect_error(&daemon, &["apply", "-f", arg(&bad_file)], &refused);
    assert_eq!(listed(&daemon), want);
    let requests = [
        (
            json!({"op": "apply", "rules": [{"destination": b_s, "max_connections": 30},
            {"destination": "192.0.2.9:18023", "max_connections": 1},
            {"destination": "192.0.2.8:18024", "max_connections": 0}]}),
            "rule 3 (192.0.2.8:18024): max-connections must be at least 1",
        ),
        (
            json!({"op": "apply", "rules": [{"destination": b_s, "max_connections": 30},
            {"destination": b_s, "max_connections": 31}]}),
            "two rules for",
        ),
        (
            json!({"op": "apply", "rules": [{"destination": b_s, "max_connections": 30},
            {"destination": "192.0.2.9:18023", "max_conections": 1}]}),
            "invalid request: unknown field `max_conections`",
        ),
    ];
    for (request, error) in requests {
        let answer = raw_request(daemon.socket(), &request.to_string());
        assert_eq!(answer["ok"], false, "{answer}");
        assert!(
            answer["error"].as_str().unwrap().starts_with(error),
            "{answer}"
        );
        assert_eq!(listed(&daemon), want, "a refused apply changed the rules");
    }
    let huge = format!(
        "{{\"op\":\"apply\",\"rules\":[],\"pad\":\"{}\"}}",
        "x".repeat(1 << 20)
    );
    let answer = raw_request(daemon.socket(), &huge);
    assert_eq!(
        answer["error"], "request refused: larger than 1048576 bytes",
        "{answer}"
    );
    // Still the old limits in the kernel: b allows 3, not 30.
    let _cb = assert_limit(bed.pod(1), b, 3);
    let _ca = assert_limit(bed.pod(1), a, 2);
}

#[test]
fn reload_and_sighup_apply_the_file_where_no_runtime_change_holds() {
    let _root = require_root();
    let dir = TempDir::new().unwrap();
    let (a, b, c, d) = (
        "192.0.2.1:18030",
        "192.0.2.2:18031",
        "192.0.2.3:18032",
        "192.0.2.4:18033",
    );
    let config = write(dir.path(), "limiter.toml", &rules_toml(&[(a, 2), (b, 3)]));
    let daemon = Daemon::start_with(&["--config", arg(&config)]);
    daemon.set(a, &["--max-connections", "9"]);

    std::fs::write(&config, rules_toml(&[(a, 4), (c, 5)])).unwrap();
    let out = daemon.cli_ok(&["reload"]);
    assert_eq!(
        out.trim(),
        format!(
            "reloaded {}: 1 changed, 1 unchanged, 1 deleted; runtime changes keep precedence for {a}",
            config.display()
        )
    );
    assert_eq!(
        listed(&daemon),
        [rule(a, 9, "runtime"), rule(c, 5, "config")]
    );

    // SIGHUP does the same.
    let pid = daemon.status_json()["daemon"]["pid"]
        .as_i64()
        .expect("daemon.pid");
    let hup = || {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap()
    };
    std::fs::write(&config, rules_toml(&[(a, 4), (c, 5), (d, 6)])).unwrap();
    hup();
    assert!(
        wait_until(Duration::from_secs(5), || listed(&daemon).len() == 3),
        "SIGHUP did not reload: {:?}",
        listed(&daemon)
    );
    assert_eq!(listed(&daemon)[2], rule(d, 6, "config"));
    // A bad file on SIGHUP: logged, nothing changes, the daemon keeps serving.
    let before = daemon.list_json();
    std::fs::write(&config, "[[rules]]\ndestination = 7\n").unwrap();
    hup();
    let want = format!("{}:2:15: invalid type", config.display());
    assert!(
        wait_until(Duration::from_secs(5), || daemon.log().contains(&want)),
        "no refusal logged"
    );
    assert_eq!(daemon.list_json(), before);

    // Revert gives a destination back to the file.
    std::fs::write(&config, rules_toml(&[(a, 4), (c, 5), (d, 6)])).unwrap();
    let out = daemon.cli_ok(&["revert", a]);
    assert_eq!(
        out.trim(),
        format!("reverted {a}: the config's rule is in force: max 4 reject both")
    );
    assert_eq!(listed(&daemon)[0], rule(a, 4, "config"));
}

#[test]
fn a_restarted_daemon_keeps_the_runtime_rules() {
    let _root = require_root();
    let bed = Testbed::new(2);
    let (a, b, c) = (
        bed.pod(2).addr_v4(18040),
        bed.pod(2).addr_v4(18041),
        bed.pod(2).addr_v4(18042),
    );
    let _servers = [a, b, c].map(|d| bed.pod(2).hold_server(d));
    let (a_s, b_s, c_s) = (a.to_string(), b.to_string(), c.to_string());
    let dir = TempDir::new().unwrap();
    let config = write(
        dir.path(),
        "limiter.toml",
        &rules_toml(&[(&a_s, 2), (&b_s, 4)]),
    );
    let state = dir.path().join("state");
    let args = ["--config", arg(&config), "--state-dir", arg(&state)];
    {
        let daemon = Daemon::start_with(&args);
        daemon.set(&c_s, &["--max-connections", "2"]);
        daemon.set(&a_s, &["--max-connections", "3"]);
        let out = daemon.cli_ok(&["delete", &b_s]);
        assert_eq!(
            out.trim(),
            format!("deleted {b_s} (a config rule: kept off until `limiter revert {b_s}`)")
        );
        let meta = std::fs::metadata(state.join("rules.json")).expect("the state file is written");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // The changes after the first are lines of its journal, replayed by the next start.
        let journal = std::fs::read_to_string(state.join("rules.journal")).expect("a journal");
        assert_eq!(journal.lines().count(), 2, "{journal}");
        let meta = std::fs::metadata(state.join("rules.journal")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    } // SIGTERM; the daemon's private bpffs goes with it: no pins left, as after a reboot.

    let daemon = Daemon::start_with(&args);
    assert_eq!(
        listed(&daemon),
        [rule(&a_s, 3, "runtime"), rule(&c_s, 2, "runtime")]
    );
    let deletions = &daemon.status_json()["daemon"]["runtime_deletions"];
    assert_eq!(
        deletions,
        &json!([{"destination": b_s, "max_connections": 4, "mode": "reject", "side": "both"}])
    );
    let table = daemon.cli_ok(&["list"]);
    assert!(
        table.contains(&format!(
            "{b_s}: config rule (max 4 reject both) deleted at runtime"
        )),
        "{table}"
    );
    // Enforced by the kernel again.
    let _ca = assert_limit(bed.pod(1), a, 3);
    let _cc = assert_limit(bed.pod(1), c, 2);
    // And `revert` gives the deleted config rule back, persistently.
    daemon.cli_ok(&["revert", &b_s]);
    assert_eq!(listed(&daemon)[1], rule(&b_s, 4, "config"));
    drop(daemon);
    let daemon = Daemon::start_with(&args);
    assert_eq!(listed(&daemon)[1], rule(&b_s, 4, "config"));
    let deletions = &daemon.status_json()["daemon"]["runtime_deletions"];
    assert_eq!(deletions, &json!([]));
    // Each start folds the journal into the state file.
    assert!(!state.join("rules.journal").exists());
    let saved: Value =
        serde_json::from_slice(&std::fs::read(state.join("rules.json")).unwrap()).unwrap();
    assert_eq!(saved["deleted"], json!([]), "{saved}");
}

#[test]
fn the_socket_is_root_only_or_opened_to_one_group() {
    let _root = require_root();
    let daemon = Daemon::start();
    let mode = std::fs::metadata(daemon.socket())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    drop(daemon);
    let daemon = Daemon::start_with(&["--socket-group", "root"]);
    let meta = std::fs::metadata(daemon.socket()).unwrap();
    assert_eq!((meta.permissions().mode() & 0o777, meta.gid()), (0o660, 0));
}
