//! Sweeps the transform coder's low-rate options on the vectors benchmark's data and scores each
//! by recall@10 of the *held-out* queries, as `benches/vectors_reference.py recall` does: to see
//! which `keep_factor`, step and gain rank neighbours best near a budget, before changing the
//! candidate grid in `codec::vectors`.
//!
//! Run (after `cargo xtask bench --only vectors --keep` has written the files):
//! `cargo run --release --example vectors_sweep -- target/bench/work/vectors 50 66`
//! (the directory with base.npy, queries.npy and truth.npy, then the range of bits per vector).
//! Prints one JSON line per option in range: section bits per vector (the whole file adds the
//! container header, ~0.12 bit per vector here), keep factor, step, gain, recall@10.

use std::fs;

use faer::Mat;
use lowbit::codec::vectors::{transform, water_level_for_rate, Stats};
use lowbit::codec::Shape2;
use lowbit::io::npy;

fn load(path: &std::path::Path) -> (Vec<usize>, Vec<u8>) {
    let file = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let h = npy::read_header(&file).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (h.shape.clone(), file[h.data_start..].to_vec())
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// recall@10 of `queries` (exact) against `base` (decoded), truth given as base row indices.
fn recall(queries: &Mat<f32>, base: &[f32], dim: usize, truth: &[Vec<usize>]) -> f64 {
    let n = base.len() / dim;
    let b = lowbit::linalg::view_row_major(base, n, dim);
    let dots = lowbit::linalg::product(queries.as_ref(), b.transpose());
    let norms: Vec<f64> = base
        .chunks_exact(dim)
        .map(|r| r.iter().map(|&v| v as f64 * v as f64).sum())
        .collect();
    let mut hits = 0;
    for (q, t) in truth.iter().enumerate() {
        let mut scored: Vec<(f64, usize)> = (0..n)
            .map(|i| (norms[i] - 2.0 * dots[(q, i)] as f64, i))
            .collect();
        scored.select_nth_unstable_by(10, |a, b| a.0.total_cmp(&b.0));
        hits += scored[..10].iter().filter(|(_, i)| t.contains(i)).count();
    }
    hits as f64 / (10 * truth.len()) as f64
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::Path::new(args.get(1).map_or("target/bench/work/vectors", |s| s));
    let lo: f64 = args.get(2).map_or(50.0, |s| s.parse().expect("bits"));
    let hi: f64 = args.get(3).map_or(66.0, |s| s.parse().expect("bits"));
    let (shape, data) = load(&dir.join("base.npy"));
    let (rows, dim) = (shape[0], shape[1]);
    let base = f32s(&data);
    let (qshape, qdata) = load(&dir.join("queries.npy"));
    let queries = f32s(&qdata);
    let queries = Mat::<f32>::from_fn(qshape[0], dim, |i, c| queries[i * dim + c]);
    let (_, tdata) = load(&dir.join("truth.npy"));
    let truth: Vec<Vec<usize>> = tdata
        .chunks_exact(8 * 10)
        .map(|r| {
            r.chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as usize)
                .collect()
        })
        .collect();
    let shape = Shape2::new(rows, dim);
    let stats = Stats::of(&base, shape).expect("stats");
    for keep in [1.0f32, 2.5, 3.5, 5.0, 7.0] {
        // Water levels of rates 0.05 .. 0.5 bit/dim, finely: the sizes in range are kept.
        for r in 0..40 {
            let rate = 0.05 * 1.06f64.powi(r);
            let theta = water_level_for_rate(&stats.eigenvalues, rate);
            let p = transform::Params {
                keep_factor: keep,
                ..transform::params_for_level(&stats, theta)
            };
            let Ok((enc, _)) = transform::encode(&base, shape, &stats, &p) else {
                continue;
            };
            let bits = 8.0 * enc.bytes.len() as f64 / rows as f64;
            if bits < lo || bits > hi {
                continue;
            }
            for gain in [1.0f32, 1.1, 1.2, 1.3, 1.4] {
                let p = transform::Params { gain, ..p.clone() };
                let decoded = transform::decode(&enc.bytes, shape, &p).expect("decode");
                let r = recall(&queries, &decoded, dim, &truth);
                println!(
                    "{{\"bits_per_vector\":{bits:.2},\"keep\":{keep},\"step\":{:.4},\"kept\":{},\"gain\":{gain},\"recall_at_10\":{r:.4}}}",
                    p.step,
                    p.kept(&stats.eigenvalues)
                );
            }
        }
    }
}
