//! Hostile input, deeper: one valid `.lowbit` per codec (every `Method`, plus sequence containers),
//! mutated in every way a damaged or forged file can differ from a good one — single bit flips,
//! truncations (random and at every section boundary), random byte overwrites, damage inside the
//! sections with the checksums left alone or recomputed, the 8-byte header length, and every number
//! and enumerated string of the JSON header and of the manifest inside it (re-serialised with a
//! correct length prefix, so the damage reaches the validators and the codecs).
//!
//! For every mutated file `lowbit::decompress` must return an error that names the file, or a
//! well-formed file of the kind the manifest claims (and, where the damage cannot legitimately
//! change the result, exactly the original output); it must never panic, and the decoding thread
//! must never hold more bytes at once than [`allocation_bound`] allows for that file (a counting
//! global allocator, per thread, so the test runner's threads stay apart). Every case is named (container, mutation,
//! seed, index) in the failure message; the RNG is seeded, so a failure reproduces.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::common::{safetensors_file, weights};
use lowbit::codec::fcm::{ModelSpec, HASH_BITS};
use lowbit::codec::Method;
use lowbit::container::SourceFormat;
use lowbit::dtype::{self, DType};
use lowbit::io::safetensors::{self, MAX_HEADER_LEN};
use lowbit::io::{csv, fvecs, npy};
use lowbit::rng::Rng;
use lowbit::sequence::{self, SequenceKind, SequenceOptions};
use lowbit::Inspection;
use lowbit::{CompressOptions, DecompressSummary, Error, NoProgress, Target};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Allocation accounting: live and peak bytes of the current thread.
// ---------------------------------------------------------------------------------------------

/// Fixed allowance of every decode: parsing the header and the manifest, codec tables (turbo's
/// 8-bit codebooks take 1.6 MB).
const BASE_ALLOWANCE: usize = 4 << 20;

/// How many times the output a file claims a decoder may hold at once: the values as f32 (or the
/// dtype, if wider), working copies, the tensor in its dtype and the output buffer. (The transform
/// decoder holds about 5.3 times; the others 3 or less.)
const OUTPUT_FACTOR: usize = 8;

/// The most bytes the decoding thread may hold at once while it decodes (or inspects) `file`:
/// [`BASE_ALLOWANCE`] + twice the file + [`OUTPUT_FACTOR`] times the output its manifest claims,
/// counted at `max(4, dtype size)` bytes a value, when the container passes its validation
/// (`Container::read`), else nothing (the damage must be found before any output exists).
///
/// The claim itself is bounded by the format (docs/FORMAT.md, "Validation on read"): at most
/// `MAX_ELEMENTS_PER_SECTION_BYTE` (4096) elements per section byte (the decompression-bomb
/// bound) and a header of at most `MAX_HEADER_LEN` inside the file. So a decoder may allocate what
/// a validated record claims before it finds the section too short, but never what a count or
/// length field inside a section says, nor anything for a file that fails validation. Sequence
/// containers also get [`SEQUENCE_MODEL_BOUND`].
fn allocation_bound(file: &[u8]) -> usize {
    let claimed = match lowbit::container::Container::read(file) {
        Ok(c) => {
            let m = &c.manifest;
            let values = m
                .tensors
                .iter()
                .map(|t| t.numel().saturating_mul(t.dtype.size().max(4) as u64))
                .chain(m.groups.iter().map(|g| g.numel().saturating_mul(4)))
                .fold(0u64, u64::saturating_add);
            let tables = match m.source_format {
                SourceFormat::Fasta | SourceFormat::Fastq | SourceFormat::Text => {
                    SEQUENCE_MODEL_BOUND as u64
                }
                _ => 0,
            };
            values
                .saturating_mul(OUTPUT_FACTOR as u64)
                .saturating_add(tables)
        }
        Err(_) => 0,
    };
    usize::try_from(claimed)
        .unwrap_or(usize::MAX)
        .saturating_add(BASE_ALLOWANCE)
        .saturating_add(2 * file.len())
}

/// Sequence containers may also hold the tables of their nucleotide mixture, which the format
/// caps (docs/FORMAT.md, "Sequence sources": 1 to 16 models) and `sequence::fcm` sizes: at most
/// 2^`HASH_BITS` two-byte counts per model (32 MiB), plus the 16 MiB match model. They do not
/// depend on the file's size (a 2 KB FASTA `.lowbit` with the default mixture makes its decoder
/// allocate about 120 MiB).
const SEQUENCE_MODEL_BOUND: usize = 16 * (2 << HASH_BITS) + (4 << 22);

/// While a mutated file is decoded, an allocation that would take the thread above this is
/// refused: the process then aborts ("memory allocation of N bytes failed") after printing the
/// case, instead of letting a decompression bomb exhaust the machine.
const HARD_CAP: usize = 1 << 30;

struct CountingAlloc;

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
    static CAP: Cell<usize> = const { Cell::new(usize::MAX) };
    /// The running case's name, for the message printed when an allocation is refused (a plain
    /// byte array: the allocator must not allocate to print it).
    static LABEL: Cell<[u8; 192]> = const { Cell::new([0; 192]) };
    static LABEL_LEN: Cell<usize> = const { Cell::new(0) };
}

/// Counts `size` more live bytes; false (and nothing counted) when that passes the armed cap.
fn grow(size: usize) -> bool {
    LIVE.try_with(|live| {
        let now = live.get().saturating_add(size);
        if now > CAP.try_with(Cell::get).unwrap_or(usize::MAX) {
            return false;
        }
        live.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
        true
    })
    .unwrap_or(true)
}

fn shrink(size: usize) {
    // Memory freed here may have been allocated by another thread: saturate.
    let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(size)));
}

fn refused() {
    let label = LABEL.try_with(Cell::get).unwrap_or([0; 192]);
    let len = LABEL_LEN.try_with(Cell::get).unwrap_or(0).min(label.len());
    let mut err = std::io::stderr();
    let _ = err.write_all(b"\nmutations: an allocation would pass HARD_CAP in case: ");
    let _ = err.write_all(&label[..len]);
    let _ = err.write_all(b"\n");
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !grow(layout.size()) {
            refused();
            return std::ptr::null_mut();
        }
        let p = unsafe { System.alloc(layout) };
        if p.is_null() {
            shrink(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !grow(layout.size()) {
            refused();
            return std::ptr::null_mut();
        }
        let p = unsafe { System.alloc_zeroed(layout) };
        if p.is_null() {
            shrink(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        shrink(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = layout.size();
        if new_size > old && !grow(new_size - old) {
            refused();
            return std::ptr::null_mut();
        }
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if p.is_null() {
            if new_size > old {
                shrink(new_size - old);
            }
        } else if new_size < old {
            shrink(old - new_size);
        }
        p
    }
}

fn set_label(label: &str) {
    let mut buf = [0u8; 192];
    let n = label.len().min(buf.len());
    buf[..n].copy_from_slice(&label.as_bytes()[..n]);
    LABEL.with(|l| l.set(buf));
    LABEL_LEN.with(|l| l.set(n));
}

/// Runs `f` with the hard cap armed; returns its result (or its panic) and the peak bytes the
/// thread held above what it held before.
fn measured<T>(f: impl FnOnce() -> T) -> (std::thread::Result<T>, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    CAP.with(|c| c.set(base.saturating_add(HARD_CAP)));
    let result = catch_unwind(AssertUnwindSafe(f));
    CAP.with(|c| c.set(usize::MAX));
    (result, PEAK.with(Cell::get).saturating_sub(base))
}

// ---------------------------------------------------------------------------------------------
// Inputs: one small file per codec (smaller than the CLI tests' inputs in `common`, whose
// file builders they use, so that thousands of mutations stay quick).
// ---------------------------------------------------------------------------------------------

/// A small checkpoint with F32/F16/BF16 matrices, a 1-D norm, integer buffers and a zero-sized
/// tensor (the last three are stored exactly whatever the method).
fn mixed_checkpoint() -> Vec<u8> {
    let norm: Vec<f32> = (0..96).map(|i| 1.0 + 0.01 * i as f32).collect();
    let ids: Vec<u8> = (0..21i64).flat_map(|i| i.to_le_bytes()).collect();
    let mask: Vec<u8> = (0..50u8).map(|i| i % 2).collect();
    safetensors_file(&[
        (
            "layer.0.weight",
            DType::F32,
            vec![64, 96],
            dtype::from_f32(DType::F32, &weights(1, 64, 96)),
        ),
        (
            "layer.0.norm",
            DType::F32,
            vec![96],
            dtype::from_f32(DType::F32, &norm),
        ),
        (
            "layer.1.weight",
            DType::F16,
            vec![32, 48],
            dtype::from_f32(DType::F16, &weights(2, 32, 48)),
        ),
        (
            "layer.2.weight",
            DType::BF16,
            vec![40, 32],
            dtype::from_f32(DType::BF16, &weights(3, 40, 32)),
        ),
        ("position_ids", DType::I64, vec![1, 21], ids),
        ("mask", DType::U8, vec![50], mask),
        ("empty", DType::F32, vec![0, 16], Vec::new()),
    ])
}

/// `query`, `key`, `value` of one layer on a shared rank-6 input-side subspace (plus noise), and a
/// norm: the input of a shared-lowrank group.
fn siblings() -> Vec<u8> {
    let (rows, cols, k) = (32, 48, 6);
    let mut rng = Rng::new(11);
    let basis: Vec<f32> = (0..k * cols).map(|_| rng.normal() as f32).collect();
    let mut member = |scale: f32| -> Vec<f32> {
        let coef: Vec<f32> = (0..rows * k).map(|_| rng.normal() as f32).collect();
        (0..rows * cols)
            .map(|idx| {
                let (i, j) = (idx / cols, idx % cols);
                let v: f32 = (0..k).map(|t| coef[i * k + t] * basis[t * cols + j]).sum();
                scale * (v + 0.05 * (k as f32).sqrt() * rng.normal() as f32)
            })
            .collect()
    };
    let (q, kk, v) = (member(0.02), member(0.03), member(0.05));
    let norm: Vec<f32> = (0..cols).map(|i| 1.0 + 0.01 * i as f32).collect();
    let p = "enc.layer.0.attn";
    safetensors_file(&[
        (
            &format!("{p}.query.weight"),
            DType::F32,
            vec![rows, cols],
            dtype::from_f32(DType::F32, &q),
        ),
        (
            &format!("{p}.key.weight"),
            DType::F32,
            vec![rows, cols],
            dtype::from_f32(DType::F32, &kk),
        ),
        (
            &format!("{p}.value.weight"),
            DType::BF16,
            vec![rows, cols],
            dtype::from_f32(DType::BF16, &v),
        ),
        (
            &format!("{p}.norm"),
            DType::F32,
            vec![cols],
            dtype::from_f32(DType::F32, &norm),
        ),
    ])
}

/// `n` vectors of dimension `dim` with decaying variances (a vector dataset).
fn vectors(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n * dim)
        .map(|i| (0.8f64.powi((i % dim) as i32) * rng.normal()) as f32)
        .collect()
}

fn npy_file(values: &[f32], rows: usize, cols: usize) -> Vec<u8> {
    let mut file = npy::encode_header(DType::F32, &[rows, cols]).unwrap();
    file.extend(dtype::from_f32(DType::F32, values));
    file
}

/// A FASTA file with a lower-case run and an N run, so that every stream is non-empty.
fn fasta_file() -> Vec<u8> {
    let mut rng = Rng::new(5);
    let mut out = Vec::new();
    for r in 0..3 {
        out.extend_from_slice(format!(">seq{r} generated record {r}\n").as_bytes());
        let mut bases: Vec<u8> = (0..300).map(|_| b"ACGT"[rng.below(4) as usize]).collect();
        if r == 1 {
            bases[20..60].make_ascii_lowercase();
            bases[100..130].fill(b'N');
        }
        for line in bases.chunks(60) {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
    }
    out
}

fn fastq_file() -> Vec<u8> {
    let mut rng = Rng::new(6);
    let mut out = Vec::new();
    for r in 0..6 {
        let seq: Vec<u8> = (0..50).map(|_| b"ACGTN"[rng.below(5) as usize]).collect();
        let qual: Vec<u8> = (0..50).map(|_| b'!' + rng.below(40) as u8).collect();
        out.extend_from_slice(format!("@read{r}\n").as_bytes());
        out.extend_from_slice(&seq);
        out.extend_from_slice(b"\n+\n");
        out.extend_from_slice(&qual);
        out.push(b'\n');
    }
    out
}

fn text_file() -> Vec<u8> {
    "The quick brown fox jumps over the lazy dog.\n"
        .repeat(12)
        .into_bytes()
}

/// One valid container and what it decodes to.
struct Subject {
    name: &'static str,
    good: Vec<u8>,
    decoded: Vec<u8>,
    /// Per tensor name: its element count and codec tag in the valid file.
    records: BTreeMap<String, (u64, String)>,
}

fn lowbit_of(input: &[u8], input_name: &str, method: Method, target: Target) -> Vec<u8> {
    let mut opts = CompressOptions::new(target);
    opts.method = Some(method);
    let mut out = Vec::new();
    lowbit::compress(input, input_name, &opts, &mut NoProgress, &mut out)
        .unwrap_or_else(|e| panic!("{}: {e}", method.name()));
    out
}

fn sequence_lowbit(file: &[u8], kind: SequenceKind) -> Vec<u8> {
    // Two direct-table models (orders 3 and 8, the second with inverted repeats): a fraction of
    // the default mixture's memory, which every decode of the bases allocates (the mutations
    // raise the orders to hashed ones).
    let models = vec![
        ModelSpec {
            order: 3,
            alpha_den: 1,
            inverted_repeats: false,
        },
        ModelSpec {
            order: 8,
            alpha_den: 16,
            inverted_repeats: true,
        },
    ];
    let opts = SequenceOptions {
        models,
        selection_symbols: 0,
        max_lag: 2,
    };
    let mut out = Vec::new();
    sequence::compress(file, "in", kind, &opts, &mut NoProgress, &mut out).expect("compresses");
    out
}

/// The codec names (`codec` tags) the manifest of `file` uses.
fn codecs_of(file: &[u8]) -> Vec<String> {
    let p = Parsed::of(file);
    p.manifest["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["codec"]["codec"].as_str().unwrap().to_string())
        .collect()
}

/// Builds the container for `name` (a method's name, or `fasta` / `fastq` / `text`) and checks
/// that the codec under test is really in it, and that it decodes.
fn subject(name: &'static str) -> Subject {
    let good = match name {
        "fasta" => sequence_lowbit(&fasta_file(), SequenceKind::Fasta),
        "fastq" => sequence_lowbit(&fastq_file(), SequenceKind::Fastq),
        "text" => sequence_lowbit(&text_file(), SequenceKind::Text),
        _ => {
            let method = Method::from_name(name).expect("a method");
            match method {
                Method::Transform => {
                    let x = vectors(200, 12, 1);
                    lowbit_of(
                        &npy_file(&x, 200, 12),
                        "v.npy",
                        method,
                        Target::BitsPerWeight(4.0),
                    )
                }
                Method::Pq => {
                    let x = vectors(200, 12, 2);
                    let header = (0..12).map(|c| format!("f{c}")).collect::<Vec<_>>();
                    let file = csv::write(Some(&header.join(",")), &x, 12);
                    lowbit_of(&file, "v.csv", method, Target::BitsPerWeight(4.0))
                }
                Method::SharedLowrank => {
                    lowbit_of(&siblings(), "in", method, Target::MaxError(0.1))
                }
                // Only the 64 x 96 matrix is large enough for vq's codebooks; the other matrices
                // stay exact, so a bit budget cannot hold: an error bound instead.
                Method::Vq => lowbit_of(&mixed_checkpoint(), "in", method, Target::MaxError(0.3)),
                Method::Lossless => {
                    lowbit_of(&mixed_checkpoint(), "in", method, Target::MaxError(0.0))
                }
                _ => lowbit_of(
                    &mixed_checkpoint(),
                    "in",
                    method,
                    Target::BitsPerWeight(6.0),
                ),
            }
        }
    };
    let codecs = codecs_of(&good);
    let wanted = match name {
        "fasta" | "fastq" | "text" => "sequence",
        other => other,
    };
    assert!(
        codecs.iter().any(|c| c == wanted),
        "{name}: the container must use codec '{wanted}', it has {codecs:?}"
    );
    let mut decoded = Vec::new();
    lowbit::decompress(&good, "good.lowbit", &mut NoProgress, &mut decoded)
        .unwrap_or_else(|e| panic!("{name}: the valid container decodes: {e}"));
    // The JSON round trip of the mutator is exact: an unmutated re-serialisation decodes the same.
    let again = Parsed::of(&good).bytes();
    let mut decoded_again = Vec::new();
    lowbit::decompress(&again, "again.lowbit", &mut NoProgress, &mut decoded_again)
        .unwrap_or_else(|e| panic!("{name}: the re-serialised container decodes: {e}"));
    assert!(
        decoded_again == decoded,
        "{name}: re-serialisation changed the output"
    );
    let records = Parsed::of(&good).manifest["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let numel = r["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap())
                .product();
            let codec = r["codec"]["codec"].as_str().unwrap().to_string();
            (r["name"].as_str().unwrap().to_string(), (numel, codec))
        })
        .collect();
    Subject {
        name,
        good,
        decoded,
        records,
    }
}

// ---------------------------------------------------------------------------------------------
// The container, taken apart as JSON and put back together.
// ---------------------------------------------------------------------------------------------

const MANIFEST_KEY: &str = lowbit::container::MANIFEST_KEY;

#[derive(Clone)]
struct Parsed {
    /// The outer safetensors header (a JSON object).
    header: Value,
    /// The manifest (the JSON document held in a string of `__metadata__`).
    manifest: Value,
    /// Everything after the header: the sections.
    data: Vec<u8>,
}

impl Parsed {
    fn of(file: &[u8]) -> Parsed {
        let n = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
        let header: Value = serde_json::from_slice(&file[8..8 + n]).expect("JSON header");
        let manifest = serde_json::from_str(header["__metadata__"][MANIFEST_KEY].as_str().unwrap())
            .expect("JSON manifest");
        Parsed {
            header,
            manifest,
            data: file[8 + n..].to_vec(),
        }
    }

    /// The file: the manifest put back into the header, padded with spaces to a multiple of 8,
    /// with a correct length prefix.
    fn bytes(&self) -> Vec<u8> {
        let mut header = self.header.clone();
        header["__metadata__"][MANIFEST_KEY] = Value::String(self.manifest.to_string());
        let mut json = header.to_string().into_bytes();
        while !json.len().is_multiple_of(8) {
            json.push(b' ');
        }
        let mut out = (json.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&json);
        out.extend_from_slice(&self.data);
        out
    }

    /// The section `name`'s range in `data`, if its offsets are numbers.
    fn section(&self, name: &str) -> Option<(usize, usize)> {
        let o = self.header.get(name)?.get("data_offsets")?;
        Some((o.get(0)?.as_u64()? as usize, o.get(1)?.as_u64()? as usize))
    }

    /// Every record's and group's (section range in `data`, coded bytes), in manifest order.
    fn coded_ranges(&self) -> Vec<(usize, usize)> {
        let records = self.manifest["tensors"].as_array().into_iter().flatten();
        let groups = self
            .manifest
            .get("groups")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        records
            .chain(groups)
            .filter_map(|r| {
                let (start, end) = self.section(r.get("name")?.as_str()?)?;
                let coded = r.get("coded_bytes")?.as_u64()? as usize;
                (start <= end && end <= self.data.len()).then_some((start, coded.min(end - start)))
            })
            .collect()
    }

    /// Recomputes every record's and group's `crc32` from the bytes its section now holds, so that
    /// damage passes the checksum and reaches the codec's own validation.
    fn reseal(&mut self) {
        let data = self.data.clone();
        let header = self.header.clone();
        let lists = ["tensors", "groups"];
        for list in lists {
            let Some(records) = self.manifest.get_mut(list).and_then(Value::as_array_mut) else {
                continue;
            };
            for r in records {
                let Some(name) = r.get("name").and_then(Value::as_str) else {
                    continue;
                };
                let Some(o) = header.get(name).and_then(|e| e.get("data_offsets")) else {
                    continue;
                };
                let (Some(start), Some(coded)) = (
                    o.get(0).and_then(Value::as_u64),
                    r.get("coded_bytes").and_then(Value::as_u64),
                ) else {
                    continue;
                };
                let Some(end) = start.checked_add(coded) else {
                    continue;
                };
                if end <= data.len() as u64 {
                    let crc = lowbit::container::crc32(&data[start as usize..end as usize]);
                    r["crc32"] = Value::from(crc);
                }
            }
        }
    }
}

#[derive(Clone, Debug)]
enum Step {
    Key(String),
    Index(usize),
}

fn at<'a>(mut v: &'a mut Value, path: &[Step]) -> &'a mut Value {
    for s in path {
        v = match s {
            Step::Key(k) => &mut v[k.as_str()],
            Step::Index(i) => &mut v[*i],
        };
    }
    v
}

fn path_text(path: &[Step]) -> String {
    path.iter()
        .map(|s| match s {
            Step::Key(k) => format!(".{k}"),
            Step::Index(i) => format!("[{i}]"),
        })
        .collect()
}

/// Every number and string leaf under `v` (the outer header's `__metadata__` is left out: the
/// manifest inside it is walked separately).
fn leaves(v: &Value, path: &mut Vec<Step>, out: &mut Vec<(Vec<Step>, Value)>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                if path.is_empty() && k == "__metadata__" {
                    continue;
                }
                path.push(Step::Key(k.clone()));
                leaves(child, path, out);
                path.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                path.push(Step::Index(i));
                leaves(child, path, out);
                path.pop();
            }
        }
        Value::Number(_) | Value::String(_) => out.push((path.clone(), v.clone())),
        Value::Null | Value::Bool(_) => {}
    }
}

const DTYPES: [&str; 6] = ["F32", "F16", "BF16", "F64", "U8", "I64"];
const SOURCE_FORMATS: [&str; 7] = [
    "safetensors",
    "npy",
    "csv",
    "fvecs",
    "fasta",
    "fastq",
    "text",
];
const CODEC_TAGS: [&str; 12] = [
    "scalar",
    "vq",
    "lowrank",
    "lossless",
    "hyper",
    "turbo",
    "transform",
    "pq",
    "sparse-lowrank",
    "fwsvd",
    "shared-lowrank",
    "sequence",
];

/// What a leaf is rewritten to: numbers to 0, 1, off by one, doubled and huge (u32::MAX, 2^32,
/// 2^40, i64::MAX, u64::MAX) and negative; floats to 0, negated, huge and tiny; enumerated strings
/// (dtypes, source formats, codec tags) to each other value of their kind; other strings to "".
fn variants(key: Option<&str>, v: &Value) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    match v {
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                for x in [
                    0,
                    1,
                    u.wrapping_sub(1),
                    u.saturating_add(1),
                    u.saturating_mul(2),
                    // Shapes as large as the decompression-bomb bound lets a section claim.
                    u.saturating_mul(1000),
                    u.saturating_mul(4096),
                    u32::MAX as u64,
                    1 << 32,
                    1 << 40,
                    i64::MAX as u64,
                    u64::MAX,
                ] {
                    if x != u {
                        out.push(Value::from(x));
                    }
                }
                out.push(Value::from(-1i64));
            } else if let Some(f) = n.as_f64() {
                for x in [0.0, -f, 2.0 * f, 1e30, -1e30, 1e300, 1e-300] {
                    if x != f {
                        out.push(Value::from(x));
                    }
                }
            }
        }
        Value::String(s) => {
            let pool: &[&str] = if DTYPES.contains(&s.as_str()) || key == Some("dtype") {
                &DTYPES
            } else if key == Some("source_format") {
                &SOURCE_FORMATS
            } else if key == Some("codec") {
                &CODEC_TAGS
            } else if key == Some(lowbit::container::CSV_HEADER_KEY) {
                // One field too few, and a line break that adds a row.
                &["f0", "f0\n1"]
            } else {
                &[""]
            };
            out.extend(pool.iter().filter(|x| **x != s).map(|x| Value::from(*x)));
        }
        _ => {}
    }
    out.dedup();
    out
}

// ---------------------------------------------------------------------------------------------
// The mutations.
// ---------------------------------------------------------------------------------------------

/// What a successful decode of a mutated file must give.
#[derive(Clone, Copy, PartialEq)]
enum Expect {
    /// A well-formed file of the kind the (possibly changed) manifest says.
    WellFormed,
    /// Exactly the original output: the mutation left the manifest alone and the checksums were
    /// not recomputed, so only damage the checksums cannot see (padding) may decode.
    Original,
}

/// Calls `case(label, file, expect)` for every mutation of `good`.
fn mutations(good: &[u8], seed: u64, case: &mut dyn FnMut(String, Vec<u8>, Expect)) {
    let mut rng = Rng::new(seed);
    let parsed = Parsed::of(good);
    let data_start = good.len() - parsed.data.len();
    let sections: Vec<(usize, usize)> = parsed.coded_ranges();
    let len = good.len() as u64;

    // 1. Single bit flips anywhere.
    for i in 0..200 {
        let mut bad = good.to_vec();
        let at = rng.below(len) as usize;
        let bit = rng.below(8);
        bad[at] ^= 1 << bit;
        case(
            format!("bit flip #{i} at byte {at} bit {bit}"),
            bad,
            Expect::WellFormed,
        );
    }
    // 2. Truncations: at random points, and at (and around) every section boundary.
    let mut cuts: Vec<usize> = (0..60).map(|_| rng.below(len) as usize).collect();
    cuts.extend([0, 1, 7, 8, 9, data_start - 1, data_start, data_start + 1]);
    for &(start, coded) in &sections {
        for at in [data_start + start, data_start + start + coded] {
            cuts.extend([at.saturating_sub(1), at, at + 1]);
        }
    }
    cuts.sort_unstable();
    cuts.dedup();
    for at in cuts.into_iter().filter(|&at| at < good.len()) {
        case(
            format!("truncated to {at} bytes"),
            good[..at].to_vec(),
            Expect::WellFormed,
        );
    }
    // 3. Random byte overwrites anywhere (1 to 4 bytes).
    for i in 0..100 {
        let mut bad = good.to_vec();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(len) as usize;
            bad[at] = rng.next_u64() as u8;
        }
        case(format!("overwrite #{i}"), bad, Expect::WellFormed);
    }
    // 4. Damage inside the sections only (the header intact, checksums as they were).
    if !parsed.data.is_empty() {
        for i in 0..100 {
            let mut bad = good.to_vec();
            let at = data_start + rng.below(parsed.data.len() as u64) as usize;
            bad[at] ^= 1 << rng.below(8);
            case(
                format!("section bit flip #{i} at byte {at}"),
                bad,
                Expect::Original,
            );
        }
    }
    // 5. Damage inside the coded bytes with the checksums recomputed: the codecs' own validation.
    for (s, &(start, coded)) in sections.iter().enumerate() {
        if coded == 0 {
            continue;
        }
        // Sequence streams are decoded one after the other, each by a context-mixing model whose
        // tables cost milliseconds to set up: fewer cases per stream keep the test fast.
        let per_section = match parsed.manifest["source_format"].as_str() {
            Some("fasta" | "fastq" | "text") => 20,
            _ => 60,
        };
        let n = per_section.min(8 * coded);
        for i in 0..n {
            let mut p = parsed.clone();
            let pick = |rng: &mut Rng| start + rng.below(coded as u64) as usize;
            let what = match i % 6 {
                0 | 1 => {
                    let at = pick(&mut rng);
                    p.data[at] ^= 1 << rng.below(8);
                    "bit flip"
                }
                2 => {
                    for _ in 0..1 + rng.below(4) {
                        let at = pick(&mut rng);
                        p.data[at] = rng.next_u64() as u8;
                    }
                    "overwrite"
                }
                3 => {
                    // A run of 0x00 or 0xff bytes (counts and lengths at their extremes).
                    let at = pick(&mut rng);
                    let end = (at + 1 + rng.below(8) as usize).min(start + coded);
                    let fill = if rng.below(2) == 0 { 0 } else { 0xff };
                    p.data[at..end].fill(fill);
                    "run"
                }
                4 => {
                    // The section's first bytes (where codecs keep their counts).
                    let at = start + (i / 6) % coded.min(16);
                    p.data[at] = rng.next_u64() as u8;
                    "head byte"
                }
                _ => {
                    // Coded bytes cut short: the record claims fewer, the rest becomes padding.
                    let keep = rng.below(coded as u64);
                    let name = p.manifest_record_name(s);
                    p.set_coded_bytes(&name, keep);
                    "cut short"
                }
            };
            p.reseal();
            case(
                format!("resealed section {s} {what} #{i}"),
                p.bytes(),
                Expect::WellFormed,
            );
        }
    }
    // 6. The 8-byte header length.
    let n = (data_start - 8) as u64;
    for v in [
        0,
        1,
        7,
        8,
        n - 8,
        n - 1,
        n + 1,
        n + 8,
        len - 8,
        len,
        u32::MAX as u64,
        1 << 40,
        MAX_HEADER_LEN,
        MAX_HEADER_LEN + 1,
        u64::MAX - 7,
        u64::MAX,
    ] {
        let mut bad = good.to_vec();
        bad[..8].copy_from_slice(&v.to_le_bytes());
        case(format!("header length {v}"), bad, Expect::WellFormed);
    }
    // 7. Every number and enumerated string of the header and of the manifest, as written and
    //    with the checksums recomputed.
    let unmutated = parsed.bytes();
    for root in ["header", "manifest"] {
        let tree = if root == "header" {
            &parsed.header
        } else {
            &parsed.manifest
        };
        let mut found = Vec::new();
        leaves(tree, &mut Vec::new(), &mut found);
        for (path, value) in found {
            let key = path.iter().rev().find_map(|s| match s {
                Step::Key(k) => Some(k.as_str()),
                Step::Index(_) => None,
            });
            for v in variants(key, &value) {
                let mut p = parsed.clone();
                let tree = if root == "header" {
                    &mut p.header
                } else {
                    &mut p.manifest
                };
                *at(tree, &path) = v.clone();
                let label = format!("{root}{} = {v}", path_text(&path));
                let plain = p.bytes();
                p.reseal();
                let sealed = p.bytes();
                // (Resealing undoes a changed crc32: that file is the original again.)
                if sealed != plain && sealed != unmutated {
                    case(format!("{label} (resealed)"), sealed, Expect::WellFormed);
                }
                case(label, plain, Expect::WellFormed);
            }
        }
    }
    // 8. Structural lies: records' codecs and shapes swapped, a record dropped or repeated.
    let count = parsed.manifest["tensors"].as_array().map_or(0, Vec::len);
    for a in 0..count {
        for b in 0..count {
            if a == b {
                continue;
            }
            for field in ["codec", "shape"] {
                let mut p = parsed.clone();
                let v = p.manifest["tensors"][b][field].clone();
                p.manifest["tensors"][a][field] = v;
                p.reseal();
                case(
                    format!("tensors[{a}].{field} = tensors[{b}].{field}"),
                    p.bytes(),
                    Expect::WellFormed,
                );
            }
        }
        let mut p = parsed.clone();
        p.manifest["tensors"].as_array_mut().unwrap().remove(a);
        case(
            format!("tensors[{a}] removed"),
            p.bytes(),
            Expect::WellFormed,
        );
        let mut p = parsed.clone();
        let r = p.manifest["tensors"][a].clone();
        p.manifest["tensors"].as_array_mut().unwrap().push(r);
        case(
            format!("tensors[{a}] repeated"),
            p.bytes(),
            Expect::WellFormed,
        );
    }
}

impl Parsed {
    fn manifest_record_name(&self, index: usize) -> String {
        let tensors = self.manifest["tensors"].as_array().unwrap();
        let r = match tensors.get(index) {
            Some(r) => r,
            None => &self.manifest["groups"][index - tensors.len()],
        };
        r["name"].as_str().unwrap().to_string()
    }

    fn set_coded_bytes(&mut self, name: &str, coded: u64) {
        for list in ["tensors", "groups"] {
            if let Some(records) = self.manifest.get_mut(list).and_then(Value::as_array_mut) {
                for r in records.iter_mut().filter(|r| r["name"] == name) {
                    r["coded_bytes"] = Value::from(coded);
                    let side = r["side_bytes"].as_u64().unwrap_or(0).min(coded);
                    r["side_bytes"] = Value::from(side);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The checks.
// ---------------------------------------------------------------------------------------------

/// Cases that would fail today because of a known decoder bug, with the reason; they are skipped
/// so the rest of the test stays green. Each entry: (container, exact case label).
const KNOWN_BUGS: &[(&str, &str, &str)] = &[
    // Empty: the two bugs this test found first are fixed (hyper's `side_points` bounded T before
    // squaring it; the stored CSV header is checked by `io::csv::check_header` before it is
    // written back). An entry here is (container, exact case label, why).
];

/// BUG (integrity): decoders known to decode a section to whatever element count the record
/// claims (the section does not hold the count, or the decoder does not compare it). The manifest
/// has no checksum, so a changed shape (one flipped bit turns "64" into "65") decodes silently to
/// a tensor of another size with made-up values. Each entry: (codec tag, tensor name or "*",
/// what happens). Such cases are counted and printed, not failed; remove an entry once its
/// decoder checks the count, and the test holds the fix.
const KNOWN_COUNT_GAPS: &[(&str, &str, &str)] = &[
    (
        "scalar",
        "*",
        "scalar decodes any rows x cols from a section coded for fewer",
    ),
    (
        "vq",
        "*",
        "vq decodes any column count (rows are checked through the row scales)",
    ),
    (
        "transform",
        "*",
        "transform decodes any row count from a section coded for fewer rows",
    ),
    (
        "lossless",
        "mask",
        "the lossless U8 byte stream decodes any count (F32, I64 are checked)",
    ),
];

#[derive(Default)]
struct Tally {
    /// Cases accepted only because of [`KNOWN_COUNT_GAPS`].
    count_gaps: Vec<String>,
    cases: usize,
    errors: usize,
    decoded: usize,
    /// The largest peak, the bound of its case, and the case.
    peak: usize,
    peak_bound: usize,
    peak_case: String,
    /// The largest peak / bound of any case.
    tightest: f64,
    failures: Vec<String>,
}

/// The restored file is what `summary` says it is, of the kind the manifest claims.
fn well_formed(out: &[u8], s: &DecompressSummary) -> Result<(), String> {
    if out.len() as u64 != s.bytes_written {
        return Err(format!(
            "wrote {} bytes, the summary says {}",
            out.len(),
            s.bytes_written
        ));
    }
    match s.format {
        SourceFormat::Safetensors | SourceFormat::PyTorch | SourceFormat::Gguf => {
            let h = safetensors::read_header(out).map_err(|e| e.to_string())?;
            let end = h.tensors.iter().map(|t| t.end).max().unwrap_or(0);
            let values: u64 = h.tensors.iter().map(|t| t.end - t.start).sum();
            if h.data_start + end != out.len() as u64 || values != end {
                return Err("the safetensors data area is not exactly the tensors'".into());
            }
            if h.tensors.len() != s.tensors {
                return Err(format!("{} tensors of {}", h.tensors.len(), s.tensors));
            }
        }
        SourceFormat::Npy => {
            let h = npy::read_header(out).map_err(|e| e.to_string())?;
            let numel: u64 = h.shape.iter().map(|&d| d as u64).product();
            if h.data_start as u64 + numel * h.dtype.size() as u64 != out.len() as u64 {
                return Err("the npy data is not exactly the array".into());
            }
        }
        SourceFormat::Csv => {
            let t = csv::read(out).map_err(|e| e.to_string())?;
            if (t.rows * t.cols) as u64 != s.parameters {
                return Err(format!(
                    "{} x {} values of {}",
                    t.rows, t.cols, s.parameters
                ));
            }
        }
        SourceFormat::Fvecs => {
            let (rows, cols, _) = fvecs::read(out).map_err(|e| e.to_string())?;
            if (rows * cols) as u64 != s.parameters {
                return Err(format!("{rows} x {cols} values of {}", s.parameters));
            }
        }
        SourceFormat::Fasta | SourceFormat::Fastq | SourceFormat::Text => {}
    }
    Ok(())
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".into())
}

fn check(
    s: &Subject,
    seed: u64,
    index: usize,
    label: &str,
    bad: &[u8],
    expect: Expect,
    t: &mut Tally,
) {
    let id = format!("{} seed {seed} case {index}: {label}", s.name);
    if let Some((_, _, why)) = KNOWN_BUGS
        .iter()
        .find(|(name, case, _)| *name == s.name && *case == label)
    {
        eprintln!("skipped (known bug: {why}): {id}");
        return;
    }
    t.cases += 1;
    let bound = allocation_bound(bad);
    set_label(&id);
    let mut out = Vec::new();
    let (result, peak) =
        measured(|| lowbit::decompress(bad, "bad.lowbit", &mut NoProgress, &mut out));
    let (inspected, inspect_peak) = measured(|| lowbit::inspect(bad, "bad.lowbit"));
    let peak = peak.max(inspect_peak);
    if peak > t.peak {
        (t.peak, t.peak_bound, t.peak_case) = (peak, bound, id.clone());
    }
    t.tightest = t.tightest.max(peak as f64 / bound as f64);
    if peak > bound {
        t.failures.push(format!(
            "{id}: allocated {peak} bytes, more than the {bound} its claims allow"
        ));
    }
    let failure = match (result, inspected) {
        (Err(p), _) => Some(format!("decompress panicked: {}", panic_text(&*p))),
        (_, Err(p)) => Some(format!("inspect panicked: {}", panic_text(&*p))),
        (Ok(Err(e)), _) => {
            t.errors += 1;
            let text = e.to_string();
            let typed = matches!(
                e,
                Error::Corrupt { .. } | Error::InvalidInput { .. } | Error::Unsupported { .. }
            );
            (!typed || !text.contains("bad.lowbit") || text.len() <= "bad.lowbit: ".len())
                .then(|| format!("an error that does not name the file or the damage: {e:?}"))
        }
        (Ok(Ok(summary)), Ok(inspection)) => {
            t.decoded += 1;
            let lowbit = match inspection {
                Ok(Inspection::Lowbit { tensors, .. }) if tensors.len() != summary.tensors => {
                    Err("inspect lists other tensors".to_string())
                }
                Ok(Inspection::Lowbit { tensors, .. }) => {
                    // A section restores the element count it was coded from, or is refused: a
                    // record whose shape changed (the manifest has no checksum) must not decode.
                    let mut verdict = Ok(());
                    for r in &tensors {
                        let Some((numel, codec)) = s.records.get(&r.name) else {
                            continue;
                        };
                        if r.parameters == *numel {
                            continue;
                        }
                        if let Some((_, _, why)) = KNOWN_COUNT_GAPS
                            .iter()
                            .find(|(c, n, _)| c == codec && (*n == "*" || *n == r.name))
                        {
                            t.count_gaps.push(format!("{id}: {} ({why})", r.name));
                            continue;
                        }
                        verdict = Err(format!(
                            "tensor '{}' ({codec}) decoded to {} elements from a section coded \
                             from {numel}",
                            r.name, r.parameters
                        ));
                    }
                    verdict
                }
                Ok(_) => Err("inspect does not see a .lowbit".into()),
                Err(e) => Err(format!("inspect fails on a file that decodes: {e}")),
            };
            let same = if expect == Expect::Original && out != s.decoded {
                Err("decoded to other bytes than the original".to_string())
            } else {
                Ok(())
            };
            lowbit
                .and(well_formed(&out, &summary))
                .and(same)
                .err()
                .map(|e| format!("decoded, but {e}"))
        }
    };
    if let Some(f) = failure {
        t.failures.push(format!("{id}: {f}"));
    }
}

fn run(name: &'static str) {
    let started = std::time::Instant::now();
    let s = subject(name);
    // The valid containers seed the fuzz target (fuzz/fuzz_targets/decompress.rs).
    if let Some(dir) = std::env::var_os("LOWBIT_FUZZ_CORPUS") {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            std::path::Path::new(&dir).join(format!("{name}.lowbit")),
            &s.good,
        )
        .unwrap();
    }
    let seed = 0x5eed_0000 + name.len() as u64 * 131 + name.as_bytes()[0] as u64;
    let mut t = Tally::default();
    let mut index = 0;
    mutations(&s.good, seed, &mut |label, bad, expect| {
        check(&s, seed, index, &label, &bad, expect, &mut t);
        index += 1;
    });
    eprintln!(
        "{name}: {} bytes, {} cases ({} errors, {} decoded) in {:.2?}; peak allocation {} bytes \
         (bound {}) in {}; highest peak/bound {:.3}",
        s.good.len(),
        t.cases,
        t.errors,
        t.decoded,
        started.elapsed(),
        t.peak,
        t.peak_bound,
        t.peak_case,
        t.tightest
    );
    for gap in &t.count_gaps {
        eprintln!("accepted (known count gap): {gap}");
    }
    assert!(
        t.failures.is_empty(),
        "{name}: {} of {} mutated files failed:\n{}",
        t.failures.len(),
        t.cases,
        t.failures
            .iter()
            .take(25)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The bound is meaningful only while the valid files are small next to it.
    assert!(
        s.good.len() < 48 << 10,
        "{name}: the container grew to {} bytes; shrink the input",
        s.good.len()
    );
}

macro_rules! per_container {
    ($($test:ident => $name:literal,)*) => {
        $(
            #[test]
            fn $test() {
                run($name);
            }
        )*

        /// Every method has its test here: a new `Method` must get a container.
        #[test]
        fn every_method_has_a_container() {
            let covered = [$($name),*];
            for m in Method::ALL {
                assert!(covered.contains(&m.name()), "no mutation test for {}", m.name());
            }
        }
    };
}

per_container! {
    mutated_scalar => "scalar",
    mutated_vq => "vq",
    mutated_lowrank => "lowrank",
    mutated_lossless => "lossless",
    mutated_hyper => "hyper",
    mutated_turbo => "turbo",
    mutated_transform => "transform",
    mutated_pq => "pq",
    mutated_sparse_lowrank => "sparse-lowrank",
    mutated_fwsvd => "fwsvd",
    mutated_shared_lowrank => "shared-lowrank",
    mutated_fasta => "fasta",
    mutated_fastq => "fastq",
    mutated_text => "text",
}
