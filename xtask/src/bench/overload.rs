//! Scenario 8, overload: the step response of `--adaptive`, measured by running the overload
//! integration test (a CPU-bound server in a 1-CPU cgroup flooded by 50 clients, with the
//! rule and without it; tests/tests/overload.rs) against the benchmark's daemon and reading
//! the timeline it records every 250 ms.
//!
//! The peers: without a rule (what iptables connlimit or a static limit does when nobody knows
//! the right number: nothing, or a number set by hand), and go-kratos' CPU filter, whose step
//! response is computed from its definition (0.95 decay per 500 ms sample), since kratos limits
//! requests inside a Go process and cannot be put in front of this server.

use std::path::Path;

use anyhow::{Result, bail};

use super::report::{Section, Table, Target};
use crate::overload_plot::{Row, flood_window, no_rule_path, read};

/// The integration test's two scenarios that write the timelines.
const TESTS: [&str; 2] = [
    "adaptive_sheds_a_cpu_bound_flood_and_keeps_latency_bounded",
    "without_a_rule_completion_time_grows_without_bound",
];

fn p50(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// Time for kratos' filter (`cpu = 0.95 cpu + 0.05 sample`, every 500 ms) to go from `from` to
/// above 0.8 after a step to 1.0.
fn kratos_crossing_s(from: f64) -> f64 {
    let samples = ((1.0 - 0.8) / (1.0 - from)).ln() / 0.95f64.ln();
    samples.ceil() * 0.5
}

/// What the timelines say.
struct Figures {
    cpu_before: Option<f64>,
    cpu_crossed_s: Option<f64>,
    first_shed_s: Option<f64>,
    stop_s: Option<f64>,
    unloaded_ms: Option<f64>,
    shedding_ms: Option<f64>,
    no_rule_late_ms: Option<f64>,
}

fn figures(rows: &[Row], no_rule: &[Row]) -> Option<Figures> {
    let (start, end) = flood_window(rows)?;
    let after =
        |t: f64, f: &dyn Fn(&Row) -> bool| rows.iter().find(|r| r.t >= t && f(r)).map(|r| r.t);
    let before: Vec<&Row> = rows.iter().filter(|r| r.t < start).collect();
    // The steady state: the ramp's backlog drained (established down to maxInflight).
    let steady = after(start, &|r| {
        r.shed_total.is_some_and(|n| n > 0.0)
            && r.inflight.zip(r.max_inflight).is_some_and(|(i, m)| i <= m)
    });
    let late_no_rule = no_rule
        .iter()
        .filter(|r| flood_window(no_rule).is_some_and(|(s, e)| r.t >= s + 3.0 && r.t <= e + 2.0));
    Some(Figures {
        cpu_before: before.last().map(|r| r.cpu),
        cpu_crossed_s: after(start, &|r| r.cpu > 0.8).map(|t| t - start),
        first_shed_s: after(start, &|r| r.shed_total.is_some_and(|n| n > 0.0)).map(|t| t - start),
        // The first tick after the flood's end at which the check is no longer armed.
        stop_s: after(end + 0.001, &|r| r.shedding == Some(false)).map(|t| t - end),
        unloaded_ms: p50(before.iter().filter_map(|r| r.probe_ms).collect()),
        shedding_ms: steady.and_then(|s| {
            p50(rows
                .iter()
                .filter(|r| r.t >= s && r.t <= end)
                .filter_map(|r| r.probe_ms)
                .collect())
        }),
        no_rule_late_ms: p50(late_no_rule.filter_map(|r| r.probe_ms).collect()),
    })
}

pub fn run(bin: &Path, release: bool, plots_dir: &Path) -> Result<Section> {
    let mut s = Section::new("8. Overload");
    let work = crate::target_dir().join("bench-work").join("overload");
    std::fs::create_dir_all(&work)?;
    let timeline = work.join("timeline.csv");
    let mut cmd = crate::cargo();
    cmd.args([
        "test",
        "-p",
        "limiter-integration-tests",
        "--test",
        "overload",
    ]);
    if release {
        cmd.arg("--release");
    }
    cmd.args(["--", "--test-threads=1", "--exact"])
        .args(TESTS)
        .env("LIMITER_BIN", bin)
        .env("LIMITER_OVERLOAD_TIMELINE", &timeline);
    crate::run(&mut cmd)?;
    let rows = read(&timeline)?;
    let no_rule = read(&no_rule_path(&timeline))?;
    let Some(f) = figures(&rows, &no_rule) else {
        bail!("{}: no flood in the timeline", timeline.display());
    };
    crate::overload_plot::draw(&timeline, &plots_dir.join("overload.png"))?;

    s.intro.push(
        "A server whose every connection burns 50 ms of CPU runs in a cgroup with a 1-CPU quota \
         (v1 `cpu.cfs_quota_us` here); 50 clients flood it for 7 s, while a probe connection \
         measures completion time every 250 ms. `--adaptive --workload-cgroup` against no rule, \
         from the integration test `tests/tests/overload.rs` run against this build; the \
         timeline has a sample every 250 ms, so times below are to the tick."
            .into(),
    );
    let ms = |v: Option<f64>| v.map_or("—".into(), |x| format!("{x:.0} ms"));
    let secs = |v: Option<f64>| v.map_or("—".into(), |x| format!("{x:.2} s"));
    let mut t = Table::new(&[
        "",
        "limiter --adaptive",
        "no rule",
        "kratos' filter (computed)",
    ]);
    let crossed = s.value(f.cpu_crossed_s, "cpu crossing", secs);
    let kratos = f.cpu_before.map(kratos_crossing_s);
    t.row(vec![
        "filtered CPU above 80% after the flood starts".into(),
        crossed,
        "—".into(),
        s.value(kratos, "kratos crossing", secs),
    ]);
    let first = s.value(f.first_shed_s, "first shed", secs);
    t.row(vec![
        "first refusal (shed) after the flood starts".into(),
        first.clone(),
        "never".into(),
        "—".into(),
    ]);
    let stop = s.value(f.stop_s, "stop", secs);
    t.row(vec![
        "shedding stops after the flood ends".into(),
        stop.clone(),
        "—".into(),
        "—".into(),
    ]);
    let unloaded = s.value(f.unloaded_ms, "unloaded", ms);
    t.row(vec![
        "probe completion, unloaded (p50)".into(),
        unloaded.clone(),
        unloaded,
        "—".into(),
    ]);
    t.row(vec![
        "probe completion during the flood (p50; no rule: from 3 s in)".into(),
        s.value(f.shedding_ms, "shedding latency", ms),
        s.value(f.no_rule_late_ms, "no-rule latency", ms),
        "—".into(),
    ]);
    s.tables.push(t);
    s.targets.push(Target::new(
        "start shedding within 1 s of overload",
        first,
        f.first_shed_s.map(|x| x <= 1.0),
    ));
    s.targets.push(Target::new(
        "stop within 2 s after it ends",
        stop,
        f.stop_s.map(|x| x <= 2.0),
    ));
    s.notes.push(
        "![CPU, established connections against maxInflight, shed refusals and probe completion \
         time over the run](bench/overload.png)"
            .into(),
    );
    s.notes.push(format!(
        "kratos' filter from the same starting CPU ({:.0}%): its average needs that long to cross \
         80% after a step to 100%, so a flood runs unchecked meanwhile; limiter's (tau 0.5 s) \
         crosses in about 0.7 s. Completion time grows while the filter is below the threshold \
         (the ramp's backlog), then stays near 4 x the unloaded time: maxInflight has its floor \
         of 4 here, so an admitted connection waits behind about 3 others.",
        f.cpu_before.unwrap_or(0.0) * 100.0
    ));
    s.notes.push(
        "iptables connlimit, nftables and a static --max-connections have no overload signal: \
         they protect only with a number set by hand, which is the \"no rule\" column until \
         someone measures the right one."
            .into(),
    );
    Ok(s)
}
