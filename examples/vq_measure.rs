//! Measures the vq codec on real weights: for each candidate of a tensor, the coded bits per weight
//! (everything counted), the entropy estimate of the indices, the relative MSE and the encode time;
//! then the effect of the row scales and of storing the codebook in f16 instead of f32.
//!
//! Run: `cargo run --release --example vq_measure -- MODEL.safetensors [TENSOR ...]`
//! (default tensors: the query and intermediate weights of MiniLM's layer 0). Prints JSON lines.

use std::time::Instant;

use lowbit::codec::{vq, Shape2};
use lowbit::entropy;
use lowbit::kmeans::{self, Codebook};
use lowbit::rng::Rng;

fn read_tensor(bytes: &[u8], name: &str) -> Option<(Vec<f32>, Shape2)> {
    let len = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let header: serde_json::Value = serde_json::from_slice(bytes.get(8..8 + len)?).ok()?;
    let t = header.get(name)?;
    if t.get("dtype")?.as_str()? != "F32" {
        return None;
    }
    let shape: Vec<usize> = t
        .get("shape")?
        .as_array()?
        .iter()
        .map(|d| d.as_u64().map(|d| d as usize))
        .collect::<Option<_>>()?;
    let offsets = t.get("data_offsets")?.as_array()?;
    let (a, b) = (offsets[0].as_u64()? as usize, offsets[1].as_u64()? as usize);
    let data = bytes.get(8 + len + a..8 + len + b)?;
    let values = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Some((values, Shape2::of(&shape)?))
}

fn mse(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum::<f64>()
        / a.len() as f64
}

fn main() -> lowbit::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args.first().cloned().unwrap_or_else(|| {
        format!(
            "{}/.cache/lowbit-data/minilm/model.safetensors",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let names: Vec<String> = if args.len() > 1 {
        args[1..].to_vec()
    } else {
        vec![
            "encoder.layer.0.attention.self.query.weight".into(),
            "encoder.layer.0.intermediate.dense.weight".into(),
        ]
    };
    let bytes = std::fs::read(&path).map_err(|e| lowbit::Error::io(&path, e))?;
    for name in &names {
        let (values, shape) = read_tensor(&bytes, name)
            .ok_or_else(|| lowbit::Error::invalid(format!("no F32 tensor {name}")))?;
        let energy = values.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / values.len() as f64;
        let n = values.len() as f64;
        for p in vq::candidates(shape, 0) {
            for row_scale in [true, false] {
                let p = vq::Params {
                    row_scale,
                    ..p.clone()
                };
                let start = Instant::now();
                let enc = vq::encode(&values, shape, &p)?;
                let seconds = start.elapsed().as_secs_f64();
                let index_bits = index_entropy_bits(&enc.bytes, shape, &p)?;
                println!(
                    "{{\"tensor\":\"{name}\",\"rows\":{},\"cols\":{},\"params\":\"{}\",\"nominal_bpw\":{:.3},\"coded_bpw\":{:.4},\"side_bpw\":{:.4},\"index_entropy_bpw\":{:.4},\"rel_mse\":{:.5},\"encode_seconds\":{seconds:.3}}}",
                    shape.rows,
                    shape.cols,
                    p.label(),
                    p.nominal_bits_per_weight(),
                    8.0 * enc.bytes.len() as f64 / n,
                    8.0 * enc.side_bytes as f64 / n,
                    index_bits / n,
                    mse(&values, &enc.reconstruction) / energy,
                );
            }
        }
        // f16 versus f32 codebook, without row scales, d4 k256, on the whole tensor.
        let dim = 4;
        let mut stream = values.clone();
        stream.resize(values.len().div_ceil(dim) * dim, 0.0);
        let cb = kmeans::fit(&stream, dim, 256, 10, &mut Rng::new(0))?;
        let (_, d32) = kmeans::assign(&stream, dim, &cb)?;
        let scale = cb.centroids.iter().fold(0f32, |m, v| m.max(v.abs()));
        let cb16 = Codebook {
            dim,
            centroids: cb
                .centroids
                .iter()
                .map(|&v| half::f16::from_f32(v / scale).to_f32() * scale)
                .collect(),
        };
        let (_, d16) = kmeans::assign(&stream, dim, &cb16)?;
        let total = energy * n;
        println!(
            "{{\"tensor\":\"{name}\",\"codebook_precision\":\"d4 k256\",\"rel_mse_f32\":{:.6},\"rel_mse_f16\":{:.6},\"codebook_bpw_f32\":{:.5},\"codebook_bpw_f16\":{:.5}}}",
            d32.iter().map(|&d| d as f64).sum::<f64>() / total,
            d16.iter().map(|&d| d as f64).sum::<f64>() / total,
            256.0 * 4.0 * 32.0 / n,
            256.0 * 4.0 * 16.0 / n,
        );
    }
    Ok(())
}

/// Empirical entropy, in bits, of the indices stored in a vq section (an estimate, not a size):
/// the section is parsed by its documented layout (see `codec::vq`).
fn index_entropy_bits(section: &[u8], shape: Shape2, p: &vq::Params) -> lowbit::Result<f64> {
    let entries = u32::from_le_bytes([section[1], section[2], section[3], section[4]]) as usize;
    let mut pos = 1 + 4 + 4;
    if p.row_scale {
        pos += 4 + 2 * shape.rows;
    }
    pos += 2 * entries * p.dim as usize + 4;
    let vectors = shape.len().div_ceil(p.dim as usize);
    let codes = entropy::decode(&section[pos..], vectors, entries as u32)?;
    Ok(entropy::entropy_bits(&codes, entries as u32))
}
