//! Readers and writers of the file formats lowbit takes in and gives back: `.safetensors`
//! checkpoints, PyTorch checkpoints (`torch.save` zip archives, read only), GGUF files (read only,
//! ggml's quantized blocks dequantized), `.npy` arrays, and the vector datasets `.csv` and `.fvecs`.
//!
//! Every reader here faces untrusted bytes: it validates the whole header (sizes, offsets, dtypes)
//! before returning it, so later stages can slice the file without further checks, and it never
//! panics or allocates in proportion to a count it read. Readers work on byte slices and lengths,
//! never on paths, so the same code serves an mmap natively and a `Uint8Array` in the browser.
//! What is accepted and rejected, and why, is in docs/READERS.md.

pub mod csv;
pub mod fvecs;
pub mod gguf;
pub mod imatrix;
pub mod npy;
pub mod pytorch;
pub mod safetensors;
pub mod zip;

/// Most dimensions a shape may have, in every format. numpy stops at 64 (32 before numpy 2) and
/// PyTorch at 64 too; the bound keeps a hostile header from turning a long `[1,1,1,...]` list into a
/// large allocation.
pub const MAX_RANK: usize = 64;
