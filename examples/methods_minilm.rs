//! Measures the `hyper` and `turbo` codecs (and the scalar ECSQ grid beside them) on the 2-D F32
//! weights of a real checkpoint (MiniLM by default): coded bits per weight (all side information
//! counted) against relative MSE (sum of squared errors / sum of squares over all 2-D weights).
//!
//! `cargo run --release --example methods_minilm [PATH] [sweep]` (without `sweep`: the auto
//! candidates of both codecs and a few scalar grids; with it: the square side L and ring count of
//! hyper, and turbo with QJL, as used to choose the candidates in docs/METHODS.md).

use lowbit::codec::{hyper, scalar, turbo, CodecParams, Shape2};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let default = format!(
        "{}/.cache/lowbit-data/minilm/model.safetensors",
        std::env::var("HOME").unwrap_or_default()
    );
    let path = args
        .get(1)
        .filter(|a| *a != "sweep")
        .cloned()
        .unwrap_or(default);
    let sweep = args.iter().any(|a| a == "sweep");
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

    // Each config is a function of the tensor's shape (turbo's d follows the row length).
    type Config = Box<dyn Fn(Shape2) -> Option<CodecParams>>;
    let mut configs: Vec<(String, Config)> = Vec::new();
    for fineness in [4, 8, 12, 16] {
        configs.push((
            format!("scalar ecsq f{fineness}"),
            Box::new(move |_| {
                Some(CodecParams::Scalar(scalar::Params {
                    grid: scalar::Grid::Uniform { fineness },
                    rotate: false,
                    seed: 0,
                }))
            }),
        ));
    }
    let hyper_grid: Vec<(u32, f32, u8)> = if sweep {
        let mut v = Vec::new();
        for t in [8u32, 15, 40] {
            for side in [4.0f32, 5.0, 6.0, 8.0] {
                for rings in [1u8, 3] {
                    v.push((t, side, rings));
                }
            }
        }
        v
    } else {
        hyper::candidates(Shape2::new(2, 2))
            .iter()
            .map(|p| (p.n.isqrt(), p.side, p.rings))
            .collect()
    };
    for (t, side, rings) in hyper_grid {
        let p = hyper::Params {
            n: t * t,
            side,
            relative: true,
            rings,
        };
        configs.push((
            p.label(),
            Box::new(move |_| Some(CodecParams::Hyper(p.clone()))),
        ));
    }
    let turbo_bits: Vec<(u8, bool)> = if sweep {
        (1..=6).flat_map(|b| [(b, false), (b, true)]).collect()
    } else {
        (1..=6).map(|b| (b, false)).collect()
    };
    for (bits, qjl) in turbo_bits {
        let qjl_label = if qjl { "+qjl" } else { "" };
        configs.push((
            format!("turbo {bits}b{qjl_label}"),
            Box::new(move |shape| {
                let dim = lowbit::rotation::block_len(shape.cols) as u32;
                (dim as usize >= turbo::MIN_DIM).then_some(CodecParams::Turbo(turbo::Params {
                    bits,
                    dim,
                    qjl,
                    seed: 0,
                }))
            }),
        ));
    }
    println!("label                         bpw   side_bpw  rel_mse    encode_ms(all tensors)");
    for (label, config) in &configs {
        let t = cpu_seconds();
        let (mut bytes_total, mut side_total, mut err) = (0usize, 0usize, 0f64);
        for (_, shape, values) in &tensors {
            let Some(p) = config(*shape) else {
                bytes_total += 4 * values.len();
                continue;
            };
            let e = p.encode(values, *shape).expect("encode");
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
            "{:<28} {:6.3}  {:6.3}  {:9.3e}  {:7.1}",
            label,
            8.0 * bytes_total as f64 / numel as f64,
            8.0 * side_total as f64 / numel as f64,
            err / energy,
            ms
        );
    }
    // Decode check and speed on the largest tensor.
    let (name, shape, values) = tensors
        .iter()
        .max_by_key(|(_, s, _)| s.len())
        .expect("tensors");
    for p in [
        CodecParams::Hyper(hyper::candidates(*shape)[5].clone()),
        CodecParams::Turbo(turbo::candidates(*shape, 0)[2].clone()),
    ] {
        let t = cpu_seconds();
        let e = p.encode(values, *shape).expect("encode");
        let enc = (cpu_seconds() - t) * 1e3;
        let t = cpu_seconds();
        let d = p.decode(&e.bytes, *shape).expect("decode");
        let dec = (cpu_seconds() - t) * 1e3;
        assert_eq!(d, e.reconstruction);
        println!(
            "{name} ({}x{}): encode {enc:.1} ms, decode {dec:.1} ms at {}",
            shape.rows,
            shape.cols,
            p.label()
        );
    }
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
