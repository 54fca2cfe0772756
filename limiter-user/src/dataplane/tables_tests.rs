use super::*;

fn rule(json: serde_json::Value) -> RuleSpec {
    serde_json::from_value(json).unwrap()
}

#[test]
fn the_kernel_form_keeps_what_a_restarted_daemon_needs() {
    let plain = rule(serde_json::json!({
        "destination": "10.0.0.2:80", "max_connections": 5, "mode": "drop", "side": "server",
        "syn_rate": 10, "syn_burst": 20, "per_source": 2, "dry_run": true
    }));
    let back = from_config(plain.destination.clone(), &to_config(7, &plain));
    assert_eq!(back, plain);

    // An adaptive rule comes back adaptive (with default parameters: the rest lives in the
    // state file), and a derived rule comes back derived, so neither is lost or mistaken.
    let mut adaptive = rule(serde_json::json!({
        "destination": "10.0.0.3:80",
        "adaptive": {"cpu_threshold": 0.6, "workload_cgroup": "/web"}
    }));
    adaptive.derived = true;
    let cfg = to_config(8, &adaptive);
    assert_ne!(cfg.flags & rule_flags::ADAPTIVE, 0);
    let back = from_config(adaptive.destination.clone(), &cfg);
    assert_eq!(back.adaptive, Some(Default::default()));
    assert!(back.derived);
}
