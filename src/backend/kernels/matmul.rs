//! The matrix product `C = op(A) B (+ C)`, `shaders/matmul.wgsl`, and what is built on it: the
//! Gram matrix `Y^T Y` and the randomized SVD (subspace iteration with CholeskyQR2), whose heavy
//! steps are all products of this kernel.
//!
//! - Arguments: `MatmulDims`, the kernel's uniform (GPU builds).
//! - CPU twin: [`matmul`], [`gram`], [`rsi`] (faer and [`crate::linalg`]), checked by
//!   [`check_matmul`] on both sides.
//! - GPU host code: `Gpu::matmul`, `Gpu::gram`, `Gpu::rsi`, `Gpu::time_resident_matmul`.

use crate::error::{Error, Result};
use crate::linalg::{self, Svd};
use crate::rng::Rng;

// ---------------------------------------------------------------------------------------------
// CPU twin

/// Checks the operands of `op(A) * B` (see [`crate::backend::Backend::matmul`]).
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

// ---------------------------------------------------------------------------------------------
// Arguments: the uniform of matmul.wgsl

/// `MatmulDims` of matmul.wgsl, field for field (8 words).
#[cfg(feature = "gpu")]
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct MatmulDims {
    m: u32,
    n: u32,
    k: u32,
    trans_a: u32,
    accumulate: u32,
    _pad: [u32; 3],
}

#[cfg(feature = "gpu")]
impl MatmulDims {
    /// `C (+)= op(A) B` with `C` `m x n` and `k` the inner dimension; `Unsupported` past 32 bits.
    fn new(
        m: usize,
        n: usize,
        k: usize,
        transpose_a: bool,
        accumulate: bool,
    ) -> crate::backend::gpu::GpuResult<MatmulDims> {
        use crate::backend::gpu::to_u32;
        Ok(MatmulDims {
            m: to_u32(m, "rows")?,
            n: to_u32(n, "columns")?,
            k: to_u32(k, "inner dimension")?,
            trans_a: transpose_a as u32,
            accumulate: accumulate as u32,
            _pad: [0; 3],
        })
    }
}

#[cfg(feature = "gpu")]
pub(super) fn layout() -> super::UniformLayout {
    uniform_layout!(
        crate::shaders::MATMUL,
        MatmulDims {
            m,
            n,
            k,
            trans_a,
            accumulate
        }
    )
}

// ---------------------------------------------------------------------------------------------
// GPU host code

#[cfg(feature = "gpu")]
mod host {
    use faer::Mat;

    use super::MatmulDims;
    use crate::backend::gpu::{Gpu, GpuResult, Tiled, MAX_GROUPS_PER_DIM};
    use crate::backend::GpuFailure;
    use crate::linalg::{self, Svd};
    use crate::rng::Rng;
    use crate::shaders;

    /// Edge of the square block of C that one workgroup computes (matmul.wgsl's TILE).
    const MATMUL_TILE: usize = 64;
    /// Cholesky-QR is used while the Gram matrix's Cholesky factor has a diagonal ratio above
    /// this; past it (a numerically rank-deficient panel) the panel is orthonormalized by
    /// Householder QR on the CPU. CholeskyQR2 in f32 keeps orthogonality to ~1e-6 up to a
    /// condition number of ~1e3.
    const CHOLESKY_MIN_DIAGONAL_RATIO: f64 = 1e-3;

    impl Gpu {
        /// Records `c (+)= op(a) b` for one set of buffers (`[a, b, c]`); nothing for an empty `c`.
        fn record_matmul(
            &self,
            encoder: &mut wgpu::CommandEncoder,
            [a, b, c]: [&wgpu::Buffer; 3],
            dims: MatmulDims,
        ) -> GpuResult<()> {
            let (m, n) = (dims.m as usize, dims.n as usize);
            if m == 0 || n == 0 {
                return Ok(());
            }
            let gx = n.div_ceil(MATMUL_TILE);
            let gy = m.div_ceil(MATMUL_TILE);
            if gx > MAX_GROUPS_PER_DIM as usize || gy > MAX_GROUPS_PER_DIM as usize {
                return Err(GpuFailure::Unsupported(format!(
                    "a {m} x {n} product exceeds one dispatch"
                )));
            }
            let uniform = self.uniform(&dims);
            self.dispatch(
                encoder,
                &shaders::MATMUL,
                "main",
                &[(0, &uniform), (1, a), (2, b), (3, c)],
                (gx as u32, gy as u32, 1),
            );
            Ok(())
        }

        /// `Y_t = W_t * B` for every row tile of `w` (B small, `w.cols x b_cols`).
        fn tiled_times_small(
            &self,
            encoder: &mut wgpu::CommandEncoder,
            w: &Tiled,
            b: &wgpu::Buffer,
            b_cols: usize,
            out: &Tiled,
        ) -> GpuResult<()> {
            for ((_, n, wt), (_, _, ot)) in w.tiles.iter().zip(&out.tiles) {
                let dims = MatmulDims::new(*n, b_cols, w.cols, false, false)?;
                self.record_matmul(encoder, [wt, b, ot], dims)?;
            }
            Ok(())
        }

        /// `C = sum_t A_t^T B_t` over matching row tiles (`a.cols x b.cols`, into `c`).
        fn tiled_transpose_times_tiled(
            &self,
            encoder: &mut wgpu::CommandEncoder,
            a: &Tiled,
            b: &Tiled,
            c: &wgpu::Buffer,
        ) -> GpuResult<()> {
            if a.tiles.iter().all(|t| t.1 == 0) {
                encoder.clear_buffer(c, 0, None);
            }
            for (i, ((_, n, at), (_, _, bt))) in a.tiles.iter().zip(&b.tiles).enumerate() {
                let dims = MatmulDims::new(a.cols, b.cols, *n, true, i > 0)?;
                self.record_matmul(encoder, [at, bt, c], dims)?;
            }
            Ok(())
        }

        /// [`crate::backend::Backend::matmul`] on the GPU: `A` tiled by rows, `B` in one binding
        /// (or tiled alike when `A` is transposed).
        pub async fn matmul(
            &self,
            a: &[f32],
            a_rows: usize,
            a_cols: usize,
            transpose_a: bool,
            b: &[f32],
            b_cols: usize,
        ) -> GpuResult<Vec<f32>> {
            let (m, k) = if transpose_a {
                (a_cols, a_rows)
            } else {
                (a_rows, a_cols)
            };
            let mut encoder = self.encoder();
            if transpose_a {
                // A^T B with A tiled by rows: B is tiled by the same rows, the result accumulates.
                self.check_binding(m * b_cols * 4, "the product")?;
                let at = self.upload_tiled(a, a_rows, a_cols, b_cols, "A")?;
                let bt = self.upload_tiled_like(b, &at, b_cols, "B");
                let c = self.zeroed(m * b_cols * 4, "C");
                self.tiled_transpose_times_tiled(&mut encoder, &at, &bt, &c)?;
                self.submit(encoder);
                self.read::<f32>(&c, m * b_cols).await
            } else {
                self.check_binding(k * b_cols * 4, "B")?;
                let at = self.upload_tiled(a, m, k, b_cols, "A")?;
                let bb = self.upload(b, "B");
                let c = self.zeroed_like(&at, b_cols, "C");
                self.tiled_times_small(&mut encoder, &at, &bb, b_cols, &c)?;
                self.submit(encoder);
                self.read_tiled(&c).await
            }
        }

        /// Seconds per product `C = A B` (`m x k` times `k x n`, each in one binding) over
        /// `repeats` dispatches on buffers already on the device, after one warm-up: the kernel's
        /// own rate, which the transfers every `matmul` call pays would hide. For the benchmark;
        /// native only (the browser has no monotonic clock here).
        #[cfg(not(target_arch = "wasm32"))]
        pub async fn time_resident_matmul(
            &self,
            m: usize,
            k: usize,
            n: usize,
            repeats: usize,
        ) -> GpuResult<f64> {
            for (bytes, what) in [(m * k * 4, "A"), (k * n * 4, "B"), (m * n * 4, "C")] {
                self.check_binding(bytes, what)?;
            }
            let mut rng = Rng::new(1);
            let mut random =
                |len: usize| -> Vec<f32> { (0..len).map(|_| rng.normal() as f32).collect() };
            let a = self.upload(&random(m * k), "A");
            let b = self.upload(&random(k * n), "B");
            let c = self.zeroed(m * n * 4, "C");
            let run = |count: usize| -> GpuResult<()> {
                let mut encoder = self.encoder();
                for _ in 0..count {
                    self.record_matmul(
                        &mut encoder,
                        [&a, &b, &c],
                        MatmulDims::new(m, n, k, false, false)?,
                    )?;
                }
                self.submit(encoder);
                Ok(())
            };
            run(1)?;
            self.sync().await?;
            let start = std::time::Instant::now();
            run(repeats.max(1))?;
            self.sync().await?;
            Ok(start.elapsed().as_secs_f64() / repeats.max(1) as f64)
        }

        /// [`crate::backend::Backend::gram`] on the GPU.
        pub async fn gram(&self, y: &[f32], rows: usize, cols: usize) -> GpuResult<Vec<f32>> {
            self.check_binding(cols * cols * 4, "the Gram matrix")?;
            let yt = self.upload_tiled(y, rows, cols, cols, "Y")?;
            let g = self.zeroed(cols * cols * 4, "G");
            let mut encoder = self.encoder();
            self.tiled_transpose_times_tiled(&mut encoder, &yt, &yt, &g)?;
            self.submit(encoder);
            self.read::<f32>(&g, cols * cols).await
        }

        /// Orthonormalizes the columns of the tiled `y` in place: CholeskyQR2 (Gram matrix on the
        /// GPU, its Cholesky factor on the CPU in f64, `Y R^-1` on the GPU, twice), or, when the
        /// panel is numerically rank deficient, Householder QR on the CPU.
        async fn orthonormalize(&self, y: Tiled) -> GpuResult<Tiled> {
            let l = y.cols;
            let mut y = y;
            for _pass in 0..2 {
                let g = self.zeroed(l * l * 4, "G");
                let mut encoder = self.encoder();
                self.tiled_transpose_times_tiled(&mut encoder, &y, &y, &g)?;
                self.submit(encoder);
                let gram = self.read::<f32>(&g, l * l).await?;
                let Some(r_inv) = inverse_cholesky_factor(&gram, l) else {
                    let rows: usize = y.tiles.iter().map(|t| t.1).sum();
                    let values = self.read_tiled(&y).await?;
                    let q = linalg::orthonormalize(linalg::view_row_major(&values, rows, l));
                    return Ok(self.upload_tiled_like(
                        &linalg::to_row_major(q.as_ref()),
                        &y,
                        l,
                        "Q",
                    ));
                };
                let r_inv = self.upload(&r_inv, "R^-1");
                let q = self.zeroed_like(&y, l, "Q");
                let mut encoder = self.encoder();
                self.tiled_times_small(&mut encoder, &y, &r_inv, l, &q)?;
                self.submit(encoder);
                y = q;
            }
            Ok(y)
        }

        /// [`crate::backend::Backend::rsi`] on the GPU: the matrix stays resident, only the small
        /// Gram matrices, the core and the left factor are read back.
        #[allow(clippy::too_many_arguments)]
        pub async fn rsi(
            &self,
            w: &[f32],
            rows: usize,
            cols: usize,
            k: usize,
            oversample: usize,
            power_iters: usize,
            rng: &mut Rng,
        ) -> GpuResult<Svd> {
            let k = k.min(rows).min(cols);
            if k == 0 {
                return Ok(Svd {
                    u: Mat::zeros(rows, 0),
                    sigma: Vec::new(),
                    vt: Mat::zeros(0, cols),
                });
            }
            // Work on the tall orientation, as linalg::rsi does: a wide matrix is uploaded
            // transposed.
            if rows < cols {
                let mut t = vec![0f32; w.len()];
                for i in 0..rows {
                    for j in 0..cols {
                        t[j * rows + i] = w[i * cols + j];
                    }
                }
                let s = Box::pin(self.rsi(&t, cols, rows, k, oversample, power_iters, rng)).await?;
                return Ok(Svd {
                    u: s.vt.transpose().to_owned(),
                    sigma: s.sigma,
                    vt: s.u.transpose().to_owned(),
                });
            }
            let (m, n) = (rows, cols);
            let l = (k + oversample).min(n);
            for (bytes, what) in [(n * l * 4, "the sketch"), (l * n * 4, "the core")] {
                self.check_binding(bytes, what)?;
            }
            let omega = linalg::to_row_major(linalg::gaussian_matrix(n, l, rng).as_ref());
            let wt = self.upload_tiled(w, m, n, n, "W")?;
            let omega = self.upload(&omega, "Omega");

            let y = self.zeroed_like(&wt, l, "Y");
            let mut encoder = self.encoder();
            self.tiled_times_small(&mut encoder, &wt, &omega, l, &y)?;
            self.submit(encoder);
            let mut q = self.orthonormalize(y).await?;
            for _ in 0..power_iters {
                // P = orth(W^T Q): n x l, one tile (n <= m, and n*l fits as checked above).
                let p = self.zeroed(n * l * 4, "P");
                let mut encoder = self.encoder();
                self.tiled_transpose_times_tiled(&mut encoder, &wt, &q, &p)?;
                self.submit(encoder);
                let p = self
                    .orthonormalize(Tiled {
                        cols: l,
                        tiles: vec![(0, n, p)],
                    })
                    .await?;
                let y = self.zeroed_like(&wt, l, "Y");
                let mut encoder = self.encoder();
                self.tiled_times_small(&mut encoder, &wt, &p.tiles[0].2, l, &y)?;
                self.submit(encoder);
                q = self.orthonormalize(y).await?;
            }
            // Core B = Q^T W (l x n), read back for its SVD in f64 on the CPU.
            let core = self.zeroed(l * n * 4, "core");
            let mut encoder = self.encoder();
            self.tiled_transpose_times_tiled(&mut encoder, &q, &wt, &core)?;
            self.submit(encoder);
            let core = self.read::<f32>(&core, l * n).await?;
            let core64 = Mat::<f64>::from_fn(l, n, |i, j| core[i * n + j] as f64);
            let svd = core64.thin_svd().map_err(|e| {
                GpuFailure::Unsupported(format!("SVD of the sketch core did not converge: {e:?}"))
            })?;
            let ub: Vec<f32> = (0..l)
                .flat_map(|i| (0..k).map(move |j| (i, j)))
                .map(|(i, j)| svd.U()[(i, j)] as f32)
                .collect();
            let ub = self.upload(&ub, "Ub");
            let u = self.zeroed_like(&wt, k, "U");
            let mut encoder = self.encoder();
            self.tiled_times_small(&mut encoder, &q, &ub, k, &u)?;
            self.submit(encoder);
            let u = self.read_tiled(&u).await?;
            Ok(Svd {
                u: Mat::<f32>::from_fn(m, k, |i, j| u[i * k + j]),
                sigma: (0..k).map(|j| svd.S()[j] as f32).collect(),
                vt: Mat::<f32>::from_fn(k, n, |i, j| svd.V()[(j, i)] as f32),
            })
        }
    }

    /// `R^-1` (row-major, `l x l`) for the Cholesky factor `R^T R = G` of a Gram matrix, computed
    /// in f64; `None` when `G` is not numerically positive definite enough for Cholesky-QR in f32
    /// (see [`CHOLESKY_MIN_DIAGONAL_RATIO`]).
    fn inverse_cholesky_factor(gram: &[f32], l: usize) -> Option<Vec<f32>> {
        // Cholesky G = R^T R, R upper triangular, row-major in f64.
        let mut r = vec![0f64; l * l];
        for j in 0..l {
            let mut d = gram[j * l + j] as f64;
            for p in 0..j {
                d -= r[p * l + j] * r[p * l + j];
            }
            if d.is_nan() || d <= 0.0 {
                return None;
            }
            let d = d.sqrt();
            r[j * l + j] = d;
            for i in j + 1..l {
                let mut s = gram[j * l + i] as f64;
                for p in 0..j {
                    s -= r[p * l + j] * r[p * l + i];
                }
                r[j * l + i] = s / d;
            }
        }
        let diag: Vec<f64> = (0..l).map(|j| r[j * l + j]).collect();
        let max = diag.iter().copied().fold(0.0, f64::max);
        let min = diag.iter().copied().fold(f64::INFINITY, f64::min);
        if min.is_nan() || min <= CHOLESKY_MIN_DIAGONAL_RATIO * max {
            return None;
        }
        // Back substitution for R^-1 (upper triangular), column by column.
        let mut inv = vec![0f64; l * l];
        for c in 0..l {
            for i in (0..=c).rev() {
                let mut s = if i == c { 1.0 } else { 0.0 };
                for p in i + 1..=c {
                    s -= r[i * l + p] * inv[p * l + c];
                }
                inv[i * l + c] = s / r[i * l + i];
            }
        }
        Some(inv.into_iter().map(|v| v as f32).collect())
    }
}
