//! The `.lowbit` container: a valid safetensors file whose tensors are the coded sections (dtype U8,
//! one per original tensor, same name) and whose `__metadata__` holds the manifest that says how to
//! decode them. Existing safetensors tools can list a `.lowbit`; lowbit can decode it.
//! The byte layout is specified in docs/FORMAT.md; this module is its one implementation.
//!
//! Reading validates everything before anything is allocated for output: the safetensors header
//! (by `io::safetensors`), the manifest, the one-to-one match between manifest records and
//! sections, each tensor's shape and dtype, and the decompression-bomb bound: a section of `L` bytes
//! may claim at most `MAX_ELEMENTS_PER_SECTION_BYTE * L` elements. The encoder pads sections that
//! code better than that (all-constant tensors), so honest files always pass.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::checksum::crc32;
use crate::codec::{CodecParams, Shape2};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::io::safetensors::{self, PlannedTensor};

/// `__metadata__["format"]` of every `.lowbit` file.
pub const FORMAT_NAME: &str = "lowbit";
/// The `__metadata__` key that holds the manifest (a JSON document in a string).
pub const MANIFEST_KEY: &str = "lowbit.manifest";
/// The version this code writes and the newest it reads.
pub const VERSION: u32 = 1;
/// Decompression-bomb bound: the largest number of output elements one section byte may stand for.
/// 4096 elements per byte is 0.002 bits per element, far below what any codec needs on real data.
pub const MAX_ELEMENTS_PER_SECTION_BYTE: u64 = 4096;

/// Where the compressed tensors came from, so that decompression writes the same kind of file back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceFormat {
    Safetensors,
    Npy,
    /// A CSV file of numbers (one vector per line); its header line is kept in the manifest's
    /// `source_metadata` under [`CSV_HEADER_KEY`].
    Csv,
    /// A TEXMEX `.fvecs` file.
    Fvecs,
    /// Sequence files (`sequence/`): the sections are the file's streams, restored byte for byte.
    Fasta,
    Fastq,
    Text,
    /// A PyTorch checkpoint (`torch.save`'s zip format). Restored as a `.safetensors` file with
    /// the same tensor names, shapes, dtypes and order (lowbit writes no pickle).
    #[serde(rename = "pytorch")]
    PyTorch,
    /// A GGUF file (llama.cpp). Restored as a `.safetensors` file with the GGUF tensor names,
    /// row-major shapes, the plain types as they were (F32, F16, BF16...) and the quantized ones
    /// (Q4_0, Q4_K...) as F32, their dequantized values; the scalar and string metadata become
    /// `__metadata__` strings (arrays, such as the tokenizer's, are not kept).
    Gguf,
}

impl SourceFormat {
    /// The file-name extension of a restored file of this format (without the dot).
    pub fn extension(self) -> &'static str {
        match self {
            SourceFormat::Safetensors => "safetensors",
            SourceFormat::Npy => "npy",
            SourceFormat::Csv => "csv",
            SourceFormat::Fvecs => "fvecs",
            SourceFormat::Fasta => "fa",
            SourceFormat::Fastq => "fastq",
            SourceFormat::Text => "txt",
            SourceFormat::PyTorch | SourceFormat::Gguf => "safetensors",
        }
    }
}

/// The `source_metadata` key that holds a CSV source's header line.
pub const CSV_HEADER_KEY: &str = "csv_header";

impl SourceFormat {
    /// Whether the file is a dataset of vectors (rows of its one 2-D array), which `--method auto`
    /// codes with the vector coders.
    pub fn is_vector_dataset(self) -> bool {
        matches!(
            self,
            SourceFormat::Npy | SourceFormat::Csv | SourceFormat::Fvecs
        )
    }
}

/// Everything needed to decode the sections, stored as JSON in the header.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub version: u32,
    pub source_format: SourceFormat,
    /// The source file's own `__metadata__` (safetensors), restored on decompression.
    pub source_metadata: BTreeMap<String, String>,
    /// The source's JSON header verbatim, kept only when every tensor is stored exactly (then the
    /// restored file is byte-identical to the source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_header: Option<String>,
    /// The source file's length in bytes, for sequence sources (their decoder checks the restored
    /// file against it and bounds its output by it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_bytes: Option<u64>,
    /// In output order (the source file's order).
    pub tensors: Vec<TensorRecord>,
    /// Sections shared by several tensors (a shared-lowrank group's basis), stored after the
    /// tensors' sections; absent when empty, so files without them are unchanged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupRecord>,
    /// The model's small files (config, tokenizer: `model::files`), stored verbatim after the
    /// groups' sections; absent when empty, so files without them are unchanged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileRecord>,
}

/// One of the model's small files, stored verbatim in a section named [`FILE_SECTION_PREFIX`] +
/// its name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRecord {
    /// Its path in the model folder (one of `model::files::MODEL_FILE_NAMES`).
    pub name: String,
    pub bytes: u64,
    pub crc32: u32,
}

/// File sections are named this plus the file's name.
pub const FILE_SECTION_PREFIX: &str = "lowbit.file.";

impl FileRecord {
    pub fn section_name(&self) -> String {
        format!("{FILE_SECTION_PREFIX}{}", self.name)
    }
}

/// The section a group of tensors shares: today the basis of a `shared-lowrank` group
/// (`codec::shared_lowrank`). Members point at it by index (`shared_lowrank::Params::group`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupRecord {
    /// The section's name (`GROUP_SECTION_PREFIX` + index); never a tensor's name.
    pub name: String,
    /// The members' column count: the basis is `rank x cols`.
    pub cols: usize,
    pub basis: crate::codec::shared_lowrank::BasisParams,
    pub coded_bytes: u64,
    pub side_bytes: u64,
    pub crc32: u32,
}

/// Group sections are named this plus the group's index.
pub const GROUP_SECTION_PREFIX: &str = "lowbit.group.";

impl GroupRecord {
    /// Elements the section stands for (for the decompression-bomb bound).
    pub fn numel(&self) -> u64 {
        (self.cols as u64).saturating_mul(self.basis.rank as u64)
    }

    pub fn section_len(&self) -> u64 {
        section_len(self.numel(), self.coded_bytes)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorRecord {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub codec: CodecParams,
    /// Bytes of the section that the codec wrote; the rest of the section is zero padding.
    pub coded_bytes: u64,
    /// Of `coded_bytes`, how many are side information (for reports; the decoder does not need it).
    pub side_bytes: u64,
    /// CRC-32 (IEEE 802.3) of the coded bytes: entropy-coded streams carry no redundancy, so without
    /// it a flipped bit could decode to silently different weights.
    pub crc32: u32,
}

impl TensorRecord {
    pub fn numel(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }

    /// The stored section length: the coded bytes, padded up to the decompression-bomb bound.
    pub fn section_len(&self) -> u64 {
        section_len(self.numel(), self.coded_bytes)
    }
}

/// The section length for `coded_bytes` of codec output standing for `numel` elements.
pub fn section_len(numel: u64, coded_bytes: u64) -> u64 {
    coded_bytes.max(numel.div_ceil(MAX_ELEMENTS_PER_SECTION_BYTE))
}

/// The complete header (8-byte length + JSON) of a `.lowbit` with this manifest. Sections follow it
/// in manifest order, each `record.section_len()` bytes long.
pub fn encode_header(manifest: &Manifest) -> Result<Vec<u8>> {
    let manifest_json = serde_json::to_string(manifest).expect("a manifest always serialises");
    let mut metadata = BTreeMap::new();
    metadata.insert("format".to_string(), FORMAT_NAME.to_string());
    metadata.insert(MANIFEST_KEY.to_string(), manifest_json);
    let planned: Vec<PlannedTensor> = manifest
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.section_len()))
        .chain(
            manifest
                .groups
                .iter()
                .map(|g| (g.name.clone(), g.section_len())),
        )
        .chain(manifest.files.iter().map(|f| (f.section_name(), f.bytes)))
        .map(|(name, len)| PlannedTensor {
            name,
            dtype: DType::U8,
            shape: vec![len as usize],
        })
        .collect();
    safetensors::encode_header(&planned, &metadata)
}

/// What the model files add to a `.lowbit`: their sections and their entries in the header. The
/// weights' bits per weight leave exactly this out (the bit budget is the weights').
pub fn model_files_bytes(manifest: &Manifest) -> u64 {
    if manifest.files.is_empty() {
        return 0;
    }
    let mut without = manifest.clone();
    without.files.clear();
    let header_len = |m: &Manifest| encode_header(m).map_or(0, |h| h.len() as u64);
    let sections: u64 = manifest.files.iter().map(|f| f.bytes).sum();
    sections + header_len(manifest).saturating_sub(header_len(&without))
}

/// A validated `.lowbit`: its manifest and, per record, the coded bytes' absolute range in the file.
#[derive(Debug)]
pub struct Container {
    pub manifest: Manifest,
    /// Absolute byte ranges of each record's coded bytes (padding excluded), in manifest order.
    pub sections: Vec<std::ops::Range<usize>>,
    /// The same for each of the manifest's `groups`.
    pub group_sections: Vec<std::ops::Range<usize>>,
    /// The same for each of the manifest's `files`.
    pub file_sections: Vec<std::ops::Range<usize>>,
    /// Bytes of the file before the first section (8-byte length + JSON header).
    pub header_bytes: u64,
}

impl Container {
    /// Parses and validates a whole `.lowbit` file held in memory (an mmap natively).
    pub fn read(file: &[u8]) -> Result<Container> {
        let header = safetensors::read_header(file)?;
        if header.metadata.get("format").map(String::as_str) != Some(FORMAT_NAME) {
            return Err(Error::invalid(
                "not a .lowbit file (a safetensors file without format=lowbit in its metadata)",
            ));
        }
        let manifest_json = header
            .metadata
            .get(MANIFEST_KEY)
            .ok_or_else(|| Error::corrupt(format!("the header has no '{MANIFEST_KEY}' entry")))?;
        let manifest = parse_manifest(manifest_json)?;
        let mut by_name: BTreeMap<&str, &safetensors::TensorEntry> = BTreeMap::new();
        for entry in &header.tensors {
            by_name.insert(entry.name.as_str(), entry);
        }
        let listed = manifest.tensors.len() + manifest.groups.len() + manifest.files.len();
        if by_name.len() != listed {
            return Err(Error::corrupt(format!(
                "the manifest lists {} tensors, {} groups and {} files but the file has {} sections",
                manifest.tensors.len(),
                manifest.groups.len(),
                manifest.files.len(),
                by_name.len()
            )));
        }
        let mut sections = Vec::with_capacity(manifest.tensors.len());
        for record in &manifest.tensors {
            let entry = by_name.get(record.name.as_str()).ok_or_else(|| {
                Error::corrupt("the manifest names a tensor that has no section")
                    .in_tensor(&record.name)
            })?;
            validate_record(record, entry).map_err(|e| e.in_tensor(&record.name))?;
            let start = (header.data_start + entry.start) as usize;
            let coded = start..start + record.coded_bytes as usize;
            if crc32(&file[coded.clone()]) != record.crc32 {
                return Err(
                    Error::corrupt("its section fails its checksum: the file is damaged")
                        .in_tensor(&record.name),
                );
            }
            sections.push(coded);
        }
        let mut group_sections = Vec::with_capacity(manifest.groups.len());
        for group in &manifest.groups {
            let entry = by_name.get(group.name.as_str()).ok_or_else(|| {
                Error::corrupt(format!(
                    "the manifest's group '{}' has no section",
                    group.name
                ))
            })?;
            validate_group(group, entry)
                .map_err(|e| Error::corrupt(format!("group '{}': {e}", group.name)))?;
            let start = (header.data_start + entry.start) as usize;
            let coded = start..start + group.coded_bytes as usize;
            if crc32(&file[coded.clone()]) != group.crc32 {
                return Err(Error::corrupt(format!(
                    "group '{}': its section fails its checksum: the file is damaged",
                    group.name
                )));
            }
            group_sections.push(coded);
        }
        let mut file_sections = Vec::with_capacity(manifest.files.len());
        for record in &manifest.files {
            let entry = by_name.get(record.section_name().as_str()).ok_or_else(|| {
                Error::corrupt(format!("the model file '{}' has no section", record.name))
            })?;
            if entry.dtype != DType::U8
                || entry.shape.len() != 1
                || entry.end - entry.start != record.bytes
            {
                return Err(Error::corrupt(format!(
                    "the model file '{}' claims {} bytes, its section is not that many U8s",
                    record.name, record.bytes
                )));
            }
            let start = (header.data_start + entry.start) as usize;
            let range = start..start + record.bytes as usize;
            if crc32(&file[range.clone()]) != record.crc32 {
                return Err(Error::corrupt(format!(
                    "the model file '{}' fails its checksum: the file is damaged",
                    record.name
                )));
            }
            file_sections.push(range);
        }
        Ok(Container {
            manifest,
            sections,
            group_sections,
            file_sections,
            header_bytes: header.data_start,
        })
    }
}

fn parse_manifest(json: &str) -> Result<Manifest> {
    // Read the version first so that a newer file gets "unsupported", not a confusing parse error.
    #[derive(Deserialize)]
    struct VersionOnly {
        version: u32,
    }
    let version: VersionOnly = serde_json::from_str(json)
        .map_err(|e| Error::corrupt(format!("the manifest is not valid: {e}")))?;
    if version.version > VERSION || version.version == 0 {
        return Err(Error::unsupported(format!(
            "format version {} (this lowbit reads versions 1 to {VERSION})",
            version.version
        )));
    }
    let manifest: Manifest = serde_json::from_str(json)
        .map_err(|e| Error::corrupt(format!("the manifest is not valid: {e}")))?;
    let mut seen = std::collections::BTreeSet::new();
    for t in &manifest.tensors {
        if !seen.insert(t.name.as_str()) {
            return Err(Error::corrupt("the manifest names this tensor twice").in_tensor(&t.name));
        }
        // Sequence streams and tensors never mix: each decoder sees only its own kind of section.
        let sequence_source = matches!(
            manifest.source_format,
            SourceFormat::Fasta | SourceFormat::Fastq | SourceFormat::Text
        );
        if matches!(t.codec, CodecParams::Sequence(_)) != sequence_source {
            return Err(Error::corrupt(format!(
                "a {} section where the source is {:?} (sequence streams and tensors do not mix)",
                t.codec.label(),
                manifest.source_format
            ))
            .in_tensor(&t.name));
        }
    }
    validate_groups(&manifest)?;
    validate_files(&manifest)?;
    Ok(manifest)
}

/// Model files have the names and sizes model files may have, each once.
fn validate_files(manifest: &Manifest) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for f in &manifest.files {
        if !crate::model::ModelFiles::is_model_file(&f.name) {
            return Err(Error::corrupt(format!(
                "'{}' is not the name of a model file",
                f.name
            )));
        }
        if f.bytes > crate::model::files::MAX_MODEL_FILE_BYTES as u64 {
            return Err(Error::corrupt(format!(
                "the model file '{}' claims {} bytes, over the limit",
                f.name, f.bytes
            )));
        }
        if !seen.insert(f.name.as_str()) {
            return Err(Error::corrupt(format!(
                "the manifest lists the model file '{}' twice",
                f.name
            )));
        }
    }
    for t in &manifest.tensors {
        if t.name.starts_with(FILE_SECTION_PREFIX) {
            return Err(Error::corrupt("a tensor named like a file section").in_tensor(&t.name));
        }
    }
    Ok(())
}

/// Groups and their members agree: names distinct from tensors', indices in range, every group
/// used, each member's rank, bits and column count those of its group.
fn validate_groups(manifest: &Manifest) -> Result<()> {
    let mut used = vec![false; manifest.groups.len()];
    for (i, g) in manifest.groups.iter().enumerate() {
        if g.name != format!("{GROUP_SECTION_PREFIX}{i}") {
            return Err(Error::corrupt(format!(
                "group {i} is named '{}', not '{GROUP_SECTION_PREFIX}{i}'",
                g.name
            )));
        }
        g.basis
            .validate()
            .map_err(|e| Error::corrupt(format!("group '{}': {e}", g.name)))?;
        if g.basis.rank as usize > g.cols {
            return Err(Error::corrupt(format!(
                "group '{}': rank {} above its {} columns",
                g.name, g.basis.rank, g.cols
            )));
        }
    }
    for t in &manifest.tensors {
        if t.name.starts_with(GROUP_SECTION_PREFIX) {
            return Err(Error::corrupt("a tensor named like a group section").in_tensor(&t.name));
        }
        let crate::codec::CodecParams::SharedLowrank(p) = &t.codec else {
            continue;
        };
        let g = manifest.groups.get(p.group as usize).ok_or_else(|| {
            Error::corrupt(format!("its group {} does not exist", p.group)).in_tensor(&t.name)
        })?;
        let cols = Shape2::of(&t.shape).map(|s| s.cols);
        if p.rank != g.basis.rank || p.factor_bits != g.basis.factor_bits || cols != Some(g.cols) {
            return Err(Error::corrupt(format!(
                "its rank, bits or columns differ from its group '{}'",
                g.name
            ))
            .in_tensor(&t.name));
        }
        used[p.group as usize] = true;
    }
    if let Some(i) = used.iter().position(|u| !u) {
        return Err(Error::corrupt(format!("group {i} has no member tensor")));
    }
    Ok(())
}

fn validate_group(group: &GroupRecord, entry: &safetensors::TensorEntry) -> Result<()> {
    if entry.dtype != DType::U8 || entry.shape.len() != 1 {
        return Err(Error::corrupt("its section is not a 1-D U8 tensor"));
    }
    let section_len = entry.end - entry.start;
    if group.coded_bytes > section_len || group.side_bytes > group.coded_bytes {
        return Err(Error::corrupt(format!(
            "it claims {} coded ({} side) bytes in a {section_len}-byte section",
            group.coded_bytes, group.side_bytes
        )));
    }
    if group.numel() > MAX_ELEMENTS_PER_SECTION_BYTE.saturating_mul(section_len) {
        return Err(Error::corrupt(format!(
            "it claims {} basis values from a {section_len}-byte section: rejected as a \
             decompression bomb",
            group.numel()
        )));
    }
    Ok(())
}

fn validate_record(record: &TensorRecord, entry: &safetensors::TensorEntry) -> Result<()> {
    if entry.dtype != DType::U8 || entry.shape.len() != 1 {
        return Err(Error::corrupt("its section is not a 1-D U8 tensor"));
    }
    let section_len = entry.end - entry.start;
    if record.coded_bytes > section_len {
        return Err(Error::corrupt(format!(
            "the manifest claims {} coded bytes but the section holds {section_len}",
            record.coded_bytes
        )));
    }
    if record.side_bytes > record.coded_bytes {
        return Err(Error::corrupt(
            "more side-information bytes than coded bytes",
        ));
    }
    let numel = record
        .shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .filter(|n| n.checked_mul(record.dtype.size() as u64).is_some())
        .ok_or_else(|| Error::corrupt("its shape overflows"))?;
    if numel > MAX_ELEMENTS_PER_SECTION_BYTE.saturating_mul(section_len) {
        return Err(Error::corrupt(format!(
            "it claims {numel} elements from a {section_len}-byte section (more than {MAX_ELEMENTS_PER_SECTION_BYTE} \
             per byte): rejected as a decompression bomb"
        )));
    }
    if Shape2::of(&record.shape).is_none() {
        return Err(Error::corrupt("its shape overflows"));
    }
    let lossy = !matches!(
        record.codec,
        CodecParams::Lossless | CodecParams::Sequence(_)
    );
    let vector = matches!(record.codec, CodecParams::Transform(_) | CodecParams::Pq(_));
    let takes = if vector {
        record.dtype.is_vector_compressible()
    } else {
        record.dtype.is_lossy_compressible()
    };
    if lossy && !takes {
        return Err(Error::corrupt(format!(
            "a lossy codec on dtype {}",
            record.dtype
        )));
    }
    Ok(())
}
