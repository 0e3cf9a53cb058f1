//! An input file seen as a list of tensors: a safetensors checkpoint, a PyTorch checkpoint
//! (`torch.save`'s zip format), a GGUF file, a single `.npy` array, or a vector dataset in `.csv` /
//! `.fvecs` (parsed into one f32 array, since their values are not laid out as one array in the
//! file). For safetensors, PyTorch, GGUF and npy only headers are parsed here; tensor bytes are
//! sliced from the file one tensor at a time.
//!
//! A quantized GGUF tensor (Q4_0, Q4_K, IQ4_XS...) is no element type: it is an [`InputTensor`]
//! of dtype F32 whose `range` holds its ggml blocks and whose `ggml_block` names their type, and
//! [`tensor_bytes`] / [`tensor_values`] dequantize it when it is read. So a GGUF is read lazily,
//! one tensor at a time like a safetensors file (converting the whole file at load, as for CSV,
//! would hold every weight as f32 at once: 4 bytes a weight for a file of ~0.5), and the rest of
//! the pipeline sees an F32 tensor: the manifest, the codecs and `decompress` need no ggml type.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;

use crate::codec::fwsvd::ImportanceMap;
use crate::container::SourceFormat;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::io::gguf::{self, GgmlType};
use crate::io::{csv, fvecs, npy, pytorch, safetensors, zip};
use crate::source::Source;

/// The name given to the one array of a `.npy` file.
pub const NPY_TENSOR_NAME: &str = "array";

#[derive(Clone, Debug, PartialEq)]
pub struct InputTensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Absolute byte range in the file (validated against the file length). 64-bit: a browser
    /// reads > 4 GiB checkpoints through a [`Source`] whose offsets do not fit a wasm32 `usize`.
    pub range: Range<u64>,
    /// For a quantized GGUF tensor: the ggml block type `range` is stored in (its bytes are not
    /// `dtype` elements; `dtype` is F32, what [`tensor_bytes`] turns them into). `None`: `range`
    /// holds the elements as they are.
    pub ggml_block: Option<GgmlType>,
}

impl InputTensor {
    pub fn numel(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }
}

/// How many first bytes are read to recognise a format by its signature.
const SNIFF_LEN: u64 = 16;

/// A named refusal for a file that is a known format lowbit does not read, recognised by its
/// first bytes (`head`, at least 16 when the file has them) or, for formats without a signature,
/// by `file_name`'s extension (empty: signatures only). `None`: not one of these.
pub fn foreign_format(head: &[u8], file_name: &str) -> Option<Error> {
    let extension = file_name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    let what = if head.starts_with(pytorch::LEGACY_MAGIC) {
        "an old-style PyTorch pickle (torch.save before PyTorch 1.6, or with \
         _use_new_zipfile_serialization=False): re-save it with torch.save(..., \
         _use_new_zipfile_serialization=True) or convert it to safetensors"
    } else if head.first() == Some(&0x80) && head.get(1).is_some_and(|v| (2..=5).contains(v)) {
        "a bare Python pickle, not a torch.save checkpoint: lowbit reads PyTorch checkpoints in \
         torch.save's zip format only, and never unpickles arbitrary objects"
    } else if head.starts_with(b"\x89HDF\r\n\x1a\n") {
        "an HDF5 file (a Keras or TensorFlow .h5 checkpoint?): not supported; convert its weights \
         to safetensors"
    } else if head.get(4..8) == Some(b"TFL3") {
        "a TensorFlow Lite model: not supported"
    } else if extension == "onnx" {
        "an ONNX model (by its .onnx name): not supported; export the weights to safetensors"
    } else if extension == "pb" {
        "a TensorFlow protobuf (by its .pb name): not supported; export the weights to safetensors"
    } else {
        return None;
    };
    Some(Error::unsupported(what))
}

/// How much of an npy file is read to find its header: numpy writes headers of a few hundred
/// bytes; a longer one is refused by [`npy::parse_header`] rather than read at any length.
const NPY_HEADER_READ: u64 = 1 << 20;

#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub format: SourceFormat,
    pub metadata: BTreeMap<String, String>,
    /// In file order; for a PyTorch checkpoint, the pickle's order (a state dict's), and views of one
    /// storage have overlapping ranges.
    pub tensors: Vec<InputTensor>,
    /// The source's JSON header, verbatim, when the file is a safetensors file whose tensors fill
    /// the data area back to back: then an all-lossless `.lowbit` can restore it byte for byte.
    pub exact_header: Option<String>,
}

/// The vector-dataset format a file name says (`.csv`, `.fvecs`: neither has a signature, so the
/// extension decides), or `None` for files recognised by content.
pub fn vector_format_by_name(file_name: &str) -> Option<SourceFormat> {
    let extension = file_name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match extension.as_str() {
        "csv" => Some(SourceFormat::Csv),
        "fvecs" => Some(SourceFormat::Fvecs),
        _ => None,
    }
}

impl Checkpoint {
    /// Parses any input lowbit compresses. `.csv` and `.fvecs` are recognised by the file name's
    /// extension (neither has a signature); they are read whole and their values come back as the
    /// little-endian f32 bytes that the returned checkpoint's ranges point into. Everything else
    /// is sniffed by [`Checkpoint::parse`], which reads the header alone (`None`: the ranges point
    /// into `file`).
    pub fn load<S: Source + ?Sized>(
        file: &S,
        file_name: &str,
    ) -> Result<(Checkpoint, Option<Vec<u8>>)> {
        let (format, metadata, rows, cols, values) = match vector_format_by_name(file_name) {
            Some(SourceFormat::Csv) => {
                let t = csv::read(&file.whole()?)?;
                let metadata = t
                    .header
                    .map(|h| BTreeMap::from([(crate::container::CSV_HEADER_KEY.to_string(), h)]))
                    .unwrap_or_default();
                (SourceFormat::Csv, metadata, t.rows, t.cols, t.values)
            }
            Some(_) => {
                let (rows, cols, values) = fvecs::read(&file.whole()?)?;
                (SourceFormat::Fvecs, BTreeMap::new(), rows, cols, values)
            }
            None => return Ok((Checkpoint::parse(file)?, None)),
        };
        let data = crate::dtype::from_f32(DType::F32, &values);
        let checkpoint = Checkpoint {
            format,
            metadata,
            tensors: vec![InputTensor {
                name: NPY_TENSOR_NAME.to_string(),
                dtype: DType::F32,
                shape: vec![rows, cols],
                range: 0..data.len() as u64,
                ggml_block: None,
            }],
            exact_header: None,
        };
        Ok((checkpoint, Some(data)))
    }

    /// Parses the header of a safetensors, PyTorch, GGUF or npy file, reading only the header's
    /// bytes (for PyTorch: the zip directory, `data.pkl` and the storages' local headers).
    pub fn parse<S: Source + ?Sized>(file: &S) -> Result<Checkpoint> {
        let file_len = file.len();
        let head = file.prefix(SNIFF_LEN)?;
        if zip::is_zip(&head) {
            let c = pytorch::read(file)?;
            return Ok(Checkpoint {
                format: SourceFormat::PyTorch,
                // What safetensors files converted from PyTorch say (transformers checks it).
                metadata: BTreeMap::from([("format".to_string(), "pt".to_string())]),
                tensors: c
                    .tensors
                    .into_iter()
                    .map(|t| InputTensor {
                        name: t.name,
                        dtype: t.dtype,
                        shape: t.shape,
                        range: t.range,
                        ggml_block: None,
                    })
                    .collect(),
                exact_header: None,
            });
        }
        if head.starts_with(gguf::MAGIC) {
            return from_gguf(gguf::read(file)?);
        }
        if file.prefix(npy::MAGIC.len() as u64)?.as_ref() == npy::MAGIC {
            let h = npy::parse_header(&file.prefix(NPY_HEADER_READ)?, file_len)?;
            let len = h.shape.iter().map(|&d| d as u64).product::<u64>() * h.dtype.size() as u64;
            let start = h.data_start as u64;
            return Ok(Checkpoint {
                format: SourceFormat::Npy,
                metadata: BTreeMap::new(),
                tensors: vec![InputTensor {
                    name: NPY_TENSOR_NAME.to_string(),
                    dtype: h.dtype,
                    shape: h.shape,
                    range: start..start + len,
                    ggml_block: None,
                }],
                exact_header: None,
            });
        }
        let header = || -> Result<_> {
            let json_len = safetensors::header_len(&head, file_len)?;
            let json = file.read(8..8 + json_len)?;
            let h = safetensors::parse_header(&json, file_len)?;
            Ok((json, h))
        };
        // Only a file that is no safetensors file is named as another format: a header length can
        // begin with any bytes (0x80 0x02 is a 640-byte header, and also how a pickle starts).
        let (json, h) = header().map_err(|e| foreign_format(&head, "").unwrap_or(e))?;
        let data_start = h.data_start;
        let tensors = h
            .tensors
            .into_iter()
            .map(|t| InputTensor {
                name: t.name,
                dtype: t.dtype,
                shape: t.shape,
                range: data_start + t.start..data_start + t.end,
                ggml_block: None,
            })
            .collect::<Vec<InputTensor>>();
        let mut end = data_start;
        let contiguous = tensors.iter().all(|t| {
            let follows = t.range.start == end || t.range.is_empty();
            end = end.max(t.range.end);
            follows
        }) && end == file_len;
        let exact_header = contiguous
            .then(|| std::str::from_utf8(&json).ok().map(str::to_string))
            .flatten();
        Ok(Checkpoint {
            format: SourceFormat::Safetensors,
            metadata: h.metadata,
            tensors,
            exact_header,
        })
    }

    pub fn parameters(&self) -> u64 {
        self.tensors.iter().map(InputTensor::numel).sum()
    }
}

/// A GGUF file's tensors as lowbit reads them: the plain types (F32, F16, BF16, F64, I8..I64)
/// as they are, the block types [`gguf::supported`] names as F32 read through [`tensor_bytes`];
/// any other type (IQ2_XXS, TQ1_0, MXFP4...) is refused with the tensor's name. The scalar and
/// string metadata are kept as text, arrays (the tokenizer's vocabulary) are not.
fn from_gguf(f: gguf::GgufFile) -> Result<Checkpoint> {
    let mut tensors = Vec::with_capacity(f.tensors.len());
    for t in f.tensors {
        let (dtype, ggml_block) = match t.ggml_type.plain_dtype() {
            Some(d) => (d, None),
            None if gguf::supported(t.ggml_type) => (DType::F32, Some(t.ggml_type)),
            None => {
                return Err(Error::unsupported(format!(
                    "ggml type {} cannot be dequantized by lowbit (it reads F32, F16, BF16, F64, \
                     I8..I64, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K, Q8_K, IQ4_NL and IQ4_XS)",
                    t.ggml_type
                ))
                .in_tensor(&t.name))
            }
        };
        tensors.push(InputTensor {
            name: t.name,
            dtype,
            shape: t.shape,
            range: t.range,
            ggml_block,
        });
    }
    let metadata = (f.metadata.into_iter())
        .filter_map(|(k, v)| Some((k, v.to_text()?)))
        .collect();
    Ok(Checkpoint {
        format: SourceFormat::Gguf,
        metadata,
        tensors,
        exact_header: None,
    })
}

/// The bytes of tensor `t` of `data` as little-endian `t.dtype` elements: the range read in
/// place, or a quantized GGUF tensor's blocks read and dequantized to f32.
pub fn tensor_bytes<'a, S: Source + ?Sized>(data: &'a S, t: &InputTensor) -> Result<Cow<'a, [u8]>> {
    let raw = data.read(t.range.clone())?;
    match t.ggml_block {
        None => Ok(raw),
        Some(ty) => {
            let values = dequantized(ty, &raw, t)?;
            Ok(Cow::Owned(crate::dtype::from_f32(DType::F32, &values)))
        }
    }
}

/// The values of tensor `t` of `data` as f32 (`t.dtype` must be a float type).
pub fn tensor_values<S: Source + ?Sized>(data: &S, t: &InputTensor) -> Result<Vec<f32>> {
    let raw = data.read(t.range.clone())?;
    match t.ggml_block {
        None => Ok(crate::dtype::to_f32(t.dtype, &raw)),
        Some(ty) => dequantized(ty, &raw, t),
    }
}

fn dequantized(ty: GgmlType, raw: &[u8], t: &InputTensor) -> Result<Vec<f32>> {
    gguf::dequantize(ty, raw)
        .filter(|v| v.len() as u64 == t.numel())
        .ok_or_else(|| {
            Error::invalid(format!(
                "{} bytes are not whole {ty} blocks of the tensor's shape",
                raw.len()
            ))
            .in_tensor(&t.name)
        })
}

/// An importance file (`--importance`): every float tensor of a safetensors file (non-float tensors are an error: they cannot be
/// weights).
pub fn importance_map(bytes: &[u8], file_name: &str) -> Result<ImportanceMap> {
    let (ckpt, _) = Checkpoint::load(bytes, file_name).map_err(|e| e.in_file(file_name))?;
    let mut tensors = BTreeMap::new();
    for t in &ckpt.tensors {
        if !t.dtype.is_lossy_compressible() {
            return Err(Error::invalid(format!(
                "importance file {file_name}: tensor '{}' is {}, not a float type",
                t.name, t.dtype
            )));
        }
        let values = tensor_values(bytes, t)?;
        tensors.insert(t.name.clone(), (t.shape.clone(), values));
    }
    Ok(ImportanceMap {
        source: file_name.to_string(),
        tensors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source that hands out copies and counts what was read: headers are read alone.
    struct Counting {
        bytes: Vec<u8>,
        read: std::sync::atomic::AtomicU64,
    }

    impl Source for Counting {
        fn len(&self) -> u64 {
            self.bytes.len() as u64
        }
        fn read(&self, range: Range<u64>) -> Result<Cow<'_, [u8]>> {
            self.read.fetch_add(
                range.end - range.start,
                std::sync::atomic::Ordering::Relaxed,
            );
            Ok(Cow::Owned(self.bytes.as_slice().read(range)?.into_owned()))
        }
    }

    #[test]
    fn a_checkpoint_header_is_parsed_without_reading_its_tensors() {
        let file = crate::demo::demo_checkpoint();
        let source = Counting {
            bytes: file.clone(),
            read: Default::default(),
        };
        let ckpt = Checkpoint::parse(&source).unwrap();
        assert!(ckpt.tensors.len() > 5);
        let read = source.read.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            read < 16 << 10 && read * 100 < file.len() as u64,
            "{read} bytes of {} read for the header",
            file.len()
        );
        // The same answer as from the slice.
        assert_eq!(
            Checkpoint::parse(file.as_slice()).unwrap().tensors,
            ckpt.tensors
        );
    }

    /// A GGUF of one 1 MiB Q8_0 tensor and one F32 tensor (dims fastest-first).
    fn gguf_file() -> Vec<u8> {
        let mut f = b"GGUF".to_vec();
        f.extend(3u32.to_le_bytes());
        f.extend(2u64.to_le_bytes());
        f.extend(0u64.to_le_bytes());
        let q8_bytes = 1024 / 32 * 34 * 1024;
        for (name, dims, ty, offset) in [
            ("q", [1024u64, 1024], 8u32, 0u64),
            ("f", [2, 3], 0, q8_bytes),
        ] {
            f.extend((name.len() as u64).to_le_bytes());
            f.extend(name.as_bytes());
            f.extend(2u32.to_le_bytes());
            dims.iter().for_each(|d| f.extend(d.to_le_bytes()));
            f.extend(ty.to_le_bytes());
            f.extend(offset.to_le_bytes());
        }
        f.resize(f.len().div_ceil(32) * 32, 0);
        // Q8_0 blocks: d = 0.5 (f16 0x3800), codes 0, 1, ..., 31.
        let block: Vec<u8> = [0x00, 0x38].into_iter().chain(0..32).collect();
        (0..q8_bytes / 34).for_each(|_| f.extend(&block));
        (0..6).for_each(|i| f.extend((i as f32).to_le_bytes()));
        f
    }

    #[test]
    fn a_gguf_header_is_parsed_alone_and_its_quantized_tensors_are_read_as_f32() {
        let file = gguf_file();
        let source = Counting {
            bytes: file.clone(),
            read: Default::default(),
        };
        let ckpt = Checkpoint::parse(&source).unwrap();
        let read = source.read.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            read < 70 << 10,
            "{read} bytes of {} read for the header",
            file.len()
        );
        assert_eq!(ckpt.format, SourceFormat::Gguf);
        let (q, f) = (&ckpt.tensors[0], &ckpt.tensors[1]);
        assert_eq!(
            (q.dtype, q.ggml_block, q.shape.clone()),
            (DType::F32, Some(GgmlType::Q8_0), vec![1024, 1024])
        );
        assert_eq!(
            (f.dtype, f.ggml_block, f.shape.clone()),
            (DType::F32, None, vec![3, 2])
        );
        let values = tensor_values(&source, q).unwrap();
        assert_eq!(values.len(), 1 << 20);
        assert_eq!(&values[..3], &[0.0, 0.5, 1.0]);
        assert_eq!(values[(1 << 20) - 1], 15.5);
        let bytes = tensor_bytes(file.as_slice(), q).unwrap();
        assert_eq!(crate::dtype::to_f32(DType::F32, &bytes), values);
        // A plain tensor is read in place.
        assert!(matches!(
            tensor_bytes(file.as_slice(), f).unwrap(),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            tensor_values(file.as_slice(), f).unwrap(),
            [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
        );
    }
}
