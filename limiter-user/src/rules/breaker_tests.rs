use super::*;

fn consecutive(n: u32) -> Breaker {
    Breaker {
        consecutive_failures: Some(n),
        ..Default::default()
    }
}

#[test]
fn a_breaker_needs_a_policy() {
    let err = Breaker::default().validate().unwrap_err();
    assert!(err.contains("needs a policy"), "{err}");
    consecutive(3).validate().unwrap();
    Breaker {
        sre_k: Some("2".parse().unwrap()),
        ..Default::default()
    }
    .validate()
    .unwrap();
}

#[test]
fn refuses_each_bad_parameter_naming_its_flag() {
    let cases = [
        (consecutive(0), "breaker-consecutive must be at least 1"),
        (
            Breaker {
                probes: Some(0),
                ..consecutive(3)
            },
            "breaker-probes 0 must be from 1 to 1000",
        ),
        (
            Breaker {
                max_ejection_percent: Some(101),
                ..consecutive(3)
            },
            "breaker-max-ejection 101 must be a percentage, 0 to 100",
        ),
        (
            Breaker {
                open: Some("10m".parse().unwrap()),
                max_open: Some("1m".parse().unwrap()),
                ..consecutive(3)
            },
            "breaker-max-open 1m cannot be shorter than breaker-open 10m",
        ),
        (
            Breaker {
                window: Some("100ms".parse().unwrap()),
                ..consecutive(3)
            },
            "breaker-window 100ms must be from 1s to 1h",
        ),
    ];
    for (breaker, want) in cases {
        assert_eq!(breaker.validate().unwrap_err(), want);
    }
    assert!(
        "0.5"
            .parse::<Multiplier>()
            .unwrap_err()
            .contains("from 1 to 10")
    );
}

#[test]
fn max_ejection_never_cuts_a_service_off_unless_told() {
    let b = Breaker {
        max_ejection_percent: Some(50),
        ..consecutive(1)
    };
    assert_eq!(b.max_ejected(3), 1);
    assert_eq!(b.max_ejected(10), 5);
    assert_eq!(b.max_ejected(1), 0, "one endpoint at 50 %: never ejected");
    // Istio's default 10 % still ejects one of two or more (as Envoy does).
    assert_eq!(consecutive(1).max_ejected(3), 1);
    assert_eq!(consecutive(1).max_ejected(2), 1);
    let all = Breaker {
        max_ejection_percent: Some(100),
        ..consecutive(1)
    };
    assert_eq!(all.max_ejected(3), 3);
    assert_eq!(all.max_ejected(1), 1);
    let none = Breaker {
        max_ejection_percent: Some(0),
        ..consecutive(1)
    };
    assert_eq!(none.max_ejected(10), 0, "0 % ejects no endpoint (Istio)");
}

#[test]
fn kernel_form_round_trips() {
    let b = Breaker {
        consecutive_failures: Some(3),
        failure_ratio: Some("0.5".parse().unwrap()),
        slow: Some("200ms".parse().unwrap()),
        sre_k: Some("1.5".parse().unwrap()),
        open: Some("2s".parse().unwrap()),
        probes: Some(2),
        max_ejection_percent: Some(50),
        ..Default::default()
    };
    let cfg = b.to_config(Some(3));
    assert_eq!(cfg.max_ejected, 1);
    assert_eq!(cfg.failure_ratio, 5000);
    assert_eq!(cfg.sre_k_milli, 1500);
    assert_eq!(cfg.window_ns, 10_000_000_000);
    assert_eq!(b.to_config(None).max_ejected, u32::MAX);
    assert_eq!(Breaker::from_config(&cfg), b);
}
