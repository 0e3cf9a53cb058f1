//! The `.safetensors` layout: an 8-byte little-endian header length, a JSON header that maps tensor
//! names to `{dtype, shape, data_offsets}` (plus an optional `__metadata__` map of strings), then the
//! raw little-endian tensor bytes, with offsets relative to the end of the header.
//!
//! Reading validates everything a later stage relies on, so that code after it can slice the file
//! without checks: the header fits in the file and is at most [`MAX_HEADER_LEN`], names are unique,
//! every dtype is known, every shape's byte length equals its offset range, ranges lie inside the
//! file and do not overlap. Gaps between tensors and bytes after the last one are tolerated (they
//! are simply not part of any tensor). NaN/Inf values are not this module's business.
//!
//! Writing produces only the header; the caller streams the tensor bytes after it, contiguously and
//! in the order it planned, so a whole checkpoint never has to be in memory.
//!
//! This module does no file I/O: it works on byte slices (an mmap natively, a `Uint8Array` in the
//! browser) and on file lengths.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::MAX_RANK;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::source::Source;

/// Largest JSON header accepted, in bytes. Checked before anything is allocated for the header, so
/// a forged length cannot make the reader reserve gigabytes. (The reference implementation uses the
/// same bound.)
pub const MAX_HEADER_LEN: u64 = 100 * 1024 * 1024;

/// The key of the free-form string map in the header.
pub const METADATA_KEY: &str = "__metadata__";

/// One tensor of the header, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Byte range `[start, end)` of the tensor's data, relative to [`Header::data_start`].
    pub start: u64,
    pub end: u64,
}

impl TensorEntry {
    /// Number of elements (1 for a scalar, 0 if any dimension is 0). Cannot overflow: the reader
    /// checked that `numel * dtype.size() == end - start`.
    pub fn numel(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }

    /// Length of the tensor's data in bytes.
    pub fn byte_len(&self) -> u64 {
        self.end - self.start
    }
}

/// A validated header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Sorted by `start` (file order) so that reading them in turn is sequential; ties (zero-sized
    /// tensors) by `end`, then by name, so the order never depends on the JSON key order.
    pub tensors: Vec<TensorEntry>,
    /// The `__metadata__` map (empty when absent).
    pub metadata: BTreeMap<String, String>,
    /// Absolute file offset of the first data byte: 8 + the JSON header length.
    pub data_start: u64,
}

impl Header {
    /// Number of elements of tensor `i` (panics if `i` is out of range, like indexing).
    pub fn numel(&self, i: usize) -> u64 {
        self.tensors[i].numel()
    }

    /// Total number of elements over all tensors (the "parameters" of bits per weight). Cannot
    /// overflow: tensors occupy disjoint ranges of the file and every element is at least one byte.
    pub fn total_params(&self) -> u64 {
        self.tensors.iter().map(TensorEntry::numel).sum()
    }

    /// Absolute file byte range of tensor `i`.
    pub fn file_range(&self, i: usize) -> std::ops::Range<u64> {
        let t = &self.tensors[i];
        self.data_start + t.start..self.data_start + t.end
    }

    /// Index of the tensor called `name`, if any.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.tensors.iter().position(|t| t.name == name)
    }
}

/// From the first 8 bytes and the file length: the JSON header length, validated (at most
/// [`MAX_HEADER_LEN`], and the 8-byte prefix plus the header fit in the file).
pub fn header_len(first8: &[u8], file_len: u64) -> Result<u64> {
    let Some(prefix) = first8.get(..8) else {
        return Err(Error::invalid(format!(
            "not a safetensors file: {} bytes, shorter than the 8-byte header length",
            first8.len()
        )));
    };
    let mut le = [0u8; 8];
    le.copy_from_slice(prefix);
    let len = u64::from_le_bytes(le);
    if len > MAX_HEADER_LEN {
        return Err(Error::invalid(format!(
            "header length {len} bytes exceeds the limit of {MAX_HEADER_LEN} bytes"
        )));
    }
    if file_len < 8 || len > file_len - 8 {
        return Err(Error::invalid(format!(
            "header length {len} bytes runs past the end of the {file_len}-byte file"
        )));
    }
    Ok(len)
}

/// Parses and validates the JSON header (the bytes after the 8-byte length) of a file of `file_len`
/// bytes. Errors name the tensor concerned where there is one.
pub fn parse_header(json: &[u8], file_len: u64) -> Result<Header> {
    let data_start = 8u64
        .checked_add(json.len() as u64)
        .filter(|&s| s <= file_len)
        .ok_or_else(|| {
            Error::invalid(format!(
                "header of {} bytes does not fit in the {file_len}-byte file",
                json.len()
            ))
        })?;
    let data_len = file_len - data_start;

    let text = std::str::from_utf8(json).map_err(|e| {
        Error::invalid(format!(
            "header is not valid UTF-8 (at byte {})",
            e.valid_up_to()
        ))
    })?;

    // The key being parsed, so that a JSON error deep inside an entry can name its tensor.
    let current_key = RefCell::new(None::<String>);
    let mut de = serde_json::Deserializer::from_str(text);
    let raw = de
        .deserialize_map(HeaderVisitor {
            current_key: &current_key,
        })
        .and_then(|raw| de.end().map(|()| raw))
        .map_err(|e| {
            let err = Error::invalid(format!("header JSON: {e}"));
            match current_key.borrow().as_deref() {
                Some(name) if name != METADATA_KEY => err.in_tensor(name),
                _ => err,
            }
        })?;

    let mut tensors = Vec::with_capacity(raw.entries.len());
    for (name, entry) in raw.entries {
        let checked = check_entry(&name, entry, data_len).map_err(|e| e.in_tensor(&name))?;
        tensors.push(checked);
    }
    tensors.sort_by(|a, b| (a.start, a.end, &a.name).cmp(&(b.start, b.end, &b.name)));

    // Sorted by start, non-empty ranges overlap iff one starts before the previous one ends. Empty
    // ranges hold no bytes and overlap nothing.
    let mut previous: Option<&TensorEntry> = None;
    for t in tensors.iter().filter(|t| t.start < t.end) {
        if let Some(p) = previous {
            if t.start < p.end {
                return Err(Error::invalid(format!(
                    "data_offsets [{}, {}) overlap those of tensor '{}' [{}, {})",
                    t.start, t.end, p.name, p.start, p.end
                ))
                .in_tensor(&t.name));
            }
        }
        previous = Some(t);
    }

    Ok(Header {
        tensors,
        metadata: raw.metadata.unwrap_or_default(),
        data_start,
    })
}

/// Reads and validates the header of a file through a [`Source`]: the 8-byte length, then the JSON
/// header alone (the tensors are not read).
pub fn read_header_from<S: Source + ?Sized>(file: &S) -> Result<Header> {
    let file_len = file.len();
    let json_len = header_len(&file.prefix(8)?, file_len)?;
    parse_header(&file.read(8..8 + json_len)?, file_len)
}

/// Reads and validates the header of a whole file held in memory.
pub fn read_header(file: &[u8]) -> Result<Header> {
    let file_len = file.len() as u64;
    let len = header_len(file, file_len)?;
    // `header_len` checked 8 + len <= file.len(), so this is in range and fits usize.
    let json = file
        .get(8..8 + len as usize)
        .ok_or_else(|| Error::invalid("header runs past the end of the file"))?;
    parse_header(json, file_len)
}

/// The bytes of tensor `i` in `file`.
///
/// # Panics
/// If `i` is out of range or `file` is shorter than the file `h` was read from: both are bugs in
/// the caller, not properties of the input, since [`parse_header`] checked every range against the
/// file length.
pub fn tensor_bytes<'a>(file: &'a [u8], h: &Header, i: usize) -> &'a [u8] {
    let range = h.file_range(i);
    &file[range.start as usize..range.end as usize]
}

/// A tensor to be written: the data follows the header in the order given, contiguously.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedTensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl PlannedTensor {
    /// Byte length of the tensor's data, `None` on overflow.
    pub fn byte_len(&self) -> Option<u64> {
        self.shape
            .iter()
            .try_fold(self.dtype.size() as u64, |acc, &d| {
                acc.checked_mul(d as u64)
            })
    }
}

/// Encodes the header for `tensors` laid out contiguously in the given order: the 8-byte length,
/// then the JSON padded with spaces so the data starts at a multiple of 8 bytes. `__metadata__` is
/// written (first) only when `metadata` is not empty. Output is deterministic: keys in the given
/// order, metadata in key order.
///
/// Rejects duplicate names, a tensor named `__metadata__`, and sizes that overflow `u64`.
pub fn encode_header(
    tensors: &[PlannedTensor],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let mut json = String::from("{");
    let mut first = true;
    if !metadata.is_empty() {
        json.push_str(&json_string(METADATA_KEY)?);
        json.push(':');
        json.push_str(
            &serde_json::to_string(metadata)
                .map_err(|e| Error::invalid(format!("metadata: {e}")))?,
        );
        first = false;
    }
    let mut names = BTreeSet::new();
    let mut offset = 0u64;
    for t in tensors {
        if t.name == METADATA_KEY {
            return Err(Error::invalid(format!(
                "'{METADATA_KEY}' is reserved and cannot name a tensor"
            )));
        }
        if !names.insert(t.name.as_str()) {
            return Err(Error::invalid("duplicate tensor name").in_tensor(&t.name));
        }
        if t.shape.len() > MAX_RANK {
            return Err(Error::invalid(format!(
                "{} dimensions, more than the {MAX_RANK} supported",
                t.shape.len()
            ))
            .in_tensor(&t.name));
        }
        let end = t
            .byte_len()
            .and_then(|len| offset.checked_add(len))
            .ok_or_else(|| Error::invalid("byte length overflows").in_tensor(&t.name))?;
        if !first {
            json.push(',');
        }
        first = false;
        let shape = t
            .shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(",");
        json.push_str(&format!(
            "{}:{{\"dtype\":\"{}\",\"shape\":[{shape}],\"data_offsets\":[{offset},{end}]}}",
            json_string(&t.name)?,
            t.dtype.name()
        ));
        offset = end;
    }
    json.push('}');
    while json.len() % 8 != 0 {
        json.push(' ');
    }
    if json.len() as u64 > MAX_HEADER_LEN {
        return Err(Error::invalid(format!(
            "header of {} bytes exceeds the limit of {MAX_HEADER_LEN} bytes",
            json.len()
        )));
    }
    let mut out = Vec::with_capacity(8 + json.len());
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(json.as_bytes());
    Ok(out)
}

fn json_string(s: &str) -> Result<String> {
    serde_json::to_string(s).map_err(|e| Error::invalid(format!("name {s:?}: {e}")))
}

/// Checks one entry against the data area of `data_len` bytes.
fn check_entry(name: &str, raw: RawEntry, data_len: u64) -> Result<TensorEntry> {
    let dtype = DType::from_name(&raw.dtype)
        .ok_or_else(|| Error::unsupported(format!("unknown dtype '{}'", raw.dtype)))?;
    let mut shape = Vec::with_capacity(raw.shape.len());
    let mut numel = 1u64;
    for &d in &raw.shape {
        let dim = usize::try_from(d)
            .map_err(|_| Error::invalid(format!("dimension {d} does not fit in memory")))?;
        shape.push(dim);
        numel = numel.checked_mul(d).ok_or_else(|| {
            Error::invalid(format!("element count of shape {:?} overflows", raw.shape))
        })?;
    }
    let expected_len = numel.checked_mul(dtype.size() as u64).ok_or_else(|| {
        Error::invalid(format!(
            "byte length of shape {:?} x {dtype} overflows",
            raw.shape
        ))
    })?;
    let [start, end] = raw.data_offsets;
    if start > end {
        return Err(Error::invalid(format!(
            "data_offsets [{start}, {end}]: start after end"
        )));
    }
    if end > data_len {
        return Err(Error::invalid(format!(
            "data_offsets [{start}, {end}] run past the end of the data ({data_len} bytes)"
        )));
    }
    if end - start != expected_len {
        return Err(Error::invalid(format!(
            "data_offsets [{start}, {end}] hold {} bytes but shape {:?} x {dtype} needs {expected_len}",
            end - start,
            raw.shape
        )));
    }
    Ok(TensorEntry {
        name: name.to_string(),
        dtype,
        shape,
        start,
        end,
    })
}

// ---------------------------------------------------------------------------------------------
// JSON parsing. A streaming visitor instead of `serde_json::Value`: it sees duplicate keys (which a
// map would silently collapse to the last one), and it allocates only what it keeps, so a hostile
// header cannot expand into a tree many times its size.

struct RawHeader {
    /// In JSON order; names are unique.
    entries: Vec<(String, RawEntry)>,
    metadata: Option<BTreeMap<String, String>>,
}

struct RawEntry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

struct HeaderVisitor<'a> {
    current_key: &'a RefCell<Option<String>>,
}

impl<'de> Visitor<'de> for HeaderVisitor<'_> {
    type Value = RawHeader;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object mapping tensor names to entries")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawHeader, A::Error> {
        let mut entries = Vec::new();
        let mut names = BTreeSet::new();
        let mut metadata = None;
        let mut metadata_seen = false;
        while let Some(key) = map.next_key::<String>()? {
            *self.current_key.borrow_mut() = Some(key.clone());
            if key == METADATA_KEY {
                if metadata_seen {
                    return Err(de::Error::custom(format!("duplicate key '{METADATA_KEY}'")));
                }
                metadata_seen = true;
                metadata = map.next_value_seed(MetadataSeed)?;
            } else {
                if names.contains(&key) {
                    return Err(de::Error::custom("duplicate tensor name"));
                }
                let entry = map.next_value_seed(EntrySeed)?;
                names.insert(key.clone());
                entries.push((key, entry));
            }
            // A syntax error between entries belongs to no tensor.
            *self.current_key.borrow_mut() = None;
        }
        Ok(RawHeader { entries, metadata })
    }
}

/// `__metadata__`: a map of strings with unique keys, or `null` (which the reference implementation
/// also accepts) meaning none.
struct MetadataSeed;

impl<'de> DeserializeSeed<'de> for MetadataSeed {
    type Value = Option<BTreeMap<String, String>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(MetadataVisitor)
    }
}

struct MetadataVisitor;

impl<'de> Visitor<'de> for MetadataVisitor {
    type Value = Option<BTreeMap<String, String>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "'{METADATA_KEY}' as an object of string values")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map
                .next_value::<String>()
                .map_err(|e| de::Error::custom(format!("'{METADATA_KEY}' key '{key}': {e}")))?;
            if out.insert(key.clone(), value).is_some() {
                return Err(de::Error::custom(format!(
                    "duplicate '{METADATA_KEY}' key '{key}'"
                )));
            }
        }
        Ok(Some(out))
    }
}

struct EntrySeed;

impl<'de> DeserializeSeed<'de> for EntrySeed {
    type Value = RawEntry;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RawEntry, D::Error> {
        d.deserialize_map(EntryVisitor)
    }
}

struct EntryVisitor;

impl<'de> Visitor<'de> for EntryVisitor {
    type Value = RawEntry;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a tensor entry: an object with dtype, shape and data_offsets")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawEntry, A::Error> {
        let mut dtype = None;
        let mut shape = None;
        let mut data_offsets = None;
        while let Some(key) = map.next_key::<String>()? {
            let duplicate = match key.as_str() {
                "dtype" => dtype.replace(map.next_value::<String>()?).is_some(),
                "shape" => shape.replace(map.next_value_seed(ShapeSeed)?).is_some(),
                "data_offsets" => data_offsets
                    .replace(map.next_value_seed(OffsetsSeed)?)
                    .is_some(),
                // Unknown fields are ignored, as the reference implementation does.
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    false
                }
            };
            if duplicate {
                return Err(de::Error::custom(format!("duplicate field '{key}'")));
            }
        }
        Ok(RawEntry {
            dtype: dtype.ok_or_else(|| de::Error::missing_field("dtype"))?,
            shape: shape.ok_or_else(|| de::Error::missing_field("shape"))?,
            data_offsets: data_offsets.ok_or_else(|| de::Error::missing_field("data_offsets"))?,
        })
    }
}

struct ShapeSeed;

impl<'de> DeserializeSeed<'de> for ShapeSeed {
    type Value = Vec<u64>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<u64>, D::Error> {
        d.deserialize_seq(ShapeVisitor)
    }
}

struct ShapeVisitor;

impl<'de> Visitor<'de> for ShapeVisitor {
    type Value = Vec<u64>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "shape: an array of at most {MAX_RANK} non-negative integers"
        )
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u64>, A::Error> {
        let mut dims = Vec::new();
        while let Some(d) = seq.next_element_seed(Integer("a shape dimension"))? {
            if dims.len() == MAX_RANK {
                return Err(de::Error::custom(format!(
                    "shape has more than {MAX_RANK} dimensions"
                )));
            }
            dims.push(d);
        }
        Ok(dims)
    }
}

struct OffsetsSeed;

impl<'de> DeserializeSeed<'de> for OffsetsSeed {
    type Value = [u64; 2];
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<[u64; 2], D::Error> {
        d.deserialize_seq(OffsetsVisitor)
    }
}

struct OffsetsVisitor;

impl<'de> Visitor<'de> for OffsetsVisitor {
    type Value = [u64; 2];

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("data_offsets: an array of two non-negative integers [start, end]")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[u64; 2], A::Error> {
        let start = seq
            .next_element_seed(Integer("a data offset"))?
            .ok_or_else(|| de::Error::invalid_length(0, &self))?;
        let end = seq
            .next_element_seed(Integer("a data offset"))?
            .ok_or_else(|| de::Error::invalid_length(1, &self))?;
        if seq.next_element::<IgnoredAny>()?.is_some() {
            return Err(de::Error::invalid_length(3, &self));
        }
        Ok([start, end])
    }
}

/// A non-negative integer that fits in u64; the label says which field it is for the error message.
struct Integer(&'static str);

impl<'de> DeserializeSeed<'de> for Integer {
    type Value = u64;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_u64(self)
    }
}

impl<'de> Visitor<'de> for Integer {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}: a non-negative integer below 2^64", self.0)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(name: &str, dtype: DType, shape: &[usize]) -> PlannedTensor {
        PlannedTensor {
            name: name.to_string(),
            dtype,
            shape: shape.to_vec(),
        }
    }

    /// A file from a raw JSON header and `data_len` zero bytes of data.
    fn file_with_json(json: &str, data_len: usize) -> Vec<u8> {
        let mut f = (json.len() as u64).to_le_bytes().to_vec();
        f.extend_from_slice(json.as_bytes());
        f.resize(f.len() + data_len, 0);
        f
    }

    #[test]
    fn header_is_padded_and_offsets_are_contiguous() {
        let tensors = [
            planned("b", DType::F32, &[2, 3]),
            planned("a", DType::BF16, &[5]),
            planned("empty", DType::I64, &[0, 4]),
            planned("scalar", DType::U8, &[]),
        ];
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        let head = encode_header(&tensors, &meta).unwrap();
        assert_eq!(head.len() % 8, 0);
        assert_eq!(
            u64::from_le_bytes(head[..8].try_into().unwrap()) as usize,
            head.len() - 8
        );
        let data_len = 24 + 10 + 1; // F32[2,3], BF16[5], I64[0,4], U8 scalar
        let mut file = head.clone();
        file.resize(head.len() + data_len, 7);
        let h = read_header(&file).unwrap();
        assert_eq!(h.data_start as usize, head.len());
        assert_eq!(h.metadata, meta);
        // File order is the planned order; the zero-sized tensor sorts before the one sharing its start.
        let names: Vec<_> = h.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["b", "a", "empty", "scalar"]);
        assert_eq!((h.tensors[1].start, h.tensors[1].end), (24, 34));
        assert_eq!(h.total_params(), 6 + 5 + 1);
        assert_eq!(tensor_bytes(&file, &h, 3).len(), 1);
    }

    #[test]
    fn metadata_is_omitted_when_empty() {
        let head = encode_header(&[planned("x", DType::F16, &[1])], &BTreeMap::new()).unwrap();
        assert!(!String::from_utf8_lossy(&head).contains(METADATA_KEY));
    }

    #[test]
    fn encoder_rejects_duplicates_and_reserved_names() {
        let dup = [
            planned("x", DType::F16, &[1]),
            planned("x", DType::F16, &[1]),
        ];
        assert!(encode_header(&dup, &BTreeMap::new()).is_err());
        let reserved = [planned(METADATA_KEY, DType::F16, &[1])];
        assert!(encode_header(&reserved, &BTreeMap::new()).is_err());
        let huge = [planned("x", DType::F64, &[usize::MAX, 2])];
        assert!(encode_header(&huge, &BTreeMap::new()).is_err());
    }

    #[test]
    fn gaps_and_trailing_bytes_are_tolerated() {
        let json = r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}}"#;
        let h = read_header(&file_with_json(json, 10)).unwrap();
        assert_eq!((h.tensors[0].start, h.tensors[0].end), (4, 6));
    }

    #[test]
    fn unknown_entry_fields_are_ignored_but_duplicate_fields_are_not() {
        let ok = r#"{"a":{"dtype":"U8","extra":[1,{"x":2}],"shape":[2],"data_offsets":[0,2]}}"#;
        assert!(read_header(&file_with_json(ok, 2)).is_ok());
        let dup = r#"{"a":{"dtype":"U8","dtype":"F32","shape":[2],"data_offsets":[0,2]}}"#;
        let err = read_header(&file_with_json(dup, 8)).unwrap_err();
        assert!(err.to_string().contains("tensor 'a'"), "{err}");
    }

    #[test]
    fn errors_between_entries_name_no_tensor() {
        let json = r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]} "b":{}}"#;
        let err = read_header(&file_with_json(json, 1)).unwrap_err();
        assert!(!err.to_string().contains("tensor '"), "{err}");
    }

    #[test]
    fn null_metadata_means_none() {
        let json = r#"{"__metadata__":null}"#;
        let h = read_header(&file_with_json(json, 0)).unwrap();
        assert!(h.metadata.is_empty() && h.tensors.is_empty());
    }

    #[test]
    fn deeply_nested_unknown_fields_do_not_overflow_the_stack() {
        // serde_json skips ignored values without recursion; where values are parsed (shape,
        // offsets, metadata) a nested array is a type error at the first bracket.
        let json = format!(
            r#"{{"a":{{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":{}{}}}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let h = read_header(&file_with_json(&json, 1)).unwrap();
        assert_eq!(h.tensors[0].shape, [1]);
        let json = format!(r#"{{"a":{{"shape":{}}}}}"#, "[".repeat(100_000));
        assert!(read_header(&file_with_json(&json, 1)).is_err());
    }
}
