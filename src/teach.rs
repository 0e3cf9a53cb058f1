//! The page's teaching view of one tensor: its weight histogram before and after coding (the
//! quantization levels show as spikes, or as markers when there are few of them), a window of the
//! weights themselves before and after (the page draws them as heatmaps), its singular values, the
//! error a rank-r truncation would leave, and the measured error of every option the analysis
//! tried, per codec. Charts are the report's own SVG (`svg.rs`), so the page and report.html draw
//! the same way.

use serde::Serialize;

use crate::codec::Shape2;
use crate::pipeline::{MeasuredOption, TensorAnalysis};
use crate::svg;

/// Histogram bins of the teaching view.
const BINS: usize = 80;

/// Reconstructed values with at most this many distinct levels are marked on the histogram (a
/// codebook, a lattice); more (scalar codes with a scale per group) show in the second histogram.
/// Half the bins: more markers than that cover the bars they mark.
const MAX_MARKED_LEVELS: usize = BINS / 2;

/// Rows and columns of the before/after window, at most: the page draws at most this many squared
/// cells, each big enough to see on a phone.
const WINDOW: usize = 128;

/// The top-left corner of a tensor, as the rows x columns matrix its codec sees, before and after
/// coding: rows `0..shown_rows` and columns `0..shown_cols`, row-major. The page draws both as
/// heatmaps of one colour scale, and their difference.
#[derive(Clone, Debug, Serialize)]
pub struct BeforeAfter {
    /// The whole matrix's size.
    pub rows: usize,
    pub cols: usize,
    pub shown_rows: usize,
    pub shown_cols: usize,
    pub original: Vec<f32>,
    /// What the `.lowbit` restores there.
    pub restored: Vec<f32>,
    /// The colour scale of both heatmaps: the largest finite |value| in the window, before or
    /// after.
    pub scale: f32,
    /// The error heatmap's scale: the largest finite |restored - original| in the window.
    pub max_error: f32,
}

/// The [`BeforeAfter`] window of a `shape` matrix's `original` and `restored` values.
pub fn before_after(shape: Shape2, original: &[f32], restored: &[f32]) -> BeforeAfter {
    let shown_rows = shape.rows.min(WINDOW);
    let shown_cols = shape.cols.min(WINDOW);
    let window = |values: &[f32]| -> Vec<f32> {
        (0..shown_rows)
            .flat_map(|r| &values[r * shape.cols..r * shape.cols + shown_cols])
            .copied()
            .collect()
    };
    let (original, restored) = (window(original), window(restored));
    let largest = |values: &mut dyn Iterator<Item = f32>| {
        values
            .filter(|v| v.is_finite())
            .fold(0.0f32, |m, v| m.max(v.abs()))
    };
    let scale = largest(&mut original.iter().chain(&restored).copied());
    let max_error = largest(&mut original.iter().zip(&restored).map(|(a, b)| b - a));
    BeforeAfter {
        rows: shape.rows,
        cols: shape.cols,
        shown_rows,
        shown_cols,
        original,
        restored,
        scale,
        max_error,
    }
}

/// What the page shows about one tensor; every chart is a self-contained `<svg>`.
#[derive(Clone, Debug, Serialize)]
pub struct TensorView {
    pub name: String,
    pub shape: Vec<usize>,
    /// The chosen option's codec label, when a plan exists.
    pub chosen: Option<String>,
    /// Relative Frobenius error of the chosen option.
    pub chosen_error: Option<f64>,
    pub histogram_svg: String,
    /// The restored weights' histogram (same bins), when a plan exists.
    pub restored_histogram_svg: Option<String>,
    /// The weights before and after, when a plan exists.
    pub before_after: Option<BeforeAfter>,
    pub spectrum_svg: Option<String>,
    pub error_vs_rank_svg: Option<String>,
    pub error_vs_bits_svg: String,
}

/// Relative Frobenius error `sqrt(1 - sum_{i<r} s_i^2 / ||W||^2)` of the best rank-r approximation
/// (Eckart-Young), for r = 0..=len: exact given the leading singular values and the norm.
pub fn error_vs_rank(singular_values: &[f32], norm_sq: f64) -> Vec<(f64, f64)> {
    let mut kept = 0.0f64;
    let mut out = vec![(0.0, 1.0)];
    for (i, &s) in singular_values.iter().enumerate() {
        kept += (s as f64) * (s as f64);
        let rest = (1.0 - kept / norm_sq.max(f64::MIN_POSITIVE)).max(0.0);
        out.push(((i + 1) as f64, rest.sqrt()));
    }
    out
}

/// Bin edges and counts of the finite values in `[lo, hi]`.
fn histogram(values: &[f32], lo: f64, hi: f64) -> (Vec<f64>, Vec<u64>) {
    let width = (hi - lo).max(f64::MIN_POSITIVE) / BINS as f64;
    let edges = (0..=BINS).map(|i| lo + width * i as f64).collect();
    let mut counts = vec![0u64; BINS];
    for &v in values.iter().filter(|v| v.is_finite()) {
        let b = (((v as f64 - lo) / width) as usize).min(BINS - 1);
        counts[b] += 1;
    }
    (edges, counts)
}

/// The distinct values of `values` when there are at most [`MAX_MARKED_LEVELS`], sorted.
fn few_levels(values: &[f32]) -> Option<Vec<f64>> {
    let mut levels: Vec<u32> = Vec::new();
    for v in values {
        let bits = v.to_bits();
        if let Err(i) = levels.binary_search(&bits) {
            if levels.len() == MAX_MARKED_LEVELS {
                return None;
            }
            levels.insert(i, bits);
        }
    }
    let mut out: Vec<f64> = levels.iter().map(|&b| f32::from_bits(b) as f64).collect();
    out.sort_by(f64::total_cmp);
    Some(out)
}

/// The teaching view of a tensor with its values (`values`, row-major `shape`), what the analysis
/// measured, and, once a plan exists, the chosen option and the values the `.lowbit` restores
/// (`pipeline::write::restored_values`).
pub fn tensor_view(
    name: &str,
    shape: &[usize],
    values: &[f32],
    analysis: &TensorAnalysis,
    chosen: Option<(&MeasuredOption, &[f32])>,
) -> TensorView {
    let (lo, hi) = histogram_range(values);
    let (edges, counts) = histogram(values, lo, hi);
    let markers = chosen
        .and_then(|(_, restored)| few_levels(restored))
        .unwrap_or_default();
    let weight_axis = svg::Axis::linear("weight value");
    let histogram_svg = svg::histogram(
        &if markers.is_empty() {
            "weights".to_string()
        } else {
            format!("weights, with the {} levels of the code", markers.len())
        },
        &weight_axis,
        &edges,
        &counts,
        &markers,
    );
    let restored_histogram_svg = chosen.map(|(c, restored)| {
        let (_, counts) = histogram(restored, lo, hi);
        svg::histogram(
            &format!("restored weights ({})", c.codec.label()),
            &weight_axis,
            &edges,
            &counts,
            &[],
        )
    });
    let before_after = chosen.and_then(|(_, restored)| {
        Shape2::of(shape).map(|shape| before_after(shape, values, restored))
    });
    let spectrum = analysis.spectrum.as_deref().filter(|s| !s.is_empty());
    let spectrum_svg = spectrum.map(spectrum_chart);
    let error_vs_rank_svg = spectrum.map(|s| error_vs_rank_chart(s, analysis.norm_sq));
    let chosen_error =
        chosen.map(|(c, _)| (c.sq_error / analysis.norm_sq.max(f64::MIN_POSITIVE)).sqrt());
    let error_vs_bits_svg = error_vs_bits_chart(shape, analysis, chosen, chosen_error);
    TensorView {
        name: name.to_string(),
        shape: shape.to_vec(),
        chosen: chosen.map(|(c, _)| c.codec.label()),
        chosen_error,
        histogram_svg,
        restored_histogram_svg,
        before_after,
        spectrum_svg,
        error_vs_rank_svg,
        error_vs_bits_svg,
    }
}

/// The histograms' value range: the finite values' extremes, widened to a unit interval around a
/// constant tensor's value.
fn histogram_range(values: &[f32]) -> (f64, f64) {
    let finite = values.iter().filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
        (lo.min(v as f64), hi.max(v as f64))
    });
    if lo < hi {
        (lo, hi)
    } else {
        (lo - 0.5, lo + 0.5)
    }
}

/// The singular values against their index, on a log axis.
fn spectrum_chart(s: &[f32]) -> String {
    svg::line_chart(&svg::Chart {
        title: "singular values".to_string(),
        x: svg::Axis::linear("index"),
        y: svg::Axis::log10("sigma_i"),
        series: vec![svg::Series {
            name: "sigma_i".into(),
            points: s
                .iter()
                .enumerate()
                .map(|(i, &v)| ((i + 1) as f64, v as f64))
                .collect(),
            mark: svg::Mark::Line,
        }],
        width: 640,
        height: 360,
    })
}

/// The error of the best rank-r approximation against r ([`error_vs_rank`]).
fn error_vs_rank_chart(s: &[f32], norm_sq: f64) -> String {
    svg::line_chart(&svg::Chart {
        title: format!(
            "relative error of the best rank-r approximation (first {} ranks)",
            s.len()
        ),
        x: svg::Axis::linear("rank r"),
        y: svg::Axis::log10("||W - W_r|| / ||W||"),
        series: vec![svg::Series {
            name: "Eckart-Young".into(),
            points: error_vs_rank(s, norm_sq),
            mark: svg::Mark::Line,
        }],
        width: 640,
        height: 360,
    })
}

/// The measured error of every lossy option against its bits per weight, one series per codec
/// family, with the chosen option marked.
fn error_vs_bits_chart(
    shape: &[usize],
    analysis: &TensorAnalysis,
    chosen: Option<(&MeasuredOption, &[f32])>,
    chosen_error: Option<f64>,
) -> String {
    let numel: usize = shape.iter().product();
    let mut families: Vec<svg::Series> = Vec::new();
    for c in analysis.candidates.iter().filter(|c| c.sq_error > 0.0) {
        let label = c.codec.label();
        let family = label.split_whitespace().next().unwrap_or("").to_string();
        let point = (
            8.0 * c.coded_bytes as f64 / numel.max(1) as f64,
            (c.sq_error / analysis.norm_sq.max(f64::MIN_POSITIVE)).sqrt(),
        );
        match families.iter_mut().find(|s| s.name == family) {
            Some(s) => s.points.push(point),
            None => families.push(svg::Series {
                name: family,
                points: vec![point],
                mark: svg::Mark::LineAndPoints,
            }),
        }
    }
    for s in &mut families {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    if let Some((c, _)) = chosen.filter(|(c, _)| c.sq_error > 0.0) {
        families.push(svg::Series {
            name: "chosen".into(),
            points: vec![(
                8.0 * c.coded_bytes as f64 / numel.max(1) as f64,
                chosen_error.unwrap_or(0.0),
            )],
            mark: svg::Mark::Points,
        });
    }
    svg::line_chart(&svg::Chart {
        title: "measured error of every option (coded section bits)".to_string(),
        x: svg::Axis::linear("bits per weight"),
        y: svg::Axis::log10("relative error ||W - W^|| / ||W||"),
        series: families,
        width: 640,
        height: 360,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_vs_rank_follows_eckart_young() {
        // Singular values 3, 2, 1: ||W||^2 = 14; rank 1 leaves sqrt(5/14), rank 3 nothing.
        let e = error_vs_rank(&[3.0, 2.0, 1.0], 14.0);
        assert_eq!(e[0], (0.0, 1.0));
        assert!((e[1].1 - (5.0f64 / 14.0).sqrt()).abs() < 1e-12);
        assert!((e[2].1 - (1.0f64 / 14.0).sqrt()).abs() < 1e-12);
        assert!(e[3].1.abs() < 1e-9);
    }

    #[test]
    fn few_levels_are_found_and_many_are_not() {
        let codebook: Vec<f32> = (0..1000).map(|i| (i % 7) as f32 * 0.5).collect();
        assert_eq!(few_levels(&codebook).unwrap().len(), 7);
        let many: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        assert!(few_levels(&many).is_none());
    }

    #[test]
    fn before_after_is_the_top_left_window() {
        // 200 x 3: all three columns, the first 128 rows.
        let shape = Shape2::new(200, 3);
        let original: Vec<f32> = (0..600).map(|i| i as f32).collect();
        let restored: Vec<f32> = original.iter().map(|v| v + 0.5).collect();
        let w = before_after(shape, &original, &restored);
        assert_eq!((w.shown_rows, w.shown_cols), (WINDOW, 3));
        assert_eq!(w.original.len(), WINDOW * 3);
        assert_eq!(w.original[5 * 3 + 2], original[5 * 3 + 2]);
        assert_eq!(w.restored[127 * 3], restored[127 * 3]);
        assert_eq!(w.scale, 127.0 * 3.0 + 2.0 + 0.5);
        assert_eq!(w.max_error, 0.5);
        // 2 x 300: both rows, the first 128 columns of each.
        let wide = before_after(Shape2::new(2, 300), &original, &restored);
        assert_eq!((wide.shown_rows, wide.shown_cols), (2, WINDOW));
        assert_eq!(wide.original[WINDOW], original[300]);
    }

    /// A safetensors file of three sibling matrices whose rows share a rank-6 basis (and a
    /// little noise): what shared-lowrank groups.
    fn siblings() -> Vec<u8> {
        use crate::dtype::{self, DType};
        use crate::io::safetensors::{self, PlannedTensor};
        let (rows, cols, k) = (32, 48, 6);
        let mut rng = crate::rng::Rng::new(11);
        let basis: Vec<f32> = (0..k * cols).map(|_| rng.normal() as f32).collect();
        let mut planned = Vec::new();
        let mut data = Vec::new();
        for (name, scale) in [("query", 0.02f32), ("key", 0.03), ("value", 0.05)] {
            let coef: Vec<f32> = (0..rows * k).map(|_| rng.normal() as f32).collect();
            let w: Vec<f32> = (0..rows * cols)
                .map(|idx| {
                    let (i, j) = (idx / cols, idx % cols);
                    let v: f32 = (0..k).map(|t| coef[i * k + t] * basis[t * cols + j]).sum();
                    scale * (v + 0.05 * rng.normal() as f32)
                })
                .collect();
            planned.push(PlannedTensor {
                name: format!("enc.layer.0.attn.{name}.weight"),
                dtype: DType::F32,
                shape: vec![rows, cols],
            });
            data.extend(dtype::from_f32(DType::F32, &w));
        }
        let mut file = safetensors::encode_header(&planned, &Default::default()).unwrap();
        file.extend(data);
        file
    }

    /// The view's "after" is what the `.lowbit` restores: the demo checkpoint compressed (the
    /// allocator's choice, and shared-lowrank, whose members are coded with their group), its file
    /// decoded, and every float tensor's restored values (the F16 one through its dtype) equal to
    /// the file's, window included.
    #[test]
    fn before_after_shows_what_the_lowbit_restores() {
        use crate::backend::{block_on, Backend};
        use crate::codec::Method;
        use crate::pipeline::{self, CompressOptions, Target};
        let cpu = Backend::Cpu;
        let progress = &mut crate::progress::NoProgress;
        let mut shared = CompressOptions::new(Target::MaxError(0.1));
        shared.method = Some(Method::SharedLowrank);
        let runs = [
            (
                crate::demo::demo_checkpoint(),
                CompressOptions::new(Target::BitsPerWeight(3.0)),
            ),
            (siblings(), shared),
        ];
        for (file, opts) in &runs {
            let method = opts.method;
            let mut a = block_on(pipeline::analyse_on(
                &cpu,
                "test",
                file,
                "demo.safetensors",
                opts,
                progress,
            ))
            .unwrap();
            let mut plan = block_on(pipeline::settle(&cpu, &mut a, opts, file, progress)).unwrap();
            let mut lowbit = Vec::new();
            block_on(pipeline::write_container(
                &cpu,
                &mut plan,
                opts,
                file,
                progress,
                &mut lowbit,
            ))
            .unwrap();
            let c = crate::container::Container::read(&lowbit).unwrap();
            let bases = pipeline::shared::decode_bases(&c, &lowbit).unwrap();
            if method.is_some() {
                assert!(!bases.is_empty(), "no shared-lowrank group");
            }
            let mut lossy_windows = 0;
            for (i, t) in plan.checkpoint.tensors.iter().enumerate() {
                if !t.dtype.is_float() {
                    continue; // the integer buffer: no values to picture
                }
                let record = &c.manifest.tensors[i];
                let section = &lowbit[c.sections[i].clone()];
                let decoded = crate::dtype::to_f32(
                    record.dtype,
                    &pipeline::shared::decode_tensor(section, record, &bases).unwrap(),
                );
                let restored =
                    block_on(pipeline::write::restored_values(&cpu, &plan, opts, file, i)).unwrap();
                let same = restored.len() == decoded.len()
                    && restored
                        .iter()
                        .zip(&decoded)
                        .all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "{method:?} {}", t.name);
                let chosen = &plan.analyses[i].candidates[plan.choice[i]];
                if chosen.sq_error == 0.0 || t.shape.len() != 2 {
                    continue;
                }
                let values = crate::checkpoint::tensor_values(file, t).unwrap();
                let view = tensor_view(
                    &t.name,
                    &t.shape,
                    &values,
                    &plan.analyses[i],
                    Some((chosen, &restored)),
                );
                let w = view.before_after.unwrap();
                for r in 0..w.shown_rows {
                    for col in 0..w.shown_cols {
                        let (shown, whole) = (r * w.shown_cols + col, r * w.cols + col);
                        assert_eq!(w.restored[shown], decoded[whole]);
                        assert_eq!(w.original[shown], values[whole]);
                    }
                }
                assert!(
                    w.max_error > 0.0,
                    "{}: a lossy code changed nothing",
                    t.name
                );
                lossy_windows += 1;
            }
            assert!(lossy_windows > 0, "{method:?}: no lossy 2-D tensor");
        }
    }

    #[test]
    fn histogram_counts_every_finite_value_once() {
        let v = [0.0, 0.5, 1.0, f32::NAN, 1.0];
        let (edges, counts) = histogram(&v, 0.0, 1.0);
        assert_eq!(edges.len(), BINS + 1);
        assert_eq!(counts.iter().sum::<u64>(), 4);
        assert_eq!(counts[BINS - 1], 2);
    }
}
