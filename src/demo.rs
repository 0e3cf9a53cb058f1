//! The built-in example that `lowbit demo` (and the page's "try an example" button) compresses:
//! a small transformer-shaped checkpoint generated from a fixed seed, with the features real ones
//! have: a skewed embedding table, weight matrices with decaying spectra and a few outliers, 1-D
//! norms and biases, an integer buffer and one F16 tensor.

use crate::dtype::{self, DType};
use crate::io::safetensors::{self, PlannedTensor};
use crate::rng::Rng;

/// A safetensors file of about 0.6 M parameters.
pub fn demo_checkpoint() -> Vec<u8> {
    let mut rng = Rng::new(0x10b17);
    let hidden = 128;
    let vocab = 1000;
    let ffn = 512;
    let mut tensors: Vec<(PlannedTensor, Vec<u8>)> = Vec::new();
    let mut add = |name: &str, dtype: DType, shape: Vec<usize>, bytes: Vec<u8>| {
        tensors.push((
            PlannedTensor {
                name: name.to_string(),
                dtype,
                shape,
            },
            bytes,
        ));
    };
    let emb = matrix(&mut rng, vocab, hidden, 0.05, 16);
    add(
        "embeddings.word_embeddings.weight",
        DType::F32,
        vec![vocab, hidden],
        dtype::from_f32(DType::F32, &emb),
    );
    let ln: Vec<f32> = (0..hidden)
        .map(|_| 1.0 + 0.05 * rng.normal() as f32)
        .collect();
    add(
        "embeddings.LayerNorm.weight",
        DType::F32,
        vec![hidden],
        dtype::from_f32(DType::F32, &ln),
    );
    for layer in 0..2 {
        let p = format!("encoder.layer.{layer}.");
        for (name, rows, cols) in [
            ("attention.query.weight", hidden, hidden),
            ("attention.key.weight", hidden, hidden),
            ("attention.value.weight", hidden, hidden),
            ("intermediate.dense.weight", ffn, hidden),
            ("output.dense.weight", hidden, ffn),
        ] {
            let w = matrix(&mut rng, rows, cols, 0.04, 24);
            add(
                &format!("{p}{name}"),
                DType::F32,
                vec![rows, cols],
                dtype::from_f32(DType::F32, &w),
            );
        }
        let bias: Vec<f32> = (0..ffn).map(|_| 0.02 * rng.normal() as f32).collect();
        add(
            &format!("{p}intermediate.dense.bias"),
            DType::F32,
            vec![ffn],
            dtype::from_f32(DType::F32, &bias),
        );
    }
    let head = matrix(&mut rng, 16, hidden, 0.05, 8);
    add(
        "classifier.weight",
        DType::F16,
        vec![16, hidden],
        dtype::from_f32(DType::F16, &head),
    );
    let ids: Vec<u8> = (0..512i64).flat_map(|i| i.to_le_bytes()).collect();
    add("embeddings.position_ids", DType::I64, vec![1, 512], ids);

    let planned: Vec<PlannedTensor> = tensors.iter().map(|(p, _)| p.clone()).collect();
    let mut metadata = std::collections::BTreeMap::new();
    metadata.insert("source".to_string(), "lowbit demo (synthetic)".to_string());
    let mut file =
        safetensors::encode_header(&planned, &metadata).expect("the demo header is valid");
    for (_, bytes) in tensors {
        file.extend_from_slice(&bytes);
    }
    file
}

/// rows x cols: a rank-`rank` part with geometrically decaying strength, Gaussian noise, and a few
/// large outliers, scaled so the typical entry is about `scale`.
fn matrix(rng: &mut Rng, rows: usize, cols: usize, scale: f32, rank: usize) -> Vec<f32> {
    let mut w: Vec<f32> = (0..rows * cols)
        .map(|_| 0.5 * scale * rng.normal() as f32)
        .collect();
    for k in 0..rank {
        let strength = scale * 2.0 * 0.85f32.powi(k as i32) / (rank as f32).sqrt();
        let u: Vec<f32> = (0..rows).map(|_| rng.normal() as f32).collect();
        let v: Vec<f32> = (0..cols).map(|_| rng.normal() as f32).collect();
        for i in 0..rows {
            for j in 0..cols {
                w[i * cols + j] += strength * u[i] * v[j];
            }
        }
    }
    for _ in 0..(rows * cols / 2000).max(1) {
        let i = rng.below((rows * cols) as u64) as usize;
        w[i] = scale * 12.0 * rng.sign();
    }
    w
}
