//! Fisher-weighted SVD (FWSVD, Hsu et al. 2022; ALGORITHMS.md 5): a different *encoder* for the
//! [`lowrank`] format. Rows get importances `i_r`; with `D = diag(sqrt(i_r + eps))` the rank-k
//! minimiser of the row-weighted error `sum_r i_r ||W_r - What_r||^2` is the truncated SVD of `D W`
//! mapped back, `What = D^-1 U_k S_k V_k^T` (a row-constant weight is absorbed by the left factor,
//! so the weighted problem is an ordinary SVD). The stored factors are the mapped-back ones, so the
//! section is a plain lowrank section and decoding is `lowrank::decode`: nothing new in the format
//! beyond the header's parameters.
//!
//! Where the importances come from (`Params::importance`): a data-free proxy computed from the
//! tensor itself, so re-encoding needs nothing else. Fisher or activation statistics computed
//! elsewhere are not wired in yet (docs/METHODS.md says what is missing).

use serde::{Deserialize, Serialize};

use super::{lowrank, Encoded, Shape2};
use crate::error::{Error, Result};
use crate::linalg;
use crate::rng::Rng;

/// Added to every normalised row importance (mean 1) before the square root: FWSVD's 1e-5, so a
/// row of importance 0 still gets a finite inverse weight.
const IMPORTANCE_FLOOR: f64 = 1e-5;

/// Data-free row importances.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Importance {
    /// `i_r = ||W_r||^2`: rows with more energy count more (their outputs are larger).
    RowEnergy,
    /// `i_r = 1 / ||W_r||^2`: every row's *relative* error counts the same.
    InverseRowEnergy,
}

/// Options of the FWSVD encoder (stored in the container header; decoding uses `lowrank` only).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Params {
    pub lowrank: lowrank::Params,
    pub importance: Importance,
}

impl Params {
    pub fn label(&self) -> String {
        let what = match self.importance {
            Importance::RowEnergy => "row-energy",
            Importance::InverseRowEnergy => "inv-row-energy",
        };
        format!("fwsvd {what} {}", &self.lowrank.label()["lowrank ".len()..])
    }
}

/// The options `--method fwsvd` tries: the lowrank candidates, each with both proxies.
pub fn candidates(shape: Shape2, seed: u64) -> Vec<Params> {
    lowrank::candidates(shape, seed)
        .into_iter()
        .flat_map(|l| {
            [Importance::RowEnergy, Importance::InverseRowEnergy].map(|importance| Params {
                lowrank: l.clone(),
                importance,
            })
        })
        .collect()
}

/// The row importances of a proxy, normalised to mean 1 (all ones for an all-zero tensor).
pub fn row_importance(values: &[f32], shape: Shape2, importance: Importance) -> Vec<f64> {
    let energy: Vec<f64> = values
        .chunks_exact(shape.cols.max(1))
        .map(|row| row.iter().map(|&x| (x as f64) * (x as f64)).sum())
        .collect();
    let mean = energy.iter().sum::<f64>() / energy.len().max(1) as f64;
    if mean <= 0.0 {
        return vec![1.0; shape.rows];
    }
    let raw: Vec<f64> = match importance {
        Importance::RowEnergy => energy.iter().map(|e| e / mean).collect(),
        Importance::InverseRowEnergy => energy
            .iter()
            .map(|e| 1.0 / (e / mean + IMPORTANCE_FLOOR))
            .collect(),
    };
    let raw_mean = raw.iter().sum::<f64>() / raw.len().max(1) as f64;
    raw.iter().map(|r| r / raw_mean).collect()
}

/// The rank-`min(rank, rows, cols)` truncated SVD of `D W` mapped back: `u` holds `D^-1 U_k` (no
/// longer orthonormal), `sigma` and `vt` are those of `D W`.
pub fn weighted_svd(
    values: &[f32],
    shape: Shape2,
    importance: &[f64],
    p: &lowrank::Params,
) -> Result<linalg::Svd> {
    if importance.len() != shape.rows || values.len() != shape.len() {
        return Err(Error::invalid(format!(
            "fwsvd: {} row importances and {} values for shape {} x {}",
            importance.len(),
            values.len(),
            shape.rows,
            shape.cols
        )));
    }
    let d: Vec<f64> = importance
        .iter()
        .map(|i| (i.max(0.0) + IMPORTANCE_FLOOR).sqrt())
        .collect();
    let weighted: Vec<f32> = values
        .chunks_exact(shape.cols.max(1))
        .zip(&d)
        .flat_map(|(row, &di)| row.iter().map(move |&x| (x as f64 * di) as f32))
        .collect();
    let rank = (p.rank as usize).min(shape.rows).min(shape.cols);
    let mut rng = Rng::new(p.seed);
    let mut svd = linalg::rsi(
        linalg::view_row_major(&weighted, shape.rows, shape.cols),
        rank,
        p.oversample as usize,
        p.power_iters as usize,
        &mut rng,
    )?;
    for (r, &di) in d.iter().enumerate() {
        for j in 0..svd.rank() {
            svd.u[(r, j)] = (svd.u[(r, j)] as f64 / di) as f32;
        }
    }
    Ok(svd)
}

pub fn encode(values: &[f32], shape: Shape2, p: &Params) -> Result<Encoded> {
    lowrank::check_input(values, shape, &p.lowrank)?;
    let importance = row_importance(values, shape, p.importance);
    let svd = weighted_svd(values, shape, &importance, &p.lowrank)?;
    lowrank::encode_with_svd(values, shape, &p.lowrank, &svd)
}

/// Encodes `values` with each option, computing each distinct weighted SVD once (the residual
/// variants of one rank share it); each result is byte-identical to `encode(values, shape, option)`.
pub fn encode_many(values: &[f32], shape: Shape2, options: &[Params]) -> Vec<Result<Encoded>> {
    type SvdKey = (u32, u32, u8, u64, Importance);
    let mut svds: Vec<(SvdKey, Result<linalg::Svd>)> = Vec::new();
    options
        .iter()
        .map(|p| {
            lowrank::check_input(values, shape, &p.lowrank)?;
            let l = &p.lowrank;
            let key = (l.rank, l.oversample, l.power_iters, l.seed, p.importance);
            let index = match svds.iter().position(|(k, _)| *k == key) {
                Some(i) => i,
                None => {
                    let importance = row_importance(values, shape, p.importance);
                    svds.push((key, weighted_svd(values, shape, &importance, l)));
                    svds.len() - 1
                }
            };
            match &svds[index].1 {
                Ok(svd) => lowrank::encode_with_svd(values, shape, l, svd),
                Err(e) => Err(Error::unsupported(format!("fwsvd SVD failed: {e}"))),
            }
        })
        .collect()
}

pub fn decode(bytes: &[u8], shape: Shape2, p: &Params) -> Result<Vec<f32>> {
    lowrank::decode(bytes, shape, &p.lowrank)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::tests::with_spectrum;

    fn row_major(m: &faer::Mat<f32>) -> Vec<f32> {
        (0..m.nrows())
            .flat_map(|i| (0..m.ncols()).map(move |j| (i, j)))
            .map(|(i, j)| m[(i, j)])
            .collect()
    }

    fn lr(rank: u32, power_iters: u8) -> lowrank::Params {
        lowrank::Params {
            rank,
            oversample: 10,
            power_iters,
            factor_bits: 8,
            residual_step_log2: None,
            seed: 5,
        }
    }

    /// A matrix with a decaying spectrum whose rows have very different scales.
    fn uneven_rows(m: usize, n: usize, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        let s: Vec<f32> = (0..m.min(n)).map(|j| 0.9f32.powi(j as i32)).collect();
        let mut w = row_major(&with_spectrum(m, n, &s, &mut rng));
        for (r, row) in w.chunks_exact_mut(n).enumerate() {
            let scale = 0.2 + 3.0 * ((r * 7) % 11) as f32 / 11.0;
            row.iter_mut().for_each(|x| *x *= scale);
        }
        w
    }

    fn weighted_error(w: &[f32], what: &[f32], n: usize, importance: &[f64]) -> f64 {
        w.chunks_exact(n)
            .zip(what.chunks_exact(n))
            .zip(importance)
            .map(|((a, b), &i)| {
                i * a
                    .iter()
                    .zip(b)
                    .map(|(&x, &y)| ((x - y) as f64).powi(2))
                    .sum::<f64>()
            })
            .sum()
    }

    /// The check, first half: the factors equal the exact SVD of `D W`, mapped back.
    #[test]
    fn equals_the_svd_of_the_weighted_matrix_mapped_back() {
        let (m, n, k) = (60, 44, 6);
        let w = uneven_rows(m, n, 1);
        let shape = Shape2::new(m, n);
        let importance = row_importance(&w, shape, Importance::InverseRowEnergy);
        let got = weighted_svd(&w, shape, &importance, &lr(k as u32, 6)).unwrap();
        let d: Vec<f64> = importance
            .iter()
            .map(|i| (i + IMPORTANCE_FLOOR).sqrt())
            .collect();
        let dw = faer::Mat::<f32>::from_fn(m, n, |i, j| (w[i * n + j] as f64 * d[i]) as f32);
        let exact = linalg::exact_svd(dw.as_ref()).unwrap();
        let mut max_diff = 0.0f64;
        let mut scale = 0.0f64;
        for (i, &di) in d.iter().enumerate() {
            for j in 0..n {
                let want: f64 = (0..k)
                    .map(|c| {
                        exact.u[(i, c)] as f64 * exact.sigma[c] as f64 * exact.vt[(c, j)] as f64
                    })
                    .sum::<f64>()
                    / di;
                let have: f64 = (0..k)
                    .map(|c| got.u[(i, c)] as f64 * got.sigma[c] as f64 * got.vt[(c, j)] as f64)
                    .sum();
                max_diff = max_diff.max((want - have).abs());
                scale = scale.max(want.abs());
            }
        }
        assert!(
            max_diff < 1e-3 * scale,
            "max diff {max_diff}, scale {scale}"
        );
    }

    /// Second half: a lower weighted error than the plain SVD at the same rank, after coding.
    #[test]
    fn lower_weighted_error_than_plain_svd() {
        let (m, n) = (64, 48);
        let w = uneven_rows(m, n, 2);
        let shape = Shape2::new(m, n);
        for importance in [Importance::RowEnergy, Importance::InverseRowEnergy] {
            let weights = row_importance(&w, shape, importance);
            for rank in [4, 8] {
                let p = Params {
                    lowrank: lr(rank, 2),
                    importance,
                };
                let ours = encode(&w, shape, &p).unwrap();
                let plain = lowrank::encode(&w, shape, &p.lowrank).unwrap();
                let (a, b) = (
                    weighted_error(&w, &ours.reconstruction, n, &weights),
                    weighted_error(&w, &plain.reconstruction, n, &weights),
                );
                assert!(a < b, "{importance:?} rank {rank}: fwsvd {a} vs svd {b}");
                // A lowrank section: the lowrank decoder gives the same values back.
                assert_eq!(decode(&ours.bytes, shape, &p).unwrap(), ours.reconstruction);
                assert_eq!(encode(&w, shape, &p).unwrap().bytes, ours.bytes);
            }
        }
    }

    #[test]
    fn encode_many_equals_encode() {
        let w = uneven_rows(48, 40, 3);
        let shape = Shape2::new(48, 40);
        let options = candidates(shape, 9);
        for (p, e) in options.iter().zip(encode_many(&w, shape, &options)) {
            assert_eq!(e.unwrap().bytes, encode(&w, shape, p).unwrap().bytes);
        }
    }

    #[test]
    fn zero_tensor_and_bad_input() {
        let shape = Shape2::new(40, 40);
        let p = Params {
            lowrank: lr(4, 2),
            importance: Importance::InverseRowEnergy,
        };
        let enc = encode(&[0.0; 1600], shape, &p).unwrap();
        assert!(enc.reconstruction.iter().all(|&x| x == 0.0));
        let mut bad = vec![1.0f32; 1600];
        bad[7] = f32::INFINITY;
        assert!(encode(&bad, shape, &p).is_err());
        assert!(weighted_svd(&[1.0; 1600], shape, &[1.0; 39], &p.lowrank).is_err());
    }
}
