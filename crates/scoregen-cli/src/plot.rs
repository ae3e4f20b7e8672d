//! Plot output of the `scoregen` command line: pair plots of samples, grids of
//! greyscale images and line plots of convergence curves, written as PNG or SVG.
//!
//! Plain data in, files out: the functions do no numerics beyond histograms and
//! axis ranges. Every file is first rendered to a temporary file in the target
//! directory and renamed into place at the end, so a failed call leaves no
//! partial file behind. Errors are one-line messages.
//!
//! Text is set in DejaVu Sans, embedded in the binary (see
//! `assets/DejaVu-LICENSE.txt`) and registered with plotters' `ab_glyph` font
//! support by [`register_font`].

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;

/// Font family name under which the embedded font is registered.
const TEXT_GREY: RGBColor = RGBColor(80, 80, 80);
const FONT: &str = "sans-serif";
static FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Most points per series drawn in the scatter of a two-dimensional plot.
const MAX_SCATTER_POINTS: usize = 5000;
/// Most points per series drawn in each off-diagonal panel of a pair-plot grid
/// (panels are small; more points only saturate them and bloat SVG files).
const MAX_GRID_POINTS: usize = 2500;

/// Colour-blind-friendly qualitative palette (Tableau 10).
const PALETTE: [RGBColor; 10] = [
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

const GRID_LINE: RGBAColor = RGBAColor(0, 0, 0, 0.09);
const AXIS_LINE: RGBAColor = RGBAColor(0, 0, 0, 0.75);

fn palette(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Registers the embedded DejaVu Sans as plotters' `sans-serif` font.
/// Idempotent; every plotting function calls it.
pub fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES).is_err() {
            panic!("the embedded DejaVuSans.ttf is not a valid TrueType font");
        }
    });
}

/// One named point cloud for [`pair_plot`].
pub struct Series<'a> {
    /// Legend label.
    pub label: &'a str,
    /// Points, row-major `[n, d]`.
    pub data: &'a [f64],
    /// Dimension of each point.
    pub d: usize,
}

impl Series<'_> {
    fn rows(&self) -> usize {
        self.data.len() / self.d
    }

    /// Coordinate `j` of every point.
    fn column(&self, j: usize) -> impl Iterator<Item = f64> + '_ {
        self.data.iter().skip(j).step_by(self.d).copied()
    }

    /// Indices of at most `cap` points: every k-th point, deterministic.
    fn subsample(&self, cap: usize) -> impl Iterator<Item = usize> {
        let n = self.rows();
        let k = n.div_ceil(cap.max(1)).max(1);
        (0..n).step_by(k)
    }

    fn at(&self, i: usize, j: usize) -> f64 {
        self.data[i * self.d + j]
    }
}

/// Plots samples: overlaid density histograms for `d == 1`; a scatter with
/// marginal histograms for `d == 2`; a pair-plot grid (scatters off the
/// diagonal, histograms on it) over the first `min(d, max_dims)` coordinates
/// for `d > 2`. One colour per series, shared robust axis ranges (0.5%–99.5%
/// quantiles of all series together, padded by 5%). Writes PNG or SVG,
/// chosen by the extension of `path`.
pub fn pair_plot(path: &Path, series: &[Series], title: &str, max_dims: usize) -> Result<(), String> {
    let format = OutputFormat::of(path)?;
    let d = validate_series(series)?;
    let m = d.min(max_dims.max(1));
    let title = if m < d {
        format!("{title} (first {m} of {d} coordinates)")
    } else {
        title.to_string()
    };
    let figure = PairFigure {
        series,
        title: &title,
        m,
    };
    let size = match m {
        1 => (900, 650),
        2 => (900, 900),
        _ => {
            let side = (170 * m as u32 + 120).clamp(900, 2000);
            (side, side)
        }
    };
    save(path, format, size, &figure)
}

/// Fails early (before any work) if `path` is not a `.png` or `.svg` figure.
pub fn check_figure_path(path: &Path) -> Result<(), String> {
    OutputFormat::of(path).map(|_| ())
}

/// Draws `n` greyscale images of `h` x `w` pixels (row-major `[n, h*w]`) in a
/// grid with `cols` columns. Values are min-max scaled over the whole grid
/// (black = minimum, white = maximum); non-finite pixels are drawn red.
pub fn image_grid(path: &Path, images: &[f64], h: usize, w: usize, cols: usize, title: &str) -> Result<(), String> {
    let format = OutputFormat::of(path)?;
    if h == 0 || w == 0 {
        return Err(format!("image_grid: image size must be positive, got {h}x{w}"));
    }
    if cols == 0 {
        return Err("image_grid: number of columns must be positive".to_string());
    }
    if images.is_empty() || !images.len().is_multiple_of(h * w) {
        return Err(format!(
            "image_grid: {} values is not a positive multiple of {h}x{w} pixels",
            images.len()
        ));
    }
    let n = images.len() / (h * w);
    let cols = cols.min(n);
    let rows = n.div_ceil(cols);
    let (lo, hi) = images
        .iter()
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));

    // Pixel scale: fit the grid into ~860 px of width, at most 6000 px of height.
    let gap = 6usize;
    let avail_w = 860usize.saturating_sub(gap * (cols - 1)).max(cols * w);
    let mut scale = (avail_w / (cols * w)).clamp(1, 40);
    let avail_h = 6000usize.saturating_sub(gap * (rows - 1)).max(rows * h);
    scale = scale.min((avail_h / (rows * h)).max(1));
    let margin = 20usize;
    let header = if title.is_empty() { 34 } else { 70 };
    let grid_w = cols * w * scale + gap * (cols - 1);
    let grid_h = rows * h * scale + gap * (rows - 1);
    let width = (grid_w + 2 * margin).max(420);
    let height = grid_h + header + margin;
    let figure = ImageFigure {
        images,
        h,
        w,
        cols,
        n,
        lo,
        hi,
        scale,
        gap,
        header,
        x_offset: (width - grid_w) / 2,
        title,
    };
    save(path, format, (width as u32, height as u32), &figure)
}

/// Draws labelled lines with point markers (e.g. convergence curves), with
/// optional logarithmic axes. Non-finite points, and non-positive ones on a
/// log axis, are left out.
pub fn line_plot(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    lines: &[(&str, &[(f64, f64)])],
    log_x: bool,
    log_y: bool,
) -> Result<(), String> {
    let format = OutputFormat::of(path)?;
    if lines.is_empty() {
        return Err("line_plot: no lines to plot".to_string());
    }
    let keep = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!log_x || x > 0.0) && (!log_y || y > 0.0);
    let kept: Vec<(&str, Vec<(f64, f64)>)> = lines
        .iter()
        .map(|(label, pts)| (*label, pts.iter().copied().filter(keep).collect()))
        .collect();
    let all = kept.iter().flat_map(|(_, pts)| pts.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return Err(if log_x || log_y {
            "line_plot: no finite points (positive on log axes) to plot".to_string()
        } else {
            "line_plot: no finite points to plot".to_string()
        });
    }
    let figure = LineFigure {
        title,
        x_label,
        y_label,
        lines: kept,
        x_range: if log_x {
            log_range(x0, x1)
        } else {
            pad_range(x0, x1, 0.05)
        },
        y_range: if log_y {
            log_range(y0, y1)
        } else {
            pad_range(y0, y1, 0.05)
        },
        log_x,
        log_y,
    };
    save(path, format, (900, 650), &figure)
}

// ---------------------------------------------------------------------------
// Output files

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OutputFormat {
    Png,
    Svg,
}

impl OutputFormat {
    fn of(path: &Path) -> Result<Self, String> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref()
        {
            Some("png") => Ok(Self::Png),
            Some("svg") => Ok(Self::Svg),
            _ => Err(format!(
                "cannot write plot {}: unsupported file type (use .png or .svg)",
                path.display()
            )),
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Svg => "svg",
        }
    }
}

/// Something drawn on any plotters backend.
trait Figure {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String>;
}

fn render_error<E: std::fmt::Display>(e: E) -> String {
    format!("plot rendering failed: {e}")
}

/// Renders `figure` into a temporary file next to `path` and renames it into
/// place; on error the temporary file is removed.
fn save<F: Figure>(path: &Path, format: OutputFormat, size: (u32, u32), figure: &F) -> Result<(), String> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(format!(
            "cannot write plot {}: directory {} does not exist",
            path.display(),
            dir.display()
        ));
    }
    let Some(name) = path.file_name() else {
        return Err(format!("cannot write plot {}: not a file name", path.display()));
    };
    register_font();
    let tmp = temp_path(dir, &name.to_string_lossy(), format);
    let result = match format {
        OutputFormat::Png => {
            let root = BitMapBackend::new(&tmp, size).into_drawing_area();
            let result = figure.draw(&root).and_then(|()| {
                root.present()
                    .map_err(|e| format!("cannot write plot {}: {e}", path.display()))
            });
            // Dropping the backend may still write the temporary file; it is
            // removed below on error.
            drop(root);
            result
        }
        OutputFormat::Svg => {
            let mut svg = String::new();
            let result = {
                let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
                figure.draw(&root).and_then(|()| root.present().map_err(render_error))
            };
            result.and_then(|()| {
                fs::write(&tmp, svg.as_bytes()).map_err(|e| format!("cannot write plot {}: {e}", path.display()))
            })
        }
    };
    let result =
        result.and_then(|()| fs::rename(&tmp, path).map_err(|e| format!("cannot write plot {}: {e}", path.display())));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// A fresh hidden file name in `dir` that keeps the output extension (the
/// bitmap encoder picks the image format from it).
fn temp_path(dir: &Path, name: &str, format: OutputFormat) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let k = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{name}.{}-{k}.tmp.{}", std::process::id(), format.extension()))
}

// ---------------------------------------------------------------------------
// Small numerical helpers

fn validate_series(series: &[Series]) -> Result<usize, String> {
    let Some(first) = series.first() else {
        return Err("pair_plot: no series to plot".to_string());
    };
    let d = first.d;
    for s in series {
        if s.d == 0 {
            return Err(format!("pair_plot: series '{}' has dimension 0", s.label));
        }
        if s.d != d {
            return Err(format!(
                "pair_plot: series '{}' has dimension {} but series '{}' has dimension {d}",
                s.label, s.d, first.label
            ));
        }
        if !s.data.len().is_multiple_of(d) {
            return Err(format!(
                "pair_plot: series '{}' has {} values, not a multiple of its dimension {d}",
                s.label,
                s.data.len()
            ));
        }
    }
    if series.iter().all(|s| s.data.is_empty()) {
        return Err("pair_plot: all series are empty".to_string());
    }
    Ok(d)
}

/// Linear-interpolated quantile of sorted data.
fn quantile(sorted: &[f64], p: f64) -> f64 {
    let pos = p * (sorted.len() - 1) as f64;
    let i = pos.floor() as usize;
    let f = pos - i as f64;
    if i + 1 < sorted.len() {
        sorted[i] * (1.0 - f) + sorted[i + 1] * f
    } else {
        sorted[sorted.len() - 1]
    }
}

/// `[lo, hi]` widened by `frac` of its width on both sides; a degenerate
/// range is widened around its value.
fn pad_range(lo: f64, hi: f64, frac: f64) -> (f64, f64) {
    const LIMIT: f64 = 1e300;
    let (lo, hi) = (lo.clamp(-LIMIT, LIMIT), hi.clamp(-LIMIT, LIMIT));
    let half = 0.5 * hi - 0.5 * lo;
    let scale = lo.abs().max(hi.abs());
    if half <= 1e-12 * scale || half <= f64::MIN_POSITIVE {
        let r = (0.05 * scale).max(0.5);
        return (lo - r, hi + r);
    }
    let pad = 2.0 * frac * half;
    ((lo - pad).max(-LIMIT), (hi + pad).min(LIMIT))
}

/// Positive range snapped outwards to whole decades (so log axes always have
/// labelled ticks), then padded by 3% of its logarithmic width.
fn log_range(lo: f64, hi: f64) -> (f64, f64) {
    let a = lo.log10().floor();
    let mut b = hi.log10().ceil();
    if b <= a {
        b = a + 1.0;
    }
    let pad = 0.03 * (b - a);
    (10f64.powf(a - pad), 10f64.powf(b + pad))
}

/// Shared axis range of coordinate `j`: 0.5%–99.5% quantiles of the finite
/// values of all series, padded by 5%.
fn robust_range(series: &[Series], j: usize) -> (f64, f64) {
    let mut v: Vec<f64> = series
        .iter()
        .flat_map(|s| s.column(j))
        .filter(|x| x.is_finite())
        .collect();
    if v.is_empty() {
        return (-1.0, 1.0);
    }
    v.sort_unstable_by(f64::total_cmp);
    pad_range(quantile(&v, 0.005), quantile(&v, 0.995), 0.05)
}

/// Number of histogram bins: `factor` times the Rice rule, between 10 and `max`.
fn n_bins(n: usize, factor: f64, max: usize) -> usize {
    ((factor * 2.0 * (n as f64).cbrt()).round() as usize).clamp(10, max.max(10))
}

/// Density histogram on `bins` equal bins of `[lo, hi]`, normalised by the
/// number of finite values (values outside the range are counted in the
/// normalisation but not drawn).
fn histogram(values: impl Iterator<Item = f64>, lo: f64, hi: f64, bins: usize) -> Vec<f64> {
    let mut counts = vec![0.0; bins];
    let width = (hi - lo) / bins as f64;
    let mut n = 0usize;
    for x in values.filter(|x| x.is_finite()) {
        n += 1;
        if x < lo || x > hi {
            continue;
        }
        let k = (((x - lo) / width) as usize).min(bins - 1);
        counts[k] += 1.0;
    }
    if n > 0 {
        for c in &mut counts {
            *c /= n as f64 * width;
        }
    }
    counts
}

/// Tick label: at most 5 significant digits, scientific outside [1e-3, 1e5).
fn fmt_tick(v: &f64) -> String {
    fmt_num(*v, 5)
}

/// Tick label on a logarithmic axis: powers of ten as 10 with a superscript
/// exponent, other values as [`fmt_tick`].
fn fmt_log_tick(v: &f64) -> String {
    let e = v.log10().round();
    if v.is_finite() && *v > 0.0 && (v / 10f64.powf(e) - 1.0).abs() < 1e-6 {
        const SUP: [char; 10] = ['⁰', '¹', '²', '³', '⁴', '⁵', '⁶', '⁷', '⁸', '⁹'];
        let e = e as i64;
        let mut s = String::from("10");
        if e < 0 {
            s.push('⁻');
        }
        s.extend(e.unsigned_abs().to_string().bytes().map(|b| SUP[(b - b'0') as usize]));
        s
    } else {
        fmt_tick(v)
    }
}

fn fmt_num(v: f64, digits: usize) -> String {
    if v == 0.0 || !v.is_finite() {
        return if v.is_finite() { "0".to_string() } else { format!("{v}") };
    }
    let r: f64 = format!("{:.*e}", digits.saturating_sub(1), v).parse().unwrap_or(v);
    if r.abs() >= 1e5 || r.abs() < 1e-3 {
        format!("{r:e}")
    } else {
        format!("{r}")
    }
}

// ---------------------------------------------------------------------------
// Text, titles and legends

fn text_style(size: f64, color: &RGBColor, h: HPos, v: VPos) -> TextStyle<'static> {
    (FONT, size).into_font().color(color).pos(Pos::new(h, v))
}

/// Draws the title (shrunk to fit the width) and returns the area below it.
fn draw_title<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
) -> Result<DrawingArea<DB, Shift>, String> {
    if title.is_empty() {
        return Ok(root.margin(10, 0, 0, 0));
    }
    let (w, _) = root.dim_in_pixel();
    let mut size = 26.0;
    while size > 12.0 {
        let (tw, _) = root
            .estimate_text_size(title, &text_style(size, &BLACK, HPos::Center, VPos::Top))
            .map_err(render_error)?;
        if tw + 30 <= w {
            break;
        }
        size -= 1.0;
    }
    root.draw(&Text::new(
        title.to_string(),
        (w as i32 / 2, 12),
        text_style(size, &BLACK, HPos::Center, VPos::Top),
    ))
    .map_err(render_error)?;
    Ok(root.margin(size as i32 + 22, 0, 0, 0))
}

/// Legend entries laid out in centred rows under the title; returns the area
/// below the legend.
fn draw_legend_rows<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    items: &[(String, RGBColor)],
) -> Result<DrawingArea<DB, Shift>, String> {
    const SWATCH: i32 = 14;
    const ROW_H: i32 = 26;
    let font = text_style(16.0, &BLACK, HPos::Left, VPos::Center);
    let (w, _) = area.dim_in_pixel();
    let max_w = w as i32 - 40;
    let mut rows: Vec<Vec<(usize, i32)>> = vec![vec![]];
    let mut row_w = 0;
    for (i, (label, _)) in items.iter().enumerate() {
        let (tw, _) = area.estimate_text_size(label, &font).map_err(render_error)?;
        let item_w = SWATCH + 8 + tw as i32;
        let sep = if row_w == 0 { 0 } else { 32 };
        let last = rows.last_mut().expect("rows is never empty");
        if row_w > 0 && row_w + sep + item_w > max_w {
            rows.push(vec![(i, item_w)]);
            row_w = item_w;
        } else {
            last.push((i, item_w));
            row_w += sep + item_w;
        }
    }
    for (r, row) in rows.iter().enumerate() {
        let total: i32 = row.iter().map(|(_, iw)| iw).sum::<i32>() + 32 * (row.len() as i32 - 1);
        let mut x = (w as i32 - total) / 2;
        let y = ROW_H / 2 + r as i32 * ROW_H;
        for &(i, iw) in row {
            let (label, color) = &items[i];
            area.draw(&Rectangle::new(
                [(x, y - SWATCH / 2), (x + SWATCH, y + SWATCH / 2)],
                color.filled(),
            ))
            .map_err(render_error)?;
            area.draw(&Text::new(label.clone(), (x + SWATCH + 8, y), font.clone()))
                .map_err(render_error)?;
            x += iw + 32;
        }
    }
    Ok(area.margin(rows.len() as i32 * ROW_H + 6, 0, 0, 0))
}

// ---------------------------------------------------------------------------
// Pair plots

struct PairFigure<'a, 'b> {
    series: &'a [Series<'b>],
    title: &'a str,
    m: usize,
}

/// Draws a density histogram as translucent bars with a solid step outline,
/// mapping density `dens` to `base + dens * yscale` (or to the x axis when
/// `horizontal`).
struct HistShape<'a> {
    dens: &'a [f64],
    lo: f64,
    hi: f64,
    base: f64,
    scale: f64,
    horizontal: bool,
}

impl HistShape<'_> {
    fn edge(&self, k: usize) -> f64 {
        self.lo + (self.hi - self.lo) * k as f64 / self.dens.len() as f64
    }

    fn point(&self, along: f64, dens: f64) -> (f64, f64) {
        let v = self.base + dens * self.scale;
        if self.horizontal {
            (v, along)
        } else {
            (along, v)
        }
    }

    fn bars(&self, color: RGBColor, alpha: f64) -> Vec<Rectangle<(f64, f64)>> {
        self.dens
            .iter()
            .enumerate()
            .filter(|(_, &h)| h > 0.0)
            .map(|(k, &h)| {
                Rectangle::new(
                    [self.point(self.edge(k), 0.0), self.point(self.edge(k + 1), h)],
                    color.mix(alpha).filled(),
                )
            })
            .collect()
    }

    fn outline(&self, color: RGBColor, width: u32) -> PathElement<(f64, f64)> {
        let mut pts = vec![self.point(self.lo, 0.0)];
        for (k, &h) in self.dens.iter().enumerate() {
            pts.push(self.point(self.edge(k), h));
            pts.push(self.point(self.edge(k + 1), h));
        }
        pts.push(self.point(self.hi, 0.0));
        PathElement::new(pts, color.stroke_width(width))
    }
}

impl Figure for PairFigure<'_, '_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        root.fill(&WHITE).map_err(render_error)?;
        let area = draw_title(root, self.title)?;
        let items: Vec<(String, RGBColor)> = self
            .series
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("{} (n = {})", s.label, s.rows()), palette(i)))
            .collect();
        let body = draw_legend_rows(&area, &items)?;
        let ranges: Vec<(f64, f64)> = (0..self.m).map(|j| robust_range(self.series, j)).collect();
        match self.m {
            1 => self.draw_1d(&body, ranges[0]),
            2 => self.draw_2d(&body, ranges[0], ranges[1]),
            _ => self.draw_grid(&body, &ranges),
        }
    }
}

impl PairFigure<'_, '_> {
    fn max_rows(&self) -> usize {
        self.series.iter().map(|s| s.rows()).max().unwrap_or(0)
    }

    fn histograms(&self, j: usize, (lo, hi): (f64, f64), factor: f64, max_bins: usize) -> (Vec<Vec<f64>>, f64) {
        let bins = n_bins(self.max_rows(), factor, max_bins);
        let hists: Vec<Vec<f64>> = self
            .series
            .iter()
            .map(|s| histogram(s.column(j), lo, hi, bins))
            .collect();
        let top = hists.iter().flatten().copied().fold(0.0, f64::max);
        (hists, if top > 0.0 { top } else { 1.0 })
    }

    fn draw_1d<DB: DrawingBackend>(&self, body: &DrawingArea<DB, Shift>, (lo, hi): (f64, f64)) -> Result<(), String> {
        let (hists, top) = self.histograms(0, (lo, hi), 1.0, 80);
        let mut chart = ChartBuilder::on(body)
            .margin_left(15)
            .margin_right(30)
            .margin_top(5)
            .margin_bottom(15)
            .x_label_area_size(55)
            .y_label_area_size(80)
            .build_cartesian_2d(lo..hi, 0.0..top * 1.08)
            .map_err(render_error)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .bold_line_style(GRID_LINE)
            .light_line_style(TRANSPARENT)
            .axis_style(AXIS_LINE)
            .x_labels(8)
            .y_labels(6)
            .x_label_formatter(&fmt_tick)
            .y_label_formatter(&fmt_tick)
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 17))
            .x_desc("x")
            .y_desc("density")
            .draw()
            .map_err(render_error)?;
        let shapes: Vec<HistShape> = hists
            .iter()
            .map(|dens| HistShape {
                dens,
                lo,
                hi,
                base: 0.0,
                scale: 1.0,
                horizontal: false,
            })
            .collect();
        for (i, shape) in shapes.iter().enumerate() {
            chart.draw_series(shape.bars(palette(i), 0.28)).map_err(render_error)?;
        }
        for (i, shape) in shapes.iter().enumerate() {
            chart
                .draw_series(std::iter::once(shape.outline(palette(i), 2)))
                .map_err(render_error)?;
        }
        Ok(())
    }

    fn draw_2d<DB: DrawingBackend>(
        &self,
        body: &DrawingArea<DB, Shift>,
        (x0, x1): (f64, f64),
        (y0, y1): (f64, f64),
    ) -> Result<(), String> {
        const MARGINAL: i32 = 120;
        const LEFT: u32 = 80;
        const BOTTOM: u32 = 55;
        let (bw, _) = body.dim_in_pixel();
        let parts = body.split_by_breakpoints([bw as i32 - MARGINAL], [MARGINAL]);
        let (top, main, right) = (&parts[0], &parts[2], &parts[3]);

        // Main scatter.
        let mut chart = ChartBuilder::on(main)
            .margin_left(15)
            .margin_top(6)
            .margin_right(6)
            .margin_bottom(15)
            .x_label_area_size(BOTTOM)
            .y_label_area_size(LEFT)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(render_error)?;
        chart
            .configure_mesh()
            .bold_line_style(GRID_LINE)
            .light_line_style(TRANSPARENT)
            .axis_style(AXIS_LINE)
            .x_labels(8)
            .y_labels(8)
            .x_label_formatter(&fmt_tick)
            .y_label_formatter(&fmt_tick)
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 17))
            .x_desc("x1")
            .y_desc("x2")
            .draw()
            .map_err(render_error)?;
        for (i, s) in self.series.iter().enumerate() {
            let style = palette(i).mix(0.35).filled();
            let points = s
                .subsample(MAX_SCATTER_POINTS)
                .map(|r| (s.at(r, 0), s.at(r, 1)))
                .filter(|&(x, y)| x >= x0 && x <= x1 && y >= y0 && y <= y1)
                .map(|p| Circle::new(p, 2, style));
            chart.draw_series(points).map_err(render_error)?;
        }
        frame(chart.plotting_area(), (x0, x1), (y0, y1))?;

        // Marginal histograms, aligned with the scatter's axes.
        let (hx, tx) = self.histograms(0, (x0, x1), 1.5, 100);
        let (hy, ty) = self.histograms(1, (y0, y1), 1.5, 100);
        let top_chart = ChartBuilder::on(top)
            .margin_left(15)
            .margin_right(6)
            .margin_top(8)
            .y_label_area_size(LEFT)
            .build_cartesian_2d(x0..x1, 0.0..tx * 1.05)
            .map_err(render_error)?;
        let right_chart = ChartBuilder::on(right)
            .margin_top(6)
            .margin_bottom(15)
            .margin_right(12)
            .x_label_area_size(BOTTOM)
            .build_cartesian_2d(0.0..ty * 1.05, y0..y1)
            .map_err(render_error)?;
        for (pass, alpha) in [(0, 0.28), (1, 1.0)] {
            for (i, (dx, dy)) in hx.iter().zip(&hy).enumerate() {
                let sx = HistShape {
                    dens: dx,
                    lo: x0,
                    hi: x1,
                    base: 0.0,
                    scale: 1.0,
                    horizontal: false,
                };
                let sy = HistShape {
                    dens: dy,
                    lo: y0,
                    hi: y1,
                    base: 0.0,
                    scale: 1.0,
                    horizontal: true,
                };
                if pass == 0 {
                    draw_rects(top_chart.plotting_area(), sx.bars(palette(i), alpha))?;
                    draw_rects(right_chart.plotting_area(), sy.bars(palette(i), alpha))?;
                } else {
                    top_chart
                        .plotting_area()
                        .draw(&sx.outline(palette(i), 1))
                        .map_err(render_error)?;
                    right_chart
                        .plotting_area()
                        .draw(&sy.outline(palette(i), 1))
                        .map_err(render_error)?;
                }
            }
        }
        top_chart
            .plotting_area()
            .draw(&PathElement::new(vec![(x0, 0.0), (x1, 0.0)], AXIS_LINE))
            .map_err(render_error)?;
        right_chart
            .plotting_area()
            .draw(&PathElement::new(vec![(0.0, y0), (0.0, y1)], AXIS_LINE))
            .map_err(render_error)?;
        Ok(())
    }

    fn draw_grid<DB: DrawingBackend>(
        &self,
        body: &DrawingArea<DB, Shift>,
        ranges: &[(f64, f64)],
    ) -> Result<(), String> {
        let m = self.m;
        let (bw, bh) = body.dim_in_pixel();
        let left = 78i32;
        let bottom = 58i32;
        let cw = (bw as i32 - left - 15) / m as i32;
        let ch = (bh as i32 - bottom - 8) / m as i32;
        let xs: Vec<i32> = (1..m as i32).map(|k| left + k * cw).collect();
        let ys: Vec<i32> = (1..m as i32).map(|k| k * ch).collect();
        let cells = body.split_by_breakpoints(xs, ys);
        let hists: Vec<(Vec<Vec<f64>>, f64)> = (0..m).map(|j| self.histograms(j, ranges[j], 1.0, 30)).collect();
        let label_size = if cw < 140 { 12 } else { 13 };
        for r in 0..m {
            for c in 0..m {
                let cell = &cells[r * m + c];
                let (xr, yr) = (ranges[c], ranges[r]);
                let mut chart = ChartBuilder::on(cell)
                    .margin(4)
                    .margin_right(if c == m - 1 { 15 } else { 4 })
                    .x_label_area_size(if r == m - 1 { bottom as u32 } else { 0 })
                    .y_label_area_size(if c == 0 { left as u32 } else { 0 })
                    .build_cartesian_2d(xr.0..xr.1, yr.0..yr.1)
                    .map_err(render_error)?;
                let x_desc = format!("x{}", c + 1);
                let y_desc = format!("x{}", r + 1);
                chart
                    .configure_mesh()
                    .bold_line_style(GRID_LINE)
                    .light_line_style(TRANSPARENT)
                    .axis_style(AXIS_LINE)
                    .x_labels(4)
                    .y_labels(4)
                    .x_label_formatter(&fmt_tick)
                    .y_label_formatter(&fmt_tick)
                    .label_style((FONT, label_size))
                    .axis_desc_style((FONT, 16))
                    .x_desc(x_desc)
                    .y_desc(y_desc)
                    .draw()
                    .map_err(render_error)?;
                if r == c {
                    // Histogram scaled into the panel's own y range.
                    let (dens, top) = &hists[c];
                    let scale = 0.92 * (yr.1 - yr.0) / top;
                    for (pass, alpha) in [(0, 0.28), (1, 1.0)] {
                        for (i, d) in dens.iter().enumerate() {
                            let shape = HistShape {
                                dens: d,
                                lo: xr.0,
                                hi: xr.1,
                                base: yr.0,
                                scale,
                                horizontal: false,
                            };
                            if pass == 0 {
                                draw_rects(chart.plotting_area(), shape.bars(palette(i), alpha))?;
                            } else {
                                chart
                                    .plotting_area()
                                    .draw(&shape.outline(palette(i), 1))
                                    .map_err(render_error)?;
                            }
                        }
                    }
                } else {
                    for (i, s) in self.series.iter().enumerate() {
                        let style = palette(i).mix(0.3).filled();
                        let points = s
                            .subsample(MAX_GRID_POINTS)
                            .map(|k| (s.at(k, c), s.at(k, r)))
                            .filter(|&(x, y)| x >= xr.0 && x <= xr.1 && y >= yr.0 && y <= yr.1)
                            .map(|p| EmptyElement::at(p) + Rectangle::new([(-1, -1), (1, 1)], style));
                        chart.draw_series(points).map_err(render_error)?;
                    }
                }
                frame(chart.plotting_area(), xr, yr)?;
            }
        }
        Ok(())
    }
}

/// Draws a thin frame around a plotting area.
fn frame<DB: DrawingBackend, CT: CoordTranslate<From = (f64, f64)>>(
    area: &DrawingArea<DB, CT>,
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
) -> Result<(), String> {
    area.draw(&PathElement::new(
        vec![(x0, y0), (x0, y1), (x1, y1), (x1, y0), (x0, y0)],
        AXIS_LINE,
    ))
    .map_err(render_error)
}

fn draw_rects<DB: DrawingBackend, CT: CoordTranslate<From = (f64, f64)>>(
    area: &DrawingArea<DB, CT>,
    rects: Vec<Rectangle<(f64, f64)>>,
) -> Result<(), String> {
    for r in &rects {
        area.draw(r).map_err(render_error)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Image grids

struct ImageFigure<'a> {
    images: &'a [f64],
    h: usize,
    w: usize,
    cols: usize,
    n: usize,
    lo: f64,
    hi: f64,
    scale: usize,
    gap: usize,
    header: usize,
    x_offset: usize,
    title: &'a str,
}

impl Figure for ImageFigure<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        root.fill(&WHITE).map_err(render_error)?;
        let (width, _) = root.dim_in_pixel();
        if !self.title.is_empty() {
            draw_title(root, self.title)?;
        }
        let caption = if self.lo <= self.hi {
            format!(
                "{} images, {}x{} px; black = {}, white = {}",
                self.n,
                self.h,
                self.w,
                fmt_num(self.lo, 4),
                fmt_num(self.hi, 4)
            )
        } else {
            format!("{} images, {}x{} px; no finite values", self.n, self.h, self.w)
        };
        let caption_y = self.header as i32 - 22;
        root.draw(&Text::new(
            caption,
            (width as i32 / 2, caption_y),
            text_style(14.0, &TEXT_GREY, HPos::Center, VPos::Center),
        ))
        .map_err(render_error)?;

        let span = self.hi - self.lo;
        let s = self.scale as i32;
        let (ih, iw) = ((self.h * self.scale) as i32, (self.w * self.scale) as i32);
        for k in 0..self.n {
            let ox = (self.x_offset + (k % self.cols) * (self.w * self.scale + self.gap)) as i32;
            let oy = (self.header + (k / self.cols) * (self.h * self.scale + self.gap)) as i32;
            let image = &self.images[k * self.h * self.w..(k + 1) * self.h * self.w];
            for (p, &v) in image.iter().enumerate() {
                let color = if !v.is_finite() {
                    RGBColor(220, 30, 30)
                } else {
                    let t = if span > 0.0 { (v - self.lo) / span } else { 0.5 };
                    let g = (t * 255.0).round().clamp(0.0, 255.0) as u8;
                    RGBColor(g, g, g)
                };
                let (py, px) = ((p / self.w) as i32, (p % self.w) as i32);
                let x = ox + px * s;
                let y = oy + py * s;
                root.draw(&Rectangle::new([(x, y), (x + s, y + s)], color.filled()))
                    .map_err(render_error)?;
            }
            root.draw(&Rectangle::new(
                [(ox - 1, oy - 1), (ox + iw, oy + ih)],
                RGBColor(150, 150, 150).stroke_width(1),
            ))
            .map_err(render_error)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Line plots

struct LineFigure<'a> {
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
    lines: Vec<(&'a str, Vec<(f64, f64)>)>,
    x_range: (f64, f64),
    y_range: (f64, f64),
    log_x: bool,
    log_y: bool,
}

impl LineFigure<'_> {
    /// The corner (upper right, upper left, lower left, lower right, in that
    /// order of preference) whose legend box of `fw` x `fh` (fractions of the
    /// plotting area) covers the fewest points sampled along the lines.
    fn legend_position(&self, fw: f64, fh: f64) -> SeriesLabelPosition {
        let norm = |v: f64, (a, b): (f64, f64), log: bool| {
            if log {
                (v.ln() - a.ln()) / (b.ln() - a.ln())
            } else {
                (v - a) / (b - a)
            }
        };
        let mut samples = Vec::new();
        for (_, pts) in &self.lines {
            let q: Vec<(f64, f64)> = pts
                .iter()
                .map(|&(x, y)| (norm(x, self.x_range, self.log_x), norm(y, self.y_range, self.log_y)))
                .collect();
            for w in q.windows(2) {
                let ((ax, ay), (bx, by)) = (w[0], w[1]);
                samples.extend((0..40).map(|k| {
                    let t = k as f64 / 40.0;
                    (ax + t * (bx - ax), ay + t * (by - ay))
                }));
            }
            samples.extend(q.last().copied());
        }
        let (fw, fh) = (fw.min(1.0), fh.min(1.0));
        let corners = [(1.0 - fw, 1.0 - fh), (0.0, 1.0 - fh), (0.0, 0.0), (1.0 - fw, 0.0)];
        let covered = |&(u0, v0): &(f64, f64)| {
            samples
                .iter()
                .filter(|&&(u, v)| u >= u0 && u <= u0 + fw && v >= v0 && v <= v0 + fh)
                .count()
        };
        let best = (0..4).min_by_key(|&k| covered(&corners[k])).unwrap_or(0);
        match best {
            0 => SeriesLabelPosition::UpperRight,
            1 => SeriesLabelPosition::UpperLeft,
            2 => SeriesLabelPosition::LowerLeft,
            _ => SeriesLabelPosition::LowerRight,
        }
    }
}

impl Figure for LineFigure<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        root.fill(&WHITE).map_err(render_error)?;
        let body = draw_title(root, self.title)?;
        let (x0, x1) = self.x_range;
        let (y0, y1) = self.y_range;
        // Legend in the corner of the plotting area that hides the least of the
        // lines (sizes estimated from the layout below).
        let label_font = text_style(15.0, &BLACK, HPos::Left, VPos::Center);
        let mut text_w = 0u32;
        for (label, _) in &self.lines {
            text_w = text_w.max(root.estimate_text_size(label, &label_font).map_err(render_error)?.0);
        }
        let (bw, bh) = body.dim_in_pixel();
        let plot_w = (bw as f64 - 140.0).max(1.0);
        let plot_h = (bh as f64 - 80.0).max(1.0);
        let legend_w = text_w as f64 + 34.0 + 24.0 + 10.0;
        let legend_h = self.lines.len() as f64 * 20.0 + 24.0 + 10.0;
        let position = self.legend_position(legend_w / plot_w, legend_h / plot_h);
        let fmt_x: &dyn Fn(&f64) -> String = if self.log_x { &fmt_log_tick } else { &fmt_tick };
        let fmt_y: &dyn Fn(&f64) -> String = if self.log_y { &fmt_log_tick } else { &fmt_tick };
        macro_rules! chart {
            ($xr:expr, $yr:expr) => {{
                let mut chart = ChartBuilder::on(&body)
                    .margin_left(15)
                    .margin_right(35)
                    .margin_top(5)
                    .margin_bottom(15)
                    .x_label_area_size(60)
                    .y_label_area_size(90)
                    .build_cartesian_2d($xr, $yr)
                    .map_err(render_error)?;
                chart
                    .configure_mesh()
                    .bold_line_style(GRID_LINE)
                    .light_line_style(TRANSPARENT)
                    .axis_style(AXIS_LINE)
                    .x_labels(10)
                    .y_labels(10)
                    .x_label_formatter(fmt_x)
                    .y_label_formatter(fmt_y)
                    .label_style((FONT, 15))
                    .axis_desc_style((FONT, 17))
                    .x_desc(self.x_label)
                    .y_desc(self.y_label)
                    .draw()
                    .map_err(render_error)?;
                for (i, (label, pts)) in self.lines.iter().enumerate() {
                    let color = palette(i);
                    // Marker shape cycles: circle, triangle, square, cross.
                    macro_rules! draw_line {
                        ($marker:expr) => {{
                            let marker = $marker;
                            chart
                                .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
                                .map_err(render_error)?
                                .label(*label)
                                .legend(move |(x, y)| {
                                    EmptyElement::at((x + 12, y))
                                        + PathElement::new(vec![(-12, 0), (12, 0)], color.stroke_width(2))
                                        + marker((0, 0))
                                });
                            chart
                                .draw_series(pts.iter().map(|&p| EmptyElement::at(p) + marker((0, 0))))
                                .map_err(render_error)?;
                        }};
                    }
                    match i % 4 {
                        0 => draw_line!(move |c: (i32, i32)| Circle::new(c, 4, color.filled())),
                        1 => draw_line!(move |c: (i32, i32)| TriangleMarker::new(c, 5, color.filled())),
                        2 => draw_line!(move |(x, y): (i32, i32)| Rectangle::new(
                            [(x - 4, y - 4), (x + 4, y + 4)],
                            color.filled()
                        )),
                        _ => draw_line!(move |c: (i32, i32)| Cross::new(c, 4, color.stroke_width(2))),
                    }
                }
                chart
                    .configure_series_labels()
                    .position(position)
                    .margin(12)
                    .legend_area_size(34)
                    .label_font((FONT, 15))
                    .background_style(WHITE.mix(0.9))
                    .border_style(RGBColor(170, 170, 170))
                    .draw()
                    .map_err(render_error)?;
            }};
        }
        match (self.log_x, self.log_y) {
            (false, false) => chart!(x0..x1, y0..y1),
            (true, false) => chart!((x0..x1).log_scale(), y0..y1),
            (false, true) => chart!(x0..x1, (y0..y1).log_scale()),
            (true, true) => chart!((x0..x1).log_scale(), (y0..y1).log_scale()),
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh, empty directory under the system temp dir.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let k = N.fetch_add(1, Ordering::Relaxed);
            let p = std::env::temp_dir().join(format!("scoregen-plot-{tag}-{}-{k}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            Self(p)
        }

        fn entries(&self) -> Vec<String> {
            fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Small deterministic generator: LCG + Box-Muller.
    struct Rng(u64);

    impl Rng {
        fn uniform(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }

        fn normal(&mut self) -> f64 {
            let (u, v) = (self.uniform(), self.uniform());
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        }
    }

    /// `n` points of the 25-component grid mixture, means 8*(i, j), i, j in -2..=2.
    fn grid_mixture(n: usize, sd: f64, seed: u64) -> Vec<f64> {
        let mut rng = Rng(seed);
        let mut out = Vec::with_capacity(2 * n);
        for _ in 0..n {
            let c = ((rng.uniform() * 25.0) as usize).min(24);
            let (i, j) = ((c / 5) as f64 - 2.0, (c % 5) as f64 - 2.0);
            out.push(8.0 * i + sd * rng.normal());
            out.push(8.0 * j + sd * rng.normal());
        }
        out
    }

    fn gaussian(n: usize, d: usize, seed: u64, f: impl Fn(usize, f64) -> f64) -> Vec<f64> {
        let mut rng = Rng(seed);
        (0..n * d).map(|k| f(k % d, rng.normal())).collect()
    }

    fn assert_png(path: &Path) {
        let bytes = fs::read(path).unwrap();
        assert!(bytes.len() > 1000, "{} is too small", path.display());
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    }

    fn check_dir() -> Option<PathBuf> {
        // Set SCOREGEN_PLOTCHECK=1 to keep copies in /tmp/plotcheck for viewing.
        std::env::var_os("SCOREGEN_PLOTCHECK").map(|_| {
            let p = PathBuf::from("/tmp/plotcheck");
            fs::create_dir_all(&p).unwrap();
            p
        })
    }

    fn keep(path: &Path, name: &str) {
        if let Some(dir) = check_dir() {
            fs::copy(path, dir.join(name)).unwrap();
        }
    }

    #[test]
    fn plot_register_font_is_idempotent() {
        register_font();
        register_font();
    }

    #[test]
    fn plot_pair_2d_png_and_svg() {
        let dir = TempDir::new("pair2d");
        let data = grid_mixture(10_000, 1.0, 1);
        let model = grid_mixture(8_000, 1.4, 2);
        let mut with_outliers = model.clone();
        with_outliers[0] = 1e6;
        with_outliers[3] = f64::NAN;
        let series = [
            Series {
                label: "data",
                data: &data,
                d: 2,
            },
            Series {
                label: "samples (Euler-Maruyama, 500 steps)",
                data: &with_outliers,
                d: 2,
            },
        ];
        let png = dir.0.join("pair2d.png");
        pair_plot(&png, &series, "25-component Gaussian grid mixture", 5).unwrap();
        assert_png(&png);
        keep(&png, "pair2d.png");
        let svg = dir.0.join("pair2d.svg");
        pair_plot(&svg, &series, "25-component Gaussian grid mixture", 5).unwrap();
        let text = fs::read_to_string(&svg).unwrap();
        assert!(text.starts_with("<svg") && text.contains("data (n = 10000)"));
        let mut entries = dir.entries();
        entries.sort();
        assert_eq!(entries, ["pair2d.png", "pair2d.svg"]);
    }

    #[test]
    fn plot_pair_1d_and_grid() {
        let dir = TempDir::new("pair");
        let a = gaussian(20_000, 1, 3, |_, z| z);
        let b = gaussian(20_000, 1, 4, |_, z| if z > 0.0 { 2.0 + 0.5 * z } else { 1.5 * z });
        let p1 = dir.0.join("hist1d.png");
        pair_plot(
            &p1,
            &[
                Series {
                    label: "N(0, 1)",
                    data: &a,
                    d: 1,
                },
                Series {
                    label: "skewed",
                    data: &b,
                    d: 1,
                },
            ],
            "One-dimensional marginals",
            5,
        )
        .unwrap();
        assert_png(&p1);
        keep(&p1, "hist1d.png");

        let d = 7;
        let x = gaussian(6_000, d, 5, |j, z| (j as f64) + (1.0 + 0.3 * j as f64) * z);
        let mut y = gaussian(6_000, d, 6, |j, z| (j as f64) + z);
        for row in y.chunks_mut(d) {
            row[1] = 0.8 * row[0] + 0.6 * row[1];
        }
        let series = [
            Series {
                label: "data",
                data: &x,
                d,
            },
            Series {
                label: "model",
                data: &y,
                d,
            },
        ];
        let p5 = dir.0.join("grid.png");
        pair_plot(&p5, &series, "Pair plot", 5).unwrap();
        assert_png(&p5);
        keep(&p5, "grid5d.png");
        let svg = dir.0.join("grid.svg");
        pair_plot(&svg, &series, "Pair plot", 3).unwrap();
        assert!(fs::metadata(&svg).unwrap().len() > 1000);
    }

    #[test]
    fn plot_image_grid_png() {
        let dir = TempDir::new("images");
        let (h, w, n) = (8, 8, 20);
        let mut images = Vec::with_capacity(n * h * w);
        for k in 0..n {
            for r in 0..h {
                for c in 0..w {
                    let v = match k % 4 {
                        0 => ((r + c + k) % 2) as f64 * 16.0,
                        1 => (r as f64 - 3.5).hypot(c as f64 - 3.5) * 4.0,
                        2 => {
                            if r == c || r + c == 7 {
                                16.0
                            } else {
                                0.0
                            }
                        }
                        _ => (c * 2 + k / 4) as f64,
                    };
                    images.push(v);
                }
            }
        }
        let p = dir.0.join("digits.png");
        image_grid(&p, &images, h, w, 10, "Synthetic 8x8 patterns").unwrap();
        assert_png(&p);
        keep(&p, "images.png");
        let svg = dir.0.join("digits.svg");
        image_grid(&svg, &images, h, w, 7, "").unwrap();
        assert!(fs::read_to_string(&svg).unwrap().contains("<rect"));
        let bad = image_grid(&dir.0.join("x.png"), &images[..100], h, w, 10, "t");
        assert!(bad.is_err());
    }

    #[test]
    fn plot_line_plot_log_log() {
        let dir = TempDir::new("lines");
        let steps: Vec<f64> = [10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0].to_vec();
        let em: Vec<(f64, f64)> = steps.iter().map(|&n| (n, 3.0 / n.sqrt())).collect();
        let heun: Vec<(f64, f64)> = steps.iter().map(|&n| (n, 5.0 / n)).collect();
        let ode: Vec<(f64, f64)> = steps.iter().map(|&n| (n, 20.0 / (n * n) + 1e-4)).collect();
        let mut bad: Vec<(f64, f64)> = steps.iter().map(|&n| (n, 0.3 + 1.0 / n)).collect();
        bad.push((0.0, 1.0));
        bad.push((2000.0, f64::NAN));
        let lines: [(&str, &[(f64, f64)]); 4] = [
            ("Euler-Maruyama", &em),
            ("Heun", &heun),
            ("probability-flow ODE", &ode),
            ("biased", &bad),
        ];
        let p = dir.0.join("conv.png");
        line_plot(
            &p,
            "Convergence in the number of steps",
            "steps",
            "sliced W2 error",
            &lines,
            true,
            true,
        )
        .unwrap();
        assert_png(&p);
        keep(&p, "loglog.png");
        let p2 = dir.0.join("lin.png");
        line_plot(&p2, "", "steps", "error", &lines, false, false).unwrap();
        assert_png(&p2);
        keep(&p2, "linear.png");
        let empty: [(&str, &[(f64, f64)]); 1] = [("none", &[(-1.0, 2.0)])];
        assert!(line_plot(&dir.0.join("e.png"), "t", "x", "y", &empty, true, false).is_err());
        let mut entries = dir.entries();
        entries.sort();
        assert_eq!(entries, ["conv.png", "lin.png"]);
    }

    #[test]
    fn plot_errors_leave_no_file() {
        let dir = TempDir::new("errors");
        let data = grid_mixture(100, 1.0, 7);
        let series = [Series {
            label: "data",
            data: &data,
            d: 2,
        }];
        for name in ["plot.jpg", "plot", "plot.png.txt"] {
            let err = pair_plot(&dir.0.join(name), &series, "t", 5).unwrap_err();
            assert!(err.contains("unsupported file type"), "{err}");
        }
        let missing = dir.0.join("no-such-dir").join("plot.png");
        let err = pair_plot(&missing, &series, "t", 5).unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
        assert!(!err.contains('\n'));
        let err = image_grid(&missing, &[0.0; 64], 8, 8, 1, "t").unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
        let lines: [(&str, &[(f64, f64)]); 1] = [("a", &[(1.0, 1.0), (2.0, 0.5)])];
        let err = line_plot(&missing, "t", "x", "y", &lines, false, false).unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
        let err = line_plot(&dir.0.join("l.gif"), "t", "x", "y", &lines, false, false).unwrap_err();
        assert!(err.contains("unsupported file type"), "{err}");
        // Mismatched dimensions and empty input.
        let bad = [
            Series {
                label: "a",
                data: &data,
                d: 2,
            },
            Series {
                label: "b",
                data: &data[..99],
                d: 3,
            },
        ];
        assert!(pair_plot(&dir.0.join("p.png"), &bad, "t", 5).is_err());
        assert!(pair_plot(&dir.0.join("p.png"), &[], "t", 5).is_err());
        assert!(dir.entries().is_empty(), "left behind: {:?}", dir.entries());
        assert!(!missing.parent().unwrap().exists());
    }

    #[test]
    fn plot_degenerate_inputs() {
        let dir = TempDir::new("degenerate");
        let nan = [f64::NAN; 20];
        let constant = [3.0; 20];
        let huge = [1e300, -1e300, 0.0, 1.0, f64::INFINITY, 2.0];
        let one = [0.5, 0.5];
        for (k, d) in [1usize, 2, 4].into_iter().enumerate() {
            let series = [
                Series {
                    label: "all NaN",
                    data: &nan[..nan.len() / d * d],
                    d,
                },
                Series {
                    label: "constant",
                    data: &constant[..constant.len() / d * d],
                    d,
                },
                Series {
                    label: "empty",
                    data: &[],
                    d,
                },
                Series {
                    label: "huge",
                    data: &huge[..huge.len() / d * d],
                    d,
                },
            ];
            let p = dir.0.join(format!("deg{k}.png"));
            pair_plot(&p, &series, "degenerate", 5).unwrap();
            assert_png(&p);
            keep(&p, &format!("degenerate{d}d.png"));
        }
        let p = dir.0.join("one.png");
        let series = [Series {
            label: "single point",
            data: &one,
            d: 2,
        }];
        pair_plot(&p, &series, "", 5).unwrap();
        pair_plot(&p, &series, "max_dims 0", 0).unwrap();
        assert_png(&p);
        let p = dir.0.join("const.png");
        image_grid(&p, &[1.0; 16], 4, 4, 3, "constant").unwrap();
        image_grid(&p, &[f64::NAN; 16], 2, 2, 8, "nan").unwrap();
        assert_png(&p);
        let lines: [(&str, &[(f64, f64)]); 2] = [("single", &[(5.0, 5.0)]), ("empty", &[])];
        let p = dir.0.join("line.png");
        line_plot(&p, "single point", "x", "y", &lines, false, false).unwrap();
        line_plot(&p, "single point", "x", "y", &lines, true, true).unwrap();
        assert_png(&p);
        let mut entries = dir.entries();
        entries.sort();
        assert_eq!(
            entries,
            ["const.png", "deg0.png", "deg1.png", "deg2.png", "line.png", "one.png"]
        );
    }

    #[test]
    fn plot_helpers() {
        assert_eq!(fmt_num(0.30000000000000004, 5), "0.3");
        assert_eq!(fmt_num(1e-5, 5), "1e-5");
        assert_eq!(fmt_num(-12.5, 5), "-12.5");
        assert_eq!(fmt_num(250000.0, 5), "2.5e5");
        assert_eq!(fmt_log_tick(&1e-4), "10⁻⁴");
        assert_eq!(fmt_log_tick(&1000.0), "10³");
        assert_eq!(fmt_log_tick(&1.0), "10⁰");
        assert_eq!(fmt_log_tick(&20.0), "20");
        let (lo, hi) = pad_range(3.0, 3.0, 0.05);
        assert!(lo < 3.0 && hi > 3.0);
        let (a, b) = log_range(0.02, 0.08);
        assert!(a < 0.01 && a > 0.009 && b > 0.1 && b < 0.11);
        let h = histogram([0.1, 0.2, 0.9, 5.0, f64::NAN].into_iter(), 0.0, 1.0, 2);
        assert!((h[0] - 1.0).abs() < 1e-12 && (h[1] - 0.5).abs() < 1e-12);
        let s = Series {
            label: "s",
            data: &[0.0; 30_000],
            d: 3,
        };
        assert!(s.subsample(5000).count() <= 5000);
        assert_eq!(s.subsample(20_000).count(), 10_000);
        assert_eq!(s.subsample(3000).count(), 2500);
    }
}
