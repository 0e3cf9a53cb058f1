//! Sensitivity: how far each weight matrix's error moves what the model outputs, measured by
//! running the model, so that the allocator can weigh each tensor's error by what it does.
//!
//! Without it every tensor's relative error counts the same, and on a decoder that breaks the
//! model: the token embedding of a model with tied embeddings is also its output layer, where an
//! error reaches the logits with nothing to damp it, yet by relative error it is one tensor among
//! two hundred (docs/CALIBRATION.md has the figures).
//!
//! The measurement: for each matrix `W` in turn, `W` is replaced by `W + E`, `E` Gaussian noise
//! scaled so that its relative MSE `||E||^2 / ||W||^2` is exactly `delta`; the model is run over
//! the text and the change of its output is taken: for a decoder the mean
//! `KL(p_original || p_perturbed)` of the next-token distributions over every position, for an
//! encoder the mean `1 - cosine` between each sentence's original and perturbed embedding. The
//! sensitivity is that change divided by `delta`, the change per unit of relative MSE. Both
//! changes are quadratic in the perturbation, so to first order they grow linearly with the
//! relative MSE, and the changes from errors in different matrices (independent of each other)
//! add: `sum_t s_t D_t`, `D_t` being tensor `t`'s relative MSE, predicts what a whole compressed
//! model's output moves by. That sum is what the allocator minimises
//! (`distortion::Distortion::ModelLoss`). Compression error is not Gaussian, and the first-order
//! model stops holding where the changes are large; the report's prediction is labelled an
//! estimate, and `lowbit eval` measures the real change.
//!
//! Cost: one run over the text per matrix. A decoder's run for a matrix of layer `l` starts at
//! layer `l` from that layer's stored input (the layers before it are unchanged) and a separate
//! `lm_head`'s reuses the final states, so the whole measurement costs about `1 + matrices / 2`
//! full runs, every one over the same few tokens. Matrices are perturbed one at a time and put
//! back bit for bit; the noise comes from a seeded stream per tensor name, and the forward pass
//! gives the same result whatever the number of threads, so the measurement is deterministic.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::bert::Bert;
use super::eval::{cosine, kl_divergence};
use super::llama::Llama;
use super::ops::{self, Linear};
use super::Model;
use crate::error::{Error, Result};
use crate::rng::Rng;

/// How much text the measurement reads, and how large its perturbation is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SensitivityOptions {
    /// Decoders: at most this many tokens of the text (from its start).
    pub tokens: usize,
    /// Decoders: the window length.
    pub context: usize,
    /// Encoders: at most this many sentences.
    pub sentences: usize,
    /// The relative MSE of the perturbation: about what 4 bits per weight leave, so the
    /// measurement is taken where the allocator works.
    pub delta: f64,
    pub seed: u64,
}

impl Default for SensitivityOptions {
    fn default() -> SensitivityOptions {
        SensitivityOptions {
            tokens: 128,
            context: 256,
            sentences: 32,
            delta: 0.01,
            seed: 0,
        }
    }
}

/// What the output change is measured in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputChange {
    /// Mean KL divergence of the next-token distributions, in nats (decoders).
    KlDivergence,
    /// Mean `1 - cosine` of the sentence embeddings (encoders).
    OneMinusCosine,
}

impl OutputChange {
    /// A short name for reports ("KL", "1 - cos").
    pub fn label(self) -> &'static str {
        match self {
            OutputChange::KlDivergence => "KL",
            OutputChange::OneMinusCosine => "1 - cos",
        }
    }
}

/// Per weight matrix, the change of the model's output per unit of relative MSE.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sensitivity {
    /// Where the text came from (a file name, or "built-in text").
    pub source: String,
    pub measure: OutputChange,
    /// Tokens (decoders) or sentences (encoders) the model ran over.
    pub units: usize,
    /// The perturbation's relative MSE.
    pub delta: f64,
    /// Weight name -> output change per unit of relative MSE.
    pub tensors: BTreeMap<String, f64>,
}

impl Sensitivity {
    /// The sensitivity of tensor `name`: measured, or for a tensor the model does not multiply
    /// (norms, biases, weights the runtime does not use) the largest one measured, so that what
    /// cannot be judged is kept well (such tensors are small, and keeping them costs little);
    /// 1 when nothing measurable was found (then every tensor counts the same, as without).
    pub fn for_tensor(&self, name: &str) -> f64 {
        match (self.tensors.get(name), self.largest()) {
            (_, l) if l <= 0.0 => 1.0,
            (Some(&s), _) => s,
            (None, l) => l,
        }
    }

    /// The largest measured sensitivity (0 when none was measured).
    pub fn largest(&self) -> f64 {
        self.tensors.values().copied().fold(0.0, f64::max)
    }
}

/// Measures the sensitivity of every weight matrix of `model` on `text` (`source` names the text
/// in the report). The model is changed during the measurement and restored exactly.
pub fn measure(
    model: &mut Model,
    text: &str,
    options: &SensitivityOptions,
    source: &str,
) -> Result<Sensitivity> {
    if !(options.delta > 0.0 && options.delta.is_finite()) {
        return Err(Error::option(format!(
            "the sensitivity perturbation must be a positive relative MSE, got {}",
            options.delta
        )));
    }
    let (measure, units, tensors) = match model {
        Model::Decoder(m) => {
            let (units, tensors) = measure_decoder(m, text, options)?;
            (OutputChange::KlDivergence, units, tensors)
        }
        Model::Encoder(m) => {
            let (units, tensors) = measure_encoder(m, text, options)?;
            (OutputChange::OneMinusCosine, units, tensors)
        }
    };
    Ok(Sensitivity {
        source: source.to_string(),
        measure,
        units,
        delta: options.delta,
        tensors,
    })
}

/// Adds noise of relative MSE `delta` to `m`'s weight (seeded by its name) and returns the
/// original values, or `None` (nothing changed) for an all-zero matrix, which has no scale to
/// perturb relative to.
fn perturb(m: &mut Linear, delta: f64, seed: u64) -> Option<Vec<f32>> {
    let norm_sq: f64 = m.weight.iter().map(|&v| v as f64 * v as f64).sum();
    if norm_sq == 0.0 || !norm_sq.is_finite() {
        return None;
    }
    let mut rng = Rng::for_stream(seed, &format!("sensitivity/{}", m.name));
    let noise: Vec<f64> = (0..m.weight.len()).map(|_| rng.normal()).collect();
    let noise_sq: f64 = noise.iter().map(|v| v * v).sum();
    let scale = (delta * norm_sq / noise_sq).sqrt();
    let original = m.weight.clone();
    m.weight
        .iter_mut()
        .zip(&noise)
        .for_each(|(w, e)| *w = (*w as f64 + scale * e) as f32);
    Some(original)
}

/// The perturbation actually applied (after rounding to f32), as a relative MSE.
fn applied_delta(original: &[f32], perturbed: &[f32]) -> f64 {
    let (mut e, mut n) = (0.0f64, 0.0f64);
    for (&a, &b) in original.iter().zip(perturbed) {
        e += (b as f64 - a as f64).powi(2);
        n += (a as f64).powi(2);
    }
    e / n
}

/// A decoder's window of a text, with what the original model computes on it: a run that
/// changes layer `l` starts from `inputs[l]`, one that changes only a separate `lm_head` from
/// `states`, and the changed model is judged against `logits`. The sensitivity and the search
/// (`pipeline::search`, which keeps its parent's `inputs` and `states` here) judge this way.
pub struct Window {
    pub ids: Vec<u32>,
    /// The input of each layer.
    pub inputs: Vec<Vec<f32>>,
    /// Final-norm states.
    pub states: Vec<f32>,
    /// The original model's logits.
    pub logits: Vec<f32>,
    /// Log-sum-exp of each position's original logits.
    pub lse: Vec<f64>,
}

impl Window {
    /// The windows of `ids` (`context` tokens each, the last one shorter), each run by `m` from
    /// an empty cache.
    pub fn all_of(m: &Llama, ids: &[u32], context: usize) -> Result<Vec<Window>> {
        let vocab = m.config.vocab_size;
        ids.chunks(context.max(1))
            .map(|w| {
                let (inputs, states) = m.layer_inputs(w)?;
                let logits = m.logits(&states, w.len());
                let lse = logits.chunks_exact(vocab).map(ops::log_sum_exp).collect();
                Ok(Window {
                    ids: w.to_vec(),
                    inputs,
                    states,
                    logits,
                    lse,
                })
            })
            .collect()
    }

    /// `KL(p_original || p_changed)` at each of the first `n` positions, `logits` the changed
    /// model's (`vocab` per position).
    pub fn kl(&self, logits: &[f32], n: usize, vocab: usize) -> Vec<f64> {
        ops::par_map(n, |t| {
            let new = &logits[t * vocab..][..vocab];
            let old = &self.logits[t * vocab..][..vocab];
            kl_divergence(old, self.lse[t], new, ops::log_sum_exp(new))
        })
    }
}

fn measure_decoder(
    m: &mut Llama,
    text: &str,
    o: &SensitivityOptions,
) -> Result<(usize, BTreeMap<String, f64>)> {
    if o.context < 1 {
        return Err(Error::option(
            "the sensitivity window must hold at least 1 token",
        ));
    }
    let mut ids = m.tokenizer.encode(text)?;
    ids.truncate(o.tokens);
    if ids.is_empty() {
        return Err(Error::invalid(
            "the text gave no tokens to run the model on",
        ));
    }
    let vocab = m.config.vocab_size;
    let windows = Window::all_of(m, &ids, o.context.min(m.config.max_positions))?;
    let mut out = BTreeMap::new();
    for i in 0..m.matrices_mut().len() {
        let (at, name, original) = {
            let mut matrices = m.matrices_mut();
            let (at, lin) = &mut matrices[i];
            (*at, lin.name.clone(), perturb(lin, o.delta, o.seed))
        };
        let Some(original) = original else {
            out.insert(name, 0.0);
            continue;
        };
        let result = (|| -> Result<f64> {
            let (mut sum, mut count) = (0.0f64, 0usize);
            for w in &windows {
                let n = w.ids.len();
                let logits = match at {
                    Some(l) => m.logits(&m.states_from(l, w.inputs[l].clone(), n), n),
                    None if m.output_is(&name) => m.logits(&w.states, n),
                    None => m.logits(&m.forward(&w.ids, &mut m.new_cache())?, n),
                };
                sum += w.kl(&logits, n, vocab).iter().sum::<f64>();
                count += n;
            }
            Ok(sum / count as f64)
        })();
        let mut matrices = m.matrices_mut();
        let lin = &mut matrices[i].1;
        let delta = applied_delta(&original, &lin.weight);
        lin.weight = original;
        out.insert(name, result? / delta);
    }
    Ok((ids.len(), out))
}

fn measure_encoder(
    m: &mut Bert,
    text: &str,
    o: &SensitivityOptions,
) -> Result<(usize, BTreeMap<String, f64>)> {
    let sentences = m.sentences_that_fit(text, o.sentences)?;
    let reference = m.embed_sentences(&sentences)?;
    let mut out = BTreeMap::new();
    for i in 0..m.matrices_mut().len() {
        let (name, original) = {
            let mut matrices = m.matrices_mut();
            let lin = &mut matrices[i];
            (lin.name.clone(), perturb(lin, o.delta, o.seed))
        };
        let Some(original) = original else {
            out.insert(name, 0.0);
            continue;
        };
        let change = m.embed_sentences(&sentences).map(|after| {
            let n = reference.len() as f64;
            reference
                .iter()
                .zip(&after)
                .map(|(a, b)| 1.0 - cosine(a, b))
                .sum::<f64>()
                / n
        });
        let mut matrices = m.matrices_mut();
        let lin = &mut matrices[i];
        let delta = applied_delta(&original, &lin.weight);
        lin.weight = original;
        out.insert(name, change? / delta);
    }
    Ok((sentences.len(), out))
}
