//! Measures the scalar codec on the 2-D F32 weights of a real checkpoint (MiniLM by default):
//! coded bits per weight (all side information counted) against relative MSE
//! (sum of squared errors / sum of squares over all 2-D weights), per candidate grid.
//!
//! `cargo run --release --example scalar_minilm [PATH] [all]` (without `all`: the candidates
//! only; with it: also grouped grids and rotated variants).

use lowbit::codec::scalar::{self, Grid, Params};
use lowbit::codec::Shape2;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let default = format!(
        "{}/.cache/lowbit-data/minilm/model.safetensors",
        std::env::var("HOME").unwrap_or_default()
    );
    let path = args.get(1).cloned().unwrap_or(default);
    let all = args.iter().any(|a| a == "all");
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("skip: {path}: {e}");
            return;
        }
    };
    let tensors = read_f32_matrices(&bytes);
    let numel: usize = tensors.iter().map(|(_, s, _)| s.len()).sum();
    let energy: f64 = tensors
        .iter()
        .flat_map(|(_, _, v)| v.iter())
        .map(|v| (*v as f64).powi(2))
        .sum();
    println!(
        "{} 2-D F32 tensors, {numel} weights from {path}",
        tensors.len()
    );

    let mut configs: Vec<Params> =
        scalar::candidates(Shape2::new(1, 1), 0, false, scalar::Ladder::Full);
    if all {
        for rotate in [false, true] {
            for fineness in [0, 4, 8, 12, 16, 20, 24] {
                if rotate {
                    configs.push(Params {
                        grid: Grid::Uniform { fineness },
                        rotate,
                        seed: 1,
                    });
                }
            }
            for group in [32u32, 64, 128] {
                for bits in 2u8..=8 {
                    configs.push(Params {
                        grid: Grid::Grouped { bits, group },
                        rotate,
                        seed: 1,
                    });
                }
            }
        }
    }
    println!("label                      bpw   side_bpw  rel_mse    encode_ms(all tensors)");
    for p in &configs {
        let t = cpu_seconds();
        let (mut bytes_total, mut side_total, mut err) = (0usize, 0usize, 0f64);
        for (_, shape, values) in &tensors {
            let e = scalar::encode(values, *shape, p).expect("encode");
            bytes_total += e.bytes.len();
            side_total += e.side_bytes;
            err += values
                .iter()
                .zip(&e.reconstruction)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>();
        }
        let ms = (cpu_seconds() - t) * 1e3;
        println!(
            "{:<24} {:6.3}  {:6.3}  {:9.3e}  {:7.1}",
            p.label(),
            8.0 * bytes_total as f64 / numel as f64,
            8.0 * side_total as f64 / numel as f64,
            err / energy,
            ms
        );
    }
    // Decode check and speed on the largest tensor at a middle rate.
    let (name, shape, values) = tensors
        .iter()
        .max_by_key(|(_, s, _)| s.len())
        .expect("tensors");
    let p = Params {
        grid: Grid::Uniform { fineness: 12 },
        rotate: false,
        seed: 0,
    };
    let t = cpu_seconds();
    let e = scalar::encode(values, *shape, &p).expect("encode");
    let enc = (cpu_seconds() - t) * 1e3;
    let t = cpu_seconds();
    let d = scalar::decode(&e.bytes, *shape, &p).expect("decode");
    let dec = (cpu_seconds() - t) * 1e3;
    assert_eq!(d, e.reconstruction);
    println!(
        "{name} ({}x{}): encode {enc:.1} ms, decode {dec:.1} ms at {}",
        shape.rows,
        shape.cols,
        p.label()
    );
}

/// The 2-D F32 tensors of a safetensors file (name, shape, values), in file order.
fn read_f32_matrices(bytes: &[u8]) -> Vec<(String, Shape2, Vec<f32>)> {
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).expect("header");
    let data = &bytes[8 + n..];
    let mut out = Vec::new();
    for (name, info) in header.as_object().expect("object") {
        if name == "__metadata__" || info["dtype"] != "F32" {
            continue;
        }
        let shape: Vec<usize> = info["shape"]
            .as_array()
            .expect("shape")
            .iter()
            .map(|d| d.as_u64().expect("dim") as usize)
            .collect();
        if shape.len() != 2 {
            continue;
        }
        let off = &info["data_offsets"];
        let (a, b) = (
            off[0].as_u64().unwrap() as usize,
            off[1].as_u64().unwrap() as usize,
        );
        let values = lowbit::dtype::to_f32(lowbit::dtype::DType::F32, &data[a..b]);
        out.push((name.clone(), Shape2::new(shape[0], shape[1]), values));
    }
    out.sort_by_key(|t| data_offset(&header, &t.0));
    out
}

fn data_offset(header: &serde_json::Value, name: &str) -> u64 {
    header[name]["data_offsets"][0].as_u64().unwrap_or(0)
}

/// CPU time of this thread in seconds (from /proc, Linux only; 0 elsewhere): the machine this
/// runs on is shared, so wall-clock times overstate the cost.
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |ns| ns * 1e-9)
}
