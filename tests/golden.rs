//! The `.lowbit` bytes are a contract: this pins the exact file produced for a small fixed
//! checkpoint, so any change to a codec's bytes, the container or the allocator's choices shows up
//! here. After an intended format change, bump the format version if old files no longer decode,
//! then re-bless with `LOWBIT_BLESS=1 cargo test --test golden` and say why in the commit.

mod common;

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
