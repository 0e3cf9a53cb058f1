//! Times every kernel on the CPU backend and, when an adapter exists, on the GPU backend (forced:
//! on a machine without a GPU that is an emulated adapter such as lavapipe, and the figures are
//! emulation, not GPU speed). Each figure is the median of `REPEATS` runs after one warm-up, the
//! GPU's including upload and readback (what a codec pays).
//!
//! Output: one JSON object per line, e.g.
//! `{"job":"backend","kernel":"matmul 1024x1024x256","impl":"gpu","seconds":0.01,"gflops":50.0,
//!   "adapter":"llvmpipe (Cpu, Vulkan)"}`.
//!
//! Run: `cargo run --release --example bench_backend [-- --large] [--gpu-only | --cpu-only]`.
//! `--large` uses sizes for a real GPU (each launch well past launch overhead, the matrix product
//! 4096^3); the GPU rows add the matrix product on resident buffers, i.e. the kernel's own rate
//! without the transfers.

use std::time::Instant;

use lowbit::backend::{block_on, Backend, BackendChoice};
use lowbit::kmeans::Codebook;
use lowbit::rng::Rng;

const REPEATS: usize = 3;

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.normal() as f32).collect()
}

fn median_seconds(mut run: impl FnMut()) -> f64 {
    run();
    let mut t: Vec<f64> = (0..REPEATS)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[REPEATS / 2]
}

fn row(kernel: &str, backend: &Backend, seconds: f64, flops: Option<f64>) {
    let mut line = serde_json::json!({
        "job": "backend",
        "kernel": kernel,
        "impl": backend.name(),
        "seconds": seconds,
    });
    if let Some(f) = flops {
        line["gflops"] = serde_json::json!(f / seconds / 1e9);
    }
    if let Some(a) = backend.adapter() {
        line["adapter"] = serde_json::json!(a);
    }
    println!("{line}");
}

/// Problem sizes: the defaults fit the 2-core development box and lavapipe; `large` a real GPU.
struct Sizes {
    matmul: (usize, usize, usize),
    matrix: (usize, usize),
    rank: usize,
    points: usize,
}

impl Sizes {
    fn small() -> Sizes {
        Sizes {
            matmul: (1024, 1024, 256),
            matrix: (768, 3072),
            rank: 128,
            points: 100_000,
        }
    }

    fn large() -> Sizes {
        Sizes {
            matmul: (4096, 4096, 4096),
            matrix: (2048, 8192),
            rank: 256,
            points: 1_000_000,
        }
    }
}

fn bench(backend: &Backend, sizes: &Sizes) {
    let (m, k, n) = sizes.matmul;
    let a = random(m * k, 1);
    let b = random(k * n, 2);
    let s = median_seconds(|| {
        block_on(backend.matmul(&a, m, k, false, &b, n)).expect("matmul");
    });
    row(
        &format!("matmul A*B {m}x{k}x{n}"),
        backend,
        s,
        Some(2.0 * (m * k * n) as f64),
    );
    let s = median_seconds(|| {
        block_on(backend.matmul(&a, k, m, true, &b, n)).expect("matmul");
    });
    row(
        &format!("matmul A^T*B {m}x{k}x{n}"),
        backend,
        s,
        Some(2.0 * (m * k * n) as f64),
    );

    #[cfg(feature = "gpu")]
    if let Backend::Gpu(gpu) = backend {
        let repeats = 20;
        match block_on(gpu.time_resident_matmul(m, k, n, repeats)) {
            Ok(s) => row(
                &format!("matmul A*B {m}x{k}x{n} resident ({repeats} dispatches)"),
                backend,
                s,
                Some(2.0 * (m * k * n) as f64),
            ),
            Err(e) => eprintln!("resident matmul: {e:?}"),
        }
    }

    let (rows, cols) = sizes.matrix;
    let rank = sizes.rank;
    let w = random(rows * cols, 3);
    let s = median_seconds(|| {
        let mut rng = Rng::new(4);
        block_on(backend.rsi(&w, rows, cols, rank, 10, 1, &mut rng)).expect("rsi");
    });
    row(
        &format!("rsi {rows}x{cols} rank {rank} q=1"),
        backend,
        s,
        None,
    );

    let (points, dim, centroids) = (sizes.points, 8, 256);
    let x = random(points * dim, 5);
    let s = median_seconds(|| {
        let mut rng = Rng::new(6);
        block_on(backend.kmeans_fit(&x, dim, centroids, 20, &mut rng)).expect("fit");
    });
    row(
        &format!("kmeans {points}x{dim} k={centroids} 20 iterations"),
        backend,
        s,
        None,
    );
    let cb = Codebook {
        dim,
        centroids: random(centroids * dim, 7),
    };
    let s = median_seconds(|| {
        block_on(backend.kmeans_assign(&x, dim, &cb)).expect("assign");
    });
    row(
        &format!("kmeans assign {points}x{dim} k={centroids}"),
        backend,
        s,
        Some(2.0 * (points * centroids * dim) as f64),
    );

    let mut v = w.clone();
    let s = median_seconds(|| {
        block_on(backend.rotate(&mut v, cols, 8, false)).expect("rotate");
    });
    row(
        &format!("hadamard rotation {rows}x{cols}"),
        backend,
        s,
        None,
    );
    let s = median_seconds(|| {
        block_on(backend.fit_groups(&w, rows, cols, 4, 64, true)).expect("group fit");
    });
    row(
        &format!("group scale search {rows}x{cols} 4b g64"),
        backend,
        s,
        None,
    );
    // Hyper's per-pair search as `auto`'s n=1600 candidate sets it up: L = 6 x RMS, 3 rings.
    let far = w
        .chunks_exact(2)
        .map(|p| (p[0] * p[0] + p[1] * p[1]).sqrt())
        .fold(0f32, f32::max);
    let g = lowbit::codec::hyper::Geometry::new([0.0, 0.0], 6.0, 40, 3, far);
    let s = median_seconds(|| {
        block_on(backend.hyper_codes(&w, &g)).expect("hyper search");
    });
    row(
        &format!("hyper search {rows}x{cols} n=1600 C3"),
        backend,
        s,
        None,
    );
}

fn main() {
    let flag = |f: &str| std::env::args().any(|a| a == f);
    let sizes = if flag("--large") {
        Sizes::large()
    } else {
        Sizes::small()
    };
    if !flag("--gpu-only") {
        bench(&Backend::Cpu, &sizes);
    }
    if flag("--cpu-only") {
        return;
    }
    match block_on(Backend::new(BackendChoice::Gpu)) {
        Ok((gpu, _)) => bench(&gpu, &sizes),
        Err(e) => eprintln!("no GPU backend: {e}"),
    }
}
