//! Shared-basis analysis on MiniLM (ALGORITHMS.md 7; `src/shared_basis.rs`): can the query, key
//! and value matrices of a layer share one input-side basis within a relative error `eps`, and how
//! many factor parameters would that save against one basis per matrix?
//!
//! For each layer and `eps`: the smallest rank at which each matrix alone meets `eps` (exact SVD),
//! the smallest rank at which the incremental estimator lets the three form one group, the exact
//! error of that group (must be <= eps), and the factor parameter counts (uncoded f32 counts, not
//! a file size): separate `sum r_j (m + n)`, shared `r (m + 3 n)`.
//!
//! `cargo run --release --example shared_basis_minilm [PATH]`

use lowbit::checkpoint::Checkpoint;
use lowbit::dtype::to_f32;
use lowbit::shared_basis::{exact_error, group};

const EPS: [f64; 3] = [0.1, 0.2, 0.3];

fn main() {
    let path = std::env::args().nth(1).unwrap_or(format!(
        "{}/.cache/lowbit-data/minilm/model.safetensors",
        std::env::var("HOME").unwrap_or_default()
    ));
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("skip: {path}: {e}");
            return;
        }
    };
    let ckpt = Checkpoint::parse(&bytes).expect("a safetensors checkpoint");
    println!(
        "eps  layer  r_sep(q,k,v)   r_shared  est_err  exact_err  params_sep  params_shared  saved"
    );
    let mut totals = vec![(0usize, 0usize); EPS.len()];
    for layer in 0.. {
        let find = |what: &str| {
            let name = format!("encoder.layer.{layer}.attention.self.{what}.weight");
            ckpt.tensors.iter().find(|t| t.name == name)
        };
        let (Some(q), Some(k), Some(v)) = (find("query"), find("key"), find("value")) else {
            break;
        };
        // W is [out, in]; the input-side basis is the left basis of W^T (in x out), which lets
        // the three projections share one product V^T x.
        let blocks: Vec<(Vec<f32>, usize)> = [q, k, v]
            .iter()
            .map(|t| {
                let w = to_f32(
                    t.dtype,
                    &bytes[t.range.start as usize..t.range.end as usize],
                );
                let (out, inp) = (t.shape[0], t.shape[1]);
                let mut wt = vec![0.0f32; w.len()];
                for i in 0..out {
                    for j in 0..inp {
                        wt[j * out + i] = w[i * inp + j];
                    }
                }
                (wt, out)
            })
            .collect();
        let rows = q.shape[1];
        let view: Vec<(&[f32], usize)> = blocks.iter().map(|(b, c)| (b.as_slice(), *c)).collect();
        for (e, &eps) in EPS.iter().enumerate() {
            let separate: Vec<usize> = view
                .iter()
                .map(|b| smallest_rank(rows, |r| exact_error(&[*b], rows, r).unwrap() <= eps))
                .collect();
            let shared = smallest_rank(rows, |r| group(&view, rows, r, eps).unwrap().len() == 1);
            let groups = group(&view, rows, shared, eps).unwrap();
            assert_eq!(groups.len(), 1);
            let exact = exact_error(&view, rows, shared).unwrap();
            assert!(exact <= eps, "exact error {exact} above {eps}");
            let mut estimator = lowbit::shared_basis::Estimator::new(rows, shared);
            for b in &view {
                estimator.add(b.0, b.1).unwrap();
            }
            let cols: usize = view.iter().map(|b| b.1).sum();
            let params_sep: usize = separate
                .iter()
                .zip(&view)
                .map(|(r, b)| r * (rows + b.1))
                .sum();
            let params_shared = shared * (rows + cols);
            totals[e].0 += params_sep;
            totals[e].1 += params_shared;
            println!(
                "{eps:.1}  {layer}      {:>3},{:>3},{:>3}    {shared:>4}      {:.4}   {exact:.4}     {params_sep:>8}    {params_shared:>8}      {:>8}",
                separate[0],
                separate[1],
                separate[2],
                estimator.error(),
                params_sep as i64 - params_shared as i64
            );
        }
    }
    for (e, &eps) in EPS.iter().enumerate() {
        let (sep, sh) = totals[e];
        println!(
            "eps {eps}: all layers, separate {sep} factor parameters, shared {sh}: saved {} ({:.1} %)",
            sep as i64 - sh as i64,
            100.0 * (sep as f64 - sh as f64) / sep.max(1) as f64
        );
    }
}

/// The smallest rank in 1..=max for which `ok` holds (monotone), or `max`.
fn smallest_rank(max: usize, ok: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (1, max);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if ok(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}
