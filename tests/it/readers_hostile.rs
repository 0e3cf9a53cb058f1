//! The readers against hostile input: round trips through the writers, a corpus of broken headers
//! that must be refused with the right error kind and the tensor named, and seeded random bytes and
//! mutations of valid files that must never panic and never yield a header pointing outside the file.

use std::collections::BTreeMap;

use lowbit::dtype::DType;
use lowbit::io::safetensors::{self, PlannedTensor, MAX_HEADER_LEN};
use lowbit::io::{npy, MAX_RANK};
use lowbit::rng::Rng;
use lowbit::Error;

// ---------------------------------------------------------------------------------------------
// Helpers

/// A safetensors file: `encode_header` followed by seeded random data in the planned order.
fn safetensors_file(
    tensors: &[PlannedTensor],
    meta: &BTreeMap<String, String>,
    rng: &mut Rng,
) -> Vec<u8> {
    let mut file = safetensors::encode_header(tensors, meta).unwrap();
    let data_len: u64 = tensors.iter().map(|t| t.byte_len().unwrap()).sum();
    for _ in 0..data_len {
        file.push(rng.next_u64() as u8);
    }
    file
}

/// A file from a raw JSON header and `data_len` bytes of data.
fn file_with_json(json: &str, data_len: usize) -> Vec<u8> {
    let mut f = (json.len() as u64).to_le_bytes().to_vec();
    f.extend_from_slice(json.as_bytes());
    f.resize(f.len() + data_len, 0);
    f
}

fn random_shape(rng: &mut Rng) -> Vec<usize> {
    let rank = rng.below(4) as usize;
    (0..rank).map(|_| rng.below(5) as usize).collect()
}

/// What every accepted header must satisfy, whatever the input was.
fn check_safetensors_invariants(file: &[u8], h: &safetensors::Header) {
    let len = file.len() as u64;
    assert!(h.data_start >= 8 && h.data_start <= len);
    let mut ranges = Vec::new();
    for (i, t) in h.tensors.iter().enumerate() {
        assert!(t.start <= t.end, "{}: start after end", t.name);
        assert!(h.data_start + t.end <= len, "{}: past the end", t.name);
        assert_eq!(
            t.end - t.start,
            t.numel() * t.dtype.size() as u64,
            "{}",
            t.name
        );
        assert!(t.shape.len() <= MAX_RANK);
        assert_eq!(
            safetensors::tensor_bytes(file, h, i).len() as u64,
            t.end - t.start
        );
        if t.start < t.end {
            ranges.push((t.start, t.end));
        }
    }
    for pair in h.tensors.windows(2) {
        assert!(pair[0].start <= pair[1].start, "not in file order");
    }
    for w in ranges.windows(2) {
        assert!(w[0].1 <= w[1].0, "overlapping ranges accepted");
    }
    let names: std::collections::BTreeSet<_> = h.tensors.iter().map(|t| &t.name).collect();
    assert_eq!(names.len(), h.tensors.len(), "duplicate names accepted");
}

fn check_npy_invariants(file: &[u8], h: &npy::NpyHeader) {
    assert!(h.data_start <= file.len());
    assert_eq!(file.len() - h.data_start, h.byte_len());
    assert!(h.shape.len() <= MAX_RANK);
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Invalid,
    Unsupported,
}

fn kind_of(e: &Error) -> Option<Kind> {
    match e {
        Error::InvalidInput { .. } => Some(Kind::Invalid),
        Error::Unsupported { .. } => Some(Kind::Unsupported),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Round trips

#[test]
fn safetensors_round_trip_every_dtype() {
    let mut rng = Rng::new(11);
    for round in 0..20 {
        let tensors: Vec<PlannedTensor> = DType::ALL
            .iter()
            .enumerate()
            .map(|(i, &dtype)| PlannedTensor {
                name: format!("layer.{round}.{i}.{}", dtype.name().to_lowercase()),
                dtype,
                shape: random_shape(&mut rng),
            })
            .collect();
        let mut meta = BTreeMap::new();
        if round % 2 == 0 {
            meta.insert("format".to_string(), "pt".to_string());
            meta.insert("quote \"and\" unicode é".to_string(), "\n\\".to_string());
        }
        let file = safetensors_file(&tensors, &meta, &mut rng);
        let h = safetensors::read_header(&file).unwrap();
        assert_eq!(h.metadata, meta);
        assert_eq!(h.data_start % 8, 0);
        check_safetensors_invariants(&file, &h);
        // File order is the planned order except that zero-sized tensors may move among tensors
        // sharing their offset; compare by name.
        assert_eq!(h.tensors.len(), tensors.len());
        let mut offset = 0u64;
        for t in &tensors {
            let i = h.position(&t.name).unwrap();
            let e = &h.tensors[i];
            assert_eq!((e.dtype, &e.shape), (t.dtype, &t.shape));
            assert_eq!(e.start, offset);
            offset += t.byte_len().unwrap();
            assert_eq!(e.end, offset);
        }
        assert_eq!(h.data_start + offset, file.len() as u64);
        let params: u64 = tensors
            .iter()
            .map(|t| t.shape.iter().product::<usize>() as u64)
            .sum();
        assert_eq!(h.total_params(), params);
    }
}

#[test]
fn npy_round_trip_every_npy_dtype() {
    let mut rng = Rng::new(12);
    for dtype in DType::ALL {
        for _ in 0..10 {
            let shape = random_shape(&mut rng);
            let Some(_) = npy::descr(dtype) else {
                assert!(matches!(
                    npy::encode_header(dtype, &shape),
                    Err(Error::Unsupported { .. })
                ));
                continue;
            };
            let mut file = npy::encode_header(dtype, &shape).unwrap();
            let n: usize = shape.iter().product();
            file.resize(file.len() + n * dtype.size(), 0xA5);
            let h = npy::read_header(&file).unwrap();
            assert_eq!((h.dtype, &h.shape), (dtype, &shape));
            assert_eq!(h.data_start % 64, 0);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The corpus of broken safetensors headers

struct Case {
    name: &'static str,
    file: Vec<u8>,
    kind: Kind,
    /// The tensor the error must name, if any.
    tensor: Option<&'static str>,
    /// A fragment the message must contain.
    says: &'static str,
}

fn case(
    name: &'static str,
    json: &str,
    data_len: usize,
    kind: Kind,
    tensor: Option<&'static str>,
    says: &'static str,
) -> Case {
    Case {
        name,
        file: file_with_json(json, data_len),
        kind,
        tensor,
        says,
    }
}

fn broken_safetensors() -> Vec<Case> {
    use Kind::*;
    let ok_a = r#""a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#;
    let mut cases = Vec::new();
    for len in 0..8 {
        cases.push(Case {
            name: "truncated prefix",
            file: vec![0; len],
            kind: Invalid,
            tensor: None,
            says: "8-byte",
        });
    }
    cases.push(Case {
        name: "huge header length",
        file: {
            let mut f = u64::MAX.to_le_bytes().to_vec();
            f.extend_from_slice(b"{}");
            f
        },
        kind: Invalid,
        tensor: None,
        says: "limit",
    });
    cases.push(Case {
        name: "header length just over the limit",
        file: (MAX_HEADER_LEN + 1).to_le_bytes().to_vec(),
        kind: Invalid,
        tensor: None,
        says: "limit",
    });
    cases.push(Case {
        name: "header length past the end",
        file: {
            let mut f = 100u64.to_le_bytes().to_vec();
            f.extend_from_slice(b"{}");
            f
        },
        kind: Invalid,
        tensor: None,
        says: "past the end",
    });
    cases.push(Case {
        name: "header not UTF-8",
        file: {
            let mut f = 4u64.to_le_bytes().to_vec();
            f.extend_from_slice(b"{\"\xff}");
            f
        },
        kind: Invalid,
        tensor: None,
        says: "UTF-8",
    });
    cases.extend([
        case("JSON array", "[1,2]", 0, Invalid, None, "JSON object"),
        case("JSON string", "\"a\"", 0, Invalid, None, "JSON object"),
        case("JSON null", "null", 0, Invalid, None, "JSON object"),
        case("empty header", "", 0, Invalid, None, "JSON"),
        case("garbage after the object", "{} x", 0, Invalid, None, "trailing"),
        case("NUL padding", "{}\0\0", 0, Invalid, None, "JSON"),
        case("entry not an object", r#"{"w":3}"#, 0, Invalid, Some("w"), "tensor entry"),
        case("missing dtype", r#"{"w":{"shape":[1],"data_offsets":[0,1]}}"#, 1, Invalid, Some("w"), "dtype"),
        case("missing shape", r#"{"w":{"dtype":"U8","data_offsets":[0,1]}}"#, 1, Invalid, Some("w"), "shape"),
        case("missing offsets", r#"{"w":{"dtype":"U8","shape":[1]}}"#, 1, Invalid, Some("w"), "data_offsets"),
        case("dtype not a string", r#"{"w":{"dtype":4,"shape":[1],"data_offsets":[0,1]}}"#, 1, Invalid, Some("w"), "string"),
        case("unknown dtype", r#"{"w":{"dtype":"F4","shape":[2],"data_offsets":[0,1]}}"#, 1, Unsupported, Some("w"), "F4"),
        case("negative dim", r#"{"w":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}}"#, 1, Invalid, Some("w"), "-1"),
        case("fractional dim", r#"{"w":{"dtype":"U8","shape":[1.5],"data_offsets":[0,1]}}"#, 1, Invalid, Some("w"), "1.5"),
        case("dim too large for u64", r#"{"w":{"dtype":"U8","shape":[1e30],"data_offsets":[0,1]}}"#, 1, Invalid, Some("w"), "shape"),
        case("shape not an array", r#"{"w":{"dtype":"U8","shape":"1","data_offsets":[0,1]}}"#, 1, Invalid, Some("w"), "shape"),
        case("element count overflows", r#"{"w":{"dtype":"U8","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,1]}}"#, 1, Invalid, Some("w"), "overflows"),
        case("byte length overflows", r#"{"w":{"dtype":"F64","shape":[4294967296,536870912],"data_offsets":[0,1]}}"#, 1, Invalid, Some("w"), "byte length"),
        case("one offset", r#"{"w":{"dtype":"U8","shape":[1],"data_offsets":[0]}}"#, 1, Invalid, Some("w"), "data_offsets"),
        case("three offsets", r#"{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1,2]}}"#, 2, Invalid, Some("w"), "data_offsets"),
        case("offset a string", r#"{"w":{"dtype":"U8","shape":[1],"data_offsets":["0",1]}}"#, 1, Invalid, Some("w"), "string"),
        case("negative offset", r#"{"w":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}}"#, 1, Invalid, Some("w"), "-1"),
        case("start after end", r#"{"w":{"dtype":"U8","shape":[1],"data_offsets":[2,1]}}"#, 4, Invalid, Some("w"), "start after end"),
        case("end past the file", r#"{"w":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}"#, 3, Invalid, Some("w"), "past the end"),
        case("wrong byte length", r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#, 8, Invalid, Some("w"), "needs 8"),
        case("overlap", &format!(r#"{{{ok_a},"b":{{"dtype":"U8","shape":[2],"data_offsets":[7,9]}}}}"#), 9, Invalid, Some("b"), "overlap"),
        case("overlap, listed first", &format!(r#"{{"b":{{"dtype":"U8","shape":[2],"data_offsets":[7,9]}},{ok_a}}}"#), 9, Invalid, Some("b"), "'a'"),
        case("identical ranges", &format!(r#"{{{ok_a},"b":{{"dtype":"I32","shape":[2],"data_offsets":[0,8]}}}}"#), 8, Invalid, Some("b"), "overlap"),
        case("duplicate name", &format!(r#"{{{ok_a},{ok_a}}}"#), 8, Invalid, Some("a"), "duplicate"),
        case("duplicate field", r#"{"w":{"dtype":"U8","shape":[1],"shape":[1],"data_offsets":[0,1]}}"#, 1, Invalid, Some("w"), "duplicate"),
        case("duplicate __metadata__", r#"{"__metadata__":{},"__metadata__":{}}"#, 0, Invalid, None, "duplicate"),
        case("metadata value a number", r#"{"__metadata__":{"k":1}}"#, 0, Invalid, None, "'k'"),
        case("metadata value an object", r#"{"__metadata__":{"k":{}}}"#, 0, Invalid, None, "'k'"),
        case("metadata an array", r#"{"__metadata__":["k"]}"#, 0, Invalid, None, "__metadata__"),
        case("metadata duplicate key", r#"{"__metadata__":{"k":"1","k":"2"}}"#, 0, Invalid, None, "duplicate"),
        case("too many dims", &format!(r#"{{"w":{{"dtype":"U8","shape":[{}],"data_offsets":[0,1]}}}}"#, vec!["1"; MAX_RANK + 1].join(",")), 1, Invalid, Some("w"), "dimensions"),
    ]);
    cases
}

#[test]
fn broken_safetensors_headers_are_refused_with_the_right_error() {
    for c in broken_safetensors() {
        let err = match safetensors::read_header(&c.file) {
            Ok(h) => panic!("case '{}' was accepted: {h:?}", c.name),
            Err(e) => e,
        };
        assert_eq!(kind_of(&err), Some(c.kind), "case '{}': {err}", c.name);
        let message = err.to_string();
        assert!(
            message.contains(c.says),
            "case '{}': message lacks {:?}: {message}",
            c.name,
            c.says
        );
        match c.tensor {
            Some(t) => assert!(
                message.contains(&format!("tensor '{t}'")),
                "case '{}' names no tensor: {message}",
                c.name
            ),
            None => assert!(
                !message.contains("tensor '"),
                "case '{}' names a tensor: {message}",
                c.name
            ),
        }
    }
}

#[test]
fn the_valid_neighbours_of_the_corpus_are_accepted() {
    // Each broken case differs from a valid file in one thing; the valid ones must pass, or the
    // corpus would only show that the reader refuses everything.
    let valid = [
        (
            r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
            8,
        ),
        (
            r#"{"w":{"dtype":"U8","shape":[0,3],"data_offsets":[0,0]}}"#,
            0,
        ),
        (r#"{"w":{"dtype":"U8","shape":[],"data_offsets":[0,1]}}"#, 1),
        (
            r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}}"#,
            4,
        ),
        (
            r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"z":{"dtype":"U8","shape":[0],"data_offsets":[1,1]}}"#,
            2,
        ),
        (r#"{"__metadata__":{"k":"v"}}   "#, 0),
        (r#"{}"#, 0),
    ];
    for (json, data_len) in valid {
        let file = file_with_json(json, data_len);
        let h = safetensors::read_header(&file).unwrap_or_else(|e| panic!("{json}: {e}"));
        check_safetensors_invariants(&file, &h);
    }
}

// ---------------------------------------------------------------------------------------------
// Random bytes and mutations

/// One random edit: overwrite a byte, flip a bit, truncate, insert or delete a run of bytes.
/// Inserted bytes are drawn half the time from JSON/Python punctuation and digits so that edits
/// reach the parsers' deeper paths rather than dying at the first character.
fn mutate(bytes: &mut Vec<u8>, rng: &mut Rng) {
    const SYNTAX: &[u8] = b"{}[](),:\"' 0123456789-.eEL\\";
    let pick = |rng: &mut Rng| {
        if rng.below(2) == 0 {
            SYNTAX[rng.below(SYNTAX.len() as u64) as usize]
        } else {
            rng.next_u64() as u8
        }
    };
    let len = bytes.len() as u64;
    match rng.below(5) {
        0 if len > 0 => {
            let i = rng.below(len) as usize;
            bytes[i] = pick(rng);
        }
        1 if len > 0 => {
            let i = rng.below(len) as usize;
            bytes[i] ^= 1 << rng.below(8);
        }
        2 => bytes.truncate(rng.below(len + 1) as usize),
        3 => {
            let at = rng.below(len + 1) as usize;
            let run: Vec<u8> = (0..1 + rng.below(4)).map(|_| pick(rng)).collect();
            bytes.splice(at..at, run);
        }
        _ if len > 0 => {
            let at = rng.below(len) as usize;
            let end = (at + 1 + rng.below(4) as usize).min(bytes.len());
            bytes.drain(at..end);
        }
        _ => {}
    }
}

fn small_valid_safetensors(rng: &mut Rng) -> Vec<u8> {
    let tensors: Vec<PlannedTensor> = (0..1 + rng.below(3))
        .map(|i| PlannedTensor {
            name: format!("t{i}"),
            dtype: DType::ALL[rng.below(DType::ALL.len() as u64) as usize],
            shape: random_shape(rng),
        })
        .collect();
    let mut meta = BTreeMap::new();
    if rng.below(2) == 0 {
        meta.insert("format".to_string(), "pt".to_string());
    }
    safetensors_file(&tensors, &meta, rng)
}

#[test]
fn random_bytes_never_panic_safetensors() {
    let mut rng = Rng::new(21);
    for _ in 0..3000 {
        let len = rng.below(64) as usize;
        let body: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        // Half the time a plausible length prefix, so the bytes reach the JSON parser.
        let file = if rng.below(2) == 0 {
            let mut f = (rng.below(len as u64 + 1)).to_le_bytes().to_vec();
            f.extend_from_slice(&body);
            f
        } else {
            body
        };
        if let Ok(h) = safetensors::read_header(&file) {
            check_safetensors_invariants(&file, &h);
        }
    }
}

#[test]
fn mutated_safetensors_never_panic_nor_escape_the_file() {
    let mut rng = Rng::new(22);
    let (mut accepted, mut refused) = (0, 0);
    for case in 0..6000 {
        let valid = small_valid_safetensors(&mut rng);
        let mut file = valid.clone();
        let edits = 1 + rng.below(3);
        if case % 2 == 0 {
            // Edit the JSON only and fix the length prefix, to exercise the parser and validator.
            let header_len = u64::from_le_bytes(valid[..8].try_into().unwrap()) as usize;
            let mut json = valid[8..8 + header_len].to_vec();
            for _ in 0..edits {
                mutate(&mut json, &mut rng);
            }
            file = (json.len() as u64).to_le_bytes().to_vec();
            file.extend_from_slice(&json);
            file.extend_from_slice(&valid[8 + header_len..]);
        } else {
            for _ in 0..edits {
                mutate(&mut file, &mut rng);
            }
        }
        match safetensors::read_header(&file) {
            Ok(h) => {
                check_safetensors_invariants(&file, &h);
                accepted += 1;
            }
            Err(e) => {
                assert!(kind_of(&e).is_some(), "unexpected error kind: {e:?}");
                refused += 1;
            }
        }
    }
    eprintln!("safetensors mutations: accepted {accepted}, refused {refused}");
    // Both outcomes must occur, or the test exercises only one side of the reader.
    assert!(
        accepted > 100 && refused > 1000,
        "accepted {accepted}, refused {refused}"
    );
}

fn small_valid_npy(rng: &mut Rng) -> Vec<u8> {
    let dtypes: Vec<DType> = DType::ALL
        .into_iter()
        .filter(|d| npy::descr(*d).is_some())
        .collect();
    let dtype = dtypes[rng.below(dtypes.len() as u64) as usize];
    let shape = random_shape(rng);
    let mut file = npy::encode_header(dtype, &shape).unwrap();
    let n: usize = shape.iter().product();
    file.extend((0..n * dtype.size()).map(|_| rng.next_u64() as u8));
    file
}

#[test]
fn random_bytes_never_panic_npy() {
    let mut rng = Rng::new(31);
    for _ in 0..3000 {
        let len = rng.below(96) as usize;
        let mut file: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        // Most of the time a valid magic and version, so the bytes reach the dict parser.
        if rng.below(4) != 0 && file.len() >= 8 {
            file[..6].copy_from_slice(b"\x93NUMPY");
            file[6] = 1 + rng.below(3) as u8;
            file[7] = 0;
        }
        if let Ok(h) = npy::read_header(&file) {
            check_npy_invariants(&file, &h);
        }
    }
}

#[test]
fn mutated_npy_never_panic_nor_escape_the_file() {
    let mut rng = Rng::new(32);
    let (mut accepted, mut refused) = (0, 0);
    for case in 0..6000 {
        let valid = small_valid_npy(&mut rng);
        let mut file = valid.clone();
        let edits = 1 + rng.below(3);
        if case % 2 == 0 {
            // Edit the dict only and fix the 16-bit length (the writer emits version 1.0 here).
            let header_len = u16::from_le_bytes([valid[8], valid[9]]) as usize;
            let mut dict = valid[10..10 + header_len].to_vec();
            for _ in 0..edits {
                mutate(&mut dict, &mut rng);
            }
            file = valid[..8].to_vec();
            file.extend_from_slice(&(dict.len() as u16).to_le_bytes());
            file.extend_from_slice(&dict);
            file.extend_from_slice(&valid[10 + header_len..]);
        } else {
            for _ in 0..edits {
                mutate(&mut file, &mut rng);
            }
        }
        match npy::read_header(&file) {
            Ok(h) => {
                check_npy_invariants(&file, &h);
                accepted += 1;
            }
            Err(e) => {
                assert!(kind_of(&e).is_some(), "unexpected error kind: {e:?}");
                refused += 1;
            }
        }
    }
    eprintln!("npy mutations: accepted {accepted}, refused {refused}");
    assert!(
        accepted > 100 && refused > 1000,
        "accepted {accepted}, refused {refused}"
    );
}

// ---------------------------------------------------------------------------------------------
// Cross-check with the Python `safetensors` and `numpy` packages (run by hand: it needs a Python
// with both installed, e.g. `python3 -m venv /tmp/v && /tmp/v/bin/pip install safetensors numpy`,
// then `LOWBIT_PYTHON=/tmp/v/bin/python cargo test --test readers_hostile -- --ignored`).

const PYTHON_CHECK: &str = r#"
import sys, numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file
d = sys.argv[1]
with safe_open(d + "/ours.safetensors", framework="numpy") as f:
    assert f.metadata() == {"format": "pt", "note": "written by lowbit"}, f.metadata()
    assert sorted(f.keys()) == sorted(["w.f32", "w.f16", "w.i64", "w.u8", "w.bool", "w.bf16", "w.f8", "empty", "scalar"]), f.keys()
    assert (f.get_tensor("w.f32") == np.arange(6, dtype=np.float32).reshape(2, 3)).all()
    assert (f.get_tensor("w.f16") == np.arange(4, dtype=np.float16)).all()
    assert (f.get_tensor("w.i64") == -np.arange(3, dtype=np.int64)).all()
    assert (f.get_tensor("w.u8") == np.arange(5, dtype=np.uint8)).all()
    assert f.get_tensor("w.bool").tolist() == [True, False, True]
    assert f.get_tensor("empty").shape == (0, 4)
    assert f.get_tensor("scalar").shape == ()
    assert f.get_slice("w.bf16").get_dtype() == "BF16" and f.get_slice("w.bf16").get_shape() == [2, 2]
    assert f.get_slice("w.f8").get_dtype() == "F8_E4M3"
for name, dt in [("f4", "<f4"), ("f2", "<f2"), ("i8", "<i8"), ("b1", "|b1")]:
    a = np.load(d + "/ours_" + name + ".npy")
    assert a.dtype == np.dtype(dt) and a.shape == (2, 3), (name, a.dtype, a.shape)
    assert (a == np.arange(6).reshape(2, 3).astype(dt)).all(), name
save_file({"b": np.ones((3, 2), np.float16), "a": np.zeros(7, np.int32), "e": np.zeros((0,), np.float64)},
          d + "/theirs.safetensors", metadata={"k": "v"})
np.save(d + "/theirs_f4.npy", np.arange(12, dtype=np.float32).reshape(3, 4))
np.save(d + "/theirs_u2.npy", np.arange(5, dtype=np.uint16))
np.save(d + "/theirs_b1.npy", np.array(True))
np.save(d + "/theirs_i1.npy", np.zeros((2, 0, 3), np.int8))
np.save(d + "/theirs_fortran.npy", np.asfortranarray(np.ones((2, 3), np.float32)))
np.save(d + "/theirs_be.npy", np.ones(3, ">f4"))
print("python ok")
"#;

#[test]
#[ignore = "needs LOWBIT_PYTHON pointing at a Python with safetensors and numpy"]
fn python_reads_what_we_write_and_we_read_what_it_writes() {
    let python = std::env::var("LOWBIT_PYTHON").expect("set LOWBIT_PYTHON");
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);

    let planned = |name: &str, dtype, shape: &[usize]| PlannedTensor {
        name: name.to_string(),
        dtype,
        shape: shape.to_vec(),
    };
    let tensors = [
        (
            planned("w.f32", DType::F32, &[2, 3]),
            (0..6)
                .flat_map(|i| (i as f32).to_le_bytes())
                .collect::<Vec<u8>>(),
        ),
        (
            planned("w.f16", DType::F16, &[4]),
            (0..4)
                .flat_map(|i| half::f16::from_f32(i as f32).to_le_bytes())
                .collect(),
        ),
        (
            planned("w.i64", DType::I64, &[3]),
            (0..3).flat_map(|i: i64| (-i).to_le_bytes()).collect(),
        ),
        (planned("empty", DType::F32, &[0, 4]), vec![]),
        (planned("w.u8", DType::U8, &[5]), (0..5).collect()),
        (planned("w.bool", DType::Bool, &[3]), vec![1, 0, 1]),
        (planned("w.bf16", DType::BF16, &[2, 2]), vec![0; 8]),
        (planned("w.f8", DType::F8E4M3, &[3]), vec![0; 3]),
        (
            planned("scalar", DType::F64, &[]),
            1.5f64.to_le_bytes().to_vec(),
        ),
    ];
    let meta = BTreeMap::from([
        ("format".to_string(), "pt".to_string()),
        ("note".to_string(), "written by lowbit".to_string()),
    ]);
    let plan: Vec<PlannedTensor> = tensors.iter().map(|(t, _)| t.clone()).collect();
    let mut file = safetensors::encode_header(&plan, &meta).unwrap();
    for (_, data) in &tensors {
        file.extend_from_slice(data);
    }
    std::fs::write(path("ours.safetensors"), &file).unwrap();
    for (name, dtype) in [
        ("f4", DType::F32),
        ("f2", DType::F16),
        ("i8", DType::I64),
        ("b1", DType::Bool),
    ] {
        let mut f = npy::encode_header(dtype, &[2, 3]).unwrap();
        for i in 0..6u8 {
            f.extend_from_slice(&match dtype {
                DType::F32 => (i as f32).to_le_bytes().to_vec(),
                DType::F16 => half::f16::from_f32(i as f32).to_le_bytes().to_vec(),
                DType::I64 => (i as i64).to_le_bytes().to_vec(),
                _ => vec![u8::from(i != 0)],
            });
        }
        std::fs::write(path(&format!("ours_{name}.npy")), f).unwrap();
    }

    let out = std::process::Command::new(python)
        .args(["-c", PYTHON_CHECK, dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "python ok");

    let theirs = std::fs::read(path("theirs.safetensors")).unwrap();
    let h = safetensors::read_header(&theirs).unwrap();
    check_safetensors_invariants(&theirs, &h);
    assert_eq!(
        h.metadata,
        BTreeMap::from([("k".to_string(), "v".to_string())])
    );
    let summary: Vec<_> = h
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), t.dtype, t.shape.clone()))
        .collect();
    for expected in [
        ("b", DType::F16, vec![3, 2]),
        ("a", DType::I32, vec![7]),
        ("e", DType::F64, vec![0]),
    ] {
        assert!(summary.contains(&expected), "{summary:?}");
    }
    for (name, dtype, shape) in [
        ("f4", DType::F32, vec![3, 4]),
        ("u2", DType::U16, vec![5]),
        ("b1", DType::Bool, vec![]),
        ("i1", DType::I8, vec![2, 0, 3]),
    ] {
        let f = std::fs::read(path(&format!("theirs_{name}.npy"))).unwrap();
        let h = npy::read_header(&f).unwrap();
        assert_eq!((h.dtype, h.shape), (dtype, shape), "{name}");
    }
    for refused in ["theirs_fortran.npy", "theirs_be.npy"] {
        let f = std::fs::read(path(refused)).unwrap();
        assert!(
            matches!(npy::read_header(&f), Err(Error::Unsupported { .. })),
            "{refused}"
        );
    }
}
