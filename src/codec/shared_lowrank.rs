//! Shared-basis low rank (after Concatenated Matrix SVD, Shamrai; docs/METHODS.md): the matrices `W_j`
//! (`rows_j x cols`, same `cols`) of a group share one input-side basis `V` (`cols x r`,
//! orthonormal columns): `W_j ~= C_j V^T` with `C_j = W_j V^` (`rows_j x r`). `V` is the top-r left
//! singular basis of `M = [W_1^T .. W_K^T]` (randomized SVD, [`crate::linalg::rsi`]), so the
//! three projections of an attention layer can share one product `V^T x`. `V^T` is stored once,
//! in the group's own section (the container's `groups`, docs/FORMAT.md); each member's section
//! holds only its coefficients. Grouping (which matrices may share, under an error threshold) is
//! `crate::shared_basis`; this module only codes a given group.
//!
//! Basis section (little-endian; all side information except the stream's payload):
//! ```text
//! u8   format version (1)
//! u32  cols (the members' column count), u32 r (the effective rank, = the group record's)
//! f32  x r   step of each row of V^T       (dequantized v = (symbol - L) * step,
//! u32  length of the stream, then the       L = 2^(factor_bits-1) - 1, alphabet 2L+1)
//!      entropy-coded symbols of V^T (row-major, r x cols)
//! ```
//! Member section:
//! ```text
//! u8   format version (1)
//! u32  rows, u32 cols, u32 r (must equal the record's shape and the group's rank)
//! f32  x r   step of each column of C
//! u32  length of the stream, then the entropy-coded symbols of C (row-major, rows x r)
//! ```
//! The coefficients are computed against the *dequantized* basis (`C = W V^`), so the member's
//! quantizer sees, and partly absorbs, the basis's quantization error. The reconstruction is
//! The basis is computed from the members scaled to unit norm (see `encode_group`).
//! The reconstruction is
//! `C^ V^^T` by the low-rank codec's fixed-order f32 loop ([`super::lowrank::multiply`]), so every
//! platform decodes the same bits. The encoder's SVD runs on the CPU (faer), like `lowrank`'s:
//! its bits may differ between machines in the last place, never between runs on one machine.
//!
//! Per-component steps make the split of scale between `C` and `V` irrelevant (scaling a basis
//! vector by `s` and its coefficients by `1/s` scales both steps and gives the same symbols), so
//! the basis is kept orthonormal.

use super::section;
use serde::{Deserialize, Serialize};

use super::lowrank::{multiply, quantize};
use super::{Encoded, Shape2};
use crate::entropy;
use crate::error::{Error, Result};
use crate::linalg;
use crate::rng::Rng;

const FORMAT_VERSION: u8 = 1;

/// A member's parameters (the manifest's per-tensor record). `rank` and `factor_bits` repeat the
/// group's, so that a member's label reads alone; the container checks that they agree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Index into the manifest's `groups`.
    pub group: u32,
    pub rank: u32,
    pub factor_bits: u8,
}

impl Params {
    pub fn label(&self) -> String {
        format!(
            "shared-lowrank r{} {}b group {}",
            self.rank, self.factor_bits, self.group
        )
    }
}

/// The group's parameters (the manifest's group record).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasisParams {
    /// Effective rank: at most `cols` and the members' total row count.
    pub rank: u32,
    /// Bits of the uniform quantizer of the basis and of the coefficients (2..=12).
    pub factor_bits: u8,
    /// Randomized SVD of the concatenation: extra sketch columns and power iterations.
    pub oversample: u32,
    pub power_iters: u8,
    pub seed: u64,
}

impl BasisParams {
    pub fn validate(&self) -> Result<()> {
        if !(2..=12).contains(&self.factor_bits) {
            return Err(Error::option(format!(
                "shared-lowrank factor_bits {} outside 2..=12",
                self.factor_bits
            )));
        }
        if self.rank == 0 {
            return Err(Error::option("shared-lowrank rank must be at least 1"));
        }
        if self.oversample > 1024 || self.power_iters > 32 {
            return Err(Error::option(
                "shared-lowrank oversample > 1024 or power_iters > 32",
            ));
        }
        Ok(())
    }

    fn max_level(&self) -> u32 {
        (1u32 << (self.factor_bits - 1)) - 1
    }

    /// The member parameters of member `group` of this basis.
    pub fn member(&self, group: u32) -> Params {
        Params {
            group,
            rank: self.rank,
            factor_bits: self.factor_bits,
        }
    }
}

/// A coded group: the basis section and one section per member (in the order given).
#[derive(Clone, Debug)]
pub struct GroupEncoded {
    /// `reconstruction` is empty: the basis is not a tensor.
    pub basis: Encoded,
    pub members: Vec<Encoded>,
}

/// A decoded basis: `V^^T`, row-major `rank x cols`.
#[derive(Clone, Debug)]
pub struct Basis {
    pub cols: usize,
    pub rank: usize,
    vt: Vec<f32>,
}

/// The effective rank of a group of members with `cols` columns and `total_rows` rows in all.
pub fn effective_rank(rank: u32, cols: usize, total_rows: usize) -> usize {
    (rank as usize).min(cols).min(total_rows)
}

/// Codes the members (row-major values, each `rows_j x cols`) with one shared basis.
pub fn encode_group(members: &[(&[f32], Shape2)], p: &BasisParams) -> Result<GroupEncoded> {
    p.validate()?;
    let Some(&(_, first)) = members.first() else {
        return Err(Error::invalid("shared-lowrank: a group without members"));
    };
    let cols = first.cols;
    check_members(members, cols)?;
    let total_rows: usize = members.iter().map(|m| m.1.rows).sum();
    let rank = effective_rank(p.rank, cols, total_rows);
    if rank as u32 != p.rank {
        return Err(Error::option(format!(
            "shared-lowrank rank {} above what {total_rows} rows x {cols} columns allow",
            p.rank
        )));
    }
    let concat = unit_norm_concat(members, cols, total_rows);
    let mut rng = Rng::new(p.seed);
    let svd = linalg::rsi(
        linalg::view_row_major(&concat, cols, total_rows),
        rank,
        p.oversample as usize,
        p.power_iters as usize,
        &mut rng,
    )?;
    drop(concat);
    let level = p.max_level();

    // V^T, row-major rank x cols, one step per basis vector.
    let vt: Vec<f32> = (0..rank * cols)
        .map(|idx| svd.u[(idx % cols, idx / cols)])
        .collect();
    let (basis, vt_hat) = encode_basis(&vt, rank, cols, level)?;
    let mut out = Vec::with_capacity(members.len());
    for &(values, shape) in members {
        out.push(encode_member(
            values, shape.rows, &vt_hat, rank, cols, level,
        )?);
    }
    Ok(GroupEncoded {
        basis,
        members: out,
    })
}

/// Every member has the group's columns, as many values as its shape says, all finite.
fn check_members(members: &[(&[f32], Shape2)], cols: usize) -> Result<()> {
    for &(values, shape) in members {
        if shape.cols != cols || values.len() != shape.len() {
            return Err(Error::invalid(format!(
                "shared-lowrank: a member of {} values, {} x {}, in a group of {cols} columns",
                values.len(),
                shape.rows,
                shape.cols
            )));
        }
        if values.iter().any(|x| !x.is_finite()) {
            return Err(Error::invalid(
                "shared-lowrank: a member holds NaN or infinite values",
            ));
        }
    }
    Ok(())
}

/// M = [W_1^T/||W_1|| .. W_K^T/||W_K||], cols x total_rows: its left singular vectors are the
/// input-side basis. Each block is scaled to unit norm so that the basis minimises the sum of
/// the members' RELATIVE squared errors (the allocator's objective) rather than favouring the
/// largest member; `crate::shared_basis` groups the same normalised blocks.
fn unit_norm_concat(members: &[(&[f32], Shape2)], cols: usize, total_rows: usize) -> Vec<f32> {
    let mut concat = vec![0.0f32; cols * total_rows];
    let mut at = 0;
    for &(values, shape) in members {
        let scale = unit_scale(values);
        for k in 0..shape.rows {
            for i in 0..cols {
                concat[i * total_rows + at + k] = values[k * cols + i] * scale;
            }
        }
        at += shape.rows;
    }
    concat
}

/// The basis section: V^T (row-major `rank` x `cols`) quantized with one step per basis vector.
/// Returns it with the dequantized V^T that the members are projected on.
fn encode_basis(vt: &[f32], rank: usize, cols: usize, level: u32) -> Result<(Encoded, Vec<f32>)> {
    let steps_v: Vec<f32> = vt
        .chunks_exact(cols.max(1))
        .map(|row| peak(row) / level as f32)
        .collect();
    let symbols_v: Vec<u32> = vt
        .iter()
        .enumerate()
        .map(|(idx, &x)| quantize(x, steps_v[idx / cols], level))
        .collect();
    let vt_hat = dequantize(&symbols_v, &steps_v, cols, level, Layout::PerRow);
    let mut basis_bytes = vec![FORMAT_VERSION];
    put_u32(&mut basis_bytes, cols)?;
    put_u32(&mut basis_bytes, rank)?;
    for s in &steps_v {
        basis_bytes.extend_from_slice(&s.to_le_bytes());
    }
    let coded = entropy::encode(&symbols_v, 2 * level + 1);
    section::push_stream(&mut basis_bytes, &coded.bytes, "shared-lowrank")?;
    let basis = Encoded {
        side_bytes: 1 + 8 + 4 * rank + 4 + coded.table_bytes,
        bytes: basis_bytes,
        reconstruction: Vec::new(),
    };
    Ok((basis, vt_hat))
}

/// One member's section: its coefficients C = W V^ (in f64, a fixed order), quantized with one
/// step per basis vector, and its reconstruction C^ V^T.
fn encode_member(
    values: &[f32],
    rows: usize,
    vt_hat: &[f32],
    rank: usize,
    cols: usize,
    level: u32,
) -> Result<Encoded> {
    let mut c = vec![0.0f32; rows * rank];
    for k in 0..rows {
        let w = &values[k * cols..(k + 1) * cols];
        for t in 0..rank {
            let v = &vt_hat[t * cols..(t + 1) * cols];
            c[k * rank + t] = w
                .iter()
                .zip(v)
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum::<f64>() as f32;
        }
    }
    let mut steps_c = vec![0.0f32; rank];
    for row in c.chunks_exact(rank.max(1)) {
        for (s, &x) in steps_c.iter_mut().zip(row) {
            *s = s.max(x.abs());
        }
    }
    steps_c.iter_mut().for_each(|s| *s /= level as f32);
    let symbols_c: Vec<u32> = c
        .iter()
        .enumerate()
        .map(|(idx, &x)| quantize(x, steps_c[idx % rank], level))
        .collect();
    let c_hat = dequantize(&symbols_c, &steps_c, rank, level, Layout::PerColumn);
    let mut bytes = vec![FORMAT_VERSION];
    for dim in [rows, cols, rank] {
        put_u32(&mut bytes, dim)?;
    }
    for s in &steps_c {
        bytes.extend_from_slice(&s.to_le_bytes());
    }
    let coded = entropy::encode(&symbols_c, 2 * level + 1);
    section::push_stream(&mut bytes, &coded.bytes, "shared-lowrank")?;
    Ok(Encoded {
        side_bytes: 1 + 12 + 4 * rank + 4 + coded.table_bytes,
        bytes,
        reconstruction: multiply(&c_hat, vt_hat, rows, cols, rank),
    })
}

/// Parses and checks a basis section against its group record.
pub fn decode_basis(bytes: &[u8], cols: usize, p: &BasisParams) -> Result<Basis> {
    p.validate()
        .map_err(|e| Error::corrupt(format!("shared-lowrank group parameters: {e}")))?;
    let mut r = section::Reader::new(bytes, "shared-lowrank");
    if r.u8()? != FORMAT_VERSION {
        return Err(Error::unsupported(
            "shared-lowrank basis of an unknown format version",
        ));
    }
    let (stored_cols, rank) = (r.u32()? as usize, r.u32()? as usize);
    if stored_cols != cols || rank != p.rank as usize || rank > cols {
        return Err(Error::corrupt(format!(
            "shared-lowrank basis is {rank} x {stored_cols}, the group record says {} x {cols}",
            p.rank
        )));
    }
    let steps = r.steps(rank)?;
    let level = p.max_level();
    let count = rank * cols; // rank <= cols, and cols * numel bound checked by the container
    let symbols = entropy::decode(r.stream()?, count, 2 * level + 1)?;
    r.end()?;
    Ok(Basis {
        cols,
        rank,
        vt: dequantize(&symbols, &steps, cols, level, Layout::PerRow),
    })
}

/// Decodes a member's section against its group's decoded basis.
pub fn decode(bytes: &[u8], shape: Shape2, p: &Params, basis: &Basis) -> Result<Vec<f32>> {
    if !(2..=12).contains(&p.factor_bits) {
        return Err(Error::corrupt("shared-lowrank factor_bits outside 2..=12"));
    }
    let (rows, cols) = (shape.rows, shape.cols);
    if cols != basis.cols || p.rank as usize != basis.rank {
        return Err(Error::corrupt(format!(
            "shared-lowrank member of {cols} columns, rank {}, on a basis of {} columns, rank {}",
            p.rank, basis.cols, basis.rank
        )));
    }
    let mut r = section::Reader::new(bytes, "shared-lowrank");
    if r.u8()? != FORMAT_VERSION {
        return Err(Error::unsupported(
            "shared-lowrank section of an unknown format version",
        ));
    }
    let stored = (r.u32()? as usize, r.u32()? as usize, r.u32()? as usize);
    if stored != (rows, cols, basis.rank) {
        return Err(Error::corrupt(format!(
            "shared-lowrank section is for {} x {} at rank {}, not {rows} x {cols} at rank {}",
            stored.0, stored.1, stored.2, basis.rank
        )));
    }
    let rank = basis.rank;
    let steps = r.steps(rank)?;
    let level = (1u32 << (p.factor_bits - 1)) - 1;
    let count = rows
        .checked_mul(rank)
        .ok_or_else(|| Error::corrupt("shared-lowrank: shape overflows"))?;
    let symbols = entropy::decode(r.stream()?, count, 2 * level + 1)?;
    r.end()?;
    let c = dequantize(&symbols, &steps, rank, level, Layout::PerColumn);
    Ok(multiply(&c, &basis.vt, rows, cols, rank))
}

/// The factor that scales `values` to unit Frobenius norm (1 for an all-zero block).
pub fn unit_scale(values: &[f32]) -> f32 {
    let norm = values
        .iter()
        .map(|&x| x as f64 * x as f64)
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 {
        (1.0 / norm) as f32
    } else {
        1.0
    }
}

fn peak(values: &[f32]) -> f32 {
    values.iter().fold(0.0f32, |m, x| m.max(x.abs()))
}

/// Which index of a row-major matrix of width `width` a step belongs to.
#[derive(Clone, Copy)]
enum Layout {
    PerRow,
    PerColumn,
}

fn dequantize(
    symbols: &[u32],
    steps: &[f32],
    width: usize,
    level: u32,
    layout: Layout,
) -> Vec<f32> {
    let width = width.max(1);
    symbols
        .iter()
        .enumerate()
        .map(|(idx, &s)| {
            let step = match layout {
                Layout::PerRow => steps[idx / width],
                Layout::PerColumn => steps[idx % width],
            };
            (s as i64 - level as i64) as f32 * step
        })
        .collect()
}

fn put_u32(out: &mut Vec<u8>, v: usize) -> Result<()> {
    let v = u32::try_from(v)
        .map_err(|_| Error::unsupported("shared-lowrank: a side longer than 2^32 - 1"))?;
    out.extend_from_slice(&v.to_le_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `k` matrices `rows x cols` whose rows lie near one rank-`true_rank` subspace of R^cols.
    fn sharing(k: usize, rows: usize, cols: usize, true_rank: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut rng = Rng::new(seed);
        let basis: Vec<f32> = (0..true_rank * cols).map(|_| rng.normal() as f32).collect();
        (0..k)
            .map(|_| {
                let coef: Vec<f32> = (0..rows * true_rank).map(|_| rng.normal() as f32).collect();
                (0..rows * cols)
                    .map(|idx| {
                        let (i, j) = (idx / cols, idx % cols);
                        (0..true_rank)
                            .map(|t| coef[i * true_rank + t] * basis[t * cols + j])
                            .sum::<f32>()
                            + 0.01 * rng.normal() as f32
                    })
                    .collect()
            })
            .collect()
    }

    fn params(rank: u32, bits: u8) -> BasisParams {
        BasisParams {
            rank,
            factor_bits: bits,
            oversample: 10,
            power_iters: 2,
            seed: 5,
        }
    }

    fn rel_error(a: &[f32], b: &[f32]) -> f64 {
        let e: f64 = a
            .iter()
            .zip(b)
            .map(|(&x, &y)| ((x - y) as f64).powi(2))
            .sum();
        let n: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum();
        (e / n).sqrt()
    }

    #[test]
    fn round_trip_is_bit_exact_and_recovers_a_shared_subspace() {
        let (rows, cols) = (40, 48);
        let data = sharing(3, rows, cols, 6, 1);
        // Members of different heights are fine: only the columns are shared.
        let shapes = [
            Shape2::new(rows, cols),
            Shape2::new(rows, cols),
            Shape2::new(20, cols),
        ];
        let members: Vec<(&[f32], Shape2)> = data
            .iter()
            .zip(shapes)
            .map(|(d, s)| (&d[..s.len()], s))
            .collect();
        let p = params(6, 10);
        let enc = encode_group(&members, &p).unwrap();
        let basis = decode_basis(&enc.basis.bytes, cols, &p).unwrap();
        for (i, (m, e)) in members.iter().zip(&enc.members).enumerate() {
            let dec = decode(&e.bytes, m.1, &p.member(0), &basis).unwrap();
            assert!(
                dec.iter()
                    .zip(&e.reconstruction)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "member {i}: decode != encode's reconstruction"
            );
            // Noise 0.01 against entries of size ~sqrt(6): the shared rank-6 basis explains all
            // but the noise and the 10-bit quantization.
            let err = rel_error(m.0, &dec);
            assert!(err < 0.01, "member {i}: relative error {err}");
        }
        assert_eq!(
            encode_group(&members, &p).unwrap().basis.bytes,
            enc.basis.bytes,
            "same input, same bytes"
        );
    }

    #[test]
    fn bad_groups_and_options_are_rejected() {
        let data = sharing(2, 10, 12, 2, 2);
        let s = Shape2::new(10, 12);
        let ok = [(&data[0][..], s), (&data[1][..], s)];
        assert!(encode_group(&[], &params(2, 8)).is_err());
        assert!(encode_group(&ok, &params(0, 8)).is_err());
        assert!(encode_group(&ok, &params(2, 13)).is_err());
        assert!(
            encode_group(&ok, &params(13, 8)).is_err(),
            "rank above cols"
        );
        let short = [(&data[0][..], s), (&data[1][..60], Shape2::new(5, 12))];
        assert!(encode_group(&short, &params(2, 8)).is_ok());
        let mismatched = [(&data[0][..], s), (&data[1][..60], Shape2::new(6, 10))];
        assert!(encode_group(&mismatched, &params(2, 8)).is_err());
        let mut nan = data[1].clone();
        nan[7] = f32::NAN;
        assert!(encode_group(&[(&data[0][..], s), (&nan[..], s)], &params(2, 8)).is_err());
    }

    #[test]
    fn corrupt_sections_are_rejected_without_panic() {
        let (rows, cols) = (24, 20);
        let data = sharing(2, rows, cols, 3, 3);
        let s = Shape2::new(rows, cols);
        let p = params(4, 8);
        let enc = encode_group(&[(&data[0][..], s), (&data[1][..], s)], &p).unwrap();
        let (good_basis, good_member) = (&enc.basis.bytes, &enc.members[0].bytes);
        let basis = decode_basis(good_basis, cols, &p).unwrap();
        for cut in 0..good_basis.len() {
            assert!(
                decode_basis(&good_basis[..cut], cols, &p).is_err(),
                "basis cut {cut}"
            );
        }
        for cut in 0..good_member.len() {
            assert!(
                decode(&good_member[..cut], s, &p.member(0), &basis).is_err(),
                "cut {cut}"
            );
        }
        let mut longer = good_member.clone();
        longer.push(0);
        assert!(decode(&longer, s, &p.member(0), &basis).is_err());
        assert!(decode_basis(good_basis, cols + 1, &p).is_err());
        assert!(decode_basis(good_basis, cols, &params(5, 8)).is_err());
        assert!(decode(
            good_member,
            Shape2::new(rows + 1, cols),
            &p.member(0),
            &basis
        )
        .is_err());
        let other = Params {
            rank: 3,
            ..p.member(0)
        };
        assert!(decode(good_member, s, &other, &basis).is_err());
        let mut nan_step = good_member.clone();
        nan_step[13..17].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(decode(&nan_step, s, &p.member(0), &basis).is_err());
        let mut flip = Rng::new(1);
        for _ in 0..300 {
            let mut bytes = good_member.clone();
            let at = flip.below(bytes.len() as u64) as usize;
            bytes[at] ^= 1 << flip.below(8);
            if let Ok(out) = decode(&bytes, s, &p.member(0), &basis) {
                assert_eq!(out.len(), rows * cols);
            }
            let mut bytes = good_basis.clone();
            let at = flip.below(bytes.len() as u64) as usize;
            bytes[at] ^= 1 << flip.below(8);
            if let Ok(b) = decode_basis(&bytes, cols, &p) {
                assert_eq!(b.vt.len(), 4 * cols);
            }
        }
    }
}
