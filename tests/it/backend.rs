//! Every kernel, one test body run on each backend: the CPU reference itself, the GPU with the
//! device's limits, and the GPU with a storage-binding limit lowered to a few KiB (so that the
//! larger inputs here span several tiles). Shapes are the awkward ones: 1 x n, n x 1, sizes that
//! are not multiples of the tiles and workgroups, k above the number of points.
//!
//! GPU runs need an adapter (natively lavapipe's Vulkan is enough); without one the GPU cases are
//! skipped, unless `REQUIRE_GPU=1` (set by `.ci/run`), which turns a missing adapter into a failure.
//! The GPU methods are called directly, not through `Backend`'s CPU fallback, so a kernel that
//! fails or declines a problem fails the test.

#![cfg(feature = "gpu")]

use std::sync::OnceLock;

use crate::common;

use lowbit::backend::gpu::{Gpu, GpuOptions};
use lowbit::backend::kernels::{fwht, group_fit, hyper, kmeans_update, matmul};
use lowbit::backend::{block_on, Backend, GpuFailure};
use lowbit::kmeans::Codebook;
use lowbit::rng::Rng;

/// A binding limit of 8 KiB: 2048 floats, so every input above that is tiled.
const LOW_BINDING: u64 = 8 << 10;

struct Gpus {
    full: Gpu,
    low: Gpu,
}

fn gpus() -> Option<&'static Gpus> {
    static GPUS: OnceLock<Option<Gpus>> = OnceLock::new();
    GPUS.get_or_init(|| {
        let open = |max_binding_bytes| block_on(Gpu::new(GpuOptions { max_binding_bytes }));
        match (open(None), open(Some(LOW_BINDING))) {
            (Ok(full), Ok(low)) => Some(Gpus { full, low }),
            (Err(e), _) | (_, Err(e)) => {
                if std::env::var("REQUIRE_GPU").as_deref() == Ok("1") {
                    panic!("REQUIRE_GPU=1 but no GPU adapter: {e}");
                }
                eprintln!("no GPU adapter ({e}): GPU cases skipped");
                None
            }
        }
    })
    .as_ref()
}

/// The sides each test body runs on: the CPU reference, then the GPU (full and low limits).
enum Side {
    Cpu,
    Gpu(&'static Gpu, &'static str),
}

fn sides() -> Vec<Side> {
    let mut out = vec![Side::Cpu];
    if let Some(g) = gpus() {
        out.push(Side::Gpu(&g.full, "gpu"));
        out.push(Side::Gpu(&g.low, LOW_NAME));
    }
    out
}

impl Side {
    fn name(&self) -> &'static str {
        match self {
            Side::Cpu => "cpu",
            Side::Gpu(_, name) => name,
        }
    }
}

const LOW_NAME: &str = "gpu, 8 KiB bindings";

fn ok<T>(r: Result<T, GpuFailure>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: the GPU kernel did not run: {e:?}"),
    }
}

/// The GPU result, or `None` when the kernel declined the problem, which only the lowered-limit
/// side may do (an array that is not tiled exceeds 8 KiB); `ran` counts the tiled runs so each
/// test can check that tiling was exercised.
fn ran_or_declined<T>(
    side: &Side,
    r: Result<T, GpuFailure>,
    what: &str,
    ran: &mut usize,
) -> Option<T> {
    match (side, r) {
        (Side::Gpu(_, LOW_NAME), Err(GpuFailure::Unsupported(why))) => {
            assert!(why.contains("binding"), "{what}: {why}");
            None
        }
        (side, r) => {
            if let Side::Gpu(_, LOW_NAME) = side {
                *ran += 1;
            }
            Some(ok(r, what))
        }
    }
}

/// Asserts that the lowered-limit side ran at least once (when there is a GPU).
fn tiled_runs(ran: usize, what: &str) {
    if gpus().is_some() {
        assert!(
            ran > 0,
            "{what}: no case ran under the lowered binding limit"
        );
    }
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.normal() as f32).collect()
}

/// `op(A) B` in f64, with the sum of |terms| per entry (the scale of its rounding error).
fn reference_matmul(
    a: &[f32],
    a_rows: usize,
    a_cols: usize,
    transpose: bool,
    b: &[f32],
    b_cols: usize,
) -> (Vec<f64>, Vec<f64>) {
    let (m, k) = if transpose {
        (a_cols, a_rows)
    } else {
        (a_rows, a_cols)
    };
    let at = |i: usize, p: usize| {
        if transpose {
            a[p * a_cols + i]
        } else {
            a[i * a_cols + p]
        }
    };
    let mut c = vec![0f64; m * b_cols];
    let mut scale = vec![0f64; m * b_cols];
    for i in 0..m {
        for j in 0..b_cols {
            for p in 0..k {
                let t = at(i, p) as f64 * b[p * b_cols + j] as f64;
                c[i * b_cols + j] += t;
                scale[i * b_cols + j] += t.abs();
            }
        }
    }
    (c, scale)
}

#[test]
fn matmul_matches_reference() {
    // (rows of op(A), inner, columns of B): single rows and columns, non-multiples of 64 and 16,
    // and 300 x 40 (12000 floats: tiled under the lowered limit).
    let shapes = [
        (1, 1, 1),
        (1, 70, 5),
        (70, 1, 3),
        (65, 17, 129),
        (3, 64, 31),
        (200, 33, 1),
        (250, 40, 7),
        (0, 5, 3),
    ];
    let mut ran = 0;
    for side in sides() {
        for (si, &(m, k, n)) in shapes.iter().enumerate() {
            for transpose in [false, true] {
                let (a_rows, a_cols) = if transpose { (k, m) } else { (m, k) };
                let a = random(a_rows * a_cols, 10 + si as u64);
                let b = random(k * n, 20 + si as u64);
                let got = match &side {
                    Side::Cpu => matmul::matmul(&a, a_rows, a_cols, transpose, &b, n).unwrap(),
                    Side::Gpu(g, _) => {
                        let r = block_on(g.matmul(&a, a_rows, a_cols, transpose, &b, n));
                        match ran_or_declined(&side, r, "matmul", &mut ran) {
                            Some(v) => v,
                            None => continue,
                        }
                    }
                };
                let (want, scale) = reference_matmul(&a, a_rows, a_cols, transpose, &b, n);
                assert_eq!(got.len(), want.len());
                for ((g, w), s) in got.iter().zip(&want).zip(&scale) {
                    assert!(
                        (*g as f64 - w).abs() <= 1e-5 * s + 1e-30,
                        "{}: {m}x{k}x{n} transpose={transpose}: {g} vs {w}",
                        side.name()
                    );
                }
            }
        }
    }
    tiled_runs(ran, "matmul");
}

#[test]
fn gram_matches_reference() {
    let mut ran = 0;
    for side in sides() {
        for &(rows, cols) in &[(1, 5), (3000, 1), (129, 65), (2, 2), (300, 40)] {
            let y = random(rows * cols, 7);
            let got = match &side {
                Side::Cpu => matmul::gram(&y, rows, cols).unwrap(),
                Side::Gpu(g, _) => {
                    match ran_or_declined(&side, block_on(g.gram(&y, rows, cols)), "gram", &mut ran)
                    {
                        Some(v) => v,
                        None => continue,
                    }
                }
            };
            let (want, scale) = reference_matmul(&y, rows, cols, true, &y, cols);
            for ((g, w), s) in got.iter().zip(&want).zip(&scale) {
                assert!((*g as f64 - w).abs() <= 1e-5 * s, "{}", side.name());
            }
        }
    }
    tiled_runs(ran, "gram");
}

/// A `rows x cols` matrix with singular values `0.8^i` (random orthonormal factors by QR).
fn with_spectrum(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let r = rows.min(cols);
    let u =
        lowbit::linalg::orthonormalize(lowbit::linalg::gaussian_matrix(rows, r, &mut rng).as_ref());
    let v =
        lowbit::linalg::orthonormalize(lowbit::linalg::gaussian_matrix(cols, r, &mut rng).as_ref());
    let mut w = vec![0f32; rows * cols];
    for p in 0..r {
        let s = 0.8f32.powi(p as i32);
        for i in 0..rows {
            for j in 0..cols {
                w[i * cols + j] += u[(i, p)] * s * v[(j, p)];
            }
        }
    }
    w
}

fn frobenius_error(w: &[f32], svd: &lowbit::linalg::Svd) -> f64 {
    let r = svd.reconstruct();
    let cols = r.ncols();
    let mut e = 0.0;
    for (idx, &x) in w.iter().enumerate() {
        let d = x as f64 - r[(idx / cols, idx % cols)] as f64;
        e += d * d;
    }
    e.sqrt()
}

#[test]
fn rsi_matches_cpu() {
    // Tall, wide, a single row and column, and 300 x 40 (tiled under the lowered limit).
    let mut ran = 0;
    for &(rows, cols, k) in &[
        (1, 50, 3),
        (50, 1, 3),
        (100, 37, 8),
        (37, 100, 8),
        (300, 40, 10),
    ] {
        let w = with_spectrum(rows, cols, 3);
        let reference = {
            let mut rng = Rng::new(9);
            matmul::rsi(&w, rows, cols, k, 5, 2, &mut rng).unwrap()
        };
        let reference_error = frobenius_error(&w, &reference);
        for side in sides() {
            let mut rng = Rng::new(9);
            let svd = match &side {
                Side::Cpu => matmul::rsi(&w, rows, cols, k, 5, 2, &mut rng).unwrap(),
                Side::Gpu(g, _) => {
                    let r = block_on(g.rsi(&w, rows, cols, k, 5, 2, &mut rng));
                    match ran_or_declined(&side, r, "rsi", &mut ran) {
                        Some(v) => v,
                        None => continue,
                    }
                }
            };
            let kk = k.min(rows).min(cols);
            assert_eq!((svd.u.nrows(), svd.u.ncols()), (rows, kk));
            assert_eq!((svd.vt.nrows(), svd.vt.ncols()), (kk, cols));
            for (a, b) in svd.sigma.iter().zip(&reference.sigma) {
                assert!(
                    (a - b).abs() <= 1e-4 * reference.sigma[0] + 1e-3 * b,
                    "{}: sigma {a} vs {b}",
                    side.name()
                );
            }
            let error = frobenius_error(&w, &svd);
            assert!(
                error <= 1.01 * reference_error + 1e-5,
                "{} {rows}x{cols}: error {error} vs CPU {reference_error}",
                side.name()
            );
        }
    }
    tiled_runs(ran, "rsi");
}

fn codebook(k: usize, dim: usize, seed: u64) -> Codebook {
    Codebook {
        dim,
        centroids: random(k * dim, seed),
    }
}

/// The CPU distance of every point to every centroid, for judging ties.
fn distances_to_all(points: &[f32], dim: usize, cb: &Codebook) -> Vec<Vec<f64>> {
    points
        .chunks_exact(dim)
        .map(|p| {
            (0..cb.k())
                .map(|c| {
                    p.iter()
                        .zip(cb.centroid(c))
                        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
                        .sum()
                })
                .collect()
        })
        .collect()
}

#[test]
fn kmeans_assign_matches_cpu() {
    // (points, dim, k): one point, fewer points than centroids, a point count that is not a
    // multiple of the workgroup, dimension 70 (above the kernel's 64 registers), k = 300 (several
    // staged chunks), and 3000 x 3 (tiled under the lowered limit).
    let mut ran = 0;
    for &(n, dim, k) in &[
        (1, 1, 1),
        (3, 4, 10),
        (1000, 8, 5),
        (257, 70, 3),
        (600, 3, 300),
        (3000, 3, 16),
    ] {
        let points = random(n * dim, n as u64);
        let cb = codebook(k, dim, 77);
        let all = distances_to_all(&points, dim, &cb);
        for side in sides() {
            let (codes, distances) = match &side {
                Side::Cpu => lowbit::kmeans::assign(&points, dim, &cb).unwrap(),
                Side::Gpu(g, _) => {
                    let r = block_on(g.kmeans_assign(&points, dim, &cb));
                    match ran_or_declined(&side, r, "assign", &mut ran) {
                        Some(v) => v,
                        None => continue,
                    }
                }
            };
            assert_eq!(codes.len(), n);
            for (i, (&c, &d)) in codes.iter().zip(&distances).enumerate() {
                let best = all[i].iter().copied().fold(f64::INFINITY, f64::min);
                let scale = 1e-4 * (1.0 + best);
                assert!(
                    all[i][c as usize] <= best + scale,
                    "{}: point {i} coded {c} at {} but nearest is {best}",
                    side.name(),
                    all[i][c as usize]
                );
                assert!((d as f64 - all[i][c as usize]).abs() <= scale + 1e-4 * dim as f64);
            }
        }
    }
    tiled_runs(ran, "assign");
}

#[test]
fn cluster_means_match_cpu() {
    let mut ran = 0;
    for &(n, dim, k) in &[(1, 1, 1), (5, 2, 9), (2500, 3, 7), (1500, 40, 300)] {
        let points = random(n * dim, 5);
        let cb = codebook(k, dim, 6);
        let mut rng = Rng::new(8);
        let codes: Vec<u32> = (0..n).map(|_| rng.below(k as u64) as u32).collect();
        let (want, want_counts) = kmeans_update::cluster_means(&points, dim, &codes, &cb);
        for side in sides() {
            let (got, counts) = match &side {
                Side::Cpu => kmeans_update::cluster_means(&points, dim, &codes, &cb),
                Side::Gpu(g, _) => {
                    let r = block_on(g.cluster_means(&points, dim, &codes, &cb));
                    match ran_or_declined(&side, r, "cluster means", &mut ran) {
                        Some(v) => v,
                        None => continue,
                    }
                }
            };
            assert_eq!(counts, want_counts, "{}", side.name());
            for (a, b) in got.centroids.iter().zip(&want.centroids) {
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                    "{}: {a} vs {b}",
                    side.name()
                );
            }
        }
    }
    tiled_runs(ran, "cluster means");
}

#[test]
fn kmeans_fit_matches_cpu() {
    // k above the number of points gives one centroid per point; 5000 x 2 with k = 20 runs the
    // whole loop, tiled under the lowered limit.
    let mut ran = 0;
    for &(n, dim, k) in &[(5, 2, 10), (5000, 2, 20), (700, 9, 64)] {
        let points = random(n * dim, 31);
        let reference = {
            let mut rng = Rng::new(4);
            lowbit::kmeans::fit_detailed(&points, dim, k, 25, &mut rng).unwrap()
        };
        for side in sides() {
            let mut rng = Rng::new(4);
            let fit = match &side {
                Side::Cpu => lowbit::kmeans::fit_detailed(&points, dim, k, 25, &mut rng).unwrap(),
                Side::Gpu(g, _) => {
                    let r = block_on(g.kmeans_fit(&points, dim, k, 25, &mut rng));
                    match ran_or_declined(&side, r, "fit", &mut ran) {
                        Some(v) => v,
                        None => continue,
                    }
                }
            };
            assert_eq!(fit.codebook.k(), k.min(n), "{}", side.name());
            let last = *fit.objective.last().unwrap();
            let want = *reference.objective.last().unwrap();
            assert!(
                (last - want).abs() <= 0.01 * want + 1e-9,
                "{}: objective {last} vs CPU {want}",
                side.name()
            );
            // Lloyd never increases the objective.
            for pair in fit.objective.windows(2) {
                assert!(pair[1] <= pair[0] * (1.0 + 1e-5) + 1e-9, "{}", side.name());
            }
        }
    }
    tiled_runs(ran, "fit");
}

#[test]
fn rotation_matches_cpu_bit_for_bit() {
    // Odd rows (block 1), one row of 1024, blocks of 32 and 16, two blocks of 1024 per row, and
    // 100 x 48 (tiled under the lowered limit).
    for &(rows, cols) in &[(3, 7), (1, 1024), (5, 96), (100, 48), (2, 2048), (1, 1)] {
        let x = random(rows * cols, cols as u64);
        for inverse in [false, true] {
            let mut want = x.clone();
            fwht::rotate(&mut want, cols, 5, inverse);
            for side in sides() {
                let mut got = x.clone();
                match &side {
                    Side::Cpu => fwht::rotate(&mut got, cols, 5, inverse),
                    Side::Gpu(g, _) => {
                        if let Side::Gpu(_, LOW_NAME) = side {
                            if cols * 4 > LOW_BINDING as usize {
                                continue; // one row exceeds the lowered binding: not tileable
                            }
                        }
                        ok(block_on(g.rotate(&mut got, cols, 5, inverse)), "rotate")
                    }
                }
                assert_eq!(
                    got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{} {rows}x{cols} inverse={inverse}",
                    side.name()
                );
            }
        }
    }
}

use lowbit::backend::kernels::group_fit::group_errors;

#[test]
fn group_fit_matches_cpu() {
    for &(rows, cols) in &[(1, 1), (1, 100), (50, 1), (33, 257)] {
        let x = random(rows * cols, 12);
        for &group in &[1usize, 32, 64, 128] {
            for &bits in &[1u8, 2, 4, 8] {
                let want = group_fit::fit_groups(&x, rows, cols, bits, group, true);
                let want_errors = group_errors(&x, rows, cols, group, &want);
                for side in sides() {
                    let got = match &side {
                        Side::Cpu => group_fit::fit_groups(&x, rows, cols, bits, group, true),
                        Side::Gpu(g, _) => ok(
                            block_on(g.fit_groups(&x, rows, cols, bits, group, true)),
                            "group fit",
                        ),
                    };
                    assert_eq!(got.fits.len(), want.fits.len());
                    assert_eq!(got.codes.len(), x.len());
                    for &(s, m) in &got.fits {
                        // Stored as f16: the values must be exactly representable.
                        assert_eq!(half::f16::from_f32(s).to_f32(), s);
                        assert_eq!(half::f16::from_f32(m).to_f32(), m);
                    }
                    assert!(got.codes.iter().all(|&q| q < 1 << bits));
                    let errors = group_errors(&x, rows, cols, group, &got);
                    for (g, (e, w)) in errors.iter().zip(&want_errors).enumerate() {
                        assert!(
                            *e <= w * (1.0 + 1e-3) + 1e-9,
                            "{} {rows}x{cols} g{group} {bits}b: group {g} error {e} vs CPU {w}",
                            side.name()
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn gpu_failure_falls_back_to_the_cpu() {
    if gpus().is_none() {
        return;
    }
    let gpu = block_on(Gpu::new(GpuOptions::default())).expect("an adapter exists");
    gpu.simulate_device_loss();
    let backend = Backend::Gpu(Box::new(gpu));
    let a = random(6, 1);
    let product = block_on(backend.matmul(&a, 2, 3, false, &a, 2)).expect("the CPU answers");
    assert_eq!(product, matmul::matmul(&a, 2, 3, false, &a, 2).unwrap());
    let reason = backend.fallback().expect("the failure is recorded");
    assert!(!reason.is_empty());
}

#[test]
fn auto_never_picks_an_emulated_adapter() {
    let (backend, reason) = block_on(Backend::new(lowbit::BackendChoice::Auto)).unwrap();
    if let Some(g) = gpus() {
        if g.full.device_type() == wgpu_device_type_cpu() {
            assert_eq!(backend.name(), "cpu", "{reason}");
        }
    }
}

fn wgpu_device_type_cpu() -> lowbit::backend::gpu::DeviceType {
    lowbit::backend::gpu::DeviceType::Cpu
}

/// The whole pipeline on the GPU backend: a small mixed checkpoint compressed with every lossy
/// method (auto, and each codec forced, so that the SVD, k-means, rotation-free scalar paths all
/// run through the kernels) gives a file that decodes with the ordinary decoder, whose size is
/// within 1% and whose error is within 2% of the CPU backend's.
#[test]
fn whole_file_on_the_gpu_matches_the_cpu() {
    let Some(_) = gpus() else { return };
    let input = common::mixed_checkpoint();
    let gpu = Backend::Gpu(Box::new(
        block_on(Gpu::new(GpuOptions::default())).expect("an adapter exists"),
    ));
    for method in [
        None,
        Some(lowbit::codec::Method::Vq),
        Some(lowbit::codec::Method::Lowrank),
    ] {
        let mut opts = lowbit::CompressOptions::new(lowbit::Target::BitsPerWeight(3.0));
        opts.method = method;
        opts.spectra = false;
        let run = |backend: &Backend| {
            let mut out = Vec::new();
            let report = block_on(lowbit::api::compress_on(
                backend,
                "test",
                &input,
                "mixed.safetensors",
                &opts,
                &mut lowbit::NoProgress,
                &mut out,
            ))
            .expect("compresses");
            let mut restored = Vec::new();
            lowbit::decompress(&out, "demo.lowbit", &mut lowbit::NoProgress, &mut restored)
                .expect("decodes");
            (out.len() as f64, report.output.rel_mse_2d, report)
        };
        let (cpu_size, cpu_error, _) = run(&Backend::Cpu);
        let (gpu_size, gpu_error, report) = run(&gpu);
        assert_eq!(report.backend.used, "gpu");
        assert!(
            report.backend.fallback.is_none(),
            "{:?}",
            report.backend.fallback
        );
        assert!(
            (gpu_size - cpu_size).abs() <= 0.01 * cpu_size,
            "{method:?}: {gpu_size} bytes on the GPU vs {cpu_size} on the CPU"
        );
        assert!(
            (gpu_error - cpu_error).abs() <= 0.02 * cpu_error,
            "{method:?}: rel. MSE {gpu_error} on the GPU vs {cpu_error} on the CPU"
        );
    }
}

/// PQ fits each sub-space's codebook with the backend's k-means: on the GPU the section decodes to
/// what the encoder measured, and its size and error are within 1% / 2% of the CPU's (centroid
/// sums run in another order). Awkward shapes: sub-spaces of unequal width, k above the rows.
#[test]
fn pq_on_the_gpu_matches_the_cpu() {
    let Some(_) = gpus() else { return };
    let gpu = Backend::Gpu(Box::new(
        block_on(Gpu::new(GpuOptions::default())).expect("an adapter exists"),
    ));
    for (rows, dim, m, k) in [(1001usize, 70usize, 3u32, 64u32), (37, 10, 4, 50)] {
        let shape = lowbit::codec::Shape2::new(rows, dim);
        let values = random(shape.len(), 9);
        let codec = lowbit::codec::CodecParams::Pq(lowbit::codec::vectors::pq::Params {
            m,
            k,
            iters: 10,
            seed: 4,
            codebook_bits: 8,
        });
        let mse = |r: &[f32]| -> f64 {
            values
                .iter()
                .zip(r)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>()
                / values.len() as f64
        };
        let on_cpu = block_on(codec.encode_on(&Backend::Cpu, &values, shape)).unwrap();
        let on_gpu = block_on(codec.encode_on(&gpu, &values, shape)).unwrap();
        assert_eq!(
            codec.decode(&on_gpu.bytes, shape).unwrap(),
            on_gpu.reconstruction,
            "{rows}x{dim}"
        );
        let (cpu_size, gpu_size) = (on_cpu.bytes.len() as f64, on_gpu.bytes.len() as f64);
        assert!(
            (gpu_size - cpu_size).abs() <= 0.01 * cpu_size,
            "{rows}x{dim}: {gpu_size} bytes on the GPU vs {cpu_size}"
        );
        let (cpu_mse, gpu_mse) = (mse(&on_cpu.reconstruction), mse(&on_gpu.reconstruction));
        assert!(
            (gpu_mse - cpu_mse).abs() <= 0.02 * cpu_mse,
            "{rows}x{dim}: MSE {gpu_mse} on the GPU vs {cpu_mse}"
        );
    }
    assert!(gpu.fallback().is_none());
}

/// The turbo codec rotates on the backend; the GPU rotation gives the CPU's bits, so the section
/// is byte-identical.
#[test]
fn turbo_sections_are_identical_on_both_backends() {
    let Some(_) = gpus() else { return };
    let gpu = Backend::Gpu(Box::new(
        block_on(Gpu::new(GpuOptions::default())).expect("an adapter exists"),
    ));
    let shape = lowbit::codec::Shape2::new(48, 256);
    let values = random(shape.len(), 3);
    let candidates = lowbit::codec::turbo::candidates(shape, 5);
    assert!(!candidates.is_empty());
    for p in candidates {
        let codec = lowbit::codec::CodecParams::Turbo(p);
        let on_cpu = block_on(codec.encode_on(&Backend::Cpu, &values, shape)).unwrap();
        let on_gpu = block_on(codec.encode_on(&gpu, &values, shape)).unwrap();
        assert_eq!(on_cpu.bytes, on_gpu.bytes, "{}", codec.label());
    }
    assert!(gpu.fallback().is_none());
}

/// The kernel check the browser test runs on WebGPU (`backend::check`), run here on the native
/// adapter with the full and the lowered binding limit: every row passes, none fell back.
#[test]
fn the_browser_kernel_check_passes_on_the_native_adapter() {
    let cpu_rows = block_on(lowbit::backend::check::check_kernels(&Backend::Cpu));
    assert!(cpu_rows.len() >= 10 && cpu_rows.iter().all(|r| r.passed));
    if gpus().is_none() {
        return;
    }
    for options in [None, Some(LOW_BINDING)] {
        let gpu = block_on(Gpu::new(GpuOptions {
            max_binding_bytes: options,
        }))
        .expect("adapter");
        let backend = Backend::Gpu(Box::new(gpu));
        let rows = block_on(lowbit::backend::check::check_kernels(&backend));
        for r in &rows {
            assert!(
                r.passed && r.ran_on == "gpu",
                "{} {} ({options:?}): {} of tolerance on {} {}",
                r.kernel,
                r.shape,
                r.worst_ratio,
                r.ran_on,
                r.note
            );
        }
    }
}

/// Points that stress the hyper search of `g`: inside the square, near and on its edges and
/// corners, far outside, at the centre, on lattice points, on midpoints between neighbouring
/// lattice points (exact ties), and on the ring boundaries.
fn hyper_points(g: &hyper::Geometry, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    let (c, side, t) = (g.centre, g.side, g.t);
    let half = 0.5 * side;
    let mut out: Vec<[f32; 2]> = Vec::new();
    for _ in 0..700 {
        let u = [r.uniform() as f32 - 0.5, r.uniform() as f32 - 0.5];
        out.push([c[0] + u[0] * side, c[1] + u[1] * side]);
        let e = (r.uniform() as f32 - 0.5) * side / t as f32 * 0.2;
        let along = (r.uniform() as f32 - 0.5) * side;
        let edge = if r.uniform() < 0.5 { half } else { -half };
        out.push(match r.below(3) {
            0 => [c[0] + edge + e, c[1] + along],
            1 => [c[0] + along, c[1] + edge + e],
            _ => [c[0] + edge + e, c[1] + edge - e],
        });
        let far = [
            r.normal() as f32 * side * 2.0,
            r.normal() as f32 * side * 2.0,
        ];
        out.push([c[0] + far[0], c[1] + far[1]]);
    }
    out.push(c);
    out.push([c[0] + half, c[1] + half]);
    out.push([c[0] - half, c[1] - half]);
    for k in 0..(t * t).min(400) {
        let w = g.codeword(k + 1);
        out.push(w);
        let v = g.codeword((k + 1) % (t * t) + 1);
        out.push([0.5 * (w[0] + v[0]), 0.5 * (w[1] + v[1])]);
        out.push([0.5 * (w[0] + c[0]), 0.5 * (w[1] + c[1])]);
    }
    for j in 1..=g.rings as usize {
        for angle in [0.0f32, 0.7, 2.0, 4.0] {
            let d = g.radii[j];
            out.push([c[0] + d * angle.cos(), c[1] + d * angle.sin()]);
        }
    }
    out.into_iter().flatten().collect()
}

/// Hyper's per-pair search on the GPU gives the CPU's codes exactly, for 1 pair, odd pair counts,
/// counts that are not a multiple of the workgroup, and (under the lowered limit) several tiles;
/// ties, edges and ring boundaries included. The kernel must also decide most pairs itself
/// (random pairs in a realistic geometry), so the CPU's share is bounded.
#[test]
fn hyper_codes_match_cpu_exactly() {
    use hyper::{nearest_codes, Geometry};
    let geometries = [
        Geometry::new([0.0, 0.0], 0.1, 40, 1, 0.3),
        Geometry::new([0.013, -0.02], 0.1, 15, 3, 0.5),
        Geometry::new([0.1, 0.1], 0.5, 1, 0, 0.5),
        Geometry::new([0.0, 0.0], 1.0, 2, 8, 10.0),
        Geometry::new([-1.5, 2.25], 3.0, 7, 0, 3.0),
        Geometry::new([0.0, 0.0], 6.0, 1024, 2, 40.0),
    ];
    let mut ran = 0;
    let mut tie_cases_on_cpu = 0;
    for (gi, g) in geometries.iter().enumerate() {
        let all = hyper_points(g, gi as u64);
        let pairs = all.len() / 2;
        for count in [1, 3, 255, 257, pairs] {
            let x = &all[..2 * count];
            let want = nearest_codes(x, g);
            for side in sides() {
                let got = match &side {
                    Side::Cpu => hyper::hyper_codes(x, g),
                    Side::Gpu(gpu, name) => {
                        let got = ok(block_on(gpu.hyper_codes(x, g)), "hyper");
                        if *name == LOW_NAME && count * 8 > LOW_BINDING as usize {
                            ran += 1;
                        }
                        if count == pairs {
                            tie_cases_on_cpu += got.decided_on_cpu;
                        }
                        got.codes
                    }
                };
                assert_eq!(
                    got,
                    want,
                    "{} geometry {gi} ({g:?}), {count} pairs",
                    side.name()
                );
            }
        }
    }
    tiled_runs(ran, "hyper");
    let Some(gpus) = gpus() else { return };
    assert!(tie_cases_on_cpu > 0, "the ties were not handed to the CPU");
    // Random pairs, L = 6 x RMS, n = 1600, 3 rings (the auto candidate): the kernel decides
    // almost all of them.
    let x = random(200_000, 31);
    let far = x
        .chunks_exact(2)
        .map(|p| (p[0] * p[0] + p[1] * p[1]).sqrt())
        .fold(0f32, f32::max);
    let g = Geometry::new([0.0, 0.0], 6.0, 40, 3, far);
    let got = ok(block_on(gpus.full.hyper_codes(&x, &g)), "hyper");
    assert_eq!(got.codes, nearest_codes(&x, &g));
    let share = got.decided_on_cpu as f64 / (x.len() / 2) as f64;
    eprintln!(
        "hyper: {:.4}% of random pairs decided on the CPU",
        100.0 * share
    );
    assert!(share < 0.01, "{share}");
}

/// Hyper sections are byte-identical on both backends (every candidate, plus one ring and an
/// absolute side), on heavy-tailed weights so that the rings are used.
#[test]
fn hyper_sections_are_identical_on_both_backends() {
    let Some(_) = gpus() else { return };
    let gpu = Backend::Gpu(Box::new(
        block_on(Gpu::new(GpuOptions::default())).expect("an adapter exists"),
    ));
    let shape = lowbit::codec::Shape2::new(37, 129); // an odd element count
    let mut rng = Rng::new(8);
    let values: Vec<f32> = (0..shape.len())
        .map(|_| {
            let v = 0.02 * rng.normal() as f32;
            if rng.uniform() < 0.02 {
                v * 15.0
            } else {
                v
            }
        })
        .collect();
    let mut options = lowbit::codec::hyper::candidates(shape);
    options.push(lowbit::codec::hyper::Params {
        n: 1600,
        side: 0.1,
        relative: false,
        rings: 1,
    });
    for p in options {
        let codec = lowbit::codec::CodecParams::Hyper(p);
        let on_cpu = block_on(codec.encode_on(&Backend::Cpu, &values, shape)).unwrap();
        let on_gpu = block_on(codec.encode_on(&gpu, &values, shape)).unwrap();
        assert_eq!(on_cpu.bytes, on_gpu.bytes, "{}", codec.label());
    }
    assert!(gpu.fallback().is_none(), "{:?}", gpu.fallback());
}
