//! The arithmetic of the forward pass on the CPU: linear layers, norms, activations, softmax.
//!
//! A linear layer is `y = x W^T + b` with `W` stored `out x in` row-major, as in the checkpoints.
//! One row (`n = 1`, a decoder making one token) is a matrix-vector product, bound by memory
//! bandwidth: its output rows are split over the cores. Several rows (a prompt, a window of text,
//! a sentence) go through faer's blocked matrix product, the output columns split over the cores.
//! Both sum in f32; the split changes no result (each output is computed by one thread, in one
//! order), so outputs do not depend on the number of cores.

use crate::linalg;

// The arithmetic the GPU kernels must agree on lives beside their CPU twins (backend/kernels).
pub use crate::backend::kernels::elementwise::{erf, gelu, gelu_tanh, silu};
pub use crate::backend::kernels::norm::{layer_norm, rms_norm};

/// A linear layer's weights.
pub struct Linear {
    /// The weight's name in the checkpoint (what activation statistics are keyed by).
    pub name: String,
    pub out_dim: usize,
    pub in_dim: usize,
    /// `out_dim x in_dim`, row-major.
    pub weight: Vec<f32>,
    pub bias: Option<Vec<f32>>,
}

impl Linear {
    /// `x` is `n x in_dim` row-major; the result is `n x out_dim`.
    pub fn forward(&self, x: &[f32], n: usize) -> Vec<f32> {
        debug_assert_eq!(x.len(), n * self.in_dim);
        let mut y = vec![0.0f32; n * self.out_dim];
        if n == 1 {
            matvec(&self.weight, self.in_dim, x, &mut y);
        } else {
            matmul_transposed(x, n, self.in_dim, &self.weight, self.out_dim, &mut y);
        }
        if let Some(b) = &self.bias {
            for row in y.chunks_exact_mut(self.out_dim) {
                row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
            }
        }
        y
    }
}

/// How many threads the heavy loops use: the machine's cores natively, one in the browser (a Web
/// Worker has no threads of its own).
pub fn threads() -> usize {
    crate::parallel::threads()
}

/// Runs `f(first_item, chunk)` on contiguous chunks of `out`, each `item_len` values per item,
/// one chunk per thread. Each item is written by exactly one call. `work` is a rough count of
/// multiply-adds per item: below ~32k in all, one thread is quicker than starting others.
pub fn for_each_chunk<F>(out: &mut [f32], item_len: usize, work: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    let items = out.len() / item_len.max(1);
    let threads = threads().min(items).max(1);
    if threads == 1 || items.saturating_mul(work) < 1 << 15 {
        f(0, out);
        return;
    }
    let per = items.div_ceil(threads);
    std::thread::scope(|s| {
        for (t, chunk) in out.chunks_mut(per * item_len).enumerate() {
            let f = &f;
            s.spawn(move || f(t * per, chunk));
        }
    });
}

/// `f(0), f(1), ..., f(count - 1)`, computed on all threads (contiguous blocks), in order.
pub fn par_map<T, F>(count: usize, f: F) -> Vec<T>
where
    T: Send,
    F: Fn(usize) -> T + Sync,
{
    let threads = threads().min(count).max(1);
    if threads == 1 {
        return (0..count).map(f).collect();
    }
    let per = count.div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let f = &f;
                s.spawn(move || {
                    (t * per..((t + 1) * per).min(count))
                        .map(f)
                        .collect::<Vec<T>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("worker thread"))
            .collect()
    })
}

/// `y = W x` for `W` of `y.len() x cols` row-major.
pub fn matvec(w: &[f32], cols: usize, x: &[f32], y: &mut [f32]) {
    for_each_chunk(y, 1, cols, |first, ys| {
        for (i, yi) in ys.iter_mut().enumerate() {
            let r = first + i;
            *yi = dot(&w[r * cols..(r + 1) * cols], x);
        }
    });
}

/// `sum a_i b_i` in f32 with eight partial sums (so the compiler can keep them in vector lanes).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ac, ar) = a.split_at(a.len() - a.len() % 8);
    let (bc, br) = b.split_at(ac.len());
    for (ca, cb) in ac.chunks_exact(8).zip(bc.chunks_exact(8)) {
        for k in 0..8 {
            acc[k] += ca[k] * cb[k];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ar.iter().zip(br) {
        s += x * y;
    }
    s
}

/// `y = x W^T`: `x` is `n x k`, `W` is `m x k`, `y` is `n x m` (all row-major). The output
/// columns (rows of `W`) are split over the threads.
fn matmul_transposed(x: &[f32], n: usize, k: usize, w: &[f32], m: usize, y: &mut [f32]) {
    let threads = threads().min(m).max(1);
    let per = m.div_ceil(threads);
    let xv = linalg::view_row_major(x, n, k);
    if threads == 1 {
        // No thread spawned: the browser's worker (wasm32) cannot start one.
        let wt = linalg::view_row_major(w, m, k).transpose();
        y.copy_from_slice(&linalg::to_row_major(linalg::product(xv, wt).as_ref()));
        return;
    }
    let parts: Vec<(usize, Vec<f32>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (lo, hi) = (t * per, ((t + 1) * per).min(m));
                let wpart = &w[lo * k..hi * k];
                s.spawn(move || {
                    let wt = linalg::view_row_major(wpart, hi - lo, k).transpose();
                    (lo, linalg::to_row_major(linalg::product(xv, wt).as_ref()))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("matmul thread"))
            .collect()
    });
    for (lo, part) in parts {
        let width = part.len() / n.max(1);
        for (i, row) in part.chunks_exact(width.max(1)).enumerate() {
            y[i * m + lo..i * m + lo + width].copy_from_slice(row);
        }
    }
}

/// Softmax of `x` in place (max subtracted first, so it never overflows).
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    x.iter_mut().for_each(|v| *v /= sum);
}

/// `log(sum(exp(x)))`, computed in f64 (the perplexity's normaliser over a whole vocabulary).
pub fn log_sum_exp(x: &[f32]) -> f64 {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    max + x.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        // Values from tables of the error function (Abramowitz & Stegun 7.1).
        for (x, want) in [
            (0.0, 0.0),
            (0.1, 0.112_462_916_018_284_9),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (2.5, 0.999_593_047_982_555),
            (3.0, 0.999_977_909_503_001_4),
            (-1.5, -0.966_105_146_475_310_7),
        ] {
            assert!(
                (erf(x) - want).abs() < 1e-13,
                "erf({x}) = {} vs {want}",
                erf(x)
            );
        }
    }

    #[test]
    fn linear_paths_agree_on_awkward_shapes() {
        let mut rng = crate::rng::Rng::new(7);
        let (out_dim, in_dim) = (37, 29);
        let weight: Vec<f32> = (0..out_dim * in_dim).map(|_| rng.normal() as f32).collect();
        let lin = Linear {
            name: "test.weight".into(),
            out_dim,
            in_dim,
            weight,
            bias: Some((0..out_dim).map(|i| i as f32 * 0.1).collect()),
        };
        let n = 5;
        let x: Vec<f32> = (0..n * in_dim).map(|_| rng.normal() as f32).collect();
        let many = lin.forward(&x, n);
        for i in 0..n {
            let one = lin.forward(&x[i * in_dim..(i + 1) * in_dim], 1);
            for j in 0..out_dim {
                let mut want = lin.bias.as_ref().unwrap()[j] as f64;
                for k in 0..in_dim {
                    want += lin.weight[j * in_dim + k] as f64 * x[i * in_dim + k] as f64;
                }
                assert!((many[i * out_dim + j] as f64 - want).abs() < 1e-4);
                assert!((one[j] as f64 - want).abs() < 1e-4);
            }
        }
    }
}
