//! One SVG per section. Most sections draw a horizontal bar per row (its
//! median, with a line from its min to its max), rows grouped by variant,
//! one colour per variant, and one panel per unit; the value axis is
//! logarithmic where the largest value is more than 20 times the smallest.
//! A payload sweep draws a line per mechanism over the payload sizes
//! instead (log–log, a dot at each median and a bar from min to max).

use std::path::Path;

use plotters::coord::ranged1d::{AsRangedCoord, SegmentValue, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::model::{parse_size, size_label, PlotKind};
use crate::report::{by_unit, num, plot_name, Row, SectionReport};

/// Where a linear axis is not enough.
const LOG_ABOVE: f64 = 20.0;
const WIDTH: u32 = 1000;
const ROW_HEIGHT: u32 = 26;
/// A panel's caption and axis, in pixels.
const PANEL_EXTRA: u32 = 90;
/// Pixels per character of a label, roughly, for sizing the label area.
const CHAR_WIDTH: u32 = 7;

/// Writes `<dir>/<section>.svg`; does nothing for a section without rows.
pub fn write(dir: &Path, section: &SectionReport) -> Result<(), String> {
    if section.rows.is_empty() {
        return Ok(());
    }
    match section.plot {
        PlotKind::Bars => bars(dir, section),
        PlotKind::SizeSweep => sweep(dir, section),
    }
}

/// Ten colours that stay apart on white (matplotlib's "tab10").
const TAB10: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// The `i`th colour of a plot.
fn colour(i: usize) -> RGBAColor {
    match TAB10.get(i) {
        Some(c) => c.mix(0.95),
        None => Palette99::pick(i).mix(0.9),
    }
}

/// Height of a sweep plot.
const SWEEP_HEIGHT: u32 = 720;

/// One line per mechanism: its median at each payload size it was measured
/// at, on log–log axes. Rows whose variant is not a size are left out.
fn sweep(dir: &Path, section: &SectionReport) -> Result<(), String> {
    // (mechanism, unit, [(bytes, median, min, max)]), in order of first appearance.
    type Series = (String, &'static str, Vec<(f64, f64, f64, f64)>);
    let mut series: Vec<Series> = Vec::new();
    for r in &section.rows {
        let Some(bytes) = parse_size(&r.variant) else { continue };
        let point = (bytes as f64, r.median, r.min, r.max);
        match series.iter_mut().find(|s| s.0 == r.mechanism) {
            Some(s) => s.2.push(point),
            None => series.push((r.mechanism.clone(), r.unit, vec![point])),
        }
    }
    if series.is_empty() {
        return Ok(());
    }
    for s in &mut series {
        s.2.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let points = || series.iter().flat_map(|s| s.2.iter());
    let (x0, x1) = (points().map(|p| p.0).fold(f64::INFINITY, f64::min), points().map(|p| p.0).fold(0.0, f64::max));
    let (y0, y1) = (points().map(|p| p.2).fold(f64::INFINITY, f64::min), points().map(|p| p.3).fold(0.0, f64::max));
    let unit = series[0].1;
    let path = dir.join(plot_name(section.slug));
    let err = |e: String| format!("plot {}: {e}", path.display());
    let root = SVGBackend::new(&path, (WIDTH, SWEEP_HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(format!("{e:?}")))?;
    let ticks: Vec<f64> = {
        let mut t = Vec::new();
        let mut b = 16.0;
        while b <= x1 * 1.01 {
            if b >= x0 * 0.99 {
                t.push(b);
            }
            b *= 4.0;
        }
        t
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{} — {unit} (log–log, higher is better)", section.title), ("sans-serif", 16))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((x0 / 1.6..x1 * 1.6).log_scale().with_key_points(ticks), (y0 / 2.0..y1 * 2.0).log_scale())
        .map_err(|e| err(format!("{e:?}")))?;
    chart
        .configure_mesh()
        .x_desc("payload per message")
        .y_desc(unit)
        .x_label_formatter(&|v| size_label(v.round() as usize))
        .y_label_formatter(&|v| num(*v))
        .draw()
        .map_err(|e| err(format!("{e:?}")))?;
    for (i, (name, _, pts)) in series.iter().enumerate() {
        let colour = colour(i);
        let line = PathElement::new(pts.iter().map(|p| (p.0, p.1)).collect::<Vec<_>>(), colour.stroke_width(2));
        chart
            .draw_series([line])
            .map_err(|e| err(format!("{e:?}")))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        chart
            .draw_series(pts.iter().map(|p| Circle::new((p.0, p.1), 3, colour.filled())))
            .map_err(|e| err(format!("{e:?}")))?;
        chart
            .draw_series(pts.iter().map(|p| PathElement::new(vec![(p.0, p.2), (p.0, p.3)], colour.stroke_width(1))))
            .map_err(|e| err(format!("{e:?}")))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 12))
        .draw()
        .map_err(|e| err(format!("{e:?}")))?;
    root.present().map_err(|e| err(format!("{e:?}")))
}

/// A bar per row, one panel per unit.
fn bars(dir: &Path, section: &SectionReport) -> Result<(), String> {
    let panels = by_unit(&section.rows);
    let heights: Vec<u32> = panels.values().map(|rows| rows.len() as u32 * ROW_HEIGHT + PANEL_EXTRA).collect();
    let path = dir.join(plot_name(section.slug));
    let root = SVGBackend::new(&path, (WIDTH, heights.iter().sum())).into_drawing_area();
    root.fill(&WHITE).map_err(|e| format!("plot {}: {e:?}", path.display()))?;
    let mut rest = root.clone();
    for ((unit, rows), height) in panels.iter().zip(&heights) {
        let (area, below) = rest.split_vertically(*height);
        rest = below;
        let better = if rows[0].higher_is_better { "higher is better" } else { "lower is better" };
        let caption = format!("{} — {unit}, {better}", section.title);
        panel(&area, &caption, rows).map_err(|e| format!("plot {}: {e}", path.display()))?;
    }
    root.present().map_err(|e| format!("plot {}: {e:?}", path.display()))
}

/// A row's label on the axis.
fn label(r: &Row) -> String {
    let floor = if r.is_floor { " (floor)" } else { "" };
    if r.variant.is_empty() {
        format!("{}{floor}", r.mechanism)
    } else {
        format!("{}{floor} [{}]", r.mechanism, r.variant)
    }
}

/// Draws one unit's rows, choosing the axis.
fn panel(area: &DrawingArea<SVGBackend<'_>, Shift>, caption: &str, rows: &[&Row]) -> Result<(), String> {
    let lo = rows.iter().map(|r| r.min).fold(f64::INFINITY, f64::min);
    let hi = rows.iter().map(|r| r.max).fold(0.0, f64::max);
    if lo > 0.0 && hi / lo > LOG_ABOVE {
        // Room on the right for the value labels.
        let (start, end) = (lo / 2.0, hi * 4.0);
        draw(area, &format!("{caption} (log scale)"), (start..end).log_scale(), start, rows)
    } else {
        draw(area, caption, 0.0..hi * 1.3, 0.0, rows)
    }
}

fn draw<X>(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    caption: &str,
    x: X,
    x_start: f64,
    rows: &[&Row],
) -> Result<(), String>
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    let err = |e: DrawingAreaErrorKind<_>| format!("{e:?}");
    let labels: Vec<String> = rows.iter().map(|r| label(r)).collect();
    let widest = labels.iter().map(|l| l.chars().count() as u32).max().unwrap_or(10);
    let mut variants: Vec<&str> = Vec::new();
    for r in rows {
        if !variants.contains(&r.variant.as_str()) {
            variants.push(&r.variant);
        }
    }
    let n = rows.len() as i32;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(widest * CHAR_WIDTH + 16)
        // 0..n-1 makes n segments, one per row.
        .build_cartesian_2d(x, (0..n - 1).into_segmented())
        .map_err(err)?;
    // Row i is drawn in segment n-1-i, so the first row is on top.
    let at = |i: usize| n - 1 - i as i32;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(rows.len() + 1)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(s) if (0..n).contains(s) => labels[(n - 1 - s) as usize].clone(),
            _ => String::new(),
        })
        .x_label_formatter(&|v| num(*v))
        .draw()
        .map_err(err)?;
    for (i, r) in rows.iter().enumerate() {
        let colour = colour(variants.iter().position(|v| *v == r.variant).unwrap_or(0));
        let (y0, y1) = (SegmentValue::Exact(at(i)), SegmentValue::Exact(at(i) + 1));
        let mut bar = Rectangle::new([(x_start, y0), (r.median, y1)], colour.filled());
        bar.set_margin(4, 4, 0, 0);
        let centre = SegmentValue::CenterOf(at(i));
        chart.draw_series([bar]).map_err(err)?;
        chart
            .draw_series([PathElement::new(
                vec![(r.min, centre.clone()), (r.max, centre.clone())],
                BLACK.stroke_width(1),
            )])
            .map_err(err)?;
        let text = format!("{} {}", num(r.median), r.unit);
        let style = ("sans-serif", 12).into_font().into_text_style(area).pos(Pos::new(HPos::Left, VPos::Center));
        let value = EmptyElement::at((r.max, centre)) + Text::new(text, (6, 0), style);
        chart.draw_series([value]).map_err(err)?;
    }
    Ok(())
}
