//! The GGUF reader against files made by the PyPI `gguf` package (tests/fixtures/gguf/, by
//! benches/make_gguf_vectors.py) and against hand-built hostile files.

use super::*;
use crate::rng::Rng;

const VECTORS: &[u8] = include_bytes!("../../../tests/fixtures/gguf/vectors.gguf");

/// A GGUF writer for the tests: version, key/values (raw value bytes after the type), tensor
/// infos (name, dims fastest-first, type id, offset), the data at `alignment`.
pub(crate) struct Writer {
    version: u32,
    kv: Vec<(String, u32, Vec<u8>)>,
    infos: Vec<(String, Vec<u64>, u32, u64)>,
    data: Vec<u8>,
    alignment: u64,
}

fn string(s: &[u8]) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(s);
    v
}

impl Writer {
    pub(crate) fn new() -> Self {
        Writer {
            version: 3,
            kv: Vec::new(),
            infos: Vec::new(),
            data: Vec::new(),
            alignment: 32,
        }
    }

    /// Appends a tensor's bytes at the next aligned offset.
    pub(crate) fn tensor(mut self, name: &str, dims: &[u64], ty: GgmlType, bytes: &[u8]) -> Self {
        let offset = self.data.len().div_ceil(self.alignment as usize) * self.alignment as usize;
        self.data.resize(offset, 0);
        self.data.extend_from_slice(bytes);
        let info = (name.to_string(), dims.to_vec(), ty as u32, offset as u64);
        self.infos.push(info);
        self
    }

    pub(crate) fn kv(mut self, key: &str, ty: u32, value: Vec<u8>) -> Self {
        self.kv.push((key.to_string(), ty, value));
        self
    }

    pub(crate) fn bytes(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(self.version.to_le_bytes());
        out.extend((self.infos.len() as u64).to_le_bytes());
        out.extend((self.kv.len() as u64).to_le_bytes());
        for (k, ty, v) in &self.kv {
            out.extend(string(k.as_bytes()));
            out.extend(ty.to_le_bytes());
            out.extend(v);
        }
        for (name, dims, ty, offset) in &self.infos {
            out.extend(string(name.as_bytes()));
            out.extend((dims.len() as u32).to_le_bytes());
            dims.iter().for_each(|d| out.extend(d.to_le_bytes()));
            out.extend(ty.to_le_bytes());
            out.extend(offset.to_le_bytes());
        }
        let a = self.alignment as usize;
        out.resize(out.len().div_ceil(a) * a, 0);
        out.extend(&self.data);
        out
    }
}

/// A small valid file: two F32 tensors, a Q4_0 one, and a key/value of each kind.
fn small() -> Vec<u8> {
    let q4 = [[0x00, 0x3C].as_slice(), &[0x21; 16]].concat(); // d = 1.0
    Writer::new()
        .kv("general.architecture", 8, string(b"llama"))
        .kv("a.u32", 4, 7u32.to_le_bytes().to_vec())
        .kv(
            "a.list",
            9,
            [
                8u32.to_le_bytes().to_vec(),
                2u64.to_le_bytes().to_vec(),
                string(b"x"),
                string(b"yz"),
            ]
            .concat(),
        )
        .tensor("w", &[2, 3], GgmlType::F32, &[0u8; 24])
        .tensor("q", &[32], GgmlType::Q4_0, &q4)
        .tensor("b", &[3], GgmlType::F32, &[1u8; 12])
        .bytes()
}

/// Values of `t` as lowbit reads them: dequantized, or the plain dtype's elements as f32.
fn values(file: &[u8], t: &GgufTensor) -> Vec<f32> {
    let raw = &file[t.range.start as usize..t.range.end as usize];
    match t.ggml_type.plain_dtype() {
        Some(d) => crate::dtype::to_f32(d, raw),
        None => dequantize(t.ggml_type, raw).expect("a supported type"),
    }
}

#[test]
fn every_type_dequantizes_bit_for_bit_as_the_gguf_package_does() {
    let f = read(VECTORS).unwrap();
    assert_eq!(f.version, 3);
    let mut checked = Vec::new();
    for t in f.tensors.iter().filter(|t| !t.name.ends_with(".expected")) {
        let want = f
            .tensors
            .iter()
            .find(|e| e.name == format!("{}.expected", t.name))
            .unwrap();
        assert_eq!(want.ggml_type, GgmlType::F32);
        assert_eq!(t.shape, want.shape, "{}", t.name);
        assert_eq!(t.name, t.ggml_type.name().to_lowercase());
        let (got, want) = (values(VECTORS, t), values(VECTORS, want));
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g.to_bits(),
                w.to_bits(),
                "{} element {i}: {g} vs {w}",
                t.name
            );
        }
        checked.push(t.ggml_type);
    }
    use GgmlType::*;
    for ty in [
        Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, BF16, Q2K, Q3K, Q4K, Q5K, Q6K, Iq4Nl, Iq4Xs,
    ] {
        assert!(checked.contains(&ty), "{ty} has no vectors");
    }
    // Row-major shapes: GGUF's [32, 4] is 4 rows of 32.
    let q4 = f.tensors.iter().find(|t| t.name == "q4_0").unwrap();
    assert_eq!(q4.shape, vec![4, 32]);
}

#[test]
fn metadata_of_every_value_type_is_read() {
    let f = read(VECTORS).unwrap();
    let get = |k: &str| {
        f.metadata
            .iter()
            .find(|(key, _)| key == k)
            .unwrap()
            .1
            .clone()
    };
    assert_eq!(get("test.u8"), MetaValue::U8(200));
    assert_eq!(get("test.i8"), MetaValue::I8(-100));
    assert_eq!(get("test.u16"), MetaValue::U16(60000));
    assert_eq!(get("test.i16"), MetaValue::I16(-30000));
    assert_eq!(get("test.u32"), MetaValue::U32(4_000_000_000));
    assert_eq!(get("test.i32"), MetaValue::I32(-2_000_000_000));
    assert_eq!(get("test.f32"), MetaValue::F32(0.1));
    assert_eq!(get("test.bool"), MetaValue::Bool(true));
    assert_eq!(get("test.string"), MetaValue::String("héllo".into()));
    assert_eq!(get("test.u64"), MetaValue::U64((1 << 63) + 5));
    assert_eq!(get("test.i64"), MetaValue::I64(-(1 << 62)));
    assert_eq!(get("test.f64"), MetaValue::F64(0.1));
    assert_eq!(
        get("test.array_i32"),
        MetaValue::Array {
            element_type: 5,
            len: 3
        }
    );
    assert_eq!(
        get("test.array_str"),
        MetaValue::Array {
            element_type: 8,
            len: 3
        }
    );
    assert_eq!(
        get("test.nested"),
        MetaValue::Array {
            element_type: 9,
            len: 2
        }
    );
    assert_eq!(get("test.f32").to_text().unwrap(), "0.1");
    assert_eq!(get("test.nested").to_text(), None);
}

#[test]
fn q8_k_is_d_times_q() {
    // gguf-py has no Q8_K dequantizer: ggml's dequantize_row_q8_K is y = d * q.
    let mut block = 0.5f32.to_le_bytes().to_vec();
    block.extend((0..256).map(|i| (i as u8).wrapping_mul(7)));
    block.extend([0u8; 32]);
    let v = dequantize(GgmlType::Q8K, &block).unwrap();
    for (i, x) in v.iter().enumerate() {
        assert_eq!(*x, 0.5 * ((i as u8).wrapping_mul(7) as i8) as f32);
    }
}

#[test]
fn a_hand_built_file_reads_with_offsets_shapes_and_alignment() {
    let file = small();
    let f = read(file.as_slice()).unwrap();
    assert_eq!(f.alignment, 32);
    assert_eq!(f.data_start % 32, 0);
    let names: Vec<_> = f
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), t.shape.clone()))
        .collect();
    assert_eq!(names, [("w", vec![3, 2]), ("q", vec![32]), ("b", vec![3])]);
    assert_eq!(
        values(&file, &f.tensors[1]),
        [[-7.0f32; 16], [-6.0; 16]].concat()
    );
    assert_eq!(
        f.metadata[2].1,
        MetaValue::Array {
            element_type: 8,
            len: 2
        }
    );
    // A custom alignment moves the data section.
    let mut w = Writer::new().kv(ALIGNMENT_KEY, 4, 64u32.to_le_bytes().to_vec());
    w.alignment = 64;
    let file = w.tensor("x", &[1], GgmlType::F32, &[0; 4]).bytes();
    let f = read(file.as_slice()).unwrap();
    assert_eq!((f.alignment, f.data_start % 64), (64, 0));
    assert_eq!(f.tensors[0].range.end, file.len() as u64);
}

fn refused(file: &[u8], needle: &str) {
    match read(file) {
        Ok(_) => panic!("accepted; expected an error saying {needle:?}"),
        Err(e) => assert!(e.to_string().contains(needle), "{e} (wanted {needle:?})"),
    }
}

#[test]
fn every_truncation_of_a_small_file_is_a_named_error() {
    let file = small();
    for n in 0..file.len() {
        let e = read(&file[..n]).expect_err("a truncated file");
        assert!(e.to_string().contains("GGUF"), "{n}: {e}");
    }
}

#[test]
fn hostile_headers_are_refused_by_name() {
    let with = |f: &dyn Fn(&mut Writer)| {
        let mut w = Writer::new().tensor("t", &[4], GgmlType::F32, &[0; 16]);
        f(&mut w);
        w.bytes()
    };
    // Counts far beyond the file.
    let mut file = small();
    file[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    refused(&file, "claims 18446744073709551615 tensors");
    let mut file = small();
    file[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
    refused(&file, "metadata key/values");
    // A string longer than the file.
    let mut file = small();
    file[24..32].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
    refused(&file, "runs past the end");
    refused(
        &with(&|w| {
            w.kv.push(("s".into(), 8, (1u64 << 50).to_le_bytes().to_vec()))
        }),
        "runs past the end",
    );
    // An array claiming more elements than bytes.
    let arr = [
        4u32.to_le_bytes().to_vec(),
        (1u64 << 60).to_le_bytes().to_vec(),
    ]
    .concat();
    refused(
        &with(&|w| w.kv.push(("a".into(), 9, arr.clone()))),
        "array elements",
    );
    // Arrays nested too deep.
    let mut deep = Vec::new();
    for _ in 0..20 {
        deep.extend(9u32.to_le_bytes());
        deep.extend(1u64.to_le_bytes());
    }
    refused(
        &with(&|w| w.kv.push(("n".into(), 9, deep.clone()))),
        "nests arrays",
    );
    refused(
        &with(&|w| w.kv.push(("x".into(), 13, vec![0; 8]))),
        "unknown value type 13",
    );
    refused(&with(&|w| w.infos[0].1 = vec![1; 9]), "9 dimensions");
    refused(&with(&|w| w.infos[0].1 = vec![u64::MAX, 2]), "overflow");
    refused(
        &with(&|w| w.infos[0] = ("t".into(), vec![1 << 62], GgmlType::F64 as u32, 0)),
        "overflow 64-bit byte counts",
    );
    refused(&with(&|w| w.infos[0].2 = 99), "unknown ggml type 99");
    refused(&with(&|w| w.infos[0].3 = 1 << 40), "lie outside");
    refused(
        &with(&|w| w.infos[0].3 = 4),
        "not a multiple of the alignment",
    );
    refused(
        &with(&|w| w.infos[0].2 = GgmlType::Q4_0 as u32),
        "whole number of Q4_0 blocks",
    );
    refused(&with(&|w| w.version = 1), "version 1");
    refused(&with(&|w| w.version = 3u32.swap_bytes()), "big-endian");
    refused(&with(&|w| w.version = 7), "version 7");
    refused(
        &with(&|w| {
            w.kv.push((ALIGNMENT_KEY.into(), 4, 24u32.to_le_bytes().to_vec()))
        }),
        "power of two",
    );
    refused(
        &with(&|w| {
            w.kv.push((ALIGNMENT_KEY.into(), 4, 0u32.to_le_bytes().to_vec()))
        }),
        "power of two",
    );
    let twice = |w: &mut Writer| {
        w.kv.push(("k".into(), 0, vec![1]));
        w.kv.push(("k".into(), 0, vec![2]));
    };
    refused(&with(&twice), "appears twice");
    // Overlapping tensors, and two of one name.
    let file = Writer::new()
        .tensor("a", &[8], GgmlType::F32, &[0; 32])
        .tensor("b", &[8], GgmlType::F32, &[0; 32])
        .bytes();
    let mut w = Writer::new()
        .tensor("a", &[8], GgmlType::F32, &[0; 32])
        .tensor("b", &[8], GgmlType::F32, &[0; 32]);
    w.infos[1].3 = 0;
    refused(&w.bytes(), "overlap those of tensor 'a'");
    assert!(read(file.as_slice()).is_ok());
    w.infos[1].3 = 32;
    w.infos[1].0 = "a".into();
    refused(&w.bytes(), "two tensors have this name");
    refused(b"GGUB\x03\0\0\0", "does not begin with GGUF");
}

#[test]
fn mutations_of_a_valid_file_never_panic_nor_escape_the_file() {
    let file = VECTORS.to_vec();
    let header = read(VECTORS).unwrap().data_start;
    let mut rng = Rng::new(7);
    let mut accepted = 0;
    for _ in 0..3000 {
        let mut m = file.clone();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(header.min(m.len() as u64)) as usize;
            match rng.below(5) {
                0 => m[at] = rng.next_u64() as u8,
                1 => m[at] ^= 1 << rng.below(8),
                2 => m[at] = [0, 0xFF, 0x7F, 0x80][rng.below(4) as usize],
                3 => m.insert(at, rng.next_u64() as u8),
                _ => {
                    m.remove(at);
                }
            }
        }
        if rng.below(10) == 0 {
            m.truncate(rng.below(m.len() as u64) as usize);
        }
        if let Ok(f) = read(m.as_slice()) {
            accepted += 1;
            for t in &f.tensors {
                assert!(t.range.end <= m.len() as u64);
                let blocks = t.numel() / t.ggml_type.block_len() as u64;
                assert_eq!(
                    t.range.end - t.range.start,
                    blocks * t.ggml_type.block_bytes() as u64
                );
                if supported(t.ggml_type) {
                    let v = dequantize(
                        t.ggml_type,
                        &m[t.range.start as usize..t.range.end as usize],
                    );
                    assert_eq!(v.unwrap().len() as u64, t.numel());
                }
            }
        }
    }
    assert!(accepted > 100, "only {accepted} mutations were accepted");
}

#[test]
fn the_header_is_read_as_a_growing_prefix() {
    // A file whose header is longer than the first read (64 KiB): a long string value.
    let long = vec![b'x'; 200_000];
    let file = Writer::new()
        .kv("long", 8, string(&long))
        .tensor("t", &[4], GgmlType::F32, &[0; 16])
        .bytes();
    let f = read(file.as_slice()).unwrap();
    assert_eq!(
        f.metadata[0].1,
        MetaValue::String(String::from_utf8(long).unwrap())
    );
    assert_eq!(f.tensors[0].range.end, file.len() as u64);
}
