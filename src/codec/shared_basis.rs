//! Shared bases (after Concatenated Matrix SVD with error-constrained clustering, Shamrai;
//! docs/METHODS.md): which matrices of a checkpoint can share one basis of rank `r` within a
//! relative error `eps` (the estimator and the grouping below). The planning of
//! `--method shared-lowrank` on top of it is `pipeline::shared`; the groups are coded by
//! `codec::shared_lowrank`, whose basis is stored once per group in the container's `groups`.
//!
//! A group is blocks `A_j` (m x n_j) with the same `m`, concatenated `M = [A_1 .. A_K]`; one basis
//! `U` (m x r) plus per-block coefficients `U^T A_j` replace the blocks. Its optimal error is
//! `eps(M) = sqrt(sum_{i>r} sigma_i(M)^2) / ||M||_F`. Blocks are added one at a time while the
//! incremental estimator (the paper's bound 3) stays within `eps`: it keeps the top `r + p`
//! eigenpairs `Q diag(lambda) Q^T` of the Gram matrix seen so far and, for a new block `A`, takes
//! the top eigenpairs of `Q diag(lambda) Q^T + A A^T` (here: the SVD of `[Q diag(sqrt lambda), A]`,
//! the same quantity). Truncation only drops positive semi-definite mass, so the estimated top-r
//! energy is a lower bound and the estimated error an upper bound of the exact one; the exact error
//! of every final group is checked with a full SVD all the same.

use faer::Mat;

use crate::error::{Error, Result};

/// Extra eigenpairs the estimator keeps beyond `r` (the paper's p).
pub const ESTIMATOR_OVERSAMPLE: usize = 5;

/// The incremental estimator of one group's rank-`r` error.
pub struct Estimator {
    rank: usize,
    /// `m x c`: the kept eigenvectors scaled by `sqrt(lambda)` (c <= r + p).
    scaled_basis: Mat<f64>,
    /// Kept eigenvalues, non-increasing.
    lambda: Vec<f64>,
    norm_sq: f64,
}

impl Estimator {
    pub fn new(rows: usize, rank: usize) -> Self {
        Estimator {
            rank,
            scaled_basis: Mat::zeros(rows, 0),
            lambda: Vec::new(),
            norm_sq: 0.0,
        }
    }

    /// Adds a block (`rows x n`, row-major f32).
    pub fn add(&mut self, block: &[f32], cols: usize) -> Result<()> {
        let rows = self.scaled_basis.nrows();
        if block.len() != rows * cols {
            return Err(Error::invalid(format!(
                "shared basis: a block of {} values is not {rows} x {cols}",
                block.len()
            )));
        }
        let kept = self.scaled_basis.ncols();
        let joined = Mat::<f64>::from_fn(rows, kept + cols, |i, j| {
            if j < kept {
                self.scaled_basis[(i, j)]
            } else {
                block[i * cols + (j - kept)] as f64
            }
        });
        let svd = joined
            .thin_svd()
            .map_err(|e| Error::unsupported(format!("shared basis: SVD failed: {e:?}")))?;
        let keep = (self.rank + ESTIMATOR_OVERSAMPLE)
            .min(rows)
            .min(kept + cols);
        self.lambda = (0..keep).map(|i| svd.S()[i] * svd.S()[i]).collect();
        self.scaled_basis = Mat::from_fn(rows, keep, |i, j| svd.U()[(i, j)] * svd.S()[j]);
        self.norm_sq += block.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>();
        Ok(())
    }

    /// Upper bound of the group's optimal rank-`r` relative error.
    pub fn error(&self) -> f64 {
        if self.norm_sq <= 0.0 {
            return 0.0;
        }
        let top: f64 = self.lambda.iter().take(self.rank).sum();
        (1.0 - top / self.norm_sq).max(0.0).sqrt()
    }
}

/// The exact optimal rank-`r` relative error of the concatenation of `blocks` (each `rows x n_j`).
pub fn exact_error(blocks: &[(&[f32], usize)], rows: usize, rank: usize) -> Result<f64> {
    let total: usize = blocks.iter().map(|b| b.1).sum();
    let mut m = Mat::<f64>::zeros(rows, total);
    let mut at = 0;
    for &(values, cols) in blocks {
        for i in 0..rows {
            for j in 0..cols {
                m[(i, at + j)] = values[i * cols + j] as f64;
            }
        }
        at += cols;
    }
    let s = m
        .singular_values()
        .map_err(|e| Error::unsupported(format!("shared basis: SVD failed: {e:?}")))?;
    let all: f64 = s.iter().map(|x| x * x).sum();
    if all <= 0.0 {
        return Ok(0.0);
    }
    let tail: f64 = s.iter().skip(rank).map(|x| x * x).sum();
    Ok((tail / all).sqrt())
}

/// Greedy grouping of same-height blocks: seed with the largest-norm block left, then add the
/// others in decreasing norm order while the estimate stays within `eps`; stop at the first that
/// does not fit (the paper's 'norm' order). Returns groups of indices into `blocks`; a block whose
/// own rank-`r` error exceeds `eps` is a singleton.
pub fn group(
    blocks: &[(&[f32], usize)],
    rows: usize,
    rank: usize,
    eps: f64,
) -> Result<Vec<Vec<usize>>> {
    let norm = |b: &(&[f32], usize)| b.0.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>();
    let mut left: Vec<usize> = (0..blocks.len()).collect();
    left.sort_by(|&a, &b| {
        norm(&blocks[b])
            .total_cmp(&norm(&blocks[a]))
            .then(a.cmp(&b))
    });
    let mut groups = Vec::new();
    while !left.is_empty() {
        let seed = left.remove(0);
        let mut estimator = Estimator::new(rows, rank);
        estimator.add(blocks[seed].0, blocks[seed].1)?;
        let mut members = vec![seed];
        if estimator.error() <= eps {
            while let Some(&next) = left.first() {
                let mut trial = Estimator {
                    rank,
                    scaled_basis: estimator.scaled_basis.clone(),
                    lambda: estimator.lambda.clone(),
                    norm_sq: estimator.norm_sq,
                };
                trial.add(blocks[next].0, blocks[next].1)?;
                if trial.error() > eps {
                    break;
                }
                estimator = trial;
                members.push(left.remove(0));
            }
        }
        groups.push(members);
    }
    Ok(groups)
}

// ---------------------------------------------------------------------------------------------
// Planning `--method shared-lowrank`.
//
// Sibling sets: tensors the forced method may code (2-D, lossy, with low-rank options) whose
// names share the parent module (the name without its last two components: `...attention.self`
// for `...attention.self.query.weight`) and whose column counts (input sides) agree. A set of
// one is coded by plain `lowrank`. A set of two or more is ONE allocator item: each of its
// options codes all of its members, so the basis bytes are charged exactly once, to the option
// that stores them. Its options: every member alone with any of its own measured options (the
// lower convex hull of the sum of the members' hulls, and under `--max-error` each member's
// cheapest option within the bound), so sharing removes nothing the greedy allocator could
// reach (the knapsack, which also takes points off the hull, sees only hull sums for a set); and
// per rank r of the low-rank ladder (short side / 16, 8, 4, 2 at 8-bit factors, as
// `lowrank::candidates`' pure options) a partition of the set: members alone (each a plain
// `lowrank` rank-r section), or the groups [`group`] forms at rank r under a
// threshold eps in [`THRESHOLDS`] (plus the `--max-error` bound) on the members scaled to unit
// norm (so eps bounds the RMS of their relative errors at the optimal shared basis: the
// concatenation's error is the members' mean relative squared error), each group one basis + member
// sections and its leftover singletons plain `lowrank`. The option's size is every section it
// writes (padding included), its distortion the sum of its members' relative squared errors,
// the allocator's unit, so the allocator trades shared against separate bases on measured bytes.
// ---------------------------------------------------------------------------------------------
