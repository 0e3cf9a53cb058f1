//! Measures the lossless codec on a whole checkpoint file (MiniLM by default): the tensor bytes
//! coded per tensor, the JSON header stored as is, ratio = file size / coded size. Also the same
//! file with every F32 tensor cast to BF16 (round to nearest even), against its BF16 size.
//!
//! `cargo run --release --example lossless_minilm [PATH]` (CPU time of one thread, best of 5).

use lowbit::codec::lossless;
use lowbit::dtype::{from_f32, to_f32, DType};

/// Timings are the best of this many runs.
const REPEATS: usize = 5;

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
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).expect("header");
    let data = &bytes[8 + n..];
    let mut tensors: Vec<(DType, &[u8])> = Vec::new();
    for (name, info) in header.as_object().expect("object") {
        if name == "__metadata__" {
            continue;
        }
        let dtype = DType::from_name(info["dtype"].as_str().expect("dtype")).expect("known dtype");
        let off = &info["data_offsets"];
        let (a, b) = (
            off[0].as_u64().unwrap() as usize,
            off[1].as_u64().unwrap() as usize,
        );
        tensors.push((dtype, &data[a..b]));
    }
    let bf16: Vec<(DType, Vec<u8>)> = tensors
        .iter()
        .map(|&(d, raw)| {
            if d == DType::F32 {
                (DType::BF16, from_f32(DType::BF16, &to_f32(d, raw)))
            } else {
                (d, raw.to_vec())
            }
        })
        .collect();
    let header_bytes = 8 + n;
    for (label, set) in [
        (
            "fp32 file",
            tensors
                .iter()
                .map(|&(d, r)| (d, r.to_vec()))
                .collect::<Vec<_>>(),
        ),
        ("cast to bf16", bf16),
    ] {
        let original: usize = header_bytes + set.iter().map(|(_, r)| r.len()).sum::<usize>();
        // Best of REPEATS: the machine is shared, and other jobs inflate single timings.
        let (mut enc, mut dec) = (f64::INFINITY, f64::INFINITY);
        let mut coded = Vec::new();
        for _ in 0..REPEATS {
            let t = cpu_seconds();
            coded = set
                .iter()
                .map(|(d, r)| lossless::encode(r, *d).expect("encode"))
                .collect();
            enc = enc.min(cpu_seconds() - t);
            let t = cpu_seconds();
            let restored: Vec<Vec<u8>> = set
                .iter()
                .zip(&coded)
                .map(|((d, r), c)| {
                    lossless::decode(&c.bytes, *d, r.len() / d.size()).expect("decode")
                })
                .collect();
            dec = dec.min(cpu_seconds() - t);
            for ((_, r), back) in set.iter().zip(&restored) {
                assert!(back == r, "round trip");
            }
        }
        let size: usize = header_bytes + coded.iter().map(|c| c.bytes.len()).sum::<usize>();
        println!(
            "{label}: {original} -> {size} bytes, ratio {:.4}x, encode {enc:.3} s ({:.0} MB/s), decode {dec:.3} s ({:.0} MB/s)",
            original as f64 / size as f64,
            original as f64 / enc / 1e6,
            original as f64 / dec / 1e6,
        );
    }
}

/// CPU time of this thread in seconds (from /proc, Linux only; 0 elsewhere): the machine this
/// runs on is shared, so wall-clock times overstate the cost.
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |ns| ns * 1e-9)
}
