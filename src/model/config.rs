//! The architecture of a model, read from its Hugging Face `config.json`, and the pooling of a
//! sentence-transformers encoder, read from `modules.json` and `1_Pooling/config.json`.
//!
//! Only what the forward pass uses is read; every size is checked (non-zero, heads dividing the
//! width, bounded) before any weight is loaded, so a hostile config gives a named error and never a
//! huge allocation or a panic.

use serde::Deserialize;

use super::files::ModelFiles;
use crate::error::{Error, Result};

/// The largest width, depth, vocabulary or context a config may state. Far above any model this
/// runtime is meant for (20M to 1B parameters), far below what would overflow an index.
const MAX_DIM: usize = 1 << 20;

/// Which family a model belongs to, with its sizes.
#[derive(Clone, Debug, PartialEq)]
pub enum Architecture {
    Encoder(BertConfig),
    Decoder(LlamaConfig),
}

#[derive(Clone, Debug, PartialEq)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub intermediate_size: usize,
    pub max_positions: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f32,
    pub activation: Activation,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    /// GELU with the exact error function (`"gelu"`).
    Gelu,
    /// GELU's tanh approximation (`"gelu_new"`, `"gelu_pytorch_tanh"`).
    GeluTanh,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub intermediate_size: usize,
    pub max_positions: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f64,
    pub tie_word_embeddings: bool,
    /// Tokens that end a generation (`eos_token_id`: one id or a list; may be empty).
    pub eos_token_ids: Vec<u32>,
}

/// The raw fields of a `config.json` that either family uses.
#[derive(Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    #[serde(default)]
    architectures: Vec<String>,
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    intermediate_size: Option<usize>,
    max_position_embeddings: Option<usize>,
    type_vocab_size: Option<usize>,
    layer_norm_eps: Option<f64>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<serde_json::Value>,
    hidden_act: Option<String>,
    position_embedding_type: Option<String>,
    tie_word_embeddings: Option<bool>,
    sliding_window: Option<serde_json::Value>,
    use_sliding_window: Option<bool>,
    eos_token_id: Option<serde_json::Value>,
}

impl RawConfig {
    fn size(&self, name: &str, value: Option<usize>) -> Result<usize> {
        let v = value.ok_or_else(|| Error::invalid(format!("config.json has no '{name}'")))?;
        if v == 0 || v > MAX_DIM {
            return Err(Error::invalid(format!(
                "config.json: '{name}' is {v}, outside 1..={MAX_DIM}"
            )));
        }
        Ok(v)
    }
}

impl Architecture {
    /// The architecture of the model whose files are `files` (its `config.json`).
    pub fn from_files(files: &ModelFiles) -> Result<Architecture> {
        let json = files.get("config.json").ok_or_else(|| {
            Error::invalid(
                "the model has no config.json: put the model folder's config.json (and \
                 tokenizer.json) beside the checkpoint",
            )
        })?;
        Architecture::parse(json).map_err(|e| e.in_file("config.json"))
    }

    pub fn parse(json: &[u8]) -> Result<Architecture> {
        let raw: RawConfig = serde_json::from_slice(json)
            .map_err(|e| Error::invalid(format!("not a model config: {e}")))?;
        let kind = raw.model_type.clone().unwrap_or_default();
        let named = |s: &str| raw.architectures.iter().any(|a| a.contains(s));
        match kind.as_str() {
            "bert" => bert(&raw).map(Architecture::Encoder),
            "llama" | "qwen2" | "mistral" => llama(&raw).map(Architecture::Decoder),
            _ if named("Bert") => bert(&raw).map(Architecture::Encoder),
            _ if named("Llama") || named("Qwen2") => llama(&raw).map(Architecture::Decoder),
            other => Err(Error::unsupported(format!(
                "model_type '{other}' (architectures {:?}): the runtime knows BERT-style encoders \
                 (bert) and Llama-style decoders (llama, qwen2, mistral)",
                raw.architectures
            ))),
        }
    }

    pub fn family(&self) -> &'static str {
        match self {
            Architecture::Encoder(_) => "encoder",
            Architecture::Decoder(_) => "decoder",
        }
    }
}

fn heads_divide(hidden: usize, heads: usize) -> Result<()> {
    if !hidden.is_multiple_of(heads) {
        return Err(Error::invalid(format!(
            "config.json: hidden_size {hidden} is not a multiple of num_attention_heads {heads}"
        )));
    }
    Ok(())
}

fn bert(raw: &RawConfig) -> Result<BertConfig> {
    let hidden_size = raw.size("hidden_size", raw.hidden_size)?;
    let num_heads = raw.size("num_attention_heads", raw.num_attention_heads)?;
    heads_divide(hidden_size, num_heads)?;
    if let Some(p) = raw.position_embedding_type.as_deref() {
        if p != "absolute" {
            return Err(Error::unsupported(format!(
                "config.json: position_embedding_type '{p}' (only 'absolute' is implemented)"
            )));
        }
    }
    let activation = match raw.hidden_act.as_deref().unwrap_or("gelu") {
        "gelu" => Activation::Gelu,
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
        other => {
            return Err(Error::unsupported(format!(
                "config.json: hidden_act '{other}' (gelu and its tanh form are implemented)"
            )))
        }
    };
    Ok(BertConfig {
        vocab_size: raw.size("vocab_size", raw.vocab_size)?,
        hidden_size,
        num_layers: raw.size("num_hidden_layers", raw.num_hidden_layers)?,
        num_heads,
        intermediate_size: raw.size("intermediate_size", raw.intermediate_size)?,
        max_positions: raw.size("max_position_embeddings", raw.max_position_embeddings)?,
        type_vocab_size: raw.size("type_vocab_size", raw.type_vocab_size.or(Some(2)))?,
        layer_norm_eps: positive("layer_norm_eps", raw.layer_norm_eps.unwrap_or(1e-12))?,
        activation,
    })
}

fn llama(raw: &RawConfig) -> Result<LlamaConfig> {
    let hidden_size = raw.size("hidden_size", raw.hidden_size)?;
    let num_heads = raw.size("num_attention_heads", raw.num_attention_heads)?;
    let num_kv_heads = raw.size(
        "num_key_value_heads",
        raw.num_key_value_heads.or(raw.num_attention_heads),
    )?;
    if !num_heads.is_multiple_of(num_kv_heads) {
        return Err(Error::invalid(format!(
            "config.json: num_attention_heads {num_heads} is not a multiple of \
             num_key_value_heads {num_kv_heads}"
        )));
    }
    let head_dim = match raw.head_dim {
        Some(d) => raw.size("head_dim", Some(d))?,
        None => {
            heads_divide(hidden_size, num_heads)?;
            hidden_size / num_heads
        }
    };
    if !head_dim.is_multiple_of(2) {
        return Err(Error::invalid(format!(
            "config.json: head_dim {head_dim} is odd (rotary positions rotate pairs)"
        )));
    }
    if raw.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(Error::unsupported(
            "config.json: rope_scaling is set (scaled rotary positions are not implemented)",
        ));
    }
    let max_positions = raw.size(
        "max_position_embeddings",
        raw.max_position_embeddings.or(Some(4096)),
    )?;
    let sliding = raw.use_sliding_window.unwrap_or(true)
        && raw
            .sliding_window
            .as_ref()
            .and_then(|v| v.as_u64())
            .is_some_and(|w| (w as usize) < max_positions);
    if sliding {
        return Err(Error::unsupported(
            "config.json: sliding-window attention is not implemented",
        ));
    }
    Ok(LlamaConfig {
        vocab_size: raw.size("vocab_size", raw.vocab_size)?,
        hidden_size,
        num_layers: raw.size("num_hidden_layers", raw.num_hidden_layers)?,
        num_heads,
        num_kv_heads,
        head_dim,
        intermediate_size: raw.size("intermediate_size", raw.intermediate_size)?,
        max_positions,
        rms_norm_eps: positive("rms_norm_eps", raw.rms_norm_eps.unwrap_or(1e-6))?,
        rope_theta: raw.rope_theta.unwrap_or(10_000.0),
        tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
        eos_token_ids: token_ids(raw.eos_token_id.as_ref()),
    })
    .and_then(|c| {
        if !(c.rope_theta.is_finite() && c.rope_theta > 1.0) {
            return Err(Error::invalid(format!(
                "config.json: rope_theta {} is not a finite number above 1",
                c.rope_theta
            )));
        }
        Ok(c)
    })
}

/// One token id or a list of them (JSON), anything else ignored.
fn token_ids(v: Option<&serde_json::Value>) -> Vec<u32> {
    let one = |v: &serde_json::Value| v.as_u64().and_then(|i| u32::try_from(i).ok());
    match v {
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(one).collect(),
        Some(v) => one(v).into_iter().collect(),
        None => Vec::new(),
    }
}

fn positive(name: &str, v: f64) -> Result<f32> {
    if !(v.is_finite() && v > 0.0 && v < 1.0) {
        return Err(Error::invalid(format!(
            "config.json: '{name}' is {v}, not a small positive number"
        )));
    }
    Ok(v as f32)
}

/// How a sentence-transformers encoder turns token states into one sentence embedding.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pooling {
    pub mode: PoolingMode,
    /// Scale the embedding to unit length (a `Normalize` module in `modules.json`).
    pub normalize: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PoolingMode {
    Mean,
    Cls,
    Max,
}

#[derive(Deserialize)]
struct RawPooling {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
}

#[derive(Deserialize)]
struct RawModule {
    #[serde(rename = "type", default)]
    kind: String,
}

impl Pooling {
    /// Mean pooling and unit length unless `1_Pooling/config.json` and `modules.json` say
    /// otherwise: that is what sentence-transformers does for all-MiniLM-L6-v2 and its kin, whose
    /// packaged copies often lack those two files.
    pub fn from_files(files: &ModelFiles) -> Result<Pooling> {
        let mode = match files.get("1_Pooling/config.json") {
            None => PoolingMode::Mean,
            Some(json) => {
                let raw: RawPooling = serde_json::from_slice(json).map_err(|e| {
                    Error::invalid(format!("not a pooling config: {e}"))
                        .in_file("1_Pooling/config.json")
                })?;
                match (
                    raw.pooling_mode_mean_tokens,
                    raw.pooling_mode_cls_token,
                    raw.pooling_mode_max_tokens,
                ) {
                    (true, false, false) => PoolingMode::Mean,
                    (false, true, false) => PoolingMode::Cls,
                    (false, false, true) => PoolingMode::Max,
                    _ => {
                        return Err(Error::unsupported(
                            "exactly one of mean, cls or max pooling must be set",
                        )
                        .in_file("1_Pooling/config.json"))
                    }
                }
            }
        };
        let normalize = match files.get("modules.json") {
            None => true,
            Some(json) => {
                let modules: Vec<RawModule> = serde_json::from_slice(json).map_err(|e| {
                    Error::invalid(format!("not a module list: {e}")).in_file("modules.json")
                })?;
                modules.iter().any(|m| m.kind.ends_with(".Normalize"))
            }
        };
        Ok(Pooling { mode, normalize })
    }
}
