//! Every kernel run on a backend and compared with the CPU reference, on awkward shapes, with the
//! tolerances of docs/BACKENDS.md. The browser test runs this on the page's WebGPU adapter (the
//! native tests/backend.rs checks the same kernels more exhaustively, tiling included); natively a
//! test runs it on lavapipe so that the check itself is tested.

use serde::Serialize;

use super::kernels::{fwht, group_fit, hyper, kmeans_update, matmul};
use super::Backend;
use crate::kmeans::Codebook;
use crate::rng::Rng;

/// One kernel on one shape.
#[derive(Clone, Debug, Serialize)]
pub struct KernelCheck {
    pub kernel: String,
    pub shape: String,
    /// The largest deviation from the CPU reference, divided by its tolerance: <= 1 passes.
    pub worst_ratio: f64,
    pub passed: bool,
    /// The backend that ran it (`cpu` when the GPU gave up: a failure, not a pass).
    pub ran_on: String,
    pub note: String,
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.normal() as f32).collect()
}

fn row(
    kernel: &str,
    shape: String,
    worst_ratio: f64,
    backend: &Backend,
    note: &str,
) -> KernelCheck {
    let ran_on = backend.name().to_string();
    KernelCheck {
        kernel: kernel.to_string(),
        shape,
        passed: worst_ratio <= 1.0 && worst_ratio.is_finite() && backend.fallback().is_none(),
        worst_ratio,
        ran_on,
        note: note.to_string(),
    }
}

fn failed(kernel: &str, shape: String, e: crate::error::Error) -> KernelCheck {
    KernelCheck {
        kernel: kernel.to_string(),
        shape,
        worst_ratio: f64::INFINITY,
        passed: false,
        ran_on: String::new(),
        note: e.to_string(),
    }
}

/// Runs every kernel on `backend` and compares it with the CPU reference: one function per kernel
/// below, each adding its rows.
pub async fn check_kernels(backend: &Backend) -> Vec<KernelCheck> {
    let mut out = Vec::new();
    matmul_rows(backend, &mut out).await;
    gram_rows(backend, &mut out).await;
    rsi_rows(backend, &mut out).await;
    assign_rows(backend, &mut out).await;
    update_rows(backend, &mut out).await;
    rotation_rows(backend, &mut out).await;
    group_fit_rows(backend, &mut out).await;
    hyper_rows(backend, &mut out).await;
    linear_rows(backend, &mut out).await;
    norm_rows(backend, &mut out).await;
    elementwise_rows(backend, &mut out).await;
    rope_rows(backend, &mut out).await;
    attention_rows(backend, &mut out).await;
    pool_rows(backend, &mut out).await;
    out
}

/// Products: 1 x n, n x 1, and sizes that are not multiples of the 64 x 64 tile, both ops.
/// Tolerance per entry: 1e-5 x sum_k |a_ik b_kj| (f32 accumulation in another order).
async fn matmul_rows(backend: &Backend, out: &mut Vec<KernelCheck>) {
    for &(m, k, n, transpose) in &[
        (1, 300, 70, false),
        (257, 1, 1, false),
        (67, 129, 33, false),
        (129, 67, 65, true),
    ] {
        let shape = format!("{m}x{k} * {k}x{n}{}", if transpose { " (A^T)" } else { "" });
        let a = random(m * k, 1);
        let b = random(k * n, 2);
        let (a_rows, a_cols) = if transpose { (k, m) } else { (m, k) };
        let result = backend.matmul(&a, a_rows, a_cols, transpose, &b, n).await;
        let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<f32>>();
        match (
            result,
            matmul::matmul(&a, a_rows, a_cols, transpose, &b, n),
            matmul::matmul(&abs(&a), a_rows, a_cols, transpose, &abs(&b), n),
        ) {
            (Ok(got), Ok(want), Ok(scale)) => {
                let worst = got
                    .iter()
                    .zip(&want)
                    .zip(&scale)
                    .map(|((g, w), s)| (g - w).abs() as f64 / (1e-5 * (*s as f64) + 1e-30))
                    .fold(0.0, f64::max);
                out.push(row("matmul", shape, worst, backend, ""));
            }
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                out.push(failed("matmul", shape, e))
            }
        }
    }
}

/// The Gram matrix Y^T Y of a tall panel.
async fn gram_rows(backend: &Backend, out: &mut Vec<KernelCheck>) {
    let (rows, cols) = (301, 19);
    let y = random(rows * cols, 3);
    let shape = format!("{rows}x{cols}");
    match (
        backend.gram(&y, rows, cols).await,
        matmul::gram(&y, rows, cols),
    ) {
        (Ok(got), Ok(want)) => {
            let norms: Vec<f64> = (0..cols)
                .map(|j| (0..rows).map(|i| (y[i * cols + j] as f64).powi(2)).sum())
                .collect();
            let worst = (0..cols * cols)
                .map(|ij| {
                    let tol = 1e-5 * (norms[ij / cols] * norms[ij % cols]).sqrt();
                    (got[ij] - want[ij]).abs() as f64 / tol
                })
                .fold(0.0, f64::max);
            out.push(row("gram", shape, worst, backend, ""));
        }
        (Err(e), _) | (_, Err(e)) => out.push(failed("gram", shape, e)),
    }
}

/// Randomized SVD: singular values within 1e-4 s1 + 1e-3 si.
async fn rsi_rows(backend: &Backend, out: &mut Vec<KernelCheck>) {
    let (rows, cols, rank) = (90, 61, 8);
    let w = random(rows * cols, 4);
    let shape = format!("{rows}x{cols} rank {rank}");
    let got = backend
        .rsi(&w, rows, cols, rank, 8, 2, &mut Rng::new(9))
        .await;
    let want = matmul::rsi(&w, rows, cols, rank, 8, 2, &mut Rng::new(9));
    match (got, want) {
        (Ok(g), Ok(c)) => {
            let s1 = c.sigma.first().copied().unwrap_or(0.0) as f64;
            let worst = g
                .sigma
                .iter()
                .zip(&c.sigma)
                .map(|(a, b)| (a - b).abs() as f64 / (1e-4 * s1 + 1e-3 * *b as f64))
                .fold(0.0, f64::max);
            out.push(row("rsi (randomized SVD)", shape, worst, backend, ""));
        }
        (Err(e), _) | (_, Err(e)) => out.push(failed("rsi (randomized SVD)", shape, e)),
    }
}

/// Nearest-centroid assignment, k larger than the number of points and dim 70 (more than the
/// kernel's registers): the chosen centroid's distance within 1e-4 of the nearest.
async fn assign_rows(backend: &Backend, out: &mut Vec<KernelCheck>) {
    for &(points, dim, k) in &[(5usize, 3usize, 9usize), (1000, 70, 300)] {
        let shape = format!("{points} points x {dim}, k = {k}");
        let p = random(points * dim, 5);
        let codebook = Codebook {
            dim,
            centroids: random(k * dim, 6),
        };
        match backend.kmeans_assign(&p, dim, &codebook).await {
            Ok((codes, _)) => {
                let dist = |i: usize, c: usize| -> f64 {
                    (0..dim)
                        .map(|d| (p[i * dim + d] - codebook.centroids[c * dim + d]) as f64)
                        .map(|x| x * x)
                        .sum()
                };
                let worst = (0..points)
                    .map(|i| {
                        let best = (0..k).map(|c| dist(i, c)).fold(f64::INFINITY, f64::min);
                        (dist(i, codes[i] as usize) - best) / (1e-4 * (1.0 + best))
                    })
                    .fold(0.0, f64::max);
                out.push(row("k-means assignment", shape, worst, backend, ""));
            }
            Err(e) => out.push(failed("k-means assignment", shape, e)),
        }
    }
}

/// Centroid update: means within 1e-5 (1 + |mean|).
async fn update_rows(backend: &Backend, out: &mut Vec<KernelCheck>) {
    let (points, dim, k) = (1001, 7, 13);
    let shape = format!("{points} points x {dim}, k = {k}");
    let p = random(points * dim, 7);
    let codes: Vec<u32> = (0..points as u32).map(|i| (i * 7) % k as u32).collect();
    let codebook = Codebook {
        dim,
        centroids: random(k * dim, 8),
    };
    match backend.cluster_means(&p, dim, &codes, &codebook).await {
        Ok((got, _)) => {
            let (want, _) = kmeans_update::cluster_means(&p, dim, &codes, &codebook);
            let worst = got
                .centroids
                .iter()
                .zip(&want.centroids)
                .map(|(a, b)| (a - b).abs() as f64 / (1e-5 * (1.0 + b.abs() as f64)))
                .fold(0.0, f64::max);
            out.push(row("k-means centroid update", shape, worst, backend, ""));
        }
        Err(e) => out.push(failed("k-means centroid update", shape, e)),
    }
}

/// The random-sign Walsh-Hadamard rotation: bit for bit.
async fn rotation_rows(backend: &Backend, out: &mut Vec<KernelCheck>) {
    for &(rows, cols) in &[(1usize, 1024usize), (37, 64)] {
        let shape = format!("{rows}x{cols}");
        let mut got = random(rows * cols, 10);
        let mut want = got.clone();
        match backend.rotate(&mut got, cols, 11, false).await {
            Ok(()) => {
                fwht::rotate(&mut want, cols, 11, false);
                let same = got
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                let worst = if same { 0.0 } else { f64::INFINITY };
                out.push(row("rotation (FWHT)", shape, worst, backend, "bit-exact"));
            }
            Err(e) => out.push(failed("rotation (FWHT)", shape, e)),
        }
    }
}

/// Per-group scale search: exact f16 fits, each group's error no worse than the CPU's x 1.001.
async fn group_fit_rows(backend: &Backend, out: &mut Vec<KernelCheck>) {
    let (rows, cols, bits, group) = (3, 200, 4u8, 64);
    let shape = format!("{rows}x{cols}, {bits} bits, groups of {group}");
    let v = random(rows * cols, 12);
    match backend.fit_groups(&v, rows, cols, bits, group, true).await {
        Ok(got) => {
            let want = group_fit::fit_groups(&v, rows, cols, bits, group, true);
            let error = |f: &group_fit::GroupFits| -> Vec<f64> {
                group_fit::group_errors(&v, rows, cols, group, f)
            };
            let (e_got, e_want) = (error(&got), error(&want));
            let worst = e_got
                .iter()
                .zip(&e_want)
                .map(|(g, w)| (g - w).max(0.0) / (1e-3 * w + 1e-30))
                .fold(0.0, f64::max);
            out.push(row("scalar group fit", shape, worst, backend, ""));
        }
        Err(e) => out.push(failed("scalar group fit", shape, e)),
    }
}

/// Hyper-Compression's nearest codeword: the same code for every pair (the kernel settles
/// near-ties on the CPU), with and without rings outside the square.
async fn hyper_rows(backend: &Backend, out: &mut Vec<KernelCheck>) {
    for (t, rings) in [(40u32, 0u32), (15, 3)] {
        let geometry = hyper::Geometry::new([0.013, -0.02], 0.1, t, rings, 0.5);
        let shape = format!("1001 pairs, T = {t}, {rings} rings");
        let pairs: Vec<f32> = random(2 * 1001, 13).iter().map(|x| 0.08 * x).collect();
        match backend.hyper_codes(&pairs, &geometry).await {
            Ok(got) => {
                let want = hyper::hyper_codes(&pairs, &geometry);
                let worst = if got == want { 0.0 } else { f64::INFINITY };
                out.push(row(
                    "hyper nearest codeword",
                    shape,
                    worst,
                    backend,
                    "identical codes",
                ));
            }
            Err(e) => out.push(failed("hyper nearest codeword", shape, e)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The model runtime's kernels. They have no `Backend` method (the runtime records them into a
// resident pass): here the GPU runs each kernel's one-shot host code, the CPU backend its twin.
// The runtime does not tile, so every operand here fits the tests' lowered 8 KiB binding.

/// `$gpu` (an expression on the GPU `$g`, awaited) on the GPU backend, `$cpu` on the CPU backend.
macro_rules! forward_kernel {
    ($backend:expr, $g:ident => $gpu:expr, $cpu:expr) => {
        match $backend {
            Backend::Cpu => Ok($cpu),
            #[cfg(feature = "gpu")]
            Backend::Gpu($g) => $gpu.await.map_err(|e| match e {
                super::GpuFailure::Unsupported(m) | super::GpuFailure::Failed(m) => {
                    crate::error::Error::unsupported(m)
                }
            }),
        }
    };
}

/// One row: the worst of `|got - want| / tol(i)`.
fn compare_row(
    kernel: &str,
    shape: String,
    got: crate::error::Result<Vec<f32>>,
    want: &[f32],
    tol: impl Fn(usize) -> f64,
    backend: &Backend,
) -> KernelCheck {
    match got {
        Ok(got) if got.len() == want.len() => {
            let worst = (0..want.len())
                .map(|i| (got[i] - want[i]).abs() as f64 / tol(i))
                .fold(0.0, f64::max);
            row(kernel, shape, worst, backend, "")
        }
        Ok(got) => failed(
            kernel,
            shape,
            crate::error::Error::invalid(format!("{} values for {}", got.len(), want.len())),
        ),
        Err(e) => failed(kernel, shape, e),
    }
}

/// The largest magnitude of `v` (1 if all are 0): the scale of the relative tolerances.
fn largest(v: &[f32]) -> f64 {
    let m = v.iter().fold(0.0f64, |m, x| m.max(x.abs() as f64));
    if m > 0.0 {
        m
    } else {
        1.0
    }
}

/// Linear layers, one row (matvec) and several (tiled), with a bias: each output within
/// 1e-5 x sum_k |x_k w_jk|.
async fn linear_rows(backend: &Backend, out: &mut Vec<KernelCheck>) {
    use super::kernels::linear::linear;
    for &(n, out_dim, in_dim) in &[(1usize, 30usize, 65usize), (17, 31, 65)] {
        let (x, w, b) = (
            random(n * in_dim, 20),
            random(out_dim * in_dim, 21),
            random(out_dim, 22),
        );
        let want = linear(&x, n, &w, out_dim, in_dim, Some(&b));
        let abs = |v: &[f32]| v.iter().map(|a| a.abs()).collect::<Vec<f32>>();
        let scale = linear(&abs(&x), n, &abs(&w), out_dim, in_dim, None);
        let got = forward_kernel!(backend, g => g.linear(&x, n, &w, out_dim, in_dim, Some(&b)), want.clone());
        let shape = format!("{n}x{in_dim} -> {out_dim}");
        let tol = |i: usize| 1e-5 * scale[i] as f64 + 1e-30;
        out.push(compare_row("linear layer", shape, got, &want, tol, backend));
    }
}

/// RMSNorm and LayerNorm of rows wider than a workgroup: within 1e-5 of the largest output.
async fn norm_rows(backend: &Backend, out: &mut Vec<KernelCheck>) {
    use super::kernels::norm::{layer_norm, rms_norm};
    let (rows, dim) = (3, 300);
    let (x, w, b) = (random(rows * dim, 23), random(dim, 24), random(dim, 25));
    let want = rms_norm(&x, &w, 1e-5);
    let got = forward_kernel!(backend, g => g.norm(&x, &w, None, 1e-5), want.clone());
    let scale = largest(&want);
    let shape = format!("{rows}x{dim}");
    let row_rms = compare_row(
        "RMSNorm",
        shape.clone(),
        got,
        &want,
        |_| 1e-5 * scale,
        backend,
    );
    out.push(row_rms);
    let mut want = x.clone();
    layer_norm(&mut want, &w, &b, 1e-12);
    let got = forward_kernel!(backend, g => g.norm(&x, &w, Some(&b), 1e-12), want.clone());
    let scale = largest(&want);
    out.push(compare_row(
        "LayerNorm",
        shape,
        got,
        &want,
        |_| 1e-5 * scale,
        backend,
    ));
}

/// The residual add, SwiGLU and GELU (erf and tanh): within 4e-6 (1 + |y|).
async fn elementwise_rows(backend: &Backend, out: &mut Vec<KernelCheck>) {
    use super::kernels::elementwise::{apply, Elementwise};
    let len = 1000;
    let a: Vec<f32> = random(len, 26).iter().map(|v| 4.0 * v).collect();
    let b = random(len, 27);
    for step in [
        Elementwise::Add,
        Elementwise::SwiGlu,
        Elementwise::Gelu,
        Elementwise::GeluTanh,
    ] {
        let mut want = a.clone();
        apply(step, &mut want, &b);
        let got = forward_kernel!(backend, g => g.elementwise(step, &a, &b), want.clone());
        let tol = |i: usize| 4e-6 * (1.0 + want[i].abs() as f64);
        let shape = format!("{len} values, {step:?}");
        out.push(compare_row("element-wise", shape, got, &want, tol, backend));
    }
}

/// Rotary positions at positions past 1000: within 1e-6 of the largest value.
async fn rope_rows(backend: &Backend, out: &mut Vec<KernelCheck>) {
    use super::kernels::rope::{rope, rope_table};
    let (rows, heads, dim, past) = (5, 3, 64, 1000);
    let inv_freq: Vec<f64> = (0..dim / 2)
        .map(|k| 10000f64.powf(-((2 * k) as f64) / dim as f64))
        .collect();
    let table = rope_table(&inv_freq, past, rows);
    let x = random(rows * heads * dim, 28);
    let mut want = x.clone();
    rope(&mut want, heads, dim, &table);
    let got = forward_kernel!(backend, g => g.rope(&x, heads, dim, &table), want.clone());
    let scale = largest(&want);
    let shape = format!("{rows} rows x {heads} heads x {dim}, from position {past}");
    out.push(compare_row(
        "rotary positions",
        shape,
        got,
        &want,
        |_| 1e-6 * scale,
        backend,
    ));
}

/// Attention: causal over a cache with grouped-query heads (100 keys: more than a workgroup has
/// invocations), and bidirectional: within 1e-5 of the largest output.
async fn attention_rows(backend: &Backend, out: &mut Vec<KernelCheck>) {
    use super::kernels::attention::{attention, AttentionShape};
    let shape = |rows, heads, kv_heads, head_dim, past, causal| AttentionShape {
        rows,
        heads,
        kv_heads,
        head_dim,
        past,
        causal,
    };
    let shapes = [
        shape(3, 6, 2, 8, 17, true),
        shape(2, 4, 1, 16, 98, true),
        shape(40, 1, 1, 9, 0, false),
    ];
    for s in shapes {
        let q = random(s.rows * s.heads * s.head_dim, 29);
        let kv = s.keys() * s.kv_heads * s.head_dim;
        let (k, v) = (random(kv, 30), random(kv, 31));
        let want = attention(&q, &k, &v, &s);
        let got = forward_kernel!(backend, g => g.attention(&q, &k, &v, &s), want.clone());
        let scale = largest(&want);
        let shape = format!(
            "{} rows, {} heads ({} kv) x {}, {} keys{}",
            s.rows,
            s.heads,
            s.kv_heads,
            s.head_dim,
            s.keys(),
            if s.causal { ", causal" } else { "" }
        );
        out.push(compare_row(
            "attention",
            shape,
            got,
            &want,
            |_| 1e-5 * scale,
            backend,
        ));
    }
}

/// Sentence pooling (mean and max over 17 rows): within 1e-6 of the largest value.
async fn pool_rows(backend: &Backend, out: &mut Vec<KernelCheck>) {
    use super::kernels::pool::{pool, Pool};
    let (rows, dim) = (17, 65);
    let x = random(rows * dim, 32);
    for mode in [Pool::Mean, Pool::Max] {
        let want = pool(&x, rows, dim, mode);
        let got = forward_kernel!(backend, g => g.pool(&x, rows, dim, mode), want.clone());
        let scale = largest(&want);
        let shape = format!("{rows}x{dim}, {mode:?}");
        out.push(compare_row(
            "pooling",
            shape,
            got,
            &want,
            |_| 1e-6 * scale,
            backend,
        ));
    }
}
