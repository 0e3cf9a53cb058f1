//! Transform coding of a vector dataset (Gaussian-mixture transform coding with one Gaussian; docs/VECTORS.md): remove
//! the mean, rotate into the KLT basis (eigenvectors of the covariance), and code every component
//! with one uniform scalar quantizer of step `step`, entropy coded with static models (one per group
//! of components of similar spread).
//!
//! One step for all components is reverse water-filling for entropy-coded uniform quantization: at
//! high rate each component then has distortion `step^2 / 12 = theta`, the water level, and the
//! components whose variance is below `theta` are dropped (sent as zero, distortion = their
//! variance), exactly the `min(theta, lambda_i)` of the Gaussian R(D) solution. The residual gap to
//! R(D) is the ~0.25 bit/dim of uniform scalar quantization at high rate.
//!
//! A mixture of Gaussians (GMTC proper) is coded as one such section per cluster, all at the same
//! step (one global water level: reverse water-filling across the clusters, docs/VECTORS.md), behind the entropy-coded cluster label
//! of every vector; see [`encode_mixture`] for how the clusters are found and the layout.
//!
//! What it does not do: vector quantization of the components, or adaptive models.
//!
//! Section layout (little-endian), version 1 (one Gaussian):
//! ```text
//! u8   version = 1
//! var  kept           components coded (<= dim)
//! f32 x dim           the mean vector
//! f32 x kept         per kept component, the scale of its basis column (max |entry|)
//! ...                 the basis, column after column, `basis_bits` bits per entry, bit-packed LSB
//!                     first and padded to a byte: zigzag(round(u / scale * (2^(basis_bits-1) - 1)))
//! per kept component: var context (0 for the first, then the same as the previous or one more:
//!                     components of similar log2(sigma/step) share an entropy model)
//! u8 x kept           per kept component, the reconstruction offset `delta = byte / 510` (0..=0.5)
//! var  alphabet       1 + the largest symbol (<= entropy::MAX_ALPHABET)
//! ...                 the symbols zigzag(q) (0, -1, 1, -2, 2 -> 0, 1, 2, 3, 4):
//!                     entropy::encode_with_contexts, row after row, with each component's context
//! ```
//! Everything but the entropy coder's payload words is side information. Vector `i` is reconstructed
//! as `mean + sum_j basis_j * y_ij` with the decoded (quantized) basis, in f32 through the same
//! product in encoder and decoder, where `y_ij = sign(q_ij) (|q_ij| - delta_j) step` (0 for
//! `q_ij = 0`): each non-zero bin is reconstructed nearer zero, at the mean of its values rather
//! than its middle (for a peaked density the values crowd the inner edge; this matters at low
//! rate, where most coded components have few non-zero bins). The header's `gain` (default 1)
//! multiplies every `y_ij` (the decoder uses `step * gain` as the step).

use faer::Mat;
use serde::{Deserialize, Serialize};

use super::{pack_bits, reader, unpack_bits, Stats};
use crate::codec::{put_varint, Encoded, Shape2};
use crate::entropy;
use crate::error::{Error, Result};
use crate::linalg;

const FORMAT_VERSION: u8 = 1;
/// The section version of a mixture (one version-1 section per cluster).
const MIXTURE_VERSION: u8 = 2;
/// Most clusters a mixture section may have.
pub const MAX_CLUSTERS: u32 = 16;
/// Bits per basis entry the codec accepts.
pub const BASIS_BITS: std::ops::RangeInclusive<u8> = 4..=24;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Params {
    /// Quantizer step in KLT coordinates (the data's units); components with variance below
    /// `keep_factor * step^2 / 12` are dropped.
    pub step: f32,
    /// Bits per stored basis entry.
    pub basis_bits: u8,
    /// 1 (the default) is reverse water-filling: every component above the water level is coded.
    /// Above 1, only components whose variance exceeds `keep_factor` times the water level are
    /// coded, at the same step: fewer components, each finer. On MiniLM's word embeddings this
    /// ranks nearest neighbours better at the same bits per vector (docs/VECTORS.md), though its
    /// MSE is a little higher.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub keep_factor: f32,
    /// Every decoded KLT coefficient is multiplied by `gain` (default 1, the MSE-optimal choice).
    /// A gain a little above 1 undoes part of the shrinkage toward the mean that dead-zone
    /// quantization causes at low rate; the encoder picks it by measured recall@10.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub gain: f32,
    /// Gaussians in the model: 1 (the default) codes every vector in one KLT basis; more is a
    /// mixture, one basis per cluster of vectors ([`encode_mixture`]).
    #[serde(default = "one_cluster", skip_serializing_if = "is_one_cluster")]
    pub clusters: u32,
    /// Seed of a mixture's k-means (`vectors::fit_mixture`), so that encoding the chosen option
    /// again finds the same clusters; 0 and unused for one Gaussian.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub seed: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn one() -> f32 {
    1.0
}

fn is_one(v: &f32) -> bool {
    *v == 1.0
}

fn one_cluster() -> u32 {
    1
}

fn is_one_cluster(v: &u32) -> bool {
    *v == 1
}

/// Largest `keep_factor` and `gain` a section may ask for (a damaged header must not make the
/// decoder produce absurd values silently).
const MAX_KEEP_FACTOR: f32 = 1e6;
const MAX_GAIN: f32 = 16.0;

impl Params {
    pub fn label(&self) -> String {
        let mut out = format!(
            "transform step {:.3e} basis {}b",
            self.step, self.basis_bits
        );
        if self.keep_factor != 1.0 {
            out += &format!(" keep {}", self.keep_factor);
        }
        if self.gain != 1.0 {
            out += &format!(" gain {}", self.gain);
        }
        if self.clusters != 1 {
            out += &format!(" mixture of {}", self.clusters);
        }
        out
    }

    fn check(&self) -> Result<()> {
        if !(self.step.is_finite() && self.step > 0.0) {
            return Err(Error::corrupt(format!(
                "transform step {} is not a positive number",
                self.step
            )));
        }
        if !BASIS_BITS.contains(&self.basis_bits) {
            return Err(Error::corrupt(format!(
                "transform basis bits {} outside {BASIS_BITS:?}",
                self.basis_bits
            )));
        }
        let keep_ok = (1.0..=MAX_KEEP_FACTOR).contains(&self.keep_factor);
        let gain_ok = self.gain > 0.0 && self.gain <= MAX_GAIN;
        if !(keep_ok && gain_ok) {
            return Err(Error::corrupt(format!(
                "transform keep factor {} or gain {} out of range",
                self.keep_factor, self.gain
            )));
        }
        if !(1..=MAX_CLUSTERS).contains(&self.clusters) {
            return Err(Error::corrupt(format!(
                "transform mixture of {} clusters (1..={MAX_CLUSTERS} allowed)",
                self.clusters
            )));
        }
        Ok(())
    }

    /// The water level `step^2 / 12` (distortion per coded component at high rate).
    pub fn water_level(&self) -> f64 {
        let s = self.step as f64;
        s * s / 12.0
    }

    /// How many of these eigenvalues (non-increasing) the coder keeps.
    pub fn kept(&self, eigenvalues: &[f64]) -> usize {
        let cut = self.water_level() * self.keep_factor as f64;
        eigenvalues.iter().take_while(|&&l| l > cut).count()
    }
}

/// The parameters for water level `theta` on data with these statistics: the step is
/// `sqrt(12 theta)`, and the basis precision is chosen so that its quantization adds about 0.25% to
/// the distortion (an entry error of `scale 2^-(b-1)/sqrt(12)` on each of `dim` entries of a unit
/// column whose largest entry is about `3/sqrt(dim)`, times the kept variance).
pub fn params_for_level(stats: &Stats, theta: f64) -> Params {
    let dim = stats.eigenvalues.len().max(1) as f64;
    let kept: f64 = stats.eigenvalues.iter().filter(|&&l| l > theta).sum();
    let ratio = kept / (0.0033 * theta * dim).max(f64::MIN_POSITIVE);
    let bits = (1.0 + 0.5 * ratio.max(1.0).log2()).ceil();
    Params {
        step: (12.0 * theta).sqrt() as f32,
        basis_bits: (bits as u8).clamp(*BASIS_BITS.start(), 16),
        keep_factor: 1.0,
        gain: 1.0,
        clusters: 1,
        seed: 0,
    }
}

/// What the encoder measured besides the section: per KLT component, the empirical entropy of its
/// symbols in bits per vector (an estimate, for the allocation plot; 0 for dropped components).
pub struct Extras {
    pub component_bits: Vec<f64>,
}

/// Encodes the `n x dim` row-major `values` whose statistics are `stats` (one Gaussian; `p.clusters`
/// must be 1).
pub fn encode(
    values: &[f32],
    shape: Shape2,
    stats: &Stats,
    p: &Params,
) -> Result<(Encoded, Extras)> {
    p.check()?;
    if p.clusters != 1 {
        return Err(Error::invalid(
            "a transform mixture is coded by encode_mixture",
        ));
    }
    let (n, dim) = (shape.rows, shape.cols);
    let kept = p.kept(&stats.eigenvalues);
    let mut out = vec![FORMAT_VERSION];
    put_varint(&mut out, kept as u64);
    for &m in &stats.mean {
        out.extend_from_slice(&(m as f32).to_le_bytes());
    }
    // The basis, quantized; the encoder projects with what the decoder will have.
    let levels = ((1u32 << (p.basis_bits - 1)) - 1) as f64;
    let mut basis_codes = Vec::with_capacity(kept * dim);
    let mut scales = Vec::with_capacity(kept);
    for j in 0..kept {
        let col = stats.basis.col(j);
        let scale = col.iter().fold(0f64, |a, &v| a.max(v.abs())) as f32;
        let scale = if scale > 0.0 { scale } else { 1.0 };
        scales.push(scale);
        for &v in col.iter() {
            let q = (v / scale as f64 * levels).round() as i64;
            basis_codes.push(zigzag(q) as u32);
        }
    }
    let basis = dequantize_basis(&basis_codes, &scales, dim, p.basis_bits);
    for &s in &scales {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.extend(pack_bits(&basis_codes, p.basis_bits as u32));
    // Project: y = (x - mean) U, n x kept.
    let mean: Vec<f32> = stats.mean.iter().map(|&m| m as f32).collect();
    let centred = Mat::<f32>::from_fn(n, dim, |i, c| values[i * dim + c] - mean[c]);
    let coeffs = linalg::product(centred.as_ref(), basis.as_ref());
    drop(centred);
    let step = p.step;
    let mut q = vec![0i64; n * kept];
    for i in 0..n {
        for j in 0..kept {
            q[i * kept + j] = (coeffs[(i, j)] / step).round() as i64;
        }
    }
    // Symbols are zigzag(q) (0, -1, 1, -2, ...), so components whose spread in steps is alike can
    // share one entropy model: the context of a component is its log2(sigma / step) in thirds of
    // an octave. Measured on Gaussian data (16 dimensions, 24000 rows, 5.3 bits/dim): 16 tables
    // cost 0.08 bit/dim, shared ones a fraction of it, for a model mismatch of < 0.02 bit.
    let symbols: Vec<u32> = q.iter().map(|&v| zigzag(v) as u32).collect();
    let largest = q.iter().map(|&v| zigzag(v)).max().unwrap_or(0);
    if largest >= entropy::MAX_ALPHABET as u64 {
        return Err(Error::invalid(format!(
            "transform step {} is too fine for these vectors: symbol {largest} on one component",
            p.step
        )));
    }
    let alphabet = largest + 1;
    let buckets: Vec<i64> = stats.eigenvalues[..kept]
        .iter()
        .map(|&l| (3.0 * (l.sqrt() / step as f64).log2()).floor() as i64)
        .collect();
    let mut component_context = Vec::with_capacity(kept);
    let mut n_contexts = 0u32;
    for (j, b) in buckets.iter().enumerate() {
        if j > 0 && *b != buckets[j - 1] {
            n_contexts += 1;
        }
        component_context.push(n_contexts);
    }
    let n_contexts = if kept > 0 { n_contexts + 1 } else { 1 };
    for &c in &component_context {
        put_varint(&mut out, c as u64);
    }
    // The offset that minimises the squared error of the non-zero bins: the mean of |q| - |y|/step.
    let offsets: Vec<u8> = (0..kept)
        .map(|j| {
            let (mut sum, mut count) = (0f64, 0usize);
            for i in 0..n {
                let qi = q[i * kept + j];
                if qi != 0 {
                    sum += qi.abs() as f64 - (coeffs[(i, j)] / step).abs() as f64;
                    count += 1;
                }
            }
            let delta = if count > 0 { sum / count as f64 } else { 0.0 };
            (delta.clamp(0.0, 0.5) * 510.0).round() as u8
        })
        .collect();
    out.extend_from_slice(&offsets);
    put_varint(&mut out, alphabet);
    let contexts: Vec<u32> = (0..n * kept).map(|t| component_context[t % kept]).collect();
    let coded = entropy::encode_with_contexts(&symbols, &contexts, alphabet as u32, n_contexts);
    let side_bytes = out.len() + coded.table_bytes;
    out.extend_from_slice(&coded.bytes);
    let mut component_bits = vec![0.0; dim];
    for (j, bits) in component_bits.iter_mut().enumerate().take(kept) {
        let column: Vec<u32> = (0..n).map(|i| symbols[i * kept + j]).collect();
        *bits = entropy::entropy_bits(&column, alphabet as u32) / n.max(1) as f64;
    }
    let reconstruction = reconstruct(&q, n, dim, step * p.gain, &offsets, &mean, &basis);
    Ok((
        Encoded {
            bytes: out,
            side_bytes,
            reconstruction,
        },
        Extras { component_bits },
    ))
}

pub fn decode(bytes: &[u8], shape: Shape2, p: &Params) -> Result<Vec<f32>> {
    p.check()?;
    match (bytes.first(), p.clusters) {
        (Some(&FORMAT_VERSION), 1) => decode_single(bytes, shape, p),
        (Some(&MIXTURE_VERSION), c) if c > 1 => decode_mixture(bytes, shape, p),
        _ => Err(Error::corrupt(format!(
            "transform section version does not match a model of {} cluster(s)",
            p.clusters
        ))),
    }
}

fn decode_single(bytes: &[u8], shape: Shape2, p: &Params) -> Result<Vec<f32>> {
    let (n, dim) = (shape.rows, shape.cols);
    let mut r = reader(bytes);
    if r.u8()? != FORMAT_VERSION {
        return Err(Error::corrupt("unknown transform section version"));
    }
    let kept = r.varint()?;
    if kept > dim as u64 {
        return Err(Error::corrupt(format!(
            "transform section keeps {kept} components of {dim}"
        )));
    }
    let kept = kept as usize;
    let mean = r.f32s(dim)?;
    let scales = r.f32s(kept)?;
    if scales.iter().any(|s| !(s.is_finite() && *s > 0.0)) || mean.iter().any(|m| !m.is_finite()) {
        return Err(Error::corrupt("non-finite mean or basis scale"));
    }
    let entry_bits = p.basis_bits as u32;
    let basis_len = (kept * dim * entry_bits as usize).div_ceil(8);
    let basis_codes = unpack_bits(r.take(basis_len)?, kept * dim, entry_bits)?;
    let basis = dequantize_basis(&basis_codes, &scales, dim, p.basis_bits);
    let mut component_context = Vec::with_capacity(kept);
    for j in 0..kept {
        let c = r.varint()?;
        // Contexts number the components' groups in order: 0, then each the same or one more.
        let previous = if j == 0 {
            0
        } else {
            component_context[j - 1] as u64
        };
        if (j == 0 && c != 0) || (j > 0 && c != previous && c != previous + 1) {
            return Err(Error::corrupt("transform context numbers out of order"));
        }
        component_context.push(c as u32);
    }
    let n_contexts = component_context.last().map_or(1, |&c| c + 1);
    let offsets = r.take(kept)?.to_vec();
    let alphabet = r.varint()?;
    if alphabet == 0 || alphabet > entropy::MAX_ALPHABET as u64 {
        return Err(Error::corrupt(format!(
            "transform alphabet {alphabet} out of range"
        )));
    }
    let contexts: Vec<u32> = (0..n * kept).map(|t| component_context[t % kept]).collect();
    let symbols = entropy::decode_with_contexts(r.rest(), &contexts, alphabet as u32, n_contexts)?;
    let q: Vec<i64> = symbols.iter().map(|&s| unzigzag(s as u64)).collect();
    Ok(reconstruct(
        &q,
        n,
        dim,
        p.step * p.gain,
        &offsets,
        &mean,
        &basis,
    ))
}

/// A Gaussian mixture fitted to a dataset: the cluster of every vector and each cluster's statistics.
pub struct Mixture {
    pub labels: Vec<u32>,
    pub clusters: Vec<Stats>,
}

impl Mixture {
    /// The statistics of each cluster of `labels` (each `< clusters`) over the `n x dim` `values`.
    pub fn from_labels(
        values: &[f32],
        shape: Shape2,
        labels: Vec<u32>,
        clusters: usize,
    ) -> Result<Mixture> {
        let stats = (0..clusters)
            .map(|c| {
                let (rows, members) = gather(values, shape.cols, &labels, c as u32);
                Stats::of(&members, Shape2::new(rows.len(), shape.cols))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Mixture {
            labels,
            clusters: stats,
        })
    }

    /// Each cluster's share of the vectors and its statistics.
    pub fn weighted(&self) -> Vec<(f64, &Stats)> {
        let n = self.labels.len().max(1) as f64;
        self.clusters
            .iter()
            .enumerate()
            .map(|(c, s)| {
                let members = self.labels.iter().filter(|&&l| l == c as u32).count();
                (members as f64 / n, s)
            })
            .collect()
    }
}

/// The indices of the rows labelled `cluster`, in order.
fn rows_of(labels: &[u32], cluster: u32) -> Vec<usize> {
    (0..labels.len())
        .filter(|&i| labels[i] == cluster)
        .collect()
}

/// The indices of the rows labelled `cluster` and those rows, in order.
fn gather(values: &[f32], dim: usize, labels: &[u32], cluster: u32) -> (Vec<usize>, Vec<f32>) {
    let rows = rows_of(labels, cluster);
    let mut members = Vec::with_capacity(rows.len() * dim);
    for &i in &rows {
        members.extend_from_slice(&values[i * dim..(i + 1) * dim]);
    }
    (rows, members)
}

/// Writes the `k`-th row of `part` to row `rows[k]` of `out` (the inverse of [`gather`]).
fn scatter(out: &mut [f32], dim: usize, rows: &[usize], part: &[f32]) {
    for (k, &i) in rows.iter().enumerate() {
        out[i * dim..(i + 1) * dim].copy_from_slice(&part[k * dim..(k + 1) * dim]);
    }
}

/// Encodes the `n x dim` `values` with a mixture: every vector in the KLT basis of its cluster
/// (`mixture.labels`), every cluster at the step of `p` (one water level for all: the MSE-optimal
/// allocation across clusters by reverse water-filling, docs/VECTORS.md). The labels are chosen by the caller
/// (k-means on the backend, `vectors::fit_mixture`); the decoder reads them.
///
/// Section layout, version 2:
/// ```text
/// u8   version = 2
/// var  clusters C      (2..=MAX_CLUSTERS, equal to the header's)
/// var  L, then L bytes the n cluster labels, entropy::encode with alphabet C (its model table is
///                      side information, the rest about H(C) bits per vector)
/// per cluster: var S, then S bytes a version-1 section of that cluster's rows in their order
/// ```
pub fn encode_mixture(
    values: &[f32],
    shape: Shape2,
    mixture: &Mixture,
    p: &Params,
) -> Result<(Encoded, Extras)> {
    p.check()?;
    let clusters = mixture.clusters.len();
    if p.clusters as usize != clusters || clusters < 2 || mixture.labels.len() != shape.rows {
        return Err(Error::invalid(format!(
            "a mixture of {clusters} clusters over {} labels for {} rows and {} in the parameters",
            mixture.labels.len(),
            shape.rows,
            p.clusters
        )));
    }
    let dim = shape.cols;
    let single = Params {
        clusters: 1,
        ..p.clone()
    };
    let mut out = vec![MIXTURE_VERSION];
    put_varint(&mut out, clusters as u64);
    let labels = entropy::encode(&mixture.labels, clusters as u32);
    put_varint(&mut out, labels.bytes.len() as u64);
    out.extend_from_slice(&labels.bytes);
    let mut payload_bytes = labels.bytes.len() - labels.table_bytes;
    let mut reconstruction = vec![0f32; values.len()];
    let mut component_bits = vec![0f64; dim];
    for (c, stats) in mixture.clusters.iter().enumerate() {
        let (rows, members) = gather(values, dim, &mixture.labels, c as u32);
        let (part, extras) = encode(&members, Shape2::new(rows.len(), dim), stats, &single)?;
        put_varint(&mut out, part.bytes.len() as u64);
        payload_bytes += part.bytes.len() - part.side_bytes;
        out.extend_from_slice(&part.bytes);
        scatter(&mut reconstruction, dim, &rows, &part.reconstruction);
        // Per vector of the whole dataset: the cluster's j-th component, weighted by its share.
        let share = rows.len() as f64 / shape.rows.max(1) as f64;
        for (total, bits) in component_bits.iter_mut().zip(&extras.component_bits) {
            *total += share * bits;
        }
    }
    // Side information: everything but the labels' and the clusters' coded payloads (so the
    // framing, versions, counts and lengths, is counted too).
    let side_bytes = out.len() - payload_bytes;
    Ok((
        Encoded {
            bytes: out,
            side_bytes,
            reconstruction,
        },
        Extras { component_bits },
    ))
}

fn decode_mixture(bytes: &[u8], shape: Shape2, p: &Params) -> Result<Vec<f32>> {
    let (n, dim) = (shape.rows, shape.cols);
    let mut r = reader(bytes);
    r.u8()?;
    let clusters = r.varint()?;
    if clusters != p.clusters as u64 {
        return Err(Error::corrupt(format!(
            "transform mixture section of {clusters} clusters where the header says {}",
            p.clusters
        )));
    }
    let label_bytes = r.varint()?;
    let label_bytes = r.take(usize::try_from(label_bytes).map_err(|_| truncated())?)?;
    let labels = entropy::decode(label_bytes, n, p.clusters)?;
    let single = Params {
        clusters: 1,
        ..p.clone()
    };
    let mut out = vec![0f32; n * dim];
    for c in 0..p.clusters {
        let rows = rows_of(&labels, c);
        let len = r.varint()?;
        let part = r.take(usize::try_from(len).map_err(|_| truncated())?)?;
        let values = decode_single(part, Shape2::new(rows.len(), dim), &single)?;
        scatter(&mut out, dim, &rows, &values);
    }
    if !r.rest().is_empty() {
        return Err(Error::corrupt(
            "bytes after the last cluster of a transform mixture",
        ));
    }
    Ok(out)
}

fn truncated() -> Error {
    Error::corrupt("transform mixture section truncated")
}

/// `mean + U y` for every vector (`y` from the symbols `q`, see the module comment), through one
/// f32 product.
fn reconstruct(
    q: &[i64],
    n: usize,
    dim: usize,
    step: f32,
    offsets: &[u8],
    mean: &[f32],
    basis: &Mat<f32>,
) -> Vec<f32> {
    let kept = offsets.len();
    let deltas: Vec<f32> = offsets.iter().map(|&o| o as f32 / 510.0).collect();
    let coeffs = Mat::<f32>::from_fn(n, kept, |i, j| {
        let qi = q[i * kept + j];
        if qi == 0 {
            0.0
        } else {
            (qi.abs() as f32 - deltas[j]) * step * qi.signum() as f32
        }
    });
    let x = linalg::product(coeffs.as_ref(), basis.transpose());
    let mut out = Vec::with_capacity(n * dim);
    for i in 0..n {
        for (c, &m) in mean.iter().enumerate() {
            out.push(x[(i, c)] + m);
        }
    }
    out
}

/// The `dim x kept` basis from its zigzag codes and per-column scales.
fn dequantize_basis(codes: &[u32], scales: &[f32], dim: usize, bits: u8) -> Mat<f32> {
    let levels = ((1u32 << (bits - 1)) - 1) as f32;
    Mat::<f32>::from_fn(dim, scales.len(), |c, j| {
        unzigzag(codes[j * dim + c] as u64) as f32 / levels * scales[j]
    })
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}
