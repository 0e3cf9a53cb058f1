//! Distortion measures: how far a reconstruction is from what it replaces. One home for every
//! figure of error that the analysis, the allocator and the report use, so that a number called
//! "relative MSE" means the same thing everywhere.
//!
//! - [`squared_error`]: the sum of squared differences, measured on what the user gets back (the
//!   reconstruction converted to the tensor's own dtype).
//! - [`relative_mse`]: that sum over the tensor's own energy `||W||^2`.
//! - [`Distortion`]: one option's distortion with the measure it is in (relative MSE, or recall
//!   for a vector dataset), and [`Distortion::value`], what the rate allocator minimises for it.
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

    /// What the allocator minimises: the relative MSE, or `1 - recall@10` plus `1e-6` times the
    /// relative MSE for a vector dataset.
    pub fn value(self) -> f64 {
        match self {
            Distortion::RelativeMse(relative_mse) => relative_mse,
            Distortion::Recall {
                recall_at_10,
                relative_mse,
            } => (1.0 - recall_at_10) + 1e-6 * relative_mse,
        }
    }

    /// The relative MSE, whichever measure the allocator minimises.
    pub fn relative_mse(self) -> f64 {
        match self {
            Distortion::RelativeMse(relative_mse) | Distortion::Recall { relative_mse, .. } => {
                relative_mse
            }
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
}
