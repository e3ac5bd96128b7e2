//! `--plot FILE.svg|FILE.png`: a latency histogram and a percentile curve
//! (HdrHistogram style: x is log10(1 / (1 - quantile))), drawn with plotters.
//!
//! SVG is fully labelled. PNG is drawn with the same shapes but without text:
//! the pure-Rust plotters build has no font rasterizer (that would need the
//! system's fontconfig/freetype), so use SVG for a labelled chart.

use hdrhistogram::Histogram;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// One latency distribution to draw.
pub struct Series<'a> {
    pub name: String,
    pub hist: &'a Histogram<u64>,
}

const BINS: u64 = 60;
/// The percentile curve runs to 99.999 %.
const MAX_NINES: f64 = 5.0;

fn us(ns: u64) -> f64 {
    ns as f64 / 1e3
}

pub fn draw(path: &Path, title: &str, series: &[Series<'_>]) -> Result<(), String> {
    let series: Vec<&Series<'_>> = series.iter().filter(|s| !s.hist.is_empty()).collect();
    if series.is_empty() {
        return Err("no latency samples to plot".into());
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let size = (1200, 500);
    match ext.as_deref() {
        Some("svg") => {
            let root = SVGBackend::new(path, size).into_drawing_area();
            render(&root, title, &series, true)?;
            root.present().map_err(|e| e.to_string())
        }
        Some("png") => {
            let root = BitMapBackend::new(path, size).into_drawing_area();
            render(&root, title, &series, false)?;
            root.present().map_err(|e| e.to_string())
        }
        _ => Err(format!(
            "--plot {}: the file name must end in .svg or .png",
            path.display()
        )),
    }
}

const COLORS: [RGBColor; 3] = [RGBColor(31, 119, 180), RGBColor(214, 39, 40), GREEN];

fn render<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    series: &[&Series<'_>],
    labels: bool,
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(err)?;
    let root = if labels {
        root.titled(title, ("sans-serif", 20)).map_err(err)?
    } else {
        root.clone()
    };
    let (left, right) = root.split_horizontally(600);

    // Histogram: linear bins from the smallest min to the largest p99.9.
    let lo = series.iter().map(|s| s.hist.min()).min().unwrap_or(0);
    let hi = series
        .iter()
        .map(|s| s.hist.value_at_quantile(0.99))
        .max()
        .unwrap_or(1)
        .max(lo + BINS);
    let width = (hi - lo).div_ceil(BINS).max(1);
    let mut bins: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut ymax = 0.0f64;
    for s in series {
        let total = s.hist.len().max(1) as f64;
        let v: Vec<(f64, f64)> = (0..BINS)
            .map(|i| {
                let a = lo + i * width;
                let n = s.hist.count_between(a, a + width - 1);
                let share = 100.0 * n as f64 / total;
                ymax = ymax.max(share);
                (us(a), share)
            })
            .collect();
        bins.push(v);
    }
    let (x0, x1) = (us(lo), us(lo + BINS * width));
    let mut b = ChartBuilder::on(&left);
    b.margin(15);
    if labels {
        b.caption("latency histogram (to p99)", ("sans-serif", 16))
            .x_label_area_size(40)
            .y_label_area_size(55);
    } else {
        b.x_label_area_size(2).y_label_area_size(2);
    }
    let mut chart = b
        .build_cartesian_2d(x0..x1, 0.0..ymax * 1.1 + 1e-9)
        .map_err(err)?;
    let mut mesh = chart.configure_mesh();
    if labels {
        mesh.x_desc("latency (us)").y_desc("% of samples");
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(err)?;
    let bw = us(width);
    for (i, v) in bins.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let n = series.len() as f64;
        let off = bw * i as f64 / n;
        let a = chart
            .draw_series(v.iter().map(|&(x, y)| {
                Rectangle::new(
                    [(x + off, 0.0), (x + off + bw / n * 0.9, y)],
                    c.mix(0.7).filled(),
                )
            }))
            .map_err(err)?;
        if labels {
            a.label(series[i].name.clone())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], c.filled()));
        }
    }
    if labels {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
    }

    // Percentile curve.
    let curves: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|s| {
            (0..=200)
                .map(|i| {
                    let x = MAX_NINES * f64::from(i) / 200.0;
                    let q = 1.0 - 10f64.powf(-x);
                    (x, us(s.hist.value_at_quantile(q)))
                })
                .collect()
        })
        .collect();
    let ytop = series.iter().map(|s| us(s.hist.max())).fold(0.0, f64::max) * 1.05 + 1e-9;
    let mut b = ChartBuilder::on(&right);
    b.margin(15);
    if labels {
        b.caption("latency by percentile", ("sans-serif", 16))
            .x_label_area_size(40)
            .y_label_area_size(55);
    } else {
        b.x_label_area_size(2).y_label_area_size(2);
    }
    let mut chart = b
        .build_cartesian_2d(0.0..MAX_NINES, 0.0..ytop)
        .map_err(err)?;
    let mut mesh = chart.configure_mesh();
    if labels {
        mesh.x_desc("percentile")
            .y_desc("latency (us)")
            .x_labels(6)
            .x_label_formatter(&|x| match x.round() as i32 {
                0 => "0%".into(),
                1 => "90%".into(),
                2 => "99%".into(),
                3 => "99.9%".into(),
                4 => "99.99%".into(),
                5 => "99.999%".into(),
                _ => String::new(),
            });
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(err)?;
    for (i, pts) in curves.into_iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let a = chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))
            .map_err(err)?;
        if labels {
            a.label(series[i].name.clone()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 15, y)], c.stroke_width(2))
            });
        }
    }
    if labels {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
    }
    Ok(())
}
