use serde_json::json;

use super::*;
use crate::rules::spec::RuleSpec;
use crate::rules::status::DestinationStatus;
use crate::testutil::{MemoryDataplane, book};

fn scrape(dp: Arc<MemoryDataplane>) -> String {
    let metrics = Metrics::new(book(dp), None, || Health {
        namespaces: Some(3),
        maintenance_failures: 2,
    });
    metrics.render().unwrap()
}

#[test]
fn every_family_is_named_typed_and_labelled() {
    let rule: RuleSpec =
        serde_json::from_value(json!({"destination": "10.0.0.2:8080", "max_connections": 5}))
            .unwrap();
    let text = scrape(Arc::new(MemoryDataplane::with(&[rule])));
    let d = "destination=\"10.0.0.2:8080\"";
    for line in [
        "# TYPE limiter_destination_active_connections gauge".to_string(),
        format!("limiter_destination_active_connections{{{d},side=\"inbound\"}} 0"),
        format!("limiter_destination_active_connections{{{d},side=\"outbound\"}} 1"),
        "# TYPE limiter_destination_cx_overflow counter".into(),
        format!("limiter_destination_cx_overflow_total{{{d},side=\"inbound\"}} 0"),
        format!("limiter_destination_accepted_total{{{d},side=\"outbound\"}} 0"),
        format!("limiter_destination_opened_total{{{d},side=\"outbound\"}} 0"),
        format!("limiter_destination_closed_total{{{d},side=\"outbound\"}} 0"),
        format!("limiter_destination_pending_connections{{{d},side=\"outbound\"}} 0"),
        "# UNIT limiter_destination_connection_lifetime_seconds seconds".into(),
        format!("limiter_destination_max_connections{{{d}}} 5"),
        "limiter_up 1".into(),
        "limiter_rules{source=\"config\"} 0".into(),
        "limiter_rules{source=\"runtime\"} 1".into(),
        "limiter_namespaces 3".into(),
        format!(
            "limiter_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        ),
        "limiter_maintenance_failures_total 2".into(),
        "limiter_config_reloads_total{result=\"failure\"} 0".into(),
        "limiter_config_last_reload_successful 1".into(),
        "# EOF".into(),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        );
    }
    for prefix in [
        "limiter_node_load1 ",
        "limiter_node_load15 ",
        "limiter_node_cpu_usage_ratio ",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(prefix)),
            "no {prefix} in:\n{text}"
        );
    }
}

#[test]
fn refusals_carry_reason_action_and_side() {
    let mut refused = crate::rules::status::RefusedCounts::default();
    refused.0[limiter_common::reason::RATE][limiter_common::action::DROP] = 4;
    let statuses = [crate::rules::status::DestinationStatus {
        destination: "[fd00::2]:80".into(),
        inbound: crate::rules::status::SideStatus {
            refused,
            ..Default::default()
        },
        outbound: Default::default(),
        rule: None,
        source: None,
        seeding: None,
        overload: Default::default(),
        service: Default::default(),
        breakers: Vec::new(),
    }];
    let mut text = String::new();
    let mut registry = Registry::default();
    #[derive(Debug)]
    struct Only(Vec<DestinationStatus>);
    impl Collector for Only {
        fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
            crate::metrics::destinations::destinations(&self.0, &mut enc)
        }
    }
    registry.register_collector(Box::new(Only(statuses.to_vec())));
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let want = "limiter_destination_refused_total{destination=\"[fd00::2]:80\",side=\"inbound\",reason=\"rate\",action=\"drop\"} 4";
    assert!(text.lines().any(|l| l == want), "{text}");
    assert!(
        !text.contains("limiter_destination_max_connections"),
        "no rule, no limit: {text}"
    );
}
