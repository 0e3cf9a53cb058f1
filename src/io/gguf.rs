//! GGUF files (llama.cpp's format), versions 2 and 3, little-endian: a header (magic `GGUF`, u32
//! version, u64 tensor count, u64 key/value count), the metadata key/values, one info per tensor
//! (name, dims, ggml type, offset), then the tensor data from the first multiple of the alignment
//! (`general.alignment`, default 32) after the infos. Every integer is little-endian; a string is
//! a u64 byte length and UTF-8 bytes; an array is a u32 element type, a u64 count and the elements
//! (arrays of arrays included).
//!
//! GGUF lists a tensor's dims fastest-first (ggml's `ne[0]` is the length of a row); lowbit's
//! shapes are row-major like safetensors', so [`GgufTensor::shape`] is the dims reversed.
//!
//! Only the header is read here, through [`Source`] and growing a prefix as far as the header
//! goes ([`MAX_HEADER_LEN`] at most); tensors stay byte ranges inside the file and are converted
//! when read ([`dequantize`]). Every count and length is checked against the bytes that remain
//! before anything is allocated for it, every tensor must lie inside the file at an aligned offset
//! and overlap no other, and a type lowbit cannot dequantize is named with its tensor. What is
//! accepted and refused is in docs/READERS.md.

mod dequant;

use std::ops::Range;

use crate::error::{Error, Result};
use crate::source::Source;

pub use dequant::{dequantize, supported};

/// The file's first four bytes.
pub const MAGIC: &[u8] = b"GGUF";
/// The data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The metadata key that sets the alignment (a u32, a power of two).
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// Most dims of a tensor (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;
/// Most tensors in one file.
pub const MAX_TENSORS: u64 = 1 << 20;
/// Longest header (key/values and tensor infos) read: a 256k-token vocabulary takes a few MiB.
pub const MAX_HEADER_LEN: u64 = 256 << 20;
/// Deepest nesting of arrays in a metadata value.
pub const MAX_ARRAY_NESTING: usize = 8;

/// A ggml tensor type, numbered as in `ggml.h` (`enum ggml_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2K = 10,
    Q3K = 11,
    Q4K = 12,
    Q5K = 13,
    Q6K = 14,
    Q8K = 15,
    Iq2Xxs = 16,
    Iq2Xs = 17,
    Iq3Xxs = 18,
    Iq1S = 19,
    Iq4Nl = 20,
    Iq3S = 21,
    Iq2S = 22,
    Iq4Xs = 23,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    Iq1M = 29,
    BF16 = 30,
    Tq1_0 = 34,
    Tq2_0 = 35,
    Mxfp4 = 39,
    Nvfp4 = 40,
    Q1_0 = 41,
}

/// (type, name, elements per block, bytes per block), as in ggml's type traits
/// (gguf-py's `GGML_QUANT_SIZES`).
const TYPES: [(GgmlType, &str, usize, usize); 34] = {
    use GgmlType::*;
    [
        (F32, "F32", 1, 4),
        (F16, "F16", 1, 2),
        (Q4_0, "Q4_0", 32, 18),
        (Q4_1, "Q4_1", 32, 20),
        (Q5_0, "Q5_0", 32, 22),
        (Q5_1, "Q5_1", 32, 24),
        (Q8_0, "Q8_0", 32, 34),
        (Q8_1, "Q8_1", 32, 40),
        (Q2K, "Q2_K", 256, 84),
        (Q3K, "Q3_K", 256, 110),
        (Q4K, "Q4_K", 256, 144),
        (Q5K, "Q5_K", 256, 176),
        (Q6K, "Q6_K", 256, 210),
        (Q8K, "Q8_K", 256, 292),
        (Iq2Xxs, "IQ2_XXS", 256, 66),
        (Iq2Xs, "IQ2_XS", 256, 74),
        (Iq3Xxs, "IQ3_XXS", 256, 98),
        (Iq1S, "IQ1_S", 256, 50),
        (Iq4Nl, "IQ4_NL", 32, 18),
        (Iq3S, "IQ3_S", 256, 110),
        (Iq2S, "IQ2_S", 256, 82),
        (Iq4Xs, "IQ4_XS", 256, 136),
        (I8, "I8", 1, 1),
        (I16, "I16", 1, 2),
        (I32, "I32", 1, 4),
        (I64, "I64", 1, 8),
        (F64, "F64", 1, 8),
        (Iq1M, "IQ1_M", 256, 56),
        (BF16, "BF16", 1, 2),
        (Tq1_0, "TQ1_0", 256, 54),
        (Tq2_0, "TQ2_0", 256, 66),
        (Mxfp4, "MXFP4", 32, 17),
        (Nvfp4, "NVFP4", 64, 36),
        (Q1_0, "Q1_0", 128, 18),
    ]
};

impl GgmlType {
    pub fn from_id(id: u32) -> Option<GgmlType> {
        TYPES.iter().find(|t| t.0 as u32 == id).map(|t| t.0)
    }

    fn traits(self) -> &'static (GgmlType, &'static str, usize, usize) {
        TYPES
            .iter()
            .find(|t| t.0 == self)
            .expect("every type has traits")
    }

    /// ggml's name (`Q4_K`).
    pub fn name(self) -> &'static str {
        self.traits().1
    }

    /// Elements per block (1 for the plain types).
    pub fn block_len(self) -> usize {
        self.traits().2
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        self.traits().3
    }

    /// Bits per weight as stored (Q4_0: 18 bytes per 32 = 4.5).
    pub fn bits_per_weight(self) -> f64 {
        8.0 * self.block_bytes() as f64 / self.block_len() as f64
    }

    /// The plain element type lowbit reads as is (F32, F16, BF16, F64, I8..I64), `None` for a
    /// block type.
    pub fn plain_dtype(self) -> Option<crate::dtype::DType> {
        use crate::dtype::DType;
        Some(match self {
            GgmlType::F32 => DType::F32,
            GgmlType::F16 => DType::F16,
            GgmlType::BF16 => DType::BF16,
            GgmlType::F64 => DType::F64,
            GgmlType::I8 => DType::I8,
            GgmlType::I16 => DType::I16,
            GgmlType::I32 => DType::I32,
            GgmlType::I64 => DType::I64,
            _ => return None,
        })
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A metadata value. Arrays are checked to the last element but not kept: a tokenizer's
/// vocabulary is one (tens of thousands of strings), and lowbit needs none of them.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    U64(u64),
    I64(i64),
    F64(f64),
    /// An array: the GGUF value type of its elements and how many there are.
    Array {
        element_type: u32,
        len: u64,
    },
}

impl MetaValue {
    /// The value as text: numbers in decimal (floats shortest round-trip), booleans as
    /// `true`/`false`, strings as they are; `None` for an array.
    pub fn to_text(&self) -> Option<String> {
        Some(match self {
            MetaValue::U8(v) => v.to_string(),
            MetaValue::I8(v) => v.to_string(),
            MetaValue::U16(v) => v.to_string(),
            MetaValue::I16(v) => v.to_string(),
            MetaValue::U32(v) => v.to_string(),
            MetaValue::I32(v) => v.to_string(),
            MetaValue::F32(v) => v.to_string(),
            MetaValue::Bool(v) => v.to_string(),
            MetaValue::String(v) => v.clone(),
            MetaValue::U64(v) => v.to_string(),
            MetaValue::I64(v) => v.to_string(),
            MetaValue::F64(v) => v.to_string(),
            MetaValue::Array { .. } => return None,
        })
    }
}

/// One tensor of a GGUF file.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufTensor {
    pub name: String,
    pub ggml_type: GgmlType,
    /// Row-major, like safetensors: GGUF's dims reversed.
    pub shape: Vec<usize>,
    /// Absolute byte range in the file: whole blocks of `ggml_type`.
    pub range: Range<u64>,
}

impl GgufTensor {
    pub fn numel(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct GgufFile {
    pub version: u32,
    pub alignment: u64,
    /// In file order.
    pub metadata: Vec<(String, MetaValue)>,
    /// In file order (the order of the tensor infos).
    pub tensors: Vec<GgufTensor>,
    /// Where the data section begins.
    pub data_start: u64,
}

fn bad(reason: impl std::fmt::Display) -> Error {
    Error::invalid(format!("not a valid GGUF file: {reason}"))
}

/// The header's bytes, read as a growing prefix of the file.
struct Cursor<'a, S: Source + ?Sized> {
    file: &'a S,
    len: u64,
    buf: std::borrow::Cow<'a, [u8]>,
    pos: u64,
}

impl<'a, S: Source + ?Sized> Cursor<'a, S> {
    /// Checks that `n` bytes follow and moves past them; `what` names them in the error.
    fn skip(&mut self, n: u64, what: &str) -> Result<Range<u64>> {
        let start = self.pos;
        let end = start.checked_add(n).filter(|&e| e <= self.len);
        let end = end.ok_or_else(|| {
            bad(format!(
                "{what} ({n} bytes at offset {start}) runs past the end of the {}-byte file",
                self.len
            ))
        })?;
        if end > MAX_HEADER_LEN {
            return Err(Error::unsupported(format!(
                "the GGUF header is longer than {MAX_HEADER_LEN} bytes ({what} ends at {end})"
            )));
        }
        self.pos = end;
        Ok(start..end)
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&[u8]> {
        let r = self.skip(n, what)?;
        if r.end > self.buf.len() as u64 {
            let want = r.end.max(2 * self.buf.len() as u64).max(1 << 16);
            self.buf = self.file.prefix(want.min(self.len).min(MAX_HEADER_LEN))?;
        }
        Ok(&self.buf[r.start as usize..r.end as usize])
    }

    fn remaining(&self) -> u64 {
        self.len - self.pos
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        let b = self.take(8, what)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    fn bytes(&mut self, what: &str) -> Result<&[u8]> {
        let n = self.u64(what)?;
        self.take(n, what)
    }

    fn text(&mut self, what: &str) -> Result<String> {
        let b = self.bytes(what)?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok(s.to_string()),
            Err(_) => Err(bad(format!("{what} is not UTF-8"))),
        }
    }
}

/// Bytes of a value of a fixed-size GGUF type; `None` for strings (8) and arrays (9).
fn fixed_size(value_type: u32) -> Option<u64> {
    match value_type {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

fn value<S: Source + ?Sized>(
    c: &mut Cursor<'_, S>,
    value_type: u32,
    key: &str,
) -> Result<MetaValue> {
    if let Some(n) = fixed_size(value_type) {
        let b = c.take(n, key)?;
        let mut w = [0u8; 8];
        w[..b.len()].copy_from_slice(b);
        let (u, h, q) = (
            u32::from_le_bytes(w[..4].try_into().expect("4")),
            u16::from_le_bytes([w[0], w[1]]),
            u64::from_le_bytes(w),
        );
        return Ok(match value_type {
            0 => MetaValue::U8(w[0]),
            1 => MetaValue::I8(w[0] as i8),
            2 => MetaValue::U16(h),
            3 => MetaValue::I16(h as i16),
            4 => MetaValue::U32(u),
            5 => MetaValue::I32(u as i32),
            6 => MetaValue::F32(f32::from_bits(u)),
            7 => MetaValue::Bool(w[0] != 0),
            10 => MetaValue::U64(q),
            11 => MetaValue::I64(q as i64),
            _ => MetaValue::F64(f64::from_bits(q)),
        });
    }
    match value_type {
        8 => Ok(MetaValue::String(c.text(key)?)),
        9 => array(c, key, 0),
        other => Err(bad(format!(
            "metadata '{key}' has unknown value type {other}"
        ))),
    }
}

/// Checks an array (its type and count already ahead of the cursor) and moves past it.
fn array<S: Source + ?Sized>(c: &mut Cursor<'_, S>, key: &str, depth: usize) -> Result<MetaValue> {
    if depth >= MAX_ARRAY_NESTING {
        return Err(Error::unsupported(format!(
            "metadata '{key}' nests arrays more than {MAX_ARRAY_NESTING} deep"
        )));
    }
    let element_type = c.u32(key)?;
    let len = c.u64(key)?;
    // The least bytes one element takes: a string's length, an array's type and count.
    let least = match (fixed_size(element_type), element_type) {
        (Some(n), _) => n,
        (None, 8) => 8,
        (None, 9) => 12,
        _ => {
            return Err(bad(format!(
                "metadata '{key}' is an array of unknown value type {element_type}"
            )))
        }
    };
    if len > c.remaining() / least {
        return Err(bad(format!(
            "metadata '{key}' claims {len} array elements, more than the {} bytes left can hold",
            c.remaining()
        )));
    }
    match element_type {
        8 => {
            for _ in 0..len {
                let n = c.u64(key)?;
                c.skip(n, key)?;
            }
        }
        9 => {
            for _ in 0..len {
                array(c, key, depth + 1)?;
            }
        }
        _ => {
            c.skip(len * least, key)?;
        }
    }
    Ok(MetaValue::Array { element_type, len })
}

/// The version, refusing v1, big-endian files and unknown versions by name.
fn version<S: Source + ?Sized>(c: &mut Cursor<'_, S>) -> Result<u32> {
    if c.take(4, "the magic")? != MAGIC {
        return Err(bad("it does not begin with GGUF"));
    }
    let v = c.u32("the version")?;
    match v {
        2 | 3 => Ok(v),
        1 => Err(Error::unsupported(
            "GGUF version 1 (32-bit counts, 2023): lowbit reads versions 2 and 3; re-save the file \
             with a current llama.cpp",
        )),
        _ if (2..=3).contains(&v.swap_bytes()) => Err(Error::unsupported(
            "a big-endian GGUF file: lowbit reads little-endian GGUF only",
        )),
        _ => Err(Error::unsupported(format!(
            "GGUF version {v}: lowbit reads versions 2 and 3"
        ))),
    }
}

/// The key/values, and the alignment they set.
fn metadata<S: Source + ?Sized>(c: &mut Cursor<'_, S>) -> Result<(Vec<(String, MetaValue)>, u64)> {
    let count = c.u64("the key/value count")?;
    // A key/value takes at least 13 bytes: the key's length, the type, one byte of value.
    if count > c.remaining() / 13 {
        return Err(bad(format!(
            "it claims {count} metadata key/values, more than the {} bytes left can hold",
            c.remaining()
        )));
    }
    let mut kv: Vec<(String, MetaValue)> = Vec::new();
    let mut keys = std::collections::HashSet::new();
    let mut alignment = DEFAULT_ALIGNMENT;
    for _ in 0..count {
        let key = c.text("a metadata key")?;
        let value_type = c.u32(&key)?;
        let v = value(c, value_type, &key)?;
        if !keys.insert(key.clone()) {
            return Err(bad(format!("metadata key '{key}' appears twice")));
        }
        if key == ALIGNMENT_KEY {
            alignment = match v {
                MetaValue::U32(a) if a.is_power_of_two() => a as u64,
                _ => {
                    return Err(bad(format!(
                        "{ALIGNMENT_KEY} must be a u32 power of two, not {v:?}"
                    )))
                }
            };
        }
        kv.push((key, v));
    }
    Ok((kv, alignment))
}

/// A tensor info as stored: name, dims (fastest first), type, offset in the data section.
struct Info {
    name: String,
    dims: Vec<u64>,
    ggml_type: GgmlType,
    offset: u64,
}

fn info<S: Source + ?Sized>(c: &mut Cursor<'_, S>) -> Result<Info> {
    let name = c.text("a tensor name")?;
    let in_tensor = |e: Error| e.in_tensor(&name);
    let n_dims = c.u32("the tensor's dimension count").map_err(in_tensor)?;
    if n_dims as usize > MAX_DIMS {
        return Err(bad(format!(
            "{n_dims} dimensions; ggml tensors have at most {MAX_DIMS}"
        ))
        .in_tensor(&name));
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        dims.push(c.u64("the tensor's dims").map_err(in_tensor)?);
    }
    let id = c.u32("the tensor's type").map_err(in_tensor)?;
    let ggml_type = GgmlType::from_id(id)
        .ok_or_else(|| Error::unsupported(format!("unknown ggml type {id}")).in_tensor(&name))?;
    let offset = c.u64("the tensor's offset").map_err(in_tensor)?;
    Ok(Info {
        name,
        dims,
        ggml_type,
        offset,
    })
}

/// The tensor an info describes, placed in the file; its size and alignment checked.
fn place(i: Info, alignment: u64, data_start: u64, file_len: u64) -> Result<GgufTensor> {
    let t = i.ggml_type;
    let fail = |reason: String| Err(bad(reason).in_tensor(&i.name));
    let mut numel: u64 = 1;
    for &d in &i.dims {
        numel = match numel.checked_mul(d).filter(|&n| n <= i64::MAX as u64) {
            Some(n) => n,
            None => return fail(format!("dims {:?} overflow 63 bits", i.dims)),
        };
    }
    let row = i.dims.first().copied().unwrap_or(1);
    if !row.is_multiple_of(t.block_len() as u64) {
        return fail(format!(
            "a row of {row} elements is not a whole number of {t} blocks of {}",
            t.block_len()
        ));
    }
    let Some(bytes) = (numel / t.block_len() as u64).checked_mul(t.block_bytes() as u64) else {
        return fail(format!(
            "dims {:?} of {t} overflow 64-bit byte counts",
            i.dims
        ));
    };
    if !i.offset.is_multiple_of(alignment) {
        return fail(format!(
            "offset {} is not a multiple of the alignment {alignment}",
            i.offset
        ));
    }
    let start = data_start.checked_add(i.offset);
    let range = start.and_then(|s| Some(s..s.checked_add(bytes)?));
    let range = match range.filter(|r| r.end <= file_len) {
        Some(r) => r,
        None => {
            return fail(format!(
                "its {bytes} bytes at data offset {} lie outside the {file_len}-byte file",
                i.offset
            ))
        }
    };
    let mut shape = Vec::with_capacity(i.dims.len());
    for &d in i.dims.iter().rev() {
        match usize::try_from(d) {
            Ok(d) => shape.push(d),
            Err(_) => return fail(format!("dim {d} does not fit this machine")),
        }
    }
    Ok(GgufTensor {
        name: i.name,
        ggml_type: t,
        shape,
        range,
    })
}

/// Refuses two tensors of one name, and two whose bytes overlap.
fn check_disjoint(tensors: &[GgufTensor]) -> Result<()> {
    let mut names = std::collections::HashSet::new();
    for t in tensors {
        if !names.insert(t.name.as_str()) {
            return Err(bad("two tensors have this name").in_tensor(&t.name));
        }
    }
    let mut order: Vec<&GgufTensor> = tensors.iter().filter(|t| !t.range.is_empty()).collect();
    order.sort_by_key(|t| t.range.start);
    for w in order.windows(2) {
        if w[1].range.start < w[0].range.end {
            return Err(bad(format!(
                "its bytes {}..{} overlap those of tensor '{}' ({}..{})",
                w[1].range.start, w[1].range.end, w[0].name, w[0].range.start, w[0].range.end
            ))
            .in_tensor(&w[1].name));
        }
    }
    Ok(())
}

/// Reads and checks a GGUF file's header (the tensor data is not read).
pub fn read<S: Source + ?Sized>(file: &S) -> Result<GgufFile> {
    let mut c = Cursor {
        file,
        len: file.len(),
        buf: std::borrow::Cow::Borrowed(&[]),
        pos: 0,
    };
    let version = version(&mut c)?;
    let tensor_count = c.u64("the tensor count")?;
    // A tensor info takes at least 24 bytes: the name's length, n_dims, the type, the offset.
    if tensor_count > MAX_TENSORS || tensor_count > c.remaining() / 24 {
        return Err(bad(format!(
            "it claims {tensor_count} tensors (at most {MAX_TENSORS}, and 24 bytes each)"
        )));
    }
    let (metadata, alignment) = metadata(&mut c)?;
    if tensor_count > c.remaining() / 24 {
        return Err(bad(format!(
            "it claims {tensor_count} tensors, more than the {} bytes left can hold",
            c.remaining()
        )));
    }
    let mut infos = Vec::with_capacity(tensor_count as usize);
    for _ in 0..tensor_count {
        infos.push(info(&mut c)?);
    }
    let data_start = c.pos.div_ceil(alignment) * alignment;
    if data_start > c.len && !infos.is_empty() {
        return Err(bad(format!(
            "the data section would begin at {data_start}, past the end of the {}-byte file",
            c.len
        )));
    }
    let tensors = infos
        .into_iter()
        .map(|i| place(i, alignment, data_start, c.len))
        .collect::<Result<Vec<_>>>()?;
    check_disjoint(&tensors)?;
    Ok(GgufFile {
        version,
        alignment,
        metadata,
        tensors,
        data_start,
    })
}

#[cfg(test)]
pub(crate) mod tests;
