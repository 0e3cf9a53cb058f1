//! Dependency-free SVG charts for the HTML report: line charts (rate-distortion curves, error against
//! bits per weight), horizontal stacked bar charts (per-tensor coded size split into payload and side
//! information) and histograms (weight distributions with the quantization levels marked).
//!
//! Every function returns one self-contained `<svg>` element with a `viewBox`, meant to be inlined into
//! a single HTML file. The output depends only on the input: coordinates are printed with a fixed number
//! of decimals, tick values come from exact decimal literals, and no hash-map order, clock or font file is
//! involved, so native and wasm builds write the same bytes. Text widths are *estimated* from character
//! counts (there are no font metrics), which is why long names are truncated generously.
//!
//! Robustness: no input panics. Non-finite values and values beyond [`MAX_ABS_VALUE`] are skipped, as are
//! non-positive values on a log axis; a chart with nothing left to draw says "no data".
//!
//! What it does not do: interactivity beyond `<title>` tooltips, sorting or aggregating data (points are
//! drawn in the order given), date axes, or judging whether the figures shown are meaningful.

use std::fmt::Write;

/// Okabe & Ito (2008) colour-blind-safe palette, ordered for contrast on white (yellow, the weakest on
/// white, comes last). Series beyond the eighth reuse the colours with a dash pattern.
pub const PALETTE: [&str; 8] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442",
];

/// Dash patterns for the 1st, 2nd and 3rd round through [`PALETTE`].
const DASHES: [&str; 3] = ["", "6 3", "2 2"];

/// Values with a larger magnitude are treated like non-finite ones (skipped): this keeps every span and
/// pixel coordinate finite without special cases further down.
pub const MAX_ABS_VALUE: f64 = 1e300;

/// Smallest chart size honoured, in pixels; smaller requests are enlarged so the layout never inverts.
const MIN_WIDTH: f64 = 240.0;
const MIN_HEIGHT: f64 = 160.0;

/// Size of [`histogram`] charts, in pixels.
pub const HISTOGRAM_WIDTH: u32 = 640;
pub const HISTOGRAM_HEIGHT: u32 = 360;

/// Font sizes in pixels.
const TITLE_FONT: f64 = 14.0;
const LABEL_FONT: f64 = 12.0;
const TICK_FONT: f64 = 11.0;

/// Estimated advance of one character, as a fraction of the font size (sans-serif digits are 0.556 em;
/// a little more covers capitals).
const CHAR_WIDTH_EM: f64 = 0.6;

/// Bar chart rows: pitch and bar thickness in pixels.
const BAR_ROW_PITCH: f64 = 18.0;
const BAR_THICKNESS: f64 = 12.0;

const GRID_MAJOR: &str = "#dddddd";
const GRID_MINOR: &str = "#f0f0f0";
const FRAME: &str = "#555555";

// ---------------------------------------------------------------------------------------------------
// Public data types
// ---------------------------------------------------------------------------------------------------

/// How values map to positions along an axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    Linear,
    /// Decades are equally spaced; values <= 0 cannot be shown and are skipped.
    Log10,
}

/// One axis: its label, scale, and optionally a fixed range `(low, high)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    pub label: String,
    pub scale: Scale,
    /// `None`: from the data, widened outwards to round tick values. A fixed range that cannot be drawn
    /// (non-finite ends, or an end <= 0 on a log axis) is ignored and the data range is used instead.
    pub range: Option<(f64, f64)>,
}

impl Axis {
    pub fn linear(label: impl Into<String>) -> Self {
        Axis {
            label: label.into(),
            scale: Scale::Linear,
            range: None,
        }
    }

    pub fn log10(label: impl Into<String>) -> Self {
        Axis {
            label: label.into(),
            scale: Scale::Log10,
            range: None,
        }
    }

    pub fn with_range(mut self, low: f64, high: f64) -> Self {
        self.range = Some((low, high));
        self
    }
}

/// How a series is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    Line,
    Points,
    LineAndPoints,
    /// Horizontal then vertical: the value holds until the next point (step-after).
    Steps,
}

/// One named series of `(x, y)` points, drawn in the given order. A skipped point (non-finite, or
/// <= 0 on a log axis) breaks the line there rather than bridging the gap.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub mark: Mark,
}

/// A line/scatter chart. `width` and `height` are the whole chart in pixels, legend included.
#[derive(Clone, Debug, PartialEq)]
pub struct Chart {
    pub title: String,
    pub x: Axis,
    pub y: Axis,
    pub series: Vec<Series>,
    pub width: u32,
    pub height: u32,
}

/// One row of a bar chart: a label (e.g. a tensor name) and stacked non-negative segments.
#[derive(Clone, Debug, PartialEq)]
pub struct Bar {
    pub label: String,
    pub segments: Vec<f64>,
}

/// Horizontal stacked bars, one row per bar; the height grows with the number of bars.
#[derive(Clone, Debug, PartialEq)]
pub struct BarChart {
    pub title: String,
    pub value_axis: Axis,
    /// Names of the segments in stacking order (e.g. "payload", "side information").
    pub segment_names: Vec<String>,
    pub bars: Vec<Bar>,
    pub width: u32,
}

// ---------------------------------------------------------------------------------------------------
// Text and number formatting
// ---------------------------------------------------------------------------------------------------

/// Escapes text for use in XML content and in double- or single-quoted attributes.
pub fn escape_xml(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            // Control characters other than tab/newline are not allowed in XML 1.0 at all.
            c if (c as u32) < 0x20 && c != '\t' && c != '\n' && c != '\r' => {
                escaped.push('\u{FFFD}')
            }
            c => escaped.push(c),
        }
    }
    escaped
}

/// A pixel coordinate with at most two decimals and no trailing zeros. Non-finite values (which the
/// layout never produces) print as 0 so the document stays valid whatever happens.
fn px(value: f64) -> String {
    let value = if value.is_finite() { value } else { 0.0 };
    let mut text = format!("{value:.2}");
    if text.contains('.') {
        while text.ends_with('0') {
            text.pop();
        }
        if text.ends_with('.') {
            text.pop();
        }
    }
    if text == "-0" {
        text = "0".to_string();
    }
    text
}

/// 10^exponent, correctly rounded (parsed from a decimal literal, so identical on every platform).
fn pow10(exponent: i32) -> f64 {
    format!("1e{exponent}")
        .parse()
        .expect("1e<integer> is a valid float literal")
}

/// `mantissa` x 10^exponent, correctly rounded.
fn decimal(mantissa: u32, exponent: i32) -> f64 {
    format!("{mantissa}e{exponent}")
        .parse()
        .expect("<integer>e<integer> is a valid float literal")
}

/// floor(log10(value)) for a positive finite value, exact at powers of ten.
fn floor_log10(value: f64) -> i32 {
    let mut exponent = value.log10().floor() as i32;
    if pow10(exponent) > value {
        exponent -= 1;
    } else if pow10(exponent + 1) <= value {
        exponent += 1;
    }
    exponent
}

/// Removes trailing zeros of a decimal fraction ("1.50" -> "1.5", "2.0" -> "2").
fn trim_fraction(text: &str) -> &str {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        text
    }
}

/// A value for a tooltip: integers exactly (sizes in bytes or bits), others with four significant
/// digits.
fn format_value(value: f64) -> String {
    if !value.is_finite() {
        return format!("{value}");
    }
    if value == value.trunc() && value.abs() < 1e15 {
        return format!("{value:.0}");
    }
    let magnitude = value.abs();
    if !(1e-3..1e6).contains(&magnitude) {
        let text = format!("{value:.3e}");
        match text.split_once('e') {
            Some((mantissa, exponent)) => format!("{}e{exponent}", trim_fraction(mantissa)),
            None => text,
        }
    } else {
        let decimals = (3 - floor_log10(magnitude)).max(0) as usize;
        trim_fraction(&format!("{value:.decimals$}")).to_string()
    }
}

// ---------------------------------------------------------------------------------------------------
// Axes: ranges and ticks
// ---------------------------------------------------------------------------------------------------

/// Whether a value can be placed on an axis of this scale.
fn plottable(value: f64, scale: Scale) -> bool {
    value.is_finite()
        && value.abs() <= MAX_ABS_VALUE
        && match scale {
            Scale::Linear => true,
            Scale::Log10 => value >= 1.0 / MAX_ABS_VALUE,
        }
}

/// A tick step of the form {1, 2, 5} x 10^exponent.
#[derive(Clone, Copy, Debug)]
struct NiceStep {
    mantissa: u32,
    exponent: i32,
}

impl NiceStep {
    /// The smallest 1-2-5 step >= `raw` (a positive finite width).
    fn at_least(raw: f64) -> NiceStep {
        let exponent = floor_log10(raw);
        let normalised = raw / pow10(exponent);
        // The tolerance keeps a raw step of exactly 2.0000000001 (float noise) at 2.
        let tolerance = 1.0 + 1e-9;
        match [1, 2, 5]
            .into_iter()
            .find(|&m| normalised <= m as f64 * tolerance)
        {
            Some(mantissa) => NiceStep { mantissa, exponent },
            None => NiceStep {
                mantissa: 1,
                exponent: exponent + 1,
            },
        }
    }

    fn value(self) -> f64 {
        decimal(self.mantissa, self.exponent)
    }
}

/// A tick position; unlabelled ticks are minor (grid line only).
#[derive(Clone, Debug, PartialEq)]
struct Tick {
    value: f64,
    label: Option<String>,
}

/// An axis after layout: the drawn interval `[low, high]` (low < high, both plottable) and its ticks.
#[derive(Clone, Debug)]
struct ResolvedAxis {
    scale: Scale,
    low: f64,
    high: f64,
    ticks: Vec<Tick>,
}

impl ResolvedAxis {
    fn transform(&self, value: f64) -> f64 {
        match self.scale {
            Scale::Linear => value,
            Scale::Log10 => value.log10(),
        }
    }

    /// Position of `value` as a fraction of the axis (0 at `low`, 1 at `high`), or `None` when the value
    /// cannot be shown on this scale. Far-away values are clamped to +-1e6 axis lengths so pixel
    /// coordinates stay finite; clipping removes them anyway.
    fn fraction(&self, value: f64) -> Option<f64> {
        if !plottable(value, self.scale) {
            return None;
        }
        let low = self.transform(self.low);
        let span = self.transform(self.high) - low;
        let fraction = (self.transform(value) - low) / span;
        fraction.is_finite().then(|| fraction.clamp(-1e6, 1e6))
    }
}

/// Widens an empty or numerically empty interval around its centre so ticks can be placed.
fn widen_degenerate(low: f64, high: f64, scale: Scale) -> (f64, f64) {
    match scale {
        Scale::Linear => {
            let magnitude = low.abs().max(high.abs());
            let span = high - low;
            if span > magnitude * 1e-12 && span > 1e-280 {
                return (low, high);
            }
            let centre = low / 2.0 + high / 2.0;
            if centre.abs() < 1e-280 {
                (-1.0, 1.0)
            } else {
                let half = centre.abs() * 0.1;
                (centre - half, centre + half)
            }
        }
        Scale::Log10 => {
            if high > low * (1.0 + 1e-9) {
                (low, high)
            } else {
                (low / 2.0, low * 2.0)
            }
        }
    }
}

/// Resolves an axis against its data (already restricted to plottable values). `target_ticks` is the
/// wanted number of labelled ticks. `None` when there is neither a usable fixed range nor data.
fn resolve_axis(
    axis: &Axis,
    data: impl Iterator<Item = f64>,
    target_ticks: usize,
) -> Option<ResolvedAxis> {
    let scale = axis.scale;
    let fixed = axis
        .range
        .filter(|&(a, b)| plottable(a, scale) && plottable(b, scale));
    let (low, high, padded) = match fixed {
        Some((a, b)) => (a.min(b), a.max(b), false),
        None => {
            let (mut low, mut high) = (f64::INFINITY, f64::NEG_INFINITY);
            for value in data.filter(|&v| plottable(v, scale)) {
                low = low.min(value);
                high = high.max(value);
            }
            if low > high {
                return None;
            }
            (low, high, true)
        }
    };
    let (low, high) = widen_degenerate(low, high, scale);
    let target_ticks = target_ticks.max(2);
    let (low, high, ticks) = match scale {
        Scale::Linear => {
            let step = NiceStep::at_least((high - low) / target_ticks as f64);
            let (low, high) = if padded {
                let width = step.value();
                ((low / width).floor() * width, (high / width).ceil() * width)
            } else {
                (low, high)
            };
            (low, high, linear_ticks(low, high, step))
        }
        Scale::Log10 => {
            let (low, high) = if padded {
                (snap_125_down(low), snap_125_up(high))
            } else {
                (low, high)
            };
            (low, high, log_ticks(low, high, target_ticks))
        }
    };
    Some(ResolvedAxis {
        scale,
        low,
        high,
        ticks,
    })
}

/// Multiples of `step` in `[low, high]`, labelled. Values are `k * step` (not accumulated), so there is
/// no drift; labels carry only the decimals the step needs.
fn linear_ticks(low: f64, high: f64, step: NiceStep) -> Vec<Tick> {
    let width = step.value();
    // The small tolerance keeps end ticks that float noise puts a hair outside the interval.
    let first = (low / width - 1e-9).ceil();
    let last = (high / width + 1e-9).floor();
    if !(first.is_finite() && last.is_finite()) || last - first > 1000.0 || last < first {
        return Vec::new();
    }
    let values: Vec<f64> = (0..=(last - first) as i64)
        .map(|i| (first + i as f64) * width)
        .map(|v| if v == 0.0 { 0.0 } else { v }) // no "-0"
        .collect();
    let labels = linear_labels(&values, step);
    values
        .into_iter()
        .zip(labels)
        .map(|(value, label)| Tick {
            value,
            label: Some(label),
        })
        .collect()
}

/// Labels for ticks spaced by `step`: plain decimals for moderate magnitudes, `2.5e-9` style when the
/// largest tick is below 0.01 or at least 1e5. The choice is made once per axis so labels agree.
fn linear_labels(values: &[f64], step: NiceStep) -> Vec<String> {
    let largest = values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let scientific = largest > 0.0 && !(1e-2..1e5).contains(&largest);
    values
        .iter()
        .map(|&value| {
            if value == 0.0 {
                "0".to_string()
            } else if scientific {
                let decimals = (floor_log10(value.abs()) - step.exponent).clamp(0, 15) as usize;
                let text = format!("{value:.decimals$e}");
                match text.split_once('e') {
                    Some((mantissa, exponent)) => {
                        format!("{}e{exponent}", trim_fraction(mantissa))
                    }
                    None => text,
                }
            } else {
                let decimals = (-step.exponent).clamp(0, 15) as usize;
                format!("{value:.decimals$}")
            }
        })
        .collect()
}

/// Whether m x 10^exponent is labelled plainly ("0.05" .. "5000") rather than as "5e-6".
fn plain_exponent(exponent: i32) -> bool {
    (-2..=3).contains(&exponent)
}

/// The label of m x 10^k on a log axis; `scientific` is decided once per axis so labels agree.
fn log_label(mantissa: u32, exponent: i32, scientific: bool) -> String {
    if !scientific {
        let decimals = (-exponent).max(0) as usize;
        format!("{:.decimals$}", decimal(mantissa, exponent))
    } else {
        format!("{mantissa}e{exponent}")
    }
}

/// The largest {1, 2, 5} x 10^k <= value.
fn snap_125_down(value: f64) -> f64 {
    let exponent = floor_log10(value);
    [5, 2, 1]
        .into_iter()
        .map(|m| decimal(m, exponent))
        .find(|&v| v <= value)
        .unwrap_or(pow10(exponent))
}

/// The smallest {1, 2, 5} x 10^k >= value.
fn snap_125_up(value: f64) -> f64 {
    let exponent = floor_log10(value);
    [1, 2, 5, 10]
        .into_iter()
        .map(|m| decimal(m, exponent))
        .find(|&v| v >= value)
        .unwrap_or(pow10(exponent + 1))
}

/// Ticks of a log axis over `[low, high]` (0 < low < high).
///
/// Two or more decades: labelled decades (every n-th one when there are more than `target` of them),
/// the other decades as minor ticks, and 2..9 x 10^k minor ticks when the axis spans at most six decades.
/// Less than two decades: labelled 1-2-5 values with 1..9 minor ticks, or, when even those are fewer
/// than two, linear ticks placed on the log scale.
fn log_ticks(low: f64, high: f64, target: usize) -> Vec<Tick> {
    let within = |v: f64| v >= low * (1.0 - 1e-12) && v <= high * (1.0 + 1e-12);
    let first_decade = floor_log10(low);
    let last_decade = floor_log10(high);
    let mut ticks = Vec::new();
    let decades: Vec<i32> = (first_decade..=last_decade)
        .filter(|&k| within(pow10(k)))
        .collect();
    let span_decades = high.log10() - low.log10();
    if decades.len() >= 2 {
        let mut every = decades.len().div_ceil(target).max(1) as i32;
        if decades
            .iter()
            .filter(|&&k| k.rem_euclid(every) == 0)
            .count()
            < 2
        {
            every = 1;
        }
        let scientific = decades
            .iter()
            .any(|&k| k.rem_euclid(every) == 0 && !plain_exponent(k));
        for exponent in first_decade..=last_decade {
            for mantissa in 1..=9u32 {
                let value = decimal(mantissa, exponent);
                if !within(value) {
                    continue;
                }
                if mantissa == 1 {
                    let labelled = exponent.rem_euclid(every) == 0;
                    ticks.push(Tick {
                        value,
                        label: labelled.then(|| log_label(1, exponent, scientific)),
                    });
                } else if span_decades <= 6.0 && every == 1 {
                    ticks.push(Tick { value, label: None });
                }
            }
        }
        return ticks;
    }
    let labelled_count = (first_decade..=last_decade)
        .flat_map(|k| [1, 2, 5].map(|m| decimal(m, k)))
        .filter(|&v| within(v))
        .count();
    if labelled_count >= 2 {
        let scientific = !(plain_exponent(first_decade) && plain_exponent(last_decade));
        for exponent in first_decade..=last_decade {
            for mantissa in 1..=9u32 {
                let value = decimal(mantissa, exponent);
                if within(value) {
                    let labelled = matches!(mantissa, 1 | 2 | 5);
                    ticks.push(Tick {
                        value,
                        label: labelled.then(|| log_label(mantissa, exponent, scientific)),
                    });
                }
            }
        }
        return ticks;
    }
    let step = NiceStep::at_least((high - low) / target as f64);
    linear_ticks(low, high, step)
}

// ---------------------------------------------------------------------------------------------------
// SVG writing helpers
// ---------------------------------------------------------------------------------------------------

fn text_width(text: &str, font_size: f64) -> f64 {
    text.chars().count() as f64 * font_size * CHAR_WIDTH_EM
}

/// `text` cut to at most `max_chars` characters by replacing its middle with an ellipsis. Tensor names
/// differ at both ends ("model.layers.17" ... "k_proj.weight"), so both ends are kept.
fn truncate_chars(text: &str, max_chars: usize) -> String {
    let length = text.chars().count();
    if length <= max_chars {
        return text.to_string();
    }
    let kept = max_chars.saturating_sub(1);
    let head = kept / 2;
    let tail = kept - head;
    let start: String = text.chars().take(head).collect();
    let end: String = text.chars().skip(length - tail).collect();
    format!("{start}\u{2026}{end}")
}

/// Writes the opening `<svg>` element, its accessible title, the shared style and a white background.
///
/// A `<style>` inside inline SVG applies to the whole HTML page, so its rule is scoped to the
/// `lowbit-chart` class; the charts use no element ids, so any number of them can share one page.
fn open_svg(out: &mut String, width: f64, height: f64, title: &str) {
    let title = escape_xml(title);
    let (w, h) = (px(width), px(height));
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"lowbit-chart\" viewBox=\"0 0 {w} {h}\" \
         width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{title}\">\n<title>{title}</title>\n\
         <style>svg.lowbit-chart text{{font-family:sans-serif;fill:#222222}}</style>\n\
         <rect width=\"{w}\" height=\"{h}\" fill=\"#ffffff\"/>\n"
    );
}

#[derive(Clone, Copy)]
enum Anchor {
    Start,
    Middle,
    End,
}

fn text(out: &mut String, x: f64, y: f64, size: f64, anchor: Anchor, content: &str) {
    let anchor = match anchor {
        Anchor::Start => "",
        Anchor::Middle => " text-anchor=\"middle\"",
        Anchor::End => " text-anchor=\"end\"",
    };
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{}\" font-size=\"{}\"{anchor}>{}</text>",
        px(x),
        px(y),
        px(size),
        escape_xml(content)
    );
}

fn write_title(out: &mut String, width: f64, title: &str) {
    if !title.is_empty() {
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"20\" font-size=\"{}\" font-weight=\"bold\" text-anchor=\"middle\">{}</text>",
            px(width / 2.0),
            px(TITLE_FONT),
            escape_xml(title)
        );
    }
}

fn line(out: &mut String, from: (f64, f64), to: (f64, f64), colour: &str, stroke_width: f64) {
    let _ = writeln!(
        out,
        "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{colour}\" stroke-width=\"{}\"/>",
        px(from.0),
        px(from.1),
        px(to.0),
        px(to.1),
        px(stroke_width)
    );
}

/// A chart that only says why there is nothing to show.
fn message_chart(title: &str, width: f64, height: f64, message: &str) -> String {
    let mut out = String::new();
    open_svg(&mut out, width, height, title);
    write_title(&mut out, width, title);
    let _ = writeln!(
        out,
        "<rect x=\"8\" y=\"30\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"{FRAME}\"/>",
        px(width - 16.0),
        px(height - 38.0)
    );
    text(
        &mut out,
        width / 2.0,
        (height + 30.0) / 2.0,
        LABEL_FONT,
        Anchor::Middle,
        message,
    );
    out.push_str("</svg>\n");
    out
}

/// The plot area in pixels (y grows downwards).
#[derive(Clone, Copy, Debug)]
struct PlotRect {
    left: f64,
    top: f64,
    right: f64,
    bottom: f64,
}

impl PlotRect {
    fn width(&self) -> f64 {
        self.right - self.left
    }
    fn height(&self) -> f64 {
        self.bottom - self.top
    }
    fn contains(&self, (x, y): (f64, f64)) -> bool {
        let slack = 0.5;
        x >= self.left - slack
            && x <= self.right + slack
            && y >= self.top - slack
            && y <= self.bottom + slack
    }
}

/// Liang-Barsky clipping of the segment `a`-`b` to `rect`; `None` when no part of it is inside.
fn clip_segment(a: (f64, f64), b: (f64, f64), rect: &PlotRect) -> Option<((f64, f64), (f64, f64))> {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let (mut enter, mut leave) = (0.0f64, 1.0f64);
    for (p, q) in [
        (-dx, a.0 - rect.left),
        (dx, rect.right - a.0),
        (-dy, a.1 - rect.top),
        (dy, rect.bottom - a.1),
    ] {
        if p == 0.0 {
            if q < 0.0 {
                return None;
            }
        } else {
            let t = q / p;
            if p < 0.0 {
                enter = enter.max(t);
            } else {
                leave = leave.min(t);
            }
        }
    }
    if enter > leave {
        return None;
    }
    let at = |t: f64| (a.0 + t * dx, a.1 + t * dy);
    Some((
        if enter > 0.0 { at(enter) } else { a },
        if leave < 1.0 { at(leave) } else { b },
    ))
}

/// How a legend entry is drawn.
#[derive(Clone, Copy)]
enum Swatch {
    Series { index: usize, mark: Mark },
    Block { colour: &'static str },
    Rule { colour: &'static str },
}

struct LegendEntry {
    name: String,
    swatch: Swatch,
}

const LEGEND_ROW: f64 = 16.0;
const LEGEND_SWATCH: f64 = 22.0;

fn legend_entry_width(entry: &LegendEntry) -> f64 {
    LEGEND_SWATCH + 6.0 + text_width(&entry.name, TICK_FONT) + 16.0
}

/// Flows legend entries into rows no wider than `width`; returns each entry's row and x offset.
fn legend_layout(entries: &[LegendEntry], width: f64) -> (Vec<(usize, f64)>, usize) {
    let mut placement = Vec::with_capacity(entries.len());
    let (mut row, mut x) = (0usize, 0.0f64);
    for entry in entries {
        let entry_width = legend_entry_width(entry);
        if x > 0.0 && x + entry_width > width {
            row += 1;
            x = 0.0;
        }
        placement.push((row, x));
        x += entry_width;
    }
    let rows = if entries.is_empty() { 0 } else { row + 1 };
    (placement, rows)
}

fn draw_legend(out: &mut String, entries: &[LegendEntry], left: f64, top: f64, width: f64) {
    let (placement, _) = legend_layout(entries, width);
    for (entry, &(row, offset)) in entries.iter().zip(&placement) {
        let x = left + offset;
        let middle = top + row as f64 * LEGEND_ROW + LEGEND_ROW / 2.0;
        match entry.swatch {
            Swatch::Series { index, mark } => {
                let style = SeriesStyle::of(index);
                if mark != Mark::Points {
                    let _ = writeln!(
                        out,
                        "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"2\"{}/>",
                        px(x),
                        px(middle),
                        px(x + LEGEND_SWATCH),
                        px(middle),
                        style.colour,
                        style.dash_attribute()
                    );
                }
                if matches!(mark, Mark::Points | Mark::LineAndPoints) {
                    let _ = write!(out, "<g fill=\"{}\">", style.colour);
                    marker(out, style.shape, (x + LEGEND_SWATCH / 2.0, middle));
                    out.push_str("</g>\n");
                }
            }
            Swatch::Block { colour } => {
                let _ = writeln!(
                    out,
                    "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"10\" fill=\"{colour}\"/>",
                    px(x + 4.0),
                    px(middle - 5.0),
                    px(LEGEND_SWATCH - 8.0)
                );
            }
            Swatch::Rule { colour } => {
                line(
                    out,
                    (x + LEGEND_SWATCH / 2.0, middle - 6.0),
                    (x + LEGEND_SWATCH / 2.0, middle + 6.0),
                    colour,
                    1.5,
                );
            }
        }
        text(
            out,
            x + LEGEND_SWATCH + 6.0,
            middle + 4.0,
            TICK_FONT,
            Anchor::Start,
            &entry.name,
        );
    }
}

/// Colour, dash pattern and marker shape of the series with this index.
struct SeriesStyle {
    colour: &'static str,
    dash: &'static str,
    shape: usize,
}

impl SeriesStyle {
    fn of(index: usize) -> SeriesStyle {
        SeriesStyle {
            colour: PALETTE[index % PALETTE.len()],
            dash: DASHES[(index / PALETTE.len()) % DASHES.len()],
            shape: index % 4,
        }
    }

    fn dash_attribute(&self) -> String {
        if self.dash.is_empty() {
            String::new()
        } else {
            format!(" stroke-dasharray=\"{}\"", self.dash)
        }
    }
}

/// A point marker (circle, square, triangle or diamond, by `shape`), filled by the enclosing group.
fn marker(out: &mut String, shape: usize, (x, y): (f64, f64)) {
    let size = 3.2;
    match shape % 4 {
        0 => {
            let _ = write!(
                out,
                "<circle cx=\"{}\" cy=\"{}\" r=\"{}\"/>",
                px(x),
                px(y),
                px(size)
            );
        }
        1 => {
            let _ = write!(
                out,
                "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"/>",
                px(x - size * 0.9),
                px(y - size * 0.9),
                px(size * 1.8),
                px(size * 1.8)
            );
        }
        2 => {
            let _ = write!(
                out,
                "<path d=\"M{},{}L{},{}L{},{}Z\"/>",
                px(x),
                px(y - size * 1.2),
                px(x + size * 1.1),
                px(y + size * 0.8),
                px(x - size * 1.1),
                px(y + size * 0.8)
            );
        }
        _ => {
            let _ = write!(
                out,
                "<path d=\"M{},{}L{},{}L{},{}L{},{}Z\"/>",
                px(x),
                px(y - size * 1.25),
                px(x + size * 1.25),
                px(y),
                px(x),
                px(y + size * 1.25),
                px(x - size * 1.25),
                px(y)
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// x-y frame shared by the line chart and the histogram
// ---------------------------------------------------------------------------------------------------

/// A laid-out x-y chart: the plot rectangle and both resolved axes.
struct XyFrame {
    rect: PlotRect,
    x: ResolvedAxis,
    y: ResolvedAxis,
}

impl XyFrame {
    /// Pixel position of a data point, `None` when either coordinate cannot be shown on its scale.
    fn to_pixel(&self, (x, y): (f64, f64)) -> Option<(f64, f64)> {
        let fx = self.x.fraction(x)?;
        let fy = self.y.fraction(y)?;
        Some((
            self.rect.left + fx * self.rect.width(),
            self.rect.bottom - fy * self.rect.height(),
        ))
    }
}

/// Inputs of [`layout_xy`] (grouped to keep the signature short).
struct XySpec<'a> {
    width: f64,
    height: f64,
    title: &'a str,
    x_axis: &'a Axis,
    y_axis: &'a Axis,
    legend: &'a [LegendEntry],
}

/// Pixels from the plot area's bottom to the legend's top: x tick labels (16 px), then the x axis
/// label (18 px).
const XY_LEGEND_OFFSET: f64 = 44.0;

/// Places the plot area, resolves both axes and draws the title, grid, frame, ticks, axis labels and
/// legend. `xs`/`ys` are the data coordinates that the automatic ranges must cover. `None` when an axis
/// has neither data nor a usable fixed range.
fn layout_xy(
    out: &mut String,
    spec: &XySpec,
    xs: impl Iterator<Item = f64>,
    ys: impl Iterator<Item = f64>,
) -> Option<XyFrame> {
    let frame = place_xy_frame(spec, xs, ys)?;
    let rect = frame.rect;
    write_title(out, spec.width, spec.title);
    draw_xy_grid(out, &frame);
    let _ = writeln!(
        out,
        "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"{FRAME}\"/>",
        px(rect.left),
        px(rect.top),
        px(rect.width()),
        px(rect.height())
    );
    draw_xy_ticks(out, &frame);
    draw_xy_axis_labels(out, spec, &rect);
    draw_legend(
        out,
        spec.legend,
        12.0,
        rect.bottom + XY_LEGEND_OFFSET,
        spec.width - 24.0,
    );
    Some(frame)
}

/// The plot rectangle, with room for the title, the y tick labels, the axis labels and the legend
/// rows, and both axes resolved to fit it.
fn place_xy_frame(
    spec: &XySpec,
    xs: impl Iterator<Item = f64>,
    ys: impl Iterator<Item = f64>,
) -> Option<XyFrame> {
    let (width, height) = (spec.width, spec.height);
    let top = if spec.title.is_empty() { 12.0 } else { 34.0 };
    let (_, legend_rows) = legend_layout(spec.legend, width - 24.0);
    let bottom_margin = if legend_rows > 0 {
        XY_LEGEND_OFFSET + legend_rows as f64 * LEGEND_ROW + 4.0
    } else {
        40.0
    };
    let plot_height = height - top - bottom_margin;
    let y = resolve_axis(
        spec.y_axis,
        ys,
        ((plot_height / 45.0) as usize).clamp(2, 10),
    )?;
    let y_label_width = y
        .ticks
        .iter()
        .filter_map(|t| t.label.as_deref())
        .map(|l| text_width(l, TICK_FONT))
        .fold(0.0, f64::max);
    let axis_label_room = if spec.y_axis.label.is_empty() {
        4.0
    } else {
        22.0
    };
    let left = axis_label_room + y_label_width + 10.0;
    let right = width - 28.0;
    let x = resolve_axis(
        spec.x_axis,
        xs,
        (((right - left) / 90.0) as usize).clamp(2, 10),
    )?;
    let rect = PlotRect {
        left,
        top,
        right,
        bottom: height - bottom_margin,
    };
    Some(XyFrame { rect, x, y })
}

/// Grid lines at every tick: minor lines first so major ones draw over them.
fn draw_xy_grid(out: &mut String, frame: &XyFrame) {
    let rect = frame.rect;
    for minor_pass in [true, false] {
        for tick in &frame.x.ticks {
            if tick.label.is_none() != minor_pass {
                continue;
            }
            if let Some(f) = frame.x.fraction(tick.value) {
                let gx = rect.left + f * rect.width();
                let colour = if minor_pass { GRID_MINOR } else { GRID_MAJOR };
                line(out, (gx, rect.top), (gx, rect.bottom), colour, 1.0);
            }
        }
        for tick in &frame.y.ticks {
            if tick.label.is_none() != minor_pass {
                continue;
            }
            if let Some(f) = frame.y.fraction(tick.value) {
                let gy = rect.bottom - f * rect.height();
                let colour = if minor_pass { GRID_MINOR } else { GRID_MAJOR };
                line(out, (rect.left, gy), (rect.right, gy), colour, 1.0);
            }
        }
    }
}

/// Tick marks and labels of the labelled ticks, below the x axis and left of the y axis.
fn draw_xy_ticks(out: &mut String, frame: &XyFrame) {
    let rect = frame.rect;
    for tick in &frame.x.ticks {
        let (Some(label), Some(f)) = (&tick.label, frame.x.fraction(tick.value)) else {
            continue;
        };
        let gx = rect.left + f * rect.width();
        line(out, (gx, rect.bottom), (gx, rect.bottom + 4.0), FRAME, 1.0);
        text(
            out,
            gx,
            rect.bottom + 16.0,
            TICK_FONT,
            Anchor::Middle,
            label,
        );
    }
    for tick in &frame.y.ticks {
        let (Some(label), Some(f)) = (&tick.label, frame.y.fraction(tick.value)) else {
            continue;
        };
        let gy = rect.bottom - f * rect.height();
        line(out, (rect.left - 4.0, gy), (rect.left, gy), FRAME, 1.0);
        text(
            out,
            rect.left - 6.0,
            gy + 4.0,
            TICK_FONT,
            Anchor::End,
            label,
        );
    }
}

/// The x axis label below the tick labels and the y axis label rotated along the left edge, when
/// they are not empty.
fn draw_xy_axis_labels(out: &mut String, spec: &XySpec, rect: &PlotRect) {
    if !spec.x_axis.label.is_empty() {
        text(
            out,
            (rect.left + rect.right) / 2.0,
            rect.bottom + 34.0,
            LABEL_FONT,
            Anchor::Middle,
            &spec.x_axis.label,
        );
    }
    if !spec.y_axis.label.is_empty() {
        let (lx, ly) = (14.0, (rect.top + rect.bottom) / 2.0);
        let _ = writeln!(
            out,
            "<text x=\"{0}\" y=\"{1}\" font-size=\"{2}\" text-anchor=\"middle\" transform=\"rotate(-90 {0} {1})\">{3}</text>",
            px(lx),
            px(ly),
            px(LABEL_FONT),
            escape_xml(&spec.y_axis.label)
        );
    }
}

// ---------------------------------------------------------------------------------------------------
// Line chart
// ---------------------------------------------------------------------------------------------------

/// Accumulates clipped segments into polylines: a segment that starts where the last one ended extends
/// the current polyline.
struct PolylineBuilder<'a> {
    out: &'a mut String,
    attributes: String,
    run: Vec<(f64, f64)>,
}

impl PolylineBuilder<'_> {
    fn segment(&mut self, a: (f64, f64), b: (f64, f64), rect: &PlotRect) {
        let Some((p, q)) = clip_segment(a, b, rect) else {
            self.flush();
            return;
        };
        if self.run.last() != Some(&p) {
            self.flush();
            self.run.push(p);
        }
        self.run.push(q);
    }

    fn flush(&mut self) {
        if self.run.len() >= 2 {
            let points: Vec<String> = self
                .run
                .iter()
                .map(|&(x, y)| format!("{},{}", px(x), px(y)))
                .collect();
            let _ = writeln!(
                self.out,
                "<polyline points=\"{}\"{}/>",
                points.join(" "),
                self.attributes
            );
        }
        self.run.clear();
    }
}

/// A line or scatter chart of one or more series, with a legend when there is more than one series.
/// Returns an `<svg>` element; says "no data" when no point can be placed.
pub fn line_chart(chart: &Chart) -> String {
    let width = (chart.width as f64).max(MIN_WIDTH);
    let height = (chart.height as f64).max(MIN_HEIGHT);
    let (x_scale, y_scale) = (chart.x.scale, chart.y.scale);
    let drawable = |&(x, y): &(f64, f64)| plottable(x, x_scale) && plottable(y, y_scale);
    let any_point = chart.series.iter().any(|s| s.points.iter().any(&drawable));
    if !any_point {
        return message_chart(&chart.title, width, height, "no data");
    }
    let legend: Vec<LegendEntry> = if chart.series.len() > 1 {
        chart
            .series
            .iter()
            .enumerate()
            .map(|(index, s)| LegendEntry {
                name: s.name.clone(),
                swatch: Swatch::Series {
                    index,
                    mark: s.mark,
                },
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut out = String::new();
    open_svg(&mut out, width, height, &chart.title);
    let spec = XySpec {
        width,
        height,
        title: &chart.title,
        x_axis: &chart.x,
        y_axis: &chart.y,
        legend: &legend,
    };
    let points = || {
        chart
            .series
            .iter()
            .flat_map(|s| s.points.iter().copied())
            .filter(drawable)
    };
    let Some(frame) = layout_xy(
        &mut out,
        &spec,
        points().map(|p| p.0),
        points().map(|p| p.1),
    ) else {
        return message_chart(&chart.title, width, height, "no data");
    };
    for (index, series) in chart.series.iter().enumerate() {
        draw_series(&mut out, &frame, index, series);
    }
    out.push_str("</svg>\n");
    out
}

fn draw_series(out: &mut String, frame: &XyFrame, index: usize, series: &Series) {
    let style = SeriesStyle::of(index);
    let pixels: Vec<Option<(f64, f64)>> =
        series.points.iter().map(|&p| frame.to_pixel(p)).collect();
    let _ = writeln!(out, "<g><title>{}</title>", escape_xml(&series.name));
    let draws_line = matches!(series.mark, Mark::Line | Mark::LineAndPoints | Mark::Steps);
    let mut isolated = Vec::new();
    if draws_line {
        let mut builder = PolylineBuilder {
            out: &mut *out,
            attributes: format!(
                " fill=\"none\" stroke=\"{}\" stroke-width=\"1.75\" stroke-linejoin=\"round\"{}",
                style.colour,
                style.dash_attribute()
            ),
            run: Vec::new(),
        };
        for i in 0..pixels.len() {
            let previous = if i > 0 { pixels[i - 1] } else { None };
            let next = pixels.get(i + 1).copied().flatten();
            match (pixels[i], next) {
                (Some(a), Some(b)) => {
                    if series.mark == Mark::Steps {
                        let corner = (b.0, a.1);
                        builder.segment(a, corner, &frame.rect);
                        builder.segment(corner, b, &frame.rect);
                    } else {
                        builder.segment(a, b, &frame.rect);
                    }
                }
                (Some(a), None) => {
                    builder.flush();
                    // A point with no drawable neighbour would vanish from a line: show it as a dot.
                    if previous.is_none() {
                        isolated.push(a);
                    }
                }
                (None, _) => builder.flush(),
            }
        }
        builder.flush();
    }
    let marked: Vec<(f64, f64)> = if draws_line && series.mark != Mark::LineAndPoints {
        isolated
    } else {
        pixels.iter().flatten().copied().collect()
    };
    let marked: Vec<(f64, f64)> = marked
        .into_iter()
        .filter(|&p| frame.rect.contains(p))
        .collect();
    if !marked.is_empty() {
        let _ = write!(out, "<g fill=\"{}\">", style.colour);
        for p in marked {
            marker(out, style.shape, p);
        }
        out.push_str("</g>\n");
    }
    out.push_str("</g>\n");
}

// ---------------------------------------------------------------------------------------------------
// Histogram
// ---------------------------------------------------------------------------------------------------

const HISTOGRAM_FILL: &str = "#0072B2";
const MARKER_COLOUR: &str = "#D55E00";

/// A histogram of `counts` over bins `[bin_edges[i], bin_edges[i + 1])`, with vertical lines at
/// `markers` (e.g. quantization levels). The count axis is linear from 0. Bins whose edges cannot be
/// shown on `x` (non-finite, not increasing, <= 0 on a log axis) are skipped; `bin_edges` must hold one
/// more value than `counts`, otherwise the chart says why it is empty. The chart is
/// [`HISTOGRAM_WIDTH`] x [`HISTOGRAM_HEIGHT`] pixels.
pub fn histogram(
    title: &str,
    x: &Axis,
    bin_edges: &[f64],
    counts: &[u64],
    markers: &[f64],
) -> String {
    let width = HISTOGRAM_WIDTH as f64;
    let height = HISTOGRAM_HEIGHT as f64;
    if bin_edges.len() != counts.len() + 1 {
        let message = format!(
            "no data ({} bin edges for {} counts)",
            bin_edges.len(),
            counts.len()
        );
        return message_chart(title, width, height, &message);
    }
    let bins: Vec<(f64, f64, f64)> = bin_edges
        .windows(2)
        .zip(counts)
        .filter_map(|(edges, &count)| {
            let (left, right) = (edges[0], edges[1]);
            (plottable(left, x.scale) && plottable(right, x.scale) && right > left).then_some((
                left,
                right,
                count as f64,
            ))
        })
        .collect();
    if bins.is_empty() {
        return message_chart(title, width, height, "no data");
    }
    let markers: Vec<f64> = markers
        .iter()
        .copied()
        .filter(|&m| plottable(m, x.scale))
        .collect();
    let mut legend = vec![LegendEntry {
        name: "count per bin".to_string(),
        swatch: Swatch::Block {
            colour: HISTOGRAM_FILL,
        },
    }];
    if !markers.is_empty() {
        legend.push(LegendEntry {
            name: format!("marker ({})", markers.len()),
            swatch: Swatch::Rule {
                colour: MARKER_COLOUR,
            },
        });
    }
    let y_axis = Axis::linear("count");
    let mut out = String::new();
    open_svg(&mut out, width, height, title);
    let spec = XySpec {
        width,
        height,
        title,
        x_axis: x,
        y_axis: &y_axis,
        legend: &legend,
    };
    let xs = bins
        .iter()
        .flat_map(|&(l, r, _)| [l, r])
        .chain(markers.iter().copied());
    // 0 is always on the count axis; 1 keeps an all-zero histogram from a degenerate range.
    let ys = bins.iter().map(|b| b.2).chain([0.0, 1.0]);
    let Some(frame) = layout_xy(&mut out, &spec, xs, ys) else {
        return message_chart(title, width, height, "no data");
    };
    let rect = frame.rect;
    let _ = writeln!(out, "<g fill=\"{HISTOGRAM_FILL}\" fill-opacity=\"0.85\">");
    for &(left, right, count) in &bins {
        let (Some(a), Some(b)) = (frame.to_pixel((left, count)), frame.to_pixel((right, 0.0)))
        else {
            continue;
        };
        let x0 = a.0.max(rect.left);
        let x1 = b.0.min(rect.right);
        let y0 = a.1.max(rect.top);
        let y1 = b.1.min(rect.bottom);
        if x1 > x0 && y1 > y0 {
            let _ = writeln!(
                out,
                "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"/>",
                px(x0),
                px(y0),
                px(x1 - x0),
                px(y1 - y0)
            );
        }
    }
    out.push_str("</g>\n");
    let _ = writeln!(out, "<g stroke-opacity=\"0.8\">");
    for &m in &markers {
        if let Some(f) = frame.x.fraction(m).filter(|f| (0.0..=1.0).contains(f)) {
            let mx = rect.left + f * rect.width();
            line(
                &mut out,
                (mx, rect.top),
                (mx, rect.bottom),
                MARKER_COLOUR,
                1.0,
            );
        }
    }
    out.push_str("</g>\n</svg>\n");
    out
}

// ---------------------------------------------------------------------------------------------------
// Horizontal stacked bar chart
// ---------------------------------------------------------------------------------------------------

/// A segment length that can be stacked: finite, non-negative, not absurdly large.
fn stackable(value: f64) -> bool {
    value.is_finite() && (0.0..=MAX_ABS_VALUE).contains(&value)
}

/// Horizontal stacked bars, one row per bar, in the given order. The height grows with the number of
/// bars (18 px a row); labels longer than the label column lose their middle to an ellipsis, and each row has a
/// tooltip with the full label and every segment's value. Segments that are negative or non-finite are
/// not drawn (the tooltip still shows them). The value axis is drawn above the rows (and repeated below
/// them when there are many rows); a linear value axis always includes 0.
pub fn bar_chart(chart: &BarChart) -> String {
    let width = (chart.width as f64).max(MIN_WIDTH);
    if chart.bars.is_empty() {
        return message_chart(&chart.title, width, MIN_HEIGHT, "no data");
    }
    let boundaries = bar_boundaries(chart);
    let legend = segment_legend(&chart.segment_names);
    let layout = bar_layout(chart, &legend, width);
    let rect = layout.rect;
    let target_ticks = ((rect.width() / 90.0) as usize).clamp(2, 10);
    let Some(axis) = resolve_axis(&chart.value_axis, boundaries.into_iter(), target_ticks) else {
        return message_chart(&chart.title, width, MIN_HEIGHT, "no data");
    };

    let mut out = String::new();
    open_svg(&mut out, width, layout.height, &chart.title);
    write_title(&mut out, width, &chart.title);
    draw_legend(&mut out, &legend, 12.0, layout.legend_top, width - 24.0);
    if !chart.value_axis.label.is_empty() {
        text(
            &mut out,
            (rect.left + rect.right) / 2.0,
            layout.axis_label_y,
            LABEL_FONT,
            Anchor::Middle,
            &chart.value_axis.label,
        );
    }
    // Zebra stripes make a row easy to follow from its label to its bar.
    for row in (1..chart.bars.len()).step_by(2) {
        let _ = writeln!(
            out,
            "<rect x=\"4\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"#f5f5f5\"/>",
            px(rect.top + row as f64 * BAR_ROW_PITCH),
            px(width - 8.0),
            px(BAR_ROW_PITCH)
        );
    }
    draw_value_grid(&mut out, &axis, &layout);
    for (row, bar) in chart.bars.iter().enumerate() {
        let row_top = rect.top + row as f64 * BAR_ROW_PITCH;
        draw_bar_row(&mut out, chart, bar, row_top, &axis, &layout);
    }
    out.push_str("</svg>\n");
    out
}

/// Segment boundaries (cumulative sums) that the value axis must cover; a linear axis also covers 0
/// (and 1 when every boundary is 0).
fn bar_boundaries(chart: &BarChart) -> Vec<f64> {
    let scale = chart.value_axis.scale;
    let mut boundaries = Vec::new();
    for bar in &chart.bars {
        let mut total = 0.0;
        for &segment in bar.segments.iter().filter(|&&s| stackable(s)) {
            total += segment;
            if plottable(total, scale) {
                boundaries.push(total);
            }
        }
    }
    if scale == Scale::Linear {
        boundaries.push(0.0);
        if boundaries.iter().all(|&b| b == 0.0) {
            boundaries.push(1.0);
        }
    }
    boundaries
}

/// One legend entry per segment name, in the palette's colours; none for fewer than two segments.
fn segment_legend(segment_names: &[String]) -> Vec<LegendEntry> {
    if segment_names.len() >= 2 {
        segment_names
            .iter()
            .enumerate()
            .map(|(i, name)| LegendEntry {
                name: name.clone(),
                swatch: Swatch::Block {
                    colour: PALETTE[i % PALETTE.len()],
                },
            })
            .collect()
    } else {
        Vec::new()
    }
}

/// Where the parts of a bar chart go, top to bottom.
struct BarLayout {
    legend_top: f64,
    axis_label_y: f64,
    top_ticks_y: f64,
    /// The bars' area: right of the label column, one [`BAR_ROW_PITCH`] row per bar.
    rect: PlotRect,
    /// The whole chart's height.
    height: f64,
    /// Whether the tick labels are repeated below the rows (many rows).
    repeat_ticks: bool,
    /// Labels longer than this lose their middle.
    max_label_chars: usize,
}

/// Stacks the title, legend rows, axis label and top tick labels above the rows, and places the
/// label column left of the bars.
fn bar_layout(chart: &BarChart, legend: &[LegendEntry], width: f64) -> BarLayout {
    let label_column = (width * 0.4).min(300.0);
    let max_label_chars = (((label_column - 10.0) / (TICK_FONT * CHAR_WIDTH_EM)) as usize).max(4);
    let plot_left = label_column;
    let plot_right = width - 24.0;

    let mut y = if chart.title.is_empty() { 8.0 } else { 30.0 };
    let legend_top = y;
    let (_, legend_rows) = legend_layout(legend, width - 24.0);
    y += legend_rows as f64 * LEGEND_ROW;
    let axis_label_y = y + 14.0;
    if !chart.value_axis.label.is_empty() {
        y += 18.0;
    }
    let top_ticks_y = y + 12.0;
    let plot_top = y + 18.0;
    let rows = chart.bars.len();
    let plot_bottom = plot_top + rows as f64 * BAR_ROW_PITCH;
    let repeat_ticks = rows > 15;
    let height = plot_bottom + if repeat_ticks { 24.0 } else { 8.0 };
    BarLayout {
        legend_top,
        axis_label_y,
        top_ticks_y,
        rect: PlotRect {
            left: plot_left,
            top: plot_top,
            right: plot_right,
            bottom: plot_bottom,
        },
        height,
        repeat_ticks,
        max_label_chars,
    }
}

/// Vertical grid lines at the value axis' ticks with their labels above the rows (and below them
/// when repeated), then the axis line left of the bars.
fn draw_value_grid(out: &mut String, axis: &ResolvedAxis, layout: &BarLayout) {
    let rect = layout.rect;
    for tick in &axis.ticks {
        let Some(gx) = axis
            .fraction(tick.value)
            .map(|f| rect.left + f * rect.width())
        else {
            continue;
        };
        let colour = if tick.label.is_some() {
            GRID_MAJOR
        } else {
            GRID_MINOR
        };
        line(out, (gx, rect.top), (gx, rect.bottom), colour, 1.0);
        if let Some(label) = &tick.label {
            text(
                out,
                gx,
                layout.top_ticks_y,
                TICK_FONT,
                Anchor::Middle,
                label,
            );
            if layout.repeat_ticks {
                text(
                    out,
                    gx,
                    rect.bottom + 14.0,
                    TICK_FONT,
                    Anchor::Middle,
                    label,
                );
            }
        }
    }
    line(
        out,
        (rect.left, rect.top),
        (rect.left, rect.bottom),
        FRAME,
        1.0,
    );
}

/// One bar's row: a group with its tooltip, its (truncated) label and its stacked segments.
fn draw_bar_row(
    out: &mut String,
    chart: &BarChart,
    bar: &Bar,
    row_top: f64,
    axis: &ResolvedAxis,
    layout: &BarLayout,
) {
    let rect = layout.rect;
    let to_x = |value: f64| -> Option<f64> {
        axis.fraction(value)
            .map(|f| (rect.left + f * rect.width()).clamp(rect.left, rect.right))
    };
    let _ = writeln!(
        out,
        "<g><title>{}</title>",
        escape_xml(&bar_tooltip(bar, &chart.segment_names))
    );
    text(
        out,
        rect.left - 6.0,
        row_top + BAR_ROW_PITCH / 2.0 + 4.0,
        TICK_FONT,
        Anchor::End,
        &truncate_chars(&bar.label, layout.max_label_chars),
    );
    let mut stacked = 0.0;
    for (index, &segment) in bar.segments.iter().enumerate() {
        if !stackable(segment) {
            continue;
        }
        let start = stacked;
        stacked += segment;
        // On a log axis a bar starts at the axis minimum: 0 has no position there.
        let x0 = if start > 0.0 {
            to_x(start)
        } else {
            Some(rect.left)
        };
        let (Some(x0), Some(x1)) = (x0, to_x(stacked)) else {
            continue;
        };
        if x1 > x0 {
            let _ = writeln!(
                out,
                "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\"/>",
                px(x0),
                px(row_top + (BAR_ROW_PITCH - BAR_THICKNESS) / 2.0),
                px(x1 - x0),
                px(BAR_THICKNESS),
                PALETTE[index % PALETTE.len()]
            );
        }
    }
    out.push_str("</g>\n");
}

/// "label: payload 1200, side information 34 (total 1234)".
fn bar_tooltip(bar: &Bar, segment_names: &[String]) -> String {
    let parts: Vec<String> = bar
        .segments
        .iter()
        .enumerate()
        .map(|(i, &value)| {
            let name = segment_names
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("segment {}", i + 1));
            format!("{name} {}", format_value(value))
        })
        .collect();
    let total: f64 = bar.segments.iter().filter(|&&s| stackable(s)).sum();
    if parts.len() > 1 {
        format!(
            "{}: {} (total {})",
            bar.label,
            parts.join(", "),
            format_value(total)
        )
    } else {
        format!("{}: {}", bar.label, parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal well-formedness check: one root element, balanced tags, quoted attributes without
    /// duplicates, and `&` only as a predefined entity in text and attribute values.
    fn check_well_formed(document: &str) -> Result<(), String> {
        fn check_entities(text: &str) -> Result<(), String> {
            if text.contains('<') {
                return Err(format!("raw '<' in {text:?}"));
            }
            let mut rest = text;
            while let Some(at) = rest.find('&') {
                rest = &rest[at..];
                let ok = ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"]
                    .iter()
                    .any(|e| rest.starts_with(e));
                if !ok {
                    return Err(format!("bare '&' in {text:?}"));
                }
                rest = &rest[1..];
            }
            Ok(())
        }
        let mut stack: Vec<String> = Vec::new();
        let mut roots = 0;
        let mut rest = document;
        while !rest.is_empty() {
            let Some(open) = rest.find('<') else {
                if !rest.trim().is_empty() && stack.is_empty() {
                    return Err("text outside the root".into());
                }
                check_entities(rest)?;
                break;
            };
            let text = &rest[..open];
            if stack.is_empty() && !text.trim().is_empty() {
                return Err(format!("text outside the root: {text:?}"));
            }
            check_entities(text)?;
            rest = &rest[open..];
            // Find the closing '>' outside quoted attribute values.
            let mut quote = None;
            let mut end = None;
            for (i, c) in rest.char_indices().skip(1) {
                match (quote, c) {
                    (None, '"' | '\'') => quote = Some(c),
                    (Some(q), c) if c == q => quote = None,
                    (None, '>') => {
                        end = Some(i);
                        break;
                    }
                    (None, '<') => return Err("'<' inside a tag".into()),
                    _ => {}
                }
            }
            let end = end.ok_or("unterminated tag")?;
            let tag = &rest[1..end];
            rest = &rest[end + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                match stack.pop() {
                    Some(open_name) if open_name == name.trim() => {}
                    other => return Err(format!("</{name}> closes {other:?}")),
                }
                continue;
            }
            let self_closing = tag.ends_with('/');
            let body = tag.trim_end_matches('/');
            let name_end = body.find(char::is_whitespace).unwrap_or(body.len());
            let name = &body[..name_end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(format!("bad tag name {name:?}"));
            }
            // Attributes: name="value" pairs.
            let mut attributes = body[name_end..].trim();
            let mut seen = Vec::new();
            while !attributes.is_empty() {
                let eq = attributes
                    .find('=')
                    .ok_or(format!("attribute without value in {tag:?}"))?;
                let attribute = attributes[..eq].trim();
                if seen.contains(&attribute) {
                    return Err(format!("duplicate attribute {attribute} in {tag:?}"));
                }
                seen.push(attribute);
                let after = &attributes[eq + 1..];
                let q = after.chars().next().ok_or("missing value")?;
                if q != '"' && q != '\'' {
                    return Err(format!("unquoted attribute in {tag:?}"));
                }
                let close = after[1..].find(q).ok_or("unterminated value")? + 1;
                check_entities(&after[1..close])?;
                attributes = after[close + 1..].trim_start();
            }
            if stack.is_empty() {
                roots += 1;
                if roots > 1 {
                    return Err("more than one root element".into());
                }
                if name != "svg" {
                    return Err(format!("root is <{name}>"));
                }
            }
            if !self_closing {
                stack.push(name.to_string());
            }
        }
        if !stack.is_empty() {
            return Err(format!("unclosed: {stack:?}"));
        }
        if roots != 1 {
            return Err("no root element".into());
        }
        Ok(())
    }

    fn assert_well_formed(document: &str) {
        if let Err(problem) = check_well_formed(document) {
            panic!("not well-formed: {problem}\n{document}");
        }
    }

    #[test]
    fn checker_rejects_broken_documents() {
        assert!(check_well_formed("<svg><g></svg>").is_err());
        assert!(check_well_formed("<svg a=\"1\" a=\"2\"/>").is_err());
        assert!(check_well_formed("<svg><text>a & b</text></svg>").is_err());
        assert!(check_well_formed("<svg/><svg/>").is_err());
        assert!(check_well_formed("<svg x=\"<\"/>").is_err());
        assert!(check_well_formed("<svg><text>a &amp; b</text></svg>").is_ok());
    }

    fn labels(axis: &ResolvedAxis) -> Vec<String> {
        axis.ticks.iter().filter_map(|t| t.label.clone()).collect()
    }

    fn resolve(axis: &Axis, data: &[f64], target: usize) -> ResolvedAxis {
        resolve_axis(axis, data.iter().copied(), target).expect("data is plottable")
    }

    /// Ticks must lie in the range, increase strictly, and be spaced evenly (linear).
    fn assert_sane_linear(axis: &ResolvedAxis) {
        let values: Vec<f64> = axis.ticks.iter().map(|t| t.value).collect();
        assert!(values.len() >= 2, "too few ticks: {values:?}");
        let span = axis.high - axis.low;
        for v in &values {
            assert!(*v >= axis.low - span * 1e-9 && *v <= axis.high + span * 1e-9);
        }
        let step = values[1] - values[0];
        for pair in values.windows(2) {
            assert!(
                ((pair[1] - pair[0]) - step).abs() <= step * 1e-6,
                "{values:?}"
            );
        }
        let names = labels(axis);
        let mut unique = names.clone();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "repeated labels {names:?}");
        for label in &names {
            assert!(label.len() <= 8, "label too long: {label}");
        }
    }

    #[test]
    fn nice_steps_are_1_2_5() {
        for (raw, expected) in [
            (0.13, 0.2),
            (0.2, 0.2),
            (0.21, 0.5),
            (7.0, 10.0),
            (1e-10, 1e-10),
        ] {
            let step = NiceStep::at_least(raw).value();
            assert!(
                (step - expected).abs() <= expected * 1e-12,
                "{raw} -> {step}"
            );
        }
    }

    #[test]
    fn ticks_on_tiny_range_use_exponent_labels() {
        let axis = resolve(&Axis::linear("x"), &[0.0, 1e-9], 5);
        assert_sane_linear(&axis);
        assert_eq!(
            labels(&axis),
            ["0", "2e-10", "4e-10", "6e-10", "8e-10", "1e-9"]
        );
    }

    #[test]
    fn ticks_have_no_float_noise() {
        let axis = resolve(&Axis::linear("x"), &[0.0, 0.3], 3);
        assert_sane_linear(&axis);
        assert_eq!(labels(&axis), ["0", "0.1", "0.2", "0.3"]);
        let fixed = resolve(&Axis::linear("x").with_range(0.1, 0.7), &[], 6);
        assert_eq!(
            labels(&fixed),
            ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7"]
        );
        for label in labels(&fixed) {
            assert!(!label.contains("0000"), "{label}");
        }
    }

    #[test]
    fn ticks_on_negative_range() {
        let axis = resolve(&Axis::linear("x"), &[-37.0, -2.5], 5);
        assert_sane_linear(&axis);
        assert!(axis.low <= -37.0 && axis.high >= -2.5);
        assert_eq!(labels(&axis), ["-40", "-30", "-20", "-10", "0"]);
        let across = resolve(&Axis::linear("x"), &[-0.004, 0.0025], 4);
        assert_sane_linear(&across);
        assert!(labels(&across).contains(&"0".to_string()));
        assert!(
            labels(&across).iter().any(|l| l == "-2e-3"),
            "{:?}",
            labels(&across)
        );
    }

    #[test]
    fn ticks_for_single_point_and_equal_bounds() {
        for value in [0.0, 1.0, -3.5, 1e-12, 7e20] {
            let axis = resolve(&Axis::linear("x"), &[value], 5);
            assert_sane_linear(&axis);
            assert!(axis.low < value && value < axis.high, "{value}: {:?}", axis);
            let fixed = resolve(&Axis::linear("x").with_range(value, value), &[], 5);
            assert_sane_linear(&fixed);
            let log = resolve(&Axis::log10("x"), &[value.abs().max(1e-3)], 5);
            assert!(
                log.low < log.high && log.ticks.iter().filter(|t| t.label.is_some()).count() >= 2
            );
        }
        // Numerically equal, not bitwise equal.
        let axis = resolve(&Axis::linear("x"), &[1.0, 1.0 + 1e-15], 5);
        assert_sane_linear(&axis);
    }

    #[test]
    fn large_values_use_exponent_labels() {
        let axis = resolve(&Axis::linear("bytes"), &[0.0, 3.2e8], 5);
        assert_sane_linear(&axis);
        assert_eq!(labels(&axis), ["0", "1e8", "2e8", "3e8", "4e8"]);
        let mid = resolve(&Axis::linear("x"), &[0.0, 12_500.0], 5);
        assert_eq!(labels(&mid), ["0", "5000", "10000", "15000"]);
        let fine = resolve(&Axis::linear("x"), &[1.2e6, 1.35e6], 4);
        assert_sane_linear(&fine);
        assert!(
            labels(&fine).contains(&"1.25e6".to_string()),
            "{:?}",
            labels(&fine)
        );
    }

    #[test]
    fn log_axis_across_twelve_decades() {
        let axis = resolve(&Axis::log10("error"), &[3e-10, 2e2], 6);
        assert!(axis.low <= 3e-10 && axis.high >= 2e2);
        let names = labels(&axis);
        assert!((2..=7).contains(&names.len()), "{names:?}");
        // Labels are whole decades, evenly spaced in exponent.
        let exponents: Vec<i32> = names
            .iter()
            .map(|l| {
                let (mantissa, exponent) = l.split_once('e').expect("one style per axis");
                assert_eq!(mantissa, "1");
                exponent.parse().expect("integer exponent")
            })
            .collect();
        assert!(exponents
            .windows(2)
            .all(|p| p[1] - p[0] == exponents[1] - exponents[0]));
        assert!(
            exponents.contains(&-8) && exponents.contains(&2),
            "{names:?}"
        );
        // Every decade has a tick (labelled or minor); values strictly increase.
        let decades = axis
            .ticks
            .iter()
            .filter(|t| t.value.log10().fract().abs() < 1e-9)
            .count();
        assert!(decades >= 12, "{decades}");
        assert!(axis.ticks.windows(2).all(|p| p[0].value < p[1].value));
    }

    #[test]
    fn log_axis_minor_ticks_and_short_ranges() {
        let axis = resolve(&Axis::log10("x"), &[0.02, 30.0], 6);
        assert_eq!(labels(&axis), ["0.1", "1", "10"]);
        assert!(axis
            .ticks
            .iter()
            .any(|t| t.label.is_none() && (t.value - 0.05).abs() < 1e-12));
        let short = resolve(&Axis::log10("x").with_range(2.0, 9.0), &[], 5);
        assert_eq!(labels(&short), ["2", "5"]);
        let tiny = resolve(&Axis::log10("x").with_range(3.0, 4.0), &[], 5);
        assert!(labels(&tiny).len() >= 2, "{:?}", labels(&tiny));
        assert!(tiny.ticks.iter().all(|t| t.value >= 3.0 && t.value <= 4.0));
    }

    #[test]
    fn log_axis_skips_non_positive_values() {
        let chart = Chart {
            title: "t".into(),
            x: Axis::log10("x"),
            y: Axis::linear("y"),
            series: vec![Series {
                name: "s".into(),
                points: vec![(-1.0, 5.0), (0.0, 5.0), (1.0, 1.0), (100.0, 2.0)],
                mark: Mark::Points,
            }],
            width: 400,
            height: 300,
        };
        let svg = line_chart(&chart);
        assert_well_formed(&svg);
        assert_eq!(svg.matches("<circle").count(), 2);
        let axis = resolve(&Axis::log10("x"), &[-1.0, 0.0, 1.0, 100.0], 5);
        assert!(axis.low > 0.0 && axis.low <= 1.0);
    }

    fn example_chart() -> Chart {
        Chart {
            title: "Rate <distortion> & \"quotes\" 'too'".into(),
            x: Axis::linear("bits per weight"),
            y: Axis::log10("relative error"),
            series: vec![
                Series {
                    name: "scalar <uniform>".into(),
                    points: (1..=8).map(|b| (b as f64, 0.5f64.powi(b))).collect(),
                    mark: Mark::LineAndPoints,
                },
                Series {
                    name: "vector & low rank".into(),
                    points: (1..=8)
                        .map(|b| (b as f64 + 0.25, 0.6 * 0.45f64.powi(b)))
                        .chain([(f64::NAN, 1.0), (9.0, f64::INFINITY)])
                        .collect(),
                    mark: Mark::Line,
                },
                Series {
                    name: "allocator budget".into(),
                    points: vec![(1.0, 0.4), (3.0, 0.4), (3.0, 0.05), (6.0, 0.01)],
                    mark: Mark::Steps,
                },
            ],
            width: 640,
            height: 400,
        }
    }

    #[test]
    fn line_chart_is_well_formed_and_escaped() {
        let svg = line_chart(&example_chart());
        assert_well_formed(&svg);
        assert!(svg.starts_with("<svg") && svg.contains("viewBox=\"0 0 640 400\""));
        assert!(svg.contains("Rate &lt;distortion&gt; &amp; &quot;quotes&quot; &apos;too&apos;"));
        assert!(svg.contains("scalar &lt;uniform&gt;") && svg.contains("vector &amp; low rank"));
        assert!(svg.contains("font-family:sans-serif"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        // Legend: one entry per series.
        for name in [
            "scalar &lt;uniform&gt;",
            "vector &amp; low rank",
            "allocator budget",
        ] {
            assert!(
                svg.matches(name).count() >= 2,
                "{name} in legend and series title"
            );
        }
        for colour in &PALETTE[..3] {
            assert!(svg.contains(colour));
        }
    }

    #[test]
    fn single_series_has_no_legend() {
        let mut chart = example_chart();
        chart.series.truncate(1);
        let svg = line_chart(&chart);
        assert_well_formed(&svg);
        assert_eq!(
            svg.matches(">scalar &lt;uniform&gt;<").count(),
            1,
            "only the <title>"
        );
    }

    #[test]
    fn output_is_deterministic() {
        let chart = example_chart();
        assert_eq!(line_chart(&chart), line_chart(&chart.clone()));
        let bars = example_bars(30);
        assert_eq!(bar_chart(&bars), bar_chart(&bars.clone()));
        let (edges, counts, markers) = example_histogram();
        let a = histogram("h", &Axis::linear("w"), &edges, &counts, &markers);
        let b = histogram("h", &Axis::linear("w"), &edges, &counts, &markers);
        assert_eq!(a, b);
    }

    #[test]
    fn empty_and_unplottable_data_say_no_data() {
        let mut chart = example_chart();
        chart.series.clear();
        let svg = line_chart(&chart);
        assert_well_formed(&svg);
        assert!(svg.contains(">no data<"));
        chart.series = vec![Series {
            name: "bad".into(),
            points: vec![
                (f64::NAN, 1.0),
                (1.0, f64::NEG_INFINITY),
                (1.0, -2.0),
                (2e300, 1.0),
            ],
            mark: Mark::Line,
        }];
        let svg = line_chart(&chart);
        assert_well_formed(&svg);
        assert!(
            svg.contains(">no data<"),
            "log y with only non-positive / non-finite values"
        );
        let svg = bar_chart(&BarChart {
            title: "empty".into(),
            value_axis: Axis::linear("bytes"),
            segment_names: vec![],
            bars: vec![],
            width: 0,
        });
        assert_well_formed(&svg);
        assert!(svg.contains(">no data<"));
        let svg = histogram("h", &Axis::linear("w"), &[], &[], &[]);
        assert_well_formed(&svg);
        assert!(svg.contains("no data"));
        let svg = histogram("h", &Axis::linear("w"), &[0.0, 1.0], &[1, 2], &[]);
        assert_well_formed(&svg);
        assert!(svg.contains("2 bin edges for 2 counts"));
    }

    #[test]
    fn tiny_sizes_and_fixed_ranges_do_not_break_layout() {
        let mut chart = example_chart();
        chart.width = 0;
        chart.height = 1;
        chart.x.range = Some((2.0, 4.0)); // clips the series
        chart.y.range = Some((-1.0, 1.0)); // unusable on a log axis: data range instead
        let svg = line_chart(&chart);
        assert_well_formed(&svg);
        assert!(!svg.contains("NaN") && !svg.contains("-nan"));
        // Clipped polylines stay inside the plot: no x coordinate beyond the chart width.
        for points in svg.split("points=\"").skip(1) {
            let list = points.split('"').next().expect("attribute closes");
            for pair in list.split(' ') {
                let (x, y) = pair.split_once(',').expect("x,y");
                let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
                assert!((0.0..=MIN_WIDTH).contains(&x) && (0.0..=MIN_HEIGHT).contains(&y));
            }
        }
    }

    #[test]
    fn clipping_keeps_the_inside_part() {
        let rect = PlotRect {
            left: 0.0,
            top: 0.0,
            right: 10.0,
            bottom: 10.0,
        };
        assert_eq!(
            clip_segment((-5.0, 5.0), (15.0, 5.0), &rect),
            Some(((0.0, 5.0), (10.0, 5.0)))
        );
        assert_eq!(clip_segment((-5.0, -5.0), (-1.0, 20.0), &rect), None);
        assert_eq!(
            clip_segment((1.0, 1.0), (2.0, 2.0), &rect),
            Some(((1.0, 1.0), (2.0, 2.0)))
        );
    }

    fn example_bars(count: usize) -> BarChart {
        let mut rng = crate::rng::Rng::new(7);
        let bars = (0..count)
            .map(|i| {
                let payload = 1000.0 + (rng.next_u64() % 4_000_000) as f64;
                let side = payload * 0.02 + (i % 5) as f64 * 100.0;
                let projection = ["q_proj", "k_proj", "v_proj", "o_proj", "mlp.down_proj"][i % 5];
                Bar {
                    label: if i % 7 == 3 {
                        format!("model.layers.{i}.self_attn.q_proj<weight> & \"bias\"")
                    } else {
                        format!("model.layers.{}.self_attn.{projection}.weight", i / 5)
                    },
                    segments: vec![payload, side],
                }
            })
            .collect();
        BarChart {
            title: "Coded size per tensor".into(),
            value_axis: Axis::linear("bytes"),
            segment_names: vec!["payload".into(), "side information".into()],
            bars,
            width: 720,
        }
    }

    #[test]
    fn bar_chart_grows_truncates_and_keeps_full_names() {
        let small = bar_chart(&example_bars(3));
        let large = bar_chart(&example_bars(150));
        assert_well_formed(&small);
        assert_well_formed(&large);
        let height = |svg: &str| -> f64 {
            let at = svg.find("height=\"").expect("svg height") + 8;
            svg[at..].split('"').next().unwrap().parse().unwrap()
        };
        let grown = height(&large) - height(&small);
        // 147 more rows plus the repeated tick labels below the rows.
        assert!((grown - 147.0 * BAR_ROW_PITCH).abs() <= 24.0, "{grown}");
        assert!(
            large.contains('\u{2026}'),
            "long labels are cut with an ellipsis"
        );
        let full = "model.layers.143.self_attn.q_proj&lt;weight&gt; &amp; &quot;bias&quot;";
        assert!(large.contains(&format!("<title>{full}: payload ")));
        assert!(large.contains("(total "));
        // One tooltip group per bar.
        assert_eq!(large.matches("<g><title>").count(), 150);
    }

    #[test]
    fn bar_chart_skips_bad_segments_and_supports_log_axis() {
        let chart = BarChart {
            title: String::new(),
            value_axis: Axis::log10("bytes"),
            segment_names: vec!["only".into()],
            bars: vec![
                Bar {
                    label: "a".into(),
                    segments: vec![f64::NAN, -3.0, 500.0],
                },
                Bar {
                    label: "b".into(),
                    segments: vec![2.0, 1e6],
                },
                Bar {
                    label: "c".into(),
                    segments: vec![],
                },
            ],
            width: 500,
        };
        let svg = bar_chart(&chart);
        assert_well_formed(&svg);
        assert!(svg.contains("a: only NaN, segment 2 -3, segment 3 500 (total 500)"));
        assert!(!svg.contains("NaN\""), "no NaN in attributes");
    }

    fn example_histogram() -> (Vec<f64>, Vec<u64>, Vec<f64>) {
        let mut rng = crate::rng::Rng::new(11);
        let bins = 64;
        let edges: Vec<f64> = (0..=bins)
            .map(|i| -0.08 + 0.16 * i as f64 / bins as f64)
            .collect();
        let mut counts = vec![0u64; bins];
        for _ in 0..20_000 {
            let w = 0.02 * rng.normal();
            let bin = ((w + 0.08) / 0.16 * bins as f64).floor();
            if (0.0..bins as f64).contains(&bin) {
                counts[bin as usize] += 1;
            }
        }
        let markers: Vec<f64> = (-7..=7).map(|l| l as f64 * 0.01).collect();
        (edges, counts, markers)
    }

    #[test]
    fn histogram_draws_bins_and_markers() {
        let (edges, counts, markers) = example_histogram();
        let svg = histogram(
            "weights <q_proj>",
            &Axis::linear("weight"),
            &edges,
            &counts,
            &markers,
        );
        assert_well_formed(&svg);
        let nonzero = counts.iter().filter(|&&c| c > 0).count();
        let bin_rects = svg
            .split("fill-opacity=\"0.85\">")
            .nth(1)
            .and_then(|s| s.split("</g>").next())
            .map(|s| s.matches("<rect").count());
        assert_eq!(bin_rects, Some(nonzero));
        assert_eq!(
            svg.matches(&format!("stroke=\"{MARKER_COLOUR}\"")).count(),
            markers.len() + 1
        );
        assert!(svg.contains("marker (15)"));
    }

    #[test]
    fn tooltip_values_are_compact() {
        assert_eq!(format_value(1234.0), "1234");
        assert_eq!(format_value(0.1 + 0.2), "0.3");
        assert_eq!(format_value(1.5e-7), "1.5e-7");
        assert_eq!(format_value(12.3456), "12.35");
        assert_eq!(px(-0.001), "0");
        assert_eq!(px(f64::NAN), "0");
        assert_eq!(truncate_chars("äöüß-long", 6), "äö\u{2026}ong");
        assert_eq!(truncate_chars("abcdefgh", 6), "ab\u{2026}fgh");
        assert_eq!(truncate_chars("short", 5), "short");
        assert_eq!(truncate_chars("abc", 1), "\u{2026}");
    }

    /// Random charts built from awkward values never panic and always give well-formed output with
    /// finite coordinates.
    #[test]
    fn awkward_values_never_break_the_output() {
        const AWKWARD: [f64; 16] = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.1,
            1e-9,
            -1e-9,
            1e-310,
            1e300,
            -1e300,
            1e301,
            7e20,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE,
        ];
        let mut rng = crate::rng::Rng::new(3);
        let pick = |rng: &mut crate::rng::Rng| {
            let base = AWKWARD[rng.below(AWKWARD.len() as u64) as usize];
            if rng.below(3) == 0 {
                base * (1.0 + rng.uniform())
            } else {
                base
            }
        };
        for case in 0..300 {
            let scale = |bit: u64| {
                if (case >> bit) & 1 == 1 {
                    Scale::Log10
                } else {
                    Scale::Linear
                }
            };
            let axis = |bit, rng: &mut crate::rng::Rng| Axis {
                label: "a".into(),
                scale: scale(bit),
                range: (rng.below(4) == 0).then(|| (pick(rng), pick(rng))),
            };
            let x = axis(0, &mut rng);
            let y = axis(1, &mut rng);
            let series = (0..rng.below(3))
                .map(|s| Series {
                    name: format!("s{s}"),
                    points: (0..rng.below(6))
                        .map(|_| (pick(&mut rng), pick(&mut rng)))
                        .collect(),
                    mark: [Mark::Line, Mark::Points, Mark::LineAndPoints, Mark::Steps]
                        [s as usize % 4],
                })
                .collect();
            let chart = Chart {
                title: "t".into(),
                x: x.clone(),
                y,
                series,
                width: 300,
                height: 200,
            };
            let bars = BarChart {
                title: "b".into(),
                value_axis: x.clone(),
                segment_names: vec!["p".into(), "s".into()],
                bars: (0..rng.below(4))
                    .map(|i| Bar {
                        label: format!("t{i}"),
                        segments: vec![pick(&mut rng), pick(&mut rng)],
                    })
                    .collect(),
                width: 300,
            };
            let bins = rng.below(5) as usize;
            let mut edges: Vec<f64> = (0..=bins).map(|_| pick(&mut rng)).collect();
            edges.sort_by(f64::total_cmp);
            let counts: Vec<u64> = (0..bins).map(|_| rng.below(1000)).collect();
            let markers = [pick(&mut rng)];
            for svg in [
                line_chart(&chart),
                bar_chart(&bars),
                histogram("h", &x, &edges, &counts, &markers),
            ] {
                assert_well_formed(&svg);
                assert!(
                    !svg.contains("NaN\"") && !svg.contains("inf\""),
                    "case {case}: {svg}"
                );
            }
        }
    }

    /// Writes one example of each chart for a visual check:
    /// `LOWBIT_SVG_DIR=/tmp cargo test --lib svg::tests::render_examples -- --ignored`.
    #[test]
    #[ignore]
    fn render_examples() {
        let dir = std::env::var("LOWBIT_SVG_DIR").unwrap_or_else(|_| "/tmp".into());
        let write = |name: &str, svg: String| {
            assert_well_formed(&svg);
            std::fs::write(format!("{dir}/{name}"), svg).expect("write example");
        };
        write("lowbit_line.svg", line_chart(&example_chart()));
        let mut wide = example_chart();
        wide.title = "Error across twelve decades".into();
        wide.x = Axis::log10("bits");
        wide.series = (0..10)
            .map(|s| Series {
                name: format!("series {s}"),
                points: (0..=12)
                    .map(|k| (pow10(k - 6), pow10(-k) * (1.0 + s as f64)))
                    .collect(),
                mark: if s % 2 == 0 {
                    Mark::LineAndPoints
                } else {
                    Mark::Line
                },
            })
            .collect();
        write("lowbit_line_log.svg", line_chart(&wide));
        write("lowbit_bars.svg", bar_chart(&example_bars(40)));
        let (edges, counts, markers) = example_histogram();
        write(
            "lowbit_hist.svg",
            histogram(
                "Weights of q_proj <layer 3>",
                &Axis::linear("weight"),
                &edges,
                &counts,
                &markers,
            ),
        );
        let mut empty = example_chart();
        empty.series.clear();
        write("lowbit_empty.svg", line_chart(&empty));
        // Awkward ranges: 0..1e-9 against negative values, a lone point, a clipped fixed range.
        let awkward = Chart {
            title: "Awkward ranges".into(),
            x: Axis::linear("step size"),
            y: Axis::linear("change"),
            series: vec![
                Series {
                    name: "tiny".into(),
                    points: (0..=10)
                        .map(|i| (i as f64 * 1e-10, -3.0 + (i * i) as f64 * 0.04))
                        .collect(),
                    mark: Mark::LineAndPoints,
                },
                Series {
                    name: "lone point".into(),
                    points: vec![(5e-10, -2.5)],
                    mark: Mark::Line,
                },
            ],
            width: 0,
            height: 0,
        };
        write("lowbit_awkward.svg", line_chart(&awkward));
        let mut log_bars = example_bars(6);
        log_bars.value_axis = Axis::log10("bytes (log)");
        log_bars.width = 480;
        log_bars.title = String::new();
        write("lowbit_bars_log.svg", bar_chart(&log_bars));
    }
}
