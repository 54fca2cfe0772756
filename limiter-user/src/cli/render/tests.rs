use super::list::{apply_summary, list_table, reload_summary, runtime_deletions_note};
use super::*;
use crate::rules::spec::Mode;
use crate::rules::status::{DestinationStatus, SideStatus};
use serde_json::json;

fn rule() -> RuleSpec {
    serde_json::from_value(json!({"destination": "10.0.0.2:8080", "max_connections": 5})).unwrap()
}

fn status() -> DestinationStatus {
    let mut refused = crate::rules::status::RefusedCounts::default();
    refused.0[limiter_common::reason::LIMIT][limiter_common::action::REJECT] = 4;
    DestinationStatus {
        destination: "10.0.0.2:8080".into(),
        inbound: SideStatus {
            active: 3,
            opened_total: 10,
            closed_total: 7,
            lifetime_seconds_total: 14.0,
            accepted_total: 10,
            cx_overflow_total: 4,
            refused,
            ..Default::default()
        },
        outbound: SideStatus {
            cx_overflow_total: 1,
            ..Default::default()
        },
        rule: Some(rule()),
        source: None,
        seeding: None,
        overload: Default::default(),
        service: Default::default(),
        breakers: Vec::new(),
    }
}

#[test]
fn status_json_has_the_documented_fields() {
    let doc = status_document(&[status()], json!({"version": "0.1.0", "socket": "/s"}));
    assert_eq!(doc["daemon"], json!({"version": "0.1.0", "socket": "/s"}));
    let d = &doc["destinations"][0];
    assert_eq!(d["destination"], "10.0.0.2:8080");
    for side in ["inbound", "outbound"] {
        for field in [
            "active",
            "pending",
            "opened_total",
            "closed_total",
            "lifetime_seconds_total",
            "accepted_total",
            "cx_overflow_total",
            "refused",
        ] {
            assert!(
                d[side].get(field).is_some(),
                "{side}.{field} missing in {d}"
            );
        }
    }
    assert_eq!(d["inbound"]["active"], 3);
    assert_eq!(d["inbound"]["opened_total"], 10);
    assert_eq!(d["inbound"]["closed_total"], 7);
    assert_eq!(d["inbound"]["refused"]["limit"]["reject"], 4);
    // Every reason and action is present, zeros included: scripts can index without checks.
    assert_eq!(
        d["inbound"]["refused"]["rate"],
        json!({"reject": 0, "drop": 0, "dry_run": 0})
    );
    assert_eq!(
        d["rule"],
        json!({"destination": "10.0.0.2:8080", "max_connections": 5, "mode": "reject", "side": "both"})
    );
    // The overload check's figures, at the destination's top level (null without --adaptive).
    for field in [
        "cpu",
        "cpu_source",
        "cpu_throttled",
        "cpu_pressure",
        "inflight",
        "max_pass",
        "min_rt_ms",
        "max_inflight",
        "shed_limit",
        "shedding",
        "shed_total",
    ] {
        assert!(d.get(field).is_some(), "{field} missing in {d}");
    }
    assert_eq!(d["shedding"], false);
    assert_eq!(d["shed_total"], 0);
}

#[test]
fn adaptive_rules_parse_and_summarise() {
    let r: RuleSpec = serde_json::from_value(json!({
        "destination": "10.0.0.2:8080",
        "adaptive": {"cpu_threshold": 0.7, "workload_cgroup": "/web"},
        "priority": "sheddable"
    }))
    .unwrap();
    assert_eq!(
        r.summary(),
        "reject both, adaptive cpu>0.7 cgroup /web, priority sheddable"
    );
    let e = serde_json::from_value::<RuleSpec>(json!({
        "destination": "10.0.0.2:8080", "adaptive": {}, "priority": "low"
    }))
    .unwrap_err();
    assert!(e.to_string().contains("unknown variant `low`"), "{e}");
}

#[test]
fn rule_summaries_read_like_the_flags() {
    assert_eq!(rule().summary(), "max 5 reject both");
    let full = RuleSpec {
        mode: Mode::Drop,
        side: crate::rules::spec::Side::Server,
        syn_rate: Some(100),
        per_source: Some(2),
        dry_run: true,
        ..rule()
    };
    assert_eq!(
        full.summary(),
        "max 5 drop server, rate 100/s burst 100, per-source 2, dry-run"
    );
    let accounting = RuleSpec {
        max_connections: None,
        ..rule()
    };
    assert_eq!(accounting.summary(), "accounting only, both");
}

#[test]
fn status_table_is_aligned() {
    let doc = status_document(&[status()], json!({}));
    let out = status_table(&doc.to_string()).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("DESTINATION     RULE"), "{out}");
    assert!(lines[0].ends_with("OVERFLOW   REFUSED   BREAKER"), "{out}");
    assert!(
        lines[1].starts_with("10.0.0.2:8080   max 5 reject both"),
        "{out}"
    );
    assert!(
        lines[1].ends_with(" 5   limit 4         -"),
        "overflow is in+out, refusals by reason, no breaker: {out}"
    );
    let empty = status_table(&status_document(&[], json!({})).to_string()).unwrap();
    assert!(empty.starts_with("no rules"), "{empty}");
}

#[test]
fn status_table_marks_rules_seeded_on_the_next_packet() {
    let exact = DestinationStatus {
        seeding: Some("exact"),
        ..status()
    };
    let out = status_table(&status_document(&[exact], json!({})).to_string()).unwrap();
    assert!(!out.contains('*'), "{out}");
    let degraded = DestinationStatus {
        seeding: Some("next_packet"),
        ..status()
    };
    let out = status_table(&status_document(&[degraded], json!({})).to_string()).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[1].starts_with("10.0.0.2:8080 *"), "{out}");
    assert!(
        out.contains("* this kernel cannot run the seeding iterator"),
        "{out}"
    );
}

#[test]
fn list_table_and_get_view_render() {
    let list = list_table(&json!([rule()])).unwrap();
    assert!(
        list.lines().nth(1).unwrap().starts_with("10.0.0.2:8080"),
        "{list}"
    );
    let get = get_view(&serde_json::to_value(status()).unwrap()).unwrap();
    assert!(get.contains("Rule:"), "{get}");
    assert!(get.contains("refused.limit.reject"), "{get}");
    assert!(get.contains("2.000"), "mean lifetime 14 s / 7: {get}");
}

#[test]
fn list_shows_the_source_and_runtime_deletions() {
    let doc = json!([
        {"destination": "10.0.0.1:80", "max_connections": 1, "mode": "reject", "side": "both",
         "source": "config"},
        {"destination": "10.0.0.2:80", "max_connections": 9, "mode": "reject", "side": "both",
         "source": "runtime", "config_rule": rule()},
    ]);
    let out = list_table(&doc).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].ends_with("DRY RUN   ADAPTIVE   SOURCE"), "{out}");
    assert!(lines[1].ends_with("no        -          config"), "{out}");
    assert!(
        lines[2].ends_with("no        -          runtime (overrides config)"),
        "{out}"
    );
    let adaptive = json!([
        {"destination": "10.0.0.3:80", "mode": "reject", "side": "server", "source": "runtime",
         "adaptive": {"cpu_threshold": 0.7, "workload_cgroup": "/web"}, "priority": "sheddable"},
        {"destination": "10.0.0.4:80", "mode": "reject", "side": "both", "source": "runtime",
         "adaptive": {}},
    ]);
    let out = list_table(&adaptive).unwrap();
    assert!(out.contains("cpu>0.7, cgroup /web, sheddable"), "{out}");
    assert!(out.lines().nth(2).unwrap().contains(" yes "), "{out}");
    assert_eq!(
        runtime_deletions_note(&json!([rule()])),
        "\n10.0.0.2:8080: config rule (max 5 reject both) deleted at runtime; \
         `limiter revert 10.0.0.2:8080` restores it"
    );
    assert_eq!(runtime_deletions_note(&json!([])), "");
}

#[test]
fn apply_and_reload_summaries() {
    let answer = json!({"applied": ["10.0.0.1:80"], "deleted": [], "unchanged": 2});
    assert_eq!(apply_summary(&answer).unwrap(), "1 changed, 2 unchanged");
    let answer = json!({"config": "/etc/l.toml", "applied": [], "deleted": ["10.0.0.1:80"],
        "unchanged": 1, "overridden": ["10.0.0.2:80"], "daemon_settings_changed": true});
    assert_eq!(
        reload_summary(&answer).unwrap(),
        "reloaded /etc/l.toml: 0 changed, 1 unchanged, 1 deleted; runtime changes keep \
         precedence for 10.0.0.2:80\nnote: the [daemon] settings changed; they take effect at \
         the next start"
    );
}

#[test]
fn a_breaker_shows_in_the_rule_and_its_own_column() {
    let mut st = status();
    let rule = st.rule.as_mut().unwrap();
    rule.max_connections = None;
    rule.side = crate::rules::spec::Side::Client;
    rule.breaker = Some(Box::new(crate::rules::breaker::Breaker {
        consecutive_failures: Some(3),
        ..Default::default()
    }));
    assert_eq!(
        rule.summary(),
        "reject client, breaker consecutive 3 open 30s"
    );
    let one = |state: &'static str| crate::rules::status::BreakerStatus {
        endpoint: "10.0.0.2:8080".into(),
        state,
        ..Default::default()
    };
    st.breakers = vec![one("open")];
    let out = status_table(&status_document(&[st.clone()], json!({})).to_string()).unwrap();
    assert!(out.lines().nth(1).unwrap().ends_with("   open"), "{out}");
    st.breakers = vec![one("closed"), one("half_open"), one("closed")];
    let out = status_table(&status_document(&[st], json!({})).to_string()).unwrap();
    assert!(
        out.lines().nth(1).unwrap().ends_with("   1/3 open"),
        "{out}"
    );
}
