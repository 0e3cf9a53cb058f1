//! Reading: a `.lowbit` back to the original kind of file (safetensors, npy, csv, fvecs, or a
//! sequence file; a PyTorch source comes back as safetensors), validated before the first byte is
//! written.

use std::io::Write;

use serde::Serialize;

use crate::codec::{lossless, CodecParams, Shape2};
use crate::container::{self, Container, Manifest, SourceFormat, TensorRecord};
use crate::dtype::{self, DType};
use crate::error::{Error, Result};
use crate::io::{csv, fvecs, npy, safetensors};
use crate::progress::Progress;

/// What `decompress` wrote.
#[derive(Clone, Debug, Serialize)]
pub struct DecompressSummary {
    pub format: SourceFormat,
    pub tensors: usize,
    pub parameters: u64,
    pub bytes_written: u64,
}

/// Decodes a `.lowbit` to the original kind of file (safetensors or npy), written to `out` tensor by
/// tensor. Everything is validated before the first byte is written.
pub fn decompress(
    file: &[u8],
    file_name: &str,
    progress: &mut dyn Progress,
    out: &mut dyn Write,
) -> Result<DecompressSummary> {
    let c = Container::read(file).map_err(|e| e.in_file(file_name))?;
    let m = &c.manifest;
    if let Some(kind) = crate::sequence::SequenceKind::of(m.source_format) {
        progress.stage("decode", m.source_bytes.unwrap_or(0));
        let bytes =
            crate::sequence::decompress(&c, file, kind).map_err(|e| e.in_file(file_name))?;
        out.write_all(&bytes).map_err(|e| Error::io("output", e))?;
        out.flush().map_err(|e| Error::io("output", e))?;
        progress.advance(bytes.len() as u64, "");
        return Ok(DecompressSummary {
            format: m.source_format,
            tensors: m.tensors.len(),
            parameters: m.tensors.iter().map(TensorRecord::numel).sum(),
            bytes_written: bytes.len() as u64,
        });
    }
    let header = match m.source_format {
        SourceFormat::Safetensors if m.source_header.is_some() => {
            exact_source_header(m).map_err(|e| e.in_file(file_name))?
        }
        // A PyTorch source is written as safetensors: the same tensors, no pickle (lowbit writes
        // data, never code), `{"format": "pt"}` metadata as its reader recorded.
        SourceFormat::Safetensors | SourceFormat::PyTorch | SourceFormat::Gguf => {
            let planned: Vec<safetensors::PlannedTensor> = m
                .tensors
                .iter()
                .map(|t| safetensors::PlannedTensor {
                    name: t.name.clone(),
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                })
                .collect();
            safetensors::encode_header(&planned, &m.source_metadata)
                .map_err(|e| e.in_file(file_name))?
        }
        SourceFormat::Npy => {
            let [t] = m.tensors.as_slice() else {
                return Err(
                    Error::corrupt("an npy source must have exactly one tensor").in_file(file_name)
                );
            };
            npy::encode_header(t.dtype, &t.shape).map_err(|e| e.in_file(file_name))?
        }
        SourceFormat::Csv | SourceFormat::Fvecs => {
            let [t] = m.tensors.as_slice() else {
                return Err(
                    Error::corrupt("a csv or fvecs source must have exactly one tensor")
                        .in_file(file_name),
                );
            };
            if t.shape.len() != 2 || t.dtype != DType::F32 {
                return Err(
                    Error::corrupt("a csv or fvecs source must be one 2-D F32 array")
                        .in_file(file_name),
                );
            }
            match (
                m.source_format,
                m.source_metadata.get(container::CSV_HEADER_KEY),
            ) {
                (SourceFormat::Csv, Some(h)) => {
                    csv::check_header(h, t.shape[1]).map_err(|e| e.in_file(file_name))?;
                    format!("{h}\n").into_bytes()
                }
                _ => Vec::new(),
            }
        }
        SourceFormat::Fasta | SourceFormat::Fastq | SourceFormat::Text => {
            unreachable!("sequence sources returned above")
        }
    };
    let io_err = |e| Error::io("output", e);
    out.write_all(&header).map_err(io_err)?;
    let parameters: u64 = m.tensors.iter().map(TensorRecord::numel).sum();
    progress.stage("decode", parameters);
    let mut written = header.len() as u64;
    let bases = super::shared::decode_bases(&c, file).map_err(|e| e.in_file(file_name))?;
    for (record, range) in m.tensors.iter().zip(&c.sections) {
        if progress.cancelled() {
            return Err(Error::Cancelled);
        }
        let bytes = super::shared::decode_tensor(&file[range.clone()], record, &bases)
            .map_err(|e| e.in_tensor(&record.name).in_file(file_name))?;
        // Text and fvecs records are written from the values (checked above: one 2-D F32 array).
        let bytes = match m.source_format {
            SourceFormat::Csv => {
                csv::write(None, &dtype::to_f32(DType::F32, &bytes), record.shape[1])
            }
            SourceFormat::Fvecs => {
                fvecs::write(&dtype::to_f32(DType::F32, &bytes), record.shape[1])
            }
            SourceFormat::Safetensors
            | SourceFormat::Npy
            | SourceFormat::PyTorch
            | SourceFormat::Gguf => bytes,
            SourceFormat::Fasta | SourceFormat::Fastq | SourceFormat::Text => {
                unreachable!("sequence sources returned above")
            }
        };
        out.write_all(&bytes).map_err(io_err)?;
        written += bytes.len() as u64;
        progress.advance(record.numel(), &record.name);
    }
    out.flush().map_err(io_err)?;
    Ok(DecompressSummary {
        format: m.source_format,
        tensors: m.tensors.len(),
        parameters,
        bytes_written: written,
    })
}

/// The source's own header (8-byte length + JSON), after checking that it describes exactly the
/// tensors the manifest restores, in order and back to back: a `.lowbit` cannot make decompression
/// write a file whose header disagrees with its data.
fn exact_source_header(m: &Manifest) -> Result<Vec<u8>> {
    let json = m.source_header.as_deref().unwrap_or_default();
    let data: u64 = m
        .tensors
        .iter()
        .map(|t| t.numel() * t.dtype.size() as u64)
        .sum();
    let file_len = 8 + json.len() as u64 + data;
    let h = safetensors::parse_header(json.as_bytes(), file_len)
        .map_err(|e| Error::corrupt(format!("the stored source header is invalid: {e}")))?;
    let mut offset = 0;
    let consistent = h.tensors.len() == m.tensors.len()
        && h.tensors.iter().zip(&m.tensors).all(|(e, r)| {
            let ok = e.name == r.name
                && e.dtype == r.dtype
                && e.shape == r.shape
                && (e.start == offset || e.start == e.end);
            offset = offset.max(e.end);
            ok
        })
        && offset == data;
    if !consistent {
        return Err(Error::corrupt(
            "the stored source header does not match the manifest's tensors",
        ));
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(json.as_bytes());
    Ok(out)
}

/// Decodes one section to the tensor's bytes in its own dtype.
pub fn decode_tensor(section: &[u8], record: &TensorRecord) -> Result<Vec<u8>> {
    let numel = usize::try_from(record.numel())
        .map_err(|_| Error::corrupt("too many elements for this machine"))?;
    let bytes = match &record.codec {
        CodecParams::Lossless => lossless::decode(section, record.dtype, numel)?,
        CodecParams::Sequence(_) => {
            return Err(Error::corrupt(
                "a sequence stream is not a tensor (decoded by sequence::decompress)",
            ))
        }
        lossy => {
            let shape =
                Shape2::of(&record.shape).ok_or_else(|| Error::corrupt("shape overflows"))?;
            let values = lossy.decode(section, shape)?;
            if values.len() != numel {
                return Err(Error::corrupt(
                    "the codec returned the wrong number of values",
                ));
            }
            dtype::from_f32(record.dtype, &values)
        }
    };
    if bytes.len() != numel * record.dtype.size() {
        return Err(Error::corrupt("decoded tensor has the wrong length"));
    }
    Ok(bytes)
}
