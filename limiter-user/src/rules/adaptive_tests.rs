use super::*;

#[test]
fn fraction_is_exact_and_bounded() {
    let f: Fraction = "0.8".parse().unwrap();
    assert_eq!(f.get(), 0.8);
    assert_eq!(f.to_string(), "0.8");
    assert_eq!(f, Fraction::try_from(0.80000001).unwrap());
    for bad in ["0", "1.5", "-0.1", "NaN"] {
        let e = bad.parse::<Fraction>().unwrap_err();
        assert!(e.contains("not a fraction in (0, 1]"), "{bad}: {e}");
    }
    assert!(
        "eighty"
            .parse::<Fraction>()
            .unwrap_err()
            .contains("not a number")
    );
}

#[test]
fn span_round_trips_through_json() {
    let s: Span = "1500ms".parse().unwrap();
    assert_eq!(s.0, Duration::from_millis(1500));
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(json, "\"1s 500ms\"");
    assert_eq!(serde_json::from_str::<Span>(&json).unwrap(), s);
    assert!(
        "soon"
            .parse::<Span>()
            .unwrap_err()
            .contains("expected e.g. 10s")
    );
}

#[test]
fn empty_adaptive_is_the_reference_check() {
    let a: Adaptive = serde_json::from_str("{}").unwrap();
    assert_eq!(a.bbr_config(&BbrConfig::default()), BbrConfig::default());
    a.validate().unwrap();
}

#[test]
fn rule_parameters_override_the_defaults() {
    let a: Adaptive = serde_json::from_str(
        r#"{"cpu_threshold": 0.6, "window": "5s", "buckets": 50, "cooldown": "2s"}"#,
    )
    .unwrap();
    let c = a.bbr_config(&BbrConfig::default());
    assert_eq!((c.window_ms, c.buckets, c.cool_down_ms), (5_000, 50, 2_000));
    assert_eq!(c.cpu_threshold, 0.6);
}

#[test]
fn bad_parameters_are_named() {
    let cases = [
        (r#"{"buckets": 1}"#, "buckets 1 must be from 2 to 1000"),
        (
            r#"{"window": "100ms"}"#,
            "window 100ms must be from 1s to 10m",
        ),
        (r#"{"cooldown": "5m"}"#, "cooldown 5m must be at most 1m"),
        (
            r#"{"workload_cgroup": "kubepods"}"#,
            "must be a cgroup path",
        ),
        (r#"{"workload_cgroup": "/a/../b"}"#, "without .."),
    ];
    for (json, want) in cases {
        let a: Adaptive = serde_json::from_str(json).unwrap();
        let e = a.validate().unwrap_err();
        assert!(e.contains(want), "{json}: {e}");
    }
    let e = serde_json::from_str::<Adaptive>(r#"{"cpu_threshold": 2}"#).unwrap_err();
    assert!(e.to_string().contains("not a fraction"), "{e}");
    let e = serde_json::from_str::<Adaptive>(r#"{"treshold": 0.5}"#).unwrap_err();
    assert!(e.to_string().contains("unknown field"), "{e}");
}

#[test]
fn system_rule_checks_load() {
    assert!(SystemRule::default().is_empty());
    let bad = SystemRule {
        max_load1: Some(-1.0),
        max_cpu: None,
    };
    assert!(bad.validate().unwrap_err().contains("max-load1"));
}
