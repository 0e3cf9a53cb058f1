//! Fisher-weighted SVD (FWSVD, Hsu et al. 2022; docs/METHODS.md): a different *encoder* for the
//! [`lowrank`] format. Rows get importances `i_r`; with `D = diag(sqrt(i_r + eps))` the rank-k
//! minimiser of the row-weighted error `sum_r i_r ||W_r - What_r||^2` is the truncated SVD of `D W`
//! mapped back, `What = D^-1 U_k S_k V_k^T` (a row-constant weight is absorbed by the left factor,
//! so the weighted problem is an ordinary SVD). The stored factors are the mapped-back ones, so the
//! section is a plain lowrank section and decoding is `lowrank::decode`: nothing new in the format
//! beyond the header's parameters.
//!
//! Where the importances come from (`Params::importance`): a data-free proxy computed from the
//! tensor itself, so re-encoding needs nothing else, or an importance file (`--importance FILE`,
//! an [`ImportanceMap`]: per-row or per-element statistics such as a diagonal Fisher, computed
//! elsewhere). Per-element weights are summed over each row, as FWSVD does: a row-constant weight
//! is what the SVD of `D W` can honour exactly (general element weights have no closed form).
//! The header then records the CRC-32 of the row importances used ([`Importance::File`]), and
//! re-encoding needs the same values ([`encode_with_importance`]).

use std::collections::BTreeMap;

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
    /// Given with the input (`--importance FILE`): `crc32` of the normalised row importances
    /// (f64 little-endian), so a file says which statistic shaped it.
    File { crc32: u32 },
}

impl Importance {
    pub fn is_file(self) -> bool {
        matches!(self, Importance::File { .. })
    }
}

/// Importance statistics computed elsewhere, per tensor name (`--importance FILE`; the CLI reads
/// the file, [`crate::checkpoint::importance_map`] parses it, the codec takes the values).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImportanceMap {
    /// Where the values came from (the file's name), for messages and the report.
    pub source: String,
    /// Tensor name -> (shape, values): shape `[rows]` (or `[rows, 1]`) for per-row weights, the
    /// tensor's own shape for per-element ones.
    pub tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

impl ImportanceMap {
    /// The row importances (normalised to mean 1) for tensor `name` of `shape`, `None` when the
    /// map has none for it; an error naming the file and the tensor when the entry has the wrong
    /// shape, a NaN, an infinity or a negative value, or is all zero.
    pub fn rows_for(&self, name: &str, shape: &[usize]) -> Result<Option<Vec<f64>>> {
        let Some((given, values)) = self.tensors.get(name) else {
            return Ok(None);
        };
        let fail = |what: String| {
            Err(Error::invalid(format!(
                "importance file {}: tensor '{name}': {what}",
                self.source
            )))
        };
        let s = Shape2::of(shape).ok_or_else(|| Error::invalid("shape overflows"))?;
        let per_row = *given == [s.rows] || *given == [s.rows, 1];
        if !(per_row || given == shape) || values.len() != if per_row { s.rows } else { s.len() } {
            return fail(format!(
                "shape {given:?} is neither [{}] (per row) nor {shape:?} (per element)",
                s.rows
            ));
        }
        if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return fail(format!("value {v} at index {i} (weights must be finite)"));
        }
        if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| **v < 0.0) {
            return fail(format!("negative value {v} at index {i}"));
        }
        let rows: Vec<f64> = if per_row {
            values.iter().map(|&v| v as f64).collect()
        } else {
            values
                .chunks_exact(s.cols.max(1))
                .map(|r| r.iter().map(|&v| v as f64).sum())
                .collect()
        };
        let mean = rows.iter().sum::<f64>() / rows.len().max(1) as f64;
        if !(mean > 0.0 && mean.is_finite()) {
            return fail("all weights are zero".to_string());
        }
        Ok(Some(rows.iter().map(|r| r / mean).collect()))
    }
}

/// The CRC-32 that [`Importance::File`] records for normalised row importances.
pub fn importance_crc(rows: &[f64]) -> u32 {
    let bytes: Vec<u8> = rows.iter().flat_map(|r| r.to_le_bytes()).collect();
    crate::checksum::crc32(&bytes)
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
            Importance::File { .. } => "file",
        };
        format!("fwsvd {what} {}", &self.lowrank.label()["lowrank ".len()..])
    }
}

/// The options `--method fwsvd` tries: the lowrank candidates, each with both proxies.
pub fn candidates(shape: Shape2, seed: u64) -> Vec<Params> {
    candidates_with(shape, seed, None)
}

/// The lowrank candidates with the given row importances (`Some`: from an importance file, whose
/// normalised rows these are), or else with each data-free proxy.
pub fn candidates_with(shape: Shape2, seed: u64, given: Option<&[f64]>) -> Vec<Params> {
    let kinds: Vec<Importance> = match given {
        Some(rows) => vec![Importance::File {
            crc32: importance_crc(rows),
        }],
        None => vec![Importance::RowEnergy, Importance::InverseRowEnergy],
    };
    lowrank::candidates(shape, seed)
        .into_iter()
        .flat_map(|l| {
            kinds.iter().map(move |&importance| Params {
                lowrank: l.clone(),
                importance,
            })
        })
        .collect()
}

/// The row importances of a proxy, normalised to mean 1 (all ones for an all-zero tensor). An
/// [`Importance::File`] has no proxy: its values come with the input ([`ImportanceMap`]); asking
/// here gives all ones.
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
        Importance::File { .. } => return vec![1.0; shape.rows],
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

/// Encodes with a data-free proxy; an [`Importance::File`] option needs its values
/// ([`encode_with_importance`]).
pub fn encode(values: &[f32], shape: Shape2, p: &Params) -> Result<Encoded> {
    if p.importance.is_file() {
        return Err(Error::option(
            "fwsvd with an importance file needs the file's values (--importance)",
        ));
    }
    lowrank::check_input(values, shape, &p.lowrank)?;
    let importance = row_importance(values, shape, p.importance);
    let svd = weighted_svd(values, shape, &importance, &p.lowrank)?;
    lowrank::encode_with_svd(values, shape, &p.lowrank, &svd)
}

/// The row importances an option uses: the proxy's, or `given` (checked against the CRC the
/// option records).
fn importance_of(
    values: &[f32],
    shape: Shape2,
    p: &Params,
    given: Option<&[f64]>,
) -> Result<Vec<f64>> {
    match (p.importance, given) {
        (Importance::File { crc32 }, Some(rows)) if importance_crc(rows) == crc32 => {
            Ok(rows.to_vec())
        }
        (Importance::File { .. }, Some(_)) => Err(Error::option(
            "fwsvd: the importance values differ from the ones this option was measured with",
        )),
        (Importance::File { .. }, None) => Err(Error::option(
            "fwsvd with an importance file needs the file's values (--importance)",
        )),
        (proxy, _) => Ok(row_importance(values, shape, proxy)),
    }
}

/// Encodes with the row importances `rows` of an importance file (normalised, as
/// [`ImportanceMap::rows_for`] gives them); proxy options ignore them.
pub fn encode_with_importance(
    values: &[f32],
    shape: Shape2,
    p: &Params,
    rows: &[f64],
) -> Result<Encoded> {
    lowrank::check_input(values, shape, &p.lowrank)?;
    let importance = importance_of(values, shape, p, Some(rows))?;
    let svd = weighted_svd(values, shape, &importance, &p.lowrank)?;
    lowrank::encode_with_svd(values, shape, &p.lowrank, &svd)
}

/// Encodes `values` with each option, computing each distinct weighted SVD once (the residual
/// variants of one rank share it); each result is byte-identical to `encode(values, shape, option)`
/// (or [`encode_with_importance`] with `given`, for the options of an importance file).
pub fn encode_many(
    values: &[f32],
    shape: Shape2,
    options: &[Params],
    given: Option<&[f64]>,
) -> Vec<Result<Encoded>> {
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
                    let importance = importance_of(values, shape, p, given)?;
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

    /// The largest difference between the rank-`k` factors of [`weighted_svd`] and the exact SVD of
    /// `D W` mapped back, and the largest entry (its scale).
    fn dw_identity_gap(w: &[f32], shape: Shape2, importance: &[f64], k: usize) -> (f64, f64) {
        let (m, n) = (shape.rows, shape.cols);
        let got = weighted_svd(w, shape, importance, &lr(k as u32, 6)).unwrap();
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
        (max_diff, scale)
    }

    /// The check, first half: the factors equal the exact SVD of `D W`, mapped back.
    #[test]
    fn equals_the_svd_of_the_weighted_matrix_mapped_back() {
        let (m, n, k) = (60, 44, 6);
        let w = uneven_rows(m, n, 1);
        let shape = Shape2::new(m, n);
        let importance = row_importance(&w, shape, Importance::InverseRowEnergy);
        let (max_diff, scale) = dw_identity_gap(&w, shape, &importance, k);
        assert!(
            max_diff < 1e-3 * scale,
            "max diff {max_diff}, scale {scale}"
        );
    }

    /// A Fisher-like statistic unrelated to the rows' energies: a few rows matter a lot.
    fn fisher_like(m: usize) -> Vec<f32> {
        (0..m)
            .map(|r| {
                if r % 9 == 0 {
                    20.0
                } else {
                    0.5 + (r % 4) as f32
                }
            })
            .collect()
    }

    /// With an importance file's rows: the D*W identity, and a lower weighted error (weighted by
    /// those importances) than the plain SVD's at the same rank, after quantization and coding.
    #[test]
    fn given_importance_is_the_svd_of_dw_and_beats_plain_svd() {
        let (m, n) = (64, 48);
        let w = uneven_rows(m, n, 4);
        let shape = Shape2::new(m, n);
        let map = ImportanceMap {
            source: "fisher.safetensors".into(),
            tensors: [("w".to_string(), (vec![m], fisher_like(m)))].into(),
        };
        let rows = map.rows_for("w", &[m, n]).unwrap().unwrap();
        let (max_diff, scale) = dw_identity_gap(&w, shape, &rows, 6);
        assert!(max_diff < 1e-3 * scale, "{max_diff} vs {scale}");
        for rank in [4, 8] {
            let p = Params {
                lowrank: lr(rank, 2),
                importance: Importance::File {
                    crc32: importance_crc(&rows),
                },
            };
            let ours = encode_with_importance(&w, shape, &p, &rows).unwrap();
            let plain = lowrank::encode(&w, shape, &p.lowrank).unwrap();
            let (a, b) = (
                weighted_error(&w, &ours.reconstruction, n, &rows),
                weighted_error(&w, &plain.reconstruction, n, &rows),
            );
            assert!(a < b, "rank {rank}: fwsvd {a} vs svd {b}");
            assert_eq!(decode(&ours.bytes, shape, &p).unwrap(), ours.reconstruction);
            // encode_many with the same rows gives the same bytes; without them, an error.
            let many = encode_many(&w, shape, std::slice::from_ref(&p), Some(&rows));
            assert_eq!(many[0].as_ref().unwrap().bytes, ours.bytes);
            assert!(encode_many(&w, shape, std::slice::from_ref(&p), None)[0].is_err());
            assert!(encode(&w, shape, &p).is_err());
            let mut other = rows.clone();
            other[0] *= 2.0;
            assert!(encode_with_importance(&w, shape, &p, &other).is_err());
        }
    }

    #[test]
    fn importance_entries_are_validated() {
        let (m, n) = (12, 5);
        let map = |shape: Vec<usize>, values: Vec<f32>| ImportanceMap {
            source: "imp.safetensors".into(),
            tensors: [("w".to_string(), (shape, values))].into(),
        };
        // Missing: None (the proxies apply).
        assert_eq!(
            map(vec![m], vec![1.0; m]).rows_for("v", &[m, n]).unwrap(),
            None
        );
        // Per row, [rows, 1], per element (summed per row): normalised to mean 1.
        let per_row = map(vec![m], fisher_like(m))
            .rows_for("w", &[m, n])
            .unwrap()
            .unwrap();
        let column = map(vec![m, 1], fisher_like(m))
            .rows_for("w", &[m, n])
            .unwrap()
            .unwrap();
        assert_eq!(per_row, column);
        assert!((per_row.iter().sum::<f64>() / m as f64 - 1.0).abs() < 1e-12);
        let elements: Vec<f32> = fisher_like(m)
            .iter()
            .flat_map(|&v| std::iter::repeat_n(v / n as f32, n))
            .collect();
        let summed = map(vec![m, n], elements)
            .rows_for("w", &[m, n])
            .unwrap()
            .unwrap();
        for (a, b) in summed.iter().zip(&per_row) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        for (shape, values, what) in [
            (vec![m + 1], vec![1.0; m + 1], "shape"),
            (vec![n, m], vec![1.0; m * n], "shape"),
            (vec![m], vec![f32::INFINITY; m], "finite"),
            (vec![m], vec![-0.5; m], "negative"),
            (vec![m], vec![0.0; m], "zero"),
        ] {
            let e = map(shape, values)
                .rows_for("w", &[m, n])
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("imp.safetensors") && e.contains("'w'") && e.contains(what),
                "{e}"
            );
        }
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
        for (p, e) in options.iter().zip(encode_many(&w, shape, &options, None)) {
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
