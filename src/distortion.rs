//! Distortion measures: how far a reconstruction is from what it replaces. One home for every
//! figure of error that the analysis, the allocator and the report use, so that a number called
//! "relative MSE" means the same thing everywhere.
//!
//! - [`squared_error`]: the sum of squared differences, measured on what the user gets back (the
//!   reconstruction converted to the tensor's own dtype).
//! - [`relative_mse`]: that sum over the tensor's own energy `||W||^2`.
//! - [`allocator_distortion`]: what the rate allocator minimises for one option.
//!
//! Not here: recall@10 of a vector dataset's queries (it needs the queries and a neighbour search:
//! `codec::vectors::RecallQueries`).

use crate::dtype::DType;

/// Sum of squared differences, measured on what the user gets back: the reconstruction converted
/// to the tensor's own dtype.
pub fn squared_error(original: &[f32], reconstruction: &[f32], dtype: DType) -> f64 {
    let round = |v: f32| match dtype {
        DType::F16 => half::f16::from_f32(v).to_f32(),
        DType::BF16 => half::bf16::from_f32(v).to_f32(),
        _ => v,
    };
    original
        .iter()
        .zip(reconstruction)
        .map(|(&a, &b)| {
            let d = a as f64 - round(b) as f64;
            d * d
        })
        .sum()
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

/// The allocator's distortion of one option: the tensor's relative MSE, every tensor counting the
/// same whatever its size. Measured on all-MiniLM-L6-v2 at 4 bpw (BENCHMARKS.md): weighting by
/// parameter count instead (the plain MSE of relative errors over all weights) spends half the
/// budget on the 11.7M-entry word-embedding table and gives embedding cosine 0.9669; equal weight
/// per tensor gives 0.9902 for the same file size (0.9897 with sqrt(params) weights).
///
/// A vector dataset (rows coded as vectors, `recall_at_10` measured) is different: what it is for
/// is nearest-neighbour search, and at the same size the option with the lower MSE is not the one
/// that ranks neighbours best (MiniLM's word embeddings, docs/VECTORS.md). There the distortion is
/// 1 - recall@10 on the sampled queries, with the relative MSE as a tie-break far below recall's
/// resolution. `--max-error` stays an MSE bound (it does not use this function).
pub fn allocator_distortion(relative_mse: f64, recall_at_10: Option<f64>) -> f64 {
    match recall_at_10 {
        Some(recall) => (1.0 - recall) + 1e-6 * relative_mse,
        None => relative_mse,
    }
}
