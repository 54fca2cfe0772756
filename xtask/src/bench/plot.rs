//! PNG plots of the results (plotters' bitmap backend, text drawn with a TrueType font read at
//! run time: DejaVu Sans from Debian's fonts-dejavu-core).

use std::path::Path;

use anyhow::{Context as _, Result, anyhow};
use plotters::prelude::*;
use plotters::style::FontStyle;

pub const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

pub struct Plot {
    /// File name inside the plots folder (`refusal.png`).
    pub file: String,
    pub title: String,
    pub y_label: String,
    /// Logarithmic y axis (values must be positive; others are left out).
    pub log_y: bool,
    pub kind: Kind,
}

pub enum Kind {
    /// Groups of bars, one group per category, one bar per series.
    Bars {
        categories: Vec<String>,
        series: Vec<(String, Vec<Option<f64>>)>,
    },
    /// Lines through points, one line per series.
    Lines {
        x_label: String,
        log_x: bool,
        series: Vec<(String, Vec<(f64, f64)>)>,
    },
}

/// Registers the font under "sans-serif"; fails with the fix if it is not installed.
pub fn init_font() -> Result<()> {
    let bytes = std::fs::read(FONT).with_context(|| {
        format!("plots need the font {FONT}: apt-get install fonts-dejavu-core")
    })?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("{FONT} is not a usable TrueType font"))
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn scale(v: f64, log: bool) -> Option<f64> {
    match log {
        true if v > 0.0 => Some(v.log10()),
        true => None,
        false => Some(v),
    }
}

/// A tick label: the value itself, or 10^v on a log axis, without trailing zeros.
fn tick(v: f64, log: bool) -> String {
    let x = if log { 10f64.powf(v) } else { v };
    match x.abs() {
        a if a >= 1e6 => format!("{}M", trim(x / 1e6)),
        a if a >= 1e3 => format!("{}k", trim(x / 1e3)),
        _ => trim(x),
    }
}

fn trim(x: f64) -> String {
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The drawn range of `values` (scaled): from 0 (linear) or the decade below (log), with room
/// above; and on a log axis the decades as key points.
fn range(values: impl Iterator<Item = f64>, log: bool, pad: bool) -> (f64, f64, Vec<f64>) {
    let v: Vec<f64> = values.filter_map(|x| scale(x, log)).collect();
    let hi = v.iter().copied().fold(f64::MIN, f64::max);
    let lo = v.iter().copied().fold(f64::MAX, f64::min);
    if v.is_empty() {
        return (0.0, 1.0, vec![]);
    }
    if log {
        let room = if pad { 0.15 } else { 0.0 };
        let (lo, hi) = (lo.floor(), (hi + room).ceil().max(lo.floor() + 1.0));
        let keys = (lo as i32..=hi as i32).map(f64::from).collect();
        (lo, hi, keys)
    } else {
        let room = if pad { 1.15 } else { 1.0 };
        (0.0, if hi > 0.0 { hi * room } else { 1.0 }, vec![])
    }
}

pub fn render(dir: &Path, plot: &Plot) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(&plot.file);
    let root = BitMapBackend::new(&path, (1000, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    match &plot.kind {
        Kind::Bars { categories, series } => bars(&root, plot, categories, series),
        Kind::Lines {
            x_label,
            log_x,
            series,
        } => lines(&root, plot, x_label, *log_x, series),
    }
    .with_context(|| format!("draw {}", path.display()))?;
    root.present().map_err(|e| anyhow!("{e:?}"))?;
    Ok(())
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

fn bars(
    root: &Area,
    plot: &Plot,
    categories: &[String],
    series: &[(String, Vec<Option<f64>>)],
) -> Result<()> {
    if let Some((name, v)) = series.iter().find(|(_, v)| v.len() != categories.len()) {
        return Err(anyhow!(
            "series {name:?} has {} values for {} categories",
            v.len(),
            categories.len()
        ));
    }
    let all = series.iter().flat_map(|(_, v)| v.iter().flatten().copied());
    let (lo, hi, keys) = range(all, plot.log_y, true);
    let n = categories.len() as f64;
    let mut chart = ChartBuilder::on(root)
        .caption(&plot.title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5..n - 0.5, lo..hi)
        .map_err(|e| anyhow!("{e:?}"))?;
    let log = plot.log_y;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc(&plot.y_label)
        .x_label_formatter(&|v| {
            categories
                .get(v.round().max(0.0) as usize)
                .cloned()
                .unwrap_or_default()
        })
        .y_label_formatter(&|v| tick(*v, log))
        .label_style(("sans-serif", 14))
        .x_labels(categories.len())
        .y_labels(if log { keys.len() } else { 8 })
        .draw()
        .map_err(|e| anyhow!("{e:?}"))?;
    let width = 0.8 / series.len().max(1) as f64;
    for (s, (name, values)) in series.iter().enumerate() {
        let color = COLORS[s % COLORS.len()];
        let rects = values.iter().enumerate().filter_map(|(i, v)| {
            let top = scale((*v)?, log)?;
            let x0 = i as f64 - 0.4 + s as f64 * width;
            Some(Rectangle::new(
                [(x0, lo), (x0 + width * 0.92, top)],
                color.filled(),
            ))
        });
        chart
            .draw_series(rects)
            .map_err(|e| anyhow!("{e:?}"))?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
    }
    legend(&mut chart)
}

fn lines(
    root: &Area,
    plot: &Plot,
    x_label: &str,
    log_x: bool,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    let pts = || series.iter().flat_map(|(_, p)| p.iter().copied());
    let (ylo, yhi, ykeys) = range(pts().map(|p| p.1), plot.log_y, true);
    let (xlo, xhi, xkeys) = range(pts().map(|p| p.0), log_x, false);
    let xlo = if log_x {
        xlo
    } else {
        pts().map(|p| p.0).fold(f64::MAX, f64::min)
    };
    let mut chart = ChartBuilder::on(root)
        .caption(&plot.title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(xlo..xhi, ylo..yhi)
        .map_err(|e| anyhow!("{e:?}"))?;
    let log_y = plot.log_y;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(&plot.y_label)
        .x_label_formatter(&|v| tick(*v, log_x))
        .y_label_formatter(&|v| tick(*v, log_y))
        .label_style(("sans-serif", 14))
        .x_labels(if log_x { xkeys.len() } else { 10 })
        .y_labels(if log_y { ykeys.len() } else { 8 })
        .draw()
        .map_err(|e| anyhow!("{e:?}"))?;
    for (s, (name, points)) in series.iter().enumerate() {
        let color = COLORS[s % COLORS.len()];
        let scaled: Vec<(f64, f64)> = points
            .iter()
            .filter_map(|&(x, y)| Some((scale(x, log_x)?, scale(y, log_y)?)))
            .collect();
        chart
            .draw_series(LineSeries::new(scaled.clone(), color.stroke_width(2)))
            .map_err(|e| anyhow!("{e:?}"))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
        chart
            .draw_series(
                scaled
                    .into_iter()
                    .map(|p| Circle::new(p, 4, color.filled())),
            )
            .map_err(|e| anyhow!("{e:?}"))?;
    }
    legend(&mut chart)
}

fn legend<'a, X: Ranged, Y: Ranged>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, Cartesian2d<X, Y>>,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_read_as_numbers() {
        assert_eq!(tick(3.0, true), "1k");
        assert_eq!(tick(5.0, true), "100k");
        assert_eq!(tick(0.0, true), "1");
        assert_eq!(tick(12.5, false), "12.5");
        let (lo, hi, keys) = range([3.0, 300.0].into_iter(), true, true);
        assert_eq!((lo, hi), (0.0, 3.0));
        assert_eq!(keys, [0.0, 1.0, 2.0, 3.0]);
    }
}
