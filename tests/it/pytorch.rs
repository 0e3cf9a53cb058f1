//! PyTorch checkpoints end to end: a file written by torch itself (tests/fixtures/tiny.pth, made by
//! benches/make_pth_fixture.py) compressed and restored as safetensors with every value checked
//! against the formulas it was made from; the named refusals of formats lowbit does not read; and
//! seeded mutations of the real file, which must never panic nor yield a range outside the file.

use std::fs;
use std::path::Path;

use crate::common::*;
use lowbit::checkpoint::Checkpoint;
use lowbit::container::SourceFormat;
use lowbit::dtype::{self, DType};
use lowbit::rng::Rng;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny.pth");

/// `i * scale + shift` for i in 0..n: the fixture's formula (benches/make_pth_fixture.py).
fn values(n: usize, scale: f64, shift: f64) -> Vec<f32> {
    (0..n).map(|i| (i as f64 * scale + shift) as f32).collect()
}

/// What each tensor of the fixture holds, in its order: (name, dtype, shape, little-endian bytes).
fn expected() -> Vec<(&'static str, DType, Vec<usize>, Vec<u8>)> {
    let table = values(48, 0.25, -6.0);
    let f32s = |v: &[f32]| dtype::from_f32(DType::F32, v);
    vec![
        (
            "model.encoder.weight",
            DType::F32,
            vec![24, 32],
            f32s(&values(24 * 32, 0.125, -48.0)),
        ),
        (
            "model.encoder.bias",
            DType::F16,
            vec![24],
            dtype::from_f32(DType::F16, &values(24, 0.5, -6.0)),
        ),
        (
            "model.decoder.weight",
            DType::BF16,
            vec![16, 24],
            dtype::from_f32(DType::BF16, &values(16 * 24, 0.25, -48.0)),
        ),
        (
            "model.decoder.scale",
            DType::F32,
            vec![16],
            f32s(&values(16, 0.0625, 1.0)),
        ),
        ("model.table", DType::F32, vec![6, 8], f32s(&table)),
        (
            "model.table_row2",
            DType::F32,
            vec![8],
            f32s(&table[16..24]),
        ),
        (
            "model.position_ids",
            DType::I64,
            vec![1, 10],
            (0..10i64).flat_map(|i| i.to_le_bytes()).collect(),
        ),
        (
            "model.mask",
            DType::Bool,
            vec![7],
            (0..7).map(|i| (i % 3 == 0) as u8).collect(),
        ),
        ("model.temperature", DType::F32, vec![], f32s(&[0.75])),
    ]
}

#[test]
fn a_torch_file_is_read_in_place_with_the_values_torch_saved() {
    let file = fs::read(FIXTURE).unwrap();
    let c = Checkpoint::parse(file.as_slice()).unwrap();
    assert_eq!(c.format, SourceFormat::PyTorch);
    assert_eq!(c.metadata.get("format").map(String::as_str), Some("pt"));
    let want = expected();
    assert_eq!(c.tensors.len(), want.len());
    for (t, (name, dtype, shape, bytes)) in c.tensors.iter().zip(&want) {
        assert_eq!((t.name.as_str(), t.dtype, &t.shape), (*name, *dtype, shape));
        let got = &file[t.range.start as usize..t.range.end as usize];
        assert_eq!(got, bytes.as_slice(), "{name}");
    }
    // The view lies inside the storage of the tensor it views, 16 elements in.
    let (table, row) = (&c.tensors[4].range, &c.tensors[5].range);
    assert_eq!(row.start, table.start + 16 * 4);
}

#[test]
fn lossless_compression_restores_a_safetensors_file_with_identical_values() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::copy(FIXTURE, d.join("tiny.pth")).unwrap();
    let o = lowbit(
        &[
            "compress",
            "tiny.pth",
            "-o",
            "tiny.lowbit",
            "--method",
            "lossless",
            "--quiet",
        ],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = lowbit(
        &[
            "decompress",
            "tiny.lowbit",
            "-o",
            "tiny.safetensors",
            "--quiet",
        ],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let restored = fs::read(d.join("tiny.safetensors")).unwrap();
    let h = lowbit::io::safetensors::read_header(&restored).unwrap();
    assert_eq!(h.metadata.get("format").map(String::as_str), Some("pt"));
    let order: Vec<&str> = h.tensors.iter().map(|t| t.name.as_str()).collect();
    let want = expected();
    assert_eq!(order, want.iter().map(|w| w.0).collect::<Vec<_>>());
    let got = tensors_of(&restored);
    for (name, dtype, shape, bytes) in want {
        assert_eq!(got[name], (dtype, shape, bytes), "{name}");
    }
    // `inspect` of the .lowbit names the source format.
    let o = lowbit(&["inspect", "tiny.lowbit", "--json"], d);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"pytorch\""));
}

#[test]
fn compression_to_a_target_keeps_names_shapes_and_dtypes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::copy(FIXTURE, d.join("tiny.pth")).unwrap();
    let o = lowbit(
        &[
            "compress",
            "tiny.pth",
            "-o",
            "t.lowbit",
            "--max-error",
            "0.01",
            "--quiet",
        ],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = lowbit(
        &["decompress", "t.lowbit", "-o", "t.safetensors", "--quiet"],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let got = tensors_of(&fs::read(d.join("t.safetensors")).unwrap());
    for (name, dtype, shape, bytes) in expected() {
        let (d, s, b) = &got[name];
        assert_eq!((*d, s), (dtype, &shape), "{name}");
        if dtype.is_lossy_compressible() && !shape.is_empty() {
            assert!(rel_error(dtype, &bytes, b) <= 0.01, "{name}");
        } else {
            assert_eq!(b, &bytes, "{name}: non-float tensors are stored exactly");
        }
    }
}

fn refused(d: &Path, name: &str, bytes: &[u8], needles: &[&str]) {
    fs::write(d.join(name), bytes).unwrap();
    let o = lowbit(&["compress", name, "-o", "x.lowbit"], d);
    let err = stderr(&o);
    assert!(!o.status.success(), "{name} was accepted");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(name), "{name} not named: {err}");
    for n in needles {
        assert!(err.contains(n), "'{n}' not in: {err}");
    }
    assert!(!d.join("x.lowbit").exists());
}

#[test]
fn formats_lowbit_does_not_read_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The first bytes of a legacy torch.save file (EasyOCR's craft_mlt_25k.pth begins so).
    let mut legacy = lowbit::io::pytorch::LEGACY_MAGIC.to_vec();
    legacy.extend_from_slice(b".\x80\x02M\xe9\x03.\x80\x02}q\x00(X\x10\x00\x00\x00");
    refused(
        d,
        "old.pth",
        &legacy,
        &[
            "old-style PyTorch pickle",
            "_use_new_zipfile_serialization=True",
        ],
    );
    refused(
        d,
        "m.gguf",
        b"GGUF\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
        // GGUF is read now: a file cut after its version is a named GGUF error.
        &["not a valid GGUF file", "runs past the end"],
    );
    refused(
        d,
        "m.h5",
        b"\x89HDF\r\n\x1a\n\x00\x00\x00\x00\x00\x00\x00\x00",
        &["HDF5"],
    );
    refused(
        d,
        "m.onnx",
        b"\x08\x07\x12\x07pytorch\x1a\x032.1",
        &["ONNX"],
    );
    refused(
        d,
        "m.pb",
        b"\n\x0c\n\x05input\x12\x03Placeholder\x00",
        &["TensorFlow"],
    );
    refused(
        d,
        "p.pkl",
        b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}\x94.",
        &["bare Python pickle"],
    );
    // A zip that is no checkpoint, a TorchScript archive, and a checkpoint with a forbidden global.
    let zip = zip_of(&[("notes/readme.txt", b"hello")]);
    refused(
        d,
        "notes.zip",
        &zip,
        &["not a PyTorch checkpoint", "readme.txt"],
    );
    let zip = zip_of(&[("m/data.pkl", b"\x80\x02}."), ("m/code/__torch__.py", b"")]);
    refused(d, "scripted.pt", &zip, &["TorchScript"]);
    let evil = b"\x80\x02cposix\nsystem\nX\x07\x00\x00\x00echo hi\x85R.";
    let zip = zip_of(&[("evil/data.pkl", evil)]);
    refused(
        d,
        "evil.pth",
        &zip,
        &[
            "data.pkl: forbidden global 'posix.system'",
            "it never runs code from a checkpoint",
        ],
    );
}

/// A plain zip of STORED entries (as `zip -0` writes): local header and data for each entry, then
/// the central directory and the end record.
fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let offset = out.len() as u32;
        let crc = lowbit::checksum::crc32(data);
        let mut fields = Vec::new();
        fields.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        fields.extend_from_slice(&crc.to_le_bytes());
        fields.extend_from_slice(&(data.len() as u32).to_le_bytes());
        fields.extend_from_slice(&(data.len() as u32).to_le_bytes());
        fields.extend_from_slice(&(name.len() as u16).to_le_bytes());
        fields.extend_from_slice(&[0, 0]);
        out.extend_from_slice(b"PK\x03\x04");
        out.extend_from_slice(&fields);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        central.extend_from_slice(b"PK\x01\x02\x14\x00");
        central.extend_from_slice(&fields);
        central.extend_from_slice(&[0; 10]); // comment length, disk, attributes
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let start = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(b"PK\x05\x06\x00\x00\x00\x00");
    let n = (entries.len() as u16).to_le_bytes();
    out.extend_from_slice(&[n[0], n[1], n[0], n[1]]);
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&start.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

#[test]
fn mutations_of_a_real_torch_file_never_panic() {
    let file = fs::read(FIXTURE).unwrap();
    // The pickle and the zip structures, where damage matters: the data.pkl entry (from its
    // local header) and the tail from the central directory on.
    let pkl_end = 64 + 1100;
    let dir_start = file.len() - 1200;
    let mut rng = Rng::new(2024);
    let mut accepted = 0;
    for case in 0..3000 {
        let mut m = file.clone();
        let region = if case % 2 == 0 {
            0..pkl_end
        } else {
            dir_start..file.len()
        };
        for _ in 0..1 + rng.below(3) {
            let at = region.start + rng.below((region.end - region.start) as u64) as usize;
            let at = at.min(m.len() - 1);
            match rng.below(5) {
                0 => m[at] = rng.next_u64() as u8,
                1 => m[at] ^= 1 << rng.below(8),
                2 => m[at] = [0, 0xFF, 0x7F, 0x80][rng.below(4) as usize],
                3 => {
                    m.insert(at, rng.next_u64() as u8);
                }
                _ => {
                    m.remove(at);
                }
            }
        }
        if rng.below(10) == 0 {
            m.truncate(rng.below(m.len() as u64) as usize);
        }
        if let Ok(c) = Checkpoint::parse(m.as_slice()) {
            accepted += 1;
            for t in &c.tensors {
                assert!(t.range.start <= t.range.end && t.range.end <= m.len() as u64);
                assert_eq!(
                    t.range.end - t.range.start,
                    t.numel() * t.dtype.size() as u64,
                    "{}",
                    t.name
                );
            }
        }
    }
    // Some damage leaves a valid file (a changed tensor name or value, a bit in the padding).
    assert!(accepted > 0);
}
