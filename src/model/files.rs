//! The small files that make a checkpoint a runnable model: its config, its tokenizer and the
//! sentence-transformers pooling files. `compress` stores them losslessly in the `.lowbit`
//! (the manifest's `files`), `decompress` writes them back beside the restored checkpoint, and
//! `run`, `eval` and the page read them from there: a `.lowbit` is a complete model.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// The file names a model folder may hold that the runtime (or a user of the restored model)
/// needs, in the order they are stored. Anything else beside a checkpoint is left alone.
pub const MODEL_FILE_NAMES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
];

/// The largest model file accepted (the biggest tokenizers are ~20 MB).
pub const MAX_MODEL_FILE_BYTES: usize = 64 << 20;

/// A model's small files by name (one of [`MODEL_FILE_NAMES`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelFiles {
    files: BTreeMap<String, Vec<u8>>,
}

impl ModelFiles {
    pub fn new() -> ModelFiles {
        ModelFiles::default()
    }

    /// Whether `name` is a model file's name (a path relative to the model folder, `/`-separated).
    pub fn is_model_file(name: &str) -> bool {
        MODEL_FILE_NAMES.contains(&name)
    }

    /// Adds one file; refuses names that are not model files and files over the size limit.
    pub fn insert(&mut self, name: &str, bytes: Vec<u8>) -> Result<()> {
        if !Self::is_model_file(name) {
            return Err(Error::invalid(format!(
                "'{name}' is not one of the model files lowbit keeps ({})",
                MODEL_FILE_NAMES.join(", ")
            )));
        }
        if bytes.len() > MAX_MODEL_FILE_BYTES {
            return Err(Error::invalid(format!(
                "{} bytes, over the {MAX_MODEL_FILE_BYTES}-byte limit for a model file",
                bytes.len()
            ))
            .in_file(name));
        }
        self.files.insert(name.to_string(), bytes);
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).map(Vec::as_slice)
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Total bytes of all files.
    pub fn bytes(&self) -> u64 {
        self.files.values().map(|b| b.len() as u64).sum()
    }

    /// Name and bytes of every file, in [`MODEL_FILE_NAMES`] order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        MODEL_FILE_NAMES
            .iter()
            .filter_map(|n| self.files.get(*n).map(|b| (*n, b.as_slice())))
    }

    /// Whether the files describe a runnable model: a config and a tokenizer.
    pub fn is_runnable(&self) -> bool {
        self.files.contains_key("config.json")
            && (self.files.contains_key("tokenizer.json") || self.files.contains_key("vocab.txt"))
    }
}
