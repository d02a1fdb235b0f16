//! Charts for BENCHMARKS.md, written as SVG by `plotters` (no font files needed: the text
//! is SVG text, drawn by whatever shows the file). Each chart is a function of its data.

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use std::path::Path;

/// One bar per label, values on the y axis from zero.
pub struct Bars<'a> {
    pub title: &'a str,
    pub y_label: &'a str,
    pub bars: Vec<(String, f64)>,
}

/// One line per series of (x, y) points.
pub struct Lines<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

const SIZE: (u32, u32) = (900, 480);
const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plotting: {e:?}")
}

pub fn bars(path: &Path, chart: &Bars) -> Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let n = chart.bars.len();
    let top = chart.bars.iter().map(|b| b.1).fold(0.0, f64::max) * 1.15 + 1e-9;
    let labels: Vec<String> = chart.bars.iter().map(|b| b.0.clone()).collect();
    let mut c = ChartBuilder::on(&root)
        .caption(chart.title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(90)
        .y_label_area_size(70)
        .build_cartesian_2d((0..n).into_segmented(), 0.0..top)
        .map_err(err)?;
    c.configure_mesh()
        .disable_x_mesh()
        .y_desc(chart.y_label)
        .x_labels(n)
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .x_label_style(("sans-serif", 12).into_font().transform(FontTransform::Rotate90))
        .draw()
        .map_err(err)?;
    c.draw_series(chart.bars.iter().enumerate().map(|(i, (_, v))| {
        let color = PALETTE[i % PALETTE.len()];
        let mut bar = Rectangle::new(
            [(SegmentValue::Exact(i), 0.0), (SegmentValue::Exact(i + 1), *v)],
            color.filled(),
        );
        bar.set_margin(0, 0, 8, 8);
        bar
    }))
    .map_err(err)?;
    c.draw_series(chart.bars.iter().enumerate().map(|(i, (_, v))| {
        Text::new(
            format!("{v:.0}"),
            (SegmentValue::CenterOf(i), *v + top * 0.02),
            ("sans-serif", 13),
        )
    }))
    .map_err(err)?;
    root.present().map_err(err)
}

pub fn lines(path: &Path, chart: &Lines) -> Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let pts = chart.series.iter().flat_map(|s| s.1.iter());
    let (x_max, y_max) = pts.fold((0.0f64, 0.0f64), |(x, y), p| (x.max(p.0), y.max(p.1)));
    let mut c = ChartBuilder::on(&root)
        .caption(chart.title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max * 1.05 + 1e-9, 0.0..y_max * 1.15 + 1e-9)
        .map_err(err)?;
    c.configure_mesh().x_desc(chart.x_label).y_desc(chart.y_label).draw().map_err(err)?;
    for (i, (name, points)) in chart.series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        c.draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))
            .map_err(err)?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        c.draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled()))).map_err(err)?;
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}
