//! TurboQuant (Zandieh, Daliri, Hadian, Mirrokni, arXiv 2504.19874): each vector is scaled to
//! unit norm and randomly rotated, so that every coordinate follows the same known density (the
//! coordinate of a uniform point on the unit sphere of dimension `d`); each coordinate is then
//! quantized with the Lloyd-Max codebook of that density. No per-tensor fitting at all: the
//! codebook depends only on `(d, bits)`.
//!
//! For a weight matrix, the "vectors" are the blocks of the randomized Hadamard rotation
//! ([`crate::rotation`], one block = `dim` consecutive elements of a row): each block's norm is
//! stored (f16, side information), the block is divided by it, its coordinates are quantized with
//! the `bits`-bit codebook, and the codes are entropy coded ([`crate::entropy`]), which saves a
//! little below `bits` because the outer cells of a Lloyd-Max codebook are less likely.
//!
//! The codebooks are computed, not tabulated: Lloyd iterations on a fine grid of the density
//! `f_d(x) ∝ (1 - x^2)^((d-3)/2)` (the exact Beta-type density) for `d < GAUSSIAN_FROM_DIM`, and on
//! its Gaussian limit `N(0, 1/d)` above, cached per `(density, d, bits)`.
//!
//! Option `qjl`: the 1-bit QJL residual of TurboQuant_prod. The residual `r` of each block (in
//! the unit-norm, rotated domain) is stored as `‖r‖` (f16) and the signs of `S r` (`S` a seeded
//! `d x d` Gaussian matrix); the decoder adds `‖r‖ sqrt(pi/2)/d S^T sign(S r)`. This makes inner
//! products with the reconstruction unbiased; it does not lower the squared error of the weights
//! (one more bit per weight spent on the MSE codebook lowers it about 4x instead).
//!
//! Section layout (little-endian): `varint element_count` (checked against the shape),
//! `u8 norm_format` (0: f16 norms, 1: f32 norms, used when a norm
//! exceeds the f16 range), `[norm; blocks]`, `[f16 gamma; blocks]` if qjl, `varint codes_len`,
//! codes (entropy block, alphabet `2^bits`), `[u8; ceil(n/8)]` QJL sign bits (LSB first) if qjl.
//!
//! What it does not do: the paper's non-integer rates from outlier channels, a dense (Haar)
//! rotation (the randomized Hadamard is its fast substitute), rows whose length has a power-of-two
//! factor below [`MIN_DIM`] (no useful rotation block: the codec does not apply).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use half::f16;
use serde::{Deserialize, Serialize};

use super::{put_varint, section, Encoded, Shape2};
use crate::backend::{self, Backend};
use crate::entropy;
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::rotation;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Params {
    /// Bits per coordinate of the Lloyd-Max codebook (before entropy coding), 1..=8.
    pub bits: u8,
    /// The vector length: the rotation block of the tensor's rows ([`rotation::block_len`]).
    pub dim: u32,
    /// Add the 1-bit QJL residual (one more bit per weight plus an f16 per block).
    pub qjl: bool,
    /// Seed of the rotation signs and of the QJL matrix.
    pub seed: u64,
}

impl Params {
    pub fn label(&self) -> String {
        let qjl = if self.qjl { "+qjl" } else { "" };
        format!("turbo {}b{qjl} d={}", self.bits, self.dim)
    }
}

/// Shortest vector the codec accepts: below it the rotation hardly mixes anything and the
/// coordinate density is far from the codebook's assumptions.
pub const MIN_DIM: usize = 8;
pub const MAX_BITS: u8 = 8;
/// From this dimension on, the Gaussian limit replaces the exact density (measured: the two
/// codebooks' distortions differ by under 0.1% at d = 512; see the tests).
pub const GAUSSIAN_FROM_DIM: u32 = 512;
/// Bit widths offered when the method is forced (without QJL, which does not pay for weights).
const CANDIDATE_BITS: [u8; 6] = [1, 2, 3, 4, 5, 6];
/// The subset `auto` tries: measured on all-MiniLM-L6-v2, turbo is dominated by the scalar ECSQ
/// grid at every rate (docs/METHODS.md), so auto keeps only the three widths of the usual
/// budgets (3-5 bits per weight), for ~2% more analysis time.
pub const AUTO_BITS: [u8; 3] = [3, 4, 5];

/// The options tried for a tensor (the allocator in auto mode keeps [`AUTO_BITS`]): empty when the
/// rows are too short for a rotation block of [`MIN_DIM`].
pub fn candidates(shape: Shape2, seed: u64) -> Vec<Params> {
    let dim = rotation::block_len(shape.cols);
    if dim < MIN_DIM || shape.is_empty() {
        return Vec::new();
    }
    CANDIDATE_BITS
        .iter()
        .map(|&bits| Params {
            bits,
            dim: dim as u32,
            qjl: false,
            seed,
        })
        .collect()
}

/// Same checks for the encoder (an option error) and the decoder (a corrupt header).
fn check(shape: Shape2, p: &Params) -> std::result::Result<(), String> {
    if !(1..=MAX_BITS).contains(&p.bits) {
        return Err(format!("turbo needs 1-{MAX_BITS} bits, got {}", p.bits));
    }
    let dim = rotation::block_len(shape.cols);
    if dim < MIN_DIM {
        return Err(format!(
            "turbo needs rows whose length is a multiple of {MIN_DIM} (got {} columns)",
            shape.cols
        ));
    }
    if p.dim as usize != dim {
        return Err(format!(
            "turbo d={} does not match the rotation block {dim} of {} columns",
            p.dim, shape.cols
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Codebooks

/// The coordinate density a codebook is fitted to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Density {
    /// Coordinate of a uniform point on the unit sphere in `R^d`: `∝ (1 - x^2)^((d-3)/2)`.
    Sphere { dim: u32 },
    /// Its large-`d` limit, `N(0, 1/d)`.
    Gaussian { dim: u32 },
}

impl Density {
    /// The density the codec uses for vectors of length `dim`.
    pub fn for_dim(dim: u32) -> Density {
        if dim >= GAUSSIAN_FROM_DIM {
            Density::Gaussian { dim }
        } else {
            Density::Sphere { dim }
        }
    }

    fn dim(self) -> u32 {
        match self {
            Density::Sphere { dim } | Density::Gaussian { dim } => dim,
        }
    }

    /// Log of the unnormalized density at `x`.
    fn log_pdf(self, x: f64) -> f64 {
        match self {
            Density::Sphere { dim } => 0.5 * (dim as f64 - 3.0) * (1.0 - x * x).ln(),
            Density::Gaussian { dim } => -0.5 * dim as f64 * x * x,
        }
    }

    /// Half-width of the grid: 12 standard deviations (the mass beyond is below 1e-30), and never
    /// past the sphere's [-1, 1].
    fn half_width(self) -> f64 {
        let w = 12.0 / (self.dim() as f64).sqrt();
        match self {
            Density::Sphere { .. } => w.min(1.0),
            Density::Gaussian { .. } => w,
        }
    }
}

/// A scalar Lloyd-Max quantizer: `centroids` ascending, `thresholds[i]` between centroid `i` and
/// `i + 1` (the midpoints), and the distortion it gives on its density.
#[derive(Clone, Debug)]
pub struct Codebook {
    pub centroids: Vec<f32>,
    pub thresholds: Vec<f32>,
    /// Expected squared error per coordinate, `E (X - Q(X))^2`, from the grid.
    pub mse: f64,
}

impl Codebook {
    /// Index of the cell holding `y` (binary search on the thresholds).
    #[inline]
    pub fn quantize(&self, y: f32) -> u32 {
        self.thresholds.partition_point(|&t| t < y) as u32
    }
}

/// Grid cells the densities are integrated on.
const GRID: usize = 1 << 16;
/// Lloyd iterations converge slowly (linearly) for many levels; each is cheap (O(levels)).
const LLOYD_MAX_ITERATIONS: usize = 200_000;

/// Computes the `bits`-bit Lloyd-Max codebook of `density` by Lloyd iterations on a grid of
/// [`GRID`] cells (prefix sums make each iteration O(levels)).
pub fn lloyd_max(density: Density, bits: u8) -> Codebook {
    let levels = 1usize << bits;
    let w = density.half_width();
    let dx = 2.0 * w / GRID as f64;
    // Prefix sums of mass, first and second moments over cells 0..i.
    let mut p = vec![0f64; GRID + 1];
    let mut m = vec![0f64; GRID + 1];
    let mut s = vec![0f64; GRID + 1];
    for i in 0..GRID {
        let x = -w + (i as f64 + 0.5) * dx;
        let f = density.log_pdf(x).exp();
        p[i + 1] = p[i] + f;
        m[i + 1] = m[i] + f * x;
        s[i + 1] = s[i] + f * x * x;
    }
    let total = p[GRID];
    // A prefix sum at any point (linear inside a cell), so that thresholds move continuously:
    // rounded to cell edges, the small late Lloyd steps would stall short of the optimum.
    let at = |a: &[f64], t: f64| {
        let u = ((t + w) / dx).clamp(0.0, GRID as f64);
        let i = (u as usize).min(GRID - 1);
        a[i] + (u - i as f64) * (a[i + 1] - a[i])
    };
    let edges = |c: &[f64]| -> Vec<f64> {
        let mut e = Vec::with_capacity(levels + 1);
        e.push(-w);
        e.extend(c.windows(2).map(|pair| 0.5 * (pair[0] + pair[1])));
        e.push(w);
        e
    };
    // Start from the quantiles at the cell midpoints of the CDF.
    let mut centroids: Vec<f64> = (0..levels)
        .map(|i| {
            let target = total * (i as f64 + 0.5) / levels as f64;
            let k = p.partition_point(|&v| v < target).clamp(1, GRID);
            -w + (k as f64 - 0.5) * dx
        })
        .collect();
    let tolerance = 1e-12 / (density.dim() as f64).sqrt();
    for _ in 0..LLOYD_MAX_ITERATIONS {
        let e = edges(&centroids);
        let mut moved = 0f64;
        for (i, c) in centroids.iter_mut().enumerate() {
            let mass = at(&p, e[i + 1]) - at(&p, e[i]);
            if mass > 0.0 {
                let next = (at(&m, e[i + 1]) - at(&m, e[i])) / mass;
                moved = moved.max((next - *c).abs());
                *c = next;
            }
        }
        if moved < tolerance {
            break;
        }
    }
    let e = edges(&centroids);
    let mse = centroids
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let (lo, hi) = (e[i], e[i + 1]);
            let mass = at(&p, hi) - at(&p, lo);
            let first = at(&m, hi) - at(&m, lo);
            let second = at(&s, hi) - at(&s, lo);
            second - 2.0 * c * first + c * c * mass
        })
        .sum::<f64>()
        / total;
    let thresholds = centroids
        .windows(2)
        .map(|pair| (0.5 * (pair[0] + pair[1])) as f32)
        .collect();
    Codebook {
        centroids: centroids.iter().map(|&c| c as f32).collect(),
        thresholds,
        mse,
    }
}

/// The codebook for `(density, bits)`, computed once per process and shared.
pub fn codebook(density: Density, bits: u8) -> Arc<Codebook> {
    type Cache = Mutex<BTreeMap<(Density, u8), Arc<Codebook>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(BTreeMap::new()));
    let mut map = cache
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    map.entry((density, bits))
        .or_insert_with(|| Arc::new(lloyd_max(density, bits)))
        .clone()
}

// ---------------------------------------------------------------------------------------------
// QJL

/// The seeded `d x d` Gaussian matrix of the QJL stage, row-major.
fn qjl_matrix(dim: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::for_stream(seed, "turbo-qjl");
    (0..dim * dim).map(|_| rng.normal() as f32).collect()
}

/// Adds `scale * S^T z` to `out`, where `z_j = +1` if bit `j` of the block's signs is set, else
/// -1. One function for the encoder and the decoder, so both give the same bits.
fn add_qjl(out: &mut [f32], s: &[f32], signs: &[bool], scale: f32) {
    let d = out.len();
    for (j, &positive) in signs.iter().enumerate() {
        let row = &s[j * d..(j + 1) * d];
        let z = if positive { scale } else { -scale };
        out.iter_mut().zip(row).for_each(|(o, &v)| *o += z * v);
    }
}

fn qjl_scale(dim: usize, gamma: f32) -> f32 {
    (std::f64::consts::FRAC_PI_2.sqrt() / dim as f64) as f32 * gamma
}

// ---------------------------------------------------------------------------------------------
// Encoder and decoder

const NORM_F16: u8 = 0;
const NORM_F32: u8 = 1;

pub fn encode(values: &[f32], shape: Shape2, p: &Params) -> Result<Encoded> {
    backend::ready(encode_on(&Backend::Cpu, values, shape, p))
}

/// [`encode`] with the rotations on `backend` (the GPU's rotation gives the CPU's bits, so the
/// section is the same on both).
pub async fn encode_on(
    backend: &Backend,
    values: &[f32],
    shape: Shape2,
    p: &Params,
) -> Result<Encoded> {
    if values.len() != shape.len() {
        return Err(Error::invalid(format!(
            "{} values for a {}x{} tensor",
            values.len(),
            shape.rows,
            shape.cols
        )));
    }
    check(shape, p).map_err(Error::option)?;
    if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "turbo quantization needs finite weights, found {bad}"
        )));
    }
    let d = p.dim as usize;
    let cb = codebook(Density::for_dim(p.dim), p.bits);
    let mut work = values.to_vec();
    if !work.is_empty() {
        backend.rotate(&mut work, shape.cols, p.seed, false).await?;
    }

    let (format, stored) = stored_norms(&work, d);
    let qjl = p.qjl.then(|| qjl_matrix(d, p.seed));
    let BlockCodes {
        symbols,
        mut reconstruction,
        gammas,
        sign_bits,
    } = code_blocks(&work, &stored, &cb, qjl.as_deref(), d);
    if !reconstruction.is_empty() {
        backend
            .rotate(&mut reconstruction, shape.cols, p.seed, true)
            .await?;
    }

    let (bytes, side_bytes) = turbo_section(
        values.len(),
        p.bits,
        format,
        &stored,
        &gammas,
        &symbols,
        &sign_bits,
    );
    Ok(Encoded {
        bytes,
        side_bytes,
        reconstruction,
    })
}

/// The block norms as stored, and their format: f16 when every norm fits, else f32.
fn stored_norms(work: &[f32], d: usize) -> (u8, Vec<f32>) {
    let norms: Vec<f32> = work
        .chunks_exact(d)
        .map(|b| b.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt() as f32)
        .collect();
    let format = if norms.iter().all(|&n| n <= f16::MAX.to_f32()) {
        NORM_F16
    } else {
        NORM_F32
    };
    // The scale each block is reconstructed with: its norm as stored.
    let stored: Vec<f32> = norms
        .iter()
        .map(|&n| match format {
            NORM_F16 => f16::from_f32(n).to_f32(),
            _ => n,
        })
        .collect();
    (format, stored)
}

/// What coding the rotated blocks gives: a codebook symbol per value, the reconstruction (still
/// rotated), and with QJL each block's residual norm (f16 bytes) and residual signs.
struct BlockCodes {
    symbols: Vec<u32>,
    reconstruction: Vec<f32>,
    gammas: Vec<u8>,
    sign_bits: Vec<bool>,
}

/// Quantizes each rotated block of `d` values, scaled to unit norm by its stored norm, to the
/// codebook; with a QJL matrix, also codes the signs of the projected residual.
fn code_blocks(
    work: &[f32],
    stored: &[f32],
    cb: &Codebook,
    qjl: Option<&[f32]>,
    d: usize,
) -> BlockCodes {
    let mut symbols = Vec::with_capacity(work.len());
    let mut reconstruction = vec![0f32; work.len()];
    let mut gammas = Vec::new();
    let mut sign_bits = Vec::new();
    let mut unit = vec![0f32; d];
    let mut residual = vec![0f32; d];
    let mut signs = vec![false; d];
    for ((block, out), &scale) in work
        .chunks_exact(d)
        .zip(reconstruction.chunks_exact_mut(d))
        .zip(stored)
    {
        let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        for (((&v, u), r), o) in block
            .iter()
            .zip(unit.iter_mut())
            .zip(residual.iter_mut())
            .zip(out.iter_mut())
        {
            *u = v * inv;
            let q = cb.quantize(*u);
            symbols.push(q);
            let c = cb.centroids[q as usize];
            *r = *u - c;
            *o = c;
        }
        if let Some(s) = qjl {
            let gamma = residual
                .iter()
                .map(|&r| r as f64 * r as f64)
                .sum::<f64>()
                .sqrt() as f32;
            let gamma = f16::from_f32(gamma);
            gammas.extend_from_slice(&gamma.to_le_bytes());
            for (j, sign) in signs.iter_mut().enumerate() {
                let row = &s[j * d..(j + 1) * d];
                let dot: f64 = row
                    .iter()
                    .zip(&residual)
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum();
                *sign = dot >= 0.0;
            }
            sign_bits.extend_from_slice(&signs);
            add_qjl(out, s, &signs, qjl_scale(d, gamma.to_f32()));
        }
        out.iter_mut().for_each(|o| *o *= scale);
    }
    BlockCodes {
        symbols,
        reconstruction,
        gammas,
        sign_bits,
    }
}

/// The section: value count, norm format, norms, QJL gammas, the entropy-coded symbols and the
/// packed sign bits. Also returns the side bytes (everything but the coded symbols and the signs,
/// plus the entropy tables).
fn turbo_section(
    len: usize,
    bits: u8,
    format: u8,
    stored: &[f32],
    gammas: &[u8],
    symbols: &[u32],
    sign_bits: &[bool],
) -> (Vec<u8>, usize) {
    let coded = entropy::encode(symbols, 1u32 << bits);
    let mut bytes = Vec::new();
    put_varint(&mut bytes, len as u64);
    bytes.push(format);
    for &n in stored {
        match format {
            NORM_F16 => bytes.extend_from_slice(&f16::from_f32(n).to_le_bytes()),
            _ => bytes.extend_from_slice(&n.to_le_bytes()),
        }
    }
    bytes.extend_from_slice(gammas);
    put_varint(&mut bytes, coded.bytes.len() as u64);
    let side_bytes = bytes.len() + coded.table_bytes;
    bytes.extend_from_slice(&coded.bytes);
    bytes.extend(pack_bits(sign_bits));
    (bytes, side_bytes)
}

pub fn decode(bytes: &[u8], shape: Shape2, p: &Params) -> Result<Vec<f32>> {
    check(shape, p).map_err(|e| Error::corrupt(format!("bad turbo header: {e}")))?;
    let d = p.dim as usize;
    let n = shape.len();
    let blocks = n / d;
    let mut r = section::Reader::new(bytes, "turbo");
    if r.varint()? != n as u64 {
        return Err(Error::corrupt(
            "turbo section holds a different element count than the shape",
        ));
    }
    let format = r.u8()?;
    let width = match format {
        NORM_F16 => 2,
        NORM_F32 => 4,
        _ => return Err(Error::corrupt("unknown turbo norm format")),
    };
    let norm_bytes = r.take(
        blocks
            .checked_mul(width)
            .ok_or_else(|| Error::corrupt("turbo block count overflows"))?,
    )?;
    let norms: Vec<f32> = norm_bytes
        .chunks_exact(width)
        .map(|b| match format {
            NORM_F16 => f16::from_le_bytes([b[0], b[1]]).to_f32(),
            _ => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        })
        .collect();
    let gammas: Vec<f32> = if p.qjl {
        r.take(2 * blocks)?
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect()
    } else {
        Vec::new()
    };
    if norms
        .iter()
        .chain(&gammas)
        .any(|v| !(v.is_finite() && *v >= 0.0))
    {
        return Err(Error::corrupt("turbo block norm is negative or not finite"));
    }
    let coded_len = r.varint()?;
    let coded = r.take(usize::try_from(coded_len).unwrap_or(usize::MAX))?;
    let sign_len = if p.qjl { n.div_ceil(8) } else { 0 };
    if r.remaining() != sign_len {
        return Err(Error::corrupt(
            "turbo section has the wrong number of QJL sign bytes",
        ));
    }
    let sign_bytes = r.take(sign_len)?;
    let symbols = entropy::decode(coded, n, 1u32 << p.bits)?;
    let cb = codebook(Density::for_dim(p.dim), p.bits);
    let qjl = p.qjl.then(|| qjl_matrix(d, p.seed));
    let mut out = vec![0f32; n];
    let mut signs = vec![false; d];
    for (b, (block, codes)) in out
        .chunks_exact_mut(d)
        .zip(symbols.chunks_exact(d))
        .enumerate()
    {
        for (o, &q) in block.iter_mut().zip(codes) {
            *o = cb.centroids[q as usize];
        }
        if let Some(s) = &qjl {
            for (j, sign) in signs.iter_mut().enumerate() {
                let bit = b * d + j;
                *sign = sign_bytes[bit / 8] >> (bit % 8) & 1 == 1;
            }
            add_qjl(block, s, &signs, qjl_scale(d, gammas[b]));
        }
        let scale = norms[b];
        block.iter_mut().for_each(|o| *o *= scale);
    }
    rotation::inverse(&mut out, shape.cols, p.seed);
    Ok(out)
}

/// Packs booleans 8 to a byte, least significant bit first.
fn pack_bits(bits: &[bool]) -> Vec<u8> {
    bits.chunks(8)
        .map(|c| {
            c.iter()
                .enumerate()
                .fold(0u8, |acc, (i, &b)| acc | (u8::from(b) << i))
        })
        .collect()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) fn params(bits: u8, dim: u32, qjl: bool, seed: u64) -> Params {
        Params {
            bits,
            dim,
            qjl,
            seed,
        }
    }

    /// `rows` uniform random unit vectors of length `dim`.
    fn unit_vectors(rows: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut r = Rng::new(seed);
        let mut x = Vec::with_capacity(rows * dim);
        for _ in 0..rows {
            let v: Vec<f64> = (0..dim).map(|_| r.normal()).collect();
            let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
            x.extend(v.iter().map(|a| (a / norm) as f32));
        }
        x
    }

    fn sq_err(a: &[f32], b: &[f32]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
            .sum()
    }

    #[test]
    fn gaussian_codebooks_match_the_lloyd_max_table() {
        // The Lloyd-Max table of the Gaussian (TurboQuant, Zandieh et al. 2025): positive-half centroids x sqrt(d) and D = d x MSE, Gaussian limit.
        let d = 1024u32;
        let table: [(u8, &[f64], f64); 4] = [
            (1, &[0.7979], 0.3634),
            (2, &[0.4528, 1.5104], 0.1175),
            (3, &[0.2451, 0.7560, 1.3439, 2.1519], 0.03455),
            (
                4,
                &[
                    0.1284, 0.3880, 0.6568, 0.9423, 1.2562, 1.6180, 2.0690, 2.7326,
                ],
                0.00950,
            ),
        ];
        for (bits, half, dmse) in table {
            let cb = lloyd_max(Density::Gaussian { dim: d }, bits);
            let k = cb.centroids.len();
            for (i, &want) in half.iter().enumerate() {
                let got = cb.centroids[k / 2 + i] as f64 * (d as f64).sqrt();
                let mirror = -cb.centroids[k / 2 - 1 - i] as f64 * (d as f64).sqrt();
                assert!((got - want).abs() < 5e-4, "{bits}b centroid {i}: {got}");
                assert!((mirror - got).abs() < 1e-4, "{bits}b not symmetric");
            }
            let got = cb.mse * d as f64;
            assert!((got / dmse - 1.0).abs() < 3e-3, "{bits}b: D {got}");
        }
    }

    #[test]
    fn sphere_codebook_at_d128_matches_the_exact_beta_figures() {
        // The exact Beta marginal of a rotated unit vector at d = 128 (docs/METHODS.md): b=2 centroids 0.4525, 1.5052 (D 0.1160), b=3 D 0.0340.
        let cb = lloyd_max(Density::Sphere { dim: 128 }, 2);
        let s = 128f64.sqrt();
        assert!((cb.centroids[2] as f64 * s - 0.4525).abs() < 2e-3);
        assert!((cb.centroids[3] as f64 * s - 1.5052).abs() < 2e-3);
        assert!((cb.mse * 128.0 / 0.1160 - 1.0).abs() < 5e-3, "{}", cb.mse);
        let cb = lloyd_max(Density::Sphere { dim: 128 }, 3);
        assert!((cb.mse * 128.0 / 0.0340 - 1.0).abs() < 5e-3, "{}", cb.mse);
    }

    #[test]
    fn gaussian_limit_is_close_to_the_sphere_from_512_on() {
        for bits in 1..=6 {
            let a = lloyd_max(Density::Sphere { dim: 512 }, bits).mse;
            let b = lloyd_max(Density::Gaussian { dim: 512 }, bits).mse;
            assert!((a / b - 1.0).abs() < 1e-2, "{bits}b: {a} vs {b}");
        }
    }

    #[test]
    fn unit_vectors_at_d128_give_the_paper_mse() {
        // The check: unit vectors, d = 128, MSE (per vector) within 3% of the figures.
        let (rows, dim) = (2000, 128);
        let x = unit_vectors(rows, dim, 1);
        let shape = Shape2::new(rows, dim);
        for (bits, want) in [(1u8, 0.36), (2, 0.117), (3, 0.0345), (4, 0.0095)] {
            let e = encode(&x, shape, &params(bits, dim as u32, false, 3)).unwrap();
            let mse = sq_err(&x, &e.reconstruction) / rows as f64;
            eprintln!("turbo {bits}b d=128 unit vectors: MSE {mse:.5} (paper {want})");
            assert!(
                (mse / want - 1.0).abs() < 0.03,
                "{bits} bits: MSE {mse:.5}, paper {want}"
            );
            // And above the 4^-b lower bound for any quantizer.
            assert!(mse > 4f64.powi(-(bits as i32)));
        }
    }

    #[test]
    fn qjl_inner_products_are_unbiased() {
        // Over independent seeds (rotation and S), <y, x~> - <y, x> has mean 0.
        let dim = 128;
        let x = unit_vectors(1, dim, 11);
        let y = unit_vectors(1, dim, 12);
        let shape = Shape2::new(1, dim);
        let exact: f64 = x.iter().zip(&y).map(|(a, b)| *a as f64 * *b as f64).sum();
        for bits in [1u8, 2] {
            let trials = 3000;
            let errors: Vec<f64> = (0..trials)
                .map(|seed| {
                    let e = encode(&x, shape, &params(bits, dim as u32, true, seed)).unwrap();
                    let got: f64 = e
                        .reconstruction
                        .iter()
                        .zip(&y)
                        .map(|(a, b)| *a as f64 * *b as f64)
                        .sum();
                    got - exact
                })
                .collect();
            let mean = errors.iter().sum::<f64>() / trials as f64;
            let var = errors.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / (trials - 1) as f64;
            let se = (var / trials as f64).sqrt();
            assert!(
                mean.abs() < 3.0 * se,
                "{bits}b+qjl: mean {mean:.2e}, se {se:.2e}"
            );
            assert!(se > 0.0);
        }
    }

    #[test]
    fn the_mse_codebook_alone_is_biased_for_inner_products() {
        // The contrast that makes the unbiasedness test meaningful: 1-bit codes shrink <y, x>.
        let dim = 128;
        let x = unit_vectors(1, dim, 11);
        let shape = Shape2::new(1, dim);
        let trials = 500;
        let mean: f64 = (0..trials)
            .map(|seed| {
                let e = encode(&x, shape, &params(1, dim as u32, false, seed)).unwrap();
                e.reconstruction
                    .iter()
                    .zip(&x)
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum::<f64>()
            })
            .sum::<f64>()
            / trials as f64;
        // 1 bit: x~ = sqrt(2/pi)/sqrt(d) sign(y), so E <x, x~> = (2/pi) <x, x> ~ 0.64, not 1.
        assert!((mean - 2.0 / std::f64::consts::PI).abs() < 0.02, "{mean}");
    }

    #[test]
    fn decode_reproduces_the_reconstruction_bit_exactly() {
        let mut r = Rng::new(5);
        for (shape, bits, qjl) in [
            (Shape2::new(12, 384), 3u8, false),
            (Shape2::new(5, 24), 1, true),
            (Shape2::new(3, 1024), 5, true),
            (Shape2::new(2, 2048), 8, false),
        ] {
            let x: Vec<f32> = (0..shape.len()).map(|_| r.normal() as f32 * 0.05).collect();
            let p = params(bits, rotation::block_len(shape.cols) as u32, qjl, 9);
            let e = encode(&x, shape, &p).unwrap();
            assert!(e.side_bytes <= e.bytes.len());
            let d = decode(&e.bytes, shape, &p).unwrap();
            assert_eq!(
                d.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                e.reconstruction
                    .iter()
                    .map(|v| v.to_bits())
                    .collect::<Vec<_>>(),
                "{}",
                p.label()
            );
            // Same input and options, same bytes.
            assert_eq!(encode(&x, shape, &p).unwrap().bytes, e.bytes);
        }
    }

    #[test]
    fn zeros_huge_norms_and_bad_shapes() {
        let shape = Shape2::new(4, 16);
        let p = params(3, 16, true, 1);
        let e = encode(&vec![0f32; 64], shape, &p).unwrap();
        assert!(e.reconstruction.iter().all(|&v| v == 0.0));
        assert_eq!(decode(&e.bytes, shape, &p).unwrap(), e.reconstruction);
        // Norms beyond f16: stored as f32.
        let big: Vec<f32> = (0..64).map(|i| 1e5 * (i as f32 - 31.5)).collect();
        let e = encode(&big, shape, &p).unwrap();
        assert_eq!(e.bytes[1], NORM_F32);
        let rel = sq_err(&big, &e.reconstruction) / sq_err(&big, &[0f32; 64]);
        assert!(rel < 0.1, "{rel}");
        // Rows too short for a rotation block, wrong d, bad bits, non-finite values.
        assert!(candidates(Shape2::new(4, 12), 0).is_empty());
        assert_eq!(candidates(Shape2::new(4, 384), 0)[0].dim, 128);
        assert!(encode(&[0.0; 12], Shape2::new(1, 12), &params(2, 4, false, 0)).is_err());
        assert!(encode(&[0.0; 64], shape, &params(2, 32, false, 0)).is_err());
        assert!(encode(&[0.0; 64], shape, &params(0, 16, false, 0)).is_err());
        let mut nan = vec![0f32; 64];
        nan[3] = f32::NAN;
        assert!(encode(&nan, shape, &params(2, 16, false, 0)).is_err());
    }
}
