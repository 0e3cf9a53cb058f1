//! Rust side of the SVD speed benchmark (BENCHMARKS.md, Targets 3): builds the 768 x 3072 test matrix
//! (Gaussian entries from `Rng::new(42)`, row `i` scaled by 0.97^i), writes it as raw little-endian
//! f32 (row-major) to the path given as the first argument so that `benches/svd_reference.py` times
//! the same matrix, then times lowbit's rank-128 RSI (10 oversamples) at q = 0, 1, 2 and 4, median
//! of 5 runs, single thread (q = 0 and 1 show which q first reaches a given error). Prints one JSON object per line:
//! `{"job":"svd","impl":"lowbit","power_iters":2,"seconds":...,"rel_error":...}`.
//!
//! Run: `cargo run --release --example bench_svd -- /tmp/svd_768x3072.f32`

use std::time::Instant;

use lowbit::linalg::{frobenius_distance, frobenius_norm, rsi, view_row_major};
use lowbit::rng::Rng;

const ROWS: usize = 768;
const COLS: usize = 3072;
const RANK: usize = 128;
const OVERSAMPLE: usize = 10;

fn main() -> std::io::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/tmp/svd_768x3072.f32".to_string());
    let mut rng = Rng::new(42);
    let mut values = Vec::with_capacity(ROWS * COLS);
    for i in 0..ROWS {
        let scale = 0.97f64.powi(i as i32);
        for _ in 0..COLS {
            values.push((rng.normal() * scale) as f32);
        }
    }
    let bytes: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(&path, bytes)?;

    let w = view_row_major(&values, ROWS, COLS);
    let norm = frobenius_norm(w);
    for power_iters in [0usize, 1, 2, 4] {
        let mut times = Vec::new();
        let mut rel_error = f64::NAN;
        for run in 0..5 {
            let mut rng = Rng::new(7 + run);
            let start = Instant::now();
            let svd = rsi(w, RANK, OVERSAMPLE, power_iters, &mut rng).expect("rsi");
            times.push(start.elapsed().as_secs_f64());
            rel_error = frobenius_distance(w, svd.reconstruct().as_ref()) / norm;
        }
        times.sort_by(|a, b| a.total_cmp(b));
        println!(
            "{{\"job\":\"svd\",\"impl\":\"lowbit\",\"power_iters\":{power_iters},\"seconds\":{:.4},\"rel_error\":{:.4}}}",
            times[2], rel_error
        );
    }
    Ok(())
}
