//! Hyper-Compression's per-pair nearest-codeword search, `shaders/hyper.wgsl`: the geometry of the
//! codebook (a sheared lattice on a square, concentric rings for the pairs outside it) and the
//! closed-form search, exact including the square's edges. The hyper codec (`codec::hyper`)
//! chooses the geometry and entropy-codes the codes; the arithmetic is here so that the CPU twin
//! and the kernel's host code sit together.
//!
//! - Arguments: [`Geometry`] (everything the search needs), sent as the uniform `HyperDims`
//!   (GPU builds).
//! - CPU twin: [`nearest_codes`] / [`nearest_code`] ([`hyper_codes`] as the backend calls it),
//!   checked by [`check_hyper`].
//! - GPU host code: `Gpu::hyper_codes`; the pairs the kernel cannot decide with certainty in f32
//!   are decided by [`nearest_code`], so both backends give the same codes.

use crate::error::{Error, Result};

/// Most rings `C`.
pub const MAX_RINGS: u8 = 8;
/// Largest `T = sqrt(n)` (n up to about a million codewords per ring).
pub const MAX_SIDE_POINTS: u32 = 1024;

// ---------------------------------------------------------------------------------------------
// Arguments and CPU twin

/// Everything the per-pair search needs: the lattice and the rings, fixed-size so that a GPU
/// kernel can take it as a uniform.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Geometry {
    pub centre: [f32; 2],
    /// Side `L` of the square.
    pub side: f32,
    /// `T`: points per row and rows of the sheared grid (`n = T^2`).
    pub t: u32,
    /// Rings in use (`C`, 0 when every pair is inside the square).
    pub rings: u32,
    /// `r_j`, j = 0..=C: `r_0 = L/2`, `r_C = far`.
    pub radii: [f32; MAX_RINGS as usize + 1],
}

impl Geometry {
    pub fn new(centre: [f32; 2], side: f32, t: u32, rings: u32, far: f32) -> Geometry {
        let half = 0.5 * side;
        let mut radii = [half; MAX_RINGS as usize + 1];
        if rings > 0 {
            let step = (far - half) / rings as f32;
            for (j, r) in radii
                .iter_mut()
                .enumerate()
                .take(rings as usize + 1)
                .skip(1)
            {
                *r = half + j as f32 * step;
            }
            radii[rings as usize] = far;
        }
        Geometry {
            centre,
            side,
            t,
            rings,
            radii,
        }
    }

    /// Codewords per ring including the centre: `n + 1`.
    pub fn per_ring(&self) -> u32 {
        self.t * self.t + 1
    }

    /// Codeword `i` (0 = the centre, `k + 1` = lattice point `k`).
    #[inline]
    pub fn codeword(&self, i: u32) -> [f32; 2] {
        if i == 0 {
            return self.centre;
        }
        let k = i - 1;
        let (a, b) = (k / self.t, k % self.t);
        let h = self.side / self.t as f32;
        let shear = h / self.t as f32;
        let half = 0.5 * self.side;
        [
            self.centre[0] - half + (a as f32 * h + b as f32 * shear),
            self.row_y(b),
        ]
    }

    /// Pitch `h = L/T` of the grid, as every search computes it.
    #[inline]
    pub fn pitch(&self) -> f32 {
        self.side / self.t as f32
    }

    /// Shear `h/T` between consecutive rows.
    #[inline]
    pub fn shear(&self) -> f32 {
        self.pitch() / self.t as f32
    }

    /// Lower-left corner `centre - L/2` of the square (the origin of [`Self::codeword`]).
    #[inline]
    pub fn corner(&self) -> [f32; 2] {
        let half = 0.5 * self.side;
        [self.centre[0] - half, self.centre[1] - half]
    }

    /// The factor ring `j`'s pairs are shrunk by, `(L/2) / r_j` (1 for ring 0).
    #[inline]
    pub fn shrink_factor(&self, ring: u32) -> f32 {
        if ring == 0 {
            1.0
        } else {
            0.5 * self.side / self.radii[ring as usize]
        }
    }

    #[inline]
    fn row_y(&self, b: u32) -> f32 {
        let h = self.side / self.t as f32;
        self.centre[1] - 0.5 * self.side + b as f32 * h
    }

    /// How much ring `j`'s points were shrunk: the decoder multiplies by this (1 for ring 0).
    #[inline]
    pub fn expansion(&self, ring: u32) -> f32 {
        if ring == 0 {
            1.0
        } else {
            self.radii[ring as usize] / self.radii[0]
        }
    }

    /// The pair a code stands for.
    #[inline]
    pub fn reconstruct(&self, code: u32) -> [f32; 2] {
        let per = self.per_ring();
        let (ring, i) = (code / per, code % per);
        let w = self.codeword(i);
        let e = self.expansion(ring);
        [
            self.centre[0] + (w[0] - self.centre[0]) * e,
            self.centre[1] + (w[1] - self.centre[1]) * e,
        ]
    }
}

#[inline]
fn dist2(p: [f32; 2], q: [f32; 2]) -> f32 {
    let (dx, dy) = (p[0] - q[0], p[1] - q[1]);
    dx * dx + dy * dy
}

/// The ring of a pair and the point searched for (the pair shrunk into the disk).
#[inline]
fn shrink(p: [f32; 2], g: &Geometry) -> (u32, [f32; 2]) {
    let half = 0.5 * g.side;
    let (dx, dy) = (p[0] - g.centre[0], p[1] - g.centre[1]);
    if g.rings == 0 || (dx.abs() <= half && dy.abs() <= half) {
        return (0, p);
    }
    let d = (dx * dx + dy * dy).sqrt();
    let mut ring = g.rings;
    for j in 1..g.rings {
        if d <= g.radii[j as usize] {
            ring = j;
            break;
        }
    }
    let f = g.shrink_factor(ring);
    (ring, [g.centre[0] + dx * f, g.centre[1] + dy * f])
}

/// Index (0 = centre, `k + 1` = lattice point `k`) of the codeword nearest to `q`, ties to the
/// smallest index, exactly as a brute-force search over [`Geometry::codeword`] gives it.
///
/// Why it is exact: the nearest point of one row is the nearest column (the row's x are
/// increasing), checked with its neighbours against rounding; the rows are visited outwards from
/// the point's own row and a direction stops at the first row whose `dy^2` alone exceeds the best
/// distance (`dx^2 + dy^2 >= dy^2` holds in floating point too, and `dy` grows row by row).
#[inline]
pub fn nearest_codeword(q: [f32; 2], g: &Geometry) -> u32 {
    let t = g.t;
    let h = g.side / t as f32;
    let shear = h / t as f32;
    let corner = [g.centre[0] - 0.5 * g.side, g.centre[1] - 0.5 * g.side];
    let mut best = dist2(q, g.centre);
    let mut best_i = 0u32;
    let start = ((q[1] - corner[1]) / h).floor().clamp(0.0, (t - 1) as f32) as u32;
    // Visits row `b`: the nearest column and its two neighbours. Returns false once the row is
    // beyond the best distance (on the far side of q).
    let visit = |b: u32, best: &mut f32, best_i: &mut u32| -> bool {
        let dy = q[1] - g.row_y(b);
        if dy * dy > *best {
            return false;
        }
        let col = ((q[0] - corner[0] - b as f32 * shear) / h)
            .round()
            .clamp(0.0, (t - 1) as f32) as u32;
        for a in col.saturating_sub(1)..=(col + 1).min(t - 1) {
            let i = a * t + b + 1;
            let d = dist2(q, g.codeword(i));
            if d < *best || (d == *best && i < *best_i) {
                *best = d;
                *best_i = i;
            }
        }
        true
    };
    // Upwards: rows below q's own y (possible only through rounding) never stop the walk.
    for b in start..t {
        if !visit(b, &mut best, &mut best_i) && g.row_y(b) > q[1] {
            break;
        }
    }
    for b in (0..start).rev() {
        if !visit(b, &mut best, &mut best_i) && g.row_y(b) < q[1] {
            break;
        }
    }
    best_i
}

/// The code of one pair: its ring `j` and nearest codeword `i`, as `i + (n + 1) * j`.
#[inline]
pub fn nearest_code(p: [f32; 2], g: &Geometry) -> u32 {
    let (ring, q) = shrink(p, g);
    nearest_codeword(q, g) + g.per_ring() * ring
}

/// The per-pair search: [`nearest_code`] of each pair `(pairs[2i], pairs[2i+1])`. No allocation
/// inside the loop.
pub fn nearest_codes(pairs: &[f32], g: &Geometry) -> Vec<u32> {
    pairs
        .chunks_exact(2)
        .map(|p| nearest_code([p[0], p[1]], g))
        .collect()
}

/// Checks a geometry before a search: `1 <= T <= MAX_SIDE_POINTS`, at most `MAX_RINGS` rings,
/// a positive finite side and finite centre and radii.
pub fn check_geometry(g: &Geometry) -> Result<()> {
    let finite = g.side.is_finite()
        && g.side > 0.0
        && g.centre.iter().all(|c| c.is_finite())
        && g.radii.iter().all(|r| r.is_finite() && *r > 0.0);
    if !(1..=MAX_SIDE_POINTS).contains(&g.t) || g.rings > MAX_RINGS as u32 || !finite {
        return Err(Error::invalid(format!(
            "hyper geometry out of range: T = {}, {} rings, side {}",
            g.t, g.rings, g.side
        )));
    }
    Ok(())
}

/// Checks the operands of the hyper search (see [`crate::backend::Backend::hyper_codes`]).
pub fn check_hyper(pairs: &[f32], geometry: &Geometry) -> Result<()> {
    if !pairs.len().is_multiple_of(2) {
        return Err(Error::invalid(format!(
            "hyper search: {} values do not make pairs",
            pairs.len()
        )));
    }
    if let Some(bad) = pairs.iter().find(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "hyper search needs finite values, found {bad}"
        )));
    }
    check_geometry(geometry)
}

/// The CPU twin of the kernel as [`crate::backend::Backend::hyper_codes`] calls it:
/// [`nearest_codes`].
pub fn hyper_codes(pairs: &[f32], geometry: &Geometry) -> Vec<u32> {
    nearest_codes(pairs, geometry)
}

// ---------------------------------------------------------------------------------------------
// Arguments: the uniform of hyper.wgsl

/// `HyperDims` of hyper.wgsl, field for field: the [`Geometry`] as the kernel reads it.
#[cfg(feature = "gpu")]
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct HyperDims {
    pairs: u32,
    t: u32,
    rings: u32,
    groups_x: u32,
    centre: [f32; 2],
    corner: [f32; 2],
    half_side: f32,
    h: f32,
    shear: f32,
    tolerance: f32,
    radii: [f32; 12],
    factors: [f32; 12],
}

#[cfg(feature = "gpu")]
pub(super) fn layout() -> super::UniformLayout {
    uniform_layout!(
        crate::shaders::HYPER,
        HyperDims {
            pairs,
            t,
            rings,
            groups_x,
            centre,
            corner,
            half_side,
            h,
            shear,
            tolerance,
            radii,
            factors
        }
    )
}

// ---------------------------------------------------------------------------------------------
// GPU host code

#[cfg(feature = "gpu")]
pub use host::HyperCodes;

#[cfg(feature = "gpu")]
mod host {
    use super::{nearest_code, Geometry, HyperDims};
    use crate::backend::gpu::{grid, to_u32, Gpu, GpuResult, WORKGROUP};
    use crate::backend::GpuFailure;
    use crate::shaders;

    /// hyper.wgsl's `K`: a pair whose best and second-best codewords are within
    /// `K (M sqrt(d) + d)` of each other is decided on the CPU (see the kernel's header).
    const HYPER_TOLERANCE: f32 = 1.0 / 65536.0;
    /// Bit 31 of a code from hyper.wgsl: the kernel could not decide this pair with certainty.
    const HYPER_AMBIGUOUS: u32 = 1 << 31;

    /// The result of [`Gpu::hyper_codes`].
    #[derive(Clone, Debug, PartialEq)]
    pub struct HyperCodes {
        /// One code per pair, equal to [`nearest_codes`].
        pub codes: Vec<u32>,
        /// How many of them the kernel left to the CPU (near-ties, ring and edge boundaries).
        pub decided_on_cpu: usize,
    }

    impl Gpu {
        /// Hyper-Compression's per-pair search (`shaders/hyper.wgsl`), pairs tiled by the binding
        /// limit; the pairs the kernel marks ambiguous are decided by [`nearest_code`],
        /// so the codes are the CPU's. Declines (`Unsupported`) squares whose squared pitch is near
        /// the bottom of f32's normal range, or values whose squares are near its top, where the
        /// kernel's tolerance argument does not hold.
        pub async fn hyper_codes(&self, pairs: &[f32], g: &Geometry) -> GpuResult<HyperCodes> {
            let n = pairs.len() / 2;
            let h = g.pitch();
            let largest = pairs
                .iter()
                .chain(&g.centre)
                .fold(g.side, |m, &v| m.max(v.abs()));
            // 2^-100 and 2^50: squares (and the tolerance) stay normal f32 numbers with room to
            // spare.
            if !(h * h >= 2f32.powi(-100) && largest < 2f32.powi(50)) {
                return Err(GpuFailure::Unsupported(format!(
                    "hyper search: pitch {h:e} or magnitude {largest:e} outside the kernel's f32 range"
                )));
            }
            let mut radii = [0f32; 12];
            let mut factors = [0f32; 12];
            for j in 0..g.radii.len() {
                radii[j] = g.radii[j];
                factors[j] = g.shrink_factor(j as u32);
            }
            let tiled = self.upload_tiled(pairs, n, 2, 2, "pairs")?;
            let mut outputs = Vec::new();
            let mut encoder = self.encoder();
            for (_, count, buffer) in &tiled.tiles {
                let (gx, gy) = grid(count.div_ceil(WORKGROUP))?;
                let dims = HyperDims {
                    pairs: to_u32(*count, "pairs")?,
                    t: g.t,
                    rings: g.rings,
                    groups_x: gx,
                    centre: g.centre,
                    corner: g.corner(),
                    half_side: 0.5 * g.side,
                    h,
                    shear: g.shear(),
                    tolerance: HYPER_TOLERANCE,
                    radii,
                    factors,
                };
                let uniform = self.uniform(&dims);
                let codes = self.zeroed(count * 4, "codes");
                self.dispatch(
                    &mut encoder,
                    &shaders::HYPER,
                    "main",
                    &[(0, &uniform), (1, buffer), (2, &codes)],
                    (gx, gy, 1),
                );
                outputs.push((*count, codes));
            }
            self.submit(encoder);
            let mut out = HyperCodes {
                codes: Vec::with_capacity(n),
                decided_on_cpu: 0,
            };
            for (count, codes) in &outputs {
                out.codes.extend(self.read::<u32>(codes, *count).await?);
            }
            for (i, code) in out.codes.iter_mut().enumerate() {
                if *code & HYPER_AMBIGUOUS != 0 {
                    *code = nearest_code([pairs[2 * i], pairs[2 * i + 1]], g);
                    out.decided_on_cpu += 1;
                }
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn brute_force(q: [f32; 2], g: &Geometry) -> u32 {
        let mut best = (f32::INFINITY, 0);
        for i in 0..g.per_ring() {
            let d = dist2(q, g.codeword(i));
            if d < best.0 {
                best = (d, i);
            }
        }
        best.1
    }

    #[test]
    fn lattice_search_equals_brute_force() {
        let mut r = Rng::new(1);
        for (t, side, centre) in [
            (40u32, 0.1f32, [0.0f32, 0.0f32]),
            (15, 0.1, [0.013, -0.02]),
            (7, 3.0, [-1.5, 2.25]),
            (1, 0.5, [0.1, 0.1]),
            (2, 1.0, [0.0, 0.0]),
        ] {
            let g = Geometry::new(centre, side, t, 0, side);
            let half = 0.5 * side;
            let mut points = Vec::new();
            for _ in 0..3000 {
                // Inside the square.
                let u = [r.uniform() as f32 - 0.5, r.uniform() as f32 - 0.5];
                points.push([centre[0] + u[0] * side, centre[1] + u[1] * side]);
            }
            for _ in 0..3000 {
                // Near the edges and corners (where the grid ends without wrapping), inside and
                // out.
                let e = (r.uniform() as f32 - 0.5) * side / t as f32 * 0.2;
                let along = (r.uniform() as f32 - 0.5) * side;
                let edge = if r.uniform() < 0.5 { half } else { -half };
                let corner = if r.uniform() < 0.5 { half } else { -half };
                points.push(match r.below(3) {
                    0 => [centre[0] + edge + e, centre[1] + along],
                    1 => [centre[0] + along, centre[1] + edge + e],
                    _ => [centre[0] + corner + e, centre[1] + edge - e],
                });
            }
            for _ in 0..300 {
                // Well outside the square, and right at the centre.
                let u = [r.normal() as f32 * side, r.normal() as f32 * side];
                points.push([centre[0] + u[0], centre[1] + u[1]]);
                points.push([centre[0] + u[0] * 1e-4, centre[1] + u[1] * 1e-4]);
            }
            // Exactly on lattice points and on the midpoints between them (ties).
            for k in 0..t * t {
                let w = g.codeword(k + 1);
                points.push(w);
                let v = g.codeword((k + 1) % (t * t) + 1);
                points.push([0.5 * (w[0] + v[0]), 0.5 * (w[1] + v[1])]);
            }
            for q in points {
                assert_eq!(
                    nearest_codeword(q, &g),
                    brute_force(q, &g),
                    "T={t} L={side} point {q:?}"
                );
            }
        }
    }

    #[test]
    fn rings_shrink_outer_pairs_and_decode_back() {
        let g = Geometry::new([0.0, 0.0], 0.1, 40, 2, 0.3);
        assert_eq!(g.radii[..3], [0.05, 0.175, 0.3]);
        // A pair inside the square stays in ring 0; outside, the first ring that holds it.
        assert_eq!(shrink([0.04, -0.049], &g).0, 0);
        let (ring, q) = shrink([0.1, 0.1], &g);
        assert_eq!(ring, 1);
        assert!((dist2(q, [0.0, 0.0]).sqrt() - 0.05 * 0.1414 / 0.175).abs() < 1e-5);
        assert_eq!(shrink([0.0, 0.29], &g).0, 2);
        let code = nearest_codes(&[0.1, 0.1], &g)[0];
        let back = g.reconstruct(code);
        assert!((back[0] - 0.1).abs() < 0.175 / 0.05 * 0.1 / 40.0);
    }
}
