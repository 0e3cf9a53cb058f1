//! Random damage to a valid `.lowbit` (header and sections): decoding must return an error or a
//! well-formed file, never panic, and never allocate beyond what the file can justify.

use crate::common;

use lowbit::rng::Rng;
use lowbit::{CompressOptions, NoProgress, Target};

fn valid_lowbit(method: Option<lowbit::codec::Method>) -> Vec<u8> {
    // Lossless has no budget; the lossy methods get a generous one.
    let target = if method == Some(lowbit::codec::Method::Lossless) {
        Target::MaxError(0.0)
    } else {
        Target::BitsPerWeight(6.0)
    };
    let mut opts = CompressOptions::new(target);
    opts.method = method;
    let mut out = Vec::new();
    lowbit::compress(
        &common::mixed_checkpoint(),
        "in",
        &opts,
        &mut NoProgress,
        &mut out,
    )
    .unwrap();
    out
}

#[test]
fn mutated_lowbit_files_never_panic() {
    let mut rng = Rng::new(2024);
    for method in [
        None,
        Some(lowbit::codec::Method::Scalar),
        Some(lowbit::codec::Method::Vq),
        Some(lowbit::codec::Method::Lowrank),
        Some(lowbit::codec::Method::SparseLowrank),
    ] {
        let good = valid_lowbit(method);
        for case in 0..300 {
            let mut bad = good.clone();
            match case % 4 {
                0 => {
                    let at = rng.below(bad.len() as u64) as usize;
                    bad[at] ^= 1 << rng.below(8);
                }
                1 => bad.truncate(rng.below(bad.len() as u64) as usize),
                2 => {
                    let at = rng.below(bad.len() as u64) as usize;
                    bad[at] = rng.next_u64() as u8;
                    let at = rng.below(bad.len() as u64) as usize;
                    bad[at] = rng.next_u64() as u8;
                }
                _ => {
                    // Damage inside the sections only (the header stays valid).
                    let header = 8 + u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
                    if header < bad.len() {
                        for _ in 0..1 + rng.below(4) {
                            let at = header + rng.below((bad.len() - header) as u64) as usize;
                            bad[at] = rng.next_u64() as u8;
                        }
                    }
                }
            }
            let mut out = Vec::new();
            if lowbit::decompress(&bad, "bad.lowbit", &mut NoProgress, &mut out).is_ok() {
                // A decode that succeeds must still be a well-formed safetensors file.
                lowbit::io::safetensors::read_header(&out)
                    .expect("a successful decode is well formed");
            }
            let _ = lowbit::inspect(&bad, "bad.lowbit");
        }
    }
}

/// The checksum stops damaged files before any codec sees them, so the codecs' own validation is
/// exercised here directly: damaged section bytes handed to each decoder must give an error or a
/// tensor of the right length, never a panic.
#[test]
fn damaged_sections_never_panic_a_decoder() {
    let mut rng = Rng::new(77);
    for method in [
        Some(lowbit::codec::Method::Scalar),
        Some(lowbit::codec::Method::Vq),
        Some(lowbit::codec::Method::Lowrank),
        Some(lowbit::codec::Method::Lossless),
    ] {
        let good = valid_lowbit(method);
        let container = lowbit::container::Container::read(&good).expect("a valid file");
        for (record, range) in container.manifest.tensors.iter().zip(&container.sections) {
            let section = &good[range.clone()];
            for case in 0..60 {
                let mut bad = section.to_vec();
                if bad.is_empty() {
                    continue;
                }
                if case % 3 == 0 {
                    bad.truncate(rng.below(bad.len() as u64) as usize);
                } else {
                    for _ in 0..1 + rng.below(3) {
                        let at = rng.below(bad.len() as u64) as usize;
                        bad[at] ^= 1 << rng.below(8);
                    }
                }
                if let Ok(bytes) = lowbit::pipeline::decode_tensor(&bad, record) {
                    assert_eq!(
                        bytes.len() as u64,
                        record.numel() * record.dtype.size() as u64
                    );
                }
            }
        }
    }
}
