use super::*;

fn section(text: &str) -> DaemonSettings {
    crate::daemon::config::Config::parse(Path::new("t.toml"), text)
        .unwrap()
        .daemon
}

#[test]
fn the_node_daemon_gets_a_state_file_and_metrics_by_default() {
    let s = Settings::resolve(&DaemonSettings::default(), &DaemonSettings::default());
    assert_eq!(s.socket, Path::new(paths::SOCKET));
    assert_eq!(s.bpffs, Path::new(paths::BPFFS));
    assert_eq!(
        s.state_file.as_deref(),
        Some(Path::new("/var/lib/limiter/rules.json"))
    );
    assert_eq!(s.metrics_addr, Some("127.0.0.1:9464".parse().unwrap()));
    assert_eq!(s.socket_group, None);
}

#[test]
fn another_instance_gets_neither_unless_asked() {
    let opts = DaemonSettings {
        bpffs: Some("/tmp/bpffs".into()),
        ..DaemonSettings::default()
    };
    let s = Settings::resolve(&opts, &DaemonSettings::default());
    assert_eq!((s.state_file, s.metrics_addr), (None, None));
    let d = section("[daemon]\nstate_dir = \"/tmp/st\"\nmetrics_addr = \"[::1]:9999\"\n");
    let s = Settings::resolve(&opts, &d);
    assert_eq!(
        s.state_file.as_deref(),
        Some(Path::new("/tmp/st/rules.json"))
    );
    assert_eq!(s.metrics_addr, Some("[::1]:9999".parse().unwrap()));
}

#[test]
fn the_command_line_overrides_the_config() {
    let d = section(
        "[daemon]\nstate_dir = \"/tmp/st\"\nmetrics_addr = \"127.0.0.1:1\"\nsocket_group = \"0\"\n",
    );
    let opts = DaemonSettings {
        state_dir: Some(StateDir::Off),
        metrics_addr: Some(MetricsAddr::Off),
        socket_group: Some("root".parse().unwrap()),
        ..DaemonSettings::default()
    };
    let s = Settings::resolve(&opts, &d);
    assert_eq!((s.state_file, s.metrics_addr), (None, None));
    assert_eq!(
        s.socket_group.map(|g| (g.name, g.gid)),
        Some(("root".into(), 0))
    );
    let s = Settings::resolve(&DaemonSettings::default(), &d);
    assert_eq!(s.socket_group.map(|g| g.gid), Some(0));
    assert_eq!(s.metrics_addr, Some("127.0.0.1:1".parse().unwrap()));
}

#[test]
fn bad_values_in_the_config_are_located() {
    for (text, want) in [
        (
            "[daemon]\nmetrics_addr = \"localhost:9464\"\n",
            "t.toml:2:16: `localhost:9464` is not ADDRESS:PORT or none",
        ),
        (
            "[daemon]\nstate_dir = \"\"\n",
            "t.toml:2:13: the state folder is empty",
        ),
        (
            "[daemon]\nsocket_group = \"no-such-group-here\"\n",
            "t.toml:2:16: no group named `no-such-group-here`",
        ),
    ] {
        let err = crate::daemon::config::Config::parse(Path::new("t.toml"), text)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(want), "{err}");
    }
}
