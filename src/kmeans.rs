//! k-means clustering of f32 vectors: the codebook trainer of the vector-quantization codec and the
//! kernel that `cargo xtask bench` times against faiss.
//!
//! What it does: seeded k-means++ initialisation on a sample of the points, then Lloyd iterations
//! (assign every point to its nearest centroid, move every centroid to the mean of its points) over
//! all points, re-seeding empty clusters by splitting the largest one, and stopping early once the
//! assignments no longer change.
//!
//! What it does not do: mini-batch or approximate search, weighting, or any GPU work (the GPU
//! backend, when it exists, has its own kernel and is checked against [`assign`]).
//!
//! Determinism: the result depends only on the points, `k`, `iters` and the generator's seed.
//! Distances are computed with separate multiplies and adds (never fused), in a fixed order, so the
//! SIMD paths picked at run time and the plain path give identical bits; the assignment may run on
//! several threads natively, but each point's result does not depend on the split, and centroid sums
//! are accumulated in f64 in point order on one thread.

use crate::error::{Error, Result};
use crate::rng::Rng;

/// Centroids of one k-means fit, row-major: centroid `j` is `centroids[j*dim .. (j+1)*dim]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Codebook {
    pub dim: usize,
    pub centroids: Vec<f32>,
}

impl Codebook {
    /// Number of centroids.
    pub fn k(&self) -> usize {
        self.centroids.len().checked_div(self.dim).unwrap_or(0)
    }

    pub fn centroid(&self, j: usize) -> &[f32] {
        &self.centroids[j * self.dim..(j + 1) * self.dim]
    }
}

/// A fit with its history, for tests and reports.
#[derive(Clone, Debug)]
pub struct Fit {
    pub codebook: Codebook,
    /// Sum of squared distances of all points to their assigned centroid, after each assignment
    /// step (so entry `i` is the objective of the centroids produced by update step `i - 1`).
    pub objective: Vec<f64>,
    /// Lloyd iterations run (assignment + update), at most `iters`.
    pub iterations: usize,
}

/// k-means++ runs on a sample of at most this many points per centroid (faiss samples 256 per
/// centroid for its training; seeding needs fewer).
const INIT_POINTS_PER_CENTROID: usize = 16;
/// Bound on the k-means++ work (centroids x sampled points), so that a large k stays affordable.
const INIT_MAX_WORK: usize = 1 << 26;
/// Centroids processed together by the assignment kernel (one or two SIMD registers wide).
const LANES: usize = 16;
/// Below this many (point, centroid) pairs an assignment runs on the calling thread only.
#[cfg(not(target_arch = "wasm32"))]
const MIN_PAIRS_PER_THREAD: usize = 1 << 20;

/// Fits `k` centroids to `points` (`n = points.len() / dim` vectors of `dim` f32 each) with at most
/// `iters` Lloyd iterations. If `k > n` the codebook has `n` entries (every point its own centroid
/// before Lloyd). Errors on `dim == 0`, a length that is not a multiple of `dim`, `k == 0` with
/// points present, or non-finite values.
pub fn fit(points: &[f32], dim: usize, k: usize, iters: usize, rng: &mut Rng) -> Result<Codebook> {
    Ok(fit_detailed(points, dim, k, iters, rng)?.codebook)
}

/// [`fit`], with the objective after each assignment step.
pub fn fit_detailed(
    points: &[f32],
    dim: usize,
    k: usize,
    iters: usize,
    rng: &mut Rng,
) -> Result<Fit> {
    let Some(mut codebook) = seed(points, dim, k, rng)? else {
        return Ok(Fit {
            codebook: Codebook {
                dim,
                centroids: Vec::new(),
            },
            objective: Vec::new(),
            iterations: 0,
        });
    };
    let n = points.len() / dim;
    let mut objective = Vec::new();
    let mut codes = vec![0u32; n];
    let mut distances = vec![0f32; n];
    let mut previous: Vec<u32> = Vec::new();
    let mut iterations = 0;
    for it in 0..iters {
        assign_into(points, &codebook, &mut codes, &mut distances);
        objective.push(distances.iter().map(|&d| d as f64).sum());
        if it > 0 && codes == previous {
            // The centroids are already the means of these clusters: a fixed point.
            break;
        }
        update_centroids(points, &mut codebook, &mut codes, &distances);
        iterations += 1;
        std::mem::swap(&mut previous, &mut codes);
        if codes.len() != n {
            codes = vec![0u32; n];
        }
    }
    Ok(Fit {
        codebook,
        objective,
        iterations,
    })
}

/// The start of every fit, shared by the CPU and GPU Lloyd loops: checks the points, then seeds
/// `min(k, n)` centroids by k-means++. `None` when there are no points.
pub(crate) fn seed(
    points: &[f32],
    dim: usize,
    k: usize,
    rng: &mut Rng,
) -> Result<Option<Codebook>> {
    check_points(points, dim)?;
    let n = points.len() / dim;
    if n == 0 {
        return Ok(None);
    }
    if k == 0 {
        return Err(Error::invalid("k-means needs k >= 1"));
    }
    Ok(Some(init_plus_plus(points, dim, k.min(n), rng)))
}

/// Nearest centroid of every point (lowest index among equals) and its squared Euclidean distance
/// (clamped at 0; computed as ||x||^2 + (||c||^2 - 2 x.c), like faiss).
pub fn assign(points: &[f32], dim: usize, codebook: &Codebook) -> Result<(Vec<u32>, Vec<f32>)> {
    check_assign(points, dim, codebook)?;
    let n = points.len() / dim;
    let mut codes = vec![0u32; n];
    let mut distances = vec![0f32; n];
    assign_into(points, codebook, &mut codes, &mut distances);
    Ok((codes, distances))
}

/// Checks the operands of an assignment (see [`assign`]).
pub fn check_assign(points: &[f32], dim: usize, codebook: &Codebook) -> Result<()> {
    check_points(points, dim)?;
    if codebook.dim != dim {
        return Err(Error::invalid(format!(
            "codebook of dimension {} for points of dimension {dim}",
            codebook.dim
        )));
    }
    if codebook.k() == 0 && !points.is_empty() {
        return Err(Error::invalid("cannot assign points to an empty codebook"));
    }
    Ok(())
}

/// Checks the operands of a centroid update (see [`cluster_means`]).
pub fn check_codes(points: &[f32], dim: usize, codes: &[u32], codebook: &Codebook) -> Result<()> {
    check_assign(points, dim, codebook)?;
    if codes.len() != points.len() / dim {
        return Err(Error::invalid(format!(
            "{} codes for {} points",
            codes.len(),
            points.len() / dim
        )));
    }
    if codes.iter().any(|&c| c as usize >= codebook.k()) {
        return Err(Error::invalid("a code is not an index of the codebook"));
    }
    Ok(())
}

fn check_points(points: &[f32], dim: usize) -> Result<()> {
    if dim == 0 {
        return Err(Error::invalid("k-means needs a vector dimension >= 1"));
    }
    if !points.len().is_multiple_of(dim) {
        return Err(Error::invalid(format!(
            "{} values do not make whole vectors of dimension {dim}",
            points.len()
        )));
    }
    if points.iter().any(|v| !v.is_finite()) {
        return Err(Error::invalid(
            "k-means needs finite values (found NaN or Inf)",
        ));
    }
    Ok(())
}

/// k-means++ (Arthur & Vassilvitskii): each new centroid is a sample point drawn with probability
/// proportional to its squared distance to the nearest centroid so far.
///
/// The sample is held coordinate by coordinate (one row of `m` values per dimension) so that the
/// distance update runs over points in SIMD lanes. Squared distances are also summed in f64 per
/// block of `INIT_BLOCK` points, so that a draw walks the block sums and then one block, instead of
/// two serial passes over the whole sample. At k = 4096 the serial version took a fifth of the
/// encode time.
fn init_plus_plus(points: &[f32], dim: usize, k: usize, rng: &mut Rng) -> Codebook {
    const INIT_BLOCK: usize = 64;
    let n = points.len() / dim;
    let per_work = (INIT_MAX_WORK / k).clamp(k, INIT_POINTS_PER_CENTROID * k);
    let m = n.min(per_work);
    // Partial Fisher-Yates: the first m entries of `order` are a uniform sample without replacement.
    let mut order: Vec<u32> = (0..n as u32).collect();
    for i in 0..m {
        let j = i + rng.below((n - i) as u64) as usize;
        order.swap(i, j);
    }
    let mut sample = vec![0f32; m * dim];
    for (i, &p) in order[..m].iter().enumerate() {
        for d in 0..dim {
            sample[d * m + i] = points[p as usize * dim + d];
        }
    }
    drop(order);
    let sample_point = |i: usize| -> Vec<f32> { (0..dim).map(|d| sample[d * m + i]).collect() };

    let blocks = m.div_ceil(INIT_BLOCK);
    let mut nearest = vec![f32::INFINITY; m];
    let mut block_sums = vec![0f64; blocks];
    let mut scratch = vec![0f32; m];
    // Lowers `nearest` to the distance to `c` and refreshes the block sums.
    let mut add_centroid = |c: &[f32], nearest: &mut [f32], block_sums: &mut [f64]| {
        scratch.fill(0.0);
        for (d, &cd) in c.iter().enumerate() {
            for (acc, &v) in scratch.iter_mut().zip(&sample[d * m..(d + 1) * m]) {
                let t = v - cd;
                *acc += t * t;
            }
        }
        for (near, &dc) in nearest.iter_mut().zip(scratch.iter()) {
            *near = if dc < *near { dc } else { *near };
        }
        for (sum, block) in block_sums.iter_mut().zip(nearest.chunks(INIT_BLOCK)) {
            *sum = block.iter().map(|&d| d as f64).sum();
        }
    };

    let mut centroids = Vec::with_capacity(k * dim);
    let first = sample_point(rng.below(m as u64) as usize);
    add_centroid(&first, &mut nearest, &mut block_sums);
    centroids.extend_from_slice(&first);
    for _ in 1..k {
        let total: f64 = block_sums.iter().sum();
        let chosen = if total > 0.0 {
            let target = rng.uniform() * total;
            draw(&nearest, &block_sums, INIT_BLOCK, target)
        } else {
            // Every sample point coincides with a centroid: any point will do.
            rng.below(m as u64) as usize
        };
        let c = sample_point(chosen);
        add_centroid(&c, &mut nearest, &mut block_sums);
        centroids.extend_from_slice(&c);
    }
    Codebook { dim, centroids }
}

/// The first point whose running sum of `weights` passes `target` (0 <= target < total), found
/// through the block sums; points of weight 0 are never drawn. Falls back to the last point of
/// positive weight when rounding leaves the target unreached.
fn draw(weights: &[f32], block_sums: &[f64], block: usize, target: f64) -> usize {
    let mut cumulative = 0.0f64;
    for (b, &sum) in block_sums.iter().enumerate() {
        if cumulative + sum > target {
            for (i, &w) in weights[b * block..].iter().take(block).enumerate() {
                cumulative += w as f64;
                if cumulative > target && w > 0.0 {
                    return b * block + i;
                }
            }
        } else {
            cumulative += sum;
        }
    }
    weights.iter().rposition(|&w| w > 0.0).unwrap_or(0)
}

/// Moves each centroid to the mean of its points (sums in f64, in point order), then gives every
/// empty cluster the member of the currently largest cluster that lies farthest from its centroid.
/// That split never increases the objective: the moved point's distance becomes 0 and no other
/// distance changes until the next assignment step, which can only lower them.
fn update_centroids(points: &[f32], codebook: &mut Codebook, codes: &mut [u32], distances: &[f32]) {
    let mut counts = cluster_means(points, codebook.dim, codes, codebook);
    split_empty(points, codebook, codes, distances, &mut counts);
}

/// Moves each centroid with points to their mean (sums in f64, in point order); centroids without
/// points stay. Returns the number of points per centroid. The GPU twin is
/// `shaders/kmeans_update.wgsl`.
pub fn cluster_means(
    points: &[f32],
    dim: usize,
    codes: &[u32],
    codebook: &mut Codebook,
) -> Vec<usize> {
    let k = codebook.k();
    let mut sums = vec![0f64; k * dim];
    let mut counts = vec![0usize; k];
    for (p, &c) in points.chunks_exact(dim).zip(codes.iter()) {
        let c = c as usize;
        counts[c] += 1;
        for (s, &v) in sums[c * dim..(c + 1) * dim].iter_mut().zip(p) {
            *s += v as f64;
        }
    }
    for j in 0..k {
        if counts[j] > 0 {
            let inv = 1.0 / counts[j] as f64;
            for (c, s) in codebook.centroids[j * dim..(j + 1) * dim]
                .iter_mut()
                .zip(&sums[j * dim..(j + 1) * dim])
            {
                *c = (s * inv) as f32;
            }
        }
    }
    counts
}

/// Re-seeds every empty cluster with the farthest member of the currently largest one (see
/// [`update_centroids`]), updating `codes` and `counts`.
pub(crate) fn split_empty(
    points: &[f32],
    codebook: &mut Codebook,
    codes: &mut [u32],
    distances: &[f32],
    counts: &mut [usize],
) {
    let dim = codebook.dim;
    let k = codebook.k();
    let mut taken = vec![false; codes.len()];
    for j in 0..k {
        if counts[j] > 0 {
            continue;
        }
        // Largest cluster, lowest index among equals.
        let mut largest = 0;
        for (i, &c) in counts.iter().enumerate() {
            if c > counts[largest] {
                largest = i;
            }
        }
        if counts[largest] < 2 {
            break; // nothing left to split (only possible when k > distinct assignments)
        }
        let mut farthest: Option<usize> = None;
        for (i, (&c, &d)) in codes.iter().zip(distances).enumerate() {
            if c as usize == largest && !taken[i] && farthest.is_none_or(|f| d > distances[f]) {
                farthest = Some(i);
            }
        }
        let Some(i) = farthest else { break };
        taken[i] = true;
        codebook.centroids[j * dim..(j + 1) * dim].copy_from_slice(&points[i * dim..(i + 1) * dim]);
        codes[i] = j as u32;
        counts[largest] -= 1;
        counts[j] = 1;
    }
}

/// The centroids laid out for the assignment kernel: blocks of `LANES` centroids, each block holding
/// `dim` rows of `LANES` values `-2 c[j][d]`, and `LANES` values `||c_j||^2`. Padding centroids have
/// coordinates 0 and norm +inf, so they are never nearest.
struct Panel {
    dim: usize,
    blocks: usize,
    coords: Vec<f32>,
    norms: Vec<f32>,
}

impl Panel {
    fn new(codebook: &Codebook) -> Panel {
        let dim = codebook.dim;
        let k = codebook.k();
        let blocks = k.div_ceil(LANES);
        let mut coords = vec![0f32; blocks * dim * LANES];
        let mut norms = vec![f32::INFINITY; blocks * LANES];
        for (j, norm) in norms.iter_mut().enumerate().take(k) {
            let (b, l) = (j / LANES, j % LANES);
            let c = codebook.centroid(j);
            *norm = c.iter().map(|v| v * v).sum();
            for (d, &v) in c.iter().enumerate() {
                coords[(b * dim + d) * LANES + l] = -2.0 * v;
            }
        }
        Panel {
            dim,
            blocks,
            coords,
            norms,
        }
    }
}

fn assign_into(points: &[f32], codebook: &Codebook, codes: &mut [u32], distances: &mut [f32]) {
    let panel = Panel::new(codebook);
    #[cfg(not(target_arch = "wasm32"))]
    {
        let n = codes.len();
        let pairs = n.saturating_mul(codebook.k().max(1));
        let threads = crate::parallel::threads()
            .min(pairs / MIN_PAIRS_PER_THREAD)
            .min(16);
        if threads >= 2 {
            // Each point's result depends only on that point, so any split gives the same bits.
            let chunk = n.div_ceil(threads);
            let dim = codebook.dim;
            std::thread::scope(|scope| {
                for ((p, c), d) in points
                    .chunks(chunk * dim)
                    .zip(codes.chunks_mut(chunk))
                    .zip(distances.chunks_mut(chunk))
                {
                    let panel = &panel;
                    scope.spawn(move || assign_range(p, panel, c, d));
                }
            });
            return;
        }
    }
    assign_range(points, &panel, codes, distances);
}

fn assign_range(points: &[f32], panel: &Panel, codes: &mut [u32], distances: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") && (2..=8).contains(&panel.dim) {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            unsafe { avx512::assign_range(points, panel, codes, distances) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above); the function is the plain kernel
            // compiled with AVX2 enabled (no FMA, so the arithmetic is the same as the plain path).
            unsafe { assign_range_avx2(points, panel, codes, distances) };
            return;
        }
    }
    assign_range_plain(points, panel, codes, distances);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn assign_range_avx2(points: &[f32], panel: &Panel, codes: &mut [u32], distances: &mut [f32]) {
    match panel.dim {
        2 => avx2::assign_fixed::<2>(points, panel, codes, distances),
        3 => avx2::assign_fixed::<3>(points, panel, codes, distances),
        4 => avx2::assign_fixed::<4>(points, panel, codes, distances),
        5 => avx2::assign_fixed::<5>(points, panel, codes, distances),
        6 => avx2::assign_fixed::<6>(points, panel, codes, distances),
        7 => avx2::assign_fixed::<7>(points, panel, codes, distances),
        8 => avx2::assign_fixed::<8>(points, panel, codes, distances),
        _ => assign_range_plain(points, panel, codes, distances),
    }
}

/// The AVX-512 kernel: one register holds a block of 16 centroids, and two points go through each
/// block together (two independent dependency chains, shared loads of the block). Same operations in
/// the same order as [`assign_fixed`], so the same bits.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{pairwise_sum, Panel, LANES};
    use std::arch::x86_64::*;

    const _: () = assert!(
        LANES == 16,
        "the kernel holds a block in one 16-lane register"
    );

    #[target_feature(enable = "avx512f")]
    pub(super) fn assign_range(
        points: &[f32],
        panel: &Panel,
        codes: &mut [u32],
        distances: &mut [f32],
    ) {
        match panel.dim {
            2 => assign_fixed::<2>(points, panel, codes, distances),
            3 => assign_fixed::<3>(points, panel, codes, distances),
            4 => assign_fixed::<4>(points, panel, codes, distances),
            5 => assign_fixed::<5>(points, panel, codes, distances),
            6 => assign_fixed::<6>(points, panel, codes, distances),
            7 => assign_fixed::<7>(points, panel, codes, distances),
            8 => assign_fixed::<8>(points, panel, codes, distances),
            _ => unreachable!("the caller checks 2 <= dim <= 8"),
        }
    }

    #[target_feature(enable = "avx512f")]
    fn assign_fixed<const D: usize>(
        points: &[f32],
        panel: &Panel,
        codes: &mut [u32],
        distances: &mut [f32],
    ) {
        let n = codes.len();
        let pairs = n / 2;
        for i in 0..pairs {
            let (a, b) = (2 * i, 2 * i + 1);
            let results = nearest::<D, 2>(
                [&points[a * D..(a + 1) * D], &points[b * D..(b + 1) * D]],
                panel,
            );
            (codes[a], distances[a]) = results[0];
            (codes[b], distances[b]) = results[1];
        }
        if n % 2 == 1 {
            let a = n - 1;
            (codes[a], distances[a]) = nearest::<D, 1>([&points[a * D..(a + 1) * D]], panel)[0];
        }
    }

    #[target_feature(enable = "avx512f")]
    fn nearest<const D: usize, const P: usize>(
        points: [&[f32]; P],
        panel: &Panel,
    ) -> [(u32, f32); P] {
        assert_eq!(panel.coords.len(), panel.blocks * D * LANES);
        assert_eq!(panel.norms.len(), panel.blocks * LANES);
        let mut x = [[_mm512_setzero_ps(); D]; P];
        for (xp, p) in x.iter_mut().zip(points) {
            for (xd, &v) in xp.iter_mut().zip(p) {
                *xd = _mm512_set1_ps(v);
            }
        }
        let mut best = [_mm512_set1_ps(f32::INFINITY); P];
        let mut best_block = [_mm512_setzero_ps(); P];
        let mut block = _mm512_setzero_ps();
        let one = _mm512_set1_ps(1.0);
        for b in 0..panel.blocks {
            // SAFETY: block b's norms are LANES floats at b*LANES and its coordinates D*LANES
            // floats at b*D*LANES; the lengths are asserted above. Unaligned loads.
            unsafe {
                let norms = _mm512_loadu_ps(panel.norms.as_ptr().add(b * LANES));
                let coords = panel.coords.as_ptr().add(b * D * LANES);
                let mut rows = [_mm512_setzero_ps(); D];
                for (d, row) in rows.iter_mut().enumerate() {
                    *row = _mm512_loadu_ps(coords.add(d * LANES));
                }
                for p in 0..P {
                    let mut terms = [_mm512_setzero_ps(); D];
                    for d in 0..D {
                        terms[d] = _mm512_mul_ps(x[p][d], rows[d]);
                    }
                    let dot = pairwise_sum(&mut terms, |a, b| _mm512_add_ps(a, b));
                    let acc = _mm512_add_ps(norms, dot);
                    let better = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(acc, best[p]);
                    best[p] = _mm512_mask_blend_ps(better, best[p], acc);
                    best_block[p] = _mm512_mask_blend_ps(better, best_block[p], block);
                }
            }
            block = _mm512_add_ps(block, one);
        }
        // The reduction of `reduce_lanes` in registers: the smallest value, then the lowest
        // centroid index (exact in f32 below 2^24) among the lanes holding it.
        let lane_index = _mm512_setr_ps(
            0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0,
        );
        let lanes = _mm512_set1_ps(LANES as f32);
        let mut out = [(0u32, 0f32); P];
        for p in 0..P {
            let value = _mm512_reduce_min_ps(best[p]);
            let mut norm = 0f32;
            for &v in points[p] {
                norm += v * v;
            }
            out[p] = if value == f32::INFINITY {
                (0, f32::INFINITY)
            } else {
                let holders = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(best[p], _mm512_set1_ps(value));
                let index = _mm512_add_ps(_mm512_mul_ps(best_block[p], lanes), lane_index);
                let j = _mm512_mask_reduce_min_ps(holders, index);
                (j as u32, (norm + value).max(0.0))
            };
        }
        out
    }
}

/// The AVX2 kernel, written with intrinsics because the compiler does not keep the index select of
/// the plain kernel in SIMD registers. Same operations in the same order as [`assign_fixed`]
/// (multiply, then add; strict `<`), so the same bits.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{pairwise_sum, reduce_lanes, Panel, LANES};
    use std::arch::x86_64::*;

    const _: () = assert!(
        LANES == 16,
        "the kernel holds a block in two 8-lane registers"
    );

    #[target_feature(enable = "avx2")]
    pub(super) fn assign_fixed<const D: usize>(
        points: &[f32],
        panel: &Panel,
        codes: &mut [u32],
        distances: &mut [f32],
    ) {
        assert_eq!(panel.coords.len(), panel.blocks * D * LANES);
        assert_eq!(panel.norms.len(), panel.blocks * LANES);
        for ((p, code), dist) in points
            .chunks_exact(D)
            .zip(codes.iter_mut())
            .zip(distances.iter_mut())
        {
            let mut x = [_mm256_setzero_ps(); D];
            for (xd, &v) in x.iter_mut().zip(p) {
                *xd = _mm256_set1_ps(v);
            }
            let mut best_lo = _mm256_set1_ps(f32::INFINITY);
            let mut best_hi = best_lo;
            let mut block_lo = _mm256_setzero_ps();
            let mut block_hi = block_lo;
            let mut block = _mm256_setzero_ps();
            let one = _mm256_set1_ps(1.0);
            for b in 0..panel.blocks {
                // SAFETY: block b's norms are LANES floats at b*LANES and its coordinates D*LANES
                // floats at b*D*LANES; the lengths are asserted above. Unaligned loads.
                unsafe {
                    let norms = panel.norms.as_ptr().add(b * LANES);
                    let coords = panel.coords.as_ptr().add(b * D * LANES);
                    let mut terms = [[_mm256_setzero_ps(); 2]; D];
                    for (d, (term, xd)) in terms.iter_mut().zip(&x).enumerate() {
                        let row = coords.add(d * LANES);
                        term[0] = _mm256_mul_ps(*xd, _mm256_loadu_ps(row));
                        term[1] = _mm256_mul_ps(*xd, _mm256_loadu_ps(row.add(8)));
                    }
                    let dot = pairwise_sum(&mut terms, |a, b| {
                        [_mm256_add_ps(a[0], b[0]), _mm256_add_ps(a[1], b[1])]
                    });
                    let acc_lo = _mm256_add_ps(_mm256_loadu_ps(norms), dot[0]);
                    let acc_hi = _mm256_add_ps(_mm256_loadu_ps(norms.add(8)), dot[1]);
                    let better_lo = _mm256_cmp_ps::<_CMP_LT_OQ>(acc_lo, best_lo);
                    let better_hi = _mm256_cmp_ps::<_CMP_LT_OQ>(acc_hi, best_hi);
                    best_lo = _mm256_blendv_ps(best_lo, acc_lo, better_lo);
                    best_hi = _mm256_blendv_ps(best_hi, acc_hi, better_hi);
                    block_lo = _mm256_blendv_ps(block_lo, block, better_lo);
                    block_hi = _mm256_blendv_ps(block_hi, block, better_hi);
                }
                block = _mm256_add_ps(block, one);
            }
            let mut best = [0f32; LANES];
            let mut best_block = [0f32; LANES];
            // SAFETY: both arrays hold 16 floats; unaligned stores.
            unsafe {
                _mm256_storeu_ps(best.as_mut_ptr(), best_lo);
                _mm256_storeu_ps(best.as_mut_ptr().add(8), best_hi);
                _mm256_storeu_ps(best_block.as_mut_ptr(), block_lo);
                _mm256_storeu_ps(best_block.as_mut_ptr().add(8), block_hi);
            }
            let mut norm = 0f32;
            for &v in p {
                norm += v * v;
            }
            (*code, *dist) = reduce_lanes(&best, &best_block, norm);
        }
    }
}

#[inline(always)]
fn assign_range_plain(points: &[f32], panel: &Panel, codes: &mut [u32], distances: &mut [f32]) {
    match panel.dim {
        1 => assign_fixed::<1>(points, panel, codes, distances),
        2 => assign_fixed::<2>(points, panel, codes, distances),
        3 => assign_fixed::<3>(points, panel, codes, distances),
        4 => assign_fixed::<4>(points, panel, codes, distances),
        5 => assign_fixed::<5>(points, panel, codes, distances),
        6 => assign_fixed::<6>(points, panel, codes, distances),
        7 => assign_fixed::<7>(points, panel, codes, distances),
        8 => assign_fixed::<8>(points, panel, codes, distances),
        _ => assign_any(points, panel, codes, distances),
    }
}

/// The kernel for a dimension known at compile time: lanes run over centroids, so the inner loops
/// are `LANES`-wide multiply-adds that the compiler turns into SIMD.
#[inline(always)]
fn assign_fixed<const D: usize>(
    points: &[f32],
    panel: &Panel,
    codes: &mut [u32],
    distances: &mut [f32],
) {
    for ((p, code), dist) in points
        .chunks_exact(D)
        .zip(codes.iter_mut())
        .zip(distances.iter_mut())
    {
        let mut x = [0f32; D];
        x.copy_from_slice(p);
        let mut best = [f32::INFINITY; LANES];
        let mut best_block = [0f32; LANES];
        for (b, (coords, norms)) in panel
            .coords
            .chunks_exact(D * LANES)
            .zip(panel.norms.chunks_exact(LANES))
            .enumerate()
        {
            let mut terms = [[0f32; LANES]; D];
            for ((term, row), &xd) in terms.iter_mut().zip(coords.chunks_exact(LANES)).zip(&x) {
                for l in 0..LANES {
                    term[l] = xd * row[l];
                }
            }
            let dot = pairwise_sum(&mut terms, |a, b| {
                let mut s = [0f32; LANES];
                for l in 0..LANES {
                    s[l] = a[l] + b[l];
                }
                s
            });
            let mut acc = [0f32; LANES];
            for l in 0..LANES {
                acc[l] = norms[l] + dot[l];
            }
            // The block index is kept as f32 (exact below 2^24) so that both selects use the
            // same float mask and stay in SIMD registers.
            let block = b as f32;
            for l in 0..LANES {
                let better = acc[l] < best[l];
                best[l] = if better { acc[l] } else { best[l] };
                best_block[l] = if better { block } else { best_block[l] };
            }
        }
        let norm: f32 = x.iter().map(|v| v * v).sum();
        (*code, *dist) = reduce_lanes(&best, &best_block, norm);
    }
}

/// Same arithmetic as [`assign_fixed`] for any dimension.
fn assign_any(points: &[f32], panel: &Panel, codes: &mut [u32], distances: &mut [f32]) {
    let dim = panel.dim;
    for ((x, code), dist) in points
        .chunks_exact(dim)
        .zip(codes.iter_mut())
        .zip(distances.iter_mut())
    {
        let mut best = [f32::INFINITY; LANES];
        let mut best_block = [0f32; LANES];
        for b in 0..panel.blocks {
            let mut terms = vec![[0f32; LANES]; dim];
            for (d, (term, &xd)) in terms.iter_mut().zip(x).enumerate() {
                let row = &panel.coords[(b * dim + d) * LANES..(b * dim + d + 1) * LANES];
                for l in 0..LANES {
                    term[l] = xd * row[l];
                }
            }
            let dot = pairwise_sum(&mut terms, |a, b| {
                let mut s = [0f32; LANES];
                for l in 0..LANES {
                    s[l] = a[l] + b[l];
                }
                s
            });
            let mut acc = [0f32; LANES];
            for l in 0..LANES {
                acc[l] = panel.norms[b * LANES + l] + dot[l];
            }
            for l in 0..LANES {
                if acc[l] < best[l] {
                    best[l] = acc[l];
                    best_block[l] = b as f32;
                }
            }
        }
        let norm: f32 = x.iter().map(|v| v * v).sum();
        (*code, *dist) = reduce_lanes(&best, &best_block, norm);
    }
}

/// Sums `terms` in a fixed pairwise order (adjacent pairs, level by level, an odd last term carried
/// up), so that the dot product's dependency chain is log2(dim) additions deep rather than dim, and
/// every kernel adds in the same order. Leaves `terms` scrambled.
#[inline(always)]
fn pairwise_sum<T: Copy>(terms: &mut [T], add: impl Fn(T, T) -> T) -> T {
    let mut len = terms.len();
    while len > 1 {
        let half = len / 2;
        for i in 0..half {
            terms[i] = add(terms[2 * i], terms[2 * i + 1]);
        }
        if len % 2 == 1 {
            terms[half] = terms[len - 1];
        }
        len = half + len % 2;
    }
    terms[0]
}

/// The nearest centroid over all lanes: smallest partial distance, lowest centroid index among equals.
#[inline(always)]
fn reduce_lanes(best: &[f32; LANES], best_block: &[f32; LANES], norm: f32) -> (u32, f32) {
    // Branch-free, so that the compiler keeps it in SIMD registers: the branches of a plain scan
    // mispredict and cost as much as the distance computation at k = 256.
    let mut value = f32::INFINITY;
    for &v in best {
        value = if v < value { v } else { value };
    }
    if value == f32::INFINITY {
        // Every partial distance overflowed to +inf (values near f32::MAX): take the first centroid.
        return (0, f32::INFINITY);
    }
    let mut index = u32::MAX;
    for l in 0..LANES {
        let j = best_block[l] as u32 * LANES as u32 + l as u32;
        index = index.min(if best[l] == value { j } else { u32::MAX });
    }
    (index, (norm + value).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn squared_distance(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| {
                let d = x - y;
                d * d
            })
            .sum()
    }

    /// Points drawn around `centers` (row-major, `dim` each) with standard deviation `spread`.
    fn mixture(centers: &[f32], dim: usize, per: usize, spread: f64, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        let mut pts = Vec::new();
        for _ in 0..per {
            for c in centers.chunks_exact(dim) {
                for &v in c {
                    pts.push(v + (rng.normal() * spread) as f32);
                }
            }
        }
        pts
    }

    fn brute_force(points: &[f32], cb: &Codebook) -> Vec<(u32, f32)> {
        points
            .chunks_exact(cb.dim)
            .map(|p| {
                let mut best = (0u32, f32::INFINITY);
                for j in 0..cb.k() {
                    let d = squared_distance(p, cb.centroid(j));
                    if d < best.1 {
                        best = (j as u32, d);
                    }
                }
                best
            })
            .collect()
    }

    #[test]
    fn assign_matches_brute_force() {
        let mut rng = Rng::new(5);
        for dim in [1usize, 2, 3, 4, 7, 8, 11] {
            for k in [1usize, 5, 16, 17, 40] {
                let pts: Vec<f32> = (0..300 * dim).map(|_| rng.normal() as f32).collect();
                let cb = Codebook {
                    dim,
                    centroids: (0..k * dim).map(|_| rng.normal() as f32).collect(),
                };
                let (codes, dists) = assign(&pts, dim, &cb).unwrap();
                for (i, (want_code, want_dist)) in brute_force(&pts, &cb).into_iter().enumerate() {
                    let got = squared_distance(
                        &pts[i * dim..(i + 1) * dim],
                        cb.centroid(codes[i] as usize),
                    );
                    // Either the same centroid, or one at the same distance up to rounding.
                    assert!(
                        codes[i] == want_code
                            || (got - want_dist).abs() <= 1e-4 * (1.0 + want_dist),
                        "dim {dim} k {k} point {i}"
                    );
                    assert!((dists[i] - got).abs() <= 1e-4 * (1.0 + got));
                }
            }
        }
    }

    #[test]
    fn finds_well_separated_clusters() {
        let dim = 3;
        let centers: Vec<f32> = (0..8 * dim)
            .map(|i| ((i * 7919) % 23) as f32 * 10.0)
            .collect();
        let pts = mixture(&centers, dim, 50, 0.1, 9);
        let cb = fit(&pts, dim, 8, 30, &mut Rng::new(1)).unwrap();
        assert_eq!(cb.k(), 8);
        for c in centers.chunks_exact(dim) {
            let nearest = (0..8)
                .map(|j| squared_distance(c, cb.centroid(j)))
                .fold(f32::INFINITY, f32::min);
            assert!(
                nearest < 0.05,
                "a true center is {nearest} from the nearest centroid"
            );
        }
    }

    #[test]
    fn lloyd_never_increases_the_objective() {
        let mut rng = Rng::new(2);
        let pts: Vec<f32> = (0..4000 * 4).map(|_| rng.normal() as f32).collect();
        for k in [3usize, 64, 700] {
            let fit = fit_detailed(&pts, 4, k, 25, &mut Rng::new(k as u64)).unwrap();
            assert!(fit.objective.len() >= 2);
            for w in fit.objective.windows(2) {
                assert!(w[1] <= w[0] * (1.0 + 1e-6), "k {k}: {} -> {}", w[0], w[1]);
            }
        }
    }

    #[test]
    fn stops_when_assignments_settle() {
        let centers = [0.0f32, 0.0, 100.0, 100.0];
        let pts = mixture(&centers, 2, 20, 0.5, 3);
        let fit = fit_detailed(&pts, 2, 2, 50, &mut Rng::new(4)).unwrap();
        assert!(fit.iterations < 10, "ran {} iterations", fit.iterations);
    }

    #[test]
    fn more_centroids_than_points() {
        let pts = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let fit = fit_detailed(&pts, 2, 10, 5, &mut Rng::new(0)).unwrap();
        assert_eq!(fit.codebook.k(), 3);
        assert_eq!(*fit.objective.last().unwrap(), 0.0);
        // Identical points: k-means++ runs out of distinct points, Lloyd must still terminate.
        let same = vec![0.5f32; 40];
        let cb = fit_detailed(&same, 4, 6, 5, &mut Rng::new(0))
            .unwrap()
            .codebook;
        assert_eq!(cb.k(), 6);
        assert!(cb.centroids.iter().all(|&v| v == 0.5));
    }

    #[test]
    fn same_seed_same_codebook() {
        let mut rng = Rng::new(8);
        let pts: Vec<f32> = (0..30_000 * 8).map(|_| rng.normal() as f32).collect();
        // Large enough for the threaded path natively.
        let a = fit(&pts, 8, 64, 4, &mut Rng::new(11)).unwrap();
        let b = fit(&pts, 8, 64, 4, &mut Rng::new(11)).unwrap();
        assert_eq!(a, b);
        let mut codes_plain = vec![0u32; 30_000];
        let mut dist_plain = vec![0f32; 30_000];
        assign_range_plain(&pts, &Panel::new(&a), &mut codes_plain, &mut dist_plain);
        let (codes, dists) = assign(&pts, 8, &a).unwrap();
        assert_eq!(codes, codes_plain);
        assert_eq!(dists, dist_plain);
    }

    /// Every SIMD kernel this CPU has gives the plain kernel's bits, for every dimension.
    #[test]
    fn simd_kernels_match_the_plain_kernel() {
        let mut rng = Rng::new(12);
        for dim in 2..=8 {
            let n = 301;
            let pts: Vec<f32> = (0..n * dim).map(|_| rng.normal() as f32).collect();
            let cb = Codebook {
                dim,
                centroids: (0..37 * dim).map(|_| rng.normal() as f32).collect(),
            };
            let panel = Panel::new(&cb);
            let mut want = (vec![0u32; n], vec![0f32; n]);
            assign_range_plain(&pts, &panel, &mut want.0, &mut want.1);
            #[cfg(target_arch = "x86_64")]
            {
                let mut got = (vec![0u32; n], vec![0f32; n]);
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: AVX2 is present (checked).
                    unsafe { assign_range_avx2(&pts, &panel, &mut got.0, &mut got.1) };
                    assert_eq!(got, want, "avx2, dim {dim}");
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: AVX-512F is present (checked).
                    unsafe { avx512::assign_range(&pts, &panel, &mut got.0, &mut got.1) };
                    assert_eq!(got, want, "avx512, dim {dim}");
                }
            }
        }
    }

    #[test]
    fn rejects_bad_input() {
        let mut rng = Rng::new(0);
        assert!(fit(&[1.0, 2.0, 3.0], 2, 1, 1, &mut rng).is_err());
        assert!(fit(&[1.0, 2.0], 0, 1, 1, &mut rng).is_err());
        assert!(fit(&[1.0, f32::NAN], 2, 1, 1, &mut rng).is_err());
        assert!(fit(&[1.0, 2.0], 2, 0, 1, &mut rng).is_err());
        assert_eq!(fit(&[], 2, 4, 1, &mut rng).unwrap().k(), 0);
    }
}
