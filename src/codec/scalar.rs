//! Scalar quantization of a tensor, element by element, with entropy-coded codes: the workhorse of
//! `--bpw`. Two grids:
//!
//! - [`Grid::Uniform`] (entropy-coded scalar quantization, ECSQ): one step for the whole tensor,
//!   set relative to the tensor's RMS (`step = rms * 2^(-fineness/4)`), no clipping (codes beyond
//!   the alphabet go through an escape). The codes are coded with one model per *row class*
//!   (half-octave class of the row's RMS relative to the step, stored as one byte per row), or with
//!   a single model when that is smaller. Non-zero codes are reconstructed slightly towards zero
//!   (offsets fitted by least squares, stored), which is where the centroid of a bin of a peaked
//!   density lies. With entropy coding a uniform step is near-optimal for MSE (about 0.25 bit from
//!   the Gaussian D(R) at high rate).
//! - [`Grid::Grouped`]: the classical fixed-alphabet scheme: groups of `group` consecutive elements
//!   of a row, each with its own scale and offset (stored as f16, counted as side information),
//!   chosen by an MSE search (shrunk ranges and a least-squares refit, not just min/max), `bits`
//!   bits per code before entropy coding.
//! - [`Grid::Columns`]: the uniform grid with a step per input channel (column), for a linear
//!   weight whose input statistics are known (`d_j = E[x_j^2]`, calibration or an importance
//!   matrix). An error in column `j` changes the layer's output in proportion to `d_j`, so at a
//!   given rate the expected output error `sum_j d_j step_j^2 / 12` is least when every column's
//!   term is equal: `step_j` proportional to `d_j^(-1/2)` (reverse water-filling at high rate).
//!   The columns are scaled by `2^(shift_j / 4)` before the uniform grid, `shift_j` the nearest
//!   quarter octave of `sqrt(d_j)` relative to the geometric mean (one signed byte per column,
//!   stored), and scaled back after it. Decoding needs only the section.
//!
//! Either grid may first apply a randomized Hadamard rotation to the rows ([`crate::rotation`]);
//! the reconstruction is rotated back, so the error is measured in the original domain.
//!
//! Section layout (all little-endian), Uniform: `f32 step, f32 offset1, f32 offset2,
//! u16 escape_limit, u8 context_mode, [u8 row_class; rows] if context_mode == 1,
//! varint codes_len, codes (entropy block), escapes (zigzag varints)`. Grouped: `varint codes_len,
//! codes (entropy block), [f16 scale, f16 minimum; groups]`. Columns: `[i8 shift; cols]`, then the
//! Uniform layout of the scaled matrix.
//!
//! What it does not do: vector quantization, mixed bit widths inside a tensor (the allocator
//! chooses per tensor), non-finite weights (rejected: the caller stores such tensors losslessly).

use half::f16;
use serde::{Deserialize, Serialize};

use super::{put_varint, section, Encoded, Estimated, Shape2};
use crate::backend::{self, Backend, GroupFits};
use crate::entropy;
use crate::error::{Error, Result};
use crate::rotation;

/// The quantization grid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "grid", rename_all = "lowercase")]
pub enum Grid {
    /// One step for the tensor: `step = rms * 2^(-fineness / 4)`; each +4 is one more bit per
    /// weight at high rate, whatever the tensor.
    Uniform { fineness: i32 },
    /// `bits`-bit codes in groups of `group` elements of a row, each group with an f16 scale and
    /// offset.
    Grouped { bits: u8, group: u32 },
    /// The uniform grid on the matrix with column `j` scaled by `2^(shift_j / 4)` (shifts from
    /// the input statistics, [`column_shifts`], stored in the section): column `j`'s step is
    /// the uniform step divided by that scale. `fineness` as in `Uniform`, on the scaled matrix.
    Columns { fineness: i32 },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Params {
    pub grid: Grid,
    /// Apply the randomized Hadamard rotation (seeded by `seed`) before quantizing.
    pub rotate: bool,
    pub seed: u64,
}

impl Params {
    pub fn label(&self) -> String {
        let rot = if self.rotate { " rot" } else { "" };
        match self.grid {
            Grid::Uniform { fineness } => format!("scalar ecsq f{fineness}{rot}"),
            Grid::Grouped { bits, group } => format!("scalar {bits}b g{group}{rot}"),
            Grid::Columns { fineness } => format!("scalar ecsq f{fineness} cols{rot}"),
        }
    }
}

/// Finest and coarsest uniform grids the candidates span (see [`candidates`]).
const FINENESS_MIN: i32 = -4;
const FINENESS_MAX: i32 = 28;
/// Largest code magnitude given its own symbol; larger ones are escaped (stored as varints).
const ESCAPE_LIMIT: u32 = 16_000;
/// Row classes for the Uniform grid's contexts (half-octaves of row RMS / step).
const ROW_CLASSES: u32 = 24;
const UNIFORM_HEADER: usize = 4 + 4 + 4 + 2 + 1;

/// The options the allocator tries for a tensor, from low to high rate: the uniform grid from
/// about 1.2 to about 9 bits per weight in quarter-bit steps (its rate on a Gaussian tensor is
/// about 2.05 + fineness/4 bits per weight; heavier-tailed tensors cost less). Quarter-bit steps
/// rather than half-bit ones: on all-MiniLM-L6-v2 they raised the embedding cosine from 0.9555 to
/// 0.9568 at 3 bpw and from 0.9905 to 0.9911 at 4 bpw, for ~1.5x the analysis time.
///
/// Grouped grids are not offered: measured on MiniLM, they are dominated by the uniform grid at
/// every rate (see docs/CODECS-scalar.md). The rotation is not offered either: it makes the
/// weights more Gaussian, which raises the entropy of uniform codes at a given MSE.
///
/// With input statistics (`columns`), the same ladder on [`Grid::Columns`] instead: at the same
/// rate it has the lower expected output error, which is what the allocator then minimises.
///
/// `ladder`: [`Ladder::Full`], every quarter bit; [`Ladder::Coarse`], every bit (a quarter of
/// the options): the analysis measures those first and `pipeline::settle` measures the quarter
/// bits near the allocator's choice ([`neighbours`]), which on MiniLM gave the full ladder's
/// distortion within 0.1% (docs/CODECS-scalar.md).
pub fn candidates(_shape: Shape2, seed: u64, columns: bool, ladder: Ladder) -> Vec<Params> {
    let stride = match ladder {
        Ladder::Full => 1,
        Ladder::Coarse => COARSE_STRIDE,
    };
    (FINENESS_MIN..=FINENESS_MAX)
        .step_by(stride as usize)
        .map(|fineness| Params {
            grid: match columns {
                true => Grid::Columns { fineness },
                false => Grid::Uniform { fineness },
            },
            rotate: false,
            seed,
        })
        .collect()
}

/// Which rungs of the uniform grid's ladder [`candidates`] gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ladder {
    /// Every fineness: quarter-bit steps.
    Full,
    /// Every [`COARSE_STRIDE`]-th fineness: one-bit steps.
    Coarse,
}

/// The coarse ladder's step in fineness (4: one bit per weight at high rate).
pub const COARSE_STRIDE: i32 = 4;

/// The rungs of `p`'s ladder within `reach` finenesses of it (`p` itself left out), finest
/// last: what refines the coarse ladder near a chosen option. Empty for a grid without a
/// ladder (grouped, rotated).
pub fn neighbours(p: &Params, reach: i32) -> Vec<Params> {
    let (fineness, columns) = match (&p.grid, p.rotate) {
        (Grid::Uniform { fineness }, false) => (*fineness, false),
        (Grid::Columns { fineness }, false) => (*fineness, true),
        _ => return Vec::new(),
    };
    let lo = (fineness - reach).max(FINENESS_MIN);
    let hi = (fineness + reach).min(FINENESS_MAX);
    (lo..=hi)
        .filter(|&f| f != fineness)
        .map(|f| Params {
            grid: match columns {
                true => Grid::Columns { fineness: f },
                false => Grid::Uniform { fineness: f },
            },
            rotate: false,
            seed: p.seed,
        })
        .collect()
}

/// Largest column shift (in quarter octaves, either way): eight octaves of step.
pub const MAX_SHIFT: i8 = 32;

/// The column shifts of [`Grid::Columns`] for input energies `d_j` (one per column): the nearest
/// quarter octave of `sqrt(d_j)` over the geometric mean of the positive energies, clamped to
/// +-[`MAX_SHIFT`]. A column whose inputs are never seen (`d_j = 0`, or not finite) gets the
/// coarsest step; with no positive energy at all every shift is 0 (the uniform grid).
pub fn column_shifts(energies: &[f32]) -> Vec<i8> {
    let usable = |d: f32| d.is_finite() && d > 0.0;
    let logs: Vec<f64> = energies
        .iter()
        .filter(|&&d| usable(d))
        .map(|&d| (d as f64).log2())
        .collect();
    if logs.is_empty() {
        return vec![0; energies.len()];
    }
    let mean = logs.iter().sum::<f64>() / logs.len() as f64;
    let max = MAX_SHIFT as f64;
    energies
        .iter()
        .map(|&d| match usable(d) {
            true => (2.0 * ((d as f64).log2() - mean)).round().clamp(-max, max) as i8,
            false => -MAX_SHIFT,
        })
        .collect()
}

/// `2^(shift / 4)` as an f32, built from exact powers of two and four constants, so that the
/// encoder and every decoder (native or WebAssembly) compute the same bits.
fn column_gain(shift: i8) -> f32 {
    const QUARTERS: [f32; 4] = [1.0, 1.189_207_1, std::f32::consts::SQRT_2, 1.681_792_8];
    let octave = (shift as i32).div_euclid(4);
    let power = f32::from_bits(((127 + octave) as u32) << 23);
    QUARTERS[(shift as i32).rem_euclid(4) as usize] * power
}

pub fn encode(values: &[f32], shape: Shape2, p: &Params) -> Result<Encoded> {
    backend::ready(encode_on(&Backend::Cpu, values, shape, p, None))
}

/// [`encode`] with the rotation and the grouped grid's scale search on `backend` (the uniform
/// grid's work is entropy coding, which stays on the CPU). `columns`: the input energies of the
/// columns, which [`Grid::Columns`] needs (the other grids ignore them).
pub async fn encode_on(
    backend: &Backend,
    values: &[f32],
    shape: Shape2,
    p: &Params,
    columns: Option<&[f32]>,
) -> Result<Encoded> {
    check_input(values, shape)?;
    let mut work = values.to_vec();
    if p.rotate && !work.is_empty() {
        backend.rotate(&mut work, shape.cols, p.seed, false).await?;
    }
    let (bytes, side_bytes, mut reconstruction) = match p.grid {
        Grid::Uniform { fineness } => encode_uniform(&work, shape, fineness)?,
        Grid::Columns { fineness } => {
            let shifts = column_shifts(energies_of(columns, shape)?);
            encode_columns(&work, shape, fineness, &shifts)?
        }
        Grid::Grouped { bits, group } => {
            check_grouped(bits, group)?;
            let fitted = backend
                .fit_groups(&work, shape.rows, shape.cols, bits, group as usize, true)
                .await?;
            encode_grouped(shape, bits, group, &fitted)
        }
    };
    if p.rotate && !reconstruction.is_empty() {
        backend
            .rotate(&mut reconstruction, shape.cols, p.seed, true)
            .await?;
    }
    Ok(Encoded {
        bytes,
        side_bytes,
        reconstruction,
    })
}

/// What [`encode_on`] would give for `p`, without entropy coding: the section's length
/// estimated from the codes' histograms, and the very values the section decodes to. `None` for
/// the grids that have no estimate (the grouped grid, a rotation): those are coded.
pub fn estimate(
    values: &[f32],
    shape: Shape2,
    p: &Params,
    columns: Option<&[f32]>,
) -> Result<Option<Estimated>> {
    check_input(values, shape)?;
    let (bytes, side_bytes, reconstruction) = match (&p.grid, p.rotate) {
        (Grid::Uniform { fineness }, false) => estimate_uniform(values, shape, *fineness)?,
        (Grid::Columns { fineness }, false) => {
            let shifts = column_shifts(energies_of(columns, shape)?);
            let gains: Vec<f32> = shifts.iter().map(|&k| column_gain(k)).collect();
            let scaled = scale_columns(values, shape, &gains);
            let (bytes, side, mut reconstruction) = estimate_uniform(&scaled, shape, *fineness)?;
            drop(scaled);
            unscale_columns(&mut reconstruction, &gains);
            (
                bytes + shifts.len() as u64,
                side + shifts.len(),
                reconstruction,
            )
        }
        _ => return Ok(None),
    };
    Ok(Some(Estimated {
        bytes,
        side_bytes,
        reconstruction,
    }))
}

/// The checks every grid makes of its input: one value per element, all finite.
fn check_input(values: &[f32], shape: Shape2) -> Result<()> {
    if values.len() != shape.len() {
        return Err(Error::invalid(format!(
            "{} values for a {}x{} tensor",
            values.len(),
            shape.rows,
            shape.cols
        )));
    }
    if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "scalar quantization needs finite weights, found {bad}"
        )));
    }
    Ok(())
}

/// The input energies [`Grid::Columns`] needs: one per column.
fn energies_of(columns: Option<&[f32]>, shape: Shape2) -> Result<&[f32]> {
    columns.filter(|c| c.len() == shape.cols).ok_or_else(|| {
        Error::invalid(format!(
            "the per-column grid needs the input statistics of the tensor's {} columns",
            shape.cols
        ))
    })
}

pub fn decode(bytes: &[u8], shape: Shape2, p: &Params) -> Result<Vec<f32>> {
    let mut out = match p.grid {
        Grid::Uniform { .. } => decode_uniform(bytes, shape)?,
        Grid::Columns { .. } => decode_columns(bytes, shape)?,
        Grid::Grouped { bits, group } => decode_grouped(bytes, shape, bits, group)?,
    };
    if p.rotate {
        rotation::inverse(&mut out, shape.cols, p.seed);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Uniform grid (ECSQ)

fn rms(values: &[f32]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    (values.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / values.len() as f64).sqrt()
}

/// Reconstruction of code `q`: `sign(q) * (|q| - offset) * step`, offset1 for |q| = 1 and
/// offset2 above. One function for the encoder and the decoder, so both give the same bits.
#[inline]
fn dequantize_uniform(q: i32, step: f32, offsets: [f32; 2]) -> f32 {
    match q {
        0 => 0.0,
        _ => {
            let m = q.unsigned_abs();
            let off = if m == 1 { offsets[0] } else { offsets[1] };
            let v = (m as f32 - off) * step;
            if q < 0 {
                -v
            } else {
                v
            }
        }
    }
}

/// `x` rounded to the nearest integer, halves away from zero, clamped to +-1e9: what
/// `x.round().clamp(-1e9, 1e9) as i32` gives, without the call to libm's `round` (the
/// baseline x86-64 target has no rounding instruction, and this runs once per weight per
/// option). Exact: below 2^53 an f64's fractional part `x - trunc(x)` is computed exactly.
#[inline(always)]
fn round_code(x: f64) -> i32 {
    let x = x.clamp(-1.5e9, 1.5e9);
    let t = x as i64; // truncation towards zero
    let frac = x - t as f64;
    let q = t + i64::from(frac >= 0.5) - i64::from(frac <= -0.5);
    q.clamp(-1_000_000_000, 1_000_000_000) as i32
}

fn row_class(row: &[f32], step: f64) -> u32 {
    let r = rms(row);
    if r <= 0.0 {
        return 0;
    }
    let c = (2.0 * (r / step).log2()).round() + 4.0;
    c.clamp(0.0, (ROW_CLASSES - 1) as f64) as u32
}

type Sections = (Vec<u8>, usize, Vec<f32>);

/// A tensor's codes on the uniform grid, before entropy coding: what the section stores and
/// what the size estimate counts.
struct UniformCodes {
    step: f32,
    offsets: [f32; 2],
    codes: Vec<i32>,
    /// Largest magnitude with its own symbol (larger codes are escaped).
    limit: u32,
    /// Each row's context class (empty for a single row).
    classes: Vec<u32>,
}

impl UniformCodes {
    fn alphabet(&self) -> u32 {
        2 * self.limit + 2
    }

    /// Code `q`'s symbol (the escape symbol, `2 * limit + 1`, for a code beyond the limit).
    #[inline]
    fn symbol(&self, q: i32) -> u32 {
        match q.unsigned_abs() <= self.limit {
            true => (q + self.limit as i32) as u32,
            false => 2 * self.limit + 1,
        }
    }

    /// Whether the row contexts may pay: more than one class.
    fn contexts_differ(&self) -> bool {
        !self.classes.is_empty() && self.classes.iter().any(|&c| c != self.classes[0])
    }

    /// The escaped codes, as the section stores them (zigzag varints).
    fn escapes(&self) -> Vec<u8> {
        let mut escapes = Vec::new();
        for &q in &self.codes {
            if q.unsigned_abs() > self.limit {
                put_varint(&mut escapes, zigzag(q));
            }
        }
        escapes
    }

    fn reconstruction(&self) -> Vec<f32> {
        self.codes
            .iter()
            .map(|&q| dequantize_uniform(q, self.step, self.offsets))
            .collect()
    }

    /// The section's bytes before the coded block: step, offsets, escape limit, context mode and
    /// (mode 1) the row classes.
    fn header(&self, mode: u8) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(UNIFORM_HEADER + self.classes.len() + 8);
        bytes.extend_from_slice(&self.step.to_le_bytes());
        bytes.extend_from_slice(&self.offsets[0].to_le_bytes());
        bytes.extend_from_slice(&self.offsets[1].to_le_bytes());
        bytes.extend_from_slice(&(self.limit as u16).to_le_bytes());
        bytes.push(mode);
        if mode == 1 {
            bytes.extend(self.classes.iter().map(|&c| c as u8));
        }
        bytes
    }
}

fn quantize_uniform(values: &[f32], shape: Shape2, fineness: i32) -> Result<UniformCodes> {
    if !(-64..=96).contains(&fineness) {
        return Err(Error::option(format!(
            "uniform fineness {fineness} out of range"
        )));
    }
    let tensor_rms = rms(values);
    let mut step = (tensor_rms * 2f64.powf(-fineness as f64 / 4.0)) as f32;
    if !(step.is_finite() && step > 0.0) {
        step = 1.0; // all zeros (or subnormal): every code is 0
    }
    let inv = 1.0 / step as f64;
    let codes: Vec<i32> = values.iter().map(|&v| round_code(v as f64 * inv)).collect();

    // Least-squares reconstruction offsets per magnitude class (|q| = 1, |q| >= 2):
    // offset = mean(|q| - |x|/step), kept within half a bin.
    let mut sums = [0f64; 2];
    let mut counts = [0u64; 2];
    let mut max_abs = 0u32;
    for (&q, &v) in codes.iter().zip(values) {
        if q != 0 {
            let m = q.unsigned_abs();
            let k = usize::from(m > 1);
            sums[k] += m as f64 - (v.abs() as f64) * inv;
            counts[k] += 1;
            max_abs = max_abs.max(m);
        }
    }
    let offsets = [0, 1].map(|k| {
        if counts[k] == 0 {
            0.0
        } else {
            (sums[k] / counts[k] as f64).clamp(-0.5, 0.5) as f32
        }
    });
    // Contexts: the row's RMS class.
    let classes: Vec<u32> = if shape.rows > 1 && shape.cols > 0 {
        values
            .chunks_exact(shape.cols)
            .map(|row| row_class(row, step as f64))
            .collect()
    } else {
        Vec::new()
    };
    Ok(UniformCodes {
        step,
        offsets,
        codes,
        limit: max_abs.min(ESCAPE_LIMIT),
        classes,
    })
}

fn encode_uniform(values: &[f32], shape: Shape2, fineness: i32) -> Result<Sections> {
    let u = quantize_uniform(values, shape, fineness)?;
    let alphabet = u.alphabet();
    let symbols: Vec<u32> = u.codes.iter().map(|&q| u.symbol(q)).collect();
    // Keep the row contexts only when they pay for their tables and bytes.
    let plain = entropy::encode(&symbols, alphabet);
    let mut best = (0u8, plain);
    if u.contexts_differ() {
        let with = entropy::encode_rows(&symbols, &u.classes, shape.cols, alphabet, ROW_CLASSES);
        if with.bytes.len() + u.classes.len() < best.1.bytes.len() {
            best = (1, with);
        }
    }
    let (mode, coded) = best;
    let escapes = u.escapes();
    let mut bytes = u.header(mode);
    bytes.reserve(coded.bytes.len() + escapes.len() + 10);
    put_varint(&mut bytes, coded.bytes.len() as u64);
    let side_bytes = bytes.len() + coded.table_bytes;
    bytes.extend_from_slice(&coded.bytes);
    bytes.extend_from_slice(&escapes);
    Ok((bytes, side_bytes, u.reconstruction()))
}

/// What [`encode_uniform`] would give, without entropy coding: the section's length estimated
/// from the codes' histograms ([`entropy::estimate`]; every other byte counted exactly, the
/// context mode chosen by the same rule on the estimates), its side information, and the very
/// reconstruction the section decodes to.
fn estimate_uniform(
    values: &[f32],
    shape: Shape2,
    fineness: i32,
) -> Result<(u64, usize, Vec<f32>)> {
    let u = quantize_uniform(values, shape, fineness)?;
    let alphabet = u.alphabet() as usize;
    let cols = shape.cols.max(1);
    let mut by_class = vec![0u32; alphabet * ROW_CLASSES as usize];
    let mut plain = vec![0u32; alphabet];
    if u.contexts_differ() {
        for (row, &c) in u.codes.chunks(cols).zip(&u.classes) {
            let h = &mut by_class[c as usize * alphabet..(c as usize + 1) * alphabet];
            for &q in row {
                h[u.symbol(q) as usize] += 1;
            }
        }
        for h in by_class.chunks_exact(alphabet) {
            plain.iter_mut().zip(h).for_each(|(p, &n)| *p += n);
        }
    } else {
        for &q in &u.codes {
            plain[u.symbol(q) as usize] += 1;
        }
    }
    let mut best = (0u8, entropy::estimate(&plain, u.alphabet(), 1));
    if u.contexts_differ() {
        let with = entropy::estimate(&by_class, u.alphabet(), ROW_CLASSES);
        if with.bytes + u.classes.len() < best.1.bytes {
            best = (1, with);
        }
    }
    let (mode, coded) = best;
    let escapes: usize = u
        .codes
        .iter()
        .filter(|q| q.unsigned_abs() > u.limit)
        .map(|&q| varint_len(zigzag(q)))
        .sum();
    let before = u.header(mode).len() + varint_len(coded.bytes as u64);
    let bytes = before + coded.bytes + escapes;
    Ok((bytes as u64, before + coded.table_bytes, u.reconstruction()))
}

/// The length of `v` as a varint ([`put_varint`]).
fn varint_len(v: u64) -> usize {
    (64 - v.max(1).leading_zeros() as usize).div_ceil(7)
}

fn decode_uniform(bytes: &[u8], shape: Shape2) -> Result<Vec<f32>> {
    let mut r = section::Reader::new(bytes, "scalar");
    let step = r.f32()?;
    let offsets = [r.f32()?, r.f32()?];
    if !(step.is_finite() && step > 0.0) || offsets.iter().any(|o| o.is_nan() || o.abs() > 0.5) {
        return Err(Error::corrupt("scalar section has a bad step or offset"));
    }
    let limit = r.u16()? as u32;
    if limit > ESCAPE_LIMIT {
        return Err(Error::corrupt("scalar escape limit out of range"));
    }
    let mode = r.u8()?;
    let n = shape.len();
    let contexts: Vec<u32> = match mode {
        0 => vec![0; n],
        1 => {
            let classes = r.take(shape.rows)?;
            if classes.iter().any(|&c| c as u32 >= ROW_CLASSES) {
                return Err(Error::corrupt("scalar row class out of range"));
            }
            classes
                .iter()
                .flat_map(|&c| std::iter::repeat_n(c as u32, shape.cols))
                .collect()
        }
        _ => return Err(Error::corrupt("unknown scalar context mode")),
    };
    let coded_len = r.varint()?;
    let coded = r.take(usize::try_from(coded_len).unwrap_or(usize::MAX))?;
    let alphabet = 2 * limit + 2;
    let symbols = entropy::decode_with_contexts(coded, &contexts, alphabet, ROW_CLASSES)?;
    drop(contexts);
    let mut out = Vec::with_capacity(n);
    for s in symbols {
        let q = if s == 2 * limit + 1 {
            let z = r.varint()?;
            let q = unzigzag(z).ok_or_else(|| Error::corrupt("scalar escape out of range"))?;
            if q.unsigned_abs() <= limit {
                return Err(Error::corrupt("scalar escape holds a small code"));
            }
            q
        } else {
            s as i32 - limit as i32
        };
        out.push(dequantize_uniform(q, step, offsets));
    }
    if !r.is_done() {
        return Err(Error::corrupt("bytes left over in a scalar section"));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Per-column steps: the uniform grid on the column-scaled matrix

fn encode_columns(values: &[f32], shape: Shape2, fineness: i32, shifts: &[i8]) -> Result<Sections> {
    let gains: Vec<f32> = shifts.iter().map(|&k| column_gain(k)).collect();
    let scaled = scale_columns(values, shape, &gains);
    let (uniform, uniform_side, mut reconstruction) = encode_uniform(&scaled, shape, fineness)?;
    drop(scaled);
    unscale_columns(&mut reconstruction, &gains);
    let mut bytes = Vec::with_capacity(shifts.len() + uniform.len());
    bytes.extend(shifts.iter().map(|&k| k as u8));
    bytes.extend_from_slice(&uniform);
    Ok((bytes, uniform_side + shifts.len(), reconstruction))
}

/// The matrix with column `j` multiplied by `gains[j]`.
fn scale_columns(values: &[f32], shape: Shape2, gains: &[f32]) -> Vec<f32> {
    let mut scaled = values.to_vec();
    for row in scaled.chunks_exact_mut(shape.cols.max(1)) {
        row.iter_mut().zip(gains).for_each(|(v, g)| *v *= g);
    }
    scaled
}

/// Divides column `j` of a row-major matrix by `gains[j]`: the encoder's reconstruction and the
/// decoder's output, one function so both give the same bits.
fn unscale_columns(values: &mut [f32], gains: &[f32]) {
    for row in values.chunks_exact_mut(gains.len().max(1)) {
        row.iter_mut().zip(gains).for_each(|(v, g)| *v /= g);
    }
}

fn decode_columns(bytes: &[u8], shape: Shape2) -> Result<Vec<f32>> {
    if bytes.len() < shape.cols {
        return Err(Error::corrupt(
            "scalar section too short for its column shifts",
        ));
    }
    let (shifts, uniform) = bytes.split_at(shape.cols);
    let mut gains = Vec::with_capacity(shape.cols);
    for &b in shifts {
        let k = b as i8;
        if !(-MAX_SHIFT..=MAX_SHIFT).contains(&k) {
            return Err(Error::corrupt("scalar column shift out of range"));
        }
        gains.push(column_gain(k));
    }
    let mut out = decode_uniform(uniform, shape)?;
    unscale_columns(&mut out, &gains);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Grouped grid: the per-group fit is the backend's (`backend::kernels::group_fit`, a CPU
// function and a GPU kernel); this codes and decodes its result.

fn check_grouped(bits: u8, group: u32) -> Result<()> {
    if !(1..=8).contains(&bits) || group == 0 {
        return Err(Error::option(format!(
            "grouped scalar grid needs 1-8 bits and a group > 0 (got {bits}b g{group})"
        )));
    }
    Ok(())
}

/// The groups of a row-major matrix: consecutive runs of `group` elements within each row (the
/// last group of a row may be shorter). Yields (start, len) in storage order.
fn groups(shape: Shape2, group: usize) -> impl Iterator<Item = (usize, usize)> {
    let cols = shape.cols;
    (0..shape.rows).flat_map(move |r| {
        (0..cols)
            .step_by(group)
            .map(move |c| (r * cols + c, group.min(cols - c)))
    })
}

/// Codes the fitted groups: the entropy-coded codes, then the f16 (scale, minimum) of each group.
fn encode_grouped(shape: Shape2, bits: u8, group: u32, fitted: &GroupFits) -> Sections {
    let mut reconstruction = Vec::with_capacity(fitted.codes.len());
    let mut side = Vec::with_capacity(4 * fitted.fits.len());
    for ((start, len), &(scale, minimum)) in groups(shape, group as usize).zip(&fitted.fits) {
        side.extend_from_slice(&f16::from_f32(scale).to_le_bytes());
        side.extend_from_slice(&f16::from_f32(minimum).to_le_bytes());
        reconstruction.extend(
            fitted.codes[start..start + len]
                .iter()
                .map(|&q| q as f32 * scale + minimum),
        );
    }
    let coded = entropy::encode(&fitted.codes, 1 << bits);
    let mut bytes = Vec::with_capacity(coded.bytes.len() + side.len() + 8);
    put_varint(&mut bytes, coded.bytes.len() as u64);
    let side_bytes = bytes.len() + coded.table_bytes + side.len();
    bytes.extend_from_slice(&coded.bytes);
    bytes.extend_from_slice(&side);
    (bytes, side_bytes, reconstruction)
}

fn decode_grouped(bytes: &[u8], shape: Shape2, bits: u8, group: u32) -> Result<Vec<f32>> {
    check_grouped(bits, group).map_err(|e| Error::corrupt(e.to_string()))?;
    let mut r = section::Reader::new(bytes, "scalar");
    let coded_len = r.varint()?;
    let coded = r.take(usize::try_from(coded_len).unwrap_or(usize::MAX))?;
    let n_groups = shape.rows * shape.cols.div_ceil(group as usize);
    if r.remaining() != 4 * n_groups {
        return Err(Error::corrupt(
            "scalar section has the wrong number of group scales",
        ));
    }
    let symbols = entropy::decode(coded, shape.len(), 1 << bits)?;
    let mut out = Vec::with_capacity(shape.len());
    for (start, len) in groups(shape, group as usize) {
        let s = r.take(4)?;
        let scale = f16::from_le_bytes([s[0], s[1]]).to_f32();
        let minimum = f16::from_le_bytes([s[2], s[3]]).to_f32();
        if !(scale.is_finite() && minimum.is_finite() && scale >= 0.0) {
            return Err(Error::corrupt("scalar group scale is not finite"));
        }
        for &q in &symbols[start..start + len] {
            out.push(q as f32 * scale + minimum);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Byte helpers

fn zigzag(q: i32) -> u64 {
    ((q << 1) ^ (q >> 31)) as u32 as u64
}

fn unzigzag(z: u64) -> Option<i32> {
    let z = u32::try_from(z).ok()?;
    Some(((z >> 1) as i32) ^ -((z & 1) as i32))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::backend::kernels::group_fit::fit_groups;
    use crate::rng::Rng;

    pub(crate) fn gaussian(n: usize, seed: u64) -> Vec<f32> {
        let mut r = Rng::new(seed);
        (0..n).map(|_| r.normal() as f32).collect()
    }

    fn mse(a: &[f32], b: &[f32]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| ((x - y) as f64).powi(2))
            .sum::<f64>()
            / a.len() as f64
    }

    #[test]
    fn codes_round_as_f64_round_does() {
        let mut r = Rng::new(5);
        let mut xs: Vec<f64> = vec![
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -1.5,
            2.5,
            -2.5,
            0.499_999_999_999_999_94,
            -0.499_999_999_999_999_94,
            1e9,
            -1e9,
            1e9 + 0.5,
            -1e9 - 0.5,
            1e12,
            -1e12,
            f64::INFINITY,
            f64::NEG_INFINITY,
            4_503_599_627_370_495.5,
            f64::MIN_POSITIVE,
        ];
        xs.extend((0..100_000).map(|_| r.normal() * 10f64.powi(r.below(10) as i32 - 2)));
        xs.extend((0..10_000).map(|i| i as f64 / 4.0 - 1250.0));
        for x in xs {
            let want = x.round().clamp(-1e9, 1e9) as i32;
            assert_eq!(round_code(x), want, "{x}");
        }
    }

    /// The size the analysis estimates for a scalar option is within a few bytes of its coded
    /// section, and the reconstruction is the coded one's, bit for bit.
    #[test]
    fn estimates_are_close_to_the_coded_size_with_the_same_reconstruction() {
        let energies: Vec<f32> = (0..48).map(|j| 0.01 + (j as f32).powi(3)).collect();
        for (rows, cols, seed) in [
            (1usize, 3000usize, 1u64),
            (40, 48, 2),
            (300, 48, 3),
            (2, 48, 4),
        ] {
            let mut x = gaussian(rows * cols, seed);
            // Rows of different scales (so the row contexts pay) and a few outliers (escapes).
            for (r, row) in x.chunks_mut(cols).enumerate() {
                row.iter_mut().for_each(|v| *v *= 1.0 + (r % 7) as f32);
            }
            x[7] = 4e4;
            let shape = Shape2::new(rows, cols);
            for fineness in [-4, 0, 6, 13, 28] {
                for grid in [Grid::Uniform { fineness }, Grid::Columns { fineness }] {
                    if matches!(grid, Grid::Columns { .. }) && cols != 48 {
                        continue;
                    }
                    let p = Params {
                        grid,
                        rotate: false,
                        seed: 0,
                    };
                    let columns = Some(&energies[..]);
                    let coded =
                        backend::ready(encode_on(&Backend::Cpu, &x, shape, &p, columns)).unwrap();
                    let e = estimate(&x, shape, &p, columns)
                        .unwrap()
                        .expect("an estimate");
                    let off = e.bytes as i64 - coded.bytes.len() as i64;
                    assert!(
                        off.abs() <= 12,
                        "{rows}x{cols} {}: estimate {} against {}",
                        p.label(),
                        e.bytes,
                        coded.bytes.len()
                    );
                    assert!(
                        (e.side_bytes as i64 - coded.side_bytes as i64).abs() <= 1,
                        "{}",
                        p.label()
                    );
                    let same = e
                        .reconstruction
                        .iter()
                        .zip(&coded.reconstruction)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{}", p.label());
                }
            }
        }
        assert!(estimate(
            &[1.0; 4],
            Shape2::new(2, 2),
            &Params {
                grid: Grid::Grouped { bits: 4, group: 2 },
                rotate: false,
                seed: 0
            },
            None
        )
        .unwrap()
        .is_none());
    }

    pub(crate) fn uniform(fineness: i32, rotate: bool) -> Params {
        Params {
            grid: Grid::Uniform { fineness },
            rotate,
            seed: 7,
        }
    }

    #[test]
    fn decode_reproduces_the_reconstruction_bit_exactly() {
        let shape = Shape2::new(48, 96);
        let mut x = gaussian(shape.len(), 1);
        x[5] = 4000.0; // an escaped code at fine steps
        for p in [
            uniform(-4, false),
            uniform(12, true),
            uniform(28, false),
            Params {
                grid: Grid::Grouped { bits: 3, group: 40 },
                rotate: true,
                seed: 3,
            },
        ] {
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
        }
    }

    #[test]
    fn edge_shapes() {
        for shape in [Shape2::new(1, 1), Shape2::new(1, 7), Shape2::new(5, 1)] {
            let x = gaussian(shape.len(), 2);
            for p in [uniform(8, true), uniform(0, false)] {
                let e = encode(&x, shape, &p).unwrap();
                assert_eq!(decode(&e.bytes, shape, &p).unwrap(), e.reconstruction);
            }
        }
        let zeros = vec![0f32; 64];
        let e = encode(&zeros, Shape2::new(8, 8), &uniform(8, false)).unwrap();
        assert_eq!(e.reconstruction, zeros);
        assert!(encode(&[f32::NAN], Shape2::new(1, 1), &uniform(8, false)).is_err());
        let e = encode(&[], Shape2::new(0, 4), &uniform(8, false)).unwrap();
        assert!(decode(&e.bytes, Shape2::new(0, 4), &uniform(8, false))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn uniform_data_has_step_squared_over_twelve_error() {
        // Uniform on [-1, 1]: the bins are evenly filled, so the centroid offsets stay ~0.
        let mut r = Rng::new(4);
        let x: Vec<f32> = (0..100_000)
            .map(|_| (2.0 * r.uniform() - 1.0) as f32)
            .collect();
        let shape = Shape2::new(100, 1000);
        for fineness in [8, 16] {
            let e = encode(&x, shape, &uniform(fineness, false)).unwrap();
            let step = f32::from_le_bytes(e.bytes[0..4].try_into().unwrap()) as f64;
            let ratio = mse(&x, &e.reconstruction) / (step * step / 12.0);
            assert!(
                (ratio - 1.0).abs() < 0.03,
                "fineness {fineness}: ratio {ratio}"
            );
        }
    }

    #[test]
    fn gaussian_rate_is_near_the_rate_distortion_bound() {
        // D(R) = 2^-2R for unit variance; ECSQ should be within ~0.3 bit at 3-6 bits.
        let shape = Shape2::new(200, 1000);
        let x = gaussian(shape.len(), 5);
        for fineness in [4, 8, 12, 16] {
            let e = encode(&x, shape, &uniform(fineness, false)).unwrap();
            let rate = 8.0 * e.bytes.len() as f64 / x.len() as f64;
            let d = mse(&x, &e.reconstruction);
            let rate_bound = -0.5 * d.log2();
            assert!(
                rate - rate_bound < 0.3 && rate - rate_bound > 0.0,
                "fineness {fineness}: {rate:.3} bits at D {d:.2e}, bound {rate_bound:.3}"
            );
        }
    }

    #[test]
    fn mse_search_beats_min_max() {
        let shape = Shape2::new(64, 256);
        let x = gaussian(shape.len(), 6);
        for bits in [2u8, 3, 4] {
            let grid = |search| {
                let fitted = fit_groups(&x, shape.rows, shape.cols, bits, 64, search);
                encode_grouped(shape, bits, 64, &fitted).2
            };
            let (searched, plain) = (grid(true), grid(false));
            let (es, ep) = (mse(&x, &searched), mse(&x, &plain));
            assert!(es < 0.9 * ep, "{bits} bits: search {es} vs min/max {ep}");
        }
    }

    #[test]
    fn candidates_span_the_rates_in_order() {
        let shape = Shape2::new(100, 1000);
        let x = gaussian(shape.len(), 8);
        let c = candidates(shape, 1, false, Ladder::Full);
        // Quarter-bit steps over ~1.2 to ~9 bits per weight: a modest count the analysis can afford.
        assert!(c.len() <= 36, "{} candidates", c.len());
        // The coarse rungs are every fourth one, and a rung's neighbours fill the gaps.
        let coarse = candidates(shape, 1, false, Ladder::Coarse);
        assert_eq!(coarse.len(), c.len().div_ceil(COARSE_STRIDE as usize));
        assert!(coarse.iter().all(|p| c.contains(p)));
        for p in &coarse {
            let near = neighbours(p, COARSE_STRIDE / 2);
            assert!(!near.contains(p) && near.iter().all(|n| c.contains(n)));
            assert!(
                near.len() >= 2 && near.len() <= 4,
                "{} neighbours",
                near.len()
            );
        }
        let rates: Vec<f64> = c
            .iter()
            .map(|p| 8.0 * encode(&x, shape, p).unwrap().bytes.len() as f64 / x.len() as f64)
            .collect();
        assert!(rates.windows(2).all(|w| w[0] < w[1]), "{rates:?}");
        assert!(rates[0] < 1.7 && *rates.last().unwrap() > 8.5, "{rates:?}");
        for p in &c {
            let json = serde_json::to_string(p).unwrap();
            assert_eq!(&serde_json::from_str::<Params>(&json).unwrap(), p);
        }
    }

    fn columns(fineness: i32) -> Params {
        Params {
            grid: Grid::Columns { fineness },
            rotate: false,
            seed: 7,
        }
    }

    fn encode_columns_of(x: &[f32], shape: Shape2, p: &Params, d: &[f32]) -> Encoded {
        backend::ready(encode_on(&Backend::Cpu, x, shape, p, Some(d))).unwrap()
    }

    #[test]
    fn column_shifts_are_quarter_octaves_of_the_input_amplitude() {
        // Energies 1, 16, 1/16 (geometric mean 1): amplitudes 1, 4, 1/4 = 0, +8, -8 quarter octaves.
        assert_eq!(column_shifts(&[1.0, 16.0, 1.0 / 16.0]), vec![0, 8, -8]);
        assert_eq!(column_shifts(&[4.0, 4.0]), vec![0, 0]);
        // An unseen column gets the coarsest step; extremes are clamped.
        assert_eq!(
            column_shifts(&[1.0, 0.0, f32::NAN]),
            vec![0, -MAX_SHIFT, -MAX_SHIFT]
        );
        assert_eq!(column_shifts(&[1e-30, 1e30]), vec![-MAX_SHIFT, MAX_SHIFT]);
        assert_eq!(column_shifts(&[0.0, 0.0]), vec![0, 0]);
        for k in -MAX_SHIFT..=MAX_SHIFT {
            let want = 2f64.powf(k as f64 / 4.0);
            assert!(
                (column_gain(k) as f64 / want - 1.0).abs() < 1e-7,
                "shift {k}"
            );
        }
    }

    #[test]
    fn per_column_steps_lower_the_output_error_at_the_same_rate() {
        // Columns of inputs 1000x apart in energy: at about the same size, the per-column grid's
        // output error (sum_j d_j e_j^2) is far below the uniform grid's.
        let shape = Shape2::new(64, 128);
        let x = gaussian(shape.len(), 9);
        let d: Vec<f32> = (0..shape.cols)
            .map(|j| if j % 2 == 0 { 1.0 } else { 1000.0 })
            .collect();
        let out = crate::distortion::OutputWeights::new(&x, &d);
        let point = |e: &Encoded| {
            (
                e.bytes.len() as f64,
                out.relative_error(&x, &e.reconstruction, crate::dtype::DType::F32),
            )
        };
        let plain: Vec<(f64, f64)> = (0..24)
            .map(|f| point(&encode(&x, shape, &uniform(f, false)).unwrap()))
            .collect();
        for f in [4, 8, 12] {
            let (bytes, err) = point(&encode_columns_of(&x, shape, &columns(f), &d));
            // The uniform grid's error at the smallest of its sizes at least as large.
            let (_, plain_err) = plain.iter().find(|(b, _)| *b >= bytes).copied().unwrap();
            assert!(
                err < 0.7 * plain_err,
                "f{f}: {err} vs {plain_err} at {bytes} bytes"
            );
        }
    }

    #[test]
    fn the_per_column_grid_decodes_to_its_reconstruction_and_refuses_bad_shifts() {
        let shape = Shape2::new(9, 33);
        let x = gaussian(shape.len(), 10);
        let d: Vec<f32> = (0..shape.cols).map(|j| (j as f32 * 0.37).exp()).collect();
        for f in [-4, 6, 20] {
            let p = columns(f);
            let e = encode_columns_of(&x, shape, &p, &d);
            let decoded = decode(&e.bytes, shape, &p).unwrap();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&decoded), bits(&e.reconstruction), "f{f}");
            assert!(e.side_bytes >= shape.cols);
            let mut bad = e.bytes.clone();
            bad[0] = 100; // shift 100 > MAX_SHIFT
            assert!(decode(&bad, shape, &p).is_err());
            assert!(decode(&e.bytes[..shape.cols - 1], shape, &p).is_err());
        }
        // Without the statistics the per-column grid cannot be encoded; with the wrong count neither.
        assert!(encode(&x, shape, &columns(8)).is_err());
        assert!(backend::ready(encode_on(
            &Backend::Cpu,
            &x,
            shape,
            &columns(8),
            Some(&d[1..])
        ))
        .is_err());
        // Equal energies: the uniform grid's codes, behind a row of zero shifts.
        let flat = vec![2.0f32; shape.cols];
        let e = encode_columns_of(&x, shape, &columns(8), &flat);
        let u = encode(&x, shape, &uniform(8, false)).unwrap();
        assert_eq!(&e.bytes[shape.cols..], &u.bytes[..]);
        assert_eq!(e.reconstruction, u.reconstruction);
    }
}
