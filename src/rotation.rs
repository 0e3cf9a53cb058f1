//! Randomized Hadamard rotation of the rows of a matrix: multiply each element by a random sign
//! (one sign per column, from a seed), then apply an orthonormal fast Walsh-Hadamard transform to
//! consecutive blocks of each row. It spreads outliers over a block so that a quantizer sees
//! near-Gaussian, equal-variance coordinates; being orthonormal, it preserves the squared error.
//!
//! Block length: the largest power of two that divides `cols`, capped at [`MAX_BLOCK`]. This
//! never pads, so the codec codes exactly `rows * cols` values and the decoder needs no extra
//! shape information; the price is that a row length with a small power-of-two factor gets small
//! blocks (an odd length gets blocks of 1: the rotation is then only a sign flip, which does
//! nothing for a quantizer; [`block_len`] lets callers see that).
//!
//! What it does not do: rotations across rows, or learned rotations.

use crate::rng::Rng;

/// Longest Hadamard block (longer blocks spread outliers further but cost log2(block) passes).
pub const MAX_BLOCK: usize = 1024;

/// The Hadamard block length used for rows of `cols` elements.
pub fn block_len(cols: usize) -> usize {
    if cols == 0 {
        return 1;
    }
    (1usize << cols.trailing_zeros()).min(MAX_BLOCK)
}

/// The random sign of each column (the GPU kernel receives these).
pub fn signs(cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..cols).map(|_| rng.sign()).collect()
}

/// In-place orthonormal Walsh-Hadamard transform of `block` (length a power of two).
fn fwht(block: &mut [f32]) {
    let n = block.len();
    let mut h = 1;
    while h < n {
        for start in (0..n).step_by(2 * h) {
            let (lo, hi) = block[start..start + 2 * h].split_at_mut(h);
            for (a, b) in lo.iter_mut().zip(hi.iter_mut()) {
                let (x, y) = (*a, *b);
                *a = x + y;
                *b = x - y;
            }
        }
        h *= 2;
    }
    if n > 1 {
        let scale = block_scale(n);
        block.iter_mut().for_each(|v| *v *= scale);
    }
}

/// The normalization `1/sqrt(block)` of a Hadamard block, in f32 (shared with the GPU kernel so
/// both give the same bits).
pub fn block_scale(block: usize) -> f32 {
    1.0 / (block as f32).sqrt()
}

/// Rotates each row of the row-major `rows x cols` matrix in place: signs, then Hadamard blocks.
pub fn forward(values: &mut [f32], cols: usize, seed: u64) {
    if cols == 0 {
        return;
    }
    let s = signs(cols, seed);
    let b = block_len(cols);
    for row in values.chunks_exact_mut(cols) {
        row.iter_mut().zip(&s).for_each(|(v, s)| *v *= s);
        if b > 1 {
            row.chunks_exact_mut(b).for_each(fwht);
        }
    }
}

/// Undoes [`forward`] (the normalized Hadamard transform is its own inverse).
pub fn inverse(values: &mut [f32], cols: usize, seed: u64) {
    if cols == 0 {
        return;
    }
    let s = signs(cols, seed);
    let b = block_len(cols);
    for row in values.chunks_exact_mut(cols) {
        if b > 1 {
            row.chunks_exact_mut(b).for_each(fwht);
        }
        row.iter_mut().zip(&s).for_each(|(v, s)| *v *= s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_lengths() {
        assert_eq!(block_len(384), 128);
        assert_eq!(block_len(1536), 512);
        assert_eq!(block_len(4096), MAX_BLOCK);
        assert_eq!(block_len(7), 1);
        assert_eq!(block_len(0), 1);
    }

    #[test]
    fn orthonormal_and_invertible() {
        let mut r = Rng::new(11);
        for cols in [1usize, 6, 64, 384, 2048] {
            let rows = 3;
            let x: Vec<f32> = (0..rows * cols).map(|_| r.normal() as f32).collect();
            let mut y = x.clone();
            forward(&mut y, cols, 5);
            let nx: f64 = x.iter().map(|v| (*v as f64).powi(2)).sum();
            let ny: f64 = y.iter().map(|v| (*v as f64).powi(2)).sum();
            assert!((nx - ny).abs() < 1e-4 * nx, "norm changed for cols {cols}");
            // Inner products are preserved too (orthogonality, not just norm).
            let z: Vec<f32> = (0..rows * cols).map(|_| r.normal() as f32).collect();
            let mut zr = z.clone();
            forward(&mut zr, cols, 5);
            let dot = |a: &[f32], b: &[f32]| -> f64 {
                a.iter().zip(b).map(|(p, q)| *p as f64 * *q as f64).sum()
            };
            assert!((dot(&x, &z) - dot(&y, &zr)).abs() < 1e-3 * nx.sqrt() * 10.0);
            inverse(&mut y, cols, 5);
            let err = x
                .iter()
                .zip(&y)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(err < 1e-5, "inverse error {err} for cols {cols}");
        }
    }

    #[test]
    fn spreads_an_outlier() {
        let mut x = vec![0f32; 256];
        x[17] = 16.0;
        forward(&mut x, 256, 1);
        let peak = x.iter().map(|v| v.abs()).fold(0f32, f32::max);
        assert!((peak - 1.0).abs() < 1e-5, "peak {peak}");
    }
}
