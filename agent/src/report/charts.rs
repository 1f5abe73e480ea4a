//! One chart as an SVG file, drawn with `plotters`: a dot per trial against validation accuracy,
//! and a highlighted line (best so far, Pareto front).

use std::path::Path;

use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::format::fmt_num;
use super::{Plot, ReportError};
use crate::error_context::Context;

/// What one chart shows; its y axis is validation accuracy.
pub(crate) struct Chart {
    pub(crate) title: String,
    pub(crate) x_desc: String,
    pub(crate) log_x: bool,
    /// One dot per trial.
    pub(crate) points: Vec<(f64, f64)>,
    /// A highlighted line (best so far, Pareto front); empty for none.
    pub(crate) line: Vec<(f64, f64)>,
    pub(crate) line_label: String,
}

const WIDTH: u32 = 860;
const HEIGHT: u32 = 520;
const DOT: RGBColor = RGBColor(90, 110, 140);
const LINE: RGBColor = RGBColor(214, 39, 40);
const Y_DESC: &str = "validation accuracy (%)";
const POINTS_LABEL: &str = "trial";

/// Draw `chart` into `out/{key}.svg`.
pub(crate) fn plot(out: &Path, key: &str, caption: &str, chart: &Chart) -> Result<Plot, ReportError> {
    let svg = render(chart).map_err(|reason| ReportError::Plot { key: key.to_string(), reason })?;
    let path = out.join(format!("{key}.svg"));
    std::fs::write(&path, &svg).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Plot {
        key: key.to_string(),
        caption: caption.to_string(),
        path,
        svg,
    })
}

/// A step line through `pts` (x ascending): flat until the next point's x, then up to its y.
pub(crate) fn step(pts: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(pts.len() * 2);
    for (i, &(x, y)) in pts.iter().enumerate() {
        if i > 0 {
            out.push((x, out.last().map_or(y, |&(_, py)| py)));
        }
        out.push((x, y));
    }
    out
}

fn padded(lo: f64, hi: f64, log: bool) -> (f64, f64) {
    if log {
        return (lo / 1.5, hi * 1.5);
    }
    let span = hi - lo;
    if span <= 0.0 && lo == 0.0 {
        return (0.0, 1.0);
    }
    let pad = if span > 0.0 { span * 0.05 } else { lo.abs().max(1.0) * 0.05 };
    // Counts, seconds and sizes start at 0: no negative padding below them.
    let floor = if lo >= 0.0 { 0.0 } else { f64::NEG_INFINITY };
    ((lo - pad).max(floor), hi + pad)
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn render(c: &Chart) -> Result<String, String> {
    let all = c.points.iter().chain(&c.line);
    let (xl, xh, yl, yh) = all.fold(
        (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY),
        |(a, b, cc, d), &(x, y)| (a.min(x), b.max(x), cc.min(y), d.max(y)),
    );
    let (x0, x1) = padded(xl, xh, c.log_x);
    let (y0, y1) = padded(yl, yh, false);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut builder = ChartBuilder::on(&root);
        builder
            .caption(&c.title, ("sans-serif", 20))
            .margin(18)
            .x_label_area_size(48)
            .y_label_area_size(64);
        if c.log_x {
            let mut chart = builder.build_cartesian_2d((x0..x1).log_scale(), y0..y1).map_err(err)?;
            draw_body(&mut chart, c)?;
        } else {
            let mut chart = builder.build_cartesian_2d(x0..x1, y0..y1).map_err(err)?;
            draw_body(&mut chart, c)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

fn draw_body<'a, 'b: 'a, X>(chart: &mut ChartContext<'a, SVGBackend<'b>, Cartesian2d<X, RangedCoordf64>>, c: &Chart) -> Result<(), String>
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc(c.x_desc.as_str())
        .y_desc(Y_DESC)
        .x_label_formatter(&|v| fmt_num(*v, 3))
        .y_label_formatter(&|v| fmt_num(*v, 3))
        .light_line_style(RGBColor(238, 238, 238))
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 15))
        .draw()
        .map_err(err)?;
    chart
        .draw_series(c.points.iter().map(|&(x, y)| Circle::new((x, y), 3, DOT.mix(0.75).filled())))
        .map_err(err)?
        .label(POINTS_LABEL)
        .legend(|(x, y)| Circle::new((x + 10, y), 3, DOT.filled()));
    if !c.line.is_empty() {
        draw_line(chart, c)?;
    }
    Ok(())
}

/// The highlighted line and the legend.
fn draw_line<'a, 'b: 'a, X>(chart: &mut ChartContext<'a, SVGBackend<'b>, Cartesian2d<X, RangedCoordf64>>, c: &Chart) -> Result<(), String>
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .draw_series(LineSeries::new(c.line.iter().copied(), LINE.stroke_width(2)))
        .map_err(err)?
        .label(c.line_label.as_str())
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], LINE.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    Ok(())
}
