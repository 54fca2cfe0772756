use super::*;
use crate::daemon::settings::{MetricsAddr, StateDir};
use crate::rules::spec::{Mode, Side};
use clap::CommandFactory as _;

#[test]
fn the_cli_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn set_builds_the_rule() {
    let cli = Cli::parse_from([
        "limiter",
        "set",
        "[::ffff:10.0.0.2]:80",
        "--max-connections",
        "5",
        "--mode",
        "drop",
        "--syn-rate",
        "10",
        "--syn-burst",
        "20",
    ]);
    let Command::Set(set) = cli.command else {
        panic!("{cli:?}")
    };
    let rule = set.to_rule();
    assert_eq!(rule.destination.to_string(), "10.0.0.2:80");
    assert_eq!(
        (rule.max_connections, rule.mode, rule.side),
        (Some(5), Mode::Drop, Side::Both)
    );
    assert_eq!((rule.syn_rate, rule.syn_burst), (Some(10), Some(20)));
}

#[test]
fn daemon_settings_parse_with_clear_errors() {
    let cli = Cli::parse_from([
        "limiter",
        "daemon",
        "--metrics-addr",
        "none",
        "--state-dir",
        "/tmp/s",
        "--socket-group",
        "0",
    ]);
    let Command::Daemon(DaemonArgs { settings: d, .. }) = cli.command else {
        panic!("{cli:?}")
    };
    assert_eq!(d.metrics_addr, Some(MetricsAddr::Off));
    assert_eq!(d.state_dir, Some(StateDir::At("/tmp/s".into())));
    assert_eq!(d.socket_group.map(|g| g.gid), Some(0));
    let err = Cli::try_parse_from(["limiter", "daemon", "--metrics-addr", "localhost"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`localhost` is not ADDRESS:PORT or none"),
        "{err}"
    );
    let err = Cli::try_parse_from(["limiter", "daemon", "--socket-group", "no-such-grp"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("no group named `no-such-grp`"), "{err}");
}

#[test]
fn a_bad_destination_is_a_clear_usage_error() {
    let err = Cli::try_parse_from(["limiter", "get", "10.0.0.1:99999"]).unwrap_err();
    assert!(
        err.to_string()
            .contains("port 99999 is out of range 1-65535"),
        "{err}"
    );
}
