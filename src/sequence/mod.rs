//! Lossless compression of symbol-sequence datasets: FASTA, FASTQ and plain text.
//!
//! A file is split into streams (`fasta.rs`), each coded by a context-mixing model (`fcm.rs`: the
//! nucleotide mixture for bases, the byte model for everything else) and stored as one section of
//! the usual `.lowbit` container, with `source_format` fasta / fastq / text and the codec
//! `sequence` (docs/FORMAT.md). Decompression restores the identical bytes. The report
//! (`report.rs`) carries bits per symbol per stream and per record, the mixer's weights along the
//! sequence, the serial-dependence measures by lag and the (k, alpha) selection of
//! `selection.rs`. docs/SEQUENCES.md has the measurements behind the choices.
//!
//! Not here: lossy options (sequences are always lossless). Vector datasets are `vectors`.

use std::io::Write;

use serde::{Deserialize, Serialize};

use crate::codec::CodecParams;
use crate::container::{self, Container, Manifest, SourceFormat, TensorRecord};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::progress::Progress;

pub mod fasta;
pub mod report;
pub mod selection;

pub use report::SequenceReport;

use crate::codec::fcm::{self, ModelSpec, StreamCodec, StreamModel};
use fasta::SequenceStreams;

/// The kinds of sequence file lowbit recognises by content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SequenceKind {
    Fasta,
    Fastq,
    Text,
}

impl SequenceKind {
    pub fn source_format(self) -> SourceFormat {
        match self {
            SequenceKind::Fasta => SourceFormat::Fasta,
            SequenceKind::Fastq => SourceFormat::Fastq,
            SequenceKind::Text => SourceFormat::Text,
        }
    }

    pub fn of(format: SourceFormat) -> Option<SequenceKind> {
        match format {
            SourceFormat::Fasta => Some(SequenceKind::Fasta),
            SourceFormat::Fastq => Some(SequenceKind::Fastq),
            SourceFormat::Text => Some(SequenceKind::Text),
            SourceFormat::Safetensors
            | SourceFormat::Npy
            | SourceFormat::Csv
            | SourceFormat::Fvecs
            | SourceFormat::PyTorch
            | SourceFormat::Gguf => None,
        }
    }
}

/// Stream names, in container order.
pub const HEADERS: &str = "headers";
pub const LAYOUT: &str = "layout";
pub const CASE: &str = "case";
pub const EXCEPTIONS: &str = "exceptions";
pub const BASES: &str = "bases";
pub const QUALITIES: &str = "qualities";
pub const TEXT: &str = "text";

/// Bytes that plain text may contain besides printable characters: tab, LF, VT, FF, CR, and (rarely)
/// BEL, BS and ESC, up to 1 in 100 bytes (the fortunes corpus has BS-overstrike and BEL).
fn is_text(file: &[u8]) -> bool {
    if std::str::from_utf8(file).is_err() {
        return false;
    }
    let mut rare = 0usize;
    for &b in file {
        match b {
            b'\t' | b'\n' | 0x0b | 0x0c | b'\r' => {}
            0x07 | 0x08 | 0x1b => rare += 1,
            0x00..=0x1f | 0x7f => return false,
            _ => {}
        }
    }
    rare * 100 <= file.len()
}

/// The kind of a sequence file, by content: '>' starts FASTA, '@' with strict 4-line records is
/// FASTQ, other text is text. `None` for empty or binary files (and for anything starting like a
/// safetensors or npy file, which the checkpoint readers own).
pub fn sniff(file: &[u8]) -> Option<SequenceKind> {
    if file.is_empty() || !is_text(file) {
        return None;
    }
    match file[0] {
        b'>' => Some(SequenceKind::Fasta),
        b'@' if fasta::split_fastq(file).is_some() => Some(SequenceKind::Fastq),
        _ => Some(SequenceKind::Text),
    }
}

/// Options of the sequence compressor.
#[derive(Clone, Debug, PartialEq)]
pub struct SequenceOptions {
    /// The nucleotide mixture.
    pub models: Vec<ModelSpec>,
    /// Run the (k, alpha) selection study for the report on at most this many bases (0: skip).
    pub selection_symbols: usize,
    /// Lags of the dependence measures.
    pub max_lag: usize,
}

impl Default for SequenceOptions {
    fn default() -> Self {
        SequenceOptions {
            models: fcm::DEFAULT_MODELS.to_vec(),
            selection_symbols: 1 << 18,
            max_lag: 16,
        }
    }
}

/// One stream to store: name, symbols, model.
struct Stream<'a> {
    name: &'static str,
    symbols: &'a [u8],
    model: StreamModel,
}

fn streams_of<'a>(
    kind: SequenceKind,
    file: &'a [u8],
    s: &'a SequenceStreams,
    opts: &SequenceOptions,
) -> Vec<Stream<'a>> {
    let bytes = |name, symbols| Stream {
        name,
        symbols,
        model: StreamModel::Bytes,
    };
    match kind {
        SequenceKind::Text => vec![bytes(TEXT, file)],
        SequenceKind::Fasta | SequenceKind::Fastq => {
            let mut v = vec![
                bytes(HEADERS, &s.headers),
                bytes(LAYOUT, &s.layout),
                bytes(CASE, &s.residues.case_runs),
                bytes(EXCEPTIONS, &s.residues.exceptions),
                Stream {
                    name: BASES,
                    symbols: &s.residues.bases,
                    model: StreamModel::Nucleotides {
                        models: opts.models.clone(),
                    },
                },
            ];
            if kind == SequenceKind::Fastq {
                v.push(bytes(QUALITIES, &s.qualities));
            }
            v
        }
    }
}

/// Seconds since some fixed point, natively; `None` on wasm32 (no clock without web APIs): the
/// report then has no timings.
pub(crate) fn clock() -> Option<std::time::Duration> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::sync::OnceLock;
        static START: OnceLock<std::time::Instant> = OnceLock::new();
        Some(START.get_or_init(std::time::Instant::now).elapsed())
    }
    #[cfg(target_arch = "wasm32")]
    {
        None
    }
}

fn seconds_since(start: Option<std::time::Duration>) -> Option<f64> {
    Some((clock()? - start?).as_secs_f64())
}

/// What coding one stream gave.
pub(crate) struct CodedStream {
    pub name: &'static str,
    pub symbols: u64,
    pub codec: StreamCodec,
    pub bytes: Vec<u8>,
    pub seconds: Option<f64>,
}

/// Compresses a FASTA, FASTQ or text file to a `.lowbit` written to `out`; returns the report.
pub fn compress(
    file: &[u8],
    file_name: &str,
    kind: SequenceKind,
    opts: &SequenceOptions,
    progress: &mut dyn Progress,
    out: &mut dyn Write,
) -> Result<SequenceReport> {
    let start = clock();
    if file.is_empty() {
        return Err(Error::invalid("the file is empty: nothing to compress").in_file(file_name));
    }
    let streams = match kind {
        SequenceKind::Fasta => fasta::split_fasta(file),
        SequenceKind::Fastq => fasta::split_fastq(file).ok_or_else(|| {
            Error::invalid("not a FASTQ file of 4-line records").in_file(file_name)
        })?,
        SequenceKind::Text => SequenceStreams::default(),
    };
    let plan = streams_of(kind, file, &streams, opts);
    let total: u64 = plan.iter().map(|s| s.symbols.len() as u64).sum();
    progress.stage("encode", total);
    let mut coded = Vec::with_capacity(plan.len());
    let mut trace = fcm::NucleotideTrace::default();
    let mut record_bits = Vec::new();
    for stream in &plan {
        if progress.cancelled() {
            return Err(Error::Cancelled);
        }
        let t0 = clock();
        let bytes = match &stream.model {
            StreamModel::Bytes if stream.symbols.is_empty() => Vec::new(),
            StreamModel::Bytes => fcm::encode_bytes(stream.symbols),
            StreamModel::Nucleotides { models } => {
                let (bytes, t, marks) =
                    fcm::encode_bases(stream.symbols, models, &streams.record_starts, progress)?;
                trace = t;
                record_bits = marks;
                bytes
            }
        };
        coded.push(CodedStream {
            name: stream.name,
            symbols: stream.symbols.len() as u64,
            codec: StreamCodec {
                model: stream.model.clone(),
            },
            bytes,
            seconds: seconds_since(t0),
        });
        if !matches!(stream.model, StreamModel::Nucleotides { .. }) {
            progress.advance(stream.symbols.len() as u64, stream.name);
        }
    }
    let manifest = Manifest {
        version: container::VERSION,
        source_format: kind.source_format(),
        source_metadata: Default::default(),
        source_header: None,
        source_bytes: Some(file.len() as u64),
        groups: Vec::new(),
        files: Vec::new(),
        tensors: coded
            .iter()
            .map(|c| TensorRecord {
                name: c.name.to_string(),
                dtype: DType::U8,
                shape: vec![c.symbols as usize],
                codec: CodecParams::Sequence(c.codec.clone()),
                coded_bytes: c.bytes.len() as u64,
                side_bytes: 0,
                crc32: container::crc32(&c.bytes),
            })
            .collect(),
    };
    let header = container::encode_header(&manifest)?;
    let io_err = |e| Error::io("output", e);
    out.write_all(&header).map_err(io_err)?;
    let mut output_bytes = header.len() as u64;
    for (c, record) in coded.iter().zip(&manifest.tensors) {
        out.write_all(&c.bytes).map_err(io_err)?;
        let padding = record.section_len() - record.coded_bytes;
        out.write_all(&vec![0u8; padding as usize])
            .map_err(io_err)?;
        output_bytes += record.section_len();
    }
    out.flush().map_err(io_err)?;
    let coding_seconds = seconds_since(start);
    Ok(report::build(report::Inputs {
        file,
        file_name,
        kind,
        streams: &streams,
        coded: &coded,
        header_bytes: header.len() as u64,
        output_bytes,
        trace,
        record_bits,
        coding_seconds,
        opts,
    }))
}

/// Decodes a `.lowbit` whose source is a sequence file back to the file's bytes.
pub(crate) fn decompress(c: &Container, file: &[u8], kind: SequenceKind) -> Result<Vec<u8>> {
    let m = &c.manifest;
    let declared = m
        .source_bytes
        .ok_or_else(|| Error::corrupt("a sequence source needs its size (source_bytes)"))?;
    // A sequence file restores at most 4096 bytes per stored byte (the container's bomb bound,
    // which long N runs can exceed only in theory).
    let limit = (file.len() as u64).saturating_mul(container::MAX_ELEMENTS_PER_SECTION_BYTE);
    if declared > limit {
        return Err(Error::corrupt(format!(
            "it claims a {declared}-byte source from a {}-byte file: rejected as a decompression bomb",
            file.len()
        )));
    }
    let expected: &[&str] = match kind {
        SequenceKind::Text => &[TEXT],
        SequenceKind::Fasta => &[HEADERS, LAYOUT, CASE, EXCEPTIONS, BASES],
        SequenceKind::Fastq => &[HEADERS, LAYOUT, CASE, EXCEPTIONS, BASES, QUALITIES],
    };
    let names: Vec<&str> = m.tensors.iter().map(|t| t.name.as_str()).collect();
    if names != expected {
        return Err(Error::corrupt(format!(
            "a {kind:?} source needs the streams {expected:?}, the file has {names:?}"
        )));
    }
    let mut decoded: Vec<Vec<u8>> = Vec::with_capacity(m.tensors.len());
    for (record, range) in m.tensors.iter().zip(&c.sections) {
        let section = &file[range.clone()];
        let count = usize::try_from(record.numel())
            .map_err(|_| Error::corrupt("too many symbols for this machine"))?;
        let CodecParams::Sequence(codec) = &record.codec else {
            return Err(Error::corrupt("a sequence stream needs the sequence codec")
                .in_tensor(&record.name));
        };
        if record.dtype != DType::U8 || record.shape.len() != 1 {
            return Err(Error::corrupt("a stream must be 1-D U8").in_tensor(&record.name));
        }
        let symbols = match (&codec.model, record.name.as_str()) {
            // An empty byte stream is written as an empty section: bytes there mean the count
            // was damaged (a lost `case` stream would silently upper-case the file).
            (StreamModel::Bytes, _) if count == 0 && !section.is_empty() => Err(Error::corrupt(
                "a stream of 0 symbols has a non-empty section",
            )),
            (_, _) if count == 0 => Ok(Vec::new()),
            (StreamModel::Nucleotides { models }, BASES) => {
                fcm::decode_bases(section, count, models)
            }
            (StreamModel::Bytes, name) if name != BASES => fcm::decode_bytes(section, count),
            _ => Err(Error::corrupt("the stream has the wrong model")),
        }
        .map_err(|e| e.in_tensor(&record.name))?;
        decoded.push(symbols);
    }
    let restored = match kind {
        SequenceKind::Text => decoded.pop().expect("one stream, checked above"),
        SequenceKind::Fasta | SequenceKind::Fastq => {
            let mut it = decoded.into_iter();
            let mut next = || it.next().expect("the stream list was checked above");
            let (headers, layout, case_runs, exceptions, bases) =
                (next(), next(), next(), next(), next());
            let qualities = if kind == SequenceKind::Fastq {
                next()
            } else {
                Vec::new()
            };
            let s = SequenceStreams {
                headers,
                layout,
                residues: fasta::Residues {
                    bases,
                    case_runs,
                    exceptions,
                },
                qualities,
                residue_count: 0,
                record_starts: Vec::new(),
            };
            if kind == SequenceKind::Fasta {
                fasta::join_fasta(&s, declared)?
            } else {
                fasta::join_fastq(&s, declared)?
            }
        }
    };
    if restored.len() as u64 != declared {
        return Err(Error::corrupt(format!(
            "the streams restore {} bytes, the manifest says {declared}",
            restored.len()
        )));
    }
    Ok(restored)
}

/// What `inspect` says about a sequence file.
#[derive(Clone, Debug, Serialize)]
pub struct SequenceSummary {
    /// Serialised as `format`: inside `Inspection`, `kind` says what the input is.
    #[serde(rename = "format")]
    pub kind: SequenceKind,
    pub bytes: u64,
    pub records: u64,
    /// Sequence letters (line ends excluded).
    pub residues: u64,
    /// Of the residues, A/C/G/T in either case.
    pub bases: u64,
}

pub fn summarize(file: &[u8], kind: SequenceKind) -> SequenceSummary {
    let s = match kind {
        SequenceKind::Fasta => fasta::split_fasta(file),
        SequenceKind::Fastq => fasta::split_fastq(file).unwrap_or_default(),
        SequenceKind::Text => SequenceStreams::default(),
    };
    SequenceSummary {
        kind,
        bytes: file.len() as u64,
        records: s.record_starts.len() as u64,
        residues: s.residue_count,
        bases: s.residues.bases.len() as u64,
    }
}
