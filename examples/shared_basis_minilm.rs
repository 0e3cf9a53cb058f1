//! Shared-basis analysis on MiniLM (the incremental estimator of Shamrai 2026,
//! Concatenated Matrix SVD; `src/codec/shared_basis.rs`): can the query, key
//! and value matrices of a layer share one input-side basis within a relative error `eps`, and how
//! many factor parameters would that save against one basis per matrix?
//!
//! The blocks are scaled to unit norm (as `--method shared-lowrank` does), so a group's error is
//! the RMS of its members' relative errors. For each layer and `eps`: the smallest rank at which
//! each matrix alone meets `eps` (exact SVD),
//! the smallest rank at which the incremental estimator lets the three form one group, the exact
//! error of that group (must be <= eps), and the factor parameter counts (uncoded f32 counts, not
//! a file size): separate `sum r_j (m + n)`, shared `r (m + 3 n)`. Then the CODED sizes at those
//! ranks (8-bit factors, entropy coded, every byte of the sections counted, padding included):
//! per-tensor `lowrank` at each r_j against `shared-lowrank` (one basis section + three member
//! sections) at r, with the measured relative errors after quantization.
//!
//! With `SHARED_BASIS_WRITE=DIR`, it also writes, per eps, the checkpoint with every layer's
//! query, key and value replaced by their decoded values (the codecs' reconstructions, which
//! their decoders reproduce bit for bit), one for each coding, for `minilm_eval.py`:
//! `DIR/lowrank-EPS.safetensors` and `DIR/shared-EPS.safetensors` (other tensors untouched).
//!
//! `cargo run --release --example shared_basis_minilm [PATH]`

use lowbit::checkpoint::Checkpoint;
use lowbit::codec::shared_basis::{exact_error, group};
use lowbit::codec::shared_lowrank::{encode_group, BasisParams};
use lowbit::codec::{lowrank, Shape2};
use lowbit::container::section_len;
use lowbit::dtype::to_f32;

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
    let write_dir = std::env::var_os("SHARED_BASIS_WRITE").map(std::path::PathBuf::from);
    // Per eps: (lowrank copy, shared copy) of the file, patched layer by layer.
    let mut patched: Vec<(Vec<u8>, Vec<u8>)> = match &write_dir {
        Some(_) => EPS.iter().map(|_| (bytes.clone(), bytes.clone())).collect(),
        None => Vec::new(),
    };
    let patch = |file: &mut Vec<u8>, t: &lowbit::checkpoint::InputTensor, values: &[f32]| {
        assert_eq!(t.dtype, lowbit::dtype::DType::F32);
        file[lowbit::source::usize_range(&t.range).unwrap()]
            .copy_from_slice(&lowbit::dtype::from_f32(t.dtype, values));
    };
    println!(
        "eps  layer  r_sep(q,k,v)   r_shared  est_err  exact_err  params_sep  params_shared  saved"
    );
    let mut totals = vec![(0usize, 0usize); EPS.len()];
    let mut coded_rows = Vec::new();
    let mut coded_totals = vec![(0u64, 0u64); EPS.len()];
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
                // Unit norm, as the codec and the planner see the blocks: eps then bounds the
                // RMS of the three relative errors.
                let scale = lowbit::codec::shared_lowrank::unit_scale(&w);
                let mut wt = vec![0.0f32; w.len()];
                for i in 0..out {
                    for j in 0..inp {
                        wt[j * out + i] = w[i * inp + j] * scale;
                    }
                }
                (wt, out)
            })
            .collect();
        let rows = q.shape[1];
        let originals: Vec<Vec<f32>> = [q, k, v]
            .iter()
            .map(|t| {
                to_f32(
                    t.dtype,
                    &bytes[lowbit::source::usize_range(&t.range).unwrap()],
                )
            })
            .collect();
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
            let mut estimator = lowbit::codec::shared_basis::Estimator::new(rows, shared);
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
            // Coded: per-tensor lowrank at r_j vs one shared basis at r.
            let shape = Shape2::new(q.shape[0], rows);
            let numel = shape.len() as u64;
            let mut sep_bytes = 0u64;
            let (mut sep_err, mut sep_ms) = (0.0f64, 0.0f64);
            for (j, w) in originals.iter().enumerate() {
                let p = lowrank::Params {
                    rank: separate[j] as u32,
                    oversample: 10,
                    power_iters: 2,
                    factor_bits: 8,
                    residual_step_log2: None,
                    seed: 1,
                };
                let enc = lowrank::encode(w, shape, &p).unwrap();
                if let Some((file, _)) = patched.get_mut(e) {
                    patch(file, [q, k, v][j], &enc.reconstruction);
                }
                sep_bytes += section_len(numel, enc.bytes.len() as u64);
                let e = rel(w, &enc.reconstruction);
                sep_err = sep_err.max(e);
                sep_ms += e * e / 3.0;
            }
            let basis = BasisParams {
                rank: shared as u32,
                factor_bits: 8,
                oversample: 10,
                power_iters: 2,
                seed: 1,
            };
            let members: Vec<(&[f32], Shape2)> =
                originals.iter().map(|w| (w.as_slice(), shape)).collect();
            let enc = encode_group(&members, &basis).unwrap();
            if let Some((_, file)) = patched.get_mut(e) {
                for (t, m) in [q, k, v].iter().zip(&enc.members) {
                    patch(file, t, &m.reconstruction);
                }
            }
            let mut sh_bytes = section_len((rows * shared) as u64, enc.basis.bytes.len() as u64);
            let (mut sh_err, mut sh_ms) = (0.0f64, 0.0f64);
            for (w, m) in originals.iter().zip(&enc.members) {
                sh_bytes += section_len(numel, m.bytes.len() as u64);
                let e = rel(w, &m.reconstruction);
                sh_err = sh_err.max(e);
                sh_ms += e * e / 3.0;
            }
            coded_totals[e].0 += sep_bytes;
            coded_totals[e].1 += sh_bytes;
            coded_rows.push(format!(
                "{eps:.1}  {layer}  lowrank {sep_bytes:>8} B (rel. error worst {sep_err:.4}, rms {:.4})  \
                 shared-lowrank {sh_bytes:>8} B (worst {sh_err:.4}, rms {:.4})  saved {:>7} B ({:.1} %)",
                sep_ms.sqrt(),
                sh_ms.sqrt(),
                sep_bytes as i64 - sh_bytes as i64,
                100.0 * (sep_bytes as f64 - sh_bytes as f64) / sep_bytes as f64
            ));
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
    if let Some(dir) = &write_dir {
        for (&eps, (low, shared)) in EPS.iter().zip(&patched) {
            std::fs::write(dir.join(format!("lowrank-{eps}.safetensors")), low).unwrap();
            std::fs::write(dir.join(format!("shared-{eps}.safetensors")), shared).unwrap();
        }
    }
    println!("coded sizes (8-bit factors, sections with padding; dense f32 q+k+v = 1769472 B):");
    for row in &coded_rows {
        println!("{row}");
    }
    for (e, &eps) in EPS.iter().enumerate() {
        let (sep, sh) = coded_totals[e];
        println!(
            "eps {eps}: all layers, coded lowrank {sep} B, shared-lowrank {sh} B: saved {} B ({:.1} %)",
            sep as i64 - sh as i64,
            100.0 * (sep as f64 - sh as f64) / sep.max(1) as f64
        );
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

/// Relative Frobenius error.
fn rel(a: &[f32], b: &[f32]) -> f64 {
    let e: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| ((x - y) as f64).powi(2))
        .sum();
    let n: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum();
    (e / n).sqrt()
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
