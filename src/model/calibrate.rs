//! Calibration: what the inputs of a model's linear layers look like on real text, so that the
//! compressor can weigh a weight's error by what it does to the layer's output.
//!
//! For a linear layer `y = W x`, an error `E = W - W^` changes the output by `E x`; its expected
//! square over the inputs is `sum_ij E_ij^2 E[x_j^2]` plus cross terms `E[x_j x_k]`. The cross
//! terms are dropped (the *diagonal* statistics): what is kept per weight is the input second
//! moment `d_j = E[x_j^2]` of each input channel `j`, averaged over every token the model saw.
//! Layers that read the same input share it: q/k/v (the attention's normalised input), gate/up
//! (the MLP's), and a separate output projection (`lm_head`: the final-norm states). A token
//! embedding tied to the output projection gets none: it is also the input lookup table, which
//! the final-norm statistics do not describe.
//!
//! [`collect`] runs the original model over a text: a decoder over windows of up to `context`
//! tokens (each from an empty cache, as [`super::eval`] does), at most `tokens` in all; an encoder
//! over the text's sentences (its lines, chosen as [`super::eval::sentences_of`] does). The
//! [`Observer`] hook is how the forward passes show their inputs; without one they do no extra
//! work beyond an `Option` check per layer.

use std::collections::BTreeMap;

use super::eval::sentences_of;
use super::Model;
use crate::error::{Error, Result};

/// Shown the input of linear layers during a forward pass.
pub trait Observer {
    /// `x` (`n` rows, row-major) is the input of each linear layer whose weight is named in
    /// `weights`.
    fn observe(&mut self, weights: &[&str], x: &[f32], n: usize);
}

/// A shorter-lived copy of an optional observer, to hand to one layer of a forward pass.
pub fn reborrow<'a>(observer: &'a mut Option<&mut dyn Observer>) -> Option<&'a mut dyn Observer> {
    match observer {
        Some(o) => Some(&mut **o),
        None => None,
    }
}

/// How much text calibration reads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CalibrationOptions {
    /// Decoders: at most this many tokens of the text (from its start).
    pub tokens: usize,
    /// Decoders: the window length.
    pub context: usize,
    /// Encoders: at most this many sentences.
    pub sentences: usize,
}

impl Default for CalibrationOptions {
    fn default() -> CalibrationOptions {
        CalibrationOptions {
            tokens: 2048,
            context: 256,
            sentences: 256,
        }
    }
}

/// Per linear weight (by its name in the checkpoint), the mean square of each input channel over
/// the calibration tokens: `d_j = E[x_j^2]`, one value per column of the weight.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ActivationStats {
    /// Where the statistics came from (a file name, or "built-in text"), for the report.
    pub source: String,
    /// Tokens the model ran over.
    pub tokens: usize,
    /// Weight name -> `d_j` for each input channel `j`.
    pub tensors: BTreeMap<String, Vec<f32>>,
}

impl ActivationStats {
    /// The column statistics of weight `name` when it is a matrix with `cols` columns and they
    /// were collected (`None` otherwise, or when they are all zero or not finite).
    pub fn columns_for(&self, name: &str, shape: &[usize]) -> Option<&[f32]> {
        let d = self.tensors.get(name)?;
        let cols = *shape.last()?;
        let ok = shape.len() == 2
            && d.len() == cols
            && d.iter().all(|v| v.is_finite() && *v >= 0.0)
            && d.iter().any(|v| *v > 0.0);
        ok.then_some(d.as_slice())
    }

    /// The mean of `d_j` over the columns of weight `name` (the mean input energy per channel).
    pub fn mean_for(&self, name: &str) -> Option<f64> {
        Some(crate::distortion::mean_energy(self.tensors.get(name)?))
    }
}

/// Sums of squares per input channel, per shared input (keyed by its first weight's name), and
/// which weights read each input.
#[derive(Default)]
struct Accumulator {
    sums: BTreeMap<String, (Vec<f64>, usize)>,
    readers: BTreeMap<String, Vec<String>>,
}

impl Observer for Accumulator {
    fn observe(&mut self, weights: &[&str], x: &[f32], n: usize) {
        let Some(first) = weights.first() else {
            return;
        };
        if n == 0 || !x.len().is_multiple_of(n) {
            return;
        }
        let dim = x.len() / n;
        let (sum, count) = self
            .sums
            .entry(first.to_string())
            .or_insert_with(|| (vec![0.0; dim], 0));
        if sum.len() != dim {
            return;
        }
        for row in x.chunks_exact(dim) {
            sum.iter_mut()
                .zip(row)
                .for_each(|(s, &v)| *s += v as f64 * v as f64);
        }
        *count += n;
        self.readers
            .entry(first.to_string())
            .or_insert_with(|| weights.iter().map(|w| w.to_string()).collect());
    }
}

impl Accumulator {
    fn finish(self, source: &str, tokens: usize) -> ActivationStats {
        let mut tensors = BTreeMap::new();
        for (key, (sum, count)) in self.sums {
            let mean: Vec<f32> = sum
                .iter()
                .map(|s| (s / count.max(1) as f64) as f32)
                .collect();
            for w in self.readers.get(&key).into_iter().flatten() {
                tensors.insert(w.clone(), mean.clone());
            }
        }
        ActivationStats {
            source: source.to_string(),
            tokens,
            tensors,
        }
    }
}

/// Runs `model` over `text` and returns the input statistics of each of its linear weights
/// (`source`: where the text came from, kept for the report).
pub fn collect(
    model: &Model,
    text: &str,
    options: &CalibrationOptions,
    source: &str,
) -> Result<ActivationStats> {
    let mut acc = Accumulator::default();
    let mut tokens = 0;
    match model {
        Model::Decoder(m) => {
            if options.context < 1 {
                return Err(Error::option(
                    "the calibration window must hold at least 1 token",
                ));
            }
            let mut ids = m.tokenizer.encode(text)?;
            ids.truncate(options.tokens);
            let context = options.context.min(m.config.max_positions);
            for window in ids.chunks(context) {
                m.forward_observed(window, &mut m.new_cache(), Some(&mut acc))?;
                tokens += window.len();
            }
        }
        Model::Encoder(m) => {
            for sentence in sentences_of(text, options.sentences) {
                let mut ids = m.tokenizer.encode(&sentence)?;
                ids.truncate(m.config.max_positions);
                if ids.is_empty() {
                    continue;
                }
                m.hidden_states_observed(&ids, Some(&mut acc))?;
                tokens += ids.len();
            }
        }
    }
    if tokens == 0 {
        return Err(Error::invalid(
            "the calibration text gave no tokens to run the model on (an encoder needs lines of \
             20 to 200 characters)",
        ));
    }
    let mut stats = acc.finish(source, tokens);
    if let Model::Decoder(m) = model {
        // A tied embedding is also the input lookup table, whose columns are the channels of the
        // residual stream: the final-norm statistics of its output role say nothing of those.
        let output = &m.output().name;
        if !m.output_is(output) {
            stats.tensors.remove(output);
        }
    }
    Ok(stats)
}

/// The checkpoint names (Hugging Face's, for Llama-family decoders and BERT-family encoders) a
/// llama.cpp weight name `blk.N.KIND.weight` may stand for, in the order tried; `output.weight` is
/// a separate output layer (`lm_head`). A tied token embedding gets no statistics (as in
/// [`collect`]: they would describe only its output role).
fn checkpoint_names(gguf_name: &str) -> Vec<String> {
    if gguf_name == "output.weight" {
        return vec!["lm_head.weight".into()];
    }
    let Some((layer, kind)) = gguf_name
        .strip_prefix("blk.")
        .and_then(|rest| rest.strip_suffix(".weight"))
        .and_then(|rest| rest.split_once('.'))
    else {
        return Vec::new();
    };
    let (llama, bert): (&[&str], &[&str]) = match kind {
        "attn_q" => (&["self_attn.q_proj"], &["attention.self.query"]),
        "attn_k" => (&["self_attn.k_proj"], &["attention.self.key"]),
        "attn_v" => (&["self_attn.v_proj"], &["attention.self.value"]),
        "attn_output" => (&["self_attn.o_proj"], &["attention.output.dense"]),
        "ffn_gate" => (&["mlp.gate_proj"], &[]),
        "ffn_up" => (&["mlp.up_proj"], &["intermediate.dense"]),
        "ffn_down" => (&["mlp.down_proj"], &["output.dense"]),
        _ => (&[], &[]),
    };
    let llama = llama
        .iter()
        .map(|k| format!("model.layers.{layer}.{k}.weight"));
    let bert = bert.iter().flat_map(|k| {
        ["", "bert."].map(|prefix| format!("{prefix}encoder.layer.{layer}.{k}.weight"))
    });
    llama.chain(bert).collect()
}

/// The input statistics of a llama.cpp importance matrix ([`crate::io::imatrix`]) for the weights
/// of a checkpoint (`weights`: name and shape of each tensor): each entry goes to the tensor of
/// the same name, or else to the checkpoint tensor its llama.cpp name stands for
/// ([`checkpoint_names`]). Entries for weights the checkpoint does not have are left out; an
/// entry whose length does not fit its weight's columns, or a file of which no entry fits the
/// checkpoint, is an error naming it.
pub fn from_imatrix(
    m: &crate::io::imatrix::Imatrix,
    weights: &[(String, Vec<usize>)],
    source: &str,
) -> Result<ActivationStats> {
    let shapes: BTreeMap<&str, &[usize]> = weights
        .iter()
        .map(|(n, s)| (n.as_str(), s.as_slice()))
        .collect();
    let mut tensors = BTreeMap::new();
    for name in m.entries.keys() {
        let target = std::iter::once(name.clone())
            .chain(checkpoint_names(name))
            .find(|n| shapes.get(n.as_str()).is_some_and(|s| s.len() == 2));
        let Some(target) = target else {
            continue;
        };
        let cols = shapes[target.as_str()][1];
        let d = m.columns(name, cols).map_err(|e| e.in_file(source))?;
        if let Some(d) = d {
            tensors.insert(target, d);
        }
    }
    if tensors.is_empty() {
        let example = m.entries.keys().next().map(String::as_str).unwrap_or("");
        return Err(Error::invalid(format!(
            "none of the {} weights of the importance matrix is a matrix of the checkpoint \
             (its names are like '{example}')",
            m.entries.len()
        ))
        .in_file(source));
    }
    Ok(ActivationStats {
        source: source.to_string(),
        tokens: 0,
        tensors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_imatrix_maps_onto_smollm2s_weights() {
        let file = include_bytes!("../../tests/fixtures/imatrix/smollm2-3.gguf");
        let m = crate::io::imatrix::read(&file[..]).unwrap();
        let smollm2 = [
            ("model.layers.0.mlp.down_proj.weight", vec![576, 1536]),
            ("model.layers.0.self_attn.k_proj.weight", vec![192, 576]),
            ("model.layers.29.mlp.up_proj.weight", vec![1536, 576]),
            ("model.embed_tokens.weight", vec![49152, 576]),
        ]
        .map(|(n, s)| (n.to_string(), s))
        .to_vec();
        let stats = from_imatrix(&m, &smollm2, "i.gguf").unwrap();
        let names: Vec<&str> = stats.tensors.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            &smollm2[..3]
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()[..]
        );
    }

    #[test]
    fn imatrix_names_map_onto_llama_and_bert_checkpoints() {
        let mut m = crate::io::imatrix::Imatrix::default();
        m.entries
            .insert("blk.0.attn_q.weight".into(), vec![1.0, 2.0]);
        m.entries
            .insert("blk.1.ffn_down.weight".into(), vec![3.0, 4.0, 5.0]);
        m.entries.insert("output.weight".into(), vec![6.0, 7.0]);
        m.entries.insert("blk.9.ffn_gate.weight".into(), vec![1.0]);
        let llama = [
            ("model.layers.0.self_attn.q_proj.weight", vec![4, 2]),
            ("model.layers.1.mlp.down_proj.weight", vec![2, 3]),
            ("model.embed_tokens.weight", vec![10, 2]),
        ]
        .map(|(n, s)| (n.to_string(), s))
        .to_vec();
        let stats = from_imatrix(&m, &llama, "i.gguf").unwrap();
        assert_eq!(stats.tensors.len(), 2);
        assert_eq!(
            stats.tensors["model.layers.1.mlp.down_proj.weight"],
            vec![3.0, 4.0, 5.0]
        );
        // A tied embedding gets no statistics; a separate output layer does.
        assert!(!stats.tensors.contains_key("model.embed_tokens.weight"));
        let head = [("lm_head.weight".to_string(), vec![10, 2])];
        let stats = from_imatrix(&m, &head, "i").unwrap();
        assert_eq!(stats.tensors["lm_head.weight"], vec![6.0, 7.0]);
        let bert = [(
            "encoder.layer.1.output.dense.weight".to_string(),
            vec![2, 3],
        )];
        let stats = from_imatrix(&m, &bert, "i.gguf").unwrap();
        assert_eq!(stats.tensors.len(), 1);
        let wrong = [(
            "model.layers.1.mlp.down_proj.weight".to_string(),
            vec![3, 2],
        )];
        let e = from_imatrix(&m, &wrong, "i.gguf").unwrap_err().to_string();
        assert!(
            e.contains("i.gguf") && e.contains("blk.1.ffn_down.weight"),
            "{e}"
        );
        let none = [("x".to_string(), vec![2, 2])];
        let e = from_imatrix(&m, &none, "i.gguf").unwrap_err().to_string();
        assert!(e.contains("none of the 4 weights"), "{e}");
    }

    #[test]
    fn shared_inputs_share_statistics() {
        let mut acc = Accumulator::default();
        acc.observe(&["q", "k"], &[1.0, 2.0, 3.0, 4.0], 2);
        acc.observe(&["o"], &[2.0, 0.0], 1);
        let stats = acc.finish("t", 2);
        assert_eq!(stats.tensors["q"], vec![5.0, 10.0]);
        assert_eq!(stats.tensors["k"], stats.tensors["q"]);
        assert_eq!(stats.tensors["o"], vec![4.0, 0.0]);
        assert_eq!(stats.columns_for("q", &[3, 2]), Some(&[5.0f32, 10.0][..]));
        assert_eq!(stats.columns_for("q", &[2, 3]), None);
        assert_eq!(stats.mean_for("o"), Some(2.0));
    }
}
