//! The `.lowbit` bytes are a contract: this pins the exact file produced for a small fixed
//! checkpoint, so any change to a codec's bytes, the container or the allocator's choices shows up
//! here. After an intended format change, bump the format version if old files no longer decode,
//! then re-bless with `LOWBIT_BLESS=1 cargo test --test golden` and say why in the commit.

use crate::common;

use std::path::PathBuf;

use lowbit::{CompressOptions, NoProgress, Target};

fn golden_input() -> Vec<u8> {
    common::mixed_checkpoint()
}

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

fn check(name: &str, opts: &CompressOptions) {
    let input = golden_input();
    let mut out = Vec::new();
    lowbit::compress(
        &input,
        "golden.safetensors",
        opts,
        &mut NoProgress,
        &mut out,
    )
    .expect("compresses");
    let path = golden_path(name);
    if std::env::var_os("LOWBIT_BLESS").is_some() {
        std::fs::write(&path, &out).unwrap();
        return;
    }
    let expected =
        std::fs::read(&path).unwrap_or_else(|_| panic!("{} missing: bless it", path.display()));
    assert!(
        out == expected,
        "{name}: the .lowbit bytes changed ({} vs {} bytes)",
        out.len(),
        expected.len()
    );
    // The pinned file still decodes to the same tensors as a fresh one.
    let mut restored = Vec::new();
    lowbit::decompress(&expected, name, &mut NoProgress, &mut restored)
        .expect("the golden file decodes");
    assert_eq!(
        common::tensors_of(&restored).len(),
        common::tensors_of(&input).len()
    );
}

/// Pinned per codec. Low rank (and so `auto`, which may pick it) is left out on purpose: its
/// encoder's matrix products come from faer, whose SIMD kernels are chosen for the CPU at run time,
/// so its bytes may differ in the last bits between machines (they are identical run to run on one
/// machine, which `tests/cli.rs` checks, and its decoder is a fixed-order loop, identical everywhere).
#[test]
fn golden_each_portable_codec() {
    use lowbit::codec::Method;
    for (method, bpw) in [
        (Method::Scalar, 4.0),
        (Method::Vq, 8.0),
        (Method::Lossless, 32.0),
    ] {
        let mut opts = CompressOptions::new(Target::BitsPerWeight(bpw));
        opts.method = Some(method);
        check(&format!("mixed-{}-{bpw}bpw.lowbit", method.name()), &opts);
    }
}

/// shared-lowrank's encoder runs an SVD (faer, CPU-dependent in the last bits, see above), so
/// its file cannot be pinned by re-encoding. What is pinned is the format: the committed file
/// (group section, member sections, manifest with `groups`) must still be read, and decode to the
/// very same bytes (the decoder is a fixed-order loop), whose CRC-32 is pinned beside it.
#[test]
fn golden_shared_lowrank_decodes() {
    let path = golden_path("siblings-shared-lowrank.lowbit");
    let crc_path = golden_path("siblings-shared-lowrank.decoded-crc32");
    if std::env::var_os("LOWBIT_BLESS").is_some() {
        let mut opts = CompressOptions::new(Target::MaxError(0.1));
        opts.method = Some(lowbit::codec::Method::SharedLowrank);
        let mut out = Vec::new();
        lowbit::compress(
            &common::siblings(),
            "siblings.safetensors",
            &opts,
            &mut NoProgress,
            &mut out,
        )
        .expect("compresses");
        let mut restored = Vec::new();
        lowbit::decompress(&out, "golden", &mut NoProgress, &mut restored).expect("decodes");
        std::fs::write(&path, &out).unwrap();
        std::fs::write(
            &crc_path,
            format!("{}\n", lowbit::container::crc32(&restored)),
        )
        .unwrap();
        return;
    }
    let file = std::fs::read(&path).expect("the golden file: bless it");
    let container = lowbit::container::Container::read(&file).expect("reads");
    assert_eq!(
        container.manifest.groups.len(),
        1,
        "the golden file has a group"
    );
    let mut restored = Vec::new();
    lowbit::decompress(&file, "golden", &mut NoProgress, &mut restored).expect("decodes");
    let pinned: u32 = std::fs::read_to_string(&crc_path)
        .expect("the pinned CRC: bless it")
        .trim()
        .parse()
        .expect("a number");
    assert_eq!(
        lowbit::container::crc32(&restored),
        pinned,
        "the golden shared-lowrank file decodes to other bytes"
    );
}
