//! A [`Timeline`](super::Timeline)'s samples as a table on stdout and as CSV for
//! `cargo xtask plot-overload` and the overload benchmark (both read the CSV's header).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use super::timeline::{Sample, TICK};

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

fn opt_f(v: Option<f64>, decimals: usize) -> String {
    v.map(|v| format!("{v:.decimals$}")).unwrap_or_default()
}

/// Milliseconds, fractional.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The timeline as a table, with `marks` (time, label) as lines between the rows.
pub fn print_timeline(label: &str, samples: &[Sample], marks: &[(Duration, &str)]) {
    let mut text = format!(
        "{label}: timeline every {TICK:?}\n{:>6} {:>5} {:>6} {:>8} {:>8} {:>7} {:>8} {:>5} {:>9} {:>8} {:>9} {:>8} {:>8}\n",
        "t_s",
        "cpu",
        "cg_cpu",
        "inflight",
        "max_infl",
        "maxpass",
        "minrt_ms",
        "shed",
        "shed_tot",
        "probe_ms",
        "flood_ok",
        "refused",
        "timedout"
    );
    let mut marks = marks.to_vec();
    marks.sort();
    let mut marks = marks.into_iter().peekable();
    for s in samples {
        while let Some((_, m)) = marks.next_if(|(t, _)| *t <= s.t) {
            let _ = writeln!(text, "------ {m}");
        }
        let a = &s.adaptive;
        let _ = writeln!(
            text,
            "{:>6.2} {:>5} {:>6.2} {:>8} {:>8} {:>7} {:>8} {:>5} {:>9} {:>8} {:>9} {:>8} {:>8}",
            s.t.as_secs_f64(),
            opt_f(a.cpu, 2),
            s.cgroup_cpu,
            opt(a.inflight),
            opt(a.max_inflight),
            opt_f(a.max_pass, 1),
            opt_f(a.min_rt_ms, 1),
            opt(a.shedding),
            opt(a.shed_total),
            opt_f(s.probe.map(ms), 0),
            s.flood_completed,
            s.flood_refused,
            s.flood_timed_out
        );
    }
    for (_, m) in marks {
        let _ = writeln!(text, "------ {m}");
    }
    println!("{text}");
}

/// The timeline as CSV (`t_s,cpu,inflight,max_inflight,shed_total,shedding,probe_ms,flood`);
/// empty cells where a value is unknown. `cpu` is the daemon's, or, where the daemon reports
/// none (no rule), the one the test measured from the cgroup; `flood` is 1 while it runs.
pub fn timeline_csv(samples: &[Sample], flood: (Duration, Duration)) -> String {
    let mut csv =
        String::from("t_s,cpu,inflight,max_inflight,shed_total,shedding,probe_ms,flood\n");
    for s in samples {
        let a = &s.adaptive;
        let _ = writeln!(
            csv,
            "{:.3},{:.3},{},{},{},{},{},{}",
            s.t.as_secs_f64(),
            a.cpu.unwrap_or(s.cgroup_cpu),
            opt(a.inflight),
            opt(a.max_inflight),
            opt(a.shed_total),
            opt(a.shedding),
            opt_f(s.probe.map(ms), 1),
            u8::from(s.t >= flood.0 && s.t < flood.1)
        );
    }
    csv
}

/// Writes the CSV to `$LIMITER_OVERLOAD_TIMELINE` (with `suffix` before its extension).
pub fn save_timeline(samples: &[Sample], flood: (Duration, Duration), suffix: &str) {
    let Some(file) = std::env::var_os("LIMITER_OVERLOAD_TIMELINE") else {
        return;
    };
    let file = PathBuf::from(file);
    let file = if suffix.is_empty() {
        file
    } else {
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = match file.extension() {
            Some(ext) => format!("{stem}{suffix}.{}", ext.to_string_lossy()),
            None => format!("{stem}{suffix}"),
        };
        file.with_file_name(name)
    };
    std::fs::write(&file, timeline_csv(samples, flood))
        .unwrap_or_else(|e| panic!("write the timeline to {}: {e}", file.display()));
    println!("timeline written to {}", file.display());
}

#[cfg(test)]
mod tests {
    use super::super::timeline::Adaptive;
    use super::*;

    /// xtask's plot and benchmark read this header and these cells.
    #[test]
    fn the_csv_has_the_header_xtask_reads_and_empty_unknowns() {
        let sample = |t_ms: u64, adaptive: Adaptive, probe_ms: Option<u64>| Sample {
            t: Duration::from_millis(t_ms),
            adaptive,
            cgroup_cpu: 0.25,
            probe: probe_ms.map(Duration::from_millis),
            ..Sample::default()
        };
        let shedding = Adaptive {
            cpu: Some(0.9),
            inflight: Some(5),
            max_inflight: Some(4),
            shed_total: Some(12),
            shedding: Some(true),
            ..Adaptive::default()
        };
        let csv = timeline_csv(
            &[
                sample(250, Adaptive::default(), None),
                sample(1500, shedding, Some(212)),
            ],
            (Duration::from_secs(1), Duration::from_secs(2)),
        );
        assert_eq!(
            csv,
            "t_s,cpu,inflight,max_inflight,shed_total,shedding,probe_ms,flood\n\
             0.250,0.250,,,,,,0\n\
             1.500,0.900,5,4,12,true,212.0,1\n"
        );
    }
}
