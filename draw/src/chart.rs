//! Line charts for training curves: one or more panels stacked in one PNG (loss above kNN
//! accuracy, say), each with a title, axis labels, 4–6 tick labels on "nice" values, light grid
//! lines, one colour per series and a legend; text anti-aliased in the embedded font. Nothing
//! here panics on any input (non-finite points are skipped, empty panels get a unit range).

use image::{Rgb, RgbImage};

use crate::text;

/// One named line of a panel.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Name shown in the legend (an empty name leaves only the colour swatch).
    pub label: String,
    /// `(x, y)` points, drawn in the given order; points with a non-finite coordinate are
    /// skipped (the line joins the finite neighbours).
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A series.
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series { label: label.into(), points }
    }
}

/// One plot of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    /// Shown above the plot (may be empty).
    pub title: String,
    /// Under the x axis, with its unit (`epoch`).
    pub x_label: String,
    /// Left of the y axis, reading upwards, with its unit (`top-1 accuracy (%)`).
    pub y_label: String,
    /// The lines.
    pub series: Vec<Series>,
}

impl Panel {
    /// A panel.
    pub fn new(
        title: impl Into<String>,
        x_label: impl Into<String>,
        y_label: impl Into<String>,
        series: Vec<Series>,
    ) -> Self {
        Panel { title: title.into(), x_label: x_label.into(), y_label: y_label.into(), series }
    }
}

/// Chart width in pixels.
pub const WIDTH: u32 = 800;
/// Height of one panel in pixels.
pub const PANEL_HEIGHT: u32 = 340;
/// Height of the chart's title band.
const TITLE_BAND: u32 = 40;
/// Text sizes in pixels.
const TITLE_PX: f32 = 19.0;
const PANEL_TITLE_PX: f32 = 15.0;
const LABEL_PX: f32 = 14.0;
const TICK_PX: f32 = 12.5;
const LEGEND_PX: f32 = 13.0;
/// Widest legend, in pixels (longer labels are cut with "…").
const LEGEND_MAX: f32 = 220.0;
/// Series colours (matplotlib's "tab10"), reused cyclically.
const PALETTE: [[u8; 3]; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];
const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const BLACK: Rgb<u8> = Rgb([0, 0, 0]);
const GREY: Rgb<u8> = Rgb([90, 90, 90]);
const GRID: Rgb<u8> = Rgb([228, 228, 228]);
const AXIS: Rgb<u8> = Rgb([60, 60, 60]);

/// Colour of the `i`-th series.
pub fn series_color(i: usize) -> Rgb<u8> {
    Rgb(PALETTE[i % PALETTE.len()])
}

/// Draws `panels` stacked top to bottom under `title`: [`WIDTH`] wide, [`PANEL_HEIGHT`] per
/// panel plus a title band (no panels: one empty panel).
///
/// Non-finite points are skipped. Without any finite point a panel's axes span `[0, 1]`; a
/// series with a single finite point is drawn as a small square; a zero-width range (e.g. a
/// constant series) is padded by ±10% of its value (±1 around 0).
pub fn line_chart(title: &str, panels: &[Panel]) -> RgbImage {
    let empty = [Panel::new("", "", "", vec![])];
    let panels = if panels.is_empty() { &empty[..] } else { panels };
    let h = TITLE_BAND + PANEL_HEIGHT * panels.len() as u32;
    let mut img = RgbImage::from_pixel(WIDTH, h, WHITE);
    let title = text::fit(title, TITLE_PX, WIDTH as f32 - 16.0);
    text::draw_centred(&mut img, WIDTH as i64 / 2, 10, &title, TITLE_PX, BLACK);
    for (i, p) in panels.iter().enumerate() {
        draw_panel(&mut img, (TITLE_BAND + PANEL_HEIGHT * i as u32) as i64, p);
    }
    img
}

/// Draws one panel in the band of rows `y0 .. y0 + PANEL_HEIGHT`.
fn draw_panel(img: &mut RgbImage, y0: i64, panel: &Panel) {
    let series = &panel.series;
    let finite = |s: &Series| s.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
    let pts: Vec<Vec<(f64, f64)>> = series.iter().map(finite).collect();
    let xs = range(pts.iter().flatten().map(|p| p.0));
    let ys = range(pts.iter().flatten().map(|p| p.1));
    let (xa, ya) = (Axis::new(xs), Axis::new(ys));
    let (x_ticks, y_ticks) = (xa.labelled_ticks(), ya.labelled_ticks());

    // Layout: y label column, y tick labels, plot, legend.
    let w = WIDTH as i64;
    let tick_h = text::line_height(TICK_PX) as i64;
    let label_h = text::line_height(LABEL_PX) as i64;
    let y_tick_w = y_ticks.iter().map(|t| text::width(&t.1, TICK_PX)).fold(0.0f32, f32::max).ceil() as i64;
    let left = 6 + label_h + 8 + y_tick_w + 8;
    let labels: Vec<String> = series.iter().map(|s| text::fit(&s.label, LEGEND_PX, LEGEND_MAX)).collect();
    let show_legend = labels.iter().any(|l| !l.is_empty());
    let legend_w = labels.iter().map(|l| text::width(l, LEGEND_PX)).fold(0.0f32, f32::max).ceil() as i64;
    let legend_w = if show_legend { 34 + legend_w } else { 0 };
    // The last x tick label is centred on the right edge of the plot: keep it inside the image.
    let last_x_tick = x_ticks.last().map_or(0, |t| (text::width(&t.1, TICK_PX) / 2.0).ceil() as i64 + 6);
    let top = y0 + if panel.title.is_empty() { 10 } else { 10 + text::line_height(PANEL_TITLE_PX) as i64 + 4 };
    let bottom = y0 + PANEL_HEIGHT as i64 - (8 + tick_h + 6 + label_h + 8);
    let right = w - (20 + legend_w).max(last_x_tick);
    let plot = Rect { left, top, right, bottom };

    // Grid and ticks.
    for (v, label) in &x_ticks {
        let px = plot.x(*v, &xa);
        vline(img, px, top + 1, bottom - 1, GRID);
        vline(img, px, bottom, bottom + 4, AXIS);
        text::draw_centred(img, px, bottom + 6, label, TICK_PX, BLACK);
    }
    for (v, label) in &y_ticks {
        let py = plot.y(*v, &ya);
        hline(img, left + 1, right - 1, py, GRID);
        hline(img, left - 4, left, py, AXIS);
        let tw = text::width(label, TICK_PX).round() as i64;
        text::draw(img, left - 7 - tw, py - tick_h / 2, label, TICK_PX, BLACK);
    }

    // Series.
    for (i, p) in pts.iter().enumerate() {
        let c = series_color(i);
        let px: Vec<(i64, i64)> = p.iter().map(|&(x, y)| (plot.x(x, &xa), plot.y(y, &ya))).collect();
        if let [(x, y)] = px[..] {
            fill_rect(img, &plot, x - 3, y - 3, x + 3, y + 3, c);
        }
        for seg in px.windows(2) {
            line(img, &plot, seg[0], seg[1], c);
        }
    }

    // Axes box, labels, title.
    hline(img, left, right, top, AXIS);
    hline(img, left, right, bottom, AXIS);
    vline(img, left, top, bottom, AXIS);
    vline(img, right, top, bottom, AXIS);
    let x_label = text::fit(&panel.x_label, LABEL_PX, (right - left) as f32);
    text::draw_centred(img, (left + right) / 2, bottom + 6 + tick_h + 6, &x_label, LABEL_PX, GREY);
    let y_label = text::fit(&panel.y_label, LABEL_PX, (bottom - top) as f32);
    let yl = text::width(&y_label, LABEL_PX).round() as i64;
    text::draw_up(img, 6, (top + bottom) / 2 + yl / 2, &y_label, LABEL_PX, GREY);
    if !panel.title.is_empty() {
        let t = text::fit(&panel.title, PANEL_TITLE_PX, (right - left) as f32);
        text::draw_centred(img, (left + right) / 2, y0 + 8, &t, PANEL_TITLE_PX, BLACK);
    }

    // Legend: swatch and label per series, as many as fit in the plot height.
    if show_legend {
        let x0 = right + 14;
        let row = text::line_height(LEGEND_PX) as i64 + 4;
        for (i, label) in labels.iter().enumerate() {
            let y = top + 2 + i as i64 * row;
            if y + row > bottom {
                break;
            }
            let c = series_color(i);
            for dy in -1..=1 {
                hline(img, x0, x0 + 18, y + row / 2 + dy - 2, c);
            }
            text::draw(img, x0 + 24, y, label, LEGEND_PX, BLACK);
        }
    }
}

/// Smallest and largest value, or `None` without values.
fn range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// An axis: its displayed range and tick values.
struct Axis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
    /// Distance between ticks (used to format them).
    step: f64,
}

impl Axis {
    /// The axis for data spanning `range` (finite values): padded when degenerate, then widened to multiples of
    /// a nice tick step giving 4–6 ticks where possible.
    fn new(range: Option<(f64, f64)>) -> Axis {
        let (lo, hi) = range.unwrap_or((0.0, 1.0));
        let (lo, hi) = if hi - lo > 1e-9 * lo.abs().max(hi.abs()) {
            (lo, hi)
        } else {
            let c = lo / 2.0 + hi / 2.0;
            let pad = if c == 0.0 { 1.0 } else { c.abs() * 0.1 };
            (c - pad, c + pad)
        };
        Axis::nice(lo, hi).unwrap_or_else(|| {
            // Spans too large (or small) for nice steps: five evenly spaced ticks over the data range.
            let ticks: Vec<f64> = (0..5).map(|i| lo + (hi / 4.0 - lo / 4.0) * i as f64).collect();
            Axis { lo, hi, step: (hi / 4.0 - lo / 4.0).abs(), ticks }
        })
    }

    /// The ticks with their labels (see [`format_tick`]).
    fn labelled_ticks(&self) -> Vec<(f64, String)> {
        let scale = self.ticks.iter().fold(0.0f64, |m, t| m.max(t.abs()));
        self.ticks.iter().map(|&v| (v, format_tick(v, self.step, scale))).collect()
    }

    /// Ticks at multiples of `m · 10^e` (m ∈ {1, 2, 2.5, 5}), preferring 4–6 ticks; `None` when the span is not a
    /// normal finite number.
    fn nice(lo: f64, hi: f64) -> Option<Axis> {
        let span = hi - lo;
        if !span.is_normal() || span <= 0.0 {
            return None;
        }
        let mag = 10f64.powi(span.log10().floor() as i32);
        let mut best: Option<(f64, f64, f64, f64)> = None; // (score, step, first, last)
        for e in [0.01, 0.1, 1.0, 10.0] {
            for m in [1.0, 2.0, 2.5, 5.0] {
                let step = m * mag * e;
                let (a, b) = ((lo / step).floor(), (hi / step).ceil());
                let count = b - a + 1.0;
                if !step.is_normal() || !count.is_finite() || count > 12.0 {
                    continue;
                }
                let score = if count < 4.0 {
                    4.0 - count
                } else if count > 6.0 {
                    count - 6.0
                } else {
                    0.0
                };
                if best.is_none_or(|b| score < b.0) {
                    best = Some((score, step, a, b));
                }
            }
        }
        let (_, step, a, b) = best?;
        let ticks: Vec<f64> = (0..=(b - a) as i64).map(|i| (a + i as f64) * step).collect();
        let (lo, hi) = (a * step, b * step);
        (lo.is_finite() && hi.is_finite() && hi > lo).then_some(Axis { lo, hi, ticks, step })
    }
}

/// Compact text for tick value `v` on an axis whose ticks are `step` apart and reach `scale` in absolute value
/// (the notation is chosen per axis, so that all its labels match): fixed decimals (as many as the step needs)
/// when `scale` is in `[0.001, 100 000)`, an SI suffix `k`/`M`/`G`/`T` up to 10^15, scientific notation otherwise.
fn format_tick(v: f64, step: f64, scale: f64) -> String {
    let zero = v.abs() <= step.abs() * 1e-9;
    if (1e-3..1e5).contains(&scale) {
        return fixed(if zero { 0.0 } else { v }, step);
    }
    if zero {
        return "0".to_string();
    }
    if (1e5..1e15).contains(&scale) {
        let units = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")];
        let (div, suffix) = units.into_iter().find(|&(d, _)| scale >= d).unwrap_or((1e3, "k"));
        return format!("{}{suffix}", fixed(v / div, step / div));
    }
    for p in 0..=4 {
        let s = format!("{v:.p$e}");
        if s.parse::<f64>().is_ok_and(|r| (r - v).abs() <= step.abs() * 1e-6) {
            return s;
        }
    }
    format!("{v:.4e}")
}

/// `v` with the fewest decimals (at most 6) that represent multiples of `step` exactly.
fn fixed(v: f64, step: f64) -> String {
    let step = step.abs();
    let decimals = (0..=6)
        .find(|&d| {
            let scaled = step * 10f64.powi(d);
            (scaled - scaled.round()).abs() <= 1e-6 * scaled.max(1.0)
        })
        .unwrap_or(6) as usize;
    let s = format!("{v:.decimals$}");
    if s.starts_with('-') && s[1..].chars().all(|c| c == '0' || c == '.') {
        s[1..].to_string()
    } else {
        s
    }
}

/// The plot area in pixels (inclusive edges).
struct Rect {
    left: i64,
    top: i64,
    right: i64,
    bottom: i64,
}

impl Rect {
    /// Pixel column of data value `v` on axis `a`.
    fn x(&self, v: f64, a: &Axis) -> i64 {
        self.left + (frac(v, a) * (self.right - self.left) as f64).round() as i64
    }
    /// Pixel row of data value `v` on axis `a` (up is larger).
    fn y(&self, v: f64, a: &Axis) -> i64 {
        self.bottom - (frac(v, a) * (self.bottom - self.top) as f64).round() as i64
    }
    fn contains(&self, x: i64, y: i64) -> bool {
        (self.left..=self.right).contains(&x) && (self.top..=self.bottom).contains(&y)
    }
}

/// Position of `v` along axis `a` in `[0, 1]` (halved operands so that huge ranges do not overflow).
fn frac(v: f64, a: &Axis) -> f64 {
    let f = (v / 2.0 - a.lo / 2.0) / (a.hi / 2.0 - a.lo / 2.0);
    if f.is_finite() {
        f.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// Sets a pixel if it lies inside the image.
fn put(img: &mut RgbImage, x: i64, y: i64, c: Rgb<u8>) {
    if (0..img.width() as i64).contains(&x) && (0..img.height() as i64).contains(&y) {
        img.put_pixel(x as u32, y as u32, c);
    }
}

fn hline(img: &mut RgbImage, x0: i64, x1: i64, y: i64, c: Rgb<u8>) {
    for x in x0.min(x1)..=x0.max(x1) {
        put(img, x, y, c);
    }
}

fn vline(img: &mut RgbImage, x: i64, y0: i64, y1: i64, c: Rgb<u8>) {
    for y in y0.min(y1)..=y0.max(y1) {
        put(img, x, y, c);
    }
}

/// Fills a rectangle (inclusive corners), clipped to the plot area.
fn fill_rect(img: &mut RgbImage, clip: &Rect, x0: i64, y0: i64, x1: i64, y1: i64, c: Rgb<u8>) {
    for y in y0..=y1 {
        for x in x0..=x1 {
            if clip.contains(x, y) {
                put(img, x, y, c);
            }
        }
    }
}

/// A 2-pixel-wide Bresenham line clipped to the plot area.
fn line(img: &mut RgbImage, clip: &Rect, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: Rgb<u8>) {
    let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
    let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
    let (mut x, mut y, mut err) = (x0, y0, dx + dy);
    // Thicken across the main direction of the line.
    let (tx, ty) = if dx >= -dy { (0, 1) } else { (1, 0) };
    loop {
        for (px, py) in [(x, y), (x + tx, y + ty)] {
            if clip.contains(px, py) {
                put(img, px, py, c);
            }
        }
        if x == x1 && y == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x += sx;
        }
        if e2 <= dx {
            err += dx;
            y += sy;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(img: &RgbImage, c: Rgb<u8>) -> usize {
        img.pixels().filter(|&&p| p == c).count()
    }

    fn s(label: &str, points: &[(f64, f64)]) -> Series {
        Series { label: label.to_string(), points: points.to_vec() }
    }

    #[test]
    fn draws_lines_in_series_colours() {
        let loss: Vec<(f64, f64)> = (0..50).map(|e| (e as f64, 2.0 * (-0.05 * e as f64).exp())).collect();
        let acc: Vec<(f64, f64)> = (0..50).map(|e| (e as f64, 0.1 + 0.015 * e as f64)).collect();
        let img = line_chart(
            "SimSiam on CIFAR-10",
            &[Panel::new("", "epoch", "value", vec![s("loss", &loss), s("kNN acc", &acc)])],
        );
        assert_eq!(img.dimensions(), (WIDTH, TITLE_BAND + PANEL_HEIGHT));
        // Lines and legend swatches of both series; the legend alone is 30 pixels.
        assert!(count(&img, series_color(0)) > 200, "{}", count(&img, series_color(0)));
        assert!(count(&img, series_color(1)) > 200);
        assert_eq!(count(&img, series_color(2)), 0);
        // Title text is drawn in black near the top.
        assert!((0..30).any(|y| (0..WIDTH).any(|x| img.get_pixel(x, y).0[0] < 60)));
    }

    #[test]
    fn degenerate_inputs_do_not_panic() {
        let nan = f64::NAN;
        let cases: Vec<Vec<Series>> = vec![
            vec![],
            vec![s("", &[])],
            vec![s("one", &[(3.0, 4.0)])],
            vec![s("nan", &[(nan, 1.0), (1.0, nan), (f64::INFINITY, 2.0)])],
            vec![s("const", &[(0.0, 5.0), (1.0, 5.0), (2.0, 5.0)])],
            vec![s("zero", &[(0.0, 0.0), (0.0, 0.0)])],
            vec![s("huge", &[(-f64::MAX, f64::MAX), (f64::MAX, -f64::MAX), (0.0, f64::MIN_POSITIVE)])],
            vec![s("tiny", &[(1e-300, 1e-310), (2e-300, 3e-310)])],
            vec![s("gap", &[(0.0, 1.0), (1.0, nan), (2.0, 3.0)]), s(&"x".repeat(500), &[(1.0, 1.0)])],
        ];
        for series in &cases {
            let img = line_chart(&"t".repeat(200), &[Panel::new("t", "ünïcödé ≠ λ 中", "", series.clone())]);
            assert_eq!(img.dimensions(), (WIDTH, TITLE_BAND + PANEL_HEIGHT));
        }
        // A single point is drawn as a marker; a constant series as a horizontal line.
        let one = |series: Vec<Series>| line_chart("", &[Panel::new("", "", "", series)]);
        let img = one(vec![s("one", &[(3.0, 4.0)])]);
        assert!(count(&img, series_color(0)) >= 25);
        let img = one(vec![s("c", &[(0.0, 5.0), (10.0, 5.0)])]);
        // The y axis is padded to [4.5, 5.5], so the line runs through the middle of the plot.
        let plot_rows: Vec<u32> =
            (0..img.height()).filter(|&y| (0..WIDTH).filter(|&x| *img.get_pixel(x, y) == AXIS).count() > 200).collect();
        let (top, bottom) = (plot_rows[0], *plot_rows.last().unwrap());
        let row =
            (0..img.height()).max_by_key(|&y| (0..WIDTH).filter(|&x| *img.get_pixel(x, y) == series_color(0)).count());
        let mid = (top + bottom) / 2;
        assert!(row.is_some_and(|y| y.abs_diff(mid) <= 2), "{row:?} vs {mid}");
        // 100 series: colours cycle, the legend is cut to the plot height.
        let many: Vec<Series> = (0..100).map(|i| s(&format!("s{i}"), &[(0.0, i as f64), (1.0, 0.0)])).collect();
        line_chart("many", &[Panel::new("", "x", "y", many)]);
        // No panels: one empty one.
        assert_eq!(line_chart("", &[]).dimensions(), (WIDTH, TITLE_BAND + PANEL_HEIGHT));
    }

    #[test]
    fn nice_ticks() {
        for (lo, hi) in [(0.0, 1.0), (0.0, 0.93), (-3.0, 17.0), (1e-7, 3e-7), (100.0, 100.5), (0.0, 49.0), (2.0, 2.0)] {
            let a = Axis::new(Some((lo, hi)));
            assert!((3..=7).contains(&a.ticks.len()), "{lo} {hi}: {:?}", a.ticks);
            assert!(a.lo <= lo && a.hi >= hi, "{lo} {hi}");
            assert!(a.ticks.windows(2).all(|w| w[0] < w[1]));
        }
        let labels = |a: Axis| a.labelled_ticks().into_iter().map(|t| t.1).collect::<Vec<_>>();
        assert_eq!(labels(Axis::new(Some((0.0, 0.93)))), ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
        assert_eq!(labels(Axis::new(Some((0.0, 140_000.0)))), ["0", "50k", "100k", "150k"]);
        assert_eq!(labels(Axis::new(Some((1.0, 9.0)))), ["0", "2", "4", "6", "8", "10"]);
        assert_eq!(labels(Axis::new(Some((0.0, 1e-4)))), ["0", "2e-5", "4e-5", "6e-5", "8e-5", "1e-4"]);
        // A constant series around 5 is padded to [4.5, 5.5].
        let a = Axis::new(Some((5.0, 5.0)));
        assert!(a.lo <= 4.5 && a.hi >= 5.5 && a.hi <= 6.0);
        assert_eq!(format_tick(250_000.0, 50_000.0, 250_000.0), "250k");
        assert_eq!(format_tick(1.5e6, 5e5, 2e6), "1.5M");
        assert_eq!(format_tick(2.5e-5, 5e-6, 3e-5), "2.5e-5");
        assert_eq!(format_tick(0.25, 0.25, 1.0), "0.25");
        assert_eq!(format_tick(-0.5, 0.5, 1.0), "-0.5");
        assert_eq!(format_tick(-0.0, 0.5, 1.0), "0.0");
        assert_eq!(format_tick(1e-17, 0.1, 1.0), "0.0");
        assert_eq!(format_tick(1e-17, 0.1, 1e6), "0");
        assert_eq!(format_tick(40.0, 10.0, 50.0), "40");
    }

    #[test]
    fn encodes_a_png_that_decodes_to_the_same_pixels() {
        let img = line_chart("loss", &[Panel::new("", "epoch", "loss", vec![s("train", &[(0.0, 1.0), (1.0, 0.5)])])]);
        let png = crate::encode_png(&img).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let back = image::load_from_memory(&png).unwrap().into_rgb8();
        assert_eq!(back, img);
    }
}
