//! The CPU backend: the reference every GPU kernel is checked against and the fallback. Each
//! function here is the CPU twin of one kernel; the arithmetic itself lives with its domain
//! (`linalg`, `kmeans`, `rotation`, `codec::scalar`) so that there is one home per method.

use super::GroupFits;
use crate::error::{Error, Result};
use crate::kmeans::Codebook;
use crate::linalg::{self, Svd};
use crate::rng::Rng;

/// Checks the operands of `op(A) * B` (see [`super::Backend::matmul`]).
pub fn check_matmul(
    a: &[f32],
    a_rows: usize,
    a_cols: usize,
    transpose_a: bool,
    b: &[f32],
    b_cols: usize,
) -> Result<()> {
    let inner = if transpose_a { a_rows } else { a_cols };
    if a_rows.checked_mul(a_cols) != Some(a.len()) || inner.checked_mul(b_cols) != Some(b.len()) {
        return Err(Error::invalid(format!(
            "matmul: A has {} values for {a_rows} x {a_cols}, B has {} for {inner} x {b_cols}",
            a.len(),
            b.len()
        )));
    }
    Ok(())
}

/// `op(A) * B` through faer (row-major in and out).
pub fn matmul(
    a: &[f32],
    a_rows: usize,
    a_cols: usize,
    transpose_a: bool,
    b: &[f32],
    b_cols: usize,
) -> Result<Vec<f32>> {
    let a = linalg::view_row_major(a, a_rows, a_cols);
    let a = if transpose_a { a.transpose() } else { a };
    let b = linalg::view_row_major(b, a.ncols(), b_cols);
    Ok(linalg::to_row_major(linalg::product(a, b).as_ref()))
}

/// `Y^T Y`.
pub fn gram(y: &[f32], rows: usize, cols: usize) -> Result<Vec<f32>> {
    matmul(y, rows, cols, true, y, cols)
}

/// [`linalg::rsi`] on a row-major matrix.
pub fn rsi(
    w: &[f32],
    rows: usize,
    cols: usize,
    k: usize,
    oversample: usize,
    power_iters: usize,
    rng: &mut Rng,
) -> Result<Svd> {
    linalg::rsi(
        linalg::view_row_major(w, rows, cols),
        k,
        oversample,
        power_iters,
        rng,
    )
}

/// [`crate::kmeans::cluster_means`] on a copy of the codebook.
pub fn cluster_means(
    points: &[f32],
    dim: usize,
    codes: &[u32],
    codebook: &Codebook,
) -> (Codebook, Vec<u32>) {
    let mut moved = codebook.clone();
    let counts = crate::kmeans::cluster_means(points, dim, codes, &mut moved);
    (moved, counts.into_iter().map(|c| c as u32).collect())
}

/// [`crate::rotation::forward`] or [`crate::rotation::inverse`].
pub fn rotate(values: &mut [f32], cols: usize, seed: u64, inverse: bool) {
    if inverse {
        crate::rotation::inverse(values, cols, seed);
    } else {
        crate::rotation::forward(values, cols, seed);
    }
}

/// Checks the operands of the grouped-grid fit (see [`super::Backend::fit_groups`]).
pub fn check_groups(
    values: &[f32],
    rows: usize,
    cols: usize,
    bits: u8,
    group: usize,
) -> Result<()> {
    if rows.checked_mul(cols) != Some(values.len()) {
        return Err(Error::invalid(format!(
            "{} values for a {rows} x {cols} matrix",
            values.len()
        )));
    }
    if !(1..=8).contains(&bits) || group == 0 {
        return Err(Error::option(format!(
            "grouped scalar grid needs 1-8 bits and a group > 0 (got {bits}b g{group})"
        )));
    }
    Ok(())
}

/// [`crate::codec::scalar::fit_groups`].
pub fn fit_groups(
    values: &[f32],
    rows: usize,
    cols: usize,
    bits: u8,
    group: usize,
    search: bool,
) -> GroupFits {
    crate::codec::scalar::fit_groups(values, rows, cols, bits, group, search)
}

/// The squared error of every group (storage order) when `x` is coded with `fits`: value =
/// code x scale + minimum, as the scalar decoder computes it.
pub fn group_errors(
    x: &[f32],
    rows: usize,
    cols: usize,
    group: usize,
    fits: &GroupFits,
) -> Vec<f64> {
    let mut out = Vec::new();
    for r in 0..rows {
        for c0 in (0..cols).step_by(group) {
            let start = r * cols + c0;
            let (s, m) = fits.fits[out.len()];
            out.push(
                (start..start + group.min(cols - c0))
                    .map(|i| ((fits.codes[i] as f32 * s + m - x[i]) as f64).powi(2))
                    .sum(),
            );
        }
    }
    out
}

/// Checks the operands of the hyper search (see [`super::Backend::hyper_codes`]).
pub fn check_hyper(pairs: &[f32], geometry: &crate::codec::hyper::Geometry) -> Result<()> {
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
    crate::codec::hyper::check_geometry(geometry)
}

/// [`crate::codec::hyper::nearest_codes`].
pub fn hyper_codes(pairs: &[f32], geometry: &crate::codec::hyper::Geometry) -> Vec<u32> {
    crate::codec::hyper::nearest_codes(pairs, geometry)
}
