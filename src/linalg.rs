//! Dense linear algebra for the low-rank codec: truncated SVD by randomized subspace iteration
//! (Halko, Martinsson & Tropp 2011, Alg. 4.4; docs/CODECS-lowrank.md), an exact SVD for tests and
//! reports, and the small helpers around them, all on top of `faer`.
//!
//! The big products (`W Omega`, `W^T Q`, `Q^T W`) run in f32 through faer's blocked matmul; the
//! small SVD of the `(k+p) x n` core runs in f64. Everything is single threaded (`Par::Seq`: the
//! crate builds faer without rayon), so a given seed gives the same factors on every run of the
//! same binary. faer's kernels are chosen per CPU, so factors may differ in the last bits between
//! machines (native vs wasm): callers that need bit-exact reproduction across machines (the codec's
//! decoder) must not recompute an SVD, only apply stored factors.
//!
//! What this module does not do: sparse matrices, GPU products (those belong to the backend), or
//! choosing a rank (that is the codec's and the allocator's job).

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par};

use crate::error::{Error, Result};
use crate::rng::Rng;

/// A (truncated) singular value decomposition `W ~= U diag(sigma) Vt`.
#[derive(Clone, Debug)]
pub struct Svd {
    /// `m x k`, orthonormal columns.
    pub u: Mat<f32>,
    /// `k` singular values, non-increasing, non-negative.
    pub sigma: Vec<f32>,
    /// `k x n`, orthonormal rows.
    pub vt: Mat<f32>,
}

impl Svd {
    pub fn rank(&self) -> usize {
        self.sigma.len()
    }

    /// `U diag(sigma) Vt` as an `m x n` matrix.
    pub fn reconstruct(&self) -> Mat<f32> {
        let mut us = self.u.clone();
        for (j, &s) in self.sigma.iter().enumerate() {
            us.col_mut(j).iter_mut().for_each(|x| *x *= s);
        }
        product(us.as_ref(), self.vt.as_ref())
    }
}

/// Views a row-major slice of `rows * cols` values as a matrix (no copy).
pub fn view_row_major(values: &[f32], rows: usize, cols: usize) -> MatRef<'_, f32> {
    MatRef::from_row_major_slice(values, rows, cols)
}

/// The values of a matrix in row-major order.
pub fn to_row_major(m: MatRef<f32>) -> Vec<f32> {
    let mut out = Vec::with_capacity(m.nrows() * m.ncols());
    for i in 0..m.nrows() {
        for j in 0..m.ncols() {
            out.push(m[(i, j)]);
        }
    }
    out
}

/// `a b`, single threaded f32 (faer's blocked kernel).
pub fn product(a: MatRef<f32>, b: MatRef<f32>) -> Mat<f32> {
    let mut out = Mat::<f32>::zeros(a.nrows(), b.ncols());
    matmul(&mut out, Accum::Replace, a, b, 1.0f32, Par::Seq);
    out
}

/// An orthonormal basis of the column space of a tall (`rows >= cols`) matrix: the thin `Q` of its
/// Householder QR. Columns of `y` that are (numerically) dependent still give orthonormal columns.
pub fn orthonormalize(y: MatRef<f32>) -> Mat<f32> {
    y.qr().compute_thin_Q()
}

/// Frobenius norm, accumulated in f64.
pub fn frobenius_norm(a: MatRef<f32>) -> f64 {
    let mut sum = 0.0f64;
    for j in 0..a.ncols() {
        for i in 0..a.nrows() {
            let x = a[(i, j)] as f64;
            sum += x * x;
        }
    }
    sum.sqrt()
}

/// `||a - b||_F`, accumulated in f64.
pub fn frobenius_distance(a: MatRef<f32>, b: MatRef<f32>) -> f64 {
    assert_eq!((a.nrows(), a.ncols()), (b.nrows(), b.ncols()));
    let mut sum = 0.0f64;
    for j in 0..a.ncols() {
        for i in 0..a.nrows() {
            let d = a[(i, j)] as f64 - b[(i, j)] as f64;
            sum += d * d;
        }
    }
    sum.sqrt()
}

/// Spectral norm `||a||_2` estimated by `iters` steps of the power method on `a^T a` from a seeded
/// start (a lower bound that converges to the norm; 50-100 steps are plenty for tests).
pub fn spectral_norm(a: MatRef<f32>, iters: usize, seed: u64) -> f64 {
    let (m, n) = (a.nrows(), a.ncols());
    if m == 0 || n == 0 {
        return 0.0;
    }
    let a64 = Mat::<f64>::from_fn(m, n, |i, j| a[(i, j)] as f64);
    let mut rng = Rng::new(seed);
    let mut x = Mat::<f64>::from_fn(n, 1, |_, _| rng.normal());
    let mut norm = 0.0;
    for _ in 0..iters {
        let y = &a64 * &x;
        let z = a64.transpose() * &y;
        let zn = z.norm_l2();
        if zn == 0.0 {
            return 0.0;
        }
        norm = zn.sqrt(); // ||a^T a x|| with ||x|| = 1 tends to sigma_1^2
        x = z * faer::Scale(1.0 / zn);
    }
    norm
}

/// The exact thin SVD, computed in f64 (slow: for tests, reports and tiny matrices).
pub fn exact_svd(w: MatRef<f32>) -> Result<Svd> {
    let (m, n) = (w.nrows(), w.ncols());
    let w64 = Mat::<f64>::from_fn(m, n, |i, j| w[(i, j)] as f64);
    let svd = w64
        .thin_svd()
        .map_err(|e| Error::unsupported(format!("SVD did not converge: {e:?}")))?;
    let k = m.min(n);
    let u = Mat::<f32>::from_fn(m, k, |i, j| svd.U()[(i, j)] as f32);
    let vt = Mat::<f32>::from_fn(k, n, |i, j| svd.V()[(j, i)] as f32);
    let sigma = (0..k).map(|j| svd.S()[j] as f32).collect();
    Ok(Svd { u, sigma, vt })
}

/// Rank-`k` truncated SVD of `w` (`m x n`) by randomized subspace iteration: a Gaussian sketch of
/// `k + oversample` columns, `power_iters` passes of `W^T`, `W` with a QR after every product, then
/// the SVD of the small core `Q^T W` in f64. `power_iters = 0` is plain randomized SVD (RSVD).
///
/// `k` is clamped to `min(m, n)`; an empty matrix gives an empty result. The error in spectral
/// norm tends to `sigma_{k+1}` as `power_iters` grows (HMT Cor. 10.10). The sketch is drawn from
/// `rng`, so the same `rng` state gives the same factors.
pub fn rsi(
    w: MatRef<f32>,
    k: usize,
    oversample: usize,
    power_iters: usize,
    rng: &mut Rng,
) -> Result<Svd> {
    let (m, n) = (w.nrows(), w.ncols());
    let k = k.min(m).min(n);
    if k == 0 {
        return Ok(Svd {
            u: Mat::zeros(m, 0),
            sigma: Vec::new(),
            vt: Mat::zeros(0, n),
        });
    }
    // Work on the tall orientation (rows >= cols), as scikit-learn does: the Gaussian sketch and the
    // final core are then sized by the short side.
    if m < n {
        let t = rsi_tall(w.transpose(), k, oversample, power_iters, rng)?;
        // W^T = U S Vt  =>  W = Vt^T S U^T.
        return Ok(Svd {
            u: t.vt.transpose().to_owned(),
            sigma: t.sigma,
            vt: t.u.transpose().to_owned(),
        });
    }
    rsi_tall(w, k, oversample, power_iters, rng)
}

fn rsi_tall(
    w: MatRef<f32>,
    k: usize,
    oversample: usize,
    power_iters: usize,
    rng: &mut Rng,
) -> Result<Svd> {
    let (m, n) = (w.nrows(), w.ncols());
    debug_assert!(m >= n && k <= n);
    let l = (k + oversample).min(n);
    let omega = gaussian_matrix(n, l, rng);

    let mut q = orthonormalize(product(w, omega.as_ref()).as_ref()); // m x l
    for _ in 0..power_iters {
        let p = orthonormalize(product(w.transpose(), q.as_ref()).as_ref()); // n x l
        q = orthonormalize(product(w, p.as_ref()).as_ref()); // m x l
    }
    // Core B = Q^T W (l x n); its SVD B = Ub S Vt gives W ~= (Q Ub) S Vt.
    let core = product(q.transpose(), w);
    let core64 = Mat::<f64>::from_fn(l, n, |i, j| core[(i, j)] as f64);
    let svd = core64.thin_svd().map_err(|e| {
        Error::unsupported(format!("SVD of the sketch core did not converge: {e:?}"))
    })?;
    let ub = Mat::<f32>::from_fn(l, k, |i, j| svd.U()[(i, j)] as f32);
    let u = product(q.as_ref(), ub.as_ref());
    let vt = Mat::<f32>::from_fn(k, n, |i, j| svd.V()[(j, i)] as f32);
    let sigma = (0..k).map(|j| svd.S()[j] as f32).collect();
    Ok(Svd { u, sigma, vt })
}

/// A `rows x cols` matrix of independent standard normal entries, filled column by column.
///
/// Marsaglia's polar method, keeping both values of each accepted pair: about twice as fast as
/// `Rng::normal` (one `ln` and one `sqrt` per two values, no trigonometry), which matters here
/// because the sketch is drawn on every call.
pub fn gaussian_matrix(rows: usize, cols: usize, rng: &mut Rng) -> Mat<f32> {
    let mut out = Mat::<f32>::zeros(rows, cols);
    let mut spare: Option<f32> = None;
    for j in 0..cols {
        for i in 0..rows {
            out[(i, j)] = match spare.take() {
                Some(x) => x,
                None => loop {
                    let u = 2.0 * rng.uniform() - 1.0;
                    let v = 2.0 * rng.uniform() - 1.0;
                    let s = u * u + v * v;
                    if s > 0.0 && s < 1.0 {
                        let f = (-2.0 * s.ln() / s).sqrt();
                        spare = Some((v * f) as f32);
                        break (u * f) as f32;
                    }
                },
            };
        }
    }
    out
}

/// The top `how_many` singular values of the row-major `rows x cols` matrix `values`, by RSI with
/// 6 power iterations and 10 oversamples (accurate to a fraction of a percent on weight matrices;
/// an estimate, for spectra in reports). Empty if the matrix is empty or the SVD fails.
pub fn singular_values(
    values: &[f32],
    rows: usize,
    cols: usize,
    how_many: usize,
    seed: u64,
) -> Vec<f32> {
    if rows.checked_mul(cols) != Some(values.len()) || values.is_empty() {
        return Vec::new();
    }
    let w = view_row_major(values, rows, cols);
    let mut rng = Rng::new(seed);
    match rsi(w, how_many, 10, 6, &mut rng) {
        Ok(svd) => svd.sigma,
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A random `n x k` matrix with orthonormal columns (Q of a Gaussian matrix).
    pub(crate) fn random_orthonormal(n: usize, k: usize, rng: &mut Rng) -> Mat<f32> {
        let g = Mat::<f32>::from_fn(n, k, |_, _| rng.normal() as f32);
        orthonormalize(g.as_ref())
    }

    /// `U diag(s) V^T` with random orthonormal `U` (m x r), `V` (n x r), r = s.len().
    pub(crate) fn with_spectrum(m: usize, n: usize, s: &[f32], rng: &mut Rng) -> Mat<f32> {
        let u = random_orthonormal(m, s.len(), rng);
        let v = random_orthonormal(n, s.len(), rng);
        let us = Mat::<f32>::from_fn(m, s.len(), |i, j| u[(i, j)] * s[j]);
        product(us.as_ref(), v.transpose())
    }

    fn orthonormality_defect(q: MatRef<f32>) -> f64 {
        let g = product(q.transpose(), q);
        let mut worst = 0.0f64;
        for i in 0..g.nrows() {
            for j in 0..g.ncols() {
                let target = if i == j { 1.0 } else { 0.0 };
                worst = worst.max((g[(i, j)] as f64 - target).abs());
            }
        }
        worst
    }

    #[test]
    fn truncation_error_is_the_tail_of_the_spectrum() {
        // Eckart-Young: ||W - W_k||_F^2 = sum_{j>k} s_j^2, for exact SVD and for RSI (q = 2) on a
        // decaying spectrum.
        let mut rng = Rng::new(11);
        let (m, n) = (120, 80);
        let s: Vec<f32> = (0..n).map(|j| 0.9f32.powi(j as i32)).collect();
        let w = with_spectrum(m, n, &s, &mut rng);
        for k in [5, 20, 40] {
            let tail: f64 = s[k..].iter().map(|&x| (x as f64).powi(2)).sum();
            let exact = exact_svd(w.as_ref()).unwrap();
            let trunc = Svd {
                u: exact.u.subcols(0, k).to_owned(),
                sigma: exact.sigma[..k].to_vec(),
                vt: exact.vt.subrows(0, k).to_owned(),
            };
            let err_exact = frobenius_distance(w.as_ref(), trunc.reconstruct().as_ref()).powi(2);
            assert!(
                (err_exact - tail).abs() <= 1e-3 * tail + 1e-9,
                "exact k={k}: {err_exact} vs {tail}"
            );
            let approx = rsi(w.as_ref(), k, 10, 2, &mut Rng::new(5)).unwrap();
            let err_rsi = frobenius_distance(w.as_ref(), approx.reconstruct().as_ref()).powi(2);
            assert!(
                err_rsi >= tail * (1.0 - 1e-3) && err_rsi <= tail * 1.02,
                "rsi k={k}: {err_rsi} vs {tail}"
            );
            // Singular values themselves match the known spectrum.
            for j in 0..k {
                assert!((approx.sigma[j] - s[j]).abs() <= 1e-3 * s[0], "sigma_{j}");
            }
        }
    }

    #[test]
    fn power_iterations_beat_plain_rsvd_on_a_flat_spectrum() {
        // Slowly decaying spectrum: RSVD's spectral error is well above sigma_{k+1}; q = 4 brings
        // the ratio close to 1 (HMT: the excess factor shrinks like C^(1/(2q+1))).
        let mut rng = Rng::new(21);
        let (m, n, k) = (200, 150, 20);
        let s: Vec<f32> = (0..n).map(|j| 1.0 / (1.0 + j as f32).powf(0.3)).collect();
        let w = with_spectrum(m, n, &s, &mut rng);
        let ratio = |q: usize| {
            let svd = rsi(w.as_ref(), k, 5, q, &mut Rng::new(9)).unwrap();
            let mut resid = w.clone();
            resid -= svd.reconstruct();
            spectral_norm(resid.as_ref(), 200, 3) / s[k] as f64
        };
        let (r0, r4) = (ratio(0), ratio(4));
        println!("||W - W_k||_2 / s_(k+1): q=0 {r0:.3}, q=4 {r4:.3}");
        assert!(r4 < r0, "q=4 ratio {r4} not below q=0 ratio {r0}");
        assert!(r4 < 1.1, "q=4 ratio {r4}");
        assert!(r0 > 1.2, "q=0 ratio {r0} unexpectedly close to optimal");
    }

    #[test]
    fn factors_are_orthonormal_and_deterministic() {
        let mut rng = Rng::new(1);
        for (m, n) in [(90, 40), (40, 90)] {
            let w = Mat::<f32>::from_fn(m, n, |_, _| rng.normal() as f32);
            let a = rsi(w.as_ref(), 12, 10, 2, &mut Rng::new(4)).unwrap();
            let b = rsi(w.as_ref(), 12, 10, 2, &mut Rng::new(4)).unwrap();
            assert_eq!((a.u.nrows(), a.u.ncols()), (m, 12));
            assert_eq!((a.vt.nrows(), a.vt.ncols()), (12, n));
            assert!(orthonormality_defect(a.u.as_ref()) < 1e-5);
            assert!(orthonormality_defect(a.vt.transpose()) < 1e-5);
            assert!(a.sigma.windows(2).all(|p| p[0] >= p[1]));
            assert_eq!(a.u, b.u);
            assert_eq!(a.vt, b.vt);
            assert_eq!(a.sigma, b.sigma);
        }
    }

    #[test]
    fn gaussian_matrix_has_unit_variance() {
        let g = gaussian_matrix(300, 200, &mut Rng::new(12));
        let n = (300 * 200) as f64;
        let mean: f64 = g
            .col_iter()
            .flat_map(|c| c.iter().copied())
            .map(f64::from)
            .sum::<f64>()
            / n;
        let var: f64 = g
            .col_iter()
            .flat_map(|c| c.iter().copied())
            .map(|x| (x as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((var - 1.0).abs() < 0.03, "var {var}");
    }

    #[test]
    fn awkward_shapes() {
        let mut rng = Rng::new(2);
        for (m, n, k) in [
            (1, 17, 3),
            (17, 1, 3),
            (6, 6, 6),
            (6, 9, 50),
            (1, 1, 1),
            (0, 5, 2),
        ] {
            let w = Mat::<f32>::from_fn(m, n, |_, _| rng.normal() as f32);
            let svd = rsi(w.as_ref(), k, 10, 2, &mut Rng::new(3)).unwrap();
            let r = k.min(m).min(n);
            assert_eq!(svd.rank(), r);
            if r == m.min(n) && r > 0 {
                // Full rank: exact reconstruction up to f32 rounding.
                let err = frobenius_distance(w.as_ref(), svd.reconstruct().as_ref());
                assert!(
                    err <= 1e-5 * frobenius_norm(w.as_ref()).max(1.0),
                    "{m}x{n}: {err}"
                );
            }
        }
    }

    #[test]
    fn singular_values_match_exact() {
        let mut rng = Rng::new(8);
        let (m, n) = (60, 100);
        let w = Mat::<f32>::from_fn(m, n, |i, _| rng.normal() as f32 * 0.95f32.powi(i as i32));
        let values: Vec<f32> = (0..m)
            .flat_map(|i| (0..n).map(move |j| (i, j)))
            .map(|(i, j)| w[(i, j)])
            .collect();
        let top = singular_values(&values, m, n, 10, 1);
        let exact = exact_svd(w.as_ref()).unwrap().sigma;
        for j in 0..10 {
            assert!((top[j] - exact[j]).abs() <= 2e-3 * exact[j], "sigma_{j}");
        }
    }
}
