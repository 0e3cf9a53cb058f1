//! GGUF files end to end: tests/fixtures/gguf/vectors.gguf (written by the PyPI `gguf` package,
//! benches/make_gguf_vectors.py: blocks of every type lowbit dequantizes, each beside the F32
//! values gguf made of them) compressed and restored as safetensors, with every value checked bit
//! for bit; `inspect`'s ggml types; the named refusal of a type lowbit does not dequantize.

use std::fs;

use crate::common::*;
use lowbit::checkpoint::Checkpoint;
use lowbit::container::SourceFormat;
use lowbit::dtype::DType;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/gguf/vectors.gguf"
);

fn compress_and_restore(d: &std::path::Path, extra: &[&str]) -> Vec<u8> {
    fs::copy(FIXTURE, d.join("v.gguf")).unwrap();
    let mut args = vec!["compress", "v.gguf", "-o", "v.lowbit", "--quiet"];
    args.extend(extra);
    let o = lowbit(&args, d);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = lowbit(
        &["decompress", "v.lowbit", "-o", "v.safetensors", "--quiet"],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    fs::read(d.join("v.safetensors")).unwrap()
}

#[test]
fn a_gguf_is_read_as_f32_tensors_and_restored_as_safetensors_bit_for_bit() {
    let c = Checkpoint::parse(fs::read(FIXTURE).unwrap().as_slice()).unwrap();
    assert_eq!(c.format, SourceFormat::Gguf);
    assert_eq!(c.metadata.get("test.u8").map(String::as_str), Some("200"));
    assert_eq!(
        c.metadata.get("general.architecture").map(String::as_str),
        Some("lowbit-test")
    );
    assert!(
        !c.metadata.contains_key("test.array_str"),
        "arrays are not kept"
    );
    let dir = tempfile::tempdir().unwrap();
    let restored = compress_and_restore(dir.path(), &["--method", "lossless"]);
    let h = lowbit::io::safetensors::read_header(&restored).unwrap();
    assert_eq!(h.metadata.get("test.f64").map(String::as_str), Some("0.1"));
    let order: Vec<&str> = h.tensors.iter().map(|t| t.name.as_str()).collect();
    let want: Vec<&str> = c.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(order, want);
    let got = tensors_of(&restored);
    let mut quantized = 0;
    for t in c.tensors.iter().filter(|t| !t.name.ends_with(".expected")) {
        let (dtype, shape, bytes) = &got[&t.name];
        let (e_dtype, e_shape, e_bytes) = &got[&format!("{}.expected", t.name)];
        assert_eq!((shape, *e_dtype), (e_shape, DType::F32), "{}", t.name);
        if t.name == "bf16" {
            // A plain type is kept: BF16 stays BF16, and equals gguf's f32 widening.
            assert_eq!(*dtype, DType::BF16);
            let wide =
                lowbit::dtype::from_f32(DType::F32, &lowbit::dtype::to_f32(DType::BF16, bytes));
            assert_eq!(&wide, e_bytes);
        } else {
            assert_eq!((*dtype, bytes), (DType::F32, e_bytes), "{}", t.name);
            quantized += 1;
        }
    }
    assert_eq!(quantized, 12);
}

#[test]
fn a_gguf_compresses_to_a_target_like_any_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let restored = compress_and_restore(dir.path(), &["--max-error", "0.01"]);
    let got = tensors_of(&restored);
    for (name, (dtype, shape, bytes)) in &got {
        if let Some(base) = name.strip_suffix(".expected") {
            let (_, s, b) = &got[base];
            assert_eq!(s, shape, "{base}");
            if *dtype == DType::F32 && got[base].0 == DType::F32 {
                assert!(rel_error(DType::F32, bytes, b) <= 0.011, "{base}");
            }
        }
    }
}

#[test]
fn inspect_shows_each_tensors_ggml_type_and_bits_per_weight() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::copy(FIXTURE, d.join("v.gguf")).unwrap();
    let o = lowbit(&["inspect", "v.gguf"], d);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("Gguf checkpoint"), "{out}");
    let line = |name: &str| {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no line for {name}: {out}"))
            .to_string()
    };
    assert!(line("q4_k").contains("Q4_K") && line("q4_k").contains("4.500 bpw"));
    assert!(line("q6_k").contains("Q6_K") && line("q6_k").contains("6.562 bpw"));
    assert!(line("q4_0").contains(" 4x32 "), "row-major shape");
    assert!(line("bf16").contains("BF16") && line("bf16").contains("16.000 bpw"));
    let o = lowbit(&["inspect", "v.gguf", "--json"], d);
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"ggml_type\": \"IQ4_XS\""));
}

/// A GGUF v3 of one tensor of ggml type `ty` (dims [256]), its data zeros.
fn one_tensor(ty: u32, block_bytes: usize) -> Vec<u8> {
    let mut f = b"GGUF".to_vec();
    f.extend(3u32.to_le_bytes());
    f.extend(1u64.to_le_bytes());
    f.extend(0u64.to_le_bytes());
    f.extend(4u64.to_le_bytes());
    f.extend(b"attn");
    f.extend(1u32.to_le_bytes());
    f.extend(256u64.to_le_bytes());
    f.extend(ty.to_le_bytes());
    f.extend(0u64.to_le_bytes());
    f.resize(f.len().div_ceil(32) * 32 + block_bytes, 0);
    f
}

#[test]
fn a_type_lowbit_does_not_dequantize_is_named_with_its_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // IQ2_XXS (16): 66 bytes a block of 256.
    fs::write(d.join("iq2.gguf"), one_tensor(16, 66)).unwrap();
    let o = lowbit(&["compress", "iq2.gguf", "-o", "x.lowbit"], d);
    let err = stderr(&o);
    assert!(!o.status.success());
    for needle in ["iq2.gguf", "attn", "IQ2_XXS", "cannot be dequantized"] {
        assert!(err.contains(needle), "'{needle}' not in: {err}");
    }
    assert!(!err.contains("panicked"));
    // Q8_K (15), which gguf-py cannot dequantize but lowbit can, goes through.
    fs::write(d.join("q8k.gguf"), one_tensor(15, 292)).unwrap();
    let o = lowbit(
        &[
            "compress", "q8k.gguf", "-o", "y.lowbit", "--method", "lossless", "--quiet",
        ],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
}
