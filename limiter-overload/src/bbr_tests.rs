use super::*;

const TICK: u64 = 250 * MS;
const T0: u64 = 1_000_000 * MS;

/// A destination that has seen `rate` connections per second, each living `life_ms`, for `secs`
/// seconds of 250 ms ticks; returns it and the time of its last tick.
fn warm(rate: f64, life_ms: f64, secs: u64) -> (Bbr, u64) {
    let mut b = Bbr::new(BbrConfig::default()).unwrap();
    let mut now = T0;
    b.record(now, 0, 0);
    feed(&mut b, &mut now, rate, life_ms, secs * 4);
    (b, now)
}

fn feed(b: &mut Bbr, now: &mut u64, rate: f64, life_ms: f64, ticks: u64) {
    for _ in 0..ticks {
        *now += TICK;
        let n = (rate * 0.25).round() as u64;
        b.record(*now, n, (n as f64 * life_ms * MS as f64) as u64);
    }
}

#[test]
fn littles_law_gives_max_inflight() {
    // 1000 connections/s living 50 ms: 50 in the pipe.
    let (b, now) = warm(1000.0, 50.0, 5);
    assert!(
        (b.max_pass(now).unwrap() - 100.0).abs() < 1e-6,
        "{:?}",
        b.max_pass(now)
    );
    assert!((b.min_rt_ms(now).unwrap() - 50.0).abs() < 1e-6);
    assert_eq!(b.max_inflight(now), Some(50));
}

#[test]
fn a_tick_longer_than_a_bucket_is_spread_not_piled() {
    // 250 completions per 250 ms tick are 100 per 100 ms bucket, not 250 in one.
    let (b, now) = warm(1000.0, 50.0, 3);
    let pass = b.max_pass(now).unwrap();
    assert!((pass - 100.0).abs() < 1e-6, "maxPass {pass}");
}

#[test]
fn no_shedding_below_the_threshold() {
    let (mut b, now) = warm(1000.0, 50.0, 5);
    let v = b.evaluate(now, 0.79, 10_000);
    assert_eq!(
        v,
        Verdict {
            shed: false,
            limit: None
        }
    );
    assert!(
        !b.should_shed(now, 0.8, 10_000),
        "the threshold itself is not above it"
    );
}

#[test]
fn sheds_when_cpu_and_inflight_are_both_over() {
    let (mut b, now) = warm(1000.0, 50.0, 5);
    assert_eq!(
        b.evaluate(now, 0.95, 51),
        Verdict {
            shed: true,
            limit: Some(50)
        }
    );
    // Over the CPU threshold but within the pipe: admit, with the limit armed in the kernel.
    assert_eq!(
        b.evaluate(now, 0.95, 50),
        Verdict {
            shed: false,
            limit: Some(50)
        }
    );
}

#[test]
fn cool_down_holds_the_decision_after_the_cpu_dips() {
    let (mut b, now) = warm(1000.0, 50.0, 5);
    assert!(b.should_shed(now, 0.95, 80));
    assert!(
        b.should_shed(now + 500 * MS, 0.3, 80),
        "dip 0.5 s after: still shedding"
    );
    assert!(
        b.should_shed(now + 1_000 * MS, 0.3, 80),
        "dip 1 s after: still shedding"
    );
    assert!(
        !b.should_shed(now + 1_000 * MS, 0.3, 40),
        "within the pipe: admitted"
    );
}

#[test]
fn recovers_after_the_cool_down_and_the_hold_is_not_extended() {
    let (mut b, now) = warm(1000.0, 50.0, 5);
    assert!(b.should_shed(now, 0.95, 80));
    // Shedding during the hold does not prolong it: the CPU is below the threshold.
    assert!(b.should_shed(now + 900 * MS, 0.3, 80));
    let v = b.evaluate(now + 1_001 * MS, 0.3, 80);
    assert_eq!(
        v,
        Verdict {
            shed: false,
            limit: None
        }
    );
    // And a new overload arms it again.
    assert!(b.should_shed(now + 2_000 * MS, 0.9, 80));
}

#[test]
fn the_hold_runs_from_the_last_overloaded_sample() {
    // A long overload: the hold must not have expired when the CPU dips (kratos' first-drop
    // clock would have).
    let (mut b, mut now) = warm(1000.0, 50.0, 5);
    for _ in 0..20 {
        assert!(b.should_shed(now, 0.95, 80));
        now += TICK;
    }
    assert!(b.should_shed(now + 500 * MS, 0.3, 80));
}

#[test]
fn a_cold_service_is_never_shed() {
    let mut b = Bbr::new(BbrConfig::default()).unwrap();
    assert_eq!(b.max_inflight(T0), None);
    assert_eq!(
        b.evaluate(T0, 1.0, 1_000_000),
        Verdict {
            shed: false,
            limit: None
        }
    );
    // Connections opened but none completed yet: still nothing known.
    b.record(T0, 0, 0);
    b.record(T0 + TICK, 0, 0);
    assert!(!b.should_shed(T0 + TICK, 1.0, 1_000_000));
}

#[test]
fn an_idle_service_whose_data_aged_out_is_never_shed() {
    let (mut b, mut now) = warm(1000.0, 50.0, 5);
    feed(&mut b, &mut now, 0.0, 0.0, 44); // 11 s without completions
    assert_eq!(b.max_inflight(now), None);
    assert!(!b.should_shed(now, 1.0, 1_000));
}

#[test]
fn a_thin_window_is_floored_at_min_inflight() {
    // One 1 ms connection in 10 s: Little's law says 1; the floor keeps 4.
    let mut b = Bbr::new(BbrConfig::default()).unwrap();
    b.record(T0, 0, 0);
    b.record(T0 + 100 * MS, 1, MS);
    let now = T0 + 500 * MS;
    assert_eq!(b.max_inflight(now), Some(4));
    assert!(!b.should_shed(now, 1.0, 4));
    assert!(b.should_shed(now, 1.0, 5));
}

#[test]
fn window_roll_over_drops_old_buckets() {
    // A burst of fast connections, then a calm period of slower ones.
    let (mut b, mut now) = warm(4000.0, 10.0, 2);
    assert!((b.max_pass(now).unwrap() - 400.0).abs() < 1e-6);
    feed(&mut b, &mut now, 1000.0, 50.0, 36); // 9 s: the burst is still inside the window
    assert!((b.max_pass(now).unwrap() - 400.0).abs() < 1e-6);
    assert!((b.min_rt_ms(now).unwrap() - 10.0).abs() < 1e-6);
    feed(&mut b, &mut now, 1000.0, 50.0, 8); // 2 s more: it has left
    assert!((b.max_pass(now).unwrap() - 100.0).abs() < 1e-6);
    assert!((b.min_rt_ms(now).unwrap() - 50.0).abs() < 1e-6);
    assert_eq!(b.max_inflight(now), Some(50));
}

#[test]
fn a_long_gap_keeps_only_the_part_inside_the_window() {
    let mut b = Bbr::new(BbrConfig::default()).unwrap();
    b.record(T0, 0, 0);
    // 20 s since the previous call: half of the delta falls before the window.
    let now = T0 + 20_000 * MS;
    b.record(now, 20_000, 20_000 * 5 * MS);
    // 1000/s spread evenly: 100 per bucket.
    assert!((b.max_pass(now).unwrap() - 100.0).abs() < 1e-6);
    assert!((b.min_rt_ms(now).unwrap() - 5.0).abs() < 1e-6);
}

#[test]
fn the_current_bucket_is_left_out() {
    let mut b = Bbr::new(BbrConfig::default()).unwrap();
    let now = T0 + 50 * MS; // halfway into a bucket
    b.record(T0, 0, 0);
    b.record(now, 10, 10 * MS);
    assert_eq!(
        b.max_pass(now),
        None,
        "only the partial current bucket has data"
    );
    assert!(b.max_pass(T0 + 100 * MS).is_some());
}

#[test]
fn config_is_validated() {
    assert!(BbrConfig::default().validate().is_ok());
    let bad = [
        BbrConfig {
            buckets: 1,
            ..BbrConfig::default()
        },
        BbrConfig {
            window_ms: 50,
            ..BbrConfig::default()
        },
        BbrConfig {
            cpu_threshold: 0.0,
            ..BbrConfig::default()
        },
        BbrConfig {
            cpu_threshold: f64::NAN,
            ..BbrConfig::default()
        },
        BbrConfig {
            min_inflight: 0,
            ..BbrConfig::default()
        },
    ];
    for c in bad {
        let e = Bbr::new(c).unwrap_err();
        assert!(e.to_string().starts_with("bbr."), "{e}");
    }
}
