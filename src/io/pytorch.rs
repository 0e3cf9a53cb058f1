//! PyTorch checkpoints as `torch.save` writes them since PyTorch 1.6: a zip archive holding
//! `<archive>/data.pkl` (a pickle of the saved object, in which each tensor names a storage),
//! `<archive>/data/<key>` (the raw bytes of each storage, STORED, aligned to 64 bytes by recent
//! versions), `<archive>/byteorder` (optional; "little" or "big") and `<archive>/version`.
//!
//! Pickle is a program for a stack machine whose instructions may import and call any Python
//! function: `torch.load` without `weights_only` runs arbitrary code from the file. This reader
//! does not evaluate the pickle; it interprets the opcodes that build plain values (dicts, lists,
//! tuples, strings, numbers, booleans, None) and accepts, as the only callables, the handful of
//! torch functions that rebuild a tensor from a storage (see [`Callable`]). Any other global, and
//! the opcodes that build arbitrary objects, are refused with an error that names what was found.
//! Nothing from the file is ever executed; the "calls" below are Rust code that check their
//! arguments and record a tensor's storage, offset, shape and strides.
//!
//! The result is a list of tensors, each a byte range *inside the original file* (the storage
//! entry's data plus the tensor's offset), so tensors are read lazily as in safetensors. Every
//! count and length read is checked before anything is allocated for it: the pickle is bounded in
//! size ([`MAX_PICKLE_LEN`]); values live in one arena bounded in length ([`MAX_OBJECTS`]) so a
//! pickle that reuses an object many times (memo GET) shares it instead of copying it; the stack,
//! the mark stack and the memo are bounded; walking the object for tensors is bounded in depth and
//! in visits. docs/READERS.md lists what is accepted and refused.

use std::collections::HashMap;
use std::ops::Range;

use super::zip;
use super::MAX_RANK;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::source::Source;

/// Largest `data.pkl` read (it holds names and shapes, not data: a few MiB for the largest models).
pub const MAX_PICKLE_LEN: u64 = 256 << 20;
/// Most values (strings, containers, tensors...) the pickle may build.
pub const MAX_OBJECTS: usize = 1 << 23;
/// Most items on the unpickler's stack, and most open marks.
pub const MAX_STACK: usize = 1 << 20;
pub const MAX_MARKS: usize = 1 << 12;
/// Most memo entries.
pub const MAX_MEMO: usize = 1 << 22;
/// Most tensors in one checkpoint.
pub const MAX_TENSORS: usize = 1 << 20;
/// Deepest nesting of containers walked to find tensors (`{"model": {"state_dict": ...}}` is 2).
pub const MAX_NESTING: usize = 64;
/// Most container items visited while finding tensors: a pickle can make a small graph whose
/// paths are exponentially many (a list holding another twice, nested), which must not be walked.
const MAX_VISITS: usize = 1 << 24;

/// The name of the tensor when the saved object is one tensor (`torch.save(t, "t.pt")`).
pub const ROOT_TENSOR_NAME: &str = "tensor";

/// Why a reader refuses to run code, said once for every forbidden callable.
const NEVER_RUNS_CODE: &str =
    "lowbit reads only tensors and plain containers; it never runs code from a checkpoint";

/// The first bytes of a legacy (pre-1.6, non-zip) `torch.save` file: pickle protocol 2, then
/// the magic number 0x1950a86a20f9469cfc6c as a LONG1 of 10 bytes.
pub const LEGACY_MAGIC: &[u8] = &[
    0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19,
];

/// One tensor of a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TorchTensor {
    /// Dict keys from the root joined with `.` (`model.encoder.weight`).
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Absolute byte range in the file (inside the storage's zip entry). Tensors that are views of
    /// one storage may overlap.
    pub range: Range<u64>,
}

/// A checkpoint's tensors, in the order the pickle names them (a state dict's order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TorchCheckpoint {
    /// The archive's top folder (`archive` for most files, the file's stem for recent torch).
    pub archive: String,
    pub tensors: Vec<TorchTensor>,
}

/// Reads the zip directory, `data.pkl` and the storages' places; the tensor bytes are not read.
pub fn read<S: Source + ?Sized>(file: &S) -> Result<TorchCheckpoint> {
    let dir = zip::read_directory(file)?;
    let archive = archive_name(&dir)?;
    let entry = |name: &str| dir.find(&format!("{archive}/{name}"));
    if let Some(e) = entry("byteorder") {
        let r = stored_range(file, &dir, e)?;
        if r.end - r.start > 16 {
            return Err(Error::invalid("byteorder entry longer than 16 bytes"));
        }
        let order = file.read(r)?;
        match order.as_ref() {
            b"little" => {}
            b"big" => {
                return Err(Error::unsupported(
                    "a big-endian PyTorch checkpoint (byteorder 'big'): load and save it again \
                     on a little-endian machine, or convert it to safetensors",
                ))
            }
            other => {
                return Err(Error::invalid(format!(
                    "byteorder entry says {:?}, neither 'little' nor 'big'",
                    String::from_utf8_lossy(other)
                )))
            }
        }
    }
    let pkl_entry = entry("data.pkl").expect("archive_name found it");
    let pkl_range = stored_range(file, &dir, pkl_entry)?;
    if pkl_range.end - pkl_range.start > MAX_PICKLE_LEN {
        return Err(Error::unsupported(format!(
            "data.pkl of {} bytes, more than the {MAX_PICKLE_LEN} read",
            pkl_range.end - pkl_range.start
        )));
    }
    let pkl = file.read(pkl_range)?;
    let pickled = unpickle(&pkl).map_err(|e| prefix_reason(e, "data.pkl: "))?;
    let found = find_tensors(&pickled)?;
    let mut tensors = Vec::with_capacity(found.len());
    // Storage entries checked once however many tensors view them.
    let mut storages: HashMap<&str, Range<u64>> = HashMap::new();
    // Storage entries by name: a large model has tens of thousands.
    let by_name: HashMap<&str, &zip::Entry> =
        dir.entries.iter().map(|e| (e.name.as_str(), e)).collect();
    for (name, id) in found {
        let t = place_tensor(file, &dir, &by_name, &archive, &pickled, id, &mut storages)
            .map_err(|e| e.in_tensor(&name))?;
        tensors.push(TorchTensor {
            name,
            dtype: t.0,
            shape: t.1,
            range: t.2,
        });
    }
    Ok(TorchCheckpoint { archive, tensors })
}

/// The archive's top folder: the one `X` with an entry `X/data.pkl`. A zip without one is no
/// torch checkpoint; one with code in it is a TorchScript archive.
fn archive_name(dir: &zip::Directory) -> Result<String> {
    let mut names = dir
        .entries
        .iter()
        .filter_map(|e| e.name.strip_suffix("/data.pkl"))
        .filter(|prefix| !prefix.contains('/'));
    let Some(archive) = names.next() else {
        let listed: Vec<&str> = dir
            .entries
            .iter()
            .take(3)
            .map(|e| e.name.as_str())
            .collect();
        let npz = !dir.entries.is_empty() && dir.entries.iter().all(|e| e.name.ends_with(".npy"));
        return Err(Error::unsupported(format!(
            "a zip archive that is not a PyTorch checkpoint (no <name>/data.pkl entry; it holds \
             {} entries{}{}){}",
            dir.entries.len(),
            if listed.is_empty() { "" } else { ", e.g. " },
            listed.join(", "),
            if npz {
                "; it looks like a numpy .npz: lowbit reads one array per .npy file"
            } else {
                ""
            }
        )));
    };
    if names.next().is_some() {
        return Err(Error::invalid(
            "several <name>/data.pkl entries: which one is the checkpoint is ambiguous",
        ));
    }
    let code = format!("{archive}/code/");
    if dir.entries.iter().any(|e| e.name.starts_with(&code)) {
        return Err(Error::unsupported(
            "a TorchScript archive (torch.jit.save): it holds code, not only weights; save the \
             weights with torch.save(model.state_dict(), path) and compress that",
        ));
    }
    Ok(archive.to_string())
}

/// The data range of an entry lowbit can read in place: STORED, not encrypted, sizes agreeing.
fn stored_range<S: Source + ?Sized>(
    file: &S,
    dir: &zip::Directory,
    entry: &zip::Entry,
) -> Result<Range<u64>> {
    if entry.encrypted() {
        return Err(Error::unsupported(format!(
            "zip entry '{}' is encrypted",
            entry.name
        )));
    }
    if entry.method != zip::STORED {
        return Err(Error::unsupported(format!(
            "zip entry '{}' is compressed (method {}{}): lowbit reads tensors in place and \
             reads only uncompressed (STORED) entries, as torch.save writes them; unzip and \
             re-zip with `zip -0`, or load and save it again with torch.save",
            entry.name,
            entry.method,
            if entry.method == 8 { ", deflate" } else { "" }
        )));
    }
    if entry.compressed_size != entry.size {
        return Err(Error::invalid(format!(
            "zip entry '{}' is stored but its sizes differ ({} and {} bytes)",
            entry.name, entry.compressed_size, entry.size
        )));
    }
    zip::data_range(file, dir, entry)
}

fn prefix_reason(e: Error, prefix: &str) -> Error {
    match e {
        Error::InvalidInput {
            file,
            tensor,
            reason,
        } => Error::InvalidInput {
            file,
            tensor,
            reason: format!("{prefix}{reason}"),
        },
        Error::Unsupported {
            file,
            tensor,
            reason,
        } => Error::Unsupported {
            file,
            tensor,
            reason: format!("{prefix}{reason}"),
        },
        other => other,
    }
}

// ---------------------------------------------------------------------------------------------
// The values a pickle may build.

/// A value on the stack or in a container. Containers, strings and tensors live in the arena and
/// are referred to by index, so a value is copied, never a tree: a memo GET of a large object costs
/// nothing, dropping a deep structure does not recurse, and a container that holds itself is only a
/// cycle of indices.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Obj(u32),
}

#[derive(Clone, Debug)]
enum Object {
    Str(String),
    /// A `bytes` value: only its being there matters (no tensor is in it).
    Bytes,
    /// An integer beyond 64 bits (a seed, a hash): kept only as "a number".
    BigInt,
    List(Vec<Value>),
    Tuple(Vec<Value>),
    /// In insertion order; a set is read as a list of its items.
    Dict(Vec<(Value, Value)>),
    Callable(Callable),
    /// A storage named by a persistent id.
    Storage(Storage),
    Tensor(Tensor),
}

impl Object {
    fn kind(&self) -> &'static str {
        match self {
            Object::Str(_) => "a string",
            Object::Bytes => "bytes",
            Object::BigInt => "an integer",
            Object::List(_) => "a list",
            Object::Tuple(_) => "a tuple",
            Object::Dict(_) => "a dict",
            Object::Callable(_) => "a global",
            Object::Storage(_) => "a storage",
            Object::Tensor(_) => "a tensor",
        }
    }
}

/// The globals a checkpoint may name. Each is a tag or a pure function of plain values, applied by
/// Rust code: none runs anything from the file.
#[derive(Clone, Debug, PartialEq)]
enum Callable {
    /// `collections.OrderedDict`: `()` gives an empty dict (a state dict's type).
    OrderedDict,
    /// `torch._utils._rebuild_tensor` / `_v2` / `_v3`: a tensor from (storage, offset, size,
    /// stride, ...).
    RebuildTensor,
    RebuildTensorV2,
    RebuildTensorV3,
    /// `torch._utils._rebuild_parameter` (and `_with_state`): an `nn.Parameter` is its tensor.
    RebuildParameter,
    RebuildParameterWithState,
    /// `torch.FloatStorage` etc. and `torch.storage.UntypedStorage`: only a tag in a storage's
    /// persistent id (the class name, e.g. `FloatStorage`).
    StorageType(String),
    /// `torch.float8_e4m3fn` etc.: the dtype argument of `_rebuild_tensor_v3` (the name).
    DType(String),
    /// `torch.device('cuda', 0)`: read as its string.
    Device,
    /// `torch.Size((2, 3))`: read as its tuple.
    Size,
    /// `_codecs.encode(s, 'latin1')`: how pickle protocol 2 writes a `bytes` value.
    CodecsEncode,
}

#[derive(Clone, Debug)]
struct Storage {
    /// The storage class name (`FloatStorage`, `UntypedStorage`).
    type_name: String,
    key: String,
    /// Elements of the storage's dtype (bytes for `UntypedStorage`).
    numel: u64,
}

#[derive(Clone, Debug)]
struct Tensor {
    storage: u32,
    offset: u64,
    shape: Vec<u64>,
    stride: Vec<i64>,
    /// `_rebuild_tensor_v3`'s dtype name; otherwise the storage class says the dtype.
    dtype: Option<String>,
}

/// The storage classes torch pickles and lowbit's dtype for each (`None`: known, not supported).
const STORAGE_TYPES: &[(&str, Option<DType>)] = &[
    ("FloatStorage", Some(DType::F32)),
    ("HalfStorage", Some(DType::F16)),
    ("BFloat16Storage", Some(DType::BF16)),
    ("DoubleStorage", Some(DType::F64)),
    ("IntStorage", Some(DType::I32)),
    ("LongStorage", Some(DType::I64)),
    ("ShortStorage", Some(DType::I16)),
    ("CharStorage", Some(DType::I8)),
    ("ByteStorage", Some(DType::U8)),
    ("BoolStorage", Some(DType::Bool)),
    ("ComplexFloatStorage", None),
    ("ComplexDoubleStorage", None),
    ("QInt8Storage", None),
    ("QInt32Storage", None),
    ("QUInt8Storage", None),
    ("QUInt4x2Storage", None),
    ("QUInt2x4Storage", None),
];

/// `torch.<dtype>` names `_rebuild_tensor_v3` takes (the dtypes without a storage class), and the
/// common ones, with lowbit's dtype (`None`: known, not supported).
const DTYPE_NAMES: &[(&str, Option<DType>)] = &[
    ("float32", Some(DType::F32)),
    ("float16", Some(DType::F16)),
    ("bfloat16", Some(DType::BF16)),
    ("float64", Some(DType::F64)),
    ("int8", Some(DType::I8)),
    ("int16", Some(DType::I16)),
    ("int32", Some(DType::I32)),
    ("int64", Some(DType::I64)),
    ("uint8", Some(DType::U8)),
    ("uint16", Some(DType::U16)),
    ("uint32", Some(DType::U32)),
    ("uint64", Some(DType::U64)),
    ("bool", Some(DType::Bool)),
    ("float8_e4m3fn", Some(DType::F8E4M3)),
    ("float8_e5m2", Some(DType::F8E5M2)),
    ("float8_e4m3fnuz", None),
    ("float8_e5m2fnuz", None),
    ("float8_e8m0fnu", None),
    ("float4_e2m1fn_x2", None),
    ("complex32", None),
    ("complex64", None),
    ("complex128", None),
    ("bits8", None),
    ("bits16", None),
];

/// The callable a global names, or the error that refuses it.
fn resolve_global(module: &str, name: &str) -> Result<Callable> {
    let c = match (module, name) {
        ("collections", "OrderedDict") => Callable::OrderedDict,
        ("torch._utils", "_rebuild_tensor") => Callable::RebuildTensor,
        ("torch._utils", "_rebuild_tensor_v2") => Callable::RebuildTensorV2,
        ("torch._utils", "_rebuild_tensor_v3") => Callable::RebuildTensorV3,
        ("torch._utils", "_rebuild_parameter") => Callable::RebuildParameter,
        ("torch._utils", "_rebuild_parameter_with_state") => Callable::RebuildParameterWithState,
        ("torch", "device") => Callable::Device,
        ("torch", "Size") => Callable::Size,
        ("_codecs", "encode") => Callable::CodecsEncode,
        ("torch.storage", "UntypedStorage") | ("torch", "UntypedStorage") => {
            Callable::StorageType("UntypedStorage".into())
        }
        ("torch", n) if STORAGE_TYPES.iter().any(|(s, _)| *s == n) => {
            Callable::StorageType(n.to_string())
        }
        ("torch", n) if DTYPE_NAMES.iter().any(|(s, _)| *s == n) => Callable::DType(n.to_string()),
        _ => {
            let hint = if (module, name) == ("torch.storage", "_load_from_bytes") {
                " (a storage pickled inside the pickle, as old torch versions did)"
            } else {
                ""
            };
            return Err(Error::unsupported(format!(
                "forbidden global '{module}.{name}'{hint} ({NEVER_RUNS_CODE})"
            )));
        }
    };
    Ok(c)
}

// ---------------------------------------------------------------------------------------------
// The unpickler.

/// The object a pickle built: the arena and the root value.
struct Pickled {
    objects: Vec<Object>,
    root: Value,
}

impl Pickled {
    fn get(&self, v: Value) -> Option<&Object> {
        match v {
            Value::Obj(i) => self.objects.get(i as usize),
            _ => None,
        }
    }
}

struct Machine<'a> {
    data: &'a [u8],
    at: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    objects: Vec<Object>,
}

/// Opcodes refused, with their pickletools names.
fn refused_opcode(op: u8) -> Option<&'static str> {
    Some(match op {
        b'i' => "INST",
        b'o' => "OBJ",
        0x81 => "NEWOBJ",
        0x92 => "NEWOBJ_EX",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        b'P' => "PERSID",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        b'I' => "INT",
        b'L' => "LONG",
        b'F' => "FLOAT",
        b'S' => "STRING",
        b'V' => "UNICODE",
        b'p' => "PUT",
        b'g' => "GET",
        _ => return None,
    })
}

fn unpickle(data: &[u8]) -> Result<Pickled> {
    let mut m = Machine {
        data,
        at: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        objects: Vec::new(),
    };
    let root = m.run()?;
    Ok(Pickled {
        objects: m.objects,
        root,
    })
}

impl<'a> Machine<'a> {
    fn err(&self, at: usize, what: impl std::fmt::Display) -> Error {
        Error::invalid(format!("{what} (at byte {at})"))
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8]> {
        let data = self.data;
        let start = self.at;
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| start.checked_add(n))
            .filter(|&e| e <= data.len())
            .ok_or_else(|| {
                self.err(
                    start,
                    format!(
                        "{n} bytes needed, {} left: the pickle is truncated or lies about a length",
                        data.len() - start
                    ),
                )
            })?;
        self.at = end;
        Ok(&data[start..end])
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn le<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N as u64)?);
        Ok(a)
    }

    fn line(&mut self) -> Result<&'a str> {
        let rest = &self.data[self.at..];
        let n = rest
            .iter()
            .take(1024)
            .position(|&b| b == b'\n')
            .ok_or_else(|| self.err(self.at, "a GLOBAL name without its newline"))?;
        let line = self.take(n as u64 + 1)?;
        std::str::from_utf8(&line[..n]).map_err(|_| self.err(self.at, "a GLOBAL name not UTF-8"))
    }

    fn new_obj(&mut self, o: Object) -> Result<Value> {
        if self.objects.len() >= MAX_OBJECTS {
            return Err(Error::unsupported(format!(
                "the pickle builds more than {MAX_OBJECTS} values"
            )));
        }
        self.objects.push(o);
        Ok(Value::Obj((self.objects.len() - 1) as u32))
    }

    fn push(&mut self, v: Value) -> Result<()> {
        if self.stack.len() >= MAX_STACK {
            return Err(self.err(self.at, format!("stack deeper than {MAX_STACK}")));
        }
        self.stack.push(v);
        Ok(())
    }

    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Result<Value> {
        if self.stack.len() <= self.floor() {
            return Err(self.err(self.at, "stack underflow"));
        }
        Ok(self.stack.pop().expect("checked above"))
    }

    fn top(&self) -> Result<Value> {
        match self.stack.last() {
            Some(&v) if self.stack.len() > self.floor() => Ok(v),
            _ => Err(self.err(self.at, "stack underflow")),
        }
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let m = self
            .marks
            .pop()
            .ok_or_else(|| self.err(self.at, "no MARK to pop to"))?;
        Ok(self.stack.split_off(m))
    }

    fn obj(&self, v: Value) -> Option<&Object> {
        match v {
            Value::Obj(i) => self.objects.get(i as usize),
            _ => None,
        }
    }

    fn obj_mut(&mut self, v: Value) -> Option<&mut Object> {
        match v {
            Value::Obj(i) => self.objects.get_mut(i as usize),
            _ => None,
        }
    }

    fn kind(&self, v: Value) -> &'static str {
        match v {
            Value::None => "None",
            Value::Bool(_) => "a bool",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Obj(_) => self.obj(v).map_or("?", Object::kind),
        }
    }

    fn string(&mut self, bytes: &[u8], at: usize) -> Result<Value> {
        let s = std::str::from_utf8(bytes).map_err(|_| self.err(at, "a string not UTF-8"))?;
        self.new_obj(Object::Str(s.to_string()))
    }

    fn memo_put(&mut self, index: u32) -> Result<()> {
        let v = self.top()?;
        if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&index) {
            return Err(Error::unsupported(format!(
                "the pickle's memo holds more than {MAX_MEMO} entries"
            )));
        }
        self.memo.insert(index, v);
        Ok(())
    }

    fn memo_get(&mut self, index: u32, at: usize) -> Result<()> {
        let v = *self
            .memo
            .get(&index)
            .ok_or_else(|| self.err(at, format!("memo index {index} was never stored")))?;
        self.push(v)
    }

    fn run(&mut self) -> Result<Value> {
        loop {
            let at = self.at;
            let op = self
                .u8()
                .map_err(|_| self.err(at, "the pickle ends before its STOP opcode"))?;
            if let Some(name) = refused_opcode(op) {
                let why = match op {
                    b'i' | b'o' | 0x81 | 0x92 => {
                        format!("it builds an arbitrary Python object; {NEVER_RUNS_CODE}")
                    }
                    0x82..=0x84 => "an extension-registry reference".to_string(),
                    0x97 | 0x98 => "an out-of-band buffer".to_string(),
                    b'P' => "a text persistent id; torch writes BINPERSID".to_string(),
                    _ => "a text opcode of pickle protocols 0 and 1; torch.save writes protocol 2 or later".to_string(),
                };
                return Err(Error::unsupported(format!(
                    "opcode {name} at byte {at} is not read ({why})"
                )));
            }
            if op == b'.' {
                return self.pop();
            }
            let known = self.literal(op, at)? || self.structure(op, at)? || self.control(op, at)?;
            if !known {
                return Err(self.err(at, format!("unknown pickle opcode 0x{op:02x}")));
            }
        }
    }

    /// Opcodes that push a number, a string or bytes. `false`: not one of them.
    fn literal(&mut self, op: u8, at: usize) -> Result<bool> {
        match op {
            b'N' => self.push(Value::None)?,
            0x88 => self.push(Value::Bool(true))?,
            0x89 => self.push(Value::Bool(false))?,
            b'J' => {
                let v = i32::from_le_bytes(self.le()?);
                self.push(Value::Int(v as i64))?
            }
            b'K' => {
                let v = self.u8()?;
                self.push(Value::Int(v as i64))?
            }
            b'M' => {
                let v = u16::from_le_bytes(self.le()?);
                self.push(Value::Int(v as i64))?
            }
            0x8a | 0x8b => {
                let n = if op == 0x8a {
                    self.u8()? as u64
                } else {
                    let n = i32::from_le_bytes(self.le()?);
                    u64::try_from(n).map_err(|_| self.err(at, "LONG4 of negative length"))?
                };
                let bytes = self.take(n)?;
                let v = if n <= 8 {
                    // Two's complement, little-endian, sign-extended from its top byte.
                    let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
                    let mut le = [if negative { 0xFF } else { 0 }; 8];
                    le[..bytes.len()].copy_from_slice(bytes);
                    Value::Int(i64::from_le_bytes(le))
                } else {
                    self.new_obj(Object::BigInt)?
                };
                self.push(v)?
            }
            b'G' => {
                let v = f64::from_be_bytes(self.le()?);
                self.push(Value::Float(v))?
            }
            b'X' | 0x8c | 0x8d => {
                let n = match op {
                    b'X' => u32::from_le_bytes(self.le()?) as u64,
                    0x8c => self.u8()? as u64,
                    _ => u64::from_le_bytes(self.le()?),
                };
                let bytes = self.take(n)?;
                let v = self.string(bytes, at)?;
                self.push(v)?
            }
            // Python 2 `str`: text when it is UTF-8, bytes otherwise.
            b'T' | b'U' => {
                let n = match op {
                    b'T' => {
                        let n = i32::from_le_bytes(self.le()?);
                        u64::try_from(n)
                            .map_err(|_| self.err(at, "BINSTRING of negative length"))?
                    }
                    _ => self.u8()? as u64,
                };
                let bytes = self.take(n)?;
                let o = match std::str::from_utf8(bytes) {
                    Ok(s) => Object::Str(s.to_string()),
                    Err(_) => Object::Bytes,
                };
                let v = self.new_obj(o)?;
                self.push(v)?
            }
            b'B' | b'C' | 0x8e | 0x96 => {
                let n = match op {
                    b'B' => u32::from_le_bytes(self.le()?) as u64,
                    b'C' => self.u8()? as u64,
                    _ => u64::from_le_bytes(self.le()?),
                };
                self.take(n)?;
                let v = self.new_obj(Object::Bytes)?;
                self.push(v)?
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Opcodes that build containers and move values on the stack. `false`: not one of them.
    fn structure(&mut self, op: u8, at: usize) -> Result<bool> {
        match op {
            b'(' => {
                if self.marks.len() >= MAX_MARKS {
                    return Err(self.err(at, format!("more than {MAX_MARKS} open MARKs")));
                }
                self.marks.push(self.stack.len());
            }
            b'0' => {
                if self.stack.len() > self.floor() {
                    self.stack.pop();
                } else if self.marks.pop().is_none() {
                    return Err(self.err(at, "stack underflow"));
                }
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let v = self.top()?;
                self.push(v)?;
            }
            b')' => {
                let v = self.new_obj(Object::Tuple(Vec::new()))?;
                self.push(v)?
            }
            b']' | 0x8f => {
                let v = self.new_obj(Object::List(Vec::new()))?;
                self.push(v)?
            }
            b'}' => {
                let v = self.new_obj(Object::Dict(Vec::new()))?;
                self.push(v)?
            }
            b't' | 0x91 => {
                let items = self.pop_mark()?;
                let o = match op {
                    b't' => Object::Tuple(items),
                    _ => Object::List(items),
                };
                let v = self.new_obj(o)?;
                self.push(v)?
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.pop()?);
                }
                items.reverse();
                let v = self.new_obj(Object::Tuple(items))?;
                self.push(v)?
            }
            b'l' => {
                let items = self.pop_mark()?;
                let v = self.new_obj(Object::List(items))?;
                self.push(v)?
            }
            b'd' => {
                let items = self.pop_mark()?;
                let pairs = self.pairs(items, at)?;
                let v = self.new_obj(Object::Dict(pairs))?;
                self.push(v)?
            }
            b'a' => {
                let item = self.pop()?;
                self.extend_list(vec![item], at)?
            }
            b'e' | 0x90 => {
                let items = self.pop_mark()?;
                self.extend_list(items, at)?
            }
            b's' => {
                let value = self.pop()?;
                let key = self.pop()?;
                self.extend_dict(vec![(key, value)], at)?
            }
            b'u' => {
                let items = self.pop_mark()?;
                let pairs = self.pairs(items, at)?;
                self.extend_dict(pairs, at)?
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The protocol, the memo, globals, persistent ids, calls and BUILD. `false`: not one of them.
    fn control(&mut self, op: u8, at: usize) -> Result<bool> {
        match op {
            0x80 => {
                let v = self.u8()?;
                if !(2..=5).contains(&v) {
                    return Err(Error::unsupported(format!(
                        "pickle protocol {v} (lowbit reads protocols 2 to 5)"
                    )));
                }
            }
            // FRAME: a buffering hint; its length must be there.
            0x95 => {
                let n = u64::from_le_bytes(self.le()?);
                if n > (self.data.len() - self.at) as u64 {
                    return Err(self.err(at, format!("a frame of {n} bytes past the end")));
                }
            }
            b'q' => {
                let i = self.u8()? as u32;
                self.memo_put(i)?
            }
            b'r' => {
                let i = u32::from_le_bytes(self.le()?);
                self.memo_put(i)?
            }
            0x94 => {
                let i =
                    u32::try_from(self.memo.len()).map_err(|_| self.err(at, "memo overflow"))?;
                self.memo_put(i)?
            }
            b'h' => {
                let i = self.u8()? as u32;
                self.memo_get(i, at)?
            }
            b'j' => {
                let i = u32::from_le_bytes(self.le()?);
                self.memo_get(i, at)?
            }
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                let c = resolve_global(module, name)?;
                let v = self.new_obj(Object::Callable(c))?;
                self.push(v)?
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (Some(Object::Str(module)), Some(Object::Str(name))) =
                    (self.obj(module), self.obj(name))
                else {
                    return Err(self.err(at, "STACK_GLOBAL of values that are not strings"));
                };
                let c = resolve_global(module, name)?;
                let v = self.new_obj(Object::Callable(c))?;
                self.push(v)?
            }
            b'Q' => {
                let pid = self.pop()?;
                let storage = self.storage(pid, at)?;
                let v = self.new_obj(Object::Storage(storage))?;
                self.push(v)?
            }
            b'R' => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let v = self.reduce(callable, args, at)?;
                self.push(v)?
            }
            b'b' => {
                let state = self.pop()?;
                let target = self.top()?;
                // A state dict's `_metadata` attribute (per-module versions) arrives as
                // BUILD on the OrderedDict; it holds no tensor and is dropped. Nothing else
                // has state to set.
                match (self.obj(target), self.obj(state)) {
                    (Some(Object::Dict(_)), Some(Object::Dict(_)) | None) => {}
                    _ => {
                        return Err(Error::unsupported(format!(
                            "BUILD (setting the state of an object) on {} at byte {at}: \
                             only a dict's attributes are read ({NEVER_RUNS_CODE})",
                            self.kind(target)
                        )))
                    }
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn pairs(&self, items: Vec<Value>, at: usize) -> Result<Vec<(Value, Value)>> {
        if !items.len().is_multiple_of(2) {
            return Err(self.err(at, "an odd number of items for a dict"));
        }
        Ok(items.chunks_exact(2).map(|kv| (kv[0], kv[1])).collect())
    }

    fn extend_list(&mut self, items: Vec<Value>, at: usize) -> Result<()> {
        let target = self.top()?;
        let kind = self.kind(target);
        match self.obj_mut(target) {
            Some(Object::List(list)) => {
                list.extend(items);
                Ok(())
            }
            _ => Err(self.err(at, format!("APPEND to {kind}, not a list"))),
        }
    }

    fn extend_dict(&mut self, pairs: Vec<(Value, Value)>, at: usize) -> Result<()> {
        let target = self.top()?;
        let kind = self.kind(target);
        match self.obj_mut(target) {
            Some(Object::Dict(dict)) => {
                dict.extend(pairs);
                Ok(())
            }
            _ => Err(self.err(at, format!("SETITEM on {kind}, not a dict"))),
        }
    }

    /// A storage from its persistent id `('storage', type, key, location, numel)`.
    fn storage(&self, pid: Value, at: usize) -> Result<Storage> {
        let bad = |what: &str| {
            self.err(
                at,
                format!(
                    "a persistent id that is not ('storage', storage type, key, location, \
                     numel): {what}"
                ),
            )
        };
        let Some(Object::Tuple(items)) = self.obj(pid) else {
            return Err(bad(self.kind(pid)));
        };
        if items.len() == 6 {
            return Err(bad(
                "6 items, as in the legacy (non-zip) format, whose storages this reader does not read",
            ));
        }
        let [tag, ty, key, _location, numel] = items.as_slice() else {
            return Err(bad(&format!("{} items", items.len())));
        };
        if !matches!(self.obj(*tag), Some(Object::Str(s)) if s == "storage") {
            return Err(bad("the first item is not 'storage'"));
        }
        let Some(Object::Callable(Callable::StorageType(type_name))) = self.obj(*ty) else {
            return Err(bad("the second item is not a storage type"));
        };
        let Some(Object::Str(key)) = self.obj(*key) else {
            return Err(bad("the key is not a string"));
        };
        let Value::Int(numel) = *numel else {
            return Err(bad("the element count is not an integer"));
        };
        let numel = u64::try_from(numel).map_err(|_| bad("a negative element count"))?;
        Ok(Storage {
            type_name: type_name.clone(),
            key: key.clone(),
            numel,
        })
    }

    fn ints(&self, v: Value, what: &str, at: usize) -> Result<Vec<i64>> {
        let Some(Object::Tuple(items)) = self.obj(v) else {
            return Err(self.err(at, format!("{what} is {}, not a tuple", self.kind(v))));
        };
        if items.len() > MAX_RANK {
            return Err(self.err(
                at,
                format!(
                    "{what} has {} dimensions, more than the {MAX_RANK} supported",
                    items.len()
                ),
            ));
        }
        items
            .iter()
            .map(|&i| match i {
                Value::Int(i) => Ok(i),
                other => Err(self.err(
                    at,
                    format!("{what} holds {}, not an integer", self.kind(other)),
                )),
            })
            .collect()
    }

    /// `_rebuild_tensor(storage, offset, size, stride)`, `_v2` (+ requires_grad, backward hooks,
    /// optional metadata), `_v3` (+ dtype, optional metadata): records the tensor, checks the
    /// arguments' types; whether it fits its storage is checked when the storage entry is found.
    fn rebuild_tensor(&mut self, c: &Callable, args: &[Value], at: usize) -> Result<Value> {
        let (n_min, n_max) = match *c {
            Callable::RebuildTensor => (4, 4),
            Callable::RebuildTensorV2 => (6, 7),
            _ => (7, 8),
        };
        if args.len() < n_min || args.len() > n_max {
            return Err(self.err(at, "_rebuild_tensor: unexpected arguments"));
        }
        let storage = match (args[0], self.obj(args[0])) {
            (Value::Obj(i), Some(Object::Storage(_))) => i,
            _ => {
                return Err(self.err(
                    at,
                    format!("_rebuild_tensor of {}, not a storage", self.kind(args[0])),
                ))
            }
        };
        let Value::Int(offset) = args[1] else {
            return Err(self.err(at, "a storage offset that is not an integer"));
        };
        let offset = u64::try_from(offset)
            .map_err(|_| self.err(at, format!("storage offset {offset} is negative")))?;
        let shape = self.ints(args[2], "size", at)?;
        let stride = self.ints(args[3], "stride", at)?;
        if shape.len() != stride.len() {
            return Err(self.err(
                at,
                format!(
                    "size has {} dimensions, stride {}",
                    shape.len(),
                    stride.len()
                ),
            ));
        }
        let shape = shape
            .into_iter()
            .map(|d| {
                u64::try_from(d).map_err(|_| self.err(at, format!("a negative dimension {d}")))
            })
            .collect::<Result<Vec<u64>>>()?;
        if *c != Callable::RebuildTensor {
            // Backward hooks are functions, which no checkpoint can hold here (any global
            // but the allowed ones is refused): the argument must be an empty dict.
            match self.obj(args[5]) {
                Some(Object::Dict(d)) if d.is_empty() => {}
                _ => return Err(self.err(at, "backward hooks that are not an empty dict")),
            }
        }
        let dtype = match *c {
            Callable::RebuildTensorV3 => match self.obj(args[6]) {
                Some(Object::Callable(Callable::DType(d))) => Some(d.clone()),
                _ => return Err(self.err(at, "_rebuild_tensor_v3 without a dtype")),
            },
            _ => None,
        };
        self.new_obj(Object::Tensor(Tensor {
            storage,
            offset,
            shape,
            stride,
            dtype,
        }))
    }

    /// A call of an allowed callable: checks the arguments and builds the value.
    fn reduce(&mut self, callable: Value, args: Value, at: usize) -> Result<Value> {
        let Some(Object::Callable(c)) = self.obj(callable) else {
            return Err(Error::unsupported(format!(
                "REDUCE (a call) of {} at byte {at}: only the allowed torch globals are called \
                 ({NEVER_RUNS_CODE})",
                self.kind(callable)
            )));
        };
        let c = c.clone();
        let Some(Object::Tuple(args)) = self.obj(args) else {
            return Err(self.err(at, "REDUCE with arguments that are not a tuple"));
        };
        // No allowed callable takes more than 8 arguments: checked before the copy, so a large
        // tuple fetched from the memo for each of many calls costs nothing.
        if args.len() > 8 {
            return Err(self.err(at, format!("a call with {} arguments", args.len())));
        }
        let args = args.clone();
        let wrong = |what: &str| self.err(at, format!("{what}: unexpected arguments"));
        match c {
            Callable::OrderedDict => {
                if !args.is_empty() {
                    return Err(wrong("OrderedDict"));
                }
                self.new_obj(Object::Dict(Vec::new()))
            }
            Callable::RebuildTensor | Callable::RebuildTensorV2 | Callable::RebuildTensorV3 => {
                self.rebuild_tensor(&c, &args, at)
            }
            Callable::RebuildParameter | Callable::RebuildParameterWithState => {
                let n = if c == Callable::RebuildParameter {
                    3
                } else {
                    4
                };
                if args.len() != n {
                    return Err(wrong("_rebuild_parameter"));
                }
                match self.obj(args[0]) {
                    Some(Object::Tensor(_)) => Ok(args[0]),
                    _ => Err(self.err(
                        at,
                        format!("a Parameter of {}, not a tensor", self.kind(args[0])),
                    )),
                }
            }
            Callable::Device => match args.as_slice() {
                [name] | [name, Value::Int(_)]
                    if matches!(self.obj(*name), Some(Object::Str(_))) =>
                {
                    Ok(*name)
                }
                _ => Err(wrong("torch.device")),
            },
            Callable::Size => match args.as_slice() {
                [dims] if matches!(self.obj(*dims), Some(Object::Tuple(_))) => Ok(*dims),
                _ => Err(wrong("torch.Size")),
            },
            Callable::CodecsEncode => {
                let [text, encoding] = args.as_slice() else {
                    return Err(wrong("_codecs.encode"));
                };
                match (self.obj(*text), self.obj(*encoding)) {
                    (Some(Object::Str(text)), Some(Object::Str(enc)))
                        if enc == "latin1" || enc == "latin-1" =>
                    {
                        if text.chars().any(|c| c as u32 > 0xFF) {
                            return Err(self.err(at, "latin1 text with a character past 255"));
                        }
                        self.new_obj(Object::Bytes)
                    }
                    _ => Err(wrong("_codecs.encode")),
                }
            }
            Callable::StorageType(name) | Callable::DType(name) => Err(Error::unsupported(
                format!("a call of torch.{name} at byte {at} ({NEVER_RUNS_CODE})"),
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Finding the tensors in the unpickled object.

/// Every tensor reachable from the root through dicts, lists and tuples, with its name: dict keys
/// (strings, or integers written in decimal) and list positions joined with `.`. Other values
/// (an epoch number, a learning rate, a config string) are skipped.
fn find_tensors(p: &Pickled) -> Result<Vec<(String, u32)>> {
    let mut out = Vec::new();
    let mut visits = 0usize;
    match p.get(p.root) {
        Some(Object::Tensor(_)) => {
            let Value::Obj(id) = p.root else {
                unreachable!("get returned an object")
            };
            out.push((ROOT_TENSOR_NAME.to_string(), id));
        }
        _ => walk(p, p.root, "", 0, &mut visits, &mut out)?,
    }
    let mut seen = std::collections::HashSet::new();
    for (name, _) in &out {
        if !seen.insert(name.as_str()) {
            return Err(Error::invalid("two tensors have this name").in_tensor(name));
        }
    }
    Ok(out)
}

fn walk(
    p: &Pickled,
    v: Value,
    prefix: &str,
    depth: usize,
    visits: &mut usize,
    out: &mut Vec<(String, u32)>,
) -> Result<()> {
    let join = |key: &str| {
        if prefix.is_empty() {
            key.to_string()
        } else {
            format!("{prefix}.{key}")
        }
    };
    let children: Vec<(String, Value)> = match p.get(v) {
        Some(Object::Dict(pairs)) => {
            let mut children = Vec::with_capacity(pairs.len());
            for &(k, v) in pairs {
                let key = match (k, p.get(k)) {
                    (_, Some(Object::Str(s))) => s.clone(),
                    (Value::Int(i), _) => i.to_string(),
                    _ if !holds_container(p, v) => continue,
                    (k, _) => {
                        return Err(Error::unsupported(format!(
                            "a dict key that is neither a string nor an integer ({:?}) holds a \
                             tensor or a container, under '{prefix}'",
                            k
                        )))
                    }
                };
                children.push((join(&key), v));
            }
            children
        }
        Some(Object::List(items) | Object::Tuple(items)) => items
            .iter()
            .enumerate()
            .map(|(i, &v)| (join(&i.to_string()), v))
            .collect(),
        _ => return Ok(()),
    };
    for (name, child) in children {
        *visits += 1;
        if *visits > MAX_VISITS {
            return Err(Error::unsupported(format!(
                "the pickled object has more than {MAX_VISITS} items to visit (shared containers?)"
            )));
        }
        match (child, p.get(child)) {
            (Value::Obj(id), Some(Object::Tensor(_))) => {
                if out.len() >= MAX_TENSORS {
                    return Err(Error::unsupported(format!(
                        "more than {MAX_TENSORS} tensors"
                    )));
                }
                out.push((name, id));
            }
            (_, Some(Object::Dict(_) | Object::List(_) | Object::Tuple(_))) => {
                if depth + 1 >= MAX_NESTING {
                    return Err(Error::unsupported(format!(
                        "containers nested more than {MAX_NESTING} deep (at '{name}')"
                    )));
                }
                walk(p, child, &name, depth + 1, visits, out)?;
            }
            _ => {}
        }
    }
    Ok(())
}

fn holds_container(p: &Pickled, v: Value) -> bool {
    matches!(
        p.get(v),
        Some(Object::Dict(_) | Object::List(_) | Object::Tuple(_) | Object::Tensor(_))
    )
}

/// A tensor's dtype, shape and byte range in the file; checks its storage entry (once per
/// storage), that the tensor lies inside its storage, and that it is contiguous.
#[allow(clippy::too_many_arguments)]
fn place_tensor<'p, S: Source + ?Sized>(
    file: &S,
    dir: &zip::Directory,
    by_name: &HashMap<&str, &zip::Entry>,
    archive: &str,
    p: &'p Pickled,
    id: u32,
    storages: &mut HashMap<&'p str, Range<u64>>,
) -> Result<(DType, Vec<usize>, Range<u64>)> {
    let Some(Object::Tensor(t)) = p.objects.get(id as usize) else {
        unreachable!("find_tensors returns tensors")
    };
    let Some(Object::Storage(s)) = p.objects.get(t.storage as usize) else {
        unreachable!("reduce checked the storage")
    };
    let untyped = s.type_name == "UntypedStorage";
    let (label, dtype) = match &t.dtype {
        Some(name) => (
            format!("torch.{name}"),
            DTYPE_NAMES
                .iter()
                .find(|(n, _)| n == name)
                .and_then(|d| d.1),
        ),
        None if untyped => ("torch.UntypedStorage".to_string(), Some(DType::U8)),
        None => (
            format!("torch.{}", s.type_name),
            STORAGE_TYPES
                .iter()
                .find(|(n, _)| *n == s.type_name)
                .and_then(|d| d.1),
        ),
    };
    let dtype = dtype
        .ok_or_else(|| Error::unsupported(format!("dtype {label} has no counterpart in lowbit")))?;
    let elem = dtype.size() as u64;
    // The storage's length in bytes, as its persistent id says.
    let storage_bytes = match (
        untyped,
        STORAGE_TYPES.iter().find(|(n, _)| *n == s.type_name),
    ) {
        (true, _) => Some(s.numel),
        (false, Some((_, Some(d)))) => s.numel.checked_mul(d.size() as u64),
        _ => None,
    }
    .ok_or_else(|| {
        Error::invalid(format!(
            "storage '{}' of {} x {} elements",
            s.key, s.numel, s.type_name
        ))
    })?;
    let range = match storages.get(s.key.as_str()) {
        Some(r) => r.clone(),
        None => {
            let name = format!("{archive}/data/{}", s.key);
            let entry = by_name.get(name.as_str()).ok_or_else(|| {
                Error::invalid(format!(
                    "the pickle names storage '{}', but the archive has no entry '{name}'",
                    s.key
                ))
            })?;
            let r = stored_range(file, dir, entry)?;
            storages.insert(s.key.as_str(), r.clone());
            r
        }
    };
    if range.end - range.start != storage_bytes {
        return Err(Error::invalid(format!(
            "storage '{}' is {} bytes in the archive, but its pickle says {} x {} = {storage_bytes}",
            s.key,
            range.end - range.start,
            s.numel,
            s.type_name
        )));
    }
    let mut numel = 1u64;
    for &d in &t.shape {
        numel = numel.checked_mul(d).ok_or_else(|| {
            Error::invalid(format!("element count of shape {:?} overflows", t.shape))
        })?;
    }
    let shape = t
        .shape
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<std::result::Result<Vec<usize>, _>>()
        .map_err(|_| Error::invalid(format!("shape {:?} does not fit in memory", t.shape)))?;
    // C order: each dimension's stride is the product of the later sizes. Dimensions of size 1
    // may have any stride (as torch's `is_contiguous` allows); an empty tensor is contiguous.
    let mut expected = 1i128;
    let mut contiguous = true;
    for (&d, &st) in t.shape.iter().zip(&t.stride).rev() {
        if d != 1 && st as i128 != expected {
            contiguous = false;
        }
        expected *= d as i128;
    }
    if !contiguous && numel > 0 {
        return Err(Error::unsupported(format!(
            "not contiguous (shape {:?}, stride {:?}): lowbit reads a tensor as one byte range; \
             save it with .contiguous() (e.g. {{k: v.contiguous() for k, v in sd.items()}})",
            t.shape, t.stride
        )));
    }
    let len = numel.checked_mul(elem);
    let start = t.offset.checked_mul(elem);
    let (Some(len), Some(start)) = (len, start) else {
        return Err(Error::invalid("byte length overflows"));
    };
    let end = start
        .checked_add(len)
        .filter(|&e| e <= storage_bytes)
        .ok_or_else(|| {
            Error::invalid(format!(
                "offset {} + {numel} elements of {dtype} run past storage '{}' ({storage_bytes} bytes)",
                t.offset, s.key
            ))
        })?;
    Ok((dtype, shape, range.start + start..range.start + end))
}

#[cfg(test)]
mod tests;
