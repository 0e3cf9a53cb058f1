//! The model runtime: a small forward pass (on the CPU, or on the GPU through [`device`]) for the
//! two families of models lowbit compresses most, so that a compressed model can be *run* and
//! judged by what it does, not only by the error of its weights.
//!
//! - BERT-style encoders (BERT, MiniLM): sentence embeddings, pooled the way the model folder's
//!   sentence-transformers files say (mean pooling and unit length when they say nothing).
//! - Llama-style decoders (Llama, SmolLM, Qwen2-like): RMSNorm, rotary positions, grouped-query
//!   attention, SwiGLU, tied or untied embeddings, a KV cache, greedy and temperature sampling.
//!
//! Weights come from a [`WeightSource`]: a safetensors file ([`weights::SafetensorsWeights`]) or a
//! decoded `.lowbit` (`pipeline::read::ContainerWeights`), one tensor at a time, so no restored
//! file is ever written. The architecture is read from `config.json` ([`config`]), the tokenizer
//! from `tokenizer.json` ([`tokenizer`]); both travel as [`files::ModelFiles`].
//!
//! Everything is computed in f32 (sums of long dot products in f32 too, as in the frameworks these
//! models come from); a model's output matches an independent float64 reference to ~1e-5 relative
//! (tests/it/model.rs). [`device`] runs the same forward passes on the GPU backend (weights and KV
//! cache resident), checked against this CPU path. What this module does not do: training,
//! batching of unrelated requests, quantized arithmetic (weights are expanded to f32 when loaded).

pub mod bert;
pub mod calibrate;
pub mod config;
pub mod device;
pub mod eval;
pub mod files;
pub mod llama;
pub mod ops;
pub mod sample;
pub mod sensitivity;
pub mod tokenizer;
pub mod weights;

pub use config::Architecture;
pub use files::ModelFiles;
pub use weights::WeightSource;

use crate::error::{Error, Result};

/// A loaded model of either family, with its tokenizer.
pub enum Model {
    Encoder(bert::Bert),
    Decoder(llama::Llama),
}

impl Model {
    /// Loads the model that `files` describe (config.json, the tokenizer) with the weights of
    /// `weights`.
    pub fn load(files: &ModelFiles, weights: &dyn WeightSource) -> Result<Model> {
        let tokenizer = tokenizer::Tokenizer::from_files(files)?;
        Ok(match config::Architecture::from_files(files)? {
            Architecture::Encoder(cfg) => {
                let pooling = config::Pooling::from_files(files)?;
                Model::Encoder(bert::Bert::load(cfg, pooling, tokenizer, weights)?)
            }
            Architecture::Decoder(cfg) => {
                Model::Decoder(llama::Llama::load(cfg, tokenizer, weights)?)
            }
        })
    }

    /// "encoder" or "decoder".
    pub fn family(&self) -> &'static str {
        match self {
            Model::Encoder(_) => "encoder",
            Model::Decoder(_) => "decoder",
        }
    }

    pub fn as_decoder(&self) -> Result<&llama::Llama> {
        match self {
            Model::Decoder(m) => Ok(m),
            Model::Encoder(_) => Err(Error::unsupported(
                "this is an encoder (BERT-style): it embeds sentences and does not generate text",
            )),
        }
    }
}
