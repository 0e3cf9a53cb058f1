//! The numpy `.npy` array format, versions 1.0, 2.0 and 3.0: the magic `\x93NUMPY`, a version, a
//! little-endian header length (2 bytes in 1.0, 4 bytes after), a header that is a Python dict
//! literal `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`, then the raw array bytes.
//!
//! Only plain little-endian numeric and boolean arrays in C order are read; big-endian data,
//! Fortran order, structured dtypes, strings, objects, complex numbers and datetimes are refused
//! with `Error::unsupported`. bfloat16 and the 8-bit floats have no npy spelling, so they cannot be
//! written. The header dict is parsed by a small parser for exactly the literal subset numpy
//! writes (strings, `True`/`False`, tuples of integers), never evaluated.
//!
//! The reader expects the file to hold one array: the data must fill the rest of the file exactly.

use super::MAX_RANK;
use crate::dtype::DType;
use crate::error::{Error, Result};

/// The first bytes of every `.npy` file (the one place the crate spells them).
pub const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// numpy aligns the start of the data to this many bytes (so it can be memory-mapped).
const ALIGN: usize = 64;

/// A validated `.npy` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpyHeader {
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Offset of the first data byte; the data runs to the end of the file.
    pub data_start: usize,
}

impl NpyHeader {
    /// Number of elements (1 for a 0-d array). Cannot overflow: the reader checked that
    /// `numel * dtype.size()` equals the data length.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Length of the data in bytes.
    pub fn byte_len(&self) -> usize {
        self.numel() * self.dtype.size()
    }
}

/// The npy type string of a dtype, `None` for the dtypes npy has no spelling for.
pub fn descr(dtype: DType) -> Option<&'static str> {
    Some(match dtype {
        DType::Bool => "|b1",
        DType::U8 => "|u1",
        DType::I8 => "|i1",
        DType::I16 => "<i2",
        DType::U16 => "<u2",
        DType::F16 => "<f2",
        DType::I32 => "<i4",
        DType::U32 => "<u4",
        DType::F32 => "<f4",
        DType::F64 => "<f8",
        DType::I64 => "<i8",
        DType::U64 => "<u8",
        DType::BF16 | DType::F8E5M2 | DType::F8E4M3 => return None,
    })
}

/// The dtype of an npy type string. The byte order of one-byte types does not matter, so any
/// order mark is accepted for them; wider types must be little-endian (`<`).
fn dtype_of_descr(text: &str) -> Result<DType> {
    let unsupported = |why: &str| Err(Error::unsupported(format!("npy dtype '{text}': {why}")));
    let mut chars = text.chars();
    let (Some(order), kind_size) = (chars.next(), chars.as_str()) else {
        return unsupported("empty type string");
    };
    let dtype = match kind_size {
        "b1" => DType::Bool,
        "u1" => DType::U8,
        "i1" => DType::I8,
        "i2" => DType::I16,
        "u2" => DType::U16,
        "f2" => DType::F16,
        "i4" => DType::I32,
        "u4" => DType::U32,
        "f4" => DType::F32,
        "f8" => DType::F64,
        "i8" => DType::I64,
        "u8" => DType::U64,
        _ => return unsupported("only boolean, integer and float types are read"),
    };
    match order {
        '<' => Ok(dtype),
        '|' | '=' | '>' if dtype.size() == 1 => Ok(dtype),
        '>' => unsupported("big-endian data; convert with arr.astype(arr.dtype.newbyteorder('<'))"),
        '=' => unsupported("native byte order is ambiguous; save with an explicit '<'"),
        _ => unsupported("unknown byte order mark"),
    }
}

/// Reads and validates the header of a whole `.npy` file held in memory: magic, version, the
/// header dict (exactly the keys `descr`, `fortran_order`, `shape`), and that the data after the
/// header is exactly `numel * dtype size` bytes.
pub fn read_header(file: &[u8]) -> Result<NpyHeader> {
    parse_header(file, file.len() as u64)
}

/// [`read_header`] from the file's first bytes (`file`: at least the whole header) and its length.
pub fn parse_header(file: &[u8], file_len: u64) -> Result<NpyHeader> {
    if file.len() < 10 || &file[..6] != MAGIC {
        return Err(Error::invalid("not an npy file (no \\x93NUMPY magic)"));
    }
    let (major, minor) = (file[6], file[7]);
    let (len_bytes, preamble) = match (major, minor) {
        (1, 0) => (2, 10),
        (2, 0) | (3, 0) => (4, 12),
        _ => {
            return Err(Error::unsupported(format!(
                "npy format version {major}.{minor} (1.0, 2.0 and 3.0 are read)"
            )))
        }
    };
    let Some(len_field) = file.get(8..8 + len_bytes) else {
        return Err(Error::invalid("npy file ends inside its header length"));
    };
    let header_len = len_field
        .iter()
        .rev()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    let data_start = (preamble as u64)
        .checked_add(header_len)
        .filter(|&s| s <= file_len)
        .ok_or_else(|| {
            Error::invalid(format!(
                "npy header of {header_len} bytes runs past the end of the {file_len}-byte file"
            ))
        })?;
    let data_start = usize::try_from(data_start)
        .ok()
        .filter(|&s| s <= file.len())
        .ok_or_else(|| {
            Error::invalid(format!(
                "npy header of {header_len} bytes is longer than lowbit reads ({} bytes)",
                file.len()
            ))
        })?;
    // Versions 1.0 and 2.0 are latin-1 and 3.0 UTF-8; the literals numpy writes are ASCII, and
    // anything else could only appear inside a string this reader would refuse anyway.
    let text = std::str::from_utf8(&file[preamble..data_start])
        .map_err(|_| Error::invalid("npy header is not ASCII/UTF-8 text"))?;
    let dict = parse_dict(text)?;

    let dtype = dtype_of_descr(&dict.descr)?;
    if dict.fortran_order {
        return Err(Error::unsupported(
            "Fortran-ordered npy array; save a C-ordered copy (np.ascontiguousarray)",
        ));
    }
    let mut shape = Vec::with_capacity(dict.shape.len());
    let mut byte_len = dtype.size() as u64;
    for &d in &dict.shape {
        shape
            .push(usize::try_from(d).map_err(|_| {
                Error::invalid(format!("npy dimension {d} does not fit in memory"))
            })?);
        byte_len = byte_len.checked_mul(d).ok_or_else(|| {
            Error::invalid(format!(
                "npy shape {:?}: element count overflows",
                dict.shape
            ))
        })?;
    }
    let data_len = file_len - data_start as u64;
    if data_len != byte_len {
        return Err(Error::invalid(format!(
            "npy data is {data_len} bytes but shape {:?} x {dtype} needs {byte_len}",
            dict.shape
        )));
    }
    Ok(NpyHeader {
        dtype,
        shape,
        data_start,
    })
}

/// The header of an array of `dtype` and `shape` (C order), in version 1.0, or 2.0 when the dict
/// does not fit in 1.0's 16-bit length; padded with spaces and a final newline so the data starts
/// at a multiple of 64 bytes, as numpy does. The data (little-endian) follows.
pub fn encode_header(dtype: DType, shape: &[usize]) -> Result<Vec<u8>> {
    let descr = descr(dtype).ok_or_else(|| {
        Error::unsupported(format!(
            "{dtype} has no npy type; convert to float32 to save it as .npy"
        ))
    })?;
    if shape.len() > MAX_RANK {
        return Err(Error::invalid(format!(
            "{} dimensions, more than the {MAX_RANK} supported",
            shape.len()
        )));
    }
    if shape
        .iter()
        .try_fold(dtype.size() as u64, |acc, &d| acc.checked_mul(d as u64))
        .is_none()
    {
        return Err(Error::invalid(format!(
            "shape {shape:?}: byte length overflows"
        )));
    }
    // Python's tuple repr: "()", "(3,)", "(3, 4)".
    let dims = shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let tuple = if shape.len() == 1 {
        format!("({dims},)")
    } else {
        format!("({dims})")
    };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {tuple}, }}");
    let (version, preamble) = if dict.len() + 1 + 10 <= usize::from(u16::MAX) {
        (1u8, 10)
    } else {
        (2u8, 12)
    };
    let total = (preamble + dict.len() + 1).div_ceil(ALIGN) * ALIGN;
    while preamble + dict.len() + 1 < total {
        dict.push(' ');
    }
    dict.push('\n');

    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[version, 0]);
    if version == 1 {
        let len = u16::try_from(dict.len()).expect("checked to fit in 16 bits above");
        out.extend_from_slice(&len.to_le_bytes());
    } else {
        let len = u32::try_from(dict.len())
            .map_err(|_| Error::invalid("npy header longer than 4 GiB"))?;
        out.extend_from_slice(&len.to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The header dict: a recursive-descent parser for the Python literal subset numpy writes.

struct Dict {
    descr: String,
    fortran_order: bool,
    shape: Vec<u64>,
}

enum Literal {
    Str(String),
    Bool(bool),
    Int(u64),
    Tuple(Vec<u64>),
}

struct Parser<'a> {
    text: &'a [u8],
    pos: usize,
}

fn parse_dict(text: &str) -> Result<Dict> {
    let mut p = Parser {
        text: text.as_bytes(),
        pos: 0,
    };
    let (mut descr, mut fortran_order, mut shape) = (None, None, None);
    p.expect(b'{')?;
    loop {
        p.skip_space();
        if p.eat(b'}') {
            break;
        }
        let key = p.string()?;
        p.skip_space();
        p.expect(b':')?;
        p.skip_space();
        if key == "descr" && p.peek() == Some(b'[') {
            return Err(Error::unsupported(
                "npy dtype is a list of fields: structured arrays are not supported",
            ));
        }
        let value = p.literal()?;
        let duplicate = match (key.as_str(), value) {
            ("descr", Literal::Str(s)) => descr.replace(s).is_some(),
            ("fortran_order", Literal::Bool(b)) => fortran_order.replace(b).is_some(),
            ("shape", Literal::Tuple(t)) => shape.replace(t).is_some(),
            ("descr", _) => return Err(Error::invalid("npy header: 'descr' is not a string")),
            ("fortran_order", _) => {
                return Err(Error::invalid(
                    "npy header: 'fortran_order' is not True or False",
                ))
            }
            ("shape", Literal::Int(n)) => {
                return Err(Error::invalid(format!(
                    "npy header: 'shape' is the integer {n}, not a tuple (a 1-d shape is ({n},))"
                )))
            }
            ("shape", _) => {
                return Err(Error::invalid(
                    "npy header: 'shape' is not a tuple of non-negative integers",
                ))
            }
            (other, _) => {
                return Err(Error::invalid(format!(
                    "npy header: unexpected key '{other}'"
                )))
            }
        };
        if duplicate {
            return Err(Error::invalid(format!("npy header: duplicate key '{key}'")));
        }
        p.skip_space();
        if p.eat(b'}') {
            break;
        }
        p.expect(b',')?;
    }
    // numpy pads with spaces and ends with a newline.
    if p.text[p.pos..].iter().any(|b| !b.is_ascii_whitespace()) {
        return Err(Error::invalid(format!(
            "npy header: unexpected text after the dict at byte {}",
            p.pos
        )));
    }
    let missing = |key: &str| Error::invalid(format!("npy header: missing key '{key}'"));
    Ok(Dict {
        descr: descr.ok_or_else(|| missing("descr"))?,
        fortran_order: fortran_order.ok_or_else(|| missing("fortran_order"))?,
        shape: shape.ok_or_else(|| missing("shape"))?,
    })
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> bool {
        if self.peek() == Some(byte) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn error(&self, what: &str) -> Error {
        let found = match self.peek() {
            Some(b) => format!("{:?}", char::from(b)),
            None => "the end".to_string(),
        };
        Error::invalid(format!(
            "npy header: expected {what} at byte {}, found {found}",
            self.pos
        ))
    }

    fn expect(&mut self, byte: u8) -> Result<()> {
        self.skip_space();
        if self.eat(byte) {
            Ok(())
        } else {
            Err(self.error(&format!("'{}'", char::from(byte))))
        }
    }

    /// A quoted string without escapes (numpy's keys and type strings need none).
    fn string(&mut self) -> Result<String> {
        self.skip_space();
        let quote = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => return Err(self.error("a quoted string")),
        };
        let start = self.pos + 1;
        let Some(len) = self.text[start..].iter().position(|&b| b == quote) else {
            return Err(Error::invalid("npy header: unterminated string"));
        };
        let body = &self.text[start..start + len];
        if body.iter().any(|&b| b == b'\\' || b == b'\n') {
            return Err(Error::invalid(
                "npy header: escapes and newlines in strings are not supported",
            ));
        }
        self.pos = start + len + 1;
        // The slice lies between two ASCII quotes of valid UTF-8, so it is valid UTF-8 too.
        Ok(String::from_utf8_lossy(body).into_owned())
    }

    /// A non-negative integer, with Python 2's optional `L` suffix (old files have `(3L, 4L)`).
    fn integer(&mut self) -> Result<u64> {
        self.skip_space();
        let start = self.pos;
        let mut value = 0u64;
        while let Some(d @ b'0'..=b'9') = self.peek() {
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(d - b'0')))
                .ok_or_else(|| Error::invalid("npy header: integer too large"))?;
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.error("a non-negative integer"));
        }
        let _ = self.eat(b'L') || self.eat(b'l');
        Ok(value)
    }

    fn literal(&mut self) -> Result<Literal> {
        self.skip_space();
        let rest = &self.text[self.pos..];
        match self.peek() {
            Some(b'\'' | b'"') => Ok(Literal::Str(self.string()?)),
            Some(b'0'..=b'9') => Ok(Literal::Int(self.integer()?)),
            Some(b'(') => self.tuple(),
            _ if rest.starts_with(b"True") => {
                self.pos += 4;
                Ok(Literal::Bool(true))
            }
            _ if rest.starts_with(b"False") => {
                self.pos += 5;
                Ok(Literal::Bool(false))
            }
            _ => Err(self.error("a string, True, False, an integer or a tuple")),
        }
    }

    /// `()`, `(n,)`, `(n, m)`, `(n, m,)`. `(n)` is an integer in Python, not a tuple.
    fn tuple(&mut self) -> Result<Literal> {
        self.expect(b'(')?;
        let mut items = Vec::new();
        let mut trailing_comma = false;
        loop {
            self.skip_space();
            if self.eat(b')') {
                break;
            }
            if items.len() == MAX_RANK {
                return Err(Error::invalid(format!(
                    "npy shape has more than {MAX_RANK} dimensions"
                )));
            }
            items.push(self.integer()?);
            self.skip_space();
            trailing_comma = self.eat(b',');
            if !trailing_comma {
                self.expect(b')')?;
                break;
            }
        }
        if items.len() == 1 && !trailing_comma {
            return Ok(Literal::Int(items[0]));
        }
        Ok(Literal::Tuple(items))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dtype: DType, shape: &[usize]) -> Vec<u8> {
        let mut f = encode_header(dtype, shape).unwrap();
        let n: usize = shape.iter().product();
        f.resize(f.len() + n * dtype.size(), 0);
        f
    }

    fn with_dict(dict: &str, data_len: usize) -> Vec<u8> {
        let mut f = MAGIC.to_vec();
        f.extend_from_slice(&[1, 0]);
        f.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        f.extend_from_slice(dict.as_bytes());
        f.resize(f.len() + data_len, 0);
        f
    }

    #[test]
    fn header_matches_numpy_layout() {
        let h = encode_header(DType::F32, &[3, 4]).unwrap();
        assert_eq!(h.len() % ALIGN, 0);
        let text = std::str::from_utf8(&h[10..]).unwrap();
        assert!(text.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }"));
        assert!(text.ends_with(" \n"));
        let one = encode_header(DType::U8, &[7]).unwrap();
        assert!(String::from_utf8_lossy(&one).contains("'shape': (7,)"));
        let zero_d = encode_header(DType::I64, &[]).unwrap();
        assert!(String::from_utf8_lossy(&zero_d).contains("'shape': ()"));
    }

    #[test]
    fn round_trip_every_npy_dtype() {
        for dtype in DType::ALL {
            if descr(dtype).is_none() {
                assert!(encode_header(dtype, &[2]).is_err());
                continue;
            }
            for shape in [&[][..], &[0], &[5], &[2, 3, 1]] {
                let f = file(dtype, shape);
                let h = read_header(&f).unwrap();
                assert_eq!((h.dtype, h.shape.as_slice()), (dtype, shape));
                assert_eq!(h.data_start % ALIGN, 0);
                assert_eq!(f.len() - h.data_start, h.byte_len());
            }
        }
    }

    #[test]
    fn long_headers_use_version_2() {
        let shape = vec![1usize; MAX_RANK];
        // 64 dims fit in version 1.0; version 2.0 only matters for headers over 64 KiB, which a
        // bounded rank cannot reach, so check that the reader takes a hand-made 2.0 header.
        let h = encode_header(DType::F32, &shape).unwrap();
        assert_eq!(h[6], 1);
        let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\n";
        for major in [2u8, 3] {
            let mut f = MAGIC.to_vec();
            f.extend_from_slice(&[major, 0]);
            f.extend_from_slice(&(dict.len() as u32).to_le_bytes());
            f.extend_from_slice(dict.as_bytes());
            f.extend_from_slice(&[0; 8]);
            assert_eq!(read_header(&f).unwrap().shape, [2]);
        }
    }

    #[test]
    fn python2_long_suffix_and_double_quotes_are_read() {
        let f = with_dict(
            "{\"descr\": \"<i2\", \"fortran_order\": False, \"shape\": (2L, 3L)}",
            12,
        );
        assert_eq!(read_header(&f).unwrap().shape, [2, 3]);
    }

    #[test]
    fn refusals_are_unsupported_not_invalid() {
        let cases = [
            "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }",
            "{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }",
            "{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }",
            "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }",
        ];
        for dict in cases {
            let err = read_header(&with_dict(dict, 8)).unwrap_err();
            assert!(matches!(err, Error::Unsupported { .. }), "{dict}: {err}");
        }
    }

    #[test]
    fn malformed_dicts_are_invalid() {
        let cases = [
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': [2], }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }",
            "{'descr': '<f4', 'fortran_order': False}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}",
            "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), } junk",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }",
        ];
        for dict in cases {
            let err = read_header(&with_dict(dict, 8)).unwrap_err();
            assert!(matches!(err, Error::InvalidInput { .. }), "{dict}: {err}");
        }
    }
}
