//! What kind of input a file is: the one place that decides (the CLI, the page and `inspect` all
//! ask here).

use crate::checkpoint;
use crate::container;
use crate::error::Result;
use crate::io::{gguf, npy, safetensors, zip};
use crate::sequence::{self, SequenceKind};
use crate::source::Source;

/// What kind of input a file is, decided from its first bytes (and its name for `.csv` /
/// `.fvecs`): what `inspect` and the page dispatch on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    /// A safetensors, PyTorch or GGUF checkpoint, an npy array or a vector dataset: compressed tensor by
    /// tensor.
    Checkpoint,
    /// A `.lowbit` file: inspected or restored.
    Lowbit,
    /// A FASTA, FASTQ or text file: coded losslessly as a whole.
    Sequence(SequenceKind),
}

/// How much of a file is read to tell a sequence file from a binary one before reading it whole.
const SNIFF_BYTES: u64 = 1 << 16;

/// The kind of `file`, reading its header alone for checkpoints and `.lowbit` files. A file that
/// is none of these is routed as a checkpoint, whose reader then says what is wrong with it.
pub fn input_kind<S: Source + ?Sized>(file: &S, file_name: &str) -> Result<InputKind> {
    if checkpoint::vector_format_by_name(file_name).is_some() {
        return Ok(InputKind::Checkpoint);
    }
    let head = file.prefix(SNIFF_BYTES)?;
    if head.starts_with(npy::MAGIC) || head.starts_with(gguf::MAGIC) || zip::is_zip(&head) {
        return Ok(InputKind::Checkpoint);
    }
    if safetensors::header_len(&head, file.len()).is_ok() {
        if let Ok(h) = safetensors::read_header_from(file) {
            let lowbit =
                h.metadata.get("format").map(String::as_str) == Some(container::FORMAT_NAME);
            return Ok(if lowbit {
                InputKind::Lowbit
            } else {
                InputKind::Checkpoint
            });
        }
    }
    if sequence::sniff(text_prefix(&head)).is_none() {
        return Ok(InputKind::Checkpoint);
    }
    Ok(match sequence::sniff(&file.whole()?) {
        Some(kind) => InputKind::Sequence(kind),
        None => InputKind::Checkpoint,
    })
}

/// `head` without a UTF-8 character cut in two at its end (the first bytes of a longer file end
/// anywhere), so a text file is not taken for binary because of where the prefix stops.
fn text_prefix(head: &[u8]) -> &[u8] {
    match std::str::from_utf8(head) {
        Err(e) if e.error_len().is_none() => &head[..e.valid_up_to()],
        _ => head,
    }
}
