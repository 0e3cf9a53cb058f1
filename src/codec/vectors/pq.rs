//! Product quantization of a vector dataset (Jégou, Douze & Schmid 2011): the `dim` coordinates are
//! cut into `m` contiguous sub-spaces (sizes differ by at most one when `m` does not divide `dim`),
//! `k` centroids are fitted per sub-space by k-means on the backend (the WGSL assignment and update
//! kernels on a GPU, [`crate::kmeans`] on the CPU), and each vector is stored as its
//! `m` nearest-centroid indices. The codebooks are stored with `codebook_bits` per value (a uniform
//! grid between each sub-space's smallest and largest value) and counted; the indices are stored at
//! fixed width or entropy coded (one model per sub-space), whichever is smaller.
//!
//! What it does not do: a rotation before the split (OPQ), residual or additive quantization.
//!
//! Section layout (little-endian), version 1:
//! ```text
//! u8   version = 1
//! var  entries        centroids per sub-space actually stored (min(k, n); 0 only when n = 0)
//! f32 x 2m            per sub-space the codebook's lowest and highest value
//! ...                 the codebooks, sub-space after sub-space, entry after entry, `codebook_bits`
//!                     bits per value, bit-packed LSB first, padded to a byte
//! u8   code_mode      0: indices bit-packed at ceil(log2 entries) bits; 1: entropy coded
//! ...                 the indices, vector after vector (context = sub-space when entropy coded)
//! ```
//! Payload: the index bits (without the entropy tables); the rest is side information.

use serde::{Deserialize, Serialize};

use super::{pack_bits, reader, unpack_bits};
use crate::backend::{self, Backend};
use crate::codec::{put_varint, Encoded, Shape2};
use crate::entropy;
use crate::error::{Error, Result};
use crate::kmeans::Codebook;
use crate::rng::Rng;

const FORMAT_VERSION: u8 = 1;
/// Largest number of centroids per sub-space.
pub const MAX_K: u32 = 1 << 12;
/// Upper bound on Lloyd iterations a `Params` may ask for.
pub const MAX_ITERS: u32 = 1000;
/// Bits per codebook value the codec accepts.
pub const CODEBOOK_BITS: std::ops::RangeInclusive<u8> = 4..=16;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Params {
    /// Sub-spaces, 1..=dim.
    pub m: u32,
    /// Centroids per sub-space asked for, 2..=4096.
    pub k: u32,
    pub iters: u32,
    pub seed: u64,
    pub codebook_bits: u8,
}

impl Params {
    pub fn label(&self) -> String {
        format!("pq m{} k{} cb{}b", self.m, self.k, self.codebook_bits)
    }

    fn check(&self, dim: usize) -> Result<()> {
        if self.m == 0 || self.m as usize > dim.max(1) {
            return Err(Error::corrupt(format!(
                "pq sub-spaces {} for dimension {dim}",
                self.m
            )));
        }
        if !(2..=MAX_K).contains(&self.k) || self.iters > MAX_ITERS {
            return Err(Error::corrupt(format!(
                "pq k {} or iterations {} out of range",
                self.k, self.iters
            )));
        }
        if !CODEBOOK_BITS.contains(&self.codebook_bits) {
            return Err(Error::corrupt(format!(
                "pq codebook bits {} outside {CODEBOOK_BITS:?}",
                self.codebook_bits
            )));
        }
        Ok(())
    }
}

/// The coordinates `[start, end)` of sub-space `j` of `m` over `dim` coordinates.
fn subspace(j: usize, m: usize, dim: usize) -> (usize, usize) {
    (j * dim / m, (j + 1) * dim / m)
}

/// Bits of a fixed-width index for `entries` centroids.
fn index_bits(entries: usize) -> u32 {
    usize::BITS - entries.saturating_sub(1).leading_zeros()
}

/// What the encoder measured besides the section: per coordinate, the index bits of its sub-space
/// spread evenly over the sub-space's coordinates (bits per vector; entropy estimate).
pub struct Extras {
    pub coordinate_bits: Vec<f64>,
}

/// [`encode_on`] on the CPU backend.
pub fn encode(values: &[f32], shape: Shape2, p: &Params) -> Result<(Encoded, Extras)> {
    backend::ready(encode_on(&Backend::Cpu, values, shape, p))
}

/// Encodes the rows of `values`, with the k-means of every sub-space on `backend`. On the GPU the
/// centroids can differ from the CPU's in their last bits (sums in another order), so the bytes
/// can differ; the CPU backend gives the same bytes on every run.
pub async fn encode_on(
    backend: &Backend,
    values: &[f32],
    shape: Shape2,
    p: &Params,
) -> Result<(Encoded, Extras)> {
    let (n, dim) = (shape.rows, shape.cols);
    p.check(dim)?;
    let m = p.m as usize;
    let entries = (p.k as usize).min(n);
    let mut rng = Rng::new(p.seed);
    let levels = ((1u32 << p.codebook_bits) - 1) as f32;
    let mut out = vec![FORMAT_VERSION];
    put_varint(&mut out, entries as u64);
    let mut ranges = Vec::with_capacity(m);
    let mut codebook_codes: Vec<u32> = Vec::new();
    let mut codes = vec![0u32; n * m];
    let mut reconstruction = vec![0f32; n * dim];
    let mut coordinate_bits = vec![0.0; dim];
    for j in 0..m {
        let (start, end) = subspace(j, m, dim);
        let sub_dim = end - start;
        let points: Vec<f32> = (0..n)
            .flat_map(|i| values[i * dim + start..i * dim + end].iter().copied())
            .collect();
        let fitted = if entries == 0 {
            Codebook {
                dim: sub_dim,
                centroids: Vec::new(),
            }
        } else {
            backend
                .kmeans_fit(&points, sub_dim, entries, p.iters as usize, &mut rng)
                .await?
                .codebook
        };
        // Pad to `entries` centroids (k-means gives fewer only when n < k, excluded above, but a
        // codebook of a constant sub-space still has `entries` rows).
        let mut centroids = fitted.centroids;
        centroids.resize(entries * sub_dim, 0.0);
        let lo = centroids.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = centroids.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 0.0) };
        ranges.push((lo, hi));
        let start_code = codebook_codes.len();
        for &c in &centroids {
            codebook_codes.push(if hi > lo {
                ((c - lo) / (hi - lo) * levels).round() as u32
            } else {
                0
            });
        }
        let stored = Codebook {
            dim: sub_dim,
            centroids: dequantize(&codebook_codes[start_code..], lo, hi, levels),
        };
        if entries > 0 {
            let (assigned, _) = backend.kmeans_assign(&points, sub_dim, &stored).await?;
            for (i, &a) in assigned.iter().enumerate() {
                codes[i * m + j] = a;
                reconstruction[i * dim + start..i * dim + end]
                    .copy_from_slice(stored.centroid(a as usize));
            }
            let bits = entropy::entropy_bits(&assigned, entries as u32) / n as f64;
            coordinate_bits[start..end].fill(bits / sub_dim.max(1) as f64);
        }
    }
    for &(lo, hi) in &ranges {
        out.extend_from_slice(&lo.to_le_bytes());
        out.extend_from_slice(&hi.to_le_bytes());
    }
    out.extend(pack_bits(&codebook_codes, p.codebook_bits as u32));
    let fixed = pack_bits(&codes, index_bits(entries));
    let contexts: Vec<u32> = (0..n * m).map(|t| (t % m) as u32).collect();
    let coded = entropy::encode_with_contexts(&codes, &contexts, entries.max(1) as u32, m as u32);
    let side_bytes = if coded.bytes.len() < fixed.len() {
        out.push(1);
        let side = out.len() + coded.table_bytes;
        out.extend_from_slice(&coded.bytes);
        side
    } else {
        out.push(0);
        let side = out.len();
        out.extend_from_slice(&fixed);
        side
    };
    Ok((
        Encoded {
            bytes: out,
            side_bytes,
            reconstruction,
        },
        Extras { coordinate_bits },
    ))
}

pub fn decode(bytes: &[u8], shape: Shape2, p: &Params) -> Result<Vec<f32>> {
    let (n, dim) = (shape.rows, shape.cols);
    p.check(dim)?;
    let m = p.m as usize;
    let mut r = reader(bytes);
    if r.u8()? != FORMAT_VERSION {
        return Err(Error::corrupt("unknown pq section version"));
    }
    let entries = r.varint()?;
    if entries > p.k as u64 || entries > n as u64 || (entries == 0 && n > 0) {
        return Err(Error::corrupt(format!(
            "pq section stores {entries} centroids for k = {} and {n} vectors",
            p.k
        )));
    }
    let entries = entries as usize;
    let bounds = r.f32s(2 * m)?;
    if bounds.iter().any(|b| !b.is_finite()) {
        return Err(Error::corrupt("non-finite pq codebook range"));
    }
    // Every sub-space has `entries * sub_dim` values: `entries * dim` in all.
    let values = entries * dim;
    let codebook_len = (values * p.codebook_bits as usize).div_ceil(8);
    let codebook_codes = unpack_bits(r.take(codebook_len)?, values, p.codebook_bits as u32)?;
    let levels = ((1u32 << p.codebook_bits) - 1) as f32;
    let mut books = Vec::with_capacity(m);
    let mut at = 0;
    for j in 0..m {
        let (start, end) = subspace(j, m, dim);
        let len = entries * (end - start);
        books.push(dequantize(
            &codebook_codes[at..at + len],
            bounds[2 * j],
            bounds[2 * j + 1],
            levels,
        ));
        at += len;
    }
    let codes = match r.u8()? {
        0 => unpack_bits(r.rest(), n * m, index_bits(entries))?,
        1 => {
            let contexts: Vec<u32> = (0..n * m).map(|t| (t % m) as u32).collect();
            entropy::decode_with_contexts(r.rest(), &contexts, entries.max(1) as u32, m as u32)?
        }
        other => return Err(Error::corrupt(format!("unknown pq code mode {other}"))),
    };
    if codes.iter().any(|&c| c as usize >= entries) {
        return Err(Error::corrupt("pq index beyond the codebook"));
    }
    let mut out = vec![0f32; n * dim];
    for i in 0..n {
        for (j, book) in books.iter().enumerate() {
            let (start, end) = subspace(j, m, dim);
            let c = codes[i * m + j] as usize * (end - start);
            out[i * dim + start..i * dim + end].copy_from_slice(&book[c..c + end - start]);
        }
    }
    Ok(out)
}

fn dequantize(codes: &[u32], lo: f32, hi: f32, levels: f32) -> Vec<f32> {
    codes
        .iter()
        .map(|&c| lo + (hi - lo) * (c as f32 / levels))
        .collect()
}
