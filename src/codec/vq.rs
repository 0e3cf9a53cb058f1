//! The vector-quantization codec: a tensor read as one stream of weights (row after row) is cut into
//! vectors of `dim` consecutive weights (the last one padded with zeros), a codebook of `k` vectors
//! is fitted with k-means ([`crate::kmeans`]), and each vector is stored as the index of its nearest
//! codebook entry, entropy coded. Optionally every row is first divided by its RMS ("row scale"), so
//! that rows of very different magnitude share one codebook.
//!
//! What it does not do: product/residual quantization, codebooks shared between tensors, or
//! fine-tuning against a task loss. Non-finite weights are refused (`Error::InvalidInput`): the
//! allocator then uses another codec for that tensor.
//!
//! Section layout (little-endian), version 1:
//! ```text
//! u8   version = 1
//! u32  entries        codebook entries actually stored (min(k, vectors); 0 only for an empty tensor)
//! f32  codebook_scale max |codebook value|; entries are stored as f16 of value / codebook_scale
//! if row_scale:
//!   f32  row_scale_max  largest row RMS; row scales are stored as f16 of rms / row_scale_max
//!   u16 x rows          f16 row scales (absent for an empty tensor)
//! u16 x entries*dim   f16 codebook, entry after entry
//! u32  code_bytes     length of what follows (must be exactly the rest of the section)
//! ...                 the codes: `entropy::encode(codes, entries)`
//! ```
//! Everything but the coded indices' payload counts as side information. Weight `i` of the tensor
//! is reconstructed as `codebook[code[i / dim]][i % dim] * row_scale[i / cols]`, where both factors
//! are the f32 values decoded from the f16 fields above (so the encoder's reconstruction and the
//! decoder's agree bit for bit).

use half::f16;
use serde::{Deserialize, Serialize};

use super::{section, Encoded, Shape2};
use crate::backend::{self, Backend};
use crate::entropy;
use crate::error::{Error, Result};
use crate::kmeans::Codebook;
use crate::rng::Rng;

/// Largest codebook (12-bit indices before entropy coding).
pub const MAX_K: u32 = 1 << 12;
/// Vector lengths the codec accepts.
pub const DIMS: std::ops::RangeInclusive<u8> = 2..=8;
/// Upper bound on Lloyd iterations a `Params` may ask for.
pub const MAX_ITERS: u32 = 1000;
/// The codebook is trained on at most max(this many vectors per entry, `MIN_TRAIN_VECTORS`)
/// vectors sampled from the tensor; all vectors are then assigned to it.
const TRAIN_VECTORS_PER_ENTRY: usize = 64;
const MIN_TRAIN_VECTORS: usize = 1 << 16;
/// Lloyd iterations used by [`candidates`].
pub const DEFAULT_ITERS: u32 = 10;
const FORMAT_VERSION: u8 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Params {
    /// Weights per vector, 2..=8.
    pub dim: u8,
    /// Codebook entries asked for, 1..=4096 (fewer are stored when the tensor has fewer vectors).
    pub k: u32,
    /// Lloyd iterations at most (k-means stops earlier when the assignments settle).
    pub iters: u32,
    /// Seed of the k-means initialisation and training sample.
    pub seed: u64,
    /// Divide each row by its RMS before clustering (one f16 per row of side information).
    pub row_scale: bool,
}

impl Params {
    pub fn label(&self) -> String {
        format!(
            "vq d{} k{}{}",
            self.dim,
            self.k,
            if self.row_scale { " rs" } else { "" }
        )
    }

    /// Bits per weight of the indices before entropy coding: log2(k) / dim.
    pub fn nominal_bits_per_weight(&self) -> f64 {
        (self.k as f64).log2() / self.dim as f64
    }

    fn check(&self) -> Result<()> {
        if !DIMS.contains(&self.dim) {
            return Err(Error::option(format!(
                "vq vector dimension {} is outside {}..={}",
                self.dim,
                DIMS.start(),
                DIMS.end()
            )));
        }
        if self.k == 0 || self.k > MAX_K {
            return Err(Error::option(format!(
                "vq codebook size {} is outside 1..={MAX_K}",
                self.k
            )));
        }
        if self.iters > MAX_ITERS {
            return Err(Error::option(format!(
                "vq iterations {} exceed {MAX_ITERS}",
                self.iters
            )));
        }
        Ok(())
    }
}

/// The (dim, k) grid the allocator tries, from low to high rate (log2(k)/dim = 1 .. 6 bits per
/// weight before entropy coding).
const GRID: [(u8, u32); 8] = [
    (4, 16),
    (4, 64),
    (4, 256),
    (4, 1024),
    (4, 4096),
    (2, 256),
    (2, 1024),
    (2, 4096),
];

/// The options the allocator tries for a tensor of this shape, from low to high rate. An option is
/// left out when its codebook would not pay for itself: fewer than 4 vectors per entry, or a f16
/// codebook larger than a quarter of the indices at their nominal rate.
pub fn candidates(shape: Shape2, seed: u64) -> Vec<Params> {
    let n = shape.len();
    GRID.iter()
        .filter(|&&(dim, k)| {
            let vectors = n.div_ceil(dim as usize);
            let index_bits = vectors as f64 * (k as f64).log2();
            let codebook_bits = 16.0 * k as f64 * dim as f64;
            vectors >= 4 * k as usize && codebook_bits <= 0.25 * index_bits
        })
        .map(|&(dim, k)| Params {
            dim,
            k,
            iters: DEFAULT_ITERS,
            seed,
            row_scale: true,
        })
        .collect()
}

/// Per-row scales as stored: the f32 maximum and the f16 ratios, plus the f32 factor each row is
/// multiplied by on reconstruction.
struct RowScales {
    max: f32,
    stored: Vec<f16>,
    factors: Vec<f32>,
}

impl RowScales {
    fn fit(values: &[f32], shape: Shape2) -> RowScales {
        let rms: Vec<f32> = values
            .chunks_exact(shape.cols)
            .map(|row| {
                let sum: f64 = row.iter().map(|&v| v as f64 * v as f64).sum();
                (sum / row.len() as f64).sqrt() as f32
            })
            .collect();
        let max = rms.iter().copied().fold(0f32, f32::max);
        let stored: Vec<f16> = rms
            .iter()
            .map(|&r| {
                if max > 0.0 {
                    f16::from_f32(r / max)
                } else {
                    f16::ZERO
                }
            })
            .collect();
        let factors = stored.iter().map(|s| s.to_f32() * max).collect();
        RowScales {
            max,
            stored,
            factors,
        }
    }
}

/// The codebook as stored: entries quantized to f16 relative to the largest magnitude.
fn quantize_codebook(codebook: &Codebook) -> (f32, Vec<f16>, Codebook) {
    let scale = codebook.centroids.iter().fold(0f32, |m, v| m.max(v.abs()));
    let stored: Vec<f16> = codebook
        .centroids
        .iter()
        .map(|&v| {
            if scale > 0.0 {
                f16::from_f32(v / scale)
            } else {
                f16::ZERO
            }
        })
        .collect();
    let decoded = dequantize_codebook(scale, &stored, codebook.dim);
    (scale, stored, decoded)
}

fn dequantize_codebook(scale: f32, stored: &[f16], dim: usize) -> Codebook {
    Codebook {
        dim,
        centroids: stored.iter().map(|s| s.to_f32() * scale).collect(),
    }
}

fn reconstruct(
    codebook: &Codebook,
    codes: &[u32],
    rows: Option<&[f32]>,
    shape: Shape2,
) -> Vec<f32> {
    if shape.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<f32> = Vec::with_capacity(shape.len());
    for &c in codes {
        out.extend_from_slice(codebook.centroid(c as usize));
    }
    out.truncate(shape.len());
    if let Some(factors) = rows {
        for (row, &f) in out.chunks_exact_mut(shape.cols).zip(factors) {
            for v in row {
                *v *= f;
            }
        }
    }
    debug_assert_eq!(out.len(), shape.len());
    out
}

pub fn encode(values: &[f32], shape: Shape2, p: &Params) -> Result<Encoded> {
    backend::ready(encode_on(&Backend::Cpu, values, shape, p))
}

/// [`encode`] with the k-means fit and the final assignment on `backend`.
pub async fn encode_on(
    backend: &Backend,
    values: &[f32],
    shape: Shape2,
    p: &Params,
) -> Result<Encoded> {
    p.check()?;
    if values.len() != shape.len() {
        return Err(Error::invalid(format!(
            "{} values for a {} x {} tensor",
            values.len(),
            shape.rows,
            shape.cols
        )));
    }
    if values.iter().any(|v| !v.is_finite()) {
        return Err(Error::invalid("vq needs finite weights (found NaN or Inf)"));
    }
    let dim = p.dim as usize;
    let vectors = values.len().div_ceil(dim);
    let mut bytes = vec![FORMAT_VERSION];

    let row_scales = (p.row_scale && !values.is_empty()).then(|| RowScales::fit(values, shape));
    // The stream that is clustered: weights divided by their row's factor, zero-padded to whole vectors.
    let mut stream = Vec::with_capacity(vectors * dim);
    match &row_scales {
        Some(rs) => {
            for (row, &f) in values.chunks_exact(shape.cols).zip(&rs.factors) {
                let inv = if f > 0.0 { 1.0 / f } else { 0.0 };
                stream.extend(row.iter().map(|v| v * inv));
            }
        }
        None => stream.extend_from_slice(values),
    }
    stream.resize(vectors * dim, 0.0);

    let mut rng = Rng::new(p.seed);
    let train_cap = (TRAIN_VECTORS_PER_ENTRY * p.k as usize).max(MIN_TRAIN_VECTORS);
    let trained = if vectors > train_cap {
        let sample = sample_vectors(&stream, dim, train_cap, &mut rng);
        backend
            .kmeans_fit(&sample, dim, p.k as usize, p.iters as usize, &mut rng)
            .await?
            .codebook
    } else {
        backend
            .kmeans_fit(&stream, dim, p.k as usize, p.iters as usize, &mut rng)
            .await?
            .codebook
    };
    let (codebook_scale, stored, codebook) = quantize_codebook(&trained);
    let entries = codebook.k();
    let codes = if vectors > 0 {
        backend.kmeans_assign(&stream, dim, &codebook).await?.0
    } else {
        Vec::new()
    };

    bytes.extend_from_slice(&(entries as u32).to_le_bytes());
    bytes.extend_from_slice(&codebook_scale.to_le_bytes());
    if p.row_scale {
        let (max, stored_rows): (f32, &[f16]) = match &row_scales {
            Some(rs) => (rs.max, &rs.stored),
            None => (0.0, &[]),
        };
        bytes.extend_from_slice(&max.to_le_bytes());
        for s in stored_rows {
            bytes.extend_from_slice(&s.to_le_bytes());
        }
    }
    for s in &stored {
        bytes.extend_from_slice(&s.to_le_bytes());
    }
    let coded = entropy::encode(&codes, entries.max(1) as u32);
    let code_bytes = u32::try_from(coded.bytes.len())
        .map_err(|_| Error::invalid("vq code stream larger than 4 GiB"))?;
    bytes.extend_from_slice(&code_bytes.to_le_bytes());
    let side_bytes = bytes.len() + coded.table_bytes;
    bytes.extend_from_slice(&coded.bytes);

    let reconstruction = reconstruct(
        &codebook,
        &codes,
        row_scales.as_ref().map(|r| r.factors.as_slice()),
        shape,
    );
    Ok(Encoded {
        bytes,
        side_bytes,
        reconstruction,
    })
}

/// `count` vectors drawn uniformly without replacement, kept in their original order.
fn sample_vectors(stream: &[f32], dim: usize, count: usize, rng: &mut Rng) -> Vec<f32> {
    let n = stream.len() / dim;
    let mut order: Vec<u32> = (0..n as u32).collect();
    for i in 0..count {
        let j = i + rng.below((n - i) as u64) as usize;
        order.swap(i, j);
    }
    let mut chosen = order[..count].to_vec();
    chosen.sort_unstable();
    let mut out = Vec::with_capacity(count * dim);
    for i in chosen {
        out.extend_from_slice(&stream[i as usize * dim..(i as usize + 1) * dim]);
    }
    out
}

/// vq's fields, read through `codec::section` with the field named in the error when the section
/// ends early.
trait Fields<'a> {
    fn u32_named(&mut self, what: &str) -> Result<u32>;
    fn f32_named(&mut self, what: &str) -> Result<f32>;
    fn ratios(&mut self, count: usize, what: &str) -> Result<Vec<f16>>;
}

impl<'a> Fields<'a> for section::Reader<'a> {
    fn u32_named(&mut self, what: &str) -> Result<u32> {
        let b = self.take_named(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn f32_named(&mut self, what: &str) -> Result<f32> {
        Ok(f32::from_bits(self.u32_named(what)?))
    }

    /// `count` f16 values, each finite and of magnitude <= 1 (they are ratios to a stored maximum).
    fn ratios(&mut self, count: usize, what: &str) -> Result<Vec<f16>> {
        let len = count
            .checked_mul(2)
            .ok_or_else(|| Error::corrupt(format!("vq {what} size overflows")))?;
        let raw = self.take_named(len, what)?;
        raw.chunks_exact(2)
            .map(|c| {
                let v = f16::from_le_bytes([c[0], c[1]]);
                if v.is_finite() && v.to_f32().abs() <= 1.0 {
                    Ok(v)
                } else {
                    Err(Error::corrupt(format!(
                        "vq {what} holds an out-of-range value"
                    )))
                }
            })
            .collect()
    }
}

fn check_scale(v: f32, what: &str) -> Result<f32> {
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(Error::corrupt(format!("vq {what} is {v}")))
    }
}

pub fn decode(bytes: &[u8], shape: Shape2, p: &Params) -> Result<Vec<f32>> {
    p.check()
        .map_err(|e| Error::corrupt(format!("bad vq parameters: {e}")))?;
    let dim = p.dim as usize;
    let vectors = shape.len().div_ceil(dim);
    let mut r = section::Reader::new(bytes, "vq");
    let version = r.take_named(1, "version")?[0];
    if version != FORMAT_VERSION {
        return Err(Error::unsupported(format!(
            "vq section version {version} (this build reads {FORMAT_VERSION})"
        )));
    }
    let entries = r.u32_named("codebook size")? as usize;
    let expected_entries = (p.k as usize).min(vectors);
    if entries != expected_entries {
        return Err(Error::corrupt(format!(
            "vq codebook has {entries} entries, expected {expected_entries}"
        )));
    }
    let codebook_scale = check_scale(r.f32_named("codebook scale")?, "codebook scale")?;
    let row_factors = if p.row_scale {
        let max = check_scale(r.f32_named("row scale maximum")?, "row scale maximum")?;
        let count = if shape.is_empty() { 0 } else { shape.rows };
        let stored = r.ratios(count, "row scales")?;
        Some(
            stored
                .iter()
                .map(|s| s.to_f32() * max)
                .collect::<Vec<f32>>(),
        )
    } else {
        None
    };
    let stored = r.ratios(entries * dim, "codebook")?;
    let codebook = dequantize_codebook(codebook_scale, &stored, dim);
    let code_bytes = r.u32_named("code length")? as usize;
    if code_bytes != r.remaining() {
        return Err(Error::corrupt(format!(
            "vq code stream is {} bytes, the section says {code_bytes}",
            r.remaining()
        )));
    }
    let codes = entropy::decode(r.rest(), vectors, entries.max(1) as u32)?;
    if codes.len() != vectors {
        return Err(Error::corrupt("vq code count does not match the shape"));
    }
    Ok(reconstruct(
        &codebook,
        &codes,
        row_factors.as_deref(),
        shape,
    ))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) fn params(dim: u8, k: u32, row_scale: bool) -> Params {
        Params {
            dim,
            k,
            iters: 8,
            seed: 7,
            row_scale,
        }
    }

    /// Weights with rows of different magnitude, like a real layer.
    pub(crate) fn weights(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        let mut out = Vec::with_capacity(rows * cols);
        for r in 0..rows {
            let scale = 0.02 * (1.0 + 4.0 * (r % 7) as f64 / 6.0);
            for _ in 0..cols {
                out.push((rng.normal() * scale) as f32);
            }
        }
        out
    }

    fn mse(a: &[f32], b: &[f32]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| ((x - y) as f64).powi(2))
            .sum::<f64>()
            / a.len() as f64
    }

    #[test]
    fn round_trip_is_bit_exact() {
        for (rows, cols) in [
            (64usize, 96usize),
            (1, 1000),
            (1000, 1),
            (33, 37),
            (5, 3),
            (1, 1),
        ] {
            let shape = Shape2::new(rows, cols);
            let w = weights(rows, cols, 1);
            for p in [
                params(4, 16, true),
                params(3, 64, false),
                params(2, 256, true),
                params(8, 5, false),
            ] {
                let enc = encode(&w, shape, &p).unwrap();
                assert_eq!(enc.reconstruction.len(), w.len());
                assert!(enc.side_bytes <= enc.bytes.len());
                let dec = decode(&enc.bytes, shape, &p).unwrap();
                assert_eq!(
                    dec.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    enc.reconstruction
                        .iter()
                        .map(|v| v.to_bits())
                        .collect::<Vec<_>>(),
                    "{rows} x {cols} {}",
                    p.label()
                );
            }
        }
    }

    #[test]
    fn empty_tensor_round_trips() {
        for shape in [Shape2::new(0, 5), Shape2::new(4, 0)] {
            let p = params(4, 16, true);
            let enc = encode(&[], shape, &p).unwrap();
            assert!(decode(&enc.bytes, shape, &p).unwrap().is_empty());
        }
    }

    #[test]
    fn more_entries_than_vectors_is_lossless_up_to_f16() {
        let shape = Shape2::new(3, 4);
        let w = weights(3, 4, 2);
        let p = params(2, 4096, false);
        let enc = encode(&w, shape, &p).unwrap();
        // 6 vectors, 6 entries: each weight is its own codebook value, rounded to f16.
        for (a, b) in w.iter().zip(&enc.reconstruction) {
            assert!((a - b).abs() <= 1e-3 * a.abs().max(1e-3));
        }
        assert_eq!(decode(&enc.bytes, shape, &p).unwrap(), enc.reconstruction);
    }

    #[test]
    fn error_falls_with_codebook_size_and_row_scale_helps() {
        let shape = Shape2::new(128, 256);
        let w = weights(128, 256, 3);
        let energy = mse(&w, &vec![0.0; w.len()]);
        let mut last = f64::INFINITY;
        for k in [16u32, 64, 256] {
            let enc = encode(&w, shape, &params(4, k, true)).unwrap();
            let rel = mse(&w, &enc.reconstruction) / energy;
            assert!(rel < last, "k {k}: relative MSE {rel} >= {last}");
            last = rel;
        }
        // At 2 bits per weight (d4, k256) a Gaussian source cannot beat D(R) = 2^-4 = 0.0625 (on
        // average; this is in-sample, 32 vectors per entry, so the bound is a sanity check), and a
        // trained VQ of dimension 4 should land within a factor 2 of it (measured: 0.086).
        assert!(last > 0.0625 && last < 0.125, "relative MSE {last}");
        let plain = encode(&w, shape, &params(4, 256, false)).unwrap();
        assert!(mse(&w, &plain.reconstruction) / energy > last);
    }

    #[test]
    fn deterministic_for_a_seed() {
        let shape = Shape2::new(40, 50);
        let w = weights(40, 50, 4);
        let p = params(4, 64, true);
        assert_eq!(
            encode(&w, shape, &p).unwrap().bytes,
            encode(&w, shape, &p).unwrap().bytes
        );
    }

    #[test]
    fn refuses_bad_params_and_values() {
        let shape = Shape2::new(2, 4);
        let w = vec![0.5f32; 8];
        assert!(encode(&w, shape, &params(1, 4, false)).is_err());
        assert!(encode(&w, shape, &params(9, 4, false)).is_err());
        assert!(encode(&w, shape, &params(2, 0, false)).is_err());
        assert!(encode(&w, shape, &params(2, MAX_K + 1, false)).is_err());
        let mut nan = w.clone();
        nan[3] = f32::NAN;
        assert!(encode(&nan, shape, &params(2, 4, false)).is_err());
    }

    #[test]
    fn candidates_span_rates_and_skip_small_tensors() {
        assert!(candidates(Shape2::new(1, 384), 0).is_empty());
        let big = candidates(Shape2::new(1536, 384), 3);
        assert!(big.len() >= 6 && big.len() <= 8, "{} candidates", big.len());
        for w in big.windows(2) {
            assert!(w[0].nominal_bits_per_weight() < w[1].nominal_bits_per_weight());
        }
        assert!(big.iter().all(|p| p.check().is_ok() && p.seed == 3));
        let json = serde_json::to_string(&big[0]).unwrap();
        assert_eq!(serde_json::from_str::<Params>(&json).unwrap(), big[0]);
    }
}
