//! Shared helpers of the integration tests: small generated checkpoints and running the CLI.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use lowbit::dtype::{self, DType};
use lowbit::io::safetensors::{self, PlannedTensor};
use lowbit::rng::Rng;

/// A safetensors file from (name, dtype, shape, bytes).
pub fn safetensors_file(tensors: &[(&str, DType, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let planned: Vec<PlannedTensor> = tensors
        .iter()
        .map(|(n, d, s, _)| PlannedTensor {
            name: n.to_string(),
            dtype: *d,
            shape: s.clone(),
        })
        .collect();
    let mut file = safetensors::encode_header(&planned, &BTreeMap::new()).expect("valid header");
    for (_, _, _, bytes) in tensors {
        file.extend_from_slice(bytes);
    }
    file
}

/// Gaussian values with a per-row scale, like trained weights.
pub fn weights(seed: u64, rows: usize, cols: usize) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let mut w = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        let scale = 0.02 * (1.0 + (r % 7) as f32 * 0.2);
        for _ in 0..cols {
            w.push(scale * rng.normal() as f32);
        }
    }
    w
}

/// A small checkpoint with every kind of tensor lowbit meets: F32/F16/BF16 matrices, 1-D norms,
/// integer buffers, a zero-sized tensor.
pub fn mixed_checkpoint() -> Vec<u8> {
    let f32m = weights(1, 96, 128);
    let f16m = weights(2, 64, 96);
    let bf16m = weights(3, 80, 64);
    let norm: Vec<f32> = (0..128).map(|i| 1.0 + 0.01 * i as f32).collect();
    let ids: Vec<u8> = (0..77i64).flat_map(|i| i.to_le_bytes()).collect();
    let mask: Vec<u8> = (0..50u8).map(|i| i % 2).collect();
    safetensors_file(&[
        (
            "layer.0.weight",
            DType::F32,
            vec![96, 128],
            dtype::from_f32(DType::F32, &f32m),
        ),
        (
            "layer.0.norm",
            DType::F32,
            vec![128],
            dtype::from_f32(DType::F32, &norm),
        ),
        (
            "layer.1.weight",
            DType::F16,
            vec![64, 96],
            dtype::from_f32(DType::F16, &f16m),
        ),
        (
            "layer.2.weight",
            DType::BF16,
            vec![80, 64],
            dtype::from_f32(DType::BF16, &bf16m),
        ),
        ("position_ids", DType::I64, vec![1, 77], ids),
        ("mask", DType::U8, vec![50], mask),
        ("empty", DType::F32, vec![0, 16], Vec::new()),
    ])
}

pub fn lowbit(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lowbit"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("the binary runs")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Tensors of a safetensors file as name -> (dtype, shape, bytes).
pub fn tensors_of(file: &[u8]) -> BTreeMap<String, (DType, Vec<usize>, Vec<u8>)> {
    let h = safetensors::read_header(file).expect("a valid safetensors file");
    h.tensors
        .iter()
        .map(|t| {
            let bytes =
                file[(h.data_start + t.start) as usize..(h.data_start + t.end) as usize].to_vec();
            (t.name.clone(), (t.dtype, t.shape.clone(), bytes))
        })
        .collect()
}

/// Relative Frobenius error between two byte buffers of a float dtype.
pub fn rel_error(dtype: DType, original: &[u8], restored: &[u8]) -> f64 {
    let (a, b) = (
        dtype::to_f32(dtype, original),
        dtype::to_f32(dtype, restored),
    );
    let num: f64 = a
        .iter()
        .zip(&b)
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum();
    let den: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum();
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

/// Shape of each matrix of [`siblings`].
pub const SIB_ROWS: usize = 64;
pub const SIB_COLS: usize = 96;

/// `query`, `key`, `value` of one layer (rows on a shared rank-10 subspace of the input side,
/// plus 5 % noise; `value` in BF16), an unrelated random matrix and a norm.
pub fn siblings() -> Vec<u8> {
    let mut rng = Rng::new(11);
    let k = 10;
    let basis: Vec<f32> = (0..k * SIB_COLS).map(|_| rng.normal() as f32).collect();
    let mut member = |scale: f32| -> Vec<f32> {
        let coef: Vec<f32> = (0..SIB_ROWS * k).map(|_| rng.normal() as f32).collect();
        (0..SIB_ROWS * SIB_COLS)
            .map(|idx| {
                let (i, j) = (idx / SIB_COLS, idx % SIB_COLS);
                let v: f32 = (0..k)
                    .map(|t| coef[i * k + t] * basis[t * SIB_COLS + j])
                    .sum();
                scale * (v + 0.05 * (k as f32).sqrt() * rng.normal() as f32)
            })
            .collect()
    };
    let (q, kk, v) = (member(0.02), member(0.03), member(0.05));
    let other = weights(5, SIB_ROWS, SIB_COLS);
    let norm: Vec<f32> = (0..SIB_COLS).map(|i| 1.0 + 0.01 * i as f32).collect();
    let p = "enc.layer.0.attn";
    safetensors_file(&[
        (
            format!("{p}.query.weight").as_str(),
            DType::F32,
            vec![SIB_ROWS, SIB_COLS],
            dtype::from_f32(DType::F32, &q),
        ),
        (
            &format!("{p}.key.weight"),
            DType::F32,
            vec![SIB_ROWS, SIB_COLS],
            dtype::from_f32(DType::F32, &kk),
        ),
        (
            &format!("{p}.value.weight"),
            DType::BF16,
            vec![SIB_ROWS, SIB_COLS],
            dtype::from_f32(DType::BF16, &v),
        ),
        (
            "enc.layer.0.mlp.dense.weight",
            DType::F32,
            vec![SIB_ROWS, SIB_COLS],
            dtype::from_f32(DType::F32, &other),
        ),
        (
            &format!("{p}.norm"),
            DType::F32,
            vec![SIB_COLS],
            dtype::from_f32(DType::F32, &norm),
        ),
    ])
}
