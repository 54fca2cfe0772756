//! `cargo xtask plot-overload`: the figure of docs/overload.md, from the timeline the adaptive
//! integration test writes (`LIMITER_OVERLOAD_TIMELINE=FILE`, tests/tests/overload.rs): the
//! workload's CPU, established connections against maxInflight, shed refusals per second, and
//! the probes' completion time with the rule and (from `FILE-no-rule.csv`) without it, in four
//! panels over one time axis, the flood shaded.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};
use plotters::prelude::*;

use crate::bench::plot::init_font;

#[derive(clap::Args)]
pub struct PlotArgs {
    /// The adaptive test's timeline (CSV).
    #[arg(long, default_value = "target/overload/timeline.csv")]
    timeline: PathBuf,
    /// Where to write the PNG.
    #[arg(long, default_value = "docs/bench/overload.png")]
    out: PathBuf,
}

/// One sample of the timeline (every 250 ms).
#[derive(Clone, Debug, Default)]
pub struct Row {
    pub t: f64,
    /// Filtered CPU, fraction of the quota.
    pub cpu: f64,
    pub inflight: Option<f64>,
    pub max_inflight: Option<f64>,
    pub shed_total: Option<f64>,
    /// Completion time of a probe that completed in this tick.
    pub probe_ms: Option<f64>,
    /// The daemon reports the check armed.
    pub shedding: Option<bool>,
    pub flood: bool,
}

pub fn read(path: &Path) -> Result<Vec<Row>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| anyhow!("{}: no column {name}", path.display()))
    };
    let shedding = col("shedding")?;
    let (t, cpu, inflight, max, shed, probe, flood) = (
        col("t_s")?,
        col("cpu")?,
        col("inflight")?,
        col("max_inflight")?,
        col("shed_total")?,
        col("probe_ms")?,
        col("flood")?,
    );
    let mut rows = Vec::new();
    for (n, line) in lines.enumerate() {
        let cells: Vec<&str> = line.split(',').collect();
        let num = |i: usize| cells.get(i).and_then(|c| c.parse::<f64>().ok());
        rows.push(Row {
            t: num(t).ok_or_else(|| anyhow!("{}:{}: no time", path.display(), n + 2))?,
            cpu: num(cpu).unwrap_or(0.0),
            inflight: num(inflight),
            max_inflight: num(max),
            shed_total: num(shed),
            probe_ms: num(probe),
            shedding: cells.get(shedding).and_then(|c| c.parse().ok()),
            flood: num(flood) == Some(1.0),
        });
    }
    if rows.len() < 2 {
        bail!("{}: fewer than two samples", path.display());
    }
    Ok(rows)
}

pub fn no_rule_path(timeline: &Path) -> PathBuf {
    let stem = timeline.file_stem().unwrap_or_default().to_string_lossy();
    timeline.with_file_name(format!("{stem}-no-rule.csv"))
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

/// A line of a panel: its legend, color and points.
type Line<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);

/// One panel: `series` of (name, color, points) over `t_max`, the flood shaded.
fn panel(
    area: &Area,
    title: &str,
    flood: (f64, f64),
    t_max: f64,
    y_max: f64,
    series: &[Line<'_>],
) -> Result<()> {
    let err = |e| anyhow!("{e:?}");
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..t_max, 0f64..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    chart
        .draw_series(std::iter::once(Rectangle::new(
            [(flood.0, 0.0), (flood.1, y_max)],
            RGBColor(235, 235, 235).filled(),
        )))
        .map_err(err)?;
    for (name, color, points) in series {
        let color = *color;
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(err)?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(err)?;
    Ok(())
}

pub fn run(args: &PlotArgs) -> Result<()> {
    init_font()?;
    draw(&args.timeline, &args.out)?;
    println!("xtask: wrote {}", args.out.display());
    Ok(())
}

/// The flood's first and last sample times.
pub fn flood_window(rows: &[Row]) -> Option<(f64, f64)> {
    let on: Vec<f64> = rows.iter().filter(|r| r.flood).map(|r| r.t).collect();
    Some((*on.first()?, *on.last()?))
}

/// Draws the figure of `timeline` (and its `-no-rule` companion, if present) into `out`.
pub fn draw(timeline: &Path, out: &Path) -> Result<()> {
    let rows = read(timeline)?;
    let no_rule = read(&no_rule_path(timeline)).ok();
    let Some(flood) = flood_window(&rows) else {
        bail!("{}: no sample during the flood", timeline.display());
    };
    let t_max = rows.last().map_or(1.0, |r| r.t);
    let pts = |f: &dyn Fn(&Row) -> Option<f64>| -> Vec<(f64, f64)> {
        rows.iter().filter_map(|r| Some((r.t, f(r)?))).collect()
    };
    let cpu = pts(&|r| Some(r.cpu * 100.0));
    let inflight = pts(&|r| r.inflight);
    let max_inflight = pts(&|r| r.max_inflight);
    let refusals: Vec<(f64, f64)> = rows
        .windows(2)
        .filter_map(|w| {
            let d = w[1].shed_total? - w[0].shed_total?;
            Some((w[1].t, d / (w[1].t - w[0].t)))
        })
        .collect();
    let probes = pts(&|r| r.probe_ms);
    let probes_no_rule: Vec<(f64, f64)> = no_rule
        .iter()
        .flatten()
        .filter_map(|r| Some((r.t, r.probe_ms?)))
        .collect();

    let top = |v: &[(f64, f64)], floor: f64| v.iter().map(|p| p.1).fold(floor, f64::max) * 1.15;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let root = BitMapBackend::new(out, (1000, 1100)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let panels = root.split_evenly((4, 1));
    let (blue, orange, green, red) = (
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
    );
    panel(
        &panels[0],
        "Workload CPU, filtered (% of its 1-CPU quota; threshold 80%)",
        flood,
        t_max,
        top(&cpu, 100.0),
        &[
            ("cpu", blue, cpu.clone()),
            (
                "threshold",
                RGBColor(120, 120, 120),
                vec![(0.0, 80.0), (t_max, 80.0)],
            ),
        ],
    )?;
    panel(
        &panels[1],
        "Established connections vs maxInflight (Little's law)",
        flood,
        t_max,
        top(&inflight, 5.0),
        &[
            ("inflight", orange, inflight),
            ("maxInflight", green, max_inflight),
        ],
    )?;
    panel(
        &panels[2],
        "Shed refusals per second",
        flood,
        t_max,
        top(&refusals, 10.0),
        &[("refused (shed)", red, refusals)],
    )?;
    let mut latency = vec![("probe completion, --adaptive", blue, probes.clone())];
    if !probes_no_rule.is_empty() {
        latency.push((
            "probe completion, no rule",
            RGBColor(140, 86, 75),
            probes_no_rule.clone(),
        ));
    }
    panel(
        &panels[3],
        "Completion time of a probe connection (ms); flood shaded",
        flood,
        t_max,
        top(&probes, 100.0).max(top(&probes_no_rule, 0.0)),
        &latency,
    )?;
    root.present().map_err(|e| anyhow!("{e:?}"))?;
    Ok(())
}
