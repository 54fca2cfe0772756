//! Medians, percentiles and the formatting of measured values.

use std::time::Duration;

/// The `p`-th percentile (nearest rank, 0 < p <= 100) of `values`; None if empty.
pub fn pct(values: &[f64], p: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v.get(rank.min(v.len()) - 1).copied()
}

pub fn median(values: &[f64]) -> Option<f64> {
    pct(values, 50.0)
}

pub fn max(values: &[f64]) -> Option<f64> {
    values.iter().copied().reduce(f64::max)
}

pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// A latency given in microseconds, with a unit that keeps 2-3 significant digits.
pub fn fmt_us(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(x) if x >= 1e6 => format!("{:.2} s", x / 1e6),
        Some(x) if x >= 1e4 => format!("{:.1} ms", x / 1e3),
        Some(x) if x >= 1e3 => format!("{:.2} ms", x / 1e3),
        Some(x) if x >= 100.0 => format!("{x:.0} µs"),
        Some(x) if x >= 10.0 => format!("{x:.1} µs"),
        Some(x) => format!("{x:.2} µs"),
    }
}

/// `a / b` as "1.23×"; "—" when either is missing or b is zero.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match ratio_value(a, b) {
        Some(r) if r >= 100.0 => format!("{r:.0}×"),
        Some(r) if r >= 10.0 => format!("{r:.1}×"),
        Some(r) => format!("{r:.2}×"),
        None => "—".into(),
    }
}

pub fn ratio_value(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// A plain number with at most `digits` decimals, or "—".
pub fn num(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "—".into(), |x| format!("{x:.digits$}"))
}

/// "yes" or "**NO**" (a missed target stands out in the table).
pub fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "yes",
        Some(false) => "**NO — missed**",
        None => "not measured",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(pct(&v, 50.0), Some(3.0));
        assert_eq!(pct(&v, 99.0), Some(5.0));
        assert_eq!(pct(&v, 1.0), Some(1.0));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 2.0]), Some(2.0));
    }

    #[test]
    fn formats_keep_units_readable() {
        assert_eq!(fmt_us(Some(3.456)), "3.46 µs");
        assert_eq!(fmt_us(Some(317.2)), "317 µs");
        assert_eq!(fmt_us(Some(2_100.0)), "2.10 ms");
        assert_eq!(fmt_us(None), "—");
        assert_eq!(ratio(Some(300.0), Some(3.0)), "100×");
        assert_eq!(ratio(Some(1.0), Some(0.0)), "—");
    }
}
