//! Charts for BENCHMARKS.md, written as SVG by `plotters` (no font files needed: the text
//! is SVG text, drawn by whatever shows the file). Each chart is a function of its data.

use anyhow::{anyhow, Result};
use plotters::{
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};
use std::path::Path;

/// One bar per label, values from zero.
pub struct Bars<'a> {
    pub title: &'a str,
    /// What the values are (the value axis' name).
    pub x_label: &'a str,
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

/// Horizontal bars, the first label on top, each bar's value written at its end.
pub fn bars(path: &Path, chart: &Bars) -> Result<()> {
    let n = chart.bars.len();
    if n == 0 {
        return Ok(());
    }
    let height = 90 + 40 * n as u32;
    let root = SVGBackend::new(path, (SIZE.0, height)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let right = chart.bars.iter().map(|b| b.1).fold(0.0, f64::max) * 1.15 + 1e-9;
    // Row i of the chart (from the bottom) shows bar n - 1 - i.
    let label = |row: usize| chart.bars.get(n.wrapping_sub(row + 1)).map(|b| b.0.clone());
    let mut c = ChartBuilder::on(&root)
        .caption(chart.title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(250)
        .build_cartesian_2d(0.0..right, (0..n - 1).into_segmented())
        .map_err(err)?;
    c.configure_mesh()
        .disable_y_mesh()
        .light_line_style(TRANSPARENT)
        .x_desc(chart.x_label)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_labels(n)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(row) => label(*row).unwrap_or_default(),
            _ => String::new(),
        })
        .y_label_style(("sans-serif", 14))
        .draw()
        .map_err(err)?;
    c.draw_series(chart.bars.iter().enumerate().map(|(i, (_, v))| {
        let row = n - 1 - i;
        let mut bar = Rectangle::new(
            [(0.0, SegmentValue::Exact(row)), (*v, SegmentValue::Exact(row + 1))],
            PALETTE[i % PALETTE.len()].filled(),
        );
        bar.set_margin(6, 6, 0, 0);
        bar
    }))
    .map_err(err)?;
    let value_style = TextStyle::from(("sans-serif", 14)).pos(Pos::new(HPos::Left, VPos::Center));
    c.draw_series(chart.bars.iter().enumerate().map(|(i, (_, v))| {
        let at = (*v + right * 0.01, SegmentValue::CenterOf(n - 1 - i));
        Text::new(format!("{v:.0}"), at, value_style.clone())
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
        // Upper left: lines that grow do so to the right, where the legend would hide them.
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both charts render (no font files needed) with their labels and values as text.
    #[test]
    fn charts_render_with_their_text() {
        let dir = tempfile::Builder::new().prefix("fwt-plot-").tempdir().unwrap();
        let bars_path = dir.path().join("bars.svg");
        let data = vec![("ceiling".to_string(), 98.0), ("forwarder xdp".to_string(), 172.4)];
        bars(&bars_path, &Bars { title: "t", x_label: "ns", bars: data }).unwrap();
        let svg = std::fs::read_to_string(&bars_path).unwrap();
        for want in ["forwarder xdp", "ceiling", "172", "98"] {
            assert!(svg.contains(want), "{want} missing from the bar chart");
        }
        let lines_path = dir.path().join("lines.svg");
        let series = vec![("xdp".to_string(), vec![(1e3, 170.0), (1e5, 190.0), (1e6, 240.0)])];
        lines(&lines_path, &Lines { title: "t", x_label: "flows", y_label: "ns", series }).unwrap();
        assert!(std::fs::read_to_string(&lines_path).unwrap().contains("xdp"));
    }
}
