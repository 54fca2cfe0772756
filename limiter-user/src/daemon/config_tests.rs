use super::*;

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(Path::new("limiter.toml"), text).map_err(|e| e.to_string())
}

#[test]
fn the_shipped_config_parses_and_has_no_rules() {
    let text = include_str!("../../../deploy/config/limiter.toml");
    let config = parse(text).unwrap();
    assert_eq!(config, Config::default());
}

#[test]
fn the_shipped_example_rule_parses_when_uncommented() {
    // The commented example must stay valid: uncomment every `# key = value` line.
    let text = include_str!("../../../deploy/config/limiter.toml");
    let uncommented: String = text
        .lines()
        .map(|l| {
            let body = l.strip_prefix("# ").unwrap_or(l);
            let is_key = |k: &str| k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
            let is_setting = body.starts_with("[[rules]]")
                || body.starts_with("[daemon]")
                || body.split_once(" = ").is_some_and(|(k, _)| is_key(k));
            if is_setting { body } else { "" }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let config = parse(&uncommented).unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
    assert_eq!(config.rules.len(), 1, "{uncommented}");
    assert_eq!(config.rules[0].max_connections, Some(100));
    assert_eq!(
        config.daemon.socket.as_deref(),
        Some(Path::new("/run/limiter/limiter.sock"))
    );
}

#[test]
fn a_full_config_parses() {
    let config = parse(
        r#"
[daemon]
socket = "/tmp/l.sock"
log_level = "debug"

[[rules]]
destination = "[::ffff:10.0.0.2]:8080"
max_connections = 5
mode = "drop"
side = "server"

[[rules]]
destination = "10.0.0.0/24:80"
"#,
    )
    .unwrap();
    assert_eq!(
        config.daemon.socket.as_deref(),
        Some(Path::new("/tmp/l.sock"))
    );
    assert_eq!(config.rules.len(), 2);
    assert_eq!(config.rules[0].destination.to_string(), "10.0.0.2:8080");
    assert_eq!(config.rules[0].mode, crate::rules::spec::Mode::Drop);
    assert_eq!(config.rules[1].max_connections, None);
}

#[test]
fn errors_name_file_line_column_and_field() {
    let text = "[daemon]\n\n[[rules]]\ndestination = \"10.0.0.2:80\"\nmax_conections = 5\n";
    let err = parse(text).unwrap_err();
    assert!(
        err.starts_with("limiter.toml:5:1: unknown field `max_conections`, expected one of"),
        "{err}"
    );

    let err = parse("[daemon]\nsockett = \"/x\"\n").unwrap_err();
    assert!(
        err.starts_with("limiter.toml:2:1: unknown field `sockett`"),
        "{err}"
    );

    let err = parse("[[rules]]\ndestination = \"10.0.0.1:99999\"\n").unwrap_err();
    assert!(err.starts_with("limiter.toml:2:15: "), "{err}");
    assert!(err.contains("port 99999 is out of range 1-65535"), "{err}");

    let err =
        parse("[[rules]]\ndestination = \"10.0.0.1:80\"\nmax_connections = -1\n").unwrap_err();
    assert!(err.starts_with("limiter.toml:3:19: "), "{err}");

    let err = parse("max_connections = [\n").unwrap_err();
    assert!(err.starts_with("limiter.toml:"), "{err}");
}

#[test]
fn rules_are_validated_and_unique() {
    let text = "[[rules]]\ndestination = \"10.0.0.1:80\"\nmax_connections = 0\n";
    let err = parse(text).unwrap_err();
    assert!(err.starts_with("limiter.toml:"), "{err}");
    assert!(
        err.starts_with(
            "limiter.toml:3:1: rule for 10.0.0.1:80, field `max_connections`: max-connections must be at least 1"
        ),
        "{err}"
    );
    // The field is located inside its table, past other tables.
    let text = "[[rules]]\ndestination = \"10.0.0.2:80\"\n\n[[rules]]\n\
                destination = \"10.0.0.1:80\"\nmax_connections = 2\n  per_source= 3\n\
                [[rules]]\ndestination = \"10.0.0.3:80\"\nmax_connections = 9\nper_source = 1\n";
    let err = parse(text).unwrap_err();
    assert!(
        err.starts_with(
            "limiter.toml:7:3: rule for 10.0.0.1:80, field `per_source`: per-source (3)"
        ),
        "{err}"
    );

    let text = "[[rules]]\ndestination = \"10.0.0.1:80\"\n\n\
                [[rules]]\ndestination = \"[::ffff:10.0.0.1]:80\"\n";
    let err = parse(text).unwrap_err();
    assert!(
        err.contains("a second rule for 10.0.0.1:80 (the first is at line"),
        "{err}"
    );

    let err = parse("[daemon]\nlog_level = \"info,,=[\"\n").unwrap_err();
    assert!(err.starts_with("limiter.toml:2:1: log_level"), "{err}");
}

#[test]
fn an_unreadable_file_is_named() {
    let err =
        anyhow::Error::from(Config::load(Path::new("/nonexistent/limiter.toml")).unwrap_err());
    assert_eq!(
        format!("{err:#}"),
        "cannot read config /nonexistent/limiter.toml: No such file or directory (os error 2)"
    );
}

#[test]
fn the_shipped_daemon_settings_parse_when_uncommented() {
    let text = include_str!("../../../deploy/config/limiter.toml");
    let settings: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| {
            ["state_dir = ", "metrics_addr = ", "socket = "]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .collect::<Vec<_>>()
        .join("\n");
    let config = parse(&format!("[daemon]\n{settings}\n")).unwrap();
    let d = config.daemon;
    assert_eq!(
        d.state_dir,
        Some(crate::daemon::settings::StateDir::At(
            "/var/lib/limiter".into()
        ))
    );
    assert_eq!(
        d.metrics_addr,
        Some(crate::daemon::settings::MetricsAddr::On(
            "127.0.0.1:9464".parse().unwrap()
        ))
    );
}

#[test]
fn a_rules_file_for_apply_holds_rules_only() {
    let p = Path::new("rules.toml");
    let rules = parse_rules(
        p,
        "[[rules]]\ndestination = \"10.0.0.1:80\"\nmax_connections = 2\n",
    )
    .unwrap();
    assert_eq!(rules.len(), 1);
    assert!(parse_rules(p, "").unwrap().is_empty());

    let err = parse_rules(p, "[daemon]\nsocket = \"/x\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("rules.toml:1:1: `limiter apply` takes [[rules]] tables only"),
        "{err}"
    );
    let err = parse_rules(
        p,
        "[[rules]]\ndestination = \"10.0.0.1:80\"\nmode = \"maybe\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("rules.toml:3:8: unknown variant `maybe`"),
        "{err}"
    );
    let text =
        "[[rules]]\ndestination = \"10.0.0.1:80\"\n[[rules]]\ndestination = \"10.0.0.1:80\"\n";
    let err = parse_rules(p, text).unwrap_err().to_string();
    assert!(
        err.starts_with("rules.toml:3:1: a second rule for 10.0.0.1:80"),
        "{err}"
    );
}

#[test]
fn overload_and_system_sections_parse_and_errors_point_at_them() {
    let config = parse(
        "[system]\nmax_load1 = 8.0\nmax_cpu = 0.9\n\n[overload]\nbbr.buckets = 50\n\n\
         [[rules]]\ndestination = \"10.0.0.2:80\"\nadaptive = { cpu_threshold = 0.7 }\n\
         priority = \"sheddable\"\n",
    )
    .unwrap();
    let system = config.system.unwrap();
    assert_eq!(system.max_load1, Some(8.0));
    assert_eq!(system.max_cpu.unwrap().get(), 0.9);
    assert_eq!(config.overload.bbr.buckets, 50);
    let rule = &config.rules[0];
    assert_eq!(
        rule.adaptive.as_ref().unwrap().cpu_threshold.unwrap().get(),
        0.7
    );

    let e = parse("# [overload] is explained here\n\n[overload]\nsampling.interval_ms = 900\n")
        .unwrap_err();
    assert!(
        e.starts_with("limiter.toml:3:1: [overload] sampling.interval_ms = 900: must be 10-500"),
        "{e}"
    );
    let e = parse("[system]\nmax_load1 = -1.0\n").unwrap_err();
    assert!(
        e.starts_with("limiter.toml:1:1: [system] max-load1 -1"),
        "{e}"
    );
    let e = parse("[system]\n").unwrap_err();
    assert!(e.contains("needs max-load1, max-cpu or both"), "{e}");
    let e = parse(
        "[[rules]]\ndestination = \"10.0.0.2:80\"\nmax_connections = 1\npriority = \"critical\"\n",
    )
    .unwrap_err();
    assert!(e.contains("priority needs adaptive"), "{e}");
}
