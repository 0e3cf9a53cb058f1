//! The bitrate report: every figure the analysis, the allocator and the encoder measured, as plain
//! data (serialised to `report.json`, schema in docs/REPORT.md) and rendered to a self-contained
//! `report.html` with inline SVG charts. Sizes are coded sizes; nothing here is an estimate unless
//! its name says so.

use serde::Serialize;

use crate::codec::CodecParams;
use crate::container::SourceFormat;
use crate::distortion::Distortion;
use crate::dtype::DType;
use crate::model::sensitivity::OutputChange;
use crate::svg;

mod build;
pub use build::build_report;

/// The smallest mean relative MSE the rate-distortion chart shows (120 dB below the signal).
const RD_CHART_FLOOR: f64 = 1e-12;
/// The bits chart leaves out tensors smaller than this (when it has larger ones).
const BITS_CHART_MIN_PARAMETERS: u64 = 1024;

/// Spectra drawn in the chart (more lines make an unreadable legend; the JSON keeps them all).
const SPECTRA_IN_CHART: usize = 12;

/// Bumped when a field changes meaning or disappears (adding fields does not bump it).
pub const REPORT_SCHEMA_VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub schema_version: u32,
    pub lowbit_version: String,
    pub input: InputSummary,
    pub target: TargetSummary,
    pub output: OutputSummary,
    /// What the allocator minimised, in words.
    pub distortion_measure: String,
    pub tensors: Vec<TensorReport>,
    /// The global rate-distortion curve the allocator worked on (convex-hull breakpoints).
    pub rd_curve: Vec<RdPoint>,
    /// Top singular values of the 2-D tensors where low rank was considered.
    pub spectra: Vec<Spectrum>,
    /// For a vector dataset (npy, csv, fvecs): its coders' options against the Gaussian bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vectors: Option<VectorReport>,
    pub notes: Vec<String>,
    /// Where the heavy kernels ran.
    pub backend: crate::backend::BackendSummary,
    /// The compressed model run next to the original on a text (`--eval-text`), when its
    /// architecture is one the runtime knows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downstream: Option<crate::model::eval::Downstream>,
    /// Present when the run was calibrated (`--calibrate`, or the built-in text for a model
    /// folder): where the statistics came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibration: Option<CalibrationSummary>,
    /// Present when the model's sensitivity was measured (a model lowbit runs): how, and the
    /// output change the allocation predicts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sensitivity: Option<SensitivitySummary>,
    /// Present when the allocation was improved by a search judged by running the compressed
    /// model (`--search`): its curve.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search: Option<crate::pipeline::search::SearchSummary>,
}

/// How a run's sensitivity was measured, and what it predicts for the file written.
#[derive(Clone, Debug, Serialize)]
pub struct SensitivitySummary {
    /// The text's name ("built-in text" for the default one).
    pub source: String,
    /// What the output change is in: "KL" (decoders, nats) or "1 - cos" (encoders).
    pub measure: String,
    /// Tokens (decoders) or sentences (encoders) the model ran over.
    pub units: usize,
    /// The perturbation's relative MSE.
    pub delta: f64,
    /// Weight matrices measured (the other tensors take the largest sensitivity).
    pub measured: usize,
    /// An estimate: the sum over tensors of sensitivity x relative MSE of the chosen options,
    /// the first-order prediction of the whole model's output change (`lowbit eval` measures
    /// the real one).
    pub predicted_change: f64,
}

/// What the report shows about a vector dataset (one tensor whose rows are the vectors).
#[derive(Clone, Debug, Serialize)]
pub struct VectorReport {
    pub tensor: String,
    pub vectors: usize,
    pub dimension: usize,
    /// Covariance eigenvalues, non-increasing.
    pub eigenvalues: Vec<f64>,
    /// Every vector-coder option measured, with its Gaussian bound and recall.
    pub options: Vec<VectorOptionReport>,
    /// The Gaussian rate-distortion bound by reverse water-filling on `eigenvalues`.
    pub rd_bound: Vec<VectorRdPoint>,
    pub recall_queries: usize,
    /// How recall@10 is measured, in words.
    pub recall_definition: String,
    /// The chosen option's bits per dimension, and the water-filling allocation at its MSE.
    pub allocation: Option<BitAllocation>,
}

#[derive(Clone, Debug, Serialize)]
pub struct VectorOptionReport {
    pub label: String,
    /// 8 x section bytes / values (side information counted; the container header is not).
    pub bits_per_dimension: f64,
    /// Mean squared error per value.
    pub mse_per_dimension: f64,
    /// The Gaussian R(D) at that MSE, bits per dimension.
    pub rd_bound_bits: f64,
    /// `bits_per_dimension - rd_bound_bits`.
    pub gap_bits: f64,
    pub recall_at_10: Option<f64>,
    pub chosen: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct VectorRdPoint {
    pub bits_per_dimension: f64,
    pub mse_per_dimension: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct BitAllocation {
    pub label: String,
    /// `"KLT component"` (transform coder) or `"coordinate"` (PQ).
    pub axis: String,
    /// Bits per vector on each dimension: empirical entropy of the coded symbols (an estimate).
    pub estimated_bits: Vec<f64>,
    /// Reverse water-filling bits per eigen-component at the option's MSE (the Gaussian optimum).
    pub water_filling_bits: Vec<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct InputSummary {
    pub file: String,
    pub format: SourceFormat,
    pub bytes: u64,
    pub parameters: u64,
    pub tensors: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct TargetSummary {
    /// `"bits_per_weight"` or `"max_error"`.
    pub kind: String,
    pub value: f64,
    /// `"auto"` or a codec name.
    pub method: String,
    pub overrides: Vec<String>,
    /// `"greedy"` or `"knapsack"`: the budget allocator (see `alloc.rs`).
    pub allocator: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct OutputSummary {
    /// Size of the whole `.lowbit` file.
    pub bytes: u64,
    /// 8 * (bytes - model_files_bytes) / parameters: everything of the weights counted (header,
    /// side information, padding); the model's small files are outside the bit budget.
    pub bits_per_weight: f64,
    /// The container header (length prefix, JSON, manifest).
    pub header_bytes: u64,
    /// The model's config and tokenizer files, stored verbatim (absent when none).
    #[serde(skip_serializing_if = "is_zero")]
    pub model_files_bytes: u64,
    pub payload_bytes: u64,
    pub side_bytes: u64,
    /// Zero bytes that pad sections up to the decompression-bomb bound.
    pub padding_bytes: u64,
    pub ratio: f64,
    /// Sum of squared errors / sum of squares over the lossily coded tensors.
    pub rel_mse_lossy: f64,
    /// Same over all floating-point tensors with two or more dimensions.
    pub rel_mse_2d: f64,
    /// Whether the file was written (false for `plan`).
    pub written: bool,
    /// Some chosen option's size is an estimate (from its codes' histograms, not coded): the
    /// page's live figures before the file is made. Every size of a written file, and of
    /// `lowbit plan`, is coded.
    #[serde(skip_serializing_if = "is_false")]
    pub sizes_estimated: bool,
}

fn is_false(v: &bool) -> bool {
    !*v
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Clone, Debug, Serialize)]
pub struct TensorReport {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub parameters: u64,
    pub codec: CodecParams,
    pub label: String,
    /// The section as stored (coded bytes + padding).
    pub section_bytes: u64,
    /// `section_bytes` is an estimate (see [`OutputSummary::sizes_estimated`]).
    #[serde(skip_serializing_if = "is_false")]
    pub size_estimated: bool,
    pub payload_bytes: u64,
    pub side_bytes: u64,
    /// 8 * section_bytes / parameters (the header is reported once, for the file).
    pub bits_per_weight: f64,
    /// ||W - W^||_F / ||W||_F after conversion back to the tensor's dtype.
    pub rel_error: f64,
    pub rel_mse: f64,
    /// 10 log10(||W||^2 / ||W - W^||^2); infinite (null in JSON) for exact tensors.
    pub snr_db: Option<f64>,
    pub non_finite: u64,
    /// Why this option was chosen (or why only the lossless one was available): `why.text`.
    pub reason: String,
    /// The same, as data: the rule and the neighbouring options with their marginal cost.
    pub why: Why,
    /// Every option measured for this tensor.
    pub options: Vec<OptionReport>,
    /// With calibration (docs/CALIBRATION.md), for a weight with activation statistics: the mean
    /// input energy of its columns, `mean_j E[x_j^2]` ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_energy: Option<f64>,
    /// ... and the chosen option's relative output error, what the allocator minimised for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_error: Option<f64>,
    /// With sensitivity: the model's output change per unit of this tensor's relative MSE ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sensitivity: Option<f64>,
    /// ... and the chosen option's predicted output change (sensitivity x relative MSE, an
    /// estimate), what the allocator minimised for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predicted_change: Option<f64>,
}

/// Where the activation statistics of a calibrated run came from.
#[derive(Clone, Debug, Serialize)]
pub struct CalibrationSummary {
    /// The calibration text's name ("built-in text" for the default one).
    pub source: String,
    /// Tokens the original model ran over.
    pub tokens: usize,
    /// Weights with statistics (their distortion is the relative output error).
    pub weights: usize,
}

/// Why a tensor got its option, computed from the options the allocator had (see [`explain`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Why {
    /// `greedy`, `knapsack`, `max-error`, `exact` (the lossless section was no larger than any
    /// lossy option), or `restricted` (a rule left only some options: 1-D, small, non-float or
    /// non-finite tensors, `--keep`, `--method lossless`).
    pub rule: String,
    /// In words, with the figures below.
    pub text: String,
    /// `--method` when one was forced (the options were that codec's only).
    pub forced_method: Option<String>,
    /// The next cheaper option on the tensor's rate-distortion front (the greedy's convex hull,
    /// the knapsack's Pareto front): what choosing less would have given. In error mode: the
    /// closest cheaper option of all (the one that misses the bound).
    pub cheaper: Option<Neighbour>,
    /// The next dearer option on that front: what the next upgrade would have cost.
    pub dearer: Option<Neighbour>,
    /// Whether the chosen option is on the lower convex hull of the tensor's options (the greedy
    /// picks only those; the knapsack may pick any Pareto-optimal option).
    pub on_hull: bool,
}

/// A neighbouring option, relative to the chosen one.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Neighbour {
    pub label: String,
    /// Its section bytes minus the chosen option's (negative: smaller).
    pub bytes_delta: i64,
    /// Its relative MSE minus the chosen option's (the allocator's distortion unit).
    pub rel_mse_delta: f64,
}

/// One option of a tensor as the allocator saw it: a `pipeline::MeasuredOption` with its name and
/// its section bytes (padding included, as the allocator counts them). Kept apart from that
/// record so that [`explain`] works on plain (label, bytes, distortion) rows, which its tests
/// write by hand.
#[derive(Clone, Debug)]
pub struct Choice {
    pub label: String,
    pub bytes: u64,
    /// What the allocator minimised for the option (relative MSE, or recall for a vector
    /// dataset). The report's texts and `Neighbour::rel_mse_delta` use its
    /// [`Distortion::value`]; they call it relative MSE, which it is except for a vector dataset
    /// (the report's JSON keeps those names and values).
    pub distortion: Distortion,
    pub exact: bool,
}

/// How the option was chosen.
#[derive(Clone, Debug)]
pub enum Rule {
    /// A `--bpw` budget shared by this allocator.
    Budget(crate::alloc::Allocator),
    /// `--max-error` with this bound on the relative error.
    MaxError(f64),
    /// A rule restricted the options (its words).
    Restricted(String),
}

/// Everything [`explain`] needs about one tensor.
#[derive(Clone, Debug)]
pub struct Decision {
    pub options: Vec<Choice>,
    pub chosen: usize,
    pub rule: Rule,
    pub forced: Option<String>,
}

/// Why `d.chosen` was chosen, from the allocator's own data: the neighbouring options on the
/// tensor's front and what moving to them would cost or save.
pub fn explain(d: &Decision) -> Why {
    let (cheaper, dearer, on_hull) = neighbours(d);
    let c = &d.options[d.chosen];
    let cheapest_lossy = d
        .options
        .iter()
        .filter(|o| !o.exact)
        .min_by_key(|o| o.bytes);
    let mut parts = Vec::new();
    let rule = match &d.rule {
        Rule::Restricted(why) => {
            parts.push(why.clone());
            if d.options.len() > 1 {
                push_margins(&mut parts, &dearer, &cheaper);
            }
            "restricted"
        }
        _ if c.exact && cheapest_lossy.is_none_or(|l| l.bytes >= c.bytes) => {
            parts.push(match cheapest_lossy {
                Some(l) => format!(
                    "exact: the lossless section ({} bytes) is no larger than any lossy option (the cheapest, {}, takes {} bytes)",
                    c.bytes, l.label, l.bytes
                ),
                None => "exact: no lossy option applies".to_string(),
            });
            "exact"
        }
        Rule::Budget(allocator) => {
            parts.push(budget_text(*allocator, c, on_hull));
            push_margins(&mut parts, &dearer, &cheaper);
            allocator.name()
        }
        Rule::MaxError(bound) => {
            push_max_error_texts(&mut parts, *bound, c, &cheaper);
            "max-error"
        }
    };
    let mut text = parts.join("; ");
    if let Some(m) = &d.forced {
        text = format!("--method {m}: {text}");
    }
    Why {
        rule: rule.to_string(),
        text,
        forced_method: d.forced.clone(),
        cheaper,
        dearer,
        on_hull,
    }
}

/// The chosen option's cheaper and dearer neighbours on the tensor's front (in error mode, the
/// closest cheaper option of all), and whether it is on the lower convex hull.
fn neighbours(d: &Decision) -> (Option<Neighbour>, Option<Neighbour>, bool) {
    use crate::alloc::{convex_hull, pareto_front, Allocator, OptionPoint};
    let points: Vec<OptionPoint> = d
        .options
        .iter()
        .map(|o| OptionPoint {
            bytes: o.bytes,
            distortion: o.distortion.value(),
        })
        .collect();
    let hull = convex_hull(&points);
    let on_hull = hull.contains(&d.chosen);
    let front = match d.rule {
        Rule::Budget(Allocator::Greedy) if on_hull => hull,
        _ => pareto_front(&points),
    };
    let c = &d.options[d.chosen];
    let neighbour = |i: usize| Neighbour {
        label: d.options[i].label.clone(),
        bytes_delta: d.options[i].bytes as i64 - c.bytes as i64,
        // The relative MSE's change (as named), whatever the allocator minimises (a vector
        // dataset's recall distortion is not a relative MSE).
        rel_mse_delta: d.options[i].distortion.relative_mse() - c.distortion.relative_mse(),
    };
    // The chosen option's place on the front (by bytes if it is not on it, as with a forced
    // option the rules kept alone).
    let below = front
        .iter()
        .copied()
        .filter(|&i| {
            d.options[i].bytes < c.bytes && d.options[i].distortion.value() > c.distortion.value()
        })
        .max_by_key(|&i| d.options[i].bytes);
    let above = front
        .iter()
        .copied()
        .filter(|&i| {
            d.options[i].bytes > c.bytes && d.options[i].distortion.value() < c.distortion.value()
        })
        .min_by_key(|&i| d.options[i].bytes);
    let (mut cheaper, dearer) = (below.map(neighbour), above.map(neighbour));
    if let Rule::MaxError(_) = d.rule {
        // Error mode picks the cheapest option within the bound: the one to name is the closest
        // cheaper option of all (it misses the bound), on the front or not.
        cheaper = (0..d.options.len())
            .filter(|&i| d.options[i].bytes < c.bytes)
            .max_by_key(|&i| (d.options[i].bytes, std::cmp::Reverse(i)))
            .map(neighbour);
    }
    (cheaper, dearer, on_hull)
}

/// What the next upgrade and the next downgrade would cost or save, for those that exist.
fn push_margins(parts: &mut Vec<String>, dearer: &Option<Neighbour>, cheaper: &Option<Neighbour>) {
    if let Some(n) = dearer {
        parts.push(format!(
            "the next option up ({}) would cost +{} bytes for {:.3e} rel. MSE ({:.3e} per KB)",
            n.label,
            n.bytes_delta,
            n.rel_mse_delta,
            1024.0 * n.rel_mse_delta / n.bytes_delta.max(1) as f64
        ));
    }
    if let Some(n) = cheaper {
        parts.push(format!(
            "the next option down ({}) would save {} bytes for +{:.3e} rel. MSE ({:.3e} per KB)",
            n.label,
            -n.bytes_delta,
            n.rel_mse_delta,
            1024.0 * n.rel_mse_delta / (-n.bytes_delta).max(1) as f64
        ));
    }
}

/// The chosen option's relative MSE, with the recall@10 a vector dataset's allocation is judged by.
fn measured_words(d: Distortion) -> String {
    match d {
        Distortion::Recall { recall_at_10, .. } => format!(
            "rel. MSE {:.3e}, recall@10 {recall_at_10:.3}",
            d.relative_mse()
        ),
        _ => format!("rel. MSE {:.3e}", d.relative_mse()),
    }
}

/// The budget allocators' reason for the chosen option `c`.
fn budget_text(allocator: crate::alloc::Allocator, c: &Choice, on_hull: bool) -> String {
    use crate::alloc::Allocator;
    match allocator {
        Allocator::Greedy => format!(
            "greedy: best error per byte at the file's equal-slope point ({} in {} bytes)",
            measured_words(c.distortion),
            c.bytes
        ),
        Allocator::Knapsack => format!(
            "knapsack: part of the least-total-error choice within the budget ({} in {} bytes{})",
            measured_words(c.distortion),
            c.bytes,
            if on_hull {
                ""
            } else {
                "; off the convex hull, which only the knapsack picks"
            }
        ),
    }
}

/// Error mode's reason: within the bound (and the closest cheaper option misses it), or no option
/// reaches it.
fn push_max_error_texts(
    parts: &mut Vec<String>,
    bound: f64,
    c: &Choice,
    cheaper: &Option<Neighbour>,
) {
    // The bound is checked on the relative MSE (whatever the allocator minimises).
    let error = c.distortion.relative_mse().sqrt();
    if error <= bound {
        parts.push(format!(
            "max-error: cheapest option with relative error <= {bound} (this one: {error:.4})"
        ));
        // The cheaper options all miss the bound: name the closest one.
        if let Some(n) = cheaper {
            parts.push(format!(
                "the next cheaper option ({}, {} bytes less) has relative error {:.4}",
                n.label,
                -n.bytes_delta,
                (c.distortion.relative_mse() + n.rel_mse_delta).sqrt()
            ));
        }
    } else {
        parts.push(format!(
            "max-error: no option reaches relative error {bound}: the most accurate one ({error:.4})"
        ));
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct OptionReport {
    pub label: String,
    pub bits_per_weight: f64,
    /// The size is an estimate from the codes' histograms (the option was not coded).
    #[serde(skip_serializing_if = "is_false")]
    pub estimated: bool,
    pub rel_mse: f64,
    pub chosen: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct RdPoint {
    pub bits_per_weight: f64,
    /// The allocator's distortion: the mean relative MSE over the tensors with a lossy option,
    /// or with sensitivity the predicted output change of the whole model (an estimate).
    pub rel_mse: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Spectrum {
    pub tensor: String,
    pub singular_values: Vec<f32>,
}

impl Report {
    /// One line on where the kernels ran, e.g. `gpu: NVIDIA ... (DiscreteGpu, Vulkan); real GPU`.
    pub fn backend_text(&self) -> String {
        let b = &self.backend;
        let mut text = format!("{} (asked: {})", b.used, b.requested.name());
        if let Some(adapter) = &b.adapter {
            text.push_str(&format!(", adapter {adapter}"));
        }
        text.push_str(&format!("; {}", b.reason));
        if let Some(f) = &b.fallback {
            text.push_str(&format!(
                "; the GPU failed during the run and the rest ran on the CPU: {f}"
            ));
        }
        text
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serialises")
    }

    /// A self-contained HTML page: summary, per-tensor table and the charts.
    pub fn to_html(&self) -> String {
        let mut html = String::new();
        html.push_str("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n");
        html.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
        html.push_str(&format!(
            "<title>lowbit report: {}</title>\n",
            esc(&self.input.file)
        ));
        html.push_str(STYLE);
        html.push_str("</head><body>\n");
        html.push_str(&format!(
            "<h1>lowbit report: {}</h1>\n",
            esc(&self.input.file)
        ));
        self.push_summary(&mut html);
        if let Some(d) = &self.downstream {
            push_downstream(&mut html, d);
        }
        for note in &self.notes {
            html.push_str(&format!("<p class=\"note\">{}</p>\n", esc(note)));
        }
        let charts = self.charts();
        for (title, chart) in &charts[..3] {
            html.push_str(&format!("<h2>{}</h2>\n{chart}", esc(title)));
        }
        if let Some(v) = &self.vectors {
            html.push_str(&v.to_html());
        }
        for (title, chart) in &charts[3..] {
            html.push_str(&format!("<h2>{}</h2>\n{chart}", esc(title)));
        }
        self.push_tensor_table(&mut html);
        html.push_str(&format!(
            "<p class=\"foot\">lowbit {} &middot; report schema {}</p>\n</body></html>\n",
            esc(&self.lowbit_version),
            self.schema_version
        ));
        html
    }

    /// The summary table: sizes, rates, errors, and where the kernels ran.
    fn push_summary(&self, html: &mut String) {
        let o = &self.output;
        html.push_str("<table class=\"summary\">\n");
        for (k, v) in [
            (
                "input",
                format!(
                    "{} bytes, {} parameters in {} tensors",
                    self.input.bytes, self.input.parameters, self.input.tensors
                ),
            ),
            (
                "target",
                format!(
                    "{} = {} (method {})",
                    self.target.kind, self.target.value, self.target.method
                ),
            ),
            (
                "output",
                format!(
                    "{} bytes{}",
                    o.bytes,
                    match (o.written, o.sizes_estimated) {
                        (true, _) => "",
                        (false, false) => " (planned, not written)",
                        (false, true) => " (planned, not written; sizes estimated before coding)",
                    }
                ),
            ),
            (
                "bits per weight",
                format!("{:.4} (whole file, everything counted)", o.bits_per_weight),
            ),
            ("ratio", format!("{:.3}x", o.ratio)),
            (
                "header / payload / side / padding",
                format!(
                    "{} / {} / {} / {} bytes",
                    o.header_bytes, o.payload_bytes, o.side_bytes, o.padding_bytes
                ),
            ),
            (
                "relative MSE (lossy tensors)",
                format!("{:.4e}", o.rel_mse_lossy),
            ),
            (
                "relative MSE (2-D float tensors)",
                format!("{:.4e}", o.rel_mse_2d),
            ),
            ("distortion measure", self.distortion_measure.clone()),
            ("backend", self.backend_text()),
        ]
        .into_iter()
        .chain(self.sensitivity.as_ref().map(|s| {
            (
                "predicted output change",
                format!(
                    "{:.4} {} (estimate: sum of sensitivity x relative MSE; `lowbit eval` \
                     measures the real change)",
                    s.predicted_change, s.measure
                ),
            )
        })) {
            html.push_str(&format!(
                "<tr><th>{}</th><td>{}</td></tr>\n",
                esc(k),
                esc(&v)
            ));
        }
        html.push_str("</table>\n");
    }

    /// One row per tensor: its codec, rate, error and why it got them.
    fn push_tensor_table(&self, html: &mut String) {
        // With sensitivity, two more columns: how much the tensor matters, and the chosen
        // option's predicted share of the output change.
        let weighed = self.sensitivity.as_ref().map(|s| s.measure.as_str());
        html.push_str("<h2>Tensors</h2>\n<table class=\"tensors\"><thead><tr>");
        let mut heads = vec![
            "tensor".to_string(),
            "dtype".into(),
            "shape".into(),
            "codec".into(),
            "bits/weight".into(),
            "payload B".into(),
            "side B".into(),
            "rel. error".into(),
            "SNR dB".into(),
        ];
        if let Some(m) = weighed {
            heads.push(format!("sensitivity ({m} per rel. MSE)"));
            heads.push(format!("predicted {m} (estimate)"));
        }
        heads.push("why".into());
        for h in heads {
            html.push_str(&format!("<th>{}</th>", esc(&h)));
        }
        html.push_str("</tr></thead><tbody>\n");
        for t in &self.tensors {
            let weighed_cells = match weighed {
                Some(_) => format!(
                    "<td>{:.3e}</td><td>{:.3e}</td>",
                    t.sensitivity.unwrap_or(0.0),
                    t.predicted_change.unwrap_or(0.0)
                ),
                None => String::new(),
            };
            html.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{:?}</td><td>{}</td><td>{:.3}</td><td>{}</td><td>{}</td><td>{:.3e}</td><td>{}</td>{weighed_cells}<td>{}</td></tr>\n",
                esc(&t.name),
                t.dtype,
                t.shape,
                esc(&t.label),
                t.bits_per_weight,
                t.payload_bytes,
                t.side_bytes,
                t.rel_error,
                t.snr_db.map(|s| format!("{s:.1}")).unwrap_or_else(|| "exact".into()),
                esc(&t.reason)
            ));
        }
        html.push_str("</tbody></table>\n");
    }

    /// The report's charts as (heading, `<svg>`): bits per tensor, error per tensor, the
    /// rate-distortion curve, and the singular-value spectra when there are any. report.html and
    /// the page both show these.
    pub fn charts(&self) -> Vec<(String, String)> {
        let mut charts = vec![
            (
                "Bits per weight by tensor".to_string(),
                svg::bar_chart(&self.bits_chart()),
            ),
            (
                "Error by tensor".to_string(),
                svg::bar_chart(&self.error_chart()),
            ),
            (
                "Rate-distortion".to_string(),
                svg::line_chart(&self.rd_chart()),
            ),
        ];
        if let Some(s) = &self.search {
            charts.push(("Search".to_string(), svg::line_chart(&search_chart(s))));
        }
        if !self.spectra.is_empty() {
            charts.push((
                "Singular-value spectra".to_string(),
                svg::line_chart(&self.spectra_chart()),
            ));
        }
        charts
    }

    /// The tensors the bits chart shows: those of at least [`BITS_CHART_MIN_PARAMETERS`] (a
    /// bias of a few hundred values costs tens of bits per weight in side information and would
    /// set the axis), all of them when none is that large.
    fn bits_chart_tensors(&self) -> Vec<&TensorReport> {
        let large: Vec<&TensorReport> = self
            .tensors
            .iter()
            .filter(|t| t.parameters >= BITS_CHART_MIN_PARAMETERS)
            .collect();
        if large.is_empty() {
            self.tensors.iter().collect()
        } else {
            large
        }
    }

    fn bits_chart(&self) -> svg::BarChart {
        let shown = self.bits_chart_tensors();
        let left_out = self.tensors.len() - shown.len();
        let title = if left_out == 0 {
            "Coded bits per weight (payload + side information)".to_string()
        } else {
            format!(
                "Coded bits per weight (payload + side information); {left_out} tensors of fewer than {BITS_CHART_MIN_PARAMETERS} parameters left out"
            )
        };
        svg::BarChart {
            title,
            value_axis: svg::Axis {
                label: "bits per weight".into(),
                scale: svg::Scale::Linear,
                range: None,
            },
            segment_names: vec![
                "payload".into(),
                "side information".into(),
                "padding".into(),
            ],
            bars: shown
                .into_iter()
                .map(|t| {
                    let per = |b: u64| 8.0 * b as f64 / (t.parameters.max(1)) as f64;
                    let padding = t.section_bytes - t.payload_bytes - t.side_bytes;
                    svg::Bar {
                        label: t.name.clone(),
                        segments: vec![per(t.payload_bytes), per(t.side_bytes), per(padding)],
                    }
                })
                .collect(),
            width: 900,
        }
    }

    fn error_chart(&self) -> svg::BarChart {
        svg::BarChart {
            title: "Relative error ||W - W^||_F / ||W||_F (exact tensors show none)".into(),
            value_axis: svg::Axis {
                label: "relative error".into(),
                scale: svg::Scale::Linear,
                range: None,
            },
            segment_names: vec!["relative error".into()],
            bars: self
                .tensors
                .iter()
                .map(|t| svg::Bar {
                    label: t.name.clone(),
                    segments: vec![t.rel_error],
                })
                .collect(),
            width: 900,
        }
    }

    /// For a vector dataset, whose curve is the allocator's `1 - recall@10 + 1e-6 x relative MSE`
    /// (`Distortion::Recall`), the chosen option's value of it where its recall was measured
    /// (`Some(None)`: not measured, no point); `None` for other inputs.
    fn vector_chosen_distortion(&self) -> Option<Option<f64>> {
        let v = self.vectors.as_ref()?;
        let rel_mse = self.tensors.first().map_or(0.0, |t| t.rel_mse);
        Some(
            v.options
                .iter()
                .find(|o| o.chosen)
                .and_then(|o| o.recall_at_10)
                .map(|r| (1.0 - r) + 1e-6 * rel_mse),
        )
    }

    fn rd_chart(&self) -> svg::Chart {
        let mut series = vec![svg::Series {
            name: "allocator's curve (whole model)".into(),
            points: self
                .rd_curve
                .iter()
                // Past the last lossy option the curve falls to exactly zero (all tensors exact);
                // a log axis cannot show that, and the tiny values just before it are rounding
                // residue of the running sum, so the chart stops where distortion is negligible.
                .filter(|p| p.rel_mse > RD_CHART_FLOOR)
                .map(|p| (p.bits_per_weight, p.rel_mse))
                .collect(),
            mark: svg::Mark::Line,
        }];
        // The chosen point on the curve's own axes: sections only, mean relative MSE over the
        // tensors that had a lossy option (or the predicted output change).
        let codable: Vec<&TensorReport> = self
            .tensors
            .iter()
            .filter(|t| t.options.iter().any(|o| o.rel_mse > 0.0))
            .collect();
        let vector = self.vector_chosen_distortion();
        if !codable.is_empty() && vector != Some(None) {
            let section_bits: u64 = self.tensors.iter().map(|t| 8 * t.section_bytes).sum();
            let mean_rel_mse = match (&self.sensitivity, vector) {
                (Some(s), _) => s.predicted_change,
                (None, Some(Some(d))) => d,
                _ => codable.iter().map(|t| t.rel_mse).sum::<f64>() / codable.len() as f64,
            };
            series.push(svg::Series {
                name: "chosen".into(),
                points: vec![(
                    section_bits as f64 / self.input.parameters.max(1) as f64,
                    mean_rel_mse,
                )],
                mark: svg::Mark::Points,
            });
        }
        let y = match (&self.sensitivity, vector) {
            (Some(s), _) => format!("predicted output change ({}, estimate)", s.measure),
            (None, Some(_)) => "1 - recall@10 (the allocator's measure for vectors)".to_string(),
            (None, None) => "mean relative MSE per tensor".to_string(),
        };
        svg::Chart {
            title: format!("Rate-distortion: {y} vs bits per weight (sections only)"),
            x: svg::Axis {
                label: "bits per weight".into(),
                scale: svg::Scale::Linear,
                range: None,
            },
            y: svg::Axis {
                label: y,
                scale: svg::Scale::Log10,
                range: None,
            },
            series,
            width: 800,
            height: 420,
        }
    }

    fn spectra_chart(&self) -> svg::Chart {
        let shown = self.spectra.len().min(SPECTRA_IN_CHART);
        let title = if shown < self.spectra.len() {
            format!(
                "Singular values, normalised by the largest (first {shown} of {} tensors; all in report.json)",
                self.spectra.len()
            )
        } else {
            "Singular values, normalised by the largest".to_string()
        };
        svg::Chart {
            title,
            x: svg::Axis {
                label: "index".into(),
                scale: svg::Scale::Linear,
                range: None,
            },
            y: svg::Axis {
                label: "sigma_i / sigma_1".into(),
                scale: svg::Scale::Log10,
                range: None,
            },
            series: self.spectra[..shown]
                .iter()
                .map(|s| {
                    let top = s
                        .singular_values
                        .first()
                        .copied()
                        .unwrap_or(1.0)
                        .max(f32::MIN_POSITIVE) as f64;
                    svg::Series {
                        name: s.tensor.clone(),
                        points: s
                            .singular_values
                            .iter()
                            .enumerate()
                            .map(|(i, &v)| ((i + 1) as f64, v as f64 / top))
                            .collect(),
                        mark: svg::Mark::Line,
                    }
                })
                .collect(),
            width: 800,
            height: 420,
        }
    }
}

impl VectorReport {
    fn to_html(&self) -> String {
        let mut html = format!("<h2>Vectors: {} x {}</h2>\n", self.vectors, self.dimension);
        let chosen: Vec<(f64, f64)> = self
            .options
            .iter()
            .filter(|o| o.chosen)
            .map(|o| (o.bits_per_dimension, o.mse_per_dimension))
            .collect();
        let option_series = |keep: &dyn Fn(&str) -> bool, name: &str| svg::Series {
            name: name.into(),
            points: self
                .options
                .iter()
                .filter(|o| keep(&o.label))
                .map(|o| (o.bits_per_dimension, o.mse_per_dimension))
                .collect(),
            mark: svg::Mark::LineAndPoints,
        };
        html.push_str(&svg::line_chart(&svg::Chart {
            title: "Bits per dimension vs MSE: the options and the Gaussian R(D) bound".into(),
            x: svg::Axis::linear("bits per dimension (section, side information counted)"),
            y: svg::Axis::log10("MSE per dimension"),
            series: vec![
                svg::Series {
                    name: "Gaussian R(D) (reverse water-filling on the eigenvalues)".into(),
                    points: self
                        .rd_bound
                        .iter()
                        .map(|p| (p.bits_per_dimension, p.mse_per_dimension))
                        .collect(),
                    mark: svg::Mark::Line,
                },
                option_series(
                    &|l| l.starts_with("transform") && !l.contains("mixture"),
                    "transform (KLT + ECSQ)",
                ),
                option_series(
                    &|l| l.starts_with("transform") && l.contains("mixture"),
                    "transform, Gaussian mixture (a KLT per cluster)",
                ),
                option_series(&|l| l.starts_with("pq"), "product quantization"),
                svg::Series {
                    name: "chosen".into(),
                    points: chosen,
                    mark: svg::Mark::Points,
                },
            ],
            width: 800,
            height: 420,
        }));
        if let Some(a) = &self.allocation {
            html.push_str(&svg::line_chart(&svg::Chart {
                title: format!("Bits per vector by dimension: {}", a.label),
                x: svg::Axis::linear(a.axis.clone()),
                y: svg::Axis::linear("bits per vector"),
                series: vec![
                    svg::Series {
                        name: "coded symbols (entropy estimate)".into(),
                        points: enumerate(&a.estimated_bits),
                        mark: svg::Mark::Steps,
                    },
                    svg::Series {
                        name: "reverse water-filling (per eigen-component)".into(),
                        points: enumerate(&a.water_filling_bits),
                        mark: svg::Mark::Steps,
                    },
                ],
                width: 800,
                height: 360,
            }));
        }
        html.push_str(&format!(
            "<p class=\"note\">recall@10: {}</p>\n<table class=\"tensors\"><thead><tr>",
            esc(&self.recall_definition)
        ));
        for h in [
            "option",
            "bits/dim",
            "MSE/dim",
            "R(D) bits/dim",
            "gap",
            "recall@10",
            "",
        ] {
            html.push_str(&format!("<th>{h}</th>"));
        }
        html.push_str("</tr></thead><tbody>\n");
        for o in &self.options {
            html.push_str(&format!(
                "<tr><td>{}</td><td>{:.4}</td><td>{:.4e}</td><td>{:.4}</td><td>{:.3}</td><td>{}</td><td>{}</td></tr>\n",
                esc(&o.label),
                o.bits_per_dimension,
                o.mse_per_dimension,
                o.rd_bound_bits,
                o.gap_bits,
                o.recall_at_10.map(|r| format!("{r:.3}")).unwrap_or_else(|| "-".into()),
                if o.chosen { "chosen" } else { "" }
            ));
        }
        html.push_str("</tbody></table>\n");
        html
    }
}

fn enumerate(values: &[f64]) -> Vec<(f64, f64)> {
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| (i as f64, v))
        .collect()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "<style>
body{font-family:system-ui,sans-serif;margin:1.5rem auto;max-width:1000px;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:1rem 0}th,td{padding:.2rem .6rem;border-bottom:1px solid #ddd;text-align:left;font-size:.9rem}
table.tensors td:nth-child(n+5){text-align:right;font-variant-numeric:tabular-nums}
svg{max-width:100%;height:auto}.note{background:#fff6d5;padding:.4rem .6rem}.foot{color:#777;font-size:.8rem}
</style>
";

/// The downstream figures: what the compression did to what the model does.
fn push_downstream(html: &mut String, d: &crate::model::eval::Downstream) {
    use crate::model::eval::Downstream;
    html.push_str("<h2>The model, run</h2>\n<table class=\"summary\">\n");
    let row = |html: &mut String, k: &str, v: String| {
        html.push_str(&format!(
            "<tr><th>{}</th><td>{}</td></tr>\n",
            esc(k),
            esc(&v)
        ));
    };
    match d {
        Downstream::Decoder(e) => {
            row(
                html,
                "text",
                format!(
                    "{} tokens in {} windows of up to {}; {} next tokens scored",
                    e.tokens, e.windows, e.context, e.scored
                ),
            );
            row(
                html,
                "perplexity, original",
                format!("{:.3}", e.perplexity_original),
            );
            row(
                html,
                "perplexity, compressed",
                format!(
                    "{:.3} ({:+.1}%)",
                    e.perplexity_compressed,
                    100.0 * (e.perplexity_compressed / e.perplexity_original - 1.0)
                ),
            );
            row(
                html,
                "mean KL(original || compressed)",
                format!("{:.4} nats per token", e.kl_mean),
            );
            row(
                html,
                "same most likely next token",
                format!("{:.1}%", 100.0 * e.top1_agreement),
            );
        }
        Downstream::Encoder(e) => {
            row(html, "sentences", e.sentences.to_string());
            row(
                html,
                "embedding cosine, mean",
                format!("{:.5}", e.cosine_mean),
            );
            row(
                html,
                "embedding cosine, smallest",
                format!("{:.5}", e.cosine_min),
            );
            row(
                html,
                "same nearest neighbour",
                format!("{:.1}%", 100.0 * e.neighbour_agreement),
            );
        }
    }
    html.push_str("</table>\n");
}

/// The search's curve: the fitness of the best model found after each generation.
fn search_chart(s: &crate::pipeline::search::SearchSummary) -> svg::Chart {
    svg::Chart {
        title: format!(
            "Search: {} of the compressed model on {} {} of {} ({} accepted of {} generations, {} tensors changed)",
            match s.measure {
                OutputChange::KlDivergence => "mean KL divergence",
                OutputChange::OneMinusCosine => "mean 1 - cosine",
            },
            s.units,
            match s.measure {
                OutputChange::KlDivergence => "tokens",
                OutputChange::OneMinusCosine => "sentences",
            },
            s.source,
            s.accepted,
            s.generations,
            s.changed
        ),
        x: svg::Axis::linear("generation"),
        y: svg::Axis::linear(s.measure.label()),
        series: vec![svg::Series {
            name: "best so far".into(),
            points: s
                .curve
                .iter()
                .enumerate()
                .map(|(g, &f)| (g as f64, f))
                .collect(),
            mark: svg::Mark::LineAndPoints,
        }],
        width: 800,
        height: 360,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc::Allocator;

    fn choice(label: &str, bytes: u64, rel_mse: f64) -> Choice {
        Choice {
            label: label.into(),
            bytes,
            distortion: Distortion::RelativeMse(rel_mse),
            exact: rel_mse == 0.0,
        }
    }

    fn options() -> Vec<Choice> {
        vec![
            choice("lossless", 1000, 0.0),
            choice("a 2b", 100, 0.1),
            choice("b 4b", 200, 0.02),
            choice("c 6b", 400, 0.005),
            // Dominated (dearer and worse than b): never a neighbour.
            choice("d", 300, 0.05),
            // Pareto-optimal but above the hull between b and c.
            choice("e 5b", 350, 0.0195),
        ]
    }

    #[test]
    fn budget_neighbours_are_the_front_around_the_choice() {
        for allocator in Allocator::ALL {
            let why = explain(&Decision {
                options: options(),
                chosen: 2,
                rule: Rule::Budget(allocator),
                forced: None,
            });
            assert_eq!(why.rule, allocator.name());
            assert!(why.on_hull);
            let down = why.cheaper.clone().unwrap();
            assert_eq!((down.label.as_str(), down.bytes_delta), ("a 2b", -100));
            assert!((down.rel_mse_delta - 0.08).abs() < 1e-12);
            let up = why.dearer.clone().unwrap();
            // The greedy walks the hull (b -> c); the knapsack's front also holds e.
            let want = if allocator == Allocator::Greedy {
                ("c 6b", 200)
            } else {
                ("e 5b", 150)
            };
            assert_eq!((up.label.as_str(), up.bytes_delta), want);
            assert!(why.text.contains("would cost +") && why.text.contains("would save 100"));
        }
        // The knapsack may pick a point off the hull, and says so.
        let why = explain(&Decision {
            options: options(),
            chosen: 5,
            rule: Rule::Budget(Allocator::Knapsack),
            forced: Some("lowrank".into()),
        });
        assert!(!why.on_hull);
        assert!(why.text.starts_with("--method lowrank: knapsack"));
        assert!(why.text.contains("off the convex hull"), "{}", why.text);
        assert_eq!(why.cheaper.unwrap().label, "b 4b");
        assert_eq!(why.dearer.unwrap().label, "c 6b");
    }

    #[test]
    fn exact_max_error_and_restricted() {
        let mut o = options();
        o[0].bytes = 90;
        let why = explain(&Decision {
            options: o,
            chosen: 0,
            rule: Rule::Budget(Allocator::Knapsack),
            forced: None,
        });
        assert_eq!(why.rule, "exact");
        assert!(why.text.contains("(the cheapest, a 2b, takes 100 bytes)"));
        let why = explain(&Decision {
            options: options(),
            chosen: 2,
            rule: Rule::MaxError(0.2),
            forced: None,
        });
        assert_eq!(why.rule, "max-error");
        assert!(why
            .text
            .contains("next cheaper option (a 2b, 100 bytes less)"));
        let why = explain(&Decision {
            options: options(),
            chosen: 3,
            rule: Rule::MaxError(0.01),
            forced: None,
        });
        assert!(why.text.contains("no option reaches"), "{}", why.text);
        let why = explain(&Decision {
            options: vec![choice("lossless", 10, 0.0)],
            chosen: 0,
            rule: Rule::Restricted("1-D tensor (norm, bias): stored exactly".into()),
            forced: None,
        });
        assert_eq!(why.rule, "restricted");
        assert_eq!(why.text, "1-D tensor (norm, bias): stored exactly");
        assert_eq!((why.cheaper, why.dearer), (None, None));
    }
}
