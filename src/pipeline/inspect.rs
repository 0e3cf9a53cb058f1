//! `inspect`: the tensors of a checkpoint (from its header alone), the codecs and bits per weight
//! of a `.lowbit`, or a sequence file's summary.

use serde::Serialize;

use crate::checkpoint::Checkpoint;
use crate::container::{Container, SourceFormat};
use crate::dtype::DType;
use crate::error::Result;
use crate::sequence;
use crate::source::Source;

use super::detect::{input_kind, InputKind};

/// What `inspect` shows.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Inspection {
    Checkpoint {
        format: SourceFormat,
        bytes: u64,
        parameters: u64,
        tensors: Vec<InspectedTensor>,
    },
    Lowbit {
        bytes: u64,
        parameters: u64,
        /// The weights' bits per parameter: the whole file but the model files.
        bits_per_weight: f64,
        header_bytes: u64,
        source_format: SourceFormat,
        tensors: Vec<InspectedTensor>,
        /// The model's config and tokenizer files stored verbatim: (name, bytes).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        model_files: Vec<(String, u64)>,
    },
    /// A FASTA, FASTQ or text file (not yet compressed).
    Sequence(sequence::SequenceSummary),
}

#[derive(Clone, Debug, Serialize)]
pub struct InspectedTensor {
    pub name: String,
    pub dtype: DType,
    /// For a quantized GGUF tensor, its ggml block type (`Q4_K`): how it is stored; `dtype`
    /// (F32) is what lowbit reads it as.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ggml_type: Option<String>,
    pub shape: Vec<usize>,
    pub parameters: u64,
    /// Bytes in the file (raw data for a checkpoint, the coded section for a `.lowbit`).
    pub bytes: u64,
    /// For a `.lowbit`: the codec label.
    pub codec: Option<String>,
    pub bits_per_weight: f64,
}

/// Lists the tensors of a checkpoint (from its header alone), or the contents and bits per weight
/// of a `.lowbit`, or summarises a sequence file.
pub fn inspect<S: Source + ?Sized>(file: &S, file_name: &str) -> Result<Inspection> {
    let bpw = |bytes: u64, n: u64| 8.0 * bytes as f64 / n.max(1) as f64;
    match input_kind(file, file_name).map_err(|e| e.in_file(file_name))? {
        InputKind::Sequence(kind) => {
            let whole = file.whole()?;
            Ok(Inspection::Sequence(sequence::summarize(&whole, kind)))
        }
        InputKind::Lowbit => {
            let whole = file.whole().map_err(|e| e.in_file(file_name))?;
            let c = Container::read(&whole).map_err(|e| e.in_file(file_name))?;
            let tensors: Vec<InspectedTensor> = c
                .manifest
                .tensors
                .iter()
                .map(|r| InspectedTensor {
                    name: r.name.clone(),
                    dtype: r.dtype,
                    ggml_type: None,
                    shape: r.shape.clone(),
                    parameters: r.numel(),
                    bytes: r.section_len(),
                    codec: Some(r.codec.label()),
                    bits_per_weight: bpw(r.section_len(), r.numel()),
                })
                .collect();
            let parameters = tensors.iter().map(|t| t.parameters).sum();
            let model_files: Vec<(String, u64)> = (c.manifest.files.iter())
                .map(|f| (f.name.clone(), f.bytes))
                .collect();
            let file_bytes = crate::container::model_files_bytes(&c.manifest);
            Ok(Inspection::Lowbit {
                bytes: file.len(),
                parameters,
                bits_per_weight: bpw(file.len() - file_bytes, parameters),
                model_files,
                header_bytes: c.header_bytes,
                source_format: c.manifest.source_format,
                tensors,
            })
        }
        InputKind::Checkpoint => {
            let (ckpt, _) = Checkpoint::load(file, file_name).map_err(|e| e.in_file(file_name))?;
            let tensors = ckpt
                .tensors
                .iter()
                .map(|t| InspectedTensor {
                    name: t.name.clone(),
                    dtype: t.dtype,
                    ggml_type: t.ggml_block.map(|g| g.name().to_string()),
                    shape: t.shape.clone(),
                    parameters: t.numel(),
                    bytes: t.range.end - t.range.start,
                    codec: None,
                    bits_per_weight: match t.ggml_block {
                        Some(g) => g.bits_per_weight(),
                        None => 8.0 * t.dtype.size() as f64,
                    },
                })
                .collect();
            Ok(Inspection::Checkpoint {
                format: ckpt.format,
                bytes: file.len(),
                parameters: ckpt.parameters(),
                tensors,
            })
        }
    }
}
