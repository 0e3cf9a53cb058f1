//! Hyper-Compression (Fan et al., arXiv 2409.00592), as its released code does it
//! (`compress_decom_v3`): the tensor is cut into pairs of consecutive weights, and each pair is
//! replaced by the nearest of `n` points of an irrational winding on a square of side `L` centred
//! on the pairs' mean (plus the centre itself). The winding with slope `T = sqrt(n)` sampled at `n`
//! points is a sheared grid: point `k = a*T + b` (`a, b < T`) sits at
//! `corner + (a*h + b*h/T, b*h)` with pitch `h = L/T`. Pairs outside the square are first shrunk
//! into its inscribed disk by one of `C` concentric rings (the "scaling adjustment"): ring `j`
//! holds distances up to `r_j = L/2 + j*(far - L/2)/C`, `far` the largest distance, and is shrunk
//! by `(L/2)/r_j`; the decoder scales back, so an outer pair's error grows by `r_j/(L/2)`.
//!
//! Nearest codeword: the reference searches a KD-tree; here [`nearest_codes`] decodes the lattice
//! in closed form (the rows of the sheared grid near the point, the nearest column of each, and
//! the centre), exact including the square's edges, where the grid does not wrap: the tests check
//! it against brute force over all codewords. It is one allocation-free loop per pair, mirrored by
//! `shaders/hyper.wgsl` (through [`crate::backend::Backend::hyper_codes`]), which gives the same
//! codes: pairs it cannot decide with certainty in f32 are decided here ([`nearest_code`]).
//!
//! Differences from the reference, chosen and measured (docs/METHODS.md): the codes are entropy
//! coded (three symbols per pair: ring, column, row, each with its own adaptive-free static model)
//! instead of fixed-width `bit_length(max index)` bits ([`fixed_width_bits`] gives that figure);
//! the ring count `C` is a parameter the allocator chooses (the reference searches `C <= C_max` by
//! MAE); `L` may be given relative to the tensor's RMS (`relative`), since an absolute `L` suits
//! only tensors of one scale; `n` must be a perfect square (the reference's 225 and 1600 are).
//!
//! Section layout (little-endian): `varint element_count` (checked against the shape), `f32 L` (absolute), `f32 centre_x, f32 centre_y, f32 far`,
//! `u8 rings` (0 when no pair is outside the square), `varint codes_len`, codes (entropy block
//! with three contexts, `3 * ceil(N/2)` symbols). An odd element count is padded with the mean,
//! which the decoder drops.

use serde::{Deserialize, Serialize};

use super::{put_varint, section, Encoded, Shape2};
pub use crate::backend::kernels::hyper::{
    check_geometry, nearest_code, nearest_codes, nearest_codeword, Geometry, MAX_RINGS,
    MAX_SIDE_POINTS,
};
use crate::backend::Backend;
use crate::entropy;
use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Params {
    /// Codewords per ring (the winding's sample count), a perfect square `T^2`.
    pub n: u32,
    /// Side `L` of the square: absolute, or a multiple of the tensor's RMS when `relative`.
    pub side: f32,
    pub relative: bool,
    /// Concentric rings for pairs outside the square (`C`); 0 clamps them to the square's edge.
    pub rings: u8,
}

impl Params {
    pub fn label(&self) -> String {
        let unit = if self.relative { "rms" } else { "" };
        format!("hyper n={} L={}{unit} C{}", self.n, self.side, self.rings)
    }
}

/// Candidates: `T` (n = T^2 codewords; T = 8, 15, 40 give about 2.7, 3.45 and 4.8 bits per weight
/// on MiniLM, the others fill the gaps so that a forced `--bpw` lands near its budget), with the
/// square's side `L` = 6 x the tensor's RMS and 3 rings, the best of L in {4, 5, 6, 8} x RMS and
/// C in {1, 3} measured on all-MiniLM-L6-v2 (docs/METHODS.md).
const CANDIDATE_SIDE_POINTS: [u32; 6] = [8, 11, 15, 20, 28, 40];
const CANDIDATE_SIDE_RMS: f32 = 6.0;
const CANDIDATE_RINGS: u8 = 3;
/// The ones `auto` tries (hyper never beat the scalar grid on MiniLM; these two cost ~5% of the
/// analysis time).
pub const AUTO_SIDE_POINTS: [u32; 2] = [15, 40];

/// The options tried for a tensor (the allocator in auto mode keeps [`AUTO_SIDE_POINTS`]).
pub fn candidates(shape: Shape2) -> Vec<Params> {
    if shape.len() < 2 {
        return Vec::new();
    }
    CANDIDATE_SIDE_POINTS
        .iter()
        .map(|&t| Params {
            n: t * t,
            side: CANDIDATE_SIDE_RMS,
            relative: true,
            rings: CANDIDATE_RINGS,
        })
        .collect()
}

/// `T = sqrt(n)`, or why `n` is not allowed.
fn side_points(n: u32) -> std::result::Result<u32, String> {
    let t = (n as f64).sqrt().round() as u32;
    // T is bounded before it is squared: a damaged header can claim n near u32::MAX.
    if t == 0 || t > MAX_SIDE_POINTS || t * t != n {
        return Err(format!(
            "hyper needs n = T^2 codewords with 1 <= T <= {MAX_SIDE_POINTS}, got {n}"
        ));
    }
    Ok(t)
}

fn check(p: &Params) -> std::result::Result<u32, String> {
    if p.rings > MAX_RINGS {
        return Err(format!(
            "hyper allows at most {MAX_RINGS} rings, got {}",
            p.rings
        ));
    }
    if !(p.side.is_finite() && p.side > 0.0) {
        return Err(format!("hyper needs a positive side L, got {}", p.side));
    }
    side_points(p.n)
}

/// The reference's fixed-width rate: `bit_length(max code)` bits per pair (at least 1).
pub fn fixed_width_bits(codes: &[u32]) -> u32 {
    let max = codes.iter().copied().max().unwrap_or(0);
    (32 - max.leading_zeros()).max(1)
}

/// The three symbols a code is stored as (ring, column, row): the centre is column `T`, row 0.
fn split(code: u32, g: &Geometry) -> [u32; 3] {
    let per = g.per_ring();
    let (ring, i) = (code / per, code % per);
    if i == 0 {
        [ring, g.t, 0]
    } else {
        [ring, (i - 1) / g.t, (i - 1) % g.t]
    }
}

const CONTEXTS: u32 = 3;
/// `f32 L, f32 centre_x, f32 centre_y, f32 far, u8 rings`.
const HEADER: usize = 17;

/// Encodes on the CPU (see [`encode_on`]).
pub fn encode(values: &[f32], shape: Shape2, p: &Params) -> Result<Encoded> {
    crate::backend::ready(encode_on(&Backend::Cpu, values, shape, p))
}

/// Encodes with the per-pair search on `backend`; the bytes do not depend on the backend (the
/// kernel's codes are the CPU's, see [`crate::backend::Backend::hyper_codes`]).
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
    let t = check(p).map_err(Error::option)?;
    if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "hyper quantization needs finite weights, found {bad}"
        )));
    }
    if values.is_empty() {
        return Ok(Encoded {
            bytes: Vec::new(),
            side_bytes: 0,
            reconstruction: Vec::new(),
        });
    }
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / values.len() as f64;
    let mut pairs = values.to_vec();
    if pairs.len() % 2 == 1 {
        pairs.push(mean as f32);
    }
    let side = if p.relative {
        let rms =
            (values.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / values.len() as f64).sqrt();
        (p.side as f64 * rms) as f32
    } else {
        p.side
    };
    // An all-zero tensor has no scale: any square will do.
    let side = if side.is_finite() && side > f32::MIN_POSITIVE * 1e6 {
        side
    } else {
        1.0
    };
    let centre = {
        let (mut sx, mut sy) = (0f64, 0f64);
        for q in pairs.chunks_exact(2) {
            sx += q[0] as f64;
            sy += q[1] as f64;
        }
        let m = (pairs.len() / 2) as f64;
        [(sx / m) as f32, (sy / m) as f32]
    };
    let half = 0.5 * side;
    let mut far = 0f32;
    let mut outside = false;
    for q in pairs.chunks_exact(2) {
        let (dx, dy) = (q[0] - centre[0], q[1] - centre[1]);
        far = far.max((dx * dx + dy * dy).sqrt());
        outside |= dx.abs() > half || dy.abs() > half;
    }
    if !far.is_finite() {
        return Err(Error::invalid(
            "hyper quantization: weights too large for f32 distances",
        ));
    }
    let rings = if outside { p.rings as u32 } else { 0 };
    let g = Geometry::new(centre, side, t, rings, far);
    let codes = backend.hyper_codes(&pairs, &g).await?;

    let mut reconstruction = Vec::with_capacity(pairs.len());
    let mut symbols = Vec::with_capacity(3 * codes.len());
    for &c in &codes {
        reconstruction.extend_from_slice(&g.reconstruct(c));
        symbols.extend_from_slice(&split(c, &g));
    }
    reconstruction.truncate(values.len());
    let contexts: Vec<u32> = (0..symbols.len() as u32).map(|i| i % CONTEXTS).collect();
    let alphabet = (rings + 1).max(t + 1);
    let coded = entropy::encode_with_contexts(&symbols, &contexts, alphabet, CONTEXTS);

    let mut bytes = Vec::with_capacity(HEADER + 20 + coded.bytes.len());
    put_varint(&mut bytes, values.len() as u64);
    for v in [side, centre[0], centre[1], far] {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    bytes.push(rings as u8);
    put_varint(&mut bytes, coded.bytes.len() as u64);
    let side_bytes = bytes.len() + coded.table_bytes;
    bytes.extend_from_slice(&coded.bytes);
    Ok(Encoded {
        bytes,
        side_bytes,
        reconstruction,
    })
}

pub fn decode(bytes: &[u8], shape: Shape2, p: &Params) -> Result<Vec<f32>> {
    let t = check(p).map_err(|e| Error::corrupt(format!("bad hyper header: {e}")))?;
    let n = shape.len();
    if n == 0 {
        return if bytes.is_empty() {
            Ok(Vec::new())
        } else {
            Err(Error::corrupt("bytes in an empty hyper section"))
        };
    }
    let mut r = section::Reader::new(bytes, "hyper");
    if r.varint()? != n as u64 {
        return Err(Error::corrupt(
            "hyper section holds a different element count than the shape",
        ));
    }
    let header = r.take(HEADER)?;
    let f = |i: usize| f32::from_le_bytes(header[4 * i..4 * i + 4].try_into().expect("4 bytes"));
    let (side, centre, far) = (f(0), [f(1), f(2)], f(3));
    let rings = header[16] as u32;
    let finite = side.is_finite() && centre.iter().all(|c| c.is_finite()) && far.is_finite();
    if !(finite && side > 0.0 && far >= 0.0) {
        return Err(Error::corrupt("hyper section has a bad square or centre"));
    }
    if rings != 0 && (rings != p.rings as u32 || far <= 0.5 * side) {
        return Err(Error::corrupt("hyper section has a bad ring count"));
    }
    let coded_len = r.varint()?;
    let coded = r.rest();
    if coded.len() as u64 != coded_len {
        return Err(Error::corrupt(
            "hyper section length does not match its codes",
        ));
    }
    let pairs = n.div_ceil(2);
    let count = pairs
        .checked_mul(CONTEXTS as usize)
        .ok_or_else(|| Error::corrupt("hyper pair count overflows"))?;
    let contexts: Vec<u32> = (0..count as u32).map(|i| i % CONTEXTS).collect();
    let alphabet = (rings + 1).max(t + 1);
    let symbols = entropy::decode_with_contexts(coded, &contexts, alphabet, CONTEXTS)?;
    drop(contexts);
    let g = Geometry::new(centre, side, t, rings, far);
    let mut out = Vec::with_capacity(2 * pairs);
    for s in symbols.chunks_exact(3) {
        let (ring, col, row) = (s[0], s[1], s[2]);
        let i = if col == t && row == 0 {
            0
        } else if col < t && row < t {
            col * t + row + 1
        } else {
            return Err(Error::corrupt("hyper code out of range"));
        };
        if ring > rings {
            return Err(Error::corrupt("hyper ring out of range"));
        }
        out.extend_from_slice(&g.reconstruct(i + g.per_ring() * ring));
    }
    out.truncate(n);
    Ok(out)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::rng::Rng;

    pub(crate) fn params(n: u32, side: f32, relative: bool, rings: u8) -> Params {
        Params {
            n,
            side,
            relative,
            rings,
        }
    }

    #[test]
    fn gaussian_pairs_reproduce_the_reference_mae() {
        // The check: N(0, 0.02^2), L = 0.1 (absolute), n = 1600, one ring: MAE within 10%
        // of 6.35e-4 at 12 bits per pair before entropy coding; the entropy-coded rate beside it.
        let mut r = Rng::new(2);
        let x: Vec<f32> = (0..400_000).map(|_| 0.02 * r.normal() as f32).collect();
        let shape = Shape2::new(400, 1000);
        let p = params(1600, 0.1, false, 1);
        let e = encode(&x, shape, &p).unwrap();
        let mae = x
            .iter()
            .zip(&e.reconstruction)
            .map(|(a, b)| (a - b).abs() as f64)
            .sum::<f64>()
            / x.len() as f64;
        assert!((mae / 6.35e-4 - 1.0).abs() < 0.1, "MAE {mae:.3e}");
        // Fixed width: recompute the codes the section holds.
        let symbols_per_pair = {
            let pairs = x.len() / 2;
            8.0 * e.bytes.len() as f64 / pairs as f64
        };
        let codes = {
            let (_, skip) = crate::codec::get_varint(&e.bytes).unwrap();
            let h = &e.bytes[skip..];
            let f = |i: usize| f32::from_le_bytes(h[4 * i..4 * i + 4].try_into().unwrap());
            let (centre, far) = ([f(1), f(2)], f(3));
            assert_eq!(h[16], 1, "some pairs are outside the square");
            nearest_codes(&x, &Geometry::new(centre, 0.1, 40, 1, far))
        };
        assert_eq!(fixed_width_bits(&codes), 12);
        eprintln!(
            "hyper n=1600 L=0.1 C1 on N(0, 0.02^2): MAE {mae:.4e}, fixed width 12 bits/pair, \
             entropy coded {symbols_per_pair:.3} bits/pair"
        );
        assert!(symbols_per_pair < 12.0, "{symbols_per_pair}");
    }

    #[test]
    fn decode_reproduces_the_reconstruction_bit_exactly() {
        let mut r = Rng::new(3);
        for (shape, p) in [
            (Shape2::new(30, 77), params(1600, 6.0, true, 1)),
            (Shape2::new(1, 1), params(225, 0.1, false, 3)),
            (Shape2::new(3, 5), params(64, 2.0, true, 0)),
            (Shape2::new(50, 64), params(4, 1.0, true, 8)),
        ] {
            let mut x: Vec<f32> = (0..shape.len()).map(|_| r.normal() as f32).collect();
            if x.len() > 10 {
                x[7] = 40.0; // a far outlier
            }
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
            assert_eq!(encode(&x, shape, &p).unwrap().bytes, e.bytes);
        }
        let zeros = vec![0f32; 64];
        let p = params(225, 6.0, true, 1);
        let e = encode(&zeros, Shape2::new(8, 8), &p).unwrap();
        assert_eq!(e.reconstruction, zeros);
        assert!(encode(&[f32::INFINITY; 4], Shape2::new(2, 2), &p).is_err());
        assert!(encode(&[0.0; 4], Shape2::new(2, 2), &params(200, 1.0, true, 1)).is_err());
        assert!(encode(&[0.0; 4], Shape2::new(2, 2), &params(225, 1.0, true, 9)).is_err());
    }

    #[test]
    fn more_rings_help_heavy_tails() {
        // Student-t-like tails: one ring amplifies the far pairs' error by far/(L/2).
        let mut r = Rng::new(4);
        let x: Vec<f32> = (0..100_000)
            .map(|_| {
                let v = r.normal() as f32;
                if r.uniform() < 0.01 {
                    v * 20.0
                } else {
                    v
                }
            })
            .collect();
        let shape = Shape2::new(100, 1000);
        let err = |rings| {
            let e = encode(&x, shape, &params(1600, 6.0, true, rings)).unwrap();
            x.iter()
                .zip(&e.reconstruction)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>()
        };
        assert!(err(3) < err(1), "{} vs {}", err(3), err(1));
    }
}
