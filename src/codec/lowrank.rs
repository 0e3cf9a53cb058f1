//! The low-rank codec: `W (rows x cols) ~= A B` with `A = U sqrt(S)` (rows x r) and
//! `B = sqrt(S) Vt` (r x cols) from a rank-r truncated SVD (randomized subspace iteration, see
//! [`crate::linalg::rsi`]), the factors quantized per rank component and entropy coded, plus an
//! optional coarse uniform quantization of the residual `W - A B` so that low rank can help where
//! rank alone fails (flat spectra).
//!
//! Section layout (little-endian; every field is side information except the two coded streams'
//! payload):
//! ```text
//! u8   format version (1)
//! u8   flags: bit 0 = residual present (must agree with Params)
//! u32  rows, u32 cols (must equal the tensor's shape: the coded streams carry no checksum, so
//!      a section decoded against the wrong shape is caught here)
//! u32  r, the effective rank (must equal min(Params.rank, rows, cols))
//! f32  x r   step of each column of A        (dequantized a = (symbol - L) * step)
//! f32  x r   step of each row of B           (L = 2^(factor_bits-1) - 1, alphabet 2L+1)
//! u32  length of the factor stream, then the stream: entropy-coded symbols of A (row-major,
//!      rows*r) then B (row-major, r*cols)
//! [residual only]
//! f32  residual step (> 0, or 0 when the tensor is all zeros)
//! u32  largest |q| of the residual integers (alphabet 2*max+1, zigzag mapped)
//! u32  length of the residual stream, then the stream (rows*cols symbols, row-major)
//! ```
//! The reconstruction is `A B` computed by a fixed-order f32 loop (no FMA contraction, no
//! platform-dependent kernel) plus `q * step`, so every platform decodes the same bits.
//!
//! What this codec does not do: choose the rank for a target rate (the allocator picks among
//! [`candidates`]), or apply to 1-D tensors and tiny matrices (no candidates: factors would cost
//! more than the values).

use super::section;
use serde::{Deserialize, Serialize};

use super::{Encoded, Shape2};
use crate::backend::{self, Backend};
use crate::entropy;
use crate::error::{Error, Result};
use crate::linalg;
use crate::rng::Rng;

const FORMAT_VERSION: u8 = 1;
const FLAG_RESIDUAL: u8 = 1;
/// The smallest side for which [`candidates`] proposes low rank.
const MIN_SIDE: usize = 32;
/// Residual steps are `rms(W) * 2^s` with `s` in this range: coarser says nothing, finer than
/// 2^-12 rms is lossless territory and would make the integer alphabet huge.
const RESIDUAL_STEP_LOG2: std::ops::RangeInclusive<i8> = -12..=4;
/// The residual integers are clamped to this magnitude (keeps the alphabet bounded even for
/// heavy outliers; clamping only adds error, which the reconstruction reports honestly).
const RESIDUAL_MAX_ABS: u32 = 1 << 16;

/// Options of the low-rank codec (stored in the container header).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Params {
    /// Target rank; the effective rank is `min(rank, rows, cols)`.
    pub rank: u32,
    /// Extra sketch columns of the randomized SVD (HMT's p; 10 is the usual choice).
    pub oversample: u32,
    /// Subspace (power) iterations of the randomized SVD; 0 = plain RSVD.
    pub power_iters: u8,
    /// Bits of the uniform quantizer of each factor entry (2..=12), before entropy coding.
    pub factor_bits: u8,
    /// When set, the residual `W - A B` is quantized with step `rms(W) * 2^s` and entropy coded.
    pub residual_step_log2: Option<i8>,
    /// Seed of the SVD's Gaussian sketch.
    pub seed: u64,
}

impl Params {
    pub fn label(&self) -> String {
        let mut label = format!(
            "lowrank r{} {}b q{}",
            self.rank, self.factor_bits, self.power_iters
        );
        if let Some(s) = self.residual_step_log2 {
            label.push_str(&format!(" +res 2^{s}"));
        }
        label
    }

    fn validate(&self) -> Result<()> {
        if !(2..=12).contains(&self.factor_bits) {
            return Err(Error::option(format!(
                "lowrank factor_bits {} outside 2..=12",
                self.factor_bits
            )));
        }
        if self.rank == 0 {
            return Err(Error::option("lowrank rank must be at least 1"));
        }
        if self.oversample > 1024 || self.power_iters > 32 {
            return Err(Error::option(
                "lowrank oversample > 1024 or power_iters > 32",
            ));
        }
        if let Some(s) = self.residual_step_log2 {
            if !RESIDUAL_STEP_LOG2.contains(&s) {
                return Err(Error::option(format!(
                    "lowrank residual_step_log2 {s} outside {RESIDUAL_STEP_LOG2:?}"
                )));
            }
        }
        Ok(())
    }

    /// Largest quantizer level L: symbols are `level + L` in `0..=2L`.
    fn max_level(&self) -> u32 {
        (1u32 << (self.factor_bits - 1)) - 1
    }
}

/// The options the allocator tries for a tensor of this shape, from low to high rate. Empty for
/// 1-D tensors and matrices with a side below 32 (low rank does not apply there).
///
/// Ranks are fractions of the short side. Pure low rank (rank short/16 .. short/2, 8-bit factors)
/// spans ~0.5 to ~7 bits per weight (entropy estimates); it only wins on fast-decaying spectra. The
/// residual variants (rank short/32 carrying the top of the spectrum, the rest uniformly quantized
/// with steps rms * 2^1 .. rms * 2^-4) span ~1.2 to ~6 bits per weight.
pub fn candidates(shape: Shape2, seed: u64) -> Vec<Params> {
    let short = shape.rows.min(shape.cols);
    if short < MIN_SIDE {
        return Vec::new();
    }
    let make = |rank: usize, factor_bits: u8, residual_step_log2: Option<i8>| Params {
        rank: rank.max(1) as u32,
        oversample: 10,
        power_iters: 2,
        factor_bits,
        residual_step_log2,
        seed,
    };
    let mut out = Vec::new();
    for divisor in [16, 8, 4, 2] {
        out.push(make(short / divisor, 8, None));
    }
    // Residual variants: a small rank at 4-bit factors (the residual absorbs the factors' coarse
    // quantization, so more factor bits only cost); on MiniLM's 1536 x 384 FFN matrices this was
    // ~0.1 bpw below plain uniform scalar quantization at equal MSE (entropy estimates), on the
    // 384 x 384 attention matrices ~0.03 bpw above: the allocator decides per tensor.
    for s in [1, 0, -1, -2, -3, -4] {
        out.push(make(short / 32, 4, Some(s)));
    }
    out
}

/// Top `how_many` singular values (RSI estimate, see [`linalg::singular_values`]), for spectra.
pub fn singular_values(
    values: &[f32],
    rows: usize,
    cols: usize,
    how_many: usize,
    seed: u64,
) -> Vec<f32> {
    linalg::singular_values(values, rows, cols, how_many, seed)
}

/// Quantized factors: symbols (row-major A then row-major B) and per-component steps.
struct Factors {
    rank: usize,
    symbols: Vec<u32>,
    steps_a: Vec<f32>,
    steps_b: Vec<f32>,
}

pub fn encode(values: &[f32], shape: Shape2, p: &Params) -> Result<Encoded> {
    check_input(values, shape, p)?;
    let svd = backend::ready(truncated_svd(&Backend::Cpu, values, shape, p))?;
    encode_with_svd(values, shape, p, &svd)
}

/// Encodes `values` with each of `options`, computing the SVD once per distinct
/// `(rank, oversample, power_iters, seed)`; each result is byte-identical to `encode(values,
/// shape, option)`. For the analysis stage: [`candidates`] shares one SVD among its 6 residual
/// variants, so this runs 5 SVDs instead of 10.
pub fn encode_many(values: &[f32], shape: Shape2, options: &[Params]) -> Vec<Result<Encoded>> {
    backend::ready(encode_many_on(&Backend::Cpu, values, shape, options))
}

/// [`encode_many`] with the SVDs on `backend`.
pub async fn encode_many_on(
    backend: &Backend,
    values: &[f32],
    shape: Shape2,
    options: &[Params],
) -> Vec<Result<Encoded>> {
    let mut out = Vec::with_capacity(options.len());
    encode_each_on(backend, values, shape, options, |_, e| out.push(e)).await;
    out
}

/// [`encode_many_on`], handing each option's encoding to `each(index, encoding)` as soon as it is
/// made, in the order of `options`: a caller that measures and drops them holds one
/// reconstruction (as large as the tensor) at a time instead of all of them.
pub async fn encode_each_on(
    backend: &Backend,
    values: &[f32],
    shape: Shape2,
    options: &[Params],
    mut each: impl FnMut(usize, Result<Encoded>),
) {
    // (rank, oversample, power_iters, seed): what the SVD depends on.
    type SvdKey = (u32, u32, u8, u64);
    let mut svds: Vec<(SvdKey, Result<linalg::Svd>)> = Vec::new();
    for (i, p) in options.iter().enumerate() {
        if let Err(e) = check_input(values, shape, p) {
            each(i, Err(e));
            continue;
        }
        let key = (p.rank, p.oversample, p.power_iters, p.seed);
        let index = match svds.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                svds.push((key, truncated_svd(backend, values, shape, p).await));
                svds.len() - 1
            }
        };
        each(
            i,
            match &svds[index].1 {
                Ok(svd) => encode_with_svd(values, shape, p, svd),
                Err(e) => Err(Error::unsupported(format!("lowrank SVD failed: {e}"))),
            },
        );
    }
}

pub(crate) fn check_input(values: &[f32], shape: Shape2, p: &Params) -> Result<()> {
    p.validate()?;
    if values.len() != shape.len() {
        return Err(Error::invalid(format!(
            "lowrank: {} values for shape {} x {}",
            values.len(),
            shape.rows,
            shape.cols
        )));
    }
    if values.iter().any(|x| !x.is_finite()) {
        return Err(Error::invalid(
            "lowrank: tensor holds NaN or infinite values",
        ));
    }
    Ok(())
}

/// The rank-`min(p.rank, rows, cols)` SVD that `encode` quantizes: a function of the values and
/// of `(rank, oversample, power_iters, seed)` only.
async fn truncated_svd(
    backend: &Backend,
    values: &[f32],
    shape: Shape2,
    p: &Params,
) -> Result<linalg::Svd> {
    let rank = (p.rank as usize).min(shape.rows).min(shape.cols);
    let mut rng = Rng::new(p.seed);
    backend
        .rsi(
            values,
            shape.rows,
            shape.cols,
            rank,
            p.oversample as usize,
            p.power_iters as usize,
            &mut rng,
        )
        .await
}

/// Quantizes and codes the factors `svd.u sqrt(sigma)` and `sqrt(sigma) svd.vt` (plus the
/// residual when asked). `svd.u` need not be orthonormal: the FWSVD encoder passes mapped-back
/// factors.
pub(crate) fn encode_with_svd(
    values: &[f32],
    shape: Shape2,
    p: &Params,
    svd: &linalg::Svd,
) -> Result<Encoded> {
    let (rows, cols) = (shape.rows, shape.cols);
    let rank = svd.rank(); // min(p.rank, rows, cols) (0 only for an empty tensor)

    // Balanced factors: column j of A and row j of B both carry sqrt(sigma_j).
    let level = p.max_level();
    let mut factors = Factors {
        rank,
        symbols: Vec::with_capacity(rank * (rows + cols)),
        steps_a: Vec::with_capacity(rank),
        steps_b: Vec::with_capacity(rank),
    };
    let root: Vec<f32> = svd.sigma.iter().map(|s| s.max(0.0).sqrt()).collect();
    // Row-major A (rows x r) and B (r x cols).
    let a: Vec<f32> = (0..rows * rank)
        .map(|idx| svd.u[(idx / rank, idx % rank)] * root[idx % rank])
        .collect();
    let b: Vec<f32> = (0..rank * cols)
        .map(|idx| svd.vt[(idx / cols, idx % cols)] * root[idx / cols])
        .collect();
    let mut peak_a = vec![0.0f32; rank];
    for row in a.chunks_exact(rank.max(1)) {
        for (peak, &x) in peak_a.iter_mut().zip(row) {
            *peak = peak.max(x.abs());
        }
    }
    factors.steps_a = peak_a.iter().map(|&m| m / level as f32).collect();
    factors.steps_b = b
        .chunks_exact(cols.max(1))
        .map(|row| row.iter().fold(0.0f32, |m, x| m.max(x.abs())) / level as f32)
        .collect();
    for (idx, &x) in a.iter().enumerate() {
        factors
            .symbols
            .push(quantize(x, factors.steps_a[idx % rank], level));
    }
    for (idx, &x) in b.iter().enumerate() {
        factors
            .symbols
            .push(quantize(x, factors.steps_b[idx / cols], level));
    }
    let mut reconstruction = reconstruct_factors(&factors, rows, cols, level);

    let mut bytes = Vec::new();
    bytes.push(FORMAT_VERSION);
    bytes.push(if p.residual_step_log2.is_some() {
        FLAG_RESIDUAL
    } else {
        0
    });
    for dim in [rows, cols, rank] {
        let dim = u32::try_from(dim)
            .map_err(|_| Error::unsupported("lowrank: a side longer than 2^32 - 1"))?;
        bytes.extend_from_slice(&dim.to_le_bytes());
    }
    for s in factors.steps_a.iter().chain(&factors.steps_b) {
        bytes.extend_from_slice(&s.to_le_bytes());
    }
    let coded = entropy::encode(&factors.symbols, 2 * level + 1);
    section::push_stream(&mut bytes, &coded.bytes, "lowrank")?;
    let mut side_bytes = 2 + 12 + 8 * rank + 4 + coded.table_bytes;

    if let Some(s) = p.residual_step_log2 {
        let mean_square = values.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>()
            / values.len().max(1) as f64;
        let step = (mean_square.sqrt() * 2f64.powi(s as i32)) as f32;
        let mut integers = Vec::with_capacity(values.len());
        if step > 0.0 && step.is_finite() {
            let limit = RESIDUAL_MAX_ABS as f32;
            for (&x, &r) in values.iter().zip(&reconstruction) {
                integers.push(((x - r) / step).round().clamp(-limit, limit) as i32);
            }
        } else {
            integers.resize(values.len(), 0);
        }
        let max_abs = integers.iter().map(|q| q.unsigned_abs()).max().unwrap_or(0);
        let symbols: Vec<u32> = integers.iter().map(|&q| zigzag(q)).collect();
        let coded = entropy::encode(&symbols, 2 * max_abs + 1);
        bytes.extend_from_slice(&step.to_le_bytes());
        bytes.extend_from_slice(&max_abs.to_le_bytes());
        section::push_stream(&mut bytes, &coded.bytes, "lowrank")?;
        side_bytes += 4 + 4 + 4 + coded.table_bytes;
        add_residual(&mut reconstruction, &integers, step);
    }

    Ok(Encoded {
        bytes,
        side_bytes,
        reconstruction,
    })
}

pub fn decode(bytes: &[u8], shape: Shape2, p: &Params) -> Result<Vec<f32>> {
    let section = parse(bytes, shape, p)?;
    let mut reconstruction =
        reconstruct_factors(&section.factors, shape.rows, shape.cols, p.max_level());
    if let Some(residual) = &section.residual {
        let integers: Vec<i32> = residual.symbols.iter().map(|&s| unzigzag(s)).collect();
        add_residual(&mut reconstruction, &integers, residual.step);
    }
    Ok(reconstruction)
}

/// An ESTIMATE of the section's size in bits with an ideal static entropy coder: the header and
/// step bytes as stored, plus the empirical entropy of each symbol stream (model tables not
/// counted). For reports, beside the coded size; never a size itself.
pub fn entropy_estimate_bits(bytes: &[u8], shape: Shape2, p: &Params) -> Result<f64> {
    let section = parse(bytes, shape, p)?;
    let level = p.max_level();
    let header_bytes = 2 + 12 + 8 * section.factors.rank + 4;
    let mut bits =
        8.0 * header_bytes as f64 + entropy::entropy_bits(&section.factors.symbols, 2 * level + 1);
    if let Some(residual) = &section.residual {
        bits += 8.0 * 12.0 + entropy::entropy_bits(&residual.symbols, 2 * residual.max_abs + 1);
    }
    Ok(bits)
}

/// A parsed and validated section.
struct Section {
    factors: Factors,
    residual: Option<Residual>,
}

struct Residual {
    step: f32,
    max_abs: u32,
    /// Zigzag-mapped integers, row-major.
    symbols: Vec<u32>,
}

fn parse(bytes: &[u8], shape: Shape2, p: &Params) -> Result<Section> {
    p.validate()
        .map_err(|e| Error::corrupt(format!("lowrank parameters in the header: {e}")))?;
    let (rows, cols) = (shape.rows, shape.cols);
    let len = rows
        .checked_mul(cols)
        .ok_or_else(|| Error::corrupt("lowrank: tensor shape overflows"))?;
    let mut reader = section::Reader::new(bytes, "lowrank");
    if reader.u8()? != FORMAT_VERSION {
        return Err(Error::unsupported(
            "lowrank section of an unknown format version",
        ));
    }
    let flags = reader.u8()?;
    if flags != p.residual_step_log2.map_or(0, |_| FLAG_RESIDUAL) {
        return Err(Error::corrupt(
            "lowrank flags disagree with the header's parameters",
        ));
    }
    let (stored_rows, stored_cols) = (reader.u32()? as usize, reader.u32()? as usize);
    if (stored_rows, stored_cols) != (rows, cols) {
        return Err(Error::corrupt(format!(
            "lowrank section is for a {stored_rows} x {stored_cols} tensor, not {rows} x {cols}"
        )));
    }
    let rank = reader.u32()? as usize;
    if rank != (p.rank as usize).min(rows).min(cols) {
        return Err(Error::corrupt(format!(
            "lowrank rank {rank} does not match the parameters and shape {rows} x {cols}"
        )));
    }
    let steps_a = reader.steps(rank)?;
    let steps_b = reader.steps(rank)?;
    let level = p.max_level();
    let count = rank * (rows + cols); // rank <= min(rows, cols), so this fits
    let stream = reader.stream()?;
    let symbols = entropy::decode(stream, count, 2 * level + 1)?;
    let factors = Factors {
        rank,
        symbols,
        steps_a,
        steps_b,
    };

    let residual = if p.residual_step_log2.is_some() {
        let step = reader.f32()?;
        if !(step.is_finite() && step >= 0.0) {
            return Err(Error::corrupt(
                "lowrank residual step is negative or not finite",
            ));
        }
        let max_abs = reader.u32()?;
        if max_abs > RESIDUAL_MAX_ABS {
            return Err(Error::corrupt("lowrank residual alphabet too large"));
        }
        let stream = reader.stream()?;
        let symbols = entropy::decode(stream, len, 2 * max_abs + 1)?;
        Some(Residual {
            step,
            max_abs,
            symbols,
        })
    } else {
        None
    };
    reader.end()?;
    Ok(Section { factors, residual })
}

pub(crate) fn quantize(x: f32, step: f32, level: u32) -> u32 {
    if step > 0.0 {
        let q = (x / step).round().clamp(-(level as f32), level as f32) as i64;
        (q + level as i64) as u32
    } else {
        level
    }
}

fn zigzag(q: i32) -> u32 {
    ((q << 1) ^ (q >> 31)) as u32
}

fn unzigzag(s: u32) -> i32 {
    ((s >> 1) as i32) ^ -((s & 1) as i32)
}

/// `A B` from the quantized factors, row-major `rows x cols`. A fixed-order f32 loop: for each
/// output row, `out += a_ij * B_j` over j = 0..r in order; every platform gets the same bits.
fn reconstruct_factors(f: &Factors, rows: usize, cols: usize, level: u32) -> Vec<f32> {
    let r = f.rank;
    let (sym_a, sym_b) = f.symbols.split_at(rows * r);
    let dequant = |s: u32, step: f32| (s as i64 - level as i64) as f32 * step;
    let b: Vec<f32> = sym_b
        .iter()
        .enumerate()
        .map(|(idx, &s)| dequant(s, f.steps_b[idx / cols.max(1)]))
        .collect();
    let a: Vec<f32> = sym_a
        .iter()
        .enumerate()
        .map(|(idx, &s)| dequant(s, f.steps_a[idx % r.max(1)]))
        .collect();
    multiply(&a, &b, rows, cols, r)
}

/// `A B` for row-major `A` (rows x r) and `B` (r x cols), by the fixed-order f32 loop every
/// decoder of factors uses (also `shared_lowrank`): for each output row, `out += a_ij * B_j` over
/// j = 0..r in order, no FMA contraction, so every platform gets the same bits.
pub(crate) fn multiply(a: &[f32], b: &[f32], rows: usize, cols: usize, r: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; rows * cols];
    if r == 0 || cols == 0 {
        return out;
    }
    for (i, out_row) in out.chunks_exact_mut(cols).enumerate() {
        for j in 0..r {
            let a = a[i * r + j];
            if a == 0.0 {
                continue;
            }
            let b_row = &b[j * cols..(j + 1) * cols];
            for (o, &bv) in out_row.iter_mut().zip(b_row) {
                *o += a * bv;
            }
        }
    }
    out
}

fn add_residual(out: &mut [f32], integers: &[i32], step: f32) {
    for (o, &q) in out.iter_mut().zip(integers) {
        *o += q as f32 * step;
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::linalg::tests::with_spectrum;

    fn row_major(m: &faer::Mat<f32>) -> Vec<f32> {
        (0..m.nrows())
            .flat_map(|i| (0..m.ncols()).map(move |j| (i, j)))
            .map(|(i, j)| m[(i, j)])
            .collect()
    }

    pub(crate) fn params(rank: u32, factor_bits: u8, residual_step_log2: Option<i8>) -> Params {
        Params {
            rank,
            oversample: 10,
            power_iters: 2,
            factor_bits,
            residual_step_log2,
            seed: 3,
        }
    }

    fn sq_error(a: &[f32], b: &[f32]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| ((x - y) as f64).powi(2))
            .sum()
    }

    #[test]
    fn round_trip_is_bit_exact_and_error_matches_theory() {
        let mut rng = Rng::new(4);
        let (m, n) = (64, 96);
        let s: Vec<f32> = (0..m).map(|j| 0.85f32.powi(j as i32)).collect();
        let values = row_major(&with_spectrum(m, n, &s, &mut rng));
        let shape = Shape2::new(m, n);
        for (rank, bits, res) in [
            (8, 8, None),
            (16, 10, None),
            (4, 6, Some(-3)),
            (64, 8, Some(0)),
        ] {
            let p = params(rank, bits, res);
            let enc = encode(&values, shape, &p).unwrap();
            let dec = decode(&enc.bytes, shape, &p).unwrap();
            assert_eq!(dec.len(), m * n);
            assert!(
                dec.iter()
                    .zip(&enc.reconstruction)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "decode != encode's reconstruction for {}",
                p.label()
            );
            assert!(enc.side_bytes < enc.bytes.len());
            let estimate = entropy_estimate_bits(&enc.bytes, shape, &p).unwrap();
            assert!(estimate.is_finite() && estimate > 8.0 * enc.side_bytes as f64);
            let err = sq_error(&values, &dec);
            let r = rank as usize;
            let tail: f64 = s[r.min(m)..].iter().map(|&x| (x as f64).powi(2)).sum();
            let energy: f64 = s.iter().map(|&x| (x as f64).powi(2)).sum();
            if let Some(res) = res {
                // Uniform residual quantizer: MSE <= step^2 / 4 everywhere (|e| <= step / 2).
                let rms = (energy / values.len() as f64).sqrt();
                let step = rms * 2f64.powi(res as i32);
                let mse = err / values.len() as f64;
                assert!(
                    mse <= step * step / 4.0 * 1.0001,
                    "{}: mse {mse}",
                    p.label()
                );
            } else {
                // Truncation error plus a small factor quantization error (relative to ||W||^2).
                let factor_noise = energy * if bits >= 10 { 1e-5 } else { 2e-4 };
                assert!(err >= tail * 0.99, "{}: {err} < tail {tail}", p.label());
                assert!(
                    err <= tail * 1.05 + factor_noise,
                    "{}: {err} vs tail {tail}",
                    p.label()
                );
            }
        }
    }

    #[test]
    fn residual_step_gives_uniform_quantizer_noise() {
        // Gaussian matrix (flat spectrum), tiny rank: the residual is ~ the matrix; with a step of
        // rms/16, the MSE is step^2/12 within a few percent.
        let mut rng = Rng::new(5);
        let (m, n) = (48, 64);
        let values: Vec<f32> = (0..m * n).map(|_| rng.normal() as f32).collect();
        let shape = Shape2::new(m, n);
        let p = params(2, 6, Some(-4));
        let enc = encode(&values, shape, &p).unwrap();
        let rms =
            (values.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / values.len() as f64).sqrt();
        let step = rms / 16.0;
        let mse = sq_error(&values, &enc.reconstruction) / values.len() as f64;
        let theory = step * step / 12.0;
        assert!((mse / theory - 1.0).abs() < 0.08, "mse {mse} vs {theory}");
    }

    #[test]
    fn encode_many_equals_encode() {
        let mut rng = Rng::new(9);
        let (m, n) = (64, 40);
        let values: Vec<f32> = (0..m * n).map(|_| rng.normal() as f32).collect();
        let shape = Shape2::new(m, n);
        let options = candidates(shape, 4);
        let many = encode_many(&values, shape, &options);
        assert_eq!(many.len(), options.len());
        for (p, got) in options.iter().zip(many) {
            assert_eq!(
                got.unwrap().bytes,
                encode(&values, shape, p).unwrap().bytes,
                "{}",
                p.label()
            );
        }
        let mut bad = values.clone();
        bad[0] = f32::INFINITY;
        assert!(encode_many(&bad, shape, &options)
            .iter()
            .all(|r| r.is_err()));
    }

    #[test]
    fn same_input_same_bytes() {
        let mut rng = Rng::new(6);
        let values: Vec<f32> = (0..40 * 30).map(|_| rng.normal() as f32).collect();
        let shape = Shape2::new(40, 30);
        let p = params(5, 8, Some(-2));
        assert_eq!(
            encode(&values, shape, &p).unwrap().bytes,
            encode(&values, shape, &p).unwrap().bytes
        );
    }

    #[test]
    fn awkward_shapes_round_trip() {
        let mut rng = Rng::new(7);
        for (m, n, rank) in [
            (1, 33, 4),
            (33, 1, 4),
            (5, 5, 5),
            (7, 3, 100),
            (1, 1, 1),
            (0, 6, 2),
        ] {
            let values: Vec<f32> = (0..m * n).map(|_| rng.normal() as f32).collect();
            let shape = Shape2::new(m, n);
            for res in [None, Some(-6)] {
                let p = params(rank, 12, res);
                let enc = encode(&values, shape, &p).unwrap();
                let dec = decode(&enc.bytes, shape, &p).unwrap();
                assert_eq!(dec, enc.reconstruction);
                if m * n == 0 {
                    continue;
                }
                // rank >= min dim: only factor quantization error remains (12 bits: tiny).
                let rel = (sq_error(&values, &dec) / sq_error(&values, &vec![0.0; m * n])).sqrt();
                assert!(rel < 5e-3, "{m}x{n} rank {rank}: rel error {rel}");
            }
        }
        // An all-zero tensor.
        let zeros = vec![0.0f32; 20 * 20];
        let p = params(3, 8, Some(0));
        let enc = encode(&zeros, Shape2::new(20, 20), &p).unwrap();
        assert!(enc.reconstruction.iter().all(|&x| x == 0.0));
        assert_eq!(
            decode(&enc.bytes, Shape2::new(20, 20), &p).unwrap(),
            enc.reconstruction
        );
    }

    #[test]
    fn bad_input_and_options_are_rejected() {
        let shape = Shape2::new(4, 4);
        let mut values = vec![1.0f32; 16];
        values[3] = f32::NAN;
        assert!(encode(&values, shape, &params(2, 8, None)).is_err());
        assert!(encode(&[1.0; 16], shape, &params(2, 1, None)).is_err());
        assert!(encode(&[1.0; 16], shape, &params(0, 8, None)).is_err());
        assert!(encode(&[1.0; 16], shape, &params(2, 8, Some(20))).is_err());
    }

    #[test]
    fn candidates_skip_vectors_and_tiny_matrices() {
        assert!(candidates(Shape2::new(1, 4096), 0).is_empty());
        assert!(candidates(Shape2::new(4096, 8), 0).is_empty());
        let c = candidates(Shape2::new(384, 1536), 9);
        assert!(!c.is_empty() && c.len() <= 10);
        for p in &c {
            p.validate().unwrap();
            assert_eq!(p.seed, 9);
            assert!(p.rank >= 1 && p.rank as usize <= 384);
        }
    }
}
