//! Bad input: every mistake gets a non-zero exit, exactly one line on stderr that names the
//! problem, and changes no rule.

use std::process::Output;
use std::time::{Duration, Instant};

use limiter_integration_tests::cli::describe_args;
use limiter_integration_tests::{Daemon, limiter_cli, require_root, run_daemon_to_exit};

/// A rule present during the tests, so "nothing changed" compares a non-empty list.
/// 192.0.2.0/24 is TEST-NET-1: documentation only, never routed; no traffic is sent anyway.
const EXISTING: &str = "192.0.2.10:80";
const OTHER: &str = "192.0.2.20:80";

/// Asserts that `out` is a failure whose stderr is exactly one line mentioning one of `any_of`
/// (case-insensitive). Returns that line.
#[track_caller]
fn assert_clear_error(command: &str, out: &Output, any_of: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "`{command}` succeeded; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let lines: Vec<&str> = stderr.trim_end().lines().collect();
    assert!(
        lines.len() == 1 && !lines[0].trim().is_empty(),
        "`{command}` must explain itself in exactly one line on stderr, got {} lines:\n{stderr}",
        lines.len()
    );
    let line = lines[0].to_lowercase();
    assert!(
        any_of
            .iter()
            .any(|word| line.contains(&word.to_lowercase())),
        "`{command}`: the error should mention one of {any_of:?}: {stderr}"
    );
    lines[0].to_owned()
}

/// Runs each bad command against `daemon`, checks its error, and that the rules did not change.
#[track_caller]
fn check_rejected(daemon: &Daemon, cases: &[(Vec<&str>, &[&str])]) {
    let before = daemon.list_json();
    for (args, any_of) in cases {
        let command = describe_args(args);
        assert_clear_error(&command, &daemon.cli(args), any_of);
        assert_eq!(
            daemon.list_json(),
            before,
            "`{command}` failed but changed the rules"
        );
    }
}

#[test]
fn bad_destinations_are_rejected_and_change_nothing() {
    let _root = require_root();
    let daemon = Daemon::start();
    daemon.cli_ok(&["set", EXISTING, "--max-connections", "5"]);

    let bad: [(&str, &[&str]); 4] = [
        ("10.0.0.1:99999", &["99999"]),
        ("foo", &["foo"]),
        ("[::1]", &["[::1]", "port"]),
        ("", &["dest", "empty"]),
    ];
    let mut cases = Vec::new();
    for (dest, any_of) in bad {
        cases.push((vec!["set", dest, "--max-connections", "5"], any_of));
        cases.push((vec!["get", dest], any_of));
        cases.push((vec!["delete", dest], any_of));
    }
    check_rejected(&daemon, &cases);
}

#[test]
fn bad_limits_and_unknown_flags_are_rejected_and_change_nothing() {
    let _root = require_root();
    let daemon = Daemon::start();
    daemon.cli_ok(&["set", EXISTING, "--max-connections", "5"]);

    let flag: &[&str] = &["max-connections", "max_connections"];
    check_rejected(
        &daemon,
        &[
            (vec!["set", OTHER, "--max-connections", "abc"], &["abc"]),
            (vec!["set", OTHER, "--max-connections", "0"], flag),
            (vec!["set", EXISTING, "--max-connections", "0"], flag),
            (vec!["set", EXISTING, "--max-connections", "-1"], &["-1"]),
            (
                vec![
                    "set",
                    OTHER,
                    "--max-connections",
                    "5",
                    "--mode",
                    "sometimes",
                ],
                &["sometimes"],
            ),
            (
                vec!["set", OTHER, "--max-connections", "5", "--side", "nowhere"],
                &["nowhere"],
            ),
            (
                vec!["set", OTHER, "--max-connections", "5", "--no-such-flag"],
                &["--no-such-flag"],
            ),
            (vec!["status", "--no-such-flag"], &["--no-such-flag"]),
            (vec!["list", "--no-such-flag"], &["--no-such-flag"]),
        ],
    );
}

/// With no daemon behind the socket (no file, or a stale file nobody listens on), client
/// commands fail at once and say the daemon cannot be reached at that socket.
/// Needs no root: nothing privileged happens.
#[test]
fn client_commands_without_daemon_say_it_cannot_be_reached() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let missing = dir.path().join("missing.sock");
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind a unix socket"));
    assert!(stale.exists(), "a dropped listener leaves its socket file");

    let commands: [&[&str]; 5] = [
        &["status"],
        &["list"],
        &["get", EXISTING],
        &["set", EXISTING, "--max-connections", "5"],
        &["delete", EXISTING],
    ];
    for socket in [&missing, &stale] {
        for args in commands {
            let command = format!("{} (socket {})", describe_args(args), socket.display());
            let start = Instant::now();
            let out = limiter_cli(socket, args);
            let line = assert_clear_error(&command, &out, &["daemon"]);
            assert!(
                line.contains(&*socket.to_string_lossy()),
                "`{command}`: the error should name the socket: {line}"
            );
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "`{command}` took {:?} to fail",
                start.elapsed()
            );
        }
    }
}

/// A daemon given a config it cannot use refuses to start, quickly, naming the file.
#[test]
fn daemon_refuses_bad_config_quickly_naming_the_file() {
    let _root = require_root();
    let dir = tempfile::tempdir().expect("create a temp dir");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    };
    let cases = [
        (dir.path().join("does-not-exist.toml"), None),
        (
            write("invalid.toml", "this is = = not toml\n[unclosed\n"),
            None,
        ),
        (
            write("unknown-field.toml", "no_such_setting = true\n"),
            Some("no_such_setting"),
        ),
    ];
    for (config, also_mentions) in cases {
        let path = config.to_string_lossy().into_owned();
        let exit = run_daemon_to_exit(&["--config", &path], Duration::from_secs(5));
        let stderr = String::from_utf8_lossy(&exit.output.stderr);
        assert!(
            !exit.output.status.success(),
            "daemon with --config {path} exited successfully; stderr: {stderr}"
        );
        assert!(
            stderr.contains(&path),
            "the error for --config {path} should name the file: {stderr}"
        );
        if let Some(field) = also_mentions {
            assert!(
                stderr.contains(field),
                "the error for --config {path} should name `{field}`: {stderr}"
            );
        }
        assert!(
            exit.elapsed < Duration::from_secs(2),
            "refusing --config {path} took {:?}",
            exit.elapsed
        );
    }
}
