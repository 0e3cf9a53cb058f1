//! Distortion measures: how far a reconstruction is from what it replaces. One home for every
//! figure of error that the analysis, the allocator and the report use, so that a number called
//! "relative MSE" means the same thing everywhere.
//!
//! - [`squared_error`]: the sum of squared differences, measured on what the user gets back (the
//!   reconstruction converted to the tensor's own dtype).
//! - [`relative_mse`]: that sum over the tensor's own energy `||W||^2`.
//! - [`OutputWeights`]: with activation statistics of a linear layer's inputs (calibration), the
//!   expected relative *output* error `sum_ij d_j (W_ij - W^_ij)^2 / sum_ij d_j W_ij^2`, `d_j` the
//!   mean square of input channel `j` (docs/CALIBRATION.md).
//! - [`Distortion`]: one option's distortion with the measure it is in (relative MSE, or recall
//!   for a vector dataset), and [`Distortion::value`], what the rate allocator minimises for it.
//!
//! Not here: recall@10 of a vector dataset's queries (it needs the queries and a neighbour search:
//! `codec::vectors::RecallQueries`).

use crate::dtype::DType;

/// Sum of squared differences, measured on what the user gets back: the reconstruction converted
/// to the tensor's own dtype.
pub fn squared_error(original: &[f32], reconstruction: &[f32], dtype: DType) -> f64 {
    let mut rounded = [0.0f32; ROUND_CHUNK];
    let mut sum = 0.0f64;
    for (a, b) in original
        .chunks(ROUND_CHUNK)
        .zip(reconstruction.chunks(ROUND_CHUNK))
    {
        let b = round_slice(b, dtype, &mut rounded);
        // One running sum in element order: the same figure whatever the chunk length.
        for (&a, &b) in a.iter().zip(b) {
            let d = a as f64 - b as f64;
            sum += d * d;
        }
    }
    sum
}

/// How many values [`round_slice`] converts at a time (a stack buffer).
const ROUND_CHUNK: usize = 1024;

/// `values` converted to `dtype` and back to f32, in `buffer` (as long as `values` at least), or
/// `values` itself for an f32 tensor. The conversion is done a slice at a time: value by value,
/// f16's rounding through the `half` crate's runtime-detected instructions cost half of a
/// model's analysis (a call per value); its slice conversion uses them eight values at a time,
/// with the same round-to-nearest-even result.
fn round_slice<'a>(values: &'a [f32], dtype: DType, buffer: &'a mut [f32]) -> &'a [f32] {
    use half::slice::HalfFloatSliceExt;
    let out = &mut buffer[..values.len()];
    match dtype {
        DType::F16 => {
            let mut halves = [half::f16::ZERO; ROUND_CHUNK];
            for (v, o) in values.chunks(ROUND_CHUNK).zip(out.chunks_mut(ROUND_CHUNK)) {
                let h = &mut halves[..v.len()];
                h.convert_from_f32_slice(v);
                h.convert_to_f32_slice(o);
            }
            out
        }
        DType::BF16 => {
            for (v, o) in values.iter().zip(out.iter_mut()) {
                *o = half::bf16::from_f32(*v).to_f32();
            }
            out
        }
        _ => values,
    }
}

/// What a linear weight's error does to its output, to the diagonal of the input statistics: an
/// error `E` changes the output `W x` by `E x`, whose expected square is
/// `sum_ij E_ij^2 d_j` when the cross terms `E[x_j x_k]` are left out, `d_j = E[x_j^2]`.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputWeights<'a> {
    /// `d_j` per column of the weight (`cols` values).
    pub columns: &'a [f32],
    /// `sum_ij d_j W_ij^2`: the expected squared output of the original weight.
    pub norm_sq: f64,
}

/// The mean input energy `mean_j d_j` of a weight's columns.
pub fn mean_energy(columns: &[f32]) -> f64 {
    columns.iter().map(|&d| d as f64).sum::<f64>() / columns.len().max(1) as f64
}

impl<'a> OutputWeights<'a> {
    /// The weights `columns` of a row-major matrix `values` with `columns.len()` columns.
    pub fn new(values: &[f32], columns: &'a [f32]) -> OutputWeights<'a> {
        let norm_sq = values
            .chunks_exact(columns.len().max(1))
            .map(|row| {
                row.iter()
                    .zip(columns)
                    .map(|(&w, &d)| d as f64 * w as f64 * w as f64)
                    .sum::<f64>()
            })
            .sum();
        OutputWeights { columns, norm_sq }
    }

    /// `sum_ij d_j (W_ij - W^_ij)^2 / sum_ij d_j W_ij^2`, measured like [`squared_error`] on the
    /// reconstruction converted to `dtype` (0 for an exact reconstruction).
    pub fn relative_error(&self, original: &[f32], reconstruction: &[f32], dtype: DType) -> f64 {
        let cols = self.columns.len().max(1);
        let mut rounded = vec![0.0f32; cols];
        let err: f64 = original
            .chunks_exact(cols)
            .zip(reconstruction.chunks_exact(cols))
            .map(|(a, b)| {
                let b = round_slice(b, dtype, &mut rounded);
                self.columns
                    .iter()
                    .zip(a.iter().zip(b))
                    .fold(0.0, |s, (&d, (&a, &b))| {
                        let e = a as f64 - b as f64;
                        s + d as f64 * e * e
                    })
            })
            .sum();
        relative_mse(err, self.norm_sq)
    }

    /// The relative MSE of isotropic noise that changes the output as much as an error of
    /// relative output error `output_error` does, for a weight of sum of squares `weight_norm_sq`:
    /// `sum_ij d_j E_ij^2 / (mean_j d_j * ||W||^2)`. Noise of relative MSE `delta` spread evenly
    /// over the weights gives exactly `delta`, which is how a sensitivity is measured: so a
    /// sensitivity times this figure predicts the model's change for errors shaped by the codec
    /// (more where the inputs are weak, less where they are strong).
    pub fn equivalent_mse(&self, output_error: f64, weight_norm_sq: f64) -> f64 {
        let isotropic = mean_energy(self.columns) * weight_norm_sq;
        relative_mse(output_error * self.norm_sq, isotropic)
    }
}

/// `||W - W^||^2 / ||W||^2` from the squared error and the tensor's sum of squares (0 for an
/// exact option, whatever the norm).
pub fn relative_mse(squared_error: f64, norm_sq: f64) -> f64 {
    if squared_error == 0.0 {
        0.0
    } else {
        squared_error / norm_sq.max(f64::MIN_POSITIVE)
    }
}

/// One measured option's distortion, naming the measure it is in, so that a figure of recall is
/// never read as a relative MSE (or the other way round).
///
/// The allocator minimises [`Distortion::value`]: the tensor's relative MSE, every tensor counting
/// the same whatever its size. Measured on all-MiniLM-L6-v2 at 4 bpw (BENCHMARKS.md): weighting by
/// parameter count instead (the plain MSE of relative errors over all weights) spends half the
/// budget on the 11.7M-entry word-embedding table and gives embedding cosine 0.9669; equal weight
/// per tensor gives 0.9902 for the same file size (0.9897 with sqrt(params) weights).
///
/// A vector dataset (rows coded as vectors, `recall_at_10` measured) is different: what it is for
/// is nearest-neighbour search, and at the same size the option with the lower MSE is not the one
/// that ranks neighbours best (MiniLM's word embeddings, docs/VECTORS.md). There the distortion is
/// 1 - recall@10 on the sampled queries, with the relative MSE as a tie-break far below recall's
/// resolution. `--max-error` stays an MSE bound (it reads [`Distortion::relative_mse`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Distortion {
    /// `||W - W^||^2 / ||W||^2` ([`relative_mse`]); 0 for an exact option.
    RelativeMse(f64),
    /// A vector dataset's option: recall@10 of the sampled queries against the reconstructed
    /// rows, and the relative MSE (the tie-break, and what `--max-error` bounds).
    Recall {
        recall_at_10: f64,
        relative_mse: f64,
    },
    /// A linear weight with activation statistics (calibration): the expected relative output
    /// error ([`OutputWeights::relative_error`]), and the relative MSE (what `--max-error`
    /// bounds and the report's weight-error figures show).
    OutputError {
        output_error: f64,
        relative_mse: f64,
        /// [`OutputWeights::equivalent_mse`]: what a sensitivity multiplies.
        equivalent_mse: f64,
    },
    /// A weight of a model whose sensitivity was measured (`model::sensitivity`): the predicted
    /// change of the model's output, `sensitivity * relative_mse` (KL divergence for a decoder,
    /// `1 - cosine` of the embeddings for an encoder), and the relative MSE.
    ///
    /// With input statistics for the weight, the sensitivity multiplies the error's
    /// `equivalent_mse` ([`OutputWeights::equivalent_mse`]) instead of its relative MSE: an
    /// error placed where the inputs are weak moves the output less than its MSE says.
    ModelLoss {
        sensitivity: f64,
        relative_mse: f64,
        equivalent_mse: f64,
    },
}

impl Distortion {
    /// The distortion of an option with this relative MSE and, where the tensor is a vector
    /// dataset and recall was measured, this recall@10.
    pub fn new(relative_mse: f64, recall_at_10: Option<f64>) -> Distortion {
        match recall_at_10 {
            Some(recall_at_10) => Distortion::Recall {
                recall_at_10,
                relative_mse,
            },
            None => Distortion::RelativeMse(relative_mse),
        }
    }

    /// What the allocator minimises: the relative MSE, the relative output error of a calibrated
    /// linear weight, the predicted output change of a model's weight (its sensitivity times the
    /// relative MSE, or times the equivalent MSE of its output error with statistics), or
    /// `1 - recall@10` plus `1e-6` times the relative MSE for a vector dataset.
    pub fn value(self) -> f64 {
        match self {
            Distortion::RelativeMse(relative_mse) => relative_mse,
            Distortion::OutputError { output_error, .. } => output_error,
            Distortion::ModelLoss {
                sensitivity,
                equivalent_mse,
                ..
            } => sensitivity * equivalent_mse,
            Distortion::Recall {
                recall_at_10,
                relative_mse,
            } => (1.0 - recall_at_10) + 1e-6 * relative_mse,
        }
    }

    /// This distortion weighed by a measured sensitivity: a relative MSE, or a calibrated output
    /// error through its equivalent MSE, becomes the predicted output change
    /// [`Distortion::ModelLoss`]; a vector dataset's recall stays as it is (its own judge).
    pub fn weighed(self, sensitivity: f64) -> Distortion {
        match self {
            Distortion::RelativeMse(relative_mse) => Distortion::ModelLoss {
                sensitivity,
                relative_mse,
                equivalent_mse: relative_mse,
            },
            Distortion::OutputError {
                relative_mse,
                equivalent_mse,
                ..
            } => Distortion::ModelLoss {
                sensitivity,
                relative_mse,
                equivalent_mse,
            },
            other => other,
        }
    }

    /// The relative MSE, whichever measure the allocator minimises.
    pub fn relative_mse(self) -> f64 {
        match self {
            Distortion::RelativeMse(relative_mse)
            | Distortion::Recall { relative_mse, .. }
            | Distortion::OutputError { relative_mse, .. }
            | Distortion::ModelLoss { relative_mse, .. } => relative_mse,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recall_is_what_the_allocator_minimises_for_vectors() {
        let mse = Distortion::new(0.25, None);
        assert_eq!((mse.value(), mse.relative_mse()), (0.25, 0.25));
        let recall = Distortion::new(0.25, Some(0.75));
        assert_eq!(recall.value(), 0.25 + 1e-6 * 0.25);
        assert_eq!(recall.relative_mse(), 0.25);
        assert_eq!(relative_mse(0.0, 0.0), 0.0);
    }

    #[test]
    fn output_error_weighs_columns_by_their_input_energy() {
        // Two columns, the second's inputs 100x stronger: an error there counts 100x more.
        let w = [1.0f32, 1.0, 1.0, 1.0];
        let out = OutputWeights::new(&w, &[1.0, 100.0]);
        assert_eq!(out.norm_sq, 202.0);
        let in_weak = out.relative_error(&w, &[0.5, 1.0, 1.0, 1.0], DType::F32);
        let in_strong = out.relative_error(&w, &[1.0, 0.5, 1.0, 1.0], DType::F32);
        assert!((in_weak - 0.25 / 202.0).abs() < 1e-15);
        assert!((in_strong - 25.0 / 202.0).abs() < 1e-15);
        assert_eq!(out.relative_error(&w, &w, DType::F32), 0.0);
        let d = Distortion::OutputError {
            output_error: 0.5,
            relative_mse: 0.25,
            equivalent_mse: 0.125,
        };
        assert_eq!((d.value(), d.relative_mse()), (0.5, 0.25));
        let weighed = d.weighed(4.0);
        assert_eq!((weighed.value(), weighed.relative_mse()), (0.5, 0.25));
    }

    #[test]
    fn isotropic_noise_has_its_own_relative_mse_as_equivalent() {
        // Noise of equal size on every weight: the equivalent MSE is the relative MSE, whatever
        // the input energies; the same noise on the weak column only counts for less.
        let w = [1.0f32, 2.0, 3.0, 4.0];
        let out = OutputWeights::new(&w, &[1.0, 9.0]);
        let noisy = [1.5f32, 2.5, 3.5, 4.5];
        let rel = relative_mse(squared_error(&w, &noisy, DType::F32), 30.0);
        let e = out.relative_error(&w, &noisy, DType::F32);
        assert!((out.equivalent_mse(e, 30.0) - rel).abs() < 1e-12);
        let weak_only = [1.5f32, 2.0, 3.5, 4.0];
        let e = out.relative_error(&w, &weak_only, DType::F32);
        let rel_weak = relative_mse(squared_error(&w, &weak_only, DType::F32), 30.0);
        assert!((out.equivalent_mse(e, 30.0) - rel_weak / 5.0).abs() < 1e-9);
    }
}
