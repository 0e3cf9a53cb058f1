//! The report of a plan: every figure the analysis and the allocator measured, per tensor and for
//! the whole file, with the reasons for each choice.

use crate::alloc;
use crate::checkpoint::InputTensor;
use crate::codec::{vectors, CodecParams, Method};
use crate::container;
use crate::distortion::Distortion;
use crate::model::sensitivity::OutputChange;
use crate::pipeline::{CompressOptions, Plan, Target, TensorAnalysis};

use super::{
    BitAllocation, InputSummary, OptionReport, OutputSummary, RdPoint, Report, SensitivitySummary,
    Spectrum, TargetSummary, TensorReport, VectorOptionReport, VectorRdPoint, VectorReport,
    REPORT_SCHEMA_VERSION,
};

/// The report for a plan (`written` says whether the file was produced).
pub fn build_report(
    plan: &Plan,
    file_name: &str,
    input_bytes: u64,
    opts: &CompressOptions,
    written: bool,
) -> Report {
    let ckpt = &plan.checkpoint;
    let params = ckpt.parameters();
    let calibration = calibration_summary(plan, opts);
    let model_files = container::model_files_bytes(&plan.manifest);
    let mut tensors = Vec::with_capacity(ckpt.tensors.len());
    let (mut payload, mut side, mut padding) = (0u64, 0u64, 0u64);
    let (mut lossy_err, mut lossy_norm, mut twod_err, mut twod_norm) = (0.0, 0.0, 0.0, 0.0);
    for ((t, a), &ci) in ckpt.tensors.iter().zip(&plan.analyses).zip(&plan.choice) {
        let c = &a.candidates[ci];
        let section = container::section_len(t.numel(), c.coded_bytes);
        payload += c.coded_bytes - c.side_bytes;
        side += c.side_bytes;
        padding += section - c.coded_bytes;
        if c.codec != CodecParams::Lossless {
            lossy_err += c.sq_error;
            lossy_norm += a.norm_sq;
        }
        if t.dtype.is_lossy_compressible() && t.shape.len() >= 2 {
            twod_err += c.sq_error;
            twod_norm += a.norm_sq;
        }
        tensors.push(tensor_report(t, a, ci, opts));
    }
    for g in &plan.manifest.groups {
        payload += g.coded_bytes - g.side_bytes;
        side += g.side_bytes;
        padding += g.section_len() - g.coded_bytes;
    }
    let rd_curve = rd_curve(plan, opts);
    let spectra = ckpt
        .tensors
        .iter()
        .zip(&plan.analyses)
        .filter_map(|(t, a)| {
            a.spectrum.as_ref().map(|s| Spectrum {
                tensor: t.name.clone(),
                singular_values: s.clone(),
            })
        })
        .collect();
    let ratio_of = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let sensitivity = sensitivity_summary(opts, &tensors);
    Report {
        schema_version: REPORT_SCHEMA_VERSION,
        lowbit_version: env!("CARGO_PKG_VERSION").to_string(),
        input: InputSummary {
            file: file_name.to_string(),
            format: ckpt.format,
            bytes: input_bytes,
            parameters: params,
            tensors: ckpt.tensors.len(),
        },
        target: TargetSummary {
            kind: match opts.target {
                Target::BitsPerWeight(_) => "bits_per_weight".into(),
                Target::MaxError(_) => "max_error".into(),
            },
            value: match opts.target {
                Target::BitsPerWeight(v) | Target::MaxError(v) => v,
            },
            method: opts
                .method
                .map(|m| m.name().to_string())
                .unwrap_or_else(|| "auto".into()),
            overrides: opts.overrides.iter().map(|o| o.to_string()).collect(),
            allocator: opts.allocator.name().to_string(),
        },
        output: OutputSummary {
            bytes: plan.output_bytes,
            bits_per_weight: 8.0 * (plan.output_bytes - model_files) as f64 / params.max(1) as f64,
            header_bytes: plan.header_len,
            model_files_bytes: model_files,
            payload_bytes: payload,
            side_bytes: side,
            padding_bytes: padding,
            ratio: ratio_of(input_bytes as f64, plan.output_bytes as f64),
            rel_mse_lossy: ratio_of(lossy_err, lossy_norm),
            rel_mse_2d: ratio_of(twod_err, twod_norm),
            written,
            sizes_estimated: tensors.iter().any(|t| t.size_estimated),
        },
        distortion_measure: distortion_measure(calibration.as_ref(), opts),
        tensors,
        rd_curve,
        spectra,
        vectors: vector_report(plan),
        notes: notes(plan)
            .into_iter()
            .chain(importance_note(plan, opts))
            .collect(),
        backend: plan.backend.clone(),
        downstream: None,
        calibration,
        sensitivity,
        search: plan.search.clone(),
    }
}

/// The allocator's whole-model curve (convex-hull breakpoints) in bits per weight.
fn rd_curve(plan: &Plan, opts: &CompressOptions) -> Vec<RdPoint> {
    let params = plan.checkpoint.parameters();
    let points = crate::pipeline::allocate::option_points(&plan.checkpoint, &plan.analyses);
    let lossy_tensors = plan
        .analyses
        .iter()
        .filter(|a| {
            a.candidates
                .iter()
                .any(|c| c.codec != CodecParams::Lossless)
        })
        .count();
    // With sensitivity the distortions are predicted output changes, which add up to the
    // whole model's; relative MSEs are shown as a mean per tensor.
    let per = opts
        .sensitivity
        .as_ref()
        .map_or(lossy_tensors.max(1), |_| 1) as f64;
    alloc::rd_curve(&points)
        .into_iter()
        .map(|p| RdPoint {
            bits_per_weight: 8.0 * p.bytes as f64 / params.max(1) as f64,
            rel_mse: p.distortion / per,
        })
        .collect()
}

/// How the sensitivity was measured and the change it predicts for `tensors` (`None` without).
fn sensitivity_summary(
    opts: &CompressOptions,
    tensors: &[TensorReport],
) -> Option<SensitivitySummary> {
    opts.sensitivity.as_ref().map(|s| SensitivitySummary {
        source: s.source.clone(),
        measure: s.measure.label().to_string(),
        units: s.units,
        delta: s.delta,
        measured: s.tensors.len(),
        predicted_change: tensors.iter().filter_map(|t| t.predicted_change).sum(),
    })
}

/// One tensor's line of the report: its chosen option, every option measured, and why.
fn tensor_report(
    t: &InputTensor,
    a: &TensorAnalysis,
    ci: usize,
    opts: &CompressOptions,
) -> TensorReport {
    let c = &a.candidates[ci];
    let section = container::section_len(t.numel(), c.coded_bytes);
    let rel_mse = c.distortion.relative_mse();
    let numel = t.numel().max(1) as f64;
    let why = super::explain(&super::Decision {
        options: a
            .candidates
            .iter()
            .map(|o| super::Choice {
                label: o.codec.label(),
                bytes: container::section_len(t.numel(), o.coded_bytes),
                distortion: o.distortion,
                exact: o.codec == CodecParams::Lossless,
            })
            .collect(),
        chosen: ci,
        rule: if !a.restriction.is_empty() {
            super::Rule::Restricted(a.restriction.clone())
        } else {
            match opts.target {
                Target::BitsPerWeight(_) => super::Rule::Budget(opts.allocator),
                Target::MaxError(e) => super::Rule::MaxError(e),
            }
        },
        forced: opts.method.map(|m| m.name().to_string()),
    });
    let reason = why.text.clone();
    TensorReport {
        name: t.name.clone(),
        dtype: t.dtype,
        shape: t.shape.clone(),
        parameters: t.numel(),
        codec: c.codec.clone(),
        label: c.codec.label(),
        section_bytes: section,
        size_estimated: c.is_estimate(),
        payload_bytes: c.coded_bytes - c.side_bytes,
        side_bytes: c.side_bytes,
        bits_per_weight: 8.0 * section as f64 / numel,
        rel_error: rel_mse.sqrt(),
        rel_mse,
        snr_db: (rel_mse > 0.0).then(|| -10.0 * rel_mse.log10()),
        non_finite: a.non_finite,
        reason,
        why,
        options: a
            .candidates
            .iter()
            .enumerate()
            .map(|(i, o)| OptionReport {
                label: o.codec.label(),
                bits_per_weight: 8.0 * container::section_len(t.numel(), o.coded_bytes) as f64
                    / numel,
                estimated: o.is_estimate(),
                rel_mse: o.distortion.relative_mse(),
                chosen: i == ci,
            })
            .collect(),
        input_energy: a.input_energy,
        output_error: match c.distortion {
            Distortion::OutputError { output_error, .. } => Some(output_error),
            _ => None,
        },
        sensitivity: opts.sensitivity.as_ref().map(|s| s.for_tensor(&t.name)),
        predicted_change: match c.distortion {
            Distortion::ModelLoss { .. } => Some(c.distortion.value()),
            _ => opts.sensitivity.as_ref().map(|_| 0.0),
        },
    }
}

/// Where a calibrated run's statistics came from (`None` without calibration).
fn calibration_summary(plan: &Plan, opts: &CompressOptions) -> Option<super::CalibrationSummary> {
    opts.activations
        .as_ref()
        .map(|s| super::CalibrationSummary {
            source: s.source.clone(),
            tokens: s.tokens,
            weights: plan
                .analyses
                .iter()
                .filter(|a| a.input_energy.is_some())
                .count(),
        })
}

/// What the allocator minimised, in words.
fn distortion_measure(
    calibration: Option<&super::CalibrationSummary>,
    opts: &CompressOptions,
) -> String {
    let stats = |c: &super::CalibrationSummary| {
        format!(
            "d_j = E[x_j^2] the mean square of input channel j ({}, {} tokens; the scalar grid \
             steps each input channel by it), for the {} weights with statistics, the relative \
             squared error ||W - W^||^2 / ||W||^2 for the others",
            c.source, c.tokens, c.weights
        )
    };
    let Some(s) = &opts.sensitivity else {
        return match calibration {
            None => "sum over tensors of the relative squared error ||W - W^||^2 / ||W||^2, \
                     every tensor counting the same whatever its size"
                .into(),
            Some(c) => format!(
                "sum over tensors of the relative output error sum_ij d_j (W_ij - W^_ij)^2 / \
                 sum_ij d_j W_ij^2, {}; every tensor counting the same whatever its size",
                stats(c)
            ),
        };
    };
    // With statistics, the sensitivity (measured with noise spread evenly over the weights)
    // multiplies the relative squared error of the even noise that moves the output as much
    // (`distortion::OutputWeights::equivalent_mse`).
    let error = match calibration {
        None => "relative squared error ||W - W^||^2 / ||W||^2".to_string(),
        Some(c) => format!(
            "output error sum_ij d_j (W_ij - W^_ij)^2 / (mean_j d_j ||W||^2), {}",
            stats(c)
        ),
    };
    let (what, units) = match s.measure {
        OutputChange::KlDivergence => (
            "mean KL divergence of the next-token distributions",
            "tokens",
        ),
        OutputChange::OneMinusCosine => ("mean 1 - cosine of the embeddings", "sentences"),
    };
    format!(
        "sum over tensors of sensitivity x {error}: the predicted change of the model's output \
         ({what}), each weight matrix's sensitivity measured by running the original model over \
         {} {units} of {} with that matrix perturbed (relative MSE {}); other tensors take the \
         largest sensitivity",
        s.units, s.source, s.delta
    )
}

/// Points of the Gaussian R(D) bound drawn in the report, from 1/16 to 8 bits per dimension.
const RD_BOUND_POINTS: usize = 64;

/// The report's vector section, for the first tensor coded as a vector dataset.
fn vector_report(plan: &Plan) -> Option<VectorReport> {
    let (t, a, &ci) = plan
        .checkpoint
        .tensors
        .iter()
        .zip(&plan.analyses)
        .zip(&plan.choice)
        .map(|((t, a), c)| (t, a, c))
        .find(|(_, a, _)| a.vectors.is_some())?;
    let stats = a.vectors.as_ref().expect("found above");
    let numel = t.numel().max(1) as f64;
    let eig = &stats.eigenvalues;
    let options: Vec<VectorOptionReport> = a
        .candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| c.vector.is_some())
        .map(|(i, c)| {
            let bits = 8.0 * container::section_len(t.numel(), c.coded_bytes) as f64 / numel;
            let mse = c.sq_error / numel;
            let bound = vectors::gaussian_rate(eig, mse);
            VectorOptionReport {
                label: c.codec.label(),
                bits_per_dimension: bits,
                mse_per_dimension: mse,
                rd_bound_bits: bound,
                gap_bits: bits - bound,
                recall_at_10: c.vector.as_ref().and_then(|v| v.recall_at_10),
                chosen: i == ci,
            }
        })
        .collect();
    let rd_bound = (0..RD_BOUND_POINTS)
        .map(|i| {
            let rate = 2f64.powf(-4.0 + 7.0 * i as f64 / (RD_BOUND_POINTS - 1) as f64);
            VectorRdPoint {
                bits_per_dimension: rate,
                mse_per_dimension: vectors::gaussian_distortion(eig, rate),
            }
        })
        .collect();
    let chosen = &a.candidates[ci];
    // Matrix codecs chosen for a vector dataset have a recall but no per-dimension estimate.
    let allocation = chosen
        .vector
        .as_ref()
        .filter(|v| !v.bits_per_dimension.is_empty())
        .map(|v| BitAllocation {
            label: chosen.codec.label(),
            axis: match chosen.codec {
                CodecParams::Transform(_) => "KLT component".into(),
                _ => "coordinate".into(),
            },
            estimated_bits: v.bits_per_dimension.clone(),
            water_filling_bits: vectors::water_filling_allocation(eig, chosen.sq_error / numel),
        });
    Some(VectorReport {
        tensor: t.name.clone(),
        vectors: stats.vectors,
        dimension: stats.dimension,
        eigenvalues: eig.clone(),
        options,
        rd_bound,
        recall_queries: stats.recall_queries,
        recall_definition: format!(
            "{} rows drawn from the data (seeded) are the queries, kept exact; for each, the {} \
             nearest other rows of the original data (squared Euclidean distance) are the truth, \
             and recall is the fraction of them among its {} nearest other rows of the \
             reconstruction",
            stats.recall_queries,
            vectors::RECALL_K,
            vectors::RECALL_K
        ),
        allocation,
    })
}

/// Things the user should know about a run, in words.
fn notes(plan: &Plan) -> Vec<String> {
    let mut notes = Vec::new();
    let non_finite: Vec<&str> = plan
        .checkpoint
        .tensors
        .iter()
        .zip(&plan.analyses)
        .filter(|(_, a)| a.non_finite > 0)
        .map(|(t, _)| t.name.as_str())
        .collect();
    if !non_finite.is_empty() {
        notes.push(format!(
            "{} tensor(s) contain NaN or Inf values and were stored exactly: {}",
            non_finite.len(),
            non_finite.join(", ")
        ));
    }
    notes
}

/// What an importance file did: which tensors fwsvd weighted with it, which fell back to the
/// data-free proxies, and entries that match no tensor.
fn importance_note(plan: &Plan, opts: &CompressOptions) -> Option<String> {
    let map = opts.importance.as_ref()?;
    let mut used = 0;
    let mut proxy = Vec::new();
    for (t, a) in plan.checkpoint.tensors.iter().zip(&plan.analyses) {
        let weighted = a
            .candidates
            .iter()
            .any(|c| matches!(&c.codec, CodecParams::Fwsvd(p) if p.importance.is_file()));
        let fwsvd_proxy = a
            .candidates
            .iter()
            .any(|c| matches!(&c.codec, CodecParams::Fwsvd(p) if !p.importance.is_file()));
        if weighted {
            used += 1;
        } else if fwsvd_proxy {
            proxy.push(t.name.as_str());
        }
    }
    let unmatched = map
        .tensors
        .keys()
        .filter(|k| !plan.checkpoint.tensors.iter().any(|t| &t.name == *k))
        .count();
    let mut note = format!(
        "importance file {}: fwsvd weighted {used} tensor(s) with its values",
        map.source
    );
    if !proxy.is_empty() {
        note.push_str(&format!(
            "; {} tensor(s) have no entry and used the data-free proxies (row-energy, \
             inv-row-energy): {}",
            proxy.len(),
            proxy.join(", ")
        ));
    }
    if unmatched > 0 {
        note.push_str(&format!("; {unmatched} entr(ies) match no tensor"));
    }
    if opts.method.is_some() && opts.method != Some(Method::Fwsvd) {
        note.push_str(" (unused: the forced method is not fwsvd)");
    }
    Some(note)
}
