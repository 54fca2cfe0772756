use super::*;

const MS: u64 = 1_000_000;
const THRESHOLD: f64 = 0.8;

/// go-kratos/aegis' CPU smoothing, as the reference to beat: every 500 ms,
/// `cpu = cpu * 0.95 + usage * 0.05` (in per-mille integers there; floats here).
struct KratosDecay(f64);

impl KratosDecay {
    fn update(&mut self, sample: f64) -> f64 {
        self.0 = self.0 * 0.95 + sample * 0.05;
        self.0
    }
}

/// Feeds `from` long enough to settle, then `to` from t = 0 on, one sample every `tick_ns`
/// (the sample at t covers (t - tick, t]); returns the time in seconds of the first sample whose
/// filtered value is on the other side of the threshold, or `None` within 60 s.
fn crossing(
    mut update: impl FnMut(u64, f64) -> f64,
    from: f64,
    to: f64,
    tick_ns: u64,
) -> Option<f64> {
    let settle = 200 * tick_ns;
    let mut t = 0;
    while t <= settle {
        update(t, from);
        t += tick_ns;
    }
    let start = t - tick_ns;
    let rising = to > from;
    while t - start <= 60_000 * MS {
        let v = update(t, to);
        if (rising && v > THRESHOLD) || (!rising && v < THRESHOLD) {
            return Some((t - start) as f64 / 1e9);
        }
        t += tick_ns;
    }
    None
}

fn ewma_crossing(tau_ms: u64, tick_ms: u64, from: f64, to: f64) -> f64 {
    let mut f = Ewma::new(&FilterConfig { tau_ms });
    crossing(|t, x| f.update(t, x), from, to, tick_ms * MS).expect("the EWMA never crossed")
}

#[test]
fn step_up_crosses_the_threshold_within_one_second() {
    let t = ewma_crossing(500, 250, 0.2, 1.0);
    println!("step response: EWMA tau 500 ms, 250 ms ticks, 0.2 -> 1.0 crosses 0.8 after {t:.2} s");
    assert!(t <= 1.0, "took {t} s");
    assert_eq!(t, 0.75);
}

#[test]
fn step_down_falls_below_the_threshold_within_two_seconds() {
    let t = ewma_crossing(500, 250, 1.0, 0.2);
    println!(
        "step response: EWMA tau 500 ms, 250 ms ticks, 1.0 -> 0.2 falls below 0.8 after {t:.2} s"
    );
    assert!(t <= 2.0, "took {t} s");
    // With the 1 s BBR cool-down on top, shedding stops 1.25 s after the overload ends.
    assert!(t + 1.0 <= 2.0);
}

#[test]
fn kratos_decay_is_an_order_of_magnitude_slower() {
    let mut k = KratosDecay(0.0);
    let kratos = crossing(|_, x| k.update(x), 0.2, 1.0, 500 * MS).expect("never crossed");
    let ours = ewma_crossing(500, 250, 0.2, 1.0);
    let half_life = 0.5 * 2f64.ln() / -(0.95f64.ln());
    println!(
        "step response: kratos 0.95 decay at 500 ms crosses 0.8 after {kratos:.1} s \
         (half-life {half_life:.1} s); EWMA tau 500 ms after {ours:.2} s"
    );
    assert!(kratos >= 10.0 * ours, "kratos {kratos} s vs ours {ours} s");
    assert!((13.0..=15.0).contains(&kratos), "kratos took {kratos} s");
}

#[test]
fn reaction_time_does_not_depend_on_the_sampling_interval() {
    // Analytic crossing: tau ln 4 = 0.693 s; each interval sees it at its first tick after.
    for (tick_ms, expected) in [(50, 0.70), (100, 0.70), (250, 0.75), (500, 1.0)] {
        let t = ewma_crossing(500, tick_ms, 0.2, 1.0);
        println!("step response: EWMA tau 500 ms, {tick_ms} ms ticks: crosses 0.8 after {t:.2} s");
        assert!((t - expected).abs() < 1e-9, "{tick_ms} ms ticks: {t} s");
    }
}

#[test]
fn a_late_tick_weighs_more() {
    let mut on_time = Ewma::new(&FilterConfig::default());
    let mut late = on_time.clone();
    on_time.update(0, 0.0);
    late.update(0, 0.0);
    let a = on_time.update(250 * MS, 1.0);
    let b = late.update(1_000 * MS, 1.0);
    assert!(b > a, "{b} <= {a}");
    assert!((a - (1.0 - (-0.5f64).exp())).abs() < 1e-12);
}

#[test]
fn first_sample_is_taken_as_is_and_bad_samples_are_ignored() {
    let mut f = Ewma::new(&FilterConfig::default());
    assert_eq!(f.value(), None);
    assert_eq!(f.update(7, 0.9), 0.9);
    assert_eq!(f.update(8 * MS, f64::NAN), 0.9);
    // The same instant again carries no weight.
    assert_eq!(f.update(7, 0.1), 0.9);
}

#[test]
fn zero_tau_means_no_smoothing() {
    let mut f = Ewma::new(&FilterConfig { tau_ms: 0 });
    f.update(0, 0.2);
    assert_eq!(f.update(250 * MS, 1.0), 1.0);
}

#[test]
fn config_rejects_a_slow_filter() {
    assert!(FilterConfig::default().validate().is_ok());
    let err = FilterConfig { tau_ms: 9_750 }.validate().unwrap_err();
    assert!(err.to_string().contains("filter.tau_ms"), "{err}");
}
