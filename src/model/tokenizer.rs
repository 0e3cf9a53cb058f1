//! Text to token ids and back, with the Hugging Face `tokenizers` library (its pure-Rust,
//! wasm-compatible build) from the model's own `tokenizer.json`: WordPiece for BERT, byte-level BPE
//! for Llama-style decoders, with the model's normalizer, pre-tokenizer and special tokens.

use super::files::ModelFiles;
use crate::error::{Error, Result};

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl Tokenizer {
    /// The tokenizer of `files` (`tokenizer.json`), without the padding or truncation some files
    /// carry (the runtime feeds each text at its own length).
    pub fn from_files(files: &ModelFiles) -> Result<Tokenizer> {
        let json = files.get("tokenizer.json").ok_or_else(|| {
            Error::invalid(
                "the model has no tokenizer.json: put the model folder's tokenizer.json beside \
                 the checkpoint",
            )
        })?;
        Tokenizer::from_json(json).map_err(|e| e.in_file("tokenizer.json"))
    }

    pub fn from_json(json: &[u8]) -> Result<Tokenizer> {
        let mut inner = tokenizers::Tokenizer::from_bytes(json)
            .map_err(|e| Error::invalid(format!("not a tokenizer: {e}")))?;
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| Error::invalid(format!("tokenizer: {e}")))?;
        Ok(Tokenizer { inner })
    }

    /// The ids of `text`, with the special tokens the tokenizer's post-processor adds (BERT's
    /// `[CLS] ... [SEP]`; none for SmolLM2).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| Error::invalid(format!("tokenizing failed: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The text of `ids` (special tokens left out).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| Error::invalid(format!("detokenizing failed: {e}")))
    }

    /// The vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}
