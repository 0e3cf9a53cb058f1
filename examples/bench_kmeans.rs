//! Times lowbit's k-means on the benchmark job of BENCHMARKS.md, Targets 3 (100k x 8 f32, k = 256, 20 Lloyd
//! iterations, all points) and writes the points as raw little-endian f32 to the path given as the
//! first argument, so that `benches/kmeans_reference.py` clusters exactly the same data with faiss.
//!
//! Output: one JSON object per line, e.g.
//! `{"job":"kmeans","impl":"lowbit","seconds":0.1,"mse":0.0123}` where `seconds` is the median of 5
//! fits and `mse` the mean squared error per coordinate of the points to their nearest final centroid.
//!
//! Run: `cargo run --release --example bench_kmeans -- /tmp/kmeans_points.f32`

use std::time::Instant;

use lowbit::kmeans;
use lowbit::rng::Rng;

const N: usize = 100_000;
const DIM: usize = 8;
const K: usize = 256;
const ITERS: usize = 20;
const COMPONENTS: usize = 64;
const REPEATS: usize = 5;

/// A mixture of `COMPONENTS` Gaussians in `DIM` dimensions: centers N(0, 1), per-component standard
/// deviations between 0.1 and 0.4, equal weights.
fn points(seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let centers: Vec<f64> = (0..COMPONENTS * DIM).map(|_| rng.normal()).collect();
    let spreads: Vec<f64> = (0..COMPONENTS).map(|_| 0.1 + 0.3 * rng.uniform()).collect();
    let mut out = Vec::with_capacity(N * DIM);
    for _ in 0..N {
        let c = rng.below(COMPONENTS as u64) as usize;
        for d in 0..DIM {
            out.push((centers[c * DIM + d] + spreads[c] * rng.normal()) as f32);
        }
    }
    out
}

/// CPU seconds used so far by this process, all threads (Linux: /proc/self/stat, 100 ticks per
/// second); `None` elsewhere. On a shared machine this is steadier than the wall time.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some((user + system) / 100.0)
}

fn main() -> lowbit::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/tmp/kmeans_points.f32".to_string());
    let data = points(42);
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&path, bytes).map_err(|e| lowbit::Error::io(&path, e))?;

    let mut seconds = Vec::new();
    let mut mse = 0.0;
    let mut iterations = 0;
    let mut cpu = 0.0;
    for _ in 0..REPEATS {
        let cpu_start = cpu_seconds();
        let start = Instant::now();
        let fit = kmeans::fit_detailed(&data, DIM, K, ITERS, &mut Rng::new(1234))?;
        seconds.push(start.elapsed().as_secs_f64());
        if let (Some(a), Some(b)) = (cpu_start, cpu_seconds()) {
            cpu += (b - a) / REPEATS as f64;
        }
        iterations = fit.iterations;
        let (_, distances) = kmeans::assign(&data, DIM, &fit.codebook)?;
        mse = distances.iter().map(|&d| d as f64).sum::<f64>() / (N * DIM) as f64;
    }
    seconds.sort_by(f64::total_cmp);
    let threads = std::thread::available_parallelism()
        .map(|t| t.get())
        .unwrap_or(1);
    println!(
        "{{\"job\":\"kmeans\",\"impl\":\"lowbit\",\"n\":{N},\"dim\":{DIM},\"k\":{K},\"iters\":{ITERS},\"iterations_run\":{iterations},\"threads\":{threads},\"seconds\":{:.4},\"best_seconds\":{:.4},\"cpu_seconds\":{cpu:.3},\"mse\":{mse:.6}}}",
        seconds[REPEATS / 2],
        seconds[0]
    );
    Ok(())
}
