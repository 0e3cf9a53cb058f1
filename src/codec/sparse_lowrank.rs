//! The sparse plus low-rank codec (after HSS, hierarchically semi-separable compression; docs/METHODS.md): `W ~= L + S` with `L` a low-rank
//! section of the [`lowrank`] codec (its factors quantized and entropy coded exactly as there) and
//! `S` a few entries, their positions and values coded and counted. With no low-rank part it is a
//! plain sparse codec (the baseline the tests compare with).
//!
//! Where the sparse entries go is the encoder's choice (`Params::selection`), the decoder only adds
//! them: `Magnitude` is HSS's order (the largest `|W|` leave first, the low rank fits what remains);
//! `Residual` fits the low rank to all of `W` and then corrects its largest errors. Either way a
//! sparse entry stores `W - L` at its position, so the reconstruction there is exact up to the
//! value quantizer. The hierarchical off-diagonal blocks of HSS are not implemented: one global
//! low-rank part (see docs/METHODS.md).
//!
//! Section layout (little-endian; everything is side information except the three streams'
//! payloads):
//! ```text
//! u8   format version (1)
//! u8   flags: bit 0 = low-rank part present (must agree with Params)
//! u32  rows, u32 cols (must equal the tensor's shape)
//! u32  count of sparse entries (must equal the count Params give for this shape)
//! f32  value step (> 0, or 0 when the tensor is all zeros)
//! u32  largest |q| of the value integers (alphabet 2*max+1, zigzag mapped)
//! u32  length, stream: gap classes, entropy coded (gap = position - previous position, the first
//!      counted from -1, so >= 1; class c = bit length of the gap, 1..=64)
//! u32  length, bits: each gap's c-1 low bits, MSB first, padded to a byte
//! u32  length, stream: value integers, entropy coded, in position order
//! [low-rank part only] the rest: a lowrank section (see lowrank.rs) for Params::lowrank
//! ```
//! Positions are row-major linear indices. The reconstruction is the low-rank part's (bit-exact
//! by its own contract) plus `q * step` at each position, so every platform decodes the same bits.

use super::section;
use serde::{Deserialize, Serialize};

use super::{lowrank, Encoded, Shape2};
use crate::entropy;
use crate::error::{Error, Result};

const FORMAT_VERSION: u8 = 1;
const FLAG_LOWRANK: u8 = 1;
/// Value steps are `rms(W) * 2^s` with `s` in this range (as the lowrank residual's).
const VALUE_STEP_LOG2: std::ops::RangeInclusive<i8> = -12..=4;
/// The value integers are clamped to this magnitude, so the alphabet fits the entropy coder.
const VALUE_MAX_ABS: u32 = (entropy::MAX_ALPHABET - 2) / 2;
/// Gap classes: bit lengths of a u64 gap.
const GAP_CLASSES: u32 = 65;

/// Where the sparse entries are taken from (an encoder choice; the decoder does not depend on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Selection {
    /// The largest `|W|`, removed before the low-rank fit (HSS's order).
    Magnitude,
    /// The largest `|W - L|` after fitting the low rank to the whole of `W`.
    Residual,
}

/// Options of the sparse plus low-rank codec (stored in the container header).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Params {
    /// The low-rank part (`None`: plain sparse, every other entry decodes to 0).
    pub lowrank: Option<lowrank::Params>,
    /// Sparse entries per 1000 entries of the tensor (0..=1000), rounded down.
    pub per_mille: u16,
    pub selection: Selection,
    /// Sparse values are quantized with step `rms(W) * 2^value_step_log2`.
    pub value_step_log2: i8,
}

impl Params {
    pub fn label(&self) -> String {
        let low = match &self.lowrank {
            Some(l) => format!("r{} {}b", l.rank, l.factor_bits),
            None => "r0".to_string(),
        };
        let sel = match self.selection {
            Selection::Magnitude => "mag",
            Selection::Residual => "res",
        };
        format!(
            "sparse-lowrank {low} +{}.{}% {sel} 2^{}",
            self.per_mille / 10,
            self.per_mille % 10,
            self.value_step_log2
        )
    }

    fn validate(&self) -> Result<()> {
        if self.per_mille > 1000 {
            return Err(Error::option(format!(
                "sparse-lowrank per_mille {} above 1000",
                self.per_mille
            )));
        }
        if !VALUE_STEP_LOG2.contains(&self.value_step_log2) {
            return Err(Error::option(format!(
                "sparse-lowrank value_step_log2 {} outside {VALUE_STEP_LOG2:?}",
                self.value_step_log2
            )));
        }
        if self.lowrank.is_none() && self.per_mille == 0 {
            return Err(Error::option(
                "sparse-lowrank with neither a low-rank nor a sparse part",
            ));
        }
        Ok(())
    }

    /// How many sparse entries a tensor of `len` entries gets.
    fn count(&self, len: usize) -> usize {
        (len as u128 * self.per_mille as u128 / 1000) as usize
    }
}

/// The options `--method auto` tries (and `--method sparse-lowrank` by default): empty where low
/// rank does not apply (the same rule as [`lowrank::candidates`]). Residual selection only, because
/// its low-rank parts are exactly the lowrank candidates' (the analysis reuses their encodings, so
/// these options cost no SVD); magnitude selection was not compared on MiniLM (docs/METHODS.md).
pub fn candidates(shape: Shape2, seed: u64) -> Vec<Params> {
    let Some(base) = lowrank::candidates(shape, seed).into_iter().next() else {
        return Vec::new();
    };
    let short = shape.rows.min(shape.cols);
    let mut out = Vec::new();
    for divisor in [16, 8, 4] {
        for per_mille in [10, 40] {
            out.push(Params {
                lowrank: Some(lowrank::Params {
                    rank: (short / divisor).max(1) as u32,
                    factor_bits: 8,
                    residual_step_log2: None,
                    ..base.clone()
                }),
                per_mille,
                selection: Selection::Residual,
                value_step_log2: -3,
            });
        }
    }
    out
}

pub fn encode(values: &[f32], shape: Shape2, p: &Params) -> Result<Encoded> {
    encode_many(values, shape, std::slice::from_ref(p), &[])
        .pop()
        .expect("one option, one result")
}

/// Encodes `values` with each option; with residual selection the low-rank part depends only on
/// its own parameters, so options sharing them share one low-rank encoding (and its SVD), and
/// `known` lowrank encodings of these same `values` (the analysis has them already) are reused.
/// Each result is byte-identical to `encode(values, shape, option)`.
pub fn encode_many(
    values: &[f32],
    shape: Shape2,
    options: &[Params],
    known: &[(&lowrank::Params, &Encoded)],
) -> Vec<Result<Encoded>> {
    let mut shared: Vec<(lowrank::Params, Result<Encoded>)> = Vec::new();
    options
        .iter()
        .map(|p| {
            check_input(values, shape, p)?;
            match (&p.lowrank, p.selection) {
                (Some(l), Selection::Residual) => {
                    if let Some((_, low)) = known.iter().find(|(k, _)| *k == l) {
                        return finish(values, shape, p, low);
                    }
                    let index = match shared.iter().position(|(k, _)| k == l) {
                        Some(i) => i,
                        None => {
                            shared.push((l.clone(), lowrank::encode(values, shape, l)));
                            shared.len() - 1
                        }
                    };
                    match &shared[index].1 {
                        Ok(low) => finish(values, shape, p, low),
                        Err(e) => Err(Error::unsupported(format!(
                            "sparse-lowrank: low-rank part failed: {e}"
                        ))),
                    }
                }
                (Some(l), Selection::Magnitude) => {
                    let positions = largest(values, None, p.count(values.len()));
                    let mut rest = values.to_vec();
                    for &i in &positions {
                        rest[i] = 0.0;
                    }
                    let low = lowrank::encode(&rest, shape, l)?;
                    assemble(values, shape, p, Some(&low), positions)
                }
                (None, _) => {
                    let positions = largest(values, None, p.count(values.len()));
                    assemble(values, shape, p, None, positions)
                }
            }
        })
        .collect()
}

fn finish(values: &[f32], shape: Shape2, p: &Params, low: &Encoded) -> Result<Encoded> {
    let positions = largest(values, Some(&low.reconstruction), p.count(values.len()));
    assemble(values, shape, p, Some(low), positions)
}

fn check_input(values: &[f32], shape: Shape2, p: &Params) -> Result<()> {
    p.validate()?;
    if values.len() != shape.len() {
        return Err(Error::invalid(format!(
            "sparse-lowrank: {} values for shape {} x {}",
            values.len(),
            shape.rows,
            shape.cols
        )));
    }
    if values.iter().any(|x| !x.is_finite()) {
        return Err(Error::invalid(
            "sparse-lowrank: tensor holds NaN or infinite values",
        ));
    }
    Ok(())
}

/// The `count` positions with the largest `|values - base|` (base 0 when absent), ascending.
/// Ties go to the lower position, so the choice is deterministic.
fn largest(values: &[f32], base: Option<&[f32]>, count: usize) -> Vec<usize> {
    let size = |i: usize| (values[i] - base.map_or(0.0, |b| b[i])).abs();
    let mut order: Vec<usize> = (0..values.len()).collect();
    if count == 0 {
        return Vec::new();
    }
    if count < order.len() {
        order.select_nth_unstable_by(count - 1, |&a, &b| {
            size(b).total_cmp(&size(a)).then(a.cmp(&b))
        });
        order.truncate(count);
    }
    order.sort_unstable();
    order
}

fn assemble(
    values: &[f32],
    shape: Shape2,
    p: &Params,
    low: Option<&Encoded>,
    positions: Vec<usize>,
) -> Result<Encoded> {
    let mut reconstruction = match low {
        Some(l) => l.reconstruction.clone(),
        None => vec![0.0f32; values.len()],
    };
    let mean_square =
        values.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>() / values.len().max(1) as f64;
    let step = (mean_square.sqrt() * 2f64.powi(p.value_step_log2 as i32)) as f32;
    let limit = VALUE_MAX_ABS as f32;
    let integers: Vec<i32> = positions
        .iter()
        .map(|&i| {
            if step > 0.0 && step.is_finite() {
                ((values[i] - reconstruction[i]) / step)
                    .round()
                    .clamp(-limit, limit) as i32
            } else {
                0
            }
        })
        .collect();
    for (&i, &q) in positions.iter().zip(&integers) {
        reconstruction[i] += q as f32 * step;
    }
    let max_abs = integers.iter().map(|q| q.unsigned_abs()).max().unwrap_or(0);

    let mut bytes = vec![FORMAT_VERSION, if low.is_some() { FLAG_LOWRANK } else { 0 }];
    for dim in [shape.rows, shape.cols, positions.len()] {
        let dim = u32::try_from(dim)
            .map_err(|_| Error::unsupported("sparse-lowrank: a count above 2^32 - 1"))?;
        bytes.extend_from_slice(&dim.to_le_bytes());
    }
    bytes.extend_from_slice(&step.to_le_bytes());
    bytes.extend_from_slice(&max_abs.to_le_bytes());
    let (classes, bits) = gap_code(&positions);
    let coded_classes = entropy::encode(&classes, GAP_CLASSES);
    section::push_stream(&mut bytes, &coded_classes.bytes, "sparse-lowrank")?;
    section::push_stream(&mut bytes, &bits, "sparse-lowrank")?;
    let symbols: Vec<u32> = integers.iter().map(|&q| zigzag(q)).collect();
    let coded_values = entropy::encode(&symbols, 2 * max_abs + 1);
    section::push_stream(&mut bytes, &coded_values.bytes, "sparse-lowrank")?;
    let mut side_bytes = 2 + 12 + 8 + 12 + coded_classes.table_bytes + coded_values.table_bytes;
    if let Some(l) = low {
        bytes.extend_from_slice(&l.bytes);
        side_bytes += l.side_bytes;
    }
    Ok(Encoded {
        bytes,
        side_bytes,
        reconstruction,
    })
}

/// Gap classes and the packed low bits of the gaps between ascending positions.
fn gap_code(positions: &[usize]) -> (Vec<u32>, Vec<u8>) {
    let mut classes = Vec::with_capacity(positions.len());
    let mut bits = BitWriter::default();
    let mut previous: Option<usize> = None;
    for &pos in positions {
        let gap = (pos as u64 + 1) - previous.map_or(0, |q| q as u64 + 1);
        let class = 64 - gap.leading_zeros();
        classes.push(class);
        bits.put(gap, class - 1);
        previous = Some(pos);
    }
    (classes, bits.finish())
}

pub fn decode(bytes: &[u8], shape: Shape2, p: &Params) -> Result<Vec<f32>> {
    p.validate()
        .map_err(|e| Error::corrupt(format!("sparse-lowrank parameters in the header: {e}")))?;
    let len = shape
        .rows
        .checked_mul(shape.cols)
        .ok_or_else(|| Error::corrupt("sparse-lowrank: tensor shape overflows"))?;
    let mut reader = section::Reader::new(bytes, "sparse-lowrank");
    if reader.u8()? != FORMAT_VERSION {
        return Err(Error::unsupported(
            "sparse-lowrank section of an unknown format version",
        ));
    }
    if reader.u8()? != p.lowrank.as_ref().map_or(0, |_| FLAG_LOWRANK) {
        return Err(Error::corrupt(
            "sparse-lowrank flags disagree with the header's parameters",
        ));
    }
    let (rows, cols) = (reader.u32()? as usize, reader.u32()? as usize);
    if (rows, cols) != (shape.rows, shape.cols) {
        return Err(Error::corrupt(format!(
            "sparse-lowrank section is for a {rows} x {cols} tensor, not {} x {}",
            shape.rows, shape.cols
        )));
    }
    let count = reader.u32()? as usize;
    if count != p.count(len) {
        return Err(Error::corrupt(format!(
            "sparse-lowrank holds {count} entries, its parameters say {}",
            p.count(len)
        )));
    }
    let step = reader.f32()?;
    if !(step.is_finite() && step >= 0.0) {
        return Err(Error::corrupt(
            "sparse-lowrank value step is negative or not finite",
        ));
    }
    let max_abs = reader.u32()?;
    if max_abs > VALUE_MAX_ABS {
        return Err(Error::corrupt("sparse-lowrank value alphabet too large"));
    }
    let classes = entropy::decode(reader.stream()?, count, GAP_CLASSES)?;
    let mut bits = BitReader::new(reader.stream()?);
    let mut positions = Vec::with_capacity(count);
    let mut next = 0u64; // the lowest position the next entry may take
    for &class in &classes {
        if class == 0 {
            return Err(Error::corrupt("sparse-lowrank gap of class 0"));
        }
        let gap = (1u64 << (class - 1)) | bits.get(class - 1)?;
        let pos = next
            .checked_add(gap - 1)
            .filter(|&q| q < len as u64)
            .ok_or_else(|| Error::corrupt("sparse-lowrank position outside the tensor"))?;
        positions.push(pos as usize);
        next = pos + 1;
    }
    if !bits.exhausted() {
        return Err(Error::corrupt(
            "sparse-lowrank gap bits have trailing bytes",
        ));
    }
    let symbols = entropy::decode(reader.stream()?, count, 2 * max_abs + 1)?;
    let rest = reader.rest();
    let mut out = match &p.lowrank {
        Some(l) => lowrank::decode(rest, shape, l)?,
        None if rest.is_empty() => vec![0.0f32; len],
        None => return Err(Error::corrupt("sparse-lowrank section has trailing bytes")),
    };
    for (&i, &s) in positions.iter().zip(&symbols) {
        out[i] += unzigzag(s) as f32 * step;
    }
    Ok(out)
}

fn zigzag(q: i32) -> u32 {
    ((q << 1) ^ (q >> 31)) as u32
}

fn unzigzag(s: u32) -> i32 {
    ((s >> 1) as i32) ^ -((s & 1) as i32)
}

/// MSB-first bit packing.
#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    acc: u64,
    filled: u32,
}

impl BitWriter {
    /// The low `n` (< 64) bits of `v`.
    fn put(&mut self, v: u64, n: u32) {
        for k in (0..n).rev() {
            self.acc = (self.acc << 1) | ((v >> k) & 1);
            self.filled += 1;
            if self.filled == 8 {
                self.bytes.push(self.acc as u8);
                (self.acc, self.filled) = (0, 0);
            }
        }
    }

    fn finish(mut self) -> Vec<u8> {
        if self.filled > 0 {
            self.bytes.push((self.acc << (8 - self.filled)) as u8);
        }
        self.bytes
    }
}

struct BitReader<'a> {
    bytes: &'a [u8],
    bit: usize,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        BitReader { bytes, bit: 0 }
    }

    fn get(&mut self, n: u32) -> Result<u64> {
        let mut v = 0u64;
        for _ in 0..n {
            let byte = self
                .bytes
                .get(self.bit / 8)
                .ok_or_else(|| Error::corrupt("sparse-lowrank gap bits end early"))?;
            v = (v << 1) | ((byte >> (7 - self.bit % 8)) & 1) as u64;
            self.bit += 1;
        }
        Ok(v)
    }

    /// Whether every byte was used (only the last one's padding left).
    fn exhausted(&self) -> bool {
        self.bit.div_ceil(8) == self.bytes.len()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::rng::Rng;

    pub(crate) fn lr(rank: u32, factor_bits: u8) -> lowrank::Params {
        lowrank::Params {
            rank,
            oversample: 10,
            power_iters: 2,
            factor_bits,
            residual_step_log2: None,
            seed: 3,
        }
    }

    pub(crate) fn params(
        low: Option<lowrank::Params>,
        per_mille: u16,
        selection: Selection,
        step: i8,
    ) -> Params {
        Params {
            lowrank: low,
            per_mille,
            selection,
            value_step_log2: step,
        }
    }

    fn sq_error(a: &[f32], b: &[f32]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| ((x - y) as f64).powi(2))
            .sum()
    }

    /// Rank-`rank` Gaussian product plus `spikes` per mille of entries set to +-`spike`.
    pub(crate) fn low_rank_plus_spikes(
        m: usize,
        n: usize,
        rank: usize,
        spikes: u64,
        spike: f32,
        seed: u64,
    ) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        let a: Vec<f32> = (0..m * rank).map(|_| rng.normal() as f32).collect();
        let b: Vec<f32> = (0..rank * n).map(|_| rng.normal() as f32).collect();
        let mut w = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                w[i * n + j] = (0..rank)
                    .map(|k| a[i * rank + k] * b[k * n + j])
                    .sum::<f32>()
                    / (rank as f32).sqrt();
            }
        }
        for x in &mut w {
            if rng.below(1000) < spikes {
                *x += spike * rng.sign();
            }
        }
        w
    }

    #[test]
    fn round_trip_is_bit_exact() {
        let values = low_rank_plus_spikes(48, 40, 3, 20, 8.0, 1);
        let shape = Shape2::new(48, 40);
        for p in [
            params(Some(lr(4, 8)), 20, Selection::Residual, -3),
            params(Some(lr(4, 6)), 30, Selection::Magnitude, -5),
            params(None, 50, Selection::Magnitude, -2),
            params(Some(lr(60, 8)), 0, Selection::Residual, 0),
            params(Some(lr(2, 8)), 1000, Selection::Residual, -4),
        ] {
            let enc = encode(&values, shape, &p).unwrap();
            let dec = decode(&enc.bytes, shape, &p).unwrap();
            assert_eq!(dec, enc.reconstruction, "{}", p.label());
            assert!(enc.side_bytes < enc.bytes.len());
            // Same input, same bytes.
            assert_eq!(encode(&values, shape, &p).unwrap().bytes, enc.bytes);
        }
    }

    #[test]
    fn encode_many_equals_encode() {
        let values = low_rank_plus_spikes(40, 36, 2, 10, 5.0, 2);
        let shape = Shape2::new(40, 36);
        let mut options = candidates(Shape2::new(40, 36), 4);
        options.push(params(Some(lr(4, 8)), 20, Selection::Magnitude, -3));
        let many = encode_many(&values, shape, &options, &[]);
        for (p, e) in options.iter().zip(many) {
            assert_eq!(e.unwrap().bytes, encode(&values, shape, p).unwrap().bytes);
        }
        // Reusing the analysis's lowrank encodings gives the same bytes.
        let lows: Vec<lowrank::Params> = options.iter().filter_map(|p| p.lowrank.clone()).collect();
        let encoded: Vec<Encoded> = lows
            .iter()
            .map(|l| lowrank::encode(&values, shape, l).unwrap())
            .collect();
        let known: Vec<(&lowrank::Params, &Encoded)> = lows.iter().zip(&encoded).collect();
        let reused = encode_many(&values, shape, &options, &known);
        for (p, e) in options.iter().zip(reused) {
            assert_eq!(e.unwrap().bytes, encode(&values, shape, p).unwrap().bytes);
        }
    }

    /// The issue's check: on a low-rank matrix with sparse spikes, sparse plus low rank has a lower
    /// error (by at least 20 %) than the best plain truncated SVD and the best plain sparse coding of
    /// no more bytes.
    #[test]
    fn beats_plain_svd_and_plain_sparse_at_equal_size() {
        let (m, n) = (96, 80);
        let shape = Shape2::new(m, n);
        let values = low_rank_plus_spikes(m, n, 4, 20, 10.0, 3);
        let ours = encode(
            &values,
            shape,
            &params(Some(lr(4, 8)), 20, Selection::Magnitude, -4),
        )
        .unwrap();
        let budget = ours.bytes.len();
        let our_error = sq_error(&values, &ours.reconstruction);
        let mut best_svd = f64::INFINITY;
        for rank in 1..=40 {
            for bits in [4, 6, 8, 10] {
                let e = lowrank::encode(&values, shape, &lr(rank, bits)).unwrap();
                if e.bytes.len() <= budget {
                    best_svd = best_svd.min(sq_error(&values, &e.reconstruction));
                }
            }
        }
        let mut best_sparse = f64::INFINITY;
        for per_mille in (5..=400).step_by(5) {
            for step in [-8, -6, -4, -2, 0] {
                let p = params(None, per_mille, Selection::Magnitude, step);
                let e = encode(&values, shape, &p).unwrap();
                if e.bytes.len() <= budget {
                    best_sparse = best_sparse.min(sq_error(&values, &e.reconstruction));
                }
            }
        }
        assert!(best_svd.is_finite() && best_sparse.is_finite());
        assert!(
            our_error < 0.8 * best_svd && our_error < 0.8 * best_sparse,
            "{budget} bytes: sparse+lowrank {our_error}, svd {best_svd}, sparse {best_sparse}"
        );
    }

    #[test]
    fn bad_options_are_rejected() {
        let values = vec![1.0f32; 64];
        let shape = Shape2::new(8, 8);
        assert!(encode(&values, shape, &params(None, 0, Selection::Residual, 0)).is_err());
        assert!(encode(&values, shape, &params(None, 1001, Selection::Residual, 0)).is_err());
        assert!(encode(&values, shape, &params(None, 10, Selection::Residual, 9)).is_err());
        let mut nan = values.clone();
        nan[3] = f32::NAN;
        assert!(encode(&nan, shape, &params(None, 10, Selection::Residual, 0)).is_err());
        assert!(encode(
            &values[1..],
            shape,
            &params(None, 10, Selection::Residual, 0)
        )
        .is_err());
    }

    #[test]
    fn candidates_skip_vectors_and_tiny_matrices() {
        assert!(candidates(Shape2::new(1, 4096), 0).is_empty());
        assert!(candidates(Shape2::new(4096, 8), 0).is_empty());
        assert!(!candidates(Shape2::new(384, 1536), 0).is_empty());
    }
}
